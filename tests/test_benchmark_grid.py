"""benchmark_grid.py on CPU: a 2 x 2 grid through the command line, the triangle rule, OOM/ERR cells."""

import csv
import json
import os

import pytest
import torch
from conftest import run_script

from tlbench.data.batches import full_logits
from tlbench.implementations.declaration import Backend, LossImplementation
from tlbench.render.tables import grid_markdown
from tlbench.report.grid_report import write_outputs
from tlbench.tools.grid import GridSettings, GridSpec, is_skipped, run_grid, skipped_cells

GRID_YAML = """\
durations: [0.2, 0.4]
batch_sizes: [1, 2]
triangle_only: false
output_formats: [md, csv, json, latex]
"""


def markdown_tables(text):
    """{title: {(row label, column label): cell text}} of the '### title' tables in grid.md."""
    tables, title, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
            tables[title] = {}
        elif title and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            else:
                for column, value in zip(header[1:], cells[1:]):
                    tables[title][(cells[0], column)] = value
    return tables


@pytest.fixture(scope="module")
def cli_grid(tmp_path_factory):
    work = tmp_path_factory.mktemp("grid")
    config = work / "grid.yaml"
    config.write_text(GRID_YAML)
    process = run_script("benchmark_grid.py", [
        "--impl", "k2_pruned", "--config", str(config), "--device", "cpu", "--vocab-size", "16",
        "--encoder-out-dim", "24", "--tokens-per-frame", "0.25", "--out-dir", str(work / "log"),
        "--pic-dir", str(work / "pic")], timeout=300)
    return process, work


def test_cli_grid_writes_files_that_agree(cli_grid):
    process, work = cli_grid
    assert process.returncode == 0, process.stderr[-3000:]
    grid_dir = work / "log" / "grid-k2_pruned"
    for name in ("grid.md", "grid.csv", "grid.json", "grid.tex"):
        assert (grid_dir / name).is_file(), name
    for which in ("rtf", "memory"):
        assert (work / "pic" / f"grid-k2_pruned-{which}.png").stat().st_size > 1000
    assert not (grid_dir / "traces").exists()  # export_traces is off by default

    data = json.loads((grid_dir / "grid.json").read_text())
    rows = list(csv.DictReader(open(grid_dir / "grid.csv")))
    tables = markdown_tables((grid_dir / "grid.md").read_text())
    rtf_table = tables["real-time factor (compute time / audio time)"]
    memory_table = tables["peak memory (GB)"]
    assert data["spec"]["durations_s"] == [0.2, 0.4] and data["spec"]["batch_sizes"] == [1, 2]
    assert len(data["cells"]) == len(rows) == 4
    for cell, row in zip(data["cells"], rows):
        d, b = cell["duration_s"], cell["batch_size"]
        assert cell["status"] == "ok", cell["reason"]
        # T = d * 100 / 4, U = round(0.25 * T)
        assert (cell["T"], cell["U"]) == ({0.2: 5, 0.4: 10}[d], {0.2: 1, 0.4: 3}[d])
        # raw samples -> derived: two recorded steps of b utterances of d seconds
        assert len(cell["step_times_us"]) == 2
        assert cell["audio_s"] == pytest.approx(2 * b * d)
        assert cell["rtf"] == pytest.approx(sum(cell["step_times_us"]) / 1e6 / (2 * b * d))
        assert 0 < cell["peak_memory_gb"] < 1
        # csv == json exactly, md == json to its printed precision
        assert float(row["duration_s"]) == d and int(row["batch_size"]) == b and row["status"] == "ok"
        assert float(row["rtf"]) == cell["rtf"] and float(row["peak_memory_gb"]) == cell["peak_memory_gb"]
        assert float(rtf_table[(f"{d:g} s", str(b))]) == pytest.approx(cell["rtf"], rel=6e-3)
        assert float(memory_table[(f"{d:g} s", str(b))]) == pytest.approx(cell["peak_memory_gb"], rel=6e-3)
    # what was printed is the markdown file
    assert (grid_dir / "grid.md").read_text().strip() in process.stdout


