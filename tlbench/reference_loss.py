"""The project's own RNN-T (transducer) loss in pure PyTorch: exact, vectorised, memory-lean.

Two layouts of the joiner output ``logits`` are accepted:

- 4-D (as ``torchaudio.functional.rnnt_loss``): ``(N, T, U + 1, V)``, padded; utterance ``i``
  uses ``logits[i, :T_i, :U_i + 1]`` and the rest is ignored (its gradient is zero).
- packed (as ``optimized_transducer``): ``(sum_i T_i * (U_i + 1), V)``, utterance ``i``'s
  ``(T_i, U_i + 1, V)`` grid flattened row-major, grids concatenated in batch order.

The loss of utterance ``i`` is ``-log`` of the total probability of all alignments of its
``U_i`` labels to its ``T_i`` frames, with the log-softmax over ``V`` taken inside:

- standard transducer: from ``(t, u)`` either blank to ``(t + 1, u)`` or the next label to
  ``(t, u + 1)``; every path ends with a blank emitted at ``(T_i - 1, U_i)``.
- modified transducer (``one_sym_per_frame=True``, as optimized_transducer's option of that
  name): from ``(t, u)`` either blank to ``(t + 1, u)`` or the next label to ``(t + 1, u + 1)``;
  every path ends with a blank emitted at ``(T_i - 1, U_i)``, so it needs ``T_i >= U_i + 1``.
  An utterance with no alignment gets loss ``+inf`` and a zero gradient.

How it is computed:

1. :class:`_BlankLabelLogProbs` maps the logits to two ``(N, T, U + 1)`` tensors, the blank and
   the next-label log-probabilities, working through the valid cells in small chunks (a
   chunked ``log_softmax``, never a full-size copy). Its backward writes the gradient of the
   logits in one pass per chunk: ``softmax * -(g_blank + g_label)`` plus ``g_blank`` at the
   blank index and ``g_label`` at the label index. Only a reference to the logits and the
   targets are saved.
2. :class:`_TransducerLogZ` runs the forward (alpha) recursion one label column ``u`` at a time
   (``U + 1`` vectorised steps over all frames and utterances at once), in float64. Within a
   column the recursion along ``t`` is linear in log space:
   ``alpha[t, u] = logaddexp(alpha[t - 1, u] + blank[t - 1, u], c[t])``, with ``c`` coming from
   column ``u - 1``. With the exclusive prefix sum ``D[t] = sum_{j < t} blank[j, u]`` its solution
   is ``alpha[:, u] = D + logcumsumexp(c - D)``. The backward pass runs the mirror-image (beta)
   recursion the same way and turns ``alpha + beta`` into the occupancy of every transition.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["rnnt_loss", "rnnt_loss_packed"]

# Elements of logits handled per chunk in the log-softmax / gradient passes; a chunk of
# float32 then fits in the L2 cache and the temporaries stay small.
_CHUNK_ELEMENTS = 1 << 18

_NEG_INF = float("-inf")


def _utterance_views(
    tensor: torch.Tensor, packed: bool, t_lens: Sequence[int], u1_lens: Sequence[int]
) -> List[torch.Tensor]:
    """Per utterance, the ``(T_i, U_i + 1, V)`` view of the valid cells of ``tensor``."""
    views = []
    offset = 0
    for i, (t_len, u1_len) in enumerate(zip(t_lens, u1_lens)):
        if packed:
            size = t_len * u1_len
            views.append(tensor[offset : offset + size].view(t_len, u1_len, tensor.size(-1)))
            offset += size
        else:
            views.append(tensor[i, :t_len, :u1_len])
    return views


def _chunks(t_len: int, u1_len: int, vocab: int):
    rows = max(1, _CHUNK_ELEMENTS // max(1, u1_len * vocab))
    for start in range(0, t_len, rows):
        yield start, min(t_len, start + rows)


class _BlankLabelLogProbs(torch.autograd.Function):
    """logits -> (blank log-prob, next-label log-prob), each ``(N, T, U + 1)``.

    Forward args:
      logits: 4-D ``(N, T, U + 1, V)`` or packed ``(sum_i T_i (U_i + 1), V)``, float32/float64.
      labels: ``(N, U + 1)`` int64; ``labels[i, u]`` is the label emitted from column ``u``
        (the blank index where there is none, ``u >= U_i``).
      t_lens, u1_lens: Python lists of ``T_i`` and ``U_i + 1``.
      grid: ``(T, U + 1)`` of the output tensors.
      packed: the layout of ``logits``.
      blank: the blank index.

    Returns two ``(N, T, U + 1)`` tensors of the logits' dtype; cells outside utterance ``i``'s
    ``(T_i, U_i + 1)`` grid are 0.
    """

    @staticmethod
    def forward(ctx, logits, labels, t_lens, u1_lens, grid, packed, blank):
        n = len(t_lens)
        vocab = logits.size(-1)
        blank_lp = logits.new_zeros((n,) + tuple(grid))
        label_lp = logits.new_zeros((n,) + tuple(grid))
        with torch.no_grad():
            for i, view in enumerate(_utterance_views(logits, packed, t_lens, u1_lens)):
                u1_len = u1_lens[i]
                index = labels[i, :u1_len].view(1, u1_len, 1)
                for t0, t1 in _chunks(t_lens[i], u1_len, vocab):
                    log_probs = torch.log_softmax(view[t0:t1], dim=-1)
                    blank_lp[i, t0:t1, :u1_len] = log_probs[..., blank]
                    label_lp[i, t0:t1, :u1_len] = log_probs.gather(-1, index.expand(t1 - t0, u1_len, 1)).squeeze(-1)
        ctx.save_for_backward(logits, labels)
        ctx.layout = (list(t_lens), list(u1_lens), packed, blank)
        return blank_lp, label_lp

    @staticmethod
    def backward(ctx, grad_blank, grad_label):
        logits, labels = ctx.saved_tensors
        t_lens, u1_lens, packed, blank = ctx.layout
        vocab = logits.size(-1)
        if grad_blank is None:
            grad_blank = torch.zeros_like(grad_label)
        if grad_label is None:
            grad_label = torch.zeros_like(grad_blank)
        grad_blank = grad_blank.to(logits.dtype)
        grad_label = grad_label.to(logits.dtype)
        weight = -(grad_blank + grad_label)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        if not packed:
            for i, (t_len, u1_len) in enumerate(zip(t_lens, u1_lens)):
                grad[i, t_len:].zero_()
                grad[i, :t_len, u1_len:].zero_()
        with torch.no_grad():
            views = zip(
                _utterance_views(logits, packed, t_lens, u1_lens), _utterance_views(grad, packed, t_lens, u1_lens)
            )
            for i, (x, g) in enumerate(views):
                u1_len = u1_lens[i]
                index = labels[i, :u1_len].view(1, u1_len, 1)
                for t0, t1 in _chunks(t_lens[i], u1_len, vocab):
                    probs = torch.softmax(x[t0:t1], dim=-1)
                    out = g[t0:t1]
                    torch.mul(probs, weight[i, t0:t1, :u1_len].unsqueeze(-1), out=out)
                    out[..., blank] += grad_blank[i, t0:t1, :u1_len]
                    out.scatter_add_(-1, index.expand(t1 - t0, u1_len, 1), grad_label[i, t0:t1, :u1_len].unsqueeze(-1))
        return grad, None, None, None, None, None, None


def _logcumsumexp_reversed(x: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = logsumexp(x[..., t:])``."""
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


