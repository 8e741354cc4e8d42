"""Lightning DataModule: splits, weighted sampling and collation over a Collection.

Splits:

* test: whole held-out datasets (files), so the test set measures transfer to unseen
  studies; or, with ``split_by="donor"``, whole held-out donors (for tabular work);
* validation: a random share of the remaining cells (or of the remaining donors with
  ``split_by="donor"``);
* train: the rest, drawn with :class:`WeightedSampler` over the label combinations.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch

from ._constants import DEFAULT_LABEL_KEYS, ObsKeys
from .collator import Collator, CollatorMode
from .collection import Collection
from .errors import InputError, LabelError
from .sampler import WeightedSampler

__all__ = ["DataModule"]

logger = logging.getLogger(__name__)


class DataModule(pl.LightningDataModule):
    """Train / validation / test loaders over many AnnData files.

    Parameters
    ----------
    collection
        A :class:`Collection`, or file paths to build one from.
    label_keys
        ``obs`` columns the model predicts (used when building the collection).
    weight_keys
        Columns whose combinations set the sampling weights; default ``label_keys``.
    scale
        The ``s`` of the sampling weight ``s / (count + s)``.
    batch_size
        Cells per batch.
    num_workers
        DataLoader worker processes.
    val_size
        Share of cells (or donors) in the validation split.
    test_datasets
        Held-out files: a number (the last ones) or a list of file indices or paths.
    split_by
        ``"cell"`` (validation by cells, test by whole files) or ``"donor"`` (validation
        and test by whole donors, from ``donor_key``).
    donor_key
        ``obs`` column with the donor ids for ``split_by="donor"``.
    train_samples
        Cells drawn per training epoch (a sub-epoch); default: the training set's size.
    mode, max_len, gene_list
        Collator options (see :class:`Collator`).
    zero_genes
        Positions of each ``"random expr"`` / ``"most expr"`` sequence given to randomly
        drawn unexpressed genes, out of ``max_len`` (see :class:`Collator`): the paper pads
        its pretraining inputs this way so the model learns true zeros from dropouts.
        ``0`` (the default) keeps the sequences of expressed genes only. The collator
        options (``mode``, ``max_len``, ``zero_genes``) are recorded in :meth:`state_dict`,
        hence in Lightning checkpoints.
    seed
        Seed of the splits, the sampler and the collator.
    """

    def __init__(
        self,
        collection: Collection | Sequence[str],
        *,
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        weight_keys: Sequence[str] | None = None,
        scale: float = 50.0,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: float = 0.1,
        test_datasets: int | Sequence[int | str] = 0,
        split_by: Literal["cell", "donor"] = "cell",
        donor_key: str = ObsKeys.DONOR,
        train_samples: int | None = None,
        mode: CollatorMode = "random expr",
        max_len: int = 2200,
        gene_list: Sequence[str] | None = None,
        zero_genes: int = 0,
        seed: int = 42,
    ):
        super().__init__()
        if not isinstance(collection, Collection):
            collection = Collection(list(collection), obs_keys=label_keys)
        self.collection = collection
        missing = [k for k in label_keys if k not in collection.obs_keys]
        if missing:
            raise LabelError(
                f"label_keys {missing} were not loaded by the collection (its obs_keys are "
                f"{collection.obs_keys}); build it with obs_keys including them."
            )
        self.label_keys = list(label_keys)
        self.weight_keys = list(weight_keys) if weight_keys is not None else self.label_keys
        bad = [k for k in self.weight_keys if k not in collection.obs_keys]
        if bad:
            raise LabelError(f"weight_keys {bad} are not among the collection's obs_keys.")
        if not 0 <= val_size < 1:
            raise InputError(f"val_size must be in [0, 1), got {val_size}.")
        if split_by not in ("cell", "donor"):
            raise InputError(f"split_by must be 'cell' or 'donor', not {split_by!r}.")
        self.scale = scale
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_size = float(val_size)
        self.test_datasets = test_datasets
        self.split_by = split_by
        self.donor_key = donor_key
        self.train_samples = train_samples
        self.seed = int(seed)
        self.collator = Collator(
            collection.genes,
            mode=mode,
            max_len=max_len,
            gene_list=gene_list,
            measured=collection.measured_sets,
            measured_index=collection.gene_set_of_file,
            zero_genes=zero_genes,
            seed=seed,
        )
        self.eval_collator = Collator(
            collection.genes,
            mode=mode,
            max_len=max_len,
            gene_list=gene_list,
            measured=collection.measured_sets,
            measured_index=collection.gene_set_of_file,
            zero_genes=zero_genes,
            seed=seed + 1,
        )
        self.train_idx, self.val_idx, self.test_idx = self._split()
        self.sampler: WeightedSampler | None = None
        self._sampler_state: dict | None = None
        logger.info(
            "Splits: %d train, %d validation, %d test cells",
            len(self.train_idx),
            len(self.val_idx),
            len(self.test_idx),
        )

    # --------------------------------------------------------------- metadata

    @property
    def genes(self) -> np.ndarray:
        """The gene space of the batches (Ensembl ids); ``batch['genes']`` indexes it."""
        return self.collection.genes

    @property
    def hierarchies(self) -> dict:
        """Label hierarchy of each label key (leaves, coarse labels, their leaves)."""
        return {k: self.collection.hierarchies[k] for k in self.label_keys}

    @property
    def classes(self) -> dict[str, list[str]]:
        """Leaf labels of each label key: the classes a model predicts."""
        return {k: list(h.leaves) for k, h in self.hierarchies.items()}

    @property
    def organisms(self) -> list[str]:
        return sorted({f.organism for f in self.collection.files if f.organism})

    # --------------------------------------------------------------- splits

    def _test_files(self) -> list[int]:
        n_files = len(self.collection.files)
        spec = self.test_datasets
        if isinstance(spec, numbers.Integral):
            spec = int(spec)
            if spec < 0:
                raise InputError(f"test_datasets must be >= 0, got {spec}.")
            if spec >= n_files and spec > 0:
                raise InputError(f"test_datasets={spec} leaves no training file out of {n_files}.")
            return list(range(n_files - spec, n_files)) if spec else []
        paths = [os.path.abspath(f.path) for f in self.collection.files]
        out = []
        for item in spec:
            if isinstance(item, str | os.PathLike):
                path = os.path.abspath(os.fspath(item))
                if path not in paths:
                    raise InputError(
                        f"test dataset {str(item)!r} is not a file of the collection."
                    )
                out.append(paths.index(path))
            else:
                k = int(item)
                if not 0 <= k < n_files:
                    raise InputError(
                        f"test dataset index {k} is out of range for {n_files} files."
                    )
                out.append(k)
        if len(set(out)) >= n_files:
            raise InputError("Every file is held out for testing: nothing left to train on.")
        return sorted(set(out))

    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        n = len(self.collection)
        if self.split_by == "donor":
            donors = self.collection.read_obs([self.donor_key])[self.donor_key].astype(str)
            unique = np.array(sorted(donors.unique()))
            if len(unique) < 2 and (self.val_size > 0 or self.test_datasets):
                raise InputError(
                    f"split_by='donor' needs several donors; {self.donor_key!r} has {len(unique)}."
                )
            rng.shuffle(unique)
            if not isinstance(self.test_datasets, numbers.Integral) or self.test_datasets < 0:
                raise InputError(
                    "With split_by='donor', test_datasets is the number of held-out donors "
                    f"(an integer >= 0), not {self.test_datasets!r}."
                )
            n_test = int(self.test_datasets)
            n_val = int(round(self.val_size * len(unique)))
            if self.val_size > 0:
                n_val = max(n_val, 1)
            test_donors = set(unique[:n_test])
            val_donors = set(unique[n_test : n_test + n_val])
            values = donors.to_numpy()
            test = np.flatnonzero(np.isin(values, list(test_donors)))
            val = np.flatnonzero(np.isin(values, list(val_donors)))
            train = np.setdiff1d(np.arange(n), np.concatenate([test, val]))
        else:
            files = self._test_files()
            dataset = self.collection.dataset_of_cell
            is_test = np.isin(dataset, files)
            test = np.flatnonzero(is_test)
            rest = np.flatnonzero(~is_test)
            n_val = int(round(self.val_size * len(rest)))
            val = np.sort(rng.choice(rest, n_val, replace=False))
            train = np.setdiff1d(rest, val)
        if len(train) == 0:
            raise InputError("The training split is empty: lower val_size or test_datasets.")
        return train, val, test

    # --------------------------------------------------------------- loaders

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _make_sampler(self) -> WeightedSampler:
        cols = [self.collection.obs_keys.index(k) for k in self.weight_keys]
        labels = self.collection.labels[self.train_idx][:, cols]
        rank, world = self._rank()
        sampler = WeightedSampler(
            labels,
            scale=self.scale,
            num_samples=self.train_samples or len(self.train_idx),
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        if self._sampler_state is not None:
            sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        return sampler

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.sampler is None:
            self.sampler = self._make_sampler()
        subset = torch.utils.data.Subset(self.collection, self.train_idx)
        return self._loader(subset, sampler=self.sampler, collator=self.collator)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(
            torch.utils.data.Subset(self.collection, self.val_idx), collator=self.eval_collator
        )

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(
            torch.utils.data.Subset(self.collection, self.test_idx), collator=self.eval_collator
        )

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.collection, collator=self.eval_collator)

    def _loader(self, dataset, *, collator: Collator, sampler=None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collator,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_close_handles,
        )

    # --------------------------------------------------------------- state

    @property
    def collator_options(self) -> dict[str, Any]:
        """The training collator's options: ``mode``, ``max_len``, ``zero_genes``."""
        c = self.collator
        return {"mode": c.mode, "max_len": c.max_len, "zero_genes": c.zero_genes}

    def state_dict(self) -> dict[str, Any]:
        """Sampler position, saved in Lightning checkpoints.

        During a Lightning fit the position is that of the batches training has consumed:
        the sampler itself runs ahead by the batches that DataLoader workers and Lightning
        prefetch, which a resumed run would otherwise skip.
        """
        state: dict[str, Any] = {"seed": self.seed, "collator": self.collator_options}
        if self.sampler is not None:
            sampler_state = self.sampler.state_dict()
            consumed = self._consumed_in_fit()
            if consumed is not None:
                epoch, batches = consumed
                sampler_state["epoch"] = epoch
                sampler_state["position"] = min(batches * self.batch_size, len(self.sampler))
            state["sampler"] = sampler_state
        return state

    def _consumed_in_fit(self) -> tuple[int, int] | None:
        """(epoch, training batches consumed in it) while a Lightning fit runs, else None."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(trainer.state, "fn", None) != "fit":
            return None
        try:
            epochs = trainer.fit_loop.epoch_progress.current
            batches = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
            done, started = int(epochs.processed), int(epochs.started)
            per_epoch = trainer.num_training_batches
        except AttributeError:  # another Lightning version: fall back on the sampler
            return None
        if done >= started:  # the epoch is over (its end hooks run): the next one starts
            return done, 0
        if batches >= per_epoch:  # its last batch (``limit_train_batches``) was consumed
            return done + 1, 0
        return done, batches

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise InputError(
                f"The checkpoint's data seed {state['seed']} differs from this run's {self.seed}."
            )
        saved = state.get("collator")
        if saved is not None and saved != self.collator_options:
            logger.warning(
                "The checkpoint was trained with collator options %s; this run uses %s.",
                saved,
                self.collator_options,
            )
        if "sampler" in state:
            if self.sampler is not None:
                self.sampler.load_state_dict(state["sampler"])
            else:
                self._sampler_state = state["sampler"]


def _close_handles(worker_id: int) -> None:
    """Give each worker its own file handles (h5py handles must not cross a fork)."""
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if isinstance(dataset, Collection):
        dataset.forget_handles()
