"""Scores of a gene network against a ground truth: EPR, AUPRC and average precision.

The metrics of the scPRINT paper ("BenGRN and gene network metrics"), computed exactly and
fast: one copy and one sort of the candidate scores, then every metric from counts at the
tie groups of the true edges' scores (no Python loop over pairs).

Inputs
    ``scores`` and ``truth`` are each a :class:`~bengrn.network.GeneNetwork` or a square
    array (dense :class:`numpy.ndarray` or scipy sparse) in ``target_by_regulator``
    orientation: row ``i`` is a target, column ``j`` a regulator, entry ``[i, j]`` scores
    ``j -> i``. Two networks are aligned on their genes (see :func:`evaluate`); arrays must
    have the same shape and gene order.
Truth
    Binary: any nonzero entry is a true edge.
Candidates
    Every ordered pair of (shared) genes except self-edges (the diagonal is ignored on both
    sides), restricted to the pairs whose regulator is in ``regulators`` when given. The
    prevalence is ``n_true_edges / n_candidates``.
Predictions
    A candidate scored exactly 0 is not predicted (as in :class:`GeneNetwork`); any other
    score is a prediction, higher meaning more confident, negative scores ranked below
    the positive ones.

Typical use::

    from bengrn.metrics import evaluate

    res = evaluate(net, truth)          # GeneNetworks or arrays
    res.epr, res.auprc, res.average_precision
    res.as_dict()                       # the scalar fields, e.g. for a results table
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .network import GeneNetwork

__all__ = [
    "Scores",
    "auprc",
    "average_precision",
    "epr",
    "evaluate",
    "precision_recall_curve",
]

logger = logging.getLogger(__name__)

Regulators = None | Literal["truth"] | Sequence[str] | Sequence[int] | np.ndarray
_SYMBOL = "symbol"
# Dense score matrices are copied in blocks of about this many entries (bounded temporaries).
_BLOCK_ENTRIES = 1 << 22
_SHOW = 5


def _show(items: Any) -> str:
    items = [str(x) for x in items]
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Scores:
    """All the metrics of one network against one ground truth (see :func:`evaluate`).

    Attributes
    ----------
    epr
        Early precision ratio: precision among the top ``n_true_edges`` predictions over the
        prevalence (1 for a random network).
    auprc
        Area under the precision-recall curve of the predictions, closed at the prevalence
        from the highest recall reached to recall 1 (about the prevalence when random).
    average_precision
        scikit-learn's ``average_precision_score`` over all candidates (zeros included).
    precision
        Precision of all the predictions (nonzero candidates); 0 without any.
    recall
        Recall of all the predictions: the highest recall of the curve.
    prevalence
        ``n_true_edges / n_candidates``: the precision of a random network.
    n_genes
        Genes scored (the shared genes of the two networks).
    n_regulators
        Genes that may regulate a candidate pair.
    n_true_edges
        True edges among the candidate pairs.
    n_candidates
        Candidate pairs (ordered, no self-edge, regulator restricted).
    n_predicted
        Candidates with a nonzero score.
    curve_precision, curve_recall, curve_thresholds
        The precision-recall curve integrated by :attr:`auprc` (see
        :func:`precision_recall_curve`); left out of :meth:`as_dict`.
    """

    epr: float
    auprc: float
    average_precision: float
    precision: float
    recall: float
    prevalence: float
    n_genes: int
    n_regulators: int
    n_true_edges: int
    n_candidates: int
    n_predicted: int
    curve_precision: np.ndarray = field(repr=False, compare=False)
    curve_recall: np.ndarray = field(repr=False, compare=False)
    curve_thresholds: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, float | int]:
        """The scalar fields (no curve arrays), as plain Python numbers."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("curve_")
        }


# --------------------------------------------------------------------------- inputs


@dataclass
class _Problem:
    """Scores and truth aligned on ``n_genes`` shared genes ("positions").

    The candidate (target ``a``, regulator ``b``) is scored by
    ``matrix[index[b], index[a]]`` when ``flip`` else ``matrix[index[a], index[b]]``
    (``matrix`` is stored as given: no transposed or subset copy).
    """

    matrix: np.ndarray | sp.csr_matrix
    flip: bool
    index: np.ndarray  # position -> row/column of ``matrix``
    regulators: np.ndarray  # positions allowed as regulators, sorted
    true_target: np.ndarray  # positions of the true candidate edges
    true_regulator: np.ndarray
    n_genes: int


