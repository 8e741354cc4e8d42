"""Macro F1, accuracy, training time and peak RSS of our tabular classifiers
(``scprint.tabular``: TabNet SIMS and scTab presets, MLP, linear) beside scikit-learn's
logistic regression and the reference pytorch-tabnet at matched settings, on the retina
cells (stratified folds) and the wu2020 T cells (folds by patient), in one invocation.

Run from the repository root (after ``bash benchmarks/setup_reference_tabnet.sh``, which
installs PyPI ``pytorch-tabnet`` 4.1.0 with torch 2.13 in ``~/.cache/ref-tabnet-venv``)::

    .venv/bin/python benchmarks/tabular.py --threads 1

Options: ``--datasets`` (default retina wu2020), ``--methods`` (default all of
``tabnet tabnet-sctab mlp linear logreg pytorch-tabnet pytorch-tabnet-sctab``), ``--folds``
(5), ``--n-genes`` (input genes, default 2000 on both data sets), ``--max-epochs`` (100,
every neural model), ``--patience`` (20, every neural model), ``--batch-size`` (128),
``--val-size`` (0.2), ``--seed`` (0), ``--threads`` (1), ``--timeout`` (seconds per
(method, data set), default 1800), ``--data-dir`` (default ``../shared/data``),
``--ref-python``, ``--out`` (JSON lines, default ``benchmarks/results/tabular.jsonl``).

Data (raw counts): ``retina_1k.h5ad`` (1,000 cells, labels ``obs["cell_type"]``, 11 types,
microglia 5 cells) and ``wu2020_tcells_200.h5ad`` (200 T cells, labels
``obs["cluster_orig"]``, 16 subtypes, one of them a single cell; donors ``obs["patient"]``,
14). ``obsm`` is dropped after reading (the AIRR table of some versions needs awkward).

Folds and inputs, prepared once in this process and identical for every method:

* retina: ``StratifiedKFold(--folds, shuffle=True, random_state=--seed)``; wu2020:
  ``GroupKFold(--folds)`` by patient, so the test patients are never seen in training.
  A test fold can then hold subtypes that its training fold lacks: no method can get those
  cells right. Macro F1 is sklearn's ``f1_score(average="macro",
  labels=sorted(set(y_test)))``, i.e. over the classes present in the test fold's truth
  (classes only predicted, never true, are left out); accuracy is over all test cells.
* genes: the ``--n-genes`` genes of highest variance of log1p(1e4-normalised) expression,
  computed on the training fold only (training + validation cells).
* normalisation: counts / the cell's total over *all* genes x 1e4, then log1p. Our models
  do it inside their pipeline from the counts; for scikit-learn and pytorch-tabnet this
  script does the same on the same genes (timed as part of their training).
* validation (early stopping): within each training fold, ``scprint.tabular.split(labels,
  val_size=0.2, seed=--seed)`` (stratified, what our ``fit`` does internally; checked
  against the classifier's ``val_rows``). On wu2020 a donor-wise validation split would
  leave two or three patients: stratified is used there too. pytorch-tabnet gets the same
  training and validation cells (``eval_set``); logistic regression, which has no early
  stopping, trains on the whole training fold.

Methods:

ours (``tabnet``, ``tabnet-sctab``, ``mlp``, ``linear``)
    ``scprint.tabular.fit(train_fold, label_key=..., model=..., genes=..., val_size,
    max_epochs, batch_size, patience, seed, accelerator="cpu")``, then ``predict`` on the
    test fold, each preset as a user gets it: a plain torch training loop (no Lightning
    import); early stopping once neither the validation macro F1 nor the validation loss
    has improved for ``patience`` epochs, the best-F1 epoch kept; inverse-frequency class
    weights; gradient clipping 0.5; the validation temperature does not change the
    argmax. ``linear`` is multinomial logistic regression solved by full-batch L-BFGS
    with its L2 penalty chosen on the validation cells among 8 values (1e-4 to 0.3),
    then refit on the whole training fold (the preset's defaults).
``logreg``
    ``LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")`` (lbfgs,
    multinomial); the balanced weights are the same inverse-frequency formula as ours.
``pytorch-tabnet`` (``TabNetClassifier``, reference venv), mirroring ``tabnet`` (SIMS)
    n_d 8, n_a 8, n_steps 3, gamma 1.3, n_independent 2, n_shared 2, momentum 0.02,
    epsilon 1e-15, mask sparsemax, lambda_sparse 1e-3, virtual batch 128; Adam lr 0.01,
    weight decay 1e-3; ReduceLROnPlateau factor 0.75, patience 20; gradient clipping 0.5;
    the same batch size, max epochs, patience and seed; cross-entropy weighted with our
    class-weight formula (``loss_fn``); ``drop_last`` only when one cell would be left
    over (as ours); ``compute_importance=False``.
``pytorch-tabnet-sctab``, mirroring ``tabnet-sctab``
    n_d 128, n_a 64, n_steps 1, n_shared 3, n_independent 5, virtual batch 256, mask
    entmax(1.5), lambda_sparse 1e-5; AdamW lr 5e-3, weight decay 0.05, StepLR 0.9 per
    epoch.

Differences left between ours and pytorch-tabnet (not settable there): pytorch-tabnet
early-stops on validation balanced accuracy (its nearest metric to macro F1, our monitor)
and its plateau scheduler follows that metric (``mode="max"``), ours the validation loss;
it trains on the training classes only (validation cells of a class absent from the
training part are dropped from its ``eval_set``, counted in the records). Both keep the
best epoch's weights. pytorch-tabnet 4.1 cannot step torch 2.13's ``ReduceLROnPlateau``
(it looks for the method ``is_better``, now ``_is_better``): a subclass adds the old name
back, nothing else changes.

Every (method, data set) runs in a fresh subprocess that loops over the folds (ours and
logistic regression with this interpreter, pytorch-tabnet with ``--ref-python``);
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads`` are ``--threads``.
"train s" is the wall time of the training calls summed over folds (prediction excluded).
"peak RSS" is the child process's high-water mark, imports and data included: the larger
of its VmHWM after imports and data loading and its VmHWM over the training loop (reset
through ``/proc/self/clear_refs`` before it). ``wait4``'s ``ru_maxrss`` is not used: Linux
carries the parent's high-water mark over fork + exec, so it never reads below this
process's own RSS (~700 MB here after preparing the folds); it is kept in the records as
``wait4_maxrss_mb``. "RSS before" is the resident set after imports and data loading,
right before the first fold; "added" the peak of the training loop minus that.
On a shared machine read ratios of methods measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402
    REPO,
    SHARED,
    _child_env,
    _loadavg,
    _reset_hwm,
    _run,
    _status_mb,
    _tail,
    machine_info,
)

__all__ = ["main"]

DEFAULT_DATA_DIR = SHARED / "data"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "tabular.jsonl"
DEFAULT_REF_PYTHON = Path.home() / ".cache" / "ref-tabnet-venv" / "bin" / "python"
RESULT_TAG = "TABULAR-RESULT "
TARGET_SUM = 1e4

DATASETS = {
    "retina": {"file": "retina_1k.h5ad", "label_key": "cell_type", "group_key": None},
    "wu2020": {"file": "wu2020_tcells_200.h5ad", "label_key": "cluster_orig",
               "group_key": "patient"},
}  # fmt: skip
OURS = ("tabnet", "tabnet-sctab", "mlp", "linear")
REFERENCE = {"pytorch-tabnet": "tabnet", "pytorch-tabnet-sctab": "tabnet-sctab"}
METHODS = (*OURS, "logreg", *REFERENCE)

# pytorch-tabnet settings mirroring our presets (checked against scprint.tabular.PRESETS in
# the parent process, so that a change of our presets cannot silently unmatch them).
REF_SETTINGS = {
    "tabnet": {
        "model": {"n_d": 8, "n_a": 8, "n_steps": 3, "gamma": 1.3, "n_independent": 2,
                  "n_shared": 2, "momentum": 0.02, "epsilon": 1e-15, "mask": "sparsemax"},
        "virtual_batch_size": 128,
        "lambda_sparse": 1e-3,
        "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 1e-3,
                      "scheduler": "plateau", "plateau_factor": 0.75, "plateau_patience": 20},
    },
    "tabnet-sctab": {
        "model": {"n_d": 128, "n_a": 64, "n_steps": 1, "gamma": 1.3, "n_independent": 5,
                  "n_shared": 3, "momentum": 0.02, "epsilon": 1e-15, "mask": "entmax15"},
        "virtual_batch_size": 256,
        "lambda_sparse": 1e-5,
        "optimizer": {"name": "adamw", "lr": 5e-3, "weight_decay": 0.05,
                      "scheduler": "step", "step_gamma": 0.9},
    },
}  # fmt: skip
GRADIENT_CLIP = 0.5  # fit()'s default gradient_clip_val


# --------------------------------------------------------------------------- data


def load_dataset(path: Path, label_key: str, group_key: str | None):
    """(AnnData with raw counts as CSR float32, obsm dropped, unique var names)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    try:
        adata = ad.read_h5ad(path)
        for k in list(adata.obsm.keys()):
            del adata.obsm[k]
    except Exception:  # e.g. an AIRR obsm that needs awkward: read X / obs / var by hand
        import h5py
        import pandas as pd

        with h5py.File(path, "r") as f:
            g = f["X"]
            shape = tuple(g.attrs["shape"])
            X = sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape)
            obs = ad.io.read_elem(f["obs"])
            var_index = ad.io.read_elem(f["var"]).index
        cols = [c for c in (label_key, group_key) if c]
        adata = ad.AnnData(X, obs=pd.DataFrame(obs[cols]), var=pd.DataFrame(index=var_index))
    if not sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.var_names_make_unique()
    return adata


