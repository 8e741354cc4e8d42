"""The linear probe's inner choice of context length (``benchmarks/science/classify.py``).

``benchmarks/`` is not a package, so the script is loaded from its file path.
"""

from __future__ import annotations

import numpy as np
from _science import load_science

bench = load_science("_science_classify", "classify.py")


def _cells(seed: int = 0, n: int = 240, classes: int = 4):
    rng = np.random.default_rng(seed)
    y = np.repeat([f"type{k}" for k in range(classes)], n // classes)
    centres = rng.normal(scale=3.0, size=(classes, 8))
    informative = centres[np.searchsorted(np.unique(y), y)] + rng.normal(size=(n, 8))
    noise = rng.normal(size=(n, 8))
    return y, informative, noise


def test_the_informative_embedding_is_chosen_whatever_its_position():
    y, good, bad = _cells()
    n = len(y)
    train = np.arange(n)[np.arange(n) % 5 != 0]
    unseen = np.arange(n) % 2 == 0  # half of the cells "never seen in pretraining"
    for embeddings in ({384: bad, 2200: good}, {384: good, 2200: bad}):
        best, scores = bench.probe_inner_choice(embeddings, y, train, unseen, seed=0)
        assert embeddings[best] is good
        assert scores[best] > 0.9 and min(scores.values()) < 0.6


def test_inner_validation_uses_only_unseen_training_cells_and_groups():
    y, good, bad = _cells(seed=1)
    n = len(y)
    groups = np.array([f"patient{i % 6}" for i in range(n)])
    train = np.flatnonzero(groups != "patient0")
    # only the cells of patients 1-3 are unseen: inner folds are made of them, by patient
    unseen = np.isin(groups, ["patient1", "patient2", "patient3"])
    best, scores = bench.probe_inner_choice({"a": bad, "b": good}, y, train, unseen, groups)
    assert best == "b" and set(scores) == {"a", "b"}
    # one unseen group cannot make an inner split: no score, the first key is kept
    one = groups == "patient1"
    best, scores = bench.probe_inner_choice({"a": bad, "b": good}, y, train, one, groups)
    assert best == "a" and all(np.isnan(v) for v in scores.values())


def test_ties_go_to_the_first_length():
    y, good, _ = _cells(seed=2)
    train = np.arange(len(y))
    unseen = np.ones(len(y), dtype=bool)
    best, scores = bench.probe_inner_choice({2200: good, 384: good.copy()}, y, train, unseen)
    assert best == 2200 and scores[2200] == scores[384]


def test_fine_tuning_starts_at_the_rate_pretraining_ended_at(tmp_path):
    import torch

    ckpt = tmp_path / "model.ckpt"
    state = {
        "hyper_parameters": {"lr": 5e-4},
        # the plateau scheduler lowered the configured rate twice (x 0.6 each)
        "optimizer_states": [{"param_groups": [{"lr": 1.8e-4, "weight_decay": 0.01}]}],
    }
    torch.save(state, ckpt)
    assert bench._final_lr(ckpt) == 1.8e-4
    del state["optimizer_states"]  # weights only: the configured rate
    torch.save(state, ckpt)
    assert bench._final_lr(ckpt) == 5e-4


def test_a_flat_fine_tuning_head_can_predict_a_coarse_label(trained, retina_full):
    """The retina's "ON-bipolar cell" (CL:0000749) is the parent of "rod bipolar cell"
    (CL:0000751): the pretrained head has no leaf for it, a flat head does, and keeps the
    pretrained class token and hidden layers."""
    import torch

    head = "cell_type_ontology_term_id"
    labels = retina_full.obs[head].astype(str).to_numpy()
    assert {"CL:0000749", "CL:0000751"} <= set(labels)
    old, _ = bench._finetune_module(trained, head, labels, 1e-4, 1)
    assert "CL:0000749" not in old.hierarchies[head].leaves
    flat, added = bench._finetune_module(trained, head, labels, 1e-4, 1, flat=True)
    assert not added
    assert list(flat.hierarchies[head].leaves) == sorted(set(labels))
    pre, new = trained.state_dict(), flat.state_dict()
    torch.testing.assert_close(new["model.placeholders"], pre["model.placeholders"])
    prefix = f"model.class_heads.{head}."
    fresh = [k for k in new if k.startswith(prefix) and new[k].shape != pre[k].shape]
    kept = [k for k in new if k.startswith(prefix) and new[k].shape == pre[k].shape]
    assert fresh and all(new[k].shape[0] == len(set(labels)) for k in fresh)
    for k in kept:
        torch.testing.assert_close(new[k], pre[k])
    for k in new:  # everything outside the head carries over
        if not k.startswith(prefix):
            torch.testing.assert_close(new[k], pre[k])
