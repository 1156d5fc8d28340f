#!/usr/bin/env python3
"""Summarise a results folder: every ``<results>/*/summary.json`` into tables and pictures.

Writes ``summary.md`` (one table per batching mode, sorted by step time, with device,
versions, preset and date above it, take-aways computed from the numbers, and the
pictures embedded), ``summary.csv`` and ``summary.json`` with the same rows into the
results folder. Pictures (PNG, one set per mode): average step time and peak memory bars,
allocated memory over the recorded steps (from the traces' ``[memory]`` events), and the
per-step time distribution. They go to ``pic/`` in the repository when the results folder
is the repository's ``log/``, else to ``<results>/pic/``; ``--pic-dir`` overrides.

``--compare OTHER`` also writes ``comparison.md`` and ``comparison.json`` into the results
folder: the ratios (this folder / OTHER) of step time and peak memory per implementation
and mode.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from tlbench import REPO_DIR
from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.io import atomic_write_json, atomic_write_text

# A run folder is "<implementation>-<mode>", the mode being "30" or "max-frames-10000".
_RUN_FOLDER = re.compile(r"^(?P<implementation>.+?)-(?P<mode>(?:max-frames-)?\d+(?:-[A-Za-z0-9]+)*)$")
_BYTES_PER_MB = 2**20
PICTURE_DPI = 120


@dataclass
class ReportRow:
    """One implementation in one batching mode."""

    name: str
    implementation: str
    backend: str
    mode: str
    status: str
    avg_step_time_us: Optional[float]
    loss_time_us: Optional[float]
    peak_memory_mb: Optional[float]
    num_steps: int
    device: Optional[str]
    device_name: Optional[str]
    torch_version: Optional[str]
    preset: Optional[str]
    reason: Optional[str]
    run_dir: str
    median_step_time_us: Optional[float] = None
    iqr_step_time_us: Optional[float] = None


@dataclass
class Picture:
    """One PNG drawn for one batching mode."""

    kind: str  # "step-time-memory", "memory-timeline" or "step-time-distribution"
    mode: str
    title: str
    path: str  # absolute


@dataclass
class ComparisonRow:
    """One implementation and mode present in both result sets (ratios are here / other)."""

    name: str
    mode: str
    status_here: str
    status_other: str
    step_time_here_us: Optional[float]
    step_time_other_us: Optional[float]
    step_time_ratio: Optional[float]
    peak_memory_here_mb: Optional[float]
    peak_memory_other_mb: Optional[float]
    peak_memory_ratio: Optional[float]


_MODE = re.compile(r"^(?:(?P<max_frames>max-frames-)?(?P<size>\d+))(?P<variant>(?:-[A-Za-z0-9]+)*)$")


def _mode_sort_key(mode: str) -> Tuple[int, int, str]:
    match = _MODE.match(mode)
    if not match:
        return (2, 0, mode)
    return (1 if match["max_frames"] else 0, int(match["size"]), match["variant"])


def mode_title(mode: str) -> str:
    """``"30"`` -> ``"batch size 30"``; ``"max-frames-1000"`` -> ``"max frames 1000 (sorted utterances)"``;
    a variant suffix such as ``-float16`` or ``-tmax50`` is named after it."""
    match = _MODE.match(mode)
    if not match:
        return mode
    title = (f"max frames {match['size']} (sorted utterances)" if match["max_frames"]
             else f"batch size {match['size']}")
    variants = [v for v in match["variant"].split("-") if v]
    names = {"sub": "subsampling {}x", "tmax": "utterances with T <= {}"}
    for variant in variants:
        described = next((names[p].format(variant[len(p):]) for p in names
                          if variant.startswith(p) and variant[len(p):].isdigit()), variant)
        title += f", {described}"
    return title


def _split_run_folder(run_name: str) -> Tuple[str, str]:
    match = _RUN_FOLDER.match(run_name)
    return (match.group("implementation"), match.group("mode")) if match else (run_name, "?")


def _finite(value) -> Optional[float]:
    """A number from summary.json, or None when it is missing, null, NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _load(results_dir: str) -> Tuple[List[ReportRow], List[str], List[Optional[dict]]]:
    """Rows, problems, and for each row its summary (None where the file is unreadable)."""
    rows, problems, summaries = [], [], []
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "summary.json"))):
        run_name = os.path.basename(os.path.dirname(path))
        try:
            with open(path, encoding="utf-8") as f:
                summary = json.load(f)
            if not isinstance(summary, dict) or "status" not in summary:
                raise ValueError("not a benchmark summary (no 'status' key)")
        except (OSError, ValueError) as error:
            problems.append(f"{os.path.relpath(path, results_dir)}: unreadable ({str(error).splitlines()[0][:200]})")
            implementation, mode = _split_run_folder(run_name)
            rows.append(ReportRow(implementation, implementation, "?", mode, "corrupt", None, None, None, 0, None,
                                  None, None, None, f"unreadable summary.json: {path}", os.path.dirname(path)))
            summaries.append(None)
            continue
        summaries.append(summary)
        implementation = summary.get("implementation") or _split_run_folder(run_name)[0]
        rows.append(ReportRow(
            name=implementation,
            implementation=implementation,
            backend=(f"{summary['backend']} {summary.get('backend_version') or ''}".strip()
                     if summary.get("backend") else "-"),
            mode=str(summary.get("mode") or _split_run_folder(run_name)[1]),
            status=str(summary["status"]),
            avg_step_time_us=_finite(summary.get("avg_step_time_us")),
            loss_time_us=_finite(summary.get("loss_time_us")),
            peak_memory_mb=_finite(summary.get("peak_memory_mb")),
            num_steps=len(summary.get("step_times_us") or []),
            device=summary.get("device"),
            device_name=summary.get("device_name"),
            torch_version=summary.get("torch_version"),
            preset=summary.get("preset"),
            reason=summary.get("reason"),
            run_dir=os.path.dirname(path),
            median_step_time_us=_finite(summary.get("median_step_time_us")),
            iqr_step_time_us=_finite(summary.get("iqr_step_time_us")),
        ))
    return rows, problems, summaries


