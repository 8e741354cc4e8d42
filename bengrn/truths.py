"""Ground-truth gene networks: OmniPath (CollecTRI, DoRothEA), McCalla et al., perturb-seq,
BEELINE and plain edge lists, as directed binary :class:`~bengrn.network.GeneNetwork` s.

Every loader returns a network whose genes are gene **symbols**, whose matrix is a sparse
CSR matrix of float32 ones (one per known edge) in the ``"target_by_regulator"``
orientation (``M[i, j] = 1`` means ``genes[j] -> genes[i]``), whose ``method`` is the
truth's name and whose ``params`` record the provenance: the file read, the filters applied
and how many rows or genes each of them dropped. ``var`` has a ``symbol`` column (equal to
the index) and ``is_regulator`` (the gene has at least one target).

The preparation follows the scPRINT paper ("Ground truth preparation"):

OmniPath
    all interactions, excluding small molecules, lncRNAs and any element without a unique
    HGNC symbol, as a directed binary source -> target network (:func:`omnipath`, with the
    CollecTRI and DoRothEA subsets in :func:`collectri` and :func:`dorothea`).
McCalla et al.
    the intersection ("ground truth") gold standard of ChIP and knockdown edges
    (:func:`mcalla`), and the expression matrix with its exact counts recovered
    (:func:`mcalla_expression`, :func:`recover_log2_counts`).
genome-wide perturb-seq
    an edge knocked-out gene -> measured gene wherever the corrected differential
    expression p-value is below 0.05 (:func:`perturbseq`).

Typical use::

    from bengrn import truths

    gt = truths.load_truth("collectri")
    gt = truths.load_truth("mcalla-hesc", directory="data/GroundTruth/stone_and_sroy")
    adata = truths.mcalla_expression("data/GroundTruth/stone_and_sroy")
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .network import GeneNetwork

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "MCALLA_ENV_VAR",
    "TRUTHS",
    "beeline",
    "collectri",
    "dorothea",
    "edge_list",
    "encode_targets",
    "load_truth",
    "mcalla",
    "mcalla_expression",
    "omnipath",
    "perturbseq",
    "recover_log2_counts",
    "tf_list",
]

logger = logging.getLogger(__name__)

#: Names :func:`load_truth` knows (anything else must be a file path).
TRUTHS: tuple[str, ...] = ("omnipath", "collectri", "dorothea", "mcalla-hesc", "mcalla-mesc")
#: Environment variable naming the McCalla et al. benchmark folder for :func:`load_truth`.
MCALLA_ENV_VAR = "BENGRN_MCALLA_DIR"

_MCALLA_SOURCE = (
    "the benGRN repository's data/GroundTruth/stone_and_sroy folder (McCalla et al., "
    "supplementary data of https://www.biorxiv.org/content/10.1101/2021.06.01.446671v2)"
)
_MCALLA_ORGANISM = {"hesc": "NCBITaxon:9606", "mesc": "NCBITaxon:10090"}
_ORGANISMS = ("human", "mouse")
# Identifiers of small molecules (ChEBI, HMDB, PubChem, DrugBank) as OmniPath writes them.
_SMALL_MOLECULE_ID = re.compile(
    r"^(CHEBI:\d+|HMDB\d+|PUBCHEM:\d+|CID:?\d+|SID:\d+|DB\d{5})$", re.IGNORECASE
)
# Recovered counts above this are not credible (and floats this large are all integers).
_MAX_EXACT = 2.0**52
_TEXT_SUFFIXES = (".tsv", ".csv", ".txt", ".tab")
# Column pairs recognised as (regulator, target) in an edge list's header.
_EDGE_COLUMNS = (
    ("source", "target"),
    ("Gene1", "Gene2"),
    ("regulator", "target"),
    ("TF", "target"),
    ("tf", "target"),
    ("from", "to"),
)
_SHOW = 8


# ------------------------------------------------------------------------- helpers


def _show(items: Iterable[Any]) -> str:
    items = list(items)
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _check_organism(organism: str) -> str:
    if organism not in _ORGANISMS:
        raise ValueError(f"organism must be one of {_ORGANISMS}, not {organism!r}")
    return organism


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {missing} (it has {list(map(str, table.columns))})"
        )


def _suffixes(path: Path) -> list[str]:
    """Lower-cased suffixes without a trailing ``.gz``/``.bz2``/``.zip``/``.xz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zip", ".xz"):
        suffixes = suffixes[:-1]
    return suffixes


def _kind(path: Path) -> str:
    """``"parquet"``, ``"h5ad"``, ``"text"`` or ``""`` from a file name."""
    suffixes = _suffixes(path)
    last = suffixes[-1] if suffixes else ""
    if last in (".parquet", ".pq"):
        return "parquet"
    if last == ".h5ad":
        return "h5ad"
    if last in _TEXT_SUFFIXES:
        return "text"
    return ""


def _first_line(path: Path) -> str:
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                return line.rstrip("\r\n")
    return ""


def _separator(line: str, path: Path) -> str:
    if "\t" in line:
        return "\t"
    if "," in line:
        return ","
    if _suffixes(path)[-1:] == [".csv"]:
        return ","
    return r"\s+"


