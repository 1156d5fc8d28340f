#!/usr/bin/env python3
"""Benchmark warp_rnnt.rnnt_loss (CUDA only; it takes log-softmax input) on 4-D logits.

scripts/setup.sh builds warp_rnnt from the registry's source distribution only when a GPU
and an nvcc matching torch's CUDA are present; elsewhere this run records "unavailable".
"""

from tlbench.data import full_logits
from tlbench.harness import Backend, BackendUnavailable, LossImplementation, main


def load_backend() -> Backend:
    try:
        import importlib.metadata

        import warp_rnnt
    except ImportError as error:
        raise BackendUnavailable(f"warp_rnnt cannot be imported ({error})",
                                 "on a CUDA machine: pip install --no-build-isolation warp_rnnt "
                                 "(scripts/setup.sh does this when a GPU and matching nvcc are present)") from None
    return Backend("warp_rnnt", importlib.metadata.version("warp_rnnt"), warp_rnnt)


def compute_loss(warp_rnnt, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32, log-softmax taken here (inside the loss region)."""
    log_probs = logits.log_softmax(dim=-1)  # (N, T, U+1, V)
    loss = warp_rnnt.rnnt_loss(log_probs, batch.targets, batch.logit_lengths, batch.target_lengths,
                               blank=0, reduction="sum")
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="warp_rnnt",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
    supports_device=lambda device: None if device == "cuda" else "warp_rnnt has only a CUDA implementation",
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
