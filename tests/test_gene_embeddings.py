"""ESM2 gene embeddings: Ensembl FASTA parsing, canonical proteins, mean pooling, files, CLI.

A tiny randomly initialised ESM2 built from fair-esm's own classes stands in for the
pretrained weights (which cannot be downloaded here).
"""

from __future__ import annotations

import gzip
import logging
import sys
from argparse import Namespace

import numpy as np
import pandas as pd
import pytest
import torch

from scprint import gene_embeddings as ge

AMINO = "ACDEFGHIKLMNPQRSTVWY"
_RNG = np.random.default_rng(0)


def _seq(n: int) -> str:
    return "".join(_RNG.choice(list(AMINO), size=n))


# gene -> [(protein, transcript, length)]; versions are added in the headers.
ISOFORMS = {
    "ENSG00000000001": [
        ("ENSP00000000011", "ENST00000000011", 30),
        ("ENSP00000000012", "ENST00000000012", 45),  # longest
        ("ENSP00000000013", "ENST00000000013", 20),  # canonical (in the tests that say so)
    ],
    "ENSG00000000002": [
        ("ENSP00000000022", "ENST00000000022", 25),  # tie: the lowest protein id wins
        ("ENSP00000000021", "ENST00000000021", 25),
    ],
    "ENSG00000000003": [("ENSP00000000031", "ENST00000000031", 60)],
    "ENSG00000000004": [("ENSP00000000041", "ENST00000000041", 12)],
}
SYMBOLS = {
    "ENSG00000000001": "GENEA",
    "ENSG00000000002": "GENEB",
    "ENSG00000000003": "GENEC",
    "ENSG00000000004": "GENED",
}
SEQUENCES = {p: _seq(n) for iso in ISOFORMS.values() for p, _, n in iso}
LONGEST = {
    "ENSG00000000001": "ENSP00000000012",
    "ENSG00000000002": "ENSP00000000021",
    "ENSG00000000003": "ENSP00000000031",
    "ENSG00000000004": "ENSP00000000041",
}


def _fasta_text(tag_canonical: set[str] = frozenset()) -> str:
    lines = []
    for gene, isoforms in ISOFORMS.items():
        for protein, transcript, _ in isoforms:
            tag = " Ensembl_canonical" if transcript in tag_canonical else ""
            lines.append(
                f">{protein}.3 pep chromosome:GRCh38:1:100:200:1 gene:{gene}.7 "
                f"transcript:{transcript}.2 gene_biotype:protein_coding "
                f"transcript_biotype:protein_coding gene_symbol:{SYMBOLS[gene]}{tag} "
                f"description:made up gene {SYMBOLS[gene]} [Source:HGNC Symbol;Acc:HGNC:1]"
            )
            seq = SEQUENCES[protein] + ("*" if gene == "ENSG00000000004" else "")
            lines.extend(seq[i : i + 16] for i in range(0, len(seq), 16))  # wrapped lines
    return "\n".join(lines) + "\n"


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "tiny.pep.all.fa"
    path.write_text(_fasta_text())
    return path


@pytest.fixture
def fasta_gz(tmp_path):
    path = tmp_path / "tiny.pep.all.fa.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_fasta_text())
    return path


@pytest.fixture(scope="module")
def tiny_esm():
    esm = pytest.importorskip("esm")
    torch.manual_seed(0)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=2, embed_dim=32, attention_heads=4, alphabet=alphabet)
    return model.eval(), alphabet


def _by_hand(model, alphabet, seq: str, layer: int = 2) -> np.ndarray:
    """Mean over residues of one unpadded sequence, tokenised by fair-esm's converter."""
    _, _, tokens = alphabet.get_batch_converter()([("x", seq)])
    assert tokens.shape[1] == len(seq) + 2  # BOS + residues + EOS, no padding
    with torch.no_grad():
        reps = model(tokens, repr_layers=[layer])["representations"][layer]
    return reps[0, 1 : len(seq) + 1].mean(0).numpy()


# --------------------------------------------------------------------------- FASTA


def test_read_protein_fasta(fasta, fasta_gz):
    table = ge.read_protein_fasta(fasta)
    assert list(table.columns[:4]) == ["protein_id", "gene_id", "transcript_id", "gene_symbol"]
    assert len(table) == sum(len(v) for v in ISOFORMS.values())
    assert table["gene_id"].nunique() == len(ISOFORMS)
    row = table.set_index("protein_id").loc["ENSP00000000012"]
    assert row["gene_id"] == "ENSG00000000001"  # versions stripped
    assert row["transcript_id"] == "ENST00000000012"
    assert row["gene_symbol"] == "GENEA"
    assert row["gene_biotype"] == "protein_coding"
    assert row["sequence"] == SEQUENCES["ENSP00000000012"]  # wrapped lines joined
    d = table.set_index("protein_id").loc["ENSP00000000041", "sequence"]
    assert d == SEQUENCES["ENSP00000000041"]  # terminal stop removed
    assert not table["ensembl_canonical"].any()
    pd.testing.assert_frame_equal(ge.read_protein_fasta(fasta_gz), table)


