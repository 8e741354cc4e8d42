"""The scPRINT network in pure torch: configuration, model and losses.

Nothing here imports Lightning or AnnData; training lives in :mod:`scprint.train` and
the AnnData-facing tasks in :mod:`scprint.tasks`.
"""

from . import losses
from .config import PRESETS, ModelConfig
from .model import ScPrint, flash_attn_available, sinusoidal_encoding

__all__ = [
    "ModelConfig",
    "PRESETS",
    "ScPrint",
    "flash_attn_available",
    "losses",
    "sinusoidal_encoding",
]
