"""bengrn.baselines: GENIE3 (against scikit-learn forests fitted by hand), GENIE3-TF,
GRNBoost2, correlation and random, on simulated counts with known regulators."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bengrn import GeneNetwork
from bengrn.baselines import (
    BASELINES,
    correlation,
    genie3,
    genie3_tf,
    grnboost2,
    random_network,
)

N_CELLS, N_TF, N_TARGET = 300, 5, 20
TREES = 30


def _simulate(seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """Counts of 5 TFs and 20 targets; target t follows TF t % 5 (sign +/-) plus noise.

    Poisson counts of exp(log-linear) rates; the TFs are highly expressed (little Poisson
    noise), so a target's TF predicts it better than its siblings (targets of that TF)."""
    rng = np.random.default_rng(seed)
    tf_log = rng.normal(4.0, 0.6, (N_CELLS, N_TF))
    true = np.arange(N_TARGET) % N_TF
    sign = np.where(np.arange(N_TARGET) % 2 == 0, 1.0, -1.0)
    t_log = 2.0 + sign * (tf_log[:, true] - 4.0) + rng.normal(0, 0.3, (N_CELLS, N_TARGET))
    counts = rng.poisson(np.exp(np.hstack([tf_log, t_log]))).astype(np.float32)
    ids = [f"ENSG{i:05d}" for i in range(N_TF + N_TARGET)]
    symbols = [f"TF{i}" for i in range(N_TF)] + [f"T{i}" for i in range(N_TARGET)]
    var = pd.DataFrame({"symbol": symbols}, index=ids)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(N_CELLS)])
    return ad.AnnData(counts, obs=obs, var=var), true


@pytest.fixture(scope="module")
def sim() -> tuple[ad.AnnData, np.ndarray]:
    return _simulate()


@pytest.fixture
def adata(sim) -> ad.AnnData:
    return sim[0].copy()


def _lognorm(counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.float64)
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


def _first_regulator_rate(net: GeneNetwork, true: np.ndarray, tf_only: bool) -> float:
    """Fraction of targets whose best-scored regulator is their true TF."""
    m = np.asarray(net.as_target_by_regulator().matrix)[N_TF:]
    if tf_only:
        m = m[:, :N_TF]
    return float(np.mean(m.argmax(axis=1) == true))


TF_SYMBOLS = [f"TF{i}" for i in range(N_TF)]


# ----------------------------------------------------------------- recovery


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: genie3(a, n_trees=TREES, progress=False), id="genie3"),
        pytest.param(
            lambda a: genie3_tf(a, tfs=TF_SYMBOLS, n_trees=TREES, progress=False),
            id="genie3-tf",
        ),
        pytest.param(lambda a: correlation(a), id="pearson"),
        pytest.param(lambda a: correlation(a, method="spearman"), id="spearman"),
    ],
)
def test_recovers_true_regulators(sim, make):
    adata, true = sim
    net = make(adata)
    assert _first_regulator_rate(net, true, tf_only=True) >= 0.9
    if net.method == "genie3-tf":  # only TFs are regulators: the best overall is a TF
        assert _first_regulator_rate(net, true, tf_only=False) >= 0.9


def test_genie3_all_genes_ranks_true_tf_first_among_all(sim):
    adata, true = sim
    net = genie3(adata, n_trees=TREES, progress=False)
    # siblings (targets of the same TF) compete with the TF: most targets still pick it
    assert _first_regulator_rate(net, true, tf_only=False) >= 0.7


def test_random_does_not_recover(sim):
    adata, true = sim
    rates = [
        _first_regulator_rate(random_network(adata, seed=s), true, tf_only=True) for s in range(5)
    ]
    assert np.mean(rates) < 0.5


# ------------------------------------------------------- definition (scikit-learn)


@pytest.mark.parametrize("tree_method", ["rf", "et"])
def test_genie3_row_is_the_forest_importances(sim, tree_method):
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    adata, _ = sim
    net = genie3(adata, n_trees=TREES, tree_method=tree_method, seed=3, progress=False)
    X = _lognorm(adata.X)
    cls = RandomForestRegressor if tree_method == "rf" else ExtraTreesRegressor
    for t in (0, N_TF + 4):  # a TF target (itself left out) and a plain target
        inputs = np.array([j for j in range(adata.n_vars) if j != t])
        y = X[:, t] / X[:, t].std()
        forest = cls(n_estimators=TREES, max_features="sqrt", random_state=3)
        forest.fit(X[:, inputs], y)
        row = np.asarray(net.matrix)[t]
        np.testing.assert_allclose(row[inputs], forest.feature_importances_, rtol=1e-6)
        assert row[t] == 0
        assert row.sum() == pytest.approx(1.0, rel=1e-5)


