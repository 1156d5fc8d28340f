"""``summary.json``: the typed record of one benchmark run, written and read everywhere.

A :class:`RunSummary` is made of parts: :class:`WhatRan` (the implementation, its backend and
the configuration), :class:`Environment` (device and versions), :class:`StepRecord` (the raw
per-step samples and the statistics derived from them), :class:`Memory`, :class:`Outcome`
(status, and for a failure its reason, batch and traceback), :class:`Outputs` (trace and table
files) and ``extras`` (fields a tool adds for itself, e.g. ``profile_model.py``'s labels).
The file stays one flat JSON object in the order of :data:`SUMMARY_KEYS`, extras last, so every
key is where readers of the first format look for it; ``summary.avg_step_time_us`` and the
like read and write the part that holds the key.

Schema versions:

- 0 (no ``schema_version`` key): the files written before the record was typed; they load,
  with the fields added later left at their defaults.
- 1: adds ``schema_version``, ``host_step_times_us``, ``device_busy_us``,
  ``cuda_max_memory_allocated_mb`` (None on CPU), ``failing_batch``, ``traceback`` and
  ``config_hash`` (what ``--resume`` compares); trace files live in per-cycle folders.

Reading checks every known key's JSON type and the keys a row needs (``implementation``,
``label``, a known ``status``; the step times and peak memory of an ``ok`` run): a file that
fails is a :class:`SummaryError` naming the first bad field, never a row with guessed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from tlbench.core.status import RUN_STATUSES, Status

__all__ = [
    "SCHEMA_VERSION",
    "SUMMARY_KEYS",
    "Environment",
    "Memory",
    "Outcome",
    "Outputs",
    "RunSummary",
    "StepRecord",
    "SummaryError",
    "WhatRan",
    "finite_or_none",
]

SCHEMA_VERSION = 1


class SummaryError(ValueError):
    """A summary.json that is missing, not JSON, or not a readable run summary."""


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


@dataclass
class WhatRan:
    """Which implementation ran, through which library, with which configuration."""

    implementation: str = "?"
    label: str = "?"
    backend: Optional[str] = None
    backend_version: Optional[str] = None
    mode: Optional[str] = None
    batching: Optional[str] = None
    preset: Optional[str] = None
    preset_reason: Optional[str] = None
    schedule: Optional[Dict[str, int]] = None
    seed: Optional[int] = None
    vocab_size: Optional[int] = None
    dtype: Optional[str] = None
    subsampling_factor: Optional[int] = None
    max_utterance_frames: Optional[int] = None
    inner_ops_hidden: Optional[bool] = None
    encoder_out_dim: Optional[int] = None
    shape_info: Optional[str] = None
    config: Optional[Dict[str, Any]] = None
    command: List[str] = field(default_factory=list)
    created_at: Optional[str] = None
    run_dir: Optional[str] = None
    schema_version: int = SCHEMA_VERSION
    config_hash: Optional[str] = None


@dataclass
class Environment:
    """Where it ran: ``device`` ``"cpu"``/``"cuda"``, its model, the versions and threads."""

    device: Optional[str] = None
    device_name: Optional[str] = None
    torch_version: Optional[str] = None
    python_version: Optional[str] = None
    num_threads: Optional[int] = None


@dataclass
class StepRecord:
    """The recorded profiler steps: raw samples (microseconds) and their statistics.

    The statistics are derived from ``step_times_us`` by :meth:`from_measurement` and stored
    beside them, so that a file read back shows the numbers it was written with.
    ``host_step_times_us`` are the host's step spans (equal to ``step_times_us`` on CPU),
    ``device_busy_us`` the GPU's busy time per step; ``measured_batches`` the batch shapes,
    ``loss_values`` the loss of each recorded step.
    """

    avg_step_time_us: Optional[float] = None
    median_step_time_us: Optional[float] = None
    iqr_step_time_us: Optional[float] = None
    min_step_time_us: Optional[float] = None
    max_step_time_us: Optional[float] = None
    step_times_us: List[float] = field(default_factory=list)
    loss_time_us: Optional[float] = None
    loss_times_us: List[float] = field(default_factory=list)
    batches_reused: Optional[bool] = None
    measured_batches: List[Dict[str, Any]] = field(default_factory=list)
    loss_values: List[Optional[float]] = field(default_factory=list)
    host_step_times_us: List[float] = field(default_factory=list)
    device_busy_us: Optional[float] = None

    def take(self, measurement) -> None:
        """Sets the samples and statistics of a :class:`tlbench.measure.measurement.StepMeasurement`."""
        for key, value in measurement.to_dict().items():
            setattr(self, key, value)


@dataclass
class Memory:
    """Peak memory in MiB: from the profiler's memory events (``peak_memory_source`` says
    which device's), and on CUDA ``torch.cuda.max_memory_allocated`` as a cross-check."""

    peak_memory_mb: Optional[float] = None
    peak_memory_source: Optional[str] = None
    cuda_max_memory_allocated_mb: Optional[float] = None


@dataclass
class Outcome:
    """How the run ended: a :class:`tlbench.core.status.Status` value, and for anything but
    ``ok`` why, the batch it failed on and the traceback."""

    status: str = Status.OK
    reason: Optional[str] = None
    failing_batch: Optional[Dict[str, Any]] = None
    traceback: Optional[str] = None


@dataclass
class Outputs:
    """The files the run wrote beside summary.json (paths relative to the run folder)."""

    traces: List[Dict[str, Any]] = field(default_factory=list)
    key_averages_file: Optional[str] = None


