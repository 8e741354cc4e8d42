"""scPRINT: a single-cell foundation model whose attention yields cell-type gene networks.

Subpackages: ``scprint.nn`` (pure torch model and losses), ``scprint.train`` (Lightning
pretraining), and, to come, ``scprint.tasks`` (embed, classify, denoise, gene networks on
AnnData) and ``scprint.tabular`` (SIMS, scTab and scaLR classifiers). They build on
:mod:`scdataloader` and :mod:`bengrn`.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {"load": "checkpoint", "CheckpointError": "checkpoint"}

__all__ = ["__version__", "load", "CheckpointError"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
