#!/usr/bin/env python3
"""Benchmark k2.rnnt_loss (or fast_rnnt.rnnt_loss when k2 is absent) on 4-D logits.

Declared in tlbench/implementations/k2.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("k2")
