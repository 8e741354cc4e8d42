"""Hardening: every public entry point, Python and command line, fed bad input.

Each case checks that the failure is one of the project's errors (an
:class:`~scdataloader.errors.InputError` subclass or :class:`scprint.CheckpointError`; on
the command line: exit code 2 and one ``error: ...`` line on stderr, no traceback), that
the message names the problem, that the input is left untouched (a file byte for byte,
an AnnData's X, obs and var) and that no output, finished or partial, is left behind.

The sweeps are tables of (entry point x bad input): a new entry point adds a row to
``API`` or ``CLI``. Inputs are 50 retina cells over 1,500 genes; models are built once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scprint
from bengrn import GeneNetwork, baselines
from bengrn.cli import main as bengrn_main
from bengrn.runner import run
from scdataloader.cli import main as scdataloader_main
from scdataloader.errors import (
    CountsError,
    GeneMappingError,
    InputError,
    LabelError,
    OrganismMismatchError,
    QCError,
)
from scdataloader.io import write_h5ad_atomic
from scdataloader.preprocess import preprocess, validate_counts
from scprint import CheckpointError
from scprint.cli import main as scprint_main
from scprint.tabular import TabularClassifier, load_model
from scprint.tabular import fit as tabular_fit
from scprint.tasks import classify, denoise, embed, get_gene_network
from scprint.tl import dge, write_table

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N_CELLS, N_GENES = 50, 1500
ROD = "retinal rod cell"  # 7 of the 50 cells: the gene-network cells
GANGLION = "retinal ganglion cell"  # 25 of the 50 cells: the cells tested for DGE
DGE_GENES = 30


# --------------------------------------------------------------------------- helpers


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _state(adata: ad.AnnData) -> tuple:
    return _dense(adata.X).copy(), adata.obs.copy(), adata.var.copy(), adata.shape


def _assert_unchanged(adata: ad.AnnData, state: tuple) -> None:
    X, obs, var, shape = state
    assert adata.shape == shape
    np.testing.assert_array_equal(_dense(adata.X), X)
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporary files included)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def _cli_error(capsys) -> str:
    """The one ``error: ...`` line of stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _save_module(module, path: Path) -> Path:
    """Write a model as a Lightning checkpoint, as training does."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path, weights_only=True)
    return path


def _untrained(genes, like) -> Any:
    """A debug-size scPRINT model over ``genes`` with the label sets of ``like``."""
    from scprint.train import ScPrintModule

    pl.seed_everything(0, verbose=False)
    h = dict(like.hparams)
    return ScPrintModule(list(genes), h["hierarchies"], h["label_keys"], preset="debug")


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def cells(retina_full) -> ad.AnnData:
    """50 retina cells over the 1,500 genes with most counts, with a donor and a
    condition column (donors d0, d1 normal; d2, d3 disease) for differential expression."""
    top = np.argsort(-np.asarray(retina_full.X.sum(axis=0)).ravel())[:N_GENES]
    a = retina_full[:N_CELLS, np.sort(top)].copy()
    a.obs["donor"] = [f"d{i % 4}" for i in range(a.n_obs)]
    a.obs["condition"] = np.where(np.arange(a.n_obs) % 4 < 2, "normal", "disease")
    a.obsm.clear()
    return a


def _with_x(a: ad.AnnData, X: np.ndarray, sparse: bool = True) -> ad.AnnData:
    a = a.copy()
    a.X = sp.csr_matrix(X.astype(np.float32)) if sparse else X.astype(np.float32)
    if sparse:
        a.X.eliminate_zeros()
    return a


def _lognorm(a):
    X = _dense(a.X).astype(np.float64)
    return _with_x(a, np.log1p(X / X.sum(1, keepdims=True) * 1e4))


def _nan(a):
    X = _dense(a.X).copy()
    X[0, :5] = np.nan
    return _with_x(a, X, sparse=False)


def _inf(a):
    X = _dense(a.X).copy()
    X[1, 3] = np.inf
    return _with_x(a, X, sparse=False)


def _negative(a):
    X = _dense(a.X).copy()
    X[2, :3] = -1
    return _with_x(a, X)


def _empty_cells(a):
    """Three rod cells with no counts (rods: the cells of the gene-network call)."""
    X = _dense(a.X).copy()
    X[np.flatnonzero(a.obs["cell_type"].to_numpy() == ROD)[:3]] = 0
    return _with_x(a, X)


def _all_zero(a):
    return _with_x(a, np.zeros(a.shape))


def _unknown_genes(a):
    a = a.copy()
    a.var_names = [f"NOTAGENE{i}" for i in range(a.n_vars)]
    a.var = a.var[[]]
    return a


def _symbols(a):
    a = a.copy()
    a.var_names = a.var["feature_name"].astype(str).to_numpy()
    a.var_names_make_unique()
    a.var = a.var[[]]
    return a


def _mouse(a):
    """The counts under mouse genes (Ensembl ids, symbols in ``feature_name``)."""
    from scdataloader import load_genes

    table = load_genes("mouse")
    table = table[table["biotype"] == "protein_coding"].iloc[: a.n_vars]
    a = a.copy()
    a.var = pd.DataFrame({"feature_name": table["symbol"].to_numpy()}, index=table.index)
    a.obs["organism_ontology_term_id"] = "NCBITaxon:10090"
    return a


def _zero_cells(a):
    return a[:0].copy()


def _zero_genes(a):
    return a[:, :0].copy()


def _no_obs(a):
    a = a.copy()
    a.obs = a.obs[[]]
    return a


BAD: dict[str, Callable[[ad.AnnData], ad.AnnData]] = {
    "log-normalised": _lognorm,
    "NaN": _nan,
    "inf": _inf,
    "negative": _negative,
    "empty cells": _empty_cells,
    "all zero": _all_zero,
    "unknown genes": _unknown_genes,
    "symbols": _symbols,
    "mouse": _mouse,
    "0 cells": _zero_cells,
    "0 genes": _zero_genes,
    "no obs columns": _no_obs,
}

# the expected error of each bad input, unless an entry point says otherwise
EXPECTED: dict[str, tuple[type[Exception], str]] = {
    "log-normalised": (CountsError, r"raw counts|non-integer"),
    "NaN": (CountsError, r"NaN or infinite"),
    "inf": (CountsError, r"NaN or infinite"),
    "negative": (CountsError, r"negative values"),
    "empty cells": (QCError, r"3 (of \d+ )?cells have no counts"),
    "all zero": (CountsError, r"zero counts|no expression"),
    "unknown genes": (GeneMappingError, r"NOTAGENE"),
    "mouse": (OrganismMismatchError, r"mouse genes.*human"),
    "0 cells": (InputError, r"(?i)empty \(0 cells"),
    "0 genes": (InputError, r"(?i)empty \(50 cells x 0 genes"),
}
COUNTS = ["log-normalised", "NaN", "negative", "all zero", "0 cells", "0 genes"]  # (inf: as NaN)
SKIP = "not applicable"


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def model(trained):
    return trained


@pytest.fixture(scope="module")
def clf(cells) -> TabularClassifier:
    return tabular_fit(cells, label_key="cell_type", model="linear", max_epochs=2,
                       progress=False, accelerator="cpu", calibrate=False)  # fmt: skip


@pytest.fixture(scope="module")
def files(cells, clf, tmp_path_factory) -> dict[str, Path]:
    """Every bad input as a file, plus broken files, a tabular model and a gene list."""
    folder = tmp_path_factory.mktemp("inputs")
    out = {"good": folder / "good.h5ad", "missing": folder / "missing.h5ad"}
    cells.write_h5ad(out["good"])
    for name, make in BAD.items():
        path = folder / (name.replace(" ", "_") + ".h5ad")
        make(cells).write_h5ad(path)
        out[name] = path
    out["0-byte file"] = folder / "zero_bytes.h5ad"
    out["0-byte file"].write_bytes(b"")
    out["text file"] = folder / "table.h5ad"
    out["text file"].write_text("cell,gene,count\nc1,g1,3\n")
    out["truncated"] = folder / "truncated.h5ad"
    data = out["good"].read_bytes()
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["tabular model"] = clf.save(folder / "tabular.pt")
    out["genes"] = folder / "genes.txt"
    out["genes"].write_text("\n".join(cells.var_names[:DGE_GENES]) + "\n")
    return out


# --------------------------------------------------------------------------- Python API


def _dge(a: ad.AnnData, ctx) -> Any:
    genes = list(a.var_names[:DGE_GENES]) or None
    return dge(a, groupby="cell_type", condition="condition", reference="normal",
               donor_key="donor", genes=genes, groups=[GANGLION], min_donors=2,
               progress=False)  # fmt: skip


API: dict[str, tuple[Callable, dict[str, Any]]] = {
    # entry point: (call(adata, ctx), {input: its error here; None: accepted; SKIP: not run})
    "embed": (
        lambda a, c: embed(a, c["model"], max_len=128, batch_size=25, progress=False),
        {"symbols": None, "no obs columns": None},
    ),
    "denoise": (
        lambda a, c: denoise(a, c["model"], max_len=128, batch_size=25, progress=False),
        {"symbols": None, "no obs columns": None},
    ),
    "classify": (
        lambda a, c: classify(a, c["model"], max_len=128, batch_size=25, progress=False),
        {"symbols": None, "no obs columns": None},
    ),
    "get_gene_network": (
        lambda a, c: get_gene_network(
            a,
            c["model"],
            cell_type=ROD,
            cell_type_key="cell_type",
            n_genes=50,
            min_cells=5,
            max_len=128,
            progress=False,
        ),
        {
            "symbols": None,
            "no obs columns": (LabelError, r"no column 'cell_type'"),
        },
    ),  # fmt: skip
    "tabular.fit": (
        lambda a, c: tabular_fit(
            a,
            label_key="cell_type",
            model="linear",
            max_epochs=1,
            progress=False,
            accelerator="cpu",
            calibrate=False,
        ),
        {
            "unknown genes": None,  # a new model: any gene names
            "symbols": None,
            "mouse": None,
            "no obs columns": (LabelError, r"no column 'cell_type'"),
        },
    ),  # fmt: skip
    "tabular.predict_proba": (
        lambda a, c: c["clf"].predict_proba(a),
        {
            "unknown genes": (GeneMappingError, r"None of the model's 1500 genes"),
            "symbols": (GeneMappingError, r"symbols vs Ensembl ids"),
            "mouse": (GeneMappingError, r"None of the model's 1500 genes"),
            "no obs columns": None,
        },
    ),
    "tl.dge": (
        _dge,
        {
            "empty cells": None,  # summed into pseudobulks: harmless
            "all zero": (InputError, r"No gene is expressed"),
            "unknown genes": SKIP,  # gene names play no part (and DESeq2 is slow)
            "symbols": SKIP,
            "mouse": SKIP,
            "no obs columns": (InputError, r"not a column of adata.obs"),
        },
    ),
    "preprocess": (
        lambda a, c: preprocess(a, min_cells=1, min_genes=10, min_genes_per_cell=1),
        {
            "empty cells": None,  # dropped by QC
            "all zero": (QCError, r"fails quality control"),
            "unknown genes": (GeneMappingError, r"NOTAGENE"),
            "symbols": None,
            "mouse": None,  # declared mouse: mapped as mouse
            "0 cells": (QCError, r"empty \(0 cells"),
            "0 genes": (QCError, r"empty \(50 cells x 0 genes"),
            "no obs columns": None,
        },
    ),
    "validate_counts": (
        lambda a, c: validate_counts(a.X),
        {
            "empty cells": None,
            "unknown genes": None,
            "symbols": None,
            "mouse": None,
            "0 cells": (CountsError, r"empty \(shape \(0, 1500\)\)"),
            "0 genes": (CountsError, r"empty \(shape \(50, 0\)\)"),
            "no obs columns": None,
        },
    ),
    "bengrn.genie3": (
        lambda a, c: baselines.genie3(a, genes=list(a.var_names[:20]), n_trees=5, progress=False),
        {
            "all zero": (QCError, r"50 cells have no counts"),
            "unknown genes": None,
            "symbols": None,
            "mouse": None,
            "no obs columns": None,
        },
    ),  # fmt: skip
    "bengrn.correlation": (
        lambda a, c: baselines.correlation(a, genes=list(a.var_names[:20])),
        {
            "all zero": (QCError, r"50 cells have no counts"),
            "unknown genes": None,
            "symbols": None,
            "mouse": None,
            "no obs columns": None,
        },
    ),  # fmt: skip
}


def _api_cases(accepted: bool = False) -> list:
    cases = []
    for entry, (_, overrides) in API.items():
        for kind in BAD:
            expected = overrides.get(kind, EXPECTED.get(kind))
            if expected == SKIP:
                continue
            if accepted and expected is None:
                cases.append(pytest.param(entry, kind, id=f"{entry}-{kind}"))
            elif not accepted and expected is not None:
                cases.append(pytest.param(entry, kind, *expected, id=f"{entry}-{kind}"))
    return cases


@pytest.fixture(scope="module")
def ctx(cells, model, clf) -> dict[str, Any]:
    return {"cells": cells, "model": model, "clf": clf}


@pytest.mark.parametrize("entry", list(API))
def test_api_control_on_good_input(entry, ctx):
    """Every entry point runs on the good input: the failures below are the bad input's."""
    a = ctx["cells"].copy()
    API[entry][0](a, ctx)