def load_rows(results_dir: str) -> Tuple[List[ReportRow], List[str], List[dict]]:
    """Reads every ``*/summary.json`` under ``results_dir``.

    Returns the rows, a list of problems (e.g. an unreadable file, named), and the raw
    summaries of the readable files.
    """
    rows, problems, summaries = _load(results_dir)
    return rows, problems, [s for s in summaries if s is not None]


def _is_measured(row: ReportRow) -> bool:
    return row.status == "ok" and row.avg_step_time_us is not None


def _sorted_for_table(rows: List[ReportRow]) -> List[ReportRow]:
    measured = sorted((r for r in rows if _is_measured(r)), key=lambda r: r.avg_step_time_us)
    return measured + sorted((r for r in rows if r not in measured), key=lambda r: r.implementation)


def _fmt(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def takeaways(rows: List[ReportRow]) -> List[str]:
    """Plain statements computed from one mode's measured rows."""
    measured = [r for r in rows if _is_measured(r)]
    if not measured:
        return ["no implementation was measured in this mode"]
    lines = []
    fastest = min(measured, key=lambda r: r.avg_step_time_us)
    lines.append(f"fastest: {fastest.name} ({_fmt(fastest.avg_step_time_us)} us per step)")
    with_memory = [r for r in measured if r.peak_memory_mb is not None]
    if with_memory:
        leanest = min(with_memory, key=lambda r: r.peak_memory_mb)
        lines.append(f"leanest: {leanest.name} ({_fmt(leanest.peak_memory_mb, 1)} MB peak)")
    baseline = next((r for r in measured if r.implementation == "torchaudio"), None)
    if baseline:
        for r in measured:
            if r is baseline:
                continue
            parts = [f"{baseline.avg_step_time_us / r.avg_step_time_us:.2f}x the speed of torchaudio"]
            if r.peak_memory_mb and baseline.peak_memory_mb:
                parts.append(f"{r.peak_memory_mb / baseline.peak_memory_mb:.2f}x its peak memory")
            lines.append(f"{r.name}: " + ", ".join(parts))
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        lines.append("not measured: " + ", ".join(f"{r.name} ({r.status})" for r in failed))
    return lines


def _devices(summaries: List[dict]) -> List[str]:
    return sorted({f"{s.get('device')}: {s.get('device_name')}" if s.get("device_name") else str(s.get("device"))
                   for s in summaries if s and s.get("device")})


def render_markdown(rows: List[ReportRow], problems: List[str], summaries: List[dict],
                    pictures: Optional[List[Picture]] = None, results_dir: Optional[str] = None) -> str:
    """The report as markdown; ``pictures`` are embedded by paths relative to ``results_dir``."""
    summaries = [s for s in summaries if s]
    out = io.StringIO()
    out.write("# Transducer loss benchmark\n\n")
    torch_versions = sorted({s["torch_version"] for s in summaries if s.get("torch_version")})
    backends = sorted({r.backend for r in rows if r.backend not in ("-", "?")})
    presets = sorted({f"{s.get('preset')} ({s.get('preset_reason')})" for s in summaries if s.get("preset")})
    dates = sorted({s["created_at"] for s in summaries if s.get("created_at")})
    out.write(f"- Device: {'; '.join(_devices(summaries)) or 'unknown'}\n")
    out.write(f"- torch: {', '.join(torch_versions) or 'unknown'}; backends: {', '.join(backends) or 'none'}\n")
    out.write(f"- Preset: {'; '.join(presets) or 'unknown'}\n")
    if dates:
        out.write(f"- Runs: {dates[0]} to {dates[-1]} (UTC)\n")
    out.write("- Step = random data + joiner + loss + backward + zero grads; loss time = the loss call and its "
              "backward (record_function region); peak memory = max allocated bytes in the profiler's memory events.\n")
    for mode in sorted({r.mode for r in rows}, key=_mode_sort_key):
        mode_rows = [r for r in rows if r.mode == mode]
        out.write(f"\n## {mode_title(mode)}\n\n")
        out.write("| Name | Backend | Average step time (us) | Loss time (us) | Peak memory usage (MB) | Status |\n")
        out.write("|---|---|---:|---:|---:|---|\n")
        for r in _sorted_for_table(mode_rows):
            status = r.status if r.status == "ok" else f"{r.status}: {r.reason or ''}".strip()
            status = " ".join(status.replace("|", "/").split())
            out.write(f"| {r.name} | {r.backend} | {_fmt(r.avg_step_time_us)} | {_fmt(r.loss_time_us)} | "
                      f"{_fmt(r.peak_memory_mb, 1)} | {status} |\n")
        out.write("\nTake-aways:\n")
        for line in takeaways(mode_rows):
            out.write(f"- {line}\n")
        mode_pictures = [p for p in pictures or [] if p.mode == mode]
        if mode_pictures:
            out.write("\n")
            for picture in mode_pictures:
                link = os.path.relpath(picture.path, results_dir or os.getcwd()).replace(os.sep, "/")
                out.write(f"![{picture.title}]({link})\n\n")
    if problems:
        out.write("\n## Problems\n\n")
        for problem in problems:
            out.write(f"- {problem}\n")
    return out.getvalue()


# --------------------------------------------------------------------------- pictures


def default_pic_dir(results_dir: str) -> str:
    """``pic/`` in the repository for the repository's ``log/``, else ``<results_dir>/pic``."""
    if os.path.realpath(results_dir) == os.path.realpath(os.path.join(REPO_DIR, "log")):
        return os.path.join(REPO_DIR, "pic")
    return os.path.join(results_dir, "pic")


def _safe_file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "unknown"


def picture_path(pic_dir: str, kind: str, mode: str) -> str:
    return os.path.join(pic_dir, f"{kind}-{_safe_file_part(mode)}.png")


def _save_figure_atomically(figure, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp_path, format="png", dpi=PICTURE_DPI, bbox_inches="tight")
        os.chmod(tmp_path, 0o644)  # mkstemp makes it private; a picture is meant to be shared
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def _colours(rows: List[ReportRow]) -> Dict[str, str]:
    """One colour per implementation, the same in every picture."""
    from tlbench.registry import SCRIPTS

    known = list(SCRIPTS)
    names = sorted({r.implementation for r in rows}, key=lambda n: (known.index(n) if n in known else len(known), n))
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _device_text(mode_rows: List[ReportRow]) -> str:
    devices = sorted({f"{r.device} ({r.device_name})" if r.device_name else str(r.device)
                      for r in mode_rows if r.device})
    return "; ".join(devices) or "unknown device"


def _new_figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=PICTURE_DPI, layout="constrained")


