"""Data for the tabular classifiers: counts in, (1e4, log1p) batches out.

Raw counts are checked (log-normalised input is refused), then each batch of CSR rows is
densified, aligned to the model's genes (missing genes zero-filled) and normalised to
10,000 counts per cell (the depth is the cell's total over *all* its measured genes) and
log1p - inside the pipeline, so that training and prediction see the same transform.
Sources: an in-memory or backed AnnData, or an :class:`scdataloader.Collection` (files
bigger than memory, read row by row).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scdataloader.errors import CountsError, GeneMappingError, InputError, LabelError

__all__ = [
    "TARGET_SUM",
    "GeneAlignment",
    "align_genes",
    "adata_genes",
    "check_input_counts",
    "normalize_batch",
    "split",
    "class_weights",
    "labels_of",
    "CellBatches",
    "make_loader",
]

logger = logging.getLogger(__name__)

TARGET_SUM = 1e4
_SYMBOL_COLUMNS = ("feature_name", "symbol", "gene_symbols", "gene_name")


# --------------------------------------------------------------------------- counts


def check_input_counts(X, where: str = "adata.X") -> None:
    """Raise :class:`CountsError` unless ``X`` holds raw counts (judged on 1,000 cells)."""
    from scdataloader.preprocess import check_counts

    check = check_counts(X)
    if check.kind == "empty" and min(X.shape) > 0:  # cells and genes, but no count at all
        raise CountsError(f"{where}: {check.message} Pass the layer holding the counts.")
    if check.kind not in ("counts", "empty"):
        raise CountsError(
            f"{where}: {check.message} The tabular models normalise counts themselves "
            "(10,000 per cell, then log1p)."
        )


def normalize_batch(x: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """log1p(x / depth * 1e4) for counts ``x`` (B, F) and totals ``depth`` (B,)."""
    scale = TARGET_SUM / depth.clamp_min(1.0)  # empty cells stay all zero
    return torch.log1p(x * scale.unsqueeze(-1))


# --------------------------------------------------------------------------- genes


@dataclass
class GeneAlignment:
    """Where each reference gene sits in a query.

    Attributes
    ----------
    index
        (n_reference,) column of the query holding each reference gene, -1 when missing.
    missing
        Reference genes absent from the query (zero-filled).
    n_extra
        Query genes that the reference does not use (ignored).
    matched_on
        What matched: ``"var_names"`` or the name of a ``var`` column.
    """

    index: np.ndarray
    missing: list[str] = field(default_factory=list)
    n_extra: int = 0
    matched_on: str = "var_names"

    @property
    def n_found(self) -> int:
        return int((self.index >= 0).sum())

    @property
    def fraction_found(self) -> float:
        return self.n_found / max(len(self.index), 1)

    def report(self) -> str:
        s = (
            f"{self.n_found}/{len(self.index)} model genes found in the query "
            f"(matched on {self.matched_on}); {len(self.missing)} missing, zero-filled"
        )
        if self.missing:
            s += f" (e.g. {', '.join(self.missing[:5])})"
        return s + f"; {self.n_extra} query genes not used by the model."


def _strip(names) -> np.ndarray:
    from scdataloader.genes import strip_version

    return strip_version(np.asarray(names, dtype=object).astype(str))


def align_genes(
    query: Sequence[str],
    reference: Sequence[str],
    *,
    matched_on: str = "var_names",
    min_fraction: float = 0.5,
    warn: bool = True,
) -> GeneAlignment:
    """Map the ``reference`` (model) genes onto the ``query`` columns.

    Names are compared exactly, then without Ensembl version suffixes. Duplicated query
    names: the first column is used.

    Raises
    ------
    GeneMappingError
        When no reference gene is in the query (with a hint on symbols vs Ensembl ids).
    """
    q = pd.Index(_strip(query))
    ref = _strip(reference)
    first = ~q.duplicated()
    pos = pd.Index(q[first]).get_indexer(ref)
    index = np.where(pos >= 0, np.flatnonzero(first)[pos], -1).astype(np.int64)
    missing = [str(g) for g, i in zip(reference, index, strict=True) if i < 0]
    n_extra = int(len(q) - np.isin(q, ref).sum())
    out = GeneAlignment(index, missing, n_extra, matched_on)
    if out.n_found == 0:
        raise GeneMappingError(
            f"None of the model's {len(ref)} genes (e.g. {', '.join(map(str, ref[:3]))}) is "
            f"in the query (e.g. {', '.join(map(str, q[:3]))}). Are the names of the same "
            "kind (gene symbols vs Ensembl ids)? Pass a var column with gene_key=."
        )
    if warn and out.missing:
        level = logging.WARNING
        msg = out.report()
        if out.fraction_found < min_fraction:
            msg = f"only {out.fraction_found:.0%} of the model genes found: {msg}"
        logger.log(level, msg)
    return out


def adata_genes(
    adata: ad.AnnData, reference: Sequence[str], gene_key: str | None = None, **kwargs
) -> GeneAlignment:
    """Align ``adata``'s genes (``var_names``, or ``var[gene_key]``) with ``reference``.

    Without ``gene_key``, ``var_names`` are tried first, then the usual symbol columns
    (``feature_name``, ``symbol``, ...) when they match more reference genes.
    """
    if gene_key is not None:
        if gene_key not in adata.var:
            raise InputError(f"gene_key={gene_key!r} is not a var column: {list(adata.var)}")
        return align_genes(
            adata.var[gene_key].astype(str), reference, matched_on=gene_key, **kwargs
        )
    candidates = [("var_names", adata.var_names)]
    candidates += [(c, adata.var[c].astype(str)) for c in _SYMBOL_COLUMNS if c in adata.var]
    ref = set(_strip(reference))
    scores = [len(ref.intersection(_strip(names))) for _, names in candidates]
    name, names = candidates[int(np.argmax(scores))]
    return align_genes(names, reference, matched_on=name, **kwargs)


# --------------------------------------------------------------------------- labels


def labels_of(obs: pd.DataFrame, label_key: str) -> pd.Series:
    """The ``label_key`` column as strings, NaN kept as NaN; clear error when absent."""
    if label_key not in obs:
        raise LabelError(f"obs has no column {label_key!r}; available columns: {list(obs)}.")
    col = obs[label_key]
    return col.astype(object).where(col.notna(), None).map(lambda v: None if v is None else str(v))


def split(
    labels: Sequence,
    *,
    val_size: float = 0.2,
    test_size: float = 0.0,
    groups: Sequence | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train / validation (/ test) cell indices, stratified by label or grouped by donor.

    Parameters
    ----------
    labels
        One label per cell.
    val_size, test_size
        Fractions of cells (of groups, with ``groups``).
    groups
        Donor (or sample) of each cell: a donor's cells all land in one split.
    seed
        Seed of the split.

    Classes with a single cell cannot be stratified: they stay in the training set.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if not 0 < val_size < 1 or not 0 <= test_size < 1 or val_size + test_size >= 1:
        raise InputError(f"val_size={val_size}, test_size={test_size}: need 0 < val, val+test < 1")
    idx = np.arange(n)
    out: dict[str, np.ndarray] = {}
    holdout = val_size + test_size
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        n_groups = len(pd.unique(groups))
        if n_groups < 2 + (test_size > 0):
            raise InputError(f"a donor-wise split needs more donors; found {n_groups}.")
        gss = GroupShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
        train, rest = next(gss.split(idx, groups=groups))
        if test_size > 0:
            gss = GroupShuffleSplit(n_splits=1, test_size=test_size / holdout, random_state=seed)
            v, t = next(gss.split(rest, groups=groups[rest]))
            out["val"], out["test"] = np.sort(rest[v]), np.sort(rest[t])
        else:
            out["val"] = np.sort(rest)
        out["train"] = np.sort(train)
        return out
    counts = pd.Series(labels).value_counts()
    rare = np.isin(labels, counts.index[counts < 2])
    if rare.any():
        logger.warning(
            "%d classes have a single cell (e.g. %s): kept in the training set only",
            int((counts < 2).sum()),
            ", ".join(map(str, counts.index[counts < 2][:3])),
        )
    pool = idx[~rare]

    def _cut(ids: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        y = labels[ids]
        try:
            sss = StratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
            a, b = next(sss.split(ids, y))
        except ValueError:  # too few cells per class for this size: plain shuffle
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(ids))
            k = max(1, int(round(size * len(ids))))
            a, b = perm[k:], perm[:k]
        return ids[a], ids[b]

    train, rest = _cut(pool, holdout)
    if test_size > 0:
        val, test = _cut(rest, test_size / holdout)
        out["test"] = np.sort(test)
    else:
        val = rest
    out["train"] = np.sort(np.concatenate([train, idx[rare]]))
    out["val"] = np.sort(val)
    return out


def class_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights n / (C count_c) (scTab's formula), scaled to mean 1 over
    the classes present; classes absent from ``codes`` get the largest weight."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    w[present] /= w[present].mean()
    w[~present] = w[present].max() if present.any() else 1.0
    return w.astype(np.float32)


# --------------------------------------------------------------------------- batches


def _identity(batch):
    return batch


class CellBatches(torch.utils.data.Dataset):
    """Cells of an AnnData matrix or a Collection, served one batch at a time.

    ``__getitems__`` densifies only the asked rows: ``x`` (B, n_model_genes) normalised
    float32, ``y`` (B,) int64 codes (-1 without labels), ``index`` (B,).

    Parameters
    ----------
    source
        A CSR matrix / backed AnnData matrix (cells x query genes), or a Collection.
    gene_index
        (n_model_genes,) column of the source holding each model gene, -1 to zero-fill.
    rows
        Cells (rows of the source) to serve.
    codes
        Label code of every cell of the source (or None).
    """

    def __init__(
        self,
        source,
        gene_index: np.ndarray,
        rows: np.ndarray | None = None,
        codes: np.ndarray | None = None,
    ):
        self.source = source
        self.gene_index = np.asarray(gene_index, dtype=np.int64)
        n = source.shape[0] if hasattr(source, "shape") else len(source)
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        self.codes = codes
        self._found = self.gene_index >= 0
        self._cols = self.gene_index[self._found]

    def __len__(self) -> int:
        return len(self.rows)

    def _counts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts (B, n_model_genes) and depth (B,) of source rows (any order)."""
        n_model = len(self.gene_index)
        if hasattr(self.source, "shape"):  # a matrix
            order = np.argsort(rows, kind="stable")
            sub = self.source[rows[order]]
            if hasattr(sub, "to_memory"):
                sub = sub.to_memory()
            sub = (
                sp.csr_matrix(sub, dtype=np.float32)
                if sp.issparse(sub)
                else sp.csr_matrix(np.asarray(sub, dtype=np.float32))
            )
            depth = np.asarray(sub.sum(1)).ravel()
            x = np.zeros((len(rows), n_model), dtype=np.float32)
            x[:, self._found] = sub[:, self._cols].toarray()
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            return x[inverse], depth[inverse]
        items = self.source.__getitems__(rows.tolist())  # a Collection
        full = np.stack([it["x"] for it in items])  # (B, n_collection_genes)
        x = np.zeros((len(rows), n_model), dtype=np.float32)
        x[:, self._found] = full[:, self._cols]
        return x, np.array([it["depth"] for it in items], dtype=np.float32)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        x, depth = self._counts(rows)
        y = self.codes[rows] if self.codes is not None else np.full(len(rows), -1)
        return {
            "x": normalize_batch(torch.from_numpy(x), torch.from_numpy(depth)),
            "y": torch.as_tensor(y, dtype=torch.int64),
            "index": torch.from_numpy(rows),
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def make_loader(
    dataset: CellBatches,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader that asks ``dataset`` for whole batches (one CSR slice each)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen if shuffle else None,
        drop_last=drop_last,
        collate_fn=_identity,
        num_workers=num_workers,
    )
