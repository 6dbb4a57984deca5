"""Pipelines: one request dataclass and one ``run()`` per stage, above the stage packages.

The CLI parses options into a request and renders what ``run`` returns; a Python caller builds
the same request. Defaults live in the request (``None``: the stage's own default), run
directories (lock, overwrite rules, interrupted runs) are handled once in :mod:`.rundir`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from edgeslim.errors import EdgeslimError

R = TypeVar("R")


def request_from_options(cls: type[R], options: dict[str, Any], stage: str) -> R:
    """``cls(**options)`` for a request dataclass, refusing option names it does not have."""
    unknown = sorted(set(options) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise EdgeslimError(f"unknown {stage} options {unknown}")
    return cls(**options)
