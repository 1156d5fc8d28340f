"""Reads torch.profiler Chrome-trace files (``*.pt.trace.json``) the way TensorBoard does.

Two spellings of the event categories exist, and both are read, in any letter case:

=================  ==========================  ==========================
what               today's kineto (torch 2.x)  2022-era kineto
=================  ==========================  ==========================
host operator      ``cpu_op``                  ``Operator``
CUDA API call      ``cuda_runtime``,           ``Runtime``
                   ``cuda_driver``
kernel             ``kernel``                  ``Kernel``
copy / set         ``gpu_memcpy``,             ``Memcpy``, ``Memset``
                   ``gpu_memset``
profiler step      ``user_annotation``         ``Operator`` (``cpu_op``)
=================  ==========================  ==========================

torch-tb-profiler 0.4.3 knows only the 2022 names for CUDA API calls, so on today's GPU
traces it cannot tie kernels to steps (see :mod:`tlbench.measure.tensorboard_compat`); this module
applies the plugin's step rule to both spellings.

Step rule (torch-tb-profiler 0.4.3, ``profiler/event_parser.py``, ``StepParser``):

* a step is the span of a host-side ``ProfilerStep#N`` event (``_parse_step``);
* a launch (CUDA runtime or driver call) belongs to a step when it lies wholly inside the
  step's host span; a launch that starts before the step or crosses its end belongs to
  none (``_find_device_steps``, a two-way merge over launches sorted by start time);
* device events (kernels, copies, sets) belong to the launch with the same correlation id
  (``NodeParserMixin._parse_node``);
* if at least one device event belongs to a step, step times become device-aware
  (``_update_steps_duration``): a step starts no earlier than the previous step's end (the
  first one no earlier than the end of any device event that belongs to no step and ends
  before the first step's first device event starts) and ends no earlier than the last of
  its own device events;
* then trailing steps whose kernels the profiler may not have captured are dropped
  (``_update_steps_duration``): everything after the last step that owns a device event,
  and that step too when it owns fewer than 0.8 times the device events of the step before.

Peak memory is the largest "Total Allocated" among the ``[memory]`` events of a device
(args "Device Type": 0 = CPU, 1 = CUDA, and "Device Id"), as in the plugin's memory view
(``memory_parser.py``, ``MemorySnapshot.get_peak_memory``).
"""

from __future__ import annotations

import bisect
import glob
import gzip
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "MemoryTimeline",
    "memory_timeline",
    "CATEGORY_KINDS",
    "DEVICE_KINDS",
    "DEVICE_TYPE_NAMES",
    "HOST_KINDS",
    "TRACE_FILE_NAME",
    "MemorySample",
    "TraceError",
    "TraceFile",
    "TraceStep",
    "category_kind",
    "find_trace_files",
    "load_trace",
    "load_trace_events",
    "parse_trace",
    "run_trace_paths",
]

# what the category names (lower-cased) mean; both spellings
CATEGORY_KINDS: Dict[str, str] = {
    "cpu_op": "operator",
    "operator": "operator",
    "profilerstep": "operator",
    "user_annotation": "user_annotation",
    "gpu_user_annotation": "gpu_user_annotation",
    "cuda_runtime": "runtime",
    "cuda_driver": "runtime",
    "runtime": "runtime",
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
}
# host-side kinds whose ProfilerStep#N events are steps and whose spans can be the region
HOST_KINDS = frozenset({"operator", "user_annotation"})
DEVICE_KINDS = frozenset({"kernel", "memcpy", "memset"})
DEVICE_TYPE_NAMES = {0: "cpu", 1: "cuda"}
# the trace file names torch-tb-profiler lists: <worker>[.<timestamp>].pt.trace.json[.gz]
TRACE_FILE_NAME = re.compile(r"^(?P<worker>.*?)(?:\.(?P<timestamp>\d+))?\.pt\.trace\.json(?:\.gz)?$")

