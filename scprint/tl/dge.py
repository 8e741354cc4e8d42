"""Differential expression between two conditions within each cell type.

scaLR (Methods, "Downstream analysis"; Results, "Comparison of top-K differential gene
expression features") tests, for each cell type, the genes of a condition (e.g.
"Myocardial infarction") against a reference condition ("Normal") in two ways:

``"pseudobulk"``
    The counts of each donor x cell type x condition are summed into one sample, and
    the samples of a cell type are tested with DESeq2's negative-binomial GLM and Wald
    test (through ``pydeseq2``). When at least two donors have cells in both conditions
    the design is ``~ donor + condition`` (a paired test), else ``~ condition``. Size
    factors (median of ratios) come from all genes, or, when only some genes are tested,
    from the most counted genes, fitted along with them but not reported.
``"lmm"``
    A linear mixed-effects model per gene on the cells' log1p(1e4-normalised)
    expression, ``y ~ condition + (1 | donor)``, fitted by REML with ``statsmodels``.
    The condition coefficient is tested with a t statistic whose degrees of freedom
    follow the containment rule: ``n_donors - 2`` when no donor has cells in both
    conditions (the effect is estimated between donors), ``n_cells - n_donors - 1``
    otherwise.

Both report, per cell type and gene, the log2 fold change of the target condition over
the reference, the p-value and the Benjamini-Hochberg adjusted p-value (over the genes
tested in that cell type). Genes can be all genes, a list, or the top-K features of a
tabular classifier (scaLR runs its DGE on the top-K features of its model).

Typical use::

    from scprint import tl

    table = tl.dge(adata, groupby="cell_type", condition="disease", reference="normal",
                   donor_key="donor_id", method="pseudobulk")
    tl.write_table(table, "dge.csv")
    tl.write_volcanoes(table, "volcano/")

``pydeseq2`` and ``statsmodels`` come with the ``dge`` extra
(``pip install 'scprint-suite[dge]'``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scdataloader.errors import CountsError, InputError
from scdataloader.preprocess import check_not_empty

__all__ = [
    "COLUMNS",
    "METHODS",
    "N_CONTROL_GENES",
    "DGECountsError",
    "DGEError",
    "DGEWarning",
    "bh_adjust",
    "dge",
    "gls_se",
    "model_top_genes",
    "pseudobulk",
]

logger = logging.getLogger(__name__)

Method = Literal["pseudobulk", "lmm"]
METHODS: tuple[str, ...] = ("pseudobulk", "lmm")

#: Columns of the table returned by :func:`dge`, in order.
COLUMNS: tuple[str, ...] = (
    "cell_type",
    "gene",
    "log2fc",
    "lfc_se",
    "stat",
    "pvalue",
    "padj",
    "direction",
    "mean_reference",
    "mean_target",
    "n_cells_reference",
    "n_cells_target",
    "n_donors_reference",
    "n_donors_target",
    "method",
    "design",
)

_REF, _TGT = "reference", "target"  # condition levels as the models see them
#: Pseudobulk on a subset of genes: genes with the most counts that set the size factors.
N_CONTROL_GENES = 200
_TARGET_SUM = 1e4


class DGEError(InputError):
    """The input cannot be tested as asked; the message says what is wrong and what to do."""


class DGECountsError(DGEError, CountsError):
    """The values cannot be tested: NaN, negative, or not counts where counts are needed."""


class DGEWarning(UserWarning):
    """A cell type was skipped (a condition absent, too few donors or cells)."""


def _extra_missing(package: str) -> DGEError:
    return DGEError(
        f"{package} is needed for this differential-expression method but is not "
        "installed: pip install 'scprint-suite[dge]' (or pip install pydeseq2 statsmodels)."
    )


# --------------------------------------------------------------------------- pure helpers


def bh_adjust(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN stays NaN and is not counted.

    Parameters
    ----------
    pvalues
        P-values in [0, 1], NaN for untested genes.

    Returns
    -------
    Adjusted p-values, same shape: ``min_{j >= i} p_(j) m / j`` on the sorted finite
    p-values (``m`` of them), capped at 1; every adjusted value is >= its p-value.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    finite = p[ok]
    order = np.argsort(finite)
    ranked = finite[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked, 1.0)
    out[ok] = adjusted
    return out


def pseudobulk(
    X: np.ndarray | sp.spmatrix, samples: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum the rows of ``X`` sharing a sample label.

    Parameters
    ----------
    X
        Cells x genes (dense or sparse).
    samples
        One label per cell.

    Returns
    -------
    (sums, labels, n_cells): samples x genes float64 sums, the sorted unique labels (the
    rows of ``sums``), and the cells summed into each.
    """
    labels, codes = np.unique(np.asarray(samples), return_inverse=True)
    n = len(codes)
    indicator = sp.csr_matrix(
        (np.ones(n), (codes, np.arange(n))), shape=(len(labels), n)
    )  # (samples, cells)
    sums = indicator @ sp.csr_matrix(X, dtype=np.float64)  # (samples, genes)
    return np.asarray(sums.todense()), labels, np.bincount(codes, minlength=len(labels))


