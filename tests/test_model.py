"""The scPRINT network: attention backends, captured Q/K, tokens, decoders, config."""

from __future__ import annotations

import math

import pytest
import torch

from scprint.nn.config import PRESETS, ModelConfig
from scprint.nn.model import ScPrint, sinusoidal_encoding

N_GENES = 500


def _model(seed=0, **overrides) -> ScPrint:
    torch.manual_seed(seed)
    cfg = ModelConfig.preset(
        "debug", n_genes=N_GENES, classes={"cell_type": 7, "disease": 3}, **overrides
    )
    return ScPrint(cfg, gene_locations=torch.arange(N_GENES) // 3).eval()


def _batch(B=3, L=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    genes = torch.stack([torch.randperm(N_GENES, generator=g)[:L] for _ in range(B)])
    x = torch.poisson(torch.rand(B, L, generator=g) * 4, generator=g)
    return genes, x, x.sum(1) * 3


def test_sdpa_and_explicit_attention_agree():
    m = _model()
    genes, x, depth = _batch()
    with torch.no_grad():
        outs = {}
        for backend in ("sdpa", "explicit"):
            for block in m.blocks:
                block.attn.backend = backend
            outs[backend] = m(genes, x, depth, return_gene_embs=True)
    a, b = outs["sdpa"], outs["explicit"]
    for key in ("mu", "theta", "pi_logits", "cell_embs", "gene_embs"):
        assert (a[key] - b[key]).abs().max() < 1e-5, key


def test_captured_qk_reproduce_torch_attention_weights():
    m = _model()
    genes, x, depth = _batch()
    block = m.blocks[1]
    captured = {}
    block.ln1.register_forward_hook(lambda mod, inp, out: captured.setdefault("in", out))
    with torch.no_grad():
        out = m(genes, x, depth, qk_layers=[1])
        q, k = out["qk"][1]  # (B, H, S, hd)
        cfg = m.cfg
        mha = torch.nn.MultiheadAttention(cfg.d_model, cfg.n_heads, batch_first=True)
        mha.in_proj_weight.copy_(block.attn.qkv.weight)
        mha.in_proj_bias.copy_(block.attn.qkv.bias)
        mha.out_proj.weight.copy_(block.attn.out.weight)
        mha.out_proj.bias.copy_(block.attn.out.bias)
        h = captured["in"]
        ref_out, ref_w = mha(h, h, h, need_weights=True, average_attn_weights=False)
        ours_w = (q @ k.transpose(-2, -1) / math.sqrt(cfg.head_dim)).softmax(-1)
        S = 40 + cfg.n_special_tokens
        assert ours_w.shape == ref_w.shape == (3, cfg.n_heads, S, S)
        assert (ours_w - ref_w).abs().max() < 1e-6
        ours_out, _ = block.attn(h)
        assert (ours_out - ref_out).abs().max() < 1e-5
    assert set(out["qk"]) == {1}
    assert "qk" not in m(genes, x, depth)


def test_outputs_shapes_and_decoders():
    m = _model()
    genes, x, depth = _batch(B=2, L=25)
    out = m(genes, x, depth)
    assert out["mu"].shape == out["theta"].shape == out["pi_logits"].shape == (2, 25)
    assert (out["mu"] > 0).all() and (out["theta"] > 0).all()
    assert out["cell_embs"].shape == (2, 3, 32)
    assert out["class_logits"]["cell_type"].shape == (2, 7)
    assert out["class_logits"]["disease"].shape == (2, 3)
    dec = m.decode(genes, out["cell_embs"], out["depth_emb"], depth)
    assert dec["mu"].shape == (2, 25)
    nb = _model(decoder="nb")(genes, x, depth)
    assert "pi_logits" not in nb and "mu" in nb
    mse = _model(decoder="mse")(genes, x, depth)
    assert mse["pred"].shape == (2, 25)


def test_depth_token_changes_expression_scale():
    m = _model()
    genes, x, depth = _batch()
    with torch.no_grad():
        low = m(genes, x, depth)["mu"].mean()
        high = m(genes, x, depth * 10)["mu"].mean()
    assert high > 3 * low  # mu is predicted relative to the depth


def test_expression_changes_outputs_and_order_does_not_matter():
    m = _model()
    genes, x, depth = _batch()
    with torch.no_grad():
        a = m(genes, x, depth)
        perm = torch.randperm(genes.shape[1])
        b = m(genes[:, perm], x[:, perm], depth)
        c = m(genes, x * 0, depth)
    # a bidirectional model without token positions: permuting genes permutes outputs
    assert (a["mu"][:, perm] - b["mu"]).abs().max() < 1e-4
    assert (a["cell_embs"] - b["cell_embs"]).abs().max() < 1e-4
    assert (a["cell_embs"] - c["cell_embs"]).abs().max() > 1e-3


def test_pretrained_gene_embeddings_frozen_and_projected():
    torch.manual_seed(0)
    table = torch.randn(N_GENES, 48)
    cfg = ModelConfig.preset("debug", n_genes=N_GENES)
    m = ScPrint(cfg, gene_embeddings=table)
    assert cfg.gene_embedding_dim == 0  # the caller's config is not modified
    assert m.cfg.gene_embedding_dim == 48
    assert torch.equal(m.gene_emb.weight, table)
    assert not m.gene_emb.weight.requires_grad
    assert isinstance(m.gene_proj, torch.nn.Linear)
    genes, x, depth = _batch()
    m(genes, x, depth)["mu"].sum().backward()
    assert m.gene_emb.weight.grad is None and m.gene_proj.weight.grad is not None
    trainable = ScPrint(
        ModelConfig.preset("debug", n_genes=N_GENES, freeze_gene_embeddings=False),
        gene_embeddings=table,
    )
    assert trainable.gene_emb.weight.requires_grad
    with pytest.raises(ValueError, match="rows"):
        ScPrint(cfg, gene_embeddings=table[:10])


def test_stochastic_depth_and_dropout_only_in_training():
    m = _model(drop_path_rate=0.3)
    assert [b.drop_path for b in m.blocks] == [0.0, 0.3]
    genes, x, depth = _batch()
    with torch.no_grad():
        assert torch.equal(m(genes, x, depth)["mu"], m(genes, x, depth)["mu"])
        m.train()
        torch.manual_seed(0)
        a = m(genes, x, depth)["mu"]
        torch.manual_seed(1)
        b = m(genes, x, depth)["mu"]
    assert not torch.equal(a, b)


def test_every_parameter_gets_a_gradient():
    m = _model().train()
    genes, x, depth = _batch()
    out = m(genes, x, depth)
    dec = m.decode(genes, out["cell_embs"], out["depth_emb"], depth)
    loss = out["mu"].mean() + out["theta"].mean() + out["pi_logits"].mean() + dec["mu"].mean()
    loss = loss + sum(v.mean() for v in out["class_logits"].values())
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_location_encoding():
    enc = sinusoidal_encoding(torch.tensor([0, 1, 1000]), 16)
    assert enc.shape == (3, 16)
    assert torch.allclose(enc[0, :8], torch.zeros(8)) and torch.allclose(enc[0, 8:], torch.ones(8))
    m = _model()
    same = m.gene_tokens(torch.tensor([[0, 1, 2]]))  # genes 0, 1, 2 share location 0
    assert not torch.allclose(same[0, 0], same[0, 1])  # identity still differs


def test_presets_and_validation():
    sizes = {
        name: ScPrint(ModelConfig.preset(name, n_genes=100)).n_parameters() for name in PRESETS
    }
    assert sizes["debug"] < sizes["small"] < sizes["medium"] < sizes["large"]
    assert ModelConfig.preset("small").d_model == 128
    assert (ModelConfig.preset("large").n_layers, ModelConfig.preset("large").n_heads) == (16, 8)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=130, n_heads=4)
    with pytest.raises(ValueError, match="Unknown preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="decoder"):
        ModelConfig(decoder="poisson")
    with pytest.raises(ValueError, match="n_genes"):
        ScPrint(ModelConfig())
    cfg = ModelConfig.preset("medium", n_genes=10, classes={"a": 2})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown model config"):
        ModelConfig.from_dict({**cfg.to_dict(), "nope": 1})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flash_attention_matches_sdpa_on_gpu():
    from scprint.nn.model import flash_attn_available

    if not flash_attn_available():
        pytest.skip("flash-attn is not installed (extra 'flash')")
    m = _model().cuda().to(torch.bfloat16)
    genes, x, depth = (t.cuda() for t in _batch(B=4, L=256))
    with torch.no_grad():
        outs = {}
        for backend in ("flash", "sdpa"):
            for block in m.blocks:
                block.attn.backend = backend
            outs[backend] = m(genes, x, depth, qk_layers=[-1])
    assert (outs["flash"]["cell_embs"] - outs["sdpa"]["cell_embs"]).abs().max() < 3e-2
    qf, kf = outs["flash"]["qk"][1]
    qs, ks = outs["sdpa"]["qk"][1]
    assert torch.equal(qf, qs) and torch.equal(kf, ks)


def test_normalize_input_encodes_each_cell_scaled_to_the_same_total():
    genes, x, depth = _batch()
    raw, norm = _model(), _model(normalize_input=True)
    scaled = x / x.sum(1, keepdim=True) * 10_000
    assert torch.allclose(norm.encoder_input(x), scaled)
    assert torch.equal(raw.encoder_input(x), x)
    assert torch.equal(norm.encoder_input(torch.zeros(2, 5)), torch.zeros(2, 5))  # no 0/0
    with torch.no_grad():
        # twice the counts at the same depth token: the same cell once normalised
        a, b = norm(genes, x, depth), norm(genes, 2 * x, depth)
        c, d = raw(genes, x, depth), raw(genes, 2 * x, depth)
    assert torch.allclose(a["cell_embs"], b["cell_embs"], atol=1e-5)
    assert not torch.allclose(c["cell_embs"], d["cell_embs"], atol=1e-3)
    assert ModelConfig.from_dict(norm.cfg.to_dict()).normalize_input is True


def test_pretrained_gene_table_is_projected_to_unit_scale():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("debug", n_genes=N_GENES)
    for scale in (0.05, 1.0, 20.0):
        table = torch.randn(N_GENES, 48) * scale
        m = ScPrint(cfg, gene_embeddings=table)
        tokens = m.gene_proj(m.gene_emb.weight)  # (genes, d): identity part of the tokens
        assert 0.7 < float(tokens.std()) < 1.3, scale
