"""Each benchmark script, run as a subprocess on CPU with a tiny configuration."""

import glob
import importlib.util
import json
import math
import os

import pytest
import torch
from conftest import REPO_DIR, TINY_RUN_FLAGS, TINY_SHAPES, assert_losses_agree, run_script, run_summaries, script_for

from tlbench.implementations.declaration import Backend
from tlbench.implementations.registry import builtin_names

# The implementations that run on CPU here in both modes, at full length (the slow numba losses
# and the CUDA-only ones are checked by test_more_scripts_run_or_say_why_not).
CORE = ("torchaudio", "optimized_transducer", "k2", "k2_pruned", "fused")
SCRIPTS = {name: script_for(name) for name in CORE}
REQUIRED_KEYS = ["implementation", "backend", "backend_version", "device", "mode", "avg_step_time_us",
                 "peak_memory_mb", "loss_time_us", "step_times_us", "status", "torch_version"]


@pytest.fixture(scope="module")
def tiny_runs(tiny_shape_info, tmp_path_factory):
    """Every script in both batching modes: {(name, mode): (completed process, run dir)}."""
    out_dir = tmp_path_factory.mktemp("log")
    results = {}
    for name, script in SCRIPTS.items():
        for sort, mode in (("false", "2"), ("true", "max-frames-30")):
            process = run_script(script, [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--out-dir", str(out_dir),
                                          "--sort-utterance", sort])
            results[(name, mode)] = (process, os.path.join(out_dir, f"{name}-{mode}"))
    return results


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("mode", ["2", "max-frames-30"])
def test_script_writes_trace_table_and_sane_summary(tiny_runs, name, mode):
    process, run_dir = tiny_runs[(name, mode)]
    assert process.returncode == 0, process.stderr[-2000:]
    traces = glob.glob(os.path.join(run_dir, "cycle-*", "*.pt.trace.json"))
    assert len(traces) == 1  # repeat=1: one cycle, one trace, in its own folder
    table = open(os.path.join(run_dir, "key_averages.txt")).read()
    assert "Self CPU" in table and name in table  # the record_function region appears among the top rows
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    for key in REQUIRED_KEYS:
        assert key in summary, key
    assert summary["status"] == "ok" and summary["implementation"] == name and summary["mode"] == mode
    assert summary["device"] == "cpu" and summary["torch_version"] == torch.__version__
    assert len(summary["step_times_us"]) == 2  # --active 2
    assert summary["avg_step_time_us"] == pytest.approx(sum(summary["step_times_us"]) / 2)
    assert 0 < summary["loss_time_us"] < summary["avg_step_time_us"]
    assert 0 < summary["peak_memory_mb"] < 1024
    if name.startswith("k2"):
        # the real k2 when it imports, else fast_rnnt, and the printed line names the one that ran
        assert summary["backend"] == ("k2" if importlib.util.find_spec("k2") else "fast_rnnt")
        assert Backend(summary["backend"], summary["backend_version"]).label(name) in process.stdout
    # the one printed line carries the same numbers
    assert f"{summary['avg_step_time_us']:.0f} us" in process.stdout
    # the measured batches are the sampler's batches at the active steps (steps 2 and 3)
    assert [b["step"] for b in summary["measured_batches"]] == [2, 3]
    assert all(list(s) in TINY_SHAPES for b in summary["measured_batches"] for s in b["shapes"])


@pytest.mark.parametrize("mode", ["2", "max-frames-30"])
def test_the_core_losses_agree_on_the_same_batches(tiny_runs, mode):
    losses = {}
    for name in SCRIPTS:
        summary = json.load(open(os.path.join(tiny_runs[(name, mode)][1], "summary.json")))
        losses[name] = summary["loss_values"]
    reference = losses["torchaudio"]
    assert len(reference) == 2 and all(math.isfinite(v) and v > 0 for v in reference)
    assert_losses_agree(losses)


