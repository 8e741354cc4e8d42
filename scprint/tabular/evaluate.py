"""Ontology-aware evaluation of cell type classifiers (scTab) and ROC-AUC (scaLR).

scTab (Methods, "Ontology-corrected cell type classification") scores a prediction as
right "either if the classifier predicts the same label as supplied by the original
dataset, or if the classifier predicts a subtype of the label provided by the original
dataset", and as wrong when it "predicts a parent cell type of the true label", or
anything else. The subtype relation comes from the Cell Ontology, read offline through
:mod:`scdataloader.ontology`.

:func:`evaluate` applies that rule, then computes the usual metrics with scikit-learn:
every prediction that is a descendant of its cell's true label is replaced by the true
label, and accuracy, macro / weighted F1 and a per-class report are computed on the
corrected predictions. With ``ontology_aware=False`` the metrics are exactly
scikit-learn's. :func:`roc_auc` is scaLR's one-vs-rest ROC-AUC over predicted
probabilities.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scdataloader.ontology import LabelHierarchy

__all__ = ["Report", "ontology_correct", "evaluate", "roc_auc"]

logger = logging.getLogger(__name__)

# "CL:0000540", "MONDO:0005015", "NCBITaxon:9606", multi-valued "HANCESTRO:0005,HANCESTRO:0014".
_TERM_ID = re.compile(
    r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_]+(,[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_]+)*$"
)

Labels = Sequence[Any] | np.ndarray | pd.Series | pd.Categorical


def _as_labels(values: Labels, hierarchy: LabelHierarchy | None, what: str) -> np.ndarray:
    """Return 1-D labels as an object array of stripped strings (codes decoded, NaN "nan")."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D; got shape {array.shape}.")
    if hierarchy is not None and array.size and np.issubdtype(array.dtype, np.integer):
        array = hierarchy.decode(array.astype(np.int64))
    codes, uniques = pd.factorize(pd.Series(array, dtype=object), use_na_sentinel=True)
    table = np.array([str(u).strip() for u in uniques] + ["nan"], dtype=object)
    return table[codes]


def _unknown_mask(labels: np.ndarray) -> np.ndarray:
    from scdataloader.ontology import is_unknown

    return is_unknown(labels) if labels.size else np.zeros(0, dtype=bool)


def _ontology_prefix(ontology: str, hierarchy: LabelHierarchy | None) -> str:
    if hierarchy is not None:
        from scdataloader.ontology import ONTOLOGY_OF_KEY

        prefix = ONTOLOGY_OF_KEY.get(hierarchy.key)
        if prefix is not None:
            return prefix
    return str(ontology).strip().upper()


def _term_ids(labels: np.ndarray, prefix: str) -> dict[str, str | None]:
    """Map each distinct label to its ontology term id (names are looked up)."""
    from scdataloader.ontology import get_parser, is_unknown

    out: dict[str, str | None] = {}
    parser = None
    for label in pd.unique(labels):
        if is_unknown([label])[0]:
            out[label] = None
        elif _TERM_ID.match(label):
            out[label] = label
        else:
            parser = parser or get_parser()
            try:
                out[label] = parser.get_term_id_by_label(label, prefix)
            except (KeyError, ValueError):
                out[label] = None
    unmapped = sorted(k for k, v in out.items() if v is None and not is_unknown([k])[0])
    if unmapped:
        logger.warning(
            "%d label(s) are neither %s term ids nor %s term names; they only match "
            "themselves: %s",
            len(unmapped),
            prefix,
            prefix,
            unmapped[:20],
        )
    return out


