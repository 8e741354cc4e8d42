"""Zero-shot cell-level tasks on AnnData: embeddings and denoised counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from ._data import iterate, iterate_zero_share, prepare, resolve_model

__all__ = ["embed", "denoise"]


def embed(
    adata: ad.AnnData,
    model,
    *,
    key_added: str = "X_scprint",
    class_embeddings: bool = True,
    logits: bool = False,
    gene_mean: bool = False,
    max_len: int = 2200,
    how: str = "random expr",
    batch_size: int = 32,
    gene_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Cell embeddings from a pretrained scPRINT model, zero shot.

    Parameters
    ----------
    adata
        Cells x genes with raw counts; gene symbols or Ensembl ids, human or mouse.
    model
        A loaded model (``scprint.load``) or a checkpoint path.
    key_added
        Prefix of the ``obsm`` keys written.
    class_embeddings
        Also write the embedding of each class token (cell type, disease...).
    logits
        Also write each classifier's logits, which work well as embeddings.
    gene_mean
        Also write the mean of the last layer's gene tokens over the cell's expressed
        genes in its sequence (mean pooling, as scGPT and Geneformer embed cells), a
        view of the cell beside its cell token.
    max_len
        Genes per cell: the expressed ones first, then measured genes with zero counts.
    how
        Which expressed genes when a cell has more than ``max_len``: ``"random expr"``
        (a seeded random subset, reproducible, as the model saw in pretraining) or
        ``"most expr"`` (the most expressed).
    batch_size
        Cells per forward pass.
    gene_key, layer, organism
        Where the gene names and counts are, and the organism (default: detected).
    progress
        Show a progress bar.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` (or a copy with ``copy=True``), with these ``obsm`` entries:
    ``{key_added}`` the default cell embedding (n_cells, d);
    ``{key_added}_{class}`` each class embedding, with ``class_embeddings``;
    ``{key_added}_{class}_logits`` each classifier's logits, with ``logits``;
    ``{key_added}_gene_mean`` the mean gene token (n_cells, d), with ``gene_mean``.
    """
    module = resolve_model(model)
    source = prepare(adata, module, gene_key=gene_key, layer=layer, organism=organism)
    classes = list(module.hierarchies)
    parts: dict[str, list[np.ndarray]] = {key_added: []}
    for batch, out in iterate(
        source,
        module,
        batch_size=batch_size,
        max_len=max_len,
        mode=how,
        gene_embs=gene_mean,
        desc="embed",
        progress=progress,
    ):
        embs = out["cell_embs"].float().cpu().numpy()  # (B, 1 + K, d)
        parts[key_added].append(embs[:, 0])
        if gene_mean:
            parts.setdefault(f"{key_added}_gene_mean", []).append(_expressed_mean(batch, out))
        for j, name in enumerate(classes):
            if class_embeddings:
                parts.setdefault(f"{key_added}_{name}", []).append(embs[:, 1 + j])
            if logits:
                parts.setdefault(f"{key_added}_{name}_logits", []).append(
                    out["class_logits"][name].float().cpu().numpy()
                )
    target = adata.copy() if copy else adata
    for key, chunks in parts.items():
        target.obsm[key] = np.concatenate(chunks).astype(np.float32)
    return target if copy else None


def _expressed_mean(batch: dict, out: dict) -> np.ndarray:
    """Mean of the last layer's gene tokens over each cell's expressed genes (B, d);
    over all its genes for a cell with none expressed in its sequence."""
    tokens = out["gene_embs"].float()
    expressed = (batch["x"] > 0).to(tokens.device)
    empty = ~expressed.any(dim=1, keepdim=True)
    weights = (expressed | empty).to(tokens.dtype).unsqueeze(-1)
    return ((tokens * weights).sum(1) / weights.sum(1)).cpu().numpy()


def _expected_counts(out: dict, decoder: str) -> torch.Tensor:
    if decoder == "zinb":
        return (1 - torch.sigmoid(out["pi_logits"])) * out["mu"]
    if decoder == "nb":
        return out["mu"]
    return torch.clamp(torch.exp2(out["pred"]) - 1, min=0)


