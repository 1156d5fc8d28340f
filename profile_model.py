#!/usr/bin/env python3
"""Where a transducer training step spends its time: a Conformer transducer under torch.profiler.

One step: random features ``(N, 4 T_max + 3, 80)`` and random targets sized by a batch of the
shape table, the encoder (4x front end + torchaudio Conformer), the stateless decoder, the loss
(``--loss``), ``loss.backward()`` and ``zero_grad(set_to_none=True)``. There is no optimizer
step: parameter updates are not part of what is compared.

Loss chains:

- ``k2-pruned`` (k2, or fast_rnnt when k2 is absent): ``rnnt_loss_smoothed`` on the simple
  projections (lm_only_scale=0.25, am_only_scale=0, return_grad=True), prune ranges with
  s_range=5, ``do_rnnt_pruning`` on the joiner's projected encoder/decoder outputs, the joiner on
  the pruned grid and ``rnnt_loss_pruned``; loss = 0.5 * simple + pruned.
- ``torchaudio``, ``k2``, ``reference`` (full ``(N, T, U+1, V)`` logits from the joiner) and
  ``optimized-transducer`` (packed logits): the loss benchmarks' own implementations
  (``IMPLEMENTATION`` of each ``benchmark_<impl>.py``) on the joiner's projections.

Labels (``torch.profiler.record_function``) are attached from outside with forward pre-/post-hooks
on the modules and a context manager around the loss chain; no model code knows about them.
Each label ``L`` also gets a backward row ``L_backward``: the time of the autograd nodes created
inside ``L`` (their ``autograd::engine::evaluate_function`` events, matched by sequence number;
see :class:`LabelTracker`); ``rnnt_backward`` is a label around the whole ``loss.backward()`` call.

Writes into ``<out-dir>/model-<loss>-<mode>/``: Chrome traces, ``key_averages.txt`` (the full
table of each profiling cycle), ``rnnt_table.txt`` (the filtered ``rnnt*`` rows) and
``summary.json``; prints the filtered table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import os
import platform
import sys
import warnings
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.harness import (EXIT_CODES, STATUS_OK, STATUS_UNAVAILABLE, BackendUnavailable,
                             _device_name, _finite_or_none, _TraceWriter, classify_step_failure, plan_batches)
from tlbench.io import atomic_write_json, atomic_write_text
from tlbench.model import SUBSAMPLING_FACTOR, ModelConfig
from tlbench.options import RunConfig, add_run_arguments, resolve_config, resolve_device, resolve_preset

LABEL_PREFIX = "rnnt"
BACKWARD_SUFFIX = "_backward"
WHOLE_BACKWARD_LABEL = "rnnt_backward"
EVALUATE_PREFIX = "autograd::engine::evaluate_function: "
JOINER_LABEL = "rnnt_joiner"
PRUNE_RANGE = 5

# --loss value -> loss implementation name (benchmark_grid.load_implementation) and forward labels.
LOSSES = {
    "k2-pruned": ("k2_pruned", ["rnnt_loss_simple", "rnnt_loss_pruned"]),
    "torchaudio": ("torchaudio", ["rnnt_loss_torchaudio"]),
    "optimized-transducer": ("optimized_transducer", ["rnnt_loss_optimized_transducer"]),
    "k2": ("k2", ["rnnt_loss_k2"]),
    "reference": ("reference", ["rnnt_loss_reference"]),
}

# Encoder labels with their depth in the printed table; the layer's sub-labels name the
# torchaudio ConformerLayer attributes they may be attached to (the first one present wins).
ENCODER_LABELS = [("rnnt_encoder", 0), ("rnnt_encoder_embed", 1), ("rnnt_encoder_layer", 1),
                  ("rnnt_encoder_layer_feed_forward_macaron", 2), ("rnnt_encoder_layer_self_attn", 2),
                  ("rnnt_encoder_layer_conv", 2), ("rnnt_encoder_layer_feed_forward", 2)]
LAYER_PARTS = {
    "rnnt_encoder_layer_feed_forward_macaron": ("ffn1", "feed_forward_macaron"),
    "rnnt_encoder_layer_self_attn": ("self_attn", "attention"),
    "rnnt_encoder_layer_conv": ("conv_module", "conv"),
    "rnnt_encoder_layer_feed_forward": ("ffn2", "feed_forward"),
}


@dataclass(frozen=True)
class ModelPreset:
    model: ModelConfig
    max_frames: int  # sum of T (after subsampling) per sorted batch
    description: str


MODEL_PRESETS = {
    "original": ModelPreset(ModelConfig(), 30000,
                            "full-size model (12 layers, dim 512, 8 heads, feed-forward 2048, kernel 31, joiner 512); "
                            "sorted batches of at most 30000 frames after subsampling"),
    # On 2 CPU cores a full-size step on one long utterance takes about a minute; this keeps the
    # whole run (5 steps) to about two minutes or less.
    "quick": ModelPreset(ModelConfig(num_layers=2, model_dim=144, num_heads=4, ffn_dim=576, conv_kernel_size=31,
                                     decoder_dim=144, joiner_dim=144), 1000,
                         "quick CPU preset: small model (2 layers, dim 144, 4 heads, feed-forward 576, kernel 31, "
                         "joiner 144), sorted batches of at most 1000 frames after subsampling; "
                         "about two minutes or less on 2 CPU cores"),
}


# --------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class LabelInterval:
    """One forward call of a label and the autograd sequence numbers of the nodes it created:
    every node with ``first_sequence_nr <= sequence_nr < end_sequence_nr``."""

    label: str
    first_sequence_nr: int
    end_sequence_nr: int


class LabelTracker:
    """Opens and closes ``record_function`` labels around forward blocks and remembers, for each
    call, the range of autograd sequence numbers of the nodes created inside it.

    Forward: :meth:`attach` (module hooks) or :meth:`region` (a ``with`` block). Backward: each
    autograd node runs as an ``autograd::engine::evaluate_function: <Node>`` event carrying its
    sequence number, so ``<label>_backward`` is the set of those events whose sequence number
    falls in one of the label's ranges (summed by :class:`_ModelTraceWriter`). This keeps every
    profiler range properly nested and adds nothing to the backward pass.
    """

    def __init__(self):
        import torch

        self._open: List[Tuple[str, Any, Optional[int]]] = []  # (label, record_function, first sequence nr)
        self._probe_leaf = torch.zeros((), requires_grad=True)
        self._hook_handles: List[Any] = []
        self.intervals: List[LabelInterval] = []

    def _next_sequence_nr(self) -> Optional[int]:
        """The sequence number the next autograd node will get (None without grad mode)."""
        import torch

        if not torch.is_grad_enabled():
            return None
        # A throwaway view takes the current number; the next node gets the one after it.
        return self._probe_leaf.view(()).grad_fn._sequence_nr() + 1

    def begin(self, label: str) -> None:
        import torch

        first = self._next_sequence_nr()
        handle = torch.profiler.record_function(label)
        handle.__enter__()
        self._open.append((label, handle, first))

    def end(self) -> None:
        label, handle, first = self._open.pop()
        handle.__exit__(None, None, None)
        end = self._next_sequence_nr()
        if first is not None and end is not None and end - 1 > first:
            self.intervals.append(LabelInterval(label, first, end - 1))  # end - 1: the probe's own node

    @contextlib.contextmanager
    def region(self, label: str):
        """``with tracker.region(label): ...``; on an exception the label stays open for :meth:`abandon`."""
        self.begin(label)
        yield
        self.end()

    def attach(self, module, label: str) -> None:
        """Labels every forward call of ``module`` (keyword arguments included)."""

        def before(_module, _args, _kwargs):
            self.begin(label)

        def after(_module, _args, _kwargs, _output):
            self.end()

        self._hook_handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        self._hook_handles.append(module.register_forward_hook(after, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()

    def abandon(self) -> None:
        """After a failed step: closes every open label, innermost first."""
        while self._open:
            _, handle, _ = self._open.pop()
            handle.__exit__(None, None, None)


class _IntervalIndex:
    """Finds the labels whose forward call created the node with a given sequence number."""

    def __init__(self, intervals: Sequence[LabelInterval]):
        by_label: Dict[str, List[LabelInterval]] = defaultdict(list)
        for interval in intervals:
            by_label[interval.label].append(interval)
        self._by_label = {label: sorted(found, key=lambda i: i.first_sequence_nr) for label, found in by_label.items()}
        self._firsts = {label: [i.first_sequence_nr for i in found] for label, found in self._by_label.items()}

    def find(self, sequence_nr: int) -> List[LabelInterval]:
        """The (at most one per label) calls whose range holds ``sequence_nr``."""
        hits = []
        for label, firsts in self._firsts.items():
            position = bisect_right(firsts, sequence_nr) - 1  # a label never nests in itself: ranges are disjoint
            if position >= 0 and sequence_nr < self._by_label[label][position].end_sequence_nr:
                hits.append(self._by_label[label][position])
        return hits


def _find_part(layer, candidates: Sequence[str]):
    for name in candidates:
        part = getattr(layer, name, None)
        if part is not None:
            return name, part
    children = ", ".join(name for name, _ in layer.named_children())
    raise RuntimeError(f"{type(layer).__name__} has none of the attributes {', '.join(candidates)} "
                       f"(its children: {children}); this torchaudio version needs a new label mapping")


def attach_labels(model, tracker: LabelTracker) -> Dict[str, List[str]]:
    """Attaches the encoder/decoder labels; returns label -> the module paths it is attached to."""
    targets: Dict[str, List[str]] = defaultdict(list)
    names = {module: name for name, module in model.named_modules()}

    def attach(module, label):
        tracker.attach(module, label)
        targets[label].append(f"{names[module]} ({type(module).__name__})")

    attach(model.encoder, "rnnt_encoder")
    attach(model.encoder.embed, "rnnt_encoder_embed")
    layers = [m for m in model.encoder.conformer.modules() if type(m).__name__ == "ConformerLayer"]
    if not layers:
        raise RuntimeError("torchaudio's Conformer has no ConformerLayer modules; this torchaudio version needs "
                           "a new label mapping")
    for layer in layers:
        attach(layer, "rnnt_encoder_layer")
        for label, candidates in LAYER_PARTS.items():
            attach(_find_part(layer, candidates)[1], label)
    attach(model.decoder, "rnnt_decoder")
    return dict(targets)


# --------------------------------------------------------------------------------------------
# Loss chains


def k2_pruned_loss(k2, model, batch, tracker: LabelTracker):
    """The pruned chain. batch: TransducerBatch with encoder_out (N, T, D_enc) float32,
    decoder_out (N, U+1, D_dec) float32, targets (N, U) int32, lengths (N,) int32.

    Returns (0.5 * simple + pruned, pruned), scalars float32.
    """
    symbols, boundary = batch.targets.long(), batch.boundary  # (N, U) int64, (N, 4) int64
    with tracker.region("rnnt_loss_simple"):
        am = model.simple_am_proj(batch.encoder_out)  # (N, T, V)
        lm = model.simple_lm_proj(batch.decoder_out)  # (N, U+1, V)
        simple_loss, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
            lm=lm, am=am, symbols=symbols, termination_symbol=model.config.blank, lm_only_scale=0.25,
            am_only_scale=0.0, boundary=boundary, reduction="sum", return_grad=True)
    with tracker.region("rnnt_loss_pruned"):
        ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=PRUNE_RANGE)
        # am_pruned, lm_pruned: (N, T, s_range, J)
        am_pruned, lm_pruned = k2.do_rnnt_pruning(am=model.joiner.encoder_proj(batch.encoder_out),
                                                  lm=model.joiner.decoder_proj(batch.decoder_out), ranges=ranges)
        with tracker.region(JOINER_LABEL):
            logits = model.joiner.output(am_pruned + lm_pruned)  # (N, T, s_range, V)
        pruned_loss = k2.rnnt_loss_pruned(logits=logits, symbols=symbols, ranges=ranges,
                                          termination_symbol=model.config.blank, boundary=boundary, reduction="sum")
    return 0.5 * simple_loss + pruned_loss, pruned_loss


def full_joiner_loss(impl, backend, model, batch, tracker: LabelTracker):
    """A loss benchmark's implementation on the joiner's projections (same batch fields as
    :func:`k2_pruned_loss`); the implementation's ``prepare`` builds its logits (labelled
    ``rnnt_joiner``). Returns (loss, reported loss), scalars."""
    from tlbench.data import TransducerBatch

    with tracker.region(f"rnnt_loss_{impl.name}"):
        projected = TransducerBatch(batch.shapes, model.joiner.encoder_proj(batch.encoder_out),  # (N, T, J)
                                    model.joiner.decoder_proj(batch.decoder_out),  # (N, U+1, J)
                                    batch.targets, batch.logit_lengths, batch.target_lengths)
        with tracker.region(JOINER_LABEL):
            inputs = impl.prepare(backend, projected, model.joiner.output)
        loss, reported = impl.loss(backend, inputs, projected, model.joiner.output)
    return loss, reported


def training_step(model, loss_fn, shapes: Sequence[Tuple[int, int]], tracker: LabelTracker, device):
    """One step on random data sized by ``shapes`` ((T_i, U_i) after subsampling).

    Returns the reported loss (scalar tensor, detached).
    """
    import torch

    from tlbench.data import TransducerBatch
    from tlbench.model import random_features

    config = model.config
    frames = torch.tensor([t for t, _ in shapes], dtype=torch.int64)  # (N,)
    u_max = max(u for _, u in shapes)
    features, feature_lengths = random_features(frames, config.num_features, device)  # (N, 4 T_max + 3, F), (N,)
    targets = torch.randint(1, config.vocab_size, (len(shapes), u_max), dtype=torch.int32, device=device)
    logit_lengths = frames.to(device=device, dtype=torch.int32)
    target_lengths = torch.tensor([u for _, u in shapes], dtype=torch.int32, device=device)

    encoder_out, _ = model.encode(features, feature_lengths)  # (N, T_max, D_enc); lengths equal frames by design
    decoder_out = model.decode(targets)  # (N, U_max + 1, D_dec)
    batch = TransducerBatch(list(shapes), encoder_out, decoder_out, targets, logit_lengths, target_lengths)
    loss, reported = loss_fn(batch)
    with torch.profiler.record_function(WHOLE_BACKWARD_LABEL):
        loss.backward()
    model.zero_grad(set_to_none=True)
    return reported.detach()


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class LabelMeasurement:
    """One label over the recorded steps: raw per-call times and the statistics derived from them.

    A forward label's call is one ``record_function`` event; a backward label's call is one
    forward call's nodes (the sum of their evaluate_function events).
    """

    label: str
    cpu_times_us: List[float] = field(default_factory=list)
    device_times_us: List[float] = field(default_factory=list)
    span_peak_memory_bytes: int = 0  # largest "Total Allocated" while the label (or its nodes) ran
    num_steps: int = 0
    avg_step_time_us: float = 0.0
    share_basis: str = "cpu"  # which time the share uses: "cpu" or "device"

    def add(self, call: int, cpu_time_us: float, device_time_us: float) -> None:
        """Adds time to call number ``call`` (``len(cpu_times_us)`` starts a new call)."""
        if call == len(self.cpu_times_us):
            self.cpu_times_us.append(0.0)
            self.device_times_us.append(0.0)
        self.cpu_times_us[call] += cpu_time_us
        self.device_times_us[call] += device_time_us

    @property
    def calls(self) -> int:
        return len(self.cpu_times_us)

    @property
    def cpu_time_total_us(self) -> float:
        return sum(self.cpu_times_us)

    @property
    def device_time_total_us(self) -> float:
        return sum(self.device_times_us)

    @property
    def cpu_time_avg_us(self) -> Optional[float]:
        return self.cpu_time_total_us / self.calls if self.calls else None

    @property
    def device_time_avg_us(self) -> Optional[float]:
        return self.device_time_total_us / self.calls if self.calls else None

    @property
    def time_per_step_us(self) -> Optional[float]:
        total = self.device_time_total_us if self.share_basis == "device" else self.cpu_time_total_us
        return total / self.num_steps if self.num_steps else None

    @property
    def share_of_step_pct(self) -> Optional[float]:
        per_step = self.time_per_step_us
        if per_step is None or not self.avg_step_time_us:
            return None
        return 100.0 * per_step / self.avg_step_time_us

    def to_dict(self) -> dict:
        return {"label": self.label, "calls": self.calls, "cpu_time_total_us": self.cpu_time_total_us,
                "cpu_time_avg_us": self.cpu_time_avg_us, "device_time_total_us": self.device_time_total_us,
                "device_time_avg_us": self.device_time_avg_us, "time_per_step_us": self.time_per_step_us,
                "share_of_step_pct": self.share_of_step_pct, "share_basis": self.share_basis,
                "peak_memory_mb": self.span_peak_memory_bytes / 2**20,
                "cpu_times_us": list(self.cpu_times_us), "device_times_us": list(self.device_times_us)}


class _ModelTraceWriter(_TraceWriter):
    """The harness's trace writer, plus each cycle's full key_averages table, its ``rnnt*`` rows,
    the forward labels' times and the backward labels' times (see :class:`LabelTracker`)."""

    def __init__(self, run_dir: str, device: str, tracker: LabelTracker):
        super().__init__(run_dir, device)
        self.device = device
        self.tracker = tracker
        self.full_tables: List[str] = []
        self.filtered_tables: List[str] = []
        self.labels: Dict[str, LabelMeasurement] = {}
        self._backward_calls: Dict[LabelInterval, int] = {}  # forward call -> its backward label's call number

    def _label(self, name: str) -> LabelMeasurement:
        return self.labels.setdefault(name, LabelMeasurement(name))

    def __call__(self, prof) -> None:
        from torch.autograd import DeviceType
        from torch.autograd.profiler_util import EventList

        super().__call__(prof)
        cycle = len(self.trace_paths)
        name = os.path.basename(self.trace_paths[-1])
        averages = prof.key_averages()
        self.full_tables.append(f"# cycle {cycle}: {name}\n# key_averages(), sorted by {self.sort_by}, all rows\n"
                                f"{averages.table(sort_by=self.sort_by, row_limit=-1)}\n")
        rows = EventList([e for e in averages if e.key.startswith(LABEL_PREFIX)],
                         use_device="cuda" if self.device == "cuda" else None, profile_memory=True)
        self.filtered_tables.append(f"# cycle {cycle}: {name}\n# key_averages() rows named {LABEL_PREFIX}*, "
                                    f"sorted by cpu_time_total\n{rows.table(sort_by='cpu_time_total', row_limit=-1)}\n")
        index = _IntervalIndex(self.tracker.intervals)
        for event in prof.events():
            if event.device_type != DeviceType.CPU:
                continue  # on a GPU each label also has a device-side twin; its time is in device_time_total
            if event.name.startswith(LABEL_PREFIX):
                measurement = self._label(event.name)
                measurement.add(measurement.calls, event.cpu_time_total, event.device_time_total)
            elif event.name.startswith(EVALUATE_PREFIX) and event.sequence_nr >= 0:
                for interval in index.find(event.sequence_nr):
                    measurement = self._label(interval.label + BACKWARD_SUFFIX)
                    call = self._backward_calls.setdefault(interval, measurement.calls)
                    measurement.add(call, event.cpu_time_total, event.device_time_total)


def _span_peaks(trace_path: str, memory_device: str, labels: Dict[str, LabelMeasurement],
                intervals: Sequence[LabelInterval]) -> None:
    """Raises each label's peak to the largest Total Allocated inside its spans in one trace
    (backward labels: inside the evaluate_function events of their nodes)."""
    from tlbench.trace import load_trace_events, parse_trace

    samples = [m for m in parse_trace(trace_path).memory_samples if m.device == memory_device]
    times = [m.time_us for m in samples]
    index = _IntervalIndex(intervals)
    for event in load_trace_events(trace_path):
        name = str(event.get("name", ""))
        if event.get("ph") != "X":
            continue
        if event.get("cat") == "user_annotation" and name in labels:
            names = [name]
        elif name.startswith(EVALUATE_PREFIX) and event.get("args", {}).get("Sequence number", -1) >= 0:
            names = [i.label + BACKWARD_SUFFIX for i in index.find(int(event["args"]["Sequence number"]))]
        else:
            continue
        start = float(event.get("ts", 0.0))
        low, high = bisect_left(times, start), bisect_right(times, start + float(event.get("dur", 0.0)))
        if low < high:
            peak = max(m.total_allocated_bytes for m in samples[low:high])
            for label in names:
                if label in labels:
                    labels[label].span_peak_memory_bytes = max(labels[label].span_peak_memory_bytes, peak)


def label_order(loss: str) -> List[Tuple[str, int]]:
    """(label, depth) in the printed order."""
    order = list(ENCODER_LABELS) + [("rnnt_decoder", 0)]
    for label in LOSSES[loss][1]:
        order.append((label, 0))
        if label != "rnnt_loss_simple":
            order.append((JOINER_LABEL, 1))
    return order


def _ms(value_us: Optional[float]) -> str:
    return "-" if value_us is None else f"{value_us / 1000:.2f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_label_table(summary: dict) -> str:
    """The printed table: one row per forward label with its backward label beside it."""
    labels = summary["labels"]
    basis = "device" if summary["device"] == "cuda" else "CPU"
    header = (f"{'label':<44} {'calls':>6} {'fwd ms/step':>12} {'bwd ms/step':>12} {'fwd %':>7} {'bwd %':>7} "
              f"{'fwd+bwd %':>9} {'peak MB':>9}")
    lines = [header, "-" * len(header)]
    for label, depth in summary["label_order"]:
        forward = labels.get(label, {})
        backward = labels.get(label + BACKWARD_SUFFIX, {})
        fwd_pct, bwd_pct = forward.get("share_of_step_pct"), backward.get("share_of_step_pct")
        both = None if fwd_pct is None else fwd_pct + (bwd_pct or 0.0)
        peak = max(forward.get("peak_memory_mb") or 0.0, backward.get("peak_memory_mb") or 0.0)
        lines.append(f"{'  ' * depth + label:<44} {forward.get('calls', 0):>6} {_ms(forward.get('time_per_step_us')):>12} "
                     f"{_ms(backward.get('time_per_step_us')):>12} {_pct(fwd_pct):>7} {_pct(bwd_pct):>7} "
                     f"{_pct(both):>9} {peak:>9.1f}")
    whole = labels.get(WHOLE_BACKWARD_LABEL, {})
    lines.append(f"{WHOLE_BACKWARD_LABEL + ' (the whole loss.backward() call)':<44} {whole.get('calls', 0):>6} "
                 f"{'':>12} {_ms(whole.get('time_per_step_us')):>12} {'':>7} {_pct(whole.get('share_of_step_pct')):>7}")
    lines.append("-" * len(header))
    lines.append(f"average step {summary['avg_step_time_us'] / 1000:.2f} ms over {len(summary['step_times_us'])} "
                 f"recorded steps; outside the top-level labels and {WHOLE_BACKWARD_LABEL} (data, zero_grad, "
                 f"profiler): {_pct(summary['unlabelled_share_pct'])}%; peak memory {summary['peak_memory_mb']:.1f} MB")
    lines.append(f"times are {basis} times; bwd = the autograd nodes created inside the label (their "
                 "evaluate_function events); 'peak MB' = largest total allocated "
                 f"({summary['memory_device']}) while the label or those nodes ran")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class ProfileRequest:
    """What one profile_model run does."""

    config: RunConfig
    model: ModelConfig
    loss: str  # a key of LOSSES
    model_preset_description: str = ""
    command: List[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return f"model-{self.loss}"


def _load_loss(loss: str, model, tracker: LabelTracker, device: str):
    """Returns (backend, loss_fn(batch) -> (loss, reported)); raises BackendUnavailable."""
    from benchmark_grid import load_implementation

    impl = load_implementation(LOSSES[loss][0])
    unsupported = impl.supports_device(device)
    if unsupported:
        raise BackendUnavailable(unsupported)
    backend = impl.load_backend()
    if loss == "k2-pruned":
        return backend, lambda batch: k2_pruned_loss(backend.module, model, batch, tracker)
    return backend, lambda batch: full_joiner_loss(impl, backend, model, batch, tracker)


def run_profile(request: ProfileRequest) -> dict:
    """Profiles the model's training step; writes the run folder and returns its summary."""
    import torch
    from tqdm import tqdm

    from shape_sampler import load_shape_info
    from tlbench.measurement import StepMeasurement
    from tlbench.model import TransducerModel, input_length_for
    from tlbench.trace import parse_trace

    config = request.config
    run_dir = config.run_dir(request.run_name)
    os.makedirs(run_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(run_dir, "*.pt.trace.json*")) + glob.glob(os.path.join(run_dir, "summary.json")):
        os.remove(stale)
    batching = (f"sorted by T, at most {config.max_frames} frames per batch counted after the {SUBSAMPLING_FACTOR}x "
                f"subsampling (input frames T_in = {SUBSAMPLING_FACTOR} T + 3)" if config.sort_utterance
                else f"{config.batch_size} consecutive utterances per batch (input frames T_in = "
                f"{SUBSAMPLING_FACTOR} T + 3)")
    summary: dict = {
        "implementation": request.run_name, "loss": request.loss, "label": request.run_name, "backend": None,
        "backend_version": None, "status": STATUS_OK, "reason": None, "device": config.device,
        "device_name": _device_name(config.device), "mode": config.mode, "batching": batching,
        "preset": config.preset, "preset_reason": config.preset_reason,
        "model_preset": request.model_preset_description, "model": request.model.to_dict(),
        "step": "random features and targets, encoder, decoder, loss, loss.backward(), zero_grad(set_to_none=True); "
                "no optimizer step",
        "schedule": {"wait": config.wait, "warmup": config.warmup, "active": config.active, "repeat": config.repeat},
        "seed": config.seed, "shape_info": config.shape_info,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "num_threads": torch.get_num_threads(), "config": config.to_dict(), "command": request.command or sys.argv,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "run_dir": run_dir,
        "label_order": label_order(request.loss), "labels": {}, "peak_memory_mb": None,
        "memory_device": "cuda" if config.device == "cuda" else "cpu",
    }
    summary.update(StepMeasurement([]).to_dict())

    def finish(status: str, reason: Optional[str] = None) -> dict:
        summary["status"], summary["reason"] = status, reason
        atomic_write_json(os.path.join(run_dir, "summary.json"), _finite_or_none(summary))
        return summary

    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = TransducerModel(request.model).to(device).train()
    summary["num_parameters"] = model.num_parameters()
    tracker = LabelTracker()
    summary["label_targets"] = attach_labels(model, tracker)
    try:
        backend, loss_fn = _load_loss(request.loss, model, tracker, config.device)
    except BackendUnavailable as missing:
        hint = f" ({missing.install_hint})" if missing.install_hint else ""
        return finish(STATUS_UNAVAILABLE, f"{missing.reason}{hint}")
    summary.update(backend=backend.name, backend_version=backend.version,
                   label=f"{request.run_name} ({backend.label(LOSSES[request.loss][0])})")

    shape_info = load_shape_info(config.shape_info)
    batches, summary["batches_reused"] = plan_batches(shape_info, config)

    activities = [torch.profiler.ProfilerActivity.CPU]
    if config.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.reset_peak_memory_stats()
    writer = _ModelTraceWriter(run_dir, config.device, tracker)
    cycle_length = config.wait + config.warmup + config.active
    active_steps = [i for i in range(config.num_steps) if i % cycle_length >= config.wait + config.warmup]
    reported_losses: Dict[int, Any] = {}
    status, reason, current_step = STATUS_OK, None, 0
    warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle.*")

    with torch.profiler.profile(activities=activities,
                                schedule=torch.profiler.schedule(wait=config.wait, warmup=config.warmup,
                                                                 active=config.active, repeat=config.repeat),
                                on_trace_ready=writer, record_shapes=True, with_stack=True, profile_memory=True) as prof:
        progress = tqdm(batches, desc=f"{request.run_name}-{config.mode}", unit="step", file=sys.stderr,
                        dynamic_ncols=True, mininterval=1.0)
        for current_step, shapes in enumerate(progress):
            try:
                reported = training_step(model, loss_fn, shapes, tracker, device)
                if current_step in active_steps:
                    reported_losses[current_step] = reported
            except Exception as error:  # one failing step ends the run with a recorded status
                tracker.abandon()
                model.zero_grad(set_to_none=True)
                status, reason, details = classify_step_failure(error, current_step, shapes)
                details["failing_batch"]["T_in_max"] = input_length_for(max(t for t, _ in shapes))
                summary.update(details)
                break
            prof.step()
        progress.close()
    tracker.detach()

    atomic_write_text(os.path.join(run_dir, "key_averages.txt"),
                      "\n".join(writer.full_tables) or "(no completed profiling cycle)\n")
    memory_device = summary["memory_device"]
    step_times: List[float] = []
    traces, peak_bytes = [], 0
    for path in writer.trace_paths:
        parsed = parse_trace(path)
        times = [s.duration_us for s in parsed.steps]
        step_times += times
        peak = parsed.peak_allocated_bytes.get(memory_device, 0)
        peak_bytes = max(peak_bytes, peak)
        _span_peaks(path, memory_device, writer.labels, tracker.intervals)
        traces.append({"file": os.path.basename(path), "steps": [s.step for s in parsed.steps],
                       "avg_step_time_us": sum(times) / len(times) if times else None, "peak_memory_mb": peak / 2**20})
    measurement = StepMeasurement(step_times)
    summary.update(measurement.to_dict())
    for key in ("loss_time_us", "loss_times_us"):  # the labels give the loss time, per part
        summary.pop(key)
    summary["peak_memory_mb"] = peak_bytes / 2**20 if traces else None
    summary["peak_memory_source"] = (f"max 'Total Allocated' of the {memory_device} [memory] events in the traces "
                                     "(what TensorBoard's memory view shows)")
    if config.device == "cuda":
        summary["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    for label in writer.labels.values():
        label.num_steps = len(step_times)
        label.avg_step_time_us = measurement.mean_us if step_times else 0.0
        label.share_basis = "device" if config.device == "cuda" else "cpu"
    summary["labels"] = {name: writer.labels[name].to_dict() for name in sorted(writer.labels)}
    top_level = [label for label, depth in summary["label_order"] if depth == 0] + [WHOLE_BACKWARD_LABEL]
    shares = [summary["labels"].get(label, {}).get("share_of_step_pct") for label in top_level]
    summary["unlabelled_share_pct"] = (100.0 - sum(s for s in shares if s is not None)) if step_times else None
    summary["traces"] = traces
    summary["key_averages_file"] = "key_averages.txt"
    summary["label_table_file"] = "rnnt_table.txt"
    summary["measured_batches"] = [{"step": i, "num_utterances": len(batches[i]),
                                    "T_max": max(t for t, _ in batches[i]), "U_max": max(u for _, u in batches[i]),
                                    "shapes": [list(tu) for tu in batches[i]]}
                                   for i in active_steps if i < len(batches) and (status == STATUS_OK or i < current_step)]
    summary["loss_values"] = [float(reported_losses[i]) for i in sorted(reported_losses)]
    result = finish(status, reason)
    table = format_label_table(result) if step_times else "(no recorded step)"
    atomic_write_text(os.path.join(run_dir, "rnnt_table.txt"),
                      f"{describe(result)}\n\n{table}\n\n" + "\n".join(writer.filtered_tables))
    return result


def describe(summary: dict) -> str:
    """The lines printed above the table: what ran, on what, with which batches."""
    model = summary["model"]
    return "\n".join([
        f"{summary['label']} on {summary['device']} ({summary['device_name']}), {summary['preset_reason']}",
        f"model: {summary['model_preset']}; sizes: {model['num_layers']} layers, dim {model['model_dim']}, "
        f"{model['num_heads']} heads, feed-forward {model['ffn_dim']}, kernel {model['conv_kernel_size']}, "
        f"decoder {model['decoder_dim']}, joiner {model['joiner_dim']}, V {model['vocab_size']} "
        f"({summary.get('num_parameters', 0) / 1e6:.1f} M parameters)",
        f"batches: {summary['batching']}; schedule wait={summary['schedule']['wait']} "
        f"warmup={summary['schedule']['warmup']} active={summary['schedule']['active']} "
        f"repeat={summary['schedule']['repeat']}",
        f"step: {summary['step']}",
    ])


# --------------------------------------------------------------------------------------------
# Command line

MODEL_FLAGS = {"num_layers": int, "model_dim": int, "num_heads": int, "ffn_dim": int, "conv_kernel_size": int,
               "decoder_dim": int, "joiner_dim": int, "dropout": float}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Profile a Conformer transducer training step and report where "
                                     "the time goes (record_function labels rnnt_*).")
    add_run_arguments(parser)
    parser.set_defaults(sort_utterance=True)
    for action in parser._actions:  # the shared help texts describe the loss benchmarks' defaults
        if action.dest == "sort_utterance":
            action.help = "true (default): sort by T and pack up to --max-frames frames; false: fixed --batch-size"
        elif action.dest == "max_frames":
            action.help = ("most frames (sum of T after subsampling) per sorted batch (default: 30000 with "
                           "--preset original, 1000 with quick)")
        elif action.dest == "encoder_out_dim":
            action.help = argparse.SUPPRESS  # the model's sizes come from the flags below
    parser.add_argument("--loss", default="k2-pruned", help=f"the loss: {', '.join(LOSSES)} (default k2-pruned)")
    group = parser.add_argument_group("model size (default: from the preset)")
    for name, kind in MODEL_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    return parser