def test_triangle_rule_on_a_5_by_3_grid():
    # (d + b) >= (5 + 3) / 2 = 4 with d > 0 and b > 0, indices from 0
    expected = {(2, 2), (3, 1), (3, 2), (4, 1), (4, 2)}
    assert skipped_cells(5, 3) == expected
    for d in range(5):
        for b in range(3):
            assert is_skipped(d, b, 5, 3) == ((d, b) in expected)
    # the first row and the first column always run
    assert not any(is_skipped(0, b, 5, 3) or is_skipped(d, 0, 5, 3) for d in range(5) for b in range(3))


def _failing_double():
    """A loss that runs out of memory on (0.2 s, batch 1) and fails otherwise on (0.4 s, batch 2)."""

    def loss(backend, logits, batch, joiner):
        t, n = batch.shapes[0][0], len(batch.shapes)
        if (t, n) == (5, 1):
            raise torch.OutOfMemoryError("CUDA out of memory. test double")
        if (t, n) == (10, 2):
            raise RuntimeError("test double: something else broke")
        value = logits.logsumexp(dim=-1).sum()
        return value, value

    return LossImplementation(name="oom_double", load_backend=lambda: Backend("oom_double", "0"),
                              prepare=lambda backend, batch, joiner: full_logits(batch, joiner), loss=loss)


def test_oom_and_error_cells_are_recorded_and_the_grid_goes_on(tmp_path):
    spec = GridSpec(durations_s=(0.2, 0.4), batch_sizes=(1, 2), triangle_only=False,
                    output_formats=("md", "csv", "json"))
    settings = GridSettings(device="cpu", vocab_size=8, encoder_out_dim=8, tokens_per_frame=0.25,
                            out_dir=str(tmp_path / "log"), pic_dir=str(tmp_path / "pic"))
    result = run_grid(_failing_double(), spec, settings)
    statuses = {(c.duration_s, c.batch_size): c.status for c in result.cells}
    assert statuses == {(0.2, 1): "oom", (0.2, 2): "ok", (0.4, 1): "ok", (0.4, 2): "error"}
    written = write_outputs(result)
    data = json.loads(open(written["json"]).read())
    by_cell = {(c["duration_s"], c["batch_size"]): c for c in data["cells"]}
    assert "test double" in by_cell[(0.2, 1)]["reason"] and by_cell[(0.2, 1)]["rtf"] is None
    assert "something else broke" in by_cell[(0.4, 2)]["reason"]
    for key in ((0.2, 2), (0.4, 1)):
        assert by_cell[key]["rtf"] > 0 and by_cell[key]["peak_memory_gb"] > 0
    tables = markdown_tables(open(written["md"]).read())
    for table in tables.values():
        assert table[("0.2 s", "1")] == "OOM" and table[("0.4 s", "2")] == "ERR"
    assert os.path.getsize(written["heatmap_rtf"]) > 1000


def test_triangle_only_cells_are_na_and_not_run(tmp_path):
    calls = []

    def loss(backend, logits, batch, joiner):
        calls.append(len(batch.shapes))
        value = logits.sum()
        return value, value

    impl = LossImplementation(name="counting", load_backend=lambda: Backend("counting", "0"),
                              prepare=lambda backend, batch, joiner: full_logits(batch, joiner), loss=loss)
    spec = GridSpec(durations_s=(0.04, 0.08), batch_sizes=(1, 2), triangle_only=True, output_formats=("md",))
    settings = GridSettings(device="cpu", vocab_size=4, encoder_out_dim=4, tokens_per_frame=1.0,
                            out_dir=str(tmp_path / "log"), pic_dir=str(tmp_path / "pic"))
    result = run_grid(impl, spec, settings)
    assert [c.status for c in result.cells] == ["ok", "ok", "ok", "skipped"]  # (1, 1): 2 >= (2 + 2) / 2
    assert len(calls) == 3 * 6  # six steps per cell that runs
    assert markdown_tables(grid_markdown(result))["peak memory (GB)"][("0.08 s", "2")] == "N/A"


def test_bad_grid_input_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("durations: [1, -2]\n")
    process = run_script("benchmark_grid.py", ["--impl", "k2_pruned", "--config", str(bad), "--tokens-per-frame", "0.2",
                                               "--device", "cpu", "--out-dir", str(tmp_path / "log")], timeout=60)
    assert process.returncode == 2 and process.stderr.strip().splitlines() == [
        "error: duration -2 is not allowed; durations are seconds > 0"]
