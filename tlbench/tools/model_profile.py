"""Where a transducer training step spends its time: the measuring side of ``profile_model.py``.

One step: random features ``(N, 4 T_max + 3, 80)`` and random targets sized by a batch of the
shape table, the encoder (4x front end + torchaudio Conformer), the stateless decoder, the loss
(any implementation of the registry: its ``model_loss``, or by default its ``prepare`` + ``loss``
on the joiner's projections, with the joiner labelled ``rnnt_joiner``), ``loss.backward()`` and
``zero_grad(set_to_none=True)``. There is no optimizer step: parameter updates are not part of
what is compared.

Labels (``torch.profiler.record_function``) are attached from outside with forward pre-/post-hooks
on the modules and a context manager around the loss chain; no model code knows about them.
Each label ``L`` also gets a backward row ``L_backward``: the time of the autograd nodes created
inside ``L`` (their ``autograd::engine::evaluate_function`` events, matched by sequence number;
see :class:`LabelTracker`); ``rnnt_backward`` is a label around the whole ``loss.backward()`` call.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tlbench.core.io import atomic_write_text
from tlbench.implementations.declaration import Backend, LossImplementation
from tlbench.measure.environment import current_environment
from tlbench.measure.measurement import StepMeasurement
from tlbench.measure.profiling import TraceWriter
from tlbench.measure.summary import RunSummary
from tlbench.run.options import RunConfig
from tlbench.run.skeleton import ProfiledRun
from tlbench.tools.model import SUBSAMPLING_FACTOR, ModelConfig
from tlbench.tools.model_profile_text import BACKWARD_SUFFIX, WHOLE_BACKWARD_LABEL, describe_profile, label_table

__all__ = ["BACKWARD_SUFFIX", "ENCODER_LABELS", "JOINER_LABEL", "LABEL_PREFIX", "MODEL_PRESETS",
           "WHOLE_BACKWARD_LABEL", "MODEL_PROFILE_KIND", "IntervalIndex", "LabelCollector", "LabelInterval",
           "LabelMeasurement", "LabelTracker", "ModelPreset", "ProfileRequest", "attach_labels", "full_joiner_loss",
           "label_order", "run_profile", "span_peaks", "training_step"]

LABEL_PREFIX = "rnnt"
EVALUATE_PREFIX = "autograd::engine::evaluate_function: "
JOINER_LABEL = "rnnt_joiner"
# summary.json's "kind" of a model profile: the suite's report leaves such runs out
MODEL_PROFILE_KIND = "model-profile"

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
    falls in one of the label's ranges (summed by :class:`LabelCollector`). This keeps every
    profiler range properly nested and adds nothing to the backward pass.
    """

    def __init__(self):
        import torch

        self._open: List[Tuple[str, Any, Optional[int]]] = []  # (label, record_function, first sequence nr)
        self._probe_leaf = torch.zeros((), requires_grad=True)
        self._hook_handles: List[Any] = []
        self.intervals: List[LabelInterval] = []
        self.first_seen: Dict[str, int] = {}  # label -> its nesting depth when first opened, in opening order

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
        self.first_seen.setdefault(label, len(self._open))
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


class IntervalIndex:
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


def full_joiner_loss(impl: LossImplementation, backend, model, batch, tracker: LabelTracker):
    """An implementation's benchmark call on the joiner's projections: ``prepare`` builds its input
    (labelled ``rnnt_joiner``; for a joiner-layout loss the joiner runs inside ``loss``) and
    ``loss`` computes it. batch: encoder_out (N, T, D_enc), decoder_out (N, U+1, D_dec) float32,
    targets (N, U) int32, lengths (N,) int32. Returns (loss, reported loss), scalars."""
    from tlbench.data.batches import TransducerBatch

    with tracker.region(f"rnnt_loss_{impl.name}"):
        projected = TransducerBatch(batch.shapes, model.joiner.encoder_proj(batch.encoder_out),  # (N, T, J)
                                    model.joiner.decoder_proj(batch.decoder_out),  # (N, U+1, J)
                                    batch.targets, batch.logit_lengths, batch.target_lengths)
        with tracker.region(JOINER_LABEL):
            inputs = impl.prepare_inputs(backend, projected, model.joiner.output)
        loss, reported = impl.loss(backend, inputs, projected, model.joiner.output)
    return loss, reported