def _read_edge_file(path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    """An edge table from parquet or delimited text. Text files are read with a header when
    their first line holds all of ``names`` (or, with ``names`` None, a known pair of
    regulator/target column names), else without one (columns ``0, 1, ...``)."""
    kind = _kind(path)
    if kind == "parquet":
        return pd.read_parquet(path)
    if kind not in ("text", ""):
        raise ValueError(f"cannot read an edge list from {path} (a {kind} file)")
    line = _first_line(path)
    if not line:
        raise ValueError(f"{path} is empty")
    sep = _separator(line, path)
    fields = [f.strip().strip('"').strip("'") for f in re.split(sep, line.strip())]
    if names is not None:
        header = all(n in fields for n in names)
    else:
        header = any(s in fields and t in fields for s, t in _EDGE_COLUMNS)
    table = pd.read_csv(
        path,
        sep=sep,
        header=0 if header else None,
        dtype=str,
        engine="python" if sep == r"\s+" else "c",
        comment=None,
        skip_blank_lines=True,
    )
    return table


def _edge_columns(
    table: pd.DataFrame, source: str | None, target: str | None, what: str
) -> tuple[Any, Any]:
    """The (source, target) columns of an edge table: the given ones, a known pair, or the
    first two columns of a table without a header."""
    if source is not None or target is not None:
        if source is None or target is None:
            raise ValueError("give both source and target columns, or neither")
        _require_columns(table, [source, target], what)
        return source, target
    for s, t in _EDGE_COLUMNS:
        if s in table.columns and t in table.columns:
            return s, t
    if table.shape[1] < 2:
        raise ValueError(
            f"{what} needs two columns (regulator, target); it has {table.shape[1]}: "
            f"{list(map(str, table.columns))}"
        )
    if all(isinstance(c, int | np.integer) for c in table.columns[:2]):
        return table.columns[0], table.columns[1]
    raise ValueError(
        f"{what} has no regulator/target columns: name them with source= and target= "
        f"(columns: {list(map(str, table.columns))}; recognised pairs: {list(_EDGE_COLUMNS)})"
    )


def _clean_pairs(table: pd.DataFrame, source: Any, target: Any) -> tuple[pd.DataFrame, int]:
    """Stripped string (regulator, target) pairs with missing or empty names removed; the
    number of such rows dropped."""
    pairs = pd.DataFrame(
        {"regulator": table[source].to_numpy(), "target": table[target].to_numpy()}
    )
    missing = pairs.isna().any(axis=1).to_numpy()
    pairs = pairs[~missing].astype(str)
    pairs["regulator"] = pairs["regulator"].str.strip()
    pairs["target"] = pairs["target"].str.strip()
    empty = ((pairs["regulator"] == "") | (pairs["target"] == "")).to_numpy()
    pairs = pairs[~empty]
    return pairs.reset_index(drop=True), int(missing.sum() + empty.sum())


def _network(
    pairs: pd.DataFrame,
    *,
    method: str,
    params: Mapping[str, Any],
    genes: Sequence[str] | None = None,
) -> GeneNetwork:
    """A binary sparse network of ``pairs`` (columns regulator, target; duplicates allowed),
    with ``n_edges``, ``n_genes``, ``n_regulators``, ``n_targets``, ``n_self_edges`` and
    ``n_duplicate_rows`` added to ``params``."""
    n_rows = len(pairs)
    pairs = pairs.drop_duplicates(["regulator", "target"])
    if pairs.empty:
        raise ValueError(
            f"the {method!r} truth has no edges left"
            + (f" after filtering ({dict(params)})" if params else "")
        )
    if genes is None:
        genes = pd.Index(np.union1d(pairs["regulator"], pairs["target"]))
    genes = pd.Index(genes).astype(str)
    regulators = set(pairs["regulator"])
    var = pd.DataFrame(
        {"symbol": genes.to_numpy(), "is_regulator": genes.isin(list(regulators))},
        index=genes,
    )
    params = dict(params)
    params.update(
        n_edges=len(pairs),
        n_genes=len(genes),
        n_regulators=len(regulators),
        n_targets=int(pairs["target"].nunique()),
        n_self_edges=int((pairs["regulator"] == pairs["target"]).sum()),
        n_duplicate_rows=n_rows - len(pairs),
    )
    net = GeneNetwork.from_edges(
        pairs,
        source="regulator",
        target="target",
        weight=None,
        genes=genes,
        var=var,
        sparse=True,
        orientation="target_by_regulator",
        method=method,
        params=params,
    )
    logger.info(
        "%s: %d edges, %d regulators, %d targets, %d genes",
        method,
        params["n_edges"],
        params["n_regulators"],
        params["n_targets"],
        params["n_genes"],
    )
    return net


# ------------------------------------------------------------------- gene symbols


@lru_cache(maxsize=2)
def _symbol_status(organism: str) -> pd.Series:
    """Status of every symbol of the organism's gene table: ``"ok"``, ``"lncRNA"`` or
    ``"ambiguous"`` (naming several genes). A symbol naming exactly one chrX and one chrY
    gene (the two copies of a pseudoautosomal gene) counts as one gene."""
    from scdataloader.genes import load_genes

    table = load_genes(organism)[["symbol", "biotype", "chromosome"]]
    table = table[table["symbol"].notna() & (table["symbol"] != "")]
    several = table[table["symbol"].duplicated(keep=False)]
    chroms = several.groupby("symbol", sort=False)["chromosome"].agg(
        lambda c: ",".join(sorted(map(str, c)))
    )
    ambiguous = chroms.index[chroms != "chrX,chrY"]
    first = table.drop_duplicates("symbol").set_index("symbol")
    status = pd.Series("ok", index=first.index, dtype=object)
    status[first["biotype"] == "lncRNA"] = "lncRNA"
    status[ambiguous] = "ambiguous"
    return status


# ------------------------------------------------------------------------ omnipath


def _omnipath_online(organism: str) -> pd.DataFrame:
    """All OmniPath interactions from the web service, as the embedded table: ``source``
    and ``target`` as gene symbols (UniProt ids or complexes where there is none)."""
    try:
        import omnipath as op
    except ImportError as err:
        raise ImportError(
            "online=True needs the OmniPath web client: pip install omnipath "
            "(or use the embedded table: online=False)"
        ) from err
    table = op.interactions.AllInteractions.get(
        exclude=["small_molecule", "lncrna_mrna"], genesymbols=True
    )
    table = pd.DataFrame(table)
    # map UniProt -> gene symbol where OmniPath knows one
    for end in ("source", "target"):
        sym = f"{end}_genesymbol"
        if sym in table.columns:
            known = table[sym].notna() & (table[sym].astype(str) != "")
            table[end] = table[end].where(~known, table[sym])
    if "sources" in table.columns:
        table["sources"] = table["sources"].map(
            lambda s: ";".join(map(str, s)) if isinstance(s, list | tuple | np.ndarray) else s
        )
    logger.info("downloaded %d OmniPath interactions (%s)", len(table), organism)
    return table


def _omnipath_table(
    path: str | os.PathLike[str] | None, online: bool, organism: str
) -> tuple[pd.DataFrame, str]:
    if organism == "mouse" and path is None:
        raise ValueError(
            "OmniPath for mouse needs a human -> mouse orthology mapping, which is not "
            "available offline: pass path= to a mouse interaction table (columns source, "
            "target, type, sources, with mouse gene symbols)"
        )
    if path is not None:
        if online:
            raise ValueError("give either path= or online=True, not both")
        file = _existing(path, "OmniPath table")
        if _kind(file) == "parquet":
            table = _read_omnipath_parquet(file)
        else:
            sep = _separator(_first_line(file), file)
            table = pd.read_csv(file, sep=sep)
        return table, str(file)
    if online:
        return _omnipath_online(organism), "online"
    from scdataloader.datasets import fetch

    file = fetch("omnipath")
    return _read_omnipath_parquet(file), str(file)


def _read_omnipath_parquet(file: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    wanted = ("source", "target", "type", "sources", "entity_type_source", "entity_type_target")
    names = pq.read_schema(file).names
    return pd.read_parquet(file, columns=[c for c in names if c in wanted])


def _resource_mask(sources: pd.Series, resources: Sequence[str]) -> np.ndarray:
    """Rows whose ';'-separated ``sources`` mention one of ``resources``: a token equal to a
    resource, or prefixed or suffixed by it with an underscore (OmniPath writes secondary
    resources as ``"TRRUST_CollecTRI"`` and DoRothEA levels as ``"DoRothEA_A"``),
    case-insensitively."""
    wanted = [r.lower() for r in resources]
    alternatives = "|".join(
        rf"{re.escape(r)}|{re.escape(r)}_[^;]*|[^;]*_{re.escape(r)}" for r in wanted
    )
    pattern = rf"(?:^|;)\s*(?:{alternatives})\s*(?:;|$)"
    text = sources.fillna("").astype(str).str.lower()
    return text.str.contains(pattern, regex=True).to_numpy()


def _omnipath(
    *,
    method: str,
    path: str | os.PathLike[str] | None,
    online: bool,
    resources: str | Sequence[str] | None,
    interaction_type: str | Sequence[str],
    organism: str,
    filter_genes: bool,
) -> GeneNetwork:
    organism = _check_organism(organism)
    table, source_file = _omnipath_table(path, online, organism)
    what = f"the OmniPath table ({source_file})"
    _require_columns(table, ["source", "target"], what)
    counts: dict[str, int] = {"rows": len(table)}
    keep = np.ones(len(table), dtype=bool)

    # interaction type
    if isinstance(interaction_type, str) and interaction_type == "all":
        types: list[str] | None = None
    else:
        types = [interaction_type] if isinstance(interaction_type, str) else list(interaction_type)
        _require_columns(table, ["type"], what)
        present = set(table["type"].dropna().astype(str))
        unknown = [t for t in types if t not in present]
        if unknown:
            raise ValueError(
                f"interaction_type {unknown} not in {what}; its types are {sorted(present)} "
                "(or 'all')"
            )
        keep &= table["type"].isin(types).to_numpy()
    counts["dropped_type"] = int(len(table) - keep.sum())

    # resources
    resource_list: list[str] | None
    if resources is None:
        resource_list = None
        counts["dropped_resources"] = 0
    else:
        resource_list = [resources] if isinstance(resources, str) else list(resources)
        if not resource_list:
            raise ValueError("resources must name at least one resource (or be None: all)")
        _require_columns(table, ["sources"], what)
        before = int(keep.sum())
        keep[keep] = _resource_mask(table["sources"][keep], resource_list)
        counts["dropped_resources"] = before - int(keep.sum())

    table = table[keep]
    # each distinct name once: codes of the sources then the targets (-1: missing)
    codes, uniques = pd.factorize(pd.concat([table["source"], table["target"]]))
    names = pd.Index(uniques.astype(str)).str.strip()
    src_code, tgt_code = codes[: len(table)], codes[len(table) :]
    keep = (src_code >= 0) & (tgt_code >= 0)
    counts["dropped_missing"] = int(len(table) - keep.sum())

    # small molecules (the embedded table has none; a downloaded one may)
    small_name = np.asarray(names.str.match(_SMALL_MOLECULE_ID), dtype=bool)
    small = small_name[src_code] | small_name[tgt_code]
    for col in ("entity_type_source", "entity_type_target"):
        if col in table.columns:
            small |= (table[col].astype(str) == "small_molecule").to_numpy()
    before = int(keep.sum())
    keep &= ~small
    counts["dropped_small_molecule"] = before - int(keep.sum())

    # gene symbols: complexes, other non-symbols (UniProt, miRNA ids), ambiguous, lncRNA
    if filter_genes:
        status = pd.Series(_symbol_status(organism).reindex(names).to_numpy(), dtype=object)
        status[status.isna().to_numpy() & names.str.upper().str.startswith("COMPLEX:")] = "complex"
        status = status.fillna("not_symbol").to_numpy()
    else:
        status = np.full(len(names), "unchecked", dtype=object)
    seen = np.zeros(len(names), dtype=bool)
    seen[src_code[keep]] = True
    seen[tgt_code[keep]] = True
    kinds, n_kind = np.unique(status[seen].astype(str), return_counts=True)
    entity_counts = {f"entities_{k}": int(v) for k, v in zip(kinds, n_kind, strict=True)}
    for reason in ("complex", "not_symbol", "ambiguous", "lncRNA"):
        before = int(keep.sum())
        keep &= (status[src_code] != reason) & (status[tgt_code] != reason)
        counts[f"dropped_{reason}"] = before - int(keep.sum())
    dropped_examples = {
        reason: names[seen & (status == reason)][:_SHOW].tolist()
        for reason in ("complex", "not_symbol", "ambiguous", "lncRNA")
    }
    counts["rows_kept"] = int(keep.sum())
    logger.info(
        "%s: %d rows; dropped %d by type, %d by resource, %d missing, %d small-molecule, "
        "%d complex, %d non-symbol, %d ambiguous-symbol and %d lncRNA rows; %d kept",
        method,
        counts["rows"],
        counts["dropped_type"],
        counts["dropped_resources"],
        counts["dropped_missing"],
        counts["dropped_small_molecule"],
        counts["dropped_complex"],
        counts["dropped_not_symbol"],
        counts["dropped_ambiguous"],
        counts["dropped_lncRNA"],
        counts["rows_kept"],
    )
    logger.debug("%s: examples of dropped entities: %s", method, dropped_examples)
    pairs = pd.DataFrame({"regulator": names[src_code[keep]], "target": names[tgt_code[keep]]})
    params = {
        "file": source_file,
        "organism": organism,
        "interaction_type": "all" if types is None else types,
        "resources": resource_list,
        "filters": ["small_molecule"]
        + (["complex", "not_symbol", "ambiguous_symbol", "lncRNA"] if filter_genes else []),
        **counts,
        **entity_counts,
    }
    return _network(pairs, method=method, params=params)


def omnipath(
    *,
    path: str | os.PathLike[str] | None = None,
    online: bool = False,
    resources: str | Sequence[str] | None = None,
    interaction_type: str | Sequence[str] = "transcriptional",
    organism: Literal["human", "mouse"] = "human",
    filter_genes: bool = True,
) -> GeneNetwork:
    """The OmniPath network: source -> target interactions among genes with a unique symbol.

    Rows are kept when their type and resources match, then dropped when either end is a
    small molecule, a complex (``"COMPLEX:..."``), not a symbol of the organism's gene table
    (:func:`scdataloader.genes.load_genes`: UniProt ids, miRNA ids, retired symbols), a
    symbol naming several genes (the chrX and chrY copies of a pseudoautosomal gene count
    as one) or a lncRNA (biotype ``"lncRNA"``). Repeated pairs become one edge; self-edges
    (auto-regulation) are kept.

    Parameters
    ----------
    path
        A table with columns ``source``, ``target`` (and ``type``, ``sources`` for those
        filters), as parquet or delimited text. By default the table embedded in
        ``bengrn`` 1.3.2 (:func:`scdataloader.datasets.fetch` ``("omnipath")``).
    online
        Download all interactions with the ``omnipath`` web client instead (excluding the
        small-molecule and lncRNA-mRNA datasets, UniProt ids mapped to gene symbols).
    resources
        None for every resource, else a resource name or a list of them (e.g.
        ``"CollecTRI"``, ``"DoRothEA"``, ``"TRRUST"``): rows whose ``sources`` mention one
        of them, matched case-insensitively, including secondary resources
        (``"TRRUST_CollecTRI"`` counts as CollecTRI).
    interaction_type
        ``"transcriptional"`` (TF -> gene) by default; ``"all"`` keeps every type; any other
        value of the table's ``type`` column (``"post_translational"``,
        ``"post_transcriptional"``, ``"mirna_transcriptional"``) or a list of them.
    organism
        ``"human"``; ``"mouse"`` needs ``path`` to a mouse table (no offline orthology).
    filter_genes
        Drop complexes, non-symbols, ambiguous symbols and lncRNAs (the paper's filters).
        False keeps every entity as the table names it (small molecules are still
        dropped).

    Returns
    -------
    GeneNetwork
        Binary, sparse, ``target_by_regulator``, genes = symbols, ``method="omnipath"``;
        ``params`` give the file, the filters, the rows each dropped (``dropped_*``) and
        the distinct entities of each kind (``entities_*``).

    Raises
    ------
    ValueError
        For an unknown type, a table without the needed columns, mouse without ``path``,
        or no edge left.
    ImportError
        With ``online=True`` when the ``omnipath`` client is not installed.
    """
    return _omnipath(
        method="omnipath",
        path=path,
        online=online,
        resources=resources,
        interaction_type=interaction_type,
        organism=organism,
        filter_genes=filter_genes,
    )


def collectri(**kwargs: Any) -> GeneNetwork:
    """The CollecTRI subset of OmniPath: :func:`omnipath` with ``resources="CollecTRI"``
    (transcriptional interactions by default), ``method="collectri"``.

    Parameters
    ----------
    **kwargs
        ``path``, ``online``, ``interaction_type``, ``organism``, ``filter_genes`` as for
        :func:`omnipath`.
    """
    return _omnipath(method="collectri", **_omnipath_kwargs(kwargs, "CollecTRI"))


def dorothea(**kwargs: Any) -> GeneNetwork:
    """The DoRothEA subset of OmniPath: :func:`omnipath` with ``resources="DoRothEA"``
    (transcriptional interactions by default), ``method="dorothea"``.

    Parameters
    ----------
    **kwargs
        ``path``, ``online``, ``interaction_type``, ``organism``, ``filter_genes`` as for
        :func:`omnipath`.
    """
    return _omnipath(method="dorothea", **_omnipath_kwargs(kwargs, "DoRothEA"))


def _omnipath_kwargs(kwargs: dict[str, Any], resource: str) -> dict[str, Any]:
    allowed = {"path", "online", "interaction_type", "organism", "filter_genes"}
    extra = set(kwargs) - allowed
    if extra:
        raise TypeError(f"unexpected arguments {sorted(extra)} (allowed: {sorted(allowed)})")
    return {
        "path": kwargs.get("path"),
        "online": kwargs.get("online", False),
        "interaction_type": kwargs.get("interaction_type", "transcriptional"),
        "organism": kwargs.get("organism", "human"),
        "filter_genes": kwargs.get("filter_genes", True),
        "resources": resource,
    }


# ------------------------------------------------------------------------- McCalla


def _mcalla_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"McCalla et al. benchmark folder not found: {path}. Get the files from "
            + _MCALLA_SOURCE
        )
    return path


def _mcalla_dataset(directory: Path, dataset: str | None) -> str:
    found = sorted(
        {p.name.split("_", 1)[0] for p in directory.glob("*_ground_truth.tsv")}
        | {p.name.split("_", 1)[0] for p in directory.glob("*_Genes.tsv")}
    )
    if dataset is None:
        if len(found) != 1:
            raise ValueError(
                f"cannot tell the dataset in {directory} (found {found or 'none'}): "
                "pass dataset='hESC' or 'mESC'"
            )
        return found[0]
    match = [d for d in found if d.lower() == dataset.lower()]
    return match[0] if match else dataset


def _mcalla_list(directory: Path, dataset: str, kind: str) -> tuple[list[str], Path]:
    """The benchmark's gene (``kind="Genes"``) or TF (``"TFs"``) list: the file
    ``{dataset}_*{kind}.tsv`` (e.g. ``hESC_Chen_Genes.tsv``), else the only ``*_{kind}.tsv``."""
    files = sorted(directory.glob(f"{dataset}_*{kind}.tsv")) or sorted(
        directory.glob(f"*_{kind}.tsv")
    )
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected one {dataset}_*_{kind}.tsv file in {directory}, found "
            f"{[p.name for p in files] or 'none'}. Get the files from " + _MCALLA_SOURCE
        )
    text = files[0].read_text(encoding="utf-8").splitlines()
    names = [line.split("\t")[0].strip() for line in text]
    return list(dict.fromkeys(n for n in names if n)), files[0]


