"""Collection: lazy multi-file reading in one gene space, on real files."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scdataloader.collection import Collection, read_obs
from scdataloader.errors import CountsError, FileFormatError, InputError, LabelError

CT = "cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def coll(retina_path):
    return Collection([retina_path], obs_keys=[CT, "disease_ontology_term_id"])


def test_items_equal_the_file_rows(coll, retina_full):
    assert len(coll) == 1000 and coll.n_genes == 70116
    position = {g: i for i, g in enumerate(coll.genes)}
    order = np.array([position[g] for g in retina_full.var_names])
    for i in [0, 1, 417, 999]:
        item = coll[i]
        row = retina_full.X[i].toarray().ravel()
        np.testing.assert_array_equal(item["x"][order], row)
        assert item["depth"] == row.sum()
        assert item["dataset"] == 0 and item["index"] == i
    # labels decode to the file's values
    decoded = coll.label_values(CT)
    assert list(decoded) == list(retina_full.obs[CT].astype(str))


def test_gene_space_follows_the_vocabulary_order(coll):
    from scdataloader.genes import load_genes

    table = load_genes("human")
    known = [g for g in coll.genes if g in table.index]
    locations = table.loc[known, "location"].to_numpy()
    assert np.all(np.diff(locations) >= 0)
    # genes unknown to the vocabulary come last
    assert set(coll.genes[len(known) :]).isdisjoint(table.index)


def test_batched_reads_match_single_reads(coll):
    idx = [999, 3, 500, 3]
    batch = coll.__getitems__(idx)
    for i, item in zip(idx, batch, strict=True):
        assert item["index"] == i
        np.testing.assert_array_equal(item["x"], coll[i]["x"])


def test_several_files_outer_and_inner_join(retina_parts, retina_full):
    outer = Collection(retina_parts, obs_keys=[CT])
    assert len(outer) == 1000
    assert outer.n_genes == 70116
    np.testing.assert_array_equal(
        outer.dataset_of_cell[[0, 399, 400, 749, 750, 999]], [0, 0, 1, 1, 2, 2]
    )
    # the last file lacks 5,000 genes: flagged unmeasured, read as zeros
    assert outer.measured[0].all() and outer.measured[1].all()
    assert (~outer.measured[2]).sum() == 5000
    item = outer[800]
    assert (item["x"][~outer.measured[2]] == 0).all()
    # depth: the cell's total over the genes its file holds
    assert item["depth"] == item["x"].sum() < retina_full.X[800].sum()
    inner = Collection(retina_parts, obs_keys=[CT], join="inner")
    assert inner.n_genes == 70116 - 5000
    # same cell through both collections: same counts on the shared genes
    pos = {g: i for i, g in enumerate(outer.genes)}
    shared = np.array([pos[g] for g in inner.genes])
    np.testing.assert_array_equal(inner[10]["x"], outer[10]["x"][shared])


def test_explicit_gene_space_and_hierarchies(retina_path, coll):
    genes = coll.genes[:500][::-1]
    sub = Collection(
        [retina_path], obs_keys=[CT], genes=genes, hierarchies={CT: coll.hierarchies[CT]}
    )
    assert list(sub.genes) == list(genes)
    np.testing.assert_array_equal(sub[5]["x"], coll[5]["x"][:500][::-1])
    assert sub[5]["depth"] == coll[5]["depth"]  # depth is the whole cell's


def test_zarr_store_reads_like_h5ad(retina_full, tmp_path, coll):
    part = retina_full[:120].copy()
    dense = part.copy()
    dense.X = part.X.toarray()
    dense.write_zarr(tmp_path / "dense.zarr")
    part.write_zarr(tmp_path / "sparse.zarr")
    for name in ("dense.zarr", "sparse.zarr"):
        z = Collection([tmp_path / name], obs_keys=[CT], genes=coll.genes)
        assert len(z) == 120
        for i in (0, 77):
            np.testing.assert_array_equal(z[i]["x"], coll[i]["x"])


def test_workers_and_pickling(coll):
    clone = pickle.loads(pickle.dumps(coll))
    np.testing.assert_array_equal(clone[3]["x"], coll[3]["x"])
    loader = torch.utils.data.DataLoader(coll, batch_size=50, num_workers=2)
    seen = 0
    for batch in loader:
        i = int(batch["index"][7])
        np.testing.assert_array_equal(batch["x"][7].numpy(), coll[i]["x"])
        seen += len(batch["index"])
    assert seen == 1000


def test_missing_label_column_is_named(retina_path):
    with pytest.raises(LabelError, match="cell_typo.*available columns"):
        Collection([retina_path], obs_keys=["cell_typo"])
    obs = read_obs(retina_path, ["donor_id"])
    assert obs.shape == (1000, 1)


def test_bad_files(tmp_path, retina_path, retina_full):
    with pytest.raises(FileFormatError, match="no such file"):
        Collection([tmp_path / "nope.h5ad"])
    empty = tmp_path / "empty.h5ad"
    empty.touch()
    with pytest.raises(FileFormatError, match="empty"):
        Collection([empty])
    truncated = tmp_path / "truncated.h5ad"
    shutil.copy(retina_path, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    with pytest.raises(FileFormatError, match="truncated"):
        Collection([truncated])
    no_cells = tmp_path / "no_cells.h5ad"
    retina_full[:0].copy().write_h5ad(no_cells)
    with pytest.raises(FileFormatError, match="no cells"):
        Collection([no_cells])
    csc = tmp_path / "csc.h5ad"
    a = retina_full[:50].copy()
    a.X = sp.csc_matrix(a.X)
    a.write_h5ad(csc)
    with pytest.raises(FileFormatError, match="CSC"):
        Collection([csc])
    with pytest.raises(InputError):
        Collection([])


def test_refuses_log_normalised_files_and_symbols(tmp_path, retina_full, wu2020):
    import scanpy as sc

    a = retina_full[:200].copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    a.write_h5ad(tmp_path / "log.h5ad")
    with pytest.raises(CountsError, match="log.h5ad"):
        Collection([tmp_path / "log.h5ad"])
    wu2020.write_h5ad(tmp_path / "symbols.h5ad")
    with pytest.raises(InputError, match="not Ensembl ids.*preprocess"):
        Collection([tmp_path / "symbols.h5ad"])


def test_all_unknown_label_column_becomes_empty_classes(retina_path):
    c = Collection([retina_path], obs_keys=["self_reported_ethnicity_ontology_term_id"])
    assert (c.labels == -1).all()
    assert c.hierarchies["self_reported_ethnicity_ontology_term_id"].n_leaves == 0
