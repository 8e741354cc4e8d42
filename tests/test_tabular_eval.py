"""scprint.tabular evaluation (ontology-aware metrics, ROC-AUC), scTab's donor-difference
augmentation and scaLR's chunked feature selection, biomarkers and gene recall curves."""

from __future__ import annotations

import json
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from scdataloader.errors import CountsError
from scdataloader.ontology import ancestors, build_hierarchy
from scprint.tabular.augment import AugmentationVectors, augmentation_vectors, normalize_log1p
from scprint.tabular.evaluate import Report, evaluate, ontology_correct, roc_auc
from scprint.tabular.selection import (
    biomarkers,
    chunked_feature_selection,
    gene_chunks,
    gene_recall_curve,
    plot_gene_recall,
)

NEURON, ROD, CONE = "CL:0000540", "CL:0000604", "CL:0000573"
ROD_MARKERS = {"RHO", "GNAT1", "SAG", "PDE6A", "PDE6B", "NRL", "CNGA1", "GNGT1"}


# --------------------------------------------------------------------------- evaluate


def test_descendant_prediction_right_ancestor_wrong():
    # The premise, from the Cell Ontology: a retinal rod cell is a neuron.
    assert NEURON in ancestors(ROD)
    assert ROD not in ancestors(NEURON)
    right = ontology_correct([NEURON, ROD, ROD, NEURON, ROD], [ROD, NEURON, ROD, CONE, "unknown"])
    assert right.tolist() == [True, False, True, True, False]  # a cone is a neuron too
    # Names are looked up in the ontology; unrelated types are wrong.
    named = ontology_correct(
        ["neuron", "retinal rod cell", "retinal rod cell"],
        ["retinal rod cell", "neuron", "retinal cone cell"],
    )
    assert named.tolist() == [True, False, False]


def test_evaluate_equals_sklearn_without_ontology():
    rng = np.random.default_rng(0)
    classes = np.array([NEURON, ROD, CONE, "CL:0000127"])
    y_true = classes[rng.integers(0, 4, 300)]
    y_pred = np.where(rng.random(300) < 0.6, y_true, classes[rng.integers(0, 4, 300)])
    report = evaluate(y_true, y_pred, ontology_aware=False)
    assert report.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report.weighted_f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert report.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=sorted(classes))
    table = report.per_class.loc[sorted(classes)]
    np.testing.assert_allclose(table[["precision", "recall", "f1"]].to_numpy().T, [p, r, f])
    assert table["support"].tolist() == s.tolist()
    assert report.n == 300 and report.n_corrected == 0
    # Integer labels without a hierarchy are labels of their own.
    assert evaluate([1, 2, 2], [1, 2, 1], ontology_aware=False).accuracy == pytest.approx(2 / 3)


def test_evaluate_ontology_aware_per_class_table():
    y_true = [NEURON, NEURON, ROD, ROD, CONE, "unknown"]
    y_pred = [ROD, NEURON, NEURON, ROD, CONE, ROD]
    report = evaluate(y_true, y_pred)
    assert isinstance(report, Report)
    assert report.n == 5 and report.n_corrected == 1  # the unknown cell is not scored
    assert report.accuracy == pytest.approx(4 / 5)
    # Corrected predictions: NEURON NEURON NEURON ROD CONE.
    table = report.per_class
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    assert table.loc[NEURON, "recall"] == 1.0 and table.loc[NEURON, "precision"] == 2 / 3
    assert table.loc[ROD, "recall"] == 0.5 and table.loc[ROD, "precision"] == 1.0
    assert table.index.tolist() == [NEURON, CONE, ROD]
    assert table["support"].tolist() == [2, 1, 2]
    expected = f1_score(
        [NEURON, NEURON, ROD, ROD, CONE], [NEURON, NEURON, NEURON, ROD, CONE], average="macro"
    )
    assert report.macro_f1 == pytest.approx(expected)
    assert not evaluate(y_true, y_pred, ontology_aware=False).accuracy > report.accuracy
    json.dumps(report.as_dict())
    # Integer codes of a label hierarchy give the same report.
    hierarchy = build_hierarchy("cell_type_ontology_term_id", [NEURON, ROD, CONE])
    codes = evaluate(
        hierarchy.encode(y_true[:5]), hierarchy.encode(y_pred[:5]), hierarchy=hierarchy
    )
    assert codes.macro_f1 == pytest.approx(report.macro_f1)


def test_roc_auc_one_vs_rest():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    y = np.array(classes)[rng.integers(0, 3, 200)]
    logits = rng.normal(size=(200, 3)) + 2.0 * (y[:, None] == np.array(classes))
    proba = pd.DataFrame(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), columns=classes)
    expected = roc_auc_score(y, proba.to_numpy(), multi_class="ovr", average="macro")
    assert roc_auc(y, proba) == pytest.approx(expected)
    # A class absent from y_true is skipped.
    with_d = proba.assign(d=0.1)
    per_class = roc_auc(y, with_d, average=None)
    assert list(per_class.index) == classes
    assert roc_auc(y, with_d) == pytest.approx(expected)


