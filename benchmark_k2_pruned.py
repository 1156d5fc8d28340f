#!/usr/bin/env python3
"""Benchmark k2's pruned RNN-T loss (or fast_rnnt's when k2 is absent).

Declared in tlbench/implementations/k2_pruned.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("k2_pruned")
