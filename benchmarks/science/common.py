"""Small helpers shared by the science benchmark scripts (standard library only, so that
the children running in the peers' own environments can import it too)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "append_records",
    "fmt",
    "load_file_module",
    "own_peak_rss_mb",
    "package_version",
    "sha256",
]

BENCHMARKS = Path(__file__).resolve().parents[1]


def load_file_module(name: str, path: Path):
    """Import the file ``path`` as module ``name`` (``benchmarks/`` is not a package);
    a module already imported under that name is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"absent"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``), MB; NaN where unknown. A child measures
    itself this way: the ``ru_maxrss`` that ``wait4`` reports for it is at least its
    parent's peak, which Linux carries through ``execve``."""
    tt = load_file_module("_train_throughput", BENCHMARKS / "train_throughput.py")
    return tt._status_mb("VmHWM")


def fmt(v, spec: str) -> str:
    """``format(v, spec)``, or ``-`` for a missing or NaN value."""
    if v is None:
        return "-"
    try:
        if v != v:  # NaN
            return "-"
    except TypeError:
        pass
    return format(v, spec)


def append_records(path: Path, common: dict, rows: Iterable[dict]) -> None:
    """Append one JSON line per row (its fields over ``common``; ``log_tail`` left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for r in rows:
            rec = {**common, **{k: v for k, v in r.items() if k != "log_tail"}}
            fh.write(json.dumps(rec, default=str) + "\n")
    print(f"results appended to {path}")


def sha256(path: Path) -> str:
    """The sha256 of a file (as ``scdataloader.datasets`` checks its downloads), or of a
    folder such as a zarr store: every file's relative name and bytes, in sorted order."""
    import hashlib

    from scdataloader.datasets import _sha256

    path = Path(path)
    if not path.is_dir():
        return _sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def checkpoint_collator(ckpt) -> dict:
    """The collator settings a Lightning checkpoint was trained with (``max_len``,
    ``zero_genes``, ``mode``...), saved with its data module's state; {} without one."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return dict((state.get("DataModule") or {}).get("collator") or {})


def display_path(path) -> str:
    """``path`` with the home folder written ``~``, for records kept in the repository."""
    path = str(path)
    home = str(Path.home())
    return "~" + path[len(home) :] if path == home or path.startswith(home + "/") else path