def normalised(X, genes) -> object:
    """Dense float32 log1p(counts / total over all genes x 1e4) of the columns ``genes``."""
    import numpy as np

    depth = np.asarray(X.sum(1)).ravel().astype(np.float64)
    scale = TARGET_SUM / np.maximum(depth, 1.0)
    sub = X[:, genes].toarray().astype(np.float64)
    return np.log1p(sub * scale[:, None]).astype(np.float32)


def top_variance_genes(X, n: int) -> list[int]:
    """Columns of the ``n`` largest variances of log1p(1e4-normalised) expression."""
    import numpy as np
    import scipy.sparse as sp

    depth = np.asarray(X.sum(1)).ravel().astype(np.float64)
    Y = sp.csr_matrix(sp.diags(TARGET_SUM / np.maximum(depth, 1.0)) @ X)
    Y.data = np.log1p(Y.data)
    mean = np.asarray(Y.mean(0)).ravel()
    sq = np.asarray(Y.multiply(Y).mean(0)).ravel()
    var = sq - mean**2
    order = np.argsort(-var, kind="stable")[: min(n, X.shape[1])]
    return sorted(int(i) for i in order)


def prepare(args, name: str, path: Path) -> dict:
    """Folds, validation splits and genes of one data set (the same for every method)."""
    import numpy as np
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    from scprint.tabular import split

    d = DATASETS[name]
    adata = load_dataset(path, d["label_key"], d["group_key"])
    y = adata.obs[d["label_key"]].astype(str).to_numpy()
    idx = np.arange(adata.n_obs)
    if d["group_key"] is None:
        cv = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
        folds = list(cv.split(idx, y))
    else:
        groups = adata.obs[d["group_key"]].astype(str).to_numpy()
        folds = list(GroupKFold(args.folds).split(idx, y, groups))
    n_genes = args.n_genes.get(name, 2000)
    out = []
    for train, test in folds:
        parts = split(y[train], val_size=args.val_size, seed=args.seed)
        genes = top_variance_genes(adata.X[train], n_genes)
        out.append({
            "train": train.tolist(),
            "test": test.tolist(),
            "fit_train": parts["train"].tolist(),  # positions within the training fold
            "fit_val": parts["val"].tolist(),
            "genes": genes,
            "gene_names": adata.var_names[genes].tolist(),
            "unseen_test_cells": int((~np.isin(y[test], y[train])).sum()),
        })  # fmt: skip
    return {
        "dataset": name,
        "path": str(path),
        "label_key": d["label_key"],
        "group_key": d["group_key"],
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "n_classes": len(set(y)),
        "n_genes": n_genes,
        "folds": out,
    }


