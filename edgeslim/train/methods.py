"""Registry of training methods: a name -> factory ``(model, **method_args) -> TrainHook | None``.

``baseline`` and ``subgradient`` (original network slimming) are registered by
:mod:`edgeslim.sparsity.subgradient`; proximal slimming by :mod:`edgeslim.sparsity.prox`.
Those modules are imported lazily, the first time the registry is consulted.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from edgeslim.errors import EdgeslimError
from edgeslim.train.hooks import TrainHook

MethodFactory = Callable[..., "TrainHook | None"]

_METHODS: dict[str, MethodFactory] = {}
#: modules that register methods when imported
METHOD_MODULES: tuple[str, ...] = ("edgeslim.sparsity.subgradient", "edgeslim.sparsity.prox")
_loaded = False


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: ``@register_method("prox")`` on ``def factory(model, **args) -> TrainHook``."""

    def deco(factory: MethodFactory) -> MethodFactory:
        if name in _METHODS and _METHODS[name] is not factory:
            raise ValueError(f"training method {name!r} is already registered")
        _METHODS[name] = factory
        return factory

    return deco


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
