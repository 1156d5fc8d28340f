"""An implementation defined outside the registry, for the tests of ``--impl FILE:NAME``: the
project's reference loss on packed logits (the default verification and loss-only rows are
derived from its benchmark call)."""

from tlbench.implementations.declaration import Backend, LossImplementation


def load_backend() -> Backend:
    from tlbench.losses import reference as reference_loss

    return Backend("tlbench_packed", "test", reference_loss)


def packed_loss(backend, logits, batch, joiner):
    """logits: (sum_i T_i (U_i + 1), V) float32; targets (N, U) int32; lengths (N,) int32."""
    loss = backend.module.rnnt_loss_packed(logits, batch.targets, batch.logit_lengths, batch.target_lengths,
                                           reduction="sum")
    return loss, loss


PACKED_REFERENCE = LossImplementation(name="packed_reference", load_backend=load_backend, loss=packed_loss,
                                      layout="packed", description="the reference loss on packed logits (a test)")
NOT_AN_IMPLEMENTATION = 42


def crash_from_three(backend, logits, batch, joiner):
    """The reference loss, but a batch of three or more utterances kills the process (as a
    segfault would): for the capacity search's crash handling."""
    if len(batch.shapes) >= 3:
        import os

        os._exit(139)
    return packed_loss(backend, logits, batch, joiner)


def slow_loss(backend, logits, batch, joiner):
    """The reference loss after a pause: long enough to interrupt a suite run mid-way."""
    import time

    time.sleep(float(__import__("os").environ.get("TLB_TEST_SLOW_S", "1.0")))
    return packed_loss(backend, logits, batch, joiner)


CRASHES_FROM_THREE = LossImplementation(name="crashes_from_three", load_backend=load_backend, loss=crash_from_three,
                                        layout="packed")
SLOW = LossImplementation(name="slow_reference", load_backend=load_backend, loss=slow_loss, layout="packed")