def _score_matrix(matrix: Any, what: str) -> np.ndarray | sp.csr_matrix:
    """A 2-D square float ndarray or canonical CSR matrix (no copy when possible)."""
    if isinstance(matrix, pd.DataFrame):
        raise TypeError(f"{what} is a DataFrame: pass GeneNetwork.from_dataframe(...) or .values")
    if sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix)  # shares the buffers of a CSR input
        if not matrix.has_canonical_format:
            matrix = matrix.copy()
            matrix.sum_duplicates()
    else:
        matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{what} must be a square 2-D matrix, got shape {matrix.shape}")
    if np.issubdtype(matrix.dtype, np.complexfloating) or not (
        np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool
    ):
        raise TypeError(f"{what} must hold real numbers, not {matrix.dtype}")
    return matrix


def _value_dtype(dtype: np.dtype) -> np.dtype:
    """float32 and float64 are kept; other reals become the float that holds them exactly."""
    if dtype in (np.float32, np.float64):
        return np.dtype(dtype)
    if dtype in (np.float16, bool, np.int8, np.uint8, np.int16, np.uint16):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _true_pairs(matrix: np.ndarray | sp.csr_matrix, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the nonzero entries of the truth, refusing NaN / inf."""
    if sp.issparse(matrix):
        coo = matrix.tocoo()
        keep = coo.data != 0
        rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep]
    else:
        rows, cols = np.nonzero(matrix)
        vals = matrix[rows, cols]
    if vals.size and not np.isfinite(np.sum(vals, dtype=np.float64)):
        raise ValueError(f"{what} has non-finite values (NaN or inf); it must be binary")
    return rows.astype(np.intp), cols.astype(np.intp)


def _label_sets(net: GeneNetwork) -> list[tuple[str, pd.Index, np.ndarray, int]]:
    """The ways to name this network's genes: (kind, unique labels, positions, n dropped)."""
    out = [("index", net.genes, np.arange(net.n_genes), 0)]
    if _SYMBOL in net.var.columns:
        sym = net.var[_SYMBOL]
        valid = sym.notna().to_numpy()
        labels = sym.astype(str).to_numpy()
        valid &= labels != ""
        pos = np.flatnonzero(valid)
        lab = pd.Index(labels[pos])
        dup = lab.duplicated(keep="first")
        out.append(("symbol", lab[~dup], pos[~dup], int(dup.sum())))
    return out


def _align(scores: GeneNetwork, truth: GeneNetwork) -> tuple[np.ndarray, np.ndarray, list]:
    """Positions of the shared genes in ``scores`` and ``truth`` (truth order) and the
    labels of each shared gene (for matching regulator names).

    Every naming of each side (its index, and its ``var["symbol"]`` column when present) is
    tried; the pairing with the largest overlap wins, index against index on ties.
    """
    best = None
    for s_kind, s_lab, s_pos, s_dup in _label_sets(scores):
        for t_kind, t_lab, t_pos, t_dup in _label_sets(truth):
            where = s_lab.get_indexer(t_lab)
            hit = where >= 0
            n = int(hit.sum())
            if best is None or n > best[0]:
                best = (n, s_kind, t_kind, s_pos[where[hit]], t_pos[hit], s_dup, t_dup)
    n, s_kind, t_kind, s_idx, t_idx, s_dup, t_dup = best
    if n < 2:
        hint = ""
        if _SYMBOL not in scores.var.columns and _SYMBOL not in truth.var.columns:
            hint = (
                " If one network is indexed by Ensembl ids and the other by gene symbols, "
                "give the Ensembl-indexed one a var['symbol'] column."
            )
        raise ValueError(
            f"scores and truth share {n} gene(s) (at least 2 needed), matching their "
            f"indexes and any var['symbol'] column. Scores genes: {_show(scores.genes)}; "
            f"truth genes: {_show(truth.genes)}.{hint}"
        )
    for kind, ndup, what in ((s_kind, s_dup, "scores"), (t_kind, t_dup, "truth")):
        if kind == "symbol" and ndup:
            logger.info("%s: %d repeated symbols, the first gene of each kept", what, ndup)
    logger.info(
        "matched %d genes: scores' %s (%d genes) against truth's %s (%d genes)",
        n,
        s_kind,
        scores.n_genes,
        t_kind,
        truth.n_genes,
    )
    labels = [scores.genes.to_numpy()[s_idx], truth.genes.to_numpy()[t_idx]]
    for net, idx in ((scores, s_idx), (truth, t_idx)):
        if _SYMBOL in net.var.columns:
            labels.append(net.var[_SYMBOL].to_numpy()[idx])
    return s_idx, t_idx, labels


def _regulator_positions(
    regulators: Regulators,
    n: int,
    true_regulator: np.ndarray,
    labels: list | None,
) -> np.ndarray:
    """Sorted positions allowed as regulators."""
    if regulators is None:
        return np.arange(n)
    if isinstance(regulators, str):
        if regulators != "truth":
            raise ValueError(
                f"regulators must be None, 'truth' or a sequence of genes, not {regulators!r}"
            )
        return np.unique(true_regulator)
    reg = np.asarray(list(regulators) if not isinstance(regulators, np.ndarray) else regulators)
    if reg.size == 0:
        raise ValueError("regulators is empty")
    if np.issubdtype(reg.dtype, np.integer):
        if labels is not None:
            raise TypeError("with GeneNetwork inputs give the regulators as gene names")
        if reg.min() < 0 or reg.max() >= n:
            raise ValueError(f"regulator indices must be in [0, {n}), got {_show(reg)}")
        return np.unique(reg)
    if labels is None:
        raise TypeError(
            "regulators given as gene names need GeneNetwork inputs (arrays have no gene "
            "names): pass column indices instead"
        )
    wanted = set(reg.astype(str).tolist())
    mask = np.zeros(n, dtype=bool)
    for lab in labels:
        mask |= pd.Index(lab).astype(str).isin(wanted)
    found = set()
    for lab in labels:
        found.update(pd.Index(lab[mask]).astype(str).tolist())
    missing = wanted - found
    if missing:
        logger.info(
            "%d of %d regulators are not among the scored genes: %s",
            len(missing),
            len(wanted),
            _show(sorted(missing)),
        )
    return np.flatnonzero(mask)


def _prepare(scores: Any, truth: Any, transpose: bool, regulators: Regulators) -> _Problem:
    """Check and align the inputs (no copy of the score matrix)."""
    s_net, t_net = isinstance(scores, GeneNetwork), isinstance(truth, GeneNetwork)
    s_mat = scores.matrix if s_net else _score_matrix(scores, "scores")
    t_mat = truth.matrix if t_net else _score_matrix(truth, "truth")
    if s_net and sp.issparse(s_mat) and not s_mat.has_canonical_format:
        s_mat = _score_matrix(s_mat, "scores")
    s_flip = s_net and scores.orientation == "regulator_by_target"
    t_flip = t_net and truth.orientation == "regulator_by_target"
    labels = None
    if s_net and t_net:
        s_idx, t_idx, labels = _align(scores, truth)
    else:
        if s_mat.shape != t_mat.shape:
            raise ValueError(
                f"scores is {s_mat.shape[0]} x {s_mat.shape[1]} but truth is "
                f"{t_mat.shape[0]} x {t_mat.shape[1]}: arrays must be aligned on the same "
                "genes (pass GeneNetworks to align them by gene)"
            )
        s_idx = t_idx = np.arange(s_mat.shape[0])
        if s_net or t_net:
            labels = [(scores if s_net else truth).genes.to_numpy()]
    n = s_idx.size
    if n < 2:
        raise ValueError(f"at least 2 genes are needed, got {n}")

    rows, cols = _true_pairs(t_mat, "truth")
    target, regulator = (cols, rows) if t_flip else (rows, cols)
    to_pos = np.full(t_mat.shape[0], -1, dtype=np.intp)
    to_pos[t_idx] = np.arange(n)
    a, b = to_pos[target], to_pos[regulator]
    keep = (a >= 0) & (b >= 0) & (a != b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        raise ValueError(
            f"the truth has no edge (self-edges excluded) among the {n} genes it shares "
            "with the scores"
        )
    reg = _regulator_positions(regulators, n, b, labels)
    if reg.size == 0:
        raise ValueError("none of the regulators is among the scored genes")
    is_reg = np.zeros(n, dtype=bool)
    is_reg[reg] = True
    keep = is_reg[b]
    if not keep.any():
        raise ValueError(f"no true edge has one of the {reg.size} regulators as regulator")
    return _Problem(
        matrix=s_mat,
        flip=bool(transpose) != s_flip,
        index=s_idx,
        regulators=reg,
        true_target=a[keep],
        true_regulator=b[keep],
        n_genes=n,
    )


# --------------------------------------------------------------------------- ranking


@dataclass
class _Ranked:
    """The candidate scores, sorted, and the true edges' scores.

    ``values`` holds candidate scores in ascending order; ``extra_zeros`` more candidates
    score 0 without being in it (a sparse matrix's implicit zeros).
    """

    values: np.ndarray
    extra_zeros: int
    true_scores: np.ndarray  # sorted ascending
    n_candidates: int
    n_genes: int
    n_regulators: int

    def count_ge(self, v: np.ndarray) -> np.ndarray:
        """Candidates scored >= each ``v``."""
        v = np.asarray(v, dtype=self.values.dtype)
        return (
            self.values.size
            - _find(self.values, v, "left")
            + np.where(v <= 0, self.extra_zeros, 0)
        )

    def count_gt(self, v: np.ndarray) -> np.ndarray:
        """Candidates scored > each ``v``."""
        v = np.asarray(v, dtype=self.values.dtype)
        return (
            self.values.size
            - _find(self.values, v, "right")
            + np.where(v < 0, self.extra_zeros, 0)
        )


def _find(values: np.ndarray, v: Any, side: Literal["left", "right"] = "left") -> Any:
    """``np.searchsorted`` with ``v`` cast to ``values``' dtype first (a key of another
    dtype would make numpy convert the whole sorted array)."""
    return np.searchsorted(values, np.asarray(v, dtype=values.dtype), side=side)


def _is_all(index: np.ndarray, n: int) -> bool:
    return index.size == n and bool(np.array_equal(index, np.arange(n)))


def _rank(p: _Problem) -> _Ranked:
    """Copy the candidate scores once and sort them; gather the true edges' scores."""
    m = p.matrix
    dtype = _value_dtype(m.dtype)
    targets, regs = p.index, p.index[p.regulators]
    rows, cols = (regs, targets) if p.flip else (targets, regs)
    n_reg = p.regulators.size
    n_cand = p.n_genes * n_reg - n_reg  # every regulator is also a target: n_reg self-pairs
    t_rows, t_cols = p.index[p.true_target], p.index[p.true_regulator]
    if p.flip:
        t_rows, t_cols = t_cols, t_rows

    if sp.issparse(m):
        sub = m
        if not (_is_all(rows, m.shape[0]) and _is_all(cols, m.shape[1])):
            sub = m[rows][:, cols]
        coo = sub.tocoo()
        keep = (coo.data != 0) & (rows[coo.row] != cols[coo.col])
        values = coo.data[keep].astype(dtype, copy=True)
        if values.size and not np.isfinite(np.sum(values, dtype=np.float64)):
            raise ValueError("scores have non-finite values (NaN or inf)")
        values.sort()
        extra = n_cand - values.size
        true_scores = np.asarray(m[t_rows, t_cols]).ravel().astype(dtype)
    else:
        block = _gather(m, rows, cols, dtype)  # (len(rows), len(cols)), a copy
        # the self-pairs: +inf sorts them after every score (before any NaN)
        where = np.full(m.shape[1], -1, dtype=np.intp)
        where[cols] = np.arange(cols.size)
        q = where[rows]
        r = np.flatnonzero(q >= 0)
        block[r, q[r]] = np.inf
        flat = block.reshape(-1)
        flat.sort()
        n_self = r.size
        values = flat[: flat.size - n_self]
        if flat.size and not (
            values[0] > -np.inf and values[-1] < np.inf and (n_self == 0 or flat[-1] == np.inf)
        ):
            raise ValueError("scores have non-finite values (NaN or inf) off the diagonal")
        extra = 0
        true_scores = m[t_rows, t_cols].astype(dtype)
    true_scores.sort()
    return _Ranked(values, int(extra), true_scores, int(n_cand), p.n_genes, int(n_reg))


def _gather(m: np.ndarray, rows: np.ndarray, cols: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``m[np.ix_(rows, cols)]`` as a new C-contiguous ``dtype`` array, block by block."""
    all_rows, all_cols = _is_all(rows, m.shape[0]), _is_all(cols, m.shape[1])
    if all_rows and all_cols:
        return np.array(m, dtype=dtype, order="C", copy=True)
    out = np.empty((rows.size, cols.size), dtype=dtype)
    step = max(1, _BLOCK_ENTRIES // max(m.shape[1], 1))
    for start in range(0, rows.size, step):
        stop = min(start + step, rows.size)
        block = m[start:stop] if all_rows else m[rows[start:stop]]
        out[start:stop] = block if all_cols else block[:, cols]
    return out


# --------------------------------------------------------------------------- metrics


@dataclass
class _Curve:
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def _above(r: _Ranked, v: np.ndarray) -> np.ndarray:
    """The smallest nonzero candidate score above each ``v`` (there must be one)."""
    vals = r.values
    idx = _find(vals, v, "right")
    out = vals[np.minimum(idx, vals.size - 1)]
    zero = out == 0
    if zero.any():
        out[zero] = vals[_find(vals, 0, "right")]
    return out


def _compute(r: _Ranked) -> Scores:
    """Every metric from the sorted candidate scores."""
    n_true, n_cand = r.true_scores.size, r.n_candidates
    prevalence = n_true / n_cand
    zero = np.zeros(1, dtype=r.values.dtype)
    n_zero = int(r.count_ge(zero)[0] - r.count_gt(zero)[0])
    n_pred = n_cand - n_zero

    # true-edge tie groups, best first
    u, tp_eq = np.unique(r.true_scores, return_counts=True)
    u, tp_eq = u[::-1], tp_eq[::-1]

    # average precision: scikit-learn's, every candidate at its raw score (0 included)
    tp_ge = np.cumsum(tp_eq)
    recall = tp_ge / n_true
    ap = float(np.sum(np.diff(recall, prepend=0.0) * (tp_ge / r.count_ge(u))))

    # predictions: the nonzero candidates (negatives below positives, zeros left out)
    nz = u != 0
    u, tp_eq = u[nz], tp_eq[nz]
    tp_ge = np.cumsum(tp_eq)  # true predictions scored >= u
    ge = r.count_ge(u)
    pred_ge = ge - np.where(u < 0, n_zero, 0)
    pred_eq = ge - r.count_gt(u)
    tp_pred = int(tp_ge[-1]) if tp_ge.size else 0

    curve = _curve(r, u, tp_eq, tp_ge, pred_ge, pred_eq, n_pred, tp_pred)
    rec, prec = curve.recall, curve.precision
    area = float(np.sum(np.diff(rec) * (prec[1:] + prec[:-1]) / 2)) if rec.size else 0.0
    r_max = tp_pred / n_true
    auprc_ = area + prevalence * (1.0 - r_max)

    # EPR: precision in the top K = n_true predictions, ties at the cut shared pro rata
    k = n_true
    if n_pred <= k:
        tp_k = float(tp_pred)
    else:
        vals = r.values
        n_positive = vals.size - int(_find(vals, 0, "right"))
        if k <= n_positive:
            cut = vals[vals.size - k]
        else:
            n_negative = int(_find(vals, 0, "left"))
            cut = vals[n_negative - (k - n_positive)]
        cut_a = np.asarray([cut], dtype=vals.dtype)
        above = int(r.count_gt(cut_a)[0]) - (n_zero if cut < 0 else 0)
        tied = int(r.count_ge(cut_a)[0]) - int(r.count_gt(cut_a)[0])
        ts = r.true_scores
        tp_above = ts.size - int(_find(ts, cut, "right"))
        if cut < 0:
            tp_above -= int(_find(ts, 0, "right") - _find(ts, 0, "left"))
        tp_tied = int(_find(ts, cut, "right") - _find(ts, cut, "left"))
        tp_k = tp_above + (k - above) * tp_tied / tied
    epr_ = (tp_k / k) / prevalence

    return Scores(
        epr=float(epr_),
        auprc=float(auprc_),
        average_precision=ap,
        precision=tp_pred / n_pred if n_pred else 0.0,
        recall=float(r_max),
        prevalence=float(prevalence),
        n_genes=int(r.n_genes),
        n_regulators=int(r.n_regulators),
        n_true_edges=int(n_true),
        n_candidates=int(n_cand),
        n_predicted=int(n_pred),
        curve_precision=curve.precision,
        curve_recall=curve.recall,
        curve_thresholds=curve.thresholds,
    )


def _curve(
    r: _Ranked,
    u: np.ndarray,
    tp_eq: np.ndarray,
    tp_ge: np.ndarray,
    pred_ge: np.ndarray,
    pred_eq: np.ndarray,
    n_pred: int,
    tp_pred: int,
) -> _Curve:
    """The corner points of the precision-recall curve of the predictions.

    For each tie group holding true edges (threshold ``u``): the point just before it
    enters (the previous threshold) and the point once it has; the starting point
    ``(0, precision of the first threshold)`` at threshold +inf; and the point of all the
    predictions (the lowest nonzero threshold). Between two corners the recall is
    constant, so the trapezoidal area equals that of the curve with every threshold.
    """
    n_true = r.true_scores.size
    dtype = np.float64
    if n_pred == 0:
        empty = np.empty(0, dtype=dtype)
        return _Curve(empty, empty, empty)
    prec = tp_ge / pred_ge
    before = pred_ge - pred_eq  # predictions above the group
    tp_before = tp_ge - tp_eq
    prev_is_new = before > 0
    prev_is_new[1:] &= before[1:] != pred_ge[:-1]  # not already the previous corner
    prev_is_new[:1] = False  # (0, 0): the same as the starting point
    first_prec = float(prec[0]) if (u.size and before[0] == 0) else 0.0

    n = u.size
    p_all = np.empty(2 * n, dtype=dtype)
    r_all = np.empty(2 * n, dtype=dtype)
    t_all = np.empty(2 * n, dtype=np.float64)
    p_all[0::2] = np.divide(tp_before, before, out=np.zeros(n), where=before > 0)
    r_all[0::2] = tp_before / n_true
    if prev_is_new.any():
        t_all[0::2][prev_is_new] = _above(r, u[prev_is_new])
    p_all[1::2] = prec
    r_all[1::2] = tp_ge / n_true
    t_all[1::2] = u
    take = np.ones(2 * n, dtype=bool)
    take[0::2] = prev_is_new
    precision = [np.array([first_prec]), p_all[take]]
    recall = [np.zeros(1), r_all[take]]
    thresholds = [np.array([np.inf]), t_all[take]]
    if n_pred > (int(pred_ge[-1]) if n else 0):
        vals = r.values
        lowest = vals[0] if vals[0] < 0 else vals[_find(vals, 0, "right")]
        precision.append(np.array([tp_pred / n_pred]))
        recall.append(np.array([tp_pred / n_true]))
        thresholds.append(np.array([float(lowest)]))
    return _Curve(np.concatenate(precision), np.concatenate(recall), np.concatenate(thresholds))


# --------------------------------------------------------------------------- public API


def evaluate(
    scores: GeneNetwork | np.ndarray | sp.spmatrix,
    truth: GeneNetwork | np.ndarray | sp.spmatrix,
    *,
    transpose: bool = False,
    regulators: Regulators = None,
) -> Scores:
    """Score a gene network against a ground truth: every metric from one sort.

    Parameters
    ----------
    scores
        The network: a :class:`GeneNetwork` (any orientation) or a square array, dense or
        scipy sparse, rows targets and columns regulators. Zeros are not predictions;
        negative scores are predictions ranked below the positive ones. NaN or infinite
        scores (off the diagonal) are refused.
    truth
        The ground truth, likewise; binary: any nonzero entry is a true edge.
    transpose
        Score the transpose of ``scores`` (regulator and target roles swapped) against the
        truth, as the paper does for OmniPath.
    regulators
        Restrict the candidate pairs to those whose regulator is in this set: ``"truth"``,
        the genes regulating at least one true edge among the shared genes (the paper's
        TF-only mode); or gene names (e.g. a TF list), matched against the genes' ids and
        symbols on both sides; with array inputs, column indices. Unknown names are logged
        and ignored.

    Returns
    -------
    The metrics and the precision-recall curve: a frozen :class:`Scores`.

    Notes
    -----
    Genes
        Two :class:`GeneNetwork` inputs are turned to ``target_by_regulator`` (without
        copying the scores) and aligned on their shared genes. Each side is named by its
        index and, when its ``var`` has a ``symbol`` column, by its symbols (repeated
        symbols: the first gene kept); the pairing with the largest overlap is used, index
        against index on ties. So an Ensembl-indexed scPRINT network with symbols matches
        a symbol-indexed truth.
    Candidates
        All ordered pairs of shared genes but self-edges, with a regulator in
        ``regulators``. ``prevalence = n_true_edges / n_candidates``.
    EPR
        With ``K = n_true_edges``: the expected number of true edges among the ``K`` best
        predictions, over ``K``, over the prevalence. The tie group straddling the cut
        counts at its rate: ``(slots left) * (true in group) / (group size)`` (the
        expectation under a random order of the ties). Fewer than ``K`` predictions
        leave the missing slots as misses.
    AUPRC
        The precision-recall curve of the predictions, one point per distinct nonzero
        score from the highest down (a tie group enters at once), starting at
        ``(recall 0, precision of the first point)``; its trapezoidal area up to the
        highest recall reached ``R`` plus ``prevalence * (1 - R)`` (closed at the
        prevalence, no interpolation to recall 1). No prediction: the prevalence.
    Average precision
        Exactly :func:`sklearn.metrics.average_precision_score` with every candidate at its
        score, zeros included (below the positive scores, above the negative ones):
        ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])  # 1 -> 0 and 0 -> 2
    >>> net = np.array([[0, 0.9, 0.1], [0.2, 0, 0], [0.8, 0, 0]])
    >>> res = evaluate(net, truth)
    >>> res.epr, res.auprc, res.n_candidates
    (3.0, 1.0, 6)
    """
    return _compute(_rank(_prepare(scores, truth, transpose, regulators)))


def epr(
    scores: GeneNetwork | np.ndarray | sp.spmatrix,
    truth: GeneNetwork | np.ndarray | sp.spmatrix,
    *,
    transpose: bool = False,
    regulators: Regulators = None,
) -> float:
    """Early precision ratio: precision among the ``K`` best predictions over the
    prevalence, ``K`` the number of true candidate edges (1 for a random network).

    Ties at the cut count at the rate of their group; zeros are not predictions (missing
    slots are misses). Parameters and details as in :func:`evaluate`.
    """
    return evaluate(scores, truth, transpose=transpose, regulators=regulators).epr


def auprc(
    scores: GeneNetwork | np.ndarray | sp.spmatrix,
    truth: GeneNetwork | np.ndarray | sp.spmatrix,
    *,
    transpose: bool = False,
    regulators: Regulators = None,
) -> float:
    """Area under the precision-recall curve of the nonzero predictions (trapezoidal),
    closed at the prevalence from the highest recall reached to 1: about the prevalence
    for a random network, 1 for a perfect one. Parameters and details as in
    :func:`evaluate`.
    """
    return evaluate(scores, truth, transpose=transpose, regulators=regulators).auprc


def average_precision(
    scores: GeneNetwork | np.ndarray | sp.spmatrix,
    truth: GeneNetwork | np.ndarray | sp.spmatrix,
    *,
    transpose: bool = False,
    regulators: Regulators = None,
) -> float:
    """scikit-learn's ``average_precision_score`` over all candidate pairs (a zero score
    is a score like any other). Parameters and details as in :func:`evaluate`.
    """
    return evaluate(scores, truth, transpose=transpose, regulators=regulators).average_precision


def precision_recall_curve(
    scores: GeneNetwork | np.ndarray | sp.spmatrix,
    truth: GeneNetwork | np.ndarray | sp.spmatrix,
    *,
    transpose: bool = False,
    regulators: Regulators = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The precision-recall curve of the nonzero predictions that :func:`auprc` integrates
    (before its closing at the prevalence).

    Parameters as in :func:`evaluate`.

    Returns
    -------
    precision, recall, thresholds
        Equal-length arrays, by decreasing threshold (a prediction is a score >= the
        threshold). The first point is ``(recall 0, precision of the first threshold)`` at
        threshold ``+inf``; then the corners of the curve: for each tie group holding true
        edges, the point just before it enters and the point once it has; last, the point
        of all the predictions. Between corners only the precision moves (the recall is
        constant), so the trapezoidal area over these points is that of the curve with
        one point per distinct score, without materialising ~n^2 points. Empty when
        nothing is predicted.
    """
    res = evaluate(scores, truth, transpose=transpose, regulators=regulators)
    return res.curve_precision, res.curve_recall, res.curve_thresholds