def test_read_protein_fasta_rejects_uniprot(tmp_path):
    path = tmp_path / "uniprot.fasta"
    path.write_text(
        ">sp|P04637|P53_HUMAN Cellular tumor antigen p53 OS=Homo sapiens OX=9606 GN=TP53\n"
        "MEEPQSDPSVEPPLSQETFSDLWKLLPENNVLSPLPSQAMDDLMLSPDDIEQWFTEDPGP\n"
    )
    with pytest.raises(ValueError, match=r"no 'gene:' field.*sp\|P04637\|P53_HUMAN.*Ensembl"):
        ge.read_protein_fasta(path)


def test_read_protein_fasta_rejects_non_fasta(tmp_path):
    path = tmp_path / "table.tsv"
    path.write_text("gene\tvalue\nTP53\t1\n")
    with pytest.raises(ValueError, match="before the first '>' header"):
        ge.read_protein_fasta(path)
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(ValueError, match="no FASTA record"):
        ge.read_protein_fasta(tmp_path / "empty.fa")


# --------------------------------------------------------------------------- canonical


def test_canonical_proteins_longest(fasta):
    chosen = ge.canonical_proteins(ge.read_protein_fasta(fasta))
    assert chosen.index.name == "ensembl_id"
    assert chosen.index.is_unique and len(chosen) == len(ISOFORMS)
    assert chosen["protein_id"].to_dict() == LONGEST
    assert (chosen["rule"] == "longest").all()
    assert chosen.loc["ENSG00000000001", "length"] == 45


def test_canonical_proteins_given(fasta, tmp_path, caplog):
    table = ge.read_protein_fasta(fasta)
    expected = {**LONGEST, "ENSG00000000001": "ENSP00000000013"}
    # ids with versions; ENSG...3's canonical transcript is absent from the FASTA
    ids = ["ENST00000000013.2", "ENST00000000022", "ENST00000000099.1"]
    with caplog.at_level(logging.WARNING, logger=ge.__name__):
        chosen = ge.canonical_proteins(table, canonical_transcripts=ids)
    assert "longest protein is used" in caplog.text
    assert chosen["protein_id"].to_dict() == {**expected, "ENSG00000000002": "ENSP00000000022"}
    assert chosen.loc["ENSG00000000001", "rule"] == "canonical"
    assert chosen.loc["ENSG00000000003", "rule"] == "longest"

    # a BioMart-style export: gene id, transcript id (versioned), flag
    path = tmp_path / "canonical.tsv"
    path.write_text(
        "Gene stable ID\tTranscript stable ID version\tEnsembl Canonical\n"
        "ENSG00000000001\tENST00000000013.2\t1\n"
    )
    from_file = ge.canonical_proteins(table, canonical_transcripts=path)
    assert from_file["protein_id"].to_dict() == expected


def test_canonical_proteins_header_tag(tmp_path):
    path = tmp_path / "tagged.fa"
    path.write_text(_fasta_text(tag_canonical={"ENST00000000011"}))
    table = ge.read_protein_fasta(path)
    assert table["ensembl_canonical"].sum() == 1
    chosen = ge.canonical_proteins(table)
    assert chosen.loc["ENSG00000000001", "protein_id"] == "ENSP00000000011"
    assert chosen.loc["ENSG00000000002", "protein_id"] == "ENSP00000000021"
    # an explicit list wins over the header tag
    chosen = ge.canonical_proteins(table, canonical_transcripts={"ENST00000000013"})
    assert chosen.loc["ENSG00000000001", "protein_id"] == "ENSP00000000013"


# --------------------------------------------------------------------------- ESM2


def test_embed_matches_mean_over_residues(tiny_esm):
    model, alphabet = tiny_esm
    seqs = {"a": SEQUENCES["ENSP00000000031"], "b": "MKV", "c": SEQUENCES["ENSP00000000022"]}
    batched = ge.embed_proteins(seqs, model=tiny_esm, batch_tokens=10_000, progress=False)
    assert list(batched.index) == ["a", "b", "c"]
    assert list(batched.columns) == list(range(32))
    assert (batched.dtypes == np.float32).all()
    assert batched.attrs["layer"] == 2
    one_by_one = ge.embed_proteins(seqs, model=tiny_esm, batch_tokens=1, progress=False)
    np.testing.assert_allclose(batched.to_numpy(), one_by_one.to_numpy(), rtol=0, atol=1e-5)
    for key, seq in seqs.items():
        np.testing.assert_allclose(
            batched.loc[key].to_numpy(), _by_hand(model, alphabet, seq), rtol=0, atol=1e-5
        )
    assert model.training is False


