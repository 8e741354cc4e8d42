"""Attention-head selection against a ground-truth gene network (paper, Methods: Heads selection).

scPRINT yields one gene x gene network per attention head (per layer and head,
``softmax(mean_U(Q) mean_U(K)^T / sqrt(d_k))`` over the genes; rows are targets, columns
regulators). To keep the heads that carry a given ground truth, the paper fits "a linear
classifier RidgeClassifier from scikit-learn (with an L2 penalty set to 1, a positivity
constraint on the coefficients, and without an intercept) to classify the ground truth's edges
based on a combination of each head. The classifier converts the target values into {-1, 1} and
then treats the problem as a regression task with mean squared error." and then "Instead of
taking the classifier's output, we directly take the average of the subset of each head
associated with a non-zero coefficient in the classifier without weighting them."

:func:`select_heads` reproduces this without scikit-learn: the samples are off-diagonal gene
pairs ``(i, j)``, the features the per-head scores ``networks[:, i, j]`` and the label
``truth[i, j]`` mapped to {-1, +1}; the non-negative, intercept-free ridge problem

.. math:: \\min_{w \\ge 0} \\lVert X w - y \\rVert^2 + \\alpha \\lVert w \\rVert^2

is solved exactly by non-negative least squares (:func:`scipy.optimize.nnls`).
:func:`aggregate_heads` then averages the selected heads without weights, as the paper does.
:func:`average_precision` is the AUPRC used to report the selection (scikit-learn's
``average_precision_score`` definition).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse

__all__ = [
    "HeadSelection",
    "select_heads",
    "aggregate_heads",
    "average_precision",
    "fit_nonnegative_ridge",
]

_CHUNK = 1 << 16
"""Rows per block when accumulating the Gram matrix (bounds float64 temporaries)."""


@dataclass(frozen=True, eq=False)
class HeadSelection:
    """Outcome of :func:`select_heads`.

    Attributes
    ----------
    heads
        Indices of the selected heads (coefficient ``> min_coef``), ascending.
    coef
        Non-negative ridge coefficient of every head, shape ``(n_heads,)``, on the scale of the
        raw scores (mapped back when the features were standardised).
    train_auprc
        Average precision of the unweighted mean of the selected heads on the training pairs
        (NaN when no head is selected).
    test_auprc
        Average precision of the unweighted mean of the selected heads on the held-out pairs
        (NaN when no head is selected).
    test_auprc_mean_of_all_heads
        Average precision of the unweighted mean of all heads on the held-out pairs, the
        baseline that the selection should beat.
    test_auprc_classifier
        Average precision of the classifier's own output ``X @ coef`` on the held-out pairs
        (NaN when every coefficient is zero).
    n_train
        Number of training pairs.
    n_test
        Number of held-out pairs.
    n_train_positive
        Number of ground-truth edges among the training pairs.
    n_test_positive
        Number of ground-truth edges among the held-out pairs.
    """

    heads: tuple[int, ...]
    coef: np.ndarray
    train_auprc: float
    test_auprc: float
    test_auprc_mean_of_all_heads: float
    test_auprc_classifier: float
    n_train: int
    n_test: int
    n_train_positive: int
    n_test_positive: int


# --------------------------------------------------------------------------------------------
# metrics


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision (area under the precision-recall curve, step-wise).

    Same definition as scikit-learn's ``average_precision_score`` for binary labels:
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order,
    tied scores forming a single threshold.

    Parameters
    ----------
    y_true
        Binary labels (bool or 0/1), shape ``(n,)``.
    y_score
        Scores, higher meaning more likely positive, shape ``(n,)``.

    Returns
    -------
    float
        The average precision, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the shapes differ, a score is not finite, or there is no positive label.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score differ in length: {y.size} vs {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score contains non-finite values")
    y = y.astype(bool)
    if not y.any():
        raise ValueError("average precision is undefined without a positive label")
    order = np.argsort(-s, kind="stable")  # decreasing scores
    s, y = s[order], y[order]
    # last index of every run of tied scores: one threshold per distinct score
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last]  # (n_thresholds,)
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# --------------------------------------------------------------------------------------------
# non-negative ridge


def fit_nonnegative_ridge(
    x: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float = 1.0,
    standardize: bool = True,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Non-negative, intercept-free ridge regression solved exactly.

    Minimises ``||x w - y||^2 + alpha ||w||^2`` subject to ``w >= 0``, the problem of the
    augmented least-squares system ``[[x], [sqrt(alpha) I]] w ~ [y, 0]``. Rather than stacking
    that ``(n + p, p)`` matrix, it is reduced exactly to a ``(p, p)`` one: with the Cholesky
    factor ``L L^T = x^T x + alpha I`` the objective equals ``||L^T w - L^{-1} x^T y||^2`` up to
    a constant, which :func:`scipy.optimize.nnls` solves. The memory then does not grow with
    ``n`` beyond ``x`` itself (the Gram matrix is accumulated block-wise in float64). When the
    Gram matrix is not positive definite (``alpha == 0`` with collinear columns) the augmented
    system is solved directly instead.

    With ``standardize`` every column of ``x`` is divided by its standard deviation (no
    centring, which would act as an intercept) before the fit, so that ``alpha`` penalises
    every column alike whatever the scale of its scores; the coefficients are mapped back,
    ``w = w_std / std``, hence apply to the raw ``x``. Zero-variance columns keep scale 1.
    Positivity and the set of non-zero coefficients are unchanged by this mapping.

    With ``sample_weight`` the squared error is weighted, ``sum_n s_n (x_n w - y_n)^2``, i.e.
    the rows of ``x`` and ``y`` are multiplied by ``sqrt(s_n)`` (the standard deviations used
    by ``standardize`` stay unweighted).

    Parameters
    ----------
    x
        Features, shape ``(n, p)``.
    y
        Targets, shape ``(n,)``.
    alpha
        L2 penalty, ``>= 0``.
    standardize
        Scale the columns of ``x`` by their standard deviation before fitting.
    sample_weight
        Non-negative weight of every row, shape ``(n,)``; all 1 when None.

    Returns
    -------
    numpy.ndarray
        Coefficients ``w >= 0``, shape ``(p,)``, for the unscaled ``x``.
    """
    if alpha < 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            f"expected x of shape (n, p) and y of shape (n,), got {x.shape}, {y.shape}"
        )
    n, p = x.shape
    if sample_weight is None:
        sqrt_w = np.ones(n)
    else:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n,) or not np.all(sample_weight >= 0):
            raise ValueError("sample_weight must be non-negative, of shape (n,)")
        sqrt_w = np.sqrt(sample_weight)
    y = y * sqrt_w

    gram = np.zeros((p, p))  # (p, p)
    xty = np.zeros(p)  # (p,)
    col_sum = np.zeros(p)  # (p,)
    for start in range(0, n, _CHUNK):
        block = x[start : start + _CHUNK].astype(np.float64)  # (b, p)
        col_sum += block.sum(axis=0)
        block *= sqrt_w[start : start + _CHUNK, None]
        gram += block.T @ block
        xty += block.T @ y[start : start + _CHUNK]

    scale = np.ones(p)
    if standardize and n > 1:
        mean = col_sum / n
        sq_dev = np.zeros(p)
        for start in range(0, n, _CHUNK):
            block = x[start : start + _CHUNK].astype(np.float64)
            sq_dev += ((block - mean) ** 2).sum(axis=0)
        std = np.sqrt(sq_dev / n)
        scale = np.where(std > 0, std, 1.0)
    # problem in the scaled variables v = w * scale: x_s = x / scale
    gram_s = gram / np.outer(scale, scale)
    xty_s = xty / scale

    try:
        chol = scipy.linalg.cholesky(gram_s + alpha * np.eye(p), lower=True)  # (p, p)
    except np.linalg.LinAlgError:
        aug = np.vstack([x * sqrt_w[:, None] / scale, math.sqrt(alpha) * np.eye(p)])  # (n + p, p)
        v, _ = scipy.optimize.nnls(aug, np.r_[y, np.zeros(p)])
    else:
        rhs = scipy.linalg.solve_triangular(chol, xty_s, lower=True)  # (p,)
        v, _ = scipy.optimize.nnls(chol.T, rhs)
    return np.maximum(v, 0.0) / scale


