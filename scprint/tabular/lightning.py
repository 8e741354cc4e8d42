"""A Lightning wrapper of :class:`~scprint.tabular.module.TabularTask`.

:func:`scprint.tabular.fit` trains with the plain-torch loop of
:func:`~scprint.tabular.module.train_task`; this module is for training the same task
under a Lightning ``Trainer`` instead (several GPUs or nodes, mixed precision, your own
loggers and callbacks), e.g. on a :class:`scdataloader.Collection` bigger than memory::

    import lightning.pytorch as pl
    from scprint.tabular.lightning import TabularModule

    module = TabularModule("mlp", genes=genes, classes=classes, optimizer=opt_dict)
    pl.Trainer(max_epochs=20, accelerator="gpu", devices=4).fit(module, train_dl, val_dl)
    clf = module.classifier()  # a TabularClassifier, for predict / explain / save

Batches are those of :func:`scprint.tabular.data.make_loader` (``{"x", "y"}``). The
validation metrics (``val_macro_f1``, ``val_accuracy``, ``val_loss``, ``val_score``) are
logged once per epoch, so ``ModelCheckpoint(monitor="val_score", mode="max")`` keeps the
same epoch that :func:`~scprint.tabular.fit` would.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np

from .module import LOSS_TIEBREAK, TabularTask, macro_f1

__all__ = ["TabularModule"]


class TabularModule(pl.LightningModule):
    """:class:`~scprint.tabular.module.TabularTask` as a LightningModule (same arguments)."""

    def __init__(self, model_name: str, **kwargs):
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        self.task = TabularTask(model_name, **kwargs)
        self._val: list[tuple[np.ndarray, np.ndarray, float]] = []

    @property
    def model(self):
        return self.task.model

    @property
    def history(self) -> list[dict]:
        return self.task.history

    def forward(self, x):
        return self.task(x)

    def training_step(self, batch, batch_idx):
        loss, ce = self.task.training_loss(batch)
        n = len(batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_ce", ce, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _, out = self.task._loss(batch)
        n = len(batch["y"])
        pred = out["logits"].argmax(-1)
        self._val.append((batch["y"].cpu().numpy(), pred.cpu().numpy(), float(loss) * n))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        if not self._val:
            return
        y = np.concatenate([a for a, _, _ in self._val])
        p = np.concatenate([b for _, b, _ in self._val])
        f1 = macro_f1(y, p)
        loss = sum(c for _, _, c in self._val) / len(y)
        score = f1 - LOSS_TIEBREAK * loss
        self.log("val_macro_f1", f1, prog_bar=True)
        self.log("val_accuracy", float(np.mean(y == p)))
        self.log("val_loss", loss)
        self.log("val_score", score)
        if not self.trainer.sanity_checking:
            self.task.history.append(
                {"epoch": int(self.current_epoch), "val_macro_f1": f1, "val_loss": loss,
                 "val_score": score}
            )  # fmt: skip

    def configure_optimizers(self):
        opt, sched, interval = self.task.make_optimizer()
        if sched is None:
            return opt
        if interval == "plateau":
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def classifier(self):
        """The trained model as a :class:`~scprint.tabular.TabularClassifier` (on the CPU,
        temperature 1)."""
        from .api import TabularClassifier

        h = self.task.hparams
        return TabularClassifier(
            self.task.model.cpu().eval(),
            model_name=h["model_name"],
            model_kwargs=h["model_kwargs"],
            genes=self.task.genes,
            classes=self.task.classes,
            provenance={"trainer": "lightning", "optimizer": h["optimizer"]},
        )