def test_embed_layers_and_symbols(tiny_esm):
    model, alphabet = tiny_esm
    seqs = {"a": "MKVLAAGW"}
    first = ge.embed_proteins(seqs, model=tiny_esm, layer=1, progress=False)
    np.testing.assert_allclose(first.loc["a"], _by_hand(model, alphabet, "MKVLAAGW", 1), atol=1e-5)
    last = ge.embed_proteins(seqs, model=tiny_esm, layer=-1, progress=False)
    np.testing.assert_allclose(last.loc["a"], _by_hand(model, alphabet, "MKVLAAGW"), atol=1e-5)
    with pytest.raises(ValueError, match="layer must lie in 0..2"):
        ge.embed_proteins(seqs, model=tiny_esm, layer=3, progress=False)
    # lower case, an unknown residue (read as X) and a terminal stop
    odd = ge.embed_proteins({"a": "mkvl*aagw*"}, model=tiny_esm, progress=False)
    np.testing.assert_allclose(odd.loc["a"], _by_hand(model, alphabet, "MKVLXAAGW"), atol=1e-5)


def test_embed_truncates(tiny_esm, caplog):
    model, alphabet = tiny_esm
    long = SEQUENCES["ENSP00000000031"]  # 60 residues
    with caplog.at_level(logging.INFO, logger=ge.__name__):
        out = ge.embed_proteins({"a": long, "b": "MKV"}, model=tiny_esm, max_length=10)
    assert "truncated 1 of 2 sequences longer than 10 residues" in caplog.text
    np.testing.assert_allclose(out.loc["a"], _by_hand(model, alphabet, long[:10]), atol=1e-5)
    np.testing.assert_allclose(out.loc["b"], _by_hand(model, alphabet, "MKV"), atol=1e-5)


def test_missing_esm_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "esm", None)
    with pytest.raises(ImportError, match=r"pip install 'scprint-suite\[esm\]'"):
        ge.embed_proteins({"a": "MKV"}, model="esm2_t6_8M_UR50D")


# --------------------------------------------------------------------------- pipeline, files


def test_build_and_load_round_trip(fasta_gz, tiny_esm, tmp_path, caplog):
    model, alphabet = tiny_esm
    out = tmp_path / "sub" / "genes.parquet"
    genes = ["ENSG00000000003.5", "ENSG00000000001", "ENSG00000000999"]
    with caplog.at_level(logging.WARNING, logger=ge.__name__):
        built = ge.build_gene_embeddings(
            fasta_gz, out, model=tiny_esm, genes=genes, progress=False
        )
    assert "1 of 3 genes have no protein" in caplog.text and "ENSG00000000999" in caplog.text
    assert list(built.index) == ["ENSG00000000003", "ENSG00000000001"]  # order of genes
    assert built.index.name == "ensembl_id"
    assert built.attrs["missing"] == ["ENSG00000000999"]
    np.testing.assert_allclose(
        built.loc["ENSG00000000001"],
        _by_hand(model, alphabet, SEQUENCES[LONGEST["ENSG00000000001"]]),
        atol=1e-5,
    )
    assert out.exists() and not list(out.parent.glob("*.tmp"))

    loaded = ge.load_gene_embeddings(out)
    pd.testing.assert_frame_equal(loaded, built, check_like=False)
    assert loaded.attrs["layer"] == 2 and "missing" not in loaded.attrs

    with caplog.at_level(logging.WARNING, logger=ge.__name__):
        subset = ge.load_gene_embeddings(out, genes=["ENSG00000000001.2", "ENSG00000000004"])
    assert list(subset.index) == ["ENSG00000000001", "ENSG00000000004"]
    assert subset.attrs["missing"] == ["ENSG00000000004"]
    found = subset.notna().all(axis=1)
    assert found.tolist() == [True, False]
    assert subset.loc["ENSG00000000004"].isna().all()

    # canonical transcripts through the pipeline
    canon = ge.build_gene_embeddings(
        fasta_gz, None, model=tiny_esm, canonical_transcripts=["ENST00000000013"], progress=False
    )
    assert list(canon.index) == sorted(ISOFORMS)
    np.testing.assert_allclose(
        canon.loc["ENSG00000000001"],
        _by_hand(model, alphabet, SEQUENCES["ENSP00000000013"]),
        atol=1e-5,
    )


