"""Turn cells into fixed-length gene sequences for the model (scPRINT, Methods).

Modes:

``"random expr"``
    ``max_len`` expressed genes drawn at random; a cell with fewer expressed genes
    gets all of them, padded with randomly drawn measured-but-unexpressed genes
    (the paper's pretraining input, ``max_len = 2200``).
``"most expr"``
    the ``max_len`` most expressed genes (ties broken at random), padded the same way.
``"all"``
    every gene of the gene space, in order.
``"genes"``
    a fixed list of genes (``gene_list``), in that order.

Padding only uses genes the cell's dataset measured (``measured``); a cell with fewer
measured genes than ``max_len`` is padded with unmeasured genes, which are flagged in
``mask`` (False) so the model and losses can ignore them.

Unexpressed genes (``zero_genes``, modes ``"random expr"`` and ``"most expr"``): the
paper pads every pretraining sequence with randomly drawn unexpressed genes, so that the
model sees true zeros next to the dropouts of the denoising loss and learns to tell them
apart. With ``zero_genes = N`` the sequence keeps its length ``max_len``: its last ``N``
positions go to measured-but-unexpressed genes drawn at random (unmeasured genes, flagged
in ``mask``, when the cell's dataset measured fewer than ``N`` unexpressed genes) and the
first ``max_len - N`` to expressed genes, chosen as the mode says. A cell with fewer
expressed genes gets all of them and more unexpressed genes, as without the option; a
cell with fewer than ``N`` zero genes at all gets more expressed genes. ``N = 0`` (the
default) gives exactly the sequences of earlier versions. The draws come from the same
generator as the rest of the sequence, so the seeding rules below hold unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .errors import InputError

__all__ = ["Collator", "CollatorMode"]

CollatorMode = Literal["random expr", "most expr", "all", "genes"]


class Collator:
    """Collate Collection items into a batch of gene sequences.

    Parameters
    ----------
    genes
        The gene space of the items (e.g. ``Collection.genes``).
    mode
        See the module docstring.
    max_len
        Genes per cell for ``"random expr"`` and ``"most expr"``.
    gene_list
        Genes (ids of ``genes``) for ``mode="genes"``.
    measured
        Boolean array (n_rows, n_genes): which genes each dataset measured (e.g.
        ``Collection.measured``). Default: every gene measured everywhere.
    measured_index
        Row of ``measured`` for each dataset, when datasets share rows (e.g.
        ``Collection.measured_sets`` with ``Collection.gene_set_of_file``); default: the
        dataset index itself.
    seed
        Seed of the gene draws. The draws of a batch are a function of the seed and the
        batch's cells (their ``index``), so they do not depend on DataLoader workers,
        prefetching or where a run was resumed. ``None``: fresh randomness at every call.
    seed_per_cell
        Draw each cell's genes from its own generator, seeded by ``(seed, index)``: a
        cell then gets the same genes whatever batch it is in (for inference; in training
        a cell drawn twice should show different genes, the default).
    zero_genes
        Positions of each sequence given to randomly drawn unexpressed genes in the
        ``"random expr"`` and ``"most expr"`` modes, taken from ``max_len`` (which stays
        the sequence length); see the module docstring. An integer in ``[0, max_len)``;
        ignored by the other modes.

    Returns (on call)
    -----------------
    A dict of tensors: ``x`` (B, L) float32 counts, ``genes`` (B, L) int64 indices into
    ``genes``, ``mask`` (B, L) bool (False for unmeasured padding), ``depth`` (B,)
    total counts of the whole cell, ``labels`` (B, n_keys) int64 with -1 for unknown,
    ``dataset`` (B,) int64, ``index`` (B,) int64.
    """

    def __init__(
        self,
        genes: Sequence[str],
        *,
        mode: CollatorMode = "random expr",
        max_len: int = 2200,
        gene_list: Sequence[str] | None = None,
        measured: np.ndarray | None = None,
        measured_index: np.ndarray | None = None,
        seed: int | None = 0,
        seed_per_cell: bool = False,
        zero_genes: int = 0,
    ):
        if mode not in ("random expr", "most expr", "all", "genes"):
            raise InputError(
                f"Unknown collator mode {mode!r}: use 'random expr', 'most expr', 'all' or "
                "'genes'."
            )
        self.genes = np.asarray(genes).astype(str)
        self.mode = mode
        self.max_len = int(max_len)
        if self.max_len < 1:
            raise InputError("max_len must be >= 1.")
        if isinstance(zero_genes, bool) or not isinstance(zero_genes, numbers.Integral):
            raise InputError(
                f"zero_genes must be an integer (unexpressed genes per sequence), got "
                f"{zero_genes!r}."
            )
        if not 0 <= int(zero_genes) < self.max_len:
            raise InputError(
                f"zero_genes={zero_genes} must be >= 0 and below max_len={self.max_len}: "
                "the unexpressed genes take part of the sequence, which needs room for "
                "expressed genes."
            )
        self.zero_genes = int(zero_genes)
        self.gene_positions: np.ndarray | None = None
        if mode == "genes":
            if gene_list is None or len(gene_list) == 0:
                raise InputError("mode='genes' needs a non-empty gene_list.")
            index = {g: i for i, g in enumerate(self.genes)}
            missing = [g for g in gene_list if g not in index]
            if missing:
                raise InputError(
                    f"{len(missing)} genes of gene_list are not in the gene space "
                    f"(e.g. {', '.join(missing[:5])})."
                )
            self.gene_positions = np.array([index[g] for g in gene_list], dtype=np.int64)
        if measured is not None:
            measured = np.asarray(measured, dtype=bool)
            if measured.ndim != 2 or measured.shape[1] != len(self.genes):
                raise InputError(
                    f"measured must be (n_datasets, {len(self.genes)}), got {measured.shape}."
                )
        self.measured = measured
        self.measured_index = None if measured_index is None else np.asarray(measured_index)
        self.seed = seed
        self.seed_per_cell = bool(seed_per_cell)

    @property
    def length(self) -> int:
        """Sequence length of the batches."""
        if self.mode == "all":
            return len(self.genes)
        if self.mode == "genes":
            return len(self.gene_positions)
        return self.max_len

    def _batch_generator(self, items: Sequence[dict]) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        cells = [int(it.get("index", -1)) + 1 for it in items]  # SeedSequence wants >= 0
        return np.random.default_rng([int(self.seed), len(cells), *cells])

    def _measured_of(self, dataset: int) -> np.ndarray | None:
        if self.measured is None:
            return None
        row = dataset if self.measured_index is None else int(self.measured_index[dataset])
        return self.measured[row]

    def _select(self, x: np.ndarray, measured: np.ndarray | None, rng) -> np.ndarray:
        """Gene positions for one cell in the random / most expressed modes."""
        n = len(x)
        expressed = np.flatnonzero(x > 0)
        L = min(self.max_len, n)
        # room for expressed genes: all but the unexpressed ones the cell can give
        E = L - min(self.zero_genes, n - len(expressed))
        if len(expressed) >= E:
            if self.mode == "random expr":
                chosen = rng.choice(expressed, E, replace=False)
            else:
                # most expressed, ties broken at random: sort by (-x, random key)
                keys = rng.random(len(expressed))
                chosen = expressed[np.lexsort((keys, -x[expressed]))[:E]]
            if E == L:
                return chosen
            return np.concatenate([chosen, self._zeros(x, measured, L - E, rng)])
        if self.mode == "random expr":
            chosen = rng.permutation(expressed)
        else:
            keys = rng.random(len(expressed))
            chosen = expressed[np.lexsort((keys, -x[expressed]))]
        return np.concatenate([chosen, self._zeros(x, measured, L - len(chosen), rng)])

    @staticmethod
    def _zeros(x: np.ndarray, measured: np.ndarray | None, need: int, rng) -> np.ndarray:
        """``need`` distinct unexpressed genes drawn at random: measured ones first, then
        unmeasured ones (flagged in ``mask``) when the measured ones run out."""
        zero = x == 0
        if measured is not None:
            pool = np.flatnonzero(zero & measured)
            if len(pool) < need:  # not enough measured zeros: unmeasured genes too
                extra = np.flatnonzero(zero & ~measured)
                return np.concatenate(
                    [rng.permutation(pool), rng.permutation(extra)[: need - len(pool)]]
                )
        else:
            pool = np.flatnonzero(zero)
        return rng.choice(pool, need, replace=False)

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise InputError("Cannot collate an empty batch.")
        rng = self._batch_generator(items)
        B, L = len(items), self.length
        if self.mode == "random expr" or self.mode == "most expr":
            L = min(L, len(self.genes))
        x = np.zeros((B, L), dtype=np.float32)
        pos = np.zeros((B, L), dtype=np.int64)
        mask = np.ones((B, L), dtype=bool)
        for b, item in enumerate(items):
            cell = np.asarray(item["x"], dtype=np.float32)
            if cell.shape[0] != len(self.genes):
                raise InputError(
                    f"Item has {cell.shape[0]} genes; the collator expects {len(self.genes)}."
                )
            measured = self._measured_of(int(item.get("dataset", 0)))
            if self.mode == "all":
                sel = np.arange(len(self.genes))
            elif self.mode == "genes":
                sel = self.gene_positions
            else:
                cell_rng = rng
                if self.seed_per_cell and self.seed is not None:
                    cell_rng = np.random.default_rng(
                        [int(self.seed), int(item.get("index", -1)) + 1]
                    )
                sel = self._select(cell, measured, cell_rng)
            pos[b] = sel
            x[b] = cell[sel]
            if measured is not None:
                mask[b] = measured[sel]
        labels = np.stack(
            [np.atleast_1d(np.asarray(it.get("labels", []), np.int64)) for it in items]
        )
        depth = np.array(
            [float(it["depth"]) if "depth" in it else float(np.sum(it["x"])) for it in items],
            dtype=np.float32,
        )
        return {
            "x": torch.from_numpy(x),
            "genes": torch.from_numpy(pos),
            "mask": torch.from_numpy(mask),
            "depth": torch.from_numpy(depth),
            "labels": torch.from_numpy(labels),
            "dataset": torch.tensor([int(it.get("dataset", 0)) for it in items]),
            "index": torch.tensor([int(it.get("index", -1)) for it in items]),
        }
