"""scdataloader: the data layer of scPRINT.

Gene vocabularies, ontology label hierarchies, raw-count validation and QC, lazy
collections of many AnnData files, weighted sampling, collation and a Lightning
DataModule.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module; imported on first use so that `import scdataloader`
# stays fast and optional dependencies load only when needed.
_EXPORTS = {
    "Collection": "collection",
    "read_obs": "collection",
    "Collator": "collator",
    "DataModule": "datamodule",
    "WeightedSampler": "sampler",
    "label_combinations": "sampler",
    "load_genes": "genes",
    "map_genes": "genes",
    "detect_gene_ids": "genes",
    "GeneMapping": "genes",
    "LabelHierarchy": "ontology",
    "build_hierarchy": "ontology",
    "build_hierarchies": "ontology",
    "check_counts": "preprocess",
    "recover_counts": "preprocess",
    "validate_counts": "preprocess",
    "preprocess": "preprocess",
    "qc_report": "preprocess",
    "QCReport": "preprocess",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