def training_step(model, loss_fn, shapes: Sequence[Tuple[int, int]], tracker: LabelTracker, device):
    """One step on random data sized by ``shapes`` ((T_i, U_i) after subsampling).

    Returns the reported loss (scalar tensor, detached).
    """
    import torch

    from tlbench.data.batches import TransducerBatch
    from tlbench.tools.model import random_features

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


class LabelCollector:
    """A :class:`~tlbench.measure.profiling.TraceWriter` hook: each cycle's full key_averages table, its
    ``rnnt*`` rows, the forward labels' times and the backward labels' times (see
    :class:`LabelTracker`)."""

    def __init__(self, device: str, tracker: LabelTracker, sort_by: str):
        self.device = device
        self.tracker = tracker
        self.sort_by = sort_by
        self.full_tables: List[str] = []
        self.filtered_tables: List[str] = []
        self.labels: Dict[str, LabelMeasurement] = {}
        self._backward_calls: Dict[LabelInterval, int] = {}  # forward call -> its backward label's call number

    def _label(self, name: str) -> LabelMeasurement:
        return self.labels.setdefault(name, LabelMeasurement(name))

    def __call__(self, prof, cycle: int, path: str) -> None:
        from torch.autograd import DeviceType
        from torch.autograd.profiler_util import EventList

        name = os.path.basename(path)
        averages = prof.key_averages()
        self.full_tables.append(f"# cycle {cycle}: {name}\n# key_averages(), sorted by {self.sort_by}, all rows\n"
                                f"{averages.table(sort_by=self.sort_by, row_limit=-1)}\n")
        rows = EventList([e for e in averages if e.key.startswith(LABEL_PREFIX)],
                         use_device="cuda" if self.device == "cuda" else None, profile_memory=True)
        self.filtered_tables.append(f"# cycle {cycle}: {name}\n# key_averages() rows named {LABEL_PREFIX}*, "
                                    f"sorted by cpu_time_total\n{rows.table(sort_by='cpu_time_total', row_limit=-1)}\n")
        index = IntervalIndex(self.tracker.intervals)
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


def span_peaks(trace_path: str, memory_device: str, labels: Dict[str, LabelMeasurement],
                intervals: Sequence[LabelInterval]) -> None:
    """Raises each label's peak to the largest Total Allocated inside its spans in one trace
    (backward labels: inside the evaluate_function events of their nodes)."""
    from tlbench.measure.trace import load_trace_events, parse_trace

    samples = [m for m in parse_trace(trace_path).memory_samples if m.device == memory_device]
    times = [m.time_us for m in samples]
    index = IntervalIndex(intervals)
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


