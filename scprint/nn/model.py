"""The scPRINT model in plain torch (paper, Methods: Expression encoder, Model,
Expression decoder, Class decoder).

A cell is a set of gene tokens, each the sum of a gene embedding, an embedding of the
gene's genomic location and an embedding of its expression; special tokens are
prepended: the cell's total depth, a default cell placeholder and one placeholder per
predicted class. A bidirectional pre-norm transformer fills the placeholders with cell
embeddings, and decoders turn gene tokens into distribution parameters and class tokens
into label logits::

    tokens = [depth, cell, class_1 .. class_K, gene_1 .. gene_L]      # (B, S, d), S = 2+K+L
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

__all__ = ["ScPrint", "sinusoidal_encoding", "flash_attn_available", "NORMALIZED_TOTAL"]

NORMALIZED_TOTAL = 10_000.0
"""The total a sequence's counts are scaled to when ``ModelConfig.normalize_input``."""


def flash_attn_available() -> bool:
    """Whether the ``flash-attn`` package is importable (it needs CUDA)."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def sinusoidal_encoding(positions: Tensor, dim: int) -> Tensor:
    """Vaswani et al.'s positional encoding of integer positions: (...,) -> (..., dim)."""
    half = dim // 2
    freq = torch.exp(
        -math.log(10_000.0)
        * torch.arange(half, device=positions.device, dtype=torch.float32)
        / half
    )
    angles = positions.to(torch.float32).unsqueeze(-1) * freq  # (..., half)
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        enc = F.pad(enc, (0, 1))
    return enc


class ValueEncoder(nn.Module):
    """MLP on log2(1 + x): two layers of Dropout(ReLU(LayerNorm(Linear)))."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, d),
            nn.LayerNorm(d),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d, d),
            nn.LayerNorm(d),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:  # (...,) -> (..., d)
        return self.net(torch.log2(1 + x.clamp_min(0)).unsqueeze(-1))


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (bidirectional), one set of weights for
    every backend: flash-attn, PyTorch SDPA, or an explicit softmax(QKᵀ/√d)V."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.backend = cfg.attention

    def _backend(self, x: Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and flash_attn_available():
            return "flash"
        return "sdpa"

    def forward(self, x: Tensor, keep_qk: bool = False) -> tuple[Tensor, tuple | None]:
        B, S, d = x.shape
        qkv = self.qkv(x).view(B, S, 3, self.n_heads, self.head_dim)  # (B, S, 3, H, hd)
        backend = self._backend(x)
        qk = None
        if backend == "flash":
            from flash_attn import flash_attn_qkvpacked_func

            y = flash_attn_qkvpacked_func(qkv, causal=False)  # (B, S, H, hd)
            y = y.reshape(B, S, d)
            if keep_qk:
                qk = (qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2))
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, S, hd)
            if backend == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v)
            elif backend == "explicit":
                att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, S, S)
                y = att.softmax(dim=-1) @ v
            else:
                raise ValueError(f"Unknown attention backend {backend!r}.")
            y = y.transpose(1, 2).reshape(B, S, d)  # (B, S, d)
            if keep_qk:
                qk = (q, k)
        return self.out(y), qk


class Block(nn.Module):
    """Pre-norm transformer block with a GELU MLP and stochastic depth."""

    def __init__(self, cfg: ModelConfig, drop_path: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.drop_path = drop_path

    def _residual(self, branch: Tensor) -> Tensor:
        branch = self.dropout(branch)
        if self.training and self.drop_path > 0:
            keep = torch.rand(branch.shape[0], 1, 1, device=branch.device) >= self.drop_path
            branch = branch * keep.to(branch.dtype) / (1 - self.drop_path)
        return branch

    def forward(self, x: Tensor, keep_qk: bool = False) -> tuple[Tensor, tuple | None]:
        a, qk = self.attn(self.ln1(x), keep_qk)
        x = x + self._residual(a)
        x = x + self._residual(self.mlp(self.ln2(x)))
        return x, qk


class ExpressionDecoder(nn.Module):
    """MLP [d, d, n_out] from gene tokens to distribution parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.decoder
        n_out = {"zinb": 3, "nb": 2, "mse": 1}[cfg.decoder]
        self.net = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model), nn.LayerNorm(cfg.d_model), nn.ReLU(),
            nn.Linear(cfg.d_model, n_out),
        )  # fmt: skip

    def forward(self, h: Tensor, depth: Tensor) -> dict[str, Tensor]:
        out = self.net(h).float()  # (B, L, n_out); the parameters are kept in fp32
        if self.kind == "mse":
            return {"pred": out[..., 0]}
        # mu is predicted relative to the cell's mean count per token, so that it scales
        # with the requested depth from the start of training.
        offset = torch.log1p(depth.float()).unsqueeze(-1) - math.log(h.shape[1])  # (B, 1)
        params = {
            "mu": torch.exp((out[..., 0] + offset).clamp(-20.0, 20.0)),
            "theta": torch.exp(out[..., 1].clamp(-12.0, 12.0)),
        }
        if self.kind == "zinb":
            params["pi_logits"] = out[..., 2]
        return params


