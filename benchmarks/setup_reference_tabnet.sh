#!/usr/bin/env bash
# Install the reference TabNet (PyPI ``pytorch-tabnet`` 4.1.0) in its own virtual
# environment, for ``benchmarks/tabular.py`` (which compares it with our TabNet).
#
#     bash benchmarks/setup_reference_tabnet.sh            # -> ~/.cache/ref-tabnet-venv
#     REF_TABNET_VENV=/some/dir bash benchmarks/setup_reference_tabnet.sh
#
# torch 2.13.0 goes in first (pip serves a local CPU wheel here), so that pytorch-tabnet's
# ``torch>=1.3`` does not pull another build; then pytorch-tabnet, scikit-learn and anndata
# (the benchmark's reference child reads the h5ad files itself). Idempotent: an environment
# that already imports ``TabNetClassifier`` is left as it is. The project's .venv is not
# touched.
set -euo pipefail

VENV="${REF_TABNET_VENV:-$HOME/.cache/ref-tabnet-venv}"
PYTHON="${PYTHON:-python3}"

check() {
    (cd / && "$VENV/bin/python" -I -c '
from importlib.metadata import version
import torch
from pytorch_tabnet.tab_model import TabNetClassifier
import anndata, sklearn
print("reference pytorch-tabnet", version("pytorch-tabnet"), "torch", torch.__version__,
      "scikit-learn", sklearn.__version__, "OK")
')
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
    echo "already installed in $VENV"
    exit 0
fi

echo "creating $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install "torch==2.13.0"
"$VENV/bin/python" -m pip install "pytorch-tabnet==4.1.0" scikit-learn anndata h5py
check
echo "reference interpreter: $VENV/bin/python"
