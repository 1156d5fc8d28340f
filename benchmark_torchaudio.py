#!/usr/bin/env python3
"""Benchmark torchaudio.functional.rnnt_loss on padded 4-D logits (N, T, U+1, V).

Declared in tlbench/implementations/torchaudio.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("torchaudio")
