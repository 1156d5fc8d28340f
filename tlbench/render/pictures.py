"""Pictures (matplotlib, PNG, written atomically): the suite's per-mode bars, scatter, memory
timelines and step-time distributions, the grid's heatmaps and the capacity chart."""

from __future__ import annotations

import math
import os
import re
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional

from tlbench.core.errors import first_line
from tlbench.core.io import atomic_save_figure
from tlbench.core.status import Status
from tlbench.measure.trace import MemoryTimeline
from tlbench.results.rows import ReportRow, Results, finite, is_measured, mode_sort_key, mode_title, sorted_for_table

__all__ = ["PICTURE_DPI", "Picture", "draw_capacity", "draw_memory_timeline", "draw_pictures",
           "draw_step_time_distribution", "draw_step_time_memory", "draw_time_vs_memory", "grid_heatmap",
           "implementation_colours", "pareto_frontier", "picture_path"]

PICTURE_DPI = 120


@dataclass
class Picture:
    """One PNG drawn for one batching mode."""

    kind: str  # "step-time-memory", "memory-timeline", "step-time-distribution", "time-vs-memory"
    mode: str
    title: str
    path: str  # absolute


def _safe_file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "unknown"


def picture_path(pic_dir: str, kind: str, mode: str) -> str:
    return os.path.join(pic_dir, f"{kind}-{_safe_file_part(mode)}.png")


def implementation_colours(names) -> Dict[str, str]:
    """One colour per implementation name, the same in every picture of one report: tab20's
    dark shades, then its light ones, in the names' alphabetical order (distinct for 20)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab20"]
    order = [2 * i for i in range(10)] + [2 * i + 1 for i in range(10)]
    return {name: to_hex(palette(order[i % 20])) for i, name in enumerate(sorted(set(names)))}


def _colours(rows: List[ReportRow]) -> Dict[str, str]:
    return implementation_colours(r.implementation for r in rows)


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
    return "not measured" if row.status == Status.OK else f"{row.status}, not measured"


def draw_step_time_memory(mode: str, rows: List[ReportRow], colours: Dict[str, str], path: str) -> Picture:
    """Horizontal bars: average step time (ms) and peak memory (MB) per implementation."""
    ordered = sorted_for_table(rows)
    figure = _new_figure(12, 1.9 + 0.55 * len(ordered))
    time_axes, memory_axes = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(ordered)))
    panels = ((time_axes, [r.avg_step_time_us / 1000 if is_measured(r) else None for r in ordered],
               "Average step time (ms)", lambda v: f"{v:.1f} ms"),
              (memory_axes, [r.peak_memory_mb if r.status == Status.OK else None for r in ordered],
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
    atomic_save_figure(figure, path, PICTURE_DPI)
    return Picture("step-time-memory", mode, title, path)


def draw_memory_timeline(mode: str, rows: List[ReportRow], timelines: Dict[str, MemoryTimeline],
                         colours: Dict[str, str], path: str) -> Picture:
    """Allocated memory (MB) over time within the recorded steps (ms), one line per implementation;
    ``timelines`` maps a row's ``run_dir`` to what its traces hold."""
    figure = _new_figure(12, 6)
    axes = figure.subplots()
    drawn = 0
    for row in sorted_for_table(rows):
        timeline = timelines.get(row.run_dir)
        if timeline is None:
            continue
        xs, ys = timeline.times_ms, timeline.allocated_mb
        peak = timeline.peak_mb
        status = "" if row.status == Status.OK else f", {row.status}"
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
    atomic_save_figure(figure, path, PICTURE_DPI)
    return Picture("memory-timeline", mode, title, path)


def draw_step_time_distribution(mode: str, rows: List[ReportRow], summaries: Dict[str, object],
                                colours: Dict[str, str], path: str) -> Picture:
    """Box plot plus every recorded step (ms) per implementation, to show the noise."""
    ordered = sorted_for_table(rows)
    figure = _new_figure(12, 1.9 + 0.7 * len(ordered))
    axes = figure.subplots()
    positions = list(range(len(ordered)))
    largest = 0.0
    per_row = []
    for row in ordered:
        summary = summaries.get(row.run_dir)
        steps = summary.step_times_us if summary is not None else []
        times_ms = [t / 1000 for t in steps or [] if finite(t) is not None]
        per_row.append(times_ms if row.status == Status.OK else [])
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
    atomic_save_figure(figure, path, PICTURE_DPI)
    return Picture("step-time-distribution", mode, title, path)


