"""The scPRINT paper's gene-network benchmarks on real data: McCalla hESC and OmniPath.

Run from the repository root::

    .venv/bin/python benchmarks/science/gene_networks.py

Two benchmarks (the paper's Results "scPRINT recovers biological features in its gene
networks" and "scPRINT outperforms GENIE3 and scGPT on cell type-specific ground truths";
Methods "Heads selection", "Normalization and network interpretation", "BenGRN and gene
network metrics"), each printing one Markdown table and appending JSON lines to
``benchmarks/results/science_gene_networks.jsonl``.

Model
    ``--ckpt`` (default: ``splits.science_checkpoint()``, the small model pretrained by
    ``benchmarks/science/pretrain.py`` on the real count data minus the held-out cells of
    ``benchmarks/science/splits.py``; when that file does not exist, the demo's debug model
    ``scprint.demo.pretrained()``, which was trained on all 1,000 retina cells, so its
    retina networks are not on unseen cells). Its path, sha256, preset and the summary of
    the ``provenance.json`` beside it are printed and stored.

Orientation and metrics
    Every network is a ``bengrn.GeneNetwork`` in the ``target_by_regulator`` orientation:
    row = target, column = regulator. ``scprint.tasks.get_gene_network`` returns the
    attention ``softmax(mean(Q) mean(K)^T)`` in that orientation (rows are queries, each
    row sums to 1), and so do GENIE3 (a forest per target, row = target) and the other
    baselines; ``bengrn.metrics.evaluate`` reads the truth the same way (``M[t, r]`` scores
    ``r -> t``). EPR (precision among the K best-scored candidate pairs, K = number of true
    candidate edges, over the prevalence; 1 = random) and AUPRC (trapezoidal, closed at the
    prevalence, no interpolation to recall 1) are bengrn's, as defined in the paper.
    Candidates are all ordered pairs of the genes the network and the truth share (no
    self-edges), restricted to the regulators stated below. Every method of a benchmark is
    scored on the same genes (its networks are relabelled to one gene index) and the same
    truth edges.

Held-out half of a truth (``scPRINT-self`` / ``scPRINT-omni 50%``)
    The truth's edges (self-edges dropped) are split at random (``--seed``) into two
    halves: the heads are selected on half A (``select_heads``: non-negative ridge on
    {-1, +1} labels, alpha 1, no intercept, balanced non-edges, its own 80/20 split) and
    every method is also scored on half B only, its scores of the half-A pairs set to 0
    (in the orientation being scored), so that the selection edges are neither rewarded
    nor counted against any method (they remain candidates that no method predicts: a
    random network's EPR on half B is ``n / (n - |A|)``, above 1 by |A| / n).

Benchmark 1, McCalla et al. hESC (``../shared/data/networks/mcalla_hesc``)
    * Cells: the 385 Chen et al. hESC cells. The file holds ``log2(x + 1)`` applied twice;
      the counts are recovered with ``scdataloader.recover_counts`` (checked identical to
      the exact inverse of ``benchmarks/genie3_mcalla.py``'s loader). Our model reads the
      counts; the peers get the same counts and normalise them as usual (each cell to
      1e4, ``log1p``) inside ``bengrn.baselines``.
    * Genes: the benchmark's TFs (``hESC_Chen_TFs.tsv``) and the truth's targets among
      the benchmark genes (``hESC_Chen_Genes.tsv``), both kept when they have a current
      Ensembl id (``scdataloader.genes.map_genes``, GENCODE v48; 7,880 of the 8,595): 2,042
      genes (the others can never be scored: the truth holds no edge on them). Our model
      sees those it can name (its vocabulary: all of them for the science model; the
      demo model, trained on the retina genes only, lacks CAST), in the benchmark's order,
      in one sequence per cell (``max_len`` = their number); a gene it cannot name gets a
      zero row and column (no prediction), so that every method has the same genes.
    * Truth: ``hESC_ground_truth.tsv`` (``bengrn.truths.mcalla``) restricted to these
      genes. Regulators: the truth is TF -> target and only its own TFs were assayed
      (ChIP-seq and knock-down), so the candidate pairs are those whose regulator
      (column) is one of the truth's TFs among the genes (17; the
      targets, rows, are any gene): bengrn's ``regulators=`` that list, the paper's
      TF-only mode. The last column pair takes every benchmark TF (219) as a candidate
      regulator instead, most of them with no assayed edge (prevalence 0.5%). Not
      transposed (the paper: this truth has highly connected regulators, which fits
      row = target).
    * Methods: ``scPRINT-mean`` (all heads), ``scPRINT-self`` (heads selected on half A,
      ``--seed``), ``scPRINT-omni`` (heads selected on OmniPath's transcriptional edges
      among the genes, ``heads="omni"``), GENIE3 (every gene a regulator), GENIE3-TF (the
      expressed benchmark TFs), GRNBoost2 (``rustscenic``, arboreto's defaults, the TFs as
      regulators as SCENIC uses it), correlation (absolute Pearson and Spearman), random
      (mean of 3 seeds). GENIE3 and GENIE3-TF: ``--trees`` (100, as
      ``benchmarks/genie3_mcalla.py``) per forest, ``max_features="sqrt"``.
    * The science model was pretrained on these cells without labels (``splits.py``: no
      McCalla cell is held out): this is self-supervised fine-tuning on the benchmark's
      own cells, like GENIE3, which fits them.

Benchmark 2, OmniPath on the retina cell types (``scdataloader.datasets.fetch("retina")``)
    * Cells: the held-out cells of ``splits.held_out("retina", obs)`` (half of each cell
      type, the split's seed 0, never ``--seed``: the pretraining used it) of each cell
      type with at least ``--min-cells`` (40) of them (rods 159, amacrine 72, cones 52,
      Mueller 50, rod bipolar 47), or the ``--cell-types`` named.
    * Genes: per cell type, the ``--n-genes`` (1,000) most variable genes of its held-out
      cells (``scprint.tasks.network.highly_variable_genes``: Seurat dispersion on
      log-normalised counts) among the genes with an Ensembl id that OmniPath names (by
      the data's symbol; all in both models' vocabularies): ``bengrn`` scores only the
      genes a network shares with its truth, so the others would only dilute the context
      and cost time. The paper uses
      the 5,000 most variable genes and 1,024 cells per type; 1,000 genes keep GENIE3 (a
      forest of 100 trees per gene over 1,000 regulators, a few minutes per cell type on
      one CPU core) within the time budget and still leave 290-1,260 OmniPath edges per
      cell type.
    * Truth: OmniPath's transcriptional edges (``bengrn.truths.omnipath``, the paper's
      filters), scored with every gene as a possible regulator, both as given and
      transposed (``evaluate(..., transpose=True)``: the paper's argument that attention,
      and row-normalised networks generally, point target -> regulator against a truth
      whose sources have few targets); the same for every method. "TF->gene": the
      candidates restricted to TF regulators (the Lambert list), the paper's "GRN
      version" of every network, which GENIE3-TF and GRNBoost2 are by construction.
    * Methods: as above, with ``scPRINT-omni 50%`` in place of the self/omni pair: the
      heads are selected on half A of OmniPath (transposed, the orientation the paper
      scores) on one cell type, the one with the most half-A edges among its genes, and
      reused for every other cell type, as the paper does ("using 50% of the ground truth
      on the first cell type ... reusing the same combination of heads across all other
      cell types"); selecting on all of OmniPath and scoring on it would be circular.
      Columns "half B" score every method on the other half.
    * Biological features (the paper's Figure 2): the genes are ranked by their regulator
      hub centrality (column sums, ``bengrn.enrichment``) and tested for TF enrichment
      (GSEA prerank against the Lambert TF list, ``--permutations``): NES and nominal p;
      and, for each ENCODE TF in the network with at least 10 of its ChIP-seq targets,
      whether its outgoing edges rank those targets first
      (``bengrn.enrichment.encode_enrichment``): the share of such TFs significantly
      enriched (BH FDR < 0.05, NES > 0), over the tested TFs (their number is given).
      The random rows use the first seed.
    * The table gives the mean over cell types; a second table the per-type EPR.

Options: ``--benchmarks``, ``--methods``, ``--cell-types``, ``--n-genes``, ``--min-cells``,
``--trees``, ``--permutations``, ``--no-enrichment``, ``--threads`` (torch threads, forests
fitted at once, GRNBoost2's thread pool; default 1), ``--seed``, ``--batch-size``,
``--out``, ``--cache`` (a folder keeping the peers' networks, keyed by a hash of the
method, settings, cells, counts and genes: a second run, e.g. with another checkpoint,
reloads them with the time measured when they were computed; default none). Each method's
inference is timed (wall seconds, this process; scoring and enrichment are not included).

Run time at the defaults (one thread): GENIE3 and GENIE3-TF are 90% of it, about 16
minutes for McCalla and 27 for the five retina cell types on a 2-core machine at load
5-7 (about 50 minutes in all), about a third of that unloaded; the science model's three
McCalla passes take about a minute each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import load_file_module as _load_file_module  # noqa: E402
from common import package_version as _version  # noqa: E402
from common import sha256  # noqa: E402

DATA = REPO.parent / "shared" / "data"
DEFAULT_MCALLA = DATA / "networks" / "mcalla_hesc"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "science_gene_networks.jsonl"
BENCHMARKS = ("mcalla", "omnipath")
METHODS = (
    "scprint-mean",
    "scprint-self",
    "scprint-omni",
    "genie3",
    "genie3-tf",
    "grnboost2",
    "correlation",
    "random",
)
LABELS = {
    "scprint-mean": "scPRINT-mean",
    "scprint-self": "scPRINT-self (50%)",
    "scprint-omni": "scPRINT-omni",
    "scprint-omni-half": "scPRINT-omni (50%)",
    "genie3": "GENIE3",
    "genie3-tf": "GENIE3-TF",
    "grnboost2": "GRNBoost2 (TFs)",
    "correlation-pearson": "correlation (abs. Pearson)",
    "correlation-spearman": "correlation (abs. Spearman)",
    "random": "random",
}
RANDOM_SEEDS = 3
CELL_TYPE = "cell_type"

__all__ = [
    "checkpoint_provenance",
    "main",
    "masked",
    "pair_positions",
    "score",
    "split_edges",
]


# --------------------------------------------------------------------------- the model


def checkpoint_provenance(path: Path) -> dict:
    """Path, sha256, preset and training state of a checkpoint, with the summary of the
    ``provenance.json`` beside it (its scalar fields, and the keys of the others)."""
    import torch

    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    hp = dict(state.get("hyper_parameters") or {})
    info = {
        "path": str(path),
        "sha256": sha256(path),
        "size_mb": round(path.stat().st_size / 2**20, 1),
        "preset": hp.get("preset"),
        "vocabulary": len(hp.get("genes") or []),
        "global_step": int(state.get("global_step", -1)),
        "epoch": int(state.get("epoch", -1)),
    }
    meta = path.parent / "provenance.json"
    if meta.exists():
        prov = json.loads(meta.read_text())
        info["provenance"] = {
            k: v for k, v in prov.items() if isinstance(v, str | int | float | bool) or v is None
        }
        info["provenance_other_keys"] = sorted(k for k in prov if k not in info["provenance"])
    return info


def resolve_checkpoint(ckpt: str | None) -> tuple[Path, str]:
    """The checkpoint to use and a note on where it comes from."""
    if ckpt is not None:
        path = Path(ckpt)
        if not path.exists():
            raise FileNotFoundError(f"--ckpt {path}: no such file; give an scPRINT checkpoint.")
        return path, "given with --ckpt"
    splits = _load_file_module("_science_splits", HERE / "splits.py")
    path = splits.science_checkpoint()
    if path.exists():
        return path, "the science model (splits.science_checkpoint())"
    from scprint.demo import pretrained

    print(f"note: the science checkpoint {path} does not exist (yet): using the demo's debug "
          "model scprint.demo.pretrained(), trained on all 1,000 retina cells (the retina "
          "networks are then not on unseen cells)", flush=True)  # fmt: skip
    return pretrained(), "the demo's debug model (scprint.demo.pretrained()): no science model"


def mapped(names) -> np.ndarray:
    """Boolean mask of the gene names (symbols or Ensembl ids) with a current Ensembl id
    (``scdataloader.genes.map_genes``, GENCODE v48): the genes a model can be given."""
    from scdataloader.genes import map_genes

    ids = map_genes(np.asarray(names).astype(str), "human").ids
    return np.array([i is not None for i in ids])


def nameable(names, model) -> np.ndarray:
    """Boolean mask of the gene names (symbols or Ensembl ids) the model can name."""
    from scdataloader.genes import map_genes

    vocab = set(map(str, model.genes))
    ids = map_genes(np.asarray(names).astype(str), "human").ids
    return np.array([i is not None and str(i) in vocab for i in ids])


# --------------------------------------------------------------------------- scoring


def relabel(net, var: pd.DataFrame, name: str, seconds: float | None = None):
    """``net`` (any orientation) as a dense target_by_regulator network over ``var``'s
    genes, which must be its genes in the same order (checked by count)."""
    from bengrn import GeneNetwork

    tbr = net.as_target_by_regulator()
    m = tbr.matrix
    m = m.toarray() if hasattr(m, "toarray") else np.asarray(m)
    if m.shape != (len(var), len(var)):
        raise ValueError(f"{name}: a {m.shape} network for {len(var)} genes.")
    params = dict(net.params)
    if seconds is not None:
        params["seconds"] = seconds
    return GeneNetwork(np.asarray(m, dtype=np.float32), var=var, method=name, params=params)


def split_edges(edges: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Self-edges dropped, duplicates merged, the edges split at random into two halves
    (``regulator``, ``target`` columns; the first half gets the extra edge)."""
    e = edges[["regulator", "target"]].astype(str)
    e = e[e["regulator"] != e["target"]].drop_duplicates().reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(e))
    half = (len(e) + 1) // 2
    return e.iloc[np.sort(order[:half])], e.iloc[np.sort(order[half:])]


