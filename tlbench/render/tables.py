"""Text renderings: the suite's report and comparison (markdown, CSV), and the tables printed
by the other tools. Each function takes the tool's result dataclasses and returns a string."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict
from typing import List, Optional, Sequence, Tuple

from tlbench.core.status import Status
from tlbench.data.shape_table import FRAMES_PER_SECOND
from tlbench.results.comparison import Comparison
from tlbench.results.rows import mode_sort_key, mode_title, sorted_for_table, takeaways
from tlbench.tools.capacity import CapacityRow

__all__ = ["CELL_MARKS", "calibration_table", "capacity_csv", "capacity_markdown", "comparison_markdown", "csv_text",
           "devices", "fmt", "grid_csv", "grid_latex", "grid_markdown", "grid_memory_cell",
           "grid_rtf_cell", "grid_titles", "loss_only_table", "markdown_table", "plain_table",
           "report_markdown", "rows_csv", "verify_table"]


def fmt(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one character per column, ``l`` or ``r``."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in (align or "l" * len(header)))
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], pad_last: bool = False) -> str:
    """Columns padded to their widest cell, ``" | "`` between them; the last column unpadded
    unless ``pad_last`` (it is usually a free-text verdict)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    if not pad_last:
        widths[-1] = len(header[-1])
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(out)


def csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def devices(summaries) -> List[str]:
    """``cpu: <model> (2 cores)`` lines of the summaries' devices, each once."""
    return sorted({f"{s.device}: {s.device_name}" if s.device_name else str(s.device) for s in summaries if s.device})


def _status_cell(row) -> str:
    status = row.status if row.status == Status.OK else f"{row.status}: {row.reason or ''}".strip()
    return " ".join(status.replace("|", "/").split())


def report_markdown(results, pictures=None, link_base: Optional[str] = None) -> str:
    """The suite's report (``summary.md``) of a :class:`tlbench.results.rows.Results`; ``pictures``
    are embedded by paths relative to ``link_base`` (default: the results folder)."""
    summaries = results.readable
    rows = results.rows
    out = io.StringIO()
    out.write("# Transducer loss benchmark\n\n")
    torch_versions = sorted({s.torch_version for s in summaries if s.torch_version})
    # every library once: a row computed by two ("nemo 3.0.0, k2 1.24.4") names both
    backends = sorted({part for r in rows if r.backend not in ("-", "?") for part in r.backend.split(", ")})
    presets = sorted({f"{s.preset} ({s.preset_reason})" for s in summaries if s.preset})
    dates = sorted({s.created_at for s in summaries if s.created_at})
    out.write(f"- Device: {'; '.join(devices(summaries)) or 'unknown'}\n")
    out.write(f"- torch: {', '.join(torch_versions) or 'unknown'}; backends: {', '.join(backends) or 'none'}\n")
    out.write(f"- Preset: {'; '.join(presets) or 'unknown'}\n")
    if dates:
        out.write(f"- Runs: {dates[0]} to {dates[-1]} (UTC)\n")
    out.write("- Step = random data + joiner + loss + backward + zero grads; loss time = the loss call and its "
              "backward (record_function region); peak memory = max allocated bytes in the profiler's memory events.\n")
    for mode in sorted({r.mode for r in rows}, key=mode_sort_key):
        mode_rows = [r for r in rows if r.mode == mode]
        out.write(f"\n## {mode_title(mode)}\n\n")
        table = [[r.name, r.backend, fmt(r.avg_step_time_us), fmt(r.loss_time_us), fmt(r.peak_memory_mb, 1),
                  _status_cell(r)] for r in sorted_for_table(mode_rows)]
        out.write(markdown_table(["Name", "Backend", "Average step time (us)", "Loss time (us)",
                                  "Peak memory usage (MB)", "Status"], table, "llrrrl") + "\n")
        out.write("\nTake-aways:\n")
        for line in takeaways(mode_rows):
            out.write(f"- {line}\n")
        mode_pictures = [p for p in pictures or [] if p.mode == mode]
        if mode_pictures:
            out.write("\n")
            for picture in mode_pictures:
                link = os.path.relpath(picture.path, link_base or results.results_dir).replace(os.sep, "/")
                out.write(f"![{picture.title}]({link})\n\n")
    if results.problems:
        out.write("\n## Problems\n\n")
        for problem in results.problems:
            out.write(f"- {problem}\n")
    return out.getvalue()


def rows_csv(rows) -> str:
    """``summary.csv``: every field of every report row."""
    if not rows:
        return ""
    fields = list(asdict(rows[0]).keys())
    return csv_text(fields, [[asdict(r)[f] for f in fields] for r in rows])


