"""Remove the channels whose BN scales are exactly zero, fold their constants, verify.

A class (one coupled channel index, see :mod:`edgeslim.channels.graph`) is removed when
every BN in it has scale exactly 0, no barrier touches it, and every consumer reads it as a
constant. The constant a consumer reads (``act(beta)`` passed through whatever lies between)
is measured on real inputs and folded into the consumer's bias: exact for Linear, 1x1 and
unpadded convs, the best per-channel approximation for zero-padded k x k convs (the border
outputs differ); the largest deviation of the whole model is measured and reported.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from edgeslim.channels import ops, rules
from edgeslim.channels.graph import (
    CONST,
    REGISTER_WHERE,
    ZERO,
    ClassStates,
    DependencyGraph,
    build_graph,
    class_states,
    flat_tensors,
    zero_kept,
)
from edgeslim.channels.norm import bn_layers, is_batchnorm
from edgeslim.channels.recipe import (
    ENTRY_KEY,
    FORMAT,
    PARAMETER,
    VERSION,
    entry_widths,
    shrink_layer,
    shrink_parameter,
)
from edgeslim.channels.rounding import kept_count
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.utils.modes import (
    ieee_fp32,
    module_modes,
    refuse_lazy,
    refuse_scripted,
    restore_modes,
    uncompiled,
)
from edgeslim.utils.scores import (
    POSTPROCESSED,
    abs_differences,
    finite_abs_max,
    postprocessed_detections,
    score_tensors,
    top1_matches,
)

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    model: nn.Module
    recipe: dict[str, Any]
    report: dict[str, Any]
    graph: DependencyGraph | None = field(default=None, repr=False)


def _round_groups(g: DependencyGraph, remove: Tensor, strength: Tensor, round_to: int) -> Tensor:
    """Keep counts multiples of ``round_to`` (strongest zero channels return) and never empty."""
    remove = remove.clone()
    for grp in g.groups:
        cls = grp.classes
        r = remove[cls]
        if not bool(r.any()):
            continue
        kept = int((~r).sum())
        need = kept_count(kept, grp.size, round_to) - kept
        if need > 0:
            cand = cls[r]
            order = torch.argsort(strength[cand], descending=True, stable=True)
            remove[cand[order[:need]]] = False
    return remove


class _InputStats(TorchFunctionMode):
    """Per-input-channel mean and spread of what the consumer layers' weights are applied to, per
    call of a layer within one forward (a head shared by pyramid levels reads its own constant at
    each call). Measured where the conv/linear function runs on the layer's own weight, so a
    subclass that changes its input first, a functional call with the layer's weight or an input
    passed by keyword is measured as it is computed. Call :meth:`next_forward` after each forward."""

    FUNCTIONS = frozenset((*ops.CONV_FUNCTIONS, *ops.CONV_TRANSPOSE_FUNCTIONS, *ops.LINEAR_FUNCTIONS))

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self._weights = {id(model.get_submodule(n).weight): n for n in names}
        self.sum: dict[tuple[str, int], Tensor] = {}
        self.min: dict[tuple[str, int], Tensor] = {}
        self.max: dict[tuple[str, int], Tensor] = {}
        self.count: dict[tuple[str, int], int] = {}
        self.spatial: dict[str, tuple[int, ...]] = {}
        self.calls_per_forward: dict[str, set[int]] = {n: set() for n in names}
        self._calls: dict[str, int] = {}

    def next_forward(self) -> None:
        for n in self.names:
            self.calls_per_forward[n].add(self._calls.get(n, 0))
        self._calls = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.FUNCTIONS:
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._weights.get(id(w))
            x = args[0] if args else kwargs.get("input")
            if name is not None and isinstance(x, Tensor):
                self._record(name, x)
        return func(*args, **kwargs)

    def _record(self, name: str, x: Tensor) -> None:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        x = x.detach().double()
        flat = x.movedim(1, 0).reshape(x.shape[1], -1) if x.dim() > 2 else x.t()
        s, lo, hi = flat.sum(1).cpu(), flat.amin(1).cpu(), flat.amax(1).cpu()
        key = (name, k)
        if key in self.sum:
            self.sum[key] += s
            self.min[key] = torch.minimum(self.min[key], lo)
            self.max[key] = torch.maximum(self.max[key], hi)
            self.count[key] += flat.shape[1]
        else:
            self.sum[key], self.min[key], self.max[key], self.count[key] = s, lo, hi, flat.shape[1]
            self.spatial.setdefault(name, tuple(x.shape[2:]))

    def calls(self, name: str) -> int | None:
        """How many times ``name``'s weight was applied in each forward (None: not the same number
        every time)."""
        seen = self.calls_per_forward[name]
        return next(iter(seen)) if len(seen) == 1 else None


def _consumers(g: DependencyGraph, remove: Tensor) -> dict[str, list[tuple[Any, Tensor]]]:
    """The layers that read a removed channel: their touches (one per call) and channel classes."""
    out: dict[str, list[tuple[Any, Tensor]]] = {}
    for t, c in zip(g.touches, g.touch_classes):
        if t.read_state is not None and bool(remove[c].any()):
            out.setdefault(t.module, []).append((t, c))
    return out


@dataclass
class _ReadConstants:
    """What a consumer layer reads in its removed input channels ``index``: per call its graph states
    (``states``, calls x channels), the constant to fold (``value``: 0 where every call reads an exact
    zero), its measured range (``lo``, ``hi``), the channel ``classes`` and which of them cannot be
    folded into one bias (``unfoldable``: the calls read different constants, or were not measured)."""

    index: Tensor
    classes: Tensor
    states: Tensor
    value: Tensor
    lo: Tensor
    hi: Tensor
    unfoldable: Tensor


def _read_constants(
    calls: list[tuple[Any, Tensor]], remove: Tensor, stats: _InputStats, name: str
) -> _ReadConstants | None:
    """The constants layer ``name`` reads in its removed channels at each of its ``calls`` (None: it
    reads none, only exact zeros)."""
    cls = calls[0][1]
    idx = torch.nonzero(remove[cls]).flatten()
    states = torch.stack([t.read_state[idx] for t, _ in calls])
    const = (states == CONST).any(0)
    if not bool(const.any()):
        return None
    n = stats.calls(name) if name in stats.calls_per_forward else None
    zeros = torch.zeros(idx.numel(), dtype=torch.float64)
    if n != len(calls) or any(len(c) != len(cls) or bool((c != cls).any()) for _, c in calls):
        return _ReadConstants(idx, cls[idx], states, zeros, zeros, zeros, const)
    values = torch.stack([stats.sum[name, k][idx] / stats.count[name, k] for k in range(n)])
    values[states == ZERO] = 0.0
    lo = torch.stack([stats.min[name, k][idx] for k in range(n)]).amin(0)
    hi = torch.stack([stats.max[name, k][idx] for k in range(n)]).amax(0)
    differ = (values - values[0]).abs().amax(0) > 1e-9 * values.abs().amax(0).clamp(min=1.0)
    return _ReadConstants(idx, cls[idx], states, values[0], lo, hi, differ & const)


def _batches(inputs: Any, name: str = "inputs") -> Iterable[Tensor]:
    """The input tensors of ``inputs``: a tensor, or an iterable of tensors or ``(x, y, ...)`` batches
    (a DataLoader's); anything else is a :class:`TypeError` naming the parameter (``name``) and what
    was found."""
    if isinstance(inputs, Tensor):
        yield inputs
        return
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        raise TypeError(f"{name} must be a tensor or an iterable of batches, got {type(inputs).__name__}")
    for b in inputs:
        x = b[0] if isinstance(b, (tuple, list)) and b else b
        if not isinstance(x, Tensor):
            raise TypeError(
                f"each batch of {name} must be a tensor or an (x, y) pair whose x is one (a DataLoader's), "
                f"got {type(b).__name__}" + (f" of {type(x).__name__}" if x is not b else "")
            )
        yield x


def _fold(m: nn.Module, removed: Tensor, value: Tensor, spatial: tuple[int, ...]) -> None:
    """Add the constant inputs ``value`` at channel indices ``removed`` into the bias of ``m``.

    Exact for Linear, 1x1 and unpadded convs. For a zero-padded conv the added bias is the
    mean over output positions of what the constant contributes (border outputs see less of
    it): the least-squares best per-channel bias on an input of size ``spatial``; the same for a
    transposed conv, whose output of a constant repeats with the period of its stride.
    """
    w = m.weight.detach().double().cpu()
    transposed = isinstance(m, ops.CONV_TRANSPOSE_MODULES)  # each input spreads over a kernel of outputs
    if isinstance(m, nn.Linear):
        delta = w[:, removed] @ value
    elif not transposed and _exact_conv(m):
        ipg, opg = m.in_channels // m.groups, m.out_channels // m.groups
        wsum = w.flatten(2).sum(2)  # (out, ipg): a constant input sees the whole kernel
        grp, j = removed // ipg, removed % ipg
        same_group = (torch.arange(m.out_channels) // opg)[:, None] == grp[None, :]
        delta = (wsum[:, j] * same_group * value[None, :]).sum(1)
    else:  # the conv (of any spatial dims) of the constant, averaged over its output positions
        x = torch.zeros((1, m.in_channels, *spatial), dtype=torch.float64)
        x[0, removed] = value.view(-1, *([1] * len(spatial)))
        conv = ops.conv_function(m)
        extra = (m.output_padding, m.groups, m.dilation) if transposed else (m.dilation, m.groups)
        y = conv(x, w, None, m.stride, m.padding, *extra)
        delta = y.flatten(2).mean(2)[0]
    # a new bias tensor: the old one may still be the caller's (see _copy_sharing_tensors)
    old = m.bias
    bias = old.detach() if old is not None else m.weight.detach().new_zeros(delta.shape[0])
    m.bias = nn.Parameter(bias + delta.to(bias.device, bias.dtype), old is None or old.requires_grad)


def _exact_conv(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, ops.CONV_TRANSPOSE_MODULES):  # a constant in gives a pattern with the stride's period
        pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
        return all(k == 1 for k in m.kernel_size) and all(s == 1 for s in m.stride) and not any(pad)
    if m.padding_mode != "zeros":  # reflect/replicate/circular padding of a constant is that constant
        return True
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return all(k == 1 for k in m.kernel_size) or (m.padding != "same" and all(p == 0 for p in pad))


def _copy_sharing_tensors(model: nn.Module) -> tuple[nn.Module, list[Tensor]]:
    """A deep copy of ``model`` that still holds the conv, linear and BN tensors of ``model``, and
    those shared tensors.

    Surgery replaces most of them by sliced copies anyway and never writes into one, nor does
    an eval-mode forward of these layers (the tensors of other modules are copied: their
    forward or a user's shrink rule may write into them); :func:`_own_tensors` copies the
    shared ones left after surgery.
    """
    memo: dict[int, Any] = {
        id(t): t
        for m in model.modules()
        if isinstance(m, ops.RESIZED_MODULES)
        for t in (*m._parameters.values(), *m._buffers.values())
        if t is not None
    }
    shared = list(memo.values())
    return _deepcopy_module(model, memo), shared


_EMPTY = (OrderedDict, dict, set)
_ATOMIC = (int, float, bool, str, type(None))


def _deepcopy_module(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``copy.deepcopy(m, memo)``, faster: the empty hook dicts of every submodule are made new
    instead of going through ``__reduce_ex__`` (a module type with its own copy protocol is
    copied by ``copy.deepcopy``)."""
    if id(m) in memo:
        return memo[id(m)]
    cls = type(m)
    if (
        cls.__reduce_ex__ is not object.__reduce_ex__
        or cls.__reduce__ is not object.__reduce__
        or cls.__getstate__ is not nn.Module.__getstate__
        or hasattr(cls, "__deepcopy__")
    ):
        return copy.deepcopy(m, memo)
    new = cls.__new__(cls)
    memo[id(m)] = new
    state = {}
    for k, v in m.__getstate__().items():
        if k == "_modules":
            state[k] = {n: None if c is None else _deepcopy_module(c, memo) for n, c in v.items()}
            memo[id(v)] = state[k]
        elif type(v) in _EMPTY and not v:
            state[k] = memo.setdefault(id(v), type(v)())
        elif type(v) in _ATOMIC or (type(v) is tuple and all(type(e) in _ATOMIC for e in v)):
            state[k] = v  # what copy.deepcopy returns for these
        elif isinstance(v, Tensor) and not v.is_leaf:  # computed in forward (legacy weight_norm's weight):
            state[k] = memo.setdefault(id(v), v.detach().clone())  # deepcopy refuses a non-leaf tensor
        else:
            state[k] = copy.deepcopy(v, memo)
    new.__setstate__(state)
    return new


def _param_count(modules: Iterable[nn.Module]) -> int:
    """Parameters of ``modules`` (each module once), each tensor counted once."""
    params = {id(p): p for m in modules for p in m._parameters.values() if p is not None}
    return sum(p.numel() for p in params.values())


def _own_tensors(modules: Iterable[nn.Module], shared_tensors: list[Tensor]) -> None:
    """Replace every parameter and buffer of ``modules`` stored in the memory of ``shared_tensors``
    (what :func:`_copy_sharing_tensors` left shared with the original) by a copy."""
    shared = {t.untyped_storage().data_ptr() for t in shared_tensors if t.numel()}
    memo: dict[int, Any] = {}  # tied tensors stay tied
    for m in modules:
        for store in (m._parameters, m._buffers):
            for k, t in store.items():
                if t is not None and t.numel() and t.untyped_storage().data_ptr() in shared:
                    store[k] = _copy_tensor(t, memo)


def _copy_tensor(t: Tensor, memo: dict[int, Any]) -> Tensor:
    """``copy.deepcopy(t, memo)``; a plain buffer that owns its storage is cloned (faster)."""
    if id(t) not in memo:
        plain = type(t) is Tensor and t._base is None and t.grad is None and not t.requires_grad
        if plain and t.layout == torch.strided and not t.__dict__:
            memo[id(t)] = t.clone(memory_format=torch.preserve_format)
        else:
            memo[id(t)] = copy.deepcopy(t, memo)
    return memo[id(t)]


def _entry_shape(mods: dict[str, nn.Module], name: str, entry: dict[str, Any]) -> list[int]:
    if entry["type"] == PARAMETER:
        parent, _, attr = name.rpartition(".")
        return list(getattr(mods[parent], attr).shape)
    return _layer_shape(mods[name])


def _layer_kind(mods: dict[str, nn.Module], name: str, entry: dict[str, Any]) -> str:
    """What a report row is: "conv" (also transposed), "linear", "norm", "parameter" (a
    per-channel parameter of a module) or "custom" (a module of a user's channel rule)."""
    if entry["type"] == PARAMETER:
        return "parameter"
    m = mods[name]
    if is_batchnorm(m):
        return "norm"
    if isinstance(m, (*ops.CONV_MODULES, *ops.CONV_TRANSPOSE_MODULES)):
        return "conv"
    return "linear" if isinstance(m, ops.LINEAR_MODULES) else "custom"


def _layer_shape(m: nn.Module) -> list[int]:
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features]
    if is_batchnorm(m):
        return [m.num_features]
    if isinstance(m, (*ops.CONV_MODULES, *ops.CONV_TRANSPOSE_MODULES)):
        return [m.in_channels, m.out_channels]
    return [p.numel() for p in m.parameters(recurse=False)]  # a user-registered module


def prune_with_report(
    model: nn.Module,
    example_input: Tensor,
    round_to: int = 1,
    calib_inputs: Any = None,
    *,
    inplace: bool = False,
    check: bool = True,
    outputs: Callable[[Any], Any] | None = None,
    strict: bool = False,
) -> PruneResult:
    """Surgery on a copy of ``model``: returns the slim model, its recipe and a report.

    ``inplace=True`` resizes ``model`` itself (no deep copy). ``check=False`` skips the
    before/after forwards that measure the deviation (``max_abs_diff`` is then None, as it is where
    every output the check compares is empty: a detector that found nothing, with a warning and
    ``compared_values`` 0); a dense
    forward still runs when a removed channel's constant must be folded. ``outputs`` picks the
    outputs that must be kept and verified from the forward's result (default: every tensor it
    returns; for an ultralytics model :func:`edgeslim.models.yolo.deployed_output` gives its
    deployed predictions, so the neck features it also returns in eval mode can shrink). Where the
    check measures the slim model off what the construction claims exact (``report["check_failed"]``),
    a warning says so; ``strict=True`` raises :class:`CheckFailedError` instead (one line, no model).
    """
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise EdgeslimError(f"round_to must be an integer >= 1, got {round_to!r}", param="round_to")
    round_to = int(round_to)
    model = uncompiled(model)  # (a torch.compile wrapper: its module, run eagerly)
    refuse_scripted(model, "surgery")
    refuse_lazy(model)
    t0 = time.perf_counter()
    work, shared = (model, []) if inplace else _copy_sharing_tensors(model)
    modes = module_modes(work)  # (each module's own: a BN kept in eval in a training model stays so)
    if any(modes.values()):
        work.eval()
    g = build_graph(work, example_input, outputs=outputs)
    mods = g.modules
    params_before = _param_count(mods.values())
    states = class_states(g)
    removable, strength = states.removable, states.strength
    remove = _round_groups(g, removable, strength, round_to)

    # Constants the consumers read: measured on real inputs before anything changes.
    consumers = _consumers(g, remove)
    t_graph = time.perf_counter()
    inputs = list(_batches(calib_inputs if calib_inputs is not None else example_input, "calib_inputs"))
    if (
        example_input.is_floating_point()
        and (bad := next((x for x in inputs if not x.is_floating_point()), None)) is not None
    ):
        raise EdgeslimError(
            f"calib_inputs are {str(bad.dtype).removeprefix('torch.')} and example_input "
            f"{str(example_input.dtype).removeprefix('torch.')}: give the images as the model takes them "
            "(floating point, normalized: e.g. x.float() / 255, then its mean and std)",
            param="calib_inputs",
        )
    if example_input.is_floating_point():  # (a numpy array's float64, a float16 batch: as the example runs)
        inputs = [x.to(example_input.dtype) if x.is_floating_point() else x for x in inputs]
    # One dense forward on the calibration inputs: constants read by consumers, reference outputs.
    stats = _InputStats(
        work,
        sorted(
            n for n, calls in consumers.items() if any(bool((t.read_state == CONST).any()) for t, _ in calls)
        ),
    )
    dense_out: list[list[Tensor]] = []
    detections: list[bool] = []  # (per forward: a torchvision detector's post-processed result?)
    scores: list[bool] = []  # (per forward: may its first output hold class scores?)
    names: list[str] = []  # (the compared tensors': a YOLO's boxes, scores, ... each on its own scale)
    if check or stats.names:
        with stats if stats.names else contextlib.nullcontext():
            dense_out = _outputs(
                work, inputs, switch_mode=False, select=outputs, after_each=stats.next_forward, say_state=True,
                detections=detections, scores=scores, names=names,
            )  # fmt: skip
    unfoldable = torch.zeros_like(removable)
    reads = {name: _read_constants(calls, remove, stats, name) for name, calls in consumers.items()}
    for read in reads.values():
        if read is not None:
            unfoldable[read.classes[read.unfoldable]] = True
    if bool(unfoldable.any()):  # kept: one bias cannot add two different constants
        log.info(
            "kept %d channels that a layer called more than once reads as different constants (or that were "
            "not measured at each call)",
            int((unfoldable & remove).sum()),
        )
        removable = removable & ~unfoldable
        remove = _round_groups(g, removable, strength, round_to)
        consumers = _consumers(g, remove)
        reads = {name: _read_constants(calls, remove, stats, name) for name, calls in consumers.items()}
    folded = []
    for name, read in reads.items():
        if read is None:
            continue
        nz = read.value != 0
        if not bool(nz.any()):
            continue
        m = mods[name]
        spread = (read.hi - read.lo)[nz]
        exact = _exact_conv(m) and bool((spread == 0).all()) and bool((read.states[:, nz] == CONST).all())
        _fold(m, read.index[nz], read.value[nz], stats.spatial[name])
        folded.append({"layer": name, "channels": int(nz.sum()), "exact": exact})

    # Kept indices per layer dimension.
    entries: dict[str, dict[str, Any]] = {}
    before: dict[str, list[int]] = {}
    for t, cls in zip(g.touches, g.touch_classes):
        m = mods[t.module]
        keep = torch.nonzero(~remove[cls]).flatten()
        if t.kind == "param":  # a per-channel parameter used in forward (layer scale)
            name = f"{t.module}.{t.attr}" if t.module else t.attr
            entries[name] = {"type": PARAMETER, "dim": t.dim}
            entries[name]["keep"] = keep if keep.numel() < cls.numel() else None
            before[name] = list(getattr(m, t.attr).shape)
            entries[name]["widths"] = entry_widths(getattr(m, t.attr), entries[name])
            continue
        if t.module not in entries:  # (the dense widths, by which apply_recipe checks the model it is given)
            widths = entry_widths(m, {})
            entries[t.module] = {"type": type(m).__name__, **({"widths": widths} if widths else {})}
        e = entries[t.module]
        before.setdefault(t.module, _layer_shape(m))
        e[ENTRY_KEY[t.kind]] = keep if keep.numel() < cls.numel() else None
    for f in folded:
        entries[f["layer"]]["bias"] = True
    layers = {
        n: e
        for n, e in entries.items()
        if any(e.get(k) is not None for k in ("in", "out", "keep")) or e.get("bias")
    }
    for name, e in layers.items():
        if e["type"] == PARAMETER:
            parent, _, attr = name.rpartition(".")
            shrink_parameter(mods[parent], attr, e)
        else:
            shrink_layer(mods[name], e)
    rules.update_widths(work)  # (the channel counts a module keeps beside its layers)
    layers = {
        n: {k: v.tolist() if isinstance(v, Tensor) else v for k, v in e.items()} for n, e in layers.items()
    }
    recipe = {"format": FORMAT, "version": VERSION, "layers": layers}

    if not inplace:
        _own_tensors(work.modules(), shared)  # (a user's shrink rule may have added modules)
    alive = {grp.index: ~remove[grp.classes] for grp in g.groups}
    removed_groups = [
        {"group": grp.index, "size": grp.size, "removed": int(remove[grp.classes].sum())}
        for grp in g.groups
        if bool(remove[grp.classes].any())
    ]
    t_shrink = time.perf_counter()
    try:
        slim_out = _outputs(work, inputs, switch_mode=False, select=outputs) if check else []
    except Exception as exc:  # noqa: BLE001 - the user's forward on resized layers
        msg = first_line(exc)
        ruled = sorted({type(mods[n]).__name__ for n, e in layers.items() if e["type"] != PARAMETER
                        and getattr(rules.rule_for(mods[n]), "shrink", None) is not None})  # fmt: skip
        rule_hint = (
            f"; or the channel rule registered for {', '.join(ruled)} did not resize it as surgery asked "
            "(check its shrink function)"
            if ruled
            else ""
        )
        raise EdgeslimError(
            f"the slim {type(model).__name__} fails ({msg[:160]}): its forward fixes a channel count surgery "
            f"changed; mark that module a leaf (edgeslim.surgery.register_leaf){rule_hint}"
        ) from exc
    diff = (
        _compare(
            dense_out,
            slim_out,
            [len(x) for x in inputs],
            postprocessed=any(detections),
            scores=scores,
            names=names or None,
        )  # fmt: skip
        if check
        else {"max_abs_diff": None, "max_scaled_diff": None, "top1_agreement": None, "compared_values": None}
    )
    if check and not diff["compared_values"]:
        log.warning(
            "surgery's check compared nothing: every output of the model is empty on its inputs (a detector that "
            "found no object?), so the slim model is not verified (max_abs_diff None); give inputs it finds "
            "objects in (calib_inputs), or check the tensors before its postprocessing (outputs=)"
        )
    t_end = time.perf_counter()
    report = {
        "layers": [
            {
                "name": n,
                "type": entries[n]["type"],
                "kind": _layer_kind(mods, n, entries[n]),
                "before": before[n],
                "after": _entry_shape(mods, n, entries[n]),
            }
            for n in entries
        ],
        "removed_channels": int(remove.sum()),
        "removable_channels": int(removable.sum()),
        "kept_by_rounding": int((removable & ~remove).sum()),
        "bn_channels": int(states.has_bn.sum()),  # coupled channels (classes) a BN normalizes
        "zero_scale_channels": int((states.has_bn & states.any_zero).sum()),
        "zero_kept": {**zero_kept(states), "read_as_different_constants": int(unfoldable.sum())},
        # the barriers that keep zero-scale channels (most channels first): what to change or register a rule for
        "zero_kept_barriers": _zero_barriers(g, states),
        "removed_groups": removed_groups,
        "folded_biases": folded,
        "exact": all(f["exact"] for f in folded),  # every removed channel was 0 or exactly folded
        "barriers": [str(b) for b in g.barriers],
        "params_before": params_before,
        "params_after": _param_count(work.modules()),
        "macs_before": g.macs(),
        "macs_after": g.macs(alive),
        "max_abs_diff": diff["max_abs_diff"],
        # each output's difference over its scale (its largest |value|, at least 1): the worst; a YOLO's
        # output0 as its parts (boxes, scores, ...), each on its own scale
        "max_scaled_diff": diff["max_scaled_diff"],
        # the part that gives it (a YOLO's "scores", ...; None: the outputs are compared whole) and its
        # absolute difference
        "max_scaled_part": diff.get("max_scaled_part"),
        "max_scaled_part_diff": diff.get("max_scaled_part_diff"),
        "top1_agreement": diff["top1_agreement"],
        # how many output values the check compared (0: every output was empty; None: no check)
        "compared_values": diff["compared_values"],
        # the outputs compared are a torchvision detector's post-processed detections (in order)
        "postprocessed_detections": any(detections),
        # the check measured the slim model off where the construction is exact (what an approximate fold
        # leaves is no failure): it does not compute what the zeroed model did
        "check_failed": False,
        # a failed check's forward gave another result for the same inputs on a second run (None: not run)
        "random_forward": None,
        # the largest scaled output difference of a float64 re-run of surgery (None: none ran, see below)
        "float64_scaled_diff": None,
        "round_to": round_to,
        "seconds": {
            "copy_and_graph": t_graph - t0,
            "fold_and_shrink": t_shrink - t_graph,
            "verify": t_end - t_shrink,
            "total": t_end - t0,
        },  # fmt: skip
    }
    # (each output on its own scale, >= 1; integer and bool outputs equal or not)
    if (
        check
        and diff["compared_values"]
        and report["exact"]
        and (diff["max_scaled_diff"] > 1e-4 or diff["integers_differ"])
    ):
        # the gap may be rounding a model amplifies (near-tied top-k picks, half precision): the same
        # comparison in float64 tells; without it (inplace: the dense model is gone, or an op without
        # float64) the tolerance of the outputs' precision does
        f64 = report["float64_scaled_diff"] = (
            None
            if inplace
            else _float64_scaled_diff(
                model, example_input, inputs, round_to, outputs, report["removed_channels"]
            )
        )
        rounding = not diff["beyond_rounding"]
        if (f64 <= EXACT_FLOAT64) if f64 is not None else rounding:
            (log.info if rounding else log.warning)(
                "the slim outputs differ from the zeroed model's by %.3g of their scale (at most %.3g absolute), "
                "%s: surgery is exact, the model amplifies rounding (a near tie flipped, as in a top-k pick, or "
                "half precision)",
                diff["max_scaled_diff"], diff["max_abs_diff"],
                f"by {f64:.3g} in float64" if f64 is not None else "within the rounding of their precision",
            )  # fmt: skip
        else:
            report["exact"] = False  # (measured: the construction's claim did not hold)
            report["check_failed"] = True
            # (as export's check: a second run of the same inputs that differs draws random numbers)
            again = _outputs(work, inputs, switch_mode=False, select=outputs)
            report["random_forward"] = _compare(slim_out, again)["max_abs_diff"] != 0
            if strict:
                raise CheckFailedError(
                    check_failed_message(type(model).__name__, report),
                    result=PruneResult(work, recipe, report, g),
                )
            if report["random_forward"]:
                log.warning("%s", check_failed_message(type(model).__name__, report))
            else:
                log.warning(
                    "surgery was exact by construction, but the slim outputs differ by %.3g of their scale (at "
                    "most %.3g absolute%s): a layer passes a removed channel on as nonzero or input-dependent "
                    "where the graph says zero or constant (a registered channel rule with keeps_zero=True on a "
                    "module that adds a constant, or keeps_constant=True on a gate, or a module that reads a "
                    "channel the graph does not see, or a value computed from a channel count); the slim model "
                    "does not compute what the zeroed one did",
                    diff["max_scaled_diff"], diff["max_abs_diff"],
                    "" if f64 is None else f"; {f64:.3g} in float64",
                )  # fmt: skip
    inexact = [f["layer"] for f in folded if not f["exact"]]
    # loud where the deviation measured may hide it: the example input alone, or constant inputs (zeros);
    # on real images (a slim run's, prune's with data) max_abs_diff is the effect, reported
    constant = all(x.numel() == 0 or bool((x == x.reshape(-1)[0]).all()) for x in inputs)
    if inexact:
        (log.warning if calib_inputs is None or constant else log.info)(
            "the constants of removed channels were folded approximately into %s (a zero-padded conv, or a "
            "constant that varies over positions: zero-padded pooling in between): the slim model differs from "
            "the zeroed one near the borders, and max_abs_diff (%s) measured the given inputs only (a constant "
            "input such as torch.zeros can hide it); verify on real images (calib_inputs)",
            ", ".join(inexact[:5]) + (f" and {len(inexact) - 5} more" if len(inexact) > 5 else ""),
            "not measured" if diff["max_abs_diff"] is None else f"{diff['max_abs_diff']:.3g}",
        )  # fmt: skip
    kept = report["zero_kept"]
    if report["zero_scale_channels"] and not report["removed_channels"]:
        log.warning(
            "surgery removed nothing though %d channels have a zero BN scale: %d share their channel with a "
            "nonzero scale of a coupled layer (a residual sum; a coupled channel goes only when all its scales "
            "are zero), %d sit behind a barrier%s, %d are read as input-dependent, %d are read as different "
            "constants by the calls of one layer, %d were kept by rounding",
            report["zero_scale_channels"], kept["coupled_with_nonzero"], kept["behind_barrier"],
            f" ({'; '.join(report['zero_kept_barriers'][:3])})" if report["zero_kept_barriers"] else "",
            kept["read_as_input_dependent"], kept["read_as_different_constants"], report["kept_by_rounding"],
        )  # fmt: skip
    if report["bn_channels"] and not report["zero_scale_channels"]:
        near, total = near_zero_scales(model)
        if near >= max(1, 0.01 * total):  # the signature of a ProximalSlimming run not finalized (a dense
            # model's few tiny scales are not)
            log.warning(
                "no BN scale is exactly zero, so surgery removed nothing; %d of %d scales are below %g of "
                "their layer's largest: if they come from ProximalSlimming, call its finalize() before "
                "surgery (it sets them to exact zeros)",
                near,
                total,
                NEAR_ZERO,
            )
    if g.unseen:
        log.warning(
            "%s ran in no capture of the model (layers its eval forward skips, and its training-mode forward "
            "failed on the example input): surgery did not resize them, so where they read a channel it removed "
            "the slim model fails in training mode",
            ", ".join(g.unseen[:5]) + (f" and {len(g.unseen) - 5} more" if len(g.unseen) > 5 else ""),
        )
    restore_modes(modes)  # (work is in eval mode from the start; layers a rule added keep theirs)
    return PruneResult(work, recipe, report, g)


def _zero_barriers(g: DependencyGraph, st: ClassStates) -> list[str]:
    """The barriers of the zero-scale channels surgery keeps for a barrier alone, most channels first."""
    kept = st.has_bn & st.any_zero & ~st.live & st.barred
    counts: dict[str, int] = {}
    for c in torch.nonzero(kept).flatten().tolist():
        for b in set(g.class_barriers.get(c, [])):
            counts[b] = counts.get(b, 0) + 1
    return sorted(counts, key=lambda b: -counts[b])


#: an approximate fold that moved the outputs by more than this share of their scale is worth a warning
#: (slim's own check warns at 1e-3 absolute on its test images)
FOLD_WARN_SCALED = 1e-3


def approximate_fold_line(report: dict[str, Any]) -> str:
    """One line where surgery folded removed channels' constants approximately (a zero-padded conv) and
    its check measured the slim outputs off the zeroed model's by more than :data:`FOLD_WARN_SCALED` of
    the output's scale (its largest |value|, at least 1: ``max_scaled_diff``); "" otherwise."""
    inexact = [f["layer"] for f in report.get("folded_biases") or [] if not f["exact"]]
    scaled = report.get("max_scaled_diff")
    if not inexact or scaled is None or scaled <= FOLD_WARN_SCALED:
        return ""
    names = ", ".join(inexact[:5]) + (f" and {len(inexact) - 5} more" if len(inexact) > 5 else "")
    part = report.get("max_scaled_part")
    off = (
        f"differ from the zeroed model's by up to {report['max_abs_diff']:.3g} on the inputs checked; the "
        f"{part} by {report['max_scaled_part_diff']:.3g}, {scaled:.1%} of their scale (their largest |value|, "
        "at least 1)"
        if part
        else f"differ from the zeroed model's by up to {report['max_abs_diff']:.3g} on the inputs checked, "
        f"{scaled:.1%} of the output's scale (its largest |value|, at least 1)"
    )
    return (
        f"the constants of removed channels were folded approximately into {names} (zero-padded convs: exact "
        f"away from the border only): the slim outputs {off}; slimming with zero_invariant leaves nothing to "
        "fold (exact surgery)"
    )


class CheckFailedError(EdgeslimError):
    """Surgery's check measured the slim model off the zeroed one where its construction is exact;
    ``result``: what surgery made (the report, for a caller that records the failure)."""

    def __init__(self, *args: object, result: PruneResult | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.result = result


#: how to check a detector's surgery on the tensors before its postprocessing
DETECTION_CHECK = (
    "in Python, prune_with_report(model, x, check=False), then edgeslim.surgery.verify(model.backbone, "
    "slim.backbone, x) and the head's tensors on those features"
)


def check_failed_message(what: str, report: dict[str, Any]) -> str:
    """One line for a surgery ``report`` whose check failed (``check_failed``): the slim ``what`` does not
    compute what the zeroed model did, why, and the fix."""
    if report.get("random_forward"):
        return (
            f"surgery's check measured the slim {what} {report['max_abs_diff']:.3g} off the zeroed model, and its "
            "forward gives another result for the same inputs on each run: it draws random numbers (e.g. "
            "F.dropout(x, training=True), a dropout left on in eval mode), so no check can compare it; make that "
            "forward deterministic in eval mode"
        )
    if report.get("postprocessed_detections"):
        return (
            f"surgery's check measured the slim {what} {report['max_abs_diff']:.3g} off the zeroed model, but its "
            f"outputs are {POSTPROCESSED}, so this check cannot hold them; check the tensors before the "
            f"postprocessing: {DETECTION_CHECK}"
        )
    return (
        f"surgery's check measured the slim {what} {report['max_abs_diff']:.3g} off the zeroed model where its "
        "construction is exact: its forward reads a channel the channel graph does not see (a value computed "
        "from the channel count, such as x.shape[1], an in-place op through a view, a branch on the count); "
        f"mark the module that does it a leaf (edgeslim.surgery.register_leaf) {REGISTER_WHERE}"
    )


#: a BN scale below this fraction of its layer's largest |scale| is "near zero" (not removed)
NEAR_ZERO = 0.01


def near_zero_scales(model: nn.Module) -> tuple[int, int]:
    """(scales that are nonzero but below :data:`NEAR_ZERO` of their layer's largest, all scales)
    over the affine BN layers of ``model``."""
    near = total = 0
    for _, bn in bn_layers(model):
        w = bn.weight.detach().abs()
        near += int(((w > 0) & (w < NEAR_ZERO * w.max())).sum())
        total += w.numel()
    return near, total


def prune(
    model: nn.Module,
    example_input: Tensor,
    round_to: int = 1,
    calib_inputs: Any = None,
    outputs: Callable[[Any], Any] | None = None,
) -> nn.Module:
    """The slim model (see :func:`prune_with_report`)."""
    return prune_with_report(
        model, example_input, round_to=round_to, calib_inputs=calib_inputs, outputs=outputs
    ).model


def verify(
    model: nn.Module, slim: nn.Module, inputs: Any, outputs: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """Largest absolute output difference (over every output tensor) and top-1 agreement of two
    models on ``inputs``: of the first output, per sample for ``[N, classes]``, per pixel for
    ``[N, classes, H, W]`` (a segmenter's ``out`` beside its ``aux``), else None; and
    ``compared_values``, how many output values were compared: where every output is empty (a
    detector that found nothing) none were, and ``max_abs_diff`` is None, with a warning.

    ``inputs``: a tensor, or an iterable of tensors or ``(x, y)`` batches. Both models run
    in eval mode; their modes are restored afterwards. ``outputs``: as in :func:`prune_with_report`.
    """
    batches = list(_batches(inputs))
    sizes, found, scores, names = [len(x) for x in batches], [], [], []
    dense = _outputs(model, batches, select=outputs, detections=found, scores=scores, names=names)
    diff = _compare(
        dense, _outputs(slim, batches, select=outputs), sizes, postprocessed=any(found), scores=scores,
        names=names or None,
    )  # fmt: skip
    if not diff["compared_values"]:
        log.warning(
            "verify compared nothing: every output of the models is empty on these inputs (a detector that found "
            "no object?), so max_abs_diff is None; give inputs the model finds objects in"
        )
    return diff


def _outputs(
    model: nn.Module,
    batches: list[Tensor],
    *,
    switch_mode: bool = True,
    select: Callable[[Any], Any] | None = None,
    after_each: Callable[[], None] | None = None,
    say_state: bool = False,
    detections: list[bool] | None = None,
    scores: list[bool] | None = None,
    names: list[str] | None = None,
) -> list[list[Tensor]]:
    """Eval-mode outputs in IEEE fp32: every tensor of each (possibly nested) output, or of what
    ``select`` picks from it; the mode is restored, and the buffers the forwards wrote
    (:func:`_state_kept`; ``say_state``: said in the log). ``switch_mode=False``: ``model`` is in eval mode already. Each forward gets
    its own copy of the batch (a forward may write into its input); ``after_each`` runs after each;
    ``detections`` gets, per forward, whether its result is a torchvision detector's post-processed
    detections (:func:`~edgeslim.utils.scores.postprocessed_detections`); ``scores``, whether its first tensor
    may hold class scores (:func:`~edgeslim.utils.scores.score_tensors`). A ``select`` with ``parts``
    (:class:`~edgeslim.models.yolo.DeployedOutput`: a YOLO's boxes, scores, ...) gives those parts of its
    tensors, each compared on its own scale; ``names`` gets their names (left empty without parts: the
    outputs are compared whole)."""
    modes = module_modes(model) if switch_mode else {}
    if switch_mode:
        model.eval()
    outs = []
    try:
        with torch.no_grad(), ieee_fp32(), _state_kept(model, say=say_state):
            for x in batches:
                outs.append(model(x.clone()))
                if after_each is not None:
                    after_each()
    finally:
        restore_modes(modes)
    picked = [select(o) if select is not None else o for o in outs]
    if detections is not None:
        detections += [postprocessed_detections(o) for o in picked]
    if scores is not None:
        scores += [score_tensors(o)[:1] == [True] for o in picked]
    parts = getattr(select, "parts", None)
    named = [
        parts(flat_tensors(o)) if parts is not None else list(enumerate(flat_tensors(o))) for o in picked
    ]
    if names is not None and named and parts is not None:
        names[:] = [n for n, _ in named[0]]
    return [[t for _, t in ts] for ts in named]


@contextlib.contextmanager
def _state_kept(model: nn.Module, say: bool = False) -> Iterator[None]:
    """Put back the buffers of ``model`` that the forwards inside wrote or replaced (an online
    normalisation, a streaming cache), so that the dense and the slim model are checked from one state
    and the slim model keeps the dense one's (``say``: log which); a parameter written there is refused
    (one line)."""
    mods = dict(model.named_modules())
    saved = {(n, k): (t, t.clone()) for n, m in mods.items() for k, t in m._buffers.items() if t is not None}
    params = {
        (n, k): (p, _version(p)) for n, m in mods.items() for k, p in m._parameters.items() if p is not None
    }
    written = []
    try:
        yield
    finally:
        for (n, k), (t, old) in saved.items():
            now = mods[n]._buffers.get(k)
            if now is not t or t.shape != old.shape or not torch.equal(t, old):
                written.append(f"{n}.{k}" if n else k)
                if t.shape == old.shape:
                    t.copy_(old)
                mods[n]._buffers[k] = t
    if written and say:
        log.info(
            "the eval forward of %s writes its buffers %s: each check forward ran from the state it had, put "
            "back after it",
            type(model).__name__, ", ".join(written[:5]) + (f" and {len(written) - 5} more" if len(written) > 5 else ""),
        )  # fmt: skip
    for (n, k), (p, v) in params.items():
        if mods[n]._parameters.get(k) is not p or _version(p) != v:
            raise EdgeslimError(
                f"the eval forward of {type(mods[n]).__name__} ({n or 'the model'}) writes its parameter {k}: "
                "surgery cannot check a model whose forward changes its weights; make that forward leave "
                "them as they are in eval mode"
            )


def _version(t: Tensor) -> int | None:
    """The in-place write counter of ``t`` (None for an inference tensor, which keeps none)."""
    try:
        return t._version
    except RuntimeError:
        return None


#: the largest scaled output difference of a float64 re-run that is still the same model (docs/surgery.md)
EXACT_FLOAT64 = 1e-10
#: the scaled difference a check without a float64 re-run lets pass as rounding: at least 1e-4, this many
#: machine epsilons of the outputs' dtype (fp16/bf16; measured: timm resnet18, mobilenetv3_small_100,
#: efficientnet_b0 and torchvision resnet18 pruned in fp16 and bf16 differed by up to 0.95 eps)
TOLERANCE_EPS = 4


def check_tolerance(dtype: torch.dtype) -> float:
    """The scaled difference of a dense and a slim model's output of ``dtype`` that is rounding at its
    precision (each output is held to its own dtype's: a bf16 side output leaves float32 logits at 1e-4)."""
    return max(1e-4, TOLERANCE_EPS * torch.finfo(dtype).eps)


def _float64_scaled_diff(
    dense: nn.Module,
    example_input: Tensor,
    batches: list[Tensor],
    round_to: int,
    select: Callable[[Any], Any] | None,
    removed: int,
) -> float | None:
    """The largest scaled output difference on ``batches`` of a float64 copy of ``dense`` and the slim
    model surgery makes of that copy (its constants measured and folded in float64 too), which must
    remove the ``removed`` channels again (None: it does not, or the model cannot run in float64)."""
    batches = [x.double() if x.is_floating_point() else x for x in batches]
    try:
        dense = _deepcopy_module(dense, {}).double()
        example = example_input.double() if example_input.is_floating_point() else example_input
        disabled = log.disabled
        log.disabled = True  # (its warnings were said for the float32 surgery)
        try:
            res = prune_with_report(dense, example, round_to, batches, check=False, outputs=select)
        finally:
            log.disabled = disabled
        if res.report["removed_channels"] != removed:
            return None
        outs = [_outputs(m, batches, select=select) for m in (dense, res.model)]
    except Exception as exc:  # noqa: BLE001 - the user's model in a precision it may not support
        log.info(
            "the check could not be re-run in float64 (%s): judged at the outputs' precision", first_line(exc)
        )
        return None
    return _compare(*outs)["max_scaled_diff"]


def _compare(
    ref: list[list[Tensor]],
    got: list[list[Tensor]],
    sizes: list[int] | None = None,
    *,
    postprocessed: bool = False,
    scores: list[bool] | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Largest difference over every output tensor (``max_scaled_diff``: each divided by the scale of
    its own tensor, at least 1), and whether an output's scaled difference exceeds the rounding of its
    own dtype (``beyond_rounding``, :func:`check_tolerance`; an integer or bool output: any difference,
    ``integers_differ``), and how many values were compared (``compared_values``; 0: every output was
    empty, and both differences are None); a different structure or shape is an error. The top-1
    agreement is the first output's where it holds class scores of one row per input (``sizes``: the
    batch size of each input; a detector's boxes ``[K, 4]`` hold none). ``postprocessed``: the outputs
    are a torchvision detector's post-processed detections, which a different count is said to be;
    ``scores``: per forward, whether its first output may hold class scores (a box's never does).
    ``names``: the compared tensors' names (a YOLO's parts, :func:`_outputs`): ``max_scaled_part`` is the
    one of the largest scaled difference, ``max_scaled_part_diff`` its absolute difference."""
    worst, scaled, agree, total, beyond, differ, values = 0.0, 0.0, 0, 0, False, False, 0
    part, part_diff = None, None
    for j, (ra, rb) in enumerate(zip(ref, got)):
        if len(ra) != len(rb):
            raise EdgeslimError(
                f"the slim model returns {len(rb)} tensors where the dense one returns {len(ra)}"
            )
        for i, (a, b) in enumerate(zip(ra, rb)):
            if a.shape != b.shape and postprocessed:
                raise EdgeslimError(
                    f"output {i} of the slim model has shape {tuple(b.shape)}, the dense one {tuple(a.shape)}: "
                    f"the outputs are {POSTPROCESSED}, so this check cannot hold them; check the tensors before "
                    f"the postprocessing: {DETECTION_CHECK}"
                )
            if a.shape != b.shape:
                raise EdgeslimError(
                    f"output {i} of the slim model has shape {tuple(b.shape)}, the dense one "
                    f"{tuple(a.shape)}; a channel count is fixed in the model's code: mark that module a "
                    "leaf (edgeslim.surgery.register_leaf); or surgery was told which outputs count "
                    "(outputs=): compare with the same outputs="
                )
            if not a.numel():
                continue
            values += a.numel()
            if not a.is_floating_point():  # (class ids, masks: equal or not)
                d = float((a.double() - b.double()).abs().max())
                own = d / max(1.0, float(a.double().abs().max()))
                differ = differ or d > 0
            else:
                d = float(abs_differences(a.double(), b.double()).max())
                own = d / max(1.0, finite_abs_max(a))
                beyond = beyond or own > check_tolerance(a.dtype)
            if names is not None and i < len(names) and (part is None or own > scaled):
                part, part_diff = names[i], d
            worst, scaled = max(worst, d), max(scaled, own)
        # the first output's, as export's check (scores: floating point)
        n = sizes[j] if sizes is not None else None
        own = scores is None or scores[j]
        matches = top1_matches(ra[0], rb[0], n) if own and ra and ra[0].is_floating_point() else None
        if matches:
            agree, total = agree + matches[0], total + matches[1]
    return {
        "max_abs_diff": worst if values else None,
        "max_scaled_diff": scaled if values else None,
        "max_scaled_part": part if values else None,
        "max_scaled_part_diff": part_diff if values else None,
        "compared_values": values,
        "beyond_rounding": beyond or differ,
        "integers_differ": differ,
        "top1_agreement": agree / total if total else None,  # (no scores: None)
    }
