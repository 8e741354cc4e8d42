"""The ``bengrn`` runner and command line: results tables, PR curves, baselines."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from bengrn import GeneNetwork, metrics
from bengrn.cli import main, most_variable_genes
from bengrn.runner import load_network, run


def _truth_and_networks(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n)]
    truth = np.zeros((n, n), dtype=np.float32)  # target x regulator
    for reg in range(5):
        targets = rng.choice([i for i in range(n) if i != reg], size=6, replace=False)
        truth[targets, reg] = 1
    planted = truth * 2 + rng.random((n, n)).astype(np.float32)
    np.fill_diagonal(planted, 0)
    noise = rng.random((n, n)).astype(np.float32)
    np.fill_diagonal(noise, 0)
    truth_net = GeneNetwork(truth, genes, method="toy-truth")
    return (
        truth_net,
        GeneNetwork(planted, genes, method="planted"),
        GeneNetwork(noise, genes, method="noise"),
    )


def _edge_file(net: GeneNetwork, path):
    table = net.edges()[["regulator", "target"]]
    table.to_csv(path, sep="\t", header=False, index=False)
    return path


def test_run_writes_table_and_curves(tmp_path):
    truth, planted, noise = _truth_and_networks()
    table = run({"planted": planted, "noise": noise}, truth, out=tmp_path)
    assert list(table["network"]) == ["planted", "noise"]
    written = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    expected = metrics.evaluate(planted, truth)
    assert table.loc[0, "epr"] == pytest.approx(expected.epr)
    assert table.loc[0, "auprc"] == pytest.approx(expected.auprc)
    assert table.loc[0, "epr"] > 3 * table.loc[1, "epr"]
    for name in ("pr_curves.png", "pr_planted.png", "pr_noise.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_run_options_transpose_and_tf_only(tmp_path):
    truth, planted, _ = _truth_and_networks()
    flipped = planted.transpose()  # now regulator x target read as target x regulator
    straight = run([planted], truth)
    transposed = run([GeneNetwork(flipped.matrix, flipped.genes)], truth, transpose=True)
    assert transposed.loc[0, "epr"] == pytest.approx(straight.loc[0, "epr"])
    tf_only = run([planted], truth, tf_only=True)
    assert tf_only.loc[0, "n_regulators"] == 5
    assert tf_only.loc[0, "prevalence"] > straight.loc[0, "prevalence"]
    with pytest.raises(ValueError, match="tf_only or regulators"):
        run([planted], truth, tf_only=True, regulators=["G0"])


def test_load_network_formats(tmp_path):
    _, planted, _ = _truth_and_networks()
    planted.write(tmp_path / "net.h5ad")
    assert np.allclose(load_network(tmp_path / "net.h5ad").matrix, planted.matrix)
    edges = planted.edges(top_k=50)
    edges.to_csv(tmp_path / "edges.csv", index=False)
    from_csv = load_network(tmp_path / "edges.csv")
    assert from_csv.edges(top_k=1)["score"].iloc[0] == pytest.approx(edges["score"].iloc[0])
    # a GRnnData-style AnnData: varp["GRN"] is regulator x target
    grn = ad.AnnData(var=pd.DataFrame(index=planted.genes))
    grn.varp["GRN"] = np.asarray(planted.matrix).T.copy()
    grn.write_h5ad(tmp_path / "grn.h5ad")
    back = load_network(tmp_path / "grn.h5ad").as_target_by_regulator()
    assert np.allclose(np.asarray(back.matrix), planted.matrix)
    plain = ad.AnnData(var=pd.DataFrame(index=planted.genes))
    plain.varp["scores"] = np.asarray(planted.matrix)
    plain.write_h5ad(tmp_path / "plain.h5ad")
    with pytest.raises(ValueError, match="orientation"):
        load_network(tmp_path / "plain.h5ad")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "absent.h5ad")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="regulator, target, score"):
        load_network(tmp_path / "bad.csv")


def test_cli_run(tmp_path, capsys):
    truth, planted, noise = _truth_and_networks()
    planted.write(tmp_path / "planted.h5ad")
    noise.write(tmp_path / "noise.h5ad")
    truth_file = _edge_file(truth, tmp_path / "truth.tsv")
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--network",
            str(tmp_path / "planted.h5ad"),
            str(tmp_path / "noise.h5ad"),
            "--truth",
            str(truth_file),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "planted" in printed and "epr" in printed
    table = pd.read_csv(out / "results.csv")
    assert set(table["network"]) == {"planted", "noise"}
    assert (out / "pr_curves.png").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    _, planted, _ = _truth_and_networks()
    planted.write(tmp_path / "planted.h5ad")
    code = main(
        ["run", "--network", str(tmp_path / "planted.h5ad"), "--truth", "nope", "--out", "o"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "nope" in err


def test_cli_missing_network_file(tmp_path, capsys):
    truth, _, _ = _truth_and_networks()
    truth_file = _edge_file(truth, tmp_path / "truth.tsv")
    code = main(
        [
            "run",
            "--network",
            str(tmp_path / "absent.h5ad"),
            "--truth",
            str(truth_file),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err and "absent.h5ad" in err
    assert not (tmp_path / "o" / "results.csv").exists()


def test_most_variable_genes(retina_full):
    genes = most_variable_genes(retina_full, 50)
    assert len(genes) == 50 and len(set(genes)) == 50
    x = retina_full[:, genes].X
    assert (np.asarray(x.sum(axis=0)).ravel() > 0).all()


def test_cli_baseline_correlation_and_genie3(retina_path, tmp_path, capsys):
    out = tmp_path / "corr.h5ad"
    args = ["baseline", "correlation", "--adata", str(retina_path), "--n-genes", "40"]
    args += ["--cell-type-key", "cell_type_ontology_term_id", "--cell-type", "CL:0000604"]
    assert main([*args, "--out", str(out)]) == 0
    net = GeneNetwork.read(out)
    assert net.n_genes == 40 and net.method
    m = np.asarray(net.matrix)
    assert np.allclose(np.diag(m), 0) and (m >= 0).all()
    # an existing output is not replaced without --overwrite
    assert main([*args, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    g3 = tmp_path / "genie3.h5ad"
    args = ["baseline", "genie3", "--adata", str(retina_path), "--n-genes", "15"]
    assert main([*args, "--trees", "5", "--out", str(g3)]) == 0
    net = GeneNetwork.read(g3)
    m = np.asarray(net.matrix)
    assert net.n_genes == 15 and np.allclose(np.diag(m), 0)
    # GENIE3 importances of each target's forest sum to 1 over the other genes
    assert np.allclose(m.sum(axis=1)[m.sum(axis=1) > 0], 1, atol=1e-4)


def test_cli_baseline_bad_cell_type(retina_path, tmp_path, capsys):
    code = main(
        [
            "baseline",
            "random",
            "--adata",
            str(retina_path),
            "--cell-type-key",
            "cell_type_ontology_term_id",
            "--cell-type",
            "CL:9999999",
            "--out",
            str(tmp_path / "r.h5ad"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "CL:9999999" in err and "present" in err
    assert not (tmp_path / "r.h5ad").exists()
