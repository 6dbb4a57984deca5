"""Budget targets as written (``0.5``, ``50%``, ``120M``, ``8ms``), parsed without PyTorch: a request
checks them as it is built."""

from __future__ import annotations

import math
import re

from edgeslim.errors import EdgeslimError

#: the resources a budget can target (``target_macs``, ``target_params``, ``target_latency``)
METRICS = ("macs", "params", "latency")

_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_target(text: str | float, metric: str = "macs", field: str | None = None) -> tuple[str, float]:
    """``("fraction", 0.5)`` or ``("absolute", 1.2e8)``: ``0.5``, ``50%``, ``120M``, ``8ms``. ``field``:
    the parameter its refusals name (default: the request's ``target_<metric>``).

    Fractions are of the dense model; absolute MACs/params take k/M/G suffixes; absolute
    latency needs a unit (s, ms, us). Anything else is one clear error.
    """
    s = str(text).strip()
    if metric not in METRICS:
        raise EdgeslimError(
            f"unknown budget metric {metric!r}; choose one of: {', '.join(METRICS)}", param="metric"
        )
    field = field or f"target_{metric}"  # (the request field the messages name)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(%|[kKmMgGtT]|s|ms|us)?", s)
    if not m:
        hint = "8ms, 0.5 or 50%" if metric == "latency" else "0.5, 50% or 120M"
        raise EdgeslimError(f"{field} {text!r} is not a budget; write e.g. {hint} (no spaces)", param=field)
    value, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(value):
        raise EdgeslimError(
            f"{field} {text!r} is beyond a float's range (infinite); give a finite budget", param=field
        )
    if unit == "%":
        kind, value = "fraction", value / 100.0
    elif unit in _TIME:
        if metric != "latency":
            raise EdgeslimError(f"{field} {text!r}: a time unit only fits a latency target", param=field)
        kind, value = "absolute", value * _TIME[unit]
    elif unit:
        if metric == "latency":
            raise EdgeslimError(f"{field} {text!r}: give a time unit (s, ms, us), e.g. 8ms", param=field)
        kind, value = "absolute", value * _UNITS[unit.lower()]
    elif value <= 1.0:
        kind = "fraction"
    elif metric == "latency":
        raise EdgeslimError(
            f"{field} {text!r}: give a time unit (8ms) or a fraction of the dense model (0.5)", param=field
        )
    elif value < 1000:
        kind = "fraction"  # (refused below: a count under 1000 is no network's)
    else:
        kind = "absolute"
    if kind == "fraction" and value >= 1:
        absolute = "time write e.g. 8ms" if metric == "latency" else "count write e.g. 120M"
        count = "" if unit == "%" else f"; for an absolute {absolute}"
        raise EdgeslimError(
            f"{field} {text!r}: a fraction of the dense model must be below 1 (at 1 or above it the budget is "
            f"the dense model or more: nothing to remove){count}",
            param=field,
        )
    if not value > 0:
        raise EdgeslimError(f"{field} {text!r} must be > 0", param=field)
    return kind, value
