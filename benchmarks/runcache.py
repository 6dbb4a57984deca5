"""Shared by the benchmark scripts: a run's result cached as JSON, so an interrupted sweep resumes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cached(work: Path, name: str, fresh: bool, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s result from ``work/name.json`` if there (and not ``fresh``), else run, time, store, print it."""
    path = work / f"{name}.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    res = fn()
    res["wall_s"] = time.perf_counter() - t0
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    flat = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    print(f"[{name}] {json.dumps(flat)}", flush=True)
    return res


def seed_cache(work: Path, results: dict[str, dict[str, Any]]) -> None:
    """Write each ``name -> result`` into ``work/name.json`` unless an entry is there: committed
    results stand in for the cache of a fresh checkout, so a sweep re-runs only what it lacks."""
    work.mkdir(parents=True, exist_ok=True)
    for name, res in results.items():
        if not (work / f"{name}.json").exists():
            (work / f"{name}.json").write_text(json.dumps(res, indent=2))
