#!/usr/bin/env bash
# Install the denoising peers of ``benchmarks/science/denoise.py`` (MAGIC and scVI) in
# their own virtual environment, away from the project's pins: magic-impute's
# dependency scprep 1.2.3 pins ``pandas<2.1``, which clashes with the project's anndata.
# The project's .venv is not touched.
#
#     bash benchmarks/science/setup_peers.sh          # -> ~/.cache/science-peers-venv
#     SCIENCE_PEERS_VENV=/some/dir bash benchmarks/science/setup_peers.sh
#
# torch 2.13.0 goes in first (pip serves a local CPU build here), so that scvi-tools'
# torch requirement does not pull a CUDA build; then magic-impute and scvi-tools 1.4.2
# (the last release for Python 3.11) together, for which pip resolves scprep to 1.1.0,
# without the pandas pin; pandas is then pinned to 2.3.3 explicitly, so that another
# resolution (scprep 1.2.3 pulls pandas 2.0.3) cannot leave anndata and scvi-tools with
# an older pandas. ``pip check`` is clean afterwards.
# Idempotent: an environment that already imports both peers is left as it is.
set -euo pipefail

VENV="${SCIENCE_PEERS_VENV:-$HOME/.cache/science-peers-venv}"
PYTHON="${PYTHON:-python3.11}"

check() {
    (cd / && "$VENV/bin/python" -I -c '
from importlib.metadata import version
import magic, scvi, torch, anndata, pandas
print("magic-impute", version("magic-impute"), "scvi-tools", version("scvi-tools"),
      "torch", torch.__version__, "pandas", pandas.__version__, "OK")
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
"$VENV/bin/python" -m pip install "magic-impute" "scvi-tools==1.4.2"
"$VENV/bin/python" -m pip install "pandas==2.3.3"
check
echo "peer interpreter: $VENV/bin/python"
