"""Cells/s and peak RSS of our Collection beside lamindb's MappedCollection.

Run from the repository root::

    .venv/bin/python benchmarks/loader.py --copies 1 4 16 --reps 3

Options: ``--data`` (default ``../shared/data/retina_1k.h5ad`` relative to the
repository root), ``--workdir`` (scratch folder, default a new temporary folder that is
removed at the end), ``--num-workers`` (DataLoader workers, default 0), ``--threads``
(torch threads, default 1), ``--out`` (JSON lines, default
``benchmarks/results/loader.jsonl``).

Set-up (not timed): ``k`` copies of the file (byte copies, so the same gzip chunks as
the source, each given its own ``obs['copy_id']`` so that lamindb does not de-duplicate
them) are written into the storage root of a fresh offline lamindb instance in the
workdir; they are registered as artifacts and grouped into one collection per ``k``.

Timed: for each ``k`` and each loader, in a fresh subprocess (so that peak RSS belongs to
one measurement), one epoch over all the cells of the ``k`` files, drawn by weighted
random sampling with replacement, in batches of 64 through ``torch.utils.data.DataLoader``;
one warm-up epoch, then ``--reps`` timed epochs. Both loaders return dense float32 rows
over all 70,116 genes plus a label code:

* ours: ``Collection(files, obs_keys=["cell_type_ontology_term_id"])`` sampled by
  ``scdataloader.sampler.WeightedSampler`` (falls back to torch's WeightedRandomSampler
  with 1 / label-count weights when the sampler is absent);
* lamindb: ``collection.mapped(obs_keys=["cell_type"], join="inner")`` sampled by
  ``WeightedRandomSampler(ds.get_label_weights("cell_type"))``.

Reported per run: time to open the dataset, cells/s (median and best), RSS after the
imports, after opening and at the end, and the peak RSS (``ru_maxrss``).

Read the figures with the chunk cache in mind: the retina file holds 2 x 12.5 MB of
decompressed CSR data and indices. The Collection's cache is one budget (64 MiB by
default) split over the open files' two datasets each: at 1x the whole file stays
decompressed after the warm-up epoch, at 4x each dataset gets 8 MiB (part of it), at 16x
2 MiB, close to the 1 MiB h5py default lamindb uses per dataset, so most reads decompress
a gzip chunk with both loaders. Other jobs on the machine change the
figures: each record stores the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "retina_1k.h5ad"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "loader.jsonl"
OUR_LABEL = "cell_type_ontology_term_id"
LAMIN_LABEL = "cell_type"
RESULT_TAG = "LOADER-RESULT "


# --------------------------------------------------------------------------- helpers


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "lamindb": _version("lamindb"),
        "anndata": _version("anndata"),
        "h5py": _version("h5py"),
        "numpy": _version("numpy"),
        "loadavg": _loadavg(),
    }


def _env(workdir: Path) -> dict[str, str]:
    """Environment of the subprocesses: offline lamindb settings, the repo importable."""
    env = dict(os.environ)
    env["LAMIN_SETTINGS_DIR"] = str(workdir / "lamin-settings")
    env["LAMIN_CACHE_DIR"] = str(workdir / "lamin-cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    return env


def _child(args: list[str], workdir: Path, timeout: float) -> dict:
    """Run this script in a subprocess (cwd = workdir); return its tagged JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(
        cmd, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=timeout
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT_TAG) :])


# --------------------------------------------------------------------------- set-up


