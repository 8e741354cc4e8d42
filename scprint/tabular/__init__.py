"""Tabular cell-type classifiers: SIMS (TabNet, sparsemax), scTab (TabNet, entmax-1.5,
one step), an MLP and a linear model, on (1e4, log1p)-normalised counts.

``scprint.tabular.nn`` holds the models, ``module`` the training plan (plain torch;
``lightning`` wraps it for a Lightning Trainer), ``data`` the counts-to-batches layer and
``api`` the AnnData-facing functions re-exported here;
``evaluate`` (ontology-aware metrics), ``augment`` (scTab's donor-difference vectors) and
``selection`` (scaLR's chunked feature selection, biomarkers, gene recall curves).
"""

from .api import (
    PRESETS,
    Ensemble,
    TabularClassifier,
    fit,
    fit_ensemble,
    fit_temperature_logits,
    load_model,
)
from .augment import AugmentationVectors, augmentation_vectors
from .data import GeneAlignment, align_genes, class_weights, split
from .evaluate import Report, evaluate, ontology_correct, roc_auc
from .nn import MLP, Linear, TabNet, TabNetConfig, entmax15, sparsemax
from .selection import (
    FeatureSelection,
    biomarkers,
    chunked_feature_selection,
    gene_recall_curve,
    plot_gene_recall,
)

__all__ = [
    "PRESETS",
    "AugmentationVectors",
    "Ensemble",
    "FeatureSelection",
    "Report",
    "GeneAlignment",
    "Linear",
    "MLP",
    "TabNet",
    "TabNetConfig",
    "TabularClassifier",
    "align_genes",
    "augmentation_vectors",
    "biomarkers",
    "chunked_feature_selection",
    "class_weights",
    "entmax15",
    "evaluate",
    "fit",
    "fit_ensemble",
    "fit_temperature_logits",
    "gene_recall_curve",
    "load_model",
    "ontology_correct",
    "plot_gene_recall",
    "roc_auc",
    "sparsemax",
    "split",
]
