#!/usr/bin/env python3
"""Benchmark one implementation given by name or as ``--impl MODULE_OR_FILE:NAME`` (a loss from
outside the repository); every other flag is a benchmark script's (see ``--help`` of any
``benchmark_<impl>.py``). ``benchmark_all.py --impl ...`` runs this in a subprocess."""

import sys

from tlbench.errors import ArgumentParser, exit_on_usage_error
from tlbench.harness import main
from tlbench.registry import load


@exit_on_usage_error
def implementation(argv):
    parser = ArgumentParser(add_help=False)
    parser.add_argument("--impl", required=True, help="a built-in name or MODULE_OR_FILE:NAME")
    args, rest = parser.parse_known_args(argv)
    return load(args.impl), rest


if __name__ == "__main__":
    impl, rest = implementation(sys.argv[1:])
    main(impl, rest)
