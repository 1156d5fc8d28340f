"""Loss implementations: the declaration type every tool derives from, the registry (the only
list of built-ins) and one module per built-in implementation, its loss call in view.

What a loss from outside the repository needs is importable from here::

    from tlbench.implementations import Backend, BackendUnavailable, LossImplementation
"""

from tlbench.implementations.declaration import (
    Backend,
    BackendUnavailable,
    LossImplementation,
    LossOnlyVariant,
    Refusal,
    VerifyVariant,
)

__all__ = ["Backend", "BackendUnavailable", "LossImplementation", "LossOnlyVariant", "Refusal", "VerifyVariant"]