# --------------------------------------------------------------------------- augment


def _two_donors(n_genes: int = 100, n_cells: int = 5) -> ad.AnnData:
    """Donor B is donor A with 10x the counts on genes 0, 1, 2 (one cell type)."""
    a = np.full(n_genes, 10.0)
    b = a.copy()
    b[:3] = 100.0
    X = np.vstack([np.tile(a, (n_cells, 1)), np.tile(b, (n_cells, 1)), np.tile(a, (2, 1))])
    obs = pd.DataFrame(
        {
            "cell_type": ["T cell"] * (2 * n_cells) + ["B cell"] * 2,
            "donor": ["A"] * n_cells + ["B"] * n_cells + ["A", "A"],
        },
        index=[f"c{i}" for i in range(len(X))],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    return ad.AnnData(sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var)


def test_augmentation_vectors_known_shift():
    adata = _two_donors()
    # Normalised: shifted genes log1p(100 * 1e4 / 1270) - log1p(10 * 1e4 / 1000) = 2.06;
    # the other genes only move by the depth change, log1p(1e5 / 1270) - log1p(100) = -0.24.
    shift = np.log1p(100 * 1e4 / 1270) - np.log1p(10 * 1e4 / 1000)
    rest = np.log1p(10 * 1e4 / 1270) - np.log1p(10 * 1e4 / 1000)
    vecs = augmentation_vectors(adata, label_key="cell_type", donor_key="donor", clip=10.0)
    assert vecs.vectors.shape == (1, 100) and vecs.vectors.dtype == np.float32
    assert list(vecs.cell_types) == ["T cell"]  # the B cells come from one donor only
    assert vecs.donors == [("A", "B")]
    assert np.flatnonzero(vecs.vectors[0]).tolist() == [0, 1, 2]
    np.testing.assert_allclose(vecs.vectors[0, :3], shift, rtol=1e-5)
    # Clipped to 1.5 (scTab's default); a smaller threshold keeps the depth shift.
    clipped = augmentation_vectors(adata, label_key="cell_type", donor_key="donor")
    np.testing.assert_allclose(clipped.vectors[0, :3], 1.5)
    assert np.count_nonzero(clipped.vectors) == 3
    dense = augmentation_vectors(adata, label_key="cell_type", donor_key="donor", sparsify=0.2)
    np.testing.assert_allclose(dense.vectors[0, 3:], rest, rtol=1e-5)
    assert list(vecs.genes) == list(adata.var_names)


def test_augmentation_apply_shape_sign_and_bounds():
    adata = _two_donors()
    vecs = augmentation_vectors(adata, label_key="cell_type", donor_key="donor")
    x = normalize_log1p(adata).toarray()  # (12, 100)
    out = vecs.apply(x, rng=0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 9.0
    delta = out[:, :3] - x[:, :3]
    # Every cell got the vector with a random sign (clamped at 0 where subtracted).
    assert np.all(np.abs(delta) > 0) and (delta > 0).any() and (delta < 0).any()
    np.testing.assert_allclose(out[:, 3:], x[:, 3:])
    # Torch in, torch out; a scale range; cells of a type without vectors stay unchanged.
    xt = torch.from_numpy(x)
    labels = adata.obs["cell_type"].to_numpy()
    yt = vecs.apply(xt, labels, rng=np.random.default_rng(1), scale=(0.5, 1.0))
    assert isinstance(yt, torch.Tensor) and yt.shape == xt.shape and yt.dtype == xt.dtype
    assert float(yt.min()) >= 0.0
    torch.testing.assert_close(yt[labels == "B cell"], xt[labels == "B cell"])
    changed = (yt[:, :3] - xt[:, :3]).abs()[labels == "T cell"]
    assert float(changed.min()) > 0 and float(changed.max()) <= 1.5 + 1e-6
    # Reindexed onto a model's genes (an absent gene gets zero).
    moved = vecs.reindex(["g2", "g50", "missing"])
    np.testing.assert_allclose(moved.vectors[0], [1.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="reindex"):
        vecs.apply(x[:, :10])


def test_augmentation_refuses_normalised_input():
    adata = _two_donors()
    adata.X = normalize_log1p(adata)
    with pytest.raises(CountsError):
        augmentation_vectors(adata, label_key="cell_type", donor_key="donor")


def test_augmentation_wu2020_smoke(wu2020):
    vecs = augmentation_vectors(wu2020, label_key="cluster_orig", donor_key="patient")
    assert isinstance(vecs, AugmentationVectors)
    assert vecs.vectors.shape[1] == wu2020.n_vars and len(vecs) > 50
    nonzero = vecs.vectors[vecs.vectors != 0]
    assert np.abs(nonzero).min() > 0.25 and np.abs(nonzero).max() <= 1.5
    assert (vecs.vectors != 0).mean() < 0.5  # sparse
    for (a, b), cell_type in zip(vecs.donors, vecs.cell_types, strict=True):
        assert a != b and cell_type in set(wu2020.obs["cluster_orig"])
    few = augmentation_vectors(
        wu2020, label_key="cluster_orig", donor_key="patient", n_clusters=5, n_vectors=20
    )
    assert len(few) == 20
    x = normalize_log1p(wu2020[:32]).toarray()
    out = few.apply(x, rng=0)
    assert out.shape == x.shape and out.min() >= 0.0


# --------------------------------------------------------------------------- selection


class _LogReg:
    """A linear chunk model: scikit-learn's logistic regression on (1e4, log1p) input,
    each cell normalised by its total over all genes (as scprint.tabular does)."""

    def __init__(self, adata: ad.AnnData, genes: list[str], label_key: str, seed: int):
        columns = adata.var_names.get_indexer(genes)
        X = normalize_log1p(adata)[:, columns]
        y = adata.obs[label_key].astype(str).to_numpy()
        self.genes = list(genes)
        self.lr = LogisticRegression(max_iter=300, random_state=seed).fit(X, y)
        self.classes = [str(c) for c in self.lr.classes_]

    def weights(self) -> pd.DataFrame:
        return pd.DataFrame(self.lr.coef_.T, index=self.genes, columns=self.classes)


@pytest.fixture(scope="module")
def retina_top(retina_full) -> ad.AnnData:
    """The retina restricted to its 3,000 most expressed genes."""
    totals = np.asarray(retina_full.X.sum(axis=0)).ravel()
    return retina_full[:, np.sort(np.argsort(-totals)[:3000])].copy()


def test_gene_chunks_cover_every_gene_once():
    genes = [f"g{i}" for i in range(2345)]
    chunks = gene_chunks(genes, 1000)
    assert [len(c) for c in chunks] == [1000, 1000, 345]
    assert sum(chunks, []) == genes


def test_chunked_selection_retina_rod_biomarkers(retina_top):
    seen: list[list[str]] = []

    def fit(adata, *, genes, label_key, seed):
        seen.append(list(genes))
        return _LogReg(adata, genes, label_key, seed)

    selection = chunked_feature_selection(
        retina_top, label_key="cell_type", chunk_size=1000, top_k=100, fit_fn=fit
    )
    # Each gene was fitted in exactly one chunk.
    assert len(seen) == 3 and sorted(sum(seen, [])) == sorted(retina_top.var_names)
    assert selection.chunks == seen
    assert len(selection.genes) == 100 and len(set(selection.genes)) == 100
    assert selection.scores.index[:100].tolist() == selection.genes
    assert selection.scores.is_monotonic_decreasing and len(selection.scores) == 3000
    assert selection.per_class.shape == (3000, retina_top.obs["cell_type"].nunique())
    # scaLR's score: the mean absolute weight over the classes.
    top = selection.genes[0]
    assert selection.scores[top] == pytest.approx(selection.per_class.loc[top].abs().mean())

    names = retina_top.var["feature_name"].astype(str)
    markers = biomarkers(selection, n=10, names=names)
    assert set(markers) == set(retina_top.obs["cell_type"].astype(str))
    assert ROD_MARKERS & set(markers["retinal rod cell"])
    assert all(len(genes) <= 10 for genes in markers.values())

    # Gene recall of the rod markers along the rod ranking.
    ranking = selection.per_class["retinal rod cell"].sort_values(ascending=False).index
    curve = gene_recall_curve(names[ranking].tolist(), sorted(ROD_MARKERS), max_k=200)
    assert curve["recall"].iloc[-1] > 0


def test_gene_recall_curve_and_plot(tmp_path):
    ranked = ["a", "x", "b", "y", "z", "c", "a"]
    curve = gene_recall_curve(ranked, ["a", "b", "c", "d"])
    assert curve["k"].tolist() == [1, 2, 3, 4, 5, 6]  # the repeated "a" is dropped
    assert curve["n_found"].tolist() == [1, 1, 2, 2, 2, 3]
    assert curve["recall"].is_monotonic_increasing
    assert curve["recall"].iloc[-1] == pytest.approx(3 / 4)  # "d" is never ranked
    assert len(gene_recall_curve(ranked, ["a"], max_k=3)) == 3
    path = tmp_path / "plots" / "recall.png"
    fig = plot_gene_recall({"rod": curve, "cone": gene_recall_curve(ranked, ["x"])}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(path.parent) == ["recall.png"]  # no temporary file left
    assert len(fig.axes[0].lines) == 2


def test_shap_scorer_needs_shap(retina_top):
    try:
        import shap  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install shap"):
            chunked_feature_selection(retina_top, label_key="cell_type", scorer="shap")
    else:
        pytest.skip("shap is installed")


def test_chunked_selection_default_fit(retina_top):
    pytest.importorskip("scprint.tabular.api")
    small = retina_top[:, :300].copy()
    selection = chunked_feature_selection(
        small,
        label_key="cell_type",
        chunk_size=150,
        top_k=20,
        fit_kwargs={"max_epochs": 2, "calibrate": False},
    )
    assert len(selection.chunks) == 2 and len(selection.genes) == 20
    assert set(selection.genes) <= set(small.var_names)
    assert selection.per_class.shape == (300, small.obs["cell_type"].nunique())
