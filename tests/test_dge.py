"""Differential expression per cell type (scprint.tl.dge): pseudobulk and mixed models.

Real data: the wu2020 T cells, tumour against blood within CD4 and CD8 T cells, patients
as donors. Simulated data: negative-binomial counts with donor effects and planted fold
changes, where both methods must find the planted genes and few others.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

pytest.importorskip("pydeseq2")
pytest.importorskip("statsmodels")

from scprint import tl  # noqa: E402

# the module (scprint.tl.dge, the attribute, is the function)
dge_module = importlib.import_module("scprint.tl.dge")

METHODS = ("pseudobulk", "lmm")
DGE_ARGS = {"groupby": "lineage", "condition": "source", "reference": "Blood",
            "target": "Tumor", "donor_key": "patient", "min_cells": 1, "progress": False}  # fmt: skip


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def tcells(wu2020) -> ad.AnnData:
    """The wu2020 T cells with a CD4 / CD8 / other lineage column (from the subtypes)."""
    a = wu2020.copy()
    first = a.obs["cluster_orig"].astype(str).str[0]
    a.obs["lineage"] = first.map({"4": "CD4", "8": "CD8"}).fillna("other")
    return a


@pytest.fixture(scope="module")
def tcell_genes(tcells) -> list[str]:
    """The 100 genes with the most counts in the blood and tumour cells."""
    cells = tcells.obs["source"].isin(["Blood", "Tumor"]).to_numpy()
    totals = np.asarray(tcells.X[cells].sum(axis=0)).ravel()
    return list(tcells.var_names[np.argsort(-totals, kind="stable")[:100]])


@pytest.fixture(scope="module")
def tcell_tables(tcells, tcell_genes) -> dict[str, tuple[pd.DataFrame, list]]:
    """Both methods' tables on the T cells, and the warnings each raised."""
    before = tcells.copy()
    out = {}
    for method in METHODS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = tl.dge(tcells, method=method, genes=tcell_genes, **DGE_ARGS)
        out[method] = (table, [w for w in caught if issubclass(w.category, tl.DGEWarning)])
    # the user's AnnData is left as it was
    assert (tcells.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(tcells.obs, before.obs)
    assert list(tcells.layers) == list(before.layers) and list(tcells.uns) == list(before.uns)
    return out


# --------------------------------------------------------------------------- pure parts


def test_bh_adjust_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-3, 20), [np.nan, np.nan]])
    adjusted = tl.bh_adjust(p)
    ok = np.isfinite(p)
    expected = multipletests(p[ok], method="fdr_bh")[1]
    np.testing.assert_allclose(adjusted[ok], expected, rtol=1e-12)
    assert np.isnan(adjusted[~ok]).all()
    assert (adjusted[ok] >= p[ok]).all() and (adjusted[ok] <= 1).all()


@pytest.mark.parametrize("paired", [False, True])
def test_gls_se_matches_statsmodels_and_least_squares(paired):
    import statsmodels.api as sm
    from statsmodels.regression.mixed_linear_model import MixedLM

    rng = np.random.default_rng(2)
    donors = np.repeat(np.arange(10), rng.integers(5, 30, 10))
    x = rng.integers(0, 2, len(donors)) if paired else (donors >= 5)
    y = 0.5 * x + rng.normal(0, 0.7, 10)[donors] + rng.normal(0, 1, len(donors))
    exog = np.column_stack([np.ones(len(y)), x]).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = MixedLM(y, exog, groups=donors).fit(reml=True, method="powell")
    se = dge_module.gls_se(exog, donors, float(np.ravel(fit.cov_re)[0]), fit.scale)
    np.testing.assert_allclose(se, fit.bse_fe[1], rtol=5e-3)  # away from the boundary
    ols = sm.OLS(y, exog).fit()  # no donor variance: least squares
    np.testing.assert_allclose(dge_module.gls_se(exog, donors, 0.0, ols.scale), ols.bse[1])


def test_lmm_does_not_trust_genes_seen_in_two_cells(tcells):
    """With the donor variance on the boundary, statsmodels' Hessian standard error was
    ~30 times too small: BCOR (2 of 57 CD4 cells) came out at p ~ 1e-30."""
    table = tl.dge(tcells, method="lmm", genes=["BCOR", "MTSS1"], groups=["CD4"], **DGE_ARGS)
    assert (table["pvalue"] > 1e-3).all()


