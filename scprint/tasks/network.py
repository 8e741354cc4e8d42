"""Cell-type gene networks from the attention of scPRINT (paper, Methods: Extracting meta-cell
gene networks from attention matrices, Heads selection, Normalization and network
interpretation).

The network of a set of cells ``U`` is, per layer and attention head, over the gene tokens::

    softmax(mean_U(Q) mean_U(K)^T / sqrt(head_dim))      # (G, G), each row sums to 1

rows are queries (targets) and columns keys (regulators). The heads are then averaged: all
of them (``heads="mean"``), a given list, or those selected against a ground truth with
:func:`scprint.tasks.heads.select_heads` (``"self"``: your truth; ``"omni"``: OmniPath's
transcriptional edges).

Queries and keys are streamed: the model runs batch by batch and only their sums over cells
are kept, per layer, head and gene, in float64 on the CPU, so memory is
``O(layers x heads x G x head_dim)`` whatever the number of cells; no per-cell attention
matrix is ever formed. The networks are then computed head by head in row blocks.

Two gene modes:

fixed genes (default)
    every cell sees the same ``G`` genes (the most variable ones, or a given list), in that
    order, in one forward pass.
genome wide (``genome_wide=True``)
    each cell sees its own genes (its expressed genes first, up to ``max_len``, padded with
    measured zeros) drawn from a pool (``genes``: the variable genes, a list or ``"all"``);
    the mean of a gene's query and key is over the cells whose sequence contained it, and the
    network spans the genes seen in at least ``min_gene_cells`` cells. When every cell's
    sequence holds the whole pool (``max_len >= len(pool)``) it equals the fixed-gene network.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from scdataloader.errors import LabelError, QCError
from scdataloader.preprocess import check_not_empty

from ._data import CellSource, iterate, prepare, resolve_model

__all__ = [
    "MeanQK",
    "get_gene_network",
    "head_networks",
    "highly_variable_genes",
    "mean_qk",
    "network_from_heads",
]

logger = logging.getLogger(__name__)

HeadSpec = str | Sequence[int | tuple[int, int]]

_ROW_BLOCK_ENTRIES = 1 << 23
"""Entries of a float64 block of logits (rows x G) computed at once (64 MiB)."""
_LARGE_CONTEXT = 4096
"""Gene tokens per forward pass above which a warning is logged (attention is O(G^2))."""
_SELECT_WARN_BYTES = 4 << 30
"""Size of the stacked per-head networks (for head selection) above which a warning is logged."""


# --------------------------------------------------------------------------------------------
# accumulated queries and keys


@dataclass(eq=False)
class MeanQK:
    """Mean queries and keys of the gene tokens over a set of cells.

    Attributes
    ----------
    q
        Mean queries, float64, shape ``(n_layers, n_heads, G, head_dim)``.
    k
        Mean keys, same shape.
    counts
        Number of cells whose sequence held each gene, shape ``(G,)``.
    model_index
        Index of each gene in the model vocabulary, shape ``(G,)``.
    layers
        The model layers of the first axis.
    n_cells
        Number of cells seen.
    """

    q: np.ndarray
    k: np.ndarray
    counts: np.ndarray
    model_index: np.ndarray
    layers: list[int]
    n_cells: int

    @property
    def n_heads(self) -> int:
        return int(self.q.shape[1])

    @property
    def head_dim(self) -> int:
        return int(self.q.shape[3])

    @property
    def nbytes(self) -> int:
        """Bytes held (independent of the number of cells)."""
        return int(sum(a.nbytes for a in (self.q, self.k, self.counts, self.model_index)))

    def subset(self, keep: np.ndarray) -> MeanQK:
        """The genes at positions ``keep`` (a boolean mask or indices)."""
        return dataclasses.replace(
            self,
            q=self.q[:, :, keep],
            k=self.k[:, :, keep],
            counts=self.counts[keep],
            model_index=self.model_index[keep],
        )


def _check_layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, int | np.integer):
        layers = [int(layers)]
    out: list[int] = []
    for layer in layers:
        if not -n_layers <= int(layer) < n_layers:
            raise ValueError(f"layer {layer} is out of range: the model has {n_layers} layers.")
        i = int(layer) % n_layers
        if i not in out:
            out.append(i)
    if not out:
        raise ValueError("layers is empty.")
    return out


def mean_qk(
    source: CellSource,
    module,
    cells: np.ndarray,
    pool: np.ndarray,
    *,
    layers: Sequence[int] | None = None,
    genome_wide: bool = False,
    max_len: int = 2200,
    sampling: Literal["most expr", "random expr"] = "most expr",
    batch_size: int = 16,
    progress: bool = True,
) -> MeanQK:
    """Stream cells through the model and average the gene tokens' queries and keys.

    Parameters
    ----------
    source
        The data in the model's gene space (:func:`scprint.tasks._data.prepare`).
    module
        A loaded model.
    cells
        Positions of the cells in ``source``.
    pool
        Data columns (of ``source.counts``) of the genes, each in the model vocabulary: the
        genes of every sequence (fixed genes) or the genes the sequences are drawn from
        (``genome_wide``).
    layers
        Model layers (negative from the end); default all.
    genome_wide
        Each cell sees its own genes of the pool (``sampling``, up to ``max_len``) instead of
        the whole pool in order.
    max_len
        Genes per sequence in the genome-wide mode (capped at the pool size).
    sampling
        ``"most expr"``: a cell's most expressed genes first; ``"random expr"``: expressed
        genes at random; both padded with measured genes of zero count.
    batch_size
        Cells per forward pass.
    progress
        Show a progress bar.

    Returns
    -------
    MeanQK
        Over the pool's genes, in the pool's order; a gene no cell saw has zero means and a
        zero count.
    """
    cfg = module.config
    layers = _check_layers(layers, cfg.n_layers)
    n_special, H, hd = cfg.n_special_tokens, cfg.n_heads, cfg.head_dim
    pool = np.asarray(pool, dtype=np.int64)
    model_index = source.model_index[pool]
    if (model_index < 0).any():
        raise ValueError("every gene of the pool must be in the model vocabulary.")
    G = len(pool)
    cells = np.asarray(cells, dtype=np.int64)
    # float64 sums on the CPU: per layer (G, H, hd); never per cell
    sum_q = torch.zeros(len(layers), G, H, hd, dtype=torch.float64)
    sum_k = torch.zeros_like(sum_q)
    counts = torch.zeros(G, dtype=torch.int64)
    if not genome_wide:
        if G + n_special > _LARGE_CONTEXT:
            logger.warning(
                "%d gene tokens per cell: attention costs O(G^2) per cell; consider fewer "
                "genes or genome_wide=True",
                G,
            )
        batches = _fixed_batches(source, module, cells, pool, layers, batch_size, progress)
    else:
        batches = _genome_wide_batches(
            source, module, cells, pool, layers, max_len, sampling, batch_size, progress
        )
    compact = torch.full((source.n_model_genes,), -1, dtype=torch.int64)
    compact[torch.as_tensor(model_index)] = torch.arange(G)
    for genes, mask, qks in batches:
        # genes (B, L) model indices; mask (B, L) tokens to count (None: every cell has the
        # pool's genes in the pool's order)
        if mask is None:
            counts += len(genes)
            for i, layer in enumerate(layers):
                for acc, t in zip((sum_q, sum_k), qks[layer], strict=True):  # (B, H, S, hd)
                    acc[i] += t[:, :, n_special:].to(torch.float64).sum(0).transpose(0, 1).cpu()
            continue
        where = compact[genes]  # (B, L) position in the pool, -1 outside
        valid = mask & (where >= 0)
        idx = where[valid]  # (N,)
        counts.index_add_(0, idx, torch.ones_like(idx))
        for i, layer in enumerate(layers):
            for acc, t in zip((sum_q, sum_k), qks[layer], strict=True):  # (B, H, S, hd)
                tokens = t[:, :, n_special:].transpose(1, 2).to(torch.float64).cpu()
                acc[i].index_add_(0, idx, tokens[valid])  # tokens (B, L, H, hd)
    seen = counts.clamp_min(1).to(torch.float64)[None, :, None, None]
    q_mean = (sum_q / seen).permute(0, 2, 1, 3).contiguous().numpy()  # (n_layers, H, G, hd)
    k_mean = (sum_k / seen).permute(0, 2, 1, 3).contiguous().numpy()
    return MeanQK(q_mean, k_mean, counts.numpy(), model_index, layers, len(cells))


def _fixed_batches(source, module, cells, pool, layers, batch_size, progress):
    """(genes, None, qk) of batches where every cell has the pool's genes in order."""
    genes = torch.as_tensor(source.model_index[pool])  # (G,)
    device = module.device
    module.eval()
    with torch.no_grad():
        for start in tqdm(
            range(0, len(cells), batch_size), desc="gene network", disable=not progress,
            unit="batch",
        ):  # fmt: skip
            rows = source.counts[cells[start : start + batch_size]]
            x = torch.as_tensor(rows[:, pool].toarray(), dtype=torch.float32)  # (B, G)
            depth = torch.as_tensor(np.asarray(rows.sum(axis=1)).ravel(), dtype=torch.float32)
            g = genes.unsqueeze(0).expand(len(x), -1)  # (B, G)
            out = module.model(g.to(device), x.to(device), depth.to(device), qk_layers=layers)
            yield g, None, out["qk"]


