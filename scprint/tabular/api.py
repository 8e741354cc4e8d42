"""Train, calibrate, apply, explain, save and ensemble tabular cell-type classifiers.

Typical use::

    from scprint import tabular

    clf = tabular.fit(adata, label_key="cell_type", model="tabnet")  # SIMS defaults
    proba = clf.predict_proba(query)  # cells x classes, rows sum to 1
    clf.annotate(query, threshold=0.5)  # obs['tabular_label'], ['tabular_confidence']
    markers = clf.top_genes(adata, label_key="cell_type", n=20)
    clf.save("model.pt"); clf = tabular.TabularClassifier.load("model.pt")
    clf = tabular.fit(adata, label_key="cell_type", donor_key="donor", augment="donor")

Models (``model=``): ``"tabnet"`` (SIMS: TabNet defaults with sparsemax; Adam lr 0.01,
weight decay 1e-3, learning rate x0.75 on a 20-epoch validation-loss plateau),
``"tabnet-sctab"`` (scTab: entmax-1.5, one step, n_d 128, n_a 64, n_shared 3,
n_independent 5, virtual batch 256, lambda_sparse 1e-5; AdamW lr 5e-3, weight decay 0.05,
StepLR 0.9), ``"mlp"`` (scTab: 8 x 128, dropout 0.1; AdamW lr 2e-3, wd 0.05) and
``"linear"`` (scTab: AdamW lr 5e-4, wd 0.01).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from scdataloader.errors import InputError, LabelError

from .data import (
    CellBatches,
    GeneAlignment,
    adata_genes,
    align_genes,
    check_input_counts,
    labels_of,
    make_loader,
    split,
)
from .data import (
    class_weights as _class_weights,
)
from .module import OptimizerConfig, TabularTask, device_of, seed_all, train_task
from .nn import TabNetConfig, build_model

if TYPE_CHECKING:
    from .augment import AugmentationVectors

__all__ = [
    "PRESETS",
    "TabularClassifier",
    "Ensemble",
    "fit",
    "fit_ensemble",
    "fit_temperature_logits",
    "load_model",
]

logger = logging.getLogger(__name__)

FORMAT = "scprint.tabular"
FORMAT_VERSION = 1


def _presets() -> dict[str, tuple[str, dict, OptimizerConfig, float]]:
    sims, sctab = TabNetConfig.sims(), TabNetConfig.sctab()
    return {
        "tabnet": ("tabnet", sims.model_kwargs(), OptimizerConfig.sims(), sims.lambda_sparse),
        "tabnet-sctab": (
            "tabnet",
            sctab.model_kwargs(),
            OptimizerConfig.sctab(),
            sctab.lambda_sparse,
        ),
        "mlp": (
            "mlp",
            {"hidden": 128, "n_layers": 8, "dropout": 0.1},
            OptimizerConfig.sctab("mlp"),
            0.0,
        ),
        "linear": ("linear", {}, OptimizerConfig.lbfgs(), 0.0),
    }


#: The L2 penalties the ``linear`` preset tries (one model each, the best on the
#: validation cells kept): half-decades from 1e-4 to 0.3. sklearn's default
#: ``LogisticRegression(C=1)`` is ``l2 = 1 / n_cells`` in this parametrisation.
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)

#: Per-preset defaults of :func:`fit`'s ``refit`` and ``l2``.
PRESET_DEFAULTS: dict[str, dict] = {"linear": {"refit": True, "l2": L2_GRID}}

#: The most values (cells x genes) of a full L-BFGS batch: 2.5e8 float32 = 1 GB. Above it
#: the linear preset trains with scTab's minibatch AdamW instead (logged, and recorded in
#: the provenance).
LBFGS_MAX_VALUES = 250_000_000


PRESETS = tuple(_presets())


# --------------------------------------------------------------------------- temperature


def fit_temperature_logits(
    logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100
) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) (LBFGS on log T).

    Never worse than T = 1 on these logits: if the optimum found is not better, 1 is
    returned.
    """
    logits = logits.detach().double()
    labels = labels.detach().long()
    ok = labels >= 0
    logits, labels = logits[ok], labels[ok]
    if len(labels) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll(lt: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits / lt.exp(), labels)

    def closure():
        opt.zero_grad()
        loss = nll(log_t)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        t = float(log_t.exp())
        if not np.isfinite(t) or float(nll(log_t)) > float(
            nll(torch.zeros((), dtype=torch.float64))
        ):
            return 1.0
    return t


# --------------------------------------------------------------------------- sources


def _is_collection(data) -> bool:
    from scdataloader.collection import Collection

    return isinstance(data, Collection)


