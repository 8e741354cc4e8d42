"""Typed configuration of the scPRINT model, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ModelConfig", "PRESETS", "Decoder", "AttentionBackend"]

Decoder = Literal["zinb", "nb", "mse"]
AttentionBackend = Literal["auto", "flash", "sdpa", "explicit"]

# name -> (d_model, n_layers, n_heads); the paper's Table S2 scales, plus a CPU debug size.
PRESETS: dict[str, dict[str, int]] = {
    "debug": {"d_model": 32, "n_layers": 2, "n_heads": 2},
    "small": {"d_model": 128, "n_layers": 4, "n_heads": 2},
    "medium": {"d_model": 256, "n_layers": 8, "n_heads": 4},
    "large": {"d_model": 512, "n_layers": 16, "n_heads": 8},
}


@dataclass
class ModelConfig:
    """Architecture of an scPRINT model.

    Attributes
    ----------
    n_genes
        Size of the gene vocabulary (rows of the gene embedding table).
    d_model
        Token width.
    n_layers
        Transformer blocks.
    n_heads
        Attention heads per block; ``d_model`` must be divisible by it.
    mlp_ratio
        Hidden width of each block's MLP, as a multiple of ``d_model`` (the paper: 4).
    dropout
        Dropout of the expression / depth encoders and the blocks' outputs (0.1).
    drop_path_rate
        Stochastic depth: block ``i`` (0-based) skips its residual branches with
        probability ``i * drop_path_rate`` in training (the paper: +0.02 per layer).
    decoder
        ``"zinb"`` (mu, theta, pi per gene), ``"nb"`` (mu, theta) or ``"mse"`` (predicted
        log2(1 + count)).
    classes
        Class name -> number of leaf labels; one placeholder token and one classifier
        head per class, in this order.
    attention
        ``"auto"`` (flash-attn on CUDA in half precision when installed, else PyTorch's
        scaled_dot_product_attention), or one backend forced. All use the same weights.
    gene_embedding_dim
        Width of pretrained gene embeddings (e.g. 1280 for ESM2-650M); projected to
        ``d_model`` when different. 0: a learned table of width ``d_model``.
    freeze_gene_embeddings
        Keep pretrained gene embeddings fixed during training (the paper's choice).
    normalize_input
        What the expression encoder sees: False, log2(1 + count) as the paper's Methods
        write it; True, log2(1 + 10,000 x count / the sequence's total count), as the
        reference implementation does (``normalization="sum"``), which keeps the cell's
        sequencing depth out of the gene tokens (the depth token still carries it).
    """

    n_genes: int = 0
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.1
    drop_path_rate: float = 0.02
    decoder: Decoder = "zinb"
    classes: dict[str, int] = field(default_factory=dict)
    attention: AttentionBackend = "auto"
    gene_embedding_dim: int = 0
    freeze_gene_embeddings: bool = True
    normalize_input: bool = False

    def __post_init__(self) -> None:
        if self.n_genes < 0:
            raise ValueError(f"n_genes must be >= 0, got {self.n_genes}.")
        if self.d_model <= 0 or self.n_layers <= 0 or self.n_heads <= 0:
            raise ValueError("d_model, n_layers and n_heads must be positive.")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})."
            )
        if self.decoder not in ("zinb", "nb", "mse"):
            raise ValueError(f"decoder must be 'zinb', 'nb' or 'mse', not {self.decoder!r}.")
        if self.attention not in ("auto", "flash", "sdpa", "explicit"):
            raise ValueError(
                f"attention must be 'auto', 'flash', 'sdpa' or 'explicit', not {self.attention!r}."
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not 0 <= self.drop_path_rate * (self.n_layers - 1) < 1:
            raise ValueError(
                f"drop_path_rate {self.drop_path_rate} x {self.n_layers - 1} layers must stay "
                "below 1."
            )
        bad = {k: v for k, v in self.classes.items() if int(v) < 1}
        if bad:
            raise ValueError(f"every class needs at least one label: {bad}.")
        self.classes = {str(k): int(v) for k, v in self.classes.items()}

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_special_tokens(self) -> int:
        """Depth token, default cell token and one token per class."""
        return 2 + len(self.classes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset (``debug``, ``small``, ``medium``, ``large``) with overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown model config fields: {unknown}.")
        return cls(**values)
