"""Tests of tlbench.losses.reference: brute force, gradcheck, torchaudio, optimized_transducer."""

from __future__ import annotations

import math

import optimized_transducer
import pytest
import torch
import torchaudio.functional
from brute_force import brute_force

from tlbench.losses.reference import rnnt_loss, rnnt_loss_packed

# ----------------------------------------------------------------------------- helpers


def make_batch(shapes, vocab, dtype=torch.float64, seed=0, pad_t=0, pad_u=0):
    """Random 4-D logits (N, T_max + pad_t, U_max + 1 + pad_u, V), int32 targets (N, U_max)
    in 1..V-1, int32 lengths (N,)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(shapes)
    t_max = max(t for t, _ in shapes) + pad_t
    u_max = max(u for _, u in shapes)
    logits = torch.randn(n, t_max, u_max + 1 + pad_u, vocab, generator=gen, dtype=dtype)
    targets = torch.randint(1, vocab, (n, max(u_max, 1)), generator=gen, dtype=torch.int32)
    t_lens = torch.tensor([t for t, _ in shapes], dtype=torch.int32)
    u_lens = torch.tensor([u for _, u in shapes], dtype=torch.int32)
    return logits, targets, t_lens, u_lens


def pack(logits, t_lens, u_lens):
    """(N, T, U + 1, V) -> (sum_i T_i (U_i + 1), V), utterance grids concatenated."""
    return torch.cat(
        [logits[i, :t, : u + 1].reshape(-1, logits.size(-1)) for i, (t, u) in enumerate(zip(t_lens.tolist(), u_lens.tolist()))]
    )



TINY_SHAPES = [(t, u) for t in range(1, 5) for u in range(0, 4)]

# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("one_sym", [False, True])
def test_matches_brute_force_float64(one_sym):
    logits, targets, t_lens, u_lens = make_batch(TINY_SHAPES, vocab=5, seed=1)
    losses = rnnt_loss(logits, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)
    packed = rnnt_loss_packed(pack(logits, t_lens, u_lens), targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)
    assert losses.dtype == torch.float64
    for i, (t, u) in enumerate(TINY_SHAPES):
        exact = brute_force(logits[i, :t, : u + 1].log_softmax(-1), targets[i, :u].tolist(), one_sym)
        expected = math.inf if exact is None else float(exact)
        if math.isinf(expected):  # modified transducer with T < U + 1: no alignment
            assert one_sym and t < u + 1
            assert math.isinf(losses[i]) and math.isinf(packed[i])
        else:
            assert abs(float(losses[i]) - expected) <= 1e-10 * max(1.0, abs(expected)), (t, u)
            assert abs(float(packed[i]) - expected) <= 1e-10 * max(1.0, abs(expected)), (t, u)


@pytest.mark.parametrize("one_sym", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_float64(one_sym, packed):
    shapes = [(3, 2), (1, 0), (2, 0), (3, 1), (2, 1)] if one_sym else [(3, 2), (1, 0), (2, 0), (1, 2), (2, 1)]
    logits, targets, t_lens, u_lens = make_batch(shapes, vocab=3, seed=2, pad_t=1, pad_u=1)
    fn = rnnt_loss_packed if packed else rnnt_loss
    x = pack(logits, t_lens, u_lens) if packed else logits
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: fn(z, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym), (x,))


def _padding_mask(logits, t_lens, u_lens):
    mask = torch.zeros(logits.shape[:3], dtype=torch.bool)
    for i, (t, u) in enumerate(zip(t_lens.tolist(), u_lens.tolist())):
        mask[i, :t, : u + 1] = True
    return ~mask


SHAPES = [(7, 3), (1, 0), (5, 0), (1, 4), (9, 6), (3, 2), (6, 5)]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_torchaudio_float32(reduction):
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=11, dtype=torch.float32, seed=3)
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    expected = torchaudio.functional.rnnt_loss(x1, targets, t_lens, u_lens, blank=0, reduction=reduction)
    got = rnnt_loss(x2, targets, t_lens, u_lens, blank=0, reduction=reduction)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    (g1,) = torch.autograd.grad(expected.sum(), x1)
    (g2,) = torch.autograd.grad(got.sum(), x2)
    assert g2.dtype == torch.float32
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-5 * float(g1.abs().max()))


def test_blank_index_other_than_zero():
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=9, dtype=torch.float32, seed=4)
    targets = targets - 1  # labels 0..7, blank = 8
    expected = torchaudio.functional.rnnt_loss(logits, targets, t_lens, u_lens, blank=8, reduction="none")
    got = rnnt_loss(logits, targets, t_lens, u_lens, blank=8, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(rnnt_loss(logits, targets, t_lens, u_lens, blank=-1, reduction="none"), got)


def test_non_contiguous_logits_and_int64_targets():
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=6, seed=12)
    strided = logits.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    plain = logits.clone().requires_grad_()
    a = rnnt_loss(strided, targets.long(), t_lens.long(), u_lens.long(), reduction="sum")
    b = rnnt_loss(plain, targets, t_lens, u_lens, reduction="sum")
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(strided.grad, plain.grad)


@pytest.mark.parametrize("one_sym", [False, True])
def test_packed_equals_4d(one_sym):
    shapes = [(7, 3), (1, 0), (5, 0), (9, 6), (3, 2), (6, 5)]
    logits, targets, t_lens, u_lens = make_batch(shapes, vocab=13, dtype=torch.float32, seed=5, pad_t=2, pad_u=1)
    x4 = logits.clone().requires_grad_()
    xp = pack(logits, t_lens, u_lens).requires_grad_()
    l4 = rnnt_loss(x4, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)
    lp = rnnt_loss_packed(xp, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=one_sym)
    torch.testing.assert_close(lp, l4, rtol=1e-6, atol=0)
    l4.sum().backward()
    lp.sum().backward()
    torch.testing.assert_close(xp.grad, pack(x4.grad, t_lens, u_lens), rtol=1e-6, atol=1e-7)
    assert not x4.grad[_padding_mask(logits, t_lens, u_lens)].any()


@pytest.mark.parametrize("one_sym", [False, True])
def test_matches_optimized_transducer(one_sym):
    shapes = [(7, 3), (1, 0), (5, 0), (9, 6), (3, 2), (6, 5), (4, 3)]
    logits, targets, t_lens, u_lens = make_batch(shapes, vocab=10, dtype=torch.float32, seed=6)
    packed = pack(logits, t_lens, u_lens)
    x_ot = packed.clone().requires_grad_()  # optimized_transducer overwrites its input with the gradient
    x_ref = packed.clone().requires_grad_()
    expected = optimized_transducer.transducer_loss(
        x_ot, targets, t_lens, u_lens, blank=0, reduction="sum", from_log_softmax=False, one_sym_per_frame=one_sym
    )
    (g_ot,) = torch.autograd.grad(expected, x_ot)
    g_ot = g_ot.detach()
    got = rnnt_loss_packed(x_ref, targets, t_lens, u_lens, blank=0, reduction="sum", one_sym_per_frame=one_sym)
    (g_ref,) = torch.autograd.grad(got, x_ref)
    torch.testing.assert_close(got, expected.reshape(()), rtol=1e-5, atol=0)
    torch.testing.assert_close(g_ref, g_ot, rtol=1e-5, atol=1e-5 * float(g_ot.abs().max()))


# ----------------------------------------------------------------------------- behaviour


def test_reductions():
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=6, seed=7)
    none = rnnt_loss(logits, targets, t_lens, u_lens, reduction="none")
    assert none.shape == (len(SHAPES),)
    torch.testing.assert_close(rnnt_loss(logits, targets, t_lens, u_lens, reduction="sum"), none.sum())
    torch.testing.assert_close(rnnt_loss(logits, targets, t_lens, u_lens, reduction="mean"), none.mean())
    torch.testing.assert_close(rnnt_loss(logits, targets, t_lens, u_lens), none.mean())  # default: mean
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, targets, t_lens, u_lens, reduction="max")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("packed", [False, True])
def test_gradient_dtype(dtype, packed):
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=6, dtype=dtype, seed=8)
    x = (pack(logits, t_lens, u_lens) if packed else logits).requires_grad_()
    loss = (rnnt_loss_packed if packed else rnnt_loss)(x, targets, t_lens, u_lens)
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype and x.grad.shape == x.shape


def test_padding_is_ignored():
    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=8, dtype=torch.float32, seed=9, pad_t=2, pad_u=2)
    pad = _padding_mask(logits, t_lens, u_lens)
    dirty = logits.clone()
    dirty[pad] = float("nan")
    x_clean = logits.clone().requires_grad_()
    x_dirty = dirty.requires_grad_()
    clean = rnnt_loss(x_clean, targets, t_lens, u_lens, reduction="sum")
    noisy = rnnt_loss(x_dirty, targets, t_lens, u_lens, reduction="sum")
    torch.testing.assert_close(noisy, clean, rtol=0, atol=0)
    clean.backward()
    noisy.backward()
    torch.testing.assert_close(x_dirty.grad, x_clean.grad, rtol=0, atol=0)
    assert not x_clean.grad[pad].any()


def test_infeasible_modified_alignment_is_inf_with_zero_gradient():
    logits, targets, t_lens, u_lens = make_batch([(2, 3), (4, 2)], vocab=5, seed=10)
    x = logits.requires_grad_()
    losses = rnnt_loss(x, targets, t_lens, u_lens, reduction="none", one_sym_per_frame=True)
    values = losses.detach()
    assert math.isinf(values[0]) and values[0] > 0 and math.isfinite(values[1])
    losses[1].backward()
    assert torch.isfinite(x.grad).all() and not x.grad[0].any()


def test_float32_accuracy_on_a_long_utterance():
    """The recursion runs in float64: float32 logits lose only the float32 log-softmax rounding."""
    logits, targets, t_lens, u_lens = make_batch([(300, 80), (250, 3)], vocab=64, dtype=torch.float64, seed=11)
    exact = rnnt_loss(logits, targets, t_lens, u_lens, reduction="none")
    single = rnnt_loss(logits.float(), targets, t_lens, u_lens, reduction="none")
    torch.testing.assert_close(single.double(), exact, rtol=2e-7, atol=0)


def test_bad_inputs():
    logits, targets, t_lens, u_lens = make_batch([(3, 2)], vocab=5)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, t_lens + 5, u_lens)  # longer than the logits
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets + 10, t_lens, u_lens)  # label outside the vocabulary
    with pytest.raises(ValueError):
        rnnt_loss_packed(pack(logits, t_lens, u_lens)[1:], targets, t_lens, u_lens)  # wrong row count
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, t_lens, u_lens, blank=5)


@pytest.mark.parametrize("packed", [False, True])
def test_chunks_and_threads_do_not_change_results(monkeypatch, packed):
    """Many small chunks per utterance, shared by worker threads or run inline: same numbers;
    the caller's intra-op thread count is left as it was."""
    import tlbench.losses.reference as reference

    logits, targets, t_lens, u_lens = make_batch(SHAPES, vocab=9, dtype=torch.float32, seed=13, pad_t=1)
    source = pack(logits, t_lens, u_lens) if packed else logits
    fn = rnnt_loss_packed if packed else rnnt_loss

    def loss_and_grad():
        x = source.clone().requires_grad_()
        loss = fn(x, targets, t_lens, u_lens, reduction="sum")
        loss.backward()
        return loss.detach(), x.grad

    expected = loss_and_grad()
    threads = torch.get_num_threads()
    monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", 2 * 9 * 7)  # two frames of the widest grid
    for num_threads in (1, 2):
        torch.set_num_threads(num_threads)
        try:
            got = loss_and_grad()
            assert torch.get_num_threads() == num_threads
        finally:
            torch.set_num_threads(threads)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("t_len, u_len", [(7, 0), (1, 3), (1, 0)])
def test_float64_degenerate_grids_backward(t_len, u_len):
    # T = 1 or U + 1 = 1 makes the (N, U+1, T) transpose contiguous already: the recursion
    # must still work on its own copy, not alias the autograd input.
    from tlbench.losses.reference import rnnt_loss

    logits = torch.randn(2, t_len, u_len + 1, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 6, (2, u_len))
    lengths = torch.tensor([t_len, t_len]), torch.tensor([u_len, u_len])
    loss = rnnt_loss(logits, targets, *lengths, blank=0, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
