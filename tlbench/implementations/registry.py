"""The only list of implementations; every tool selects from it or loads one from outside.

A built-in implementation is the ``IMPLEMENTATION`` of its module
``tlbench.implementations.<name>``. Any other
:class:`~tlbench.implementations.declaration.LossImplementation` joins with
``--impl MODULE_OR_FILE:NAME``: a module path (importable from the current directory or
``sys.path``) or a ``.py`` file, and the name of the object in it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Iterable, List, Optional, Sequence

from tlbench.core.errors import UsageError
from tlbench.implementations.declaration import LossImplementation

__all__ = ["BUILTIN", "builtin_names", "command_for", "is_builtin", "load", "resolve_spec", "select", "subprocess_env"]

# The built-in implementations, each the module tlbench.implementations.<name>, in the suite's order.
BUILTIN = ("torchaudio", "optimized_transducer", "k2", "k2_pruned", "fused", "warprnnt_numba", "nemo", "nemo_graph",
           "warp_transducer", "warp_rnnt", "speechbrain", "reference")
# The folder that holds the tlbench package: a benchmark subprocess imports the package from there.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def builtin_names() -> List[str]:
    return list(BUILTIN)


def is_builtin(spec: str) -> bool:
    return spec in BUILTIN


def _from_file(path: str):
    module_name = "tlbench_external_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--impl file {path!r} cannot be imported; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def resolve_spec(spec: str) -> str:
    """The form of ``spec`` a subprocess can load: a file path made absolute."""
    if is_builtin(spec) or ":" not in spec:
        return spec
    source, name = spec.rsplit(":", 1)
    if source.endswith(".py") or os.sep in source:
        return f"{os.path.abspath(source)}:{name}"
    return spec


def load(spec: str) -> LossImplementation:
    """A built-in name, or ``MODULE_OR_FILE:NAME``, -> its LossImplementation (UsageError if not)."""
    allowed = f"use one of {', '.join(builtin_names())} or MODULE_OR_FILE:NAME"
    if is_builtin(spec):
        impl = importlib.import_module(f"tlbench.implementations.{spec}").IMPLEMENTATION
        assert impl.name == spec, (impl.name, spec)
        return impl
    if ":" not in spec:
        raise UsageError(f"implementation {spec!r} is not allowed; {allowed}")
    source, name = spec.rsplit(":", 1)
    if not source or not name:
        raise UsageError(f"--impl {spec!r} is not allowed; expected MODULE_OR_FILE:NAME")
    try:
        if source.endswith(".py") or os.sep in source:
            if not os.path.isfile(source):
                raise UsageError(f"--impl {spec!r}: file {source!r} does not exist")
            module = _from_file(source)
        else:
            if os.getcwd() not in sys.path:  # like `python -m`: modules of the current directory
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(source)
    except UsageError:
        raise
    except Exception as error:  # a broken user module: one line, not its traceback
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UsageError(f"--impl {spec!r}: importing {source!r} failed ({type(error).__name__}: {first})") from None
    impl = getattr(module, name, None)
    if not isinstance(impl, LossImplementation):
        found = "nothing" if impl is None else f"of type {type(impl).__name__}"
        raise UsageError(f"--impl {spec!r}: {name!r} in {source!r} is {found}; expected a "
                         "tlbench.implementations.declaration.LossImplementation")
    if is_builtin(impl.name):
        raise UsageError(f"--impl {spec!r}: its name {impl.name!r} is a built-in implementation's; choose another")
    return impl


def _split(values: Iterable[Optional[str]]) -> List[str]:
    names: List[str] = []
    for value in values:
        for part in (value or "").split(","):
            if part.strip() and part.strip() not in names:
                names.append(part.strip())
    return names


def select(only: Optional[str] = None, impls: Sequence[str] = ()) -> List[str]:
    """The specs to run: ``--only`` built-in names and ``--impl`` specs (comma-separated or
    repeated), in the registry's order then as given; all built-ins when both are empty.

    Every spec is checked by loading it (cheap: libraries load only in ``load_backend``).
    """
    chosen = _split([only]) + [s for s in _split(impls) if s not in _split([only])]
    if only is not None and not _split([only]):
        raise UsageError(f"--only {only!r} names no implementation; use one of {', '.join(builtin_names())}")
    for name in _split([only]):
        if not is_builtin(name):
            raise UsageError(f"--only {name!r} is not a built-in implementation; use one of "
                             f"{', '.join(builtin_names())} (or --impl MODULE_OR_FILE:NAME)")
    if not chosen:
        return builtin_names()
    builtins = [n for n in builtin_names() if n in chosen]
    external = [resolve_spec(s) for s in chosen if not is_builtin(s)]
    for spec in external:
        load(spec)
    names = [load(s).name for s in external]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"--impl names {', '.join(duplicates)} more than once")
    return builtins + external


def command_for(spec: str) -> List[str]:
    """The command line (without flags) that benchmarks ``spec`` in its own process:
    ``python -m tlbench.run.benchmark --impl SPEC`` (see :func:`subprocess_env`)."""
    return [sys.executable, "-m", "tlbench.run.benchmark", "--impl", resolve_spec(spec)]


def subprocess_env(env: Optional[dict] = None) -> dict:
    """``env`` (default: this process's) with the folder holding the tlbench package and the
    current directory (for ``--impl MODULE:NAME``) first on ``PYTHONPATH``, so that a command of
    :func:`command_for` imports this same package and the user's modules."""
    child = dict(os.environ if env is None else env)
    paths = [_PACKAGE_PARENT, os.getcwd(), *[p for p in child.get("PYTHONPATH", "").split(os.pathsep) if p]]
    child["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return child
