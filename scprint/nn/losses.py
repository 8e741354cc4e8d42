"""Losses of scPRINT pretraining and the count downsampling of the denoising task.

All functions are pure torch and work on any device. The probabilistic losses are computed
in float32 at least: half-precision inputs (fp16, bf16) are upcast, float64 is kept.

- :func:`zinb_nll`, :func:`nb_nll`, :func:`mse_loss`: element-wise reconstruction losses of
  the expression decoder (denoising and bottleneck tasks).
- :func:`hierarchical_ce`: the classification loss over ontology leaves, accepting coarse
  labels and unknown labels.
- :func:`contrastive_loss`: pushes the deconvolved cell embeddings of a cell apart.
- :func:`downsample`: the zero-inflated Poisson downsampling used as noise, and
  :func:`expected_fraction_removed`, its exact expected effect on the total count.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "contrastive_loss",
    "downsample",
    "expected_fraction_removed",
    "hierarchical_ce",
    "mse_loss",
    "nb_nll",
    "zinb_nll",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Coefficients of the asymptotic series of the Stirling error (see _stirlerr).
_S0, _S1, _S2, _S3, _S4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
_STIRLING_SWITCH = 15.0  # above it the 5-term series is off by < 3e-16 (next term 691/360360/z^11)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when one of ``tensors`` is float64, else float32 (half precision upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _stirlerr(z: Tensor) -> Tensor:
    """Stirling's error ``lgamma(z + 1) - ((z + 0.5) log z - z + log sqrt(2 pi))``, z > 0.

    For large z the asymptotic series avoids the cancellation between terms of order
    ``z log z``; for small z the direct formula has no harmful cancellation.
    """
    big = z > _STIRLING_SWITCH
    zs = torch.where(big, _STIRLING_SWITCH, z)  # keeps the unused branch finite
    direct = torch.lgamma(zs + 1.0) - (zs + 0.5) * torch.log(zs) + zs - _HALF_LOG_2PI
    zb = torch.where(big, z, _STIRLING_SWITCH)
    zz = zb * zb
    series = (_S0 - (_S1 - (_S2 - (_S3 - _S4 / zz) / zz) / zz) / zz) / zb
    return torch.where(big, series, direct)


def _bd0(a: Tensor, m: Tensor, d: Tensor) -> Tensor:
    """Deviance term ``a log(a / m) + m - a`` (>= 0), given ``d = a - m`` computed accurately.

    Loader's saddle-point ``bd0``: when a and m are close, the series
    ``d v + 2 a sum_{j >= 1} v^(2j+1) / (2j + 1)`` in ``v = d / (a + m)`` replaces the
    direct formula and its cancellation. There ``|v| < 0.1``: the series truncated after
    n terms is off by less than ``0.1^(2n + 1) / (2n + 3)`` relative, so 3 terms reach
    float32 precision (2e-8) and 8 terms float64 precision (1e-18).
    """
    near = d.abs() < 0.1 * (a + m)
    v = d / (a + m)  # |v| < 1 everywhere as a, m > 0
    v2 = v * v
    n_terms = 8 if a.dtype == torch.float64 else 3
    poly = torch.full_like(v2, 1.0 / (2 * n_terms + 1))
    for j in range(n_terms - 1, 0, -1):  # Horner: sum_{j>=1} v2^j / (2j + 1)
        poly = poly * v2 + 1.0 / (2 * j + 1)
    series = v * (d + 2.0 * a * v2 * poly)
    direct = a * torch.log(a / m) - d
    return torch.where(near, series, direct)


def _nb_log_prob(x: Tensor, mu: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """``log NB(x | mu, theta)`` for x > 0 and ``log NB(0 | mu, theta)``, both shaped like x.

    The positive case uses the saddle-point form of the NB pmf (as R's ``dnbinom_mu``):
    with ``n = x + theta`` and ``m = theta + mu``,

    ``log NB(x) = s(n) - s(theta) - s(x) - bd0(x, n mu / m) - bd0(theta, n theta / m)
    + 0.5 log(theta / (2 pi x n))``

    where s is Stirling's error. It equals the usual
    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + theta log(theta / m)
    + x log(mu / m)`` exactly, but has no cancellation between terms of order ``x log x``,
    so it stays accurate in float32 for large counts and dispersions. Entries with x = 0
    of the first output are meaningless (but finite).
    """
    pos = x > 0
    xs = torch.where(pos, x, torch.ones_like(x))  # (...); finite, differentiable everywhere
    n = xs + theta
    m = theta + mu
    delta = theta * (xs - mu) / m  # = x - n mu / m = n theta / m - theta, exactly
    log_pos = (
        _stirlerr(n)
        - _stirlerr(theta)
        - _stirlerr(xs)
        - _bd0(xs, n * (mu / m), delta)
        - _bd0(theta, n * (theta / m), -delta)
        + 0.5 * (torch.log(theta) - torch.log(xs) - torch.log(n))
        - _HALF_LOG_2PI
    )
    log_zero = -theta * torch.log1p(mu / theta)  # theta log(theta / (theta + mu))
    return log_pos, log_zero


def _prepare(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` cast to their common compute dtype (see :func:`_compute_dtype`)."""
    dtype = _compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def zinb_nll(x: Tensor, mu: Tensor, theta: Tensor, pi_logits: Tensor, eps: float = 1e-8) -> Tensor:
    """Element-wise negative log-likelihood of counts under a zero-inflated negative binomial.

    ``ZINB(x | mu, theta, pi) = pi delta_0(x) + (1 - pi) NB(x | mu, theta)`` in the scVI
    parameterisation, with ``pi = sigmoid(pi_logits)`` and

    ``NB(x | mu, theta) = Gamma(x + theta) / (x! Gamma(theta))
    (mu / (theta + mu))^x (theta / (theta + mu))^theta``.

    Writing ``l = pi_logits`` and ``log NB(0) = -theta log(1 + mu / theta)``:

    - x = 0: ``-log(pi + (1 - pi) NB(0)) = softplus(-l) - softplus(log NB(0) - l)``;
    - x > 0: ``-log((1 - pi) NB(x)) = softplus(l) - log NB(x)``.

    ``log NB(x)`` is evaluated in a saddle-point form free of large cancellations (see
    :func:`_nb_log_prob`), so the result stays finite and accurate in float32 for mu and
    theta in [1e-4, 1e4] and beyond, counts up to 1e5 and beyond, and any finite logits.

    Parameters
    ----------
    x
        Observed counts (non-negative; any shape).
    mu
        Mean of the negative binomial (> 0), broadcastable with x.
    theta
        Inverse dispersion (> 0), broadcastable with x.
    pi_logits
        Logit of the zero-inflation probability, broadcastable with x.
    eps
        mu and theta are clamped to at least eps, guarding against zeros.

    Returns
    -------
    Tensor
        The negative log-likelihood, broadcast shape of the inputs, no reduction; float32,
        or float64 when an input is float64.
    """
    x, mu, theta, pi_logits = _prepare(x, mu, theta, pi_logits)
    mu = mu.clamp_min(eps)
    theta = theta.clamp_min(eps)
    log_pos, log_zero = _nb_log_prob(x, mu, theta)
    nll_zero = F.softplus(-pi_logits) - F.softplus(log_zero - pi_logits)
    nll_pos = F.softplus(pi_logits) - log_pos
    return torch.where(x > 0, nll_pos, nll_zero)


def nb_nll(x: Tensor, mu: Tensor, theta: Tensor, eps: float = 1e-8) -> Tensor:
    """Element-wise negative log-likelihood of counts under a negative binomial.

    The limit of :func:`zinb_nll` with no zero inflation (``pi_logits -> -inf``).

    Parameters
    ----------
    x
        Observed counts (non-negative; any shape).
    mu
        Mean (> 0), broadcastable with x.
    theta
        Inverse dispersion (> 0), broadcastable with x.
    eps
        mu and theta are clamped to at least eps, guarding against zeros.

    Returns
    -------
    Tensor
        ``-log NB(x | mu, theta)``, broadcast shape of the inputs, no reduction; float32, or
        float64 when an input is float64.
    """
    x, mu, theta = _prepare(x, mu, theta)
    mu = mu.clamp_min(eps)
    theta = theta.clamp_min(eps)
    log_pos, log_zero = _nb_log_prob(x, mu, theta)
    return -torch.where(x > 0, log_pos, log_zero)


def mse_loss(x: Tensor, pred: Tensor) -> Tensor:
    """Element-wise squared error of a predicted log-transformed count.

    The "MSE" decoder of scPRINT outputs a single value per gene, read as the
    log-transformed count; the target is ``log2(1 + x)`` of the raw count x, so the loss is
    ``(log2(1 + x) - pred)^2`` (no reduction).

    Parameters
    ----------
    x
        Raw counts (non-negative; any shape).
    pred
        Predicted ``log2(1 + count)``, broadcastable with x.

    Returns
    -------
    Tensor
        The squared error, broadcast shape of the inputs; float32 at least.
    """
    x, pred = _prepare(x, pred)
    return (torch.log2(1.0 + x) - pred).square()


def hierarchical_ce(
    logits: Tensor,
    labels: Tensor,
    leaf_matrix: Tensor | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Cross-entropy over the leaves of an ontology, accepting coarse and unknown labels.

    For a leaf label this is the ordinary softmax cross-entropy. For a coarse label, the
    logits of all its leaves are merged into one entry by log-sum-exp and the
    cross-entropy is taken on that merged entry, which is
    ``logsumexp(logits) - logsumexp(logits[leaves of the label])``: the negative log of
    the total probability given to the label's leaves. The model thus learns to put the
    mass anywhere among the leaves of a coarse label, and fine-grained predictions are not
    penalised by coarse annotations. (The paper writes ``CE(sigma(pred_labels), ...)``;
    sigma is read as the softmax inside the cross-entropy.)

    Parameters
    ----------
    logits
        Scores over the leaf labels, (B, n_leaves).
    labels
        Integer codes, (B,): ``0 .. n_leaves - 1`` a leaf label; ``n_leaves + j`` the coarse
        label j, whose leaves are ``leaf_matrix[j]``; any negative value (e.g. -1) unknown.
        Unknown labels, and coarse labels without any leaf, give no loss and no gradient.
    leaf_matrix
        Boolean (n_coarse, n_leaves): the leaves under each coarse label; None when there
        are no coarse labels.
    reduction
        ``"mean"`` over the known labels (0, still differentiable, when none is known),
        ``"sum"``, or ``"none"`` for the per-cell loss (B,), 0 where ignored.

    Returns
    -------
    Tensor
        A scalar, or (B,) with ``reduction="none"``; float32 at least.

    Raises
    ------
    ValueError
        When a code is at least ``n_leaves + n_coarse`` or shapes disagree.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (B, n_leaves) and labels (B,); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    n_leaves = logits.shape[1]
    if leaf_matrix is None:
        leaf_matrix = torch.zeros(0, n_leaves, dtype=torch.bool, device=logits.device)
    if leaf_matrix.dim() != 2 or leaf_matrix.shape[1] != n_leaves:
        raise ValueError(
            f"leaf_matrix must be (n_coarse, {n_leaves}); got {tuple(leaf_matrix.shape)}."
        )
    n_coarse = leaf_matrix.shape[0]
    labels = labels.long()
    if labels.numel() and int(labels.max()) >= n_leaves + n_coarse:
        raise ValueError(
            f"label codes must be < n_leaves + n_coarse = {n_leaves + n_coarse}; "
            f"got {int(labels.max())}."
        )
    logits = logits.to(_compute_dtype(logits))  # (B, n_leaves)
    is_leaf = (labels >= 0) & (labels < n_leaves)  # (B,)
    is_coarse = labels >= n_leaves  # (B,)
    leaf_hot = F.one_hot(labels.clamp(0, n_leaves - 1), n_leaves).bool()  # (B, n_leaves)
    target = leaf_hot & is_leaf[:, None]  # (B, n_leaves)
    if n_coarse:
        rows = leaf_matrix.to(device=logits.device, dtype=torch.bool)[
            (labels - n_leaves).clamp(0, n_coarse - 1)
        ]  # (B, n_leaves)
        target = target | (rows & is_coarse[:, None])
    known = target.any(dim=1)  # (B,)
    # Ignored rows use the full set: their loss is exactly 0 and the gradient stays finite.
    target = target | ~known[:, None]
    lse_all = torch.logsumexp(logits, dim=1)  # (B,)
    lse_target = torch.logsumexp(logits.masked_fill(~target, float("-inf")), dim=1)  # (B,)
    loss = (lse_all - lse_target) * known  # (B,)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / known.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}.")


def contrastive_loss(embs: Tensor) -> Tensor:
    """Mean cosine similarity between the deconvolved embeddings of the same cell.

    The paper states the intent "push the embeddings to be as different from one another
    as possible with a contrastive loss", but prints the mean of ``1 - cos`` over pairs,
    which minimised would make the embeddings identical. This implements the stated
    intent: the mean, over cells and over ordered pairs ``u != u'`` of a cell's E
    embeddings, of ``cos(emb_u, emb_u')``. Minimising it pushes a cell's embeddings
    apart; it is 1 for identical embeddings, 0 for orthogonal ones and -1 for two
    opposite ones. Zero vectors count as orthogonal to everything.

    Parameters
    ----------
    embs
        The E cell embeddings of each cell (default embedding and one per class),
        (B, E, d).

    Returns
    -------
    Tensor
        A scalar (float32 at least); 0 (still differentiable) when E < 2.
    """
    if embs.dim() != 3:
        raise ValueError(f"embs must be (B, E, d); got {tuple(embs.shape)}.")
    embs = embs.to(_compute_dtype(embs))
    n_emb = embs.shape[1]
    if n_emb < 2 or embs.shape[0] == 0:
        return embs.sum() * 0.0
    unit = F.normalize(embs, dim=-1)  # (B, E, d)
    cos = unit @ unit.transpose(1, 2)  # (B, E, E)
    off = ~torch.eye(n_emb, dtype=torch.bool, device=embs.device)  # (E, E)
    return cos[:, off].mean()


def _rate(r: float, factor: float) -> float:
    rate = r * factor
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"r * factor must lie in [0, 1]; got {rate}.")
    return rate


def downsample(
    x: Tensor, r: float = 0.6, factor: float = 0.55, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-inflated Poisson downsampling of counts (the noise of the denoising task).

    ``max((x - p) * mask, 0)`` with, element-wise, ``p ~ Poisson(x r factor)`` and
    ``mask = (u >= r factor)``, ``u ~ Uniform(0, 1)``: about half of the removed counts come
    from Poisson thinning of every gene, the other half from complete dropouts of genes.
    The exact expected share removed is :func:`expected_fraction_removed` (about 0.55 of
    the counts of highly expressed genes at r = 0.6, less for genes with few counts).

    Parameters
    ----------
    x
        Counts, any shape, on any device (integer or floating).
    r
        The dropout amount (0.6 in pretraining); 0 returns x unchanged.
    factor
        The tuning factor scaling r (0.55 in the paper).
    generator
        Random generator on x's device, for reproducible draws.

    Returns
    -------
    Tensor
        The downsampled counts, same shape, dtype and device as x; ``0 <= out <= x``.
    """
    rate = _rate(r, factor)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(dtype)
    p = torch.poisson(xf * rate, generator=generator)  # (...)
    u = torch.rand(xf.shape, generator=generator, dtype=dtype, device=x.device)  # (...)
    out = ((xf - p) * (u >= rate)).clamp_min(0.0)
    return out.to(x.dtype)


def expected_fraction_removed(x: Tensor, r: float = 0.6, factor: float = 0.55) -> float:
    """Exact expected share of the total count of x that :func:`downsample` removes.

    For one entry with count x, ``lam = x r f`` and ``P ~ Poisson(lam)``, the expected kept
    count is ``(1 - r f) E[max(x - P, 0)]``, and with F the Poisson CDF and
    ``k = floor(x)``,

    ``E[max(x - P, 0)] = sum_{j <= k} (x - j) P(P = j) = x F(k) - lam F(k - 1)``,

    computed exactly (float64) through the regularised upper incomplete gamma function,
    ``F(k) = Q(k + 1, lam)``. For counts much larger than 1 the share tends to
    ``1 - (1 - r f)^2`` (0.5511 at r = 0.6, f = 0.55); it is smaller for small counts.

    Parameters
    ----------
    x
        Non-negative counts, any shape.
    r
        The dropout amount.
    factor
        The tuning factor scaling r.

    Returns
    -------
    float
        ``1 - E[sum(downsample(x))] / sum(x)``; 0 when x sums to 0.
    """
    rate = _rate(r, factor)
    x = torch.as_tensor(x).detach().to(torch.float64).flatten()  # (N,)
    x = x[x > 0]
    total = float(x.sum())
    if total == 0.0:
        return 0.0
    lam = x * rate
    k = torch.floor(x)
    cdf_k = torch.special.gammaincc(k + 1.0, lam)  # P(P <= k)
    cdf_km1 = torch.where(
        k >= 1.0, torch.special.gammaincc(k.clamp_min(1.0), lam), torch.zeros_like(lam)
    )  # P(P <= k - 1)
    kept = (1.0 - rate) * (x * cdf_k - lam * cdf_km1)  # (N,)
    return 1.0 - float(kept.sum()) / total
