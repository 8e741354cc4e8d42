"""Outputs of :func:`scprint.tl.dge`: the CSV table and one volcano plot per cell type."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "volcano",
    "volcano_paths",
    "volcano_writers",
    "write_all",
    "write_table",
    "write_volcanoes",
    "file_stem",
]

logger = logging.getLogger(__name__)

_COLOURS = {"up": "#c0392b", "down": "#2471a3", "none": "#b3b3b3"}


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV, atomically: a temporary file in the same folder is moved
    onto ``path`` only once complete (the folder is created when missing).

    Returns
    -------
    The path written.
    """
    from scdataloader.io import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def file_stem(name: str) -> str:
    """A file-name-safe version of a cell-type name (letters, digits, ``.``, ``_``, ``-``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return stem or "group"


def volcano(
    table: pd.DataFrame,
    *,
    cell_type: str | None = None,
    n_labels: int = 10,
    alpha: float | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Volcano plot of one cell type: log2 fold change against -log10 p-value.

    Parameters
    ----------
    table
        The output of :func:`scprint.tl.dge` (or its rows for one cell type).
    cell_type
        The cell type to plot; may be omitted when the table holds only one.
    n_labels
        Called genes with the smallest p-values whose names are written.
    alpha
        Draw the p-value of the least significant called gene as a dashed line when
        given (the ``direction`` column says which genes are called).
    path
        Where to write the figure as PNG (atomically); None to only return it.

    Returns
    -------
    The matplotlib Figure (Agg canvas, not registered with pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = pd.unique(table["cell_type"].astype(str))
    if cell_type is None:
        if len(names) != 1:
            raise ValueError(f"the table holds {len(names)} cell types: pass cell_type=.")
        cell_type = names[0]
    rows = table[table["cell_type"].astype(str) == str(cell_type)]
    if rows.empty:
        raise ValueError(f"cell type {cell_type!r} is not in the table (it has {list(names)}).")
    rows = rows[np.isfinite(rows["pvalue"]) & np.isfinite(rows["log2fc"])]
    y = -np.log10(np.clip(rows["pvalue"].to_numpy(), 1e-300, 1.0))
    fig = Figure(figsize=(5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for direction, colour in _COLOURS.items():
        pick = (rows["direction"] == direction).to_numpy()
        count = int(pick.sum())
        ax.scatter(rows["log2fc"].to_numpy()[pick], y[pick], s=8, c=colour, linewidths=0,
                   label=f"{direction} ({count})", rasterized=True)  # fmt: skip
    called = rows[rows["direction"] != "none"]
    if alpha is not None and len(called):
        ax.axhline(-np.log10(called["pvalue"].max()), ls="--", lw=0.8, c="k")
    for _, r in called.nsmallest(n_labels, "pvalue").iterrows():
        ax.annotate(str(r["gene"]), (r["log2fc"], -np.log10(max(r["pvalue"], 1e-300))),
                    fontsize=6, xytext=(2, 2), textcoords="offset points")  # fmt: skip
    ax.axvline(0, lw=0.5, c="k")
    target = table.attrs.get("target", "target")
    reference = table.attrs.get("reference", "reference")
    ax.set_xlabel(f"log2 fold change ({target} / {reference})")
    ax.set_ylabel("-log10 p-value")
    method = rows["method"].iloc[0] if len(rows) and "method" in rows else ""
    ax.set_title(f"{cell_type} ({method})" if method else str(cell_type), fontsize=9)
    ax.legend(fontsize="x-small", loc="upper left", frameon=False)
    if path is not None:
        _write_png(fig, path)
    return fig


def volcano_paths(table: pd.DataFrame, folder: str | os.PathLike) -> dict[str, Path]:
    """Cell type -> ``folder/volcano_<cell type>.png`` for each cell type of ``table``
    (distinct file names even when two names differ only by unsafe characters)."""
    folder = Path(folder)
    paths: dict[str, Path] = {}
    seen: set[str] = set()
    for name in pd.unique(table["cell_type"].astype(str)):
        stem = file_stem(name)
        while stem in seen:
            stem += "_"
        seen.add(stem)
        paths[name] = folder / f"volcano_{stem}.png"
    return paths


def write_volcanoes(table: pd.DataFrame, folder: str | os.PathLike, **kwargs) -> list[Path]:
    """One volcano PNG per cell type of ``table``, ``folder/volcano_<cell type>.png``;
    all are written, or none (on error no file is left in ``folder``).

    Keyword arguments go to :func:`volcano`. Returns the paths written.
    """
    return write_all(volcano_writers(table, folder, **kwargs))


def volcano_writers(
    table: pd.DataFrame, folder: str | os.PathLike, **kwargs
) -> dict[Path, Callable[[Path], None]]:
    """Path -> writer of each cell type's volcano PNG (see :func:`volcano_paths`), for
    :func:`write_all`; keyword arguments go to :func:`volcano`."""
    return {
        path: _png_writer(volcano(table, cell_type=name, **kwargs))
        for name, path in volcano_paths(table, folder).items()
    }


def write_all(writers: dict[Path, Callable[[Path], None]]) -> list[Path]:
    """Call each writer on a temporary file next to its path, then move them all in place:
    every file is written or none is (each is replaced only once all are complete)."""
    from scdataloader.io import atomic_path

    with contextlib.ExitStack() as stack:
        for path, write in writers.items():
            write(stack.enter_context(atomic_path(path)))
    return list(writers)


def _png_writer(fig: Figure) -> Callable[[Path], None]:
    return lambda tmp: fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")


def _write_png(fig: Figure, path: str | os.PathLike) -> Path:
    from scdataloader.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    return Path(path)
