"""Gene embeddings from protein language models (paper, Methods: Expression encoder).

"A gene name is mapped to its canonical protein name using Ensembl. We recover the protein
sequence using Ensembl. We use the protein sequence to generate an embedding using ESM2 by
averaging over all the amino-acid output embeddings as done in the ESM2 paper."

The pipeline, step by step:

1. :func:`read_protein_fasta` parses an Ensembl peptide FASTA (``*.pep.all.fa.gz`` from
   ``https://ftp.ensembl.org/pub/current_fasta/<species>/pep/``).
2. :func:`canonical_proteins` keeps one protein per gene: the Ensembl canonical one when
   known, else the longest.
3. :func:`embed_proteins` runs ESM2 (``fair-esm``) and averages the residue embeddings.
4. :func:`build_gene_embeddings` chains the three and writes a parquet file indexed by
   Ensembl gene id, read back with :func:`load_gene_embeddings`.

The command ``scprint gene-embeddings`` is :func:`main`. ESM2 needs the optional
dependency ``fair-esm`` (``pip install 'scprint-suite[esm]'``).

Where ESM2 cannot be run (no weights offline), :func:`expression_gene_embeddings` builds
a table from the training cells themselves: each gene's loadings on their principal
components, its mean expression and a few random identity columns
(``scprint gene-embeddings --counts train.h5ad ... --out table.parquet``). It gives the
class tokens cell-type structure from the first step, which a random table does not.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import anndata as ad
    from torch import nn

__all__ = [
    "DEFAULT_MODEL",
    "read_protein_fasta",
    "read_id_list",
    "canonical_proteins",
    "embed_proteins",
    "build_gene_embeddings",
    "write_gene_embeddings",
    "load_gene_embeddings",
    "expression_gene_embeddings",
    "build_parser",
    "main",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "esm2_t33_650M_UR50D"
"""The ESM2 model of the paper (650M parameters, 33 layers, 1280-dimensional output)."""

# An Ensembl gene, transcript, protein or exon id with its ".version" suffix.
_VERSIONED_RE = re.compile(r"^(ENS[A-Z]*[GTPE]\d{11})\.\d+$")
# The header tag some Ensembl FASTA files put on the canonical transcript's protein.
_CANONICAL_TAG = "Ensembl_canonical"
_FASTA_HINT = (
    "Expected an Ensembl peptide FASTA whose headers carry 'gene:' and 'transcript:' fields, "
    "e.g. Homo_sapiens.GRCh38.pep.all.fa.gz from "
    "https://ftp.ensembl.org/pub/current_fasta/homo_sapiens/pep/"
)
_N_EXAMPLES = 5
_COLUMNS = [
    "protein_id",
    "gene_id",
    "transcript_id",
    "gene_symbol",
    "gene_biotype",
    "transcript_biotype",
    "ensembl_canonical",
    "sequence",
]


# --------------------------------------------------------------------------- helpers


def _import_esm() -> Any:
    """Import ``esm`` (fair-esm), with an installation hint when it is missing."""
    try:
        import esm
    except ImportError as e:
        raise ImportError(
            "ESM2 gene embeddings need the package fair-esm: pip install 'scprint-suite[esm]' "
            "(or pip install fair-esm)"
        ) from e
    return esm


def _strip_version(value: str) -> str:
    """``ENSG00000141510.19`` -> ``ENSG00000141510``; other values unchanged."""
    match = _VERSIONED_RE.match(value)
    return match.group(1) if match else value


def _examples(values: Iterable[Any], n: int = _N_EXAMPLES) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a text file, gzip-compressed or not (told by its first bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _short(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n] + "..."


# --------------------------------------------------------------------------- FASTA


def _parse_header(header: str, line_no: int) -> dict[str, Any]:
    """Fields of an Ensembl peptide header (without the leading ``>``)."""
    tokens = header.split()
    if not tokens:
        raise ValueError(f"empty FASTA header at line {line_no}. {_FASTA_HINT}")
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for token in tokens[1:]:
        key, sep, value = token.partition(":")
        if key == "description":  # free text up to the end of the line
            break
        if sep:
            fields.setdefault(key, value)
        else:
            flags.add(token)
    if "gene" not in fields:
        raise ValueError(
            f"FASTA header at line {line_no} has no 'gene:' field: "
            f"{_short('>' + header)!r}. {_FASTA_HINT}"
        )
    tags = set(fields.get("tag", "").split(",")) | flags | set(fields)
    return {
        "protein_id": _strip_version(tokens[0]),
        "gene_id": _strip_version(fields["gene"]),
        "transcript_id": _strip_version(fields["transcript"]) if "transcript" in fields else None,
        "gene_symbol": fields.get("gene_symbol"),
        "gene_biotype": fields.get("gene_biotype"),
        "transcript_biotype": fields.get("transcript_biotype"),
        "ensembl_canonical": _CANONICAL_TAG in tags,
    }


def _clean_sequence(parts: list[str]) -> str:
    """Join sequence lines, upper-case them and drop a terminal stop codon ``*``."""
    return "".join(parts).replace(" ", "").upper().rstrip("*")


def read_protein_fasta(path: str | os.PathLike) -> pd.DataFrame:
    """Read an Ensembl peptide FASTA file (plain or gzip-compressed).

    Headers look like ``>ENSP00000269305.9 pep chromosome:GRCh38:17:7661779:7687538:-1
    gene:ENSG00000141510.19 transcript:ENST00000269305.9 gene_biotype:protein_coding
    transcript_biotype:protein_coding gene_symbol:TP53 description:...``.

    Parameters
    ----------
    path
        ``.fa`` or ``.fa.gz`` file (compression is detected from the content).

    Returns
    -------
    pandas.DataFrame
        One row per protein, in file order, with columns ``protein_id``, ``gene_id``,
        ``transcript_id`` (Ensembl ids without their version suffix), ``gene_symbol``,
        ``gene_biotype``, ``transcript_biotype`` (None when the header lacks them),
        ``ensembl_canonical`` (True when the header carries the ``Ensembl_canonical`` tag,
        which some Ensembl releases add) and ``sequence`` (upper case, without a terminal
        ``*``).

    Raises
    ------
    ValueError
        When a header lacks the ``gene:`` field (e.g. a UniProt FASTA; the message names the
        header), when sequence lines come before the first header, or when the file holds no
        record.
    """
    records: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    parts: list[str] = []
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                if current is not None:
                    current["sequence"] = _clean_sequence(parts)
                    records.append(current)
                current = _parse_header(line[1:], line_no)
                parts = []
            elif current is None:
                raise ValueError(
                    f"{path}: sequence data before the first '>' header at line {line_no}; "
                    f"not a FASTA file? {_FASTA_HINT}"
                )
            else:
                parts.append(line)
    if current is not None:
        current["sequence"] = _clean_sequence(parts)
        records.append(current)
    if not records:
        raise ValueError(f"{path}: no FASTA record found. {_FASTA_HINT}")
    table = pd.DataFrame.from_records(records, columns=_COLUMNS)
    table["ensembl_canonical"] = table["ensembl_canonical"].astype(bool)
    logger.info(
        "read %d proteins of %d genes from %s",
        len(table),
        table["gene_id"].nunique(),
        Path(path).name,
    )
    return table


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read identifiers from a text file, one record a line.

    Every field of every line (split on tabs, commas and spaces) is kept, without its
    Ensembl version suffix; blank lines and lines starting with ``#`` are skipped. This reads
    a plain list of ids as well as a table exported from Ensembl BioMart (for example gene
    id, transcript id and an "Ensembl Canonical" flag, pre-filtered to canonical rows): the
    fields that are not ids of the wanted kind match nothing.

    Parameters
    ----------
    path
        Text file, plain or gzip-compressed.

    Returns
    -------
    list of str
        The fields in file order, duplicates removed.
    """
    seen: dict[str, None] = {}
    with _open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for field in re.split(r"[\t,; ]+", line):
                field = field.strip().strip("\"'")
                if field:
                    seen.setdefault(_strip_version(field), None)
    return list(seen)


