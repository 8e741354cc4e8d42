"""Raw-count validation and the scPRINT quality-control rules.

The paper (Methods, "Pretraining database") keeps primary cells from human or mouse,
drops spatial assays, drops cells with fewer than 200 expressed genes, and then drops
any dataset left with fewer than 100 cells, fewer than 10,000 genes, or from which more
than 95% of the cells were removed.

Everything here reads the caller's AnnData and returns new objects: the input is never
modified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._constants import HUMAN, MOUSE, ORGANISMS, ObsKeys, normalize_organism
from .errors import CountsError, GeneMappingError, InputError, QCError

__all__ = [
    "CountsCheck",
    "QCReport",
    "check_counts",
    "recover_counts",
    "validate_counts",
    "qc_report",
    "preprocess",
    "is_spatial_assay",
    "counts_matrix",
    "log_normalize",
    "gene_names",
    "check_unique_genes",
    "check_not_empty",
    "check_expressed_cells",
]

logger = logging.getLogger(__name__)


def check_not_empty(adata: ad.AnnData, purpose: str, error: type[InputError] = InputError) -> None:
    """Raise ``error`` (an :class:`InputError`) when ``adata`` has no cell or no gene:
    there is nothing to ``purpose`` (e.g. ``"test"``, ``"run the model on"``)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise error(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes): "
            f"nothing to {purpose}."
        )


def check_expressed_cells(totals: np.ndarray, names: Sequence[str], where: str, why: str) -> None:
    """Raise :class:`QCError` when cells have no counts (``totals``, one per cell, 0 for
    an empty cell), naming a few of them (``names``) and saying ``why`` they cannot be
    used."""
    empty = np.flatnonzero(np.asarray(totals) == 0)
    if empty.size:
        shown = ", ".join(repr(str(names[i])) for i in empty[:3])
        raise QCError(
            f"{empty.size} of {len(totals)} cells have no counts in {where} (e.g. {shown}): "
            f"{why}. Remove them first, e.g. sc.pp.filter_cells(adata, min_counts=1)."
        )


CountKind = Literal[
    "counts", "recoverable", "log_normalized", "normalized", "scaled", "non_finite", "empty"
]

# Transforms that undo a log: name -> function of the stored values.
_INVERSES = {
    "log1p": np.expm1,
    "log2(1+x)": lambda v: np.exp2(v) - 1.0,
    "log2(1+x) applied twice": lambda v: np.exp2(np.exp2(v) - 1.0) - 1.0,
    "none": lambda v: v,
}

# Spatial assays: every EFO term under these (and the listed imaging platforms).
_SPATIAL_ROOTS = frozenset(
    {
        "EFO:0008994",  # spatial transcriptomics
        "EFO:0700000",  # spatial proteomics
        "EFO:0030025",  # spatial analysis
        "EFO:0008991",  # seqFISH
        "EFO:0008992",  # MERFISH
        "EFO:0022615",  # 10x Xenium
        "EFO:0920059",  # CosMx SMI
        "EFO:0030000",  # STARmap
    }
)


# --------------------------------------------------------------------------- counts


@dataclass(frozen=True)
class CountsCheck:
    """What a matrix holds, judged on a sample of its rows.

    Attributes
    ----------
    kind
        ``"counts"`` (non-negative integers), ``"recoverable"`` (non-integer values
        that an exact inverse transform turns back into integers), ``"log_normalized"``,
        ``"normalized"`` (non-integer, not logged), ``"scaled"`` (negative values),
        ``"non_finite"`` (NaN or inf) or ``"empty"``.
    transform
        For ``"recoverable"``: the inverse applied (``"log1p"``, ``"log2(1+x)"``,
        ``"log2(1+x) applied twice"`` or ``"none"``) and whether each cell was then
        divided by its smallest non-zero value (``per_cell_scaled``).
    message
        A sentence for the user: what was found and what to do.
    """

    kind: CountKind
    message: str
    transform: str | None = None
    per_cell_scaled: bool = False
    n_rows_checked: int = 0
    max_value: float = 0.0
    min_value: float = 0.0

    @property
    def is_counts(self) -> bool:
        return self.kind == "counts"


def _sample_rows(X, n_rows: int, seed: int):
    n = X.shape[0]
    if n <= n_rows:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, n_rows, replace=False))
    sub = X[rows]
    if hasattr(sub, "to_memory"):  # backed sparse dataset
        sub = sub.to_memory()
    return sp.csr_matrix(sub) if sp.issparse(sub) else sp.csr_matrix(np.asarray(sub))