def _mb_text(value_mb: float) -> str:
    """Enough digits that small CPU peaks (0.27 MB) and large GPU ones (12345 MB) both read well."""
    digits = 0 if value_mb >= 100 else 1 if value_mb >= 1 else 2
    return f"{value_mb:.{digits}f} MB"


def _tick_label(row: ReportRow) -> str:
    return row.name if row.backend in ("-", "?") else f"{row.name}\n{row.backend}"


def _gap_label(row: ReportRow) -> str:
    return "not measured" if row.status == "ok" else f"{row.status}, not measured"


def draw_step_time_memory(mode: str, rows: List[ReportRow], colours: Dict[str, str], path: str) -> Picture:
    """Horizontal bars: average step time (ms) and peak memory (MB) per implementation."""
    ordered = _sorted_for_table(rows)
    figure = _new_figure(12, 1.9 + 0.55 * len(ordered))
    time_axes, memory_axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(ordered)))
    panels = ((time_axes, [r.avg_step_time_us / 1000 if _is_measured(r) else None for r in ordered],
               "Average step time (ms)", lambda v: f"{v:.1f} ms"),
              (memory_axes, [r.peak_memory_mb if r.status == "ok" else None for r in ordered],
               "Peak memory (MB)", _mb_text))
    for axes, values, label, value_text in panels:
        largest = max((v for v in values if v is not None), default=1.0) or 1.0
        for y, row, value in zip(positions, ordered, values):
            if value is None:
                axes.text(largest * 0.01, y, _gap_label(row), va="center", ha="left",
                          fontsize=11, style="italic", color="firebrick")
                continue
            axes.barh(y, value, color=colours[row.implementation], height=0.6)
            axes.text(value + largest * 0.01, y, value_text(value), va="center", ha="left", fontsize=10)
        axes.set_xlim(0, largest * 1.3)
        axes.set_xlabel(label + ", lower is better", fontsize=11)
        axes.set_title(label, fontsize=12)
        axes.grid(axis="x", alpha=0.3)
    time_axes.set_yticks(positions, [_tick_label(r) for r in ordered], fontsize=10)
    time_axes.set_ylim(len(ordered) - 0.5, -0.5)  # fastest on top; rows without a bar keep their place
    title = f"Average step time and peak memory, {mode_title(mode)}"
    figure.suptitle(f"{title}\n{_device_text(rows)}", fontsize=13)
    _save_figure_atomically(figure, path)
    return Picture("step-time-memory", mode, title, path)


