#!/usr/bin/env python3
"""Do the transducer losses compute the same thing? Loss and gradient of every importable
implementation in float32, compared with the project's exact loss in float64.

Random problems (seeded) cover mixed lengths in one batch, utterances with ``U_i = 0``, a batch
with ``U_max = 0``, utterances with ``T_i = 1``, a vocabulary of 4096 and a longer pair of
utterances. Every implementation gets the same float32 inputs; the reference
(:mod:`tlbench.reference_loss`) gets the same values in float64, so only the implementation's
own arithmetic separates the two.

Errors (both written above the table):

- loss rel. err: ``max_i |L_i - L_ref_i| / |L_ref_i|`` over the utterances, or
  ``|sum L - sum L_ref| / |sum L_ref|`` (marked "(sum)") where the library has no per-utterance
  output.
- grad rel. err: for each input ``x`` (logits, or am and lm), ``max|g - g_ref| / max|g_ref|``
  with ``g = d(sum_i L_i)/dx`` over the whole padded tensor (a gradient leaking into padding
  counts); the largest over the inputs.

A row is one implementation/variant on one problem. Verdicts: ``ok``; ``FAIL: ...`` (an
error above its tolerance, a non-finite value, a wrong shape or an unexpected exception);
``refused: ...`` (the library raised on an input it is known to reject, e.g. ``U_i = 0`` for
k2); ``skipped: ...``; ``unavailable: ...``. Only FAIL rows make the exit status 1.

Usage:
  verify_losses.py [--seed S] [--output-json PATH] [--only NAME,...] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.io import atomic_write_json

REPO_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SEED = 0
DEFAULT_OUTPUT = os.path.join(REPO_DIR, "log", "verify_losses.json")

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

# warprnnt_numba's CPU path issues Python-level torch ops per lattice cell (2-3 ms per cell
# here): problems with more cells than this are skipped for it on CPU.
NUMBA_CPU_MAX_CELLS = 1500

STATUS_OK, STATUS_FAIL, STATUS_REFUSED, STATUS_SKIPPED, STATUS_UNAVAILABLE = (
    "ok", "FAIL", "refused", "skipped", "unavailable")

LOSS_DEFINITION = ("max over utterances of |L_i - L_ref_i| / |L_ref_i|; where the library has no per-utterance "
                   "output (marked '(sum)'), |sum_i L_i - sum_i L_ref_i| / |sum_i L_ref_i|")
GRAD_DEFINITION = ("for each input x (logits, or am and lm): max|g - g_ref| / max|g_ref| over the whole padded "
                   "tensor, g = d(sum_i L_i)/dx; the largest over the inputs")
REFERENCE_DESCRIPTION = "tlbench.reference_loss in float64 on the same float32 values"
REFUSAL_POLICY = ("refused rows (the library raised on an input it is known to reject) are reported but do not "
                  "fail the run; unavailable and skipped rows neither; only FAIL rows do")


def grad_tolerance(max_reference_loss: float, per_nat: float = GRAD_RTOL_PER_NAT) -> float:
    """The allowed gradient rel. err for a problem whose largest exact loss is that many nats."""
    return max(GRAD_RTOL_FLOOR, per_nat * max_reference_loss)


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
    """

    name: str
    note: str
    logits: torch.Tensor
    am: torch.Tensor
    lm: torch.Tensor
    targets: torch.Tensor
    logit_lengths: torch.Tensor
    target_lengths: torch.Tensor

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

    def boundary(self, device: torch.device) -> torch.Tensor:
        """``(N, 4) int64`` rows ``[0, 0, U_i, T_i]``, k2's form of the lengths."""
        boundary = torch.zeros(len(self.shapes), 4, dtype=torch.int64)
        boundary[:, 2] = self.target_lengths
        boundary[:, 3] = self.logit_lengths
        return boundary.to(device)

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
    """Standard-normal float32 logits, am and lm; uniform labels in ``[1, V)``."""
    n = len(shapes)
    t_max = max(t for t, _ in shapes)
    u_max = max(u for _, u in shapes)
    logits = torch.randn(n, t_max, u_max + 1, vocab_size, generator=generator)
    am = torch.randn(n, t_max, vocab_size, generator=generator)
    lm = torch.randn(n, u_max + 1, vocab_size, generator=generator)
    targets = torch.randint(1, vocab_size, (n, u_max), generator=generator, dtype=torch.int64)
    return Problem(name, note, logits, am, lm, targets,
                   torch.tensor([t for t, _ in shapes], dtype=torch.int64),
                   torch.tensor([u for _, u in shapes], dtype=torch.int64))


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


