"""Shared harness of transducer-loss-bench: arguments, data, profiling, summaries."""

import os

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
