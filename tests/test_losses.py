"""The pretraining losses and the count downsampling of scprint.nn.losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from scipy.special import gammaln, log_expit

from scprint.nn import losses

# ------------------------------------------------------------------ ZINB / NB references


def _ref_nb_logpmf(x, mu, theta):
    """log NB(x | mu, theta) in float64 from log-gamma functions (independent of the code)."""
    return (
        gammaln(x + theta)
        - gammaln(theta)
        - gammaln(x + 1)
        - theta * np.log1p(mu / theta)  # theta log(theta / (theta + mu))
        - x * np.log1p(theta / mu)  # x log(mu / (theta + mu))
    )


def _ref_zinb_nll(x, mu, theta, logits):
    """-log(pi 1[x = 0] + (1 - pi) NB(x)), pi = sigmoid(logits), stably in float64."""
    log_nb = _ref_nb_logpmf(x, mu, theta)
    log_pi, log_1mpi = log_expit(logits), log_expit(-logits)
    return -np.where(x == 0, np.logaddexp(log_pi, log_1mpi + log_nb), log_1mpi + log_nb)


def _extreme_inputs(n=6000, seed=0, logit_range=10.0):
    """mu, theta log-uniform in [1e-4, 1e4]; x drawn from the NB itself, plus zeros and
    plus counts log-uniform up to 1e5 (far in the tails)."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(np.log(1e-4), np.log(1e4), n))
    theta = np.exp(rng.uniform(np.log(1e-4), np.log(1e4), n))
    logits = rng.uniform(-logit_range, logit_range, n)
    x = rng.poisson(np.minimum(rng.gamma(theta, mu / theta), 1e6)).astype(np.float64)
    x = np.minimum(x, 1e5)
    x[rng.random(n) < 0.2] = 0.0
    tail = rng.random(n) < 0.1
    x[tail] = np.floor(np.exp(rng.uniform(0.0, np.log(1e5), tail.sum())))
    return x, mu, theta, logits


def _rel_err(out, ref):
    # Relative to max(|ref|, 1): an NLL near 0 is a difference of terms of order 1 or more
    # (e.g. softplus(-l) - softplus(log NB(0) - l) when a zero is almost certain), which a
    # float format resolves only to its epsilon times that scale, not relative to the result.
    return np.abs(np.asarray(out, dtype=np.float64) - ref) / np.maximum(np.abs(ref), 1.0)


def test_reference_agrees_with_scipy_nbinom():
    x, mu, theta, _ = _extreme_inputs()
    scipy_ref = stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))
    assert _rel_err(_ref_nb_logpmf(x, mu, theta), scipy_ref).max() < 1e-7


def test_zinb_nll_float64_matches_reference():
    x, mu, theta, logits = _extreme_inputs()
    ref = _ref_zinb_nll(x, mu, theta, logits)
    out = losses.zinb_nll(*(torch.from_numpy(a) for a in (x, mu, theta, logits)))
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert _rel_err(out.numpy(), ref).max() < 1e-6


def test_zinb_nll_float32_matches_reference():
    x, mu, theta, logits = _extreme_inputs(seed=1)
    ref = _ref_zinb_nll(x, mu, theta, logits)
    out = losses.zinb_nll(*(torch.from_numpy(a).float() for a in (x, mu, theta, logits)))
    assert out.dtype == torch.float32
    # The plain lgamma formula reaches ~1e-2 here (cancellation between lgamma terms of
    # order 1e5 and theta log(theta / (theta + mu)) as a difference of logs); the
    # saddle-point form measures ~2e-6, so a bound well below the 5e-3 target holds.
    assert _rel_err(out.numpy(), ref).max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zinb_nll_half_precision_is_upcast_and_finite(dtype):
    x, mu, theta, logits = _extreme_inputs(seed=2, logit_range=30.0)
    xh = torch.from_numpy(np.minimum(x, 6e4)).to(dtype)  # float16 tops at 65504
    params = [torch.from_numpy(a).to(dtype) for a in (mu, theta, logits)]
    out = losses.zinb_nll(xh, *params)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # it is the float32 loss of the rounded inputs
    ref = _ref_zinb_nll(*(t.double().numpy() for t in (xh, *params)))
    assert _rel_err(out.numpy(), ref).max() < 1e-4
    # gradients w.r.t. the upcast values: the loss itself must not overflow (a float16
    # leaf could not even hold d/dmu = -x/mu ~ 1e9, whatever the loss does)
    upcast = [p.float().requires_grad_() for p in params]
    losses.zinb_nll(xh, *upcast).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in upcast)
    if dtype == torch.bfloat16:  # bf16 has float32's range: leaf gradients stay finite too
        leaves = [p.clone().requires_grad_() for p in params]
        losses.zinb_nll(xh, *leaves).sum().backward()
        assert all(torch.isfinite(p.grad.float()).all() for p in leaves)


