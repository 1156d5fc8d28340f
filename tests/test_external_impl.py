"""A loss from outside the repository joins every tool through ``--impl MODULE_OR_FILE:NAME``,
and the example of docs/adding-a-loss.md runs as written."""

import json
import os
import re

import pytest
from conftest import REPO_DIR, TINY_RUN_FLAGS, run_script

EXTRA = os.path.join(REPO_DIR, "tests", "extra_loss.py")


def readme_example() -> str:
    """The code block of docs/adding-a-loss.md (the README links to it)."""
    with open(os.path.join(REPO_DIR, "docs", "adding-a-loss.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the page has exactly one python block"
    return blocks[0]


def test_readme_example_is_short_and_uses_the_documented_api():
    code = readme_example()
    assert len(code.strip().splitlines()) <= 30
    imports = re.findall(r"^from (\S+) import|^import (\S+)", code, re.M)
    assert {a or b for a, b in imports} <= {"tlbench.implementations", "torchaudio.functional"}


@pytest.fixture(scope="module")
def example_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mine") / "my_loss.py"
    path.write_text(readme_example())
    return str(path)


def test_readme_example_runs_through_the_suite_and_verification(example_file, tiny_shape_info, tmp_path):
    out_dir = tmp_path / "log"
    process = run_script("benchmark_all.py", [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--out-dir",
                                              str(out_dir), "--only", "torchaudio", "--impl", f"{example_file}:MY_LOSS",
                                              "--sort-utterance", "false"], timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    mine = json.load(open(out_dir / "my_loss-2" / "summary.json"))
    theirs = json.load(open(out_dir / "torchaudio-2" / "summary.json"))
    assert mine["status"] == "ok" and mine["implementation"] == "my_loss"
    assert mine["loss_values"] == pytest.approx(theirs["loss_values"], rel=1e-5)  # the same batches, the same loss
    markdown = (out_dir / "summary.md").read_text()
    assert re.search(r"^\| my_loss \| my_loss 0\.1 \| \d+ \| \d+ \| [\d.]+ \| ok \|$", markdown, re.M), markdown

    verify_json = tmp_path / "verify.json"
    process = run_script("verify_losses.py", ["--device", "cpu", "--impl", f"{example_file}:MY_LOSS",
                                              "--output-json", str(verify_json)], timeout=600)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    rows = [r for r in json.loads(verify_json.read_text())["rows"] if r["implementation"] == "my_loss"]
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows), rows
    assert re.search(r"^my_loss +\| the benchmark's call \(reduction sum\) +\| mixed ", process.stdout, re.M)


def test_an_implementation_under_tests_joins_the_report_verification_and_loss_only(tiny_shape_info, tmp_path):
    spec = f"{EXTRA}:PACKED_REFERENCE"
    out_dir = tmp_path / "log"
    process = run_script("benchmark_all.py", [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--out-dir",
                                              str(out_dir), "--impl", spec], timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    rows = json.load(open(out_dir / "summary.json"))["rows"]
    assert {(r["implementation"], r["mode"], r["status"]) for r in rows} == {
        ("packed_reference", "2", "ok"), ("packed_reference", "max-frames-30", "ok")}
    assert "| packed_reference | tlbench_packed test |" in (out_dir / "summary.md").read_text()
    verify_json = tmp_path / "verify.json"
    process = run_script("verify_losses.py", ["--device", "cpu", "--impl", spec, "--only", "reference",
                                              "--output-json", str(verify_json)], timeout=600)
    assert process.returncode == 0, process.stdout[-3000:]
    names = {r["implementation"] for r in json.loads(verify_json.read_text())["rows"]}
    assert names == {"reference", "packed_reference"}
    process = run_script("benchmark_loss_only.py", ["--impl", spec, "--shape-info", tiny_shape_info,
                                                    "--num-utterances", "2", "--repeats", "1"], timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert re.search(r"^\| packed_reference \(tlbench_packed test\) \| packed \| [\d.]+ \|", process.stdout, re.M)


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "'nonsense' is not allowed"),
    ("tests/extra_loss.py:MISSING", "extra_loss.py' is nothing; expected a tlbench.implementations.declaration"),
    ("tests/extra_loss.py:NOT_AN_IMPLEMENTATION", "is of type int; expected a tlbench.implementations.declaration"),
    ("no/such/file.py:X", "no/such/file.py' does not exist"),
    ("no_such_module_xyz:X", "importing 'no_such_module_xyz' failed (ModuleNotFoundError"),
])
def test_a_bad_impl_spec_is_one_line(spec, message, tmp_path):
    process = run_script("verify_losses.py", ["--impl", spec, "--output-json", str(tmp_path / "v.json")])
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1 and message in lines[0], lines