def _genome_wide_batches(
    source, module, cells, pool, layers, max_len, sampling, batch_size, progress
):
    """(genes, mask, qk) of batches where each cell has its own genes of the pool."""
    if sampling not in ("most expr", "random expr"):
        raise ValueError(f"sampling must be 'most expr' or 'random expr', not {sampling!r}.")
    restricted = np.full_like(source.model_index, -1)
    restricted[pool] = source.model_index[pool]
    measured = np.zeros_like(source.measured)
    measured[0, source.model_index[pool]] = True
    # same counts and depth (the cell's total count), genes outside the pool hidden
    view = dataclasses.replace(source, model_index=restricted, measured=measured)
    length = min(int(max_len), len(pool))
    for batch, out in iterate(
        view, module, batch_size=batch_size, max_len=length, mode=sampling, cells=cells,
        qk_layers=layers, desc="gene network", progress=progress,
    ):  # fmt: skip
        yield batch["genes"], batch["mask"], out["qk"]


# --------------------------------------------------------------------------------------------
# networks


def _head_pairs(mean: MeanQK) -> list[tuple[int, int]]:
    """(layer, head) of each flat head index: layer-major over ``mean.layers``."""
    return [(layer, h) for layer in mean.layers for h in range(mean.n_heads)]


def _head_network(mean: MeanQK, flat: int, rows: slice | None = None) -> torch.Tensor:
    """softmax(Qbar Kbar^T / sqrt(d)) of one head (float64), rows ``rows``: (R, G)."""
    i, h = divmod(int(flat), mean.n_heads)
    q = torch.from_numpy(mean.q[i, h])  # (G, hd)
    k = torch.from_numpy(mean.k[i, h])  # (G, hd)
    if rows is not None:
        q = q[rows]
    return torch.softmax(q @ k.T / math.sqrt(mean.head_dim), dim=-1)  # (R, G)


