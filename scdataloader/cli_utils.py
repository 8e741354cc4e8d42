"""Small helpers shared by the command-line tools of the suite (``scdataloader``,
``scprint`` and ``bengrn``): argument types and one-line error messages."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["check_output", "fraction", "one_line", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def one_line(error: BaseException) -> str:
    """The error's message on one line, for ``error: ...`` on stderr: a KeyError's key
    without quotes, an OSError's file name when its message lacks it, else the type."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(text.split())
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text or type(error).__name__


def check_output(
    out: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuse, before any work, an output file that is a folder, one of the ``inputs``
    (even with ``overwrite``) or that exists without ``overwrite``
    (:class:`~scdataloader.errors.InputError`). Returns the output path."""
    from .errors import InputError

    path = Path(out)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file path.")
    if path.exists():
        if any(path.resolve() == Path(i).resolve() for i in inputs):
            raise InputError(f"output {path} is an input file; write the result elsewhere.")
        if not overwrite:
            raise InputError(f"output {path} exists; pass --overwrite to replace it.")
    return path
