"""The notebooks of ``notebooks/`` run top to bottom on the real data (executed, not parsed).

Each notebook runs in a fresh kernel of the current interpreter (ipykernel's ``python3``
kernel spec starts ``sys.executable``); a failing cell fails the test with its error.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
from filelock import FileLock  # a dependency of torch

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# The real data each notebook reads, as conftest fixtures that skip when it is absent (the
# notebooks fetch the embedded retina and OmniPath files through scdataloader.datasets and
# read the other files from the shared data folder next to the repository).
NEEDS = {
    "01_quickstart.ipynb": ["retina_path"],
    "02_gene_networks.ipynb": ["retina_path", "omnipath_path"],
    "03_pretraining_your_data.ipynb": ["retina_path"],
    "04_tabular_classifiers.ipynb": ["retina_path", "wu2020_path"],
}

# These two pretrain the demo's debug model when the cache lacks it (scprint.demo's cached
# checkpoint): run them one at a time across pytest-xdist workers, so that the second one
# reuses the checkpoint instead of reading it while the first one writes it.
DEMO_MODEL = {"01_quickstart.ipynb", "02_gene_networks.ipynb"}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_every_notebook_is_listed_and_stripped():
    found = [p.name for p in _notebooks()]
    assert found == sorted(NEEDS), f"notebooks {found} vs listed {sorted(NEEDS)}"
    for path in _notebooks():
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path.name}: commit notebooks without outputs (cell {cell.source[:40]!r})"
                )


def test_python3_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    cmd = km.format_kernel_cmd()
    assert spec.language == "python"
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve(), cmd


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_notebook_runs(name, request):
    for fixture in NEEDS[name]:
        request.getfixturevalue(fixture)  # skips with the missing path as the reason
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    lock = Path(tempfile.gettempdir()) / "scprint-notebooks-demo-model.lock"
    start = time.perf_counter()
    with FileLock(lock) if name in DEMO_MODEL else contextlib.nullcontext():
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as exc:
            pytest.fail(f"{name}: a cell failed:\n{exc}", pytrace=False)
    print(f"{name}: executed in {time.perf_counter() - start:.0f} s")
