"""Load a script of ``benchmarks/science`` (not a package) from its file path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCIENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "science"


def load_science(name: str, file: str):
    """Import ``benchmarks/science/<file>`` as module ``name`` (kept in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, SCIENCE / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
