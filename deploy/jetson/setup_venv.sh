#!/usr/bin/env bash
# Device-side install of edgeslim on a Jetson: no PyTorch, JetPack's TensorRT seen through
# --system-site-packages, cuda-python matched to the CUDA major.minor of the JetPack.
# Usage: deploy/jetson/setup_venv.sh [VENV_DIR] [EDGESLIM_SOURCE (default: this clone)]   (never run by the authors on a Jetson)
set -euo pipefail
VENV=${1:-$HOME/edgeslim-venv}
# the source: this clone (the script's own), or a path or a pip requirement given; a folder is
# passed to pip as a path (a bare "edgeslim" would be looked up on PyPI)
SRC=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if [ -d "$SRC" ]; then SRC=$(cd "$SRC" && pwd); fi
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 2; }
if ! python3 -c "import tensorrt" 2>/dev/null; then
  echo "JetPack's TensorRT Python bindings are missing: sudo apt install python3-libnvinfer (part of nvidia-jetpack)" >&2
  echo "continuing: the onnxruntime and trtexec backends still work" >&2
fi
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Base install only: numpy, click, rich, pyyaml, pydantic (+ onnx/onnxruntime for ONNX inputs).
"$VENV/bin/python" -m pip install -q "$SRC[ort]"
# cuda-python of the installed CUDA's major.minor: a newer minor than JetPack's CUDA may need a
# newer driver than the board has
CUDA_VER=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' || true)
if [ -z "$CUDA_VER" ] && [ -f /usr/local/cuda/version.json ]; then
  CUDA_VER=$(python3 -c "import json;print('.'.join(json.load(open('/usr/local/cuda/version.json'))['cuda']['version'].split('.')[:2]))")
fi
if [ -n "$CUDA_VER" ]; then
  CUDA_MAJOR=${CUDA_VER%%.*} CUDA_MINOR=${CUDA_VER#*.}
  # PyPI has no cuda-python 11.4 (JetPack 5's CUDA; its 11.x wheels start at 11.5 for aarch64):
  # then the nearest newer minor of the same major (cuda.bindings' support policy: minor version
  # compatibility within a major; bench's calls are all in CUDA 11.4)
  if ! "$VENV/bin/python" -m pip install -q "cuda-python>=${CUDA_MAJOR}.${CUDA_MINOR},<${CUDA_MAJOR}.$((CUDA_MINOR + 1))"; then
    echo "no cuda-python ${CUDA_VER} for this Python on PyPI; trying the next minor of CUDA ${CUDA_MAJOR}" >&2
    installed=""
    for minor in $(seq $((CUDA_MINOR + 1)) 9); do
      if "$VENV/bin/python" -m pip install -q "cuda-python>=${CUDA_MAJOR}.${minor},<${CUDA_MAJOR}.$((minor + 1))"; then
        installed=yes; break
      fi
    done
    [ -n "$installed" ] || echo "no cuda-python ${CUDA_MAJOR}.x found: the tensorrt backend needs it (the trtexec and onnxruntime backends do not)" >&2
  fi
else
  echo "could not find the CUDA version; install cuda-python matching it by hand" >&2
fi
echo "--- check"
cat /etc/nv_tegra_release 2>/dev/null || true
dpkg-query -W nvinfer-bin python3-libnvinfer 2>/dev/null || true
"$VENV/bin/python" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" || true
"$VENV/bin/python" -c "import torch" 2>/dev/null && echo "note: torch is visible (system site-packages); edgeslim bench does not need it"
"$VENV/bin/edgeslim" profiles