def mcalla(
    directory: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    gold_standard: str = "ground_truth",
    restrict_to: Sequence[str] | None = None,
) -> GeneNetwork:
    """A McCalla et al. gold standard as a directed binary TF -> gene network.

    The folder is laid out as the benGRN repository's ``data/GroundTruth/stone_and_sroy``:
    ``{dataset}_ground_truth.tsv`` (the ChIP and knockdown intersection the paper uses; two
    tab-separated columns TF, target, no header), the other gold standards as
    ``{dataset}_{name}.txt`` (``lit``, ``escapechip``, ``logof``, ``nishiyama``,
    ``chipunion_KDUnion_intersect``, ...) in the same format.

    Parameters
    ----------
    directory
        The benchmark folder.
    dataset
        ``"hESC"`` or ``"mESC"``; None detects it from the ``*_ground_truth.tsv`` and
        ``*_Genes.tsv`` file names (an error if several datasets are present).
    gold_standard
        ``"ground_truth"`` (default) or the ``{name}`` of another gold standard file.
    restrict_to
        Keep only edges between these genes; the network's genes are then exactly these
        (in this order; genes without a known edge included), e.g. the benchmark's gene
        list. None keeps the full truth with all its genes.

    Returns
    -------
    GeneNetwork
        ``method="mcalla-{dataset}"`` (lower case), ``params`` with the file, dataset,
        gold standard and counts. Self-edges in the file are kept (the hESC ground truth
        has 19).
    """
    folder = _mcalla_dir(directory)
    dataset = _mcalla_dataset(folder, dataset)
    candidates = [folder / f"{dataset}_{gold_standard}{s}" for s in (".tsv", ".txt")]
    file = next((p for p in candidates if p.is_file()), None)
    if file is None:
        available = sorted(
            p.name[len(dataset) + 1 :].rsplit(".", 1)[0]
            for p in folder.glob(f"{dataset}_*")
            if p.suffix in (".tsv", ".txt") and not p.name.endswith(("_Genes.tsv", "_TFs.tsv"))
        )
        raise FileNotFoundError(
            f"no gold standard {gold_standard!r} for {dataset} in {folder} (looked for "
            f"{[p.name for p in candidates]}); available: {available or 'none'}. Get the "
            "files from " + _MCALLA_SOURCE
        )
    try:
        table = pd.read_csv(file, sep="\t", header=None, dtype=str, usecols=[0, 1])
    except (pd.errors.EmptyDataError, ValueError) as err:
        raise ValueError(f"{file} is not a two-column TF<tab>target table: {err}") from err
    pairs, n_missing = _clean_pairs(table, 0, 1)
    params: dict[str, Any] = {
        "file": str(file),
        "dataset": dataset,
        "gold_standard": gold_standard,
        "rows": len(table),
        "dropped_missing": n_missing,
    }
    genes = None
    if restrict_to is not None:
        genes = pd.Index(list(dict.fromkeys(map(str, restrict_to))))
        inside = pairs["regulator"].isin(genes) & pairs["target"].isin(genes)
        params["restricted_to"] = len(genes)
        params["dropped_outside_genes"] = int((~inside).sum())
        pairs = pairs[inside]
    return _network(pairs, method=f"mcalla-{dataset.lower()}", params=params, genes=genes)


