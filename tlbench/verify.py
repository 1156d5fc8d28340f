"""Do the transducer losses compute the same thing? The verification engine behind
``verify_losses.py``: seeded problems, every implementation's variants as candidates, and the
comparison of their loss and gradients with the project's exact loss in float64.

Every candidate gets the same float32 inputs; the reference (:mod:`tlbench.reference_loss`)
gets the same values in float64, so only the implementation's own arithmetic separates the two.

Errors:

- loss rel. err: ``max_i |L_i - L_ref_i| / |L_ref_i|`` over the utterances, or
  ``|sum L - sum L_ref| / |sum L_ref|`` (marked "(sum)") where the library has no per-utterance
  output.
- grad rel. err: for each input ``x`` (logits; am and lm; or encoder_out, decoder_out and the
  joiner's weight and bias), ``max|g - g_ref| / max|g_ref|`` with ``g = d(sum_i L_i)/dx`` over
  the whole padded tensor (a gradient leaking into padding counts); the largest over the inputs.

A row is one implementation/variant on one problem. Verdicts: ``ok``; ``FAIL: ...`` (an error
above its tolerance, a non-finite value, a wrong shape or an unexpected exception);
``refused: ...`` (the library raised on an input it is known to reject, e.g. ``U_i = 0`` for
k2); ``skipped: ...``; ``unavailable: ...``. Only FAIL rows fail a run.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .errors import first_line
from .implementation import BackendUnavailable, LossImplementation, VerifyVariant, no_condition

__all__ = [
    "CROSS_DEVICE_FACTOR", "GRAD_DEFINITION", "GRAD_RTOL_FLOOR", "GRAD_RTOL_PER_NAT", "JOINER_DIM", "LOSS_DEFINITION",
    "LOSS_RTOL", "REFERENCE_AM_LM", "REFERENCE_DESCRIPTION", "REFERENCE_JOINER", "REFERENCE_JOINER_MODIFIED",
    "REFERENCE_MODIFIED", "REFERENCE_STANDARD", "REFUSAL_POLICY", "STATUSES", "STATUS_FAIL", "STATUS_OK",
    "STATUS_REFUSED", "STATUS_SKIPPED", "STATUS_UNAVAILABLE", "Candidate", "Mismatch", "Problem", "Row",
    "any_u_zero", "candidates_for", "default_problems", "default_variant", "grad_tolerance",
    "gradient_relative_error", "libraries", "loss_relative_error", "make_problem", "more_cells_than_on_cpu",
    "no_modified_alignment",
    "reference_candidate", "reference_result", "summarize", "tolerance_text", "u_max_zero", "verify",
]

# ----------------------------------------------------------------------------- tolerances
#
# float32 implementations round every log-probability and every step of the alpha/beta
# recursion; the exact float64 loss of the same float32 inputs differs from theirs only by that
# rounding. Largest errors observed on this problem set over seeds 0-19 (CPU, this suite's
# libraries, all agreeing with the reference):
#   loss rel. err:             4.0e-7 (torchaudio), 3.2e-7 (k2), 2.4e-7 (optimized_transducer)
#   grad rel. err per nat:     5.7e-7 (optimized_transducer, modified), 4.7e-7 (torchaudio),
#                              1.0e-7 (k2 simple), 6e-8 (k2), 1e-8 (the reference on float32 input)
# Tolerances are 10x the largest observation, rounded up.
#
# Loss: a log-domain sum of ~T + U rounded terms; its relative error stays near float32's
# eps (6e-8) times a few, whatever the length.
LOSS_RTOL = 4e-6
# Gradient: each occupancy is exp(alpha + beta + log p - log Z). float32 alpha and beta carry an
# absolute error of about eps * |log Z|, so the gradient's relative error grows with the loss
# in nats (observed: ~2e-6 at L = 30, up to 2e-4 at L = 450). The allowed error is therefore
# GRAD_RTOL_PER_NAT * max_i L_ref_i, never below GRAD_RTOL_FLOOR (losses of a nat or two, where
# the float32 softmax's own rounding, ~1e-6 relative, dominates).
GRAD_RTOL_PER_NAT = 6e-6
GRAD_RTOL_FLOOR = 1e-5
# CUDA versus CPU of one implementation: each is within its tolerance of the exact value, so
# the two are within twice that of each other.
CROSS_DEVICE_FACTOR = 2.0

STATUS_OK, STATUS_FAIL, STATUS_REFUSED, STATUS_SKIPPED, STATUS_UNAVAILABLE = (
    "ok", "FAIL", "refused", "skipped", "unavailable")
STATUSES = (STATUS_OK, STATUS_FAIL, STATUS_REFUSED, STATUS_SKIPPED, STATUS_UNAVAILABLE)

LOSS_DEFINITION = ("max over utterances of |L_i - L_ref_i| / |L_ref_i|; where the library has no per-utterance "
                   "output (marked '(sum)'), |sum_i L_i - sum_i L_ref_i| / |sum_i L_ref_i|")
GRAD_DEFINITION = ("for each input x (logits; am and lm; or encoder_out, decoder_out, weight and bias of the joiner): "
                   "max|g - g_ref| / max|g_ref| over the whole padded tensor, g = d(sum_i L_i)/dx; the largest over "
                   "the inputs")
REFERENCE_DESCRIPTION = "tlbench.reference_loss in float64 on the same float32 values"
REFUSAL_POLICY = ("refused rows (the library raised on an input it is known to reject) are reported but do not "
                  "fail the run; unavailable and skipped rows neither; only FAIL rows do")

# Which exact loss a variant computes (see VerifyVariant.reference).
REFERENCE_STANDARD, REFERENCE_MODIFIED, REFERENCE_AM_LM = "standard", "modified", "am+lm"
REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED = "joiner", "joiner-modified"
# The joiner problems' encoder/decoder width: small, so that V = 4096 stays cheap.
JOINER_DIM = 8


def grad_tolerance(max_reference_loss: float, per_nat: float = GRAD_RTOL_PER_NAT) -> float:
    """The allowed gradient rel. err for a problem whose largest exact loss is that many nats."""
    return max(GRAD_RTOL_FLOOR, per_nat * max_reference_loss)


def tolerance_text() -> str:
    return (f"tolerances (float32): loss {LOSS_RTOL:g}; grad max({GRAD_RTOL_FLOOR:g}, {GRAD_RTOL_PER_NAT:g} x the "
            f"problem's largest exact loss in nats); cuda vs cpu: {CROSS_DEVICE_FACTOR:g}x those")


# ----------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """One batch of random transducer inputs (CPU tensors; candidates move them).

    Attributes:
      name: short identifier, e.g. ``"mixed"``.
      note: what the problem exercises.
      logits: ``(N, T, U + 1, V) float32``, ``T = max T_i``, ``U = max U_i``; the joiner output.
      am: ``(N, T, V) float32`` and lm: ``(N, U + 1, V) float32``: the two halves of k2's
        simple loss, whose joiner output is ``am[:, :, None] + lm[:, None]``.
      targets: ``(N, U) int64`` labels in ``[1, V)`` (0 is blank); ``(N, 0)`` when ``U = 0``.
      logit_lengths: ``(N,) int64`` ``T_i``.
      target_lengths: ``(N,) int64`` ``U_i``.
      encoder_out: ``(N, T, C) float32`` and decoder_out: ``(N, U + 1, C) float32``, with
        weight ``(V, C) float32`` and bias ``(V,) float32``: a joiner problem for losses that
        take the joiner's inputs, whose logits are ``tanh(enc[:, :, None] + dec[:, None]) @
        weight.T + bias``.
    """

    name: str
    note: str
    logits: torch.Tensor
    am: torch.Tensor
    lm: torch.Tensor
    targets: torch.Tensor
    logit_lengths: torch.Tensor
    target_lengths: torch.Tensor
    encoder_out: Optional[torch.Tensor] = None
    decoder_out: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None

    @property
    def shapes(self) -> List[Tuple[int, int]]:
        """``(T_i, U_i)`` in batch order."""
        return list(zip(self.logit_lengths.tolist(), self.target_lengths.tolist()))

    @property
    def vocab_size(self) -> int:
        return int(self.logits.size(-1))

    @property
    def num_cells(self) -> int:
        """``sum_i T_i (U_i + 1)``: lattice cells (rows of the packed layout)."""
        return sum(t * (u + 1) for t, u in self.shapes)

    def leaf(self, name: str, device: str) -> torch.Tensor:
        """A fresh float32 leaf copy of the tensor ``name`` on ``device`` (a library that
        overwrites its input spoils only that copy)."""
        tensor = self.packed_logits() if name == "packed_logits" else getattr(self, name)
        return tensor.detach().to(device=device, dtype=torch.float32).clone().requires_grad_()

    def ints(self, name: str, device: str, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        """``targets``, ``logit_lengths`` or ``target_lengths`` as ``dtype`` on ``device``."""
        return getattr(self, name).to(device=device, dtype=dtype).contiguous()

    def boundary(self, device) -> torch.Tensor:
        """``(N, 4) int64`` rows ``[0, 0, U_i, T_i]``, k2's form of the lengths."""
        boundary = torch.zeros(len(self.shapes), 4, dtype=torch.int64)
        boundary[:, 2] = self.target_lengths
        boundary[:, 3] = self.logit_lengths
        return boundary.to(device)

    def batch(self, device: str, encoder_out: Optional[torch.Tensor] = None,
              decoder_out: Optional[torch.Tensor] = None):
        """The problem as the benchmark's :class:`tlbench.data.TransducerBatch` (int32 targets
        and lengths on ``device``), for calling an implementation's ``loss``."""
        from .data import TransducerBatch

        return TransducerBatch(self.shapes, encoder_out, decoder_out, self.ints("targets", device),
                               self.ints("logit_lengths", device), self.ints("target_lengths", device))

    def joiner(self, device: str):
        """A :class:`tlbench.data.Joiner` holding float32 copies of ``weight`` and ``bias``."""
        from .data import Joiner

        joiner = Joiner(self.weight.size(1), self.weight.size(0)).to(device)
        with torch.no_grad():
            joiner.output_linear.weight.copy_(self.weight)
            joiner.output_linear.bias.copy_(self.bias)
        return joiner

    def packed_logits(self) -> torch.Tensor:
        """``(sum_i T_i (U_i + 1), V) float32``: optimized_transducer's layout of ``logits``."""
        return torch.cat([self.logits[i, :t, : u + 1].reshape(-1, self.vocab_size)
                          for i, (t, u) in enumerate(self.shapes)]).contiguous()

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`packed_logits`: ``(sum_i T_i (U_i + 1), V)`` -> ``(N, T, U + 1, V)``
        of the same dtype on the CPU, zero outside each utterance's grid."""
        packed = packed.detach().cpu()
        out = torch.zeros(self.logits.shape, dtype=packed.dtype)
        offset = 0
        for i, (t, u) in enumerate(self.shapes):
            size = t * (u + 1)
            out[i, :t, : u + 1] = packed[offset : offset + size].view(t, u + 1, -1)
            offset += size
        return out

    def describe(self) -> dict:
        return {"name": self.name, "note": self.note, "vocab_size": self.vocab_size,
                "shapes_T_U": [list(s) for s in self.shapes], "num_cells": self.num_cells}


