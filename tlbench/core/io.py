"""Atomic writes of result files, and checks of the paths a user passes.

A reader never sees a half-written file: everything is written to a temporary file in the
same folder and renamed into place. The checks run before any work starts, so that a bad
``--out-dir`` or ``--output`` is one line and exit code 2, not a traceback after minutes.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from typing import Any, Callable

from tlbench.core.errors import UsageError

__all__ = [
    "atomic_save_figure",
    "atomic_save_tensor",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
]


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls ``write(tmp_path)`` then renames the result to ``path`` (folders are created)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix or os.path.basename(path))
    os.close(fd)
    try:
        write(tmp_path)
        os.chmod(tmp_path, _umask_mode())  # mkstemp creates 0600; results are for everyone to read
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_tensor(path: str, tensor: Any) -> None:
    import torch

    atomic_write(path, lambda tmp_path: torch.save(tensor, tmp_path), suffix=".pt")


def atomic_save_figure(figure, path: str, dpi: int = 120) -> None:
    """A matplotlib figure as PNG."""
    atomic_write(path, lambda tmp_path: figure.savefig(tmp_path, format="png", dpi=dpi, bbox_inches="tight"),
                 suffix=".png")


def _reason(error: OSError) -> str:
    return error.strerror or errno.errorcode.get(error.errno or 0, type(error).__name__)


def check_output_dir(path: str, flag: str) -> str:
    """Creates ``path`` if needed and checks that files can be written in it; returns it
    absolute. Raises UsageError naming the path and why not."""
    absolute = os.path.abspath(path)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise UsageError(f"{flag} {path!r} is not a folder (a file of that name exists); pass a folder path")
    try:
        os.makedirs(absolute, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=absolute, prefix=".tmp-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        blocker = _blocking_file(absolute)
        why = f"{blocker!r} is a file, not a folder" if blocker else _reason(error)
        raise UsageError(f"{flag} {path!r} cannot be created or written ({why}); pass a writable folder") from None
    return absolute


def _blocking_file(path: str):
    """The first ancestor of ``path`` that exists and is not a folder, if any."""
    current = path
    while current and current != os.path.dirname(current):
        if os.path.exists(current):
            return current if not os.path.isdir(current) else None
        current = os.path.dirname(current)
    return None


def check_output_file(path: str, flag: str) -> str:
    """Checks that ``path`` can be written as a file (its folder is created); returns it absolute."""
    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        raise UsageError(f"{flag} {path!r} is a folder; pass a file path")
    check_output_dir(os.path.dirname(absolute), f"{flag} {path!r}: its folder")
    if os.path.exists(absolute) and not os.access(absolute, os.W_OK):
        raise UsageError(f"{flag} {path!r} cannot be written (permission denied); pass a writable file path")
    return absolute


def check_input_file(path: str, flag: str, what: str = "file") -> str:
    """Checks that ``path`` is an existing readable file; returns it absolute."""
    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        raise UsageError(f"{flag} {path!r} is a folder; pass a {what}")
    if not os.path.exists(absolute):
        raise UsageError(f"{flag} {path!r} does not exist; pass an existing {what}")
    if not os.access(absolute, os.R_OK):
        raise UsageError(f"{flag} {path!r} cannot be read (permission denied)")
    return absolute