def check_ref_settings() -> None:
    """Fail when REF_SETTINGS no longer mirrors our presets."""
    from dataclasses import asdict

    from scprint.tabular.module import OptimizerConfig
    from scprint.tabular.nn import TabNetConfig

    for preset, cfg, opt in (
        ("tabnet", TabNetConfig.sims(), OptimizerConfig.sims()),
        ("tabnet-sctab", TabNetConfig.sctab(), OptimizerConfig.sctab()),
    ):
        ref = REF_SETTINGS[preset]
        mk = cfg.model_kwargs()
        ours = {k: mk[k] for k in ref["model"]}
        ours_opt = {k: asdict(opt)[k] for k in ref["optimizer"]}
        if (
            ours != ref["model"]
            or mk["virtual_batch_size"] != ref["virtual_batch_size"]
            or cfg.lambda_sparse != ref["lambda_sparse"]
            or ours_opt != ref["optimizer"]
        ):
            raise SystemExit(f"REF_SETTINGS[{preset!r}] no longer matches our preset: {mk}")


# --------------------------------------------------------------------------- children


def _metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(y_true))
    f1 = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {"macro_f1": float(f1), "accuracy": float(accuracy_score(y_true, y_pred))}


def _class_weights(codes, n_classes: int):
    """scprint.tabular.class_weights' formula (n / (C count_c), mean 1 over classes)."""
    import numpy as np

    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    w[present] /= w[present].mean()
    w[~present] = w[present].max()
    return w.astype(np.float32)


