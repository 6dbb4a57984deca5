"""The training-hook protocol and the registry of training methods.

Slimming methods (:mod:`edgeslim.sparsity`) implement :class:`TrainHook` and register a
factory with :func:`register_method`; the trainer (:mod:`edgeslim.train`) calls the hooks.
Both depend on this module, never on each other.

The trainer calls, per run / iteration / epoch::

    on_train_start(model, optimizer)        once, after the optimizer exists (also on resume)
    after_backward(model, optimizer)        grads are ready, before optimizer.step()
    after_step(model, optimizer)            after optimizer.step() (a prox step goes here)
    on_epoch_end(epoch, model) -> dict      extra fields for the JSON-lines log
    on_train_end(model)                     once, after the last epoch

``model`` is the bare module (never the DDP wrapper). Hook state (``state_dict``) is
saved in the checkpoint's ``train_state["hooks"]`` and restored on ``--resume``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import nn
from torch.optim import Optimizer

from edgeslim.errors import EdgeslimError


class TrainHook:
    """Base class with no-op methods; override what you need."""

    #: name used in logs and as the key of the hook's state in checkpoints
    name: str = "hook"

    def on_train_start(self, model: nn.Module, optimizer: Optimizer) -> None:
        """Called once before the first iteration (also after a resume)."""

    def after_backward(self, model: nn.Module, optimizer: Optimizer) -> None:
        """Gradients are ready; called before ``optimizer.step()`` (and before grad unscaling
        is finished under AMP: the trainer unscales first, so grads are true grads)."""

    def after_step(self, model: nn.Module, optimizer: Optimizer) -> None:
        """Called after ``optimizer.step()`` (skipped when AMP skipped the step)."""

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Extra numeric fields for the epoch's log record."""
        return {}

    def on_train_end(self, model: nn.Module) -> None:
        """Called once after the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit after ``--resume`` (tensors allowed)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class HookList(TrainHook):
    """Several hooks called in order; state is kept per hook under ``"<index>:<name>"``."""

    name = "hooks"

    def __init__(self, hooks: Iterable[TrainHook | None] = ()) -> None:
        self.hooks: list[TrainHook] = [h for h in hooks if h is not None]

    def __iter__(self) -> Iterator[TrainHook]:
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)

    def _key(self, i: int, h: TrainHook) -> str:
        return f"{i}:{getattr(h, 'name', type(h).__name__)}"

    def on_train_start(self, model: nn.Module, optimizer: Optimizer) -> None:
        for h in self.hooks:
            h.on_train_start(model, optimizer)

    def after_backward(self, model: nn.Module, optimizer: Optimizer) -> None:
        for h in self.hooks:
            h.after_backward(model, optimizer)

    def after_step(self, model: nn.Module, optimizer: Optimizer) -> None:
        for h in self.hooks:
            h.after_step(model, optimizer)

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        fields: dict[str, float] = {}
        for h in self.hooks:
            fields.update(h.on_epoch_end(epoch, model) or {})
        return fields

    def on_train_end(self, model: nn.Module) -> None:
        for h in self.hooks:
            h.on_train_end(model)

    def state_dict(self) -> dict[str, Any]:
        return {self._key(i, h): h.state_dict() for i, h in enumerate(self.hooks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, h in enumerate(self.hooks):
            key = self._key(i, h)
            if key not in state:
                raise EdgeslimError(
                    f"the checkpoint has no state for training hook {key!r} (it has {sorted(state)}); "
                    "resume with the same training method as the original run"
                )
            h.load_state_dict(state[key])


MethodFactory = Callable[..., "TrainHook | None"]

#: name -> factory ``(model, **method_args) -> TrainHook | None``; filled by the methods themselves
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator: ``@register_method("prox")`` on ``def factory(model, **args) -> TrainHook``."""

    def deco(factory: MethodFactory) -> MethodFactory:
        if name in METHODS and METHODS[name] is not factory:
            raise ValueError(f"training method {name!r} is already registered")
        METHODS[name] = factory
        return factory

    return deco
