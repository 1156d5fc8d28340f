"""One tiny results folder shared by the report, trace and TensorBoard tests.

``benchmark_all.py`` runs two implementations in both batching modes on CPU with a tiny
shape table and a schedule of two profiler cycles (two trace files per run). The folder is
built once per pytest session (the first test module that asks builds it) and must be
treated as read-only: tests that edit results work on a copy (:func:`copy_results`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, List

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

IMPLEMENTATIONS = ("torchaudio", "k2_pruned")
BATCH_SIZE = 1
MAX_FRAMES = 40
MODES = (str(BATCH_SIZE), f"max-frames-{MAX_FRAMES}")
ACTIVE_STEPS = 2
REPEAT = 2  # two profiler cycles: two trace files, two TensorBoard spans per run
RUN_NAMES = tuple(f"{name}-{mode}" for mode in MODES for name in IMPLEMENTATIONS)
# [T, U] rows: T in 10..40, U in 2..8
SHAPES = [[12, 3], [25, 5], [18, 2], [40, 8], [10, 4], [33, 6], [21, 7], [15, 2], [28, 3], [37, 5]]

_cache: Dict[str, str] = {}


def _write_shape_table(path: str) -> None:
    import torch

    torch.save(torch.tensor(SHAPES, dtype=torch.int32), path)


def benchmark_all_command(shape_info: str, out_dir: str) -> List[str]:
    return [sys.executable, os.path.join(REPO_DIR, "benchmark_all.py"), "--only", ",".join(IMPLEMENTATIONS),
            "--device", "cpu", "--preset", "quick", "--batch-size", str(BATCH_SIZE), "--max-frames", str(MAX_FRAMES),
            "--wait", "0", "--warmup", "1", "--active", str(ACTIVE_STEPS), "--repeat", str(REPEAT),
            "--vocab-size", "50", "--encoder-out-dim", "64", "--shape-info", shape_info, "--out-dir", out_dir]


def results_dir(tmp_path_factory) -> str:
    """The shared results folder (built on first use; a few seconds per run on 2 cores)."""
    if "results" not in _cache:
        base = str(tmp_path_factory.mktemp("tiny-results"))
        shape_info = os.path.join(base, "shape_info.pt")
        _write_shape_table(shape_info)
        out_dir = os.path.join(base, "log")
        process = subprocess.run(benchmark_all_command(shape_info, out_dir), capture_output=True, text=True,
                                 timeout=900, cwd=REPO_DIR)
        assert process.returncode == 0, (process.stdout[-3000:], process.stderr[-3000:])
        for run in RUN_NAMES:
            summary = load_summary(out_dir, run)
            assert summary["status"] == "ok", (run, summary.get("reason"))
        _cache["results"] = out_dir
    return _cache["results"]


def load_summary(results: str, run: str) -> dict:
    with open(os.path.join(results, run, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def copy_results(results: str, destination: str, with_traces: bool = True) -> str:
    """A copy of the run folders only (no report files, no pictures) to edit freely."""
    ignore = shutil.ignore_patterns("*.pt.trace.json*") if not with_traces else None
    for run in RUN_NAMES:
        shutil.copytree(os.path.join(results, run), os.path.join(destination, run), ignore=ignore)
    return destination


def edit_summary(results: str, run: str, **changes) -> dict:
    summary = load_summary(results, run)
    summary.update(changes)
    with open(os.path.join(results, run, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary
