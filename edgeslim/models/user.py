"""Architectures a user brings: their own Python code, a whole pickled module, a new classifier head.

Two architecture names build models that edgeslim does not ship:

- ``package.module:Factory`` imports the user's module and calls ``Factory`` (a class or a
  function), passing ``num_classes``/``in_channels`` when it takes them;
- ``pickle:/path/model.pt`` unpickles a whole ``nn.Module`` saved with ``torch.save(model)``.

Both run code, so a checkpoint that names one is loaded only when the user trusts it
(``trust_pickle``; docs/security.md). A factory that takes ``num_classes`` builds its own head (a
model whose ``[N, k]`` output has another count is refused: the factory ignores it); for
one that does not and for a pickle, the classifier head is replaced when the requested number of
classes differs from the model's (:func:`replace_head`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeslim.errors import EdgeslimError, first_line
from edgeslim.models.registry import (
    cwd_importable,
    explain_unpickling,
    import_user_module,
    register_code_resolver,
    register_prefix,
)
from edgeslim.utils.modes import module_modes, restore_modes
from edgeslim.utils.state_dicts import EMA_KEYS

log = logging.getLogger(__name__)

PICKLE_PREFIX = "pickle"


def classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier head: timm's ``get_classifier()``, else the last ``nn.Linear`` (registration
    order), else the last 1x1 ``nn.Conv2d`` (SqueezeNet-style heads); None when there is none."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        for name, m in model.named_modules():
            if m is head and isinstance(m, (nn.Linear, nn.Conv2d)):
                return name, m
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    return convs[-1] if convs else None


def head_classes(model: nn.Module) -> int | None:
    """The number of classes the classifier head outputs (None: no recognisable head)."""
    found = classifier(model)
    if found is None:
        return None
    m = found[1]
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def replace_head(model: nn.Module, num_classes: int) -> tuple[str, int, int]:
    """Give ``model`` a freshly initialised classifier head with ``num_classes`` outputs.

    Returns ``(head name, old classes, new classes)``; the model is changed in place.
    """
    found = classifier(model)
    if found is None:
        raise EdgeslimError(
            f"{type(model).__name__} has no classifier head edgeslim recognises (a last nn.Linear or 1x1 "
            "conv); build it with the right number of classes in your own code"
        )
    name, old = found
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        before = old.out_features
    else:
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
        before = old.out_channels
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], new)
    return name, before, num_classes


def describe_output(y: Any) -> str:
    """A model output in a few words: ``a tensor of shape [2, 10]``, ``a dict (out, aux)``, ..."""
    if isinstance(y, torch.Tensor):
        return f"a tensor of shape [{', '.join(map(str, y.shape))}]"
    if isinstance(y, dict):
        return f"a dict ({', '.join(map(str, list(y)[:4]))})"
    if isinstance(y, (tuple, list)):
        return f"a {type(y).__name__} of {len(y)}"
    return f"a {type(y).__name__}"


#: the batch a probe forward runs (two: a [2, k] output is told from a [k, 2] one)
PROBE_BATCH = 2


def probe_forward(
    model: nn.Module,
    x: torch.Tensor,
    *,
    training: bool = False,
    hook: tuple[str, Callable[..., Any]] | None = None,
) -> Any:
    """``model(x)`` without gradients, in eval mode (``training``: training mode), with no copy of the
    model: afterwards every module's training flag and every buffer (a BatchNorm's statistics) are as
    they were; ``hook`` ``(layer name, forward hook)`` is registered for this forward only."""
    modes = module_modes(model)
    buffers = [(m, dict(m._buffers)) for m in model.modules()]
    saved = [{k: b.detach().clone() for k, b in own.items() if b is not None} for _, own in buffers]
    handle = model.get_submodule(hook[0]).register_forward_hook(hook[1]) if hook is not None else None
    try:
        model.train(training)
        with torch.no_grad():
            return model(x)
    finally:
        if handle is not None:
            handle.remove()
        restore_modes(modes)
        with torch.no_grad():
            for (m, own), values in zip(buffers, saved):
                m._buffers.clear()
                m._buffers.update(own)
                for k, v in values.items():
                    if own[k].shape == v.shape:
                        own[k].copy_(v)
                    else:  # (resized in place)
                        own[k].set_(v)


def _probe(model: nn.Module, input_shape: tuple[int, ...], shifted: str | None = None) -> Any:
    """The output of ``model`` (:func:`probe_forward`: eval mode, no gradients, left as it was) on a
    batch of :data:`PROBE_BATCH` zero inputs of ``input_shape`` (C,H,W) in its parameters' dtype and
    device; ``shifted`` names a layer whose outputs are shifted by 1, 2, ... along dim 1 (from 1: a layer of
    one output, a binary classifier's single logit, changes too)."""
    first = next((t for t in model.parameters() if t.is_floating_point()), None)
    x = torch.zeros((PROBE_BATCH, *input_shape), dtype=first.dtype if first is not None else None,
                    device=first.device if first is not None else None)  # fmt: skip

    def shift(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        step = torch.arange(1, out.shape[1] + 1, dtype=out.dtype, device=out.device)
        return out + step.reshape(1, -1, *([1] * (out.ndim - 2)))

    return probe_forward(model, x, hook=None if shifted is None else (shifted, shift))


def class_count(y: Any, batch: int) -> int | None:
    """``k`` where a forward's result ``y`` on ``batch`` inputs is one ``[batch, k]`` tensor (a
    classifier's scores); None for any other result (a detector's, a segmenter's)."""
    return int(y.shape[1]) if isinstance(y, torch.Tensor) and y.ndim == 2 and len(y) == batch else None


def output_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """The class count of a classifier: ``k`` where ``model``'s forward maps a batch of inputs of
    ``input_shape`` (C,H,W) to one ``[N, k]`` tensor; None for any other output (a detector's, a
    segmenter's) or a forward that fails at that shape: unknown, never guessed from a last layer."""
    try:
        y = _probe(model, input_shape)
    except Exception:  # noqa: BLE001 - the user's model can fail in any way: its count is unknown
        return None
    return class_count(y, PROBE_BATCH)


def _not_the_head(model: nn.Module, name: str, head: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """None where ``head`` (``name``) provably makes ``model``'s class scores: the forward on inputs
    of ``input_shape`` returns one ``[N, k]`` tensor, ``k`` is the layer's number of outputs, and
    shifting the layer's outputs changes that tensor; else what the probe saw instead. A forward that
    fails propagates its error."""
    k = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    y = _probe(model, input_shape)
    got = class_count(y, PROBE_BATCH)
    if got is None:
        return f"its forward returns {describe_output(y)}, not one [N, classes] tensor"
    if got != k:
        return f"its forward returns [N, {got}] scores, and {name} has {k} outputs"
    if torch.equal(y, _probe(model, input_shape, name)):
        return f"its [N, {k}] output does not come from {name}"
    return None


def _fit_classes(
    model: nn.Module, num_classes: int | None, input_shape: tuple[int, ...], what: str
) -> nn.Module:
    """``model`` (``what`` names it) with a new ``num_classes`` head where its classifier head has
    another count (None: as built); a layer is replaced only where it provably makes the model's
    ``[N, classes]`` output on inputs of ``input_shape`` (:func:`_not_the_head`), else refused (a
    forward that fails at that shape: naming ``input_shape``, the C,H,W it ran at)."""
    have = head_classes(model)
    if num_classes is None or have is None or have == num_classes:
        return model
    name, head = classifier(model)  # type: ignore[misc]  (a count was read from it)
    try:
        why = _not_the_head(model, name, head, input_shape)
    except Exception as exc:  # noqa: BLE001 - the user's model can fail in any way: at this size?
        raise EdgeslimError(
            f"{what} cannot be given {num_classes} classes: edgeslim runs it to find its classifier head, and "
            f"its forward fails on inputs of shape {','.join(map(str, input_shape))} ({first_line(exc)[:120]}); "
            "give the input shape it takes as input_shape (C,H,W; in a ModelSpec: in_channels and input_size)",
            param="input_shape",
        ) from exc
    if why is not None:
        raise EdgeslimError(
            f"{what} is not a classifier whose head edgeslim can find ({why}), so it cannot be given "
            f"{num_classes} classes: leave num_classes out, or build it with {num_classes} classes in "
            "your own code (a package.module:Factory with a num_classes parameter builds its own head)",
            param="num_classes",
        )
    replace_head(model, num_classes)
    return model


def unpickle_trusted(path: str | Path, what: str, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=False)`` (the caller trusts the file) with the current
    directory importable, where the user's model classes usually live; a class that cannot be found
    is one :class:`EdgeslimError` naming the fix (:func:`explain_unpickling`, ``what`` names the
    file), any other failure propagates."""
    import torch

    try:
        # (given open: torch reads a name ending in .safetensors as safetensors, whatever it holds)
        with cwd_importable(), open(path, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary code: anything can come out
        better = explain_unpickling(what, exc)
        if better is not None:
            raise better from exc
        raise


def build_from_pickle(
    path: str,
    num_classes: int | None = None,
    in_channels: int = 3,
    probe_size: tuple[int, int] = (32, 32),
    **_: Any,
) -> nn.Module:
    """The whole ``nn.Module`` pickled at ``path`` (runs its code), with a new head of ``num_classes``
    outputs where that differs from its own (None: its own head; see :func:`_fit_classes`, which runs
    it on inputs of ``in_channels`` x ``probe_size``)."""

    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"the pickled model {p} this architecture names does not exist; restore it")
    try:
        model = unpickle_trusted(p, what=path)
    except EdgeslimError:
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary code: anything can come out
        raise EdgeslimError(f"{p} could not be unpickled ({type(exc).__name__}: {exc})") from exc
    found = pickled_module(model, what=str(p))
    if found is None:
        raise not_a_module(model, str(p))
    # (kept in its dtype: the weights loaded into it keep theirs, cast_tensors; the pipelines settle the rest)
    return _fit_classes(found, num_classes, (in_channels, *probe_size), f"{PICKLE_PREFIX}:{path}")


def low_precision(model: nn.Module) -> torch.dtype | None:
    """The half-precision dtype (``torch.float16``/``torch.bfloat16``) of ``model``'s first parameter
    or buffer held in one, else None."""
    import itertools

    half = (torch.float16, torch.bfloat16)
    return next(
        (t.dtype for t in itertools.chain(model.parameters(), model.buffers()) if t.dtype in half), None
    )


def widen_to_float32(model: nn.Module) -> torch.dtype | None:
    """Make ``model``'s float16/bfloat16 parameters and buffers float32 (exact), in place; returns the
    dtype they had (None: none was, nothing changed). Other dtypes (float64, integers) are kept."""
    dtype = low_precision(model)
    if dtype is not None:
        model._apply(lambda t: t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)
    return dtype


def tensor_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """The dtype of each of ``model``'s floating-point parameters and buffers, by qualified name."""
    import itertools

    named = itertools.chain(model.named_parameters(), model.named_buffers())
    return {n: t.dtype for n, t in named if t.is_floating_point()}


def saved_dtypes(state_dict: dict[str, Any]) -> dict[str, torch.dtype]:
    """The dtype of each floating-point tensor of ``state_dict``, by name."""
    return {
        k: v.dtype for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
    }


def cast_tensors(model: nn.Module, dtypes: dict[str, torch.dtype], *, widen_only: bool = False) -> None:
    """Give the floating-point parameters and buffers of ``model`` named in ``dtypes`` (qualified
    names, as :func:`tensor_dtypes` gives) those dtypes, in place; other names are ignored.
    ``widen_only``: only where the dtype has more bits than the tensor's (weights about to be loaded:
    float32 ones into a float16 pickle load exactly, float16 ones leave a float32 model float32)."""
    for name, dtype in dtypes.items():
        owner, _, leaf = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue
        param, buf = module._parameters.get(leaf), module._buffers.get(leaf)
        now = param if param is not None else buf
        if (
            widen_only
            and now is not None
            and now.is_floating_point()
            and (torch.finfo(dtype).bits <= torch.finfo(now.dtype).bits)
        ):
            continue
        if param is not None and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
        elif param is None and buf is not None and buf.is_floating_point() and buf.dtype != dtype:
            module._buffers[leaf] = buf.to(dtype)


#: keys under which a training script's checkpoint dict holds its whole model (the first found is used)
MODULE_KEYS = ("model", *EMA_KEYS, "module", "net")


def pickled_module(obj: Any, what: str = "the file") -> nn.Module | None:
    """The model a trusted pickle holds: the object itself, or the whole module a training script's
    checkpoint dict keeps under one of :data:`MODULE_KEYS` (``{"model": model, "epoch": 3}``); an
    ultralytics checkpoint (``what``) is refused: its model loads as ``yolo:PATH``."""
    if isinstance(obj, nn.Module):
        return obj
    if not isinstance(obj, dict):
        return None
    found = next((obj[k] for k in MODULE_KEYS if isinstance(obj.get(k), nn.Module)), None)
    if found is not None and type(found).__module__.split(".")[0] == "ultralytics":
        raise EdgeslimError(
            f"{what} is an ultralytics checkpoint: load it as yolo:{what} (with trust_pickle), which keeps "
            "its detection head and trained size",
            param="trust_pickle",
        )
    return found


def not_a_module(obj: Any, what: str) -> EdgeslimError:
    """The error for a trusted pickle ``what`` whose object :func:`pickled_module` found no model in: for a
    dict, the keys it looked under (:data:`MODULE_KEYS`) and the keys that do hold an nn.Module, and how
    to re-save it (a review's ``{"m": model}`` was told only "holds a dict, not an nn.Module")."""
    head = f"{what} holds a {type(obj).__name__}, not an nn.Module"
    if not isinstance(obj, dict):
        return EdgeslimError(f"{head}; save the model itself: torch.save(model, PATH)")
    tried = ", ".join(MODULE_KEYS)
    held = [k for k, v in obj.items() if isinstance(v, nn.Module)]
    if held:
        key = held[0]
        kinds = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in held[:5])
        return EdgeslimError(
            f"{head}: none of the keys a model is looked for under ({tried}) holds one, but {kinds} "
            f"{'does' if len(held) == 1 else 'do'}; re-save that module under 'model' "
            f"(torch.save({{'model': ckpt[{key!r}]}}, PATH)) or alone (torch.save(ckpt[{key!r}], PATH))"
        )
    keys = ", ".join(repr(k) for k in list(obj)[:8]) + (f" and {len(obj) - 8} more" if len(obj) > 8 else "")
    return EdgeslimError(
        f"{head}: no key holds one (looked for under {tried}; its keys: {keys or 'none'}); a state_dict goes "
        "with its architecture (module:Factory, weights=FILE), a whole model is saved with torch.save(model, PATH)"
    )


def _factory(reference: str) -> tuple[Any, Any]:
    """The class or function ``package.module:Attr`` names, and its parameters (None: unknown)."""
    module_name, attr = reference.split(":", 1)
    module = import_user_module(reference)  # the current directory importable; one-line reasons
    try:
        factory = module
        for part in attr.split("."):
            factory = getattr(factory, part)
    except AttributeError:
        raise EdgeslimError(
            f"{module_name} has no {attr!r}; check the name after ':' in {reference!r}"
        ) from None
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = None
    return factory, params


def _takes_any_keyword(params: Any) -> bool:
    """Whether a signature's ``params`` take ``**kwargs`` (so a ``num_classes`` reaches the code)."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def code_defaults(reference: str) -> dict[str, Any]:
    """The :class:`ModelSpec` fields ``package.module:Attr`` is built with when the user gives none:
    the ``num_classes`` default of its signature (recorded, so a checkpoint rebuilds with it); None
    when it takes no ``num_classes`` (its output's count is read back, :func:`output_classes`); nothing
    (10) when it requires one."""
    _, params = _factory(reference)
    if params is None:  # (a signature Python cannot read: given num_classes as before)
        return {}
    p = params.get("num_classes")
    if p is None:
        return {} if _takes_any_keyword(params) else {"num_classes": None}
    if isinstance(p.default, int) and not isinstance(p.default, bool) and p.default > 0:
        return {"num_classes": p.default}
    return {}


def build_from_code(
    reference: str,
    num_classes: int | None = None,
    in_channels: int = 3,
    probe_size: tuple[int, int] = (32, 32),
    **kwargs: Any,
) -> nn.Module:
    """Import ``package.module:Attr`` and build the model (passing the arguments it accepts;
    ``num_classes`` None: the code's own count). A factory given ``num_classes`` builds its own head,
    which is kept as built (a detector's last layer is no class head), and refused
    (:class:`IgnoredClasses`) where its ``[N, k]`` output on inputs of ``in_channels`` x
    ``probe_size`` has another ``k``; only one that does not take it gets its class count fitted by
    edgeslim (:func:`_fit_classes`)."""
    factory, params = _factory(reference)
    params = params or {}
    accepts_any = _takes_any_keyword(params)
    call = dict(kwargs)
    passed = num_classes is not None and ("num_classes" in params or accepts_any)
    if passed:
        call["num_classes"] = num_classes
    if "in_channels" in params:
        call["in_channels"] = in_channels
    try:
        with cwd_importable():  # for what the factory imports when called
            model = factory(**call)
    except (EdgeslimError, OSError, MemoryError):  # (a failed download, no memory: the CLI words those)
        raise
    except Exception as exc:  # noqa: BLE001 - any error of the user's code: one line, not "report it"
        raise EdgeslimError(
            f"{reference}({', '.join(call)}) failed in your code: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise EdgeslimError(f"{reference} returned a {type(model).__name__}, not an nn.Module")
    if not passed:
        return _fit_classes(model, num_classes, (in_channels, *probe_size), reference)
    built = output_classes(model, (in_channels, *probe_size))  # (None: no [N, k] output, nothing to check)
    if built is not None and built != num_classes:
        raise IgnoredClasses(model, reference, num_classes, built)
    return model


class IgnoredClasses(EdgeslimError):
    """A factory given ``num_classes`` built a model whose ``[N, k]`` output has another ``k`` (it
    ignores ``num_classes``); ``model`` is that model as built, ``built`` its count."""

    def __init__(self, model: nn.Module, reference: str, num_classes: int, built: int) -> None:
        super().__init__(
            f"{reference} was given num_classes {num_classes} but the model it builds outputs {built} classes "
            f"(the factory ignores the count): give {built}, or make the factory build that many outputs",
            param="num_classes",
        )
        self.model, self.built, self.reference = model, built, reference


def refit_ignored_head(refused: IgnoredClasses, num_classes: int, what: str) -> nn.Module:
    """The model ``refused`` holds with its classifier head replaced by one of ``num_classes`` outputs
    (:func:`replace_head`), as edgeslim did before it checked a factory's count: how a checkpoint
    (``what``) of a factory that ignores ``num_classes`` was written, with one warning saying so."""
    replace_head(refused.model, num_classes)
    log.warning(
        "%s was written for %s, whose model outputs %d classes whatever num_classes it is given: its "
        "head is replaced by one of %d outputs, as the edgeslim that wrote it did",
        what, refused.reference, refused.built, num_classes,
    )  # fmt: skip
    return refused.model


def _list_none() -> list[str]:
    return []


def _register() -> None:
    register_prefix(PICKLE_PREFIX, build_from_pickle, _list_none, runs_code=True,
                    defaults=lambda _name: {"num_classes": None}, classes_of=output_classes, sized=True)  # fmt: skip
    register_code_resolver(build_from_code, classes_of=output_classes, defaults=code_defaults)


_register()


def _head_mismatch(model: nn.Module, state_dict: dict[str, Any]) -> tuple[list[str], int | None]:
    """Keys whose shapes differ from ``model``'s, and the class count they imply (the same for all of
    them, in at most two layers; else None)."""
    own = model.state_dict()
    keys = [k for k, v in state_dict.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    counts = {
        int(state_dict[k].shape[0])
        for k in keys
        if state_dict[k].ndim >= 1 and tuple(state_dict[k].shape[1:]) == tuple(own[k].shape[1:])
    }
    # the classifier's weight and bias (and a segmenter's auxiliary head's): at most two layers
    layers = {k.rsplit(".", 1)[0] for k in keys}
    n = counts.pop() if len(counts) == 1 and len(layers) <= 2 else None
    return keys, n


def channels_fix(channels: int, channels_from: str = "input_shape") -> str:
    """What to give for a model that takes ``channels``-channel images, by the parameter that set
    the input's channels (``channels_from``: ``"input_shape"``, or ``"data"``: the data set's images)."""
    return (
        f"data of {channels}-channel images"
        if channels_from == "data"
        else f"input_shape with {channels} channels"
    )


def load_weights(
    model: nn.Module, state_dict: dict[str, Any], what: str, channels_from: str = "input_shape"
) -> None:
    """Load ``state_dict`` into ``model`` exactly (every key, every shape), with one-line errors;
    ``channels_from`` names the parameter that set the model's input channels (``"input_shape"``, or
    ``"data"``: the data set's images), which such an error asks to change."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not _filled_in(k)]
    unexpected = [k for k in state_dict if k not in own]
    shapes, _ = _head_mismatch(model, state_dict)
    first = next((k for k, v in own.items() if v.ndim == 4), None)  # the stem conv's weight
    if first in shapes and not (missing or unexpected):
        a, b = tuple(own[first].shape), tuple(state_dict[first].shape)
        if len(b) == 4 and a[0] == b[0] and a[2:] == b[2:] and a[1] != b[1]:
            raise EdgeslimError(
                f"{what} take {b[1]}-channel images ({first} is {list(b)}) and the model is built for "
                f"{a[1]}: give {channels_fix(b[1], channels_from)}",
                param=channels_from,
            )
    if missing or unexpected or shapes:
        example = (shapes or missing or unexpected)[0]
        # same names, other shapes: trained for another class count (a detector's head widths follow it)?
        hint = (
            ", or the number of classes they were trained for as num_classes"
            if not (missing or unexpected)
            else ""
        )
        raise EdgeslimError(
            f"{what} does not fit the architecture ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} of another shape, e.g. {example!r}); give the architecture they were trained "
            f"with{hint}",
            param="num_classes" if hint else None,
        )
    cast_tensors(
        model, saved_dtypes(state_dict), widen_only=True
    )  # (float32 weights into a float16 pickle: exact)
    try:
        model.load_state_dict(state_dict)
    except Exception as exc:  # noqa: BLE001 - tensors torch cannot copy in: meta, sparse, quantized ones
        raise EdgeslimError(
            f"{what} cannot be loaded into the model ({first_line(exc)[:200]}); save them as plain dense tensors "
            "(torch.save(model.state_dict(), path) of a model on the CPU)"
        ) from exc


def _filled_in(key: str) -> bool:
    """Whether a state_dict may lack ``key``: BatchNorm fills in its ``num_batches_tracked`` (older
    PyTorch, converted weights)."""
    return key.rsplit(".", 1)[-1] == "num_batches_tracked"


def _covers(own: set[str], names: set[str]) -> bool:
    """Whether ``names`` hold every one of ``own`` (up to what a module fills in itself)."""
    return all(k in names or _filled_in(k) for k in own)


def under_prefix(model: nn.Module, state_dict: dict[str, Any], what: str = "the weights") -> dict[str, Any]:
    """``state_dict`` as ``model`` names its entries: as saved, else without the prefix a wrapper put
    before every name (DDP, ``torch.compile``, ``AveragedModel``), else the entries under the one key
    prefix (``model.`` of a Lightning module, ``backbone.``) whose names are exactly ``model``'s own.
    Several such prefixes: an exponential moving average's (``ema``) yields to the others; two copies
    of the network left (MoCo's ``encoder_q.``/``encoder_k.``, a student and a teacher) are refused
    rather than one picked."""
    from edgeslim.utils.state_dicts import unwrapped_forms

    own = set(model.state_dict())
    variants = unwrapped_forms(state_dict)
    stripped = variants[-1]
    if not own or any(_covers(own, set(sd)) for sd in variants):
        return next((sd for sd in variants if _covers(own, set(sd))), stripped)
    found: dict[str, dict[str, Any]] = {}
    # the names without a wrapper's marks first: the prefixes as users know them
    for sd in reversed(variants):
        for prefix in {k[: i + 1] for k in sd for i, c in enumerate(k) if c == "."}:
            sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if set(sub) <= own and _covers(own, set(sub)):
                found[prefix] = sub
        if found:
            break
    if len(found) > 1:  # an EMA copy beside the model's own weights: the model's
        found = {
            p: sub for p, sub in found.items() if "ema" not in p.lower().replace("_", ".").split(".")
        } or found
    if len(found) > 1:
        names = ", ".join(repr(p) for p in sorted(found))
        first = sorted(found)[0]
        raise EdgeslimError(
            f"{what} hold {len(found)} copies of the network, under {names}: save the one to use alone, e.g. "
            f"{{k[{len(first)}:]: v for k, v in sd.items() if k.startswith({first!r})}}"
        )
    return next(iter(found.values()), stripped)


def build_with_weights(
    spec: Any,
    state_dict: dict[str, Any],
    what: str,
    *,
    trust_pickle: bool = False,
    channels_from: str = "input_shape",
) -> tuple[nn.Module, Any]:
    """``spec``'s architecture with ``state_dict`` loaded; the class count follows the weights.

    When only the classifier head differs in its number of outputs, the model is rebuilt with the
    weights' count (e.g. 1000 for ImageNet weights) and the returned spec says so. ``trust_pickle``:
    see :func:`~edgeslim.models.registry.create_model`; ``channels_from``: see :func:`load_weights`.
    """
    from edgeslim.models.registry import build_model, create_model

    model, spec = build_model(spec, trust_pickle=trust_pickle)  # a count of None: the architecture's own
    state_dict = under_prefix(model, state_dict, what)
    if spec.arch.startswith("tv:") and _aux_head_only(model, state_dict) and "aux_loss" not in spec.kwargs:
        spec = type(spec).from_dict({**spec.to_dict(), "kwargs": {**spec.kwargs, "aux_loss": True}})
        model, spec = build_model(spec, trust_pickle=trust_pickle)
    _, n = _head_mismatch(model, state_dict)
    if n is not None and n != spec.num_classes:
        spec = type(spec).from_dict({**spec.to_dict(), "num_classes": n})
        model = create_model(spec, trust_pickle=trust_pickle)
    load_weights(model, state_dict, what, channels_from)
    return model, spec


def _aux_head_only(model: nn.Module, state_dict: dict[str, Any]) -> bool:
    """Whether ``state_dict`` is ``model``'s plus an ``aux_classifier`` it lacks: torchvision's
    segmenters (FCN, DeepLabV3) trained from COCO weights keep one (``aux_loss=True``)."""
    own = model.state_dict()
    extra = [k for k in state_dict if k not in own]
    return (
        bool(extra)
        and all(k.startswith("aux_classifier.") for k in extra)
        and all(k in state_dict for k in own)
        and hasattr(model, "aux_classifier")
    )


def with_classes(
    model: nn.Module, spec: Any, num_classes: int, *, trust_pickle: bool = False
) -> tuple[nn.Module, Any, dict[str, Any] | None]:
    """``model`` with a new, freshly initialised classifier head of ``num_classes`` outputs.

    The architecture is rebuilt from ``spec`` with the new count and every other weight copied, so
    the result is what ``create_model(new spec)`` builds (checkpoints rebuild it). Returns
    ``(model, spec, change)``; ``change`` is None when the count already matches. ``trust_pickle``:
    see :func:`~edgeslim.models.registry.create_model`.
    """
    if spec.num_classes == num_classes:
        return model, spec, None
    from edgeslim.models.registry import create_model

    new_spec = type(spec).from_dict({**spec.to_dict(), "num_classes": num_classes})
    new = create_model(new_spec, trust_pickle=trust_pickle)
    old = model.state_dict()
    keys, _ = _head_mismatch(new, old)
    if not keys:
        raise EdgeslimError(
            f"cannot find the classifier head of {spec.arch} (no weight changes shape with the class count)"
        )
    own = new.state_dict()
    missing = [k for k in own if k not in old]
    if missing:
        raise EdgeslimError(f"{spec.arch} rebuilt with {num_classes} classes has new weights {missing[:2]}")
    cast_tensors(new, saved_dtypes(old))  # (the new head in the old one's dtype)
    new.load_state_dict({k: v for k, v in old.items() if k not in keys}, strict=False)
    new.to(next(model.parameters()).device)
    head = sorted({k.rsplit(".", 1)[0] for k in keys})
    return new, new_spec, {"head": ", ".join(head), "from": spec.num_classes, "to": num_classes}


def in_float32(model: Any, name: str, shape: tuple[int, ...] | None, *, quiet: bool = False) -> None:
    """Widen a float16/bfloat16 ``model`` (a whole pickle saved after ``model.half()``) to float32,
    exactly, or narrow a float64 one (``model.double()``, saved so) to it, with one log warning naming
    the file ``name``: surgery, training and export feed it float32. With ``shape`` (C,H,W) it is run
    once on a float32 batch of it: a model that then fails while it ran as it was (its forward casts its
    input to its own dtype: ``x = x.half()``) is kept in its dtype, which it runs in on the float32
    inputs the commands feed it. ``quiet``: no warning (a probe's load). A compiled one (TorchScript, a
    torch.export program) is not given here: counted and benched in its own dtype,
    :func:`~edgeslim.export.onnx_export.export_onnx` refuses it."""
    import torch

    own = tensor_dtypes(model)
    dtype = low_precision(model) or (torch.float64 if torch.float64 in own.values() else None)
    if dtype is None:
        return
    what = str(dtype).removeprefix("torch.")
    narrowed = {n: torch.float32 for n, d in own.items() if d == torch.float64}

    def to_float32() -> None:
        if dtype == torch.float64:
            cast_tensors(model, narrowed)
        else:
            widen_to_float32(model)

    to_float32()
    if shape is not None and (failed := _float32_failure(model, shape)) is not None:
        cast_tensors(model, own)
        if _float32_failure(model, shape) is None:
            if not quiet:
                log.warning(
                    "%s holds %s weights and its forward casts its input to them (made float32 it "
                    "fails: %s): it is kept in %s, which its checks, training and export compute in",
                    name, what, failed, what,
                )  # fmt: skip
            return
        to_float32()  # (it fails either way: the commands' own checks say why)
    if quiet:
        return
    if dtype == torch.float64:
        log.warning(
            "%s holds float64 weights: they are narrowed to float32 (rounded to its 7 digits), which its "
            "checks, training and export compute in; an ONNX export of it is float32",
            name,
        )  # fmt: skip
    else:
        log.warning(
            "%s holds %s weights: they are widened to float32 (exactly), which its checks, training and "
            "export compute in; an ONNX export of it is float32 (a TensorRT engine built from it with "
            "precision fp16 runs in half precision)",
            name, what,
        )  # fmt: skip


def _float32_failure(model: Any, shape: tuple[int, ...]) -> str | None:
    """The first line of the error ``model`` raises on a float32 batch of one ``shape`` input
    (:func:`~edgeslim.models.user.probe_forward`: eval mode, no gradients, modes and buffers left as
    they were), None where it runs."""
    import torch

    try:
        probe_forward(model, torch.zeros((1, *shape)))
    except Exception as exc:  # noqa: BLE001 - a forward can fail in as many ways as there are models
        return first_line(exc)[:160]
    return None
