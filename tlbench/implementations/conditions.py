"""What an implementation's declaration says about the exact loss it computes and the inputs
it refuses or cannot run; the verifier (:mod:`tlbench.tools.verify`) reads them.

A condition takes a verification problem (:class:`tlbench.tools.verify.Problem`: ``shapes``
the ``(T_i, U_i)`` list, ``targets (N, U_max) int64``, ``num_cells``) and returns None or why
it holds.
"""

from __future__ import annotations

from typing import Callable, Optional

__all__ = ["REFERENCE_AM_LM", "REFERENCE_JOINER", "REFERENCE_JOINER_MODIFIED", "REFERENCE_MODIFIED",
           "REFERENCE_STANDARD", "REFERENCES", "any_u_zero", "more_cells_than_on_cpu", "no_condition",
           "no_modified_alignment", "u_max_zero"]

# Which exact loss a variant computes (see VerifyVariant.reference).
REFERENCE_STANDARD, REFERENCE_MODIFIED, REFERENCE_AM_LM = "standard", "modified", "am+lm"
REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED = "joiner", "joiner-modified"
REFERENCES = (REFERENCE_STANDARD, REFERENCE_MODIFIED, REFERENCE_AM_LM, REFERENCE_JOINER, REFERENCE_JOINER_MODIFIED)


def no_condition(*_args) -> Optional[str]:
    """A condition that never holds (the default of every ``skip``/``known_refusal``)."""
    return None


def any_u_zero(problem) -> Optional[str]:
    return "an utterance has U_i = 0" if any(u == 0 for _, u in problem.shapes) else None


def u_max_zero(problem) -> Optional[str]:
    return "U_max = 0 (targets of shape (N, 0))" if problem.targets.size(1) == 0 else None


def more_cells_than_on_cpu(max_cells: int) -> Callable[..., Optional[str]]:
    """A ``skip`` for a loss whose CPU path runs Python-level torch ops per lattice cell:
    problems of more than ``max_cells`` cells are not run on CPU (too slow)."""

    def skip(problem, device: str) -> Optional[str]:
        if device == "cpu" and problem.num_cells > max_cells:
            return (f"{problem.num_cells} lattice cells > {max_cells}: its CPU path runs Python-level torch ops per "
                    "cell (too slow here)")
        return None

    return skip


def no_modified_alignment(problem, device: str = "cpu") -> Optional[str]:
    if any(t < u + 1 for t, u in problem.shapes):
        return "an utterance has T_i < U_i + 1: no alignment with one label per frame (exact loss +inf)"
    return None
