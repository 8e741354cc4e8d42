"""LightningModule training scPRINT on the paper's multi-task objective.

Tasks (each can be switched off): denoising (the input is downsampled with a
zero-inflated Poisson, the target is the full profile at the full depth), hierarchical
classification of every label class, bottleneck learning (a second pass regenerates
the expression from the cell embeddings alone) and the contrastive loss between a
cell's embeddings. The losses are summed without scaling (paper, Methods "Pretraining").

Optimisation: AdamW (fused where the device supports it), weight decay 0.01, lr 1e-4,
linear warm-up over the first 500 steps, learning rate x0.6 when the validation loss
plateaus (patience 1). Early stopping, stochastic weight averaging, gradient clipping,
precision and sub-epochs are Trainer settings (see ``configs/``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from ..nn import ModelConfig, ScPrint
from ..nn import losses as L

__all__ = ["ScPrintModule", "hierarchy_from_any"]

logger = logging.getLogger(__name__)


def hierarchy_from_any(value: Any):
    """A :class:`scdataloader.ontology.LabelHierarchy` from itself or its ``to_dict``."""
    from scdataloader.ontology import LabelHierarchy

    if isinstance(value, LabelHierarchy):
        return value
    if isinstance(value, Mapping):
        return LabelHierarchy.from_dict(dict(value))
    raise TypeError(f"Expected a LabelHierarchy or its dict, got {type(value).__name__}.")


def _gene_locations(genes: Sequence[str]) -> torch.Tensor:
    """Location index of each gene from the vocabulary (human and mouse tables are
    offset so they never share a location); unknown genes get locations of their own."""
    from scdataloader.genes import load_genes

    genes = np.asarray(genes).astype(str)
    locations = np.full(len(genes), -1, dtype=np.int64)
    offset = 0
    for organism, prefix in (("human", "ENSG"), ("mouse", "ENSMUSG")):
        table = load_genes(organism)
        mine = np.char.startswith(genes, prefix)
        if mine.any():
            found = table["location"].reindex(genes[mine]).to_numpy(dtype=float)
            locations[mine] = np.where(np.isnan(found), -1, found + offset).astype(np.int64)
        offset += int(table["location"].max()) + 1
    unknown = locations < 0
    locations[unknown] = offset + np.arange(unknown.sum())
    return torch.from_numpy(locations)


class ScPrintModule(pl.LightningModule):
    """scPRINT pretraining.

    Parameters
    ----------
    genes
        The gene vocabulary (Ensembl ids, e.g. ``DataModule.genes``); batch gene indices
        refer to it.
    hierarchies
        Label hierarchy per label column (e.g. ``DataModule.hierarchies``); every column
        with at least two leaf labels gets a placeholder token and a classifier.
    label_keys
        Order of the columns of ``batch["labels"]``; default the keys of ``hierarchies``.
    preset
        Model size: ``debug``, ``small``, ``medium`` or ``large``.
    d_model, n_layers, n_heads
        Override the preset.
    decoder
        ``zinb``, ``nb`` or ``mse``.
    dropout, drop_path_rate, attention
        See :class:`scprint.nn.ModelConfig`.
    gene_embeddings
        Parquet file of pretrained gene embeddings indexed by Ensembl id (see
        ``scprint gene-embeddings``); a learned table when None.
    gene_embedding_dim
        Width of the pretrained table when it is filled from a checkpoint instead of a
        file (set automatically from ``gene_embeddings``).
    freeze_gene_embeddings
        Keep pretrained embeddings fixed.
    normalize_input
        Encode each sequence's counts scaled to a total of 10,000 (see
        :class:`scprint.nn.ModelConfig`) instead of the raw counts.
    denoise, classify, bottleneck, contrastive
        Switch each task on or off.
    noise
        Share of counts removed by downsampling (the paper's r = 0.6).
    class_weight, contrastive_weight
        Weights of the classification losses (each) and of the contrastive loss in the
        total; the expression losses weigh 1. On small data the expression losses' gradients
        swamp the classification's in the shared layers and the class tokens stay at
        chance for hundreds of steps; a class weight of about 10 lets them learn.
    lr, weight_decay, warmup_steps, lr_factor, lr_patience
        Optimisation.
    """

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        hierarchies: dict[str, Any] | None = None,
        label_keys: Sequence[str] | None = None,
        *,
        preset: str = "small",
        d_model: int | None = None,
        n_layers: int | None = None,
        n_heads: int | None = None,
        decoder: str = "zinb",
        dropout: float = 0.1,
        drop_path_rate: float = 0.02,
        attention: str = "auto",
        gene_embeddings: str | None = None,
        gene_embedding_dim: int = 0,
        freeze_gene_embeddings: bool = True,
        normalize_input: bool = False,
        denoise: bool = True,
        classify: bool = True,
        bottleneck: bool = True,
        contrastive: bool = True,
        noise: float = 0.6,
        class_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 500,
        lr_factor: float = 0.6,
        lr_patience: int = 1,
    ):
        super().__init__()
        if genes is None or len(genes) == 0:
            raise ValueError(
                "ScPrintModule needs the gene vocabulary (genes=DataModule.genes); with the "
                "CLI it is linked from the data module."
            )
        if class_weight < 0 or contrastive_weight < 0:
            raise ValueError(
                f"class_weight ({class_weight}) and contrastive_weight ({contrastive_weight}) "
                "must be >= 0."
            )
        genes = [str(g) for g in genes]
        hierarchies = {k: hierarchy_from_any(v) for k, v in (hierarchies or {}).items()}
        self.label_keys = list(label_keys) if label_keys is not None else list(hierarchies)
        # a class with a single leaf label has nothing to learn: no token, no head
        self.hierarchies = {k: h for k, h in hierarchies.items() if h.n_leaves > 1}
        skipped = sorted(set(hierarchies) - set(self.hierarchies))
        if skipped:
            logger.info("No classifier for %s: fewer than two labels in the data", skipped)
        self.genes = genes
        # Plain values only in hparams, so checkpoints load without our classes.
        self.save_hyperparameters(ignore=["genes", "hierarchies", "label_keys"])
        self.hparams.update(
            {
                "genes": genes,
                "hierarchies": {k: h.to_dict() for k, h in hierarchies.items()},
                "label_keys": self.label_keys,
            }
        )
        overrides = {
            k: v
            for k, v in {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads}.items()
            if v is not None
        }
        cfg = ModelConfig.preset(
            preset,
            **overrides,
            n_genes=len(genes),
            decoder=decoder,
            dropout=dropout,
            drop_path_rate=drop_path_rate,
            attention=attention,
            classes={k: h.n_leaves for k, h in self.hierarchies.items()},
            freeze_gene_embeddings=freeze_gene_embeddings,
            normalize_input=normalize_input,
        )
        table = None
        if gene_embeddings is not None:
            table = _load_embedding_table(gene_embeddings, genes)
            gene_embedding_dim = int(table.shape[1])
            self.hparams["gene_embedding_dim"] = gene_embedding_dim
        cfg.gene_embedding_dim = gene_embedding_dim
        self.model = ScPrint(cfg, gene_embeddings=table, gene_locations=_gene_locations(genes))
        for key, h in self.hierarchies.items():
            leaf = torch.from_numpy(h.leaf_matrix()) if h.coarse else torch.zeros(0, h.n_leaves)
            self.register_buffer(f"leaf_matrix_{key}", leaf.bool(), persistent=False)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    def forward(self, genes: Tensor, x: Tensor, depth: Tensor, **kwargs) -> dict:
        return self.model(genes, x, depth, **kwargs)

    # ------------------------------------------------------------------ losses

    def _reconstruction(self, x: Tensor, out: dict, mask: Tensor | None) -> Tensor:
        kind = self.config.decoder
        if kind == "zinb":
            nll = L.zinb_nll(x, out["mu"], out["theta"], out["pi_logits"])
        elif kind == "nb":
            nll = L.nb_nll(x, out["mu"], out["theta"])
        else:
            nll = L.mse_loss(x, out["pred"])
        if mask is not None:
            return (nll * mask).sum() / mask.sum().clamp_min(1)
        return nll.mean()

    def compute_losses(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Every enabled task's loss on a batch from :class:`scdataloader.Collator`."""
        hp = self.hparams
        x, genes, depth = batch["x"].float(), batch["genes"], batch["depth"].float()
        mask = batch.get("mask")
        mask = None if mask is None or bool(mask.all()) else mask.float()
        x_in = L.downsample(x, r=hp.noise, generator=generator) if hp.denoise else x
        # the depth token carries the full depth: the model learns to upsample to it
        out = self.model(genes, x_in, depth)
        losses = {}
        losses["denoise" if hp.denoise else "reconstruction"] = self._reconstruction(x, out, mask)
        if hp.classify and self.hierarchies:
            labels = batch["labels"]
            for key in self.hierarchies:
                j = self.label_keys.index(key)
                losses[f"class_{key}"] = L.hierarchical_ce(
                    out["class_logits"][key], labels[:, j], getattr(self, f"leaf_matrix_{key}")
                )
        if hp.bottleneck:
            dec = self.model.decode(genes, out["cell_embs"], out["depth_emb"], depth)
            losses["bottleneck"] = self._reconstruction(x, dec, mask)
        if hp.contrastive and out["cell_embs"].shape[1] > 1:
            losses["contrastive"] = L.contrastive_loss(out["cell_embs"])
        return losses

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The weighted sum of :meth:`compute_losses`' terms."""
        hp = self.hparams

        def weight(name: str) -> float:
            if name.startswith("class_"):
                return hp.class_weight
            return hp.contrastive_weight if name == "contrastive" else 1.0

        return sum(weight(name) * value for name, value in losses.items())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses = self.compute_losses(batch)
        loss = self.total_loss(losses)
        self.last_losses = {name: float(value.detach()) for name, value in losses.items()}
        bs = batch["x"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        # a fixed noise draw per batch, so validation losses compare across epochs
        gen = torch.Generator(device=batch["x"].device).manual_seed(batch_idx)
        losses = self.compute_losses(batch, generator=gen)
        loss = self.total_loss(losses)
        bs = batch["x"].shape[0]
        self.log("val_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for name, value in losses.items():
            self.log(f"val/{name}", value, batch_size=bs, sync_dist=True)
        return loss

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # random state too, so that a resumed run draws the same noise as an
        # uninterrupted one (Lightning restores model, optimizer, schedulers and step)
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # restored right before the next training step: creating the DataLoader iterator
        # in between draws from the torch generator, which the uninterrupted run did not
        self._rng_to_restore = checkpoint.get("rng_state")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        state = getattr(self, "_rng_to_restore", None)
        if state is not None:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            self._rng_to_restore = None

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        try:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device / dtype
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=hp.lr_factor, patience=hp.lr_patience
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"},
        }

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        # linear warm-up over the first steps; afterwards the plateau scheduler rules
        step, warmup = self.trainer.global_step, self.hparams.warmup_steps
        if step <= warmup and warmup > 0:
            scale = min(1.0, (step + 1) / warmup)
            for group in optimizer.param_groups:
                group["lr"] = scale * self.hparams.lr
        optimizer.step(closure=optimizer_closure)


def _load_embedding_table(path: str, genes: Sequence[str]) -> torch.Tensor:
    """Rows of a gene-embedding parquet for ``genes``; missing genes get random rows of
    the same scale (logged), so that they can still be learned when not frozen."""
    import pandas as pd

    table = pd.read_parquet(path)
    if not table.index.is_unique:
        raise ValueError(f"{path}: gene ids are not unique.")
    found = table.reindex(list(genes))
    missing = found.isna().any(axis=1).to_numpy()
    values = found.to_numpy(dtype=np.float32)
    if missing.all():
        raise ValueError(
            f"{path}: none of the {len(genes)} genes has an embedding; are the ids Ensembl "
            f"ids of the same organism? e.g. {list(table.index[:3])} vs {list(genes[:3])}"
        )
    if missing.any():
        logger.warning(
            "%d of %d genes have no embedding in %s: random rows used",
            missing.sum(),
            len(genes),
            path,
        )
        known = values[~missing]
        rng = np.random.default_rng(0)
        values[missing] = rng.normal(0, known.std(), (missing.sum(), values.shape[1]))
    return torch.from_numpy(values)
