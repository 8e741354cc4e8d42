"""Pretraining: configs, a real debug fit, checkpoints, exact resume."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import scprint
from scdataloader import DataModule
from scprint.checkpoint import CheckpointError
from scprint.train import ScPrintModule

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]


def _data(retina_path, n_batches=8, **kwargs) -> DataModule:
    return DataModule(
        [retina_path], label_keys=KEYS, batch_size=16, max_len=192, val_size=0.1,
        train_samples=16 * n_batches, seed=3, **kwargs,
    )  # fmt: skip


def _module(dm, **kwargs) -> ScPrintModule:
    pl.seed_everything(0, verbose=False)
    options = {"preset": "debug", "lr": 2e-3, "warmup_steps": 5, **kwargs}
    return ScPrintModule(dm.genes, dm.hierarchies, dm.label_keys, **options)


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, limit_val_batches=2, enable_checkpointing=False,
    )  # fmt: skip
    return pl.Trainer(**{**defaults, **kwargs})


class Recorder(pl.Callback):
    """Per-step losses and the cells of each batch."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, float(outputs["loss"]), batch["index"].tolist()))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses(path):
    from scprint.cli import _cli_class

    class ParseOnly(_cli_class()):
        def instantiate_classes(self):  # parse and type-check, build nothing
            pass

    cli = ParseOnly(ScPrintModule, DataModule, args=["--config", str(path)], run=False)
    assert cli.config["model"]["preset"] in ("debug", "small", "medium", "large")
    assert cli.config["data"]["label_keys"]


def test_debug_fit_decreases_every_loss(retina_path):
    dm = _data(retina_path, n_batches=10)
    module = _module(dm)
    assert set(module.hierarchies) == {"cell_type_ontology_term_id"}  # one-label classes
    seen = {}

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            for name, value in m.last_losses.items():
                seen.setdefault(name, {}).setdefault(trainer.current_epoch, []).append(value)

    _trainer(max_epochs=4, callbacks=[Losses()]).fit(module, datamodule=dm)
    assert set(seen) == {"denoise", "class_cell_type_ontology_term_id", "bottleneck",
                         "contrastive"}  # fmt: skip
    for name, per_epoch in seen.items():
        first, last = (sum(v) / len(v) for v in (per_epoch[0], per_epoch[3]))
        assert last < first, (name, first, last)