def make_problem(name: str, note: str, shapes: Sequence[Tuple[int, int]], vocab_size: int,
                 generator: torch.Generator) -> Problem:
    """Standard-normal float32 logits, am and lm; uniform labels in ``[1, V)``; a joiner
    problem of width :data:`JOINER_DIM` from its own generator (seeded by the shapes), so
    that adding it left the other tensors of every problem as they were."""
    n = len(shapes)
    t_max = max(t for t, _ in shapes)
    u_max = max(u for _, u in shapes)
    logits = torch.randn(n, t_max, u_max + 1, vocab_size, generator=generator)
    am = torch.randn(n, t_max, vocab_size, generator=generator)
    lm = torch.randn(n, u_max + 1, vocab_size, generator=generator)
    targets = torch.randint(1, vocab_size, (n, u_max), generator=generator, dtype=torch.int64)
    joiner_gen = torch.Generator().manual_seed(vocab_size + sum(31 * t + u for t, u in shapes))
    encoder_out = torch.randn(n, t_max, JOINER_DIM, generator=joiner_gen)
    decoder_out = torch.randn(n, u_max + 1, JOINER_DIM, generator=joiner_gen)
    weight = torch.randn(vocab_size, JOINER_DIM, generator=joiner_gen)
    bias = 0.5 * torch.randn(vocab_size, generator=joiner_gen)
    return Problem(name, note, logits, am, lm, targets,
                   torch.tensor([t for t, _ in shapes], dtype=torch.int64),
                   torch.tensor([u for _, u in shapes], dtype=torch.int64),
                   encoder_out, decoder_out, weight, bias)