def test_genie3_tf_row_is_the_forest_importances_over_tfs(sim):
    from sklearn.ensemble import RandomForestRegressor

    adata, _ = sim
    net = genie3_tf(adata, tfs=TF_SYMBOLS, n_trees=TREES, seed=1, progress=False)
    X = _lognorm(adata.X)
    t = N_TF + 7
    y = X[:, t] / X[:, t].std()
    forest = RandomForestRegressor(n_estimators=TREES, max_features="sqrt", random_state=1)
    forest.fit(X[:, :N_TF], y)
    row = np.asarray(net.matrix)[t]
    np.testing.assert_allclose(row[:N_TF], forest.feature_importances_, rtol=1e-6)
    assert not row[N_TF:].any()
    assert net.params["tfs"] == list(adata.var_names[:N_TF])


def test_genie3_raw_importance_is_unnormalised_impurity_decrease(sim):
    from sklearn.ensemble import RandomForestRegressor

    adata, _ = sim
    net = genie3(adata, n_trees=10, importance="raw", genes=adata.var_names[:8], progress=False)
    X = _lognorm(adata.X)[:, :8]  # normalised over all genes, then subset
    t = 6
    inputs = np.array([j for j in range(8) if j != t])
    forest = RandomForestRegressor(n_estimators=10, max_features="sqrt", random_state=0)
    forest.fit(X[:, inputs], X[:, t] / X[:, t].std())
    raw = np.mean([e.tree_.compute_feature_importances(normalize=False) for e in forest], 0)
    np.testing.assert_allclose(np.asarray(net.matrix)[t, inputs], raw, rtol=1e-6)


# ------------------------------------------------------------ network contract


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_gives_a_target_by_regulator_network(adata, name):
    if name == "grnboost2":
        pytest.importorskip("rustscenic")
    kwargs = {
        "genie3": {"n_trees": 5, "progress": False},
        "genie3-tf": {"tfs": TF_SYMBOLS, "n_trees": 5, "progress": False},
        "grnboost2": {"n_estimators": 50},
    }.get(name, {})
    net = BASELINES[name](adata, **kwargs)
    assert isinstance(net, GeneNetwork)
    assert net.orientation == "target_by_regulator"
    assert list(net.genes) == list(adata.var_names)
    assert list(net.var["symbol"]) == list(adata.var["symbol"])
    m = np.asarray(net.matrix)
    assert m.dtype == np.float32 and m.shape == (adata.n_vars, adata.n_vars)
    assert not np.diag(m).any()
    assert np.isfinite(m).all()
    assert net.method == name
    assert isinstance(net.params, dict)


def test_rows_are_targets(sim):
    adata, true = sim
    net = genie3_tf(adata, tfs=TF_SYMBOLS, n_trees=TREES, progress=False)
    m = np.asarray(net.matrix)
    assert not m[:, N_TF:].any()  # non-TF columns: never a regulator
    assert m[N_TF:, :N_TF].any(axis=1).all()  # every target row scores TFs
    top = net.edges(top_k=10)
    assert top["regulator"].isin(adata.var_names[:N_TF]).all()
    # edges read regulator -> target: the best edge of target T0 comes from TF0
    t0 = top.loc[top["target"] == adata.var_names[N_TF]]
    if len(t0):
        assert t0["regulator"].iloc[0] == adata.var_names[true[0]]


def test_genie3_is_deterministic_and_seeded(adata):
    kw = {"n_trees": 10, "progress": False, "genes": adata.var_names[:10]}
    a = genie3(adata, seed=5, **kw).matrix
    b = genie3(adata, seed=5, **kw).matrix
    c = genie3(adata, seed=6, **kw).matrix
    threaded = genie3(adata, seed=5, n_jobs=2, **kw).matrix
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, threaded)
    assert not np.array_equal(a, c)


def test_targets_fit_only_those_rows(adata):
    kw = {"n_trees": 10, "progress": False, "regulators": TF_SYMBOLS}
    full = np.asarray(genie3(adata, **kw).matrix)
    some = genie3(adata, targets=["T3", "ENSG00010"], **kw)
    rows = adata.var_names.get_indexer(["ENSG00008", "ENSG00010"])  # T3, T5
    m = np.asarray(some.matrix)
    np.testing.assert_array_equal(m[rows], full[rows])
    others = np.setdiff1d(np.arange(adata.n_vars), rows)
    assert not m[others].any()


