"""Gene-set enrichment of a network's central genes (the scPRINT paper's "enrichment").

Genes are ranked by a centrality of the network and the ranking is tested against gene
sets with GSEA prerank (:func:`prerank`, a thin wrapper over :func:`gseapy.prerank`):

``target_hub``
    row sums of the ``target_by_regulator`` matrix: the summed scores of a gene's
    incoming edges (how strongly it is regulated).
``regulator_hub``
    column sums: the summed scores of a gene's outgoing edges (how strongly it regulates).
``eigenvector``
    eigenvector centrality with :func:`networkx.eigenvector_centrality`'s semantics on
    the weighted directed graph regulator -> target: networkx's "left" (in-edge)
    centrality, so a gene is central when central genes regulate it. In our orientation
    this is the Perron eigenvector of the ``target_by_regulator`` matrix ``M``
    (``x = M x``), computed here by the same shifted power iteration as networkx, on the
    matrix directly (fast on dense 5,000-gene networks).
``eigenvector_out``
    the same on the reversed graph (``x = M.T x``): a gene is central when it regulates
    central genes.

:func:`enrichment` runs the paper's test (TFs and cell-type markers among the central
genes) and :func:`encode_enrichment` tests, for each ENCODE TF, whether its outgoing
edges rank its ChIP-seq targets first. Gene sets are symbols: every test names the
network's genes by :func:`gene_names` (``var["symbol"]`` when present, else the id).

gseapy is an optional dependency (``pip install 'scprint-suite[enrich]'``), imported
only when a test runs.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .network import GeneNetwork

__all__ = [
    "CENTRALITIES",
    "Centrality",
    "EnrichmentResult",
    "centralities",
    "encode_enrichment",
    "encode_summary",
    "enrichment",
    "gene_names",
    "prerank",
    "read_gmt",
]

logger = logging.getLogger(__name__)

Centrality = Literal["target_hub", "regulator_hub", "eigenvector", "eigenvector_out"]
CENTRALITIES: tuple[str, ...] = ("target_hub", "regulator_hub", "eigenvector", "eigenvector_out")
Duplicates = Literal["max", "sum", "first"]
GeneSets = Mapping[str, Sequence[str]] | str | os.PathLike[str]

_SYMBOL = "symbol"
_TFS = "TFs"
_PRERANK_COLUMNS = ["term", "es", "nes", "pval", "fdr", "n_genes", "lead_genes"]
_TABLE_COLUMNS = [
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
_ENCODE_COLUMNS = ["tf", "gene", "n_targets", "es", "nes", "pval", "fdr", "significant"]


def _gseapy():
    try:
        import gseapy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "gene-set enrichment needs gseapy: pip install 'scprint-suite[enrich]' "
            "(or pip install gseapy)"
        ) from err
    return gseapy


# --------------------------------------------------------------------- gene names


def gene_names(net: GeneNetwork) -> pd.Series:
    """The name of each gene for gene-set tests: its symbol when known, else its id.

    Parameters
    ----------
    net
        Any network.

    Returns
    -------
    Names indexed by gene id, in :attr:`GeneNetwork.genes` order: ``var["symbol"]`` where
    it is a non-empty string, the gene id elsewhere (and everywhere without a ``symbol``
    column). Several ids may share a symbol.
    """
    ids = pd.Series(net.genes.to_numpy(dtype=object), index=net.genes.copy(), name="name")
    if _SYMBOL not in net.var.columns:
        return ids
    sym = net.var[_SYMBOL].astype(object)
    ok = sym.notna() & (sym.astype(str).str.strip() != "")
    out = ids.copy()
    out[ok.to_numpy()] = sym[ok].astype(str).str.strip().to_numpy()
    return out


# --------------------------------------------------------------------- centralities


def _off_diagonal(m: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
    """A copy of ``m`` without its diagonal (self edges)."""
    if sp.issparse(m):
        m = sp.csr_matrix(m, copy=True)
        m.setdiag(0)
        m.eliminate_zeros()
        return m
    m = np.array(m, dtype=np.float64, copy=True)
    np.fill_diagonal(m, 0)
    return m


def _eigenvector(m: np.ndarray | sp.csr_matrix, max_iter: int, tol: float) -> np.ndarray:
    """networkx's eigenvector-centrality power iteration, ``x <- (M + I) x`` with the
    Euclidean norm, from the uniform start, on a non-negative matrix ``M`` whose entry
    ``[i, j]`` weighs the edge ``j -> i`` (so ``x_i`` sums over ``i``'s in-edges)."""
    n = m.shape[0]
    if n == 0:
        return np.zeros(0)
    x = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        last = x
        x = last + m @ last
        norm = float(np.linalg.norm(x)) or 1.0
        x = x / norm
        if float(np.abs(x - last).sum()) < n * tol:
            return np.asarray(x, dtype=np.float64)
    warnings.warn(
        f"eigenvector centrality did not converge in {max_iter} iterations "
        f"(tolerance {tol}); returning the last iterate",
        RuntimeWarning,
        stacklevel=3,
    )
    return np.asarray(x, dtype=np.float64)


def centralities(
    net: GeneNetwork,
    *,
    kinds: Sequence[Centrality] = ("target_hub", "regulator_hub", "eigenvector"),
    self_edges: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> pd.DataFrame:
    """Centralities of every gene of a network.

    Parameters
    ----------
    net
        The network (any orientation; read as ``target_by_regulator``).
    kinds
        Which centralities (columns), among :data:`CENTRALITIES`:

        - ``"target_hub"``: sum of a gene's incoming scores (row sums of ``M``, the
          ``target_by_regulator`` matrix);
        - ``"regulator_hub"``: sum of its outgoing scores (column sums);
        - ``"eigenvector"``: :func:`networkx.eigenvector_centrality` of
          ``net.to_networkx()`` (in-edges: ``x = M x``, central when regulated by
          central genes);
        - ``"eigenvector_out"``: the same on the reversed graph (``x = M.T x``, central
          when regulating central genes).

        Sums use the scores as they are (negative scores lower them). The eigenvector
        needs non-negative weights: negative scores count as 0 there.
    self_edges
        Count the diagonal (gene -> itself). Off by default, as in
        :meth:`GeneNetwork.edges` and :meth:`GeneNetwork.to_networkx`.
    max_iter, tol
        Power iteration limits of the eigenvector centralities (networkx's convergence
        test: L1 change below ``n_genes * tol``); a ``RuntimeWarning`` when it does not
        converge.

    Returns
    -------
    One float column per kind, indexed by gene id (``net.genes`` order).
    """
    kinds = list(kinds)
    bad = [k for k in kinds if k not in CENTRALITIES]
    if bad:
        raise ValueError(f"unknown centralities {bad}; choose among {CENTRALITIES}")
    m = net.as_target_by_regulator().matrix
    if not self_edges:
        m = _off_diagonal(m)
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "target_hub":
            out[kind] = np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
        elif kind == "regulator_hub":
            out[kind] = np.asarray(m.sum(axis=0), dtype=np.float64).ravel()
        else:
            if sp.issparse(m):
                w = sp.csr_matrix(m, dtype=np.float64, copy=True)
                w.data = np.maximum(w.data, 0)
            else:
                w = np.maximum(np.asarray(m, dtype=np.float64), 0)
            if kind == "eigenvector_out":
                w = w.T.tocsr() if sp.issparse(w) else np.ascontiguousarray(w.T)
            out[kind] = _eigenvector(w, max_iter=max_iter, tol=tol)
    return pd.DataFrame(out, index=net.genes.copy(), columns=kinds)


# ------------------------------------------------------------------------ gene sets


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read gene sets from a ``.gmt`` file.

    Each line is ``name <tab> description <tab> gene <tab> gene ...``. Lines without a
    name or without genes are skipped; empty fields and surrounding spaces are ignored;
    genes repeated within a set are kept once (first position). A name on several lines
    (e.g. one cell type under several tissues) gets the union of their genes.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    Genes by set name, in file order.
    """
    sets: dict[str, dict[str, None]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if len(fields) < 3 or not fields[0]:
                continue
            genes = [g for g in fields[2:] if g]
            if not genes:
                continue
            sets.setdefault(fields[0], {}).update(dict.fromkeys(genes))
    return {name: list(genes) for name, genes in sets.items()}


def _as_gene_sets(gene_sets: GeneSets) -> dict[str, list[str]]:
    if isinstance(gene_sets, (str, os.PathLike)):
        return read_gmt(gene_sets)
    if not isinstance(gene_sets, Mapping):
        raise TypeError(
            f"gene_sets must be a mapping name -> genes or a .gmt path, not "
            f"{type(gene_sets).__name__}"
        )
    out = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, str):
            raise TypeError(f"gene set {name!r} is a string; give a list of genes")
        out[str(name)] = list(dict.fromkeys(str(g) for g in genes))
    return out


# --------------------------------------------------------------------------- prerank


def _clean_ranking(ranking: pd.Series, duplicates: Duplicates) -> pd.Series:
    """Finite values, one per name, sorted descending (ties by name)."""
    r = pd.Series(pd.to_numeric(ranking, errors="coerce").to_numpy(dtype=np.float64))
    r.index = pd.Index(ranking.index.astype(str))
    bad = ~np.isfinite(r.to_numpy())
    if bad.any():
        logger.info("prerank: dropping %d NaN or infinite values", int(bad.sum()))
        r = r[~bad]
    if not r.index.is_unique:
        n_dup = int(r.index.duplicated().sum())
        logger.info("prerank: %d repeated gene names merged by %s", n_dup, duplicates)
        if duplicates == "max":
            r = r.groupby(level=0, sort=False).max()
        elif duplicates == "sum":
            r = r.groupby(level=0, sort=False).sum()
        elif duplicates == "first":
            r = r[~r.index.duplicated()]
        else:
            raise ValueError(f"duplicates must be 'max', 'sum' or 'first', not {duplicates!r}")
    frame = pd.DataFrame({"name": r.index.to_numpy(), "value": r.to_numpy()})
    frame = frame.sort_values(["value", "name"], ascending=[False, True], kind="mergesort")
    return pd.Series(frame["value"].to_numpy(), index=pd.Index(frame["name"]), name="prerank")


def _empty_prerank() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "term": pd.Series(dtype=object),
            "es": pd.Series(dtype=float),
            "nes": pd.Series(dtype=float),
            "pval": pd.Series(dtype=float),
            "fdr": pd.Series(dtype=float),
            "n_genes": pd.Series(dtype=np.int64),
            "lead_genes": pd.Series(dtype=object),
        }
    )


def prerank(
    ranking: pd.Series,
    gene_sets: GeneSets,
    *,
    permutations: int = 1000,
    min_size: int = 5,
    max_size: int = 1000,
    seed: int = 0,
    threads: int = 1,
    duplicates: Duplicates = "max",
) -> pd.DataFrame:
    """GSEA prerank of a gene ranking against gene sets (:func:`gseapy.prerank`, offline,
    nothing written, no plots).

    Parameters
    ----------
    ranking
        A value per gene name (higher ranks first). NaN and infinite values are dropped.
        The ranked genes are the background.
    gene_sets
        Gene sets by name, or a ``.gmt`` path (:func:`read_gmt`).
    permutations
        Gene-set permutations of the null distribution (p-values resolve down to about
        ``1 / permutations``).
    min_size, max_size
        Gene sets with fewer or more genes in the ranking are left out (as are sets
        covering the whole ranking).
    seed
        Random seed of the permutations.
    threads
        gseapy's threads.
    duplicates
        How repeated gene names (e.g. two ids with one symbol) merge: ``"max"`` (the
        default: the best-ranked copy represents the gene), ``"sum"`` or ``"first"``.

    Returns
    -------
    One row per tested set: ``term``, ``es``, ``nes``, ``pval`` (nominal), ``fdr``
    (gseapy's q-value over the tested sets), ``n_genes`` (set genes in the ranking) and
    ``lead_genes`` (the leading edge, a list); sorted by ``nes`` descending. Empty when
    no set passes the size filters.

    Notes
    -----
    Gene names match exactly (case-sensitive). Ties are ordered by gene name, so results
    do not depend on the input order.
    """
    if not isinstance(ranking, pd.Series):
        raise TypeError(f"ranking must be a pandas Series, not {type(ranking).__name__}")
    if min_size < 1 or max_size < min_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    ranked = _clean_ranking(ranking, duplicates)
    sets = _as_gene_sets(gene_sets)
    present = set(ranked.index)
    kept: dict[str, list[str]] = {}
    for name, genes in sets.items():
        hits = [g for g in genes if g in present]
        if min_size <= len(hits) <= max_size and len(hits) < len(ranked):
            kept[name] = hits
    logger.info(
        "prerank: %d of %d gene sets with %d-%d genes among %d ranked genes",
        len(kept),
        len(sets),
        min_size,
        max_size,
        len(ranked),
    )
    if not kept or len(ranked) < 2:
        return _empty_prerank()
    if ranked.iloc[0] == ranked.iloc[-1]:
        # an all-tied ranking orders no gene above another: nothing is enriched (and
        # gseapy's sort cannot rank it)
        logger.info("prerank: every value is %g; no set can be enriched", ranked.iloc[0])
        out = pd.DataFrame({"term": list(kept), "es": 0.0, "nes": 0.0, "pval": 1.0, "fdr": 1.0})
        out["n_genes"] = [len(kept[t]) for t in kept]
        out["n_genes"] = out["n_genes"].astype(np.int64)
        out["lead_genes"] = [[] for _ in kept]
        return out.sort_values("term", kind="mergesort").reset_index(drop=True)[_PRERANK_COLUMNS]
    # gseapy sees neutral tokens, not names: no upper-casing or renaming on its side
    token = pd.Series([f"G{i}" for i in range(len(ranked))], index=ranked.index)
    name_of = dict(zip(token.to_numpy(), ranked.index, strict=True))
    res = _run_gseapy(
        pd.Series(ranked.to_numpy(), index=pd.Index(token.to_numpy()), name="prerank"),
        {name: list(token[hits]) for name, hits in kept.items()},
        permutations=int(permutations),
        min_size=min_size,
        max_size=max_size,
        seed=int(seed),
        threads=int(threads),
    )
    out = pd.DataFrame(
        {
            "term": res["Term"].astype(str).to_numpy(),
            "es": pd.to_numeric(res["ES"], errors="coerce").to_numpy(dtype=float),
            "nes": pd.to_numeric(res["NES"], errors="coerce").to_numpy(dtype=float),
            "pval": _column(res, "NOM p-val", len(res)),
            "fdr": _column(res, "FDR q-val", len(res)),
        }
    )
    out["n_genes"] = out["term"].map(lambda t: len(kept[t])).astype(np.int64)
    if "Lead_genes" in res.columns:
        lead = [[name_of[g] for g in str(s).split(";") if g] for s in res["Lead_genes"].fillna("")]
    else:
        lead = [[] for _ in range(len(res))]
    out["lead_genes"] = lead
    out = out.sort_values(["nes", "term"], ascending=[False, True], kind="mergesort")
    return out.reset_index(drop=True)[_PRERANK_COLUMNS]


def _run_gseapy(ranked: pd.Series, sets: dict[str, list[str]], **kw) -> pd.DataFrame:
    """gseapy's prerank table (``res2d``) for a sorted ranking, with gseapy's own console
    logger quietened: the warning it gives on tied values does not apply (ties are
    ordered by name) and goes to this module's debug log instead."""
    gp = _gseapy()
    pre = gp.Prerank(
        rnk=ranked,
        gene_sets=sets,
        outdir=None,
        no_plot=True,
        permutation_num=kw["permutations"],
        min_size=kw["min_size"],
        max_size=kw["max_size"],
        seed=kw["seed"],
        threads=kw["threads"],
        ascending=None,  # already sorted, ties by name
        verbose=False,
    )
    glog = getattr(pre, "_logger", None)
    if isinstance(glog, logging.Logger):
        glog.setLevel(logging.ERROR)
    try:
        pre.run()
    finally:
        if isinstance(glog, logging.Logger):  # gseapy makes one logger per run
            for handler in list(glog.handlers):
                glog.removeHandler(handler)
                handler.close()
    n_ties = int(ranked.duplicated().sum())
    if n_ties:
        logger.debug("prerank: %d tied values, ordered by gene name", n_ties)
    return pre.res2d


def _column(res: pd.DataFrame, name: str, n: int) -> np.ndarray:
    if name not in res.columns:  # gseapy drops p-values when permutations == 0
        return np.full(n, np.nan)
    return pd.to_numeric(res[name], errors="coerce").to_numpy(dtype=float)


def _bh(pvals: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN stay NaN)."""
    p = np.asarray(pvals, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    m = order.size
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out


# ------------------------------------------------------------------------ enrichment


@dataclass
class EnrichmentResult:
    """What :func:`enrichment` found.

    Attributes
    ----------
    table
        One row per (centrality, gene set): ``kind``, ``collection`` (``"tfs"`` or
        ``"markers"``), ``gene_set`` (``"TFs"`` or a cell type), ``es``, ``nes``,
        ``pval``, ``fdr``, ``n_genes``, ``significant`` (``fdr < threshold`` and
        ``nes > 0``: the set is among the central genes) and ``lead_genes``.
    centralities
        The centralities the genes were ranked by (:func:`centralities`).
    fdr
        The threshold of ``significant``.
    """

    table: pd.DataFrame
    centralities: pd.DataFrame = field(default_factory=pd.DataFrame)
    fdr: float = 0.05

    def tf_enriched(self, kind: str = "regulator_hub") -> bool:
        """Whether the genes ranked by centrality ``kind`` are significantly enriched for
        TFs (False when the TF set was not tested)."""
        rows = self.table[(self.table["kind"] == kind) & (self.table["collection"] == "tfs")]
        return bool(rows["significant"].any())

    def top_cell_types(self, kind: str = "regulator_hub", n: int = 10) -> pd.DataFrame:
        """The ``n`` marker sets with the highest NES for centrality ``kind`` (the paper
        looks for the network's cell type among the top 10), columns ``gene_set``,
        ``nes``, ``fdr``, ``significant``."""
        rows = self.table[(self.table["kind"] == kind) & (self.table["collection"] == "markers")]
        rows = rows.sort_values(["nes", "gene_set"], ascending=[False, True], kind="mergesort")
        return rows[["gene_set", "nes", "fdr", "significant"]].head(n).reset_index(drop=True)


def _default_tfs(organism: str) -> list[str]:
    from scdataloader import datasets

    return datasets.tfs(organism)


def _default_markers() -> Path:
    from scdataloader import datasets

    return datasets.fetch("celltype_markers")


def enrichment(
    net: GeneNetwork,
    *,
    tfs: Sequence[str] | None = None,
    markers: GeneSets | None = None,
    organism: Literal["human", "mouse"] = "human",
    kinds: Sequence[Centrality] = ("target_hub", "regulator_hub", "eigenvector"),
    permutations: int = 1000,
    fdr: float = 0.05,
    min_size: int = 5,
    max_size: int = 1000,
    seed: int = 0,
) -> EnrichmentResult:
    """The paper's enrichment test: are a network's central genes TFs and markers of a
    cell type?

    For each centrality, every gene of the network is ranked by it (named by
    :func:`gene_names`) and the ranking is tested with :func:`prerank` against the TF set
    and, separately, the cell-type marker sets; the background is the network's genes.

    Parameters
    ----------
    net
        The network.
    tfs
        TF symbols; default :func:`scdataloader.datasets.tfs` of ``organism``. An empty
        list skips the TF test.
    markers
        Marker gene sets by cell type, or a ``.gmt`` path; default the registry's
        ``celltype_markers`` (PanglaoDB, human symbols). An empty mapping skips the test.
    organism
        Organism of the default TFs.
    kinds
        Centralities to rank by (:func:`centralities`).
    permutations, min_size, max_size, seed
        As in :func:`prerank`.
    fdr
        FDR threshold of ``significant``.

    Returns
    -------
    The table, the centralities and the threshold; see :class:`EnrichmentResult`.
    """
    tf_list = _default_tfs(organism) if tfs is None else list(tfs)
    marker_sets = _as_gene_sets(_default_markers() if markers is None else markers)
    cent = centralities(net, kinds=kinds)
    names = gene_names(net).to_numpy()
    tests = []
    if tf_list:
        tests.append(("tfs", {_TFS: tf_list}))
    if marker_sets:
        tests.append(("markers", marker_sets))
    frames = []
    for kind in cent.columns:
        ranking = pd.Series(cent[kind].to_numpy(), index=names)
        for collection, sets in tests:
            res = prerank(
                ranking,
                sets,
                permutations=permutations,
                min_size=min_size,
                max_size=max_size,
                seed=seed,
            )
            if res.empty:
                logger.warning("enrichment: no %s set large enough for %s", collection, kind)
                continue
            res = res.rename(columns={"term": "gene_set"})
            res.insert(0, "collection", collection)
            res.insert(0, "kind", kind)
            frames.append(res)
    if frames:
        table = pd.concat(frames, ignore_index=True)
    else:
        table = pd.DataFrame(columns=[c for c in _TABLE_COLUMNS if c != "significant"])
    table["significant"] = (table["fdr"].astype(float) < fdr) & (table["nes"].astype(float) > 0)
    return EnrichmentResult(table=table[_TABLE_COLUMNS], centralities=cent, fdr=fdr)


# ---------------------------------------------------------------------------- ENCODE


def encode_enrichment(
    net: GeneNetwork,
    targets: Mapping[str, Sequence[str]] | None = None,
    *,
    min_targets: int = 10,
    permutations: int = 1000,
    fdr: float = 0.05,
    seed: int = 0,
    max_tfs: int | None = None,
) -> pd.DataFrame:
    """Are each TF's strongest outgoing edges its ENCODE ChIP-seq targets?

    For each TF of ``targets`` in the network with at least ``min_targets`` of its
    targets there, the genes are ranked by the TF's outgoing scores (its column of the
    ``target_by_regulator`` matrix: the score of TF -> gene; the TF itself left out) and
    the ranking is tested against the TF's targets with :func:`prerank`. Names are
    matched case-insensitively (ENCODE writes ``C20ORF24``).

    Parameters
    ----------
    net
        The network.
    targets
        Target symbols by TF, used as given (no key splitting; names compared without
        case); default :func:`bengrn.truths.encode_targets` (ENCODE, merged over cell
        lines).
    min_targets
        Fewest targets in the network for a TF to be tested.
    permutations, seed
        As in :func:`prerank`.
    fdr
        Threshold of ``significant`` on the Benjamini-Hochberg FDR over the tested TFs.
    max_tfs
        Test at most this many TFs (the first by name), for speed.

    Returns
    -------
    One row per tested TF, sorted by ``nes`` descending: ``tf`` (upper case), ``gene``
    (its network id), ``n_targets`` (its targets in the network), ``es``, ``nes``,
    ``pval`` (nominal), ``fdr`` (BH over the TFs) and ``significant`` (``fdr`` below the
    threshold and ``nes > 0``). A TF whose outgoing scores are all equal (no edge out of
    it, e.g. a TF not expressed in the cells) is tested and not enriched (see
    :func:`prerank`). ``df.attrs["share_significant"]`` holds the share of
    tested TFs significantly enriched (NaN when none was tested); see
    :func:`encode_summary`.
    """
    if targets is None:
        from .truths import encode_targets

        targets = encode_targets()
    sets: dict[str, set[str]] = {}
    for tf, genes in targets.items():
        sets.setdefault(str(tf).strip().upper(), set()).update(
            str(g).strip().upper() for g in genes
        )
    tbr = net.as_target_by_regulator()
    names = pd.Index(gene_names(tbr).str.upper())
    first = pd.Series(np.arange(len(names)), index=names)
    first = first[~first.index.duplicated()]
    present = set(names)
    todo = []
    for tf in sorted(sets):
        if tf not in first.index:
            continue
        n_targets = len((sets[tf] - {tf}) & present)
        if n_targets >= min_targets:
            todo.append((tf, int(first[tf])))
    if max_tfs is not None:
        todo = todo[: int(max_tfs)]
    logger.info(
        "encode_enrichment: %d of %d TFs in the network with >= %d targets",
        len(todo),
        len(sets),
        min_targets,
    )
    m = tbr.matrix
    rows = []
    for tf, j in _progress(todo, desc="ENCODE TFs"):
        col = m[:, [j]].toarray().ravel() if sp.issparse(m) else np.asarray(m[:, j])
        keep = np.arange(len(names)) != j
        ranking = pd.Series(col[keep].astype(np.float64), index=names[keep])
        res = prerank(
            ranking,
            {tf: sorted(sets[tf] - {tf})},
            permutations=permutations,
            min_size=min_targets,
            max_size=len(names),
            seed=seed,
        )
        if res.empty:  # only when the ranking is all targets
            continue
        r = res.iloc[0]
        rows.append(
            {
                "tf": tf,
                "gene": tbr.genes[j],
                "n_targets": int(r["n_genes"]),
                "es": float(r["es"]),
                "nes": float(r["nes"]),
                "pval": float(r["pval"]),
            }
        )
    df = pd.DataFrame(rows, columns=["tf", "gene", "n_targets", "es", "nes", "pval"])
    df["n_targets"] = df["n_targets"].astype(np.int64)
    df["fdr"] = _bh(df["pval"].to_numpy(dtype=float))
    df["significant"] = (df["fdr"] < fdr) & (df["nes"] > 0)
    df = df.sort_values(["nes", "tf"], ascending=[False, True], kind="mergesort")
    df = df.reset_index(drop=True)[_ENCODE_COLUMNS]
    df.attrs["share_significant"] = float(df["significant"].mean()) if len(df) else float("nan")
    df.attrs["fdr"] = fdr
    return df


def encode_summary(df: pd.DataFrame) -> dict[str, float]:
    """Summary of :func:`encode_enrichment`'s table.

    Returns
    -------
    ``n_tfs`` (tested), ``n_significant``, ``share_significant`` (NaN when no TF was
    tested) and ``mean_nes``.
    """
    n = len(df)
    n_sig = int(df["significant"].sum()) if n else 0
    return {
        "n_tfs": n,
        "n_significant": n_sig,
        "share_significant": n_sig / n if n else float("nan"),
        "mean_nes": float(df["nes"].mean()) if n else float("nan"),
    }


def _progress(items: list, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return items
    return tqdm(items, desc=desc, disable=None, leave=False)