def _as_source(
    data, genes: Sequence[str], *, layer: str | None, gene_key: str | None, warn: bool = True
) -> tuple[object, GeneAlignment, pd.Index]:
    """(row source, gene alignment to ``genes``, cell names) of an AnnData or Collection."""
    if _is_collection(data):
        align = align_genes(data.genes, genes, warn=warn)
        return data, align, pd.Index(np.arange(len(data)).astype(str))
    if not isinstance(data, ad.AnnData):
        raise TypeError(f"expected an AnnData or a scdataloader Collection, not {type(data)}")
    from scdataloader.preprocess import check_expressed_cells, check_not_empty, counts_matrix

    check_not_empty(data, "classify")
    X, where = counts_matrix(data, layer)
    check_input_counts(X, where)
    if sp.issparse(X) or isinstance(X, np.ndarray):  # a backed matrix is not read whole here
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        check_expressed_cells(
            totals, data.obs_names, where, "there is nothing to classify in them"
        )
    align = adata_genes(data, genes, gene_key, warn=warn)
    return X, align, data.obs_names


# --------------------------------------------------------------------------- classifier


class TabularClassifier:
    """A trained tabular classifier: model, genes, classes and temperature.

    Attributes
    ----------
    model
        The torch model (:mod:`scprint.tabular.nn`), in evaluation mode.
    model_name
        ``"tabnet"``, ``"mlp"`` or ``"linear"``.
    genes
        Input genes, in order (query genes are matched to these).
    classes
        Class names, in the order of the probability columns.
    temperature
        Logits are divided by it before the softmax (1: uncalibrated).
    last_alignment
        The gene alignment of the last query (missing genes, extra genes).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        model_name: str,
        model_kwargs: dict,
        genes: Sequence[str],
        classes: Sequence[str],
        temperature: float = 1.0,
        provenance: dict | None = None,
    ):
        self.model = model.eval()
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs)
        self.genes = [str(g) for g in genes]
        self.classes = [str(c) for c in classes]
        self.temperature = float(temperature)
        self.provenance = dict(provenance or {})
        self.last_alignment: GeneAlignment | None = None

    def __repr__(self) -> str:
        return (
            f"TabularClassifier({self.model_name}, {len(self.genes)} genes, "
            f"{len(self.classes)} classes, T={self.temperature:.3g})"
        )

    # ----------------------------------------------------------------- batches

    def _batches(self, data, *, layer, gene_key, batch_size, rows=None) -> Iterator[dict]:
        source, align, names = _as_source(data, self.genes, layer=layer, gene_key=gene_key)
        self.last_alignment = align
        ds = CellBatches(source, align.index, rows=rows)
        self._names = names if rows is None else names[np.asarray(rows)]
        yield from make_loader(ds, batch_size)

    @torch.no_grad()
    def _logits(self, data, *, layer=None, gene_key=None, batch_size=512, rows=None):
        self.model.eval()
        out = [
            self.model(b["x"])["logits"]
            for b in self._batches(
                data, layer=layer, gene_key=gene_key, batch_size=batch_size, rows=rows
            )
        ]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    # ----------------------------------------------------------------- prediction

    def predict_proba(
        self,
        adata,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_size: int = 512,
    ) -> pd.DataFrame:
        """Probabilities over all classes (cells x classes; each row sums to 1).

        Parameters
        ----------
        adata
            Raw counts: an AnnData (genes matched on ``var_names`` or a symbol column;
            model genes missing from it are zero-filled and reported) or a Collection.
        layer
            Layer holding the counts (default ``X``; ``"raw"`` for ``adata.raw``).
        gene_key
            ``var`` column holding gene names matching the model's.
        batch_size
            Cells per batch.
        """
        logits = self._logits(adata, layer=layer, gene_key=gene_key, batch_size=batch_size)
        p = torch.softmax(logits.double() / self.temperature, dim=-1).numpy()
        return pd.DataFrame(p, index=self._names, columns=self.classes)

    def predict(
        self, adata, *, threshold: float | None = None, unknown_label: str = "unknown", **kwargs
    ) -> pd.Series:
        """Most probable class; ``unknown_label`` where its probability is below
        ``threshold``. Keyword arguments go to :meth:`predict_proba`."""
        return _labels(self.predict_proba(adata, **kwargs), threshold, unknown_label)

    def annotate(
        self,
        adata: ad.AnnData,
        *,
        key_added: str = "tabular",
        threshold: float | None = None,
        unknown_label: str = "unknown",
        copy: bool = False,
        **kwargs,
    ) -> ad.AnnData | None:
        """Label the cells of ``adata``.

        Returns
        -------
        The AnnData when ``copy``, else None. Writes ``obs[f"{key_added}_label"]``,
        ``obs[f"{key_added}_confidence"]`` (max probability) and
        ``obsm[f"{key_added}_proba"]`` (DataFrame, one column per class).
        """
        return _annotate(
            self,
            adata,
            key_added=key_added,
            threshold=threshold,
            unknown_label=unknown_label,
            copy=copy,
            **kwargs,
        )

    # ----------------------------------------------------------------- calibration

    def fit_temperature(
        self,
        adata,
        labels: Sequence | str,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_size: int = 512,
    ) -> float:
        """Fit (and set) the temperature on labelled cells, typically the validation set.

        ``labels``: one class name per cell, or an ``obs`` column name. Cells whose label
        is not a class of the model are ignored. Returns the temperature.
        """
        if isinstance(labels, str):
            labels = labels_of(adata.obs, labels)
        codes = _encode(labels, self.classes)
        logits = self._logits(adata, layer=layer, gene_key=gene_key, batch_size=batch_size)
        self.temperature = fit_temperature_logits(logits, torch.from_numpy(codes))
        return self.temperature

    # ----------------------------------------------------------------- explanations

    def _attributions(self, data, *, layer=None, gene_key=None, batch_size=256):
        """(attributions (B, G), logits (B, C)) per batch."""
        self.model.eval()
        for b in self._batches(data, layer=layer, gene_key=gene_key, batch_size=batch_size):
            with torch.no_grad():
                logits = self.model(b["x"])["logits"]
            yield self.model.explain(b["x"]), logits

    def explain(
        self,
        adata,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        """Per-cell gene attributions (cells x model genes).

        TabNet: the feature masks summed over decision steps, each weighted by the step's
        contribution to the decision, normalised to 1 per cell (TabNet paper). MLP and
        linear model: the positive part of input x gradient of the predicted class logit
        (for the linear model, max(x W[predicted class], 0): evidence for the class).
        Dense: mind the size for many cells.
        """
        parts = [
            a
            for a, _ in self._attributions(
                adata, layer=layer, gene_key=gene_key, batch_size=batch_size
            )
        ]
        values = torch.cat(parts).numpy() if parts else np.zeros((0, len(self.genes)))
        return pd.DataFrame(values, index=self._names, columns=self.genes)

    def top_genes(
        self,
        adata,
        *,
        label_key: str | None = None,
        n: int = 20,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_size: int = 256,
    ) -> dict[str, list[str]]:
        """The ``n`` genes with the largest mean attribution over the cells of each class.

        Cells are grouped by their true label (``obs[label_key]``) when given, else by the
        predicted class. Memory: one (classes x genes) sum, never cells x genes.
        """
        return _top(
            self.class_attributions(
                adata, label_key=label_key, layer=layer, gene_key=gene_key, batch_size=batch_size
            ),
            n,
        )

    def class_attributions(
        self,
        adata,
        *,
        label_key: str | None = None,
        layer: str | None = None,
        gene_key: str | None = None,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        """Mean attribution of each gene over the cells of each class (classes x genes);
        classes without cells are left out. See :meth:`top_genes`."""
        sums = np.zeros((len(self.classes), len(self.genes)))
        counts = np.zeros(len(self.classes))
        true = None
        if label_key is not None:
            true = _encode(labels_of(adata.obs, label_key), self.classes)
        start = 0
        for attr, logits in self._attributions(
            adata, layer=layer, gene_key=gene_key, batch_size=batch_size
        ):
            k = len(attr)
            group = logits.argmax(-1).numpy() if true is None else true[start : start + k]
            start += k
            ok = group >= 0
            np.add.at(sums, group[ok], attr.numpy()[ok])
            counts += np.bincount(group[ok], minlength=len(self.classes))
        present = counts > 0
        means = sums[present] / counts[present, None]
        return pd.DataFrame(means, index=np.asarray(self.classes)[present], columns=self.genes)

    def weights(self) -> pd.DataFrame:
        """Weights of the linear model (genes x classes)."""
        if self.model_name != "linear":
            raise TypeError(f"weights() needs a linear model, not {self.model_name!r}")
        w = self.model.fc.weight.detach().numpy().T
        return pd.DataFrame(w, index=self.genes, columns=self.classes)

    # ----------------------------------------------------------------- persistence

    def _payload(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "state_dict": self.model.state_dict(),
            "genes": self.genes,
            "classes": self.classes,
            "temperature": self.temperature,
            "provenance": self.provenance,
        }

    @classmethod
    def _from_payload(cls, payload: dict) -> TabularClassifier:
        model = build_model(
            payload["model_name"],
            len(payload["genes"]),
            len(payload["classes"]),
            **payload["model_kwargs"],
        )
        model.load_state_dict(payload["state_dict"])
        return cls(
            model,
            model_name=payload["model_name"],
            model_kwargs=payload["model_kwargs"],
            genes=payload["genes"],
            classes=payload["classes"],
            temperature=payload["temperature"],
            provenance=payload.get("provenance"),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write one file (state dict, config, genes, classes, temperature, provenance)."""
        _save(self._payload(), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TabularClassifier:
        """Read a file written by :meth:`save`.

        Raises
        ------
        scprint.CheckpointError
            The file is missing, corrupt, or not a tabular classifier.
        """
        from ..checkpoint import CheckpointError

        payload = _read_payload(path)
        if "members" in payload:
            raise CheckpointError(
                f"{path}: holds an ensemble of {len(payload['members'])} classifiers; load it "
                "with Ensemble.load or scprint.tabular.load_model."
            )
        return _from_payload(cls, payload, path)


def _save(payload: dict, path: str | os.PathLike) -> None:
    from scdataloader.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read_payload(path: str | os.PathLike) -> dict:
    """The dict of a tabular model file; :class:`CheckpointError` for anything else."""
    from ..checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: could not be read as a tabular classifier ({type(e).__name__}: "
            f"{e}); the file may be truncated or corrupt."
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a scprint.tabular classifier file (load scPRINT checkpoints "
            "with scprint.load)."
        )
    return payload


def _from_payload(cls, payload: dict, path) -> TabularClassifier:
    from ..checkpoint import CheckpointError

    try:
        return cls._from_payload(payload)
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: a scprint.tabular file that does not match the model code "
            f"({type(e).__name__}: {e})."
        ) from e


def load_model(path: str | os.PathLike) -> TabularClassifier | Ensemble:
    """Read a file written by :meth:`TabularClassifier.save` or :meth:`Ensemble.save`.

    Raises
    ------
    scprint.CheckpointError
        The file is missing, corrupt, or not a tabular classifier.
    """
    payload = _read_payload(path)
    if "members" in payload:
        return Ensemble._from_payload(payload, path)
    return _from_payload(TabularClassifier, payload, path)


def _encode(labels, classes: Sequence[str]) -> np.ndarray:
    """Code of each label in ``classes`` (-1 for NaN or unknown classes)."""
    idx = pd.Index(list(classes))
    values = pd.Series(list(labels), dtype=object)
    values = values.where(values.notna(), None).map(lambda v: None if v is None else str(v))
    return idx.get_indexer(values.to_numpy()).astype(np.int64)


def _top(means: pd.DataFrame, n: int) -> dict[str, list[str]]:
    out = {}
    genes = means.columns.to_numpy()
    for name, row in means.iterrows():
        values = row.to_numpy()
        order = np.argsort(-values, kind="stable")[:n]
        out[str(name)] = [str(g) for g in genes[order[values[order] > 0]]]
    return out


def _labels(proba: pd.DataFrame, threshold: float | None, unknown_label: str) -> pd.Series:
    cols = np.asarray(proba.columns, dtype=object)
    values = proba.to_numpy()
    label = cols[values.argmax(1)] if len(values) else np.array([], dtype=object)
    if threshold is not None:
        label = np.where(values.max(1) < threshold, unknown_label, label)
    return pd.Series(label, index=proba.index, name="label", dtype=object)


def _annotate(clf, adata, *, key_added, threshold, unknown_label, copy, **kwargs):
    if not isinstance(adata, ad.AnnData):
        raise TypeError("annotate needs an AnnData")
    adata = adata.copy() if copy else adata
    proba = clf.predict_proba(adata, **kwargs)
    proba.index = adata.obs_names
    adata.obs[f"{key_added}_label"] = pd.Categorical(_labels(proba, threshold, unknown_label))
    adata.obs[f"{key_added}_confidence"] = proba.max(1).to_numpy()
    adata.obsm[f"{key_added}_proba"] = proba
    if isinstance(clf, Ensemble):
        adata.obs[f"{key_added}_uncertainty"] = 1.0 - proba.max(1).to_numpy()
    return adata if copy else None


# --------------------------------------------------------------------------- training


def _training_data(data, label_key: str, layer, gene_key, genes, donor_key):
    """(source, gene alignment, model genes, labels (object array), donors or None)."""
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and not isinstance(data, ad.AnnData)
    ):
        from scdataloader.collection import Collection

        data = Collection(data, obs_keys=[label_key], layer=layer)
    if _is_collection(data):
        if label_key not in data.obs_keys:
            raise LabelError(
                f"the Collection was built without obs key {label_key!r}: "
                f"its obs_keys are {data.obs_keys}"
            )
        model_genes = list(data.genes) if genes is None else list(genes)
        align = align_genes(data.genes, model_genes)
        labels = np.asarray(data.label_values(label_key), dtype=object)
        donors = None
        if donor_key is not None:
            donors = data.read_obs([donor_key])[donor_key].astype(str).to_numpy()
        return data, align, model_genes, labels, donors
    if not isinstance(data, ad.AnnData):
        raise TypeError(f"expected an AnnData, a Collection or file paths, not {type(data)}")
    labels = labels_of(data.obs, label_key).to_numpy(dtype=object)
    donors = None
    if donor_key is not None:
        donors = labels_of(data.obs, donor_key).to_numpy(dtype=object)
    if genes is None:
        from scdataloader.genes import strip_version

        model_genes = [str(g) for g in strip_version(data.var_names)]
    else:
        model_genes = list(genes)
    source, align, _ = _as_source(data, model_genes, layer=layer, gene_key=gene_key)
    return source, align, model_genes, labels, donors


