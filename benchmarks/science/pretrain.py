"""Pretrain the science model: the ``small`` preset on every real count data set we have.

The scPRINT paper pretrains on many data sets at once with inputs padded by unexpressed
genes ("combined with the denoising loss, let scPRINT discriminate the true zeros from
dropouts"). This script does the same at CPU scale, on every real count data set of the
shared data folder minus the held-out cells of ``benchmarks/science/splits.py``, so that
the other science benchmarks can score the model on cells it never saw:

* ``retina``: the 1,000-cell CELLxGENE retina file (``scdataloader.datasets.fetch``),
  human, with its ontology columns; label: ``cell_type_ontology_term_id``;
* ``wu2020``: 200 human T cells (gene symbols); label: the T-cell subtype ``cluster_orig``
  (a plain, non-ontology column: the data layer takes it as a flat label);
* ``mouse``: 10,000 mouse 10x cells of 1,000 genes, no labels;
* ``mcalla``: the McCalla et al. hESC cells (genes x cells, ``log2(x + 1)`` applied twice),
  counts recovered exactly by ``scdataloader.preprocess(recover_counts=True)``.

Each training split is run through ``scdataloader.preprocess`` (count validation, QC,
gene mapping to Ensembl ids) and written as an ``.h5ad`` into ``--work``; the files form
one ``scdataloader.Collection`` and ``scdataloader.DataModule`` (collator "random expr"
with ``--zero-genes`` of the ``--max-len`` positions given to unexpressed genes; weighted
sampling over the combinations of data set and labels, which balances the data sets).
``scprint.train.ScPrintModule`` is trained with Lightning on the CPU.

Outputs, beside ``--out`` (default ``splits.science_checkpoint()``): ``model.ckpt``
(written atomically), ``provenance.json`` (command line, data sha256s and cell counts,
held-out counts, hyperparameters, steps, wall time, losses per epoch, versions, machine)
and ``held_out.json`` (the held-out ``obs_names`` of each data set).

``--measure N`` trains N steps only and prints the time per step (to choose ``--steps``
and ``--max-len`` for a time budget); nothing is written but the work files.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/science/pretrain.py --steps 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import splits  # noqa: E402
from common import sha256 as _sha256  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
HUMAN, MOUSE = "NCBITaxon:9606", "NCBITaxon:10090"
CELL_TYPE, TCELL = "cell_type_ontology_term_id", "cluster_orig"
DATASET = "dataset"  # obs column naming each cell's data set, for the sampling weights
LABEL_KEYS = [CELL_TYPE, TCELL]
DATASETS = ("retina", "wu2020", "mouse", "mcalla")


# ----------------------------------------------------------------------------- data


def load_raw(name: str, data_dir: Path):
    """(AnnData as shipped, source file, preprocess options) of one data set."""
    import anndata as ad

    if name == "retina":
        from scdataloader.datasets import fetch

        path = Path(fetch("retina"))
        return ad.read_h5ad(path), path, {}
    if name == "wu2020":
        path = data_dir / "wu2020_tcells_200.h5ad"
        adata = ad.read_h5ad(_need(path))
        adata.obs[CELL_TYPE] = "unknown"
        # 100 training cells: the default QC minimum of 100 cells would drop the data set
        return adata, path, {"organism": "human", "min_cells": 50}
    if name == "mouse":
        path = data_dir / "mouse_10x_10k.zarr"
        adata = ad.read_zarr(_need(path))
        # 1,000 measured genes: too few for the QC defaults (10,000 genes, 200 per cell)
        opts = {"organism": "mouse", "gene_key": "gene_ids", "min_genes": 500}
        return adata, path, opts | {"min_genes_per_cell": 50}
    if name == "mcalla":
        path = data_dir / "networks" / "mcalla_hesc" / "chen_rna_filtered_log2.tsv.gz"
        log2 = pd.read_csv(_need(path), sep="\t", index_col=0)
        adata = ad.AnnData(
            log2.to_numpy(np.float32).T,
            obs=pd.DataFrame(index=log2.columns.astype(str)),
            var=pd.DataFrame(index=log2.index.astype(str)),
        )
        # 8,595 genes: below the QC default of 10,000 mapped genes
        return adata, path, {"organism": "human", "recover_counts": True, "min_genes": 5000}
    raise ValueError(f"Unknown data set {name!r}; choose from {DATASETS}.")


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: pass --data-dir, the folder of the shared real data "
            "(wu2020_tcells_200.h5ad, mouse_10x_10k.zarr, networks/mcalla_hesc/)."
        )
    return path


def write_training_files(names, data_dir: Path, work: Path, seed: int):
    """Preprocess each data set's training cells into ``work``; return the paths, the
    per-data-set summary and the held-out obs_names."""

    from scdataloader import preprocess
    from scdataloader.io import atomic_path

    paths, summary, held = [], {}, {}
    for name in names:
        adata, source, opts = load_raw(name, data_dir)
        adata.var_names_make_unique()
        test = splits.held_out(name, adata.obs, seed=seed)
        held[name] = adata.obs_names[test].astype(str).tolist()
        train = adata[~test].copy()
        for key in LABEL_KEYS:
            if key not in train.obs:
                train.obs[key] = "unknown"
            train.obs[key] = train.obs[key].astype(str)
        train.obs[DATASET] = name
        if "organism_ontology_term_id" not in train.obs:
            train.obs["organism_ontology_term_id"] = MOUSE if name == "mouse" else HUMAN
        out = preprocess(train, **opts, keep_obs=[*LABEL_KEYS, DATASET])
        path = work / f"{name}.h5ad"
        with atomic_path(path) as tmp:
            out.write_h5ad(tmp)
        paths.append(path)
        qc = out.uns["preprocess"]
        summary[name] = {
            "source": source.name,
            "source_sha256": _sha256(source),
            "cells": int(adata.n_obs),
            "held_out": int(test.sum()),
            "training_cells_before_qc": int((~test).sum()),
            "training_cells": int(out.n_obs),
            "genes": int(out.n_vars),
            "organism": str(out.uns["organism"]),
            "recovered_counts": bool(qc.get("recovered_counts", False)),
            "preprocess": {k: v for k, v in opts.items() if k != "organism"},
            "training_file_sha256": _sha256(path),
        }
        print(
            f"{name}: {adata.n_obs} cells, {int(test.sum())} held out, "
            f"{out.n_obs} training cells after QC x {out.n_vars} genes",
            flush=True,
        )
    return paths, summary, held


# ----------------------------------------------------------------------------- training


def write_gene_table(paths, work: Path, args) -> Path | None:
    """The expression gene table of the training cells (``--gene-table expression``), or
    None for a learned table."""
    if args.gene_table == "learned":
        return None
    import anndata as ad

    from scprint.gene_embeddings import expression_gene_embeddings, write_gene_embeddings

    t0 = time.perf_counter()
    table = expression_gene_embeddings(
        [ad.read_h5ad(p) for p in paths],
        n_components=args.table_components,
        n_identity=args.table_identity,
        seed=args.seed,
    )
    path = work / "gene_table.parquet"
    write_gene_embeddings(table, path)
    print(
        f"gene table: {table.shape[0]:,} genes x {table.shape[1]} columns from "
        f"{table.attrs['cells']:,} training cells in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return path


def build(paths, args, gene_table: Path | None = None):
    from scdataloader import Collection, DataModule
    from scprint.train import ScPrintModule

    collection = Collection([str(p) for p in paths], obs_keys=[*LABEL_KEYS, DATASET])
    dm = DataModule(
        collection,
        label_keys=LABEL_KEYS,
        weight_keys=[DATASET, *LABEL_KEYS],
        scale=args.scale,
        batch_size=args.batch_size,
        val_size=args.val_size,
        train_samples=args.batch_size * args.steps_per_epoch,
        mode="random expr",
        max_len=args.max_len,
        zero_genes=args.zero_genes,
        seed=args.seed,
    )
    module = ScPrintModule(
        dm.genes,
        dm.hierarchies,
        dm.label_keys,
        preset=args.preset,
        lr=args.lr,
        warmup_steps=args.warmup,
        noise=args.noise,
        gene_embeddings=None if gene_table is None else str(gene_table),
        normalize_input=args.normalize_input,
        class_weight=args.class_weight,
    )
    if args.init_from:
        import scprint

        start = scprint.load(args.init_from)
        if list(start.genes) != list(module.genes) or start.config != module.config:
            raise SystemExit(
                f"--init-from {args.init_from}: its genes or architecture differ from this "
                "run's; start from a checkpoint of the same data sets, preset and options."
            )
        module.load_state_dict(start.state_dict())
        print(f"initialised from {args.init_from}", flush=True)
    return dm, module


def _lineage(init_from, steps: int) -> dict:
    """Where an ``--init-from`` run started: the checkpoint's sha256 and the
    ``provenance.json`` beside it (nested, so a chain of phases keeps every command), and
    the optimiser steps of the whole chain."""
    if not init_from:
        return {"init": None, "total_steps": steps}
    path = Path(init_from)
    parent = _read_provenance(path)
    before = _chain_steps(parent)
    return {
        "init": {"path": str(path), "sha256": _sha256(path), "provenance": parent},
        "total_steps": None if before is None else int(before) + steps,
    }


def _read_provenance(ckpt: Path) -> dict | None:
    meta = Path(ckpt).parent / "provenance.json"
    return json.loads(meta.read_text()) if meta.exists() else None


def _chain_steps(prov: dict | None) -> int | None:
    """Optimiser steps of a checkpoint and every phase it started from (None if a phase's
    provenance is missing); older provenance files name their parent only by path."""
    if prov is None:
        return None
    if "total_steps" in prov:
        return prov["total_steps"]
    parent = (prov.get("hyperparameters") or {}).get("init_from")
    if not parent:
        return int(prov["steps"])
    before = _chain_steps(_read_provenance(Path(parent)))
    return None if before is None else before + int(prov["steps"])


def _epoch_printer():
    import lightning.pytorch as pl

    class EpochLosses(pl.Callback):
        """Print and keep the training and validation losses of each sub-epoch."""

        def __init__(self):
            self.history: list[dict] = []
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            row = {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "seconds": round(time.perf_counter() - self.t0, 1),
                **{k: round(v, 4) for k, v in sorted(m.items())},
            }
            self.history.append(row)
            print(
                f"epoch {row['epoch']} step {row['step']} {row['seconds']:.0f}s "
                + " ".join(f"{k} {v:.3f}" for k, v in sorted(m.items())),
                flush=True,
            )

    return EpochLosses()


def train(args) -> None:
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / "work"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    paths, summary, held = write_training_files(
        args.datasets, Path(args.data_dir), work, args.seed
    )
    gene_table = write_gene_table(paths, work, args)
    dm, module = build(paths, args, gene_table)
    pl.seed_everything(args.seed, verbose=False)
    n_params = sum(p.numel() for p in module.parameters())
    print(
        f"model: {args.preset} preset, {n_params:,} parameters, {len(dm.genes):,} genes; "
        f"{len(dm.train_idx)} training / {len(dm.val_idx)} validation cells",
        flush=True,
    )
    steps = args.measure or args.steps
    epochs = max(1, -(-steps // args.steps_per_epoch))
    printer = _epoch_printer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        max_steps=steps,
        accelerator=args.accelerator,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        limit_val_batches=args.val_batches,
        num_sanity_val_steps=0,
        gradient_clip_val=100,
        max_time={"minutes": args.max_minutes} if args.max_minutes else None,
        callbacks=[printer],
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_s = time.perf_counter() - t0
    tokens = trainer.global_step * args.batch_size * args.max_len
    print(
        f"trained {trainer.global_step} steps in {fit_s:.0f} s "
        f"({fit_s / max(trainer.global_step, 1):.2f} s/step, {tokens / fit_s:.0f} tokens/s)",
        flush=True,
    )
    if args.measure:
        return
    from scdataloader.io import atomic_path

    with atomic_path(out) as tmp:
        trainer.save_checkpoint(tmp)
    import lightning

    provenance = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "datasets": summary,
        "training_cells": int(len(dm.train_idx)),
        "validation_cells": int(len(dm.val_idx)),
        "held_out_total": int(sum(len(v) for v in held.values())),
        "hyperparameters": {
            "preset": args.preset,
            "accelerator": args.accelerator,
            "precision": args.precision,
            "parameters": int(n_params),
            "genes": int(len(dm.genes)),
            "label_keys": LABEL_KEYS,
            "weight_keys": [DATASET, *LABEL_KEYS],
            "collator": dm.collator_options,
            **{
                k: getattr(args, k)
                for k in (
                    "seed",
                    "batch_size",
                    "max_len",
                    "zero_genes",
                    "steps",
                    "steps_per_epoch",
                    "lr",
                    "warmup",
                    "noise",
                    "scale",
                    "val_size",
                    "val_batches",
                    "threads",
                    "max_minutes",
                    "gene_table",
                    "table_components",
                    "table_identity",
                    "normalize_input",
                    "class_weight",
                    "init_from",
                )
            },
            "gene_table_sha256": None if gene_table is None else _sha256(gene_table),
        },
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        **_lineage(args.init_from, int(trainer.global_step)),
        "fit_seconds": round(fit_s, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "tokens_per_second": round(tokens / fit_s, 1),
        "final_losses": {k: round(v, 4) for k, v in module.last_losses.items()},
        "epochs_log": printer.history,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "numpy": np.__version__,
        },
        "machine": {
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
    }
    for name, obj in (("provenance.json", provenance), ("held_out.json", held)):
        with atomic_path(out.parent / name) as tmp:
            Path(tmp).write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {out} and provenance.json, held_out.json beside it", flush=True)
    print(json.dumps({k: provenance[k] for k in ("steps", "wall_seconds", "final_losses")}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the shared real data")
    p.add_argument("--out", default=str(splits.science_checkpoint()))
    p.add_argument("--work", default=None, help="training files (default: beside --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--preset", default="small", choices=["debug", "small", "medium", "large"],
                   help="model size (medium and large want a GPU)")  # fmt: skip
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    p.add_argument(
        "--precision", default="32", help="Lightning precision, e.g. bf16-mixed on a GPU"
    )
    p.add_argument("--max-len", type=int, default=512, help="genes per sequence")
    p.add_argument("--zero-genes", type=int, default=128, help="unexpressed genes of them")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=600, help="optimiser steps in all")
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.6, help="denoising loss: share dropped")
    p.add_argument("--scale", type=float, default=50.0, help="sampling weight s/(n+s)")
    p.add_argument("--val-size", type=float, default=0.02)
    p.add_argument("--val-batches", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    p.add_argument(
        "--gene-table",
        default="expression",
        choices=["expression", "learned"],
        help="frozen gene table from the training cells' principal components "
        "(scprint.gene_embeddings.expression_gene_embeddings), or a learned random one",
    )
    p.add_argument("--table-components", type=int, default=32)
    p.add_argument("--table-identity", type=int, default=16)
    p.add_argument(
        "--normalize-input",
        action="store_true",
        help="encode counts scaled to 10,000 per sequence (the reference code's choice)",
    )
    p.add_argument("--class-weight", type=float, default=10.0, help="classification losses")
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CKPT",
        help="start from this checkpoint's weights (same data, preset and options), e.g. to "
        "continue with another --class-weight; optimiser and schedule start afresh",
    )
    p.add_argument("--measure", type=int, default=0, help="only time this many steps")
    args = p.parse_args(argv)
    for k in ("max_len", "batch_size", "steps", "steps_per_epoch", "threads"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
