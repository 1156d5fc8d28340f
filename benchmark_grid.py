#!/usr/bin/env python3
"""Real-time factor and peak memory of a transducer loss on a grid of durations x batch sizes.

Each cell (duration d seconds, batch size b) is a batch of b identical utterances of
``T = round(d * 100 / subsampling)`` frames (100 feature frames per second, 4x subsampling by
default) and ``U = round(r * T)`` tokens (both >= 1), ``r`` being the median tokens-per-frame
ratio U/T of the shape table. The cell runs through the shared harness
(``tlbench.harness.run_benchmark``: random inputs, joiner, loss, backward, zero grads) for six
steps under torch.profiler with schedule wait=2 warmup=2 active=2, so the last two steps are
recorded.

- Real-time factor = compute time of the recorded steps / audio seconds in them (2 x b x d).
  On CPU the compute time is the recorded steps' span. On a GPU two parts are shown: the host
  (CPU) time of the steps and the GPU busy time (kernels, copies, sets), e.g. ``4.08E-02 + 7.18E-02``.
- Peak memory (GB) = the largest "Total Allocated" of the device's ``[memory]`` trace events
  (as ``tlbench.trace`` reads them; TensorBoard's memory view).
- A cell that runs out of memory is OOM and the grid goes on; any other failure is ERR (its
  reason is in the JSON). With ``--triangle-only`` the heavy corner is skipped (N/A), see
  :func:`is_skipped`.

Outputs in ``<out-dir>/grid-<impl>/``: ``grid.md`` (both tables), ``grid.csv``, ``grid.json``,
optionally ``grid.tex``, and heatmaps ``grid-<impl>-rtf.png`` / ``grid-<impl>-memory.png`` in
the picture folder (the repository's ``pic/`` unless ``--pic-dir``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from tlbench import REPO_DIR
from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.harness import (STATUS_ERROR, STATUS_OK, STATUS_OOM, STATUS_UNAVAILABLE, BackendUnavailable,
                             LossImplementation, _device_name, _finite_or_none)
from tlbench.io import atomic_write_json, atomic_write_text
from tlbench.options import DEFAULT_SEED, RunConfig, resolve_device
from tlbench.registry import SCRIPTS, load_implementation

OUTPUT_FORMATS = ("md", "csv", "json", "latex")
DEFAULT_DURATIONS_S = (1.0, 2.0, 5.0, 8.0, 32.0)
DEFAULT_BATCH_SIZES = (1, 4, 8)
DEFAULT_OUTPUT_FORMATS = ("md", "csv", "json")
FRAMES_PER_SECOND = 100  # feature frames per second of audio (10 ms shift)
# Six steps per cell; only the last two are recorded.
SCHEDULE = {"wait": 2, "warmup": 2, "active": 2, "repeat": 1}
CONFIG_KEYS = ("durations", "batch_sizes", "triangle_only", "export_traces", "output_formats")

STATUS_SKIPPED = "skipped"
CELL_MARKS = {STATUS_SKIPPED: "N/A", STATUS_OOM: "OOM", STATUS_ERROR: "ERR", STATUS_UNAVAILABLE: "unavailable"}
_DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


# --------------------------------------------------------------------------------------------
# Loss implementations


def implementation_names() -> List[str]:
    """Every implementation the suite knows (tlbench.registry)."""
    return list(SCRIPTS)


# --------------------------------------------------------------------------------------------
# The grid


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
    from shape_sampler import load_shape_info

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
    pic_dir: str = os.path.join(REPO_DIR, "pic")


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
        if self.status != STATUS_OK or time_us is None or not self.audio_s:
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
        if self.status != STATUS_OK or self.peak_memory_bytes is None:
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


def _device_busy_us(trace_path: str) -> float:
    """Sum of the GPU activity (kernels, copies, sets) in one trace."""
    from tlbench.trace import load_trace_events

    return sum(float(e.get("dur", 0.0)) for e in load_trace_events(trace_path)
               if e.get("ph") == "X" and e.get("cat") in _DEVICE_CATEGORIES)


def run_cell(impl: LossImplementation, settings: GridSettings, duration_s: float, batch_size: int,
             work_dir: str) -> CellMeasurement:
    """Runs one cell through the shared harness with its traces in ``work_dir``."""
    import torch

    from tlbench.harness import run_benchmark
    from tlbench.io import atomic_save_tensor
    from tlbench.trace import parse_trace

    frames, tokens = cell_shape(duration_s, settings.subsampling_factor, settings.tokens_per_frame)
    os.makedirs(work_dir, exist_ok=True)
    shape_path = os.path.join(work_dir, "shape_info.pt")
    atomic_save_tensor(shape_path, torch.tensor([[frames, tokens]] * batch_size, dtype=torch.int32))  # (b, 2)
    # The cell's T is final: RunConfig keeps its default subsampling (4x, the table's own), so the
    # harness does not rescale it again.
    config = RunConfig(device=settings.device, preset="grid", preset_reason="benchmark_grid.py cell",
                       sort_utterance=False, batch_size=batch_size, max_frames=frames * batch_size,
                       shape_info=shape_path, vocab_size=settings.vocab_size,
                       encoder_out_dim=settings.encoder_out_dim, seed=settings.seed, out_dir=work_dir, **SCHEDULE)
    summary = run_benchmark(impl, config, command=[sys.argv[0], f"cell d={duration_s:g}s b={batch_size}"])
    cell = CellMeasurement(duration_s, batch_size, frames, tokens, summary["status"], summary["reason"],
                           loss_values=summary.get("loss_values", []), trace_dir=summary["run_dir"])
    if summary["status"] != STATUS_OK:
        return cell
    device_busy = 0.0
    for trace in summary["traces"]:
        path = os.path.join(summary["run_dir"], trace["file"])
        parsed = parse_trace(path)
        cell.step_times_us += [s.duration_us for s in parsed.steps]
        cell.host_step_times_us += [s.host_duration_us for s in parsed.steps]
        device_busy += _device_busy_us(path) if parsed.has_device_activity else 0.0
    cell.device_busy_us = device_busy if settings.device == "cuda" else None
    cell.peak_memory_bytes = int(round(summary["peak_memory_mb"] * 2**20)) if summary["peak_memory_mb"] is not None else None
    if summary.get("cuda_max_memory_allocated_mb") is not None:
        cell.cuda_max_memory_allocated_bytes = int(round(summary["cuda_max_memory_allocated_mb"] * 2**20))
    return cell


def run_grid(impl: LossImplementation, spec: GridSpec, settings: GridSettings,
             command: Optional[List[str]] = None) -> GridResult:
    """Runs every cell of the grid for one implementation (Python API; writes no table)."""
    result = GridResult(impl.name, impl.name, STATUS_OK, None, spec, settings, [],
                        device_name=_device_name(settings.device), command=command or sys.argv,
                        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    unsupported = impl.supports_device(settings.device)
    try:
        if unsupported:
            raise BackendUnavailable(unsupported)
        backend = impl.load_backend()
        result.label = backend.label(impl.name)
    except BackendUnavailable as missing:
        hint = f" ({missing.install_hint})" if missing.install_hint else ""
        result.status, result.reason = STATUS_UNAVAILABLE, f"{missing.reason}{hint}"
    grid_dir = os.path.join(settings.out_dir, f"grid-{impl.name}")
    work_root = os.path.join(grid_dir, "traces") if spec.export_traces else tempfile.mkdtemp(prefix="tlbench-grid-")
    try:
        for i, duration_s in enumerate(spec.durations_s):
            for j, batch_size in enumerate(spec.batch_sizes):
                frames, tokens = cell_shape(duration_s, settings.subsampling_factor, settings.tokens_per_frame)
                if result.status == STATUS_UNAVAILABLE:
                    cell = CellMeasurement(duration_s, batch_size, frames, tokens, STATUS_UNAVAILABLE, result.reason)
                elif spec.triangle_only and is_skipped(i, j, len(spec.durations_s), len(spec.batch_sizes)):
                    cell = CellMeasurement(duration_s, batch_size, frames, tokens, STATUS_SKIPPED,
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


# --------------------------------------------------------------------------------------------
# Tables and pictures


def format_rtf(cell: CellMeasurement, device: str) -> str:
    if cell.status != STATUS_OK:
        return CELL_MARKS.get(cell.status, cell.status.upper())
    if device == "cuda":
        return f"{cell.rtf_cpu:.2E} + {cell.rtf_cuda:.2E}"
    return f"{cell.rtf:.2E}"


def format_memory(cell: CellMeasurement) -> str:
    if cell.status != STATUS_OK:
        return CELL_MARKS.get(cell.status, cell.status.upper())
    return f"{cell.peak_memory_gb:.3g}"


def _table_rows(result: GridResult, formatter) -> List[List[str]]:
    rows = []
    for i, duration_s in enumerate(result.spec.durations_s):
        rows.append([f"{duration_s:g} s"] + [formatter(result.cell(i, j)) for j in range(len(result.spec.batch_sizes))])
    return rows


def table_titles(result: GridResult) -> Tuple[str, str]:
    rtf = ("real-time factor, CPU + CUDA (compute time / audio time)" if result.settings.device == "cuda"
           else "real-time factor (compute time / audio time)")
    return rtf, "peak memory (GB)"


def markdown(result: GridResult) -> str:
    """Both tables (durations as rows, batch sizes as columns) with a header saying what ran."""
    settings = result.settings
    lines = [f"## {result.label} on {settings.device} ({result.device_name})", "",
             f"T = duration x {FRAMES_PER_SECOND} / {settings.subsampling_factor}, U = round({settings.tokens_per_frame:.4f}"
             f" x T) ({settings.tokens_per_frame_source}), V = {settings.vocab_size}, C = {settings.encoder_out_dim}; "
             f"6 steps per cell, the last 2 recorded"
             + ("; N/A: skipped by --triangle-only" if result.spec.triangle_only else ""), ""]
    if result.status == STATUS_UNAVAILABLE:
        return "\n".join(lines + [f"unavailable: {result.reason}", ""])
    header = ["duration \\ batch size"] + [str(b) for b in result.spec.batch_sizes]
    for title, formatter in zip(table_titles(result), (lambda c: format_rtf(c, settings.device), format_memory)):
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in _table_rows(result, formatter)]
        lines.append("")
    failures = [c for c in result.cells if c.status in (STATUS_ERROR, STATUS_OOM)]
    for cell in failures:
        lines.append(f"- {CELL_MARKS[cell.status]} at {cell.duration_s:g} s x {cell.batch_size}: {cell.reason}")
    return "\n".join(lines + ([""] if failures else []))


CSV_COLUMNS = ["implementation", "label", "device", "duration_s", "batch_size", "T", "U", "status", "rtf", "rtf_cpu",
               "rtf_cuda", "peak_memory_gb", "audio_s", "num_recorded_steps", "reason"]


def csv_text(result: GridResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in result.cells:
        values = {"implementation": result.implementation, "label": result.label, "device": result.settings.device,
                  "num_recorded_steps": len(cell.step_times_us), **cell.to_dict()}
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def latex(result: GridResult) -> str:
    blocks = [f"% {result.label} on {result.settings.device} ({result.device_name})"]
    if result.status == STATUS_UNAVAILABLE:
        return blocks[0] + f"\n% unavailable: {result.reason}\n"
    for title, formatter in zip(table_titles(result), (lambda c: format_rtf(c, result.settings.device), format_memory)):
        columns = "l" + "r" * len(result.spec.batch_sizes)
        lines = ["\\begin{table}[h]", "\\centering", f"\\caption{{{_latex_escape(result.label)}: {_latex_escape(title)}}}",
                 f"\\begin{{tabular}}{{{columns}}}", "\\hline",
                 "duration & " + " & ".join(f"$b={b}$" for b in result.spec.batch_sizes) + " \\\\", "\\hline"]
        lines += [" & ".join(_latex_escape(v) for v in row) + " \\\\" for row in _table_rows(result, formatter)]
        lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


_MARK_COLOURS = {STATUS_SKIPPED: "#d9d9d9", STATUS_OOM: "#f4a6a6", STATUS_ERROR: "#f7c98b",
                 STATUS_UNAVAILABLE: "#d9d9d9"}


def heatmap(result: GridResult, which: str, path: str) -> None:
    """One table as a picture: colour = value (log scale), N/A / OOM / ERR cells marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    spec, device = result.spec, result.settings.device
    values = np.full((len(spec.durations_s), len(spec.batch_sizes)), np.nan)
    texts = [["" for _ in spec.batch_sizes] for _ in spec.durations_s]
    for i in range(len(spec.durations_s)):
        for j in range(len(spec.batch_sizes)):
            cell = result.cell(i, j)
            value = cell.rtf if which == "rtf" else cell.peak_memory_gb
            if value is not None and value > 0:
                values[i, j] = value
            texts[i][j] = (format_rtf(cell, device) if which == "rtf" else format_memory(cell)).replace(" + ", "\n+ ")
    finite = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(1.9 + 1.6 * len(spec.batch_sizes), 1.2 + 0.6 * len(spec.durations_s)))
    norm = LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * 1.0001)) if finite.size else None
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", norm=norm, aspect="auto")
    for i in range(len(spec.durations_s)):
        for j in range(len(spec.batch_sizes)):
            cell = result.cell(i, j)
            if cell.status != STATUS_OK:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_MARK_COLOURS.get(cell.status, "#d9d9d9"),
                                       hatch="//", edgecolor="white", linewidth=0))
                colour = "black"
            else:
                shade = norm(values[i, j]) if norm is not None and np.isfinite(values[i, j]) else 0.0
                colour = "black" if shade > 0.6 else "white"
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(spec.batch_sizes)), [str(b) for b in spec.batch_sizes])
    ax.set_yticks(range(len(spec.durations_s)), [f"{d:g} s" for d in spec.durations_s])
    ax.set_xlabel("batch size")
    ax.set_ylabel("duration")
    title = table_titles(result)[0 if which == "rtf" else 1]
    if which == "rtf" and device == "cuda":
        title = "real-time factor (colour: wall time; text: CPU + CUDA)"
    ax.set_title(f"{result.label}, {device}\n{title}", fontsize=9)
    if finite.size:
        fig.colorbar(image, ax=ax, label="RTF" if which == "rtf" else "GB")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.path.basename(path)}")
    fig.savefig(tmp_path, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp_path, path)