def _memory_series(row: ReportRow, summary: dict, problems: List[str], results_dir: str):
    """(x in ms, y in MB) of allocated memory over the recorded steps of every trace, cycles
    placed back to back (NaN between cycles so that the line breaks), or None."""
    from tlbench.trace import TraceError, parse_trace

    files = [t["file"] for t in summary.get("traces") or [] if isinstance(t, dict) and t.get("file")]
    if not files:
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(row.run_dir, "*.pt.trace.json*")))
    device = "cuda" if row.device == "cuda" else "cpu"
    xs: List[float] = []
    ys: List[float] = []
    offset_ms = 0.0
    for name in files:
        path = os.path.join(row.run_dir, name)
        try:
            parsed = parse_trace(path)
        except TraceError as error:
            problems.append(f"{os.path.relpath(path, results_dir)}: not drawn in the memory timeline "
                            f"({str(error).splitlines()[0][:200]})")
            continue
        if not parsed.steps:
            continue
        start_us = min(s.start_us for s in parsed.steps)
        end_us = max(s.end_us for s in parsed.steps)
        samples = [m for m in parsed.memory_samples if m.device == device]
        before = [m for m in samples if m.time_us <= start_us]
        inside = [m for m in samples if start_us < m.time_us <= end_us]
        if not before and not inside:
            continue
        if xs:
            xs.append(math.nan)
            ys.append(math.nan)
        if before:  # the level the recorded steps start from
            xs.append(offset_ms)
            ys.append(before[-1].total_allocated_bytes / _BYTES_PER_MB)
        for sample in inside:
            xs.append(offset_ms + (sample.time_us - start_us) / 1000)
            ys.append(sample.total_allocated_bytes / _BYTES_PER_MB)
        xs.append(offset_ms + (end_us - start_us) / 1000)  # hold the last level to the end of the steps
        ys.append(ys[-1])
        offset_ms += (end_us - start_us) / 1000
    return (xs, ys) if xs else None


