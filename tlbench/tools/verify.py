"""Do the transducer losses compute the same thing? The verification engine behind
``verify_losses.py``: seeded problems, every implementation's variants as candidates, and the
comparison of their loss and gradients with the project's exact loss in float64.

Every candidate gets the same float32 inputs; the reference (:mod:`tlbench.losses.reference`)
gets the same values in float64, so only the implementation's own arithmetic separates the two.

Errors:

- loss rel. err: ``max_i |L_i - L_ref_i| / |L_ref_i|`` over the utterances, or
  ``|sum L - sum L_ref| / |sum L_ref|`` (marked "(sum)") where the library has no per-utterance
  output.
- grad rel. err: for each input ``x`` (logits; am and lm; or encoder_out, decoder_out and the
  joiner's weight and bias), ``max|g - g_ref| / max|g_ref|`` with ``g = d(sum_i L_i)/dx`` over
  the whole padded tensor (a gradient leaking into padding counts); the largest over the inputs.

A row is one implementation/variant on one problem. Verdicts: ``ok``; ``FAIL: ...`` (an error
above its tolerance, a non-finite value, a wrong shape or an unexpected exception);
``refused: ...`` (the library raised on an input it is known to reject, e.g. ``U_i = 0`` for
k2); ``skipped: ...``; ``unavailable: ...``. Only FAIL rows fail a run.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from tlbench.core.errors import first_line
from tlbench.core.status import VERIFY_STATUSES, Status
from tlbench.implementations.conditions import (
    REFERENCE_AM_LM,
    REFERENCE_JOINER,
    REFERENCE_JOINER_MODIFIED,
    REFERENCE_MODIFIED,
    REFERENCE_STANDARD,
    any_u_zero,
    more_cells_than_on_cpu,
    no_condition,
    no_modified_alignment,
    u_max_zero,
)
from tlbench.implementations.declaration import LossImplementation, Refusal, VerifyVariant
from tlbench.tools.verify_problems import (
    CROSS_DEVICE_FACTOR,
    GRAD_DEFINITION,
    GRAD_RTOL_FLOOR,
    GRAD_RTOL_PER_NAT,
    JOINER_DIM,
    LOSS_DEFINITION,
    LOSS_RTOL,
    REFERENCE_DESCRIPTION,
    REFUSAL_POLICY,
    Problem,
    default_problems,
    grad_tolerance,
    make_problem,
    tolerance_text,
)

__all__ = [
    "CROSS_DEVICE_FACTOR", "GRAD_DEFINITION", "GRAD_RTOL_FLOOR", "GRAD_RTOL_PER_NAT", "JOINER_DIM", "LOSS_DEFINITION",
    "LOSS_RTOL", "REFERENCE_AM_LM", "REFERENCE_DESCRIPTION", "REFERENCE_JOINER", "REFERENCE_JOINER_MODIFIED",
    "REFERENCE_MODIFIED", "REFERENCE_STANDARD", "REFUSAL_POLICY", "Candidate", "Mismatch", "Problem", "Row",
    "any_u_zero", "candidates_for", "default_problems", "default_variant", "grad_tolerance",
    "gradient_relative_error", "libraries", "loss_relative_error", "make_problem", "more_cells_than_on_cpu",
    "no_modified_alignment",
    "reference_candidate", "reference_result", "summarize", "tolerance_text", "u_max_zero", "verify",
]

# ----------------------------------------------------------------------------- candidates

# What a candidate returns: the losses, (N,) per utterance or a scalar sum over the batch, and
# the gradient of their sum w.r.t. each named input, shaped like that input in the Problem.
CandidateResult = Tuple[torch.Tensor, Dict[str, torch.Tensor]]


@dataclass
class Candidate:
    """One implementation/variant on one device, as :func:`verify` runs it.

    Attributes:
      name: the implementation, e.g. ``"k2"`` (what ``--only`` selects).
      variant: what is called and how, e.g. ``"rnnt_loss_simple"``.
      device: ``"cpu"`` or ``"cuda"``.
      compute: ``Problem -> (losses, grads)`` (see :class:`tlbench.implementations.declaration.VerifyVariant`).
      reference: which exact loss it computes (``REFERENCE_*``).
      library: the library and version shown above the table, e.g. ``"k2 (fast_rnnt 1.3)"``.
      dtype: the dtype of the inputs it gets.
      known_refusal: ``Problem -> None`` or the input condition under which the library is known
        to raise: an exception then gives a "refused" row, not a FAIL.
      skip: ``Problem -> None`` or why this problem is not run for it.
      unavailable: set when it cannot run at all: the reason and how to install it.
      not_run: set when it is known to be inapplicable here, e.g. CUDA-only without a GPU.
      loss_rtol, grad_rtol_per_nat: its tolerances (see the module constants).
    """

    name: str
    variant: str
    device: str
    compute: Optional[Callable[[Problem], CandidateResult]]
    reference: str = REFERENCE_STANDARD
    library: str = ""
    dtype: str = "float32"
    known_refusal: Callable[[Problem], Optional[str]] = no_condition
    skip: Callable[[Problem], Optional[str]] = no_condition
    unavailable: Optional[str] = None
    not_run: Optional[str] = None
    loss_rtol: float = LOSS_RTOL
    grad_rtol_per_nat: float = GRAD_RTOL_PER_NAT

    def grad_rtol(self, max_reference_loss: float) -> float:
        return grad_tolerance(max_reference_loss, self.grad_rtol_per_nat)


def reference_candidate(device: str = "cpu") -> Candidate:
    """The project's own loss run on float32 inputs: it must pass (its recursion is float64)."""
    from tlbench.losses.reference import rnnt_loss

    def compute(problem: Problem) -> CandidateResult:
        x = problem.leaf("logits", device)
        losses = rnnt_loss(x, problem.targets.to(device), problem.logit_lengths.to(device),
                           problem.target_lengths.to(device), blank=0, reduction="none")
        losses.sum().backward()
        return losses, {"logits": x.grad}

    return Candidate("reference", "rnnt_loss (float32 input)", device, compute, library="reference (tlbench)")


