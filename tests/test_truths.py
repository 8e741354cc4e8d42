"""Ground truths (bengrn.truths) on the real shared files and on small constructed inputs."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bengrn import GeneNetwork
from bengrn import truths as T


def edge_set(net: GeneNetwork) -> set[tuple[str, str]]:
    e = net.edges(self_edges=True)
    return set(zip(e["regulator"], e["target"], strict=True))


def assert_binary_truth(net: GeneNetwork, method: str) -> None:
    assert net.method == method
    assert net.orientation == "target_by_regulator"
    assert net.is_sparse and net.matrix.format == "csr"
    assert net.matrix.dtype == np.float32
    assert np.all(net.matrix.data == 1)
    assert (net.var["symbol"] == net.genes).all()
    assert net.params["n_edges"] == net.matrix.nnz


# --------------------------------------------------------------------------- McCalla


def test_mcalla_hesc_ground_truth(mcalla_dir):
    net = T.mcalla(mcalla_dir)  # dataset detected from the file names
    assert_binary_truth(net, "mcalla-hesc")
    assert net.matrix.nnz == 12_986
    assert net.params["n_regulators"] == 35 and net.params["n_targets"] == 6_529
    assert net.n_genes == 6_532 and net.params["n_self_edges"] == 19
    assert int(net.var["is_regulator"].sum()) == 35
    # the file's first edge ATF3 -> ABHD3: row = target, column = regulator
    g = net.genes
    assert net.matrix[g.get_loc("ABHD3"), g.get_loc("ATF3")] == 1
    assert net.matrix[g.get_loc("ATF3"), g.get_loc("ABHD3")] == 0
    # the same as reading the two columns by hand
    raw = pd.read_csv(mcalla_dir / "hESC_ground_truth.tsv", sep="\t", header=None)
    assert edge_set(net) == set(zip(raw[0], raw[1], strict=True))


def test_mcalla_gold_standards_and_restriction(mcalla_dir):
    gt = T.mcalla(mcalla_dir, dataset="hesc")
    same = T.mcalla(mcalla_dir, dataset="hESC", gold_standard="chipunion_KDUnion_intersect")
    assert edge_set(same) == edge_set(gt)
    lit = T.mcalla(mcalla_dir, gold_standard="lit")
    assert lit.params["gold_standard"] == "lit" and 0 < lit.matrix.nnz <= 330
    with pytest.raises(FileNotFoundError, match="available:.*lit"):
        T.mcalla(mcalla_dir, gold_standard="nope")
    genes = pd.read_csv(mcalla_dir / "hESC_Chen_Genes.tsv", header=None)[0].tolist()
    sub = T.mcalla(mcalla_dir, restrict_to=genes)
    assert list(sub.genes) == genes  # genes without a known edge included
    assert edge_set(sub) <= edge_set(gt) and sub.matrix.nnz < gt.matrix.nnz
    assert sub.params["dropped_outside_genes"] == gt.matrix.nnz - sub.matrix.nnz


def test_mcalla_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="stone_and_sroy"):
        T.mcalla(tmp_path / "absent")
    with pytest.raises(ValueError, match="dataset"):
        T.mcalla(tmp_path)  # a folder with no benchmark files


def test_mcalla_expression_exact_counts(mcalla_dir, mcalla_log2):
    adata = T.mcalla_expression(mcalla_dir)
    assert adata.shape == (385, 8_595) == mcalla_log2.T.shape
    assert list(adata.obs_names) == list(mcalla_log2.columns)
    x = adata.X.toarray()
    assert np.array_equal(x, np.rint(x)) and x.min() == 0
    assert np.median(x.sum(axis=1)) == 532
    np.testing.assert_array_equal(adata.obs["total_counts"], x.sum(axis=1))
    np.testing.assert_array_equal(adata.layers["log2"].toarray(), mcalla_log2.to_numpy().T)
    assert int(adata.var["is_tf"].sum()) == 220
    assert bool(adata.var["in_benchmark"].all())
    assert (adata.obs["organism_ontology_term_id"] == "NCBITaxon:9606").all()
    assert adata.uns["mcalla"]["dataset"] == "hESC"


# ------------------------------------------------------------------ count recovery


def test_recover_log2_counts_real(mcalla_log2):
    v = mcalla_log2.to_numpy()  # genes x cells
    counts = T.recover_log2_counts(v, cell_axis=1)
    assert counts.dtype == np.int64 and counts.shape == v.shape
    direct = 2 ** (2**v - 1) - 1
    assert np.abs(direct - counts).max() < 1e-6
    sparse = T.recover_log2_counts(sp.csr_matrix(v), cell_axis=1)
    assert sp.issparse(sparse) and np.array_equal(sparse.toarray(), counts)


def test_recover_refuses_singly_logged(mcalla_log2):
    counts = T.recover_log2_counts(mcalla_log2.to_numpy()[:500])
    with pytest.raises(ValueError, match="only once"):
        T.recover_log2_counts(np.log2(counts + 1.0))
    # the paper's recipe on the real data (undo once, divide by the per-cell minimum)
    # leaves non-integers: refused with each attempt's deviation
    once = 2 ** mcalla_log2.to_numpy() - 1
    with pytest.raises(ValueError, match="cannot recover"):
        T.recover_log2_counts(np.log2(once + 1) * 1.01, cell_axis=1)


def test_recover_paper_recipe_normalised_input(caplog):
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(6, 40)).astype(np.int64)  # cells x genes
    counts[:, 0] = 1  # every cell's smallest non-zero count is 1
    size = 1e4 / counts.sum(axis=1, keepdims=True)
    logged = np.log2(counts * size + 1)
    with caplog.at_level(logging.INFO, logger="bengrn.truths"):
        out = T.recover_log2_counts(logged)
    assert np.array_equal(out, counts)
    assert "recipe" in caplog.text
    # genes x cells, dense and sparse alike
    assert np.array_equal(T.recover_log2_counts(logged.T, cell_axis=1), counts.T)
    out_sp = T.recover_log2_counts(sp.csr_matrix(logged.T), cell_axis=1)
    assert np.array_equal(out_sp.toarray(), counts.T)


def test_recover_bad_inputs():
    with pytest.raises(ValueError, match="negative"):
        T.recover_log2_counts(np.array([[0.0, -1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        T.recover_log2_counts(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="cannot recover"):
        T.recover_log2_counts(np.random.default_rng(0).random((4, 5)) + 0.1)
    with pytest.raises(ValueError, match="cell_axis"):
        T.recover_log2_counts(np.zeros((2, 2)), cell_axis=2)


# ------------------------------------------------------------------------ OmniPath


@pytest.fixture(scope="module")
def omni_table(omnipath_path):
    return pd.read_parquet(omnipath_path)


@pytest.fixture(scope="module")
def omni(omnipath_path):
    return T.omnipath(path=omnipath_path)


@pytest.fixture(scope="module")
def usable_symbols():
    """Symbols of the human gene table naming one gene (its chrX/chrY copies counted once)
    that are not lncRNAs, computed here independently of the loader."""
    from scdataloader.genes import load_genes

    g = load_genes("human")
    n = g["symbol"].value_counts()
    several = g[g["symbol"].isin(n.index[n > 1])]
    chroms = several.groupby("symbol")["chromosome"].agg(lambda c: tuple(sorted(c)))
    unique = set(n.index[n == 1]) | set(chroms.index[chroms == ("chrX", "chrY")])
    return unique - set(g["symbol"][g["biotype"] == "lncRNA"])


def test_omnipath_unfiltered_matches_pandas(omnipath_path, omni_table):
    net = T.omnipath(path=omnipath_path, filter_genes=False)
    tx = omni_table[omni_table["type"] == "transcriptional"]
    assert len(tx) == 128_218
    expected = set(zip(tx["source"], tx["target"], strict=True))
    assert net.matrix.nnz == len(expected) == 128_218 - 653
    assert edge_set(net) == expected
    assert net.params["n_regulators"] == 1_358 and net.params["n_targets"] == 15_542


def test_omnipath_filtered_matches_pandas(omni, omni_table, usable_symbols):
    assert_binary_truth(omni, "omnipath")
    tx = omni_table[omni_table["type"] == "transcriptional"]
    ok = tx["source"].isin(usable_symbols) & tx["target"].isin(usable_symbols)
    expected = set(zip(tx["source"][ok], tx["target"][ok], strict=True))
    assert edge_set(omni) == expected
    assert omni.matrix.nnz == 80_049
    p = omni.params
    dropped = [p[f"dropped_{k}"] for k in ("type", "resources", "missing", "small_molecule")]
    dropped += [p[f"dropped_{k}"] for k in ("complex", "not_symbol", "ambiguous", "lncRNA")]
    assert p["rows"] - sum(dropped) == p["rows_kept"] == int(ok.sum())
    assert p["dropped_type"] == 278_579 - 128_218
    assert p["dropped_complex"] > 0 and p["dropped_not_symbol"] > 0 and p["dropped_lncRNA"] > 0


def test_omnipath_keeps_only_unique_non_lncrna_symbols(omni):
    from scdataloader.genes import load_genes

    g = load_genes("human")
    genes = pd.Index(omni.genes)
    assert genes.isin(g["symbol"]).all()
    assert not genes.str.startswith("COMPLEX:").any()
    lnc = set(g["symbol"][g["biotype"] == "lncRNA"])
    assert not genes.isin(list(lnc)).any()
    # a pseudoautosomal gene (one chrX and one chrY copy) is one gene and is kept
    par = g[g["symbol"] == "CD99"]["chromosome"].tolist()
    assert sorted(par) == ["chrX", "chrY"]


def test_omnipath_interaction_types(omnipath_path, omni):
    allnet = T.omnipath(path=omnipath_path, interaction_type="all")
    assert edge_set(omni) <= edge_set(allnet)
    assert allnet.params["dropped_type"] == 0 and allnet.params["interaction_type"] == "all"
    ptm = T.omnipath(path=omnipath_path, interaction_type=["post_translational"])
    assert ptm.params["interaction_type"] == ["post_translational"]
    with pytest.raises(ValueError, match="transcriptional"):
        T.omnipath(path=omnipath_path, interaction_type="nonsense")


def test_collectri_dorothea_subsets(omnipath_path, omni, omni_table):
    tx = omni_table[omni_table["type"] == "transcriptional"]
    whole = edge_set(omni)
    subsets = {}
    for fn, name in ((T.collectri, "CollecTRI"), (T.dorothea, "DoRothEA")):
        net = fn(path=omnipath_path)
        assert_binary_truth(net, name.lower())
        assert edge_set(net) <= whole and 0 < net.matrix.nnz < omni.matrix.nnz
        kept = int(tx["sources"].str.contains(name, case=False).sum())
        assert net.params["dropped_resources"] == len(tx) - kept
        subsets[name] = edge_set(net)
    both = T.omnipath(path=omnipath_path, resources=["collectri", "dorothea"])
    assert edge_set(both) == subsets["CollecTRI"] | subsets["DoRothEA"]
    with pytest.raises(TypeError, match="resources"):
        T.collectri(path=omnipath_path, resources="x")


def test_omnipath_small_tables(tmp_path):
    table = pd.DataFrame(
        {
            "source": ["TP53", "COMPLEX:JUN_FOS", "P04637", "MYC", "CHEBI:15377", "TP53"],
            "target": ["MDM2", "MMP1", "MDM2", "MALAT1", "TP53", "MDM2"],
            "type": ["transcriptional"] * 6,
            "sources": ["CollecTRI", "CollecTRI", "DoRothEA_A", "x", "x", "TRRUST_CollecTRI"],
        }
    )
    path = tmp_path / "omni.csv"
    table.to_csv(path, index=False)
    net = T.omnipath(path=path)
    assert edge_set(net) == {("TP53", "MDM2")}
    p = net.params
    assert (p["dropped_small_molecule"], p["dropped_complex"], p["dropped_not_symbol"]) == (
        1,
        1,
        1,
    )
    assert p["dropped_lncRNA"] == 1 and p["n_duplicate_rows"] == 1
    with pytest.raises(ValueError, match="no edges left"):
        T.dorothea(path=path)  # its only row names a UniProt id
    table.drop(columns="type").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['type'\]"):
        T.omnipath(path=path)
    assert T.omnipath(path=path, interaction_type="all").matrix.nnz == 1
    with pytest.raises(FileNotFoundError):
        T.omnipath(path=tmp_path / "absent.parquet")
    with pytest.raises(ValueError, match="mouse"):
        T.omnipath(organism="mouse")
    with pytest.raises(ValueError, match="organism"):
        T.omnipath(path=path, organism="yeast")


def test_omnipath_online(monkeypatch):
    monkeypatch.setitem(sys.modules, "omnipath", None)
    with pytest.raises(ImportError, match="pip install omnipath"):
        T.omnipath(online=True)
    calls = {}

    def get(**kwargs):
        calls.update(kwargs)
        return pd.DataFrame(
            {
                "source": ["P04637", "P01106"],
                "target": ["Q00987", "P04637"],
                "source_genesymbol": ["TP53", "MYC"],
                "target_genesymbol": ["MDM2", "TP53"],
                "type": ["transcriptional", "post_translational"],
                "sources": [["CollecTRI", "TRRUST_CollecTRI"], ["SIGNOR"]],
            }
        )

    stub = SimpleNamespace(interactions=SimpleNamespace(AllInteractions=SimpleNamespace(get=get)))
    monkeypatch.setitem(sys.modules, "omnipath", stub)
    net = T.collectri(online=True)
    assert edge_set(net) == {("TP53", "MDM2")} and net.params["file"] == "online"
    assert {"small_molecule", "lncrna_mrna"} <= set(calls["exclude"])
    assert edge_set(T.omnipath(online=True, interaction_type="all")) == {
        ("TP53", "MDM2"),
        ("MYC", "TP53"),
    }


# ------------------------------------------------------------------- other formats


def test_perturbseq():
    genes = ["A", "B", "C", "D"]
    pv = pd.DataFrame(
        [[0.001, 0.01, 0.5, np.nan], [0.2, 0.0, 0.049, 0.05], [0.9, 0.9, 0.9, 0.9]],
        index=["A", "B", "E"],
        columns=genes,
    )
    net = T.perturbseq(pv)
    assert_binary_truth(net, "perturbseq")
    assert edge_set(net) == {("A", "B"), ("B", "C")}  # A->A and B->B self-edges dropped
    assert list(net.genes) == ["A", "B", "C", "D", "E"]
    assert net.params["dropped_self_edges"] == 2 and net.params["n_missing_values"] == 1
    assert edge_set(T.perturbseq(pv, cutoff=0.051)) == {("A", "B"), ("B", "C"), ("B", "D")}
    with pytest.raises(ValueError, match="no edges"):
        T.perturbseq(pv, cutoff=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        T.perturbseq(pv * 10)
    with pytest.raises(ValueError, match="cutoff"):
        T.perturbseq(pv, cutoff=0)


def test_perturbseq_files(tmp_path):
    pv = pd.DataFrame([[0.01, 0.5], [0.001, 0.02]], index=["X", "Y"], columns=["Y", "Z"])
    expected = {("X", "Y"), ("Y", "Z")}
    pv.to_csv(tmp_path / "p.csv")
    pv.to_csv(tmp_path / "p.tsv", sep="\t")
    pv.to_parquet(tmp_path / "p.parquet")
    obs, var = pd.DataFrame(index=pv.index), pd.DataFrame(index=pv.columns)
    ad.AnnData(pv.to_numpy(), obs=obs, var=var).write_h5ad(tmp_path / "p.h5ad")
    for name in ("p.csv", "p.tsv", "p.parquet", "p.h5ad"):
        net = T.perturbseq(tmp_path / name)
        assert edge_set(net) == expected, name
        assert net.params["file"].endswith(name)
    with pytest.raises(FileNotFoundError):
        T.perturbseq(tmp_path / "absent.csv")


def test_beeline(tmp_path):
    ref = tmp_path / "refNetwork.csv"
    ref.write_text("Gene1,Gene2,Type\nGata1,Spi1,-\nGata1,Klf1,+\nSpi1,Gata1,-\nGata1,Spi1,-\n")
    net = T.beeline(ref)
    assert_binary_truth(net, "beeline")
    assert edge_set(net) == {("Gata1", "Spi1"), ("Gata1", "Klf1"), ("Spi1", "Gata1")}
    assert net.params["n_repression_rows"] == 3 and net.params["n_duplicate_rows"] == 1
    g = net.genes
    assert net.matrix[g.get_loc("Klf1"), g.get_loc("Gata1")] == 1  # Gene1 regulates Gene2
    plain = tmp_path / "plain.tsv"
    plain.write_text("Gata1\tSpi1\nSpi1\tGata1\n")
    assert edge_set(T.beeline(plain)) == {("Gata1", "Spi1"), ("Spi1", "Gata1")}
    df = pd.DataFrame({"Gene1": ["a"], "Gene2": ["b"]})
    assert edge_set(T.beeline(df)) == {("a", "b")}
    with pytest.raises(ValueError, match="Gene2"):
        T.beeline(pd.DataFrame({"Gene1": ["a"], "x": ["b"]}))
    with pytest.raises(FileNotFoundError):
        T.beeline(tmp_path / "absent.csv")


def test_edge_list(tmp_path):
    df = pd.DataFrame({"tf": ["A", "A", "B", None], "gene": ["B", "C", "C", "D"]})
    net = T.edge_list(df, source="tf", target="gene")
    assert_binary_truth(net, "edge_list")
    assert edge_set(net) == {("A", "B"), ("A", "C"), ("B", "C")}
    assert net.params["dropped_missing"] == 1
    with pytest.raises(ValueError, match="source= and target="):
        T.edge_list(df)
    with pytest.raises(ValueError, match=r"\['regulator'\]"):
        T.edge_list(df, source="regulator", target="gene")
    (tmp_path / "e.csv").write_text("source,target\nA,B\nB,C\n")
    (tmp_path / "e.txt").write_text("A B\nB C\n")
    (tmp_path / "h.tsv").write_text("tf\tgene\nA\tB\nB\tC\n")
    df.dropna().rename(columns={"tf": "source", "gene": "target"}).to_parquet(
        tmp_path / "e.parquet"
    )
    assert edge_set(T.edge_list(tmp_path / "e.csv")) == {("A", "B"), ("B", "C")}
    assert edge_set(T.edge_list(tmp_path / "e.txt")) == {("A", "B"), ("B", "C")}
    hdr = T.edge_list(tmp_path / "h.tsv", source="tf", target="gene", method="custom")
    assert edge_set(hdr) == {("A", "B"), ("B", "C")} and hdr.method == "custom"
    assert edge_set(T.edge_list(tmp_path / "e.parquet")) == {("A", "B"), ("A", "C"), ("B", "C")}
    (tmp_path / "one.csv").write_text("A\nB\n")
    with pytest.raises(ValueError, match="two columns"):
        T.edge_list(tmp_path / "one.csv")


def test_truth_round_trips_through_h5ad(tmp_path):
    net = T.edge_list(pd.DataFrame({"source": ["A"], "target": ["B"]}))
    back = GeneNetwork.read(net.write(tmp_path / "t.h5ad"))
    assert edge_set(back) == {("A", "B")} and back.params == net.params


# ------------------------------------------------------------------------ dispatch


def test_load_truth_names(omnipath_path, mcalla_dir, monkeypatch):
    assert T.load_truth("CollecTRI", path=omnipath_path).method == "collectri"
    assert T.load_truth("dorothea", path=omnipath_path).method == "dorothea"
    hesc = T.load_truth("mcalla_hesc", directory=mcalla_dir)
    assert hesc.method == "mcalla-hesc" and hesc.matrix.nnz == 12_986
    monkeypatch.setenv(T.MCALLA_ENV_VAR, str(mcalla_dir))
    assert T.load_truth("mcalla-hesc", gold_standard="lit").params["gold_standard"] == "lit"
    monkeypatch.delenv(T.MCALLA_ENV_VAR)
    with pytest.raises(ValueError, match="stone_and_sroy"):
        T.load_truth("mcalla-mesc")
    with pytest.raises(ValueError, match="omnipath, collectri, dorothea, mcalla-hesc"):
        T.load_truth("string-db")
    with pytest.raises(ValueError, match="mouse"):
        T.load_truth("omnipath", organism="mouse")


def test_load_truth_files(tmp_path):
    (tmp_path / "ref.csv").write_text("Gene1,Gene2,Type\nA,B,+\n")
    (tmp_path / "e.tsv").write_text("A\tB\nB\tC\n")
    assert T.load_truth(tmp_path / "ref.csv").method == "beeline"
    net = T.load_truth(str(tmp_path / "e.tsv"))
    assert net.method == "edge_list" and net.matrix.nnz == 2
    written = net.write(tmp_path / "net.h5ad")
    assert edge_set(T.load_truth(written)) == edge_set(net)
    with pytest.raises(FileNotFoundError):
        T.load_truth(tmp_path / "absent.tsv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="format"):
        T.load_truth(tmp_path / "x.json")


# -------------------------------------------------------------------- TFs and ChIP


def test_tf_list(tfs_human_path, tmp_path):
    tfs = T.tf_list(path=tfs_human_path)
    assert len(tfs) == len(set(tfs)) == 1_639  # 1,638 newlines: the last line has none
    assert "PHF19" in tfs and all(t == t.strip() for t in tfs)
    (tmp_path / "tfs.txt").write_text("A\n\n B \nA\n")
    assert T.tf_list(path=tmp_path / "tfs.txt") == ["A", "B"]
    with pytest.raises(FileNotFoundError):
        T.tf_list(path=tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="organism"):
        T.tf_list("yeast")


def test_encode_targets(tfchip_path, tmp_path):
    raw = T.encode_targets(path=tfchip_path, merge_cell_lines=False)
    assert len(raw) == 166 and "FOS H1" in raw
    merged = T.encode_targets(path=tfchip_path)
    assert len(merged) == 95 and "FOS" in merged
    fos = set().union(*(v for k, v in raw.items() if k.split(" ")[0] == "FOS"))
    assert set(merged["FOS"]) == fos and len(merged["FOS"]) == len(fos)
    (tmp_path / "bad.json").write_text('{"FOS H1": "MYC"}')
    with pytest.raises(ValueError, match="lists"):
        T.encode_targets(path=tmp_path / "bad.json")