def test_zinb_nll_extreme_grid_finite_with_finite_gradients():
    grid = torch.tensor([1e-4, 1e-2, 1.0, 1e2, 1e4])
    mu, theta, logits, x = torch.meshgrid(
        grid, grid, torch.tensor([-30.0, 0.0, 30.0]), torch.tensor([0.0, 1.0, 50.0, 1e5]),
        indexing="ij",
    )  # fmt: skip
    mu, theta, logits = (t.clone().requires_grad_() for t in (mu, theta, logits))
    out = losses.zinb_nll(x, mu, theta, logits)
    assert torch.isfinite(out).all() and (out > -1e-5).all()  # an NLL of counts is >= 0
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (mu, theta, logits))


def test_zinb_nll_gradients_match_finite_differences():
    # points on both sides of every branch: small and large counts and dispersions, x ~ mu
    x = torch.tensor([0.0, 1.0, 3.0, 20.0, 40.0, 500.0, 2.0], dtype=torch.float64)
    mu = torch.tensor([2.0, 0.3, 3.1, 20.5, 3.0, 480.0, 1e3], dtype=torch.float64)
    theta = torch.tensor([0.5, 30.0, 2.0, 16.0, 0.01, 1e3, 1e-3], dtype=torch.float64)
    logits = torch.tensor([0.3, -2.0, 1.0, 0.0, -5.0, 2.0, 0.5], dtype=torch.float64)
    args = [t.requires_grad_() for t in (mu, theta, logits)]
    assert torch.autograd.gradcheck(lambda *a: losses.zinb_nll(x, *a), args)
    assert torch.autograd.gradcheck(lambda *a: losses.nb_nll(x, *a), args[:2])


def test_zinb_is_normalised():
    # sum_x exp(-nll(x)) = 1: checks the zero-inflation mixture, not only log NB
    x = torch.arange(0, 4000, dtype=torch.float64)
    for mu, theta, logit in [(3.0, 0.5, 0.3), (50.0, 20.0, -2.0), (0.2, 1e-3, 1.5)]:
        p = torch.exp(
            -losses.zinb_nll(x, torch.tensor(mu), torch.tensor(theta), torch.tensor(logit))
        )
        assert abs(float(p.sum()) - 1.0) < 1e-9


def test_nb_nll_equals_scipy_and_zinb_without_inflation():
    x, mu, theta, _ = _extreme_inputs(seed=3)
    args = [torch.from_numpy(a) for a in (x, mu, theta)]
    nb = losses.nb_nll(*args)
    ref = -stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))
    assert _rel_err(nb.numpy(), ref).max() < 1e-6
    # pi -> 0: equal wherever the NB itself is far more likely than pi = sigmoid(-50)
    # (a zero with NB(0) < 1e-22 is rather explained by the zero inflation)
    zinb = losses.zinb_nll(*args, torch.full_like(args[0], -50.0))
    keep = torch.from_numpy((x > 0) | (ref < 30.0))
    assert keep.float().mean() > 0.9
    torch.testing.assert_close(zinb[keep], nb[keep], rtol=1e-12, atol=1e-12)
    zinb = losses.zinb_nll(*args, torch.full_like(args[0], -1e5))  # beats every NB(0) here
    torch.testing.assert_close(zinb, nb, rtol=1e-9, atol=1e-9)


