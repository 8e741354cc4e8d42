"""Calibration of ``scprint.tl.dge`` against the cell-level tests most analyses use.

Run from the repository root::

    .venv/bin/python benchmarks/dge.py --seeds 10 --threads 1

Data: :func:`scprint.tl.simulate_donor_counts` with its defaults (80 genes, two cell
types, 5 donors per condition, 20 cells per donor and cell type, donor effects with a
log-normal sd of 0.2, negative-binomial dispersion 0.2); in cell type ``A`` 12 genes are
planted at +-2 log2 fold change between the conditions, cell type ``B`` has none. One data
set per seed, the same for every method.

Methods, each testing ``disease`` against ``normal`` within each cell type:

* ours, ``pseudobulk``: ``scprint.tl.dge(method="pseudobulk")`` (DESeq2 on donor sums,
  pydeseq2);
* ours, ``lmm``: ``scprint.tl.dge(method="lmm")`` (``y ~ condition + (1 | donor)`` on
  log-normalised cells, statsmodels);
* the reference, cell-level tests that ignore donors: scanpy's ``rank_genes_groups``
  with ``method="wilcoxon"`` and with ``method="t-test"`` on log1p(normalised to 1e4)
  cells, per cell type, Benjamini-Hochberg adjusted by scanpy. This is what most
  single-cell analyses run, and what pseudobulk is meant to replace.

Scores, over seeds (mean, min-max): recall = the share of planted genes with an
adjusted p-value below 0.05 (and the right sign); false calls = the share of null genes
(the 68 unplanted genes of ``A`` and the 80 of ``B``) with an adjusted p-value below
0.05. A calibrated method keeps false calls near or below 5% of the nulls' FDR budget;
wall seconds per data set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import REPO, _loadavg, machine_info  # noqa: E402

__all__ = ["main"]

DEFAULT_OUT = REPO / "benchmarks" / "results" / "dge.jsonl"
METHODS = ("pseudobulk", "lmm", "scanpy wilcoxon", "scanpy t-test")
ALPHA = 0.05


def _ours(adata, method: str):
    from scprint import tl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = tl.dge(adata, groupby="cell_type", condition="condition", reference="normal",
                       donor_key="donor", method=method, progress=False)  # fmt: skip
    return {
        ct: (sub.set_index("gene")["padj"], sub.set_index("gene")["log2fc"])
        for ct, sub in table.groupby("cell_type")
    }


def _scanpy(adata, method: str):
    import scanpy as sc

    out = {}
    for ct in ("A", "B"):
        sub = adata[adata.obs["cell_type"] == ct].copy()
        sc.pp.normalize_total(sub, target_sum=1e4)
        sc.pp.log1p(sub)
        sc.tl.rank_genes_groups(sub, "condition", groups=["disease"], reference="normal",
                                method=method, corr_method="benjamini-hochberg")  # fmt: skip
        res = sc.get.rank_genes_groups_df(sub, group="disease").set_index("names")
        out[ct] = (res["pvals_adj"], res["logfoldchanges"])
    return out


def score(results: dict, planted: dict[str, int], genes: list[str]) -> dict[str, float]:
    """Recall of the planted genes (right sign) and the share of null genes called."""
    padj_a, lfc_a = (s.reindex(genes) for s in results["A"])
    padj_b = results["B"][0].reindex(genes)
    hits = [g for g, sign in planted.items()
            if padj_a[g] < ALPHA and np.sign(lfc_a[g]) == sign]  # fmt: skip
    nulls = np.concatenate([padj_a.drop(index=list(planted)).to_numpy(), padj_b.to_numpy()])
    nulls = np.nan_to_num(nulls, nan=1.0)
    return {"recall": len(hits) / len(planted), "false_calls": float((nulls < ALPHA).mean())}


def run_method(method: str, adata):
    if method in ("pseudobulk", "lmm"):
        return _ours(adata, method)
    return _scanpy(adata, method.split()[1])


def _fmt_range(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="data sets (seeds 0..N-1)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from scprint.tl import simulate_donor_counts

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores; loadavg {info['loadavg']}")
    per: dict[str, dict[str, list[float]]] = {
        m: {"recall": [], "false_calls": [], "seconds": []} for m in args.methods
    }
    for seed in range(args.seeds):
        adata, planted = simulate_donor_counts(seed)
        genes = list(adata.var_names)
        for method in args.methods:
            t0 = time.perf_counter()
            results = run_method(method, adata)
            seconds = time.perf_counter() - t0
            s = score(results, planted, genes)
            for key, value in (*s.items(), ("seconds", seconds)):
                per[method][key].append(value)
        print(f"seed {seed}: " + ", ".join(
            f"{m} {per[m]['recall'][-1]:.2f}/{per[m]['false_calls'][-1]:.3f}"
            for m in args.methods), flush=True)  # fmt: skip

    print(f"\n{args.seeds} simulated data sets (seeds 0-{args.seeds - 1}); FDR {ALPHA}\n")
    print("| method | recall (planted genes) | false calls (null genes) | wall (s per data set) |")
    print("|---|---|---|---|")
    for m in args.methods:
        print(f"| {m} | {_fmt_range(per[m]['recall'])} | {_fmt_range(per[m]['false_calls'])} "
              f"| {np.median(per[m]['seconds']):.2f} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        for m in args.methods:
            fh.write(json.dumps({"benchmark": "dge", "method": m, "seeds": args.seeds,
                                 **{k: v for k, v in per[m].items()}, "machine": info,
                                 "loadavg_end": _loadavg()}) + "\n")  # fmt: skip
    print(f"\nrecords appended to {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