def test_pseudobulk_sums_the_cells_of_each_sample():
    rng = np.random.default_rng(1)
    X = sp.random(30, 7, density=0.4, random_state=1, format="csr") * 10
    samples = rng.choice(["d1:a", "d1:b", "d2:a"], size=30)
    sums, labels, n_cells = tl.pseudobulk(X, samples)
    dense = X.toarray()
    for i, label in enumerate(labels):
        np.testing.assert_allclose(sums[i], dense[samples == label].sum(axis=0))
        assert n_cells[i] == (samples == label).sum()


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("method", METHODS)
def test_tumour_vs_blood_tables_are_sane(tcells, tcell_genes, tcell_tables, method):
    table, skipped = tcell_tables[method]
    assert list(table.columns) == list(tl.COLUMNS)
    # 'other' (one blood donor) is skipped with a warning; CD4 and CD8 are tested
    assert set(table["cell_type"]) == {"CD4", "CD8"}
    assert len(skipped) == 1 and "'other'" in str(skipped[0].message)
    assert table.attrs["target"] == "Tumor" and table.attrs["reference"] == "Blood"
    assert set(table["gene"]) <= set(tcell_genes)

    p, padj = table["pvalue"].to_numpy(), table["padj"].to_numpy()
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert (padj >= p - 1e-15).all() and (padj <= 1).all()
    called = padj < 0.05
    assert (table.loc[called & (table["log2fc"] > 0), "direction"] == "up").all()
    assert (table.loc[called & (table["log2fc"] < 0), "direction"] == "down").all()
    assert (table.loc[~called, "direction"] == "none").all()

    # donors and cells per condition, counted here from obs
    cells = tcells.obs[tcells.obs["source"].isin(["Blood", "Tumor"])]
    for lineage, rows in table.groupby("cell_type"):
        sub = cells[cells["lineage"] == lineage]
        blood, tumour = sub[sub["source"] == "Blood"], sub[sub["source"] == "Tumor"]
        assert rows["n_donors_reference"].iloc[0] == blood["patient"].nunique()
        assert rows["n_donors_target"].iloc[0] == tumour["patient"].nunique()
        assert rows["n_cells_reference"].iloc[0] == len(blood)
        assert rows["n_cells_target"].iloc[0] == len(tumour)

    # the fold change's sign follows the group means, computed here independently
    agree, rho = [], []
    for lineage, rows in table.groupby("cell_type"):
        sub = tcells[tcells.obs["source"].isin(["Blood", "Tumor"]).to_numpy()
                     & (tcells.obs["lineage"] == lineage).to_numpy()]  # fmt: skip
        counts = sub.X.toarray().astype(np.float64)
        tumour = (sub.obs["source"] == "Tumor").to_numpy()
        col = sub.var_names.get_indexer(rows["gene"])
        if method == "pseudobulk":  # pooled counts per million
            cpm = [counts[m].sum(0) / counts[m].sum() * 1e6 for m in (~tumour, tumour)]
            effect = np.log2((cpm[1][col] + 1) / (cpm[0][col] + 1))
        else:  # mean log1p(1e4-normalised) expression of the cells
            logn = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
            effect = logn[tumour][:, col].mean(0) - logn[~tumour][:, col].mean(0)
        strong = rows["pvalue"].to_numpy() < 0.01
        agree += list(np.sign(rows["log2fc"].to_numpy()[strong]) == np.sign(effect[strong]))
        rho.append(stats.spearmanr(rows["log2fc"], effect).statistic)
    assert len(agree) >= 5 and np.mean(agree) >= 0.9
    assert min(rho) > 0.5

    # known biology: the immediate-early genes FOS and JUNB are up in tumour CD4 T cells
    up = set(table[(table["cell_type"] == "CD4") & (table["direction"] == "up")]["gene"])
    assert {"FOS", "JUNB"} <= up


def test_pseudobulk_normalisation_does_not_depend_on_the_genes_tested(tcells, tcell_tables):
    """Size factors from two tested genes alone would cancel their own change; control
    genes (the most counted ones) set them instead."""
    full, _ = tcell_tables["pseudobulk"]
    full = full[full["cell_type"] == "CD4"].set_index("gene")
    two = tl.dge(tcells, method="pseudobulk", genes=["FOS", "JUNB"], groups=["CD4"], **DGE_ARGS)
    two = two.set_index("gene")
    assert set(two.index) == {"FOS", "JUNB"}
    np.testing.assert_allclose(two["log2fc"], full.loc[two.index, "log2fc"], atol=0.3)
    assert (two["log2fc"] > 1).all() and (two["mean_target"] > two["mean_reference"]).all()