def draw_pictures(results: Results, timelines: Dict[str, MemoryTimeline], pic_dir: str) -> List[Picture]:
    """Draws every picture of every mode of ``results`` into ``pic_dir`` (``timelines``: run
    folder -> its memory timeline); a picture that fails is named in ``results.problems``,
    never raised."""
    problems = results.problems
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        problems.append("pictures not drawn: matplotlib is not installed (pip install matplotlib)")
        return []
    rows, summaries_by_run = results.rows, results.summary_by_run()
    colours = _colours(rows)
    pictures: List[Picture] = []
    for mode in sorted({r.mode for r in rows}, key=mode_sort_key):
        mode_rows = [r for r in rows if r.mode == mode]
        jobs = (
            ("step-time-memory", draw_step_time_memory, (mode, mode_rows, colours)),
            ("time-vs-memory", draw_time_vs_memory, (mode, mode_rows, colours)),
            ("memory-timeline", draw_memory_timeline, (mode, mode_rows, timelines, colours)),
            ("step-time-distribution", draw_step_time_distribution, (mode, mode_rows, summaries_by_run, colours)),
        )
        for kind, draw, args in jobs:
            path = picture_path(pic_dir, kind, mode)
            try:
                picture = draw(*args, path)
            except Exception as error:  # a picture must never cost the tables
                problems.append(f"picture {os.path.basename(path)} not drawn: {first_line(error, with_type=True)}")
                continue
            if picture is not None:
                pictures.append(picture)
    return pictures


def pareto_frontier(rows: List[ReportRow]) -> List[ReportRow]:
    """The measured rows no other row beats on both step time and peak memory, by memory."""
    measured = [r for r in rows if is_measured(r) and r.peak_memory_mb is not None]

    def beats(o: ReportRow, r: ReportRow) -> bool:
        at_least = o.avg_step_time_us <= r.avg_step_time_us and o.peak_memory_mb <= r.peak_memory_mb
        return at_least and (o.avg_step_time_us < r.avg_step_time_us or o.peak_memory_mb < r.peak_memory_mb)

    frontier = [r for r in measured if not any(beats(o, r) for o in measured if o is not r)]
    return sorted(frontier, key=lambda r: r.peak_memory_mb)


def draw_time_vs_memory(mode: str, rows: List[ReportRow], colours: Dict[str, str], path: str) -> Optional[Picture]:
    """Step time against peak memory, one point per measured implementation (log axes); the
    frontier (the implementations nothing else beats on both) joined by a dashed line."""
    measured = [r for r in rows if is_measured(r) and r.peak_memory_mb]
    if not measured:
        return None
    figure = _new_figure(9, 6.5)
    axes = figure.subplots()
    frontier = pareto_frontier(measured)
    if len(frontier) > 1:
        axes.plot([r.peak_memory_mb for r in frontier], [r.avg_step_time_us / 1000 for r in frontier], linestyle="--",
                  color="grey", linewidth=1.2, zorder=1, label="frontier (nothing is both faster and leaner)")
    placed: List[tuple] = []
    for row in sorted(measured, key=lambda r: (r.peak_memory_mb, -r.avg_step_time_us)):
        on_frontier = row in frontier
        memory, time_ms = row.peak_memory_mb, row.avg_step_time_us / 1000
        axes.scatter([memory], [time_ms], s=90 if on_frontier else 55, color=colours[row.implementation],
                     edgecolors="black", linewidths=1.2 if on_frontier else 0.4, zorder=3)
        # labels of nearby points are stacked downwards instead of printed over each other
        near = sum(1 for m, t in placed if abs(math.log(memory / m)) < 0.5 and abs(math.log(time_ms / t)) < 0.6)
        placed.append((memory, time_ms))
        axes.annotate(f"{row.name}: {time_ms:.1f} ms, {_mb_text(memory)}", (memory, time_ms), textcoords="offset points",
                      xytext=(8, 4 - 16 * near), fontsize=9)
    from matplotlib.ticker import FuncFormatter

    axes.set_xscale("log")
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if str(f"{value:g}")[0] in "25" else ""))
        axis.set_tick_params(which="minor", labelsize=7)
    xs = [r.peak_memory_mb for r in measured]
    ys = [r.avg_step_time_us / 1000 for r in measured]
    axes.set_xlim(min(xs) / 2, max(xs) * 4)
    axes.set_ylim(min(ys) / 2, max(ys) * 2)
    axes.set_xlabel("Peak memory (MB, log scale), lower is better", fontsize=11)
    axes.set_ylabel("Average step time (ms, log scale), lower is better", fontsize=11)
    axes.grid(alpha=0.3, which="both")
    if len(frontier) > 1:
        axes.legend(loc="upper right", fontsize=9)
    not_measured = [r.name for r in rows if r not in measured]
    title = f"Step time against peak memory, {mode_title(mode)}"
    subtitle = _device_text(rows) + (f"\nnot measured: {', '.join(not_measured)}" if not_measured else "")
    axes.set_title(f"{title}\n{subtitle}", fontsize=12)
    atomic_save_figure(figure, path, PICTURE_DPI)
    return Picture("time-vs-memory", mode, title, path)


