"""Benchmark optimized_transducer.transducer_loss on packed logits (sum_i T_i*(U_i+1), V)."""

from tlbench.implementations.conditions import REFERENCE_MODIFIED, no_modified_alignment, u_max_zero
from tlbench.implementations.declaration import LossImplementation, VerifyVariant
from tlbench.implementations.loaders import SETUP_HINT, load_optimized_transducer


def compute_loss(backend, logits, batch, joiner):
    """logits: (sum_i T_i*(U_i+1), V) float32, unpadded; targets (N, U) int32; lengths (N,) int32."""
    loss = backend.module.transducer_loss(logits=logits, targets=batch.targets, logit_lengths=batch.logit_lengths,
                                          target_lengths=batch.target_lengths, blank=0, reduction="sum",
                                          from_log_softmax=False, one_sym_per_frame=False)
    return loss, loss


def verify_call(from_log_softmax: bool, one_sym_per_frame: bool):
    def compute(backend, problem, device):
        x = problem.leaf("packed_logits", device)
        # from_log_softmax=True: the caller applies log_softmax (here by autograd from the
        # float32 leaf x), and the gradient compared is w.r.t. x: the one a user gets.
        loss = backend.module.transducer_loss(x.log_softmax(-1) if from_log_softmax else x,
                                              problem.ints("targets", device), problem.ints("logit_lengths", device),
                                              problem.ints("target_lengths", device), blank=0,
                                              from_log_softmax=from_log_softmax, one_sym_per_frame=one_sym_per_frame,
                                              reduction="sum")  # it has no "none"
        loss.backward()
        return loss.reshape(()), {"logits": problem.unpack(x.grad)}

    return compute


IMPLEMENTATION = LossImplementation(
    name="optimized_transducer",
    load_backend=load_optimized_transducer,
    loss=compute_loss,
    layout="packed",
    install_hint=SETUP_HINT,
    description="optimized_transducer.transducer_loss on packed logits",
    verify=(VerifyVariant("from_log_softmax=False", verify_call(False, False), known_refusal=u_max_zero),
            VerifyVariant("from_log_softmax=True", verify_call(True, False), known_refusal=u_max_zero),
            VerifyVariant("one_sym_per_frame=True (modified transducer)", verify_call(False, True),
                          reference=REFERENCE_MODIFIED, known_refusal=u_max_zero, skip=no_modified_alignment)),
)
