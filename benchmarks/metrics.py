"""Time to score a 10,000 x 10,000 network against OmniPath: our
``bengrn.metrics.evaluate`` beside the reference benGRN's ``compute_pr``, on the same inputs.

Run from the repository root (after ``bash benchmarks/setup_reference_bengrn.sh``, which
installs the reference, PyPI ``bengrn`` 1.3.2, in ``~/.cache/ref-bengrn-venv``)::

    .venv/bin/python benchmarks/metrics.py --genes 10000 --threads 1

Options: ``--genes`` (network size, default 10000), ``--pick`` (``degree``: the genes with
the most OmniPath edges, the default; ``random``: a seeded random sample), ``--seed``
(default 0), ``--signal`` (score added to the true edges, default 0.5), ``--threads``
(``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` of both children,
default 1), ``--omnipath`` (the interaction table; default the registry's copy,
``scdataloader.datasets.fetch("omnipath")``, else ``../shared/data/networks/omnipath.parquet``),
``--ref-python``, ``--skip-reference``, ``--timeout`` (seconds per measurement, default
1800), ``--out`` (JSON lines, default ``benchmarks/results/metrics.jsonl``).

Inputs, built once (untimed) and saved as ``.npy`` / ``.npz`` in a temporary folder:

* genes: ``--genes`` of OmniPath's sources and targets;
* truth: the binary OmniPath network among them (``source -> target``, self-loops
  dropped), a sparse matrix with rows targets and columns regulators (sources);
* network: planted scores, dense float32: uniform noise in [0, 1) plus ``--signal`` on the
  true edges, the diagonal set to 0 (see below).

Each side runs in a fresh subprocess that loads the inputs, then times one call:

ours
    ``bengrn.metrics.evaluate(network, truth)`` (rows targets, columns regulators; EPR,
    AUPRC, average precision, precision, recall, and the curve, from one sort).
reference
    ``compute_pr(network.T, truth.T, do_auc=True, doplot=False)`` in the reference
    environment (``python -I`` from a temporary folder, so that this repository's
    ``bengrn`` cannot shadow it), its inputs as it expects them: dense, rows sources
    (regulators), the truth a dense boolean array; ``np.trapz = np.trapezoid`` when numpy
    lacks it (numpy >= 2.4). Both sides score the same ordered pairs; compute_pr is
    element-wise, so transposing both changes nothing but the layout.

Definitions. The reference sorts all ``n^2`` entries, the diagonal included, while its
``tot`` (the prevalence denominator) excludes it; we exclude the diagonal everywhere. With
the network's diagonal at 0 and every other score above 0, the diagonal ranks last and
both rank the true edges identically, so the average precisions agree up to the
reference's details: it breaks ties in argsort order (we treat a tie group at once, as
scikit-learn) and omits the top-ranked pair's term (its sum starts at the second pair).
EPR agrees up to ties at the cut. The AUPRCs differ by definition: the reference
integrates 130 quantile thresholds, ours every distinct score (see
``bengrn.metrics.evaluate``), both closed at the prevalence.

Peak RSS is the resident-set high-water mark during the timed call (VmHWM reset through
``/proc/self/clear_refs`` right before it); "added" subtracts the RSS before the call (the
interpreter, the libraries and the inputs). Read the ratio of a pair measured one after
the other, not absolute figures, on a shared machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402
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

DEFAULT_OMNIPATH = SHARED / "data" / "networks" / "omnipath.parquet"
DEFAULT_REF_PYTHON = Path.home() / ".cache" / "ref-bengrn-venv" / "bin" / "python"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "metrics.jsonl"
RESULT_TAG = "METRICS-RESULT "
REF_IMPL = "reference bengrn 1.3.2"

# The reference child, run as ``python -I -c REF_CHILD <inputs folder>``: the same
# measurement helpers as ours, inlined (the reference environment has none of this repo).
REF_CHILD = r"""
import json, os, sys, time
from pathlib import Path
import numpy as np
import scipy.sparse as sp

def status_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")

def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

def busy_s():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    guest = sum(vals[8:10]) if len(vals) > 9 else 0
    return (sum(vals) - idle - guest) / os.sysconf("SC_CLK_TCK")

shim = not hasattr(np, "trapz")
if shim:
    np.trapz = np.trapezoid  # removed in numpy 2.4; compute_pr calls it
