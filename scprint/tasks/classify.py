"""Zero-shot cell classification: label probabilities, coarser levels, temperature scaling.

Each classifier head of a model predicts the *leaf* labels of its class (see
:class:`scdataloader.ontology.LabelHierarchy`); the probability of a coarser ontology
term is the sum of the probabilities of the leaves under it. Probabilities can be
calibrated by temperature scaling (Guo et al., 2017): the logits are divided by one
temperature per class, fitted on labelled cells by minimising the negative log
likelihood of their labels, coarse labels included (the likelihood of a coarse label is
the summed probability of its leaves, as in the hierarchical training loss).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from scdataloader.errors import InputError, LabelError

from ._data import iterate, prepare, resolve_model

__all__ = ["classify", "fit_temperature", "apply_temperature", "label_nll"]

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"

# Bounds of the fitted temperature (searched on log T).
_T_MIN, _T_MAX = 1e-2, 1e2


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the leaf labels from logits divided by a temperature.

    Parameters
    ----------
    logits
        Scores over the leaf labels, (n_cells, n_leaves).
    temperature
        Positive; above 1 flattens the probabilities, below 1 sharpens them.

    Returns
    -------
    float32 (n_cells, n_leaves) softmax of ``logits / temperature``; each row sums to 1.
    """
    temperature = _check_temperature(temperature)
    z = np.asarray(logits, dtype=np.float64) / temperature
    return np.exp(log_softmax(z, axis=1)).astype(np.float32)


