"""Tests of the gene vocabulary (scdataloader.genes) on real data."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scdataloader._constants import HUMAN, MOUSE
from scdataloader.errors import GeneMappingError, InputError, OrganismMismatchError
from scdataloader.genes import (
    GeneIdGuess,
    GeneMapping,
    detect_gene_ids,
    gene_locations,
    ids_to_symbols,
    load_genes,
    map_genes,
    strip_version,
    symbols_to_ids,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
GENCODE = DATA / "genes"
DISTANCE = 10_000
COLUMNS = ["symbol", "biotype", "chromosome", "start", "end", "strand", "location", "organism"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected in ../shared/data from the repo)")
    return path


@pytest.fixture(scope="module")
def retina_var() -> pd.DataFrame:
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(_need(DATA / "retina_1k.h5ad"), backed="r")
    var = adata.var.copy()
    adata.file.close()
    return var


@pytest.fixture(scope="module")
def wu_var_names() -> pd.Index:
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(_need(DATA / "wu2020_tcells_200.h5ad"), backed="r")
    names = adata.var_names.copy()
    adata.file.close()
    return names


@pytest.fixture(scope="module")
def mouse_var() -> pd.DataFrame:
    anndata = pytest.importorskip("anndata")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicated var names, old zarr format
        adata = anndata.read_zarr(_need(DATA / "mouse_10x_10k.zarr"))
    return adata.var.copy()


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize(("organism", "prefix"), [("human", "ENSG"), ("mouse", "ENSMUSG")])
def test_table_shape_and_columns(organism: str, prefix: str) -> None:
    table = load_genes(organism)
    assert list(table.columns) == COLUMNS
    assert table.index.name == "ensembl_id"
    assert table.index.is_unique
    assert 70_000 < len(table) < 90_000
    assert table.index.str.fullmatch(prefix + r"\d{11}").all()
    assert table["symbol"].notna().all()
    assert table["location"].dtype == np.int32
    assert str(table["start"].dtype) == "Int64" and str(table["end"].dtype) == "Int64"
    for column in ("biotype", "chromosome", "strand"):
        assert isinstance(table[column].dtype, pd.CategoricalDtype)
    assert set(table["strand"].dropna()) <= {"+", "-"}
    assert (table["end"] >= table["start"]).all()
    assert "protein_coding" in set(table["biotype"])
    assert table["chromosome"].isin(["chr1", "chrX", "chrM"]).any()
    assert (table["organism"] == (HUMAN if organism == "human" else MOUSE)).all()
    # Sorted by location, then id.
    keys = table.reset_index()[["location", "ensembl_id"]]
    assert keys.equals(keys.sort_values(["location", "ensembl_id"]).reset_index(drop=True))
    assert table["location"].min() == 0


def test_table_files_are_small() -> None:
    for organism in ("human", "mouse"):
        path = ROOT / "scdataloader" / "_data" / f"genes_{organism}.parquet"
        assert path.stat().st_size < 1.5e6


def test_load_genes_cached_copy() -> None:
    first = load_genes("human")
    first.loc[first.index[0], "symbol"] = "CORRUPTED"
    first.drop(columns="location", inplace=True)
    again = load_genes("NCBITaxon:9606")
    assert again.loc[first.index[0], "symbol"] != "CORRUPTED"
    assert "location" in again.columns
    pd.testing.assert_frame_equal(load_genes("Homo sapiens"), again)
    with pytest.raises(ValueError, match="Unsupported organism"):
        load_genes("zebrafish")


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_location_rule(organism: str) -> None:
    table = load_genes(organism)
    for chromosome in ("chr1", "chr17", "chrX"):
        genes = table[table["chromosome"] == chromosome].reset_index()
        genes = genes.sort_values(["start", "ensembl_id"], kind="mergesort")
        starts = genes["start"].to_numpy(dtype=np.int64)
        locations = genes["location"].to_numpy()
        # Independent recomputation with a plain loop.
        expected = [0]
        for previous, current in zip(starts[:-1], starts[1:], strict=True):
            expected.append(expected[-1] + (0 if current - previous < DISTANCE else 1))
        np.testing.assert_array_equal(locations - locations[0], expected)
        gaps = np.diff(starts)
        steps = np.diff(locations)
        assert (steps[gaps < DISTANCE] == 0).all()
        assert (steps[gaps >= DISTANCE] == 1).all()
        assert (steps >= 0).all()
    # Locations never span two chromosomes.
    assert (table.groupby("location", observed=True)["chromosome"].nunique() == 1).all()


def test_gene_locations() -> None:
    table = load_genes("human")
    ids = table.index[[0, 100, 5000]].tolist()
    locations = gene_locations([ids[0] + ".4", *ids[1:], "ENSG00000000000", "CD3E"], "human")
    assert locations.dtype.kind == "i"
    np.testing.assert_array_equal(locations[:3], table.loc[ids, "location"].to_numpy())
    np.testing.assert_array_equal(locations[3:], [-1, -1])
    # The ERBB2 amplicon neighbours share, or are one apart from, each other's location.
    erbb2, grb7 = symbols_to_ids(["ERBB2", "GRB7"])
    near = gene_locations([erbb2, grb7], HUMAN)
    assert abs(int(near[0]) - int(near[1])) <= 3


def test_build_script_reproduces_tables(tmp_path: Path) -> None:
    for stem in ("homo_sapiens", "mus_musculus"):
        _need(GENCODE / f"genes_{stem}.csv.gz")
        _need(GENCODE / f"gene_coordinates_{stem}.csv.gz")
    spec = importlib.util.spec_from_file_location(
        "build_gene_tables", ROOT / "scripts" / "build_gene_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LOCATION_DISTANCE == DISTANCE
    tables = module.main(["--source", str(GENCODE), "--out", str(tmp_path)])
    for organism in ("human", "mouse"):
        built = pd.read_parquet(tmp_path / f"genes_{organism}.parquet")
        shipped = pd.read_parquet(ROOT / "scdataloader" / "_data" / f"genes_{organism}.parquet")
        pd.testing.assert_frame_equal(built, shipped)
        pd.testing.assert_frame_equal(tables[organism], shipped)
        pd.testing.assert_frame_equal(
            load_genes(organism).drop(columns="organism"), shipped, check_categorical=False
        )


def test_build_script_needs_source(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "build_gene_tables", ROOT / "scripts" / "build_gene_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(["--source", str(tmp_path), "--out", str(tmp_path / "out")])


# --------------------------------------------------------------------------- helpers


def test_strip_version() -> None:
    out = strip_version(["ENSG00000141510.17", "ENSMUSG00000057666.19", "ENSG00000141510"])
    assert isinstance(out, np.ndarray)
    assert out.tolist() == ["ENSG00000141510", "ENSMUSG00000057666", "ENSG00000141510"]
    # Symbols with a dot are not Ensembl ids: left alone.
    assert strip_version(["AC000061.1", "CD3E"]).tolist() == ["AC000061.1", "CD3E"]
    assert strip_version(pd.Index([])).tolist() == []


# --------------------------------------------------------------------------- detection


def test_detect_retina_ids(retina_var: pd.DataFrame) -> None:
    guess = detect_gene_ids(retina_var.index)
    assert isinstance(guess, GeneIdGuess)
    assert guess.kind == "ensembl"
    assert guess.organism == HUMAN
    assert guess.fraction_mapped > 0.85
    assert guess.fractions[MOUSE] == 0.0
    symbols = detect_gene_ids(retina_var["feature_name"].astype(str))
    assert symbols.kind == "symbol" and symbols.organism == HUMAN


def test_detect_wu_symbols(wu_var_names: pd.Index) -> None:
    guess = detect_gene_ids(wu_var_names)
    assert guess.kind == "symbol"
    assert guess.organism == HUMAN
    assert guess.fractions[HUMAN] > 0.7 > 0.01 > guess.fractions[MOUSE]


def test_detect_mouse(mouse_var: pd.DataFrame) -> None:
    symbols = detect_gene_ids(mouse_var.index)
    assert (symbols.kind, symbols.organism) == ("symbol", MOUSE)
    assert symbols.fractions[MOUSE] > 0.9 and symbols.fractions[HUMAN] < 0.01
    ids = detect_gene_ids(mouse_var["gene_ids"])
    assert (ids.kind, ids.organism) == ("ensembl", MOUSE)
    assert ids.fraction_mapped > 0.95


def test_detect_nothing_maps() -> None:
    guess = detect_gene_ids(["foo", "bar", "qux"])
    assert guess.kind == "symbol" and guess.organism is None
    assert guess.fraction_mapped == 0.0
    with pytest.raises(GeneMappingError, match="No gene names"):
        detect_gene_ids([])


def test_detect_is_fast() -> None:
    import time

    ids = load_genes("human").index[:70_000]
    detect_gene_ids(ids)
    start = time.perf_counter()
    detect_gene_ids(ids)
    map_genes(ids)
    assert time.perf_counter() - start < 5.0


# --------------------------------------------------------------------------- mapping


def test_map_retina_ids(retina_var: pd.DataFrame) -> None:
    mapping = map_genes(retina_var.index, "human")
    assert isinstance(mapping, GeneMapping)
    assert (mapping.kind, mapping.organism) == ("ensembl", HUMAN)
    assert len(mapping.ids) == len(retina_var) == 70_116
    assert mapping.fraction_mapped > 0.85
    assert mapping.n_mapped == int(mapping.mapped.sum())
    assert mapping.ids.dtype == object
    assert set(mapping.ids[mapping.mapped]) <= set(load_genes("human").index)
    assert all(i is None for i in mapping.ids[~mapping.mapped])
    assert len(mapping.unmapped) == len(retina_var) - mapping.n_mapped
    assert mapping.duplicated == {}


def test_map_wu_symbols(wu_var_names: pd.Index) -> None:
    mapping = map_genes(wu_var_names)
    assert (mapping.kind, mapping.organism) == ("symbol", HUMAN)
    assert mapping.fraction_mapped > 0.7
    loc = [name for name in wu_var_names if name.startswith("LOC")]
    assert len(loc) > 5000
    unmapped = set(mapping.unmapped)
    assert sum(name in unmapped for name in loc) / len(loc) > 0.99
    position = wu_var_names.get_loc("CD3E")
    assert mapping.ids[position] == symbols_to_ids(["CD3E"])[0]


def test_map_mouse(mouse_var: pd.DataFrame) -> None:
    by_symbol = map_genes(mouse_var.index, "mouse")
    by_id = map_genes(mouse_var["gene_ids"], "NCBITaxon:10090")
    assert by_symbol.fraction_mapped > 0.9 and by_id.fraction_mapped > 0.95
    both = by_symbol.mapped & by_id.mapped
    agree = (by_symbol.ids[both] == by_id.ids[both]).mean()
    assert agree > 0.99
    # "Rp1" appears twice in var_names: both map to the same gene.
    rp1 = by_symbol.ids[np.flatnonzero(mouse_var.index == "Rp1")]
    assert len(rp1) == 2 and rp1[0] == rp1[1]
    assert by_symbol.duplicated[rp1[0]] == ["Rp1", "Rp1"]


def test_round_trip_known_genes() -> None:
    human = ["CD3E", "GAPDH", "TP53", "ACTB", "MS4A1"]
    ids = symbols_to_ids(human)
    assert ids[0] == "ENSG00000198851" and ids[1] == "ENSG00000111640"
    assert all(i.startswith("ENSG") for i in ids)
    assert ids_to_symbols(ids) == human
    mouse = ["Gapdh", "Cd3e", "Actb"]
    mouse_ids = symbols_to_ids(mouse, "mouse")
    assert mouse_ids[0] == "ENSMUSG00000057666"
    assert ids_to_symbols(mouse_ids, "mouse") == mouse
    assert symbols_to_ids(["CD3E", "NOT_A_GENE_42"]) == ["ENSG00000198851", None]
    assert symbols_to_ids([]) == [] and ids_to_symbols([]) == []


def test_versioned_ids() -> None:
    mapping = map_genes(["ENSG00000141510.17", "ENSG00000111640.16", "ENSG00000198851"])
    assert mapping.ids.tolist() == ["ENSG00000141510", "ENSG00000111640", "ENSG00000198851"]
    assert ids_to_symbols(["ENSG00000141510.17", "ENSG00000000000.1"]) == ["TP53", None]


def test_case_insensitive_fallback() -> None:
    mapping = map_genes(["cd3e", "GAPDH", "Tp53"], "human")
    assert mapping.ids.tolist() == symbols_to_ids(["CD3E", "GAPDH", "TP53"])
    assert mapping.case_insensitive == ["cd3e", "Tp53"]
    assert "ignoring case" in mapping.report()


def test_ambiguous_symbols_deterministic() -> None:
    table = load_genes("human")
    several = table[table["symbol"].duplicated(keep=False)]
    symbols = sorted(set(several["symbol"]))[:50] + ["CD3E"]
    first = map_genes(symbols, "human")
    second = map_genes(list(reversed(symbols)), "human")
    assert first.ambiguous.keys() == set(symbols) - {"CD3E"}
    assert "CD3E" not in first.ambiguous
    for position, symbol in enumerate(symbols):
        candidates = first.ambiguous.get(symbol)
        if candidates is None:
            continue
        assert first.ids[position] == candidates[0]
        assert second.ambiguous[symbol] == candidates
        assert sorted(candidates) == sorted(several.index[several["symbol"] == symbol])
        # Priority: protein-coding, then primary chromosome, then lowest id.
        rows = table.loc[candidates]
        key = list(
            zip(
                rows["biotype"] != "protein_coding",
                ~rows["chromosome"].astype(str).str.fullmatch(r"chr(\d+|X|Y|M)"),
                rows.index,
                strict=True,
            )
        )
        assert key == sorted(key)
    # CAST names a lncRNA (ENSG00000153113) and a protein-coding gene with a higher id:
    # the protein-coding one wins.
    cast = map_genes(["CAST", "CD3E"], "human")
    assert cast.ids[0] == "ENSG00000310517"
    assert cast.ambiguous == {"CAST": ["ENSG00000310517", "ENSG00000153113"]}


def test_report(wu_var_names: pd.Index) -> None:
    mapping = map_genes(wu_var_names, "human")
    report = mapping.report()
    assert report.count("\n") >= 1
    first_line = report.splitlines()[0]
    assert f"{len(wu_var_names):,} gene symbols (human)" in first_line
    assert f"{mapping.n_mapped:,} mapped" in first_line
    assert f"{mapping.fraction_mapped:.1%}" in first_line
    assert f"{len(wu_var_names) - mapping.n_mapped:,} unmapped" in first_line
    assert mapping.unmapped[0] in report and "LOC" in report
    assert f"{len(mapping.ambiguous):,} ambiguous" in report
    example = next(iter(mapping.ambiguous))
    assert example in report


# --------------------------------------------------------------------------- errors


def test_mouse_symbols_declared_human(mouse_var: pd.DataFrame) -> None:
    with pytest.raises(OrganismMismatchError, match="mouse") as info:
        map_genes(mouse_var.index, "human")
    message = str(info.value)
    assert "Xkr4" in message and "92.5%" in message and "organism='mouse'" in message
    assert isinstance(info.value, GeneMappingError) and isinstance(info.value, InputError)


def test_mouse_ids_declared_human(mouse_var: pd.DataFrame) -> None:
    with pytest.raises(OrganismMismatchError, match="ENSMUSG"):
        map_genes(mouse_var["gene_ids"], "human")
    with pytest.raises(OrganismMismatchError):
        ids_to_symbols(["ENSMUSG00000057666"], "human")


def test_human_declared_mouse(wu_var_names: pd.Index, retina_var: pd.DataFrame) -> None:
    with pytest.raises(OrganismMismatchError, match="look like human"):
        map_genes(wu_var_names, "mouse")
    with pytest.raises(OrganismMismatchError, match="look like human"):
        map_genes(retina_var.index, "mouse")
    with pytest.raises(OrganismMismatchError):
        symbols_to_ids(["CD3E", "GAPDH"], "mouse")


def test_too_few_mapped() -> None:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    junk = ["".join(rng.choice(letters, 12)) for _ in range(200)]
    with pytest.raises(GeneMappingError, match="None of the 200"):
        map_genes(junk)
    names = junk + ["CD3E", "GAPDH", "TP53"]
    with pytest.raises(GeneMappingError, match="adata.var") as info:
        map_genes(names, "human")
    assert "1.5%" in str(info.value) and junk[0] in str(info.value)
    assert not isinstance(info.value, OrganismMismatchError)
    assert map_genes(names, "human", min_fraction=0.01).n_mapped == 3


def test_kind_mismatch(retina_var: pd.DataFrame, wu_var_names: pd.Index) -> None:
    with pytest.raises(GeneMappingError, match="kind='ensembl'.*look like gene symbols"):
        map_genes(wu_var_names, kind="ensembl")
    with pytest.raises(GeneMappingError, match="kind='symbol'.*look like Ensembl"):
        map_genes(retina_var.index, kind="symbol")
    with pytest.raises(GeneMappingError, match="look like Ensembl"):
        symbols_to_ids(["ENSG00000141510"])
    with pytest.raises(ValueError, match="kind must be"):
        map_genes(["CD3E"], kind="gene")
    with pytest.raises(GeneMappingError, match="No gene names"):
        map_genes([])
    with pytest.raises(TypeError):
        map_genes("CD3E")
