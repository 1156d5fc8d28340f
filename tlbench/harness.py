"""The shared benchmark harness: one profiled training-like loop for any transducer loss.

A benchmark script describes only its implementation (a :class:`LossImplementation`)
and calls :func:`main`. The harness parses the shared flags, seeds, draws batches from
the shape table, runs the steps under ``torch.profiler``, writes Chrome traces, the
``key_averages`` table and ``summary.json`` into ``<out-dir>/<name>-<mode>/``, and prints
one line with the average step time and peak memory.

One step = build random data, joiner, loss, backward, zero grads. The loss call and its
backward run inside ``record_function(<name>)`` (the "loss region").
"""

from __future__ import annotations

import argparse
import datetime
import glob
import itertools
import math
import os
import platform
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from .errors import UsageError, exit_on_usage_error
from .io import atomic_write_json, atomic_write_text
from .measurement import StepMeasurement
from .options import RunConfig, add_run_arguments, resolve_config

# Kineto logs "gpuGetDeviceCount failed" on every profile of a CUDA build of torch on a
# machine without a GPU; it must be silenced before torch loads kineto.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")

STATUS_OK, STATUS_OOM, STATUS_UNAVAILABLE, STATUS_UNSUPPORTED, STATUS_ERROR = (
    "ok", "oom", "unavailable", "unsupported", "error")
EXIT_CODES = {STATUS_OK: 0, STATUS_OOM: 0, STATUS_UNAVAILABLE: 0, STATUS_UNSUPPORTED: 0, STATUS_ERROR: 1}
_DTYPE_ERROR_WORDS = ("dtype", "half", "bfloat16", "float16", "scalar type", "must be float", "not implemented for")