def default_problems(seed: int) -> List[Problem]:
    """The problem set: small enough that every implementation (warprnnt_numba's slow CPU path
    included, where allowed) runs it in seconds on 2 cores."""
    gen = torch.Generator().manual_seed(seed)

    def r(lo: int, hi: int) -> int:  # uniform integer in [lo, hi]
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    problems = []
    shapes = []
    for _ in range(4):
        t = r(8, 32)
        shapes.append((t, r(2, min(12, t - 1))))
    problems.append(make_problem("mixed", "4 utterances of different T_i and U_i", shapes, 48, gen))
    problems.append(make_problem("U_i=0", "U_i = 0 beside U_i > 0 (and T_i = 1 with U_i = 0)",
                                 [(1, 0), (r(6, 16), 0), (r(8, 16), r(3, 6))], 24, gen))
    problems.append(make_problem("U_max=0", "every U_i = 0: targets of shape (N, 0)",
                                 [(r(3, 12), 0), (r(3, 12), 0)], 16, gen))
    problems.append(make_problem("T_i=1", "T_i = 1 with U_i >= 1 (all labels on one frame)",
                                 [(1, r(2, 4)), (1, 1), (r(8, 16), r(2, 6))], 20, gen))
    problems.append(make_problem("V=4096", "a vocabulary of 4096", [(r(4, 8), r(1, 3)), (r(4, 8), r(1, 3))], 4096, gen))
    t0, t1 = r(100, 128), r(60, 100)
    problems.append(make_problem("long", "two longer utterances (rounding accumulates)",
                                 [(t0, r(30, 45)), (t1, r(15, 30))], 32, gen))
    return problems


