#!/usr/bin/env python3
"""Benchmark the project's exact transducer loss with the joiner inside (tlbench/losses/fused.py).

Declared in tlbench/implementations/fused.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("fused")
