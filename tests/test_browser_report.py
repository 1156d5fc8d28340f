"""report.html of the tiny suite run (the results of ``helpers_results``: benchmark_all.py, which
ends with the report) opened from file:// in headless chromium with every non-local request
aborted: every figure is drawn, there is no console error, and the numbers plotly holds
(each figure's ``gd.data``, read from the page) are those of summary.json and of the traces.

With ``TLB_SCREENSHOT_DIR=docs/img`` the test saves ``report.png`` there. Without chromium or
Playwright the browser test skips (one line); under CI it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser_support as support  # noqa: E402
import helpers_results as helpers  # noqa: E402

from tlbench.measure.trace import parse_trace, run_trace_paths  # noqa: E402

KINDS = ("step-time-memory", "time-vs-memory", "step-time-distribution", "memory-timeline")
MB = 2**20


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def test_the_suite_run_writes_report_html_beside_summary_md_with_no_remote_reference(results):
    page = os.path.join(results, "report.html")
    assert os.path.isfile(page) and os.path.isfile(os.path.join(results, "summary.md"))
    with open(page, encoding="utf-8") as f:
        text = f.read()
    scripts = re.findall(r"<script[^>]*\bsrc=['\"]([^'\"]+)", text)
    assert len(scripts) == 1 and re.fullmatch(r"plotly-[\d.]+\.min\.js", scripts[0]), scripts
    assert os.path.getsize(os.path.join(results, scripts[0])) > 1_000_000  # plotly.js itself, from the wheel
    for reference in re.findall(r"\b(?:src|href)=['\"]([^'\"]+)", text):
        assert not re.match(r"^(?:[a-z]+:)?//", reference), f"remote reference {reference!r} in report.html"
    for run in helpers.RUN_NAMES:
        assert f"view_trace.py {os.path.join(results, run)}" in text  # the offline viewer's command per run


def test_without_plotly_the_report_names_the_problem_and_writes_no_page(results, tmp_path, monkeypatch):
    from tlbench.report import html as html_report
    from tlbench.results.rows import load_results

    folder = helpers.copy_results(results, str(tmp_path / "log"), with_traces=False)
    monkeypatch.setitem(sys.modules, "plotly.offline", None)  # import plotly.offline fails
    loaded = load_results(folder)
    assert html_report.write_html_report(loaded) is None
    assert not os.path.exists(os.path.join(folder, "report.html"))
    assert any("report.html not written" in p and "pip install plotly" in p for p in loaded.problems)


def page_figures(page):
    """Every figure of the page as plotly holds it: id, kind, mode and its traces' data."""
    return page.evaluate("""() => [...document.querySelectorAll('div.figure')].map(gd => ({
        id: gd.id, kind: gd.dataset.kind, mode: gd.dataset.mode, drawn: gd.classList.contains('js-plotly-plot'),
        svg: gd.querySelectorAll('svg.main-svg').length,
        data: (gd.data || []).map(t => ({type: t.type, name: t.name, x: t.x, y: t.y, meta: t.meta,
                                         customdata: t.customdata}))}))""")


def traces_of(figure, quantity):
    return {t["meta"]["run"]: t for t in figure["data"] if (t.get("meta") or {}).get("quantity") == quantity}


def test_report_html_offline_every_figure_holds_the_numbers_of_summary_json(results):
    support.require_browser()
    page_path = os.path.join(results, "report.html")
    summaries = {run: helpers.load_summary(results, run) for run in helpers.RUN_NAMES}
    with support.offline_page() as browser:
        page = browser.page
        page.goto("file://" + page_path)
        page.wait_for_function("() => { const f = document.querySelectorAll('div.figure');"
                               " return f.length > 0 && [...f].every(g => g.classList.contains('js-plotly-plot')); }",
                               timeout=60_000)
        figures = page_figures(page)
        support.save_screenshot(page, "report", clip={"x": 0, "y": 0, "width": 1600, "height": 2300}, full_page=True)
        rows = page.evaluate("""() => [...document.querySelectorAll('table.results tbody tr')].map(r => ({
            run: r.dataset.run, cells: [...r.querySelectorAll('td')].map(c => c.textContent)}))""")
        assert browser.console_errors() == [] and browser.page_errors == [], (browser.console, browser.page_errors)
        assert browser.blocked == []
    # one figure of each kind per batching mode, each drawn by plotly
    assert sorted((f["mode"], f["kind"]) for f in figures) == sorted((m, k) for m in helpers.MODES for k in KINDS)
    assert all(f["drawn"] and f["svg"] for f in figures)
    by_key = {(f["mode"], f["kind"]): f for f in figures}
    for run, summary in summaries.items():
        mode = summary["mode"]
        avg_us, peak_mb, steps_us = summary["avg_step_time_us"], summary["peak_memory_mb"], summary["step_times_us"]
        bars = by_key[(mode, "step-time-memory")]
        time_bar = traces_of(bars, "avg_step_time_us")[run]
        assert time_bar["customdata"][0][0] == avg_us and time_bar["x"][0] == pytest.approx(avg_us / 1000, rel=1e-12)
        memory_bar = traces_of(bars, "peak_memory_mb")[run]
        assert memory_bar["x"][0] == peak_mb and memory_bar["y"] == [summary["implementation"]]
        point = traces_of(by_key[(mode, "time-vs-memory")], "avg_step_time_us,peak_memory_mb")[run]
        assert point["x"][0] == peak_mb and point["y"][0] == pytest.approx(avg_us / 1000, rel=1e-12)
        box = traces_of(by_key[(mode, "step-time-distribution")], "step_times_us")[run]
        assert box["customdata"] == steps_us and box["x"] == pytest.approx([t / 1000 for t in steps_us], rel=1e-12)
        # the memory line: values of the traces' [memory] events within the recorded steps
        line = traces_of(by_key[(mode, "memory-timeline")], "allocated_mb")[run]
        levels = set()
        inside_peak = 0.0
        for path in run_trace_paths(os.path.join(results, run)):
            parsed = parse_trace(path)
            start, end = parsed.steps[0].start_us, parsed.steps[-1].end_us
            cpu = [m for m in parsed.memory_samples if m.device == "cpu"]
            levels |= {m.total_allocated_bytes / MB for m in cpu}
            inside_peak = max([inside_peak] + [m.total_allocated_bytes / MB for m in cpu if start < m.time_us <= end])
        plotted = [y for y in line["y"] if y is not None]
        assert plotted and set(plotted) <= levels
        assert max(plotted) == pytest.approx(inside_peak, rel=1e-12) and max(plotted) <= peak_mb * (1 + 1e-12)
        # the table row: the numbers of summary.md, and the command that opens the trace offline
        row = next(r for r in rows if r["run"] == run)
        assert row["cells"][0] == summary["implementation"] and row["cells"][2] == "ok"
        assert int(row["cells"][3]) == round(avg_us) and float(row["cells"][7]) == pytest.approx(peak_mb, abs=0.005 + 1e-9)
        assert row["cells"][-1] == f".venv/bin/python view_trace.py {os.path.join(results, run)}"
    frontier = [t for f in figures if f["kind"] == "time-vs-memory" for t in f["data"]
                if (t.get("meta") or {}).get("quantity") == "frontier"]
    assert all(set(t["meta"]["runs"]) <= set(helpers.RUN_NAMES) for t in frontier)


