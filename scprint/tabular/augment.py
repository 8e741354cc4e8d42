"""scTab's donor-difference data augmentation.

scTab (Methods, "Data augmentation") simulates how a cell would look in another donor by
adding to its normalised expression the difference between the mean expression of its
cell type in two donors: ``x_augmented = x_original ± x_augmentation_vector``. The recipe
taken from the paper ("Calculation of augmentation vectors", steps 2-6, and "Calculation
of augmented gene expression vectors during model training", steps 1-3):

1. normalise the counts to 10,000 per cell and log1p-transform them;
2. "calculate the mean centroids grouped by cell type and donor";
3. "calculate the difference vectors between the mean centroids ... by cell type": every
   pair of donors of a cell type gives one vector (the order does not matter, the sign is
   drawn at training time);
4. "set all values in the range [-0.25, 0.25] to zero" (``sparsify``);
5. "clamp ... to the interval of [-1.5, 1.5]" (``clip``);
6. optionally, "only sampling the used augmentation vectors from the most prominent
   k-means clusters (clustering is done with 50 clusters)": k-means on the vectors, keep
   the vectors of the biggest clusters (``n_clusters``, ``min_cluster_size``), then sample
   at most ``n_vectors`` of them.

During training (:meth:`AugmentationVectors.apply`) each cell draws one vector from the
whole set (any cell type, as in scTab), a random sign, adds it and clamps the result to
``[0, 9]``. The paper's first step, a subsample of 500,000 cells balanced across cell
types, is left to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["AugmentationVectors", "augmentation_vectors", "normalize_log1p"]

logger = logging.getLogger(__name__)

# scTab's normalisation: counts per cell scaled to this total, then log1p.
TARGET_SUM = 1e4
# scTab clamps augmented expression to [0, 9] (log1p(1e4) is about 9.2).
CLAMP_MAX = 9.0


def normalize_log1p(adata: ad.AnnData, *, layer: str | None = None) -> sp.csr_matrix:
    """The counts of ``adata`` normalised to 10,000 per cell and log1p-transformed: float32
    CSR, cells without counts left at zero (:func:`scdataloader.preprocess.log_normalize`;
    raises :class:`scdataloader.errors.CountsError` on anything but raw counts)."""
    from scdataloader.preprocess import log_normalize

    return log_normalize(adata, layer=layer, target_sum=TARGET_SUM)


@dataclass
class AugmentationVectors:
    """Augmentation vectors in normalised (1e4, log1p) expression space.

    Attributes
    ----------
    vectors
        ``(n_vectors, n_genes)`` float32 differences of donor means.
    genes
        The genes (columns of :attr:`vectors`), in the order batches must follow.
    cell_types
        The cell type each vector comes from.
    donors
        The two donors each vector compares, as ``(donor_a, donor_b)``: the vector is
        ``mean(b) - mean(a)``.
    """

    vectors: np.ndarray
    genes: pd.Index
    cell_types: np.ndarray
    donors: list[tuple[str, str]]

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.genes = pd.Index(self.genes).astype(str)
        self.cell_types = np.asarray(self.cell_types, dtype=object)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != len(self.genes):
            raise ValueError(
                f"vectors must be (n_vectors, {len(self.genes)}); got {self.vectors.shape}."
            )
        if len(self.cell_types) != len(self.vectors) or len(self.donors) != len(self.vectors):
            raise ValueError("cell_types and donors need one entry per vector.")
        self._torch_cache: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.vectors)

    def reindex(self, genes: Sequence[str]) -> AugmentationVectors:
        """Return the vectors over another gene list (a model's), zero for absent genes.

        Parameters
        ----------
        genes
            The genes the batches to augment hold, in their column order.

        Returns
        -------
        A new :class:`AugmentationVectors` with one column per gene of ``genes``.
        """
        genes = pd.Index(genes).astype(str)
        where = self.genes.get_indexer(genes)
        out = np.zeros((len(self.vectors), len(genes)), dtype=np.float32)
        found = where >= 0
        out[:, found] = self.vectors[:, where[found]]
        if not found.all():
            logger.info("%d of %d genes have no augmentation value.", (~found).sum(), len(genes))
        return AugmentationVectors(out, genes, self.cell_types.copy(), list(self.donors))

    def _draw(
        self, labels: Sequence[Any] | None, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw a vector index per cell (-1: none) and a sign."""
        if labels is None:
            index = rng.integers(0, len(self.vectors), size=n)
        else:
            labels = np.asarray(labels, dtype=object).astype(str)
            if len(labels) != n:
                raise ValueError(f"labels has {len(labels)} values for a batch of {n} cells.")
            index = np.full(n, -1, dtype=np.int64)
            types = self.cell_types.astype(str)
            for label in np.unique(labels):
                pool = np.flatnonzero(types == label)
                cells = np.flatnonzero(labels == label)
                if pool.size:
                    index[cells] = pool[rng.integers(0, pool.size, size=cells.size)]
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        return index, sign

    def apply(
        self,
        x: Any,
        labels: Sequence[Any] | None = None,
        *,
        rng: np.random.Generator | int | None = None,
        scale: float | tuple[float, float] = 1.0,
        clamp: tuple[float, float] = (0.0, CLAMP_MAX),
    ) -> Any:
        """Augment a batch of normalised expression (scTab's training-time step).

        Each cell gets one vector drawn uniformly from the whole set, a random sign (+ or
        - with probability 1/2 each), and the result is clamped to ``clamp``:
        ``clamp(x + sign * factor * v, 0, 9)``.

        Parameters
        ----------
        x
            ``(B, G)`` normalised (1e4, log1p) expression, a numpy array or torch tensor,
            columns in the order of :attr:`genes` (see :meth:`reindex`).
        labels
            Cell type of each cell. None (scTab): any vector for any cell. Given: each cell
            draws from the vectors of its own cell type, and cells whose type has none
            are left unchanged.
        rng
            Random generator or seed.
        scale
            Factor on the vectors: a number (1.0, scTab), or a range ``(low, high)`` from
            which each cell draws a uniform factor.
        clamp
            Bounds of the augmented expression; scTab's are ``(0, 9)``.

        Returns
        -------
        The augmented batch, of the same type, shape, dtype (and device) as ``x``.
        """
        rng = np.random.default_rng(rng)
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[1] != len(self.genes):
            raise ValueError(
                f"x must be (batch, {len(self.genes)} genes) in the order of .genes; "
                f"got shape {shape}. Use .reindex(genes) to match a model's genes."
            )
        n = shape[0]
        if len(self.vectors) == 0 or n == 0:
            return x
        index, sign = self._draw(labels, n, rng)
        if isinstance(scale, tuple | list):
            low, high = (float(v) for v in scale)
            factor = rng.uniform(low, high, size=n)
        else:
            factor = np.full(n, float(scale))
        coef = np.where(index >= 0, sign * factor, 0.0).astype(np.float32)  # (B,)
        index = np.maximum(index, 0)
        low, high = clamp
        if type(x).__module__.startswith("torch"):
            import torch

            key = (x.device, x.dtype)
            if key not in self._torch_cache:
                self._torch_cache[key] = torch.as_tensor(self.vectors, dtype=x.dtype).to(x.device)
            vectors = self._torch_cache[key]
            idx = torch.as_tensor(index, device=x.device)
            c = torch.as_tensor(coef, dtype=x.dtype, device=x.device)[:, None]  # (B, 1)
            return torch.clamp(x + c * vectors[idx], min=low, max=high)  # (B, G)
        x = np.asarray(x)
        out = x + coef[:, None] * self.vectors[index]  # (B, G)
        return np.clip(out, low, high).astype(x.dtype, copy=False)


def _group_means(
    X: sp.csr_matrix, groups: pd.Series, min_cells: int
) -> tuple[np.ndarray, pd.MultiIndex]:
    """Mean rows of ``X`` per (cell type, donor) group with at least ``min_cells`` cells."""
    codes, uniques = pd.factorize(groups)
    sizes = np.bincount(codes[codes >= 0], minlength=len(uniques))
    keep = sizes >= min_cells
    cells = np.flatnonzero((codes >= 0) & keep[np.maximum(codes, 0)])
    remap = np.full(len(uniques), -1)
    remap[keep] = np.arange(keep.sum())
    indicator = sp.csr_matrix(
        (np.ones(cells.size, dtype=np.float64), (remap[codes[cells]], cells)),
        shape=(int(keep.sum()), X.shape[0]),
    )
    sums = np.asarray((indicator @ X).todense(), dtype=np.float64)
    means = sums / sizes[keep][:, None]
    return means, pd.MultiIndex.from_tuples([uniques[i] for i in np.flatnonzero(keep)])


def augmentation_vectors(
    adata: ad.AnnData,
    *,
    label_key: str,
    donor_key: str,
    layer: str | None = None,
    sparsify: float = 0.25,
    clip: float = 1.5,
    n_clusters: int | None = None,
    min_cluster_size: int | None = None,
    n_vectors: int | None = None,
    min_cells: int = 1,
    seed: int = 0,
) -> AugmentationVectors:
    """Compute scTab's augmentation vectors from differences between donors.

    Parameters
    ----------
    adata
        Cells x genes with raw counts; normalised here (1e4 per cell, log1p).
    label_key
        obs column of the cell types.
    donor_key
        obs column of the donors (or samples).
    layer
        Layer holding the counts (``"raw"`` for ``adata.raw.X``); None for ``X``.
    sparsify
        Entries with ``|d| <= sparsify`` are set to zero (scTab: 0.25).
    clip
        Entries are clamped to ``[-clip, clip]`` (scTab: 1.5).
    n_clusters
        Cluster the vectors with k-means into this many clusters (scTab: 50) and keep only
        the vectors of the prominent clusters; None keeps every vector.
    min_cluster_size
        With ``n_clusters``: keep the clusters with more than this many vectors (scTab:
        2,000 of several hundred thousand). By default, the clusters bigger than the
        average cluster.
    n_vectors
        Sample at most this many of the kept vectors (scTab: 5,000); None keeps them all.
    min_cells
        Donors with fewer cells of a cell type do not enter that type's differences.
    seed
        Seed of k-means and of the sampling.

    Returns
    -------
    The :class:`AugmentationVectors`: one vector ``mean(b) - mean(a)`` per pair of
    donors ``a < b`` that share a cell type, over all genes of ``adata``. Vectors that
    sparsification leaves all zero are dropped, and so are the cells whose cell type or
    donor is unknown ("unknown", NaN...).

    Raises
    ------
    scdataloader.errors.CountsError
        The matrix does not hold raw counts.
    ValueError
        A key is missing, or no cell type is seen in two donors.
    """
    for key in (label_key, donor_key):
        if key not in adata.obs.columns:
            raise ValueError(
                f"{key!r} is not an obs column (available: {list(adata.obs.columns)})."
            )
    if sparsify < 0 or clip <= 0:
        raise ValueError(f"sparsify must be >= 0 and clip > 0; got {sparsify}, {clip}.")
    from scdataloader.ontology import is_unknown

    X = normalize_log1p(adata, layer=layer)
    obs = adata.obs[[label_key, donor_key]].astype(str)
    groups = pd.Series(list(zip(obs[label_key], obs[donor_key], strict=True)), index=obs.index)
    unknown = is_unknown(adata.obs[label_key]) | is_unknown(adata.obs[donor_key])
    groups[unknown] = None
    means, index = _group_means(X, groups, min_cells)  # (n_groups, G)

    vectors, types, donors = [], [], []
    for cell_type in index.get_level_values(0).unique():
        rows = np.flatnonzero(index.get_level_values(0) == cell_type)
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                vectors.append(means[b] - means[a])
                types.append(cell_type)
                donors.append((index[a][1], index[b][1]))
    if not vectors:
        raise ValueError(
            f"No cell type of {label_key!r} is seen in two donors of {donor_key!r} (with at "
            f"least {min_cells} cells each): no augmentation vector can be computed."
        )
    V = np.stack(vectors).astype(np.float32)  # (n_pairs, G)
    V[np.abs(V) <= sparsify] = 0.0
    np.clip(V, -clip, clip, out=V)
    nonzero = np.flatnonzero(np.any(V != 0, axis=1))
    if nonzero.size < len(V):
        logger.info(
            "%d difference vectors are all zero after sparsification.", len(V) - nonzero.size
        )
    V, types, donors = (
        V[nonzero],
        np.asarray(types, dtype=object)[nonzero],
        [donors[i] for i in nonzero],
    )
    rng = np.random.default_rng(seed)
    if n_clusters is not None and len(V) > n_clusters:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=3).fit(V)
        sizes = np.bincount(km.labels_, minlength=n_clusters)
        threshold = sizes.mean() if min_cluster_size is None else min_cluster_size
        big = np.flatnonzero(sizes > threshold)
        keep = np.flatnonzero(np.isin(km.labels_, big))
        logger.info(
            "k-means: kept %d of %d vectors, from %d of %d clusters.",
            keep.size,
            len(V),
            big.size,
            n_clusters,
        )
        V, types, donors = V[keep], types[keep], [donors[i] for i in keep]
    if n_vectors is not None and len(V) > n_vectors:
        keep = np.sort(rng.choice(len(V), size=n_vectors, replace=False))
        V, types, donors = V[keep], types[keep], [donors[i] for i in keep]
    return AugmentationVectors(V, adata.var_names, types, donors)