# ----------------------------------------------------------------------------- candidates

# What a candidate returns: the losses, (N,) per utterance or a scalar sum over the batch, and
# the gradient of their sum w.r.t. each named input, shaped like that input in the Problem.
CandidateResult = Tuple[torch.Tensor, Dict[str, torch.Tensor]]

REFERENCE_STANDARD, REFERENCE_MODIFIED, REFERENCE_AM_LM = "standard", "modified", "am+lm"


def _no_condition(problem: Problem) -> Optional[str]:
    return None


@dataclass
class Candidate:
    """One implementation/variant on one device, as :func:`verify` runs it.

    Attributes:
      name: the implementation, e.g. ``"k2"`` (what ``--only`` selects).
      variant: what is called and how, e.g. ``"rnnt_loss_simple"``.
      device: ``"cpu"`` or ``"cuda"``.
      compute: ``Problem -> (losses, grads)``: ``losses`` ``(N,)`` float32 per utterance, or a
        scalar: the sum over the batch; ``grads`` ``{input name: d(sum_i L_i)/d input}``, each
        shaped like the Problem's tensor of that name (``"logits"`` ``(N, T, U + 1, V)``, or
        ``"am"`` ``(N, T, V)`` and ``"lm"`` ``(N, U + 1, V)``), on any device.
      reference: which exact loss it computes: ``"standard"`` (the RNN-T loss of ``logits``),
        ``"modified"`` (at most one label per frame) or ``"am+lm"`` (the standard loss of
        ``am[:, :, None] + lm[:, None]``, gradients w.r.t. am and lm).
      library: the library and version shown above the table, e.g. ``"k2 (fast_rnnt 1.3)"``.
      dtype: the dtype of the inputs it gets.
      known_refusal: ``Problem -> None`` or the input condition under which the library is known
        to raise (documented or asserted): an exception then gives a "refused" row, not a FAIL.
      skip: ``Problem -> None`` or why this problem is not run for it (too slow, no alignment).
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
    known_refusal: Callable[[Problem], Optional[str]] = _no_condition
    skip: Callable[[Problem], Optional[str]] = _no_condition
    unavailable: Optional[str] = None
    not_run: Optional[str] = None
    loss_rtol: float = LOSS_RTOL
    grad_rtol_per_nat: float = GRAD_RTOL_PER_NAT

    def grad_rtol(self, max_reference_loss: float) -> float:
        return grad_tolerance(max_reference_loss, self.grad_rtol_per_nat)


def _leaf(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """A fresh float32 leaf on ``device`` (a library that overwrites its input spoils only it)."""
    return tensor.detach().to(device=device, dtype=torch.float32).clone().requires_grad_()


def _ints(tensor: torch.Tensor, device: str, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype).contiguous()


def _first_line(error: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters (it goes in a table)."""
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _any_u_zero(problem: Problem) -> Optional[str]:
    return "an utterance has U_i = 0" if any(u == 0 for _, u in problem.shapes) else None


def _u_max_zero(problem: Problem) -> Optional[str]:
    return "U_max = 0 (targets of shape (N, 0))" if problem.targets.size(1) == 0 else None


def _no_modified_alignment(problem: Problem) -> Optional[str]:
    if any(t < u + 1 for t, u in problem.shapes):
        return "an utterance has T_i < U_i + 1: no alignment with one label per frame (exact loss +inf)"
    return None