def _posterior_mean(out: dict, y: np.ndarray, scale: np.ndarray, p: float) -> np.ndarray:
    """E[x | y] for y ~ Binomial(x, p) and the (zero-inflated) negative binomial prior of
    ``out``, its mean multiplied by ``scale`` per cell; (B, L), like ``y``."""
    m = out["mu"].float().cpu().numpy() * scale[:, None]
    theta = np.broadcast_to(out["theta"].float().cpu().numpy(), m.shape)
    pi = torch.sigmoid(out["pi_logits"].float()).cpu().numpy() if "pi_logits" in out else None
    return _posterior(y, p, m, theta, pi)


def _posterior(y, p: float, m, theta, pi=None) -> np.ndarray:
    """E[x | y] for y ~ Binomial(x, p), x ~ NB(mean m, dispersion theta), zero-inflated
    with probability ``pi`` (None: no inflation); element-wise."""
    m = np.maximum(m, 1e-12)
    # gamma posterior of the Poisson rate: shape theta + y, rate theta / m + p
    post = y + (1 - p) * (theta + y) / (theta / m + p)
    if pi is not None:
        # P(y = 0 | not a structural zero) under thinning: (theta / (theta + p m))^theta
        log_q0 = theta * (np.log(theta) - np.log(theta + p * m))
        not_zero = (1 - pi) * np.exp(log_q0)
        w = np.where(y > 0, 1.0, not_zero / np.maximum(pi + not_zero, 1e-30))
        post = post * w
    return np.asarray(post, dtype=np.float32)


def _denoise_pooled(kept, rows, cols, shape, target_depth, totals, k, posterior, p):
    """``denoise``'s values, in (rows, cols) order, from the prior pooled over each cell's
    ``k`` neighbours (``kept``: the prior's parameters and counts of every cell)."""
    order = np.lexsort((cols, rows))  # CSR order, one entry per (cell, gene)
    pattern = sp.csr_matrix(
        (np.ones(len(rows)), (rows[order], cols[order])), shape=shape, dtype=np.float64
    )
    pattern.sort_indices()
    weights = _neighbour_weights(np.concatenate(kept["emb"]), k)
    share = _pooled(weights, pattern, np.concatenate(kept["share"])[order])
    theta = np.exp(_pooled(weights, pattern, np.log(np.concatenate(kept["theta"])[order])))
    pi = _pooled(weights, pattern, np.concatenate(kept["pi"])[order]) if kept["pi"] else None
    y = np.concatenate(kept["y"])[order]
    cell = np.repeat(np.arange(shape[0]), np.diff(pattern.indptr))
    # scale as each cell alone: its genes' expected counts sum to the requested depth
    # times the share of its counts they hold
    mean = share * target_depth[cell]
    expected = mean if pi is None else (1 - pi) * mean
    observed = np.bincount(cell, weights=y, minlength=shape[0])
    wanted = target_depth * np.where(totals > 0, observed / np.maximum(totals, 1e-12), 0)
    predicted = np.bincount(cell, weights=expected, minlength=shape[0])
    scale = np.where(predicted > 0, wanted / np.maximum(predicted, 1e-12), 0)[cell]
    if posterior:
        out = _posterior(y, p, mean * scale, theta, pi)
    else:
        out = (expected * scale).astype(np.float32)
    values = np.empty(len(rows), dtype=np.float32)
    values[order] = out
    return values


def _neighbour_weights(embeddings: np.ndarray, k: int) -> sp.csr_matrix:
    """Row-normalised (cells x cells) weights: each cell and its ``k - 1`` nearest others
    by cosine distance between ``embeddings``, equally."""
    from sklearn.neighbors import NearestNeighbors

    n = len(embeddings)
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
    index = nn.fit(embeddings).kneighbors(embeddings, return_distance=False)
    rows = np.empty((n, k), dtype=np.int64)
    for i, near in enumerate(index):
        others = near[near != i][: k - 1]  # the cell itself always counts, once
        rows[i] = np.concatenate([[i], others])
    cols = np.repeat(np.arange(n), k)
    return sp.csr_matrix((np.full(n * k, 1.0 / k), (cols, rows.ravel())), shape=(n, n))


