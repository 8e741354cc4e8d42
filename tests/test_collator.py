"""The collator on real cells of the retina file (scPRINT, Methods: cell input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdataloader import Collection
from scdataloader.collator import Collator
from scdataloader.errors import InputError

CELL_TYPE = "cell_type_ontology_term_id"
ETHNICITY = "self_reported_ethnicity_ontology_term_id"  # "unknown" in every retina cell


@pytest.fixture(scope="module")
def coll(retina_path):
    return Collection([retina_path], obs_keys=[CELL_TYPE, ETHNICITY])


@pytest.fixture(scope="module")
def n_expressed(coll):
    """Expressed genes of the first 200 cells."""
    return np.array([(coll[i]["x"] > 0).sum() for i in range(200)])


@pytest.fixture(scope="module")
def rich(coll, n_expressed):
    """Eight cells with more than 2,200 expressed genes."""
    idx = np.flatnonzero(n_expressed > 2200)[:8]
    assert len(idx) == 8
    return [coll[int(i)] for i in idx]


@pytest.fixture(scope="module")
def poor(coll, n_expressed):
    """The cell (of the first 200) with the fewest expressed genes (< 1,500)."""
    i = int(np.argmin(n_expressed))
    assert n_expressed[i] < 1500
    return coll[i]


def _expressed(item) -> set[int]:
    return set(np.flatnonzero(item["x"] > 0).tolist())


# ----------------------------------------------------------------- random expr


def test_random_expr_picks_expressed_genes_only(coll, rich):
    col = Collator(coll.genes, mode="random expr", max_len=2200, seed=0)
    out = col(rich)
    assert out["x"].shape == (8, 2200) and out["x"].dtype == torch.float32
    assert out["genes"].shape == (8, 2200) and out["genes"].dtype == torch.int64
    assert out["mask"].dtype == torch.bool and out["mask"].all()
    for b, item in enumerate(rich):
        pos = out["genes"][b].numpy()
        assert len(np.unique(pos)) == 2200
        assert set(pos.tolist()) <= _expressed(item)
        np.testing.assert_array_equal(out["x"][b].numpy(), item["x"][pos])
        assert (out["x"][b] > 0).all()


def test_random_expr_draws_are_a_function_of_seed_and_cells(coll, rich):
    col = Collator(coll.genes, mode="random expr", max_len=2200, seed=7)
    first = col(rich[:2])
    # the choice is random, not a prefix of the expressed genes
    expressed = np.flatnonzero(rich[0]["x"] > 0)
    assert set(first["genes"][0].tolist()) != set(expressed[:2200].tolist())
    # same seed and cells: the same draws, from this collator or a fresh one
    again = Collator(coll.genes, mode="random expr", max_len=2200, seed=7)
    for out in (col(rich[:2]), again(rich[:2])):
        for key in ("x", "genes", "mask"):
            assert torch.equal(first[key], out[key])
    # another batch around the same cell, or another seed: other draws
    shifted = col(rich[1:3])
    assert set(shifted["genes"][0].tolist()) != set(first["genes"][1].tolist())
    other = Collator(coll.genes, mode="random expr", max_len=2200, seed=8)(rich[:2])
    assert not torch.equal(other["genes"], first["genes"])
    # no seed: fresh draws at every call
    free = Collator(coll.genes, mode="random expr", max_len=2200, seed=None)
    a, b = free(rich[:2]), free(rich[:2])
    assert set(a["genes"][0].tolist()) != set(b["genes"][0].tolist())


def test_poor_cell_gets_all_expressed_then_measured_zeros(coll, poor):
    n_exp = len(_expressed(poor))
    max_len = n_exp + 300
    rng = np.random.default_rng(0)
    zeros = np.flatnonzero(poor["x"] == 0)
    unmeasured = rng.choice(zeros, len(zeros) // 2, replace=False)
    measured = np.ones((1, coll.n_genes), dtype=bool)
    measured[0, unmeasured] = False
    col = Collator(coll.genes, mode="random expr", max_len=max_len, measured=measured, seed=1)
    out = col([poor, poor])
    for b in range(2):
        pos = out["genes"][b].numpy()
        assert len(pos) == max_len and len(np.unique(pos)) == max_len
        # all expressed genes come first, then zeros
        assert set(pos[:n_exp].tolist()) == _expressed(poor)
        assert (out["x"][b, :n_exp] > 0).all() and (out["x"][b, n_exp:] == 0).all()
        # the padding never uses a gene the dataset did not measure
        assert not np.isin(pos, unmeasured).any()
        assert out["mask"][b].all()
    # the padding is drawn at random: the two copies of the cell get different zeros
    assert set(out["genes"][0, n_exp:].tolist()) != set(out["genes"][1, n_exp:].tolist())


def test_unmeasured_genes_pad_only_when_needed_and_are_masked(coll, poor):
    expressed = np.flatnonzero(poor["x"] > 0)
    zeros = np.flatnonzero(poor["x"] == 0)
    measured_zeros = zeros[:50]
    measured = np.zeros((1, coll.n_genes), dtype=bool)
    measured[0, expressed] = True
    measured[0, measured_zeros] = True
    max_len = len(expressed) + 200  # 50 measured zeros are not enough: 150 unmeasured ones
    col = Collator(coll.genes, mode="random expr", max_len=max_len, measured=measured, seed=2)
    out = col([poor])
    pos = out["genes"][0].numpy()
    n = len(expressed)
    assert len(np.unique(pos)) == max_len
    assert set(pos[:n].tolist()) == set(expressed.tolist())
    assert set(pos[n : n + 50].tolist()) == set(measured_zeros.tolist())
    assert not measured[0, pos[n + 50 :]].any()
    mask = out["mask"][0].numpy()
    np.testing.assert_array_equal(mask, measured[0, pos])
    assert mask[: n + 50].all() and not mask[n + 50 :].any()
    assert (out["x"][0, n:] == 0).all()


def test_max_len_above_gene_count_gives_every_gene(coll, poor):
    col = Collator(coll.genes[:3000], mode="random expr", max_len=5000)
    item = dict(poor, x=poor["x"][:3000])
    out = col([item])
    assert out["genes"].shape == (1, 3000)
    assert sorted(out["genes"][0].tolist()) == list(range(3000))


# ----------------------------------------------------------------- most expr


def test_most_expr_takes_the_top_counts(coll, rich, poor):
    col = Collator(coll.genes, mode="most expr", max_len=500, seed=0)
    out = col(rich + [poor])
    for b, item in enumerate(rich + [poor]):
        pos = out["genes"][b].numpy()
        assert len(np.unique(pos)) == 500
        chosen = item["x"][pos]
        rest = np.delete(item["x"], pos)
        assert chosen.min() >= rest.max() > 0
        np.testing.assert_array_equal(out["x"][b].numpy(), chosen)


def test_most_expr_pads_like_random_expr(coll, poor):
    n_exp = len(_expressed(poor))
    out = Collator(coll.genes, mode="most expr", max_len=n_exp + 10, seed=0)([poor])
    pos = out["genes"][0].numpy()
    assert set(pos[:n_exp].tolist()) == _expressed(poor)
    assert (out["x"][0, n_exp:] == 0).all() and len(np.unique(pos)) == n_exp + 10


# ----------------------------------------------------------------- all / genes


def test_all_mode_is_the_whole_gene_space(coll, rich):
    out = Collator(coll.genes, mode="all")(rich[:2])
    assert out["x"].shape == (2, coll.n_genes)
    assert torch.equal(out["genes"][1], torch.arange(coll.n_genes))
    np.testing.assert_array_equal(out["x"][0].numpy(), rich[0]["x"])


def test_genes_mode_uses_the_list_in_order(coll, rich):
    gene_list = [coll.genes[500], coll.genes[12], coll.genes[40_000], coll.genes[3]]
    col = Collator(coll.genes, mode="genes", gene_list=gene_list)
    assert col.length == 4
    out = col(rich[:3])
    assert out["genes"].tolist() == [[500, 12, 40_000, 3]] * 3
    for b in range(3):
        np.testing.assert_array_equal(out["x"][b].numpy(), rich[b]["x"][[500, 12, 40_000, 3]])


def test_genes_mode_refuses_unknown_genes(coll):
    with pytest.raises(InputError, match="ENSG99999999999"):
        Collator(coll.genes, mode="genes", gene_list=[coll.genes[0], "ENSG99999999999"])
    with pytest.raises(InputError, match="gene_list"):
        Collator(coll.genes, mode="genes")


# ----------------------------------------------------------------- other outputs


def test_depth_labels_dataset_and_index(coll):
    items = [coll[i] for i in (0, 17, 999)]
    out = Collator(coll.genes, mode="random expr", max_len=300)(items)
    assert out["depth"].dtype == torch.float32 and out["depth"].shape == (3,)
    np.testing.assert_allclose(out["depth"].numpy(), [it["x"].sum() for it in items], rtol=1e-6)
    assert out["labels"].dtype == torch.int64 and out["labels"].shape == (3, 2)
    np.testing.assert_array_equal(out["labels"][:, 0].numpy(), coll.labels[[0, 17, 999], 0])
    assert (out["labels"][:, 0] >= 0).all()
    assert (out["labels"][:, 1] == -1).all()  # unknown ethnicity
    assert out["dataset"].dtype == torch.int64 and out["dataset"].tolist() == [0, 0, 0]
    assert out["index"].dtype == torch.int64 and out["index"].tolist() == [0, 17, 999]


def test_depth_counts_genes_outside_the_gene_space(retina_path, retina_full):
    genes = np.asarray(retina_full.var_names)[::7]  # a seventh of the genes
    small = Collection([retina_path], obs_keys=[CELL_TYPE], genes=genes)
    rows = [3, 250, 800]
    items = [small[i] for i in rows]
    out = Collator(small.genes, mode="all")(items)
    full = np.asarray(retina_full.X[rows].sum(axis=1)).ravel()
    inside = np.asarray(retina_full.X[rows][:, ::7].sum(axis=1)).ravel()
    assert (full > inside).all()
    np.testing.assert_allclose(out["depth"].numpy(), full, rtol=1e-6)
    np.testing.assert_allclose(out["x"].sum(1).numpy(), inside, rtol=1e-6)


# ----------------------------------------------------------------- bad arguments


def test_bad_arguments_are_clear_errors(coll, rich):
    with pytest.raises(InputError, match="mode"):
        Collator(coll.genes, mode="top genes")
    with pytest.raises(InputError, match="max_len"):
        Collator(coll.genes, max_len=0)
    with pytest.raises(InputError, match="measured"):
        Collator(coll.genes, measured=np.ones((1, 10), dtype=bool))
    with pytest.raises(InputError, match="measured"):
        Collator(coll.genes, measured=np.ones(coll.n_genes, dtype=bool))
    col = Collator(coll.genes, max_len=100)
    with pytest.raises(InputError, match="empty"):
        col([])
    with pytest.raises(InputError, match="genes"):
        Collator(coll.genes[:100], max_len=10)(rich[:1])


def test_seed_per_cell_makes_draws_independent_of_the_batch(coll, rich):
    col = Collator(coll.genes, mode="random expr", max_len=500, seed=3, seed_per_cell=True)
    alone = col([rich[1]])
    together = col(rich[:3])
    assert torch.equal(alone["genes"][0], together["genes"][1])
    batchwise = Collator(coll.genes, mode="random expr", max_len=500, seed=3)
    assert not torch.equal(batchwise([rich[1]])["genes"][0], batchwise(rich[:3])["genes"][1])


# ----------------------------------------------------------------- zero genes


def _n_zero(out, b) -> int:
    return int((out["x"][b] == 0).sum())


@pytest.mark.parametrize("mode", ["random expr", "most expr"])
def test_zero_genes_take_exactly_n_positions(coll, rich, mode):
    col = Collator(coll.genes, mode=mode, max_len=600, zero_genes=100, seed=0)
    out = col(rich)
    assert out["x"].shape == (8, 600) and out["mask"].all()
    for b, item in enumerate(rich):
        pos = out["genes"][b].numpy()
        assert len(np.unique(pos)) == 600  # no gene twice
        # expressed genes first, then exactly 100 unexpressed ones
        assert (item["x"][pos[:500]] > 0).all() and (item["x"][pos[500:]] == 0).all()
        assert _n_zero(out, b) == 100
        np.testing.assert_array_equal(out["x"][b].numpy(), item["x"][pos])
        if mode == "most expr":  # the expressed part is still the top of the counts
            top = np.sort(item["x"][item["x"] > 0])[::-1]
            assert item["x"][pos[:500]].min() == top[499]


def test_zero_genes_are_drawn_at_random_and_deterministically(coll, rich):
    col = Collator(coll.genes, mode="random expr", max_len=600, zero_genes=100, seed=4)
    a = col([rich[0], rich[0]])
    # two copies of one cell get different unexpressed genes (and expressed ones)
    assert set(a["genes"][0, 500:].tolist()) != set(a["genes"][1, 500:].tolist())
    # the same seed and cells give the same sequences; another seed other zeros
    again = Collator(coll.genes, mode="random expr", max_len=600, zero_genes=100, seed=4)
    assert torch.equal(a["genes"], again([rich[0], rich[0]])["genes"])
    other = Collator(coll.genes, mode="random expr", max_len=600, zero_genes=100, seed=5)
    assert not torch.equal(a["genes"][0, 500:], other([rich[0], rich[0]])["genes"][0, 500:])
    # the zeros come from the whole gene space, not from its first genes
    assert a["genes"][0, 500:].max() > coll.n_genes // 2
    # per-cell seeding: a cell gets the same genes in any batch
    per_cell = Collator(coll.genes, max_len=600, zero_genes=100, seed=4, seed_per_cell=True)
    assert torch.equal(per_cell([rich[2]])["genes"][0], per_cell(rich[:3])["genes"][2])


def test_zero_genes_default_keeps_the_old_sequences(coll, rich, poor):
    for mode in ("random expr", "most expr"):
        old = Collator(coll.genes, mode=mode, max_len=700, seed=7)(rich[:3] + [poor])
        new = Collator(coll.genes, mode=mode, max_len=700, zero_genes=0, seed=7)
        assert torch.equal(old["genes"], new(rich[:3] + [poor])["genes"])
        assert (old["x"][:3] > 0).all()  # rich cells: expressed genes only


def test_zero_genes_fall_back_on_unmeasured_genes_masked(coll, rich):
    item = rich[0]
    expressed = np.flatnonzero(item["x"] > 0)
    zeros = np.flatnonzero(item["x"] == 0)
    measured_zeros = zeros[::1000][:30]
    measured = np.zeros((1, coll.n_genes), dtype=bool)
    measured[0, expressed] = True
    measured[0, measured_zeros] = True
    col = Collator(coll.genes, max_len=600, zero_genes=100, measured=measured, seed=2)
    out = col([item])
    pos, mask = out["genes"][0].numpy(), out["mask"][0].numpy()
    assert len(np.unique(pos)) == 600 and _n_zero(out, 0) == 100
    # every measured zero first, then 70 unmeasured genes, which the mask flags
    assert set(pos[500:530].tolist()) == set(measured_zeros.tolist())
    assert not measured[0, pos[530:]].any()
    np.testing.assert_array_equal(mask, measured[0, pos])
    assert mask[:530].all() and not mask[530:].any()


def test_zero_genes_with_too_few_expressed_or_too_few_zeros(coll, poor, rich):
    # a cell with fewer expressed genes than max_len - N: all of them, the rest zeros
    n_exp = len(_expressed(poor))
    col = Collator(coll.genes, max_len=n_exp + 300, zero_genes=100, seed=0)
    out = col([poor])
    assert set(out["genes"][0, :n_exp].tolist()) == _expressed(poor)
    assert _n_zero(out, 0) == 300
    # a gene space with only 10 zeros for this cell: those 10, the rest expressed genes
    item = rich[0]
    keep = np.concatenate([np.flatnonzero(item["x"] > 0), np.flatnonzero(item["x"] == 0)[:10]])
    keep.sort()
    small = dict(item, x=item["x"][keep])
    out = Collator(coll.genes[keep], max_len=600, zero_genes=100, seed=0)([small])
    assert _n_zero(out, 0) == 10 and len(np.unique(out["genes"][0].numpy())) == 600


def test_zero_genes_bad_values_are_clear_errors(coll):
    for bad in (-1, 2.5, True, "3", None):
        with pytest.raises(InputError, match="zero_genes"):
            Collator(coll.genes, max_len=100, zero_genes=bad)
    for bad in (100, 150):
        with pytest.raises(InputError, match="below max_len=100"):
            Collator(coll.genes, max_len=100, zero_genes=bad)
    assert Collator(coll.genes, max_len=100, zero_genes=np.int64(99)).zero_genes == 99
