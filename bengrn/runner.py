"""Score networks against a ground truth and write a results table and PR curves.

:func:`run` is what ``bengrn run`` calls::

    from bengrn import runner

    table = runner.run(
        {"scprint": "rod_network.h5ad", "genie3": "genie3.h5ad"},
        "omnipath",
        transpose=True,
        out="results/",
    )

It loads every network (a :class:`~bengrn.network.GeneNetwork`, a path to one, or a
plain AnnData with a gene x gene ``varp`` matrix), loads the truth once
(:func:`bengrn.truths.load_truth`), scores each network with
:func:`bengrn.metrics.evaluate` and, with ``out``, writes atomically (every file or none)

* ``results.csv``: one row per network (the columns of :meth:`Scores.as_dict` plus the
  network, truth and options);
* ``pr_curves.png``: every network's precision-recall curve, with the prevalence;
* ``pr_<network>.png``: each network's own curve.

Nothing the caller gave is modified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .network import NETWORK_KEY, GeneNetwork

__all__ = ["RESULTS_FILE", "load_network", "plot_pr_curves", "run"]

logger = logging.getLogger(__name__)

#: Name of the results table ``run`` writes in its output folder.
RESULTS_FILE = "results.csv"
_EDGE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")


def _atomic_target(path: Path):
    from scdataloader.io import atomic_path

    return atomic_path(path)


def load_network(
    network: GeneNetwork | str | os.PathLike[str],
    *,
    key: str | None = None,
) -> GeneNetwork:
    """A network from a :class:`GeneNetwork`, an ``.h5ad`` file or an edge-list file.

    Parameters
    ----------
    network
        A network (returned as is); a ``.h5ad`` written by :meth:`GeneNetwork.write`; any
        ``.h5ad`` AnnData holding a gene x gene matrix in ``varp`` (its ``uns`` must give
        the orientation, or the key must be ``"GRN"``, the GRnnData convention,
        regulator x target); or a ``.csv`` / ``.tsv`` edge list with columns
        ``regulator``, ``target`` and ``score`` (``source`` / ``target`` / ``weight``
        and ``TF`` / ``target`` / ``importance`` are also understood).
    key
        The ``varp`` key of a plain AnnData; by default ``"network"``, else the only one.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When the file holds no network this function understands (the message says what
        it found).
    """
    if isinstance(network, GeneNetwork):
        return network
    path = Path(network)
    if not path.exists():
        raise FileNotFoundError(f"network file not found: {path}")
    name = path.name.lower()
    if name.endswith(".h5ad"):
        from scdataloader.io import read_anndata

        adata = read_anndata(path)  # a clear FileFormatError when truncated or not h5ad
        keys = list(adata.varp.keys())
        if key is None:
            if NETWORK_KEY in keys:
                key = NETWORK_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise ValueError(
                    f"{path} has {len(keys)} varp matrices ({keys or 'none'}); "
                    "give the one holding the network (--key)"
                )
        if key not in keys:
            raise ValueError(f"{path} has no varp[{key!r}] (varp keys: {keys or 'none'})")
        orientation = None
        if "orientation" not in adata.uns:
            if key != "GRN":
                raise ValueError(
                    f"{path}: varp[{key!r}] does not say its orientation (uns['orientation']:"
                    " 'target_by_regulator' or 'regulator_by_target'); write it with "
                    "GeneNetwork.write or set adata.uns['orientation']"
                )
            orientation = "regulator_by_target"  # GRnnData's varp["GRN"]
        return GeneNetwork.from_anndata(adata, key, orientation=orientation)
    if name.endswith(_EDGE_SUFFIXES):
        sep = "," if ".csv" in name else "\t"
        table = pd.read_csv(path, sep=sep)
        for source, target, weight in (
            ("regulator", "target", "score"),
            ("source", "target", "weight"),
            ("TF", "target", "importance"),
        ):
            if {source, target, weight} <= set(table.columns):
                return GeneNetwork.from_edges(
                    table,
                    source=source,
                    target=target,
                    weight=weight,
                    method=path.stem,
                    params={"file": str(path)},
                )
        raise ValueError(
            f"{path}: an edge list needs columns regulator, target, score (or source, "
            f"target, weight); it has {list(table.columns)}"
        )
    raise ValueError(
        f"{path}: not a network file; give a .h5ad (GeneNetwork.write) or a .csv/.tsv edge list"
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "network"


def _as_named(
    networks: Mapping[str, Any] | Sequence[Any] | GeneNetwork | str | os.PathLike[str],
) -> dict[str, Any]:
    if isinstance(networks, Mapping):
        named = {str(k): v for k, v in networks.items()}
    else:
        if isinstance(networks, GeneNetwork | str | os.PathLike):
            networks = [networks]
        named = {}
        for i, net in enumerate(networks):
            if isinstance(net, GeneNetwork):
                base = net.method or f"network{i + 1}"
            else:
                base = Path(net).name.split(".")[0]
            name, k = base, 2
            while name in named:
                name, k = f"{base}_{k}", k + 1
            named[name] = net
    if not named:
        raise ValueError("no network to score")
    return named


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    *,
    title: str = "",
    path: str | os.PathLike[str] | None = None,
):
    """Precision against recall for each network, with its prevalence line.

    Parameters
    ----------
    curves
        Network name -> (precision, recall, prevalence), as :func:`bengrn.metrics.evaluate`
        returns them.
    title
        Figure title.
    path
        Write the figure as a PNG there (atomically).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.add_subplot()
    prevalences = []
    for name, (precision, recall, prevalence) in curves.items():
        precision, recall = np.asarray(precision), np.asarray(recall)
        ax.plot(recall, precision, drawstyle="default", lw=1.5, label=name)
        if len(recall) and recall[-1] < 1:
            # the part the AUPRC closes at the prevalence (no interpolation to recall 1)
            ax.plot([recall[-1], 1], [prevalence, prevalence], lw=0.8, ls=":", color="grey")
        prevalences.append(prevalence)
    if prevalences:
        ax.axhline(float(np.mean(prevalences)), color="red", ls="--", lw=1, label="random")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, None)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        with _atomic_target(path) as tmp:
            fig.savefig(tmp, format="png")
    return fig