_GRID_MARK_COLOURS = {Status.SKIPPED: "#d9d9d9", Status.OOM: "#f4a6a6", Status.ERROR: "#f7c98b",
                      Status.UNAVAILABLE: "#d9d9d9"}


def grid_heatmap(result, which: str, path: str) -> None:
    """One table as a picture: colour = value (log scale), N/A / OOM / ERR cells marked."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    from tlbench.render.tables import grid_memory_cell, grid_rtf_cell, grid_titles

    spec, device = result.spec, result.settings.device
    values = np.full((len(spec.durations_s), len(spec.batch_sizes)), np.nan)
    texts = [["" for _ in spec.batch_sizes] for _ in spec.durations_s]
    for i in range(len(spec.durations_s)):
        for j in range(len(spec.batch_sizes)):
            cell = result.cell(i, j)
            value = cell.rtf if which == "rtf" else cell.peak_memory_gb
            if value is not None and value > 0:
                values[i, j] = value
            text = grid_rtf_cell(cell, device) if which == "rtf" else grid_memory_cell(cell)
            texts[i][j] = text.replace(" + ", "\n+ ")
    finite = values[np.isfinite(values)]
    fig = _new_figure(1.9 + 1.6 * len(spec.batch_sizes), 1.2 + 0.6 * len(spec.durations_s))
    ax = fig.subplots()
    norm = LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * 1.0001)) if finite.size else None
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", norm=norm, aspect="auto")
    for i in range(len(spec.durations_s)):
        for j in range(len(spec.batch_sizes)):
            cell = result.cell(i, j)
            if cell.status != Status.OK:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_GRID_MARK_COLOURS.get(cell.status, "#d9d9d9"),
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
    title = grid_titles(result)[0 if which == "rtf" else 1]
    if which == "rtf" and device == "cuda":
        title = "real-time factor (colour: wall time; text: CPU + CUDA)"
    ax.set_title(f"{result.label}, {device}\n{title}", fontsize=9)
    if finite.size:
        fig.colorbar(image, ax=ax, label="RTF" if which == "rtf" else "GB")
    atomic_save_figure(fig, path, PICTURE_DPI)


def draw_capacity(rows, path: str, title: str) -> Optional[str]:
    """The largest fitting size per implementation, one panel per mode, with the peak memory
    there and the budget; the first size that did not fit is marked."""
    modes = [m for m in ("batch-size", "max-frames") if any(r.mode == m for r in rows)]
    if not modes:
        return None
    figure = _new_figure(6.5 * len(modes), 1.8 + 0.6 * max(len([r for r in rows if r.mode == m]) for m in modes))
    axes_list = figure.subplots(1, len(modes), squeeze=False)[0]
    colours = implementation_colours(r.implementation for r in rows)
    for axes, mode in zip(axes_list, modes):
        mode_rows = sorted((r for r in rows if r.mode == mode), key=lambda r: -(r.largest_fitting or 0))
        largest = max([r.first_not_fitting or r.largest_fitting or 1 for r in mode_rows] + [1])
        for y, row in enumerate(mode_rows):
            if row.largest_fitting is None:
                axes.text(largest * 0.01, y, "nothing fits" + (f" (first tried: {row.first_not_fitting})"
                                                               if row.first_not_fitting else ""),
                          va="center", fontsize=9, style="italic", color="firebrick")
                continue
            axes.barh(y, row.largest_fitting, color=colours[row.implementation], height=0.6)
            if row.first_not_fitting:
                axes.plot([row.first_not_fitting], [y], marker="x", color="black", markersize=8)
            right = max(row.largest_fitting, row.first_not_fitting or 0)
            axes.text(right + largest * 0.03, y, f"{row.largest_fitting} ({_mb_text(row.peak_memory_mb)})",
                      va="center", fontsize=9)
        axes.set_yticks(range(len(mode_rows)), [r.implementation for r in mode_rows], fontsize=10)
        axes.set_ylim(len(mode_rows) - 0.5, -0.5)
        axes.set_xlim(0, largest * 1.45)
        axes.set_xlabel(("largest batch size" if mode == "batch-size" else "largest max-frames (sorted)")
                        + " within the budget; x = first size that did not fit", fontsize=10)
        axes.grid(axis="x", alpha=0.3)
        axes.set_title(mode, fontsize=11)
    figure.suptitle(title, fontsize=12)
    atomic_save_figure(figure, path, PICTURE_DPI)
    return path
