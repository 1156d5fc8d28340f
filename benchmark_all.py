#!/usr/bin/env python3
"""Run every transducer-loss benchmark, each in its own process, then write the report.

An implementation that is missing, crashes or runs out of memory is recorded with that
status in its summary.json (written here if its process could not) and never stops the
others. Jobs run one after another (``--executor sequential``), through submitit's local
executor, or as one Slurm job array (``--executor slurm``); ``--resume`` skips every run whose
summary.json ended ``ok`` with the same configuration. Afterwards ``report.py`` writes
``<out-dir>/summary.md``, ``.csv`` and ``.json`` and the pictures in ``<out-dir>/pic/``; an
interrupted run (Ctrl-C, a kill) keeps every finished summary and reports what is there.
"""

from __future__ import annotations

import signal
import sys

from tlbench.core.errors import ArgumentParser, exit_on_usage_error
from tlbench.implementations.registry import builtin_names, select
from tlbench.run.executors import add_executor_arguments, resolve_executor
from tlbench.run.harness import summary_line
from tlbench.run.options import add_run_arguments, resolve_config
from tlbench.run.suite import plan_jobs, run_suite, sort_modes


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@exit_on_usage_error
def prepare(argv):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, sort_choices_both=True)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(builtin_names())}")
    parser.add_argument("--impl", action="append", default=[], metavar="MODULE_OR_FILE:NAME",
                        help="also run this implementation (a built-in name or a LossImplementation NAME in a module "
                        "or .py file); repeatable; with --impl and no --only only the named ones run")
    parser.add_argument("--resume", action="store_true",
                        help="skip every run whose summary.json ended ok with the same configuration")
    add_executor_arguments(parser)
    args = parser.parse_args(argv)
    specs = select(args.only, args.impl)
    first = resolve_config(args, sort_utterance=sort_modes(args.sort_utterance)[0])
    return args, first, plan_jobs(specs, args), resolve_executor(args, first.out_dir)


def run(argv=None) -> int:
    args, first, jobs, executor = prepare(argv)
    print(f"device: {first.device}; {first.preset_reason}; executor: {executor.kind}", flush=True)
    from tqdm import tqdm

    import report

    signal.signal(signal.SIGTERM, _interrupt)  # a kill (e.g. a scheduler's) ends like Ctrl-C
    with tqdm(total=len(jobs), desc="benchmarks", unit="run", file=sys.stderr, dynamic_ncols=True) as progress:
        def shown(job, summary, how):
            line = summary_line(summary)
            progress.write(f"{line} (resumed: ok with the same configuration)" if how == "resumed" else line,
                           file=sys.stdout)
            progress.update()

        try:
            run_suite(jobs, executor, resume=args.resume, on_summary=shown)
        except KeyboardInterrupt:
            progress.close()
            print("interrupted: the finished runs are kept; the report below shows what is there "
                  "(rerun with --resume to finish)", file=sys.stderr, flush=True)
            print(exit_on_usage_error(report.write_report)(first.out_dir), flush=True)
            return 130
    print(report.write_report(first.out_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
