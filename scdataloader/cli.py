"""Command line: ``scdataloader info FILE`` and ``scdataloader preprocess IN OUT``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from .errors import InputError

__all__ = ["main", "build_parser"]

# The library's messages name Python keyword arguments; on the command line, name the flags.
_FLAG_HINTS = [
    (re.compile(r"recover_counts=True"), "--recover-counts"),
    (re.compile(r"[Pp]ass gene_key=None"), "Leave out --gene-key"),
    (re.compile(r"\(or None to detect it\)"), "(or leave --organism out to detect it)"),
    (
        re.compile(r"\b(gene_key|layer|organism)=(['\"])(.*?)\2"),
        lambda m: f"--{m.group(1).replace('_', '-')} {m.group(3)}",
    ),
]


def _cli_message(message: str) -> str:
    """Rewrite the Python-API hints of a library message as command-line flags."""
    for pattern, repl in _FLAG_HINTS:
        message = pattern.sub(repl, message)
    return message


def _info(args: argparse.Namespace) -> int:
    from ._constants import DEFAULT_LABEL_KEYS, ORGANISMS
    from .io import read_anndata
    from .preprocess import check_counts, counts_matrix, qc_report

    adata = read_anndata(args.file, backed=False)
    print(f"file: {args.file}")
    print(f"cells: {adata.n_obs:,}")
    print(f"genes: {adata.n_vars:,}")
    X, where = counts_matrix(adata, args.layer)
    check = check_counts(X)
    print(f"{where}: {check.kind} - {_cli_message(check.message)}")
    present = [k for k in DEFAULT_LABEL_KEYS if k in adata.obs.columns]
    print("label columns: " + (", ".join(present) if present else "none of the CELLxGENE ones"))
    for key in present:
        values = adata.obs[key].astype(str)
        top = values.value_counts().head(3)
        shown = ", ".join(f"{v} ({n})" for v, n in top.items())
        print(f"  {key}: {values.nunique()} values, e.g. {shown}")
    other = [c for c in adata.obs.columns if c not in present]
    if other:
        print(f"other obs columns: {', '.join(other[:15])}" + (" ..." if len(other) > 15 else ""))
    try:
        report = qc_report(adata, organism=args.organism, gene_key=args.gene_key, layer=args.layer)
    except InputError as e:
        print(f"QC: cannot run: {_cli_message(str(e))}")
        return 0
    print(f"organism: {ORGANISMS.get(report.organism, report.organism)}")
    print(report.gene_report)
    print("QC (scPRINT rules):")
    print("  " + report.summary().replace("\n", "\n  "))
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from .cli_utils import check_output
    from .io import read_anndata, write_h5ad_atomic
    from .preprocess import preprocess

    check_output(args.output, overwrite=args.overwrite, inputs=[args.input])
    adata = read_anndata(args.input)
    out = preprocess(
        adata,
        organism=args.organism,
        gene_key=args.gene_key,
        layer=args.layer,
        recover_counts=args.recover_counts,
        min_genes_per_cell=args.min_genes_per_cell,
        min_cells=args.min_cells,
        min_genes=args.min_genes,
        max_dropped_fraction=args.max_dropped_fraction,
        primary_only=not args.keep_non_primary,
    )
    write_h5ad_atomic(out, args.output, compression="gzip" if args.gzip else None)
    print(f"wrote {args.output}: {out.n_obs:,} cells x {out.n_vars:,} genes")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--organism", help="human, mouse or an NCBITaxon id (default: detected)")
    p.add_argument("--gene-key", help="var column with gene names (default: var_names)")
    p.add_argument("--layer", help="layer with raw counts (default: X; 'raw' for adata.raw)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scdataloader", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe an AnnData file and what QC would drop")
    info.add_argument("file", help=".h5ad file or .zarr store")
    _common(info)
    info.set_defaults(func=_info)
    pre = sub.add_parser("preprocess", help="validate counts, apply QC, map genes; write h5ad")
    pre.add_argument("input", help=".h5ad file or .zarr store")
    pre.add_argument("output", help="output .h5ad (written atomically)")
    _common(pre)
    pre.add_argument(
        "--recover-counts",
        action="store_true",
        help="recover exact counts from log-normalised X when possible",
    )
    pre.add_argument("--min-genes-per-cell", type=int, default=200)
    pre.add_argument("--min-cells", type=int, default=100)
    pre.add_argument("--min-genes", type=int, default=10_000)
    pre.add_argument("--max-dropped-fraction", type=float, default=0.95)
    pre.add_argument(
        "--keep-non-primary", action="store_true", help="keep cells with is_primary_data False"
    )
    pre.add_argument("--gzip", action="store_true", help="gzip-compress the output")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing output")
    pre.set_defaults(func=_preprocess)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (InputError, OSError) as e:
        # a clear message, no traceback: the first line is the error, details indented
        lines = _cli_message(str(e)).strip().splitlines() or [type(e).__name__]
        print("error: " + "\n  ".join(line.rstrip() for line in lines), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
