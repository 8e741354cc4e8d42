"""Training: the Lightning module of scPRINT's multi-task pretraining."""

from .module import ScPrintModule

__all__ = ["ScPrintModule"]
