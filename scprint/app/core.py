"""The web app's logic, free of Streamlit: models, uploads, predictions, downloads.

Every function here is plain Python over AnnData, pandas and matplotlib, so that the
page (:mod:`scprint.app.page`) only lays them out. Problems with a user's input are
raised as :class:`UploadError`, whose message says what is wrong and what to do.

Two kinds of models are listed from a folder:

``"tabular"``
    files written by ``scprint tabular fit`` (:func:`scprint.tabular.load_model`): a
    classifier of one label column over a fixed list of genes.
``"foundation"``
    Lightning checkpoints written by ``scprint fit`` (:func:`scprint.load`): cell
    classes, embeddings and gene networks, zero shot.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "MODEL_SUFFIXES",
    "UNKNOWN",
    "ModelFolder",
    "ModelInfo",
    "Predictions",
    "UploadCheck",
    "UploadError",
    "annotated_h5ad",
    "cell_types",
    "check_upload",
    "describe_model",
    "embedding_2d",
    "embedding_figure",
    "gene_network",
    "hub_table",
    "list_models",
    "load_model",
    "predict",
    "predictions_csv",
    "read_upload",
    "readable_names",
    "subgraph_figure",
    "top_genes_table",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 1024
"""Largest upload accepted by default, in MiB (SIMS' and Azimuth's web apps: 1 GB)."""
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt")
"""File suffixes looked at in the models folder."""
UNKNOWN = "unknown"
"""Label of cells whose top probability is below the threshold."""

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TERM_ID = re.compile(r"^[A-Za-z]+:\d+$")
_SYMBOL_COLUMNS = ("feature_name", "symbol", "gene_symbols", "gene_name")
_COUNT_LAYERS = ("counts", "raw_counts", "count")
_MAX_LEGEND = 20


class UploadError(ValueError):
    """A problem with the user's file, with what is wrong and what to do.

    Parameters
    ----------
    problem
        What is wrong, in one or two sentences.
    hint
        What to do about it.
    """

    def __init__(self, problem: str, hint: str = ""):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem} {hint}".strip())


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """What the app shows of a model file, read without running it.

    Attributes
    ----------
    path
        The file.
    name
        Its path relative to the models folder, without suffix.
    kind
        ``"tabular"`` or ``"foundation"``.
    description
        One line: architecture and size.
    genes
        The model's input genes (tabular) or vocabulary (foundation).
    classes
        What it predicts -> the labels it knows (tabular: the label column; foundation:
        each classified obs column, its leaf labels).
    organisms
        Readable organisms of its genes (``"human"``, ``"mouse"``).
    provenance
        How it was trained (flat, readable values).
    """

    path: Path
    name: str
    kind: Literal["tabular", "foundation"]
    description: str
    genes: tuple[str, ...]
    classes: Mapping[str, tuple[str, ...]]
    organisms: tuple[str, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def targets(self) -> list[str]:
        """The columns it can predict."""
        return list(self.classes)


@dataclass
class ModelFolder:
    """The models of a folder, and the files that could not be read.

    Attributes
    ----------
    models
        Readable models, sorted by name.
    skipped
        File name -> why it was skipped.
    """

    models: list[ModelInfo]
    skipped: dict[str, str]

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> ModelInfo:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def _readable_organisms(genes: Sequence[str]) -> tuple[str, ...]:
    from scdataloader._constants import ORGANISMS
    from scdataloader.genes import detect_gene_ids

    if not len(genes):
        return ()
    guess = detect_gene_ids(list(genes))
    found = [o for o, f in guess.fractions.items() if f > 0.1]
    return tuple(ORGANISMS.get(o, o) for o in found)


def _flat(values: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance with readable scalar values (nested dicts as ``a.b`` keys)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            for k, v in _flat(value).items():
                out[f"{key}.{k}"] = v
        elif isinstance(value, list | tuple):
            if any(isinstance(v, Mapping | list | tuple) for v in value):
                out[key] = f"{len(value)} entries"
            else:
                out[key] = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        elif isinstance(value, float):
            out[key] = float(f"{value:.4g}")
        elif value is not None:
            out[key] = value
    return out


def _tabular_info(path: Path, name: str) -> ModelInfo:
    from ..tabular import Ensemble, load_model

    clf = load_model(path)
    members = clf.classifiers if isinstance(clf, Ensemble) else [clf]
    first = members[0]
    genes = list(dict.fromkeys(g for m in members for g in m.genes))
    prov = {k: v for k, v in first.provenance.items() if k != "class_weights"}
    label_key = str(prov.get("label_key") or "label")
    kind = first.model_name
    if len(members) > 1:
        description = f"tabular ensemble of {len(members)} {kind} models"
    else:
        description = f"tabular {kind} classifier (preset {prov.get('preset', kind)})"
    prov["temperature"] = round(first.temperature, 4)
    if len(members) > 1:
        prov["members"] = len(members)
    return ModelInfo(
        path=path,
        name=name,
        kind="tabular",
        description=description,
        genes=tuple(genes),
        classes={label_key: tuple(clf.classes)},
        organisms=_readable_organisms(genes),
        provenance=_flat(prov),
    )


def _foundation_info(path: Path, name: str) -> ModelInfo:
    import torch

    from scdataloader._constants import ORGANISMS

    from ..checkpoint import CheckpointError
    from ..tasks._data import model_organisms

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}).") from e
    hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    if "genes" not in hparams:
        raise CheckpointError(f"{path}: neither a tabular model nor an scPRINT checkpoint.")
    genes = [str(g) for g in hparams["genes"]]
    classes = {
        str(key): tuple(str(v) for v in h.get("leaves", ()))
        for key, h in (hparams.get("hierarchies") or {}).items()
        if len(h.get("leaves", ())) > 1
    }
    arch = {k: hparams[k] for k in ("preset", "d_model", "n_layers", "n_heads") if k in hparams}
    prov = {
        **arch,
        "decoder": hparams.get("decoder"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "lightning": ckpt.get("pytorch-lightning_version"),
        "label_keys": list(hparams.get("label_keys") or []),
    }
    description = "scPRINT foundation model" + (
        f" (preset {hparams['preset']})" if "preset" in hparams else ""
    )
    return ModelInfo(
        path=path,
        name=name,
        kind="foundation",
        description=description,
        genes=tuple(genes),
        classes=classes,
        organisms=tuple(ORGANISMS.get(o, o) for o in model_organisms(genes)),
        provenance=_flat(prov),
    )


def describe_model(path: str | os.PathLike, name: str | None = None) -> ModelInfo:
    """Read one model file's metadata (tabular file or scPRINT checkpoint).

    Raises
    ------
    scprint.CheckpointError
        The file is neither a readable tabular model nor an scPRINT checkpoint.
    """
    from ..checkpoint import CheckpointError

    path = Path(path)
    name = name or path.stem
    readers = [_tabular_info, _foundation_info]
    if path.suffix == ".ckpt":
        readers.reverse()
    for reader in readers:
        try:
            return reader(path, name)
        except CheckpointError as e:
            logger.debug("%s: %s", reader.__name__, e)
    raise CheckpointError(
        f"{path}: neither a tabular model (made by scprint tabular fit) nor an scPRINT "
        "checkpoint (made by scprint fit); the file may be truncated or of another tool."
    )


def list_models(folder: str | os.PathLike) -> ModelFolder:
    """The models of a folder (and its sub-folders): files ending in ``MODEL_SUFFIXES``.

    Parameters
    ----------
    folder
        The models folder.

    Returns
    -------
    ModelFolder
        Readable models with their metadata, and the files skipped with the reason.
    """
    from ..checkpoint import CheckpointError

    root = Path(folder).expanduser()
    models: list[ModelInfo] = []
    skipped: dict[str, str] = {}
    if not root.is_dir():
        return ModelFolder(models, skipped)
    files = sorted(p for p in root.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
    for path in files:
        name = path.relative_to(root).with_suffix("").as_posix()
        try:
            models.append(describe_model(path, name))
        except CheckpointError as e:
            logger.warning("skipping %s: %s", path, e)
            skipped[path.relative_to(root).as_posix()] = str(e).replace(f"{path}: ", "")
    return ModelFolder(models, skipped)


def load_model(info: ModelInfo):
    """The model object: a tabular classifier (or ensemble), or an scPRINT module."""
    if info.kind == "tabular":
        from ..tabular import load_model as load_tabular

        return load_tabular(info.path)
    from ..checkpoint import load

    return load(info.path)


# --------------------------------------------------------------------------- uploads


def read_upload(name: str, data: bytes, *, max_mb: float = DEFAULT_MAX_UPLOAD_MB) -> ad.AnnData:
    """Read an uploaded file as an AnnData, in memory.

    Parameters
    ----------
    name
        The file's name (its suffix must be ``.h5ad``).
    data
        The file's bytes.
    max_mb
        Largest size accepted, in MiB.

    Raises
    ------
    UploadError
        The file is too large, not an ``.h5ad`` file, or unreadable.
    """
    size_mb = len(data) / 2**20
    if size_mb > max_mb:
        raise UploadError(
            f"{name} is {size_mb:,.0f} MB, above this app's {max_mb:,.0f} MB limit.",
            "Upload a subset of the cells (e.g. adata[:50000].write_h5ad(...)), or restart "
            "the app with a larger --max-upload-mb.",
        )
    how_to = (
        "Save your data as AnnData in Python with adata.write_h5ad('data.h5ad') (from R: "
        "zellkonverter::writeH5AD or SeuratDisk), then upload that file."
    )
    if not name.lower().endswith(".h5ad") or not data.startswith(_HDF5_MAGIC):
        what = (
            "its name does not end in .h5ad"
            if not name.lower().endswith(".h5ad")
            else "its content is not HDF5"
        )
        raise UploadError(f"{name} is not an .h5ad file ({what}).", how_to)
    from scdataloader.errors import FileFormatError
    from scdataloader.io import read_anndata

    fd, tmp = tempfile.mkstemp(suffix=".h5ad", prefix="scprint_app_")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        adata = read_anndata(tmp)
    except FileFormatError as e:
        raise UploadError(
            f"{name} could not be read as AnnData: {str(e).replace(tmp + ': ', '')}", how_to
        ) from e
    finally:
        os.unlink(tmp)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise UploadError(
            f"{name} holds no data ({adata.n_obs} cells x {adata.n_vars} genes).",
            "Upload a file with cells and genes.",
        )
    return adata


@dataclass
class UploadCheck:
    """An upload that suits a model.

    Attributes
    ----------
    layer
        Where the raw counts are: None (``X``), a layer name or ``"raw"``.
    gene_key
        The var column whose gene names match the model's (None: ``var_names``).
    organism
        The detected organism of the data's genes (readable), None when unknown.
    n_found
        Model genes found in the data.
    n_model_genes
        Genes of the model.
    notes
        Things worth telling the user (counts taken from a layer, few genes found).
    """

    layer: str | None
    gene_key: str | None
    organism: str | None
    n_found: int
    n_model_genes: int
    notes: list[str] = field(default_factory=list)

    @property
    def fraction_found(self) -> float:
        return self.n_found / max(self.n_model_genes, 1)


def _what_x_holds(check) -> str:
    """A sentence on what a matrix holds instead of raw counts (a ``CountsCheck``)."""
    top = f"max {check.max_value:.3g}"
    if check.kind == "recoverable" and check.transform not in (None, "none"):
        return f"X holds log-normalised values (non-integer, {top}), not raw counts."
    if check.kind in ("recoverable", "normalized"):
        return f"X holds normalised values (non-integer, e.g. CPM; {top}), not raw counts."
    if check.kind == "log_normalized":
        return f"X holds log-normalised values (non-integer, {top}), not raw counts."
    if check.kind == "scaled":
        return (
            f"X holds negative values (min {check.min_value:.3g}): it looks scaled or "
            "centred, not raw counts."
        )
    if check.kind == "non_finite":
        return "X holds NaN or infinite values, not raw counts."
    return "X holds no expression (every sampled cell has zero counts)."


def _counts_layer(adata: ad.AnnData) -> tuple[str | None, str | None]:
    """(where the raw counts are, or None; the problem with X when not X)."""
    from scdataloader.preprocess import check_counts

    check = check_counts(adata.X)
    if check.kind == "counts":
        return None, None
    candidates = [k for k in _COUNT_LAYERS if k in adata.layers]
    if adata.raw is not None and adata.raw.n_vars == adata.n_vars:
        candidates.append("raw")
    for key in candidates:
        matrix = adata.raw.X if key == "raw" else adata.layers[key]
        if check_counts(matrix).kind == "counts":
            return key, _what_x_holds(check)
    return None, _what_x_holds(check)


def _gene_columns(adata: ad.AnnData) -> list[tuple[str, pd.Index]]:
    out = [("var_names", pd.Index(adata.var_names.astype(str)))]
    out += [(c, pd.Index(adata.var[c].astype(str))) for c in _SYMBOL_COLUMNS if c in adata.var]
    return out


def _data_organism(adata: ad.AnnData) -> str | None:
    from scdataloader._constants import ORGANISMS
    from scdataloader.genes import detect_gene_ids

    best, fraction = None, 0.0
    for _, names in _gene_columns(adata):
        guess = detect_gene_ids(names)
        if guess.organism is not None and guess.fraction_mapped > fraction:
            best, fraction = guess.organism, guess.fraction_mapped
    return None if best is None else ORGANISMS.get(best, best)


def _examples(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(str(g) for g in list(names)[:n])


def _n_found(adata: ad.AnnData, info: ModelInfo) -> tuple[int, str | None]:
    """Model genes found in the data, and the var column naming them best (None for
    ``var_names``): by name for tabular models (versions ignored), through the gene tables
    for foundation models."""
    from scdataloader.errors import GeneMappingError
    from scdataloader.genes import map_genes, strip_version

    model = set(strip_version(np.asarray(info.genes, dtype=object).astype(str)))
    best, column = 0, None
    for name, names in _gene_columns(adata):
        if info.kind == "tabular":
            n = len(model.intersection(strip_version(names.to_numpy())))
        else:
            try:
                mapping = map_genes(names.to_numpy(), None, min_fraction=0.0)
            except GeneMappingError:
                continue
            n = len(model.intersection(g for g in mapping.ids if g is not None))
        if n > best:
            best, column = n, None if name == "var_names" else name
    return best, column


def check_upload(adata: ad.AnnData, info: ModelInfo) -> UploadCheck:
    """Check that an AnnData suits a model: raw counts, organism, shared genes.

    Parameters
    ----------
    adata
        The uploaded data (read, never modified).
    info
        The chosen model.

    Returns
    -------
    UploadCheck
        Where the counts are and how many of the model's genes the data has.

    Raises
    ------
    UploadError
        Log-normalised or scaled values with no raw counts in a layer, genes of another
        organism than the model's, or no gene shared with the model.
    """
    layer, problem = _counts_layer(adata)
    notes = []
    if problem is not None and layer is None:
        raise UploadError(
            problem,
            "The models normalise counts themselves and need the raw integer counts: "
            "upload a file with them in X, in a layer named 'counts', or in adata.raw.",
        )
    if layer is not None:
        where = "adata.raw" if layer == "raw" else f"the layer {layer!r}"
        notes.append(f"X is not raw counts; the raw counts of {where} are used.")
    organism = _data_organism(adata)
    if organism is not None and info.organisms and organism not in info.organisms:
        raise UploadError(
            f"The genes of this file are {organism} genes (e.g. "
            f"{_examples(adata.var_names)}) but the model {info.name!r} was trained on "
            f"{' and '.join(info.organisms)} genes.",
            f"Choose a model trained on {organism} cells, or upload {info.organisms[0]} data.",
        )
    n_found, gene_key = _n_found(adata, info)
    if n_found == 0:
        raise UploadError(
            f"None of the {info.n_genes:,} genes of the model {info.name!r} (e.g. "
            f"{_examples(info.genes)}) is in this file (e.g. {_examples(adata.var_names)}).",
            "Gene names must be of the same kind as the model's (Ensembl ids or symbols); "
            "put them in var_names or in a var column named 'feature_name'.",
        )
    if n_found / info.n_genes < 0.5:
        notes.append(
            f"Only {n_found:,} of the model's {info.n_genes:,} genes are in this file: "
            "missing genes count as zero, so predictions may be less reliable."
        )
    if gene_key is not None:
        notes.append(f"Genes are matched on var[{gene_key!r}].")
    return UploadCheck(layer, gene_key, organism, n_found, info.n_genes, notes)


# --------------------------------------------------------------------------- predictions


def readable_names(labels: Sequence[str]) -> dict[str, str]:
    """Label -> readable name: ontology term ids (``CL:0000540``) get their term's name,
    other labels are kept as they are."""
    out = {}
    for label in labels:
        label = str(label)
        name = label
        if _TERM_ID.match(label):
            try:
                from scdataloader.ontology import term_name

                name = term_name(label) or label
            except Exception:  # an ontology not shipped offline: keep the id
                name = label
        out[label] = name
    return out


@dataclass
class Predictions:
    """Class probabilities of the uploaded cells.

    Attributes
    ----------
    proba
        Cells x classes, each row sums to 1 (index: ``obs_names``).
    target
        What is predicted (the label column).
    names
        Class -> readable name.
    key
        Prefix of the keys written into the annotated AnnData.
    """

    proba: pd.DataFrame
    target: str
    names: dict[str, str]
    key: str

    @property
    def confidence(self) -> pd.Series:
        """Top probability of each cell."""
        return pd.Series(self.proba.to_numpy().max(axis=1), index=self.proba.index)

    def labels(self, threshold: float = 0.0) -> pd.Series:
        """Most probable class of each cell, :data:`UNKNOWN` when its probability is below
        ``threshold``."""
        values = self.proba.to_numpy()
        cols = np.asarray(self.proba.columns, dtype=object)
        top = cols[values.argmax(axis=1)] if len(values) else np.array([], dtype=object)
        top = np.where(values.max(axis=1) < threshold, UNKNOWN, top) if len(values) else top
        return pd.Series(top, index=self.proba.index, name="label", dtype=object)

    def label_names(self, threshold: float = 0.0) -> pd.Series:
        """:meth:`labels` as readable names."""
        return self.labels(threshold).map(lambda v: self.names.get(v, v))

    def table(self, threshold: float = 0.0) -> pd.DataFrame:
        """One row per cell: label, readable name, confidence."""
        return pd.DataFrame(
            {
                "label": self.labels(threshold),
                "name": self.label_names(threshold),
                "confidence": self.confidence,
            }
        )

    def counts(self, threshold: float = 0.0) -> pd.DataFrame:
        """Cells per predicted label (name, cells, fraction), most frequent first."""
        names = self.label_names(threshold)
        counts = names.value_counts()
        return pd.DataFrame(
            {"cells": counts.to_numpy(), "fraction": (counts / max(len(names), 1)).round(3)},
            index=pd.Index(counts.index, name="predicted"),
        )


def predict(
    adata: ad.AnnData,
    model,
    info: ModelInfo,
    *,
    target: str | None = None,
    layer: str | None = None,
    gene_key: str | None = None,
    chunk_size: int = 5000,
    on_progress: Callable[[float], None] | None = None,
) -> Predictions:
    """Class probabilities of every cell.

    Parameters
    ----------
    adata
        Raw counts (read, never modified).
    model
        The object of :func:`load_model`.
    info
        Its metadata.
    target
        Foundation models: the obs column to predict (default the first one starting
        with ``cell_type``, else the first).
    layer, gene_key
        Where the counts and the gene names are (:class:`UploadCheck`).
    chunk_size
        Cells predicted at once.
    on_progress
        Called with the fraction of cells done after each chunk.

    Returns
    -------
    Predictions
    """
    if info.kind == "foundation":
        targets = info.targets
        if not targets:
            raise UploadError(
                f"The model {info.name!r} has no classifier.", "Choose another model."
            )
        if target is None:
            target = next((t for t in targets if t.startswith("cell_type")), targets[0])
    else:
        target = info.targets[0]
    parts = []
    for start in range(0, adata.n_obs, chunk_size):
        chunk = adata[start : start + chunk_size]
        parts.append(_predict_chunk(chunk, model, info, target, layer, gene_key))
        if on_progress is not None:
            on_progress(min(start + chunk_size, adata.n_obs) / adata.n_obs)
    proba = pd.concat(parts)
    proba.index = adata.obs_names
    key = "tabular" if info.kind == "tabular" else f"scprint_{target}"
    return Predictions(proba, target, readable_names(proba.columns), key)


def _predict_chunk(
    adata: ad.AnnData,
    model,
    info: ModelInfo,
    target: str,
    layer: str | None,
    gene_key: str | None,
) -> pd.DataFrame:
    if info.kind == "tabular":
        return model.predict_proba(adata, layer=layer, gene_key=gene_key)
    from ..tasks import classify

    out = classify(adata, model, classes=[target], top_k=0, layer=layer, gene_key=gene_key,
                   progress=False, copy=True)  # fmt: skip
    prefix = f"scprint_{target}"
    return pd.DataFrame(
        np.asarray(out.obsm[f"{prefix}_proba"], dtype=np.float64),
        index=adata.obs_names,
        columns=[str(v) for v in out.uns[f"{prefix}_labels"]],
    )


def predictions_csv(pred: Predictions, threshold: float = 0.0) -> bytes:
    """CSV of the predictions: ``cell``, ``label``, ``name``, ``confidence``, then one
    ``proba:<class>`` column per class."""
    table = pred.table(threshold)
    proba = pred.proba.add_prefix("proba:")
    frame = pd.concat([table, proba], axis=1)
    frame.index.name = "cell"
    return frame.to_csv(float_format="%.6g").encode()


def annotated_h5ad(
    adata: ad.AnnData,
    pred: Predictions,
    threshold: float = 0.0,
    *,
    embedding: np.ndarray | None = None,
) -> bytes:
    """The uploaded AnnData with the predictions, as h5ad bytes.

    Writes ``obs[f"{key}_label"]``, ``obs[f"{key}_name"]``, ``obs[f"{key}_confidence"]``,
    ``obsm[f"{key}_proba"]`` (cells x classes, float32) with ``uns[f"{key}_classes"]``, and
    ``obsm["X_umap"]`` when ``embedding`` is given (``key`` is :attr:`Predictions.key`).
    The uploaded AnnData itself is not modified.
    """
    out = adata.copy()
    key = pred.key
    out.obs[f"{key}_label"] = pd.Categorical(pred.labels(threshold).to_numpy())
    out.obs[f"{key}_name"] = pd.Categorical(pred.label_names(threshold).to_numpy())
    out.obs[f"{key}_confidence"] = pred.confidence.to_numpy()
    out.obsm[f"{key}_proba"] = pred.proba.to_numpy(dtype=np.float32)
    out.uns[f"{key}_classes"] = np.asarray(pred.proba.columns, dtype=str)
    if embedding is not None:
        out.obsm["X_umap"] = np.asarray(embedding, dtype=np.float32)
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", prefix="scprint_app_")
    os.close(fd)
    try:
        out.write_h5ad(tmp)
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


# --------------------------------------------------------------------------- embeddings


def _expression_pca(adata: ad.AnnData, layer: str | None, n_comps: int) -> np.ndarray:
    """PCA of the (1e4, log1p)-normalised expression of the most variable genes."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA, TruncatedSVD

    from scdataloader.preprocess import counts_matrix

    X, _ = counts_matrix(adata, layer)
    X = sp.csr_matrix(X, dtype=np.float32)
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags((1e4 / np.maximum(totals, 1)).astype(np.float32)) @ X
    X.data = np.log1p(X.data)
    # the 2,000 genes of highest variance of the normalised expression
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    keep = np.sort(np.argsort(-var, kind="stable")[: min(2000, X.shape[1])])
    X = X[:, keep]
    n_comps = max(1, min(n_comps, X.shape[0] - 1, X.shape[1] - 1))
    if X.shape[0] * X.shape[1] <= 5e7:
        return PCA(n_comps, random_state=0).fit_transform(X.toarray())
    return TruncatedSVD(n_comps, random_state=0).fit_transform(X)


