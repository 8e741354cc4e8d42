"""Analysis tools on AnnData (scanpy's ``tl``): differential expression per cell type.

:func:`dge` tests two conditions within each cell type by pseudobulk (DESeq2 through
``pydeseq2``) or a linear mixed model with a donor random effect (``statsmodels``); both
come with the ``dge`` extra. :func:`write_table` and :func:`write_volcanoes` write its
results; ``scprint dge`` runs it from the command line (:mod:`scprint.tl.cli`).
"""

from __future__ import annotations

from ._report import volcano, write_table, write_volcanoes
from .dge import (
    COLUMNS,
    METHODS,
    DGEError,
    DGEWarning,
    bh_adjust,
    dge,
    model_top_genes,
    pseudobulk,
)
from .simulate import simulate_donor_counts

__all__ = [
    "COLUMNS",
    "METHODS",
    "DGEError",
    "DGEWarning",
    "bh_adjust",
    "dge",
    "model_top_genes",
    "pseudobulk",
    "simulate_donor_counts",
    "volcano",
    "write_table",
    "write_volcanoes",
]
