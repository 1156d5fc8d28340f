"""Batches of utterance shapes drawn from a shape table (``shape_info.pt``): the public face of
:mod:`tlbench.data.sampler` and :mod:`tlbench.data.shape_table`, kept at the top level so that
``from shape_sampler import ShapeSampler, SortedShapeSampler`` works from the checkout."""

from tlbench.data.sampler import Batch, Shape, ShapeSampler, SortedShapeSampler, padding_efficiency
from tlbench.data.shape_table import DEFAULT_SHAPE_INFO, ShapeInfoError, load_shape_info, validate_shape_info

__all__ = ["DEFAULT_SHAPE_INFO", "Batch", "Shape", "ShapeInfoError", "ShapeSampler", "SortedShapeSampler",
           "load_shape_info", "padding_efficiency", "validate_shape_info"]
