"""Where a run happens: the device's name and the versions a summary records."""

from __future__ import annotations

import os
import platform

from tlbench.measure.summary import Environment

__all__ = ["current_environment", "device_name"]


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name with its core count."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def current_environment(device: str) -> Environment:
    """This process's :class:`~tlbench.measure.summary.Environment` for a run on ``device``."""
    import torch

    return Environment(device=device, device_name=device_name(device), torch_version=torch.__version__,
                       python_version=platform.python_version(), num_threads=torch.get_num_threads())