def _containment_df(n_cells: int, donors: np.ndarray, is_target: np.ndarray) -> int:
    """Residual degrees of freedom of the condition effect of ``y ~ condition + (1|donor)``."""
    n_donors = len(np.unique(donors))
    frame = pd.DataFrame({"d": donors, "t": is_target})
    within = bool((frame.groupby("d")["t"].nunique() > 1).any())
    return max(n_cells - n_donors - 1, 1) if within else max(n_donors - 2, 1)


# --------------------------------------------------------------------------- model genes


def model_top_genes(
    model: Any, adata: ad.AnnData | None = None, *, k: int | None = None, layer: str | None = None
) -> list[str]:
    """The ``k`` most important input genes of a classifier, best first (scaLR's top-K).

    Parameters
    ----------
    model
        A :class:`scprint.tabular.TabularClassifier` (linear model: scaLR's score, the
        mean absolute weight of each gene over the classes; other models: the mean over
        classes of their per-class mean attribution on ``adata``), an
        :class:`scprint.tabular.Ensemble` (mean attributions), or a
        :class:`scprint.tabular.FeatureSelection` (its ``scores``).
    adata
        Cells on which attributions are computed (non-linear models only).
    k
        Number of genes; None for all the model's genes.
    layer
        Layer of ``adata`` holding raw counts for the attributions (default ``X``).

    Returns
    -------
    Gene names, as the model names them.
    """
    if k is not None and k <= 0:
        raise DGEError(f"k must be a positive number of genes, got {k}.")
    if isinstance(getattr(model, "scores", None), pd.Series):  # FeatureSelection
        scores = model.scores
    elif getattr(model, "model_name", None) == "linear" and hasattr(model, "weights"):
        scores = model.weights().abs().mean(axis=1)
    elif hasattr(model, "class_attributions"):
        if adata is None:
            raise DGEError(
                f"The top genes of a {getattr(model, 'model_name', type(model).__name__)} "
                "model come from its attributions on cells: pass the AnnData."
            )
        scores = model.class_attributions(adata, layer=layer).mean(axis=0)
    else:
        raise DGEError(
            f"model= must be a scprint.tabular TabularClassifier, Ensemble or "
            f"FeatureSelection, not {type(model).__name__}."
        )
    scores = pd.Series(scores, dtype=np.float64).sort_values(ascending=False, kind="stable")
    genes = [str(g) for g in scores.index]
    return genes if k is None else genes[:k]


# --------------------------------------------------------------------------- the plan


@dataclass
class _Group:
    """One cell type to test: its cells (rows of the selected matrix) and their sample."""

    name: str
    rows: np.ndarray
    donors: np.ndarray  # donor code per row
    is_target: np.ndarray  # bool per row
    n_cells: dict[str, int] = field(default_factory=dict)
    n_donors: dict[str, int] = field(default_factory=dict)
    n_paired: int = 0  # donors with cells in both conditions


