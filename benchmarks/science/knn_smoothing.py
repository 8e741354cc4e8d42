"""kNN-smoothing 2 (Wagner, Yan & Yanai 2018), written from the paper's description.

Wagner F., Yan Y., Yanai I. "K-nearest neighbor smoothing for high-throughput single-cell
RNA-Seq data" (bioRxiv 217737, version 2 of the algorithm). Each cell's profile is
replaced by the sum of the raw UMI counts of itself and its k nearest neighbours. The
neighbours are found iteratively, with k growing by doubling so that the neighbourhood of
each step is computed on profiles already smoothed by the previous one:

1. step p = 1, 2, ..., ceil(log2(k + 1)) uses k_p = min(2**p - 1, k) neighbours;
2. the current profiles S (at step 1 the raw counts X) are median-normalised (each cell
   scaled to the median total count of the cells) and Freeman-Tukey transformed
   (sqrt(x) + sqrt(x + 1)), then projected on their first ``d`` principal components;
3. optionally, each principal component is dithered by uniform noise of width
   ``dither`` times its range, so that cells with identical coordinates are not all
   neighbours of each other;
4. for each cell, the k_p cells nearest to it (Euclidean distance in PC space) plus the
   cell itself are found, and S is recomputed as the sum of their raw counts X.

The output is S of the last step: smoothed counts on the scale of (k + 1) cells.
``k = 0`` returns a copy of the input (no neighbours, no step). Here k counts the
neighbours, the cell itself excluded, as in the paper.

Cells are rows (AnnData's orientation), genes columns. numpy and scikit-learn only.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA

__all__ = ["freeman_tukey", "knn_smoothing", "median_normalize"]


def median_normalize(x: np.ndarray) -> np.ndarray:
    """Scale each cell (row) to the median total count of the cells with counts."""
    totals = x.sum(axis=1)
    target = np.median(totals[totals > 0]) if np.any(totals > 0) else 1.0
    scale = np.divide(
        target, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0
    )
    return x * scale[:, None]


def freeman_tukey(x: np.ndarray) -> np.ndarray:
    """The Freeman-Tukey variance-stabilising transform sqrt(x) + sqrt(x + 1)."""
    return np.sqrt(x) + np.sqrt(x + 1)


def _neighbours(
    s: np.ndarray, k: int, d: int, dither: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices (n_cells, k + 1) of each cell and its k nearest neighbours, itself first."""
    y = freeman_tukey(median_normalize(s))
    n_comp = max(1, min(d, y.shape[0] - 1, y.shape[1]))
    seed = int(rng.integers(2**31 - 1))
    pcs = PCA(n_components=n_comp, svd_solver="full", random_state=seed).fit_transform(y)
    if dither > 0:
        span = np.ptp(pcs, axis=0)  # (d,)
        pcs = pcs + (rng.random(pcs.shape) - 0.5) * span * dither
    sq = (pcs**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * pcs @ pcs.T  # (n, n) squared distances
    np.fill_diagonal(dist, -np.inf)  # each cell is its own first neighbour, even with ties
    return np.argsort(dist, axis=1, kind="stable")[:, : k + 1]


def knn_smoothing(
    x: np.ndarray | sp.spmatrix,
    k: int,
    *,
    d: int = 10,
    dither: float = 0.03,
    seed: int = 0,
) -> np.ndarray:
    """kNN-smoothing 2 of a cells x genes count matrix.

    Parameters
    ----------
    x
        Raw counts, cells x genes (dense or sparse).
    k
        Number of neighbours aggregated with each cell (the cell itself excluded);
        ``0`` returns the input.
    d
        Principal components used for the neighbour search.
    dither
        Width of the uniform noise added to each principal component, as a fraction of
        its range (0 disables it).
    seed
        Seed of the dithering and of the PCA; the result is deterministic for a seed.

    Returns
    -------
    Smoothed counts, cells x genes, float64: each cell's row is the sum of the raw counts
    of itself and its ``k`` nearest neighbours found in the last step.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}.")
    raw = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"x must be a 2-d cells x genes matrix, got shape {raw.shape}.")
    if k >= raw.shape[0]:
        raise ValueError(f"k = {k} needs more than {k} cells, got {raw.shape[0]}.")
    rng = np.random.default_rng(seed)
    smoothed = raw.copy()
    for p in range(1, math.ceil(math.log2(k + 1)) + 1):
        k_step = min(2**p - 1, k)
        idx = _neighbours(smoothed, k_step, d, dither, rng)  # (n, k_step + 1)
        n = raw.shape[0]
        agg = sp.csr_matrix(
            (np.ones(idx.size), (np.repeat(np.arange(n), idx.shape[1]), idx.ravel())), shape=(n, n)
        )
        smoothed = np.asarray(agg @ raw)  # (n, genes): raw counts of the neighbourhood
    return smoothed
