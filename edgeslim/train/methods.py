"""Looking up training methods: a name -> factory ``(model, **method_args) -> TrainHook | None``.

The registry itself is passive (:data:`edgeslim.channels.hooks.METHODS`): ``baseline`` and
``subgradient`` (original network slimming) register from :mod:`edgeslim.sparsity.subgradient`,
proximal slimming from :mod:`edgeslim.sparsity.prox`. This module imports the modules named in
:data:`METHOD_MODULES` the first time it is consulted.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from edgeslim.channels.hooks import METHODS as _METHODS
from edgeslim.channels.hooks import MethodFactory, TrainHook, register_method
from edgeslim.errors import EdgeslimError

__all__ = [
    "METHOD_MODULES",
    "MethodFactory",
    "create_method",
    "get_method",
    "list_methods",
    "register_method",
]

#: modules that register methods when imported
METHOD_MODULES: tuple[str, ...] = ("edgeslim.sparsity.subgradient", "edgeslim.sparsity.prox")
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    for mod in METHOD_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the module: surface it
                raise
    _loaded = True


def list_methods() -> list[str]:
    """Names of all registered training methods."""
    _load_builtin()
    return sorted(_METHODS)


def get_method(name: str) -> MethodFactory:
    """The factory registered under ``name`` (one-line error for unknown names)."""
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise EdgeslimError(
            f"unknown training method {name!r}; choose one of: {', '.join(sorted(_METHODS))}"
        ) from None


def create_method(name: str, model: nn.Module, **method_args: Any) -> TrainHook | None:
    """Build the hook of method ``name`` for ``model`` (``None`` for plain training)."""
    factory = get_method(name)
    try:
        inspect.signature(factory).bind(model, **method_args)
    except TypeError as exc:
        raise EdgeslimError(f"bad arguments for training method {name!r}: {exc}") from None
    return factory(model, **method_args)
