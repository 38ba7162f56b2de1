"""Checks of user input, written once for the command line and the Python API: whole
numbers in a range, files to read, files and folders to write.

Each raises :class:`InputError` (a :class:`~tessera.hw.config.TesseraError` and a
``ValueError``) whose message names the argument, the value and what is allowed, before
any work is done; docs/errors.md lists what is checked where.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from ..hw.config import TesseraError

__all__ = ["InputError", "whole_number", "positive_number", "input_file", "output_file",
           "output_dir", "write_text", "format_bytes"]


class InputError(TesseraError, ValueError):
    """A bad argument, file or size: the message says what is wrong and what is allowed."""


def whole_number(value, name: str, lo: int = 1, hi: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) from ``lo`` to ``hi`` (unbounded when
    None).

    Raises
    ------
    InputError
        Otherwise; the message names ``name`` and the range.
    """
    if hi is not None:
        allowed = f"an integer from {lo} to {hi}"
    else:
        allowed = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise InputError(f"{name} must be {allowed}, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise InputError(f"{name} must be {allowed}, not {value}")
    return int(value)


def positive_number(value, name: str, unit: str = "", hi: float | None = None) -> float:
    """``value`` if it is a finite real number above 0 (and at most ``hi``).

    Raises
    ------
    InputError
        Otherwise (0, negative, NaN, infinite, too large, not a number).
    """
    what = f"a positive number{f' of {unit}' if unit else ''}" + (
        f" up to {hi:g}" if hi is not None else "")
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0 or (hi is not None and value > hi)):
        raise InputError(f"{name} must be {what}, not {value!r}")
    return float(value)


def format_bytes(n: int) -> str:
    """``n`` bytes for a message: exact below 1 KiB, else in KiB, MiB or GiB."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def input_file(path, what: str, max_bytes: int | None = None) -> Path:
    """``path`` if it is a regular file this process can read (of at most ``max_bytes``).

    Raises
    ------
    InputError
        If it does not exist, is a folder or a device, cannot be read, or is too large.
    """
    p = Path(path)
    if not str(path):
        raise InputError(f"{what}: an empty path; name a file")
    if not p.exists():
        raise InputError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} is not a regular file (a folder or a device?)")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {str(p)!r} cannot be read (permission denied)")
    size = p.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"{what} {str(p)!r} is {format_bytes(size)}, more than the "
                         f"{format_bytes(max_bytes)} allowed")
    return p


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_file(path, what: str) -> Path:
    """``path`` if a file can be written there: its folder exists and is writable, and it
    is not itself a folder (an existing file is replaced).

    Raises
    ------
    InputError
        Otherwise, naming the problem.
    """
    if not str(path):
        raise InputError(f"{what}: an empty path; name a file to write")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder; name a file to write")
    if p.exists() and not p.is_file():
        raise InputError(f"{what} {str(p)!r} exists and is not a regular file (a device?); "
                         f"name a file to write")
    folder = p.absolute().parent
    if not folder.is_dir():
        raise InputError(f"{what} {str(p)!r}: the folder {str(folder)!r} does not exist "
                         f"(create it first)")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"{what} {str(p)!r} cannot be written (permission denied)")
    return p


def output_dir(path, what: str) -> Path:
    """``path`` if it is a folder, or one that can be created (with its parents), that
    this process can write into. Files already there of the names written are replaced.

    Raises
    ------
    InputError
        If the path is empty, is (or runs through) a file, or is not writable.
    """
    if not str(path):
        raise InputError(f"{what}: an empty path; name a folder to write into")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a file, not a folder; name a folder to "
                         f"write into (it is created if it does not exist)")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise InputError(f"{what} {str(p)!r}: {str(base)!r} is a file, so the folder cannot "
                         f"be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(p)!r} cannot be written: no permission to write in "
                         f"{str(base)!r}")
    return p


def write_text(path, text: str, what: str) -> None:
    """Write ``text`` to ``path`` (checked by :func:`output_file` first).

    Raises
    ------
    InputError
        If the path is unusable or the write fails (the system's reason is given).
    """
    p = output_file(path, what)
    try:
        p.write_text(text)
    except OSError as e:
        raise InputError(f"cannot write {what} {str(p)!r}: {e.strerror or e}") from None