def test_load_gene_embeddings_validates(tmp_path):
    good = pd.DataFrame(np.ones((2, 3)), index=["ENSG1", "ENSG2"], columns=["0", "1", "2"])
    path = tmp_path / "e.parquet"
    bad = good.copy()
    bad.index = ["ENSG1", "ENSG1"]
    bad.to_parquet(path)
    with pytest.raises(ValueError, match="duplicated gene ids"):
        ge.load_gene_embeddings(path)
    bad = good.copy()
    bad["2"] = ["x", "y"]
    bad.to_parquet(path)
    with pytest.raises(ValueError, match="not numeric"):
        ge.load_gene_embeddings(path)
    bad = good.copy()
    bad.iloc[1, 1] = np.nan
    bad.to_parquet(path)
    with pytest.raises(ValueError, match="1 genes have NaN values: ENSG2"):
        ge.load_gene_embeddings(path)
    good.to_parquet(path)
    loaded = ge.load_gene_embeddings(path)
    assert list(loaded.columns) == [0, 1, 2] and loaded.dtypes.eq(np.float32).all()


# --------------------------------------------------------------------------- command line


def _save_checkpoint(model, path) -> None:
    """Save the tiny model the way fair-esm's ESM2 checkpoints are laid out."""
    cfg = Namespace(
        encoder_layers=model.num_layers,
        encoder_embed_dim=model.embed_dim,
        encoder_attention_heads=model.attention_heads,
        token_dropout=model.token_dropout,
    )
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()}
    torch.save({"cfg": {"model": cfg}, "model": state}, path)


def test_cli_writes_parquet(fasta, tiny_esm, tmp_path, capsys):
    model, alphabet = tiny_esm
    checkpoint = tmp_path / "esm2_tiny_test.pt"
    _save_checkpoint(model, checkpoint)
    genes = tmp_path / "genes.txt"
    genes.write_text("# wanted genes\nENSG00000000002\tGENEB\nENSG00000000004\n")
    canonical = tmp_path / "canonical.txt"
    canonical.write_text("ENST00000000022.2\n")
    out = tmp_path / "out.parquet"
    args = ["--fasta", str(fasta), "--out", str(out), "--model", str(checkpoint)]
    args += ["--genes", str(genes), "--canonical", str(canonical), "--device", "cpu"]
    assert ge.main([*args, "--no-progress", "-q"]) == 0
    assert "wrote" in capsys.readouterr().out
    table = ge.load_gene_embeddings(out)
    assert list(table.index) == ["ENSG00000000002", "ENSG00000000004"]
    assert table.attrs["model"] == "esm2_tiny_test"
    np.testing.assert_allclose(
        table.loc["ENSG00000000002"],
        _by_hand(model, alphabet, SEQUENCES["ENSP00000000022"]),
        atol=1e-5,
    )

    bad = tmp_path / "uniprot.fa"
    bad.write_text(">sp|P04637|P53_HUMAN Cellular tumor antigen p53\nMEEPQ\n")
    assert ge.main(["--fasta", str(bad), "--out", str(out), "-q"]) == 2
    assert "no 'gene:' field" in capsys.readouterr().err


# --------------------------------------------------------------------------- from expression


