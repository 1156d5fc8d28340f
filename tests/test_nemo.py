"""NeMo's numba RNN-T loss (benchmark_nemo.py) against torchaudio, and its row without NeMo.

NeMo is an optional install (``bash scripts/setup.sh --with nemo``): the tests that need it skip
themselves without it; the tests that hide it run everywhere, for nemo_graph's row too (its
loss is tested in tests/test_nemo_graph.py).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_DIR, TINY_RUN_FLAGS, assert_losses_agree, run_summaries

import tlbench.implementations.nemo
import tlbench.implementations.nemo_graph
from tlbench.implementations.declaration import BackendUnavailable


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("nemo.collections", reason="NeMo is not installed (bash scripts/setup.sh --with nemo)")
    return tlbench.implementations.nemo.load_backend()


def random_problem(shapes, vocab_size, seed=0):
    """Logits (N, T_max, U_max + 1, V) float32, targets (N, U_max) int32 in [1, V), int32 lengths."""
    gen = torch.Generator().manual_seed(seed)
    t_max, u_max = max(t for t, _ in shapes), max(u for _, u in shapes)
    logits = 2 * torch.randn(len(shapes), t_max, u_max + 1, vocab_size, generator=gen)
    targets = torch.randint(1, vocab_size, (len(shapes), u_max), generator=gen, dtype=torch.int32)
    logit_lengths = torch.tensor([t for t, _ in shapes], dtype=torch.int32)
    target_lengths = torch.tensor([u for _, u in shapes], dtype=torch.int32)
    return logits, targets, logit_lengths, target_lengths


def torchaudio_losses(logits, targets, logit_lengths, target_lengths):
    import torchaudio.functional

    x = logits.clone().requires_grad_()
    losses = torchaudio.functional.rnnt_loss(x, targets, logit_lengths, target_lengths, blank=0, reduction="none")
    losses.sum().backward()
    return losses.detach(), x.grad


def assert_close(value, expected, rtol):
    error = ((value.double() - expected.double()).abs().max() / expected.double().abs().max()).item()
    assert error <= rtol, (error, value, expected)


# U_i = 0 beside U_i > 0, T_i = 1 (with U_i = 0 and U_i > 0), and a vocabulary of 4096
PROBLEMS = [([(12, 5), (7, 5), (9, 2)], 40), ([(1, 0), (6, 0), (9, 4)], 24), ([(1, 3), (1, 1), (8, 2)], 20),
            ([(6, 2), (4, 3)], 4096)]


@pytest.mark.parametrize("shapes,vocab_size", PROBLEMS)
def test_per_utterance_loss_and_gradient_match_torchaudio(backend, shapes, vocab_size):
    logits, targets, logit_lengths, target_lengths = random_problem(shapes, vocab_size)
    x = logits.clone().requires_grad_()  # raw logits: RNNTLossNumba takes log_softmax itself on CPU
    losses = backend.module.none(x, targets.long(), logit_lengths.long(), target_lengths.long())
    losses.sum().backward()
    expected, expected_grad = torchaudio_losses(logits, targets, logit_lengths, target_lengths)
    assert losses.shape == (len(shapes),)
    assert_close(losses.detach(), expected, 1e-5)
    assert_close(x.grad, expected_grad, 1e-4)


def test_benchmark_loss_is_the_plain_sum_on_the_suites_batch(backend):
    # what the harness runs: random batch, joiner, 4-D logits, compute_loss with int32 inputs
    from tlbench.data.batches import Joiner, full_logits, make_batch

    torch.manual_seed(0)
    batch = make_batch([(15, 2), (7, 1), (11, 4)], vocab_size=40, dim=48, device=torch.device("cpu"))
    joiner = Joiner(48, 40)
    logits = full_logits(batch, joiner)
    loss, reported = tlbench.implementations.nemo.compute_loss(backend.module.sum, logits, batch, joiner)
    assert loss.dim() == 0 and reported is loss
    expected, _ = torchaudio_losses(logits.detach(), batch.targets, batch.logit_lengths, batch.target_lengths)
    assert_close(loss.detach(), expected.sum(), 1e-6)  # a sum, not divided by T_i, U_i or N
    loss.backward()
    assert batch.encoder_out.grad is not None and torch.isfinite(batch.encoder_out.grad).all()


def test_verify_variant_returns_per_utterance_losses_and_logit_gradient(backend):
    logits, targets, logit_lengths, target_lengths = random_problem([(9, 3), (1, 0)], 16, seed=1)

    class Problem:  # the fields and methods of tlbench.tools.verify.Problem that compute uses
        num_cells = 9 * 4 + 1 * 1
        fields = {"logits": logits, "targets": targets.long(), "logit_lengths": logit_lengths.long(),
                  "target_lengths": target_lengths.long()}

        def leaf(self, name, device):
            return self.fields[name].detach().to(device=device, dtype=torch.float32).clone().requires_grad_()

        def ints(self, name, device, dtype=torch.int32):
            return self.fields[name].to(device=device, dtype=dtype).contiguous()

    (variant,) = tlbench.implementations.nemo.IMPLEMENTATION.verify
    losses, grads = variant.compute(backend, Problem(), "cpu")
    expected, expected_grad = torchaudio_losses(logits, targets, logit_lengths, target_lengths)
    assert_close(losses.detach(), expected, 1e-5)
    assert_close(grads["logits"], expected_grad, 1e-4)
    assert variant.skip(Problem(), "cpu") is None


def test_float16_logits_are_upcast_on_cpu(backend):
    logits, targets, logit_lengths, target_lengths = random_problem([(8, 3), (5, 2)], 30)
    half = logits.half()
    x = half.clone().requires_grad_()
    losses = backend.module.none(x, targets.long(), logit_lengths.long(), target_lengths.long())
    losses.sum().backward()
    assert x.grad.dtype == torch.float16 and losses.dtype == torch.float32
    expected, _ = torchaudio_losses(half.float(), targets, logit_lengths, target_lengths)
    assert_close(losses.detach(), expected, 1e-5)  # the same values as float32 on the rounded logits


def test_bfloat16_is_refused_with_a_reason():
    from types import SimpleNamespace

    for device in ("cpu", "cuda"):
        reason = tlbench.implementations.nemo.supports_config(SimpleNamespace(dtype="bfloat16", device=device))
        assert reason and "bfloat16" in reason
        assert tlbench.implementations.nemo.supports_config(SimpleNamespace(dtype="float16", device=device)) is None
        assert tlbench.implementations.nemo.supports_config(SimpleNamespace(dtype="float32", device=device)) is None


def test_import_does_not_leave_the_asr_package_half_imported(backend):
    assert "nemo.collections.asr" not in sys.modules  # only the loss subpackage was imported
    assert tlbench.implementations.nemo.LOSS_PACKAGE in sys.modules
    assert backend.name == "nemo" and backend.version


@pytest.mark.parametrize("module", [tlbench.implementations.nemo, tlbench.implementations.nemo_graph],
                         ids=["nemo", "nemo_graph"])
def test_load_backend_without_nemo_raises_unavailable_with_the_install_hint(monkeypatch, module):
    for name in [n for n in sys.modules if n == "nemo" or n.startswith("nemo.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nemo", None)  # makes `import nemo` raise ImportError
    with pytest.raises(BackendUnavailable) as raised:
        module.load_backend()
    assert raised.value.install_hint == module.INSTALL_HINT and "bash scripts/setup.sh --with nemo" in module.INSTALL_HINT
    assert "\n" not in raised.value.reason and "cannot be imported" in raised.value.reason


@pytest.mark.parametrize("name", ["nemo", "nemo_graph"])
def test_missing_nemo_is_recorded_as_unavailable(tiny_shape_info, tmp_path, name):
    # needs the harness of tlbench/implementations/declaration.py (tlbench.run.harness.main(LossImplementation))
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "nemo.py").write_text("raise ImportError('hidden by the test')\n")
    process = subprocess.run([sys.executable, os.path.join(REPO_DIR, f"benchmark_{name}.py"), *TINY_RUN_FLAGS,
                              "--shape-info", tiny_shape_info, "--out-dir", str(tmp_path / "log")],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(blocker)),
                             timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    (summary_path,) = (tmp_path / "log").glob(f"{name}-*/summary.json")
    summary = json.load(open(summary_path))
    assert summary["status"] == "unavailable"
    assert "hidden by the test" in summary["reason"] and "bash scripts/setup.sh --with nemo" in summary["reason"]
    assert "unavailable" in process.stdout


def test_benchmark_run_agrees_with_torchaudio(backend, tiny_shape_info, tmp_path):
    flags = [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--max-utterance-frames", "50"]
    summaries = run_summaries(("torchaudio", "nemo"), flags, str(tmp_path), "-2-tmax50")
    losses = {name: summary["loss_values"] for name, summary in summaries.items()}
    assert len(losses["nemo"]) == 2
    assert_losses_agree(losses)
