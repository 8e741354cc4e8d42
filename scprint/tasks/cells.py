"""Zero-shot cell-level tasks on AnnData: embeddings and denoised counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from ._data import iterate, prepare, resolve_model

__all__ = ["embed", "denoise"]


def embed(
    adata: ad.AnnData,
    model,
    *,
    key_added: str = "X_scprint",
    class_embeddings: bool = True,
    logits: bool = False,
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
    ``{key_added}_{class}_logits`` each classifier's logits, with ``logits``.
    """
    module = resolve_model(model)
    source = prepare(adata, module, gene_key=gene_key, layer=layer, organism=organism)
    classes = list(module.hierarchies)
    parts: dict[str, list[np.ndarray]] = {key_added: []}
    for _, out in iterate(
        source,
        module,
        batch_size=batch_size,
        max_len=max_len,
        mode=how,
        desc="embed",
        progress=progress,
    ):
        embs = out["cell_embs"].float().cpu().numpy()  # (B, 1 + K, d)
        parts[key_added].append(embs[:, 0])
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
    m = np.maximum(m, 1e-12)
    # gamma posterior of the Poisson rate: shape theta + y, rate theta / m + p
    post = y + (1 - p) * (theta + y) / (theta / m + p)
    if "pi_logits" in out:
        pi = torch.sigmoid(out["pi_logits"].float()).cpu().numpy()
        # P(y = 0 | not a structural zero) under thinning: (theta / (theta + p m))^theta
        log_q0 = theta * (np.log(theta) - np.log(theta + p * m))
        not_zero = (1 - pi) * np.exp(log_q0)
        w = np.where(y > 0, 1.0, not_zero / np.maximum(pi + not_zero, 1e-30))
        post = post * w
    return post.astype(np.float32)


def denoise(
    adata: ad.AnnData,
    model,
    *,
    depth_multiplier: float = 1.0,
    posterior: bool = False,
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
    # model gene -> data column
    column = np.full(source.n_model_genes, -1, dtype=np.int64)
    inside = source.model_index >= 0
    column[source.model_index[inside]] = np.flatnonzero(inside)
    rows, cols, vals = [], [], []
    start = 0
    for batch, out in iterate(
        source,
        module,
        batch_size=batch_size,
        max_len=max_len,
        depth=target_depth,
        desc="denoise",
        progress=progress,
    ):
        expected = _expected_counts(out, decoder).float().cpu().numpy()  # (B, L)
        genes = batch["genes"].numpy()
        data_col = column[genes]  # (B, L); -1 for unmeasured padding
        keep = data_col >= 0
        observed = (batch["x"].numpy() * keep).sum(axis=1)  # counts of the predicted genes
        n = len(genes)
        cells = np.arange(start, start + n)
        share = np.where(totals[cells] > 0, observed / np.maximum(totals[cells], 1e-12), 0)
        wanted = target_depth[cells] * share
        predicted = (expected * keep).sum(axis=1)
        scale = np.where(predicted > 0, wanted / np.maximum(predicted, 1e-12), 0)
        if posterior:
            expected = _posterior_mean(out, batch["x"].numpy(), scale, 1.0 / depth_multiplier)
        else:
            expected = expected * scale[:, None]
        r, c = np.nonzero(keep)
        rows.append(cells[r])
        cols.append(data_col[r, c])
        vals.append(expected[r, c])
        start += n
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=adata.shape,
        dtype=np.float32,
    )
    target = adata.copy() if copy else adata
    target.layers[layer_added] = matrix
    return target if copy else None