def _pooled(weights: sp.csr_matrix, pattern: sp.csr_matrix, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (positive, laid out as ``pattern``'s data) over each cell's
    neighbours that have an entry for the gene, at ``pattern``'s positions."""
    x = pattern.copy()
    x.data = values.astype(np.float64)
    total = (weights @ x).multiply(pattern).tocsr()
    count = (weights @ pattern).multiply(pattern).tocsr()
    for a in (total, count):
        a.sort_indices()
        # each cell is its own neighbour, so both keep every position of the pattern
        assert np.array_equal(a.indptr, pattern.indptr)
        assert np.array_equal(a.indices, pattern.indices)
    return total.data / count.data


def denoise(
    adata: ad.AnnData,
    model,
    *,
    depth_multiplier: float = 1.0,
    posterior: bool = False,
    neighbours: int = 1,
    zero_share: float | None = None,
    layer_added: str = "scprint_denoised",
    max_len: int = 2200,
    batch_size: int = 32,
    gene_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> ad.AnnData | None:
    """Denoised expression: expected counts at a requested sequencing depth.

    The model sees each cell's counts and is asked for the profile at
    ``depth_multiplier`` times the cell's total count (its depth token); the expected
    counts of the genes it predicts (the cell's expressed genes first, up to
    ``max_len``, then measured zeros) are scaled so that they sum to that depth times
    the share of the cell's counts those genes hold.

    Parameters
    ----------
    adata
        Cells x genes with raw counts.
    model
        A loaded model or a checkpoint path.
    depth_multiplier
        Requested depth as a multiple of each cell's total count (e.g. 2: upsample).
    posterior
        Combine the prediction with the cell's own counts (needs ``depth_multiplier > 1``
        and a count decoder, ``"nb"`` or ``"zinb"``). The observed count ``y`` of a gene
        is read as a binomial subsample, at rate ``p = 1 / depth_multiplier``, of its
        count ``x`` at the requested depth, and the model's prediction (negative
        binomial with mean ``m``, scaled as above, and dispersion ``theta``) as the prior
        of ``x``; the layer holds the posterior mean
        ``E[x | y] = y + (1 - p) (theta + y) / (theta / m + p)``. For a zero-inflated
        prediction and ``y = 0`` this is weighted by the posterior probability that the
        zero is not structural; an observed count rules the zero component out. This is
        SAVER's Poisson-gamma posterior with the model as the prior. The model has seen
        ``y`` too, so the prior is not independent of it: a practical estimator, not an
        exact posterior. Without it (the default, the paper's) the layer holds the
        model's expected counts, which need not keep the order of the observed counts.
    neighbours
        Pool the model's prediction over each cell and its ``neighbours - 1`` nearest
        cells of ``adata`` (cosine distance between the model's cell embeddings from the
        same pass) before it is scaled and, with ``posterior``, used as the prior: per
        gene, the mean over those neighbours that predicted it of the expected share of
        the depth, of the zero probability, and of the log-dispersion. 1 (the default)
        denoises each cell on its own, as the paper does; more borrows strength from
        similar cells, as kNN smoothing and MAGIC do, so the result depends on which
        other cells are in ``adata``. Keeps every cell's prediction in memory (cells x
        ``max_len`` values, three times).
    zero_share
        None (the default): one sequence per cell, its expressed genes first, then
        measured genes with a zero count up to ``max_len``. A share in (0, 1): every
        measured gene of the cell, in as many passes as it takes, each with the cell's
        expressed genes and that share of zero-count genes, a different slice of them in
        each pass; the predictions are averaged over the passes that held a gene. A
        model pretrained with ``zero_genes`` of ``max_len`` positions given to
        unexpressed genes sees sequences like its training ones with
        ``zero_share = zero_genes / max_len``, where one long sequence of a shallow cell
        is mostly zeros. Costs about ``1 / zero_share`` times the tokens of the cell's
        zero-count genes, in short sequences.
    layer_added
        Layer written.
    max_len, batch_size, gene_key, layer, organism, progress, copy
        As in :func:`embed`.

    Returns
    -------
    ``None`` (or a copy), with ``layers[layer_added]``: CSR float32 expected counts (with
    ``posterior``, posterior means), cells x genes of ``adata``; genes the model did not
    predict for a cell are 0.
    """
    if not depth_multiplier > 0:
        raise ValueError(f"depth_multiplier must be > 0, got {depth_multiplier}.")
    if (
        isinstance(neighbours, bool)
        or not isinstance(neighbours, int | np.integer)
        or (neighbours < 1)
    ):
        raise ValueError(f"neighbours must be an integer >= 1 (1: each cell alone), got "
                         f"{neighbours!r}.")  # fmt: skip
    if zero_share is not None and (
        isinstance(zero_share, bool)
        or not isinstance(zero_share, float | int | np.floating | np.integer)
        or not 0 < zero_share < 1
    ):
        raise ValueError(
            f"zero_share must be a share in (0, 1) (e.g. the model's pretraining "
            f"zero_genes / max_len), or None for one sequence per cell; got {zero_share!r}."
        )
    if 1 < neighbours and adata.n_obs < neighbours:  # (0 cells: prepare says so)
        raise ValueError(
            f"neighbours={neighbours} but adata has only {adata.n_obs} cells; pool over at "
            "most as many cells as there are, or denoise each cell alone (neighbours=1)."
        )
    if posterior and not depth_multiplier > 1:
        raise ValueError(
            f"posterior=True reads the observed counts as a subsample of the requested "
            f"depth, so depth_multiplier must be > 1 (got {depth_multiplier}); use "
            "posterior=False to predict at the same or a lower depth."
        )
    module = resolve_model(model)
    decoder = module.config.decoder
    if posterior and decoder not in ("nb", "zinb"):
        raise ValueError(
            f"posterior=True needs a count decoder ('nb' or 'zinb'); this model's decoder is "
            f"{decoder!r}. Use posterior=False."
        )
    source = prepare(adata, module, gene_key=gene_key, layer=layer, organism=organism)
    totals = np.asarray(source.counts.sum(axis=1)).ravel()
    target_depth = (totals * depth_multiplier).astype(np.float32)
    if zero_share is None:
        passes = iterate(source, module, batch_size=batch_size, max_len=max_len,
                         depth=target_depth, desc="denoise", progress=progress)  # fmt: skip
    else:
        passes = iterate_zero_share(source, module, zero_share=zero_share, max_len=max_len,
                                    batch_size=batch_size, depth=target_depth,
                                    desc="denoise", progress=progress)  # fmt: skip
    # model gene -> data column
    column = np.full(source.n_model_genes, -1, dtype=np.int64)
    inside = source.model_index >= 0
    column[source.model_index[inside]] = np.flatnonzero(inside)
    rows, cols, vals = [], [], []
    pool = neighbours > 1
    kept: dict[str, list[np.ndarray]] = {"emb": [], "share": [], "theta": [], "pi": [], "y": []}
    start = 0
    for batch, out in passes:
        expected = _expected_counts(out, decoder).float().cpu().numpy()  # (B, L)
        genes = batch["genes"].numpy()
        data_col = column[genes]  # (B, L); -1 for unmeasured padding
        keep = data_col >= 0
        y = batch["x"].numpy()
        observed = (y * keep).sum(axis=1)  # counts of the predicted genes
        n = len(genes)
        cells = np.arange(start, start + n)
        share = np.where(totals[cells] > 0, observed / np.maximum(totals[cells], 1e-12), 0)
        wanted = target_depth[cells] * share
        predicted = (expected * keep).sum(axis=1)
        scale = np.where(predicted > 0, wanted / np.maximum(predicted, 1e-12), 0)
        r, c = np.nonzero(keep)
        rows.append(cells[r])
        cols.append(data_col[r, c])
        start += n
        if pool:
            # the prior's parameters, the mean as a share of the requested depth
            mean = out["mu"].float().cpu().numpy() * scale[:, None]
            depth = np.maximum(target_depth[cells], 1e-12)[:, None]
            kept["share"].append(np.maximum(mean / depth, 1e-12)[r, c])
            theta = np.broadcast_to(out["theta"].float().cpu().numpy(), mean.shape)
            kept["theta"].append(theta[r, c])
            if "pi_logits" in out:
                pi = torch.sigmoid(out["pi_logits"].float()).cpu().numpy()
                kept["pi"].append(np.clip(pi, 1e-7, 1.0)[r, c])
            kept["y"].append(y[r, c])
            kept["emb"].append(out["cell_embs"][:, 0].float().cpu().numpy())
            continue
        if posterior:
            expected = _posterior_mean(out, y, scale, 1.0 / depth_multiplier)
        else:
            expected = expected * scale[:, None]
        vals.append(expected[r, c])
    if pool:
        vals = [_denoise_pooled(kept, np.concatenate(rows), np.concatenate(cols), adata.shape,
                                target_depth, totals, neighbours, posterior,
                                1.0 / depth_multiplier)]  # fmt: skip
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=adata.shape,
        dtype=np.float32,
    )
    target = adata.copy() if copy else adata
    target.layers[layer_added] = matrix
    return target if copy else None
