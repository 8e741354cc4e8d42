"""Reading and writing AnnData files with clear errors and atomic writes."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad

from .errors import FileFormatError

__all__ = ["atomic_path", "read_anndata", "write_h5ad_atomic"]


def read_anndata(path: str | os.PathLike, *, backed: bool = False) -> ad.AnnData:
    """Read an ``.h5ad`` file or a ``.zarr`` store.

    Parameters
    ----------
    path
        The file or store.
    backed
        Leave ``X`` on disk (h5ad only).

    Raises
    ------
    FileFormatError
        The path is missing, empty, truncated or not an AnnData file.
    """
    from .collection import _open_store

    p = Path(path)
    store = _open_store(str(p))  # raises FileFormatError for missing / empty / truncated
    try:
        keys = set(store.keys())
    finally:
        if hasattr(store, "close"):
            store.close()
    if not {"obs", "var"} <= keys:
        raise FileFormatError(f"{path}: not an AnnData file (no 'obs'/'var' groups).")
    try:
        if p.is_dir():
            return ad.read_zarr(p)
        return ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as e:
        raise FileFormatError(
            f"{path}: could not be read as AnnData ({type(e).__name__}: {e}). The file may "
            "be truncated or written by an incompatible tool."
        ) from e


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block succeeds.

    A reader never sees a half-written file, and an existing file is only replaced once
    the new one is complete; on error (or Ctrl-C) the temporary file is removed. The
    folder of ``path`` is created when missing.

    Raises
    ------
    OSError
        Of the same kind as the system's (e.g. :class:`PermissionError`), saying which
        output could not be written and what to check, when the folder cannot be written
        or the file cannot be moved in place.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from e
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _cannot_write(path, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cannot_write(path: Path, error: OSError) -> OSError:
    """The same kind of OSError, naming the output and what to check."""
    reason = error.strerror or str(error)
    hint = "choose another output path"
    if isinstance(error, PermissionError):
        hint = f"check that {path.parent} is writable, or choose another output folder"
    elif error.errno == errno.ENOSPC:
        hint = "free some disk space or choose another output folder"
    out = type(error)(f"cannot write {path}: {reason}; {hint}.")
    out.errno = error.errno
    return out


def write_h5ad_atomic(adata: ad.AnnData, path: str | os.PathLike, **kwargs) -> Path:
    """Write ``adata`` to ``path`` atomically (see :func:`atomic_path`).

    Keyword arguments go to :meth:`anndata.AnnData.write_h5ad`.
    """
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, **kwargs)
    return Path(path)
