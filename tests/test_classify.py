"""Cell classification (probabilities, coarse levels, temperature) on a small trained model."""

from __future__ import annotations

import numpy as np
import pytest

from scdataloader.errors import InputError, LabelError
from scdataloader.ontology import leaves_under
from scprint.tasks.classify import apply_temperature, classify, fit_temperature, label_nll

KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]
CT = "cell_type_ontology_term_id"
ON_BIPOLAR, ROD_BIPOLAR, NEURON = "CL:0000749", "CL:0000751", "CL:0000540"


@pytest.fixture(scope="module")
def cells(retina_full):
    """400 retina cells (every other one of the first 800) over the 1,500 top genes."""
    a = retina_full[:800:2].copy()
    top = np.argsort(-np.asarray(retina_full.X.sum(axis=0)).ravel())[:1500]
    return a[:, np.sort(top)].copy()


@pytest.fixture(scope="module")
def classified(trained, cells):
    return classify(cells, trained, levels={CT: [ON_BIPOLAR, NEURON]}, max_len=512,
                    progress=False, copy=True)  # fmt: skip


def test_writes_documented_slots(trained, cells, classified, tmp_path):
    h = trained.hierarchies[CT]
    a, p = classified, f"scprint_{CT}"
    proba = a.obsm[f"{p}_proba"]
    assert proba.shape == (cells.n_obs, h.n_leaves) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert list(a.uns[f"{p}_labels"]) == list(h.leaves)
    best = np.array(h.leaves)[proba.argmax(axis=1)]
    np.testing.assert_array_equal(a.obs[p].astype(str), best)
    np.testing.assert_allclose(a.obs[f"{p}_proba"], proba.max(axis=1))
    assert a.obs[f"{p}_name"].astype(str)[0] == h.name(best[0])
    assert "bipolar" in h.name(ROD_BIPOLAR)
    # top-k: decreasing probabilities, top1 is the prediction
    np.testing.assert_array_equal(a.obs[f"{p}_top1"].astype(str), best)
    assert (a.obs[f"{p}_top1_proba"] >= a.obs[f"{p}_top2_proba"]).all()
    assert (a.obs[f"{p}_top2_proba"] >= a.obs[f"{p}_top3_proba"]).all()
    assert f"{p}_top4" not in a.obs
    assert a.uns["scprint_temperature"] == {CT: 1.0}
    classified.write_h5ad(tmp_path / "out.h5ad")  # every slot written is storable
    # copy=True leaves the input alone
    assert f"{p}_proba" not in cells.obsm and p not in cells.obs


def test_coarse_probabilities_sum_their_leaves(trained, classified):
    h = trained.hierarchies[CT]
    a, p = classified, f"scprint_{CT}"
    assert h.coarse_leaves[ON_BIPOLAR] == (ROD_BIPOLAR,)  # ON-bipolar is coarse in this data
    assert list(a.uns[f"{p}_coarse_labels"]) == [ON_BIPOLAR, NEURON]
    proba, coarse = a.obsm[f"{p}_proba"], a.obsm[f"{p}_coarse_proba"]
    assert coarse.shape == (a.n_obs, 2) and coarse.dtype == np.float32
    for j, term in enumerate([ON_BIPOLAR, NEURON]):
        under = [h.leaves.index(leaf) for leaf in leaves_under(term, h)]
        np.testing.assert_allclose(coarse[:, j], proba[:, under].sum(axis=1), rtol=1e-5)
    neurons = leaves_under(NEURON, h)
    assert ROD_BIPOLAR in neurons and 1 < len(neurons) < h.n_leaves  # glia are not neurons
    assert (coarse[:, 1] >= coarse[:, 0] - 1e-6).all()  # rod bipolar cells are neurons
    chosen = np.array([ON_BIPOLAR, NEURON])[coarse.argmax(axis=1)]
    np.testing.assert_array_equal(a.obs[f"{p}_coarse"].astype(str), chosen)
    assert set(a.obs[f"{p}_coarse_name"].astype(str)) <= {"neuron", h.name(ON_BIPOLAR)}


