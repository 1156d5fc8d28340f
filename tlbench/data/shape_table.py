"""Shape tables (``shape_info.pt``): an integer tensor ``(num_utterances, 2)`` of ``[T, U]``
rows, T the encoder frames of an utterance after subsampling (4x for the shipped table), U its
number of tokens; loading, validation and rescaling to another subsampling."""

from __future__ import annotations

import os

import torch

from tlbench import REPO_DIR

__all__ = ["DEFAULT_SHAPE_INFO", "FRAMES_PER_SECOND", "ShapeInfoError", "load_shape_info", "rescale_frames",
           "validate_shape_info"]

# The table shipped in the checkout (beside the tlbench package).
DEFAULT_SHAPE_INFO = os.path.join(REPO_DIR, "shape_info.pt")
# Feature frames per second of audio (10 ms shift): what T counts before the encoder's subsampling.
FRAMES_PER_SECOND = 100


class ShapeInfoError(ValueError):
    """The shape table is missing, unreadable or not an (N, 2) table of positive ints."""


def validate_shape_info(shape_info: torch.Tensor, source: str = "shape table") -> torch.Tensor:
    """Checks a shape table and returns it as int64 ``(N, 2)``.

    Args:
      shape_info: ``(N, 2)`` integer tensor of ``[T, U]`` rows, every entry >= 1.
      source: how to name the table in error messages (usually its path).
    """
    if not isinstance(shape_info, torch.Tensor):
        raise ShapeInfoError(f"{source}: expected a torch.Tensor of shape (N, 2), got {type(shape_info).__name__}")
    if shape_info.dtype.is_floating_point or shape_info.dtype.is_complex or shape_info.dtype == torch.bool:
        raise ShapeInfoError(f"{source}: dtype {shape_info.dtype} is not allowed; expected an integer dtype (int32 or int64)")
    if shape_info.dim() != 2 or shape_info.size(1) != 2:
        raise ShapeInfoError(f"{source}: shape {tuple(shape_info.shape)} is not allowed; expected (N, 2) rows of [T, U]")
    if shape_info.size(0) == 0:
        raise ShapeInfoError(f"{source}: the table is empty; expected at least one [T, U] row")
    bad_rows = (shape_info < 1).any(dim=1).nonzero().flatten()
    if bad_rows.numel() > 0:
        row = int(bad_rows[0])
        t, u = shape_info[row].tolist()
        raise ShapeInfoError(
            f"{source}: row {row} has T={t}, U={u}; every T and U must be >= 1 "
            f"({bad_rows.numel()} bad row(s) in all)"
        )
    return shape_info.to(torch.int64)


def load_shape_info(path: str = DEFAULT_SHAPE_INFO) -> torch.Tensor:
    """Loads and validates a shape table saved with ``torch.save``.

    Returns:
      ``(N, 2)`` int64 tensor of ``[T, U]`` rows.
    """
    if not os.path.isfile(path):
        raise ShapeInfoError(f"shape file {path!r} does not exist; pass an existing file to --shape-info")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a corrupt file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ShapeInfoError(f"shape file {path!r} cannot be read by torch.load ({first_line[:200]})") from None
    return validate_shape_info(table, source=f"shape file {path!r}")



def rescale_frames(shape_info: torch.Tensor, subsampling_factor: int) -> torch.Tensor:
    """Shape table ``(N, 2)`` of [T, U] at 4x subsampling -> the same at ``subsampling_factor``.

    T becomes ``max(1, round(T * 4 / factor))``: the table's T counts 4x-subsampled frames,
    so 4T approximates the 10 ms feature frames.
    """
    if subsampling_factor == 4:
        return shape_info
    rescaled = shape_info.clone()
    rescaled[:, 0] = torch.clamp(torch.round(shape_info[:, 0].double() * 4 / subsampling_factor), min=1).to(shape_info.dtype)
    return rescaled
