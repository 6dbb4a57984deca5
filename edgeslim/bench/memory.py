"""Process and device memory readings (Linux /proc; Jetson NvMap), no third-party packages."""

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


def rss_mb() -> float | None:
    """Current resident set size of this process."""
    kb = _proc_kb("/proc/self/status", "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM, else ru_maxrss)."""
    kb = _proc_kb("/proc/self/status", "VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            kb //= 1024
    return kb / 1024


def available_mb() -> float | None:
    """Memory the system can give a process now without swapping (Linux MemAvailable); None elsewhere."""
    kb = _proc_kb("/proc/meminfo", "MemAvailable")
    return kb / 1024 if kb is not None else None


def nvmap_mb() -> float | None:
    """Jetson (nvgpu, JetPack 5/6): NvMapMemUsed from /proc/meminfo; None elsewhere."""
    kb = _proc_kb("/proc/meminfo", "NvMapMemUsed")
    return kb / 1024 if kb is not None else None


class MemoryTrace:
    """RSS (and NvMap) at named points of a worker's life; deltas against the first point."""

    def __init__(self) -> None:
        self.points: dict[str, dict[str, float | None]] = {}

    def mark(self, name: str) -> None:
        self.points[name] = {"rss_mb": rss_mb(), "nvmap_mb": nvmap_mb()}

    def to_dict(self) -> dict:
        out: dict = {"points": self.points, "peak_rss_mb": peak_rss_mb()}
        names = list(self.points)
        if names:
            base = self.points.get("runtime_imported") or self.points[names[0]]
            first = self.points.get("first_inference") or self.points[names[-1]]
            if base["rss_mb"] is not None and first["rss_mb"] is not None:
                out["rss_delta_mb"] = first["rss_mb"] - base["rss_mb"]
                out["peak_rss_delta_mb"] = out["peak_rss_mb"] - base["rss_mb"]
            if base["nvmap_mb"] is not None and first["nvmap_mb"] is not None:
                out["nvmap_delta_mb"] = first["nvmap_mb"] - base["nvmap_mb"]
        return out