PARTS: Tuple[Tuple[str, type], ...] = (("what", WhatRan), ("environment", Environment), ("steps", StepRecord),
                                       ("memory", Memory), ("outcome", Outcome), ("outputs", Outputs))

# The keys of summary.json in their order: the first format's 44, then schema 1's.
SUMMARY_KEYS: Tuple[str, ...] = (
    "implementation", "label", "backend", "backend_version", "status", "reason", "device", "device_name", "mode",
    "batching", "preset", "preset_reason", "schedule", "seed", "vocab_size", "dtype", "subsampling_factor",
    "max_utterance_frames", "inner_ops_hidden", "encoder_out_dim", "shape_info", "torch_version", "python_version",
    "num_threads", "config", "command", "created_at", "run_dir", "avg_step_time_us", "median_step_time_us",
    "iqr_step_time_us", "min_step_time_us", "max_step_time_us", "step_times_us", "loss_time_us", "loss_times_us",
    "peak_memory_mb", "batches_reused", "peak_memory_source", "traces", "key_averages_file", "measured_batches",
    "loss_values",
    "schema_version", "host_step_times_us", "device_busy_us", "cuda_max_memory_allocated_mb", "failing_batch",
    "traceback", "config_hash",
)

# key -> (part attribute, declared type)
_FIELDS: Dict[str, Tuple[str, Any]] = {
    f.name: (attr, typing.get_type_hints(part)[f.name]) for attr, part in PARTS for f in dataclasses.fields(part)
}
assert set(_FIELDS) == set(SUMMARY_KEYS) and len(SUMMARY_KEYS) == len(_FIELDS)

# A run that ended "ok" is drawn from these; without them it cannot be a row.
_OK_NEEDS = ("avg_step_time_us", "step_times_us", "peak_memory_mb")
# Lists a schema-0 writer may have left out or written as null.
_LIST_KEYS = tuple(k for k, (_, kind) in _FIELDS.items() if typing.get_origin(kind) is list)


class RunSummary:
    """One run of one implementation in one batching mode, made of the parts above.

    Times are microseconds (``_us``), memory MiB (``_mb``, 2^20 bytes). Every key of
    :data:`SUMMARY_KEYS` is also an attribute (``summary.status`` is ``summary.outcome.status``).
    """

    def __init__(self, implementation: str, label: str, extras: Optional[Dict[str, Any]] = None, **fields: Any):
        for attr, part in PARTS:
            setattr(self, attr, part())
        self.extras: Dict[str, Any] = dict(extras or {})
        self.implementation, self.label = implementation, label
        for key, value in fields.items():
            if key not in _FIELDS:
                raise TypeError(f"RunSummary has no field {key!r}")
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"RunSummary({self.implementation!r}, mode={self.mode!r}, status={self.status!r})"

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def set_measurement(self, measurement) -> None:
        """Copies a :class:`tlbench.measure.measurement.StepMeasurement`'s samples and statistics."""
        self.steps.take(measurement)

    def to_dict(self) -> Dict[str, Any]:
        data = {key: getattr(self, key) for key in SUMMARY_KEYS}
        for key, value in self.extras.items():
            if key in data:
                raise AssertionError(f"extra field {key!r} shadows a summary field")
            data[key] = value
        return finite_or_none(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str) -> None:
        from tlbench.core.io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunSummary":
        """Reads any schema version; keys it does not know go to ``extras``. Raises
        :class:`SummaryError` naming the first missing or wrongly typed field."""
        if not isinstance(data, dict) or "status" not in data:
            raise SummaryError("not a benchmark summary (no 'status' key)")
        known = {k: v for k, v in data.items() if k in _FIELDS}
        known.setdefault("schema_version", 0)
        for name in _LIST_KEYS:
            if known.get(name) is None:
                known[name] = []
        _check(known)
        extras = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(extras=extras, **known)

    @classmethod
    def load(cls, path: str) -> "RunSummary":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SummaryError(first[:200]) from None
        return cls.from_dict(data)


def _forward(key: str, attr: str) -> property:
    def get(self):
        return getattr(getattr(self, attr), key)

    def set_(self, value):
        setattr(getattr(self, attr), key, value)

    return property(get, set_, doc=f"``{attr}.{key}``")


for _key, (_attr, _) in _FIELDS.items():
    setattr(RunSummary, _key, _forward(_key, _attr))


def _matches(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits a declared type (an int is a float; a bool is neither)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return any(_matches(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is Any:
        return True
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


_TYPE_WORDS = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


def _type_name(kind: Any) -> str:
    """``a number or null`` for ``Optional[float]``: what a reader of the file understands."""
    if typing.get_origin(kind) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0]).split(' ', 1)[1]}s"
    return _TYPE_WORDS.get(typing.get_origin(kind) or kind, str(kind))


def _check(known: Dict[str, Any]) -> None:
    for key in ("implementation", "label"):
        if not isinstance(known.get(key), str) or not known[key]:
            raise SummaryError(f"field {key!r} is missing or not a string")
    if known["status"] not in RUN_STATUSES:
        raise SummaryError(f"field 'status' is {known['status']!r}; allowed: {', '.join(RUN_STATUSES)}")
    for key in SUMMARY_KEYS:
        if key in known and not _matches(known[key], _FIELDS[key][1]):
            raise SummaryError(f"field {key!r} is {json.dumps(known[key])[:60]}, not {_type_name(_FIELDS[key][1])}")
    if known["status"] == Status.OK:
        for key in _OK_NEEDS:
            if known.get(key) in (None, []):
                raise SummaryError(f"field {key!r} is missing, and a run with status ok needs it")
