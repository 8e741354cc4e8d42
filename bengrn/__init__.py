"""bengrn: gene-network ground truths, metrics, enrichment, baselines and analysis.

Judges any gene x gene network; depends neither on :mod:`scprint` nor on a model.

Modules: :mod:`~bengrn.network` (the :class:`GeneNetwork` container),
:mod:`~bengrn.truths` (OmniPath, CollecTRI, DoRothEA, McCalla et al., perturb-seq,
BEELINE, TF lists, ENCODE targets), :mod:`~bengrn.metrics` (EPR, AUPRC, average
precision), :mod:`~bengrn.enrichment` (prerank of centralities against TFs, cell-type
markers and ENCODE targets), :mod:`~bengrn.baselines` (GENIE3, GENIE3-TF, GRNBoost2,
correlation, random), :mod:`~bengrn.analysis` (hubs, communities, differential hubs,
subgraph plots) and :mod:`~bengrn.runner` (``bengrn run``).
"""

from .metrics import Scores, auprc, average_precision, epr, evaluate
from .network import GeneNetwork

__version__ = "0.1.0"
__all__ = [
    "GeneNetwork",
    "Scores",
    "__version__",
    "auprc",
    "average_precision",
    "epr",
    "evaluate",
]