def write_copies(src: Path, folder: Path, n: int) -> list[Path]:
    """``n`` byte copies of ``src``, each with its own ``obs['copy_id']`` (written atomically)."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"copy{i:02d}.h5ad"
        if not path.exists():
            tmp = folder / f".{path.name}.tmp"
            shutil.copyfile(src, tmp)
            with h5py.File(tmp, "r+") as f:
                obs = f["obs"]
                n_obs = len(obs[obs.attrs["_index"]])
                write_elem(obs, "copy_id", pd.Categorical([str(i)] * n_obs))
                order = [str(c) for c in obs.attrs["column-order"]]
                if "copy_id" not in order:
                    obs.attrs["column-order"] = [*order, "copy_id"]
            os.replace(tmp, path)
        paths.append(path)
    return paths


def lamin_init(workdir: Path, storage: Path) -> None:
    if (storage / ".lamindb").exists():
        return
    lamin = Path(sys.executable).with_name("lamin")
    cmd = [str(lamin)] if lamin.exists() else [shutil.which("lamin") or "lamin"]
    proc = subprocess.run(
        [*cmd, "init", "--storage", str(storage)],
        cwd=workdir,  # lamin marks this folder as the instance's dev-dir
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"lamin init failed:\n{proc.stdout}\n{proc.stderr}")


def child_register(storage: str, copies: list[int]) -> dict:
    """(subprocess) Register the copies and one collection per k; the paths of each."""
    import lamindb as ln

    files = sorted(Path(storage, "retina").glob("copy*.h5ad"))
    arts = []
    for p in files[: max(copies)]:
        key = str(p.relative_to(storage))
        art = ln.Artifact.filter(key=key).first()
        if art is None:
            art = ln.Artifact(str(p), description=f"loader benchmark {p.name}").save()
        arts.append(art)
    out = {}
    for k in copies:
        key = f"loader-bench-{k}x"
        coll = ln.Collection.filter(key=key).first()
        if coll is None:
            coll = ln.Collection(arts[:k], key=key).save()
        out[str(k)] = [str(a.cache()) for a in coll.ordered_artifacts.all()]
    return out


# --------------------------------------------------------------------------- measurement


def _label_count_weights(labels):
    import numpy as np

    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse.ravel()]


def child_measure(
    loader: str, k: int, files: list[str], reps: int, batch: int, workers: int, threads: int
) -> dict:
    """(subprocess) One loader on one set of files: open, warm-up, ``reps`` epochs."""
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    if loader == "ours":
        from scdataloader.collection import Collection
    else:
        import lamindb as ln  # noqa: F401

        from scdataloader.sources import lamindb_mapped
    import_s = time.perf_counter() - t_import
    rss_imports = _rss_mb()

    t_open = time.perf_counter()
    sampler_name = "torch.WeightedRandomSampler(1/count)"
    if loader == "ours":
        ds = Collection(files, obs_keys=[OUR_LABEL])
        labels = ds.labels
        n_genes = ds.n_genes
        try:
            from scdataloader.sampler import WeightedSampler
        except ImportError:
            WeightedSampler = None
        weights = None if WeightedSampler is not None else _label_count_weights(labels)
        if WeightedSampler is not None:
            sampler_name = "scdataloader.WeightedSampler(scale=50)"
        x_key = "x"
        context = None
    else:
        context = lamindb_mapped(
            f"loader-bench-{k}x", [LAMIN_LABEL], join="inner", parallel=workers > 0
        )
        ds = context.__enter__()
        weights = ds.get_label_weights(LAMIN_LABEL)
        n_genes = int(ds.n_vars)
        x_key = "X"
    n = len(ds)
    open_s = time.perf_counter() - t_open
    rss_open = _rss_mb()

    def make_sampler(rep: int):
        if weights is None:
            return WeightedSampler(labels, scale=50, num_samples=n, seed=rep)
        g = torch.Generator().manual_seed(rep)
        return torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=n,
            replacement=True,
            generator=g,
        )

    def epoch(rep: int) -> tuple[int, float]:
        dl = torch.utils.data.DataLoader(
            ds, batch_size=batch, sampler=make_sampler(rep), num_workers=workers
        )
        t = time.perf_counter()
        seen = 0
        for b in dl:
            x = b[x_key]
            assert x.dtype == torch.float32 and x.shape[1] == n_genes, (x.dtype, x.shape)
            seen += x.shape[0]
        return seen, time.perf_counter() - t

    epoch(reps)  # warm-up (its own seed): page cache, file handles, lazy imports
    times = []
    seen = 0
    for rep in range(reps):
        seen, s = epoch(rep)
        times.append(s)
    rss_end = _rss_mb()
    peak = _peak_rss_mb()
    peak_children = _peak_rss_mb(resource.RUSAGE_CHILDREN) if workers > 0 else 0.0
    if context is not None:
        context.__exit__(None, None, None)
    med = statistics.median(times)
    return {
        "loader": loader,
        "copies": k,
        "cells": seen,
        "n_genes": n_genes,
        "batch": batch,
        "num_workers": workers,
        "threads": threads,
        "sampler": sampler_name,
        "import_s": round(import_s, 3),
        "open_s": round(open_s, 3),
        "epoch_s": [round(t, 3) for t in times],
        "cells_per_s_median": round(seen / med, 1),
        "cells_per_s_best": round(seen / min(times), 1),
        "rss_after_imports_mb": round(rss_imports, 1),
        "rss_after_open_mb": round(rss_open, 1),
        "rss_end_mb": round(rss_end, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_workers_mb": round(peak_children, 1),
        "loadavg": _loadavg(),
    }


# --------------------------------------------------------------------------- report


def print_table(records: list[dict]) -> None:
    lam = {r["copies"]: r for r in records if r["loader"] == "lamindb"}
    head = (
        f"{'loader':<8} {'copies':>6} {'cells':>7} {'open s':>7} {'cells/s med':>12} "
        f"{'cells/s best':>12} {'RSS start MB':>12} {'RSS open MB':>11} {'peak RSS MB':>11} "
        f"{'ours/lamindb':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in records:
        ratio = ""
        if r["loader"] == "ours" and r["copies"] in lam:
            ratio = f"{r['cells_per_s_median'] / lam[r['copies']]['cells_per_s_median']:.2f}x"
        print(
            f"{r['loader']:<8} {r['copies']:>6} {r['cells']:>7} {r['open_s']:>7.2f} "
            f"{r['cells_per_s_median']:>12,.0f} {r['cells_per_s_best']:>12,.0f} "
            f"{r['rss_after_imports_mb']:>12,.0f} {r['rss_after_open_mb']:>11,.0f} "
            f"{r['peak_rss_mb']:>11,.0f} {ratio:>12}"
        )
    for loader in ("ours", "lamindb"):
        rows = sorted((r for r in records if r["loader"] == loader), key=lambda r: r["copies"])
        if len(rows) >= 2:
            lo, hi = rows[0], rows[-1]
            growth = 100 * (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / lo["peak_rss_mb"]
            over_start = 100 * (
                (hi["peak_rss_mb"] - hi["rss_after_imports_mb"])
                / max(lo["peak_rss_mb"] - lo["rss_after_imports_mb"], 1e-9)
                - 1
            )
            print(
                f"peak RSS growth {loader} {lo['copies']}x -> {hi['copies']}x: {growth:+.1f}% "
                f"({lo['peak_rss_mb']:.0f} -> {hi['peak_rss_mb']:.0f} MB; above the "
                f"after-imports RSS: {lo['peak_rss_mb'] - lo['rss_after_imports_mb']:.0f} -> "
                f"{hi['peak_rss_mb'] - hi['rss_after_imports_mb']:.0f} MB, {over_start:+.0f}%)"
            )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument(
        "--loaders", nargs="+", default=["ours", "lamindb"], choices=["ours", "lamindb"]
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--label", default="", help="free text stored with the records")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    # internal: the subprocess modes
    ap.add_argument("--_register", nargs=1, metavar="STORAGE", help=argparse.SUPPRESS)
    ap.add_argument("--_measure", nargs=2, metavar=("LOADER", "K"), help=argparse.SUPPRESS)
    ap.add_argument("--_files", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._register:
        out = child_register(args._register[0], args.copies)
        print(RESULT_TAG + json.dumps(out), flush=True)
        return
    if args._measure:
        loader, k = args._measure[0], int(args._measure[1])
        files = json.loads(args._files.read_text())[str(k)]
        rec = child_measure(
            loader, k, files, args.reps, args.batch, args.num_workers, args.threads
        )
        print(RESULT_TAG + json.dumps(rec), flush=True)
        return

    data = args.data.resolve()
    if not data.exists():
        raise SystemExit(f"{data}: not found (pass --data PATH to an h5ad file)")
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="loader-bench-")) if own_workdir else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, torch "
        f"{info['torch']}, lamindb {info['lamindb']}, anndata {info['anndata']}, h5py "
        f"{info['h5py']}; loadavg {info['loadavg']}",
        flush=True,
    )
    print(
        f"data: {data.name}; copies {args.copies}; batch {args.batch}; workers "
        f"{args.num_workers}; threads {args.threads}; reps {args.reps} (+1 warm-up); "
        f"workdir {workdir}",
        flush=True,
    )
    try:
        t = time.perf_counter()
        storage = workdir / "lamindb-store"
        write_copies(data, storage / "retina", max(args.copies))
        lamin_init(workdir, storage)
        files = _child(
            ["--_register", str(storage), "--copies", *map(str, args.copies)],
            workdir,
            args.timeout,
        )
        files_json = workdir / "files.json"
        files_json.write_text(json.dumps(files))
        print(f"set-up (copies, lamin init, registration): {time.perf_counter() - t:.1f} s")

        records = []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for k in args.copies:
            for loader in args.loaders:
                rec = _child(
                    [
                        "--_measure",
                        loader,
                        str(k),
                        "--_files",
                        str(files_json),
                        "--reps",
                        str(args.reps),
                        "--batch",
                        str(args.batch),
                        "--num-workers",
                        str(args.num_workers),
                        "--threads",
                        str(args.threads),
                    ],
                    workdir,
                    args.timeout,
                )
                rec.update(
                    bench="loader",
                    data=data.name,
                    label=args.label,
                    machine=info,
                    time=time.strftime("%Y-%m-%dT%H:%M:%S"),
                )
                records.append(rec)
                with open(args.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(
                    f"  {loader:<8} {k:>3}x: {rec['cells_per_s_median']:>9,.0f} cells/s "
                    f"(best {rec['cells_per_s_best']:,.0f}), open {rec['open_s']:.2f} s, "
                    f"peak RSS {rec['peak_rss_mb']:,.0f} MB, loadavg {rec['loadavg']}",
                    flush=True,
                )
        print()
        print_table(records)
        print(f"loadavg at the end: {_loadavg()}; records appended to {args.out}")
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
