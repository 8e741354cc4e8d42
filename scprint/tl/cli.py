"""The ``scprint dge`` command: differential expression per cell type.

::

    scprint dge --adata IN.h5ad --groupby COL --condition COL --reference LEVEL
        --donor-key COL --out DIR [--target LEVEL] [--method pseudobulk|lmm]
        [--layer NAME] [--allow-non-counts] [--genes FILE | --model MODEL.pt [--k K]]
        [--groups A,B] [--min-cells 3] [--min-donors 2] [--alpha 0.05]
        [--min-abs-log2fc 0] [--overwrite]

Runs :func:`scprint.tl.dge` and writes to ``DIR``: ``dge.csv`` (the table, one row per
cell type and gene) and ``volcano_<cell type>.png`` for each cell type tested. Every
file is written atomically, and all of them or none; existing outputs are kept unless
``--overwrite``. It prints the up- and down-regulated gene counts per cell type. Bad
input ends with exit code 2 and a one-line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from scdataloader.cli_utils import positive_int as _positive_int

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

TABLE = "dge.csv"


def build_parser(prog: str = "scprint dge") -> argparse.ArgumentParser:
    """The parser of ``scprint dge``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Differential expression between two conditions per cell type."
    )
    p.add_argument("--adata", required=True, help="input AnnData (.h5ad or .zarr)")
    p.add_argument("--groupby", required=True, help="obs column of the cell types")
    p.add_argument("--condition", required=True, help="obs column of the conditions")
    p.add_argument("--reference", required=True, help="reference level of --condition")
    p.add_argument("--target", default=None,
                   help="level tested against the reference (needed with > 2 levels)")  # fmt: skip
    p.add_argument("--donor-key", required=True, help="obs column of the donors")
    p.add_argument("--method", choices=("pseudobulk", "lmm"), default="pseudobulk",
                   help="pseudobulk (DESeq2) or lmm (mixed model); default pseudobulk")  # fmt: skip
    p.add_argument("--out", required=True, help="folder of the outputs")
    p.add_argument("--layer", default=None, help="layer with the values (default X)")
    p.add_argument("--allow-non-counts", action="store_true",
                   help="pseudobulk: round non-integer values (a denoised layer)")  # fmt: skip
    genes = p.add_mutually_exclusive_group()
    genes.add_argument("--genes", default=None, help="file with one gene per line (# comments)")
    genes.add_argument("--model", default=None,
                       help="tabular classifier file: test its top --k genes")  # fmt: skip
    p.add_argument("--k", type=_positive_int, default=None, help="with --model: genes to test")
    p.add_argument("--groups", default=None, help="comma-separated cell types (default all)")
    p.add_argument("--min-cells", type=_positive_int, default=3,
                   help="cells a donor needs in a condition of a cell type (default 3)")  # fmt: skip
    p.add_argument("--min-donors", type=int, default=2,
                   help="donors needed per condition (default 2)")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help="adjusted p-value cut-off")
    p.add_argument("--min-abs-log2fc", type=float, default=0.0,
                   help="absolute log2 fold change a called gene must exceed")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p


def _gene_file(path: str) -> list[str]:
    from scdataloader.errors import InputError

    file = Path(path)
    if not file.is_file():
        raise InputError(f"--genes {path}: no such file.")
    genes = [ln.split("#", 1)[0].strip() for ln in file.read_text().splitlines()]
    genes = [g for g in genes if g]
    if not genes:
        raise InputError(f"--genes {path}: the file lists no gene.")
    return genes


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from scdataloader.errors import InputError
    from scdataloader.io import read_anndata

    from . import DGEWarning, dge
    from ._report import volcano_paths, volcano_writers, write_all

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder.")
    if (out / TABLE).exists() and not args.overwrite:
        raise InputError(f"{out / TABLE} exists; pass --overwrite to replace it.")
    genes, model = None, None
    if args.genes is not None:
        genes = _gene_file(args.genes)
    elif args.model is not None:
        from scprint.tabular import load_model

        genes, model = "model_top_k", load_model(args.model)
    elif args.k is not None:
        raise InputError("--k needs --model.")
    adata = read_anndata(args.adata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = dge(
            adata,
            groupby=args.groupby,
            condition=args.condition,
            reference=args.reference,
            target=args.target,
            donor_key=args.donor_key,
            method=args.method,
            genes=genes,
            model=model,
            k=args.k,
            layer=args.layer,
            allow_non_counts=args.allow_non_counts,
            groups=args.groups.split(",") if args.groups else None,
            min_cells=args.min_cells,
            min_donors=args.min_donors,
            alpha=args.alpha,
            min_abs_log2fc=args.min_abs_log2fc,
            progress=not args.no_progress,
        )
    for w in caught:
        if issubclass(w.category, DGEWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    names = pd.unique(table["cell_type"])
    if not args.overwrite and any(p.exists() for p in volcano_paths(table, out).values()):
        raise InputError(f"volcano plots exist in {out}; pass --overwrite to replace them.")
    writers = volcano_writers(table, out, alpha=args.alpha)
    writers[out / TABLE] = lambda tmp: table.to_csv(tmp, index=False)
    write_all(writers)  # all the files or none
    counts = table.groupby("cell_type")["direction"].value_counts().unstack(fill_value=0)
    print(f"{table.attrs['target']} vs {table.attrs['reference']} ({args.method}):")
    for name, row in counts.iterrows():
        print(f"  {name}: {row.get('up', 0)} up, {row.get('down', 0)} down")
    print(f"wrote {out / TABLE} and {len(names)} volcano plots")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scprint dge``; returns the exit code (0 ok, 2 bad input).

    Parameters
    ----------
    argv
        The arguments after ``dge`` (default ``sys.argv[1:]``).
    """
    from scdataloader.errors import InputError

    from ..checkpoint import CheckpointError

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except (InputError, CheckpointError, OSError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