def comparison_markdown(comparison: Comparison) -> str:
    """``comparison.md``: step time and peak memory of two result sets side by side."""
    matched, only_here, only_other, problems = (comparison.matched, comparison.only_here, comparison.only_other,
                                                comparison.problems)

    def cell(value: Optional[float], status: str, digits: int) -> str:
        return fmt(value, digits) if value is not None else (status if status != Status.OK else "-")

    out = io.StringIO()
    out.write("# Transducer loss benchmark: comparison\n\n")
    for label, results in (("Here", comparison.here), ("Other", comparison.other)):
        summaries = results.readable
        torch_versions = sorted({s.torch_version for s in summaries if s.torch_version})
        out.write(f"- {label}: `{os.path.abspath(results.results_dir)}`; device "
                  f"{'; '.join(devices(summaries)) or 'unknown'}; torch {', '.join(torch_versions) or 'unknown'}\n")
    out.write("- Ratio = here / other: below 1 means here is faster (step time) or leaner (peak memory).\n\n")
    table = [[r.name, r.mode, cell(r.step_time_here_us, r.status_here, 0),
              cell(r.step_time_other_us, r.status_other, 0), fmt(r.step_time_ratio, 2),
              cell(r.peak_memory_here_mb, r.status_here, 1),
              cell(r.peak_memory_other_mb, r.status_other, 1), fmt(r.peak_memory_ratio, 2)] for r in matched]
    if not table:
        table = [["(no implementation and mode in common)", "", "", "", "", "", "", ""]]
    out.write(markdown_table(["Name", "Mode", "Step time here (us)", "Step time other (us)", "Step time ratio",
                              "Peak memory here (MB)", "Peak memory other (MB)", "Peak memory ratio"], table,
                             "llrrrrrr") + "\n")
    if only_here or only_other:
        out.write("\n## Unmatched\n\n")
        for line in only_here:
            out.write(f"- only here: {line}\n")
        for line in only_other:
            out.write(f"- only in other: {line}\n")
    if problems:
        out.write("\n## Problems\n\n")
        for problem in problems:
            out.write(f"- {problem}\n")
    return out.getvalue()


def _format_error(value: Optional[float], how: Optional[str] = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2g}" if math.isfinite(value) else str(value)
    return f"{text} (sum)" if how == "sum" else text


def verify_table(rows) -> str:
    """``verify_losses.py``'s table: one line per :class:`tlbench.tools.verify.Row`."""
    header = ("implementation", "variant", "problem", "device", "dtype", "loss rel. err", "grad rel. err", "verdict")
    lines = [(r.implementation, r.variant, r.problem, r.device, r.dtype, _format_error(r.loss_rel_err, r.loss_compared),
              _format_error(r.grad_rel_err), r.verdict) for r in rows]
    return plain_table(header, lines)



def loss_only_table(rows) -> str:
    """``benchmark_loss_only.py``'s markdown table of :class:`tlbench.tools.loss_only.LossOnlyMeasurement` rows."""
    base = next((r.median_s for r in rows if r.implementation == "torchaudio" and r.median_s), None)
    lines = []
    for r in rows:
        name = r.library if "(" in r.library else r.implementation  # "k2 (fast_rnnt 1.3)" names what ran
        if r.variant:
            name += f", {r.variant}"
        if r.status != Status.OK or r.median_s is None:
            lines.append([name, r.layout, f"{r.status}: {r.reason}".replace("|", "/"), "", "", "", ""])
            continue
        lines.append([name, r.layout, f"{r.median_s:.3f}", f"{r.median_s / base:.3f}x" if base else "n/a",
                      f"{r.extra_mb:.1f}", f"{r.extra_bytes / r.logits_bytes:.3f}x", f"{r.loss_value:.4f}"])
    return markdown_table(["implementation", "layout", "median time (s)", "time vs torchaudio", "extra memory (MB)",
                           "extra memory / logits size", "loss value"], lines)


# How a grid cell that has no value is shown.
CELL_MARKS = {Status.SKIPPED: "N/A", Status.OOM: "OOM", Status.ERROR: "ERR", Status.UNAVAILABLE: "unavailable",
              Status.UNSUPPORTED: "unsupported"}


def grid_rtf_cell(cell, device: str) -> str:
    if cell.status != Status.OK:
        return CELL_MARKS.get(cell.status, cell.status.upper())
    if device == "cuda":
        return f"{cell.rtf_cpu:.2E} + {cell.rtf_cuda:.2E}"
    return f"{cell.rtf:.2E}"


def grid_memory_cell(cell) -> str:
    if cell.status != Status.OK:
        return CELL_MARKS.get(cell.status, cell.status.upper())
    return f"{cell.peak_memory_gb:.3g}"


def _grid_rows(result, formatter) -> List[List[str]]:
    rows = []
    for i, duration_s in enumerate(result.spec.durations_s):
        rows.append([f"{duration_s:g} s"] + [formatter(result.cell(i, j)) for j in range(len(result.spec.batch_sizes))])
    return rows


def grid_titles(result) -> Tuple[str, str]:
    rtf = ("real-time factor, CPU + CUDA (compute time / audio time)" if result.settings.device == "cuda"
           else "real-time factor (compute time / audio time)")
    return rtf, "peak memory (GB)"