def _integer_tolerance(y: np.ndarray) -> np.ndarray:
    # float32 storage of a log value x carries a relative error of ~6e-8, which the
    # inverse amplifies by (y + 1) * x: allow for that, never less than 1e-3.
    return 1e-3 + 1e-6 * (np.abs(y) + 1.0) * np.log1p(np.abs(y))


def _is_integer(y: np.ndarray) -> bool:
    return bool(np.all(np.abs(y - np.rint(y)) <= _integer_tolerance(y)))


def _try_inverse(m: sp.csr_matrix) -> tuple[str, bool] | None:
    """Find a transform turning the non-zero values of ``m`` into integers."""
    data = m.data.astype(np.float64)
    for name, inverse in _INVERSES.items():
        with np.errstate(over="ignore", invalid="ignore"):
            y = inverse(data)
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            continue
        if name != "none" and _is_integer(y):
            return name, False
        # normalize_total (then maybe log): divide each cell by its smallest value.
        scaled = _divide_rows_by_min(m.indptr, y)
        if scaled is not None and _is_integer(scaled):
            return name, True
    return None


def _divide_rows_by_min(indptr: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    lengths = np.diff(indptr)
    nonempty = lengths > 0
    if not nonempty.any():
        return None
    mins = np.minimum.reduceat(values, indptr[:-1][nonempty])
    return values / np.repeat(mins, lengths[nonempty])


def check_counts(X, *, n_rows: int = 1000, seed: int = 0) -> CountsCheck:
    """Judge whether ``X`` holds raw counts, from up to ``n_rows`` random rows.

    Parameters
    ----------
    X
        Dense array, scipy sparse matrix or backed AnnData matrix (cells x genes).
    n_rows
        Rows to examine.
    seed
        Seed of the row sample.
    """
    if X.shape[0] == 0 or X.shape[1] == 0:
        return CountsCheck("empty", f"The matrix is empty (shape {tuple(X.shape)}).")
    m = _sample_rows(X, n_rows, seed)
    m.eliminate_zeros()
    n = m.shape[0]
    if m.nnz == 0:
        return CountsCheck(
            "empty",
            f"All {n} sampled cells have zero counts: the matrix holds no expression.",
            n_rows_checked=n,
        )
    data = m.data
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        return CountsCheck(
            "non_finite",
            f"X holds {bad} NaN or infinite values in {n} sampled cells. Raw counts are "
            "finite integers: fix or remove these values (e.g. X[np.isnan(X)] = 0 only "
            "if they really mean zero counts).",
            n_rows_checked=n,
        )
    vmin, vmax = float(data.min()), float(data.max())
    if vmin < 0:
        return CountsCheck(
            "scaled",
            f"X holds negative values (min {vmin:.3g}): it looks scaled or centred "
            "(e.g. by sc.pp.scale or regress_out), which cannot be undone. scPRINT needs "
            "raw counts: pass the counts (e.g. from adata.layers['counts'] with "
            "layer='counts') instead.",
            n_rows_checked=n,
            max_value=vmax,
            min_value=vmin,
        )
    if np.all(data == np.rint(data)):
        return CountsCheck(
            "counts",
            "X holds raw counts.",
            n_rows_checked=n,
            max_value=vmax,
            min_value=vmin,
        )
    found = _try_inverse(m)
    if found is not None:
        transform, per_cell = found
        how = f"the inverse of {transform}" if transform != "none" else "no inverse transform"
        scale = " and dividing each cell by its smallest non-zero value" if per_cell else ""
        return CountsCheck(
            "recoverable",
            f"X is not raw counts (non-integer values, max {vmax:.3g}), but {how}{scale} "
            "gives exact integers: pass recover_counts=True to recover the counts.",
            transform=transform,
            per_cell_scaled=per_cell,
            n_rows_checked=n,
            max_value=vmax,
            min_value=vmin,
        )
    examples = ", ".join(f"{v:.3g}" for v in data[data != np.rint(data)][:3])
    kind: CountKind = "log_normalized" if vmax < 30 else "normalized"
    what = "log-normalised" if kind == "log_normalized" else "normalised (e.g. CPM or TPM)"
    return CountsCheck(
        kind,
        f"X holds non-integer values (e.g. {examples}; max {vmax:.3g}) and looks {what}; "
        "scPRINT needs raw counts. Put the raw counts in X, or name the layer that holds "
        "them (layer='counts'); adata.raw.X is used when it holds counts.",
        n_rows_checked=n,
        max_value=vmax,
        min_value=vmin,
    )


def recover_counts(X, check: CountsCheck | None = None):
    """Recover exact integer counts from log / normalised values.

    Parameters
    ----------
    X
        Dense or sparse matrix whose non-zero values an exact inverse maps to integers
        (see :func:`check_counts`).
    check
        The result of :func:`check_counts` on ``X``; computed when not given.

    Returns
    -------
    A new CSR matrix of float32 integer counts; ``X`` is not modified.

    Raises
    ------
    CountsError
        When no exact inverse exists for every cell.
    """
    check = check or check_counts(X)
    if check.kind == "counts":
        return sp.csr_matrix(X, dtype=np.float32, copy=True)
    if check.kind != "recoverable":
        raise CountsError(check.message)
    m = sp.csr_matrix(X, dtype=np.float64, copy=True)
    m.eliminate_zeros()
    with np.errstate(over="ignore", invalid="ignore"):
        y = _INVERSES[check.transform](m.data)
    if check.per_cell_scaled:
        y = _divide_rows_by_min(m.indptr, y)
    ok = np.isfinite(y) & (np.abs(y - np.rint(y)) <= _integer_tolerance(y))
    if not ok.all():
        rows = np.unique(np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))[~ok])
        raise CountsError(
            f"Counts could not be recovered exactly: after {check.transform} "
            f"{len(rows)} cells (e.g. rows {rows[:5].tolist()}) still hold non-integer "
            "values. Provide the raw counts instead."
        )
    m.data = np.rint(y).astype(np.float32)
    return m.astype(np.float32)