def pair_positions(var: pd.DataFrame, edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(target, regulator) positions in ``var`` of the edges whose two genes it names, by
    its index or, failing that, its ``symbol`` column (as ``bengrn.metrics`` aligns)."""
    where: dict[str, int] = {}
    if "symbol" in var.columns:
        for i, s in enumerate(var["symbol"].astype(str)):
            where.setdefault(s, i)
    for i, g in enumerate(var.index.astype(str)):
        where[g] = i
    t = np.array([where.get(x, -1) for x in edges["target"].astype(str)], dtype=np.int64)
    r = np.array([where.get(x, -1) for x in edges["regulator"].astype(str)], dtype=np.int64)
    ok = (t >= 0) & (r >= 0) & (t != r)
    return t[ok], r[ok]


def masked(net, pairs: tuple[np.ndarray, np.ndarray], transpose: bool = False):
    """``net`` with the scores of the edges ``pairs`` (target, regulator positions) set to
    0, in the orientation scored: ``M[t, r]``, or ``M[r, t]`` when the network is scored
    transposed. A zero score is not a prediction in bengrn."""
    from bengrn import GeneNetwork

    m = np.array(net.as_target_by_regulator().matrix, dtype=np.float32, copy=True)
    t, r = pairs
    if transpose:
        m[r, t] = 0
    else:
        m[t, r] = 0
    return GeneNetwork(m, var=net.var, method=net.method, params=net.params)


def score(net, truth, *, transpose: bool = False, regulators=None) -> dict:
    """EPR, AUPRC and the candidate counts of ``net`` against ``truth`` (bengrn)."""
    from bengrn.metrics import evaluate

    try:
        s = evaluate(net, truth, transpose=transpose, regulators=regulators)
    except ValueError as err:  # a truth half with no edge among these genes
        if "no edge" not in str(err) and "no true edge" not in str(err):
            raise
        nan = float("nan")
        return {"epr": nan, "auprc": nan, "prevalence": 0.0, "n_true_edges": 0,
                "n_candidates": 0}  # fmt: skip
    return {
        "epr": float(s.epr),
        "auprc": float(s.auprc),
        "prevalence": float(s.prevalence),
        "n_true_edges": int(s.n_true_edges),
        "n_candidates": int(s.n_candidates),
    }


def _mean_dicts(dicts: list[dict]) -> dict:
    out = {}
    for k in dicts[0]:
        vals = [d[k] for d in dicts]
        if all(isinstance(v, int) and v == vals[0] for v in vals):
            out[k] = vals[0]
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            out[k] = float(np.mean(vals))
        else:
            out[k] = vals[0]
    return out


# --------------------------------------------------------------------------- methods


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cache_path(args, adata, genes: list[str], name: str) -> Path | None:
    """Where ``--cache`` keeps a peer's network: a hash of the method, its settings, the
    cells (names and counts) and the genes, so that only an identical run reuses it."""
    if not args.cache:
        return None
    X = adata[:, genes].X
    data = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    h = hashlib.sha256()
    h.update(json.dumps([name, args.trees, args.seed, list(map(str, genes)),
                         list(map(str, adata.obs_names))]).encode())  # fmt: skip
    h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{h.hexdigest()[:20]}.npy"


def infer_peers(adata, genes: list[str], tfs: list[str], methods, args) -> dict:
    """The peers' networks over ``genes`` (data names) of ``adata`` (counts): name ->
    (network, seconds); random: one network per seed. With ``--cache`` a network computed
    before on the same cells, genes and settings is loaded with its measured time."""
    from bengrn import GeneNetwork
    from bengrn.baselines import correlation, genie3, genie3_tf, grnboost2, random_network

    common = {"n_trees": args.trees, "n_jobs": args.threads, "seed": args.seed}
    out: dict = {}
    sub = adata[:, genes]
    X = sub.X
    expressed = np.asarray((X != 0).sum(axis=0)).ravel() > 0
    names = pd.Index(genes)
    symbols = sub.var["symbol"].astype(str) if "symbol" in sub.var else pd.Series(names, names)
    tf_set = set(tfs)
    is_tf = names.isin(tf_set) | symbols.isin(tf_set).to_numpy()
    tf_expr = list(names[is_tf & expressed])
    plans = []
    if "genie3" in methods:
        plans.append(("genie3", lambda: genie3(adata, genes=genes, progress=False, **common)))
    if "genie3-tf" in methods:
        plans.append(
            ("genie3-tf", lambda: genie3_tf(adata, genes=genes, tfs=tf_expr, progress=False,
                                            **common))
        )  # fmt: skip
    if "grnboost2" in methods:
        plans.append(
            ("grnboost2", lambda: grnboost2(adata, genes=genes, regulators=tf_expr,
                                            n_jobs=args.threads, seed=args.seed))
        )  # fmt: skip
    if "correlation" in methods:
        for how in ("pearson", "spearman"):
            plans.append(
                (f"correlation-{how}",
                 lambda how=how: correlation(adata, genes=genes, method=how))
            )  # fmt: skip
    for name, make in plans:
        print(f"  {LABELS[name]} ...", flush=True)
        cached = _cache_path(args, adata, genes, name)
        if cached is not None and cached.with_suffix(".json").exists():
            meta = json.loads(cached.with_suffix(".json").read_text())
            params = {**meta["params"], "cached_measured": meta["time"]}
            net = GeneNetwork(np.load(cached), genes=genes, method=name, params=params)
            out[name] = (net, meta["seconds"])
            print(f"    {meta['seconds']:.1f} s (measured {meta['time']}; loaded {cached})",
                  flush=True)  # fmt: skip
            continue
        out[name] = _timed(make)
        print(f"    {out[name][1]:.1f} s", flush=True)
        if cached is not None:
            net, sec = out[name]
            m = net.as_target_by_regulator().matrix
            np.save(cached, np.asarray(m.toarray() if hasattr(m, "toarray") else m, np.float32))
            meta = {"seconds": sec, "params": net.params, "time": _now(), "genes": len(genes)}
            cached.with_suffix(".json").write_text(json.dumps(meta, default=str))
    if "random" in methods:
        nets = []
        t0 = time.perf_counter()
        for s in range(args.seed, args.seed + RANDOM_SEEDS):
            nets.append(random_network(adata, genes=genes, seed=s))
        out["random"] = (nets, (time.perf_counter() - t0) / RANDOM_SEEDS)
    return out


def _scprint(adata, model, genes: list[str], heads, truth, args):
    """``get_gene_network`` over the genes the model can name, in ``genes``' order, as a
    network over all ``genes``: a gene outside the model's vocabulary gets a zero row and
    column (no prediction). ``truth``: a (G, G) matrix over ``genes``."""
    from bengrn import GeneNetwork
    from scprint.tasks import get_gene_network

    ok = nameable(genes, model)
    inside = [g for g, k in zip(genes, ok, strict=True) if k]
    if truth is not None:
        truth = truth[np.ix_(ok, ok)]

    def run():
        return get_gene_network(
            adata, model, genes=inside, max_len=len(inside), heads=heads, truth=truth,
            batch_size=args.batch_size, seed=args.seed, progress=False,
        )  # fmt: skip

    net, sec = _timed(run)
    if ok.all():
        return net, sec
    full = np.zeros((len(genes), len(genes)), dtype=np.float32)
    full[np.ix_(ok, ok)] = np.asarray(net.as_target_by_regulator().matrix)
    lacking = [g for g, k in zip(genes, ok, strict=True) if not k]
    params = {**net.params, "genes_not_in_vocabulary": lacking}
    return GeneNetwork(full, genes=genes, method=net.method, params=params), sec


def _bool_matrix(var: pd.DataFrame, edges: pd.DataFrame, transpose: bool = False) -> np.ndarray:
    """A (G, G) bool truth over ``var``'s genes, rows targets (or regulators if
    ``transpose``)."""
    t, r = pair_positions(var, edges)
    m = np.zeros((len(var), len(var)), dtype=bool)
    if transpose:
        m[r, t] = True
    else:
        m[t, r] = True
    return m


# --------------------------------------------------------------------------- McCalla


def run_mcalla(args, model, tfs_all: list[str]) -> tuple[list[dict], dict]:
    """Benchmark 1: every method on the McCalla hESC cells, scored on its truth."""
    import anndata as ad

    from bengrn import GeneNetwork
    from bengrn.truths import mcalla
    from scdataloader import recover_counts

    g3 = _load_file_module("_genie3_mcalla", REPO / "benchmarks" / "genie3_mcalla.py")
    folder = Path(args.mcalla_dir)
    if not (folder / "chen_rna_filtered_log2.tsv.gz").exists():
        raise FileNotFoundError(
            f"McCalla hESC data not found in {folder}: pass --mcalla-dir (the folder with "
            "chen_rna_filtered_log2.tsv.gz, hESC_Chen_Genes.tsv, hESC_Chen_TFs.tsv and "
            "hESC_ground_truth.tsv)."
        )
    ref, tfs, truth_df, data_info = g3.load(folder)  # exact counts, TFs, truth (no self)
    log2 = pd.read_csv(folder / "chen_rna_filtered_log2.tsv.gz", sep="\t", index_col=0)
    log2 = log2.loc[ref.var_names]
    counts = recover_counts(log2.to_numpy(np.float64).T)
    same = bool(np.array_equal(counts.toarray(), np.asarray(ref.X)))
    if not same:
        raise RuntimeError("scdataloader.recover_counts disagrees with the exact inverse.")
    adata = ad.AnnData(counts, obs=ref.obs.copy(), var=ref.var.copy())
    names = adata.var_names.astype(str)
    ok = mapped(names)
    named = set(names[ok])
    inside = truth_df[truth_df["regulator"].isin(named) & truth_df["target"].isin(named)]
    tf_named = [t for t in tfs if t in named]
    keep = set(tf_named) | set(inside["target"])
    genes = [g for g in names if g in keep]
    var = pd.DataFrame(index=pd.Index(genes))
    truth = mcalla(folder, restrict_to=genes)
    truth_regs = sorted(set(truth.edges(self_edges=False)["regulator"]))
    half_a, half_b = split_edges(truth.edges()[["regulator", "target"]], args.seed)
    truth_b = GeneNetwork.from_edges(half_b, weight=None, genes=genes, method="half B")
    pairs_a = pair_positions(var, half_a)
    info = {
        **data_info,
        "recover_counts_exact": same,
        "genes_mapped": int(ok.sum()),
        "genes_scored": len(genes),
        "genes_not_in_model": [str(g) for g in np.asarray(genes)[~nameable(genes, model)]],
        "tfs_scored": len(tf_named),
        "truth_edges_in_genes": len(half_a) + len(half_b),
        "truth_regulators": truth_regs,
        "half_a_edges": len(half_a),
        "half_b_edges": len(half_b),
    }
    print(f"McCalla hESC: {adata.n_obs} cells; {info['genes_mapped']:,} of "
          f"{adata.n_vars:,} benchmark genes with an Ensembl id, of which the model cannot "
          f"name {info['genes_not_in_model']} (zero rows and columns); scored genes: "
          f"{len(tf_named)} TFs + truth targets = {len(genes):,}; truth "
          f"{info['truth_edges_in_genes']:,} edges over {len(truth_regs)} TFs "
          f"(halves {len(half_a):,} / {len(half_b):,}); recover_counts exact: {same}",
          flush=True)  # fmt: skip

    nets: dict = {}
    methods = set(args.methods)
    mat_a = _bool_matrix(var, half_a)
    for name, heads, t in (("scprint-mean", "mean", None), ("scprint-self", "self", mat_a),
                           ("scprint-omni", "omni", None)):  # fmt: skip
        if name in methods:
            print(f"  {LABELS[name]} ...", flush=True)
            net, sec = _scprint(adata, model, genes, heads, t, args)
            nets[name] = (relabel(net, var, name), sec)
            print(f"    {sec:.1f} s; heads {net.params['selected_heads']}", flush=True)
    for name, (net, sec) in infer_peers(adata, genes, tfs_all, methods, args).items():
        if name == "random":
            nets[name] = ([relabel(n, var, name) for n in net], sec)
        else:
            nets[name] = (relabel(net, var, name), sec)

    rows = []
    for name, (net, sec) in nets.items():
        group = net if isinstance(net, list) else [net]
        per = []
        for n in group:
            full = score(n, truth, regulators=truth_regs)
            half = score(masked(n, pairs_a), truth_b, regulators=truth_regs)
            all_tfs = score(n, truth, regulators=tf_named)
            per.append({
                **{f"full_{k}": v for k, v in full.items()},
                **{f"half_{k}": v for k, v in half.items()},
                **{f"alltfs_{k}": v for k, v in all_tfs.items()},
            })  # fmt: skip
        row = {"method": LABELS[name], "key": name, "seconds": sec, **_mean_dicts(per)}
        row["cached"] = bool(group[0].params.get("cached_measured"))
        if name.startswith("scprint"):
            row["heads"] = net.params.get("selected_heads")
        if name == "random":
            row["seeds"] = list(range(args.seed, args.seed + RANDOM_SEEDS))
        rows.append(row)
    return rows, info


def print_mcalla(rows: list[dict]) -> None:
    head = ["method", "EPR", "AUPRC", "EPR (half B)", "AUPRC (half B)", "EPR (all TFs)",
            "AUPRC (all TFs)", "inference (s)"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cols = [r["method"], f"{r['full_epr']:.3f}", f"{r['full_auprc']:.4f}",
                f"{r['half_epr']:.3f}", f"{r['half_auprc']:.4f}", f"{r['alltfs_epr']:.3f}",
                f"{r['alltfs_auprc']:.4f}",
                f"{r['seconds']:.1f}" + (" (cached)" if r.get("cached") else "")]  # fmt: skip
        print("| " + " | ".join(cols) + " |")
    r0 = rows[0]
    print(f"\ncandidates: {r0['full_n_candidates']:,} pairs (the truth's TFs as regulators), "
          f"{r0['full_n_true_edges']:,} true (prevalence {r0['full_prevalence']:.4f}); half B "
          f"{r0['half_n_true_edges']:,} true (prevalence {r0['half_prevalence']:.4f}); all "
          f"TFs: {r0['alltfs_n_candidates']:,} pairs, {r0['alltfs_n_true_edges']:,} true "
          f"(prevalence {r0['alltfs_prevalence']:.4f})")  # fmt: skip


# --------------------------------------------------------------------------- OmniPath


def _silent_tfs(net, encode: dict) -> set[str]:
    """ENCODE TFs (upper case) of ``encode`` in ``net`` whose outgoing scores are all 0
    (GENIE3-TF and GRNBoost2 give no edge from a TF not expressed in the cells)."""
    from bengrn.enrichment import gene_names

    m = np.asarray(net.as_target_by_regulator().matrix)
    off = m.copy()
    np.fill_diagonal(off, 0)
    silent = ~np.any(off != 0, axis=0)
    names = gene_names(net).str.upper().to_numpy()
    return {n for n, z in zip(names, silent, strict=True) if z} & {t.upper() for t in encode}


def _enrich(net, tfs, encode, args) -> dict:
    """TF enrichment of the regulator hubs and the ENCODE TF-target summary of ``net``.

    An ENCODE TF whose column is all 0 (no outgoing edge predicted) counts as tested and
    not enriched without a GSEA run: gseapy's Rust prerank panics on an all-zero ranking
    (its weighted running sum divides by 0). A floor of 1e-9 of the largest score on
    every other off-diagonal score keeps the sums defined where a gene set's genes all
    score 0 among nonzero scores; it changes no ranking."""
    from bengrn import GeneNetwork
    from bengrn.enrichment import encode_enrichment, encode_summary, enrichment

    silent = _silent_tfs(net, encode)
    m = np.array(net.as_target_by_regulator().matrix, dtype=np.float64, copy=True)
    top = float(np.abs(m).max()) or 1.0
    m += 1e-9 * top
    np.fill_diagonal(m, 0.0)
    floored = GeneNetwork(m, var=net.var, method=net.method)
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tab = enrichment(floored, tfs=tfs, markers={}, kinds=("regulator_hub",),
                             permutations=args.permutations, seed=args.seed).table  # fmt: skip
            out["tf_nes"] = float(tab["nes"].iloc[0]) if len(tab) else float("nan")
            out["tf_pval"] = float(tab["pval"].iloc[0]) if len(tab) else float("nan")
            kept = {k: v for k, v in encode.items() if k.upper() not in silent}
            df = encode_enrichment(floored, kept, permutations=args.permutations,
                                   seed=args.seed)  # fmt: skip
            # silent TFs that encode_enrichment would have tested (>= 10 targets here)
            names = set(floored.var["symbol"].str.upper()) if "symbol" in floored.var else set(
                floored.genes.str.upper())  # fmt: skip
            n_silent = sum(
                1 for k, v in encode.items() if k.upper() in silent
                and len({g.upper() for g in v} - {k.upper()} & names) >= 10
            )  # fmt: skip
            enc = encode_summary(df)
            enc["n_tfs_silent"] = n_silent
            enc["n_tfs"] = enc["n_tfs"] + n_silent
            enc["share_significant"] = (
                enc["n_significant"] / enc["n_tfs"] if enc["n_tfs"] else float("nan")
            )
            out.update({f"encode_{k}": v for k, v in enc.items()})
        except BaseException as err:  # gseapy's Rust panics derive from BaseException
            if type(err).__name__ != "PanicException":
                raise
            out["enrichment_error"] = f"gseapy panicked: {err}"
            print(f"    enrichment of {net.method} failed: {err}", flush=True)
    return out


def run_omnipath(args, model, tfs: list[str], encode: dict) -> tuple[list[dict], dict]:
    """Benchmark 2: per retina cell type (held-out cells), every method against OmniPath."""
    import anndata as ad

    from bengrn import GeneNetwork
    from bengrn.truths import omnipath
    from scdataloader.datasets import fetch
    from scprint.tasks.network import highly_variable_genes

    splits = _load_file_module("_science_splits", HERE / "splits.py")
    raw = ad.read_h5ad(fetch("retina"))
    held = splits.held_out("retina", raw.obs)
    labels = raw.obs[CELL_TYPE].astype(str).to_numpy()
    counts = pd.Series(labels[held]).value_counts()
    if args.cell_types:
        unknown = [c for c in args.cell_types if c not in counts.index]
        if unknown:
            raise ValueError(
                f"--cell-types {unknown}: no held-out retina cell of that type; held-out "
                f"cells per type: {counts.to_dict()}."
            )
        types = list(args.cell_types)
    else:
        types = [c for c, n in counts.items() if n >= args.min_cells]
    if not types:
        raise ValueError(f"no retina cell type has {args.min_cells} held-out cells: "
                         f"{counts.to_dict()}; lower --min-cells.")  # fmt: skip
    omni_path = DATA / "networks" / "omnipath.parquet"
    omni = omnipath(path=omni_path) if omni_path.exists() else omnipath()
    half_a, half_b = split_edges(omni.edges()[["regulator", "target"]], args.seed)
    omni_b = GeneNetwork.from_edges(half_b, weight=None, genes=omni.genes, method="half B")
    ok = mapped(raw.var_names)
    # genes with an Ensembl id that OmniPath names: only they can ever be scored
    in_omni = raw.var["symbol"].astype(str).isin(set(omni.genes.astype(str))).to_numpy()
    known = np.flatnonzero(ok & in_omni)
    info = {
        "held_out_cells": int(held.sum()),
        "held_out_per_type": {k: int(v) for k, v in counts.items()},
        "cell_types": types,
        "omnipath_edges": int(omni.matrix.nnz),
        "omnipath_genes": int(omni.n_genes),
        "half_a_edges": len(half_a),
        "half_b_edges": len(half_b),
        "genes_mapped": int(ok.sum()),
        "genes_mapped_in_omnipath": len(known),
        "genes_mapped_not_in_model": int((~nameable(raw.var_names[known], model)).sum()),
    }
    print(f"retina: {raw.n_obs:,} cells, {int(held.sum())} held out; cell types with >= "
          f"{args.min_cells} held-out cells: {', '.join(f'{t} ({counts[t]})' for t in types)}; "
          f"OmniPath {info['omnipath_edges']:,} edges (halves {len(half_a):,} / "
          f"{len(half_b):,}); {ok.sum():,} genes with an Ensembl id, {len(known):,} of them in "
          f"OmniPath ({info['genes_mapped_not_in_model']} not in the model's vocabulary)",
          flush=True)  # fmt: skip

    methods = set(args.methods)
    panels = {}
    for ct in types:
        cells = raw[held & (labels == ct)].copy()
        cols = highly_variable_genes(cells.X, args.n_genes, known)
        genes = list(cells.var_names[cols].astype(str))
        var = pd.DataFrame({"symbol": cells.var["symbol"].astype(str).to_numpy()[cols]},
                           index=pd.Index(genes))  # fmt: skip
        n_edges = len(pair_positions(var, omni.edges())[0])
        if n_edges == 0:
            print(f"{ct}: no OmniPath edge among its {len(genes)} genes: left out", flush=True)
            continue
        panels[ct] = (cells, genes, var, len(pair_positions(var, half_a)[0]), n_edges)
    info["omnipath_edges_per_type"] = {ct: p[4] for ct, p in panels.items()}
    # heads are selected once, on the cell type with the most half-A edges (the largest
    # type with the default genes), and reused for the others, as the paper does
    select_on = max(panels, key=lambda c: panels[c][3]) if panels else None
    if select_on is not None and panels[select_on][3] < 10:
        print(f"note: at most {panels[select_on][3]} half-A OmniPath edges among a cell "
              "type's genes, fewer than the 10 head selection needs: scPRINT-omni (50%) "
              "is left out (use more --n-genes)", flush=True)  # fmt: skip
        select_on = None
    order = ([select_on] if select_on else []) + [c for c in panels if c != select_on]
    selected_heads = None
    rows: list[dict] = []
    for ct in order:
        cells, genes, var, _, n_edges = panels[ct]
        print(f"{ct}: {cells.n_obs} cells, {len(genes):,} genes, {n_edges} OmniPath edges",
              flush=True)  # fmt: skip
        nets: dict = {}
        if "scprint-mean" in methods:
            print("  scPRINT-mean ...", flush=True)
            net, sec = _scprint(cells, model, genes, "mean", None, args)
            nets["scprint-mean"] = (relabel(net, var, "scprint-mean"), sec)
            print(f"    {sec:.1f} s", flush=True)
        if methods & {"scprint-omni", "scprint-self"} and select_on is not None:
            print("  scPRINT-omni (50%) ...", flush=True)
            if selected_heads is None:
                truth_a = _bool_matrix(var, half_a, transpose=True)
                net, sec = _scprint(cells, model, genes, "self", truth_a, args)
                selected_heads = [tuple(h) for h in net.params["selected_heads"]]
                info["heads_selected_on"] = ct
                info["heads"] = [list(h) for h in selected_heads]
                info["head_selection"] = net.params.get("head_selection")
            else:
                net, sec = _scprint(cells, model, genes, selected_heads, None, args)
            nets["scprint-omni-half"] = (relabel(net, var, "scprint-omni-half"), sec)
            print(f"    {sec:.1f} s; heads {[list(h) for h in selected_heads]}", flush=True)
        for name, (net, sec) in infer_peers(cells, genes, tfs, methods, args).items():
            if name == "random":
                nets[name] = ([relabel(n, var, name) for n in net], sec)
            else:
                nets[name] = (relabel(net, var, name), sec)
        pairs_a = pair_positions(var, half_a)
        for name, (net, sec) in nets.items():
            group = net if isinstance(net, list) else [net]
            t0 = time.perf_counter()
            per = []
            for n in group:
                rec = {}
                for tr, tag in ((False, ""), (True, "T_")):
                    rec.update({f"{tag}full_{k}": v
                                for k, v in score(n, omni, transpose=tr).items()})  # fmt: skip
                    rec.update({f"{tag}tfreg_{k}": v for k, v in
                                score(n, omni, transpose=tr, regulators=tfs).items()})  # fmt: skip
                    rec.update(
                        {
                            f"{tag}half_{k}": v
                            for k, v in score(masked(n, pairs_a, tr), omni_b, transpose=tr).items()
                        }
                    )
                per.append(rec)
            row = {
                "cell_type": ct,
                "n_cells": int(cells.n_obs),
                "n_genes": len(genes),
                "method": LABELS[name],
                "key": name,
                "seconds": sec,
                "cached": bool(group[0].params.get("cached_measured")),
                **_mean_dicts(per),
            }
            if not args.no_enrichment:
                row.update(_enrich(group[0], tfs, encode, args))
            row["score_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
    return rows, info


def summarise_omnipath(rows: list[dict]) -> list[dict]:
    """Mean over cell types per method (seconds: the sum)."""
    out = []
    for key in dict.fromkeys(r["key"] for r in rows):
        group = [r for r in rows if r["key"] == key]
        s = {"method": group[0]["method"], "key": key, "n_cell_types": len(group),
             "cached": any(g.get("cached") for g in group)}  # fmt: skip
        for k, v in group[0].items():
            if k in ("cell_type", "method", "key"):
                continue
            if isinstance(v, int | float) and not isinstance(v, bool):
                vals = np.array([g[k] for g in group], dtype=float)
                s[k] = float(vals.sum()) if k == "seconds" else float(np.nanmean(vals))
        out.append(s)
    return out


def _f(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def print_omnipath(summary: list[dict]) -> None:
    head = ["method", "EPR", "AUPRC", "EPR (T)", "AUPRC (T)", "EPR half B", "EPR half B (T)",
            "EPR TF->gene", "EPR TF->gene (T)", "TF-hub NES (p)", "ENCODE TFs enriched",
            "inference (s)"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in summary:
        nes = f"{_f(r.get('tf_nes'), '.2f')} ({_f(r.get('tf_pval'), '.3f')})"
        enc = (f"{_f(r.get('encode_share_significant'), '.2f')} of "
               f"{_f(r.get('encode_n_tfs'), '.1f')}") if "encode_n_tfs" in r else "-"  # fmt: skip
        cols = [r["method"], _f(r["full_epr"], ".3f"), _f(r["full_auprc"], ".5f"),
                _f(r["T_full_epr"], ".3f"), _f(r["T_full_auprc"], ".5f"),
                _f(r["half_epr"], ".3f"), _f(r["T_half_epr"], ".3f"), _f(r["tfreg_epr"], ".3f"),
                _f(r["T_tfreg_epr"], ".3f"), nes, enc,
                _f(r["seconds"], ".1f") + (" (cached)" if r.get("cached") else "")]  # fmt: skip
        print("| " + " | ".join(cols) + " |")


def print_per_type(rows: list[dict]) -> None:
    types = list(dict.fromkeys(r["cell_type"] for r in rows))
    print("| method | " + " | ".join(types) + " |")
    print("|" + "---|" * (len(types) + 1))
    for key in dict.fromkeys(r["key"] for r in rows):
        cells = []
        for t in types:
            r = next((x for x in rows if x["key"] == key and x["cell_type"] == t), None)
            cells.append("-" if r is None else f"{r['full_epr']:.2f} / {r['T_full_epr']:.2f}")
        name = next(x["method"] for x in rows if x["key"] == key)
        print(f"| {name} | " + " | ".join(cells) + " |")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The scPRINT paper's gene-network benchmarks (McCalla hESC, OmniPath).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ckpt", default=None, help="default: the science model, else demo")
    parser.add_argument("--seed", type=int, default=0, help="truth halves, forests, random")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trees", type=int, default=100, help="GENIE3 trees per forest")
    parser.add_argument("--n-genes", type=int, default=1000, help="retina: variable genes")
    parser.add_argument("--min-cells", type=int, default=40, help="retina: held-out cells")
    parser.add_argument("--cell-types", nargs="+", default=None, help="retina cell types")
    parser.add_argument("--permutations", type=int, default=1000, help="GSEA prerank")
    parser.add_argument("--no-enrichment", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8, help="cells per forward pass")
    parser.add_argument("--mcalla-dir", default=str(DEFAULT_MCALLA))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--cache", default=None, help="folder reusing the peers' networks")
    args = parser.parse_args(argv)
    for opt in ("threads", "trees", "n_genes", "min_cells", "permutations", "batch_size"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt.replace('_', '-')} must be at least 1")

    import torch

    import scprint
    from bengrn.truths import encode_targets, tf_list

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    tt = _load_file_module("_train_throughput", REPO / "benchmarks" / "train_throughput.py")
    t_start = time.perf_counter()
    machine = tt.machine_info()
    versions = {d: _version(d) for d in ("scprint-suite", "torch", "numpy", "scikit-learn",
                                         "rustscenic", "gseapy", "anndata", "scanpy")}  # fmt: skip
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_total_mb']} MB; "
          f"loadavg {machine['loadavg']}; threads {args.threads}; Python {machine['python']}",
          flush=True)  # fmt: skip
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    ckpt, origin = resolve_checkpoint(args.ckpt)
    prov = checkpoint_provenance(ckpt)
    prov["origin"] = origin
    print(f"checkpoint: {json.dumps(prov)}", flush=True)
    model = scprint.load(ckpt)
    tfs_file = DATA / "genes" / "tfs_human.txt"
    tfs = tf_list(path=tfs_file) if tfs_file.exists() else tf_list("human")
    enc_file = DATA / "networks" / "tfchip_data.json"
    encode = encode_targets(path=enc_file) if enc_file.exists() else encode_targets()

    common = {
        "benchmark": "science_gene_networks",
        "time": _now(),
        "seed": args.seed,
        "threads": args.threads,
        "trees": args.trees,
        "permutations": args.permutations,
        "checkpoint": prov,
        "machine": machine,
        "versions": versions,
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    records: list[dict] = []
    tables: list[str] = []
    if "mcalla" in args.benchmarks:
        rows, info = run_mcalla(args, model, tfs)
        print("\n### McCalla hESC (ground truth; TF regulators)\n")
        print_mcalla(rows)
        records += [{**common, "part": "mcalla", "data": info, **r} for r in rows]
        tables.append("mcalla")
    if "omnipath" in args.benchmarks:
        rows, info = run_omnipath(args, model, tfs, encode)
        summary = summarise_omnipath(rows)
        print(f"\n### OmniPath, retina held-out cells: mean over {len(info['cell_types'])} "
              f"cell types ({args.n_genes} genes each; T = transposed network)\n")  # fmt: skip
        print_omnipath(summary)
        print("\nEPR / EPR (T) per cell type:\n")
        print_per_type(rows)
        if "heads" in info:
            print(f"\nscPRINT-omni (50%) heads {info['heads']} selected on "
                  f"{info['heads_selected_on']}")  # fmt: skip
        extra = {"n_genes_requested": args.n_genes, "min_cells": args.min_cells}
        records += [{**common, **extra, "part": "omnipath", "data": info, **r} for r in rows]
        records += [{**common, **extra, "part": "omnipath_mean", "data": info, **r}
                    for r in summary]  # fmt: skip
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s; loadavg {tt._loadavg()}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as fh:
        for rec in records:
            fh.write(json.dumps({**rec, "total_s": round(total, 1)}, default=str) + "\n")
    print(f"results appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
