"""Training-step tokens/s and peak RSS of our scPRINT model beside the reference scPRINT.

Run from the repository root (after ``bash ../shared/tools/reference-scprint/setup.sh``,
which installs the reference, PyPI ``scprint`` 2.3.8, in ``~/.cache/ref-scprint-venv``)::

    .venv/bin/python benchmarks/train_throughput.py --presets small medium --batch 4 \\
        --threads 1 --modes train infer

Options: ``--presets`` (``small`` d_model 128 / 4 layers / 2 heads, ``medium`` 256 / 8 / 4,
``large`` 512 / 16 / 8 for ours against the reference's 512 / 12 / 8), ``--batch``
(training batch, default 4), ``--infer-batch`` (default 16), ``--modes`` (``train``,
``infer``, ``train_full``; default ``train``), ``--max-len`` (genes per cell, default
2200), ``--warmup`` / ``--reps`` (default 1 / 3, as the reference harness), ``--threads``
(torch threads, default 1), ``--rounds`` (repeat every pair of measurements, default 1),
``--ref-python`` (default ``~/.cache/ref-scprint-venv/bin/python``), ``--harness``,
``--data`` (default ``../shared/data/retina_1k.h5ad`` next to the repository),
``--no-reference``, ``--profile`` (also profile our training step with torch.profiler),
``--out`` (JSON lines, default ``benchmarks/results/train_throughput.jsonl``).

Every measurement (one implementation, one preset, one mode, one batch size) runs in a
fresh subprocess: ours with this interpreter, the reference through its own harness
(``perf_scprint_model.py`` of ``../shared/tools/reference-scprint/harness``) with the
reference environment's interpreter. Both sides get the same inputs:

* the 1,000-cell CELLxGENE retina file; vocabulary = its 23,217 protein-coding genes
  (the harness's ``--vocab protein_coding``); batches of ``--max-len`` genes per cell
  drawn "random expr" (random expressed genes, padded with random unexpressed ones),
  pre-collated before timing (ours with ``scdataloader.Collator``, the reference with its
  own ``scdataloader`` 2.1.3 Collator), a distinct batch per step;
* seven class tokens, one per CELLxGENE label column (cell type: 11 labels, the other six
  2 each), so the sequence is 2 + 7 + 2,200 = 2,209 tokens on both sides;
* frozen random gene embeddings of width d_model (the paper freezes its ESM2
  embeddings): ours through ``ScPrint(cfg, gene_embeddings=...)``, the reference through
  its precomputed-embedding path; random weights, fp32, dropout 0.1, train mode;
* AdamW(lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01) over all trainable
  parameters.

What one timed step contains:

``train`` (the harness's ``train``, "zinb1")
    reference: ``model(genes, x, req_depth=depth, do_class=False)``, its own ZINB loss
    ``scprint.model.loss.zinb`` on mean / disp / zero_logits against the input counts,
    ``zero_grad``, ``backward``, ``AdamW.step``. No classification loss (the class tokens
    are still in the sequence, but no class head runs).
    ours: ``model(genes, x, depth)``, ``zinb_nll(x, mu, theta, pi_logits).mean()``,
    ``zero_grad``, ``backward``, ``AdamW.step``. No classification loss (our class heads,
    7 small MLPs on the class tokens, always run in the forward; their outputs are unused).
``train_full`` (the harness's ``train_full``, two transformer passes)
    reference: ``scPrint._full_training`` with denoising at 60% (one forward on the
    downsampled counts: ZINB against the original counts + class cross-entropy +
    embedding-independence loss) and expression generation from the cell embeddings
    (a second transformer pass, ZINB), then backward + AdamW.
    ours: ``downsample(x, 0.6)``, forward, ZINB against the original counts +
    ``hierarchical_ce`` of each class + ``contrastive_loss`` of the cell embeddings; then
    ``model.decode`` from the cell and depth embeddings (second pass), ZINB +
    ``contrastive_loss``; backward + AdamW.
    Mind the memory: the reference's ``medium`` train_full step peaks near 20 GB of RSS
    at batch 4 (its harness stops itself above ``--mem-limit-mb``, default 20,000).
``infer``
    reference: ``model.eval()``, ``torch.no_grad()``, one forward with the class heads
    (``do_class=True``). ours: ``model.eval()``, ``torch.no_grad()``, one forward (class
    heads included).

Timing: ``--warmup`` untimed steps, then the median (and best) of ``--reps`` timed steps;
tokens/s = batch x sequence length / step time, cells/s = batch / step time. Data
loading is not timed.

Memory: "peak RSS" is the resident-set high-water mark over the timed steps, measured the
same way on both sides (the kernel's VmHWM, reset through ``/proc/self/clear_refs`` after
the warm-up, as the harness does); it includes the imports, the model, the optimiser
state, the pre-collated batches and the activations. "process peak" is the whole
subprocess's ``ru_maxrss`` (ours: ``getrusage(RUSAGE_SELF)`` read before the reset,
combined with the timed peak; the reference: the ``ru_maxrss`` that ``wait4`` returns,
which can miss a peak from before the harness's reset). "RSS before" is the RSS before
the warm-up; the reference imports lamindb, scanpy and friends, which accounts for a
large part of its baseline.

Other jobs change the figures on a shared machine: each record stores the load average
and ``other_cores``, the CPU cores other processes used during each timed step (near 0:
undisturbed; near 1 on a 2-core machine: another job took half of it). Read the ratios of
a pair measured one after the other, not the absolute times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "retina_1k.h5ad"
DEFAULT_HARNESS = SHARED / "tools" / "reference-scprint" / "harness" / "perf_scprint_model.py"
DEFAULT_SETUP = SHARED / "tools" / "reference-scprint" / "setup.sh"
DEFAULT_REF_PYTHON = Path.home() / ".cache" / "ref-scprint-venv" / "bin" / "python"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "train_throughput.jsonl"
RESULT_TAG = "TRAIN-THROUGHPUT-RESULT "
ORGANISM = "NCBITaxon:9606"
# The CELLxGENE label columns used as class tokens, in the reference harness's order.
CLASS_COLUMNS = [
    "cell_type_ontology_term_id",
    "disease_ontology_term_id",
    "sex_ontology_term_id",
    "self_reported_ethnicity_ontology_term_id",
    "assay_ontology_term_id",
    "tissue_ontology_term_id",
    "development_stage_ontology_term_id",
]
PRESETS = ("debug", "small", "medium", "large")
REF_PRESETS = ("small", "medium", "large")
MODES = ("train", "train_full", "infer")
REF_IMPL = "reference scprint 2.3.8"


# --------------------------------------------------------------------------- helpers


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process, if allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    guest = sum(vals[8:10]) if len(vals) > 9 else 0  # already counted in user / nice
    return (sum(vals) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine_info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:
        torch_version = "absent"
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "mem_total_mb": _mem_total_mb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_ours": torch_version,
        "loadavg": _loadavg(),
    }


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float, log: Path) -> tuple[int, float]:
    """Run ``cmd`` with stdout + stderr to ``log``; return (exit code, ru_maxrss MB) of the
    process, read from ``wait4`` so that each measurement has its own peak."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    child_mb = usage.ru_maxrss / 1024  # kB on Linux
    # Linux carries the high-water mark of the memory a process had before execve into its
    # ru_maxrss: a child started from a large parent never reports less than the parent's
    # peak. Say so when the figure may be the parent's rather than the child's own.
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if child_mb <= parent_mb * 1.01:
        print(f"warning: the child's peak RSS ({child_mb:.0f} MB) is not above this "
              f"process's own peak ({parent_mb:.0f} MB), which it inherits through execve: "
              "it is an upper bound, read VmHWM in the child for its own peak", flush=True)  # fmt: skip
    return proc.returncode, child_mb


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- our side