def test_designs_follow_the_donors(tcell_tables):
    pb, _ = tcell_tables["pseudobulk"]
    # CD4 and CD8 each have >= 2 patients with blood and tumour cells: a paired design
    assert set(pb["design"]) == {"~ donor + condition"}
    lmm, _ = tcell_tables["lmm"]
    assert set(lmm["design"]) == {"y ~ condition + (1 | donor)"}


# --------------------------------------------------------------------------- simulation


@pytest.fixture(scope="module")
def simulated() -> tuple[ad.AnnData, dict[str, int]]:
    return tl.simulate_donor_counts(0)


@pytest.mark.parametrize("method", METHODS)
def test_planted_fold_changes_are_recovered(simulated, method):
    adata, planted = simulated
    table = tl.dge(adata, groupby="cell_type", condition="condition", reference="normal",
                   donor_key="donor", method=method, progress=False)  # fmt: skip
    assert set(table["cell_type"]) == {"A", "B"}
    assert (table["n_donors_reference"] == 5).all() and (table["n_donors_target"] == 5).all()
    assert set(table["design"]) == {"~ condition" if method == "pseudobulk" else
                                    "y ~ condition + (1 | donor)"}  # fmt: skip
    a = table[table["cell_type"] == "A"].set_index("gene")
    found = a.loc[list(planted)]
    hits = found["padj"] < 0.05
    recall = hits.mean()
    assert recall > 0.8, f"{method}: recall {recall:.2f}"
    signs = np.sign(found.loc[hits, "log2fc"]).astype(int)
    assert (signs == pd.Series(planted)[hits.to_numpy()]).all()
    assert (found.loc[hits, "direction"] == np.where(signs > 0, "up", "down")).all()
    nulls = pd.concat([a.drop(index=list(planted)), table[table["cell_type"] == "B"]])
    false_rate = (nulls["padj"] < 0.05).mean()
    assert false_rate < 0.05, f"{method}: {false_rate:.3f} of null genes called"


# --------------------------------------------------------------------------- options


def _linear_classifier(genes: list[str], strong: list[str]):
    """A linear scprint.tabular classifier whose weights favour the ``strong`` genes."""
    import torch

    from scprint.tabular import TabularClassifier
    from scprint.tabular.nn import build_model

    model = build_model("linear", len(genes), 2)
    weights = torch.full((2, len(genes)), 0.01)
    for rank, gene in enumerate(strong):
        weights[rank % 2, genes.index(gene)] = 5.0 - 0.5 * rank
    with torch.no_grad():
        model.fc.weight.copy_(weights)
    return TabularClassifier(model, model_name="linear", model_kwargs={}, genes=genes,
                             classes=["CD4", "CD8"])  # fmt: skip


def test_model_top_k_genes(tcells, tcell_genes):
    strong = ["FOS", "JUNB", "CD74", "RPL32", "ZFP36"]
    genes = tcell_genes[:60] + [g for g in strong if g not in tcell_genes[:60]]
    clf = _linear_classifier(genes + ["NOT_A_GENE"], strong)
    assert tl.model_top_genes(clf, k=4) == strong[:4]
    with pytest.warns(tl.DGEWarning, match="'other' skipped"):
        table = tl.dge(tcells, method="lmm", genes="model_top_k", model=clf, k=4, **DGE_ARGS)
    assert set(table["gene"]) == set(strong[:4])
    with pytest.raises(tl.DGEError, match="model="):
        tl.dge(tcells, method="lmm", genes="model_top_k", **DGE_ARGS)