def reference_candidate(device: str = "cpu") -> Candidate:
    """The project's own loss run on float32 inputs: it must pass (its recursion is float64)."""
    from tlbench.reference_loss import rnnt_loss

    def compute(problem: Problem) -> CandidateResult:
        x = _leaf(problem.logits, device)
        losses = rnnt_loss(x, problem.targets.to(device), problem.logit_lengths.to(device),
                           problem.target_lengths.to(device), blank=0, reduction="none")
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return Candidate("reference", "rnnt_loss (float32 input)", device, compute, library="reference (tlbench)")


def _torchaudio_candidates(devices: Sequence[str]) -> List[Candidate]:
    try:
        import torchaudio
        import torchaudio.functional as functional
    except Exception as error:  # an ABI mismatch raises OSError, not ImportError
        return [Candidate("torchaudio", "rnnt_loss", "cpu", None,
                          unavailable=f"{_first_line(error)}; pip install torchaudio==2.11.0")]
    library = f"torchaudio {torchaudio.__version__.split('+')[0]}"

    def make(device: str, fused: bool) -> Candidate:
        def compute(problem: Problem) -> CandidateResult:
            x = _leaf(problem.logits, device)
            # fused_log_softmax=False: the caller passes log-probabilities; the gradient compared
            # is the one the user gets, w.r.t. the logits before the log_softmax.
            inputs = x if fused else x.log_softmax(-1)
            losses = functional.rnnt_loss(inputs, _ints(problem.targets, device), _ints(problem.logit_lengths, device),
                                          _ints(problem.target_lengths, device), blank=0, reduction="none",
                                          fused_log_softmax=fused)
            losses.sum().backward()
            return losses, {"logits": x.grad}

        variant = "rnnt_loss" if fused else "rnnt_loss, fused_log_softmax=False (log_softmax input)"
        return Candidate("torchaudio", variant, device, compute, library=library)

    return [make(device, fused) for device in devices for fused in (True, False)]


def _optimized_transducer_candidates(devices: Sequence[str]) -> List[Candidate]:
    from tlbench.backends import load_optimized_transducer
    from tlbench.harness import BackendUnavailable

    try:
        backend = load_optimized_transducer()
    except BackendUnavailable as error:
        return [Candidate("optimized_transducer", "transducer_loss", "cpu", None,
                          unavailable=f"{error.reason}; {error.install_hint}")]
    module = backend.module

    def make(device: str, from_log_softmax: bool, one_sym_per_frame: bool) -> Candidate:
        def compute(problem: Problem) -> CandidateResult:
            x = _leaf(problem.packed_logits(), device)
            # from_log_softmax=True: the caller applies log_softmax (here by autograd from the
            # float32 leaf x), and the gradient compared is w.r.t. x: the one a user gets. (It
            # cannot see a per-cell term proportional to softmax(x) in the library's gradient
            # w.r.t. its input: log_softmax's backward removes such a term.)
            inputs = x.log_softmax(-1) if from_log_softmax else x
            loss = module.transducer_loss(inputs, _ints(problem.targets, device), _ints(problem.logit_lengths, device),
                                          _ints(problem.target_lengths, device), blank=0,
                                          from_log_softmax=from_log_softmax, one_sym_per_frame=one_sym_per_frame,
                                          reduction="sum")  # it has no "none"
            loss.backward()
            return loss.reshape(()), {"logits": problem.unpack(x.grad)}

        if one_sym_per_frame:
            variant = "one_sym_per_frame=True (modified transducer)"
        else:
            variant = f"from_log_softmax={from_log_softmax}"
        return Candidate("optimized_transducer", variant, device, compute,
                         reference=REFERENCE_MODIFIED if one_sym_per_frame else REFERENCE_STANDARD,
                         library=backend.label("optimized_transducer"), known_refusal=_u_max_zero,
                         skip=_no_modified_alignment if one_sym_per_frame else _no_condition)

    return [make(device, lsm, one_sym) for device in devices
            for lsm, one_sym in ((False, False), (True, False), (False, True))]