# ----------------------------------------------------------------------------- conditions


def any_u_zero(problem: Problem) -> Optional[str]:
    return "an utterance has U_i = 0" if any(u == 0 for _, u in problem.shapes) else None


def u_max_zero(problem: Problem) -> Optional[str]:
    return "U_max = 0 (targets of shape (N, 0))" if problem.targets.size(1) == 0 else None


def more_cells_than_on_cpu(max_cells: int) -> Callable[[Problem, str], Optional[str]]:
    """A ``skip`` for a loss whose CPU path runs Python-level torch ops per lattice cell:
    problems of more than ``max_cells`` cells are not run on CPU (too slow)."""

    def skip(problem: Problem, device: str) -> Optional[str]:
        if device == "cpu" and problem.num_cells > max_cells:
            return (f"{problem.num_cells} lattice cells > {max_cells}: its CPU path runs Python-level torch ops per "
                    "cell (too slow here)")
        return None

    return skip


def no_modified_alignment(problem: Problem, device: str = "cpu") -> Optional[str]:
    if any(t < u + 1 for t, u in problem.shapes):
        return "an utterance has T_i < U_i + 1: no alignment with one label per frame (exact loss +inf)"
    return None


# ----------------------------------------------------------------------------- candidates

# What a candidate returns: the losses, (N,) per utterance or a scalar sum over the batch, and
# the gradient of their sum w.r.t. each named input, shaped like that input in the Problem.
CandidateResult = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


