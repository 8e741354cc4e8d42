"""scaLR's chunked feature selection, per-class biomarkers and gene recall curves.

scaLR (Methods, "Feature extraction", Algorithm 1) "partitions the input dataset into
feature subsets" of size S; "each subset is used to fit exactly one model; each model is
trained on a distinct subset of features". The weight matrices of the subset models are
concatenated into "a weight matrix for all features across all classes", then "the mean
of absolute weights of each feature across all classes" is its score, and the top-K
features train the final model. For models with several layers "the SHAP algorithm is
used to identify class-specific top features/biomarkers". Gene recall curves compare the
top-ranked genes of a class with reference biomarkers ("most biomarkers appear within the
top 100 features for each cell type").

Here a chunk model is fitted by ``fit_fn(adata, genes=chunk, label_key=..., seed=...)``:
the model sees only the chunk's genes, but, as in :mod:`scprint.tabular`, each cell is
normalised by its total over all its genes. The default ``fit_fn`` is
``scprint.tabular.api.fit(..., model="linear")``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.figure import Figure

__all__ = [
    "FeatureSelection",
    "gene_chunks",
    "chunked_feature_selection",
    "biomarkers",
    "gene_recall_curve",
    "plot_gene_recall",
]

logger = logging.getLogger(__name__)

FitFn = Callable[..., Any]


@dataclass(frozen=True)
class FeatureSelection:
    """The result of :func:`chunked_feature_selection`.

    Attributes
    ----------
    scores
        Gene -> score (mean absolute weight, or mean absolute SHAP value, over classes),
        for every gene, sorted from the highest.
    genes
        The ``top_k`` genes with the highest scores, best first.
    per_class
        Genes x classes signed importances (chunk model weights, or mean SHAP values of
        the cells of each class), for every gene: the source of :func:`biomarkers`.
    chunks
        The genes of each chunk, in fitting order.
    scorer
        ``"weights"`` or ``"shap"``.
    """

    scores: pd.Series
    genes: list[str]
    per_class: pd.DataFrame
    chunks: list[list[str]]
    scorer: str = "weights"


def gene_chunks(genes: Sequence[str], chunk_size: int) -> list[list[str]]:
    """Split genes into consecutive chunks (scaLR's feature subsets).

    Parameters
    ----------
    genes
        The genes, in order.
    chunk_size
        Genes per chunk; the last chunk holds the remainder.

    Returns
    -------
    The chunks: every gene lies in exactly one.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}.")
    genes = [str(g) for g in genes]
    return [genes[i : i + chunk_size] for i in range(0, len(genes), chunk_size)]


def _default_fit(adata: ad.AnnData, *, genes: list[str], label_key: str, seed: int, **kwargs):
    from scprint.tabular import api

    # one fixed penalty and no refit: the chunk models only rank genes by their weights
    kwargs = {"l2": 1e-3, "refit": False, **kwargs}
    return api.fit(adata, label_key=label_key, model="linear", genes=genes, seed=seed, **kwargs)


def _weights(model: Any, chunk: list[str]) -> pd.DataFrame:
    """The chunk model's genes x classes weights, over exactly the chunk's genes."""
    if not hasattr(model, "weights"):
        raise TypeError(
            f"The chunk model ({type(model).__name__}) has no weights() method: use "
            "scorer='shap', or a fit_fn returning a linear model."
        )
    weights = pd.DataFrame(model.weights())
    weights.index = weights.index.astype(str)
    absent = [g for g in chunk if g not in weights.index]
    if absent:
        logger.warning("%d chunk genes have no weight (scored 0): %s", len(absent), absent[:10])
    return weights.reindex(chunk).fillna(0.0)


