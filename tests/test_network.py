"""bengrn.GeneNetwork: validation, orientation, edge selection, conversions and I/O."""

from __future__ import annotations

import doctest
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import bengrn
import bengrn.network
from bengrn import GeneNetwork


def _genes(n: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(n)]


def _full_sort_edges(net: GeneNetwork, self_edges: bool = False) -> pd.DataFrame:
    """Reference: every nonzero entry as an edge, fully sorted (score desc, regulator,
    target position)."""
    m = net.as_target_by_regulator().matrix
    m = m.toarray() if sp.issparse(m) else m
    tgt, reg = np.nonzero(m)
    keep = self_edges | (tgt != reg)
    tgt, reg = tgt[keep], reg[keep]
    score = m[tgt, reg]
    order = np.lexsort((tgt, reg, -score))
    ids = net.genes.to_numpy()
    return pd.DataFrame(
        {"regulator": ids[reg[order]], "target": ids[tgt[order]], "score": score[order]}
    )


@pytest.fixture
def small() -> GeneNetwork:
    # target_by_regulator: row = target, column = regulator.
    m = np.array(
        [
            [0.5, 0.9, 0.0],  # target a: b -> a (0.9), self a (0.5)
            [0.2, 0.0, -0.3],  # target b: a -> b (0.2), c -> b (-0.3)
            [0.0, 0.7, 0.0],  # target c: b -> c (0.7)
        ],
        dtype=np.float32,
    )
    var = pd.DataFrame({"symbol": ["A", "B", "C"]}, index=["a", "b", "c"])
    return GeneNetwork(m, ["a", "b", "c"], var=var, method="toy", params={"k": 1})


# ----------------------------------------------------------------- construction


def test_public_api():
    assert bengrn.GeneNetwork is GeneNetwork
    assert "GeneNetwork" in bengrn.__all__ and bengrn.__version__
    assert set(bengrn.network.__all__) >= {"GeneNetwork", "Orientation"}