def test_unknown_threshold_and_temperature(trained, cells, classified):
    p = f"scprint_{CT}"
    top = classified.obs[f"{p}_proba"].to_numpy()
    logits = np.log(classified.obsm[f"{p}_proba"].astype(np.float64))  # softmax-equivalent
    threshold = float(np.median(apply_temperature(logits, 2.0).max(axis=1)))
    out = classify(cells, trained, unknown_threshold=threshold, temperature=2.0, top_k=0,
                   max_len=512, progress=False, copy=True)  # fmt: skip
    # a higher temperature flattens the probabilities but keeps their order
    hot = out.obs[f"{p}_proba"].to_numpy()
    assert (hot <= top + 1e-6).all()
    low = hot < threshold
    assert low.any() and (~low).any()
    assert (out.obs[p].astype(str)[low] == "unknown").all()
    assert (out.obs[p].astype(str)[~low] != "unknown").all()
    assert (out.obs[f"{p}_name"].astype(str)[low] == "unknown").all()
    assert f"{p}_top1" not in out.obs and out.uns["scprint_temperature"] == {CT: 2.0}
    # in place: writes into the AnnData and returns None
    b = cells[:40].copy()
    assert classify(b, trained, max_len=512, progress=False) is None
    assert f"{p}_proba" in b.obsm


def test_fitted_temperature_does_not_raise_held_out_nll(trained, cells, classified):
    h = trained.hierarchies[CT]
    p = f"scprint_{CT}"
    logits = np.log(np.clip(classified.obsm[f"{p}_proba"].astype(np.float64), 1e-30, None))
    labels = h.encode(cells.obs[CT])  # leaf and coarse (ON-bipolar) codes
    assert (labels >= h.n_leaves).any()
    rng = np.random.default_rng(0)
    fit = rng.permutation(len(labels)) < len(labels) // 2
    t = fit_temperature(logits[fit], labels[fit], h.leaf_matrix())
    held_t = label_nll(logits[~fit], labels[~fit], h.leaf_matrix(), t)
    held_1 = label_nll(logits[~fit], labels[~fit], h.leaf_matrix(), 1.0)
    assert held_t <= held_1 + 1e-3
    # classify(temperature="fit") fits on the obs labels and stores the temperature
    part = cells[fit].copy()
    part.obs["truth"] = part.obs[CT]
    out = classify(part, trained, temperature="fit", labels_key="truth", max_len=512,
                   progress=False, copy=True)  # fmt: skip
    assert out.uns["scprint_temperature"][CT] == pytest.approx(t, rel=0.02)
    np.testing.assert_allclose(
        out.obsm[f"{p}_proba"], apply_temperature(logits[fit], t), atol=1e-4
    )


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(6000, 10))
    proba = apply_temperature(logits, 2.5).astype(np.float64)
    proba /= proba.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in proba])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)
    # with coarse labels (half the cells only known as group 0..4 or 5..9) and unknowns
    groups = np.zeros((2, 10), dtype=bool)
    groups[0, :5] = groups[1, 5:] = True
    coarse = np.where(rng.random(len(labels)) < 0.5, 10 + labels // 5, labels)
    coarse[:100] = -1
    assert fit_temperature(logits, coarse, groups) == pytest.approx(2.5, rel=0.1)
    with pytest.raises(LabelError, match="known label"):
        fit_temperature(logits[:5], np.full(5, -1))


def test_bad_inputs_give_clear_errors(trained, cells):
    small = cells[:20].copy()
    with pytest.raises(InputError, match="no classifier"):
        classify(small, trained, classes=["tissue_ontology_term_id"], progress=False)
    with pytest.raises(LabelError, match="missing"):
        classify(small, trained, temperature="fit", labels_key="nope", progress=False)
    small.obs["empty"] = "unknown"
    with pytest.raises(LabelError, match="cannot fit"):
        classify(small, trained, temperature="fit", labels_key="empty", max_len=256,
                 progress=False)  # fmt: skip
    with pytest.raises(InputError, match="temperature"):
        classify(small, trained, temperature=-1.0, progress=False)
    with pytest.raises(InputError, match="cover none"):
        classify(small, trained, levels={CT: ["CL:0000236"]}, progress=False)  # B cell
    assert "scprint_" + CT not in small.obs
