"""The ``scprint`` command.

``scprint fit|validate|test --config configs/debug.yaml``
    Lightning's CLI over :class:`scprint.train.ScPrintModule` and
    :class:`scdataloader.DataModule`; the data module's genes, label hierarchies and
    label order are linked into the model. Bad data (a missing or unreadable file...)
    ends with exit code 2 and a one-line ``error: ...`` on stderr.
``scprint demo [--out demo-output]``
    The main job on the embedded retina data, with a report (see :mod:`scprint.demo`).
``scprint gene-embeddings --fasta F --out OUT.parquet``
    ESM2 gene embeddings (see :mod:`scprint.gene_embeddings`).
``scprint embed|denoise|classify|gn --adata IN.h5ad --ckpt MODEL --out OUT``
    Zero-shot tasks on an AnnData file (see :mod:`scprint.tasks.cli`).
``scprint tabular fit|predict|explain --adata IN.h5ad ...``
    Tabular cell-type classifiers (see :mod:`scprint.tabular.cli`).
``scprint dge --adata IN.h5ad --groupby COL --condition COL --reference L ... --out DIR``
    Differential expression per cell type (see :mod:`scprint.tl.cli`; ``dge`` extra).
``scprint app [--models DIR] [--port 8501] [--max-upload-mb 1024]``
    The local no-code web app (see :mod:`scprint.app`; needs the ``app`` extra).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def _cli_class():
    from lightning.pytorch.cli import LightningCLI

    class ScPrintCLI(LightningCLI):
        """LightningCLI linking the data module's vocabulary and labels into the model."""

        def add_arguments_to_parser(self, parser) -> None:
            for field in ("genes", "hierarchies", "label_keys"):
                parser.link_arguments(f"data.{field}", f"model.{field}", apply_on="instantiate")

    return ScPrintCLI


def __getattr__(name: str):
    if name == "ScPrintCLI":
        return _cli_class()
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("embed", "denoise", "classify", "gn"):
        from .tasks.cli import main as tasks_main

        return tasks_main(argv)
    if argv and argv[0] == "demo":
        from .demo import main as demo_main

        demo_main(argv[1:])
        return 0
    if argv and argv[0] == "tabular":
        from .tabular.cli import main as tabular_main

        return tabular_main(argv[1:])
    if argv and argv[0] == "dge":
        from .tl.cli import main as dge_main

        return dge_main(argv[1:])
    if argv and argv[0] == "app":
        from .app import main as app_main

        return app_main(argv[1:])
    if argv and argv[0] == "gene-embeddings":
        from .gene_embeddings import main as gene_embeddings_main

        return gene_embeddings_main(argv[1:])
    from scdataloader import DataModule
    from scdataloader.cli_utils import one_line
    from scdataloader.errors import InputError

    from .checkpoint import CheckpointError
    from .train import ScPrintModule

    try:
        _cli_class()(ScPrintModule, DataModule, args=argv, save_config_kwargs={"overwrite": True})
    except (InputError, CheckpointError, OSError) as e:  # bad data, model or paths
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
