#!/usr/bin/env bash
# Install the reference benGRN (PyPI ``bengrn`` 1.3.2) in its own virtual environment, for
# ``benchmarks/metrics.py`` (which times its ``bengrn.base.compute_pr`` beside ours).
#
#     bash benchmarks/setup_reference_bengrn.sh            # -> ~/.cache/ref-bengrn-venv
#     REF_BENGRN_VENV=/some/dir bash benchmarks/setup_reference_bengrn.sh
#
# Idempotent: an environment that already imports ``compute_pr`` is left as it is. The full
# dependency set of bengrn 1.3.2 (pyscenic, arboreto, bionty, decoupler, omnipath, ...) is
# tried first; when pip cannot resolve it, the package is installed with ``--no-deps`` plus
# only what ``from bengrn.base import compute_pr`` imports (bengrn/__init__.py star-imports
# base.py, which imports gdown, gseapy, scanpy, ctxcore, grnndata, scikit-learn, matplotlib,
# tqdm and anndata at module level). No torch is needed.
#
# numpy >= 2.4 removed ``np.trapz``, which compute_pr calls: the check below (and the
# benchmark) set ``np.trapz = np.trapezoid`` when it is missing.
set -euo pipefail

VENV="${REF_BENGRN_VENV:-$HOME/.cache/ref-bengrn-venv}"
PYTHON="${PYTHON:-python3}"
SPEC="bengrn==1.3.2"
# What bengrn.base imports at module level (and their own needs come with them).
MINIMAL_DEPS=(numpy scipy pandas scikit-learn matplotlib seaborn tqdm anndata scanpy
              gseapy gdown ctxcore grnndata)

check() {
    # -I: isolated mode, so that a ``bengrn`` folder in the current directory (this
    # repository has one) or PYTHONPATH cannot shadow the installed reference.
    (cd / && "$VENV/bin/python" -I -c '
import numpy as np
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid
from importlib.metadata import version
from bengrn.base import compute_pr
print("reference bengrn", version("bengrn"), "numpy", np.__version__, "OK")
')
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
    echo "already installed in $VENV"
    exit 0
fi

echo "creating $VENV"
"$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" -m pip install "$SPEC"; then
    echo "full dependency resolution of $SPEC failed; installing it with --no-deps" \
         "plus what bengrn.base imports" >&2
    "$VENV/bin/python" -m pip install --no-deps "$SPEC"
    "$VENV/bin/python" -m pip install "${MINIMAL_DEPS[@]}"
fi
check
echo "reference interpreter: $VENV/bin/python"
