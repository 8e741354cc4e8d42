"""Exploring one network, or two: hubs, communities, differential hubs, neighbourhoods.

Every function takes a :class:`~bengrn.network.GeneNetwork` (any orientation; edges are
regulator -> target) and names genes by id, with their symbol alongside when
``var["symbol"]`` exists. Functions that count edges keep the strongest ones: by
default the ``10 * n_genes`` best-scoring edges (an average of 10 targets per gene; all
edges when the network has fewer), self edges left out.

Typical use::

    from bengrn import analysis

    analysis.hubs(net, by="regulator", top=20)
    analysis.communities(net)                    # gene -> community (0 = largest)
    analysis.differential_hubs(bph, normal, by="regulator")
    analysis.plot_subgraph(net, "PAGE4", k=10, path="page4.png")
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .enrichment import centralities, gene_names
from .network import GeneNetwork

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "EDGES_PER_GENE",
    "HubScore",
    "communities",
    "differential_hubs",
    "hubs",
    "plot_subgraph",
    "resolve_gene",
    "top_edges_per_gene",
]

logger = logging.getLogger(__name__)

HubScore = Literal["degree", "out_degree", "in_degree", "regulator", "target", "eigenvector"]
_HUB_SCORES: tuple[str, ...] = (
    "degree",
    "out_degree",
    "in_degree",
    "regulator",
    "target",
    "eigenvector",
)
_WEIGHTED = {"regulator": "regulator_hub", "target": "target_hub", "eigenvector": "eigenvector"}
#: Default number of strongest edges kept, per gene of the network.
EDGES_PER_GENE = 10
_SYMBOL = "symbol"


def _strongest(net: GeneNetwork, top_k_edges: int | None, threshold: float | None) -> pd.DataFrame:
    """The strongest edges (default ``EDGES_PER_GENE * n_genes``), no self edges."""
    if top_k_edges is None and threshold is None:
        top_k_edges = EDGES_PER_GENE * net.n_genes
    return net.edges(top_k=top_k_edges, threshold=threshold)


def _with_symbols(net: GeneNetwork, genes: pd.Index | np.ndarray) -> dict[str, Any]:
    cols: dict[str, Any] = {"gene": np.asarray(genes, dtype=object)}
    if _SYMBOL in net.var.columns:
        cols["symbol"] = net.var[_SYMBOL].reindex(pd.Index(genes)).to_numpy()
    return cols


def _hub_scores(
    net: GeneNetwork, by: str, top_k_edges: int | None, threshold: float | None
) -> pd.Series:
    """A hub score per gene id (``net.genes`` order)."""
    if by not in _HUB_SCORES:
        raise ValueError(f"by must be one of {_HUB_SCORES}, not {by!r}")
    if by in _WEIGHTED:
        base = net
        if top_k_edges is not None or threshold is not None:
            base = GeneNetwork.from_edges(
                net.edges(top_k=top_k_edges, threshold=threshold), genes=net.genes
            )
        kind = _WEIGHTED[by]
        return centralities(base, kinds=(kind,))[kind]
    edges = _strongest(net, top_k_edges, threshold)
    out = edges["regulator"].value_counts()
    inc = edges["target"].value_counts()
    counts = {"out_degree": out, "in_degree": inc, "degree": out.add(inc, fill_value=0)}[by]
    return counts.reindex(net.genes, fill_value=0).astype(np.float64)


def _ranked(scores: pd.Series) -> np.ndarray:
    """Rank 1 = highest score; ties share the best rank."""
    return scores.rank(ascending=False, method="min").to_numpy(dtype=np.int64)


def hubs(
    net: GeneNetwork,
    *,
    by: HubScore = "degree",
    top: int | None = 20,
    top_k_edges: int | None = None,
    threshold: float | None = None,
) -> pd.DataFrame:
    """The network's hub genes.

    Parameters
    ----------
    net
        The network.
    by
        The hub score:

        - ``"degree"``, ``"out_degree"``, ``"in_degree"``: number of edges (in + out,
          outgoing, incoming) among the strongest edges (``top_k_edges``/``threshold``;
          by default the ``10 * n_genes`` best, self edges excluded);
        - ``"regulator"``, ``"target"``: summed scores of the outgoing / incoming edges;
        - ``"eigenvector"``: in-edge eigenvector centrality (networkx's semantics, see
          :func:`bengrn.enrichment.centralities`).

        The weighted scores use every edge unless ``top_k_edges`` or ``threshold`` is
        given.
    top
        Return the ``top`` best genes (all when None).
    top_k_edges, threshold
        Which edges count, as in :meth:`GeneNetwork.edges`.

    Returns
    -------
    Columns ``gene`` (id), ``symbol`` (when ``var`` has one), ``score`` and ``rank``
    (1 = best; ties share the best rank), sorted by score (ties by gene order).
    """
    scores = _hub_scores(net, by, top_k_edges, threshold)
    table = pd.DataFrame(_with_symbols(net, net.genes))
    table["score"] = scores.to_numpy()
    table["rank"] = _ranked(scores)
    table = table.sort_values("score", ascending=False, kind="mergesort")
    if top is not None:
        table = table.head(int(top))
    return table.reset_index(drop=True)


def communities(
    net: GeneNetwork,
    *,
    top_k_edges: int | None = None,
    threshold: float | None = None,
    resolution: float = 1.0,
    seed: int = 0,
) -> pd.Series:
    """Gene communities by Louvain modularity on the strongest edges.

    The strongest edges (default the ``10 * n_genes`` best) with a positive score make
    an undirected weighted graph (``a -> b`` and ``b -> a`` add up) over every gene, on
    which :func:`networkx.community.louvain_communities` runs.

    Parameters
    ----------
    net
        The network.
    top_k_edges, threshold
        Which edges count, as in :meth:`GeneNetwork.edges`.
    resolution
        Louvain resolution (above 1 favours smaller communities).
    seed
        Random seed of Louvain.

    Returns
    -------
    Community number by gene id (``net.genes`` order), named ``community``; 0 is the
    largest community, ties by their first gene. Genes without a kept edge are
    communities of their own.
    """
    import networkx as nx

    edges = _strongest(net, top_k_edges, threshold)
    edges = edges[edges["score"] > 0]
    a = edges["regulator"].to_numpy()
    b = edges["target"].to_numpy()
    lo = np.where(a < b, a, b)
    hi = np.where(a < b, b, a)
    pairs = (
        pd.DataFrame({"u": lo, "v": hi, "w": edges["score"].to_numpy(dtype=np.float64)})
        .groupby(["u", "v"], sort=True)["w"]
        .sum()
    )
    graph = nx.Graph()
    graph.add_nodes_from(net.genes)
    graph.add_weighted_edges_from((u, v, w) for (u, v), w in pairs.items())
    found = nx.community.louvain_communities(
        graph, weight="weight", resolution=resolution, seed=seed
    )
    position = {g: i for i, g in enumerate(net.genes)}
    found = sorted(found, key=lambda c: (-len(c), min(position[g] for g in c)))
    label = {g: i for i, c in enumerate(found) for g in c}
    logger.info(
        "communities: %d communities (%d with more than one gene) from %d edges",
        len(found),
        sum(len(c) > 1 for c in found),
        len(pairs),
    )
    return pd.Series(
        [label[g] for g in net.genes], index=net.genes.copy(), name="community", dtype=np.int64
    )


def _normalised(scores: pd.Series, how: str) -> pd.Series:
    if how == "rank":  # percentile rank in (0, 1]: 1 = the best hub
        return scores.rank(method="average", pct=True)
    if how == "zscore":
        sd = scores.std(ddof=0)
        return (scores - scores.mean()) / (sd if sd > 0 else 1.0)
    return scores


def differential_hubs(
    a: GeneNetwork,
    b: GeneNetwork,
    *,
    by: HubScore = "regulator",
    top: int = 20,
    normalize: bool | Literal["rank", "zscore", "none"] = True,
    top_k_edges: int | None = None,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Genes whose hub score differs most between two networks (e.g. disease vs normal).

    Hub scores (:func:`hubs`) are computed on each whole network, restricted to the
    genes the two share (by id) and normalised there, so that networks of different
    scales compare.

    Parameters
    ----------
    a, b
        The networks.
    by
        The hub score, as in :func:`hubs`.
    top
        How many genes each way.
    normalize
        ``"rank"`` (or True, the default): percentile ranks among the shared genes;
        ``"zscore"``: centred and scaled; ``"none"`` (or False): raw scores.
    top_k_edges, threshold
        Which edges count, as in :func:`hubs`.

    Returns
    -------
    Columns ``gene``, ``symbol`` (when ``a`` or ``b`` has one), ``score_a``, ``score_b``
    (normalised), ``diff`` (``score_a - score_b``), ``rank_a``, ``rank_b`` (hub rank
    among the shared genes, 1 = best) and ``higher_in`` (``"a"`` or ``"b"``): first the
    ``top`` genes with the largest positive ``diff``, then the ``top`` with the most
    negative.

    Raises
    ------
    ValueError
        When the networks share no gene id.
    """
    how = {True: "rank", False: "none"}.get(normalize, normalize)  # type: ignore[arg-type]
    if how not in ("rank", "zscore", "none"):
        raise ValueError(f"normalize must be 'rank', 'zscore' or 'none', not {normalize!r}")
    shared = a.genes.intersection(b.genes, sort=False)
    if len(shared) == 0:
        raise ValueError(
            "the two networks share no gene id (first ids: "
            f"{list(a.genes[:3])} vs {list(b.genes[:3])}); index them the same way "
            "(e.g. both by Ensembl id)"
        )
    raw_a = _hub_scores(a, by, top_k_edges, threshold).reindex(shared)
    raw_b = _hub_scores(b, by, top_k_edges, threshold).reindex(shared)
    table = pd.DataFrame({"gene": shared.to_numpy(dtype=object)})
    for net in (a, b):
        if _SYMBOL in net.var.columns:
            table["symbol"] = net.var[_SYMBOL].reindex(shared).to_numpy()
            break
    table["score_a"] = _normalised(raw_a, how).to_numpy()
    table["score_b"] = _normalised(raw_b, how).to_numpy()
    table["diff"] = table["score_a"] - table["score_b"]
    table["rank_a"] = _ranked(raw_a)
    table["rank_b"] = _ranked(raw_b)
    up = table[table["diff"] > 0].sort_values("diff", ascending=False, kind="mergesort")
    down = table[table["diff"] < 0].sort_values("diff", ascending=True, kind="mergesort")
    up, down = up.head(top).assign(higher_in="a"), down.head(top).assign(higher_in="b")
    return pd.concat([up, down], ignore_index=True)


