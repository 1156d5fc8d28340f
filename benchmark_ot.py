#!/usr/bin/env python3
"""Benchmark optimized_transducer.transducer_loss on packed logits (sum_i T_i*(U_i+1), V)."""

from tlbench.backends import load_optimized_transducer
from tlbench.data import packed_logits
from tlbench.harness import LossImplementation, main


def compute_loss(ot, logits, batch, joiner):
    """logits: (sum_i T_i*(U_i+1), V) float32, unpadded; targets (N, U) int32; lengths (N,) int32."""
    loss = ot.transducer_loss(logits=logits, targets=batch.targets, logit_lengths=batch.logit_lengths,
                              target_lengths=batch.target_lengths, blank=0, reduction="sum",
                              from_log_softmax=False, one_sym_per_frame=False)
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="optimized_transducer",
    load_backend=load_optimized_transducer,
    prepare=lambda backend, batch, joiner: packed_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
