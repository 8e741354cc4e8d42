"""Optional data sources: a lamindb collection, the CELLxGENE census.

Both are optional extras, imported only when a function here is called; without them
the functions raise an :class:`ImportError` that says what to install
(``pip install 'scprint-suite[lamin]'`` or ``pip install 'scprint-suite[census]'``).

* :func:`collection_from_lamindb` builds a :class:`~scdataloader.collection.Collection`
  over the AnnData artifacts of a ``lamindb.Collection`` (read from their local paths,
  downloaded into lamindb's cache first when the storage is remote).
* :func:`lamindb_mapped` returns lamindb's own ``MappedCollection`` over the same
  artifacts, for comparison.
* :func:`census_to_anndata` fetches a slice of the CELLxGENE census as raw counts in
  the layout :class:`~scdataloader.collection.Collection` reads (Ensembl ids as
  ``var_names``, the organism in ``uns``); :func:`write_census_files` writes a large
  slice as h5ad shards, one at a time, so it never has to fit in memory.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._constants import ORGANISM_ALIASES
from .errors import InputError
from .io import write_h5ad_atomic

if TYPE_CHECKING:
    import anndata as ad

    from .collection import Collection

__all__ = [
    "collection_from_lamindb",
    "lamindb_mapped",
    "census_to_anndata",
    "write_census_files",
    "ANNDATA_SUFFIXES",
]

logger = logging.getLogger(__name__)

# Artifact suffixes a Collection can read.
ANNDATA_SUFFIXES = (".h5ad", ".zarr")

# Census experiment name -> NCBITaxon id.
_CENSUS_ORGANISMS = {
    "homo_sapiens": "NCBITaxon:9606",
    "mus_musculus": "NCBITaxon:10090",
    "macaca_mulatta": "NCBITaxon:9544",
    "callithrix_jacchus": "NCBITaxon:9483",
    "pan_troglodytes": "NCBITaxon:9598",
}

# Text of errors that mean "the network (S3, the release directory) was not reachable".
_NETWORK_HINTS = (
    "connection",
    "could not resolve",
    "name resolution",
    "timed out",
    "timeout",
    "curl",
    "network",
    "unreachable",
    "s3",
    "ssl",
)


def _import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the optional package {module!r}, which is not installed or "
            f"cannot be imported ({e}). Install it with: pip install 'scprint-suite[{extra}]'"
        ) from e


# --------------------------------------------------------------------------- lamindb


def _import_lamindb(purpose: str) -> ModuleType:
    return _import_extra("lamindb", "lamin", purpose)


def _resolve_lamindb_collection(ln: ModuleType, collection: Any) -> Any:
    """A ``lamindb.Collection`` record from a record, a key or a uid."""
    if not isinstance(collection, str):
        if not hasattr(collection, "ordered_artifacts"):
            raise InputError(
                "collection must be a lamindb.Collection record or its key (a str), "
                f"not {type(collection).__name__}."
            )
        return collection
    key = collection
    record = ln.Collection.filter(key=key).order_by("-created_at").first()
    if record is None:
        record = ln.Collection.filter(uid=key).first()
    if record is None:
        known = sorted({k for k in ln.Collection.filter().values_list("key", flat=True) if k})
        shown = ", ".join(map(repr, known[:20])) + (", ..." if len(known) > 20 else "")
        instance = getattr(getattr(ln, "setup", None), "settings", None)
        slug = getattr(getattr(instance, "instance", None), "slug", "the current instance")
        raise InputError(
            f"No lamindb collection with key {key!r} in {slug}. "
            f"Collections there: {shown or 'none'}. Check the key, or connect to the right "
            "instance (lamin connect OWNER/NAME)."
        )
    return record


def _artifact_local_path(artifact: Any) -> str:
    """Local path of an AnnData artifact (cached first when the storage is remote)."""
    suffix = str(getattr(artifact, "suffix", "") or "")
    name = getattr(artifact, "key", None) or getattr(artifact, "uid", "?")
    if not suffix.endswith(ANNDATA_SUFFIXES):
        raise InputError(
            f"Artifact {name!r} (uid {getattr(artifact, 'uid', '?')}) has suffix "
            f"{suffix or '(none)'!r}: a Collection reads only AnnData files "
            f"({' or '.join(ANNDATA_SUFFIXES)}). Leave it out of the lamindb collection."
        )
    path = artifact.cache()
    return os.fspath(path)


def collection_from_lamindb(
    collection: Any,
    *,
    obs_keys: Sequence[str] = (),
    **kwargs: Any,
) -> Collection:
    """A :class:`~scdataloader.collection.Collection` over a lamindb collection's files.

    Parameters
    ----------
    collection
        A ``lamindb.Collection`` record, or its key (looked up in the instance lamindb is
        connected to; the newest version when there are several).
    obs_keys
        ``obs`` columns to load as labels.
    **kwargs
        Passed on to :class:`~scdataloader.collection.Collection` (``genes``, ``join``,
        ``layer``, ``hierarchies``, ...).

    Returns
    -------
    Collection
        The artifacts' cells, in the collection's artifact order.

    Raises
    ------
    ImportError
        lamindb is not installed.
    InputError
        No collection has that key, or an artifact is not an ``.h5ad`` file or a
        ``.zarr`` store.
    """
    from .collection import Collection

    ln = _import_lamindb("collection_from_lamindb")
    record = _resolve_lamindb_collection(ln, collection)
    artifacts = list(record.ordered_artifacts.all())
    if not artifacts:
        raise InputError(f"The lamindb collection {record.key!r} holds no artifact.")
    paths = [_artifact_local_path(a) for a in artifacts]
    logger.info("lamindb collection %r (uid %s): %d artifacts", record.key, record.uid, len(paths))
    return Collection(paths, obs_keys=obs_keys, **kwargs)


def lamindb_mapped(
    collection: Any,
    obs_keys: Sequence[str],
    join: Literal["inner", "outer"] | None = "inner",
    **kwargs: Any,
) -> Any:
    """lamindb's own ``MappedCollection`` over a collection (to compare loaders).

    Parameters
    ----------
    collection
        A ``lamindb.Collection`` record or its key.
    obs_keys
        ``obs`` columns returned (encoded as integers) with each cell.
    join
        How lamindb joins the files' genes.
    **kwargs
        Passed on to ``lamindb.Collection.mapped`` (e.g. ``parallel=True`` for a
        DataLoader with workers).

    Returns
    -------
    lamindb.core.MappedCollection
        Use it as a context manager so its files are closed.
    """
    ln = _import_lamindb("lamindb_mapped")
    record = _resolve_lamindb_collection(ln, collection)
    return record.mapped(obs_keys=list(obs_keys), join=join, **kwargs)


# --------------------------------------------------------------------------- census


def _import_census(purpose: str) -> ModuleType:
    return _import_extra("cellxgene_census", "census", purpose)


def _census_organism(organism: str) -> tuple[str, str]:
    """(census experiment name, NCBITaxon id) of an organism name, alias or id."""
    key = str(organism).strip().lower()
    taxon = ORGANISM_ALIASES.get(key)
    for name, tid in _CENSUS_ORGANISMS.items():
        if taxon == tid or key in (name, name.replace("_", " "), tid.lower(), tid[9:]):
            return name, tid
    raise InputError(
        f"Unknown census organism {organism!r}; use one of {sorted(_CENSUS_ORGANISMS)} "
        "(or their NCBITaxon ids)."
    )


def _looks_like_network_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, OSError):  # also ConnectionError, TimeoutError, requests errors
            return True
        text = f"{type(seen).__name__} {seen}".lower()
        if any(hint in text for hint in _NETWORK_HINTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unreachable(error: BaseException, census_version: str) -> RuntimeError:
    return RuntimeError(
        f"the CELLxGENE census could not be reached: {type(error).__name__}: {error}; "
        f"it needs internet access (census_version={census_version!r})."
    )


def _open_census(cc: ModuleType, census_version: str) -> Any:
    try:
        return cc.open_soma(census_version=census_version)
    except (ValueError, TypeError) as e:
        if _looks_like_network_error(e):
            raise _unreachable(e, census_version) from e
        raise
    except Exception as e:  # requests, aiohttp, tiledb: any failure to connect
        raise _unreachable(e, census_version) from e


def _column_kwargs(cc: ModuleType, column_names: Any) -> dict[str, Any]:
    """Column selection for ``get_anndata``: obs columns as given, var with feature_id."""
    if column_names is None:
        return {}
    if isinstance(column_names, dict):
        obs = column_names.get("obs")
        var = column_names.get("var")
    else:
        obs, var = list(column_names), None
    if var is not None and "feature_id" not in var:
        var = [*var, "feature_id"]
    if obs is not None and "soma_joinid" not in obs:
        obs = ["soma_joinid", *obs]
    params = inspect.signature(cc.get_anndata).parameters
    if "obs_column_names" in params:  # cellxgene-census >= 1.15
        out: dict[str, Any] = {}
        if obs is not None:
            out["obs_column_names"] = list(obs)
        if var is not None:
            out["var_column_names"] = list(var)
        return out
    columns = {}
    if obs is not None:
        columns["obs"] = list(obs)
    if var is not None:
        columns["var"] = list(var)
    return {"column_names": columns}


def _as_loader_anndata(adata: ad.AnnData, taxon: str, census_version: str) -> ad.AnnData:
    """Raw counts as CSR float32, Ensembl ids as var_names, the organism in uns."""
    import scipy.sparse as sp

    if "feature_id" not in adata.var:
        raise RuntimeError("The census answer has no var['feature_id'] column (Ensembl ids).")
    adata.var_names = adata.var["feature_id"].astype(str).to_numpy()
    adata.var.index.name = None
    if "soma_joinid" in adata.obs:
        adata.obs_names = adata.obs["soma_joinid"].astype(str).to_numpy()
    else:
        adata.obs_names_make_unique()
    adata.obs.index.name = None
    X = adata.X
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    adata.X = X
    adata.uns["organism"] = taxon
    adata.uns["census_version"] = str(census_version)
    return adata


def _get_anndata(cc: ModuleType, census: Any, experiment: str, census_version: str, **kw):
    try:
        return cc.get_anndata(census, organism=experiment, measurement_name="RNA", **kw)
    except Exception as e:
        if _looks_like_network_error(e):
            raise _unreachable(e, census_version) from e
        raise


def census_to_anndata(
    *,
    organism: str = "homo_sapiens",
    obs_value_filter: str,
    var_value_filter: str | None = None,
    census_version: str = "stable",
    column_names: Sequence[str] | dict[str, Sequence[str]] | None = None,
) -> ad.AnnData:
    """A slice of the CELLxGENE census, as raw counts ready for a Collection.

    Parameters
    ----------
    organism
        Census organism (``"homo_sapiens"``, ``"mus_musculus"``, ...), or an alias
        (``"human"``) or NCBITaxon id.
    obs_value_filter
        Cells to fetch, in SOMA ``value_filter`` syntax, e.g.
        ``"tissue_general == 'retina' and is_primary_data == True"``. Required: the whole
        census does not fit in memory.
    var_value_filter
        Genes to fetch (default: all).
    census_version
        Census release (``"stable"``, ``"latest"`` or a date such as ``"2025-01-30"``).
    column_names
        ``obs`` columns to fetch (a list), or ``{"obs": [...], "var": [...]}``; default
        all. ``soma_joinid`` and ``feature_id`` are always fetched.

    Returns
    -------
    anndata.AnnData
        Raw counts (CSR, float32) with ``var_names`` the Ensembl ids (``feature_id``),
        ``obs_names`` the census ``soma_joinid``, ``uns['organism']`` the NCBITaxon id
        and ``uns['census_version']``.

    Raises
    ------
    ImportError
        cellxgene-census is not installed.
    RuntimeError
        The census could not be reached (it needs internet access).
    InputError
        Unknown organism, or the filter selects no cell.
    """
    cc = _import_census("census_to_anndata")
    experiment, taxon = _census_organism(organism)
    census = _open_census(cc, census_version)
    try:
        adata = _get_anndata(
            cc,
            census,
            experiment,
            census_version,
            X_name="raw",
            obs_value_filter=obs_value_filter,
            var_value_filter=var_value_filter,
            **_column_kwargs(cc, column_names),
        )
    finally:
        census.close()
    if adata.n_obs == 0:
        raise InputError(
            f"The census filter {obs_value_filter!r} selects no {experiment} cell "
            f"(census_version={census_version!r})."
        )
    logger.info("census %s: %d cells x %d genes", experiment, adata.n_obs, adata.n_vars)
    return _as_loader_anndata(adata, taxon, census_version)


def write_census_files(
    out_dir: str | os.PathLike,
    *,
    obs_value_filter: str,
    organism: str = "homo_sapiens",
    var_value_filter: str | None = None,
    census_version: str = "stable",
    column_names: Sequence[str] | dict[str, Sequence[str]] | None = None,
    max_cells_per_file: int = 100_000,
    prefix: str = "census",
    compression: Literal["gzip", "lzf"] | None = "gzip",
    overwrite: bool = False,
) -> list[Path]:
    """Write a census slice as h5ad shards for a :class:`~scdataloader.collection.Collection`.

    Cells are fetched one shard at a time (by ``soma_joinid``, in increasing order), so
    the slice never has to fit in memory. Each shard is written under a temporary name
    and renamed when complete, so an interrupted run leaves no partial file; run it
    again and the shards already written are kept (unless ``overwrite``).

    Parameters
    ----------
    out_dir
        Folder of the shards (created if needed).
    obs_value_filter
        Cells to fetch, in SOMA ``value_filter`` syntax.
    organism
        Census organism, an alias or an NCBITaxon id.
    var_value_filter
        Genes to fetch (default: all).
    census_version
        Census release. Pin a date for reproducible shards.
    column_names
        ``obs`` columns to keep (see :func:`census_to_anndata`).
    max_cells_per_file
        Cells per shard.
    prefix
        Shard names are ``{prefix}_{00000}.h5ad``.
    compression
        h5ad compression of the matrices.
    overwrite
        Write every shard again, even those already there.

    Returns
    -------
    list of pathlib.Path
        The shards, in order.

    Raises
    ------
    ImportError
        cellxgene-census is not installed.
    RuntimeError
        The census could not be reached (it needs internet access).
    InputError
        Unknown organism, bad ``max_cells_per_file``, or the filter selects no cell.
    """
    if int(max_cells_per_file) < 1:
        raise InputError(f"max_cells_per_file must be >= 1, not {max_cells_per_file}.")
    cc = _import_census("write_census_files")
    experiment, taxon = _census_organism(organism)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    census = _open_census(cc, census_version)
    written: list[Path] = []
    try:
        try:
            obs = census["census_data"][experiment].obs
            table = obs.read(value_filter=obs_value_filter, column_names=["soma_joinid"])
            joinids = table.concat().to_pandas()["soma_joinid"].to_numpy(dtype=np.int64)
        except Exception as e:
            if _looks_like_network_error(e):
                raise _unreachable(e, census_version) from e
            raise
        if len(joinids) == 0:
            raise InputError(
                f"The census filter {obs_value_filter!r} selects no {experiment} cell "
                f"(census_version={census_version!r})."
            )
        joinids = np.sort(joinids)
        n_files = -(-len(joinids) // int(max_cells_per_file))
        logger.info(
            "census %s: %d cells -> %d files in %s", experiment, len(joinids), n_files, out
        )
        for i in range(n_files):
            path = out / f"{prefix}_{i:05d}.h5ad"
            if path.exists() and not overwrite:
                logger.info("%s exists: kept", path.name)
                written.append(path)
                continue
            chunk = joinids[i * max_cells_per_file : (i + 1) * max_cells_per_file]
            adata = _get_anndata(
                cc,
                census,
                experiment,
                census_version,
                X_name="raw",
                obs_coords=chunk,
                var_value_filter=var_value_filter,
                **_column_kwargs(cc, column_names),
            )
            adata = _as_loader_anndata(adata, taxon, census_version)
            adata.uns["census_obs_value_filter"] = obs_value_filter
            write_h5ad_atomic(adata, path, compression=compression)
            logger.info("wrote %s (%d cells)", path.name, adata.n_obs)
            written.append(path)
            del adata
    finally:
        census.close()
    return written
