"""Process and device memory readings (Linux /proc; Jetson NvMap), no third-party packages; in MiB (2**20 bytes:
/proc's kB are KiB, divided by 1024)."""

from __future__ import annotations

import resource
import sys


def _proc_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process."""
    kb = _proc_kb("/proc/self/status", "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM, else ru_maxrss)."""
    kb = _proc_kb("/proc/self/status", "VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            kb //= 1024
    return kb / 1024


def available_mib() -> float | None:
    """Memory the system can give a process now without swapping (Linux MemAvailable); None elsewhere."""
    kb = _proc_kb("/proc/meminfo", "MemAvailable")
    return kb / 1024 if kb is not None else None


def nvmap_mib() -> float | None:
    """Jetson (nvgpu, JetPack 5/6): NvMapMemUsed from /proc/meminfo; None elsewhere."""
    kb = _proc_kb("/proc/meminfo", "NvMapMemUsed")
    return kb / 1024 if kb is not None else None


class MemoryTrace:
    """RSS (and NvMap) at named points of a worker's life; deltas against the first point."""

    def __init__(self) -> None:
        self.points: dict[str, dict[str, float | None]] = {}

    def mark(self, name: str) -> None:
        self.points[name] = {"rss_mib": rss_mib(), "nvmap_mib": nvmap_mib()}

    def to_dict(self) -> dict:
        out: dict = {"points": self.points, "peak_rss_mib": peak_rss_mib()}
        names = list(self.points)
        if names:
            base = self.points.get("runtime_imported") or self.points[names[0]]
            first = self.points.get("first_inference") or self.points[names[-1]]
            if base["rss_mib"] is not None and first["rss_mib"] is not None:
                out["rss_delta_mib"] = first["rss_mib"] - base["rss_mib"]
                out["peak_rss_delta_mib"] = out["peak_rss_mib"] - base["rss_mib"]
            if base["nvmap_mib"] is not None and first["nvmap_mib"] is not None:
                out["nvmap_delta_mib"] = first["nvmap_mib"] - base["nvmap_mib"]
        return out


#: the keys of a measuring process's memory figures (MiB), and the names records before 2026-12 gave them
#: (the same MiB, named "mb")
MIB_KEYS = {
    "peak_rss_mib": "peak_rss_mb",
    "rss_delta_mib": "rss_delta_mb",
    "peak_rss_delta_mib": "peak_rss_delta_mb",
    "nvmap_delta_mib": "nvmap_delta_mb",
}


def mib(memory: dict, key: str) -> float | None:
    """The figure ``key`` (of :data:`MIB_KEYS`) of a memory table, under its name or its older one."""
    value = memory.get(key)
    return memory.get(MIB_KEYS[key]) if value is None else value
