#!/usr/bin/env python3
"""Benchmark one implementation given by name or as ``--impl MODULE_OR_FILE:NAME`` (a loss from
outside the repository); every other flag is a benchmark script's (see ``--help`` of any
``benchmark_<impl>.py``). ``benchmark_all.py --impl ...`` runs the same entry point
(``python -m tlbench.run.benchmark``) in a subprocess."""

from tlbench.run.benchmark import main

if __name__ == "__main__":
    main()
