"""From a user's AnnData to batches of the model: gene mapping, counts, iteration.

Genes of the data are mapped to the model's vocabulary (symbols or Ensembl ids, human
or mouse); genes the model does not know are reported and ignored, and the model's
genes missing from the data are *unmeasured*: never used as padding, unlike measured
genes with a zero count.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from scdataloader.collator import Collator
from scdataloader.errors import GeneMappingError, OrganismMismatchError, QCError
from scdataloader.preprocess import check_expressed_cells, check_not_empty

__all__ = [
    "CellSource",
    "iterate",
    "prepare",
    "resolve_model",
    "model_organisms",
]

logger = logging.getLogger(__name__)


def resolve_model(model):
    """A loaded model (:class:`scprint.train.ScPrintModule`) from itself or a checkpoint."""
    from ..train import ScPrintModule

    if isinstance(model, ScPrintModule):
        return model
    if isinstance(model, str | os.PathLike):
        from ..checkpoint import load

        return load(model)
    raise TypeError(
        f"model must be a loaded scPRINT model or a checkpoint path, not {type(model).__name__}."
    )


def model_organisms(genes: Sequence[str]) -> list[str]:
    """NCBITaxon ids of the organisms whose genes a vocabulary holds."""
    from scdataloader._constants import HUMAN, MOUSE

    names = np.asarray(genes).astype(str)
    out = []
    if np.char.startswith(names, "ENSMUSG").any():
        out.append(MOUSE)
    if (np.char.startswith(names, "ENSG")).any():
        out.append(HUMAN)
    return out


@dataclass
class CellSource(torch.utils.data.Dataset):
    """The cells of an AnnData in the model's gene space (items for the Collator).

    Attributes
    ----------
    counts
        Cells x data genes, CSR float32 raw counts.
    model_index
        For each data gene, its index in the model vocabulary, -1 when unknown.
    n_model_genes
        Size of the model vocabulary.
    measured
        Which model genes the data measured, bool (1, n_model_genes).
    organism
        NCBITaxon id of the data.
    """

    counts: sp.csr_matrix
    model_index: np.ndarray
    n_model_genes: int
    measured: np.ndarray
    organism: str

    def __len__(self) -> int:
        return self.counts.shape[0]

    def __getitem__(self, i: int) -> dict:
        start, end = self.counts.indptr[i], self.counts.indptr[i + 1]
        cols, values = self.counts.indices[start:end], self.counts.data[start:end]
        target = self.model_index[cols]
        inside = target >= 0
        x = np.zeros(self.n_model_genes, dtype=np.float32)
        x[target[inside]] = values[inside]
        return {"x": x, "depth": np.float32(values.sum()), "dataset": 0, "index": int(i)}


def prepare(
    adata: ad.AnnData,
    model,
    *,
    gene_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    recover_counts: bool = False,
    cells: np.ndarray | None = None,
) -> CellSource:
    """Check an AnnData against a model and map it into the model's gene space.

    Parameters
    ----------
    adata
        Cells x genes with raw counts (read, never modified).
    model
        A loaded model (``scprint.load``) or a checkpoint path.
    gene_key
        Column of ``adata.var`` with gene symbols or Ensembl ids; default ``var_names``.
    layer
        Layer with the raw counts; default ``X``.
    organism
        ``"human"`` or ``"mouse"``; default: detected from the genes.
    recover_counts
        Recover exact counts from log-normalised input when possible.
    cells
        Rows the task will use (default all): only these must hold counts.

    Raises
    ------
    CountsError
        The matrix does not hold raw counts.
    GeneMappingError, OrganismMismatchError
        Genes that do not map, or map to an organism the model does not know.
    QCError
        Cells with no counts (on the genes the model knows): nothing to read in them.
    InputError
        An empty AnnData, or no gene shared with the model.
    """
    from scdataloader.genes import map_genes
    from scdataloader.preprocess import (
        check_unique_genes,
        counts_matrix,
        gene_names,
        validate_counts,
    )

    module = resolve_model(model)
    check_not_empty(adata, "run the model on")
    X, where = counts_matrix(adata, layer)
    X = validate_counts(X, recover=recover_counts, where=where)
    counts = sp.csr_matrix(X, dtype=np.float32)  # never written to
    names = gene_names(adata, gene_key)
    check_unique_genes(names, adata, gene_key)
    known = model_organisms(module.genes)
    mapping = map_genes(names.to_numpy(), organism)
    if mapping.organism not in known:
        from scdataloader._constants import ORGANISMS

        raise OrganismMismatchError(
            f"The data's genes are {ORGANISMS.get(mapping.organism, mapping.organism)} genes "
            f"but the model knows only {', '.join(ORGANISMS.get(o, o) for o in known)} genes: "
            "use a model trained on this organism."
        )
    position = {g: i for i, g in enumerate(module.genes)}
    index = np.array(
        [position.get(g, -1) if g is not None else -1 for g in mapping.ids], dtype=np.int64
    )
    # a model gene mapped from two data columns is taken from the first one
    seen = set()
    for j, g in enumerate(index):
        if g >= 0:
            if g in seen:
                index[j] = -1
            seen.add(g)
    n_in = int((index >= 0).sum())
    if n_in == 0:
        raise GeneMappingError(
            "None of the data's genes is in the model's vocabulary "
            f"({len(module.genes):,} genes, e.g. {', '.join(module.genes[:3])})."
        )
    n_unknown = mapping.n_mapped - n_in
    if n_unknown or len(mapping.unmapped):
        logger.warning(
            "%d of %d genes are used by the model; %d are not in its vocabulary and %d did "
            "not map to Ensembl ids (ignored)",
            n_in,
            len(index),
            max(n_unknown, 0),
            len(mapping.unmapped),
        )
    _check_expressed(counts, index >= 0, adata.obs_names, where, cells)
    measured = np.zeros((1, len(module.genes)), dtype=bool)
    measured[0, index[index >= 0]] = True
    return CellSource(counts, index, len(module.genes), measured, mapping.organism)


def _check_expressed(
    counts: sp.csr_matrix,
    used: np.ndarray,
    names: Sequence[str],
    where: str,
    cells: np.ndarray | None,
) -> None:
    """Refuse cells with no counts, or none on the genes the model uses: the model would
    read nothing in them and return a made-up answer."""
    rows = np.arange(counts.shape[0]) if cells is None else np.asarray(cells, dtype=np.int64)
    total = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()[rows]
    on_model = np.asarray(counts @ used.astype(np.float32), dtype=np.float64).ravel()[rows]
    check_expressed_cells(total, np.asarray(names)[rows], where,
                          "the model has nothing to read in them")  # fmt: skip
    unknown = rows[(total > 0) & (on_model == 0)]
    if not unknown.size:
        return
    shown = ", ".join(repr(str(names[i])) for i in unknown[:3])
    raise QCError(
        f"{unknown.size} of {len(rows)} cells have counts only in genes the model does not "
        f"know (e.g. {shown}): the model has nothing to read in them. Remove these cells, or "
        "use a model whose vocabulary covers their genes."
    )


def iterate(
    source: CellSource,
    module,
    *,
    batch_size: int = 32,
    max_len: int = 2200,
    mode: str = "most expr",
    cells: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    qk_layers: Sequence[int] | None = None,
    gene_embs: bool = False,
    desc: str = "scPRINT",
    progress: bool = True,
) -> Iterator[tuple[dict, dict]]:
    """Run the model over cells in batches: yields (batch, model outputs), in order.

    Genes per cell: the expressed genes first (with ``mode="most expr"`` the most
    expressed when there are more than ``max_len``, with ``"random expr"`` a seeded random
    subset), then measured genes with a zero count.
    ``depth`` overrides each cell's depth token (e.g. to denoise at another depth);
    ``gene_embs`` adds the last layer's gene tokens to the outputs (``"gene_embs"``).
    """
    collator = Collator(
        np.arange(source.n_model_genes).astype(str),
        mode=mode,  # type: ignore[arg-type]
        max_len=max_len,
        measured=source.measured,
        seed=0,
        seed_per_cell=True,  # a cell's genes do not depend on its batch
    )
    cells = np.arange(len(source)) if cells is None else np.asarray(cells)
    device = module.device
    module.eval()
    with torch.no_grad():
        for start in tqdm(
            range(0, len(cells), batch_size), desc=desc, disable=not progress, unit="batch"
        ):
            chunk = cells[start : start + batch_size]
            batch = collator([source[int(i)] for i in chunk])
            if depth is not None:
                batch["depth"] = torch.as_tensor(depth[chunk], dtype=torch.float32)
            on = {k: v.to(device) for k, v in batch.items()}
            out = module.model(
                on["genes"], on["x"], on["depth"], qk_layers=qk_layers, return_gene_embs=gene_embs
            )
            yield batch, out


def iterate_zero_share(
    source: CellSource,
    module,
    *,
    zero_share: float,
    max_len: int = 2200,
    batch_size: int = 32,
    depth: np.ndarray | None = None,
    desc: str = "scPRINT",
    progress: bool = True,
) -> Iterator[tuple[dict, dict]]:
    """Run the model over every measured gene of each cell, in passes whose share of
    zero-count genes is ``zero_share``: yields (batch, outputs) of one cell at a time,
    like :func:`iterate` with a batch of one.

    Each pass holds the cell's expressed genes (when there are more than
    ``(1 - zero_share) * max_len``, a seeded random part of them, the parts taking turns
    over the passes) and ``zero_share / (1 - zero_share)`` times as many of its measured
    zero-count genes, a different slice of them in each pass (slices and parts are
    filled up by wrapping around to their first genes), so that every measured gene is
    predicted once the passes are done: about ``n_zero_genes / n_zero_per_pass``
    passes, short ones. The outputs are averaged over the passes that held a gene (the
    mean ``mu``, the log dispersion, the zero probability, ``pred``) and the cell
    embeddings over all of them. A model pretrained
    with ``zero_genes`` unexpressed genes in sequences of ``max_len`` sees sequences of
    its training make-up with ``zero_share = zero_genes / max_len``; one sequence of all
    measured genes is mostly zeros for a cell with few expressed genes.
    """
    if not 0 < zero_share < 1:
        raise ValueError(f"zero_share must be in (0, 1), got {zero_share!r}.")
    n_expr_max = int((1 - zero_share) * max_len)
    if n_expr_max < 1:
        raise ValueError(
            f"max_len={max_len} with zero_share={zero_share} leaves no room for expressed "
            "genes; raise max_len or lower zero_share."
        )
    measured = np.flatnonzero(source.measured[0])
    device = module.device
    module.eval()
    with torch.no_grad():
        for i in tqdm(range(len(source)), desc=desc, disable=not progress, unit="cell"):
            item = source[i]
            x = item["x"]
            rng = np.random.default_rng((0, i))
            expr = rng.permutation(measured[x[measured] > 0])
            zeros = rng.permutation(measured[x[measured] == 0])
            # more expressed genes than a pass holds: they are spread over the passes
            n_parts = max(1, -(-len(expr) // n_expr_max))
            per_part = -(-len(expr) // n_parts)
            parts = np.resize(expr, n_parts * per_part).reshape(n_parts, per_part)
            n_zero = max(1, round(per_part * zero_share / (1 - zero_share)))
            n_zero = min(n_zero, max_len - per_part, max(len(zeros), 1))
            n_pass = max(n_parts, -(-len(zeros) // n_zero))
            sliced = np.resize(zeros, (n_pass, n_zero)) if len(zeros) else None
            seqs = np.stack([
                parts[p % n_parts] if sliced is None
                else np.concatenate([parts[p % n_parts], sliced[p]])
                for p in range(n_pass)
            ])  # fmt: skip
            cell_depth = float(item["depth"] if depth is None else depth[i])
            genes = np.concatenate([expr, zeros])
            slot = np.empty(source.n_model_genes, dtype=np.int64)
            slot[genes] = np.arange(len(genes))
            where = slot[seqs]  # (n_pass, L) -> position in ``genes``
            sums: dict[str, np.ndarray] = {}
            embs = []
            rows = max(1, batch_size * max_len // seqs.shape[1])
            for start in range(0, n_pass, rows):
                part = torch.as_tensor(seqs[start : start + rows])
                xs = torch.as_tensor(x[part.numpy()])
                d = torch.full((len(part),), cell_depth, dtype=torch.float32)
                out = module.model(part.to(device), xs.to(device), d.to(device))
                embs.append(out["cell_embs"].float().cpu().numpy())
                for key, value in out.items():
                    if key not in ("mu", "theta", "pi_logits", "pred"):
                        continue
                    value = value.float()
                    if key == "theta":
                        value = torch.log(value.clamp_min(1e-30))
                    elif key == "pi_logits":
                        value = torch.sigmoid(value)  # averaged as probabilities
                    v = np.broadcast_to(value.cpu().numpy(), part.shape)
                    acc = sums.setdefault(key, np.zeros(len(genes)))
                    np.add.at(acc, where[start : start + rows].ravel(), v.ravel())
            count = np.bincount(where.ravel(), minlength=len(genes)).astype(np.float64)
            avg = {key: acc / count for key, acc in sums.items()}
            merged: dict[str, torch.Tensor] = {}
            for key, value in avg.items():
                if key == "theta":
                    value = np.exp(value)
                elif key == "pi_logits":
                    value = np.clip(value, 1e-7, 1 - 1e-7)
                    value = np.log(value) - np.log1p(-value)
                merged[key] = torch.as_tensor(value[None], dtype=torch.float32)
            emb = np.concatenate(embs).mean(axis=0, keepdims=True)
            merged["cell_embs"] = torch.as_tensor(emb, dtype=torch.float32)
            batch = {
                "genes": torch.as_tensor(genes[None]),
                "x": torch.as_tensor(x[genes][None]),
                "depth": torch.tensor([cell_depth], dtype=torch.float32),
            }
            yield batch, merged
