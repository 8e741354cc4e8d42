"""The Streamlit page of ``scprint app``: upload, choose a model, predict, explore, download.

Streamlit runs this file as a script (``scprint app`` starts it with ``streamlit run``);
options come after ``--`` on that command line: ``--models DIR --max-upload-mb N``. The
logic lives in :mod:`scprint.app.core`; this file only lays it out and keeps results in
the session between reruns.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import streamlit as st

from scprint.app import core

__all__ = ["main"]

logger = logging.getLogger("scprint.app")

_EXPECTED_ERRORS = (ValueError, KeyError, OSError, ImportError)


def _options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scprint app page")
    parser.add_argument("--models", default="models")
    parser.add_argument("--max-upload-mb", type=float, default=core.DEFAULT_MAX_UPLOAD_MB)
    args, _ = parser.parse_known_args(argv)
    return args


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    """Show a failure as an error box (what went wrong, what to do), never a traceback."""
    try:
        yield
    except core.UploadError as e:
        st.error(f"**{e.problem}**\n\n{e.hint}")
    except _EXPECTED_ERRORS as e:
        logger.warning("%s failed: %s", what, e)
        message = " ".join(str(e).split()) or type(e).__name__
        st.error(f"**{what} failed.** {message}")
    except Exception as e:  # an unexpected failure: the log has the details
        logger.exception("%s failed", what)
        st.error(
            f"**{what} failed** ({type(e).__name__}: {e}). This looks like a bug: the "
            "terminal running `scprint app` shows the details."
        )


# --------------------------------------------------------------------------- cached steps


def _folder_stamp(folder: str) -> tuple:
    root = Path(folder).expanduser()
    if not root.is_dir():
        return ()
    return tuple(
        (str(p), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.suffix in core.MODEL_SUFFIXES and p.is_file()
    )


@st.cache_resource(show_spinner=False)
def _models(folder: str, stamp: tuple) -> core.ModelFolder:
    return core.list_models(folder)


@st.cache_resource(show_spinner=False, max_entries=3)
def _model(path: str, stamp: int, _info: core.ModelInfo) -> Any:
    return core.load_model(_info)


def _session(key: str, token: tuple) -> Any:
    """The value stored under ``key`` when it was made for ``token``, else None."""
    stored = st.session_state.get(f"result:{key}")
    if stored is not None and stored[0] == token:
        return stored[1]
    return None


def _store(key: str, token: tuple, value: Any) -> None:
    st.session_state[f"result:{key}"] = (token, value)


# --------------------------------------------------------------------------- sections


def _model_card(info: core.ModelInfo) -> None:
    st.markdown(f"**{info.name}**  \n{info.description}")
    cols = st.columns(2)
    cols[0].metric("Genes", f"{info.n_genes:,}")
    cols[1].metric("Classes", f"{sum(len(v) for v in info.classes.values()):,}")
    st.caption(f"Organism: {', '.join(info.organisms) or 'unknown'}")
    with st.expander("Classes"):
        for target, labels in info.classes.items():
            names = core.readable_names(labels)
            st.markdown(f"`{target}` ({len(labels)}): " + ", ".join(names.values()))
    with st.expander("Provenance"):
        rows = {"file": info.path.name, **info.provenance}
        st.table({"value": {k: str(v) for k, v in rows.items()}})


def _sidebar(opts: argparse.Namespace) -> tuple[core.ModelInfo | None, str | None, float]:
    st.sidebar.header("Model")
    folder = _models(opts.models, _folder_stamp(opts.models))
    for name, why in folder.skipped.items():
        st.sidebar.warning(f"Skipped {name}: {why}")
    if not folder.models:
        st.sidebar.error(
            f"No model in `{opts.models}`. Put files made by `scprint tabular fit` or "
            "`scprint fit` there (`.pt`, `.ckpt`), or start the app with `--models DIR`."
        )
        return None, None, 0.0
    name = st.sidebar.selectbox("Model", folder.names(), key="model_name")
    info = folder.get(name)
    with st.sidebar:
        _model_card(info)
    target = None
    if info.kind == "foundation" and info.targets:
        target = st.sidebar.selectbox("Predict", info.targets, key="target")
    threshold = st.sidebar.slider(
        "Unknown below probability",
        min_value=0.0,
        max_value=1.0,
        value=0.5,
        step=0.05,
        key="threshold",
        help="Cells whose most probable class has a lower probability are labelled "
        f"'{core.UNKNOWN}'.",
    )
    return info, target, threshold


def _upload(opts: argparse.Namespace) -> tuple[tuple, ad.AnnData] | None:
    """(token, AnnData) of the uploaded file, or None."""
    file = st.file_uploader(
        f"Upload cells as an .h5ad file (raw counts, up to {opts.max_upload_mb:,.0f} MB)",
        key="upload",
        help="An AnnData file: cells x genes with raw integer counts in X (or in a "
        "'counts' layer), gene symbols or Ensembl ids.",
    )
    if file is None:
        return None
    token = (file.name, file.size, getattr(file, "file_id", None))
    adata = _session("adata", token)
    if adata is None:
        with st.spinner(f"Reading {file.name} ..."), _guard("Reading the file"):
            adata = core.read_upload(file.name, file.getvalue(), max_mb=opts.max_upload_mb)
            _store("adata", token, adata)
    if adata is None:
        return None
    return token, adata


def _predictions(
    adata: ad.AnnData,
    model: Any,
    info: core.ModelInfo,
    check: core.UploadCheck,
    target: str | None,
    threshold: float,
    token: tuple,
) -> None:
    key = (*token, info.name, target)
    pred = _session("pred", key)
    if st.button("Run predictions", type="primary", key="run"):
        bar = st.progress(0.0, text="Predicting ...")
        with _guard("Prediction"):
            pred = core.predict(
                adata,
                model,
                info,
                target=target,
                layer=check.layer,
                gene_key=check.gene_key,
                on_progress=lambda f: bar.progress(f, text=f"Predicting ... {f:.0%}"),
            )
            _store("pred", key, pred)
        bar.empty()
    if pred is None:
        st.caption("Press the button to label every cell.")
        return
    labels = pred.labels(threshold)
    n_unknown = int((labels == core.UNKNOWN).sum())
    st.success(
        f"Predicted {len(labels):,} cells: {labels.nunique() - (n_unknown > 0)} labels, "
        f"{n_unknown:,} unknown (top probability below {threshold:.2f})."
    )
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Cells per predicted label**")
        st.table(pred.counts(threshold).style.format({"fraction": "{:.1%}"}))
    with right:
        st.markdown("**Per cell** (first 1,000)")
        cells = pred.table(threshold).head(1000)
        if (cells["label"] == cells["name"]).all():
            cells = cells.drop(columns="label")
        bar = st.column_config.ProgressColumn("confidence", format="%.2f", min_value=0.0,
                                              max_value=1.0)  # fmt: skip
        st.dataframe(cells, height=420, column_config={"confidence": bar})
    stem = Path(token[0]).stem
    st.download_button(
        "Download predictions (CSV)",
        data=core.predictions_csv(pred, threshold),
        file_name=f"{stem}_predictions.csv",
        mime="text/csv",
        key="download_csv",
    )
    if st.button("Prepare the annotated .h5ad", key="prepare_h5ad"):
        with st.spinner("Writing the annotated AnnData ..."), _guard("Writing the h5ad"):
            coords = _session("embedding", (*token, info.name))
            data = core.annotated_h5ad(
                adata, pred, threshold, embedding=None if coords is None else coords[0]
            )
            _store("h5ad", (*key, threshold), data)
    data = _session("h5ad", (*key, threshold))
    if data is not None:
        st.download_button(
            f"Download annotated .h5ad ({len(data) / 2**20:,.1f} MB)",
            data=data,
            file_name=f"{stem}_annotated.h5ad",
            mime="application/octet-stream",
            key="download_h5ad",
        )


def _embedding(
    adata: ad.AnnData,
    model: Any,
    info: core.ModelInfo,
    check: core.UploadCheck,
    target: str | None,
    threshold: float,
    token: tuple,
) -> None:
    key = (*token, info.name)
    found = _session("embedding", key)
    how = "scPRINT embedding" if info.kind == "foundation" else "expression PCA"
    if st.button(f"Compute UMAP ({how})", key="umap"):
        with st.spinner("Computing the UMAP ..."), _guard("UMAP"):
            found = core.embedding_2d(
                adata, model, info, layer=check.layer, gene_key=check.gene_key
            )
            _store("embedding", key, found)
    if found is None:
        st.caption("Press the button to compute a 2-D map of the cells.")
        return
    coords, what = found
    pred = _session("pred", (*token, info.name, target))
    choices = (["prediction"] if pred is not None else []) + [str(c) for c in adata.obs.columns]
    colour = st.selectbox("Colour by", choices, key="colour")
    if colour == "prediction":
        values = pred.label_names(threshold).to_numpy()
    else:
        values = adata.obs[colour].to_numpy()
    figure = core.embedding_figure(coords, values, title=f"{what}, coloured by {colour}")
    st.columns([4, 1])[0].pyplot(figure)


def _explaining_genes(
    adata: ad.AnnData, model: Any, info: core.ModelInfo, check: core.UploadCheck, token: tuple
) -> None:
    n = st.slider("Genes per class", 3, 50, 10, key="n_top")
    key = (*token, info.name, n)
    table = _session("top_genes", key)
    if st.button("Find explaining genes", key="top_genes"):
        with st.spinner("Attributing the predictions to genes ..."), _guard("Explaining"):
            table = core.top_genes_table(
                adata, model, info, n=n, layer=check.layer, gene_key=check.gene_key
            )
            _store("top_genes", key, table)
    if table is None:
        st.caption("The genes whose expression weighs most in each predicted class.")
        return
    names = list(dict.fromkeys(table["name"]))
    chosen = st.selectbox("Class", names, key="top_class")
    shown = table[table["name"] == chosen][["rank", "symbol", "gene"]]
    st.dataframe(shown, hide_index=True)
    st.download_button(
        "Download all classes (CSV)",
        data=table.to_csv(index=False).encode(),
        file_name="top_genes.csv",
        mime="text/csv",
        key="download_top",
    )


def _gene_network(
    adata: ad.AnnData, model: Any, info: core.ModelInfo, check: core.UploadCheck, token: tuple
) -> None:
    columns = [str(c) for c in adata.obs.columns]
    if not columns:
        st.info("This file has no obs column of cell types to build a network per type.")
        return
    default = next(
        (c for c in ("cell_type_ontology_term_id", "cell_type") if c in columns), columns[0]
    )
    key_col = st.selectbox("Cell type column", columns, index=columns.index(default))
    counts = core.cell_types(adata, key_col)
    if counts.empty:
        st.info(f"No value of `{key_col}` has 10 cells or more.")
        return
    names = core.readable_names(list(counts.index))
    cell_type = st.selectbox(
        "Cell type",
        list(counts.index),
        format_func=lambda c: f"{names[c]} ({counts[c]:,} cells)",
        key="gn_cell_type",
    )
    n_genes = st.slider("Most variable genes", 20, 1000, 200, step=20, key="gn_genes")
    key = (*token, info.name, key_col, cell_type, n_genes)
    net = _session("network", key)
    if st.button("Build the gene network", key="gn"):
        with st.spinner("Running the cells through the model ..."), _guard("Gene network"):
            net = core.gene_network(
                adata,
                model,
                cell_type=cell_type,
                cell_type_key=key_col,
                n_genes=n_genes,
                layer=check.layer,
                gene_key=check.gene_key,
            )
            _store("network", key, net)
    if net is None:
        st.caption("A network of the chosen cells' most variable genes, from attention.")
        return
    hubs = core.hub_table(net)
    st.markdown("**Top hubs** (summed scores of outgoing edges)")
    st.dataframe(hubs, hide_index=True)
    label = hubs["symbol"] if "symbol" in hubs else hubs["gene"]
    pick = dict(zip(label.astype(str), hubs["gene"], strict=True))
    gene = st.selectbox("Neighbourhood of", list(pick), key="gn_gene")
    with _guard("Drawing the subgraph"):
        st.columns([3, 2])[0].pyplot(core.subgraph_figure(net, pick[gene]))


# --------------------------------------------------------------------------- page


def main(argv: list[str] | None = None) -> None:
    """Lay out the page (Streamlit reruns this on every interaction)."""
    opts = _options(sys.argv[1:] if argv is None else argv)
    st.set_page_config(page_title="scPRINT", layout="wide")
    st.title("scPRINT: label your cells")
    st.caption(
        "Upload single-cell RNA counts, choose a model, and get cell labels, a map of the "
        "cells and, for scPRINT models, cell-type gene networks. Everything runs on this "
        "computer."
    )
    info, target, threshold = _sidebar(opts)
    uploaded = _upload(opts)
    if info is None or uploaded is None:
        return
    token, adata = uploaded
    model = None
    with _guard("Loading the model"), st.spinner(f"Loading {info.name} ..."):
        model = _model(str(info.path), info.path.stat().st_mtime_ns, info)
    if model is None:
        return
    check = _session("check", (*token, info.name))
    if check is None:
        with st.spinner("Checking the file against the model ..."), _guard("Checking"):
            check = core.check_upload(adata, info)
            _store("check", (*token, info.name), check)
    if check is None:
        return
    st.markdown(
        f"**{token[0]}**: {adata.n_obs:,} cells x {adata.n_vars:,} genes"
        f"{f' ({check.organism})' if check.organism else ''}; {check.n_found:,} of the "
        f"model's {check.n_model_genes:,} genes found."
    )
    for note in check.notes:
        st.info(note)
    names = ["Predictions", "Embedding"]
    names.append("Explaining genes" if info.kind == "tabular" else "Gene network")
    tabs = st.tabs(names)
    with tabs[0], _guard("Showing the predictions"):
        _predictions(adata, model, info, check, target, threshold, token)
    with tabs[1], _guard("Showing the embedding"):
        _embedding(adata, model, info, check, target, threshold, token)
    with tabs[2], _guard(f"Showing the {names[2].lower()}"):
        if info.kind == "tabular":
            _explaining_genes(adata, model, info, check, token)
        else:
            _gene_network(adata, model, info, check, token)


if __name__ == "__main__":
    main()