class BackendUnavailable(Exception):
    """The implementation's library cannot be imported or cannot run on this device."""

    def __init__(self, reason: str, install_hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.install_hint = install_hint


@dataclass
class Backend:
    """The library that computes the loss, e.g. name "fast_rnnt", version "1.3"."""

    name: str
    version: str
    module: Any = None

    def label(self, implementation: str) -> str:
        if self.name == implementation:
            return f"{implementation} {self.version}"
        return f"{implementation} ({self.name} {self.version})"


@dataclass
class LossImplementation:
    """What is specific to one loss implementation.

    Attributes:
      name: run-folder prefix and ``record_function`` label, e.g. ``"torchaudio"``.
      load_backend: imports the library; raises :class:`BackendUnavailable` when it can't.
      prepare: ``(backend, batch, joiner) -> inputs``, the joiner outside the loss region.
      loss: ``(backend, inputs, batch, joiner) -> (loss_to_backprop, reported_loss)``, run
        inside the loss region together with ``loss_to_backprop.backward()``; both scalars.
      supports_device: ``device -> None`` or a reason why the device is not supported.
      supports_config: ``config -> None`` or why this configuration (dtype, sizes) is not
        supported; recorded as status "unsupported" without running.
      hide_inner_ops: run the loss call with record_function callbacks off, so that the
        trace shows the loss region but not the ops inside it. For an implementation that
        issues hundreds of tiny torch ops per lattice cell, recording them costs gigabytes
        and several times the loss's own run time.
      warm_up: ``(backend, device) -> None``, run once before profiling (e.g. to trigger a
        JIT compilation that would otherwise land in a measured step).
      quick_overrides: quick-preset values replaced for this implementation (a very slow
        one takes smaller batches), e.g. ``{"batch_size": 1}``.
    """

    name: str
    load_backend: Callable[[], Backend]
    prepare: Callable[..., Any]
    loss: Callable[..., Tuple[Any, Any]]
    supports_device: Callable[[str], Optional[str]] = lambda device: None
    supports_config: Callable[[RunConfig], Optional[str]] = lambda config: None
    warm_up: Optional[Callable[[Backend, Any], None]] = None
    hide_inner_ops: bool = False
    quick_overrides: Optional[dict] = None


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def classify_step_failure(error: BaseException, step: int, shapes, dtype: str = "float32") -> Tuple[str, str, dict]:
    """Status, one-line reason and summary details for an exception raised inside a step.

    Out of memory -> "oom"; a non-float32 dtype the library refuses -> "unsupported";
    anything else -> "error" (with the traceback's tail in the details).
    """
    failing = {"step": step, **_batch_size_summary(shapes)}
    details: dict = {"failing_batch": failing}
    first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    if _is_out_of_memory(error):
        return STATUS_OOM, (f"out of memory at step {step} on a batch of {failing['num_utterances']} utterances, "
                            f"T_max={failing['T_max']}, U_max={failing['U_max']}: {first_line}"), details
    if dtype != "float32" and any(word in str(error).lower() for word in _DTYPE_ERROR_WORDS):
        return STATUS_UNSUPPORTED, f"{dtype} logits refused: {type(error).__name__}: {first_line}", details
    details["traceback"] = traceback.format_exc()[-4000:]
    return STATUS_ERROR, f"{type(error).__name__} at step {step}: {str(error).strip()[:500]}", details


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


class _TraceWriter:
    """``on_trace_ready`` handler: the traces tensorboard_trace_handler would write (same
    file naming), written atomically, plus each cycle's key_averages table."""

    def __init__(self, run_dir: str, device: str):
        self.run_dir = run_dir
        self.sort_by = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        self.worker = f"{socket.gethostname()}_{os.getpid()}"
        self.trace_paths: List[str] = []
        self.tables: List[str] = []

    def __call__(self, prof) -> None:
        path = os.path.join(self.run_dir, f"{self.worker}.{time.time_ns() // 1_000_000}.pt.trace.json")
        tmp_path = os.path.join(self.run_dir, f".tmp-{os.path.basename(path)}")
        prof.export_chrome_trace(tmp_path)
        os.replace(tmp_path, path)
        self.trace_paths.append(path)
        table = prof.key_averages(group_by_stack_n=10).table(sort_by=self.sort_by, row_limit=8)
        self.tables.append(f"# cycle {len(self.tables) + 1}: {os.path.basename(path)}\n"
                           f"# key_averages(group_by_stack_n=10), sorted by {self.sort_by}, 8 rows\n{table}\n")


def plan_batches(shape_info, config: RunConfig) -> Tuple[list, bool]:
    """The batches of all ``config.num_steps`` steps, as lists of (T, U), and whether the
    sampler had to start over (fewer batches than steps).

    Args:
      shape_info: ``(N, 2)`` int64 table of [T, U] rows, already validated.
    """
    from shape_sampler import ShapeSampler, SortedShapeSampler

    sampler = (SortedShapeSampler(shape_info, config.max_frames) if config.sort_utterance
               else ShapeSampler(shape_info, config.batch_size))
    if len(sampler) == 0:
        raise UsageError(f"--batch-size {config.batch_size} is larger than the shape table "
                         f"({shape_info.size(0)} rows): no full batch; use a smaller --batch-size")
    batches = list(itertools.islice(itertools.cycle(sampler), config.num_steps))
    return batches, config.num_steps > len(sampler)


def run_benchmark(impl: LossImplementation, config: RunConfig, command: Optional[List[str]] = None) -> dict:
    """Runs one implementation under the profiler and returns its summary (also written)."""
    import torch
    from shape_sampler import load_shape_info

    from .data import Joiner, make_batch, rescale_frames
    from .trace import parse_trace

    run_dir = config.run_dir(impl.name)
    os.makedirs(run_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(run_dir, "*.pt.trace.json*")) + glob.glob(os.path.join(run_dir, "summary.json")):
        os.remove(stale)
    summary: dict = {
        "implementation": impl.name,
        "label": impl.name,
        "backend": None,
        "backend_version": None,
        "status": STATUS_OK,
        "reason": None,
        "device": config.device,
        "device_name": _device_name(config.device),
        "mode": config.mode,
        "batching": (f"sorted by T, at most {config.max_frames} frames per batch" if config.sort_utterance
                     else f"{config.batch_size} consecutive utterances per batch"),
        "preset": config.preset,
        "preset_reason": config.preset_reason,
        "schedule": {"wait": config.wait, "warmup": config.warmup, "active": config.active, "repeat": config.repeat},
        "seed": config.seed,
        "vocab_size": config.vocab_size,
        "dtype": config.dtype,
        "subsampling_factor": config.subsampling_factor,
        "max_utterance_frames": config.max_utterance_frames,
        "inner_ops_hidden": impl.hide_inner_ops,
        "encoder_out_dim": config.encoder_out_dim,
        "shape_info": config.shape_info,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "config": config.to_dict(),
        "command": command or sys.argv,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": run_dir,
    }
    summary.update(StepMeasurement([]).to_dict())
    summary["peak_memory_mb"] = None

    def finish(status: str, reason: Optional[str] = None) -> dict:
        summary["status"], summary["reason"] = status, reason
        atomic_write_json(os.path.join(run_dir, "summary.json"), _finite_or_none(summary))
        return summary

    unsupported = impl.supports_device(config.device)
    if unsupported:
        return finish(STATUS_UNAVAILABLE, unsupported)
    unsupported = impl.supports_config(config)
    if unsupported:
        return finish(STATUS_UNSUPPORTED, unsupported)
    try:
        backend = impl.load_backend()
    except BackendUnavailable as missing:
        hint = f" ({missing.install_hint})" if missing.install_hint else ""
        return finish(STATUS_UNAVAILABLE, f"{missing.reason}{hint}")
    summary.update(backend=backend.name, backend_version=backend.version, label=backend.label(impl.name))

    shape_info = rescale_frames(load_shape_info(config.shape_info), config.subsampling_factor)
    if config.max_utterance_frames is not None:
        shape_info = shape_info[shape_info[:, 0] <= config.max_utterance_frames]
        if shape_info.size(0) == 0:
            raise UsageError(f"--max-utterance-frames {config.max_utterance_frames} leaves no utterance in "
                             f"{config.shape_info}; use a larger value")
    batches, summary["batches_reused"] = plan_batches(shape_info, config)

    device = torch.device(config.device)
    logits_dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    joiner = Joiner(config.encoder_out_dim, config.vocab_size).to(device)
    if impl.warm_up is not None:
        impl.warm_up(backend, device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if config.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.reset_peak_memory_stats()
    writer = _TraceWriter(run_dir, config.device)
    cycle_length = config.wait + config.warmup + config.active
    active_steps = [i for i in range(config.num_steps) if i % cycle_length >= config.wait + config.warmup]
    reported_losses = {}
    status, reason, current_step = STATUS_OK, None, 0

    from tqdm import tqdm

    # We write a trace and a key_averages table per cycle, so per-cycle clearing is intended.
    warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle.*")

    with torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=config.wait, warmup=config.warmup, active=config.active,
                                         repeat=config.repeat),
        on_trace_ready=writer,
        record_shapes=True,
        with_stack=True,
        profile_memory=True,
    ) as prof:
        progress = tqdm(batches, desc=f"{impl.name}-{config.mode}", unit="step", file=sys.stderr,
                        dynamic_ncols=True, mininterval=1.0)
        for current_step, shapes in enumerate(progress):
            try:
                batch = make_batch(shapes, config.vocab_size, config.encoder_out_dim, device, logits_dtype)
                inputs = impl.prepare(backend, batch, joiner)
                with torch.profiler.record_function(impl.name):
                    if impl.hide_inner_ops:
                        torch._C._autograd._enable_record_function(False)
                    try:
                        loss, reported = impl.loss(backend, inputs, batch, joiner)
                        loss.backward()
                    finally:
                        torch._C._autograd._enable_record_function(True)
                joiner.zero_grad(set_to_none=True)
                if current_step in active_steps:
                    reported_losses[current_step] = reported.detach()
                del batch, inputs, loss, reported
            except Exception as error:  # one failing step ends the run with a recorded status
                status, reason, details = classify_step_failure(error, current_step, shapes, config.dtype)
                summary.update(details)
                break
            prof.step()
        progress.close()

    atomic_write_text(os.path.join(run_dir, "key_averages.txt"), "\n".join(writer.tables) or "(no completed cycle)\n")
    memory_device = "cuda" if config.device == "cuda" else "cpu"
    step_times, loss_times, traces, peak_bytes = [], [], [], 0
    for path in writer.trace_paths:
        parsed = parse_trace(path, region_name=impl.name)
        times = [s.duration_us for s in parsed.steps]
        step_times += times
        loss_times += [parsed.region_us_by_step[s.step] for s in parsed.steps]
        peak = parsed.peak_allocated_bytes.get(memory_device, 0)
        peak_bytes = max(peak_bytes, peak)
        traces.append({"file": os.path.basename(path), "steps": [s.step for s in parsed.steps],
                       "avg_step_time_us": sum(times) / len(times) if times else None,
                       "peak_memory_mb": peak / 2**20})
    measurement = StepMeasurement(step_times, loss_times)
    summary.update(measurement.to_dict())
    summary["peak_memory_mb"] = peak_bytes / 2**20 if traces else None
    summary["peak_memory_source"] = (f"max 'Total Allocated' of the {memory_device} [memory] events in the traces "
                                     "(what TensorBoard's memory view shows)")
    if config.device == "cuda":
        summary["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    summary["traces"] = traces
    summary["key_averages_file"] = "key_averages.txt"
    summary["measured_batches"] = [{"step": i, **_shape_summary(batches[i])} for i in active_steps if i < len(batches)
                                   and (status == STATUS_OK or i < current_step)]
    summary["loss_values"] = [float(reported_losses[i]) for i in sorted(reported_losses)]
    return finish(status, reason)


def _batch_size_summary(shapes) -> dict:
    return {"num_utterances": len(shapes), "T_max": max(t for t, _ in shapes), "U_max": max(u for _, u in shapes)}


def _shape_summary(shapes) -> dict:
    return {**_batch_size_summary(shapes), "shapes": [list(tu) for tu in shapes]}


def summary_line(summary: dict) -> str:
    """The one line a run prints, e.g. ``torchaudio 2.11.0 [30, cpu]: 1234 us/step, 56.7 MB peak``."""
    where = f"[{summary['mode']}, {summary['device']}]"
    if summary["status"] != STATUS_OK:
        return f"{summary['label']} {where}: {summary['status']}: {summary['reason']}"
    return (f"{summary['label']} {where}: average step time {summary['avg_step_time_us']:.0f} us, "
            f"loss region {summary['loss_time_us']:.0f} us, peak memory {summary['peak_memory_mb']:.1f} MB "
            f"({len(summary['step_times_us'])} active steps) -> {summary['run_dir']}")


def main(impl: LossImplementation, argv: Optional[List[str]] = None) -> None:
    """Entry point of every ``benchmark_<impl>.py``."""
    parser = argparse.ArgumentParser(description=f"Benchmark the {impl.name} transducer loss "
                                     "(joiner + loss forward/backward under torch.profiler).")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    command = [sys.argv[0], *(argv or sys.argv[1:])]
    summary = exit_on_usage_error(
        lambda: run_benchmark(impl, resolve_config(args, quick_overrides=impl.quick_overrides), command=command))()
    print(summary_line(summary), flush=True)
    raise SystemExit(EXIT_CODES[summary["status"]])
