#!/usr/bin/env python3
"""Summarise a results folder: every ``<results>/*/summary.json`` into tables and pictures.

Writes ``summary.md`` (one table per batching mode, sorted by step time, with device,
versions, preset and date above it, take-aways computed from the numbers, and the
pictures embedded), ``summary.csv`` and ``summary.json`` with the same rows into the
results folder. Pictures (PNG, one set per mode): average step time and peak memory bars,
step time against peak memory (the frontier), allocated memory over the recorded steps
(from the traces' ``[memory]`` events), and the per-step time distribution. They go to
``<results>/pic/`` unless ``--pic-dir`` says otherwise (the README's pictures are refreshed on
purpose with ``report.py log --pic-dir pic``).

``--compare OTHER`` also writes ``comparison.md`` and ``comparison.json`` into the results
folder: the ratios (this folder / OTHER) of step time and peak memory per implementation
and mode. ``--tensorboard-compat OUT_DIR`` writes a copy of every trace under the results
folder with the event categories torch-tb-profiler 0.4.3 understands (see the README).
"""

from __future__ import annotations

import os
import sys

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.io import check_output_dir
from tlbench.report.suite_report import write_comparison, write_report

__all__ = ["main", "write_report"]


@exit_on_usage_error
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default=os.path.join(REPO_DIR, "log"),
                        help="folder holding <run>/summary.json (default: log/ in the repository)")
    parser.add_argument("--pic-dir", default=None, help="where the PNG pictures go (default: <results_dir>/pic)")
    parser.add_argument("--no-pictures", action="store_true", help="write the tables only")
    parser.add_argument("--publish", metavar="FILE.md", default=None,
                        help="also write the report to FILE.md with picture links relative to it (docs/results.md)")
    parser.add_argument("--compare", metavar="OTHER_RESULTS_DIR", default=None,
                        help="also write comparison.md/.json: step time and peak memory ratios (this folder / OTHER)")
    parser.add_argument("--tensorboard-compat", metavar="OUT_DIR", default=None,
                        help="only write TensorBoard-readable copies of every trace under the results folder to OUT_DIR")
    args = parser.parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    if not os.path.isdir(results_dir):
        raise UsageError(f"results folder {args.results_dir!r} does not exist")
    if args.tensorboard_compat is not None:
        from tlbench.measure.tensorboard_compat import write_tensorboard_compat

        written = write_tensorboard_compat(results_dir, check_output_dir(args.tensorboard_compat,
                                                                          "--tensorboard-compat"))
        print(f"wrote {len(written)} TensorBoard-compatible trace(s) under {os.path.abspath(args.tensorboard_compat)}")
        return 0
    if args.compare is not None and not os.path.isdir(args.compare):
        raise UsageError(f"--compare folder {args.compare!r} does not exist")
    if args.pic_dir is not None and not args.no_pictures:
        check_output_dir(args.pic_dir, "--pic-dir")
    if args.publish is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.publish))):
        raise UsageError(f"--publish {args.publish!r}: its folder does not exist")
    print(write_report(results_dir, pic_dir=args.pic_dir, pictures=not args.no_pictures, publish=args.publish))
    if args.compare is not None:
        print(write_comparison(results_dir, os.path.abspath(args.compare)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