def _augmentation(
    augment, data, *, train_rows, label_key, key, layer, align, model_genes, seed
) -> tuple[AugmentationVectors | None, dict | None]:
    """(vectors over the model genes, provenance) for ``fit``'s ``augment`` argument."""
    from .augment import AugmentationVectors, augmentation_vectors

    if augment is None:
        return None, None
    if isinstance(augment, AugmentationVectors):
        vectors = augment.reindex(model_genes)
        info = {"vectors": "given", "n_vectors": len(vectors)}
    elif isinstance(augment, str) and augment == "donor":
        if key is None:
            raise InputError("augment='donor' needs the donors: pass donor_key or augment_key")
        if not isinstance(data, ad.AnnData):
            raise InputError(
                "augment='donor' computes the vectors from an AnnData; for a Collection, pass "
                "AugmentationVectors made with scprint.tabular.augmentation_vectors"
            )
        train = data[np.sort(train_rows)]
        train = train.to_memory() if train.isbacked else train
        try:
            found = augmentation_vectors(train, label_key=label_key, donor_key=key, layer=layer)
        except ValueError as e:  # no cell type in two donors, missing column
            raise InputError(f"augment='donor': {e}") from e
        # columns of `found` are the columns of `data`: take each model gene's column
        cols = np.asarray(align.index)
        values = np.zeros((len(found), len(model_genes)), dtype=np.float32)
        values[:, cols >= 0] = found.vectors[:, cols[cols >= 0]]
        vectors = AugmentationVectors(values, model_genes, found.cell_types, found.donors)
        info = {
            "vectors": "donor",
            "key": key,
            "n_vectors": len(vectors),
            "computed_on": "training cells",
        }
    else:
        raise ValueError(f"augment must be None, 'donor' or AugmentationVectors, not {augment!r}")
    info["seed"] = seed
    if len(vectors) == 0:
        logger.warning("no augmentation vector left: the training batches are not augmented")
    logger.info("augmenting training batches with %d vectors", len(vectors))
    return vectors, info


