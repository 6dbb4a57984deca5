"""Jetson telemetry: a tegrastats line parser (JetPack 4 to 7) and a sampler for the timed window.

Formats handled (see tests/fixtures/tegrastats/): rails as ``NAME cur/avg`` (mW implied, JetPack 4),
``NAME 5139mW/5139mW`` (JetPack 5/6) and ``NAME 5139mW/5139mW/5139mW`` (JetPack 7);
``GR3D_FREQ 45%@1300``, ``GR3D_FREQ 12%@[1300,1300]`` (per-GPC, JetPack 7), ``GR3D_FREQ @[..]``
(Thor, no load) and ``GR3D_FREQ 0%`` (no clock, TX2); an optional leading timestamp.
Written from the format description, not from jetson-stats' (AGPL) code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

_RAM = re.compile(r"\bRAM (\d+)/(\d+)([kMG])B")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)([kMG])B")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@(\d+)|@\[([0-9,]+)\])?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?[0-9.]+)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_TS = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d) ")
_UNIT = {"k": 1 / 1024, "M": 1.0, "G": 1024.0}

#: rails that measure the whole module/board input, best first (notes §2.1)
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


@dataclass
class TegraSample:
    t: float = 0.0  # seconds (monotonic clock of the sampler)
    timestamp: str | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    cpu_load: list[float | None] = field(default_factory=list)  # None = core off
    cpu_mhz: list[int | None] = field(default_factory=list)
    gpu_load: float | None = None
    gpu_mhz: list[int] = field(default_factory=list)
    emc_load: float | None = None
    emc_mhz: int | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, float] = field(default_factory=dict)  # instantaneous (first) value

    @property
    def input_power_mw(self) -> tuple[float | None, str]:
        """Board/module input power and which rail(s) it came from (VDD_IN, else the rail sum)."""
        for name in INPUT_RAILS:
            if name in self.rails_mw:
                return self.rails_mw[name], name
        if self.rails_mw:
            return sum(self.rails_mw.values()), "sum of rails"
        return None, "none"


def parse_line(line: str) -> TegraSample:
    """Parse one tegrastats line; unknown fields are ignored."""
    s = TegraSample()
    line = line.strip()
    m = _TS.match(line)
    if m:
        s.timestamp = m.group(1)
    if m := _RAM.search(line):
        s.ram_used_mb = int(m.group(1)) * _UNIT[m.group(3)]
        s.ram_total_mb = int(m.group(2)) * _UNIT[m.group(3)]
    if m := _SWAP.search(line):
        s.swap_used_mb = int(m.group(1)) * _UNIT[m.group(3)]
    if m := _CPU.search(line):
        for core in m.group(1).split(","):
            core = core.strip()
            if not core or core == "off":
                s.cpu_load.append(None)
                s.cpu_mhz.append(None)
                continue
            load, _, mhz = core.partition("@")
            s.cpu_load.append(float(load.rstrip("%")))
            s.cpu_mhz.append(int(mhz) if mhz.isdigit() else None)
    if m := _GR3D.search(line):
        if m.group(1) is not None:
            s.gpu_load = float(m.group(1))
        if m.group(2):
            s.gpu_mhz = [int(m.group(2))]
        elif m.group(3):
            s.gpu_mhz = [int(v) for v in m.group(3).split(",") if v]
    if m := _EMC.search(line):
        s.emc_load = float(m.group(1))
        s.emc_mhz = int(m.group(2)) if m.group(2) else None
    for name, val in _TEMP.findall(line):
        if float(val) > -200:  # -256C marks a sensor that is off (AGX Orin CV0/GPU)
            s.temps_c[name] = float(val)
    body = _TS.sub("", line)
    for m in _RAIL.finditer(body):
        if m.group(1) not in _NOT_RAILS:
            s.rails_mw[m.group(1)] = float(m.group(2))
    return s


def summarize_samples(samples: list[TegraSample], iterations: int = 0, window_s: float = 0.0) -> dict:
    """Mean GPU load/clock, max temperature, mean input power and energy per inference: the mean
    power times ``window_s``, the seconds the ``iterations`` timed inferences took together."""
    if not samples:
        return {"samples": 0}
    pw = [p for p, _ in (x.input_power_mw for x in samples) if p is not None]
    rail = samples[0].input_power_mw[1]
    loads = [x.gpu_load for x in samples if x.gpu_load is not None]
    clocks = [max(x.gpu_mhz) for x in samples if x.gpu_mhz]
    # PMIC@100C is a fixed placeholder on several boards, not a measurement
    temps = [
        max(v for k, v in x.temps_c.items() if k != "PMIC") for x in samples if set(x.temps_c) - {"PMIC"}
    ]
    ram = [x.ram_used_mb for x in samples if x.ram_used_mb is not None]
    out: dict = {
        "samples": len(samples),
        "gpu_load_mean": sum(loads) / len(loads) if loads else None,
        "gpu_mhz_min": min(clocks) if clocks else None,
        "gpu_mhz_max": max(clocks) if clocks else None,
        "temp_max_c": max(temps) if temps else None,
        "ram_used_mb_max": max(ram) if ram else None,
        "power_rail": rail,
        "power_mean_mw": sum(pw) / len(pw) if pw else None,
    }
    if pw and iterations and window_s > 0:
        out["energy_per_inference_mj"] = out["power_mean_mw"] * window_s / iterations  # mW*s = mJ
    return out


def find_tegrastats() -> str | None:
    return shutil.which("tegrastats") or (
        "/usr/bin/tegrastats" if os.path.exists("/usr/bin/tegrastats") else None
    )


class TegrastatsSampler:
    """Runs ``tegrastats --interval N`` in the background and keeps parsed samples.

    Use as a context manager around the timed window; ``window(t0, t1)`` returns the
    samples that fell inside it. Does nothing (no samples) where tegrastats is absent.
    """

    def __init__(self, interval_ms: int = 100, exe: str | None = None) -> None:
        self.interval_ms = interval_ms
        self.exe = exe or find_tegrastats()
        self.samples: list[TegraSample] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self.exe is not None

    def __enter__(self) -> TegrastatsSampler:
        if self.exe:
            # line-buffered where coreutils' stdbuf exists: a block-buffered pipe would hand over samples
            # seconds late, stamped outside the window they measured (not checked on a Jetson)
            line_buffered = [stdbuf, "-oL"] if (stdbuf := shutil.which("stdbuf")) else []
            self._proc = subprocess.Popen(
                [*line_buffered, self.exe, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # its own process group: __exit__ stops whatever it started
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            s = parse_line(line)
            s.t = time.monotonic()
            self.samples.append(s)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:  # it had ended
                pass
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:  # pragma: no cover
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def window(self, t0: float, t1: float) -> list[TegraSample]:
        return [s for s in self.samples if t0 <= s.t <= t1]
