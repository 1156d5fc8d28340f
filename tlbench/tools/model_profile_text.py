"""The text a model profile writes and prints: what ran, then one row per forward label with
its backward label beside it (``rnnt_table.txt`` and ``profile_model.py``'s output)."""

from __future__ import annotations

from typing import Optional

__all__ = ["BACKWARD_SUFFIX", "WHOLE_BACKWARD_LABEL", "describe_profile", "label_table"]

# The label of a forward label's autograd nodes is the label plus this suffix; the whole
# loss.backward() call has a label of its own.
BACKWARD_SUFFIX = "_backward"
WHOLE_BACKWARD_LABEL = "rnnt_backward"


def _ms(value_us: Optional[float]) -> str:
    return "-" if value_us is None else f"{value_us / 1000:.2f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def label_table(summary) -> str:
    """``profile_model.py``'s table of a :class:`tlbench.measure.summary.RunSummary` it wrote: one row
    per forward label with its backward label beside it."""
    extras = summary.extras
    labels = extras["labels"]
    basis = "device" if summary.device == "cuda" else "CPU"
    header = (f"{'label':<44} {'calls':>6} {'fwd ms/step':>12} {'bwd ms/step':>12} {'fwd %':>7} {'bwd %':>7} "
              f"{'fwd+bwd %':>9} {'peak MB':>9}")
    lines = [header, "-" * len(header)]
    for label, depth in extras["label_order"]:
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
    lines.append(f"average step {summary.avg_step_time_us / 1000:.2f} ms over {len(summary.step_times_us)} "
                 f"recorded steps; outside the top-level labels and {WHOLE_BACKWARD_LABEL} (data, zero_grad, "
                 f"profiler): {_pct(extras['unlabelled_share_pct'])}%; peak memory {summary.peak_memory_mb:.1f} MB")
    lines.append(f"times are {basis} times; bwd = the autograd nodes created inside the label (their "
                 "evaluate_function events); 'peak MB' = largest total allocated "
                 f"({extras['memory_device']}) while the label or those nodes ran")
    return "\n".join(lines)


def describe_profile(summary) -> str:
    """The lines ``profile_model.py`` prints above its table: what ran, on what, with which batches."""
    extras = summary.extras
    model = extras["model"]
    schedule = summary.schedule
    return "\n".join([
        f"{summary.label} on {summary.device} ({summary.device_name}), {summary.preset_reason}",
        f"model: {extras['model_preset']}; sizes: {model['num_layers']} layers, dim {model['model_dim']}, "
        f"{model['num_heads']} heads, feed-forward {model['ffn_dim']}, kernel {model['conv_kernel_size']}, "
        f"decoder {model['decoder_dim']}, joiner {model['joiner_dim']}, V {model['vocab_size']} "
        f"({extras.get('num_parameters', 0) / 1e6:.1f} M parameters)",
        f"batches: {summary.batching}; schedule wait={schedule['wait']} warmup={schedule['warmup']} "
        f"active={schedule['active']} repeat={schedule['repeat']}",
        f"step: {extras['step']}",
    ])
