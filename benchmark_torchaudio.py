#!/usr/bin/env python3
"""Benchmark torchaudio.functional.rnnt_loss on padded 4-D logits (N, T, U+1, V)."""

from tlbench.data import full_logits
from tlbench.harness import Backend, BackendUnavailable, LossImplementation, main


def load_backend() -> Backend:
    try:
        import torchaudio
        import torchaudio.functional
    except ImportError as error:
        raise BackendUnavailable(f"torchaudio cannot be imported ({error})", "pip install torchaudio==2.11.0") from None
    return Backend("torchaudio", torchaudio.__version__.split("+")[0], torchaudio.functional)


def compute_loss(functional, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; targets (N, U) int32; lengths (N,) int32."""
    loss = functional.rnnt_loss(logits=logits, targets=batch.targets, logit_lengths=batch.logit_lengths,
                                target_lengths=batch.target_lengths, blank=0, reduction="sum")
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="torchaudio",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
