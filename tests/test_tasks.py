"""Zero-shot tasks (embed, denoise) on a small model trained on real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scdataloader.errors import CountsError, GeneMappingError, OrganismMismatchError
from scprint.tasks import denoise, embed

KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]


@pytest.fixture(scope="module")
def cells(retina_full):
    """120 retina cells over the 1,500 genes with most counts (a quick, complete input)."""
    a = retina_full[:120].copy()
    top = np.argsort(-np.asarray(retina_full.X.sum(axis=0)).ravel())[:1500]
    return a[:, np.sort(top)].copy()


def test_embed_writes_documented_slots_deterministically(trained, cells):
    a = cells.copy()
    assert embed(a, trained, max_len=512, logits=True, progress=False) is None
    d = trained.config.d_model
    assert a.obsm["X_scprint"].shape == (120, d)
    assert a.obsm["X_scprint_cell_type_ontology_term_id"].shape == (120, d)
    n_types = trained.hierarchies["cell_type_ontology_term_id"].n_leaves
    assert a.obsm["X_scprint_cell_type_ontology_term_id_logits"].shape == (120, n_types)
    b = embed(cells, trained, max_len=512, progress=False, copy=True)
    np.testing.assert_array_equal(a.obsm["X_scprint"], b.obsm["X_scprint"])
    assert "X_scprint" not in cells.obsm  # copy=True leaves the input alone
    # one embedding per cell, not collapsed to a constant
    emb = b.obsm["X_scprint"]
    assert np.isfinite(emb).all() and emb.std(axis=0).max() > 1e-3


def test_gene_mean_pools_the_expressed_genes_last_layer_tokens(trained, cells):
    import torch

    from scprint.tasks._data import iterate, prepare

    out = embed(cells, trained, max_len=1500, batch_size=50, gene_mean=True, progress=False,
                copy=True)  # fmt: skip
    pooled = out.obsm["X_scprint_gene_mean"]
    assert pooled.shape == out.obsm["X_scprint"].shape and np.isfinite(pooled).all()
    # by hand: the tokens of the expressed genes only, not the zero-count ones
    source = prepare(cells.copy(), trained)
    batch, res = next(iterate(source, trained, batch_size=5, max_len=1500, mode="random expr",
                              gene_embs=True, progress=False))  # fmt: skip
    tokens, x = res["gene_embs"].float(), batch["x"]
    assert ((x > 0).sum(1) < x.shape[1]).all()  # each sequence also holds zero-count genes
    want = torch.stack([tokens[i][x[i] > 0].mean(0) for i in range(5)]).numpy()
    np.testing.assert_allclose(pooled[:5], want, atol=1e-5)
    every = tokens.mean(1).numpy()
    assert np.abs(pooled[:5] - every).max() > 1e-3
    # not the cell token, and it separates cells
    assert not np.allclose(pooled, out.obsm["X_scprint"], atol=1e-3)
    assert pooled.std(axis=0).max() > 1e-3
    assert "X_scprint_gene_mean" not in embed(cells, trained, max_len=256, progress=False,
                                               copy=True).obsm  # fmt: skip


def test_symbols_give_the_same_embeddings_as_ids(trained, cells):
    from scdataloader.genes import symbols_to_ids

    symbols = cells.var["feature_name"].astype(str).to_numpy()
    # genes whose symbol maps back to their own id (some symbols are ambiguous or retired)
    same_gene = np.array(symbols_to_ids(symbols, "human"), dtype=object) == cells.var_names
    ids = cells[:, same_gene].copy()
    by_id = embed(ids, trained, max_len=512, progress=False, copy=True)
    sym = ids.copy()
    sym.var_names = symbols[same_gene]
    by_symbol = embed(sym, trained, max_len=512, progress=False, copy=True)
    assert same_gene.mean() > 0.9
    same = (by_id.obsm["X_scprint"] - by_symbol.obsm["X_scprint"]).__abs__().max()
    assert same < 1e-4


def test_missing_genes_are_unmeasured_not_zero(trained, cells, caplog):
    half = cells[:, ::2].copy()
    out = embed(half, trained, max_len=512, progress=False, copy=True)
    assert np.isfinite(out.obsm["X_scprint"]).all()
    extra = cells.copy()
    extra.var_names = [f"{g}_x" if i % 10 == 0 else g for i, g in enumerate(extra.var_names)]
    with caplog.at_level("WARNING"):
        embed(extra, trained, max_len=512, progress=False, copy=True)
    assert "did not map" in caplog.text or "not in its vocabulary" in caplog.text


def test_denoise_reaches_the_requested_depth(trained, cells):
    expressed = np.diff(sp.csr_matrix(cells.X).indptr)
    for multiplier in (1.0, 3.0):
        out = denoise(cells, trained, depth_multiplier=multiplier, max_len=int(expressed.max()),
                      progress=False, copy=True)  # fmt: skip
        layer = out.layers["scprint_denoised"]
        assert sp.issparse(layer) and layer.shape == cells.shape
        totals = np.asarray(layer.sum(axis=1)).ravel()
        wanted = multiplier * np.asarray(cells.X.sum(axis=1)).ravel()
        np.testing.assert_allclose(totals, wanted, rtol=0.01)
        assert (layer.data >= 0).all()
    # expressed genes get predictions; the input is untouched
    assert "scprint_denoised" not in cells.layers


def _brute_posterior_mean(y, p, m, theta, pi):
    """E[x | y] by summing over x: prior ZINB(m, theta, pi), y ~ Binomial(x, p)."""
    from scipy import stats

    x = np.arange(0, 4000)
    prior = stats.nbinom.pmf(x, theta, theta / (theta + m)) * (1 - pi)
    prior[0] += pi
    like = stats.binom.pmf(y, x, p)
    return float((x * prior * like).sum() / (prior * like).sum())


def test_posterior_mean_matches_a_direct_sum():
    import torch

    from scprint.tasks.cells import _posterior_mean

    m = np.array([[0.3, 2.0, 15.0, 40.0, 5.0, 0.05]], dtype=np.float32)
    theta = np.array([[0.5, 3.0, 10.0, 1.5, 0.2, 30.0]], dtype=np.float32)
    pi = np.array([[0.2, 0.05, 0.6, 0.0, 0.3, 0.9]], dtype=np.float32)
    y = np.array([[0.0, 1.0, 0.0, 7.0, 2.0, 0.0]], dtype=np.float32)
    out = {"mu": torch.from_numpy(m), "theta": torch.from_numpy(theta),
           "pi_logits": torch.logit(torch.from_numpy(pi).clamp(1e-6, 1 - 1e-6))}  # fmt: skip
    for p in (0.3, 0.5):
        got = _posterior_mean(out, y, np.ones(1), p)[0]
        want = [_brute_posterior_mean(y[0, j], p, m[0, j], theta[0, j], pi[0, j])
                for j in range(m.shape[1])]  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-3)
    # without zero inflation (the "nb" decoder)
    nb = {"mu": out["mu"], "theta": out["theta"]}
    got = _posterior_mean(nb, y, np.full(1, 2.0), 0.3)[0]
    want = [_brute_posterior_mean(y[0, j], 0.3, 2 * m[0, j], theta[0, j], 0.0) for j in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_posterior_denoising_keeps_what_was_observed(trained, cells):
    """On retina cells thinned to 30%, the posterior mean never drops an observed count,
    leaves unmapped genes at 0 and ranks the observed genes far closer to the full-depth
    truth than the test model's expected counts do."""
    from scipy.stats import spearmanr

    from scdataloader.genes import map_genes

    rng = np.random.default_rng(0)
    full = sp.csr_matrix(cells.X).astype(np.float32)
    thin = full.copy()
    thin.data = rng.binomial(np.rint(thin.data).astype(np.int64), 0.3).astype(np.float32)
    thin.eliminate_zeros()
    noisy = cells.copy()
    noisy.X = thin
    kw = dict(depth_multiplier=1 / 0.3, max_len=1500, progress=False, copy=True)
    post = denoise(noisy, trained, posterior=True, **kw).layers["scprint_denoised"].toarray()
    model = denoise(noisy, trained, **kw).layers["scprint_denoised"].toarray()
    y, truth = thin.toarray(), full.toarray()
    mapped = np.array([g is not None for g in map_genes(cells.var_names, "human").ids])
    seen = (y > 0) & mapped
    assert mapped.sum() > 1400 and (post[seen] >= y[seen] * (1 - 1e-5)).all()
    assert (post[:, ~mapped] == 0).all()
    scores = {"posterior": [], "model": [], "noisy": []}
    for i in range(len(y)):
        seen = (y[i] > 0) & (truth[i] > 0)
        if seen.sum() < 10:
            continue
        for name, pred in (("posterior", post), ("model", model), ("noisy", y)):
            scores[name].append(spearmanr(pred[i, seen], truth[i, seen])[0])
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    # the test model's expected counts barely order the observed genes (about 0); the
    # posterior keeps most of the order the observed counts carry (the thinned profile's)
    assert mean["posterior"] > mean["model"] + 0.3, mean
    assert mean["posterior"] > 0.8 * mean["noisy"], mean
    with pytest.raises(ValueError, match="depth_multiplier must be > 1"):
        denoise(noisy, trained, posterior=True, depth_multiplier=1.0, progress=False)