def test_checkpoint_round_trip_and_errors(retina_path, tmp_path):
    dm = _data(retina_path, n_batches=2)
    module = _module(dm)
    trainer = _trainer(max_epochs=1)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = scprint.load(path)
    assert loaded.genes == list(dm.genes)
    assert loaded.config == module.config
    assert set(loaded.hierarchies) == set(module.hierarchies)
    batch = next(iter(dm.val_dataloader()))
    module.eval()
    with torch.no_grad():
        a = module(batch["genes"], batch["x"], batch["depth"])
        b = loaded(batch["genes"], batch["x"], batch["depth"])
    for key in ("mu", "theta", "pi_logits", "cell_embs"):
        assert torch.equal(a[key], b[key])
    assert scprint.load(tmp_path).genes == loaded.genes  # a folder holding one checkpoint

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        scprint.load(corrupt)
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["model.expr_dec.net.0.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match="wrong shapes.*expr_dec"):
        scprint.load(tmp_path / "edited.ckpt")
    del ckpt["hyper_parameters"]["genes"]
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an scPRINT checkpoint"):
        scprint.load(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no such file"):
        scprint.load(tmp_path / "missing.ckpt")


def test_resume_continues_at_the_same_step_with_the_same_batches(retina_path, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = _data(retina_path, n_batches=6)
    record = Recorder()
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1,
                            filename="{step}")  # fmt: skip
    _trainer(max_epochs=2, callbacks=[record, saver], enable_checkpointing=True).fit(
        _module(dm), datamodule=dm
    )
    assert [s for s, _, _ in record.steps] == list(range(1, 13))
    # resume mid-epoch 1 (after 8 of 12 steps) in fresh objects
    dm2 = _data(retina_path, n_batches=6)
    resumed = Recorder()
    _trainer(max_epochs=2, callbacks=[resumed]).fit(
        _module(dm2), datamodule=dm2, ckpt_path=tmp_path / "step=8.ckpt"
    )
    assert [s for s, _, _ in resumed.steps] == [9, 10, 11, 12]
    for (s1, loss1, cells1), (s2, loss2, cells2) in zip(
        record.steps[8:], resumed.steps, strict=True
    ):
        assert s1 == s2 and cells1 == cells2, s1
        assert abs(loss1 - loss2) < 1e-5 * max(1.0, abs(loss1)), (s1, loss1, loss2)


def test_pretrained_gene_embeddings_from_parquet(retina_path, tmp_path):
    import numpy as np
    import pandas as pd

    dm = _data(retina_path, n_batches=2)
    rng = np.random.default_rng(0)
    known = list(dm.genes[: len(dm.genes) // 2])  # half the genes have an embedding
    table = pd.DataFrame(rng.normal(size=(len(known), 24)).astype(np.float32), index=known)
    table.columns = table.columns.astype(str)
    table.to_parquet(tmp_path / "emb.parquet")
    module = _module(dm, gene_embeddings=str(tmp_path / "emb.parquet"))
    weight = module.model.gene_emb.weight
    assert weight.shape == (len(dm.genes), 24) and not weight.requires_grad
    np.testing.assert_allclose(weight[:3].detach().numpy(), table.to_numpy()[:3])
    trainer = _trainer(max_epochs=1, precision="bf16-mixed")
    trainer.fit(module, datamodule=dm)
    assert torch.isfinite(torch.tensor(module.last_losses["denoise"]))
    trainer.save_checkpoint(tmp_path / "emb.ckpt")
    (tmp_path / "emb.parquet").unlink()  # the checkpoint alone suffices
    loaded = scprint.load(tmp_path / "emb.ckpt")
    assert torch.equal(loaded.model.gene_emb.weight, weight)
    assert not loaded.model.gene_emb.weight.requires_grad
    with pytest.raises(ValueError, match="none of the"):
        pd.DataFrame(rng.normal(size=(2, 4)), index=["x", "y"]).rename(columns=str).to_parquet(
            tmp_path / "bad.parquet"
        )
        _module(dm, gene_embeddings=str(tmp_path / "bad.parquet"))


def test_swa_and_plateau_schedule_together(retina_path):
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    dm = _data(retina_path, n_batches=3)
    module = _module(dm, warmup_steps=2)
    swa = StochasticWeightAveraging(swa_lrs=0.03, swa_epoch_start=2)
    _trainer(max_epochs=3, callbacks=[swa], gradient_clip_val=100).fit(module, datamodule=dm)
    assert module.trainer.global_step == 9
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_warmup_then_base_learning_rate(retina_path):
    dm = _data(retina_path, n_batches=4)
    module = _module(dm, warmup_steps=4, lr=1e-3)
    rates = []

    class Rates(pl.Callback):
        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(max_epochs=2, callbacks=[Rates()]).fit(module, datamodule=dm)
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4:] == pytest.approx([1e-3] * 4)


def test_hub_ids_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="Hugging Face hub.*local path"):
        scprint.load("someone/scprint-medium")
    with pytest.raises(CheckpointError, match="no such file"):
        scprint.load("not/a/hub/id.ckpt")


def test_loss_weights(retina_path):
    dm = _data(retina_path, n_batches=2)
    module = _module(dm, class_weight=10.0, contrastive_weight=0.5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    losses = module.compute_losses(batch, generator=torch.Generator().manual_seed(0))
    key = "class_cell_type_ontology_term_id"
    expected = (
        losses["denoise"] + losses["bottleneck"] + 10 * losses[key] + 0.5 * losses["contrastive"]
    )
    assert torch.allclose(module.total_loss(losses), expected)
    plain = _module(dm)
    assert torch.allclose(plain.total_loss(losses), sum(losses.values()))
    with pytest.raises(ValueError, match="class_weight.*must be >= 0"):
        _module(dm, class_weight=-1.0)


def _val_accuracy(module, dm) -> float:
    module.eval()
    right = total = 0
    key = dm.label_keys[0]
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = module(batch["genes"], batch["x"].float(), batch["depth"].float())
            labels = batch["labels"][:, 0]
            known = labels >= 0
            pred = out["class_logits"][key].argmax(-1)
            right += int((pred[known] == labels[known]).sum())
            total += int(known.sum())
    module.train()
    return right / total


def test_expression_gene_table_lets_the_class_tokens_learn(retina_path, tmp_path):
    """Frozen random gene rows tell the class tokens nothing about a cell at the start;
    the table from the training cells' principal components does, and the same short
    run then labels held-out validation cells far above chance."""
    import anndata as ad
    import numpy as np

    from scprint.gene_embeddings import expression_gene_embeddings, write_gene_embeddings

    key = "cell_type_ontology_term_id"
    dm = DataModule(
        [retina_path], label_keys=[key], batch_size=16, max_len=192, val_size=0.2,
        train_samples=16 * 300, seed=0, mode="random expr",
    )  # fmt: skip
    dm.setup("fit")
    train = ad.read_h5ad(retina_path)[np.sort(dm.train_idx)]
    table = write_gene_embeddings(expression_gene_embeddings(train), tmp_path / "expr.parquet")
    accuracy = {}
    for name, gene_embeddings in (("random", None), ("expression", str(table))):
        torch.manual_seed(0)
        module = ScPrintModule(
            dm.genes, dm.hierarchies, dm.label_keys, preset="debug", lr=1e-3,
            gene_embeddings=gene_embeddings, denoise=False, bottleneck=False,
            contrastive=False,
        )  # fmt: skip
        opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
        for batch in dm.train_dataloader():
            loss = module.total_loss(module.compute_losses(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
        accuracy[name] = _val_accuracy(module, dm)
    majority = np.bincount(dm.collection.labels[dm.val_idx][:, 0]).max() / len(dm.val_idx)
    # measured: random 0.215, expression 0.57, majority class 0.34
    assert accuracy["expression"] > majority + 0.1, (accuracy, majority)
    assert accuracy["expression"] > accuracy["random"] + 0.2, accuracy
