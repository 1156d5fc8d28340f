"""The transducer lattice shared by the project's losses: the alpha/beta recursion over the
blank and next-label log-probabilities of every cell, and the worker threads of the chunked passes.

:class:`TransducerLogZ` turns the ``(N, T, U + 1)`` blank / next-label log-probabilities into
``log Z`` (the log of the total probability of all alignments) and back into their gradients;
``tlbench.losses.reference`` feeds it log-probabilities computed from given logits,
``tlbench.losses.fused`` feeds it log-probabilities computed from the joiner chunk by chunk.

The recursion (standard transducer: blank ``(t, u) -> (t + 1, u)``, label ``(t, u) -> (t, u + 1)``;
modified, ``one_sym_per_frame``: label ``(t, u) -> (t + 1, u + 1)``; every path ends with a blank at
``(T_i - 1, U_i)``) runs one label column ``u`` at a time, in float64. Within a column the
recursion along ``t`` is linear in log space:
``alpha[t, u] = logaddexp(alpha[t - 1, u] + blank[t - 1, u], c[t])``, with ``c`` coming from
column ``u - 1``. With the exclusive prefix sum ``D[t] = sum_{j < t} blank[j, u]`` its solution is
``alpha[:, u] = D + logcumsumexp(c - D)`` (float64 keeps ``c - D`` exact enough: ``|D|`` is at most
a few thousand nats here). The backward pass runs the mirror-image (beta) recursion the same way
and turns ``alpha + beta`` into the occupancy of every transition.

:func:`run_tasks` shares chunk tasks among worker threads; :func:`serial_kernels` sets the
intra-op thread count to 1 while the small kernels of the recursion run.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "TransducerLogZ", "check_reduction", "frame_tasks", "num_workers", "reduce_losses", "run_tasks", "serial_kernels",
]

_NEG_INF = float("-inf")


def frame_tasks(t_lens: Sequence[int], widths: Sequence[int], vocab: int, chunk: int) -> list[tuple[int, int, int]]:
    """``(i, t0, t1)``: frames ``t0:t1`` of utterance ``i``, about ``chunk`` logits per task."""
    tasks = []
    for i, (t_len, width) in enumerate(zip(t_lens, widths)):
        rows = max(1, chunk // max(1, width * vocab))
        tasks.extend((i, t0, min(t_len, t0 + rows)) for t0 in range(0, t_len, rows))
    return tasks


def run_tasks(work: Callable, tasks: Sequence, buffers: Sequence) -> None:
    """Calls ``work(task, buffers[k])`` for every task, ``k`` being the worker.

    With more than one buffer, that many Python threads take tasks from a shared counter,
    each running single-threaded kernels: when other processes compete for the cores, a
    worker that gets less CPU time simply takes fewer tasks, where the static split of
    intra-op threads makes every kernel wait for its slowest thread. Workers must not
    allocate (the profiler's memory view covers the calling thread only): ``buffers`` are
    allocated by the caller.
    """
    if len(buffers) <= 1 or len(tasks) <= 1:
        with torch.no_grad():
            for task in tasks:
                work(task, buffers[0])
        return
    counter = itertools.count()
    errors: list[BaseException] = []
    ready = threading.Barrier(len(buffers))
    # Thread-local: buffers made under the caller's inference mode are inference tensors,
    # which only code in inference mode may write.
    inference = torch.is_inference_mode_enabled()

    def worker(buffer):
        try:
            torch.set_num_threads(1)
            ready.wait()
            with torch.inference_mode(inference), torch.no_grad():
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


@contextlib.contextmanager
def serial_kernels():
    """Intra-op threads set to 1 for the duration (restored after); yields the number before.

    The recursion's small kernels run faster serially, and the big passes are spread over that
    many workers by :func:`run_tasks` instead."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield threads
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def num_workers(threads: int, device: torch.device, tasks: Sequence) -> int:
    """Worker threads for :func:`run_tasks`: up to ``threads`` on CPU, one elsewhere."""
    return max(1, min(threads, len(tasks))) if device.type == "cpu" else 1


class TransducerLogZ(torch.autograd.Function):
    """(blank, label) log-probs -> log of the total probability of all alignments.

    Forward args:
      blank_lp, label_lp: the blank and next-label log-probabilities of every cell, float32 or
        float64 (the recursion runs in float64): 4-D layout: two ``(N, T, U + 1)`` tensors
        (``label_lp`` is not read at ``u = U_i``); packed: ``(C,)`` and ``(sum_i T_i U_i,)``.
      blank_cells, label_cells: None (4-D), or packed: ``(C,)`` and ``(sum_i T_i U_i,)``
        int64, where each entry lies in the flattened ``(N, T, U + 1)`` grid.
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
    def forward(ctx, blank_lp, label_lp, blank_cells, label_cells, grid, t_lens, u_lens, one_sym_per_frame):
        with serial_kernels():
            args = (blank_lp, label_lp, blank_cells, label_cells, grid, t_lens, u_lens, one_sym_per_frame)
            return TransducerLogZ._forward(ctx, *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_log_z):
        with serial_kernels():
            return TransducerLogZ._backward(ctx, grad_log_z)

    @staticmethod
    def _to_grid(values, cells, grid):
        """-> ``(N, U + 1, T)`` float64 (column-major), 0 where no cell maps."""
        if cells is None:
            # copy=True: with float64 input of a degenerate shape (T = 1 or U + 1 = 1) the
            # transpose is already contiguous and would alias the input, which is filled in place.
            return values.transpose(1, 2).to(torch.float64, memory_format=torch.contiguous_format, copy=True)
        n, t_max, u1_max = grid
        out = values.new_zeros(n * t_max * u1_max, dtype=torch.float64)
        out[cells] = values.to(torch.float64)
        return out.view(n, t_max, u1_max).transpose(1, 2).contiguous()

    @staticmethod
    def _from_grid(values, cells, dtype):
        """``(N, U + 1, T)`` -> the layout of the inputs."""
        values = values.transpose(1, 2)
        if cells is None:
            return values.to(dtype, memory_format=torch.contiguous_format)
        return values.reshape(-1)[cells].to(dtype)

    @staticmethod
    def _forward(ctx, blank_lp, label_lp, blank_cells, label_cells, grid, t_lens, u_lens, one_sym_per_frame):
        n, t_max, u1_max = grid
        device = blank_lp.device
        blank = TransducerLogZ._to_grid(blank_lp, blank_cells, grid)
        t_range = torch.arange(t_max, device=device)
        u_range = torch.arange(u1_max, device=device)
        label_ok = (u_range.view(1, -1, 1) < u_lens.view(-1, 1, 1)) & (t_range.view(1, 1, -1) < t_lens.view(-1, 1, 1))
        label = TransducerLogZ._to_grid(label_lp, label_cells, grid).masked_fill_(~label_ok, _NEG_INF)
        del label_ok
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
        ctx.save_for_backward(alpha, blank, label, prefix, blank_cells, label_cells, t_lens, u_lens, log_z)
        ctx.info = (one_sym_per_frame, blank_lp.dtype, sorted(set(u_lens.tolist())))
        return log_z

    @staticmethod
    def _backward(ctx, grad_log_z):
        alpha, blank, label, prefix, blank_cells, label_cells, t_lens, u_lens, log_z = ctx.saved_tensors
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
        after_blank = torch.cat([beta[:, :, 1:], none.expand(n, u1_max, 1)], dim=2)
        grad_blank = torch.maximum(blank + after_blank, final).add_(alpha).exp_().mul_(scale)
        del after_blank, final
        grad_blank = TransducerLogZ._from_grid(grad_blank, blank_cells, dtype)
        after_label = torch.cat([beta[:, 1:], none.expand(n, 1, t_max)], dim=1)
        if one_sym:
            after_label = torch.cat([after_label[:, :, 1:], none.expand(n, u1_max, 1)], dim=2)
        grad_label = after_label.add_(label).add_(alpha).exp_().mul_(scale)
        grad_label = TransducerLogZ._from_grid(grad_label, label_cells, dtype)
        return grad_blank, grad_label, None, None, None, None, None, None


def check_reduction(reduction: str) -> None:
    """ValueError unless ``reduction`` is "mean", "sum" or "none"."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} is not allowed; expected 'mean', 'sum' or 'none'")


def reduce_losses(losses: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """float64 ``(N,)`` losses -> the reduction, in ``dtype`` (rounded once, at the end)."""
    if reduction == "mean":
        return losses.mean().to(dtype)
    if reduction == "sum":
        return losses.sum().to(dtype)
    return losses.to(dtype)