def draw_memory_timeline(mode: str, rows: List[ReportRow], summaries: Dict[str, dict], colours: Dict[str, str],
                         path: str, problems: List[str], results_dir: str) -> Picture:
    """Allocated memory (MB) over time within the recorded steps (ms), one line per implementation."""
    figure = _new_figure(12, 6)
    axes = figure.subplots()
    drawn = 0
    for row in _sorted_for_table(rows):
        summary = summaries.get(row.run_dir)
        series = _memory_series(row, summary, problems, results_dir) if summary else None
        if series is None:
            continue
        xs, ys = series
        peak = max(y for y in ys if not math.isnan(y))
        status = "" if row.status == "ok" else f", {row.status}"
        axes.plot(xs, ys, drawstyle="steps-post", color=colours[row.implementation], linewidth=1.4,
                  label=f"{row.name} (peak {_mb_text(peak)}{status})")
        peak_index = ys.index(peak)
        axes.plot([xs[peak_index]], [peak], marker="o", color=colours[row.implementation])
        drawn += 1
    if drawn:
        axes.legend(loc="upper right", fontsize=10)
        axes.set_ylim(bottom=0)
        axes.set_xlim(left=0)
    else:
        axes.text(0.5, 0.5, "no [memory] events in the traces of this mode", transform=axes.transAxes,
                  ha="center", va="center", fontsize=13, color="firebrick")
    axes.set_xlabel("Time within the recorded profiler steps (ms); profiler cycles placed back to back", fontsize=11)
    axes.set_ylabel("Allocated memory (MB)", fontsize=11)
    axes.grid(alpha=0.3)
    title = f"Allocated memory during the recorded steps, {mode_title(mode)}"
    axes.set_title(f"{title}\n{_device_text(rows)}", fontsize=13)
    _save_figure_atomically(figure, path)
    return Picture("memory-timeline", mode, title, path)


