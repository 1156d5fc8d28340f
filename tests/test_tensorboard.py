"""A real TensorBoard (torch-tb-profiler plugin) reads our traces and agrees with summary.json.

Starts ``tensorboard --logdir <tiny results> --host 127.0.0.1`` on a free port, waits
(bounded) until the plugin has loaded every run, and compares the "Average Step Time" of
its Overview page, per trace file (one per profiler cycle), with the summary's
``traces[i].avg_step_time_us`` and overall ``avg_step_time_us``. The plugin's runs are the
folders that hold trace files: ``<run>/cycle-<k>`` when each cycle's trace has its own
folder, ``<run>`` when the traces lie in the run folder; the test takes the folders from
``summary.json``'s ``traces[*].file`` (relative to the run folder), so it follows either.

:func:`running_tensorboard` is also used by ``test_trace_eras.py``.
Deselect with ``-m "not tensorboard"``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterable, Iterator, List

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402

pytestmark = pytest.mark.tensorboard

STARTUP_TIMEOUT_S = 90
API = "/data/plugin/pytorch_profiler"
TOLERANCE = 0.01
# how the plugin splits a trace file name into worker and span timestamp
TRACE_NAME = re.compile(r"^(?P<worker>.*?)(?:\.(?P<timestamp>\d+))?\.pt\.trace\.json(?:\.gz)?$")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensorboard_command(logdir: str, port: int):
    executable = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    command = [executable] if os.path.exists(executable) else [sys.executable, "-m", "tensorboard.main"]
    return command + ["--logdir", logdir, "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"]


class TensorBoard:
    def __init__(self, base_url: str, process: subprocess.Popen, log_path: str):
        self.base_url, self.process, self.log_path = base_url, process, log_path

    def log_tail(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-3000:]

    def get(self, path: str, **params):
        url = f"{self.base_url}{API}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200, url
            body = response.read()
            if response.headers.get("Content-Encoding") == "gzip":  # the memory views answer gzipped
                body = gzip.decompress(body)
            return json.loads(body.decode("utf-8"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


@contextlib.contextmanager
def running_tensorboard(logdir: str, expected_runs: Iterable[str], log_path: str) -> Iterator[TensorBoard]:
    """A TensorBoard server on 127.0.0.1 over ``logdir``, once the plugin lists every run of
    ``expected_runs`` and has finished loading; stopped (with its loader processes) on exit."""
    expected = set(expected_runs)
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(log_path, "w", encoding="utf-8") as log:
        # its own process group: the plugin's loader processes are stopped with it
        process = subprocess.Popen(_tensorboard_command(logdir, port), stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    server = TensorBoard(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        state = None
        while time.monotonic() < deadline:
            assert process.poll() is None, f"tensorboard exited with {process.returncode}:\n{server.log_tail()}"
            try:
                state = server.get("/runs")
            except (urllib.error.URLError, ConnectionError, OSError):
                state = None  # not listening yet
            if state and not state["loading"] and expected <= set(state["runs"]):
                break
            time.sleep(1)
        else:
            pytest.fail(f"tensorboard did not list every run of {sorted(expected)} within {STARTUP_TIMEOUT_S} s "
                        f"(last answer: {state}):\n{server.log_tail()}")
        yield server
    finally:
        _stop(process)


def plugin_runs(results: str) -> Dict[str, List[dict]]:
    """{plugin run name: the summary.json trace records whose files it holds}: a plugin run is
    the folder of a trace file, relative to the logdir, with "/" separators."""
    runs: Dict[str, List[dict]] = {}
    for run in helpers.RUN_NAMES:
        for record in helpers.load_summary(results, run)["traces"]:
            folder = os.path.dirname(os.path.join(results, run, record["file"]))
            runs.setdefault(os.path.relpath(folder, results).replace(os.sep, "/"), []).append(record)
    return runs


@pytest.fixture(scope="module")
def tensorboard(results, tmp_path_factory):
    pytest.importorskip("torch_tb_profiler", reason="the torch-tb-profiler plugin is not installed")
    log_path = str(tmp_path_factory.mktemp("tensorboard") / "tensorboard.log")
    with running_tensorboard(results, plugin_runs(results), log_path) as server:
        yield server


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def average_step_time_us(overview: dict) -> float:
    """The Overview's "Average Step Time", in microseconds (the plugin rounds it to whole us)."""
    entries = [e for e in overview["performance"] if e["name"] == "Average Step Time"]
    assert len(entries) == 1, overview["performance"]
    return float(entries[0]["value"])


def step_totals_us(overview: dict) -> list:
    """Per-step totals of the Overview's step-time breakdown (the sum of its number columns, us)."""
    columns = overview["steps"]["columns"]
    numeric = [i for i, c in enumerate(columns) if c.get("type") == "number"]
    return [sum(float(row[i]) for i in numeric) for row in overview["steps"]["rows"]]


def test_lists_every_run(tensorboard, results):
    runs = tensorboard.get("/runs")["runs"]
    # one run per folder of trace files (pic/ and the report files are not runs)
    assert sorted(runs) == sorted(plugin_runs(results))


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_average_step_time_matches_summary(tensorboard, results, run):
    summary = helpers.load_summary(results, run)
    names = [TRACE_NAME.match(os.path.basename(t["file"])) for t in summary["traces"]]
    assert all(names), summary["traces"]
    # the plugin runs holding this run's traces, and the trace records in each
    by_plugin_run = {name: records for name, records in plugin_runs(results).items()
                     if any(r in summary["traces"] for r in records)}
    weighted_sum_us, step_count = 0.0, 0
    for plugin_run, records in sorted(by_plugin_run.items()):
        workers = tensorboard.get("/workers", run=plugin_run, view="Overview")
        # one worker per folder: the trace files' "<host>_<pid>" prefix
        expected_workers = sorted({TRACE_NAME.match(os.path.basename(r["file"])).group("worker") for r in records})
        assert workers == expected_workers
        worker = workers[0]
        spans = tensorboard.get("/spans", run=plugin_run, worker=worker)
        # the plugin numbers a folder's trace files 1, 2, ... in the order of their millisecond timestamps
        traces = sorted(records, key=lambda t: int(TRACE_NAME.match(os.path.basename(t["file"])).group("timestamp")))
        assert spans == [str(i) for i in range(1, len(traces) + 1)]
        for span, trace in zip(spans, traces):
            overview = tensorboard.get("/overview", run=plugin_run, worker=worker, span=span)
            tensorboard_avg_us = average_step_time_us(overview)
            assert tensorboard_avg_us == pytest.approx(trace["avg_step_time_us"], rel=TOLERANCE), (span, trace)
            # the per-step breakdown has one row per recorded step of that cycle
            totals = step_totals_us(overview)
            assert len(totals) == len(trace["steps"])
            assert sum(totals) / len(totals) == pytest.approx(trace["avg_step_time_us"], rel=TOLERANCE)
            weighted_sum_us += tensorboard_avg_us * len(trace["steps"])
            step_count += len(trace["steps"])
    assert step_count == len(summary["step_times_us"])
    assert weighted_sum_us / step_count == pytest.approx(summary["avg_step_time_us"], rel=TOLERANCE)
