#!/usr/bin/env python3
"""Benchmark optimized_transducer.transducer_loss on packed logits (sum_i T_i*(U_i+1), V).

Declared in tlbench/implementations/optimized_transducer.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("optimized_transducer")
