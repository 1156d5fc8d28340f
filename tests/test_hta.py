"""HolisticTraceAnalysis (HTA 0.5.0) opens each profiler cycle of a suite run, as a user would
call it, and its step durations equal summary.json's ``step_times_us``.

HTA's ``TraceAnalysis(trace_dir=...)`` reads every ``*.json`` / ``*.gz`` file of the folder
as the trace of a rank (a file without a rank is rank 0, so of two such files the last one
wins, and ``summary.json`` is read as a trace too). It therefore needs a folder holding one
trace and nothing else: the run layout ``<run>/cycle-<k>/<name>.pt.trace.json``, whose
paths summary.json gives as ``traces[k].file`` (relative to the run folder). HTA's steps are
the ``ProfilerStep#N`` rows of its trace DataFrame; by default it leaves out the last step of
a trace (``include_last_profiler_step=False``: that step's GPU kernels may be cut off).

``test_hta_on_hand_made_cycle_folders`` puts copies of the traces in that layout itself, so
it checks HTA on these traces whatever layout the harness writes.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from typing import Dict, List, Tuple

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402

pytest.importorskip("hta", reason="HolisticTraceAnalysis is not installed")
# HTA 0.5.0 calls pandas with inplace=True, which pandas 3.1 deprecates (removal announced for
# pandas 4, hence the pandas pin in requirements.txt)
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame:DeprecationWarning")

TOLERANCE = 0.01


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def _cycles(results: str, run: str) -> List[Tuple[str, dict, List[float]]]:
    """(folder of the trace, its summary.json record, its steps' times from step_times_us) per cycle."""
    summary = helpers.load_summary(results, run)
    times = list(summary["step_times_us"])
    cycles = []
    for record in summary["traces"]:
        path = os.path.join(results, run, record["file"])
        cycles.append((os.path.dirname(path), record, times[:len(record["steps"])]))
        times = times[len(record["steps"]):]
    assert not times, "step_times_us has more entries than the traces' steps"
    return cycles


def _hta_steps(trace_dir: str, **kwargs) -> Dict[int, float]:
    """{step number: duration in us} of the ProfilerStep#N spans HTA loaded from the folder."""
    from hta.trace_analysis import TraceAnalysis

    analysis = TraceAnalysis(trace_dir=trace_dir, **kwargs)
    trace = analysis.t
    assert trace.get_ranks() == [0]
    frame = trace.get_trace(0)
    symbols = trace.symbol_table
    rows = frame[frame["name"].isin(symbols.get_profiler_step_ids())]
    steps = {int(symbols.sym_table[name].split("#", 1)[1]): float(duration)
             for name, duration in zip(rows["name"], rows["dur"])}
    assert sorted(analysis.get_profiler_steps()) == sorted(steps)
    return steps


def _check_cycle(trace_dir: str, record: dict, step_times: List[float]) -> None:
    expected = dict(zip(record["steps"], step_times))
    # as a user calls it: HTA leaves out the trace's last step
    default = _hta_steps(trace_dir)
    assert sorted(default) == record["steps"][:-1]
    assert [default[n] for n in sorted(default)] == pytest.approx([expected[n] for n in sorted(default)],
                                                                  rel=TOLERANCE)
    every = _hta_steps(trace_dir, include_last_profiler_step=True)
    assert sorted(every) == record["steps"]
    assert [every[n] for n in record["steps"]] == pytest.approx(step_times, rel=TOLERANCE)


def _json_files(folder: str) -> List[str]:
    """What HTA would read from the folder as traces."""
    paths = [p for pattern in ("*.json", "*.gz") for p in glob.glob(os.path.join(folder, pattern))]
    return sorted(os.path.basename(p) for p in paths)


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_each_cycle_trace_has_a_folder_of_its_own(results, run):
    run_dir = os.path.join(results, run)
    for folder, record, _ in _cycles(results, run):
        assert folder != run_dir, (f"{record['file']} lies in the run folder, next to summary.json and the other "
                                   f"cycles' traces: HTA would read them all (expected cycle-<k>/<name>)")
        assert _json_files(folder) == [os.path.basename(record["file"])]


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_hta_step_durations_match_summary(results, run):
    for folder, record, step_times in _cycles(results, run):
        _check_cycle(folder, record, step_times)


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_hta_on_hand_made_cycle_folders(results, run, tmp_path):
    for k, (folder, record, step_times) in enumerate(_cycles(results, run), 1):
        cycle_dir = tmp_path / run / f"cycle-{k}"
        os.makedirs(cycle_dir)
        shutil.copy(os.path.join(folder, os.path.basename(record["file"])), cycle_dir)
        _check_cycle(str(cycle_dir), record, step_times)
