#!/usr/bin/env bash
# Bench slim vs baseline ONNX on an ARM board with the performance governor, pinned cores,
# and the temperature recorded before and after. Restores the governor on exit.
# Usage: deploy/arm/run_bench.sh PROFILE SLIM.onnx BASELINE.onnx OUT_DIR [extra edgeslim bench args]
#   e.g. deploy/arm/run_bench.sh rpi5 slim.onnx dense.onnx results --batch 1,32  (exports made with --dynamic-batch)
# CORES (taskset list, default all) pins the processes, e.g. CORES=4-7 for big cores.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,7p "$0"; exit 2; }
PROFILE=$1 SLIM=$2 BASE=$3 OUT=$4; shift 4
EDGESLIM=${EDGESLIM:-edgeslim}
SYS=${EDGESLIM_SYSFS_ROOT:-/sys}  # (another root: tests)
GOVS=("$SYS"/devices/system/cpu/cpu*/cpufreq/scaling_governor)
OLD=$(cat "${GOVS[0]}" 2>/dev/null || echo "")
# sudo without a password, or one typed at a terminal (checked first); else (Termux has no sudo, a non-admin or a
# CI over ssh cannot answer its prompt) bench with the governor as it is
can_sudo() { sudo -n true 2>/dev/null || { [ -t 0 ] && sudo -v; }; }
if [ -n "$OLD" ]; then
  if can_sudo 2>/dev/null; then
    trap 'echo "$OLD" | sudo tee "${GOVS[@]}" >/dev/null || echo "warning: could not restore the $OLD governor" >&2' EXIT
    echo performance | sudo tee "${GOVS[@]}" >/dev/null ||
      echo "warning: performance governor not set on every core; results may vary" >&2
  else
    echo "warning: performance governor not set (sudo needs a password or is missing); results may vary" >&2
  fi
fi
temp() {
  local t
  t=$(cat "$SYS/class/thermal/thermal_zone0/temp" 2>/dev/null) && awk '{printf "%.1f C\n", $1/1000}' <<<"$t" || echo unknown
}
echo "temperature before: $(temp)"
PIN=()
if [ -n "${CORES:-}" ]; then PIN=(taskset -c "$CORES"); fi
"${PIN[@]}" "$EDGESLIM" bench "$SLIM" --baseline "$BASE" --profile "$PROFILE" --backend onnxruntime --out "$OUT" "$@"
echo "temperature after: $(temp)"
