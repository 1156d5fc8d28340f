"""Tests of tlbench.losses.fused: brute force, float64 oracle, gradcheck, peers, memory, bad input."""

from __future__ import annotations

import math
import os
import warnings

import optimized_transducer
import pytest
import torch
import torchaudio.functional
from brute_force import brute_force

import tlbench.losses.fused as fused
from tlbench.data.batches import Joiner
from tlbench.losses.fused import fused_transducer_loss
from tlbench.losses.reference import rnnt_loss

# ----------------------------------------------------------------------------- helpers

ACTIVATIONS = {"joiner": None, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid,
               "identity": torch.nn.Identity}


def make_joiner(dim, vocab, activation="joiner", bias=True, dtype=torch.float64, seed=0):
    """``tlbench.data.batches.Joiner`` (activation "joiner") or ``Sequential(act, Linear)``, weights of ``dtype``."""
    torch.manual_seed(seed)
    if activation == "joiner":
        joiner = Joiner(dim, vocab)
        if not bias:
            joiner.output_linear = torch.nn.Linear(dim, vocab, bias=False)
    else:
        joiner = torch.nn.Sequential(ACTIVATIONS[activation](), torch.nn.Linear(dim, vocab, bias=bias))
    return joiner.to(dtype)


def linear_of(joiner):
    return joiner.output_linear if isinstance(joiner, Joiner) else joiner[1]