def _two_states(n_cells: int, genes: list[str], markers: tuple[list[int], list[int]], seed=0):
    """Counts of two cell states: state 0 expresses the genes at ``markers[0]`` highly,
    state 1 those at ``markers[1]``; every gene has a background of Poisson(2)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    state = np.arange(n_cells) % 2
    rate = np.full((n_cells, len(genes)), 2.0)
    for s, cols in enumerate(markers):
        rate[np.ix_(state == s, cols)] = 40.0
    counts = rng.poisson(rate).astype(np.float32)
    return ad.AnnData(counts, var=pd.DataFrame(index=genes)), state


def _ens(i: int) -> str:
    return f"ENSG{i:011d}"


def test_expression_table_places_co_expressed_genes_together():
    genes = [_ens(i) for i in range(30)]
    adata, _ = _two_states(60, genes, ([0, 1, 2, 3], [10, 11, 12, 13]))
    before = adata.X.copy()
    table = ge.expression_gene_embeddings(adata, n_components=4, n_identity=3)
    assert list(table.index) == sorted(genes) and table.index.name == "ensembl_id"
    assert table.shape == (30, 4 + 1 + 3) and table.dtypes.eq(np.float32).all()
    np.testing.assert_array_equal(adata.X, before)  # the input is left alone
    pc1 = table[0].to_numpy()
    # the first component separates the two marker sets, with the background near 0
    a, b, rest = (
        pc1[[0, 1, 2, 3]],
        pc1[[10, 11, 12, 13]],
        np.delete(pc1, [0, 1, 2, 3, 10, 11, 12, 13]),
    )
    assert np.ptp(np.sign(a)) == 0 and np.ptp(np.sign(b)) == 0 and np.sign(a[0]) != np.sign(b[0])
    assert np.abs(rest).max() < 0.35 * min(np.abs(a).min(), np.abs(b).min())
    # the expression part has unit scale, the identity part is distinct per gene
    assert table.iloc[:, :5].to_numpy().std() == pytest.approx(1.0, rel=1e-4)
    identity = table.iloc[:, 5:].to_numpy()
    assert len({tuple(r) for r in identity.round(6)}) == 30
    again = ge.expression_gene_embeddings(adata, n_components=4, n_identity=3)
    pd.testing.assert_frame_equal(table, again)
    assert table.attrs["method"] == "expression principal components"


def test_expression_table_centres_and_balances_data_sets():
    # B: 400 cells of genes 0-19 in two states (genes 0-3 vs 5-8); A: 20 cells of genes
    # 10-29 at a much higher level, 10 of them high on genes 20-22. Centred per data set,
    # no component follows A vs B on the shared genes 10-19; balanced, A's small state
    # still gets a component beside B's.
    import anndata as ad

    genes = [_ens(i) for i in range(30)]
    rng = np.random.default_rng(1)
    a = ad.AnnData(
        rng.poisson(30.0, (20, 20)).astype(np.float32), var=pd.DataFrame(index=genes[10:])
    )
    a.X[:10, 10:13] += rng.poisson(300.0, (10, 3))  # genes 20-22
    b, _ = _two_states(400, genes[:20], ([0, 1, 2, 3], [5, 6, 7, 8]))
    table = ge.expression_gene_embeddings([a, b], n_components=2, n_identity=0)
    assert len(table) == 30  # the union of both data sets' genes
    leaders = [set(np.argsort(-np.abs(table[c].to_numpy()))[:3]) for c in (0, 1)]
    assert any(s <= set(range(10, 30)) and s & {20, 21, 22} for s in leaders), leaders
    assert any(s <= {0, 1, 2, 3, 5, 6, 7, 8} for s in leaders), leaders
    # a gene measured by A only has A's mean, not one diluted by B's cells
    mean = table[2].to_numpy()
    assert mean[25] > mean[15]  # gene 25: A only; gene 15: mostly B's lower level


def test_expression_table_rejects_bad_input():
    import anndata as ad

    from scdataloader.errors import CountsError

    genes = [_ens(i) for i in range(10)]
    adata, _ = _two_states(20, genes, ([0], [5]))
    symbols = adata.copy()
    symbols.var_names = [f"GENE{i}" for i in range(10)]
    with pytest.raises(ValueError, match="not Ensembl gene ids.*scdataloader.preprocess"):
        ge.expression_gene_embeddings(symbols)
    logged = adata.copy()
    logged.X = np.log1p(logged.X)
    with pytest.raises(CountsError):
        ge.expression_gene_embeddings(logged)
    with pytest.raises(ValueError, match="at least one AnnData"):
        ge.expression_gene_embeddings([])
    with pytest.raises(ValueError, match="no cells"):
        ge.expression_gene_embeddings(ad.AnnData(np.zeros((0, 10), np.float32), var=adata.var))
    with pytest.raises(ValueError, match="expressed in at least 50 cells"):
        ge.expression_gene_embeddings(adata, min_cells=50)


def test_cli_expression_table(tmp_path, capsys):
    genes = [_ens(i) for i in range(30)]
    adata, _ = _two_states(60, genes, ([0, 1, 2, 3], [10, 11, 12, 13]))
    path = tmp_path / "train.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "table.parquet"
    args = ["--counts", str(path), "--out", str(out), "--components", "4", "--identity", "2"]
    assert ge.main([*args, "-q"]) == 0
    assert "30 genes x 7 dimensions" in capsys.readouterr().out
    table = ge.load_gene_embeddings(out)
    assert table.shape == (30, 7) and table.attrs["n_components"] == 4
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not hdf5")
    assert ge.main(["--counts", str(broken), "--out", str(tmp_path / "x.parquet"), "-q"]) == 2
    assert "broken.h5ad: cannot be opened as an HDF5/h5ad file" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(SystemExit):  # --fasta and --counts are exclusive
        ge.main(["--counts", str(path), "--fasta", "x.fa", "--out", str(out)])
