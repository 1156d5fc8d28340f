"""Benchmark k2's pruned RNN-T loss (or fast_rnnt's when k2 is absent).

The whole chain runs in the loss region: the smoothed "simple" loss on am/lm, prune ranges
from its gradients (s_range=5), pruning, the joiner on the pruned grid and the pruned loss.
As in the published benchmark, am = encoder_out and lm = decoder_out enter the simple loss
directly, so their last dimension (--encoder-out-dim, 512) acts as its vocabulary; this needs
--vocab-size <= --encoder-out-dim. The reported loss value is the pruned loss; the
backward pass runs through simple_loss + pruned_loss.
"""

from tlbench.implementations.declaration import LossImplementation
from tlbench.implementations.loaders import K2_HINT, load_k2_or_fast_rnnt

PRUNE_RANGE = 5


def compute_loss(backend, inputs, batch, joiner):
    """am: (N, T, C) float32; lm: (N, U+1, C) float32; symbols (N, U) int64; boundary (N, 4) int64."""
    k2 = backend.module
    symbols, boundary = batch.targets.long(), batch.boundary
    simple_loss, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
        lm=batch.decoder_out, am=batch.encoder_out, symbols=symbols, termination_symbol=0,
        lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True)
    ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=PRUNE_RANGE)
    # am_pruned, lm_pruned: (N, T, s_range, C)
    am_pruned, lm_pruned = k2.do_rnnt_pruning(am=batch.encoder_out, lm=batch.decoder_out, ranges=ranges)
    logits = joiner(am_pruned + lm_pruned)  # (N, T, s_range, V)
    pruned_loss = k2.rnnt_loss_pruned(logits=logits.to(batch.logits_dtype), symbols=symbols, ranges=ranges,
                                      termination_symbol=0, boundary=boundary, reduction="sum")
    return simple_loss + pruned_loss, pruned_loss


def model_loss(backend, model, batch, region):
    """The icefall recipe's chain on a transducer model: the simple loss on the model's simple
    projections, pruning of the joiner's projected encoder/decoder outputs, the joiner on the
    pruned grid; loss = 0.5 * simple + pruned. batch: encoder_out (N, T, D_enc), decoder_out
    (N, U+1, D_dec) float32, targets (N, U) int32, lengths (N,) int32."""
    k2 = backend.module
    symbols, boundary = batch.targets.long(), batch.boundary  # (N, U) int64, (N, 4) int64
    with region("rnnt_loss_simple"):
        am = model.simple_am_proj(batch.encoder_out)  # (N, T, V)
        lm = model.simple_lm_proj(batch.decoder_out)  # (N, U+1, V)
        simple_loss, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
            lm=lm, am=am, symbols=symbols, termination_symbol=model.config.blank, lm_only_scale=0.25,
            am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True)
    with region("rnnt_loss_pruned"):
        ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=PRUNE_RANGE)
        # am_pruned, lm_pruned: (N, T, s_range, J)
        am_pruned, lm_pruned = k2.do_rnnt_pruning(am=model.joiner.encoder_proj(batch.encoder_out),
                                                  lm=model.joiner.decoder_proj(batch.decoder_out), ranges=ranges)
        with region("rnnt_joiner"):
            logits = model.joiner.output(am_pruned + lm_pruned)  # (N, T, s_range, V)
        pruned_loss = k2.rnnt_loss_pruned(logits=logits, symbols=symbols, ranges=ranges,
                                          termination_symbol=model.config.blank, boundary=boundary, reduction="sum")
    return 0.5 * simple_loss + pruned_loss, pruned_loss


def supports_config(config):
    if config.vocab_size > config.encoder_out_dim:
        return (f"--vocab-size {config.vocab_size} > --encoder-out-dim {config.encoder_out_dim}: the simple loss "
                "takes encoder_out/decoder_out as its logits, so their size must cover the vocabulary; raise "
                "--encoder-out-dim")
    return None


IMPLEMENTATION = LossImplementation(
    name="k2_pruned",
    load_backend=load_k2_or_fast_rnnt,
    loss=compute_loss,
    layout="joiner",
    install_hint=K2_HINT,
    description=f"k2 pruned RNN-T: simple loss, prune ranges (s_range={PRUNE_RANGE}), joiner, pruned loss",
    supports_config=supports_config,
    model_loss=model_loss,
    verify=(),
    verify_note=("an approximation by design (the pruned loss on a band around the simple loss's best path); k2's "
                 "exact functions, rnnt_loss_pruned among them, are verified under k2"),
    loss_only=(),
)
