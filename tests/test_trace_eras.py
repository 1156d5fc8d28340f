"""The trace reader on GPU traces in both spellings, and the TensorBoard compatibility copy.

The GPU traces are written here, event by event, in the shape kineto gives them (host-side
``ProfilerStep#N`` spans, CUDA runtime/driver launches with correlation ids, kernels,
copies and sets on a device stream that finish after their step's host span, ``[memory]``
events of two CUDA devices and the CPU, trailing steps whose kernels were not captured),
once with today's category names, once with the 2022-era names, and in mixed letter case.
Every expected figure below is worked out by hand from the timeline in
:func:`gpu_trace` (times in us after ``T0``).

The TensorBoard tests start one real server (torch-tb-profiler 0.4.3) on 127.0.0.1 over
those traces, the compatibility copies of them, and the compatibility copy of the tiny
suite run; deselect them with ``-m "not tensorboard"``.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import sys
from typing import Dict, List

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402
from test_tensorboard import TRACE_NAME, average_step_time_us, running_tensorboard, step_totals_us  # noqa: E402

from tlbench.measure.tensorboard_compat import GPU_STEP_ANNOTATION_CATEGORY, compat_trace, write_tensorboard_compat  # noqa: E402
from tlbench.measure.trace import TraceError, find_trace_files, parse_trace, run_trace_paths  # noqa: E402

T0 = 1_700_000_000_000.0  # us, like kineto's absolute timestamps
HOST_PID, DEVICE_PID, STREAM = 4242, 0, 7
REGION = "myloss"
MIB = 2**20

# the category names per spelling; "step" is the category of the ProfilerStep#N spans
SPELLINGS: Dict[str, Dict[str, str]] = {
    "today": {"step": "user_annotation", "op": "cpu_op", "runtime": "cuda_runtime", "driver": "cuda_driver",
              "kernel": "kernel", "memcpy": "gpu_memcpy", "memset": "gpu_memset", "flow": "fwdbwd"},
    "2022": {"step": "Operator", "op": "Operator", "runtime": "Runtime", "driver": "Runtime",
             "kernel": "Kernel", "memcpy": "Memcpy", "memset": "Memset", "flow": "forward_backward"},
    "today-mixed-case": {"step": "User_Annotation", "op": "CPU_OP", "runtime": "CUDA_Runtime",
                         "driver": "Cuda_Driver", "kernel": "KERNEL", "memcpy": "GPU_Memcpy",
                         "memset": "Gpu_MemSet", "flow": "fwdbwd"},
    "2022-mixed-case": {"step": "OPERATOR", "op": "operator", "runtime": "RUNTIME", "driver": "runtime",
                        "kernel": "kernel", "memcpy": "MEMCPY", "memset": "memSet", "flow": "forward_backward"},
}

# Hand-computed figures of gpu_trace() (us after T0):
# step 11: host [1010, 1110]; launches wholly inside: 4 (kernel [1030, 1100], memcpy [1100, 1130],
#   memset [1130, 1135], a driver-launched kernel [1135, 1190]). A kernel [1000, 1020] launched before
#   the trace (no launch event) belongs to no step and ends before step 11's first device event, so
#   step 11 starts at 1020 -> [1020, 1190] = 170.
# step 12: host [1120, 1200]: 2 launches inside (kernels [1195, 1260], [1260, 1300]); a launch at
#   [1195, 1205] crosses the step's end, so its kernel [1300, 1310] belongs to no step; a sync call owns
#   nothing -> [max(1190, 1120), max(1200, 1300)] = [1190, 1300] = 110.
# step 13: host [1210, 1290]: kernel [1310, 1400], memcpy [1400, 1420] -> [1300, 1420] = 120.
# step 14: host [1300, 1380]: one kernel captured [1420, 1440], one launch without its kernel:
#   1 device event < 0.8 x 2 of step 13 -> dropped ([1420, 1440]).
# step 15: host [1390, 1450]: a launch without its kernel -> no device event -> dropped ([1440, 1450]).
EXPECTED_STEPS = [(11, 1020.0, 1190.0, 100.0), (12, 1190.0, 1300.0, 80.0), (13, 1300.0, 1420.0, 80.0)]
EXPECTED_DROPPED = [(14, 1420.0, 1440.0), (15, 1440.0, 1450.0)]
EXPECTED_AVG_US = (170 + 110 + 120) / 3
EXPECTED_HOST_DURATIONS = {11: 100.0, 12: 80.0, 13: 80.0, 14: 80.0, 15: 60.0}
HOST_ONLY_AVG_US = sum(EXPECTED_HOST_DURATIONS.values()) / 5  # what the plugin shows when it sees no launch
EXPECTED_DEVICE_EVENTS = {11: 4, 12: 2, 13: 2, 14: 1, 15: 0}
EXPECTED_REGION_US = {11: 46.0, 12: 45.0, 13: 40.0}
# kernels + copies + sets clipped to the kept steps: 70 + 30 + 5 + 55 | 65 + 40 | 10 + 90 + 20
EXPECTED_BUSY_BY_STEP = {11: 160.0, 12: 105.0, 13: 120.0}
EXPECTED_PEAKS_BY_DEVICE = {"cuda:0": 7 * MIB, "cuda:1": 1 * MIB, "cpu": 4096}
KERNEL_CALLS = {"gemm_kernel": 4, "triton_add_kernel": 1, "relu_kernel": 1, "reduce_kernel": 1, "prologue_kernel": 1}


def gpu_trace(spelling: str, gpu_step_annotations: bool = False, capture_step14_second_kernel: bool = False) -> dict:
    """One profiler cycle of five steps on a (fake) GPU, as kineto writes it.

    ``gpu_step_annotations`` adds what today's kineto also writes: ``gpu_user_annotation``
    copies of the ``ProfilerStep#N`` spans on the device stream.
    """
    names = SPELLINGS[spelling]
    events: List[dict] = []
    external = iter(range(1, 1000))

    def host(category, name, start, end, **args):
        event = {"ph": "X", "cat": category, "name": name, "pid": HOST_PID, "tid": HOST_PID,
                 "ts": T0 + start, "dur": end - start, "args": {"External id": next(external), **args}}
        events.append(event)
        return event

    def launch(op, name, start, end, correlation, category="runtime"):
        external_id = op["args"]["External id"]
        events.append({"ph": "X", "cat": names[category], "name": name, "pid": HOST_PID, "tid": HOST_PID,
                       "ts": T0 + start, "dur": end - start,
                       "args": {"External id": external_id, "cbid": 211, "correlation": correlation}})
        events.append({"ph": "s", "id": correlation, "pid": HOST_PID, "tid": HOST_PID, "ts": T0 + start,
                       "cat": "ac2g", "name": "ac2g"})

    def device(kind, name, start, end, correlation, external_id):
        args = {"External id": external_id, "device": 0, "stream": STREAM, "correlation": correlation, "context": 1}
        if kind == "kernel":
            args.update({"queued": 0, "registers per thread": 32, "shared memory": 0, "blocks per SM": 0.5,
                         "warps per SM": 2.0, "grid": [40, 1, 1], "block": [128, 1, 1],
                         "est. achieved occupancy %": 12})
        else:
            args.update({"bytes": 1 << 20, "memory bandwidth (GB/s)": 30.0})
        events.append({"ph": "X", "cat": names[kind], "name": name, "pid": DEVICE_PID, "tid": STREAM,
                       "ts": T0 + start, "dur": end - start, "args": args})
        events.append({"ph": "f", "id": correlation, "pid": DEVICE_PID, "tid": STREAM, "ts": T0 + start,
                       "cat": "ac2g", "name": "ac2g", "bp": "e"})

    def memory(time, delta, total, device_type, device_id):
        events.append({"ph": "i", "cat": "cpu_instant_event", "s": "t", "name": "[memory]", "pid": HOST_PID,
                       "tid": HOST_PID, "ts": T0 + time,
                       "args": {"Total Reserved": 16 * MIB, "Total Allocated": total, "Bytes": delta,
                                "Addr": 94000000000 + int(time), "Device Id": device_id, "Device Type": device_type}})

    events.append({"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans", "tid": "PyTorch Profiler",
                   "ts": T0 + 1000, "dur": 460, "args": {"Op count": 0}})
    # launched before the profiler started: no launch event in the trace
    device("kernel", "prologue_kernel", 1000, 1020, 1, 0)

    step = host(names["step"], "ProfilerStep#11", 1010, 1110)
    mm = host(names["op"], "aten::mm", 1015, 1050)
    launch(mm, "cudaLaunchKernel", 1020, 1025, 11)
    device("kernel", "gemm_kernel", 1030, 1100, 11, mm["args"]["External id"])
    memory(1016, 2 * MIB, 2 * MIB, 1, 0)
    memory(1017, 4096, 4096, 0, -1)
    host("user_annotation", REGION, 1050, 1096)
    copy_op = host(names["op"], "aten::copy_", 1055, 1080)
    launch(copy_op, "cudaMemcpyAsync", 1060, 1065, 12)
    device("memcpy", "Memcpy HtoD (Pageable -> Device)", 1100, 1130, 12, copy_op["args"]["External id"])
    memory(1056, 5 * MIB, 7 * MIB, 1, 0)
    memory(1057, 1 * MIB, 1 * MIB, 1, 1)
    zero = host(names["op"], "aten::zero_", 1082, 1089)
    launch(zero, "cudaMemsetAsync", 1085, 1088, 13)
    device("memset", "Memset (Device)", 1130, 1135, 13, zero["args"]["External id"])
    add = host(names["op"], "aten::add", 1089.5, 1096)
    launch(add, "cuLaunchKernel", 1090, 1094, 14, category="driver")
    device("kernel", "triton_add_kernel", 1135, 1190, 14, add["args"]["External id"])
    flow_start = mm["ts"]

    host(names["step"], "ProfilerStep#12", 1120, 1200)
    mm = host(names["op"], "aten::mm", 1125, 1138)
    launch(mm, "cudaLaunchKernel", 1130, 1135, 21)
    device("kernel", "gemm_kernel", 1195, 1260, 21, mm["args"]["External id"])
    host("user_annotation", REGION, 1125, 1170)
    relu = host(names["op"], "aten::relu", 1139, 1147)
    launch(relu, "cudaLaunchKernel", 1140, 1145, 22)
    device("kernel", "relu_kernel", 1260, 1300, 22, relu["args"]["External id"])
    memory(1141, -5 * MIB, 2 * MIB, 1, 0)
    memory(1142, -1 * MIB, 0, 1, 1)
    memory(1143, -4096, 0, 0, -1)
    item = host(names["op"], "aten::item", 1148, 1192)
    launch(item, "cudaStreamSynchronize", 1150, 1160, 24)
    total = host(names["op"], "aten::sum", 1193, 1199.5)
    launch(total, "cudaLaunchKernel", 1195, 1205, 23)  # crosses the end of step 12
    device("kernel", "reduce_kernel", 1300, 1310, 23, total["args"]["External id"])
    events.append({"ph": "s", "id": 1, "pid": HOST_PID, "tid": HOST_PID, "ts": flow_start, "cat": names["flow"],
                   "name": "fwdbwd"})
    events.append({"ph": "f", "id": 1, "pid": HOST_PID, "tid": HOST_PID, "ts": relu["ts"], "cat": names["flow"],
                   "name": "fwdbwd", "bp": "e"})

    host(names["step"], "ProfilerStep#13", 1210, 1290)
    mm = host(names["op"], "aten::mm", 1215, 1240)
    launch(mm, "cudaLaunchKernel", 1220, 1225, 31)
    device("kernel", "gemm_kernel", 1310, 1400, 31, mm["args"]["External id"])
    memory(1221, 3 * MIB, 5 * MIB, 1, 0)
    host("user_annotation", REGION, 1215, 1255)
    copy_op = host(names["op"], "aten::copy_", 1241, 1250)
    launch(copy_op, "cudaMemcpyAsync", 1242, 1247, 32)
    device("memcpy", "Memcpy DtoH (Device -> Pageable)", 1400, 1420, 32, copy_op["args"]["External id"])

    host(names["step"], "ProfilerStep#14", 1300, 1380)
    mm = host(names["op"], "aten::mm", 1305, 1330)
    launch(mm, "cudaLaunchKernel", 1310, 1315, 41)
    device("kernel", "gemm_kernel", 1420, 1440, 41, mm["args"]["External id"])
    memory(1306, -5 * MIB, 0, 1, 0)
    host("user_annotation", REGION, 1305, 1345)
    relu = host(names["op"], "aten::relu", 1318, 1328)
    launch(relu, "cudaLaunchKernel", 1320, 1325, 42)
    if capture_step14_second_kernel:
        device("kernel", "relu_kernel", 1440, 1450, 42, relu["args"]["External id"])

    host(names["step"], "ProfilerStep#15", 1390, 1450)
    mm = host(names["op"], "aten::mm", 1395, 1410)
    launch(mm, "cudaLaunchKernel", 1400, 1405, 51)
    host("user_annotation", REGION, 1395, 1420)

    if gpu_step_annotations:
        for number, (start, end) in zip(range(11, 15), [(1030, 1190), (1195, 1300), (1310, 1420), (1420, 1440)]):
            events.append({"ph": "X", "cat": "gpu_user_annotation", "name": f"ProfilerStep#{number}",
                           "pid": DEVICE_PID, "tid": STREAM, "ts": T0 + start, "dur": end - start,
                           "args": {"External id": 0}})
    events.append({"name": "process_name", "ph": "M", "ts": T0 + 1000, "pid": DEVICE_PID, "tid": 0,
                   "args": {"name": "python"}})
    events.append({"name": "thread_name", "ph": "M", "ts": T0 + 1000, "pid": DEVICE_PID, "tid": STREAM,
                   "args": {"name": f"stream {STREAM}"}})
    assert step["ts"] == T0 + 1010
    # one entry per visible device, as kineto writes it (the plugin looks up every device of the memory events)
    properties = [{"id": i, "name": "Fake GPU", "totalGlobalMem": 34359738368, "computeMajor": 7, "computeMinor": 0,
                   "maxThreadsPerBlock": 1024, "maxThreadsPerMultiprocessor": 2048, "regsPerBlock": 65536,
                   "regsPerMultiprocessor": 65536, "warpSize": 32, "sharedMemPerBlock": 49152,
                   "sharedMemPerMultiprocessor": 98304, "numSms": 80, "sharedMemPerBlockOptin": 98304}
                  for i in (0, 1)]
    return {"schemaVersion": 1, "deviceProperties": properties, "traceEvents": events, "displayTimeUnit": "ms",
            "traceName": f"fake-{spelling}"}


def write_trace(folder: str, trace: dict, gz: bool = False, timestamp: int = 1700000000123) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"gpuhost_{HOST_PID}.{timestamp}.pt.trace.json" + (".gz" if gz else ""))
    data = json.dumps(trace).encode("utf-8")
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return path


def _relative(step_list):
    return [(s.step, round(s.start_us - T0, 6), round(s.end_us - T0, 6)) for s in step_list]


# ---------------------------------------------------------------- the reader, both spellings


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_reader_on_gpu_trace(tmp_path, spelling, gz):
    parsed = parse_trace(write_trace(str(tmp_path), gpu_trace(spelling), gz=gz), region_name=REGION)
    assert parsed.has_device_activity and parsed.uses_device_time
    assert _relative(parsed.steps) == [(n, s, e) for n, s, e, _ in EXPECTED_STEPS]
    assert [s.host_duration_us for s in parsed.steps] == [h for *_, h in EXPECTED_STEPS]
    assert [s.duration_us for s in parsed.steps] == pytest.approx([170.0, 110.0, 120.0])
    assert parsed.avg_step_time_us == pytest.approx(EXPECTED_AVG_US)
    assert _relative(parsed.dropped_steps) == EXPECTED_DROPPED
    assert {s.step: s.host_duration_us for s in parsed.host_steps} == EXPECTED_HOST_DURATIONS
    assert parsed.device_events_by_step == EXPECTED_DEVICE_EVENTS
    assert parsed.region_us_by_step == pytest.approx(EXPECTED_REGION_US)
    assert parsed.device_busy_us_by_step == pytest.approx(EXPECTED_BUSY_BY_STEP)
    assert parsed.device_busy_us == pytest.approx(385.0)
    assert parsed.peak_allocated_bytes_by_device == EXPECTED_PEAKS_BY_DEVICE
    assert parsed.peak_allocated_bytes == {"cuda": 7 * MIB, "cpu": 4096}
    assert len(parsed.memory_samples) == 9
    assert [m.time_us for m in parsed.memory_samples] == sorted(m.time_us for m in parsed.memory_samples)
    assert {(m.device, m.device_id) for m in parsed.memory_samples} == {("cuda", 0), ("cuda", 1), ("cpu", -1)}


def test_reader_ignores_gpu_side_step_annotations(tmp_path):
    """Today's kineto also writes gpu_user_annotation copies of ProfilerStep#N: not steps."""
    parsed = parse_trace(write_trace(str(tmp_path), gpu_trace("today", gpu_step_annotations=True)))
    assert _relative(parsed.steps) == [(n, s, e) for n, s, e, _ in EXPECTED_STEPS]
    assert len(parsed.host_steps) == 5