def test_model_top_genes_of_selections_and_attributions(tcells, tcell_genes):
    from scprint.tabular import FeatureSelection, TabularClassifier
    from scprint.tabular.nn import build_model

    scores = pd.Series([0.1, 3.0, 2.0], index=["A", "B", "C"])
    selection = FeatureSelection(scores=scores, genes=["B", "C"], per_class=pd.DataFrame(),
                                 chunks=[["A", "B", "C"]])  # fmt: skip
    assert tl.model_top_genes(selection, k=2) == ["B", "C"]
    mlp = TabularClassifier(build_model("mlp", 30, 2, hidden=8, n_layers=1), model_name="mlp",
                            model_kwargs={}, genes=tcell_genes[:30], classes=["a", "b"])  # fmt: skip
    with pytest.raises(tl.DGEError, match="pass the AnnData"):
        tl.model_top_genes(mlp, k=5)
    top = tl.model_top_genes(mlp, tcells, k=5)
    mean = mlp.class_attributions(tcells).mean(axis=0)
    assert top == list(mean.sort_values(ascending=False, kind="stable").index[:5])


def test_denoised_layer(tcells, tcell_genes):
    rng = np.random.default_rng(0)
    a = tcells[tcells.obs["lineage"] == "CD4"].copy()
    counts = a.X.toarray()
    a.layers["denoised"] = counts + rng.uniform(-0.45, 0.45, counts.shape) * (counts > 0)
    a.layers["rounded"] = np.rint(a.layers["denoised"])
    genes = tcell_genes[:40]
    with pytest.raises(tl.DGEError, match="allow_non_counts"):
        tl.dge(a, method="pseudobulk", genes=genes, layer="denoised", **DGE_ARGS)
    got = tl.dge(a, method="pseudobulk", genes=genes, layer="denoised",
                 allow_non_counts=True, **DGE_ARGS)  # fmt: skip
    want = tl.dge(a, method="pseudobulk", genes=genes, layer="rounded", **DGE_ARGS)
    pd.testing.assert_frame_equal(got, want)  # non-integer values are rounded
    # the mixed model takes the denoised values as they are (after normalisation)
    lmm = tl.dge(a, method="lmm", genes=genes[:10], layer="denoised", **DGE_ARGS)
    assert np.isfinite(lmm["pvalue"]).all() and set(lmm["gene"]) <= set(genes[:10])
    assert len(lmm) == 10 and set(lmm["cell_type"]) == {"CD4"}
    assert not np.allclose(a.layers["denoised"], counts)  # the layers were not touched


# --------------------------------------------------------------------------- errors


def _no_fitting(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model was fitted before the input was checked")

    monkeypatch.setattr(dge_module, "_deseq2", fail)
    monkeypatch.setattr(dge_module, "_lmm", fail)


def _with(adata: ad.AnnData, **changes) -> ad.AnnData:
    a = adata.copy()
    for key, value in changes.items():
        a.obs[key] = value
    return a


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_column", "donor_key='patient' is not a column of adata.obs"),
        ("nan_condition", "obs['source'] has 2 missing"),
        ("nan_donor", "obs['patient'] has 1 missing"),
        ("unknown_reference", "reference='blood' is not a level"),
        ("three_levels", "say which to test with target="),
        ("log_normalised", "non-integer values"),
        ("nan_values", "NaN or infinite"),
        ("negative_values", "negative values"),
        ("one_donor_each", "No cell type of obs['lineage'] can be tested"),
        ("unknown_genes", "None of the 2 genes"),
    ],
)
def test_errors_are_clear_and_raised_before_fitting(tcells, monkeypatch, case, message):
    _no_fitting(monkeypatch)
    a, kwargs = tcells, dict(DGE_ARGS, method="pseudobulk", genes=["FOS", "JUNB"])
    if case == "missing_column":
        a = tcells.copy()
        del a.obs["patient"]
    elif case == "nan_condition":
        source = tcells.obs["source"].astype(object).copy()
        source.iloc[:2] = np.nan
        a = _with(tcells, source=source)
    elif case in ("nan_donor", "one_donor_each"):
        blood = np.flatnonzero((tcells.obs["source"] == "Blood").to_numpy())
        patient = tcells.obs["patient"].astype(object).copy()
        if case == "nan_donor":
            patient.iloc[blood[0]] = np.nan
        else:  # every blood cell from one patient
            patient.iloc[blood] = "Lung6"
        a = _with(tcells, patient=patient)
    elif case == "unknown_reference":
        kwargs["reference"] = "blood"
    elif case == "three_levels":
        kwargs["target"] = None
    elif case == "log_normalised":
        a = tcells.copy()
        a.X = a.X.copy()
        a.X.data = np.log1p(a.X.data)
    elif case in ("nan_values", "negative_values"):
        a = tcells.copy()
        row = np.flatnonzero((a.obs["source"] == "Tumor").to_numpy())[0]
        start = a.X.indptr[row]
        a.X.data[start : start + 3] = np.nan if case == "nan_values" else -1.0
        kwargs["method"] = "lmm"
    elif case == "unknown_genes":
        kwargs["genes"] = ["NOT_A_GENE", "ALSO_NOT"]
    with pytest.raises(tl.DGEError, match=message.replace("[", r"\[").replace("(", r"\(")):
        tl.dge(a, **kwargs)