@pytest.mark.parametrize(("entry", "kind", "error", "pattern"), _api_cases())
def test_api_bad_input(entry, kind, error, pattern, ctx):
    a = BAD[kind](ctx["cells"])
    before = _state(a)
    with pytest.raises(error, match=pattern):
        API[entry][0](a, ctx)
    _assert_unchanged(a, before)


@pytest.mark.parametrize(("entry", "kind"), _api_cases(accepted=True))
def test_api_accepts(entry, kind, ctx):
    """What is not bad input for an entry point runs (e.g. QC drops empty cells, a new
    tabular model takes any gene names), and leaves X and var alone."""
    a = BAD[kind](ctx["cells"])
    X, _, var, shape = _state(a)
    API[entry][0](a, ctx)
    assert a.shape == shape
    np.testing.assert_array_equal(_dense(a.X), X)
    pd.testing.assert_frame_equal(a.var, var)


def test_gene_symbols_work_like_ensembl_ids(ctx):
    """Symbols are not bad input for the scPRINT tasks: they map to the same genes."""
    by_id, by_symbol = ctx["cells"].copy(), _symbols(ctx["cells"])
    embed(by_id, ctx["model"], max_len=128, progress=False, class_embeddings=False)
    embed(by_symbol, ctx["model"], max_len=128, progress=False, class_embeddings=False)
    a, b = by_id.obsm["X_scprint"], by_symbol.obsm["X_scprint"]
    assert np.isfinite(b).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


