"""The benchmark of one implementation: batches from the shape table, the profiled step loop,
the run folder and its ``summary.json``.

One step = build random data, the loss input (``prepare``), the loss and its backward inside
``record_function(<name>)`` (the "loss region"), zero grads. :func:`run_benchmark` returns a
:class:`~tlbench.measure.summary.RunSummary` (also written to ``<out-dir>/<name>-<mode>/summary.json``);
:func:`main` is the entry point of every ``benchmark_<impl>.py``.
"""

from __future__ import annotations

import datetime
import sys
from typing import List, Optional, Union

from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.status import EXIT_CODES, Status
from tlbench.implementations.declaration import Backend, LossImplementation
from tlbench.measure.environment import current_environment
from tlbench.measure.summary import RunSummary
from tlbench.run.options import RunConfig, add_run_arguments, resolve_config
from tlbench.run.skeleton import ProfiledRun

__all__ = ["load_table", "main", "new_summary", "run_benchmark", "summary_line"]

def load_table(config: RunConfig):
    """The shape table of a run: rescaled to its subsampling, capped by --max-utterance-frames."""
    from tlbench.data.shape_table import load_shape_info, rescale_frames

    shape_info = rescale_frames(load_shape_info(config.shape_info), config.subsampling_factor)
    if config.max_utterance_frames is not None:
        shape_info = shape_info[shape_info[:, 0] <= config.max_utterance_frames]
        if shape_info.size(0) == 0:
            raise UsageError(f"--max-utterance-frames {config.max_utterance_frames} leaves no utterance in "
                             f"{config.shape_info}; use a larger value")
    return shape_info


def new_summary(impl: LossImplementation, config: RunConfig, command: Optional[List[str]]) -> RunSummary:
    """The summary of a run that has not measured anything yet."""

    summary = RunSummary(
        implementation=impl.name, label=impl.name, mode=config.mode,
        batching=(f"sorted by T, at most {config.max_frames} frames per batch" if config.sort_utterance
                  else f"{config.batch_size} consecutive utterances per batch"),
        preset=config.preset, preset_reason=config.preset_reason, schedule=config.schedule.to_dict(),
        seed=config.seed, vocab_size=config.vocab_size, dtype=config.dtype,
        subsampling_factor=config.subsampling_factor, max_utterance_frames=config.max_utterance_frames,
        inner_ops_hidden=impl.hide_inner_ops, encoder_out_dim=config.encoder_out_dim, shape_info=config.shape_info,
        config=config.to_dict(), command=list(command or sys.argv),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        run_dir=config.run_dir(impl.name), config_hash=config.fingerprint(impl.name),
    )
    summary.environment = current_environment(config.device)
    return summary


class _SuiteRun(ProfiledRun):
    """A suite benchmark: random batches of the shape table through the joiner and the loss,
    the loss and its backward inside ``record_function(<name>)``."""

    def __init__(self, impl: LossImplementation, config: RunConfig, summary: RunSummary):
        super().__init__(impl, config, impl.name, summary)
        self.region_name = impl.name

    def shape_table(self):
        return load_table(self.config)

    def make_step(self, backend: Backend):
        import torch

        from tlbench.data.batches import Joiner, make_batch

        impl, config = self.impl, self.config
        device = torch.device(config.device)
        logits_dtype = getattr(torch, config.dtype)
        torch.manual_seed(config.seed)
        joiner = Joiner(config.encoder_out_dim, config.vocab_size).to(device)
        if impl.warm_up is not None:
            impl.warm_up(backend, device)
        if config.device == "cuda" and config.memory_budget_gb is not None:
            # an allocation beyond the budget raises OutOfMemoryError: status "oom"
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, config.memory_budget_gb * 2**30 / total), device)

        def step(shapes):
            batch = make_batch(shapes, config.vocab_size, config.encoder_out_dim, device, logits_dtype)
            inputs = impl.prepare_inputs(backend, batch, joiner)
            with torch.profiler.record_function(impl.name):
                if impl.hide_inner_ops:
                    torch._C._autograd._enable_record_function(False)
                try:
                    loss, reported = impl.loss(backend, inputs, batch, joiner)
                    loss.backward()
                finally:
                    torch._C._autograd._enable_record_function(True)
            joiner.zero_grad(set_to_none=True)
            return reported

        return step


def run_benchmark(impl: LossImplementation, config: RunConfig, command: Optional[List[str]] = None) -> RunSummary:
    """Runs one implementation under the profiler; returns its summary (also written)."""
    return _SuiteRun(impl, config, new_summary(impl, config, command)).run()


def summary_line(summary: RunSummary) -> str:
    """The one line a run prints, e.g. ``torchaudio 2.11.0 [30, cpu]: average step time ...``."""
    where = f"[{summary.mode}, {summary.device}]"
    if summary.status != Status.OK:
        return f"{summary.label} {where}: {summary.status}: {summary.reason}"
    return (f"{summary.label} {where}: average step time {summary.avg_step_time_us:.0f} us, "
            f"loss region {summary.loss_time_us:.0f} us, peak memory {summary.peak_memory_mb:.1f} MB "
            f"({len(summary.step_times_us)} active steps) -> {summary.run_dir}")


def main(impl: Union[str, LossImplementation], argv: Optional[List[str]] = None) -> None:
    """Entry point of every ``benchmark_<impl>.py`` (a built-in name) and of
    ``python -m tlbench.run.benchmark`` (a loaded implementation)."""
    if isinstance(impl, str):
        from tlbench.implementations.registry import load

        impl = load(impl)
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]

    @exit_on_usage_error
    def run() -> RunSummary:
        parser = ArgumentParser(description=f"Benchmark the {impl.name} transducer loss "
                                "(joiner + loss forward/backward under torch.profiler).")
        add_run_arguments(parser)
        args = parser.parse_args(argv)
        return run_benchmark(impl, resolve_config(args, quick_overrides=impl.quick_overrides), command=command)

    summary = run()
    print(summary_line(summary), flush=True)
    raise SystemExit(EXIT_CODES[summary.status])