@dataclass
class Candidate:
    """One implementation/variant on one device, as :func:`verify` runs it.

    Attributes:
      name: the implementation, e.g. ``"k2"`` (what ``--only`` selects).
      variant: what is called and how, e.g. ``"rnnt_loss_simple"``.
      device: ``"cpu"`` or ``"cuda"``.
      compute: ``Problem -> (losses, grads)`` (see :class:`tlbench.implementation.VerifyVariant`).
      reference: which exact loss it computes (``REFERENCE_*``).
      library: the library and version shown above the table, e.g. ``"k2 (fast_rnnt 1.3)"``.
      dtype: the dtype of the inputs it gets.
      known_refusal: ``Problem -> None`` or the input condition under which the library is known
        to raise: an exception then gives a "refused" row, not a FAIL.
      skip: ``Problem -> None`` or why this problem is not run for it.
      unavailable: set when it cannot run at all: the reason and how to install it.
      not_run: set when it is known to be inapplicable here, e.g. CUDA-only without a GPU.
      loss_rtol, grad_rtol_per_nat: its tolerances (see the module constants).
    """

    name: str
    variant: str
    device: str
    compute: Optional[Callable[[Problem], CandidateResult]]
    reference: str = REFERENCE_STANDARD
    library: str = ""
    dtype: str = "float32"
    known_refusal: Callable[[Problem], Optional[str]] = no_condition
    skip: Callable[[Problem], Optional[str]] = no_condition
    unavailable: Optional[str] = None
    not_run: Optional[str] = None
    loss_rtol: float = LOSS_RTOL
    grad_rtol_per_nat: float = GRAD_RTOL_PER_NAT

    def grad_rtol(self, max_reference_loss: float) -> float:
        return grad_tolerance(max_reference_loss, self.grad_rtol_per_nat)


def reference_candidate(device: str = "cpu") -> Candidate:
    """The project's own loss run on float32 inputs: it must pass (its recursion is float64)."""
    from .reference_loss import rnnt_loss

    def compute(problem: Problem) -> CandidateResult:
        x = problem.leaf("logits", device)
        losses = rnnt_loss(x, problem.targets.to(device), problem.logit_lengths.to(device),
                           problem.target_lengths.to(device), blank=0, reduction="none")
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return Candidate("reference", "rnnt_loss (float32 input)", device, compute, library="reference (tlbench)")


def default_variant(impl: LossImplementation) -> VerifyVariant:
    """The benchmark's own call, on the problem's float32 inputs (reduction "sum")."""

    def compute(backend, problem: Problem, device: str) -> CandidateResult:
        if impl.layout == "joiner":
            enc, dec = problem.leaf("encoder_out", device), problem.leaf("decoder_out", device)
            joiner = problem.joiner(device)
            loss, _ = impl.loss(backend, None, problem.batch(device, enc, dec), joiner)
            loss.backward()
            linear = joiner.output_linear
            return loss.detach(), {"encoder_out": enc.grad, "decoder_out": dec.grad, "weight": linear.weight.grad,
                                   "bias": linear.bias.grad}
        x = problem.leaf("packed_logits" if impl.layout == "packed" else "logits", device)
        loss, _ = impl.loss(backend, x, problem.batch(device), None)
        loss.backward()
        grad = problem.unpack(x.grad) if impl.layout == "packed" else x.grad
        return loss.detach(), {"logits": grad}

    reference = REFERENCE_JOINER if impl.layout == "joiner" else REFERENCE_STANDARD
    return VerifyVariant("the benchmark's call (reduction sum)", compute, reference=reference)


def _cuda_missing() -> str:
    return "needs a CUDA GPU (torch.cuda.is_available() is False)"


def candidates_for(impl: LossImplementation, devices: Sequence[str]) -> List[Candidate]:
    """``impl``'s verification variants on each of ``devices`` that it runs on.

    A variant none of whose devices is here gives one "skipped" row; a library that cannot be
    imported gives one "unavailable" row for the implementation.
    """
    variants = list(impl.verify) if impl.verify is not None else [default_variant(impl)]
    if not variants:
        return [Candidate(impl.name, "-", "cpu", None, not_run=impl.verify_note or "no verification variant")]
    planned: List[Tuple[VerifyVariant, str]] = []
    rows: List[Candidate] = []
    for variant in variants:
        if not any(d in devices for d in variant.devices):
            missing = variant.devices[0]
            reason = _cuda_missing() if missing == "cuda" else f"runs on {', '.join(variant.devices)} only"
            rows.append(Candidate(impl.name, variant.variant, missing, None, not_run=reason))
    for device in devices:  # device-major: all CPU rows, then all CUDA rows
        unsupported = impl.supports_device(device)
        for variant in variants:
            if device not in variant.devices:
                continue
            if unsupported:
                rows.append(Candidate(impl.name, variant.variant, device, None, not_run=unsupported))
            else:
                planned.append((variant, device))
    if not planned:
        return rows
    try:
        backend = impl.load_backend()
    except BackendUnavailable as missing:
        return [Candidate(impl.name, planned[0][0].variant, planned[0][1], None,
                          unavailable=impl.unavailable(missing))] + rows
    library = backend.label(impl.name)

    def bind(variant: VerifyVariant, device: str) -> Candidate:
        return Candidate(
            impl.name, variant.variant, device, lambda problem: variant.compute(backend, problem, device),
            reference=variant.reference, library=library, known_refusal=variant.known_refusal,
            skip=lambda problem: variant.skip(problem, device),
            loss_rtol=LOSS_RTOL if variant.loss_rtol is None else variant.loss_rtol,
            grad_rtol_per_nat=GRAD_RTOL_PER_NAT if variant.grad_rtol_per_nat is None else variant.grad_rtol_per_nat)

    return [bind(variant, device) for variant, device in planned] + rows