t = time.perf_counter()
from importlib.metadata import version
from bengrn.base import compute_pr
import_s = time.perf_counter() - t
folder = Path(sys.argv[1])
grn = np.ascontiguousarray(np.load(folder / "network.npy").T)  # rows: sources
true = sp.load_npz(folder / "truth.npz").T.toarray().astype(bool)
rss_before = status_mb("VmRSS")
method = "VmHWM" if reset_hwm() else "ru_maxrss"
busy0, own0 = busy_s(), sum(os.times()[:2])
t0 = time.perf_counter()
m = compute_pr(grn, true, do_auc=True, doplot=False)
wall = time.perf_counter() - t0
other = max(0.0, (busy_s() - busy0 - (sum(os.times()[:2]) - own0)) / wall)
rec = {
    "impl": "reference bengrn " + version("bengrn"), "numpy": np.__version__,
    "trapz_shim": shim, "import_s": round(import_s, 2), "wall_s": round(wall, 3),
    "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(status_mb("VmHWM"), 1),
    "peak_rss_method": method, "other_cores": round(other, 2),
    "ap": float(m["ap"]), "auprc": float(m["auprc"]), "epr": float(m["epr"]),
    "precision": float(m["precision"]), "recall": float(m["recall"]),
    "prevalence": float(m["rand_precision"]),
}
print("METRICS-RESULT " + json.dumps(rec), flush=True)
"""


# --------------------------------------------------------------------------- inputs


def _omnipath_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    try:
        from scdataloader.datasets import fetch

        return fetch("omnipath")
    except Exception as err:  # no registry: the shared copy
        print(f"registry copy unavailable ({err}); using {DEFAULT_OMNIPATH}", file=sys.stderr)
        return DEFAULT_OMNIPATH


def build_inputs(args: argparse.Namespace, folder: Path) -> dict:
    """Write ``network.npy`` (dense float32, rows targets) and ``truth.npz`` (CSR binary)
    into ``folder``; return a description."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    path = _omnipath_path(args.omnipath)
    table = pd.read_parquet(path, columns=["source", "target"])
    src, tgt = table["source"].astype(str).to_numpy(), table["target"].astype(str).to_numpy()
    keep = src != tgt
    src, tgt = src[keep], tgt[keep]
    degree = pd.Series(np.concatenate([src, tgt])).value_counts()
    if args.genes > degree.size:
        raise SystemExit(f"OmniPath has {degree.size} genes; --genes {args.genes} is too many")
    if args.pick == "degree":  # most edges first, ties by name
        frame = pd.DataFrame({"gene": degree.index, "n": degree.to_numpy()})
        genes = frame.sort_values(["n", "gene"], ascending=[False, True])["gene"]
        genes = genes.iloc[: args.genes].to_numpy()
    else:
        rng = np.random.default_rng(args.seed)
        genes = rng.choice(np.sort(degree.index.to_numpy()), args.genes, replace=False)
    index = pd.Index(genes)
    s, t = index.get_indexer(src), index.get_indexer(tgt)
    ok = (s >= 0) & (t >= 0)
    n = len(index)
    truth = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (t[ok], s[ok])), shape=(n, n))
    truth.sum_duplicates()
    truth.data[:] = 1.0
    rng = np.random.default_rng(args.seed + 1)
    network = rng.random((n, n), dtype=np.float32)
    coo = truth.tocoo()
    network[coo.row, coo.col] += np.float32(args.signal)
    np.fill_diagonal(network, 0.0)
    np.save(folder / "network.npy", network)
    sp.save_npz(folder / "truth.npz", truth)
    return {
        "omnipath": str(path),
        "n_genes": n,
        "n_true_edges": int(truth.nnz),
        "pick": args.pick,
        "seed": args.seed,
        "signal": args.signal,
    }


# --------------------------------------------------------------------------- our side


def child_ours(folder: Path) -> dict:
    """(subprocess) Load the inputs, time ``evaluate``; return one result record."""
    import numpy as np
    import scipy.sparse as sp

    t = time.perf_counter()
    from bengrn.metrics import evaluate

    import_s = time.perf_counter() - t
    network = np.load(folder / "network.npy")
    truth = sp.load_npz(folder / "truth.npz").tocsr()
    rss_before = _status_mb("VmRSS")
    method = "VmHWM" if _reset_hwm() else "ru_maxrss"
    busy0, own0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
    res = evaluate(network, truth)
    wall = time.perf_counter() - t0
    other = max(0.0, (_busy_s() - busy0 - (_own_cpu_s() - own0)) / wall)
    return {
        "impl": "ours",
        "numpy": np.__version__,
        "import_s": round(import_s, 2),
        "wall_s": round(wall, 3),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "peak_rss_method": method,
        "other_cores": round(other, 2),
        "ap": res.average_precision,
        "auprc": res.auprc,
        "epr": res.epr,
        "precision": res.precision,
        "recall": res.recall,
        "prevalence": res.prevalence,
        "n_candidates": res.n_candidates,
        "n_predicted": res.n_predicted,
        "curve_points": int(res.curve_recall.size),
    }


# --------------------------------------------------------------------------- runners


