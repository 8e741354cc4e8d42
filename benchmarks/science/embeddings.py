"""The scPRINT paper's embedding benchmark (scIB scores) on the Wu et al. 2020 T cells.

Run from the repository root (``bash benchmarks/science/setup_scib.sh`` first installs
scib-metrics and harmonypy in ``~/.cache/scib-venv``; ``bash
benchmarks/science/setup_peers.sh`` installs scVI in ``~/.cache/science-peers-venv``;
without them the scores, or the scVI row, say why they did not run)::

    .venv/bin/python benchmarks/science/embeddings.py

Protocol (the paper's "scPRINT is competitive on tasks orthogonal to GN inference",
Figure 4C-D and Supp Figures S6-S7, and Methods, "Other evaluation metrics"):

* Data: ``wu2020_tcells_200.h5ad`` of the shared data folder (``--data``; by default
  ``../shared/data/`` beside the repository, as the tests find it): 200 human T cells of
  14 patients (Wu et al. 2020, the ``scirpy`` test file), raw UMI counts, 30,727 gene
  symbols. Labels: the 16 T-cell subtypes ``obs["cluster_orig"]``; batch:
  ``obs["patient"]``.
* The retina cells (``scdataloader.datasets.fetch("retina")``) are not used: every cell
  comes from one donor, one biosample and one assay (checked at run time and printed),
  so there is no batch to correct.
* Cells: ``benchmarks/science/splits.py::held_out("wu2020", obs)`` holds out whole
  patients (118 cells of 8 patients, seed 0), which the science model was not pretrained
  on. Table 1 scores every method on these cells; table 2 on all 200 cells, of which the
  science model saw the 82 others (their counts and their ``cluster_orig`` labels, a
  class of its pretraining), which favours it there. The demo model never saw a T cell.
* Embeddings, each method on the cells of the table (the peers fitted on those cells, as
  scIB does; ours zero shot, cell by cell):

  - ``scprint``: ``scprint.tasks.embed`` (``max_len`` 2,200 genes, ``"random expr"``),
    with ``--ckpt`` (default ``splits.science_checkpoint()``; ``--demo``, or a missing
    science model with a printed note: the demo's debug model, pretrained on the retina
    cells only). The tables say how many of their cells the model was pretrained on
    (from ``held_out.json`` beside the checkpoint). One row per embedding the model
    gives: the default (general) cell embedding ``X_scprint``; each class token's
    embedding (``scprint:<class>``, the paper's "deconvolved" embeddings, Figure 4C-D);
    each classifier's logits (``scprint:<class> logits``, which the paper finds remove
    more batch effect, Supp Figure S6); the mean of the expressed genes' last-layer
    tokens (``scprint:gene_mean``, ``embed(..., gene_mean=True)``). The paper does not
    say which of them its scIB figures use, so all are scored;
  - ``pca``: the unintegrated baseline: the ``--n-hvg`` (2,000) most variable genes
    (scanpy ``highly_variable_genes(flavor="seurat")`` after ``normalize_total(1e4)``
    and ``log1p``) of the table's cells, ``--n-pcs`` (50) principal components;
  - ``scvi``: scvi-tools 1.4.2 ``SCVI`` on the counts of the same genes, ``batch_key
    "patient"``, ``n_latent`` 10, otherwise its defaults, ``max_epochs`` by scvi-tools'
    own rule for this many cells (400), seed ``--seed``; the latent mean;
  - ``harmony``: harmonypy's ``run_harmony`` on the ``pca`` embedding, batch
    ``patient``, its defaults, seed ``--seed`` (when harmonypy installed);
  - ``random``: standard normal vectors of dimension ``--n-pcs`` (seed ``--seed``), the
    lower bound.

* Metrics: scib-metrics 0.5.10 ``Benchmarker`` in one run over all embeddings of a
  table, its default metrics: bio conservation (isolated labels, KMeans NMI and ARI,
  silhouette label, cLISI) and batch correction (BRAS, the batch silhouette of 0.5.x;
  iLISI; kBET per label; graph connectivity; PCR comparison against the ``pca``
  embedding), the unscaled means per group and Total = 0.6 bio + 0.4 batch (scIB's
  weights; ``get_results(min_max_scale=False)``, so scores do not depend on which
  methods are in the table). Neighbours: exact Euclidean kNN (scikit-learn, the cell
  itself first) instead of pynndescent. scib-metrics uses three graphs, of 15, 50 and 90
  neighbours; 90 of 118 cells is most of the data, so the LISI graph (90) is lowered to
  ``--k-lisi`` (30: perplexity 10) and the kBET graph (50) to ``--k-kbet`` (30), the
  15-neighbour graph (graph connectivity) is kept. kBET per label skips labels with
  fewer than 10 cells or a single patient (scib-metrics' own rule): on the held-out
  cells it scores 7 of the 16 subtypes.

Diagnostic (not a scIB metric), column "depth R2": how well the embedding predicts each
cell's sequencing depth, the 5-fold cross-validated R^2 of a ridge regression of
log1p(total counts) on the standardised embedding. The patients' median depths differ
several-fold, so an embedding that carries depth also separates patients.

Each method runs in its own subprocess (ours and PCA with this interpreter, scVI with
``--peer-python``, Harmony and the scoring with ``--scib-python``) for its own wall time
and peak RSS: the child's own ``VmHWM`` (``/proc/self/status``), not the ``ru_maxrss``
that ``wait4`` reports (``benchmarks/train_throughput.py``), which on Linux is at least
the parent's peak at the fork (the high-water mark survives ``execve``); "fit" is the
time inside the child without imports and I/O (ours: embedding all 200 cells once, the
tables take their rows). Options: ``--tables``, ``--methods``,
``--threads`` (per child, default 1), ``--seed``, ``--out`` (JSON lines, default
``benchmarks/results/science_embeddings.jsonl``), ``--work`` (keep the embeddings: one
``embeddings_<table>.npz`` per table and the scores as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import append_records, own_peak_rss_mb  # noqa: E402
from common import fmt as _fmt  # noqa: E402
from common import load_file_module as _load_file_module  # noqa: E402
from common import package_version as _version  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "wu2020_tcells_200.h5ad"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "science_embeddings.jsonl"
DEFAULT_PEER_PYTHON = Path.home() / ".cache" / "science-peers-venv" / "bin" / "python"
DEFAULT_SCIB_PYTHON = Path.home() / ".cache" / "scib-venv" / "bin" / "python"
METHODS = ("scprint", "pca", "scvi", "harmony", "random")
TABLES = ("held_out", "all")
LABEL, BATCH = "cluster_orig", "patient"
PRE_INTEGRATED = "pca"
# scib-metrics' column names, by group, in its order
BIO = ("Isolated labels", "KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI")
BATCH_METRICS = ("BRAS", "iLISI", "KBET", "Graph connectivity", "PCR comparison")
AGGREGATES = ("Bio conservation", "Batch correction", "Total")


# --------------------------------------------------------------------------- children
# Each child reads ``cells_<table>.h5ad`` (raw counts of the table's cells and variable
# genes; ours: ``cells_scprint.h5ad``, all cells and genes) from the work folder, writes
# ``<method>_<table>.npz`` (embedding name -> cells x d) and returns a JSON-able dict of
# what it did.


def _child_scprint(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import numpy as np
    import torch

    import scprint
    from scprint.tasks import embed

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    adata = ad.read_h5ad(work / "cells_scprint.h5ad")
    t0 = time.perf_counter()
    model = scprint.load(args.ckpt)
    embed(adata, model, logits=True, gene_mean=True, batch_size=args.scprint_batch,
          progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    arrays = {}
    for key, value in adata.obsm.items():
        if not key.startswith("X_scprint"):
            continue
        rest = key[len("X_scprint") :].lstrip("_")
        if rest.endswith("_logits"):
            name = f"scprint:{rest[: -len('_logits')]} logits"
        else:
            name = f"scprint:{rest}" if rest else "scprint"
        arrays[name] = np.asarray(value, dtype=np.float32)
    np.savez(work / "scprint_all.npz", **arrays)
    return {
        "seconds": seconds,
        "version": f"ours {_version('scprint-suite')}",
        "embeddings": {k: v.shape[1] for k, v in arrays.items()},
        "classes": list(model.hierarchies),
        "params": {"max_len": 2200, "how": "random expr", "seed": args.seed},
    }


def _child_pca(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import numpy as np
    import scanpy as sc

    adata = ad.read_h5ad(work / f"cells_{args.table}.h5ad")
    t0 = time.perf_counter()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    n_pcs = min(args.n_pcs, adata.n_obs - 1, adata.n_vars - 1)
    sc.pp.pca(adata, n_comps=n_pcs, random_state=args.seed)
    seconds = time.perf_counter() - t0
    np.savez(work / f"pca_{args.table}.npz", pca=adata.obsm["X_pca"].astype(np.float32))
    return {
        "seconds": seconds,
        "version": f"scanpy {_version('scanpy')}",
        "params": {"n_comps": n_pcs, "genes": adata.n_vars},
    }


def _child_scvi(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import numpy as np
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(work / f"cells_{args.table}.h5ad")
    t0 = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata, batch_key=BATCH)
    model = scvi.model.SCVI(adata, n_latent=args.scvi_latent)
    # max_epochs=None: scvi-tools' own rule, min(round(20,000 / n_cells * 400), 400)
    model.train(max_epochs=None, accelerator="cpu", enable_progress_bar=False)
    latent = model.get_latent_representation()
    seconds = time.perf_counter() - t0
    np.savez(work / f"scvi_{args.table}.npz", scvi=np.asarray(latent, dtype=np.float32))
    history = model.history.get("elbo_train")
    return {
        "seconds": seconds,
        "version": f"scvi-tools {_version('scvi-tools')}",
        "params": {
            "batch_key": BATCH,
            "n_latent": model.module.n_latent,
            "epochs": int(len(history)) if history is not None else None,
            "genes": adata.n_vars,
        },
    }


def _child_harmony(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import harmonypy
    import numpy as np

    obs = ad.read_h5ad(work / f"cells_{args.table}.h5ad", backed="r").obs[[BATCH]].copy()
    pcs = np.load(work / f"pca_{args.table}.npz")["pca"].astype(np.float64)
    t0 = time.perf_counter()
    ho = harmonypy.run_harmony(pcs, obs, BATCH, random_state=args.seed, verbose=False,
                              ncores=args.threads)  # fmt: skip
    z = np.asarray(ho.Z_corr)
    seconds = time.perf_counter() - t0
    if z.shape != pcs.shape:  # harmonypy < 0.2 returns components x cells
        z = z.T
    if z.shape != pcs.shape:
        raise RuntimeError(f"harmonypy returned shape {z.shape}, expected {pcs.shape}.")
    np.savez(work / f"harmony_{args.table}.npz", harmony=z.astype(np.float32))
    return {
        "seconds": seconds,
        "version": f"harmonypy {_version('harmonypy')}",
        "params": {"batch_key": BATCH, "input": f"pca ({pcs.shape[1]} components)"},
    }


def _exact_neighbors(x, k: int):
    """scib-metrics ``NeighborsResults`` of the exact Euclidean kNN, the cell itself first."""
    import numpy as np
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float32)
    k = min(k, x.shape[0])
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return NeighborsResults(indices=idx, distances=dist)


def _child_score(work: Path, args: argparse.Namespace) -> dict:
    """All embeddings of one table through one scib-metrics ``Benchmarker`` run."""
    import anndata as ad
    import numpy as np
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    cells = ad.read_h5ad(work / f"cells_{args.table}.h5ad", backed="r")
    obs = cells.obs[[LABEL, BATCH]].astype(str).astype("category")
    store = np.load(work / f"embeddings_{args.table}.npz")
    keys = list(store.files)
    if PRE_INTEGRATED not in keys:
        raise RuntimeError(
            f"The {PRE_INTEGRATED!r} embedding is missing: PCR comparison needs the "
            "unintegrated PCA; run with --methods including pca."
        )
    adata = ad.AnnData(np.zeros((len(obs), 1), dtype=np.float32), obs=obs)
    for key in keys:
        adata.obsm[key] = store[key]
    t0 = time.perf_counter()
    bm = Benchmarker(
        adata,
        batch_key=BATCH,
        label_key=LABEL,
        embedding_obsm_keys=keys,
        bio_conservation_metrics=BioConservation(),
        batch_correction_metrics=BatchCorrection(),
        pre_integrated_embedding_obsm_key=PRE_INTEGRATED,
        n_jobs=1,
        progress_bar=False,
    )
    bm.prepare(neighbor_computer=_exact_neighbors)
    # scib-metrics 0.5.10 has no option for its graph sizes (15, 50, 90 neighbours): the
    # prepared per-embedding AnnDatas get the kBET and LISI graphs cut to smaller k.
    emb_adatas = getattr(bm, "_emb_adatas", None)
    if not emb_adatas or any("90_neighbor_res" not in a.uns for a in emb_adatas.values()):
        raise RuntimeError("This scib-metrics version prepares its neighbour graphs "
                           "differently; use scib-metrics 0.5.10 (setup_scib.sh).")  # fmt: skip
    for a in emb_adatas.values():
        full = a.uns["90_neighbor_res"]
        a.uns["50_neighbor_res"] = full.subset_neighbors(n=min(args.k_kbet, full.n_neighbors))
        a.uns["90_neighbor_res"] = full.subset_neighbors(n=min(args.k_lisi, full.n_neighbors))
    bm.benchmark()
    seconds = time.perf_counter() - t0
    res = bm.get_results(min_max_scale=False, clean_names=True)
    res = res.drop(index="Metric Type", errors="ignore")
    scores = {
        key: {col: float(res.loc[key, col]) for col in res.columns} for key in res.index
    }  # fmt: skip
    (work / f"scores_{args.table}.json").write_text(json.dumps(scores))
    return {
        "seconds": seconds,
        "version": f"scib-metrics {_version('scib-metrics')}, jax {_version('jax')}",
        "neighbors": {
            "graph_connectivity": 15,
            "kbet": args.k_kbet,
            "lisi": args.k_lisi,
            "method": "exact Euclidean (scikit-learn)",
        },  # fmt: skip
    }


CHILDREN = {
    "scprint": _child_scprint,
    "pca": _child_pca,
    "scvi": _child_scvi,
    "harmony": _child_harmony,
    "score": _child_score,
}


def child_main(args: argparse.Namespace) -> int:
    work = Path(args.work)
    info = CHILDREN[args.child](work, args)
    peak = own_peak_rss_mb()
    info["own_peak_rss_mb"] = round(peak) if peak == peak else None
    (work / f"{args.child}_{args.table}.json").write_text(json.dumps(info, default=str))
    return 0


# --------------------------------------------------------------------------- parent


def _child_cmd(python, child: str, table: str, work: Path, args) -> list:
    cmd = [str(python), str(Path(__file__).resolve()), "--child", child, "--table", table,
           "--work", str(work)]  # fmt: skip
    for opt in ("seed", "threads", "n_pcs", "scvi_latent", "k_kbet", "k_lisi", "scprint_batch"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.ckpt:
        cmd += ["--ckpt", str(args.ckpt)]
    return cmd


def _child_env(tt, threads: int) -> dict:
    env = tt._child_env(threads)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _run_child(tt, python, child: str, table: str, work: Path, args, timeout: float) -> dict:
    log = work / f"{child}_{table}.log"
    t0 = time.perf_counter()
    rc, rss = tt._run(_child_cmd(python, child, table, work, args), REPO,
                      _child_env(tt, args.threads), timeout, log)  # fmt: skip
    result = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(rss)}
    info_path = work / f"{child}_{table}.json"
    if rc == 0 and info_path.exists():
        result.update(json.loads(info_path.read_text()))
        if result.get("own_peak_rss_mb") is not None:  # see common.own_peak_rss_mb
            result["wait4_maxrss_mb"] = result["peak_rss_mb"]
            result["peak_rss_mb"] = result["own_peak_rss_mb"]
    else:
        tail = tt._tail(log, 4000).strip().splitlines()
        errors = [ln for ln in tail if "Error" in ln or "error" in ln]
        result["error"] = errors[-1] if errors else (tail[-1] if tail else f"exit code {rc}")
        result["log_tail"] = "\n".join(tail[-15:])
    return result


def load_tcells(path: Path):
    """The T cells as shipped (the ``airr`` slot dropped), checked for what we need."""
    import anndata as ad
    import numpy as np

    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: pass --data, the path of wu2020_tcells_200.h5ad (the shared "
            "real data folder, ../shared/data/ beside the repository)."
        )
    adata = ad.read_h5ad(path)
    adata.obsm.clear()  # ``airr`` needs awkward; not used
    for col in (LABEL, BATCH):
        if col not in adata.obs:
            raise KeyError(f"{path.name}: obs has no {col!r} column (labels / batches).")
    x = adata.X
    values = x.data if hasattr(x, "data") else np.asarray(x).ravel()
    if values.size and (values.min() < 0 or not np.allclose(values, np.round(values))):
        raise ValueError(f"{path.name}: X must hold raw counts (non-negative integers).")
    adata.var_names_make_unique()
    return adata


def retina_batches() -> str:
    """Why the retina cells cannot be scored for batch correction (or the columns that
    would allow it)."""
    import anndata as ad

    from scdataloader.datasets import fetch

    obs = ad.read_h5ad(fetch("retina"), backed="r").obs
    cols = [c for c in ("donor_id", "biosample_id", "assay", "dataset_id", "suspension_type",
                        "sex", "tissue") if c in obs]  # fmt: skip
    levels = {c: int(obs[c].nunique()) for c in cols}
    usable = [c for c, n in levels.items() if n > 1]
    desc = ", ".join(f"{c} {n}" for c, n in levels.items())
    if usable:
        return f"retina: batch columns with several values: {usable} ({desc}); not scored"
    return f"retina skipped: no batch to correct (distinct values: {desc})"


def select_genes(counts, n_hvg: int):
    """Indices of the ``n_hvg`` most variable genes (scanpy seurat on log1p(CP10k))."""
    import anndata as ad
    import numpy as np
    import scanpy as sc

    detected = np.asarray((counts > 0).sum(axis=0)).ravel() > 0  # genes seen in these cells
    kept = np.flatnonzero(detected)
    tmp = ad.AnnData(counts[:, kept].astype(np.float32))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=min(n_hvg, tmp.n_vars), flavor="seurat")
    return kept[np.flatnonzero(tmp.var["highly_variable"].to_numpy())]


def isolated_labels(obs) -> dict:
    """The labels scib-metrics' isolated-label score averages over: those found in the
    fewest batches (its default threshold), with their cell counts."""
    per_label = obs.groupby(LABEL, observed=True)[BATCH].nunique()
    fewest = int(per_label.min())
    labels = sorted(per_label.index[per_label == fewest].astype(str))
    counts = obs[LABEL].astype(str).value_counts()
    return {"patients": fewest, "labels": {lab: int(counts[lab]) for lab in labels}}


def depth_r2(embedding, counts, seed: int) -> float:
    """How much of the cells' sequencing depth the embedding carries: the 5-fold
    cross-validated R^2 of a ridge regression (alpha by generalised cross-validation) of
    log1p(total counts) on the standardised embedding (a diagnostic, not a scIB metric)."""
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score

    y = np.log1p(np.asarray(counts.sum(axis=1), dtype=np.float64).ravel())
    x = np.asarray(embedding, dtype=np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    model = RidgeCV(alphas=np.logspace(-2, 3, 12))
    return float(cross_val_score(model, x, y, cv=folds, scoring="r2").mean())


def _checkpoint(args) -> tuple[Path, dict]:
    """The model and what it saw: ``--demo``, ``--ckpt``, or the science model (the demo
    model, with a note, when the science model is absent)."""
    splits = _load_file_module("_science_splits", HERE / "splits.py")
    if args.demo:
        from scprint.demo import pretrained

        ckpt = pretrained()
        return ckpt, {"path": str(ckpt), "model": "demo (retina only)", "held_out_file": None}
    if args.ckpt:
        ckpt = Path(args.ckpt)
        if not ckpt.exists():
            raise FileNotFoundError(f"--ckpt {ckpt} does not exist.")
    else:
        ckpt = splits.science_checkpoint()
    if ckpt.exists():
        info: dict = {"path": str(ckpt), "model": "given" if args.ckpt else "science"}
        prov = ckpt.parent / "provenance.json"
        held = ckpt.parent / "held_out.json"
        if prov.exists():
            p = json.loads(prov.read_text())
            hyper = p.get("hyperparameters", {})
            info["provenance"] = {
                **{k: p[k] for k in ("steps", "epochs", "wall_seconds", "training_cells",
                                     "final_losses") if k in p},
                **{k: hyper[k] for k in ("preset", "parameters", "label_keys", "max_len",
                                         "seed") if k in hyper},
            }  # fmt: skip
        info["held_out_file"] = json.loads(held.read_text()) if held.exists() else None
        return ckpt, info
    from scprint.demo import pretrained

    print(f"NOTE: no science checkpoint at {ckpt}; using the demo's debug model, pretrained "
          "on the retina cells only: it never saw a T cell.", flush=True)  # fmt: skip
    ckpt = pretrained()
    return ckpt, {"path": str(ckpt), "model": "demo (retina only)", "held_out_file": None}


def seen_cells(info: dict, obs_names, held) -> tuple:
    """(mask of the T cells the model was pretrained on, or None when unknown; how we know)."""
    import numpy as np

    file = info.pop("held_out_file", None)
    if info["model"] == "demo (retina only)":
        return np.zeros(len(obs_names), dtype=bool), "the demo model saw no T cell"
    if file is not None:
        if "wu2020" not in file:
            return np.zeros(len(obs_names), dtype=bool), "held_out.json: no wu2020 in training"
        listed = np.isin(np.asarray(obs_names).astype(str), np.asarray(file["wu2020"]))
        if not np.array_equal(listed, held):
            print("WARNING: the checkpoint's held_out.json lists other wu2020 cells than "
                  "splits.held_out: scoring splits.held_out's cells.", flush=True)  # fmt: skip
        return ~listed, "held_out.json beside the checkpoint"
    if info["model"] == "science":
        return ~held, "assumed: pretrain.py trains on all but splits.held_out"
    return None, "unknown: no held_out.json beside the checkpoint"


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    head = ["method", "version", "dim", *BIO, *BATCH_METRICS, *AGGREGATES, "depth R2",
            "fit (s)", "peak RSS (MB)", "status"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        s = r.get("scores", {})
        cols = [r["method"], r.get("version", "-"), _fmt(r.get("dim"), "d"),
                *(_fmt(s.get(m), ".3f") for m in (*BIO, *BATCH_METRICS, *AGGREGATES)),
                _fmt(r.get("depth_r2"), ".2f"),
                _fmt(r.get("seconds"), ".2f"), _fmt(r.get("peak_rss_mb"), ",.0f"),
                r.get("status", "ok")]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The scPRINT paper's embedding benchmark (scIB) on the T cells.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="wu2020_tcells_200.h5ad")
    parser.add_argument("--ckpt", default=None, help="default: the science checkpoint")
    parser.add_argument("--demo", action="store_true", help="use the demo's debug model")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--seed", type=int, default=0, help="split, methods, random")
    parser.add_argument("--n-hvg", type=int, default=2000, help="genes of PCA and scVI")
    parser.add_argument("--n-pcs", type=int, default=50)
    parser.add_argument("--scvi-latent", type=int, default=10)
    parser.add_argument("--k-kbet", type=int, default=30, help="kBET graph (scib: 50)")
    parser.add_argument("--k-lisi", type=int, default=30, help="LISI graph (scib: 90)")
    parser.add_argument("--scprint-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="threads per child")
    parser.add_argument("--peer-python", default=str(DEFAULT_PEER_PYTHON))
    parser.add_argument("--scib-python", default=str(DEFAULT_SCIB_PYTHON))
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--work", default=None, help="keep intermediate files here")
    parser.add_argument("--child", default=None, choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--table", default="all", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.demo and args.ckpt:
        parser.error("--demo and --ckpt exclude each other.")
    for name in ("n_hvg", "n_pcs", "scvi_latent", "k_kbet", "k_lisi", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1.")

    import anndata as ad
    import numpy as np

    tt = _load_file_module("_train_throughput", REPO / "benchmarks" / "train_throughput.py")
    splits = _load_file_module("_science_splits", HERE / "splits.py")
    t_start = time.perf_counter()
    machine = tt.machine_info()
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="science-embeddings-"))

    path = Path(args.data)
    try:
        raw = load_tcells(path)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    held = splits.held_out("wu2020", raw.obs, seed=args.seed)
    retina_note = retina_batches()
    print(f"data: {path.name}, {raw.n_obs} cells x {raw.n_vars:,} genes, "
          f"{raw.obs[LABEL].nunique()} labels ({LABEL}), {raw.obs[BATCH].nunique()} patients; "
          f"held out {int(held.sum())} cells of {raw.obs[BATCH][held].nunique()} patients "
          f"(seed {args.seed})\n{retina_note}", flush=True)  # fmt: skip

    ckpt_info: dict = {}
    seen_mask = np.zeros(raw.n_obs, dtype=bool)
    if "scprint" in args.methods:
        try:
            args.ckpt, ckpt_info = _checkpoint(args)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        seen_mask, how = seen_cells(ckpt_info, raw.obs_names, held)
        seen = None if seen_mask is None else int(seen_mask.sum())
        ckpt_info["tcells_seen_in_pretraining"] = seen
        ckpt_info["tcells_seen_source"] = how
        if seen_mask is not None:
            ckpt_info["held_out_cells_seen"] = int((seen_mask & held).sum())
        print(f"model: {ckpt_info['path']} ({ckpt_info['model']}); it saw "
              f"{'?' if seen is None else seen} of the {raw.n_obs} T cells in pretraining "
              f"({how})", flush=True)  # fmt: skip

    # per table: the cells, their most variable genes (for PCA and scVI)
    masks = {"held_out": held, "all": np.ones(raw.n_obs, dtype=bool)}
    obs_cols = [LABEL, BATCH]
    genes_per_table = {}
    for table in args.tables:
        sub = raw[masks[table]]
        genes = select_genes(sub.X, args.n_hvg)
        genes_per_table[table] = len(genes)
        cells = ad.AnnData(sub.X[:, genes].astype(np.float32), obs=sub.obs[obs_cols].copy(),
                           var=sub.var.iloc[genes][[]].copy())  # fmt: skip
        cells.write_h5ad(work / f"cells_{table}.h5ad")
    if "scprint" in args.methods:  # ours: all genes of all cells, embedded once
        ad.AnnData(raw.X.astype(np.float32), obs=raw.obs[obs_cols].copy(),
                   var=raw.var[[]].copy()).write_h5ad(work / "cells_scprint.h5ad")  # fmt: skip

    pythons = {"scprint": sys.executable, "pca": sys.executable,
               "scvi": Path(args.peer_python), "harmony": Path(args.scib_python)}  # fmt: skip
    setup = {"scvi": "setup_peers.sh", "harmony": "setup_scib.sh"}
    order = [m for m in ("pca", *METHODS) if m in args.methods]
    order = list(dict.fromkeys(order))  # pca first: harmony starts from it
    runs: dict[str, dict] = {}
    if "scprint" in args.methods:
        print("scprint: embedding all cells ...", flush=True)
        runs["scprint"] = _run_child(tt, sys.executable, "scprint", "all", work, args,
                                     args.timeout)  # fmt: skip
        if runs["scprint"]["rc"] != 0:
            print(runs["scprint"].get("log_tail", ""), file=sys.stderr)
    all_rows: list[dict] = []
    scib_python = Path(args.scib_python)
    for table in args.tables:
        mask = masks[table]
        rows: list[dict] = []
        arrays: dict = {}
        for method in order:
            if method == "scprint":
                res = runs["scprint"]
                if res["rc"] != 0:
                    rows.append({"method": "scprint", "status": f"failed: {res['error']}"})
                    continue
                store = np.load(work / "scprint_all.npz")
                for key in store.files:
                    arrays[key] = store[key][mask]
                    rows.append({"method": key, "version": res["version"],
                                 "dim": int(store[key].shape[1]), "seconds": res["seconds"],
                                 "peak_rss_mb": res["peak_rss_mb"], "wall_s": res["wall_s"],
                                 "note": "fit = embedding all 200 cells"})  # fmt: skip
                continue
            if method == "random":
                rng = np.random.default_rng(args.seed)
                arrays["random"] = rng.standard_normal((int(mask.sum()), args.n_pcs))
                rows.append({"method": "random", "version": "-", "dim": args.n_pcs})
                continue
            python = pythons[method]
            if not Path(python).exists():
                rows.append({"method": method, "status": f"not run: {python} missing (run "
                             f"benchmarks/science/{setup[method]})"})  # fmt: skip
                continue
            if method == "harmony" and "pca" not in arrays:
                rows.append({"method": method, "status": "not run: needs the pca row"})
                continue
            print(f"{table}: {method} ...", flush=True)
            res = _run_child(tt, python, method, table, work, args, args.timeout)
            if res["rc"] != 0:
                if method == "harmony" and "No module named 'harmonypy'" in res["log_tail"]:
                    status = "not run: harmonypy did not install (setup_scib.sh)"
                else:
                    status = f"failed: {res['error']}"
                    print(res.get("log_tail", ""), file=sys.stderr)
                rows.append({"method": method, "status": status, "wall_s": res["wall_s"]})
                continue
            store = np.load(work / f"{method}_{table}.npz")
            arrays[method] = store[method]
            rows.append({"method": method, "dim": int(store[method].shape[1]),
                         **{k: v for k, v in res.items() if k != "rc"}})  # fmt: skip
        counts = raw.X[np.flatnonzero(mask)]
        for r in rows:
            if r["method"] in arrays:
                r["depth_r2"] = depth_r2(arrays[r["method"]], counts, args.seed)
        np.savez(work / f"embeddings_{table}.npz",
                 **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})  # fmt: skip
        score_info: dict = {}
        if not scib_python.exists():
            for r in rows:
                r.setdefault("status", f"not scored: {scib_python} missing (run "
                             "benchmarks/science/setup_scib.sh)")  # fmt: skip
        else:
            print(f"{table}: scoring {len(arrays)} embeddings with scib-metrics ...", flush=True)
            res = _run_child(tt, scib_python, "score", table, work, args, args.timeout)
            if res["rc"] != 0:
                print(res.get("log_tail", ""), file=sys.stderr)
                for r in rows:
                    r.setdefault("status", f"scoring failed: {res['error']}")
            else:
                scores = json.loads((work / f"scores_{table}.json").read_text())
                score_info = {k: v for k, v in res.items() if k != "rc"}
                for r in rows:
                    if r["method"] in scores:
                        r["scores"] = scores[r["method"]]
                        r.setdefault("status", "ok")
        n_seen = None if seen_mask is None else int((seen_mask & mask).sum())
        saw = "?" if n_seen is None else n_seen
        title = (
            f"Table {'1' if table == 'held_out' else '2'}: {table} cells: "
            f"{int(mask.sum())} cells, {raw.obs[BATCH][mask].nunique()} patients, "
            f"{raw.obs[LABEL][mask].nunique()} labels; our model saw {saw} of them"
        )
        if score_info:
            title += (f"; scoring: {score_info['version']}, {score_info['seconds']:.0f} s, "
                      f"peak RSS {score_info['peak_rss_mb']:,} MB")  # fmt: skip
        print_table(title, rows)
        iso = isolated_labels(raw.obs[mask])
        print(f"\nisolated labels (found in {iso['patients']} patient(s) only; label: cells): "
              + ", ".join(f"{k}: {v}" for k, v in iso["labels"].items()))  # fmt: skip
        for r in rows:
            r.update(table=table, cells=int(mask.sum()), cells_seen_by_model=n_seen,
                     hvg=genes_per_table[table], scoring=score_info,
                     isolated_labels=iso)  # fmt: skip
        all_rows += rows

    if ckpt_info:
        print(f"\nscprint checkpoint: {json.dumps(ckpt_info, default=str)}")
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s; intermediate files in {work}")
    common = {
        "benchmark": "science_embeddings",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": args.seed,
        "data": f"{path.name} (scirpy 0.22.5 tests/data/wu2020_200_v0_11.h5ad)",
        "label_key": LABEL,
        "batch_key": BATCH,
        "retina": retina_note,
        "n_pcs": args.n_pcs,
        "scvi_latent": args.scvi_latent,
        "k_kbet": args.k_kbet,
        "k_lisi": args.k_lisi,
        "threads": args.threads,
        "checkpoint": ckpt_info,
        "versions": {
            "scanpy": _version("scanpy"),
            "numpy": _version("numpy"),
            "anndata": _version("anndata"),
        },  # fmt: skip
        "machine": machine,
        "total_s": round(total, 1),
    }
    append_records(Path(args.out), common, all_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
