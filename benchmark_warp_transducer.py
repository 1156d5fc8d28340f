#!/usr/bin/env python3
"""Benchmark warp-transducer's PyTorch binding (module warprnnt_pytorch) on 4-D logits.

It is not on the package registry; when it is not importable the run records
"unavailable" with the upstream build steps. It runs on CPU and CUDA when it is.
"""

from tlbench.data import full_logits
from tlbench.harness import Backend, BackendUnavailable, LossImplementation, main

BUILD_STEPS = ("build it from source: git clone https://github.com/HawkAaron/warp-transducer; cd warp-transducer; "
               "mkdir build; cd build; cmake ..; make; cd ../pytorch_binding; python setup.py install")


def load_backend() -> Backend:
    try:
        import warprnnt_pytorch
    except ImportError as error:
        raise BackendUnavailable(f"warprnnt_pytorch cannot be imported ({error})", BUILD_STEPS) from None
    return Backend("warprnnt_pytorch", str(getattr(warprnnt_pytorch, "__version__", "source build")), warprnnt_pytorch)


def compute_loss(warprnnt_pytorch, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32 (log-softmax applied inside on CPU and CUDA); int32 labels/lengths."""
    loss = warprnnt_pytorch.rnnt_loss(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                      blank=0, reduction="sum")
    return loss, loss


IMPLEMENTATION = LossImplementation(
    name="warp_transducer",
    load_backend=load_backend,
    prepare=lambda backend, batch, joiner: full_logits(batch, joiner),
    loss=lambda backend, logits, batch, joiner: compute_loss(backend.module, logits, batch, joiner),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
