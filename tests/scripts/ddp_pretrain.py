"""Debug pretraining on 2 CPU processes (DDP over gloo), run by ``tests/test_ddp.py``.

    python tests/scripts/ddp_pretrain.py RETINA.h5ad OUT_DIR EPOCHS

Lightning's DDP launcher starts the second process by running this same command again.
Each rank writes ``rank<r>.json`` (per step: global step, loss, the cells of the batch);
rank 0's checkpoint of the last step is ``OUT_DIR/last.ckpt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from scdataloader import DataModule
from scprint.train import ScPrintModule

KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]
BATCH, BATCHES_PER_RANK = 16, 8


def data(path: str) -> DataModule:
    """The data module of the run (train_samples over both ranks)."""
    return DataModule(
        [path], label_keys=KEYS, batch_size=BATCH, max_len=192, val_size=0.1,
        train_samples=2 * BATCH * BATCHES_PER_RANK, seed=3,
    )  # fmt: skip


def module(dm: DataModule) -> ScPrintModule:
    pl.seed_everything(0, verbose=False)
    return ScPrintModule(
        dm.genes, dm.hierarchies, dm.label_keys, preset="debug", lr=2e-3, warmup_steps=5
    )


class Record(pl.Callback):
    """Per rank: (global step, loss, cells) of every training batch, written at the end."""

    def __init__(self, out: Path):
        self.out, self.steps = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        cells = batch["index"].tolist()
        self.steps.append([trainer.global_step, float(outputs["loss"]), cells])

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        (self.out / f"rank{rank}.json").write_text(json.dumps(self.steps))


def main(path: str, out: str, epochs: int) -> None:
    out_dir = Path(out)
    dm = data(path)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the data module's sampler is rank-aware
        limit_val_batches=2,
        callbacks=[Record(out_dir), ModelCheckpoint(dirpath=out_dir, save_last=True)],
    )
    trainer.fit(module(dm), datamodule=dm)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
