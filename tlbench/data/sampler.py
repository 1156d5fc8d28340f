"""Batches of utterance shapes drawn from a shape table (``shape_info.pt``).

A shape table is an integer tensor ``(num_utterances, 2)``: column 0 is T, the number of
encoder frames of an utterance after subsampling, column 1 is U, its number of tokens.
The samplers below yield batches as lists of ``(T, U)`` pairs of Python ints; the
benchmarks turn each batch into random tensors of those sizes.

- :class:`ShapeSampler` takes consecutive rows, ``batch_size`` at a time, and drops the
  last partial batch (as a ``DataLoader(drop_last=True)`` over the unsorted table would).
- :class:`SortedShapeSampler` sorts the rows by T descending (ties by U descending),
  keeping every (T, U) pair together, then packs them greedily so that each batch's sum
  of T stays at most ``max_frames``; an utterance longer than ``max_frames`` is a batch
  of its own.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import torch

from tlbench.data.shape_table import validate_shape_info

__all__ = ["Batch", "Shape", "ShapeSampler", "SortedShapeSampler", "padding_efficiency"]

Shape = Tuple[int, int]  # (T, U)
Batch = List[Shape]

def _as_pairs(shape_info: torch.Tensor) -> List[Shape]:
    return [(int(t), int(u)) for t, u in validate_shape_info(shape_info).tolist()]


class ShapeSampler:
    """Fixed-size batches of consecutive rows; the last partial batch is dropped.

    Args:
      shape_info: ``(N, 2)`` int tensor of ``[T, U]`` rows.
      batch_size: utterances per batch, >= 1.
    """

    def __init__(self, shape_info: torch.Tensor, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is not allowed; it must be >= 1")
        self.shapes = _as_pairs(shape_info)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.shapes) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.shapes[start : start + self.batch_size]


class SortedShapeSampler:
    """Batches of rows sorted by (T, U) descending, each with sum of T <= ``max_frames``.

    Args:
      shape_info: ``(N, 2)`` int tensor of ``[T, U]`` rows.
      max_frames: the most frames (sum of T) in one batch, >= 1. A single utterance with
        T > max_frames still forms a batch, alone.
    """

    def __init__(self, shape_info: torch.Tensor, max_frames: int):
        if max_frames < 1:
            raise ValueError(f"max_frames={max_frames} is not allowed; it must be >= 1")
        self.shapes = sorted(_as_pairs(shape_info), key=lambda tu: (-tu[0], -tu[1]))
        self.max_frames = max_frames
        self._batches = self._pack()

    def _pack(self) -> List[Batch]:
        batches: List[Batch] = []
        current: Batch = []
        frames = 0
        for t, u in self.shapes:
            if current and frames + t > self.max_frames:
                batches.append(current)
                current, frames = [], 0
            current.append((t, u))
            frames += t
        if current:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(list(self._batches))


def padding_efficiency(batches: Sequence[Batch]) -> float:
    """Share of the padded 4-D logits grid that real utterances use.

    For each batch the padded grid has ``N * T_max * (U_max + 1)`` cells of which
    ``sum_i T_i * (U_i + 1)`` belong to an utterance; the result is the ratio of the two
    sums over all batches.
    """
    used = sum(t * (u + 1) for batch in batches for t, u in batch)
    padded = sum(len(batch) * max(t for t, _ in batch) * (max(u for _, u in batch) + 1) for batch in batches)
    return used / padded if padded else 0.0
