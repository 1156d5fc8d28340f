"""The run skeleton every profiled run shares (a suite benchmark, a model profile): clear the
run folder, pass the gate, plan the batches, profile the steps, classify a failure, write
``key_averages.txt`` and ``summary.json``.

A tool subclasses :class:`ProfiledRun` and says only what differs: the shape table, the step
for a given backend, the key-averages tables, what it adds afterwards.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tlbench.core.errors import UsageError, first_line
from tlbench.core.io import atomic_write_text
from tlbench.core.status import Status
from tlbench.implementations.declaration import Backend, LossImplementation, Refusal
from tlbench.measure.measurement import StepMeasurement
from tlbench.measure.profiling import TraceWriter, clear_run_dir, profile_steps
from tlbench.measure.summary import RunSummary
from tlbench.run.options import RunConfig

__all__ = ["ProfiledRun", "batch_summary", "classify_step_failure", "plan_batches", "record_run"]

_DTYPE_ERROR_WORDS = ("dtype", "half", "bfloat16", "float16", "scalar type", "must be float", "not implemented for")

Step = Callable[[Sequence[Tuple[int, int]]], Any]


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
        return Status.OOM, (f"out of memory at step {step} on a batch of {failing['num_utterances']} utterances, "
                            f"T_max={failing['T_max']}, U_max={failing['U_max']}: {line}"), details
    if dtype != "float32" and any(word in str(error).lower() for word in _DTYPE_ERROR_WORDS):
        return Status.UNSUPPORTED, f"{dtype} logits refused: {type(error).__name__}: {line}", details
    details["traceback"] = traceback_text
    return Status.ERROR, f"{type(error).__name__} at step {step}: {str(error).strip()[:500]}", details


def plan_batches(shape_info, config: RunConfig) -> Tuple[list, bool]:
    """The batches of all ``config.num_steps`` steps, as lists of (T, U), and whether the
    sampler had to start over (fewer batches than steps).

    Args:
      shape_info: ``(N, 2)`` int64 table of [T, U] rows, already validated.
    """
    from tlbench.data.sampler import ShapeSampler, SortedShapeSampler

    sampler = (SortedShapeSampler(shape_info, config.max_frames) if config.sort_utterance
               else ShapeSampler(shape_info, config.batch_size))
    if len(sampler) == 0:
        raise UsageError(f"--batch-size {config.batch_size} is larger than the shape table "
                         f"({shape_info.size(0)} rows): no full batch; use a smaller --batch-size")
    batches = list(itertools.islice(itertools.cycle(sampler), config.num_steps))
    return batches, config.num_steps > len(sampler)


def record_run(summary: RunSummary, run, config: RunConfig, batches: Sequence) -> None:
    """Copies what a :class:`tlbench.measure.profiling.ProfiledRun` measured into ``summary``: the step
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


class ProfiledRun:
    """One profiled run of ``impl`` under ``config`` into the run folder ``run_name``.

    :meth:`run` is the skeleton; a subclass provides :meth:`shape_table` and
    :meth:`make_step` and may refine the other hooks. A step takes one batch's shapes
    ``[(T, U), ...]`` and returns the loss it reports (a scalar tensor or float).
    """

    region_name: Optional[str] = None  # the record_function label whose time is the loss time

    def __init__(self, impl: LossImplementation, config: RunConfig, run_name: str, summary: RunSummary):
        self.impl, self.config, self.run_name, self.summary = impl, config, run_name, summary
        self.run_dir = config.run_dir(run_name)
        self.writer: Optional[TraceWriter] = None

    # --- hooks ---------------------------------------------------------------------------
    def shape_table(self):
        """The ``(N, 2)`` [T, U] table the batches are drawn from."""
        raise NotImplementedError

    def make_step(self, backend: Backend) -> Step:
        """Builds whatever the steps share (model, joiner) and returns the step."""
        raise NotImplementedError

    def opened(self, backend: Backend) -> None:
        """Records which library runs (the label shows it)."""
        self.summary.backend, self.summary.backend_version = backend.name, backend.version
        self.summary.label = backend.label(self.impl.name)

    def key_averages(self, profiled) -> List[str]:
        return profiled.key_averages_tables

    def failing_batch(self, details: Dict[str, Any], shapes) -> Dict[str, Any]:
        return details["failing_batch"]

    def measured(self, profiled) -> None:
        """Adds what the tool derives from the profiled run, before summary.json is written."""

    # --- the skeleton --------------------------------------------------------------------
    def finish(self, status: str, reason: Optional[str] = None) -> RunSummary:
        self.summary.status, self.summary.reason = status, reason
        self.summary.write(os.path.join(self.run_dir, "summary.json"))
        return self.summary

    def run(self) -> RunSummary:
        """Runs the steps under the profiler; returns the summary (also written)."""
        import torch

        config, summary = self.config, self.summary
        clear_run_dir(self.run_dir)
        summary.set_measurement(StepMeasurement([]))
        try:
            backend = self.impl.open(config.device, config)
        except Refusal as refusal:
            return self.finish(refusal.status, refusal.reason)
        self.opened(backend)
        batches, summary.batches_reused = plan_batches(self.shape_table(), config)
        step = self.make_step(backend)
        if config.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        active = set(config.schedule.active_steps)
        reported: Dict[int, Any] = {}

        def profiled_step(index: int, shapes) -> None:
            loss = step(shapes)
            if index in active:
                reported[index] = loss.detach() if hasattr(loss, "detach") else loss

        profiled = profile_steps(self.run_dir, config.device, config.schedule, batches, profiled_step,
                                 f"{self.run_name}-{config.mode}", region_name=self.region_name, writer=self.writer)
        status, reason = Status.OK, None
        if profiled.failure is not None:
            failure = profiled.failure
            status, reason, details = classify_step_failure(failure.error, failure.step, failure.item, config.dtype,
                                                            failure.traceback)
            summary.failing_batch = self.failing_batch(details, failure.item)
            summary.traceback = details.get("traceback")
        atomic_write_text(os.path.join(self.run_dir, "key_averages.txt"),
                          "\n".join(self.key_averages(profiled)) or "(no completed cycle)\n")
        record_run(summary, profiled, config, batches)
        summary.loss_values = [float(reported[i]) for i in sorted(reported)]
        self.measured(profiled)
        return self.finish(status, reason)