def _k2_candidates(devices: Sequence[str]) -> List[Candidate]:
    from tlbench.backends import load_k2_or_fast_rnnt
    from tlbench.harness import BackendUnavailable

    try:
        backend = load_k2_or_fast_rnnt()
    except BackendUnavailable as error:
        return [Candidate("k2", "rnnt_loss", "cpu", None, unavailable=f"{error.reason}; {error.install_hint}")]
    k2 = backend.module
    library = backend.label("k2")

    def full(device: str) -> Callable[[Problem], CandidateResult]:
        def compute(problem: Problem) -> CandidateResult:
            x = _leaf(problem.logits, device)
            losses = k2.rnnt_loss(logits=x, symbols=_ints(problem.targets, device, torch.int64), termination_symbol=0,
                                  boundary=problem.boundary(device), reduction="none")
            losses.sum().backward()
            return losses, {"logits": x.grad}

        return compute

    def pruned(device: str) -> Callable[[Problem], CandidateResult]:
        def compute(problem: Problem) -> CandidateResult:
            # s_range = U_max + 1 and ranges[n, t, j] = j: every label position is kept, so the
            # pruned logits are the full logits and the pruned loss is the full loss.
            x = _leaf(problem.logits, device)
            n, t_max, s_range, _ = x.shape
            ranges = torch.arange(s_range, device=device).expand(n, t_max, s_range).contiguous()
            losses = k2.rnnt_loss_pruned(logits=x, symbols=_ints(problem.targets, device, torch.int64), ranges=ranges,
                                         termination_symbol=0, boundary=problem.boundary(device), reduction="none")
            losses.sum().backward()
            return losses, {"logits": x.grad}

        return compute

    def simple(device: str) -> Callable[[Problem], CandidateResult]:
        def compute(problem: Problem) -> CandidateResult:
            am, lm = _leaf(problem.am, device), _leaf(problem.lm, device)
            losses = k2.rnnt_loss_simple(lm=lm, am=am, symbols=_ints(problem.targets, device, torch.int64),
                                         termination_symbol=0, boundary=problem.boundary(device), reduction="none")
            losses.sum().backward()
            return losses, {"am": am.grad, "lm": lm.grad}

        return compute

    candidates = []
    for device in devices:
        candidates.append(Candidate("k2", "rnnt_loss", device, full(device), library=library,
                                    known_refusal=_any_u_zero))
        candidates.append(Candidate("k2", "rnnt_loss_pruned, s_range = U_max + 1 (= full loss)", device,
                                    pruned(device), library=library, known_refusal=_any_u_zero))
        candidates.append(Candidate("k2", "rnnt_loss_simple (logits = am + lm)", device, simple(device),
                                    reference=REFERENCE_AM_LM, library=library, known_refusal=_any_u_zero))
    return candidates


def _warprnnt_numba_candidates(devices: Sequence[str]) -> List[Candidate]:
    try:
        from warprnnt_numba import RNNTLossNumba
    except Exception as error:
        return [Candidate("warprnnt_numba", "RNNTLossNumba", "cpu", None,
                          unavailable=f"{_first_line(error)}; pip install warprnnt-numba==0.4.1 numba==0.68.1")]
    library = f"warprnnt_numba {importlib.metadata.version('warprnnt-numba')}"
    loss_module = RNNTLossNumba(blank=0, reduction="none")

    def too_big(problem: Problem) -> Optional[str]:
        if problem.num_cells > NUMBA_CPU_MAX_CELLS:
            return (f"{problem.num_cells} lattice cells > {NUMBA_CPU_MAX_CELLS}: its CPU path runs Python-level "
                    f"torch ops per cell (too slow here)")
        return None

    def make(device: str) -> Candidate:
        def compute(problem: Problem) -> CandidateResult:
            x = _leaf(problem.logits, device)  # it applies log_softmax itself on CPU
            losses = loss_module(x, _ints(problem.targets, device), _ints(problem.logit_lengths, device),
                                 _ints(problem.target_lengths, device))
            losses.sum().backward()
            return losses, {"logits": x.grad}

        return Candidate("warprnnt_numba", "RNNTLossNumba", device, compute, library=library,
                         skip=too_big if device == "cpu" else _no_condition)

    return [make(device) for device in devices]