def test_docstring_examples():
    result = doctest.testmod(bengrn.network, verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_construction_properties(small):
    assert small.n_genes == 3
    assert list(small.genes) == ["a", "b", "c"]
    assert small.orientation == "target_by_regulator"
    assert not small.is_sparse
    assert small.matrix.dtype == np.float32
    assert list(small.var["symbol"]) == ["A", "B", "C"]
    assert small.method == "toy" and small.params == {"k": 1}
    a = small.adata
    assert isinstance(a, ad.AnnData) and a.shape == (0, 3)
    assert a.varp["network"] is small.matrix
    assert a.uns["orientation"] == "target_by_regulator"
    assert "3 genes" in repr(small) and "dense float32" in repr(small) and "toy" in repr(small)


def test_matrix_kept_as_given_and_cast():
    m = np.eye(2)
    assert GeneNetwork(m, ["a", "b"]).matrix is m
    assert GeneNetwork(np.eye(2, dtype=int), ["a", "b"]).matrix.dtype == np.float32
    s = sp.coo_matrix(np.eye(2))
    net = GeneNetwork(s, ["a", "b"])
    assert net.is_sparse and net.matrix.format == "csr" and "nnz=2" in repr(net)


def test_genes_from_var_and_var_reordered():
    var = pd.DataFrame({"symbol": ["B", "A"]}, index=["b", "a"])
    assert list(GeneNetwork(np.eye(2), var=var).genes) == ["b", "a"]
    net = GeneNetwork(np.eye(2), ["a", "b"], var=var)
    assert list(net.var["symbol"]) == ["A", "B"]


@pytest.mark.parametrize(
    ("matrix", "genes", "kwargs", "error", "match"),
    [
        (np.zeros((2, 3)), ["a", "b"], {}, ValueError, "square"),
        (np.zeros(4), ["a", "b"], {}, ValueError, "square"),
        (np.zeros((2, 2)), ["a", "b", "c"], {}, ValueError, "3 genes for a 2 x 2"),
        (np.zeros((2, 2)), ["a", "a"], {}, ValueError, "unique.*'a'"),
        (np.array([[0, np.nan], [0, 0]]), ["a", "b"], {}, ValueError, "1 non-finite"),
        (np.array([[0, np.inf], [0, 0]]), ["a", "b"], {}, ValueError, "non-finite"),
        (sp.csr_matrix(np.array([[0, np.nan], [0, 0]])), ["a", "b"], {}, ValueError, "NaN"),
        (np.zeros((2, 2)), ["a", "b"], {"orientation": "rows"}, ValueError, "orientation"),
        (np.zeros((2, 2)), None, {}, ValueError, "give the genes"),
        (
            np.zeros((2, 2)),
            ["a", "b"],
            {"var": pd.DataFrame(index=["a"])},
            ValueError,
            "var lacks 1 genes",
        ),
        (np.zeros((2, 2)), ["a", "b"], {"params": {"f": object()}}, ValueError, "JSON"),
        (pd.DataFrame(np.zeros((2, 2))), ["a", "b"], {}, TypeError, "from_dataframe"),
        (np.zeros((2, 2), dtype=complex), ["a", "b"], {}, TypeError, "real"),
    ],
)
def test_validation_errors(matrix, genes, kwargs, error, match):
    with pytest.raises(error, match=match):
        GeneNetwork(matrix, genes, **kwargs)


# ------------------------------------------------------------------ orientation


def test_orientation_flips_keep_edges(small):
    # b -> a scores 0.9: row a (target), column b (regulator).
    flipped = small.as_regulator_by_target()
    assert flipped.orientation == "regulator_by_target"
    assert flipped.matrix[1, 0] == pytest.approx(0.9)  # row b (regulator), column a
    pd.testing.assert_frame_equal(flipped.edges(), small.edges())
    assert flipped.as_regulator_by_target() is flipped
    assert small.as_target_by_regulator() is small
    back = flipped.as_target_by_regulator()
    np.testing.assert_array_equal(back.matrix, small.matrix)
    pd.testing.assert_frame_equal(small.transpose().transpose().edges(), small.edges())
    assert flipped.method == "toy" and flipped.params == {"k": 1}
    assert list(flipped.var["symbol"]) == ["A", "B", "C"]


def test_reverse_swaps_direction(small):
    e = small.edges()
    r = small.reverse().edges()
    swapped = e.rename(columns={"regulator": "target", "target": "regulator"})
    pd.testing.assert_frame_equal(
        r.sort_values(["regulator", "target"], ignore_index=True)[["regulator", "target"]],
        swapped.sort_values(["regulator", "target"], ignore_index=True)[["regulator", "target"]],
    )


# ------------------------------------------------------------------------ edges


def test_edges_small(small):
    e = small.edges()
    assert list(e.columns) == [
        "regulator",
        "target",
        "score",
        "regulator_symbol",
        "target_symbol",
    ]
    assert list(zip(e["regulator"], e["target"], strict=True)) == [
        ("b", "a"),
        ("b", "c"),
        ("a", "b"),
        ("c", "b"),
    ]
    np.testing.assert_allclose(e["score"], [0.9, 0.7, 0.2, -0.3], rtol=1e-6)
    assert list(e["regulator_symbol"]) == ["B", "B", "A", "C"]
    assert list(e["target_symbol"]) == ["A", "C", "B", "B"]
    # Self-edges only on request; zeros never are edges.
    assert not (e["regulator"] == e["target"]).any()
    with_self = small.edges(self_edges=True)
    assert len(with_self) == 5 and ("a", "a") in set(
        zip(with_self["regulator"], with_self["target"], strict=True)
    )
    np.testing.assert_allclose(small.edges(threshold=0.2)["score"], [0.9, 0.7, 0.2], rtol=1e-6)
    assert list(small.edges(top_k=2, threshold=0.8)["target"]) == ["a"]
    assert small.edges(top_k=0).empty
    assert len(small.edges(top_k=100)) == 4
    with pytest.raises(ValueError, match="top_k"):
        small.edges(top_k=-1)


def test_edges_without_symbols():
    e = GeneNetwork(np.ones((2, 2)), ["a", "b"]).edges()
    assert list(e.columns) == ["regulator", "target", "score"]


@pytest.mark.parametrize("orientation", ["target_by_regulator", "regulator_by_target"])
@pytest.mark.parametrize("sparse", [False, True])
def test_top_k_matches_full_sort(orientation, sparse):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((300, 300)).astype(np.float32)
    m[rng.random(m.shape) < 0.3] = 0.0
    net = GeneNetwork(sp.csr_matrix(m) if sparse else m, _genes(300), orientation=orientation)
    full = _full_sort_edges(net)
    assert len(net.edges()) == len(full) == np.count_nonzero(m) - np.count_nonzero(np.diag(m))
    for k in (1, 50, 1000, len(full) - 1, len(full) + 10):
        pd.testing.assert_frame_equal(net.edges(top_k=k), full.head(k).reset_index(drop=True))
    thr = full[full["score"] >= 0.5].reset_index(drop=True)
    pd.testing.assert_frame_equal(net.edges(threshold=0.5), thr)
    pd.testing.assert_frame_equal(net.edges(top_k=10, threshold=0.5), thr.head(10))
    pd.testing.assert_frame_equal(
        net.edges(top_k=70, self_edges=True), _full_sort_edges(net, True).head(70)
    )


def test_top_k_negative_scores_after_positives():
    # Few positives, many zeros: the top-k continues into the negative scores.
    m = np.zeros((50, 50), dtype=np.float32)
    m[1, 0], m[2, 0], m[3, 0] = 1.0, -1.0, -2.0
    e = GeneNetwork(m, _genes(50)).edges(top_k=2)
    assert list(e["score"]) == [1.0, -1.0]


@pytest.mark.parametrize("sparse", [False, True])
def test_ties_deterministic(sparse, monkeypatch):
    # Many blocks, all entries equal: ties go by regulator then target position.
    monkeypatch.setattr(bengrn.network, "_BLOCK_ENTRIES", 64)
    rng = np.random.default_rng(1)
    m = np.ones((40, 40), dtype=np.float32)
    m[rng.random(m.shape) < 0.5] = 2.0
    net = GeneNetwork(sp.csr_matrix(m) if sparse else m, _genes(40))
    full = _full_sort_edges(net)
    for k in (1, 7, 100, 900):
        e = net.edges(top_k=k)
        pd.testing.assert_frame_equal(e, full.head(k).reset_index(drop=True))
        assert e.equals(net.transpose().edges(top_k=k))
    ones = GeneNetwork(np.ones((4, 4)), ["a", "b", "c", "d"]).edges(top_k=4)
    assert list(zip(ones["regulator"], ones["target"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "a"),
    ]


def test_sparse_and_dense_equivalent():
    rng = np.random.default_rng(2)
    m = sp.random(80, 80, density=0.1, random_state=3, format="csr", dtype=np.float64)
    var = pd.DataFrame({"symbol": [f"S{i}" for i in range(80)]}, index=_genes(80))
    sparse = GeneNetwork(m, var=var)
    dense = GeneNetwork(m.toarray(), var=var)
    assert sparse.is_sparse and not dense.is_sparse
    for kwargs in ({}, {"top_k": 25}, {"threshold": 0.5}, {"self_edges": True}):
        pd.testing.assert_frame_equal(sparse.edges(**kwargs), dense.edges(**kwargs))
    pd.testing.assert_frame_equal(sparse.to_dataframe(), dense.to_dataframe())
    genes = list(rng.permutation(_genes(80))[:30])
    pd.testing.assert_frame_equal(sparse.subset(genes).edges(), dense.subset(genes).edges())
    pd.testing.assert_frame_equal(sparse.transpose().edges(), dense.transpose().edges())


# ---------------------------------------------------------------------- subsets


def test_subset_order_and_missing(small):
    sub = small.subset(["c", "a"])
    assert list(sub.genes) == ["c", "a"] and list(sub.var["symbol"]) == ["C", "A"]
    np.testing.assert_array_equal(sub.matrix, [[0.0, 0.0], [0.0, 0.5]])
    assert sub.orientation == small.orientation and sub.method == "toy"
    sub = small.subset(["b", "a"])
    assert list(zip(sub.edges()["regulator"], sub.edges()["target"], strict=True)) == [
        ("b", "a"),
        ("a", "b"),
    ]
    with pytest.raises(KeyError, match="2 genes not in the network: 'x', 'y'"):
        small.subset(["a", "x", "y"])
    with pytest.raises(ValueError, match="repeated"):
        small.subset(["a", "a"])


# ------------------------------------------------------------------ conversions


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("orientation", ["target_by_regulator", "regulator_by_target"])
def test_from_edges_round_trip(small, sparse, orientation):
    e = small.edges()
    net = GeneNetwork.from_edges(e, sparse=sparse, orientation=orientation, method="x")
    assert net.is_sparse == sparse and net.orientation == orientation
    assert list(net.genes) == ["a", "b", "c"]
    assert list(net.var["symbol"]) == ["A", "B", "C"]
    pd.testing.assert_frame_equal(net.edges(), e)
    np.testing.assert_array_equal(
        net.as_target_by_regulator().to_dataframe().to_numpy(),
        np.where(np.eye(3, dtype=bool), 0, small.matrix),
    )


def test_from_edges_options():
    df = pd.DataFrame({"tf": ["a", "a"], "gene": ["b", "c"]})
    net = GeneNetwork.from_edges(df, source="tf", target="gene", weight=None, genes=list("dcba"))
    assert list(net.genes) == list("dcba")
    assert set(zip(net.edges()["regulator"], net.edges()["target"], strict=True)) == {
        ("a", "b"),
        ("a", "c"),
    }
    assert (net.edges()["score"] == 1).all()
    with pytest.raises(KeyError, match="1 edge genes not in genes: 'c'"):
        GeneNetwork.from_edges(df, source="tf", target="gene", weight=None, genes=["a", "b"])
    with pytest.raises(KeyError, match="no column 'score'"):
        GeneNetwork.from_edges(df, source="tf", target="gene")
    twice = pd.DataFrame({"regulator": ["a", "a"], "target": ["b", "b"], "score": [1, 2]})
    with pytest.raises(ValueError, match="1 repeated edges: 'a->b'"):
        GeneNetwork.from_edges(twice)


def test_from_dataframe_and_to_dataframe(small):
    frame = small.to_dataframe()
    assert list(frame.index) == list(frame.columns) == ["a", "b", "c"]
    assert frame.loc["a", "b"] == pytest.approx(0.9)  # target a, regulator b
    back = GeneNetwork.from_dataframe(frame[["c", "a", "b"]], var=small.var)
    pd.testing.assert_frame_equal(back.edges(), small.edges())
    # Targets x transcription factors: genes are the union, missing pairs are 0.
    tf = pd.DataFrame([[0.5], [0.0], [0.25]], index=["x", "y", "z"], columns=["t"])
    net = GeneNetwork.from_dataframe(tf)
    assert list(net.genes) == ["x", "y", "z", "t"]
    e = net.edges()
    assert list(zip(e["regulator"], e["target"], e["score"], strict=True)) == [
        ("t", "x", 0.5),
        ("t", "z", 0.25),
    ]


def test_from_anndata():
    adata = ad.AnnData(
        X=np.zeros((5, 3), dtype=np.float32),
        var=pd.DataFrame({"symbol": ["A", "B", "C"]}, index=["a", "b", "c"]),
    )
    # GRnnData-like: rows are regulators.
    adata.varp["GRN"] = sp.csr_matrix(np.array([[0, 1.0, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="orientation"):
        GeneNetwork.from_anndata(adata, "GRN")
    with pytest.raises(KeyError, match="no 'network'"):
        GeneNetwork.from_anndata(adata)
    net = GeneNetwork.from_anndata(adata, "GRN", orientation="regulator_by_target")
    assert net.edges()[["regulator", "target"]].values.tolist() == [["a", "b"]]
    assert list(net.var["symbol"]) == ["A", "B", "C"]
    adata.uns.update(orientation="regulator_by_target", method="grn", params='{"x": 1}')
    net = GeneNetwork.from_anndata(adata, "GRN")
    assert net.method == "grn" and net.params == {"x": 1}


def test_to_networkx(small):
    nx = pytest.importorskip("networkx")
    g = small.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert g.number_of_edges() == 4
    assert g.has_edge("b", "a") and not g.has_edge("a", "a")
    assert g["b"]["a"]["weight"] == pytest.approx(0.9)
    assert g.nodes["b"]["symbol"] == "B"
    top = small.to_networkx(top_k=2)
    assert set(top.edges) == {("b", "a"), ("b", "c")}
    assert small.to_networkx(threshold=0.6).number_of_edges() == 2


# -------------------------------------------------------------------------- I/O


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("orientation", ["target_by_regulator", "regulator_by_target"])
def test_write_read_round_trip(tmp_path, sparse, orientation):
    rng = np.random.default_rng(4)
    m = rng.random((20, 20)).astype(np.float32)
    m[m < 0.6] = 0
    var = pd.DataFrame(
        {"symbol": [f"S{i}" for i in range(20)], "is_tf": rng.random(20) < 0.3},
        index=_genes(20),
    )
    params = {"layer": 4, "heads": [1, 2], "name": "x", "nested": {"a": 0.5}, "none": None}
    net = GeneNetwork(
        sp.csr_matrix(m) if sparse else m,
        var=var,
        orientation=orientation,
        method="attention",
        params=params,
    )
    path = tmp_path / "net.h5ad"
    assert net.write(path) == path
    net.write(path)  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5ad"]
    back = GeneNetwork.read(path)
    assert back.is_sparse == sparse
    assert back.orientation == orientation
    assert back.method == "attention" and back.params == params
    assert back.matrix.dtype == np.float32
    pd.testing.assert_frame_equal(back.var, net.var)
    got = back.matrix.toarray() if sparse else back.matrix
    np.testing.assert_array_equal(got, m)
    pd.testing.assert_frame_equal(back.edges(), net.edges())


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    net = GeneNetwork(np.eye(2), ["a", "b"])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    with pytest.raises(OSError, match="disk full"):
        net.write(tmp_path / "net.h5ad")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ speed


def test_top_k_large_dense_is_fast():
    n = 10_000
    rng = np.random.default_rng(5)
    m = rng.random((n, n), dtype=np.float32)
    net = GeneNetwork(m, _genes(n))
    start = time.perf_counter()
    e = net.edges(top_k=1000)
    elapsed = time.perf_counter() - start
    assert len(e) == 1000 and e["score"].is_monotonic_decreasing
    # Check against the true top of the off-diagonal entries.
    np.fill_diagonal(m, -np.inf)
    best = np.sort(np.partition(m.ravel(), m.size - 1000)[-1000:])[::-1]
    np.testing.assert_array_equal(e["score"].to_numpy(), best)
    assert elapsed < 3.0, f"edges(top_k=1000) on {n} x {n} took {elapsed:.2f} s"
