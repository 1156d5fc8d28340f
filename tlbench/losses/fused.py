"""An exact RNN-T (transducer) loss with the joiner inside: the logits are never materialised.

:func:`fused_transducer_loss` takes the encoder and decoder outputs and the joiner and computes
the same loss as ``tlbench.losses.reference.rnnt_loss`` (or torchaudio) on
``logits = joiner(encoder_out.unsqueeze(2) + decoder_out.unsqueeze(1))``, with the gradients
of ``encoder_out``, ``decoder_out`` and the joiner's ``weight`` and ``bias``, without ever
holding the ``(N, T, U + 1, V)`` logits or the ``(N, T, U + 1, C)`` joiner input.

The joiner contract: ``logits[n, t, u] = W @ act(encoder_out[n, t] + decoder_out[n, u]) + b``,
``W`` ``(V, C)``, ``b`` ``(V,)`` or no bias, ``act`` elementwise. Accepted:
``tlbench.data.batches.Joiner`` (``tanh`` then ``.output_linear``) and
``torch.nn.Sequential(activation, torch.nn.Linear)`` with ``activation`` one of
``torch.nn.Tanh``, ``ReLU``, ``Sigmoid``, ``Identity`` (:data:`FUSABLE_ACTIVATIONS`);
anything else raises ValueError (:func:`joiner_parts`). The joiner's ``forward`` (and any hook
on it) is not called: only its parameters are read.

How it is computed. The cells ``(t, u)`` of each utterance are cut into chunks of whole frames:
frames ``t0:t1`` of utterance ``i`` with all its ``U_i + 1`` label positions, about
``_CPU_CHUNK_CELLS`` cells on CPU (a chunk's buffers stay in cache and its matmuls still run at
full speed on one core) and ``_CUDA_CHUNK_ELEMENTS / max(V, C)`` on CUDA (so that one chunk's
matmul fills the GPU).

- forward, per chunk: ``h = act(enc[t] + dec[u])`` (cells x C), ``logits = h @ W^T + b``
  (cells x V), their log-softmax, from which only the blank and the next-label
  log-probabilities of each cell are kept, in two ``(N, T, U + 1)`` tensors. Those go to the
  alpha/beta recursion :class:`tlbench.losses.lattice.TransducerLogZ` (the one ``reference_loss``
  uses), which turns them into ``log Z`` per utterance.
- backward: the recursion gives the gradient of each cell's two log-probabilities. Per chunk,
  ``h`` and the logits are recomputed (the same kernels on the same values: the same numbers
  as in forward), and the gradient of the logits is formed as ``reference_loss`` forms it from
  given logits: ``softmax * w``, plus ``g_blank`` at the blank and ``g_label`` at the label,
  ``w = -(g_blank + g_label)``. Then ``grad_W += grad_logits^T @ h``,
  ``grad_b += sum(grad_logits)``, ``grad_h = grad_logits @ W``,
  ``grad_pre = grad_h * act'(pre)`` (written from ``h``: ``1 - h^2`` for tanh, ``h > 0`` for
  ReLU, ``h (1 - h)`` for sigmoid), ``grad_enc[t] = sum over u`` (each frame belongs to one
  chunk: written, not accumulated) and ``grad_dec[u] += sum over t``. Four joiner-sized
  matmuls in all, one in forward and three in backward; they take ~90% of the time on CPU.

Memory kept between forward and backward: references to the inputs (nothing is copied) and
the recursion's state, four ``(N, U + 1, T)`` float64 tensors plus ``(N,)`` ``log Z`` (see
``TransducerLogZ``); the two ``(N, T, U + 1)`` log-probability tensors are freed once the
recursion has read them. Nothing else: no logits, no ``h``, no log-normaliser.
While forward or backward runs, in addition, per worker thread (``K`` = the largest chunk's
cell count): ``h`` ``(K, C)`` and the logits ``(K, V)`` in the input dtype, their
(log-)softmax ``(K, V)`` in the accumulation dtype (plus a float32 copy of the logits for
float16/bfloat16), and in backward ``grad_h`` ``(K, C)`` and the worker's partial sums
``grad_W`` ``(V, C)``, ``grad_b`` ``(V,)``, ``grad_dec`` ``(N, U + 1, C)``; the recursion's
backward temporaries (about ten more ``(N, U + 1, T)`` float64 tensors, all freed before the
chunk pass but the two ``(N, T, U + 1)`` gradients it hands over); the outputs ``grad_enc``
``(N, T, C)``, ``grad_dec``, ``grad_W``, ``grad_b``. At N = 8,
T = 433, U = 101, V = 500, C = 512 and two workers the peak is ~30 MB, against 674 MB for the
float32 logits alone. Every buffer is allocated by the calling thread before the workers start
(torch.profiler's memory events cover that thread only, so this keeps measured peaks honest);
the workers only write into views of them with ``out=`` or in-place kernels.

Threads: on CPU the chunk passes are shared among ``torch.get_num_threads()`` worker threads
(:func:`tlbench.losses.lattice.run_tasks`: tasks taken from a shared counter, each worker running
single-threaded kernels). With more than one worker, which worker adds which chunk into its
partial ``grad_W`` / ``grad_b`` / ``grad_dec`` varies from run to run, so those three can
differ between runs by float rounding; one worker (or CUDA) is deterministic, up to the
kernels' own determinism. On CUDA one worker issues the (large) chunks in order.

Dtypes: float32 and float64 run in their own precision (on CPU, tanh is evaluated as
``2 sigmoid(2x) - 1``, see :func:`_activate_`). float16 / bfloat16 (meant for CUDA) run the
matmuls in the input dtype and everything from the logits on (log-softmax, the gradient of
the logits, the sums into ``grad_W``, ``grad_b``, ``grad_enc``, ``grad_dec``) in float32; the
gradients are returned in the dtypes of their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from tlbench.data.batches import Joiner
from tlbench.losses.lattice import (
    TransducerLogZ,
    check_reduction,
    frame_tasks,
    num_workers,
    reduce_losses,
    run_tasks,
    serial_kernels,
)

__all__ = ["FUSABLE_ACTIVATIONS", "fused_transducer_loss", "joiner_parts"]

# Cells (t, u) per chunk on CPU: h and the logits of a chunk stay within a core's L2/L3 and
# each matmul is still large enough to run at full speed single-threaded.
_CPU_CHUNK_CELLS = 512
# On CUDA, elements of the largest (cells x max(V, C)) buffer per chunk: a chunk's matmuls must
# fill the GPU and launching its few dozen kernels must not dominate; at V = 500, C = 512 that
# is 65536 cells, a whole utterance of the benchmark, in 128 MB float32 buffers.
_CUDA_CHUNK_ELEMENTS = 1 << 25

# torch.nn activation module -> the name used below; the backward writes act' from act's output.
FUSABLE_ACTIVATIONS = {
    torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu", torch.nn.Sigmoid: "sigmoid", torch.nn.Identity: "identity",
}

_ACCEPTED = (
    "expected tlbench.data.batches.Joiner or torch.nn.Sequential(activation, torch.nn.Linear) with activation one of "
    + ", ".join(f"torch.nn.{cls.__name__}" for cls in FUSABLE_ACTIVATIONS)
)


def joiner_parts(joiner: torch.nn.Module) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """``joiner`` -> ``(activation, weight, bias)``, or ValueError if it cannot be fused.

    ``activation``: one of the values of :data:`FUSABLE_ACTIVATIONS`; ``weight``: ``(V, C)``;
    ``bias``: ``(V,)`` or None (the joiner's own parameters, not copies).
    """
    if isinstance(joiner, Joiner) and type(joiner).forward is Joiner.forward:
        activation, linear = "tanh", joiner.output_linear
    elif type(joiner) is torch.nn.Sequential and len(joiner) == 2 and type(joiner[0]) in FUSABLE_ACTIVATIONS:
        activation, linear = FUSABLE_ACTIVATIONS[type(joiner[0])], joiner[1]
    else:
        inner = ""
        if type(joiner) is torch.nn.Sequential:
            inner = "(" + ", ".join(type(m).__name__ for m in joiner) + ")"
        raise ValueError(f"joiner {type(joiner).__name__}{inner} cannot be fused; {_ACCEPTED}")
    if not isinstance(linear, torch.nn.Linear) or type(linear).forward is not torch.nn.Linear.forward:
        raise ValueError(f"joiner's linear layer is {type(linear).__name__}, not torch.nn.Linear; {_ACCEPTED}")
    weight, bias = linear.weight, linear.bias
    if isinstance(weight, torch.nn.parameter.UninitializedParameter):
        raise ValueError("joiner's linear layer is an uninitialised lazy module; run it once or use torch.nn.Linear")
    return activation, weight, bias


def _activate_(h: torch.Tensor, activation: str, one: torch.Tensor) -> None:
    """``h = act(h)`` in place; ``one``: a 0-dim tensor holding 1 (a Python scalar operand
    would allocate a tensor in the worker)."""
    if activation == "tanh":
        if h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
            # tanh(x) = 2 sigmoid(2 x) - 1: torch's CPU tanh kernel is ~10x slower than its
            # sigmoid; the absolute error stays at float rounding of values near 1 (<= 2e-7 in
            # float32), which is all the matmul after it sees.
            h.add_(h).sigmoid_()
            h.add_(h).sub_(one)
        else:
            h.tanh_()
    elif activation == "relu":
        h.relu_()
    elif activation == "sigmoid":
        h.sigmoid_()


def _activation_backward_(grad_h: torch.Tensor, h: torch.Tensor, activation: str) -> None:
    """``grad_h *= act'(pre)``, written from ``h = act(pre)``; overwrites ``h``."""
    if activation == "tanh":  # 1 - h^2
        h.mul_(h)
        grad_h.addcmul_(grad_h, h, value=-1)
    elif activation == "relu":  # 1 where h > 0 (pre > 0), else 0 (as threshold_backward)
        grad_h.mul_(h.sign_())
    elif activation == "sigmoid":  # h (1 - h)
        h.addcmul_(h, h, value=-1)
        grad_h.mul_(h)


class _Workspace:
    """One worker's buffers, allocated by the calling thread; the worker only takes views.

    ``K`` is the largest chunk's cell count. h: ``(K, C)`` input dtype; logits: ``(K, V)``
    input dtype; probs: ``(K, V)`` accumulation dtype (the (log-)softmax); upcast: ``(K, V)``
    float32 copy of the logits (float16/bfloat16 only, so that no kernel writes over its own
    input). Backward only, each None unless needed: grad_h ``(K, C)`` input dtype; grad_w
    ``(V, C)``, grad_b ``(V,)``, grad_dec ``(N, U + 1, C)`` (this worker's partial sums, zeroed),
    dec_rows ``(U + 1, C)``, b_row ``(V,)`` in the accumulation dtype; grad_w_chunk ``(V, C)``
    input dtype (float16/bfloat16 only: one chunk's matmul, before it is added in float32).
    ``backward``: None (forward) or ``(N, U + 1, need_w, need_b, need_h, need_dec)``.
    """

    def __init__(self, cells, dim, vocab, dtype, acc, device, backward=None):
        self.h = torch.empty(cells, dim, dtype=dtype, device=device)
        self.logits = torch.empty(cells, vocab, dtype=dtype, device=device)
        self.probs = torch.empty(cells, vocab, dtype=acc, device=device)
        self.upcast = torch.empty(cells, vocab, dtype=acc, device=device) if dtype != acc else None
        if backward is None:
            return
        n, u1, need_w, need_b, need_h, need_dec = backward
        zeros = dict(dtype=acc, device=device)
        self.grad_w = torch.zeros(vocab, dim, **zeros) if need_w else None
        self.grad_w_chunk = torch.empty(vocab, dim, dtype=dtype, device=device) if need_w and dtype != acc else None
        self.grad_b = torch.zeros(vocab, **zeros) if need_b else None
        self.b_row = torch.empty(vocab, **zeros) if need_b else None
        self.grad_h = torch.empty(cells, dim, dtype=dtype, device=device) if need_h else None
        self.grad_dec = torch.zeros(n, u1, dim, **zeros) if need_dec else None
        self.dec_rows = torch.empty(u1, dim, **zeros) if need_dec else None


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _pass_setup(enc, dec, weight, bias, labels, u_lens, activation):
    """What forward and backward both need: (dtype, accumulation dtype, device, the weight
    ``(V, C)`` in the inputs' dtype (no copy when the dtypes agree), the chunk function, each
    utterance's label index ``(1, U_i, 1)``)."""
    dtype, acc, device = enc.dtype, _accumulation_dtype(enc.dtype), enc.device
    w = weight.to(dtype)  # (V, C)
    b = None if bias is None else bias.to(dtype)
    index = [labels[i, :u].view(1, u, 1) for i, u in enumerate(u_lens)]  # (1, U_i, 1)
    return dtype, acc, device, w, _joiner_chunk(enc, dec, w, b, activation), index


def _plan(t_lens: Sequence[int], u_lens: Sequence[int], vocab: int, dim: int, device: torch.device, threads: int):
    """-> (tasks ``(i, t0, t1)``, largest chunk's cell count, number of workers)."""
    cells = _CPU_CHUNK_CELLS if device.type == "cpu" else max(1, _CUDA_CHUNK_ELEMENTS // max(vocab, dim))
    widths = [u + 1 for u in u_lens]
    tasks = frame_tasks(t_lens, widths, 1, cells)
    largest = max((t1 - t0) * widths[i] for i, t0, t1 in tasks)
    return tasks, largest, num_workers(threads, device, tasks)


def _joiner_chunk(enc, dec, w, b, activation):
    """-> ``chunk(space, i, t0, t1, width)``, which writes ``h = act(enc[i, t] + dec[i, u])`` and
    ``logits = h @ w^T + b`` of the cells ``t0 <= t < t1``, ``u < width`` into ``space`` and
    returns them: ``(cells, C)`` and ``(cells, V)`` views, input dtype. ``w``: ``(V, C)``,
    ``b``: ``(V,)`` or None, of ``enc``'s dtype."""
    dim = enc.size(2)
    w_t = w.t()  # (C, V)
    one = torch.ones((), dtype=enc.dtype, device=enc.device)

    def chunk(space, i, t0, t1, width):
        rows = t1 - t0
        cells = rows * width
        h = space.h[:cells]
        # (rows, 1, C) + (1, width, C) -> (rows, width, C)
        torch.add(enc[i, t0:t1].unsqueeze(1), dec[i, :width].unsqueeze(0), out=h.view(rows, width, dim))
        _activate_(h, activation, one)
        logits = space.logits[:cells]
        if b is None:
            torch.mm(h, w_t, out=logits)
        else:
            torch.addmm(b, h, w_t, out=logits)
        return h, logits

    return chunk


class _FusedJoinerLogProbs(torch.autograd.Function):
    """(encoder_out, decoder_out, weight, bias) -> blank and next-label log-probabilities.

    Forward args:
      encoder_out: ``(N, T, C)`` float; decoder_out: ``(N, U + 1, C)``, the same dtype.
      weight: ``(V, C)``; bias: ``(V,)`` or None (cast to the inputs' dtype for the matmuls).
      labels: ``(N, U)`` int64 (entries beyond ``U_i`` are not read).
      t_lens, u_lens: Python lists of ``T_i`` and ``U_i``.
      blank: the blank index, in ``[0, V)``.
      activation: a value of :data:`FUSABLE_ACTIVATIONS`.

    Returns ``(blank_lp, label_lp)``, two ``(N, T, U + 1)`` tensors of the accumulation dtype
    (float32 for float16/bfloat16 inputs, else the inputs' dtype), 0 outside utterance ``i``'s
    ``(T_i, U_i + 1)`` grid (``label_lp`` also at ``u = U_i``).
    """

    @staticmethod
    def forward(ctx, encoder_out, decoder_out, weight, bias, labels, t_lens, u_lens, blank, activation):
        with serial_kernels() as threads:
            args = (encoder_out, decoder_out, weight, bias, labels, t_lens, u_lens, blank, activation)
            return _FusedJoinerLogProbs._forward(ctx, threads, *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_blank, grad_label):
        with serial_kernels() as threads:
            grads = _FusedJoinerLogProbs._backward(ctx, threads, grad_blank, grad_label)
        return grads + (None,) * 5

    @staticmethod
    def _forward(ctx, threads, enc, dec, weight, bias, labels, t_lens, u_lens, blank, activation):
        n, t_max, dim = enc.shape
        u1_max = dec.size(1)
        dtype, acc, device, w, joiner_chunk, index = _pass_setup(enc, dec, weight, bias, labels, u_lens, activation)
        vocab = w.size(0)
        blank_lp = torch.zeros(n, t_max, u1_max, dtype=acc, device=device)
        label_lp = torch.zeros(n, t_max, u1_max, dtype=acc, device=device)
        tasks, largest, workers = _plan(t_lens, u_lens, vocab, dim, device, threads)
        spaces = [_Workspace(largest, dim, vocab, dtype, acc, device) for _ in range(workers)]

        def work(task, space):
            i, t0, t1 = task
            u_len = u_lens[i]
            rows, width = t1 - t0, u_len + 1
            cells = rows * width
            _, logits = joiner_chunk(space, i, t0, t1, width)
            if space.upcast is not None:  # the log-softmax runs in float32
                logits = space.upcast[:cells].copy_(logits)
            log_probs = space.probs[:cells]
            torch.ops.aten._log_softmax.out(logits, -1, False, out=log_probs)
            log_probs = log_probs.view(rows, width, vocab)  # (cells, V) -> (rows, width, V)
            blank_lp[i, t0:t1, :width].copy_(log_probs[:, :, blank])
            if u_len > 0:
                torch.gather(log_probs[:, :u_len], -1, index[i].expand(rows, u_len, 1),
                             out=label_lp[i, t0:t1, :u_len].unsqueeze(-1))

        run_tasks(work, tasks, spaces)
        del spaces
        ctx.save_for_backward(enc, dec, weight, bias, labels)
        ctx.layout = (t_lens, u_lens, blank, activation)
        return blank_lp, label_lp

    @staticmethod
    def _backward(ctx, threads, grad_blank, grad_label):
        enc, dec, weight, bias, labels = ctx.saved_tensors
        t_lens, u_lens, blank, activation = ctx.layout
        need_enc, need_dec, need_w, need_b = ctx.needs_input_grad[:4]
        need_b = need_b and bias is not None
        need_h = need_enc or need_dec
        n, t_max, dim = enc.shape
        u1_max = dec.size(1)
        dtype, acc, device, w, joiner_chunk, index = _pass_setup(enc, dec, weight, bias, labels, u_lens, activation)
        vocab = w.size(0)
        # Both come fresh from TransducerLogZ.backward and are read by nothing else: the loop
        # below reuses grad_blank in place as the weight w of the softmax.
        grad_blank = grad_blank.to(acc).contiguous()
        grad_label = grad_label.to(acc)
        tasks, largest, workers = _plan(t_lens, u_lens, vocab, dim, device, threads)
        grad_enc = torch.zeros(n, t_max, dim, dtype=acc, device=device) if need_enc else None
        backward = (n, u1_max, need_w, need_b, need_h, need_dec)
        spaces = [_Workspace(largest, dim, vocab, dtype, acc, device, backward) for _ in range(workers)]

        def work(task, space):
            i, t0, t1 = task
            u_len = u_lens[i]
            rows, width = t1 - t0, u_len + 1
            cells = rows * width
            h, logits = joiner_chunk(space, i, t0, t1, width)
            # d loss / d logits = w * softmax + g_blank at blank + g_label at the label, with
            # w = -(g_blank + g_label) per cell (as reference_loss's _BlankLabelLogProbs).
            grad = space.probs[:cells]
            src = logits if space.upcast is None else space.upcast[:cells].copy_(logits)
            torch.ops.aten._softmax.out(src, -1, False, out=grad)
            out = grad.view(rows, width, vocab)  # (cells, V) -> (rows, width, V)
            scale = grad_blank[i, t0:t1, :width]
            g_label = grad_label[i, t0:t1, :u_len]
            scale[:, :u_len].add_(g_label)
            scale.neg_()  # now w; g_blank = -w - g_label
            out.mul_(scale.unsqueeze(-1))
            out[..., blank].sub_(scale)
            if u_len > 0:
                out[:, :u_len, blank].sub_(g_label)
                out[:, :u_len].scatter_add_(-1, index[i].expand(rows, u_len, 1), g_label.unsqueeze(-1))
            if space.upcast is not None:  # the matmuls take the input dtype (and accumulate in float32)
                grad = logits.copy_(grad)
            if need_b:
                torch.sum(space.probs[:cells], 0, dtype=acc, out=space.b_row)
                space.grad_b.add_(space.b_row)
            if need_w:
                if space.grad_w_chunk is None:
                    space.grad_w.addmm_(grad.t(), h)
                else:
                    space.grad_w.add_(torch.mm(grad.t(), h, out=space.grad_w_chunk))
            if not need_h:
                return
            grad_h = space.grad_h[:cells]
            torch.mm(grad, w, out=grad_h)
            _activation_backward_(grad_h, h, activation)
            grad_h = grad_h.view(rows, width, dim)  # (cells, C) -> (rows, width, C)
            if need_enc:  # every frame belongs to one chunk: written, not accumulated
                torch.sum(grad_h, 1, dtype=acc, out=grad_enc[i, t0:t1])
            if need_dec:
                rows_sum = space.dec_rows[:width]
                torch.sum(grad_h, 0, dtype=acc, out=rows_sum)
                space.grad_dec[i, :width].add_(rows_sum)

        run_tasks(work, tasks, spaces)
        first = spaces[0]
        for other in spaces[1:]:  # the workers' partial sums
            for name in ("grad_w", "grad_b", "grad_dec"):
                if getattr(first, name) is not None:
                    getattr(first, name).add_(getattr(other, name))
        grad_dec = first.grad_dec.to(dec.dtype) if need_dec else None
        grad_w = first.grad_w.to(weight.dtype) if need_w else None
        grad_b = first.grad_b.to(bias.dtype) if need_b else None
        if grad_enc is not None:
            grad_enc = grad_enc.to(enc.dtype)
        return grad_enc, grad_dec, grad_w, grad_b


def _lengths(name: str, values: torch.Tensor, low: int, high: int, what: str) -> list[int]:
    out = [int(v) for v in values.tolist()]
    for i, v in enumerate(out):
        if not low <= v <= high:
            raise ValueError(f"{name}[{i}] = {v} is outside [{low}, {high}] ({what})")
    return out


def _validate(encoder_out, decoder_out, weight, bias, targets, logit_lengths, target_lengths, blank):
    """ValueError on a bad input; -> (labels int64, t_list, u_list, blank in [0, V))."""
    named = {"encoder_out": encoder_out, "decoder_out": decoder_out, "targets": targets,
             "logit_lengths": logit_lengths, "target_lengths": target_lengths}
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} is a {type(value).__name__}; expected a torch.Tensor")
    expected_dims = {"encoder_out": 3, "decoder_out": 3, "targets": 2, "logit_lengths": 1, "target_lengths": 1}
    shapes = {"encoder_out": "(N, T, C)", "decoder_out": "(N, U + 1, C)", "targets": "(N, U)",
              "logit_lengths": "(N,)", "target_lengths": "(N,)"}
    for name, dims in expected_dims.items():
        if named[name].dim() != dims:
            raise ValueError(f"{name} has shape {tuple(named[name].shape)}; expected {shapes[name]}")
    if not encoder_out.dtype.is_floating_point:
        raise ValueError(f"encoder_out dtype {encoder_out.dtype} is not allowed; expected a floating dtype "
                         "(float32 or float64; float16 or bfloat16 on CUDA)")
    if decoder_out.dtype != encoder_out.dtype:
        raise ValueError(f"decoder_out dtype {decoder_out.dtype} differs from encoder_out dtype {encoder_out.dtype}")
    if not weight.dtype.is_floating_point or (bias is not None and not bias.dtype.is_floating_point):
        raise ValueError(f"joiner weight dtype {weight.dtype} is not allowed; expected a floating dtype")
    for name in ("targets", "logit_lengths", "target_lengths"):
        if named[name].dtype.is_floating_point or named[name].dtype.is_complex or named[name].dtype == torch.bool:
            raise ValueError(f"{name} dtype {named[name].dtype} is not allowed; expected an integer dtype")
    device = encoder_out.device
    devices = dict(named, weight=weight) if bias is None else dict(named, weight=weight, bias=bias)
    for name, value in devices.items():
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but encoder_out is on {device}; all must be on one device")
    n = encoder_out.size(0)
    if n == 0:
        raise ValueError("encoder_out has batch size 0; expected at least one utterance")
    for name in ("decoder_out", "targets", "logit_lengths", "target_lengths"):
        if named[name].size(0) != n:
            raise ValueError(f"{name} has batch size {named[name].size(0)} but encoder_out has {n}")
    dim = encoder_out.size(2)
    if decoder_out.size(2) != dim:
        raise ValueError(f"decoder_out has C = {decoder_out.size(2)} but encoder_out has C = {dim}")
    if weight.dim() != 2 or weight.size(1) != dim:
        raise ValueError(f"joiner weight has shape {tuple(weight.shape)}; expected (V, {dim}), C of encoder_out")
    if decoder_out.size(1) != targets.size(1) + 1:
        raise ValueError(f"decoder_out has {decoder_out.size(1)} label positions; expected targets.size(1) + 1 = "
                         f"{targets.size(1) + 1}")
    vocab = weight.size(0)
    if -vocab <= blank < 0:  # as in torchaudio: -1 is the last symbol
        blank += vocab
    if not 0 <= blank < vocab:
        raise ValueError(f"blank = {blank} is outside [0, {vocab}) (V = the joiner's output size; "
                         "negative values count from the end)")
    t_list = _lengths("logit_lengths", logit_lengths, 1, encoder_out.size(1), "T = encoder_out.size(1)")
    u_list = _lengths("target_lengths", target_lengths, 0, targets.size(1), "U = targets.size(1)")
    labels = targets.to(torch.int64)  # no copy when already int64
    if labels.size(1) > 0:
        u_lens = torch.tensor(u_list, device=device)
        real = torch.arange(labels.size(1), device=device).view(1, -1) < u_lens.view(-1, 1)
        bad = ((labels < 0) | (labels >= vocab)) & real
        if bool(bad.any()):
            i, u = (int(k) for k in bad.nonzero()[0].tolist())
            raise ValueError(f"targets[{i}, {u}] = {int(labels[i, u])} is outside [0, {vocab}) "
                             "(V = the joiner's output size)")
    return labels, t_list, u_list, blank


def fused_transducer_loss(
    encoder_out: torch.Tensor,
    decoder_out: torch.Tensor,
    joiner: torch.nn.Module,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    one_sym_per_frame: bool = False,
) -> torch.Tensor:
    """RNN-T loss of ``joiner(encoder_out.unsqueeze(2) + decoder_out.unsqueeze(1))``, fused.

    The same value and gradients as ``tlbench.losses.reference.rnnt_loss`` (and
    ``torchaudio.functional.rnnt_loss``) on the materialised logits, which are never built.

    Args:
      encoder_out: ``(N, T, C)`` float32 or float64 (float16 / bfloat16 meant for CUDA); frames
        beyond ``T_i`` are ignored (their gradient is zero).
      decoder_out: ``(N, U + 1, C)``, the dtype of ``encoder_out``; label positions beyond
        ``U_i`` are ignored (zero gradient).
      joiner: ``logits = Linear(act(encoder_out[n, t] + decoder_out[n, u]))``:
        ``tlbench.data.batches.Joiner`` or ``torch.nn.Sequential(act, torch.nn.Linear(C, V))`` with
        ``act`` one of ``torch.nn.Tanh``, ``ReLU``, ``Sigmoid``, ``Identity``; the Linear with
        or without bias. Only its parameters are used (not its ``forward`` or hooks); their
        gradients are accumulated into ``.grad`` as usual.
      targets: ``(N, U)`` integer labels in ``[0, V)`` (entries beyond ``U_i`` are ignored).
      logit_lengths: ``(N,)`` integer ``T_i`` (``1 <= T_i <= T``).
      target_lengths: ``(N,)`` integer ``U_i`` (``0 <= U_i <= U``).
      blank: index of the blank symbol (negative: counted from the end, as in torchaudio).
      reduction: ``"mean"`` (mean over the batch), ``"sum"`` or ``"none"`` (``(N,)`` losses).
      one_sym_per_frame: the modified transducer (at most one label per frame); an utterance
        with no alignment (``T_i < U_i + 1``) gets ``+inf`` and a zero gradient.

    Returns:
      the loss, a scalar (or ``(N,)`` for ``"none"``) of ``encoder_out``'s dtype; the
      per-utterance losses and their reduction are computed in float64 and rounded once.

    Raises:
      ValueError: a joiner it cannot fuse, or a bad input (shapes, lengths, labels, blank,
        dtypes, devices); the message names the value.

    Notes:
      Memory: see the module docstring (no tensor of ``(N, T, U + 1, V)`` or
      ``(N, T, U + 1, C)`` elements; ``O(N T U)`` plus one chunk per worker thread). On CPU the
      chunk passes are shared by ``torch.get_num_threads()`` worker threads running
      single-threaded kernels; meanwhile the process-wide intra-op thread count is 1, and it is
      restored when forward and backward return.
    """
    check_reduction(reduction)
    activation, weight, bias = joiner_parts(joiner)
    labels, t_list, u_list, blank = _validate(encoder_out, decoder_out, weight, bias, targets, logit_lengths,
                                              target_lengths, blank)
    device = encoder_out.device
    blank_lp, label_lp = _FusedJoinerLogProbs.apply(encoder_out, decoder_out, weight, bias, labels, t_list, u_list,
                                                     blank, activation)
    grid = (encoder_out.size(0), encoder_out.size(1), decoder_out.size(1))
    t_lens = torch.tensor(t_list, dtype=torch.int64, device=device)
    u_lens = torch.tensor(u_list, dtype=torch.int64, device=device)
    log_z = TransducerLogZ.apply(blank_lp, label_lp, None, None, grid, t_lens, u_lens, bool(one_sym_per_frame))
    return reduce_losses(-log_z, reduction, encoder_out.dtype)
