"""What one loss implementation is: the one declarative entry every tool derives from.

A module ``tlbench.implementations.<name>`` (or a file given to ``--impl``) defines
``IMPLEMENTATION = LossImplementation(...)``; nothing else in the suite names that library.
Every tool gets at the library through one gate, :meth:`LossImplementation.open`, which
either returns the :class:`Backend` or raises one :class:`Refusal` whose status the tool
records. From that one object:

- the benchmark harness (``benchmark_<impl>.py``, ``benchmark_all.py``, ``benchmark_grid.py``,
  ``benchmark_capacity.py``) builds the loss input with :attr:`LossImplementation.prepare` (or the
  default for its :attr:`~LossImplementation.layout`) and times :attr:`~LossImplementation.loss`
  and its backward;
- ``verify_losses.py`` runs each :class:`VerifyVariant` (by default one, derived from ``loss``)
  against the exact float64 loss;
- ``benchmark_loss_only.py`` times each :class:`LossOnlyVariant` (by default one, derived from
  ``loss``, for the logits layouts) on given logits;
- ``profile_model.py --loss NAME`` calls ``model_loss`` or, by default, ``prepare`` + ``loss``
  on the model's joiner.

Layouts (what ``prepare`` hands to ``loss``):

- ``"4-D"``: padded logits ``(N, T_max, U_max + 1, V)`` (:func:`tlbench.data.batches.full_logits`);
- ``"packed"``: unpadded logits ``(sum_i T_i (U_i + 1), V)`` (:func:`tlbench.data.batches.packed_logits`);
- ``"joiner"``: nothing (``None``); the loss takes ``batch.encoder_out`` ``(N, T, C)``,
  ``batch.decoder_out`` ``(N, U + 1, C)`` and the joiner itself, so the joiner runs inside the
  loss region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from tlbench.core.status import Status
from tlbench.implementations.conditions import no_condition

__all__ = [
    "LAYOUTS",
    "Backend",
    "BackendUnavailable",
    "LossImplementation",
    "LossOnlyVariant",
    "Refusal",
    "VerifyVariant",
    "no_condition",
]

LAYOUTS = ("4-D", "packed", "joiner")


class BackendUnavailable(Exception):
    """The implementation's library cannot be imported or cannot run on this device."""

    def __init__(self, reason: str, install_hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.install_hint = install_hint

    def describe(self) -> str:
        """``reason (install hint)``: what a summary or a table shows."""
        return f"{self.reason} ({self.install_hint})" if self.install_hint else self.reason


class Refusal(Exception):
    """Why an implementation does not run here, as the status every tool records:
    ``unavailable`` (the library cannot be imported, or it does not run on this device) or
    ``unsupported`` (it refuses this configuration: a dtype, a size). ``cause`` is
    ``"device"``, ``"config"`` or ``"library"``: a tool that tries several devices tells a
    device it skips from a library that is missing everywhere."""

    def __init__(self, status: Status, reason: str, cause: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.cause = cause


@dataclass
class Backend:
    """The library that computes the loss, e.g. name ``"fast_rnnt"``, version ``"1.3"``.

    ``module`` is whatever the implementation's functions need (a module, a loss object).
    """

    name: str
    version: str
    module: Any = None

    def label(self, implementation: str) -> str:
        """``torchaudio 2.11.0``, or ``k2 (fast_rnnt 1.3)`` when the library has another name."""
        if self.name == implementation:
            return f"{implementation} {self.version}"
        return f"{implementation} ({self.name} {self.version})"


@dataclass(frozen=True)
class VerifyVariant:
    """One way ``verify_losses.py`` calls an implementation.

    Attributes:
      variant: what is called and how, e.g. ``"rnnt_loss, fused_log_softmax=False"``.
      compute: ``(backend, problem, device) -> (losses, grads)``. ``problem`` is a
        :class:`tlbench.tools.verify.Problem`; ``losses`` is ``(N,)`` per utterance or a scalar
        (the batch sum); ``grads`` maps input names to ``d(sum_i L_i) / d input``, shaped
        like the problem's tensor of that name (see ``reference``).
      reference: the exact loss it computes: ``"standard"`` (RNN-T loss of ``problem.logits``
        ``(N, T, U + 1, V)``, gradient ``"logits"``), ``"modified"`` (at most one label per
        frame), ``"am+lm"`` (the standard loss of ``am[:, :, None] + lm[:, None]``, gradients
        ``"am"`` ``(N, T, V)`` and ``"lm"`` ``(N, U + 1, V)``) or ``"joiner"`` (the standard
        loss of ``Linear(tanh(encoder_out[:, :, None] + decoder_out[:, None]))``, gradients
        ``"encoder_out"``, ``"decoder_out"``, ``"weight"``, ``"bias"``).
      known_refusal: ``problem -> None`` or the input condition under which the library is
        known to raise: an exception then gives a "refused" row, not a FAIL.
      skip: ``(problem, device) -> None`` or why this problem is not run (too slow, no alignment).
      devices: the devices it runs on (CUDA rows appear only with ``--device cuda``).
      loss_rtol, grad_rtol_per_nat: tolerances; None means the suite's float32 defaults.
    """

    variant: str
    compute: Callable[..., Tuple[Any, Dict[str, Any]]]
    reference: str = "standard"
    known_refusal: Callable[[Any], Optional[str]] = no_condition
    skip: Callable[[Any, str], Optional[str]] = no_condition
    devices: Tuple[str, ...] = ("cpu", "cuda")
    loss_rtol: Optional[float] = None
    grad_rtol_per_nat: Optional[float] = None


@dataclass(frozen=True)
class LossOnlyVariant:
    """One row of ``benchmark_loss_only.py``: the loss and its backward on given logits.

    Attributes:
      layout: ``"4-D"`` or ``"packed"``: which logits it gets.
      loss: ``(backend, logits, batch) -> scalar loss`` (reduction "sum"); ``batch`` is a
        :class:`tlbench.data.batches.TransducerBatch` of the same shapes (its ``encoder_out`` and
        ``decoder_out`` are None).
      variant: shown after the name when an implementation has several rows.
    """

    layout: str
    loss: Callable[..., Any]
    variant: str = ""


@dataclass
class LossImplementation:
    """Everything specific to one loss implementation.

    Attributes:
      name: the one name used everywhere: flags, run folders (``<name>-<mode>``), tables, JSON,
        and the ``record_function`` label of the loss region.
      load_backend: ``() -> Backend``; imports the library, raises :class:`BackendUnavailable`
        (with an install hint) when it cannot.
      loss: ``(backend, inputs, batch, joiner) -> (loss_to_backprop, reported_loss)``, both
        scalars, reduction "sum"; runs inside the loss region with
        ``loss_to_backprop.backward()``. ``inputs`` is what ``prepare`` returned, ``batch`` a
        :class:`tlbench.data.batches.TransducerBatch`, ``joiner`` a :class:`tlbench.data.batches.Joiner`.
      layout: ``"4-D"``, ``"packed"`` or ``"joiner"`` (see the module docstring).
      prepare: ``(backend, batch, joiner) -> inputs``, run outside the loss region; None
        means the default of ``layout``.
      install_hint: how to install the library (shown with "unavailable").
      description: one line for tables and ``--help``: the input and the call.
      supports_device: ``device -> None`` or why that device is not supported.
      supports_config: ``RunConfig -> None`` or why this configuration (dtype, sizes) is not
        supported; recorded as status "unsupported" without running.
      warm_up: ``(backend, device) -> None``, run once before profiling (e.g. a JIT compile).
      hide_inner_ops: record the loss region but not the ops inside it (for an
        implementation that issues hundreds of tiny torch ops per lattice cell).
      quick_overrides: quick-preset values replaced for this implementation.
      verify: the variants ``verify_losses.py`` checks; None derives one from ``loss``
        (logits layouts: reference "standard"; joiner layout: reference "joiner"); an empty
        tuple means none (the note in ``verify_note`` says why).
      loss_only: the rows of ``benchmark_loss_only.py``; None derives one from ``loss`` for
        the logits layouts; empty: none.
      model_loss: ``(backend, model, batch, region) -> (loss, reported)`` for
        ``profile_model.py``: ``model`` a :class:`tlbench.tools.model.TransducerModel`, ``batch``
        its encoder/decoder outputs, ``region(label)`` a context manager that labels a block.
        None: ``prepare`` + ``loss`` on the model's projected outputs and joiner.
      verify_note: shown when ``verify`` is empty.
      loss_only_note: shown when ``loss_only`` is empty.
    """

    name: str
    load_backend: Callable[[], Backend]
    loss: Callable[..., Tuple[Any, Any]]
    layout: str = "4-D"
    prepare: Optional[Callable[..., Any]] = None
    install_hint: str = ""
    description: str = ""
    supports_device: Callable[[str], Optional[str]] = no_condition
    supports_config: Callable[[Any], Optional[str]] = no_condition
    warm_up: Optional[Callable[[Backend, Any], None]] = None
    hide_inner_ops: bool = False
    quick_overrides: Optional[dict] = None
    verify: Optional[Sequence[VerifyVariant]] = None
    loss_only: Optional[Sequence[LossOnlyVariant]] = None
    model_loss: Optional[Callable[..., Tuple[Any, Any]]] = None
    verify_note: str = ""
    loss_only_note: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or not all(c.isalnum() or c == "_" for c in self.name):
            raise ValueError(f"implementation name {self.name!r} is not allowed; use letters, digits and '_'")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r} is not allowed; use one of {', '.join(LAYOUTS)}")

    def prepare_inputs(self, backend: Backend, batch, joiner):
        """The loss input of one batch: ``prepare`` or the layout's default."""
        if self.prepare is not None:
            return self.prepare(backend, batch, joiner)
        from tlbench.data.batches import full_logits, packed_logits

        if self.layout == "4-D":
            return full_logits(batch, joiner)
        if self.layout == "packed":
            return packed_logits(batch, joiner)
        return None

    def open(self, device: str, config: Any = None) -> Backend:
        """The gate every tool passes: checks ``device`` (``"cpu"``/``"cuda"``) and, when given,
        the :class:`tlbench.run.options.RunConfig`, then loads the library. Raises
        :class:`Refusal` (status ``unavailable`` or ``unsupported``, with the reason and the
        install hint) instead of returning when the implementation cannot run."""
        reason = self.supports_device(device)
        if reason:
            raise Refusal(Status.UNAVAILABLE, reason, "device")
        reason = None if config is None else self.supports_config(config)
        if reason:
            raise Refusal(Status.UNSUPPORTED, reason, "config")
        try:
            return self.load_backend()
        except BackendUnavailable as missing:
            raise Refusal(Status.UNAVAILABLE, self.unavailable(missing), "library") from None

    def unavailable(self, missing: BackendUnavailable) -> str:
        """The reason shown for a missing library, with this implementation's install hint."""
        if missing.install_hint or not self.install_hint:
            return missing.describe()
        return f"{missing.reason} ({self.install_hint})"
