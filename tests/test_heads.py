"""Tests of scprint.tasks.heads: ridge-based selection of attention heads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import torch

try:
    from scprint.tasks import heads as H
except ImportError:  # scprint/tasks/__init__.py not written (or not importable) yet
    _PATH = Path(__file__).resolve().parents[1] / "scprint" / "tasks" / "heads.py"
    _SPEC = importlib.util.spec_from_file_location("_scprint_tasks_heads", _PATH)
    H = importlib.util.module_from_spec(_SPEC)
    sys.modules[_SPEC.name] = H  # dataclasses look the module up by name
    _SPEC.loader.exec_module(H)

HeadSelection = H.HeadSelection
aggregate_heads = H.aggregate_heads
average_precision = H.average_precision
fit_nonnegative_ridge = H.fit_nonnegative_ridge
select_heads = H.select_heads

N_GENES, N_HEADS, INFORMATIVE = 120, 16, (3, 11)


def planted(
    seed: int, amp: float = 1.0, density: float = 0.05, n_genes: int = N_GENES
) -> tuple[np.ndarray, np.ndarray]:
    """Heads of uniform positive noise; the INFORMATIVE ones get ``amp`` on a random truth."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n_genes, n_genes)) < density  # (G, G)
    np.fill_diagonal(truth, False)
    networks = rng.random((N_HEADS, n_genes, n_genes))  # (n_heads, G, G)
    for h in INFORMATIVE:
        networks[h] += amp * truth
    return networks, truth


# --------------------------------------------------------------------------------------------
# selection on a planted truth


@pytest.mark.parametrize("seed", range(5))
def test_selects_exactly_the_informative_heads(seed: int) -> None:
    networks, truth = planted(seed)
    res = select_heads(networks, truth, seed=seed)
    assert isinstance(res, HeadSelection)
    assert res.heads == INFORMATIVE
    assert res.coef.shape == (N_HEADS,)
    assert np.all(res.coef >= 0)
    others = np.setdiff1d(np.arange(N_HEADS), INFORMATIVE)
    assert np.all(res.coef[others] == 0)
    assert res.test_auprc > res.test_auprc_mean_of_all_heads
    assert res.train_auprc > 0.9 and res.test_auprc_classifier > 0.9
    # balanced: as many non-edges as edges, 20 % of each held out
    n_pos = int(truth.sum())
    assert res.n_train_positive + res.n_test_positive == n_pos
    assert res.n_train + res.n_test == 2 * n_pos
    assert res.n_test_positive == int(np.ceil(0.2 * n_pos))


def test_deterministic_with_the_seed() -> None:
    networks, truth = planted(0, amp=0.3)
    a = select_heads(networks, truth, seed=7)
    b = select_heads(networks, truth, seed=7)
    c = select_heads(networks, truth, seed=8)
    assert a.heads == b.heads
    np.testing.assert_array_equal(a.coef, b.coef)
    assert (a.train_auprc, a.test_auprc, a.test_auprc_mean_of_all_heads) == (
        b.train_auprc,
        b.test_auprc,
        b.test_auprc_mean_of_all_heads,
    )
    assert not np.array_equal(a.coef, c.coef)  # another subsample / split


def test_min_coef_thresholds_the_selection() -> None:
    networks, truth = planted(1)
    res = select_heads(networks, truth)
    assert select_heads(networks, truth, min_coef=float(res.coef.min())).heads == INFORMATIVE
    low = float(res.coef[list(INFORMATIVE)].min())
    assert len(select_heads(networks, truth, min_coef=low).heads) == 1
    with pytest.warns(RuntimeWarning, match="no head"):
        above = select_heads(networks, truth, min_coef=float(res.coef.max()))
    assert above.heads == ()  # strictly above the largest: none


def test_no_informative_head_selects_nothing() -> None:
    networks, truth = planted(2, amp=0.0)
    networks -= 0.5 * truth  # every head anti-informative: lower on the edges
    with pytest.warns(RuntimeWarning, match="no head"):
        res = select_heads(networks, truth)
    assert res.heads == ()
    assert np.all(res.coef == 0)
    assert np.isnan(res.test_auprc) and np.isnan(res.train_auprc)
    assert 0 < res.test_auprc_mean_of_all_heads < 1


