"""NeMo's graph RNN-T loss (benchmark_nemo_graph.py: GraphRnntLoss on the real k2) against
torchaudio, and its row without NeMo or k2.

Optional like ``nemo`` (``bash scripts/setup.sh --with nemo``; the test command installs it),
and it needs the real k2 (scripts/setup.sh builds it): the tests that run the loss skip
themselves without either. Its row without NeMo is tested with nemo's in tests/test_nemo.py.
"""

import sys

import pytest
import torch
from conftest import TINY_RUN_FLAGS, assert_losses_agree, run_summaries

import tlbench.implementations.nemo_graph as nemo_graph


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("k2", reason="k2 is not installed (scripts/setup.sh builds it from source)")
    pytest.importorskip("nemo", reason="NeMo is not installed (bash scripts/setup.sh --with nemo)")
    return nemo_graph.load_backend()


def random_problem(shapes, vocab_size, seed=0):
    """Logits (N, T_max, U_max + 1, V) float32, targets (N, U_max) int64 in [1, V), int64 lengths."""
    gen = torch.Generator().manual_seed(seed)
    t_max, u_max = max(t for t, _ in shapes), max(u for _, u in shapes)
    logits = 2 * torch.randn(len(shapes), t_max, u_max + 1, vocab_size, generator=gen)
    targets = torch.randint(1, vocab_size, (len(shapes), u_max), generator=gen)
    logit_lengths = torch.tensor([t for t, _ in shapes])
    target_lengths = torch.tensor([u for _, u in shapes])
    return logits, targets, logit_lengths, target_lengths


def torchaudio_losses(logits, targets, logit_lengths, target_lengths):
    import torchaudio.functional

    x = logits.clone().requires_grad_()
    losses = torchaudio.functional.rnnt_loss(x, targets.int(), logit_lengths.int(), target_lengths.int(), blank=0,
                                             reduction="none")
    losses.sum().backward()
    return losses.detach(), x.grad


def relative_error(value, expected):
    return ((value.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


# mixed lengths, U_i = 0 beside U_i > 0, T_i = 1, and a vocabulary of 4096
PROBLEMS = [([(12, 5), (7, 5), (9, 2)], 40), ([(1, 0), (6, 0), (9, 4)], 24), ([(1, 3), (1, 1), (8, 2)], 20),
            ([(6, 2), (4, 3)], 4096)]


def test_backend_names_both_libraries(backend):
    import importlib.metadata

    assert backend.name == "nemo"
    assert backend.version == f"{importlib.metadata.version('nemo-toolkit')}, k2 {importlib.metadata.version('k2')}"
    assert "nemo.collections.asr" not in sys.modules  # the ASR collection's __init__ never ran


@pytest.mark.parametrize("shapes,vocab_size", PROBLEMS)
def test_per_utterance_loss_and_gradient_match_torchaudio(backend, shapes, vocab_size):
    logits, targets, logit_lengths, target_lengths = random_problem(shapes, vocab_size)
    x = logits.clone().requires_grad_()
    losses = nemo_graph.per_utterance(backend, x, targets, logit_lengths, target_lengths)
    losses.sum().backward()
    expected, expected_grad = torchaudio_losses(logits, targets, logit_lengths, target_lengths)
    assert losses.shape == (len(shapes),)
    assert relative_error(losses.detach(), expected) <= 1e-5
    assert relative_error(x.grad, expected_grad) <= 1e-4


def test_a_wrong_target_changes_the_loss(backend):
    """The comparison above can fail: another label sequence gives another loss."""
    logits, targets, logit_lengths, target_lengths = random_problem([(10, 4)], 30, seed=2)
    changed = targets.clone()
    changed[0, 0] = 1 + changed[0, 0] % 29
    right = nemo_graph.per_utterance(backend, logits, targets, logit_lengths, target_lengths)
    wrong = nemo_graph.per_utterance(backend, logits, changed, logit_lengths, target_lengths)
    assert abs(right.item() - wrong.item()) > 1e-3


def test_benchmark_run_agrees_with_torchaudio(backend, tiny_shape_info, tmp_path):
    flags = [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info]
    summaries = run_summaries(("torchaudio", "nemo_graph"), flags, str(tmp_path), "-2")
    summary = summaries["nemo_graph"]
    assert summary["backend"] == "nemo" and ", k2 " in summary["backend_version"]
    losses = {name: summary["loss_values"] for name, summary in summaries.items()}
    assert len(losses["nemo_graph"]) == 2
    assert_losses_agree(losses)
