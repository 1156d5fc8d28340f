"""A results folder: every ``<results>/*/summary.json`` as report rows, the report files, and
the comparison of two folders. Rendering (markdown, CSV, pictures) is :mod:`tlbench.render`.
"""

from __future__ import annotations

import datetime
import glob
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from .errors import UsageError, first_line
from .io import atomic_write_json, atomic_write_text
from .summary import RunSummary, SummaryError

__all__ = ["ComparisonRow", "Picture", "ReportRow", "Results", "compare", "default_pic_dir", "finite",
           "is_measured", "load_results", "mode_sort_key", "mode_title", "sorted_for_table", "takeaways",
           "write_comparison", "write_report"]

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
class Picture:
    """One PNG drawn for one batching mode."""

    kind: str  # "step-time-memory", "memory-timeline", "step-time-distribution", "time-vs-memory"
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
            rows.append(ReportRow(implementation, implementation, "?", mode, "corrupt", None, None, None, 0, None,
                                  None, None, None, f"unreadable summary.json: {path}", run_dir))
            summaries.append(None)
            continue
        if summary.extras.get("kind") == "model-profile" or "label_order" in summary.extras:
            continue  # profile_model.py's runs are a whole model's step, not a loss benchmark
        rows.append(_row(summary, run_name, run_dir))
        summaries.append(summary)
    return Results(results_dir, rows, summaries, problems)


def is_measured(row: ReportRow) -> bool:
    return row.status == "ok" and row.avg_step_time_us is not None


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
    failed = [r for r in rows if r.status != "ok"]
    if failed:
        lines.append("not measured: " + ", ".join(f"{r.name} ({r.status})" for r in failed))
    return lines


def default_pic_dir(results_dir: str) -> str:
    """``<results_dir>/pic``: a run never rewrites the README's pictures in the repository's
    ``pic/`` (refresh those on purpose with ``report.py log --pic-dir pic``)."""
    return os.path.join(results_dir, "pic")


def write_report(results_dir: str, pic_dir: Optional[str] = None, pictures: bool = True) -> str:
    """Writes summary.md/.csv/.json into ``results_dir`` (and the pictures into ``pic_dir``,
    by default :func:`default_pic_dir`) and returns the markdown."""
    from .render import pictures as drawing
    from .render import tables

    if not os.path.isdir(results_dir):
        raise UsageError(f"results folder {results_dir!r} does not exist")
    results = load_results(results_dir)
    if not results.rows:
        raise UsageError(f"results folder {results_dir!r} has no */summary.json; run benchmark_all.py first")
    drawn: List[Picture] = []
    if pictures:
        pic_dir = os.path.abspath(pic_dir or default_pic_dir(results_dir))
        if os.path.exists(pic_dir) and not os.path.isdir(pic_dir):
            raise UsageError(f"--pic-dir {pic_dir!r} exists and is not a folder")
        drawn = drawing.draw_pictures(results, pic_dir)
    markdown = tables.report_markdown(results, drawn)
    atomic_write_text(os.path.join(results_dir, "summary.md"), markdown)
    atomic_write_text(os.path.join(results_dir, "summary.csv"), tables.rows_csv(results.rows))
    atomic_write_json(os.path.join(results_dir, "summary.json"), {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": [asdict(r) for r in results.rows],
        "pictures": [{**asdict(p), "link": os.path.relpath(p.path, results_dir).replace(os.sep, "/")}
                     for p in drawn],
        "problems": results.problems,
    })
    return markdown


def _ratio(here: Optional[float], other: Optional[float]) -> Optional[float]:
    if here is None or other is None or other == 0:
        return None
    return here / other


def compare(results_dir: str, other_dir: str) -> Tuple[str, dict]:
    """Matches the rows of two result folders by implementation and mode.

    Returns the markdown and a JSON-ready dict; ratios are ``results_dir / other_dir``.
    """
    from .render import tables

    for label, folder in (("results folder", results_dir), ("--compare folder", other_dir)):
        if not os.path.isdir(folder):
            raise UsageError(f"{label} {folder!r} does not exist")
    here_results, other_results = load_results(results_dir), load_results(other_dir)
    for label, folder, found in (("results folder", results_dir, here_results.rows),
                                 ("--compare folder", other_dir, other_results.rows)):
        if not found:
            raise UsageError(f"{label} {folder!r} has no */summary.json; run benchmark_all.py first")
    here = {(r.implementation, r.mode): r for r in here_results.rows}
    other = {(r.implementation, r.mode): r for r in other_results.rows}

    def key_order(key):
        return (mode_sort_key(key[1]), key[0])

    matched: List[ComparisonRow] = []
    for key in sorted(set(here) & set(other), key=key_order):
        a, b = here[key], other[key]
        a_time = a.avg_step_time_us if is_measured(a) else None
        b_time = b.avg_step_time_us if is_measured(b) else None
        a_memory = a.peak_memory_mb if a.status == "ok" else None
        b_memory = b.peak_memory_mb if b.status == "ok" else None
        matched.append(ComparisonRow(a.name, a.mode, a.status, b.status, a_time, b_time, _ratio(a_time, b_time),
                                     a_memory, b_memory, _ratio(a_memory, b_memory)))
    only_here = [f"{here[k].name} ({mode_title(k[1])}, {here[k].status})"
                 for k in sorted(set(here) - set(other), key=key_order)]
    only_other = [f"{other[k].name} ({mode_title(k[1])}, {other[k].status})"
                  for k in sorted(set(other) - set(here), key=key_order)]
    problems = [f"here: {p}" for p in here_results.problems] + [f"other: {p}" for p in other_results.problems]
    sides = {"here": here_results, "other": other_results}
    markdown = tables.comparison_markdown(sides, matched, only_here, only_other, problems)
    data = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{side: {"results_dir": os.path.abspath(r.results_dir), "devices": tables.devices(r.readable),
                  "torch_versions": sorted({s.torch_version for s in r.readable if s.torch_version})}
           for side, r in sides.items()},
        "ratio": "here / other",
        "rows": [asdict(r) for r in matched],
        "only_here": only_here,
        "only_other": only_other,
        "problems": problems,
    }
    return markdown, data


def write_comparison(results_dir: str, other_dir: str) -> str:
    """Writes comparison.md and comparison.json into ``results_dir``; returns the markdown."""
    markdown, data = compare(results_dir, other_dir)
    atomic_write_text(os.path.join(results_dir, "comparison.md"), markdown)
    atomic_write_json(os.path.join(results_dir, "comparison.json"), data)
    return markdown
