"""Imports of the optional loss libraries, with the reason and install hint when missing."""

from __future__ import annotations

import importlib.metadata

from .harness import Backend, BackendUnavailable

SETUP_HINT = "run 'bash scripts/setup.sh', which builds it from the registry's source distribution"


def _version(distribution: str, module) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def load_k2_or_fast_rnnt() -> Backend:
    """k2 when it is installed, otherwise fast_rnnt: the same RNN-T code and function names
    (rnnt_loss, rnnt_loss_smoothed, get_rnnt_prune_ranges, do_rnnt_pruning, rnnt_loss_pruned)."""
    errors = []
    for module_name in ("k2", "fast_rnnt"):
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # a k2 wheel built for another torch fails with OSError
            errors.append(f"{module_name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            continue
        return Backend(module_name, _version(module_name, module), module)
    raise BackendUnavailable("neither k2 nor fast_rnnt can be imported (" + "; ".join(errors) + ")",
                             f"install k2 with 'k2utils install k2', or fast_rnnt: {SETUP_HINT}")


def load_optimized_transducer() -> Backend:
    try:
        import optimized_transducer
    except Exception as error:
        raise BackendUnavailable(f"optimized_transducer cannot be imported ({error})", SETUP_HINT) from None
    return Backend("optimized_transducer", _version("optimized_transducer", optimized_transducer), optimized_transducer)