def default_variant(impl: LossImplementation) -> VerifyVariant:
    """The benchmark's own call, on the problem's float32 inputs (reduction "sum")."""

    def compute(backend, problem: Problem, device: str) -> CandidateResult:
        if impl.layout == "joiner":
            enc, dec = problem.leaf("encoder_out", device), problem.leaf("decoder_out", device)
            joiner = problem.joiner(device)
            loss, _ = impl.loss(backend, None, problem.batch(device, enc, dec), joiner)
            loss.backward()
            linear = joiner.output_linear
            return loss.detach(), {"encoder_out": enc.grad, "decoder_out": dec.grad, "weight": linear.weight.grad,
                                   "bias": linear.bias.grad}
        x = problem.leaf("packed_logits" if impl.layout == "packed" else "logits", device)
        loss, _ = impl.loss(backend, x, problem.batch(device), None)
        loss.backward()
        grad = problem.unpack(x.grad) if impl.layout == "packed" else x.grad
        return loss.detach(), {"logits": grad}

    reference = REFERENCE_JOINER if impl.layout == "joiner" else REFERENCE_STANDARD
    return VerifyVariant("the benchmark's call (reduction sum)", compute, reference=reference)


def _cuda_missing() -> str:
    return "needs a CUDA GPU (torch.cuda.is_available() is False)"


def candidates_for(impl: LossImplementation, devices: Sequence[str]) -> List[Candidate]:
    """``impl``'s verification variants on each of ``devices`` that it runs on.

    A variant none of whose devices is here gives one "skipped" row; a library that cannot be
    imported gives one "unavailable" row for the implementation.
    """
    variants = list(impl.verify) if impl.verify is not None else [default_variant(impl)]
    if not variants:
        return [Candidate(impl.name, "-", "cpu", None, not_run=impl.verify_note or "no verification variant")]
    planned: List[Tuple[VerifyVariant, str]] = []
    rows: List[Candidate] = []
    for variant in variants:
        if not any(d in devices for d in variant.devices):
            missing = variant.devices[0]
            reason = _cuda_missing() if missing == "cuda" else f"runs on {', '.join(variant.devices)} only"
            rows.append(Candidate(impl.name, variant.variant, missing, None, not_run=reason))
    backends = {}
    for device in devices:  # device-major: all CPU rows, then all CUDA rows
        mine = [v for v in variants if device in v.devices]
        if not mine:
            continue
        try:
            backends[device] = impl.open(device)
        except Refusal as refusal:
            if refusal.cause != "device":  # the library is missing: one row says so
                return [Candidate(impl.name, mine[0].variant, device, None, unavailable=refusal.reason)] + rows
            rows.extend(Candidate(impl.name, v.variant, device, None, not_run=refusal.reason) for v in mine)
            continue
        planned.extend((v, device) for v in mine)
    if not planned:
        return rows
    backend = next(iter(backends.values()))
    library = backend.label(impl.name)

    def bind(variant: VerifyVariant, device: str) -> Candidate:
        return Candidate(
            impl.name, variant.variant, device, lambda problem: variant.compute(backends[device], problem, device),
            reference=variant.reference, library=library, known_refusal=variant.known_refusal,
            skip=lambda problem: variant.skip(problem, device),
            loss_rtol=LOSS_RTOL if variant.loss_rtol is None else variant.loss_rtol,
            grad_rtol_per_nat=GRAD_RTOL_PER_NAT if variant.grad_rtol_per_nat is None else variant.grad_rtol_per_nat)

    return [bind(variant, device) for variant, device in planned] + rows


