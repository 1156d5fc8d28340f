"""The benchmark of one implementation: batches from the shape table, the profiled step loop,
the run folder and its ``summary.json``.

One step = build random data, the loss input (``prepare``), the loss and its backward inside
``record_function(<name>)`` (the "loss region"), zero grads. :func:`run_benchmark` returns a
:class:`~tlbench.summary.RunSummary` (also written to ``<out-dir>/<name>-<mode>/summary.json``);
:func:`main` is the entry point of every ``benchmark_<impl>.py``.
"""

from __future__ import annotations

import datetime
import itertools
import os
import platform
import sys
from typing import List, Optional, Sequence, Tuple

from .errors import ArgumentParser, UsageError, exit_on_usage_error, first_line
from .implementation import BackendUnavailable, LossImplementation
from .io import atomic_write_text
from .measurement import StepMeasurement
from .options import RunConfig, add_run_arguments, resolve_config
from .profiling import clear_run_dir, profile_steps
from .summary import EXIT_CODES, STATUS_ERROR, STATUS_OK, STATUS_OOM, STATUS_UNAVAILABLE, STATUS_UNSUPPORTED, RunSummary

__all__ = ["batch_summary", "classify_step_failure", "device_name", "load_table", "main", "new_summary", "plan_batches",
           "record_run", "run_benchmark", "summary_line"]

_DTYPE_ERROR_WORDS = ("dtype", "half", "bfloat16", "float16", "scalar type", "must be float", "not implemented for")


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name with its core count."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def batch_summary(shapes: Sequence[Tuple[int, int]], with_shapes: bool = False) -> dict:
    """``num_utterances``, ``T_max``, ``U_max`` (and the ``shapes``) of one batch."""
    summary = {"num_utterances": len(shapes), "T_max": max(t for t, _ in shapes), "U_max": max(u for _, u in shapes)}
    if with_shapes:
        summary["shapes"] = [list(tu) for tu in shapes]
    return summary


def classify_step_failure(error: BaseException, step: int, shapes, dtype: str = "float32",
                          traceback_text: str = "") -> Tuple[str, str, dict]:
    """Status, one-line reason and summary fields for an exception raised inside a step.

    Out of memory -> "oom"; a non-float32 dtype the library refuses -> "unsupported";
    anything else -> "error" (with the traceback's tail).
    """
    failing = {"step": step, **batch_summary(shapes)}
    details: dict = {"failing_batch": failing}
    line = first_line(error, limit=300)
    if _is_out_of_memory(error):
        return STATUS_OOM, (f"out of memory at step {step} on a batch of {failing['num_utterances']} utterances, "
                            f"T_max={failing['T_max']}, U_max={failing['U_max']}: {line}"), details
    if dtype != "float32" and any(word in str(error).lower() for word in _DTYPE_ERROR_WORDS):
        return STATUS_UNSUPPORTED, f"{dtype} logits refused: {type(error).__name__}: {line}", details
    details["traceback"] = traceback_text
    return STATUS_ERROR, f"{type(error).__name__} at step {step}: {str(error).strip()[:500]}", details


def plan_batches(shape_info, config: RunConfig) -> Tuple[list, bool]:
    """The batches of all ``config.num_steps`` steps, as lists of (T, U), and whether the
    sampler had to start over (fewer batches than steps).

    Args:
      shape_info: ``(N, 2)`` int64 table of [T, U] rows, already validated.
    """
    from shape_sampler import ShapeSampler, SortedShapeSampler

    sampler = (SortedShapeSampler(shape_info, config.max_frames) if config.sort_utterance
               else ShapeSampler(shape_info, config.batch_size))
    if len(sampler) == 0:
        raise UsageError(f"--batch-size {config.batch_size} is larger than the shape table "
                         f"({shape_info.size(0)} rows): no full batch; use a smaller --batch-size")
    batches = list(itertools.islice(itertools.cycle(sampler), config.num_steps))
    return batches, config.num_steps > len(sampler)


def load_table(config: RunConfig):
    """The shape table of a run: rescaled to its subsampling, capped by --max-utterance-frames."""
    from shape_sampler import load_shape_info

    from .data import rescale_frames

    shape_info = rescale_frames(load_shape_info(config.shape_info), config.subsampling_factor)
    if config.max_utterance_frames is not None:
        shape_info = shape_info[shape_info[:, 0] <= config.max_utterance_frames]
        if shape_info.size(0) == 0:
            raise UsageError(f"--max-utterance-frames {config.max_utterance_frames} leaves no utterance in "
                             f"{config.shape_info}; use a larger value")
    return shape_info


def new_summary(impl: LossImplementation, config: RunConfig, command: Optional[List[str]]) -> RunSummary:
    """The summary of a run that has not measured anything yet."""
    import torch

    return RunSummary(
        implementation=impl.name, label=impl.name, device=config.device, device_name=device_name(config.device),
        mode=config.mode,
        batching=(f"sorted by T, at most {config.max_frames} frames per batch" if config.sort_utterance
                  else f"{config.batch_size} consecutive utterances per batch"),
        preset=config.preset, preset_reason=config.preset_reason, schedule=config.schedule.to_dict(),
        seed=config.seed, vocab_size=config.vocab_size, dtype=config.dtype,
        subsampling_factor=config.subsampling_factor, max_utterance_frames=config.max_utterance_frames,
        inner_ops_hidden=impl.hide_inner_ops, encoder_out_dim=config.encoder_out_dim, shape_info=config.shape_info,
        torch_version=torch.__version__, python_version=platform.python_version(),
        num_threads=torch.get_num_threads(), config=config.to_dict(), command=list(command or sys.argv),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        run_dir=config.run_dir(impl.name), config_hash=config.fingerprint(impl.name),
    )