def recover_log2_counts(
    values: Any,
    *,
    cell_axis: int = 0,
    atol: float = 1e-6,
) -> np.ndarray | sp.csr_matrix:
    """Exact integer counts from a matrix that had ``log2(x + 1)`` applied twice.

    The McCalla et al. expression matrices were transformed twice, so the counts are
    ``2 ** (2 ** v - 1) - 1``. The result must be integer within ``atol``. Otherwise:

    - when undoing the transform once already gives integers, the matrix was logged only
      once (``counts = 2 ** v - 1``; undoing it twice would also give integers, but wrong
      ones): a :class:`ValueError` says so, unless both readings agree (counts 0 and 1);
    - when undoing it once and dividing each cell by its smallest non-zero value gives
      integers (the scPRINT paper's recipe for a normalised, once-logged matrix), those are
      returned, with a log message;
    - else a :class:`ValueError` gives the largest deviation of each attempt.

    Parameters
    ----------
    values
        Non-negative log values, dense (array or DataFrame) or sparse (zeros stay zeros).
    cell_axis
        The axis of the cells (0: cells x genes; 1: genes x cells), for the per-cell
        rescaling.
    atol
        Largest accepted distance of a recovered value to the nearest integer.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        int64 counts of the same shape (CSR when the input was sparse).
    """
    if cell_axis not in (0, 1):
        raise ValueError(f"cell_axis must be 0 or 1, not {cell_axis}")
    sparse_in = sp.issparse(values)
    if sparse_in:
        mat = sp.csr_matrix(values, dtype=np.float64, copy=True)
        mat.eliminate_zeros()
        data = mat.data
    else:
        mat = np.asarray(values.to_numpy() if isinstance(values, pd.DataFrame) else values)
        if not np.issubdtype(mat.dtype, np.number) or np.issubdtype(mat.dtype, np.complexfloating):
            raise ValueError(f"values must be real numbers, not {mat.dtype}")
        mat = mat.astype(np.float64)
        if mat.ndim != 2:
            raise ValueError(f"values must be a 2-D matrix, got shape {mat.shape}")
        data = mat
    if not np.all(np.isfinite(data)):
        raise ValueError("values hold NaN or infinite entries: not log2(x + 1) counts")
    if data.size and data.min() < 0:
        raise ValueError(
            f"values hold negative entries (min {data.min():.3g}): not log2(x + 1) counts"
        )

    def pack(counts: np.ndarray) -> np.ndarray | sp.csr_matrix:
        counts = np.rint(counts).astype(np.int64)
        if sparse_in:
            out = mat.copy().astype(np.int64)
            out.data = counts
            return out
        return counts

    def deviation(x: np.ndarray) -> float:
        if not x.size:
            return 0.0
        if not np.all(np.isfinite(x)) or x.max() > _MAX_EXACT:
            return np.inf  # every float this large is an integer: no evidence of counts
        return float(np.max(np.abs(x - np.rint(x))))

    once = np.exp2(data) - 1
    dev_once = deviation(once)
    with np.errstate(over="ignore", invalid="ignore"):
        twice = np.exp2(once) - 1
    dev_twice = deviation(twice)
    if dev_once <= atol and not (dev_twice <= atol and np.allclose(twice, once, atol=atol)):
        # integer counts c logged once also look doubly logged (2 ** c - 1 is an integer);
        # a doubly logged matrix undone once gives log2(c + 1), rarely all integers
        raise ValueError(
            "these values look log2(x + 1)-transformed only once (2 ** v - 1 gives integer "
            f"counts, max deviation {dev_once:.2g}): recover the counts with 2 ** v - 1, "
            "not recover_log2_counts"
        )
    if dev_twice <= atol:
        logger.info("log2(x + 1) undone twice: exact counts (max deviation %.2g)", dev_twice)
        return pack(twice)

    # the paper's recipe: undo once, then divide each cell by its smallest non-zero value
    if sparse_in:
        full = mat.copy()
        full.data = once
        by_cell = full if cell_axis == 0 else full.T.tocsr()
        mins = np.full(by_cell.shape[0], np.inf)
        nnz_rows = np.diff(by_cell.indptr) > 0
        if by_cell.nnz:
            mins[nnz_rows] = np.minimum.reduceat(by_cell.data, by_cell.indptr[:-1][nnz_rows])
        row_of_entry = np.repeat(np.arange(by_cell.shape[0]), np.diff(by_cell.indptr))
        scaled_data = by_cell.data / mins[row_of_entry]
        dev_scaled = deviation(scaled_data)
    else:
        cells = once if cell_axis == 0 else once.T
        positive = np.where(cells > 0, cells, np.inf)
        mins = positive.min(axis=1, keepdims=True)
        mins[~np.isfinite(mins)] = 1.0
        scaled = cells / mins
        dev_scaled = deviation(scaled)
    if dev_scaled <= atol:
        logger.info(
            "log2(x + 1) undone once and each cell divided by its smallest non-zero value "
            "(the scPRINT paper's recipe): integer counts (max deviation %.2g)",
            dev_scaled,
        )
        if sparse_in:
            by_cell = by_cell.copy()
            by_cell.data = np.rint(scaled_data).astype(np.int64)
            by_cell = by_cell.astype(np.int64)
            return by_cell if cell_axis == 0 else by_cell.T.tocsr()
        counts = np.rint(scaled).astype(np.int64)
        return counts if cell_axis == 0 else np.ascontiguousarray(counts.T)
    raise ValueError(
        "cannot recover integer counts: undoing log2(x + 1) twice deviates from integers "
        f"by up to {dev_twice:.3g}, once by {dev_once:.3g}, once with per-cell rescaling by "
        f"{dev_scaled:.3g} (tolerance {atol:g}). Is this a log2(x + 1) matrix of counts?"
    )


