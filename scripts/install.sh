#!/usr/bin/env bash
# Install mtkd (editable, with test extras) into the current Python environment.
# If no torch is installed yet, install the CPU build first, so pip never pulls
# several GB of CUDA wheels as a side effect; an existing torch is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "mtkd install: no torch found, installing the CPU build (torch==2.13.0)" >&2
    if ! "$PY" -m pip install --quiet "torch==2.13.0"; then
        # Elsewhere the plain PyPI wheel may be a CUDA build; PyTorch's CPU index avoids that.
        "$PY" -m pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"$PY" -m pip install --quiet -e ".[dev]"
