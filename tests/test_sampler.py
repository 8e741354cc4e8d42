"""WeightedSampler: weights, empirical frequencies, ranks, determinism, resume."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from scdataloader.sampler import WeightedSampler, label_combinations

CELL_TYPE = "cell_type_ontology_term_id"


@pytest.fixture(scope="module")
def retina_labels(retina_path):
    return ad.read_h5ad(retina_path, backed="r").obs[CELL_TYPE].astype(str).to_numpy()


def test_weights_follow_the_paper_formula(retina_labels):
    s = WeightedSampler(retina_labels, scale=50)
    w = s.weights
    assert w.shape == (1000,)
    assert np.isclose(w.sum(), 1.0)
    labels, counts = np.unique(retina_labels, return_counts=True)
    raw = {lab: 50 / (n + 50) for lab, n in zip(labels, counts, strict=True)}
    expected = np.array([raw[lab] for lab in retina_labels])
    np.testing.assert_allclose(w, expected / expected.sum())
    # rare types are drawn more than their share, common ones less
    micro = retina_labels == "CL:0000129"  # microglia, 5 cells
    rod = retina_labels == "CL:0000604"  # rod, 318 cells
    assert w[micro].sum() > micro.mean() and w[rod].sum() < rod.mean()


@pytest.mark.parametrize("stratified", [True, False])
def test_empirical_frequencies_over_200k_draws(retina_labels, stratified):
    s = WeightedSampler(
        retina_labels, scale=50, num_samples=200_000, seed=7, stratified=stratified
    )
    draws = np.fromiter(iter(s), dtype=np.int64, count=200_000)
    assert draws.min() >= 0 and draws.max() < 1000
    freq = np.bincount(draws, minlength=1000) / len(draws)
    for label in np.unique(retina_labels):
        cells = retina_labels == label
        observed, expected = freq[cells].sum(), s.weights[cells].sum()
        # stratified blocks keep each combination within one draw per block of its
        # expectation; independent draws only within sampling noise (~2% for microglia)
        tol = 0.02 if stratified else 0.08
        assert abs(observed / expected - 1) < tol, (label, observed, expected)
    if stratified:
        # within a label, cells are drawn uniformly
        rod = np.flatnonzero(retina_labels == "CL:0000604")
        per_cell = freq[rod] / freq[rod].mean()
        draws_per_cell = freq[rod].mean() * len(draws)  # ~90: Poisson noise ~1/sqrt(90)
        assert per_cell.std() < 1.3 / np.sqrt(draws_per_cell)


def test_label_combinations_of_several_columns():
    a = np.array(["x", "x", "y", "y", "x"])
    b = np.array([1, 2, 1, 1, 1])
    groups = label_combinations(np.column_stack([a, b.astype(str)]))
    assert groups[0] == groups[4] and groups[2] == groups[3]
    assert len(set(groups)) == 3
    s = WeightedSampler(np.column_stack([a, b]), scale=1)
    # combination (x,1) has 2 cells, (x,2) 1 cell, (y,1) 2 cells: 1/(n+1) per cell
    raw = np.array([1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(s.weights, raw / raw.sum())


def test_deterministic_by_seed_and_epoch(retina_labels):
    a = WeightedSampler(retina_labels, num_samples=5000, seed=3)
    b = WeightedSampler(retina_labels, num_samples=5000, seed=3)
    first = list(a)
    assert first == list(b)
    second = list(a)  # next epoch: a new stream
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    c = WeightedSampler(retina_labels, num_samples=5000, seed=4)
    assert list(c) != first


def test_ranks_draw_independent_streams(retina_labels):
    world = 2
    ranks = [
        WeightedSampler(retina_labels, num_samples=100_001, seed=1, rank=r, world_size=world)
        for r in range(world)
    ]
    assert [len(s) for s in ranks] == [50_001, 50_001]
    d0, d1 = (np.fromiter(iter(s), np.int64) for s in ranks)
    assert not np.array_equal(d0, d1)
    # independent: the streams agree position-wise only as often as chance would have it
    same = (d0 == d1).mean()
    chance = float((ranks[0].weights ** 2).sum())
    assert abs(same - chance) < 5 * np.sqrt(chance / len(d0))
    # each rank alone follows the weights
    for d in (d0, d1):
        freq = np.bincount(d, minlength=1000) / len(d)
        for label in np.unique(retina_labels):
            cells = retina_labels == label
            assert abs(freq[cells].sum() / ranks[0].weights[cells].sum() - 1) < 0.03
    # a rank's stream does not depend on the number of ranks' neighbours' progress
    again = WeightedSampler(retina_labels, num_samples=100_001, seed=1, rank=1, world_size=2)
    assert np.array_equal(np.fromiter(iter(again), np.int64), d1)


def test_resume_mid_epoch_at_the_exact_next_draw(retina_labels):
    s = WeightedSampler(retina_labels, num_samples=300_000, seed=11, block_size=4096)
    full = np.fromiter(
        iter(WeightedSampler(retina_labels, num_samples=300_000, seed=11, block_size=4096)),
        np.int64,
    )
    it = iter(s)
    head = [next(it) for _ in range(10_007)]
    state = s.state_dict()
    assert state["position"] == 10_007
    resumed = WeightedSampler(retina_labels, num_samples=300_000, seed=11, block_size=4096)
    resumed.load_state_dict(state)
    rest = np.fromiter(iter(resumed), np.int64)
    assert np.array_equal(np.concatenate([head, rest]), full)
    # draw() and iteration agree
    d = WeightedSampler(retina_labels, num_samples=300_000, seed=11, block_size=4096)
    assert np.array_equal(np.concatenate([d.draw(5000), d.draw()]), full)


def test_resume_refuses_mismatched_state(retina_labels):
    s = WeightedSampler(retina_labels, num_samples=1000)
    state = s.state_dict()
    with pytest.raises(ValueError, match="data changed"):
        WeightedSampler(retina_labels[:500], num_samples=1000).load_state_dict(state)


def test_resume_with_another_number_of_ranks(retina_labels):
    # a 2-process run resumed in 1 process: rank 0 goes on with its own stream
    kw = dict(num_samples=20_000, seed=5, block_size=1024)
    two = WeightedSampler(retina_labels, rank=0, world_size=2, **kw)
    whole = np.fromiter(iter(two), np.int64)  # rank 0's 10,000 draws of the epoch
    two = WeightedSampler(retina_labels, rank=0, world_size=2, **kw)
    two.draw(3000)
    one = WeightedSampler(retina_labels, **kw)
    with pytest.warns(UserWarning, match="2 ranks, this run has 1"):
        one.load_state_dict(two.state_dict())
    assert len(one) == 20_000 and one._position == 3000
    rest = one.draw()
    assert len(rest) == 17_000
    full_blocks = 9 * 1024  # rank 0's last, shorter block (positions 9216-9999) differs
    assert np.array_equal(rest[: full_blocks - 3000], whole[3000:full_blocks])
    # and from 1 process to 2: rank 0 keeps its position, capped at its epoch length
    one = WeightedSampler(retina_labels, **kw)
    one.draw(15_000)
    two = WeightedSampler(retina_labels, rank=0, world_size=2, **kw)
    with pytest.warns(UserWarning, match="1 ranks, this run has 2"):
        two.load_state_dict(one.state_dict())
    assert two._position == len(two) == 10_000 and len(two.draw()) == 0


def test_uniform_and_bad_arguments(retina_labels):
    u = WeightedSampler(retina_labels, scale=float("inf"))
    np.testing.assert_allclose(u.weights, 1 / 1000)
    with pytest.raises(ValueError):
        WeightedSampler(retina_labels, scale=0)
    with pytest.raises(ValueError):
        WeightedSampler(retina_labels, rank=2, world_size=2)
    with pytest.raises(ValueError):
        WeightedSampler([])


def test_large_collection_is_fast():
    rng = np.random.default_rng(0)
    labels = rng.zipf(1.5, size=2_000_000) % 5000
    s = WeightedSampler(labels, num_samples=1_000_000)
    draws = s.draw()
    assert len(draws) == 1_000_000 and draws.max() < 2_000_000


def test_restored_position_survives_set_epoch_of_the_same_epoch(retina_labels):
    s = WeightedSampler(retina_labels, num_samples=1000, seed=2)
    full = list(WeightedSampler(retina_labels, num_samples=1000, seed=2))
    it = iter(s)
    [next(it) for _ in range(300)]
    resumed = WeightedSampler(retina_labels, num_samples=1000, seed=2)
    resumed.load_state_dict(s.state_dict())
    resumed.set_epoch(0)  # as Lightning does when the resumed epoch starts
    assert list(resumed) == full[300:]
    resumed.set_epoch(0)  # an explicit restart afterwards starts over
    assert list(resumed) == full
