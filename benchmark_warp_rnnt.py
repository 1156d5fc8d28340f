#!/usr/bin/env python3
"""Benchmark warp_rnnt.rnnt_loss (CUDA only; it takes log-softmax input) on 4-D logits.

Declared in tlbench/implementations/warp_rnnt.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("warp_rnnt")
