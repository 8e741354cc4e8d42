"""Zero-shot tasks on AnnData (scanpy conventions: adata first, keyword-only options).

:func:`embed`, :func:`denoise`, :func:`classify`, and, for gene networks,
:func:`select_heads`.
"""

from .cells import denoise, embed
from .classify import apply_temperature, classify, fit_temperature
from .heads import aggregate_heads, select_heads

__all__ = [
    "aggregate_heads",
    "apply_temperature",
    "classify",
    "denoise",
    "embed",
    "fit_temperature",
    "select_heads",
]
