"""The ``scprint embed|denoise|classify|gn`` commands: zero-shot tasks on an AnnData file.

::

    scprint embed --adata IN.h5ad --ckpt MODEL --out OUT.h5ad [--max-len 2200]
        [--batch-size 32] [--logits] [--gene-mean] [--gene-key COL] [--layer NAME]
        [--organism human]
    scprint denoise --adata IN.h5ad --ckpt MODEL --out OUT.h5ad [--depth-multiplier 1]
        [--posterior] [--neighbours 1] [--zero-share S]
    scprint classify --adata IN.h5ad --ckpt MODEL --out OUT.h5ad
    scprint gn --adata IN.h5ad --ckpt MODEL --out NETWORK [--set key=value ...]

The input is read with :func:`scdataloader.io.read_anndata` (``.h5ad`` or ``.zarr``),
the model with :func:`scprint.load` (a ``.ckpt`` file, a folder holding one, or a Hugging
Face hub id), the task runs with a progress bar, and the result is written atomically
(:func:`scdataloader.io.write_h5ad_atomic`): a reader never sees a half-written file. An
existing output is refused unless ``--overwrite`` is given (then it is replaced only once
the new one is complete); the input file is never overwritten. ``gn`` writes the gene
network with its own ``.write(path)``.

Bad input (a missing or unreadable file, a corrupt checkpoint, log-normalised counts,
genes that do not map...) ends with exit code 2 and a one-line ``error: ...`` on stderr,
without a traceback.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from scdataloader.cli_utils import check_output
from scdataloader.cli_utils import one_line as _one_line
from scdataloader.cli_utils import positive_int as _positive_int

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = ("embed", "denoise", "classify", "gn")

logger = logging.getLogger(__name__)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a share in (0, 1), got {text}")
    return value


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a plain string
    return key, value


def _common(parser: argparse.ArgumentParser, out_help: str) -> None:
    io = parser.add_argument_group("files")
    io.add_argument("--adata", required=True, help="input AnnData (.h5ad or .zarr), raw counts")
    io.add_argument("--ckpt", required=True, help="model: .ckpt file, folder or hub id")
    io.add_argument("--out", required=True, help=out_help)
    io.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    data = parser.add_argument_group("input")
    data.add_argument("--gene-key", default=None, help="var column with gene names or ids")
    data.add_argument("--layer", default=None, help="layer with the raw counts (default X)")
    data.add_argument("--organism", default=None, help="human or mouse (default: detected)")
    run = parser.add_argument_group("run")
    run.add_argument("--max-len", type=_positive_int, default=2200, help="genes per cell")
    run.add_argument("--batch-size", type=_positive_int, default=32, help="cells per batch")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")


def build_parser(prog: str = "scprint") -> argparse.ArgumentParser:
    """The parser of the task commands (one sub-command per task)."""
    parser = argparse.ArgumentParser(prog=prog, description="scPRINT zero-shot tasks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embed", help="cell embeddings -> obsm['X_scprint*']")
    _common(p, "output .h5ad")
    p.add_argument("--logits", action="store_true", help="also write each classifier's logits")
    p.add_argument(
        "--gene-mean", action="store_true", help="also write the expressed genes' mean token"
    )
    p.add_argument("--key-added", default="X_scprint", help="prefix of the obsm keys")
    p.add_argument(
        "--no-class-embeddings", action="store_true", help="only the default cell embedding"
    )
    p = sub.add_parser("denoise", help="denoised counts -> layers['scprint_denoised']")
    _common(p, "output .h5ad")
    p.add_argument(
        "--depth-multiplier",
        type=_positive_float,
        default=1.0,
        help="requested depth as a multiple of each cell's total count",
    )
    p.add_argument(
        "--posterior",
        action="store_true",
        help="posterior mean given the observed counts (needs --depth-multiplier > 1)",
    )
    p.add_argument(
        "--neighbours",
        type=_positive_int,
        default=1,
        help="pool the prediction over each cell and its nearest cells of the input "
        "(1: each cell alone, the paper's)",
    )
    p.add_argument(
        "--zero-share",
        type=_share,
        default=None,
        help="predict every measured gene, in passes with this share of zero-count genes "
        "(e.g. the model's pretraining zero_genes / max_len); default: one sequence",
    )
    p.add_argument("--layer-added", default="scprint_denoised", help="layer written")
    p = sub.add_parser("classify", help="predicted labels of every class")
    _common(p, "output .h5ad")
    p.add_argument("--set", dest="extra", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="more keyword arguments of the task")  # fmt: skip
    p = sub.add_parser("gn", help="gene network from the model's attention")
    _common(p, "output network file")
    p.add_argument("--set", dest="extra", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="more keyword arguments of the task")  # fmt: skip
    return parser


def _call(func: Callable, adata, model, options: dict[str, Any], extra: dict[str, Any]):
    """Call a task with the options its signature accepts (plus every ``--set`` option)."""
    params = inspect.signature(func).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in options.items() if takes_any or k in params}
    kwargs.update(extra)
    return func(adata, model, **kwargs)


def _task(name: str) -> Callable:
    import scprint.tasks as tasks

    if not hasattr(tasks, name):
        raise NotImplementedError(
            f"this version of scPRINT has no scprint.tasks.{name}; update scPRINT."
        )
    return getattr(tasks, name)


def _run(args: argparse.Namespace) -> int:
    import scprint
    from scdataloader.io import read_anndata, write_h5ad_atomic

    check_output(args.out, overwrite=args.overwrite, inputs=[args.adata])
    adata = read_anndata(args.adata)
    model = scprint.load(args.ckpt)
    options: dict[str, Any] = {
        "max_len": args.max_len,
        "batch_size": args.batch_size,
        "gene_key": args.gene_key,
        "layer": args.layer,
        "organism": args.organism,
        "progress": not args.no_progress,
    }
    extra = dict(getattr(args, "extra", []) or [])
    if args.command == "embed":
        from .cells import embed

        embed(adata, model, key_added=args.key_added, logits=args.logits,
              gene_mean=args.gene_mean, class_embeddings=not args.no_class_embeddings,
              **options)  # fmt: skip
        result = adata
    elif args.command == "denoise":
        from .cells import denoise

        denoise(adata, model, depth_multiplier=args.depth_multiplier,
                posterior=args.posterior, neighbours=args.neighbours,
                zero_share=args.zero_share, layer_added=args.layer_added,
                **options)  # fmt: skip
        result = adata
    elif args.command == "classify":
        out = _call(_task("classify"), adata, model, options, extra)
        result = out if hasattr(out, "write_h5ad") else adata
    else:  # gn
        network = _call(_task("get_gene_network"), adata, model, options, extra)
        path = network.write(args.out)
        print(f"wrote {path or args.out}", file=sys.stderr)
        return 0
    path = write_h5ad_atomic(result, args.out)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one task command; returns the exit code (0 ok, 2 bad input).

    Parameters
    ----------
    argv
        The arguments, the command first (default ``sys.argv[1:]``).
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
    except (InputError, CheckpointError, NotImplementedError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
