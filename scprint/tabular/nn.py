"""Tabular classifiers in plain torch: TabNet (sparsemax or entmax-1.5 masks), MLP, linear.

Written from the TabNet paper (Arik & Pfister 2019, arXiv:1908.07442): a feature
transformer of shared and step-specific GLU blocks (FC, ghost batch norm, GLU, residual
sums scaled by sqrt(0.5)); an attentive transformer (FC, ghost batch norm, multiplied by
the prior scales, then sparsemax / entmax-1.5) producing a feature mask per decision step;
the decision output is the sum over steps of ReLU(d_i); the sparsity loss is the mean
entropy of the masks. scTab (Fischer et al. 2024) uses entmax-1.5 and one decision step.

Every model takes dense float input ``x`` (B, F) - the data layer densifies one batch of
CSR rows at a time - and returns a dict with ``logits`` (B, C) and ``sparsity_loss`` (a
scalar, zero for the MLP and the linear model); TabNet adds ``masks`` (n_steps, B, F).
No layer holds an F x F matrix: memory is linear in the number of genes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sparsemax",
    "entmax15",
    "GhostBatchNorm",
    "TabNetConfig",
    "TabNet",
    "MLP",
    "Linear",
    "build_model",
    "input_x_gradient",
]

# --------------------------------------------------------------------------- sparse maps


def _last(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.transpose(dim, -1) if dim not in (-1, x.dim() - 1) else x


class _Sparsemax(torch.autograd.Function):
    """Euclidean projection onto the simplex (Martins & Astudillo 2016), last dimension."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        zs, _ = torch.sort(z, dim=-1, descending=True)  # (..., F)
        cumsum = zs.cumsum(-1) - 1.0
        k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
        support = (k * zs > cumsum).sum(-1, keepdim=True)  # (..., 1) size of the support
        tau = cumsum.gather(-1, support - 1) / support.to(z.dtype)
        p = torch.clamp(z - tau, min=0.0)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        s = (p > 0).to(g.dtype)
        mean = (g * s).sum(-1, keepdim=True) / s.sum(-1, keepdim=True)
        return s * (g - mean)


class _Entmax15(torch.autograd.Function):
    """1.5-entmax (Peters et al. 2019): p = [z/2 - tau]_+^2, exact sort-based tau."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z / 2.0
        z = z - z.max(-1, keepdim=True).values  # tau is shift-equivariant
        zs, _ = torch.sort(z, dim=-1, descending=True)  # (..., F)
        rho = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
        mean = zs.cumsum(-1) / rho
        mean_sq = (zs**2).cumsum(-1) / rho
        ss = rho * (mean_sq - mean**2)
        delta = torch.clamp((1.0 - ss) / rho, min=0.0)
        tau = mean - torch.sqrt(delta)  # candidate threshold for each support size
        support = (tau <= zs).sum(-1, keepdim=True)  # (..., 1)
        tau_star = tau.gather(-1, support - 1)
        p = torch.clamp(z - tau_star, min=0.0) ** 2
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        r = p.sqrt()  # (..., F) derivative of p wrt z is r (on the support), z was halved
        gr = g * r
        q = gr.sum(-1, keepdim=True) / r.sum(-1, keepdim=True)
        return gr - q * r


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax of ``x`` along ``dim``: non-negative, sums to 1, often exactly sparse."""
    return _last(_Sparsemax.apply(_last(x, dim).contiguous()), dim)


