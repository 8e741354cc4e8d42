"""The scPRINT paper's denoising benchmark on the embedded retina data.

Run from the repository root (``bash benchmarks/science/setup_peers.sh`` first installs
MAGIC and scVI in ``~/.cache/science-peers-venv``; without it their rows say why they
did not run)::

    .venv/bin/python benchmarks/science/denoise.py --epochs 90

Protocol (the paper's Methods, "Denoising validation test", and Figure 4A):

* Data: the 1,000-cell CELLxGENE retina file pinned to the registry
  (``scdataloader.datasets.fetch("retina")``: ``tests/test.h5ad`` of the ``grnndata``
  1.3.2 source distribution), raw counts, all 70,116 genes.
* Split: a stratified (by ``cell_type``) ``--test-frac`` of the cells (default 0.5,
  ``--seed``) is held out. Our model is pretrained on the other cells only, so the
  evaluated cells are cells it never saw. The peers, which fit the data they denoise,
  are fitted on all 1,000 noisy cells; every method is scored on the held-out cells.
* Noise: the paper removes ~70% of each cell's transcripts ("downsampling 70% of the
  cell transcripts", Figure 4A) with its zero-inflated Poisson downsampling. Here each
  count is kept independently with probability ``--keep`` (default 0.3): binomial
  thinning, X_noisy ~ Binomial(X, 0.3) per cell and gene, which removes 70% of the
  counts in expectation and is the exact model of sequencing a cell at 30% of its depth.
  The full-depth counts are the reference ("true" profile).
* Genes: the 5,000 most variable genes (``--n-genes``) among the genes whose Ensembl id is
  in GENCODE v48, the vocabulary of ``scdataloader.genes.map_genes`` (61,517 of the
  70,116; our model cannot name the others, so no method is scored on them), chosen on
  the noisy data of all cells with scanpy's ``highly_variable_genes(flavor="seurat")``
  after ``normalize_total`` (1e4) and ``log1p``. Every method gets the same noisy cells x 5,000
  counts matrix and returns a cells x 5,000 matrix.
* Metric: for each cell, Spearman's correlation between the method's profile and the
  full-depth profile over the genes the cell expresses (nonzero full-depth counts among
  the 5,000), averaged over the cells; and its increase over the noisy profile's own
  correlation (the paper's Figure 4A). Rare cells: the same over the held-out microglial
  cells and astrocytes only, the methods still fitted on all cells. Two diagnostics
  split the metric (held-out cells): Spearman's rho over the genes also seen in the
  noisy profile, and the AUROC with which the method's values tell thinned-away genes
  from true zeros among the genes with a zero noisy count (0.5 for the noisy profile).
* Methods:

  - ``noisy``: the thinned counts themselves (the baseline);
  - ``scprint``: ``scprint.tasks.denoise`` with a checkpoint: the ``debug`` preset
    pretrained on the training cells by the same code path as ``scprint.demo``
    (``--epochs`` sub-epochs, default 90, of 40 batches of 16 cells x 256 genes; the
    demo trains 30), cached under ``~/.cache/scprint/science/`` with its provenance in
    a ``.json`` beside it, unless ``--ckpt`` is given (e.g. the science model of
    ``pretrain.py``, whose ``provenance.json`` and ``held_out.json`` are read to report
    its training and check that it never saw a scored cell); every one of each held-out
    cell's 5,000 genes predicted (``max_len=5000``), in passes of the cell's expressed
    genes and a share ``--zero-share`` of its zero-count genes, a different slice of them
    in each pass (``denoise(..., zero_share=...)``; default: the checkpoint's pretraining
    share, ``zero_genes / max_len``, 341 / 1,024 for the science model, so that the model
    sees sequences like its training ones; ``--zero-share 0``: one sequence of all 5,000
    genes, mostly zeros for these shallow cells, as earlier runs did), asked for the
    depth 1 / ``--keep`` times the noisy one (``--depth-multiplier``; with 1 the ranks,
    hence the scores, were the same to four decimals);
  - ``scprint_posterior``: the same with ``denoise(..., posterior=True)``: the noisy
    counts read as a binomial subsample (rate 1 / depth multiplier) of the requested
    depth and the model's negative binomial prediction as their prior; the posterior
    mean (SAVER's Poisson-gamma posterior with the model as the prior);
  - ``scprint_posterior_knn``: the same with the prior pooled over each cell and its
    ``--knn-k`` - 1 nearest held-out cells in the model's cell embedding
    (``denoise(..., posterior=True, neighbours=knn_k)``): borrows strength from similar
    cells as kNN-smoothing and MAGIC do, where the paper's scPRINT denoises each cell
    alone;
  - ``knn_smoothing``: our kNN-smoothing 2 (``benchmarks/science/knn_smoothing.py``),
    ``--knn-k`` neighbours (default 15), 10 principal components, dither 0.03;
  - ``magic``: ``magic.MAGIC`` (magic-impute 3.0.0, defaults: knn 5, t 3, decay 1)
    on library-size-normalised, square-root-transformed counts;
  - ``scvi``: ``scvi.model.SCVI`` (scvi-tools 1.4.2, defaults), ``--scvi-epochs``
    (default 400, scvi-tools' own default for 1,000 cells) on the counts, then
    ``get_normalized_expression(library_size=1e4)``.

  Spearman's correlation is invariant to any per-cell scaling and monotone transform, so
  the methods' different output scales (counts, normalised, square-root) do not matter.

Each method runs in its own subprocess (ours and kNN-smoothing with this interpreter,
MAGIC and scVI with ``--peer-python``), so that each has its own wall time and peak RSS
(``ru_maxrss`` from ``wait4``, as in ``benchmarks/train_throughput.py``); "fit + denoise"
is the time inside the child without imports and I/O. Options: ``--methods``,
``--threads`` (per child, default 1), ``--retrain``, ``--zero-share`` (our model's passes;
0: one sequence per cell), ``--out`` (JSON lines, default
``benchmarks/results/science_denoise.jsonl``), ``--work`` (keep the intermediate files).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import append_records, checkpoint_collator, display_path  # noqa: E402
from common import fmt as _fmt  # noqa: E402
from common import load_file_module as _load_file_module  # noqa: E402
from common import package_version as _version  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "science_denoise.jsonl"
DEFAULT_PEER_PYTHON = Path.home() / ".cache" / "science-peers-venv" / "bin" / "python"
METHODS = ("noisy", "scprint", "scprint_posterior", "scprint_posterior_knn", "knn_smoothing",
           "magic", "scvi")  # fmt: skip
SCPRINT = ("scprint", "scprint_posterior", "scprint_posterior_knn")
PEERS = ("magic", "scvi")
RARE_TYPES = ("microglial cell", "astrocyte")
CELL_TYPE = "cell_type"
ORGANISM_KEY = "organism_ontology_term_id"


# --------------------------------------------------------------------------- protocol


# The held-out protocol of every science benchmark: the 501 cells held out here are those
# the science model (``pretrain.py``) never saw.
stratified_split = _load_file_module("_science_splits", HERE / "splits.py").stratified_split


def binomial_thin(counts, keep: float, seed: int):
    """Keep each count with probability ``keep``: CSR Binomial(X, keep), zeros dropped."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = counts.tocsr().astype(np.float32, copy=True)
    out.data = rng.binomial(np.rint(out.data).astype(np.int64), keep).astype(np.float32)
    out.eliminate_zeros()
    return out


