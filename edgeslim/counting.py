"""Parameters, MACs per layer and BN scale statistics of a model.

Conv, Linear and BatchNorm rows are priced by edgeslim's one counter,
:func:`edgeslim.channels.cost.layer_macs` / :func:`~edgeslim.channels.cost.layer_params`, from
forward hooks. The total and any other module are counted by an external counter, which also
cross-checks the rows: MACs come from fvcore's ``FlopCountAnalysis`` (one fused multiply-add counts as 1), restricted
to the multiply-accumulate operators (conv, linear, matmul, einsum, bmm, the ``add*mm``/``addmv`` family, and scaled dot-product
attention, priced here from its shapes in both counters); fvcore's extra counts
for norms, pools and upsampling are reported separately as ``other_ops``. fvcore is unmaintained,
so it stays behind this module: without it, :class:`torch.utils.flop_counter.FlopCounterMode`
(which counts FLOPs = 2 x MACs) gives the same MACs.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgeslim.channels.cost import einsum_macs, forward_batch, layer_macs, layer_params, positions_per_sample
from edgeslim.channels.graph import ONE_TENSOR_FIX, several_inputs
from edgeslim.channels.norm import bn_affine, bn_channels, bn_layers, is_batchnorm
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.utils.modes import eval_mode, refuse_lazy, unfused_attention
from edgeslim.utils.parsing import ONE_D

log = logging.getLogger(__name__)

#: fvcore operator names that are not multiply-accumulates (kept apart in ``other_ops``)
NON_MAC_OPS = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm", "adaptive_avg_pool2d",
                         "upsample_nearest2d", "upsample_bilinear2d", "grid_sampler"})  # fmt: skip


@dataclass
class LayerRow:
    name: str
    type: str
    params: int
    macs: int
    in_channels: int | None
    out_channels: int | None
    output_shape: list[int] | None


@dataclass
class ModelStats:
    """Totals and rows (each leaf module with parameters or MACs, each module with parameters of its
    own: ``<model>`` for the model's) for one input shape (batch 1)."""

    input_shape: tuple[int, ...]
    params: int
    trainable_params: int
    macs: int
    other_ops: int
    counter: str
    layers: list[LayerRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_channels(m: nn.Module) -> tuple[int | None, int | None]:
    """(in, out) channels of a conv, linear or BN layer; (None, None) for any other module."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if is_batchnorm(m):
        return bn_channels(m), bn_channels(m)
    return None, None


def _priced(m: nn.Module, x: Any, out: Any, batch: int = 1) -> tuple[int, int] | None:
    """(MACs, params) of a Conv, Linear or BatchNorm module for one sample of a forward at ``batch``
    samples, by the one counter: its positions over all of its calls' leading dimension, over the
    batch (a model that folds patches into the batch, MobileViT, runs its layers on 4 rows a sample)."""
    if (
        isinstance(m, nn.modules.conv._ConvNd)
        and isinstance(x, torch.Tensor)
        and isinstance(out, torch.Tensor)
    ):
        k = math.prod(m.kernel_size)
        params = layer_params("conv", m.in_channels, m.out_channels, k, m.groups, m.bias is not None)
        # a conv run backwards: priced at the input's positions, channels swapped
        positions = positions_per_sample((x if m.transposed else out).shape, batch)
        cin, cout = (m.out_channels, m.in_channels) if m.transposed else (m.in_channels, m.out_channels)
        macs = layer_macs("conv", cin, cout, k, m.groups, positions)
        return int(round(macs)), int(round(params))
    if isinstance(m, nn.Linear) and isinstance(out, torch.Tensor):
        rows = out.numel() / max(m.out_features, 1) / batch if out.dim() > 1 else 1
        macs = layer_macs("linear", m.in_features, m.out_features, spatial=rows)
        return int(macs), int(layer_params("linear", m.in_features, m.out_features, bias=m.bias is not None))
    if is_batchnorm(m):
        return 0, int(layer_params("bn", bn_channels(m), bn_channels(m), bias=bn_affine(m)))
    return None


def _output_shapes(
    model: nn.Module, x: torch.Tensor
) -> tuple[dict[str, list[int]], dict[str, tuple[int, int]]]:
    """Output shape of every leaf module, and (MACs, params) of those the one counter prices."""
    shapes: dict[str, list[int]] = {}
    priced: dict[str, tuple[int, int]] = {}
    hooks = []
    batch = forward_batch(x.shape)
    if isinstance(model, torch.jit.ScriptModule):  # no hooks on TorchScript: just check that it runs
        model(x)
        return shapes, priced
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):

            def hook(m, args, out, name=name):
                if isinstance(out, torch.Tensor):
                    shapes[name] = list(out.shape)
                cost = _priced(m, args[0] if args else None, out, batch)
                if cost is not None:
                    done = priced.get(name, (0, cost[1]))
                    priced[name] = (done[0] + cost[0], cost[1])  # a module called twice counts twice

            hooks.append(m.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, priced


def _matmul_macs(a: Sequence[int], out: Sequence[int]) -> int:
    """MACs of a matmul, matrix-vector or dot product whose first operand has shape ``a`` and whose
    output ``out``: every output element sums over the inner size (broadcast batches included)."""
    return math.prod(out) * (a[-1] if a else 1)


def _addmatmul_macs(a: Sequence[int], b: Sequence[int]) -> int:
    """MACs of ``addmm``, ``addmv``, ``baddbmm`` or ``addbmm`` on the product's operands of shapes
    ``a`` and ``b``: each element of ``a`` meets every column of ``b`` (a vector's one); the added
    input costs no multiply, and ``addbmm``'s sum over the batch counts every batch's product."""
    return math.prod(a) * (b[-1] if len(b) > 1 else 1)


def _sdpa_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """MACs of scaled dot-product attention on query/key/value of shapes ``q``, ``k``, ``v``
    (``(..., L, E)``, ``(..., S, E)``, ``(..., S, Ev)``): ``Q K^T`` and the weights times ``V``."""
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _fvcore_sdpa(inputs: list, outputs: list) -> int:
    """fvcore handle of ``aten::scaled_dot_product_attention`` (fvcore has none)."""
    from fvcore.nn.jit_handles import get_shape

    return _sdpa_macs(*(get_shape(v) for v in inputs[:3]))


def _fvcore_matmul(inputs: list, outputs: list) -> int:
    """fvcore handle of ``aten::matmul``, ``mv`` and ``dot``: fvcore's own fails on a 1-D operand
    (IndexError) and leaves out a batch the second operand broadcasts."""
    from fvcore.nn.jit_handles import get_shape

    return _matmul_macs(get_shape(inputs[0]), get_shape(outputs[0]))


def _fvcore_addmatmul(inputs: list, outputs: list) -> int:
    """fvcore handle of ``aten::addmm``, ``addmv``, ``baddbmm`` and ``addbmm`` (fvcore has only
    ``addmm``): ``nn.MultiheadAttention`` with a mask computes ``Q K^T`` by ``baddbmm``."""
    from fvcore.nn.jit_handles import get_shape

    return _addmatmul_macs(get_shape(inputs[1]), get_shape(inputs[2]))


def _fvcore_einsum(inputs: list, outputs: list) -> int:
    """fvcore handle of ``aten::einsum`` (fvcore's own counts half of a product that sums nothing)."""
    from fvcore.nn.jit_handles import get_shape

    return einsum_macs(inputs[0].toIValue(), [get_shape(v) for v in inputs[1].node().inputs()])


def _flop_counter_sdpa(
    q: Sequence[int], k: Sequence[int], v: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """FLOPs formula of a fused attention op FlopCounterMode has none for (the CPU's)."""
    return 2 * _sdpa_macs(q, k, v)


def _flop_counter_matmul(
    a: Sequence[int], b: Sequence[int], *, out_shape: Sequence[int], **kwargs: Any
) -> int:
    """FLOPs formula of ``aten.mv`` and ``aten.dot`` (FlopCounterMode has none)."""
    return 2 * _matmul_macs(a, out_shape)


def _flop_counter_addmatmul(
    inp: Sequence[int], a: Sequence[int], b: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """FLOPs formula of ``aten.addmv`` and ``aten.addbmm`` (FlopCounterMode has none)."""
    return 2 * _addmatmul_macs(a, b)


def _macs_fvcore(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, int], int]:
    """Per-module MACs (conv/linear/matmul only) and the non-MAC op count, via fvcore."""
    with warnings.catch_warnings():  # fvcore traces with torch.jit, which warns about its deprecation
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        fca = FlopCountAnalysis(model, x)
        fca.set_op_handle("aten::scaled_dot_product_attention", _fvcore_sdpa, "aten::einsum", _fvcore_einsum)
        fca.set_op_handle(**{op: _fvcore_matmul for op in ("aten::matmul", "aten::mv", "aten::dot")})
        added = ("aten::addmm", "aten::addmv", "aten::baddbmm", "aten::addbmm")
        fca.set_op_handle(**{op: _fvcore_addmatmul for op in added})
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        per = fca.by_module_and_operator()
    macs = {name: sum(v for op, v in ops.items() if op not in NON_MAC_OPS) for name, ops in per.items()}
    other = sum(v for op, v in per.get("", {}).items() if op in NON_MAC_OPS)
    return macs, other


def _macs_flop_counter(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Per-module MACs via torch's FlopCounterMode (FLOPs / 2), booked the way fvcore books them: each
    op on the innermost of the model's modules running it, a module's count its own plus its
    descendants' under its first name (FlopCounterMode's own per-module counts book a module shared by
    two parents under the last one entered, so the parents' rows did not add up)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    fused = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    custom = {getattr(aten, op): _flop_counter_sdpa for op in fused if hasattr(aten, op)}
    custom.update({aten.mv: _flop_counter_matmul, aten.dot: _flop_counter_matmul})
    custom.update({aten.addmv: _flop_counter_addmatmul, aten.addbmm: _flop_counter_addmatmul})
    names = dict((id(m), name) for name, m in reversed(list(model.named_modules())))  # (the first name)
    own: dict[str, int] = {}
    stack: list[list[int]] = []  # per running module: FLOPs so far when it started, its children's FLOPs

    def pre(m: nn.Module, args: Any) -> None:
        if id(m) in names:
            stack.append([fc.get_total_flops(), 0])

    def post(m: nn.Module, args: Any, out: Any) -> None:
        if id(m) in names and stack:
            start, children = stack.pop()
            spent = fc.get_total_flops() - start
            own[names[id(m)]] = own.get(names[id(m)], 0) + spent - children
            if stack:
                stack[-1][1] += spent

    fc = FlopCounterMode(display=False, custom_mapping=custom)
    hooks = [
        nn.modules.module.register_module_forward_pre_hook(pre),
        nn.modules.module.register_module_forward_hook(post),
    ]
    try:
        with fc:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    total = fc.get_total_flops()
    own[""] = total - sum(v for k, v in own.items() if k)  # (a TorchScript model's submodules: no hooks)
    macs: dict[str, int] = {}
    for name, flops in own.items():  # (on the module and every ancestor)
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            macs[".".join(parts[:i])] = macs.get(".".join(parts[:i]), 0) + flops
    return {name: int(v) // 2 for name, v in macs.items()}


#: the MAC counters by name: (per-module MACs, the non-MAC op count)
_COUNTERS = {
    "fvcore": _macs_fvcore,
    "flop_counter": lambda model, x: (_macs_flop_counter(model, x), 0),
}


def _booked_below(m: nn.Module, name: str, macs: dict[str, int]) -> int:
    """The MACs a counter books on the nearest descendants of ``m`` (named ``name``) it has an entry
    for: a child without one (a module shared with an earlier parent, booked under its first name)
    counts its own children's."""
    total = 0
    for c, child in m.named_children():
        full = f"{name}.{c}" if name else c
        total += int(macs[full]) if full in macs else _booked_below(child, full, macs)
    return total


def count_model(
    model: nn.Module, input_shape: tuple[int, ...] | list[int], counter: str = "auto"
) -> ModelStats:
    """Parameters and MACs of ``model`` for one ``(C, H, W)`` input (``(C, T, H, W)`` for a video
    model of 3-d convs; batch 1).

    ``counter``: ``"fvcore"``, ``"flop_counter"``, or ``"auto"`` (fvcore when installed).
    """
    if isinstance(input_shape, torch.Tensor) and (input_shape.dim() != 1 or input_shape.is_floating_point()):
        raise EdgeslimError(
            f"input_shape is (C, H, W), not an example tensor (got one of shape {tuple(input_shape.shape)}): "
            "give its shape without the batch, e.g. x.shape[1:]",
            param="input_shape",
        )
    bad = f"input_shape is (C, H, W), a tuple of ints, got {input_shape!r:.80}"
    try:
        values = list(input_shape)
        shape = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise EdgeslimError(bad, param="input_shape") from exc
    if any(bool(v != s) for v, s in zip(values, shape, strict=True)):  # (int() cuts 32.5 to 32)
        raise EdgeslimError(bad, param="input_shape")
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise EdgeslimError(
            f"input shape must be C,H,W (C,T,H,W for a video model) with positive sizes, got "
            f"{','.join(map(str, shape))}"
        )
    scripted = isinstance(model, torch.jit.ScriptModule)
    if not scripted:
        refuse_lazy(model)
        if (several := several_inputs(model)) is not None:
            raise EdgeslimError(f"{several}: {ONE_TENSOR_FIX}", param="model")
    if counter == "auto" and scripted:
        counter = "flop_counter"  # fvcore hooks modules, which TorchScript does not allow
    if counter == "auto":
        try:
            with warnings.catch_warnings():  # fvcore's import warns about torch.jit's deprecation
                warnings.simplefilter("ignore")
                import fvcore.nn  # noqa: F401
            counter = "fvcore"
        except ImportError:
            counter = "flop_counter"
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype if p.is_floating_point() else torch.float32
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros((1, *shape), device=device, dtype=dtype)
    with eval_mode(model), torch.no_grad(), unfused_attention():  # (every MAC an op of its own)
        try:
            shapes, priced = _output_shapes(model, x)
        except EdgeslimError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's forward on this shape (torch._assert: AssertionError)
            first = first_line(exc)
            if "conv1d" in first and len(shape) == 3:  # (C,H,W for a model of 1-D convolutions)
                raise EdgeslimError(
                    f"the model does not run on input {','.join(map(str, shape))} ({first}); input_shape is C,H,W "
                    f"(images): {ONE_D}",
                    param="input_shape",
                ) from exc
            raise EdgeslimError(
                f"the model does not run on input {','.join(map(str, shape))} ({first}); "
                "give the input shape (C,H,W) the model was built for (a model of a dict or of several inputs: "
                "wrap it in a module whose forward takes one tensor)"
            ) from exc
        if counter not in _COUNTERS:
            raise ValueError(f"unknown counter {counter!r}")
        try:
            macs, other = _COUNTERS[counter](model, x)
        except Exception as exc:  # noqa: BLE001 - a counter's tracing or an op formula on this model
            spare = "flop_counter" if counter == "fvcore" else "fvcore"
            log.warning(
                "the %s counter failed on this model (%s); counted with %s", counter, first_line(exc), spare
            )
            try:
                macs, other = _COUNTERS[spare](model, x)
            except Exception as exc2:  # noqa: BLE001
                raise EdgeslimError(
                    f"neither MAC counter counts this model ({counter}: {first_line(exc)}; {spare}: "
                    f"{first_line(exc2)}); report it with the model's definition"
                ) from exc2
            counter = spare
    rows = []
    held: set[int] = set()  # the rows' parameters so far: a tensor modules share (tied) counts once
    for name, m in model.named_modules():
        mine = list(m.parameters(recurse=False))
        params = sum(q.numel() for q in mine)
        shared = sum(q.numel() for q in mine if id(q) in held)
        held.update(id(q) for q in mine)
        # a module's own MACs (an SE's functional layer on its own weights, an attention block's
        # matmuls, a ViT's class token on the model itself): those of its scope less its children's (0
        # where a child runs outside its parent's forward and the counter books it elsewhere)
        n_macs = max(0, int(macs.get(name, 0)) - _booked_below(m, name, macs))
        if name in priced:
            if priced[name] != (n_macs, params):
                log.warning("%s: the %s counter gives %d MACs, %d params; edgeslim's %d, %d",
                            name or "<model>", counter, n_macs, params, *priced[name])  # fmt: skip
            n_macs, params = priced[name]
        params -= shared
        if params == 0 and n_macs == 0:
            continue
        cin, cout = layer_channels(m)
        kind = (getattr(m, "original_name", None) if scripted else None) or type(m).__name__
        rows.append(LayerRow(name or "<model>", kind, params, n_macs, cin, cout, shapes.get(name)))
    return ModelStats(
        input_shape=shape,
        params=sum(q.numel() for q in model.parameters()),
        trainable_params=sum(q.numel() for q in model.parameters() if q.requires_grad),
        macs=int(macs.get("", 0)),
        other_ops=int(other),
        counter=counter,
        layers=rows,
    )


# --------------------------------------------------------------------------- BN scales


@dataclass
class BNLayerStats:
    name: str
    channels: int
    abs_min: float
    abs_median: float
    abs_max: float
    zeros: int


@dataclass
class BNStats:
    """|gamma| statistics of every affine BatchNorm layer and how many scales are exactly zero."""

    layers: list[BNLayerStats]
    channels: int
    zeros: int
    abs_min: float | None
    abs_median: float | None
    abs_max: float | None

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.channels if self.channels else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "zero_fraction": self.zero_fraction}


def bn_stats(model: nn.Module) -> BNStats:
    """Per-BN-layer channel count, |gamma| min/median/max and number of exact zeros, plus totals."""
    rows, all_g = [], []
    for name, m in bn_layers(model):
        g = m.weight.detach().abs().float().cpu().flatten()
        all_g.append(g)
        rows.append(BNLayerStats(name, g.numel(), float(g.min()), float(g.median()), float(g.max()),
                                 int((g == 0).sum())))  # fmt: skip
    if not all_g:
        return BNStats([], 0, 0, None, None, None)
    g = torch.cat(all_g)
    return BNStats(rows, g.numel(), int((g == 0).sum()), float(g.min()), float(g.median()), float(g.max()))
