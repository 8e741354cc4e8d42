"""Optional data sources: a real offline lamindb instance, the census (faked), extras.

The lamindb test creates a fresh local instance in a temporary folder (SQLite, no
network) and does all its lamindb work in one subprocess: ``import lamindb`` connects
to the instance chosen when it is imported (from the working directory and
``LAMIN_SETTINGS_DIR``), so running it in this process would tie the whole test
session to a temporary instance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdataloader import sources
from scdataloader.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CELL_TYPE = "cell_type_ontology_term_id"
N_PER_FILE = 150


def _lamin_cli() -> list[str] | None:
    exe = Path(sys.executable).with_name("lamin")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lamin")
    return [found] if found else None


needs_lamindb = pytest.mark.skipif(
    importlib.util.find_spec("lamindb") is None or _lamin_cli() is None,
    reason="lamindb (and its `lamin` CLI) is not installed: pip install 'scprint-suite[lamin]'",
)

# Run in the instance's folder with LAMIN_SETTINGS_DIR / LAMIN_CACHE_DIR set; prints JSON.
_LAMIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import scipy.sparse as sp
    import lamindb as ln
    from scdataloader.sources import collection_from_lamindb, lamindb_mapped

    store, out = sys.argv[1], sys.argv[2]
    arts = [
        ln.Artifact(f"{store}/data/part{i}.h5ad", description=f"retina part {i}").save()
        for i in range(2)
    ]
    record = ln.Collection(arts, key="retina-parts").save()
    table = ln.Artifact(f"{store}/data/table.csv", description="not AnnData").save()
    ln.Collection([arts[0], table], key="mixed").save()

    kw = dict(obs_keys=["cell_type_ontology_term_id"])
    col = collection_from_lamindb("retina-parts", **kw)
    rows = col.__getitems__(list(range(len(col))))
    X = sp.csr_matrix(np.stack([r["x"] for r in rows]))
    sp.save_npz(f"{out}/x.npz", X)
    by_record = collection_from_lamindb(record, **kw)
    with lamindb_mapped("retina-parts", ["cell_type"]) as ds:
        n_mapped = len(ds)
    errors = {}
    for name, key in (("unknown", "no-such-collection"), ("mixed", "mixed")):
        try:
            collection_from_lamindb(key, **kw)
        except Exception as e:
            errors[name] = [type(e).__name__, str(e)]
    result = {
        "paths": col.paths,
        "n_cells": len(col),
        "genes": [str(g) for g in col.genes],
        "labels": [None if v is None else str(v) for v in col.label_values(kw["obs_keys"][0])],
        "depth": [float(r["depth"]) for r in rows],
        "dataset": [int(r["dataset"]) for r in rows],
        "by_record_paths": by_record.paths,
        "n_mapped": n_mapped,
        "errors": errors,
    }
    with open(f"{out}/result.json", "w") as f:
        json.dump(result, f)
    """
)


