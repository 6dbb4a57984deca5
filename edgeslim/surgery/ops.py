"""Op tables for the channel dependency graph.

Ops are identified by module *type* or by function *object* (``operator.add``,
``torch.cat``, ``torch.Tensor.view`` ...); fx ``call_method`` targets are resolved to the
``torch.Tensor`` attribute object first, so no op is ever recognized by its name string.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Modules applied channel by channel (same channel in, same channel out, any spatial change).
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.PReLU,
    nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout, nn.Identity,
)  # fmt: skip
#: Spatial pooling and resampling: keeps channels (a constant stays that constant), changes H x W.
POOL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Upsample,
    nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip
BN_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
CONV_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d)
LINEAR_MODULES: tuple[type[nn.Module], ...] = (nn.Linear,)
FLATTEN_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten,)

ELEMENTWISE_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid,
    torch.sigmoid, F.tanh, torch.tanh, F.gelu, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout2d,
    F.hardtanh, F.softplus, torch.Tensor.relu, torch.Tensor.relu_, torch.Tensor.sigmoid,
    torch.Tensor.sigmoid_, torch.Tensor.tanh, torch.Tensor.clone, torch.Tensor.contiguous,
    torch.Tensor.clamp, torch.clamp, torch.Tensor.clamp_, torch.Tensor.float, torch.Tensor.to,
}  # fmt: skip
POOL_FUNCTIONS: set[Any] = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, torch.max_pool2d,
    torch.avg_pool1d, torch.adaptive_avg_pool1d, torch._C._nn.avg_pool2d,
    torch._C._nn.adaptive_avg_pool2d, F.interpolate, F.upsample,
}  # fmt: skip
#: Element-wise binary ops: (function, kind) where kind decides how "exactly zero" propagates.
BINARY_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", torch.Tensor.add: "add",
    torch.Tensor.add_: "add", operator.sub: "add", operator.isub: "add", torch.sub: "add",
    torch.Tensor.sub: "add", operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    torch.Tensor.mul: "mul", torch.Tensor.mul_: "mul", operator.truediv: "div", torch.div: "div",
    torch.Tensor.div: "div",
}  # fmt: skip
CAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat, torch.concatenate}
CHUNK_FUNCTIONS: set[Any] = {torch.chunk, torch.Tensor.chunk}
SPLIT_FUNCTIONS: set[Any] = {torch.split, torch.Tensor.split, torch.tensor_split}
FLATTEN_FUNCTIONS: set[Any] = {torch.flatten, torch.Tensor.flatten}
RESHAPE_FUNCTIONS: set[Any] = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
PERMUTE_FUNCTIONS: set[Any] = {torch.Tensor.permute, torch.permute, torch.transpose, torch.Tensor.transpose}
SQUEEZE_FUNCTIONS: set[Any] = {torch.squeeze, torch.Tensor.squeeze, torch.unsqueeze, torch.Tensor.unsqueeze}
#: Functions whose results carry no channels (shapes, sizes, asserts).
SHAPE_QUERY_FUNCTIONS: set[Any] = {getattr, torch.Tensor.size, torch.Tensor.dim, len, torch._assert}

#: Reductions over dims (spatial mean in ShuffleNetV2); channel-preserving when dim 1 is kept.
REDUCE_FUNCTIONS: set[Any] = {
    torch.mean,
    torch.Tensor.mean,
    torch.sum,
    torch.Tensor.sum,
    torch.amax,
    torch.Tensor.amax,
}

try:  # torchvision's stochastic depth is fx-wrapped: per-sample scaling, identity in eval mode
    import importlib

    _sd = importlib.import_module("torchvision.ops.stochastic_depth").stochastic_depth
    STOCHASTIC_DEPTH: set[Any] = {_sd}
except ImportError:  # pragma: no cover
    STOCHASTIC_DEPTH = set()


def resolve_method(name: str) -> Any:
    """The ``torch.Tensor`` attribute object behind an fx ``call_method`` target."""
    return getattr(torch.Tensor, name, None)
