#!/usr/bin/env python3
"""Real-time factor and peak memory of transducer losses on a grid of durations x batch sizes.

Each cell is a batch of identical utterances of one duration, run through the shared harness
(see :mod:`tlbench.tools.grid` for the cells, the schedule and the definitions of RTF and memory).
``--impl`` takes built-in names, ``all`` (the registry) or ``MODULE_OR_FILE:NAME`` (repeatable).
Outputs in ``<out-dir>/grid-<impl>/``: ``grid.md`` (both tables), ``grid.csv``, ``grid.json``,
optionally ``grid.tex``, and heatmaps ``grid-<impl>-rtf.png`` / ``grid-<impl>-memory.png`` in
``--pic-dir`` (default ``<out-dir>/pic``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Optional

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.io import check_input_file, check_output_dir
from tlbench.core.status import Status
from tlbench.implementations.registry import builtin_names, load, select
from tlbench.run.options import DEFAULT_SEED, resolve_device


def build_parser() -> argparse.ArgumentParser:
    from tlbench.tools.grid import CONFIG_KEYS, OUTPUT_FORMATS

    parser = ArgumentParser(description="Real-time factor and peak memory of transducer losses on a grid "
                            "of durations x batch sizes.")
    parser.add_argument("--impl", action="append", default=None, metavar="NAME",
                        help=f"{', '.join(builtin_names())}, MODULE_OR_FILE:NAME or all (default all; repeatable)")
    parser.add_argument("--config", default=None, help=f"YAML file with any of: {', '.join(CONFIG_KEYS)}")
    parser.add_argument("--durations", type=float, nargs="+", default=None,
                        help="utterance durations in seconds (default 1 2 5 8 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="batch sizes (default 1 4 8)")
    parser.add_argument("--triangle-only", action=argparse.BooleanOptionalAction, default=None,
                        help="skip the heavy corner (the published triangle rule); shown as N/A")
    parser.add_argument("--export-traces", action=argparse.BooleanOptionalAction, default=None,
                        help="keep each cell's Chrome traces under grid-<impl>/traces/ (default: no)")
    parser.add_argument("--output-formats", nargs="+", default=None,
                        help=f"any of {', '.join(OUTPUT_FORMATS)} (default md csv json)")
    parser.add_argument("--subsampling-factor", type=int, default=4, help="encoder frames = feature frames / this (default 4)")
    parser.add_argument("--tokens-per-frame", type=float, default=None,
                        help="U/T ratio (default: the median of the shape table's U/T)")
    parser.add_argument("--shape-info", default=os.path.join(REPO_DIR, "shape_info.pt"),
                        help="shape table for the U/T ratio (default: shape_info.pt in the repository)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--vocab-size", type=int, default=500, help="V, the joiner's output size (default 500)")
    parser.add_argument("--encoder-out-dim", type=int, default=512, help="C, the joiner's input size (default 512)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out-dir", default=os.path.join(REPO_DIR, "log"),
                        help="where grid-<impl>/ folders go (default: log/ in the repository)")
    parser.add_argument("--pic-dir", default=None, help="where the heatmaps go (default: <out-dir>/pic)")
    return parser


def resolve_args(args: argparse.Namespace):
    """Flags (which win) over the YAML file over the defaults; raises UsageError.
    Returns (implementations, GridSpec, GridSettings)."""
    from tlbench.tools.grid import (
        DEFAULT_BATCH_SIZES,
        DEFAULT_DURATIONS_S,
        DEFAULT_OUTPUT_FORMATS,
        GridSettings,
        GridSpec,
        cell_config,
        check_grid,
        load_grid_config,
        median_tokens_per_frame,
    )

    chosen = [s for s in (args.impl or []) if s != "all"]
    impls = [load(spec) for spec in select(None, chosen)]
    file_config = load_grid_config(args.config) if args.config else {}

    def pick(flag_value, key, default):
        return flag_value if flag_value is not None else file_config.get(key, default)

    spec = check_grid(pick(args.durations, "durations", list(DEFAULT_DURATIONS_S)),
                      pick(args.batch_sizes, "batch_sizes", list(DEFAULT_BATCH_SIZES)),
                      pick(args.output_formats, "output_formats", list(DEFAULT_OUTPUT_FORMATS)))
    spec = GridSpec(spec.durations_s, spec.batch_sizes,
                    triangle_only=bool(pick(args.triangle_only, "triangle_only", False)),
                    export_traces=bool(pick(args.export_traces, "export_traces", False)),
                    output_formats=spec.output_formats)
    if args.subsampling_factor < 1:
        raise UsageError(f"--subsampling-factor {args.subsampling_factor} is not allowed; it must be >= 1")
    for flag, value, minimum in (("--vocab-size", args.vocab_size, 2), ("--encoder-out-dim", args.encoder_out_dim, 1)):
        if value < minimum:
            raise UsageError(f"{flag} {value} is not allowed; it must be >= {minimum}")
    if args.tokens_per_frame is not None:
        if not math.isfinite(args.tokens_per_frame) or args.tokens_per_frame <= 0:
            raise UsageError(f"--tokens-per-frame {args.tokens_per_frame} is not allowed; it must be > 0")
        ratio, source = args.tokens_per_frame, "--tokens-per-frame"
    else:
        shape_info = check_input_file(args.shape_info, "--shape-info", "shape table (for the median U/T ratio) or "
                                      "use --tokens-per-frame")
        ratio, source = median_tokens_per_frame(shape_info), f"median U/T of {os.path.basename(shape_info)}"
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    pic_dir = check_output_dir(args.pic_dir or os.path.join(out_dir, "pic"), "--pic-dir")
    settings = GridSettings(device=resolve_device(args.device), vocab_size=args.vocab_size,
                            encoder_out_dim=args.encoder_out_dim, seed=args.seed,
                            subsampling_factor=args.subsampling_factor, tokens_per_frame=ratio,
                            tokens_per_frame_source=source, out_dir=out_dir, pic_dir=pic_dir)
    probe = cell_config(settings, args.shape_info, 1, 1, out_dir)
    for impl in impls:  # a configuration an implementation refuses fails here, not in every cell
        refused = impl.supports_config(probe)
        if refused:
            raise UsageError(f"{impl.name}: {refused}")
    return impls, spec, settings


def main(argv: Optional[List[str]] = None) -> None:
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    impls, spec, settings = exit_on_usage_error(lambda: resolve_args(build_parser().parse_args(argv)))()
    from tlbench.render.tables import grid_markdown
    from tlbench.report.grid_report import write_outputs
    from tlbench.tools.grid import run_grid

    failed = False
    for impl in impls:
        result = run_grid(impl, spec, settings, command=command)
        written = write_outputs(result)
        print(grid_markdown(result), flush=True)
        print("written: " + ", ".join(written.values()), flush=True)
        failed = failed or any(c.status == Status.ERROR for c in result.cells)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
