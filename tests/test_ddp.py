"""Multi-process pretraining: 2 CPU processes over gloo, then a 1-process resume."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "ddp_pretrain.py"
EPOCHS = 4

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)


def _script():
    spec = importlib.util.spec_from_file_location("ddp_pretrain", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ddp_run(retina_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(retina_path), str(out), str(EPOCHS)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_ranks_see_different_cells_and_learn(ddp_run):
    mod = _script()
    r0, r1 = (json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1))
    per_epoch = mod.BATCHES_PER_RANK
    assert len(r0) == len(r1) == EPOCHS * per_epoch  # each rank: half the draws
    assert [s for s, _, _ in r0] == [s for s, _, _ in r1] == list(range(1, len(r0) + 1))
    cells0 = np.array([c for _, _, cells in r0 for c in cells])
    cells1 = np.array([c for _, _, cells in r1 for c in cells])
    assert len(cells0) == len(cells1) == EPOCHS * per_epoch * mod.BATCH
    # independent streams: the same cell at the same draw only by chance (1,000 cells)
    assert (cells0 == cells1).mean() < 0.05
    assert len(set(cells0) ^ set(cells1)) > 0.2 * len(set(cells0) | set(cells1))
    # the (all-reduced) model learns: rank 0's loss falls from the first to the last epoch
    loss0 = np.array([loss for _, loss, _ in r0]).reshape(EPOCHS, per_epoch).mean(1)
    assert loss0[-1] < loss0[0], loss0


def test_two_process_checkpoint_resumes_in_one_process(ddp_run, retina_path):
    mod = _script()
    ckpt = ddp_run / "last.ckpt"
    assert ckpt.exists()
    steps = []

    class Steps(pl.Callback):
        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            steps.append((trainer.global_step, float(outputs["loss"])))

    dm = mod.data(str(retina_path))
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=EPOCHS + 1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        limit_val_batches=2, enable_checkpointing=False, callbacks=[Steps()],
    )  # fmt: skip
    with pytest.warns(UserWarning, match="2 ranks, this run has 1"):
        trainer.fit(mod.module(dm), datamodule=dm, ckpt_path=ckpt)
    done = EPOCHS * mod.BATCHES_PER_RANK
    # one more epoch, now of the whole draw count on one process
    assert [s for s, _ in steps] == list(range(done + 1, done + 2 * mod.BATCHES_PER_RANK + 1))
    r0 = json.loads((ddp_run / "rank0.json").read_text())
    first_epoch = np.mean([loss for _, loss, _ in r0[: mod.BATCHES_PER_RANK]])
    resumed = np.mean([loss for _, loss in steps])
    # resumed from the trained weights, not restarted from scratch
    assert np.isfinite(resumed) and resumed < first_epoch