def embedding_2d(
    adata: ad.AnnData,
    model,
    info: ModelInfo,
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    n_comps: int = 50,
) -> tuple[np.ndarray, str]:
    """Two-dimensional coordinates of the cells, and how they were made.

    Foundation models: UMAP of the model's cell embedding (:func:`scprint.tasks.embed`).
    Tabular models: UMAP of the PCA of the (1e4, log1p)-normalised expression (2,000
    most variable genes). UMAP needs scanpy; without it the first two principal
    components are returned.

    Parameters
    ----------
    adata, model, info
        The data, the object of :func:`load_model` and its metadata.
    layer, gene_key
        Where the counts and the gene names are (:class:`UploadCheck`).
    n_comps
        Principal components of the expression (tabular models).

    Returns
    -------
    (n_cells, 2) float32 coordinates, and a one-line description.
    """
    if info.kind == "foundation":
        from ..tasks import embed

        out = embed(adata, model, class_embeddings=False, layer=layer, gene_key=gene_key,
                    progress=False, copy=True)  # fmt: skip
        rep, what = np.asarray(out.obsm["X_scprint"], dtype=np.float32), "scPRINT embedding"
    else:
        rep = _expression_pca(adata, layer, n_comps).astype(np.float32)
        what = "PCA of log1p-normalised expression"
    try:
        import scanpy as sc
    except ImportError:
        from sklearn.decomposition import PCA

        coords = PCA(2, random_state=0).fit_transform(rep) if rep.shape[1] > 2 else rep
        return coords.astype(np.float32), f"first two PCs of the {what} (install scanpy for UMAP)"
    tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["rep"] = rep
    sc.pp.neighbors(tmp, use_rep="rep", n_neighbors=min(15, max(2, adata.n_obs - 1)))
    sc.tl.umap(tmp, random_state=0)
    return np.asarray(tmp.obsm["X_umap"], dtype=np.float32), f"UMAP of the {what}"


