"""Shared fixtures: the real data sets of ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per test process: pytest-xdist runs one worker per core, and OpenMP threads
# spinning against each other make small torch ops orders of magnitude slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RETINA = DATA / "retina_1k.h5ad"
WU2020 = DATA / "wu2020_tcells_200.h5ad"
MOUSE = DATA / "mouse_10x_10k.zarr"
MCCALLA_DIR = DATA / "networks" / "mcalla_hesc"
MCCALLA = MCCALLA_DIR / "chen_rna_filtered_log2.tsv.gz"
TFS_HUMAN = DATA / "genes" / "tfs_human.txt"
MARKERS_GMT = DATA / "genes" / "celltype_markers.gmt"
OMNIPATH = DATA / "networks" / "omnipath.parquet"
TFCHIP = DATA / "networks" / "tfchip_data.json"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (the shared data folder)")
    return path


@pytest.fixture(scope="session")
def retina_path() -> Path:
    return _need(RETINA)


@pytest.fixture(scope="session")
def wu2020_path() -> Path:
    return _need(WU2020)


@pytest.fixture(scope="session")
def mouse_path() -> Path:
    return _need(MOUSE)


@pytest.fixture(scope="session")
def retina_full(retina_path):
    """The retina AnnData in memory (do not modify: copy first)."""
    import anndata as ad

    return ad.read_h5ad(retina_path)


@pytest.fixture
def retina(retina_full):
    return retina_full.copy()


@pytest.fixture(scope="session")
def wu2020(wu2020_path):
    import anndata as ad

    a = ad.read_h5ad(wu2020_path)
    del a.obsm  # the airr slot needs awkward; not used here
    return a


@pytest.fixture(scope="session")
def mcalla_dir() -> Path:
    """The McCalla et al. hESC benchmark folder (expression, gene and TF lists, truths)."""
    return _need(MCCALLA_DIR)


@pytest.fixture(scope="session")
def omnipath_path() -> Path:
    return _need(OMNIPATH)


@pytest.fixture(scope="session")
def tfchip_path() -> Path:
    return _need(TFCHIP)


@pytest.fixture(scope="session")
def tfs_human_path() -> Path:
    return _need(TFS_HUMAN)


@pytest.fixture(scope="session")
def markers_gmt_path() -> Path:
    return _need(MARKERS_GMT)


@pytest.fixture(scope="session")
def mcalla_log2() -> pd.DataFrame:
    """McCalla hESC expression: genes x cells, log2(x+1) applied twice."""
    return pd.read_csv(_need(MCCALLA), sep="\t", index_col=0)


@pytest.fixture(scope="session")
def retina_parts(retina_path, tmp_path_factory) -> list[Path]:
    """The retina file split into 3 h5ad files (400/350/250 cells), the last with fewer genes
    and a different donor, for multi-file tests."""
    import anndata as ad

    full = ad.read_h5ad(retina_path)
    out = tmp_path_factory.mktemp("parts")
    bounds = [(0, 400), (400, 750), (750, 1000)]
    paths = []
    rng = np.random.default_rng(0)
    for k, (a, b) in enumerate(bounds):
        part = full[a:b].copy()
        part.obs["donor_id"] = f"donor{k}"
        if k == 2:
            keep = np.sort(rng.choice(part.n_vars, part.n_vars - 5000, replace=False))
            part = part[:, keep].copy()
        p = out / f"part{k}.h5ad"
        part.write_h5ad(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def trained_ckpt(retina_path, tmp_path_factory) -> Path:
    """A checkpoint of a debug-size model trained for a few steps on the retina cells."""
    import lightning.pytorch as pl

    from scdataloader import DataModule
    from scprint.train import ScPrintModule

    keys = ["cell_type_ontology_term_id", "disease_ontology_term_id", "sex_ontology_term_id"]
    dm = DataModule([retina_path], label_keys=keys, batch_size=16, max_len=256,
                    train_samples=16 * 12, val_size=0.1, seed=0)  # fmt: skip
    pl.seed_everything(0, verbose=False)
    module = ScPrintModule(dm.genes, dm.hierarchies, dm.label_keys, preset="debug", lr=2e-3,
                           warmup_steps=5)  # fmt: skip
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         use_distributed_sampler=False, limit_val_batches=1)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def trained(trained_ckpt):
    """That model, loaded with ``scprint.load`` (do not modify it)."""
    import scprint

    return scprint.load(trained_ckpt)
