"""The training plan of the tabular classifiers, in plain torch.

:class:`TabularTask` holds a model with its loss - weighted cross-entropy (+
``lambda_sparse`` x TabNet's mask entropy, + an optional L2 penalty) - its optimiser and
the optional augmentation; :func:`train_task` runs the epochs (validation macro F1 once
per epoch, early stopping, the best epoch kept in memory). :func:`~scprint.tabular.fit`
uses them directly: training a classifier does not import Lightning, whose import alone
costs about 110 MB of resident memory. :class:`scprint.tabular.lightning.TabularModule`
wraps the same task for a Lightning ``Trainer`` (accelerators, several devices).

The optimiser presets:

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

import copy
import logging
import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nn import build_model

if TYPE_CHECKING:
    from .augment import AugmentationVectors

__all__ = [
    "LOSS_TIEBREAK",
    "OptimizerConfig",
    "StallStopping",
    "TabularTask",
    "TrainResult",
    "macro_f1",
    "train_task",
]

logger = logging.getLogger(__name__)

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


class TabularTask(nn.Module):
    """One of :mod:`scprint.tabular.nn`'s models with its loss, optimiser and augmentation,
    trained on batches ``{"x": (B, G) normalised, "y": (B,) codes}``.

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
        self.hparams = {
            "model_name": model_name,
            "model_kwargs": dict(model_kwargs or {}),
            "genes": list(genes),
            "classes": list(classes),
            "class_weights": class_weights,
            "optimizer": dict(optimizer or {}),
            "lambda_sparse": float(lambda_sparse),
            "augment_prob": float(augment_prob),
            "augment_seed": int(augment_seed),
        }
        self.genes, self.classes = list(genes), list(classes)
        self.model = build_model(model_name, len(genes), len(classes), **(model_kwargs or {}))
        self.optim = OptimizerConfig(**(optimizer or {}))
        w = torch.ones(len(classes)) if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("class_weights", w.float())
        self.lambda_sparse = float(lambda_sparse)
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

    def training_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimise, cross-entropy) of a training batch: augmented when
        augmentation is on, plus the L2 penalty."""
        if self.augment is not None:
            batch = {**batch, "x": self.augment_batch(batch["x"])}
        loss, ce, _ = self._loss(batch)
        if self.optim.l2 > 0:
            loss = loss + self.l2_penalty()
        return loss, ce

    def make_optimizer(self):
        """(optimiser, scheduler or None, ``"epoch"`` or ``"plateau"`` or None)."""
        o = self.optim
        if o.name == "lbfgs":
            opt = torch.optim.LBFGS(
                self.parameters(),
                lr=o.lr,
                max_iter=o.lbfgs_iter,
                history_size=10,
                line_search_fn="strong_wolfe",
            )
            return opt, None, None
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        opt = cls(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        if o.scheduler == "step":
            return opt, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=o.step_gamma), "epoch"
        if o.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=o.plateau_factor, patience=o.plateau_patience
            )
            return opt, sched, "plateau"
        return opt, None, None

    def config(self) -> dict:
        return {"optimizer": asdict(self.optim), "lambda_sparse": self.lambda_sparse}


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in ``y`` (scikit-learn's ``f1_score(average=
    "macro", labels=unique(y), zero_division=0)``), without importing scikit-learn."""
    f1s = []
    for c in np.unique(y):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        f1s.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


class StallStopping:
    """Stop when neither the validation macro F1 nor the validation loss has improved for
    ``patience`` epochs (F1: any increase; loss: a relative decrease of at least
    ``loss_rel_delta``); ``history`` is :attr:`TabularTask.history`."""

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

    def __call__(self, history: list[dict]) -> bool:
        """True when training should stop."""
        return bool(history) and self.stalled_for(history) >= self.patience


@dataclass
class TrainResult:
    """What :func:`train_task` did: ``epochs`` run, the ``kept`` history entry (the best
    epoch's, or the last one's), and whether the weights are the ``best`` or ``last``."""

    epochs: int
    kept: dict | None
    which: Literal["best", "last"]


