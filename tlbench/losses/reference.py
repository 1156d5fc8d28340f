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

1. :class:`_BlankLabelLogProbs` maps the logits to the blank and the next-label
   log-probabilities of every cell (two small tensors, ``(N, T, U + 1)`` in 4-D), one chunk of
   frames at a time: a ``log_softmax`` into a cache-sized buffer, then two gathers; never a
   full-size temporary. It saves only references to the logits and the targets. Its
   backward writes the gradient of the logits in one pass per chunk:
   ``softmax * w + g_blank`` at the blank index ``+ g_label`` at the label index, with
   ``w = -(g_blank + g_label)``. On CPU the chunks are shared among ``torch.get_num_threads()``
   worker threads (see :func:`tlbench.losses.lattice.run_tasks`).
2. :class:`tlbench.losses.lattice.TransducerLogZ` runs the forward (alpha) recursion one label column
   ``u`` at a time (``U + 1`` vectorised steps over all frames and utterances at once), in
   float64. Within a column the recursion along ``t`` is linear in log space:
   ``alpha[t, u] = logaddexp(alpha[t - 1, u] + blank[t - 1, u], c[t])``, with ``c`` coming from
   column ``u - 1``. With the exclusive prefix sum ``D[t] = sum_{j < t} blank[j, u]`` its solution
   is ``alpha[:, u] = D + logcumsumexp(c - D)`` (float64 keeps ``c - D`` exact enough: ``|D|`` is
   at most a few thousand nats here). The backward pass runs the mirror-image (beta) recursion
   the same way and turns ``alpha + beta`` into the occupancy of every transition.

Memory between forward and backward: the logits (referenced, not copied) and a few
``(N, T, U + 1)`` float64 tensors. During backward: the gradient of the logits, plus the
two small gradients (one float per cell each).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from tlbench.losses.lattice import (
    TransducerLogZ,
    check_reduction,
    frame_tasks,
    num_workers,
    reduce_losses,
    run_tasks,
    serial_kernels,
)

__all__ = ["rnnt_loss", "rnnt_loss_packed"]

# Elements of logits handled per chunk in the log-softmax / gradient passes; a chunk of
# float32 then fits in the L2 cache and the temporaries stay small.
_CHUNK_ELEMENTS = 1 << 19


def _utterance_views(tensor: torch.Tensor, packed: bool, t_lens: Sequence[int], widths: Sequence[int]) -> list[torch.Tensor]:
    """Per utterance ``i``, the view of its first ``T_i`` frames in ``tensor``: packed
    ``(sum_i T_i * widths[i], ...)`` -> ``(T_i, widths[i], ...)``; 4-D ``(N, T, W, ...)`` ->
    ``(T_i, W, ...)`` (all columns kept, so that a chunk of frames is contiguous)."""
    if not packed:
        return [tensor[i, :t_len] for i, t_len in enumerate(t_lens)]
    views, offset = [], 0
    for t_len, width in zip(t_lens, widths):
        size = t_len * width
        views.append(tensor[offset : offset + size].view((t_len, width) + tuple(tensor.shape[1:])))
        offset += size
    return views


def _chunk_elements(device: torch.device) -> int:
    # CPU: a chunk of float32 logits fits in a core's L2 cache. Elsewhere: fewer, larger kernels.
    return _CHUNK_ELEMENTS if device.type == "cpu" else 64 * _CHUNK_ELEMENTS


