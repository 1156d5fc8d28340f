"""Command-line flags shared by every benchmark script, presets and device choice."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional

from tlbench import REPO_DIR
from tlbench.core.errors import UsageError
from tlbench.core.io import check_input_file, check_output_dir

__all__ = ["DEFAULT_SEED", "DTYPES", "PRESETS", "Preset", "RunConfig", "add_run_arguments", "forwarded_flags",
           "parse_bool", "resolve_config", "resolve_device", "resolve_preset"]

DEFAULT_SEED = 20220227


@dataclass(frozen=True)
class Preset:
    batch_size: int
    max_frames: int
    wait: int
    warmup: int
    active: int
    repeat: int
    description: str


PRESETS = {
    # The published benchmark's configuration (fits a 32 GB V100).
    "original": Preset(30, 10000, wait=10, warmup=10, active=20, repeat=2,
                       description="published configuration: batch size 30 / max frames 10000, "
                       "schedule wait=10 warmup=10 active=20 repeat=2"),
    # On a 2-core CPU one step of 8 real utterances takes 3-10 s, so the published schedule
    # (80 steps of 30 utterances) would take hours; quick keeps the method and shrinks the work.
    # No wait step: the warm-up step already absorbs one-time costs (lazy init, first allocations).
    "quick": Preset(1, 1000, wait=0, warmup=1, active=3, repeat=1,
                    description="quick CPU configuration: batch size 1 / max frames 1000, "
                    "schedule wait=0 warmup=1 active=3 repeat=1"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one benchmark run (recorded in its summary.json)."""

    device: str  # "cpu" or "cuda"
    preset: str  # "original" or "quick" (after resolving "auto")
    preset_reason: str
    sort_utterance: bool
    batch_size: int
    max_frames: int
    shape_info: str
    wait: int
    warmup: int
    active: int
    repeat: int
    vocab_size: int
    encoder_out_dim: int
    seed: int
    out_dir: str
    dtype: str = "float32"
    subsampling_factor: int = 4
    max_utterance_frames: Optional[int] = None
    memory_budget_gb: Optional[float] = None  # CUDA: this process's cap (set_per_process_memory_fraction)

    @property
    def mode(self) -> str:
        """Batching mode, also the run folder's suffix: ``30`` or ``max-frames-10000``, plus
        ``-float16``, ``-sub8`` or ``-tmax100`` when dtype, subsampling or the utterance-length
        cap differ from the published float32, 4x and none, so that such runs never overwrite
        the standard ones (use --out-dir to keep runs with other sizes apart)."""
        base = f"max-frames-{self.max_frames}" if self.sort_utterance else str(self.batch_size)
        if self.dtype != "float32":
            base += f"-{self.dtype}"
        if self.subsampling_factor != 4:
            base += f"-sub{self.subsampling_factor}"
        if self.max_utterance_frames is not None:
            base += f"-tmax{self.max_utterance_frames}"
        return base

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def schedule(self):
        from tlbench.measure.profiling import Schedule

        return Schedule(self.wait, self.warmup, self.active, self.repeat)

    def fingerprint(self, implementation: str) -> str:
        """A hash of everything that defines a run of ``implementation`` under this config
        (the shape table by content, not path; not where the results go): what ``--resume``
        compares."""
        import hashlib
        import json

        defining = {k: v for k, v in self.to_dict().items() if k not in ("out_dir", "preset_reason", "shape_info")}
        with open(self.shape_info, "rb") as f:
            defining["shape_info_sha256"] = hashlib.sha256(f.read()).hexdigest()
        defining["implementation"] = implementation
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]

    def run_dir(self, name: str) -> str:
        return os.path.join(self.out_dir, f"{name}-{self.mode}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use true or false")