def validate_counts(X, *, recover: bool = False, where: str = "X"):
    """Return ``X`` as counts, recovered when asked and possible; raise otherwise.

    Parameters
    ----------
    X
        The matrix to check.
    recover
        Recover counts exactly from log / normalised values when an exact inverse exists.
    where
        Name of the matrix in error messages (e.g. ``"adata.layers['counts']"``).

    Raises
    ------
    CountsError
        With a message saying what ``X`` looks like and what to do.
    """
    check = check_counts(X)
    if check.kind == "counts":
        return X
    if check.kind == "recoverable" and recover:
        logger.info("Recovering counts in %s with the inverse of %s", where, check.transform)
        return recover_counts(X, check)
    raise CountsError(f"{where}: {check.message}")


_recover = recover_counts  # preprocess() has a parameter of that name


# --------------------------------------------------------------------------- QC


def is_spatial_assay(term_id: str) -> bool:
    """Whether an EFO assay term is a spatial assay (spatial transcriptomics & co)."""
    from .ontology import ancestors

    return term_id in _SPATIAL_ROOTS or bool(ancestors(term_id) & _SPATIAL_ROOTS)


@dataclass
class QCReport:
    """What quality control keeps and drops, and why.

    ``kept`` is False when the whole dataset is dropped; ``reasons`` then says why.
    """

    n_cells: int
    n_genes: int
    organism: str | None
    count_kind: str
    dropped_not_primary: int = 0
    dropped_organism: int = 0
    dropped_spatial: int = 0
    dropped_few_genes: int = 0
    n_cells_kept: int = 0
    n_genes_mapped: int = 0
    kept: bool = True
    reasons: list[str] = field(default_factory=list)
    gene_report: str = ""

    @property
    def fraction_dropped(self) -> float:
        return 1.0 - self.n_cells_kept / self.n_cells if self.n_cells else 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"cells: {self.n_cells:,} -> {self.n_cells_kept:,} kept "
            f"({self.fraction_dropped:.1%} dropped)",
            f"  not primary data: {self.dropped_not_primary:,}",
            f"  other organism: {self.dropped_organism:,}",
            f"  spatial assay: {self.dropped_spatial:,}",
            f"  too few expressed genes: {self.dropped_few_genes:,}",
            f"genes: {self.n_genes:,} ({self.n_genes_mapped:,} in the vocabulary)",
            f"organism: {ORGANISMS.get(self.organism, self.organism)}",
            f"X: {self.count_kind}",
            "dataset: " + ("kept" if self.kept else "dropped (" + "; ".join(self.reasons) + ")"),
        ]
        return "\n".join(lines)


