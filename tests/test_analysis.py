"""bengrn.analysis: hubs, communities, differential hubs, a gene's edges and its plot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bengrn import GeneNetwork
from bengrn import analysis as A


def _ids(n: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(n)]


def _net(matrix, *, symbols: bool = True, **kw) -> GeneNetwork:
    n = matrix.shape[0]
    var = (
        pd.DataFrame({"symbol": [f"SYM{i}" for i in range(n)]}, index=_ids(n)) if symbols else None
    )
    return GeneNetwork(matrix, _ids(n), var=var, **kw)


def _star(n: int = 8, center: int = 3) -> GeneNetwork:
    """``center`` regulates every other gene (target_by_regulator: its column)."""
    m = np.zeros((n, n))
    m[:, center] = np.linspace(1.0, 2.0, n)
    m[center, center] = 0.0
    return _net(m)


# -------------------------------------------------------------------------- hubs


@pytest.mark.parametrize("by", ["degree", "out_degree", "regulator"])
def test_hubs_star_center_first(by):
    net = _star()
    table = A.hubs(net, by=by, top=3)
    assert list(table.columns) == ["gene", "symbol", "score", "rank"]
    assert table["gene"].iloc[0] == _ids(8)[3] and table["symbol"].iloc[0] == "SYM3"
    assert table["rank"].iloc[0] == 1 and len(table) == 3
    full = A.hubs(net, by=by, top=None)
    assert len(full) == 8


def test_hubs_scores_and_ties():
    net = _star()
    deg = A.hubs(net, by="degree", top=None).set_index("gene")
    assert deg.loc[_ids(8)[3], "score"] == 7
    others = deg.drop(index=_ids(8)[3])
    assert (others["score"] == 1).all() and (others["rank"] == 2).all()  # ties share rank
    assert list(others.index) == [g for g in _ids(8) if g != _ids(8)[3]]  # gene order
    ind = A.hubs(net, by="in_degree", top=None).set_index("gene")
    assert ind.loc[_ids(8)[3], "score"] == 0 and ind["score"].max() == 1
    reg = A.hubs(net, by="regulator", top=1)
    assert np.isclose(reg["score"].iloc[0], np.linspace(1, 2, 8).sum() - np.linspace(1, 2, 8)[3])
    tgt = A.hubs(net, by="target", top=1)
    assert tgt["gene"].iloc[0] == _ids(8)[7]  # strongest incoming edge
    # edge selection: only the 3 strongest edges count
    assert A.hubs(net, by="degree", top_k_edges=3, top=1)["score"].iloc[0] == 3
    assert A.hubs(net, by="regulator", threshold=1.8, top=1)["score"].iloc[0] == pytest.approx(
        2.0 + np.linspace(1, 2, 8)[6]
    )
    # in-edge eigenvector centrality: the center, regulated by no one, comes last
    eig = A.hubs(net, by="eigenvector", top=None)
    assert eig["gene"].iloc[-1] == _ids(8)[3] and eig["gene"].iloc[0] == _ids(8)[7]
    with pytest.raises(ValueError, match="by must be"):
        A.hubs(net, by="pagerank")


def test_hubs_default_edge_budget_and_no_symbols():
    rng = np.random.default_rng(0)
    n = 50
    net = _net(rng.random((n, n)), symbols=False)
    deg = A.hubs(net, by="degree", top=None)
    assert "symbol" not in deg.columns
    assert deg["score"].sum() == 2 * A.EDGES_PER_GENE * n  # each edge counts twice
    out = A.hubs(net, by="out_degree", top=None)
    assert out["score"].sum() == A.EDGES_PER_GENE * n


# ------------------------------------------------------------------- communities


def test_communities_two_cliques():
    rng = np.random.default_rng(0)
    n = 20
    m = np.zeros((n, n))
    a, b = np.arange(12), np.arange(12, 20)  # sizes 12 and 8
    m[np.ix_(a, a)] = 1.0 + rng.random((12, 12))
    m[np.ix_(b, b)] = 1.0 + rng.random((8, 8))
    m[0, 15] = m[15, 0] = 0.05  # weak bridge
    np.fill_diagonal(m, 0)
    net = _net(sp.csr_matrix(m))
    comm = A.communities(net, top_k_edges=10_000)
    assert comm.name == "community" and list(comm.index) == list(net.genes)
    assert set(comm.iloc[a]) == {0} and set(comm.iloc[b]) == {1}  # largest first
    # reproducible with a seed; isolated genes are their own communities
    pd.testing.assert_series_equal(comm, A.communities(net, top_k_edges=10_000))
    m2 = np.zeros((n + 2, n + 2))
    m2[:n, :n] = m
    comm2 = A.communities(_net(m2), top_k_edges=10_000)
    assert sorted(comm2.iloc[n:]) == [2, 3]


# --------------------------------------------------------------- differential hubs


def test_differential_hubs_planted_swap():
    rng = np.random.default_rng(0)
    n = 40
    base = rng.random((n, n)) * 0.1
    ma, mb = base.copy(), base.copy()
    ma[:, 5] += 1.0  # gene 5 is a regulator hub in a
    mb[:, 9] += 1.0  # gene 9 in b
    a, b = _net(ma), _net(mb * 10)  # different scales: normalisation compares them
    table = A.differential_hubs(a, b, by="regulator", top=3)
    assert list(table.columns) == [
        "gene",
        "symbol",
        "score_a",
        "score_b",
        "diff",
        "rank_a",
        "rank_b",
        "higher_in",
    ]
    assert table["gene"].iloc[0] == _ids(n)[5] and table["higher_in"].iloc[0] == "a"
    assert table["rank_a"].iloc[0] == 1
    first_b = table[table["higher_in"] == "b"].iloc[0]
    assert first_b["gene"] == _ids(n)[9] and first_b["rank_b"] == 1 and first_b["diff"] < 0
    assert 2 <= len(table) <= 6 and table["diff"].iloc[0] == table["diff"].max()
    z = A.differential_hubs(a, b, normalize="zscore", top=1)
    assert list(z["gene"]) == [_ids(n)[5], _ids(n)[9]]


def test_differential_hubs_shared_genes_only():
    rng = np.random.default_rng(1)
    a = _net(rng.random((10, 10)))
    b = GeneNetwork(rng.random((6, 6)), _ids(10)[4:])
    table = A.differential_hubs(a, b, top=10)
    assert set(table["gene"]) <= set(_ids(10)[4:])
    c = GeneNetwork(np.ones((3, 3)), ["x", "y", "z"])
    with pytest.raises(ValueError, match="share no gene"):
        A.differential_hubs(a, c)
    with pytest.raises(ValueError, match="normalize"):
        A.differential_hubs(a, b, normalize="minmax")


# ------------------------------------------------------------- a gene's edges


def test_top_edges_per_gene_directions():
    m = np.zeros((5, 5))
    # target_by_regulator: m[target, regulator]
    m[1, 0], m[2, 0], m[3, 0] = 0.9, 0.5, 0.7  # gene0 -> 1, 2, 3
    m[0, 4], m[0, 2] = 0.8, 0.3  # 4 -> gene0, 2 -> gene0
    m[0, 0] = 5.0  # self edge: ignored
    net = _net(m)
    ids = _ids(5)
    out = A.top_edges_per_gene(net, ids[0], k=2, direction="out")
    assert list(out["target"]) == [ids[1], ids[3]] and set(out["regulator"]) == {ids[0]}
    assert list(out["score"]) == [0.9, 0.7] and list(out["target_symbol"]) == ["SYM1", "SYM3"]
    inc = A.top_edges_per_gene(net, "SYM0", k=5, direction="in")  # by symbol
    assert list(inc["regulator"]) == [ids[4], ids[2]] and set(inc["target"]) == {ids[0]}
    both = A.top_edges_per_gene(net, "sym0", k=1, direction="both")  # case-insensitive
    assert list(both["direction"]) == ["out", "in"]
    assert list(both["score"]) == [0.9, 0.8]
    # the other orientation stores the same edges
    pd.testing.assert_frame_equal(
        both, A.top_edges_per_gene(net.transpose(), ids[0], k=1, direction="both")
    )
    pd.testing.assert_frame_equal(
        both, A.top_edges_per_gene(_net(sp.csr_matrix(m)), ids[0], k=1, direction="both")
    )
    with pytest.raises(KeyError, match="neither"):
        A.top_edges_per_gene(net, "NOPE")
    with pytest.raises(ValueError, match="direction"):
        A.top_edges_per_gene(net, ids[0], direction="up")


def test_resolve_gene_ambiguous_symbol():
    var = pd.DataFrame({"symbol": ["A", "A", "B"]}, index=_ids(3))
    net = GeneNetwork(np.zeros((3, 3)), _ids(3), var=var)
    assert A.resolve_gene(net, "B") == _ids(3)[2]
    assert A.resolve_gene(net, _ids(3)[0]) == _ids(3)[0]
    with pytest.raises(KeyError, match="several"):
        A.resolve_gene(net, "A")


# ------------------------------------------------------------------------ plot


def test_plot_subgraph_png_and_symbols(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    net = _net(rng.random((n, n)) * (rng.random((n, n)) < 0.3))
    path = tmp_path / "sub.png"
    fig = A.plot_subgraph(net, "SYM4", k=4, path=path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.png"]  # no temporary left
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert "SYM4" in labels and all(lbl.startswith("SYM") for lbl in labels)
    edges = A.top_edges_per_gene(net, "SYM4", k=4, direction="both")
    neighbours = set(edges["regulator_symbol"]) | set(edges["target_symbol"])
    assert labels == neighbours | {"SYM4"}
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()  # no global pyplot figure made


def test_plot_subgraph_on_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    net = _star()
    assert A.plot_subgraph(net, _ids(8)[3], k=3, ax=ax) is fig
    assert "SYM3" in {t.get_text() for t in ax.texts}


def test_imports_are_light():
    """Importing the modules loads neither gseapy, scprint nor pyplot."""
    code = (
        "import sys, bengrn.analysis, bengrn.enrichment; "
        "print([m for m in ('gseapy', 'scprint', 'matplotlib.pyplot') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