def _cuda_only_candidate(name: str, variant: str, module_name: str, install: str, cuda: bool,
                         build: Callable[[object], Callable[[Problem], CandidateResult]],
                         known_refusal: Callable[[Problem], Optional[str]] = _no_condition) -> Candidate:
    if not cuda:
        return Candidate(name, variant, "cuda", None, not_run="needs a CUDA GPU (torch.cuda.is_available() is False)")
    try:
        module = importlib.import_module(module_name)
        compute = build(module)  # SpeechBrain's loss module checks for numba's CUDA support here
    except Exception as error:
        return Candidate(name, variant, "cuda", None, unavailable=f"{_first_line(error)}; {install}")
    top = module_name.split(".")[0]  # the distribution has the top-level package's name
    try:
        version = importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(importlib.import_module(top), "__version__", "unknown"))
    return Candidate(name, variant, "cuda", compute, library=f"{name} {version}", known_refusal=known_refusal)


def _warp_rnnt(module) -> Callable[[Problem], CandidateResult]:
    def compute(problem: Problem) -> CandidateResult:
        x = _leaf(problem.logits, "cuda")
        # Its input is log-probabilities: log_softmax by autograd, gradient compared w.r.t. x.
        losses = module.rnnt_loss(x.log_softmax(-1), _ints(problem.targets, "cuda"), _ints(problem.logit_lengths, "cuda"),
                                  _ints(problem.target_lengths, "cuda"), blank=0, reduction="none")
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return compute


def _speechbrain(module) -> Callable[[Problem], CandidateResult]:
    loss_module = module.TransducerLoss(blank=0, reduction="none")

    def compute(problem: Problem) -> CandidateResult:
        x = _leaf(problem.logits, "cuda")  # its forward applies log_softmax itself
        t_lens = _ints(problem.logit_lengths, "cuda")
        # int32 labels and lengths, as in its class docstring: older releases compile the numba
        # kernels for int32 only.
        losses = loss_module(x, _ints(problem.targets, "cuda"), t_lens, _ints(problem.target_lengths, "cuda"))
        losses.sum().backward()
        # Its kernels return each loss divided by T_i ("normalize the loss over time" in its
        # source) while the gradient is that of the undivided loss: the loss is scaled back.
        return losses.detach() * t_lens.to(losses.dtype), {"logits": x.grad}

    return compute


def _warp_transducer(module, device: str) -> Callable[[Problem], CandidateResult]:
    def compute(problem: Problem) -> CandidateResult:
        # Raw logits on both devices: its Python wrapper applies log_softmax before the CPU
        # kernel, its CUDA kernel normalises internally. Labels and lengths live with the logits.
        x = _leaf(problem.logits, device)
        losses = module.rnnt_loss(x, _ints(problem.targets, device), _ints(problem.logit_lengths, device),
                                  _ints(problem.target_lengths, device), blank=0, reduction="none")
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return compute


WARP_TRANSDUCER_INSTALL = "build it from https://github.com/HawkAaron/warp-transducer (pytorch_binding)"


