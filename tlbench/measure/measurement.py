"""A measurement: raw per-step samples plus the statistics derived from them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import List

__all__ = ["StepMeasurement"]


def _quantile(sorted_values: List[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list (numpy's default rule)."""
    if not sorted_values:
        return float("nan")
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass
class StepMeasurement:
    """Per-step times of the active (recorded) profiler steps, in microseconds."""

    step_times_us: List[float]
    loss_times_us: List[float] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return len(self.step_times_us)

    @property
    def mean_us(self) -> float:
        """What TensorBoard's overview calls "Average Step Time"."""
        return statistics.fmean(self.step_times_us) if self.step_times_us else float("nan")

    @property
    def median_us(self) -> float:
        return statistics.median(self.step_times_us) if self.step_times_us else float("nan")

    @property
    def iqr_us(self) -> float:
        ordered = sorted(self.step_times_us)
        return _quantile(ordered, 0.75) - _quantile(ordered, 0.25)

    @property
    def loss_mean_us(self) -> float:
        return statistics.fmean(self.loss_times_us) if self.loss_times_us else float("nan")

    def to_dict(self) -> dict:
        return {
            "avg_step_time_us": self.mean_us,
            "median_step_time_us": self.median_us,
            "iqr_step_time_us": self.iqr_us,
            "min_step_time_us": min(self.step_times_us) if self.step_times_us else None,
            "max_step_time_us": max(self.step_times_us) if self.step_times_us else None,
            "step_times_us": list(self.step_times_us),
            "loss_time_us": self.loss_mean_us,
            "loss_times_us": list(self.loss_times_us),
        }
