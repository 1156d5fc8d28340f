"""A real TensorBoard (torch-tb-profiler plugin) reads our traces and agrees with summary.json.

Starts ``tensorboard --logdir <tiny results> --host 127.0.0.1`` on a free port, waits
(bounded) until the plugin has loaded every run, and compares the "Average Step Time" of
its Overview page, per run and per span (one span per trace file, i.e. profiler cycle),
with the summary's ``traces[i].avg_step_time_us`` and overall ``avg_step_time_us``.

Deselect with ``-m "not tensorboard"``.
"""

from __future__ import annotations

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
            return json.loads(response.read().decode("utf-8"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def tensorboard(results, tmp_path_factory):
    pytest.importorskip("torch_tb_profiler", reason="the torch-tb-profiler plugin is not installed")
    logdir = results
    port = _free_port()
    log_path = str(tmp_path_factory.mktemp("tensorboard") / "tensorboard.log")
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
            if state and not state["loading"] and set(helpers.RUN_NAMES) <= set(state["runs"]):
                break
            time.sleep(1)
        else:
            pytest.fail(f"tensorboard did not list every run within {STARTUP_TIMEOUT_S} s (last answer: {state}):\n"
                        f"{server.log_tail()}")
        yield server
    finally:
        _stop(process)


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


def _average_step_time_us(overview: dict) -> float:
    """The Overview's "Average Step Time", in microseconds (the plugin rounds it to whole us)."""
    entries = [e for e in overview["performance"] if e["name"] == "Average Step Time"]
    assert len(entries) == 1, overview["performance"]
    return float(entries[0]["value"])


def _step_totals_us(overview: dict) -> list:
    """Per-step totals of the Overview's step-time breakdown (the sum of its number columns, us)."""
    columns = overview["steps"]["columns"]
    numeric = [i for i, c in enumerate(columns) if c.get("type") == "number"]
    return [sum(float(row[i]) for i in numeric) for row in overview["steps"]["rows"]]


def test_lists_every_run(tensorboard):
    runs = tensorboard.get("/runs")["runs"]
    assert sorted(runs) == sorted(helpers.RUN_NAMES)  # run name = run folder name; pic/ is not a run


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_average_step_time_matches_summary(tensorboard, results, run):
    summary = helpers.load_summary(results, run)
    names = [TRACE_NAME.match(t["file"]) for t in summary["traces"]]
    assert all(names), summary["traces"]
    workers = tensorboard.get("/workers", run=run, view="Overview")
    # one worker per run: the trace files' "<host>_<pid>" prefix
    expected_workers = sorted({m.group("worker") for m in names})
    assert workers == expected_workers
    worker = workers[0]
    spans = tensorboard.get("/spans", run=run, worker=worker)
    # the plugin numbers the trace files 1, 2, ... in the order of their millisecond timestamps
    traces = sorted(summary["traces"], key=lambda t: int(TRACE_NAME.match(t["file"]).group("timestamp")))
    assert spans == [str(i) for i in range(1, len(traces) + 1)]
    weighted_sum_us, step_count = 0.0, 0
    for span, trace in zip(spans, traces):
        overview = tensorboard.get("/overview", run=run, worker=worker, span=span)
        tensorboard_avg_us = _average_step_time_us(overview)
        assert tensorboard_avg_us == pytest.approx(trace["avg_step_time_us"], rel=TOLERANCE), (span, trace)
        # the per-step breakdown has one row per recorded step of that cycle
        totals = _step_totals_us(overview)
        assert len(totals) == len(trace["steps"])
        assert sum(totals) / len(totals) == pytest.approx(trace["avg_step_time_us"], rel=TOLERANCE)
        weighted_sum_us += tensorboard_avg_us * len(trace["steps"])
        step_count += len(trace["steps"])
    assert step_count == len(summary["step_times_us"])
    assert weighted_sum_us / step_count == pytest.approx(summary["avg_step_time_us"], rel=TOLERANCE)
