"""bengrn.enrichment: centralities, gmt reading, prerank, TF/marker and ENCODE enrichment."""

from __future__ import annotations

import importlib.util
import json
import sys

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats

from bengrn import GeneNetwork
from bengrn import enrichment as E

needs_gseapy = pytest.mark.skipif(
    importlib.util.find_spec("gseapy") is None, reason="gseapy not installed (the enrich extra)"
)

PERM = 200  # permutations: enough for p < 0.005, fast


def _ids(n: int) -> list[str]:
    return [f"ENSG{i:011d}" for i in range(n)]


def _symbols(n: int) -> list[str]:
    return [f"GENE{i}" for i in range(n)]


def _net(matrix, *, symbols: bool = True, **kw) -> GeneNetwork:
    n = matrix.shape[0]
    var = pd.DataFrame({"symbol": _symbols(n)}, index=_ids(n)) if symbols else None
    return GeneNetwork(matrix, _ids(n), var=var, **kw)


# ------------------------------------------------------------------------ gene names


def test_gene_names_symbols_with_fallback():
    var = pd.DataFrame({"symbol": ["A", None, " ", "D"]}, index=_ids(4))
    net = GeneNetwork(np.zeros((4, 4)), _ids(4), var=var)
    names = E.gene_names(net)
    assert list(names.index) == _ids(4)
    assert list(names) == ["A", _ids(4)[1], _ids(4)[2], "D"]
    assert list(E.gene_names(_net(np.zeros((3, 3)), symbols=False))) == _ids(3)


# ---------------------------------------------------------------------- centralities


def test_centralities_sums_by_hand():
    # target_by_regulator: m[i, j] scores j -> i
    m = np.array([[5.0, 1.0, 0.0], [2.0, 7.0, 3.0], [0.0, 4.0, 9.0]])
    net = _net(m)
    c = E.centralities(net, kinds=("target_hub", "regulator_hub"))
    assert list(c.index) == _ids(3)
    # diagonal (self edges) left out by default
    np.testing.assert_allclose(c["target_hub"], [1.0, 5.0, 4.0])
    np.testing.assert_allclose(c["regulator_hub"], [2.0, 5.0, 3.0])
    with_self = E.centralities(net, kinds=("target_hub", "regulator_hub"), self_edges=True)
    np.testing.assert_allclose(with_self["target_hub"], m.sum(axis=1))
    np.testing.assert_allclose(with_self["regulator_hub"], m.sum(axis=0))
    # same answer whatever the storage: transposed orientation, sparse
    for other in (net.transpose(), _net(sp.csr_matrix(m))):
        pd.testing.assert_frame_equal(E.centralities(other, kinds=list(c.columns)), c)


@pytest.mark.parametrize("sparse", [False, True])
def test_eigenvector_equals_networkx(sparse):
    rng = np.random.default_rng(1)
    n = 40
    m = rng.random((n, n)) * (rng.random((n, n)) < 0.25)
    m[np.arange(n), (np.arange(n) + 1) % n] = 0.5  # a cycle: every gene has edges
    net = _net(sp.csr_matrix(m) if sparse else m, symbols=False)
    c = E.centralities(net, kinds=("eigenvector", "eigenvector_out"))
    graph = net.to_networkx()
    assert graph.number_of_nodes() == n
    ref_in = nx.eigenvector_centrality(graph, weight="weight", max_iter=1000)
    ref_out = nx.eigenvector_centrality(graph.reverse(), weight="weight", max_iter=1000)
    np.testing.assert_allclose(c["eigenvector"], [ref_in[g] for g in net.genes], atol=1e-9)
    np.testing.assert_allclose(c["eigenvector_out"], [ref_out[g] for g in net.genes], atol=1e-9)
    # in-edge semantics: the target of the strongest regulators is central
    assert np.isclose(np.linalg.norm(c["eigenvector"]), 1.0)


def test_eigenvector_in_edges_direction():
    # a star regulator -> 5 targets: in-edge centrality favours the targets
    m = np.zeros((6, 6))
    m[1:, 0] = 1.0
    c = E.centralities(_net(m), kinds=("eigenvector", "eigenvector_out", "regulator_hub"))
    assert c["eigenvector"].iloc[0] < c["eigenvector"].iloc[1]
    assert c["eigenvector_out"].iloc[0] > c["eigenvector_out"].iloc[1]
    assert c["regulator_hub"].idxmax() == _ids(6)[0]


def test_eigenvector_ignores_negative_scores():
    rng = np.random.default_rng(2)
    m = rng.random((10, 10))
    neg = m - 0.5
    c_neg = E.centralities(_net(neg), kinds=("eigenvector",))
    c_clip = E.centralities(_net(np.clip(neg, 0, None)), kinds=("eigenvector",))
    pd.testing.assert_frame_equal(c_neg, c_clip)


