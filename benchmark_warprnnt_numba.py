#!/usr/bin/env python3
"""Benchmark warprnnt_numba.RNNTLossNumba (NeMo's numba RNN-T loss) on 4-D logits.

Declared in tlbench/implementations/warprnnt_numba.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("warprnnt_numba")