def test_pooled_prior_is_the_mean_over_neighbours_that_predicted_the_gene():
    from scprint.tasks.cells import _neighbour_weights, _pooled

    # cells 0 and 1 are close, cell 2 far away
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    w = _neighbour_weights(emb, 2).toarray()
    np.testing.assert_allclose(w, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]])
    # cell 1 did not predict gene 0; cell 2 predicted only gene 1
    pattern = sp.csr_matrix(np.array([[1, 1], [0, 1], [0, 1]], dtype=np.float64))
    values = np.array([2.0, 4.0, 6.0, 10.0])  # (0,0) (0,1) (1,1) (2,1)
    got = _pooled(sp.csr_matrix(w), pattern, values)
    np.testing.assert_allclose(got, [2.0, 5.0, 5.0, 8.0])


def _thinned(cells, seed: int, keep: float = 0.3):
    """A copy of ``cells`` sequenced at ``keep`` of its depth: each count kept with
    probability ``keep`` (binomial thinning)."""
    rng = np.random.default_rng(seed)
    thin = sp.csr_matrix(cells.X).astype(np.float32)
    thin.data = rng.binomial(np.rint(thin.data).astype(np.int64), keep).astype(np.float32)
    thin.eliminate_zeros()
    out = cells.copy()
    out.X = thin
    return out


