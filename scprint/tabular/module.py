"""The Lightning training plan of the tabular classifiers.

Weighted cross-entropy (+ ``lambda_sparse`` x TabNet's mask entropy, + an optional L2
penalty), validation macro F1 computed once per epoch with scikit-learn, and the
optimiser presets:

* ``"sims"``: Adam, lr 0.01, weight decay 1e-3, learning rate x0.75 when the validation
  loss has not improved for 20 epochs (SIMS thesis, Methods).
* ``"sctab"``: AdamW, lr 5e-3, weight decay 0.05, StepLR(gamma 0.9, every epoch)
  (scTab's hyperparameter table; its MLP used lr 2e-3 and its linear model lr 5e-4,
  weight decay 0.01).
* ``"lbfgs"``: full-batch L-BFGS (strong Wolfe line search) on the L2-penalised loss,
  for the linear model on training sets that fit in one batch: it converges to the
  penalised optimum, as scikit-learn's logistic regression does, where Adam's few
  steps on a small data set stop far from it.

Checkpointing keeps the epoch of the best validation score: the macro F1 with ties broken
by the validation loss (:data:`LOSS_TIEBREAK` x loss is subtracted, far below one cell's
worth of F1). Early stopping (:class:`StallStopping`) waits until *neither* the macro F1
nor the validation loss has improved for ``patience`` epochs: a model whose F1 is flat or
noisy while its loss still falls (TabNet's slow start on small data) keeps training.

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
from lightning.pytorch.callbacks import Callback

from .nn import build_model

if TYPE_CHECKING:
    from .augment import AugmentationVectors

__all__ = ["LOSS_TIEBREAK", "OptimizerConfig", "StallStopping", "TabularModule"]

LOSS_TIEBREAK = 1e-4


@dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule."""

    name: Literal["adam", "adamw", "lbfgs"] = "adam"
    lr: float = 0.01
    weight_decay: float = 1e-3
    scheduler: Literal["plateau", "step", "none"] = "plateau"
    plateau_factor: float = 0.75
    plateau_patience: int = 20
    step_gamma: float = 0.9
    #: L2 penalty ``l2 / 2 x sum(w**2)`` over the weight matrices (not biases or batch-norm
    #: parameters) added to the mean training loss; unlike AdamW's decoupled weight
    #: decay it is part of the objective, so its optimum does not depend on the optimiser.
    l2: float = 0.0
    #: L-BFGS iterations per training step (one step per epoch with a full batch).
    lbfgs_iter: int = 20

    def __post_init__(self):
        if self.name not in ("adam", "adamw", "lbfgs"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'lbfgs', not {self.name!r}")
        if self.scheduler not in ("plateau", "step", "none"):
            raise ValueError(f"scheduler must be plateau, step or none, not {self.scheduler!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, not {self.l2}")
        if self.lbfgs_iter < 1:
            raise ValueError(f"lbfgs_iter must be >= 1, not {self.lbfgs_iter}")

    @classmethod
    def sims(cls) -> OptimizerConfig:
        return cls()

    @classmethod
    def sctab(cls, model: str = "tabnet") -> OptimizerConfig:
        lr, wd = {"mlp": (2e-3, 0.05), "linear": (5e-4, 0.01)}.get(model, (5e-3, 0.05))
        return cls(name="adamw", lr=lr, weight_decay=wd, scheduler="step")

    @classmethod
    def lbfgs(cls, l2: float = 5e-3) -> OptimizerConfig:
        return cls(name="lbfgs", lr=1.0, weight_decay=0.0, scheduler="none", l2=l2)


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
        self._val: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.history: list[dict] = []  # one entry per validation epoch
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

    def l2_penalty(self) -> torch.Tensor:
        """``l2 / 2 x`` the squared norm of the weight matrices (parameters of 2+ dims)."""
        sq = sum((p.pow(2).sum() for p in self.model.parameters() if p.dim() > 1), start=0.0)
        return 0.5 * self.optim.l2 * sq

    def training_step(self, batch, batch_idx):
        if self.augment is not None:
            batch = {**batch, "x": self.augment_batch(batch["x"])}
        loss, ce, _ = self._loss(batch)
        if self.optim.l2 > 0:
            loss = loss + self.l2_penalty()
        n = len(batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_ce", ce, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _, out = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["y"]))
        pred = out["logits"].argmax(-1)
        n = len(batch["y"])
        self._val.append((batch["y"].cpu().numpy(), pred.cpu().numpy(), float(loss) * n))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        from sklearn.metrics import accuracy_score, f1_score

        if not self._val:
            return
        y = np.concatenate([a for a, _, _ in self._val])
        p = np.concatenate([b for _, b, _ in self._val])
        labels = np.unique(y)  # macro over the classes of the validation set
        f1 = float(f1_score(y, p, labels=labels, average="macro", zero_division=0))
        loss = sum(c for _, _, c in self._val) / len(y)  # the batches' mean loss, cell-weighted
        score = f1 - LOSS_TIEBREAK * loss if np.isfinite(loss) else f1
        self.log("val_macro_f1", f1, prog_bar=True)
        self.log("val_accuracy", float(accuracy_score(y, p)))
        self.log("val_score", score)
        if not self.trainer.sanity_checking:
            self.history.append(
                {"epoch": int(self.current_epoch), "val_macro_f1": f1, "val_loss": loss,
                 "val_score": score}
            )  # fmt: skip

    def configure_optimizers(self):
        o = self.optim
        if o.name == "lbfgs":
            return torch.optim.LBFGS(
                self.parameters(),
                lr=o.lr,
                max_iter=o.lbfgs_iter,
                history_size=10,
                line_search_fn="strong_wolfe",
            )
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


class StallStopping(Callback):
    """Stop when neither the validation macro F1 nor the validation loss has improved for
    ``patience`` epochs (F1: any increase; loss: a relative decrease of at least
    ``loss_rel_delta``). Reads :attr:`TabularModule.history`."""

    def __init__(self, patience: int, loss_rel_delta: float = 1e-3):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, not {patience}")
        self.patience = int(patience)
        self.loss_rel_delta = float(loss_rel_delta)
        self.stopped_epoch: int | None = None

    def stalled_for(self, history: list[dict]) -> int:
        """Epochs since the last improvement of either metric (0: the last epoch)."""
        last, best_f1, best_loss = 0, -np.inf, np.inf
        for i, h in enumerate(history):
            f1, loss = h["val_macro_f1"], h["val_loss"]
            improved = f1 > best_f1
            if np.isfinite(loss) and loss < best_loss * (1 - self.loss_rel_delta):
                best_loss, improved = loss, True
            best_f1 = max(best_f1, f1)
            if improved:
                last = i
        return len(history) - 1 - last

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.history:
            return
        if self.stalled_for(pl_module.history) >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = int(trainer.current_epoch)
