"""The benchmark scripts the whole-suite command knows, in the order it runs them."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Dict

from . import REPO_DIR

# implementation name (run-folder prefix) -> script at the repository's top level
SCRIPTS: Dict[str, str] = {
    "torchaudio": "benchmark_torchaudio.py",
    "optimized_transducer": "benchmark_ot.py",
    "k2": "benchmark_k2.py",
    "k2_pruned": "benchmark_k2_pruned.py",
    "warprnnt_numba": "benchmark_warprnnt_numba.py",
    "warp_transducer": "benchmark_warp_transducer.py",
    "warp_rnnt": "benchmark_warp_rnnt.py",
    "speechbrain": "benchmark_speechbrain.py",
    "reference": "benchmark_reference.py",
}


def script_path(name: str) -> str:
    return os.path.join(REPO_DIR, SCRIPTS[name])


def load_implementation(name: str):
    """The ``IMPLEMENTATION`` (a harness.LossImplementation) defined by ``benchmark_<impl>.py``.

    Importing a script is cheap: its loss library is imported only by ``load_backend``.
    """
    from .errors import UsageError

    if name not in SCRIPTS:
        raise UsageError(f"implementation {name!r} is not allowed; use one of {', '.join(SCRIPTS)}")
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    return importlib.import_module(os.path.splitext(SCRIPTS[name])[0]).IMPLEMENTATION