def _save_state(task: TabularTask, path: Path) -> None:
    """Write the task's weights and hyperparameters to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _save({"state_dict": task.state_dict(), "hparams": task.hparams}, path)


def fit(
    data,
    *,
    label_key: str,
    model: str = "tabnet",
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    gene_key: str | None = None,
    val_size: float = 0.2,
    donor_key: str | None = None,
    max_epochs: int = 100,
    batch_size: int = 128,
    patience: int = 4,
    seed: int = 0,
    class_weights: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    accelerator: str = "auto",
    progress: bool = True,
    calibrate: bool = True,
    model_kwargs: dict | None = None,
    optimizer: dict | None = None,
    lambda_sparse: float | None = None,
    gradient_clip_val: float | None = 0.5,
    augment: AugmentationVectors | Literal["donor"] | None = None,
    augment_key: str | None = None,
    augment_prob: float = 1.0,
    refit: bool | None = None,
    l2: float | Sequence[float] | None = None,
) -> TabularClassifier:
    """Train a classifier of ``label_key`` on raw counts.

    Parameters
    ----------
    data
        An AnnData (in memory or backed), a :class:`scdataloader.Collection` built with
        ``obs_keys=[label_key]``, or file paths (read as a Collection).
    label_key
        ``obs`` column of the labels. Cells without a label are left out (with a warning).
    model
        A preset: ``"tabnet"`` (SIMS), ``"tabnet-sctab"``, ``"mlp"`` or ``"linear"``.
    layer
        Layer holding the counts (default ``X``).
    genes
        The model's input genes (default: all genes of ``data``), e.g. highly variable
        ones; matched against ``var_names`` (or ``var[gene_key]``).
    gene_key
        ``var`` column holding the gene names.
    val_size
        Fraction of cells (of donors, with ``donor_key``) held out for validation.
    donor_key
        ``obs`` column of donors: split donor-wise instead of stratified by label.
    max_epochs, batch_size, patience
        Training length; early stopping once neither the validation macro F1 nor the
        validation loss has improved for ``patience`` epochs (SIMS: patience 4; see
        :class:`~scprint.tabular.module.StallStopping`). The weights of the epoch with
        the best validation macro F1 (ties broken by the lower validation loss) are
        kept. With L-BFGS (the ``linear`` preset) every epoch is one full-batch step
        and ``batch_size`` is ignored; training sets above :data:`LBFGS_MAX_VALUES`
        (cells x genes) switch to scTab's minibatch AdamW.
    seed
        Seed of the split, initialisation and batch order.
    class_weights
        Weight the cross-entropy by inverse class frequency (scTab's formula).
    checkpoint_dir
        A folder to write the kept weights to (``best.pt``; one file per L2 value when
        several are tried); None (default): kept in memory only.
    accelerator
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"gpu"`` / ``"cuda"`` or ``"mps"``.
        Training runs in a plain torch loop (:func:`~scprint.tabular.module.train_task`);
        for Lightning's Trainer (several devices) see :mod:`scprint.tabular.lightning`.
    progress
        Show a progress bar over the epochs.
    calibrate
        Fit the temperature on the validation cells after training.
    model_kwargs, optimizer, lambda_sparse
        Override the preset's model arguments, :class:`OptimizerConfig` fields (e.g.
        ``{"name": "adamw", "lr": 5e-4, "scheduler": "step"}``, ``{"l2": 1e-2}``) or
        mask-entropy weight. The presets: ``tabnet`` Adam (SIMS); ``tabnet-sctab`` and
        ``mlp`` AdamW with StepLR (scTab); ``linear`` full-batch L-BFGS on the
        L2-penalised weighted cross-entropy, i.e. multinomial logistic regression
        solved to convergence, its penalty chosen on the validation cells (``l2``).
    gradient_clip_val
        Gradient norm clipping (SIMS: 0.5); None to disable.
    augment
        scTab's donor-difference augmentation of the training batches (never of the
        validation or prediction batches): ``"donor"`` computes the vectors with
        :func:`~scprint.tabular.augmentation_vectors` on the training cells only (an
        AnnData is needed; cell types from ``label_key``, donors from ``augment_key``,
        else ``donor_key``); or precomputed
        :class:`~scprint.tabular.AugmentationVectors` (reindexed to the model's genes).
        The provenance records how the vectors were made, not the vectors.
    augment_key
        ``obs`` column of the donors (or samples) whose differences make the vectors
        (default ``donor_key``).
    augment_prob
        Probability that a training cell is augmented, per cell and per epoch. scTab
        augments every training cell (1.0: its training step adds a vector to the whole
        batch; the paper gives no fraction).
    refit
        After early stopping, train a fresh model (same seed) on the training *and*
        validation cells for as many epochs as the kept one had, and return it: no
        labelled cell is left out of the final model, which matters for small
        references and rare classes. The temperature is still the one fitted on the
        validation cells with the first model (the refit model has seen them);
        ``provenance["refit"]`` records it. None: the preset's choice (``linear``:
        True, the others: False).
    l2
        L2 penalty (:attr:`OptimizerConfig.l2`), or several: one model per value, the
        best on the validation score is kept (``provenance["l2_search"]`` lists them
        all). None: the preset's (``linear``: :data:`L2_GRID`, the others: 0).
    """
    presets = _presets()
    if model not in presets:
        raise ValueError(f"unknown model {model!r}; choose one of {list(presets)}")
    model_name, kwargs, opt, lam = presets[model]
    kwargs = {**kwargs, **(model_kwargs or {})}
    opt = OptimizerConfig(**{**asdict(opt), **(optimizer or {})})
    defaults = PRESET_DEFAULTS.get(model, {})
    refit = defaults.get("refit", False) if refit is None else bool(refit)
    if l2 is None and "l2" not in (optimizer or {}):
        l2 = defaults.get("l2")
    l2_grid = None
    if l2 is not None:
        values = [float(v) for v in np.atleast_1d(np.asarray(l2, dtype=float))]
        if not values or any(not np.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"l2 must be finite and >= 0, not {l2!r}")
        if len(values) == 1:
            opt = OptimizerConfig(**{**asdict(opt), "l2": values[0]})
        else:
            l2_grid = sorted(set(values))
    lam = lam if lambda_sparse is None else float(lambda_sparse)

    source, align, model_genes, labels, donors = _training_data(
        data, label_key, layer, gene_key, genes, donor_key
    )
    known = np.array([v is not None and v == v for v in labels])
    if not known.all():
        logger.warning("%d cells without a %r label are left out", int((~known).sum()), label_key)
    if donors is not None:
        known &= np.array([d is not None for d in donors])
    rows = np.flatnonzero(known)
    if len(rows) < 4:
        raise InputError(f"only {len(rows)} labelled cells: too few to train")
    y_str = labels[rows].astype(str)
    classes = sorted(set(y_str))
    if len(classes) < 2:
        raise LabelError(f"{label_key!r} has a single class ({classes}): nothing to learn")
    codes_all = np.full(len(labels), -1, dtype=np.int64)
    codes_all[rows] = _encode(y_str, classes)
    parts = split(
        y_str, val_size=val_size, groups=None if donors is None else donors[rows], seed=seed
    )
    train_rows, val_rows = rows[parts["train"]], rows[parts["val"]]
    small = pd.Series(y_str).value_counts()
    if (small < 2).any():
        logger.warning("classes with fewer than 2 cells: %s", list(small.index[small < 2]))
    weights = None
    if class_weights:
        weights = _class_weights(codes_all[train_rows], len(classes)).tolist()

    vectors, augment_info = _augmentation(
        augment,
        data,
        train_rows=train_rows,
        label_key=label_key,
        key=augment_key or donor_key,
        layer=layer,
        align=align,
        model_genes=model_genes,
        seed=seed,
    )
    if vectors is not None:
        augment_info["prob"] = float(augment_prob)

    def new_task(o: OptimizerConfig, class_weights: list[float] | None) -> TabularTask:
        seed_all(seed)
        return TabularTask(
            model_name,
            kwargs,
            genes=model_genes,
            classes=classes,
            class_weights=class_weights,
            optimizer=asdict(o),
            lambda_sparse=lam,
            augment=vectors,
            augment_prob=augment_prob,
            augment_seed=seed,
        )

    train_ds = CellBatches(source, align.index, train_rows, codes_all)
    val_ds = CellBatches(source, align.index, val_rows, codes_all)
    if opt.name == "lbfgs" and len(train_rows) * len(model_genes) > LBFGS_MAX_VALUES:
        fallback = OptimizerConfig.sctab(model_name)
        logger.info(
            "%d training cells x %d genes is too large for one L-BFGS batch: "
            "training with minibatch AdamW (lr %g, StepLR) instead",
            len(train_rows),
            len(model_genes),
            fallback.lr,
        )
        opt = OptimizerConfig(**{**asdict(fallback), "l2": opt.l2})
    if opt.name == "lbfgs":
        batch_size = len(train_ds)  # full batch: one L-BFGS step per epoch
    drop_last = len(train_ds) % batch_size == 1  # batch norm needs 2 cells
    train_dl = make_loader(train_ds, batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    val_dl = make_loader(val_ds, max(batch_size, 256))
    device = device_of(accelerator)
    loop = dict(
        patience=patience,
        gradient_clip_val=None if opt.name == "lbfgs" else gradient_clip_val,
        device=device,
        progress=progress,
    )

    def train(o: OptimizerConfig) -> tuple[TabularTask, int, dict | None]:
        """(task holding the best epoch's weights, epochs run, that epoch's history
        entry); with L-BFGS the last epoch's (the penalised optimum, reached when neither
        the validation F1 nor loss moves any more)."""
        task = new_task(o, weights)
        keep = "last" if o.name == "lbfgs" else "best"
        result = train_task(task, train_dl, val_dl, max_epochs=max_epochs, keep=keep, **loop)
        if checkpoint_dir is not None:
            name = f"best-l2={o.l2:g}.pt" if l2_grid else "best.pt"
            _save_state(task, Path(checkpoint_dir) / name)
        return task, result.epochs, result.kept

    search = None
    if l2_grid:
        runs = []
        for value in l2_grid:
            o = OptimizerConfig(**{**asdict(opt), "l2": float(value)})
            runs.append((o, *train(o)))
        search = [
            {"l2": o.l2, "epochs": n, **({k: t[k] for k in t} if t else {})} for o, _, n, t in runs
        ]
        # the best validation score; among ties the strongest penalty (the simplest model)
        order = sorted(
            range(len(runs)),
            key=lambda i: (-(runs[i][3] or {}).get("val_score", -np.inf), -runs[i][0].l2),
        )
        opt, task, n_epochs, top = runs[order[0]]
        logger.info("L2 penalty chosen on the validation cells: %g", opt.l2)
    else:
        task, n_epochs, top = train(opt)
    net = task.model.cpu().eval()
    provenance = {
        "preset": model,
        "label_key": label_key,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "split": "donor" if donor_key else "stratified",
        "seed": seed,
        "epochs": n_epochs,
        "best_epoch": top["epoch"] if top else None,
        "best_val_macro_f1": top["val_macro_f1"] if top else None,
        "best_val_loss": top["val_loss"] if top else None,
        "history": task.history,
        "optimizer": asdict(opt),
        "l2_search": search,
        "lambda_sparse": lam,
        "class_weights": weights,
        "augment": augment_info,
    }
    clf = TabularClassifier(
        net,
        model_name=model_name,
        model_kwargs=kwargs,
        genes=model_genes,
        classes=classes,
        provenance=provenance,
    )
    clf.val_rows = val_rows  # cells (rows of the input) used for validation
    if calibrate:
        with torch.no_grad():
            logits = torch.cat([net(b["x"])["logits"] for b in make_loader(val_ds, 512)])
        clf.temperature = fit_temperature_logits(logits, torch.from_numpy(codes_all[val_rows]))
        clf.provenance["temperature_fitted_on"] = "validation"
    if refit:
        all_rows = np.sort(np.concatenate([train_rows, val_rows]))
        epochs = top["epoch"] + 1 if top else n_epochs
        all_weights = None
        if class_weights:
            all_weights = _class_weights(codes_all[all_rows], len(classes)).tolist()
        task = new_task(opt, all_weights)
        all_ds = CellBatches(source, align.index, all_rows, codes_all)
        bs = len(all_ds) if opt.name == "lbfgs" else batch_size
        all_dl = make_loader(all_ds, bs, shuffle=True, seed=seed, drop_last=len(all_ds) % bs == 1)
        train_task(task, all_dl, [], max_epochs=epochs, keep="last", **loop)
        clf.model = task.model.cpu().eval()
        clf.provenance["refit"] = {
            "n_cells": len(all_rows),
            "epochs": epochs,
            "class_weights": all_weights,
            "temperature": "fitted on the validation cells before the refit",
        }
    return clf


# --------------------------------------------------------------------------- ensembles


class Ensemble:
    """A deep ensemble: mean probabilities of several classifiers, 1 - max as uncertainty.

    The members must share their classes (their genes may differ).
    """

    def __init__(self, classifiers: Sequence[TabularClassifier]):
        if len(classifiers) == 0:
            raise ValueError("an Ensemble needs at least one classifier")
        self.classifiers = list(classifiers)
        self.classes = self.classifiers[0].classes
        for c in self.classifiers[1:]:
            if c.classes != self.classes:
                raise ValueError("the classifiers of an Ensemble must share their classes")

    def __len__(self) -> int:
        return len(self.classifiers)

    def predict_proba(self, adata, **kwargs) -> pd.DataFrame:
        """Mean of the members' (calibrated) probabilities; cells x classes."""
        frames = [c.predict_proba(adata, **kwargs) for c in self.classifiers]
        mean = sum(f.to_numpy() for f in frames) / len(frames)
        return pd.DataFrame(mean, index=frames[0].index, columns=self.classes)

    def uncertainty(self, adata, **kwargs) -> pd.Series:
        """1 - max mean probability, in [0, 1 - 1/C]."""
        p = self.predict_proba(adata, **kwargs)
        return pd.Series(1.0 - p.max(1).to_numpy(), index=p.index, name="uncertainty")

    def predict(
        self, adata, *, threshold: float | None = None, unknown_label: str = "unknown", **kwargs
    ) -> pd.Series:
        return _labels(self.predict_proba(adata, **kwargs), threshold, unknown_label)

    def top_genes(
        self, adata, *, label_key: str | None = None, n: int = 20, **kwargs
    ) -> dict[str, list[str]]:
        """Per-class top genes of the members' mean class attributions (genes a member
        does not use count as 0). Single TabNets pick partly arbitrary subsets of
        redundant markers; averaging over seeds makes the lists more stable."""
        return _top(self.class_attributions(adata, label_key=label_key, **kwargs), n)

    def class_attributions(self, adata, *, label_key: str | None = None, **kwargs) -> pd.DataFrame:
        """Mean over the members of :meth:`TabularClassifier.class_attributions` (classes x
        union of the members' genes; a gene a member does not use counts as 0)."""
        frames = [
            c.class_attributions(adata, label_key=label_key, **kwargs) for c in self.classifiers
        ]
        total = frames[0]
        for f in frames[1:]:
            total = total.add(f, fill_value=0.0)
        return total.fillna(0.0) / len(frames)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the members to one file (read it back with :meth:`load` or
        :func:`load_model`)."""
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "members": [c._payload() for c in self.classifiers],
        }
        _save(payload, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ensemble:
        """Read a file written by :meth:`save` (or one classifier's file: an ensemble of 1).

        Raises
        ------
        scprint.CheckpointError
            The file is missing, corrupt, or not a tabular classifier.
        """
        payload = _read_payload(path)
        if "members" not in payload:
            return cls([_from_payload(TabularClassifier, payload, path)])
        return cls._from_payload(payload, path)

    @classmethod
    def _from_payload(cls, payload: dict, path) -> Ensemble:
        from ..checkpoint import CheckpointError

        members = [_from_payload(TabularClassifier, m, path) for m in payload["members"]]
        try:
            return cls(members)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from e

    def annotate(
        self,
        adata: ad.AnnData,
        *,
        key_added: str = "tabular",
        threshold: float | None = None,
        unknown_label: str = "unknown",
        copy: bool = False,
        **kwargs,
    ) -> ad.AnnData | None:
        """As :meth:`TabularClassifier.annotate`, adding ``obs[f"{key_added}_uncertainty"]``."""
        return _annotate(
            self,
            adata,
            key_added=key_added,
            threshold=threshold,
            unknown_label=unknown_label,
            copy=copy,
            **kwargs,
        )


def fit_ensemble(
    data, *, n_models: int = 5, seeds: Sequence[int] | None = None, **kwargs
) -> Ensemble:
    """Train ``n_models`` classifiers differing by seed (initialisation, batch order and
    split) with :func:`fit` (keyword arguments go there); scTab used 5."""
    seeds = list(range(n_models)) if seeds is None else list(seeds)
    if len(seeds) != n_models:
        raise ValueError(f"{len(seeds)} seeds for {n_models} models")
    return Ensemble([fit(data, seed=s, **kwargs) for s in seeds])
