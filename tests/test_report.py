"""report.py on a tiny results folder: tables equal summary.json, pictures, failures, --compare."""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402

REPO_DIR = helpers.REPO_DIR
import report  # noqa: E402  (helpers_results put the repository on sys.path)
import tlbench.results.rows as results_module  # noqa: E402
from tlbench.report import suite_report  # noqa: E402

PICTURE_KINDS = ("step-time-memory", "time-vs-memory", "memory-timeline", "step-time-distribution")
MIN_PICTURE_BYTES = 15_000
MIN_DPI = 100


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def report_dir(results, tmp_path_factory):
    """A copy of the shared results with the report written into it (pictures in <copy>/pic)."""
    folder = helpers.copy_results(results, str(tmp_path_factory.mktemp("report") / "log"))
    markdown = report.write_report(folder)
    return folder, markdown


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO_DIR, "report.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO_DIR)


def markdown_tables(markdown: str) -> dict:
    """``{section heading: [row dict by column name]}`` of every markdown table."""
    tables, heading, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading, header = line[3:].strip(), None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(c) <= set("-:") for c in cells):
                tables.setdefault(heading, []).append(dict(zip(header, cells)))
        else:
            header = None
    return tables


def png_info(path: str) -> dict:
    """Width, height and dots per inch (from the pHYs chunk) of a PNG, read from its bytes."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    info, offset = {"bytes": len(data)}, 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        elif kind == b"pHYs":
            per_x, per_y, unit = struct.unpack(">IIB", body)
            if unit == 1:  # pixels per metre
                info["dpi"] = per_x * 0.0254
        elif kind == b"IEND":
            break
        offset += 12 + length
    return info


def section_of(mode: str) -> str:
    return results_module.mode_title(mode)


def test_tables_equal_the_summaries(results, report_dir):
    folder, markdown = report_dir
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        assert f.read() == markdown
    tables = markdown_tables(markdown)
    assert "cpu" in markdown and "torch: " in markdown and "Preset: quick" in markdown
    for mode in helpers.MODES:
        rows = tables[section_of(mode)]
        assert sorted(r["Name"] for r in rows) == sorted(helpers.IMPLEMENTATIONS)
        for row in rows:
            summary = helpers.load_summary(folder, f"{row['Name']}-{mode}")
            assert int(row["Average step time (us)"]) == round(summary["avg_step_time_us"])
            assert int(row["Loss time (us)"]) == round(summary["loss_time_us"])
            assert float(row["Peak memory usage (MB)"]) == pytest.approx(summary["peak_memory_mb"], abs=0.05 + 1e-9)
            assert row["Status"] == "ok"
            assert row["Backend"].startswith(summary["backend"])
        times = [int(r["Average step time (us)"]) for r in rows]
        assert times == sorted(times)  # fastest first
    assert markdown.count("Take-aways:") == len(helpers.MODES)
    assert "## Problems" not in markdown


def test_csv_and_json_have_the_same_rows(report_dir):
    folder, _ = report_dir
    with open(os.path.join(folder, "summary.csv"), encoding="utf-8", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        data = json.load(f)
    json_rows = data["rows"]
    assert len(csv_rows) == len(json_rows) == len(helpers.RUN_NAMES)
    for csv_row, json_row in zip(csv_rows, json_rows):
        assert list(csv_row) == list(json_row)
        for key, value in json_row.items():
            if isinstance(value, float):
                assert float(csv_row[key]) == pytest.approx(value, rel=1e-12)
            else:
                assert csv_row[key] == ("" if value is None else str(value))
    assert data["problems"] == []


def test_every_picture_is_drawn_and_embedded(report_dir):
    folder, markdown = report_dir
    pic_dir = os.path.join(folder, "pic")
    expected = {f"{kind}-{mode}.png" for kind in PICTURE_KINDS for mode in helpers.MODES}
    assert set(os.listdir(pic_dir)) == expected  # and no temporary file left behind
    links = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", markdown)
    assert {os.path.normpath(os.path.join(folder, link)) for _, link in links} == \
        {os.path.join(pic_dir, name) for name in expected}
    for title, link in links:
        assert not os.path.isabs(link)
        mode = next(m for m in helpers.MODES if link.endswith(f"-{m}.png"))
        assert section_of(mode) in title
    for name in sorted(expected):
        info = png_info(os.path.join(pic_dir, name))
        assert info["bytes"] > MIN_PICTURE_BYTES, (name, info)
        assert info["width"] >= 1000 and info["height"] >= 300, (name, info)
        assert info.get("dpi", 0) >= MIN_DPI - 0.5, (name, info)
    # matplotlib reads it back as an image of that size
    import matplotlib.image

    image = matplotlib.image.imread(os.path.join(pic_dir, f"memory-timeline-{helpers.MODES[0]}.png"))
    assert image.ndim == 3 and image.shape[0] >= 400 and image.std() > 0.01  # not a blank canvas
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        listed = json.load(f)["pictures"]
    assert {os.path.basename(p["path"]) for p in listed} == expected


def test_default_picture_folder_is_inside_the_results():
    # A run never rewrites the README's pictures in pic/: those are refreshed with --pic-dir pic.
    assert suite_report.default_pic_dir(os.path.join(REPO_DIR, "log")) == os.path.join(REPO_DIR, "log", "pic")
    assert suite_report.default_pic_dir("/somewhere/results") == "/somewhere/results/pic"


def test_failed_and_corrupt_runs_are_shown_and_named(results, tmp_path):
    folder = helpers.copy_results(results, str(tmp_path / "log"))
    oom_run = f"torchaudio-{helpers.MODES[0]}"
    corrupt_run = f"k2_pruned-{helpers.MODES[1]}"
    reason = "out of memory at step 1 on a batch of 30 utterances, T_max=1600, U_max=300"
    helpers.edit_summary(folder, oom_run, status="oom", reason=reason, avg_step_time_us=None, loss_time_us=None,
                         peak_memory_mb=None, step_times_us=[], loss_times_us=[])
    corrupt_path = os.path.join(folder, corrupt_run, "summary.json")
    with open(corrupt_path, encoding="utf-8") as f:
        text = f.read()
    with open(corrupt_path, "w", encoding="utf-8") as f:
        f.write(text[:len(text) // 2])
    pic_dir = str(tmp_path / "pictures")

    process = run_report(folder, "--pic-dir", pic_dir)
    assert process.returncode == 0, process.stderr
    markdown = process.stdout
    tables = markdown_tables(markdown)
    first = {r["Name"]: r for r in tables[section_of(helpers.MODES[0])]}
    second = {r["Name"]: r for r in tables[section_of(helpers.MODES[1])]}
    assert first["torchaudio"]["Status"] == f"oom: {reason}"
    assert first["torchaudio"]["Average step time (us)"] == "-"
    assert second["k2_pruned"]["Status"].startswith("corrupt: unreadable summary.json")
    assert f"{corrupt_run}/summary.json" in markdown.split("## Problems", 1)[1]
    assert "not measured: torchaudio (oom)" in markdown and "not measured: k2_pruned (corrupt)" in markdown
    # the other rows are intact
    for name, mode, table in (("k2_pruned", helpers.MODES[0], first), ("torchaudio", helpers.MODES[1], second)):
        summary = helpers.load_summary(folder, f"{name}-{mode}")
        assert table[name]["Status"] == "ok"
        assert int(table[name]["Average step time (us)"]) == round(summary["avg_step_time_us"])
    # every picture is still drawn, into --pic-dir, and linked relative to the results folder
    assert len([n for n in os.listdir(pic_dir) if n.endswith(".png")]) == len(PICTURE_KINDS) * len(helpers.MODES)
    assert "](../pictures/step-time-memory-1.png)" in markdown
    assert not os.path.exists(os.path.join(folder, "pic"))


@pytest.mark.parametrize("content, first_bad", [
    ({"status": "ok", "avg_step_time_us": "fast"}, "field 'implementation' is missing"),
    ({"implementation": "torchaudio", "label": "torchaudio", "status": "ok", "avg_step_time_us": "fast"},
     "field 'avg_step_time_us' is \"fast\", not a number or null"),
    ({"implementation": "torchaudio", "label": "torchaudio", "status": "ok", "avg_step_time_us": 5.0},
     "field 'step_times_us' is missing"),
])
def test_a_summary_with_missing_or_mistyped_fields_is_unreadable_and_never_drawn(results, tmp_path, content,
                                                                                 first_bad):
    folder = helpers.copy_results(results, str(tmp_path / "log"), with_traces=False)
    os.makedirs(os.path.join(folder, "odd-run"))
    with open(os.path.join(folder, "odd-run", "summary.json"), "w", encoding="utf-8") as f:
        json.dump(content, f)
    process = run_report(folder, "--no-pictures")
    assert process.returncode == 0, process.stderr
    problems = process.stdout.split("## Problems", 1)[1]
    assert f"odd-run/summary.json: unreadable ({first_bad}" in problems
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    odd = [r for r in rows if r["run_dir"].endswith("odd-run")]
    assert [r["status"] for r in odd] == ["corrupt"] and odd[0]["avg_step_time_us"] is None
    assert "?" not in {r["name"] for r in rows}


def test_compare_gives_ratios(results, tmp_path):
    here = helpers.copy_results(results, str(tmp_path / "here"), with_traces=False)
    other = helpers.copy_results(results, str(tmp_path / "other"), with_traces=False)
    for run in helpers.RUN_NAMES:
        summary = helpers.load_summary(other, run)
        helpers.edit_summary(other, run, avg_step_time_us=summary["avg_step_time_us"] * 2,
                             device_name="Another CPU (64 cores)")
    # a run that only the other side has
    os.rename(os.path.join(other, f"k2_pruned-{helpers.MODES[1]}"), os.path.join(other, "k2-7"))
    helpers.edit_summary(other, "k2-7", implementation="k2", mode="7")

    process = run_report(here, "--compare", other, "--no-pictures")
    assert process.returncode == 0, process.stderr
    with open(os.path.join(here, "comparison.md"), encoding="utf-8") as f:
        comparison = f.read()
    assert comparison in process.stdout
    assert "Another CPU (64 cores)" in comparison and "torch 2." in comparison
    rows = markdown_tables(comparison)[None]
    assert {(r["Name"], r["Mode"]) for r in rows} == \
        {(name, mode) for name in helpers.IMPLEMENTATIONS for mode in helpers.MODES} - {("k2_pruned", helpers.MODES[1])}
    for row in rows:
        assert float(row["Step time ratio"]) == pytest.approx(0.5)
        assert float(row["Peak memory ratio"]) == pytest.approx(1.0)
        here_summary = helpers.load_summary(here, f"{row['Name']}-{row['Mode']}")
        assert int(row["Step time here (us)"]) == round(here_summary["avg_step_time_us"])
        assert int(row["Step time other (us)"]) == round(2 * here_summary["avg_step_time_us"])
    unmatched = comparison.split("## Unmatched", 1)[1]
    assert "only here: k2_pruned (max frames 40 (sorted utterances), ok)" in unmatched
    assert "only in other: k2 (batch size 7, ok)" in unmatched
    with open(os.path.join(here, "comparison.json"), encoding="utf-8") as f:
        data = json.load(f)
    assert len(data["rows"]) == len(rows)
    assert all(r["step_time_ratio"] == pytest.approx(0.5, rel=1e-12) for r in data["rows"])
    # and the other way round
    markdown = suite_report.write_comparison(other, here)
    with open(os.path.join(other, "comparison.json"), encoding="utf-8") as f:
        reverse = json.load(f)
    assert all(r["step_time_ratio"] == pytest.approx(2.0, rel=1e-12) for r in reverse["rows"])
    assert all(float(r["Step time ratio"]) == 2.0 for r in markdown_tables(markdown)[None])


@pytest.mark.parametrize("args", [["{missing}"], ["{results}", "--compare", "{missing}"]])
def test_missing_folder_is_a_one_line_usage_error(results, tmp_path, args):
    missing = str(tmp_path / "no-such-results")
    process = run_report(*[a.format(missing=missing, results=results) for a in args], "--no-pictures")
    assert process.returncode == 2
    assert process.stdout == ""
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no-such-results" in lines[0], process.stderr
    assert "Traceback" not in process.stderr


def test_empty_folder_is_a_usage_error(tmp_path):
    process = run_report(str(tmp_path), "--no-pictures")
    assert process.returncode == 2 and process.stderr.startswith("error: ") and "Traceback" not in process.stderr