def _mcalla_expression_file(directory: Path, dataset: str) -> Path:
    files = sorted(directory.glob("*log2*.tsv*"))
    if len(files) > 1:
        # prefer the one named after the dataset or the study of the gene list
        study = ""
        genes = sorted(directory.glob(f"{dataset}_*_Genes.tsv"))
        if genes:
            study = genes[0].name[len(dataset) + 1 : -len("_Genes.tsv")].lower()
        preferred = [
            p
            for p in files
            if dataset.lower() in p.name.lower() or (study and study in p.name.lower())
        ]
        files = preferred
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected one *log2*.tsv(.gz) expression file for {dataset} in {directory}, "
            f"found {[p.name for p in files] or 'none'}. Get the files from " + _MCALLA_SOURCE
        )
    return files[0]


def mcalla_expression(
    directory: str | os.PathLike[str], *, dataset: str | None = None
) -> ad.AnnData:
    """The McCalla et al. expression data with its exact counts recovered.

    The matrix (``*log2*.tsv.gz``: genes x cells, tab-separated, first column the gene
    symbols, header the cell barcodes with no name for the gene column) holds
    ``log2(x + 1)`` applied twice to the counts; :func:`recover_log2_counts` undoes it
    exactly. For hESC (``chen_rna_filtered_log2.tsv.gz``) that is 385 cells x 8,595 genes
    with a median of 532 counts per cell. When several ``*log2*`` files are present, the
    one named after the dataset or the study of its gene list (``{dataset}_{study}_Genes.tsv``)
    is used; the gene and TF lists are found as ``{dataset}_*Genes.tsv`` and
    ``{dataset}_*TFs.tsv`` (else the only ``*_Genes.tsv`` / ``*_TFs.tsv``).

    Parameters
    ----------
    directory
        The benchmark folder (see :func:`mcalla`).
    dataset
        ``"hESC"`` or ``"mESC"``; None detects it from the file names.

    Returns
    -------
    anndata.AnnData
        Cells x genes: ``X`` the counts (CSR float32, exact integers),
        ``layers["log2"]`` the original values (CSR float64), ``var["symbol"]``,
        ``var["is_tf"]`` (in the TF list), ``var["in_benchmark"]`` (in the gene list),
        ``obs["total_counts"]``, ``obs["organism_ontology_term_id"]`` (for hESC/mESC) and
        ``uns["mcalla"]`` the provenance.
    """
    import anndata as ad

    folder = _mcalla_dir(directory)
    dataset = _mcalla_dataset(folder, dataset)
    file = _mcalla_expression_file(folder, dataset)
    table = pd.read_csv(file, sep="\t", index_col=0)
    table.index = table.index.astype(str)
    if table.empty or not all(np.issubdtype(t, np.number) for t in table.dtypes):
        raise ValueError(f"{file} is not a numeric genes x cells matrix")
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique()
        raise ValueError(f"{file} repeats {len(dup)} gene names: {_show(dup)}")
    log2 = sp.csr_matrix(table.to_numpy(dtype=np.float64).T)  # (cells, genes)
    log2.eliminate_zeros()
    counts = recover_log2_counts(log2, cell_axis=0)
    genes_list, genes_file = _mcalla_list(folder, dataset, "Genes")
    tfs_list, tfs_file = _mcalla_list(folder, dataset, "TFs")
    var = pd.DataFrame(
        {
            "symbol": table.index.to_numpy(),
            "is_tf": table.index.isin(tfs_list),
            "in_benchmark": table.index.isin(genes_list),
        },
        index=table.index,
    )
    obs = pd.DataFrame(index=table.columns.astype(str))
    obs["total_counts"] = np.asarray(counts.sum(axis=1)).ravel()
    organism = _MCALLA_ORGANISM.get(dataset.lower())
    if organism is not None:
        obs["organism_ontology_term_id"] = pd.Categorical([organism] * len(obs))
    adata = ad.AnnData(
        X=counts.astype(np.float32),
        obs=obs,
        var=var,
        layers={"log2": log2},
    )
    adata.uns["mcalla"] = {
        "file": str(file),
        "dataset": dataset,
        "genes_file": str(genes_file),
        "tfs_file": str(tfs_file),
        "transform": "counts = 2 ** (2 ** v - 1) - 1 (log2(x + 1) applied twice)",
        "n_tfs_listed": len(tfs_list),
        "n_genes_listed": len(genes_list),
    }
    logger.info(
        "McCalla %s expression: %d cells x %d genes, median %.0f counts per cell",
        dataset,
        adata.n_obs,
        adata.n_vars,
        float(np.median(obs["total_counts"])),
    )
    return adata