def head_networks(mean: MeanQK, heads: Sequence[int] | None = None) -> np.ndarray:
    """Per-head networks, float32, shape ``(n_selected, G, G)`` (rows targets).

    Parameters
    ----------
    mean
        Mean queries and keys (:func:`mean_qk`).
    heads
        Flat head indices (``layer_position * n_heads + head``); default all.
    """
    heads = range(len(mean.layers) * mean.n_heads) if heads is None else list(heads)
    G = mean.q.shape[2]
    out = np.empty((len(heads), G, G), dtype=np.float32)
    for j, flat in enumerate(heads):
        out[j] = _head_network(mean, flat).numpy()
    return out


def network_from_heads(mean: MeanQK, heads: Sequence[int] | None = None) -> np.ndarray:
    """The unweighted mean of the heads' networks, float32 ``(G, G)``, in O(G^2) memory.

    Computed in row blocks, head by head (float64 inside a block); rows sum to 1.

    Parameters
    ----------
    mean
        Mean queries and keys (:func:`mean_qk`).
    heads
        Flat head indices (``layer_position * n_heads + head``); default all.
    """
    heads = list(range(len(mean.layers) * mean.n_heads)) if heads is None else list(heads)
    if not heads:
        raise ValueError("no head to aggregate.")
    G = mean.q.shape[2]
    out = np.empty((G, G), dtype=np.float32)
    step = max(1, _ROW_BLOCK_ENTRIES // max(G, 1))
    for start in range(0, G, step):
        rows = slice(start, min(start + step, G))
        acc = torch.zeros(rows.stop - rows.start, G, dtype=torch.float64)  # (R, G)
        for flat in heads:
            acc += _head_network(mean, flat, rows)
        out[rows] = (acc / len(heads)).numpy()
    return out


# --------------------------------------------------------------------------------------------
# cells and genes


class _MissingColumn(LabelError, KeyError):
    """A missing obs column: a :class:`LabelError`, and a ``KeyError`` as a missing key."""

    __str__ = LabelError.__str__


def _select_cells(
    adata: ad.AnnData,
    cell_type: str | None,
    cell_type_key: str,
    n_cells: int | None,
    min_cells: int,
    seed: int,
) -> np.ndarray:
    if cell_type is None:
        chosen = np.arange(adata.n_obs)
    else:
        if cell_type_key not in adata.obs.columns:
            raise _MissingColumn(
                f"adata.obs has no column {cell_type_key!r}; available columns: "
                f"{', '.join(map(str, adata.obs.columns))}."
            )
        labels = adata.obs[cell_type_key].astype(str).to_numpy()
        chosen = np.flatnonzero(labels == str(cell_type))
        if not len(chosen) and cell_type_key != "cell_type" and "cell_type" in adata.obs:
            names = adata.obs["cell_type"].astype(str).to_numpy()
            chosen = np.flatnonzero(names == str(cell_type))
        if not len(chosen):
            present = adata.obs[cell_type_key].astype(str).value_counts()
            if cell_type_key != "cell_type" and "cell_type" in adata.obs:
                names = (
                    adata.obs.assign(_l=labels)
                    .groupby("_l", observed=True)["cell_type"]
                    .first()
                    .astype(str)
                )
                listed = [f"{k} ({names.get(k, '?')}): {v}" for k, v in present.items()]
            else:
                listed = [f"{k}: {v}" for k, v in present.items()]
            raise LabelError(
                f"No cell of type {cell_type!r} in adata.obs[{cell_type_key!r}]; present "
                f"(cells): {'; '.join(listed)}."
            )
    if len(chosen) < min_cells:
        raise QCError(
            f"Only {len(chosen)} cells of type {cell_type!r}, fewer than min_cells={min_cells}: "
            "a network needs more cells (or lower min_cells)."
        )
    if n_cells is not None:
        if n_cells < 1:
            raise ValueError(f"n_cells must be >= 1, got {n_cells}.")
        if n_cells < len(chosen):
            rng = np.random.default_rng(seed)
            chosen = np.sort(rng.choice(chosen, n_cells, replace=False))
        else:
            logger.info("n_cells=%d >= the %d cells available: using all", n_cells, len(chosen))
    return chosen


def highly_variable_genes(
    counts: sp.spmatrix, n_top: int, candidates: np.ndarray | None = None
) -> np.ndarray:
    """The ``n_top`` most variable genes by normalised dispersion (Seurat's flavour).

    Counts are normalised to 10,000 per cell and log1p-transformed; per gene, the dispersion
    ``var / mean`` (on the log-normalised values) is log-transformed and z-scored within 20
    equal-width bins of the mean (a bin with one gene gives it 1, as scanpy does). Genes with a
    zero mean are never selected.

    Parameters
    ----------
    counts
        Cells x genes raw counts (sparse or dense).
    n_top
        How many genes.
    candidates
        Column positions allowed (e.g. genes of the model vocabulary); default all.

    Returns
    -------
    np.ndarray
        Column positions of the selected genes, ascending (fewer than ``n_top`` when fewer
        genes are expressed).
    """
    X = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.where(totals > 0, 1e4 / np.maximum(totals, 1e-12), 0.0)
    X = sp.csr_matrix(sp.diags(scale) @ X)
    X.data = np.log1p(X.data)
    cols = np.arange(X.shape[1]) if candidates is None else np.asarray(candidates)
    X = X[:, cols]
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    mean_sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    var = (mean_sq - mean**2) * (n / max(n - 1, 1))
    keep = mean > 0
    cols, mean, var = cols[keep], mean[keep], var[keep]
    if len(cols) <= n_top:
        if len(cols) < n_top:
            logger.warning("only %d expressed genes for %d variable genes", len(cols), n_top)
        return np.sort(cols)
    dispersion = np.log(np.maximum(var, 1e-12) / mean)
    bins = pd.cut(np.log1p(mean), bins=20)
    frame = pd.DataFrame({"d": dispersion, "bin": bins})
    stats = frame.groupby("bin", observed=True)["d"].agg(["mean", "std", "size"])
    bin_mean = stats["mean"].reindex(frame["bin"]).to_numpy()
    bin_std = stats["std"].reindex(frame["bin"]).to_numpy()
    single = stats["size"].reindex(frame["bin"]).to_numpy() == 1
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (dispersion - bin_mean) / bin_std
    norm = np.where(single, 1.0, np.nan_to_num(norm, nan=0.0, posinf=0.0, neginf=0.0))
    top = np.argsort(-norm, kind="stable")[:n_top]
    return np.sort(cols[top])


def _data_names(adata: ad.AnnData, gene_key: str | None) -> np.ndarray:
    if gene_key is None:
        return adata.var_names.astype(str).to_numpy()
    return adata.var[gene_key].astype(str).to_numpy()


def _columns_of(
    names: Sequence[str], adata: ad.AnnData, source: CellSource, module, gene_key: str | None
) -> np.ndarray:
    """Data columns of genes named by data names, Ensembl ids or symbols."""
    position: dict[str, int] = {}
    inside = np.flatnonzero(source.model_index >= 0)
    for j in inside:  # Ensembl ids of the model, then the data's own names
        position.setdefault(module.genes[source.model_index[j]], int(j))
    data = _data_names(adata, gene_key)
    for j in inside:
        position.setdefault(data[j], int(j))
    for col in ("symbol", "feature_name"):
        if col in adata.var:
            symbols = adata.var[col].astype(str).to_numpy()
            for j in inside:
                position.setdefault(symbols[j], int(j))
    cols, unknown = [], []
    for name in names:
        j = position.get(str(name))
        if j is None:
            unknown.append(str(name))
        else:
            cols.append(j)
    if unknown:
        raise ValueError(
            f"{len(unknown)} of {len(names)} genes are not genes of the data known to the "
            f"model: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}."
        )
    cols = np.asarray(cols, dtype=np.int64)
    if len(np.unique(cols)) != len(cols):
        raise ValueError("the gene list names the same gene twice.")
    return cols


def _symbols(ids: Sequence[str], organism: str) -> list[str | None]:
    try:
        from scdataloader.genes import ids_to_symbols

        return list(ids_to_symbols(list(ids), organism))
    except Exception as err:  # noqa: BLE001 - symbols are optional metadata
        logger.warning("no gene symbols (%s)", err)
        return [None] * len(ids)


# --------------------------------------------------------------------------------------------
# ground truths and heads


def _truth_matrix(truth: Any, genes: Sequence[str], symbols: Sequence[str | None]) -> np.ndarray:
    """A (G, G) bool matrix (rows targets) of a truth over the network's genes."""
    from bengrn import GeneNetwork

    G = len(genes)
    if isinstance(truth, GeneNetwork):
        truth = truth.as_target_by_regulator()
        frame_index = list(map(str, truth.genes))
        m = truth.matrix
        m = sp.csr_matrix(m) if sp.issparse(m) else sp.csr_matrix(np.asarray(m) != 0)
        return _reindex(m, frame_index, frame_index, genes, symbols)
    if isinstance(truth, pd.DataFrame):
        if truth.shape != (G, G) and not (
            set(map(str, truth.index)) & (set(genes) | {s for s in symbols if s})
        ):
            raise ValueError(
                f"truth has shape {truth.shape} with none of the network's genes; expected a "
                f"({G}, {G}) matrix over them (rows targets, columns regulators)."
            )
        m = sp.csr_matrix(truth.to_numpy() != 0)
        return _reindex(m, list(map(str, truth.index)), list(map(str, truth.columns)), genes,
                        symbols)  # fmt: skip
    m = truth.toarray() if sp.issparse(truth) else np.asarray(truth)
    if m.shape != (G, G):
        raise ValueError(
            f"truth has shape {m.shape}; expected ({G}, {G}) over the network's genes "
            "(rows targets, columns regulators)."
        )
    return m != 0


def _reindex(m, rows, cols, genes, symbols) -> np.ndarray:
    """Entries of ``m`` (labelled rows x cols) on the network's genes (ids, else symbols)."""
    where = {g: i for i, g in enumerate(genes)}
    for i, s in enumerate(symbols):
        if s:
            where.setdefault(str(s), i)
            where.setdefault(str(s).upper(), i)
    r = np.array([where.get(x, where.get(x.upper(), -1)) for x in rows])
    c = np.array([where.get(x, where.get(x.upper(), -1)) for x in cols])
    coo = sp.coo_matrix(m)
    ok = (r[coo.row] >= 0) & (c[coo.col] >= 0) & (coo.data != 0)
    out = np.zeros((len(genes), len(genes)), dtype=bool)
    out[r[coo.row[ok]], c[coo.col[ok]]] = True
    if not out.any():
        raise ValueError("the truth has no edge between the network's genes.")
    return out


def _omnipath_truth(genes: Sequence[str], symbols: Sequence[str | None]) -> np.ndarray:
    """OmniPath transcriptional edges (regulator -> target) over the genes, (G, G) bool,
    filtered as :func:`bengrn.truths.omnipath` does (the paper's ground truth)."""
    from bengrn.truths import omnipath

    truth = omnipath()
    names = list(truth.genes)
    m = sp.csr_matrix(truth.as_target_by_regulator().matrix, dtype=bool)
    out = _reindex(m, names, names, genes, symbols)
    logger.info("OmniPath: %d transcriptional edges among the %d genes", out.sum(), len(genes))
    return out


def _resolve_heads(heads: HeadSpec, mean: MeanQK, n_layers: int) -> list[int]:
    """Flat head indices over ``mean.layers`` of an explicit head list."""
    H = mean.n_heads
    n = len(mean.layers) * H
    out: list[int] = []
    for item in heads:
        if isinstance(item, tuple | list):
            layer, head = (int(v) for v in item)
            if not -n_layers <= layer < n_layers or (layer % n_layers) not in mean.layers:
                raise ValueError(
                    f"head {tuple(item)}: layer {layer} is not one of the layers used "
                    f"{mean.layers}."
                )
            if not 0 <= head < H:
                raise ValueError(f"head {tuple(item)}: the model has {H} heads per layer.")
            flat = mean.layers.index(layer % n_layers) * H + head
        else:
            flat = int(item)
            if not 0 <= flat < n:
                raise ValueError(f"head index {flat} is out of range [0, {n}).")
        if flat not in out:
            out.append(flat)
    if not out:
        raise ValueError("heads is an empty list.")
    return out


# --------------------------------------------------------------------------------------------
# the task


def get_gene_network(
    adata: ad.AnnData,
    model,
    *,
    cell_type: str | None = None,
    cell_type_key: str = "cell_type_ontology_term_id",
    n_cells: int | None = None,
    genes: str | Sequence[str] = "hvg",
    n_genes: int = 2000,
    layers: int | Sequence[int] | None = None,
    heads: HeadSpec = "mean",
    truth: Any = None,
    genome_wide: bool = False,
    max_len: int = 2200,
    sampling: Literal["most expr", "random expr"] = "most expr",
    min_gene_cells: int | None = None,
    batch_size: int = 16,
    min_cells: int = 10,
    seed: int = 0,
    gene_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    progress: bool = True,
):
    """The gene network of a cell type from scPRINT's attention, zero shot.

    Per layer and head, ``softmax(mean(Q) mean(K)^T / sqrt(head_dim))`` over the gene tokens
    of the cells (rows: targets, columns: regulators; rows sum to 1), averaged over heads.

    Parameters
    ----------
    adata
        Cells x genes with raw counts (read, never modified).
    model
        A loaded model (``scprint.load``) or a checkpoint path.
    cell_type
        Cells used: ``obs[cell_type_key] == cell_type``, or, when no cell has that label,
        ``obs["cell_type"] == cell_type`` (a readable name); default all cells.
    cell_type_key
        Column of ``adata.obs`` with the cell types.
    n_cells
        Subsample that many cells (seeded); default all.
    genes
        ``"hvg"``: the ``n_genes`` most variable genes of the cells
        (:func:`highly_variable_genes`, among genes of the model); a list of gene ids or
        symbols of the data, in the order wanted; ``"all"``: every gene of the data known to
        the model (for ``genome_wide``).
    n_genes
        Number of variable genes with ``genes="hvg"``.
    layers
        Layers used (negative from the end); default all.
    heads
        ``"mean"``: all heads of ``layers``; a list of ``(layer, head)`` pairs or flat indices
        ``layer_position * n_heads + head`` over ``layers``; ``"self"``: the heads selected
        against ``truth`` (:func:`scprint.tasks.heads.select_heads`); ``"omni"``: selected
        against OmniPath's transcriptional edges.
    truth
        For ``heads="self"``: a :class:`bengrn.GeneNetwork`, a DataFrame labelled by gene ids
        or symbols, or a ``(G, G)`` array in the network's gene order; rows targets, columns
        regulators; non-zero entries are edges.
    genome_wide
        Each cell sees its own genes of ``genes`` (up to ``max_len``, chosen by ``sampling``);
        a gene's mean query and key are over the cells that saw it.
    max_len
        Genes per cell in the genome-wide mode; in the fixed mode a warning is logged when
        there are more genes than this.
    sampling
        Genome-wide only: ``"most expr"`` (a cell's most expressed genes first) or
        ``"random expr"``.
    min_gene_cells
        Genome-wide only: keep the genes seen in at least that many cells (default
        ``min_cells``; 1 keeps every gene seen).
    batch_size
        Cells per forward pass.
    min_cells
        Fewer cells of the type is an error.
    seed
        Seed of the cell subsampling.
    gene_key, layer, organism
        Where the gene names and counts are, and the organism (default: detected).
    progress
        Show a progress bar.

    Returns
    -------
    bengrn.GeneNetwork
        Dense float32 ``(G, G)`` matrix, ``"target_by_regulator"``, genes as Ensembl ids with
        a ``symbol`` column (when known) and ``n_cells`` (cells that saw the gene) in ``var``;
        ``method="scprint"`` and the settings, including the heads used, in ``params``.

    Raises
    ------
    KeyError
        ``cell_type_key`` is not a column of ``adata.obs``.
    ValueError
        An absent cell type, too few cells, unknown genes, bad layers or heads, a missing or
        misshapen truth.
    """
    from bengrn import GeneNetwork

    from .heads import select_heads

    module = resolve_model(model)
    cfg = module.config
    if isinstance(heads, str) and heads not in ("mean", "self", "omni"):
        raise ValueError(f"heads must be 'mean', 'self', 'omni' or a list, not {heads!r}.")
    if heads == "self" and truth is None:
        raise ValueError("heads='self' needs a truth (a GeneNetwork or a (G, G) matrix).")
    layer_list = _check_layers(layers, cfg.n_layers)
    check_not_empty(adata, "run the model on")
    cells = _select_cells(adata, cell_type, cell_type_key, n_cells, min_cells, seed)
    source = prepare(adata, module, gene_key=gene_key, layer=layer, organism=organism, cells=cells)
    known = np.flatnonzero(source.model_index >= 0)
    if isinstance(genes, str):
        if genes == "hvg":
            pool = highly_variable_genes(source.counts[cells], n_genes, known)
        elif genes == "all":
            pool = known
        else:
            raise ValueError(f"genes must be 'hvg', 'all' or a list of genes, not {genes!r}.")
        gene_mode = genes
    else:
        pool = _columns_of(list(genes), adata, source, module, gene_key)
        gene_mode = "list"
    if not genome_wide and len(pool) > max_len:
        logger.warning(
            "%d genes per cell, more than max_len=%d (the context the model was trained on)",
            len(pool),
            max_len,
        )
    logger.info(
        "gene network of %s: %d cells, %d genes%s",
        cell_type or "all cells",
        len(cells),
        len(pool),
        " (genome wide)" if genome_wide else "",
    )
    mean = mean_qk(
        source, module, cells, pool, layers=layer_list, genome_wide=genome_wide,
        max_len=max_len, sampling=sampling, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    if genome_wide:
        need = min_cells if min_gene_cells is None else int(min_gene_cells)
        keep = mean.counts >= max(need, 1)
        if not keep.any():
            raise ValueError(f"no gene was seen in {need} cells: lower min_gene_cells.")
        mean = mean.subset(keep)
    ids = [module.genes[i] for i in mean.model_index]
    symbols = _symbols(ids, source.organism)
    selection = None
    if isinstance(heads, str) and heads in ("self", "omni"):
        if heads == "self":
            truth_m = _truth_matrix(truth, ids, symbols)
        else:
            truth_m = _omnipath_truth(ids, symbols)
        G = len(ids)
        size = len(layer_list) * cfg.n_heads * G * G * 4
        if size > _SELECT_WARN_BYTES:
            logger.warning("head selection holds every head's network: %.1f GiB", size / 2**30)
        selection = select_heads(head_networks(mean), truth_m, seed=seed)
        flat = list(selection.heads)
        if not flat:
            logger.warning("no head selected against the truth: using the mean of all heads")
            flat = list(range(len(layer_list) * cfg.n_heads))
    elif isinstance(heads, str):  # "mean"
        flat = list(range(len(layer_list) * cfg.n_heads))
    else:
        flat = _resolve_heads(heads, mean, cfg.n_layers)
    matrix = network_from_heads(mean, flat)
    pairs = _head_pairs(mean)
    var = pd.DataFrame({"n_cells": mean.counts.astype(np.int64)}, index=pd.Index(ids))
    if any(s is not None for s in symbols):
        var.insert(0, "symbol", [s if s is not None else "" for s in symbols])
    params = {
        "cell_type": cell_type,
        "cell_type_key": cell_type_key,
        "n_cells": int(len(cells)),
        "genes": gene_mode,
        "n_genes": int(len(ids)),
        "layers": layer_list,
        "heads": heads if isinstance(heads, str) else [list(pairs[i]) for i in flat],
        "selected_heads": [list(pairs[i]) for i in flat],
        "genome_wide": bool(genome_wide),
        "max_len": int(max_len),
        "seed": int(seed),
    }
    if genome_wide:
        params["sampling"] = sampling
    if selection is not None:
        params["head_selection"] = {
            "coef": selection.coef.tolist(),
            "test_auprc": selection.test_auprc,
            "test_auprc_mean_of_all_heads": selection.test_auprc_mean_of_all_heads,
        }
    return GeneNetwork(
        matrix, genes=ids, var=var, orientation="target_by_regulator", method="scprint",
        params=params,
    )  # fmt: skip
