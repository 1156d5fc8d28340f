"""User-facing errors: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, TypeVar

__all__ = ["USAGE_EXIT_CODE", "ArgumentParser", "UsageError", "exit_on_usage_error", "first_line"]

F = TypeVar("F", bound=Callable)

USAGE_EXIT_CODE = 2


class UsageError(ValueError):
    """Bad user input (a flag value, a file); the message names the value and what is allowed."""


def first_line(error: BaseException, limit: int = 200, with_type: bool = False) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to
    ``limit`` characters for a table cell or a one-line reason."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if with_type:
        text = f"{type(error).__name__}: {text}".strip().rstrip(":")
    elif not text:
        text = type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line (exit 2) like every other usage error."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


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
