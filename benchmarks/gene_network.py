"""Wall time and peak RSS of our ``get_gene_network`` beside the reference scPRINT's
``GNInfer``, at the same settings, in one invocation; and our peak memory at 1x and 16x
the cells.

Run from the repository root (after ``bash ../shared/tools/reference-scprint/setup.sh``,
which installs the reference, PyPI ``scprint`` 2.3.8, in ``~/.cache/ref-scprint-venv``)::

    .venv/bin/python benchmarks/gene_network.py --genes 2000 5000 --threads 1 \\
        --timeout 900

Options: ``--genes`` (network sizes, default 2000 5000), ``--repeat`` (cell multipliers for
our memory check at the first ``--genes``, default 1 16; ``--repeat 1`` skips it),
``--batch-size`` (cells per forward pass, default 16 on both sides), ``--reps`` (timed
calls, default 1), ``--threads`` (torch threads, default 1), ``--comp-attn`` (the
reference's mode, default 1, see below), ``--timeout`` (seconds per measurement, default
900; a reference that runs past it is reported as ``timeout``), ``--ref-python``,
``--harness``, ``--data``, ``--skip-reference``, ``--out`` (JSON lines, default
``benchmarks/results/gene_network.jsonl``).

Every measurement runs in a fresh subprocess: ours with this interpreter, the reference
through its harness (``perf_scprint_tasks.py --task grn`` of
``../shared/tools/reference-scprint/harness``) with the reference environment's
interpreter; ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads`` are
``--threads``. Both sides get the same inputs, prepared before timing:

* the 1,000-cell CELLxGENE retina file restricted to its 23,217 protein-coding genes (the
  harness's ``--vocab protein_coding``), and one cell type: the 318 rod cells
  (``CL:0000604``; the reference selects them by ``obs["cell_type"] == "retinal rod
  cell"``, ours by ``cell_type_ontology_term_id``);
* the ``small`` size, d_model 128, 4 layers, 2 heads, random weights, fp32, eval mode: the
  reference's ``scPrint`` built by the harness, ours an untrained
  ``ScPrintModule(genes, hierarchies, preset="small")`` over the same vocabulary with the
  same seven class columns (as ``benchmarks/inference.py``);
* ``G`` genes per network (``--genes``), every cell seeing the same ``G`` genes in one
  forward pass, ``--batch-size`` cells per pass.

What one timed call contains:

reference
    ``GNInfer(layer=None, how="most var within", num_genes=G, preprocess="softmax",
    head_agg="mean", comp_attn=bool(--comp-attn), batch_size, num_workers=0,
    dtype=float32, forward_mode="none")(model, adata, cell_type="retinal rod cell")``:
    the cell-type subset, ``scanpy`` seurat_v3 variable genes within it, its DataLoader +
    Collator, the forward passes recording attention of every layer (``layer=None`` is
    all 4 layers), then the network averaged over all layers x heads. With
    ``--comp-attn 1`` (default) GNInfer averages the queries and keys of each gene over
    the cells and takes ``softmax(mean Q mean K^T / sqrt(head_dim))`` per layer and head
    (``aggregate``), then the mean of the 8 matrices: the same computation as ours. With
    ``--comp-attn 0`` it instead averages the per-cell softmax attention matrices (a
    different estimator, the harness's default), and the harness averages the 8
    matrices it returns.
ours
    ``scprint.tasks.get_gene_network(adata, model, cell_type="CL:0000604", genes="hvg",
    n_genes=G, layers=None, heads="mean", max_len=G, batch_size, progress=False)``: the
    cell-type subset, our variable genes within it (Seurat dispersion flavour, not
    seurat_v3: the gene sets differ, their number does not), forward passes streaming
    the sums of Q and K over cells per layer / head / gene, the per-head softmax networks
    and their mean over all 4 layers x 2 heads (as the reference), a ``bengrn.GeneNetwork``.

Memory check (ours only): the same call on the retina cells repeated ``--repeat`` times in
memory (``anndata.concat``, unique obs names; 16x: 16,000 cells, 5,088 rods) at the first
``--genes``. Our queries and keys are summed over cells, so the memory the call adds
(peak - RSS before) should not grow with the cells; the RSS before includes the 16x data.

Peak RSS is the resident-set high-water mark during the timed calls, measured the same way
on both sides (the kernel's VmHWM, reset through ``/proc/self/clear_refs`` right before
each call, as the harness's ``PeakRSS``); it includes the imports, the model and the data.
"other cores" is the CPU other processes used during the call (near 0: undisturbed); read
the ratio of a pair measured one after the other, not absolute figures, on a shared
machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402
    CLASS_COLUMNS,
    DEFAULT_DATA,
    DEFAULT_REF_PYTHON,
    REPO,
    SHARED,
    _busy_s,
    _child_env,
    _loadavg,
    _own_cpu_s,
    _reset_hwm,
    _run,
    _status_mb,
    _tail,
    machine_info,
)

__all__ = ["main"]

DEFAULT_HARNESS = SHARED / "tools" / "reference-scprint" / "harness" / "perf_scprint_tasks.py"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gene_network.jsonl"
RESULT_TAG = "GENE-NETWORK-RESULT "
REF_IMPL = "reference scprint 2.3.8"
CELL_TYPE = "CL:0000604"
CELL_TYPE_NAME = "retinal rod cell"


# --------------------------------------------------------------------------- our side


def _inputs(path: Path, repeat: int):
    """The retina cells over the protein-coding vocabulary (repeated ``repeat`` times) and
    flat class label sets, as the reference harness prepares them."""
    import anndata as ad
    import numpy as np

    from scdataloader.ontology import LabelHierarchy

    adata = ad.read_h5ad(path)
    if adata.X.dtype != np.float32:
        adata.X = adata.X.astype(np.float32)
    if "biotype" in adata.var:
        genes = adata.var_names[(adata.var["biotype"] == "protein_coding").to_numpy()].tolist()
    else:
        genes = adata.var_names.tolist()
    adata = adata[:, genes].copy()
    hierarchies = {}
    for c in CLASS_COLUMNS:
        if c not in adata.obs:
            continue
        cats = sorted(adata.obs[c].astype(str).unique().tolist())
        cats += [f"other_{i}" for i in range(len(cats), 2)]
        hierarchies[c] = LabelHierarchy(key=c, leaves=tuple(cats))
    if repeat > 1:
        var = adata.var.copy()
        adata = ad.concat([adata] * repeat, index_unique="-")
        adata.var = var
    return adata, genes, hierarchies


def child_ours(args: argparse.Namespace) -> dict:
    """(subprocess) Time our task; return one result record."""
    import torch

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    from scprint.tasks import get_gene_network
    from scprint.train import ScPrintModule

    import_s = time.perf_counter() - t
    n_genes, repeat = args.genes[0], args.repeat[0]
    adata, genes, hierarchies = _inputs(args.data, repeat)
    n_cells = int((adata.obs["cell_type_ontology_term_id"].astype(str) == CELL_TYPE).sum())
    torch.manual_seed(0)
    model = ScPrintModule(genes, hierarchies, preset="small").eval()
    cfg = model.config
    opts = dict(cell_type=CELL_TYPE, cell_type_key="cell_type_ontology_term_id", genes="hvg",
                n_genes=n_genes, layers=None, heads="mean", max_len=max(n_genes, 2200),
                batch_size=args.batch_size, progress=False)  # fmt: skip

    # untimed warm-up forward (first calls pay one-off kernel / allocator set-up)
    with torch.no_grad():
        model.model(
            torch.randint(0, len(genes), (2, 512)),
            torch.poisson(torch.full((2, 512), 2.0)),
            torch.full((2,), 1024.0),
        )
    times, peaks, others, desc = [], [], [], {}
    gc.collect()
    rss_before = _status_mb("VmRSS")
    load_before = _loadavg()
    for _ in range(args.reps):
        gc.collect()
        method = "VmHWM" if _reset_hwm() else "ru_maxrss"
        busy0, own0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
        net = get_gene_network(adata, model, **opts)
        wall = time.perf_counter() - t0
        others.append(round(max(0.0, (_busy_s() - busy0 - (_own_cpu_s() - own0)) / wall), 2))
        times.append(wall)
        peaks.append(round(_status_mb("VmHWM"), 1))
        m = net.matrix if hasattr(net, "matrix") else None
        desc = {"shape": list(getattr(m, "shape", ())), "type": type(net).__name__}
        del net, m
    med = statistics.median(times)
    return {
        "impl": "ours",
        "n_genes": n_genes,
        "repeat": repeat,
        "n_obs": adata.n_obs,
        "n_cells": n_cells,
        "vocab": len(genes),
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "import_s": round(import_s, 2),
        "wall_s_all": [round(x, 3) for x in times],
        "wall_s_median": round(med, 3),
        "wall_s_min": round(min(times), 3),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": max(peaks),
        "added_rss_mb": round(max(peaks) - rss_before, 1),
        "peak_rss_method": method,
        "other_cores": others,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "output": desc,
    }


# --------------------------------------------------------------------------- runners


def run_ours(args, n_genes: int, repeat: int, tmp: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--genes", str(n_genes),
           "--repeat", str(repeat), "--batch-size", str(args.batch_size),
           "--reps", str(args.reps), "--threads", str(args.threads),
           "--data", str(args.data)]  # fmt: skip
    env = _child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    log = tmp / f"ours-{n_genes}-{repeat}.log"
    t0 = time.monotonic()
    code, maxrss = _run(cmd, REPO, env, args.timeout, log)
    base = {"impl": "ours", "n_genes": n_genes, "repeat": repeat}
    if time.monotonic() - t0 > args.timeout:
        return {**base, "status": "timeout", "error": f"killed after {args.timeout:.0f} s"}
    lines = [ln for ln in _tail(log, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        return {**base, "status": "failed", "error": _tail(log)[-1500:]}
    rec = json.loads(lines[-1][len(RESULT_TAG) :])
    rec.update(status="ok", process_peak_rss_mb=round(max(maxrss, rec["peak_rss_mb"]), 1))
    return rec


def run_reference(args, n_genes: int, tmp: Path) -> dict:
    out = tmp / f"ref-{n_genes}.jsonl"
    cmd = [str(args.ref_python), str(args.harness), "--data", str(args.data), "--out", str(out),
           "--workdir", str(tmp / "ref-work"), "--task", "grn", "--config", "small",
           "--vocab", "protein_coding", "--cell-type", CELL_TYPE_NAME,
           "--grn-how", "most var within", "--num-genes", str(n_genes),
           "--comp-attn", str(args.comp_attn), "--head-agg", "mean", "--layers", "all",
           "--batch-size", str(args.batch_size), "--reps", str(args.reps),
           "--threads", str(args.threads), "--label", "benchmarks/gene_network.py"]  # fmt: skip
    log = tmp / f"ref-{n_genes}.log"
    t0 = time.monotonic()
    code, maxrss = _run(cmd, tmp, _child_env(args.threads), args.timeout, log)
    base = {"impl": REF_IMPL, "n_genes": n_genes, "repeat": 1, "comp_attn": args.comp_attn}
    if time.monotonic() - t0 > args.timeout:
        return {**base, "status": "timeout", "error": f"killed after {args.timeout:.0f} s",
                "wall_s_median": None, "log_tail": _tail(log)[-800:]}  # fmt: skip
    recs = []
    if out.exists():
        recs = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    if code != 0 or not recs or recs[-1].get("status") != "ok":
        return {**base, "status": "failed", "error": _tail(log)[-1500:]}
    h = recs[-1]
    return {
        **base,
        "status": "ok",
        "n_obs": h["n_cells"],
        "n_cells": h["n_cells"],
        "vocab": h["vocab"],
        "batch_size": h["batch_size"],
        "threads": h["threads"],
        "wall_s_all": h["timing"].get("all_s"),
        "wall_s_median": h["wall_s_median"],
        "wall_s_min": h["wall_s_min"],
        "rss_before_mb": h["rss_before_mb"],
        "peak_rss_mb": h["peak_rss_mb"],
        "added_rss_mb": round(h["peak_rss_mb"] - h["rss_before_mb"], 1),
        "process_peak_rss_mb": round(max(maxrss, h["peak_rss_mb"]), 1),
        "other_cores": h["other_cores"],
        "parts_last_rep_s": h.get("parts_last_rep_s"),
        "output": h.get("output"),
        "import_s": h.get("import_s"),
    }


# --------------------------------------------------------------------------- report


def _fmt(v, spec: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        "| impl | genes | cells (rods) | wall s | peak RSS MB | RSS before MB | added MB | "
        "other cores max | ref/ours wall (speed-up) | ours/ref peak RSS |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        name = r["impl"] + (f" x{r['repeat']}" if r.get("repeat", 1) > 1 else "")
        if r.get("status") != "ok":
            print(f"| {name} | {r['n_genes']:,} | {r['status']} | | | | | | | |")
            continue
        sp, rss = r.get("speedup"), r.get("ratio_peak_rss")
        print(
            f"| {name} | {r['n_genes']:,} | {r['n_obs']:,} ({r['n_cells']:,}) | "
            f"{r['wall_s_median']:.1f} | {_fmt(r['peak_rss_mb'])} | {_fmt(r['rss_before_mb'])} | "
            f"{_fmt(r['added_rss_mb'])} | "
            f"{_fmt(max(r['other_cores']) if r.get('other_cores') else None, '.2f')} | "
            f"{_fmt(sp, '.2f')}{'x' if sp is not None else ''} | "
            f"{_fmt(rss, '.2f')}{'x' if rss is not None else ''} |"
        )


def _write(args, run_id: str, info: dict, recs: list[dict]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        for rec in recs:
            full = {"script": "benchmarks/gene_network.py", "run": run_id, **rec,
                    "machine": info, "argv": sys.argv[1:]}  # fmt: skip
            fh.write(json.dumps(full) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--genes", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--repeat", type=int, nargs="+", default=[1, 16],
                    help="cell multipliers of our memory check (first --genes)")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--comp-attn", type=int, default=1, choices=[0, 1])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON)
    ap.add_argument("--harness", type=Path, default=DEFAULT_HARNESS)
    ap.add_argument("--skip-reference", action="store_true", help="measure ours only")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(RESULT_TAG + json.dumps(child_ours(args)), flush=True)
        return 0
    if not args.data.exists():
        print(f"data file not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    use_ref = not args.skip_reference
    if use_ref and not (args.ref_python.exists() and args.harness.exists()):
        print("The reference scPRINT is not installed (see the module docstring); measuring "
              "ours only.", file=sys.stderr)  # fmt: skip
        use_ref = False
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['mem_total_mb']} MB; "
          f"loadavg {info['loadavg']}; threads {args.threads}", flush=True)  # fmt: skip
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gene-network-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for n_genes in args.genes:
            print(f"ours {n_genes} genes ...", flush=True)
            ours = run_ours(args, n_genes, 1, tmp)
            pair = [ours]
            if use_ref:
                print(f"reference {n_genes} genes (comp_attn={args.comp_attn}) ...", flush=True)
                pair.append(run_reference(args, n_genes, tmp))
            for rec in pair:
                if rec["status"] != "ok":
                    print(f"  {rec['impl']} {n_genes}: {rec['status']}\n{rec.get('error', '')}")
            ref = pair[1] if len(pair) > 1 else None
            if ref and ours["status"] == ref["status"] == "ok":
                ours["speedup"] = round(ref["wall_s_median"] / ours["wall_s_median"], 2)
                ours["ratio_peak_rss"] = round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 2)
            elif ref and ours["status"] == "ok" and ref["status"] == "timeout":
                ours["speedup_at_least"] = round(args.timeout / ours["wall_s_median"], 2)
            _write(args, run_id, info, pair)
            rows.extend(pair)
        for repeat in args.repeat:
            if repeat == 1:
                continue
            print(f"ours {args.genes[0]} genes, cells x{repeat} ...", flush=True)
            rec = run_ours(args, args.genes[0], repeat, tmp)
            if rec["status"] != "ok":
                print(f"  ours x{repeat}: {rec['status']}\n{rec.get('error', '')}")
            _write(args, run_id, info, [rec])
            rows.append(rec)
    print()
    print_table(rows)
    for r in rows:
        if r.get("speedup_at_least") is not None:
            print(f"ours {r['n_genes']} genes: >= {r['speedup_at_least']:.1f}x faster (the "
                  f"reference timed out at {args.timeout:.0f} s)")  # fmt: skip
    print(f"\nloadavg at the end: {_loadavg()}; records appended to "
          f"{os.path.relpath(args.out)} (run {run_id})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
