"""The Chrome traces of a tiny run are valid, and summary.json's step times come from them.

The trace is read here with plain ``json`` (not tlbench.measure.trace), so that this test is an
independent check of the harness's parsing. Traces are found below the run folder
(``<run>/cycle-<k>/<name>.pt.trace.json``, or directly in the run folder in older runs) and
through summary.json's ``traces[*].file``, which is relative to the run folder.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402

# what tensorboard_trace_handler writes: <host>_<pid>.<milliseconds>.pt.trace.json
TRACE_NAME = re.compile(r"^.+_\d+\.\d+\.pt\.trace\.json$")
STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _profiler_steps(events):
    """``[(step number, ts, dur)]`` of the ProfilerStep#N complete events, by start time."""
    steps = []
    for event in events:
        match = STEP_NAME.match(str(event.get("name", "")))
        if match and event.get("ph") == "X":
            steps.append((int(match.group(1)), float(event["ts"]), float(event["dur"])))
    return sorted(steps, key=lambda s: s[1])


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_each_trace_is_a_valid_chrome_trace(results, run):
    run_dir = os.path.join(results, run)
    paths = sorted(glob.glob(os.path.join(run_dir, "**", "*.pt.trace.json"), recursive=True))
    assert len(paths) == helpers.REPEAT, paths  # one trace per profiler cycle
    assert not glob.glob(os.path.join(run_dir, "**", ".tmp-*"), recursive=True), "a temporary file was left behind"
    summary = helpers.load_summary(results, run)
    assert sorted(os.path.join(run_dir, t["file"]) for t in summary["traces"]) == paths
    for path in paths:
        assert TRACE_NAME.match(os.path.basename(path)), path
        folder = os.path.dirname(path)
        if folder != run_dir:  # a folder per cycle: that trace and nothing else
            assert os.listdir(folder) == [os.path.basename(path)], folder
        data = _load_json(path)
        assert isinstance(data, dict) and isinstance(data.get("traceEvents"), list)
        events = data["traceEvents"]
        assert events and all(isinstance(e, dict) and "ph" in e for e in events)
        for event in events:
            if event["ph"] == "X":
                assert isinstance(event.get("name"), str)
                assert isinstance(event.get("ts"), (int, float)) and isinstance(event.get("dur"), (int, float))
                assert event["dur"] >= 0
        steps = _profiler_steps(events)
        assert len(steps) == helpers.ACTIVE_STEPS, steps
        # the steps of one cycle are consecutive and do not overlap
        numbers = [n for n, _, _ in steps]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        for (_, start, duration), (_, next_start, _) in zip(steps, steps[1:]):
            assert start + duration <= next_start + 1e-3
        memory = [e for e in events if e.get("name") == "[memory]"]
        assert memory, "profile_memory=True but the trace has no [memory] events"
        for event in memory:
            args = event.get("args", {})
            assert "Total Allocated" in args and "Device Type" in args and "Bytes" in args, args
            assert args["Total Allocated"] >= 0
        # the loss region (record_function named after the implementation) is in every step
        implementation = run.split("-", 1)[0]
        regions = [e for e in events if e.get("ph") == "X" and e.get("name") == implementation]
        assert len(regions) == helpers.ACTIVE_STEPS


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_summary_step_times_equal_profiler_step_durations(results, run):
    summary = helpers.load_summary(results, run)
    run_dir = os.path.join(results, run)
    expected_us, peak_bytes = [], 0
    assert len(summary["traces"]) == helpers.REPEAT
    for record in summary["traces"]:
        events = _load_json(os.path.join(run_dir, record["file"]))["traceEvents"]
        assert not any(e.get("cat") == "kernel" for e in events), "CPU run expected: step = host span"
        steps = _profiler_steps(events)
        assert [n for n, _, _ in steps] == record["steps"]
        durations = [d for _, _, d in steps]
        assert record["avg_step_time_us"] == pytest.approx(sum(durations) / len(durations), rel=1e-6)
        expected_us += durations
        trace_peak = max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"
                         and e["args"].get("Device Type") == 0)
        assert record["peak_memory_mb"] == pytest.approx(trace_peak / 2**20, rel=1e-6)
        peak_bytes = max(peak_bytes, trace_peak)
    assert len(summary["step_times_us"]) == helpers.ACTIVE_STEPS * helpers.REPEAT
    assert summary["step_times_us"] == pytest.approx(expected_us, rel=1e-6)
    assert summary["avg_step_time_us"] == pytest.approx(sum(expected_us) / len(expected_us), rel=1e-6)
    assert summary["peak_memory_mb"] == pytest.approx(peak_bytes / 2**20, rel=1e-6)
    assert len(summary["loss_times_us"]) == len(expected_us)
    # the loss region is part of the step
    assert all(0 < loss <= step for loss, step in zip(summary["loss_times_us"], summary["step_times_us"]))