def test_denoising_with_neighbours(trained, cells, monkeypatch):
    """Pooling over one neighbour (the cell itself) is the per-cell result; pooling over
    every cell gives every cell the same expected profile, up to its depth; the
    posterior never drops an observed count either way."""
    import scprint.tasks.cells as cells_module
    from scdataloader.genes import map_genes

    noisy = _thinned(cells[:40], seed=1)
    thin = noisy.X
    kw = dict(depth_multiplier=1 / 0.3, max_len=1500, progress=False, copy=True)
    alone = denoise(noisy, trained, posterior=True, **kw).layers["scprint_denoised"]

    def only_self(embeddings, k):
        return sp.identity(len(embeddings), format="csr")

    with monkeypatch.context() as m:
        m.setattr(cells_module, "_neighbour_weights", only_self)
        same = denoise(noisy, trained, posterior=True, neighbours=2, **kw)
    np.testing.assert_allclose(same.layers["scprint_denoised"].toarray(), alone.toarray(),
                               rtol=1e-4, atol=1e-5)  # fmt: skip

    everyone = denoise(noisy, trained, neighbours=40, **kw).layers["scprint_denoised"]
    profile = everyone.toarray()
    # all 1,500 genes are in every context (max_len = n_vars): one shared profile
    share = profile / profile.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(share, np.broadcast_to(share[0], share.shape), atol=1e-6)

    post = denoise(noisy, trained, posterior=True, neighbours=5, **kw).layers["scprint_denoised"]
    y = thin.toarray()
    mapped = np.array([g is not None for g in map_genes(cells.var_names, "human").ids])
    seen = (y > 0) & mapped
    assert (post.toarray()[seen] >= y[seen] * (1 - 1e-5)).all()
    assert not np.allclose(post.toarray(), alone.toarray())

    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="neighbours must be an integer"):
            denoise(noisy, trained, neighbours=bad, progress=False)
    with pytest.raises(ValueError, match="only 40 cells"):
        denoise(noisy, trained, neighbours=41, progress=False)


