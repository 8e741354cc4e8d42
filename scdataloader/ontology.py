"""Label hierarchies from the ontologies behind the CELLxGENE label columns.

scPRINT (Methods, "Classification losses") predicts cell type, disease, assay (sequencer),
self-reported ethnicity, sex and organism. To keep the output small it is trained only on
the *leaf* labels of each class, the most precise ones present in the data; a cell with a
coarser label (say "neuron") is trained with a hierarchical loss, the log-sum-exp of the
scores of every leaf label under it. The hierarchy comes from the Cell Ontology (cell
type), MONDO (disease), EFO (assay) and HANCESTRO (ethnicity); sex and organism are flat.
Cells whose label is unknown do not contribute to the loss of that class.

This module turns the observed values of an ``*_ontology_term_id`` column into a
:class:`LabelHierarchy`: the leaf labels, the coarse labels and which leaves each coarse
label covers, plus the integer code space used by the classifier heads (codes
``0 .. n_leaves - 1`` are leaves, the codes after them are coarse labels, ``-1`` is
unknown).

Ontologies are read offline from the ``cellxgene-ontology-guide`` package. The parser
is built once, on first use (see :func:`get_parser`), and every ontology file is
decompressed the first time one of its terms is looked up (CL, EFO, HANCESTRO, PATO: well
under a second; MONDO, UBERON: a fraction of a second; NCBITaxon: about 20 s, which is
why organism names come from a small built-in table).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ._constants import UNKNOWN_CODE, UNKNOWN_LABELS, ObsKeys
from .errors import LabelError

if TYPE_CHECKING:
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

__all__ = [
    "ONTOLOGY_OF_KEY",
    "HIERARCHICAL_KEYS",
    "LabelHierarchy",
    "get_parser",
    "is_unknown",
    "ancestors",
    "term_name",
    "build_hierarchy",
    "build_hierarchies",
    "leaves_under",
]

logger = logging.getLogger(__name__)

# obs column -> prefix of the ontology its values come from.
ONTOLOGY_OF_KEY: dict[str, str] = {
    ObsKeys.CELL_TYPE: "CL",
    ObsKeys.DISEASE: "MONDO",
    ObsKeys.ASSAY: "EFO",
    ObsKeys.ETHNICITY: "HANCESTRO",
    ObsKeys.SEX: "PATO",
    ObsKeys.ORGANISM: "NCBITaxon",
    ObsKeys.TISSUE: "UBERON",
}

# The classes whose loss is hierarchical in the paper; the other columns are flat.
HIERARCHICAL_KEYS: tuple[str, ...] = (
    ObsKeys.CELL_TYPE,
    ObsKeys.DISEASE,
    ObsKeys.ASSAY,
    ObsKeys.ETHNICITY,
)

# Valid values of a column that come from another ontology than the column's own, and are
# leaves by definition ("normal" is the CELLxGENE disease value of healthy donors).
_FOREIGN_LEAVES: dict[str, frozenset[str]] = {
    ObsKeys.DISEASE: frozenset({"PATO:0000461"}),
}

# Separator of multi-valued labels (multi-ethnic donors: "HANCESTRO:0005,HANCESTRO:0014").
_MULTI_SEPARATOR = ","

# Names of the organisms scPRINT uses: loading NCBITaxon takes about 20 s, too slow for a name.
_ORGANISM_NAMES = {
    "NCBITaxon:9606": "Homo sapiens",
    "NCBITaxon:10090": "Mus musculus",
}

# Decoded value of UNKNOWN_CODE.
_UNKNOWN_NAME = "unknown"

_PARSER: OntologyParser | None = None
_PARSER_LOCK = threading.Lock()


def get_parser() -> OntologyParser:
    """Return the process-wide ontology parser, building it on first use.

    Returns
    -------
    The ``cellxgene_ontology_guide`` parser of the latest CELLxGENE schema the installed
    package ships. Ontology files are only decompressed when one of their terms is first
    looked up.
    """
    global _PARSER
    if _PARSER is None:
        with _PARSER_LOCK:
            if _PARSER is None:
                from cellxgene_ontology_guide.ontology_parser import OntologyParser

                _PARSER = OntologyParser()
                logger.debug("Ontology parser ready (schema %s).", _PARSER.cxg_schema.version)
    return _PARSER


def _clean(value: Any) -> str:
    """Return a label value as the stripped string it is compared as."""
    return str(value).strip()


def _is_unknown_str(label: str) -> bool:
    return label.lower() in UNKNOWN_LABELS


def _is_multi(term_id: str) -> bool:
    return _MULTI_SEPARATOR in term_id


def _factorize(values: Any) -> tuple[np.ndarray, list[str]]:
    """Factorize 1-D label values.

    Returns
    -------
    codes
        Index of each value in the uniques, ``-1`` for missing values (NaN, None).
    uniques
        The distinct non-missing values, as stripped strings (may repeat after stripping).
    """
    if isinstance(values, str | bytes):
        values = [values]
    if isinstance(values, pd.Series | pd.Index | pd.Categorical):
        array = values
    elif isinstance(values, np.ndarray):
        array = values
    else:
        array = pd.Series(list(values), dtype=object)
    if np.ndim(array) != 1:
        raise ValueError(f"Label values must be 1-D; got an array of shape {np.shape(array)}.")
    codes, uniques = pd.factorize(array, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [_clean(u) for u in uniques]


def is_unknown(values: Sequence[Any] | pd.Series | np.ndarray) -> np.ndarray:
    """Tell which label values mean "no label".

    Parameters
    ----------
    values
        1-D label values (list, array, Series, categorical). A single string counts as one
        value.

    Returns
    -------
    Boolean array, True where the value is missing (NaN, None) or one of
    ``UNKNOWN_LABELS`` after stripping and lower-casing ("unknown", "na", "", ...).
    """
    codes, uniques = _factorize(values)
    # The extra last slot is what the missing-value sentinel -1 indexes.
    table = np.array([_is_unknown_str(u) for u in uniques] + [True], dtype=bool)
    return table[codes]


@functools.lru_cache(maxsize=65536)
def ancestors(term_id: str) -> frozenset[str]:
    """Return every ancestor of an ontology term (not the term itself).

    Parameters
    ----------
    term_id
        An ontology term id such as ``"CL:0000540"``.

    Returns
    -------
    The ids of all the term's ancestors; empty for a root term and for a term the
    ontologies do not know (free text, a made-up id). A multi-valued label such as
    ``"HANCESTRO:0005,HANCESTRO:0014"`` (a multi-ethnic donor) is a label of its own, below
    the terms that are an ancestor of (or equal to) every one of its parts: here the
    ancestry root ``HANCESTRO:0004``, but neither of the two parts.
    """
    term_id = _clean(term_id)
    if not term_id or _is_unknown_str(term_id):
        return frozenset()
    if _is_multi(term_id):
        parts = [_clean(part) for part in term_id.split(_MULTI_SEPARATOR)]
        shared = functools.reduce(
            frozenset.intersection, (ancestors(part) | {part} for part in parts)
        )
        return shared - {term_id}
    parser = get_parser()
    try:
        if not parser.is_valid_term_id(term_id):
            return frozenset()
        return frozenset(parser.get_term_ancestors(term_id)) - {term_id}
    except (KeyError, ValueError):
        return frozenset()


def _is_known_term(term_id: str, ontology: str | None) -> bool:
    """Tell whether ``term_id`` is a valid term (of ``ontology`` when given)."""
    parser = get_parser()
    parts = term_id.split(_MULTI_SEPARATOR) if _is_multi(term_id) else [term_id]
    for part in parts:
        part = part.strip()
        if ontology is not None and part.split(":", 1)[0] != ontology:
            return False
        try:
            if not parser.is_valid_term_id(part):
                return False
        except (KeyError, ValueError):
            return False
    return True


@functools.lru_cache(maxsize=65536)
def term_name(term_id: str) -> str:
    """Return the human-readable name of an ontology term.

    Parameters
    ----------
    term_id
        An ontology term id, or a multi-valued label ``"ID1,ID2"``.

    Returns
    -------
    The term's label in its ontology (``"CL:0000540"`` -> ``"neuron"``); the names of
    the parts joined by ``" + "`` for a multi-valued label; ``term_id`` itself when the
    ontologies do not know it. NCBITaxon names come from a built-in table of the
    organisms scPRINT uses (loading that ontology takes about 20 s); other taxa keep
    their id.
    """
    term_id = _clean(term_id)
    if _is_unknown_str(term_id):
        return _UNKNOWN_NAME
    if _is_multi(term_id):
        parts = [_clean(part) for part in term_id.split(_MULTI_SEPARATOR)]
        names = [term_name(part) for part in parts]
        return term_id if names == parts else " + ".join(names)
    if term_id.startswith("NCBITaxon:"):
        return _ORGANISM_NAMES.get(term_id, term_id)
    parser = get_parser()
    try:
        if parser.is_valid_term_id(term_id):
            return str(parser.get_term_label(term_id))
    except (KeyError, ValueError):
        pass
    return term_id


@dataclass(frozen=True)
class LabelHierarchy:
    """The labels of one obs column, split into leaves and coarse labels.

    The classifier head of the column predicts the leaves; a coarse label stands for the
    set of leaves under it. Integer codes index :attr:`labels`: ``0 .. n_leaves - 1`` are
    leaves, ``n_leaves ..`` coarse labels, and ``-1`` (``UNKNOWN_CODE``) an unknown label.

    Attributes
    ----------
    key
        The obs column the labels come from.
    leaves
        Labels that are no ancestor of any other label present (sorted).
    coarse
        Labels present that are an ancestor of another label present (sorted).
    coarse_leaves
        Each coarse label -> the leaves that descend from it, in code order.
    hierarchical
        Whether the labels were arranged along an ontology (False: every label is a leaf).
    """

    key: str
    leaves: tuple[str, ...]
    coarse: tuple[str, ...] = ()
    coarse_leaves: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hierarchical: bool = False

    def __post_init__(self) -> None:
        leaves = tuple(str(label) for label in self.leaves)
        coarse = tuple(str(label) for label in self.coarse)
        coarse_leaves = {
            str(label): tuple(str(leaf) for leaf in under)
            for label, under in dict(self.coarse_leaves).items()
        }
        object.__setattr__(self, "leaves", leaves)
        object.__setattr__(self, "coarse", coarse)
        object.__setattr__(self, "coarse_leaves", coarse_leaves)
        object.__setattr__(self, "hierarchical", bool(self.hierarchical))
        if not leaves and coarse:
            raise LabelError(f"The hierarchy of {self.key!r} has coarse labels but no leaf.")
        labels = leaves + coarse
        if len(set(labels)) != len(labels):
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            raise LabelError(f"The hierarchy of {self.key!r} repeats labels: {repeated}.")
        if set(coarse_leaves) != set(coarse):
            raise LabelError(
                f"The hierarchy of {self.key!r} is inconsistent: coarse labels {list(coarse)} "
                f"but leaves are given for {sorted(coarse_leaves)}."
            )
        leaf_set = set(leaves)
        for label, under in coarse_leaves.items():
            if not under or not set(under) <= leaf_set:
                raise LabelError(
                    f"The hierarchy of {self.key!r} is inconsistent: coarse label {label!r} "
                    f"must cover at least one of its leaves; got {list(under)}."
                )

    def __hash__(self) -> int:
        return hash((self.key, self.leaves, self.coarse, self.hierarchical))

    @functools.cached_property
    def labels(self) -> tuple[str, ...]:
        """All labels in code order: the leaves, then the coarse labels."""
        return self.leaves + self.coarse

    @property
    def n_leaves(self) -> int:
        """Number of leaf labels (the width of the classifier head)."""
        return len(self.leaves)

    @property
    def n_coarse(self) -> int:
        """Number of coarse labels."""
        return len(self.coarse)

    @property
    def n_labels(self) -> int:
        """Number of labels, leaves and coarse."""
        return len(self.labels)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {label: code for code, label in enumerate(self.labels)}

    def encode(
        self,
        values: Sequence[Any] | pd.Series | np.ndarray,
        *,
        unseen: Literal["raise", "unknown"] = "raise",
    ) -> np.ndarray:
        """Turn label values into codes.

        Parameters
        ----------
        values
            1-D label values of the column (list, array, Series, categorical).
        unseen
            What to do with a known label that is not in the hierarchy: ``"raise"`` a
            :class:`LabelError`, or encode it as unknown (``-1``) with a logged warning.

        Returns
        -------
        int64 array of codes: the index in :attr:`labels`, ``-1`` for unknown values.

        Raises
        ------
        LabelError
            A label is not in the hierarchy and ``unseen="raise"``.
        """
        if unseen not in ("raise", "unknown"):
            raise ValueError(f"unseen must be 'raise' or 'unknown', not {unseen!r}.")
        codes, uniques = _factorize(values)
        table = np.full(len(uniques) + 1, UNKNOWN_CODE, dtype=np.int64)
        missing: dict[str, list[int]] = {}
        for i, label in enumerate(uniques):
            if _is_unknown_str(label):
                continue
            code = self._index.get(label)
            if code is None:
                missing.setdefault(label, []).append(i)
            else:
                table[i] = code
        if missing:
            n_cells = int(np.isin(codes, [i for idx in missing.values() for i in idx]).sum())
            shown = sorted(missing)[:20]
            more = f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
            message = (
                f"{len(missing)} label(s) of {self.key!r} ({n_cells} values) are not in its "
                f"hierarchy: {shown}{more}. The hierarchy was built from other data: it has "
                f"{self.n_leaves} leaves and {self.n_coarse} coarse labels."
            )
            if unseen == "raise":
                raise LabelError(message + " Pass unseen='unknown' to encode them as unknown.")
            logger.warning("%s They are encoded as unknown (%d).", message, UNKNOWN_CODE)
        return table[codes]

    def decode(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Turn codes back into labels.

        Parameters
        ----------
        codes
            Integer codes, ``-1`` for unknown.

        Returns
        -------
        Object array of labels, ``"unknown"`` where the code is ``-1``.

        Raises
        ------
        LabelError
            A code is outside ``-1 .. n_labels - 1``.
        """
        codes = np.asarray(codes)
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            raise LabelError(f"Codes of {self.key!r} must be integers, not {codes.dtype}.")
        codes = codes.astype(np.int64, copy=False)
        bad = (codes < UNKNOWN_CODE) | (codes >= self.n_labels)
        if bad.any():
            raise LabelError(
                f"Codes of {self.key!r} must lie in {UNKNOWN_CODE}..{self.n_labels - 1}; "
                f"got {sorted(set(codes[bad].tolist()))[:20]}."
            )
        table = np.array([*self.labels, _UNKNOWN_NAME], dtype=object)
        return table[codes]

    def leaf_matrix(self) -> np.ndarray:
        """Return which leaves each coarse label covers.

        Returns
        -------
        Boolean array of shape ``(n_coarse, n_leaves)``: row ``j`` marks the leaves of
        coarse label ``j`` (code ``n_leaves + j``).
        """
        matrix = np.zeros((self.n_coarse, self.n_leaves), dtype=bool)
        for row, label in enumerate(self.coarse):
            matrix[row, [self._index[leaf] for leaf in self.coarse_leaves[label]]] = True
        return matrix

    def name(self, term: str | int) -> str:
        """Return the human-readable name of a label.

        Parameters
        ----------
        term
            A label, or its code.

        Returns
        -------
        The ontology's name for the label, or the label itself when it is not an
        ontology term.
        """
        if isinstance(term, int | np.integer):
            term = str(self.decode([int(term)])[0])
        if not self.hierarchical and self.key not in ONTOLOGY_OF_KEY:
            return str(term)
        return term_name(str(term))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description, for checkpoints.

        Returns
        -------
        A dict that :meth:`from_dict` turns back into an equal hierarchy.
        """
        return {
            "key": self.key,
            "hierarchical": self.hierarchical,
            "leaves": list(self.leaves),
            "coarse": list(self.coarse),
            "coarse_leaves": {label: list(self.coarse_leaves[label]) for label in self.coarse},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelHierarchy:
        """Rebuild a hierarchy from :meth:`to_dict` output.

        Parameters
        ----------
        data
            The dict :meth:`to_dict` returned (possibly through JSON).

        Returns
        -------
        The hierarchy, with the same code space.

        Raises
        ------
        LabelError
            ``data`` lacks a field or describes an inconsistent hierarchy.
        """
        missing = [name for name in ("key", "leaves") if name not in data]
        if missing:
            raise LabelError(
                f"Not a label hierarchy: fields {missing} are missing (got {sorted(data)})."
            )
        return cls(
            key=str(data["key"]),
            leaves=tuple(data["leaves"]),
            coarse=tuple(data.get("coarse", ())),
            coarse_leaves={k: tuple(v) for k, v in dict(data.get("coarse_leaves", {})).items()},
            hierarchical=bool(data.get("hierarchical", False)),
        )


def build_hierarchy(
    key: str,
    values: Sequence[Any] | pd.Series | np.ndarray,
    *,
    hierarchical: bool | None = None,
) -> LabelHierarchy:
    """Build the label hierarchy of one obs column from its observed values.

    Parameters
    ----------
    key
        The obs column the values come from (``"cell_type_ontology_term_id"``, ...).
    values
        The column's values; unknown ones (see :func:`is_unknown`) are ignored.
    hierarchical
        Whether to arrange the labels along their ontology. By default, True for the
        columns of ``HIERARCHICAL_KEYS``.

    Returns
    -------
    For a hierarchical column, the leaves are the labels present that are no ancestor of
    another label present, and the other labels present are coarse. Labels the column's
    ontology does not know are leaves (a warning lists them); so is a multi-valued label
    such as ``"HANCESTRO:0005,HANCESTRO:0014"``, which sits below the terms shared by all
    its parts (see :func:`ancestors`). For a flat column, every label present is a leaf.

    Raises
    ------
    LabelError
        Every value is unknown.
    """
    if hierarchical is None:
        hierarchical = key in HIERARCHICAL_KEYS
    codes, uniques = _factorize(values)
    present = sorted({label for label in uniques if not _is_unknown_str(label)})
    if not present:
        examples = sorted(set(uniques))[:5] or ["NaN"]
        raise LabelError(
            f"Column {key!r} holds no known label: all {len(codes)} values are unknown "
            f"(e.g. {examples}). Fill it, or leave {key!r} out of the label keys."
        )
    if not hierarchical:
        return LabelHierarchy(key=key, leaves=tuple(present), hierarchical=False)

    ontology = ONTOLOGY_OF_KEY.get(key)
    foreign = _FOREIGN_LEAVES.get(key, frozenset())
    strangers = [
        label for label in present if label not in foreign and not _is_known_term(label, ontology)
    ]
    if strangers:
        where = f"the {ontology} ontology" if ontology else "the ontologies"
        logger.warning(
            "%d label(s) of %r are unknown to %s and are kept as leaves: %s",
            len(strangers),
            key,
            where,
            strangers[:50],
        )

    present_set = set(present)
    # Labels present above each label present (a label is never its own ancestor).
    above = {
        label: frozenset() if label in foreign else ancestors(label) & present_set
        for label in present
    }
    coarse_set = set().union(*above.values())
    leaves = tuple(label for label in present if label not in coarse_set)
    coarse_leaves = {
        label: tuple(leaf for leaf in leaves if label in above[leaf]) for label in coarse_set
    }
    # Labels that are ancestors of one another (an ontology cycle) cover no leaf: demote them.
    orphans = sorted(label for label, under in coarse_leaves.items() if not under)
    if orphans:
        logger.warning("Labels of %r in an ontology cycle are kept as leaves: %s", key, orphans)
        leaves = tuple(sorted({*leaves, *orphans}))
        coarse_leaves = {
            label: tuple(leaf for leaf in leaves if label in above[leaf])
            for label in coarse_set
            if label not in orphans
        }
    coarse = tuple(sorted(coarse_leaves))
    logger.debug(
        "%s: %d leaves, %d coarse labels (%s).", key, len(leaves), len(coarse), list(coarse)
    )
    return LabelHierarchy(
        key=key,
        leaves=leaves,
        coarse=coarse,
        coarse_leaves={label: coarse_leaves[label] for label in coarse},
        hierarchical=True,
    )


def build_hierarchies(obs: pd.DataFrame, keys: Iterable[str]) -> dict[str, LabelHierarchy]:
    """Build the label hierarchy of several obs columns.

    Parameters
    ----------
    obs
        Cell metadata (``adata.obs``).
    keys
        The label columns, e.g. ``DEFAULT_LABEL_KEYS``.

    Returns
    -------
    Column -> its :class:`LabelHierarchy` (see :func:`build_hierarchy`), in ``keys``
    order.

    Raises
    ------
    LabelError
        A column is missing from ``obs``, or holds only unknown values.
    """
    keys = list(dict.fromkeys(keys))
    missing = [key for key in keys if key not in obs.columns]
    if missing:
        raise LabelError(
            f"Label column(s) {missing} are not in obs. Available columns: "
            f"{[str(column) for column in obs.columns]}."
        )
    return {key: build_hierarchy(key, obs[key]) for key in keys}


def leaves_under(term: str, hierarchy: LabelHierarchy) -> tuple[str, ...]:
    """Return the leaves of a hierarchy that descend from an ontology term.

    Parameters
    ----------
    term
        Any term of the column's ontology, present in the hierarchy or not (e.g.
        ``"CL:0000540"``, neuron, to sum the probabilities of every neuron leaf).
    hierarchy
        The hierarchy whose leaves to search.

    Returns
    -------
    The leaves equal to ``term`` or below it in the ontology, in code order. For a flat
    hierarchy, only ``term`` itself, if it is a leaf.
    """
    term = _clean(term)
    if not hierarchy.hierarchical:
        return (term,) if term in hierarchy.leaves else ()
    if term in hierarchy.coarse_leaves:
        return hierarchy.coarse_leaves[term]
    return tuple(leaf for leaf in hierarchy.leaves if leaf == term or term in ancestors(leaf))