def draw_step_time_distribution(mode: str, rows: List[ReportRow], summaries: Dict[str, dict],
                                colours: Dict[str, str], path: str) -> Picture:
    """Box plot plus every recorded step (ms) per implementation, to show the noise."""
    ordered = _sorted_for_table(rows)
    figure = _new_figure(12, 1.9 + 0.7 * len(ordered))
    axes = figure.subplots()
    positions = list(range(len(ordered)))
    largest = 0.0
    per_row = []
    for row in ordered:
        summary = summaries.get(row.run_dir) or {}
        times_ms = [t / 1000 for t in (summary.get("step_times_us") or []) if _finite(t) is not None]
        per_row.append(times_ms if row.status == "ok" else [])
        largest = max([largest, *per_row[-1]])
    largest = largest or 1.0
    for y, row, times_ms in zip(positions, ordered, per_row):
        colour = colours[row.implementation]
        if not times_ms:
            axes.text(largest * 0.01, y, _gap_label(row), va="center", ha="left", fontsize=11,
                      style="italic", color="firebrick")
            continue
        axes.boxplot([times_ms], positions=[y], orientation="horizontal", widths=0.5, showmeans=True,
                     patch_artist=True, boxprops={"facecolor": colour, "alpha": 0.35},
                     medianprops={"color": "black"},
                     meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"})
        count = len(times_ms)
        jitter = [(-0.18 + 0.36 * i / (count - 1)) if count > 1 else 0.0 for i in range(count)]
        axes.scatter(times_ms, [y + j for j in jitter], s=18, color=colour, edgecolors="black", linewidths=0.4,
                     zorder=3)
        axes.text(largest * 1.02, y, f"n={count}, median {statistics.median(times_ms):.1f} ms\n"
                  f"min {min(times_ms):.1f}, max {max(times_ms):.1f} ms", va="center", ha="left", fontsize=9)
    axes.set_xlim(0, largest * 1.35)
    axes.set_ylim(len(ordered) - 0.5, -0.5)
    axes.set_yticks(positions, [_tick_label(r) for r in ordered], fontsize=10)
    axes.set_xlabel("Step time (ms) of each recorded step; box = quartiles, line = median, "
                    "diamond = mean (the average step time)", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    title = f"Step time per recorded step, {mode_title(mode)}"
    axes.set_title(f"{title}\n{_device_text(rows)}", fontsize=13)
    _save_figure_atomically(figure, path)
    return Picture("step-time-distribution", mode, title, path)


def draw_pictures(rows: List[ReportRow], summaries_by_run: Dict[str, dict], pic_dir: str, results_dir: str,
                  problems: List[str]) -> List[Picture]:
    """Draws every picture of every mode into ``pic_dir``; a picture that fails is named in ``problems``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        problems.append("pictures not drawn: matplotlib is not installed (pip install matplotlib)")
        return []
    colours = _colours(rows)
    pictures: List[Picture] = []
    for mode in sorted({r.mode for r in rows}, key=_mode_sort_key):
        mode_rows = [r for r in rows if r.mode == mode]
        jobs = (
            ("step-time-memory", lambda p: draw_step_time_memory(mode, mode_rows, colours, p)),
            ("memory-timeline", lambda p: draw_memory_timeline(mode, mode_rows, summaries_by_run, colours, p,
                                                               problems, results_dir)),
            ("step-time-distribution", lambda p: draw_step_time_distribution(mode, mode_rows, summaries_by_run,
                                                                             colours, p)),
        )
        for kind, draw in jobs:
            path = picture_path(pic_dir, kind, mode)
            try:
                pictures.append(draw(path))
            except Exception as error:  # a picture must never cost the tables
                problems.append(f"picture {os.path.basename(path)} not drawn: {type(error).__name__}: "
                                f"{str(error).splitlines()[0][:200] if str(error) else ''}")
    return pictures


# --------------------------------------------------------------------------- report


def write_report(results_dir: str, pic_dir: Optional[str] = None, pictures: bool = True) -> str:
    """Writes summary.md/.csv/.json into ``results_dir`` (and the pictures into ``pic_dir``,
    by default :func:`default_pic_dir`) and returns the markdown."""
    if not os.path.isdir(results_dir):
        raise UsageError(f"results folder {results_dir!r} does not exist")
    rows, problems, summaries = _load(results_dir)
    if not rows:
        raise UsageError(f"results folder {results_dir!r} has no */summary.json; run benchmark_all.py first")
    drawn: List[Picture] = []
    if pictures:
        pic_dir = os.path.abspath(pic_dir or default_pic_dir(results_dir))
        if os.path.exists(pic_dir) and not os.path.isdir(pic_dir):
            raise UsageError(f"--pic-dir {pic_dir!r} exists and is not a folder")
        summaries_by_run = {row.run_dir: s for row, s in zip(rows, summaries) if s is not None}
        drawn = draw_pictures(rows, summaries_by_run, pic_dir, results_dir, problems)
    readable = [s for s in summaries if s is not None]
    markdown = render_markdown(rows, problems, readable, drawn, results_dir)
    atomic_write_text(os.path.join(results_dir, "summary.md"), markdown)
    buffer = io.StringIO()
    fields = list(asdict(rows[0]).keys())
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    atomic_write_text(os.path.join(results_dir, "summary.csv"), buffer.getvalue())
    atomic_write_json(os.path.join(results_dir, "summary.json"), {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": [asdict(r) for r in rows],
        "pictures": [{**asdict(p), "link": os.path.relpath(p.path, results_dir).replace(os.sep, "/")}
                     for p in drawn],
        "problems": problems,
    })
    return markdown


# --------------------------------------------------------------------------- comparison


def _ratio(here: Optional[float], other: Optional[float]) -> Optional[float]:
    if here is None or other is None or other == 0:
        return None
    return here / other


def _side_description(label: str, path: str, summaries: List[dict]) -> str:
    torch_versions = sorted({s["torch_version"] for s in summaries if s.get("torch_version")})
    return (f"- {label}: `{path}`; device {'; '.join(_devices(summaries)) or 'unknown'}; "
            f"torch {', '.join(torch_versions) or 'unknown'}\n")


def compare(results_dir: str, other_dir: str) -> Tuple[str, dict]:
    """Matches the rows of two result folders by implementation and mode.

    Returns the markdown and a JSON-ready dict; ratios are ``results_dir / other_dir``.
    """
    for label, folder in (("results folder", results_dir), ("--compare folder", other_dir)):
        if not os.path.isdir(folder):
            raise UsageError(f"{label} {folder!r} does not exist")
    here_rows, here_problems, here_summaries = load_rows(results_dir)
    other_rows, other_problems, other_summaries = load_rows(other_dir)
    for label, folder, found in (("results folder", results_dir, here_rows),
                                 ("--compare folder", other_dir, other_rows)):
        if not found:
            raise UsageError(f"{label} {folder!r} has no */summary.json; run benchmark_all.py first")
    here = {(r.implementation, r.mode): r for r in here_rows}
    other = {(r.implementation, r.mode): r for r in other_rows}

    def key_order(key):
        return (_mode_sort_key(key[1]), key[0])

    matched: List[ComparisonRow] = []
    for key in sorted(set(here) & set(other), key=key_order):
        a, b = here[key], other[key]
        a_time = a.avg_step_time_us if _is_measured(a) else None
        b_time = b.avg_step_time_us if _is_measured(b) else None
        a_memory = a.peak_memory_mb if a.status == "ok" else None
        b_memory = b.peak_memory_mb if b.status == "ok" else None
        matched.append(ComparisonRow(a.name, a.mode, a.status, b.status, a_time, b_time, _ratio(a_time, b_time),
                                     a_memory, b_memory, _ratio(a_memory, b_memory)))
    only_here = [f"{here[k].name} ({mode_title(k[1])}, {here[k].status})" for k in sorted(set(here) - set(other),
                                                                                          key=key_order)]
    only_other = [f"{other[k].name} ({mode_title(k[1])}, {other[k].status})" for k in sorted(set(other) - set(here),
                                                                                             key=key_order)]

    def cell(value: Optional[float], status: str, digits: int) -> str:
        return _fmt(value, digits) if value is not None else (status if status != "ok" else "-")

    out = io.StringIO()
    out.write("# Transducer loss benchmark: comparison\n\n")
    out.write(_side_description("Here", os.path.abspath(results_dir), here_summaries))
    out.write(_side_description("Other", os.path.abspath(other_dir), other_summaries))
    out.write("- Ratio = here / other: below 1 means here is faster (step time) or leaner (peak memory).\n\n")
    out.write("| Name | Mode | Step time here (us) | Step time other (us) | Step time ratio | "
              "Peak memory here (MB) | Peak memory other (MB) | Peak memory ratio |\n")
    out.write("|---|---|---:|---:|---:|---:|---:|---:|\n")
    for r in matched:
        out.write(f"| {r.name} | {r.mode} | {cell(r.step_time_here_us, r.status_here, 0)} | "
                  f"{cell(r.step_time_other_us, r.status_other, 0)} | {_fmt(r.step_time_ratio, 2)} | "
                  f"{cell(r.peak_memory_here_mb, r.status_here, 1)} | "
                  f"{cell(r.peak_memory_other_mb, r.status_other, 1)} | {_fmt(r.peak_memory_ratio, 2)} |\n")
    if not matched:
        out.write("| (no implementation and mode in common) | | | | | | | |\n")
    if only_here or only_other:
        out.write("\n## Unmatched\n\n")
        for line in only_here:
            out.write(f"- only here: {line}\n")
        for line in only_other:
            out.write(f"- only in other: {line}\n")
    problems = [f"here: {p}" for p in here_problems] + [f"other: {p}" for p in other_problems]
    if problems:
        out.write("\n## Problems\n\n")
        for problem in problems:
            out.write(f"- {problem}\n")
    data = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "here": {"results_dir": os.path.abspath(results_dir), "devices": _devices(here_summaries),
                 "torch_versions": sorted({s["torch_version"] for s in here_summaries if s.get("torch_version")})},
        "other": {"results_dir": os.path.abspath(other_dir), "devices": _devices(other_summaries),
                  "torch_versions": sorted({s["torch_version"] for s in other_summaries if s.get("torch_version")})},
        "ratio": "here / other",
        "rows": [asdict(r) for r in matched],
        "only_here": only_here,
        "only_other": only_other,
        "problems": problems,
    }
    return out.getvalue(), data


def write_comparison(results_dir: str, other_dir: str) -> str:
    """Writes comparison.md and comparison.json into ``results_dir``; returns the markdown."""
    markdown, data = compare(results_dir, other_dir)
    atomic_write_text(os.path.join(results_dir, "comparison.md"), markdown)
    atomic_write_json(os.path.join(results_dir, "comparison.json"), data)
    return markdown


@exit_on_usage_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=os.path.join(REPO_DIR, "log"),
                        help="folder holding <run>/summary.json (default: log/ in the repository)")
    parser.add_argument("--pic-dir", default=None,
                        help="where the PNG pictures go (default: pic/ in the repository for its log/, "
                        "else <results_dir>/pic)")
    parser.add_argument("--no-pictures", action="store_true", help="write the tables only")
    parser.add_argument("--compare", metavar="OTHER_RESULTS_DIR", default=None,
                        help="also write comparison.md/.json: step time and peak memory ratios (this folder / OTHER)")
    args = parser.parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    if args.compare is not None and not os.path.isdir(args.compare):
        raise UsageError(f"--compare folder {args.compare!r} does not exist")
    print(write_report(results_dir, pic_dir=args.pic_dir, pictures=not args.no_pictures))
    if args.compare is not None:
        print(write_comparison(results_dir, os.path.abspath(args.compare)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
