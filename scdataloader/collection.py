"""Many AnnData files read lazily as one dataset in one gene space.

A :class:`Collection` opens ``.h5ad`` files with h5py and ``.zarr`` stores with zarr
and reads one cell at a time: only each file's row pointer (``indptr``, 4-8 bytes per
cell) and the encoded labels are held in memory, so a collection can be much larger
than memory. Every cell is returned in the collection's gene space (a union or
intersection of the files' genes, or a given list), genes a file does not measure are
zeros and are flagged in :attr:`Collection.measured` so a collator can tell
"unmeasured" from "not expressed".
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._constants import UNKNOWN_CODE
from .errors import FileFormatError, InputError, LabelError

__all__ = ["Collection", "FileInfo", "read_obs", "read_var_names"]

logger = logging.getLogger(__name__)

# Total bytes of decompressed chunks cached across all open h5ad files (per process).
DEFAULT_CACHE_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- low level


def _open_store(path: str, cache_bytes: int = 2**20):
    """Open an h5ad file or a zarr store read-only, with clear errors."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{path}: no such file or directory.")
    if p.is_dir():
        import zarr

        try:
            return zarr.open_group(str(p), mode="r")
        except Exception as e:  # zarr raises several types for a broken store
            raise FileFormatError(
                f"{path}: not a readable zarr store ({type(e).__name__}: {e})."
            ) from e
    if p.stat().st_size == 0:
        raise FileFormatError(f"{path}: the file is empty (0 bytes).")
    try:
        return h5py.File(p, "r", rdcc_nbytes=int(cache_bytes), rdcc_nslots=10007)
    except OSError as e:
        msg = str(e)
        what = "truncated (an interrupted copy or download?)" if "truncated" in msg else msg
        raise FileFormatError(
            f"{path}: cannot be opened as an HDF5/h5ad file: {what}. Re-create or re-download it."
        ) from e


def _read_elem(elem):
    from anndata.io import read_elem

    return read_elem(elem)


def _dataframe_index(group) -> np.ndarray:
    key = group.attrs.get("_index", "_index")
    try:
        values = group[key][...]
    except KeyError as e:
        raise FileFormatError(f"{group.name}: no index column {key!r}.") from e
    if values.dtype.kind == "T":  # numpy StringDType (zarr v3)
        values = values.astype(object)
    if values.dtype.kind in "SO":
        values = np.array([v.decode() if isinstance(v, bytes) else v for v in values])
    return values.astype(str)


def read_var_names(path: str) -> np.ndarray:
    """The gene names of an h5ad file or zarr store, without reading anything else."""
    store = _open_store(path)
    try:
        if "var" not in store:
            raise FileFormatError(f"{path}: no 'var' group: not an AnnData file.")
        return _dataframe_index(store["var"])
    finally:
        if isinstance(store, h5py.File):
            store.close()


