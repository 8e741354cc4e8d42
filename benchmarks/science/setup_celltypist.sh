#!/usr/bin/env bash
# Install the classification peers of ``benchmarks/science/classify.py`` (CellTypist and
# XGBoost) in their own virtual environment, away from the project's pins: CellTypist
# 1.7.1 passes ``multi_class`` to scikit-learn's ``LogisticRegression``, which
# scikit-learn 1.8 removed, so it needs scikit-learn < 1.8, while the project's .venv has
# a newer one. The project's .venv is not touched.
#
#     bash benchmarks/science/setup_celltypist.sh        # -> ~/.cache/celltypist-venv
#     CELLTYPIST_VENV=/some/dir bash benchmarks/science/setup_celltypist.sh
#
# Pins: scikit-learn 1.7.2 (the last 1.7.x), celltypist 1.7.1, anndata (whatever pip
# resolves with them), and ``xgboost-cpu`` 3.2.0 (the last release for Python 3.11): the
# CPU-only build of XGBoost, which does not pull the NVIDIA NCCL wheel that the plain
# ``xgboost`` package does. torch is not needed. ``pip check`` runs at the end.
# Idempotent: an environment that already imports all of them at these versions is left
# as it is.
set -euo pipefail

VENV="${CELLTYPIST_VENV:-$HOME/.cache/celltypist-venv}"
PYTHON="${PYTHON:-python3.11}"
SKLEARN="scikit-learn==1.7.2"
CELLTYPIST="celltypist==1.7.1"
XGBOOST="xgboost-cpu==3.2.0"

check() {
    (cd / && "$VENV/bin/python" -I -c '
from importlib.metadata import version
import anndata, celltypist, sklearn, xgboost
assert version("celltypist") == "1.7.1", version("celltypist")
assert sklearn.__version__.startswith("1.7."), sklearn.__version__
print("celltypist", version("celltypist"), "scikit-learn", sklearn.__version__,
      "xgboost", xgboost.__version__, "anndata", anndata.__version__, "OK")
')
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
    echo "already installed in $VENV"
    exit 0
fi

echo "creating $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "$SKLEARN" "$CELLTYPIST" "$XGBOOST" anndata
"$VENV/bin/python" -m pip check
check
echo "peer interpreter: $VENV/bin/python"
