"""Benchmark k2.rnnt_loss (or fast_rnnt.rnnt_loss when k2 is absent) on 4-D logits.

Its verification variants also cover the rest of k2's RNN-T API on exact problems:
``rnnt_loss_pruned`` with a range covering every label position (then it is the full loss)
and ``rnnt_loss_simple`` (logits = am + lm).
"""

import torch

from tlbench.implementations.conditions import REFERENCE_AM_LM, any_u_zero
from tlbench.implementations.declaration import LossImplementation, VerifyVariant
from tlbench.implementations.loaders import K2_HINT, load_k2_or_fast_rnnt


def compute_loss(backend, logits, batch, joiner):
    """logits: (N, T, U+1, V) float32; symbols (N, U) int64; boundary (N, 4) int64 [0, 0, U_i, T_i]."""
    loss = backend.module.rnnt_loss(logits=logits, symbols=batch.targets.long(), termination_symbol=0,
                                    boundary=batch.boundary, reduction="sum")
    return loss, loss


def verify_full(backend, problem, device):
    x = problem.leaf("logits", device)
    losses = backend.module.rnnt_loss(logits=x, symbols=problem.ints("targets", device, torch.int64),
                                      termination_symbol=0, boundary=problem.boundary(device), reduction="none")
    losses.sum().backward()
    return losses, {"logits": x.grad}


def verify_pruned(backend, problem, device):
    # s_range = U_max + 1 and ranges[n, t, j] = j: every label position is kept, so the pruned
    # logits are the full logits and the pruned loss is the full loss.
    x = problem.leaf("logits", device)
    n, t_max, s_range, _ = x.shape
    ranges = torch.arange(s_range, device=device).expand(n, t_max, s_range).contiguous()  # (N, T, s_range)
    losses = backend.module.rnnt_loss_pruned(logits=x, symbols=problem.ints("targets", device, torch.int64),
                                             ranges=ranges, termination_symbol=0, boundary=problem.boundary(device),
                                             reduction="none")
    losses.sum().backward()
    return losses, {"logits": x.grad}


def verify_simple(backend, problem, device):
    am, lm = problem.leaf("am", device), problem.leaf("lm", device)
    losses = backend.module.rnnt_loss_simple(lm=lm, am=am, symbols=problem.ints("targets", device, torch.int64),
                                             termination_symbol=0, boundary=problem.boundary(device),
                                             reduction="none")
    losses.sum().backward()
    return losses, {"am": am.grad, "lm": lm.grad}


IMPLEMENTATION = LossImplementation(
    name="k2",
    load_backend=load_k2_or_fast_rnnt,
    loss=compute_loss,
    layout="4-D",
    install_hint=K2_HINT,
    description="k2.rnnt_loss on 4-D logits, boundary rows [0, 0, U_i, T_i]",
    verify=(VerifyVariant("rnnt_loss", verify_full, known_refusal=any_u_zero),
            VerifyVariant("rnnt_loss_pruned, s_range = U_max + 1 (= full loss)", verify_pruned,
                          known_refusal=any_u_zero),
            VerifyVariant("rnnt_loss_simple (logits = am + lm)", verify_simple, reference=REFERENCE_AM_LM,
                          known_refusal=any_u_zero)),
)