def test_unbalanced_and_capped() -> None:
    networks, truth = planted(3)
    n_pairs = N_GENES * (N_GENES - 1)
    # without an intercept, a target dominated by non-edges zeroes every coefficient ...
    with pytest.warns(RuntimeWarning, match="no head"):
        full = select_heads(networks, truth, balance=False)
    assert full.n_train + full.n_test == n_pairs
    assert full.n_train_positive + full.n_test_positive == int(truth.sum())
    # ... which class weights fix
    weighted = select_heads(networks, truth, balance=False, class_weight="balanced")
    assert weighted.heads == INFORMATIVE
    assert weighted.test_auprc > weighted.test_auprc_mean_of_all_heads
    capped = select_heads(networks, truth, balance=False, max_edges=3000, class_weight="balanced")
    assert capped.n_train + capped.n_test == 3000
    assert capped.heads == INFORMATIVE
    # stratified: the edge fraction is kept
    frac = (capped.n_train_positive + capped.n_test_positive) / 3000
    assert abs(frac - truth.sum() / n_pairs) < 0.01
    ratio = select_heads(networks, truth, neg_ratio=3.0, class_weight="balanced")
    assert ratio.n_train + ratio.n_test == 4 * int(truth.sum())
    assert ratio.heads == INFORMATIVE
    with pytest.raises(ValueError, match="class_weight"):
        select_heads(networks, truth, class_weight="auto")


def test_torch_and_sparse_inputs_match_numpy() -> None:
    networks, truth = planted(4)
    ref = select_heads(networks, truth)
    res = select_heads(torch.from_numpy(networks), torch.from_numpy(truth))
    np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-10, atol=0)
    assert res.heads == ref.heads and res.test_auprc == ref.test_auprc
    f32 = select_heads(torch.from_numpy(networks).float(), scipy.sparse.csr_matrix(truth))
    assert f32.heads == ref.heads
    np.testing.assert_allclose(f32.coef, ref.coef, rtol=1e-4)
    # 0/1 integer truth and a sparse truth with explicit zeros and diagonal entries
    sparse = scipy.sparse.csr_matrix(truth.astype(np.int8) + np.eye(N_GENES, dtype=np.int8))
    sparse.data[:5] = 0
    dense = sparse.toarray() != 0
    np.testing.assert_array_equal(
        select_heads(networks, sparse).coef, select_heads(networks, dense).coef
    )


# --------------------------------------------------------------------------------------------
# errors


def test_errors() -> None:
    networks, truth = planted(0)
    with pytest.raises(ValueError, match="shape"):
        select_heads(networks, truth[:-1])
    with pytest.raises(ValueError, match="shape"):
        select_heads(networks, scipy.sparse.csr_matrix(truth[:, :-1]))
    with pytest.raises(ValueError, match=r"\(n_heads, G, G\)"):
        select_heads(networks[0], truth)
    with pytest.raises(ValueError, match="no edge"):
        select_heads(networks, np.eye(N_GENES, dtype=bool))  # diagonal only
    few = np.zeros_like(truth)
    few[0, 1:6] = True
    with pytest.raises(ValueError, match="only 5 edge"):
        select_heads(networks, few)
    bad = networks.copy()
    bad[5, 7, 9] = np.nan
    bad[12, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite.*\[5, 12\]"):
        select_heads(bad, truth)
    with pytest.raises(ValueError, match="non-finite"):
        select_heads(torch.from_numpy(bad), truth)
    huge = networks * 1e306  # finite, but the float64 sum of a head overflows
    H._check_finite(huge)  # the element-wise check clears it
    H._check_finite(torch.from_numpy(huge))
    with pytest.raises(ValueError, match="test_size"):
        select_heads(networks, truth, test_size=1.0)
    with pytest.raises(ValueError, match="no negatives"):
        select_heads(networks, ~np.eye(N_GENES, dtype=bool))


# --------------------------------------------------------------------------------------------
# helpers


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_matches_sklearn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.7)
    y[0] = True
    scores = rng.integers(0, 8, n).astype(float) + 0.5 * y * (seed % 2)  # many ties
    assert average_precision(y, scores) == pytest.approx(
        metrics.average_precision_score(y, scores), abs=1e-12
    )
    cont = rng.standard_normal(n)
    assert average_precision(y.astype(int), cont) == pytest.approx(
        metrics.average_precision_score(y, cont), abs=1e-12
    )


