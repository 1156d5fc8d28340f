"""Benchmark the project's own pure-PyTorch RNN-T loss (tlbench/losses/reference.py) on 4-D logits."""

from tlbench.implementations.declaration import Backend, LossImplementation, LossOnlyVariant, VerifyVariant


def load_backend() -> Backend:
    import torch

    from tlbench.losses import reference as reference_loss

    return Backend("pytorch", torch.__version__.split("+")[0], reference_loss)


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; targets (N, U) int32; lengths (N,) int32."""
    loss = backend.module.rnnt_loss(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                    blank=0, reduction="sum")
    return loss, loss


def verify_call(backend, problem, device):
    """On float32 input it must pass: its recursion is float64."""
    x = problem.leaf("logits", device)
    losses = backend.module.rnnt_loss(x, problem.targets.to(device), problem.logit_lengths.to(device),
                                      problem.target_lengths.to(device), blank=0, reduction="none")
    losses.sum().backward()
    return losses, {"logits": x.grad}


def packed_loss(backend, logits, batch):
    """logits: (sum_i T_i (U_i + 1), V) float32."""
    return backend.module.rnnt_loss_packed(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                           blank=0, reduction="sum")


IMPLEMENTATION = LossImplementation(
    name="reference",
    load_backend=load_backend,
    loss=compute_loss,
    layout="4-D",
    description="tlbench.losses.reference.rnnt_loss (exact, float64 recursion) on 4-D logits",
    verify=(VerifyVariant("rnnt_loss (float32 input)", verify_call),),
    loss_only=(LossOnlyVariant("4-D", lambda backend, logits, batch: compute_loss(backend, logits, batch, None)[0]),
               LossOnlyVariant("packed", packed_loss, variant="rnnt_loss_packed")),
)
