"""Cell-type gene networks from attention (get_gene_network) on a small model trained on real
retina cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scprint.tasks import get_gene_network
from scprint.tasks._data import prepare
from scprint.tasks.network import highly_variable_genes, mean_qk

KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]
ROD = "CL:0000604"


@pytest.fixture(scope="module")
def net_model(trained):
    return trained


@pytest.fixture(scope="module")
def rods(retina_full):
    """60 rod cells (all genes)."""
    idx = np.flatnonzero(retina_full.obs["cell_type_ontology_term_id"].astype(str) == ROD)[:60]
    return retina_full[idx].copy()


@pytest.fixture(scope="module")
def gene_list(rods):
    """100 expressed genes of the rods, as Ensembl ids, in a shuffled order."""
    totals = np.asarray(rods.X.sum(axis=0)).ravel()
    top = np.argsort(-totals)[:100]
    return list(rods.var_names[np.random.default_rng(0).permutation(top)])


def _by_hand(model, adata, genes, batch_size=16):
    """Mean Q and K of the gene tokens, run batch by batch: (n_layers, H, G, hd) each."""
    cfg = model.config
    cols = adata.var_names.get_indexer(genes)
    where = {g: i for i, g in enumerate(model.genes)}
    idx = torch.tensor([where[g] for g in genes])
    X = adata.X.tocsr()
    qs, ks = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, adata.n_obs, batch_size):
            rows = X[start : start + batch_size]
            x = torch.tensor(rows[:, cols].toarray(), dtype=torch.float32)
            depth = torch.tensor(np.asarray(rows.sum(axis=1)).ravel(), dtype=torch.float32)
            g = idx.expand(len(x), -1)
            out = model.model(g, x, depth, qk_layers=list(range(cfg.n_layers)))
            n = cfg.n_special_tokens
            qs.append(torch.stack([out["qk"][i][0][:, :, n:] for i in range(cfg.n_layers)], 1))
            ks.append(torch.stack([out["qk"][i][1][:, :, n:] for i in range(cfg.n_layers)], 1))
    q = torch.cat(qs).double().mean(0)  # (n_layers, H, G, hd)
    k = torch.cat(ks).double().mean(0)
    return q, k


def test_network_equals_softmax_of_mean_qk(net_model, rods, gene_list):
    cfg = net_model.config
    net = get_gene_network(rods, net_model, cell_type=ROD, genes=gene_list, progress=False)
    assert list(net.genes) == gene_list
    assert net.orientation == "target_by_regulator" and net.method == "scprint"
    assert net.params["n_cells"] == 60 and net.params["layers"] == list(range(cfg.n_layers))
    assert "symbol" in net.var and net.var["symbol"].str.len().gt(0).all()
    q, k = _by_hand(net_model, rods, gene_list)
    per_head = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim), dim=-1)
    per_head = per_head.reshape(-1, len(gene_list), len(gene_list)).numpy()  # (L*H, G, G)
    m = np.asarray(net.matrix)
    assert m.shape == (100, 100)
    assert np.abs(m - per_head.mean(0)).max() < 1e-5
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-5)
    # one head, by (layer, head) and by flat index
    last = cfg.n_layers - 1
    one = get_gene_network(rods, net_model, cell_type=ROD, genes=gene_list, heads=[(-1, 1)],
                           progress=False)  # fmt: skip
    flat = last * cfg.n_heads + 1
    assert np.abs(np.asarray(one.matrix) - per_head[flat]).max() < 1e-5
    assert one.params["selected_heads"] == [[last, 1]]
    same = get_gene_network(rods, net_model, cell_type=ROD, genes=gene_list, heads=[flat],
                            progress=False)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(same.matrix), np.asarray(one.matrix))
    # a layer subset
    first = get_gene_network(rods, net_model, cell_type=ROD, genes=gene_list, layers=[0],
                             progress=False)  # fmt: skip
    assert np.abs(np.asarray(first.matrix) - per_head[: cfg.n_heads].mean(0)).max() < 1e-5


def test_cell_type_by_name_and_subsampling(net_model, retina_full, gene_list):
    name = str(retina_full.obs.loc[retina_full.obs["cell_type_ontology_term_id"] == ROD,
                                   "cell_type"].iloc[0])  # fmt: skip
    a = get_gene_network(retina_full, net_model, cell_type=name, n_cells=20, genes=gene_list,
                         progress=False)  # fmt: skip
    b = get_gene_network(retina_full, net_model, cell_type=ROD, n_cells=20, genes=gene_list,
                         progress=False)  # fmt: skip
    assert a.params["n_cells"] == 20
    np.testing.assert_array_equal(np.asarray(a.matrix), np.asarray(b.matrix))


def test_genome_wide_equals_fixed_when_every_cell_sees_every_gene(net_model, rods, gene_list):
    # genes= restricts the pool each cell draws from; with max_len >= the pool size every
    # cell's sequence holds all 100 genes (expressed first, then measured zeros; no
    # unmeasured padding), only in another order, to which attention is equivariant.
    fixed = get_gene_network(rods, net_model, genes=gene_list, progress=False)
    wide = get_gene_network(rods, net_model, genes=gene_list, genome_wide=True, max_len=500,
                            progress=False)  # fmt: skip
    assert list(wide.genes) == gene_list
    assert (wide.var["n_cells"] == 60).all()
    assert np.abs(np.asarray(wide.matrix) - np.asarray(fixed.matrix)).max() < 1e-5
    # fewer genes per cell: genes seen by fewer cells, rows still normalised
    part = get_gene_network(rods, net_model, genes=gene_list, genome_wide=True, max_len=40,
                            min_gene_cells=1, progress=False)  # fmt: skip
    assert part.var["n_cells"].min() < 60
    np.testing.assert_allclose(np.asarray(part.matrix).sum(axis=1), 1.0, atol=1e-5)


def test_memory_does_not_depend_on_the_number_of_cells(net_model, retina_full, gene_list):
    source = prepare(retina_full, net_model)
    pool = retina_full.var_names.get_indexer(gene_list)
    small = mean_qk(source, net_model, np.arange(30), pool, progress=False)
    large = mean_qk(source, net_model, np.arange(120), pool, progress=False)
    assert small.n_cells == 30 and large.n_cells == 120
    assert small.nbytes == large.nbytes
    cfg = net_model.config
    assert large.q.shape == (cfg.n_layers, cfg.n_heads, 100, cfg.head_dim)
    wide_s = mean_qk(source, net_model, np.arange(30), pool, genome_wide=True, max_len=50,
                     progress=False)  # fmt: skip
    wide_l = mean_qk(source, net_model, np.arange(120), pool, genome_wide=True, max_len=50,
                     progress=False)  # fmt: skip
    assert wide_s.nbytes == wide_l.nbytes == large.nbytes


def test_hvg_genes_are_variable_and_in_the_vocabulary(net_model, rods):
    net = get_gene_network(rods, net_model, n_genes=50, progress=False)
    assert net.n_genes == 50 and net.params["genes"] == "hvg"
    assert set(net.genes) <= set(net_model.genes)
    cols = highly_variable_genes(rods.X, 50)
    assert len(cols) == 50 and (np.diff(cols) > 0).all()
    assert (np.asarray(rods.X[:, cols].sum(axis=0)).ravel() > 0).all()


def test_bad_inputs_give_clear_errors(net_model, retina_full, rods, gene_list):
    with pytest.raises(ValueError, match=r"CL:0000604.*318"):
        get_gene_network(retina_full, net_model, cell_type="CL:9999999", genes=gene_list,
                         progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="min_cells"):
        get_gene_network(rods, net_model, cell_type=ROD, min_cells=100, genes=gene_list,
                         progress=False)  # fmt: skip
    with pytest.raises(KeyError, match="no column 'celltype'.*donor_id"):
        get_gene_network(rods, net_model, cell_type=ROD, cell_type_key="celltype",
                         progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="NOTAGENE"):
        get_gene_network(rods, net_model, genes=[*gene_list[:5], "NOTAGENE"], progress=False)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        get_gene_network(rods, net_model, genes=gene_list, heads="self", truth=np.eye(3),
                         progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="truth"):
        get_gene_network(rods, net_model, genes=gene_list, heads="self", progress=False)
    with pytest.raises(ValueError, match="layers used"):
        get_gene_network(rods, net_model, genes=gene_list, layers=[0], heads=[(1, 0)],
                         progress=False)  # fmt: skip


def test_self_head_selection_records_the_heads(net_model, rods, gene_list):
    from bengrn import GeneNetwork

    cfg = net_model.config
    base = get_gene_network(rods, net_model, genes=gene_list, heads=[(0, 0)], progress=False)
    m = np.asarray(base.matrix).copy()
    np.fill_diagonal(m, 0)
    planted = m >= np.quantile(m, 0.9)  # head (0, 0)'s strongest edges
    net = get_gene_network(rods, net_model, genes=gene_list, heads="self", truth=planted,
                           progress=False)  # fmt: skip
    selected = net.params["selected_heads"]
    assert selected and all(0 <= h < cfg.n_heads for _, h in selected)
    assert [0, 0] in selected
    assert len(net.params["head_selection"]["coef"]) == cfg.n_layers * cfg.n_heads
    np.testing.assert_allclose(np.asarray(net.matrix).sum(axis=1), 1.0, atol=1e-5)
    # the same truth as a GeneNetwork (labelled, any gene order)
    order = np.random.default_rng(1).permutation(len(gene_list))
    truth = GeneNetwork(planted[np.ix_(order, order)], genes=[gene_list[i] for i in order])
    again = get_gene_network(rods, net_model, genes=gene_list, heads="self", truth=truth,
                             progress=False)  # fmt: skip
    assert again.params["selected_heads"] == selected


def test_omni_heads_use_the_bengrn_omnipath_truth(net_model, rods, omnipath_path, monkeypatch):
    """``heads="omni"`` selects heads on OmniPath as :func:`bengrn.truths.omnipath` filters it."""
    import scdataloader.datasets as datasets
    from bengrn.truths import omnipath
    from scdataloader.genes import ids_to_symbols

    monkeypatch.setattr(datasets, "fetch", lambda name, **kw: omnipath_path)
    truth = omnipath()
    vocab = set(net_model.genes)
    ids = [g for g in rods.var_names if g in vocab]
    symbols = dict(zip(ids, ids_to_symbols(ids, "human"), strict=True))
    known, in_truth = set(truth.genes), {}
    for g in ids:  # one id per symbol (pseudoautosomal genes have two)
        if symbols[g] in known:
            in_truth.setdefault(symbols[g], g)
    in_truth = list(in_truth.values())
    # the TFs with the most targets among those genes, and their targets
    sub = truth.subset([symbols[g] for g in in_truth])
    m = sub.matrix.tocsc()
    regs = np.argsort(-np.diff(m.indptr))[:5]
    targets = np.unique(np.concatenate([m[:, r].indices for r in regs]))[:60]
    keep = sorted(set(regs) | set(targets))
    by_symbol = {symbols[g]: g for g in in_truth}
    genes = [by_symbol[sub.genes[i]] for i in keep]
    net = get_gene_network(rods, net_model, genes=genes, heads="omni", progress=False)
    selected = net.params["selected_heads"]
    assert selected and net.n_genes == len(genes)
    np.testing.assert_allclose(np.asarray(net.matrix).sum(axis=1), 1.0, atol=1e-5)