def test_average_precision_edge_cases() -> None:
    assert average_precision([0, 1, 1], [0.1, 0.5, 0.9]) == 1.0
    assert average_precision([1, 1], [3.0, 3.0]) == 1.0
    assert average_precision([1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]) == 0.25  # all tied
    with pytest.raises(ValueError, match="positive"):
        average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        average_precision([0, 1], [0.1])


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 50.0])
def test_ridge_equals_nnls_on_augmented_system(standardize: bool, alpha: float) -> None:
    rng = np.random.default_rng(int(alpha) + standardize)
    x = rng.random((300, 6)) * np.array([1.0, 5.0, 0.1, 2.0, 1.0, 0.5])  # (n, p)
    y = np.where(x[:, 1] + x[:, 3] / 2 + rng.standard_normal(300) > 3.0, 1.0, -1.0)
    scale = x.std(axis=0) if standardize else np.ones(6)
    aug = np.vstack([x / scale, np.sqrt(alpha) * np.eye(6)])
    ref, _ = scipy.optimize.nnls(aug, np.r_[y, np.zeros(6)])
    coef = fit_nonnegative_ridge(x, y, alpha=alpha, standardize=standardize)
    np.testing.assert_allclose(coef, ref / scale, rtol=1e-8, atol=1e-10)
    assert np.all(coef >= 0) and np.any(coef == 0)
    # integer weights act as repeated rows
    reps = rng.integers(0, 4, 300)
    weighted = fit_nonnegative_ridge(
        x, y, alpha=alpha, standardize=False, sample_weight=reps.astype(float)
    )
    rx, ry = np.repeat(x, reps, axis=0), np.repeat(y, reps)
    ref_w, _ = scipy.optimize.nnls(
        np.vstack([rx, np.sqrt(alpha) * np.eye(6)]), np.r_[ry, np.zeros(6)]
    )
    np.testing.assert_allclose(weighted, ref_w, rtol=1e-8, atol=1e-10)


def test_ridge_collinear_without_penalty_falls_back() -> None:
    x = np.repeat(np.linspace(0.1, 1.0, 50)[:, None], 2, axis=1)  # two identical columns
    y = np.where(np.arange(50) > 25, 1.0, -1.0)
    coef = fit_nonnegative_ridge(x, y, alpha=0.0, standardize=False)
    ref, _ = scipy.optimize.nnls(x, y)
    np.testing.assert_allclose(x @ coef, x @ ref, atol=1e-10)


@pytest.mark.parametrize("n_neg", [50, 9000, 14000 - 500])
def test_negative_sampling(n_neg: int) -> None:
    n_genes = 120
    rng = np.random.default_rng(0)
    positives = np.unique(rng.integers(0, n_genes * n_genes, 500))
    positives = positives[positives // n_genes != positives % n_genes]
    n_avail = n_genes * (n_genes - 1) - positives.size
    n_neg = min(n_neg, n_avail)
    neg = H._sample_negatives(positives, n_genes, n_neg, np.random.default_rng(1))
    assert neg.size == n_neg == np.unique(neg).size
    assert np.all(neg // n_genes != neg % n_genes)
    assert not np.isin(neg, positives).any()
    again = H._sample_negatives(positives, n_genes, n_neg, np.random.default_rng(1))
    np.testing.assert_array_equal(neg, again)


# --------------------------------------------------------------------------------------------
# aggregation


def test_aggregate_heads_is_the_plain_mean() -> None:
    networks, _ = planted(0)
    np.testing.assert_allclose(aggregate_heads(networks), networks.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        aggregate_heads(networks, INFORMATIVE), networks[list(INFORMATIVE)].mean(axis=0)
    )
    np.testing.assert_array_equal(aggregate_heads(networks, [4]), networks[4])
    t = torch.from_numpy(networks).float()
    out = aggregate_heads(t, (1, 2, 9))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, t[[1, 2, 9]].mean(dim=0))
    ints = aggregate_heads(np.ones((3, 4, 4), dtype=np.int64), [0, 2])
    assert ints.dtype == np.float64 and np.all(ints == 1.0)
    res = select_heads(networks, planted(0)[1])
    np.testing.assert_allclose(
        aggregate_heads(networks, res.heads), networks[list(INFORMATIVE)].mean(axis=0)
    )


def test_aggregate_heads_errors() -> None:
    networks, _ = planted(0)
    with pytest.raises(ValueError, match="empty"):
        aggregate_heads(networks, [])
    with pytest.raises(ValueError, match="out of range"):
        aggregate_heads(networks, [0, N_HEADS])
    with pytest.raises(ValueError, match="duplicates"):
        aggregate_heads(networks, [1, 1])
    with pytest.raises(ValueError, match=r"\(n_heads, G, G\)"):
        aggregate_heads(networks[0])