def write_outputs(result: GridResult) -> Dict[str, str]:
    """Writes the requested formats and the heatmaps; returns kind -> path."""
    grid_dir = os.path.join(result.settings.out_dir, f"grid-{result.implementation}")
    written: Dict[str, str] = {}
    if "md" in result.spec.output_formats:
        written["md"] = os.path.join(grid_dir, "grid.md")
        atomic_write_text(written["md"], markdown(result))
    if "csv" in result.spec.output_formats:
        written["csv"] = os.path.join(grid_dir, "grid.csv")
        atomic_write_text(written["csv"], csv_text(result))
    if "json" in result.spec.output_formats:
        written["json"] = os.path.join(grid_dir, "grid.json")
        atomic_write_json(written["json"], _finite_or_none(result.to_dict()))
    if "latex" in result.spec.output_formats:
        written["latex"] = os.path.join(grid_dir, "grid.tex")
        atomic_write_text(written["latex"], latex(result))
    if result.status != STATUS_UNAVAILABLE:
        for which in ("rtf", "memory"):
            written[f"heatmap_{which}"] = os.path.join(result.settings.pic_dir, f"grid-{result.implementation}-{which}.png")
            heatmap(result, which, written[f"heatmap_{which}"])
    return written


# --------------------------------------------------------------------------------------------
# Command line


