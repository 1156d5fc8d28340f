"""Imports of the loss libraries that more than one implementation uses."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence

from tlbench.core.errors import first_line
from tlbench.implementations.declaration import Backend, BackendUnavailable

__all__ = ["SETUP_HINT", "K2_HINT", "import_without_inits", "load_k2_or_fast_rnnt", "load_optimized_transducer",
           "package_version"]

SETUP_HINT = "run 'bash scripts/setup.sh', which builds it from the registry's source distribution"
K2_HINT = ("run 'bash scripts/setup.sh': it builds k2 1.24.4 from source (no wheel fits today's torch) and "
           "fast_rnnt, the fallback with the same RNN-T functions, from the registry's source distribution")


def package_version(distribution: str, module=None) -> str:
    """The installed distribution's version, else the module's ``__version__``."""
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
            errors.append(f"{module_name}: {first_line(error)}")
            continue
        return Backend(module_name, package_version(module_name, module), module)
    raise BackendUnavailable("neither k2 nor fast_rnnt can be imported (" + "; ".join(errors) + ")", K2_HINT)


def load_optimized_transducer() -> Backend:
    try:
        import optimized_transducer
    except Exception as error:
        raise BackendUnavailable(f"optimized_transducer cannot be imported ({error})", SETUP_HINT) from None
    return Backend("optimized_transducer", package_version("optimized_transducer", optimized_transducer),
                   optimized_transducer)


def import_without_inits(module_name: str, skipped: Sequence[str]):
    """Imports ``module_name`` while the packages ``skipped`` are registered without running
    their ``__init__`` (NeMo's package ``__init__`` files import whole collections and the
    training stack that its losses never use).

    Each package of ``skipped`` that is not imported yet is placed in ``sys.modules`` as a
    package object whose ``__init__`` has not run (its parents are imported as usual), and is
    removed again afterwards, so that a later plain ``import`` runs its real ``__init__``; the
    modules imported meanwhile stay loaded. A package already imported for real is used as it is.
    """
    if module_name in sys.modules:
        return sys.modules[module_name]
    placed = {}
    try:
        for name in skipped:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.submodule_search_locations is None:
                raise ImportError(f"{name} is not an installed package")
            placed[name] = sys.modules[name] = importlib.util.module_from_spec(spec)
        return importlib.import_module(module_name)
    finally:
        for name, package in placed.items():
            if sys.modules.get(name) is package:
                del sys.modules[name]