def label_order(tracker: LabelTracker) -> List[Tuple[str, int]]:
    """(label, depth) in the printed order: the encoder's labels, then every other label as it
    was first opened (the decoder, then the loss chain's own labels), the whole backward last."""
    order = list(ENCODER_LABELS)
    known = {label for label, _ in order} | {WHOLE_BACKWARD_LABEL}
    order += [(label, depth) for label, depth in tracker.first_seen.items() if label not in known]
    return order


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class ProfileRequest:
    """What one profile_model run does."""

    config: RunConfig
    model: ModelConfig
    impl: LossImplementation
    model_preset_description: str = ""
    command: List[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return f"model-{self.impl.name}"


def _load_loss(impl: LossImplementation, backend: Backend, model, tracker: LabelTracker):
    """``loss_fn(batch) -> (loss, reported)`` of the implementation on the model's outputs."""
    if impl.model_loss is not None:
        return lambda batch: impl.model_loss(backend, model, batch, tracker.region)
    return lambda batch: full_joiner_loss(impl, backend, model, batch, tracker)


def _new_summary(request: ProfileRequest) -> RunSummary:
    config = request.config
    batching = (f"sorted by T, at most {config.max_frames} frames per batch counted after the {SUBSAMPLING_FACTOR}x "
                f"subsampling (input frames T_in = {SUBSAMPLING_FACTOR} T + 3)" if config.sort_utterance
                else f"{config.batch_size} consecutive utterances per batch (input frames T_in = "
                f"{SUBSAMPLING_FACTOR} T + 3)")
    summary = RunSummary(
        implementation=request.run_name, label=request.run_name, mode=config.mode, batching=batching,
        preset=config.preset, preset_reason=config.preset_reason, schedule=config.schedule.to_dict(), seed=config.seed,
        shape_info=config.shape_info, config=config.to_dict(), command=request.command or sys.argv,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        run_dir=config.run_dir(request.run_name), config_hash=config.fingerprint(request.run_name))
    summary.environment = current_environment(config.device)
    summary.extras = {
        "kind": MODEL_PROFILE_KIND, "loss": request.impl.name, "model_preset": request.model_preset_description,
        "model": request.model.to_dict(),
        "step": "random features and targets, encoder, decoder, loss, loss.backward(), zero_grad(set_to_none=True); "
                "no optimizer step",
        "label_order": [], "labels": {}, "memory_device": "cuda" if config.device == "cuda" else "cpu",
    }
    return summary


class _ModelRun(ProfiledRun):
    """The model's training step under the profiler, each labelled part measured on its own."""

    def __init__(self, request: ProfileRequest):
        import torch

        from tlbench.tools.model import TransducerModel

        super().__init__(request.impl, request.config, request.run_name, _new_summary(request))
        self.device = torch.device(self.config.device)
        torch.manual_seed(self.config.seed)
        self.model = TransducerModel(request.model).to(self.device).train()
        self.tracker = LabelTracker()
        self.summary.extras["num_parameters"] = self.model.num_parameters()
        self.summary.extras["label_targets"] = attach_labels(self.model, self.tracker)
        self.collector: Optional[LabelCollector] = None

    def opened(self, backend: Backend) -> None:
        super().opened(backend)
        self.summary.label = f"{self.run_name} ({backend.label(self.impl.name)})"

    def shape_table(self):
        from tlbench.data.shape_table import load_shape_info

        return load_shape_info(self.config.shape_info)

    def make_step(self, backend: Backend):
        loss_fn = _load_loss(self.impl, backend, self.model, self.tracker)
        self.writer = TraceWriter(self.run_dir, self.config.device)
        self.collector = LabelCollector(self.config.device, self.tracker, self.writer.sort_by)
        self.writer.on_cycle.append(self.collector)

        def step(shapes):
            try:
                return training_step(self.model, loss_fn, shapes, self.tracker, self.device)
            except Exception:
                self.tracker.abandon()  # no record_function may stay open past a failed step
                self.model.zero_grad(set_to_none=True)
                raise

        return step

    def key_averages(self, profiled) -> List[str]:
        return self.collector.full_tables or ["(no completed profiling cycle)"]

    def failing_batch(self, details, shapes):
        from tlbench.tools.model import input_length_for

        return {**details["failing_batch"], "T_in_max": input_length_for(max(t for t, _ in shapes))}

    def measured(self, profiled) -> None:
        self.tracker.detach()
        summary, extras, collector = self.summary, self.summary.extras, self.collector
        for path in self.writer.trace_paths:
            span_peaks(path, profiled.memory_device, collector.labels, self.tracker.intervals)
        summary.loss_time_us, summary.loss_times_us = None, []  # the labels give the loss time, per part
        measurement = StepMeasurement(profiled.step_times_us)
        for label in collector.labels.values():
            label.num_steps = len(profiled.step_times_us)
            label.avg_step_time_us = measurement.mean_us if profiled.step_times_us else 0.0
            label.share_basis = "device" if self.config.device == "cuda" else "cpu"
        extras["label_order"] = label_order(self.tracker)
        extras["labels"] = {name: collector.labels[name].to_dict() for name in sorted(collector.labels)}
        top_level = [label for label, depth in extras["label_order"] if depth == 0] + [WHOLE_BACKWARD_LABEL]
        shares = [extras["labels"].get(label, {}).get("share_of_step_pct") for label in top_level]
        extras["unlabelled_share_pct"] = ((100.0 - sum(s for s in shares if s is not None))
                                          if profiled.step_times_us else None)
        extras["label_table_file"] = "rnnt_table.txt"


def run_profile(request: ProfileRequest) -> RunSummary:
    """Profiles the model's training step; writes the run folder and returns its summary."""
    run = _ModelRun(request)
    result = run.run()
    if run.collector is not None:
        table = label_table(result) if result.step_times_us else "(no recorded step)"
        atomic_write_text(os.path.join(run.run_dir, "rnnt_table.txt"),
                          f"{describe_profile(result)}\n\n{table}\n\n" + "\n".join(run.collector.filtered_tables))
    return result