def run_benchmark(impl: LossImplementation, config: RunConfig, command: Optional[List[str]] = None) -> RunSummary:
    """Runs one implementation under the profiler; returns its summary (also written)."""
    import torch

    from .data import Joiner, make_batch

    run_dir = config.run_dir(impl.name)
    clear_run_dir(run_dir)
    summary = new_summary(impl, config, command)
    summary.set_measurement(StepMeasurement([]))

    def finish(status: str, reason: Optional[str] = None) -> RunSummary:
        summary.status, summary.reason = status, reason
        summary.write(os.path.join(run_dir, "summary.json"))
        return summary

    unsupported = impl.supports_device(config.device)
    if unsupported:
        return finish(STATUS_UNAVAILABLE, unsupported)
    unsupported = impl.supports_config(config)
    if unsupported:
        return finish(STATUS_UNSUPPORTED, unsupported)
    try:
        backend = impl.load_backend()
    except BackendUnavailable as missing:
        return finish(STATUS_UNAVAILABLE, impl.unavailable(missing))
    summary.backend, summary.backend_version, summary.label = backend.name, backend.version, backend.label(impl.name)

    batches, summary.batches_reused = plan_batches(load_table(config), config)
    device = torch.device(config.device)
    logits_dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    joiner = Joiner(config.encoder_out_dim, config.vocab_size).to(device)
    if impl.warm_up is not None:
        impl.warm_up(backend, device)
    if config.device == "cuda":
        if config.memory_budget_gb is not None:  # an allocation beyond it raises OutOfMemoryError: status "oom"
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, config.memory_budget_gb * 2**30 / total), device)
        torch.cuda.reset_peak_memory_stats()
    active_steps = set(config.schedule.active_steps)
    reported_losses = {}

    def step(index: int, shapes) -> None:
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
        if index in active_steps:
            reported_losses[index] = reported.detach()

    run = profile_steps(run_dir, config.device, config.schedule, batches, step, f"{impl.name}-{config.mode}",
                        region_name=impl.name)
    status, reason = STATUS_OK, None
    if run.failure is not None:
        status, reason, details = classify_step_failure(run.failure.error, run.failure.step, run.failure.item,
                                                        config.dtype, run.failure.traceback)
        summary.failing_batch = details["failing_batch"]
        summary.traceback = details.get("traceback")
    atomic_write_text(os.path.join(run_dir, "key_averages.txt"),
                      "\n".join(run.key_averages_tables) or "(no completed cycle)\n")
    record_run(summary, run, config, batches)
    summary.loss_values = [float(reported_losses[i]) for i in sorted(reported_losses)]
    return finish(status, reason)


def record_run(summary: RunSummary, run, config: RunConfig, batches: Sequence) -> None:
    """Copies what a :class:`tlbench.profiling.ProfiledRun` measured into ``summary``: the step
    samples and statistics (with the loss region's times when it has them), memory, traces and
    the shapes of the recorded batches."""
    import torch

    summary.set_measurement(StepMeasurement(run.step_times_us, run.region_times_us))
    summary.host_step_times_us = run.host_step_times_us
    summary.device_busy_us = run.device_busy_us if config.device == "cuda" else None
    summary.peak_memory_mb = run.peak_memory_mb
    summary.peak_memory_source = (f"max 'Total Allocated' of the {run.memory_device} [memory] events in the traces "
                                  "(what TensorBoard's memory view shows)")
    if config.device == "cuda":
        summary.cuda_max_memory_allocated_mb = torch.cuda.max_memory_allocated() / 2**20
    summary.traces = run.traces
    summary.key_averages_file = "key_averages.txt"
    summary.measured_batches = [{"step": i, **batch_summary(batches[i], with_shapes=True)}
                                for i in config.schedule.active_steps if i < run.completed_steps]


def summary_line(summary: RunSummary) -> str:
    """The one line a run prints, e.g. ``torchaudio 2.11.0 [30, cpu]: average step time ...``."""
    where = f"[{summary.mode}, {summary.device}]"
    if summary.status != STATUS_OK:
        return f"{summary.label} {where}: {summary.status}: {summary.reason}"
    return (f"{summary.label} {where}: average step time {summary.avg_step_time_us:.0f} us, "
            f"loss region {summary.loss_time_us:.0f} us, peak memory {summary.peak_memory_mb:.1f} MB "
            f"({len(summary.step_times_us)} active steps) -> {summary.run_dir}")


def main(impl: LossImplementation, argv: Optional[List[str]] = None) -> None:
    """Entry point of every ``benchmark_<impl>.py`` (and of ``benchmark_one.py``)."""
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

