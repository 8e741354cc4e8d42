"""Zero-shot tasks on AnnData (scanpy conventions: adata first, keyword-only options).

:func:`embed`, :func:`denoise`, :func:`classify` and :func:`get_gene_network`, with
:func:`select_heads` to choose attention heads against a ground truth.
"""

from .cells import denoise, embed
from .classify import apply_temperature, classify, fit_temperature
from .heads import aggregate_heads, select_heads
from .network import get_gene_network

__all__ = [
    "aggregate_heads",
    "apply_temperature",
    "classify",
    "denoise",
    "embed",
    "fit_temperature",
    "get_gene_network",
    "select_heads",
]