def variable_genes(noisy, n_genes: int):
    """Indices of the ``n_genes`` most variable genes of the noisy counts (scanpy seurat)."""
    import anndata as ad
    import numpy as np
    import scanpy as sc

    tmp = ad.AnnData(noisy.copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_genes, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def spearman_per_cell(pred, truth):
    """Spearman's rho of each row of ``pred`` with ``truth`` over ``truth``'s nonzero genes.

    NaN for a cell with fewer than 3 such genes or a constant profile over them.
    """
    import numpy as np
    from scipy.stats import rankdata

    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    out = np.full(truth.shape[0], np.nan)
    for i in range(truth.shape[0]):
        expressed = truth[i] > 0
        if expressed.sum() < 3:
            continue
        a = rankdata(pred[i, expressed])
        b = rankdata(truth[i, expressed])
        if a.std() == 0 or b.std() == 0:
            continue
        out[i] = np.corrcoef(a, b)[0, 1]
    return out


def diagnostics_per_cell(pred, truth, noisy):
    """Two views of the metric, per cell (NaN where undefined).

    ``observed``: Spearman's rho over the genes expressed at full depth *and* in the noisy
    profile (ordering what was seen); ``dropout_auroc``: among the genes with a zero noisy
    count, the AUROC of the method's values for telling the genes expressed at full depth
    (thinned away) from those that are zero at full depth too (0.5: no better than chance,
    the noisy profile's own value).
    """
    import numpy as np
    from scipy.stats import rankdata

    pred, truth, noisy = (np.asarray(a, dtype=np.float64) for a in (pred, truth, noisy))
    observed = spearman_per_cell(np.where(noisy > 0, pred, np.nan), np.where(noisy > 0, truth, 0))
    auroc = np.full(truth.shape[0], np.nan)
    for i in range(truth.shape[0]):
        zero = noisy[i] == 0
        positive = truth[i, zero] > 0
        n1, n0 = int(positive.sum()), int((~positive).sum())
        if n1 and n0:
            ranks = rankdata(pred[i, zero])
            auroc[i] = (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return observed, auroc


def training_zero_share(ckpt) -> float:
    """The share of each pretraining sequence given to unexpressed genes (the collator's
    ``zero_genes / max_len`` saved with the checkpoint's data module; 0 without one)."""
    coll = checkpoint_collator(ckpt)
    max_len, zero = int(coll.get("max_len") or 0), int(coll.get("zero_genes") or 0)
    return zero / max_len if max_len and zero else 0.0


# --------------------------------------------------------------------------- children


def _child_scprint(
    work: Path, args: argparse.Namespace, posterior: bool = False, pooled: bool = False
) -> dict:
    import anndata as ad
    import numpy as np
    import torch

    import scprint
    from scprint.tasks import denoise

    torch.set_num_threads(args.threads)
    adata = ad.read_h5ad(work / "noisy.h5ad")
    test = adata[adata.obs["held_out"].to_numpy()].copy()
    t0 = time.perf_counter()
    model = scprint.load(args.ckpt)
    known = set(np.asarray(model.genes).astype(str)) if hasattr(model, "genes") else None
    mult = args.depth_multiplier or 1 / args.keep
    neighbours = args.knn_k if pooled else 1
    share = training_zero_share(args.ckpt) if args.zero_share is None else args.zero_share
    denoise(test, model, depth_multiplier=mult, posterior=posterior, neighbours=neighbours,
            zero_share=share or None, max_len=test.n_vars, batch_size=args.scprint_batch,
            progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    name = ("scprint_posterior_knn" if pooled else "scprint_posterior") if posterior else "scprint"
    np.save(work / f"{name}.npy", test.layers["scprint_denoised"].toarray())
    info = {
        "rows": "held_out",
        "seconds": seconds,
        "version": f"ours {_version('scprint-suite')}",
        "params": {
            "depth_multiplier": mult,
            "max_len": test.n_vars,
            "posterior": posterior,
            "neighbours": neighbours,
            "zero_share": share or None,
        },  # fmt: skip
    }
    if known is not None:
        info["genes_in_vocabulary"] = int(sum(g in known for g in test.var_names))
    return info


def _child_knn(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import numpy as np

    knn = _load_file_module("_knn_smoothing", HERE / "knn_smoothing.py")
    adata = ad.read_h5ad(work / "noisy.h5ad")
    t0 = time.perf_counter()
    out = knn.knn_smoothing(adata.X, args.knn_k, d=10, dither=0.03, seed=args.seed)
    seconds = time.perf_counter() - t0
    np.save(work / "knn_smoothing.npy", out.astype(np.float32))
    return {"rows": "all", "seconds": seconds, "version": "ours (benchmarks/science)"}


def _child_magic(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import magic
    import numpy as np

    adata = ad.read_h5ad(work / "noisy.h5ad")
    t0 = time.perf_counter()
    x = np.asarray(adata.X.toarray(), dtype=np.float64)
    totals = x.sum(axis=1, keepdims=True)
    x = np.sqrt(x / np.maximum(totals, 1) * np.median(totals))
    op = magic.MAGIC(random_state=args.seed, n_jobs=args.threads, verbose=0)
    out = op.fit_transform(x, genes="all_genes")
    seconds = time.perf_counter() - t0
    np.save(work / "magic.npy", np.asarray(out, dtype=np.float32))
    return {
        "rows": "all",
        "seconds": seconds,
        "version": _version("magic-impute"),
        "params": {"knn": op.knn, "t": op.t, "decay": op.decay},
    }


def _child_scvi(work: Path, args: argparse.Namespace) -> dict:
    import anndata as ad
    import numpy as np
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(work / "noisy.h5ad")
    t0 = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata)
    model.train(max_epochs=args.scvi_epochs, accelerator="cpu", enable_progress_bar=False)
    out = model.get_normalized_expression(library_size=1e4, return_numpy=True)
    seconds = time.perf_counter() - t0
    np.save(work / "scvi.npy", np.asarray(out, dtype=np.float32))
    return {
        "rows": "all",
        "seconds": seconds,
        "version": _version("scvi-tools"),
        "params": {"max_epochs": args.scvi_epochs, "n_latent": model.module.n_latent},
    }


def _child_pretrain(work: Path, args: argparse.Namespace) -> dict:
    """Pretrain the debug preset on the training cells by ``scprint.demo``'s code path."""
    import anndata as ad
    import torch

    from scprint.demo import _pretrain

    torch.set_num_threads(args.threads)
    train_file = Path(args.train_file)
    t0 = time.perf_counter()
    _pretrain(train_file, Path(args.ckpt), args.epochs, args.seed)
    seconds = time.perf_counter() - t0
    state = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    model = __import__("scprint").load(args.ckpt)
    return {
        "seconds": seconds,
        "global_step": int(state.get("global_step", -1)),
        "epochs": int(state.get("epoch", -1)),
        "cells": ad.read_h5ad(train_file, backed="r").n_obs,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
    }


CHILDREN = {
    "scprint": _child_scprint,
    "scprint_posterior": lambda work, args: _child_scprint(work, args, posterior=True),
    "scprint_posterior_knn": lambda work, args: _child_scprint(work, args, True, pooled=True),
    "knn_smoothing": _child_knn,
    "magic": _child_magic,
    "scvi": _child_scvi,
    "pretrain": _child_pretrain,
}


def child_main(args: argparse.Namespace) -> int:
    work = Path(args.work)
    info = CHILDREN[args.child](work, args)
    (work / f"{args.child}.json").write_text(json.dumps(info))
    return 0


# --------------------------------------------------------------------------- parent


def _child_cmd(python: Path | str, method: str, work: Path, args: argparse.Namespace) -> list:
    cmd = [str(python), str(Path(__file__).resolve()), "--child", method, "--work", str(work)]
    for opt in ("seed", "keep", "knn_k", "scvi_epochs", "threads", "epochs", "scprint_batch"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.depth_multiplier:
        cmd += ["--depth-multiplier", str(args.depth_multiplier)]
    if args.zero_share is not None:
        cmd += ["--zero-share", str(args.zero_share)]
    if args.ckpt:
        cmd += ["--ckpt", str(args.ckpt)]
    if getattr(args, "train_file", None):
        cmd += ["--train-file", str(args.train_file)]
    return cmd


def _run_child(tt, python, method: str, work: Path, args, timeout: float) -> dict:
    log = work / f"{method}.log"
    t0 = time.perf_counter()
    rc, rss = tt._run(_child_cmd(python, method, work, args), REPO, tt._child_env(args.threads),
                      timeout, log)  # fmt: skip
    wall = time.perf_counter() - t0
    result = {"rc": rc, "wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
    info_path = work / f"{method}.json"
    if rc == 0 and info_path.exists():
        result.update(json.loads(info_path.read_text()))
    else:
        tail = tt._tail(log, 4000).strip().splitlines()
        errors = [ln for ln in tail if "Error" in ln or "error" in ln]
        result["error"] = errors[-1] if errors else (tail[-1] if tail else f"exit code {rc}")
        result["log_tail"] = "\n".join(tail[-15:])
    return result


def _pretrained_checkpoint(tt, raw, test_mask, work: Path, args) -> tuple[Path, dict]:
    """The cached checkpoint for this split and settings, pretraining it if needed."""
    from scdataloader.datasets import cache_dir

    folder = cache_dir() / "science"
    folder.mkdir(parents=True, exist_ok=True)
    stem = (f"denoise-debug-seed{args.seed}-epochs{args.epochs}-heldout"
            f"{args.test_frac:g}")  # fmt: skip
    ckpt, meta = folder / f"{stem}.ckpt", folder / f"{stem}.json"
    if ckpt.exists() and meta.exists() and not args.retrain:
        info = json.loads(meta.read_text())
        info["cached"] = True
        print(f"model: reusing {ckpt} (pass --retrain to train again)", flush=True)
        return ckpt, info
    train_file = work / "train_cells.h5ad"
    raw[~test_mask].copy().write_h5ad(train_file)
    print(f"model: pretraining the debug preset on {int((~test_mask).sum())} cells, "
          f"{args.epochs} sub-epochs ...", flush=True)  # fmt: skip
    args.ckpt, args.train_file = ckpt, train_file
    res = _run_child(tt, sys.executable, "pretrain", work, args, timeout=args.pretrain_timeout)
    args.ckpt, args.train_file = None, None
    if res["rc"] != 0:
        raise RuntimeError(f"pretraining failed: {res.get('error')}\n{res.get('log_tail')}")
    info = {
        "preset": "debug",
        "code_path": "scprint.demo._pretrain (DataModule batch 16, max_len 256, 40 batches "
        "per sub-epoch, lr 3e-3, 20 warm-up steps, val_size 0.1)",
        "seed": args.seed,
        "sub_epochs": args.epochs,
        "data": "retina (grnndata 1.3.2 tests/test.h5ad), training cells of the split",
        "held_out_fraction": args.test_frac,
        "threads": args.threads,
        "wall_s": res["wall_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        **{
            k: res[k]
            for k in (
                "seconds",
                "global_step",
                "epochs",
                "cells",
                "parameters",
                "trainable_parameters",
            )
        },  # fmt: skip
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cached": False,
    }
    meta.write_text(json.dumps(info, indent=2))
    return ckpt, info


def given_checkpoint_info(ckpt: Path, scored) -> dict:
    """What a ``--ckpt`` model was trained on, from the ``provenance.json`` and
    ``held_out.json`` that ``pretrain.py`` writes beside it, and whether every scored cell
    was held out from it (``unseen``); without them, the model may have seen the cells."""
    info: dict = {"given": display_path(ckpt)}
    prov_path, held_path = ckpt.parent / "provenance.json", ckpt.parent / "held_out.json"
    if not (prov_path.exists() and held_path.exists()):
        info["note"] = "no provenance.json / held_out.json beside it: may have seen these cells"
        return info
    prov = json.loads(prov_path.read_text())
    held = set(json.loads(held_path.read_text()).get("retina", []))
    seen = [c for c in map(str, scored) if c not in held]
    hp = prov.get("hyperparameters", {})
    info.update(
        unseen=not seen,
        scored_cells_seen_in_training=len(seen),
        datasets={k: v.get("training_cells") for k, v in prov.get("datasets", {}).items()},
        steps=prov.get("steps"),
        wall_seconds=prov.get("wall_seconds"),
        **{k: hp.get(k) for k in ("preset", "max_len", "zero_genes", "batch_size", "lr")},
        final_losses=prov.get("final_losses"),
    )
    if seen:
        print(f"warning: {len(seen)} scored cells were in the model's training data "
              f"(e.g. {seen[:3]})", file=sys.stderr)  # fmt: skip
    return info


def print_table(rows: list[dict]) -> None:
    head = ["method", "version", "cells", "Spearman (all)", "increase", "Spearman (rare)",
            "increase (rare)", "Spearman (observed genes)", "dropout AUROC",
            "fit + denoise (s)", "peak RSS (MB)", "status"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = f"{r.get('n_all', '-')} / {r.get('n_rare', '-')}"
        cols = [r["method"], r.get("version", "-"), cells, _fmt(r.get("spearman_all"), ".4f"),
                _fmt(r.get("increase_all"), "+.4f"), _fmt(r.get("spearman_rare"), ".4f"),
                _fmt(r.get("increase_rare"), "+.4f"), _fmt(r.get("spearman_observed"), ".4f"),
                _fmt(r.get("dropout_auroc"), ".4f"), _fmt(r.get("seconds"), ".1f"),
                _fmt(r.get("peak_rss_mb"), ",.0f"), r.get("status", "ok")]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The scPRINT paper's denoising benchmark on the retina data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0, help="split, thinning, methods")
    parser.add_argument("--keep", type=float, default=0.3, help="binomial thinning: P(keep)")
    parser.add_argument("--n-genes", type=int, default=5000, help="most variable genes")
    parser.add_argument("--test-frac", type=float, default=0.5, help="held-out cells")
    parser.add_argument(
        "--ckpt",
        default=None,
        help="a checkpoint instead of pretraining, e.g. the science model of pretrain.py "
        "(splits.science_checkpoint()), trained without the cells held out here",
    )
    parser.add_argument("--epochs", type=int, default=90, help="pretraining sub-epochs")
    parser.add_argument("--retrain", action="store_true", help="ignore a cached checkpoint")
    parser.add_argument("--pretrain-timeout", type=float, default=1800.0)
    parser.add_argument("--scprint-batch", type=int, default=8)
    parser.add_argument(
        "--depth-multiplier",
        type=float,
        default=None,
        help="depth asked of our model, x the noisy depth (default 1 / keep)",
    )
    parser.add_argument("--knn-k", type=int, default=15)
    parser.add_argument(
        "--zero-share",
        type=float,
        default=None,
        help="our model's share of zero-count genes per pass (default: its pretraining's "
        "zero_genes / max_len; 0: one sequence of all genes per cell)",
    )
    parser.add_argument("--scvi-epochs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="threads per child")
    parser.add_argument("--peer-python", default=str(DEFAULT_PEER_PYTHON))
    parser.add_argument("--timeout", type=float, default=1800.0, help="per method, seconds")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--work", default=None, help="keep intermediate files here")
    parser.add_argument("--child", default=None, choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--train-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    import anndata as ad
    import numpy as np

    from scdataloader.datasets import fetch
    from scdataloader.genes import map_genes

    tt = _load_file_module("_train_throughput", REPO / "benchmarks" / "train_throughput.py")
    t_start = time.perf_counter()
    machine = tt.machine_info()
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="science-denoise-"))

    path = fetch("retina")
    raw = ad.read_h5ad(path)
    labels = raw.obs[CELL_TYPE].astype(str).to_numpy()
    test = stratified_split(labels, args.test_frac, args.seed)
    rare = np.isin(labels, RARE_TYPES)
    full = raw.X.tocsr().astype(np.float32)
    noisy_all = binomial_thin(full, args.keep, args.seed)
    kept = float(noisy_all.sum() / full.sum())
    # the gene universe: genes with a current Ensembl id (GENCODE v48, the vocabulary of
    # scdataloader), so that no method is handed genes that one of them cannot name
    mapped = np.flatnonzero(
        np.array([i is not None for i in map_genes(raw.var_names, "human").ids])
    )
    genes = mapped[variable_genes(noisy_all[:, mapped], args.n_genes)]
    truth = full[:, genes].toarray()
    noisy = noisy_all[:, genes]
    obs = raw.obs[[CELL_TYPE, ORGANISM_KEY]].astype(str).copy()
    obs["held_out"] = test
    ad.AnnData(noisy, obs=obs, var=raw.var.iloc[genes][[]].copy()).write_h5ad(work / "noisy.h5ad")
    print(f"data: {path.name}, {raw.n_obs:,} cells x {raw.n_vars:,} genes; held out "
          f"{int(test.sum())} cells ({int((test & rare).sum())} rare: microglia "
          f"{int((test & (labels == RARE_TYPES[0])).sum())}, astrocytes "
          f"{int((test & (labels == RARE_TYPES[1])).sum())}); binomial thinning kept "
          f"{kept:.1%} of the counts; {len(genes):,} most variable of the {len(mapped):,} genes "
          "with a GENCODE v48 Ensembl id", flush=True)  # fmt: skip

    ckpt_info: dict = {}
    rows: list[dict] = []
    for method in args.methods:
        row: dict = {"method": method}
        if method == "noisy":
            pred, res = noisy.toarray(), {"rows": "all", "version": "-"}
        else:
            if method in SCPRINT:
                if args.ckpt is None:
                    try:
                        ckpt, ckpt_info = _pretrained_checkpoint(tt, raw, test, work, args)
                    except RuntimeError as err:
                        rows.append({**row, "status": f"failed: {err}".splitlines()[0]})
                        continue
                    args.ckpt = ckpt
                    row_ckpt = ckpt
                else:
                    row_ckpt = Path(args.ckpt)
                    ckpt_info = given_checkpoint_info(row_ckpt, raw.obs_names[test])
                row["checkpoint"] = str(row_ckpt.name)
                python: Path | str = sys.executable
            elif method in PEERS:
                python = Path(args.peer_python)
                if not python.exists():
                    rows.append({**row, "status": f"not run: {python} missing (run "
                                 "benchmarks/science/setup_peers.sh)"})  # fmt: skip
                    continue
            else:
                python = sys.executable
            print(f"{method}: running ...", flush=True)
            res = _run_child(tt, python, method, work, args, timeout=args.timeout)
            if res["rc"] != 0:
                row.update(status=f"failed: {res['error']}", wall_s=res["wall_s"])
                print(res.get("log_tail", ""), file=sys.stderr)
                rows.append(row)
                continue
            pred = np.load(work / f"{method}.npy")
        if res.get("rows") == "held_out":
            full_pred = np.full(truth.shape, np.nan, dtype=np.float32)
            full_pred[test] = pred
            pred = full_pred
        rho = spearman_per_cell(pred[test], truth[test])
        rho_rare = spearman_per_cell(pred[test & rare], truth[test & rare])
        observed, auroc = diagnostics_per_cell(pred[test], truth[test], noisy[test].toarray())
        row.update(spearman_observed=float(np.nanmean(observed)),
                   dropout_auroc=float(np.nanmean(auroc)))  # fmt: skip
        row.update({k: v for k, v in res.items() if k not in ("rc",)})
        row.update(spearman_all=float(np.nanmean(rho)), n_all=int(np.isfinite(rho).sum()),
                   spearman_rare=float(np.nanmean(rho_rare)),
                   n_rare=int(np.isfinite(rho_rare).sum()), status="ok")  # fmt: skip
        rows.append(row)
    base = next((r for r in rows if r["method"] == "noisy" and "spearman_all" in r), None)
    for r in rows:
        if base and "spearman_all" in r:
            r["increase_all"] = r["spearman_all"] - base["spearman_all"]
            r["increase_rare"] = r["spearman_rare"] - base["spearman_rare"]

    print()
    print_table(rows)
    if ckpt_info:
        print(f"\nscprint checkpoint: {json.dumps(ckpt_info)}")
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s; intermediate files in {work}")
    common = {
        "benchmark": "science_denoise",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": args.seed,
        "keep": args.keep,
        "kept_fraction": kept,
        "n_genes": len(genes),
        "test_frac": args.test_frac,
        "held_out_cells": int(test.sum()),
        "held_out_rare_cells": int((test & rare).sum()),
        "data": "retina: grnndata 1.3.2 sdist tests/test.h5ad",
        "knn_k": args.knn_k,
        "scvi_epochs": args.scvi_epochs,
        "threads": args.threads,
        "checkpoint": ckpt_info,
        "machine": machine,
        "total_s": round(total, 1),
    }
    append_records(Path(args.out), common, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