def _targets(labels: np.ndarray, n_leaves: int, leaf_matrix: np.ndarray | None) -> np.ndarray:
    """Boolean (n_cells, n_leaves): the leaves whose probabilities make each label's."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if leaf_matrix is None:
        leaf_matrix = np.zeros((0, n_leaves), dtype=bool)
    leaf_matrix = np.asarray(leaf_matrix, dtype=bool)
    if leaf_matrix.ndim != 2 or leaf_matrix.shape[1] != n_leaves:
        raise ValueError(f"leaf_matrix must be (n_coarse, {n_leaves}); got {leaf_matrix.shape}.")
    n_codes = n_leaves + leaf_matrix.shape[0]
    if labels.size and labels.max() >= n_codes:
        raise ValueError(f"label codes must be < n_leaves + n_coarse = {n_codes}.")
    table = np.vstack([np.eye(n_leaves, dtype=bool), leaf_matrix, np.zeros((1, n_leaves), bool)])
    return table[np.where(labels < 0, n_codes, labels)]


def _nll(logits: np.ndarray, target: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    masked = np.where(target, z, -np.inf)
    return float(np.mean(logsumexp(z, axis=1) - logsumexp(masked, axis=1)))


def label_nll(
    logits: np.ndarray,
    labels: np.ndarray,
    leaf_matrix: np.ndarray | None = None,
    temperature: float = 1.0,
) -> float:
    """Mean negative log likelihood of labels (leaf or coarse) at a temperature.

    Parameters
    ----------
    logits
        Scores over the leaf labels, (n_cells, n_leaves).
    labels
        Integer codes, (n_cells,): ``0 .. n_leaves - 1`` a leaf, ``n_leaves + j`` the
        coarse label whose leaves are ``leaf_matrix[j]``, negative for unknown (ignored).
    leaf_matrix
        Boolean (n_coarse, n_leaves), e.g. :meth:`LabelHierarchy.leaf_matrix`; None when
        every label is a leaf.
    temperature
        Positive temperature dividing the logits.

    Returns
    -------
    The mean over the labelled cells of ``-log`` (summed probability of the label's
    leaves).

    Raises
    ------
    LabelError
        No cell has a usable label.
    """
    logits = np.asarray(logits, dtype=np.float64)
    target = _targets(labels, logits.shape[1], leaf_matrix)
    known = target.any(axis=1)
    if not known.any():
        raise LabelError("No cell has a known label: nothing to evaluate or fit on.")
    return _nll(logits[known], target[known], _check_temperature(temperature))


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    leaf_matrix: np.ndarray | None = None,
) -> float:
    """Fit the temperature minimising the negative log likelihood of known labels.

    A bounded scalar search (Brent) on ``log T``, ``T`` in ``[0.01, 100]``.

    Parameters
    ----------
    logits, labels, leaf_matrix
        As in :func:`label_nll`; cells with a negative label are ignored.

    Returns
    -------
    The fitted temperature.

    Raises
    ------
    LabelError
        No cell has a usable label.
    """
    logits = np.asarray(logits, dtype=np.float64)
    target = _targets(labels, logits.shape[1], leaf_matrix)
    known = target.any(axis=1)
    if not known.any():
        raise LabelError("No cell has a known label: cannot fit a temperature.")
    z, t = logits[known], target[known]
    result = minimize_scalar(
        lambda log_t: _nll(z, t, float(np.exp(log_t))),
        bounds=(np.log(_T_MIN), np.log(_T_MAX)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.exp(result.x))
    logger.info(
        "Fitted temperature %.4g on %d cells (NLL %.4f -> %.4f)",
        temperature,
        int(known.sum()),
        _nll(z, t, 1.0),
        float(result.fun),
    )
    return temperature


def _check_temperature(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"A temperature must be a positive number, not {value!r}.") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"A temperature must be a positive number, not {value!r}.")
    return value


def _encode_labels(values: pd.Series, hierarchy) -> tuple[np.ndarray, np.ndarray]:
    """Codes of obs labels against a hierarchy, and the leaf matrix they index.

    Leaves of the hierarchy are leaf codes; any other term with leaves under it (a coarse
    label of the hierarchy or any ontology ancestor) gets a row of the leaf matrix;
    unknown values and terms over no leaf are ``-1``.
    """
    from scdataloader.ontology import is_unknown, leaves_under

    values = values.astype(object).where(~is_unknown(values), None)
    index = {leaf: i for i, leaf in enumerate(hierarchy.leaves)}
    rows: list[np.ndarray] = []
    code_of: dict[str, int] = {}
    unusable = []
    for label in pd.unique(values.dropna()):
        label = str(label).strip()
        if label in index:
            code_of[label] = index[label]
            continue
        under = leaves_under(label, hierarchy)
        if not under:
            unusable.append(label)
            code_of[label] = -1
            continue
        row = np.zeros(hierarchy.n_leaves, dtype=bool)
        row[[index[leaf] for leaf in under]] = True
        code_of[label] = hierarchy.n_leaves + len(rows)
        rows.append(row)
    if unusable:
        logger.warning(
            "%d label(s) of %r cover none of the model's leaves and are ignored: %s",
            len(unusable),
            hierarchy.key,
            unusable[:20],
        )
    codes = np.array(
        [-1 if v is None else code_of[str(v).strip()] for v in values], dtype=np.int64
    )
    matrix = np.array(rows, dtype=bool).reshape(len(rows), hierarchy.n_leaves)
    return codes, matrix


def classify(
    adata: ad.AnnData,
    model,
    *,
    classes: Sequence[str] | str | None = None,
    key_added: str = "scprint",
    top_k: int = 3,
    levels: Mapping[str, Sequence[str]] | None = None,
    temperature: float | Mapping[str, float] | str | None = None,
    labels_key: str | Mapping[str, str] | None = None,
    unknown_threshold: float = 0.0,
    max_len: int = 2200,
    how: str = "random expr",
    batch_size: int = 32,
    gene_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Predict cell labels (cell type, disease...) with a pretrained scPRINT model.

    Parameters
    ----------
    adata
        Cells x genes with raw counts; gene symbols or Ensembl ids, human or mouse.
    model
        A loaded model (``scprint.load``) or a checkpoint path.
    classes
        The classes to predict (obs columns the model has a classifier for, e.g.
        ``"cell_type_ontology_term_id"``); default all of ``model.hierarchies``.
    key_added
        Prefix of the keys written.
    top_k
        Also write the ``top_k`` most probable leaves of each cell (0: none).
    levels
        Class -> coarser ontology terms (e.g. ``{"cell_type_ontology_term_id":
        ["CL:0000540"]}``, neuron) whose probability, the sum over the leaves under each
        term, is written too, with the most probable of these terms.
    temperature
        Divides the logits before the softmax: None (1), a positive number, a mapping
        class -> number, or ``"fit"``: one temperature per class minimising the negative
        log likelihood of the known labels in ``obs`` (see :func:`fit_temperature`).
    labels_key
        With ``temperature="fit"``: obs column of the labels (leaf or coarser ontology
        terms; unknown values are ignored); a mapping class -> column with several
        classes. Default: the class name itself.
    unknown_threshold
        A cell whose top leaf probability is below this is predicted ``"unknown"``.
    how
        Genes per cell beyond ``max_len`` expressed ones: ``"random expr"`` (a seeded,
        reproducible random subset, as in pretraining) or ``"most expr"``.
    max_len, batch_size, gene_key, layer, organism, progress, copy
        As in :func:`scprint.tasks.embed`.

    Returns
    -------
    ``None`` (or a copy with ``copy=True``), with, for each class ``c`` (``p`` standing
    for ``{key_added}_{c}``):

    ``obsm[f"{p}_proba"]``
        float32 (n_cells, n_leaves) probabilities of the leaf labels (rows sum to 1).
    ``uns[f"{p}_labels"]``
        The leaf term ids, in the column order of ``obsm[f"{p}_proba"]``.
    ``obs[p]``, ``obs[f"{p}_name"]``, ``obs[f"{p}_proba"]``
        The most probable leaf (``"unknown"`` below ``unknown_threshold``), its name, its
        probability.
    ``obs[f"{p}_top{i}"]``, ``obs[f"{p}_top{i}_proba"]``
        For ``i`` in 1..``top_k``: the i-th most probable leaf and its probability.
    ``obsm[f"{p}_coarse_proba"]``, ``uns[f"{p}_coarse_labels"]``, ``obs[f"{p}_coarse"]``,
    ``obs[f"{p}_coarse_name"]``
        With ``levels``: float32 (n_cells, n_terms) probabilities of the terms, the terms,
        the most probable term and its name.
    ``uns[f"{key_added}_temperature"]``
        Class -> temperature used.

    Raises
    ------
    InputError
        A class the model has no classifier for, a ``levels`` term over none of its
        leaves, or a bad ``top_k``, ``unknown_threshold`` or ``temperature``.
    LabelError
        With ``temperature="fit"``: the labels column is missing or no cell has a label
        the model's leaves cover.
    """
    module = resolve_model(model)
    hierarchies = module.hierarchies
    if classes is None:
        classes = list(hierarchies)
    elif isinstance(classes, str):
        classes = [classes]
    classes = list(dict.fromkeys(classes))
    unknown_classes = [c for c in classes if c not in hierarchies]
    if unknown_classes or not classes:
        raise InputError(
            f"The model has no classifier for {unknown_classes or 'any class'}; it predicts "
            f"{list(hierarchies)}."
        )
    if not (isinstance(top_k, int | np.integer) and top_k >= 0):
        raise InputError(f"top_k must be a non-negative integer, not {top_k!r}.")
    if not 0 <= unknown_threshold <= 1:
        raise InputError(f"unknown_threshold must lie in [0, 1], not {unknown_threshold!r}.")
    levels = dict(levels or {})
    extra = [c for c in levels if c not in classes]
    if extra:
        raise InputError(f"levels names classes that are not predicted: {extra} ({classes}).")
    coarse_rows = {c: _level_matrix(hierarchies[c], list(terms)) for c, terms in levels.items()}

    fit = isinstance(temperature, str)
    if fit and temperature != "fit":
        raise InputError(
            f"temperature must be None, a number, a mapping or 'fit', not {temperature!r}."
        )
    fit_labels: dict[str, pd.Series] = {}
    temperatures: dict[str, float] = {}
    if fit:
        for c in classes:
            if isinstance(labels_key, Mapping):
                column = labels_key.get(c, c)
            elif labels_key is not None:
                if len(classes) > 1:
                    raise InputError(
                        "With several classes, labels_key must map each class to a column."
                    )
                column = labels_key
            else:
                column = c
            if column not in adata.obs.columns:
                raise LabelError(
                    f"Fitting the temperature of {c!r} needs labels in obs[{column!r}], which "
                    "is missing; pass labels_key."
                )
            fit_labels[c] = adata.obs[column]
    elif isinstance(temperature, Mapping):
        temperatures = {c: _check(temperature.get(c, 1.0)) for c in classes}
    else:
        value = _check(1.0 if temperature is None else temperature)
        temperatures = dict.fromkeys(classes, value)

    source = prepare(adata, module, gene_key=gene_key, layer=layer, organism=organism)
    chunks: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    for _, out in iterate(
        source,
        module,
        batch_size=batch_size,
        max_len=max_len,
        mode=how,
        desc="classify",
        progress=progress,
    ):
        for c in classes:
            chunks[c].append(out["class_logits"][c].float().cpu().numpy())
    logits = {c: np.concatenate(chunks[c]).astype(np.float64) for c in classes}

    for c, values in fit_labels.items():
        codes, matrix = _encode_labels(values, hierarchies[c])
        if not (codes >= 0).any():
            raise LabelError(
                f"No cell has a label of {c!r} the model's leaves cover: cannot fit a temperature."
            )
        temperatures[c] = fit_temperature(logits[c], codes, matrix)

    target = adata.copy() if copy else adata
    for c in classes:
        h = hierarchies[c]
        prefix = f"{key_added}_{c}"
        proba = apply_temperature(logits[c], temperatures[c])
        leaves = np.array(h.leaves, dtype=object)
        names = {leaf: h.name(leaf) for leaf in h.leaves}
        names[UNKNOWN] = UNKNOWN
        best = proba.argmax(axis=1)
        top = proba[np.arange(len(proba)), best]
        predicted = np.where(top < unknown_threshold, UNKNOWN, leaves[best])
        target.obsm[f"{prefix}_proba"] = proba
        target.uns[f"{prefix}_labels"] = np.array(h.leaves, dtype=str)
        target.obs[prefix] = pd.Categorical(predicted)
        target.obs[f"{prefix}_name"] = pd.Categorical([names[p] for p in predicted])
        target.obs[f"{prefix}_proba"] = top
        order = np.argsort(-proba, axis=1, kind="stable")[:, : min(top_k, h.n_leaves)]
        for i in range(order.shape[1]):
            target.obs[f"{prefix}_top{i + 1}"] = pd.Categorical(leaves[order[:, i]])
            target.obs[f"{prefix}_top{i + 1}_proba"] = proba[np.arange(len(proba)), order[:, i]]
        if c in coarse_rows:
            terms, rows = coarse_rows[c]
            coarse = (proba.astype(np.float64) @ rows.T.astype(np.float64)).astype(np.float32)
            chosen = np.array(terms, dtype=object)[coarse.argmax(axis=1)]
            target.obsm[f"{prefix}_coarse_proba"] = coarse
            target.uns[f"{prefix}_coarse_labels"] = np.array(terms, dtype=str)
            target.obs[f"{prefix}_coarse"] = pd.Categorical(chosen)
            coarse_names = {t: h.name(t) for t in terms}
            target.obs[f"{prefix}_coarse_name"] = pd.Categorical([coarse_names[t] for t in chosen])
        n_unknown = int((predicted == UNKNOWN).sum())
        logger.info(
            "%s: %d cells classified (T=%.3g), %d unknown",
            c,
            len(proba),
            temperatures[c],
            n_unknown,
        )
    target.uns[f"{key_added}_temperature"] = {c: float(temperatures[c]) for c in classes}
    return target if copy else None


def _check(value) -> float:
    try:
        return _check_temperature(value)
    except ValueError as error:
        raise InputError(str(error)) from None


def _level_matrix(hierarchy, terms: list[str]) -> tuple[list[str], np.ndarray]:
    """The terms of a level and which leaves each covers, (n_terms, n_leaves) bool."""
    from scdataloader.ontology import leaves_under

    terms = [str(t).strip() for t in dict.fromkeys(terms)]
    if not terms:
        raise InputError(f"levels of {hierarchy.key!r} is empty.")
    index = {leaf: i for i, leaf in enumerate(hierarchy.leaves)}
    rows = np.zeros((len(terms), hierarchy.n_leaves), dtype=bool)
    empty = []
    for j, term in enumerate(terms):
        under = leaves_under(term, hierarchy)
        if not under:
            empty.append(term)
        rows[j, [index[leaf] for leaf in under]] = True
    if empty:
        raise InputError(
            f"The level terms {empty} of {hierarchy.key!r} cover none of the model's leaves "
            f"({list(hierarchy.leaves)[:10]}...)."
        )
    return terms, rows
