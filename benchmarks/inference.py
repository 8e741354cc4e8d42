"""Cells/s and peak RSS of our ``embed`` / ``denoise`` beside the reference scPRINT's
``Embedder`` / ``Denoiser``, at the same settings, in one invocation.

Run from the repository root (after ``bash ../shared/tools/reference-scprint/setup.sh``,
which installs the reference, PyPI ``scprint`` 2.3.8, in ``~/.cache/ref-scprint-venv``)::

    .venv/bin/python benchmarks/inference.py --tasks embed denoise --n-cells 200 \\
        --batch-size 16 --max-len 2200 --reps 1 --threads 1

Options: ``--tasks`` (``embed``, ``denoise``), ``--n-cells`` (random subset of the retina
cells, default 200), ``--batch-size`` (default 16), ``--max-len`` (genes per cell, default
2200), ``--reps`` (timed task calls, default 2), ``--threads`` (torch threads, default
1), ``--ref-python``, ``--harness``, ``--data``, ``--no-reference``, ``--out`` (JSON
lines, default ``benchmarks/results/inference.jsonl``).

Every measurement runs in a fresh subprocess: ours with this interpreter, the reference
through its harness (``perf_scprint_tasks.py`` of
``../shared/tools/reference-scprint/harness``) with the reference environment's
interpreter, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads`` set
to ``--threads``. Both sides get the same inputs, prepared before timing:

* the 1,000-cell CELLxGENE retina file restricted to its 23,217 protein-coding genes (the
  harness's ``--vocab protein_coding``: the model vocabulary, in the file's order), then
  the same ``--n-cells`` cells (``numpy.random.default_rng(0)``, sorted, as the harness);
* the ``small`` size, d_model 128, 4 layers, 2 heads, random weights, fp32, eval mode,
  no gradients: the reference's ``scPrint`` built by the harness (frozen random gene
  embeddings, ZINB decoder, seven class tokens); ours an untrained
  ``ScPrintModule(genes, hierarchies, preset="small")`` over the same vocabulary with the
  same seven class columns (flat label sets with the harness's class counts: cell type 11
  labels, the other six 2 each, so both sequences hold seven class tokens);
* ``--max-len`` genes per cell and ``--batch-size`` cells per forward pass. The reference
  tasks draw "random expr" genes (random expressed genes, padded with random unexpressed
  ones); ours takes the expressed genes first (the most expressed beyond ``--max-len``),
  padded with measured zero-count genes. Both sides fill every cell to ``--max-len``
  genes (a retina cell expresses 2,810 vocabulary genes on average, up to 7,205), so
  the sequences have the same length: 2,200 genes + the special and class tokens.
  Ours maps the vocabulary's ids through its gene table: 3,154 of the 23,217 ids are
  retired or unknown there and count as unmeasured (never drawn), the reference can draw
  them as padding; the model size and sequence length do not change.

What one timed call contains (``--reps`` calls, each on a fresh copy of the AnnData,
after one untimed warm-up forward):

``embed``
    reference: ``Embedder(batch_size, num_workers=0, how="random expr", max_len,
    doclass=True, doplot=False, pred_embedding=["cell_type_ontology_term_id"],
    dtype=float32)(model, adata)``: its DataLoader + Collator, forward passes with the
    class heads, and ``model.log_adata`` (the output AnnData with the embeddings and
    predictions). ours: ``scprint.tasks.embed(adata, model, max_len, batch_size,
    progress=False)``: gene mapping and count checks, collation, forward passes (class
    heads included), ``obsm["X_scprint"]`` plus one embedding per class token.
``denoise``
    reference: ``Denoiser(batch_size, num_workers=0, max_len, how="random expr",
    max_cells=n_cells, doplot=False, dtype=float32)(model, adata)``: forward passes and
    the denoised expression assembled into an AnnData. ours:
    ``scprint.tasks.denoise(adata, model, max_len, batch_size, progress=False)``: forward
    passes and ``layers["scprint_denoised"]`` (CSR expected counts, cells x genes).

Cells/s = cells / wall time of the whole call (median over reps). Peak RSS is the
resident-set high-water mark during the timed calls, measured the same way on both sides
(the kernel's VmHWM, reset through ``/proc/self/clear_refs`` right before each call, as
the harness's ``PeakRSS``); it includes the imports, the model and the data. "other
cores" is the CPU other processes used during the call (near 0: undisturbed); read the
ratio of a pair measured one after the other, not absolute figures, on a shared machine.
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
DEFAULT_OUT = REPO / "benchmarks" / "results" / "inference.jsonl"
RESULT_TAG = "INFERENCE-RESULT "
TASKS = ("embed", "denoise")
REF_IMPL = "reference scprint 2.3.8"


# --------------------------------------------------------------------------- our side


def _inputs(path: Path, n_cells: int):
    """The retina cells over the protein-coding vocabulary, and flat class label sets,
    as the reference harness prepares them."""
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
    if n_cells and n_cells < adata.n_obs:
        idx = np.sort(np.random.default_rng(0).choice(adata.n_obs, n_cells, replace=False))
        adata = adata[idx].copy()
    return adata, genes, hierarchies


def child_ours(args: argparse.Namespace) -> dict:
    """(subprocess) Time our task; return one result record."""
    import torch

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    from scprint.tasks import denoise, embed
    from scprint.train import ScPrintModule

    import_s = time.perf_counter() - t
    adata, genes, hierarchies = _inputs(args.data, args.n_cells)
    torch.manual_seed(0)
    model = ScPrintModule(genes, hierarchies, preset="small").eval()
    cfg = model.config
    task = args.tasks[0]
    opts = dict(max_len=args.max_len, batch_size=args.batch_size, progress=False)

    def call(a):
        if task == "embed":
            embed(a, model, **opts)
            return {"obsm": sorted(a.obsm)}
        denoise(a, model, **opts)
        return {"layers": sorted(a.layers)}

    call(adata[: min(2, adata.n_obs)].copy())  # untimed warm-up forward
    times, peaks, others = [], [], []
    gc.collect()
    rss_before = _status_mb("VmRSS")
    load_before = _loadavg()
    for _ in range(args.reps):
        a_in = adata.copy()
        gc.collect()
        method = "VmHWM" if _reset_hwm() else "ru_maxrss"
        busy0, own0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
        desc = call(a_in)
        wall = time.perf_counter() - t0
        others.append(round(max(0.0, (_busy_s() - busy0 - (_own_cpu_s() - own0)) / wall), 2))
        times.append(wall)
        peaks.append(round(_status_mb("VmHWM"), 1))
        del a_in
    med, best = statistics.median(times), min(times)
    return {
        "impl": "ours",
        "task": task,
        "n_cells": adata.n_obs,
        "vocab": len(genes),
        "classes": {k: h.n_leaves for k, h in model.hierarchies.items()},
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "max_len": args.max_len,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "import_s": round(import_s, 2),
        "wall_s_all": [round(x, 3) for x in times],
        "wall_s_median": round(med, 3),
        "cells_per_s_median": round(adata.n_obs / med, 3),
        "cells_per_s_best": round(adata.n_obs / best, 3),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": max(peaks),
        "peak_rss_method": method,
        "other_cores": others,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "output": desc,
    }


# --------------------------------------------------------------------------- runners


def run_ours(args, task: str, tmp: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tasks", task,
           "--n-cells", str(args.n_cells), "--batch-size", str(args.batch_size),
           "--max-len", str(args.max_len), "--reps", str(args.reps),
           "--threads", str(args.threads), "--data", str(args.data)]  # fmt: skip
    env = _child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    log = tmp / f"ours-{task}.log"
    code, maxrss = _run(cmd, REPO, env, args.timeout, log)
    lines = [ln for ln in _tail(log, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        return {"impl": "ours", "task": task, "status": "failed", "error": _tail(log)[-1500:]}
    rec = json.loads(lines[-1][len(RESULT_TAG) :])
    rec.update(status="ok", process_peak_rss_mb=round(max(maxrss, rec["peak_rss_mb"]), 1))
    return rec


def run_reference(args, task: str, tmp: Path) -> dict:
    out = tmp / f"ref-{task}.jsonl"
    cmd = [str(args.ref_python), str(args.harness), "--data", str(args.data), "--out", str(out),
           "--workdir", str(tmp / "ref-work"), "--task", task, "--config", "small",
           "--vocab", "protein_coding", "--n-cells", str(args.n_cells),
           "--max-len", str(args.max_len), "--batch-size", str(args.batch_size),
           "--reps", str(args.reps), "--threads", str(args.threads),
           "--label", "benchmarks/inference.py"]  # fmt: skip
    log = tmp / f"ref-{task}.log"
    code, maxrss = _run(cmd, tmp, _child_env(args.threads), args.timeout, log)
    recs = []
    if out.exists():
        recs = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    if code != 0 or not recs or recs[-1].get("status") != "ok":
        return {"impl": REF_IMPL, "task": task, "status": "failed", "error": _tail(log)[-1500:]}
    h = recs[-1]
    return {
        "impl": REF_IMPL,
        "status": "ok",
        "task": task,
        "n_cells": h["n_cells"],
        "vocab": h["vocab"],
        "max_len": h["max_len"],
        "batch_size": h["batch_size"],
        "threads": h["threads"],
        "wall_s_all": h["timing"].get("all_s"),
        "wall_s_median": h["wall_s_median"],
        "cells_per_s_median": h["cells_per_s_median"],
        "cells_per_s_best": h["cells_per_s_best"],
        "rss_before_mb": h["rss_before_mb"],
        "peak_rss_mb": h["peak_rss_mb"],
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
        "| task | impl | cells | genes/cell | batch | wall s (median) | cells/s median | "
        "cells/s best | peak RSS MB | process peak MB | other cores max | ours/ref cells/s "
        "| ours/ref peak RSS |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        if r.get("status") != "ok":
            print(f"| {r['task']} | {r['impl']} | failed | | | | | | | | | | |")
            continue
        ratio, rss = r.get("ratio_cells_per_s"), r.get("ratio_peak_rss")
        print(
            f"| {r['task']} | {r['impl']} | {r['n_cells']} | {r['max_len']:,} | "
            f"{r['batch_size']} | {r['wall_s_median']:.1f} | "
            f"{_fmt(r['cells_per_s_median'], '.2f')} | {_fmt(r['cells_per_s_best'], '.2f')} | "
            f"{_fmt(r['peak_rss_mb'])} | {_fmt(r['process_peak_rss_mb'])} | "
            f"{_fmt(max(r['other_cores']) if r.get('other_cores') else None, '.2f')} | "
            f"{_fmt(ratio, '.2f')}{'x' if ratio is not None else ''} | "
            f"{_fmt(rss, '.2f')}{'x' if rss is not None else ''} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--n-cells", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=2200, help="genes per cell")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON)
    ap.add_argument("--harness", type=Path, default=DEFAULT_HARNESS)
    ap.add_argument("--no-reference", action="store_true", help="measure ours only")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(RESULT_TAG + json.dumps(child_ours(args)), flush=True)
        return 0
    if not args.data.exists():
        print(f"data file not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    use_ref = not args.no_reference
    if use_ref and not (args.ref_python.exists() and args.harness.exists()):
        print("The reference scPRINT is not installed (see the module docstring); measuring "
              "ours only.", file=sys.stderr)  # fmt: skip
        use_ref = False
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['mem_total_mb']} MB; "
          f"loadavg {info['loadavg']}; threads {args.threads}", flush=True)  # fmt: skip
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="inference-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for task in args.tasks:
            print(f"ours {task} ...", flush=True)
            ours = run_ours(args, task, tmp)
            pair = [ours]
            if use_ref:
                print(f"reference {task} ...", flush=True)
                pair.append(run_reference(args, task, tmp))
            for rec in pair:
                if rec["status"] != "ok":
                    print(f"  {rec['impl']} {task}: failed\n{rec.get('error', '')}")
            ref = pair[1] if len(pair) > 1 else None
            if ref and ours["status"] == ref["status"] == "ok":
                ours["ratio_cells_per_s"] = round(
                    ours["cells_per_s_median"] / ref["cells_per_s_median"], 2
                )
                ours["ratio_peak_rss"] = round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 2)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as fh:
                for rec in pair:
                    full = {"script": "benchmarks/inference.py", "run": run_id, **rec,
                            "machine": info, "argv": sys.argv[1:]}  # fmt: skip
                    fh.write(json.dumps(full) + "\n")
            rows.extend(pair)
    print()
    print_table(rows)
    print(f"\nloadavg at the end: {_loadavg()}; records appended to "
          f"{os.path.relpath(args.out)} (run {run_id})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
