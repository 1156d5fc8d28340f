#!/usr/bin/env python3
"""Benchmark k2.rnnt_loss (or fast_rnnt.rnnt_loss when k2 is absent) on 4-D logits."""

from tlbench.backends import load_k2_or_fast_rnnt
from tlbench.data import full_logits
from tlbench.harness import LossImplementation, main


def compute_loss(k2, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; symbols (N, U) int64; boundary (N, 4) int64 [0, 0, U_i, T_i]."""
    loss = k2.rnnt_loss(logits=logits, symbols=batch.targets.long(), termination_symbol=0,
                        boundary=batch.boundary, reduction="sum")
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="k2",
    load_backend=load_k2_or_fast_rnnt,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
