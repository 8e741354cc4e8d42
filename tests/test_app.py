"""The web app's logic (scprint.app.core) and launcher, without a browser."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scprint.app import core


@pytest.fixture(scope="module")
def tabular_models(retina_path, tmp_path_factory) -> Path:
    """A models folder with a small linear classifier of the retina cell types (500 most
    expressed genes, Ensembl ids), a file that is not a model, and a README."""
    from scprint import tabular

    adata = ad.read_h5ad(retina_path)
    top = np.argsort(-np.asarray(adata.X.sum(axis=0)).ravel(), kind="stable")[:500]
    clf = tabular.fit(adata, label_key="cell_type", model="linear", genes=list(adata.var_names[top]),
                      max_epochs=2, progress=False, accelerator="cpu")  # fmt: skip
    folder = tmp_path_factory.mktemp("models")
    clf.save(folder / "retina_linear.pt")
    (folder / "broken.pt").write_bytes(b"not a model")
    (folder / "README.txt").write_text("models of the app")
    return folder


@pytest.fixture(scope="module")
def tabular(tabular_models):
    info = core.list_models(tabular_models).get("retina_linear")
    return info, core.load_model(info)


@pytest.fixture(scope="module")
def retina_bytes(retina_path) -> bytes:
    return retina_path.read_bytes()


@pytest.fixture(scope="module")
def retina_small(retina_full) -> ad.AnnData:
    """200 retina cells, raw counts."""
    return retina_full[::5].copy()


# --------------------------------------------------------------------------- models


def test_list_models_reads_tabular_metadata(tabular_models):
    folder = core.list_models(tabular_models)
    assert folder.names() == ["retina_linear"]
    info = folder.get("retina_linear")
    assert info.kind == "tabular"
    assert info.path == tabular_models / "retina_linear.pt"
    assert info.n_genes == 500 and info.genes[0].startswith("ENSG")
    assert list(info.classes) == ["cell_type"]
    assert len(info.classes["cell_type"]) == 11 and "retinal rod cell" in info.classes["cell_type"]
    assert info.organisms == ("human",)
    assert "linear" in info.description
    assert info.provenance["preset"] == "linear"
    assert info.provenance["label_key"] == "cell_type"
    assert info.provenance["n_train"] + info.provenance["n_val"] == 1000
    assert "optimizer.name" in info.provenance  # nested values are flattened
    # unreadable files are reported, other files ignored
    assert list(folder.skipped) == ["broken.pt"]
    assert folder.skipped["broken.pt"].startswith("neither a tabular model")
    with pytest.raises(KeyError):
        folder.get("absent")


def test_list_models_of_a_missing_folder_is_empty(tmp_path):
    folder = core.list_models(tmp_path / "absent")
    assert folder.models == [] and folder.skipped == {}


def test_list_models_reads_foundation_checkpoints(trained_ckpt, tabular_models, tmp_path):
    shutil.copy(tabular_models / "retina_linear.pt", tmp_path / "retina_linear.pt")
    (tmp_path / "scprint").mkdir()
    shutil.copy(trained_ckpt, tmp_path / "scprint" / "debug.ckpt")
    folder = core.list_models(tmp_path)
    assert folder.names() == ["retina_linear", "scprint/debug"]
    info = folder.get("scprint/debug")
    assert info.kind == "foundation"
    import scprint

    module = scprint.load(trained_ckpt)
    assert info.genes == tuple(module.genes)
    assert set(info.classes) == set(module.hierarchies)
    for key, h in module.hierarchies.items():
        assert info.classes[key] == tuple(h.leaves)
    assert info.organisms == ("human",)
    assert info.provenance["preset"] == "debug"
    assert info.provenance["epoch"] == 2


# --------------------------------------------------------------------------- uploads


def test_read_upload_reads_an_h5ad(retina_bytes):
    adata = core.read_upload("retina.h5ad", retina_bytes)
    assert adata.shape == (1000, 70116)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("cells.csv", b"cell,gene1\nc1,3\n", "not an .h5ad file"),
        ("cells.h5ad", b"cell,gene1\nc1,3\n", "content is not HDF5"),
        ("cells.loom", b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "does not end in .h5ad"),
    ],
)
def test_read_upload_rejects_other_files(name, data, expected):
    with pytest.raises(core.UploadError) as info:
        core.read_upload(name, data)
    assert expected in info.value.problem and name in info.value.problem
    assert "write_h5ad" in info.value.hint


def test_read_upload_rejects_a_truncated_h5ad(retina_bytes):
    with pytest.raises(core.UploadError, match="could not be read as AnnData") as info:
        core.read_upload("retina.h5ad", retina_bytes[: len(retina_bytes) // 3])
    assert info.value.hint


def test_read_upload_size_limit(retina_bytes):
    size_mb = len(retina_bytes) / 2**20
    with pytest.raises(core.UploadError, match="limit") as info:
        core.read_upload("retina.h5ad", retina_bytes, max_mb=size_mb / 2)
    assert f"{size_mb:,.0f} MB" in info.value.problem
    assert "--max-upload-mb" in info.value.hint
    assert core.read_upload("retina.h5ad", retina_bytes, max_mb=size_mb + 1).n_obs == 1000
    assert core.DEFAULT_MAX_UPLOAD_MB == 1024


def test_check_upload_accepts_raw_counts(retina_small, tabular):
    info, _ = tabular
    check = core.check_upload(retina_small, info)
    assert check.layer is None and check.gene_key is None and check.organism == "human"
    assert check.n_found == check.n_model_genes == 500 and check.notes == []


def _log_normalised(adata: ad.AnnData) -> ad.AnnData:
    import scipy.sparse as sp

    out = adata.copy()
    X = sp.csr_matrix(out.X, dtype=np.float32)
    X = sp.diags(1e4 / np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)) @ X
    X.data = np.log1p(X.data)
    out.X = X.astype(np.float32)
    return out


def test_check_upload_rejects_log_normalised_data(retina_small, tabular):
    info, _ = tabular
    lognorm = _log_normalised(retina_small)
    with pytest.raises(core.UploadError, match="not raw counts") as err:
        core.check_upload(lognorm, info)
    assert "X holds log-normalised values" in err.value.problem
    assert "raw integer counts" in err.value.hint and "'counts'" in err.value.hint
    scaled = lognorm.copy()
    scaled.X = scaled.X.toarray() - 1.0
    with pytest.raises(core.UploadError, match="negative values"):
        core.check_upload(scaled, info)
    # with the counts in a layer, that layer is used
    lognorm.layers["counts"] = retina_small.X.copy()
    check = core.check_upload(lognorm, info)
    assert check.layer == "counts" and "counts" in check.notes[0]


@pytest.mark.filterwarnings("ignore:.*written with a very old version of AnnData")
@pytest.mark.filterwarnings("ignore:.*written without encoding metadata")
@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_check_upload_rejects_mouse_genes_for_a_human_model(mouse_path, tabular):
    info, _ = tabular
    mouse = ad.read_zarr(mouse_path)[:200].copy()
    mouse.var_names_make_unique()
    with pytest.raises(core.UploadError) as err:
        core.check_upload(mouse, info)
    assert "mouse genes" in err.value.problem and "human genes" in err.value.problem
    assert "human" in err.value.hint


def test_check_upload_rejects_data_without_the_models_genes(retina_small, tabular):
    info, _ = tabular
    symbols = ad.AnnData(retina_small.X.copy(), obs=retina_small.obs.copy())
    symbols.var_names = retina_small.var["feature_name"].astype(str).to_numpy()
    symbols.var_names_make_unique()
    with pytest.raises(core.UploadError, match="None of the 500 genes") as err:
        core.check_upload(symbols, info)  # symbols, the model has Ensembl ids
    assert "Ensembl ids or symbols" in err.value.hint
    # a symbol column next to the ids is found
    both = symbols.copy()
    both.var["feature_name"] = both.var_names
    both.var_names = retina_small.var_names
    assert core.check_upload(both, info).n_found == 500


def test_genes_matched_on_a_symbol_column(retina_small, tabular):
    """A model of gene symbols on data with Ensembl var_names and a feature_name column."""
    import dataclasses

    from scprint.tabular import TabularClassifier

    info, clf = tabular
    to_symbol = dict(
        zip(retina_small.var_names, retina_small.var["feature_name"].astype(str), strict=True)
    )
    symbols = [to_symbol[g] for g in clf.genes]
    by_symbol = TabularClassifier(clf.model, model_name=clf.model_name, model_kwargs=clf.model_kwargs,
                                  genes=symbols, classes=clf.classes, temperature=clf.temperature)  # fmt: skip
    symbol_info = dataclasses.replace(info, genes=tuple(symbols))
    check = core.check_upload(retina_small, symbol_info)
    assert check.gene_key == "feature_name" and check.n_found == 500
    assert "feature_name" in check.notes[-1]
    pred = core.predict(retina_small, by_symbol, symbol_info, gene_key=check.gene_key)
    expected = core.predict(retina_small, clf, info)
    np.testing.assert_allclose(pred.proba.to_numpy(), expected.proba.to_numpy(), rtol=1e-6)


def test_check_upload_notes_few_shared_genes(retina_small, tabular):
    info, _ = tabular
    keep = ~retina_small.var_names.isin(info.genes[:300])
    check = core.check_upload(retina_small[:, keep].copy(), info)
    assert check.n_found == 200 and check.fraction_found == pytest.approx(0.4)
    assert "Only 200 of the model's 500 genes" in check.notes[0]


# --------------------------------------------------------------------------- predictions


def test_predictions_csv_content(retina_small, tabular):
    info, clf = tabular
    done = []
    pred = core.predict(retina_small, clf, info, chunk_size=64, on_progress=done.append)
    assert done == pytest.approx([64 / 200, 128 / 200, 192 / 200, 1.0])
    expected = clf.predict_proba(retina_small)
    np.testing.assert_allclose(pred.proba.to_numpy(), expected.to_numpy(), rtol=1e-6, atol=1e-9)
    assert pred.target == "cell_type" and pred.key == "tabular"

    threshold = 0.9
    table = pd.read_csv(io.BytesIO(core.predictions_csv(pred, threshold)), index_col="cell")
    classes = list(info.classes["cell_type"])
    assert list(table.columns) == ["label", "name", "confidence"] + [f"proba:{c}" for c in classes]
    assert list(table.index) == list(retina_small.obs_names)
    proba = table[[f"proba:{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(table["confidence"], proba.max(axis=1), atol=1e-5)
    top = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    sure = table["confidence"].to_numpy() >= threshold
    assert (table["label"].to_numpy()[sure] == top[sure]).all()
    assert (table["label"][~sure] == core.UNKNOWN).all()
    # most cells of this easy data set get their true label
    assert (table["label"].to_numpy() == retina_small.obs["cell_type"].astype(str)).mean() > 0.8
    counts = pred.counts(threshold)
    assert counts["cells"].sum() == 200
    assert counts["cells"].get(core.UNKNOWN, 0) == int((~sure).sum())


def test_predictions_threshold_and_names():
    proba = pd.DataFrame([[0.7, 0.3], [0.45, 0.55], [0.1, 0.9]], index=["a", "b", "c"],
                         columns=["CL:0000540", "other"])  # fmt: skip
    pred = core.Predictions(proba, "cell_type", core.readable_names(proba.columns), "k")
    assert pred.names == {"CL:0000540": "neuron", "other": "other"}
    assert list(pred.labels()) == ["CL:0000540", "other", "other"]
    assert list(pred.labels(0.6)) == ["CL:0000540", core.UNKNOWN, "other"]
    assert list(pred.label_names(0.6)) == ["neuron", core.UNKNOWN, "other"]
    assert pred.counts(0.6)["cells"].to_dict() == {"neuron": 1, core.UNKNOWN: 1, "other": 1}


def test_annotated_h5ad(retina_small, tabular):
    info, clf = tabular
    pred = core.predict(retina_small, clf, info)
    coords = np.zeros((retina_small.n_obs, 2))
    data = core.annotated_h5ad(retina_small, pred, 0.5, embedding=coords)
    out = ad.read_h5ad(io.BytesIO(data))
    assert out.shape == retina_small.shape
    assert (out.obs["tabular_label"].astype(str) == pred.labels(0.5).to_numpy()).all()
    np.testing.assert_allclose(out.obs["tabular_confidence"], pred.confidence, rtol=1e-6)
    assert out.obsm["tabular_proba"].shape == (retina_small.n_obs, 11)
    assert list(out.uns["tabular_classes"]) == list(pred.proba.columns)
    assert out.obsm["X_umap"].shape == (retina_small.n_obs, 2)
    assert "tabular_label" not in retina_small.obs  # the upload is left alone


def test_top_genes_table(retina_small, tabular):
    info, clf = tabular
    table = core.top_genes_table(retina_small, clf, info, n=5)
    assert list(table.columns) == ["class", "name", "rank", "gene", "symbol"]
    assert table.groupby("class").size().max() <= 5
    assert set(table["gene"]) <= set(info.genes)
    symbols = retina_small.var["feature_name"].astype(str)
    assert (table["symbol"] == symbols[table["gene"]].to_numpy()).all()
    expected = clf.top_genes(retina_small, n=5)
    for cls, genes in expected.items():
        assert list(table.loc[table["class"] == cls, "gene"]) == genes


@pytest.mark.slow
def test_embedding_2d_of_a_tabular_model(retina_small, tabular):
    info, clf = tabular
    coords, what = core.embedding_2d(retina_small, clf, info)
    assert coords.shape == (200, 2) and np.isfinite(coords).all()
    assert "UMAP" in what and "log1p" in what
    fig = core.embedding_figure(coords, retina_small.obs["cell_type"], title=what)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert set(labels) == set(retina_small.obs["cell_type"].astype(str))


def test_embedding_2d_without_scanpy(retina_small, tabular, monkeypatch):
    import sys

    info, clf = tabular
    monkeypatch.setitem(sys.modules, "scanpy", None)
    coords, what = core.embedding_2d(retina_small, clf, info)
    assert coords.shape == (200, 2) and "install scanpy" in what
    fig = core.embedding_figure(coords, np.arange(200.0), title=what)
    assert len(fig.axes) == 2  # numeric values: a colour bar


# --------------------------------------------------------------------------- foundation


@pytest.mark.slow
def test_foundation_predictions_and_gene_network(trained_ckpt, retina_small, tmp_path):
    shutil.copy(trained_ckpt, tmp_path / "debug.ckpt")
    info = core.list_models(tmp_path).get("debug")
    module = core.load_model(info)
    check = core.check_upload(retina_small, info)
    assert check.n_found > 0.8 * 27000
    pred = core.predict(retina_small, module, info, layer=check.layer)
    assert pred.target == "cell_type_ontology_term_id"
    assert list(pred.proba.columns) == list(info.classes["cell_type_ontology_term_id"])
    np.testing.assert_allclose(pred.proba.sum(axis=1), 1.0, atol=1e-4)
    assert all(not n.startswith("CL:") for n in pred.names.values())  # readable names

    counts = core.cell_types(retina_small, "cell_type")
    assert counts.index[0] == "retinal rod cell" and counts.min() >= 10
    net = core.gene_network(retina_small, module, cell_type="retinal rod cell",
                            cell_type_key="cell_type", n_genes=30)  # fmt: skip
    assert net.n_genes == 30
    hubs = core.hub_table(net, top=5)
    assert list(hubs.columns)[:2] == ["gene", "symbol"] and len(hubs) == 5
    fig = core.subgraph_figure(net, hubs["gene"][0], k=3)
    assert fig.axes[0].get_title().endswith("top 3 regulators and targets")
    with pytest.raises(core.UploadError, match="no obs column"):
        core.cell_types(retina_small, "absent")


# --------------------------------------------------------------------------- launcher


def test_streamlit_command_carries_the_options(tmp_path):
    from scprint.app import PAGE, build_parser, streamlit_command

    args = build_parser().parse_args(
        ["--models", str(tmp_path), "--port", "9123", "--max-upload-mb", "50"]
    )
    cmd = streamlit_command(args)
    assert cmd[1:5] == ["-m", "streamlit", "run", str(PAGE)] and PAGE.is_file()
    pairs = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert pairs["--server.port"] == "9123"
    assert pairs["--server.headless"] == "true"
    assert pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--server.maxUploadSize"] == "50"
    assert pairs["--server.address"] == "127.0.0.1"
    assert pairs["--client.showErrorDetails"] in ("none", "false")
    page_args = cmd[cmd.index("--") + 1 :]
    assert page_args == ["--models", str(tmp_path.resolve()), "--max-upload-mb", "50"]


def test_app_command_without_streamlit(monkeypatch, capsys, tmp_path):
    import importlib.util

    from scprint.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name)
    )
    assert main(["app", "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs Streamlit" in err and "pip install" in err


def test_app_command_help(capsys):
    from scprint.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--models", "--port", "--max-upload-mb"):
        assert option in out
