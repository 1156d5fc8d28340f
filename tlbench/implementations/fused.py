"""Benchmark the project's exact transducer loss with the joiner inside (tlbench/losses/fused.py).

The whole chain runs in the loss region, as for k2_pruned: the joiner (tanh + Linear) is
computed chunk by chunk inside the loss, only each cell's blank and next-label log-probabilities
are kept, and backward recomputes each chunk; neither the (N, T, U+1, V) logits nor the
(N, T, U+1, C) joiner input is ever allocated. With --dtype float16/bfloat16 the encoder and
decoder outputs are cast to it (the matmuls run in it, everything from the logits on in float32).
"""

import torch

from tlbench.implementations.conditions import REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED, no_modified_alignment
from tlbench.implementations.declaration import Backend, LossImplementation, VerifyVariant


def load_backend() -> Backend:
    from tlbench.losses import fused as fused_loss

    return Backend("pytorch", torch.__version__.split("+")[0], fused_loss)


def compute_loss(backend, inputs, batch, joiner):
    """encoder_out: (N, T, C), decoder_out: (N, U+1, C) float32 (or --dtype); targets (N, U) int32;
    lengths (N,) int32; joiner: tanh then Linear(C, V)."""
    dtype = batch.logits_dtype
    loss = backend.module.fused_transducer_loss(batch.encoder_out.to(dtype), batch.decoder_out.to(dtype), joiner,
                                                batch.targets, batch.logit_lengths, batch.target_lengths, blank=0,
                                                reduction="sum")
    return loss, loss


def verify_call(one_sym_per_frame: bool):
    def compute(backend, problem, device):
        enc, dec = problem.leaf("encoder_out", device), problem.leaf("decoder_out", device)
        joiner = problem.joiner(device)
        losses = backend.module.fused_transducer_loss(
            enc, dec, joiner, problem.ints("targets", device), problem.ints("logit_lengths", device),
            problem.ints("target_lengths", device), blank=0, reduction="none", one_sym_per_frame=one_sym_per_frame)
        losses.sum().backward()
        linear = joiner.output_linear
        return losses, {"encoder_out": enc.grad, "decoder_out": dec.grad, "weight": linear.weight.grad,
                        "bias": linear.bias.grad}

    return compute


IMPLEMENTATION = LossImplementation(
    name="fused",
    load_backend=load_backend,
    loss=compute_loss,
    layout="joiner",
    description="tlbench.losses.fused.fused_transducer_loss: exact, joiner inside, logits never materialised",
    verify=(VerifyVariant("fused_transducer_loss (joiner tanh + Linear)", verify_call(False),
                          reference=REFERENCE_JOINER),
            VerifyVariant("fused_transducer_loss, one_sym_per_frame=True", verify_call(True),
                          reference=REFERENCE_JOINER_MODIFIED, skip=no_modified_alignment)),
    loss_only_note="its loss takes the joiner's inputs, not logits (see benchmark_fused.py)",
)
