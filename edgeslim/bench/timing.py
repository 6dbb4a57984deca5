"""The timing loop: warm-up by time, then enough iterations for stable percentiles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from edgeslim.errors import EdgeslimError


@dataclass
class TimingConfig:
    """Warm up for ``warmup_s`` and at least ``warmup_iters`` (stopping at ``max_time_s`` whatever
    these ask); then measure until both ``min_iters`` and ``min_time_s`` are reached, stopping at
    ``max_iters`` or ``max_time_s``."""

    warmup_s: float = 1.0
    warmup_iters: int = 20
    min_iters: int = 200
    min_time_s: float = 2.0
    max_iters: int = 20000
    max_time_s: float = 60.0

    def __post_init__(self) -> None:
        """Refuse values that make the loop meaningless (NaN, negative, zero or inverted limits)."""
        for name in ("warmup_s", "min_time_s", "max_time_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise EdgeslimError(
                    f"TimingConfig {name} must be a finite number of seconds, got {v!r}", param=name
                )
        for name in ("warmup_iters", "min_iters", "max_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise EdgeslimError(f"TimingConfig {name} must be an integer, got {v!r}", param=name)
        if self.warmup_s < 0 or self.warmup_iters < 0:
            raise EdgeslimError(
                f"TimingConfig warmup_s and warmup_iters must be >= 0, got {self.warmup_s} and {self.warmup_iters}",
                param=("warmup_s", "warmup_iters"),
            )
        if self.min_time_s < 0 or self.min_iters < 1:
            raise EdgeslimError(
                f"TimingConfig needs min_time_s >= 0 and min_iters >= 1, got {self.min_time_s} and {self.min_iters}",
                param=("min_time_s", "min_iters"),
            )
        if self.max_time_s <= 0 or self.max_time_s < self.min_time_s:
            raise EdgeslimError(
                f"TimingConfig max_time_s ({self.max_time_s:g} s) must be > 0 and at least min_time_s "
                f"({self.min_time_s:g} s): raise the first or lower the second",
                param=("max_time_s", "min_time_s"),
            )
        if self.max_iters < self.min_iters:
            raise EdgeslimError(
                f"TimingConfig min_iters ({self.min_iters}) must be <= max_iters ({self.max_iters}, the cap of a "
                "measuring loop): lower it",
                param="min_iters",
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def done(self, n: int, elapsed_s: float) -> bool:
        """Whether a measuring loop of ``n`` samples over ``elapsed_s`` seconds may stop."""
        return (
            (n >= self.min_iters and elapsed_s >= self.min_time_s)
            or n >= self.max_iters
            or elapsed_s >= self.max_time_s
        )


def warmup(fn: Callable[[], object], cfg: TimingConfig) -> int:
    t0 = time.perf_counter()
    n = 0
    while n < cfg.warmup_iters or time.perf_counter() - t0 < cfg.warmup_s:
        fn()
        n += 1
        if time.perf_counter() - t0 > cfg.max_time_s:
            break
    return n


def host_loop(fn: Callable[[], object], cfg: TimingConfig) -> list[float]:
    """Per-iteration wall times (seconds) of a synchronous ``fn``, after warm-up."""
    warmup(fn, cfg)
    clock = time.perf_counter_ns
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) * 1e-9)
        if cfg.done(len(samples), (t1 - start) * 1e-9):
            return samples
