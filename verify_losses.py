#!/usr/bin/env python3
"""Do the transducer losses compute the same thing? Loss and gradient of every importable
implementation in float32, compared with the project's exact loss in float64.

Random problems (seeded) cover mixed lengths in one batch, utterances with ``U_i = 0``, a batch
with ``U_max = 0``, utterances with ``T_i = 1``, a vocabulary of 4096 and a longer pair of
utterances. Each implementation's variants come from its ``IMPLEMENTATION.verify`` (the
registry's, ``--only``, ``--impl MODULE_OR_FILE:NAME``); the engine, the errors and the
tolerances are in :mod:`tlbench.tools.verify`. Only FAIL rows make the exit status 1.

Usage:
  verify_losses.py [--seed S] [--output-json PATH] [--only NAME,...] [--impl SPEC] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from typing import Optional, Sequence

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, exit_on_usage_error
from tlbench.core.io import atomic_write_json, check_output_file
from tlbench.core.status import Status
from tlbench.implementations.registry import builtin_names, load, select
from tlbench.render.tables import verify_table
from tlbench.run.options import resolve_device
from tlbench.tools.verify import (
    CROSS_DEVICE_FACTOR,
    GRAD_DEFINITION,
    GRAD_RTOL_FLOOR,
    GRAD_RTOL_PER_NAT,
    LOSS_DEFINITION,
    LOSS_RTOL,
    REFERENCE_DESCRIPTION,
    REFUSAL_POLICY,
    Candidate,
    candidates_for,
    default_problems,
    libraries,
    summarize,
    tolerance_text,
    verify,
)

DEFAULT_SEED = 0
DEFAULT_OUTPUT = os.path.join(REPO_DIR, "log", "verify_losses.json")


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed of the problems (default {DEFAULT_SEED})")
    parser.add_argument("--output-json", default=DEFAULT_OUTPUT, help="where the results go (default log/verify_losses.json)")
    parser.add_argument("--only", default=None, help=f"comma-separated implementations to run: {', '.join(builtin_names())}")
    parser.add_argument("--impl", action="append", default=[], metavar="MODULE_OR_FILE:NAME",
                        help="also verify this implementation (repeatable); with --impl and no --only only the named ones")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available), cpu, or cuda (CUDA and CPU runs, plus CUDA-vs-CPU rows)")
    return parser.parse_args(argv)


def run(argv: Optional[Sequence[str]] = None, candidates: Optional[Sequence[Candidate]] = None, problems=None) -> int:
    """The command: verifies, prints the table, writes the JSON; returns the exit status
    (0: no FAIL row, 1: some). ``candidates``/``problems`` replace the defaults (tests inject
    their own this way); bad flags raise :class:`UsageError`."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    output = check_output_file(args.output_json, "--output-json")
    specs = select(args.only, args.impl) if candidates is None or args.only or args.impl else None
    started = time.perf_counter()
    problems = list(problems) if problems is not None else default_problems(args.seed)
    devices = ["cpu", "cuda"] if device == "cuda" else ["cpu"]
    if candidates is None:
        candidates = [c for spec in specs for c in candidates_for(load(spec), devices)]
    elif specs is not None:
        names = {load(spec).name for spec in specs}
        candidates = [c for c in candidates if c.name in names]
    rows = verify(candidates, problems, progress=True)
    counts = summarize(rows)
    passed = counts[Status.FAIL] == 0
    libs = libraries(candidates)
    import torch

    print(f"transducer loss verification: seed {args.seed}, device {device}, torch {torch.__version__}, float32 inputs")
    print(f"libraries: {', '.join(libs) or '-'}")
    print(f"reference: {REFERENCE_DESCRIPTION}")
    print("problems:")
    for p in problems:
        print(f"  {p.name}: V={p.vocab_size}, (T_i, U_i) = {', '.join(f'({t},{u})' for t, u in p.shapes)} - {p.note}")
    print(f"loss rel. err = {LOSS_DEFINITION}")
    print(f"grad rel. err = {GRAD_DEFINITION}")
    print(tolerance_text())
    print(REFUSAL_POLICY)
    print()
    print(verify_table(rows))
    print()
    print(f"summary: {counts[Status.OK]} ok, {counts[Status.FAIL]} FAIL, {counts[Status.REFUSED]} refused, "
          f"{counts[Status.SKIPPED]} skipped, {counts[Status.UNAVAILABLE]} unavailable -> {'PASS' if passed else 'FAIL'} "
          f"({time.perf_counter() - started:.1f} s)")
    atomic_write_json(output, {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])],
        "seed": args.seed, "device": device, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "libraries": libs,
        "definitions": {"loss_rel_err": LOSS_DEFINITION, "grad_rel_err": GRAD_DEFINITION,
                        "reference": REFERENCE_DESCRIPTION},
        "tolerances": {"loss_rtol": LOSS_RTOL, "grad_rtol_per_nat": GRAD_RTOL_PER_NAT,
                       "grad_rtol_floor": GRAD_RTOL_FLOOR, "cross_device_factor": CROSS_DEVICE_FACTOR,
                       "text": tolerance_text()},
        "refusal_policy": REFUSAL_POLICY, "refusals_fail_run": False,
        "problems": [p.describe() for p in problems],
        "rows": [row.to_dict() for row in rows],
        "counts": counts, "passed": passed,
    })
    print(f"wrote {output}")
    return 0 if passed else 1


@exit_on_usage_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