def test_zinb_nll_broadcasts_and_clamps():
    x = torch.tensor([[0.0, 2.0, 5.0], [1.0, 0.0, 3.0]])  # (B, L)
    mu = torch.tensor([[1.0], [2.0]])  # (B, 1)
    theta = torch.tensor([0.5, 1.0, 2.0])  # (L,)
    out = losses.zinb_nll(x, mu, theta, torch.tensor(0.0))
    assert out.shape == (2, 3)
    ref = _ref_zinb_nll(x.double().numpy(), mu.double().numpy(), theta.double().numpy(), 0.0)
    assert _rel_err(out.numpy(), ref).max() < 1e-5
    # a zero mean or dispersion is clamped to eps instead of giving nan
    assert torch.isfinite(losses.nb_nll(x, torch.zeros(2, 3), torch.zeros(3))).all()


def test_mse_loss():
    x = torch.tensor([0.0, 1.0, 3.0, 7.0])
    pred = torch.tensor([0.5, 1.0, 1.0, 3.5])
    expected = torch.tensor([0.25, 0.0, 1.0, 0.25])  # log2(1 + x) = 0, 1, 2, 3
    torch.testing.assert_close(losses.mse_loss(x, pred), expected)
    assert losses.mse_loss(x.half(), pred.half()).dtype == torch.float32


# ------------------------------------------------------------------ hierarchical CE

LEAVES = 4
# coarse label 4 (code n_leaves + 0) = leaves {1, 2}; coarse label 5 = leaves {0, 1, 3}
LEAF_MATRIX = torch.tensor([[False, True, True, False], [True, True, False, True]])


def test_hierarchical_ce_leaf_labels_equal_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, LEAVES, generator=g) * 3
    labels = torch.randint(0, LEAVES, (16,), generator=g)
    out = losses.hierarchical_ce(logits, labels, LEAF_MATRIX, reduction="none")
    torch.testing.assert_close(out, F.cross_entropy(logits, labels, reduction="none"))
    torch.testing.assert_close(
        losses.hierarchical_ce(logits, labels, LEAF_MATRIX), F.cross_entropy(logits, labels)
    )
    torch.testing.assert_close(  # no coarse labels at all
        losses.hierarchical_ce(logits, labels), F.cross_entropy(logits, labels)
    )


def test_hierarchical_ce_coarse_label_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    # the coarse label over leaves {1, 2}: LSE(all logits) - LSE(2.0, 0.5)
    lse_all = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
    lse_group = math.log(math.exp(2.0) + math.exp(0.5))
    expected = lse_all - lse_group  # = 0.293769
    assert abs(expected - 0.293769) < 1e-6
    out = losses.hierarchical_ce(logits, torch.tensor([LEAVES + 0]), LEAF_MATRIX)
    assert abs(float(out) - expected) < 1e-6
    # equivalently: merge the group's logits into one entry and take the usual CE on it
    merged = torch.tensor([[1.0, lse_group, -1.0]])
    torch.testing.assert_close(out, F.cross_entropy(merged, torch.tensor([1])))


def test_hierarchical_ce_unknown_labels_are_ignored():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(6, LEAVES, generator=g) * 2).requires_grad_()
    labels = torch.tensor([2, -1, LEAVES + 1, -1, 0, LEAVES + 0])
    per_cell = losses.hierarchical_ce(logits, labels, LEAF_MATRIX, reduction="none")
    assert per_cell.shape == (6,)
    assert per_cell[1] == 0 and per_cell[3] == 0 and (per_cell[[0, 2, 4, 5]] > 0).all()
    mean = losses.hierarchical_ce(logits, labels, LEAF_MATRIX)
    torch.testing.assert_close(mean, per_cell[[0, 2, 4, 5]].mean())  # over known labels
    mean.backward()
    assert (logits.grad[[1, 3]] == 0).all() and (logits.grad[[0, 2, 4, 5]] != 0).any(dim=1).all()
    # the known rows give the same loss on their own
    alone = losses.hierarchical_ce(logits[[0, 2, 4, 5]], labels[[0, 2, 4, 5]], LEAF_MATRIX)
    torch.testing.assert_close(mean, alone)


