#!/usr/bin/env bash
# Install the scoring side of ``benchmarks/science/embeddings.py``: scib-metrics 0.5.10
# (the scIB bio-conservation and batch-correction metrics, on JAX) and harmonypy (the
# Harmony peer), in their own virtual environment, away from the project's pins.
# The project's .venv is not touched.
#
#     bash benchmarks/science/setup_scib.sh          # -> ~/.cache/scib-venv
#     SCIB_VENV=/some/dir bash benchmarks/science/setup_scib.sh
#
# scib-metrics 0.5.10 is the last release for Python 3.11 (0.6 needs Python >= 3.12); it
# runs on JAX's CPU backend, pinned here to jax/jaxlib 0.10.2. harmonypy is optional:
# when it does not install, the benchmark's Harmony row says so and the rest runs.
# Idempotent: an environment that already imports scib-metrics is left as it is (and
# harmonypy is only tried again when it is missing).
set -euo pipefail

VENV="${SCIB_VENV:-$HOME/.cache/scib-venv}"
PYTHON="${PYTHON:-python3.11}"

check() {
    (cd / && "$VENV/bin/python" -I -c '
from importlib.metadata import version
import jax, scib_metrics, anndata
from scib_metrics.benchmark import Benchmarker
print("scib-metrics", version("scib-metrics"), "jax", jax.__version__,
      "anndata", anndata.__version__, "OK")
')
}

check_harmony() {
    (cd / && "$VENV/bin/python" -I -c '
from importlib.metadata import version
import harmonypy
print("harmonypy", version("harmonypy"), "OK")
')
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
    echo "scib-metrics already installed in $VENV"
else
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --upgrade pip
    "$VENV/bin/python" -m pip install "jax[cpu]==0.10.2" "scib-metrics==0.5.10"
    check
fi

if ! check_harmony 2>/dev/null; then
    "$VENV/bin/python" -m pip install harmonypy \
        || echo "harmonypy did not install: the Harmony row will be skipped"
    check_harmony || true
fi
"$VENV/bin/python" -m pip check || true
echo "scib interpreter: $VENV/bin/python"