def make_inputs(shapes, dim, dtype=torch.float64, seed=0, pad_t=0, pad_u=0, vocab=7):
    """enc (N, T_max + pad_t, C), dec (N, U_max + 1 + pad_u, C) in [-1.5, 1.5), int32 targets
    (N, U_max + pad_u) in 1..V-1, int32 lengths (N,)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(shapes)
    t_max = max(t for t, _ in shapes) + pad_t
    u_max = max(u for _, u in shapes) + pad_u
    enc = (torch.rand(n, t_max, dim, generator=gen, dtype=dtype) * 3 - 1.5).requires_grad_()
    dec = (torch.rand(n, u_max + 1, dim, generator=gen, dtype=dtype) * 3 - 1.5).requires_grad_()
    targets = torch.randint(1, vocab, (n, u_max), generator=gen, dtype=torch.int32)
    t_lens = torch.tensor([t for t, _ in shapes], dtype=torch.int32)
    u_lens = torch.tensor([u for _, u in shapes], dtype=torch.int32)
    return enc, dec, targets, t_lens, u_lens


def leaves(enc, dec, joiner):
    linear = linear_of(joiner)
    return [enc, dec, linear.weight] + ([linear.bias] if linear.bias is not None else [])


def fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="sum", one_sym=False, blank=0):
    """-> (loss, [grad enc, dec, weight, (bias)]) of the fused loss (summed over finite losses)."""
    loss = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, blank=blank, reduction=reduction,
                                 one_sym_per_frame=one_sym)
    finite = loss[torch.isfinite(loss)] if loss.dim() else loss
    grads = torch.autograd.grad(finite.sum(), leaves(enc, dec, joiner), allow_unused=False)
    return loss.detach(), list(grads)


def materialised_logits(enc, dec, joiner, dtype=torch.float64):
    """joiner(enc.unsqueeze(2) + dec.unsqueeze(1)) in ``dtype`` (the joiner's weights cast too,
    differentiably): (N, T, U + 1, V)."""
    linear = linear_of(joiner)
    act = {"Joiner": torch.tanh, "Tanh": torch.tanh, "ReLU": torch.relu, "Sigmoid": torch.sigmoid,
           "Identity": lambda x: x}[type(joiner).__name__ if isinstance(joiner, Joiner) else type(joiner[0]).__name__]
    # (N, T, 1, C) + (N, 1, U + 1, C) -> (N, T, U + 1, C)
    joined = act(enc.to(dtype).unsqueeze(2) + dec.to(dtype).unsqueeze(1))
    bias = None if linear.bias is None else linear.bias.to(dtype)
    return torch.nn.functional.linear(joined, linear.weight.to(dtype), bias)


def oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="sum", one_sym=False, blank=0):
    """The float64 oracle: reference_loss.rnnt_loss on float64 materialised logits."""
    logits = materialised_logits(enc, dec, joiner)
    loss = rnnt_loss(logits, targets, t_lens, u_lens, blank=blank, reduction=reduction, one_sym_per_frame=one_sym)
    finite = loss[torch.isfinite(loss)] if loss.dim() else loss
    grads = torch.autograd.grad(finite.sum(), leaves(enc, dec, joiner))
    return loss.detach(), list(grads)


def assert_grads_close(got, expected, rtol):
    for name, g, e in zip(["encoder_out", "decoder_out", "weight", "bias"], got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        scale = float(e.abs().max()) or 1.0
        torch.testing.assert_close(g, e, rtol=rtol, atol=rtol * scale, msg=lambda m, n=name: f"{n}: {m}")



TINY_SHAPES = [(t, u) for t in range(1, 5) for u in range(0, 4)]
SHAPES = [(7, 3), (1, 0), (5, 0), (1, 4), (9, 6), (3, 2), (6, 5)]

# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("one_sym", [False, True])
def test_matches_brute_force(one_sym):
    """Loss and all four gradients against enumerating every alignment (T <= 4, U <= 3)."""
    enc, dec, targets, t_lens, u_lens = make_inputs(TINY_SHAPES, dim=6, vocab=5, seed=1)
    joiner = make_joiner(6, 5, seed=1)
    losses = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="none",
                                   one_sym_per_frame=one_sym)
    assert losses.dtype == torch.float64 and losses.shape == (len(TINY_SHAPES),)
    log_probs = materialised_logits(enc, dec, joiner).log_softmax(-1)
    values = losses.detach()
    expected_terms = []
    for i, (t, u) in enumerate(TINY_SHAPES):
        expected = brute_force(log_probs[i, :t, : u + 1], targets[i, :u].tolist(), one_sym)
        if expected is None:  # modified transducer with T < U + 1: no alignment
            assert one_sym and t < u + 1
            assert math.isinf(values[i]) and values[i] > 0
            continue
        expected_terms.append(expected)
        value = float(expected.detach())
        assert abs(float(values[i]) - value) <= 1e-10 * max(1.0, abs(value)), (t, u)
    finite = losses[torch.isfinite(losses)]
    got = torch.autograd.grad(finite.sum(), leaves(enc, dec, joiner))
    want = torch.autograd.grad(torch.stack(expected_terms).sum(), leaves(enc, dec, joiner))
    assert_grads_close(list(got), list(want), rtol=1e-9)


@pytest.mark.parametrize("one_sym", [False, True])
@pytest.mark.parametrize("activation, bias", [("joiner", True), ("joiner", False), ("tanh", True), ("relu", True),
                                              ("sigmoid", False), ("identity", True)])
def test_matches_float64_oracle(activation, bias, one_sym):
    shapes = SHAPES + [(8, 7), (4, 4)] if one_sym else SHAPES
    enc, dec, targets, t_lens, u_lens = make_inputs(shapes, dim=12, vocab=9, seed=2)
    joiner = make_joiner(12, 9, activation, bias, seed=2)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", one_sym=one_sym)
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", one_sym=one_sym)
    assert torch.equal(torch.isinf(loss), torch.isinf(want))
    finite = torch.isfinite(want)
    torch.testing.assert_close(loss[finite], want[finite], rtol=1e-10, atol=0)
    assert_grads_close(grads, want_grads, rtol=1e-9)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("one_sym", [False, True])
def test_reductions(reduction, one_sym):
    shapes = [(7, 3), (1, 0), (5, 0), (9, 6), (3, 2), (6, 5)]  # feasible for both variants
    enc, dec, targets, t_lens, u_lens = make_inputs(shapes, dim=8, vocab=6, seed=3)
    joiner = make_joiner(8, 6, seed=3)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction=reduction, one_sym=one_sym)
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction=reduction, one_sym=one_sym)
    assert loss.shape == want.shape == ((len(shapes),) if reduction == "none" else ())
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=0)
    assert_grads_close(grads, want_grads, rtol=1e-9)
    none = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)
    default = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, one_sym_per_frame=one_sym)
    torch.testing.assert_close(default, none.mean())  # default: mean


def test_degenerate_grids_u0_and_t1():
    """U_i = 0 everywhere (decoder_out has one position), T_i = 1, and both together."""
    for shapes in ([(5, 0), (1, 0), (3, 0)], [(1, 3), (1, 0), (1, 1)], [(1, 0)]):
        enc, dec, targets, t_lens, u_lens = make_inputs(shapes, dim=5, vocab=4, seed=4)
        joiner = make_joiner(5, 4, seed=4)
        loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
        want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
        torch.testing.assert_close(loss, want, rtol=1e-10, atol=0)
        assert_grads_close(grads, want_grads, rtol=1e-9)


def test_padding_is_ignored():
    """Garbage in padded frames, label positions and targets changes nothing (bit for bit, with
    one thread: with more, the workers' partial sums of grad_W, grad_b and grad_dec may add up
    in another order); their gradient is 0."""
    enc, dec, targets, t_lens, u_lens = make_inputs(SHAPES, dim=8, vocab=7, seed=5, pad_t=2, pad_u=2)
    joiner = make_joiner(8, 7, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clean, dirty = _clean_and_dirty(enc, dec, joiner, targets, t_lens, u_lens)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(clean[0], dirty[0])
    for a, b in zip(clean[1], dirty[1]):
        assert torch.equal(a, b)
    grad_enc, grad_dec = clean[1][:2]
    for i, (t, u) in enumerate(SHAPES):
        assert not grad_enc[i, t:].any() and not grad_dec[i, u + 1 :].any()
    want = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens)
    torch.testing.assert_close(clean[0], want[0], rtol=1e-10, atol=0)
    assert_grads_close(clean[1], want[1], rtol=1e-9)


def _clean_and_dirty(enc, dec, joiner, targets, t_lens, u_lens):
    clean = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens)
    enc2, dec2, targets2 = enc.detach().clone(), dec.detach().clone(), targets.clone()
    for i, (t, u) in enumerate(zip(t_lens.tolist(), u_lens.tolist())):
        enc2[i, t:] = float("nan")
        dec2[i, u + 1 :] = float("inf")
        targets2[i, u:] = 10**6  # outside [0, V): beyond U_i it must not even be checked
    dirty = fused_and_grads(enc2.requires_grad_(), dec2.requires_grad_(), joiner, targets2, t_lens, u_lens)
    return clean, dirty


def test_infeasible_modified_alignment_is_inf_with_zero_gradient():
    enc, dec, targets, t_lens, u_lens = make_inputs([(2, 3), (4, 2)], dim=6, vocab=5, seed=6)
    joiner = make_joiner(6, 5, seed=6)
    losses = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=True)
    values = losses.detach()
    assert math.isinf(values[0]) and values[0] > 0 and math.isfinite(values[1])
    grad_enc, grad_dec = torch.autograd.grad(losses[0] * 0 + losses[1], [enc, dec])
    assert torch.isfinite(grad_enc).all() and not grad_enc[0].any() and not grad_dec[0].any()
    # The infeasible utterance alone: zero gradients everywhere, weight and bias included.
    alone = fused_transducer_loss(enc[:1], dec[:1], joiner, targets[:1], t_lens[:1], u_lens[:1], reduction="sum",
                                  one_sym_per_frame=True)
    grads = torch.autograd.grad(alone, leaves(enc, dec, joiner), allow_unused=True)
    for g in grads:
        assert g is None or not g.any()


@pytest.mark.parametrize("one_sym", [False, True])
def test_gradcheck_float64(one_sym):
    shapes = [(3, 2), (1, 0), (2, 1)] if one_sym else [(3, 2), (1, 0), (1, 2), (2, 1)]
    enc, dec, targets, t_lens, u_lens = make_inputs(shapes, dim=3, vocab=4, seed=7, pad_t=1)
    joiner = make_joiner(3, 4, seed=7)
    linear = linear_of(joiner)

    def fn(e, d, weight, bias):  # weight and bias are the joiner's own parameters, perturbed in place
        assert weight is linear.weight and bias is linear.bias
        return fused_transducer_loss(e, d, joiner, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)

    assert torch.autograd.gradcheck(fn, (enc, dec, linear.weight, linear.bias))


@pytest.mark.parametrize("requires", [(True, False, False, False), (False, True, True, False),
                                      (False, False, False, True)])
def test_only_the_requested_gradients(requires):
    """Inputs that do not require grad get none, and the others are still exact."""
    enc, dec, targets, t_lens, u_lens = make_inputs(SHAPES, dim=6, vocab=5, seed=8)
    joiner = make_joiner(6, 5, seed=8)
    tensors = leaves(enc, dec, joiner)
    want = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens)[1]
    for tensor, flag in zip(tensors, requires):
        tensor.requires_grad_(flag)
    loss = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="sum")
    loss.backward()
    for tensor, flag, expected in zip(tensors, requires, want):
        if flag:
            torch.testing.assert_close(tensor.grad, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
        else:
            assert tensor.grad is None


def test_blank_index_other_than_zero():
    enc, dec, targets, t_lens, u_lens = make_inputs(SHAPES, dim=6, vocab=9, seed=9)
    joiner = make_joiner(6, 9, seed=9)
    targets = targets - 1  # labels 0..7, blank = 8
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", blank=8)
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none", blank=8)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=0)
    assert_grads_close(grads, want_grads, rtol=1e-9)
    torch.testing.assert_close(fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, blank=-1,
                                                     reduction="none").detach(), loss)


def test_non_contiguous_inputs_int64_targets_and_float32_weights():
    """Strided encoder/decoder outputs, int64 targets and lengths, and a float32 joiner under
    float64 inputs (the matmuls run in the inputs' dtype; grad_W and grad_b come back float32)."""
    enc, dec, targets, t_lens, u_lens = make_inputs(SHAPES, dim=6, vocab=5, seed=17)
    joiner = make_joiner(6, 5, seed=17)
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens)
    strided_enc = enc.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    strided_dec = enc.new_empty(dec.shape + (2,))[..., 0].copy_(dec.detach()).requires_grad_()
    assert not strided_enc.is_contiguous() and not strided_dec.is_contiguous()
    loss, grads = fused_and_grads(strided_enc, strided_dec, joiner, targets.long(), t_lens.long(), u_lens.long())
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=0)
    assert_grads_close(grads, want_grads, rtol=1e-9)
    joiner32 = make_joiner(6, 5, dtype=torch.float32, seed=17)
    loss32, grads32 = fused_and_grads(enc, dec, joiner32, targets, t_lens, u_lens)
    assert loss32.dtype == torch.float64 and grads32[0].dtype == torch.float64 and grads32[2].dtype == torch.float32
    want32, want_grads32 = oracle_and_grads(enc, dec, joiner32, targets, t_lens, u_lens)
    torch.testing.assert_close(loss32, want32, rtol=1e-10, atol=0)
    assert_grads_close(grads32, want_grads32, rtol=1e-6)