def add_run_arguments(parser: argparse.ArgumentParser, sort_choices_both: bool = False) -> None:
    """Adds the flags every benchmark shares. Defaults of None mean "from the preset"."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--preset", default="auto",
                        help="original (published configuration), quick (small CPU run) or auto "
                        "(original on CUDA, quick on CPU)")
    if sort_choices_both:
        parser.add_argument("--sort-utterance", default="both",
                            help="false: fixed batch size; true: sorted, packed by --max-frames; both (default)")
    else:
        parser.add_argument("--sort-utterance", type=parse_bool, default=False,
                            help="false (default): fixed batch size; true: sort by T and pack up to --max-frames")
    parser.add_argument("--batch-size", type=int, default=None, help="utterances per batch when not sorting")
    parser.add_argument("--max-frames", type=int, default=None, help="most frames (sum of T) per sorted batch")
    parser.add_argument("--shape-info", default=os.path.join(REPO_DIR, "shape_info.pt"),
                        help="shape table (N, 2) of [T, U] (default: shape_info.pt in the repository)")
    for name in ("wait", "warmup", "active", "repeat"):
        parser.add_argument(f"--{name}", type=int, default=None, help=f"profiler schedule: {name}")
    parser.add_argument("--vocab-size", type=int, default=500, help="V, the joiner's output size (default 500)")
    parser.add_argument("--encoder-out-dim", type=int, default=512, help="encoder/decoder output size (default 512)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out-dir", default=os.path.join(REPO_DIR, "log"),
                        help="where run folders go (default: log/ in the repository)")
    parser.add_argument("--dtype", default="float32", help="logits dtype: float32 (default), float16 or bfloat16")
    parser.add_argument("--max-utterance-frames", type=int, default=None,
                        help="drop utterances with T above this before batching (default: keep all)")
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="CUDA: cap this process's GPU memory at this many GiB (torch.cuda."
                        "set_per_process_memory_fraction), to study a smaller card on a larger one; not used on CPU")
    parser.add_argument("--subsampling-factor", type=int, default=4,
                        help="encoder subsampling; the table's T (for 4x) becomes max(1, round(T * 4 / factor))")


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; raises UsageError for an
    unknown device or ``cuda`` without a GPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {requested!r} is not allowed; use auto, cpu or cuda")
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    return requested


def resolve_preset(requested: str, device: str) -> tuple:
    if requested == "auto":
        chosen = "original" if device == "cuda" else "quick"
        return chosen, f"--preset auto chose {chosen} because the device is {device}"
    if requested not in PRESETS:
        raise UsageError(f"--preset {requested!r} is not allowed; use auto, original or quick")
    return requested, f"--preset {requested} was requested"


def _positive(value: Optional[int], flag: str, default: int, minimum: int = 1) -> int:
    chosen = default if value is None else value
    if chosen < minimum:
        raise UsageError(f"{flag} {chosen} is not allowed; it must be >= {minimum}")
    return chosen


DTYPES = ("float32", "float16", "bfloat16")


def resolve_config(args: argparse.Namespace, sort_utterance: Optional[bool] = None,
                   quick_overrides: Optional[dict] = None) -> RunConfig:
    """Turns parsed flags into a validated :class:`RunConfig` (raises UsageError).

    ``quick_overrides`` replaces quick-preset values (e.g. a smaller batch for a very slow
    implementation); flags given explicitly still win.
    """
    device = resolve_device(args.device)
    preset_name, reason = resolve_preset(args.preset, device)
    preset = PRESETS[preset_name]
    if preset_name == "quick" and quick_overrides:
        preset = dataclasses.replace(preset, **{k: v for k, v in quick_overrides.items() if hasattr(preset, k)})
        reason += f"; this implementation's quick preset uses {quick_overrides}"
    max_utterance_frames = args.max_utterance_frames
    if max_utterance_frames is None and preset_name == "quick" and quick_overrides:
        max_utterance_frames = quick_overrides.get("max_utterance_frames")
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype {args.dtype!r} is not allowed; use {', '.join(DTYPES)}")
    if args.subsampling_factor not in (2, 4, 6, 8):
        raise UsageError(f"--subsampling-factor {args.subsampling_factor} is not allowed; use 2, 4, 6 or 8")
    shape_info = check_input_file(args.shape_info, "--shape-info", "shape table file")
    from tlbench.data.shape_table import load_shape_info

    load_shape_info(shape_info)  # fail on a bad table before any run folder is touched
    config = RunConfig(
        device=device,
        preset=preset_name,
        preset_reason=reason,
        sort_utterance=args.sort_utterance if sort_utterance is None else sort_utterance,
        batch_size=_positive(args.batch_size, "--batch-size", preset.batch_size),
        max_frames=_positive(args.max_frames, "--max-frames", preset.max_frames),
        shape_info=shape_info,
        wait=_positive(args.wait, "--wait", preset.wait, minimum=0),
        warmup=_positive(args.warmup, "--warmup", preset.warmup, minimum=0),
        active=_positive(args.active, "--active", preset.active),
        repeat=_positive(args.repeat, "--repeat", preset.repeat),
        vocab_size=_positive(args.vocab_size, "--vocab-size", 500, minimum=2),
        encoder_out_dim=_positive(args.encoder_out_dim, "--encoder-out-dim", 512),
        seed=args.seed,
        out_dir=os.path.abspath(args.out_dir),
        dtype=args.dtype,
        subsampling_factor=args.subsampling_factor,
        max_utterance_frames=(None if max_utterance_frames is None
                              else _positive(max_utterance_frames, "--max-utterance-frames", 1)),
        memory_budget_gb=_budget(getattr(args, "memory_budget_gb", None), device),
    )
    check_output_dir(config.out_dir, "--out-dir")  # last: a refused run creates nothing
    return config


def _budget(value: Optional[float], device: str) -> Optional[float]:
    if value is None:
        return None
    if not value > 0:
        raise UsageError(f"--memory-budget-gb {value} is not allowed; it must be > 0")
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        if value > total:
            raise UsageError(f"--memory-budget-gb {value} is more than the GPU's {total:.1f} GiB")
    return float(value)


def forwarded_flags(args: argparse.Namespace) -> List[str]:
    """The shared flags as given, to pass on to a benchmark subprocess (sort flag excluded)."""
    flags: List[str] = ["--device", args.device, "--preset", args.preset, "--shape-info", args.shape_info,
                        "--vocab-size", str(args.vocab_size), "--encoder-out-dim", str(args.encoder_out_dim),
                        "--seed", str(args.seed), "--out-dir", args.out_dir, "--dtype", args.dtype,
                        "--subsampling-factor", str(args.subsampling_factor)]
    for name in ("batch_size", "max_frames", "wait", "warmup", "active", "repeat", "max_utterance_frames",
                 "memory_budget_gb"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags
