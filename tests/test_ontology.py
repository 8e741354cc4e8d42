"""Tests of scdataloader.ontology: label hierarchies from CL, MONDO, EFO and HANCESTRO.

Every ontology fact asserted here was checked against the ontologies shipped with the
installed ``cellxgene-ontology-guide`` (CELLxGENE schema 7.1.0).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scdataloader._constants import UNKNOWN_CODE, ObsKeys
from scdataloader.errors import InputError, LabelError
from scdataloader.ontology import (
    HIERARCHICAL_KEYS,
    ONTOLOGY_OF_KEY,
    LabelHierarchy,
    ancestors,
    build_hierarchies,
    build_hierarchy,
    get_parser,
    is_unknown,
    leaves_under,
    term_name,
)

DATA_DIR = Path(__file__).parents[1] / ".." / "shared" / "data"
RETINA = DATA_DIR / "retina_1k.h5ad"

# Retina cell types (CL).
ROD = "CL:0000604"
AMACRINE = "CL:0000561"
CONE = "CL:0000573"
MUELLER = "CL:0000636"
ROD_BIPOLAR = "CL:0000751"
GANGLION = "CL:0000740"
HORIZONTAL = "CL:0000745"
OFF_BIPOLAR = "CL:0000750"
ASTROCYTE = "CL:0000127"
ON_BIPOLAR = "CL:0000749"
MICROGLIA = "CL:0000129"
NEURON = "CL:0000540"
CELL = "CL:0000000"
RETINA_COUNTS = {
    ROD: 318,
    AMACRINE: 144,
    CONE: 103,
    MUELLER: 99,
    ROD_BIPOLAR: 94,
    GANGLION: 71,
    HORIZONTAL: 65,
    OFF_BIPOLAR: 48,
    ASTROCYTE: 27,
    ON_BIPOLAR: 26,
    MICROGLIA: 5,
}
RETINA_NEURONS = {ROD, AMACRINE, CONE, ROD_BIPOLAR, GANGLION, HORIZONTAL, OFF_BIPOLAR, ON_BIPOLAR}
RETINA_GLIA = {MUELLER, ASTROCYTE, MICROGLIA}

# Diseases (MONDO) and assays (EFO).
NORMAL = "PATO:0000461"
DIABETES = "MONDO:0005015"
TYPE1_DIABETES = "MONDO:0005147"
TYPE2_DIABETES = "MONDO:0005148"
TENX_3P_V3 = "EFO:0009922"
TENX_3P = "EFO:0030003"  # 10x 3' transcription profiling
TENX_MULTIOME = "EFO:0030059"
SCRNA_SEQ = "EFO:0008913"  # single-cell RNA sequencing


@pytest.fixture(scope="module")
def retina_obs() -> pd.DataFrame:
    if not RETINA.exists():
        pytest.skip(f"{RETINA.name} is not in the shared data folder")
    return ad.read_h5ad(RETINA, backed="r").obs


@pytest.fixture(scope="module")
def retina_cell_types(retina_obs: pd.DataFrame) -> LabelHierarchy:
    return build_hierarchy(ObsKeys.CELL_TYPE, retina_obs[ObsKeys.CELL_TYPE])


@pytest.fixture(scope="module")
def retina_with_coarse(retina_obs: pd.DataFrame) -> LabelHierarchy:
    values = [*retina_obs[ObsKeys.CELL_TYPE].astype(str), NEURON, CELL, "unknown"]
    return build_hierarchy(ObsKeys.CELL_TYPE, values)


def test_key_tables():
    assert ONTOLOGY_OF_KEY[ObsKeys.CELL_TYPE] == "CL"
    assert ONTOLOGY_OF_KEY[ObsKeys.DISEASE] == "MONDO"
    assert ONTOLOGY_OF_KEY[ObsKeys.ASSAY] == "EFO"
    assert ONTOLOGY_OF_KEY[ObsKeys.ETHNICITY] == "HANCESTRO"
    assert ONTOLOGY_OF_KEY[ObsKeys.SEX] == "PATO"
    assert ONTOLOGY_OF_KEY[ObsKeys.ORGANISM] == "NCBITaxon"
    assert ONTOLOGY_OF_KEY[ObsKeys.TISSUE] == "UBERON"
    assert set(HIERARCHICAL_KEYS) == {
        ObsKeys.CELL_TYPE,
        ObsKeys.DISEASE,
        ObsKeys.ASSAY,
        ObsKeys.ETHNICITY,
    }


def test_is_unknown_vectorised():
    values = ["CL:0000604", "unknown", "NA", " ", "", None, float("nan"), "Unassigned", "-1", 3]
    expected = [False, True, True, True, True, True, True, True, True, False]
    assert is_unknown(values).tolist() == expected
    series = pd.Series(["unknown", "CL:0000604", None, "unknown"], dtype="category")
    result = is_unknown(series)
    assert result.dtype == bool
    assert result.tolist() == [True, False, True, True]
    assert is_unknown(np.array(["na", "x"], dtype=object)).tolist() == [True, False]
    assert is_unknown([]).shape == (0,)


def test_ancestors_cached_and_empty_for_unknown_terms():
    neuron_ancestors = ancestors(NEURON)
    assert CELL in neuron_ancestors
    assert NEURON not in neuron_ancestors
    assert ancestors(NEURON) is neuron_ancestors  # cached
    assert ancestors("CL:9999999") == frozenset()
    assert ancestors("rod photoreceptor") == frozenset()
    assert ancestors("unknown") == frozenset()
    assert ancestors(CELL) == frozenset()  # root of CL


def test_term_name():
    assert term_name(NEURON) == "neuron"
    assert term_name(ROD) == "retinal rod cell"
    assert term_name(NORMAL) == "normal"
    assert term_name("NCBITaxon:9606") == "Homo sapiens"  # without loading NCBITaxon
    assert term_name("CL:9999999") == "CL:9999999"
    assert term_name("unknown") == "unknown"
    assert term_name("HANCESTRO:0005,HANCESTRO:0014") == (
        "European ancestry + Latin or Admixed American ancestry"
    )


def test_retina_counts(retina_obs: pd.DataFrame):
    counts = retina_obs[ObsKeys.CELL_TYPE].astype(str).value_counts().to_dict()
    assert counts == RETINA_COUNTS


def test_retina_cell_types_follow_the_ontology(retina_cell_types: LabelHierarchy):
    parser = get_parser()
    # What the Cell Ontology says: rod bipolar cell is_a ON-bipolar cell; no other retina
    # cell type of the data is an ancestor of another.
    assert ON_BIPOLAR in parser.get_term_ancestors(ROD_BIPOLAR)
    pairs = [
        (child, parent)
        for child in RETINA_COUNTS
        for parent in RETINA_COUNTS
        if parent in parser.get_term_ancestors(child)
    ]
    assert pairs == [(ROD_BIPOLAR, ON_BIPOLAR)]

    hierarchy = retina_cell_types
    assert hierarchy.hierarchical
    assert hierarchy.key == ObsKeys.CELL_TYPE
    assert hierarchy.leaves == tuple(sorted(set(RETINA_COUNTS) - {ON_BIPOLAR}))
    assert hierarchy.coarse == (ON_BIPOLAR,)
    assert hierarchy.coarse_leaves == {ON_BIPOLAR: (ROD_BIPOLAR,)}
    assert hierarchy.n_leaves == 10
    assert hierarchy.labels == hierarchy.leaves + hierarchy.coarse
    assert hierarchy.name(ON_BIPOLAR) == "ON-bipolar cell"
    # Every pair of leaves is unrelated in the ontology.
    for leaf in hierarchy.leaves:
        assert not set(hierarchy.leaves) & set(parser.get_term_ancestors(leaf))


def test_coarse_labels_neuron_and_cell(retina_with_coarse: LabelHierarchy):
    hierarchy = retina_with_coarse
    assert hierarchy.coarse == (CELL, NEURON, ON_BIPOLAR)
    assert hierarchy.leaves == tuple(sorted(set(RETINA_COUNTS) - {ON_BIPOLAR}))
    assert set(hierarchy.coarse_leaves[CELL]) == set(hierarchy.leaves)
    neuron_leaves = set(hierarchy.coarse_leaves[NEURON])
    assert neuron_leaves == RETINA_NEURONS - {ON_BIPOLAR}
    assert {ROD, CONE} <= neuron_leaves
    assert not neuron_leaves & RETINA_GLIA  # astrocyte, microglia, Mueller cell: no neurons
    assert hierarchy.coarse_leaves[ON_BIPOLAR] == (ROD_BIPOLAR,)
    # Coarse leaves are given in code order.
    for under in hierarchy.coarse_leaves.values():
        assert list(under) == sorted(under, key=hierarchy.labels.index)


def test_leaf_matrix(retina_with_coarse: LabelHierarchy):
    hierarchy = retina_with_coarse
    matrix = hierarchy.leaf_matrix()
    assert matrix.shape == (3, 10)
    assert matrix.dtype == bool
    assert matrix[0].all()  # cell
    neuron_row = {hierarchy.leaves[i] for i in np.flatnonzero(matrix[1])}
    assert neuron_row == set(hierarchy.coarse_leaves[NEURON])
    assert matrix[2].sum() == 1 and hierarchy.leaves[int(np.argmax(matrix[2]))] == ROD_BIPOLAR
    for row, label in enumerate(hierarchy.coarse):
        assert matrix[row].sum() == len(hierarchy.coarse_leaves[label])
    assert build_hierarchy(ObsKeys.SEX, ["PATO:0000383"]).leaf_matrix().shape == (0, 1)


def test_encode_decode_round_trip(retina_obs: pd.DataFrame, retina_cell_types: LabelHierarchy):
    hierarchy = retina_cell_types
    values = retina_obs[ObsKeys.CELL_TYPE]
    codes = hierarchy.encode(values)
    assert codes.dtype == np.int64
    assert codes.shape == (len(values),)
    assert (codes >= 0).all()
    assert (hierarchy.decode(codes) == values.astype(str).to_numpy()).all()
    # Leaves take the first codes, coarse labels the following ones.
    on_bipolar = values.astype(str).to_numpy() == ON_BIPOLAR
    assert (codes[on_bipolar] == hierarchy.n_leaves).all()
    assert (codes[~on_bipolar] < hierarchy.n_leaves).all()
    assert np.bincount(codes).tolist() == [RETINA_COUNTS[label] for label in hierarchy.labels]
    assert hierarchy.encode([hierarchy.labels[3], f"  {hierarchy.labels[3]} "]).tolist() == [3, 3]


def test_unknown_values_encode_to_minus_one(retina_cell_types: LabelHierarchy):
    codes = retina_cell_types.encode(["unknown", ROD, None, float("nan"), "", "NA"])
    expected_rod = retina_cell_types.labels.index(ROD)
    assert codes.tolist() == [UNKNOWN_CODE, expected_rod, -1, -1, -1, -1]
    decoded = retina_cell_types.decode(codes)
    assert decoded.tolist() == ["unknown", ROD, "unknown", "unknown", "unknown", "unknown"]


def test_unseen_label(retina_cell_types: LabelHierarchy, caplog: pytest.LogCaptureFixture):
    with pytest.raises(LabelError, match=NEURON) as info:
        retina_cell_types.encode([ROD, NEURON])
    assert "unseen='unknown'" in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    with caplog.at_level(logging.WARNING, logger="scdataloader.ontology"):
        codes = retina_cell_types.encode([ROD, NEURON, NEURON], unseen="unknown")
    assert codes.tolist() == [retina_cell_types.labels.index(ROD), -1, -1]
    assert NEURON in caplog.text
    with pytest.raises(ValueError, match="unseen"):
        retina_cell_types.encode([ROD], unseen="ignore")  # type: ignore[arg-type]


def test_decode_rejects_bad_codes(retina_cell_types: LabelHierarchy):
    with pytest.raises(LabelError):
        retina_cell_types.decode([retina_cell_types.n_labels])
    with pytest.raises(LabelError):
        retina_cell_types.decode([-2])
    assert retina_cell_types.name(-1) == "unknown"
    assert retina_cell_types.name(retina_cell_types.labels.index(ROD)) == "retinal rod cell"


def test_flat_keys_have_no_coarse_labels(retina_obs: pd.DataFrame):
    # PATO:0000047 (biological sex) is an ancestor of female and male: still flat.
    assert "PATO:0000047" in ancestors("PATO:0000383")
    sex = build_hierarchy(ObsKeys.SEX, ["PATO:0000383", "PATO:0000384", "PATO:0000047", "na"])
    assert not sex.hierarchical
    assert sex.leaves == ("PATO:0000047", "PATO:0000383", "PATO:0000384")
    assert sex.coarse == () and sex.coarse_leaves == {}
    assert sex.name("PATO:0000383") == "female"
    assert leaves_under("PATO:0000047", sex) == ("PATO:0000047",)

    organism = build_hierarchy(ObsKeys.ORGANISM, retina_obs[ObsKeys.ORGANISM])
    assert organism.leaves == ("NCBITaxon:9606",) and organism.coarse == ()
    assert organism.name("NCBITaxon:9606") == "Homo sapiens"

    # Forcing a hierarchical key to be flat.
    flat = build_hierarchy(ObsKeys.CELL_TYPE, [ROD, NEURON], hierarchical=False)
    assert flat.leaves == (NEURON, ROD) and flat.coarse == ()


def test_free_text_column_is_flat(caplog: pytest.LogCaptureFixture):
    values = ["rod", "cone", "Mueller glia", "rod", "unknown", "CD4+, naive"]
    with caplog.at_level(logging.WARNING, logger="scdataloader.ontology"):
        hierarchy = build_hierarchy("cluster_orig", values)
    assert not caplog.records
    assert not hierarchy.hierarchical
    assert hierarchy.leaves == ("CD4+, naive", "Mueller glia", "cone", "rod")
    assert hierarchy.name("CD4+, naive") == "CD4+, naive"
    assert hierarchy.encode(values).tolist() == [3, 2, 1, 3, -1, 0]
    codes = build_hierarchy("cluster_orig", [3, 1, 1, -1]).encode([1, 3, -1])
    assert codes.tolist() == [0, 1, -1]


def test_all_unknown_column(retina_obs: pd.DataFrame):
    with pytest.raises(LabelError, match=ObsKeys.ETHNICITY):
        build_hierarchy(ObsKeys.ETHNICITY, retina_obs[ObsKeys.ETHNICITY])
    with pytest.raises(LabelError, match="no known label"):
        build_hierarchy(ObsKeys.SEX, [None, float("nan"), "unknown"])
    with pytest.raises(LabelError):
        build_hierarchy(ObsKeys.CELL_TYPE, [])


def test_build_hierarchies(retina_obs: pd.DataFrame):
    keys = [ObsKeys.CELL_TYPE, ObsKeys.DISEASE, ObsKeys.ASSAY, ObsKeys.SEX, ObsKeys.ORGANISM]
    hierarchies = build_hierarchies(retina_obs, keys)
    assert list(hierarchies) == keys
    assert hierarchies[ObsKeys.DISEASE].leaves == (NORMAL,)
    assert hierarchies[ObsKeys.ASSAY].leaves == (TENX_MULTIOME,)
    assert hierarchies[ObsKeys.SEX].leaves == ("PATO:0000384",)
    assert [h.hierarchical for h in hierarchies.values()] == [True, True, True, False, False]
    with pytest.raises(LabelError, match="no known label"):
        build_hierarchies(retina_obs, [ObsKeys.CELL_TYPE, ObsKeys.ETHNICITY])


def test_missing_column_lists_available_columns(retina_obs: pd.DataFrame):
    with pytest.raises(LabelError) as info:
        build_hierarchies(retina_obs, [ObsKeys.CELL_TYPE, "cluster_orig", "batch"])
    message = str(info.value)
    assert "cluster_orig" in message and "batch" in message
    assert "Available columns" in message
    assert "donor_id" in message and ObsKeys.CELL_TYPE in message


def test_disease_hierarchy_mondo(caplog: pytest.LogCaptureFixture):
    parser = get_parser()
    assert parser.get_term_label(DIABETES) == "diabetes mellitus"
    assert parser.get_term_label(TYPE1_DIABETES) == "type 1 diabetes mellitus"
    assert parser.get_term_label(TYPE2_DIABETES) == "type 2 diabetes mellitus"
    assert DIABETES in parser.get_term_ancestors(TYPE1_DIABETES)
    assert DIABETES in parser.get_term_ancestors(TYPE2_DIABETES)

    values = [NORMAL, TYPE2_DIABETES, DIABETES, TYPE1_DIABETES, NORMAL, "unknown"]
    with caplog.at_level(logging.WARNING, logger="scdataloader.ontology"):
        hierarchy = build_hierarchy(ObsKeys.DISEASE, values)
    assert not caplog.records  # "normal" is a valid disease value, not an unknown term
    assert hierarchy.leaves == (TYPE1_DIABETES, TYPE2_DIABETES, NORMAL)
    assert hierarchy.coarse == (DIABETES,)
    assert hierarchy.coarse_leaves == {DIABETES: (TYPE1_DIABETES, TYPE2_DIABETES)}
    assert hierarchy.leaf_matrix().tolist() == [[True, True, False]]
    assert hierarchy.encode(values).tolist() == [2, 1, 3, 0, 2, -1]
    assert hierarchy.name(NORMAL) == "normal"


def test_assay_hierarchy_efo():
    parser = get_parser()
    assert parser.get_term_label(TENX_3P_V3) == "10x 3' v3"
    assert parser.get_term_label(SCRNA_SEQ) == "single-cell RNA sequencing"
    assert TENX_3P in parser.get_term_ancestors(TENX_3P_V3)
    assert SCRNA_SEQ in parser.get_term_ancestors(TENX_MULTIOME)

    values = [TENX_3P_V3, TENX_MULTIOME, SCRNA_SEQ, TENX_3P, TENX_3P_V3]
    hierarchy = build_hierarchy(ObsKeys.ASSAY, values)
    assert hierarchy.leaves == (TENX_3P_V3, TENX_MULTIOME)
    assert hierarchy.coarse == (SCRNA_SEQ, TENX_3P)
    assert hierarchy.coarse_leaves[TENX_3P] == (TENX_3P_V3,)
    # Whether 10x 3' v3 sits under "single-cell RNA sequencing" depends on the EFO release
    # (it does not in the one checked); the hierarchy follows whatever the ontology says.
    expected = tuple(leaf for leaf in hierarchy.leaves if SCRNA_SEQ in ancestors(leaf))
    assert TENX_MULTIOME in expected
    assert hierarchy.coarse_leaves[SCRNA_SEQ] == expected
    assert leaves_under(SCRNA_SEQ, hierarchy) == expected


def test_ethnicity_multi_ethnic_label_is_a_leaf(caplog: pytest.LogCaptureFixture):
    european, latin, root = "HANCESTRO:0005", "HANCESTRO:0014", "HANCESTRO:0004"
    multi = f"{european},{latin}"
    assert ancestors(european) == {root} and ancestors(latin) == {root}
    values = [multi, european, root, "unknown", "HANCESTRO:0005,HANCESTRO:0014"]
    with caplog.at_level(logging.WARNING, logger="scdataloader.ontology"):
        hierarchy = build_hierarchy(ObsKeys.ETHNICITY, values)
    assert not caplog.records
    assert hierarchy.leaves == (european, multi)
    assert hierarchy.coarse == (root,)
    # The multi-ethnic label is under the ancestry root, not under either of its parts.
    assert hierarchy.coarse_leaves[root] == (european, multi)
    assert leaves_under(european, hierarchy) == (european,)
    assert leaves_under(latin, hierarchy) == ()
    assert hierarchy.encode(values).tolist() == [1, 0, 2, -1, 1]


def test_unknown_terms_are_leaves_with_a_warning(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="scdataloader.ontology"):
        hierarchy = build_hierarchy(ObsKeys.CELL_TYPE, [ROD, NEURON, "CL:9999999", "rod"])
    assert "CL:9999999" in caplog.text and "'rod'" in caplog.text
    assert hierarchy.leaves == (ROD, "CL:9999999", "rod")
    assert hierarchy.coarse_leaves == {NEURON: (ROD,)}


def test_leaves_under(retina_cell_types: LabelHierarchy):
    # Neuron is not a label of the data, but sums the probabilities of its leaves.
    assert set(leaves_under(NEURON, retina_cell_types)) == RETINA_NEURONS - {ON_BIPOLAR}
    assert leaves_under(ON_BIPOLAR, retina_cell_types) == (ROD_BIPOLAR,)
    assert leaves_under(ROD, retina_cell_types) == (ROD,)
    glia = leaves_under("CL:0000125", retina_cell_types)  # glial cell
    assert glia == (ASTROCYTE, MICROGLIA, MUELLER)
    assert leaves_under("CL:9999999", retina_cell_types) == ()
    assert len(leaves_under(CELL, retina_cell_types)) == retina_cell_types.n_leaves


def test_to_dict_from_dict_json(retina_with_coarse: LabelHierarchy):
    data = json.loads(json.dumps(retina_with_coarse.to_dict()))
    restored = LabelHierarchy.from_dict(data)
    assert restored == retina_with_coarse
    assert hash(restored) == hash(retina_with_coarse)
    assert restored.labels == retina_with_coarse.labels
    assert (restored.leaf_matrix() == retina_with_coarse.leaf_matrix()).all()
    values = [ROD, NEURON, "unknown", CELL, MICROGLIA]
    assert (restored.encode(values) == retina_with_coarse.encode(values)).all()
    sex = build_hierarchy(ObsKeys.SEX, ["PATO:0000383"])
    assert LabelHierarchy.from_dict(json.loads(json.dumps(sex.to_dict()))) == sex


def test_from_dict_rejects_bad_input():
    with pytest.raises(LabelError, match="missing"):
        LabelHierarchy.from_dict({"key": ObsKeys.CELL_TYPE})
    with pytest.raises(LabelError, match="inconsistent"):
        LabelHierarchy.from_dict(
            {"key": "k", "leaves": ["a"], "coarse": ["b"], "coarse_leaves": {"b": ["c"]}}
        )
    with pytest.raises(LabelError, match="repeats"):
        LabelHierarchy.from_dict({"key": "k", "leaves": ["a", "a"]})
