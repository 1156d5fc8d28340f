"""How big a batch fits: the largest fixed batch size and the largest max-frames (sorted batching)
whose training step stays within a memory budget, for one implementation.

The search: start from the smallest size (batch size 1; max-frames = the longest utterance),
double while the probe fits, then bisect between the largest size that fitted and the smallest
that did not (batch size: to one utterance; max-frames: to 1% of the size), at most
``max_probes`` probes. A probe is the suite's own step (``benchmark_<impl>.py`` through the
harness: random data, joiner, loss, backward) on the batch of that size that matters most
for memory, in its own process, so that an out-of-memory error, a crash or a kill ends that
probe only:

- the batch: among the sampler's batches of that size (consecutive rows, or the sorted packing),
  the one with the largest padded lattice ``N x T_max x (U_max + 1)`` (for a fixed batch size:
  the largest ``T_max x U_max``); its shapes are written to the probe's shape table and named
  in the result, and its values come from ``--seed`` (repeatable);
- two steps, the second recorded (schedule wait=0 warmup=1 active=1 repeat=1);
- fits: status ``ok`` and the profiler's peak allocated memory at most the budget. On CUDA the
  budget is also enforced (``torch.cuda.set_per_process_memory_fraction``), so a step beyond it
  fails with "oom"; on CPU a probe whose estimated memory exceeds what the machine has free is
  refused before it runs (estimate: the largest fitting probe's peak scaled by the padded
  lattice size, or, before any probe fitted, the logits and their gradient, 8 bytes per cell
  and vocabulary entry).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tlbench.core.errors import first_line
from tlbench.core.status import Status
from tlbench.measure.summary import RunSummary, SummaryError

__all__ = ["MODES", "CapacityJob", "CapacityRow", "Probe", "available_memory_bytes", "critical_batch",
           "machine_memory_bytes", "rows_from_dicts", "run_capacity_job", "search_capacity"]

MODES = ("batch-size", "max-frames")
PROBE_SCHEDULE = ["--wait", "0", "--warmup", "1", "--active", "1", "--repeat", "1"]
# On CPU a probe is refused when its estimate exceeds this share of the memory available now.
CPU_MEMORY_HEADROOM = 0.85
MAX_FRAMES_RESOLUTION = 0.01  # bisection of max-frames stops within 1% of the size


def _meminfo(key: str) -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_memory_bytes() -> Optional[int]:
    """The machine's RAM (MemTotal), or None where /proc/meminfo is not there."""
    return _meminfo("MemTotal")


def available_memory_bytes() -> Optional[int]:
    return _meminfo("MemAvailable")


def _lattice(batch: Sequence[Tuple[int, int]]) -> int:
    """Padded lattice cells ``N x T_max x (U_max + 1)``."""
    return len(batch) * max(t for t, _ in batch) * (max(u for _, u in batch) + 1)


def critical_batch(table, mode: str, size: int) -> Tuple[List[Tuple[int, int]], int, int]:
    """(the batch with the largest padded lattice, its index, the number of batches) among the
    batches of ``size`` (a batch size or max-frames) of ``table`` ``(N, 2)`` [T, U]."""
    from tlbench.data.sampler import ShapeSampler, SortedShapeSampler

    sampler = ShapeSampler(table, size) if mode == "batch-size" else SortedShapeSampler(table, size)
    batches = list(sampler)
    index = max(range(len(batches)), key=lambda i: _lattice(batches[i]))
    return batches[index], index, len(batches)


@dataclass
class Probe:
    """One probe: the size tried, the batch it ran, what it measured and whether it fitted."""

    size: int
    fits: bool
    status: str  # the run's status ("ok", "oom", "error", ...), or "refused" / "over budget"
    reason: Optional[str] = None
    peak_memory_mb: Optional[float] = None
    step_time_us: Optional[float] = None
    num_utterances: int = 0
    frames: int = 0
    T_max: int = 0
    U_max: int = 0
    lattice_cells: int = 0
    batch_index: int = 0
    num_batches: int = 0
    run_dir: Optional[str] = None

    @property
    def frames_per_s(self) -> Optional[float]:
        return self.frames / (self.step_time_us / 1e6) if self.step_time_us else None

    @property
    def utterances_per_s(self) -> Optional[float]:
        return self.num_utterances / (self.step_time_us / 1e6) if self.step_time_us else None

    def describe_batch(self) -> str:
        return (f"batch {self.batch_index + 1} of {self.num_batches}: {self.num_utterances} utterances, "
                f"T_max={self.T_max}, U_max={self.U_max}, {self.frames} frames")

    def to_dict(self) -> dict:
        return {**asdict(self), "frames_per_s": self.frames_per_s, "utterances_per_s": self.utterances_per_s}