def test_cell_types_without_a_condition_are_skipped(tcells):
    a = tcells.copy()
    other_blood = (a.obs["lineage"] == "other") & (a.obs["source"] == "Blood")
    a.obs.loc[other_blood, "lineage"] = "CD4"  # 'other' keeps tumour cells only
    with pytest.warns(tl.DGEWarning, match="'other' skipped: no reference cells"):
        table = tl.dge(a, method="lmm", genes=["FOS"], **DGE_ARGS)
    assert set(table["cell_type"]) == {"CD4", "CD8"}
    with pytest.raises(tl.DGEError, match="other: no reference cells"):
        tl.dge(a, method="lmm", genes=["FOS"], groups=["other"], **DGE_ARGS)


def test_missing_extra_says_what_to_install(tcells, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydeseq2.dds", None)  # import fails
    monkeypatch.setitem(sys.modules, "statsmodels.regression.mixed_linear_model", None)
    for method in METHODS:
        with pytest.raises(tl.DGEError, match=r"pip install 'scprint-suite\[dge\]'"):
            tl.dge(tcells, method=method, genes=["FOS"], **DGE_ARGS)


# --------------------------------------------------------------------------- outputs


def test_table_and_volcano_files(tcell_tables, tmp_path, monkeypatch):
    table, _ = tcell_tables["lmm"]
    path = tl.write_table(table, tmp_path / "out" / "dge.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(tl.COLUMNS) and len(back) == len(table)
    np.testing.assert_allclose(back["pvalue"], table["pvalue"])

    # atomic: a failed write leaves the previous file whole and no temporary file
    def broken(self, target, **kwargs):
        Path(target).write_text("half a table")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        tl.write_table(table.head(3), path)
    monkeypatch.undo()
    assert len(pd.read_csv(path)) == len(table)
    assert sorted(p.name for p in path.parent.iterdir()) == ["dge.csv"]

    pngs = tl.write_volcanoes(table, tmp_path / "plots", alpha=0.05)
    assert sorted(p.name for p in pngs) == ["volcano_CD4.png", "volcano_CD8.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    fig = tl.volcano(table, cell_type="CD4")
    labels = [t.get_text() for t in fig.axes[0].texts]
    called = table[(table["cell_type"] == "CD4") & (table["direction"] != "none")]
    assert set(labels) == set(called.nsmallest(10, "pvalue")["gene"])


def test_cli(tcells, tcell_genes, tmp_path, capsys):
    from scprint.cli import main as scprint_main
    from scprint.tl.cli import main

    adata_path = tmp_path / "tcells.h5ad"
    tcells.write_h5ad(adata_path)
    genes = tmp_path / "genes.txt"
    genes.write_text("# the most expressed genes\n" + "\n".join(tcell_genes[:20]) + "\n")
    out = tmp_path / "dge"
    args = ["--adata", str(adata_path), "--groupby", "lineage", "--condition", "source",
            "--reference", "Blood", "--target", "Tumor", "--donor-key", "patient",
            "--method", "lmm", "--genes", str(genes), "--min-cells", "1", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert scprint_main(["dge", *args]) == 0  # dispatched by the scprint command
    captured = capsys.readouterr()
    assert "Tumor vs Blood (lmm)" in captured.out and "CD4:" in captured.out
    assert "'other' skipped" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "dge.csv", "volcano_CD4.png", "volcano_CD8.png"]  # fmt: skip
    table = pd.read_csv(out / "dge.csv")
    assert set(table["gene"]) <= set(tcell_genes[:20]) and set(table["method"]) == {"lmm"}

    assert main(args) == 2  # outputs exist
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    bad = [a if a != "patient" else "donor" for a in args] + ["--overwrite"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'donor' is not a column" in err