class ScPrint(nn.Module):
    """The scPRINT model.

    Parameters
    ----------
    cfg
        The architecture.
    gene_embeddings
        Pretrained gene embeddings (n_genes, gene_embedding_dim), e.g. ESM2 means;
        a learned table when None.
    gene_locations
        Genomic location index of each gene (n_genes,), for the sinusoidal location
        encoding; all zeros when None.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        gene_embeddings: Tensor | None = None,
        gene_locations: Tensor | None = None,
    ):
        super().__init__()
        if cfg.n_genes <= 0:
            raise ValueError("ModelConfig.n_genes must be set to the gene vocabulary size.")
        self.cfg = cfg
        d = cfg.d_model
        if gene_embeddings is not None:
            if gene_embeddings.shape[0] != cfg.n_genes:
                raise ValueError(
                    f"gene_embeddings has {gene_embeddings.shape[0]} rows for {cfg.n_genes} genes."
                )
            cfg = dataclasses.replace(cfg, gene_embedding_dim=int(gene_embeddings.shape[1]))
            self.cfg = cfg
        width = cfg.gene_embedding_dim or d
        self.gene_emb = nn.Embedding(cfg.n_genes, width)
        if gene_embeddings is not None:
            with torch.no_grad():
                self.gene_emb.weight.copy_(gene_embeddings.float())
        if cfg.gene_embedding_dim:  # a pretrained table (given now or loaded later)
            self.gene_emb.weight.requires_grad_(not cfg.freeze_gene_embeddings)
        self.gene_proj = nn.Linear(width, d, bias=False) if width != d else nn.Identity()
        if gene_locations is None:
            gene_locations = torch.zeros(cfg.n_genes, dtype=torch.long)
        if gene_locations.shape != (cfg.n_genes,):
            raise ValueError(f"gene_locations must have shape ({cfg.n_genes},).")
        self.register_buffer("gene_locations", gene_locations.long(), persistent=True)
        self.expr_enc = ValueEncoder(d, cfg.dropout)
        self.depth_enc = ValueEncoder(d, cfg.dropout)
        self.placeholders = nn.Parameter(torch.randn(1 + len(cfg.classes), d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg, drop_path=i * cfg.drop_path_rate) for i in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.expr_dec = ExpressionDecoder(cfg)
        self.class_heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n))
                for name, n in cfg.classes.items()
            }
        )
        self.apply(self._init)
        if gene_embeddings is not None and isinstance(self.gene_proj, nn.Linear):
            # project a pretrained table to unit-scale tokens, as a learned table's N(0, 1)
            # rows are: at the default 0.02 the gene identities would be a tenth of the
            # location encoding and the class tokens could not tell cells apart at the start
            scale = float(gene_embeddings.float().std()) or 1.0
            nn.init.normal_(self.gene_proj.weight, std=1.0 / (math.sqrt(width) * scale))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and module.in_features > 1:
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ tokens

    def gene_tokens(self, genes: Tensor) -> Tensor:
        """Gene identity + location embeddings: (B, L) -> (B, L, d)."""
        emb = self.gene_proj(self.gene_emb(genes))
        loc = sinusoidal_encoding(self.gene_locations[genes], self.cfg.d_model)
        return emb + loc.to(emb.dtype)

    def encoder_input(self, x: Tensor) -> Tensor:
        """The counts the expression encoder takes (it applies log2(1 + .) itself): the
        counts, or with ``cfg.normalize_input`` each cell's counts scaled to a total of
        10,000 over its sequence (a cell without counts stays at zero)."""
        x = x.float().clamp_min(0)
        if not self.cfg.normalize_input:
            return x
        total = x.sum(dim=-1, keepdim=True)
        return x * (NORMALIZED_TOTAL / total.clamp_min(1e-8))

    def _run(
        self, tokens: Tensor, qk_layers: Iterable[int] | None
    ) -> tuple[Tensor, dict[int, tuple[Tensor, Tensor]]]:
        wanted = set() if qk_layers is None else {i % self.cfg.n_layers for i in qk_layers}
        qks = {}
        h = tokens
        for i, block in enumerate(self.blocks):
            h, qk = block(h, keep_qk=i in wanted)
            if qk is not None:
                qks[i] = qk
        return self.ln_f(h), qks

    def _outputs(self, h: Tensor, depth: Tensor) -> dict:
        n_special = self.cfg.n_special_tokens
        genes_h = h[:, n_special:]  # (B, L, d)
        cell_embs = h[:, 1:n_special]  # (B, 1 + K, d): default + one per class
        out = self.expr_dec(genes_h, depth)
        out["depth_emb"] = h[:, 0]
        out["cell_embs"] = cell_embs
        out["class_logits"] = {
            name: head(cell_embs[:, 1 + j]).float()
            for j, (name, head) in enumerate(self.class_heads.items())
        }
        return out

    # ------------------------------------------------------------------ passes

    def forward(
        self,
        genes: Tensor,
        x: Tensor,
        depth: Tensor,
        *,
        qk_layers: Iterable[int] | None = None,
        return_gene_embs: bool = False,
    ) -> dict:
        """Encode a batch of cells.

        Parameters
        ----------
        genes
            Gene indices into the vocabulary, (B, L) int64.
        x
            Counts of those genes, (B, L) float.
        depth
            Total counts of each cell (or the depth to denoise to), (B,).
        qk_layers
            Layers whose attention queries and keys to return (negative indices count
            from the end), for gene networks; nothing is materialised otherwise.
        return_gene_embs
            Also return the gene tokens of the last layer.

        Returns
        -------
        dict with ``mu``, ``theta``, ``pi_logits`` (ZINB; ``pred`` for MSE), each (B, L);
        ``cell_embs`` (B, 1 + K, d): the default cell embedding then one per class;
        ``depth_emb`` (B, d); ``class_logits`` {class: (B, n_leaves)}; ``qk``
        {layer: (q, k)} with q, k (B, H, S, head_dim) over all S tokens (special tokens
        first) when asked; ``gene_embs`` (B, L, d) when asked.
        """
        B, L = genes.shape
        tok = self.gene_tokens(genes) + self.expr_enc(self.encoder_input(x)).to(
            self.gene_emb.weight.dtype
        )
        special = torch.cat(
            [
                self.depth_enc(depth.float()).unsqueeze(1),  # (B, 1, d)
                self.placeholders.unsqueeze(0).expand(B, -1, -1),  # (B, 1 + K, d)
            ],
            dim=1,
        )
        h, qks = self._run(torch.cat([special.to(tok.dtype), tok], dim=1), qk_layers)
        out = self._outputs(h, depth)
        if qk_layers is not None:
            out["qk"] = qks
        if return_gene_embs:
            out["gene_embs"] = h[:, self.cfg.n_special_tokens :]
        return out

    def decode(self, genes: Tensor, cell_embs: Tensor, depth_emb: Tensor, depth: Tensor) -> dict:
        """The bottleneck pass: regenerate expression from cell embeddings alone.

        Gene tokens carry only gene identity and location (no expression); the special
        tokens are the depth and cell embeddings of a first pass.

        Parameters
        ----------
        genes
            (B, L) gene indices to reconstruct.
        cell_embs
            (B, 1 + K, d) from :meth:`forward`.
        depth_emb
            (B, d) from :meth:`forward`.
        depth
            (B,) depth the expression is decoded at.
        """
        tok = self.gene_tokens(genes)
        special = torch.cat([depth_emb.unsqueeze(1), cell_embs], dim=1).to(tok.dtype)
        h, _ = self._run(torch.cat([special, tok], dim=1), None)
        return self._outputs(h, depth)

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
