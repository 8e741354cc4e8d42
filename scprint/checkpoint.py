"""Loading scPRINT checkpoints from a local path or the Hugging Face hub.

A checkpoint is a Lightning ``.ckpt`` file: the model weights plus its hyperparameters,
which hold the architecture, the gene vocabulary (Ensembl ids) and the label sets of
every class, so that a model is usable on its own.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["load", "CheckpointError", "DEFAULT_FILENAME"]

logger = logging.getLogger(__name__)

DEFAULT_FILENAME = "model.ckpt"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model code."""


def _resolve(name_or_path: str | os.PathLike, filename: str, revision: str | None) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidates = (
            [path / filename] if (path / filename).exists() else sorted(path.glob("*.ckpt"))
        )
        if not candidates:
            raise CheckpointError(f"{path}: no {filename} or other .ckpt file in this folder.")
        if len(candidates) > 1:
            raise CheckpointError(
                f"{path}: several checkpoints ({', '.join(c.name for c in candidates)}); "
                "pass the file itself."
            )
        return candidates[0]
    name = str(name_or_path)
    if name.endswith(".ckpt") or not _HUB_ID.match(name):
        raise CheckpointError(
            f"{name}: no such file or folder. Pass a local .ckpt path, or a Hugging Face hub "
            "repository id like 'organisation/model'."
        )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ImportError(
            f"Loading {name!r} from the Hugging Face hub needs huggingface_hub: "
            "pip install huggingface_hub (or pass a local checkpoint path)."
        ) from e
    try:
        return Path(hf_hub_download(repo_id=name, filename=filename, revision=revision))
    except Exception as e:  # offline, unknown repository, missing file...
        raise CheckpointError(
            f"Could not get {filename} of {name!r} from the Hugging Face hub "
            f"({type(e).__name__}: {e}). Without internet access, download the checkpoint "
            "elsewhere and pass its local path."
        ) from e


def load(
    name_or_path: str | os.PathLike,
    *,
    filename: str = DEFAULT_FILENAME,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
):
    """Load a trained scPRINT model.

    Parameters
    ----------
    name_or_path
        A ``.ckpt`` file, a folder holding one, or a Hugging Face hub repository id.
    filename
        File name in a folder or hub repository.
    revision
        Hub revision (branch, tag or commit).
    map_location
        Device to load the weights on.

    Returns
    -------
    The :class:`scprint.train.ScPrintModule` in eval mode; ``.model`` is the network,
    ``.genes`` its vocabulary and ``.hierarchies`` its label sets.

    Raises
    ------
    CheckpointError
        The file is missing, corrupt, not an scPRINT checkpoint, or its weights do not
        fit the architecture it declares.
    """
    from .train import ScPrintModule

    path = _resolve(name_or_path, filename, revision)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {e}). The file may be "
            "truncated or corrupt: download or copy it again."
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict').")
    hparams: dict[str, Any] = dict(ckpt.get("hyper_parameters") or {})
    if "genes" not in hparams:
        raise CheckpointError(
            f"{path}: not an scPRINT checkpoint (its hyperparameters hold no gene vocabulary)."
        )
    hparams.pop("gene_embeddings", None)  # the weights hold the table already
    try:
        module = ScPrintModule(**hparams)
    except TypeError as e:
        raise CheckpointError(
            f"{path}: its hyperparameters do not fit this version of scPRINT ({e})."
        ) from e
    state = ckpt["state_dict"]
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing weights {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected weights {unexpected[:5]}")
        if wrong:
            parts.append(
                "wrong shapes "
                + ", ".join(
                    f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]
                )
            )
        raise CheckpointError(
            f"{path}: the weights do not match the architecture it declares: "
            + "; ".join(parts)
            + ". It was made by another version of the code, or edited."
        )
    module.load_state_dict(state)
    return module.to(map_location).eval()
