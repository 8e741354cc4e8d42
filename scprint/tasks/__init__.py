"""Zero-shot tasks on AnnData (scanpy conventions: adata first, keyword-only options).

:func:`embed`, :func:`denoise`, and, for gene networks, :func:`select_heads`.
"""

from .cells import denoise, embed

__all__ = ["denoise", "embed"]