# ----------------------------------------------------------------------------- peers (float32)


def float32_problem(shapes, dim, vocab, seed):
    enc, dec, targets, t_lens, u_lens = make_inputs(shapes, dim, dtype=torch.float32, seed=seed, vocab=vocab)
    return enc, dec, make_joiner(dim, vocab, dtype=torch.float32, seed=seed), targets, t_lens, u_lens


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_torchaudio_float32(reduction):
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(SHAPES, 16, 11, seed=10)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction=reduction)
    logits = joiner(enc.unsqueeze(2) + dec.unsqueeze(1))  # (N, T, U + 1, V)
    want = torchaudio.functional.rnnt_loss(logits, targets, t_lens, u_lens, blank=0, reduction=reduction)
    want_grads = torch.autograd.grad(want.sum(), leaves(enc, dec, joiner))
    assert loss.dtype == torch.float32 and loss.shape == want.shape
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=0)
    assert_grads_close(grads, list(want_grads), rtol=1e-5)


@pytest.mark.parametrize("one_sym", [False, True])
def test_matches_optimized_transducer_float32(one_sym):
    shapes = [(7, 3), (1, 0), (5, 0), (9, 6), (3, 2), (6, 5), (4, 3)]
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(shapes, 16, 10, seed=11)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="sum", one_sym=one_sym)
    # packed logits (sum_i T_i (U_i + 1), V), as tlbench.data.batches.packed_logits builds them
    grids = [(enc[i, :t].unsqueeze(1) + dec[i, : u + 1].unsqueeze(0)).reshape(-1, enc.size(-1))
             for i, (t, u) in enumerate(shapes)]
    logits = joiner(torch.cat(grids))
    want = optimized_transducer.transducer_loss(logits, targets, t_lens, u_lens, blank=0, reduction="sum",
                                                from_log_softmax=False, one_sym_per_frame=one_sym)
    want_grads = torch.autograd.grad(want, leaves(enc, dec, joiner))
    torch.testing.assert_close(loss, want.detach().reshape(()), rtol=1e-5, atol=0)
    assert_grads_close(grads, list(want_grads), rtol=1e-5)


