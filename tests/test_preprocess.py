"""Raw-count validation and the scPRINT QC rules, on real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdataloader.errors import CountsError, GeneMappingError, OrganismMismatchError, QCError
from scdataloader.preprocess import (
    check_counts,
    is_spatial_assay,
    preprocess,
    qc_report,
    recover_counts,
    validate_counts,
)


def _subset(adata, n=300):
    return adata[:n].copy()


# ----------------------------------------------------------------- count detection


def test_retina_holds_counts(retina):
    check = check_counts(retina.X)
    assert check.kind == "counts" and check.is_counts
    assert check.n_rows_checked == 1000


def test_log_normalised_input_is_detected_and_recovered_exactly(retina):
    import scanpy as sc

    raw = _subset(retina)
    norm = raw.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    check = check_counts(norm.X)
    assert check.kind == "recoverable"
    assert check.transform == "log1p" and check.per_cell_scaled
    with pytest.raises(CountsError, match="recover_counts=True"):
        validate_counts(norm.X)
    recovered = recover_counts(norm.X)
    # each cell is recovered up to its smallest count, which is 1 in these cells
    mins = np.array([raw.X[i].data.min() for i in range(raw.n_obs)])
    assert (mins == 1).all()
    assert abs(recovered - sp.csr_matrix(raw.X)).max() == 0


def test_plain_log1p_of_counts_is_recovered(retina):
    raw = _subset(retina, 100)
    logged = sp.csr_matrix(raw.X, dtype=np.float32, copy=True)
    logged.data = np.log1p(logged.data)
    check = check_counts(logged)
    assert check.kind == "recoverable" and check.transform == "log1p"
    assert not check.per_cell_scaled
    assert abs(recover_counts(logged) - raw.X).max() == 0


def test_pbmc68k_reduced_is_refused_as_scaled():
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    check = check_counts(pbmc.X)
    assert check.kind == "scaled"
    with pytest.raises(CountsError, match="negative values"):
        validate_counts(pbmc.X)
    # its .raw holds log-normalised values, not counts, and can't be recovered exactly
    raw_check = check_counts(pbmc.raw.X)
    assert raw_check.kind in ("log_normalized", "recoverable")
    with pytest.raises(CountsError):
        preprocess(pbmc, organism="human")


def test_nan_and_negative_values_are_refused(retina):
    a = _subset(retina, 50)
    X = a.X.toarray()
    X[3, 10] = np.nan
    with pytest.raises(CountsError, match="NaN"):
        validate_counts(X)
    X[3, 10] = -2
    with pytest.raises(CountsError, match="negative"):
        validate_counts(X)


def test_normalised_not_logged_is_named():
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 50.0, size=(20, 100)) * (rng.random((20, 100)) < 0.3)
    check = check_counts(X)
    assert check.kind == "normalized"
    assert "CPM" in check.message


def test_mcalla_double_log2_recovers_exact_integers(mcalla_log2):
    X = mcalla_log2.to_numpy().T  # cells x genes
    check = check_counts(X)
    assert check.kind == "recoverable"
    assert check.transform == "log2(1+x) applied twice" and not check.per_cell_scaled
    counts = recover_counts(X)
    exact = np.exp2(np.exp2(X.astype(np.float64)) - 1) - 1
    assert np.abs(exact - np.rint(exact)).max() < 1e-9
    assert np.array_equal(counts.toarray(), np.rint(exact).astype(np.float32))
    depth = np.asarray(counts.sum(axis=1)).ravel()
    assert 400 < np.median(depth) < 700  # the data README: median 532 counts per cell


def test_mcalla_preprocess_recovers_and_applies_gene_rule(mcalla_log2):
    adata = ad.AnnData(
        X=mcalla_log2.to_numpy().T.astype(np.float32),
        obs=pd.DataFrame(index=mcalla_log2.columns.astype(str)),
        var=pd.DataFrame(index=mcalla_log2.index.astype(str)),
    )
    with pytest.raises(CountsError, match="recover_counts=True"):
        preprocess(adata, organism="human", min_genes=1000)
    # 8,595 genes: the paper's 10,000-gene rule drops this dataset
    with pytest.raises(QCError, match="fewer than 10,000"):
        preprocess(adata, organism="human", recover_counts=True)
    out = preprocess(adata, organism="human", recover_counts=True, min_genes=1000)
    assert out.uns["preprocess"]["recovered_counts"]
    assert np.all(out.X.data == np.rint(out.X.data))
    assert out.var_names.str.startswith("ENSG").all()


# ----------------------------------------------------------------- QC rules


def test_preprocess_keeps_retina_and_does_not_modify_input(retina):
    before = retina.copy()
    out = preprocess(retina)
    assert out is not retina
    assert retina.X.nnz == before.X.nnz and (retina.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(retina.obs, before.obs)
    pd.testing.assert_frame_equal(retina.var, before.var)
    assert out.uns["organism"] == "NCBITaxon:9606"
    assert out.n_obs == (np.diff(retina.X.indptr) >= 200).sum()
    assert out.var_names.is_unique and out.var_names.str.startswith("ENSG").all()
    assert {"symbol", "input_name"} <= set(out.var.columns)
    # counts of a kept gene are unchanged
    g = out.var_names[100]
    j = retina.var_names.get_loc(g)
    cells = out.obs_names
    np.testing.assert_array_equal(
        out[:, g].X.toarray().ravel(), retina[cells, j].X.toarray().ravel()
    )
    np.testing.assert_allclose(out.obs["total_counts"], np.asarray(out.X.sum(1)).ravel())


def test_qc_rules_drop_non_primary_spatial_and_small_cells(retina):
    a = retina.copy()
    a.obs["is_primary_data"] = a.obs["is_primary_data"].astype(bool)
    a.obs.iloc[:50, a.obs.columns.get_loc("is_primary_data")] = False
    assay = a.obs["assay_ontology_term_id"].astype(str).to_numpy()
    assay[50:80] = "EFO:0022857"  # Visium Spatial Gene Expression V1
    a.obs["assay_ontology_term_id"] = assay
    n_genes = np.diff(a.X.indptr)
    report = qc_report(a)
    assert report.dropped_not_primary == 50
    assert report.dropped_spatial == 30
    small = n_genes[80:] < 200
    assert report.dropped_few_genes == small.sum()
    assert report.n_cells_kept == 920 - small.sum()
    assert report.kept
    out = preprocess(a)
    assert out.n_obs == report.n_cells_kept
    assert not set(out.obs_names) & set(a.obs_names[:80])


def test_spatial_assays_from_the_ontology():
    assert is_spatial_assay("EFO:0010961")  # Visium
    assert is_spatial_assay("EFO:0030062")  # Slide-seqV2
    assert is_spatial_assay("EFO:0008992")  # MERFISH
    assert not is_spatial_assay("EFO:0009922")  # 10x 3' v3
    assert not is_spatial_assay("EFO:0030059")  # 10x multiome


def test_dataset_rules(retina):
    small = retina[:90].copy()
    with pytest.raises(QCError, match="fewer than 100"):
        preprocess(small)
    assert qc_report(small).reasons
    # > 95% of cells removed
    a = retina.copy()
    a.obs["is_primary_data"] = False
    a.obs.iloc[:40, a.obs.columns.get_loc("is_primary_data")] = True
    report = qc_report(a, min_cells=10)
    assert not report.kept
    assert any("more than 95%" in r for r in report.reasons)


def test_zero_cells_after_qc_and_empty_input(retina):
    a = retina.copy()
    a.X = sp.csr_matrix(a.X.shape, dtype=np.float32)  # every cell empty
    with pytest.raises(QCError, match="0 cells left"):
        preprocess(a)
    with pytest.raises(QCError, match="empty"):
        preprocess(retina[:0].copy())


def test_symbols_are_mapped_to_ids(wu2020):
    out = preprocess(wu2020, min_cells=10, min_genes=10_000)
    assert out.var_names.str.startswith("ENSG").all()
    assert (out.var["input_name"] == out.var["symbol"]).mean() > 0.95
    assert "unmapped" in out.uns["preprocess"]["gene_report"]


def test_duplicate_gene_names_are_refused_with_a_hint(mouse_path):
    mouse = ad.read_zarr(mouse_path)
    with pytest.raises(GeneMappingError, match="duplicated gene names.*gene_key='gene_ids'"):
        preprocess(mouse, organism="mouse", min_genes=500)
    out = preprocess(
        mouse, organism="mouse", gene_key="gene_ids", min_genes=500, min_genes_per_cell=50
    )
    assert out.var_names.str.startswith("ENSMUSG").all()
    assert out.uns["organism"] == "NCBITaxon:10090"


def test_mouse_genes_declared_human_are_refused(mouse_path):
    mouse = ad.read_zarr(mouse_path)
    mouse.obs["organism_ontology_term_id"] = "NCBITaxon:9606"
    with pytest.raises(OrganismMismatchError, match="mouse"):
        qc_report(mouse, gene_key="gene_ids")
    with pytest.raises(OrganismMismatchError):
        preprocess(mouse, organism="human", gene_key="gene_ids")


def test_too_few_genes_mapping_is_refused(retina):
    a = retina[:200, :2000].copy()
    names = a.var_names.to_numpy().astype(object)
    names[: int(0.95 * len(names))] = [f"gene_{i}" for i in range(int(0.95 * len(names)))]
    a.var_names = names
    with pytest.raises(GeneMappingError):
        preprocess(a, organism="human", min_genes=10)


def test_counts_in_a_layer(retina):
    import scanpy as sc

    a = _subset(retina, 300)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    with pytest.raises(CountsError):
        preprocess(a, min_cells=10)
    out = preprocess(a, layer="counts", min_cells=10)
    assert np.all(out.X.data == np.rint(out.X.data))
    with pytest.raises(Exception, match="not in adata.layers"):
        preprocess(a, layer="nope")
