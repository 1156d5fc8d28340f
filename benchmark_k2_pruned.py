#!/usr/bin/env python3
"""Benchmark k2's pruned RNN-T loss (or fast_rnnt's when k2 is absent).

The whole chain runs in the loss region: the smoothed "simple" loss on am/lm, prune ranges
from its gradients (s_range=5), pruning, the joiner on the pruned grid and the pruned loss.
As in the published benchmark, am = encoder_out and lm = decoder_out enter the simple loss
directly, so their last dimension (--encoder-out-dim, 512) acts as its vocabulary; this needs
--vocab-size <= --encoder-out-dim. The reported loss value is the pruned loss; the
backward pass runs through simple_loss + pruned_loss.
"""

from tlbench.backends import load_k2_or_fast_rnnt
from tlbench.harness import LossImplementation, main

PRUNE_RANGE = 5


def compute_loss(k2, batch, joiner):
    """am: (N, T, C) float32; lm: (N, U+1, C) float32; symbols (N, U) int64; boundary (N, 4) int64."""
    symbols, boundary = batch.targets.long(), batch.boundary
    simple_loss, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
        lm=batch.decoder_out, am=batch.encoder_out, symbols=symbols, termination_symbol=0,
        lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True)
    ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=PRUNE_RANGE)
    # am_pruned, lm_pruned: (N, T, s_range, C)
    am_pruned, lm_pruned = k2.do_rnnt_pruning(am=batch.encoder_out, lm=batch.decoder_out, ranges=ranges)
    logits = joiner(am_pruned + lm_pruned)  # (N, T, s_range, V)
    pruned_loss = k2.rnnt_loss_pruned(logits=logits.to(batch.logits_dtype), symbols=symbols, ranges=ranges, termination_symbol=0,
                                      boundary=boundary, reduction="sum")
    return simple_loss + pruned_loss, pruned_loss


IMPLEMENTATION = LossImplementation(
    name="k2_pruned",
    load_backend=load_k2_or_fast_rnnt,
    prepare=lambda backend, batch, joiner: None,
    loss=lambda backend, _, batch, joiner: compute_loss(backend.module, batch, joiner),
    supports_config=lambda config: (
        f"--vocab-size {config.vocab_size} > --encoder-out-dim {config.encoder_out_dim}: the simple loss takes "
        "encoder_out/decoder_out as its logits, so their size must cover the vocabulary; raise --encoder-out-dim"
        if config.vocab_size > config.encoder_out_dim else None),
)

if __name__ == "__main__":
    main(IMPLEMENTATION)
