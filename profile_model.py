#!/usr/bin/env python3
"""Where a transducer training step spends its time: a Conformer transducer under torch.profiler.

One step: random features and targets sized by a batch of the shape table, the encoder (4x
front end + torchaudio Conformer), the stateless decoder, the loss (``--loss``: any
implementation of the registry, default k2_pruned: the icefall chain 0.5 * simple + pruned),
``loss.backward()`` and ``zero_grad(set_to_none=True)``; see :mod:`tlbench.tools.model_profile`.

Writes into ``<out-dir>/model-<loss>-<mode>/``: Chrome traces (one folder per profiler cycle),
``key_averages.txt`` (the full table of each cycle), ``rnnt_table.txt`` (the filtered ``rnnt*``
rows) and ``summary.json``; prints the label table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import List, Optional

from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.status import EXIT_CODES, Status
from tlbench.implementations.registry import builtin_names, load
from tlbench.run.options import add_run_arguments, resolve_config, resolve_device, resolve_preset
from tlbench.tools.model import ModelConfig

MODEL_FLAGS = {"num_layers": int, "model_dim": int, "num_heads": int, "ffn_dim": int, "conv_kernel_size": int,
               "decoder_dim": int, "joiner_dim": int, "dropout": float}
DEFAULT_LOSS = "k2_pruned"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Profile a Conformer transducer training step and report where "
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
    parser.add_argument("--loss", default=DEFAULT_LOSS, metavar="NAME",
                        help=f"the loss: {', '.join(builtin_names())} or MODULE_OR_FILE:NAME (default {DEFAULT_LOSS})")
    group = parser.add_argument_group("model size (default: from the preset)")
    for name, kind in MODEL_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    return parser


def request_from_args(args: argparse.Namespace, command: List[str]):
    """Validates the flags (UsageError) and builds the request."""
    from tlbench.tools.model_profile import MODEL_PRESETS, ProfileRequest

    impl = load(args.loss)
    if args.encoder_out_dim != 512:
        raise UsageError("--encoder-out-dim does not apply to the model; use --model-dim, --decoder-dim or --joiner-dim")
    preset_name, _ = resolve_preset(args.preset, resolve_device(args.device))
    model_preset = MODEL_PRESETS[preset_name]
    if args.max_frames is None and args.sort_utterance:
        args.max_frames = model_preset.max_frames
    config = resolve_config(args)
    sizes = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    model: ModelConfig = replace(model_preset.model, vocab_size=config.vocab_size, **sizes)
    try:
        model.validate()
    except ValueError as error:
        raise UsageError(f"model size: {error}") from None
    description = model_preset.description + (" (sizes changed by flags)" if sizes else "")
    if preset_name != "quick" and config.device == "cpu":
        description += "; the full model on CPU takes minutes per step"
    return ProfileRequest(config=config, model=model, impl=impl, model_preset_description=description,
                          command=command)


def main(argv: Optional[List[str]] = None) -> None:
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]

    @exit_on_usage_error
    def run():
        from tlbench.tools.model_profile import run_profile

        return run_profile(request_from_args(build_parser().parse_args(argv), command))

    summary = run()
    from tlbench.tools.model_profile_text import describe_profile, label_table

    print(describe_profile(summary), flush=True)
    if summary.status != Status.OK:
        print(f"{summary.label}: {summary.status}: {summary.reason}", flush=True)
    elif summary.step_times_us:
        print(label_table(summary), flush=True)
    print(f"-> {summary.run_dir}", flush=True)
    raise SystemExit(EXIT_CODES[summary.status])


if __name__ == "__main__":
    main()