_BYTES_PER_MB = 2**20  # MB in every name means MiB
_STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")
# the plugin keeps the last step that owns device events only if it owns at least this
# fraction of the device events of the step before it
_TAIL_STEP_RATIO = 0.8


@dataclass
class TraceStep:
    """One profiler step: ``start_us``/``end_us`` as TensorBoard's overview counts it."""

    step: int
    start_us: float
    end_us: float
    host_duration_us: float

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


@dataclass
class MemorySample:
    """One ``[memory]`` event: the device's total allocated bytes after an (de)allocation."""

    time_us: float
    total_allocated_bytes: int
    device: str
    device_id: Optional[int] = None


@dataclass
class TraceFile:
    """What one trace file tells about its steps, a named region, the device and memory.

    Attributes:
      steps: the steps TensorBoard's overview shows, in time order.
      region_us_by_step: host-side time of the named region per step (0.0 without one).
      peak_allocated_bytes: largest total allocated per device type (``"cpu"``, ``"cuda"``,
        the latter over all CUDA devices).
      memory_samples: every ``[memory]`` event, by time.
      has_device_activity: the trace holds kernels, copies or sets.
      device_busy_us: summed durations of the kernels, copies and sets, each clipped to the
        steps' spans (on one stream: the time the GPU was busy within the steps, what the
        plugin's overview shows as Kernel + Memcpy + Memset times the number of steps).
      device_busy_us_by_step: the same per step.
      host_steps: every ``ProfilerStep#N`` span as recorded (host-side, before the GPU rule).
      dropped_steps: trailing steps left out by the plugin's rule (device-aware times).
      device_events_by_step: device events launched from inside each step's host span.
      uses_device_time: whether step times were extended to device events (the plugin's rule
        applies only when some device event belongs to a step).
      peak_allocated_bytes_by_device: largest total allocated per device, ``"cpu"``,
        ``"cuda:0"``, ``"cuda:1"``, ...
    """

    path: str
    steps: List[TraceStep]
    region_us_by_step: Dict[int, float]
    peak_allocated_bytes: Dict[str, int]
    memory_samples: List[MemorySample] = field(default_factory=list)
    has_device_activity: bool = False
    device_busy_us: float = 0.0
    device_busy_us_by_step: Dict[int, float] = field(default_factory=dict)
    host_steps: List[TraceStep] = field(default_factory=list)
    dropped_steps: List[TraceStep] = field(default_factory=list)
    device_events_by_step: Dict[int, int] = field(default_factory=dict)
    uses_device_time: bool = False
    peak_allocated_bytes_by_device: Dict[str, int] = field(default_factory=dict)

    @property
    def avg_step_time_us(self) -> Optional[float]:
        """Mean step duration: the overview's "Average Step Time" (None without steps)."""
        if not self.steps:
            return None
        return sum(s.duration_us for s in self.steps) / len(self.steps)


class TraceError(ValueError):
    """A trace file that is missing, not JSON, or not a torch.profiler Chrome trace."""


def category_kind(category) -> Optional[str]:
    """What an event category means, in either spelling and any letter case (see
    :data:`CATEGORY_KINDS`), or None for categories that play no part here."""
    if not isinstance(category, str):
        return None
    return CATEGORY_KINDS.get(category.lower())


