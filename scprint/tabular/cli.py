"""The ``scprint tabular fit|predict|explain`` commands: tabular cell-type classifiers.

::

    scprint tabular fit --adata IN.h5ad --label-key COL --out MODEL.pt
        [--model tabnet|tabnet-sctab|mlp|linear] [--donor-key COL]
        [--genes FILE | --n-genes N [--gene-selection expressed|variable]]
        [--max-epochs 100] [--batch-size 128] [--seed 0] [--ensemble N]
        [--augment [--augment-key COL] [--augment-prob 1.0]] [--overwrite]
    scprint tabular predict --adata IN.h5ad --model MODEL.pt --out-dir DIR
        [--threshold T] [--label-key COL] [--overwrite]
    scprint tabular explain --adata IN.h5ad --model MODEL.pt --out-dir DIR
        [--label-key COL] [--n 20] [--overwrite]

``fit`` trains on the raw counts of an AnnData (``.h5ad`` or ``.zarr``) with
:func:`scprint.tabular.fit` (``--ensemble N``: :func:`~scprint.tabular.fit_ensemble`),
then writes the model file and prints a summary: classes, genes, validation macro F1 and
accuracy, temperature. Genes: all of the file by default; ``--genes FILE`` (one name per
line, ``#`` comments), or ``--n-genes N`` of the highest mean (``expressed``, the default)
or variance (``variable``) of the (1e4, log1p)-normalised expression over all cells.

``predict`` writes to ``DIR``: ``probabilities.csv`` (cells x all classes),
``annotated.h5ad`` (the input with ``obs['tabular_label']``, ``['tabular_confidence']``
(``['tabular_uncertainty']`` for an ensemble) and ``obsm['tabular_proba']``),
``predicted_counts.png`` (cells per predicted label) and ``probabilities_pca.png`` (the
probabilities' first two principal components, coloured by prediction); with
``--label-key`` (the true labels) also ``report.csv`` (per-class precision, recall, F1
and support, scored with scTab's ontology rule by :func:`scprint.tabular.evaluate`) and
``confusion.png``. It prints how the model's genes were found in the input.

``explain`` writes ``DIR/top_genes.csv`` (class, rank, gene, symbol, score: the mean
attribution over the cells of the class, true classes with ``--label-key`` else
predicted) and ``DIR/top_genes.png`` (bar plots of the first 12 classes).

Every file is written atomically, and a command writes all its files or none. Existing
outputs are kept unless ``--overwrite``. Bad input (a missing or unreadable file, a file
that is not a tabular model, a missing label column, log-normalised counts...) ends with
exit code 2 and a one-line ``error: ...`` on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdataloader.cli_utils import fraction as _fraction
from scdataloader.cli_utils import one_line as _one_line
from scdataloader.cli_utils import positive_int as _positive_int

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

PREDICT_FILES = ("probabilities.csv", "annotated.h5ad", "predicted_counts.png",
                 "probabilities_pca.png")  # fmt: skip
REPORT_FILES = ("report.csv", "confusion.png")
EXPLAIN_FILES = ("top_genes.csv", "top_genes.png")
_SYMBOL_COLUMNS = ("feature_name", "symbol", "gene_symbols", "gene_name")
_MAX_PLOTTED_CLASSES = 12


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adata", required=True, help="input AnnData (.h5ad or .zarr), raw counts")
    p.add_argument("--layer", default=None, help="layer with the raw counts (default X)")
    p.add_argument("--gene-key", default=None, help="var column with the gene names")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="cells per batch (fit: 128, predict / explain: 512 / 256)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def build_parser(prog: str = "scprint tabular") -> argparse.ArgumentParser:
    """The parser of ``scprint tabular`` (one sub-command per step)."""
    from .api import PRESETS

    parser = argparse.ArgumentParser(prog=prog, description="Tabular cell-type classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a classifier on labelled cells")
    _common(p)
    p.add_argument("--label-key", required=True, help="obs column of the labels")
    p.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    p.add_argument("--model", choices=PRESETS, default="tabnet", help="preset (default tabnet)")
    p.add_argument("--donor-key", default=None,
                   help="obs column of donors: validation split by donor")  # fmt: skip
    genes = p.add_mutually_exclusive_group()
    genes.add_argument("--genes", default=None, help="file with one model gene per line")
    genes.add_argument("--n-genes", type=_positive_int, default=None,
                       help="use the N genes of highest --gene-selection")  # fmt: skip
    p.add_argument("--gene-selection", choices=("expressed", "variable"), default="expressed",
                   help="with --n-genes: highest mean (expressed) or variance (variable) of "
                   "the normalised expression")  # fmt: skip
    p.add_argument("--val-size", type=float, default=0.2, help="validation fraction")
    p.add_argument("--max-epochs", type=_positive_int, default=100, help="training epochs")
    p.add_argument("--patience", type=_positive_int, default=4, help="early-stopping epochs")
    p.add_argument("--seed", type=int, default=0, help="seed (members: seed, seed+1, ...)")
    p.add_argument("--ensemble", type=_positive_int, default=1,
                   help="train N models differing by seed (deep ensemble)")  # fmt: skip
    p.add_argument("--augment", action="store_true",
                   help="scTab's donor-difference augmentation of the training cells")  # fmt: skip
    p.add_argument("--augment-key", default=None,
                   help="obs column of the donors of --augment (default --donor-key)")  # fmt: skip
    p.add_argument("--augment-prob", type=_fraction, default=1.0,
                   help="fraction of training cells augmented (scTab: 1)")  # fmt: skip
    p.add_argument("--no-calibrate", action="store_true", help="keep the temperature at 1")
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after early stopping, retrain on training + validation cells "
        "(default: the preset's choice; linear refits)",
    )
    p.add_argument("--accelerator", default="auto", help="auto, cpu, gpu or mps")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("predict", help="probabilities, labels, plots (and a report)")
    _common(p)
    p.add_argument("--model", required=True, help="model file written by fit")
    p.add_argument("--out-dir", required=True, help="folder of the outputs")
    p.add_argument("--threshold", type=_fraction, default=None,
                   help="label 'unknown' below this probability")  # fmt: skip
    p.add_argument("--label-key", default=None,
                   help="obs column of the true labels: write a report")  # fmt: skip
    p.add_argument("--key-added", default="tabular", help="prefix of the obs / obsm keys")
    p.add_argument("--no-ontology", action="store_true",
                   help="report exact matches only (no Cell Ontology subtypes)")  # fmt: skip

    p = sub.add_parser("explain", help="top genes of each class")
    _common(p)
    p.add_argument("--model", required=True, help="model file written by fit")
    p.add_argument("--out-dir", required=True, help="folder of the outputs")
    p.add_argument("--label-key", default=None,
                   help="group cells by this obs column (default: predicted class)")  # fmt: skip
    p.add_argument("--n", type=_positive_int, default=20, help="genes per class")
    return parser


# --------------------------------------------------------------------------- outputs


def _check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    from scdataloader.errors import InputError

    for path in paths:
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a file path.")
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it.")


def _write_all(writers: dict[Path, Callable[[Path], None]]) -> list[Path]:
    """Write every file to a temporary path, then move them all in place (all or none)."""
    from scdataloader.io import atomic_path

    with contextlib.ExitStack() as stack:
        for path, write in writers.items():
            write(stack.enter_context(atomic_path(path)))
    return list(writers)


def _csv(frame: pd.DataFrame, **kwargs) -> Callable[[Path], None]:
    return lambda tmp: frame.to_csv(tmp, **kwargs)


def _png(fig) -> Callable[[Path], None]:
    return lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------- helpers


def _read(path: str):
    from scdataloader.io import read_anndata

    return read_anndata(path)


def _select_genes(adata, args) -> list[str] | None:
    """The model genes asked for on the command line (None: all genes of the file)."""
    from scdataloader.errors import InputError

    if args.genes is not None:
        path = Path(args.genes)
        if not path.is_file():
            raise InputError(f"{path}: no such gene file.")
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        genes = list(dict.fromkeys(g for g in lines if g))
        if not genes:
            raise InputError(f"{path}: no gene names in the file.")
        return genes
    if args.n_genes is None:
        return None
    from .augment import normalize_log1p

    X = normalize_log1p(adata, layer=args.layer)  # (cells, genes) CSR, raises on non-counts
    mean = np.asarray(X.mean(0)).ravel()
    score = mean
    if args.gene_selection == "variable":
        score = np.asarray(X.multiply(X).mean(0)).ravel() - mean**2
    order = np.argsort(-score, kind="stable")[: args.n_genes]
    names = adata.var[args.gene_key] if args.gene_key else adata.var_names
    return [str(g) for g in np.asarray(names)[order]]


def _members(model) -> list:
    return list(getattr(model, "classifiers", [model]))


def _validation_scores(clf, adata, label_key: str, args) -> None:
    """Macro F1 and accuracy of the kept model on its validation cells (in provenance)."""
    from sklearn.metrics import accuracy_score, f1_score

    rows = np.asarray(getattr(clf, "val_rows", []), dtype=np.int64)
    if rows.size == 0:
        return
    truth = adata.obs[label_key].astype(str).to_numpy()[rows]
    pred = clf.predict(adata[rows], layer=args.layer, gene_key=args.gene_key).to_numpy()
    pred = pred.astype(str)
    labels = np.unique(truth)
    clf.provenance["val_macro_f1"] = float(
        f1_score(truth, pred, labels=labels, average="macro", zero_division=0)
    )
    clf.provenance["val_accuracy"] = float(accuracy_score(truth, pred))


def _load_model(path: str):
    from .api import load_model

    return load_model(path)


def _gene_report(model) -> list[str]:
    reports = [c.last_alignment.report() for c in _members(model) if c.last_alignment]
    return list(dict.fromkeys(reports))


def _symbols(adata, genes: Sequence[str]) -> list[str]:
    """Gene symbol of each model gene from the input's var ("" when unknown)."""
    from scdataloader.genes import strip_version

    column = next((c for c in _SYMBOL_COLUMNS if c in adata.var), None)
    if column is None:
        return [""] * len(genes)
    symbols = adata.var[column].astype(str).to_numpy()
    by_id = dict(zip(strip_version(np.asarray(adata.var_names)), symbols, strict=True))
    known = set(symbols)
    return [by_id.get(g, g if g in known else "") for g in strip_version(np.asarray(genes))]


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _counts_plot(labels: pd.Series):
    counts = labels.value_counts().sort_values()
    fig = _figure(7, 1.2 + 0.28 * len(counts))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(counts)), counts.to_numpy(), color="tab:blue")
    ax.set_yticks(np.arange(len(counts)), [str(i) for i in counts.index], fontsize=8)
    ax.set_xlabel("cells")
    ax.set_title(f"predicted labels ({len(labels)} cells)")
    return fig