def test_hierarchical_ce_all_unknown_is_zero_with_gradient():
    logits = torch.randn(3, LEAVES, requires_grad=True)
    out = losses.hierarchical_ce(logits, torch.full((3,), -1), LEAF_MATRIX)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert (logits.grad == 0).all()


def test_hierarchical_ce_float32_and_validation():
    logits = torch.tensor([[30.0, -30.0, 0.0, 1.0]], dtype=torch.bfloat16)
    out = losses.hierarchical_ce(logits, torch.tensor([1]), LEAF_MATRIX)
    assert out.dtype == torch.float32 and abs(out.item() - 60.0) < 1e-3
    # a coarse label without any leaf is ignored like an unknown one
    empty = torch.cat([LEAF_MATRIX, torch.zeros(1, LEAVES, dtype=torch.bool)])
    labels = torch.tensor([LEAVES + 2, 1])
    per_cell = losses.hierarchical_ce(logits.repeat(2, 1), labels, empty, reduction="none")
    assert per_cell[0] == 0 and abs(per_cell[1].item() - 60.0) < 1e-3
    with pytest.raises(ValueError):
        losses.hierarchical_ce(logits, torch.tensor([LEAVES + 2]), LEAF_MATRIX)
    with pytest.raises(ValueError):
        losses.hierarchical_ce(logits, torch.tensor([0, 1]), LEAF_MATRIX)


# ------------------------------------------------------------------ contrastive


def test_contrastive_loss_values():
    v = torch.tensor([1.0, 2.0, -0.5])
    w = torch.tensor([2.0, -1.0, 0.0])  # orthogonal to v
    assert losses.contrastive_loss(torch.stack([v, 3 * v, v])[None]).item() == pytest.approx(1.0)
    assert losses.contrastive_loss(torch.stack([v, w])[None]).item() == pytest.approx(
        0.0, abs=1e-7
    )
    assert losses.contrastive_loss(torch.stack([v, -2 * v])[None]).item() == pytest.approx(-1.0)
    # mean over cells of the mean over pairs u != u'
    batch = torch.stack([torch.stack([v, v]), torch.stack([v, -v])])  # (2, 2, 3)
    assert losses.contrastive_loss(batch).item() == pytest.approx(0.0, abs=1e-7)


def test_contrastive_loss_matches_explicit_pairs_and_pushes_apart():
    g = torch.Generator().manual_seed(0)
    embs = torch.randn(5, 4, 8, generator=g) + 1.0  # (B, E, d), similar embeddings
    expected = np.mean(
        [
            F.cosine_similarity(embs[b, u], embs[b, w], dim=0).item()
            for b in range(5)
            for u in range(4)
            for w in range(4)
            if u != w
        ]
    )
    embs.requires_grad_()
    loss = losses.contrastive_loss(embs)
    assert loss.item() == pytest.approx(expected, abs=1e-6) and loss.item() > 0.3
    loss.backward()
    assert torch.isfinite(embs.grad).all()
    stepped = embs.detach().clone()  # descent steps on the loss move the embeddings apart
    for _ in range(50):
        step = stepped.clone().requires_grad_()
        losses.contrastive_loss(step).backward()
        stepped = stepped - 20.0 * step.grad
    # the infimum for 4 embeddings is -1/3 (a regular simplex)
    assert losses.contrastive_loss(stepped) < -0.25


def test_contrastive_loss_single_embedding_is_zero():
    embs = torch.randn(4, 1, 8, requires_grad=True)
    out = losses.contrastive_loss(embs)
    assert out.item() == 0.0
    out.backward()
    assert (embs.grad == 0).all()


# ------------------------------------------------------------------ downsampling

R, FACTOR = 0.6, 0.55