def request_from_args(args: argparse.Namespace, command: List[str]) -> ProfileRequest:
    """Validates the flags (UsageError) and builds the request."""
    if args.loss not in LOSSES:
        raise UsageError(f"--loss {args.loss!r} is not allowed; use one of {', '.join(LOSSES)}")
    if args.encoder_out_dim != 512:
        raise UsageError("--encoder-out-dim does not apply to the model; use --model-dim, --decoder-dim or --joiner-dim")
    preset_name, _ = resolve_preset(args.preset, resolve_device(args.device))
    model_preset = MODEL_PRESETS[preset_name]
    if args.max_frames is None and args.sort_utterance:
        args.max_frames = model_preset.max_frames
    config = resolve_config(args)
    sizes = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    model = replace(model_preset.model, vocab_size=config.vocab_size, **sizes)
    try:
        model.validate()
    except ValueError as error:
        raise UsageError(f"model size: {error}") from None
    description = model_preset.description + (" (sizes changed by flags)" if sizes else "")
    if preset_name != "quick" and config.device == "cpu":
        description += "; the full model on CPU takes minutes per step"
    return ProfileRequest(config=config, model=model, loss=args.loss, model_preset_description=description,
                          command=command)


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]

    @exit_on_usage_error
    def run() -> dict:
        return run_profile(request_from_args(args, command))

    summary = run()
    print(describe(summary), flush=True)
    if summary["status"] != STATUS_OK:
        print(f"{summary['label']}: {summary['status']}: {summary['reason']}", flush=True)
    elif summary["step_times_us"]:
        print(format_label_table(summary), flush=True)
    print(f"-> {summary['run_dir']}", flush=True)
    raise SystemExit(EXIT_CODES[summary["status"]])


if __name__ == "__main__":
    main()
