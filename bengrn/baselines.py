"""Baseline gene-network inference methods: GENIE3, GENIE3-TF, GRNBoost2, correlation, random.

Every method takes an :class:`anndata.AnnData` (cells x genes) holding raw counts (``X`` or
a ``layer``), normalises them inside (each cell to 10,000 counts, then ``log1p``) unless
``normalize=False``, and returns a :class:`~bengrn.network.GeneNetwork` over the chosen
genes (``genes=None``: all of them) in the ``"target_by_regulator"`` orientation: row
``i`` is a target, column ``j`` a regulator, ``M[i, j]`` scores ``genes[j] -> genes[i]``.
The network's ``var`` is indexed by ``adata.var_names`` and keeps a ``symbol`` column
when ``adata.var`` has one; ``method`` and ``params`` record how it was made.

Genes, regulators and targets may be named by id (``var_names``) or by symbol
(``var["symbol"]``); a name matching an id is taken as that id.

Methods
-------
:func:`genie3`
    GENIE3 (Huynh-Thu et al. 2010) on scikit-learn: one random forest (or extra-trees) per
    target predicting its unit-variance expression from the regulators' expression; the
    forest's impurity-based ``feature_importances_`` make the target's row.
:func:`genie3_tf`
    GENIE3 with the expressed transcription factors as the only regulators (GENIE3-TF,
    the scPRINT paper's most used baseline).
:func:`grnboost2`
    GRNBoost2 (Moerman et al. 2019) through ``rustscenic`` (a Rust implementation; the
    optional extra ``grnboost``: ``pip install rustscenic``).
:func:`correlation`
    Absolute Pearson or Spearman correlation.
:func:`random_network`
    Uniform random scores, the floor every method should beat.

:data:`BASELINES` maps the names ``"genie3"``, ``"genie3-tf"``, ``"grnboost2"``,
``"correlation"`` and ``"random"`` to these functions.

Typical use::

    from bengrn.baselines import genie3_tf

    net = genie3_tf(adata, n_trees=100, n_jobs=4)   # adata.X holds raw counts
    net.edges(top_k=1000)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .network import GeneNetwork

__all__ = [
    "BASELINES",
    "correlation",
    "genie3",
    "genie3_tf",
    "grnboost2",
    "random_network",
]

logger = logging.getLogger(__name__)

#: Counts per cell after normalisation (then ``log1p``).
TARGET_SUM = 1e4
_SYMBOL = "symbol"
# How many names an error message lists.
_SHOW = 5
# Above this many regulators a column-major (Fortran) input fits faster in scikit-learn's
# dense splitter (measured: 8,594 regulators x 385 cells, 0.29 s vs 0.44 s per forest);
# below it row-major is faster (220 regulators: 0.08 s vs 0.16 s). The forests are the same.
_FORTRAN_ABOVE = 1000


def _show(items: Sequence[Any]) -> str:
    items = list(items)
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


# ------------------------------------------------------------------------ expression


def _gene_table(adata: ad.AnnData) -> pd.DataFrame:
    """The genes of ``adata``: index = ids (str), ``symbol`` column when present."""
    ids = pd.Index(adata.var_names.astype(str))
    if not ids.is_unique:
        dup = ids[ids.duplicated()].unique()
        raise ValueError(f"adata.var_names must be unique; {len(dup)} repeated: {_show(dup)}")
    var = pd.DataFrame(index=ids)
    if _SYMBOL in adata.var.columns:
        var[_SYMBOL] = adata.var[_SYMBOL].astype(str).to_numpy()
    return var


def _resolve(names: Sequence[str] | pd.Index | str, var: pd.DataFrame, what: str) -> np.ndarray:
    """Positions in ``var`` of gene ``names`` (ids, else symbols); unknown names raise."""
    if isinstance(names, str):
        raise TypeError(f"{what} must be a list of gene names, not a string")
    names = pd.Index(names).astype(str)
    pos = var.index.get_indexer(names)
    if (pos < 0).any() and _SYMBOL in var.columns:
        symbols = pd.Index(var[_SYMBOL])
        # first gene with each symbol
        first = pd.Series(np.arange(len(symbols)), index=symbols)
        first = first[~first.index.duplicated()]
        by_symbol = first.reindex(names[pos < 0]).to_numpy()
        pos[pos < 0] = np.where(np.isnan(by_symbol), -1, by_symbol).astype(np.intp)
    unknown = names[pos < 0]
    if len(unknown):
        where = "adata.var_names" + (" or adata.var['symbol']" if _SYMBOL in var.columns else "")
        raise ValueError(f"{len(unknown)} {what} not found in {where}: {_show(unknown)}")
    return np.unique(pos)  # sorted, each gene once


def _expression(
    adata: ad.AnnData,
    *,
    layer: str | None,
    genes: Sequence[str] | None,
    normalize: bool,
    dtype: type = np.float32,
) -> tuple[np.ndarray, pd.DataFrame]:
    """The (normalised) dense expression of the chosen genes, and their table.

    Returns ``X`` (cells x chosen genes, C order, ``dtype``; normalised in float64) and
    ``var`` (chosen genes, in the order of ``adata.var_names``).
    """
    from scdataloader.errors import CountsError
    from scdataloader.preprocess import check_expressed_cells, check_not_empty, counts_matrix

    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"expected an AnnData (cells x genes), not {type(adata).__name__}")
    X, where = counts_matrix(adata, layer)
    check_not_empty(adata, "infer a network from")
    if hasattr(X, "to_memory"):  # backed sparse dataset
        X = X.to_memory()
    var = _gene_table(adata)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        values = X.data
    else:
        X = np.asarray(X)
        values = X
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise TypeError(f"{where} must hold real numbers, not {values.dtype}")
    if values.size:
        if not np.isfinite(np.sum(values, dtype=np.float64)):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise CountsError(
                f"{where} holds {bad} NaN or infinite values: fix or remove them first"
            )
        vmin = float(values.min())
        if vmin < 0:
            raise CountsError(
                f"{where} holds negative values (min {vmin:.3g}): it looks scaled or "
                "centred. Pass raw counts (or a non-negative normalised layer with "
                "normalize=False)."
            )
    if normalize:
        if np.issubdtype(values.dtype, np.floating) and values.size:
            frac = values != np.rint(values)
            if frac.any():
                examples = ", ".join(f"{v:.3g}" for v in values[frac][:3])
                raise CountsError(
                    f"{where} holds non-integer values (e.g. {examples}): it does not look "
                    "like raw counts. normalize=True normalises counts (total 1e4 + log1p); "
                    "pass normalize=False to use already normalised values as they are, or "
                    "pass the raw counts (e.g. layer='counts')."
                )
        totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        check_expressed_cells(totals, adata.obs_names, where, "they cannot be normalised")
    cols = np.arange(adata.n_vars) if genes is None else _resolve(genes, var, "genes")
    var = var.iloc[cols]
    sub = X[:, cols]
    dense = sub.toarray() if sp.issparse(sub) else np.array(sub, dtype=np.float64, copy=True)
    dense = dense.astype(np.float64, copy=False)
    if normalize:
        dense /= totals[:, None]
        dense *= TARGET_SUM
        np.log1p(dense, out=dense)
    return np.ascontiguousarray(dense, dtype=dtype), var


def _roles(
    var: pd.DataFrame, regulators: Sequence[str] | None, what: str = "regulators"
) -> np.ndarray:
    """Positions among the chosen genes of ``regulators`` (all genes when None)."""
    if regulators is None:
        return np.arange(len(var))
    pos = _resolve(regulators, var, what)
    if pos.size == 0:
        raise ValueError(f"no {what} given")
    return pos


def _network(
    matrix: np.ndarray, var: pd.DataFrame, method: str, params: dict[str, Any]
) -> GeneNetwork:
    return GeneNetwork(matrix, var=var, method=method, params=params)


# ---------------------------------------------------------------------------- GENIE3


def _forest(tree_method: str, n_trees: int, max_features: Any, min_samples_leaf: int, seed: int):
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    cls = {"rf": RandomForestRegressor, "et": ExtraTreesRegressor}[tree_method]
    return cls(
        n_estimators=n_trees,
        max_features=max_features,
        min_samples_leaf=min_samples_leaf,
        random_state=seed,
        n_jobs=1,
    )


def _importances(forest, kind: str) -> np.ndarray:
    if kind == "normalized":
        return forest.feature_importances_
    # The unnormalised total impurity decrease, averaged over trees (Huynh-Thu's code).
    raw = [e.tree_.compute_feature_importances(normalize=False) for e in forest.estimators_]
    return np.mean(raw, axis=0)


def genie3(
    adata: ad.AnnData,
    *,
    regulators: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    n_trees: int = 100,
    max_features: int | float | Literal["sqrt", "log2"] | None = "sqrt",
    tree_method: Literal["rf", "et"] = "rf",
    min_samples_leaf: int = 1,
    importance: Literal["normalized", "raw"] = "normalized",
    normalize: bool = True,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    n_jobs: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> GeneNetwork:
    """GENIE3: one tree ensemble per target gene, regulators ranked by importance.

    For each target, a random forest (``tree_method="rf"``, scikit-learn's
    ``RandomForestRegressor``) or extra-trees (``"et"``) predicts the target's expression,
    divided by its standard deviation (unit variance, as GENIE3 does), from the
    regulators' expression (the target itself left out when it is a regulator). The
    target's row holds the forest's impurity-based importances: ``M[target, regulator]``.
    Targets with zero variance get a zero row. Every forest uses ``random_state=seed``,
    so the result does not depend on ``n_jobs`` or on which targets are fitted.

    Parameters
    ----------
    adata
        Cells x genes.
    regulators
        Candidate regulators (ids or symbols); None: every gene (GENIE3). A list of
        transcription factors gives GENIE3-TF (see :func:`genie3_tf`).
    targets
        Targets to fit (ids or symbols); None: every gene. Other rows stay zero.
    n_trees
        Trees per forest.
    max_features
        Regulators drawn at each split (scikit-learn's ``max_features``): ``"sqrt"`` (the
        GENIE3 default, K = sqrt(number of regulators)), ``"log2"``, a count, a fraction,
        or None for all (K = all).
    tree_method
        ``"rf"`` (random forest, bootstrap samples) or ``"et"`` (extra-trees, no bootstrap).
    min_samples_leaf
        Fewest cells in a leaf.
    importance
        ``"normalized"``: scikit-learn's ``feature_importances_`` (each tree's importances
        sum to 1, as arboreto's GENIE3), so each row sums to 1; ``"raw"``: the total
        impurity decrease averaged over trees, unnormalised (Huynh-Thu's original code),
        which weighs well predicted targets more across rows.
    normalize
        Normalise raw counts (each cell to 1e4 counts, then log1p). False: use the values
        as they are (e.g. already log-normalised).
    layer
        Layer holding the counts; None: ``X``; ``"raw"``: ``adata.raw.X``.
    genes
        The network's genes (ids or symbols); None: all. Regulators and targets must be
        among them.
    n_jobs
        Forests fitted at once (threads; scikit-learn releases the GIL while building
        trees). -1: all cores.
    seed
        ``random_state`` of every forest.
    progress
        Show a progress bar over targets.

    Returns
    -------
    GeneNetwork
        Dense float32, ``"target_by_regulator"``, diagonal zero, method ``"genie3"``.
    """
    if tree_method not in ("rf", "et"):
        raise ValueError(f"tree_method must be 'rf' or 'et', not {tree_method!r}")
    if importance not in ("normalized", "raw"):
        raise ValueError(f"importance must be 'normalized' or 'raw', not {importance!r}")
    if n_trees < 1:
        raise ValueError(f"n_trees must be at least 1, got {n_trees}")
    # float64 targets (the forests see float32 inputs, as scikit-learn converts them)
    X, var = _expression(adata, layer=layer, genes=genes, normalize=normalize, dtype=np.float64)
    reg = _roles(var, regulators)
    tgt = _roles(var, targets, "targets")
    n_genes = len(var)
    fit = tgt[(X.max(axis=0) > X.min(axis=0))[tgt]]  # zero variance: zero row
    if len(fit) < len(tgt):
        logger.info("genie3: %d targets with zero variance get a zero row", len(tgt) - len(fit))
    is_reg = np.zeros(n_genes, dtype=bool)
    is_reg[reg] = True
    order = "F" if len(reg) > _FORTRAN_ABOVE else "C"
    X_reg = np.asarray(X[:, reg], dtype=np.float32, order=order)

    def one(t: int) -> tuple[int, np.ndarray, np.ndarray]:
        y = X[:, t]
        y = y / y.std()
        if is_reg[t]:
            keep = reg != t
            inputs, cols = np.asarray(X_reg[:, keep], order=order), reg[keep]
        else:
            inputs, cols = X_reg, reg
        if cols.size == 0:
            return t, cols, np.zeros(0)
        forest = _forest(tree_method, n_trees, max_features, min_samples_leaf, seed)
        forest.fit(inputs, y)
        return t, cols, _importances(forest, importance)

    logger.info(
        "genie3: %d targets x %d regulators, %d cells, %d trees (%s), n_jobs=%d",
        len(fit), len(reg), X.shape[0], n_trees, tree_method, n_jobs,
    )  # fmt: skip
    start = time.perf_counter()
    matrix = np.zeros((n_genes, n_genes), dtype=np.float32)
    bar = tqdm(total=len(fit), desc="GENIE3 targets", unit="target", disable=not progress)
    if n_jobs == 1:
        results = map(one, fit)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
            delayed(one)(int(t)) for t in fit
        )
    for t, cols, imp in results:
        matrix[t, cols] = imp
        bar.update()
    bar.close()
    logger.info("genie3: done in %.1f s", time.perf_counter() - start)
    np.fill_diagonal(matrix, 0)
    params = {
        "regulators": "all" if regulators is None else len(reg),
        "targets": "all" if targets is None else len(tgt),
        "n_trees": n_trees,
        "max_features": max_features,
        "tree_method": tree_method,
        "min_samples_leaf": min_samples_leaf,
        "importance": importance,
        "normalize": normalize,
        "layer": layer,
        "n_cells": int(X.shape[0]),
        "seed": seed,
    }
    return _network(matrix, var, "genie3", params)


def _tf_positions(var: pd.DataFrame, tfs: Sequence[str]) -> np.ndarray:
    """Positions of the genes whose id or symbol is in ``tfs``."""
    wanted = pd.Index(pd.Index(tfs).astype(str).unique())
    hit = var.index.isin(wanted)
    if _SYMBOL in var.columns:
        hit |= pd.Index(var[_SYMBOL]).isin(wanted)
    return np.flatnonzero(hit)


def genie3_tf(
    adata: ad.AnnData,
    *,
    tfs: Sequence[str] | None = None,
    organism: Literal["human", "mouse"] = "human",
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    **kwargs: Any,
) -> GeneNetwork:
    """GENIE3-TF: :func:`genie3` with the expressed transcription factors as regulators.

    The regulators are the genes, among ``genes``, whose id or symbol is a TF and which
    are expressed (non-zero in at least one cell).

    Parameters
    ----------
    adata
        Cells x genes.
    tfs
        TF names (ids or symbols); None: the ``organism``'s list,
        :func:`scdataloader.datasets.tfs` (1,639 human symbols, Lambert 2018).
    organism
        ``"human"`` or ``"mouse"``, when ``tfs`` is None.
    genes, layer
        As for :func:`genie3`.
    **kwargs
        Passed to :func:`genie3` (``n_trees``, ``normalize``, ``n_jobs``, ``seed``...).

    Returns
    -------
    GeneNetwork
        As :func:`genie3`, method ``"genie3-tf"``; ``params["tfs"]`` lists the regulators.
    """
    if "regulators" in kwargs:
        raise TypeError("genie3_tf chooses the regulators: pass tfs=, or use genie3")
    source = "given"
    if tfs is None:
        from scdataloader.datasets import tfs as tf_list

        tfs, source = tf_list(organism), f"scdataloader.datasets.tfs({organism!r})"
    var = _gene_table(adata)
    if genes is not None:
        var = var.iloc[_resolve(genes, var, "genes")]
    pos = _tf_positions(var, tfs)
    if pos.size == 0:
        raise ValueError(
            f"none of the {len(tfs)} TFs ({source}; e.g. {_show(tfs)}) is among the "
            f"{len(var)} genes (matched against adata.var_names"
            + (" and adata.var['symbol']" if _SYMBOL in var.columns else "")
            + "): check the organism and the gene naming (ids vs symbols)."
        )
    X, _ = _columns(adata, layer, var.index[pos])
    expressed = var.index[pos][_nonzero_columns(X)]
    if len(expressed) == 0:
        raise ValueError(f"the {pos.size} TFs found among the genes are never expressed")
    logger.info("genie3_tf: %d TFs found, %d expressed", pos.size, len(expressed))
    net = genie3(adata, regulators=list(expressed), genes=genes, layer=layer, **kwargs)
    params = dict(net.params)
    params.update({"tfs": list(expressed), "tf_source": source})
    return GeneNetwork(net.matrix, var=net.var, method="genie3-tf", params=params)


def _columns(adata: ad.AnnData, layer: str | None, ids: pd.Index):
    """The input matrix (``X`` or a layer) restricted to the genes ``ids``."""
    from scdataloader.preprocess import counts_matrix

    X, where = counts_matrix(adata, layer)
    cols = pd.Index(adata.var_names.astype(str)).get_indexer(ids)
    return X[:, cols], where


def _nonzero_columns(X) -> np.ndarray:
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    if sp.issparse(X):
        return np.asarray((abs(X) > 0).sum(axis=0)).ravel() > 0
    return np.asarray(np.any(np.asarray(X) != 0, axis=0)).ravel()


# ------------------------------------------------------------------------- GRNBoost2


def grnboost2(
    adata: ad.AnnData,
    *,
    regulators: Sequence[str] | None = None,
    n_estimators: int = 5000,
    learning_rate: float = 0.01,
    max_features: float = 0.1,
    subsample: float = 0.9,
    max_depth: int = 3,
    early_stop_window: int = 25,
    normalize: bool = True,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    n_jobs: int | None = None,
    seed: int = 0,
) -> GeneNetwork:
    """GRNBoost2 (stochastic gradient boosting per target, arboreto's defaults), run by
    ``rustscenic`` (``pip install rustscenic``, the extra ``grnboost``).

    Parameters
    ----------
    adata
        Cells x genes.
    regulators
        Candidate regulators (ids or symbols); None: every gene.
    n_estimators, learning_rate, max_features, subsample, max_depth, early_stop_window
        Boosting settings, passed to ``rustscenic.grn.infer`` (arboreto's GRNBoost2
        defaults; ``max_features`` is a fraction of the regulators).
    normalize, layer, genes
        As for :func:`genie3`.
    n_jobs
        Threads of the Rust thread pool, set through ``RAYON_NUM_THREADS``: it takes
        effect only before rustscenic's first parallel call in this process. None: the
        pool's default (all cores, or ``RAYON_NUM_THREADS`` when set).
    seed
        Seed of the Rust random-number generator.

    Returns
    -------
    GeneNetwork
        Dense float32, ``"target_by_regulator"``, diagonal zero, method ``"grnboost2"``;
        scores are the boosting importances (zero where rustscenic reports no edge).
    """
    try:
        import rustscenic.grn
        from rustscenic import __version__ as rs_version
    except ImportError as err:
        raise ImportError(
            "grnboost2 needs rustscenic (a Rust GRNBoost2): pip install rustscenic, or "
            "install this package with the 'grnboost' extra"
        ) from err
    X, var = _expression(adata, layer=layer, genes=genes, normalize=normalize)
    reg = _roles(var, regulators)
    ids = var.index
    if n_jobs is not None:
        os.environ["RAYON_NUM_THREADS"] = str(int(n_jobs))
    logger.info(
        "grnboost2 (rustscenic %s): %d genes x %d regulators, %d cells",
        rs_version, len(ids), len(reg), X.shape[0],
    )  # fmt: skip
    start = time.perf_counter()
    long = rustscenic.grn.infer(
        (X, list(ids)),
        list(ids[reg]),
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_features=max_features,
        subsample=subsample,
        max_depth=max_depth,
        early_stop_window=early_stop_window,
        seed=seed,
        verbose=False,
    )
    logger.info("grnboost2: %d edges in %.1f s", len(long), time.perf_counter() - start)
    matrix = _long_to_matrix(long, ids)
    params = {
        "regulators": "all" if regulators is None else len(reg),
        "n_estimators": n_estimators,
        "learning_rate": learning_rate,
        "max_features": max_features,
        "subsample": subsample,
        "max_depth": max_depth,
        "early_stop_window": early_stop_window,
        "normalize": normalize,
        "layer": layer,
        "n_cells": int(X.shape[0]),
        "seed": seed,
        "implementation": f"rustscenic {rs_version}",
    }
    return _network(matrix, var, "grnboost2", params)


def _long_to_matrix(
    long: pd.DataFrame,
    ids: pd.Index,
    *,
    source: str = "TF",
    target: str = "target",
    weight: str = "importance",
) -> np.ndarray:
    """A target x regulator float32 matrix from a (TF, target, importance) table."""
    matrix = np.zeros((len(ids), len(ids)), dtype=np.float32)
    if len(long):
        rows = ids.get_indexer(long[target].astype(str))
        cols = ids.get_indexer(long[source].astype(str))
        if (rows < 0).any() or (cols < 0).any():
            raise RuntimeError("rustscenic returned genes that were not in its input")
        matrix[rows, cols] = long[weight].to_numpy(np.float32)
    np.fill_diagonal(matrix, 0)
    return matrix


# ----------------------------------------------------------------------- correlation


def _standardise(X: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit norm (zero-variance columns all zero), in place."""
    X -= X.mean(axis=0, dtype=np.float64).astype(np.float32)
    norm = np.sqrt(np.einsum("ij,ij->j", X, X, dtype=np.float64))
    scale = np.zeros_like(norm)
    np.divide(1.0, norm, out=scale, where=norm > 0)
    X *= scale.astype(np.float32)
    return X


def correlation(
    adata: ad.AnnData,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    absolute: bool = True,
    regulators: Sequence[str] | None = None,
    normalize: bool = True,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
) -> GeneNetwork:
    """Gene-gene correlation over cells as a (symmetric) network.

    Parameters
    ----------
    adata
        Cells x genes.
    method
        ``"pearson"``, or ``"spearman"`` (Pearson of the ranks, ties averaged).
    absolute
        Score ``|corr|`` (default); False keeps the sign (negative edges rank last).
    regulators
        Keep only these columns (ids or symbols); None: every gene.
    normalize, layer, genes
        As for :func:`genie3`.

    Returns
    -------
    GeneNetwork
        Dense float32 (the only genes x genes allocation), ``"target_by_regulator"``,
        diagonal zero; genes with zero variance have zero rows and columns.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', not {method!r}")
    X, var = _expression(adata, layer=layer, genes=genes, normalize=normalize)
    reg = _roles(var, regulators)
    if method == "spearman":
        from scipy.stats import rankdata

        X = rankdata(X, axis=0).astype(np.float32)
    Z = _standardise(X)
    matrix = Z.T @ Z  # (genes, genes) float32
    if absolute:
        np.abs(matrix, out=matrix)
    np.clip(matrix, -1.0, 1.0, out=matrix)
    np.fill_diagonal(matrix, 0)
    if regulators is not None:
        others = np.ones(len(var), dtype=bool)
        others[reg] = False
        matrix[:, others] = 0
    params = {
        "method": method,
        "absolute": absolute,
        "regulators": "all" if regulators is None else len(reg),
        "normalize": normalize,
        "layer": layer,
        "n_cells": int(X.shape[0]),
    }
    return _network(matrix, var, "correlation", params)


# ---------------------------------------------------------------------------- random


def random_network(
    genes_or_adata: ad.AnnData | Sequence[str] | pd.Index,
    *,
    seed: int = 0,
    regulators: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
) -> GeneNetwork:
    """Uniform random scores in (0, 1], diagonal zero: the chance baseline.

    Parameters
    ----------
    genes_or_adata
        An AnnData (its genes, with their ``symbol`` column) or a list of gene ids.
    seed
        Seed of the generator.
    regulators
        Only these columns get scores (ids or symbols); None: every gene.
    genes
        With an AnnData, the network's genes (ids or symbols); None: all.

    Returns
    -------
    GeneNetwork
        Dense float32, ``"target_by_regulator"``, method ``"random"``.
    """
    if isinstance(genes_or_adata, ad.AnnData):
        var = _gene_table(genes_or_adata)
        if genes is not None:
            var = var.iloc[_resolve(genes, var, "genes")]
    else:
        if genes is not None:
            raise TypeError("genes= selects among an AnnData's genes; pass the list directly")
        if isinstance(genes_or_adata, str):
            raise TypeError("give a list of gene ids, not a string")
        ids = pd.Index(genes_or_adata).astype(str)
        if not ids.is_unique:
            raise ValueError(f"gene ids must be unique: {_show(ids[ids.duplicated()])}")
        var = pd.DataFrame(index=ids)
    n = len(var)
    rng = np.random.default_rng(seed)
    matrix = (1.0 - rng.random((n, n), dtype=np.float32)).astype(np.float32)  # (0, 1]
    np.fill_diagonal(matrix, 0)
    if regulators is not None:
        others = np.ones(n, dtype=bool)
        others[_resolve(regulators, var, "regulators")] = False
        matrix[:, others] = 0
    params = {"seed": seed, "regulators": "all" if regulators is None else int((~others).sum())}
    return _network(matrix, var, "random", params)


#: Baseline name -> function (each takes the AnnData first).
BASELINES: dict[str, Callable[..., GeneNetwork]] = {
    "genie3": genie3,
    "genie3-tf": genie3_tf,
    "grnboost2": grnboost2,
    "correlation": correlation,
    "random": random_network,
}