# ----------------------------------------------------------------------------- verification


@dataclass
class Row:
    """One line of the result table.

    ``loss_rel_err``/``grad_rel_err`` are None where nothing was compared, and ``inf`` for a
    non-finite result; ``grad_rel_err_by_input`` holds the per-input errors.
    """

    implementation: str
    variant: str
    device: str
    dtype: str
    problem: str
    status: str
    verdict: str
    loss_rel_err: Optional[float] = None
    loss_compared: Optional[str] = None  # "per utterance" or "sum"
    grad_rel_err: Optional[float] = None
    grad_rel_err_by_input: Dict[str, float] = field(default_factory=dict)
    loss_tolerance: Optional[float] = None
    grad_tolerance: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def failed(self) -> bool:
        return self.status == Status.FAIL

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("loss_rel_err", "grad_rel_err"):  # JSON has no inf/nan: written as strings
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = str(data[key])
        data["grad_rel_err_by_input"] = {k: (v if math.isfinite(v) else str(v))
                                         for k, v in data["grad_rel_err_by_input"].items()}
        return data


@dataclass
class _Reference:
    losses: torch.Tensor  # (N,) float64
    grads: Dict[str, torch.Tensor]  # float64, shaped like the Problem's inputs


def reference_result(problem: Problem, kind: str) -> _Reference:
    """The exact loss and gradients (float64, CPU) of ``problem`` for reference ``kind``."""
    from tlbench.losses.reference import rnnt_loss

    args = (problem.targets, problem.logit_lengths, problem.target_lengths)
    if kind == REFERENCE_AM_LM:
        am = problem.am.double().requires_grad_()
        lm = problem.lm.double().requires_grad_()
        losses = rnnt_loss(am[:, :, None] + lm[:, None], *args, blank=0, reduction="none")
        losses.sum().backward()
        return _Reference(losses.detach(), {"am": am.grad, "lm": lm.grad})
    if kind in (REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED):
        inputs = {name: getattr(problem, name).double().requires_grad_()
                  for name in ("encoder_out", "decoder_out", "weight", "bias")}
        # (N, T, 1, C) + (N, 1, U+1, C) -> (N, T, U+1, C) -> logits (N, T, U+1, V)
        joined = torch.tanh(inputs["encoder_out"][:, :, None] + inputs["decoder_out"][:, None])
        logits = torch.nn.functional.linear(joined, inputs["weight"], inputs["bias"])
        losses = rnnt_loss(logits, *args, blank=0, reduction="none",
                           one_sym_per_frame=kind == REFERENCE_JOINER_MODIFIED)
        losses.sum().backward()
        return _Reference(losses.detach(), {name: t.grad for name, t in inputs.items()})
    if kind not in (REFERENCE_STANDARD, REFERENCE_MODIFIED):
        raise ValueError(f"unknown reference kind {kind!r}")
    x = problem.logits.double().requires_grad_()
    losses = rnnt_loss(x, *args, blank=0, reduction="none", one_sym_per_frame=kind == REFERENCE_MODIFIED)
    losses.sum().backward()
    return _Reference(losses.detach(), {"logits": x.grad})


class Mismatch(Exception):
    """A candidate's output has the wrong form (shape, missing gradient)."""