# ----------------------------------------------------------------------------- verification


@dataclass
class Row:
    """One line of the result table.

    ``loss_rel_err``/``grad_rel_err`` are None where nothing was compared, and ``inf`` for a
    non-finite result; ``grad_rel_err_by_input`` holds the per-input errors.
    """

    implementation: str
    variant: str
    device: str
    dtype: str
    problem: str
    status: str
    verdict: str
    loss_rel_err: Optional[float] = None
    loss_compared: Optional[str] = None  # "per utterance" or "sum"
    grad_rel_err: Optional[float] = None
    grad_rel_err_by_input: Dict[str, float] = field(default_factory=dict)
    loss_tolerance: Optional[float] = None
    grad_tolerance: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def failed(self) -> bool:
        return self.status == STATUS_FAIL

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("loss_rel_err", "grad_rel_err"):  # JSON has no inf/nan: written as strings
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = str(data[key])
        data["grad_rel_err_by_input"] = {k: (v if math.isfinite(v) else str(v))
                                         for k, v in data["grad_rel_err_by_input"].items()}
        return data


@dataclass
class _Reference:
    losses: torch.Tensor  # (N,) float64
    grads: Dict[str, torch.Tensor]  # float64, shaped like the Problem's inputs


def reference_result(problem: Problem, kind: str) -> _Reference:
    """The exact loss and gradients (float64, CPU) of ``problem`` for reference ``kind``."""
    from .reference_loss import rnnt_loss

    args = (problem.targets, problem.logit_lengths, problem.target_lengths)
    if kind == REFERENCE_AM_LM:
        am = problem.am.double().requires_grad_()
        lm = problem.lm.double().requires_grad_()
        losses = rnnt_loss(am[:, :, None] + lm[:, None], *args, blank=0, reduction="none")
        losses.sum().backward()
        return _Reference(losses.detach(), {"am": am.grad, "lm": lm.grad})
    if kind in (REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED):
        inputs = {name: getattr(problem, name).double().requires_grad_()
                  for name in ("encoder_out", "decoder_out", "weight", "bias")}
        # (N, T, 1, C) + (N, 1, U+1, C) -> (N, T, U+1, C) -> logits (N, T, U+1, V)
        joined = torch.tanh(inputs["encoder_out"][:, :, None] + inputs["decoder_out"][:, None])
        logits = torch.nn.functional.linear(joined, inputs["weight"], inputs["bias"])
        losses = rnnt_loss(logits, *args, blank=0, reduction="none",
                           one_sym_per_frame=kind == REFERENCE_JOINER_MODIFIED)
        losses.sum().backward()
        return _Reference(losses.detach(), {name: t.grad for name, t in inputs.items()})
    if kind not in (REFERENCE_STANDARD, REFERENCE_MODIFIED):
        raise ValueError(f"unknown reference kind {kind!r}")
    x = problem.logits.double().requires_grad_()
    losses = rnnt_loss(x, *args, blank=0, reduction="none", one_sym_per_frame=kind == REFERENCE_MODIFIED)
    losses.sum().backward()
    return _Reference(losses.detach(), {"logits": x.grad})


class Mismatch(Exception):
    """A candidate's output has the wrong form (shape, missing gradient)."""