def _fit_ours(args, adata, y, fold, method):
    import numpy as np

    from scprint import tabular

    d = DATASETS[args.dataset]
    train = adata[np.asarray(fold["train"])].copy()
    test = adata[np.asarray(fold["test"])].copy()
    t0 = time.perf_counter()
    clf = tabular.fit(train, label_key=d["label_key"], model=method,
                      genes=fold["gene_names"], val_size=args.val_size,
                      max_epochs=args.max_epochs, batch_size=args.batch_size,
                      patience=args.patience, seed=args.seed, accelerator="cpu",
                      progress=False)  # fmt: skip
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = clf.predict(test).to_numpy().astype(str)
    pred_s = time.perf_counter() - t0
    extra = {
        "epochs": clf.provenance.get("epochs"),
        "best_val_macro_f1": clf.provenance.get("best_val_macro_f1"),
        "val_split_matches": bool(np.array_equal(np.sort(clf.val_rows), fold["fit_val"])),
    }
    return pred, fit_s, pred_s, extra


def _fit_logreg(args, adata, y, fold, method):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    train, test = np.asarray(fold["train"]), np.asarray(fold["test"])
    t0 = time.perf_counter()
    Xtr = normalised(adata.X[train], fold["genes"])
    lr = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    lr.fit(Xtr, y[train])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = lr.predict(normalised(adata.X[test], fold["genes"])).astype(str)
    pred_s = time.perf_counter() - t0
    return pred, fit_s, pred_s, {"n_iter": int(np.max(lr.n_iter_))}


