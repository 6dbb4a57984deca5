#!/usr/bin/env bash
# Device-side install of edgeslim on an ARM board (Raspberry Pi 4/5, other aarch64 Linux):
# ONNX Runtime CPU (and XNNPACK where the wheel has it), no PyTorch.
# Usage: deploy/arm/setup_venv.sh [VENV_DIR] [EDGESLIM_SOURCE (default: this clone)]   (never run by the authors on a board)
set -euo pipefail
VENV=${1:-$HOME/edgeslim-venv}
# the source: this clone (the script's own), or a path or a pip requirement given; a folder is
# passed to pip as a path (a bare "edgeslim" would be looked up on PyPI)
SRC=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if [ -d "$SRC" ]; then SRC=$(cd "$SRC" && pwd); fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$SRC[ort]"
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
"$VENV/bin/edgeslim" profiles