def load_trace(path: str) -> dict:
    """The whole JSON object of a (possibly gzipped) Chrome-trace file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TraceError(f"trace {path!r} is not readable Chrome-trace JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(f"trace {path!r} has no 'traceEvents' list")
    return data


def load_trace_events(path: str) -> List[dict]:
    """Returns the ``traceEvents`` list of a (possibly gzipped) Chrome-trace JSON file."""
    return load_trace(path)["traceEvents"]


def find_trace_files(root: str, exclude: Iterable[str] = ()) -> List[str]:
    """Every trace file TensorBoard would list under ``root`` (recursively), sorted.

    Names follow :data:`TRACE_FILE_NAME`; hidden files (such as the ``.tmp-*`` files of an
    unfinished atomic write) and anything under a folder of ``exclude`` are left out.
    """
    excluded = [os.path.abspath(e) for e in exclude]
    found = []
    for path in glob.glob(os.path.join(glob.escape(root), "**", "*.pt.trace.json*"), recursive=True):
        name = os.path.basename(path)
        if name.startswith(".") or not TRACE_FILE_NAME.match(name) or not os.path.isfile(path):
            continue
        absolute = os.path.abspath(path)
        if any(absolute == e or absolute.startswith(e + os.sep) for e in excluded):
            continue
        found.append(path)
    return sorted(found)


def run_trace_paths(run_dir: str, summary: Optional[dict] = None) -> List[str]:
    """The trace files of one run folder: those its summary.json names (``traces[*].file``,
    relative to the run folder: ``cycle-1/<name>.pt.trace.json`` or, in older runs, just the
    name), else every trace file under the folder."""
    if summary is None:
        try:
            with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
                summary = json.load(f)
        except (OSError, json.JSONDecodeError):
            summary = {}
    records = summary.get("traces") if isinstance(summary, dict) else None
    files = [t["file"] for t in records or [] if isinstance(t, dict) and isinstance(t.get("file"), str)]
    if files:
        return [os.path.join(run_dir, f) for f in files]
    return find_trace_files(run_dir)


@dataclass
class _Launch:
    start: float
    end: float
    device_events: List["_DeviceEvent"] = field(default_factory=list)


@dataclass(eq=False)
class _DeviceEvent:
    start: float
    end: float
    kind: str


def parse_trace(path: str, region_name: Optional[str] = None) -> TraceFile:
    """Parses one trace file.

    Args:
      path: a ``*.pt.trace.json`` (or ``.json.gz``) written by ``tensorboard_trace_handler``
        or ``export_chrome_trace``, with today's or 2022-era category names.
      region_name: a ``record_function`` label whose host-side time is summed per step (a
        region counts for the step whose host span holds its start).
    """
    events = load_trace_events(path)
    host_steps: List[TraceStep] = []
    regions: List[Tuple[float, float]] = []
    timeline: List[tuple] = []  # (ts, position in the file, "launch" or "device", the item, correlation id)
    device_events: List[_DeviceEvent] = []
    launches: List[_Launch] = []
    memory: List[MemorySample] = []
    for order, event in enumerate(events):
        if not isinstance(event, dict):
            continue
        phase = event.get("ph")
        name = event.get("name", "")
        if phase == "X":
            kind = category_kind(event.get("cat"))
            if kind is None:
                continue
            start = float(event.get("ts", 0.0))
            end = start + float(event.get("dur", 0.0) or 0.0)
            if kind in HOST_KINDS:
                match = _STEP_NAME.match(str(name))
                if match:
                    host_steps.append(TraceStep(int(match.group(1)), start, end, end - start))
                elif region_name is not None and name == region_name:
                    regions.append((start, end))
            elif kind == "runtime":
                launch = _Launch(start, end)
                launches.append(launch)
                timeline.append((start, order, "launch", launch, _correlation(event)))
            elif kind in DEVICE_KINDS:
                device_event = _DeviceEvent(start, end, kind)
                device_events.append(device_event)
                timeline.append((start, order, "device", device_event, _correlation(event)))
        elif phase in ("i", "I") and name == "[memory]":
            sample = _memory_sample(event)
            if sample is not None:
                memory.append(sample)
    host_steps.sort(key=lambda s: s.start_us)
    _attach_device_events(timeline)
    steps, dropped, counts, uses_device_time = _device_aware_steps(host_steps, launches, device_events)
    kept = {s.step for s in steps}
    region_by_step = {s.step: 0.0 for s in steps}
    for start, end in regions:
        for step in host_steps:
            if step.start_us <= start < step.end_us:
                if step.step in kept:
                    region_by_step[step.step] += end - start
                break
    busy_by_step = {s.step: _clipped_sum(device_events, s.start_us, s.end_us) for s in steps}
    memory.sort(key=lambda m: m.time_us)
    peaks: Dict[str, int] = {}
    peaks_by_device: Dict[str, int] = {}
    for sample in memory:
        peaks[sample.device] = max(peaks.get(sample.device, 0), sample.total_allocated_bytes)
        key = _device_key(sample)
        peaks_by_device[key] = max(peaks_by_device.get(key, 0), sample.total_allocated_bytes)
    return TraceFile(
        path, steps, region_by_step, peaks, memory,
        has_device_activity=bool(device_events),
        device_busy_us=_busy_within(device_events, steps),
        device_busy_us_by_step=busy_by_step,
        host_steps=[TraceStep(s.step, s.start_us, s.end_us, s.host_duration_us) for s in host_steps],
        dropped_steps=dropped,
        device_events_by_step={s.step: counts.get(s.step, 0) for s in host_steps},
        uses_device_time=uses_device_time,
        peak_allocated_bytes_by_device=peaks_by_device,
    )


def _correlation(event: dict) -> Optional[int]:
    args = event.get("args")
    value = args.get("correlation") if isinstance(args, dict) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _memory_sample(event: dict) -> Optional[MemorySample]:
    args = event.get("args")
    if not isinstance(args, dict) or args.get("Total Allocated") is None:
        return None  # the plugin skips samples without a total (NaN)
    device_type = args.get("Device Type")
    device = DEVICE_TYPE_NAMES.get(device_type, str(device_type))
    device_id = args.get("Device Id")
    return MemorySample(float(event.get("ts", 0.0)), int(args["Total Allocated"]), device,
                        int(device_id) if isinstance(device_id, (int, float)) else None)


def _device_key(sample: MemorySample) -> str:
    if sample.device == "cpu" or sample.device_id is None or sample.device_id < 0:
        return sample.device
    return f"{sample.device}:{sample.device_id}"


def _attach_device_events(timeline) -> None:
    """Gives each launch the device events of its correlation id, in time order as the
    plugin does: a device event goes to the latest launch with its id that started before
    it, or, when there is none yet, to the next launch with that id."""
    timeline.sort(key=lambda item: (item[0], item[1]))
    launch_by_correlation: Dict[int, _Launch] = {}
    waiting: Dict[int, List[_DeviceEvent]] = {}
    for _, _, what, item, correlation in timeline:
        if what == "launch":
            item.device_events.extend(waiting.pop(correlation, []))
            launch_by_correlation[correlation] = item
        elif correlation in launch_by_correlation:
            launch_by_correlation[correlation].device_events.append(item)
        else:
            waiting.setdefault(correlation, []).append(item)


def _device_aware_steps(host_steps: List[TraceStep], launches: List[_Launch], device_events: List[_DeviceEvent]):
    """The plugin's step rule (see the module docstring): (kept steps, dropped steps,
    device events per step number, whether device times were used)."""
    count = len(host_steps)
    device_min = [float("inf")] * count
    device_max = [float("-inf")] * count
    matched_count = [0] * count
    matched = set()
    # two-way merge of the launches (by start time) and the steps (in time order)
    i_step = 0
    for launch in sorted(launches, key=lambda item: item.start):
        inside = False
        while i_step < count:
            step = host_steps[i_step]
            if launch.start < step.start_us:
                break  # starts before the step (between steps, or crossing its start): no step
            if launch.end <= step.end_us:
                inside = True
                break
            if launch.start < step.end_us:
                break  # crosses the step's end: no step
            i_step += 1  # starts at or after the step's end: try the next step
        if i_step == count:
            break
        if not inside:
            continue
        for device_event in launch.device_events:
            device_min[i_step] = min(device_min[i_step], device_event.start)
            device_max[i_step] = max(device_max[i_step], device_event.end)
            matched.add(device_event)
            matched_count[i_step] += 1
    counts = {s.step: matched_count[i] for i, s in enumerate(host_steps)}
    if not matched:
        return [TraceStep(s.step, s.start_us, s.end_us, s.host_duration_us) for s in host_steps], [], counts, False
    previous_end = host_steps[0].start_us
    if device_min[0] != float("inf"):
        for device_event in device_events:
            if device_event not in matched and device_event.end < device_min[0]:
                previous_end = max(previous_end, device_event.end)
    steps: List[TraceStep] = []
    for i, host in enumerate(host_steps):
        start = max(previous_end, host.start_us)
        if device_min[i] == float("inf"):  # no device event of its own
            end = max(host.end_us, start)
        else:
            end = max(host.end_us, device_max[i])
            end = max(end, start)
        steps.append(TraceStep(host.step, start, end, host.host_duration_us))
        previous_end = end
    keep = count
    if count > 1:
        last = count - 1
        while last >= 0 and matched_count[last] == 0:
            last -= 1
        if last >= 0:
            keep = last + 1
            if last > 0 and matched_count[last - 1] * _TAIL_STEP_RATIO > matched_count[last]:
                keep = last
    return steps[:keep], steps[keep:], counts, True


def _clipped_sum(device_events: List[_DeviceEvent], start: float, end: float) -> float:
    return sum(max(0.0, min(e.end, end) - max(e.start, start)) for e in device_events)


def _busy_within(device_events: List[_DeviceEvent], steps: List[TraceStep]) -> float:
    """Summed device-event durations clipped to the union of the steps' spans."""
    spans: List[List[float]] = []
    for step in sorted(steps, key=lambda s: s.start_us):
        if spans and step.start_us <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], step.end_us)
        else:
            spans.append([step.start_us, step.end_us])
    if not spans:
        return 0.0
    starts = [s[0] for s in spans]
    total = 0.0
    for event in device_events:
        i = max(0, bisect.bisect_right(starts, event.start) - 1)
        while i < len(spans) and spans[i][0] < event.end:
            total += max(0.0, min(event.end, spans[i][1]) - max(event.start, spans[i][0]))
            i += 1
    return total


