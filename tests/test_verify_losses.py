"""Tests of verify_losses.py: the real run on CPU, and test doubles injected through its API
(a flipped gradient and an offset loss must FAIL; the float32 reference must pass)."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
import torch
from conftest import run_script

import tlbench.tools.verify as vl
import verify_losses
from tlbench.core.errors import UsageError
from tlbench.core.status import Status
from tlbench.losses.reference import rnnt_loss

# ----------------------------------------------------------------------------- helpers


def small_problems(seed: int = 3):
    """Three quick problems: mixed lengths (with U_i = 0 and T_i = 1), U_max = 0, and a longer pair."""
    gen = torch.Generator().manual_seed(seed)
    return [
        vl.make_problem("mixed", "test", [(7, 3), (1, 0), (5, 2), (1, 2)], 11, gen),
        vl.make_problem("U_max=0", "test", [(4, 0), (2, 0)], 6, gen),
        vl.make_problem("longer", "test", [(40, 12), (25, 9)], 9, gen),
    ]


def reference_losses(problem: vl.Problem, x: torch.Tensor) -> torch.Tensor:
    """(N,) float32 losses of the (N, T, U + 1, V) float32 tensor x by the project's reference."""
    return rnnt_loss(x, problem.targets, problem.logit_lengths, problem.target_lengths, blank=0, reduction="none")