class _BlankLabelLogProbs(torch.autograd.Function):
    """logits -> log-probabilities of blank and of the next label at every cell.

    Forward args:
      logits: 4-D ``(N, T, U + 1, V)`` or packed ``(C, V)`` with ``C = sum_i T_i (U_i + 1)``;
        float32 or float64.
      labels: ``(N, >= max U_i)`` int64 targets (entries beyond ``U_i`` are not read).
      t_lens, u_lens: Python lists of ``T_i`` and ``U_i``.
      packed: the layout of ``logits``.
      blank: the blank index.

    Returns ``(blank_lp, label_lp)`` of the logits' dtype: 4-D: two ``(N, T, U + 1)`` tensors,
    0 outside utterance ``i``'s ``(T_i, U_i + 1)`` grid (``label_lp`` also at ``u = U_i``);
    packed: ``(C,)`` over every cell ``(t, u)`` and ``(sum_i T_i U_i,)`` over the cells with
    ``u < U_i`` (the only ones with a next label), both utterance-major, then ``t``, then ``u``.
    """

    @staticmethod
    def forward(ctx, logits, labels, t_lens, u_lens, packed, blank):
        with serial_kernels() as threads:
            return _BlankLabelLogProbs._forward(ctx, threads, logits, labels, t_lens, u_lens, packed, blank)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_blank, grad_label):
        with serial_kernels() as threads:
            return _BlankLabelLogProbs._backward(ctx, threads, grad_blank, grad_label)

    @staticmethod
    def _views(tensors, packed, t_lens, u_lens):
        """Per-utterance views of (logits or their gradient, blank_lp, label_lp)."""
        x, blank_lp, label_lp = tensors
        return (
            _utterance_views(x, packed, t_lens, [u + 1 for u in u_lens]),
            _utterance_views(blank_lp, packed, t_lens, [u + 1 for u in u_lens]),
            _utterance_views(label_lp, packed, t_lens, u_lens),
        )

    @staticmethod
    def _forward(ctx, threads, logits, labels, t_lens, u_lens, packed, blank):
        vocab = logits.size(-1)
        if packed:
            blank_lp = logits.new_empty(logits.size(0))
            label_lp = logits.new_empty(sum(t * u for t, u in zip(t_lens, u_lens)))
        else:
            blank_lp = logits.new_zeros(logits.shape[:3])
            label_lp = logits.new_zeros(logits.shape[:3])
        xs, blanks, nexts = _BlankLabelLogProbs._views((logits, blank_lp, label_lp), packed, t_lens, u_lens)
        widths = [x.size(1) for x in xs]  # 4-D: padded label columns come along
        tasks = frame_tasks(t_lens, widths, vocab, _chunk_elements(logits.device))

        def work(task, buffer):
            i, t0, t1 = task
            u_len, width = u_lens[i], widths[i]
            chunk = buffer[: (t1 - t0) * width * vocab].view(t1 - t0, width, vocab)
            torch.ops.aten._log_softmax.out(xs[i][t0:t1], -1, False, out=chunk)
            blanks[i][t0:t1, : u_len + 1].copy_(chunk[:, : u_len + 1, blank])
            if u_len > 0:
                index = labels[i, :u_len].view(1, u_len, 1).expand(t1 - t0, u_len, 1)
                torch.gather(chunk[:, :u_len], -1, index, out=nexts[i][t0:t1, :u_len].unsqueeze(-1))

        largest = max(((t1 - t0) * widths[i] * vocab for i, t0, t1 in tasks), default=0)
        buffers = [logits.new_empty(largest) for _ in range(num_workers(threads, logits.device, tasks))]
        run_tasks(work, tasks, buffers)
        del buffers
        ctx.save_for_backward(logits, labels)
        ctx.layout = (t_lens, u_lens, packed, blank)
        return blank_lp, label_lp

    @staticmethod
    def _backward(ctx, threads, grad_blank, grad_label):
        logits, labels = ctx.saved_tensors
        t_lens, u_lens, packed, blank = ctx.layout
        vocab = logits.size(-1)
        # Both come fresh from TransducerLogZ.backward and are read by nothing else: the
        # loop below reuses grad_blank in place as the weight of the softmax.
        grad_blank = grad_blank.to(logits.dtype).contiguous()
        grad_label = grad_label.to(logits.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        xs, gbs, gls = _BlankLabelLogProbs._views((logits, grad_blank, grad_label), packed, t_lens, u_lens)
        gs = _utterance_views(grad, packed, t_lens, [u + 1 for u in u_lens])
        widths = [x.size(1) for x in xs]
        tasks = frame_tasks(t_lens, widths, vocab, _chunk_elements(logits.device))
        if not packed:  # frames beyond T_i: zero gradient
            pads = [grad[i, t_len:] for i, t_len in enumerate(t_lens)]
            pad_tasks = frame_tasks([p.size(0) for p in pads], [logits.size(2)] * len(pads), vocab,
                                    4 * _chunk_elements(logits.device))
            tasks += [(-1 - i, t0, t1) for i, t0, t1 in pad_tasks]

        def work(task, _):
            i, t0, t1 = task
            if i < 0:
                pads[-1 - i][t0:t1].zero_()
                return
            # d loss / d logits = w * softmax + g_blank at blank + g_label at the label, with
            # w = -(g_blank + g_label) per cell.
            u_len, width = u_lens[i], widths[i]
            out = gs[i][t0:t1]
            torch.ops.aten._softmax.out(xs[i][t0:t1], -1, False, out=out)
            if u_len + 1 < width:
                out[:, u_len + 1 :].zero_()
                out = out[:, : u_len + 1]
            weight = gbs[i][t0:t1, : u_len + 1]
            g_label = gls[i][t0:t1, :u_len]
            weight[:, :u_len].add_(g_label)
            weight.neg_()  # now w; g_blank = -w - g_label
            out.mul_(weight.unsqueeze(-1))
            out[..., blank].sub_(weight)
            if u_len > 0:
                out[:, :u_len, blank].sub_(g_label)
                index = labels[i, :u_len].view(1, u_len, 1).expand(t1 - t0, u_len, 1)
                out[:, :u_len].scatter_add_(-1, index, g_label.unsqueeze(-1))

        run_tasks(work, tasks, [None] * num_workers(threads, logits.device, tasks))
        return grad, None, None, None, None, None


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
    check_reduction(reduction)
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
    if -vocab <= blank < 0:  # as in torchaudio: -1 is the last symbol
        blank += vocab
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

    labels = targets.to(device=device, dtype=torch.int64)  # no copy when already int64 there
    t_lens = torch.tensor(t_list, dtype=torch.int64, device=device)
    u_lens = torch.tensor(u_list, dtype=torch.int64, device=device)
    if labels.size(1) > 0:
        real = torch.arange(labels.size(1), device=device).view(1, -1) < u_lens.view(-1, 1)
        if bool((((labels < 0) | (labels >= vocab)) & real).any()):
            raise ValueError(f"targets contain a label outside [0, {vocab})")
    blank_cells = label_cells = None
    if packed:  # where each packed cell lies in the flattened (N, T, U + 1) grid
        rows = [(i * grid[0] + torch.arange(t, device=device)).view(-1, 1) * grid[1] for i, t in enumerate(t_list)]
        blank_cells = torch.cat([(r + torch.arange(u + 1, device=device)).view(-1) for r, u in zip(rows, u_list)])
        label_cells = torch.cat([(r + torch.arange(u, device=device)).view(-1) for r, u in zip(rows, u_list)])
    if not logits.is_contiguous():  # the chunked kernels need contiguous frames (this copies)
        logits = logits.contiguous()
    blank_lp, label_lp = _BlankLabelLogProbs.apply(logits, labels, t_list, u_list, packed, blank)
    log_z = TransducerLogZ.apply(
        blank_lp, label_lp, blank_cells, label_cells, (n,) + grid, t_lens, u_lens, bool(one_sym_per_frame)
    )
    return reduce_losses(-log_z, reduction, logits.dtype)


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
      blank: index of the blank symbol (negative: counted from the end, as in torchaudio).
      reduction: ``"mean"`` (mean over the batch), ``"sum"`` or ``"none"`` (``(N,)`` losses).
      one_sym_per_frame: the modified transducer (at most one label per frame).

    Returns:
      the loss, a scalar (or ``(N,)`` for ``"none"``) of the logits' dtype; the per-utterance
      losses and their reduction are computed in float64 and rounded once.

    Notes:
      Extra memory during backward: the gradient of the logits plus about two floats per cell
      of ``(N, T, U + 1)`` (non-contiguous logits are first copied). On CPU the passes over
      the logits are shared by ``torch.get_num_threads()`` worker threads running
      single-threaded kernels; meanwhile the process-wide intra-op thread count is 1, and it
      is restored when forward and backward return.
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