def seed_all(seed: int) -> None:
    """Seed Python and torch (CPU and CUDA); numpy draws here use explicit generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def device_of(accelerator: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"gpu"`` / ``"cuda"`` or ``"mps"``."""
    acc = accelerator.lower()
    if acc == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"accelerator={accelerator!r} but CUDA is not available")
        return torch.device("cuda")
    if acc in ("cpu", "mps"):
        return torch.device(acc)
    raise ValueError(f"accelerator must be auto, cpu, gpu, cuda or mps, not {accelerator!r}")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_task(
    task: TabularTask,
    train_batches,
    val_batches,
    *,
    max_epochs: int,
    patience: int,
    gradient_clip_val: float | None = None,
    device: torch.device | str = "cpu",
    keep: Literal["best", "last"] = "best",
    progress: bool = False,
) -> TrainResult:
    """Train ``task`` for at most ``max_epochs`` epochs over ``train_batches`` (an iterable
    of batches, re-iterated each epoch), validating on ``val_batches`` after each.

    Each epoch appends ``{"epoch", "train_loss", "val_macro_f1", "val_loss",
    "val_score"}`` to ``task.history``; ``val_score`` is the macro F1 minus
    :data:`LOSS_TIEBREAK` x the validation loss. Training stops early by
    :class:`StallStopping` (``patience``). ``keep="best"`` restores the weights of the
    first epoch with the highest ``val_score`` (kept in memory, never written);
    ``"last"`` leaves the last epoch's (a convex fit run to convergence). Gradient norms
    are clipped to ``gradient_clip_val`` (not with L-BFGS). The task is left in eval
    mode on the CPU.
    """
    device = torch.device(device)
    task.to(device)
    opt, sched, interval = task.make_optimizer()
    lbfgs = task.optim.name == "lbfgs"
    stop = StallStopping(patience)
    best_state, best_score, kept = None, -np.inf, None
    epochs = range(max_epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc="training", unit="epoch", leave=False)
    n_run = 0
    try:
        for epoch in epochs:
            task.train()
            total, n_cells = 0.0, 0
            for batch in train_batches:
                batch = _to(batch, device)
                if lbfgs:

                    def closure(batch=batch):
                        opt.zero_grad()
                        loss, _ = task.training_loss(batch)
                        loss.backward()
                        return loss

                    loss = opt.step(closure)
                else:
                    opt.zero_grad(set_to_none=True)
                    loss, _ = task.training_loss(batch)
                    loss.backward()
                    if gradient_clip_val:
                        torch.nn.utils.clip_grad_norm_(task.parameters(), gradient_clip_val)
                    opt.step()
                total += float(loss.detach()) * len(batch["y"])
                n_cells += len(batch["y"])
            n_run = epoch + 1
            entry = {"epoch": epoch, "train_loss": total / max(n_cells, 1)}
            entry.update(evaluate_task(task, val_batches, device))
            if entry["val_macro_f1"] is None:  # no validation cells: train to max_epochs
                task.history.append(entry)
                kept = entry
                continue
            task.history.append(entry)
            if sched is not None:
                sched.step(entry["val_loss"]) if interval == "plateau" else sched.step()
            if keep == "best" and entry["val_score"] > best_score:
                best_score, kept = entry["val_score"], entry
                best_state = {k: v.detach().clone() for k, v in task.state_dict().items()}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(val_f1=f"{entry['val_macro_f1']:.3f}")
            if stop(task.history):
                break
    finally:
        if bar is not None:
            bar.close()
    if keep == "best" and best_state is not None:
        task.load_state_dict(best_state)
    else:
        kept = task.history[-1] if task.history else None
    task.cpu().eval()
    return TrainResult(epochs=n_run, kept=copy.deepcopy(kept), which=keep)


@torch.no_grad()
def evaluate_task(task: TabularTask, batches, device: torch.device | str = "cpu") -> dict:
    """``{"val_macro_f1", "val_accuracy", "val_loss", "val_score"}`` of ``task`` on
    ``batches`` (eval mode; None values when there are no cells)."""
    task.eval()
    ys, preds, loss_sum = [], [], 0.0
    for batch in batches:
        batch = _to(batch, device)
        loss, _, out = task._loss(batch)
        ys.append(batch["y"].cpu().numpy())
        preds.append(out["logits"].argmax(-1).cpu().numpy())
        loss_sum += float(loss) * len(batch["y"])
    if not ys:
        return {"val_macro_f1": None, "val_accuracy": None, "val_loss": None, "val_score": None}
    y, p = np.concatenate(ys), np.concatenate(preds)
    f1, loss = macro_f1(y, p), loss_sum / len(y)
    return {
        "val_macro_f1": f1,
        "val_accuracy": float(np.mean(y == p)),
        "val_loss": loss,
        "val_score": f1 - LOSS_TIEBREAK * loss if np.isfinite(loss) else f1,
    }