# ----------------------------------------------------------------- other formats


def _read_pvalues(pvalues: pd.DataFrame | str | os.PathLike[str]) -> tuple[pd.DataFrame, str]:
    if isinstance(pvalues, pd.DataFrame):
        return pvalues, "DataFrame"
    file = _existing(pvalues, "perturb-seq p-value matrix")
    kind = _kind(file)
    if kind == "h5ad":
        import anndata as ad

        adata = ad.read_h5ad(file)
        x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        return pd.DataFrame(x, index=adata.obs_names, columns=adata.var_names), str(file)
    if kind == "parquet":
        table = pd.read_parquet(file)
        if (
            isinstance(table.index, pd.RangeIndex)
            and table.shape[1]
            and (not pd.api.types.is_numeric_dtype(table.dtypes.iloc[0]))
        ):
            table = table.set_index(table.columns[0])
        return table, str(file)
    sep = _separator(_first_line(file), file)
    return pd.read_csv(file, sep=sep, index_col=0), str(file)


def perturbseq(
    pvalues: pd.DataFrame | str | os.PathLike[str], *, cutoff: float = 0.05
) -> GeneNetwork:
    """A network from a perturb-seq differential expression p-value matrix.

    An edge knocked-out gene -> measured gene wherever its (multiple-testing corrected)
    p-value is below ``cutoff``, as the scPRINT paper does with the genome-wide K562
    perturb-seq matrix. Missing values are not edges; self-edges (a gene's own knock-down)
    are dropped.

    Parameters
    ----------
    pvalues
        Rows = perturbed genes (regulators), columns = measured genes (targets), values =
        adjusted p-values in [0, 1]. A DataFrame, or a file: csv/tsv (first column the
        perturbed genes), parquet (its index or first text column) or h5ad (obs =
        perturbed, var = measured, X = p-values).
    cutoff
        Edges are p-values strictly below it.

    Returns
    -------
    GeneNetwork
        ``method="perturbseq"``, genes = the sorted union of perturbed and measured genes.
    """
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1], not {cutoff}")
    table, source = _read_pvalues(pvalues)
    rows = pd.Index(table.index).astype(str)
    cols = pd.Index(table.columns).astype(str)
    for names, what in ((rows, "perturbed (row)"), (cols, "measured (column)")):
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            raise ValueError(f"the p-value matrix repeats {len(dup)} {what} genes: {_show(dup)}")
    try:
        values = table.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the p-value matrix must be numeric: {err}") from err
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"p-values must lie in [0, 1]; got values in [{finite.min():.3g}, "
            f"{finite.max():.3g}]: is this a matrix of p-values?"
        )
    with np.errstate(invalid="ignore"):
        hit = values < cutoff  # NaN compares False: no edge
    r, c = np.nonzero(hit)
    pairs = pd.DataFrame({"regulator": rows[r], "target": cols[c]})
    self_edge = (pairs["regulator"] == pairs["target"]).to_numpy()
    pairs = pairs[~self_edge]
    genes = pd.Index(np.union1d(rows, cols))
    params = {
        "file": source,
        "cutoff": float(cutoff),
        "n_perturbed": len(rows),
        "n_measured": len(cols),
        "n_missing_values": int(np.isnan(values).sum()),
        "dropped_self_edges": int(self_edge.sum()),
    }
    return _network(pairs, method="perturbseq", params=params, genes=genes)