def test_float32_matches_float64_oracle_on_a_long_utterance():
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem([(200, 60), (150, 3)], 32, 40, seed=12)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=0)
    assert_grads_close([g.double() for g in grads], [w.double() for w in want_grads], rtol=1e-5)


def test_bfloat16_accumulates_in_float32():
    """The float16/bfloat16 path (meant for CUDA; runs on CPU too): gradients in bfloat16,
    within bfloat16 rounding of the float64 oracle on the same (rounded) values."""
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(SHAPES, 16, 11, seed=13)
    enc = enc.detach().to(torch.bfloat16).requires_grad_()
    dec = dec.detach().to(torch.bfloat16).requires_grad_()
    joiner = joiner.to(torch.bfloat16)
    loss, grads = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    assert loss.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    want, want_grads = oracle_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    torch.testing.assert_close(loss.double(), want, rtol=1e-2, atol=0)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), rtol=0, atol=2e-2 * float(w.abs().max()))


# ----------------------------------------------------------------------------- threads and memory


def test_chunks_and_threads_do_not_change_results(monkeypatch):
    """Many small chunks shared by two worker threads, or run inline: the same numbers; the
    caller's intra-op thread count is left as it was."""
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(SHAPES, 16, 11, seed=14)
    expected = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens)
    threads = torch.get_num_threads()
    monkeypatch.setattr(fused, "_CPU_CHUNK_CELLS", 2 * 7)  # two frames of the widest grid
    for num_threads in (1, 2):
        torch.set_num_threads(num_threads)
        try:
            got = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens)
            assert torch.get_num_threads() == num_threads
        finally:
            torch.set_num_threads(threads)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=0)
        assert_grads_close(got[1], expected[1], rtol=1e-6)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_forward_only_modes(mode, monkeypatch):
    """Under no_grad / inference_mode (thread-local: the workers must enter it too) the loss is
    the same and has no graph."""
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(SHAPES, 16, 11, seed=18)
    expected = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="none").detach()
    monkeypatch.setattr(fused, "_CPU_CHUNK_CELLS", 2 * 7)  # many tasks, so that both workers run
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with getattr(torch, mode)():
            got = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    finally:
        torch.set_num_threads(threads)
    assert got.grad_fn is None
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def profiled_memory(fn):
    """-> (peak of the running sum of bytes allocated minus freed, number of allocations), as
    benchmark_loss_only.py's ``measure`` reads torch.profiler's memory events."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    total = peak = allocations = 0
    for event in events:
        total += event.nbytes()
        peak = max(peak, total)
        allocations += event.nbytes() > 0
    return peak, allocations


def memory_bound(n, t, u, vocab, dim, chunk_cells, workers):
    """Bytes the fused float32 loss may hold at once, from the sizes (module docstring):
    the lattice, at most 20 float64 values per cell of (N, T, U + 1) (the two log-prob
    tensors and the recursion's state and temporaries); per worker a chunk's h and grad_h
    (cells x C) and its logits and softmax (cells x V), partial grad_W, grad_b, grad_dec;
    the outputs grad_enc, grad_dec, grad_W, grad_b; 1 MB of slack."""
    width = u + 1
    chunk = max(1, chunk_cells // width) * width
    lattice = 20 * 8 * n * t * width
    per_worker = 4 * (chunk * (2 * dim + 2 * vocab) + vocab * dim + 2 * vocab + (n + 1) * width * dim)
    outputs = 4 * (n * t * dim + n * width * dim + vocab * dim + vocab)
    return lattice + workers * per_worker + outputs + (1 << 20)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_logits_are_never_materialised(num_threads, monkeypatch):
    """Peak memory of forward + backward, as the suite measures it, stays under the bound
    computed from the sizes, far below the (N, T, U + 1, V) logits; run inline (one thread),
    the number of allocations does not grow with the number of chunks (the workers allocate
    nothing)."""
    n, t, u, vocab, dim = 2, 120, 60, 1000, 64
    logits_bytes = 4 * n * t * (u + 1) * vocab
    assert logits_bytes >= 50 * 2**20
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem([(t, u)] * n, dim, vocab, seed=15)
    threads = torch.get_num_threads()

    def step():
        loss = fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens, reduction="sum")
        loss.backward()

    counts = []
    torch.set_num_threads(num_threads)
    try:
        for chunk_cells in (64, 512):
            monkeypatch.setattr(fused, "_CPU_CHUNK_CELLS", chunk_cells)
            peak, allocations = profiled_memory(step)
            bound = memory_bound(n, t, u, vocab, dim, chunk_cells, num_threads)
            assert peak <= bound, (peak, bound)
            assert peak < logits_bytes / 5, (peak, logits_bytes)
            counts.append(allocations)
    finally:
        torch.set_num_threads(threads)
    assert counts[0] == counts[1], counts  # 4x the chunks, not one allocation more


# ----------------------------------------------------------------------------- the joiner contract


@pytest.mark.parametrize("joiner", [
    torch.nn.Sequential(torch.nn.GELU(), torch.nn.Linear(6, 5)),
    torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()),
    torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(6, 5), torch.nn.Identity()),
    torch.nn.Linear(6, 5),
    torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Bilinear(6, 6, 5)),
], ids=["gelu", "linear-first", "three-modules", "bare-linear", "not-linear"])
def test_joiners_it_cannot_fuse(joiner):
    enc, dec, targets, t_lens, u_lens = make_inputs([(3, 2)], dim=6, dtype=torch.float32, vocab=5)
    with pytest.raises(ValueError, match=r"cannot be fused|not torch.nn.Linear") as info:
        fused_transducer_loss(enc, dec, joiner, targets, t_lens, u_lens)
    message = str(info.value)
    assert "\n" not in message and ("Sequential" in message or "Linear" in message or "Bilinear" in message)


def test_joiner_subclass_with_its_own_forward_is_refused():
    class Scaled(Joiner):
        def forward(self, joined):
            return 2 * super().forward(joined)

    enc, dec, targets, t_lens, u_lens = make_inputs([(3, 2)], dim=6, dtype=torch.float32, vocab=5)
    with pytest.raises(ValueError, match="joiner Scaled cannot be fused"):
        fused_transducer_loss(enc, dec, Scaled(6, 5), targets, t_lens, u_lens)


def test_joiner_parts():
    joiner = Joiner(6, 5)
    activation, weight, bias = fused.joiner_parts(joiner)
    assert activation == "tanh" and weight is joiner.output_linear.weight and bias is joiner.output_linear.bias
    sequential = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(6, 5, bias=False))
    assert fused.joiner_parts(sequential) == ("relu", sequential[1].weight, None)


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    enc, dec, targets, t_lens, u_lens = make_inputs([(3, 2), (2, 1)], dim=6, dtype=torch.float32, vocab=5)
    joiner = make_joiner(6, 5, dtype=torch.float32)
    good = dict(encoder_out=enc, decoder_out=dec, joiner=joiner, targets=targets, logit_lengths=t_lens,
                target_lengths=u_lens)
    return good, [
        ("enc-dims", dict(encoder_out=enc[0]), r"encoder_out has shape \(3, 6\); expected \(N, T, C\)"),
        ("dec-dims", dict(decoder_out=dec[..., 0]), r"decoder_out has shape \(2, 3\)"),
        ("targets-dims", dict(targets=targets[0]), r"targets has shape \(2,\)"),
        ("lengths-dims", dict(logit_lengths=t_lens.view(2, 1)), r"logit_lengths has shape \(2, 1\)"),
        ("dec-positions", dict(decoder_out=dec[:, :2]), "decoder_out has 2 label positions; expected targets.size"),
        ("dec-dim", dict(decoder_out=dec[..., :4]), "decoder_out has C = 4"),
        ("weight-dim", dict(joiner=make_joiner(4, 5, dtype=torch.float32)), r"joiner weight has shape \(5, 4\)"),
        ("t-too-long", dict(logit_lengths=t_lens + 1), r"logit_lengths\[0\] = 4 is outside \[1, 3\]"),
        ("t-zero", dict(logit_lengths=t_lens * 0), r"logit_lengths\[0\] = 0 is outside \[1, 3\]"),
        ("u-too-long", dict(target_lengths=u_lens + 1), r"target_lengths\[0\] = 3 is outside \[0, 2\]"),
        ("u-negative", dict(target_lengths=u_lens - 2), r"target_lengths\[1\] = -1 is outside \[0, 2\]"),
        ("batch-dec", dict(decoder_out=dec[:1]), "decoder_out has batch size 1 but encoder_out has 2"),
        ("batch-targets", dict(targets=targets[:1]), "targets has batch size 1"),
        ("batch-lengths", dict(target_lengths=u_lens[:1]), "target_lengths has batch size 1"),
        ("label-high", dict(targets=targets + 10), r"targets\[0, 0\] = \d+ is outside \[0, 5\)"),
        ("label-negative", dict(targets=targets - 10), r"targets\[0, 0\] = -\d+ is outside \[0, 5\)"),
        ("blank-high", dict(blank=5), r"blank = 5 is outside \[0, 5\)"),
        ("blank-low", dict(blank=-6), r"blank = -6 is outside \[0, 5\)"),
        ("int-enc", dict(encoder_out=enc.detach().long(), decoder_out=dec.detach().long()),
         "encoder_out dtype torch.int64 is not allowed"),
        ("mixed-dtypes", dict(decoder_out=dec.detach().double()), "decoder_out dtype torch.float64 differs"),
        ("float-targets", dict(targets=targets.float()), "targets dtype torch.float32 is not allowed"),
        ("float-lengths", dict(logit_lengths=t_lens.float()), "logit_lengths dtype torch.float32 is not allowed"),
        ("device", dict(targets=targets.to("meta")), "targets is on meta but encoder_out is on cpu"),
        ("not-a-tensor", dict(targets=targets.tolist()), "targets is a list; expected a torch.Tensor"),
        ("reduction", dict(reduction="max"), "reduction='max' is not allowed"),
        ("empty-batch", dict(encoder_out=enc[:0], decoder_out=dec[:0], targets=targets[:0], logit_lengths=t_lens[:0],
                             target_lengths=u_lens[:0]), "batch size 0"),
    ]


_GOOD, _CASES = _bad_cases()


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_bad_input(case):
    _, changes, pattern = case
    kwargs = dict(_GOOD, **changes)
    with pytest.raises(ValueError, match=pattern) as info:
        fused_transducer_loss(**kwargs)
    assert "\n" not in str(info.value)


def test_good_input_of_the_bad_input_cases():
    loss = fused_transducer_loss(**_GOOD)
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    enc, dec, joiner, targets, t_lens, u_lens = float32_problem(SHAPES, 16, 11, seed=16)
    cpu = fused_and_grads(enc, dec, joiner, targets, t_lens, u_lens, reduction="none")
    cuda_joiner = make_joiner(16, 11, dtype=torch.float32, seed=16).cuda().to(dtype)
    e = enc.detach().cuda().to(dtype).requires_grad_()
    d = dec.detach().cuda().to(dtype).requires_grad_()
    got = fused_and_grads(e, d, cuda_joiner, targets.cuda(), t_lens.cuda(), u_lens.cuda(), reduction="none")
    assert got[0].dtype == dtype and all(g.dtype == dtype for g in got[1])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got[0].cpu().float(), cpu[0], rtol=tol, atol=0)
    for g, w in zip(got[1], cpu[1]):
        torch.testing.assert_close(g.cpu().float(), w, rtol=0, atol=tol * float(w.abs().max()))