# --------------------------------------------------------------------------------------------
# pair sampling


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch") and hasattr(a, "detach")


def _check_networks(networks: Any) -> tuple[int, int]:
    shape = tuple(networks.shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"networks must have shape (n_heads, G, G), got {shape}")
    if shape[0] == 0 or shape[1] < 2:
        raise ValueError(f"networks needs at least one head and two genes, got shape {shape}")
    return shape[0], shape[1]


def _check_finite(networks: Any) -> None:
    """Raise if any score is NaN or infinite (checked one head at a time).

    A finite float64 sum of a head proves all its scores finite (fast path); an infinite or
    NaN sum, which may also come from overflow, triggers the element-wise check.
    """
    torch_input = _is_torch(networks)
    if torch_input:
        import torch
    else:
        networks = np.asarray(networks)
    bad = []
    for h in range(networks.shape[0]):
        head = networks[h]  # (G, G)
        if torch_input:
            ok = bool(torch.isfinite(head.sum(dtype=torch.float64)))
            ok = ok or bool(torch.isfinite(head).all())
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                total = head.sum(dtype=np.float64)
            ok = bool(np.isfinite(total)) or bool(np.isfinite(head).all())
        if not ok:
            bad.append(h)
    if bad:
        raise ValueError(f"networks contain non-finite scores (NaN or inf) in head(s) {bad}")


