"""The ``bengrn`` command: score gene networks, and build baseline networks.

::

    bengrn run --network NET [NET ...] --truth omnipath|collectri|dorothea|mcalla-hesc|
        mcalla-mesc|FILE [--truth-dir DIR] [--transpose] [--tf-only] --out DIR [--overwrite]
    bengrn baseline genie3|genie3-tf|grnboost2|correlation|random --adata IN.h5ad
        --out NET.h5ad [--genes FILE | --n-genes N] [--cell-type-key COL --cell-type V]
        [--layer NAME] [--trees 100] [--seed 0] [--overwrite]

``run`` writes ``results.csv`` and PR-curve PNGs in ``--out`` (see
:func:`bengrn.runner.run`) and prints the table. ``baseline`` reads raw counts (``.h5ad``
or ``.zarr``), optionally keeps one cell type and a set of genes, infers the network
(:mod:`bengrn.baselines`) and writes it atomically with :meth:`GeneNetwork.write`.

Bad input (a missing file, an unknown truth, genes that do not overlap...) ends with exit
code 2 and a one-line ``error: ...`` on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scdataloader.cli_utils import check_output
from scdataloader.cli_utils import one_line as _one_line
from scdataloader.cli_utils import positive_int as _positive_int
from scdataloader.errors import InputError

__all__ = ["build_parser", "main", "most_variable_genes"]

logger = logging.getLogger(__name__)

TRUTHS = ("omnipath", "collectri", "dorothea", "mcalla-hesc", "mcalla-mesc")


def build_parser(prog: str = "bengrn") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Gene-network benchmarks: ground truths, metrics, baselines."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="score networks against a ground truth")
    run.add_argument(
        "--network", nargs="+", required=True, help="network files (.h5ad or edge list)"
    )
    run.add_argument("--name", nargs="+", default=None, help="a name per network")
    run.add_argument("--truth", required=True, help=f"{' | '.join(TRUTHS)} | a file")
    run.add_argument("--truth-dir", default=None, help="folder of the McCalla files")
    run.add_argument("--organism", default="human", choices=("human", "mouse"))
    run.add_argument("--transpose", action="store_true", help="score each network's transpose")
    run.add_argument(
        "--tf-only", action="store_true", help="only edges from the truth's regulators"
    )
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--no-plot", action="store_true", help="skip the PR-curve PNGs")
    run.add_argument("--overwrite", action="store_true", help="replace existing results")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")

    base = sub.add_parser("baseline", help="infer a baseline network from counts")
    base.add_argument(
        "method", choices=("genie3", "genie3-tf", "grnboost2", "correlation", "random")
    )
    base.add_argument("--adata", required=True, help="input AnnData (.h5ad / .zarr), counts")
    base.add_argument("--out", required=True, help="output network (.h5ad)")
    genes = base.add_mutually_exclusive_group()
    genes.add_argument("--genes", default=None, help="file with one gene per line")
    genes.add_argument(
        "--n-genes", type=_positive_int, default=None, help="keep the N most variable genes"
    )
    base.add_argument("--cell-type-key", default=None, help="obs column of the cell types")
    base.add_argument("--cell-type", default=None, help="keep only the cells of this type")
    base.add_argument("--layer", default=None, help="layer with the raw counts (default X)")
    base.add_argument("--tfs", default=None, help="TF list file (genie3-tf; default: organism)")
    base.add_argument("--organism", default="human", choices=("human", "mouse"))
    base.add_argument("--trees", type=_positive_int, default=100, help="trees per target")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--n-jobs", type=_positive_int, default=1, help="parallel targets")
    base.add_argument(
        "--no-normalize", action="store_true", help="the input is already normalised"
    )
    base.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    base.add_argument("-v", "--verbose", action="store_true", help="log more")
    return parser


def _read_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"file not found: {file}")
    lines = [line.strip() for line in file.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{file} lists no genes")
    return lines


def most_variable_genes(
    adata, n: int, *, layer: str | None = None, normalize: bool = True
) -> list[str]:
    """The ``n`` genes of highest dispersion (variance / mean) of log1p(counts per 10,000),
    among the genes detected in at least one cell; ties by position.

    Parameters
    ----------
    adata
        Cells x genes, raw counts in ``X`` or ``layer``.
    n
        How many genes.
    layer
        Layer with the counts.
    normalize
        False: the values are already normalised; rank them as they are.
    """
    import scipy.sparse as sp

    from scdataloader.preprocess import counts_matrix, log_normalize

    if normalize:
        norm = log_normalize(adata, layer=layer)
    else:
        x = counts_matrix(adata, layer)[0]
        norm = sp.csr_matrix(x, dtype=np.float64)
    mean = np.asarray(norm.mean(axis=0), dtype=np.float64).ravel()
    sq = np.asarray(norm.multiply(norm).mean(axis=0), dtype=np.float64).ravel()
    var = sq - mean**2
    dispersion = np.where(mean > 0, var / np.where(mean > 0, mean, 1), -np.inf)
    order = np.argsort(-dispersion, kind="stable")
    order = order[np.isfinite(dispersion[order])][:n]
    return adata.var_names[np.sort(order)].tolist()


def _select(adata, args: argparse.Namespace):
    """The chosen cells (a copy) and genes (None: all); genes are not cut out of the data, so
    that counts are normalised by each cell's total over all its genes."""
    if (args.cell_type is None) != (args.cell_type_key is None):
        raise ValueError("give --cell-type-key and --cell-type together")
    if args.cell_type_key is not None:
        if args.cell_type_key not in adata.obs.columns:
            raise ValueError(
                f"obs has no column {args.cell_type_key!r}; columns: {list(adata.obs.columns)}"
            )
        labels = adata.obs[args.cell_type_key].astype(str)
        keep = (labels == args.cell_type).to_numpy()
        if not keep.any():
            present = labels.value_counts().index[:10].tolist()
            raise ValueError(
                f"no cell has {args.cell_type_key} == {args.cell_type!r}; present: {present}"
            )
        adata = adata[keep].copy()
        logger.info("kept %d cells of %s", adata.n_obs, args.cell_type)
    if args.genes is not None:
        wanted = _read_lines(args.genes)
        names = pd.Index(adata.var_names)
        if "symbol" in adata.var.columns:
            by_symbol = pd.Index(adata.var["symbol"].astype(str))
            if names.isin(wanted).sum() < by_symbol.isin(wanted).sum():
                names = by_symbol
        keep = names.isin(wanted)
        if not keep.any():
            raise ValueError(
                f"none of the {len(wanted)} genes of {args.genes} is in the data "
                f"(e.g. {wanted[:3]} vs {list(adata.var_names[:3])}); symbols vs Ensembl ids?"
            )
        missing = len(set(wanted) - set(names[keep]))
        if missing:
            logger.warning("%d of the %d listed genes are not in the data", missing, len(wanted))
        return adata, list(adata.var_names[keep])
    if args.n_genes is not None:
        return adata, most_variable_genes(
            adata, args.n_genes, layer=args.layer, normalize=not args.no_normalize
        )
    return adata, None


