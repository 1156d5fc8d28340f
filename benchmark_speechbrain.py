#!/usr/bin/env python3
"""Benchmark SpeechBrain's numba transducer loss (CUDA only) on 4-D log-probabilities.

Declared in tlbench/implementations/speechbrain.py; flags: --help (see docs/ and the README)."""

from tlbench.run.harness import main

if __name__ == "__main__":
    main("speechbrain")
