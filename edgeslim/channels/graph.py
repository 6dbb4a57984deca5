"""Channel dependency graph: which (layer, dim, index) read or write the same channel.

The model is run once, eagerly, on "meta" tensors of the example input's shape while a
``TorchFunctionMode`` sees every torch function it calls (module calls are seen through
hooks, for the module names). Next to every value the capture carries a *label map*: for each
element, the id of the channel *slot* it belongs to. Conv/Linear outputs get fresh slots,
channel-wise ops pass labels through, residual adds and SE multiplies union the labels of
their operands, concat/chunk offset them, and shape ops (flatten, view, permute) are applied
to the label map itself, so a Linear after ``flatten`` of C x H x W sees H*W inputs per
channel without a special case. Union-find over slots gives *classes*: a class is one
removable unit (a channel index together with everything coupled to it). Classes touching
the same layers in the same way form a printable :class:`ChannelGroup`.

Next to the labels, a per-channel *state* is tracked: ZERO (exactly 0), CONST (a constant
independent of the input, e.g. the bias of a BN with zero scale) or VAR. A class can be
removed only if every consumer (conv/linear input) reads it as ZERO or CONST; the constant
is then folded into the consumer's bias.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import os
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from edgeslim.channels import ops, rules
from edgeslim.channels.cost import OpNode, forward_batch, layer_macs, layer_params, whole_positions
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.utils.modes import eval_mode, refuse_lazy, refuse_scripted, training_mode, uncompiled

ZERO, CONST, VAR = 0, 1, 2

#: Layer roles a channel index can have.
CONSUMER_KINDS = ("conv_in", "linear_in")


@dataclass
class Info:
    """Channel labels of one tensor value: 1-D over dim 1 (``uniform``) or the full shape."""

    labels: Tensor
    state: Tensor
    uniform: bool
    shape: torch.Size

    def full(self) -> tuple[Tensor, Tensor]:
        if not self.uniform:
            return self.labels, self.state
        view = [1] * len(self.shape)
        view[1] = -1
        return (
            self.labels.view(view).expand(self.shape),
            self.state.view(view).expand(self.shape),
        )


@dataclass
class Touch:
    """One layer dimension that indexes channels: ``labels[i]`` is the slot of index i."""

    module: str
    kind: str  # conv_out | conv_in | dw | bn | linear_out | linear_in | custom* | param
    labels: Tensor
    read_state: Tensor | None = None  # consumers: ZERO/CONST/VAR of what they read
    attr: str = ""  # kind "param": the per-channel parameter/buffer of ``module``
    dim: int = 0  # kind "param": its channel axis


@dataclass
class LayerShape:
    """A MAC-carrying layer in terms of its channel touches; :meth:`DependencyGraph.macs` and
    :meth:`DependencyGraph.params` price it with :func:`edgeslim.channels.cost.layer_macs` /
    :func:`~edgeslim.channels.cost.layer_params` for any alive channel counts (unlike
    :class:`edgeslim.channels.cost.LayerCost`, which holds one layer's priced MACs and bytes)."""

    module: str
    kind: str  # conv | dw | linear | bn
    in_touch: int | None
    out_touch: int | None
    kernel: int = 1  # k_h * k_w
    groups: int = 1
    spatial: int = 1  # positions the MACs are counted over: H_out * W_out (a transposed conv: its input's)
    bias: bool = False


@dataclass
class Barrier:
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.reason}"


@dataclass
class ChannelGroup:
    """Coupled channels: index i of the group is ``idx[i]`` of every member layer dimension."""

    index: int
    classes: Tensor  # class id per group channel
    members: list[tuple[str, str, Tensor]]  # (module name, kind, idx)
    barriers: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.classes.numel())

    def __str__(self) -> str:
        head = f"Group {self.index}: {self.size} channel(s)"
        if self.barriers:
            head += "  [kept: " + "; ".join(sorted(set(self.barriers))[:3]) + "]"
        lines = [head]
        for name, kind, idx in self.members:
            lines.append(f"  {kind:<10} {name}{_ranges(idx)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "barriers": sorted(set(self.barriers)),
            "members": [{"module": n, "kind": k, "idx": _ranges(i)} for n, k, i in self.members],
        }


@dataclass
class BNGroup:
    """Coupled BN channels for group penalties: channel i is ``bn[idx[i]]`` for every member."""

    group_index: int
    members: list[tuple[str, Tensor]]
    #: channels of the group behind a barrier (not in ``members``' indices): kept, whatever their scales
    fixed: int = 0

    @property
    def size(self) -> int:
        return int(self.members[0][1].numel()) if self.members else 0


def _ranges(idx: Tensor) -> str:
    """``[0:4, 7, 9:12]`` style rendering of an index vector."""
    v = idx.tolist()
    if not v:
        return "[]"
    parts, start, prev = [], v[0], v[0]
    for x in v[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev + 1}")
        if x is not None:
            start = prev = x
    text = ", ".join(parts)
    return f"[{text if len(text) < 60 else text[:57] + '...'}]"


class _UnionFind:
    """Connected components of channel slots: unions are collected, then solved at once."""

    def __init__(self) -> None:
        self.n = 0
        self.edges: list[tuple[Tensor, Tensor]] = []

    def new(self, n: int) -> Tensor:
        start, self.n = self.n, self.n + n
        return torch.arange(start, start + n)

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        a, b = a.reshape(-1), b.reshape(-1)
        keep = a != b
        if bool(keep.any()):
            self.edges.append((a[keep], b[keep]))

    def roots(self) -> Tensor:
        """Smallest slot id of every slot's component (min-label propagation with pointer jumping)."""
        lab = torch.arange(self.n)
        if not self.edges:
            return lab
        a = torch.cat([e[0] for e in self.edges])
        b = torch.cat([e[1] for e in self.edges])
        while True:
            m = torch.minimum(lab[a], lab[b])
            new = lab.scatter_reduce(0, a, m, "amin").scatter_reduce_(0, b, m, "amin")
            new = new[new]
            if torch.equal(new, lab):
                return lab
            lab = new


def _is_tensor(v: Any) -> bool:
    return isinstance(v, Tensor)


def _compress(labels: Tensor, state: Tensor) -> Info:
    """Make a full label map 1-D over dim 1 when every channel has a single label."""
    shape = labels.shape
    if labels.dim() >= 2:
        lab = labels.movedim(1, 0).reshape(shape[1], -1)
        if lab.shape[1] == 0 or bool((lab == lab[:, :1]).all()):
            st = state.movedim(1, 0).reshape(shape[1], -1)
            st = st.amax(1) if st.shape[1] else torch.full((shape[1],), VAR, dtype=torch.int8)
            return Info(lab[:, 0].clone(), st.to(torch.int8), True, shape)
    return Info(labels.contiguous(), state.contiguous(), False, shape)


class _Dim(int):
    """An int read from a tensor's shape: sizes computed from it follow surgery, literals do not.

    Arithmetic with a ``_Dim`` returns a ``_Dim`` (the operators are set below, one loop)."""

    def __neg__(self) -> Any:
        return _dim(int.__neg__(self))


def _dim_op(name: str) -> Any:
    op = getattr(int, name)

    def method(self: _Dim, other: Any) -> Any:
        return _dim(op(self, other))

    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
              "__rfloordiv__", "__mod__"):  # fmt: skip
    setattr(_Dim, _name, _dim_op(_name))


def _dim(v: Any) -> Any:
    return _Dim(v) if type(v) is int else v


def _is_literal(v: Any) -> bool:
    """A size written in the model's code (not computed from a tensor shape)."""
    return type(v) is int


@dataclass
class Call:
    """One captured torch call: the function, its real arguments, the module it ran in."""

    func: Any
    args: tuple
    kwargs: dict
    module: str
    target: str = ""  # the layer a conv/linear/bn call belongs to

    @property
    def name(self) -> str:
        return self.module or "<model>"


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _meta_conv(args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of ``F.conv1d/2d/3d`` from the shape formula (the meta kernel is slow); None
    for anything unusual (string padding, odd arguments)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args))
    a.update(kwargs)
    x, w = a.get("input"), a.get("weight")
    if not (_is_tensor(x) and _is_tensor(w)) or x.dim() != w.dim() or isinstance(a.get("padding"), str):
        return None
    k = w.dim() - 2
    conf = []
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
        v = a.get(key, default)
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,) * k
        if len(v) == 1:
            v = v * k
        if len(v) != k:
            return None
        conf.append(v)
    sizes = [
        (h + 2 * p - d * (kk - 1) - 1) // st + 1 for h, kk, st, p, d in zip(x.shape[2:], w.shape[2:], *conf)
    ]
    if min(sizes) < 1 or x.shape[1] != w.shape[1] * int(a.get("groups", 1)):
        return None
    return x.new_empty((x.shape[0], w.shape[0], *sizes))