def gene_names(adata: ad.AnnData, gene_key: str | None) -> pd.Index:
    """The gene names of ``adata``: ``var_names``, or the ``var`` column ``gene_key``."""
    if gene_key is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_key not in adata.var.columns:
        raise InputError(
            f"gene_key={gene_key!r} is not a column of adata.var; available columns: "
            f"{list(adata.var.columns)}. Pass gene_key=None to use adata.var_names."
        )
    return pd.Index(adata.var[gene_key].astype(str))


def check_unique_genes(names: pd.Index, adata: ad.AnnData, gene_key: str | None) -> None:
    """Raise a GeneMappingError naming duplicated genes, with a column to use instead."""
    if names.is_unique:
        return
    dup = names[names.duplicated()].unique()
    where = "adata.var_names" if gene_key is None else f"adata.var[{gene_key!r}]"
    hint = ""
    for col in adata.var.columns:
        values = adata.var[col]
        if col != gene_key and values.dtype == object and values.is_unique:
            sample = str(values.iloc[0])
            if sample.startswith("ENS"):
                hint = f" adata.var[{col!r}] holds unique Ensembl ids: pass gene_key={col!r}."
                break
    raise GeneMappingError(
        f"{where} has {len(dup)} duplicated gene names (e.g. {', '.join(map(str, dup[:5]))}). "
        "Each gene must appear once: use a column of unique ids, or sum the duplicated "
        f"columns first.{hint}"
    )


def _declared_organism(adata: ad.AnnData, organism: str | None) -> str | None:
    if organism is not None:
        return normalize_organism(organism)
    if ObsKeys.ORGANISM in adata.obs.columns:
        values = adata.obs[ObsKeys.ORGANISM].astype(str)
        supported = values[values.isin([HUMAN, MOUSE])]
        if len(supported):
            return supported.value_counts().index[0]
    return None


def _bool_column(values: pd.Series) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy()
    lowered = values.astype(str).str.strip().str.lower()
    return lowered.isin(["true", "1", "yes"]).to_numpy()


def _cell_filters(
    adata: ad.AnnData,
    organism: str | None,
    *,
    primary_only: bool,
    drop_spatial: bool,
    min_genes_per_cell: int,
    n_expressed: np.ndarray,
) -> tuple[np.ndarray, dict[str, int]]:
    keep = np.ones(adata.n_obs, dtype=bool)
    dropped = {"not_primary": 0, "organism": 0, "spatial": 0, "few_genes": 0}
    obs = adata.obs
    if primary_only and ObsKeys.PRIMARY in obs.columns:
        bad = ~_bool_column(obs[ObsKeys.PRIMARY])
        dropped["not_primary"] = int((keep & bad).sum())
        keep &= ~bad
    if ObsKeys.ORGANISM in obs.columns and organism is not None:
        bad = (obs[ObsKeys.ORGANISM].astype(str) != organism).to_numpy()
        dropped["organism"] = int((keep & bad).sum())
        keep &= ~bad
    if drop_spatial and ObsKeys.ASSAY in obs.columns:
        assays = obs[ObsKeys.ASSAY].astype(str)
        spatial = {a for a in assays.unique() if is_spatial_assay(a)}
        bad = assays.isin(spatial).to_numpy()
        dropped["spatial"] = int((keep & bad).sum())
        keep &= ~bad
    bad = n_expressed < min_genes_per_cell
    dropped["few_genes"] = int((keep & bad).sum())
    keep &= ~bad
    return keep, dropped


def _n_expressed(X) -> np.ndarray:
    if sp.issparse(X):
        m = sp.csr_matrix(X)
        m.eliminate_zeros()
        return np.diff(m.indptr)
    return np.count_nonzero(np.asarray(X), axis=1)


def counts_matrix(adata: ad.AnnData, layer: str | None):
    """The matrix holding the counts (``X``, a layer, or ``"raw"``) and its name."""
    if layer is None:
        return adata.X, "adata.X"
    if layer == "raw":
        if adata.raw is None:
            raise InputError("layer='raw' was asked for but adata.raw is None.")
        if adata.raw.n_vars != adata.n_vars:
            raise InputError(
                f"adata.raw has {adata.raw.n_vars} genes but adata has {adata.n_vars}: "
                "use adata.raw.to_adata() as input instead."
            )
        return adata.raw.X, "adata.raw.X"
    if layer not in adata.layers:
        raise InputError(
            f"layer={layer!r} is not in adata.layers (available: {list(adata.layers)})."
        )
    return adata.layers[layer], f"adata.layers[{layer!r}]"