# --------------------------------------------------------------------------- command lines


def _scprint_task(command: str, *extra: str) -> Callable:
    def argv(f, out):
        return scprint_main([command, "--adata", str(f["in"]), "--ckpt", str(f["ckpt"]),
                             "--out", str(out / "result.h5ad"), "--max-len", "128",
                             "--no-progress", *extra])  # fmt: skip

    return argv


CLI: dict[str, tuple[Callable, set[str]]] = {
    # command: (run(files, out folder) -> exit code, bad inputs it reads and refuses)
    "scprint embed": (_scprint_task("embed"), set(COUNTS) | {"unknown genes", "mouse"}),
    "scprint denoise": (_scprint_task("denoise"), set(COUNTS) | {"mouse", "empty cells"}),
    "scprint classify": (_scprint_task("classify"), set(COUNTS) | {"mouse"}),
    "scprint gn": (
        _scprint_task(
            "gn",
            "--set",
            f"cell_type={ROD!r}",
            "--set",
            "cell_type_key='cell_type'",
            "--set",
            "n_genes=50",
            "--set",
            "min_cells=5",
        ),
        set(COUNTS) | {"no obs columns", "empty cells"},
    ),  # fmt: skip
    "scprint tabular fit": (
        lambda f, out: scprint_main(
            [
                "tabular",
                "fit",
                "--adata",
                str(f["in"]),
                "--label-key",
                "cell_type",
                "--out",
                str(out / "model.pt"),
                "--model",
                "linear",
                "--max-epochs",
                "1",
                "--no-progress",
                "--accelerator",
                "cpu",
            ]
        ),
        set(COUNTS) - {"0 cells"} | {"no obs columns"},
    ),  # fmt: skip
    "scprint tabular predict": (
        lambda f, out: scprint_main(
            [
                "tabular",
                "predict",
                "--adata",
                str(f["in"]),
                "--model",
                str(f["tabular model"]),
                "--out-dir",
                str(out / "pred"),
            ]
        ),
        set(COUNTS) | {"symbols", "mouse", "empty cells"},
    ),  # fmt: skip
    "scprint tabular explain": (
        lambda f, out: scprint_main(
            [
                "tabular",
                "explain",
                "--adata",
                str(f["in"]),
                "--model",
                str(f["tabular model"]),
                "--out-dir",
                str(out / "explain"),
            ]
        ),
        {"log-normalised", "negative", "unknown genes"},
    ),  # fmt: skip
    "scprint dge": (
        lambda f, out: scprint_main(
            [
                "dge",
                "--adata",
                str(f["in"]),
                "--groupby",
                "cell_type",
                "--condition",
                "condition",
                "--reference",
                "normal",
                "--donor-key",
                "donor",
                "--genes",
                str(f["genes"]),
                "--groups",
                GANGLION,
                "--out",
                str(out / "dge"),
                "--no-progress",
            ]
        ),
        {"log-normalised", "NaN", "negative", "no obs columns"},
    ),  # fmt: skip
    "scdataloader preprocess": (
        lambda f, out: scdataloader_main(
            [
                "preprocess",
                str(f["in"]),
                str(out / "pre.h5ad"),
                "--min-cells",
                "1",
                "--min-genes",
                "10",
                "--min-genes-per-cell",
                "1",
            ]
        ),
        set(COUNTS) | {"unknown genes"},
    ),  # fmt: skip
    "scdataloader info": (lambda f, out: scdataloader_main(["info", str(f["in"])]), set()),
    "scprint fit": (
        lambda f, out: scprint_main(
            [
                "fit",
                "--config",
                str(CONFIGS / "debug.yaml"),
                "--data.collection",
                f"[{f['in']}]",
                "--trainer.max_steps",
                "1",
                "--trainer.default_root_dir",
                str(out / "runs"),
            ]
        ),
        {"log-normalised", "0 cells"},  # read by the data module before any training
    ),  # fmt: skip
    "bengrn baseline genie3": (
        lambda f, out: bengrn_main(
            [
                "baseline",
                "genie3",
                "--adata",
                str(f["in"]),
                "--out",
                str(out / "net.h5ad"),
                "--trees",
                "5",
                "--genes",
                str(f["genes"]),
            ]
        ),
        set(COUNTS) | {"empty cells"},
    ),  # fmt: skip
    "bengrn baseline correlation": (
        lambda f, out: bengrn_main(
            [
                "baseline",
                "correlation",
                "--adata",
                str(f["in"]),
                "--out",
                str(out / "net.h5ad"),
                "--genes",
                str(f["genes"]),
            ]
        ),
        {"log-normalised", "NaN", "negative", "all zero", "0 cells"},
    ),  # fmt: skip
}