def load_grid_config(path: str) -> dict:
    """Reads a YAML grid file; returns only the keys it sets (validated like the flags)."""
    import yaml

    if not os.path.isfile(path):
        raise UsageError(f"--config {path!r} does not exist; pass an existing YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--config {path!r} is not readable YAML ({first})") from None
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


def _check_grid(durations: Sequence[Any], batch_sizes: Sequence[Any], formats: Sequence[Any]) -> GridSpec:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Real-time factor and peak memory of transducer losses on a grid "
                                     "of durations x batch sizes.")
    parser.add_argument("--impl", default="all", help=f"{', '.join(implementation_names())} or all (default all)")
    parser.add_argument("--config", default=None, help=f"YAML file with any of: {', '.join(CONFIG_KEYS)}")
    parser.add_argument("--durations", type=float, nargs="+", default=None,
                        help="utterance durations in seconds (default 1 2 5 8 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="batch sizes (default 1 4 8)")
    parser.add_argument("--triangle-only", action=argparse.BooleanOptionalAction, default=None,
                        help="skip the heavy corner (the published triangle rule); shown as N/A")
    parser.add_argument("--export-traces", action=argparse.BooleanOptionalAction, default=None,
                        help="keep each cell's Chrome traces under grid-<impl>/traces/ (default: no)")
    parser.add_argument("--output-formats", nargs="+", default=None,
                        help=f"any of {', '.join(OUTPUT_FORMATS)} (default md csv json)")
    parser.add_argument("--subsampling-factor", type=int, default=4, help="encoder frames = feature frames / this (default 4)")
    parser.add_argument("--tokens-per-frame", type=float, default=None,
                        help="U/T ratio (default: the median of the shape table's U/T)")
    parser.add_argument("--shape-info", default=os.path.join(REPO_DIR, "shape_info.pt"),
                        help="shape table for the U/T ratio (default: shape_info.pt in the repository)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--vocab-size", type=int, default=500, help="V, the joiner's output size (default 500)")
    parser.add_argument("--encoder-out-dim", type=int, default=512, help="C, the joiner's input size (default 512)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out-dir", default=os.path.join(REPO_DIR, "log"),
                        help="where grid-<impl>/ folders go (default: log/ in the repository)")
    parser.add_argument("--pic-dir", default=os.path.join(REPO_DIR, "pic"),
                        help="where the heatmaps go (default: pic/ in the repository)")
    return parser


def resolve_args(args: argparse.Namespace) -> Tuple[List[str], GridSpec, GridSettings]:
    """Flags (which win) over the YAML file over the defaults; raises UsageError."""
    known = implementation_names()
    if args.impl != "all" and args.impl not in known:
        raise UsageError(f"--impl {args.impl!r} is not allowed; use one of {', '.join(known)} or all")
    names = known if args.impl == "all" else [args.impl]
    file_config = load_grid_config(args.config) if args.config else {}

    def pick(flag_value, key, default):
        return flag_value if flag_value is not None else file_config.get(key, default)

    spec = _check_grid(pick(args.durations, "durations", list(DEFAULT_DURATIONS_S)),
                       pick(args.batch_sizes, "batch_sizes", list(DEFAULT_BATCH_SIZES)),
                       pick(args.output_formats, "output_formats", list(DEFAULT_OUTPUT_FORMATS)))
    spec = GridSpec(spec.durations_s, spec.batch_sizes, triangle_only=bool(pick(args.triangle_only, "triangle_only", False)),
                    export_traces=bool(pick(args.export_traces, "export_traces", False)),
                    output_formats=spec.output_formats)
    if args.subsampling_factor < 1:
        raise UsageError(f"--subsampling-factor {args.subsampling_factor} is not allowed; it must be >= 1")
    for flag, value, minimum in (("--vocab-size", args.vocab_size, 2), ("--encoder-out-dim", args.encoder_out_dim, 1)):
        if value < minimum:
            raise UsageError(f"{flag} {value} is not allowed; it must be >= {minimum}")
    if "k2_pruned" in names and args.vocab_size > args.encoder_out_dim:
        raise UsageError(f"--vocab-size {args.vocab_size} > --encoder-out-dim {args.encoder_out_dim}: k2_pruned feeds "
                         "the encoder output to its simple loss as logits, so V must be <= C")
    if args.tokens_per_frame is not None:
        if not math.isfinite(args.tokens_per_frame) or args.tokens_per_frame <= 0:
            raise UsageError(f"--tokens-per-frame {args.tokens_per_frame} is not allowed; it must be > 0")
        ratio, source = args.tokens_per_frame, "--tokens-per-frame"
    else:
        if not os.path.isfile(args.shape_info):
            raise UsageError(f"--shape-info {args.shape_info!r} does not exist; pass a shape table (for the median "
                             "U/T ratio) or --tokens-per-frame")
        ratio, source = median_tokens_per_frame(args.shape_info), f"median U/T of {os.path.basename(args.shape_info)}"
    settings = GridSettings(device=resolve_device(args.device), vocab_size=args.vocab_size,
                            encoder_out_dim=args.encoder_out_dim, seed=args.seed,
                            subsampling_factor=args.subsampling_factor, tokens_per_frame=ratio,
                            tokens_per_frame_source=source, out_dir=os.path.abspath(args.out_dir),
                            pic_dir=os.path.abspath(args.pic_dir))
    return names, spec, settings


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    names, spec, settings = exit_on_usage_error(resolve_args)(args)
    failed = False
    for name in names:
        result = run_grid(load_implementation(name), spec, settings, command=command)
        written = write_outputs(result)
        print(markdown(result), flush=True)
        print("written: " + ", ".join(written.values()), flush=True)
        failed = failed or any(c.status == STATUS_ERROR for c in result.cells)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
