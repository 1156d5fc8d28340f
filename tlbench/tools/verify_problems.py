"""The verification's inputs and tolerances: the seeded problems every candidate gets and how
far a float32 result may be from the exact float64 loss (used by :mod:`tlbench.tools.verify`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = [
    "CROSS_DEVICE_FACTOR", "GRAD_DEFINITION", "GRAD_RTOL_FLOOR", "GRAD_RTOL_PER_NAT", "JOINER_DIM", "LOSS_DEFINITION",
    "LOSS_RTOL", "REFERENCE_DESCRIPTION", "REFUSAL_POLICY", "Problem", "default_problems", "grad_tolerance",
    "make_problem", "tolerance_text",
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


LOSS_DEFINITION = ("max over utterances of |L_i - L_ref_i| / |L_ref_i|; where the library has no per-utterance "
                   "output (marked '(sum)'), |sum_i L_i - sum_i L_ref_i| / |sum_i L_ref_i|")
GRAD_DEFINITION = ("for each input x (logits; am and lm; or encoder_out, decoder_out, weight and bias of the joiner): "
                   "max|g - g_ref| / max|g_ref| over the whole padded tensor, g = d(sum_i L_i)/dx; the largest over "
                   "the inputs")
REFERENCE_DESCRIPTION = "tlbench.losses.reference in float64 on the same float32 values"
REFUSAL_POLICY = ("refused rows (the library raised on an input it is known to reject) are reported but do not "
                  "fail the run; unavailable and skipped rows neither; only FAIL rows do")

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
        """The problem as the benchmark's :class:`tlbench.data.batches.TransducerBatch` (int32 targets
        and lengths on ``device``), for calling an implementation's ``loss``."""
        from tlbench.data.batches import TransducerBatch

        return TransducerBatch(self.shapes, encoder_out, decoder_out, self.ints("targets", device),
                               self.ints("logit_lengths", device), self.ints("target_lengths", device))

    def joiner(self, device: str):
        """A :class:`tlbench.data.batches.Joiner` holding float32 copies of ``weight`` and ``bias``."""
        from tlbench.data.batches import Joiner

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