def test_centralities_unknown_kind():
    with pytest.raises(ValueError, match="unknown centralities"):
        E.centralities(_net(np.eye(3)), kinds=("pagerank",))


# -------------------------------------------------------------------------- gmt


def test_read_gmt_tolerant(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text(
        "setA\tdesc\tG1\tG2\t\tG3\r\n"
        "\n"
        "noGenes\tdesc\t\t\n"
        "setB\t\t G4 \tG4\tG5\n"
        "\tno name\tG9\n"
        "setA\tother tissue\tG3\tG6\n"
        "short\tdesc\n",
        encoding="utf-8",
    )
    sets = E.read_gmt(path)
    assert sets == {"setA": ["G1", "G2", "G3", "G6"], "setB": ["G4", "G5"]}
    assert E.read_gmt(str(path)) == sets


def test_read_real_markers_gmt(markers_gmt_path):
    sets = E.read_gmt(markers_gmt_path)
    lines = [line for line in markers_gmt_path.read_text().splitlines() if line.strip()]
    assert len(lines) == 232
    # one set per cell type name: the 232 (cell type, tissue) lines hold 183 names
    assert len(sets) == len({line.split("\t")[0] for line in lines}) == 183
    assert "Mast cells" in sets and "MS4A1" in sets["Naive B cells"]
    assert all(genes and len(genes) == len(set(genes)) for genes in sets.values())


# ----------------------------------------------------------------------- prerank


def _planted_ranking(n: int = 400, seed: int = 0) -> tuple[pd.Series, dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    genes = _symbols(n)
    ranking = pd.Series(rng.normal(size=n), index=genes)
    top = list(ranking.sort_values(ascending=False).index[:25])
    rand = list(rng.choice(genes, 25, replace=False))
    return ranking, {"planted": top, "random": rand}


@needs_gseapy
def test_prerank_planted_set_is_significant():
    ranking, sets = _planted_ranking()
    res = E.prerank(ranking, sets, permutations=PERM, seed=0)
    assert list(res.columns) == ["term", "es", "nes", "pval", "fdr", "n_genes", "lead_genes"]
    assert list(res["term"]) == ["planted", "random"]  # sorted by nes
    planted = res.set_index("term").loc["planted"]
    assert planted["nes"] > 1.5 and planted["fdr"] < 0.05 and planted["pval"] < 0.01
    assert planted["n_genes"] == 25 and set(planted["lead_genes"]) == set(sets["planted"])
    random = res.set_index("term").loc["random"]
    assert random["fdr"] > 0.05
    # reproducible, and independent of the input order
    again = E.prerank(ranking.sample(frac=1, random_state=3), sets, permutations=PERM, seed=0)
    pd.testing.assert_frame_equal(res, again)


@needs_gseapy
def test_prerank_size_filters_and_gmt_path(tmp_path):
    ranking, sets = _planted_ranking()
    sets["tiny"] = ["GENE1", "GENE2", "NOT_A_GENE"]
    res = E.prerank(ranking, sets, permutations=PERM, min_size=5)
    assert "tiny" not in set(res["term"])
    path = tmp_path / "s.gmt"
    path.write_text("".join(f"{k}\t\t" + "\t".join(v) + "\n" for k, v in sets.items()))
    from_file = E.prerank(ranking, path, permutations=PERM)
    pd.testing.assert_frame_equal(res, from_file)
    empty = E.prerank(ranking, {"tiny": sets["tiny"]}, permutations=PERM)
    assert empty.empty and list(empty.columns) == list(res.columns)


def test_prerank_duplicates_and_nan():
    ranking = pd.Series([1.0, 5.0, np.nan, 2.0, 3.0], index=["a", "b", "c", "a", "d"])
    clean = E._clean_ranking(ranking, "max")
    assert list(clean.index) == ["b", "d", "a"] and list(clean) == [5.0, 3.0, 2.0]
    summed = E._clean_ranking(ranking, "sum")
    assert summed["a"] == 3.0
    assert E._clean_ranking(ranking, "first")["a"] == 1.0
    ties = E._clean_ranking(pd.Series([1.0, 1.0, 1.0], index=["z", "x", "y"]), "max")
    assert list(ties.index) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="duplicates"):
        E._clean_ranking(ranking, "mean")
    with pytest.raises(TypeError):
        E.prerank([1, 2], {"s": ["a"]})


@needs_gseapy
def test_prerank_names_match_exactly():
    """Mixed-case names (mouse symbols, C1orf-like) match exactly and come back as given."""
    ranking, sets = _planted_ranking()
    ranking.index = [f"Gm{i}" if i % 2 else f"C{i}orf1" for i in range(len(ranking))]
    top = list(ranking.sort_values(ascending=False).index[:25])
    upper = {f"SET{i}": [g.upper() for g in top] for i in range(3)}  # no exact match
    res = E.prerank(ranking, {**upper, "planted": top}, permutations=PERM)
    assert list(res["term"]) == ["planted"]
    assert res["n_genes"].iloc[0] == 25 and set(res["lead_genes"].iloc[0]) == set(top)


def test_benjamini_hochberg_matches_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002, np.nan, 0.2])
    ok = np.isfinite(p)
    ref = scipy.stats.false_discovery_control(p[ok], method="bh")
    np.testing.assert_allclose(E._bh(p)[ok], ref)
    assert np.isnan(E._bh(p)[~ok]).all()