def _positive_pairs(truth: Any, n_genes: int) -> np.ndarray:
    """Sorted linear indices ``i * G + j`` of the off-diagonal ground-truth edges."""
    if scipy.sparse.issparse(truth):
        if truth.shape != (n_genes, n_genes):
            raise ValueError(
                f"truth has shape {truth.shape}, expected ({n_genes}, {n_genes}) like networks"
            )
        coo = scipy.sparse.coo_matrix(truth)
        coo.sum_duplicates()
        keep = (coo.data != 0) & (coo.row != coo.col)
        lin = coo.row[keep].astype(np.int64) * n_genes + coo.col[keep]
        return _sorted_unique(lin)
    if _is_torch(truth):
        truth = truth.detach().cpu().numpy()
    t = np.asarray(truth)
    if t.shape != (n_genes, n_genes):
        raise ValueError(
            f"truth has shape {t.shape}, expected ({n_genes}, {n_genes}) like networks"
        )
    mask = t != 0  # (G, G)
    np.fill_diagonal(mask, False)
    return np.flatnonzero(mask).astype(np.int64)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; faster than ``np.unique`` on large int arrays)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a


def _sample_negatives(
    positives: np.ndarray, n_genes: int, n_neg: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_neg`` distinct off-diagonal non-edge pairs (linear indices), uniformly at random."""
    n_total = n_genes * n_genes
    n_available = n_total - n_genes - positives.size
    if 2 * n_neg > n_available:
        # dense enough: enumerate (bounded by ~4 * n_neg entries)
        mask = np.ones(n_total, dtype=bool)
        mask[:: n_genes + 1] = False  # diagonal
        mask[positives] = False
        pool = np.flatnonzero(mask)
        if n_neg >= pool.size:
            return rng.permutation(pool)
        return rng.choice(pool, size=n_neg, replace=False)
    # sparse: rejection sampling without enumerating the G^2 pairs
    found = np.empty(0, dtype=np.int64)
    valid_frac = n_available / n_total
    while found.size < n_neg:
        need = n_neg - found.size
        cand = rng.integers(0, n_total, size=int(need / valid_frac * 1.1) + 64, dtype=np.int64)
        cand = cand[cand // n_genes != cand % n_genes]
        pos_idx = np.searchsorted(positives, cand)
        pos_idx[pos_idx == positives.size] = 0
        if positives.size:
            cand = cand[positives[pos_idx] != cand]
        found = _sorted_unique(np.concatenate([found, cand]))
    return rng.choice(found, size=n_neg, replace=False)


def _gather(networks: Any, lin: np.ndarray, n_genes: int) -> np.ndarray:
    """Scores of the pairs ``lin`` for every head, shape ``(n_pairs, n_heads)``."""
    rows, cols = np.divmod(lin, n_genes)
    if _is_torch(networks):
        import torch

        r = torch.as_tensor(rows, device=networks.device)
        c = torch.as_tensor(cols, device=networks.device)
        vals = networks[:, r, c].detach()  # (n_heads, n_pairs)
        if not vals.is_floating_point() or vals.dtype in (torch.float16, torch.bfloat16):
            vals = vals.float()
        return vals.cpu().numpy().T
    vals = np.asarray(networks)[:, rows, cols]  # (n_heads, n_pairs)
    if vals.dtype not in (np.float32, np.float64):
        vals = vals.astype(np.float64)
    return vals.T


def _split_counts(n: int, test_size: float) -> int:
    """Held-out count of a stratum of ``n``: ``ceil(test_size * n)``, kept within [1, n - 1]."""
    return int(min(max(math.ceil(test_size * n), 1), n - 1))


def _mean_auprc(y: np.ndarray, x: np.ndarray, heads: Sequence[int]) -> float:
    if len(heads) == 0:
        return float("nan")
    return average_precision(y, x[:, list(heads)].mean(axis=1))


# --------------------------------------------------------------------------------------------
# public API


def select_heads(
    networks: Any,
    truth: Any,
    *,
    alpha: float = 1.0,
    test_size: float = 0.2,
    balance: bool = True,
    neg_ratio: float = 1.0,
    class_weight: str | None = None,
    seed: int = 0,
    min_coef: float = 0.0,
    max_edges: int = 2_000_000,
    standardize: bool = True,
    min_positives: int = 10,
) -> HeadSelection:
    """Select the attention heads whose networks predict a ground-truth network.

    Samples are the off-diagonal gene pairs ``(i, j)``, features their ``n_heads`` scores
    ``networks[:, i, j]`` and the label ``truth[i, j] != 0``. The labels are mapped to
    {-1, +1}, as scikit-learn's ``RidgeClassifier`` does in the paper, and a non-negative,
    intercept-free ridge regression (:func:`fit_nonnegative_ridge`) is fitted on a stratified
    training split of the pairs. The {-1, +1} coding matters without an intercept: an
    uninformative head whose scores sit on a positive offset can fit the mean of a {0, 1}
    target and be selected as a surrogate intercept, whereas it cannot help fitting a
    (balanced, hence zero-mean) {-1, +1} target and gets a zero coefficient.

    With ``balance`` the non-edges are subsampled (uniformly, seeded) to ``neg_ratio`` times
    the number of edges. This keeps the {-1, +1} target near zero mean: without an intercept,
    a target dominated by non-edges (sparse ground truth, ``balance=False`` or a large
    ``neg_ratio``) drives the coefficients of positive scores to zero, and often no head is
    selected. ``class_weight="balanced"`` reweights the two classes to equal total weight
    instead (as scikit-learn's ``class_weight``), which allows using every pair. The total
    number of pairs is capped at ``max_edges`` (both classes subsampled proportionally), which
    bounds memory at about ``max_edges * n_heads`` floats. All pairs (up to the cap) are used
    without ``balance``.

    Parameters
    ----------
    networks
        Per-head gene networks, shape ``(n_heads, G, G)`` (numpy array or torch tensor, any
        device), rows targets and columns regulators. Every score must be finite.
    truth
        Ground-truth edges, shape ``(G, G)`` in the same gene order and orientation, bool or
        0/1 (non-zero means edge); dense array, torch tensor or scipy sparse matrix. The
        diagonal is ignored.
    alpha
        L2 penalty of the ridge fit (the paper uses 1).
    test_size
        Fraction of the pairs held out, per class (stratified on the label), in ``(0, 1)``.
    balance
        Subsample the non-edges to ``neg_ratio`` times the edges.
    neg_ratio
        Number of non-edges per edge kept with ``balance``.
    class_weight
        ``"balanced"`` to weight each training pair by ``n / (2 n_class)`` in the fit; None for
        unit weights (the paper's setting, with balanced subsampling).
    seed
        Seed of the subsampling and of the split.
    min_coef
        A head is selected when its coefficient (raw-score scale) is strictly above this.
    max_edges
        Cap on the number of pairs used (training plus held-out).
    standardize
        Scale each head's scores by their standard deviation before fitting (see
        :func:`fit_nonnegative_ridge`); it does not affect the unweighted mean of the heads.
    min_positives
        Smallest number of ground-truth edges accepted among the pairs.

    Returns
    -------
    HeadSelection
        The selected heads, every head's coefficient and the AUPRCs of the unweighted mean of
        the selected heads (train and held-out) and of all heads (held-out).

    Raises
    ------
    ValueError
        On a malformed ``networks``, a ``truth`` of another shape, a ground truth with no (or
        fewer than ``min_positives``) off-diagonal edge, no non-edge, non-finite scores or
        out-of-range parameters.
    """
    n_heads, n_genes = _check_networks(networks)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    if not neg_ratio > 0:
        raise ValueError(f"neg_ratio must be > 0, got {neg_ratio}")
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    if max_edges < 4:
        raise ValueError(f"max_edges must be at least 4, got {max_edges}")

    positives = _positive_pairs(truth, n_genes)  # (P,) sorted linear indices
    n_pos_all = positives.size
    n_neg_all = n_genes * (n_genes - 1) - n_pos_all
    if n_pos_all == 0:
        raise ValueError("truth has no edge among the off-diagonal gene pairs")
    if n_pos_all < min_positives:
        raise ValueError(
            f"truth has only {n_pos_all} edge(s) among the off-diagonal gene pairs; at least "
            f"{min_positives} are needed to fit and evaluate the head selection"
        )
    if n_neg_all == 0:
        raise ValueError("truth marks every off-diagonal gene pair as an edge: no negatives")
    _check_finite(networks)

    # how many pairs of each class to use
    n_pos = n_pos_all
    n_neg = min(n_neg_all, math.ceil(neg_ratio * n_pos_all)) if balance else n_neg_all
    n_neg = max(n_neg, 1)
    if n_pos + n_neg > max_edges:
        frac = max_edges / (n_pos + n_neg)
        n_pos = max(int(n_pos * frac), min(n_pos_all, min_positives))
        n_neg = max(max_edges - n_pos, 1)
    if min(n_pos, n_neg) < 2:
        raise ValueError(
            f"need at least 2 pairs of each class to split, got {n_pos} edges and {n_neg} "
            "non-edges"
        )

    rng = np.random.default_rng(seed)
    pos = positives if n_pos == n_pos_all else rng.choice(positives, size=n_pos, replace=False)
    pos = rng.permutation(pos)
    neg = _sample_negatives(positives, n_genes, n_neg, rng)  # already in random order

    n_test_pos, n_test_neg = _split_counts(n_pos, test_size), _split_counts(n_neg, test_size)
    train_lin = np.r_[pos[n_test_pos:], neg[n_test_neg:]]
    test_lin = np.r_[pos[:n_test_pos], neg[:n_test_neg]]
    y_train = np.r_[np.ones(n_pos - n_test_pos, bool), np.zeros(n_neg - n_test_neg, bool)]
    y_test = np.r_[np.ones(n_test_pos, bool), np.zeros(n_test_neg, bool)]

    x_train = _gather(networks, train_lin, n_genes)  # (n_train, n_heads)
    x_test = _gather(networks, test_lin, n_genes)  # (n_test, n_heads)

    target = np.where(y_train, 1.0, -1.0)  # RidgeClassifier's {-1, +1} coding
    weight = None
    if class_weight == "balanced":
        n_tr, n_tr_pos = y_train.size, int(y_train.sum())
        weight = np.where(y_train, n_tr / (2 * n_tr_pos), n_tr / (2 * (n_tr - n_tr_pos)))
    coef = fit_nonnegative_ridge(
        x_train, target, alpha=alpha, standardize=standardize, sample_weight=weight
    )
    heads = tuple(int(h) for h in np.flatnonzero(coef > min_coef))
    if not heads:
        warnings.warn(
            "no head has a coefficient above min_coef: the ground truth is not predicted by "
            "any head (AUPRCs of the selection are NaN)",
            RuntimeWarning,
            stacklevel=2,
        )
    classifier_score = x_test.astype(np.float64) @ coef  # (n_test,)

    return HeadSelection(
        heads=heads,
        coef=coef,
        train_auprc=_mean_auprc(y_train, x_train, heads),
        test_auprc=_mean_auprc(y_test, x_test, heads),
        test_auprc_mean_of_all_heads=_mean_auprc(y_test, x_test, range(n_heads)),
        test_auprc_classifier=(
            average_precision(y_test, classifier_score) if np.any(coef > 0) else float("nan")
        ),
        n_train=int(train_lin.size),
        n_test=int(test_lin.size),
        n_train_positive=int(n_pos - n_test_pos),
        n_test_positive=int(n_test_pos),
    )


def aggregate_heads(networks: Any, heads: Sequence[int] | None = None) -> Any:
    """Unweighted mean of the chosen heads' networks, as the paper aggregates selected heads.

    Parameters
    ----------
    networks
        Per-head gene networks, shape ``(n_heads, G, G)`` (numpy array or torch tensor).
    heads
        Indices of the heads to average (e.g. :attr:`HeadSelection.heads`); all heads when
        None. Must be non-empty, distinct and in ``[0, n_heads)``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The mean network, shape ``(G, G)``, of the input's kind (floating point; integer
        inputs give float64 / float32).
    """
    n_heads, _ = _check_networks(networks)
    idx = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    if not idx:
        raise ValueError("heads is empty: there is no head to aggregate")
    if len(set(idx)) != len(idx):
        raise ValueError(f"heads contains duplicates: {idx}")
    out_of_range = [h for h in idx if not 0 <= h < n_heads]
    if out_of_range:
        raise ValueError(f"head indices {out_of_range} out of range for {n_heads} heads")
    if _is_torch(networks):
        import torch

        dtype = networks.dtype if networks.is_floating_point() else torch.float32
        out = torch.zeros(networks.shape[1:], dtype=dtype, device=networks.device)
    else:
        networks = np.asarray(networks)
        dtype = networks.dtype if np.issubdtype(networks.dtype, np.floating) else np.float64
        out = np.zeros(networks.shape[1:], dtype=dtype)  # (G, G)
    for h in idx:  # one head at a time: no (len(idx), G, G) copy
        out += networks[h]
    out /= len(idx)
    return out
