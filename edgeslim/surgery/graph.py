"""Channel dependency graph: which (layer, dim, index) read or write the same channel.

The model is traced with ``torch.fx.symbolic_trace`` and run once on an example input by an
fx interpreter. Next to every real value the interpreter carries a *label map*: for each
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

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn

from edgeslim.errors import EdgeslimError
from edgeslim.surgery import ops
from edgeslim.utils.modes import eval_mode

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
    kind: str  # conv_out | conv_in | dw | bn | linear_out | linear_in
    labels: Tensor
    read_state: Tensor | None = None  # consumers: ZERO/CONST/VAR of what they read


@dataclass
class LayerCost:
    """What a layer costs as a function of its alive channels (see :meth:`DependencyGraph.macs`)."""

    module: str
    kind: str  # conv | dw | linear | bn
    in_touch: int | None
    out_touch: int | None
    kernel: int = 1  # k_h * k_w
    groups: int = 1
    spatial: int = 1  # H_out * W_out
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
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> Tensor:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return torch.arange(start, start + n)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        pairs = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if pairs.numel() == 0:
            return
        for x, y in torch.unique(pairs, dim=0).tolist():
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> Tensor:
        return torch.tensor([self.find(i) for i in range(len(self.parent))], dtype=torch.long)


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


class _Analyser(fx.Interpreter):
    """Runs the traced model and builds the label/state maps and layer touches."""

    def __init__(self, gm: fx.GraphModule, real: fx.GraphModule) -> None:
        super().__init__(gm)
        self.uf = _UnionFind()
        self.infos: dict[fx.Node, Any] = {}
        self.touches: list[Touch] = []
        self.costs: list[LayerCost] = []
        self.barrier_labels: list[tuple[Tensor, int]] = []
        self.barriers: list[Barrier] = []
        self.first_call: dict[str, list[Tensor]] = {}
        self._mods = dict(real.named_modules())  # real weights (the interpreter may run on "meta")
        self._real = real

    # -- helpers -----------------------------------------------------------------------
    def info(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.infos.get(a)
        if isinstance(a, (list, tuple)):
            return [self.info(x) for x in a]
        return None

    def _all_infos(self, obj: Any) -> list[Info]:
        if isinstance(obj, Info):
            return [obj]
        if isinstance(obj, (list, tuple)):
            return [i for x in obj for i in self._all_infos(x)]
        return []

    def barrier(self, node: fx.Node, infos: list[Info], reason: str) -> None:
        infos = [i for i in infos if i is not None]
        if not infos:
            return
        self.barriers.append(Barrier(node.name, _op_name(node), reason))
        for i in infos:
            self.barrier_labels.append((i.labels, len(self.barriers) - 1))

    def fresh(self, value: Any, state: int = VAR) -> Any:
        if _is_tensor(value) and value.dim() >= 2:
            c = value.shape[1]
            return Info(self.uf.new(c), torch.full((c,), state, dtype=torch.int8), True, value.shape)
        if isinstance(value, (list, tuple)):
            return [self.fresh(v, state) for v in value]
        return None

    def opaque(self, node: fx.Node, out: Any, reason: str) -> Any:
        """Unknown op: channels that cross it are kept (inputs and outputs are barriers)."""
        ins = self._all_infos(self.info(list(node.args) + list(node.kwargs.values())))
        res = self.fresh(out)
        self.barrier(node, ins + self._all_infos(res), reason)
        return res

    def share(self, name: str, labels: list[Tensor]) -> None:
        """A module called twice must keep the same channels at every call."""
        if name in self.first_call:
            for a, b in zip(self.first_call[name], labels):
                self.uf.union_pairs(a, b)
        else:
            self.first_call[name] = labels

    # -- interpreter -------------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.infos[n] = self.analyse(n, out)
        return out

    def analyse(self, n: fx.Node, out: Any) -> Any:
        if n.op == "placeholder":
            res = self.fresh(out)
            self.barrier(n, self._all_infos(res), "model input")
            return res
        if n.op == "get_attr":
            return None
        if n.op == "output":
            self.barrier(n, self._all_infos(self.info(n.args)), "model output")
            return None
        if n.op == "call_module":
            return self.on_module(n, self._mods[n.target], out)
        fn = n.target if n.op == "call_function" else ops.resolve_method(n.target)
        return self.on_function(n, fn, out)

    def on_module(self, n: fx.Node, m: nn.Module, out: Any) -> Any:
        x = self.info(n.args[0]) if n.args else None
        xv = self.env[n.args[0]] if n.args and isinstance(n.args[0], fx.Node) else None
        if not isinstance(x, Info):
            return (
                self.fresh(out) if not self._all_infos(self.info(n.args)) else self.opaque(n, out, "no input")
            )
        if isinstance(m, ops.CONV_MODULES):
            return self.conv(n, m, x, out)
        if isinstance(m, ops.LINEAR_MODULES):
            return self.linear(n, m, x, xv, out)
        if isinstance(m, ops.BN_MODULES):
            return self.bn(n, m, x, out)
        if isinstance(m, ops.ELEMENTWISE_MODULES):
            return self.unary(n, x, out, lambda z: m(z))
        if isinstance(m, ops.POOL_MODULES):
            return self.pool(n, x, out)
        if isinstance(m, ops.FLATTEN_MODULES):
            return self.shape_op(n, x, xv, out, lambda t: m(t))
        return self.opaque(n, out, f"unsupported module {type(m).__name__}")

    def on_function(self, n: fx.Node, fn: Any, out: Any) -> Any:
        args, kwargs = n.args, n.kwargs
        a0 = self.info(args[0]) if args else None
        if fn in ops.SHAPE_QUERY_FUNCTIONS or not (
            self._all_infos(self.info(args)) or self._all_infos(self.info(kwargs))
        ):
            if fn in ops.SHAPE_QUERY_FUNCTIONS or not _is_tensor(out):
                return None
            return (
                self.opaque(n, out, "tensor created inside the model")
                if _is_tensor(out) and out.dim() >= 2
                else None
            )
        if fn is operator.getitem:
            return self.getitem(n, a0, out)
        if fn in ops.BINARY_FUNCTIONS:
            return self.binary(n, ops.BINARY_FUNCTIONS[fn], out)
        if fn in ops.CAT_FUNCTIONS:
            return self.cat(n, out)
        xv = self.env.get(args[0]) if isinstance(args[0], fx.Node) else None
        if not isinstance(a0, Info):
            return self.opaque(n, out, "unsupported arguments")
        rest_infos = self._all_infos(self.info(list(args[1:]) + list(kwargs.values())))
        if rest_infos:
            return self.opaque(n, out, "op mixing several tensors")
        if fn in ops.ELEMENTWISE_FUNCTIONS or fn in ops.STOCHASTIC_DEPTH:
            return self.unary(n, a0, out, lambda z: fn(z, *self.load(args[1:]), **self.load(kwargs)))
        if fn in ops.POOL_FUNCTIONS:
            return self.pool(n, a0, out)
        if fn in ops.CHUNK_FUNCTIONS:
            return self.chunk(n, a0, out)
        if fn in ops.SPLIT_FUNCTIONS:
            return self.split(n, a0, out)
        if fn in ops.REDUCE_FUNCTIONS:
            return self.reduce(n, a0, xv, out)
        if fn in ops.RESHAPE_FUNCTIONS:
            sizes = _flat(args[1:])
            lits = [a for a in sizes if isinstance(a, int) and a not in (-1, 1)]
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
            rest = self.load(args[1:])
            kw = self.load(kwargs)
            return self.shape_op(n, a0, xv, out, lambda t: fn(t, *rest, **kw))
        return self.opaque(n, out, "unsupported function")

    def const(self, a: Any) -> Any:
        """The real value of a constant operand (number or parameter); a tensor of unknown value: ``...``."""
        if not isinstance(a, fx.Node):
            return a
        if a.op == "get_attr":
            return _getattr_path(self._real, a.target)
        return self.env[a] if not _is_tensor(self.env[a]) else ...

    def load(self, a: Any) -> Any:
        return fx.node.map_arg(a, lambda nd: self.env[nd])

    # -- op rules ----------------------------------------------------------------------
    def conv(self, n: fx.Node, m: nn.Conv2d | nn.Conv1d, x: Info, out: Tensor) -> Info | None:
        if not x.uniform:
            return self.opaque(n, out, "conv input with mixed channel layout")
        g = m.groups
        ipg, opg = m.in_channels // g, m.out_channels // g
        kernel = math.prod(m.kernel_size)
        spatial = math.prod(out.shape[2:])
        bias = m.bias is not None
        if g > 1 and ipg == 1:  # depthwise (with multiplier): input k feeds outputs k*opg...
            labels = x.labels.repeat_interleave(opg)
            st = x.state.repeat_interleave(opg).clone()
            if bias:
                st[(st == ZERO) & (m.bias.detach().cpu() != 0)] = CONST
            self.share(n.target, [labels])
            self.touches.append(Touch(n.target, "dw", labels))
            self.costs.append(
                LayerCost(n.target, "dw", None, len(self.touches) - 1, kernel, g, spatial, bias)
            )
            return Info(labels, st, True, out.shape)
        res = self.fresh(out)
        if g > 1:  # grouped: index j of every group is removed together (equal group sizes)
            self.uf.union_pairs(res.labels.view(g, opg)[:1].expand(g, opg), res.labels.view(g, opg))
            self.uf.union_pairs(x.labels.view(g, ipg)[:1].expand(g, ipg), x.labels.view(g, ipg))
        self.share(n.target, [x.labels, res.labels])
        self.touches.append(Touch(n.target, "conv_in", x.labels, x.state))
        self.touches.append(Touch(n.target, "conv_out", res.labels))
        t = len(self.touches)
        self.costs.append(LayerCost(n.target, "conv", t - 2, t - 1, kernel, g, spatial, bias))
        return res

    def linear(self, n: fx.Node, m: nn.Linear, x: Info, xv: Tensor, out: Tensor) -> Info | None:
        if not (x.uniform and xv is not None and xv.dim() == 2):
            return self.opaque(n, out, "linear on a tensor that is not (batch, features)")
        res = self.fresh(out)
        self.share(n.target, [x.labels, res.labels])
        self.touches.append(Touch(n.target, "linear_in", x.labels, x.state))
        self.touches.append(Touch(n.target, "linear_out", res.labels))
        t = len(self.touches)
        self.costs.append(LayerCost(n.target, "linear", t - 2, t - 1, bias=m.bias is not None))
        return res

    def bn(self, n: fx.Node, m: nn.modules.batchnorm._BatchNorm, x: Info, out: Tensor) -> Info | None:
        if not x.uniform:
            return self.opaque(n, out, "batch norm on a mixed channel layout")
        st = torch.where(x.state == VAR, VAR, CONST).to(torch.int8)
        if m.affine:
            w, b = m.weight.detach().cpu(), m.bias.detach().cpu()
            st[w == 0] = CONST
            st[(w == 0) & (b == 0)] = ZERO
        self.share(n.target, [x.labels])
        self.touches.append(Touch(n.target, "bn", x.labels))
        self.costs.append(LayerCost(n.target, "bn", None, len(self.touches) - 1, bias=m.affine))
        return Info(x.labels, st, True, out.shape)

    def unary(self, n: fx.Node, x: Info, out: Tensor, fn: Any) -> Info | None:
        if not _is_tensor(out) or out.shape != x.shape:
            return self.opaque(n, out, "element-wise op that changed the shape")
        c = x.shape[1]
        probe = torch.zeros((1, c) + (1,) * (len(x.shape) - 2))
        try:
            keeps_zero = bool((fn(probe) == 0).all())
        except Exception:  # noqa: BLE001 - the probe is a best effort
            keeps_zero = False
        st = x.state.clone()
        if not keeps_zero:
            st[st == ZERO] = CONST
        return Info(x.labels, st, x.uniform, x.shape)

    def pool(self, n: fx.Node, x: Info, out: Tensor) -> Info | None:
        if not x.uniform or out.dim() != len(x.shape) or out.shape[1] != x.shape[1]:
            return self.opaque(n, out, "pooling on a mixed channel layout")
        return Info(x.labels, x.state, True, out.shape)

    def reduce(self, n: fx.Node, x: Info, xv: Tensor, out: Tensor) -> Info | None:
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        dims = [d % len(x.shape) for d in dims]
        if not x.uniform or not dims or 0 in dims or 1 in dims or out.dim() < 2:
            return self.opaque(n, out, "reduction over the batch or channel dimension")
        return Info(x.labels, x.state, True, out.shape)

    def shape_op(self, n: fx.Node, x: Info, xv: Tensor, out: Any, fn: Any) -> Info | None:
        if not _is_tensor(out):
            return self.opaque(n, out, "shape op with non-tensor result")
        lab, st = x.full()
        new_lab, new_st = fn(lab.contiguous()), fn(st.contiguous())
        if new_lab.shape != out.shape or new_lab.dim() < 2:
            return self.opaque(n, out, "reshape that moves the batch dimension")
        return _compress(new_lab, new_st)

    def getitem(self, n: fx.Node, a0: Any, out: Any) -> Any:
        idx = n.args[1]
        if isinstance(a0, list):
            return a0[idx] if isinstance(idx, int) else (a0[idx] if isinstance(idx, slice) else None)
        if not isinstance(a0, Info):
            return None
        idx_t = idx if isinstance(idx, tuple) else (idx,)
        if len(idx_t) > 1 and idx_t[1] != slice(None) or any(i is None or i is Ellipsis for i in idx_t):
            return self.opaque(n, out, "indexing that selects channels")
        if not isinstance(idx_t[0], slice) or not _is_tensor(out):
            return self.opaque(n, out, "indexing that selects channels")
        lab, st = a0.full()
        new_lab, new_st = lab[idx], st[idx]
        return _compress(new_lab, new_st)

    def binary(self, n: fx.Node, kind: str, out: Any) -> Info | None:
        a, b = (n.args + (None,))[:2] if len(n.args) >= 2 else (n.args[0], n.kwargs.get("other"))
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
                la, sa = la.expand(out.shape), sa.expand(out.shape)
                lb, sb = lb.expand(out.shape), sb.expand(out.shape)
            self.uf.union_pairs(la, lb)
            st = torch.maximum(sa, sb)
            if kind == "mul":
                st = torch.where((sa == ZERO) | (sb == ZERO), ZERO, st)
            elif kind == "div":
                st = torch.where(sa == ZERO, ZERO, st)
            st = st.to(torch.int8)
            if ia.uniform and ib.uniform:
                return Info(la, st, True, out.shape)
            return _compress(la.contiguous(), st.contiguous())
        # one operand is a constant (number or a tensor without channel labels)
        x, xv, cv, x_first = (ia, va, vb, True) if isinstance(ia, Info) else (ib, vb, va, False)
        if not isinstance(x, Info):
            return self.opaque(n, out, "element-wise op on unlabelled tensors")
        if _is_tensor(cv) and cv.dim() >= len(x.shape) - 1 and cv.numel() > 1:
            ch = cv.shape[1 - len(x.shape)] if cv.dim() >= len(x.shape) - 1 else 1
            if ch != 1:
                self.barrier(n, [x], "per-channel constant tensor (a parameter used in forward)")
                return Info(x.labels, torch.full_like(x.state, VAR), x.uniform, out.shape)
        if kind == "div" and not x_first:
            self.barrier(n, [x], "division by a channel")
            return Info(x.labels, torch.full_like(x.state, VAR), x.uniform, out.shape)
        if cv is ...:  # a tensor computed inside the model without channel labels
            return self.opaque(n, out, "element-wise op with a computed unlabelled tensor")
        const_zero = bool((torch.as_tensor(cv) == 0).all())
        st = x.state.clone()
        if kind == "add" and not const_zero:
            st[st == ZERO] = CONST
        if out.shape != x.shape:
            if x.uniform and out.shape[1] == x.shape[1]:
                return Info(x.labels, st, True, out.shape)
            return self.opaque(n, out, "broadcast that changes the channel layout")
        return Info(x.labels, st, x.uniform, out.shape)

    def cat(self, n: fx.Node, out: Tensor) -> Info | None:
        tensors = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        infos = self.info(tensors)
        if not all(isinstance(i, Info) for i in infos):
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
            and isinstance(sizes[1], int)
            and sizes[1] == outs[1]
            and not any(isinstance(v, int) and v not in (-1, 1) for i, v in enumerate(sizes) if i != 1)
            and outs[0] == ins[0]
            and outs[1] * outs[2] == ins[1]
            and outs[3:] == ins[2:]
        )
        if ok:
            blocks = x.labels.view(outs[1], outs[2])
            self.uf.union_pairs(blocks[:1].expand_as(blocks), blocks)
        return bool(ok)

    def chunk(self, n: fx.Node, x: Info, out: Any) -> Any:
        k = n.args[1] if len(n.args) > 1 else n.kwargs.get("chunks")
        dim = (n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)) % len(x.shape)
        if dim != 1:
            if x.uniform:
                return [Info(x.labels, x.state, True, o.shape) for o in out]
            return self.opaque(n, out, "chunk of a mixed channel layout")
        c = x.shape[1]
        if not x.uniform or c % k:
            return self.opaque(n, out, "chunk of channels into unequal pieces")
        pieces = x.labels.view(k, c // k)
        self.uf.union_pairs(pieces[:1].expand_as(pieces), pieces)  # equal pieces stay equal
        return [Info(pieces[i], x.state.view(k, -1)[i], True, o.shape) for i, o in enumerate(out)]

    def split(self, n: fx.Node, x: Info, out: Any) -> Any:
        dim = (n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)) % len(x.shape)
        if dim != 1 and x.uniform:
            return [Info(x.labels, x.state, True, o.shape) for o in out]
        return self.opaque(n, out, "split of channels at fixed sizes")


def _getattr_path(obj: Any, target: str) -> Any:
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _flat(a: Any) -> list[Any]:
    if isinstance(a, (list, tuple)):
        return [y for x in a for y in _flat(x)]
    return [a]


def _op_name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_module":
        return f"module {node.target}"
    return getattr(t, "__name__", str(t))


class DependencyGraph:
    """Channel groups of a traced model (see the module docstring)."""

    def __init__(self, model: nn.Module, analyser: _Analyser) -> None:
        self.model = model
        self.touches = analyser.touches
        self.costs = analyser.costs
        self.barriers: list[Barrier] = analyser.barriers
        roots = analyser.uf.roots()
        uniq, cls = torch.unique(roots, return_inverse=True)
        self.num_classes = int(uniq.numel())
        self.slot_class = cls
        self.touch_classes = [cls[t.labels] for t in self.touches]
        barred = torch.zeros(self.num_classes, dtype=torch.bool)
        self.class_barriers: dict[int, list[str]] = {}
        for labels, bi in analyser.barrier_labels:
            cs = torch.unique(cls[labels.reshape(-1)])
            barred[cs] = True
            for c in cs.tolist():
                self.class_barriers.setdefault(c, []).append(str(self.barriers[bi]))
        self.barred = barred
        self.groups = self._make_groups()
        self._const_params = sum(
            p.numel()
            for name, mod in model.named_modules()
            if name not in {c.module for c in self.costs}
            for p in mod.parameters(recurse=False)
        )

    def _make_groups(self) -> list[ChannelGroup]:
        occ: dict[int, list[tuple[int, int]]] = {}
        for ti, tc in enumerate(self.touch_classes):
            for pos, c in enumerate(tc.tolist()):
                occ.setdefault(c, []).append((ti, pos))
        by_sig: dict[tuple, list[int]] = {}
        for c, lst in occ.items():
            sig: dict[int, int] = {}
            for ti, _ in lst:
                sig[ti] = sig.get(ti, 0) + 1
            by_sig.setdefault(tuple(sorted(sig.items())), []).append(c)
        groups = []
        for classes in sorted(by_sig.values(), key=lambda cs: min(occ[cs[0]])):
            classes.sort(key=lambda c: occ[c][0][1])
            first = occ[classes[0]]
            members = []
            for k, (ti, _) in enumerate(first):
                idx = torch.tensor([occ[c][k][1] for c in classes], dtype=torch.long)
                members.append((self.touches[ti].module, self.touches[ti].kind, idx))
            bars = [b for c in classes for b in self.class_barriers.get(c, [])]
            groups.append(ChannelGroup(len(groups), torch.tensor(classes, dtype=torch.long), members, bars))
        return groups

    # -- views -------------------------------------------------------------------------
    def bn_groups(self) -> list[BNGroup]:
        """Coupled BN channels that can be removed together (barrier-free classes only)."""
        out = []
        for g in self.groups:
            ok = ~self.barred[g.classes]
            members = [(name, idx[ok]) for name, kind, idx in g.members if kind == "bn"]
            if members and bool(ok.any()):
                out.append(BNGroup(g.index, members))
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
    def class_alive(self, alive: dict[int, Tensor] | None = None) -> Tensor:
        ca = torch.ones(self.num_classes, dtype=torch.float64)
        for gi, mask in (alive or {}).items():
            ca[self.groups[gi].classes] = mask.to(torch.float64)
        return ca

    def _count(self, ca: Tensor, touch: int | None) -> Tensor:
        return ca[self.touch_classes[touch]].sum()

    def macs(self, alive: dict[int, Tensor] | None = None) -> int:
        """Conv + Linear multiply-accumulates when only ``alive`` channels of each group are kept.

        ``alive`` maps group index -> BoolTensor over the group's channels (missing: all alive).
        A removed channel shrinks its producers and its consumers.
        """
        ca = self.class_alive(alive)
        total = torch.zeros((), dtype=torch.float64)
        for c in self.costs:
            if c.kind == "conv":
                total += (
                    c.kernel
                    * c.spatial
                    * self._count(ca, c.in_touch)
                    / c.groups
                    * self._count(ca, c.out_touch)
                )
            elif c.kind == "dw":
                total += c.kernel * c.spatial * self._count(ca, c.out_touch)
            elif c.kind == "linear":
                total += self._count(ca, c.in_touch) * self._count(ca, c.out_touch)
        return int(round(float(total)))

    def params(self, alive: dict[int, Tensor] | None = None) -> int:
        """Parameter count when only ``alive`` channels are kept (untracked layers count fully)."""
        ca = self.class_alive(alive)
        total = torch.zeros((), dtype=torch.float64) + self._const_params
        for c in self.costs:
            out = self._count(ca, c.out_touch)
            if c.kind == "conv":
                total += c.kernel * self._count(ca, c.in_touch) / c.groups * out + (out if c.bias else 0)
            elif c.kind == "dw":
                total += c.kernel * out + (out if c.bias else 0)
            elif c.kind == "linear":
                total += self._count(ca, c.in_touch) * out + (out if c.bias else 0)
            elif c.kind == "bn" and c.bias:
                total += 2 * out
        return int(round(float(total)))


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a one-line error for untraceable models."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeslimError(
            f"cannot trace {type(model).__name__} with torch.fx ({msg}); data-dependent control flow "
            "in forward() blocks channel surgery: move it out of forward or mark the module as a leaf"
        ) from exc


def build_graph(model: nn.Module, example_input: Tensor) -> DependencyGraph:
    """Trace ``model`` (in eval mode, weights untouched) and build its channel groups."""
    with eval_mode(model):
        gm = trace(model)
        # Shapes are all the analysis needs: run on the "meta" device (no arithmetic, any input size).
        memo: dict[int, Any] = {}
        for t in [*gm.parameters(), *gm.buffers()]:
            mt = t.detach().to("meta")
            memo[id(t)] = nn.Parameter(mt, t.requires_grad) if isinstance(t, nn.Parameter) else mt
        meta = copy.deepcopy(gm, memo)
        analyser = _Analyser(meta, gm)
        with torch.no_grad():
            try:
                analyser.run(example_input.to("meta"))
            except EdgeslimError:
                raise
            except Exception as exc:  # noqa: BLE001 - shape errors from any op
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise EdgeslimError(
                    f"{type(model).__name__} does not run on an input of shape {tuple(example_input.shape)} "
                    f"({msg[:200]}); give an example input (--input-shape) the model accepts"
                ) from exc
    return DependencyGraph(model, analyser)