def grid_markdown(result) -> str:
    """Both tables (durations as rows, batch sizes as columns) with a header saying what ran."""
    settings = result.settings
    lines = [f"## {result.label} on {settings.device} ({result.device_name})", "",
             f"T = duration x {FRAMES_PER_SECOND} / {settings.subsampling_factor}, U = round({settings.tokens_per_frame:.4f}"
             f" x T) ({settings.tokens_per_frame_source}), V = {settings.vocab_size}, C = {settings.encoder_out_dim}; "
             f"6 steps per cell, the last 2 recorded"
             + ("; N/A: skipped by --triangle-only" if result.spec.triangle_only else ""), ""]
    if result.status == Status.UNAVAILABLE:
        return "\n".join(lines + [f"unavailable: {result.reason}", ""])
    header = ["duration \\ batch size"] + [str(b) for b in result.spec.batch_sizes]
    for title, formatter in zip(grid_titles(result), (lambda c: grid_rtf_cell(c, settings.device), grid_memory_cell)):
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in _grid_rows(result, formatter)]
        lines.append("")
    failures = [c for c in result.cells if c.status in (Status.ERROR, Status.OOM)]
    for cell in failures:
        lines.append(f"- {CELL_MARKS[cell.status]} at {cell.duration_s:g} s x {cell.batch_size}: {cell.reason}")
    return "\n".join(lines + ([""] if failures else []))


GRID_CSV_COLUMNS = ["implementation", "label", "device", "duration_s", "batch_size", "T", "U", "status", "rtf", "rtf_cpu",
               "rtf_cuda", "peak_memory_gb", "audio_s", "num_recorded_steps", "reason"]


def grid_csv(result) -> str:
    rows = []
    for cell in result.cells:
        values = {"implementation": result.implementation, "label": result.label, "device": result.settings.device,
                  "num_recorded_steps": len(cell.step_times_us), **cell.to_dict()}
        rows.append([values[c] for c in GRID_CSV_COLUMNS])
    return csv_text(GRID_CSV_COLUMNS, rows)


def _latex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def grid_latex(result) -> str:
    blocks = [f"% {result.label} on {result.settings.device} ({result.device_name})"]
    if result.status == Status.UNAVAILABLE:
        return blocks[0] + f"\n% unavailable: {result.reason}\n"
    for title, formatter in zip(grid_titles(result), (lambda c: grid_rtf_cell(c, result.settings.device), grid_memory_cell)):
        columns = "l" + "r" * len(result.spec.batch_sizes)
        lines = ["\\begin{table}[h]", "\\centering", f"\\caption{{{_latex_escape(result.label)}: {_latex_escape(title)}}}",
                 f"\\begin{{tabular}}{{{columns}}}", "\\hline",
                 "duration & " + " & ".join(f"$b={b}$" for b in result.spec.batch_sizes) + " \\\\", "\\hline"]
        lines += [" & ".join(_latex_escape(v) for v in row) + " \\\\" for row in _grid_rows(result, formatter)]
        lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"




def _calibration_number(value) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def calibration_table(checks) -> str:
    """``generate_shape_info.py``'s calibration checks (:class:`tlbench.data.manifests.CalibrationCheck`)
    as an aligned table, one line each, and a closing pass count."""
    lines = [f"{'check':<34} {'value':>10} {'reference':>14} {'tolerance':>13}  result"]
    for check in checks:
        if isinstance(check.target, tuple):
            target = f"[{check.target[0]}, {check.target[1]}]"
        else:
            target = _calibration_number(check.target)
        verdict = "pass" if check.ok else "FAIL"
        lines.append(f"{check.name:<34} {_calibration_number(check.value):>10} {target:>14} {check.tolerance:>13}  {verdict}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} of {len(checks)} checks pass" + (f"; {failed} FAIL" if failed else ""))
    return "\n".join(lines)


def capacity_markdown(rows, header_lines: Sequence[str]) -> str:
    """``capacity.md``: one row per implementation and mode (:class:`tlbench.tools.capacity.CapacityRow`)."""
    lines = [[r.implementation, r.mode, f"{r.budget_gb:g}", "-" if r.largest_fitting is None else str(r.largest_fitting),
              fmt(r.peak_memory_mb, 1), fmt(r.frames_per_s), fmt(r.utterances_per_s, 1),
              "-" if r.first_not_fitting is None else str(r.first_not_fitting), r.probed_batch or "-",
              " ".join((r.reason or "").replace("|", "/").split())] for r in rows]
    table = markdown_table(["Name", "Mode", "Budget (GiB)", "Largest fitting", "Peak memory there (MB)", "Frames/s there",
                            "Utterances/s there", "First not fitting", "Probed batch (at the largest fitting)",
                            "Why the search stopped"], lines, "llrrrrrrll")
    return "\n".join(["# How big a batch fits", "", *[f"- {line}" for line in header_lines], "", table, ""])


def capacity_csv(rows) -> str:
    columns = list(CapacityRow.CSV_COLUMNS)
    return csv_text(columns, [[getattr(r, c) for c in columns] for r in rows])