def log_normalize(
    adata: ad.AnnData, *, layer: str | None = None, target_sum: float = 1e4
) -> sp.csr_matrix:
    """The counts of ``adata`` scaled to ``target_sum`` per cell and log1p-transformed.

    Parameters
    ----------
    adata
        Cells x genes; ``X`` (or ``layer``) must hold raw counts.
    layer
        Layer holding the counts (``"raw"`` for ``adata.raw.X``); None for ``X``.
    target_sum
        Counts per cell after scaling.

    Returns
    -------
    float32 CSR matrix ``log1p(target_sum * x / total)``; cells without counts stay zero.
    ``adata`` is not modified.

    Raises
    ------
    CountsError
        The matrix does not hold raw counts (log-normalised, scaled, negative...).
    """
    X, where = counts_matrix(adata, layer)
    X = validate_counts(X, where=where)
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    factors = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X = sp.csr_matrix(sp.diags(factors.astype(np.float32)) @ X, dtype=np.float32)
    np.log1p(X.data, out=X.data)
    return X


def _run_qc(
    adata: ad.AnnData,
    *,
    organism: str | None = None,
    gene_key: str | None = None,
    layer: str | None = None,
    primary_only: bool = True,
    drop_spatial: bool = True,
    min_genes_per_cell: int = 200,
    min_cells: int = 100,
    min_genes: int = 10_000,
    max_dropped_fraction: float = 0.95,
):
    from .genes import map_genes

    check_not_empty(adata, "preprocess", QCError)
    X, _ = counts_matrix(adata, layer)
    check = check_counts(X)
    declared = _declared_organism(adata, organism)
    names = gene_names(adata, gene_key)
    check_unique_genes(names, adata, gene_key)
    mapping = map_genes(names.to_numpy(), declared)
    organism = mapping.organism
    n_expressed = _n_expressed(X[:] if not hasattr(X, "to_memory") else X.to_memory())
    keep, dropped = _cell_filters(
        adata,
        organism,
        primary_only=primary_only,
        drop_spatial=drop_spatial,
        min_genes_per_cell=min_genes_per_cell,
        n_expressed=n_expressed,
    )
    report = QCReport(
        n_cells=adata.n_obs,
        n_genes=adata.n_vars,
        organism=organism,
        count_kind=check.kind,
        dropped_not_primary=dropped["not_primary"],
        dropped_organism=dropped["organism"],
        dropped_spatial=dropped["spatial"],
        dropped_few_genes=dropped["few_genes"],
        n_cells_kept=int(keep.sum()),
        n_genes_mapped=mapping.n_mapped,
        gene_report=mapping.report(),
    )
    if report.n_cells_kept < min_cells:
        report.reasons.append(f"{report.n_cells_kept} cells left, fewer than {min_cells}")
    if mapping.n_mapped < min_genes:
        report.reasons.append(f"{mapping.n_mapped} genes mapped, fewer than {min_genes:,}")
    if report.fraction_dropped > max_dropped_fraction:
        report.reasons.append(
            f"{report.fraction_dropped:.1%} of cells removed, more than {max_dropped_fraction:.0%}"
        )
    report.kept = not report.reasons
    return report, keep, mapping, check


def qc_report(adata: ad.AnnData, **kwargs) -> QCReport:
    """Report what :func:`preprocess` would keep and drop, without building anything.

    Keyword arguments are the QC ones of :func:`preprocess` (``organism``,
    ``gene_key``, ``layer``, ``primary_only``, ``drop_spatial``, ``min_genes_per_cell``,
    ``min_cells``, ``min_genes``, ``max_dropped_fraction``). The gene mapping is checked
    too, so its errors (wrong organism, too few genes mapping) are raised here as well.
    """
    return _run_qc(adata, **kwargs)[0]


