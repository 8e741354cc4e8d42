"""A local, no-code web app: cell labels, cell maps and gene networks from trained models.

``scprint app [--models DIR] [--port 8501] [--max-upload-mb 1024] [--host 127.0.0.1]``
starts a Streamlit server on this computer (headless, no usage statistics) and prints
its address. In the page, a user uploads an ``.h5ad`` file of raw counts, picks a model
of the models folder (files of ``scprint tabular fit`` or checkpoints of ``scprint
fit``), then labels the cells (with an "unknown" threshold), maps them (UMAP), reads the
genes explaining each class (tabular models) or a cell type's gene network (scPRINT
models), and downloads the predictions (CSV) and the annotated ``.h5ad``.

:mod:`scprint.app.core` holds the logic (plain functions, no Streamlit),
:mod:`scprint.app.launch` the launcher and ``page.py`` the Streamlit page. Streamlit is an
optional dependency: ``pip install 'scprint-suite[app]'``.
"""

from __future__ import annotations

from .launch import PAGE, build_parser, main, serve, streamlit_command

__all__ = ["PAGE", "build_parser", "main", "serve", "streamlit_command"]