def test_regulators_by_symbol_or_id_agree(adata):
    kw = {"n_trees": 10, "progress": False}
    by_symbol = genie3(adata, regulators=TF_SYMBOLS, **kw)
    by_id = genie3(adata, regulators=list(adata.var_names[:N_TF]), **kw)
    np.testing.assert_array_equal(by_symbol.matrix, by_id.matrix)
    tf = genie3_tf(adata, tfs=TF_SYMBOLS, **kw)
    np.testing.assert_array_equal(tf.matrix, by_id.matrix)


def test_genes_subset(adata):
    genes = ["T1", "TF0", "ENSG00006", "TF2"]  # symbols and ids, any order
    net = genie3(adata, genes=genes, n_trees=5, progress=False)
    want = adata.var_names[[0, 2, 6]]  # TF0, TF2, T1 in adata order, each once
    assert list(net.genes) == list(want)
    assert list(net.var["symbol"]) == ["TF0", "TF2", "T1"]
    assert net.matrix.shape == (3, 3)
    with pytest.raises(ValueError, match="regulators not found"):
        genie3(adata, genes=genes, regulators=["TF4"], n_trees=5, progress=False)


def test_sparse_and_layer_inputs_match_dense(adata):
    kw = {"n_trees": 5, "progress": False, "genes": adata.var_names[:8]}
    dense = genie3(adata, **kw).matrix
    sparse = adata.copy()
    sparse.X = sp.csr_matrix(sparse.X)
    np.testing.assert_array_equal(genie3(sparse, **kw).matrix, dense)
    layered = adata.copy()
    layered.layers["counts"] = layered.X.copy()
    layered.X = _lognorm(layered.X)  # float64, as normalize=True computes it
    np.testing.assert_array_equal(genie3(layered, layer="counts", **kw).matrix, dense)
    # normalize=False takes log-normalised values as they are
    np.testing.assert_array_equal(genie3(layered, normalize=False, **kw).matrix, dense)


def test_zero_variance_target_gets_zero_row(adata):
    adata.X[:, 7] = 0.0
    net = genie3(adata, n_trees=5, progress=False, genes=adata.var_names[:10])
    m = np.asarray(net.matrix)
    assert not m[7].any()
    assert not m[:, 7].any()  # a constant regulator is never split on
    assert m[8].any()


# ------------------------------------------------------------------------ errors


def test_nan_negative_and_empty_cells_are_refused(adata):
    bad = adata.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        genie3(bad, progress=False)
    bad = adata.copy()
    bad.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        correlation(bad)
    bad = adata.copy()
    bad.X[3] = 0
    with pytest.raises(ValueError, match="no counts"):
        correlation(bad)
    with pytest.raises(ValueError, match="empty"):
        correlation(adata[:0].copy())


def test_log_data_with_normalize_true_is_refused(adata):
    adata.X = _lognorm(adata.X).astype(np.float32)
    with pytest.raises(ValueError, match="normalize=False"):
        genie3(adata, progress=False)
    assert correlation(adata, normalize=False).n_genes == adata.n_vars


def test_unknown_genes_are_listed(adata):
    with pytest.raises(ValueError, match="2 genes not found.*'NOPE1', 'NOPE2'"):
        correlation(adata, genes=["TF0", "NOPE1", "NOPE2"])
    with pytest.raises(ValueError, match="regulators not found.*'XX'"):
        genie3(adata, regulators=["TF0", "XX"], progress=False)
    with pytest.raises(ValueError, match="targets not found"):
        genie3(adata, targets=["YY"], progress=False)
    with pytest.raises(ValueError, match="tree_method"):
        genie3(adata, tree_method="gbm", progress=False)


def test_genie3_tf_without_tfs_is_refused(adata):
    with pytest.raises(ValueError, match="none of the 2 TFs"):
        genie3_tf(adata, tfs=["SOX2", "POU5F1"])
    with pytest.raises(TypeError, match="tfs="):
        genie3_tf(adata, regulators=["TF0"])