def _first_field_ids(path: str | os.PathLike) -> list[str]:
    """The first field of each line (a gene list, possibly with more columns)."""
    ids: dict[str, None] = {}
    with _open_text(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            ids.setdefault(_strip_version(re.split(r"[\t,; ]+", line)[0].strip("\"'")), None)
    return list(ids)


# --------------------------------------------------------------------------- canonical


def canonical_proteins(
    table: pd.DataFrame,
    *,
    canonical_transcripts: str | os.PathLike | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Keep one protein per gene.

    The rule, per gene:

    1. the protein of the gene's Ensembl canonical transcript, when it is known: from
       ``canonical_transcripts`` when given, else from the ``Ensembl_canonical`` header tag
       (column ``ensembl_canonical``) when the FASTA has it;
    2. otherwise (no canonical transcript known, or it is absent from the FASTA, e.g. after a
       release change) the longest protein;
    3. ties are broken by the lowest protein id.

    Proteins with an empty sequence are ignored.

    Parameters
    ----------
    table
        Output of :func:`read_protein_fasta`.
    canonical_transcripts
        Ensembl canonical transcript ids (with or without version), or the path of a text
        file holding them (see :func:`read_id_list`). Ensembl publishes them, e.g. the
        BioMart attribute "Ensembl Canonical" or the ``Ensembl_canonical`` tag of the GTF.

    Returns
    -------
    pandas.DataFrame
        One row per gene, indexed by Ensembl gene id (index ``ensembl_id``, sorted), with
        the columns of ``table`` except ``gene_id``, plus ``length`` (residues) and ``rule``
        (``"canonical"`` or ``"longest"``).
    """
    missing = {"protein_id", "gene_id", "transcript_id", "sequence"} - set(table.columns)
    if missing:
        raise ValueError(
            f"the protein table lacks the columns {sorted(missing)}; "
            "pass the output of read_protein_fasta"
        )
    t = table.copy()
    t["length"] = t["sequence"].str.len().astype(np.int64)
    empty = int((t["length"] == 0).sum())
    if empty:
        logger.warning("ignoring %d proteins with an empty sequence", empty)
        t = t[t["length"] > 0]
    if canonical_transcripts is not None:
        if isinstance(canonical_transcripts, str | os.PathLike):
            ids = set(read_id_list(canonical_transcripts))
        else:
            ids = {_strip_version(str(i)) for i in canonical_transcripts}
        is_canonical = t["transcript_id"].isin(ids).to_numpy(dtype=bool)
        source = "the given canonical transcripts"
    elif "ensembl_canonical" in t.columns and t["ensembl_canonical"].any():
        is_canonical = t["ensembl_canonical"].to_numpy(dtype=bool)
        source = "the Ensembl_canonical header tag"
    else:
        is_canonical = np.zeros(len(t), dtype=bool)
        source = None
    t["_canonical"] = is_canonical
    t = t.sort_values(
        ["gene_id", "_canonical", "length", "protein_id"],
        ascending=[True, False, False, True],
        kind="mergesort",
    )
    chosen = t.drop_duplicates("gene_id", keep="first").copy()
    chosen["rule"] = np.where(chosen["_canonical"], "canonical", "longest")
    chosen = chosen.drop(columns=["_canonical"]).set_index("gene_id")
    chosen.index.name = "ensembl_id"
    if source is not None:
        fallback = chosen.index[chosen["rule"] == "longest"]
        logger.info(
            "%d of %d genes use the protein of their canonical transcript (%s)",
            len(chosen) - len(fallback),
            len(chosen),
            source,
        )
        if len(fallback):
            logger.warning(
                "%d genes have no canonical transcript in the FASTA; their longest protein is "
                "used: %s",
                len(fallback),
                _examples(fallback),
            )
    else:
        logger.info("kept the longest protein of each of %d genes", len(chosen))
    return chosen


# --------------------------------------------------------------------------- ESM2


def _load_local_checkpoint(esm: Any, path: Path) -> tuple[nn.Module, Any]:
    """Load a local fair-esm checkpoint (``esm2_*.pt``, as downloaded by fair-esm).

    fair-esm's own local loader calls :func:`torch.load` with its default
    ``weights_only=True`` (torch >= 2.6), which refuses the ``argparse.Namespace`` stored in
    ESM checkpoints; this one allows it, so only load checkpoints from a trusted source. The
    contact-regression weights (``<name>-contact-regression.pt`` beside it) are optional:
    they only serve contact prediction.
    """
    if not path.is_file():
        raise FileNotFoundError(f"ESM checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    regression_path = path.with_name(path.stem + "-contact-regression.pt")
    regression = None
    if regression_path.is_file():
        regression = torch.load(regression_path, map_location="cpu", weights_only=False)
    with warnings.catch_warnings():  # contacts are not predicted here
        warnings.filterwarnings("ignore", message="Regression weights not found")
        return esm.pretrained.load_model_and_alphabet_core(path.stem, data, regression)


def _resolve_model(model: str | tuple[nn.Module, Any]) -> tuple[nn.Module, Any, str]:
    if isinstance(model, str | os.PathLike):
        esm = _import_esm()
        name = os.fspath(model)
        if name.endswith(".pt"):
            logger.info("loading the ESM checkpoint %s", name)
            net, alphabet = _load_local_checkpoint(esm, Path(name))
            return net, alphabet, Path(name).stem
        logger.info("loading %s (downloaded to the torch hub cache on first use)", name)
        net, alphabet = esm.pretrained.load_model_and_alphabet(name)
        return net, alphabet, name
    if isinstance(model, tuple | list) and len(model) == 2:
        net, alphabet = model
        return net, alphabet, type(net).__name__
    raise TypeError(
        "model must be an ESM model name (e.g. 'esm2_t33_650M_UR50D'), the path of a .pt "
        f"checkpoint or a (model, alphabet) pair, not {type(model).__name__}"
    )


def _batches(lengths: np.ndarray, batch_tokens: int, extra: int) -> list[np.ndarray]:
    """Positions grouped so that each padded batch holds at most ``batch_tokens`` tokens.

    Sequences are taken longest first, so that an out-of-memory error shows at once. A
    sequence longer than the budget gets a batch of its own.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        width = int(lengths[order[start]]) + extra  # the longest of the batch
        size = max(1, batch_tokens // width)
        batches.append(order[start : start + size])
        start += size
    return batches


def embed_proteins(
    sequences: Mapping[str, str],
    *,
    model: str | tuple[nn.Module, Any] = DEFAULT_MODEL,
    batch_tokens: int = 4096,
    max_length: int = 1022,
    device: str | torch.device | None = None,
    layer: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Embed protein sequences with ESM2: the mean of the residues' output embeddings.

    As in the ESM2 paper (``esm/scripts/extract.py --include mean``), the representation of
    a sequence is the average over its residue positions of one layer's output; the
    beginning- and end-of-sequence tokens and the padding are excluded.

    Parameters
    ----------
    sequences
        Key (e.g. Ensembl gene id) -> amino-acid sequence. Residues outside the model's
        alphabet (e.g. an internal ``*``) are read as ``X``; a terminal ``*`` is dropped.
        Empty sequences are skipped with a warning.
    model
        An ESM model name for :func:`esm.pretrained.load_model_and_alphabet` (downloaded to
        the torch hub cache on first use), the path of a local ``.pt`` checkpoint as fair-esm
        downloads them (its file name, e.g. ``esm2_t33_650M_UR50D.pt``, tells the
        architecture; it is unpickled in full, so it must come from a trusted source), or an
        already built ``(model, alphabet)`` pair. A given model is moved to ``device`` in
        place; its training mode is restored afterwards.
    batch_tokens
        Token budget of a batch, padding included. Sequences are sorted by length so that
        little is padding.
    max_length
        Residues kept per sequence; longer ones are truncated to their first ``max_length``
        residues (1022 is the most ESM2 positions allow besides the two special tokens).
    device
        Torch device; default CUDA when available, else CPU.
    layer
        Layer whose output is averaged; default the last one (``model.num_layers``), whose
        output ESM2 passes through its final layer norm. Negative values count from the end
        (-1 is the last layer); 0 is the token embedding.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty sequence, indexed by the keys of ``sequences`` (in their
        order), with float32 columns ``0 .. d-1``; ``attrs`` holds ``model`` (its name),
        ``layer`` (the layer used) and ``max_length``.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    keys = [str(k) for k in sequences]
    seqs = [str(s).replace(" ", "").upper().rstrip("*") for s in sequences.values()]
    if not keys:
        raise ValueError("no sequence to embed")
    empty = [k for k, s in zip(keys, seqs, strict=True) if not s]
    if empty:
        logger.warning("skipping %d empty sequences: %s", len(empty), _examples(empty))
        kept = [(k, s) for k, s in zip(keys, seqs, strict=True) if s]
        if not kept:
            raise ValueError("all sequences are empty")
        keys, seqs = map(list, zip(*kept, strict=True))

    net, alphabet, name = _resolve_model(model)
    n_layers = getattr(net, "num_layers", None)
    if layer is None:
        if n_layers is None:
            raise ValueError(f"{name} has no num_layers attribute; pass layer explicitly")
        layer = int(n_layers)
    elif layer < 0:
        if n_layers is None:
            raise ValueError(f"{name} has no num_layers attribute; pass a layer >= 0")
        layer = int(n_layers) + 1 + layer
    if layer < 0 or (n_layers is not None and layer > n_layers):
        raise ValueError(f"layer must lie in 0..{n_layers} for {name}, got {layer}")

    n_truncated = sum(len(s) > max_length for s in seqs)
    if n_truncated:
        logger.info(
            "truncated %d of %d sequences longer than %d residues to their first %d",
            n_truncated,
            len(seqs),
            max_length,
            max_length,
        )
    seqs = [s[:max_length] for s in seqs]

    # Encode residue by residue: ESM alphabets are single letters; unknown ones become X.
    tok_to_idx = alphabet.to_dict()
    unknown = tok_to_idx.get("X", alphabet.unk_idx)
    n_unknown = 0
    encoded: list[np.ndarray] = []
    for s in seqs:
        ids = np.fromiter((tok_to_idx.get(c, -1) for c in s), dtype=np.int64, count=len(s))
        bad = ids < 0
        if bad.any():
            n_unknown += 1
            ids[bad] = unknown
        encoded.append(ids)
    if n_unknown:
        logger.info("%d sequences hold residues outside the alphabet, read as X", n_unknown)

    bos = int(bool(alphabet.prepend_bos))
    eos = int(bool(alphabet.append_eos))
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)

    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    was_training = net.training
    net = net.to(dev).eval()
    out: np.ndarray | None = None
    try:
        batches = _batches(lengths, batch_tokens, bos + eos)
        logger.info(
            "embedding %d sequences in %d batches with %s (layer %d) on %s",
            len(seqs),
            len(batches),
            name,
            layer,
            dev,
        )
        bar = tqdm(total=len(seqs), desc="ESM embeddings", unit="seq", disable=not progress)
        with torch.no_grad():
            for idx in batches:
                width = int(lengths[idx].max()) + bos + eos
                tokens = torch.full((len(idx), width), alphabet.padding_idx, dtype=torch.int64)
                mask = torch.zeros((len(idx), width), dtype=torch.bool)
                for row, i in enumerate(idx):
                    n = int(lengths[i])
                    if bos:
                        tokens[row, 0] = alphabet.cls_idx
                    tokens[row, bos : bos + n] = torch.from_numpy(encoded[i])
                    if eos:
                        tokens[row, bos + n] = alphabet.eos_idx
                    mask[row, bos : bos + n] = True
                tokens, mask = tokens.to(dev), mask.to(dev)
                reps = net(tokens, repr_layers=[layer])["representations"][layer].float()
                mask_f = mask.unsqueeze(-1).to(reps.dtype)
                means = (reps * mask_f).sum(1) / mask_f.sum(1)
                means = means.cpu().numpy().astype(np.float32, copy=False)
                if out is None:
                    out = np.empty((len(seqs), means.shape[1]), dtype=np.float32)
                out[idx] = means
                bar.update(len(idx))
        bar.close()
    finally:
        net.train(was_training)
    assert out is not None
    result = pd.DataFrame(out, index=pd.Index(keys), columns=range(out.shape[1]))
    result.attrs.update({"model": name, "layer": layer, "max_length": max_length})
    return result


# --------------------------------------------------------------------------- files


def write_gene_embeddings(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write gene embeddings to parquet atomically (a temporary file, then a rename).

    Column names are stored as strings (parquet needs them so); :func:`load_gene_embeddings`
    turns them back into integers. ``table.attrs`` (e.g. the model name) is kept, except
    ``missing``.

    Parameters
    ----------
    table
        Embeddings indexed by Ensembl gene id, numeric columns.
    path
        Output ``.parquet`` file; its folder is created when missing.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from scdataloader.io import atomic_path

    path = Path(path)
    frame = table.copy()
    frame.attrs = {k: v for k, v in table.attrs.items() if k != "missing"}
    frame.columns = [str(c) for c in frame.columns]
    frame.index = frame.index.astype(str)
    frame.index.name = "ensembl_id"
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, engine="pyarrow")
    return path


def load_gene_embeddings(
    path: str | os.PathLike, genes: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read gene embeddings written by :func:`build_gene_embeddings`.

    Parameters
    ----------
    path
        Parquet file indexed by Ensembl gene id, one numeric column per dimension.
    genes
        Ensembl gene ids (version suffixes are ignored) to return, in this order. Genes
        absent from the file get a row of NaN; they are logged as a warning and listed in
        ``result.attrs["missing"]``, and ``result.notna().all(axis=1)`` is the mask of the
        genes found.

    Returns
    -------
    pandas.DataFrame
        float32 embeddings, index ``ensembl_id``, integer columns ``0 .. d-1`` (when the
        file's column names are integers), ``attrs["missing"]`` when ``genes`` is given.

    Raises
    ------
    ValueError
        When the index has duplicates, a column is not numeric or a value is NaN.
    """
    path = Path(path)
    table = pd.read_parquet(path)
    if not table.index.is_unique:
        dups = table.index[table.index.duplicated()].unique()
        raise ValueError(
            f"{path}: {len(dups)} duplicated gene ids in the index: {_examples(dups)}"
        )
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise ValueError(
            f"{path}: columns {_examples(non_numeric)} are not numeric; expected one numeric "
            "column per embedding dimension"
        )
    if table.shape[1] == 0:
        raise ValueError(f"{path}: no embedding column")
    values = table.to_numpy(dtype=np.float32)
    nan_rows = np.isnan(values).any(axis=1)
    if nan_rows.any():
        raise ValueError(
            f"{path}: {int(nan_rows.sum())} genes have NaN values: "
            f"{_examples(table.index[nan_rows])}"
        )
    columns: list[Any] = list(table.columns)
    if all(isinstance(c, str) and c.isdigit() for c in columns):
        columns = [int(c) for c in columns]
    attrs = dict(table.attrs)
    index = pd.Index(table.index.astype(str), name="ensembl_id")
    result = pd.DataFrame(values, index=index, columns=columns)
    if genes is not None:
        wanted = pd.Index([_strip_version(str(g)) for g in genes], name="ensembl_id")
        missing = wanted[~wanted.isin(result.index)].unique().tolist()
        if missing:
            logger.warning(
                "%d of %d genes have no embedding in %s: %s",
                len(missing),
                len(wanted),
                path.name,
                _examples(missing),
            )
        result = result.reindex(wanted)
        attrs["missing"] = missing
    result.attrs.update(attrs)
    return result


def build_gene_embeddings(
    fasta: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    model: str | tuple[nn.Module, Any] = DEFAULT_MODEL,
    canonical_transcripts: str | os.PathLike | Iterable[str] | None = None,
    genes: Iterable[str] | None = None,
    batch_tokens: int = 4096,
    max_length: int = 1022,
    device: str | torch.device | None = None,
    layer: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Embed each gene's canonical protein with ESM2 and write the table to parquet.

    Parameters
    ----------
    fasta
        Ensembl peptide FASTA (see :func:`read_protein_fasta`).
    out
        Output ``.parquet`` (written atomically); None to only return the table.
    model
        See :func:`embed_proteins`.
    canonical_transcripts
        See :func:`canonical_proteins`; without it the longest protein of each gene is used
        (or the tagged canonical one when the FASTA headers carry ``Ensembl_canonical``).
    genes
        Ensembl gene ids to embed (version suffixes ignored); default every gene of the
        FASTA. Genes without a protein in the FASTA are logged as a warning and left out.
    batch_tokens, max_length, device, layer, progress
        See :func:`embed_proteins`.

    Returns
    -------
    pandas.DataFrame
        float32 embeddings indexed by Ensembl gene id (index ``ensembl_id``; in the order
        of ``genes`` when given, else sorted), integer columns ``0 .. d-1``; ``attrs`` holds
        ``model``, ``layer``, ``max_length`` (see :func:`embed_proteins`) and ``missing``
        (the genes of ``genes`` without a protein); all but ``missing`` are stored in the
        parquet file.
    """
    table = read_protein_fasta(fasta)
    wanted: list[str] | None = None
    missing: list[str] = []
    if genes is not None:
        wanted = list(dict.fromkeys(_strip_version(str(g)) for g in genes))
        if not wanted:
            raise ValueError("genes is empty")
        table = table[table["gene_id"].isin(set(wanted))]
    proteins = canonical_proteins(table, canonical_transcripts=canonical_transcripts)
    if wanted is not None:
        missing = [g for g in wanted if g not in proteins.index]
        if missing:
            logger.warning(
                "%d of %d genes have no protein in %s: %s",
                len(missing),
                len(wanted),
                Path(fasta).name,
                _examples(missing),
            )
        proteins = proteins.reindex([g for g in wanted if g in proteins.index])
    if proteins.empty:
        raise ValueError(f"no protein to embed in {fasta}" + (" for genes" if wanted else ""))
    result = embed_proteins(
        dict(zip(proteins.index, proteins["sequence"], strict=True)),
        model=model,
        batch_tokens=batch_tokens,
        max_length=max_length,
        device=device,
        layer=layer,
        progress=progress,
    )
    result.index.name = "ensembl_id"
    result.attrs["missing"] = missing
    if out is not None:
        write_gene_embeddings(result, out)
        logger.info("wrote %d genes x %d dimensions to %s", *result.shape, out)
    return result


# --------------------------------------------------------------------------- from expression


def expression_gene_embeddings(
    adatas: ad.AnnData | Sequence[ad.AnnData],
    *,
    n_components: int = 32,
    n_identity: int = 16,
    min_cells: int = 3,
    balance: bool = True,
    layer: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A gene table from training cells' expression, for when ESM2 cannot be run.

    The paper starts from frozen ESM2 embeddings of each gene's protein, which already
    place genes of related function near each other. Without them a randomly initialised
    table of tens of thousands of genes tells the class tokens nothing about cell type
    until it has been learnt, which takes far more steps than a small run has. This table
    places genes by how they co-vary across the cells given, so it carries cell-type
    structure from the first step. Each gene's row is, in this order:

    * its loadings on the first ``n_components`` principal components of the
      log-normalised cells (``log1p(10,000 x count / cell total)``), each data set
      centred on its own gene means so that the components follow cell states, not data
      sets (genes a data set did not measure count as unexpressed there);
    * its mean log-normalised expression over the data sets that measured it;
    * ``n_identity`` fixed random values, so that genes of similar expression still have
      distinct rows.

    The first two parts are scaled together to a standard deviation of 1 over the genes,
    as are the identity values. Use only the cells the model trains on: a table built
    on evaluation cells leaks them.

    Parameters
    ----------
    adatas
        One AnnData or several (e.g. one per data set), cells x genes with raw counts
        and Ensembl gene ids as ``var_names`` (as :func:`scdataloader.preprocess` writes
        them).
    n_components
        Principal components kept (at most the number of cells or genes minus one).
    n_identity
        Random identity columns (0 for none).
    min_cells
        Genes expressed in fewer cells over all data sets are left out of the table
        (a model then gives them random rows, see ``ScPrintModule``).
    balance
        Weigh each AnnData the same in the components, whatever its number of cells
        (as a sampler balancing data sets trains on them); False weighs every cell the
        same.
    layer
        Layer holding the counts (None: ``X``); see :func:`scdataloader.log_normalize`.
    seed
        Seed of the SVD's start vector and of the identity columns.

    Returns
    -------
    pandas.DataFrame
        float32, indexed by Ensembl gene id (index ``ensembl_id``, sorted), integer
        columns ``0 .. n_components + n_identity``; ``attrs`` records the method and its
        options (written to parquet by :func:`write_gene_embeddings`).

    Raises
    ------
    ValueError
        No AnnData, gene ids that are not Ensembl ids, duplicated genes, too few cells or
        genes for ``n_components``.
    scdataloader.CountsError
        A matrix that does not hold raw counts.
    """
    import anndata as ad
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, svds

    from scdataloader.preprocess import log_normalize

    if isinstance(adatas, ad.AnnData):
        adatas = [adatas]
    adatas = list(adatas)
    if not adatas:
        raise ValueError("expression_gene_embeddings needs at least one AnnData.")
    if n_components < 1 or n_identity < 0 or min_cells < 1:
        raise ValueError("n_components and min_cells must be >= 1 and n_identity >= 0.")
    blocks, genes_of = [], []
    for i, adata in enumerate(adatas):
        names = pd.Index([_strip_version(str(g)) for g in adata.var_names])
        bad = [g for g in names if not g.startswith("ENS")]
        if bad:
            raise ValueError(
                f"AnnData {i}: {len(bad)} of {len(names)} var_names are not Ensembl gene ids "
                f"(e.g. {_examples(bad)}); map them first with scdataloader.preprocess."
            )
        if not names.is_unique:
            raise ValueError(
                f"AnnData {i}: duplicated genes {_examples(names[names.duplicated()])}."
            )
        if adata.n_obs == 0:
            raise ValueError(f"AnnData {i} has no cells.")
        blocks.append(log_normalize(adata, layer=layer))
        genes_of.append(names)
    union = pd.Index(sorted(set().union(*genes_of)), name="ensembl_id")
    # every block on the union's columns
    stacked, n_cells, means, measured = [], np.zeros(len(union)), [], []
    for X, names in zip(blocks, genes_of, strict=True):
        cols = union.get_indexer(names)
        remap = sp.csr_matrix(
            (np.ones(len(cols), np.float32), (np.arange(len(cols)), cols)),
            shape=(len(cols), len(union)),
        )
        Xu = sp.csr_matrix(X @ remap)
        stacked.append(Xu)
        n_cells += np.diff(Xu.tocsc().indptr)
        means.append(np.asarray(Xu.mean(axis=0)).ravel())
        hit = np.zeros(len(union), bool)
        hit[cols] = True
        measured.append(hit)
    keep = n_cells >= min_cells
    if keep.sum() < 2:
        raise ValueError(
            f"only {int(keep.sum())} genes are expressed in at least {min_cells} cells."
        )
    union = union[keep]
    X = sp.vstack([x[:, keep] for x in stacked]).tocsr().astype(np.float64)
    M = np.stack([m[keep] for m in means])  # (datasets, genes): each data set's gene means
    sizes = np.array([x.shape[0] for x in stacked])
    owner = np.repeat(np.arange(len(sizes)), sizes)  # data set of each row
    k = min(n_components, min(X.shape) - 1)
    if k < 1:
        raise ValueError(
            f"{X.shape[0]} cells x {X.shape[1]} genes: too few for a principal component."
        )
    if k < n_components:
        logger.warning("%d principal components asked; %d possible", n_components, k)

    # each data set weighs the same, however many cells it has (as the sampler does)
    w = np.sqrt(sizes.sum() / (len(sizes) * sizes))[owner] if balance else np.ones(len(owner))

    def matvec(v):
        v = np.asarray(v).ravel()
        return w * (X @ v - (M @ v)[owner])

    def rmatvec(u):
        u = w * np.asarray(u).ravel()
        return X.T @ u - M.T @ np.bincount(owner, weights=u, minlength=len(sizes))

    op = LinearOperator(X.shape, matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    rng = np.random.default_rng(seed)
    _, sv, vt = svds(op, k=k, v0=rng.standard_normal(min(X.shape)))
    order = np.argsort(sv)[::-1]
    loadings = (vt[order].T * sv[order]) / np.sqrt(max(X.shape[0] - 1, 1))  # (genes, k)
    # a component's sign is arbitrary: fix it so that the largest loading is positive
    flip = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(k)])
    loadings *= np.where(flip == 0, 1, flip)
    seen = np.stack([m[keep] for m in measured])
    mean = (M * sizes[:, None] * seen).sum(0) / np.maximum((sizes[:, None] * seen).sum(0), 1)
    expr = np.column_stack([loadings, mean])
    expr /= expr.std() or 1.0
    parts = [expr]
    if n_identity:
        parts.append(rng.standard_normal((len(union), n_identity)))
    values = np.hstack(parts).astype(np.float32)
    result = pd.DataFrame(values, index=union, columns=range(values.shape[1]))
    result.attrs.update(
        {
            "method": "expression principal components",
            "n_components": int(k),
            "n_identity": int(n_identity),
            "min_cells": int(min_cells),
            "balance": bool(balance),
            "cells": int(X.shape[0]),
            "datasets": len(adatas),
            "seed": int(seed),
        }
    )
    return result


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``scprint gene-embeddings``."""
    parser = argparse.ArgumentParser(
        prog="scprint gene-embeddings",
        description="Write a parquet gene table indexed by Ensembl gene id: ESM2 "
        "embeddings of each gene's canonical protein (--fasta), or, where ESM2 cannot be "
        "run, principal components of training cells' expression (--counts).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta", help="Ensembl peptide FASTA (.fa or .fa.gz)")
    source.add_argument(
        "--counts",
        nargs="+",
        metavar="H5AD",
        help="AnnData files of raw counts with Ensembl ids (e.g. scdataloader preprocess "
        "outputs): the model's training cells only",
    )
    parser.add_argument("--out", required=True, help="output .parquet (written atomically)")
    esm = parser.add_argument_group("--fasta")
    esm.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"ESM model name or local .pt checkpoint (default: {DEFAULT_MODEL})",
    )
    esm.add_argument(
        "--canonical",
        metavar="FILE",
        help="text file of Ensembl canonical transcript ids (default: longest protein)",
    )
    esm.add_argument(
        "--genes", metavar="FILE", help="text file of Ensembl gene ids to embed, one a line"
    )
    esm.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    esm.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch")
    esm.add_argument(
        "--max-length", type=int, default=1022, help="residues kept per protein (default 1022)"
    )
    esm.add_argument(
        "--layer", type=int, default=None, help="layer to average (default: the last)"
    )
    esm.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    expr = parser.add_argument_group("--counts")
    expr.add_argument("--components", type=int, default=32, help="principal components (32)")
    expr.add_argument("--identity", type=int, default=16, help="random identity columns (16)")
    expr.add_argument(
        "--min-cells", type=int, default=3, help="genes expressed in fewer cells are left out"
    )
    expr.add_argument("--seed", type=int, default=0)
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scprint gene-embeddings``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from scdataloader.cli_utils import one_line

    try:
        if args.counts:
            from scdataloader.io import read_anndata

            result = expression_gene_embeddings(
                [read_anndata(path) for path in args.counts],
                n_components=args.components,
                n_identity=args.identity,
                min_cells=args.min_cells,
                seed=args.seed,
            )
            write_gene_embeddings(result, args.out)
        else:
            result = build_gene_embeddings(
                args.fasta,
                args.out,
                model=args.model,
                canonical_transcripts=args.canonical,
                genes=_first_field_ids(args.genes) if args.genes else None,
                batch_tokens=args.batch_tokens,
                max_length=args.max_length,
                device=args.device,
                layer=args.layer,
                progress=not args.no_progress,
            )
    except (ValueError, ImportError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {result.shape[0]:,} genes x {result.shape[1]} dimensions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
