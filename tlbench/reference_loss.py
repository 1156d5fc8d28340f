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

import itertools
import threading
from typing import Callable, List, Sequence, Tuple

import torch

__all__ = ["rnnt_loss", "rnnt_loss_packed"]

# Elements of logits handled per chunk in the log-softmax / gradient passes; a chunk of
# float32 then fits in the L2 cache and the temporaries stay small.
_CHUNK_ELEMENTS = 1 << 18

_NEG_INF = float("-inf")


def _utterance_views(tensor: torch.Tensor, packed: bool, t_lens: Sequence[int], u1_lens: Sequence[int]) -> List[torch.Tensor]:
    """Per utterance ``i``, the view of its first ``T_i`` frames in ``tensor``: packed
    ``(sum_i T_i (U_i + 1), ...)`` -> ``(T_i, U_i + 1, ...)``; 4-D ``(N, T, U + 1, ...)`` ->
    ``(T_i, U + 1, ...)``, all label columns kept so that a chunk of frames is contiguous."""
    if not packed:
        return [tensor[i, :t_len] for i, t_len in enumerate(t_lens)]
    views, offset = [], 0
    for t_len, u1_len in zip(t_lens, u1_lens):
        size = t_len * u1_len
        views.append(tensor[offset : offset + size].view((t_len, u1_len) + tuple(tensor.shape[1:])))
        offset += size
    return views


def _chunk_elements(device: torch.device) -> int:
    # CPU: a chunk of float32 logits fits in a core's L2 cache. Elsewhere: fewer, larger kernels.
    return _CHUNK_ELEMENTS if device.type == "cpu" else 64 * _CHUNK_ELEMENTS


