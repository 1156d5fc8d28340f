"""Benchmark torchaudio.functional.rnnt_loss on padded 4-D logits (N, T, U+1, V)."""

from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant

INSTALL = "pip install torchaudio==2.11.0"


def load_backend() -> Backend:
    try:
        import torchaudio
        import torchaudio.functional
    except Exception as error:  # an ABI mismatch with torch raises OSError, not ImportError
        raise BackendUnavailable(f"torchaudio cannot be imported ({error})", INSTALL) from None
    return Backend("torchaudio", torchaudio.__version__.split("+")[0], torchaudio.functional)


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; targets (N, U) int32; lengths (N,) int32."""
    loss = backend.module.rnnt_loss(logits=logits, targets=batch.targets, logit_lengths=batch.logit_lengths,
                                    target_lengths=batch.target_lengths, blank=0, reduction="sum")
    return loss, loss


def verify_call(fused: bool):
    def compute(backend, problem, device):
        x = problem.leaf("logits", device)
        # fused_log_softmax=False: the caller passes log-probabilities; the gradient compared
        # is the one the user gets, w.r.t. the logits before the log_softmax.
        losses = backend.module.rnnt_loss(x if fused else x.log_softmax(-1), problem.ints("targets", device),
                                          problem.ints("logit_lengths", device), problem.ints("target_lengths", device),
                                          blank=0, reduction="none", fused_log_softmax=fused)
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return compute


IMPLEMENTATION = LossImplementation(
    name="torchaudio",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=INSTALL,
    description="torchaudio.functional.rnnt_loss on 4-D logits",
    verify=(VerifyVariant("rnnt_loss", verify_call(True)),
            VerifyVariant("rnnt_loss, fused_log_softmax=False (log_softmax input)", verify_call(False))),
)
