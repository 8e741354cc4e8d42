"""Weighted random sampling of cells over label combinations (scPRINT, Methods).

Each cell is drawn with probability proportional to ``scale / (count + scale)``, where
``count`` is the number of cells sharing its combination of labels: with ``scale = 50``
the rarest combinations are sampled about 50 times less often than the commonest
ones, instead of ``1 / count`` (uniform over combinations) or ``1`` (uniform over
cells). Draws are with replacement.

How draws are made
------------------
A draw picks a label combination ``g`` with probability
``n_g * scale / (n_g + scale) / Z`` and then one of its ``n_g`` cells uniformly, which
gives every cell exactly the probability in :attr:`WeightedSampler.weights`. Draws come
in blocks of ``block_size``; within a block the number of draws of each combination is
allocated by systematic sampling (one uniform offset, evenly spaced points on the
cumulative probabilities), so a combination's count in a block is within one draw of its
expectation, and the block is then shuffled. Every draw keeps its exact marginal
probability; only the variance of the per-combination counts shrinks. Pass
``stratified=False`` for independent draws.

Streams
-------
The stream is a pure function of ``(seed, epoch, rank, block)``: every rank draws its own
``num_samples // world_size`` (rounded up) cells from an independent random stream
(``numpy.random.SeedSequence`` spawn keys), the same on every run; :meth:`set_epoch`
moves to a new stream, and :meth:`state_dict` / :meth:`load_state_dict` resume in the
middle of an epoch at the exact next draw, without replaying earlier blocks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["WeightedSampler", "label_combinations"]


def label_combinations(labels) -> np.ndarray:
    """Index of each cell's label combination (0..n_combinations-1).

    Parameters
    ----------
    labels
        Array-like of shape (n_cells,) or (n_cells, n_keys), or a DataFrame; any value
        type (unknown labels are a value like any other).
    """
    if isinstance(labels, pd.Series):
        return pd.factorize(labels, use_na_sentinel=False)[0]
    if isinstance(labels, pd.DataFrame):
        frame = labels
    else:
        arr = np.asarray(labels)
        if arr.ndim == 1:
            return pd.factorize(arr, use_na_sentinel=False)[0]
        if arr.ndim != 2:
            raise ValueError(f"labels must be 1-D or 2-D, got shape {arr.shape}.")
        frame = pd.DataFrame(arr)
    if frame.shape[1] == 0:
        return np.zeros(len(frame), dtype=np.int64)
    codes = [
        pd.factorize(frame.iloc[:, j], use_na_sentinel=False)[0] for j in range(frame.shape[1])
    ]
    return pd.factorize(pd.MultiIndex.from_arrays(codes))[0]


class WeightedSampler(torch.utils.data.Sampler[int]):
    """Sample cells with replacement, weighting rare label combinations up.

    Parameters
    ----------
    labels
        One label per cell, or several (columns of a 2-D array or DataFrame); cells with
        the same values in every column form a combination.
    scale
        The ``s`` of ``s / (count + s)``; the paper uses 50. ``float("inf")`` samples
        cells uniformly; 0 is not allowed.
    num_samples
        Draws per epoch over all ranks (default: the number of cells).
    seed
        Seed of the streams.
    rank, world_size
        This process's rank and the number of ranks; each rank draws
        ``ceil(num_samples / world_size)`` cells from its own stream.
    block_size
        Draws per block (see the module docstring).
    stratified
        Allocate draws per combination within a block by systematic sampling; False
        draws independently.
    """

    def __init__(
        self,
        labels,
        *,
        scale: float = 50.0,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        block_size: int = 2**16,
        stratified: bool = True,
    ):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}.")
        groups = label_combinations(labels).astype(np.int64)
        if len(groups) == 0:
            raise ValueError("No cells to sample from.")
        self.scale = float(scale)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.block_size = int(block_size)
        self.stratified = bool(stratified)
        self.num_samples = int(num_samples) if num_samples is not None else len(groups)
        if self.num_samples < 1:
            raise ValueError("num_samples must be positive.")
        self.epoch = 0
        self._position = 0  # draws already yielded in this epoch (this rank)
        self._restored = False  # a loaded position not yet iterated from
        self.groups = groups
        counts = np.bincount(groups)
        self.group_counts = counts
        per_cell = 1.0 if np.isinf(self.scale) else self.scale / (counts + self.scale)
        group_mass = counts * per_cell
        self.group_probs = group_mass / group_mass.sum()
        # cells sorted by group: group g's cells are _members[_starts[g]:_starts[g+1]]
        self._members = np.argsort(groups, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    # ------------------------------------------------------------------ weights

    @property
    def weights(self) -> np.ndarray:
        """Probability of each cell at every draw (sums to 1)."""
        return self.group_probs[self.groups] / self.group_counts[self.groups]

    @property
    def n_combinations(self) -> int:
        return len(self.group_counts)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    # ------------------------------------------------------------------ drawing

    def _block(self, block: int, size: int) -> np.ndarray:
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(self.epoch, self.rank, block))
        )
        if self.stratified:
            cum = np.cumsum(self.group_probs)
            cum[-1] = 1.0
            points = (rng.random() + np.arange(size)) / size
            per_group = np.bincount(np.searchsorted(cum, points, side="right"), minlength=len(cum))
            group_of_draw = np.repeat(np.arange(len(cum)), per_group)
            rng.shuffle(group_of_draw)
        else:
            group_of_draw = rng.choice(len(self.group_probs), size=size, p=self.group_probs)
        offsets = np.floor(rng.random(size) * self.group_counts[group_of_draw]).astype(np.int64)
        return self._members[self._starts[group_of_draw] + offsets]

    def __iter__(self) -> Iterator[int]:
        self._restored = False
        total = len(self)
        position = self._position
        while position < total:
            block, start = divmod(position, self.block_size)
            size = min(self.block_size, total - block * self.block_size)
            cells = self._block(block, size)
            for cell in cells[start:]:
                position += 1
                self._position = position
                yield int(cell)
        # epoch finished: the next iteration starts the next epoch's stream
        self._position = 0
        self.epoch += 1

    def draw(self, n: int | None = None) -> np.ndarray:
        """The next ``n`` draws of this epoch as an array (default: the rest of it)."""
        total = len(self)
        n = total - self._position if n is None else min(n, total - self._position)
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            block, start = divmod(self._position, self.block_size)
            size = min(self.block_size, total - block * self.block_size)
            cells = self._block(block, size)[start:]
            take = min(len(cells), n - filled)
            out[filled : filled + take] = cells[:take]
            filled += take
            self._position += take
        return out

    # ------------------------------------------------------------------ state

    def set_epoch(self, epoch: int) -> None:
        """Start the stream of ``epoch`` from its beginning.

        A position restored by :meth:`load_state_dict` for this same epoch is kept:
        Lightning calls ``set_epoch`` at the start of the epoch a run resumes in.
        """
        keep = self._restored and int(epoch) == self.epoch
        self._restored = False
        if not keep:
            self.epoch = int(epoch)
            self._position = 0

    def state_dict(self) -> dict[str, Any]:
        """What is needed to resume at the next draw."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._position,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
            "n_cells": len(self.groups),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (same labels and seed).

        A state saved with another number of ranks (a 2-process run resumed in 1
        process) is accepted with a warning: this rank goes on with its own stream from
        the saved position, which is the same stream as before for rank 0 (draws depend
        on ``(seed, epoch, rank, block)``, not on the number of ranks; only the epoch's
        last, shorter block differs), but the cells the missing ranks would still have
        drawn in this epoch are not drawn, and each rank's epoch has its new length.
        """
        if state["n_cells"] != len(self.groups) or state["num_samples"] != self.num_samples:
            raise ValueError(
                "The saved sampler state was made for "
                f"{state['n_cells']} cells / {state['num_samples']} samples, not "
                f"{len(self.groups)} / {self.num_samples}: the data changed."
            )
        position = int(state["position"])
        if state["world_size"] != self.world_size:
            warnings.warn(
                f"The saved sampler state was made with {state['world_size']} ranks, this run "
                f"has {self.world_size}: rank {self.rank} resumes its own stream at the saved "
                "position; the draws the other ranks had left in this epoch are not made.",
                stacklevel=2,
            )
            position = min(position, len(self))
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._position = position
        self._restored = True
