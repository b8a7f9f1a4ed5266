#!/usr/bin/env bash
# Install mtkd (editable, with test extras) into the current Python environment.
#
# torch and torchvision must come from the same build: the registry's torchvision wheels
# are built against its CUDA torch builds, and with a CPU-only torch `import torchvision`
# fails ("operator torchvision::nms does not exist"), which also breaks transformers.
# - No torch yet: install the tested pair torch==2.14.1 + torchvision==0.29.1.
# - A torch already there (CUDA, ROCm, CPU) is never changed. If torchvision is missing,
#   the version pip pairs with that torch is tried in a scratch folder first and installed
#   only if it imports; otherwise the vision extra (timm, torchvision) is left out with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_PAIR=("torch==2.14.1" "torchvision==0.29.1")
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "mtkd install: no torch found, installing ${TORCH_PAIR[*]}" >&2
    "$PY" -m pip install --quiet "${TORCH_PAIR[@]}"
fi
TORCH_VERSION="$("$PY" -c "import importlib.metadata as m; print(m.version('torch'))")"  # the installed distribution, as pip names it
CONSTRAINTS="$(mktemp)"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$CONSTRAINTS" "$SCRATCH"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"   # nothing below may replace the torch in place
vision_works() { PYTHONPATH="${1:-}" "$PY" -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)" >/dev/null 2>&1; }
if ! vision_works; then
    TV="$("$PY" -m pip install --quiet --dry-run --report - torchvision -c "$CONSTRAINTS" 2>/dev/null \
          | "$PY" -c "import json, sys; print(next((p['metadata']['version'] for p in json.load(sys.stdin)['install'] if p['metadata']['name'] == 'torchvision'), ''))" || true)"
    if [ -n "$TV" ] && "$PY" -m pip install --quiet --no-deps --target "$SCRATCH" "torchvision==$TV" >/dev/null 2>&1 \
            && vision_works "$SCRATCH"; then
        "$PY" -m pip install --quiet --no-deps "torchvision==$TV"
    else
        echo "mtkd install: no torchvision works with torch $TORCH_VERSION here; timm/torchvision models are left out" \
             "(install torchvision from the index your torch came from, then: pip install -e '.[vision]')" >&2
    fi
fi
if vision_works; then
    "$PY" -m pip install --quiet -e ".[dev]" -c "$CONSTRAINTS"
else
    "$PY" -m pip install --quiet -e ".[test]" -c "$CONSTRAINTS"
fi