def _warp_transducer_candidates(devices: Sequence[str], cuda: bool) -> List[Candidate]:
    """warp-transducer has a CPU and a CUDA path (users report gradients that differ between
    the two): both are run where it is installed."""
    candidates = []
    try:
        module = importlib.import_module("warprnnt_pytorch")
    except Exception as error:
        candidates.append(Candidate("warp_transducer", "rnnt_loss", "cpu", None,
                                    unavailable=f"{_first_line(error)}; {WARP_TRANSDUCER_INSTALL}"))
        if not cuda:
            candidates.append(Candidate("warp_transducer", "rnnt_loss", "cuda", None,
                                        not_run="needs a CUDA GPU (torch.cuda.is_available() is False)"))
        return candidates
    try:
        version = importlib.metadata.version("warprnnt_pytorch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    for device in devices:
        candidates.append(Candidate("warp_transducer", "rnnt_loss", device, _warp_transducer(module, device),
                                    library=f"warp_transducer {version}"))
    if not cuda:
        candidates.append(Candidate("warp_transducer", "rnnt_loss", "cuda", None,
                                    not_run="needs a CUDA GPU (torch.cuda.is_available() is False)"))
    return candidates


IMPLEMENTATIONS = ("reference", "torchaudio", "optimized_transducer", "k2", "warprnnt_numba", "warp_transducer",
                   "warp_rnnt", "speechbrain")


def default_candidates(device: str = "cpu", only: Optional[Sequence[str]] = None) -> List[Candidate]:
    """Every implementation's candidates: on CPU, and also on CUDA when ``device == "cuda"``
    (then a CUDA-versus-CPU row is added per problem). ``only``: implementation names to keep."""
    cuda = device == "cuda"
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    factories: Dict[str, Callable[[], List[Candidate]]] = {
        "reference": lambda: [reference_candidate(d) for d in devices],
        "torchaudio": lambda: _torchaudio_candidates(devices),
        "optimized_transducer": lambda: _optimized_transducer_candidates(devices),
        "k2": lambda: _k2_candidates(devices),
        "warprnnt_numba": lambda: _warprnnt_numba_candidates(devices),
        "warp_transducer": lambda: _warp_transducer_candidates(devices, cuda),
        "warp_rnnt": lambda: [_cuda_only_candidate(
            "warp_rnnt", "rnnt_loss (log_softmax input)", "warp_rnnt", "pip install warp_rnnt (builds against CUDA)",
            cuda, _warp_rnnt)],
        "speechbrain": lambda: [_cuda_only_candidate(
            "speechbrain", "TransducerLoss (its loss/T_i scaled back by T_i)", "speechbrain.nnet.loss.transducer_loss",
            "pip install speechbrain numba", cuda, _speechbrain)],
    }
    names = list(IMPLEMENTATIONS) if only is None else list(only)
    unknown = [name for name in names if name not in factories]
    if unknown:
        raise UsageError(f"unknown implementation {', '.join(unknown)}; expected some of {', '.join(IMPLEMENTATIONS)}")
    candidates: List[Candidate] = []
    for name in names:
        candidates.extend(factories[name]())
    return candidates


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
    from tlbench.reference_loss import rnnt_loss

    args = (problem.targets, problem.logit_lengths, problem.target_lengths)
    if kind == REFERENCE_AM_LM:
        am = problem.am.double().requires_grad_()
        lm = problem.lm.double().requires_grad_()
        losses = rnnt_loss(am[:, :, None] + lm[:, None], *args, blank=0, reduction="none")
        losses.sum().backward()
        return _Reference(losses.detach(), {"am": am.grad, "lm": lm.grad})
    if kind not in (REFERENCE_STANDARD, REFERENCE_MODIFIED):
        raise ValueError(f"unknown reference kind {kind!r}")
    x = problem.logits.double().requires_grad_()
    losses = rnnt_loss(x, *args, blank=0, reduction="none", one_sym_per_frame=kind == REFERENCE_MODIFIED)
    losses.sum().backward()
    return _Reference(losses.detach(), {"logits": x.grad})


class _Mismatch(Exception):
    """A candidate's output has the wrong form (shape, missing gradient)."""


def loss_relative_error(losses: torch.Tensor, reference: torch.Tensor) -> Tuple[float, str]:
    """``losses`` (N,) or scalar (the batch sum) vs ``reference`` (N,) float64 -> (error, how)."""
    losses = losses.detach().cpu().double()
    if losses.dim() == 0 or losses.numel() == 1 and reference.numel() != 1:
        got, ref, how = losses.reshape(1), reference.sum().reshape(1), "sum"
    else:
        if losses.shape != reference.shape:
            raise _Mismatch(f"losses have shape {tuple(losses.shape)}; expected {tuple(reference.shape)} or a scalar")
        got, ref, how = losses, reference, "per utterance"
    if not torch.isfinite(got).all():
        return math.inf, how
    return float(((got - ref).abs() / ref.abs().clamp_min(1e-30)).max()), how


def gradient_relative_error(grad: Optional[torch.Tensor], reference: torch.Tensor, name: str) -> float:
    """``max|g - g_ref| / max|g_ref|`` over the whole tensor (absolute if ``g_ref`` is all 0)."""
    if grad is None:
        raise _Mismatch(f"no gradient for {name}")
    grad = grad.detach().cpu().double()
    if grad.shape != reference.shape:
        raise _Mismatch(f"gradient of {name} has shape {tuple(grad.shape)}; expected {tuple(reference.shape)}")
    if not torch.isfinite(grad).all():
        return math.inf
    scale = float(reference.abs().max())
    return float((grad - reference).abs().max()) / (scale if scale > 0 else 1.0)


def _max_abs(tensor: torch.Tensor) -> float:
    return float(tensor.detach().abs().max()) if tensor.numel() else 0.0


def _normalise(result) -> CandidateResult:
    if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[1], dict):
        raise _Mismatch("compute must return (losses, {input name: gradient})")
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
    except _Mismatch as error:
        row.status, row.verdict = STATUS_FAIL, f"FAIL: {error}"
        return None
    except Exception as error:
        row.seconds = time.perf_counter() - started
        condition = candidate.known_refusal(problem)
        if condition:
            row.status, row.verdict = STATUS_REFUSED, f"refused: {condition} ({_first_line(error)})"
        else:
            row.status, row.verdict = STATUS_FAIL, f"FAIL: unexpected {_first_line(error)}"
            if os.environ.get("VERIFY_LOSSES_TRACEBACK"):  # the row keeps one line; this shows the rest
                traceback.print_exc(file=sys.stderr)
        return None
    row.seconds = time.perf_counter() - started
    losses = losses.detach().cpu()
    grads = {name: (g.detach().cpu() if g is not None else None) for name, g in grads.items()}
    try:
        _compare(row, losses, grads, reference.losses, reference.grads, candidate.loss_rtol,
                 candidate.grad_rtol(_max_abs(reference.losses)))
    except _Mismatch as error:
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
            except _Mismatch as error:
                row.verdict = f"FAIL: {error}"
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report


