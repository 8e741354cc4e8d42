"""``scprint tabular fit|predict|explain`` on the retina file (300 genes, linear model)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scprint.cli import main as scprint_main
from scprint.tabular import Ensemble, TabularClassifier
from scprint.tabular.cli import main

FIT = ["--model", "linear", "--n-genes", "300", "--max-epochs", "5", "--no-progress",
       "--accelerator", "cpu"]  # fmt: skip


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def model_path(retina_path, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tabular_cli") / "model.pt"
    args = ["fit", "--adata", str(retina_path), "--label-key", "cell_type", "--out", str(out)]
    assert main(args + FIT) == 0
    return str(out)


def test_fit_predict_explain_roundtrip(model_path, retina_path, tmp_path, capsys):
    clf = TabularClassifier.load(model_path)
    assert len(clf.genes) == 300 and len(clf.classes) == 11
    assert clf.provenance["gene_selection"] == "300 most expressed"
    assert 0 <= clf.provenance["val_accuracy"] <= 1 and "val_macro_f1" in clf.provenance

    out = tmp_path / "pred"
    args = ["tabular", "predict", "--adata", str(retina_path), "--model", model_path,
            "--out-dir", str(out), "--label-key", "cell_type", "--threshold", "0.2"]  # fmt: skip
    assert scprint_main(args) == 0  # dispatched by the scprint command
    printed = capsys.readouterr().out
    assert "300/300 model genes found" in printed and "macro F1" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"probabilities.csv", "annotated.h5ad", "predicted_counts.png",
                     "probabilities_pca.png", "report.csv", "confusion.png"}  # fmt: skip
    proba = pd.read_csv(out / "probabilities.csv", index_col=0)
    assert list(proba.columns) == clf.classes and len(proba) == 1000
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    annotated = ad.read_h5ad(out / "annotated.h5ad")
    assert {"tabular_label", "tabular_confidence"} <= set(annotated.obs)
    np.testing.assert_allclose(annotated.obs["tabular_confidence"], proba.max(1), atol=1e-9)
    assert set(annotated.obs["tabular_label"]) <= set(clf.classes) | {"unknown"}
    assert np.asarray(annotated.obsm["tabular_proba"]).shape == (1000, 11)
    report = pd.read_csv(out / "report.csv", index_col=0)
    assert {"precision", "recall", "f1", "support"} <= set(report.columns)
    assert set(clf.classes) <= set(report.index) and "macro avg" in report.index
    for png in out.glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"

    explained = tmp_path / "explain"
    args = ["explain", "--adata", str(retina_path), "--model", model_path,
            "--out-dir", str(explained), "--n", "5"]  # fmt: skip
    assert main(args) == 0
    top = pd.read_csv(explained / "top_genes.csv")
    assert list(top.columns) == ["class", "rank", "gene", "symbol", "score"]
    assert top.groupby("class")["rank"].max().max() <= 5 and set(top["class"]) <= set(clf.classes)
    assert top["gene"].str.startswith("ENSG").all() and top["symbol"].ne("").all()
    assert (explained / "top_genes.png").read_bytes()[:4] == b"\x89PNG"
    # an existing output is kept without --overwrite, replaced with it
    before = (explained / "top_genes.csv").read_bytes()
    capsys.readouterr()
    assert main(args) == 2 and "--overwrite" in _error(capsys)
    assert (explained / "top_genes.csv").read_bytes() == before
    assert main(args + ["--overwrite", "--label-key", "cell_type"]) == 0


def test_ensemble_with_augmentation(wu2020_path, tmp_path, capsys):
    out = tmp_path / "ens.pt"
    args = ["fit", "--adata", str(wu2020_path), "--label-key", "cluster_orig",
            "--donor-key", "patient", "--augment", "--ensemble", "2", "--out", str(out),
            "--gene-selection", "variable"]  # fmt: skip
    fast = ["--model", "linear", "--n-genes", "300", "--max-epochs", "1", "--no-progress"]
    assert main(args + fast) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    ens = Ensemble.load(out)
    assert len(ens) == 2
    for member in ens.classifiers:
        assert member.provenance["augment"]["vectors"] == "donor"
        assert member.provenance["split"] == "donor"
    with pytest.raises(Exception, match="ensemble"):
        TabularClassifier.load(out)
    pred = tmp_path / "pred"
    args = ["predict", "--adata", str(wu2020_path), "--model", str(out), "--out-dir", str(pred)]
    assert main(args) == 0
    assert "tabular_uncertainty" in ad.read_h5ad(pred / "annotated.h5ad").obs


def test_bad_inputs_exit_2_without_outputs(model_path, retina_path, tmp_path, capsys):
    out = tmp_path / "out"
    predict = ["predict", "--adata", str(retina_path), "--out-dir", str(out), "--model"]

    assert main(predict + [str(tmp_path / "absent.pt")]) == 2
    assert "no such file" in _error(capsys)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(open(model_path, "rb").read()[:300])
    assert main(predict + [str(corrupt)]) == 2
    assert "corrupt" in _error(capsys)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    assert main(predict + [str(other)]) == 2
    assert "not a scprint.tabular" in _error(capsys)
    assert main(predict + [model_path, "--label-key", "celltype"]) == 2
    assert "celltype" in _error(capsys)
    args = ["predict", "--adata", str(tmp_path / "absent.h5ad"), "--model", model_path,
            "--out-dir", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "absent.h5ad" in _error(capsys)
    assert not out.exists()

    small = ad.read_h5ad(retina_path)[:100].copy()
    small.X = sp.csr_matrix(np.log1p(small.X.toarray() / 3.7))
    logged = tmp_path / "logged.h5ad"
    small.write_h5ad(logged)
    args = ["predict", "--adata", str(logged), "--model", model_path, "--out-dir", str(out)]
    assert main(args) == 2
    assert "log" in _error(capsys)
    assert not out.exists()

    fit = ["fit", "--adata", str(retina_path), "--out", str(out / "m.pt")]
    assert main(fit + ["--label-key", "celltype"] + FIT) == 2
    assert "celltype" in _error(capsys)
    assert main(fit + ["--label-key", "cell_type", "--augment"] + FIT) == 2
    assert "--donor-key" in _error(capsys)
    assert main(["fit", "--adata", str(logged), "--label-key", "cell_type", "--out",
                 str(out / "m.pt")] + FIT) == 2  # fmt: skip
    assert "log" in _error(capsys)
    assert not out.exists()

    out.mkdir()
    (out / "probabilities.csv").write_text("keep")
    args = ["predict", "--adata", str(retina_path), "--model", model_path, "--out-dir", str(out)]
    assert main(args) == 2
    assert "probabilities.csv exists" in _error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["probabilities.csv"]
    assert (out / "probabilities.csv").read_text() == "keep"
    assert main(["fit", "--adata", str(retina_path), "--label-key", "cell_type",
                 "--out", model_path] + FIT) == 2  # fmt: skip
    assert "exists" in _error(capsys)