def test_missing_gseapy_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "gseapy", None)
    ranking, sets = _planted_ranking()
    with pytest.raises(ImportError, match="pip install"):
        E.prerank(ranking, sets, permutations=10)


# ------------------------------------------------------------------ enrichment


def _hub_network(n: int = 300, seed: int = 0) -> tuple[GeneNetwork, list[str], dict]:
    """Random scores; the 'TF' columns regulate strongly (regulator hubs) and the planted
    cell type's markers are strongly regulated (target hubs)."""
    rng = np.random.default_rng(seed)
    symbols = _symbols(n)
    m = rng.random((n, n))
    tfs = symbols[:30]
    m[:, :30] += 1.0  # TF columns: strong outgoing edges
    markers = {f"type{i}": list(rng.choice(symbols, 20, replace=False)) for i in range(8)}
    markers["planted type"] = symbols[100:120]
    m[100:120, :] += 1.0  # marker rows: strong incoming edges
    var = pd.DataFrame({"symbol": symbols}, index=_ids(n))
    return GeneNetwork(m, _ids(n), var=var), tfs, markers


@needs_gseapy
def test_enrichment_tfs_and_markers():
    net, tfs, markers = _hub_network()
    res = E.enrichment(net, tfs=tfs + ["NOT_IN_NET"], markers=markers, permutations=PERM)
    table = res.table
    assert list(table.columns) == [
        "kind",
        "collection",
        "gene_set",
        "es",
        "nes",
        "pval",
        "fdr",
        "n_genes",
        "significant",
        "lead_genes",
    ]
    assert set(table["kind"]) == {"target_hub", "regulator_hub", "eigenvector"}
    assert res.tf_enriched("regulator_hub")
    assert not res.tf_enriched("target_hub")
    tf_row = table[(table["kind"] == "regulator_hub") & (table["collection"] == "tfs")]
    assert tf_row["gene_set"].tolist() == ["TFs"] and tf_row["n_genes"].tolist() == [30]
    top = res.top_cell_types("target_hub", n=3)
    assert list(top.columns) == ["gene_set", "nes", "fdr", "significant"]
    assert top["gene_set"].iloc[0] == "planted type" and top["significant"].iloc[0]
    assert res.top_cell_types("eigenvector", n=1)["gene_set"].iloc[0] == "planted type"
    assert list(res.centralities.index) == list(net.genes)
    assert not res.tf_enriched("eigenvector_out")  # not computed: False, no error


@needs_gseapy
def test_enrichment_skips_empty_collections():
    net, tfs, _ = _hub_network(n=120)
    res = E.enrichment(net, tfs=tfs, markers={}, kinds=("regulator_hub",), permutations=50)
    assert set(res.table["collection"]) == {"tfs"} and len(res.table) == 1
    assert res.top_cell_types("regulator_hub").empty


@needs_gseapy
def test_enrichment_real_tfs_and_markers(tfs_human_path, markers_gmt_path):
    """Real gene sets on a small symbol-named network: TF columns high -> TFs enriched."""
    tfs = [line.strip() for line in tfs_human_path.read_text().splitlines() if line.strip()]
    markers = E.read_gmt(markers_gmt_path)
    marker_genes = sorted({g for genes in markers.values() for g in genes} - set(tfs))
    symbols = tfs[:100] + marker_genes[:300]
    rng = np.random.default_rng(0)
    m = rng.random((len(symbols), len(symbols)))
    m[:, :100] += 0.5
    var = pd.DataFrame({"symbol": symbols}, index=_ids(len(symbols)))
    net = GeneNetwork(m, var.index, var=var)
    res = E.enrichment(
        net, tfs=tfs, markers=markers_gmt_path, kinds=("regulator_hub",), permutations=100
    )
    assert res.tf_enriched("regulator_hub")
    assert (res.table["collection"] == "markers").sum() > 10


