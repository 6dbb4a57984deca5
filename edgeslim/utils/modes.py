"""Block-scoped modes, restored after the block: a module's train/eval mode, IEEE fp32 math on CUDA."""

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


def _precision_knobs() -> list[tuple[object, str, object]]:
    """(object, attribute, IEEE value) of the cuDNN (conv, rnn) and CUDA matmul fp32 precision settings."""
    import torch

    matmul = torch.backends.cuda.matmul
    new = [getattr(torch.backends.cudnn, k, None) for k in ("conv", "rnn")] + [matmul]
    if all(hasattr(obj, "fp32_precision") for obj in new):  # torch >= 2.9: never mix in the legacy flags
        return [(obj, "fp32_precision", "ieee") for obj in new]
    return [(torch.backends.cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Float32 convs and matmuls in IEEE fp32 for the block, the previous settings restored after.

    cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa, ~1e-3 relative error),
    which hides or fakes differences a dense-vs-slim check measures; CPU math is unaffected.
    """
    knobs = _precision_knobs()
    saved = [getattr(obj, attr) for obj, attr, _ in knobs]
    try:
        for obj, attr, value in knobs:
            setattr(obj, attr, value)
        yield
    finally:
        for (obj, attr, _), value in zip(knobs, saved):
            setattr(obj, attr, value)
