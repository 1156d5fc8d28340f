"""A results folder: every ``<results>/*/summary.json`` as report rows, and the statements
derived from them. Rendering is :mod:`tlbench.render`; the report files, :mod:`tlbench.report`.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from tlbench.core.errors import first_line
from tlbench.core.status import Status
from tlbench.measure.summary import RunSummary, SummaryError

__all__ = ["ReportRow", "Results", "finite", "is_measured", "load_results", "mode_sort_key", "mode_title",
           "sorted_for_table", "takeaways"]

# A run folder is "<implementation>-<mode>", the mode being "30" or "max-frames-10000".
_RUN_FOLDER = re.compile(r"^(?P<implementation>.+?)-(?P<mode>(?:max-frames-)?\d+(?:-[A-Za-z0-9]+)*)$")
_MODE = re.compile(r"^(?:(?P<max_frames>max-frames-)?(?P<size>\d+))(?P<variant>(?:-[A-Za-z0-9]+)*)$")


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
class Results:
    """A loaded results folder: one row per run folder, its summary (None if unreadable), problems."""

    results_dir: str
    rows: List[ReportRow]
    summaries: List[Optional[RunSummary]]
    problems: List[str]

    @property
    def readable(self) -> List[RunSummary]:
        return [s for s in self.summaries if s is not None]

    def summary_by_run(self) -> Dict[str, RunSummary]:
        return {row.run_dir: s for row, s in zip(self.rows, self.summaries) if s is not None}


def mode_sort_key(mode: str) -> Tuple[int, int, str]:
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


def finite(value) -> Optional[float]:
    """A number from a summary, or None when it is missing, null, NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _row(summary: RunSummary, run_name: str, run_dir: str) -> ReportRow:
    implementation = summary.implementation or _split_run_folder(run_name)[0]
    return ReportRow(
        name=implementation,
        implementation=implementation,
        backend=f"{summary.backend} {summary.backend_version or ''}".strip() if summary.backend else "-",
        mode=str(summary.mode or _split_run_folder(run_name)[1]),
        status=str(summary.status),
        avg_step_time_us=finite(summary.avg_step_time_us),
        loss_time_us=finite(summary.loss_time_us),
        peak_memory_mb=finite(summary.peak_memory_mb),
        num_steps=len(summary.step_times_us or []),
        device=summary.device,
        device_name=summary.device_name,
        torch_version=summary.torch_version,
        preset=summary.preset,
        reason=summary.reason,
        run_dir=run_dir,
        median_step_time_us=finite(summary.median_step_time_us),
        iqr_step_time_us=finite(summary.iqr_step_time_us),
    )


def load_results(results_dir: str) -> Results:
    """Reads every ``*/summary.json`` under ``results_dir``; an unreadable one is a "corrupt" row
    and a named problem, never an exception."""
    rows: List[ReportRow] = []
    summaries: List[Optional[RunSummary]] = []
    problems: List[str] = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "summary.json"))):
        run_dir = os.path.dirname(path)
        run_name = os.path.basename(run_dir)
        try:
            summary = RunSummary.load(path)
        except SummaryError as error:
            problems.append(f"{os.path.relpath(path, results_dir)}: unreadable ({first_line(error)})")
            implementation, mode = _split_run_folder(run_name)
            rows.append(ReportRow(implementation, implementation, "?", mode, Status.CORRUPT, None, None, None, 0, None,
                                  None, None, None, f"unreadable summary.json: {path}", run_dir))
            summaries.append(None)
            continue
        if summary.extras.get("kind") == "model-profile" or "label_order" in summary.extras:
            continue  # profile_model.py's runs are a whole model's step, not a loss benchmark
        rows.append(_row(summary, run_name, run_dir))
        summaries.append(summary)
    return Results(results_dir, rows, summaries, problems)


def is_measured(row: ReportRow) -> bool:
    return row.status == Status.OK and row.avg_step_time_us is not None


def sorted_for_table(rows: List[ReportRow]) -> List[ReportRow]:
    measured = sorted((r for r in rows if is_measured(r)), key=lambda r: r.avg_step_time_us)
    return measured + sorted((r for r in rows if r not in measured), key=lambda r: r.implementation)


def takeaways(rows: List[ReportRow]) -> List[str]:
    """Plain statements computed from one mode's measured rows."""
    measured = [r for r in rows if is_measured(r)]
    if not measured:
        return ["no implementation was measured in this mode"]
    lines = []
    fastest = min(measured, key=lambda r: r.avg_step_time_us)
    lines.append(f"fastest: {fastest.name} ({fastest.avg_step_time_us:.0f} us per step)")
    with_memory = [r for r in measured if r.peak_memory_mb is not None]
    if with_memory:
        leanest = min(with_memory, key=lambda r: r.peak_memory_mb)
        lines.append(f"leanest: {leanest.name} ({leanest.peak_memory_mb:.1f} MB peak)")
    baseline = next((r for r in measured if r.implementation == "torchaudio"), None)
    if baseline:
        for r in measured:
            if r is baseline:
                continue
            parts = [f"{baseline.avg_step_time_us / r.avg_step_time_us:.2f}x the speed of torchaudio"]
            if r.peak_memory_mb and baseline.peak_memory_mb:
                parts.append(f"{r.peak_memory_mb / baseline.peak_memory_mb:.2f}x its peak memory")
            lines.append(f"{r.name}: " + ", ".join(parts))
    failed = [r for r in rows if r.status != Status.OK]
    if failed:
        lines.append("not measured: " + ", ".join(f"{r.name} ({r.status})" for r in failed))
    return lines