@pytest.fixture(scope="module")
def retina_counts(retina_path):
    import anndata as ad

    return ad.read_h5ad(retina_path, backed="r")[:200].to_memory().X.toarray()


def test_expected_fraction_removed_matches_poisson_pmf_sum():
    rate = R * FACTOR
    values = np.array([1, 1, 2, 3, 7, 40, 250, 1000])
    kept = 0.0
    for v in values:
        k = np.arange(v + 1)
        kept += (1 - rate) * np.sum((v - k) * stats.poisson.pmf(k, v * rate))
    expected = 1 - kept / values.sum()
    got = losses.expected_fraction_removed(torch.from_numpy(values))
    assert got == pytest.approx(expected, abs=1e-12)
    # one count: removed unless kept by both parts, 1 - (1 - rf) exp(-rf)
    assert losses.expected_fraction_removed(torch.ones(1)) == pytest.approx(
        1 - (1 - rate) * math.exp(-rate), abs=1e-12
    )
    # large counts: the Poisson removes ~rf of the rest, so 1 - (1 - rf)^2 = 0.5511
    big = losses.expected_fraction_removed(torch.tensor([1e6]))
    assert big == pytest.approx(1 - (1 - rate) ** 2, abs=1e-3)
    assert losses.expected_fraction_removed(torch.zeros(3)) == 0.0
    assert losses.expected_fraction_removed(torch.from_numpy(values), r=0.0) == 0.0


def test_downsample_removes_the_expected_share_of_real_counts(retina_counts):
    nonzero = torch.from_numpy(retina_counts[retina_counts > 0])  # zeros stay zeros
    expected = losses.expected_fraction_removed(nonzero)
    g = torch.Generator().manual_seed(0)
    total = nonzero.double().sum().item()
    draws = [
        1 - losses.downsample(nonzero, generator=g).double().sum().item() / total for _ in range(5)
    ]
    assert np.mean(draws) == pytest.approx(expected, rel=0.02)
    # The paper's "60% of the counts dropped at r = 0.6" is approximate: the exact expected
    # share on these 200 cells is 0.5425 (0.5511 for large counts, less for small ones).
    assert expected == pytest.approx(0.5425, abs=5e-4)
    assert 0.5 < np.mean(draws) < 0.6


def test_downsample_output_is_valid_counts(retina_counts):
    x = torch.from_numpy(retina_counts[:20])  # (20, n_genes) dense float32 counts
    out = losses.downsample(x, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out >= 0).all() and (out <= x).all() and (out == out.round()).all()
    assert (out[x == 0] == 0).all() and out.sum() < x.sum()
    assert torch.equal(losses.downsample(x, r=0.0), x)  # r = 0 removes nothing
    ints = losses.downsample(x.long(), generator=torch.Generator().manual_seed(3))
    assert ints.dtype == torch.long and torch.equal(ints, out.long())


def test_downsample_is_reproducible_with_a_generator():
    x = torch.poisson(torch.full((64, 500), 4.0))
    a = losses.downsample(x, generator=torch.Generator().manual_seed(7))
    b = losses.downsample(x, generator=torch.Generator().manual_seed(7))
    c = losses.downsample(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError):
        losses.downsample(x, r=2.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_downsample_and_losses_on_cuda():
    x = torch.poisson(torch.full((64, 2000), 4.0, device="cuda"))
    g = torch.Generator(device="cuda").manual_seed(0)
    out = losses.downsample(x, generator=g)
    assert out.device == x.device and (out <= x).all()
    frac = 1 - out.sum().item() / x.sum().item()
    assert frac == pytest.approx(losses.expected_fraction_removed(x), rel=0.02)
    xs, mu, theta, logits = _extreme_inputs(seed=4)
    ref = _ref_zinb_nll(xs, mu, theta, logits)
    cuda = [torch.from_numpy(a).float().cuda() for a in (xs, mu, theta, logits)]
    assert _rel_err(losses.zinb_nll(*cuda).cpu().numpy(), ref).max() < 1e-4
