"""The whole-suite command: one subprocess per implementation, failures recorded, report written."""

import json
import os
import subprocess
import sys

from conftest import REPO_DIR, TINY_RUN_FLAGS


def test_a_crashing_implementation_never_loses_the_others(tiny_shape_info, tmp_path):
    # k2 hidden and fast_rnnt made to kill its process on import: the k2 run dies without
    # writing anything, as a segfault would.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "k2.py").write_text("raise ImportError('no k2 here')\n")
    (fake / "fast_rnnt.py").write_text("import os\nos._exit(139)\n")
    out_dir = tmp_path / "log"
    env = dict(os.environ, PYTHONPATH=str(fake))
    process = subprocess.run([sys.executable, os.path.join(REPO_DIR, "benchmark_all.py"), *TINY_RUN_FLAGS,
                              "--shape-info", tiny_shape_info, "--out-dir", str(out_dir),
                              "--only", "torchaudio,k2", "--sort-utterance", "false"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    torchaudio = json.load(open(out_dir / "torchaudio-2" / "summary.json"))
    k2 = json.load(open(out_dir / "k2-2" / "summary.json"))
    assert torchaudio["status"] == "ok" and torchaudio["avg_step_time_us"] > 0
    assert k2["status"] == "error" and "exited with code 139" in k2["reason"]
    for name in ("summary.md", "summary.csv", "summary.json"):
        assert (out_dir / name).is_file()
    markdown = (out_dir / "summary.md").read_text()
    assert "| Name |" in markdown and "Average step time (us)" in markdown and "Peak memory usage (MB)" in markdown
    assert f"| {torchaudio['avg_step_time_us']:.0f} |" in markdown
    assert "error: the benchmark process exited with code 139" in markdown
    assert markdown.strip() in process.stdout  # the table is printed too
    rows = json.load(open(out_dir / "summary.json"))["rows"]
    assert {r["implementation"]: r["status"] for r in rows} == {"torchaudio": "ok", "k2": "error"}
