"""bengrn: gene-network ground truths, metrics, enrichment, baselines and analysis.

Judges any gene x gene network; depends neither on :mod:`scprint` nor on a model.
"""

from .network import GeneNetwork

__version__ = "0.1.0"
__all__ = ["GeneNetwork", "__version__"]