def _plateau_for_tabnet():
    """ReduceLROnPlateau as pytorch-tabnet 4.1 expects it. pytorch-tabnet steps a scheduler
    with the metric only when the class has ``is_better``, which torch >= 2.x renamed
    ``_is_better``; without it, it calls ``step()`` and fails. Same behaviour otherwise."""
    import torch

    class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def is_better(self, a, best):
            return self._is_better(a, best)

    return Plateau


def _fit_reference(args, adata, y, fold, method):
    import numpy as np
    import torch
    from pytorch_tabnet.tab_model import TabNetClassifier

    s = REF_SETTINGS[REFERENCE[method]]
    m, o = s["model"], s["optimizer"]
    train = np.asarray(fold["train"])
    tr = train[np.asarray(fold["fit_train"], dtype=np.int64)]
    va = train[np.asarray(fold["fit_val"], dtype=np.int64)]
    test = np.asarray(fold["test"])
    classes = sorted(set(y[tr]))
    code = {c: i for i, c in enumerate(classes)}
    keep = np.array([c in code for c in y[va]], dtype=bool)
    t0 = time.perf_counter()
    Xtr = normalised(adata.X[tr], fold["genes"])
    Xva = normalised(adata.X[va[keep]], fold["genes"])
    ytr = np.array([code[c] for c in y[tr]])
    yva = np.array([code[c] for c in y[va[keep]]])
    weight = torch.from_numpy(_class_weights(ytr, len(classes)))
    if o["scheduler"] == "plateau":
        sched = _plateau_for_tabnet()
        sched_params = {"mode": "max", "factor": o["plateau_factor"],
                        "patience": o["plateau_patience"]}  # fmt: skip
    else:
        sched = torch.optim.lr_scheduler.StepLR
        sched_params = {"step_size": 1, "gamma": o["step_gamma"]}
    clf = TabNetClassifier(
        n_d=m["n_d"], n_a=m["n_a"], n_steps=m["n_steps"], gamma=m["gamma"],
        n_independent=m["n_independent"], n_shared=m["n_shared"], momentum=m["momentum"],
        epsilon=m["epsilon"], mask_type="sparsemax" if m["mask"] == "sparsemax" else "entmax",
        lambda_sparse=s["lambda_sparse"], clip_value=GRADIENT_CLIP, seed=args.seed,
        optimizer_fn=torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW,
        optimizer_params={"lr": o["lr"], "weight_decay": o["weight_decay"]},
        scheduler_fn=sched, scheduler_params=sched_params, verbose=0, device_name="cpu",
    )  # fmt: skip
    clf.fit(
        Xtr, ytr, eval_set=[(Xva, yva)], eval_name=["val"], eval_metric=["balanced_accuracy"],
        loss_fn=torch.nn.CrossEntropyLoss(weight=weight), max_epochs=args.max_epochs,
        patience=args.patience, batch_size=args.batch_size,
        virtual_batch_size=s["virtual_batch_size"], num_workers=0,
        drop_last=len(tr) % args.batch_size == 1, pin_memory=False,
        compute_importance=False,
    )  # fmt: skip
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = clf.predict(normalised(adata.X[test], fold["genes"]))
    pred = np.asarray(classes, dtype=object)[np.asarray(out, dtype=np.int64)].astype(str)
    pred_s = time.perf_counter() - t0
    extra = {
        "epochs": len(clf.history["loss"]),
        "best_epoch": int(clf.best_epoch),
        "best_val_balanced_accuracy": float(clf.best_cost),
        "val_cells_dropped": int((~keep).sum()),
    }
    return pred, fit_s, pred_s, extra


