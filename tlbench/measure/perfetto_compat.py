"""Viewer copies of Chrome traces in which every span nests as the Perfetto UI requires.

Perfetto's trace processor keeps one stack of open spans per track (thread or GPU stream)
and drops a complete event (``"ph": "X"``) that starts inside an open span and ends after
it (stat ``slice_drop_overlapping_complete_event``, an error in the UI's info page). Such
pairs are common in torch.profiler traces recorded with ``with_stack=True``:

* every ``record_function`` region (``user_annotation`` events: ``ProfilerStep#N`` and the
  suite's loss region, named after the implementation) starts inside the Python call that
  opens it (``<built-in method _record_function_enter_new ...>``, a ``python_function``
  event of 10-40 us) and ends inside the call that closes it (``.../profiler.py(...):
  __exit__`` or ``profiler.py(...): step``). Python frames and regions each nest among
  themselves, but not with each other, so on one thread they cross; Perfetto then drops the
  region, which is exactly what the suite measures. (On the tests' tiny CPU run: 4 drops per
  trace of two steps, every ``ProfilerStep#N`` and every loss region.)
* anything else that crosses (a GPU annotation that spans two streams' worth of kernels, a
  hand-written trace, rounding in another tool): rare, but dropped just the same.

:func:`viewer_trace` makes a copy that the importer takes whole:

1. every host ``user_annotation`` event moves to a track of its own beside its thread (same
   process, a new thread id, named ``<thread name> [user_annotation]``). Its times do not
   change, so the steps and regions are shown exactly as recorded, at the top of a track
   instead of buried in the Python stack, and the Python frames keep their times too;
2. the copy is then checked per track with the importer's own rule (timestamps as integer
   nanoseconds, ``round(ts * 1000)`` and ``round(dur * 1000)``, spans taken in time order,
   longer first among those that start together); a span that would still cross its
   enclosing span moves, with the spans inside it, to an overflow track of its thread or
   stream (``<name> [overlapping spans N]``), the first one where it nests;
3. the events are written in time order, metadata first and, among events that start
   together, longer spans first, so that any importer sees a parent before its children
   (the Chrome trace format gives file order no meaning).

Nothing else changes: the same events with the same names, categories, times, ids and
arguments (only ``tid`` differs for moved events), flow events (``s``/``f``) and
``[memory]`` counters as they were, the same top-level fields. ``B``/``E`` pairs nest by
construction and are left as they are. The raw trace file is never modified;
:func:`write_viewer_copy` writes the copy elsewhere, atomically.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Tuple

from tlbench.core.io import atomic_write
from tlbench.measure.trace import category_kind, load_trace

__all__ = [
    "ANNOTATION_TRACK_SUFFIX",
    "OVERFLOW_TRACK_SUFFIX",
    "SYNTHETIC_TID_BASE",
    "CrossingSpan",
    "ViewerChanges",
    "crossing_spans",
    "to_ns",
    "viewer_trace",
    "viewer_trace_bytes",
    "write_viewer_copy",
]

ANNOTATION_TRACK_SUFFIX = " [user_annotation]"
OVERFLOW_TRACK_SUFFIX = " [overlapping spans {}]"
# New tracks get thread ids from here on (skipping any id the trace uses): far above Linux's
# pid_max (2**22) so that they never pass for a real thread, below 2**31 because the
# importer keeps thread ids as 32-bit numbers.
SYNTHETIC_TID_BASE = 2_000_000_000

TrackKey = Tuple[Hashable, Hashable]  # (pid, tid) as written in the trace


@dataclass
class CrossingSpan:
    """A complete event that the importer would drop: it starts inside ``parent_name`` on
    the same track and ends ``excess_ns`` after it."""

    index: int  # position in the trace's event list
    name: str
    category: Optional[str]
    track: TrackKey
    parent_name: str
    excess_ns: int


@dataclass
class ViewerChanges:
    """What :func:`viewer_trace` changed: counts per event name and the tracks it added."""

    moved_annotations: Dict[str, int] = field(default_factory=dict)  # name -> events moved to their own track
    moved_overlapping: Dict[str, int] = field(default_factory=dict)  # name -> events moved to an overflow track
    new_tracks: List[str] = field(default_factory=list)  # the names of the added tracks

    @property
    def changed(self) -> bool:
        return bool(self.moved_annotations or self.moved_overlapping)


def to_ns(value_us) -> Optional[int]:
    """A timestamp or duration in microseconds as the importer stores it: integer nanoseconds,
    ``llround(value * 1000.0)`` (for kineto's three-decimal values this is the exact decimal
    value); None for anything that is not a finite number."""
    if isinstance(value_us, bool) or not isinstance(value_us, (int, float)):
        return None
    if isinstance(value_us, int):
        return value_us * 1000
    if not math.isfinite(value_us):
        return None
    scaled = abs(value_us) * 1000.0
    whole = math.floor(scaled)  # exact: no "+ 0.5" that a large double would round away
    rounded = int(whole) + (1 if scaled - whole >= 0.5 else 0)  # half away from zero
    return rounded if value_us >= 0 else -rounded


@dataclass
class _Span:
    index: int
    start_ns: int
    end_ns: int
    event: dict


def _spans_in_order(events: List[object]) -> List[_Span]:
    """The complete events with usable times, in the order the importer takes them."""
    spans = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or event.get("ph") != "X":
            continue
        start = to_ns(event.get("ts"))
        duration = to_ns(event.get("dur", 0)) if event.get("dur") is not None else 0
        if start is None or duration is None or duration < 0:
            continue  # the importer skips these itself (and counts them); nothing to nest
        spans.append(_Span(index, start, start + duration, event))
    spans.sort(key=lambda s: (s.start_ns, -(s.end_ns - s.start_ns), s.index))
    return spans


def _track(event: dict) -> TrackKey:
    return (_hashable(event.get("pid")), _hashable(event.get("tid")))


def _hashable(value) -> Hashable:
    return value if isinstance(value, (int, float, str, type(None))) else json.dumps(value, sort_keys=True)


def crossing_spans(trace: dict) -> List[CrossingSpan]:
    """Every complete event of ``trace`` that Perfetto's JSON importer would drop as a
    ``slice_drop_overlapping_complete_event``: per track, spans in time order (longer first
    among those that start together), a span that starts before the innermost open span
    ends and ends after it. An empty list means the importer keeps every span."""
    crossing: List[CrossingSpan] = []
    stacks: Dict[TrackKey, List[_Span]] = {}
    for span in _spans_in_order(trace.get("traceEvents") or []):
        stack = stacks.setdefault(_track(span.event), [])
        while stack and stack[-1].end_ns <= span.start_ns:
            stack.pop()
        if stack and span.end_ns > stack[-1].end_ns:
            parent = stack[-1]
            crossing.append(CrossingSpan(span.index, str(span.event.get("name")), span.event.get("cat"),
                                         _track(span.event), str(parent.event.get("name")),
                                         span.end_ns - parent.end_ns))
            continue  # dropped: it is not pushed, as in the importer
        stack.append(span)
    return crossing


class _TidAllocator:
    """Thread ids for new tracks, unused anywhere in the trace."""

    def __init__(self, events: List[object]):
        self.used = {e.get("tid") for e in events if isinstance(e, dict)}
        self.used |= {e.get("pid") for e in events if isinstance(e, dict)}
        self.next = SYNTHETIC_TID_BASE

    def new(self) -> int:
        while self.next in self.used:
            self.next += 1
        self.used.add(self.next)
        self.next += 1
        return self.next - 1


def _thread_names(events: List[object]) -> Tuple[Dict[TrackKey, str], Dict[TrackKey, object]]:
    names: Dict[TrackKey, str] = {}
    sort_index: Dict[TrackKey, object] = {}
    for event in events:
        if not isinstance(event, dict) or event.get("ph") != "M" or not isinstance(event.get("args"), dict):
            continue
        if event.get("name") == "thread_name" and isinstance(event["args"].get("name"), str):
            names[_track(event)] = event["args"]["name"]
        elif event.get("name") == "thread_sort_index":
            sort_index[_track(event)] = event["args"].get("sort_index")
    return names, sort_index


def _is_host_annotation(event: dict) -> bool:
    return category_kind(event.get("cat")) == "user_annotation"


def viewer_trace(trace: dict) -> Tuple[dict, ViewerChanges]:
    """A copy of one trace's JSON object in which every span nests (see the module's text);
    ``trace`` itself is not modified. Returns the copy and what changed."""
    events = list(trace.get("traceEvents") or [])
    names, sort_index = _thread_names(events)
    tids = _TidAllocator(events)
    changes = ViewerChanges()
    new_tid: Dict[int, int] = {}  # event index -> its new tid
    metadata: List[dict] = []

    def add_track(origin: TrackKey, base_name: str, overflow_number: int, sample: dict) -> int:
        """A new thread of ``sample``'s process named after ``base_name``, sorted like ``origin``."""
        tid = tids.new()
        name = base_name.rstrip() + (OVERFLOW_TRACK_SUFFIX.format(overflow_number) if overflow_number else "")
        changes.new_tracks.append(name)
        metadata.append({"name": "thread_name", "ph": "M", "pid": sample.get("pid"), "tid": tid, "ts": sample.get("ts"),
                         "args": {"name": name}})
        if origin in sort_index:  # beside its thread in viewers that sort by it
            metadata.append({"name": "thread_sort_index", "ph": "M", "pid": sample.get("pid"), "tid": tid,
                             "ts": sample.get("ts"), "args": {"sort_index": sort_index[origin]}})
        return tid

    # 1. host annotations to a track of their own per thread
    annotation_tid: Dict[TrackKey, int] = {}
    for span in _spans_in_order(events):
        if _is_host_annotation(span.event):
            origin = _track(span.event)
            if origin not in annotation_tid:
                base_name = (names.get(origin) or f"thread {origin[1]}").rstrip() + ANNOTATION_TRACK_SUFFIX
                annotation_tid[origin] = add_track(origin, base_name, 0, span.event)
            new_tid[span.index] = annotation_tid[origin]
            name = str(span.event.get("name"))
            changes.moved_annotations[name] = changes.moved_annotations.get(name, 0) + 1

    # 2. anything that still crosses: to the first overflow track of its track where it nests
    lanes: Dict[TrackKey, List[Tuple[Optional[int], List[_Span]]]] = {}  # track -> [(tid or None = itself, stack)]
    for span in _spans_in_order(events):
        origin = (_track(span.event)[0], new_tid.get(span.index, _track(span.event)[1]))
        track_lanes = lanes.setdefault(origin, [(None, [])])
        for _, stack in track_lanes:
            while stack and stack[-1].end_ns <= span.start_ns:
                stack.pop()
        # the innermost open span it starts in, on any lane: its parent, if it nests there
        open_lanes = [(stack[-1].start_ns, position) for position, (_, stack) in enumerate(track_lanes) if stack]
        chosen = None
        if open_lanes:
            _, innermost = max(open_lanes)
            if track_lanes[innermost][1][-1].end_ns >= span.end_ns:
                chosen = innermost
        if chosen is None:
            chosen = next((p for p, (_, stack) in enumerate(track_lanes)
                           if not stack or stack[-1].end_ns >= span.end_ns), None)
        if chosen is None:
            original = _track(span.event)
            label = (names.get(original) or f"thread {original[1]}").rstrip() + (
                ANNOTATION_TRACK_SUFFIX if span.index in new_tid else "")
            track_lanes.append((add_track(original, label, len(track_lanes), span.event), []))
            chosen = len(track_lanes) - 1
        tid, stack = track_lanes[chosen]
        stack.append(span)
        if tid is not None:
            new_tid[span.index] = tid
            name = str(span.event.get("name"))
            changes.moved_overlapping[name] = changes.moved_overlapping.get(name, 0) + 1

    copied = [dict(event, tid=new_tid[i]) if i in new_tid else event for i, event in enumerate(events)]
    copy = dict(trace)
    copy["traceEvents"] = _time_order(copied + metadata)
    return copy, changes