def loss_relative_error(losses: torch.Tensor, reference: torch.Tensor) -> Tuple[float, str]:
    """``losses`` (N,) or scalar (the batch sum) vs ``reference`` (N,) float64 -> (error, how)."""
    losses = losses.detach().cpu().double()
    if losses.dim() == 0 or losses.numel() == 1 and reference.numel() != 1:
        got, ref, how = losses.reshape(1), reference.sum().reshape(1), "sum"
    else:
        if losses.shape != reference.shape:
            raise Mismatch(f"losses have shape {tuple(losses.shape)}; expected {tuple(reference.shape)} or a scalar")
        got, ref, how = losses, reference, "per utterance"
    if not torch.isfinite(got).all():
        return math.inf, how
    return float(((got - ref).abs() / ref.abs().clamp_min(1e-30)).max()), how


def gradient_relative_error(grad: Optional[torch.Tensor], reference: torch.Tensor, name: str) -> float:
    """``max|g - g_ref| / max|g_ref|`` over the whole tensor (absolute if ``g_ref`` is all 0)."""
    if grad is None:
        raise Mismatch(f"no gradient for {name}")
    grad = grad.detach().cpu().double()
    if grad.shape != reference.shape:
        raise Mismatch(f"gradient of {name} has shape {tuple(grad.shape)}; expected {tuple(reference.shape)}")
    if not torch.isfinite(grad).all():
        return math.inf
    scale = float(reference.abs().max())
    return float((grad - reference).abs().max()) / (scale if scale > 0 else 1.0)


def _max_abs(tensor: torch.Tensor) -> float:
    return float(tensor.detach().abs().max()) if tensor.numel() else 0.0


def _normalise(result) -> CandidateResult:
    if not isinstance(result, (tuple, list)) or len(result) != 2 or not isinstance(result[1], dict):
        raise Mismatch("compute must return (losses, {input name: gradient})")
    return result[0], result[1]


def _compare(row: Row, losses: torch.Tensor, grads: Dict[str, torch.Tensor], ref_losses: torch.Tensor,
             ref_grads: Dict[str, torch.Tensor], loss_tol: float, grad_tol: float) -> None:
    """Fills ``row``'s errors, tolerances, status and verdict."""
    row.loss_rel_err, row.loss_compared = loss_relative_error(losses, ref_losses)
    row.grad_rel_err_by_input = {name: gradient_relative_error(grads.get(name), ref, name)
                                 for name, ref in ref_grads.items()}
    row.grad_rel_err = max(row.grad_rel_err_by_input.values())
    row.loss_tolerance, row.grad_tolerance = loss_tol, grad_tol
    problems = []
    if not row.loss_rel_err <= loss_tol:
        problems.append(f"loss rel. err {row.loss_rel_err:.2g} > {loss_tol:.2g}")
    if not row.grad_rel_err <= grad_tol:
        worst = max(row.grad_rel_err_by_input, key=row.grad_rel_err_by_input.get)
        problems.append(f"grad rel. err ({worst}) {row.grad_rel_err:.2g} > {grad_tol:.2g}")
    if problems:
        row.status, row.verdict = Status.FAIL, "FAIL: " + "; ".join(problems)
    else:
        row.status, row.verdict = Status.OK, Status.OK


def _run_one(candidate: Candidate, problem: Problem, reference: _Reference, row: Row) -> Optional[CandidateResult]:
    """Runs ``candidate`` on ``problem``, filling ``row``; returns its CPU output when compared."""
    started = time.perf_counter()
    try:
        losses, grads = _normalise(candidate.compute(problem))
        if candidate.device == "cuda" and torch.cuda.is_available():  # asynchronous errors surface here
            torch.cuda.synchronize()
    except Mismatch as error:
        row.status, row.verdict = Status.FAIL, f"FAIL: {error}"
        return None
    except Exception as error:
        row.seconds = time.perf_counter() - started
        condition = candidate.known_refusal(problem)
        if condition:
            row.status, row.verdict = Status.REFUSED, f"refused: {condition} ({first_line(error, 160, with_type=True)})"
        else:
            row.status, row.verdict = Status.FAIL, f"FAIL: unexpected {first_line(error, 160, with_type=True)}"
            if os.environ.get("VERIFY_LOSSES_TRACEBACK"):  # the row keeps one line; this shows the rest
                traceback.print_exc(file=sys.stderr)
        return None
    row.seconds = time.perf_counter() - started
    losses = losses.detach().cpu()
    grads = {name: (g.detach().cpu() if g is not None else None) for name, g in grads.items()}
    try:
        _compare(row, losses, grads, reference.losses, reference.grads, candidate.loss_rtol,
                 candidate.grad_rtol(_max_abs(reference.losses)))
    except Mismatch as error:
        row.status, row.verdict = Status.FAIL, f"FAIL: {error}"
        return None
    return losses, grads


