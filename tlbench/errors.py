"""User-facing errors: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

USAGE_EXIT_CODE = 2


class UsageError(ValueError):
    """Bad user input (a flag value, a file); the message names the value and what is allowed."""


def exit_on_usage_error(main: F) -> F:
    """Runs ``main``; a :class:`ValueError` (UsageError, ShapeInfoError, ...) becomes
    ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ValueError as error:
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(USAGE_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]