def embedding_figure(
    coords: np.ndarray, values: pd.Series | np.ndarray | None = None, *, title: str = ""
) -> Figure:
    """A scatter plot of 2-D coordinates coloured by a categorical or numeric column.

    Categories beyond the 20 most frequent are drawn in grey as ``other``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.add_subplot()
    coords = np.asarray(coords)
    size = float(np.clip(2e4 / max(len(coords), 1), 0.5, 12))
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c="tab:blue", linewidths=0)
    else:
        values = pd.Series(np.asarray(values))
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and values.nunique() > _MAX_LEGEND:
            sc = ax.scatter(
                coords[:, 0], coords[:, 1], s=size, c=values.to_numpy(float), cmap="viridis",
                linewidths=0,
            )  # fmt: skip
            fig.colorbar(sc, ax=ax, shrink=0.8)
        else:
            values = values.astype(str)
            order = list(values.value_counts().index)
            shown = order[:_MAX_LEGEND]
            cmap = _palette(len(shown))
            for i, cat in enumerate(shown):
                m = (values == cat).to_numpy()
                ax.scatter(coords[m, 0], coords[m, 1], s=size, color=cmap[i], label=cat,
                           linewidths=0)  # fmt: skip
            rest = ~values.isin(shown).to_numpy()
            if rest.any():
                ax.scatter(coords[rest, 0], coords[rest, 1], s=size, color="0.8", label="other",
                           linewidths=0)  # fmt: skip
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False,
                      markerscale=max(1.0, 20 / size) ** 0.5)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    # the 10 saturated colours of tab20 first, then their light versions
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [colormaps["tab20"](order[i % 20]) for i in range(n)]


# --------------------------------------------------------------------------- explanations


def _symbols(adata: ad.AnnData) -> dict[str, str]:
    """var name -> gene symbol, from the first symbol column of ``var``."""
    for col in _SYMBOL_COLUMNS:
        if col in adata.var:
            return dict(zip(adata.var_names.astype(str), adata.var[col].astype(str), strict=True))
    return {}


def top_genes_table(
    adata: ad.AnnData,
    model,
    info: ModelInfo,
    *,
    n: int = 10,
    layer: str | None = None,
    gene_key: str | None = None,
) -> pd.DataFrame:
    """The genes that explain each predicted class of a tabular model (``top_genes``).

    Cells are grouped by their predicted class; a gene's score is its mean attribution
    over the cells of the class.

    Parameters
    ----------
    adata, model, info
        The data, the classifier of :func:`load_model` and its metadata.
    n
        Genes per class.
    layer, gene_key
        Where the counts and the gene names are (:class:`UploadCheck`).

    Returns
    -------
    Columns ``class``, ``name`` (readable class), ``rank`` (1 = best), ``gene`` and
    ``symbol`` (from ``var`` when it has a symbol column).
    """
    if info.kind != "tabular":
        raise ValueError("explaining genes are shown for tabular models only")
    top = model.top_genes(adata, n=n, layer=layer, gene_key=gene_key)
    symbols = _symbols(adata)
    names = readable_names(list(top))
    rows = [
        {"class": c, "name": names[c], "rank": r, "gene": g, "symbol": symbols.get(g, g)}
        for c, genes in top.items()
        for r, g in enumerate(genes, start=1)
    ]
    return pd.DataFrame(rows, columns=["class", "name", "rank", "gene", "symbol"])


# --------------------------------------------------------------------------- gene networks


def cell_types(adata: ad.AnnData, key: str, *, min_cells: int = 10) -> pd.Series:
    """Cells per value of ``obs[key]`` with at least ``min_cells`` cells, most first."""
    if key not in adata.obs:
        raise UploadError(
            f"This file has no obs column {key!r}.",
            f"Pick one of: {', '.join(map(str, adata.obs.columns[:10]))}.",
        )
    counts = adata.obs[key].astype(str).value_counts()
    return counts[counts >= min_cells]


def gene_network(
    adata: ad.AnnData,
    model,
    *,
    cell_type: str,
    cell_type_key: str,
    n_genes: int = 200,
    n_cells: int | None = 256,
    layer: str | None = None,
    gene_key: str | None = None,
):
    """The gene network of one cell type (:func:`scprint.tasks.get_gene_network`).

    Parameters
    ----------
    adata
        Raw counts.
    model
        A loaded scPRINT model.
    cell_type
        A value of ``obs[cell_type_key]``.
    cell_type_key
        The obs column of the cell types.
    n_genes
        Most variable genes of the cells making the network.
    n_cells
        Cells used at most (seeded subsample).
    layer, gene_key
        Where the counts and the gene names are (:class:`UploadCheck`).

    Returns
    -------
    bengrn.GeneNetwork
    """
    from ..tasks import get_gene_network

    n = int((adata.obs[cell_type_key].astype(str) == str(cell_type)).sum())
    return get_gene_network(
        adata,
        model,
        cell_type=cell_type,
        cell_type_key=cell_type_key,
        n_cells=None if n_cells is None or n <= n_cells else n_cells,
        genes="hvg",
        n_genes=n_genes,
        layer=layer,
        gene_key=gene_key,
        min_cells=min(10, n),
        progress=False,
    )


def hub_table(net, *, top: int = 20) -> pd.DataFrame:
    """The ``top`` hub genes of a network by summed outgoing edge scores
    (:func:`bengrn.analysis.hubs`, ``by="regulator"``)."""
    from bengrn.analysis import hubs

    return hubs(net, by="regulator", top=top)


def subgraph_figure(net, gene: str, *, k: int = 10) -> Figure:
    """A gene's ``k`` strongest regulators and targets (:func:`bengrn.analysis.plot_subgraph`)."""
    from bengrn.analysis import plot_subgraph

    return plot_subgraph(net, gene, k=k)
