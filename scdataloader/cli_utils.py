"""Small helpers shared by the command-line tools of the suite (``scdataloader``,
``scprint`` and ``bengrn``): argument types and one-line error messages."""

from __future__ import annotations

import argparse

__all__ = ["fraction", "one_line", "positive_int"]


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
