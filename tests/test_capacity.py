"""benchmark_capacity.py on CPU with a small budget: real probe processes of the suite's step."""

import json
import os

import pytest
import torch
from conftest import REPO_DIR, run_script

EXTRA = os.path.join(REPO_DIR, "tests", "extra_loss.py")
BUDGET_GB = 0.02  # 20.48 MiB: a few utterances of this table for torchaudio, more for k2_pruned
FLAGS = ["--vocab-size", "64", "--encoder-out-dim", "64", "--device", "cpu", "--memory-budget-gb", str(BUDGET_GB)]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(60, 150, (24,), generator=gen)
    u = (t.float() * 0.2).round().int()
    path = tmp_path_factory.mktemp("capacity") / "shapes.pt"
    torch.save(torch.stack([t.int(), u], 1), path)
    return str(path)


@pytest.fixture(scope="module")
def capacity(table, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("capacity-log")
    process = run_script("benchmark_capacity.py", [*FLAGS, "--only", "torchaudio,k2_pruned", "--mode", "batch-size",
                                                   "--shape-info", table, "--out-dir", str(out_dir),
                                                   "--max-probes", "10"], timeout=900)
    return process, out_dir


def test_largest_fitting_fits_and_the_next_size_does_not(capacity):
    process, out_dir = capacity
    assert process.returncode == 0, process.stderr[-3000:]
    for name in ("capacity.md", "capacity.csv", "capacity.json", "capacity.png"):
        assert (out_dir / name).is_file(), name
    rows = json.loads((out_dir / "capacity.json").read_text())["rows"]
    assert {(r["implementation"], r["mode"]) for r in rows} == {("torchaudio", "batch-size"), ("k2_pruned", "batch-size")}
    budget_mb = BUDGET_GB * 1024
    for row in rows:
        for key in ("implementation", "mode", "budget_gb", "largest_fitting", "peak_memory_mb", "frames_per_s",
                    "utterances_per_s", "first_not_fitting", "reason"):
            assert key in row, key
        largest, first_miss = row["largest_fitting"], row["first_not_fitting"]
        assert largest is not None and first_miss == largest + 1, row
        probes = {p["size"]: p for p in row["probes"]}
        assert probes[largest]["fits"] and probes[largest]["peak_memory_mb"] <= budget_mb
        assert row["peak_memory_mb"] == probes[largest]["peak_memory_mb"] <= budget_mb
        assert not probes[first_miss]["fits"] and probes[first_miss]["peak_memory_mb"] > budget_mb
        assert row["frames_per_s"] > 0 and row["utterances_per_s"] > 0
        # the probe of the largest size ran exactly the batch it names, from its own run folder
        summary_dirs = os.listdir(probes[largest]["run_dir"])
        (run,) = [d for d in summary_dirs if os.path.isdir(os.path.join(probes[largest]["run_dir"], d))]
        summary = json.load(open(os.path.join(probes[largest]["run_dir"], run, "summary.json")))
        assert summary["measured_batches"][0]["num_utterances"] == largest
        assert summary["measured_batches"][0]["T_max"] == probes[largest]["T_max"]
    by_name = {r["implementation"]: r for r in rows}
    assert by_name["k2_pruned"]["largest_fitting"] > by_name["torchaudio"]["largest_fitting"]  # pruning saves memory
    markdown = (out_dir / "capacity.md").read_text()
    assert "| torchaudio | batch-size | 0.02 |" in markdown and "Budget (GiB)" in markdown
    assert "largest padded lattice" in markdown


def test_a_crashing_probe_is_recorded_and_the_search_goes_on(table, tmp_path):
    process = run_script("benchmark_capacity.py", [*FLAGS, "--impl", f"{EXTRA}:CRASHES_FROM_THREE", "--mode",
                                                   "batch-size", "--shape-info", table, "--out-dir", str(tmp_path)],
                         timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    (row,) = json.loads((tmp_path / "capacity.json").read_text())["rows"]
    statuses = {p["size"]: (p["fits"], p["status"]) for p in row["probes"]}
    assert statuses[1] == (True, "ok") and statuses[2] == (True, "ok") and statuses[4] == (False, "error")
    assert statuses[3] == (False, "error")  # the bisection went on after the crash
    assert row["largest_fitting"] == 2 and row["first_not_fitting"] == 3
    assert "exited with code 139" in row["reason"]


@pytest.mark.parametrize("flags, message", [
    (["--memory-budget-gb", "0"], "--memory-budget-gb 0.0 is not allowed; it must be > 0"),
    (["--memory-budget-gb", "-1"], "--memory-budget-gb -1.0 is not allowed"),
    (["--memory-budget-gb", "100000"], "is more than this machine's"),
    ([], "--memory-budget-gb is required on CPU"),
    (["--memory-budget-gb", "1", "--only", "nonsense"], "--only 'nonsense' is not a built-in implementation"),
    (["--memory-budget-gb", "1", "--mode", "sideways"], "--mode 'sideways' is not allowed"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, table, tmp_path):
    process = run_script("benchmark_capacity.py", ["--device", "cpu", "--shape-info", table, "--out-dir",
                                                   str(tmp_path / "out"), *flags])
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1 and message in lines[0], lines
