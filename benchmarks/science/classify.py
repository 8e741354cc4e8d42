"""The scPRINT paper's cell-type classification benchmark on the shared real data.

Run from the repository root (``bash benchmarks/science/setup_celltypist.sh`` first installs
CellTypist and XGBoost in ``~/.cache/celltypist-venv``; without it their rows say why they
did not run)::

    .venv/bin/python benchmarks/science/classify.py

Protocol (the paper's "Cell type classification" benchmark, on the two labelled count data
sets we have):

* Data (raw counts, read by ``benchmarks/tabular.py``'s loader from the shared data folder,
  ``--data-dir``): ``retina`` (``retina_1k.h5ad``, 1,000 CELLxGENE retina nuclei, labels
  ``obs["cell_type"]``, 11 types) and ``wu2020`` (``wu2020_tcells_200.h5ad``, 200 T cells
  of 14 patients, labels ``obs["cluster_orig"]``, 16 subtypes; gene symbols).
* Held-out cells: ``benchmarks/science/splits.py``, ``held_out(name, obs, --seed)``: half of
  each retina cell type (501 cells), whole wu2020 patients (8 patients, 118 cells). The
  science model (``pretrain.py``) was pretrained, with labels, on the other cells only;
  the script checks that the ``held_out.json`` beside the checkpoint lists exactly these
  cells and stops otherwise.
* Folds, within the held-out cells only: retina ``StratifiedKFold(--folds, shuffle=True,
  random_state=--seed)`` on ``cell_type``; wu2020 ``GroupKFold(--folds)`` by ``patient``
  (labels ``cluster_orig``), so that a test patient is never seen in training.
* Fold k: the test cells are the held-out cells of fold k; the training cells are every
  non-held-out cell plus the held-out cells of the other folds. Every trained method
  trains on exactly these cells (no cell QC); zero-shot scPRINT trains on nothing more
  (its pretraining saw the non-held-out cells, with labels). Every method is scored on
  the same test cells.
* Metrics (``benchmarks/tabular.py``'s ``_metrics``): macro F1, scikit-learn's
  ``f1_score(average="macro", labels=sorted(set(y_test)))`` over the classes present in
  the test fold's truth, and accuracy over all test cells; mean and standard deviation
  over the folds. A test cell whose class is absent from its training cells is an error
  for every method (no method can predict it); the table says how many there are.

Methods (each (method, data set) runs in its own subprocess with ``--threads`` threads,
which loops over the folds; "fit s" sums the training time over the folds, prediction
and I/O excluded; "peak RSS" is the child's high-water mark, imports and data included):

``scprint zero-shot``
    ``scprint.tasks.classify`` with the pretrained checkpoint (``--ckpt``) on the held-out
    cells, the classifier of the data set's label: ``cell_type_ontology_term_id`` for the
    retina (the predicted ontology id is turned into the ``cell_type`` name by the data
    set's own id -> name table, else the ontology's name), ``cluster_orig`` for wu2020
    (pretraining learnt it as a flat label). ``max_len`` (``--max-len``, default the
    checkpoint's training ``max_len``) genes per cell, "random expr", temperature 1, no
    "unknown" threshold. When the checkpoint has no classifier for the label the row
    says so (the linear-probe row then stands in for it).
``scprint fine-tuned``
    per fold, the checkpoint's weights continue training with the pretraining loss
    (``scprint.train.ScPrintModule``: denoising, hierarchical classification of every
    label column, bottleneck and contrastive losses, weighted as in pretraining;
    ``--finetune-losses class``: the classification losses only) on the fold's training
    cells, through
    ``scdataloader.Collection`` / ``DataModule`` (the checkpoint's genes and label
    hierarchies; collator "random expr", sequences of ``--finetune-max-len`` genes
    (default: the checkpoint's pretraining ``max_len``, 1,024 for the science model)
    with the pretraining's share of unexpressed genes (``zero_genes`` scaled); batches of
    ``--finetune-batch`` 16 cells drawn with weights over the labels, as in pretraining)
    for ``--finetune-epochs`` 2 epochs of as many cells as the training set holds, at most
    ``--finetune-max-steps`` 50 optimiser steps per fold (retina: 50 steps, about 0.9
    epoch; wu2020: 2 epochs, 22 or 24 steps); AdamW at the learning rate the checkpoint's
    training ended at (``--finetune-lr``; its optimiser's rate, which pretraining's plateau
    scheduler lowers from the configured one: 1.8e-4 for the science model, configured at
    5e-4) and its weight decay, with a linear warm-up of ``--finetune-warmup`` 10
    steps and then a constant rate (no validation split: every training cell trains, so
    the plateau scheduler of pretraining, which follows a validation loss, is left out);
    gradient clipping 100, as ``pretrain.py``. Then ``classify`` on the test fold as
    above. When the checkpoint has no classifier for the label, a new one is added (a new
    placeholder token and head, the other weights loaded) and trained in the same way;
    the row says so.
``scprint linear probe``
    ``scprint.tasks.embed`` with the frozen pretrained checkpoint, standardised on the
    training cells, then the logistic regression below on them: a user's baseline for a
    label the model has no classifier for. The cells are embedded with each context
    length of ``--probe-max-lens`` (default: the pretraining's ``max_len`` and 2,200, the
    tasks' default), and two sets of features are taken from each: the default cell
    embedding and the class embeddings, concatenated, and the same with the mean of the
    expressed genes' last-layer tokens (``embed(..., gene_mean=True)``) appended. Per
    fold, the length and the set are chosen by an inner 3-fold cross-validation (macro
    F1) on the fold's training cells that pretraining never saw (the other held-out
    folds; stratified for the retina, by patient for wu2020), the logistic regression of
    each inner split trained on all the other training cells; ties go to the first
    candidate (the shorter length, then the set without the gene mean). The test fold
    plays no part in the choice.
``logistic regression``
    ``benchmarks/tabular.py``'s: ``LogisticRegression(C=1.0, max_iter=1000,
    class_weight="balanced")`` on log1p(1e4-normalised) expression of the 2,000 genes of
    highest variance of the fold's training cells (``--n-genes``).
``CellTypist`` 1.7.1 (its own venv, ``--peer-python``)
    ``celltypist.train`` on the training cells, log1p(1e4-normalised), every gene detected
    in them, its defaults (``C=1.0``, ``solver`` lbfgs, ``max_iter`` 1000, no feature
    selection, no SGD); ``celltypist.annotate`` of the test cells (all their genes,
    normalised the same way) with that in-memory model, ``majority_voting=False``; no
    internet (``CELLTYPIST_FOLDER`` points into the work folder).
``XGBoost on PCs`` (xgboost-cpu 3.2.0, the same venv)
    ``sklearn.decomposition.PCA(50, random_state=--seed)`` fitted on the training cells'
    log1p(1e4-normalised) expression of the same 2,000 genes, then ``XGBClassifier`` with
    its default hyperparameters, ``random_state=--seed``.
ours: ``linear``, ``tabnet`` (SIMS), ``tabnet-sctab`` (scTab), ``mlp`` (scTab's MLP)
    ``scprint.tabular.fit`` presets as ``benchmarks/tabular.py`` runs them (its child,
    the same 2,000 genes, ``--max-epochs`` 100, ``--patience`` 20, batch 128, validation
    split 0.2 of the training cells for early stopping).
``scalr`` (ours)
    scaLR's pipeline with ``scprint.tabular.selection.chunked_feature_selection``: the
    10,000 genes of highest variance of the training cells (``--scalr-genes``) in chunks
    of 2,000, one linear model each (L2 1e-3), the ``--scalr-top`` 1,000 genes of highest
    mean absolute weight kept, then the ``linear`` preset trained on them.

Options: ``--datasets``, ``--methods`` (default all but ``mlp``), ``--folds``,
``--finetune-epochs`` (default 2), ``--finetune-max-steps`` (50), ``--finetune-max-len``
(pretraining's), ``--finetune-lr``, ``--finetune-losses`` (``all``), ``--finetune-head``
(``pretrained``; ``flat``: the fold's labels as given), ``--max-len`` (inference),
``--probe-max-lens``, ``--seed``, ``--threads`` (default 1),
``--ckpt`` (default ``splits.science_checkpoint()``; when that file does not exist the
demo's debug model ``scprint.demo.pretrained()`` is used, with a note: it was pretrained
on all 1,000 retina cells, so its zero-shot row is not on held-out cells), ``--out``
(JSON lines, default ``benchmarks/results/science_classify.jsonl``), ``--work`` (keep the
intermediate files), ``--timeout`` (per child, seconds), ``--data-dir``, ``--reuse RUN
[RUN ...]`` (the tables also show the rows of earlier runs, their ``run`` ids in ``--out``,
for the methods not run now, when they ran with the same folds, seed, genes and tabular
settings; scprint rows only from the same checkpoint: the baselines do not depend on the
checkpoint, so a new checkpoint needs only the scprint rows run again).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from common import checkpoint_collator, display_path, own_peak_rss_mb  # noqa: E402
from common import fmt as _fmt  # noqa: E402
from common import package_version as _version  # noqa: E402
from common import sha256 as _sha256  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "science_classify.jsonl"
DEFAULT_PEER_PYTHON = Path.home() / ".cache" / "celltypist-venv" / "bin" / "python"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
TARGET_SUM = 1e4

# data set -> (file, label column, group column, classifier of the model)
DATASETS = {
    "retina": ("retina_1k.h5ad", "cell_type", None, "cell_type_ontology_term_id"),
    "wu2020": ("wu2020_tcells_200.h5ad", "cluster_orig", "patient", "cluster_orig"),
}
SCPRINT = ("scprint-zeroshot", "scprint-finetuned", "scprint-probe")
PEERS = ("celltypist", "xgboost")
TABULAR = ("logreg", "linear", "tabnet", "tabnet-sctab", "mlp")  # benchmarks/tabular.py's
METHODS = (*SCPRINT, "logreg", *PEERS, "linear", "tabnet", "tabnet-sctab", "mlp", "scalr")
DEFAULT_METHODS = tuple(m for m in METHODS if m != "mlp")
LABELS = {
    "scprint-zeroshot": "scprint zero-shot",
    "scprint-finetuned": "scprint fine-tuned",
    "scprint-probe": "scprint linear probe (frozen)",
    "logreg": "logistic regression",
    "celltypist": "CellTypist",
    "xgboost": "XGBoost on 50 PCs",
    "linear": "ours: linear",
    "tabnet": "ours: tabnet (SIMS)",
    "tabnet-sctab": "ours: tabnet-sctab (scTab)",
    "mlp": "ours: mlp (scTab)",
    "scalr": "ours: scaLR (selection + linear)",
}


def _lognorm(X):
    """CSR float32 log1p(counts / the cell's total over all genes x 1e4)."""
    import numpy as np
    import scipy.sparse as sp

    X = sp.csr_matrix(X, dtype=np.float64)
    depth = np.asarray(X.sum(1)).ravel()
    Y = sp.csr_matrix(sp.diags(TARGET_SUM / np.maximum(depth, 1.0)) @ X)
    Y.data = np.log1p(Y.data)
    return Y.astype(np.float32)


def _import_benchmarks():
    """``benchmarks/tabular.py`` and ``benchmarks/science/splits.py`` (not a package)."""
    for p in (REPO / "benchmarks", HERE):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import splits
    import tabular

    return tabular, splits


# --------------------------------------------------------------------------- protocol


def held_out_folds(name: str, obs, n_folds: int, seed: int):
    """(held-out mask, [(train indices, test indices)] over all cells) of a data set."""
    import numpy as np
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    _, splits = _import_benchmarks()
    _, label_key, group_key, _ = DATASETS[name]
    held = splits.held_out(name, obs, seed=seed)
    idx = np.flatnonzero(held)
    y = obs[label_key].astype(str).to_numpy()[idx]
    if group_key is None:
        cv = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        parts = cv.split(idx, y)
    else:
        groups = obs[group_key].astype(str).to_numpy()[idx]
        if len(set(groups)) < n_folds:
            raise ValueError(
                f"{name}: {len(set(groups))} held-out {group_key}s cannot make {n_folds} folds "
                "by group; lower --folds."
            )
        parts = GroupKFold(n_folds).split(idx, y, groups)
    folds = []
    for _, test_pos in parts:
        test = np.sort(idx[test_pos])
        train = np.flatnonzero(~np.isin(np.arange(len(obs)), test))
        folds.append((train, test))
    return held, folds


def check_held_out(ckpt: Path, name: str, obs_names, held) -> str:
    """Compare the held-out cells with the ``held_out.json`` beside the checkpoint.

    Returns a note; raises SystemExit when the file exists and differs.
    """
    import numpy as np

    path = ckpt.parent / "held_out.json"
    if not path.exists():
        return f"no held_out.json beside {ckpt.name}: held-out cells not checked"
    listed = json.loads(path.read_text())
    if name not in listed:
        raise SystemExit(
            f"{path} lists no held-out cells of {name!r} (it has {sorted(listed)}): the model "
            "may have been pretrained on every cell of it. Pretrain it with "
            "benchmarks/science/pretrain.py, or pass another --ckpt."
        )
    mine = set(np.asarray(obs_names)[held].astype(str))
    theirs = set(map(str, listed[name]))
    if mine != theirs:
        raise SystemExit(
            f"{name}: the checkpoint's held-out cells ({len(theirs)}, {path}) differ from "
            f"splits.held_out ({len(mine)}; {len(mine - theirs)} only here, "
            f"{len(theirs - mine)} only there): the model has seen test cells, or the split "
            "seed differs (--seed). Pretrain again or pass the matching --seed."
        )
    return f"held-out cells equal held_out.json ({len(theirs)} cells)"


def prepare(args, name: str, work: Path) -> dict:
    """Load a data set, its held-out cells and folds; write the spec and the counts file
    the children read. Returns the spec."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from scprint.tabular import split

    tabular, _ = _import_benchmarks()
    file, label_key, group_key, head = DATASETS[name]
    path = Path(args.data_dir) / file
    if not path.exists():
        raise SystemExit(f"data file not found: {path} (pass --data-dir)")
    adata = tabular.load_dataset(path, label_key, group_key)
    y = adata.obs[label_key].astype(str).to_numpy()
    held, folds = held_out_folds(name, adata.obs, args.folds, args.seed)
    note = check_held_out(Path(args.ckpt), name, adata.obs_names, held) if args.science else ""
    spec_folds = []
    for train, test in folds:
        parts = split(y[train], val_size=args.val_size, seed=args.seed)
        genes = tabular.top_variance_genes(adata.X[train], args.n_genes)
        spec_folds.append({
            "train": train.tolist(),
            "test": test.tolist(),
            "fit_train": parts["train"].tolist(),
            "fit_val": parts["val"].tolist(),
            "genes": genes,
            "gene_names": adata.var_names[genes].tolist(),
            "unseen_test_cells": int((~np.isin(y[test], y[train])).sum()),
            "n_test_classes": len(set(y[test])),
        })  # fmt: skip
    id_to_label = {}
    if head != label_key and head in adata.obs:
        pairs = adata.obs[[head, label_key]].astype(str).drop_duplicates()
        id_to_label = dict(zip(pairs[head], pairs[label_key], strict=True))
    # the label columns a model may have been pretrained on (ontology ids) travel along
    keep = [c for c in adata.obs.columns if str(c).endswith("_ontology_term_id")]
    obs = adata.obs[keep].astype(str).copy()
    obs.index = adata.obs_names.astype(str)
    obs[label_key] = y
    counts = work / f"{name}.h5ad"
    ad.AnnData(adata.X, obs=obs, var=pd.DataFrame(index=adata.var_names)).write_h5ad(counts)
    spec = {
        "dataset": name,
        "path": str(path),
        "counts": str(counts),
        "label_key": label_key,
        "group_key": group_key,
        "head": head,
        "id_to_label": id_to_label,
        "n_obs": int(adata.n_obs),
        "n_vars": int(adata.n_vars),
        "n_classes": len(set(y)),
        "n_genes": args.n_genes,
        "held_out": np.flatnonzero(held).tolist(),
        "groups": adata.obs[group_key].astype(str).tolist() if group_key else None,
        "held_out_note": note,
        "folds": spec_folds,
    }
    (work / f"{name}.json").write_text(json.dumps(spec))
    return spec


# --------------------------------------------------------------------------- children


def _child_data(args):
    import anndata as ad

    spec = json.loads((Path(args.work) / f"{args.dataset}.json").read_text())
    adata = ad.read_h5ad(spec["counts"])
    return spec, adata


def _to_labels(pred_ids, spec, module) -> list[str]:
    """The model's predicted labels as the data set's labels (retina: id -> name)."""
    table = spec["id_to_label"]
    if not table:
        return [str(p) for p in pred_ids]
    h = module.hierarchies[spec["head"]]
    return [table.get(str(p)) or h.name(str(p)) for p in pred_ids]


def _scprint_setup(args):
    import torch

    torch.set_num_threads(args.threads)
    import scprint

    module = scprint.load(args.ckpt)
    return module


def _training_max_len(ckpt: Path) -> tuple[int, int, str]:
    """(max_len, zero_genes, mode) the checkpoint was trained with (defaults: the demo's)."""
    coll = checkpoint_collator(ckpt)
    return (int(coll.get("max_len", 256)), int(coll.get("zero_genes", 0)),
            str(coll.get("mode", "random expr")))  # fmt: skip


def _final_lr(ckpt: Path) -> float:
    """The learning rate the checkpoint's training ended at: its optimiser's, which the
    plateau scheduler has lowered from the configured one; the configured one (its
    hyperparameters' ``lr``) when the file holds no optimiser state."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for opt in state.get("optimizer_states") or []:
        for group in opt.get("param_groups") or []:
            if group.get("lr"):
                return float(group["lr"])
    return float((state.get("hyper_parameters") or {}).get("lr", 1e-4))


def _child_scprint_zeroshot(args) -> dict:
    import numpy as np

    from scprint.tasks import classify

    spec, adata = _child_data(args)
    module = _scprint_setup(args)
    head = spec["head"]
    if head not in module.hierarchies:
        return {"status": f"n/a: the checkpoint has no classifier for {head!r} (it has "
                f"{sorted(module.hierarchies)}); see the linear probe"}  # fmt: skip
    held = np.asarray(spec["held_out"])
    test = adata[held].copy()
    t0 = time.perf_counter()
    classify(test, module, classes=head, max_len=args.max_len, batch_size=args.scprint_batch,
             top_k=0, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    pred = dict(zip(held.tolist(), _to_labels(test.obs[f"scprint_{head}"], spec, module),
                    strict=True))  # fmt: skip
    folds = [{"pred": [pred[i] for i in f["test"]], "fit_s": None} for f in spec["folds"]]
    return {"folds": folds, "predict_s": round(seconds, 2), "classifier": head,
            "leaves": module.hierarchies[head].n_leaves}  # fmt: skip


def _finetune_module(
    pre, head: str, train_labels, lr: float, warmup: int, losses: str = "all",
    flat: bool = False,
):  # fmt: skip
    """A trainable copy of ``pre`` (its weights) with a classifier for ``head``; a new one
    (placeholder token and head, freshly initialised) when ``pre`` has none. ``losses``:
    ``"all"`` trains on the pretraining's weighted sum, ``"class"`` on the classification
    losses only (the expression decoders then get no gradient). ``flat``: the classifier
    predicts the training labels as given, each a class of its own, instead of the leaves
    of their ontology (a coarse label such as "ON-bipolar cell", the parent of "rod
    bipolar cell", becomes predictable); it keeps ``pre``'s class token and the hidden
    layers of ``pre``'s head, its output layer starts afresh."""
    import torch

    from scdataloader.ontology import build_hierarchy
    from scprint.train import ScPrintModule

    class FineTune(ScPrintModule):
        """Pretraining's losses; AdamW with the warm-up, then a constant learning rate."""

        def configure_optimizers(self):
            hp = self.hparams
            params = [p for p in self.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)

        def total_loss(self, terms):
            if losses == "all":
                return super().total_loss(terms)
            return sum(value for name, value in terms.items() if name.startswith("class_"))

    if losses not in ("all", "class"):
        raise ValueError(f"losses must be 'all' or 'class', got {losses!r}")
    hp = dict(pre.hparams)
    hp.pop("gene_embeddings", None)  # the weights hold the table
    hierarchies = dict(hp["hierarchies"])
    keys = list(hp["label_keys"])
    added = head not in pre.hierarchies
    if added:  # a new class goes last, after the pretrained ones
        hierarchies.pop(head, None)
        keys = [k for k in keys if k != head] + [head]
    if added or flat:
        hierarchies[head] = build_hierarchy(head, train_labels, hierarchical=not flat).to_dict()
    hp.update(hierarchies=hierarchies, label_keys=keys, lr=lr, warmup_steps=warmup)
    ft = FineTune(**hp)
    old, own = pre.state_dict(), ft.state_dict()
    state = {}
    for key, value in own.items():
        if key in old and old[key].shape == value.shape:
            state[key] = old[key]
        elif key == "model.placeholders" and added:
            value = value.clone()
            value[: old[key].shape[0]] = old[key]
            state[key] = value
        elif (added or flat) and key.startswith(f"model.class_heads.{head}."):
            state[key] = value  # a new output layer (or head): freshly initialised
        else:
            raise RuntimeError(
                f"fine-tuning: weight {key} does not carry over from the checkpoint"
            )
    ft.load_state_dict(state)
    return ft, added


def _ensembl_view(adata):
    """The counts with Ensembl ids as var_names (first column of each id), for Collection."""
    import numpy as np

    from scdataloader.genes import map_genes

    ids = map_genes(adata.var_names.to_numpy(), "human").ids
    keep, seen = [], set()
    for j, g in enumerate(ids):
        if g is not None and g not in seen:
            seen.add(g)
            keep.append(j)
    out = adata[:, np.asarray(keep)].copy()
    out.var_names = [ids[j] for j in keep]
    return out


def _child_scprint_finetuned(args) -> dict:
    import lightning.pytorch as pl
    import numpy as np
    import pandas as pd

    from scdataloader import Collection, DataModule
    from scprint.tasks import classify
    from scprint.train.module import hierarchy_from_any

    spec, adata = _child_data(args)
    pre = _scprint_setup(args)
    head = spec["head"]
    train_len, train_zero, mode = _training_max_len(Path(args.ckpt))
    max_len = args.finetune_max_len or train_len
    zero_genes = round(train_zero * max_len / train_len)  # the same share of the sequence
    lr = args.finetune_lr or _final_lr(Path(args.ckpt))
    ens = _ensembl_view(adata)
    work = Path(args.work)
    folds, added = [], False
    for k, fold in enumerate(spec["folds"]):
        train = np.asarray(fold["train"])
        labels = adata.obs[head].astype(str).to_numpy()[train]
        ft, added = _finetune_module(
            pre, head, labels, lr, args.finetune_warmup, args.finetune_losses,
            flat=args.finetune_head == "flat",
        )  # fmt: skip
        cells = ens[train].copy()
        obs = pd.DataFrame(index=cells.obs_names)
        for key in ft.label_keys:
            col = cells.obs[key] if key in cells.obs else pd.Series("unknown", index=obs.index)
            obs[key] = col.astype(str).to_numpy()
        cells.obs = obs
        path = work / f"finetune-{args.dataset}-fold{k}.h5ad"
        cells.write_h5ad(path)
        hier = {key: hierarchy_from_any(h) for key, h in ft.hparams["hierarchies"].items()}
        collection = Collection([str(path)], obs_keys=ft.label_keys, genes=ft.genes,
                                hierarchies=hier)  # fmt: skip
        dm = DataModule(collection, label_keys=ft.label_keys, weight_keys=[head],
                        batch_size=args.finetune_batch, val_size=0.0, mode=mode,
                        max_len=max_len, zero_genes=zero_genes, seed=args.seed)  # fmt: skip
        pl.seed_everything(args.seed, verbose=False)
        trainer = pl.Trainer(max_epochs=args.finetune_epochs,
                             max_steps=args.finetune_max_steps or -1, accelerator="cpu",
                             logger=False,
                             enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False, use_distributed_sampler=False,
                             limit_val_batches=0, num_sanity_val_steps=0,
                             gradient_clip_val=100)  # fmt: skip
        t0 = time.perf_counter()
        trainer.fit(ft, datamodule=dm)
        fit_s = time.perf_counter() - t0
        ft.eval()
        test = adata[np.asarray(fold["test"])].copy()
        t0 = time.perf_counter()
        classify(test, ft, classes=head, max_len=args.max_len, batch_size=args.scprint_batch,
                 top_k=0, progress=False)  # fmt: skip
        pred_s = time.perf_counter() - t0
        folds.append({"pred": _to_labels(test.obs[f"scprint_{head}"], spec, ft),
                      "fit_s": round(fit_s, 2), "predict_s": round(pred_s, 2),
                      "steps": int(trainer.global_step),
                      "losses": {n: round(v, 4) for n, v in ft.last_losses.items()}})  # fmt: skip
        print(f"fold {k}: {trainer.global_step} steps in {fit_s:.0f} s; losses "
              f"{folds[-1]['losses']}", flush=True)  # fmt: skip
        path.unlink()
    note = f"new classifier for {head!r} added" if added else f"its {head!r} classifier"
    if args.finetune_head == "flat":
        note = f"a flat classifier of the fold's labels for {head!r}"
    return {"folds": folds, "classifier": note, "lr": lr, "max_len": max_len,
            "zero_genes": zero_genes, "pretraining_max_len": train_len,
            "epochs": args.finetune_epochs, "max_steps": args.finetune_max_steps,
            "batch_size": args.finetune_batch, "losses": args.finetune_losses,
            "head": args.finetune_head}  # fmt: skip


def _probe_fit_predict(Z, y, train, test):
    """Standardise on ``train``, logistic regression (as ``logreg``), predict ``test``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(Z[train])
    lr = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    lr.fit(scaler.transform(Z[train]), y[train])
    return lr.predict(scaler.transform(Z[test])).astype(str)


def probe_inner_choice(
    embeddings: dict, y, train, unseen, groups=None, seed: int = 0, n_splits: int = 3
) -> tuple:
    """The key of ``embeddings`` (name -> cells x dims) whose linear probe scores the best
    mean macro F1 in an inner cross-validation of one fold, and every key's score.

    The inner validation cells are the fold's training cells in ``unseen`` (cells the
    pretraining never saw), split stratified by ``y`` or, with ``groups``, by group; the
    probe of each inner split trains on all the other training cells. Ties go to the
    first key.
    """
    import warnings

    import numpy as np
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    inner = train[unseen[train]]
    if groups is not None:
        n = min(n_splits, len(set(groups[inner])))
        parts = list(GroupKFold(n).split(inner, y[inner], groups[inner])) if n > 1 else []
    else:
        cv = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # classes with fewer cells than splits
            warnings.simplefilter("ignore", UserWarning)
            parts = list(cv.split(inner, y[inner]))
    scores = {}
    for key, Z in embeddings.items():
        f1s = []
        for _, val_pos in parts:
            val = inner[val_pos]
            fit = np.setdiff1d(train, val)
            pred = _probe_fit_predict(Z, y, fit, val)
            f1s.append(f1_score(y[val], pred, average="macro", labels=sorted(set(y[val]))))
        scores[key] = float(np.mean(f1s)) if f1s else float("nan")
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    # max keeps the first of equal scores
    return (max(finite, key=finite.get) if finite else next(iter(embeddings))), scores


PROBE_FEATURES = ("cell + classes", "cell + classes + gene mean")


def _child_scprint_probe(args) -> dict:
    import numpy as np

    from scprint.tasks import embed

    spec, adata = _child_data(args)
    module = _scprint_setup(args)
    lengths = list(dict.fromkeys(args.probe_max_lens or [args.max_len]))
    keys = ["X_scprint"] + [f"X_scprint_{c}" for c in module.hierarchies]
    embeddings, embed_s, choices = {}, {}, {}
    for n in lengths:
        t0 = time.perf_counter()
        out = embed(adata, module, max_len=n, batch_size=args.scprint_batch, progress=False,
                    gene_mean=True, copy=True)  # fmt: skip
        embed_s[n] = round(time.perf_counter() - t0, 2)
        base = np.concatenate([out.obsm[k] for k in keys], axis=1)
        pooled = np.concatenate([base, out.obsm["X_scprint_gene_mean"]], axis=1)
        for features, Z in zip(PROBE_FEATURES, (base, pooled), strict=True):
            name = f"{n} genes, {features}"
            embeddings[name], choices[name] = Z, (n, features)
    y = adata.obs[spec["label_key"]].astype(str).to_numpy()
    unseen = np.zeros(len(y), dtype=bool)
    unseen[np.asarray(spec["held_out"])] = True
    groups = np.asarray(spec["groups"]) if spec.get("groups") else None
    folds = []
    for fold in spec["folds"]:
        train, test = np.asarray(fold["train"]), np.asarray(fold["test"])
        t0 = time.perf_counter()
        best, inner = probe_inner_choice(embeddings, y, train, unseen, groups, args.seed)
        pred = _probe_fit_predict(embeddings[best], y, train, test).tolist()
        fit_s = time.perf_counter() - t0
        n, features = choices[best]
        folds.append({"pred": pred, "fit_s": round(fit_s, 2), "max_len": n,
                      "features": features, "dims": int(embeddings[best].shape[1]),
                      "inner_macro_f1": {k: round(v, 4) for k, v in inner.items()}})  # fmt: skip
        print(f"fold: {best} (inner macro F1 "
              f"{'; '.join(f'{k}: {v:.3f}' for k, v in inner.items())})", flush=True)  # fmt: skip
    return {"folds": folds, "embed_s": embed_s, "embedding": keys + ["X_scprint_gene_mean"],
            "features": list(PROBE_FEATURES), "max_lens": lengths,
            "chosen_max_len": [f["max_len"] for f in folds],
            "chosen_features": [f["features"] for f in folds]}  # fmt: skip


def _child_scalr(args) -> dict:
    import numpy as np

    from scprint import tabular as tab
    from scprint.tabular.selection import chunked_feature_selection

    tabular, _ = _import_benchmarks()
    spec, adata = _child_data(args)
    label_key = spec["label_key"]
    folds = []
    for fold in spec["folds"]:
        train = adata[np.asarray(fold["train"])].copy()
        test = adata[np.asarray(fold["test"])].copy()
        t0 = time.perf_counter()
        pool = tabular.top_variance_genes(train.X, args.scalr_genes)

        def chunk_model(_, *, genes, label_key, seed, data=train):
            # the chunk's genes of the whole training cells, so that each cell is still
            # normalised by its total over all its genes
            return tab.fit(data, label_key=label_key, model="linear", genes=genes, seed=seed,
                           l2=1e-3, refit=False, accelerator="cpu", progress=False)  # fmt: skip

        sel = chunked_feature_selection(train[:, pool], label_key=label_key, chunk_size=2000,
                                        top_k=args.scalr_top, fit_fn=chunk_model,
                                        seed=args.seed)  # fmt: skip
        clf = tab.fit(train, label_key=label_key, model="linear", genes=sel.genes,
                      val_size=args.val_size, seed=args.seed, accelerator="cpu",
                      progress=False)  # fmt: skip
        fit_s = time.perf_counter() - t0
        pred = clf.predict(test).to_numpy().astype(str).tolist()
        folds.append({"pred": pred, "fit_s": round(fit_s, 2), "genes_kept": len(sel.genes)})
        print(f"fold: {fit_s:.0f} s", flush=True)
    return {"folds": folds, "candidate_genes": args.scalr_genes, "top_k": args.scalr_top}


def _child_celltypist(args) -> dict:
    import celltypist
    import numpy as np

    spec, adata = _child_data(args)
    label_key = spec["label_key"]
    y = adata.obs[label_key].astype(str).to_numpy()
    folds = []
    for fold in spec["folds"]:
        train, test = np.asarray(fold["train"]), np.asarray(fold["test"])
        t0 = time.perf_counter()
        tr = adata[train].copy()
        tr.X = _lognorm(tr.X)
        detected = np.flatnonzero(np.asarray((tr.X > 0).sum(0)).ravel() > 0)
        tr = tr[:, detected].copy()
        model = celltypist.train(tr, labels=y[train], n_jobs=args.threads, check_expression=True)
        fit_s = time.perf_counter() - t0
        te = adata[test].copy()
        te.X = _lognorm(te.X)
        result = celltypist.annotate(te, model=model, majority_voting=False)
        pred = result.predicted_labels["predicted_labels"].astype(str).tolist()
        folds.append({"pred": pred, "fit_s": round(fit_s, 2), "genes": int(len(detected))})
    return {"folds": folds, "version": _version("celltypist"),
            "sklearn": _version("scikit-learn"),
            "settings": "train defaults (C=1, lbfgs, max_iter 1000, no feature selection); "
                        "annotate majority_voting=False"}  # fmt: skip


def _child_xgboost(args) -> dict:
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import LabelEncoder
    from xgboost import XGBClassifier

    spec, adata = _child_data(args)
    y = adata.obs[spec["label_key"]].astype(str).to_numpy()
    folds = []
    for fold in spec["folds"]:
        train, test = np.asarray(fold["train"]), np.asarray(fold["test"])
        genes = np.asarray(fold["genes"])
        t0 = time.perf_counter()
        Xtr = _lognorm(adata.X[train])[:, genes].toarray()
        pca = PCA(n_components=min(50, *Xtr.shape), random_state=args.seed).fit(Xtr)
        enc = LabelEncoder().fit(y[train])
        model = XGBClassifier(random_state=args.seed, n_jobs=args.threads)
        model.fit(pca.transform(Xtr), enc.transform(y[train]))
        fit_s = time.perf_counter() - t0
        Xte = pca.transform(_lognorm(adata.X[test])[:, genes].toarray())
        pred = enc.inverse_transform(model.predict(Xte).astype(int)).astype(str).tolist()
        folds.append({"pred": pred, "fit_s": round(fit_s, 2)})
    return {"folds": folds, "version": _version("xgboost-cpu"),
            "pca_components": 50, "sklearn": _version("scikit-learn")}  # fmt: skip


CHILDREN = {
    "scprint-zeroshot": _child_scprint_zeroshot,
    "scprint-finetuned": _child_scprint_finetuned,
    "scprint-probe": _child_scprint_probe,
    "scalr": _child_scalr,
    "celltypist": _child_celltypist,
    "xgboost": _child_xgboost,
}


def child_main(args) -> int:
    os.environ.setdefault("CELLTYPIST_FOLDER", str(Path(args.work) / "celltypist-home"))
    info = CHILDREN[args.child](args)
    info["peak_rss_mb"] = round(own_peak_rss_mb(), 1)
    out = Path(args.work) / f"{args.child}-{args.dataset}.result.json"
    out.write_text(json.dumps(info))
    return 0


# --------------------------------------------------------------------------- parent


def _child_cmd(python, method: str, dataset: str, work: Path, args) -> list[str]:
    cmd = [str(python), str(Path(__file__).resolve()), "--child", method, "--dataset", dataset,
           "--work", str(work), "--ckpt", str(args.ckpt)]  # fmt: skip
    for opt in ("seed", "threads", "max_len", "scprint_batch", "finetune_epochs",
                "finetune_max_steps", "finetune_max_len", "finetune_batch", "finetune_warmup",
                "finetune_losses", "finetune_head", "scalr_genes", "scalr_top",
                "val_size"):  # fmt: skip
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.finetune_lr:
        cmd += ["--finetune-lr", str(args.finetune_lr)]
    if args.probe_max_lens:
        cmd += ["--probe-max-lens", *map(str, args.probe_max_lens)]
    return cmd


def _summarise(rec: dict, spec: dict, y) -> dict:
    """Per-fold metrics from the child's predictions, and their mean and sd."""
    import numpy as np

    tabular, _ = _import_benchmarks()
    for k, f in enumerate(rec["folds"]):
        test = np.asarray(spec["folds"][k]["test"])
        f.update(fold=k, n_test=len(test), **tabular._metrics(y[test], np.asarray(f.pop("pred"))))
    return rec


def _total(values) -> float | None:
    """Sum of the values that are not None (None when all are)."""
    values = [v for v in values if v is not None]
    return round(sum(values), 1) if values else None


def _aggregate(rec: dict) -> dict:
    f1 = [f["macro_f1"] for f in rec["folds"]]
    acc = [f["accuracy"] for f in rec["folds"]]
    sd = statistics.stdev if len(f1) > 1 else (lambda v: 0.0)
    rec.update(macro_f1_mean=round(statistics.mean(f1), 4), macro_f1_sd=round(sd(f1), 4),
               accuracy_mean=round(statistics.mean(acc), 4), accuracy_sd=round(sd(acc), 4),
               fit_s_total=_total(f.get("fit_s") for f in rec["folds"]))  # fmt: skip
    return rec


def run_own(args, method: str, spec: dict, work: Path, y) -> dict:
    tabular, _ = _import_benchmarks()
    name = spec["dataset"]
    python = Path(args.peer_python) if method in PEERS else Path(sys.executable)
    base = {"method": method, "dataset": name}
    if not python.exists():
        return {**base, "status": f"not run: {python} missing (run "
                "benchmarks/science/setup_celltypist.sh)"}  # fmt: skip
    log = work / f"{method}-{name}.log"
    env = tabular._child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    t0 = time.monotonic()
    rc, _ = tabular._run(_child_cmd(python, method, name, work, args), REPO, env, args.timeout,
                         log)  # fmt: skip
    wall = time.monotonic() - t0
    base["process_wall_s"] = round(wall, 1)
    out = work / f"{method}-{name}.result.json"
    if wall > args.timeout:
        return {**base, "status": f"timeout after {args.timeout:.0f} s"}
    if rc != 0 or not out.exists():
        tail = tabular._tail(log, 4000).strip().splitlines()
        errors = [ln for ln in tail if "Error" in ln or "error" in ln]
        print("\n".join(tail[-15:]), file=sys.stderr)
        return {**base, "status": "failed: " + (errors[-1] if errors else f"exit code {rc}")}
    rec = json.loads(out.read_text())
    if "status" in rec:
        return {**base, **rec}
    rec = _aggregate(_summarise(rec, spec, y))
    return {**base, "status": "ok", **rec}


def run_tabular(args, method: str, spec: dict, work: Path) -> dict:
    """A method of benchmarks/tabular.py, through its own child, on our folds."""
    tabular, _ = _import_benchmarks()
    targs = argparse.Namespace(ref_python=Path(sys.executable), threads=args.threads,
                               max_epochs=args.max_epochs, patience=args.patience,
                               batch_size=128, val_size=args.val_size, seed=args.seed,
                               timeout=args.timeout)  # fmt: skip
    rec = tabular.run_method(targs, method, work / f"{spec['dataset']}.json", spec["dataset"],
                             work)  # fmt: skip
    if rec["status"] != "ok":
        err = str(rec.get("error", "")).strip().splitlines()
        return {"method": method, "dataset": spec["dataset"],
                "status": f"{rec['status']}: {err[-1] if err else ''}"}  # fmt: skip
    rec["fit_s_total"] = rec.pop("train_s_total")
    return rec


def print_table(spec: dict, rows: list[dict]) -> None:
    lr = next((r for r in rows if r["method"] == "logreg" and r["status"] == "ok"), None)
    n_held = len(spec["held_out"])
    print(f"\n### {spec['dataset']}: {spec['n_obs']:,} cells ({n_held} held out), "
          f"{spec['n_classes']} classes, {len(spec['folds'])} folds of the held-out "
          "cells\n")  # fmt: skip
    head = ["method", "version", "macro F1 (mean ± sd)", "accuracy (mean ± sd)", "F1 - LR F1",
            "fit s (total)", "peak RSS MB", "status"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        label = LABELS.get(r["method"], r["method"])
        if r["status"] != "ok":
            print(f"| {label} | {r.get('version', '-')} | - | - | - | - | - | {r['status']} |")
            continue
        diff = f"{r['macro_f1_mean'] - lr['macro_f1_mean']:+.3f}" if lr else "-"
        print(f"| {label} | {r.get('version', '-')} | "
              f"{r['macro_f1_mean']:.3f} ± {r['macro_f1_sd']:.3f} | "
              f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f} | {diff} | "
              f"{_fmt(r.get('fit_s_total'), '.1f')} | {_fmt(r.get('peak_rss_mb'), ',.0f')} | "
              f"{r.get('note', 'ok')} |")  # fmt: skip
    unseen = [f["unseen_test_cells"] for f in spec["folds"]]
    tests = [len(f["test"]) for f in spec["folds"]]
    print(f"\nTest cells per fold {tests}; of them, cells whose class is absent from the "
          f"fold's training cells (an error for every method): {unseen}.")  # fmt: skip


# settings that must agree for rows of another run to share a table (the checkpoint need
# not: only the scprint rows use it)
SAME_SETTINGS = ("folds", "seed", "n_genes", "max_epochs", "patience", "val_size",
                 "scalr_genes", "scalr_top")  # fmt: skip


def reused_rows(args, name: str, rows: list[dict]) -> list[dict]:
    """The rows of ``--reuse``'s runs (the first one first) for methods not run now."""
    done = {r["method"] for r in rows}
    found = []
    out = Path(args.out)
    records = [json.loads(ln) for ln in out.read_text().splitlines()] if out.exists() else []
    for rec in sorted(records, key=lambda r: args.reuse.index(r["run"])
                      if r.get("run") in args.reuse else -1):  # fmt: skip
        if rec.get("run") not in args.reuse or rec.get("dataset") != name:
            continue
        if rec["method"] in done:
            continue
        theirs = rec.get("settings", {})
        differ = [k for k in SAME_SETTINGS if theirs.get(k) != getattr(args, k)]
        if differ:
            raise SystemExit(
                f"--reuse {rec['run']}: its {name} {rec['method']} row ran with other settings "
                f"({', '.join(f'{k} {theirs.get(k)} vs {getattr(args, k)}' for k in differ)})."
            )
        same_model = display_path(rec.get("checkpoint")) == display_path(args.ckpt)
        if rec["method"] in SCPRINT and not same_model:
            continue  # another model's scprint rows do not belong to this table
        note = rec.get("note") or ("ok" if rec.get("status") == "ok" else "")
        found.append({**rec, "note": f"{note}; run {rec['run']}".lstrip("; ")})
        done.add(rec["method"])
    if not found:
        print(f"--reuse {' '.join(args.reuse)}: no other {name} rows in {out}", file=sys.stderr)
    return found


def _provenance(ckpt: Path) -> str:
    """One line from the ``provenance.json`` beside a checkpoint (``pretrain.py``'s)."""
    path = ckpt.parent / "provenance.json"
    if not path.exists():
        return "no provenance.json beside it"
    p = json.loads(path.read_text())
    hp = p.get("hyperparameters", {})
    keys = ("preset", "parameters", "max_len", "zero_genes", "batch_size", "lr", "label_keys")
    return json.dumps({"steps": p.get("steps"), "fit_seconds": p.get("fit_seconds"),
                       **{k: hp.get(k) for k in keys},
                       "training_cells": p.get("training_cells"),
                       "final_losses": p.get("final_losses")})  # fmt: skip


def _resolve_ckpt(args) -> tuple[Path, bool, str]:
    """(checkpoint, is it the science model, note)."""
    _, splits = _import_benchmarks()
    if args.ckpt:
        ckpt = Path(args.ckpt)
        if not ckpt.exists():
            raise SystemExit(f"--ckpt {ckpt}: no such file.")
        science = (ckpt.parent / "held_out.json").exists()
        return ckpt, science, f"given: {ckpt}; {_provenance(ckpt)}"
    ckpt = splits.science_checkpoint()
    if ckpt.exists():
        return ckpt, True, f"the science model ({ckpt}); {_provenance(ckpt)}"
    from scprint.demo import pretrained

    demo = pretrained()
    note = (f"NOTE: {ckpt} does not exist (pretrain it with benchmarks/science/pretrain.py); "
            f"using the demo's debug model {demo}, pretrained on ALL 1,000 retina cells and "
            "no wu2020 cell: its retina zero-shot row is NOT on held-out cells.")  # fmt: skip
    return demo, False, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="held-out split, folds, methods")
    ap.add_argument("--threads", type=int, default=1, help="threads per child")
    ap.add_argument("--ckpt", default=None, help="default: splits.science_checkpoint()")
    ap.add_argument("--max-len", type=int, default=0,
                    help="scPRINT genes per cell at inference (0: pretraining's)")  # fmt: skip
    ap.add_argument("--probe-max-lens", type=int, nargs="+", default=None,
                    help="linear probe: context lengths chosen among per fold by inner CV "
                    "(default: --max-len and 2200)")  # fmt: skip
    ap.add_argument("--scprint-batch", type=int, default=32)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--finetune-max-steps", type=int, default=50, help="per fold; 0: no cap")
    ap.add_argument("--finetune-max-len", type=int, default=0,
                    help="genes per fine-tuning sequence (0: pretraining's)")  # fmt: skip
    ap.add_argument("--finetune-batch", type=int, default=16)
    ap.add_argument("--finetune-lr", type=float, default=0.0,
                    help="0: the rate the checkpoint's training ended at")  # fmt: skip
    ap.add_argument("--finetune-warmup", type=int, default=10)
    ap.add_argument(
        "--finetune-losses",
        default="all",
        choices=["all", "class"],
        help="all: the pretraining's weighted losses; class: classification only",
    )
    ap.add_argument(
        "--finetune-head",
        default="pretrained",
        choices=["pretrained", "flat"],
        help="pretrained: the checkpoint's classifier (ontology leaves); flat: a new output "
        "layer over the fold's labels as given",
    )
    ap.add_argument("--n-genes", type=int, default=2000, help="genes of LR, XGBoost, ours")
    ap.add_argument("--max-epochs", type=int, default=100, help="our neural tabular models")
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--val-size", type=float, default=0.2, help="early stopping, ours")
    ap.add_argument("--scalr-genes", type=int, default=10000)
    ap.add_argument("--scalr-top", type=int, default=1000)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--peer-python", default=str(DEFAULT_PEER_PYTHON))
    ap.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--work", default=None, help="keep intermediate files here")
    ap.add_argument("--reuse", nargs="+", default=None, metavar="RUN",
                    help="add the rows of the methods not run now from these earlier runs "
                    "(their 'run' ids in --out) to the tables")  # fmt: skip
    ap.add_argument("--child", default=None, choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.folds < 2:
        ap.error("--folds must be at least 2")
    if args.finetune_epochs < 1:
        ap.error("--finetune-epochs must be at least 1")

    import numpy as np

    tabular, _ = _import_benchmarks()
    t_start = time.perf_counter()
    machine = tabular.machine_info()
    ckpt, args.science, ckpt_note = _resolve_ckpt(args)
    args.ckpt = ckpt
    ckpt_sha = _sha256(ckpt)
    if not args.max_len:
        args.max_len = _training_max_len(ckpt)[0]
    if not args.finetune_max_len:
        args.finetune_max_len = _training_max_len(ckpt)[0]
    if not args.finetune_lr:
        args.finetune_lr = _final_lr(ckpt)
    if not args.probe_max_lens:
        args.probe_max_lens = [args.max_len, 2200]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_total_mb']} MB; "
          f"loadavg {machine['loadavg']}; threads {args.threads}", flush=True)  # fmt: skip
    print(f"model: {ckpt_note}; sha256 {ckpt_sha[:16]}...", flush=True)
    versions = {d: _version(d) for d in ("scprint-suite", "torch", "lightning", "scikit-learn",
                                         "numpy", "anndata", "scanpy")}  # fmt: skip
    print(f"versions: {json.dumps(versions)}", flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="science-classify-"))
    work.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        spec = prepare(args, name, work)
        import anndata as ad

        y = ad.read_h5ad(spec["counts"], backed="r").obs[spec["label_key"]].astype(str)
        y = np.asarray(y)
        print(f"{name}: {spec['n_obs']:,} cells x {spec['n_vars']:,} genes, "
              f"{len(spec['held_out'])} held out; {spec['held_out_note']}",
              flush=True)  # fmt: skip
        rows = []
        for method in args.methods:
            print(f"{name}: {method} ... (loadavg {tabular._loadavg()})", flush=True)
            if method in TABULAR:
                rec = run_tabular(args, method, spec, work)
                ours = f"ours {_version('scprint-suite')}"
                sklearn = f"scikit-learn {_version('scikit-learn')}"
                rec["version"] = sklearn if method == "logreg" else ours
            else:
                rec = run_own(args, method, spec, work, y)
                if method in PEERS:
                    rec.setdefault("version", "-")
                else:
                    rec["version"] = f"ours {_version('scprint-suite')}"
            if method == "scprint-finetuned" and rec.get("status") == "ok":
                rec["note"] = rec["classifier"]
            if method == "scprint-probe" and rec.get("status") == "ok":
                rec["note"] = "per fold: " + ", ".join(
                    f"{n}{' + gene mean' if f == PROBE_FEATURES[1] else ''}"
                    for n, f in zip(rec["chosen_max_len"], rec["chosen_features"], strict=True)
                )
            if method == "scprint-zeroshot" and rec.get("status") == "ok" and not args.science:
                rec["note"] = "NOT held out (demo model)" if name == "retina" else "demo model"
            if rec["status"] == "ok":
                print(f"  macro F1 {rec['macro_f1_mean']:.3f} ± {rec['macro_f1_sd']:.3f}, "
                      f"accuracy {rec['accuracy_mean']:.3f}; fit {rec['fit_s_total']} s, "
                      f"peak {rec.get('peak_rss_mb')} MB", flush=True)  # fmt: skip
            else:
                print(f"  {rec['status']}", flush=True)
            rows.append(rec)
            full = {"benchmark": "science_classify", "run": run_id, **rec,
                    "checkpoint": display_path(ckpt), "checkpoint_sha256": ckpt_sha,
                    "science_checkpoint": args.science,
                    "settings": {k: getattr(args, k) for k in (
                        "folds", "seed", "threads", "max_len", "finetune_epochs",
                        "finetune_max_steps", "finetune_max_len",
                        "finetune_batch", "finetune_lr", "finetune_warmup",
                        "finetune_losses", "finetune_head", "probe_max_lens", "n_genes",
                        "max_epochs", "patience", "val_size", "scalr_genes", "scalr_top")},
                    "versions": versions, "machine": machine}  # fmt: skip
            with open(out, "a") as fh:
                fh.write(json.dumps(full, default=str) + "\n")
        if args.reuse:
            rows += reused_rows(args, name, rows)
        results[name] = (spec, rows)
    print(f"\nmodel: {ckpt_note}")
    for spec, rows in results.values():
        print_table(spec, rows)
    print()
    for name, (_, rows) in results.items():
        lr = next((r for r in rows if r["method"] == "logreg" and r["status"] == "ok"), None)
        ours = [r for r in rows if r["method"] in SCPRINT and r["status"] == "ok"]
        if lr and ours:
            best = max(ours, key=lambda r: r["macro_f1_mean"])
            gap = best["macro_f1_mean"] - lr["macro_f1_mean"]
            print(f"- {name}: best scPRINT row ({LABELS[best['method']]}) macro F1 "
                  f"{best['macro_f1_mean']:.3f} vs logistic regression "
                  f"{lr['macro_f1_mean']:.3f}: {'met' if gap >= 0 else 'MISSED'} "
                  f"({gap:+.3f})")  # fmt: skip
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s; loadavg {tabular._loadavg()}; records appended to "
          f"{os.path.relpath(out)} (run {run_id}); intermediate files in {work}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
