#!/usr/bin/env python3
"""Summarise a results folder: every ``<results>/*/summary.json`` into tables.

Writes ``summary.md`` (one table per batching mode, sorted by step time, with device,
versions, preset and date above it, and take-aways computed from the numbers),
``summary.csv`` and ``summary.json`` with the same rows into the results folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import io
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from tlbench import REPO_DIR
from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.io import atomic_write_json, atomic_write_text


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


def _mode_sort_key(mode: str) -> Tuple[int, int]:
    if mode.startswith("max-frames-"):
        return (1, int(mode.rsplit("-", 1)[1]))
    return (0, int(mode)) if mode.isdigit() else (2, 0)


def load_rows(results_dir: str) -> Tuple[List[ReportRow], List[str], List[dict]]:
    """Reads every ``*/summary.json`` under ``results_dir``.

    Returns the rows, a list of problems (e.g. an unreadable file, named), and the raw
    summaries of the readable files.
    """
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
            rows.append(ReportRow(run_name, run_name, "?", run_name.rsplit("-", 1)[-1], "corrupt", None, None, None,
                                  0, None, None, None, None, f"unreadable summary.json: {path}", os.path.dirname(path)))
            continue
        summaries.append(summary)
        rows.append(ReportRow(
            name=summary.get("implementation") or run_name,
            implementation=summary.get("implementation") or run_name,
            backend=(f"{summary['backend']} {summary.get('backend_version') or ''}".strip()
                     if summary.get("backend") else "-"),
            mode=str(summary.get("mode") or "?"),
            status=summary["status"],
            avg_step_time_us=summary.get("avg_step_time_us"),
            loss_time_us=summary.get("loss_time_us"),
            peak_memory_mb=summary.get("peak_memory_mb"),
            num_steps=len(summary.get("step_times_us") or []),
            device=summary.get("device"),
            device_name=summary.get("device_name"),
            torch_version=summary.get("torch_version"),
            preset=summary.get("preset"),
            reason=summary.get("reason"),
            run_dir=os.path.dirname(path),
        ))
    return rows, problems, summaries


def _sorted_for_table(rows: List[ReportRow]) -> List[ReportRow]:
    measured = sorted((r for r in rows if r.status == "ok" and r.avg_step_time_us is not None),
                      key=lambda r: r.avg_step_time_us)
    return measured + sorted((r for r in rows if r not in measured), key=lambda r: r.implementation)


def _fmt(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def takeaways(rows: List[ReportRow]) -> List[str]:
    """Plain statements computed from one mode's measured rows."""
    measured = [r for r in rows if r.status == "ok" and r.avg_step_time_us is not None]
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


def render_markdown(rows: List[ReportRow], problems: List[str], summaries: List[dict]) -> str:
    out = io.StringIO()
    out.write("# Transducer loss benchmark\n\n")
    devices = sorted({f"{s.get('device')}: {s.get('device_name')}" for s in summaries if s.get("device")})
    torch_versions = sorted({s["torch_version"] for s in summaries if s.get("torch_version")})
    backends = sorted({r.backend for r in rows if r.backend not in ("-", "?")})
    presets = sorted({f"{s.get('preset')} ({s.get('preset_reason')})" for s in summaries if s.get("preset")})
    dates = sorted({s["created_at"] for s in summaries if s.get("created_at")})
    out.write(f"- Device: {'; '.join(devices) or 'unknown'}\n")
    out.write(f"- torch: {', '.join(torch_versions) or 'unknown'}; backends: {', '.join(backends) or 'none'}\n")
    out.write(f"- Preset: {'; '.join(presets) or 'unknown'}\n")
    if dates:
        out.write(f"- Runs: {dates[0]} to {dates[-1]} (UTC)\n")
    out.write("- Step = random data + joiner + loss + backward + zero grads; loss time = the loss call and its "
              "backward (record_function region); peak memory = max allocated bytes in the profiler's memory events.\n")
    for mode in sorted({r.mode for r in rows}, key=_mode_sort_key):
        mode_rows = [r for r in rows if r.mode == mode]
        title = f"max frames {mode.rsplit('-', 1)[1]} (sorted utterances)" if mode.startswith("max-frames-") \
            else f"batch size {mode}" if mode.isdigit() else mode
        out.write(f"\n## {title}\n\n")
        out.write("| Name | Backend | Average step time (us) | Loss time (us) | Peak memory usage (MB) | Status |\n")
        out.write("|---|---|---:|---:|---:|---|\n")
        for r in _sorted_for_table(mode_rows):
            status = r.status if r.status == "ok" else f"{r.status}: {r.reason or ''}".strip()
            out.write(f"| {r.name} | {r.backend} | {_fmt(r.avg_step_time_us)} | {_fmt(r.loss_time_us)} | "
                      f"{_fmt(r.peak_memory_mb, 1)} | {status} |\n")
        out.write("\nTake-aways:\n")
        for line in takeaways(mode_rows):
            out.write(f"- {line}\n")
    if problems:
        out.write("\n## Problems\n\n")
        for problem in problems:
            out.write(f"- {problem}\n")
    return out.getvalue()


def write_report(results_dir: str) -> str:
    """Writes summary.md/.csv/.json into ``results_dir`` and returns the markdown."""
    if not os.path.isdir(results_dir):
        raise UsageError(f"results folder {results_dir!r} does not exist")
    rows, problems, summaries = load_rows(results_dir)
    if not rows:
        raise UsageError(f"results folder {results_dir!r} has no */summary.json; run benchmark_all.py first")
    markdown = render_markdown(rows, problems, summaries)
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
        "problems": problems,
    })
    return markdown


@exit_on_usage_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=os.path.join(REPO_DIR, "log"),
                        help="folder holding <run>/summary.json (default: log/ in the repository)")
    args = parser.parse_args(argv)
    print(write_report(os.path.abspath(args.results_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