def resolve_gene(net: GeneNetwork, gene: str) -> str:
    """The id of a gene given by id or symbol (exact, else case-insensitive).

    Raises
    ------
    KeyError
        When no gene, or several genes, match.
    """
    gene = str(gene)
    if gene in net.genes:
        return gene
    if _SYMBOL in net.var.columns:
        sym = net.var[_SYMBOL].astype(str)
        for hits in (sym.index[sym == gene], sym.index[sym.str.upper() == gene.upper()]):
            if len(hits) == 1:
                return str(hits[0])
            if len(hits) > 1:
                raise KeyError(f"symbol {gene!r} names several genes: {list(hits)}")
    hits = net.genes[net.genes.str.upper() == gene.upper()]
    if len(hits) == 1:
        return str(hits[0])
    raise KeyError(f"{gene!r} is neither a gene id nor a symbol of the network")


def top_edges_per_gene(
    net: GeneNetwork,
    gene: str,
    *,
    k: int = 10,
    direction: Literal["out", "in", "both"] = "out",
) -> pd.DataFrame:
    """A gene's strongest edges: its targets (``"out"``), its regulators (``"in"``) or
    both.

    Parameters
    ----------
    net
        The network.
    gene
        Gene id or symbol (:func:`resolve_gene`).
    k
        Edges per direction (``"both"`` gives up to ``k`` of each). Zero scores are not
        edges; self edges are left out.
    direction
        ``"out"``: gene -> target; ``"in"``: regulator -> gene; ``"both"``.

    Returns
    -------
    Columns ``regulator``, ``target``, ``score``, ``regulator_symbol``,
    ``target_symbol`` (when ``var`` has symbols) and ``direction``; out edges first,
    each direction by score descending.
    """
    if direction not in ("out", "in", "both"):
        raise ValueError(f"direction must be 'out', 'in' or 'both', not {direction!r}")
    gid = resolve_gene(net, gene)
    tbr = net.as_target_by_regulator()
    j = int(tbr.genes.get_loc(gid))
    m = tbr.matrix
    ids = tbr.genes.to_numpy()
    frames = []
    for d in ("out", "in"):
        if direction not in (d, "both"):
            continue
        vec = m[:, [j]] if d == "out" else m[[j], :]  # column: TF -> genes; row: -> gene
        vec = np.asarray(vec.toarray() if hasattr(vec, "toarray") else vec).ravel()
        vec = vec.astype(np.float64, copy=True)
        vec[j] = 0.0
        cand = np.flatnonzero(vec != 0)
        cand = cand[np.lexsort((cand, -vec[cand]))][: max(int(k), 0)]
        other = ids[cand]
        reg, tgt = (np.full(len(cand), gid, dtype=object), other)
        if d == "in":
            reg, tgt = tgt, reg
        frame = pd.DataFrame({"regulator": reg, "target": tgt, "score": vec[cand]})
        if _SYMBOL in tbr.var.columns:
            sym = tbr.var[_SYMBOL]
            frame["regulator_symbol"] = sym.reindex(frame["regulator"]).to_numpy()
            frame["target_symbol"] = sym.reindex(frame["target"]).to_numpy()
        frame["direction"] = d
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def plot_subgraph(
    net: GeneNetwork,
    gene: str,
    *,
    k: int = 10,
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Draw a gene's neighbourhood: its ``k`` strongest regulators and targets.

    Nodes are the gene (red, in the middle), its regulators (on the left arc) and its
    targets (on the right arc) from :func:`top_edges_per_gene` (``direction="both"``),
    labelled by symbol. Edges are those of the gene plus the
    edges among the neighbours at least as strong as the weakest edge of the gene shown
    (so the drawing stays readable); arrows go regulator -> target and width grows with
    the score.

    Parameters
    ----------
    net
        The network.
    gene
        Gene id or symbol.
    k
        Regulators and targets drawn (up to ``k`` each).
    ax
        Axes to draw on; by default a new :class:`matplotlib.figure.Figure` (no pyplot
        state, whatever the backend).
    path
        Also save the figure there as PNG, atomically (a temporary file in the same
        folder replaces ``path`` once written).

    Returns
    -------
    The figure drawn on.
    """
    import networkx as nx
    from matplotlib.figure import Figure

    gid = resolve_gene(net, gene)
    own = top_edges_per_gene(net, gid, k=k, direction="both")
    nodes = list(dict.fromkeys([gid, *own["regulator"], *own["target"]]))
    edges = own[["regulator", "target", "score"]]
    if len(nodes) > 2 and len(own):
        floor = float(own["score"].min())
        among = net.subset([g for g in nodes if g != gid]).edges(threshold=floor)
        edges = pd.concat([edges, among[["regulator", "target", "score"]]], ignore_index=True)
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_weighted_edges_from(edges.itertuples(index=False, name=None))
    names = gene_names(net)
    labels = {g: names[g] for g in nodes}

    if ax is None:
        fig = Figure(figsize=(7, 7))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    regulators = [g for g in dict.fromkeys(own["regulator"]) if g != gid]
    targets = [g for g in dict.fromkeys(own["target"]) if g != gid and g not in regulators]
    pos = {gid: (0.0, 0.0)}
    for side, group in ((-1.0, regulators), (1.0, targets)):
        for i, g in enumerate(group):  # an arc from top to bottom on each side
            angle = np.pi * (i + 1) / (len(group) + 1)
            pos[g] = (side * np.sin(angle), np.cos(angle))
    scores = np.abs(np.array([d["weight"] for _, _, d in graph.edges(data=True)], dtype=float))
    top_score = scores.max() if scores.size and scores.max() > 0 else 1.0
    widths = 0.5 + 3.5 * scores / top_score
    colors = ["tab:red" if g == gid else "tab:blue" for g in graph.nodes]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colors, node_size=600, alpha=0.85)
    nx.draw_networkx_edges(
        graph,
        pos,
        ax=ax,
        width=list(widths),
        arrows=True,
        arrowstyle="-|>",
        arrowsize=12,
        edge_color="0.4",
        node_size=600,
        connectionstyle="arc3,rad=0.08",
    )
    nx.draw_networkx_labels(graph, pos, labels=labels, ax=ax, font_size=8)
    ax.set_title(f"{names[gid]}: top {k} regulators and targets")
    ax.set_axis_off()
    if path is not None:
        _save_png(fig, Path(path))
    return fig


def _save_png(fig: Figure, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("saved the subgraph plot to %s", path)
