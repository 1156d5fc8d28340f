"""The suite's report of a results folder (``summary.md``, ``summary.csv``, ``summary.json``
and the pictures) and the comparison of two folders (``comparison.md``, ``comparison.json``)."""

from __future__ import annotations

import datetime
import os
from dataclasses import asdict
from typing import Dict, List, Optional

from tlbench.core.errors import UsageError
from tlbench.core.io import atomic_write_json, atomic_write_text
from tlbench.measure.trace import MemoryTimeline, memory_timeline, run_trace_paths
from tlbench.results.comparison import compare_results
from tlbench.results.rows import Results, load_results

__all__ = ["default_pic_dir", "memory_timelines", "write_comparison", "write_report"]


def default_pic_dir(results_dir: str) -> str:
    """``<results_dir>/pic``: a run never rewrites the README's pictures in the repository's
    ``pic/`` (refresh those on purpose with ``report.py log --pic-dir pic``)."""
    return os.path.join(results_dir, "pic")


def memory_timelines(results: Results) -> Dict[str, MemoryTimeline]:
    """Run folder -> the allocated memory over its recorded steps, read from its traces (runs
    without memory events are left out; unreadable traces are named in ``results.problems``)."""
    timelines: Dict[str, MemoryTimeline] = {}
    for row, summary in zip(results.rows, results.summaries):
        if summary is None:
            continue
        problems: List[str] = []
        timeline = memory_timeline(run_trace_paths(row.run_dir, summary.to_dict()),
                                   "cuda" if row.device == "cuda" else "cpu", problems)
        results.problems.extend(os.path.relpath(p, results.results_dir) for p in problems)
        if timeline is not None:
            timelines[row.run_dir] = timeline
    return timelines


def _load(results_dir: str, label: str) -> Results:
    if not os.path.isdir(results_dir):
        raise UsageError(f"{label} {results_dir!r} does not exist")
    results = load_results(results_dir)
    if not results.rows:
        raise UsageError(f"{label} {results_dir!r} has no */summary.json; run benchmark_all.py first")
    return results


def write_report(results_dir: str, pic_dir: Optional[str] = None, pictures: bool = True, html: bool = True,
                 publish: Optional[str] = None) -> str:
    """Writes summary.md/.csv/.json into ``results_dir`` (and the pictures into ``pic_dir``,
    by default :func:`default_pic_dir`, and report.html unless ``html`` is False) and returns the markdown.

    ``publish``: also writes the markdown to that file (e.g. ``docs/results.md``) with the
    pictures linked relative to it, headed by the command that made it."""
    from tlbench.render import pictures as drawing
    from tlbench.render import tables

    results = _load(results_dir, "results folder")
    drawn: List[drawing.Picture] = []
    if pictures:
        pic_dir = os.path.abspath(pic_dir or default_pic_dir(results_dir))
        if os.path.exists(pic_dir) and not os.path.isdir(pic_dir):
            raise UsageError(f"--pic-dir {pic_dir!r} exists and is not a folder")
        drawn = drawing.draw_pictures(results, memory_timelines(results), pic_dir)
    if html:
        from tlbench.report.html import write_html_report

        write_html_report(results)  # report.html, interactive and offline, beside summary.md
    markdown = tables.report_markdown(results, drawn)
    atomic_write_text(os.path.join(results_dir, "summary.md"), markdown)
    if publish is not None:
        published = tables.report_markdown(results, drawn, link_base=os.path.dirname(os.path.abspath(publish)))
        atomic_write_text(publish, _PUBLISHED_NOTE + published)
    atomic_write_text(os.path.join(results_dir, "summary.csv"), tables.rows_csv(results.rows))
    atomic_write_json(os.path.join(results_dir, "summary.json"), {
        "generated_at": _now(),
        "rows": [asdict(r) for r in results.rows],
        "pictures": [{**asdict(p), "link": os.path.relpath(p.path, results_dir).replace(os.sep, "/")}
                     for p in drawn],
        "problems": results.problems,
    })
    return markdown


_PUBLISHED_NOTE = ("<!-- Written by report.py --publish; edits here are overwritten. -->\n\n"
                   "This page is the report of a results folder (`summary.md`), published by "
                   "`.venv/bin/python report.py log --pic-dir pic --publish docs/results.md` after the main command "
                   "(`bash scripts/benchmark.sh`); device, versions, preset and dates are in its first lines. "
                   "Back to the [README](../README.md).\n\n")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_comparison(results_dir: str, other_dir: str) -> str:
    """Writes comparison.md and comparison.json into ``results_dir`` (ratios: this folder /
    ``other_dir``); returns the markdown."""
    from tlbench.render import tables

    here = _load(results_dir, "results folder")
    other = _load(other_dir, "--compare folder")
    comparison = compare_results(here, other)
    markdown = tables.comparison_markdown(comparison)
    atomic_write_text(os.path.join(results_dir, "comparison.md"), markdown)
    atomic_write_json(os.path.join(results_dir, "comparison.json"), {
        "generated_at": _now(),
        **{side: {"results_dir": os.path.abspath(r.results_dir), "devices": tables.devices(r.readable),
                  "torch_versions": sorted({s.torch_version for s in r.readable if s.torch_version})}
           for side, r in (("here", here), ("other", other))},
        "ratio": "here / other",
        "rows": [asdict(r) for r in comparison.matched],
        "only_here": comparison.only_here,
        "only_other": comparison.only_other,
        "problems": comparison.problems,
    })
    return markdown