class _FlipGradient(torch.autograd.Function):
    """Identity forward; backward returns the gradient with its sign flipped."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def sign_flipped_candidate() -> vl.Candidate:
    """The reference loss, but the gradient w.r.t. the logits points the wrong way."""

    def compute(problem):
        x = problem.logits.clone().requires_grad_()
        losses = reference_losses(problem, _FlipGradient.apply(x))
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return vl.Candidate("double", "flipped gradient", "cpu", compute, library="test double")


def offset_candidate(offset: float = 0.01) -> vl.Candidate:
    """The reference loss plus a small constant per utterance (its gradient is unchanged)."""

    def compute(problem):
        x = problem.logits.clone().requires_grad_()
        losses = reference_losses(problem, x)
        losses.sum().backward()
        return losses.detach() + offset, {"logits": x.grad}

    return vl.Candidate("double", f"loss + {offset}", "cpu", compute, library="test double")


def summed_reference_candidate() -> vl.Candidate:
    """The reference in float32 reporting only the batch sum (as optimized_transducer does)."""

    def compute(problem):
        x = problem.logits.clone().requires_grad_()
        loss = reference_losses(problem, x).sum()
        loss.backward()
        return loss, {"logits": x.grad}

    return vl.Candidate("double", "reference, sum only", "cpu", compute)


# ----------------------------------------------------------------------------- the real run


def test_script_on_cpu_prints_table_writes_json_and_passes(tmp_path):
    out = tmp_path / "verify.json"
    result = run_script("verify_losses.py", ["--device", "cpu", "--seed", "0", "--output-json", str(out)], timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    stdout = result.stdout
    assert re.search(r"^implementation +\| variant +\| problem +\| device +\| dtype +\| loss rel\. err +\| "
                     r"grad rel\. err +\| verdict$", stdout, re.M)
    assert "libraries: torchaudio 2.11.0, " in stdout and "reference (pytorch " in stdout
    assert "grad rel. err = " in stdout and "tolerances (float32)" in stdout and "refused rows" in stdout
    assert "-> PASS" in stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["refusals_fail_run"] is False and data["device"] == "cpu"
    rows = data["rows"]
    statuses = {row["status"] for row in rows}
    assert statuses <= {"ok", "refused", "skipped", "unavailable"}
    ok = [row for row in rows if row["status"] == "ok"]
    assert {row["implementation"] for row in ok} >= {"reference", "torchaudio", "optimized_transducer", "k2"}
    for row in ok:
        assert 0 <= row["loss_rel_err"] <= row["loss_tolerance"]
        assert 0 <= row["grad_rel_err"] <= row["grad_tolerance"]
    # Every problem the brief asks for is there, and the CUDA-only rows skip cleanly.
    names = {p["name"] for p in data["problems"]}
    assert names >= {"mixed", "U_i=0", "U_max=0", "T_i=1", "V=4096"}
    assert max(p["vocab_size"] for p in data["problems"]) == 4096
    if not torch.cuda.is_available():
        cuda_rows = [row for row in rows if row["device"] == "cuda"]
        assert {row["implementation"] for row in cuda_rows} >= {"warp_rnnt", "speechbrain"}
        assert all(row["status"] in ("skipped", "unavailable") for row in cuda_rows)
    # U_i = 0: the real k2 computes it; fast_rnnt (the k2 rows without k2) asserts U_i >= 1,
    # which is visible as a refusal, not a failure.
    k2_rows = [row for row in rows if row["implementation"] == "k2" and row["problem"] in ("U_i=0", "U_max=0")]
    assert k2_rows
    if importlib.util.find_spec("k2") is not None:
        assert all(row["status"] == "ok" for row in k2_rows), k2_rows
        assert any(library.startswith("k2 1.24") for library in data["libraries"]), data["libraries"]
    else:
        assert all(row["status"] == "refused" for row in k2_rows), k2_rows


def test_bad_flags_are_usage_errors(tmp_path):
    result = run_script("verify_losses.py", ["--only", "torchaudio,nonsense", "--output-json", str(tmp_path / "v.json")])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --only")
    assert not (tmp_path / "v.json").exists()
    with pytest.raises(UsageError, match="--device"):
        verify_losses.run(["--device", "tpu", "--output-json", str(tmp_path / "v.json")])
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="cuda"):
            verify_losses.run(["--device", "cuda", "--output-json", str(tmp_path / "v.json")])


# ----------------------------------------------------------------------------- injected candidates


def test_float32_reference_passes():
    rows = vl.verify([vl.reference_candidate("cpu"), summed_reference_candidate()], small_problems())
    assert [row.status for row in rows] == ["ok"] * 6, [row.verdict for row in rows]
    assert {row.loss_compared for row in rows} == {"per utterance", "sum"}
    for row in rows:
        assert row.loss_rel_err < 1e-6 and row.grad_rel_err < 1e-5


def test_flipped_gradient_fails_and_the_run_exits_1(tmp_path, capsys):
    problems = small_problems()
    rows = vl.verify([sign_flipped_candidate()], problems)
    assert all(row.status == Status.FAIL for row in rows)
    for row in rows:
        assert row.loss_rel_err <= row.loss_tolerance  # the loss itself is right
        assert row.grad_rel_err == pytest.approx(2.0, rel=1e-4)  # g = -g_ref
        assert "grad rel. err (logits)" in row.verdict

    out = tmp_path / "v.json"
    status = verify_losses.run(["--device", "cpu", "--output-json", str(out)],
                    candidates=[vl.reference_candidate("cpu"), sign_flipped_candidate()], problems=problems)
    assert status == 1
    stdout = capsys.readouterr().out
    assert "FAIL: grad rel. err" in stdout and "-> FAIL" in stdout
    data = json.loads(out.read_text())
    assert data["passed"] is False and data["counts"]["FAIL"] == len(problems) and data["counts"]["ok"] == len(problems)


def test_loss_off_by_a_small_constant_fails():
    rows = vl.verify([offset_candidate(0.01)], small_problems())
    assert all(row.status == Status.FAIL for row in rows)
    for row in rows:
        assert "loss rel. err" in row.verdict and "grad" not in row.verdict
        assert row.grad_rel_err <= row.grad_tolerance


def test_refusals_exceptions_and_wrong_shapes_are_rows_not_crashes():
    def refuses_empty_targets(problem):
        if problem.targets.size(1) == 0:
            raise RuntimeError("targets must not be empty")
        return vl.reference_candidate("cpu").compute(problem)

    def crashes(problem):
        raise IndexError("boom")

    def wrong_shape(problem):
        losses, grads = vl.reference_candidate("cpu").compute(problem)
        return losses, {"logits": grads["logits"][:, :1]}

    candidates = [
        vl.Candidate("double", "refuses U_max = 0", "cpu", refuses_empty_targets, known_refusal=vl.u_max_zero),
        vl.Candidate("double", "crashes", "cpu", crashes),
        vl.Candidate("double", "wrong shape", "cpu", wrong_shape),
        vl.Candidate("double", "missing", "cpu", None, unavailable="pip install double"),
        vl.Candidate("double", "gpu only", "cuda", None, not_run="needs a CUDA GPU"),
    ]
    rows = vl.verify(candidates, small_problems())
    by_variant = {}
    for row in rows:
        by_variant.setdefault(row.variant, []).append(row)
    assert [r.status for r in by_variant["refuses U_max = 0"]] == ["ok", "refused", "ok"]
    assert by_variant["refuses U_max = 0"][1].verdict.startswith("refused: U_max = 0")
    assert all(r.status == "FAIL" and "unexpected IndexError: boom" in r.verdict for r in by_variant["crashes"])
    assert all(r.status == "FAIL" and "shape" in r.verdict for r in by_variant["wrong shape"])
    assert [(r.status, r.verdict) for r in by_variant["missing"]] == [("unavailable", "unavailable: pip install double")]
    assert [r.status for r in by_variant["gpu only"]] == ["skipped"]
    counts = vl.summarize(rows)
    assert counts["refused"] == 1 and counts["FAIL"] == 6


def test_nan_gradient_fails_and_json_stays_valid(tmp_path):
    def nan_gradient(problem):
        losses, grads = vl.reference_candidate("cpu").compute(problem)
        return losses, {"logits": torch.full_like(grads["logits"], float("nan"))}

    problems = small_problems()[:1]
    out = tmp_path / "v.json"
    status = verify_losses.run(["--output-json", str(out), "--device", "cpu"],
                    candidates=[vl.Candidate("double", "nan", "cpu", nan_gradient)], problems=problems)
    assert status == 1
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text  # not JSON; Python's json would write them
    row = json.loads(text)["rows"][0]
    assert row["grad_rel_err"] == "inf" and row["status"] == "FAIL"


def test_problems_are_seeded_and_cover_the_edge_cases():
    a, b = vl.default_problems(5), vl.default_problems(5)
    assert [p.shapes for p in a] == [p.shapes for p in b]
    assert all(torch.equal(p.logits, q.logits) and torch.equal(p.targets, q.targets) for p, q in zip(a, b))
    assert [p.shapes for p in vl.default_problems(6)] != [p.shapes for p in a]
    shapes = [s for p in a for s in p.shapes]
    assert any(u == 0 for _, u in shapes) and any(t == 1 for t, _ in shapes)
    assert any(p.targets.size(1) == 0 for p in a)
    assert any(len({t for t, _ in p.shapes}) > 1 and len({u for _, u in p.shapes}) > 1 for p in a)
    for p in a:
        assert p.logits.dtype == torch.float32 and p.logits.shape[:3] == (len(p.shapes), max(t for t, _ in p.shapes),
                                                                          max(u for _, u in p.shapes) + 1)
        assert bool((p.targets >= 1).all()) and bool((p.targets < p.vocab_size).all())
        packed = p.packed_logits()
        assert packed.shape == (p.num_cells, p.vocab_size)
        unpacked = p.unpack(packed)
        for i, (t, u) in enumerate(p.shapes):
            assert torch.equal(unpacked[i, :t, : u + 1], p.logits[i, :t, : u + 1])


def test_grad_tolerance_scales_with_the_loss():
    assert vl.grad_tolerance(0.5) == vl.GRAD_RTOL_FLOOR
    assert vl.grad_tolerance(1000.0) == pytest.approx(1000.0 * vl.GRAD_RTOL_PER_NAT)
    assert math.isclose(vl.Candidate("x", "y", "cpu", None).grad_rtol(1000.0), vl.grad_tolerance(1000.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rows_and_cross_device_agreement(tmp_path):
    out = tmp_path / "v.json"
    status = verify_losses.run(["--device", "cuda", "--only", "reference,torchaudio", "--output-json", str(out)],
                    problems=small_problems())
    data = json.loads(out.read_text())
    cross = [row for row in data["rows"] if row["device"] == "cuda vs cpu"]
    assert cross and all(row["implementation"] == "torchaudio" for row in cross)
    assert status == (0 if data["passed"] else 1)


def test_cuda_vs_cpu_rows_compare_the_two_devices_outputs():
    """The CUDA-versus-CPU comparison, driven by a stand-in "cuda" candidate computed on the CPU."""

    def perturbed(scale):
        def compute(problem):
            losses, grads = vl.reference_candidate("cpu").compute(problem)
            return losses, {"logits": grads["logits"] * scale}

        return compute

    problems = small_problems()[:2]
    same = [vl.Candidate("double", "v", "cpu", perturbed(1.0)), vl.Candidate("double", "v", "cuda", perturbed(1.0))]
    rows = vl.verify(same, problems)
    cross = [row for row in rows if row.device == "cuda vs cpu"]
    assert [row.problem for row in cross] == [p.name for p in problems]
    assert all(row.status == "ok" and row.grad_rel_err == 0 and row.loss_rel_err == 0 for row in cross)
    cpu_row = next(row for row in rows if row.device == "cpu")
    assert cross[0].grad_tolerance == pytest.approx(vl.CROSS_DEVICE_FACTOR * cpu_row.grad_tolerance, rel=1e-5)
    assert cross[0].loss_tolerance == vl.CROSS_DEVICE_FACTOR * vl.LOSS_RTOL

    # Gradients 1e-3 apart: the CUDA row and the CUDA-vs-CPU row both FAIL.
    apart = [vl.Candidate("double", "v", "cpu", perturbed(1.0)), vl.Candidate("double", "v", "cuda", perturbed(1.001))]
    rows = vl.verify(apart, problems)
    assert [row.status for row in rows if row.device == "cuda"] == ["FAIL", "FAIL"]
    cross = [row for row in rows if row.device == "cuda vs cpu"]
    assert [row.status for row in cross] == ["FAIL", "FAIL"]
    assert all(row.grad_rel_err == pytest.approx(1e-3, rel=1e-3) for row in cross)
