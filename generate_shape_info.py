#!/usr/bin/env python3
"""Writes a shape table (``shape_info.pt``) for the benchmarks: an int32 ``(num_cuts, 2)``
tensor of ``[T, U]`` rows, T the encoder frames after subsampling, U the BPE tokens.

Two sources (see :mod:`tlbench.data.manifests`):

- ``--manifest CUTS --bpe-model BPE``: a real lhotse cut manifest; U from the sentencepiece
  model, T from the cut's feature frames after the encoder's subsampling.
- ``--synthetic librispeech-100 --seed N``: a generated table that looks like the
  speed-perturbed LibriSpeech train-clean-100 table; a calibration report against the real
  table's statistics is printed after generating.

Examples::

  python generate_shape_info.py --manifest data/fbank/cuts_train.jsonl.gz \\
      --bpe-model data/lang_bpe_500/bpe.model
  python generate_shape_info.py --synthetic librispeech-100 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.io import atomic_save_tensor, check_output_file
from tlbench.data.manifests import (
    DEFAULT_OUTPUT,
    DEFAULT_REFERENCE_STATS,
    SYNTHESIZERS,
    SYNTHETIC_CHOICES,
    calibration_report,
    load_reference_stats,
    shape_info_from_manifest,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Write a [T, U] shape table (int32 (N, 2)) from a lhotse cut manifest, "
                            "or a synthetic LibriSpeech-like one.")
    parser.add_argument("--manifest", help="lhotse cut manifest (.json, .json.gz, .jsonl, .jsonl.gz)")
    parser.add_argument("--bpe-model", help="sentencepiece model used to count tokens (U)")
    parser.add_argument("--subsampling-factor", type=int, default=4,
                        help="encoder subsampling: 1 or a product of 2s and 3s (default 4: T = ((n - 1) // 2 - 1) // 2 "
                        "for n input frames)")
    parser.add_argument("--synthetic", choices=SYNTHETIC_CHOICES,
                        help="generate a synthetic table instead of reading a manifest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator (default 0)")
    parser.add_argument("--reference-stats", default=None,
                        help="statistics json to calibrate the synthetic table against (default: "
                        f"{os.path.relpath(DEFAULT_REFERENCE_STATS, REPO_DIR)} next to the repository, if present)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="where to write the table with torch.save (default: shape_info.pt in the repository)")
    return parser


def synthetic(args) -> int:
    from tlbench.render.tables import calibration_table

    if args.manifest is not None or args.bpe_model is not None:
        raise UsageError("--synthetic cannot be combined with --manifest/--bpe-model; choose one source")
    if args.subsampling_factor != 4:
        raise UsageError(f"--subsampling-factor {args.subsampling_factor} is not allowed with --synthetic; "
                         "the synthetic table is in frames after 4x subsampling")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} is not allowed; use an integer >= 0")
    stats_path = os.path.normpath(args.reference_stats or DEFAULT_REFERENCE_STATS)
    stats = None
    if args.reference_stats is not None or os.path.isfile(stats_path):
        stats = load_reference_stats(stats_path)  # before writing: a bad path fails cleanly
    table = SYNTHESIZERS[args.synthetic](args.seed)
    atomic_save_tensor(args.output, table)
    print(f"wrote synthetic {args.synthetic} table (seed {args.seed}): {tuple(table.shape)} int32 to {args.output}")
    if stats is None:
        print(f"calibration report skipped: no reference statistics at {stats_path}")
        return 0
    print(f"calibration against {stats_path}:")
    print(calibration_table(calibration_report(table, stats)))
    return 0


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.output = check_output_file(args.output, "--output")
    if args.synthetic is not None:
        return synthetic(args)
    if args.manifest is None or args.bpe_model is None:
        raise UsageError("pass --manifest CUTS and --bpe-model BPE, or --synthetic librispeech-100")
    table, summary = shape_info_from_manifest(args.manifest, args.bpe_model, args.subsampling_factor)
    atomic_save_tensor(args.output, table)
    print(summary.describe())
    print(f"wrote {tuple(table.shape)} int32 [T, U] table to {args.output} "
          f"(T after {args.subsampling_factor}x subsampling: {int(table[:, 0].min())}..{int(table[:, 0].max())}, "
          f"U: {int(table[:, 1].min())}..{int(table[:, 1].max())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