def _vocab_and_classes(adata) -> tuple[list[int], dict[str, int], dict[str, dict[str, int]]]:
    """Columns of the protein-coding vocabulary and the class spec (as the harness)."""
    import numpy as np

    if "biotype" in adata.var:
        cols = np.flatnonzero((adata.var["biotype"] == "protein_coding").to_numpy())
    else:
        cols = np.arange(adata.n_vars)
    classes, encoders = {}, {}
    for c in CLASS_COLUMNS:
        if c not in adata.obs:
            continue
        cats = sorted(adata.obs[c].astype(str).unique().tolist())
        classes[c] = max(len(cats), 2)
        encoders[c] = {v: i for i, v in enumerate(cats)}
    return cols.tolist(), classes, encoders


def _our_batches(adata, cols, encoders, batch: int, n: int, max_len: int, seed: int) -> list:
    """``n`` pre-collated "random expr" batches of ``batch`` distinct random cells each."""
    import numpy as np
    import scipy.sparse as sp

    from scdataloader import Collator

    rng = np.random.default_rng(seed)
    total = batch * n
    idx = rng.choice(adata.n_obs, size=total, replace=total > adata.n_obs)
    X = adata.X
    depth_all = np.asarray(X[idx].sum(1)).ravel()
    rows = X[idx][:, cols]
    rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
    codes = np.stack(
        [adata.obs[c].astype(str).map(enc).to_numpy()[idx] for c, enc in encoders.items()],
        axis=1,
    ).astype(np.int64)
    collate = Collator([str(c) for c in cols], mode="random expr", max_len=max_len, seed=seed)
    out = []
    for b in range(n):
        sl = slice(b * batch, (b + 1) * batch)
        items = [
            {"x": rows[i], "depth": float(depth_all[i]), "labels": codes[i]}
            for i in range(sl.start, sl.stop)
        ]
        out.append(collate(items))
    return out


