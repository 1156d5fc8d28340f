#!/usr/bin/env python3
"""Benchmark SpeechBrain's numba transducer loss (CUDA only) on 4-D log-probabilities."""

from tlbench.data import full_logits
from tlbench.harness import Backend, BackendUnavailable, LossImplementation, main


def load_backend() -> Backend:
    try:
        import importlib.metadata

        from speechbrain.nnet.loss.transducer_loss import TransducerLoss
    except Exception as error:  # speechbrain's import also fails when numba.cuda finds no GPU
        raise BackendUnavailable(f"speechbrain's transducer loss cannot be imported ({error})",
                                 "pip install speechbrain numba (needs a CUDA GPU)") from None
    return Backend("speechbrain", importlib.metadata.version("speechbrain"), TransducerLoss(blank=0, reduction="sum"))


def compute_loss(loss_module, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32, log-softmax taken here; int32 labels and lengths, as its kernels take."""
    log_probs = logits.log_softmax(dim=-1)  # (N, T, U+1, V)
    loss = loss_module(log_probs, batch.targets, batch.logit_lengths, batch.target_lengths)
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="speechbrain",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
    supports_device=lambda device: None if device == "cuda" else "SpeechBrain's numba transducer loss is CUDA-only",
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
