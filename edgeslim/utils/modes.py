"""Switch a module to train/eval mode for a block and restore the mode it was in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _set(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:  # torch.export modules keep the mode they were exported in
        pass


@contextlib.contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train (``True``) or eval mode for the block; restore it, also on errors."""
    was = model.training
    _set(model, training)
    try:
        yield model
    finally:
        _set(model, was)


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``training_mode(model, False)``."""
    return training_mode(model, False)
