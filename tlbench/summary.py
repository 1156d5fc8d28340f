"""``summary.json``: the typed record of one benchmark run, written and read everywhere.

Schema versions:

- 0 (no ``schema_version`` key): the files written before the record was typed; they load,
  with the fields added later left at their defaults.
- 1: adds ``schema_version``, ``host_step_times_us``, ``device_busy_us``,
  ``cuda_max_memory_allocated_mb`` (None on CPU), ``failing_batch``, ``traceback`` and
  ``config_hash`` (what ``--resume`` compares); trace files live in per-cycle folders.

Fields a tool adds for itself (``profile_model.py``'s labels, ...) are kept in
:attr:`RunSummary.extras` and written as top-level keys, so every key stays where readers of
version 0 look for it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_OOM",
    "STATUS_UNAVAILABLE",
    "STATUS_UNSUPPORTED",
    "EXIT_CODES",
    "RunSummary",
    "SummaryError",
    "finite_or_none",
]

SCHEMA_VERSION = 1

STATUS_OK, STATUS_OOM, STATUS_UNAVAILABLE, STATUS_UNSUPPORTED, STATUS_ERROR = (
    "ok", "oom", "unavailable", "unsupported", "error")
STATUSES = (STATUS_OK, STATUS_OOM, STATUS_UNAVAILABLE, STATUS_UNSUPPORTED, STATUS_ERROR)
# A run that measured nothing because the library is missing or refuses the configuration is
# still a successful run of the benchmark script; only an unexpected error fails it.
EXIT_CODES = {STATUS_OK: 0, STATUS_OOM: 0, STATUS_UNAVAILABLE: 0, STATUS_UNSUPPORTED: 0, STATUS_ERROR: 1}


class SummaryError(ValueError):
    """A summary.json that is missing, not JSON, or not a run summary."""


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
class RunSummary:
    """One run of one implementation in one batching mode.

    Times are microseconds (``_us``), memory MiB (``_mb``, 2^20 bytes). The step statistics
    (``avg_`` ... ``max_step_time_us``) are derived from ``step_times_us``, the raw durations
    of the recorded profiler steps; ``loss_times_us`` are the loss region's per step.
    """

    implementation: str
    label: str
    backend: Optional[str] = None
    backend_version: Optional[str] = None
    status: str = STATUS_OK
    reason: Optional[str] = None
    device: Optional[str] = None
    device_name: Optional[str] = None
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
    torch_version: Optional[str] = None
    python_version: Optional[str] = None
    num_threads: Optional[int] = None
    config: Optional[Dict[str, Any]] = None
    command: List[str] = field(default_factory=list)
    created_at: Optional[str] = None
    run_dir: Optional[str] = None
    avg_step_time_us: Optional[float] = None
    median_step_time_us: Optional[float] = None
    iqr_step_time_us: Optional[float] = None
    min_step_time_us: Optional[float] = None
    max_step_time_us: Optional[float] = None
    step_times_us: List[float] = field(default_factory=list)
    loss_time_us: Optional[float] = None
    loss_times_us: List[float] = field(default_factory=list)
    peak_memory_mb: Optional[float] = None
    batches_reused: Optional[bool] = None
    peak_memory_source: Optional[str] = None
    traces: List[Dict[str, Any]] = field(default_factory=list)
    key_averages_file: Optional[str] = None
    measured_batches: List[Dict[str, Any]] = field(default_factory=list)
    loss_values: List[float] = field(default_factory=list)
    # schema 1
    schema_version: int = SCHEMA_VERSION
    host_step_times_us: List[float] = field(default_factory=list)
    device_busy_us: Optional[float] = None
    cuda_max_memory_allocated_mb: Optional[float] = None
    failing_batch: Optional[Dict[str, Any]] = None
    traceback: Optional[str] = None
    config_hash: Optional[str] = None
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def set_measurement(self, measurement) -> None:
        """Copies a :class:`tlbench.measurement.StepMeasurement`'s samples and statistics."""
        for key, value in measurement.to_dict().items():
            setattr(self, key, value)

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extras"}
        for key, value in self.extras.items():
            if key in data:
                raise AssertionError(f"extra field {key!r} shadows a summary field")
            data[key] = value
        return finite_or_none(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunSummary":
        """Reads any schema version; keys it does not know go to ``extras``."""
        if not isinstance(data, dict) or "status" not in data:
            raise SummaryError("not a benchmark summary (no 'status' key)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("implementation", str(data.get("label") or "?"))
        known.setdefault("label", known["implementation"])
        known.setdefault("schema_version", 0)
        for name in ("step_times_us", "loss_times_us", "traces", "measured_batches", "loss_values",
                     "host_step_times_us", "command"):
            if known.get(name) is None:
                known[name] = []
        summary = cls(**known)
        summary.extras = {k: v for k, v in data.items() if k not in names}
        return summary

    @classmethod
    def load(cls, path: str) -> "RunSummary":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SummaryError(first[:200]) from None
        return cls.from_dict(data)