def _time_order(events: List[object]) -> List[object]:
    """Metadata first, then by start (integer ns), longer spans first among those that start
    together, spans before other events that share their start; file order breaks ties."""

    def key(item):
        position, event = item
        if not isinstance(event, dict):
            return (0, 0, 0, 0, position)
        if event.get("ph") == "M":
            return (0, 0, 0, 0, position)
        start = to_ns(event.get("ts"))
        if start is None:
            return (1, 0, 0, 0, position)
        if event.get("ph") == "X":
            duration = to_ns(event.get("dur", 0)) or 0
            return (2, start, 0, -duration, position)
        return (2, start, 1, 0, position)

    return [event for _, event in sorted(enumerate(events), key=key)]


def viewer_trace_bytes(path: str) -> Tuple[bytes, ViewerChanges]:
    """The viewer copy of the trace file ``path`` (gzipped or not) as UTF-8 JSON bytes."""
    copy, changes = viewer_trace(load_trace(path))
    return json.dumps(copy, ensure_ascii=False).encode("utf-8"), changes


def write_viewer_copy(path: str, out_path: str) -> ViewerChanges:
    """Writes the viewer copy of the trace file ``path`` to ``out_path`` (gzipped when
    ``out_path`` ends in ``.gz``), atomically; ``path`` is only read. Raises
    :class:`tlbench.measure.trace.TraceError` for a file that is not Chrome-trace JSON."""
    data, changes = viewer_trace_bytes(path)

    def write(tmp_path: str) -> None:
        with open(tmp_path, "wb") as raw:
            raw.write(gzip.compress(data) if out_path.endswith(".gz") else data)

    atomic_write(out_path, write, suffix=".json")
    return changes