# every command refuses these files, with these words
BROKEN_FILES = {
    "missing": r"missing\.h5ad.*(no such file|not found|does not exist)|"
    r"(no such file|not found|does not exist).*missing\.h5ad",
    "0-byte file": r"empty \(0 bytes\)",
    "text file": r"cannot be opened as an HDF5/h5ad file",
    "truncated": r"truncated",
}
CLI_PATTERNS = {
    "log-normalised": r"raw counts|non-integer",
    "NaN": r"NaN",
    "inf": r"NaN or infinite",
    "negative": r"negative values",
    "empty cells": r"3 (of \d+ )?cells have no counts",
    "all zero": r"zero counts|no expression|no counts|No gene is expressed|quality control",
    "unknown genes": r"NOTAGENE",
    "symbols": r"symbols vs Ensembl",
    "mouse": r"mouse genes|None of the model's",
    "0 cells": r"(?i)empty \(0 cells|no cells",
    "0 genes": r"(?i)empty \(50 cells x 0 genes",
    "no obs columns": r"no column '(cell_type|condition)'|'(cell_type|condition)' is not a column",
}


def _cli_cases() -> list:
    cases = []
    for command, (_, kinds) in CLI.items():
        for kind, pattern in BROKEN_FILES.items():
            cases.append(pytest.param(command, kind, pattern, id=f"{command}-{kind}"))
        for kind in sorted(kinds):
            cases.append(pytest.param(command, kind, CLI_PATTERNS[kind], id=f"{command}-{kind}"))
    return cases


@pytest.fixture
def cli_files(files, trained_ckpt) -> dict[str, Path]:
    return {**files, "ckpt": trained_ckpt}


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
@pytest.mark.parametrize(("command", "kind", "pattern"), _cli_cases())
def test_cli_bad_input(command, kind, pattern, cli_files, tmp_path, capsys):
    f = {**cli_files, "in": cli_files[kind]}
    digest = _sha(f["in"]) if f["in"].exists() else None
    out = tmp_path / "out"
    out.mkdir()
    assert CLI[command][0](f, out) == 2
    line = _cli_error(capsys)
    assert re.search(pattern, line), line
    if digest is not None:
        assert _sha(f["in"]) == digest
    assert _files(out) == []


