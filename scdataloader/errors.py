"""Exceptions raised on bad input.

Every error the data layer raises on user input derives from :class:`InputError`
(itself a :class:`ValueError`), and its message says what is wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "CountsError",
    "GeneMappingError",
    "OrganismMismatchError",
    "LabelError",
    "QCError",
    "FileFormatError",
    "RegistryUnavailableError",
]


class InputError(ValueError):
    """Base class of the errors raised on bad user input."""


class CountsError(InputError):
    """X does not hold raw counts (log-normalised, scaled, negative, NaN...)."""


class GeneMappingError(InputError):
    """Gene names could not be mapped to the vocabulary (wrong id type, too few mapped)."""


class OrganismMismatchError(GeneMappingError):
    """The genes belong to another organism than the one declared."""


class LabelError(InputError):
    """A label column is missing or holds unusable values."""


class QCError(InputError):
    """Quality control left nothing usable (no cells, too few genes, ...)."""


class FileFormatError(InputError):
    """A file is missing, empty, truncated or not an AnnData store."""


class RegistryUnavailableError(RuntimeError):
    """An embedded dataset could not be obtained from the package registry."""
