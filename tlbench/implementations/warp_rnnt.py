"""Benchmark warp_rnnt.rnnt_loss (CUDA only; it takes log-softmax input) on 4-D logits.

scripts/setup.sh builds warp_rnnt from the registry's source distribution only for a CUDA
setup; elsewhere this run records "unavailable".
"""

from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant

INSTALL = ("on a CUDA machine: pip install --no-build-isolation warp_rnnt (scripts/setup.sh does this for a CUDA "
           "setup)")


def load_backend() -> Backend:
    try:
        import importlib.metadata

        import warp_rnnt
    except Exception as error:
        raise BackendUnavailable(f"warp_rnnt cannot be imported ({error})", INSTALL) from None
    return Backend("warp_rnnt", importlib.metadata.version("warp_rnnt"), warp_rnnt)


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32, log-softmax taken here (inside the loss region)."""
    log_probs = logits.log_softmax(dim=-1)  # (N, T, U+1, V)
    loss = backend.module.rnnt_loss(log_probs, batch.targets, batch.logit_lengths, batch.target_lengths,
                                    blank=0, reduction="sum")
    return loss, loss


def verify_call(backend, problem, device):
    x = problem.leaf("logits", device)
    # Its input is log-probabilities: log_softmax by autograd, gradient compared w.r.t. x.
    losses = backend.module.rnnt_loss(x.log_softmax(-1), problem.ints("targets", device),
                                      problem.ints("logit_lengths", device), problem.ints("target_lengths", device),
                                      blank=0, reduction="none")
    losses.sum().backward()
    return losses, {"logits": x.grad}


IMPLEMENTATION = LossImplementation(
    name="warp_rnnt",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=INSTALL,
    description="warp_rnnt.rnnt_loss on 4-D log-softmax (CUDA only)",
    supports_device=lambda device: None if device == "cuda" else "warp_rnnt has only a CUDA implementation",
    verify=(VerifyVariant("rnnt_loss (log_softmax input)", verify_call, devices=("cuda",)),),
)
