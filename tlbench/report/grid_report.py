"""The grid's files: ``grid.md``/``.csv``/``.tex``/``.json`` under ``<out-dir>/grid-<name>/``
and its two heatmaps under the picture folder."""

from __future__ import annotations

import os
from typing import Dict

from tlbench.core.io import atomic_write_json, atomic_write_text
from tlbench.core.status import Status
from tlbench.measure.summary import finite_or_none
from tlbench.render import pictures, tables
from tlbench.tools.grid import GridResult

__all__ = ["write_outputs"]


def write_outputs(result: GridResult) -> Dict[str, str]:
    """Writes the requested formats and the heatmaps; returns kind -> path."""
    grid_dir = os.path.join(result.settings.out_dir, f"grid-{result.implementation}")
    written: Dict[str, str] = {}
    texts = {"md": ("grid.md", tables.grid_markdown), "csv": ("grid.csv", tables.grid_csv),
             "latex": ("grid.tex", tables.grid_latex)}
    for kind in result.spec.output_formats:
        if kind == "json":
            written["json"] = os.path.join(grid_dir, "grid.json")
            atomic_write_json(written["json"], finite_or_none(result.to_dict()))
        else:
            name, render = texts[kind]
            written[kind] = os.path.join(grid_dir, name)
            atomic_write_text(written[kind], render(result))
    if result.status != Status.UNAVAILABLE:
        for which in ("rtf", "memory"):
            written[f"heatmap_{which}"] = os.path.join(result.settings.pic_dir, f"grid-{result.implementation}-{which}.png")
            pictures.grid_heatmap(result, which, written[f"heatmap_{which}"])
    return written