def _measure(impl: str, cmd: list[str], cwd: Path, env: dict, args, log: Path) -> dict:
    t0 = time.monotonic()
    code, maxrss = _run(cmd, cwd, env, args.timeout, log)
    if time.monotonic() - t0 > args.timeout:
        return {"impl": impl, "status": "timeout", "error": f"killed after {args.timeout:.0f} s"}
    lines = [ln for ln in _tail(log, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        return {"impl": impl, "status": "failed", "error": _tail(log)[-1500:]}
    rec = json.loads(lines[-1][len(RESULT_TAG) :])
    rec.update(status="ok", process_peak_rss_mb=round(max(maxrss, rec["peak_rss_mb"]), 1))
    rec["added_rss_mb"] = round(rec["peak_rss_mb"] - rec["rss_before_mb"], 1)
    return rec


def run_ours(args, folder: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)]
    env = _child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    return _measure("ours", cmd, REPO, env, args, folder / "ours.log")


def run_reference(args, folder: Path) -> dict:
    cmd = [str(args.ref_python), "-I", "-c", REF_CHILD, str(folder)]
    env = _child_env(args.threads)
    env.pop("PYTHONPATH", None)
    work = folder / "ref-work"
    work.mkdir(exist_ok=True)
    return _measure(REF_IMPL, cmd, work, env, args, folder / "ref.log")


# --------------------------------------------------------------------------- report


def _fmt(v, spec: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = "| impl | wall s | peak RSS MB | added MB | AP | AUPRC | EPR | other cores | speed-up |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        if r.get("status") != "ok":
            print(f"| {r['impl']} | {r['status']} | | | | | | | |")
            continue
        sp = r.get("speedup")
        print(
            f"| {r['impl']} | {r['wall_s']:.2f} | {_fmt(r['peak_rss_mb'])} | "
            f"{_fmt(r['added_rss_mb'])} | {r['ap']:.6f} | {r['auprc']:.6f} | "
            f"{r['epr']:.3f} | {r['other_cores']:.2f} | "
            f"{_fmt(sp, '.1f')}{'x' if sp is not None else ''} |"
        )


def _write(args, run_id: str, info: dict, inputs: dict, recs: list[dict]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        for rec in recs:
            full = {"script": "benchmarks/metrics.py", "run": run_id, **inputs, **rec,
                    "threads": args.threads, "machine": info, "argv": sys.argv[1:]}  # fmt: skip
            fh.write(json.dumps(full) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--genes", type=int, default=10000)
    ap.add_argument("--pick", choices=["degree", "random"], default="degree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal", type=float, default=0.5, help="added to true edges' scores")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--omnipath", type=Path, default=None)
    ap.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON)
    ap.add_argument("--skip-reference", action="store_true", help="measure ours only")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child is not None:
        print(RESULT_TAG + json.dumps(child_ours(args.child)), flush=True)
        return 0
    use_ref = not args.skip_reference
    if use_ref and not args.ref_python.exists():
        print("The reference bengrn is not installed (bash benchmarks/"
              "setup_reference_bengrn.sh); measuring ours only.", file=sys.stderr)  # fmt: skip
        use_ref = False
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['mem_total_mb']} MB; "
          f"loadavg {info['loadavg']}; threads {args.threads}", flush=True)  # fmt: skip
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmpdir:
        folder = Path(tmpdir)
        t0 = time.perf_counter()
        inputs = build_inputs(args, folder)
        print(f"inputs: {inputs['n_genes']:,} genes ({inputs['pick']}), "
              f"{inputs['n_true_edges']:,} OmniPath edges, planted float32 network "
              f"(signal {args.signal}); built in {time.perf_counter() - t0:.1f} s",
              flush=True)  # fmt: skip
        print("ours ...", flush=True)
        rows = [run_ours(args, folder)]
        if use_ref:
            print("reference ...", flush=True)
            rows.append(run_reference(args, folder))
        for rec in rows:
            if rec["status"] != "ok":
                print(f"  {rec['impl']}: {rec['status']}\n{rec.get('error', '')}")
    ours = rows[0]
    ref = rows[1] if len(rows) > 1 else None
    if ref and ours["status"] == ref["status"] == "ok":
        ours["speedup"] = round(ref["wall_s"] / ours["wall_s"], 1)
        ours["ratio_peak_rss"] = round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 2)
        ours["ap_rel_diff"] = abs(ours["ap"] - ref["ap"]) / ref["ap"]
        ours["epr_rel_diff"] = abs(ours["epr"] - ref["epr"]) / ref["epr"]
    _write(args, run_id, info, inputs, rows)
    print()
    print_table(rows)
    if "ap_rel_diff" in ours:
        top = 1 / inputs["n_true_edges"] / ref["ap"]  # the top pair's term, if true
        print(f"\nAP relative difference {ours['ap_rel_diff']:.2e} (reference: ties in "
              f"argsort order, no term for the top pair: 1/K / AP = {top:.2e} when it is "
              f"a true edge); EPR relative difference "
              f"{ours['epr_rel_diff']:.2e}; AUPRC differs by definition (reference: 130 "
              f"quantile thresholds). Peak RSS ours / reference "
              f"{ours['ratio_peak_rss']:.2f}.")  # fmt: skip
    print(f"\nloadavg at the end: {_loadavg()}; records appended to "
          f"{os.path.relpath(args.out)} (run {run_id})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
