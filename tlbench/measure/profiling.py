"""The one profiled step loop: schedule, trace writing, progress, failure capture, trace parsing.

:func:`profile_steps` runs ``step(i, item)`` for every item under ``torch.profiler`` with a
``wait/warmup/active/repeat`` schedule, CPU activity (plus CUDA on a GPU), ``record_shapes``,
``with_stack`` and ``profile_memory``. Each profiler cycle's Chrome trace is written
atomically, with ``tensorboard_trace_handler``'s file naming, into its own folder
``<run_dir>/cycle-<k>/`` (one trace per folder: what HTA expects of a folder, and TensorBoard
shows each as a run), together with the cycle's ``key_averages`` table. The first step that
raises ends the loop; its exception and traceback are returned, not raised. The traces are
then parsed once (:mod:`tlbench.measure.trace`) into a :class:`ProfiledRun`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["CYCLE_PREFIX", "ProfiledRun", "Schedule", "StepFailure", "TraceWriter", "clear_run_dir",
           "profile_steps"]

CYCLE_PREFIX = "cycle-"
_BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class Schedule:
    """``torch.profiler.schedule`` arguments; steps of a cycle: wait, then warmup, then active."""

    wait: int
    warmup: int
    active: int
    repeat: int

    @property
    def num_steps(self) -> int:
        return (self.wait + self.warmup + self.active) * self.repeat

    @property
    def active_steps(self) -> List[int]:
        """Indices (from 0) of the recorded steps."""
        cycle = self.wait + self.warmup + self.active
        return [i for i in range(self.num_steps) if i % cycle >= self.wait + self.warmup]

    def to_dict(self) -> Dict[str, int]:
        return {"wait": self.wait, "warmup": self.warmup, "active": self.active, "repeat": self.repeat}


class TraceWriter:
    """``on_trace_ready`` handler: each cycle's trace in its own folder, written atomically,
    plus its key_averages table; ``on_cycle(prof, cycle, path)`` hooks run after each."""

    def __init__(self, run_dir: str, device: str, on_cycle: Sequence[Callable[[Any, int, str], None]] = ()):
        self.run_dir = run_dir
        self.sort_by = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        self.worker = f"{socket.gethostname()}_{os.getpid()}"
        self.on_cycle = list(on_cycle)
        self.trace_paths: List[str] = []
        self.tables: List[str] = []

    def __call__(self, prof) -> None:
        cycle = len(self.trace_paths) + 1
        folder = os.path.join(self.run_dir, f"{CYCLE_PREFIX}{cycle}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{self.worker}.{time.time_ns() // 1_000_000}.pt.trace.json")
        tmp_path = os.path.join(folder, f".tmp-{os.path.basename(path)}")
        prof.export_chrome_trace(tmp_path)
        os.replace(tmp_path, path)
        self.trace_paths.append(path)
        table = prof.key_averages(group_by_stack_n=10).table(sort_by=self.sort_by, row_limit=8)
        self.tables.append(f"# cycle {cycle}: {os.path.relpath(path, self.run_dir)}\n"
                           f"# key_averages(group_by_stack_n=10), sorted by {self.sort_by}, 8 rows\n{table}\n")
        for hook in self.on_cycle:
            hook(prof, cycle, path)


def clear_run_dir(run_dir: str) -> None:
    """Removes what a previous run left that this one rewrites (traces in the old flat layout,
    cycle folders, the summary)."""
    os.makedirs(run_dir, exist_ok=True)
    for path in glob.glob(os.path.join(run_dir, "*.pt.trace.json*")) + glob.glob(os.path.join(run_dir, "summary.json")):
        os.remove(path)
    for folder in glob.glob(os.path.join(run_dir, f"{CYCLE_PREFIX}*")):
        if os.path.isdir(folder):
            shutil.rmtree(folder)


@dataclass
class StepFailure:
    """The exception that ended the loop, with its step and the item it was given."""

    step: int
    item: Any
    error: BaseException
    traceback: str


@dataclass
class ProfiledRun:
    """What the traces say about the recorded steps (all cycles together).

    Attributes:
      step_times_us: each recorded step's duration (device-aware, as TensorBoard's overview).
      host_step_times_us: the same steps' host (CPU) spans.
      region_times_us: the ``region_name`` label's host time per recorded step.
      device_busy_us: GPU kernels + copies + sets inside the recorded steps (0 on CPU).
      peak_memory_bytes: the largest "Total Allocated" of the memory device's events.
      traces: one entry per cycle: ``file`` (relative to the run folder), ``steps``,
        ``avg_step_time_us``, ``peak_memory_mb``.
      failure: the step that raised, if any.
      completed_steps: steps that finished before the failure (all of them without one).
    """

    memory_device: str
    step_times_us: List[float] = field(default_factory=list)
    host_step_times_us: List[float] = field(default_factory=list)
    region_times_us: List[float] = field(default_factory=list)
    device_busy_us: float = 0.0
    peak_memory_bytes: int = 0
    traces: List[Dict[str, Any]] = field(default_factory=list)
    key_averages_tables: List[str] = field(default_factory=list)
    failure: Optional[StepFailure] = None
    completed_steps: int = 0

    @property
    def peak_memory_mb(self) -> Optional[float]:
        return self.peak_memory_bytes / _BYTES_PER_MB if self.traces else None


def profile_steps(run_dir: str, device: str, schedule: Schedule, items: Sequence[Any],
                  step: Callable[[int, Any], None], description: str, region_name: Optional[str] = None,
                  writer: Optional[TraceWriter] = None) -> ProfiledRun:
    """Runs ``step(i, items[i])`` for every item under the profiler (``len(items)`` should be
    ``schedule.num_steps``); returns the parsed traces. ``step`` must leave no open
    ``record_function`` when it raises."""
    import torch
    from tqdm import tqdm

    from tlbench.measure.trace import parse_trace

    writer = writer or TraceWriter(run_dir, device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    # We write a trace and a key_averages table per cycle, so per-cycle clearing is intended.
    warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle.*")
    failure = None
    completed = 0
    with torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(**schedule.to_dict()),
        on_trace_ready=writer,
        record_shapes=True,
        with_stack=True,
        profile_memory=True,
    ) as prof:
        progress = tqdm(items, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        for index, item in enumerate(progress):
            try:
                step(index, item)
            except Exception as error:  # one failing step ends the run; the caller records why
                failure = StepFailure(index, item, error, traceback.format_exc()[-4000:])
                break
            completed += 1
            prof.step()
        progress.close()

    memory_device = "cuda" if device == "cuda" else "cpu"
    run = ProfiledRun(memory_device, key_averages_tables=list(writer.tables), failure=failure,
                      completed_steps=completed)
    for path in writer.trace_paths:
        parsed = parse_trace(path, region_name=region_name)
        times = [s.duration_us for s in parsed.steps]
        run.step_times_us += times
        run.host_step_times_us += [s.host_duration_us for s in parsed.steps]
        if region_name is not None:
            run.region_times_us += [parsed.region_us_by_step.get(s.step, 0.0) for s in parsed.steps]
        run.device_busy_us += parsed.device_busy_us
        peak = parsed.peak_allocated_bytes.get(memory_device, 0)
        run.peak_memory_bytes = max(run.peak_memory_bytes, peak)
        run.traces.append({"file": os.path.relpath(path, run_dir), "steps": [s.step for s in parsed.steps],
                           "avg_step_time_us": sum(times) / len(times) if times else None,
                           "peak_memory_mb": peak / _BYTES_PER_MB})
    return run
