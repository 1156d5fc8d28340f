"""Time and memory of the loss and its backward alone, every implementation on the same logits.

The batch is the first ``num_utterances`` rows of a shape table: float32 logits
``(N, T_max, U_max + 1, V)`` (standard normal), int32 targets ``(N, U_max)`` in ``1..V-1``
(blank = 0), int32 lengths ``(N,)``; the packed layout ``(sum_i T_i (U_i + 1), V)`` holds the
same values of the valid cells. Reduction is "sum". Each run gets a fresh copy of its layout
(optimized_transducer overwrites its input with the gradient).

Memory: the peak of the running sum of bytes allocated minus freed, as recorded by
``torch.profiler`` (``profile_memory=True``) over one loss + backward; the logits exist
before and do not count, their gradient does. That run is also the warm-up; then
``repeats`` timed runs, median reported.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from tlbench.core.errors import first_line
from tlbench.core.status import Status
from tlbench.implementations.declaration import LossImplementation, LossOnlyVariant, Refusal

__all__ = ["LossOnlyBatch", "LossOnlyMeasurement", "make_batch", "measure_peak_allocated", "run_loss_only",
           "variants_of"]


@dataclass
class LossOnlyBatch:
    """logits: ``(N, T, U + 1, V) float32``; packed: ``(sum_i T_i (U_i + 1), V) float32`` (the
    same values); batch: the :class:`tlbench.data.batches.TransducerBatch` of the shapes (no
    encoder/decoder outputs)."""

    logits: torch.Tensor
    packed: torch.Tensor
    batch: object

    def layout(self, name: str) -> torch.Tensor:
        return self.logits if name == "4-D" else self.packed


@dataclass
class LossOnlyMeasurement:
    """One row: raw timed runs (seconds) and the peak extra bytes of the first run."""

    implementation: str
    variant: str
    layout: str
    library: str = ""
    status: str = Status.OK
    reason: Optional[str] = None
    times_s: List[float] = field(default_factory=list)
    extra_bytes: Optional[int] = None
    logits_bytes: Optional[int] = None
    loss_value: Optional[float] = None

    @property
    def median_s(self) -> Optional[float]:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def extra_mb(self) -> Optional[float]:
        return None if self.extra_bytes is None else self.extra_bytes / 2**20

    def to_dict(self) -> dict:
        return {"implementation": self.implementation, "variant": self.variant, "layout": self.layout,
                "library": self.library, "status": self.status, "reason": self.reason, "times_s": self.times_s,
                "median_s": self.median_s, "extra_bytes": self.extra_bytes, "extra_mb": self.extra_mb,
                "logits_bytes": self.logits_bytes, "loss_value": self.loss_value}


def make_batch(shapes: torch.Tensor, vocab_size: int, seed: int) -> LossOnlyBatch:
    """Random logits and targets for ``shapes`` ``(N, 2)`` [T, U] rows."""
    from tlbench.data.batches import TransducerBatch

    t_lens, u_lens = shapes[:, 0].int(), shapes[:, 1].int()
    n, t_max, u_max = len(shapes), int(t_lens.max()), int(u_lens.max())
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t_max, u_max + 1, vocab_size, generator=gen)
    packed = torch.cat([logits[i, :t, : u + 1].reshape(-1, vocab_size) for i, (t, u) in enumerate(shapes.tolist())])
    targets = torch.randint(1, vocab_size, (n, u_max), generator=gen, dtype=torch.int32)
    batch = TransducerBatch([tuple(s) for s in shapes.tolist()], None, None, targets, t_lens, u_lens)
    return LossOnlyBatch(logits, packed, batch)


def measure_peak_allocated(fn: Callable[[], object]):
    """Runs ``fn`` once under ``torch.profiler`` with memory events; returns (peak of the running
    sum of allocated minus freed bytes during it, ``fn``'s result)."""
    from torch.profiler import ProfilerActivity, profile

    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    memory = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    total = peak = 0
    for event in memory:
        total += event.nbytes()
        peak = max(peak, total)
    return peak, result


def variants_of(impl: LossImplementation) -> List[LossOnlyVariant]:
    """The loss-only rows of ``impl``: its own, or one derived from its benchmark call."""
    if impl.loss_only is not None:
        return list(impl.loss_only)
    if impl.layout == "joiner":
        return []
    return [LossOnlyVariant(impl.layout, lambda backend, logits, batch: impl.loss(backend, logits, batch, None)[0])]


def _time_runs(loss_fn: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor, repeats: int, tick):
    work = source.detach().clone().requires_grad_()

    def run():
        with torch.no_grad():
            work.copy_(source)
        work.grad = None
        start = time.perf_counter()
        loss = loss_fn(work)
        loss.backward()
        seconds = time.perf_counter() - start
        work.grad = None
        tick()
        return seconds, float(loss.detach())

    peak, _ = measure_peak_allocated(run)
    runs = [run() for _ in range(repeats)]
    return peak, [s for s, _ in runs], runs[-1][1]


def run_loss_only(impls: List[LossImplementation], data: LossOnlyBatch, repeats: int,
                  progress: bool = True) -> List[LossOnlyMeasurement]:
    """Measures every loss-only variant of ``impls`` on ``data`` (CPU); a missing library or a
    failing call is a row with its status, never an exception."""
    from tqdm import tqdm

    plan = []
    rows: List[LossOnlyMeasurement] = []
    for impl in impls:
        variants = variants_of(impl)
        if not variants:
            reason = impl.loss_only_note or ("its loss takes the joiner's inputs, not logits" if impl.layout == "joiner"
                                             else "no loss-only variant")
            rows.append(LossOnlyMeasurement(impl.name, "", "-", status=Status.NOT_APPLICABLE, reason=reason))
            continue
        backend, unsupported = None, None
        try:
            backend = impl.open("cpu")
        except Refusal as refusal:
            unsupported = refusal.reason
        for variant in variants:
            row = LossOnlyMeasurement(impl.name, variant.variant, variant.layout)
            rows.append(row)
            if unsupported:
                row.status, row.reason = Status.UNAVAILABLE, unsupported
            else:
                row.library = backend.label(impl.name)
                plan.append((row, variant, backend))
    with tqdm(total=len(plan) * (repeats + 1), unit="run", disable=not progress) as bar:
        for row, variant, backend in plan:
            bar.set_description(row.implementation)
            source = data.layout(variant.layout)
            row.logits_bytes = source.numel() * source.element_size()
            try:
                row.extra_bytes, row.times_s, row.loss_value = _time_runs(
                    lambda x, v=variant, b=backend: v.loss(b, x, data.batch), source, repeats, bar.update)
            except Exception as error:  # one failing implementation never loses the others
                row.status, row.reason = Status.ERROR, first_line(error, with_type=True)
    return rows
