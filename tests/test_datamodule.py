"""The Lightning DataModule on real files: splits, loaders, resume and a short fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdataloader import Collection, DataModule
from scdataloader.errors import InputError, LabelError

CELL_TYPE = "cell_type_ontology_term_id"
KEYS = [CELL_TYPE]
COLLATOR_KEYS = {"x", "genes", "mask", "depth", "labels", "dataset", "index"}


@pytest.fixture(scope="module")
def parts_coll(retina_parts):
    return Collection(retina_parts, obs_keys=KEYS)


def _dm(coll, **kwargs) -> DataModule:
    options = dict(label_keys=KEYS, batch_size=32, max_len=128, val_size=0.2, seed=0)
    options.update(kwargs)
    return DataModule(coll, **options)


def _indices(loader) -> list[np.ndarray]:
    return [batch["index"].numpy() for batch in loader]


# ----------------------------------------------------------------- splits


def test_test_split_holds_out_the_last_file(parts_coll):
    dm = _dm(parts_coll, test_datasets=1)
    n = len(parts_coll)
    assert n == 1000
    np.testing.assert_array_equal(np.sort(dm.test_idx), np.arange(750, 1000))
    assert len(dm.val_idx) == 150  # 0.2 of the 750 remaining cells
    train, val, test = set(dm.train_idx), set(dm.val_idx), set(dm.test_idx)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(n))
    # validation cells are drawn from both remaining files, not a block of one
    files = parts_coll.dataset_of_cell[dm.val_idx]
    assert set(files.tolist()) == {0, 1}


def test_splits_are_deterministic_by_seed(parts_coll):
    a, b = _dm(parts_coll, test_datasets=1), _dm(parts_coll, test_datasets=1)
    pairs = zip(
        (a.train_idx, a.val_idx, a.test_idx), (b.train_idx, b.val_idx, b.test_idx), strict=True
    )
    for x, y in pairs:
        np.testing.assert_array_equal(x, y)
    c = _dm(parts_coll, test_datasets=1, seed=1)
    assert set(c.val_idx) != set(a.val_idx)
    np.testing.assert_array_equal(c.test_idx, a.test_idx)


def test_test_datasets_by_index_or_path(parts_coll, retina_parts):
    by_index = _dm(parts_coll, test_datasets=[0])
    np.testing.assert_array_equal(np.sort(by_index.test_idx), np.arange(400))
    by_path = _dm(parts_coll, test_datasets=[str(retina_parts[1])])
    np.testing.assert_array_equal(np.sort(by_path.test_idx), np.arange(400, 750))
    by_pathlike = _dm(parts_coll, test_datasets=[retina_parts[1], np.int64(0)])
    np.testing.assert_array_equal(np.sort(by_pathlike.test_idx), np.arange(750))
    by_numpy_count = _dm(parts_coll, test_datasets=np.int64(1))
    np.testing.assert_array_equal(np.sort(by_numpy_count.test_idx), np.arange(750, 1000))
    with pytest.raises(InputError, match="no training file"):
        _dm(parts_coll, test_datasets=3)
    with pytest.raises(InputError, match=">= 0"):
        _dm(parts_coll, test_datasets=-1)
    with pytest.raises(InputError, match="not a file of the collection"):
        _dm(parts_coll, test_datasets=["not/a/file.h5ad"])
    with pytest.raises(InputError, match="out of range"):
        _dm(parts_coll, test_datasets=[5])
    with pytest.raises(InputError, match="number of held-out donors"):
        _dm(parts_coll, split_by="donor", test_datasets=[2])


def _donor_check(dm: DataModule, donors: np.ndarray) -> list[set]:
    sets = [set(donors[idx]) for idx in (dm.train_idx, dm.val_idx, dm.test_idx)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    covered = np.concatenate([dm.train_idx, dm.val_idx, dm.test_idx])
    assert len(covered) == len(donors) and len(np.unique(covered)) == len(donors)
    return sets


def test_donor_split_on_retina_parts(parts_coll):
    dm = _dm(parts_coll, split_by="donor", val_size=0.34, test_datasets=1)
    donors = parts_coll.read_obs(["donor_id"])["donor_id"].astype(str).to_numpy()
    train, val, test = _donor_check(dm, donors)
    assert len(train) == len(val) == len(test) == 1
    assert train | val | test == {"donor0", "donor1", "donor2"}


@pytest.fixture(scope="module")
def wu2020_ensembl(wu2020, tmp_path_factory):
    from scdataloader.io import write_h5ad_atomic
    from scdataloader.preprocess import preprocess

    out = preprocess(wu2020, min_cells=10)
    path = tmp_path_factory.mktemp("wu2020") / "wu2020.h5ad"
    write_h5ad_atomic(out, path)
    return path


def test_donor_split_on_wu2020(wu2020_ensembl):
    dm = DataModule(
        [wu2020_ensembl],
        label_keys=["cluster_orig"],
        split_by="donor",
        donor_key="patient",
        val_size=0.2,
        test_datasets=3,
        batch_size=16,
        max_len=64,
        seed=3,
    )
    donors = dm.collection.read_obs(["patient"])["patient"].astype(str).to_numpy()
    train, val, test = _donor_check(dm, donors)
    assert len(set(donors)) == 14
    assert len(test) == 3 and len(val) == 3 and len(train) == 8
    assert len(dm.classes["cluster_orig"]) == 16
    with pytest.raises(LabelError, match="'nope'.*patient"):
        DataModule(dm.collection, label_keys=["cluster_orig"], split_by="donor", donor_key="nope")


# ----------------------------------------------------------------- metadata


def test_genes_classes_and_hierarchies(parts_coll, retina_full):
    dm = _dm(parts_coll)
    np.testing.assert_array_equal(dm.genes, parts_coll.genes)
    assert set(dm.genes) == set(retina_full.var_names)  # outer join of the three files
    assert list(dm.classes) == KEYS
    leaves = dm.classes[CELL_TYPE]
    assert leaves == list(parts_coll.hierarchies[CELL_TYPE].leaves)
    # ON-bipolar (CL:0000749) is an ancestor of rod bipolar (CL:0000751): not a leaf
    types = set(retina_full.obs[CELL_TYPE].astype(str))
    assert len(types) == 11 and set(leaves) == types - {"CL:0000749"}
    assert dm.hierarchies[CELL_TYPE] is parts_coll.hierarchies[CELL_TYPE]


def test_missing_label_key_names_the_column(retina_parts):
    with pytest.raises(LabelError) as err:
        DataModule(retina_parts, label_keys=[CELL_TYPE, "cell_kind"])
    msg = str(err.value)
    assert "cell_kind" in msg and "donor_id" in msg and CELL_TYPE in msg


def test_label_key_not_in_the_collection(parts_coll):
    with pytest.raises(LabelError, match="tissue_ontology_term_id"):
        DataModule(parts_coll, label_keys=["tissue_ontology_term_id"])


# ----------------------------------------------------------------- loaders


def test_train_batches_have_the_collator_layout(parts_coll):
    dm = _dm(parts_coll, test_datasets=1, train_samples=200)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 7  # ceil(200 / 32)
    assert sum(len(b["index"]) for b in batches) == 200
    b = batches[0]
    assert set(b) == COLLATOR_KEYS
    assert b["x"].shape == (32, 128) and b["genes"].shape == (32, 128)
    assert b["labels"].shape == (32, 1) and b["depth"].shape == (32,)
    index = np.concatenate([x["index"].numpy() for x in batches])
    assert np.isin(index, dm.train_idx).all()
    # the labels are those of the cells drawn
    labels = np.concatenate([x["labels"][:, 0].numpy() for x in batches])
    np.testing.assert_array_equal(labels, parts_coll.labels[index, 0])
    assert len(dm.val_dataloader().dataset) == len(dm.val_idx)
    val = next(iter(dm.val_dataloader()))
    assert np.isin(val["index"].numpy(), dm.val_idx).all()
    test = np.concatenate(_indices(dm.test_dataloader()))
    np.testing.assert_array_equal(np.sort(test), dm.test_idx)


def test_workers_draw_the_same_cells(parts_coll):
    single = _dm(parts_coll, train_samples=200, num_workers=0)
    multi = _dm(parts_coll, train_samples=200, num_workers=2)
    a = np.concatenate(_indices(single.train_dataloader()))
    batches = list(multi.train_dataloader())
    b = np.concatenate([x["index"].numpy() for x in batches])
    assert len(b) == 200 and np.isin(b, multi.train_idx).all()
    np.testing.assert_array_equal(a, b)
    for batch in batches:
        # each worker reads the right cells: x is the cell's counts at the chosen genes
        cells = [parts_coll[int(i)] for i in batch["index"][:2]]
        for row, cell in enumerate(cells):
            np.testing.assert_array_equal(
                batch["x"][row].numpy(), cell["x"][batch["genes"][row].numpy()]
            )
    # the next epoch is a different stream
    c = np.concatenate(_indices(single.train_dataloader()))
    assert not np.array_equal(a, c)


def test_state_dict_resumes_at_the_next_batch(parts_coll):
    dm = _dm(parts_coll, train_samples=320, batch_size=16)
    it = iter(dm.train_dataloader())
    first = [next(it)["index"].numpy() for _ in range(3)]
    state = dm.state_dict()
    following = [next(it)["index"].numpy() for _ in range(2)]

    resumed = _dm(parts_coll, train_samples=320, batch_size=16)
    resumed.load_state_dict(state)
    it2 = iter(resumed.train_dataloader())
    again = [next(it2)["index"].numpy() for _ in range(2)]
    for x, y in zip(following, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not any(np.array_equal(again[0], f) for f in first)

    # a fresh DataModule without the state starts the epoch from the beginning
    fresh = next(iter(_dm(parts_coll, train_samples=320, batch_size=16).train_dataloader()))
    np.testing.assert_array_equal(fresh["index"].numpy(), first[0])

    with pytest.raises(InputError, match="seed"):
        _dm(parts_coll, train_samples=320, batch_size=16, seed=5).load_state_dict(state)


# ----------------------------------------------------------------- Lightning


def test_lightning_fit_runs(parts_coll):
    import lightning.pytorch as pl

    dm = _dm(parts_coll, test_datasets=1, batch_size=16, max_len=256, train_samples=96)
    n_classes = len(parts_coll.hierarchies[CELL_TYPE].labels)

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(256, n_classes)
            self.seen: list[np.ndarray] = []
            self.val_batches = 0
            self.losses: list[float] = []

        def _loss(self, batch):
            logits = self.linear(batch["x"].log1p())
            return torch.nn.functional.cross_entropy(
                logits, batch["labels"][:, 0], ignore_index=-1
            )

        def training_step(self, batch, batch_idx):
            self.seen.append(batch["index"].numpy())
            loss = self._loss(batch)
            self.losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch, batch_idx):
            self.val_batches += 1
            assert np.isin(batch["index"].numpy(), dm.val_idx).all()
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    model = Tiny()
    before = model.linear.weight.detach().clone()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert len(model.seen) == 3 and model.val_batches == 2
    assert np.isin(np.concatenate(model.seen), dm.train_idx).all()
    assert all(np.isfinite(model.losses))
    assert not torch.equal(before, model.linear.weight.detach())
    assert "sampler" in dm.state_dict()
    assert isinstance(trainer.callback_metrics["val_loss"].item(), float)


class _Recorder:
    """A LightningModule class that records the first cell index of each training batch."""

    @staticmethod
    def make(max_len: int):
        import lightning.pytorch as pl

        class Recorder(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(max_len, 1)
                self.seen: list[int] = []

            def training_step(self, batch, batch_idx):
                self.seen.append(int(batch["index"][0]))
                return self.linear(batch["x"].log1p()).mean()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.0)

        return Recorder()


def test_lightning_resume_continues_the_cell_stream(parts_coll, tmp_path):
    """Resuming from a checkpoint in the middle of an epoch, or after the last batch of a
    shortened epoch, continues with exactly the cells the uninterrupted run drew next,
    with DataLoader workers prefetching ahead of training."""
    import lightning.pytorch as pl

    def fit(ckpt_path=None, callbacks=()):
        dm = _dm(parts_coll, batch_size=8, max_len=32, train_samples=80, num_workers=2)
        model = _Recorder.make(32)
        trainer = pl.Trainer(
            max_epochs=2,
            limit_train_batches=6,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=bool(callbacks),
            callbacks=list(callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model.seen

    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"
    )
    full = fit(callbacks=[checkpoint])
    assert len(full) == 12 and full[:6] != full[6:]
    for step in (3, 6):  # mid-epoch; after the last batch of the (limited) first epoch
        resumed = fit(ckpt_path=tmp_path / f"step={step}.ckpt")
        assert resumed == full[step:], step


def test_bad_options(parts_coll):
    with pytest.raises(InputError, match="val_size"):
        _dm(parts_coll, val_size=1.0)
    with pytest.raises(InputError, match="split_by"):
        _dm(parts_coll, split_by="file")
    with pytest.raises(InputError, match="empty"):
        _dm(parts_coll, val_size=0.999, test_datasets=[0, 2])


# ----------------------------------------------------------------- zero genes


def test_zero_genes_reach_every_loader_and_the_state(parts_coll, caplog):
    dm = _dm(parts_coll, test_datasets=1, train_samples=64, zero_genes=32)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        b = next(iter(loader))
        assert b["x"].shape == (32, 128)
        # every retina cell expresses more than 96 genes: exactly 32 zeros per cell
        assert ((b["x"] == 0).sum(1) == 32).all()
        assert (b["x"][:, :96] > 0).all() and b["mask"].all()
        for row in b["genes"]:
            assert len(torch.unique(row)) == 128
    options = {"mode": "random expr", "max_len": 128, "zero_genes": 32}
    assert dm.collator_options == options
    state = dm.state_dict()
    assert state["collator"] == options
    # resuming with other collator options is allowed, with a warning naming both
    other = _dm(parts_coll, test_datasets=1, train_samples=64)
    with caplog.at_level("WARNING", logger="scdataloader.datamodule"):
        other.load_state_dict(state)
    assert "'zero_genes': 32" in caplog.text and "'zero_genes': 0" in caplog.text
    # the default adds none
    b = next(iter(other.train_dataloader()))
    assert (b["x"] > 0).all()


def test_zero_genes_bad_value(parts_coll):
    with pytest.raises(InputError, match="zero_genes"):
        _dm(parts_coll, zero_genes=128)
    with pytest.raises(InputError, match="zero_genes"):
        _dm(parts_coll, zero_genes=-5)
