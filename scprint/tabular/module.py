"""The Lightning training plan of the tabular classifiers.

Weighted cross-entropy (+ ``lambda_sparse`` x TabNet's mask entropy), validation macro F1
computed once per epoch with scikit-learn, and two optimiser presets:

* ``"sims"``: Adam, lr 0.01, weight decay 1e-3, learning rate x0.75 when the validation
  loss has not improved for 20 epochs (SIMS thesis, Methods).
* ``"sctab"``: AdamW, lr 5e-3, weight decay 0.05, StepLR(gamma 0.9, every epoch)
  (scTab's hyperparameter table; its MLP used lr 2e-3 and its linear model lr 5e-4,
  weight decay 0.01).

Optionally, scTab's donor-difference augmentation
(:class:`~scprint.tabular.augment.AugmentationVectors`) is applied to the normalised
training batches - never to validation or prediction batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from .nn import build_model

if TYPE_CHECKING:
    from .augment import AugmentationVectors

__all__ = ["OptimizerConfig", "TabularModule"]


@dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 0.01
    weight_decay: float = 1e-3
    scheduler: Literal["plateau", "step", "none"] = "plateau"
    plateau_factor: float = 0.75
    plateau_patience: int = 20
    step_gamma: float = 0.9

    def __post_init__(self):
        if self.name not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', not {self.name!r}")
        if self.scheduler not in ("plateau", "step", "none"):
            raise ValueError(f"scheduler must be plateau, step or none, not {self.scheduler!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")

    @classmethod
    def sims(cls) -> OptimizerConfig:
        return cls()

    @classmethod
    def sctab(cls, model: str = "tabnet") -> OptimizerConfig:
        lr, wd = {"mlp": (2e-3, 0.05), "linear": (5e-4, 0.01)}.get(model, (5e-3, 0.05))
        return cls(name="adamw", lr=lr, weight_decay=wd, scheduler="step")


class TabularModule(pl.LightningModule):
    """Trains one of :mod:`scprint.tabular.nn`'s models on batches of ``x``, ``y``.

    Parameters
    ----------
    model_name
        ``"tabnet"``, ``"mlp"`` or ``"linear"``.
    model_kwargs
        Arguments of the model (e.g. :meth:`TabNetConfig.model_kwargs`).
    genes
        The model's input genes, in order (kept in the checkpoint).
    classes
        Class names; code ``k`` is ``classes[k]`` (kept in the checkpoint).
    class_weights
        Cross-entropy weight of each class (None: unweighted).
    optimizer
        :class:`OptimizerConfig` as a dict.
    lambda_sparse
        Weight of the mask-entropy loss (TabNet only).
    augment
        Augmentation vectors over ``genes`` (in their order), added to the normalised
        training batches (:meth:`augment_batch`); None: no augmentation. Not saved in
        checkpoints.
    augment_prob
        Fraction of the training cells augmented (each cell independently); scTab
        augments every training cell (1.0).
    augment_seed
        Seed of the augmentation draws (which cells, which vector, which sign).
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict | None = None,
        genes: list[str] | None = None,
        classes: list[str] | None = None,
        class_weights: list[float] | None = None,
        optimizer: dict | None = None,
        lambda_sparse: float = 0.0,
        augment: AugmentationVectors | None = None,
        augment_prob: float = 1.0,
        augment_seed: int = 0,
    ):
        super().__init__()
        if not genes or not classes:
            raise ValueError("genes and classes must be non-empty lists")
        if not 0.0 <= augment_prob <= 1.0:
            raise ValueError(f"augment_prob must be in [0, 1], not {augment_prob}")
        if augment is not None and list(augment.genes) != list(genes):
            raise ValueError("augment must be over the model's genes: use augment.reindex(genes)")
        self.save_hyperparameters(ignore=["augment"])
        self.genes, self.classes = list(genes), list(classes)
        self.model = build_model(model_name, len(genes), len(classes), **(model_kwargs or {}))
        self.optim = OptimizerConfig(**(optimizer or {}))
        w = torch.ones(len(classes)) if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("class_weights", w.float())
        self.lambda_sparse = float(lambda_sparse)
        self._val: list[tuple[np.ndarray, np.ndarray]] = []
        self.augment = augment
        self.augment_prob = float(augment_prob)
        self._augment_rng = np.random.default_rng(augment_seed)

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        """scTab's augmentation of a normalised batch ``x`` (B, G): each cell, with
        probability ``augment_prob``, gets ``clamp(x ± v, 0, 9)`` for a vector ``v`` drawn
        from all of :attr:`augment` and a random sign. Returns a new tensor (``x`` is
        left as it is); ``x`` itself when there is nothing to augment."""
        if self.augment is None or len(self.augment) == 0 or self.augment_prob == 0.0:
            return x
        n = x.shape[0]
        if self.augment_prob >= 1.0:
            return self.augment.apply(x, rng=self._augment_rng)  # (B, G)
        chosen = np.flatnonzero(self._augment_rng.random(n) < self.augment_prob)
        if chosen.size == 0:
            return x
        rows = torch.as_tensor(chosen, device=x.device)
        out = x.clone()
        out[rows] = self.augment.apply(x[rows], rng=self._augment_rng)  # (b, G)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        out = self.model(batch["x"])
        ce = F.cross_entropy(out["logits"], batch["y"], weight=self.class_weights)
        return ce + self.lambda_sparse * out["sparsity_loss"], ce, out

    def training_step(self, batch, batch_idx):
        if self.augment is not None:
            batch = {**batch, "x": self.augment_batch(batch["x"])}
        loss, ce, _ = self._loss(batch)
        n = len(batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_ce", ce, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _, out = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["y"]))
        pred = out["logits"].argmax(-1)
        self._val.append((batch["y"].cpu().numpy(), pred.cpu().numpy()))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        from sklearn.metrics import accuracy_score, f1_score

        if not self._val:
            return
        y = np.concatenate([a for a, _ in self._val])
        p = np.concatenate([b for _, b in self._val])
        labels = np.unique(y)  # macro over the classes of the validation set
        f1 = f1_score(y, p, labels=labels, average="macro", zero_division=0)
        self.log("val_macro_f1", float(f1), prog_bar=True)
        self.log("val_accuracy", float(accuracy_score(y, p)))

    def configure_optimizers(self):
        o = self.optim
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        opt = cls(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        if o.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=o.step_gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=o.plateau_factor, patience=o.plateau_patience
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        return opt

    def config(self) -> dict:
        return {"optimizer": asdict(self.optim), "lambda_sparse": self.lambda_sparse}