def test_genie3_tf_keeps_expressed_tfs_only(adata):
    adata.X[:, 1] = 0  # TF1 never expressed
    net = genie3_tf(adata, tfs=TF_SYMBOLS, n_trees=5, progress=False)
    assert "ENSG00001" not in net.params["tfs"]
    assert len(net.params["tfs"]) == N_TF - 1
    assert not np.asarray(net.matrix)[:, 1].any()


# ---------------------------------------------------------- correlation, random


def test_correlation_matches_numpy_and_scipy(adata):
    from scipy.stats import spearmanr

    X = _lognorm(adata.X)
    want = np.abs(np.corrcoef(X, rowvar=False))
    np.fill_diagonal(want, 0)
    np.testing.assert_allclose(correlation(adata).matrix, want, atol=1e-5)
    signed = correlation(adata, absolute=False).matrix
    assert (np.asarray(signed) < 0).any()
    rho = np.abs(spearmanr(X).statistic)
    np.fill_diagonal(rho, 0)
    np.testing.assert_allclose(correlation(adata, method="spearman").matrix, rho, atol=1e-5)


def test_correlation_regulators_and_zero_variance(adata):
    adata.X[:, 9] = 0
    net = correlation(adata, regulators=["TF0", "TF1"])
    m = np.asarray(net.matrix)
    assert not m[:, 2:].any()
    assert m[:, :2].any()
    full = np.asarray(correlation(adata).matrix)
    assert not full[9].any() and not full[:, 9].any()


def test_random_network(adata):
    net = random_network(adata, seed=1)
    m = np.asarray(net.matrix)
    off = m[~np.eye(len(m), dtype=bool)]
    assert (off > 0).all() and (off <= 1).all()
    assert not np.diag(m).any()
    np.testing.assert_array_equal(m, random_network(adata, seed=1).matrix)
    assert not np.array_equal(m, random_network(adata, seed=2).matrix)
    from_list = random_network(["a", "b", "c"], regulators=["b"])
    assert list(from_list.genes) == ["a", "b", "c"]
    fm = np.asarray(from_list.matrix)
    assert not fm[:, [0, 2]].any() and fm[[0, 2], 1].all()


# ------------------------------------------------------------------- GRNBoost2


def test_grnboost2_recovers_true_regulators(sim):
    pytest.importorskip("rustscenic")
    adata, true = sim
    net = grnboost2(adata, regulators=TF_SYMBOLS, n_estimators=300, seed=0)
    assert net.method == "grnboost2"
    assert net.params["implementation"].startswith("rustscenic")
    m = np.asarray(net.matrix)
    assert not m[:, N_TF:].any()
    assert _first_regulator_rate(net, true, tf_only=True) >= 0.9


def test_grnboost2_explains_how_to_install(adata, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_rustscenic(name, *args, **kwargs):
        if name.startswith("rustscenic"):
            raise ImportError("No module named 'rustscenic'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rustscenic)
    with pytest.raises(ImportError, match="pip install rustscenic.*grnboost"):
        grnboost2(adata)


# ------------------------------------------------------------------- real data


def test_genie3_tf_on_mcalla_hesc(mcalla_log2):
    """~200 McCalla hESC genes (TFs and others), the registry's human TF list."""
    from scdataloader.datasets import tfs

    human_tfs = set(tfs("human"))
    log2 = mcalla_log2
    is_tf = log2.index.isin(human_tfs)
    genes = list(log2.index[is_tf][:40]) + list(log2.index[~is_tf][:160])
    sub = log2.loc[genes]
    counts = np.rint(2.0 ** (2.0 ** sub.to_numpy(np.float64) - 1.0) - 1.0).T
    adata = ad.AnnData(
        counts.astype(np.float32),
        obs=pd.DataFrame(index=sub.columns.astype(str)),
        var=pd.DataFrame(index=sub.index.astype(str)),
    )
    keep = counts.sum(axis=1) > 0
    adata = adata[keep].copy()
    net = genie3_tf(adata, n_trees=10, progress=False)
    m = np.asarray(net.matrix)
    assert m.shape == (200, 200)
    regs = net.params["tfs"]
    assert 0 < len(regs) <= 40 and set(regs) <= human_tfs
    non_tf = ~net.genes.isin(regs)
    assert not m[:, non_tf].any()
    assert (m >= 0).all() and not np.diag(m).any()
    fitted = m.sum(axis=1) > 0
    assert fitted.mean() > 0.9
    np.testing.assert_allclose(m[fitted].sum(axis=1), 1.0, rtol=1e-4)
    assert len(net.edges(top_k=100)) == 100