def _column(adata: ad.AnnData, key: str, what: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise DGEError(
            f"{what}={key!r} is not a column of adata.obs (available: "
            f"{list(adata.obs.columns)}). Pass the obs column holding the {what}."
        )
    return adata.obs[key]


def _levels(values: pd.Series, reference: str, target: str | None, key: str) -> str:
    """The target level (checked), given the reference."""
    present = sorted({str(v) for v in values.dropna().unique()})
    if str(reference) not in present:
        raise DGEError(
            f"reference={reference!r} is not a level of obs[{key!r}] (levels: {present})."
        )
    if target is not None:
        if str(target) not in present:
            raise DGEError(
                f"target={target!r} is not a level of obs[{key!r}] (levels: {present})."
            )
        if str(target) == str(reference):
            raise DGEError("target and reference are the same level; pick two different ones.")
        return str(target)
    others = [v for v in present if v != str(reference)]
    if len(others) != 1:
        raise DGEError(
            f"obs[{key!r}] has {len(others)} levels besides the reference "
            f"{reference!r} ({others}); say which to test with target=."
        )
    return others[0]


def _no_missing(series: pd.Series, key: str, scope: str = "") -> None:
    bad = int(series.isna().sum())
    if bad:
        raise DGEError(
            f"obs[{key!r}] has {bad} missing (NaN) values{scope}. Fill them or drop those "
            f"cells first, e.g. adata[adata.obs[{key!r}].notna()]."
        )


def _plan(
    groups_col: np.ndarray,
    donors: np.ndarray,
    is_target: np.ndarray,
    *,
    groups: Sequence[str] | None,
    min_cells: int,
    min_donors: int,
    paired: bool | None,
) -> tuple[list[_Group], dict[str, str]]:
    """The testable cell types and the reasons the others are skipped."""
    names = sorted(set(groups_col))
    if groups is not None:
        missing = [str(g) for g in groups if str(g) not in names]
        if missing:
            raise DGEError(f"groups {missing} have no cells in the two conditions.")
        names = [str(g) for g in groups]
    plan, skipped = [], {}
    for name in names:
        rows = np.flatnonzero(groups_col == name)
        frame = pd.DataFrame({"d": donors[rows], "t": is_target[rows]})
        size = frame.groupby(["d", "t"])["d"].transform("size").to_numpy()
        rows = rows[size >= min_cells]
        kept = frame[size >= min_cells].drop_duplicates()
        n_cells = {_TGT: int(is_target[rows].sum()), _REF: int((~is_target[rows]).sum())}
        n_donors = {_TGT: int(kept["t"].sum()), _REF: int((~kept["t"]).sum())}
        n_paired = int((kept.groupby("d")["t"].nunique() > 1).sum())
        absent = [lv for lv in (_REF, _TGT) if n_cells[lv] == 0]
        if absent:
            skipped[name] = f"no {' or '.join(absent)} cells (with >= {min_cells} per donor)"
        elif min(n_donors.values()) < min_donors:
            skipped[name] = (
                f"{n_donors[_REF]} reference and {n_donors[_TGT]} target donors with >= "
                f"{min_cells} cells; at least {min_donors} per condition are needed"
            )
        elif paired and n_paired < 2:
            skipped[name] = (
                f"paired=True but {n_paired} donors have >= {min_cells} cells in both "
                "conditions; at least 2 are needed (or use paired=None / False)"
            )
        else:
            plan.append(
                _Group(name, rows, donors[rows], is_target[rows], n_cells, n_donors, n_paired)
            )
    return plan, skipped


def _gene_index(
    adata: ad.AnnData, genes, model, k, layer: str | None, counts: bool
) -> tuple[np.ndarray, list[str]]:
    """Column indices and names of the genes to test."""
    names = pd.Index(adata.var_names.astype(str))
    if genes is None:
        if model is not None:
            raise DGEError("model= is only used with genes='model_top_k'.")
        return np.arange(adata.n_vars), list(names)
    if isinstance(genes, str):
        if genes != "model_top_k":
            raise DGEError(
                f"genes={genes!r}: pass None (all genes), a list of gene names or "
                "'model_top_k' (with model= and k=)."
            )
        if model is None:
            raise DGEError("genes='model_top_k' needs the classifier: pass model=.")
        wanted = model_top_genes(model, adata, k=k, layer=layer if counts else None)
    else:
        wanted = [str(g) for g in genes]
    if len(set(wanted)) != len(wanted):
        raise DGEError("genes has duplicates; give each gene once.")
    found = names.get_indexer(wanted)
    missing = [g for g, i in zip(wanted, found, strict=True) if i < 0]
    if len(missing) == len(wanted):
        raise DGEError(
            f"None of the {len(wanted)} genes asked for is in adata.var_names (e.g. "
            f"{wanted[:3]}; adata has e.g. {list(names[:3])}): use the same gene names."
        )
    if missing:
        logger.warning(
            "%d of %d genes are not in adata.var_names and are left out: %s",
            len(missing),
            len(wanted),
            missing[:10],
        )
    found = found[found >= 0]
    return found, list(names[found])


def _matrix_values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


def _check_values(X, where: str, method: str, *, allow_non_counts: bool, normalize: bool) -> bool:
    """Check the selected cells' values; True when they are integer counts."""
    values = _matrix_values(X)
    if not np.all(np.isfinite(values)):
        bad = int((~np.isfinite(values)).sum())
        raise DGECountsError(
            f"{where} holds {bad} NaN or infinite values in the cells to test. Fix or "
            "remove them first (replace by 0 only if they really mean no expression)."
        )
    if not (method == "lmm" and not normalize) and values.size and values.min() < 0:
        raise DGECountsError(
            f"{where} holds negative values (min {values.min():.3g}): it looks scaled or "
            "centred. Pass raw (or denoised) counts with layer=."
        )
    integer = bool(np.all(values == np.rint(values)))
    if method == "pseudobulk" and not integer and not allow_non_counts:
        raise DGECountsError(
            f"{where} holds non-integer values (e.g. {values[values != np.rint(values)][:3]})"
            "; pseudobulk testing needs counts. Pass the raw counts with layer=, or, for a "
            "denoised layer of expected counts, allow_non_counts=True to round them."
        )
    if method == "lmm" and normalize and not integer:
        from scdataloader.preprocess import check_counts

        check = check_counts(X)
        if check.kind == "recoverable":
            raise DGECountsError(
                f"{where} looks log-transformed counts ({check.transform}); the mixed model "
                "normalises counts itself. Pass the counts, or normalize=False to use the "
                "values as they are."
            )
        if check.kind == "log_normalized":
            logger.warning(
                "%s holds small non-integer values (max %.3g); if they are already "
                "log-normalised, pass normalize=False.",
                where,
                check.max_value,
            )
    return integer


# --------------------------------------------------------------------------- the tests


def _import_pydeseq2():
    try:
        from pydeseq2.dds import DeseqDataSet
        from pydeseq2.default_inference import DefaultInference
        from pydeseq2.ds import DeseqStats
    except ImportError as e:
        raise _extra_missing("pydeseq2") from e
    return DeseqDataSet, DeseqStats, DefaultInference


def _import_mixedlm():
    try:
        from statsmodels.regression.mixed_linear_model import MixedLM
    except ImportError as e:
        raise _extra_missing("statsmodels") from e
    return MixedLM


def _deseq2(
    counts: np.ndarray,
    condition: np.ndarray,
    donors: np.ndarray | None,
    genes: list[str],
    n_cpus: int,
    control: np.ndarray | None = None,
) -> pd.DataFrame:
    """DESeq2 Wald test of ``target`` vs ``reference`` on samples x genes counts; the size
    factors come from the ``control`` columns (all columns when None)."""
    import contextlib
    import inspect
    import io

    DeseqDataSet, DeseqStats, DefaultInference = _import_pydeseq2()
    index = [f"s{i}" for i in range(len(counts))]
    meta = pd.DataFrame({"condition": condition}, index=index)
    factors = ["condition"]
    if donors is not None:
        meta["donor"] = [f"d{d}" for d in donors]
        factors = ["donor", "condition"]
    frame = pd.DataFrame(counts.astype(np.int64), index=index, columns=genes)
    inference = DefaultInference(n_cpus=n_cpus)
    kwargs: dict[str, Any] = {"refit_cooks": True, "inference": inference, "quiet": True}
    parameters = inspect.signature(DeseqDataSet).parameters
    if "design" in parameters:  # pydeseq2 >= 0.5
        kwargs["design"] = "~" + " + ".join(factors)
    else:
        kwargs["design_factors"] = factors
        kwargs["ref_level"] = ["condition", _REF]
    if control is not None and "control_genes" in parameters:
        kwargs["control_genes"] = np.asarray(control)
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        dds = DeseqDataSet(counts=frame, metadata=meta, **kwargs)
        dds.deseq2()
        stats = DeseqStats(
            dds, contrast=["condition", _TGT, _REF], inference=inference, quiet=True
        )
        stats.summary()
    for message in [str(w.message) for w in caught] + printed.getvalue().splitlines():
        if message.strip():
            logger.info("pydeseq2: %s", message.strip())
    res = stats.results_df
    normed = counts / np.asarray(dds.obs["size_factors"], dtype=np.float64)[:, None]
    is_t = condition == _TGT
    return pd.DataFrame(
        {
            "gene": genes,
            "log2fc": res["log2FoldChange"].to_numpy(),
            "lfc_se": res["lfcSE"].to_numpy(),
            "stat": res["stat"].to_numpy(),
            "pvalue": res["pvalue"].to_numpy(),
            "mean_reference": normed[~is_t].mean(axis=0),
            "mean_target": normed[is_t].mean(axis=0),
        }
    )


def _lmm(Y, donors: np.ndarray, is_target: np.ndarray, genes: list[str], bar) -> pd.DataFrame:
    """Per-gene ``y ~ condition + (1 | donor)`` by REML; t test of the condition effect."""
    from scipy import stats as st

    MixedLM = _import_mixedlm()
    n = len(donors)
    exog = np.column_stack([np.ones(n), is_target.astype(np.float64)])  # (cells, 2)
    df = _containment_df(n, donors, is_target)
    out = np.full((len(genes), 3), np.nan)  # coef, se, t
    for j in range(len(genes)):
        y = Y[:, [j]].toarray().ravel() if sp.issparse(Y) else Y[:, j]
        coef, se = _fit_mixedlm(MixedLM, np.asarray(y, dtype=np.float64), exog, donors)
        if not np.isfinite(coef):
            logger.info("mixed model did not converge for %s", genes[j])
        if np.isfinite(se) and se > 0:
            out[j] = coef, se, coef / se
        elif np.isfinite(coef):
            out[j, 0] = coef
        bar.update(1)
    p = 2.0 * st.t.sf(np.abs(out[:, 2]), df)
    return pd.DataFrame(
        {
            "gene": genes,
            "log2fc": out[:, 0] / np.log(2.0),
            "lfc_se": out[:, 1] / np.log(2.0),
            "stat": out[:, 2],
            "pvalue": p,
            "mean_reference": np.asarray(Y[~is_target].mean(axis=0)).ravel(),
            "mean_target": np.asarray(Y[is_target].mean(axis=0)).ravel(),
        }
    )


def _fit_mixedlm(MixedLM, y: np.ndarray, exog: np.ndarray, groups: np.ndarray):
    """(condition coefficient, its standard error) by REML; NaN when no fit converges.

    Powell first: with a donor variance on the boundary (zero), statsmodels' default
    gradient methods can stop far from the optimum (and L-BFGS can return a wrong fixed
    effect); Nelder-Mead and BFGS are the fall-backs. The standard error is that of the
    generalised least-squares estimate given the fitted variances, ``(X' V^-1 X)^-1``
    (as lme4 reports it): statsmodels' Hessian-based one is singular or far too small
    when the donor variance is on the boundary, which made genes seen in two cells
    look highly significant.
    """
    for method in ("powell", "nm", "bfgs"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = MixedLM(y, exog, groups=groups).fit(reml=True, method=method)
        except (np.linalg.LinAlgError, ValueError):
            continue
        coef = float(np.asarray(fit.fe_params)[1])
        se = gls_se(exog, groups, float(np.ravel(fit.cov_re)[0]), float(fit.scale))
        if fit.converged and np.isfinite(coef) and np.isfinite(se):
            return coef, se
    return np.nan, np.nan


def gls_se(exog: np.ndarray, groups: np.ndarray, donor_var: float, scale: float) -> float:
    """Standard error of the second fixed effect of a random-intercept model.

    With ``V`` block-diagonal over groups, ``V_g = scale I + donor_var J``, the covariance
    of the generalised least-squares estimate is ``(X' V^-1 X)^-1``, and
    ``V_g^-1 = (I - donor_var / (scale + n_g donor_var) J) / scale``.

    Parameters
    ----------
    exog
        Cells x fixed effects design (intercept first).
    groups
        Group (donor) of each cell.
    donor_var
        Variance of the random intercept.
    scale
        Residual variance.
    """
    if not (np.isfinite(donor_var) and np.isfinite(scale)) or scale <= 0:
        return np.nan
    _, codes = np.unique(groups, return_inverse=True)
    sums = np.zeros((codes.max() + 1, exog.shape[1]))
    np.add.at(sums, codes, exog)  # (groups, effects): X_g' 1
    n = np.bincount(codes).astype(np.float64)
    shrink = max(donor_var, 0.0) / (scale + n * max(donor_var, 0.0))
    info = (exog.T @ exog - (sums * shrink[:, None]).T @ sums) / scale  # X' V^-1 X
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.nan
    return float(np.sqrt(cov[1, 1])) if cov[1, 1] > 0 else np.nan


def _log1p_normalize(X) -> sp.csr_matrix:
    """log1p(1e4 x / total) per cell, for non-negative values that are not counts."""
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    factors = np.divide(_TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    X = sp.csr_matrix(sp.diags(factors) @ X)
    np.log1p(X.data, out=X.data)
    return X


# --------------------------------------------------------------------------- dge


def dge(
    adata: ad.AnnData,
    *,
    groupby: str,
    condition: str,
    reference: str,
    donor_key: str,
    target: str | None = None,
    method: Method = "pseudobulk",
    genes: Sequence[str] | Literal["model_top_k"] | None = None,
    model: Any = None,
    k: int | None = None,
    layer: str | None = None,
    allow_non_counts: bool = False,
    normalize: bool = True,
    groups: Sequence[str] | None = None,
    min_cells: int = 3,
    min_donors: int = 2,
    paired: bool | None = None,
    alpha: float = 0.05,
    min_abs_log2fc: float = 0.0,
    n_cpus: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Up- and down-regulated genes of ``target`` vs ``reference`` within each cell type.

    Parameters
    ----------
    adata
        Cells x genes; not modified.
    groupby
        ``obs`` column of the cell types; each is tested on its own.
    condition
        ``obs`` column of the conditions (disease, tissue, treatment...).
    reference
        The reference level of ``condition`` (e.g. ``"normal"``).
    donor_key
        ``obs`` column of the donors (samples): the pseudobulk samples, or the random
        effect of the mixed model.
    target
        The level tested against ``reference``; may be omitted when ``condition`` has
        exactly two levels. Cells of other levels are ignored.
    method
        ``"pseudobulk"`` (sums per donor x cell type x condition, DESeq2 Wald test with
        ``pydeseq2``) or ``"lmm"`` (per-gene linear mixed model with a donor random
        intercept on log1p(1e4-normalised) values, with ``statsmodels``). The mixed
        model fits one model per gene and cell type (10-30 ms each): restrict ``genes``
        (e.g. to a model's top-K) for large data.
    genes
        None for every gene; a list of ``var_names``; or ``"model_top_k"`` for the ``k``
        most important genes of ``model`` (see :func:`model_top_genes`; its attributions
        are computed on ``layer`` when it holds counts, else on ``X``). Genes not
        expressed in a cell type are not tested there. With pseudobulk on a subset of
        genes, DESeq2's size factors come from control genes (the
        :data:`N_CONTROL_GENES` most counted genes), not from the tested genes alone.
    model
        The classifier for ``genes="model_top_k"``.
    k
        Number of model genes (None: all the model's genes).
    layer
        Layer with the values (``"raw"`` for ``adata.raw.X``; default ``X``), e.g. a
        denoised layer.
    allow_non_counts
        Pseudobulk only: accept non-integer values (a denoised layer of expected counts)
        and round the per-cell values to the nearest integer. Otherwise non-integer
        values raise :class:`DGEError`.
    normalize
        Mixed model only: log1p(1e4-normalise) the values first (False: test the values
        as they are, e.g. already log-normalised).
    groups
        Cell types to test (default: all).
    min_cells
        A donor counts in a condition of a cell type only with at least this many cells
        there; its cells are dropped otherwise.
    min_donors
        Donors needed in each condition of a cell type to test it.
    paired
        Pseudobulk: add the donor to the design (``~ donor + condition``). None: when at
        least two donors have cells in both conditions of the cell type.
    alpha
        Adjusted p-value below which a gene is called ``up`` or ``down``.
    min_abs_log2fc
        Absolute log2 fold change a called gene must exceed as well (scaLR's pseudobulk
        cut-off of 1.5-fold is ``log2(1.5)``).
    n_cpus
        Processes for pydeseq2.
    progress
        Show a progress bar.

    Returns
    -------
    One row per cell type and tested gene (columns :data:`COLUMNS`): ``log2fc`` (target
    over reference; for ``lmm`` the condition coefficient on the log1p scale divided by
    ln 2), ``lfc_se``, ``stat`` (Wald or t statistic), ``pvalue`` (NaN where DESeq2 flags
    a count outlier or the model cannot be fitted), ``padj`` (Benjamini-Hochberg over
    the cell type's tested genes), ``direction`` (``"up"``, ``"down"`` or ``"none"``),
    ``mean_reference`` / ``mean_target`` (mean size-factor-normalised pseudobulk counts,
    or mean log1p-normalised expression of the cells), cells and donors per condition,
    ``method`` and ``design``. Sorted by cell type, then p-value.

    Raises
    ------
    DGEError
        Before any model is fitted: a missing ``obs`` column, a missing value in one, an
        unknown level, non-count values for pseudobulk, NaN or negative values, genes not
        found, or no cell type with both conditions and enough donors. Cell types that
        cannot be tested while others can are skipped with a :class:`DGEWarning`.
    """
    from tqdm.auto import tqdm

    # ---- checks, cheapest first: no model is fitted before they all pass
    if not isinstance(adata, ad.AnnData):
        raise DGEError(f"adata must be an AnnData, not {type(adata).__name__}.")
    if method not in METHODS:
        raise DGEError(f"method={method!r}: choose one of {list(METHODS)}.")
    if min_donors < 2:
        raise DGEError(f"min_donors must be at least 2, got {min_donors}.")
    if min_cells < 1:
        raise DGEError(f"min_cells must be at least 1, got {min_cells}.")
    if not 0 < alpha < 1:
        raise DGEError(f"alpha must be in (0, 1), got {alpha}.")
    check_not_empty(adata, "test", DGEError)
    cond_col = _column(adata, condition, "condition")
    group_col = _column(adata, groupby, "groupby")
    donor_col = _column(adata, donor_key, "donor_key")
    _no_missing(cond_col, condition)
    target = _levels(cond_col, reference, target, condition)
    cond_str = cond_col.astype(str).to_numpy()
    cells = np.flatnonzero((cond_str == str(reference)) | (cond_str == target))
    _no_missing(group_col.iloc[cells], groupby, " among the cells of the two conditions")
    _no_missing(donor_col.iloc[cells], donor_key, " among the cells of the two conditions")

    donor_codes, _ = pd.factorize(donor_col.iloc[cells].astype(str))
    is_target = cond_str[cells] == target
    plan, skipped = _plan(
        group_col.iloc[cells].astype(str).to_numpy(),
        np.asarray(donor_codes),
        is_target,
        groups=groups,
        min_cells=min_cells,
        min_donors=min_donors,
        paired=paired if method == "pseudobulk" else None,
    )
    if method == "pseudobulk":
        _import_pydeseq2()
    else:
        _import_mixedlm()
    if not plan:
        reasons = "; ".join(f"{g}: {r}" for g, r in skipped.items())
        raise DGEError(
            f"No cell type of obs[{groupby!r}] can be tested for {target!r} vs "
            f"{reference!r} ({reasons}). Each needs cells of both conditions from at least "
            f"{min_donors} donors each (lower min_cells={min_cells} if donors have few cells)."
        )

    from scdataloader.preprocess import counts_matrix

    try:
        X_all, where = counts_matrix(adata, layer)
    except InputError as e:
        raise DGEError(str(e)) from e
    X = X_all[cells]  # (cells, all genes): a copy, never a view of the user's data
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    integer = _check_values(
        X, where, method, allow_non_counts=allow_non_counts, normalize=normalize
    )
    gene_idx, gene_names = _gene_index(adata, genes, model, k, layer, integer)

    for name, reason in skipped.items():
        warnings.warn(f"cell type {name!r} skipped: {reason}.", DGEWarning, stacklevel=2)

    # ---- values to test
    if method == "pseudobulk":
        values = X if integer else _rounded(X)
    elif not normalize:
        values = X
    elif integer:
        from scdataloader.preprocess import log_normalize

        sub = ad.AnnData(X=X)  # a private AnnData over the selected cells' values
        values = log_normalize(sub)
    else:
        values = _log1p_normalize(X)
    if method == "lmm":
        values = values[:, gene_idx]
    values = sp.csr_matrix(values, dtype=np.float64) if sp.issparse(values) else values

    # ---- one test per cell type
    tables = []
    total = len(gene_names) * len(plan) if method == "lmm" else len(plan)
    with tqdm(total=total, desc=f"dge ({method})", disable=not progress, leave=False) as bar:
        for group in plan:
            rows = values[group.rows]  # (cells of the group, genes)
            if method == "pseudobulk":
                res = _pseudobulk_group(rows, group, gene_idx, adata.var_names, paired, n_cpus)
                bar.update(1)
            else:
                res = _lmm_group(rows, group, gene_names, bar)
            if res is None:
                logger.warning("cell type %r: no expressed gene to test", group.name)
                continue
            res.insert(0, "cell_type", group.name)
            res["padj"] = bh_adjust(res["pvalue"].to_numpy())
            res["n_cells_reference"] = group.n_cells[_REF]
            res["n_cells_target"] = group.n_cells[_TGT]
            res["n_donors_reference"] = group.n_donors[_REF]
            res["n_donors_target"] = group.n_donors[_TGT]
            res["method"] = method
            tables.append(res)
    if not tables:
        raise DGEError("No gene is expressed in the cell types tested; check genes= and layer=.")
    table = pd.concat(tables, ignore_index=True)
    called = (table["padj"] < alpha) & (table["log2fc"].abs() > min_abs_log2fc)
    table["direction"] = np.where(called, np.where(table["log2fc"] > 0, "up", "down"), "none")
    table = table.sort_values(["cell_type", "pvalue"], kind="stable", na_position="last")
    table.attrs.update(
        {"reference": str(reference), "target": target, "condition": condition,
         "groupby": groupby, "method": method, "alpha": alpha, "skipped": skipped}
    )  # fmt: skip
    return table.loc[:, list(COLUMNS)].reset_index(drop=True)


def _rounded(X):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        np.rint(X.data, out=X.data)
        X.eliminate_zeros()
        return X
    return np.rint(np.asarray(X, dtype=np.float64))


def _column_ptp(rows) -> np.ndarray:
    """Max minus min of each column (dense or sparse)."""
    if sp.issparse(rows):
        rows = sp.csc_matrix(rows)
        return rows.max(axis=0).toarray().ravel() - rows.min(axis=0).toarray().ravel()
    return np.ptp(np.asarray(rows), axis=0)


def _pseudobulk_group(
    rows, group: _Group, tested: np.ndarray, names: pd.Index, paired: bool | None, n_cpus: int
) -> pd.DataFrame | None:
    """Sum the cells of each donor x condition, then DESeq2 on those samples.

    ``rows`` holds all genes; the ``tested`` columns with counts in the group are tested.
    When they are not all the genes, DESeq2's size factors come from control genes: the
    :data:`N_CONTROL_GENES` genes with the most counts among those counted in every
    sample, fitted along (for the size factors and the dispersion trend) but not
    reported. None when no tested gene has counts.
    """
    sample = group.donors.astype(np.int64) * 2 + group.is_target.astype(np.int64)
    sums, labels, _ = pseudobulk(rows, sample)  # (samples, all genes)
    tested = tested[sums[:, tested].sum(axis=0) > 0]
    if len(tested) == 0:
        return None
    columns, control = tested, None
    if len(tested) < sums.shape[1]:
        everywhere = np.flatnonzero((sums > 0).all(axis=0))
        best = everywhere[np.argsort(-sums[:, everywhere].sum(axis=0), kind="stable")]
        best = best[:N_CONTROL_GENES]
        if len(best):
            columns = np.concatenate([tested, np.setdiff1d(best, tested)])
            control = np.flatnonzero(np.isin(columns, best))
    donors, target = labels // 2, labels % 2 == 1
    use_donor = group.n_paired >= 2 if paired is None else paired
    res = _deseq2(
        sums[:, columns],
        np.where(target, _TGT, _REF),
        donors if use_donor else None,
        [str(g) for g in names[columns]],
        n_cpus,
        control,
    ).iloc[: len(tested)]
    res["design"] = "~ donor + condition" if use_donor else "~ condition"
    return res.reset_index(drop=True)


def _lmm_group(rows, group: _Group, genes: list[str], bar) -> pd.DataFrame | None:
    """The mixed model on the genes that vary in the group; None when none does."""
    varying = np.flatnonzero(_column_ptp(rows) > 0)
    bar.update(len(genes) - len(varying))
    if len(varying) == 0:
        return None
    Y = rows[:, varying]
    Y = sp.csc_matrix(Y) if sp.issparse(Y) else np.asarray(Y)
    res = _lmm(Y, group.donors, group.is_target, [genes[j] for j in varying], bar)
    res["design"] = "y ~ condition + (1 | donor)"
    return res