class _TransducerLogZ(torch.autograd.Function):
    """(blank log-probs, label log-probs) -> log of the total probability of all alignments.

    Forward args:
      blank_lp, label_lp: ``(N, T, U + 1)`` float64.
      t_lens, u_lens: ``(N,)`` int64 tensors of ``T_i >= 1`` and ``U_i >= 0`` (on the same device).
      one_sym_per_frame: the modified transducer instead of the standard one.

    Returns ``(N,)`` float64 ``log Z_i`` (``-inf`` where no alignment exists).
    """

    @staticmethod
    def forward(ctx, blank_lp, label_lp, t_lens, u_lens, one_sym_per_frame):
        n, t_max, u1_max = blank_lp.shape
        device = blank_lp.device
        # Column-major layout (N, U + 1, T): a label column is contiguous.
        blank_cols = blank_lp.transpose(1, 2).contiguous()
        t_range = torch.arange(t_max, device=device)
        u_range = torch.arange(u1_max, device=device)
        label_ok = (u_range.view(1, -1, 1) < u_lens.view(-1, 1, 1)) & (t_range.view(1, 1, -1) < t_lens.view(-1, 1, 1))
        label_cols = label_lp.transpose(1, 2).masked_fill(~label_ok, _NEG_INF)
        prefix = blank_cols.cumsum(-1) - blank_cols  # D: exclusive prefix sums over t
        batch = torch.arange(n, device=device)
        last_t = t_lens - 1
        final_blank = blank_cols[batch, u_lens, last_t]

        alpha = torch.empty_like(blank_cols)
        none = torch.full((n, 1), _NEG_INF, dtype=blank_cols.dtype, device=device)
        start = torch.full((n, t_max), _NEG_INF, dtype=blank_cols.dtype, device=device)
        start[:, 0] = 0.0
        for u in range(u1_max):
            if u == 0:
                c = start
            else:
                c = alpha[:, u - 1] + label_cols[:, u - 1]
                if one_sym_per_frame:
                    c = torch.cat([none, c[:, :-1]], dim=1)  # label at t-1 -> frame t
            d = prefix[:, u]
            alpha[:, u] = torch.logcumsumexp(c - d, dim=-1) + d
        log_z = alpha[batch, u_lens, last_t] + final_blank
        ctx.save_for_backward(alpha, blank_cols, label_cols, prefix, t_lens, u_lens, log_z)
        ctx.one_sym_per_frame = one_sym_per_frame
        return log_z

    @staticmethod
    def backward(ctx, grad_log_z):
        alpha, blank_cols, label_cols, prefix, t_lens, u_lens, log_z = ctx.saved_tensors
        one_sym = ctx.one_sym_per_frame
        n, u1_max, t_max = alpha.shape
        device = alpha.device
        batch = torch.arange(n, device=device)
        last_t = t_lens - 1
        # The final blank, as a source term of the beta recursion at (T_i - 1, U_i).
        final = torch.full_like(alpha, _NEG_INF)
        final[batch, u_lens, last_t] = blank_cols[batch, u_lens, last_t]

        beta = torch.empty_like(alpha)
        none = torch.full((n, 1), _NEG_INF, dtype=alpha.dtype, device=device)
        for u in range(u1_max - 1, -1, -1):
            if u == u1_max - 1:
                c = final[:, u]
            else:
                nxt = beta[:, u + 1]
                if one_sym:
                    nxt = torch.cat([nxt[:, 1:], none], dim=1)  # label at t -> frame t + 1
                c = torch.maximum(label_cols[:, u] + nxt, final[:, u])
            d = prefix[:, u]
            beta[:, u] = _logcumsumexp_reversed(c + d) - d

        # Occupancies of the blank and label transitions out of each cell.
        beta_next_t = torch.cat([beta[:, :, 1:], torch.full_like(beta[:, :, :1], _NEG_INF)], dim=2)
        blank_score = torch.maximum(blank_cols + beta_next_t, final)
        label_next = torch.cat([beta[:, 1:], torch.full_like(beta[:, :1], _NEG_INF)], dim=1)
        if one_sym:
            label_next = torch.cat([label_next[:, :, 1:], torch.full_like(label_next[:, :, :1], _NEG_INF)], dim=2)
        feasible = torch.isfinite(log_z)
        scale = torch.where(feasible, grad_log_z, torch.zeros_like(grad_log_z)).view(n, 1, 1)
        norm = torch.where(feasible, log_z, torch.zeros_like(log_z)).view(n, 1, 1)
        grad_blank = torch.exp(alpha + blank_score - norm).mul_(scale)
        grad_label = torch.exp(alpha + label_cols + label_next - norm).mul_(scale)
        return grad_blank.transpose(1, 2), grad_label.transpose(1, 2), None, None, None


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} is not allowed; expected 'mean', 'sum' or 'none'")


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    reduction: str,
    one_sym_per_frame: bool,
    packed: bool,
) -> torch.Tensor:
    _check_reduction(reduction)
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits dtype {logits.dtype} is not allowed; expected float32 or float64")
    if logits.dim() != (2 if packed else 4):
        raise ValueError(f"logits has shape {tuple(logits.shape)}; expected {'2' if packed else '4'} dimensions")
    if targets.dim() != 2 or logit_lengths.dim() != 1 or target_lengths.dim() != 1:
        raise ValueError("expected targets (N, U), logit_lengths (N,) and target_lengths (N,)")
    n = targets.size(0)
    if logit_lengths.numel() != n or target_lengths.numel() != n:
        raise ValueError("targets, logit_lengths and target_lengths disagree on the batch size")
    vocab = logits.size(-1)
    if not 0 <= blank < vocab:
        raise ValueError(f"blank={blank} is not a valid index into a vocabulary of {vocab}")
    t_list = [int(t) for t in logit_lengths.tolist()]
    u_list = [int(u) for u in target_lengths.tolist()]
    if min(t_list, default=1) < 1 or min(u_list, default=0) < 0:
        raise ValueError("every logit length must be >= 1 and every target length >= 0")
    if max(u_list, default=0) > targets.size(1):
        raise ValueError(f"a target length exceeds targets.size(1) = {targets.size(1)}")
    u1_list = [u + 1 for u in u_list]
    if packed:
        expected = sum(t * u1 for t, u1 in zip(t_list, u1_list))
        if logits.size(0) != expected:
            raise ValueError(f"packed logits have {logits.size(0)} rows; the lengths give sum T_i (U_i + 1) = {expected}")
        grid = (max(t_list, default=1), max(u1_list, default=1))
    else:
        if logits.size(0) != n or max(t_list, default=0) > logits.size(1) or max(u1_list, default=0) > logits.size(2):
            raise ValueError(f"logits of shape {tuple(logits.shape)} are too small for the given lengths")
        grid = (logits.size(1), logits.size(2))
    device = logits.device

    # labels[i, u]: the label emitted from column u (blank where u >= U_i, never used).
    labels = torch.full((n, grid[1]), blank, dtype=torch.int64, device=device)
    width = min(targets.size(1), grid[1])
    if width > 0:
        u_range = torch.arange(width, device=device)
        real = u_range.view(1, -1) < target_lengths.to(device).view(-1, 1)
        labels[:, :width] = torch.where(real, targets[:, :width].to(device, torch.int64), blank)
        if bool(((labels < 0) | (labels >= vocab)).any()):
            raise ValueError(f"targets contain a label outside [0, {vocab})")

    blank_lp, label_lp = _BlankLabelLogProbs.apply(logits, labels, t_list, u1_list, grid, packed, blank)
    t_lens = torch.tensor(t_list, dtype=torch.int64, device=device)
    u_lens = torch.tensor(u_list, dtype=torch.int64, device=device)
    log_z = _TransducerLogZ.apply(blank_lp.double(), label_lp.double(), t_lens, u_lens, bool(one_sym_per_frame))
    losses = (-log_z).to(logits.dtype)
    return _reduce(losses, reduction)


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    one_sym_per_frame: bool = False,
) -> torch.Tensor:
    """RNN-T loss on padded 4-D logits (same semantics as ``torchaudio.functional.rnnt_loss``).

    Args:
      logits: ``(N, T, U + 1, V)`` float32 or float64 joiner output (unnormalised; the
        log-softmax over ``V`` is taken inside). Cells beyond ``(T_i, U_i + 1)`` are ignored.
      targets: ``(N, U)`` integer labels (entries beyond ``U_i`` are ignored).
      logit_lengths: ``(N,)`` integer ``T_i`` (``1 <= T_i <= T``).
      target_lengths: ``(N,)`` integer ``U_i`` (``0 <= U_i <= U``).
      blank: index of the blank symbol.
      reduction: ``"mean"`` (mean over the batch), ``"sum"`` or ``"none"`` (``(N,)`` losses).
      one_sym_per_frame: the modified transducer (at most one label per frame).

    Returns:
      the loss, a scalar (or ``(N,)`` for ``"none"``) of the logits' dtype.
    """
    return _loss(logits, targets, logit_lengths, target_lengths, blank, reduction, one_sym_per_frame, packed=False)


def rnnt_loss_packed(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    one_sym_per_frame: bool = False,
) -> torch.Tensor:
    """RNN-T loss on packed logits (the layout of ``optimized_transducer.transducer_loss``).

    Args:
      logits: ``(sum_i T_i * (U_i + 1), V)`` float32 or float64; utterance ``i``'s
        ``(T_i, U_i + 1, V)`` grid flattened row-major, grids concatenated in batch order.
      targets, logit_lengths, target_lengths, blank, reduction, one_sym_per_frame: as in
        :func:`rnnt_loss`.

    Returns:
      the loss, a scalar (or ``(N,)`` for ``"none"``) of the logits' dtype.
    """
    return _loss(logits, targets, logit_lengths, target_lengths, blank, reduction, one_sym_per_frame, packed=True)
