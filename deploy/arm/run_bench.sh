#!/usr/bin/env bash
# Bench slim vs baseline ONNX on an ARM board with the performance governor, pinned cores,
# and the temperature recorded before and after. Restores the governor on exit.
# Usage: deploy/arm/run_bench.sh PROFILE SLIM.onnx BASELINE.onnx OUT_DIR [extra edgeslim bench args]
#   e.g. deploy/arm/run_bench.sh rpi5 slim.onnx dense.onnx results --batch 1,32
# CORES (taskset list, default all) pins the processes, e.g. CORES=4-7 for big cores.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,7p "$0"; exit 2; }
PROFILE=$1 SLIM=$2 BASE=$3 OUT=$4; shift 4
EDGESLIM=${EDGESLIM:-edgeslim}
GOVS=(/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)
OLD=$(cat "${GOVS[0]}" 2>/dev/null || echo "")
if [ -n "$OLD" ]; then
  echo performance | sudo tee "${GOVS[@]}" >/dev/null
  trap 'echo "$OLD" | sudo tee "${GOVS[@]}" >/dev/null' EXIT
fi
temp() { cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null | awk '{printf "%.1f C\n", $1/1000}'; }
echo "temperature before: $(temp)"
PIN=()
if [ -n "${CORES:-}" ]; then PIN=(taskset -c "$CORES"); fi
"${PIN[@]}" "$EDGESLIM" bench "$SLIM" --baseline "$BASE" --profile "$PROFILE" --backend onnxruntime --out "$OUT" "$@"
echo "temperature after: $(temp)"