@dataclass
class CapacityRow:
    """The result for one implementation and mode (the columns of capacity.csv, then the probes)."""

    implementation: str
    mode: str
    budget_gb: float
    largest_fitting: Optional[int]
    peak_memory_mb: Optional[float]
    frames_per_s: Optional[float]
    utterances_per_s: Optional[float]
    first_not_fitting: Optional[int]
    reason: str
    device: str = "cpu"
    label: str = ""
    probed_batch: str = ""
    probes: List[Probe] = field(default_factory=list)

    CSV_COLUMNS = ("implementation", "mode", "budget_gb", "largest_fitting", "peak_memory_mb", "frames_per_s",
                   "utterances_per_s", "first_not_fitting", "reason", "device", "label", "probed_batch")

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in self.CSV_COLUMNS}
        data["probes"] = [p.to_dict() for p in self.probes]
        return data


@dataclass
class CapacityJob:
    """One search: an implementation (spec) and a mode, with everything the probes need."""

    spec: str
    name: str
    mode: str
    budget_gb: float
    device: str
    table_path: str
    out_dir: str
    max_probes: int
    flags: List[str]  # forwarded to every probe (sizes, dtype, seed, ...)
    seed: int = 0
    vocab_size: int = 500


def _estimate_bytes(job: CapacityJob, batch, fitted: List[Probe]) -> int:
    cells = _lattice(batch)
    if fitted:
        best = max(fitted, key=lambda p: p.lattice_cells)
        return int(best.peak_memory_mb * 2**20 * cells / max(1, best.lattice_cells))
    return 8 * cells * job.vocab_size


def _run_probe(job: CapacityJob, size: int, fitted: List[Probe]) -> Probe:
    import torch

    from tlbench.core.io import atomic_save_tensor
    from tlbench.data.shape_table import load_shape_info
    from tlbench.implementations.registry import command_for, subprocess_env

    batch, index, count = critical_batch(load_shape_info(job.table_path), job.mode, size)
    probe = Probe(size, False, Status.REFUSED, num_utterances=len(batch), frames=sum(t for t, _ in batch),
                  T_max=max(t for t, _ in batch), U_max=max(u for _, u in batch), lattice_cells=_lattice(batch),
                  batch_index=index, num_batches=count)
    if job.device == "cpu":
        estimate, free = _estimate_bytes(job, batch, fitted), available_memory_bytes()
        if free is not None and estimate > CPU_MEMORY_HEADROOM * free:
            probe.reason = (f"refused before running: estimated {estimate / 2**30:.2f} GiB > {CPU_MEMORY_HEADROOM:.0%} "
                            f"of the {free / 2**30:.2f} GiB this machine has free")
            return probe
    probe.run_dir = os.path.join(job.out_dir, "probes", f"{job.name}-{job.mode}-{size}")
    os.makedirs(probe.run_dir, exist_ok=True)
    table = os.path.join(probe.run_dir, "shape_info.pt")
    atomic_save_tensor(table, torch.tensor(batch, dtype=torch.int32))  # (N, 2): exactly the probed batch
    sizing = (["--sort-utterance", "false", "--batch-size", str(len(batch))] if job.mode == "batch-size"
              else ["--sort-utterance", "true", "--max-frames", str(size)])
    command = [*command_for(job.spec), "--device", job.device, "--preset", "quick", "--shape-info", table,
               "--out-dir", probe.run_dir, *PROBE_SCHEDULE, *sizing, *job.flags]
    if job.device == "cuda":
        command += ["--memory-budget-gb", str(job.budget_gb)]
    with open(os.path.join(probe.run_dir, "probe.log"), "w", encoding="utf-8") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    found = [os.path.join(probe.run_dir, d, "summary.json") for d in sorted(os.listdir(probe.run_dir))
             if os.path.isfile(os.path.join(probe.run_dir, d, "summary.json"))]
    try:
        summary = RunSummary.load(found[0]) if found else None
    except SummaryError:
        summary = None
    if summary is None:
        how = "killed (likely out of memory)" if process.returncode in (-9, 137) else \
            f"exited with code {process.returncode}"
        probe.status, probe.reason = Status.ERROR, f"the probe process {how} without a summary"
        return probe
    probe.status, probe.peak_memory_mb = summary.status, summary.peak_memory_mb
    probe.step_time_us = summary.avg_step_time_us
    if summary.status != Status.OK:
        probe.reason = f"{summary.status}: {summary.reason}"
        return probe
    if summary.peak_memory_mb is not None and summary.peak_memory_mb > job.budget_gb * 1024:
        probe.status = Status.OVER_BUDGET
        probe.reason = f"peak {summary.peak_memory_mb:.1f} MB > the budget of {job.budget_gb * 1024:.1f} MB"
        return probe
    probe.fits = True
    return probe


