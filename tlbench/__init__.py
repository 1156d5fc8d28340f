"""transducer-loss-bench's library: the registry of loss implementations and everything the
top-level scripts share (flags, data, the profiled loop, summaries, verification, rendering)."""

import os

__all__ = ["REPO_DIR"]

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Kineto logs "gpuGetDeviceCount failed" on every profile of a CUDA build of torch on a machine
# without a GPU (and it would break the progress bars); it must be silenced before torch loads
# kineto, so here, before any tlbench module imports torch.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