def verify(candidates: Sequence[Candidate], problems: Sequence[Problem], progress: bool = False) -> List[Row]:
    """Runs every candidate on every problem and compares with the exact float64 loss.

    Returns one :class:`Row` per candidate and problem (one per candidate when it is
    unavailable or not run here), then one "cuda vs cpu" row per problem for each
    implementation/variant run on both devices. Never raises for a candidate's failure.
    """
    rows: List[Row] = []
    references: Dict[Tuple[int, str], _Reference] = {}
    outputs: Dict[Tuple[str, str, str, int], CandidateResult] = {}
    runnable = [c for c in candidates if c.unavailable is None and c.not_run is None and c.compute is not None]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runnable) * len(problems), desc="verifying", unit="run", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        for candidate in candidates:
            base = dict(implementation=candidate.name, variant=candidate.variant, device=candidate.device,
                        dtype=candidate.dtype)
            if candidate.unavailable is not None:
                rows.append(Row(problem="-", status=Status.UNAVAILABLE, verdict=f"unavailable: {candidate.unavailable}",
                                **base))
                continue
            if candidate.not_run is not None or candidate.compute is None:
                reason = candidate.not_run or "no compute function"
                rows.append(Row(problem="-", status=Status.SKIPPED, verdict=f"skipped: {reason}", **base))
                continue
            for index, problem in enumerate(problems):
                if bar is not None:
                    bar.set_postfix_str(f"{candidate.name} {problem.name}", refresh=False)
                row = Row(problem=problem.name, status=Status.FAIL, verdict="", **base)
                rows.append(row)
                skip = candidate.skip(problem)
                if skip:
                    row.status, row.verdict = Status.SKIPPED, f"skipped: {skip}"
                else:
                    key = (index, candidate.reference)
                    if key not in references:
                        references[key] = reference_result(problem, candidate.reference)
                    output = _run_one(candidate, problem, references[key], row)
                    if output is not None:
                        outputs[(candidate.name, candidate.variant, candidate.device, index)] = output
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    rows.extend(_cross_device_rows(candidates, problems, outputs))
    return rows


def _cross_device_rows(candidates: Sequence[Candidate], problems: Sequence[Problem],
                       outputs: Dict[Tuple[str, str, str, int], CandidateResult]) -> List[Row]:
    """CUDA output against the same implementation's CPU output, per problem run on both."""
    rows = []
    for candidate in candidates:
        if candidate.device != "cuda" or candidate.compute is None:
            continue
        for index, problem in enumerate(problems):
            cuda_out = outputs.get((candidate.name, candidate.variant, "cuda", index))
            cpu_out = outputs.get((candidate.name, candidate.variant, "cpu", index))
            if cuda_out is None or cpu_out is None:
                continue
            row = Row(candidate.name, candidate.variant, "cuda vs cpu", candidate.dtype, problem.name, Status.FAIL, "")
            cpu_losses = cpu_out[0].double()
            max_loss = _max_abs(cpu_losses)  # of a batch sum: it bounds every utterance's loss
            try:
                _compare(row, cuda_out[0], cuda_out[1], cpu_losses if cpu_losses.dim() else cpu_losses.reshape(1),
                         {k: v.double() for k, v in cpu_out[1].items()}, CROSS_DEVICE_FACTOR * candidate.loss_rtol,
                         CROSS_DEVICE_FACTOR * candidate.grad_rtol(max_loss))
            except Mismatch as error:
                row.verdict = f"FAIL: {error}"
            rows.append(row)
    return rows


def summarize(rows: Sequence[Row]) -> Dict[str, int]:
    counts = {status: 0 for status in VERIFY_STATUSES}
    for row in rows:
        counts[row.status] += 1
    return counts


def libraries(candidates: Sequence[Candidate]) -> List[str]:
    seen: List[str] = []
    for candidate in candidates:
        if candidate.library and candidate.library not in seen:
            seen.append(candidate.library)
    return seen