@pytest.mark.parametrize("kind", list(BROKEN_FILES))
@pytest.mark.parametrize("role", ["--network", "--truth"])
def test_bengrn_run_bad_network_files(role, kind, files, networks, tmp_path, capsys):
    bad = files[kind]
    paths = {"--network": networks["net"], "--truth": networks["truth"], role: bad}
    out = tmp_path / "out"
    argv = ["run", "--network", str(paths["--network"]), "--truth", str(paths["--truth"]),
            "--out", str(out)]  # fmt: skip
    assert bengrn_main(argv) == 2
    line = _cli_error(capsys)
    assert str(bad) in line and re.search(BROKEN_FILES[kind], line), line
    assert _files(out) == []


def _net(genes, matrix=None) -> GeneNetwork:
    m = np.random.default_rng(0).random((len(genes), len(genes))) if matrix is None else matrix
    return GeneNetwork(np.asarray(m, dtype=float), list(genes))


BENGRN_BAD = {  # bengrn's own checks raise ValueError (its scores are not user data)
    "no shared gene": (lambda out: run(_net("ABC"), _net("XYZ"), out=out), r"share 0 gene"),
    "NaN scores": (lambda out: _net("AB", [[np.nan, 1], [1, 0]]), r"non-finite"),
    "not square": (lambda out: _net("AB", np.ones((2, 3))), r"square"),
    "unknown truth": (lambda out: run(_net("ABC"), "nosuchtruth", out=out), r"nosuchtruth"),
}


@pytest.mark.parametrize("case", list(BENGRN_BAD))
def test_bengrn_bad_networks(case, tmp_path):
    make, pattern = BENGRN_BAD[case]
    with pytest.raises(ValueError, match=pattern):
        make(tmp_path / "out")
    assert _files(tmp_path) == []