def _pca_plot(proba: pd.DataFrame, labels: pd.Series):
    values = proba.to_numpy(dtype=np.float64)  # (cells, classes)
    centred = values - values.mean(0)
    if len(values) >= 2 and values.shape[1] >= 2:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        xy = u[:, :2] * s[:2]  # (cells, 2)
    else:
        xy = np.zeros((len(values), 2))
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot()
    cmap = _colormap()
    for k, name in enumerate(sorted(pd.unique(labels.astype(str)))):
        where = labels.astype(str).to_numpy() == name
        color = "lightgrey" if name == "unknown" else cmap(k % 20)
        ax.scatter(xy[where, 0], xy[where, 1], s=6, color=color, label=name)
    ax.set_xlabel("PC1 of the probabilities")
    ax.set_ylabel("PC2")
    ax.set_title("cells coloured by predicted label")
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def _colormap():
    from matplotlib import colormaps

    return colormaps["tab20"]


def _confusion_plot(truth: np.ndarray, pred: np.ndarray):
    rows = sorted(pd.unique(truth))
    cols = sorted(set(pd.unique(pred)) | set(rows))
    table = pd.crosstab(pd.Categorical(truth, rows), pd.Categorical(pred, cols), dropna=False)
    frac = table.to_numpy() / np.maximum(table.to_numpy().sum(1, keepdims=True), 1)
    fig = _figure(2.5 + 0.35 * len(cols), 2 + 0.3 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (fraction of each true label)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _top_genes_plot(table: pd.DataFrame, n_shown: int = 10):
    classes = list(dict.fromkeys(table["class"]))[:_MAX_PLOTTED_CLASSES]
    n_cols = min(3, max(len(classes), 1))
    n_rows = max(1, -(-len(classes) // n_cols))
    fig = _figure(4.2 * n_cols, 0.5 + 0.22 * n_shown * n_rows + 0.6 * n_rows)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel()[len(classes) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), classes, strict=False):
        rows = table[table["class"] == name].head(n_shown)[::-1]
        names = [s or g for g, s in zip(rows["gene"], rows["symbol"], strict=True)]
        ax.barh(np.arange(len(rows)), rows["score"].to_numpy(), color="tab:green")
        ax.set_yticks(np.arange(len(rows)), names, fontsize=7)
        ax.set_title(str(name), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("top genes by mean attribution")
    return fig


# --------------------------------------------------------------------------- commands


def _fit(args) -> int:
    from scdataloader.errors import InputError

    from .api import fit, fit_ensemble
    from .data import labels_of

    out = Path(args.out)
    _check_outputs([out], args.overwrite)
    adata = _read(args.adata)
    labels_of(adata.obs, args.label_key)  # clear error before any work
    if args.donor_key is not None:
        labels_of(adata.obs, args.donor_key)
    if args.augment and (args.augment_key or args.donor_key) is None:
        raise InputError("--augment needs the donors: pass --donor-key or --augment-key")
    genes = _select_genes(adata, args)
    kwargs = dict(
        label_key=args.label_key,
        model=args.model,
        layer=args.layer,
        genes=genes,
        gene_key=args.gene_key,
        val_size=args.val_size,
        donor_key=args.donor_key,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size or 128,
        patience=args.patience,
        accelerator=args.accelerator,
        progress=not args.no_progress,
        calibrate=not args.no_calibrate,
        augment="donor" if args.augment else None,
        augment_key=args.augment_key,
        augment_prob=args.augment_prob,
        refit=args.refit,
    )
    if args.ensemble > 1:
        seeds = list(range(args.seed, args.seed + args.ensemble))
        model = fit_ensemble(adata, n_models=args.ensemble, seeds=seeds, **kwargs)
    else:
        model = fit(adata, seed=args.seed, **kwargs)
    members = _members(model)
    for clf in members:
        _validation_scores(clf, adata, args.label_key, args)
        if genes is not None and args.n_genes is not None:
            clf.provenance["gene_selection"] = f"{args.n_genes} most {args.gene_selection}"
    _write_all({out: lambda tmp: model.save(tmp)})
    first = members[0]
    kind = f"{args.model}" + (f", ensemble of {len(members)}" if len(members) > 1 else "")
    classes = first.classes
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    print(f"model: {kind}")
    print(f"classes ({len(classes)}): {shown}")
    how = "all genes of the input"
    if args.genes:
        how = f"from {args.genes}"
    elif args.n_genes:
        how = f"the most {args.gene_selection}"
    print(f"genes: {len(first.genes)} ({how})")
    for k, clf in enumerate(members):
        p = clf.provenance
        head = f"member {k} (seed {p['seed']}): " if len(members) > 1 else ""
        f1, acc = p.get("val_macro_f1"), p.get("val_accuracy")
        scores = (
            f"validation macro F1 {f1:.3f}, accuracy {acc:.3f}"
            if f1 is not None
            else "no validation cells"
        )
        print(
            f"{head}{p['n_train']} training / {p['n_val']} validation cells ({p['split']} "
            f"split), {p['epochs']} epochs; {scores}; temperature {clf.temperature:.3g}"
        )
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _predict(args) -> int:
    from scdataloader.errors import InputError

    from .data import labels_of
    from .evaluate import evaluate

    out_dir = Path(args.out_dir)
    names = PREDICT_FILES + (REPORT_FILES if args.label_key else ())
    _check_outputs([out_dir / n for n in names], args.overwrite)
    model = _load_model(args.model)
    adata = _read(args.adata)
    truth = None
    if args.label_key is not None:
        truth = labels_of(adata.obs, args.label_key)
    key = args.key_added
    model.annotate(
        adata,
        key_added=key,
        threshold=args.threshold,
        layer=args.layer,
        gene_key=args.gene_key,
        batch_size=args.batch_size or 512,
    )
    for line in _gene_report(model):
        print(f"genes: {line}")
    proba = adata.obsm[f"{key}_proba"]
    labels = adata.obs[f"{key}_label"].astype(str)
    writers = {
        out_dir / "probabilities.csv": _csv(proba, index_label="cell"),
        out_dir / "annotated.h5ad": lambda tmp: adata.write_h5ad(tmp),
        out_dir / "predicted_counts.png": _png(_counts_plot(labels)),
        out_dir / "probabilities_pca.png": _png(_pca_plot(proba, labels)),
    }
    if truth is not None:
        known = truth.notna().to_numpy()
        try:
            report = evaluate(
                truth[known].to_numpy(),
                labels[known].to_numpy(),
                ontology_aware=not args.no_ontology,
            )
        except ValueError as e:
            raise InputError(f"--label-key {args.label_key}: {e}") from e
        table = report.per_class.copy()
        table.loc["macro avg"] = [
            table["precision"].mean(),
            table["recall"].mean(),
            report.macro_f1,
            report.n,
        ]
        table["support"] = table["support"].astype(int)
        writers[out_dir / "report.csv"] = _csv(table, index_label="label")
        writers[out_dir / "confusion.png"] = _png(
            _confusion_plot(truth[known].to_numpy(dtype=str), labels[known].to_numpy(dtype=str))
        )
        rule = "exact labels" if args.no_ontology else "ontology-aware"
        print(
            f"{report.n} labelled cells ({rule}, {report.n_corrected} subtype predictions "
            f"counted right): accuracy {report.accuracy:.3f}, macro F1 {report.macro_f1:.3f}"
        )
    counts = labels.value_counts()
    print(f"{len(labels)} cells: " + ", ".join(f"{k} {v}" for k, v in counts.head(8).items()))
    for path in _write_all(writers):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _explain(args) -> int:
    from .data import labels_of

    out_dir = Path(args.out_dir)
    _check_outputs([out_dir / n for n in EXPLAIN_FILES], args.overwrite)
    model = _load_model(args.model)
    adata = _read(args.adata)
    if args.label_key is not None:
        labels_of(adata.obs, args.label_key)
    means = model.class_attributions(
        adata,
        label_key=args.label_key,
        layer=args.layer,
        gene_key=args.gene_key,
        batch_size=args.batch_size or 256,
    )  # (classes, genes)
    for line in _gene_report(model):
        print(f"genes: {line}")
    genes = means.columns.to_numpy()
    symbol_of = dict(zip(genes, _symbols(adata, genes), strict=True))
    rows = []
    for name, row in means.iterrows():
        values = row.to_numpy()
        order = np.argsort(-values, kind="stable")[: args.n]
        order = order[values[order] > 0]
        for rank, j in enumerate(order, start=1):
            rows.append((str(name), rank, str(genes[j]), symbol_of[genes[j]], float(values[j])))
    table = pd.DataFrame(rows, columns=["class", "rank", "gene", "symbol", "score"])
    if len(means) > _MAX_PLOTTED_CLASSES:
        logger.warning(
            "top_genes.png shows %d of %d classes (all are in top_genes.csv)",
            _MAX_PLOTTED_CLASSES,
            len(means),
        )
    writers = {
        out_dir / "top_genes.csv": _csv(table, index=False),
        out_dir / "top_genes.png": _png(_top_genes_plot(table)),
    }
    group = f"true labels of {args.label_key!r}" if args.label_key else "predicted class"
    print(f"{len(means)} classes (cells grouped by {group}), up to {args.n} genes each")
    for path in _write_all(writers):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``scprint tabular`` command; returns the exit code (0 ok, 2 bad input).

    Parameters
    ----------
    argv
        The arguments after ``tabular``, the command first (default ``sys.argv[1:]``).
    """
    from scdataloader.errors import InputError

    from ..checkpoint import CheckpointError

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # Lightning's hardware / tip messages
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    run = {"fit": _fit, "predict": _predict, "explain": _explain}[args.command]
    try:
        return run(args)
    except (InputError, CheckpointError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
