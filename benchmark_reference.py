#!/usr/bin/env python3
"""Benchmark the project's own pure-PyTorch RNN-T loss (tlbench/reference_loss.py) on 4-D logits."""

from tlbench.data import full_logits
from tlbench.harness import Backend, LossImplementation, main


def load_backend() -> Backend:
    import torch

    from tlbench import reference_loss

    return Backend("pytorch", torch.__version__.split("+")[0], reference_loss)


def compute_loss(reference_loss, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; targets (N, U) int32; lengths (N,) int32."""
    loss = reference_loss.rnnt_loss(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                    blank=0, reduction="sum")
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="reference",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