def edge_list(
    path_or_df: pd.DataFrame | str | os.PathLike[str],
    *,
    source: str | None = None,
    target: str | None = None,
    method: str = "edge_list",
) -> GeneNetwork:
    """A directed binary network from an edge list (one row per regulator -> target).

    Parameters
    ----------
    path_or_df
        A DataFrame, or a parquet or delimited text file (tab, comma or whitespace
        separated, detected from the first line; ``.gz`` allowed). A text file has a
        header when its first line holds ``source`` and ``target`` (or, with those None,
        a recognised pair such as ``source,target``, ``Gene1,Gene2``, ``TF,target``);
        otherwise its first two columns are regulator and target.
    source, target
        The regulator and target columns; None: a recognised pair, else the first two
        columns of a file without a header.
    method
        The network's ``method``.

    Returns
    -------
    GeneNetwork
        Genes = the sorted union of the names; repeated edges become one; self-edges kept.
    """
    if isinstance(path_or_df, pd.DataFrame):
        table, file = path_or_df, "DataFrame"
    else:
        path = _existing(path_or_df, "edge list")
        names = None if source is None else [source, target or ""]
        table, file = _read_edge_file(path, names), str(path)
    what = f"the edge list ({file})"
    src, tgt = _edge_columns(table, source, target, what)
    pairs, n_missing = _clean_pairs(table, src, tgt)
    params = {
        "file": file,
        "source": str(src),
        "target": str(tgt),
        "rows": len(table),
        "dropped_missing": n_missing,
    }
    return _network(pairs, method=method, params=params)