def loss_relative_error(losses: torch.Tensor, reference: torch.Tensor) -> Tuple[float, str]:
    """``losses`` (N,) or scalar (the batch sum) vs ``reference`` (N,) float64 -> (error, how)."""
    losses = losses.detach().cpu().double()
    if losses.dim() == 0 or losses.numel() == 1 and reference.numel() != 1:
        got, ref, how = losses.reshape(1), reference.sum().reshape(1), "sum"
    else:
        if losses.shape != reference.shape:
            raise Mismatch(f"losses have shape {tuple(losses.shape)}; expected {tuple(reference.shape)} or a scalar")
        got, ref, how = losses, reference, "per utterance"
    if not torch.isfinite(got).all():
        return math.inf, how
    return float(((got - ref).abs() / ref.abs().clamp_min(1e-30)).max()), how


def gradient_relative_error(grad: Optional[torch.Tensor], reference: torch.Tensor, name: str) -> float:
    """``max|g - g_ref| / max|g_ref|`` over the whole tensor (absolute if ``g_ref`` is all 0)."""
    if grad is None:
        raise Mismatch(f"no gradient for {name}")
    grad = grad.detach().cpu().double()
    if grad.shape != reference.shape:
        raise Mismatch(f"gradient of {name} has shape {tuple(grad.shape)}; expected {tuple(reference.shape)}")
    if not torch.isfinite(grad).all():
        return math.inf
    scale = float(reference.abs().max())
    return float((grad - reference).abs().max()) / (scale if scale > 0 else 1.0)


def _max_abs(tensor: torch.Tensor) -> float:
    return float(tensor.detach().abs().max()) if tensor.numel() else 0.0


def _normalise(result) -> CandidateResult:
    if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[1], dict):
        raise Mismatch("compute must return (losses, {input name: gradient})")
    return result[0], result[1]


def _compare(row: Row, losses: torch.Tensor, grads: Dict[str, torch.Tensor], ref_losses: torch.Tensor,
             ref_grads: Dict[str, torch.Tensor], loss_tol: float, grad_tol: float) -> None:
    """Fills ``row``'s errors, tolerances, status and verdict."""
    row.loss_rel_err, row.loss_compared = loss_relative_error(losses, ref_losses)
    row.grad_rel_err_by_input = {name: gradient_relative_error(grads.get(name), ref, name)
                                 for name, ref in ref_grads.items()}
    row.grad_rel_err = max(row.grad_rel_err_by_input.values())
    row.loss_tolerance, row.grad_tolerance = loss_tol, grad_tol
    problems = []
    if not row.loss_rel_err <= loss_tol:
        problems.append(f"loss rel. err {row.loss_rel_err:.2g} > {loss_tol:.2g}")
    if not row.grad_rel_err <= grad_tol:
        worst = max(row.grad_rel_err_by_input, key=row.grad_rel_err_by_input.get)
        problems.append(f"grad rel. err ({worst}) {row.grad_rel_err:.2g} > {grad_tol:.2g}")
    if problems:
        row.status, row.verdict = STATUS_FAIL, "FAIL: " + "; ".join(problems)
    else:
        row.status, row.verdict = STATUS_OK, STATUS_OK


def _run_one(candidate: Candidate, problem: Problem, reference: _Reference, row: Row) -> Optional[CandidateResult]:
    """Runs ``candidate`` on ``problem``, filling ``row``; returns its CPU output when compared."""
    started = time.perf_counter()
    try:
        losses, grads = _normalise(candidate.compute(problem))
        if candidate.device == "cuda" and torch.cuda.is_available():  # asynchronous errors surface here
            torch.cuda.synchronize()
    except Mismatch as error:
        row.status, row.verdict = STATUS_FAIL, f"FAIL: {error}"
        return None
    except Exception as error:
        row.seconds = time.perf_counter() - started
        condition = candidate.known_refusal(problem)
        if condition:
            row.status, row.verdict = STATUS_REFUSED, f"refused: {condition} ({first_line(error, 160, with_type=True)})"
        else:
            row.status, row.verdict = STATUS_FAIL, f"FAIL: unexpected {first_line(error, 160, with_type=True)}"
            if os.environ.get("VERIFY_LOSSES_TRACEBACK"):  # the row keeps one line; this shows the rest
                traceback.print_exc(file=sys.stderr)
        return None
    row.seconds = time.perf_counter() - started
    losses = losses.detach().cpu()
    grads = {name: (g.detach().cpu() if g is not None else None) for name, g in grads.items()}
    try:
        _compare(row, losses, grads, reference.losses, reference.grads, candidate.loss_rtol,
                 candidate.grad_rtol(_max_abs(reference.losses)))
    except Mismatch as error:
        row.status, row.verdict = STATUS_FAIL, f"FAIL: {error}"
        return None
    return losses, grads