def _format_error(value: Optional[float], how: Optional[str] = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2g}" if math.isfinite(value) else str(value)
    return f"{text} (sum)" if how == "sum" else text


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per row."""
    header = ("implementation", "variant", "problem", "device", "dtype", "loss rel. err", "grad rel. err", "verdict")
    lines = [(r.implementation, r.variant, r.problem, r.device, r.dtype, _format_error(r.loss_rel_err, r.loss_compared),
              _format_error(r.grad_rel_err), r.verdict) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the verdict is last: never padded
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def summarize(rows: Sequence[Row]) -> Dict[str, int]:
    counts = {status: 0 for status in (STATUS_OK, STATUS_FAIL, STATUS_REFUSED, STATUS_SKIPPED, STATUS_UNAVAILABLE)}
    for row in rows:
        counts[row.status] += 1
    return counts


def libraries(candidates: Sequence[Candidate]) -> List[str]:
    seen: List[str] = []
    for candidate in candidates:
        if candidate.library and candidate.library not in seen:
            seen.append(candidate.library)
    return seen


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device!r} is not allowed; expected auto, cpu or cuda")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise UsageError("--device cuda: torch.cuda.is_available() is False on this machine")
    if device == "auto":
        return "cuda" if available else "cpu"
    return device


def _parse_only(text: Optional[str]) -> Optional[List[str]]:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in IMPLEMENTATIONS]
    if not names or unknown:
        raise UsageError(f"--only {text!r}: unknown implementation {', '.join(unknown) or '(none given)'}; "
                         f"expected a comma-separated list of {', '.join(IMPLEMENTATIONS)}")
    return names


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed of the problems (default {DEFAULT_SEED})")
    parser.add_argument("--output-json", default=DEFAULT_OUTPUT, help="where the results go (default log/verify_losses.json)")
    parser.add_argument("--only", default=None, help=f"comma-separated implementations to run: {', '.join(IMPLEMENTATIONS)}")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available), cpu, or cuda (CUDA and CPU runs, plus CUDA-vs-CPU rows)")
    return parser.parse_args(argv)


def run(argv: Optional[Sequence[str]] = None, candidates: Optional[Sequence[Candidate]] = None,
        problems: Optional[Sequence[Problem]] = None) -> int:
    """The command: verifies, prints the table, writes the JSON; returns the exit status
    (0: no FAIL row, 1: some). ``candidates``/``problems`` replace the defaults (tests inject
    their own this way); bad flags raise :class:`UsageError`."""
    args = parse_args(argv)
    device = _resolve_device(args.device)
    only = _parse_only(args.only)
    if os.path.isdir(args.output_json):
        raise UsageError(f"--output-json {args.output_json!r} is a directory; expected a file path")
    started = time.perf_counter()
    problems = list(problems) if problems is not None else default_problems(args.seed)
    if candidates is None:
        candidates = default_candidates(device, only)
    elif only is not None:
        candidates = [c for c in candidates if c.name in only]
    rows = verify(candidates, problems, progress=True)
    counts = summarize(rows)
    passed = counts[STATUS_FAIL] == 0
    libs = libraries(candidates)
    tolerances = (f"tolerances (float32): loss {LOSS_RTOL:g}; grad max({GRAD_RTOL_FLOOR:g}, {GRAD_RTOL_PER_NAT:g} x the "
                  f"problem's largest exact loss in nats); cuda vs cpu: {CROSS_DEVICE_FACTOR:g}x those")
    print(f"transducer loss verification: seed {args.seed}, device {device}, torch {torch.__version__}, float32 inputs")
    print(f"libraries: {', '.join(libs) or '-'}")
    print(f"reference: {REFERENCE_DESCRIPTION}")
    print("problems:")
    for p in problems:
        print(f"  {p.name}: V={p.vocab_size}, (T_i, U_i) = {', '.join(f'({t},{u})' for t, u in p.shapes)} - {p.note}")
    print(f"loss rel. err = {LOSS_DEFINITION}")
    print(f"grad rel. err = {GRAD_DEFINITION}")
    print(tolerances)
    print(REFUSAL_POLICY)
    print()
    print(format_table(rows))
    print()
    print(f"summary: {counts[STATUS_OK]} ok, {counts[STATUS_FAIL]} FAIL, {counts[STATUS_REFUSED]} refused, "
          f"{counts[STATUS_SKIPPED]} skipped, {counts[STATUS_UNAVAILABLE]} unavailable -> {'PASS' if passed else 'FAIL'} "
          f"({time.perf_counter() - started:.1f} s)")
    result = {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])],
        "seed": args.seed,
        "device": device,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "libraries": libs,
        "definitions": {"loss_rel_err": LOSS_DEFINITION, "grad_rel_err": GRAD_DEFINITION,
                        "reference": REFERENCE_DESCRIPTION},
        "tolerances": {"loss_rtol": LOSS_RTOL, "grad_rtol_per_nat": GRAD_RTOL_PER_NAT,
                       "grad_rtol_floor": GRAD_RTOL_FLOOR, "cross_device_factor": CROSS_DEVICE_FACTOR,
                       "text": tolerances},
        "refusal_policy": REFUSAL_POLICY,
        "refusals_fail_run": False,
        "problems": [p.describe() for p in problems],
        "rows": [row.to_dict() for row in rows],
        "counts": counts,
        "passed": passed,
    }
    atomic_write_json(args.output_json, result)
    print(f"wrote {args.output_json}")
    return 0 if passed else 1


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