def beeline(path_or_df: pd.DataFrame | str | os.PathLike[str]) -> GeneNetwork:
    """A BEELINE reference network (``refNetwork.csv``).

    The format is a csv with header ``Gene1,Gene2[,Type]`` where ``Gene1`` regulates
    ``Gene2`` and ``Type`` is ``+`` (activation) or ``-`` (repression); a plain two-column
    csv/tsv without header (regulator, target) is accepted too. The sign is ignored (the
    truth is binary) but counted in ``params``.

    Parameters
    ----------
    path_or_df
        The file, or a DataFrame with ``Gene1`` and ``Gene2`` columns (or two columns).

    Returns
    -------
    GeneNetwork
        ``method="beeline"``.
    """
    if isinstance(path_or_df, pd.DataFrame):
        table, file = path_or_df, "DataFrame"
    else:
        path = _existing(path_or_df, "BEELINE reference network")
        table, file = _read_edge_file(path, ["Gene1", "Gene2"]), str(path)
    what = f"the BEELINE network ({file})"
    if "Gene1" in table.columns or "Gene2" in table.columns:
        src, tgt = _edge_columns(table, "Gene1", "Gene2", what)
    else:
        src, tgt = _edge_columns(table, None, None, what)
    pairs, n_missing = _clean_pairs(table, src, tgt)
    params: dict[str, Any] = {"file": file, "rows": len(table), "dropped_missing": n_missing}
    if "Type" in table.columns:
        signs = table["Type"].astype(str).str.strip()
        params["n_activation_rows"] = int((signs == "+").sum())
        params["n_repression_rows"] = int((signs == "-").sum())
    return _network(pairs, method="beeline", params=params)


# ------------------------------------------------------------------------ dispatch


def _mcalla_from_env(directory: str | os.PathLike[str] | None, name: str) -> Path:
    if directory is None:
        directory = os.environ.get(MCALLA_ENV_VAR)
    if not directory:
        raise ValueError(
            f"{name!r} needs the McCalla et al. benchmark folder: pass directory= or set "
            f"{MCALLA_ENV_VAR}. Get the files from " + _MCALLA_SOURCE
        )
    return Path(directory)


def load_truth(
    name_or_path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] | None = None,
    organism: Literal["human", "mouse"] = "human",
    **kwargs: Any,
) -> GeneNetwork:
    """A ground truth by name or from a file, for the command line.

    Parameters
    ----------
    name_or_path
        One of :data:`TRUTHS` (case-insensitive, ``_`` for ``-`` allowed):
        ``"omnipath"``, ``"collectri"``, ``"dorothea"`` (:func:`omnipath`),
        ``"mcalla-hesc"``, ``"mcalla-mesc"`` (:func:`mcalla`); or a file: ``.h5ad`` (a
        written :class:`GeneNetwork`), ``.csv``/``.tsv``/``.txt`` (a BEELINE network when its
        header is ``Gene1,Gene2``, else :func:`edge_list`), ``.parquet`` (:func:`edge_list`).
    directory
        The McCalla et al. folder for ``mcalla-*`` (default: ``$BENGRN_MCALLA_DIR``).
    organism
        For the OmniPath truths.
    **kwargs
        Passed on to the loader (e.g. ``path=``, ``interaction_type=`` for OmniPath,
        ``gold_standard=``, ``restrict_to=`` for McCalla, ``source=``/``target=`` for edge
        lists).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices) or ``mcalla-*`` without a
        folder.
    FileNotFoundError
        For a path that does not exist.
    """
    text = os.fspath(name_or_path)
    key = text.strip().lower().replace("_", "-")
    if key == "omnipath":
        return omnipath(organism=organism, **kwargs)
    if key == "collectri":
        return collectri(organism=organism, **kwargs)
    if key == "dorothea":
        return dorothea(organism=organism, **kwargs)
    if key in ("mcalla-hesc", "mcalla-mesc"):
        folder = _mcalla_from_env(directory, key)
        return mcalla(folder, dataset="hESC" if key == "mcalla-hesc" else "mESC", **kwargs)
    path = Path(text).expanduser()
    if not path.exists():
        if path.suffix or os.sep in text or "/" in text:
            raise FileNotFoundError(f"ground-truth file not found: {path}")
        raise ValueError(
            f"unknown ground truth {text!r}: choose one of {', '.join(TRUTHS)}, or give a "
            "file (.h5ad, .csv, .tsv, .txt, .parquet)"
        )
    kind = _kind(path)
    if kind == "h5ad":
        return GeneNetwork.read(path)
    if kind == "parquet":
        return edge_list(path, **kwargs)
    if kind == "text":
        line = _first_line(path)
        fields = [f.strip().strip('"') for f in re.split(_separator(line, path), line.strip())]
        if fields[:2] == ["Gene1", "Gene2"] and not kwargs:
            return beeline(path)
        return edge_list(path, **kwargs)
    raise ValueError(f"cannot tell the format of {path}: use .h5ad, .csv, .tsv, .txt or .parquet")


# ---------------------------------------------------------------- TFs and ChIP


def tf_list(
    organism: Literal["human", "mouse"] = "human",
    *,
    path: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Transcription factor symbols.

    Parameters
    ----------
    organism
        ``"human"`` (Lambert et al. 2018: 1,639) or ``"mouse"`` (1,860), from
        :func:`scdataloader.datasets.tfs`.
    path
        A file with one symbol per line instead (blank lines ignored, whitespace
        stripped, duplicates removed).

    Returns
    -------
    list[str]
        The symbols, in file order.
    """
    if path is None:
        from scdataloader.datasets import tfs

        return tfs(_check_organism(organism))
    file = _existing(path, "TF list")
    names = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(n for n in names if n))


def encode_targets(
    *, path: str | os.PathLike[str] | None = None, merge_cell_lines: bool = True
) -> dict[str, list[str]]:
    """ENCODE ChIP-seq target genes of transcription factors.

    Parameters
    ----------
    path
        A JSON object mapping ``"TF cell-line"`` (e.g. ``"FOS H1"``) to a list of target
        symbols; by default the one embedded in ``bengrn`` 1.3.2
        (:func:`scdataloader.datasets.tfchip`, 166 lists of 95 TFs).
    merge_cell_lines
        Return one target list per TF, the union over its cell lines (first-seen order);
        else the lists as stored, keyed ``"TF cell-line"``.

    Returns
    -------
    dict[str, list[str]]
        Targets (duplicates removed) by TF or by ``"TF cell-line"``.
    """
    if path is None:
        from scdataloader.datasets import tfchip

        data = tfchip()
    else:
        file = _existing(path, "ENCODE ChIP target file")
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError("the ENCODE ChIP file must map 'TF cell-line' keys to lists of genes")
    if not merge_cell_lines:
        return {str(k): list(dict.fromkeys(map(str, v))) for k, v in data.items()}
    merged: dict[str, dict[str, None]] = {}
    for key, targets in data.items():
        tf = str(key).strip().split(" ", 1)[0]
        merged.setdefault(tf, {}).update(dict.fromkeys(map(str, targets)))
    return {tf: list(targets) for tf, targets in merged.items()}
