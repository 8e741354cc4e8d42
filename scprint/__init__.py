"""scPRINT: a single-cell foundation model whose attention yields cell-type gene networks.

Subpackages: ``scprint.nn`` (pure torch model), ``scprint.train`` (Lightning),
``scprint.tasks`` (embed, classify, denoise, gene networks on AnnData),
``scprint.tabular`` (SIMS, scTab and scaLR classifiers). They build on
:mod:`scdataloader` and :mod:`bengrn`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
