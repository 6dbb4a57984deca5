"""The environment block recorded with every result: device, OS, CPU, runtimes, clocks, power."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from edgeslim.utils.versions import versions


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5) -> str | None:
    if not shutil.which(cmd[0]) and not os.path.exists(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def cpu_model() -> str | None:
    txt = _read("/proc/cpuinfo") or ""
    for line in txt.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def governors() -> list[str]:
    found = set()
    for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"):
        g = _read(str(p))
        if g:
            found.add(g)
    return sorted(found)


def environment(threads: int | None = None) -> dict:
    """Everything that explains a number; absent items are None (nothing is guessed)."""
    env = {
        "hostname": platform.node(),
        "device_model": _read("/proc/device-tree/model"),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "threads": threads,
        "cpu_governor": governors() or None,
        "versions": versions(),
        # Jetson
        "l4t_release": _read("/etc/nv_tegra_release"),
        "jetpack": _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]),
        "nvpmodel": _run(["nvpmodel", "-q"]),
        "jetson_clocks": _run(["jetson_clocks", "--show"]),
        # dGPU
        "nvidia_smi": _run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem", "--format=csv,noheader"]
        ),
    }
    return env
