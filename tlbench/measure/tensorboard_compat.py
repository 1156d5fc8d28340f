"""Copies of today's torch.profiler traces that torch-tb-profiler 0.4.3 reads correctly.

The plugin (deprecated upstream, last released in 2022) maps event categories by their
2022-era names (``profiler/trace.py``, ``EventTypeMap``, matched after lower-casing). It
has no entry for today's ``cuda_runtime`` / ``cuda_driver``, so on a GPU trace from
torch 2.x it sees no kernel launches: it cannot tie kernels to operators (kernel view) or
to profiler steps, and its Overview's "Average Step Time" is the host-side span of each
step alone. :func:`write_tensorboard_compat` writes a copy of every trace with the
2022-era names:

==========================  =========================
today                       in the copy
==========================  =========================
``cpu_op``                  ``Operator``
``cuda_runtime``,           ``Runtime``
``cuda_driver``
``kernel``                  ``Kernel``
``gpu_memcpy``              ``Memcpy``
``gpu_memset``              ``Memset``
``fwdbwd`` (flow events)    ``forward_backward``
==========================  =========================

and one more change: the plugin takes any ``user_annotation`` *or* ``gpu_user_annotation``
event named ``ProfilerStep#N`` as a step (``create_trace_event``), so the GPU-side copies
of the step annotation that today's kineto writes on the device streams would be counted
as extra steps; in the copy their category is :data:`GPU_STEP_ANNOTATION_CATEGORY`, which
the plugin does not parse (in 2022 the step annotation was a host operator and had no
GPU-side copy). Nothing else changes: same events, names, times, ids and arguments, same
top-level fields. Categories are matched in any letter case; traces already in the 2022
spelling come out unchanged.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Dict, List, Tuple

from tlbench.core.io import atomic_write
from tlbench.measure.trace import category_kind, find_trace_files, load_trace

__all__ = [
    "GPU_STEP_ANNOTATION_CATEGORY",
    "PLUGIN_CATEGORY_BY_KIND",
    "compat_trace",
    "write_tensorboard_compat",
]

# the 2022-era category of each kind (see tlbench.measure.trace.CATEGORY_KINDS)
PLUGIN_CATEGORY_BY_KIND: Dict[str, str] = {
    "operator": "Operator",
    "runtime": "Runtime",
    "kernel": "Kernel",
    "memcpy": "Memcpy",
    "memset": "Memset",
}
GPU_STEP_ANNOTATION_CATEGORY = "gpu_user_annotation_profiler_step"
_FLOW_CATEGORIES = {"fwdbwd": "forward_backward"}


def compat_trace(trace: dict) -> Tuple[dict, Dict[str, int]]:
    """A copy of one trace's JSON object with the plugin's category names.

    Returns the copy and the number of events renamed per ``"old -> new"`` category pair.
    """
    renamed: Dict[str, int] = {}
    events = []
    for event in trace["traceEvents"]:
        new_category = _plugin_category(event) if isinstance(event, dict) else None
        if new_category is not None and new_category != event.get("cat"):
            key = f"{event.get('cat')} -> {new_category}"
            renamed[key] = renamed.get(key, 0) + 1
            event = dict(event, cat=new_category)  # same keys, same order
        events.append(event)
    copy = dict(trace)
    copy["traceEvents"] = events
    return copy, renamed


def _plugin_category(event: dict):
    category = event.get("cat")
    if not isinstance(category, str):
        return None
    if event.get("ph") in ("s", "f", "t"):
        return _FLOW_CATEGORIES.get(category.lower())
    kind = category_kind(category)
    if kind == "gpu_user_annotation":
        name = event.get("name")
        if isinstance(name, str) and name.startswith("ProfilerStep#"):
            return GPU_STEP_ANNOTATION_CATEGORY
        return None
    return PLUGIN_CATEGORY_BY_KIND.get(kind)


def write_tensorboard_compat(results_dir: str, out_dir: str) -> List[str]:
    """Writes a plugin-compatible copy of every trace under ``results_dir``.

    Every file TensorBoard would list (``<worker>[.<ms>].pt.trace.json[.gz]``, in any folder
    below ``results_dir``, written by this suite or not) is copied to
    ``out_dir/<its folder relative to results_dir>/<same name>`` with the category names of
    :func:`compat_trace` (gzipped again when the original is). Each copy is written to a
    temporary file in its folder and moved into place (``os.replace``). ``out_dir`` may lie
    inside ``results_dir``; its own files are not read again.

    Returns the written paths, sorted. Raises :class:`tlbench.measure.trace.TraceError` for a trace
    that is not readable Chrome-trace JSON.
    """
    written = []
    for path in find_trace_files(results_dir, exclude=[out_dir]):
        relative = os.path.relpath(path, results_dir)
        destination = os.path.join(out_dir, relative)
        copy, _ = compat_trace(load_trace(path))
        _write_json(destination, copy, compress=path.endswith(".gz"))
        written.append(destination)
    return sorted(written)


def _write_json(path: str, data: dict, compress: bool) -> None:
    text = json.dumps(data, ensure_ascii=False).encode("utf-8")

    def write(tmp_path: str) -> None:
        with open(tmp_path, "wb") as raw:
            raw.write(gzip.compress(text) if compress else text)

    atomic_write(path, write, suffix=".json")
