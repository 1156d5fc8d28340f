#!/usr/bin/env python3
"""Benchmark warprnnt_numba.RNNTLossNumba (NeMo's numba RNN-T loss) on 4-D logits.

Its CPU path runs about 500 tiny torch ops per (t, u) lattice cell: unrecorded it is ~25x
slower than torchaudio, and recording every op would take tens of GB for one LibriSpeech
utterance. So the ops inside its loss call are hidden from the profiler (the step and the
loss region are still timed), and on CPU its quick preset keeps utterances of T <= 50 (one per sorted batch) and
records one step per mode. numba's JIT compilation runs on a tiny problem before profiling
so that it never lands in a measured step.
"""

from tlbench.data import full_logits
from tlbench.harness import Backend, BackendUnavailable, LossImplementation, main


def load_backend() -> Backend:
    try:
        import importlib.metadata

        from warprnnt_numba import RNNTLossNumba
    except ImportError as error:
        raise BackendUnavailable(f"warprnnt_numba cannot be imported ({error})",
                                 "pip install warprnnt-numba==0.4.1 numba==0.68.1") from None
    return Backend("warprnnt_numba", importlib.metadata.version("warprnnt-numba"),
                   RNNTLossNumba(blank=0, reduction="sum"))


def warm_up(backend, device) -> None:
    import torch

    logits = torch.zeros(1, 2, 2, 3, device=device, requires_grad=True)  # (N, T, U+1, V)
    ones = torch.ones(1, dtype=torch.int32, device=device)
    backend.module(logits, ones.view(1, 1), 2 * ones, ones).backward()


def compute_loss(loss_module, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; labels (N, U) int32; lengths (N,) int32."""
    loss = loss_module(logits, batch.targets, batch.logit_lengths, batch.target_lengths)
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="warprnnt_numba",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
    warm_up=warm_up,
    hide_inner_ops=True,
    quick_overrides={"max_utterance_frames": 50, "max_frames": 50, "wait": 0, "warmup": 0, "active": 1, "repeat": 1},
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
