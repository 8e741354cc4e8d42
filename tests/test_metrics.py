"""bengrn.metrics: EPR, AUPRC and average precision against hand-computed values and
scikit-learn, on small networks (rows are targets, columns regulators)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import average_precision_score

from bengrn.metrics import (
    Scores,
    auprc,
    average_precision,
    epr,
    evaluate,
    precision_recall_curve,
)
from bengrn.network import GeneNetwork


def _dense(pairs: dict[tuple[int, int], float], n: int) -> np.ndarray:
    m = np.zeros((n, n))
    for (i, j), v in pairs.items():
        m[i, j] = v
    return m


def _sklearn_ap(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return average_precision_score(truth[mask] != 0, scores[mask])


def _random_truth(rng: np.random.Generator, n: int, density: float) -> np.ndarray:
    truth = (rng.random((n, n)) < density).astype(np.float32)
    np.fill_diagonal(truth, 0)
    return truth


# ------------------------------------------------------------ hand-computed networks

# 4 genes, 12 candidates; true edges 1 -> 0, 1 -> 2, 0 -> 3 (prevalence 3/12 = 1/4).
TRUTH_A = _dense({(0, 1): 1, (2, 1): 1, (3, 0): 1}, 4)
# predictions: 0.9 {T, F}, 0.5 {T, F, F}; the true edge 0 -> 3 is scored 0 (missed); a
# large diagonal entry that must be ignored.
SCORES_A = _dense(
    {(0, 1): 0.9, (1, 0): 0.9, (2, 1): 0.5, (2, 3): 0.5, (3, 2): 0.5, (1, 1): 5.0}, 4
)


def test_ties_at_the_cut_and_closing_at_prevalence():
    res = evaluate(SCORES_A, TRUTH_A)
    assert (res.n_genes, res.n_regulators, res.n_candidates) == (4, 4, 12)
    assert (res.n_true_edges, res.n_predicted) == (3, 5)
    assert res.prevalence == pytest.approx(0.25)
    # K = 3: the 0.9 group (2 pairs, 1 true) fits, then 1 slot out of the 0.5 group
    # (3 pairs, 1 true): 1 * 1/3. TP = 4/3, precision 4/9, EPR = (4/9) / (1/4) = 16/9.
    assert res.epr == pytest.approx(16 / 9)
    # curve: (0, 1/2) prepended, (1/3, 1/2) at 0.9, (2/3, 2/5) at 0.5.
    # area = 1/3 * (1/2 + 1/2)/2 + 1/3 * (1/2 + 2/5)/2 = 1/6 + 3/20; recall stops at 2/3:
    # + 1/4 * (1 - 2/3) = 1/12. Total 24/60 = 0.4.
    assert res.auprc == pytest.approx(0.4)
    # sklearn over the 12 candidates, zeros included: precisions 1/2, 2/5, 3/12 at each
    # third of recall: (0.5 + 0.4 + 0.25) / 3.
    assert res.average_precision == pytest.approx(1.15 / 3)
    assert res.precision == pytest.approx(2 / 5)
    assert res.recall == pytest.approx(2 / 3)
    np.testing.assert_allclose(res.curve_precision, [0.5, 0.5, 0.4])
    np.testing.assert_allclose(res.curve_recall, [0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(res.curve_thresholds, [np.inf, 0.9, 0.5])
    assert epr(SCORES_A, TRUTH_A) == res.epr
    assert auprc(SCORES_A, TRUTH_A) == res.auprc
    assert average_precision(SCORES_A, TRUTH_A) == res.average_precision


def test_full_recall_no_closing_and_an_all_zero_row():
    truth = _dense({(0, 1): 1, (1, 2): 1}, 4)  # prevalence 2/12 = 1/6
    # predictions 0.8 T, 0.6 F, 0.4 T, 0.2 F; row 3 (target 3) all zero
    scores = _dense({(0, 1): 0.8, (2, 0): 0.6, (1, 2): 0.4, (0, 2): 0.2}, 4)
    res = evaluate(scores, truth)
    # K = 2: 0.8 T, 0.6 F -> precision 1/2, EPR = (1/2) / (1/6) = 3
    assert res.epr == pytest.approx(3.0)
    # curve (0,1) (1/2,1) (1/2,1/2) (1,2/3) (1,1/2): area 1/2 + 1/2 * (1/2 + 2/3)/2
    # = 1/2 + 7/24 = 19/24; recall 1 reached: nothing added.
    assert res.auprc == pytest.approx(19 / 24)
    assert res.recall == 1.0
    # sklearn: precision 1 at recall 1/2, 2/3 at recall 1
    assert res.average_precision == pytest.approx(5 / 6)
    prec, rec, thr = precision_recall_curve(scores, truth)
    np.testing.assert_allclose(prec, [1, 1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(rec, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.6, 0.4, 0.2])
    assert np.trapezoid(prec, rec) == pytest.approx(res.auprc)


def test_no_prediction():
    res = evaluate(np.zeros((4, 4)), TRUTH_A)
    assert res.n_predicted == 0
    assert res.epr == 0.0
    assert res.auprc == pytest.approx(res.prevalence)  # closed at the prevalence from 0
    assert res.average_precision == pytest.approx(res.prevalence)  # one tie group
    assert res.precision == 0.0 and res.recall == 0.0
    assert res.curve_precision.size == 0


def test_negative_scores_and_fewer_predictions_than_true_edges():
    # 3 genes, 6 candidates, 3 true edges (prevalence 1/2)
    truth = _dense({(0, 1): 1, (1, 2): 1, (2, 0): 1}, 3)
    scores = _dense({(0, 1): -0.5, (1, 0): 0.7}, 3)  # predictions: 0.7 F, -0.5 T
    res = evaluate(scores, truth)
    # only 2 predictions for K = 3: 1 hit / 3 slots; EPR = (1/3) / (1/2) = 2/3
    assert res.epr == pytest.approx(2 / 3)
    # curve (0,0) (0,0) (1/3,1/2): area 1/12, + 1/2 * (1 - 1/3) = 1/3 -> 5/12
    assert res.auprc == pytest.approx(5 / 12)
    # sklearn ranks the zeros (2 of 4 true) between 0.7 and -0.5:
    # 2/5 * 2/3 + 1/2 * 1/3 = 13/30
    assert res.average_precision == pytest.approx(13 / 30)
    mask = ~np.eye(3, dtype=bool)
    assert res.average_precision == pytest.approx(_sklearn_ap(scores, truth, mask))


def test_cut_among_negative_scores_with_a_true_edge_scored_zero():
    truth = _dense({(0, 1): 1, (1, 2): 1, (2, 1): 1}, 3)  # prevalence 1/2, K = 3
    # predictions 0.7 F, -0.2 {T, F}, -0.9 T; the true edge 1 -> 2 scored 0
    scores = _dense({(1, 0): 0.7, (0, 1): -0.2, (2, 0): -0.2, (1, 2): -0.9}, 3)
    res = evaluate(scores, truth)
    # top 3: 0.7 F and the whole -0.2 group (2 slots for 2 pairs, 1 true): TP = 1
    assert res.epr == pytest.approx((1 / 3) / (1 / 2))
    assert res.n_predicted == 4


def test_self_edges_are_excluded():
    truth = TRUTH_A.copy()
    np.fill_diagonal(truth, 1)
    scores = SCORES_A.copy()
    np.fill_diagonal(scores, [7.0, np.nan, -3.0, 0.0])  # even a NaN is ignored there
    assert evaluate(scores, truth).as_dict() == evaluate(SCORES_A, TRUTH_A).as_dict()
    assert evaluate(sp.csr_matrix(scores), sp.csr_matrix(truth)).as_dict() == (
        evaluate(SCORES_A, TRUTH_A).as_dict()
    )


def test_scores_dataclass():
    res = evaluate(SCORES_A, TRUTH_A)
    assert isinstance(res, Scores)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.epr = 1.0
    d = res.as_dict()
    assert set(d) == {
        "epr", "auprc", "average_precision", "precision", "recall", "prevalence",
        "n_genes", "n_regulators", "n_true_edges", "n_candidates", "n_predicted",
    }  # fmt: skip
    assert all(isinstance(v, int | float) for v in d.values())


# ------------------------------------------------------------ against scikit-learn


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 40
    truth = (rng.random((n, n)) < 0.1).astype(np.float32)  # diagonal entries ignored
    scores = np.round(rng.random((n, n)), 1)  # many ties
    scores[rng.random((n, n)) < 0.3] = 0.0  # zeros
    if seed % 2:
        scores[rng.random((n, n)) < 0.2] *= -1  # negative scores
    if seed % 3 == 0:
        scores = scores.astype(np.float32)
    mask = ~np.eye(n, dtype=bool)
    expected = _sklearn_ap(scores, truth, mask)
    dense = evaluate(scores, truth)
    assert dense.average_precision == pytest.approx(expected, rel=1e-12)
    sparse = evaluate(sp.csr_matrix(scores), sp.csr_matrix(truth))
    assert sparse.as_dict() == pytest.approx(dense.as_dict(), rel=1e-12)
    # only regulators 0, 3, 5, ...: the candidates are those columns
    regs = np.arange(0, n, 3)
    reg_mask = mask & np.isin(np.arange(n), regs)[None, :]
    res = evaluate(scores, truth, regulators=regs)
    assert res.average_precision == pytest.approx(_sklearn_ap(scores, truth, reg_mask))
    assert res.n_candidates == reg_mask.sum() and res.n_regulators == regs.size
    # regulators of the truth
    truth_regs = np.flatnonzero((truth * mask).any(axis=0))
    t_mask = mask & np.isin(np.arange(n), truth_regs)[None, :]
    res = evaluate(sp.csr_matrix(scores), truth, regulators="truth")
    assert res.average_precision == pytest.approx(_sklearn_ap(scores, truth, t_mask))
    # transposed scores
    res = evaluate(scores, truth, transpose=True)
    assert res.average_precision == pytest.approx(_sklearn_ap(scores.T, truth, mask))


def test_random_sparse_scores_match_dense_with_regulators_and_transpose():
    rng = np.random.default_rng(7)
    n = 60
    truth = _random_truth(rng, n, 0.05)
    scores = sp.random(n, n, density=0.2, random_state=3, format="csr")
    scores.data = np.round(scores.data - 0.3, 1)  # ties, negatives and explicit zeros
    regs = rng.choice(n, 20, replace=False)
    for kwargs in ({}, {"transpose": True}, {"regulators": regs}, {"regulators": "truth"}):
        a = evaluate(scores, truth, **kwargs)
        b = evaluate(scores.toarray(), sp.csr_matrix(truth), **kwargs)
        assert a.as_dict() == pytest.approx(b.as_dict(), rel=1e-12)
        np.testing.assert_allclose(a.curve_precision, b.curve_precision)


# ------------------------------------------------------------ planted and random networks


def test_planted_network_beats_random():
    rng = np.random.default_rng(0)
    n = 300
    truth = _random_truth(rng, n, 0.05)
    planted = (truth + rng.normal(0, 0.5, (n, n))).astype(np.float32)
    good = evaluate(planted, truth)
    assert good.prevalence == pytest.approx(0.05, rel=0.1)
    assert good.epr > 8
    assert good.auprc > 0.4 > 5 * good.prevalence
    assert good.average_precision > 0.4

    rand = evaluate(rng.random((n, n)), truth)
    assert rand.epr == pytest.approx(1.0, abs=0.3)
    assert rand.auprc == pytest.approx(rand.prevalence, abs=0.01)
    assert rand.average_precision == pytest.approx(rand.prevalence, abs=0.01)

    shuffled = planted.copy()
    off = ~np.eye(n, dtype=bool)
    shuffled[off] = rng.permutation(planted[off])
    mixed = evaluate(shuffled, truth)
    assert mixed.epr == pytest.approx(1.0, abs=0.3)
    assert mixed.auprc == pytest.approx(mixed.prevalence, abs=0.01)


def test_transpose_of_the_truth_is_perfect():
    rng = np.random.default_rng(1)
    truth = _random_truth(rng, 50, 0.08)
    res = evaluate(truth.T * 2.0, truth, transpose=True)
    assert res.epr == pytest.approx(1 / res.prevalence)
    assert res.auprc == pytest.approx(1.0)
    assert res.average_precision == pytest.approx(1.0)
    assert res.precision == 1.0 and res.recall == 1.0
    assert evaluate(truth.T, truth).epr < res.epr


# ------------------------------------------------------------ gene alignment


def _networks(seed: int = 2, n: int = 30):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n)]
    truth = _random_truth(rng, n, 0.1)
    scores = rng.random((n, n)).astype(np.float32)
    scores[rng.random((n, n)) < 0.2] = 0
    return genes, scores, truth


def test_gene_intersection_matches_aligned_arrays():
    genes, scores, truth = _networks()
    n = len(genes)
    keep = np.arange(3, n)  # the scores network lacks the first 3 genes ...
    order = np.random.default_rng(0).permutation(keep)  # ... and is shuffled ...
    extra = ["X1", "X2"]  # ... and has 2 genes the truth lacks
    big = np.zeros((order.size + 2, order.size + 2), dtype=np.float32)
    big[: order.size, : order.size] = scores[np.ix_(order, order)]
    big[-2:, :] = 0.7
    net = GeneNetwork(big, [genes[i] for i in order] + extra)
    truth_net = GeneNetwork(sp.csr_matrix(truth), genes)
    expected = evaluate(scores[np.ix_(keep, keep)], truth[np.ix_(keep, keep)])
    got = evaluate(net, truth_net)
    assert got.as_dict() == pytest.approx(expected.as_dict(), rel=1e-12)
    assert got.n_genes == n - 3
    # the same network stored regulator_by_target scores the same edges
    assert evaluate(net.transpose(), truth_net).as_dict() == pytest.approx(got.as_dict())
    # a truth stored regulator_by_target too
    assert evaluate(net, truth_net.transpose()).as_dict() == pytest.approx(got.as_dict())
    # transpose=True against the array transpose
    t_expected = evaluate(scores[np.ix_(keep, keep)], truth[np.ix_(keep, keep)], transpose=True)
    assert evaluate(net, truth_net, transpose=True).as_dict() == pytest.approx(
        t_expected.as_dict()
    )


def test_symbol_matching_for_ensembl_indexed_networks(caplog):
    genes, scores, truth = _networks()
    ens = [f"ENSG{i:011d}" for i in range(len(genes))]
    symbols = list(genes)
    symbols[5] = genes[4]  # a repeated symbol: the first gene (4) is kept
    var = pd.DataFrame({"symbol": symbols}, index=ens)
    net = GeneNetwork(scores, ens, var=var)
    with caplog.at_level("INFO", logger="bengrn.metrics"):
        got = evaluate(net, GeneNetwork(truth, genes))
    assert "repeated symbols" in caplog.text
    keep = np.array([i for i in range(len(genes)) if i != 5])
    expected = evaluate(scores[np.ix_(keep, keep)], truth[np.ix_(keep, keep)])
    assert got.as_dict() == pytest.approx(expected.as_dict(), rel=1e-12)


def test_regulators_by_name_and_from_the_truth():
    genes, scores, truth = _networks()
    n = len(genes)
    mask = ~np.eye(n, dtype=bool)
    names = ["G1", "G4", "G7", "not-a-gene"]
    cols = [1, 4, 7]
    net, truth_net = GeneNetwork(scores, genes), GeneNetwork(truth, genes)
    got = evaluate(net, truth_net, regulators=names)
    expected = evaluate(scores, truth, regulators=cols)
    assert got.as_dict() == pytest.approx(expected.as_dict())
    assert got.n_regulators == 3
    reg_mask = mask & np.isin(np.arange(n), cols)[None, :]
    assert got.n_candidates == reg_mask.sum()
    assert got.average_precision == pytest.approx(_sklearn_ap(scores, truth, reg_mask))
    # "truth": the genes regulating a true edge
    by_truth = evaluate(net, truth_net, regulators="truth")
    truth_regs = np.flatnonzero(truth.any(axis=0))
    assert by_truth.n_regulators == truth_regs.size
    assert by_truth.as_dict() == pytest.approx(
        evaluate(scores, truth, regulators=truth_regs).as_dict()
    )
    with pytest.raises(TypeError, match="GeneNetwork"):
        evaluate(scores, truth, regulators=["G1"])


# ------------------------------------------------------------ errors


def test_errors():
    genes, scores, truth = _networks()
    with pytest.raises(ValueError, match="share 0 gene"):
        evaluate(GeneNetwork(scores, [f"ENSG{i}" for i in range(len(genes))]),
                 GeneNetwork(truth, genes))  # fmt: skip
    with pytest.raises(ValueError, match="30 x 30 but truth is 29 x 29"):
        evaluate(scores, truth[1:, 1:])
    with pytest.raises(ValueError, match="square"):
        evaluate(scores[1:], truth)
    bad = scores.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(bad, truth)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(sp.csr_matrix(bad), truth)
    bad_truth = truth.copy()
    bad_truth[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(scores, bad_truth)
    with pytest.raises(ValueError, match="no edge"):
        evaluate(scores, np.eye(len(genes)))
    with pytest.raises(ValueError, match="regulators"):
        evaluate(scores, truth, regulators="tfs")
