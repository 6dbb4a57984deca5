"""Block-scoped modes, restored after the block: a module's train/eval mode, IEEE fp32 math on CUDA,
torch's CPU thread count, the global random generators, attention off its fused fast path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (``model`` itself when it is none): the channel
    capture and surgery run it eagerly, where the wrapper would have dynamo trace edgeslim's own
    capture code (a user's compiled model: 20 s of graph breaks and recompile-limit warnings)."""
    import sys

    if "torch._dynamo.eval_frame" not in sys.modules:  # (torch.compile imports it: no wrapper without it)
        return model
    from torch._dynamo.eval_frame import OptimizedModule

    return model._orig_mod if isinstance(model, OptimizedModule) else model


def refuse_lazy(model: nn.Module) -> None:
    """One-line :class:`~edgeslim.errors.EdgeslimError` if ``model`` has uninitialized lazy modules
    (``LazyConv2d``, ``LazyBatchNorm2d``: their parameters have no shape until a forward pass), which
    whatever counts or reads its parameters (slimming, surgery, counting) needs."""
    from torch.nn.parameter import UninitializedTensorMixin

    from edgeslim.errors import EdgeslimError

    for name, m in uncompiled(model).named_modules():
        # (what torch.nn.parameter.is_lazy tests, on the module's own dicts: parameters(recurse=False) costs
        # 10x more, 2.5 ms a call on timm's MobileNetV3-Large, twice per surgery)
        if any(
            isinstance(t, UninitializedTensorMixin) for t in (*m._parameters.values(), *m._buffers.values())
        ):
            raise EdgeslimError(
                f"the model has uninitialized lazy modules (e.g. {name or 'the model'}: {type(m).__name__}): run one "
                "forward pass on an example batch first (model(example)), which gives their parameters a shape"
            )


def refuse_scripted(model: nn.Module, use: str) -> None:
    """One-line :class:`~edgeslim.errors.EdgeslimError` if ``model`` is a TorchScript program
    (``torch.jit.script``/``trace``): its forward is compiled code, whose calls ``use`` (``"surgery"``,
    ``"the channel graph"``) cannot see or resize."""
    import torch

    from edgeslim.errors import EdgeslimError

    if isinstance(model, torch.jit.ScriptModule):
        raise EdgeslimError(
            f"the model is a TorchScript program ({type(model).__name__}); {use} needs the Python model: give the "
            "nn.Module it was scripted or traced from",
            param="model",
        )


#: the prefix a ``torch.compile`` wrapper puts before the names of its module's submodules
COMPILED_PREFIX = "_orig_mod."


def uncompiled_name(name: str) -> str:
    """A submodule name as :func:`uncompiled`'s module names it: a compiled wrapper's
    ``_orig_mod.`` prefix (a name a user took from the wrapper's ``named_modules``) removed."""
    return name[len(COMPILED_PREFIX) :] if name.startswith(COMPILED_PREFIX) else name


def _set(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:  # torch.export modules keep the mode they were exported in
        pass


def module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """The train/eval flag of ``model`` and of each of its modules, for :func:`restore_modes`."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Give each module the flag :func:`module_modes` recorded: a model in training with layers the
    user keeps in eval (frozen BatchNorm statistics) gets them back as they were, which
    ``model.train(True)`` would not."""
    for m, training in modes.items():
        m.training = training


@contextlib.contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train (``True``) or eval mode for the block; restore every module's own mode
    (a BN the user froze in eval stays so), also on errors."""
    was = module_modes(model)
    _set(model, training)
    try:
        yield model
    finally:
        restore_modes(was)


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``training_mode(model, False)``."""
    return training_mode(model, False)


def _precision_knobs() -> list[tuple[Callable[[], Any], Callable[[Any], None], Any]]:
    """(get, set, IEEE value) of every fp32-precision setting of cuDNN and CUDA matmuls: the legacy
    ones and, on torch >= 2.9, the per-backend ``fp32_precision`` ones. Both kinds are set, since
    torch refuses to run (RuntimeError) when they disagree."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    knobs: list[tuple[Callable[[], Any], Callable[[Any], None], Any]] = [
        (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "highest"),
        (lambda: cudnn.allow_tf32, lambda v: setattr(cudnn, "allow_tf32", v), False),
    ]
    for obj in (getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None), matmul):
        if obj is not None and hasattr(obj, "fp32_precision"):
            knobs.append(
                (lambda o=obj: o.fp32_precision, lambda v, o=obj: setattr(o, "fp32_precision", v), "ieee")
            )
    return knobs


def _read(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except RuntimeError:  # a legacy getter while the settings already disagree: nothing to restore
        return _UNREADABLE


_UNREADABLE = object()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` for the block (None or 0: unchanged), the previous
    count restored after, so a library call leaves the caller's process as it found it."""
    if not n:
        yield
        return
    import torch

    was = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(was)


@contextlib.contextmanager
def unfused_attention() -> Iterator[None]:
    """``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` on their op-by-op path for the
    block, the previous setting restored after: in eval mode without gradients torch runs them as one
    fused op (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) whose
    multiply-accumulates no counter sees."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Python's, numpy's and torch's global random generators (CPU, and every CUDA device already in
    use) put back after the block: a run seeds them for its own reproducibility, a library call
    leaves the caller's sequence where it was."""
    import random

    import numpy as np
    import torch

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Float32 convs and matmuls in IEEE fp32 for the block, the previous settings restored after.

    cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa, ~1e-3 relative error),
    which hides or fakes differences a dense-vs-slim check measures; CPU math is unaffected.
    """
    knobs = _precision_knobs()
    saved = [_read(get) for get, _, _ in knobs]
    try:
        for _, set_, value in knobs:
            set_(value)
        yield
    finally:
        for (_, set_, _), value in zip(knobs, saved):
            if value is not _UNREADABLE:
                set_(value)