def _tasks(t_lens: Sequence[int], width: Sequence[int], vocab: int, chunk: int) -> List[Tuple[int, int, int]]:
    """``(i, t0, t1)``: frames ``t0:t1`` of utterance ``i``, about ``chunk`` logits per task."""
    tasks = []
    for i, (t_len, w) in enumerate(zip(t_lens, width)):
        rows = max(1, chunk // max(1, w * vocab))
        tasks.extend((i, t0, min(t_len, t0 + rows)) for t0 in range(0, t_len, rows))
    return tasks


def _run(work: Callable, tasks: Sequence, buffers: Sequence) -> None:
    """Calls ``work(task, buffers[k])`` for every task, ``k`` being the worker.

    On CPU with ``torch.get_num_threads() > 1``, that many Python threads take tasks from a
    shared counter, each running single-threaded kernels: when other processes compete for the
    cores, a worker that gets less CPU time simply takes fewer tasks, where the static split of
    intra-op threads would make every kernel wait for its slowest thread. Workers must not
    allocate (the profiler's memory view covers the calling thread only): ``buffers`` are
    allocated here, by the caller.
    """
    if len(buffers) <= 1 or len(tasks) <= 1:
        for task in tasks:
            work(task, buffers[0])
        return
    counter = itertools.count()
    errors: List[BaseException] = []
    ready = threading.Barrier(len(buffers))

    def worker(buffer):
        try:
            torch.set_num_threads(1)
            ready.wait()
            with torch.no_grad():
                for k in counter:
                    if k >= len(tasks) or errors:
                        break
                    work(tasks[k], buffer)
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)
            ready.abort()

    threads_before = torch.get_num_threads()
    threads = [threading.Thread(target=worker, args=(b,), daemon=True) for b in buffers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(threads_before)  # set_num_threads(1) in a worker is process-wide
    if errors:
        raise errors[0]


def _num_workers(device: torch.device) -> int:
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


class _BlankLabelLogProbs(torch.autograd.Function):
    """logits -> log-probabilities of blank and of the next label at every cell.

    Forward args:
      logits: 4-D ``(N, T, U + 1, V)`` or packed ``(C, V)`` with ``C = sum_i T_i (U_i + 1)``;
        float32 or float64.
      index: ``(N, U + 1, 2)`` int64; ``index[i, u] = (blank, label emitted from column u)``
        (the label is ``blank`` where there is none, ``u >= U_i``).
      t_lens, u1_lens: Python lists of ``T_i`` and ``U_i + 1``.
      packed: the layout of ``logits``.

    Returns ``(N, T, U + 1, 2)`` (4-D; 0 outside utterance ``i``'s ``(T_i, U_i + 1)`` grid) or
    ``(C, 2)`` (packed) of the logits' dtype: ``[..., 0]`` blank, ``[..., 1]`` label.
    """

    @staticmethod
    def forward(ctx, logits, index, t_lens, u1_lens, packed):
        vocab = logits.size(-1)
        if packed:
            log_probs = logits.new_empty((logits.size(0), 2))
        else:
            log_probs = logits.new_zeros(tuple(logits.shape[:3]) + (2,))
        xs = _utterance_views(logits, packed, t_lens, u1_lens)
        outs = _utterance_views(log_probs, packed, t_lens, u1_lens)
        widths = [x.size(1) for x in xs]  # 4-D: padded label columns come along, so a chunk is contiguous
        tasks = _tasks(t_lens, widths, vocab, _chunk_elements(logits.device))

        def work(task, buffer):
            i, t0, t1 = task
            u1_len, width = u1_lens[i], widths[i]
            chunk = buffer[: (t1 - t0) * width * vocab].view(t1 - t0, width, vocab)
            torch.ops.aten._log_softmax.out(xs[i][t0:t1], -1, False, out=chunk)
            index_chunk = index[i, :u1_len].expand(t1 - t0, u1_len, 2)
            torch.gather(chunk[:, :u1_len], -1, index_chunk, out=outs[i][t0:t1, :u1_len])

        largest = max(((t1 - t0) * widths[i] * vocab for i, t0, t1 in tasks), default=0)
        buffers = [logits.new_empty(largest) for _ in range(min(_num_workers(logits.device), max(1, len(tasks))))]
        _run(work, tasks, buffers)
        del buffers
        ctx.save_for_backward(logits, index)
        ctx.layout = (t_lens, u1_lens, packed)
        return log_probs

    @staticmethod
    def backward(ctx, grad_log_probs):
        logits, index = ctx.saved_tensors
        t_lens, u1_lens, packed = ctx.layout
        vocab = logits.size(-1)
        grad_log_probs = grad_log_probs.to(logits.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        xs = _utterance_views(logits, packed, t_lens, u1_lens)
        gs = _utterance_views(grad, packed, t_lens, u1_lens)
        grad_lps = _utterance_views(grad_log_probs, packed, t_lens, u1_lens)
        widths = [x.size(1) for x in xs]
        tasks = _tasks(t_lens, widths, vocab, _chunk_elements(logits.device))
        if not packed:  # frames beyond T_i: zero gradient
            pads = [grad[i, t_len:] for i, t_len in enumerate(t_lens)]
            pad_rows = [p.size(0) for p in pads]
            tasks += [(-1 - i, t0, t1) for i, t0, t1 in _tasks(pad_rows, [logits.size(2)] * len(pads), vocab, 4 * _chunk_elements(logits.device))]

        def work(task, weight):
            i, t0, t1 = task
            if i < 0:
                pads[-1 - i][t0:t1].zero_()
                return
            # d loss / d logits = softmax * -(g_blank + g_label) + g_blank at blank + g_label at label
            u1_len = u1_lens[i]
            out = gs[i][t0:t1]
            torch.ops.aten._softmax.out(xs[i][t0:t1], -1, False, out=out)
            if u1_len < widths[i]:
                out[:, u1_len:].zero_()
                out = out[:, :u1_len]
            grad_chunk = grad_lps[i][t0:t1, :u1_len]
            w = weight[: (t1 - t0) * u1_len].view(t1 - t0, u1_len, 1)
            torch.sum(grad_chunk, -1, keepdim=True, out=w)
            out.mul_(w.neg_())
            out.scatter_add_(-1, index[i, :u1_len].expand(t1 - t0, u1_len, 2), grad_chunk)

        largest = max(((t1 - t0) * u1_lens[i] for i, t0, t1 in tasks if i >= 0), default=0)
        weights = [logits.new_empty(largest) for _ in range(min(_num_workers(logits.device), max(1, len(tasks))))]
        _run(work, tasks, weights)
        return grad, None, None, None, None


class _TransducerLogZ(torch.autograd.Function):
    """(blank, label) log-probs -> log of the total probability of all alignments.

    Forward args:
      log_probs: the output of :class:`_BlankLabelLogProbs`: ``(N, T, U + 1, 2)``, or ``(C, 2)``
        with ``cells`` given; float32 or float64 (the recursion runs in float64).
      cells: None, or ``(C,)`` int64: where each packed cell lies in the flattened
        ``(N, T, U + 1)`` grid.
      grid: ``(N, T, U + 1)``.
      t_lens, u_lens: ``(N,)`` int64 tensors of ``T_i >= 1`` and ``U_i >= 0``.
      one_sym_per_frame: the modified transducer instead of the standard one.

    Returns ``(N,)`` float64 ``log Z_i`` (``-inf`` where no alignment exists).

    Internally every ``(N, T, U + 1)`` quantity is stored column-major, ``(N, U + 1, T)``, so
    that a label column is contiguous. ``blank[t, u]`` may be garbage (finite) outside the
    grid of an utterance: no cell of the grid depends on it. ``label[t, u]`` is ``-inf`` for
    ``u >= U_i`` or ``t >= T_i`` (no such transition), which also keeps beta at ``-inf`` there.
    """

    @staticmethod
    def forward(ctx, log_probs, cells, grid, t_lens, u_lens, one_sym_per_frame):
        n, t_max, u1_max = grid
        device = log_probs.device
        if cells is None:
            padded = log_probs.to(torch.float64)
        else:
            padded = log_probs.new_zeros((n * t_max * u1_max, 2), dtype=torch.float64)
            padded[cells] = log_probs.to(torch.float64)
        padded = padded.view(n, t_max, u1_max, 2).permute(3, 0, 2, 1)
        blank = padded[0].contiguous()
        t_range = torch.arange(t_max, device=device)
        u_range = torch.arange(u1_max, device=device)
        label_ok = (u_range.view(1, -1, 1) < u_lens.view(-1, 1, 1)) & (t_range.view(1, 1, -1) < t_lens.view(-1, 1, 1))
        label = padded[1].masked_fill(~label_ok, _NEG_INF)
        del padded
        prefix = blank.cumsum(-1).sub_(blank)  # D[u, t] = sum_{j < t} blank[j, u]

        # alpha[:, u] = D[:, u] + logcumsumexp(c - D[:, u]), c[t] = alpha[t, u - 1] + label[t, u - 1]
        # (modified: c[t] = alpha[t - 1, u - 1] + label[t - 1, u - 1]); column 0: alpha = D.
        alpha = torch.empty_like(blank)
        alpha[:, 0] = prefix[:, 0]
        c = torch.full((n, t_max), _NEG_INF, dtype=blank.dtype, device=device)
        shift = 1 if one_sym_per_frame else 0
        step = label[:, :-1, : t_max - shift] - prefix[:, 1:, shift:]  # label[u - 1] - D[u], aligned
        for u in range(1, u1_max):
            torch.add(alpha[:, u - 1, : t_max - shift], step[:, u - 1], out=c[:, shift:])
            column = alpha[:, u]
            torch.logcumsumexp(c, -1, out=column)
            column.add_(prefix[:, u])
        batch = torch.arange(n, device=device)
        last_t = t_lens - 1
        log_z = alpha[batch, u_lens, last_t] + blank[batch, u_lens, last_t]
        ctx.save_for_backward(alpha, blank, label, prefix, cells, t_lens, u_lens, log_z)
        ctx.info = (one_sym_per_frame, log_probs.dtype, sorted(set(u_lens.tolist())))
        return log_z

    @staticmethod
    def backward(ctx, grad_log_z):
        alpha, blank, label, prefix, cells, t_lens, u_lens, log_z = ctx.saved_tensors
        one_sym, dtype, final_columns = ctx.info
        n, u1_max, t_max = alpha.shape
        device = alpha.device
        batch = torch.arange(n, device=device)
        last_t = t_lens - 1
        # The final blank at (T_i - 1, U_i), as a source term of the beta recursion.
        final = torch.full_like(alpha, _NEG_INF)
        final[batch, u_lens, last_t] = blank[batch, u_lens, last_t]

        # beta[:, u] = -D[:, u] + (logsumexp over k >= t of (c + D[:, u])[k]), c[k] =
        # max(label[k, u] + beta[k, u + 1], final[k, u]) (modified: beta[k + 1, u + 1]).
        # Run in reversed time, so that the suffix sums are prefix sums (logcumsumexp).
        shift = 1 if one_sym else 0
        prefix_r = prefix.flip(-1)
        step_r = (label + prefix).flip(-1)
        final_r = (final + prefix).flip(-1)
        beta_r = torch.empty_like(alpha)
        c = torch.full((n, t_max), _NEG_INF, dtype=alpha.dtype, device=device)
        for u in range(u1_max - 1, -1, -1):
            if u == u1_max - 1:
                c.copy_(final_r[:, u])
            else:
                c[:, :shift] = _NEG_INF  # modified: no label from the last frame
                torch.add(step_r[:, u, shift:], beta_r[:, u + 1, : t_max - shift], out=c[:, shift:])
                if u in final_columns:
                    torch.maximum(c, final_r[:, u], out=c)
            column = beta_r[:, u]
            torch.logcumsumexp(c, -1, out=column)
            column.sub_(prefix_r[:, u])
        beta = beta_r.flip(-1)
        del prefix_r, step_r, final_r, beta_r

        # Occupancy of each transition = exp(alpha + its log-prob + beta of its target - log Z).
        feasible = torch.isfinite(log_z)
        scale = torch.where(feasible, grad_log_z, torch.zeros_like(grad_log_z)).view(n, 1, 1)
        norm = torch.where(feasible, log_z, torch.zeros_like(log_z)).view(n, 1, 1)
        alpha = alpha - norm
        none = torch.full((n, 1, 1), _NEG_INF, dtype=alpha.dtype, device=device)
        grad = torch.empty((n, t_max, u1_max, 2), dtype=torch.float64, device=device)
        after_blank = torch.cat([beta[:, :, 1:], none.expand(n, u1_max, 1)], dim=2)
        grad[..., 0] = torch.maximum(blank + after_blank, final).add_(alpha).exp_().mul_(scale).transpose(1, 2)
        after_label = torch.cat([beta[:, 1:], none.expand(n, 1, t_max)], dim=1)
        if one_sym:
            after_label = torch.cat([after_label[:, :, 1:], none.expand(n, u1_max, 1)], dim=2)
        grad[..., 1] = (label + after_label).add_(alpha).exp_().mul_(scale).transpose(1, 2)
        if cells is not None:
            grad = grad.view(-1, 2)[cells]
        return grad.to(dtype), None, None, None, None, None


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

    # index[i, u] = (blank, the label emitted from column u); blank where u >= U_i (never used).
    index = torch.full((n, grid[1], 2), blank, dtype=torch.int64, device=device)
    width = min(targets.size(1), grid[1])
    if width > 0:
        real = torch.arange(width, device=device).view(1, -1) < target_lengths.to(device).view(-1, 1)
        labels = torch.where(real, targets[:, :width].to(device, torch.int64), blank)
        if bool(((labels < 0) | (labels >= vocab)).any()):
            raise ValueError(f"targets contain a label outside [0, {vocab})")
        index[:, :width, 1] = labels

    t_lens = torch.tensor(t_list, dtype=torch.int64, device=device)
    u_lens = torch.tensor(u_list, dtype=torch.int64, device=device)
    cells = None
    if packed:  # position of every packed cell in the flattened (N, T, U + 1) grid
        rows = [i * grid[0] + torch.arange(t, device=device) for i, t in enumerate(t_list)]
        cells = torch.cat(
            [(r.view(-1, 1) * grid[1] + torch.arange(u1, device=device)).view(-1) for r, u1 in zip(rows, u1_list)]
        )
    log_probs = _BlankLabelLogProbs.apply(logits, index, t_list, u1_list, packed)
    log_z = _TransducerLogZ.apply(log_probs, cells, (n,) + grid, t_lens, u_lens, bool(one_sym_per_frame))
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
