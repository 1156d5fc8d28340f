#!/usr/bin/env python3
"""Benchmark warp-transducer's PyTorch binding (module warprnnt_pytorch) on 4-D logits.

Declared in tlbench/implementations/warp_transducer.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("warp_transducer")