def test_denoising_in_passes_at_a_zero_share(trained, cells):
    """``zero_share``: every measured gene of every cell is predicted; each pass holds all
    the cell's expressed genes and that share of its zeros, and the passes together hold
    every zero; with one pass of all genes it is the one-sequence result."""
    from scdataloader.genes import map_genes

    noisy = _thinned(cells[:6], seed=2)
    y = noisy.X.toarray()
    ids = map_genes(cells.var_names, "human").ids
    known = {g: i for i, g in enumerate(trained.genes)}
    data_col = {known[g]: j for j, g in enumerate(ids) if g is not None and g in known}
    out = denoise(noisy, trained, depth_multiplier=1 / 0.3, zero_share=0.25, max_len=256,
                  progress=False, copy=True)  # fmt: skip
    layer = out.layers["scprint_denoised"].toarray()
    cols = sorted(data_col.values())
    # every measured gene of every cell predicted, not only 256 of them
    assert (layer[:, cols] > 0).all()
    np.testing.assert_allclose(layer.sum(axis=1), y.sum(axis=1) / 0.3, rtol=0.01)

    # the passes of one cell with more expressed genes than a pass holds (192)
    calls = []
    hook = trained.model.register_forward_hook(
        lambda mod, args, out: calls.append((args[0].numpy().copy(), args[1].numpy().copy()))
    )
    try:
        denoise(noisy[:1].copy(), trained, depth_multiplier=1 / 0.3, zero_share=0.25,
                max_len=256, progress=False)  # fmt: skip
    finally:
        hook.remove()
    assert (y[0, cols] > 0).sum() > 192
    seqs = [s for g, _ in calls for s in g]
    xs = [x for _, v in calls for x in v]
    assert len(seqs) > 2 and all(len(s) <= 256 for s in seqs)
    for s, x in zip(seqs, xs, strict=True):
        assert len(set(s.tolist())) == len(s)
        # a quarter of each pass is zero-count genes (rounding: one gene either way)
        assert abs(int((x == 0).sum()) - 0.25 * len(s)) <= 1
    covered = set(np.concatenate(seqs).tolist())
    assert covered == set(data_col)  # the passes together hold every measured gene

    kw = dict(posterior=True, depth_multiplier=1 / 0.3, max_len=cells.n_vars, progress=False,
              copy=True)  # fmt: skip
    one = denoise(noisy, trained, **kw).layers["scprint_denoised"].toarray()
    # a share so high that one pass holds every zero: the same sequence, reordered
    whole = denoise(noisy, trained, zero_share=0.99, **kw).layers["scprint_denoised"].toarray()
    np.testing.assert_allclose(whole, one, rtol=1e-3, atol=1e-4)

    for bad in (0, 1, -0.2, True, "0.3"):
        with pytest.raises(ValueError, match="zero_share must be a share"):
            denoise(noisy, trained, zero_share=bad, progress=False)


def test_bad_inputs_give_clear_errors(trained, cells, mouse_path):
    import scanpy as sc

    logged = cells.copy()
    sc.pp.normalize_total(logged)
    sc.pp.log1p(logged)
    with pytest.raises(CountsError, match="recover"):
        embed(logged, trained, progress=False, copy=True)
    junk = cells.copy()
    junk.var_names = [f"gene{i}" for i in range(junk.n_vars)]
    with pytest.raises(GeneMappingError):
        embed(junk, trained, progress=False, copy=True)
    mouse = ad.read_zarr(mouse_path)[:50].copy()
    with pytest.raises(OrganismMismatchError, match="mouse genes.*human"):
        embed(mouse, trained, gene_key="gene_ids", progress=False, copy=True)
    doubled = cells.copy()
    names = doubled.var_names.to_numpy().copy()
    names[1] = names[0]
    doubled.var_names = names
    with pytest.raises(GeneMappingError, match="duplicated gene names"):
        embed(doubled, trained, progress=False, copy=True)
    with pytest.raises(ValueError, match="depth_multiplier"):
        denoise(cells, trained, depth_multiplier=0, progress=False)
    with pytest.raises(TypeError, match="checkpoint path"):
        embed(cells, object(), progress=False)


def test_embeddings_do_not_depend_on_the_batch_size(trained, cells):
    a = embed(cells, trained, max_len=256, batch_size=7, progress=False, copy=True)
    b = embed(cells, trained, max_len=256, batch_size=32, progress=False, copy=True)
    np.testing.assert_allclose(a.obsm["X_scprint"], b.obsm["X_scprint"], atol=1e-5)