def _meta_binary(func: Any, args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of an element-wise binary op from broadcasting (the meta kernel is slow);
    None when an operand is a non-scalar tensor off "meta" (the real call reports the mismatch)."""
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other")
    if _is_tensor(b) and not b.is_meta and b.dim() > 0:
        return None
    if not isinstance(b, (Tensor, int, float, bool)):
        return None
    if func in ops.INPLACE_FUNCTIONS:
        return a
    dtype = torch.result_type(a, b)
    if ops.BINARY_FUNCTIONS[func] in ("div", "rdiv") and not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    other = b.shape if _is_tensor(b) else ()
    shape = a.shape if len(other) == 0 or other == a.shape else torch.broadcast_shapes(a.shape, other)
    return a.new_empty(shape, dtype=dtype)


def _meta_reduce(args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of a float mean/sum/amax over given dims (the meta kernel is a slow Python
    decomposition); None for anything else (no dims, a ``dtype``, an integer input)."""
    x = args[0]
    names = ("dim", "keepdim")
    a = dict(zip(names, args[1:]))
    a.update(kwargs)
    dims = a.get("dim")
    if len(args) > 3 or set(a) - set(names) or not x.dtype.is_floating_point or dims is None:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims or not all(type(d) is int or isinstance(d, _Dim) for d in dims):
        return None
    nd = x.dim()
    if any(not -nd <= d < nd for d in dims):
        return None
    if len({d % nd for d in dims}) != len(dims):
        return None
    dims = {d % nd for d in dims}
    keep = bool(a.get("keepdim", False))
    shape = (
        [1 if i in dims else v for i, v in enumerate(x.shape)]
        if keep
        else [v for i, v in enumerate(x.shape) if i not in dims]
    )
    return x.new_empty(shape)


def _meta_linear(args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of ``F.linear`` (the meta kernel is a slow decomposition); None if unusual."""
    a = dict(zip(("input", "weight", "bias"), args))
    a.update(kwargs)
    x, w = a.get("input"), a.get("weight")
    if len(args) > 3 or set(a) - {"input", "weight", "bias"} or not (_is_tensor(x) and _is_tensor(w)):
        return None
    if w.dim() != 2 or x.dim() < 1 or x.shape[-1] != w.shape[1] or x.dtype != w.dtype:
        return None
    return x.new_empty((*x.shape[:-1], w.shape[0]))


def _meta_attention(args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of ``F.scaled_dot_product_attention`` with equal batch dims; None otherwise."""
    if len(args) != 3 or kwargs.get("enable_gqa") or not all(_is_tensor(t) and t.dim() >= 2 for t in args):
        return None
    q, k, v = args
    same = q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.dtype == k.dtype == v.dtype
    if not same or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        return None
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _meta_cat(args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of ``torch.cat`` of "meta" tensors of one dtype; None otherwise."""
    ts = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if len(args) > 2 or set(kwargs) - {"tensors", "dim"} or not isinstance(ts, (list, tuple)) or not ts:
        return None
    if not all(_is_tensor(t) and t.is_meta for t in ts) or not isinstance(dim, int):
        return None
    first = ts[0]
    nd = first.dim()
    if nd < 2 or not -nd <= dim < nd:
        return None
    dim %= nd
    rest = [v for i, v in enumerate(first.shape) if i != dim]
    for t in ts:
        if t.dim() != nd or t.dtype != first.dtype or [v for i, v in enumerate(t.shape) if i != dim] != rest:
            return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in ts)
    return first.new_empty(shape)


_POOL_ARGS = ("input", "output_size", "return_indices")
_RESIZE_ARGS = (
    "input",
    "size",
    "scale_factor",
    "mode",
    "align_corners",
    "recompute_scale_factor",
    "antialias",
)


def _meta_resize(func: Any, args: tuple, kwargs: dict) -> Tensor | None:
    """The "meta" result of an adaptive pooling or ``F.interpolate`` from the output size it asks
    for (the meta kernels are slow decompositions); None for anything unusual."""
    x, k = args[0], args[0].dim() - 2
    names = _POOL_ARGS if func in ops.ADAPTIVE_POOL_FUNCTIONS else _RESIZE_ARGS
    a = dict(zip(names, args))
    a.update(kwargs)
    if k < 1 or len(args) > len(names) or set(a) - set(names) or a.get("return_indices"):
        return None
    if names is _POOL_ARGS:
        size, scale = a.get("output_size"), None
    else:
        size, scale = a.get("size"), a.get("scale_factor")
    if (size is None) == (scale is None):
        return None
    if size is not None:
        out = [size] * k if isinstance(size, int) else list(size) if isinstance(size, (tuple, list)) else []
        out = [x.shape[2 + i] if v is None and names is _POOL_ARGS else v for i, v in enumerate(out)]
    else:
        sc = (
            [scale] * k
            if isinstance(scale, (int, float))
            else list(scale)
            if isinstance(scale, (tuple, list))
            else []
        )
        if len(sc) != k or not all(isinstance(v, (int, float)) for v in sc):
            return None
        out = [math.floor(float(x.shape[2 + i]) * float(v)) for i, v in enumerate(sc)]
    if len(out) != k or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out):
        return None
    return x.new_empty((*x.shape[:2], *out))


class _DataDependent(RuntimeError):
    """Python control flow on a value computed from the input: no single channel graph."""


class _Capture(TorchFunctionMode):
    """Sees every torch function the model calls (one eager run) and hands it to the analyser."""

    def __init__(self, an: _Analyser) -> None:
        super().__init__()
        self.an = an

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        an = self.an
        if an.busy:
            return func(*args, **kwargs)
        if an.suspended:  # inside a leaf: its convolutions still cost what they cost
            out = func(*args, **kwargs)
            an.fixed_macs += _call_macs(func, args, kwargs, out, an.batch)
            return out
        for a in (
            *args,
            *kwargs.values(),
        ):  # (a layer whose weight a functional call reads ran: MHA's out_proj)
            if isinstance(a, Tensor) and (o := an.owner.get(id(a))) is not None:
                an.used.add(o[0])
        if func in ops.DATA_DEPENDENT_METHODS and an.depends(args):
            an.fail_construct = f"{_fn_name(func)}() on a tensor computed from the input (data-dependent)"
            raise _DataDependent(an.fail_construct)
        # on "meta" tensors, the shapes of some ops are computed here (their meta kernels are slow)
        out = _meta_cat(args, kwargs) if func in ops.CAT_FUNCTIONS else None
        if out is None and args and _is_tensor(args[0]) and args[0].is_meta:
            if func in ops.CONV_FUNCTIONS:
                out = _meta_conv(args, kwargs)
            elif func in ops.BINARY_FUNCTIONS:
                out = _meta_binary(func, args, kwargs)
            elif func in ops.REDUCE_FUNCTIONS:
                out = _meta_reduce(args, kwargs)
            elif func in ops.LINEAR_FUNCTIONS:
                out = _meta_linear(args, kwargs)
            elif func in ops.SOFTMAX_FUNCTIONS and len(args) <= 2 and set(kwargs) <= {"dim", "_stacklevel"}:
                out = args[0].new_empty(args[0].shape)
            elif func in ops.ATTENTION_FUNCTIONS:
                out = _meta_attention(args, kwargs)
            elif func in ops.ADAPTIVE_POOL_FUNCTIONS or func in ops.RESIZE_FUNCTIONS:
                out = _meta_resize(func, args, kwargs)
            elif func in ops.SAME_SHAPE_ON_META:  # shape-preserving (Python decompositions)
                inplace = kwargs.get("inplace") or (len(args) > 1 and args[-1] is True)
                inplace = inplace or func in ops.INPLACE_FUNCTIONS
                out = args[0] if inplace else args[0].new_empty(args[0].shape)
        if out is None:
            out = func(*args, **kwargs)
        if an.depends(args) or an.depends(list(kwargs.values())):
            an.taint(out)
        if isinstance(out, torch.Size):
            return torch.Size([_Dim(v) for v in out])
        if type(out) is int and func in ops.SIZE_METHODS:
            return _Dim(out)
        if not (isinstance(out, Tensor) or (isinstance(out, (list, tuple)) and out and _is_tensor(out[0]))):
            if func in ops.MUTATING_METHODS:
                an.busy = True
                try:
                    an.mutation(Call(func, args, kwargs, an.current()))
                finally:
                    an.busy = False
            return out
        an.busy = True
        call = Call(func, args, kwargs, an.current())
        try:
            n_costs = len(an.costs)
            try:
                info = an.on_function(call, func, out)
            except Exception as exc:  # noqa: BLE001 - an op surgery's rules do not cover: keep its channels
                info = an.opaque(call, out, f"not analysed ({type(exc).__name__})")
            if an.kernels:  # the values read, before the output's labels replace an input's
                ins = an.value_keys((args, list(kwargs.values())))
            an.set_info(out, info)
            resized = len(an.costs) > n_costs and an.costs[n_costs].kind != "bn"  # a conv/linear layer entry
            if not resized:  # (a conv/linear call surgery keeps whole: its MACs still count)
                an.fixed_macs += _call_macs(func, args, kwargs, out, an.batch)
            if an.kernels:
                layer = n_costs if resized else None
                an.record(call, ins, out, layer)
        finally:
            an.busy = False
        return out


class _Analyser:
    """Runs the model once, eagerly, and builds the label/state maps and layer touches."""

    def __init__(
        self,
        real: nn.Module,
        run_tensors: dict[str, Tensor] | None = None,
        named: dict[str, Tensor] | None = None,
        walk: list[tuple[str, nn.Module]] | None = None,
        kernels: bool = False,
    ) -> None:
        self.uf = _UnionFind()
        self.kernels = kernels
        self.infos: dict[int, tuple[Tensor, Any]] = {}
        self.touches: list[Touch] = []
        self.costs: list[LayerShape] = []
        #: MACs per sample of the conv/linear calls no cost entry resizes (kept whole: behind a barrier,
        #: inside a leaf, a grouped transposed conv, a linear over tokens)
        self.fixed_macs = 0.0
        self.batch = 1  # the forward's samples (its input's leading dimension): MACs are per sample
        #: with ``kernels``: every op on activations, for the cost model (:func:`edgeslim.channels.cost.fuse_kernels`)
        self.cost_nodes: list[OpNode] = []
        self.node_layer: dict[int, int] = {}  # cost node -> its LayerShape (a conv/linear call)
        #: value key -> (its channel labels (None: a mixed layout), elements per sample, its dim 1 (0: rank < 2))
        self.values: list[tuple[Tensor | None, int, int]] = []
        self._keys: dict[int, tuple[Tensor, int]] = {}  # id(tensor) -> (tensor, its current value key)
        self._consts: dict[int, Tensor] = {}  # tensors made inside the model: no activation
        self.barrier_labels: list[tuple[Tensor, int]] = []
        self.barriers: list[Barrier] = []
        self.first_call: dict[str, list[Tensor]] = {}
        self._walk = walk if walk is not None else _walk(real)
        self._mods: dict[str, nn.Module] = {}  # real weights (the run may be on "meta")
        self._names: dict[int, str] = {}  # a module reached under several names: its first one
        for n, m in self._walk:
            if self._names.setdefault(id(m), n) == n:
                self._mods[n] = m
        self._rules = {id(m): r for n, m in self._mods.items() if n and (r := rules.rule_for(m))}
        self._model = real
        self._run_tensors = run_tensors
        self.busy = False
        self.suspended = 0
        self.stack: list[str] = []
        self.fail_construct = ""
        self.ran: set[int] = set()  # the modules the forward called (ids)
        self.used: set[str] = set()  # the modules whose own tensors a captured call read (names)
        #: modules with parameters that ran in neither pass (train-mode capture failed): not resized
        self.unseen: list[str] = []
        self.tainted: dict[int, Tensor] = {}
        self.views: dict[int, tuple[Tensor, tuple[str, str]]] = {}
        self.keeps_zero: dict[tuple, bool] = {}  # element-wise probes already run
        real_t = self._real_t = named if named is not None else _named_tensors(self._walk)
        self.owner: dict[int, tuple[str, str]] = {}
        self.tied: set[int] = set()  # tensors of more than one module (tied weights)
        self.real: dict[int, Tensor] = {}
        for name, t in (run_tensors if run_tensors is not None else real_t).items():
            mod, _, attr = name.rpartition(".")
            if self.owner.setdefault(id(t), (mod, attr))[0] != mod:
                self.tied.add(id(t))
            self.real[id(t)] = real_t[name]

    # -- capture -----------------------------------------------------------------------
    def depends(self, args: Any) -> bool:
        """Whether a tensor in ``args`` (one level of lists) is computed from the model input."""
        for a in args:
            if isinstance(a, Tensor):
                if id(a) in self.tainted or id(a) in self.infos:
                    return True
            elif isinstance(a, (list, tuple)) and self.depends(a):
                return True
        return False

    def _key(self, t: Tensor, new: bool = False) -> int:
        e = self._keys.get(id(t))
        if e is not None and e[0] is t and not new:
            return e[1]
        per_sample = t.numel() // t.shape[0] if t.dim() and t.shape[0] else t.numel()
        info = self.info(t)  # (a mixed channel layout is counted at its traced size: no labels kept)
        labels = info.labels if isinstance(info, Info) and info.uniform else None
        self.values.append((labels, int(per_sample), int(t.shape[1]) if t.dim() >= 2 else 0))
        self._keys[id(t)] = (t, len(self.values) - 1)
        return len(self.values) - 1

    def value_keys(self, obj: Any) -> tuple[int, ...]:
        """The value keys of the activations in ``obj``: labelled tensors that are not constants."""
        return tuple(
            self._key(t)
            for t in flat_tensors(obj)
            if self.info(t) is not None and not (id(t) in self._consts and self._consts[id(t)] is t)
        )

    def record(self, n: Call, ins: tuple[int, ...], out: Any, layer: int | None) -> None:
        """One op on activations, with the values it reads and the ones it writes (fresh keys: an
        in-place op writes a new value). A tensor made inside the model, or computed from such
        tensors alone (YOLO's anchors), is a constant the exporter folds: no node, and no read."""
        outs = flat_tensors(out)
        if not outs:
            return
        if not ins or n.func in ops.NEW_TENSOR_FUNCTIONS:
            self._consts.update((id(t), t) for t in outs)
            return
        # (a module under a channel rule: its own kernel, never an op the cost model fuses or skips by name)
        op = (
            f"module {n.func.__name__}"
            if isinstance(n.func, type)
            else ops.COST_OPS.get(n.func, _fn_name(n.func))
        )
        # .contiguous(), dropout, x[:, :C] of all C channels: the exporter writes no node for them
        whole = op == "Slice" and _is_tensor(n.args[0]) and n.args[0].shape == outs[0].shape
        if (op in ops.NO_KERNEL_OPS or whole) and len(outs) == 1:
            self._keys[id(outs[0])] = (outs[0], ins[0])
            return
        keys = tuple(self._key(t, new=True) for t in outs)
        name = f"{n.target or n.module}:{op}"
        if n.func in ops.SLICED_ON_EXPORT:  # (the exporter writes a Slice per piece, each reading the whole)
            self.cost_nodes += [OpNode("Slice", ins, (k,), f"{name}{i}") for i, k in enumerate(keys)]
            return
        if layer is not None:
            self.node_layer[len(self.cost_nodes)] = layer
        self.cost_nodes.append(OpNode(op, ins, keys, name))

    def taint(self, out: Any) -> None:
        for t in flat_tensors(out):
            self.tainted.setdefault(id(t), t)

    def current(self) -> str:
        return self.stack[-1] if self.stack else ""

    def run(self, x: Tensor, select: Callable[[Any], Any] | None = None) -> Any:
        handles = [  # two process-wide hooks: cheaper than a pair on every module
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post),
        ]
        try:
            self.busy = True
            self.batch = forward_batch(x.shape)
            self.set_info(x, self.fresh(x))
            self.barrier(Call(None, (), {}, ""), [self.info(x)], "model input", op="input")
            self.busy = False
            with _Capture(self):
                if self._run_tensors is None:
                    out = self._model(x)
                else:
                    with _swapped_tensors(self._walk, self._run_tensors):
                        out = self._model(x)
            self.busy = True
            outs = flat_tensors(out)
            if select is not None:
                outs = _selected(select, out, outs)
            self.barrier(Call(None, (), {}, ""), [self.info(t) for t in outs], "model output", op="output")
        finally:
            self.busy = False
            for h in handles:
                h.remove()
        return out

    def not_run(self) -> list[str]:
        """Modules with parameters of their own that no forward so far called nor read the tensors of (a
        GoogLeNet's auxiliary heads, which run in training mode only; not MultiheadAttention's out_proj,
        whose weight its functional forward reads)."""
        return [
            n
            for n, m in self._mods.items()
            if id(m) not in self.ran
            and n not in self.used
            and any(p is not None for p in m._parameters.values())
        ]

    def run_training(self, x: Tensor) -> None:
        """A second run, with the model in training mode (set by the caller), for the layers only
        that mode calls: their channels couple to the first run's (a module's calls share channels),
        their outputs are kept, and only the layers the first run did not see get touches; MACs and
        kernels stay the first run's (the deployed forward's). If the run fails, the first run's
        graph stays and :attr:`unseen` names the layers it missed."""
        missed = self.not_run()
        saved = (len(self.touches), len(self.costs), self.fixed_macs, self.uf.n, len(self.uf.edges))
        marks = (len(self.barriers), len(self.barrier_labels), dict(self.first_call), self.kernels)
        seen = {(t.module, t.kind, t.attr) for t in self.touches}
        self.kernels = False
        try:
            self.run(x)
        except Exception:  # noqa: BLE001 - a forward that needs more in training mode (targets, a loss)
            del self.touches[saved[0] :], self.barriers[marks[0] :], self.barrier_labels[marks[1] :]
            del self.uf.edges[saved[4] :]
            self.uf.n, self.first_call = saved[3], marks[2]
            self.stack, self.suspended, self.fail_construct = [], 0, ""
            self.unseen = missed
        else:  # (a layer neither mode calls is unused: nothing to resize)
            self.touches[saved[0] :] = [
                t for t in self.touches[saved[0] :] if (t.module, t.kind, t.attr) not in seen
            ]
        finally:
            self.kernels = marks[3]
            del self.costs[saved[1] :]
            self.fixed_macs = saved[2]

    def _pre(self, m: nn.Module, _args: tuple) -> None:
        name = self._names.get(id(m))
        if name is not None:
            self.ran.add(id(m))
        if name is None or self.suspended or self.busy:
            return
        self.stack.append(name)
        if id(m) in self._rules:
            self.suspended += 1

    def _post(self, m: nn.Module, args: tuple, out: Any) -> None:
        name = self._names.get(id(m))
        if name is None or self.busy or not self.stack or self.stack[-1] != name:
            return
        rule = self._rules.get(id(m))
        if rule is not None and self.suspended == 1:
            self.suspended = 0
            self.busy = True
            try:
                call = Call(type(m), args, {}, name, name)
                # the values it reads, before out's labels replace an input's
                ins = self.value_keys(args) if self.kernels else ()
                self.set_info(out, self.custom(call, m, rule, out))
                if (
                    self.kernels
                ):  # one kernel of its own for the cost model (its ops were not seen one by one)
                    self.record(call, ins, out, None)
            finally:
                self.busy = False
        if not self.suspended:
            self.stack.pop()

    # -- helpers -----------------------------------------------------------------------
    def info(self, a: Any) -> Any:
        if isinstance(a, Tensor):
            e = self.infos.get(id(a))
            return e[1] if e is not None and e[0] is a else None
        if isinstance(a, (list, tuple)):
            return [self.info(x) for x in a]
        return None

    def set_info(self, value: Any, info: Any) -> None:
        if isinstance(value, Tensor):
            if info is None or isinstance(info, Info):
                self.infos[id(value)] = (value, info)
        elif isinstance(value, (list, tuple)) and isinstance(info, list):
            for v, i in zip(value, info):
                self.set_info(v, i)

    def infos_in(self, obj: Any) -> list[Info]:
        """The labels of every tensor in ``obj`` (nested lists/tuples): ``_all_infos(info(obj))``."""
        out: list[Info] = []
        self._collect(obj, out)
        return out

    def _collect(self, a: Any, out: list[Info]) -> None:
        if isinstance(a, Tensor):
            e = self.infos.get(id(a))
            if e is not None and e[0] is a and e[1] is not None:
                out.append(e[1])
        elif isinstance(a, (list, tuple)):
            for x in a:
                if isinstance(x, (Tensor, list, tuple)):  # (numbers are the common case: no call)
                    self._collect(x, out)

    def _all_infos(self, obj: Any) -> list[Info]:
        if isinstance(obj, Info):
            return [obj]
        if isinstance(obj, (list, tuple)):
            return [i for x in obj for i in self._all_infos(x)]
        return []

    def barrier(self, n: Call, infos: list[Info], reason: str, op: str | None = None) -> None:
        infos = [i for i in infos if i is not None]
        if not infos:
            return
        self.barriers.append(Barrier(n.name, op or _fn_name(n.func), reason))
        for i in infos:
            self.barrier_labels.append((i.labels, len(self.barriers) - 1))

    def fresh(self, value: Any, state: int = VAR) -> Any:
        if _is_tensor(value) and value.dim() >= 2:
            c = value.shape[1]
            return Info(self.uf.new(c), torch.full((c,), state, dtype=torch.int8), True, value.shape)
        if isinstance(value, (list, tuple)):
            return [self.fresh(v, state) for v in value]
        return None

    def opaque(self, n: Call, out: Any, reason: str) -> Any:
        """Unknown op: channels that cross it are kept (inputs and outputs are barriers)."""
        ins = self.infos_in((n.args, list(n.kwargs.values())))
        res = self.fresh(out)
        self.barrier(n, ins + self._all_infos(res), reason)
        return res

    def share(self, name: str, labels: list[Tensor]) -> None:
        """A module called twice must keep the same channels at every call."""
        if name in self.first_call:
            for a, b in zip(self.first_call[name], labels):
                self.uf.union_pairs(a, b)
        else:
            self.first_call[name] = labels

    def mutation(self, n: Call) -> None:
        """In-place writes into part of a tensor (``x[:, :k] = v``): its channels are kept."""
        infos = self.infos_in(n.args)
        self.barrier(n, infos, "in-place write into a tensor")

    def rt(self, mod: str, attr: str) -> Tensor | None:
        """The real parameter/buffer ``attr`` of module ``mod`` (during the run it holds a stand-in)."""
        return self._real_t.get(f"{mod}.{attr}" if mod else attr)

    def param_of(self, t: Any) -> tuple[str, str] | None:
        """(module, attribute) of the parameter/buffer ``t`` is, or is a reshaped view of."""
        if not isinstance(t, Tensor):
            return None
        v = self.views.get(id(t))
        if v is not None and v[0] is t:
            return v[1]
        return self.owner.get(id(t))

    def owned(self, t: Any, kinds: tuple[type, ...]) -> str | None:
        """Name of the module of type ``kinds`` whose own parameter/buffer ``t`` is."""
        o = self.owner.get(id(t)) if isinstance(t, Tensor) else None
        if o is None or not isinstance(self._mods.get(o[0]), kinds):
            return None
        return o[0]

    # -- dispatch ----------------------------------------------------------------------
    def on_function(self, n: Call, fn: Any, out: Any) -> Any:
        if fn in ops.NEW_TENSOR_FUNCTIONS:  # only the dtype/device of its tensor: created here
            res = self.fresh(out) if _is_tensor(out) and out.dim() >= 2 else None
            self.barrier(n, self._all_infos(res), "tensor created inside the model")
            return res
        if fn in ops.DTYPE_SOURCE_FUNCTIONS:  # x.type_as(y): y's channels play no part
            n = Call(
                n.func,
                n.args[:1] + tuple(a for a in n.args[1:] if not isinstance(a, Tensor)),
                {k: v for k, v in n.kwargs.items() if not isinstance(v, Tensor)},
                n.module,
                n.target,
            )
        args, kwargs = n.args, n.kwargs
        a0 = self.info(args[0]) if args else None
        labelled = self.infos_in(args) or self.infos_in(list(kwargs.values()))
        if fn in ops.SHAPE_QUERY_FUNCTIONS or not labelled:
            if fn in ops.SHAPE_QUERY_FUNCTIONS or not _is_tensor(out):
                return None
            base = self.param_of(args[0]) if args else None
            if base is not None and fn in ops.VIEW_FUNCTIONS and out.numel() == args[0].numel():
                self.views[id(out)] = (
                    out,
                    base,
                )  # a reshaped parameter (layer scale ``g.view(1, -1, 1, 1)``)
                return None
            return self.opaque(n, out, "tensor created inside the model") if out.dim() >= 2 else None
        if fn in ops.CONV_FUNCTIONS:
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            return self.layer_call(n, ops.CONV_MODULES, w, a0, out, self.conv)
        if fn in ops.CONV_TRANSPOSE_FUNCTIONS:
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            return self.layer_call(n, ops.CONV_TRANSPOSE_MODULES, w, a0, out, self.conv_transpose)
        if fn in ops.LINEAR_FUNCTIONS:
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            return self.layer_call(n, ops.LINEAR_MODULES, w, a0, out, self.linear)
        if fn in ops.BN_FUNCTIONS:
            own = [t for t in [*args[1:], *kwargs.values()] if self.owned(t, ops.BN_MODULES)]
            return self.layer_call(n, ops.BN_MODULES, own[0] if own else None, a0, out, self.bn)
        if fn in ops.GETITEM_FUNCTIONS:
            return self.getitem(n, a0, out)
        if fn in ops.BINARY_FUNCTIONS:
            return self.binary(n, ops.BINARY_FUNCTIONS[fn], out)
        if fn in ops.CAT_FUNCTIONS:
            return self.cat(n, out)
        if not isinstance(a0, Info):
            return self.opaque(n, out, "unsupported arguments")
        rest_infos = self.infos_in((args[1:], list(kwargs.values())))
        if rest_infos:
            return self.opaque(n, out, "op mixing several tensors")
        if fn in ops.ELEMENTWISE_FUNCTIONS:
            return self.unary(n, a0, out, fn, args[1:], kwargs)
        if fn in ops.POOL_FUNCTIONS:
            return self.pool(n, a0, out)
        if fn in ops.PAD_FUNCTIONS:
            return self.pad(n, a0, out)
        if fn in ops.CHUNK_FUNCTIONS:
            return self.chunk(n, a0, out)
        if fn in ops.SPLIT_FUNCTIONS:
            return self.split(n, a0, out)
        if fn in ops.REDUCE_FUNCTIONS:
            return self.reduce(n, a0, out)
        if fn in ops.RESHAPE_FUNCTIONS:
            sizes = _flat(args[1:]) + _flat(list(kwargs.values()))
            lits = [a for a in sizes if _is_literal(a) and a not in (-1, 1)]
            if lits and self.channel_split(a0, out, sizes):
                pass  # (N, C, ...) -> (N, g, C/g, ...) with a literal g: blocks kept equal
            elif lits:
                self.barrier(n, [a0], f"reshape with literal size(s) {lits}")
        if (
            fn in ops.RESHAPE_FUNCTIONS
            or fn in ops.FLATTEN_FUNCTIONS
            or fn in ops.PERMUTE_FUNCTIONS
            or fn in ops.SQUEEZE_FUNCTIONS
        ):
            rest = args[1:]
            return self.shape_op(n, a0, out, lambda t: fn(t, *rest, **kwargs))
        return self.opaque(n, out, "unsupported function")

    def layer_call(self, n: Call, kinds: tuple[type, ...], w: Any, x: Any, out: Any, rule: Any) -> Any:
        """conv/linear/batch_norm: the layer is the module whose own weight the call uses."""
        name = self.owned(w, kinds)
        if name is None:
            mod = self._mods.get(n.module)
            if isinstance(mod, kinds):  # its own call, on a weight computed in forward
                return self.opaque(
                    n, out, f"{type(mod).__name__} with a weight computed in forward, not its parameter (weight_norm, "
                    "spectral_norm or another parametrization: remove it before pruning, e.g. "
                    "torch.nn.utils.parametrize.remove_parametrizations(module, 'weight'))",
                )  # fmt: skip
            what = "/".join(k.__name__ for k in kinds[:3]) + (" or another" if len(kinds) > 3 else "")
            return self.opaque(
                n, out, f"{_fn_name(n.func)} with weights of no {what} module (register a channel rule)"
            )
        if not isinstance(x, Info):
            return self.opaque(n, out, "layer input without channels")
        if self.infos_in((n.args[1:], list(n.kwargs.values()))):
            return self.opaque(n, out, "layer weights computed from the input")
        if id(w) in self.tied:
            return self.opaque(n, out, f"{_fn_name(n.func)} with weights tied to another module's")
        n.target = name
        return rule(n, self._mods[name], x, out)

    def const(self, a: Any) -> Any:
        """The real value of a constant operand (number or parameter); a tensor of unknown value: ``...``."""
        if not isinstance(a, Tensor):
            return a
        if id(a) in self.real:
            return self.real[id(a)]
        return a if a.device.type != "meta" and a.dim() == 0 else ...

    # -- op rules ----------------------------------------------------------------------
    def conv(self, n: Call, m: nn.modules.conv._ConvNd, x: Info, out: Tensor) -> Info | None:
        x = self._uniform_input(n, x, "conv")
        g = m.groups
        ipg, opg = m.in_channels // g, m.out_channels // g
        kernel = math.prod(m.kernel_size)
        spatial = self.positions(out)
        bias = m.bias is not None
        if g > 1 and ipg == 1:  # depthwise (with multiplier): input k feeds outputs k*opg...
            labels = x.labels.repeat_interleave(opg)
            st = x.state.repeat_interleave(opg).clone()
            if bias:
                st[(st == ZERO) & (self.rt(n.target, "bias").detach().cpu() != 0)] = CONST
            self.share(n.target, [labels])
            self.touches.append(Touch(n.target, "dw", labels))
            self.costs.append(
                LayerShape(n.target, "dw", None, len(self.touches) - 1, kernel, g, spatial, bias)
            )
            return Info(labels, st, True, out.shape)
        res = self.fresh(out)
        if g > 1:  # grouped: index j of every group is removed together (equal group sizes)
            self.uf.union_pairs(res.labels.view(g, opg)[:1].expand(g, opg), res.labels.view(g, opg))
            self.uf.union_pairs(x.labels.view(g, ipg)[:1].expand(g, ipg), x.labels.view(g, ipg))
        return self._in_out_layer(n, x, res, "conv", kernel, g, spatial, bias)

    def conv_transpose(self, n: Call, m: nn.Module, x: Info, out: Tensor) -> Info | None:
        """A transposed conv couples like a conv (its weight is (in, out, k...)); its MACs are counted
        over the input positions, each of which it spreads over a kernel of outputs."""
        if m.groups != 1:
            return self.opaque(n, out, "grouped transposed convolution")
        x = self._uniform_input(n, x, "transposed conv")
        kernel, spatial = math.prod(m.kernel_size), self.positions(x)
        return self._in_out_layer(n, x, self.fresh(out), "conv", kernel, 1, spatial, m.bias is not None)

    def linear(self, n: Call, m: nn.Linear, x: Info, out: Tensor) -> Info | None:
        if not (x.uniform and len(x.shape) == 2):
            return self.opaque(n, out, "linear on a tensor that is not (batch, features)")
        rows = self.positions(out)  # (rows folded into the batch: more than one a sample)
        return self._in_out_layer(n, x, self.fresh(out), "linear", spatial=rows, bias=m.bias is not None)

    def positions(self, t: Any) -> int:
        """:func:`~edgeslim.channels.cost.whole_positions` of ``t`` in this forward."""
        return whole_positions(t.shape, self.batch)

    def _uniform_input(self, n: Call, x: Info, what: str) -> Info:
        """``x``, or, when its channel layout is mixed, fresh labels for it: its channels are kept (a
        barrier), the layer's own output channels are still free."""
        if x.uniform:
            return x
        self.barrier(n, [x], f"{what} input with mixed channel layout")
        return Info(self.uf.new(x.shape[1]), torch.full((x.shape[1],), VAR, dtype=torch.int8), True, x.shape)

    def _in_out_layer(
        self,
        n: Call,
        x: Info,
        res: Info,
        kind: str,
        kernel: int = 1,
        groups: int = 1,
        spatial: int = 1,
        bias: bool = False,
    ) -> Info:
        """A layer with input channels ``x`` and output channels ``res`` (conv, transposed conv,
        linear): both sliced by surgery, shared across calls, costed as ``kind``."""
        self.share(n.target, [x.labels, res.labels])
        self.touches.append(Touch(n.target, f"{kind}_in", x.labels, x.state))
        self.touches.append(Touch(n.target, f"{kind}_out", res.labels))
        t = len(self.touches)
        self.costs.append(LayerShape(n.target, kind, t - 2, t - 1, kernel, groups, spatial, bias))
        return res

    def bn(self, n: Call, m: nn.modules.batchnorm._BatchNorm, x: Info, out: Tensor) -> Info | None:
        if not x.uniform or not _is_tensor(out) or out.shape != x.shape:
            return self.opaque(n, out, "batch norm on a mixed channel layout")
        st = torch.where(x.state == VAR, VAR, CONST)
        if m.affine:  # zero scale: the BN bias (CONST), ZERO if that is 0 too
            w, b = self.rt(n.target, "weight").detach().cpu(), self.rt(n.target, "bias").detach().cpu()
            st = torch.where(w == 0, torch.where(b == 0, ZERO, CONST), st)
        st = st.to(torch.int8)
        self.share(n.target, [x.labels])
        self.touches.append(Touch(n.target, "bn", x.labels))
        self.costs.append(LayerShape(n.target, "bn", None, len(self.touches) - 1, bias=m.affine))
        return Info(x.labels, st, True, out.shape)

    def custom(self, n: Call, m: nn.Module, rule: rules.ChannelRule, out: Any) -> Any:
        """A module of a user-registered type (see :mod:`edgeslim.channels.rules`)."""
        kind = type(m).__name__
        x = self.info(n.args[0]) if n.args else None
        if rule.is_leaf:
            return self.opaque(n, out, f"leaf module {kind}")
        if not isinstance(x, Info) or not x.uniform or not _is_tensor(out) or out.dim() < 2:
            return self.opaque(n, out, f"{kind}: its rule needs one (batch, channels, ...) input and output")
        if self.infos_in(n.args[1:]):
            return self.opaque(n, out, f"{kind}: more than one input with channels")
        if rule.pass_through:
            if out.shape[1] != x.shape[1]:
                return self.opaque(n, out, f"{kind}: pass-through rule but the channel count changed")
            st = x.state.clone()
            if not rule.keeps_zero:
                st[st == ZERO] = CONST
            if not rule.keeps_constant:  # (an SE's gate: a constant channel times an input-dependent value)
                st[st == CONST] = VAR
            self.share(n.target, [x.labels])
            self.touches.append(Touch(n.target, "custom", x.labels))
            return Info(x.labels, st, True, out.shape)
        read = x.state.clone()
        read[read == CONST] = VAR  # no bias to fold a constant into: only exact zeros go
        res = self.fresh(out)
        self.share(n.target, [x.labels, res.labels])
        self.touches.append(Touch(n.target, "custom_in", x.labels, read))
        self.touches.append(Touch(n.target, "custom_out", res.labels))
        return res

    def unary(self, n: Call, x: Info, out: Tensor, fn: Any, rest: tuple, kw: dict) -> Info | None:
        """``fn(x, *rest, **kw)`` channel by channel: a zero channel stays zero if ``fn(0) == 0``."""
        if not _is_tensor(out) or out.shape != x.shape:
            return self.opaque(n, out, "element-wise op that changed the shape")
        if any(isinstance(v, Tensor) and v.numel() > 1 for v in (*_flat(list(rest)), *kw.values())):
            self.barrier(
                n, [x], "element-wise op with a tensor argument (per-channel values surgery cannot slice)"
            )
        shape = (1, x.shape[1]) + (1,) * (len(x.shape) - 2)
        key = (fn, shape, tuple((type(v), v) for v in rest), tuple((k, type(v), v) for k, v in kw.items()))
        known = all(v is None or type(v) in (int, float, bool, str) for v in (*rest, *kw.values()))
        keeps_zero = self.keeps_zero.get(key) if known else None
        if keeps_zero is None:
            try:
                keeps_zero = bool((fn(torch.zeros(shape), *rest, **kw) == 0).all())
            except Exception:  # noqa: BLE001 - the probe is a best effort
                keeps_zero = False
            if known:
                self.keeps_zero[key] = keeps_zero
        st = x.state.clone()
        if not keeps_zero:
            st[st == ZERO] = CONST
        return Info(x.labels, st, x.uniform, x.shape)

    def pool(self, n: Call, x: Info, out: Tensor) -> Info | None:
        if not _is_tensor(out) or not x.uniform or out.dim() != len(x.shape) or out.shape[1] != x.shape[1]:
            return self.opaque(n, out, "pooling on a mixed channel layout")
        return Info(x.labels, x.state, True, out.shape)

    def pad(self, n: Call, x: Info, out: Tensor) -> Info | None:
        """Spatial padding keeps channels; a zero channel padded with zeros stays zero."""
        pad = n.args[1] if len(n.args) > 1 else n.kwargs.get("pad", ())
        if not x.uniform or len(pad) > 2 * (len(x.shape) - 2) or out.shape[1] != x.shape[1]:
            return self.opaque(n, out, "padding of the channel dimension")
        at = 2 if n.func is torch.constant_pad_nd else 3  # (input, pad, value) / (input, pad, mode, value)
        value = n.args[at] if len(n.args) > at else n.kwargs.get("value", 0.0)
        st = x.state.clone()
        if value:
            st[st == ZERO] = CONST
        return Info(x.labels, st, True, out.shape)

    def reduce(self, n: Call, x: Info, out: Tensor) -> Info | None:
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        dims = [d % len(x.shape) for d in dims]
        if not _is_tensor(out) or not x.uniform or not dims or 0 in dims or 1 in dims or out.dim() < 2:
            return self.opaque(n, out, "reduction over the batch or channel dimension")
        return Info(x.labels, x.state, True, out.shape)

    def shape_op(self, n: Call, x: Info, out: Any, fn: Any) -> Info | None:
        if not _is_tensor(out):
            return self.opaque(n, out, "shape op with non-tensor result")
        lab, st = x.full()
        new_lab, new_st = fn(lab.contiguous()), fn(st.contiguous())
        if new_lab.shape != out.shape or new_lab.dim() < 2:
            return self.opaque(n, out, "reshape that moves the batch dimension")
        return _compress(new_lab, new_st)

    def getitem(self, n: Call, x: Any, out: Any) -> Any:
        """Indexing: spatial crops pass labels; a channel slice keeps what its bounds fix; new axes
        (``None``) after the channel axis only reshape (an SE's ``s[:, :, None, None]``)."""
        if not isinstance(x, Info) or not _is_tensor(out):
            return self.opaque(n, out, "indexing with tensors")
        idx = n.args[1]
        idx_t = idx if isinstance(idx, tuple) else (idx,)
        if Ellipsis in idx_t:
            k = idx_t.index(Ellipsis)
            used = sum(1 for i in idx_t if i is not None and i is not Ellipsis)  # entries that take an axis
            idx_t = idx_t[:k] + (slice(None),) * (len(x.shape) - used) + idx_t[k + 1 :]
        if (
            not idx_t
            or not all(isinstance(i, slice) or (i is None and p >= 2) for p, i in enumerate(idx_t))
            or idx_t[0] != slice(None)
        ):
            return self.opaque(n, out, "indexing that selects channels or samples")
        if len(idx_t) > 1 and idx_t[1] != slice(None):
            if not x.uniform:
                return self.opaque(n, out, "channel slice of a mixed channel layout")
            c = idx_t[1]
            size = x.shape[1]
            start, stop, step = c.indices(size)
            if step != 1:
                return self.opaque(n, out, "strided channel slice")
            if not all(v is None or _is_literal(v) for v in (c.start, c.stop)):
                self.barrier(n, [x], "channel slice with bounds computed from a shape")
            elif any(v is not None and v < 0 for v in (c.start, c.stop)):  # counted from the end
                self.barrier(n, [x], "channel slice with a negative bound (counted from the last channel)")
            elif stop < size:  # x[:, a:b] keeps taking b - a channels: [0, b) stays as it is
                self.barrier(n, [_part(x, 0, stop)], "channel slice [a:b] with literal b (a truncation)")
            elif start > 0:  # x[:, a:] with literal a: channels before a stay, the rest may go
                self.barrier(n, [_part(x, 0, start)], "channel slice [a:] with literal a")
        lab, st = x.full()
        return _compress(lab[idx_t].contiguous(), st[idx_t].contiguous())

    def binary(self, n: Call, kind: str, out: Any) -> Info | None:
        a = n.args[0] if n.args else n.kwargs.get("input")
        b = n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
        ia, ib = self.info(a), self.info(b)
        va, vb = self.const(a), self.const(b)
        if not _is_tensor(out):
            return None
        if out.dim() < 2:
            return self.opaque(n, out, "element-wise op with a result without channels")
        if isinstance(ia, Info) and isinstance(ib, Info):
            la, sa = ia.full() if not (ia.uniform and ib.uniform) else (ia.labels, ia.state)
            lb, sb = ib.full() if not (ia.uniform and ib.uniform) else (ib.labels, ib.state)
            if ia.uniform and ib.uniform and ia.shape[1] != ib.shape[1]:
                one, big = (ia, ib) if ia.shape[1] == 1 else (ib, ia)
                self.barrier(n, [one], "a single channel broadcast over many")
                return Info(big.labels, torch.full_like(big.state, VAR), True, out.shape)
            if not (ia.uniform and ib.uniform):
                try:
                    la, sa = la.expand(out.shape), sa.expand(out.shape)
                    lb, sb = lb.expand(out.shape), sb.expand(out.shape)
                except RuntimeError:
                    return self.opaque(n, out, "broadcast that changes the channel layout")
            self.uf.union_pairs(la, lb)
            st = torch.maximum(sa, sb)
            if kind == "mul":
                st = torch.where((sa == ZERO) | (sb == ZERO), ZERO, st)
            elif kind == "div":
                st = torch.where(sa == ZERO, ZERO, st)
            elif kind == "rdiv":
                st = torch.where(sb == ZERO, ZERO, st)
            st = st.to(torch.int8)
            if ia.uniform and ib.uniform:
                return Info(la, st, True, out.shape)
            return _compress(la.contiguous(), st.contiguous())
        # one operand is a constant (number or a tensor without channel labels)
        x, cv, x_first = (ia, vb, True) if isinstance(ia, Info) else (ib, va, False)
        if not isinstance(x, Info):
            return self.opaque(n, out, "element-wise op on unlabelled tensors")
        scaled = self.channel_param(n, kind, x, b if x_first else a, out)
        if scaled is not None:
            return scaled
        if _is_tensor(cv) and cv.dim() >= len(x.shape) - 1 and cv.numel() > 1:
            ch = cv.shape[1 - len(x.shape)] if cv.dim() >= len(x.shape) - 1 else 1
            if ch != 1:
                self.barrier(n, [x], "per-channel constant tensor (a parameter used in forward)")
                return Info(x.labels, torch.full_like(x.state, VAR), x.uniform, out.shape)
        if (kind == "div" and not x_first) or (kind == "rdiv" and x_first):
            self.barrier(n, [x], "division by a channel")
            return Info(x.labels, torch.full_like(x.state, VAR), x.uniform, out.shape)
        if cv is ...:  # a tensor computed inside the model without channel labels
            return self.opaque(n, out, "element-wise op with a computed unlabelled tensor")
        try:
            const_zero = bool((torch.as_tensor(cv) == 0).all())
        except (TypeError, RuntimeError):
            return self.opaque(n, out, "element-wise op with an unknown constant")
        st = x.state.clone()
        if kind == "add" and not const_zero:
            st[st == ZERO] = CONST
        if kind == "mul" and const_zero:
            st[:] = ZERO
        if out.shape != x.shape:
            if x.uniform and out.dim() == len(x.shape) and out.shape[1] == x.shape[1]:
                return Info(x.labels, st, True, out.shape)
            return self.opaque(n, out, "broadcast that changes the channel layout")
        return Info(x.labels, st, x.uniform, out.shape)

    def channel_param(self, n: Call, kind: str, x: Info, raw: Any, out: Any) -> Info | None:
        """``x * g`` / ``x + b`` with ``g`` a module's own per-channel parameter (layer scale): the
        channels pass through and ``g`` is sliced with them."""
        base = self.param_of(raw)
        c = x.shape[1]
        if base is None or not x.uniform or kind not in ("mul", "add", "div") or not _is_tensor(out):
            return None
        if raw.numel() != c or raw.dim() > len(x.shape) or out.shape != x.shape:
            return None
        aligned = (1,) * (len(x.shape) - raw.dim()) + tuple(raw.shape)
        if aligned[1] != c or any(v != 1 for i, v in enumerate(aligned) if i != 1):
            return None
        real = self.rt(*base)
        axes = [i for i, v in enumerate(real.shape) if v == c] if real is not None else []
        if real is None or real.numel() != c or len(axes) != 1:
            return None
        vals = real.detach().reshape(-1).cpu()
        st = x.state.clone()
        if kind in ("mul", "div"):
            if kind == "mul":
                st[vals == 0] = ZERO
        else:
            st[(st == ZERO) & (vals != 0)] = CONST
        if isinstance(
            self._mods.get(base[0]), ops.RESIZED_MODULES
        ):  # ``y * self.bn.weight.view(1, -1, 1, 1)``
            # the layer's own entry slices it: its channels are coupled with the layer's (output) ones
            own = self.first_call.get(base[0])
            if own is None or own[-1].numel() != c:  # (not run yet, or a tensor over its input channels)
                self.barrier(n, [x], "a layer's own tensor used outside it, not over its output channels")
                return Info(x.labels, torch.full_like(st, VAR), True, out.shape)
            self.uf.union_pairs(x.labels, own[-1])
            return Info(x.labels, st, True, out.shape)
        key = f"{base[0]}.{base[1]}" if base[0] else base[1]
        self.share(key, [x.labels])
        self.touches.append(Touch(base[0], "param", x.labels, attr=base[1], dim=axes[0]))
        return Info(x.labels, st, True, out.shape)

    def cat(self, n: Call, out: Tensor) -> Info | None:
        tensors = n.args[0] if n.args else n.kwargs.get("tensors")
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        infos = self.info(list(tensors))
        if not _is_tensor(out) or not all(isinstance(i, Info) for i in infos):
            return self.opaque(n, out, "concat with unlabelled tensors")
        dim = dim % out.dim()
        if dim == 1 and all(i.uniform for i in infos):
            return Info(
                torch.cat([i.labels for i in infos]), torch.cat([i.state for i in infos]), True, out.shape
            )
        fulls = [i.full() for i in infos]
        return _compress(torch.cat([f[0] for f in fulls], dim), torch.cat([f[1] for f in fulls], dim))

    def channel_split(self, x: Info, out: Any, sizes: list[Any]) -> bool:
        """A view splitting channels into ``g`` (a literal) blocks, as in channel shuffle.

        It stays right after surgery when index j is removed from every block at once, so the
        blocks are coupled like the pieces of ``chunk``.
        """
        ins, outs = tuple(x.shape), tuple(out.shape) if _is_tensor(out) else ()
        ok = (
            x.uniform
            and len(outs) == len(ins) + 1
            and len(sizes) == len(outs)
            and _is_literal(sizes[1])
            and sizes[1] == outs[1]
            and not any(_is_literal(v) and v not in (-1, 1) for i, v in enumerate(sizes) if i != 1)
            and outs[0] == ins[0]
            and outs[1] * outs[2] == ins[1]
            and outs[3:] == ins[2:]
        )
        if ok:
            blocks = x.labels.view(outs[1], outs[2])
            self.uf.union_pairs(blocks[:1].expand_as(blocks), blocks)
        return bool(ok)

    def _pieces(self, x: Info, out: Any) -> Any:
        """Equal channel pieces of ``x`` (chunk, or split at sizes computed from the shape)."""
        k = len(out)
        pieces = x.labels.view(k, -1)
        self.uf.union_pairs(pieces[:1].expand_as(pieces), pieces)  # equal pieces stay equal
        return [Info(pieces[i], x.state.view(k, -1)[i], True, o.shape) for i, o in enumerate(out)]

    def _off_channels(self, n: Call, x: Info, out: Any, what: str) -> Any:
        """A chunk/split along another dim than channels: every piece keeps ``x``'s channels
        (or is opaque for a mixed layout); None when it cuts the channel dim."""
        dim = (n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)) % len(x.shape)
        if dim == 1:
            return None
        if x.uniform:
            return [Info(x.labels, x.state, True, o.shape) for o in out]
        return self.opaque(n, out, f"{what} of a mixed channel layout")

    def chunk(self, n: Call, x: Info, out: Any) -> Any:
        other = self._off_channels(n, x, out, "chunk")
        if other is not None:
            return other
        if not x.uniform or len({o.shape[1] for o in out}) != 1 or len(out) * out[0].shape[1] != x.shape[1]:
            return self.opaque(n, out, "chunk of channels into unequal pieces")
        return self._pieces(x, out)

    def split(self, n: Call, x: Info, out: Any) -> Any:
        other = self._off_channels(n, x, out, "split")
        if other is not None:
            return other
        if not x.uniform:
            return self.opaque(n, out, "split of a mixed channel layout")
        sizes = n.args[1] if len(n.args) > 1 else next(iter(n.kwargs.values()), None)
        widths = [o.shape[1] for o in out]
        if not any(_is_literal(s) for s in _flat(sizes)) and len(set(widths)) == 1:
            return self._pieces(x, out)  # sizes follow the channel count: pieces stay equal
        self.barrier(n, [x], "split of channels at sizes written in the code (literal)")
        offs = [0, *itertools.accumulate(widths)]
        return [_part(x, offs[i], offs[i + 1], o.shape) for i, o in enumerate(out)]


def _touch_name(t: Touch) -> str:
    return f"{t.module}.{t.attr}" if t.kind == "param" and t.module else (t.attr or t.module)


def _unique_rows(rows: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)`` for rows of ints in [0, base), fast."""
    n, k = rows.shape
    bits = math.log2(max(base, 2))
    j = max(1, int(62 // bits))  # columns one int64 key holds
    keys, inv = np.unique(_row_keys(rows[:, :j], base), return_inverse=True)
    step = max(1, int((62 - math.log2(max(n, 2))) // bits))
    while j < k:  # long rows: (rank of the prefix, next columns) stays lexicographic
        cols = rows[:, j : j + step]
        keys, inv = np.unique(
            inv.reshape(-1) * base ** cols.shape[1] + _row_keys(cols, base), return_inverse=True
        )
        j += step
    inv = inv.reshape(-1)
    first = np.zeros(keys.size, dtype=np.int64)
    first[inv] = np.arange(n)  # a row of each key (the rows of one key are equal)
    return rows[first], inv


def _row_keys(rows: np.ndarray, base: int) -> np.ndarray:
    """One int per row of ints in [0, base), in lexicographic order of the rows."""
    return rows @ (base ** np.arange(rows.shape[1] - 1, -1, -1, dtype=np.int64))


def _stable_order(values: Tensor, bound: int) -> np.ndarray:
    """Indices that sort ``values`` (ints in [0, bound)) stably: numpy's radix sort below 2**16."""
    if bound <= 1 << 16:
        return np.argsort(values.numpy().astype(np.uint16), kind="stable")
    return torch.sort(values.int() if bound < 2**31 else values, stable=True).indices.numpy()


def _part(x: Info, start: int, stop: int, shape: torch.Size | None = None) -> Info:
    """Channels ``start:stop`` of a uniform label map."""
    sh = shape if shape is not None else torch.Size([x.shape[0], stop - start, *x.shape[2:]])
    return Info(x.labels[start:stop], x.state[start:stop], True, sh)


def _walk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every (name, module) of ``model``, a module reached twice under each name: the one walk of
    the module tree a capture makes (``named_modules`` is a deep generator; walking it is slow)."""
    return list(model.named_modules(remove_duplicate=False))


def _call_macs(func: Any, args: tuple, kwargs: dict, out: Any, batch: int) -> float:
    """Multiply-accumulates per sample of one conv, transposed conv or linear call of a forward at
    ``batch`` samples (0 for any other function): its output elements times the weight's fan-in; a
    transposed conv's input elements times the outputs each one spreads over; over the batch, not
    the call's leading dimension (a model that folds patches into it runs a call on 4 rows a sample)."""
    conv, convt = func in ops.CONV_FUNCTIONS, func in ops.CONV_TRANSPOSE_FUNCTIONS
    if not (conv or convt or func in ops.LINEAR_FUNCTIONS) or not _is_tensor(out):
        return 0.0
    x = args[0] if args else kwargs.get("input")
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    if not (_is_tensor(x) and _is_tensor(w)) or w.dim() < 2:
        return 0.0
    per = x if convt else out
    samples = batch if per.dim() > (1 if func in ops.LINEAR_FUNCTIONS else 2) else 1
    fan = math.prod(w.shape[1:])
    return float(per.numel() / max(samples, 1) * fan)


def _named_tensors(walk: list[tuple[str, nn.Module]]) -> dict[str, Tensor]:
    """Every parameter and buffer by qualified name (tied ones under each name)."""
    return {
        f"{n}.{k}" if n else k: t
        for n, m in walk
        for k, t in [*m._parameters.items(), *m._buffers.items()]
        if t is not None
    }


def flat_tensors(obj: Any) -> list[Tensor]:
    """Every tensor in a (nested) tuple/list/dict output."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in flat_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in flat_tensors(v)]
    return []


def _flat(a: Any) -> list[Any]:
    if isinstance(a, (list, tuple)):
        return [y for x in a for y in _flat(x)]
    return [a]


class DependencyGraph:
    """Channel groups of a traced model (see the module docstring)."""

    def __init__(self, model: nn.Module, analyser: _Analyser) -> None:
        self.model = model
        self.touches = analyser.touches
        self.costs = analyser.costs
        self.fixed_macs = analyser.fixed_macs  # (of layers kept whole: in every count)
        #: the ops on activations (cost model), the LayerShape of each conv/linear one, and each
        #: value's channel labels (None: a mixed layout), elements per sample and dim 1 (a value key
        #: is an index into ``values``)
        self.cost_nodes = analyser.cost_nodes
        self.node_layer = analyser.node_layer
        self.values = analyser.values
        self.barriers: list[Barrier] = analyser.barriers
        roots = analyser.uf.roots()  # each root is a slot id: rank the roots without a sort
        is_root = torch.zeros(roots.numel(), dtype=torch.long).index_fill_(0, roots, 1)
        cls = (torch.cumsum(is_root, 0) - 1).index_select(0, roots)
        self.num_classes = int(is_root.sum())
        self.slot_class = cls
        sizes = [t.labels.numel() for t in self.touches]  # one gather, then views per touch
        self._flat = cls.index_select(0, torch.cat([t.labels for t in self.touches])) if sizes else cls[:0]
        self.touch_classes = list(self._flat.split(sizes)) if sizes else []
        barred = torch.zeros(self.num_classes, dtype=torch.bool)
        #: the classes of the model input's channels (an image's 3): no device pads them to its channel
        #: multiple (a first layer reads the image as it is), so the cost model does not either
        self.input_classes = torch.zeros(self.num_classes, dtype=torch.bool)
        self.class_barriers: dict[int, list[str]] = {}
        for labels, bi in analyser.barrier_labels:
            cs = torch.unique(cls[labels.reshape(-1)])
            barred[cs] = True
            if self.barriers[bi].op == "input":
                self.input_classes[cs] = True
            for c in cs.tolist():
                self.class_barriers.setdefault(c, []).append(str(self.barriers[bi]))
        self.barred = barred
        #: layers with parameters that no capture run called (training-mode only, where that mode's
        #: forward failed): surgery does not resize them, and they may no longer fit the slim model
        self.unseen: list[str] = analyser.unseen
        self.groups = self._make_groups()
        #: modules by name, as the capture saw them
        self.modules: dict[str, nn.Module] = analyser._mods
        self._const_params: int | None = None  # parameters of layers without channel touches
        self._once: list[tuple[bool, bool]] | None = None  # :meth:`counted_once`

    def _make_groups(self) -> list[ChannelGroup]:
        """Classes with the same touches (same layers, same number of times) form one group."""
        if not self.touch_classes:
            return []
        # (numpy: these are many small index operations, each several times cheaper than torch's)
        sizes = np.fromiter((tc.numel() for tc in self.touch_classes), np.int64, len(self.touch_classes))
        ti = np.repeat(np.arange(sizes.size), sizes)
        pos = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        # entries come by (touch, position): a stable sort by class orders them by (class, touch, position)
        order = _stable_order(self._flat, self.num_classes)
        cls, ti, pos = self._flat.numpy()[order], ti[order], pos[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(cls)) + 1))
        counts = np.diff(np.append(starts, cls.size))
        uniq = cls[starts]
        rows = []  # (first touch, first position, touch sequence, classes, positions)
        for k in np.unique(counts).tolist():
            sel = np.flatnonzero(counts == k)
            at = starts[sel][:, None] + np.arange(k)[None, :]
            seqs, poss = ti[at], pos[at]  # (classes with k touches, k)
            sigs, inv = _unique_rows(seqs, len(self.touch_classes))
            by = np.argsort(inv * (int(poss[:, 0].max()) + 1) + poss[:, 0])  # by signature, then position
            ends = np.cumsum(np.bincount(inv, minlength=sigs.shape[0]))
            cls_by, pos_by = uniq[sel[by]], poss[by]
            firsts = pos_by[np.append(0, ends[:-1]), 0].tolist()
            parts = zip(sigs.tolist(), firsts, np.split(cls_by, ends[:-1]), np.split(pos_by, ends[:-1]))
            rows.extend((sig[0], first, sig, c, p) for sig, first, c, p in parts)
        rows.sort(key=lambda r: (r[0], r[1]))
        barred = self.barred.numpy()
        groups = []
        for _, _, sig, classes, mat in rows:
            members = [
                (_touch_name(self.touches[t]), self.touches[t].kind, torch.from_numpy(mat[:, i].copy()))
                for i, t in enumerate(sig)
            ]
            bars = (
                [b for c in classes.tolist() for b in self.class_barriers.get(c, [])]
                if barred[classes].any()
                else []
            )
            groups.append(ChannelGroup(len(groups), torch.from_numpy(classes), members, bars))
        return groups

    # -- views -------------------------------------------------------------------------
    def bn_groups(self) -> list[BNGroup]:
        """Coupled BN channels that can be removed together (barrier-free classes only)."""
        out = []
        for g in self.groups:
            ok = ~self.barred[g.classes]
            members = [(name, idx[ok]) for name, kind, idx in g.members if kind == "bn"]
            if members and bool(ok.any()):
                out.append(BNGroup(g.index, members, int((~ok).sum())))
        return out

    def __str__(self) -> str:
        lines = [f"DependencyGraph: {len(self.groups)} groups, {len(self.barriers)} barriers"]
        lines += [str(g) for g in self.groups]
        if self.barriers:
            lines.append("Barriers (channels crossing them are kept):")
            lines += [f"  {b}" for b in self.barriers]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [g.to_dict() for g in self.groups],
            "barriers": [str(b) for b in self.barriers],
        }

    # -- resource model ----------------------------------------------------------------
    def alive_from_groups(self, alive: dict[int, Tensor] | None = None) -> Tensor:
        """Float mask per channel class (1 alive) from per-group keep masks (None: all alive)."""
        ca = torch.ones(self.num_classes, dtype=torch.float64)
        for gi, mask in (alive or {}).items():
            ca[self.groups[gi].classes] = mask.to(torch.float64)
        return ca

    def _counts(self, ca: Tensor) -> list[float]:
        """Alive channel count of every touch (one segment sum)."""
        if not self.touch_classes:
            return []
        if not hasattr(self, "_seg"):
            self._seg = torch.repeat_interleave(torch.tensor([t.numel() for t in self.touch_classes]))
        n = len(self.touch_classes)
        return torch.zeros(n, dtype=torch.float64).index_add_(0, self._seg, ca[self._flat]).tolist()

    def macs(self, alive: dict[int, Tensor] | None = None) -> int:
        """Conv + Linear multiply-accumulates when only ``alive`` channels of each group are kept.

        ``alive`` maps group index -> BoolTensor over the group's channels (missing: all alive).
        A removed channel shrinks its producers and its consumers.
        """
        n = self._counts(self.alive_from_groups(alive))
        total = self.fixed_macs
        for c in self.costs:
            c_in = 1 if c.in_touch is None else n[c.in_touch]
            total += layer_macs(c.kind, c_in, n[c.out_touch], c.kernel, c.groups, c.spatial)
        return int(round(total))

    def counted_once(self) -> list[tuple[bool, bool]]:
        """Per cost entry: whether its layer's weight and its bias are counted there (a module called
        twice at its first call; a tensor several layers share, tied weights, at the first layer)."""
        if self._once is None:
            held: set[int] = set()
            seen: set[str] = set()
            self._once = []
            for c in self.costs:
                own = getattr(self.modules.get(c.module), "_parameters", {})
                flags = []
                for attr in ("weight", "bias"):
                    p = own.get(attr)
                    flags.append(c.module not in seen and (p is None or id(p) not in held))
                    held.update([id(p)] if p is not None else [])
                seen.add(c.module)
                self._once.append((flags[0], flags[1]))
        return self._once

    def params(self, alive: dict[int, Tensor] | None = None) -> int:
        """Parameter count when only ``alive`` channels are kept (untracked layers count fully; a
        tensor several modules share, once)."""
        n = self._counts(self.alive_from_groups(alive))
        if self._const_params is None:
            costed = {c.module for c in self.costs}
            in_layers = {
                id(p)
                for c in self.costs
                for p in getattr(self.modules.get(c.module), "_parameters", {}).values()
            }
            untracked = {
                id(p): p
                for name, mod in self.modules.items()
                if name not in costed
                for p in mod._parameters.values()
                if p is not None and id(p) not in in_layers
            }
            self._const_params = sum(p.numel() for p in untracked.values())
        total = float(self._const_params)
        for c, (weight_once, bias_once) in zip(self.costs, self.counted_once()):
            args = (c.kind, 1 if c.in_touch is None else n[c.in_touch], n[c.out_touch], c.kernel, c.groups)
            weights = layer_params(*args, bias=False)  # (a BN's scale and shift count as its "bias")
            total += weights * weight_once + (layer_params(*args, bias=c.bias) - weights) * bias_once
        return int(round(total))


def deployed_graph(model: nn.Module, example_input: Tensor, *, kernels: bool = False) -> DependencyGraph:
    """:func:`build_graph` with the outputs ``model`` returns deployed: a YOLO's decoded
    predictions (:func:`edgeslim.models.yolo.deployed_output`), every output of another model;
    the graph surgery, the budget and the export's audit all take."""
    from edgeslim.models.yolo import deployed_output

    return build_graph(model, example_input, outputs=deployed_output(model), kernels=kernels)


def coupled_bn_groups(model: nn.Module, example_input: Tensor) -> list[BNGroup]:
    """Coupled BN channel groups of ``model`` from surgery's dependency graph (of a detector: of the
    outputs it deploys, as surgery counts them) whose BNs all have a scale and shift to zero."""
    from edgeslim.channels.norm import bn_layers

    affine = {name for name, _ in bn_layers(model)}
    # (a group with a BN without scale and shift is left out whole: that BN keeps its channels alive,
    # so surgery removes none of the group's; zeroing the others would only damage the model)
    return [
        g for g in deployed_graph(model, example_input).bn_groups() if all(n in affine for n, _ in g.members)
    ]


@torch.no_grad()
def zeroable_bn_groups(model: nn.Module, example_input: Tensor) -> list[BNGroup]:
    """:func:`coupled_bn_groups` with only the channels surgery removes once their BNs' scales and
    shifts are zero: besides those behind a barrier, it keeps (``fixed``) a channel a consumer then
    still reads as input-dependent (a residual stream that starts at a conv with a bias and no BN).
    The graph is captured with every affine BN's scale and shift zeroed, then restored."""
    from edgeslim.channels.norm import bn_layers

    layers = bn_layers(model)
    saved = [(m.weight.detach().clone(), m.bias.detach().clone()) for _, m in layers]
    try:
        for _, m in layers:
            m.weight.zero_(), m.bias.zero_()
        g = deployed_graph(model, example_input)
    finally:
        for (_, m), (w, b) in zip(layers, saved):
            m.weight.copy_(w), m.bias.copy_(b)
    affine = {name for name, _ in layers}
    st = class_states(g)  # (reads_var and barred as captured: of the zeroed model)
    out = []
    for grp in g.groups:
        ok = ~st.barred[grp.classes] & ~st.reads_var[grp.classes]
        members = [(name, idx[ok]) for name, kind, idx in grp.members if kind == "bn"]
        if members and bool(ok.any()) and all(n in affine for n, _ in members):
            out.append(BNGroup(grp.index, members, int((~ok).sum())))
    return out


def _meta_tensors(named: dict[str, Tensor]) -> dict[str, Tensor]:
    """ "meta" stand-ins for every parameter and buffer (tied tensors stay tied)."""
    memo: dict[int, Tensor] = {}
    out = {}
    for name, t in named.items():
        if id(t) not in memo:
            memo[id(t)] = t.detach().to("meta")
        out[name] = memo[id(t)]
    return out


@contextlib.contextmanager
def _swapped_tensors(walk: list[tuple[str, nn.Module]], tensors: dict[str, Tensor]) -> Iterator[None]:
    """Run with ``tensors`` (by qualified name) in place of the parameters and buffers of the
    modules of ``walk`` (``torch.func.functional_call`` without its checks: the names come from
    the model)."""
    saved = []
    for n, m in walk:
        for store in (m._parameters, m._buffers):
            for k, t in store.items():
                new = tensors.get(f"{n}.{k}" if n else k) if t is not None else None
                if new is not None:
                    saved.append((store, k, t))
                    store[k] = new
    try:
        yield
    finally:
        for store, k, t in reversed(saved):
            store[k] = t


@contextlib.contextmanager
def _restored_attributes(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Undo attribute changes a forward makes (cached anchors, shapes) when the run ends."""
    saved = [(m, dict(m.__dict__)) for m in modules]
    try:
        yield
    finally:
        for m, d in saved:
            for k in [k for k in m.__dict__ if k not in d]:
                del m.__dict__[k]
            m.__dict__.update(d)


def _user_frame(tb: Any) -> str:
    """``file:line`` of the innermost frame outside torch and edgeslim's channel model."""
    skip = (os.sep + "torch" + os.sep, os.path.dirname(os.path.abspath(__file__)) + os.sep, "<")
    where = ""
    for fs in traceback.extract_tb(tb):
        if not any(s in fs.filename for s in skip):
            where = f"{fs.filename}:{fs.lineno}"
    return where


#: where a channel rule or a leaf is registered, so that the commands see it when they load the model
REGISTER_WHERE = (
    "in the file that defines the model (for a whole pickle or a torchvision model, which has no such file: "
    "in a file of your own whose factory registers it and builds or loads the model, given as "
    "package.module:Factory)"
)


class DataDependentError(EdgeslimError):
    """The forward turns a value computed from its input into a Python value (``if x.mean() > 0``,
    ``float(x.sum())``): Python control flow on data, which no trace of shapes can follow.
    ``construct``: what it does; ``at``: ``file:line`` in the user's code ("" if unknown)."""

    def __init__(self, message: str, *, construct: str, at: str) -> None:
        super().__init__(message)
        self.construct, self.at = construct, at


def _capture_error(model: nn.Module, an: _Analyser, exc: Exception, x: Tensor) -> EdgeslimError:
    msg = first_line(exc)
    mod = an.current()
    kind = type(an._mods[mod]).__name__ if mod in an._mods else type(model).__name__
    where = f"{mod or '<model>'} ({kind})"
    frame = _user_frame(exc.__traceback__)
    at = f" at {frame}" if frame else ""
    if an.fail_construct:
        construct = an.fail_construct
        fix = (
            # (the model's own forward: a rule or a leaf for the whole model would leave nothing to prune)
            "move it out of forward (or into a submodule that is then given a channel rule or marked a leaf)"
            if not mod
            else f"move it out of forward, or register a channel rule for {kind} "
            "(edgeslim.surgery.register_channel_rule) or mark it a leaf (edgeslim.surgery.register_leaf) "
            f"{REGISTER_WHERE}"
        )
        return DataDependentError(
            f"cannot trace {type(model).__name__}: {construct} in {where}{at}; the channel graph needs "
            f"shapes only: {fix} (docs/surgery.md)",
            construct=construct,
            at=frame,
        )
    # (not for the model itself: a leaf of the whole model would leave nothing to prune)
    leaf = f", or mark {kind} a leaf (edgeslim.surgery.register_leaf)" if mod else ""
    head = f"{type(model).__name__} does not run on an input of shape {tuple(x.shape)}: {msg[:160]} in {where}{at}"
    if _ONE_D.search(f"{msg} {kind}") and x.dim() == 4:  # (an image shape for a model of 1-D convolutions)
        return ExampleInputError(
            head,
            "of shape (N, C, L): the model's convolutions are 1-D (Conv1d)",
            "of an image model: the model's convolutions are 1-D (Conv1d), which the commands do not take; "
            "prune it from Python, prune_with_report(model, torch.randn(1, C, L)) (docs/surgery.md)",
        )
    if _INPUT_MISFIT.search(msg):  # the user's own layers agree with each other: the input does not fit
        return ExampleInputError(
            head,
            "of the shape and size the model takes: batch first, e.g. torch.zeros(1, 3, 224, 224) for RGB images",
            "of the size the model takes, e.g. 3,224,224 for RGB images",
        )
    if not mod:  # (its own forward failed before any layer: it may want a dict, or several tensors)
        leaf = "; a model of a dict or of several inputs: wrap it in a module whose forward takes one tensor"
    return ExampleInputError(head, f"the model accepts{leaf}", f"the model accepts{leaf}")


class ExampleInputError(EdgeslimError):
    """The model's forward failed on the example input (``head``: what failed, where): the Python text
    asks for another ``example_input`` (batch first); :meth:`for_input_shape` asks a caller that
    gave the input as ``input_shape`` (C,H,W, no batch) for that instead."""

    def __init__(self, head: str, fix: str, shape_fix: str) -> None:
        super().__init__(f"{head}; give an example_input {fix}", param="example_input")
        self.head, self.shape_fix = head, shape_fix

    def for_input_shape(self) -> EdgeslimError:
        """The same error for a caller whose input is ``input_shape`` C,H,W (the CLI's --input-shape)."""
        return EdgeslimError(f"{self.head}; give input_shape C,H,W {self.shape_fix}", param="input_shape")


@contextlib.contextmanager
def input_shape_named() -> Iterator[None]:
    """An :class:`ExampleInputError` raised inside, told as :meth:`ExampleInputError.for_input_shape`:
    for a pipeline that built the example input from its ``input_shape``."""
    try:
        yield
    except ExampleInputError as exc:
        raise exc.for_input_shape() from exc


#: PyTorch's words for an input a layer does not take (a channel count, a rank): at capture the model is
#: the user's own, unchanged, so the example input is what does not fit (no leaf would help)
_INPUT_MISFIT = re.compile(
    r"expected input\[.*\] to have \d+ channels|expected \d+D(?: or \d+D)? input|"
    r"expected \d+D or \d+D \(unbatched\) input|Expected \d+D \(unbatched\) or \d+D \(batched\) input|"
    r"shapes cannot be multiplied|Kernel size can't be greater than actual input size|Output size is too small|"
    r"Sizes of tensors must match except in dimension|must match the size of tensor b"
)


#: how a model of several inputs (or of a dict) is given to the channel graph, surgery and the commands
ONE_TENSOR_FIX = (
    "edgeslim feeds a model one tensor (its channel graph, surgery, counting, export): wrap it in a module whose "
    "forward takes one tensor and makes the inputs from it, e.g. forward(x): return model(x[:, :3], x[:, 3:]) "
    "(docs/surgery.md)"
)


def several_inputs(model: nn.Module) -> str | None:
    """``"Stereo.forward takes 2 inputs (left, right)"`` where ``model``'s forward needs more than one
    argument; None where one tensor may do (or its signature cannot be read)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # (a builtin or compiled forward)
        return None
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    need = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if len(need) < 2:
        return None
    return f"{type(model).__name__}.forward takes {len(need)} inputs ({', '.join(need)})"


#: a 1-D layer (its functional name in PyTorch's message, or the failing module's type)
_ONE_D = re.compile(r"\b(?:conv1d|Conv1d|BatchNorm1d|max_pool1d|MaxPool1d|avg_pool1d|AvgPool1d)\b")


class BadOutputSelection(ValueError):
    """An ``outputs=`` selector that picks nothing, or tensors the forward did not return."""


def _selected(select: Callable[[Any], Any], out: Any, outs: list[Tensor]) -> list[Tensor]:
    """The tensors ``select`` picks from the forward's result ``out`` (whose tensors are ``outs``):
    at least one, each one of the forward's own outputs (a new tensor would protect nothing)."""
    picked = flat_tensors(select(out))
    own = {id(t) for t in outs}
    if not picked or any(id(t) not in own for t in picked):
        raise BadOutputSelection(
            "outputs must pick one or more of the tensors the forward returns "
            f"(it picked {len(picked)}, {sum(id(t) not in own for t in picked)} of them new)"
        )
    return picked


def build_graph(
    model: nn.Module,
    example_input: Tensor,
    *,
    outputs: Callable[[Any], Any] | None = None,
    kernels: bool = False,
) -> DependencyGraph:
    """Run ``model`` once (eval mode, weights untouched) and build its channel groups.

    Where layers with parameters did not run (a GoogLeNet's or Inception-v3's auxiliary heads, which
    run in training mode only), a second run in training mode couples them too, its outputs kept, so
    that surgery resizes them and the slim model still trains; MACs stay the eval forward's.

    Every tensor the forward returns is an output whose channels are kept; ``outputs`` picks the
    ones that count from the forward's result (a detector's deployed predictions, not the
    feature maps it also returns in eval mode), see :func:`edgeslim.models.yolo.deployed_output`.

    Capture is eager: every torch function the model calls is seen (a ``TorchFunctionMode``), so
    Python control flow on shapes, ``*args`` forwards, lists of chunks and dict outputs need no
    tracing support. The run is on "meta" tensors (shapes only: no arithmetic, any input size);
    a model that reads the value of one of its own constant tensors (``int(self.stride[i])``)
    is run again on real tensors. Control flow on values computed from the input is an error.

    ``kernels``: also record every op on activations (``cost_nodes``, ``values``) for the cost
    model's kernels (:func:`edgeslim.channels.cost.fuse_kernels`); off for surgery (7-12% of the
    capture's time on ResNet-18, MobileNetV3-L and DenseNet-121).
    """
    model = uncompiled(model)  # (a torch.compile wrapper: its module, captured eagerly)
    refuse_scripted(model, "the channel graph")
    refuse_lazy(model)
    if outputs is not None and not callable(outputs):
        raise TypeError(f"outputs must be a function of the forward's result, got {type(outputs).__name__}")
    if (several := several_inputs(model)) is not None:
        raise EdgeslimError(f"{several}: {ONE_TENSOR_FIX}", param="model")
    if not isinstance(example_input, Tensor):
        raise EdgeslimError(
            f"example_input must be a tensor: one batch the model takes (e.g. torch.randn(1, 3, 224, 224)), "
            f"got {type(example_input).__name__}; for a model of several inputs or of a dict, {ONE_TENSOR_FIX}",
            param="example_input",
        )
    walk = _walk(model)
    modules = list({id(m): m for _, m in walk}.values())
    modes = eval_mode(model) if any(m.training for m in modules) else contextlib.nullcontext()
    with modes, torch.no_grad(), _restored_attributes(modules):
        named = _named_tensors(walk)
        analyser = _Analyser(model, _meta_tensors(named), named, walk, kernels)
        try:
            with _restored_attributes(modules):  # (what the failed run cached must not reach the next)
                analyser.run(example_input.detach().to("meta"), outputs)
            if analyser.not_run():  # layers that run in training mode only (auxiliary heads): resized too
                with _restored_attributes(modules), training_mode(model, True):
                    analyser.run_training(example_input.detach().to("meta"))
        except (EdgeslimError, BadOutputSelection):
            raise
        except Exception as exc:  # noqa: BLE001 - any error of the user's forward
            if analyser.fail_construct:
                raise _capture_error(model, analyser, exc, example_input) from exc
            analyser = _Analyser(model, walk=walk, kernels=kernels)
            dev = next((p.device for p in model.parameters()), example_input.device)
            try:
                analyser.run(example_input.detach().to(dev), outputs)
            except (EdgeslimError, BadOutputSelection):
                raise
            except Exception as exc2:  # noqa: BLE001
                raise _capture_error(model, analyser, exc2, example_input) from exc2
            analyser.unseen = analyser.not_run()  # (a training-mode run on real tensors would train BNs)
    return DependencyGraph(model, analyser)


@dataclass
class ClassStates:
    """Per class (one coupled channel index) of a graph: what decides whether surgery removes it."""

    has_bn: Tensor  # some BN normalizes it
    live: Tensor  # some BN scale is nonzero, or a BN is not affine
    any_zero: Tensor  # some BN scale is exactly zero
    reads_var: Tensor  # a consumer reads it as input-dependent (an SE gate on a nonzero bias)
    barred: Tensor  # a barrier touches it (a model input or output, an op surgery cannot resize)
    strength: Tensor  # sum of |BN bias|

    @property
    def removable(self) -> Tensor:
        """Every BN scale zero, read as a constant, and no barrier: surgery can remove it."""
        return self.has_bn & ~self.live & ~self.reads_var & ~self.barred


def class_states(g: DependencyGraph) -> ClassStates:
    """The per-class facts :func:`removable_classes` and the surgery report are made of."""
    k = g.num_classes
    has_bn = torch.zeros(k, dtype=torch.bool)
    live = torch.zeros(k, dtype=torch.bool)
    any_zero = torch.zeros(k, dtype=torch.bool)
    reads_var = torch.zeros(k, dtype=torch.bool)
    strength = torch.zeros(k, dtype=torch.float64)
    mods = g.modules
    bn_cls, fixed_cls, scales, biases, var_cls = [], [], [], [], []  # gathered, then one op each
    for t, cls in zip(g.touches, g.touch_classes):
        if t.kind == "bn":
            bn = mods[t.module]
            if not bn.affine:
                fixed_cls.append(cls)
                continue
            bn_cls.append(cls)
            scales.append(bn.weight.detach().cpu())
            biases.append(bn.bias.detach().cpu())
        elif t.read_state is not None:
            var_cls.append(cls[t.read_state == VAR])
    if bn_cls:
        cls = torch.cat(bn_cls)
        has_bn[cls] = True
        gamma = torch.cat(scales)
        live[cls[gamma != 0]] = True
        any_zero[cls[gamma == 0]] = True
        strength.index_add_(0, cls, torch.cat(biases).abs().double())
    if fixed_cls:
        has_bn[torch.cat(fixed_cls)] = True
        live[torch.cat(fixed_cls)] = True
    if var_cls:
        reads_var[torch.cat(var_cls)] = True
    return ClassStates(has_bn, live, any_zero, reads_var, g.barred, strength)


#: touch kind -> the sides (0: input, 1: output) of its layer's channel count it indexes
_TOUCH_SIDES = {"conv_in": (0,), "linear_in": (0,), "conv_out": (1,), "linear_out": (1,), "dw": (0, 1)}


def resizable_layers(g: DependencyGraph) -> dict[str, tuple[bool, bool]]:
    """Module name -> whether surgery can change its (input, output) channel count: some channel of
    it is normalized by a BN and reaches no barrier. A count it cannot change is the architecture's
    (a squeeze-excitation width, the classes, the layers inside a module under a channel rule or leaf)."""
    st = class_states(g)
    can = st.has_bn & ~st.barred
    out: dict[str, list[bool]] = {}
    for t, cls in zip(g.touches, g.touch_classes):
        side = _TOUCH_SIDES.get(t.kind)
        if side is None:
            continue
        entry = out.setdefault(t.module, [False, False])
        for i in side:
            entry[i] = entry[i] or bool(can[cls].any())
    # a module under a channel rule (or a leaf) and everything inside it: the graph sees it as one
    # step, so surgery resizes none of its layers on their own (its rule's shrink follows the groups)
    ruled = [name for name, m in g.modules.items() if name and rules.rule_for(m) is not None]
    for name in g.modules:
        if any(name == r or name.startswith(r + ".") for r in ruled):
            out.setdefault(name, [False, False])
    return {name: (a, b) for name, (a, b) in out.items()}


def removable_classes(g: DependencyGraph) -> tuple[Tensor, Tensor]:
    """(removable mask, strength) per class; strength = sum of |BN bias| (scales are 0)."""
    st = class_states(g)
    return st.removable, st.strength


def zero_kept(st: ClassStates) -> dict[str, int]:
    """Classes with an exactly-zero BN scale that surgery keeps, by cause: another BN of the same
    coupled channel has a nonzero scale; a barrier (a model output or input, an op surgery cannot
    resize); a consumer reads it as input-dependent (an SE gate on a nonzero BN bias)."""
    zero = st.has_bn & st.any_zero
    coupled = zero & st.live
    barred = zero & ~st.live & st.barred
    gated = zero & ~st.live & ~st.barred & st.reads_var
    return {"coupled_with_nonzero": int(coupled.sum()), "behind_barrier": int(barred.sum()),
            "read_as_input_dependent": int(gated.sum())}  # fmt: skip
