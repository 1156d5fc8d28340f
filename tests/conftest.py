"""Shared fixtures: the repository path, small shape tables, and a runner for the scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

import pytest
import torch

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIR = os.path.join(os.path.dirname(REPO_DIR), "shared", "reference")
REFERENCE_SHAPE_INFO = os.path.join(REFERENCE_DIR, "librispeech_train_clean_100_sp_shape_info.pt")

if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

# Small enough that a CPU step takes milliseconds, and U <= 4 so that a prune range of 5
# covers every u: then k2's pruned loss equals the full loss and all four must agree.
TINY_SHAPES = [[12, 3], [9, 4], [15, 2], [7, 1], [11, 4], [14, 3], [8, 2], [10, 4]]


# Every built-in implementation's entry point at the repository's top level.
SCRIPT_OF = {"optimized_transducer": "benchmark_ot.py"}


def script_for(name: str) -> str:
    """``benchmark_<name>.py`` (``benchmark_ot.py`` for optimized_transducer)."""
    return SCRIPT_OF.get(name, f"benchmark_{name}.py")


def run_script(script: str, args: List[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a top-level script of the repository with this interpreter."""
    return subprocess.run([sys.executable, os.path.join(REPO_DIR, script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_DIR)


@pytest.fixture(scope="session")
def tiny_shape_info(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("shapes") / "tiny_shape_info.pt"
    torch.save(torch.tensor(TINY_SHAPES, dtype=torch.int32), path)
    return str(path)


TINY_RUN_FLAGS = ["--device", "cpu", "--preset", "quick", "--batch-size", "2", "--max-frames", "30",
                  "--wait", "1", "--warmup", "1", "--active", "2", "--repeat", "1",
                  "--vocab-size", "40", "--encoder-out-dim", "48"]


def run_summaries(names: Sequence[str], flags: List[str], out_dir: str, run_suffix: str) -> Dict[str, dict]:
    """Runs ``benchmark_<name>.py`` for each name with the same flags (so on the same batches) and
    returns each run's ``summary.json`` (run folder ``<name><run_suffix>`` under ``out_dir``), all ok."""
    summaries = {}
    for name in names:
        process = run_script(script_for(name), [*flags, "--out-dir", out_dir])
        assert process.returncode == 0, process.stderr[-2000:]
        summary = json.load(open(os.path.join(out_dir, f"{name}{run_suffix}", "summary.json")))
        assert summary["status"] == "ok", (name, summary.get("reason"))
        summaries[name] = summary
    return summaries


def assert_losses_agree(losses: Dict[str, List[float]], reference: str = "torchaudio", rel: float = 1e-4) -> None:
    """Every implementation's per-batch loss values within ``rel`` of the reference's."""
    for name, values in losses.items():
        assert len(values) == len(losses[reference]), (name, losses)
        for value, expected in zip(values, losses[reference]):
            assert abs(value - expected) <= rel * abs(expected), (name, losses)


def pytest_configure(config):
    config.addinivalue_line("markers", "tensorboard: starts a real TensorBoard server on 127.0.0.1")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")