def read_obs(path: str, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Columns ``keys`` of an AnnData file's ``obs`` (all when None), read lazily.

    Raises
    ------
    LabelError
        A requested column is absent; the message lists the available ones.
    """
    store = _open_store(path)
    try:
        if "obs" not in store:
            raise FileFormatError(f"{path}: no 'obs' group: not an AnnData file.")
        group = store["obs"]
        index = _dataframe_index(group)
        index_key = group.attrs.get("_index", "_index")
        available = [k for k in group.keys() if k != index_key]
        keys = available if keys is None else list(keys)
        missing = [k for k in keys if k not in group]
        if missing:
            raise LabelError(
                f"{path}: obs has no column {', '.join(map(repr, missing))}; available "
                f"columns: {sorted(available)}."
            )
        data = {k: _read_elem(group[k]) for k in keys}
        return pd.DataFrame(data, index=pd.Index(index))
    finally:
        if isinstance(store, h5py.File):
            store.close()


@dataclass
class FileInfo:
    """One file of a collection: its size, layout and which gene list it has."""

    path: str
    n_obs: int
    n_vars: int
    layout: Literal["csr", "dense"]
    matrix: str  # "X" or "layers/NAME"
    organism: str | None
    genes_key: str  # hash of the file's gene names; files with equal lists share it


def _check_gene_ids(path: str, var_names: np.ndarray) -> None:
    sample = var_names[: min(len(var_names), 2000)].astype(str)
    if np.char.startswith(sample, "ENS").mean() < 0.5:
        raise InputError(
            f"{path}: var_names are not Ensembl ids (e.g. {', '.join(sample[:3])}). "
            "Run scdataloader.preprocess (or `scdataloader preprocess`) on the file "
            "first: it maps symbols to Ensembl ids."
        )


def _matrix_layout(store, matrix: str, path: str) -> tuple[str, int, int]:
    if matrix not in store:
        raise FileFormatError(f"{path}: no matrix {matrix!r} in the file.")
    m = store[matrix]
    attrs = dict(m.attrs)
    enc = attrs.get("encoding-type", "array")
    if isinstance(enc, bytes):
        enc = enc.decode()
    if enc == "csr_matrix":
        n_obs, n_vars = (int(v) for v in attrs["shape"])
        return "csr", n_obs, n_vars
    if enc == "csc_matrix":
        raise FileFormatError(
            f"{path}: {matrix} is stored column-wise (CSC), which cannot be read one cell "
            "at a time efficiently. Rewrite it as CSR: "
            "adata.X = scipy.sparse.csr_matrix(adata.X); adata.write_h5ad(path)."
        )
    n_obs, n_vars = (int(v) for v in m.shape)
    return "dense", n_obs, n_vars


def _file_organism(store, var_names: np.ndarray) -> str | None:
    from .genes import detect_gene_ids

    if "uns" in store and "organism" in store["uns"]:
        value = _read_elem(store["uns"]["organism"])
        return str(value)
    guess = detect_gene_ids(var_names[:5000])
    return guess.organism


def _resolve_path(path: str | os.PathLike) -> str:
    """A file path; ``registry:NAME`` names an embedded dataset (fetched when needed)."""
    text = str(path)
    if text.startswith("registry:"):
        from .datasets import fetch

        return str(fetch(text.removeprefix("registry:")))
    return text


def _close(store: tuple) -> None:
    if isinstance(store[0], h5py.File):
        store[0].close()


# --------------------------------------------------------------------------- collection


class Collection(torch.utils.data.Dataset):
    """Cells of many AnnData files (``.h5ad`` or ``.zarr``) as one torch Dataset.

    Parameters
    ----------
    paths
        The files. Their ``var_names`` must be Ensembl ids (run
        :func:`scdataloader.preprocess` on files that use symbols). ``registry:NAME``
        names an embedded dataset (e.g. ``registry:retina``), fetched on first use.
    obs_keys
        ``obs`` columns to load as labels; every file must have them.
    genes
        The collection's gene space (Ensembl ids, in order). Default: the genes of the
        files, joined as ``join`` says, in the order of the gene vocabulary.
    join
        ``"outer"`` (union of the files' genes) or ``"inner"`` (intersection).
    layer
        Layer holding the counts (default ``X``).
    hierarchies
        Label hierarchies to encode labels with (e.g. those of a trained model).
        Default: built from the labels present in the files.
    check_counts
        Check that each file holds raw counts (on a sample of 64 cells) when opened.
    cache_bytes
        Bytes of decompressed HDF5 chunks cached per process, over all open files.
    max_open_files
        Files kept open at once per process (least recently used ones are closed).

    Each item is a dict: ``x`` (float32, counts in the collection's gene space),
    ``depth`` (total counts of the whole cell, all its genes), ``labels`` (int64, one
    code per ``obs_keys``, -1 when unknown), ``dataset`` (index of the file) and
    ``index`` (index of the cell in the collection).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        obs_keys: Sequence[str] = (),
        genes: Sequence[str] | None = None,
        join: Literal["outer", "inner"] = "outer",
        layer: str | None = None,
        hierarchies: dict | None = None,
        check_counts: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_open_files: int = 64,
    ):
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        if len(paths) == 0:
            raise InputError("A Collection needs at least one file.")
        if join not in ("outer", "inner"):
            raise InputError(f"join must be 'outer' or 'inner', not {join!r}.")
        self.paths = [_resolve_path(p) for p in paths]
        self.obs_keys = list(obs_keys)
        self.matrix = "X" if layer is None else f"layers/{layer}"
        self.cache_bytes = int(cache_bytes)
        self.max_open_files = max(int(max_open_files), 1)
        self.files: list[FileInfo] = []
        self._indptr: list[np.ndarray | None] = []
        # Files often share one gene list: each distinct list is held and mapped once.
        gene_lists: dict[str, np.ndarray] = {}
        labels: list[dict[str, pd.Categorical]] = []
        for path in tqdm(self.paths, desc="opening files", disable=len(self.paths) < 50):
            store = _open_store(path)
            try:
                layout, n_obs, n_vars = _matrix_layout(store, self.matrix, path)
                if n_obs == 0:
                    raise FileFormatError(
                        f"{path}: the file holds no cells; remove it from the collection."
                    )
                var_names = _dataframe_index(store["var"])
                if len(var_names) != n_vars:
                    raise FileFormatError(
                        f"{path}: var has {len(var_names)} genes but {self.matrix} has "
                        f"{n_vars} columns: the file is inconsistent."
                    )
                key = hashlib.sha1("\n".join(var_names).encode()).hexdigest()
                if key not in gene_lists:
                    _check_gene_ids(path, var_names)
                    gene_lists[key] = var_names
                if layout == "csr":
                    indptr = np.asarray(store[self.matrix]["indptr"][...])
                    if len(indptr) != n_obs + 1:
                        raise FileFormatError(f"{path}: {self.matrix}/indptr has a wrong length.")
                    self._indptr.append(indptr)
                else:
                    self._indptr.append(None)
                organism = _file_organism(store, var_names)
            finally:
                if isinstance(store, h5py.File):
                    store.close()
            del var_names
            self.files.append(FileInfo(path, n_obs, n_vars, layout, self.matrix, organism, key))
            obs = read_obs(path, self.obs_keys)
            labels.append({k: pd.Categorical(obs[k].astype(str)) for k in self.obs_keys})
        self.offsets = np.concatenate([[0], np.cumsum([f.n_obs for f in self.files])])
        self.genes = self._gene_space(genes, join, gene_lists)
        self._map_genes(gene_lists)
        del gene_lists
        self.hierarchies = {}
        self.labels = self._encode_labels(labels, hierarchies or {})
        del labels
        self._stores: OrderedDict[int, tuple] = OrderedDict()
        if check_counts:
            self._check_counts()
        self.close()  # no handle crosses into forked DataLoader workers

    # ----------------------------------------------------------------- set-up helpers

    def _gene_space(
        self, genes: Sequence[str] | None, join: str, gene_lists: dict[str, np.ndarray]
    ) -> np.ndarray:
        from .genes import load_genes, strip_version

        if genes is not None:
            out = np.asarray(genes).astype(str)
            if len(out) == 0 or len(set(out)) != len(out):
                raise InputError("genes must be a non-empty list of unique Ensembl ids.")
            return out
        indexes = [pd.Index(strip_version(v)) for v in gene_lists.values()]
        pool = indexes[0]
        for other in indexes[1:]:
            pool = pool.union(other) if join == "outer" else pool.intersection(other)
        if len(pool) == 0:
            raise InputError("The files share no gene (join='inner'): use join='outer'.")
        ordered = []
        for organism in dict.fromkeys(f.organism for f in self.files if f.organism):
            table_ids = load_genes(organism).index
            ordered.append(table_ids[table_ids.isin(pool)])
        known = ordered[0].append(ordered[1:]) if ordered else pd.Index([])
        unknown = pool.difference(known).sort_values()
        if len(unknown):
            logger.info(
                "%d genes of the files are not in the gene vocabulary (e.g. %s): kept at the end",
                len(unknown),
                ", ".join(unknown[:3]),
            )
        return np.asarray(known.append(unknown), dtype=str)

    def _map_genes(self, gene_lists: dict[str, np.ndarray]) -> None:
        """Column maps (file column -> collection gene, -1 outside) per distinct gene list."""
        from .genes import strip_version

        position = pd.Index(self.genes)
        keys = list(gene_lists)
        self._gene_sets = {k: i for i, k in enumerate(keys)}
        self._set_maps = []
        self.measured_sets = np.zeros((len(keys), len(self.genes)), dtype=bool)
        for i, k in enumerate(keys):
            cols = position.get_indexer(strip_version(gene_lists[k])).astype(np.int32)
            self._set_maps.append(cols)
            self.measured_sets[i, cols[cols >= 0]] = True
        self.gene_set_of_file = np.array(
            [self._gene_sets[f.genes_key] for f in self.files], dtype=np.int32
        )

    def _encode_labels(self, labels: list[dict], given: dict) -> np.ndarray:
        from .ontology import LabelHierarchy, build_hierarchy, is_unknown

        n_labels = {}
        for key in self.obs_keys:
            values = pd.Index(sorted({v for f in labels for v in f[key].categories}), dtype=object)
            if key in given:
                h = given[key]
            elif len(values) == 0 or is_unknown(values).all():
                logger.warning("obs column %r is unknown in every cell: no class to learn", key)
                h = LabelHierarchy(key=key, leaves=())
            else:
                h = build_hierarchy(key, values)
            self.hierarchies[key] = h
            n_labels[key] = len(h.labels)
        # The smallest integer type holding every code (-1 for unknown).
        dtype = np.int16 if max(n_labels.values(), default=0) < 2**15 else np.int32
        codes = np.empty((len(self), len(self.obs_keys)), dtype=dtype)
        for k, file_labels in enumerate(labels):
            rows = slice(self.offsets[k], self.offsets[k + 1])
            for j, key in enumerate(self.obs_keys):
                cat = file_labels[key]
                unseen = "unknown" if key in given else "raise"
                table = self.hierarchies[key].encode(cat.categories.to_numpy(), unseen=unseen)
                codes[rows, j] = np.where(cat.codes >= 0, table[cat.codes], -1)
        return codes

    def _check_counts(self) -> None:
        from .errors import CountsError
        from .preprocess import check_counts

        for k, f in enumerate(self.files):
            rng = np.random.default_rng(k)
            rows = np.sort(rng.choice(f.n_obs, min(64, f.n_obs), replace=False))
            parts = [self._read_row(k, int(r)) for r in rows]
            indptr = np.concatenate([[0], np.cumsum([len(v) for _, v in parts])])
            sample = sp.csr_matrix(
                (
                    np.concatenate([v for _, v in parts]),
                    np.concatenate([c for c, _ in parts]),
                    indptr,
                ),
                shape=(len(rows), f.n_vars),
            )
            check = check_counts(sample)
            if check.kind not in ("counts", "empty"):
                raise CountsError(f"{f.path}: {check.message}")
            if k + 1 >= self.max_open_files:
                self.close()

    # ----------------------------------------------------------------- reading

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_stores"] = OrderedDict()  # handles are opened again in each worker process
        return state

    def _store(self, k: int) -> tuple:
        store = self._stores.get(k)
        if store is not None:
            self._stores.move_to_end(k)
            return store
        if len(self._stores) >= self.max_open_files:
            _, oldest = self._stores.popitem(last=False)
            _close(oldest)
        # h5py sizes the chunk cache per dataset: a CSR file has two (data, indices).
        n_open = min(len(self.files), self.max_open_files)
        per_dataset = self.cache_bytes // (2 * n_open)
        handle = _open_store(self.files[k].path, cache_bytes=per_dataset)
        m = handle[self.matrix]
        if self.files[k].layout == "csr":
            store = (handle, m["data"], m["indices"])
        else:
            store = (handle, m, None)
        self._stores[k] = store
        return store

    def _read_row(self, k: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (in the file) and values of one cell's non-zero entries."""
        _, data, indices = self._store(k)
        if indices is not None:
            indptr = self._indptr[k]
            start, end = int(indptr[row]), int(indptr[row + 1])
            if end == start:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            return indices[start:end].astype(np.int64), data[start:end].astype(np.float32)
        values = np.asarray(data[row], dtype=np.float32)
        nz = np.flatnonzero(values)
        return nz, values[nz]

    def locate(self, index: int) -> tuple[int, int]:
        """(file index, row in that file) of a cell of the collection."""
        if not 0 <= index < len(self):
            raise IndexError(f"cell {index} out of range for a collection of {len(self)}")
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return k, int(index - self.offsets[k])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        k, row = self.locate(index)
        cols, values = self._read_row(k, row)
        target = self._set_maps[self.gene_set_of_file[k]][cols]
        inside = target >= 0
        x = np.zeros(len(self.genes), dtype=np.float32)
        x[target[inside]] = values[inside]
        return {
            "x": x,
            "depth": np.float32(values.sum()),
            "labels": self.labels[index].astype(np.int64),
            "dataset": k,
            "index": index,
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        # Read in file order to reuse decompressed chunks; return in the asked order.
        order = np.argsort(np.asarray(indices), kind="stable")
        out: list[dict | None] = [None] * len(indices)
        for i in order:
            out[i] = self[int(indices[i])]
        return out  # type: ignore[return-value]

    def forget_handles(self) -> None:
        """Drop file handles inherited from a parent process without closing them there.

        Called in each DataLoader worker: handles must not be shared across a fork.
        """
        self._stores = OrderedDict()

    def close(self) -> None:
        """Close the open file handles (they are re-opened on the next read)."""
        for store in self._stores.values():
            _close(store)
        self._stores = OrderedDict()

    # ----------------------------------------------------------------- metadata

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def dataset_of_cell(self) -> np.ndarray:
        """Index of the file of every cell."""
        return np.repeat(np.arange(len(self.files)), [f.n_obs for f in self.files])

    @property
    def measured(self) -> np.ndarray:
        """Which genes each file measured: bool (n_files, n_genes).

        Built on request; :attr:`measured_sets` and :attr:`gene_set_of_file` hold the
        same information once per distinct gene list.
        """
        return self.measured_sets[self.gene_set_of_file]

    @property
    def obs_names(self) -> np.ndarray:
        """Cell names of all files (read from the files)."""
        return np.concatenate([read_obs(f.path, []).index.to_numpy() for f in self.files])

    def label_values(self, key: str) -> np.ndarray:
        """Decoded labels of ``key`` for every cell (``None`` where unknown)."""
        j = self.obs_keys.index(key)
        return self.hierarchies[key].decode(self.labels[:, j])

    def read_obs(self, keys: Sequence[str]) -> pd.DataFrame:
        """Other ``obs`` columns of all files, concatenated (e.g. donors for splits)."""
        frames = [read_obs(f.path, keys) for f in self.files]
        return pd.concat(frames, ignore_index=True)

    def unknown_fraction(self) -> dict[str, float]:
        return {
            k: float((self.labels[:, j] == UNKNOWN_CODE).mean())
            for j, k in enumerate(self.obs_keys)
        }

    def __repr__(self) -> str:
        return (
            f"Collection of {len(self):,} cells x {self.n_genes:,} genes in "
            f"{len(self.files)} files; labels: {self.obs_keys}"
        )
