"""Benchmark SpeechBrain's numba transducer loss (CUDA only) on 4-D log-probabilities."""

from tlbench.implementations.declaration import Backend, BackendUnavailable, LossImplementation, VerifyVariant

INSTALL = "pip install speechbrain numba (needs a CUDA GPU)"


def load_backend() -> Backend:
    try:
        import importlib.metadata

        from speechbrain.nnet.loss.transducer_loss import TransducerLoss
    except Exception as error:  # speechbrain's import also fails when numba.cuda finds no GPU
        raise BackendUnavailable(f"speechbrain's transducer loss cannot be imported ({error})", INSTALL) from None
    return Backend("speechbrain", importlib.metadata.version("speechbrain"), TransducerLoss)


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32, log-softmax taken here; int32 labels and lengths, as its kernels take."""
    log_probs = logits.log_softmax(dim=-1)  # (N, T, U+1, V)
    loss = backend.module(blank=0, reduction="sum")(log_probs, batch.targets, batch.logit_lengths,
                                                     batch.target_lengths)
    return loss, loss


def verify_call(backend, problem, device):
    x = problem.leaf("logits", device)  # its forward applies log_softmax itself
    t_lens = problem.ints("logit_lengths", device)
    # int32 labels and lengths, as in its class docstring: older releases compile the numba
    # kernels for int32 only.
    losses = backend.module(blank=0, reduction="none")(x, problem.ints("targets", device), t_lens,
                                                       problem.ints("target_lengths", device))
    losses.sum().backward()
    # Its kernels return each loss divided by T_i ("normalize the loss over time" in its
    # source) while the gradient is that of the undivided loss: the loss is scaled back.
    return losses.detach() * t_lens.to(losses.dtype), {"logits": x.grad}


IMPLEMENTATION = LossImplementation(
    name="speechbrain",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    install_hint=INSTALL,
    description="SpeechBrain's numba TransducerLoss on 4-D log-softmax (CUDA only)",
    supports_device=lambda device: None if device == "cuda" else "SpeechBrain's numba transducer loss is CUDA-only",
    verify=(VerifyVariant("TransducerLoss (its loss/T_i scaled back by T_i)", verify_call, devices=("cuda",)),),
)
