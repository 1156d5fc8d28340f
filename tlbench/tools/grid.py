"""Real-time factor and peak memory of a transducer loss on a grid of durations x batch sizes.

Each cell (duration d seconds, batch size b) is a batch of b identical utterances of
``T = round(d * 100 / subsampling)`` frames (100 feature frames per second, 4x subsampling by
default) and ``U = round(r * T)`` tokens (both >= 1), ``r`` being the median tokens-per-frame
ratio U/T of the shape table. The cell runs through the shared harness
(:func:`tlbench.run.harness.run_benchmark`: random inputs, joiner, loss, backward, zero grads) for
six steps under torch.profiler with schedule wait=2 warmup=2 active=2, so the last two steps are
recorded; its numbers are the harness's :class:`~tlbench.measure.summary.RunSummary` (no trace is read
twice).

- Real-time factor = compute time of the recorded steps / audio seconds in them (2 x b x d).
  On CPU the compute time is the recorded steps' span. On a GPU two parts are shown: the host
  (CPU) time of the steps and the GPU busy time (kernels, copies, sets), e.g. ``4.08E-02 + 7.18E-02``.
- Peak memory (GB) = the largest "Total Allocated" of the device's ``[memory]`` trace events.
- A cell that runs out of memory is OOM and the grid goes on; any other failure is ERR (its
  reason is in the JSON). With ``--triangle-only`` the heavy corner is skipped (N/A), see
  :func:`is_skipped`.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Sequence, Set, Tuple

from tlbench import REPO_DIR
from tlbench.core.errors import UsageError, first_line
from tlbench.core.io import check_input_file
from tlbench.core.status import Status
from tlbench.data.shape_table import FRAMES_PER_SECOND
from tlbench.implementations.declaration import LossImplementation, Refusal
from tlbench.measure.environment import device_name
from tlbench.run.options import DEFAULT_SEED, RunConfig

__all__ = ["CONFIG_KEYS", "DEFAULT_BATCH_SIZES", "DEFAULT_DURATIONS_S", "DEFAULT_OUTPUT_FORMATS",
           "OUTPUT_FORMATS", "SCHEDULE", "CellMeasurement", "GridResult",
           "GridSettings", "GridSpec", "cell_config", "cell_shape", "check_grid", "is_skipped", "load_grid_config",
           "median_tokens_per_frame", "run_cell", "run_grid", "skipped_cells"]

OUTPUT_FORMATS = ("md", "csv", "json", "latex")
DEFAULT_DURATIONS_S = (1.0, 2.0, 5.0, 8.0, 32.0)
DEFAULT_BATCH_SIZES = (1, 4, 8)
DEFAULT_OUTPUT_FORMATS = ("md", "csv", "json")
# Six steps per cell; only the last two are recorded.
SCHEDULE = {"wait": 2, "warmup": 2, "active": 2, "repeat": 1}
CONFIG_KEYS = ("durations", "batch_sizes", "triangle_only", "export_traces", "output_formats")



def is_skipped(duration_index: int, batch_index: int, num_durations: int, num_batch_sizes: int) -> bool:
    """The published triangle rule: cell (d, b) (indices from 0) is skipped when
    ``d + b >= (num_durations + num_batch_sizes) / 2`` and ``d > 0`` and ``b > 0``."""
    return (duration_index > 0 and batch_index > 0
            and duration_index + batch_index >= (num_durations + num_batch_sizes) / 2)


def skipped_cells(num_durations: int, num_batch_sizes: int) -> Set[Tuple[int, int]]:
    """Every (duration index, batch index) that :func:`is_skipped` names."""
    return {(d, b) for d in range(num_durations) for b in range(num_batch_sizes)
            if is_skipped(d, b, num_durations, num_batch_sizes)}


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def cell_shape(duration_s: float, subsampling_factor: int, tokens_per_frame: float) -> Tuple[int, int]:
    """(T, U) of one utterance of ``duration_s`` seconds; both at least 1."""
    frames = max(1, _round_half_up(duration_s * FRAMES_PER_SECOND / subsampling_factor))
    return frames, max(1, _round_half_up(tokens_per_frame * frames))


def median_tokens_per_frame(shape_info_path: str) -> float:
    """Median of U/T over the rows of a shape table."""
    from tlbench.data.shape_table import load_shape_info

    table = load_shape_info(shape_info_path).double()  # (N, 2) [T, U]
    return float((table[:, 1] / table[:, 0]).quantile(0.5))


@dataclass(frozen=True)
class GridSpec:
    """Which cells to run and what to write."""

    durations_s: Tuple[float, ...] = DEFAULT_DURATIONS_S
    batch_sizes: Tuple[int, ...] = DEFAULT_BATCH_SIZES
    triangle_only: bool = False
    export_traces: bool = False
    output_formats: Tuple[str, ...] = DEFAULT_OUTPUT_FORMATS


@dataclass(frozen=True)
class GridSettings:
    """Everything else a grid run needs (shared by all implementations)."""

    device: str = "cpu"
    vocab_size: int = 500
    encoder_out_dim: int = 512
    seed: int = DEFAULT_SEED
    subsampling_factor: int = 4
    tokens_per_frame: float = 0.2133
    tokens_per_frame_source: str = "given"
    out_dir: str = os.path.join(REPO_DIR, "log")
    pic_dir: str = os.path.join(REPO_DIR, "log", "pic")


@dataclass
class CellMeasurement:
    """One cell: raw samples of its recorded steps and the statistics derived from them."""

    duration_s: float
    batch_size: int
    T: int
    U: int
    status: str
    reason: Optional[str] = None
    step_times_us: List[float] = field(default_factory=list)  # recorded steps, wall span (device-aware)
    host_step_times_us: List[float] = field(default_factory=list)  # the same steps, host side only
    device_busy_us: Optional[float] = None  # GPU kernels + copies + sets in the recorded steps
    peak_memory_bytes: Optional[int] = None
    cuda_max_memory_allocated_bytes: Optional[int] = None
    loss_values: List[float] = field(default_factory=list)
    trace_dir: Optional[str] = None

    @property
    def audio_s(self) -> float:
        return len(self.step_times_us) * self.batch_size * self.duration_s

    def _per_audio_second(self, time_us: Optional[float]) -> Optional[float]:
        if self.status != Status.OK or time_us is None or not self.audio_s:
            return None
        return time_us / 1e6 / self.audio_s

    @property
    def rtf(self) -> Optional[float]:
        return self._per_audio_second(sum(self.step_times_us))

    @property
    def rtf_cpu(self) -> Optional[float]:
        return self._per_audio_second(sum(self.host_step_times_us))

    @property
    def rtf_cuda(self) -> Optional[float]:
        return self._per_audio_second(self.device_busy_us)

    @property
    def peak_memory_gb(self) -> Optional[float]:
        if self.status != Status.OK or self.peak_memory_bytes is None:
            return None
        return self.peak_memory_bytes / 2**30

    def to_dict(self) -> dict:
        return {**asdict(self), "audio_s": self.audio_s, "rtf": self.rtf, "rtf_cpu": self.rtf_cpu,
                "rtf_cuda": self.rtf_cuda, "peak_memory_gb": self.peak_memory_gb}


@dataclass
class GridResult:
    implementation: str
    label: str
    status: str
    reason: Optional[str]
    spec: GridSpec
    settings: GridSettings
    cells: List[CellMeasurement]
    device_name: str = ""
    command: List[str] = field(default_factory=list)
    created_at: str = ""

    def cell(self, duration_index: int, batch_index: int) -> CellMeasurement:
        return self.cells[duration_index * len(self.spec.batch_sizes) + batch_index]

    def to_dict(self) -> dict:
        return {"implementation": self.implementation, "label": self.label, "status": self.status,
                "reason": self.reason, "device": self.settings.device, "device_name": self.device_name,
                "spec": asdict(self.spec), "settings": asdict(self.settings), "schedule": SCHEDULE,
                "rtf_definition": ("compute time of the recorded steps / audio seconds in them (2 x batch size x "
                                   "duration); on a GPU rtf_cpu uses the host time of the steps and rtf_cuda the GPU "
                                   "busy time (kernels, copies, sets)"),
                "peak_memory_definition": "max 'Total Allocated' of the device's [memory] trace events, in GiB",
                "torch_version": _torch_version(), "python_version": platform.python_version(),
                "command": self.command, "created_at": self.created_at,
                "cells": [c.to_dict() for c in self.cells]}


def _torch_version() -> str:
    import torch

    return torch.__version__


def run_cell(impl: LossImplementation, settings: GridSettings, duration_s: float, batch_size: int,
             work_dir: str) -> CellMeasurement:
    """Runs one cell through the shared harness with its traces in ``work_dir``."""
    import torch

    from tlbench.core.io import atomic_save_tensor
    from tlbench.run.harness import run_benchmark

    frames, tokens = cell_shape(duration_s, settings.subsampling_factor, settings.tokens_per_frame)
    os.makedirs(work_dir, exist_ok=True)
    shape_path = os.path.join(work_dir, "shape_info.pt")
    atomic_save_tensor(shape_path, torch.tensor([[frames, tokens]] * batch_size, dtype=torch.int32))  # (b, 2)
    summary = run_benchmark(impl, cell_config(settings, shape_path, frames, batch_size, work_dir),
                            command=[sys.argv[0], f"cell d={duration_s:g}s b={batch_size}"])
    cell = CellMeasurement(duration_s, batch_size, frames, tokens, summary.status, summary.reason,
                           loss_values=summary.loss_values, trace_dir=summary.run_dir)
    if summary.status != Status.OK:
        return cell
    cell.step_times_us = list(summary.step_times_us)
    cell.host_step_times_us = list(summary.host_step_times_us)
    cell.device_busy_us = summary.device_busy_us if settings.device == "cuda" else None
    cell.peak_memory_bytes = None if summary.peak_memory_mb is None else int(round(summary.peak_memory_mb * 2**20))
    if summary.cuda_max_memory_allocated_mb is not None:
        cell.cuda_max_memory_allocated_bytes = int(summary.cuda_max_memory_allocated_mb * 2**20)
    return cell


def cell_config(settings: GridSettings, shape_path: str, frames: int, batch_size: int, work_dir: str) -> RunConfig:
    """The harness configuration of one cell. The cell's T is final: RunConfig keeps its default
    subsampling (4x, the table's own), so the harness does not rescale it again."""
    return RunConfig(device=settings.device, preset="grid", preset_reason="benchmark_grid.py cell",
                     sort_utterance=False, batch_size=batch_size, max_frames=frames * batch_size,
                     shape_info=shape_path, vocab_size=settings.vocab_size, encoder_out_dim=settings.encoder_out_dim,
                     seed=settings.seed, out_dir=work_dir, **SCHEDULE)


def run_grid(impl: LossImplementation, spec: GridSpec, settings: GridSettings,
             command: Optional[List[str]] = None) -> GridResult:
    """Runs every cell of the grid for one implementation (Python API; writes no table)."""
    result = GridResult(impl.name, impl.name, Status.OK, None, spec, settings, [],
                        device_name=device_name(settings.device), command=command or sys.argv,
                        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    try:
        result.label = impl.open(settings.device).label(impl.name)
    except Refusal as refusal:
        result.status, result.reason = refusal.status, refusal.reason
    grid_dir = os.path.join(settings.out_dir, f"grid-{impl.name}")
    work_root = os.path.join(grid_dir, "traces") if spec.export_traces else tempfile.mkdtemp(prefix="tlbench-grid-")
    try:
        for i, duration_s in enumerate(spec.durations_s):
            for j, batch_size in enumerate(spec.batch_sizes):
                frames, tokens = cell_shape(duration_s, settings.subsampling_factor, settings.tokens_per_frame)
                if result.status != Status.OK:
                    cell = CellMeasurement(duration_s, batch_size, frames, tokens, result.status, result.reason)
                elif spec.triangle_only and is_skipped(i, j, len(spec.durations_s), len(spec.batch_sizes)):
                    cell = CellMeasurement(duration_s, batch_size, frames, tokens, Status.SKIPPED,
                                           "--triangle-only: beyond the published triangle")
                else:
                    cell = run_cell(impl, settings, duration_s, batch_size,
                                    os.path.join(work_root, f"d{duration_s:g}s-b{batch_size}"))
                    _release_device_memory(settings.device)
                if not spec.export_traces:
                    cell.trace_dir = None
                result.cells.append(cell)
    finally:
        if not spec.export_traces:
            shutil.rmtree(work_root, ignore_errors=True)
    return result


def _release_device_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()  # an OOM cell leaves cached blocks behind


def load_grid_config(path: str) -> dict:
    """Reads a YAML grid file; returns only the keys it sets (validated like the flags)."""
    import yaml

    with open(check_input_file(path, "--config", "YAML file"), encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise UsageError(f"--config {path!r} is not readable YAML ({first_line(error)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(f"--config {path!r}: expected a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"--config {path!r}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(CONFIG_KEYS)}")
    for key in ("triangle_only", "export_traces"):
        if key in data and not isinstance(data[key], bool):
            raise UsageError(f"--config {path!r}: {key} must be true or false, got {data[key]!r}")
    for key in ("durations", "batch_sizes", "output_formats"):
        if key in data and not isinstance(data[key], list):
            raise UsageError(f"--config {path!r}: {key} must be a list, got {data[key]!r}")
    return data


def check_grid(durations: Sequence[Any], batch_sizes: Sequence[Any], formats: Sequence[Any]) -> GridSpec:
    if not durations or not batch_sizes:
        raise UsageError("the grid needs at least one duration and one batch size")
    for d in durations:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            raise UsageError(f"duration {d!r} is not allowed; durations are seconds > 0")
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UsageError(f"batch size {b!r} is not allowed; batch sizes are integers >= 1")
    for name in formats:
        if name not in OUTPUT_FORMATS:
            raise UsageError(f"output format {name!r} is not allowed; use {', '.join(OUTPUT_FORMATS)}")
    return GridSpec(tuple(float(d) for d in durations), tuple(batch_sizes), output_formats=tuple(dict.fromkeys(formats)))


