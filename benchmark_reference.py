#!/usr/bin/env python3
"""Benchmark the project's own pure-PyTorch RNN-T loss (tlbench/losses/reference.py) on 4-D logits.

Declared in tlbench/implementations/reference.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("reference")
