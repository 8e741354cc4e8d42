"""kNN-smoothing 2 of the denoising benchmark (``benchmarks/science/knn_smoothing.py``).

``benchmarks/`` is not a package, so the module (and the benchmark's helpers) are loaded
from their file paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _science import load_science
from scipy.stats import spearmanr

knn = load_science("_science_knn_smoothing", "knn_smoothing.py")
bench = load_science("_science_denoise", "denoise.py")


@pytest.fixture(scope="module")
def retina_pair(retina_full):
    """300 retina cells x 3,000 genes: full depth and 30% binomially thinned.

    The genes are the benchmark's choice on this subset: the most variable of the thinned
    counts (on the most expressed genes alone, where thinning loses little, smoothing
    over neighbours of other cell types can lower the correlation instead).
    """
    full = retina_full.X.tocsr()[:300].astype(np.float32)
    noisy = bench.binomial_thin(full, 0.3, seed=0)
    genes = bench.variable_genes(noisy, 3000)
    return full[:, genes].toarray(), noisy[:, genes]


def test_k0_returns_the_input(retina_pair):
    _, noisy = retina_pair
    out = knn.knn_smoothing(noisy, 0)
    np.testing.assert_array_equal(out, noisy.toarray())


def test_shape_dtype_and_neighbourhood_sums(retina_pair):
    _, noisy = retina_pair
    x = noisy.toarray()
    out = knn.knn_smoothing(noisy, 3, seed=0)
    assert out.shape == x.shape
    assert out.dtype == np.float64
    # each row sums the raw counts of the cell itself and of 3 other cells
    assert np.all(out >= x)
    assert np.all(out == np.rint(out))
    assert np.all(out.sum(axis=1) > x.sum(axis=1))


def test_deterministic_for_a_seed(retina_pair):
    _, noisy = retina_pair
    a = knn.knn_smoothing(noisy, 7, seed=3)
    b = knn.knn_smoothing(noisy.toarray(), 7, seed=3)
    np.testing.assert_array_equal(a, b)


def test_one_step_matches_a_direct_computation(retina_pair):
    """k = 1: one step, each cell plus its nearest cell in PCA space (no dithering)."""
    from sklearn.decomposition import PCA

    _, noisy = retina_pair
    x = noisy.toarray().astype(np.float64)
    out = knn.knn_smoothing(x, 1, d=10, dither=0.0)
    totals = x.sum(axis=1)
    y = x * (np.median(totals) / totals)[:, None]
    pcs = PCA(n_components=10, svd_solver="full").fit_transform(np.sqrt(y) + np.sqrt(y + 1))
    dist = ((pcs[:, None, :] - pcs[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(axis=1)
    np.testing.assert_allclose(out, x + x[nearest])


def test_smoothing_brings_thinned_cells_closer_to_full_depth(retina_pair):
    full, noisy = retina_pair
    before = np.nanmean(bench.spearman_per_cell(noisy.toarray(), full))
    after = np.nanmean(bench.spearman_per_cell(knn.knn_smoothing(noisy, 3, seed=0), full))
    assert after > before + 0.015, (before, after)  # measured: 0.595 -> 0.627


def test_spearman_per_cell_matches_scipy(retina_pair):
    full, noisy = retina_pair
    pred = noisy.toarray()
    rho = bench.spearman_per_cell(pred[:5], full[:5])
    for i in range(5):
        expressed = full[i] > 0
        assert rho[i] == pytest.approx(spearmanr(pred[i, expressed], full[i, expressed])[0])


def test_binomial_thinning_keeps_the_expected_share(retina_pair):
    full, noisy = retina_pair
    assert sp.issparse(noisy)
    assert np.all(noisy.toarray() <= full)
    assert noisy.sum() / full.sum() == pytest.approx(0.3, abs=0.01)


def test_rejects_bad_k(retina_pair):
    _, noisy = retina_pair
    with pytest.raises(ValueError, match="k must be"):
        knn.knn_smoothing(noisy, -1)
    with pytest.raises(ValueError, match="more than"):
        knn.knn_smoothing(noisy, noisy.shape[0])