def test_capacity_and_grid_results_in_the_folder_get_their_sections(results, tmp_path):
    """capacity.json and grid-*/grid.json, as benchmark_capacity.py and benchmark_grid.py write them."""
    import json

    from tlbench.report.html import report_html
    from tlbench.results.rows import load_results

    folder = helpers.copy_results(results, str(tmp_path / "log"), with_traces=False)
    os.makedirs(os.path.join(folder, "capacity"))
    capacity = {"header": ["Device: cpu; budget 1 GiB"], "rows": [
        {"implementation": "torchaudio", "mode": "batch-size", "budget_gb": 1.0, "largest_fitting": 12,
         "peak_memory_mb": 900.5, "first_not_fitting": 13, "reason": "", "probes": []},
        {"implementation": "k2_pruned", "mode": "max-frames", "budget_gb": 1.0, "largest_fitting": 4000,
         "peak_memory_mb": 700.25, "first_not_fitting": 4100, "reason": "", "probes": []}]}
    with open(os.path.join(folder, "capacity", "capacity.json"), "w", encoding="utf-8") as f:
        json.dump(capacity, f)
    os.makedirs(os.path.join(folder, "grid-torchaudio"))
    grid = {"implementation": "torchaudio", "label": "torchaudio 2.11.0", "device": "cpu",
            "spec": {"durations_s": [1.0, 2.0], "batch_sizes": [1, 4]},
            "cells": [{"duration_s": d, "batch_size": b, "status": "ok" if (d, b) != (2.0, 4) else "skipped",
                       "rtf": 0.01 * d * b, "peak_memory_gb": 0.001 * d * b} for d in (1.0, 2.0) for b in (1, 4)]}
    with open(os.path.join(folder, "grid-torchaudio", "grid.json"), "w", encoding="utf-8") as f:
        json.dump(grid, f)
    text = report_html(load_results(folder), "plotly.min.js", series={})
    figures = {m.group(1): json.loads(m.group(2).replace("<\\/", "</")) for m in re.finditer(
        r"<script type='application/json' id='(fig-[^']+)-data'>(.*?)</script>", text)}
    bars = [t for t in figures["fig-capacity-0"]["data"] if t["meta"]["quantity"] == "largest_fitting"]
    assert sorted((t["meta"]["implementation"], t["x"][0]) for t in bars) == [("k2_pruned", 4000), ("torchaudio", 12)]
    assert figures["fig-grid-0-rtf"]["data"][0]["z"] == [[0.01, 0.04], [0.02, None]]
    assert figures["fig-grid-0-peak_memory_gb"]["data"][0]["z"] == [[0.001, 0.004], [0.002, None]]
    assert "id='capacity'" in text and "id='grid'" in text and "skipped" in text
    shutil.rmtree(folder)


def test_colours_follow_the_implementation_names_not_the_order_of_the_rows():
    from tlbench.report.html import html_colours

    first = html_colours(["torchaudio", "k2_pruned", "warp_rnnt"])
    assert first == html_colours(["warp_rnnt", "torchaudio", "k2_pruned", "k2_pruned"])
    assert len(set(first.values())) == 3 and first["k2_pruned"] == "#1f77b4"  # tab20's first, alphabetical
    assert len(set(html_colours(f"impl{i}" for i in range(20)).values())) == 20