def _shap_importance(
    model: Any,
    adata: ad.AnnData,
    chunk: list[str],
    label_key: str,
    *,
    layer: str | None,
    n_background: int,
    n_explain: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Mean SHAP value of each gene for each class, on the cells of that class."""
    try:
        import shap
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "scorer='shap' needs the shap package: pip install shap (or the [bench] extra)."
        ) from err
    import anndata as ad
    import scipy.sparse as sp

    from scdataloader.preprocess import counts_matrix

    X, _ = counts_matrix(adata, layer)
    columns = adata.var_names.get_indexer(chunk)
    n = adata.n_obs
    background = rng.choice(n, size=min(n_background, n), replace=False)
    explain = rng.choice(n, size=min(n_explain, n), replace=False)

    def rows(idx: np.ndarray) -> np.ndarray:
        block = X[np.sort(idx)][:, columns]
        return np.asarray(block.todense() if sp.issparse(block) else block, dtype=np.float32)

    var = pd.DataFrame(index=pd.Index(chunk))

    def predict(values: np.ndarray) -> np.ndarray:
        batch = ad.AnnData(np.asarray(values, dtype=np.float32), var=var)
        return np.asarray(model.predict_proba(batch), dtype=np.float64)

    classes = [str(c) for c in getattr(model, "classes", [])]
    explainer = shap.Explainer(predict, shap.maskers.Independent(rows(background)))
    values = explainer(rows(explain), max_evals=2 * len(chunk) + 1).values  # (C, G, K)
    if not classes:
        classes = [str(k) for k in range(values.shape[-1])]
    labels = adata.obs[label_key].astype(str).to_numpy()[np.sort(explain)]
    per_class = {}
    for k, label in enumerate(classes):
        own = labels == label
        per_class[label] = values[own if own.any() else slice(None), :, k].mean(axis=0)
    return pd.DataFrame(per_class, index=pd.Index(chunk)).assign(
        _abs=np.abs(values).mean(axis=(0, 2))
    )


def chunked_feature_selection(
    adata: ad.AnnData,
    *,
    label_key: str,
    chunk_size: int = 1000,
    top_k: int = 100,
    scorer: Literal["weights", "shap"] = "weights",
    fit_fn: FitFn | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    layer: str | None = None,
    n_background: int = 50,
    n_explain: int = 100,
) -> FeatureSelection:
    """Select the top genes for a classification, one model per gene chunk (scaLR).

    Parameters
    ----------
    adata
        Cells x genes with raw counts and the labels in ``obs[label_key]``.
    label_key
        obs column of the classes.
    chunk_size
        Genes per chunk (scaLR's feature subset size S).
    top_k
        Number of genes kept (scaLR's K).
    scorer
        ``"weights"``: a gene scores the mean absolute weight of its chunk model over the
        classes, and its signed weights are its per-class importances. ``"shap"`` (needs
        the ``shap`` package): the mean absolute SHAP value over ``n_explain`` cells and
        the classes, against ``n_background`` background cells; per class, the mean SHAP
        value on the explained cells of that class. SHAP explains the model on count
        input restricted to the chunk, so it costs ``2 * chunk_size + 1`` evaluations of
        ``n_background`` cells per explained cell.
    fit_fn
        ``fit_fn(adata, genes=chunk, label_key=label_key, seed=seed, **fit_kwargs)``
        fits a model on the genes ``chunk`` of ``adata`` (normalising each cell by its
        total over all genes). With ``scorer="weights"`` the model needs ``weights()``
        (genes x classes DataFrame), with ``"shap"`` ``predict_proba(adata)`` (cells x
        classes) and ``classes``. By default ``scprint.tabular.api.fit(...,
        model="linear")``.
    fit_kwargs
        Extra keyword arguments of ``fit_fn`` (e.g. ``{"max_epochs": 5}``).
    seed
        Seed passed to every chunk fit, and of the SHAP cell samples.
    layer
        Layer holding the counts (``"raw"`` for ``adata.raw.X``), read by SHAP and passed
        to the default ``fit_fn``; a custom ``fit_fn`` gets it only through
        ``fit_kwargs``.
    n_background
        Background cells of SHAP.
    n_explain
        Cells whose predictions SHAP explains.

    Returns
    -------
    A :class:`FeatureSelection`. Train the final model on its ``genes`` (e.g.
    ``api.fit(adata, label_key=..., genes=selection.genes)``).
    """
    if scorer not in ("weights", "shap"):
        raise ValueError(f"scorer must be 'weights' or 'shap', not {scorer!r}.")
    if label_key not in adata.obs.columns:
        raise ValueError(
            f"{label_key!r} is not an obs column (available: {list(adata.obs.columns)})."
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, not {top_k}.")
    if not adata.var_names.is_unique:
        raise ValueError("adata.var_names must be unique to score genes.")
    if scorer == "shap":
        try:
            import shap  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "scorer='shap' needs the shap package: pip install shap (or the [bench] extra)."
            ) from err
    kwargs = dict(fit_kwargs or {})
    if fit_fn is None:
        fit_fn = _default_fit
        kwargs.setdefault("progress", False)
        if layer is not None:
            kwargs.setdefault("layer", layer)
    chunks = gene_chunks(adata.var_names, chunk_size)
    rng = np.random.default_rng(seed)
    parts: list[pd.DataFrame] = []
    abs_parts: list[pd.Series] = []
    try:
        from tqdm.auto import tqdm

        progress = tqdm(chunks, desc="gene chunks", disable=len(chunks) < 3, leave=False)
    except ImportError:  # pragma: no cover
        progress = chunks
    for chunk in progress:
        model = fit_fn(adata, genes=chunk, label_key=label_key, seed=seed, **kwargs)
        if scorer == "weights":
            weights = _weights(model, chunk)
            parts.append(weights)
            abs_parts.append(weights.abs().mean(axis=1))
        else:
            table = _shap_importance(
                model,
                adata,
                chunk,
                label_key,
                layer=layer,
                n_background=n_background,
                n_explain=n_explain,
                rng=rng,
            )
            abs_parts.append(table.pop("_abs"))
            parts.append(table)
    per_class = pd.concat(parts, axis=0).fillna(0.0)
    per_class.columns = per_class.columns.astype(str)
    scores = pd.concat(abs_parts).rename("score")
    # Stable sort: ties keep the gene order of adata.
    scores = scores.iloc[np.argsort(-scores.to_numpy(), kind="stable")]
    genes = scores.index[: min(top_k, len(scores))].astype(str).tolist()
    logger.info(
        "Selected %d of %d genes from %d chunk models (%s scores).",
        len(genes),
        len(scores),
        len(chunks),
        scorer,
    )
    return FeatureSelection(
        scores=scores, genes=genes, per_class=per_class, chunks=chunks, scorer=scorer
    )


def biomarkers(
    selection: FeatureSelection,
    *,
    n: int = 10,
    names: Mapping[str, str] | pd.Series | None = None,
    selected_only: bool = False,
) -> dict[str, list[str]]:
    """Return the top positive-importance genes of each class.

    Parameters
    ----------
    selection
        The result of :func:`chunked_feature_selection`.
    n
        Genes per class.
    names
        Gene -> display name (e.g. ``adata.var["feature_name"]`` for Ensembl ids); genes
        without a name keep their id.
    selected_only
        Only consider the selected top-K genes (``selection.genes``).

    Returns
    -------
    Class -> up to ``n`` genes with a positive importance, the highest first.
    """
    table = selection.per_class
    if selected_only:
        table = table.loc[[g for g in selection.genes if g in table.index]]
    rename = dict(names.items()) if names is not None else {}
    out: dict[str, list[str]] = {}
    for label in table.columns:
        column = table[label]
        column = column[column > 0]
        top = column.iloc[np.argsort(-column.to_numpy(), kind="stable")[:n]].index
        out[str(label)] = [str(rename.get(g, g)) for g in top]
    return out


def gene_recall_curve(
    ranked_genes: Sequence[str],
    reference_genes: Sequence[str],
    *,
    max_k: int | None = None,
) -> pd.DataFrame:
    """Recall of reference genes among the top k ranked genes, for k = 1 .. max_k.

    Parameters
    ----------
    ranked_genes
        Genes from the most to the least important (repeats after the first are dropped).
    reference_genes
        Known genes (e.g. literature biomarkers of a cell type).
    max_k
        Last rank; by default the length of ``ranked_genes`` (at most).

    Returns
    -------
    DataFrame with columns ``k``, ``n_found`` (reference genes among the top k) and
    ``recall`` (``n_found`` over the number of distinct reference genes, including those
    absent from the ranking).
    """
    ranked = list(dict.fromkeys(str(g) for g in ranked_genes))
    reference = {str(g) for g in reference_genes}
    if not reference:
        raise ValueError("reference_genes is empty: recall is undefined.")
    max_k = len(ranked) if max_k is None else min(int(max_k), len(ranked))
    hits = np.fromiter((g in reference for g in ranked[:max_k]), dtype=bool, count=max_k)
    found = np.cumsum(hits)
    return pd.DataFrame(
        {"k": np.arange(1, max_k + 1), "n_found": found, "recall": found / len(reference)}
    )


def _atomic_png(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_gene_recall(
    curves: Mapping[str, pd.DataFrame], path: str | os.PathLike | None = None
) -> Figure:
    """Plot gene recall curves (scaLR, Fig. 2B).

    Parameters
    ----------
    curves
        Name (a cell type, a method) -> the output of :func:`gene_recall_curve`.
    path
        Where to write the figure as PNG (written atomically); None to only return it.

    Returns
    -------
    The matplotlib Figure (not registered with pyplot).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for name, curve in curves.items():
        ax.plot(curve["k"], curve["recall"], label=str(name))
    ax.set_xlabel("top k genes")
    ax.set_ylabel("recall of reference genes")
    ax.set_ylim(0, 1.02)
    if curves:
        ax.legend(fontsize="small")
    if path is not None:
        _atomic_png(fig, path)
    return fig