def run(
    networks: Mapping[str, Any] | Sequence[Any] | GeneNetwork | str | os.PathLike[str],
    truth: GeneNetwork | str | os.PathLike[str],
    *,
    transpose: bool = False,
    tf_only: bool = False,
    regulators: Sequence[str] | None = None,
    truth_name: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    organism: str = "human",
    out: str | os.PathLike[str] | None = None,
    plot: bool = True,
) -> pd.DataFrame:
    """Score each network against one ground truth.

    Parameters
    ----------
    networks
        One network or several: :class:`GeneNetwork` objects or paths
        (:func:`load_network`), as a list (named after their method or file) or a mapping
        name -> network.
    truth
        A :class:`GeneNetwork`, a name (``"omnipath"``, ``"collectri"``, ``"dorothea"``,
        ``"mcalla-hesc"``, ``"mcalla-mesc"``) or a file; see
        :func:`bengrn.truths.load_truth`.
    transpose
        Score each network's transpose (regulators as targets), as the scPRINT paper does
        against OmniPath.
    tf_only
        Only score edges whose regulator regulates something in the truth.
    regulators
        Only score edges from these regulators (e.g. a TF list); exclusive with
        ``tf_only``.
    truth_name
        Name of the truth in the table (default: the name given, or the file's stem).
    directory
        Folder of the McCalla files (``mcalla-*`` truths).
    organism
        For named truths.
    out
        Output folder for ``results.csv`` and the PR-curve PNGs; nothing is written when
        None.
    plot
        Draw the PR curves (with ``out``).

    Returns
    -------
    One row per network: ``network``, ``truth``, ``transpose``, ``tf_only`` and the
    scalar scores (``epr``, ``auprc``, ``average_precision``, ``precision``, ``recall``,
    ``prevalence``, counts of genes, regulators, true edges, candidates and predictions).
    """
    from . import metrics, truths

    if tf_only and regulators is not None:
        raise ValueError("give tf_only or regulators, not both")
    named = _as_named(networks)
    if isinstance(truth, GeneNetwork):
        truth_net = truth
        truth_name = truth_name or truth.method or "truth"
    else:
        truth_net = truths.load_truth(truth, directory=directory, organism=organism)
        truth_name = truth_name or (Path(truth).stem if Path(str(truth)).suffix else str(truth))
    logger.info("truth %s: %d genes, %d edges", truth_name, truth_net.n_genes, _n_edges(truth_net))
    which = "truth" if tf_only else (list(regulators) if regulators is not None else None)

    rows, curves = [], {}
    for name, net in named.items():
        net = load_network(net)
        scores = metrics.evaluate(net, truth_net, transpose=transpose, regulators=which)
        row = {
            "network": name,
            "method": net.method,
            "truth": truth_name,
            "transpose": bool(transpose),
            "tf_only": bool(tf_only),
        }
        row.update(scores.as_dict())
        rows.append(row)
        curves[name] = (scores.curve_precision, scores.curve_recall, scores.prevalence)
        logger.info(
            "%s vs %s: EPR %.3g, AUPRC %.3g (prevalence %.3g)",
            name,
            truth_name,
            scores.epr,
            scores.auprc,
            scores.prevalence,
        )
    table = pd.DataFrame(rows)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        figures = {}
        if plot:
            suffix = " (transposed)" if transpose else ""
            figures[out / "pr_curves.png"] = plot_pr_curves(curves, title=f"{truth_name}{suffix}")
            for name, curve in curves.items():
                figures[out / f"pr_{_safe_name(name)}.png"] = plot_pr_curves(
                    {name: curve}, title=f"{name} vs {truth_name}{suffix}"
                )
        # every file or none: each is moved in place once all are written
        with contextlib.ExitStack() as stack:
            for path, fig in figures.items():
                fig.savefig(stack.enter_context(_atomic_target(path)), format="png")
            table.to_csv(stack.enter_context(_atomic_target(out / RESULTS_FILE)), index=False)
        logger.info("results written to %s", out)
    return table


def _n_edges(net: GeneNetwork) -> int:
    m = net.matrix
    return int(m.count_nonzero()) if hasattr(m, "count_nonzero") else int(np.count_nonzero(m))