def child(args) -> dict:
    """(subprocess) Train and test one method on every fold of one data set."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    if args.child == "ours":
        import scprint.tabular  # noqa: F401  (trains without importing Lightning)

        fit_fn = _fit_ours
    elif args.child == "logreg":
        import sklearn.linear_model  # noqa: F401

        fit_fn = _fit_logreg
    else:
        import pytorch_tabnet.tab_model  # noqa: F401

        fit_fn = _fit_reference
    import_s = time.perf_counter() - t
    spec = json.loads(Path(args.spec).read_text())
    t = time.perf_counter()
    adata = load_dataset(Path(spec["path"]), spec["label_key"], spec["group_key"])
    y = adata.obs[spec["label_key"]].astype(str).to_numpy()
    load_s = time.perf_counter() - t
    gc.collect()
    rss_before = _status_mb("VmRSS")
    setup_peak = _status_mb("VmHWM")  # imports + data loading
    hwm = "VmHWM reset" if _reset_hwm() else "VmHWM (no reset: whole process)"
    load_before = _loadavg()
    folds = []
    for i, fold in enumerate(spec["folds"]):
        torch.manual_seed(args.seed)  # fit and TabNetClassifier also seed themselves
        pred, fit_s, pred_s, extra = fit_fn(args, adata, y, fold, args.method)
        y_test = y[np.asarray(fold["test"])]
        rec = {"fold": i, **_metrics(y_test, pred), "fit_s": round(fit_s, 2),
               "predict_s": round(pred_s, 3), "n_train": len(fold["train"]),
               "n_test": len(y_test), "n_test_classes": len(set(y_test)),
               "unseen_test_cells": fold["unseen_test_cells"], **extra}  # fmt: skip
        folds.append(rec)
        print(f"fold {i}: {json.dumps(rec)}", flush=True)
    from importlib.metadata import version

    return {
        "method": args.method,
        "impl": "reference" if args.child == "ref" else args.child,
        "dataset": spec["dataset"],
        "folds": folds,
        "import_s": round(import_s, 2),
        "load_s": round(load_s, 2),
        "rss_before_mb": round(rss_before, 1),
        "setup_peak_rss_mb": round(setup_peak, 1),
        "loop_peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "loop_peak_method": hwm,
        "torch": torch.__version__,
        "pytorch_tabnet": version("pytorch-tabnet") if args.child == "ref" else None,
        "sklearn": version("scikit-learn"),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }


# --------------------------------------------------------------------------- runner


def run_method(args, method: str, spec_path: Path, dataset: str, tmp: Path) -> dict:
    kind = "ours" if method in OURS else "logreg" if method == "logreg" else "ref"
    python = str(args.ref_python) if kind == "ref" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--child", kind, "--method", method,
           "--spec", str(spec_path), "--dataset", dataset, "--threads", str(args.threads),
           "--max-epochs", str(args.max_epochs), "--patience", str(args.patience),
           "--batch-size", str(args.batch_size), "--val-size", str(args.val_size),
           "--seed", str(args.seed)]  # fmt: skip
    env = _child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    log = tmp / f"{method}-{dataset}.log"
    t0 = time.monotonic()
    code, maxrss = _run(cmd, REPO, env, args.timeout, log)
    wall = time.monotonic() - t0
    base = {"method": method, "dataset": dataset, "process_wall_s": round(wall, 1)}
    if wall > args.timeout:
        return {**base, "status": "timeout", "error": f"killed after {args.timeout:.0f} s"}
    lines = [ln for ln in _tail(log, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        return {**base, "status": "failed", "error": _tail(log)[-2000:]}
    rec = json.loads(lines[-1][len(RESULT_TAG) :])
    f1 = [f["macro_f1"] for f in rec["folds"]]
    acc = [f["accuracy"] for f in rec["folds"]]
    sd = statistics.stdev if len(f1) > 1 else (lambda v: 0.0)
    rec.update(
        base,
        status="ok",
        macro_f1_mean=round(statistics.mean(f1), 4),
        macro_f1_sd=round(sd(f1), 4),
        accuracy_mean=round(statistics.mean(acc), 4),
        accuracy_sd=round(sd(acc), 4),
        train_s_total=round(sum(f["fit_s"] for f in rec["folds"]), 2),
        peak_rss_mb=round(max(rec["setup_peak_rss_mb"], rec["loop_peak_rss_mb"]), 1),
        wait4_maxrss_mb=round(maxrss, 1),  # floored by this process's RSS: see docstring
        added_rss_mb=round(rec["loop_peak_rss_mb"] - rec["rss_before_mb"], 1),
    )
    epochs = [f["epochs"] for f in rec["folds"] if f.get("epochs") is not None]
    rec["epochs_mean"] = round(statistics.mean(epochs), 1) if epochs else None
    return rec


def print_table(name: str, spec: dict, rows: list[dict]) -> None:
    lr = next((r for r in rows if r["method"] == "logreg" and r["status"] == "ok"), None)
    print(f"\n### {name}: {spec['n_obs']:,} cells, {spec['n_classes']} classes, "
          f"{len(spec['folds'])} folds, {spec['n_genes']:,} genes\n")  # fmt: skip
    head = ("| method | macro F1 (mean ± sd) | accuracy (mean ± sd) | train s (total) | "
            "epochs (mean) | peak RSS MB | RSS before MB | added MB | F1 / LR F1 |")  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['method']} | {r['status']} | | | | | | | |")
            continue
        ratio = (f"{r['macro_f1_mean'] / lr['macro_f1_mean']:.2f}"
                 if lr and lr["macro_f1_mean"] > 0 else "n/a")  # fmt: skip
        ep = "" if r.get("epochs_mean") is None else f"{r['epochs_mean']:.0f}"
        print(f"| {r['method']} | {r['macro_f1_mean']:.3f} ± {r['macro_f1_sd']:.3f} | "
              f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f} | {r['train_s_total']:.1f} | "
              f"{ep} | {r['peak_rss_mb']:,.0f} | {r['rss_before_mb']:,.0f} | "
              f"{r['added_rss_mb']:,.0f} | {ratio} |")  # fmt: skip
    unseen = [f["unseen_test_cells"] for f in spec["folds"]]
    if any(unseen):
        print(f"\nTest cells whose class is absent from their training fold (no method can "
              f"get them right), per fold: {unseen}.")  # fmt: skip


def verdict(results: dict[str, list[dict]]) -> list[str]:
    def get(rows, m):
        return next((r for r in rows if r["method"] == m and r["status"] == "ok"), None)

    lines = []
    goal1 = []
    for name, rows in results.items():
        lr = get(rows, "logreg")
        ours = [r for r in rows if r["method"] in OURS and r["status"] == "ok"]
        if lr is None or not ours:
            goal1.append(None)
            lines.append(f"- {name}: goal 1 not measured (logreg or ours missing)")
            continue
        best = max(ours, key=lambda r: r["macro_f1_mean"])
        ok = best["macro_f1_mean"] >= lr["macro_f1_mean"]
        goal1.append(ok)
        lines.append(f"- {name}: best of ours {best['method']} macro F1 "
                     f"{best['macro_f1_mean']:.3f} vs logistic regression "
                     f"{lr['macro_f1_mean']:.3f}: {'met' if ok else 'MISSED'}")  # fmt: skip
    goal2 = []
    for name, rows in results.items():
        for ref, mine in REFERENCE.items():
            a, b = get(rows, mine), get(rows, ref)
            if a is None or b is None:
                continue
            acc_ok = a["accuracy_mean"] >= b["accuracy_mean"]
            mem_ok = a["peak_rss_mb"] < b["peak_rss_mb"]
            if mine == "tabnet":
                goal2.append(acc_ok and mem_ok)
            lines.append(f"- {name}: {mine} accuracy {a['accuracy_mean']:.3f} vs {ref} "
                         f"{b['accuracy_mean']:.3f} ({'>=' if acc_ok else '<'}); peak RSS "
                         f"{a['peak_rss_mb']:,.0f} vs {b['peak_rss_mb']:,.0f} MB "
                         f"({'lower' if mem_ok else 'NOT lower'}); added "
                         f"{a['added_rss_mb']:,.0f} vs {b['added_rss_mb']:,.0f} MB")  # fmt: skip

    def word(v):
        return "not measured" if not v or None in v else "MET" if all(v) else "MISSED"

    head = [f"Goal 1 (our best macro F1 >= logistic regression on both): {word(goal1)}",
            f"Goal 2 (our TabNet at least as accurate as pytorch-tabnet at lower peak RSS, "
            f"on both): {word(goal2 if len(goal2) == len(results) else [])}"]  # fmt: skip
    return head + lines


def _write(args, run_id: str, info: dict, recs: list[dict]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        for rec in recs:
            full = {"script": "benchmarks/tabular.py", "run": run_id, **rec,
                    "settings": {k: getattr(args, k) for k in ("folds", "n_genes",
                                 "max_epochs", "patience", "batch_size", "val_size", "seed",
                                 "threads")},
                    "machine": info, "argv": sys.argv[1:]}  # fmt: skip
            fh.write(json.dumps(full) + "\n")


def _n_genes(values: list[str]) -> dict[str, int]:
    """``--n-genes 2000`` (every data set) or ``retina=2000 wu2020=1000``."""
    out = dict.fromkeys(DATASETS, 2000)
    for v in values:
        if "=" in v:
            k, n = v.split("=", 1)
            out[k] = int(n)
        else:
            out = dict.fromkeys(DATASETS, int(v))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-genes", nargs="+", default=["2000"],
                    help="N (every data set) or NAME=N")  # fmt: skip
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--val-size", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", choices=["ours", "logreg", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(RESULT_TAG + json.dumps(child(args)), flush=True)
        return 0
    args.n_genes = _n_genes(args.n_genes)
    methods = list(args.methods)
    if any(m in REFERENCE for m in methods):
        if not args.ref_python.exists():
            print(f"pytorch-tabnet's interpreter {args.ref_python} is missing (run bash "
                  "benchmarks/setup_reference_tabnet.sh); skipping the reference.",
                  file=sys.stderr)  # fmt: skip
            methods = [m for m in methods if m not in REFERENCE]
        check_ref_settings()
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['mem_total_mb']} MB; "
          f"loadavg {info['loadavg']}; threads {args.threads}; max epochs "
          f"{args.max_epochs}, patience {args.patience}, batch {args.batch_size}", flush=True)  # fmt: skip
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    results: dict[str, list[dict]] = {}
    specs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tabular-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for name in args.datasets:
            path = args.data_dir / DATASETS[name]["file"]
            if not path.exists():
                print(f"data file not found: {path} (pass --data-dir)", file=sys.stderr)
                return 2
            spec = prepare(args, name, path)
            specs[name] = spec
            spec_path = tmp / f"{name}.json"
            spec_path.write_text(json.dumps(spec))
            rows = []
            for method in methods:
                print(f"{name}: {method} ... (loadavg {_loadavg()})", flush=True)
                rec = run_method(args, method, spec_path, name, tmp)
                if rec["status"] != "ok":
                    print(f"  {method} {name}: {rec['status']}\n{rec.get('error', '')}")
                else:
                    print(f"  macro F1 {rec['macro_f1_mean']:.3f}, accuracy "
                          f"{rec['accuracy_mean']:.3f}, train {rec['train_s_total']:.1f} s, "
                          f"peak {rec['peak_rss_mb']:,.0f} MB", flush=True)  # fmt: skip
                _write(args, run_id, info, [rec])
                rows.append(rec)
            results[name] = rows
    for name, rows in results.items():
        print_table(name, specs[name], rows)
    print()
    for line in verdict(results):
        print(line)
    print(f"\nMacro F1 is over the classes present in each test fold's truth. loadavg at the "
          f"end: {_loadavg()}; records appended to {os.path.relpath(args.out)} (run {run_id})")  # fmt: skip
    return 0 if all(r["status"] == "ok" for rows in results.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
