"""Benchmark warp-transducer's PyTorch binding (module warprnnt_pytorch) on 4-D logits.

It is not on the package registry; when it is not importable the run records
"unavailable" with the upstream build steps. It runs on CPU and CUDA when it is (users
report gradients that differ between the two: verification runs both where it can).
"""

from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant

BUILD_STEPS = ("build it from source: git clone https://github.com/HawkAaron/warp-transducer; cd warp-transducer; "
               "mkdir build; cd build; cmake ..; make; cd ../pytorch_binding; python setup.py install")


def load_backend() -> Backend:
    try:
        import warprnnt_pytorch
    except Exception as error:
        raise BackendUnavailable(f"warprnnt_pytorch cannot be imported ({error})", BUILD_STEPS) from None
    return Backend("warprnnt_pytorch", str(getattr(warprnnt_pytorch, "__version__", "source build")), warprnnt_pytorch)


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32 (log-softmax applied inside on CPU and CUDA); int32 labels/lengths."""
    loss = backend.module.rnnt_loss(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                    blank=0, reduction="sum")
    return loss, loss


def verify_call(backend, problem, device):
    # Raw logits on both devices: its Python wrapper applies log_softmax before the CPU kernel,
    # its CUDA kernel normalises internally. Labels and lengths live with the logits.
    x = problem.leaf("logits", device)
    losses = backend.module.rnnt_loss(x, problem.ints("targets", device), problem.ints("logit_lengths", device),
                                      problem.ints("target_lengths", device), blank=0, reduction="none")
    losses.sum().backward()
    return losses, {"logits": x.grad}


IMPLEMENTATION = LossImplementation(
    name="warp_transducer",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=BUILD_STEPS,
    description="warprnnt_pytorch.rnnt_loss on 4-D logits (not on the registry)",
    verify=(VerifyVariant("rnnt_loss", verify_call),),
)