def preprocess(
    adata: ad.AnnData,
    *,
    organism: str | None = None,
    gene_key: str | None = None,
    layer: str | None = None,
    recover_counts: bool = False,
    primary_only: bool = True,
    drop_spatial: bool = True,
    min_genes_per_cell: int = 200,
    min_cells: int = 100,
    min_genes: int = 10_000,
    max_dropped_fraction: float = 0.95,
    keep_obs: Sequence[str] | None = None,
) -> ad.AnnData:
    """Validate counts, apply the scPRINT QC rules and map genes to Ensembl ids.

    Parameters
    ----------
    adata
        Cells x genes; read, never modified.
    organism
        ``"human"``, ``"mouse"`` or an NCBITaxon id. Default: the dominant supported
        value of ``obs['organism_ontology_term_id']``, else detected from the genes. A
        declared organism that the genes contradict raises an error.
    gene_key
        Column of ``adata.var`` holding the gene symbols or Ensembl ids; default
        ``var_names``.
    layer
        Layer holding the raw counts (``"raw"`` for ``adata.raw.X``); default ``X``.
    recover_counts
        Recover exact integer counts from log / normalised values when possible; when
        False such input is refused with a message saying recovery is possible.
    primary_only
        Keep only cells with ``is_primary_data`` True (when the column exists).
    drop_spatial
        Drop cells from spatial assays (from ``assay_ontology_term_id``).
    min_genes_per_cell
        Drop cells with fewer expressed genes.
    min_cells, min_genes, max_dropped_fraction
        Drop the dataset when fewer cells are left, fewer genes map to the vocabulary,
        or a larger share of its cells was removed.
    keep_obs
        ``obs`` columns to keep; default all.

    Returns
    -------
    A new AnnData: ``X`` CSR float32 counts of the kept cells; ``var_names`` Ensembl ids
    (unmapped genes dropped, duplicate ids kept once) with ``var['symbol']`` and
    ``var['input_name']``; ``obs['n_genes']`` and ``obs['total_counts']``;
    ``uns['organism']`` and ``uns['preprocess']`` (the :class:`QCReport` as a dict).

    Raises
    ------
    CountsError
        X is not raw counts (and cannot or may not be recovered).
    GeneMappingError
        Genes do not map (wrong id type, wrong organism, duplicated names).
    QCError
        The dataset fails QC (too few cells or genes left); the message gives the report.
    """
    from .genes import load_genes

    report, keep, mapping, check = _run_qc(
        adata,
        organism=organism,
        gene_key=gene_key,
        layer=layer,
        primary_only=primary_only,
        drop_spatial=drop_spatial,
        min_genes_per_cell=min_genes_per_cell,
        min_cells=min_cells,
        min_genes=min_genes,
        max_dropped_fraction=max_dropped_fraction,
    )
    X, where = counts_matrix(adata, layer)
    usable = check.kind in ("counts", "empty") or (check.kind == "recoverable" and recover_counts)
    if not usable:
        raise CountsError(f"{where}: {check.message}")
    if not report.kept:
        raise QCError("The dataset fails quality control:\n" + report.summary())
    if hasattr(X, "to_memory"):
        X = X.to_memory()
    rows = X[np.flatnonzero(keep)]
    counts = _recover(rows, check) if check.kind == "recoverable" else None
    if counts is None:
        counts = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    # Genes: mapped ones, each Ensembl id once (first occurrence).
    ids = pd.Series(mapping.ids, dtype=object)
    first = mapping.mapped & ~ids.duplicated(keep="first").to_numpy()
    cols = np.flatnonzero(first)
    counts = sp.csr_matrix(counts[:, cols])
    counts.eliminate_zeros()
    counts.sort_indices()
    table = load_genes(report.organism)
    var_ids = ids.iloc[cols].to_numpy().astype(str)
    var = pd.DataFrame(
        {
            "symbol": table["symbol"].reindex(var_ids).to_numpy(),
            "input_name": np.asarray(mapping.names)[cols].astype(str),
        },
        index=pd.Index(var_ids, name="ensembl_id"),
    )
    obs = adata.obs.iloc[np.flatnonzero(keep)].copy()
    if keep_obs is not None:
        missing = [k for k in keep_obs if k not in obs.columns]
        if missing:
            raise InputError(
                f"keep_obs names columns absent from adata.obs: {missing}; "
                f"available: {list(obs.columns)}."
            )
        obs = obs[list(keep_obs)]
    obs["n_genes"] = np.diff(counts.indptr).astype(np.int32)
    obs["total_counts"] = np.asarray(counts.sum(axis=1)).ravel().astype(np.float32)
    out = ad.AnnData(X=counts, obs=obs, var=var)
    out.uns["organism"] = report.organism
    summary = report.to_dict()
    summary["recovered_counts"] = check.kind == "recoverable"
    out.uns["preprocess"] = {k: v for k, v in summary.items() if v is not None}
    logger.info("Preprocessed: %s", report.summary().replace("\n", "; "))
    return out