def entmax15(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.5-entmax of ``x`` along ``dim`` (between softmax and sparsemax in sparsity)."""
    return _last(_Entmax15.apply(_last(x, dim).contiguous()), dim)


# --------------------------------------------------------------------------- blocks


class GhostBatchNorm(nn.Module):
    """Batch norm over virtual batches of ``virtual_batch_size`` rows (Hoffer et al. 2017).

    In evaluation mode it is a plain batch norm on the running statistics.
    """

    def __init__(self, dim: int, virtual_batch_size: int = 128, momentum: float = 0.02):
        super().__init__()
        self.virtual_batch_size = int(virtual_batch_size)
        self.bn = nn.BatchNorm1d(dim, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        if not self.training or x.shape[0] <= self.virtual_batch_size:
            return self.bn(x)
        n_chunks = math.ceil(x.shape[0] / self.virtual_batch_size)
        return torch.cat([self.bn(c) for c in x.chunk(n_chunks, dim=0)], dim=0)


class _GLUBlock(nn.Module):
    """FC (maybe shared) -> ghost BN -> GLU, mapping (B, D_in) to (B, D_out)."""

    def __init__(self, fc: nn.Linear, d_out: int, vbs: int, momentum: float):
        super().__init__()
        self.fc = fc  # (D_in -> 2 D_out), possibly shared with other steps
        self.bn = GhostBatchNorm(2 * d_out, vbs, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.bn(self.fc(x)), dim=-1)  # (B, D_out)


class _FeatureTransformer(nn.Module):
    """Shared GLU blocks then step-specific GLU blocks, residuals scaled by sqrt(0.5)."""

    def __init__(
        self,
        shared: nn.ModuleList,
        n_in: int,
        d_out: int,
        n_independent: int,
        vbs: int,
        momentum: float,
    ):
        super().__init__()
        blocks = [_GLUBlock(fc, d_out, vbs, momentum) for fc in shared]
        for k in range(n_independent):
            d_in = n_in if (k == 0 and len(shared) == 0) else d_out
            blocks.append(_GLUBlock(nn.Linear(d_in, 2 * d_out, bias=False), d_out, vbs, momentum))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, n_d + n_a)
        scale = math.sqrt(0.5)
        h = self.blocks[0](x)  # the first block changes the width: no residual
        for block in self.blocks[1:]:
            h = (h + block(h)) * scale
        return h


class _AttentiveTransformer(nn.Module):
    """FC + ghost BN from the attention features to one logit per input feature."""

    def __init__(self, n_a: int, n_features: int, vbs: int, momentum: float, mask: str):
        super().__init__()
        self.fc = nn.Linear(n_a, n_features, bias=False)
        self.bn = GhostBatchNorm(n_features, vbs, momentum)
        self.normalize = sparsemax if mask == "sparsemax" else entmax15

    def forward(self, a: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.bn(self.fc(a)) * prior, dim=-1)  # (B, n_a) -> (B, F)


# --------------------------------------------------------------------------- TabNet


@dataclass
class TabNetConfig:
    """TabNet hyperparameters (names as in the paper and pytorch-tabnet).

    Presets: :meth:`sims` (TabNet's defaults with sparsemax, as SIMS uses them) and
    :meth:`sctab` (scTab's table: entmax-1.5, one step, n_d 128, n_a 64, n_shared 3,
    n_independent 5, virtual batch 256, lambda_sparse 1e-5).
    """

    n_d: int = 8
    n_a: int = 8
    n_steps: int = 3
    gamma: float = 1.3
    n_shared: int = 2
    n_independent: int = 2
    virtual_batch_size: int = 128
    momentum: float = 0.02
    mask: Literal["sparsemax", "entmax15"] = "sparsemax"
    epsilon: float = 1e-15
    lambda_sparse: float = 1e-3

    def __post_init__(self):
        if self.mask not in ("sparsemax", "entmax15"):
            raise ValueError(f"mask must be 'sparsemax' or 'entmax15', not {self.mask!r}")
        if min(self.n_d, self.n_a, self.n_steps, self.virtual_batch_size) < 1:
            raise ValueError("n_d, n_a, n_steps and virtual_batch_size must be >= 1")
        if self.n_shared + self.n_independent < 1:
            raise ValueError("n_shared + n_independent must be >= 1")
        if self.gamma < 1.0:
            raise ValueError(f"gamma (relaxation) must be >= 1, not {self.gamma}")

    @classmethod
    def sims(cls) -> TabNetConfig:
        """SIMS: TabNet with sparsemax and TabNet's default sizes (the seeds name no others)."""
        return cls()

    @classmethod
    def sctab(cls) -> TabNetConfig:
        """scTab's hyperparameter table."""
        return cls(
            n_d=128,
            n_a=64,
            n_steps=1,
            n_shared=3,
            n_independent=5,
            virtual_batch_size=256,
            mask="entmax15",
            lambda_sparse=1e-5,
        )

    def model_kwargs(self) -> dict:
        d = asdict(self)
        d.pop("lambda_sparse")
        return d


class TabNet(nn.Module):
    """TabNet classifier; see the module docstring."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        n_d: int = 8,
        n_a: int = 8,
        n_steps: int = 3,
        gamma: float = 1.3,
        n_shared: int = 2,
        n_independent: int = 2,
        virtual_batch_size: int = 128,
        momentum: float = 0.02,
        mask: Literal["sparsemax", "entmax15"] = "sparsemax",
        epsilon: float = 1e-15,
    ):
        super().__init__()
        TabNetConfig(
            n_d,
            n_a,
            n_steps,
            gamma,
            n_shared,
            n_independent,
            virtual_batch_size,
            momentum,
            mask,
            epsilon,
        )  # validates
        self.n_d, self.n_a, self.n_steps = n_d, n_a, n_steps
        self.gamma, self.epsilon = gamma, epsilon
        width = n_d + n_a
        self.input_bn = nn.BatchNorm1d(n_features, momentum=momentum)
        shared = nn.ModuleList()
        for k in range(n_shared):
            shared.append(nn.Linear(n_features if k == 0 else width, 2 * width, bias=False))
        vbs, mom = virtual_batch_size, momentum

        def transformer() -> _FeatureTransformer:
            return _FeatureTransformer(shared, n_features, width, n_independent, vbs, mom)

        self.initial = transformer()  # step 0: only produces the first attention features
        self.steps = nn.ModuleList([transformer() for _ in range(n_steps)])
        self.attention = nn.ModuleList(
            [_AttentiveTransformer(n_a, n_features, vbs, mom, mask) for _ in range(n_steps)]
        )
        self.head = nn.Linear(n_d, n_classes)

    def _encode(self, x: torch.Tensor):
        x = self.input_bn(x)  # (B, F)
        prior = torch.ones_like(x)  # (B, F)
        a = self.initial(x)[:, self.n_d :]  # (B, n_a)
        out = x.new_zeros(x.shape[0], self.n_d)  # (B, n_d)
        masks, contributions = [], []
        for attention, transformer in zip(self.attention, self.steps, strict=True):
            m = attention(a, prior)  # (B, F), rows on the simplex
            prior = prior * (self.gamma - m)
            h = transformer(m * x)  # (B, n_d + n_a)
            d = F.relu(h[:, : self.n_d])  # (B, n_d)
            out = out + d
            a = h[:, self.n_d :]
            masks.append(m)
            contributions.append(d.sum(-1))  # (B,) eta_i of the paper
        return out, torch.stack(masks), torch.stack(contributions)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, masks, _ = self._encode(x)  # masks (n_steps, B, F)
        entropy = -(masks * torch.log(masks + self.epsilon)).sum(-1)  # (n_steps, B)
        return {"logits": self.head(out), "masks": masks, "sparsity_loss": entropy.mean()}

    @torch.no_grad()
    def explain(self, x: torch.Tensor) -> torch.Tensor:
        """Aggregate feature importance (B, F): sum_i eta_i M_i, each row normalised to 1.

        ``eta_i = sum_c ReLU(d_i[c])`` is step i's contribution to the decision (paper,
        section "Interpretability"). Rows of cells no step contributed to are zero.
        """
        _, masks, eta = self._encode(x)  # (n_steps, B, F), (n_steps, B)
        agg = (masks * eta.unsqueeze(-1)).sum(0)  # (B, F)
        total = agg.sum(-1, keepdim=True)
        return torch.where(total > 0, agg / total.clamp_min(1e-30), torch.zeros_like(agg))


# --------------------------------------------------------------------------- MLP, linear


class MLP(nn.Module):
    """scTab's MLP: ``n_layers`` hidden layers of ``hidden`` units (Linear, LayerNorm, ReLU,
    dropout), then a linear head."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden: int = 128,
        n_layers: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        d_in = n_features
        for _ in range(n_layers):
            layers += [
                nn.Linear(d_in, hidden),
                nn.LayerNorm(hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            d_in = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.body(x)), "sparsity_loss": x.new_zeros(())}

    def explain(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Positive input x gradient of the target (default: predicted) class logit, (B, F)."""
        return input_x_gradient(self, x, target)


class Linear(nn.Module):
    """One weight matrix and bias (scTab's linear model; multinomial logistic regression)."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x), "sparsity_loss": x.new_zeros(())}

    def explain(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """max(x * W[target], 0) (B, F): the positive input x gradient, exact for a linear
        model."""
        return input_x_gradient(self, x, target)


def input_x_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None):
    """max(x * d logit_target / dx, 0) per cell (B, F): each gene's evidence *for* the
    target class (default: the predicted class). Genes that argue against the class get 0
    rather than a large absolute value, so that a highly expressed gene with a negative
    weight does not rank among the genes explaining the class."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)["logits"]  # (B, C)
        if target is None:
            target = logits.argmax(-1)
        picked = logits.gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return (grad * x).clamp_min(0).detach()


MODELS = {"tabnet": TabNet, "mlp": MLP, "linear": Linear}


def build_model(name: str, n_features: int, n_classes: int, **kwargs) -> nn.Module:
    """The model class named ``name`` (``tabnet``, ``mlp``, ``linear``) built with ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](n_features, n_classes, **kwargs)