def _baseline(args: argparse.Namespace) -> int:
    from scdataloader.io import read_anndata
    from scdataloader.preprocess import check_not_empty

    from . import baselines

    out = check_output(args.out, overwrite=args.overwrite, inputs=[args.adata])
    adata = read_anndata(args.adata)
    check_not_empty(adata, "infer a network from")
    adata, genes = _select(adata, args)
    func = baselines.BASELINES[args.method]
    options: dict[str, Any] = {
        "genes": genes,
        "layer": args.layer,
        "seed": args.seed,
        "n_trees": args.trees,
        "n_jobs": args.n_jobs,
        "normalize": not args.no_normalize,
        "organism": args.organism,
    }
    if args.tfs is not None:
        options["tfs"] = _read_lines(args.tfs)
    accepted = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    net = func(adata, **options)
    net.write(out)
    print(f"{args.method}: {net.n_genes} genes, {adata.n_obs} cells -> {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import RESULTS_FILE, run

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder.")
    if (out / RESULTS_FILE).exists() and not args.overwrite:
        raise InputError(f"{out / RESULTS_FILE} exists; pass --overwrite to replace it.")
    for network in args.network:  # before the truth, which may take a while to load
        if not Path(network).exists():
            raise FileNotFoundError(f"network file not found: {network}")
    if args.name is not None and len(args.name) != len(args.network):
        raise ValueError(f"{len(args.name)} names for {len(args.network)} networks")
    networks: Any = (
        dict(zip(args.name, args.network, strict=True)) if args.name else list(args.network)
    )
    table = run(
        networks,
        args.truth,
        transpose=args.transpose,
        tf_only=args.tf_only,
        directory=args.truth_dir,
        organism=args.organism,
        out=args.out,
        plot=not args.no_plot,
    )
    cols = [
        c
        for c in ("network", "epr", "auprc", "average_precision", "prevalence", "n_true_edges")
        if c in table.columns
    ]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"results: {Path(args.out) / 'results.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args) if args.command == "run" else _baseline(args)
    except (ValueError, KeyError, OSError, ImportError) as e:
        if args.verbose:
            logger.exception("failed")
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