def test_last_step_kept_when_it_has_most_of_its_kernels(tmp_path):
    """Step 14 with both kernels captured (2 >= 0.8 x 2): kept, ending at its second kernel (1450);
    step 15 (no device event) is still dropped."""
    parsed = parse_trace(write_trace(str(tmp_path), gpu_trace("2022", capture_step14_second_kernel=True)))
    assert _relative(parsed.steps)[-1] == (14, 1420.0, 1450.0)
    assert [s.step for s in parsed.steps] == [11, 12, 13, 14]
    assert _relative(parsed.dropped_steps) == [(15, 1450.0, 1450.0)]
    assert parsed.avg_step_time_us == pytest.approx((170 + 110 + 120 + 30) / 4)


def test_cpu_only_trace_steps_are_host_spans(tmp_path):
    trace = gpu_trace("today")
    trace["traceEvents"] = [e for e in trace["traceEvents"]
                            if e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset")]
    parsed = parse_trace(write_trace(str(tmp_path), trace), region_name=REGION)
    assert not parsed.has_device_activity and not parsed.uses_device_time
    assert {s.step: s.duration_us for s in parsed.steps} == pytest.approx(EXPECTED_HOST_DURATIONS)
    assert parsed.dropped_steps == [] and parsed.device_busy_us == 0.0
    assert parsed.region_us_by_step[15] == pytest.approx(25.0)


def test_unreadable_traces_raise_trace_error(tmp_path):
    bad = tmp_path / "x_1.1.pt.trace.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TraceError):
        parse_trace(str(bad))
    truncated = tmp_path / "x_1.2.pt.trace.json.gz"
    truncated.write_bytes(gzip.compress(b'{"traceEvents": []}')[:-6])
    with pytest.raises(TraceError):
        parse_trace(str(truncated))
    (tmp_path / "y_1.3.pt.trace.json").write_text('{"events": []}', encoding="utf-8")
    with pytest.raises(TraceError):
        parse_trace(str(tmp_path / "y_1.3.pt.trace.json"))


def test_run_trace_paths_both_layouts(tmp_path):
    flat = tmp_path / "flat"
    first = write_trace(str(flat), gpu_trace("today"), timestamp=1)
    (flat / "summary.json").write_text(json.dumps({"traces": [{"file": os.path.basename(first)}]}))
    assert run_trace_paths(str(flat)) == [first]
    nested = tmp_path / "nested"
    paths = [write_trace(str(nested / f"cycle-{k}"), gpu_trace("today"), timestamp=k) for k in (1, 2)]
    (nested / "summary.json").write_text(json.dumps({"traces": [{"file": os.path.relpath(p, nested)} for p in paths]}))
    assert run_trace_paths(str(nested)) == paths
    os.remove(nested / "summary.json")
    assert run_trace_paths(str(nested)) == paths  # no summary: every trace below the folder


TODAY_NAME = {"Operator": "cpu_op", "Runtime": "cuda_runtime", "runtime": "CUDA_RUNTIME", "RUNTIME": "cuda_driver",
              "Kernel": "kernel", "Memcpy": "gpu_memcpy", "Memset": "GPU_MEMSET", "user_annotation": "user_annotation"}


def random_trace(rng) -> dict:
    """A random 2022-spelling GPU trace: 1-6 steps (sometimes overlapping by a few us), launches
    inside, between and across steps, 0-2 device events each on one stream, and device events
    from before the trace; events shuffled."""
    events: List[dict] = []
    t, correlation = 1000, 100
    stream_free = t + rng.randint(-60, 40)
    for _ in range(rng.randint(0, 2)):
        events.append({"ph": "X", "cat": "Kernel", "name": "early", "pid": 0, "tid": 7, "ts": t + rng.randint(-40, 20),
                       "dur": rng.randint(1, 30), "args": {"correlation": correlation, "device": 0, "stream": 7}})
        correlation += 1
    for n in range(rng.randint(1, 6)):
        start, duration = t + rng.randint(0, 20), rng.randint(5, 100)
        events.append({"ph": "X", "cat": rng.choice(["Operator", "user_annotation"]), "name": f"ProfilerStep#{n + 3}",
                       "pid": 1, "tid": 1, "ts": start, "dur": duration, "args": {"External id": n + 1}})
        for _ in range(rng.randint(0, 5)):
            launch_start = rng.randint(start - 10, start + duration + 5)
            events.append({"ph": "X", "cat": rng.choice(["Runtime", "runtime", "RUNTIME"]), "name": "cudaLaunchKernel",
                           "pid": 1, "tid": 1, "ts": launch_start, "dur": rng.randint(0, 8),
                           "args": {"correlation": correlation, "External id": n + 1}})
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                device_start = max(stream_free, launch_start + rng.randint(1, 10)) + rng.randint(0, 3)
                device_duration = rng.randint(0, 40)
                stream_free = device_start + device_duration
                events.append({"ph": "X", "cat": rng.choice(["Kernel", "Memcpy", "Memset"]), "name": "work",
                               "pid": 0, "tid": 7, "ts": device_start, "dur": device_duration,
                               "args": {"correlation": correlation, "device": 0, "stream": 7, "External id": n + 1}})
            correlation += 1
        t = start + duration + rng.randint(-3, 10)
    rng.shuffle(events)
    return {"traceEvents": events}


@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning")  # the plugin on pandas 3
def test_reader_matches_the_plugins_own_parser_on_random_traces(tmp_path):
    """The plugin's step rule run in-process (torch_tb_profiler.profiler.data.RunProfileData) on
    random 2022-spelling traces: same steps, same durations as the reader, which also reads the
    same traces in today's spelling alike."""
    pytest.importorskip("torch_tb_profiler")
    import logging
    import random

    from torch_tb_profiler.profiler.data import RunProfileData
    from torch_tb_profiler.profiler.event_parser import ProfileRole

    rng = random.Random(20220227)
    logging.disable(logging.WARNING)  # the plugin warns about every dropped tail and stray launch
    try:
        for i in range(300):
            trace = random_trace(rng)
            profile = RunProfileData.from_json("worker", 1, copy.deepcopy(trace))
            plugin = [(int(name), c.costs[ProfileRole.Total]) for name, c in zip(profile.steps_names,
                                                                                 profile.steps_costs)]
            path = str(tmp_path / f"r_{i}.1.pt.trace.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(trace, f)
            assert [(s.step, s.duration_us) for s in parse_trace(path).steps] == plugin, i
            today = {"traceEvents": [dict(e, cat=TODAY_NAME[e["cat"]]) for e in trace["traceEvents"]]}
            with open(path, "w", encoding="utf-8") as f:
                json.dump(today, f)
            assert [(s.step, s.duration_us) for s in parse_trace(path).steps] == plugin, i
    finally:
        logging.disable(logging.NOTSET)


def test_reader_on_suite_cpu_traces(tmp_path_factory):
    """The tiny suite run's real CPU traces: host spans, nothing dropped, no device time."""
    results = helpers.results_dir(tmp_path_factory)
    for run in helpers.RUN_NAMES:
        summary = helpers.load_summary(results, run)
        paths = run_trace_paths(os.path.join(results, run))
        assert len(paths) == helpers.REPEAT
        for path, record in zip(paths, summary["traces"]):
            parsed = parse_trace(path, region_name=run.split("-", 1)[0])
            assert [s.step for s in parsed.steps] == record["steps"]
            assert not parsed.uses_device_time and not parsed.has_device_activity
            assert parsed.dropped_steps == [] and parsed.device_busy_us == 0.0
            assert [(s.start_us, s.end_us) for s in parsed.steps] == [(s.start_us, s.end_us) for s in parsed.host_steps]
            assert parsed.avg_step_time_us == pytest.approx(record["avg_step_time_us"])
            assert set(parsed.peak_allocated_bytes_by_device) == {"cpu"}
            assert parsed.peak_allocated_bytes["cpu"] / 2**20 == pytest.approx(record["peak_memory_mb"])
            assert all(0 < parsed.region_us_by_step[s.step] <= s.duration_us for s in parsed.steps)


# ---------------------------------------------------------------- the compatibility copy


def test_compat_trace_renames_only_categories():
    original = gpu_trace("today", gpu_step_annotations=True)
    before = copy.deepcopy(original)
    converted, renamed = compat_trace(original)
    assert original == before  # the input is left alone
    # 13 operators, 12 runtime calls + 1 driver call, 8 kernels, ... (see gpu_trace)
    assert renamed == {"cpu_op -> Operator": 13, "cuda_runtime -> Runtime": 12, "cuda_driver -> Runtime": 1,
                       "kernel -> Kernel": 8, "gpu_memcpy -> Memcpy": 2, "gpu_memset -> Memset": 1,
                       "fwdbwd -> forward_backward": 2, f"gpu_user_annotation -> {GPU_STEP_ANNOTATION_CATEGORY}": 4}
    assert {k: v for k, v in converted.items() if k != "traceEvents"} == \
           {k: v for k, v in original.items() if k != "traceEvents"}
    assert len(converted["traceEvents"]) == len(original["traceEvents"])
    for new, old in zip(converted["traceEvents"], original["traceEvents"]):
        assert list(new) == list(old)  # same keys in the same order
        assert {k: v for k, v in new.items() if k != "cat"} == {k: v for k, v in old.items() if k != "cat"}
    # the 2022 spelling needs nothing; a second pass changes nothing
    assert compat_trace(gpu_trace("2022"))[1] == {}
    assert compat_trace(converted)[1] == {}
    # mixed case is converted too
    assert compat_trace(gpu_trace("today-mixed-case"))[1]["CUDA_Runtime -> Runtime"] == 12


def test_write_tensorboard_compat_tree(tmp_path):
    results = tmp_path / "results"
    flat = write_trace(str(results / "run-a"), gpu_trace("today"), timestamp=5)
    nested = write_trace(str(results / "run-b" / "cycle-1"), gpu_trace("today"), gz=True, timestamp=6)
    foreign = write_trace(str(results / "elsewhere" / "deep" / "folder"), gpu_trace("2022"), timestamp=7)
    (results / "run-a" / "summary.json").write_text("{}", encoding="utf-8")
    (results / "run-a" / ".tmp-gpuhost_1.9.pt.trace.json").write_text("partial", encoding="utf-8")
    out = results / "tb-compat"  # inside the results folder, as report.py may be given
    written = write_tensorboard_compat(str(results), str(out))
    expected = sorted(str(out / os.path.relpath(p, results)) for p in (flat, nested, foreign))
    assert written == expected
    assert find_trace_files(str(out)) == expected
    assert sorted(os.listdir(out / "run-a")) == [os.path.basename(flat)]  # no summary, no temporary file
    assert expected[2].endswith(".gz")
    with gzip.open(expected[2], "rt", encoding="utf-8") as f:  # run-b's copy is gzipped again
        assert json.load(f)["traceName"] == "fake-today"
    for original, path in zip(sorted((flat, nested, foreign)), expected):
        got, want = parse_trace(path, region_name=REGION), parse_trace(original, region_name=REGION)
        assert _relative(got.steps) == _relative(want.steps)
        assert got.peak_allocated_bytes_by_device == want.peak_allocated_bytes_by_device
        assert got.device_busy_us == pytest.approx(want.device_busy_us)
    # a second run does not read its own output again, and rewrites the same files
    assert write_tensorboard_compat(str(results), str(out)) == expected
    assert not [n for _, _, files in os.walk(out) for n in files if n.startswith(".tmp-")]


def test_write_tensorboard_compat_raises_on_corrupt_trace(tmp_path):
    results = tmp_path / "results"
    os.makedirs(results)
    (results / "bad_1.1.pt.trace.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(TraceError):
        write_tensorboard_compat(str(results), str(tmp_path / "out"))


# ---------------------------------------------------------------- a real TensorBoard server

RAW_RUNS = {  # run folder -> (spelling, gpu-side step annotations, gzipped)
    "today": ("today", False, False),
    "today-gpu-step-annotations": ("today", True, True),
    "era2022": ("2022", False, False),
    "era2022-mixed-case": ("2022-mixed-case", False, False),
}


@pytest.fixture(scope="module")
def tensorboard_logdir(tmp_path_factory):
    base = tmp_path_factory.mktemp("tb-eras")
    paths = {}
    for run, (spelling, with_annotations, gz) in RAW_RUNS.items():
        paths[run] = write_trace(str(base / "raw" / run / "cycle-1"),
                                 gpu_trace(spelling, gpu_step_annotations=with_annotations), gz=gz)
    write_tensorboard_compat(str(base / "raw"), str(base / "compat"))
    suite = helpers.results_dir(tmp_path_factory)
    write_tensorboard_compat(suite, str(base / "suite-compat"))
    return str(base), paths, suite


def _suite_plugin_runs(suite: str) -> Dict[str, List[dict]]:
    """{plugin run name under suite-compat/: [trace records of summary.json]}."""
    runs: Dict[str, List[dict]] = {}
    for run in helpers.RUN_NAMES:
        for record in helpers.load_summary(suite, run)["traces"]:
            folder = os.path.dirname(os.path.join(suite, run, record["file"]))
            name = "suite-compat/" + os.path.relpath(folder, suite).replace(os.sep, "/")
            runs.setdefault(name, []).append(record)
    return runs


@pytest.fixture(scope="module")
def tensorboard(tensorboard_logdir, tmp_path_factory):
    pytest.importorskip("torch_tb_profiler", reason="the torch-tb-profiler plugin is not installed")
    logdir, _, suite = tensorboard_logdir
    expected = [f"{kind}/{run}/cycle-1" for kind in ("raw", "compat") for run in RAW_RUNS]
    expected += list(_suite_plugin_runs(suite))
    log_path = str(tmp_path_factory.mktemp("tb-eras-log") / "tensorboard.log")
    with running_tensorboard(logdir, expected, log_path) as server:
        yield server


def _overview(server, run: str) -> dict:
    worker = f"gpuhost_{HOST_PID}"
    assert server.get("/workers", run=run, view="Overview") == [worker]
    assert server.get("/spans", run=run, worker=worker) == ["1"]
    return server.get("/overview", run=run, worker=worker, span="1")


def _step_column(overview: dict, name: str) -> List[float]:
    columns = [c.get("name") for c in overview["steps"]["columns"]]
    return [float(row[columns.index(name)]) for row in overview["steps"]["rows"]]


@pytest.mark.tensorboard
@pytest.mark.parametrize("run", ["era2022", "era2022-mixed-case"])
def test_plugin_agrees_with_reader_on_2022_spelling(tensorboard, tensorboard_logdir, run):
    parsed = parse_trace(tensorboard_logdir[1][run])
    overview = _overview(tensorboard, f"raw/{run}/cycle-1")
    assert average_step_time_us(overview) == pytest.approx(parsed.avg_step_time_us, rel=0.01)
    assert parsed.avg_step_time_us == pytest.approx(EXPECTED_AVG_US)
    assert [row[0] for row in overview["steps"]["rows"]] == [str(s.step) for s in parsed.steps]  # tail dropped
    assert step_totals_us(overview) == pytest.approx([s.duration_us for s in parsed.steps], rel=0.01)
    busy = [sum(v) for v in zip(*(_step_column(overview, c) for c in ("Kernel", "Memcpy", "Memset")))]
    assert busy == pytest.approx([parsed.device_busy_us_by_step[s.step] for s in parsed.steps], rel=0.01)


@pytest.mark.tensorboard
def test_plugin_on_raw_today_trace_shows_host_time_only(tensorboard, tensorboard_logdir):
    parsed = parse_trace(tensorboard_logdir[1]["today"])
    overview = _overview(tensorboard, "raw/today/cycle-1")
    # no launch recognised: every host span is a step, kernels ignored, nothing dropped
    assert average_step_time_us(overview) == pytest.approx(HOST_ONLY_AVG_US, rel=0.01)
    assert len(overview["steps"]["rows"]) == 5
    assert average_step_time_us(overview) < 0.7 * parsed.avg_step_time_us


@pytest.mark.tensorboard
@pytest.mark.parametrize("run", ["today", "today-gpu-step-annotations"])
def test_plugin_on_compat_copy_agrees_with_reader(tensorboard, tensorboard_logdir, run):
    parsed = parse_trace(tensorboard_logdir[1][run])
    assert parsed.avg_step_time_us == pytest.approx(EXPECTED_AVG_US)
    overview = _overview(tensorboard, f"compat/{run}/cycle-1")
    assert average_step_time_us(overview) == pytest.approx(parsed.avg_step_time_us, rel=0.01)
    assert [row[0] for row in overview["steps"]["rows"]] == ["11", "12", "13"]
    assert step_totals_us(overview) == pytest.approx([s.duration_us for s in parsed.steps], rel=0.01)


@pytest.mark.tensorboard
def test_plugin_counts_gpu_side_step_annotations_of_raw_trace_as_steps(tensorboard):
    """Why the copy re-labels them: on the raw trace the plugin shows 5 host + 4 GPU-side spans."""
    overview = _overview(tensorboard, "raw/today-gpu-step-annotations/cycle-1")
    assert len(overview["steps"]["rows"]) == 9


@pytest.mark.tensorboard
def test_kernel_view_ties_kernels_to_operators_only_on_compat_copy(tensorboard):
    worker = f"gpuhost_{HOST_PID}"

    def tables(run):
        by_kernel = tensorboard.get("/kernel/table", run=run, worker=worker, span="1", group_by="Kernel")["data"]
        by_op = tensorboard.get("/kernel/table", run=run, worker=worker, span="1", group_by="KernelNameAndOpName")
        return by_kernel, by_op["data"]

    for run in ("raw/today/cycle-1", "compat/today/cycle-1"):
        assert "Kernel" in tensorboard.get("/views", run=run)
        by_kernel, _ = tables(run)
        names = [c["name"] for c in by_kernel["columns"]]
        calls = {row[0]: row[names.index("Calls")] for row in by_kernel["rows"]}
        assert calls == KERNEL_CALLS  # kernels themselves are read either way
    _, raw_by_op = tables("raw/today/cycle-1")
    _, compat_by_op = tables("compat/today/cycle-1")
    _, era_by_op = tables("raw/era2022/cycle-1")
    pairs = {(row[0], row[1]): row[8] for row in compat_by_op["rows"]}  # (kernel, operator): calls
    assert pairs == {(row[0], row[1]): row[8] for row in era_by_op["rows"]}
    assert pairs[("gemm_kernel", "aten::mm")] == 4
    assert pairs[("triton_add_kernel", "aten::add")] == 1  # launched through the driver API
    assert pairs[("prologue_kernel", "CallTreeRoot")] == 1  # launched before the trace: no operator
    # on the raw trace no launch is recognised: every kernel hangs off the tree's root
    assert {row[1] for row in raw_by_op["rows"]} == {"CallTreeRoot"}


@pytest.mark.tensorboard
@pytest.mark.parametrize("run", ["raw/today/cycle-1", "compat/today/cycle-1", "raw/era2022/cycle-1"])
def test_memory_view_peaks(tensorboard, run):
    worker = f"gpuhost_{HOST_PID}"
    assert "Memory" in tensorboard.get("/views", run=run)
    curve = tensorboard.get("/memory_curve", run=run, worker=worker, span="1", memory_metric="KB")
    peaks = curve["metadata"]["peaks"]
    expected = {"GPU0": EXPECTED_PEAKS_BY_DEVICE["cuda:0"], "GPU1": EXPECTED_PEAKS_BY_DEVICE["cuda:1"],
                "CPU": EXPECTED_PEAKS_BY_DEVICE["cpu"]}
    assert peaks == {dev: f"Peak Memory Usage: {value / 1024:.1f}KB" for dev, value in expected.items()}


@pytest.mark.tensorboard
def test_plugin_on_compat_copy_of_suite_run_agrees_with_summary(tensorboard, tensorboard_logdir):
    """The copy of real (CPU) traces of the tiny suite run: categories renamed, same figures."""
    _, _, suite = tensorboard_logdir
    for run, records in _suite_plugin_runs(suite).items():
        by_worker: Dict[str, List[dict]] = {}
        for record in records:
            by_worker.setdefault(TRACE_NAME.match(os.path.basename(record["file"])).group("worker"), []).append(record)
        assert tensorboard.get("/workers", run=run, view="Overview") == sorted(by_worker)
        for worker, worker_records in by_worker.items():
            ordered = sorted(worker_records, key=lambda r: int(TRACE_NAME.match(os.path.basename(r["file"]))
                                                               .group("timestamp")))
            spans = tensorboard.get("/spans", run=run, worker=worker)
            assert spans == [str(i) for i in range(1, len(ordered) + 1)]
            for span, record in zip(spans, ordered):
                overview = tensorboard.get("/overview", run=run, worker=worker, span=span)
                assert average_step_time_us(overview) == pytest.approx(record["avg_step_time_us"], rel=0.01)