@pytest.fixture(scope="module")
def lamindb_run(tmp_path_factory, retina_full):
    """Init an offline instance, register two retina parts, load them; the outputs."""
    root = tmp_path_factory.mktemp("lamin")
    store = root / "store"
    env = dict(os.environ)
    env.update(
        LAMIN_SETTINGS_DIR=str(root / "settings"),
        LAMIN_CACHE_DIR=str(root / "cache"),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    # cwd=root: `lamin init` marks its folder (root/.lamin) as the instance's dev-dir.
    init = subprocess.run(
        [*_lamin_cli(), "init", "--storage", str(store)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    # Files inside the storage root are registered in place; copy_id makes them differ.
    (store / "data").mkdir()
    parts = []
    for i in range(2):
        part = retina_full[i * N_PER_FILE : (i + 1) * N_PER_FILE].copy()
        part.obs["copy_id"] = str(i)
        part.write_h5ad(store / "data" / f"part{i}.h5ad", compression="gzip")
        parts.append(part)
    (store / "data" / "table.csv").write_text("a,b\n1,2\n")
    script = root / "run.py"
    script.write_text(_LAMIN_SCRIPT)
    out = root / "out"
    out.mkdir()
    run = subprocess.run(
        [sys.executable, str(script), str(store), str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["X"] = sp.load_npz(out / "x.npz").tocsr()
    result["store"] = store
    return result, parts


@needs_lamindb
def test_collection_from_lamindb_matches_files(lamindb_run):
    import anndata as ad

    result, parts = lamindb_run
    store = result["store"]
    assert [Path(p).resolve() for p in result["paths"]] == [
        (store / "data" / f"part{i}.h5ad").resolve() for i in range(2)
    ]
    assert result["by_record_paths"] == result["paths"]
    assert result["n_cells"] == result["n_mapped"] == 2 * N_PER_FILE
    assert result["dataset"] == [0] * N_PER_FILE + [1] * N_PER_FILE

    both = ad.concat(parts)
    genes = pd.Index(result["genes"])
    assert set(genes) == set(both.var_names)  # identical files: every gene, once
    expected = sp.csr_matrix(both.X)[:, both.var_names.get_indexer(genes)]
    got = result["X"]
    assert got.shape == expected.shape
    assert abs(got - expected).max() == 0
    np.testing.assert_allclose(result["depth"], np.asarray(both.X.sum(axis=1)).ravel())
    assert result["labels"] == both.obs[CELL_TYPE].astype(str).tolist()


@needs_lamindb
def test_unknown_collection_key_is_a_clear_error(lamindb_run):
    result, _ = lamindb_run
    kind, message = result["errors"]["unknown"]
    assert kind == "InputError"
    assert "no-such-collection" in message
    assert "retina-parts" in message  # lists the collections that exist


@needs_lamindb
def test_non_anndata_artifact_is_a_clear_error(lamindb_run):
    result, _ = lamindb_run
    kind, message = result["errors"]["mixed"]
    assert kind == "InputError"
    assert "table.csv" in message and ".csv" in message


def test_lamindb_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lamindb", None)
    with pytest.raises(ImportError, match=r"pip install 'scprint-suite\[lamin\]'"):
        sources.collection_from_lamindb("any-key")
    with pytest.raises(ImportError, match=r"scprint-suite\[lamin\]"):
        sources.lamindb_mapped("any-key", ["cell_type"])


def test_census_missing_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cellxgene_census", None)
    with pytest.raises(ImportError, match=r"pip install 'scprint-suite\[census\]'"):
        sources.census_to_anndata(obs_value_filter="tissue_general == 'retina'")
    with pytest.raises(ImportError, match=r"scprint-suite\[census\]"):
        sources.write_census_files(tmp_path, obs_value_filter="tissue_general == 'retina'")


@pytest.mark.network
@pytest.mark.skipif(
    importlib.util.find_spec("cellxgene_census") is None
    or os.environ.get("SCPRINT_TEST_CENSUS") != "1",
    reason="needs cellxgene-census and internet access to the CELLxGENE census (S3), which "
    "this machine lacks; set SCPRINT_TEST_CENSUS=1 where both are available",
)
def test_census_to_anndata_real():
    adata = sources.census_to_anndata(
        obs_value_filter="tissue_general == 'retina' and is_primary_data == True "
        "and dataset_id == '0b75c598-0893-4216-afe8-5414cab7739d'",
        column_names=[CELL_TYPE],
        census_version="2025-01-30",
    )
    assert adata.n_obs > 0
    assert adata.var_names.str.startswith("ENSG").all()
    assert adata.uns["organism"] == "NCBITaxon:9606"


# --------------------------------------------------------------------------- fake census


class _FakeCensus:
    """Stands in for the census: one experiment whose cells are the given AnnData."""

    def __init__(self, adata):
        self.adata = adata
        self.closed = False
        obs = pd.DataFrame({"soma_joinid": np.arange(adata.n_obs) + 1000})
        table = types.SimpleNamespace(to_pandas=lambda: obs)
        reader = types.SimpleNamespace(concat=lambda: table)
        self.obs = types.SimpleNamespace(read=lambda value_filter, column_names: reader)

    def __getitem__(self, key):
        assert key == "census_data"
        return {"homo_sapiens": types.SimpleNamespace(obs=self.obs)}

    def close(self):
        self.closed = True


def _fake_census_module(source, calls, fail=None):
    """A ``cellxgene_census`` module serving ``source`` (counts with Ensembl var_names)."""
    import anndata as ad

    def open_soma(*, census_version="stable"):
        if fail is not None:
            raise fail
        census = _FakeCensus(source)
        calls.append(("open", census_version, census))
        return census

    def get_anndata(
        census,
        organism,
        measurement_name="RNA",
        X_name="raw",
        obs_value_filter=None,
        obs_coords=None,
        var_value_filter=None,
        obs_column_names=None,
        var_column_names=None,
    ):
        calls.append(("get_anndata", organism, obs_coords, obs_column_names))
        rows = np.arange(source.n_obs) if obs_coords is None else np.asarray(obs_coords) - 1000
        obs = source.obs.iloc[rows][[CELL_TYPE]].reset_index(drop=True)
        obs.insert(0, "soma_joinid", rows + 1000)
        obs.index = obs.index.astype(str)  # the census' own obs_names: "0", "1", ...
        var = pd.DataFrame(
            {"soma_joinid": np.arange(source.n_vars), "feature_id": source.var_names},
            index=np.arange(source.n_vars).astype(str),
        )
        return ad.AnnData(X=sp.csr_matrix(source.X[rows], dtype=np.float32), obs=obs, var=var)

    module = types.ModuleType("cellxgene_census")
    module.open_soma = open_soma
    module.get_anndata = get_anndata
    return module


@pytest.fixture
def census_source(retina_full):
    return retina_full[:N_PER_FILE].copy()


def test_census_to_anndata_layout(monkeypatch, census_source):
    calls = []
    monkeypatch.setitem(sys.modules, "cellxgene_census", _fake_census_module(census_source, calls))
    adata = sources.census_to_anndata(
        organism="human", obs_value_filter="tissue == 'retina'", column_names=[CELL_TYPE]
    )
    assert list(adata.var_names) == list(census_source.var_names)
    assert list(adata.obs_names) == [str(i + 1000) for i in range(N_PER_FILE)]
    assert adata.uns["organism"] == "NCBITaxon:9606"
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert abs(adata.X - sp.csr_matrix(census_source.X)).max() == 0
    assert calls[1][1] == "homo_sapiens"
    assert calls[1][3] == ["soma_joinid", CELL_TYPE]
    assert calls[0][2].closed


def test_write_census_files_shards_atomically(monkeypatch, tmp_path, census_source):
    from scdataloader.collection import Collection

    calls = []
    monkeypatch.setitem(sys.modules, "cellxgene_census", _fake_census_module(census_source, calls))
    paths = sources.write_census_files(
        tmp_path / "shards", obs_value_filter="tissue == 'retina'", max_cells_per_file=64
    )
    assert [p.name for p in paths] == [f"census_0000{i}.h5ad" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [p.name for p in paths]
    col = Collection(paths, obs_keys=[CELL_TYPE])
    assert len(col) == N_PER_FILE and [f.n_obs for f in col.files] == [64, 64, 22]
    depth = np.array([col[i]["depth"] for i in range(len(col))])
    np.testing.assert_allclose(depth, np.asarray(census_source.X.sum(axis=1)).ravel())
    assert list(col.label_values(CELL_TYPE)) == census_source.obs[CELL_TYPE].astype(str).tolist()

    # A second run keeps the shards already written and fetches nothing.
    calls.clear()
    again = sources.write_census_files(
        tmp_path / "shards", obs_value_filter="tissue == 'retina'", max_cells_per_file=64
    )
    assert again == paths
    assert [c[0] for c in calls] == ["open"]


def test_census_unreachable_is_a_clear_runtime_error(monkeypatch, census_source):
    failure = ConnectionError("Failed to resolve 'census.cellxgene.cziscience.com'")
    fake = _fake_census_module(census_source, [], fail=failure)
    monkeypatch.setitem(sys.modules, "cellxgene_census", fake)
    with pytest.raises(RuntimeError, match="could not be reached.*internet access"):
        sources.census_to_anndata(obs_value_filter="tissue == 'retina'")


def test_census_unknown_organism(monkeypatch, census_source):
    monkeypatch.setitem(sys.modules, "cellxgene_census", _fake_census_module(census_source, []))
    with pytest.raises(InputError, match="Unknown census organism"):
        sources.census_to_anndata(organism="zebrafish", obs_value_filter="x == 1")
