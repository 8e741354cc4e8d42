"""scprint.tabular.nn: sparse maps against reference solutions, TabNet / MLP / linear shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scprint.tabular.nn import (
    MLP,
    GhostBatchNorm,
    Linear,
    TabNet,
    TabNetConfig,
    build_model,
    entmax15,
    sparsemax,
)


def _simplex_projection(z: np.ndarray) -> np.ndarray:
    """Brute force: the projection of z onto the simplex, trying every support set size
    over the sorted values and keeping the feasible candidate closest to z."""
    best, best_dist = None, np.inf
    order = np.argsort(-z)
    for k in range(1, len(z) + 1):
        support = order[:k]
        tau = (z[support].sum() - 1.0) / k
        p = np.zeros_like(z)
        p[support] = z[support] - tau
        if (p < -1e-12).any():
            continue
        p = np.clip(p, 0, None)
        dist = ((p - z) ** 2).sum()
        if dist < best_dist:
            best, best_dist = p, dist
    return best


def _entmax15_bisection(z: np.ndarray) -> np.ndarray:
    """Solve sum_i [z_i/2 - tau]_+^2 = 1 for tau by bisection."""
    x = z / 2.0
    lo, hi = x.max() - 1.0, x.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if (np.clip(x - tau, 0, None) ** 2).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.clip(x - (lo + hi) / 2, 0, None) ** 2


@pytest.mark.parametrize("fn", [sparsemax, entmax15])
def test_maps_on_simplex(fn):
    torch.manual_seed(0)
    z = torch.randn(64, 30) * 3
    p = fn(z)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(64))
    assert (p == 0).any()  # sparse
    # along another dimension
    torch.testing.assert_close(fn(z.T, dim=0), p.T)


def test_sparsemax_matches_simplex_projection():
    rng = np.random.default_rng(1)
    for _ in range(50):
        z = rng.normal(size=int(rng.integers(2, 12))) * rng.uniform(0.1, 5)
        got = sparsemax(torch.tensor(z)).numpy()
        np.testing.assert_allclose(got, _simplex_projection(z), atol=1e-10)


def test_entmax15_matches_bisection():
    rng = np.random.default_rng(2)
    for _ in range(50):
        z = rng.normal(size=int(rng.integers(2, 15))) * rng.uniform(0.1, 5)
        got = entmax15(torch.tensor(z)).numpy()
        np.testing.assert_allclose(got, _entmax15_bisection(z), atol=1e-9)


@pytest.mark.parametrize("fn", [sparsemax, entmax15])
def test_gradcheck(fn):
    torch.manual_seed(3)
    z = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-5)


def test_ghost_batch_norm_chunks():
    torch.manual_seed(0)
    gbn = GhostBatchNorm(5, virtual_batch_size=4)
    x = torch.randn(8, 5) * 3 + 1
    y = gbn(x)
    # each virtual batch of 4 is standardised on its own
    torch.testing.assert_close(y[:4].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[4:].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    gbn.eval()
    assert gbn(x).shape == (8, 5)


@pytest.mark.parametrize("config", [TabNetConfig.sims(), TabNetConfig.sctab()])
def test_tabnet_shapes_and_explain(config):
    torch.manual_seed(0)
    n, f, c = 40, 25, 4
    model = TabNet(f, c, **config.model_kwargs())
    out = model(torch.randn(n, f))
    assert out["logits"].shape == (n, c)
    assert out["masks"].shape == (config.n_steps, n, f)
    torch.testing.assert_close(out["masks"].sum(-1), torch.ones(config.n_steps, n))
    assert out["sparsity_loss"].ndim == 0 and out["sparsity_loss"] >= 0
    out["logits"].sum().backward()
    model.eval()
    e = model.explain(torch.randn(n, f))
    assert e.shape == (n, f) and (e >= 0).all()
    sums = e.sum(-1)
    assert torch.all((sums - 1).abs() < 1e-5) or torch.all(sums[sums > 0] - 1 < 1e-5)


def test_presets():
    s = TabNetConfig.sctab()
    assert (s.mask, s.n_steps, s.n_d, s.n_a, s.n_shared, s.n_independent) == (
        "entmax15",
        1,
        128,
        64,
        3,
        5,
    )
    assert (s.virtual_batch_size, s.lambda_sparse) == (256, 1e-5)
    d = TabNetConfig.sims()
    assert (d.mask, d.n_steps, d.n_d, d.gamma) == ("sparsemax", 3, 8, 1.3)
    with pytest.raises(ValueError, match="mask"):
        TabNetConfig(mask="softmax")


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_mlp_linear(name):
    torch.manual_seed(0)
    model = build_model(name, 12, 3)
    out = model(torch.randn(6, 12))
    assert out["logits"].shape == (6, 3) and float(out["sparsity_loss"]) == 0.0
    e = model.explain(torch.rand(6, 12))
    assert e.shape == (6, 12) and (e >= 0).all()
    assert isinstance(model, MLP if name == "mlp" else Linear)


def test_linear_explain_is_x_times_weight():
    model = Linear(5, 2)
    x = torch.rand(3, 5)
    target = torch.tensor([0, 1, 1])
    expected = (x * model.fc.weight[target]).clamp_min(0)
    torch.testing.assert_close(model.explain(x, target), expected.detach())
    with torch.no_grad():
        model.fc.weight[0] = -1.0  # a gene weighing against class 0 explains nothing of it
    assert (model.explain(x, torch.zeros(3, dtype=torch.long)) == 0).all()


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("xgboost", 3, 2)