# ---------------------------------------------------------------------- ENCODE


@needs_gseapy
def test_encode_enrichment_planted_tf():
    n = 300
    rng = np.random.default_rng(0)
    symbols = _symbols(n)
    m = rng.random((n, n))
    planted_targets = symbols[50:80]
    m[50:80, 0] += 2.0  # GENE0 -> its targets: strong column entries
    targets = {
        "GENE0": planted_targets,
        "gene1": symbols[200:230],  # control: random column (lower case key)
        "GENE2": symbols[10:14],  # too few targets: not tested
        "ABSENT": symbols[:40],  # not in the network: not tested
    }
    var = pd.DataFrame({"symbol": symbols}, index=_ids(n))
    net = GeneNetwork(m, _ids(n), var=var)
    df = E.encode_enrichment(net, targets, permutations=PERM, min_targets=10)
    assert list(df.columns) == [
        "tf",
        "gene",
        "n_targets",
        "es",
        "nes",
        "pval",
        "fdr",
        "significant",
    ]
    assert list(df["tf"]) == ["GENE0", "GENE1"]
    row = df.set_index("tf").loc["GENE0"]
    assert row["significant"] and row["nes"] > 1.5 and row["gene"] == _ids(n)[0]
    assert row["n_targets"] == 30
    assert not df.set_index("tf").loc["GENE1", "significant"]
    assert df.attrs["share_significant"] == 0.5
    summary = E.encode_summary(df)
    assert summary["n_tfs"] == 2 and summary["n_significant"] == 1
    assert summary["share_significant"] == 0.5
    # orientation-independent; max_tfs keeps the first TFs by name
    again = E.encode_enrichment(net.transpose(), targets, permutations=PERM, min_targets=10)
    pd.testing.assert_frame_equal(df, again)
    first = E.encode_enrichment(net, targets, permutations=PERM, min_targets=10, max_tfs=1)
    assert list(first["tf"]) == ["GENE0"]


@needs_gseapy
def test_encode_enrichment_nothing_to_test():
    net = _net(np.random.default_rng(0).random((20, 20)))
    df = E.encode_enrichment(net, {"NOPE": ["GENE1"] * 20}, permutations=10)
    assert df.empty and np.isnan(df.attrs["share_significant"])
    assert np.isnan(E.encode_summary(df)["share_significant"])


def test_encode_targets_real(tfchip_path):
    """The ENCODE lists encode_enrichment uses by default, merged per TF."""
    from bengrn.truths import encode_targets

    raw = json.loads(tfchip_path.read_text())
    assert len(raw) == 166
    merged = encode_targets(path=tfchip_path)
    assert len(merged) == len({k.split()[0].upper() for k in raw})
    fos = {g.upper() for k, v in raw.items() if k.split()[0] == "FOS" for g in v}
    assert {g.upper() for g in merged["FOS"]} == fos


@needs_gseapy
def test_encode_enrichment_tf_without_edges_is_tested_not_enriched():
    """A TF with no outgoing edge (an all-zero column, as GENIE3-TF gives a TF not
    expressed in the cells) is tested and not enriched, and the others still run."""
    n = 300
    rng = np.random.default_rng(1)
    symbols = _symbols(n)
    m = rng.random((n, n))
    m[50:80, 0] += 2.0
    m[:, 1] = 0.0  # GENE1 regulates nothing
    targets = {"GENE0": symbols[50:80], "GENE1": symbols[100:130]}
    net = GeneNetwork(m, _ids(n), var=pd.DataFrame({"symbol": symbols}, index=_ids(n)))
    df = E.encode_enrichment(net, targets, permutations=PERM, min_targets=10).set_index("tf")
    assert list(df.index) == ["GENE0", "GENE1"]
    assert df.loc["GENE0", "significant"]
    silent = df.loc["GENE1"]
    assert not silent["significant"] and silent["nes"] == 0 and silent["pval"] == 1.0
    assert silent["n_targets"] == 30


@needs_gseapy
def test_prerank_of_an_all_tied_ranking_enriches_nothing():
    ranking = pd.Series(0.0, index=_symbols(100))
    res = E.prerank(ranking, {"s": _symbols(100)[10:30], "t": _symbols(100)[40:60]},
                    permutations=PERM, min_size=5)  # fmt: skip
    assert list(res["term"]) == ["s", "t"] and (res["nes"] == 0).all()
    assert (res["pval"] == 1).all() and (res["n_genes"] == 20).all()
