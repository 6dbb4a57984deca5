"""Training: :func:`fit` with SGD, schedules, AMP, DDP, checkpoints/resume, and method hooks.

Public names are imported lazily so that ``import edgeslim.train.hooks`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainHook": "edgeslim.channels.hooks",
    "HookList": "edgeslim.channels.hooks",
    "register_method": "edgeslim.train.methods",
    "create_method": "edgeslim.train.methods",
    "list_methods": "edgeslim.train.methods",
    "TrainConfig": "edgeslim.train.config",
    "TrainResult": "edgeslim.train.trainer",
    "fit": "edgeslim.train.trainer",
    "evaluate": "edgeslim.train.evaluation",
    "predict": "edgeslim.train.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeslim.train' has no attribute {name!r}")