def test_gene_embeddings_missing_fasta(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["gene-embeddings", "--fasta", str(tmp_path / "absent.fa.gz"), "--out",
            str(out / "genes.parquet"), "-q"]  # fmt: skip
    assert scprint_main(argv) == 2
    assert "absent.fa.gz" in _cli_error(capsys)
    assert _files(out) == []


# --------------------------------------------------------------------------- checkpoints


class _OtherModule(pl.LightningModule):
    """A Lightning module that is not scPRINT."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 2)


@pytest.fixture(scope="module")
def bad_checkpoints(trained_ckpt, files, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    real, tab = trained_ckpt.read_bytes(), files["tabular model"].read_bytes()
    out = {
        "truncated .ckpt": folder / "truncated.ckpt",
        "random bytes": folder / "random.ckpt",
        "0-byte file": folder / "empty.ckpt",
        "truncated tabular .pt": folder / "truncated.pt",
        "plain state dict": folder / "weights.ckpt",
    }
    out["truncated .ckpt"].write_bytes(real[: len(real) // 2])
    out["random bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    out["0-byte file"].write_bytes(b"")
    out["truncated tabular .pt"].write_bytes(tab[: len(tab) // 2])
    torch.save(torch.load(trained_ckpt, weights_only=False)["state_dict"], out["plain state dict"])
    out["other Lightning module"] = _save_module(_OtherModule(), folder / "other.ckpt")
    out["tabular model"] = files["tabular model"]
    out["scPRINT model"] = trained_ckpt
    return out


CORRUPT = r"truncated or corrupt|corrupt"
# scprint.load and load_model: the error each bad file gives (None: a valid model of its kind)
CHECKPOINTS = {
    "truncated .ckpt": (CORRUPT, CORRUPT),
    "random bytes": (CORRUPT, CORRUPT),
    "0-byte file": (CORRUPT, CORRUPT),
    "truncated tabular .pt": (CORRUPT, CORRUPT),
    "plain state dict": (r"not a Lightning checkpoint", r"not a scprint\.tabular"),
    "other Lightning module": (r"not an scPRINT checkpoint", r"not a scprint\.tabular"),
    "tabular model": (r"not an scPRINT checkpoint", None),
    "scPRINT model": (None, r"not a scprint\.tabular"),
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_checkpoint_python(kind, bad_checkpoints):
    path = bad_checkpoints[kind]
    digest = _sha(path)
    for loader, pattern in zip((scprint.load, load_model), CHECKPOINTS[kind], strict=True):
        if pattern is None:
            loader(path)  # the control: a valid file of the loader's kind
            continue
        with pytest.raises(CheckpointError, match=pattern) as caught:
            loader(path)
        assert str(path) in str(caught.value)
    assert _sha(path) == digest


CKPT_COMMANDS: dict[str, tuple[int, Callable]] = {
    # command: (which loader's expectation applies, argv(files, checkpoint, out))
    "scprint embed": (0, lambda f, c, out: ["embed", "--adata", str(f["good"]), "--ckpt",
                                            str(c), "--out", str(out / "x.h5ad")]),
    "scprint gn": (0, lambda f, c, out: ["gn", "--adata", str(f["good"]), "--ckpt", str(c),
                                         "--out", str(out / "net.h5ad")]),
    "scprint tabular predict": (1, lambda f, c, out: ["tabular", "predict", "--adata",
                                                      str(f["good"]), "--model", str(c),
                                                      "--out-dir", str(out / "pred")]),
    "scprint dge": (1, lambda f, c, out: ["dge", "--adata", str(f["good"]), "--groupby",
                                          "cell_type", "--condition", "condition",
                                          "--reference", "normal", "--donor-key", "donor",
                                          "--model", str(c), "--k", "5", "--out",
                                          str(out / "dge")]),
}  # fmt: skip


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        pytest.param(cmd, kind, id=f"{cmd}-{kind}")
        for cmd, (which, _) in CKPT_COMMANDS.items()
        for kind, patterns in CHECKPOINTS.items()
        if patterns[which] is not None
    ],
)
def test_bad_checkpoint_cli(command, kind, files, bad_checkpoints, tmp_path, capsys):
    which, argv = CKPT_COMMANDS[command]
    path = bad_checkpoints[kind]
    digest = _sha(path)
    out = tmp_path / "out"
    assert scprint_main(argv(files, path, out)) == 2
    line = _cli_error(capsys)
    assert re.search(CHECKPOINTS[kind][which], line), line
    assert _sha(path) == digest
    assert _files(out) == []


# --------------------------------------------------------------------------- another vocabulary


@pytest.fixture(scope="module")
def vocab_models(model, cells, tmp_path_factory) -> dict[str, Path]:
    """Untrained debug models over other genes: none of the data's, mouse genes, and a
    vocabulary sharing 600 of the data's 1,500 genes."""
    from scdataloader import load_genes

    folder = tmp_path_factory.mktemp("vocab")
    data = set(cells.var_names)
    absent = [g for g in model.genes if g not in data][:300]
    present = [g for g in model.genes if g in data][:600]
    mouse = load_genes("mouse").index[:300]
    return {
        "no shared gene": _save_module(_untrained(absent, model), folder / "absent.ckpt"),
        "mouse genes": _save_module(_untrained(mouse, model), folder / "mouse.ckpt"),
        "partial": _save_module(_untrained(sorted(present + absent), model),
                                folder / "partial.ckpt"),
    }  # fmt: skip


VOCAB = {
    "no shared gene": (GeneMappingError, r"None of the data's genes is in the model's vocabulary"),
    "mouse genes": (OrganismMismatchError, r"human genes but the model knows only mouse"),
}
TASKS = {
    "embed": lambda a, m: embed(a, m, max_len=128, progress=False),
    "denoise": lambda a, m: denoise(a, m, max_len=128, progress=False),
    "classify": lambda a, m: classify(a, m, max_len=128, progress=False),
    "get_gene_network": lambda a, m: get_gene_network(a, m, n_genes=50, max_len=128,
                                                      progress=False),
}  # fmt: skip


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("vocab", list(VOCAB))
def test_model_of_another_vocabulary(task, vocab, vocab_models, cells):
    a = cells.copy()
    before = _state(a)
    error, pattern = VOCAB[vocab]
    with pytest.raises(error, match=pattern):
        TASKS[task](a, vocab_models[vocab])  # a checkpoint path: loaded by the task
    _assert_unchanged(a, before)
    assert not a.obsm and not a.layers


def test_model_sharing_part_of_the_genes_warns(vocab_models, cells, caplog):
    a = cells.copy()
    with caplog.at_level(logging.WARNING, logger="scprint.tasks"):
        embed(a, scprint.load(vocab_models["partial"]), max_len=128, progress=False)
    assert re.search(r"600 of 1500 genes are used by the model; 898 are not in its vocabulary",
                     caplog.text), caplog.text  # fmt: skip
    assert np.isfinite(a.obsm["X_scprint"]).all()


@pytest.mark.parametrize("vocab", list(VOCAB))
def test_model_of_another_vocabulary_cli(vocab, vocab_models, files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["embed", "--adata", str(files["good"]), "--ckpt", str(vocab_models[vocab]),
            "--out", str(out / "x.h5ad")]  # fmt: skip
    assert scprint_main(argv) == 2
    assert re.search(VOCAB[vocab][1], _cli_error(capsys))
    assert _files(out) == []


def test_tabular_model_of_other_genes(clf, cells, retina_full, caplog):
    half = cells[:, : N_GENES // 2].copy()
    with caplog.at_level(logging.WARNING, logger="scprint.tabular"):
        proba = clf.predict_proba(half)
    assert re.search(r"750/1500 model genes found.*750 missing, zero-filled", caplog.text), (
        caplog.text
    )
    assert np.allclose(proba.sum(axis=1), 1)
    other = retina_full[:N_CELLS, ~retina_full.var_names.isin(clf.genes)][:, :N_GENES].copy()
    before = _state(other)
    with pytest.raises(GeneMappingError, match=r"None of the model's 1500 genes"):
        clf.predict_proba(other)
    _assert_unchanged(other, before)


# --------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def networks(cells, files) -> dict[str, Path]:
    """Two small gene networks (for ``bengrn run``): one to score, one as the truth."""
    folder = files["good"].parent
    sub = cells[:, :20].copy()
    baselines.correlation(sub).write(folder / "net.h5ad")
    baselines.random_network(sub, seed=1).write(folder / "truth.h5ad")
    return {"net": folder / "net.h5ad", "truth": folder / "truth.h5ad"}


WRITERS: dict[str, tuple[Callable, str]] = {
    # command: (argv(files, networks, out), the output file it writes (relative to out))
    "scprint embed": (lambda f, n, out: ["embed", "--adata", str(f["good"]), "--ckpt",
                                         str(f["ckpt"]), "--out", str(out / "result.h5ad"),
                                         "--max-len", "128", "--no-progress"], "result.h5ad"),
    "scprint denoise": (lambda f, n, out: ["denoise", "--adata", str(f["good"]), "--ckpt",
                                           str(f["ckpt"]), "--out", str(out / "result.h5ad"),
                                           "--max-len", "128", "--no-progress"], "result.h5ad"),
    "scprint classify": (lambda f, n, out: ["classify", "--adata", str(f["good"]), "--ckpt",
                                            str(f["ckpt"]), "--out", str(out / "result.h5ad"),
                                            "--max-len", "128", "--no-progress"],
                         "result.h5ad"),
    "scprint gn": (lambda f, n, out: ["gn", "--adata", str(f["good"]), "--ckpt", str(f["ckpt"]),
                                      "--out", str(out / "net.h5ad"), "--max-len", "128",
                                      "--no-progress", "--set", "n_genes=50"], "net.h5ad"),
    "scprint tabular fit": (lambda f, n, out: ["tabular", "fit", "--adata", str(f["good"]),
                                               "--label-key", "cell_type", "--out",
                                               str(out / "model.pt"), "--model", "linear",
                                               "--max-epochs", "1", "--no-progress",
                                               "--accelerator", "cpu"], "model.pt"),
    "scprint tabular predict": (lambda f, n, out: ["tabular", "predict", "--adata",
                                                   str(f["good"]), "--model",
                                                   str(f["tabular model"]), "--out-dir",
                                                   str(out)], "probabilities.csv"),
    "scprint tabular explain": (lambda f, n, out: ["tabular", "explain", "--adata",
                                                   str(f["good"]), "--model",
                                                   str(f["tabular model"]), "--out-dir",
                                                   str(out)], "top_genes.csv"),
    "scprint dge": (lambda f, n, out: ["dge", "--adata", str(f["good"]), "--groupby",
                                       "cell_type", "--condition", "condition", "--reference",
                                       "normal", "--donor-key", "donor", "--genes",
                                       str(f["genes"]), "--groups", GANGLION, "--out", str(out),
                                       "--no-progress"], "dge.csv"),
    "scdataloader preprocess": (lambda f, n, out: ["preprocess", str(f["good"]),
                                                   str(out / "pre.h5ad"), "--min-cells", "1",
                                                   "--min-genes", "10",
                                                   "--min-genes-per-cell", "1"], "pre.h5ad"),
    "bengrn baseline": (lambda f, n, out: ["baseline", "correlation", "--adata", str(f["good"]),
                                           "--genes", str(f["genes"]), "--out",
                                           str(out / "net.h5ad")], "net.h5ad"),
    "bengrn run": (lambda f, n, out: ["run", "--network", str(n["net"]), "--truth",
                                      str(n["truth"]), "--out", str(out)], "results.csv"),
}  # fmt: skip


def _main(command: str) -> Callable:
    tool = command.split()[0]
    if tool == "scprint":
        return lambda argv: scprint_main(argv)
    return scdataloader_main if tool == "scdataloader" else bengrn_main


@pytest.fixture
def writer_files(files, trained_ckpt) -> dict[str, Path]:
    return {**files, "ckpt": trained_ckpt}


@pytest.mark.parametrize("command", list(WRITERS))
def test_existing_output_needs_overwrite(command, writer_files, networks, tmp_path, capsys):
    argv, name = WRITERS[command]
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("keep")
    assert _main(command)(argv(writer_files, networks, out)) == 2
    assert re.search(rf"{re.escape(name)} exists; pass --overwrite", _cli_error(capsys))
    assert _files(out) == [name] and (out / name).read_text() == "keep"


def _refuse_writes_in(monkeypatch, folder: Path) -> None:
    """A read-only ``folder``: creating a file in it fails (tests run as root, for whom
    file modes do not stop writes)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own name)
        if dir is not None and Path(folder) in (Path(dir), *Path(dir).parents):
            name = os.path.join(dir, f"{kwargs.get('prefix', '')}XXXX{kwargs.get('suffix', '')}")
            raise PermissionError(13, "Permission denied", name)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("command", list(WRITERS))
def test_read_only_output_folder(command, writer_files, networks, tmp_path, capsys, monkeypatch):
    argv, name = WRITERS[command]
    out = tmp_path / "out"
    _refuse_writes_in(monkeypatch, out)
    assert _main(command)(argv(writer_files, networks, out)) == 2
    line = _cli_error(capsys)
    assert re.search(r"cannot write .*Permission denied; check that .* is writable", line), line
    assert str(out) in line
    assert _files(out) == []


@pytest.mark.parametrize("command", ["scprint embed", "scprint tabular predict", "bengrn run"])
def test_failed_move_into_place(command, writer_files, networks, tmp_path, capsys, monkeypatch):
    """The last step of an atomic write fails: no temporary file is left behind."""
    import scdataloader.io

    argv, name = WRITERS[command]
    out = tmp_path / "out"

    def replace(src, dst):
        raise PermissionError(13, "Permission denied", str(src), None, str(dst))

    monkeypatch.setattr(scdataloader.io.os, "replace", replace)
    assert _main(command)(argv(writer_files, networks, out)) == 2
    line = _cli_error(capsys)
    assert f"cannot write {out}" in line and "Permission denied" in line, line
    assert _files(out) == []


def _interrupt_after_partial_write(first, path, *args, **kwargs):
    """Stands for a writer (``AnnData.write_h5ad``, ``DataFrame.to_csv``, ``torch.save``)
    stopped by Ctrl-C half-way through its file."""
    Path(path).write_bytes(b"\x89HDF\r\n" + b"partial" * 1000)
    raise KeyboardInterrupt


INTERRUPTED_WRITER = {  # command -> (owner, name) of the writer interrupted
    "scprint embed": (ad.AnnData, "write_h5ad"),
    "scprint denoise": (ad.AnnData, "write_h5ad"),
    "scprint classify": (ad.AnnData, "write_h5ad"),
    "scprint gn": (ad.AnnData, "write_h5ad"),
    "scprint tabular fit": (torch, "save"),
    "scprint tabular predict": (ad.AnnData, "write_h5ad"),  # the 2nd of its 4 files
    "scprint tabular explain": (pd.DataFrame, "to_csv"),
    "scprint dge": (pd.DataFrame, "to_csv"),  # after the volcano plots
    "scdataloader preprocess": (ad.AnnData, "write_h5ad"),
    "bengrn baseline": (ad.AnnData, "write_h5ad"),
    "bengrn run": (pd.DataFrame, "to_csv"),
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_interrupted_write_keeps_the_old_output(
    command, writer_files, networks, tmp_path, monkeypatch
):
    """Ctrl-C while the output is written (over an old one, with --overwrite): the old
    file is intact, and no new or temporary file is left."""
    argv, name = WRITERS[command]
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("old")
    owner, attr = INTERRUPTED_WRITER[command]
    monkeypatch.setattr(owner, attr, _interrupt_after_partial_write)
    with pytest.raises(KeyboardInterrupt):
        _main(command)(argv(writer_files, networks, out) + ["--overwrite"])
    assert _files(out) == [name]
    assert (out / name).read_text() == "old"


# the Python writers replace an existing file (as AnnData.write_h5ad and DataFrame.to_csv
# do), atomically: the old file stays whole until the new one is complete
PY_WRITERS: dict[str, tuple[Callable, Callable, tuple]] = {
    # writer: (write(objects, path), read back(path), (owner, name) of its low-level write)
    "TabularClassifier.save": (lambda o, p: o["clf"].save(p), load_model, (torch, "save")),
    "write_h5ad_atomic": (
        lambda o, p: write_h5ad_atomic(o["cells"], p),
        ad.read_h5ad,
        (ad.AnnData, "write_h5ad"),
    ),
    "GeneNetwork.write": (
        lambda o, p: baselines.correlation(o["cells"][:, :10].copy()).write(p),
        GeneNetwork.read,
        (ad.AnnData, "write_h5ad"),
    ),
    "scprint.tl.write_table": (
        lambda o, p: write_table(pd.DataFrame({"a": [1]}), p),
        pd.read_csv,
        (pd.DataFrame, "to_csv"),
    ),
}


@pytest.mark.parametrize("writer", list(PY_WRITERS))
def test_python_writers_replace_atomically(writer, cells, clf, tmp_path, monkeypatch):
    write, read, (owner, attr) = PY_WRITERS[writer]
    objects = {"cells": cells, "clf": clf}
    path = tmp_path / "output"
    path.write_text("old")
    write(objects, path)
    read(path)  # the new file, complete
    assert _files(tmp_path) == ["output"]
    new = path.read_bytes()
    monkeypatch.setattr(owner, attr, _interrupt_after_partial_write)
    with pytest.raises(KeyboardInterrupt):
        write(objects, path)
    assert path.read_bytes() == new and _files(tmp_path) == ["output"]


# --------------------------------------------------------------------------- interrupted training


class _CtrlC(pl.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.filterwarnings("ignore:Checkpoint directory", "ignore:You're resuming")
def test_interrupted_pretraining_leaves_a_checkpoint_that_resumes(retina_path, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from scdataloader import DataModule
    from scprint.train import ScPrintModule

    keys = ["cell_type_ontology_term_id", "sex_ontology_term_id"]

    def setup():
        dm = DataModule([retina_path], label_keys=keys, batch_size=8, max_len=64,
                        train_samples=8 * 6, val_size=0.1, seed=0)  # fmt: skip
        pl.seed_everything(0, verbose=False)
        module = ScPrintModule(dm.genes, dm.hierarchies, dm.label_keys, preset="debug",
                               warmup_steps=2)  # fmt: skip
        return dm, module

    def trainer(*callbacks):
        saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2,
                                save_top_k=-1, filename="{step}")  # fmt: skip
        return pl.Trainer(max_steps=6, accelerator="cpu", logger=False, limit_val_batches=0,
                          enable_progress_bar=False, enable_model_summary=False,
                          use_distributed_sampler=False, default_root_dir=tmp_path,
                          callbacks=[saver, *callbacks])  # fmt: skip

    dm, module = setup()
    first = trainer(_CtrlC(at_step=3))
    with pytest.raises(SystemExit):  # Lightning shuts down, then exits with status 1
        first.fit(module, datamodule=dm)
    assert first.interrupted and first.global_step == 3
    assert _files(tmp_path) == ["ckpt/step=2.ckpt"]  # nothing half-written
    ckpt = tmp_path / "ckpt" / "step=2.ckpt"
    assert scprint.load(ckpt).genes == list(dm.genes)
    dm, module = setup()
    resumed = trainer()
    resumed.fit(module, datamodule=dm, ckpt_path=ckpt)
    assert not resumed.interrupted and resumed.global_step == 6
    assert _files(tmp_path) == [f"ckpt/step={s}.ckpt" for s in (2, 4, 6)]
