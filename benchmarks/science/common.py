"""Small helpers shared by the science benchmark scripts (standard library only, so that
the children running in the peers' own environments can import it too)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["load_file_module", "package_version"]


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