def test_missing_library_is_recorded_as_unavailable(tiny_shape_info, tmp_path):
    # A run whose import fails still exits 0 with a summary saying why (here: fast_rnnt and k2 hidden).
    blocker = tmp_path / "block"
    blocker.mkdir()
    for module in ("k2", "fast_rnnt"):
        (blocker / f"{module}.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    import subprocess
    import sys

    process = subprocess.run([sys.executable, os.path.join(REPO_DIR, "benchmark_k2.py"), *TINY_RUN_FLAGS,
                              "--shape-info", tiny_shape_info, "--out-dir", str(tmp_path / "log")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert process.returncode == 0, process.stderr
    summary = json.load(open(tmp_path / "log" / "k2-2" / "summary.json"))
    assert summary["status"] == "unavailable"
    assert "hidden by the test" in summary["reason"] and "builds k2 1.24.4 from source" in summary["reason"]
    assert "unavailable" in process.stdout


MORE_SCRIPTS = {name: script_for(name) for name in builtin_names() if name not in CORE}
CUDA_OR_OPTIONAL = ("warp_rnnt", "warp_transducer", "speechbrain", "nemo", "nemo_graph")  # unavailable here is allowed


def test_every_registered_implementation_is_tested():
    assert set(SCRIPTS) | set(MORE_SCRIPTS) == set(builtin_names())


@pytest.mark.parametrize("name", list(MORE_SCRIPTS))
def test_more_scripts_run_or_say_why_not(tiny_shape_info, tmp_path, name):
    process = run_script(MORE_SCRIPTS[name], [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info,
                                             "--out-dir", str(tmp_path)])
    assert process.returncode == 0, process.stderr[-2000:]
    (summary_path,) = glob.glob(os.path.join(tmp_path, f"{name}-*", "summary.json"))
    summary = json.load(open(summary_path))
    for key in REQUIRED_KEYS:
        assert key in summary, key
    if summary["status"] == "ok":
        assert len(summary["step_times_us"]) >= 1 and summary["avg_step_time_us"] > 0
        assert all(math.isfinite(v) and v > 0 for v in summary["loss_values"])
    else:
        assert summary["status"] == "unavailable" and summary["reason"]
        assert name in CUDA_OR_OPTIONAL  # the others run on CPU here
        assert "unavailable" in process.stdout


def test_the_reference_and_numba_agree_with_torchaudio_on_the_same_batch(tiny_shape_info, tmp_path):
    flags = [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--max-utterance-frames", "50"]
    summaries = run_summaries(("torchaudio", "reference", "warprnnt_numba"), flags, str(tmp_path), "-2-tmax50")
    assert_losses_agree({name: summary["loss_values"] for name, summary in summaries.items()})


def test_unsupported_dtype_is_recorded_not_crashed(tiny_shape_info, tmp_path):
    process = run_script("benchmark_k2.py", [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info,
                                             "--out-dir", str(tmp_path), "--dtype", "bfloat16"])
    assert process.returncode == 0, process.stderr[-2000:]
    summary = json.load(open(os.path.join(tmp_path, "k2-2-bfloat16", "summary.json")))
    assert summary["status"] == "unsupported" and "bfloat16" in summary["reason"]


def test_subsampling_factor_rescales_frames(tiny_shape_info, tmp_path):
    process = run_script("benchmark_torchaudio.py", [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info,
                                                     "--out-dir", str(tmp_path), "--subsampling-factor", "8"])
    assert process.returncode == 0, process.stderr[-2000:]
    summary = json.load(open(os.path.join(tmp_path, "torchaudio-2-sub8", "summary.json")))
    first = summary["measured_batches"][0]["shapes"]
    expected = [[max(1, round(t * 4 / 8)), u] for t, u in TINY_SHAPES[4:6]]  # step 2 = the third batch
    assert first == expected


def test_every_builtin_has_its_entry_point():
    """One standalone script per implementation: each names its implementation and runs it."""
    for name in builtin_names():
        path = os.path.join(REPO_DIR, script_for(name))
        assert os.path.isfile(path), path
        assert f'main("{name}")' in open(path, encoding="utf-8").read(), path