def _correct(y_true: np.ndarray, y_pred: np.ndarray, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (exact match, descendant match) masks, unknown predictions False."""
    from scdataloader.ontology import ancestors

    unknown_pred = _unknown_mask(y_pred)
    unknown_true = _unknown_mask(y_true)
    exact = (y_true == y_pred) & ~unknown_pred & ~unknown_true
    ids = _term_ids(np.concatenate([y_true, y_pred]), prefix)
    pairs = pd.MultiIndex.from_arrays([y_true, y_pred])
    codes, uniques = pd.factorize(pairs)
    below = np.zeros(len(uniques), dtype=bool)
    for k, (true, pred) in enumerate(uniques):
        true_id, pred_id = ids.get(true), ids.get(pred)
        if true_id is None or pred_id is None or true == pred:
            continue
        below[k] = true_id == pred_id or true_id in ancestors(pred_id)
    descendant = below[codes] if len(codes) else np.zeros(0, dtype=bool)
    descendant &= ~unknown_pred & ~unknown_true & ~exact
    return exact, descendant


def ontology_correct(
    y_true: Labels,
    y_pred: Labels,
    *,
    hierarchy: LabelHierarchy | None = None,
    ontology: str = "cl",
) -> np.ndarray:
    """Tell which predictions are right under scTab's ontology rule.

    A prediction is right when it equals the true label or is a descendant (subtype) of
    it in the ontology: predicting "retinal rod cell" for a cell labelled "neuron" is
    right, predicting "neuron" for a "retinal rod cell" is wrong.

    Parameters
    ----------
    y_true
        True labels: ontology term ids (``"CL:0000540"``), term names (``"neuron"``,
        looked up in ``ontology``), or integer codes of ``hierarchy``.
    y_pred
        Predicted labels, in the same form.
    hierarchy
        The :class:`~scdataloader.ontology.LabelHierarchy` that encoded integer labels
        (decoded with it; without it, integers are labels of their own); its column also
        fixes the ontology (a cell type column: CL).
    ontology
        Prefix of the ontology in which names are looked up (``"cl"``, ``"mondo"``...).

    Returns
    -------
    Boolean array, one value per cell. Unknown predictions ("unknown", NaN...) and cells
    whose true label is unknown are False. Labels that are neither term ids nor names of
    the ontology (free text) only match themselves.
    """
    true = _as_labels(y_true, hierarchy, "y_true")
    pred = _as_labels(y_pred, hierarchy, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}.")
    exact, descendant = _correct(true, pred, _ontology_prefix(ontology, hierarchy))
    return exact | descendant


@dataclass(frozen=True)
class Report:
    """Classification metrics on one set of cells.

    Attributes
    ----------
    accuracy
        Fraction of cells predicted right.
    macro_f1
        Unweighted mean of the per-class F1 scores.
    weighted_f1
        Mean of the per-class F1 scores weighted by support.
    per_class
        One row per class (the labels scored): precision, recall, f1, support.
    n
        Number of cells scored (cells with an unknown true label are left out).
    n_corrected
        Predictions counted right because they are descendants of the true label.
    ontology_aware
        Whether the ontology rule was applied.
    """

    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: pd.DataFrame
    n: int
    n_corrected: int = 0
    ontology_aware: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Return the metrics as a JSON-serialisable dict.

        Returns
        -------
        The scalar metrics, and ``per_class`` as ``{label: {precision, recall, f1,
        support}}``.
        """
        return {
            "accuracy": float(self.accuracy),
            "macro_f1": float(self.macro_f1),
            "weighted_f1": float(self.weighted_f1),
            "n": int(self.n),
            "n_corrected": int(self.n_corrected),
            "ontology_aware": bool(self.ontology_aware),
            "per_class": {
                str(label): {
                    "precision": float(row["precision"]),
                    "recall": float(row["recall"]),
                    "f1": float(row["f1"]),
                    "support": int(row["support"]),
                }
                for label, row in self.per_class.iterrows()
            },
        }


def evaluate(
    y_true: Labels,
    y_pred: Labels,
    *,
    ontology_aware: bool = True,
    labels: Sequence[Any] | None = None,
    hierarchy: LabelHierarchy | None = None,
    ontology: str = "cl",
) -> Report:
    """Score predicted labels: accuracy, macro / weighted F1 and a per-class report.

    With ``ontology_aware``, each prediction that is a descendant of its cell's true label
    (see :func:`ontology_correct`) is first replaced by the true label; the metrics are
    then scikit-learn's (``accuracy_score``, ``f1_score``,
    ``precision_recall_fscore_support`` with ``zero_division=0``) on the corrected
    predictions. Predictions of an ancestor of the true label stay wrong.

    Parameters
    ----------
    y_true
        True labels (term ids, names, or codes of ``hierarchy``).
    y_pred
        Predicted labels, in the same form.
    ontology_aware
        Apply scTab's ontology rule; False gives scikit-learn's metrics unchanged.
    labels
        The classes to report and average over. By default scikit-learn's choice, the
        sorted union of the true and (corrected) predicted labels, less unknown labels.
    hierarchy
        The label hierarchy that encoded integer labels (see :func:`ontology_correct`).
    ontology
        Prefix of the ontology in which label names are looked up.

    Returns
    -------
    A :class:`Report`. Cells whose true label is unknown are left out (their number is
    logged); unknown predictions are wrong, and are not a class of their own.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    true = _as_labels(y_true, hierarchy, "y_true")
    pred = _as_labels(y_pred, hierarchy, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}.")
    keep = ~_unknown_mask(true)
    if not keep.all():
        logger.info("%d cell(s) with an unknown true label are not scored.", int((~keep).sum()))
        true, pred = true[keep], pred[keep]
    if true.size == 0:
        raise ValueError("No cell with a known true label to score.")
    n_corrected = 0
    if ontology_aware:
        _, descendant = _correct(true, pred, _ontology_prefix(ontology, hierarchy))
        n_corrected = int(descendant.sum())
        pred = np.where(descendant, true, pred)
    if labels is None:
        union = np.union1d(true.astype(str), pred.astype(str))
        labels = [label for label in union if not _unknown_mask(np.array([label]))[0]]
    else:
        labels = [str(label).strip() for label in labels]
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(labels, name="label"),
    )
    return Report(
        accuracy=float(accuracy_score(true, pred)),
        macro_f1=float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
        weighted_f1=float(
            f1_score(true, pred, labels=labels, average="weighted", zero_division=0)
        ),
        per_class=per_class,
        n=int(true.size),
        n_corrected=n_corrected,
        ontology_aware=ontology_aware,
    )


def roc_auc(
    y_true: Labels,
    proba: pd.DataFrame,
    *,
    average: Literal["macro"] | None = "macro",
) -> float | pd.Series:
    """One-vs-rest ROC-AUC of predicted class probabilities (scaLR).

    Parameters
    ----------
    y_true
        True label of each cell, in the row order of ``proba``.
    proba
        Cells x classes probabilities (``TabularClassifier.predict_proba``); the columns
        are the class labels.
    average
        ``"macro"``: the unweighted mean over classes; None: the per-class values.

    Returns
    -------
    The macro ROC-AUC, or a Series class -> ROC-AUC. A class is scored against all other
    cells from its column of ``proba``; classes absent from ``y_true`` are skipped (no
    positive cell), and so are classes every cell belongs to (no negative cell). Cells
    whose label has no column in ``proba`` count as negatives of every class.

    Raises
    ------
    ValueError
        ``proba`` and ``y_true`` differ in length, or no class can be scored.
    """
    from sklearn.metrics import roc_auc_score

    if average not in ("macro", None):
        raise ValueError(f"average must be 'macro' or None, not {average!r}.")
    true = _as_labels(y_true, None, "y_true")
    if len(true) != len(proba):
        raise ValueError(f"y_true has {len(true)} labels but proba has {len(proba)} rows.")
    scores: dict[str, float] = {}
    for column in proba.columns:
        positive = true == str(column).strip()
        if positive.all() or not positive.any():
            continue
        scores[str(column)] = float(roc_auc_score(positive, proba[column].to_numpy()))
    missing = sorted(set(true[~_unknown_mask(true)]) - {str(c).strip() for c in proba.columns})
    if missing:
        logger.warning("True labels without a column in proba (not scored): %s", missing[:20])
    if not scores:
        raise ValueError(
            "No class of proba can be scored: each needs both positive and negative cells "
            f"in y_true (labels {sorted(set(true))[:10]}, columns {list(proba.columns)[:10]})."
        )
    per_class = pd.Series(scores, name="roc_auc")
    return float(per_class.mean()) if average == "macro" else per_class
