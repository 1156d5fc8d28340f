#!/usr/bin/env python3
"""Benchmark NeMo's graph RNN-T loss, ``GraphRnntLoss`` (k2 graphs; nemo-toolkit 3.0), on 4-D logits.

Declared in tlbench/implementations/nemo_graph.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("nemo_graph")
