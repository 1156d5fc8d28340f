#!/usr/bin/env python3
"""Run every transducer-loss benchmark, each in its own subprocess, then write the report.

An implementation that is missing, crashes or runs out of memory is recorded with that
status in its summary.json (written here if the subprocess could not) and never stops the
others. Afterwards ``report.py`` writes ``<out-dir>/summary.md``, ``.csv`` and ``.json`` and
the pictures in ``<out-dir>/pic/``.
"""

from __future__ import annotations

import sys

from tlbench.errors import ArgumentParser, exit_on_usage_error
from tlbench.harness import summary_line
from tlbench.options import add_run_arguments, resolve_config
from tlbench.registry import builtin_names, select
from tlbench.suite import plan_jobs, run_job, sort_modes


@exit_on_usage_error
def run(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, sort_choices_both=True)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(builtin_names())}")
    parser.add_argument("--impl", action="append", default=[], metavar="MODULE_OR_FILE:NAME",
                        help="also run this implementation (a built-in name or a LossImplementation NAME in a module "
                        "or .py file); repeatable; with --impl and no --only only the named ones run")
    args = parser.parse_args(argv)
    specs = select(args.only, args.impl)
    first = resolve_config(args, sort_utterance=sort_modes(args.sort_utterance)[0])
    print(f"device: {first.device}; {first.preset_reason}", flush=True)
    jobs = plan_jobs(specs, args)
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc="benchmarks", unit="run", file=sys.stderr, dynamic_ncols=True) as progress:
        for job in jobs:
            progress.set_postfix_str(job.key)
            progress.write(summary_line(run_job(job)), file=sys.stdout)
            progress.update()
    import report

    print(report.write_report(first.out_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
