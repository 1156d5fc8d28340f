"""Reads torch.profiler Chrome-trace files (``*.pt.trace.json``) the way TensorBoard does.

Step times follow torch-tb-profiler 0.4.3's overview: a step is the span of its
``ProfilerStep#N`` event; when the trace has GPU activity, a step starts no earlier than
the previous step's end and ends no earlier than the last GPU kernel/memcpy/memset
launched from it. Peak memory is the largest "Total Allocated" among the ``[memory]``
events of a device, as in the plugin's memory view.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

_STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")
_DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
_RUNTIME_CATEGORIES = {"cuda_runtime", "cuda_driver"}
DEVICE_TYPE_NAMES = {0: "cpu", 1: "cuda"}


@dataclass
class TraceStep:
    step: int
    start_us: float
    end_us: float
    host_duration_us: float

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


@dataclass
class MemorySample:
    time_us: float
    total_allocated_bytes: int
    device: str


@dataclass
class TraceFile:
    """What one trace file tells about its steps, a named region and memory."""

    path: str
    steps: List[TraceStep]
    region_us_by_step: Dict[int, float]
    peak_allocated_bytes: Dict[str, int]
    memory_samples: List[MemorySample] = field(default_factory=list)
    has_device_activity: bool = False


class TraceError(ValueError):
    """A trace file that is missing, not JSON, or not a torch.profiler Chrome trace."""


def load_trace_events(path: str) -> List[dict]:
    """Returns the ``traceEvents`` list of a (possibly gzipped) Chrome-trace JSON file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TraceError(f"trace {path!r} is not readable Chrome-trace JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(f"trace {path!r} has no 'traceEvents' list")
    return data["traceEvents"]


def parse_trace(path: str, region_name: Optional[str] = None) -> TraceFile:
    """Parses one trace file.

    Args:
      path: a ``*.pt.trace.json`` (or ``.json.gz``) written by ``tensorboard_trace_handler``.
      region_name: a ``record_function`` label whose host-side time is summed per step.
    """
    events = load_trace_events(path)
    host_steps: List[Tuple[int, float, float]] = []
    regions: List[Tuple[float, float]] = []
    runtime_by_correlation: Dict[int, float] = {}
    device_events: List[Tuple[int, float]] = []  # (correlation, end_us)
    memory: List[MemorySample] = []
    for event in events:
        name = event.get("name", "")
        category = event.get("cat", "")
        if event.get("ph") == "X":
            start = float(event.get("ts", 0.0))
            end = start + float(event.get("dur", 0.0))
            match = _STEP_NAME.match(str(name))
            if match and category in ("user_annotation", "cpu_op", "ProfilerStep"):
                host_steps.append((int(match.group(1)), start, end))
            elif region_name is not None and name == region_name and category == "user_annotation":
                regions.append((start, end))
            elif category in _RUNTIME_CATEGORIES:
                correlation = event.get("args", {}).get("correlation")
                if correlation is not None:
                    runtime_by_correlation[int(correlation)] = start
            elif category in _DEVICE_CATEGORIES:
                correlation = event.get("args", {}).get("correlation")
                if correlation is not None:
                    device_events.append((int(correlation), end))
        elif name == "[memory]":
            args = event.get("args", {})
            device = DEVICE_TYPE_NAMES.get(args.get("Device Type"), str(args.get("Device Type")))
            memory.append(MemorySample(float(event.get("ts", 0.0)), int(args.get("Total Allocated", 0)), device))
    host_steps.sort(key=lambda s: s[1])
    steps = _device_aware_steps(host_steps, runtime_by_correlation, device_events)
    region_by_step = {s.step: 0.0 for s in steps}
    for start, end in regions:
        for step in host_steps:
            if step[1] <= start < step[2]:
                region_by_step[step[0]] += end - start
                break
    peaks: Dict[str, int] = {}
    for sample in memory:
        peaks[sample.device] = max(peaks.get(sample.device, 0), sample.total_allocated_bytes)
    memory.sort(key=lambda m: m.time_us)
    return TraceFile(path, steps, region_by_step, peaks, memory, has_device_activity=bool(device_events))


def _device_aware_steps(host_steps, runtime_by_correlation, device_events) -> List[TraceStep]:
    if not device_events:
        return [TraceStep(n, start, end, end - start) for n, start, end in host_steps]
    device_end_by_step: Dict[int, float] = {}
    for correlation, device_end in device_events:
        launch = runtime_by_correlation.get(correlation)
        if launch is None:
            continue
        for n, start, end in host_steps:
            if start <= launch < end:
                device_end_by_step[n] = max(device_end_by_step.get(n, device_end), device_end)
                break
    steps: List[TraceStep] = []
    previous_end = host_steps[0][1] if host_steps else 0.0
    for n, start, end in host_steps:
        step_start = max(previous_end, start)
        step_end = max(end, device_end_by_step.get(n, step_start))
        steps.append(TraceStep(n, step_start, step_end, end - start))
        previous_end = step_end
    return steps
