"""The ``scdataloader`` command line on real files, good and bad."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
import scipy.sparse as sp

from scdataloader.cli import main


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# ----------------------------------------------------------------- info


def test_info_on_the_retina_file(retina_path, capsys):
    assert main(["info", str(retina_path)]) == 0
    out = capsys.readouterr().out
    assert "cells: 1,000" in out
    assert "genes: 70,116" in out
    assert "adata.X: counts" in out
    assert "cell_type_ontology_term_id: 11 values" in out
    assert "label columns: cell_type_ontology_term_id" in out
    assert "organism: human" in out
    assert "QC (scPRINT rules)" in out
    assert "1,000 -> 1,000 kept" in out
    assert "dataset: kept" in out


def test_info_reports_duplicated_symbols(mouse_path, capsys):
    assert main(["info", str(mouse_path)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    out = captured.out
    assert "cells: 10,000" in out and "genes: 1,000" in out
    assert "QC: cannot run" in out and "duplicated" in out and "Rp1" in out
    # the hint names the command-line flag, not the Python argument
    assert "--gene-key gene_ids" in out and "gene_key=" not in out


def test_info_layer_option(retina_path, capsys):
    assert main(["info", str(retina_path), "--layer", "counts"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "--layer counts" in line and "not in adata.layers" in line


# ----------------------------------------------------------------- preprocess


def test_preprocess_writes_ensembl_ids_atomically(wu2020_path, wu2020, tmp_path, capsys):
    out = tmp_path / "out" / "wu2020.h5ad"
    assert main(["preprocess", str(wu2020_path), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["wu2020.h5ad"]  # no temp file left
    back = ad.read_h5ad(out)
    assert back.var_names.str.startswith("ENSG").all() and back.var_names.is_unique
    assert back.n_vars > 10_000
    assert 0 < back.n_obs <= wu2020.n_obs
    assert set(back.obs_names) <= set(wu2020.obs_names)
    # each kept gene holds the input's counts of the name it was mapped from
    positions = wu2020.var_names.get_indexer(back.var["input_name"])
    assert (positions >= 0).all()
    cells = wu2020.obs_names.get_indexer(back.obs_names[:20])
    src = sp.csr_matrix(wu2020.X)[cells][:, positions]
    assert abs(sp.csr_matrix(back.X[:20]) - src).max() == 0


def test_preprocess_into_a_folder_is_a_clear_error(retina_path, tmp_path, capsys):
    # the input is fine; the output path is an existing folder
    target = tmp_path / "out.h5ad"
    target.mkdir()
    assert main(["preprocess", str(retina_path), str(target)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "is a folder" in line  # refused before any work
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]
    assert list(target.iterdir()) == []


def test_preprocess_existing_output_and_the_input_itself(retina_path, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"an earlier result")
    assert main(["preprocess", str(retina_path), str(out)]) == 2
    assert "exists; pass --overwrite" in _one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"an earlier result"
    assert main(["preprocess", str(retina_path), str(out), "--overwrite"]) == 0
    assert ad.read_h5ad(out).n_obs > 0
    copy = tmp_path / "in.h5ad"
    copy.write_bytes(retina_path.read_bytes())
    assert main(["preprocess", str(copy), str(copy), "--overwrite"]) == 2
    assert "is an input file" in _one_line_error(capsys.readouterr().err)
    assert copy.read_bytes() == retina_path.read_bytes()  # the input is never written over


# ----------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_files(retina_path, tmp_path_factory) -> dict[str, Path]:
    import scanpy as sc

    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.h5ad"
    empty.write_bytes(b"")
    truncated = folder / "truncated.h5ad"
    shutil.copyfile(retina_path, truncated)
    with open(truncated, "r+b") as fh:
        fh.truncate(truncated.stat().st_size // 2)
    lognorm = ad.read_h5ad(retina_path)[:300].copy()
    sc.pp.normalize_total(lognorm)
    sc.pp.log1p(lognorm)
    lognorm.write_h5ad(folder / "lognorm.h5ad")
    sc.datasets.pbmc68k_reduced().write_h5ad(folder / "scaled.h5ad")
    return {
        "missing": folder / "missing.h5ad",
        "empty": empty,
        "truncated": truncated,
        "lognorm": folder / "lognorm.h5ad",
        "scaled": folder / "scaled.h5ad",
    }


@pytest.mark.parametrize(
    ("kind", "command", "expected"),
    [
        ("missing", "info", "no such file"),
        ("missing", "preprocess", "no such file"),
        ("empty", "info", "empty (0 bytes)"),
        ("empty", "preprocess", "empty (0 bytes)"),
        ("truncated", "info", "truncated"),
        ("truncated", "preprocess", "truncated"),
        ("lognorm", "preprocess", "--recover-counts"),
        ("scaled", "preprocess", "negative values"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(bad_files, tmp_path, capsys, kind, command, expected):
    path = bad_files[kind]
    argv = ["info", str(path)] if command == "info" else ["preprocess", str(path)]
    if command == "preprocess":
        argv.append(str(tmp_path / "out.h5ad"))
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert expected in line
    assert str(path) in line or kind in ("lognorm", "scaled")
    assert "recover_counts=True" not in line
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_info_on_bad_counts_explains_without_failing(bad_files, capsys):
    assert main(["info", str(bad_files["lognorm"])]) == 0
    out = capsys.readouterr().out
    assert "adata.X: recoverable" in out and "--recover-counts" in out
    assert main(["info", str(bad_files["scaled"])]) == 0
    out = capsys.readouterr().out
    assert "adata.X: scaled" in out and "negative values" in out


def test_recover_counts_flag_recovers_the_raw_counts(bad_files, retina_full, tmp_path, capsys):
    out = tmp_path / "recovered.h5ad"
    argv = ["preprocess", str(bad_files["lognorm"]), str(out), "--recover-counts"]
    assert main(argv) == 0
    back = ad.read_h5ad(out)
    assert back.n_obs == 300
    raw = retina_full[:300, back.var_names].X
    assert abs(sp.csr_matrix(back.X) - sp.csr_matrix(raw)).max() == 0


# ----------------------------------------------------------------- console script


def test_console_script(retina_path, tmp_path):
    exe = shutil.which("scdataloader", path=str(Path(sys.executable).parent))
    assert exe is not None, "the scdataloader console script is not installed"
    ok = subprocess.run([exe, "info", str(retina_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "cells: 1,000" in ok.stdout and "genes: 70,116" in ok.stdout
    bad = subprocess.run(
        [exe, "info", str(tmp_path / "nope.h5ad")], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert _one_line_error(bad.stderr).startswith("error: ")