@dataclass
class MemoryTimeline:
    """Allocated memory over the recorded steps of a run's traces, profiler cycles placed back
    to back: ``times_ms[i]`` (ms from the first recorded step's start) and ``allocated_mb[i]``
    (MiB), NaN in both between cycles so that a line breaks there."""

    times_ms: List[float]
    allocated_mb: List[float]

    @property
    def peak_mb(self) -> float:
        return max(y for y in self.allocated_mb if not math.isnan(y))


def memory_timeline(trace_paths: Sequence[str], device: str, problems: Optional[List[str]] = None
                    ) -> Optional[MemoryTimeline]:
    """The :class:`MemoryTimeline` of ``device`` ("cpu" or "cuda") in the given trace files, or
    None when they hold no memory event around a recorded step; an unreadable file is named in
    ``problems`` and left out."""
    xs: List[float] = []
    ys: List[float] = []
    offset_ms = 0.0
    for path in trace_paths:
        try:
            parsed = parse_trace(path)
        except TraceError as error:
            if problems is not None:
                problems.append(f"{path}: not read for the memory timeline ({str(error).splitlines()[0][:200]})")
            continue
        if not parsed.steps:
            continue
        start_us = min(step.start_us for step in parsed.steps)
        end_us = max(step.end_us for step in parsed.steps)
        samples = [m for m in parsed.memory_samples if m.device == device]
        before = [m for m in samples if m.time_us <= start_us]
        inside = [m for m in samples if start_us < m.time_us <= end_us]
        if not before and not inside:
            continue
        if xs:
            xs.append(math.nan)
            ys.append(math.nan)
        if before:  # the level the recorded steps start from
            xs.append(offset_ms)
            ys.append(before[-1].total_allocated_bytes / _BYTES_PER_MB)
        for sample in inside:
            xs.append(offset_ms + (sample.time_us - start_us) / 1000)
            ys.append(sample.total_allocated_bytes / _BYTES_PER_MB)
        xs.append(offset_ms + (end_us - start_us) / 1000)  # hold the last level to the end of the steps
        ys.append(ys[-1])
        offset_ms += (end_us - start_us) / 1000
    return MemoryTimeline(xs, ys) if xs else None

