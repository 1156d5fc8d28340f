"""Two results folders side by side: the rows of each implementation and mode present in both,
with the ratios of step time and peak memory (this folder / the other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from tlbench.core.status import Status
from tlbench.results.rows import Results, is_measured, mode_sort_key, mode_title

__all__ = ["Comparison", "ComparisonRow", "compare_results"]


@dataclass
class ComparisonRow:
    """One implementation and mode present in both result sets (ratios are here / other)."""

    name: str
    mode: str
    status_here: str
    status_other: str
    step_time_here_us: Optional[float]
    step_time_other_us: Optional[float]
    step_time_ratio: Optional[float]
    peak_memory_here_mb: Optional[float]
    peak_memory_other_mb: Optional[float]
    peak_memory_ratio: Optional[float]


@dataclass
class Comparison:
    """``here`` against ``other``: the matched rows, what only one side has, both sides' problems."""

    here: Results
    other: Results
    matched: List[ComparisonRow]
    only_here: List[str]
    only_other: List[str]
    problems: List[str]


def _ratio(here: Optional[float], other: Optional[float]) -> Optional[float]:
    if here is None or other is None or other == 0:
        return None
    return here / other


def compare_results(here_results: Results, other_results: Results) -> Comparison:
    """Matches the rows of two loaded folders by implementation and mode."""
    here = {(r.implementation, r.mode): r for r in here_results.rows}
    other = {(r.implementation, r.mode): r for r in other_results.rows}

    def key_order(key):
        return (mode_sort_key(key[1]), key[0])

    matched: List[ComparisonRow] = []
    for key in sorted(set(here) & set(other), key=key_order):
        a, b = here[key], other[key]
        a_time = a.avg_step_time_us if is_measured(a) else None
        b_time = b.avg_step_time_us if is_measured(b) else None
        a_memory = a.peak_memory_mb if a.status == Status.OK else None
        b_memory = b.peak_memory_mb if b.status == Status.OK else None
        matched.append(ComparisonRow(a.name, a.mode, a.status, b.status, a_time, b_time, _ratio(a_time, b_time),
                                     a_memory, b_memory, _ratio(a_memory, b_memory)))
    only_here = [f"{here[k].name} ({mode_title(k[1])}, {here[k].status})"
                 for k in sorted(set(here) - set(other), key=key_order)]
    only_other = [f"{other[k].name} ({mode_title(k[1])}, {other[k].status})"
                  for k in sorted(set(other) - set(here), key=key_order)]
    problems = [f"here: {p}" for p in here_results.problems] + [f"other: {p}" for p in other_results.problems]
    return Comparison(here_results, other_results, matched, only_here, only_other, problems)
