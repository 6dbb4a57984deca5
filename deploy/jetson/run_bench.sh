#!/usr/bin/env bash
# Bench slim vs baseline on a Jetson with fixed clocks, then restore the clocks.
# Usage: deploy/jetson/run_bench.sh PROFILE SLIM BASELINE OUT_DIR [extra edgeslim bench args]
#   e.g. deploy/jetson/run_bench.sh jetson-orin-nano-super slim.fp16.engine dense.fp16.engine results --batch 1,32
# SLIM/BASELINE: TensorRT engines built ON THIS DEVICE (trtexec --onnx=M.onnx --saveEngine=M.engine;
# edgeslim export --trt needs PyTorch as well, which the edgeslim[ort] install here lacks), or .onnx
# files (then add --backend trtexec or --backend onnxruntime). Needs sudo for nvpmodel/jetson_clocks
# (without it: a warning, and the bench runs at the clocks as they are).
# Never run by the authors on a Jetson.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,9p "$0"; exit 2; }
PROFILE=$1 SLIM=$2 BASE=$3 OUT=$4; shift 4
EDGESLIM=${EDGESLIM:-edgeslim}
# a profile it does not know: edgeslim's one-line error, and its exit status (not a traceback of the JSON error)
PROFILE_JSON=$("$EDGESLIM" profiles show "$PROFILE" --json) || exit $?
MODE=$(printf '%s' "$PROFILE_JSON" | python3 -c "
import json,sys; p=json.load(sys.stdin)
ids=[m['id'] for m in p['power_modes'] if m['id'] is not None]
print(max(ids) if 'super' in p['name'] else (ids[0] if ids else ''))")
# sudo without a password, or one typed at a terminal (checked first); else (a non-admin, or a CI over ssh that cannot
# answer its prompt) bench with the clocks and power mode as they are
can_sudo() { sudo -n true 2>/dev/null || { [ -t 0 ] && sudo -v; }; }
if can_sudo 2>/dev/null; then
  # the power mode in use (nvpmodel -q prints "NV Power Mode: NAME", then the mode's id alone on a line),
  # restored on exit, then the clocks stored under it; each restore step runs even if another fails
  PREV_MODE=$(sudo nvpmodel -q 2>/dev/null | grep -E '^[0-9]+$' | tail -n 1 || true)
  STORE=$(mktemp "${TMPDIR:-/tmp}/jetson_clocks.XXXXXX")  # (made here, removed on any exit: none is left behind)
  trap 'if [ -n "$PREV_MODE" ]; then sudo nvpmodel -m "$PREV_MODE" || true; fi; if [ -s "$STORE" ]; then sudo jetson_clocks --restore "$STORE" || true; fi; rm -f "$STORE"' EXIT
  sudo jetson_clocks --store "$STORE"
  if [ -n "$MODE" ]; then sudo nvpmodel -m "$MODE"; fi
  sudo jetson_clocks
  sudo jetson_clocks --show | head -20
else
  echo "warning: power mode and clocks not set (sudo needs a password or is missing); results may vary" >&2
fi
BACKEND=()
# engines built on this board from our own ONNX: trusted (an engine can carry plugin code)
case "$SLIM" in *.engine|*.plan) BACKEND=(--backend tensorrt --trust-pickle);; esac
"$EDGESLIM" bench "$SLIM" --baseline "$BASE" --profile "$PROFILE" "${BACKEND[@]}" --out "$OUT" "$@"
