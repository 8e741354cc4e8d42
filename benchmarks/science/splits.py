"""The cells the science benchmarks hold out from pretraining, and where the model is.

One protocol for every benchmark of ``benchmarks/science/``: the pretraining script
(``pretrain.py``) trains on every real count data set minus the held-out cells below, and
the denoising, classification and embedding benchmarks score on held-out cells only, so
our model is always judged on cells it never saw.

* ``retina`` (1,000 cells): half of each ``cell_type`` (at least one cell of each type
  with two or more cells), drawn with ``seed``: the same 501 cells as
  ``denoise.py --seed 0 --test-frac 0.5``.
* ``wu2020`` (200 T cells, 14 patients): whole patients, drawn with ``seed`` until about
  half of the cells are held out, so that classification can keep its folds by patient.
* ``mouse`` (10x cells): 10% of the cells at random.
* ``mcalla`` (the McCalla et al. hESC cells): nothing held out. The gene-network benchmark
  infers its networks on these cells, which the model has then seen without labels; the
  benchmark reports this as self-supervised fine-tuning on the benchmark's own cells,
  which the protocol allows (GENIE3 also fits on them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "HELD_OUT",
    "group_split",
    "held_out",
    "random_split",
    "science_checkpoint",
    "stratified_split",
]

# data set -> (how, obs column, fraction)
HELD_OUT: dict[str, tuple[str, str | None, float]] = {
    "retina": ("stratified", "cell_type", 0.5),
    "wu2020": ("group", "patient", 0.5),
    "mouse": ("random", None, 0.1),
    "mcalla": ("none", None, 0.0),
}


def stratified_split(labels, test_frac: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out cells: ``test_frac`` of each label, at least one (labels
    with a single cell stay in training)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        n = max(1, round(test_frac * len(idx))) if len(idx) > 1 else 0
        test[rng.choice(idx, size=n, replace=False)] = True
    return test


def group_split(groups, test_frac: float, seed: int) -> np.ndarray:
    """Boolean mask holding out whole groups (patients), taken in a random order until
    at least ``test_frac`` of the cells are held out; at least one group stays in."""
    groups = np.asarray(groups).astype(str)
    names = np.unique(groups)
    if len(names) < 2:
        raise ValueError(f"group_split needs at least 2 groups, got {len(names)}.")
    order = np.random.default_rng(seed).permutation(names)
    test = np.zeros(len(groups), dtype=bool)
    for name in order[:-1]:
        if test.mean() >= test_frac:
            break
        test |= groups == name
    return test


def random_split(n: int, test_frac: float, seed: int) -> np.ndarray:
    """Boolean mask of ``round(test_frac * n)`` cells drawn at random."""
    test = np.zeros(n, dtype=bool)
    k = round(test_frac * n)
    test[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return test


def held_out(dataset: str, obs, seed: int = 0) -> np.ndarray:
    """The held-out mask of ``dataset`` (a key of :data:`HELD_OUT`) given its ``obs``."""
    if dataset not in HELD_OUT:
        raise ValueError(f"Unknown data set {dataset!r}; choose from {sorted(HELD_OUT)}.")
    how, key, frac = HELD_OUT[dataset]
    if key is not None and key not in obs.columns:
        raise KeyError(f"{dataset}: obs has no column {key!r} to split on.")
    if how == "stratified":
        return stratified_split(obs[key].astype(str).to_numpy(), frac, seed)
    if how == "group":
        return group_split(obs[key].to_numpy(), frac, seed)
    if how == "random":
        return random_split(len(obs), frac, seed)
    return np.zeros(len(obs), dtype=bool)


def science_checkpoint() -> Path:
    """Where ``pretrain.py`` writes the science model (``model.ckpt``, with
    ``provenance.json`` and ``held_out.json`` beside it)."""
    from scdataloader.datasets import cache_dir

    return cache_dir() / "science" / "small" / "model.ckpt"