def search_capacity(job: CapacityJob, progress=None) -> CapacityRow:
    """The bisection of :mod:`this module <tlbench.tools.capacity>` for one implementation and mode."""
    from tlbench.data.shape_table import load_shape_info
    from tlbench.implementations.registry import load

    impl = load(job.spec)
    table = load_shape_info(job.table_path)
    smallest = 1 if job.mode == "batch-size" else int(table[:, 0].max())
    largest = int(table.size(0)) if job.mode == "batch-size" else int(table[:, 0].sum())
    probes: List[Probe] = []
    fit: Optional[Probe] = None
    miss: Optional[Probe] = None
    reason = ""
    while True:
        if miss is None:
            size = smallest if fit is None else min(2 * fit.size, largest)
            if fit is not None and fit.size == largest:
                reason = "the whole shape table fits in one batch"
                break
        else:
            if fit is None:  # the search starts at the smallest size: nothing fits at all
                reason = f"even the smallest size does not fit ({miss.reason or miss.status})"
                break
            step = 1 if job.mode == "batch-size" else max(1, math.ceil(MAX_FRAMES_RESOLUTION * fit.size))
            if miss.size - fit.size <= step:
                reason = f"{miss.status}: {miss.reason}" if miss.reason else miss.status
                break
            size = (fit.size + miss.size) // 2
        if len(probes) >= job.max_probes:
            reason = f"--max-probes {job.max_probes} reached" + (f"; last: {probes[-1].reason}" if probes[-1].reason
                                                                  and not probes[-1].fits else "")
            break
        probe = _run_probe(job, size, [p for p in probes if p.fits])
        probes.append(probe)
        if progress is not None:
            progress(job, probe)
        if probe.fits and (fit is None or probe.size > fit.size):
            fit = probe
        elif not probe.fits and (miss is None or probe.size < miss.size):
            miss = probe
        if probe.status in (Status.UNAVAILABLE, Status.UNSUPPORTED):
            reason = probe.reason or probe.status
            break
    return CapacityRow(
        implementation=impl.name, mode=job.mode, budget_gb=job.budget_gb,
        largest_fitting=fit.size if fit else None, peak_memory_mb=fit.peak_memory_mb if fit else None,
        frames_per_s=fit.frames_per_s if fit else None, utterances_per_s=fit.utterances_per_s if fit else None,
        first_not_fitting=miss.size if miss else None, reason=reason, device=job.device, label=impl.name,
        probed_batch=fit.describe_batch() if fit else (miss.describe_batch() if miss else ""), probes=probes)


def run_capacity_job(job: CapacityJob) -> CapacityRow:
    """The executor's job function (module level, so that submitit can pickle it)."""
    def report(job: CapacityJob, probe: Probe) -> None:
        verdict = "fits" if probe.fits else "does not fit"
        peak = f"{probe.peak_memory_mb:.1f} MB" if probe.peak_memory_mb is not None else "-"
        print(f"{job.name} {job.mode} {probe.size}: {verdict} (peak {peak}; {probe.describe_batch()})"
              + (f"; {probe.reason}" if probe.reason and not probe.fits else ""), file=sys.stderr, flush=True)

    try:
        return search_capacity(job, progress=report)
    except Exception as error:  # one implementation's failure never loses the others'
        return CapacityRow(job.name, job.mode, job.budget_gb, None, None, None, None, None,
                           f"the search failed: {first_line(error, with_type=True)}", device=job.device)


def rows_from_dicts(data: Sequence[Dict[str, Any]]) -> List[CapacityRow]:
    """capacity.json's rows back as :class:`CapacityRow` (for the pictures and tests)."""
    rows = []
    for item in data:
        probes = [Probe(**{k: v for k, v in p.items() if k not in ("frames_per_s", "utterances_per_s")})
                  for p in item.get("probes", [])]
        rows.append(CapacityRow(**{k: item.get(k) for k in CapacityRow.CSV_COLUMNS}, probes=probes))
    return rows