def verify(candidates: Sequence[Candidate], problems: Sequence[Problem], progress: bool = False) -> List[Row]:
    """Runs every candidate on every problem and compares with the exact float64 loss.

    Returns one :class:`Row` per candidate and problem (one per candidate when it is
    unavailable or not run here), then one "cuda vs cpu" row per problem for each
    implementation/variant run on both devices. Never raises for a candidate's failure.
    """
    rows: List[Row] = []
    references: Dict[Tuple[int, str], _Reference] = {}
    outputs: Dict[Tuple[str, str, str, int], CandidateResult] = {}
    runnable = [c for c in candidates if c.unavailable is None and c.not_run is None and c.compute is not None]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runnable) * len(problems), desc="verifying", unit="run", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        for candidate in candidates:
            base = dict(implementation=candidate.name, variant=candidate.variant, device=candidate.device,
                        dtype=candidate.dtype)
            if candidate.unavailable is not None:
                rows.append(Row(problem="-", status=STATUS_UNAVAILABLE, verdict=f"unavailable: {candidate.unavailable}",
                                **base))
                continue
            if candidate.not_run is not None or candidate.compute is None:
                reason = candidate.not_run or "no compute function"
                rows.append(Row(problem="-", status=STATUS_SKIPPED, verdict=f"skipped: {reason}", **base))
                continue
            for index, problem in enumerate(problems):
                if bar is not None:
                    bar.set_postfix_str(f"{candidate.name} {problem.name}", refresh=False)
                row = Row(problem=problem.name, status=STATUS_FAIL, verdict="", **base)
                rows.append(row)
                skip = candidate.skip(problem)
                if skip:
                    row.status, row.verdict = STATUS_SKIPPED, f"skipped: {skip}"
                else:
                    key = (index, candidate.reference)
                    if key not in references:
                        references[key] = reference_result(problem, candidate.reference)
                    output = _run_one(candidate, problem, references[key], row)
                    if output is not None:
                        outputs[(candidate.name, candidate.variant, candidate.device, index)] = output
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    rows.extend(_cross_device_rows(candidates, problems, outputs))
    return rows


def _cross_device_rows(candidates: Sequence[Candidate], problems: Sequence[Problem],
                       outputs: Dict[Tuple[str, str, str, int], CandidateResult]) -> List[Row]:
    """CUDA output against the same implementation's CPU output, per problem run on both."""
    rows = []
    for candidate in candidates:
        if candidate.device != "cuda" or candidate.compute is None:
            continue
        for index, problem in enumerate(problems):
            cuda_out = outputs.get((candidate.name, candidate.variant, "cuda", index))
            cpu_out = outputs.get((candidate.name, candidate.variant, "cpu", index))
            if cuda_out is None or cpu_out is None:
                continue
            row = Row(candidate.name, candidate.variant, "cuda vs cpu", candidate.dtype, problem.name, STATUS_FAIL, "")
            cpu_losses = cpu_out[0].double()
            max_loss = _max_abs(cpu_losses)  # of a batch sum: it bounds every utterance's loss
            try:
                _compare(row, cuda_out[0], cuda_out[1], cpu_losses if cpu_losses.dim() else cpu_losses.reshape(1),
                         {k: v.double() for k, v in cpu_out[1].items()}, CROSS_DEVICE_FACTOR * candidate.loss_rtol,
                         CROSS_DEVICE_FACTOR * candidate.grad_rtol(max_loss))
            except Mismatch as error:
                row.verdict = f"FAIL: {error}"
            rows.append(row)
    return rows


def summarize(rows: Sequence[Row]) -> Dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        counts[row.status] += 1
    return counts


def libraries(candidates: Sequence[Candidate]) -> List[str]:
    seen: List[str] = []
    for candidate in candidates:
        if candidate.library and candidate.library not in seen:
            seen.append(candidate.library)
    return seen