def child_ours(args: argparse.Namespace) -> dict:
    """(subprocess) Time our model; print one tagged JSON result."""
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    t_import = time.perf_counter()
    from scprint.nn import ModelConfig, ScPrint
    from scprint.nn import losses as L

    import_s = time.perf_counter() - t_import

    adata = ad.read_h5ad(args.data)
    cols, classes, encoders = _vocab_and_classes(adata)
    n = args.warmup + args.reps
    batches = _our_batches(adata, cols, encoders, args.batch[0], n, args.max_len, args.batch[0])
    del adata
    gc.collect()

    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.presets[0], n_genes=len(cols), classes=classes)
    gene_emb = torch.randn(len(cols), cfg.d_model)
    model = ScPrint(cfg, gene_embeddings=gene_emb)
    del gene_emb
    class_names = list(classes)
    seq = batches[0]["genes"].shape[1] + cfg.n_special_tokens
    it = iter(range(10**9))

    def next_batch() -> dict:
        return batches[next(it) % len(batches)]

    mode = args.modes[0]
    if mode == "infer":
        model.eval()

        def step() -> float:
            b = next_batch()
            with torch.no_grad():
                out = model(b["genes"], b["x"], b["depth"])
            return float(out["mu"][0, 0])

    else:
        model.train()
        opt = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=1e-4,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=0.01,
        )

        if mode == "train":

            def step() -> float:
                b = next_batch()
                out = model(b["genes"], b["x"], b["depth"])
                loss = L.zinb_nll(b["x"], out["mu"], out["theta"], out["pi_logits"]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return float(loss)

        else:  # train_full

            def step() -> float:
                b = next_batch()
                x, genes, depth = b["x"], b["genes"], b["depth"]
                noisy = L.downsample(x, 0.6)
                out = model(genes, noisy, depth)
                loss = L.zinb_nll(x, out["mu"], out["theta"], out["pi_logits"]).mean()
                loss = loss + L.contrastive_loss(out["cell_embs"])
                for j, name in enumerate(class_names):
                    loss = loss + L.hierarchical_ce(out["class_logits"][name], b["labels"][:, j])
                gen = model.decode(genes, out["cell_embs"], out["depth_emb"], depth)
                loss = loss + L.zinb_nll(x, gen["mu"], gen["theta"], gen["pi_logits"]).mean()
                loss = loss + L.contrastive_loss(gen["cell_embs"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return float(loss)

    gc.collect()
    rss_before = _status_mb("VmRSS")
    load_before = _loadavg()
    for _ in range(args.warmup):
        last = step()
    gc.collect()
    peak_pre = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    method = "VmHWM" if _reset_hwm() else "ru_maxrss"
    times, others = [], []
    for _ in range(args.reps):
        busy0, own0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
        last = step()
        wall = time.perf_counter() - t0
        other = (_busy_s() - busy0 - (_own_cpu_s() - own0)) / wall
        times.append(wall)
        others.append(round(max(0.0, other), 2))
    peak = _status_mb("VmHWM") if method == "VmHWM" else peak_pre
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    profile = None
    if args.profile and mode != "infer":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        with tprofile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            step()
        profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)

    bs = args.batch[0]
    med, best = statistics.median(times), min(times)
    return {
        "impl": "ours",
        "mode": mode,
        "preset": args.presets[0],
        "batch": bs,
        "seq_len": seq,
        "genes_per_cell": args.max_len,
        "vocab": len(cols),
        "classes": classes,
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "params_total": model.n_parameters(),
        "params_trainable": model.n_parameters(trainable_only=True),
        "threads": args.threads,
        "torch": torch.__version__,
        "import_s": round(import_s, 2),
        "step_s_all": [round(t, 4) for t in times],
        "step_s_median": round(med, 4),
        "step_s_min": round(best, 4),
        "tokens_per_s_median": round(bs * seq / med, 1),
        "tokens_per_s_best": round(bs * seq / best, 1),
        "cells_per_s_median": round(bs / med, 3),
        "cells_per_s_best": round(bs / best, 3),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_method": method,
        "process_peak_rss_mb": round(max(peak_pre, maxrss, peak), 1),
        "other_cores": others,
        "other_cores_max": max(others) if others else None,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "last_value": last,
        "profile": profile,
    }


# --------------------------------------------------------------------------- runners


def run_ours(args, preset: str, mode: str, batch: int, tmp: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--presets",
        preset,
        "--modes",
        mode,
        "--batch",
        str(batch),
        "--max-len",
        str(args.max_len),
        "--warmup",
        str(args.warmup),
        "--reps",
        str(args.reps),
        "--threads",
        str(args.threads),
        "--data",
        str(args.data),
    ]
    if args.profile:
        cmd.append("--profile")
    env = _child_env(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    log = tmp / f"ours-{preset}-{mode}-{batch}.log"
    code, maxrss = _run(cmd, REPO, env, args.timeout, log)
    lines = [ln for ln in _tail(log, 10**7).splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        text = _tail(log)
        status = "unavailable" if "ImportError" in text or "ModuleNotFound" in text else "failed"
        return {"impl": "ours", "status": status, "exit": code, "error": text[-1500:]}
    rec = json.loads(lines[-1][len(RESULT_TAG) :])
    rec["status"] = "ok"
    rec["wait4_maxrss_mb"] = round(maxrss, 1)
    return rec


def run_reference(args, preset: str, mode: str, batch: int, tmp: Path) -> dict:
    out = tmp / f"ref-{preset}-{mode}-{batch}.jsonl"
    cmd = [
        str(args.ref_python),
        str(args.harness),
        "--data",
        str(args.data),
        "--out",
        str(out),
        "--workdir",
        str(tmp / "ref-work"),
        "--config",
        preset,
        "--batch",
        str(batch),
        "--mode",
        mode,
        "--max-len",
        str(args.max_len),
        "--vocab",
        "protein_coding",
        "--reps",
        str(args.reps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--mem-limit-mb",
        str(args.mem_limit_mb),
        "--label",
        "benchmarks/train_throughput.py",
    ]
    log = tmp / f"ref-{preset}-{mode}-{batch}.log"
    code, maxrss = _run(cmd, tmp, _child_env(args.threads), args.timeout, log)
    recs = []
    if out.exists():
        recs = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    if code != 0 or not recs or recs[-1].get("status") != "ok":
        return {"impl": REF_IMPL, "status": "failed", "exit": code, "error": _tail(log)[-1500:]}
    h = recs[-1]
    return {
        "impl": REF_IMPL,
        "status": "ok",
        "mode": mode,
        "preset": preset,
        "batch": h["batch"],
        "seq_len": h["seq_len"],
        "genes_per_cell": h["genes_per_cell"],
        "vocab": h["vocab"],
        "d_model": h["d_model"],
        "n_layers": h["nlayers"],
        "n_heads": h["nhead"],
        "params_total": h["model"]["params_total"],
        "params_trainable": h["model"]["params_trainable"],
        "threads": h["threads"],
        "torch": h.get("machine", {}).get("torch"),
        "step_s_all": h["timing"]["all_s"],
        "step_s_median": h["step_s_median"],
        "step_s_min": h["step_s_min"],
        "tokens_per_s_median": h["tokens_per_s_median"],
        "tokens_per_s_best": h["tokens_per_s_best"],
        "cells_per_s_median": h["cells_per_s_median"],
        "cells_per_s_best": h["cells_per_s_best"],
        "rss_before_mb": h["rss_before_mb"],
        "peak_rss_mb": h["peak_rss_mb"],
        "peak_rss_method": h["timing"].get("peak_rss_method"),
        "process_peak_rss_mb": round(max(maxrss, h["peak_rss_mb"]), 1),
        "wait4_maxrss_mb": round(maxrss, 1),
        "other_cores": h["timing"].get("other_cores"),
        "other_cores_max": h["timing"].get("other_cores_max"),
        "loadavg_before": h.get("loadavg_before"),
        "loadavg_after": h.get("loadavg_after"),
        "harness_record": {k: v for k, v in h.items() if k != "machine"},
    }


# --------------------------------------------------------------------------- report


def _fmt(v, spec: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def _ratio(a: dict, b: dict | None, key: str) -> float | None:
    if not b or a.get("status") != "ok" or b.get("status") != "ok":
        return None
    return round(a[key] / b[key], 3) if b.get(key) else None


def print_table(rows: list[dict]) -> None:
    head = (
        "| impl | mode | preset | batch | seq | step s (median) | tokens/s median | "
        "tokens/s best | cells/s median | peak RSS MB | RSS before MB | process peak MB | "
        "other cores max | ours/ref tokens/s | ours/ref peak RSS |"
    )
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for r in rows:
        if r.get("status") != "ok":
            print(
                f"| {r['impl']} | {r.get('mode', '')} | {r.get('preset', '')} | "
                f"{r.get('batch', '')} | | {r['status']} | | | | | | | | | |"
            )
            continue
        print(
            f"| {r['impl']} | {r['mode']} | {r['preset']} | {r['batch']} | {r['seq_len']:,} | "
            f"{r['step_s_median']:.3f} | {_fmt(r['tokens_per_s_median'])} | "
            f"{_fmt(r['tokens_per_s_best'])} | {_fmt(r['cells_per_s_median'], '.2f')} | "
            f"{_fmt(r['peak_rss_mb'])} | {_fmt(r['rss_before_mb'])} | "
            f"{_fmt(r['process_peak_rss_mb'])} | {_fmt(r.get('other_cores_max'), '.2f')} | "
            f"{_fmt(r.get('ratio_tokens_per_s'), '.2f')}"
            f"{'x' if r.get('ratio_tokens_per_s') is not None else ''} | "
            f"{_fmt(r.get('ratio_peak_rss'), '.2f')}"
            f"{'x' if r.get('ratio_peak_rss') is not None else ''} |"
        )


def _ref_info(ref_python: Path) -> dict:
    try:
        proc = subprocess.run(
            [
                str(ref_python),
                "-c",
                "from importlib.metadata import version as v;"
                "print(v('torch'), v('scprint'), v('numpy'))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        torch_v, scprint_v, numpy_v = proc.stdout.split()
        return {"torch_reference": torch_v, "scprint_reference": scprint_v, "numpy_ref": numpy_v}
    except Exception as exc:  # noqa: BLE001
        return {"torch_reference": f"unknown ({exc})"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["small", "medium"], choices=PRESETS)
    ap.add_argument("--modes", nargs="+", default=["train"], choices=MODES)
    ap.add_argument("--batch", type=int, nargs="+", default=[4], help="training batch size")
    ap.add_argument("--infer-batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=2200, help="genes per cell")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="repeat each pair of measurements")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--ref-python", type=Path, default=DEFAULT_REF_PYTHON)
    ap.add_argument("--harness", type=Path, default=DEFAULT_HARNESS)
    ap.add_argument("--no-reference", action="store_true", help="measure ours only")
    ap.add_argument("--mem-limit-mb", type=float, default=20000, help="reference harness guard")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    ap.add_argument("--profile", action="store_true", help="also profile our training step")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        rec = child_ours(args)
        print(RESULT_TAG + json.dumps(rec), flush=True)
        return 0

    if not args.data.exists():
        print(f"data file not found: {args.data} (pass --data)", file=sys.stderr)
        return 2
    use_ref = not args.no_reference
    if use_ref and not (args.ref_python.exists() and args.harness.exists()):
        print(
            f"The reference scPRINT is not installed ({args.ref_python} or {args.harness} is "
            f"missing). Install it with\n    bash {os.path.relpath(DEFAULT_SETUP)}\n"
            "(or pass --ref-python / --harness). Measuring ours only; ratios are n/a.",
            file=sys.stderr,
        )
        use_ref = False

    info = machine_info()
    if use_ref:
        info.update(_ref_info(args.ref_python))
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['mem_total_mb']} MB; "
        f"python {info['python']}; torch ours {info['torch_ours']}"
        + (f", reference {info.get('torch_reference')}" if use_ref else "")
        + f"; loadavg {info['loadavg']}; threads {args.threads}",
        flush=True,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows: list[dict] = []
    ours_missing = False
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmpdir:
        tmp = Path(tmpdir)
        for rnd in range(args.rounds):
            for preset in args.presets:
                for mode in args.modes:
                    batches = [args.infer_batch] if mode == "infer" else args.batch
                    for batch in batches:
                        pair = []
                        order = ["ours", "ref"] if rnd % 2 == 0 else ["ref", "ours"]
                        for who in order:
                            if who == "ref":
                                if not use_ref:
                                    continue
                                if preset not in REF_PRESETS:
                                    print(f"reference has no preset {preset!r}; skipped")
                                    continue
                                print(f"reference {preset} {mode} batch {batch} ...", flush=True)
                                rec = run_reference(args, preset, mode, batch, tmp)
                            else:
                                if ours_missing:
                                    continue
                                print(f"ours {preset} {mode} batch {batch} ...", flush=True)
                                rec = run_ours(args, preset, mode, batch, tmp)
                                if rec["status"] == "unavailable":
                                    ours_missing = True
                                    print(
                                        "our model is not importable yet "
                                        "(from scprint.nn import ModelConfig, ScPrint):\n"
                                        + rec["error"][-800:],
                                        file=sys.stderr,
                                    )
                            rec.setdefault("mode", mode)
                            rec.setdefault("preset", preset)
                            rec.setdefault("batch", batch)
                            rec["round"] = rnd
                            if rec["status"] != "ok":
                                print(f"  {rec['impl']}: {rec['status']}\n{rec.get('error', '')}")
                            pair.append(rec)
                        ours = next((r for r in pair if r["impl"] == "ours"), None)
                        ref = next((r for r in pair if r["impl"] == REF_IMPL), None)
                        if ours is not None:
                            ours["ratio_tokens_per_s"] = _ratio(ours, ref, "tokens_per_s_median")
                            ours["ratio_tokens_per_s_best"] = _ratio(
                                ours, ref, "tokens_per_s_best"
                            )
                            ours["ratio_peak_rss"] = _ratio(ours, ref, "peak_rss_mb")
                            ours["ratio_process_peak_rss"] = _ratio(
                                ours, ref, "process_peak_rss_mb"
                            )
                            if ours.get("profile"):
                                print(f"profile of our {preset} {mode} step:\n{ours['profile']}")
                        with open(args.out, "a") as fh:
                            for rec in pair:
                                full = {
                                    "script": "benchmarks/train_throughput.py",
                                    "run": run_id,
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    **rec,
                                    "machine": info,
                                    "argv": sys.argv[1:],
                                }
                                fh.write(json.dumps(full) + "\n")
                        rows.extend(pair)
    print()
    print_table(rows)
    print(
        f"\nloadavg at the end: {_loadavg()}; records appended to "
        f"{os.path.relpath(args.out)} (run {run_id})"
    )
    if ours_missing:
        print("ours: not importable yet; ratios are n/a.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
