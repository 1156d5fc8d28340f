"""Random transducer inputs sized like one batch of real utterances, and the joiner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

__all__ = ["Joiner", "TransducerBatch", "full_logits", "make_batch", "packed_logits"]


@dataclass
class TransducerBatch:
    """Random inputs of one batch (N utterances), as in the published benchmark.

    Attributes:
      shapes: the batch's ``(T_i, U_i)`` pairs, in batch order.
      encoder_out: ``(N, T_max, C) float32``, uniform in [0, 1), requires grad.
      decoder_out: ``(N, U_max + 1, C) float32``, uniform in [0, 1), requires grad.
      targets: ``(N, U_max) int32``, uniform in [1, V); entries past ``U_i`` are padding.
      logit_lengths: ``(N,) int32``, the ``T_i``.
      target_lengths: ``(N,) int32``, the ``U_i``.
    """

    shapes: List[Tuple[int, int]]
    encoder_out: torch.Tensor
    decoder_out: torch.Tensor
    targets: torch.Tensor
    logit_lengths: torch.Tensor
    target_lengths: torch.Tensor
    logits_dtype: torch.dtype = torch.float32

    @property
    def boundary(self) -> torch.Tensor:
        """``(N, 4) int64`` rows ``[0, 0, U_i, T_i]``, the form k2/fast_rnnt take."""
        n = len(self.shapes)
        boundary = torch.zeros(n, 4, dtype=torch.int64, device=self.targets.device)
        boundary[:, 2] = self.target_lengths
        boundary[:, 3] = self.logit_lengths
        return boundary


def make_batch(shapes: Sequence[Tuple[int, int]], vocab_size: int, dim: int, device: torch.device,
               logits_dtype: torch.dtype = torch.float32) -> TransducerBatch:
    """Draws the random tensors of one batch from torch's global (seeded) generators.

    ``logits_dtype`` is the dtype the joiner's output is cast to before the loss.
    """
    n = len(shapes)
    t_max = max(t for t, _ in shapes)
    u_max = max(u for _, u in shapes)
    encoder_out = torch.rand(n, t_max, dim, device=device, requires_grad=True)
    decoder_out = torch.rand(n, u_max + 1, dim, device=device, requires_grad=True)
    targets = torch.randint(1, vocab_size, (n, u_max), dtype=torch.int32, device=device)
    logit_lengths = torch.tensor([t for t, _ in shapes], dtype=torch.int32, device=device)
    target_lengths = torch.tensor([u for _, u in shapes], dtype=torch.int32, device=device)
    return TransducerBatch(list(shapes), encoder_out, decoder_out, targets, logit_lengths, target_lengths,
                           logits_dtype)


class Joiner(torch.nn.Module):
    """``tanh`` then ``Linear(C, V)``: maps ``(..., C)`` to ``(..., V)`` logits."""

    def __init__(self, input_dim: int, vocab_size: int):
        super().__init__()
        self.output_linear = torch.nn.Linear(input_dim, vocab_size)

    def forward(self, joined: torch.Tensor) -> torch.Tensor:
        return self.output_linear(torch.tanh(joined))


def full_logits(batch: TransducerBatch, joiner: Joiner) -> torch.Tensor:
    """Padded 4-D logits ``(N, T_max, U_max + 1, V)`` of ``batch.logits_dtype`` (float32 by default)."""
    # (N, T, 1, C) + (N, 1, U+1, C) -> (N, T, U+1, C)
    return joiner(batch.encoder_out.unsqueeze(2) + batch.decoder_out.unsqueeze(1)).to(batch.logits_dtype)


def packed_logits(batch: TransducerBatch, joiner: Joiner) -> torch.Tensor:
    """Unpadded logits ``(sum_i T_i * (U_i + 1), V)`` of ``batch.logits_dtype``, optimized_transducer's layout.

    Utterance i contributes its ``(T_i, U_i + 1)`` grid, flattened row-major; utterances are
    concatenated in batch order.
    """
    grids = []
    for i, (t, u) in enumerate(batch.shapes):
        # (T_i, 1, C) + (1, U_i+1, C) -> (T_i, U_i+1, C) -> (T_i * (U_i+1), C)
        joined = batch.encoder_out[i, :t].unsqueeze(1) + batch.decoder_out[i, : u + 1].unsqueeze(0)
        grids.append(joined.reshape(-1, joined.size(-1)))
    return joiner(torch.cat(grids)).to(batch.logits_dtype)
