#!/usr/bin/env bash
# Install the project (editable, with test tools) into the active Python environment.
#
# torch is installed first and only when it is missing: torch==2.13.0 resolves to the
# CPU wheel kept on our CPU machines' local disk (no multi-GB CUDA download), while a
# GPU machine that already has a CUDA torch keeps it untouched.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
if "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "install.sh: keeping the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
    "$PYTHON" -m pip install "torch==2.13.0"
fi
"$PYTHON" -m pip install -e ".[dev]"
