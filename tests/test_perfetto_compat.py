"""The viewer copy (tlbench.measure.perfetto_compat): every span nests as Perfetto's JSON importer
requires, nothing is dropped or retimed, the raw trace is untouched, GPU-format traces too.

The suite's traces are the tiny CPU run of ``helpers_results`` (``with_stack=True``: its
``ProfilerStep#N`` and loss-region spans cross the Python frames that open and close them);
the GPU-format trace is written by ``browser_support.gpu_format_trace``. The browser tests
(``test_browser_trace_viewer.py``) load the same copies into the real Perfetto UI.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import sys
from decimal import Decimal

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser_support as support  # noqa: E402
import helpers_results as helpers  # noqa: E402

from tlbench.measure.perfetto_compat import (  # noqa: E402
    ANNOTATION_TRACK_SUFFIX,
    SYNTHETIC_TID_BASE,
    crossing_spans,
    to_ns,
    viewer_trace,
    write_viewer_copy,
)
from tlbench.measure.trace import load_trace, parse_trace  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def suite_traces(results):
    """(run name, trace path) of every cycle of the tiny suite run."""
    found = []
    for run in helpers.RUN_NAMES:
        for record in helpers.load_summary(results, run)["traces"]:
            found.append((run, os.path.join(results, run, record["file"])))
    assert len(found) == len(helpers.RUN_NAMES) * helpers.REPEAT
    return found


def event_key(event) -> str:
    """An event without its thread id, for comparing the copy with the raw trace."""
    return json.dumps({k: v for k, v in event.items() if k != "tid"}, sort_keys=True)


def assert_same_events_but_tid(raw: dict, viewer: dict, moved_expected: int) -> None:
    """The copy holds every raw event (the same in all but ``tid``) plus only new thread metadata."""
    raw_keys = sorted(event_key(e) for e in raw["traceEvents"])
    added = [e for e in viewer["traceEvents"] if e.get("ph") == "M" and isinstance(e.get("tid"), int)
             and e["tid"] >= SYNTHETIC_TID_BASE]
    kept = [e for e in viewer["traceEvents"] if e not in added]
    assert sorted(event_key(e) for e in kept) == raw_keys
    assert {e["name"] for e in added} <= {"thread_name", "thread_sort_index"}
    raw_tids = sorted(json.dumps([e.get("pid"), e.get("tid"), event_key(e)]) for e in raw["traceEvents"])
    kept_tids = sorted(json.dumps([e.get("pid"), e.get("tid"), event_key(e)]) for e in kept)
    moved = len(set(kept_tids) - set(raw_tids))
    assert moved == moved_expected
    assert {k: v for k, v in viewer.items() if k != "traceEvents"} == {k: v for k, v in raw.items() if k != "traceEvents"}


def test_the_suite_traces_lose_their_steps_and_regions_in_perfetto_and_the_copy_keeps_them(results):
    for run, path in suite_traces(results):
        raw = load_trace(path)
        summary = helpers.load_summary(results, run)
        region = summary["implementation"]
        parsed = parse_trace(path, region)
        steps = {f"ProfilerStep#{s.step}" for s in parsed.host_steps}
        # what the importer drops from the raw trace: exactly the spans the suite measures
        dropped = crossing_spans(raw)
        assert sorted(c.name for c in dropped) == sorted([*steps, *[region] * len(steps)]), run
        assert all(c.category == "user_annotation" and "_record_function_enter_new" in c.parent_name for c in dropped)
        viewer, changes = viewer_trace(raw)
        assert crossing_spans(viewer) == [], run
        assert changes.moved_annotations == {**{s: 1 for s in steps}, region: len(steps)}
        assert changes.moved_overlapping == {}
        assert changes.new_tracks == [f"thread {raw_pid(raw)} (python){ANNOTATION_TRACK_SUFFIX}"]
        assert_same_events_but_tid(raw, viewer, moved_expected=2 * len(steps))
        assert support.span_counts(viewer) == support.span_counts(raw)
        # the steps keep their times: the reader gives the same figures on the copy
        for event in viewer["traceEvents"]:
            if event.get("cat") == "user_annotation":
                assert event["tid"] != raw_pid(raw) and event["pid"] == raw_pid(raw)


def raw_pid(trace: dict) -> int:
    return next(e["pid"] for e in trace["traceEvents"] if e.get("cat") == "user_annotation")


def test_writing_the_copy_leaves_the_raw_trace_untouched_and_reads_back_the_same(results, tmp_path):
    run, path = suite_traces(results)[0]
    with open(path, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    stat = os.stat(path)
    region = helpers.load_summary(results, run)["implementation"]
    for name in ("copy.pt.trace.json", "copy.pt.trace.json.gz"):
        out = str(tmp_path / name)
        changes = write_viewer_copy(path, out)
        assert changes.changed
        if name.endswith(".gz"):
            with gzip.open(out, "rt", encoding="utf-8") as f:
                written = json.load(f)
        else:
            with open(out, encoding="utf-8") as f:
                written = json.load(f)
        assert written == viewer_trace(load_trace(path))[0]
        assert crossing_spans(written) == []
        # the trace reader of the suite gives the same steps, region times and peaks on the copy
        raw_parsed, copy_parsed = parse_trace(path, region), parse_trace(out, region)
        assert copy_parsed.steps == raw_parsed.steps
        assert copy_parsed.region_us_by_step == raw_parsed.region_us_by_step
        assert copy_parsed.peak_allocated_bytes == raw_parsed.peak_allocated_bytes
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]  # written atomically


def test_gpu_format_trace_host_annotations_move_and_a_crossing_kernel_goes_to_an_overflow_track():
    raw = support.gpu_format_trace()
    pristine = copy.deepcopy(raw)
    dropped = crossing_spans(raw)
    host = [c for c in dropped if c.track == (support.GPU_HOST_PID, support.GPU_HOST_PID)]
    device = [c for c in dropped if c.track[0] == support.GPU_DEVICE_PID]
    assert sorted(c.name for c in host) == sorted([f"ProfilerStep#{s}" for s in support.GPU_STEPS]
                                                  + [support.GPU_REGION] * len(support.GPU_STEPS))
    # step 2's region kernel starts 0.5 us before the gemm kernel on its stream ends
    assert sorted((c.name, c.category, c.parent_name, c.excess_ns) for c in device) == [
        ("loss_kernel", "kernel", "gemm_kernel", 80_000), (support.GPU_REGION, "gpu_user_annotation", "gemm_kernel", 90_000)]

    viewer, changes = viewer_trace(raw)
    assert raw == pristine  # the input object is not modified
    assert crossing_spans(viewer) == []
    assert support.span_counts(viewer) == support.span_counts(raw)
    assert changes.moved_annotations == {**{f"ProfilerStep#{s}": 1 for s in support.GPU_STEPS},
                                         support.GPU_REGION: len(support.GPU_STEPS)}
    # the crossing region annotation moves with what it holds (its kernel and the copy after it)
    assert changes.moved_overlapping == {support.GPU_REGION: 1, "loss_kernel": 1, "Memcpy DtoD (Device -> Device)": 1}
    assert changes.new_tracks == [f"thread {support.GPU_HOST_PID} (python){ANNOTATION_TRACK_SUFFIX}",
                                  f"stream {support.GPU_STREAMS[0]} [overlapping spans 1]"]
    assert_same_events_but_tid(raw, viewer, moved_expected=2 * len(support.GPU_STEPS) + 3)
    overflow_tid = next(e["tid"] for e in viewer["traceEvents"] if e.get("ph") == "M" and e["name"] == "thread_name"
                        and e["args"]["name"].endswith("[overlapping spans 1]"))
    moved = [e for e in viewer["traceEvents"] if e.get("tid") == overflow_tid and e.get("ph") == "X"]
    assert all(e["pid"] == support.GPU_DEVICE_PID for e in moved)
    # every other GPU-side annotation, kernel, copy and set stays on its stream
    for event in viewer["traceEvents"]:
        if event.get("ph") == "X" and event.get("pid") == support.GPU_DEVICE_PID and event not in moved:
            assert event["tid"] in support.GPU_STREAMS
    # the flows and memory events are the raw ones, on their threads
    for phase in ("s", "f", "i"):
        assert sorted(map(event_key, (e for e in viewer["traceEvents"] if e.get("ph") == phase))) == sorted(
            map(event_key, (e for e in raw["traceEvents"] if e.get("ph") == phase)))


def test_the_copy_is_in_time_order_with_parents_before_children():
    """The importer takes spans in time order; among spans that start together the longer must
    come first, whatever order the file had them in."""
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "child", "pid": 1, "tid": 1, "ts": 10.0, "dur": 5.0},
        {"ph": "X", "cat": "cpu_op", "name": "parent", "pid": 1, "tid": 1, "ts": 10.0, "dur": 50.0},
        {"ph": "X", "cat": "cpu_op", "name": "first", "pid": 1, "tid": 1, "ts": 1.0, "dur": 2.0},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "main"}},
        {"ph": "f", "id": 3, "pid": 1, "tid": 1, "ts": 10.0, "cat": "fwdbwd", "name": "fwdbwd", "bp": "e"},
    ]}
    viewer, changes = viewer_trace(trace)
    assert [e.get("name") for e in viewer["traceEvents"]] == ["thread_name", "first", "parent", "child", "fwdbwd"]
    assert not changes.changed and changes.new_tracks == []
    assert crossing_spans(viewer) == []


def test_a_trace_that_nests_already_keeps_every_event_where_it_was():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 8, "ts": 1.5, "dur": 3.25},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 7, "tid": 8, "ts": 2.0, "dur": 1.0},
        {"ph": "B", "name": "begin-end", "pid": 7, "tid": 9, "ts": 1.0},
        {"ph": "E", "name": "begin-end", "pid": 7, "tid": 9, "ts": 9.0},
        {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 3.0, "dur": 1.0},
        "not an event",
    ], "otherField": {"kept": True}}
    viewer, changes = viewer_trace(trace)
    assert not changes.changed
    assert sorted(map(str, viewer["traceEvents"])) == sorted(map(str, trace["traceEvents"]))
    assert viewer["otherField"] == {"kept": True}


def test_a_crossing_span_moves_with_the_spans_inside_it_and_tids_never_collide():
    used = SYNTHETIC_TID_BASE  # a trace that already uses the first synthetic id
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "A", "pid": 1, "tid": used, "ts": 0.0, "dur": 10.0},
        {"ph": "X", "cat": "cpu_op", "name": "A.child", "pid": 1, "tid": used, "ts": 1.0, "dur": 1.0},
        {"ph": "X", "cat": "cpu_op", "name": "B", "pid": 1, "tid": used, "ts": 5.0, "dur": 10.0},  # crosses A
        {"ph": "X", "cat": "cpu_op", "name": "B.child", "pid": 1, "tid": used, "ts": 5.5, "dur": 0.25},
        {"ph": "X", "cat": "cpu_op", "name": "C", "pid": 1, "tid": used, "ts": 8.0, "dur": 10.0},  # crosses A and B
        {"ph": "X", "cat": "cpu_op", "name": "C.child", "pid": 1, "tid": used, "ts": 16.0, "dur": 1.0},
        {"ph": "X", "cat": "cpu_op", "name": "after", "pid": 1, "tid": used, "ts": 20.0, "dur": 1.0},
    ]}
    # the importer would drop B and C, and then B.child and C.child would nest under A and nothing
    assert sorted(c.name for c in crossing_spans(trace)) == ["B", "C"]
    viewer, changes = viewer_trace(trace)
    assert crossing_spans(viewer) == []
    tid = {e["name"]: e["tid"] for e in viewer["traceEvents"] if e.get("ph") == "X"}
    assert tid["A"] == tid["A.child"] == tid["after"] == used  # the original track keeps what nests there
    assert tid["B"] != used and tid["B.child"] == tid["B"]  # a moved span takes the spans inside it along
    assert tid["C"] not in (used, tid["B"]) and tid["C.child"] == tid["C"]  # C crosses both: a second overflow track
    assert min(tid["B"], tid["C"]) > used  # new ids skip the one the trace uses
    assert changes.new_tracks == [f"thread {used} [overlapping spans 1]", f"thread {used} [overlapping spans 2]"]
    assert changes.moved_overlapping == {"B": 1, "B.child": 1, "C": 1, "C.child": 1}


def test_nanoseconds_as_the_importer_counts_them():
    for value in (5782667766508.735, 4057.271, 0.001, 1700000000123.456, 2515.452):
        assert to_ns(value) == int(Decimal(repr(value)) * 1000)
    assert to_ns(10) == 10_000 and to_ns(0.0005) == 1 and to_ns(-0.0005) == -1 and to_ns(-1.25) == -1250
    assert to_ns(None) is None and to_ns("12") is None and to_ns(float("nan")) is None and to_ns(True) is None
