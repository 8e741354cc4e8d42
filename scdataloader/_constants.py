"""Names used across the data layer: organisms, obs columns, unknown labels."""

from __future__ import annotations

HUMAN = "NCBITaxon:9606"
MOUSE = "NCBITaxon:10090"
ORGANISMS = {HUMAN: "human", MOUSE: "mouse"}
ORGANISM_ALIASES = {
    "human": HUMAN,
    "homo sapiens": HUMAN,
    "homo_sapiens": HUMAN,
    "hs": HUMAN,
    "9606": HUMAN,
    HUMAN.lower(): HUMAN,
    "mouse": MOUSE,
    "mus musculus": MOUSE,
    "mus_musculus": MOUSE,
    "mm": MOUSE,
    "10090": MOUSE,
    MOUSE.lower(): MOUSE,
}


class ObsKeys:
    """CELLxGENE schema column names in ``adata.obs``."""

    CELL_TYPE = "cell_type_ontology_term_id"
    DISEASE = "disease_ontology_term_id"
    ASSAY = "assay_ontology_term_id"
    ETHNICITY = "self_reported_ethnicity_ontology_term_id"
    SEX = "sex_ontology_term_id"
    ORGANISM = "organism_ontology_term_id"
    TISSUE = "tissue_ontology_term_id"
    DEVELOPMENT = "development_stage_ontology_term_id"
    PRIMARY = "is_primary_data"
    DONOR = "donor_id"
    DATASET = "dataset_id"


# The label columns scPRINT predicts, in the paper's order.
DEFAULT_LABEL_KEYS = (
    ObsKeys.CELL_TYPE,
    ObsKeys.DISEASE,
    ObsKeys.ASSAY,
    ObsKeys.ETHNICITY,
    ObsKeys.SEX,
    ObsKeys.ORGANISM,
)

# Values that mean "no label" in a label column (compared after str.strip().lower()).
UNKNOWN_LABELS = frozenset({"", "unknown", "na", "nan", "none", "null", "unassigned", "-1"})

# Index of an unknown label in encoded label arrays.
UNKNOWN_CODE = -1


def normalize_organism(organism: str) -> str:
    """Return the NCBITaxon id of ``organism`` (``"human"``, ``"NCBITaxon:10090"``, ...)."""
    key = str(organism).strip().lower()
    if key in ORGANISM_ALIASES:
        return ORGANISM_ALIASES[key]
    raise ValueError(
        f"Unsupported organism {organism!r}: use 'human' ({HUMAN}) or 'mouse' ({MOUSE})."
    )
