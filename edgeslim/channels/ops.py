"""Op tables for the channel dependency graph.

Surgery captures a model by the torch functions it calls (``F.conv2d``, ``F.batch_norm``,
``torch.Tensor.view``, ``torch.Tensor.__getitem__`` ...), so ops are identified by function
*object*, never by name; layers are the modules whose own weights a conv/linear/batch-norm
call uses (any subclass of the module types below, e.g. timm's ``BatchNormAct2d``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeslim.channels.norm import NORM_TYPES

#: Modules applied channel by channel (same channel in, same channel out, any spatial change).
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.GELU,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.PReLU,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)  # fmt: skip
#: Spatial pooling and resampling: keeps channels (a constant stays that constant), changes the
#: positions (L, H x W, or T x H x W).
POOL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)  # fmt: skip
BN_MODULES: tuple[type[nn.Module], ...] = NORM_TYPES  # any BatchNorm (edgeslim.channels.norm)
#: the functional form of a convolution by its spatial dims (``len(kernel_size)``: 1, 2 or 3); the
#: one table surgery runs a conv module's weight through (:func:`conv_function`)
CONV_BY_DIMS: dict[int, Any] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE_BY_DIMS: dict[int, Any] = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
CONV_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Transposed convolutions (decoders, UNets, YOLO-seg's mask prototypes): weight (in, out / groups, k...).
CONV_TRANSPOSE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
LINEAR_MODULES: tuple[type[nn.Module], ...] = (nn.Linear,)
#: the layers surgery resizes through their own entry (every per-channel tensor of theirs sliced with it)
RESIZED_MODULES: tuple[type[nn.Module], ...] = (
    *CONV_MODULES,
    *CONV_TRANSPOSE_MODULES,
    *LINEAR_MODULES,
    *BN_MODULES,
)
FLATTEN_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten,)


def conv_function(m: nn.Module) -> Any:
    """``F.conv1d/2d/3d`` (``F.conv_transpose1d/2d/3d`` for a transposed conv) of a conv module of
    :data:`CONV_MODULES` or :data:`CONV_TRANSPOSE_MODULES`, by its spatial dims."""
    table = CONV_TRANSPOSE_BY_DIMS if isinstance(m, CONV_TRANSPOSE_MODULES) else CONV_BY_DIMS
    return table[len(m.kernel_size)]


ELEMENTWISE_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid,
    torch.sigmoid, F.tanh, torch.tanh, F.gelu, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout2d,
    F.hardtanh, F.softplus, torch.Tensor.relu, torch.Tensor.relu_, torch.Tensor.sigmoid,
    torch.Tensor.sigmoid_, torch.Tensor.tanh, torch.Tensor.clone, torch.Tensor.contiguous,
    torch.Tensor.clamp, torch.clamp, torch.Tensor.clamp_, torch.Tensor.float, torch.Tensor.to,
    F.selu, F.celu, F.logsigmoid, F.alpha_dropout, F.dropout1d, F.dropout3d, F.feature_alpha_dropout,
    F.hardtanh_, F.elu_, F.leaky_relu_, torch.Tensor.clamp_min, torch.Tensor.clamp_max,
    torch.Tensor.clamp_min_, torch.Tensor.neg, torch.neg, torch.Tensor.abs, torch.abs, torch.Tensor.exp,
    torch.exp, torch.Tensor.detach, torch.Tensor.half, torch.Tensor.double, torch.Tensor.type_as,
    torch.Tensor.tanh_, torch.Tensor.sqrt, torch.Tensor.square, torch.Tensor.pow, torch.pow,
    torch.Tensor.erf,
}  # fmt: skip
#: Activations: same shape and dtype out (on "meta" tensors the capture skips running them).
ACTIVATION_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.hardswish, F.hardsigmoid, torch.sigmoid,
    torch.Tensor.sigmoid, torch.Tensor.sigmoid_, torch.Tensor.relu, torch.Tensor.relu_, F.gelu, F.mish,
    F.leaky_relu, F.elu, F.hardtanh, torch.tanh, torch.Tensor.tanh,
}  # fmt: skip
#: Functions whose weights make their calling module a layer surgery resizes.
CONV_FUNCTIONS: set[Any] = set(CONV_BY_DIMS.values())
CONV_TRANSPOSE_FUNCTIONS: set[Any] = set(CONV_TRANSPOSE_BY_DIMS.values())
LINEAR_FUNCTIONS: set[Any] = {F.linear}
BN_FUNCTIONS: set[Any] = {F.batch_norm, torch.batch_norm}
PAD_FUNCTIONS: set[Any] = {F.pad, torch.constant_pad_nd}
GETITEM_FUNCTIONS: set[Any] = {torch.Tensor.__getitem__}
#: In-place variants: their result is their first argument.
INPLACE_FUNCTIONS: set[Any] = {
    F.relu_, torch.relu_, torch.Tensor.relu_, torch.Tensor.sigmoid_, torch.Tensor.tanh_,
    torch.Tensor.clamp_, torch.Tensor.clamp_min_, F.hardtanh_, F.elu_, F.leaky_relu_,
    torch.Tensor.add_, torch.Tensor.sub_, torch.Tensor.mul_, torch.Tensor.div_, torch.Tensor.__iadd__,
    torch.Tensor.__isub__, torch.Tensor.__imul__, torch.Tensor.__itruediv__,
}  # fmt: skip
#: Shape-preserving calls the capture does not run on "meta" tensors (their meta kernels are slow
#: Python decompositions); the in-place flag is their last positional argument or ``inplace=``.
SAME_SHAPE_ON_META: set[Any] = ACTIVATION_FUNCTIONS | BN_FUNCTIONS | {F.layer_norm, F.group_norm}
#: Softmax: same shape when no ``dtype`` is given (the capture computes it on "meta" tensors).
SOFTMAX_FUNCTIONS: set[Any] = {F.softmax, torch.softmax, torch.Tensor.softmax}
#: Adaptive pooling and resampling: output sizes computed on "meta" tensors (slow decompositions there).
ADAPTIVE_POOL_FUNCTIONS: set[Any] = {
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.adaptive_avg_pool1d, torch._C._nn.adaptive_avg_pool2d,
    torch._C._nn.adaptive_avg_pool3d,
}  # fmt: skip
RESIZE_FUNCTIONS: set[Any] = {F.interpolate, F.upsample}
#: Attention: ``(..., L, E) x (..., S, E) x (..., S, Ev) -> (..., L, Ev)`` on "meta" tensors.
ATTENTION_FUNCTIONS: set[Any] = {F.scaled_dot_product_attention}
POOL_FUNCTIONS: set[Any] = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.max_pool2d, torch.max_pool3d, torch.avg_pool1d,
    torch.adaptive_avg_pool1d, torch._C._nn.avg_pool2d, torch._C._nn.avg_pool3d,
    torch._C._nn.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool3d, F.interpolate, F.upsample,
}  # fmt: skip
#: Element-wise binary ops: (function, kind) where kind decides how "exactly zero" propagates.
BINARY_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add", torch.Tensor.add: "add",
    torch.Tensor.add_: "add", operator.sub: "add", operator.isub: "add", torch.sub: "add",
    torch.Tensor.sub: "add", operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    torch.Tensor.mul: "mul", torch.Tensor.mul_: "mul", operator.truediv: "div", torch.div: "div",
    torch.Tensor.div: "div", torch.Tensor.sub_: "add", torch.Tensor.div_: "div",
    torch.Tensor.__add__: "add", torch.Tensor.__radd__: "add", torch.Tensor.__iadd__: "add",
    torch.Tensor.__sub__: "add", torch.Tensor.__rsub__: "add", torch.Tensor.__isub__: "add",
    torch.Tensor.__mul__: "mul", torch.Tensor.__rmul__: "mul", torch.Tensor.__imul__: "mul",
    torch.Tensor.__truediv__: "div", torch.Tensor.__itruediv__: "div", torch.Tensor.__div__: "div",
    torch.Tensor.__rdiv__: "rdiv", torch.Tensor.__rtruediv__: "rdiv", torch.rsub: "add",
}  # fmt: skip
CAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat, torch.concatenate}
CHUNK_FUNCTIONS: set[Any] = {torch.chunk, torch.Tensor.chunk}
SPLIT_FUNCTIONS: set[Any] = {torch.split, torch.Tensor.split, torch.tensor_split}
FLATTEN_FUNCTIONS: set[Any] = {torch.flatten, torch.Tensor.flatten}
RESHAPE_FUNCTIONS: set[Any] = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
PERMUTE_FUNCTIONS: set[Any] = {torch.Tensor.permute, torch.permute, torch.transpose, torch.Tensor.transpose}
SQUEEZE_FUNCTIONS: set[Any] = {torch.squeeze, torch.Tensor.squeeze, torch.unsqueeze, torch.Tensor.unsqueeze}
#: Reshapes that keep every element (a parameter reshaped by them is still that parameter).
VIEW_FUNCTIONS: set[Any] = RESHAPE_FUNCTIONS | SQUEEZE_FUNCTIONS | GETITEM_FUNCTIONS | FLATTEN_FUNCTIONS
#: Functions whose results carry no channels (shapes, sizes, asserts).
SHAPE_QUERY_FUNCTIONS: set[Any] = {
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.__len__, torch._assert,
}  # fmt: skip
#: ``x.type_as(y)``, ``x.to(y)``: a tensor argument after the first gives only a dtype and device.
DTYPE_SOURCE_FUNCTIONS: set[Any] = {torch.Tensor.type_as, torch.Tensor.to}
#: ``x.new_full(size, v)`` and kin: a new tensor that takes only ``x``'s dtype and device (no values,
#: no channels), as a factory function would (not ``new_tensor(data)``: it copies ``data``).
NEW_TENSOR_FUNCTIONS: set[Any] = {
    torch.Tensor.new_full, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty,
}  # fmt: skip
#: Shape reads whose int result follows surgery (a size computed from them is not a literal).
SIZE_METHODS: set[Any] = {torch.Tensor.size, torch.Tensor.numel, torch.Tensor.__len__}
#: Calls that need tensor values (Python control flow on data): a "meta" run cannot do them.
DATA_DEPENDENT_METHODS: set[Any] = {
    torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__,
    torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
}  # fmt: skip
#: In-place writes into part of a tensor.
MUTATING_METHODS: set[Any] = {torch.Tensor.__setitem__}

#: Reductions over dims (spatial mean in ShuffleNetV2); channel-preserving when dim 1 is kept.
REDUCE_FUNCTIONS: set[Any] = {
    torch.mean,
    torch.Tensor.mean,
    torch.sum,
    torch.Tensor.sum,
    torch.amax,
    torch.Tensor.amax,
}


#: The ONNX op type each call becomes when exported, for the cost model's fusion rule
#: (:func:`edgeslim.channels.cost.fuse_kernels`); calls not listed are kernels of their own.
COST_OPS: dict[Any, str] = {
    **{f: "Conv" for f in CONV_FUNCTIONS},
    **{f: "ConvTranspose" for f in CONV_TRANSPOSE_FUNCTIONS},
    **{f: "Gemm" for f in LINEAR_FUNCTIONS},
    **{f: "BatchNormalization" for f in BN_FUNCTIONS},
    **{f: {"add": "Add", "mul": "Mul"}.get(kind, "Div") for f, kind in BINARY_FUNCTIONS.items()},
    **{f: "Sub" for f in (operator.sub, operator.isub, torch.sub, torch.Tensor.sub, torch.Tensor.sub_,
                          torch.Tensor.__sub__, torch.Tensor.__rsub__, torch.Tensor.__isub__, torch.rsub)},
    **{f: "Relu" for f in (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)},
    **{f: "Clip" for f in (F.relu6, F.hardtanh, F.hardtanh_, torch.clamp, torch.Tensor.clamp,
                           torch.Tensor.clamp_, torch.Tensor.clamp_min, torch.Tensor.clamp_max,
                           torch.Tensor.clamp_min_)},
    **{f: "Sigmoid" for f in (F.sigmoid, torch.sigmoid, torch.Tensor.sigmoid, torch.Tensor.sigmoid_)},
    F.leaky_relu: "LeakyRelu", F.leaky_relu_: "LeakyRelu", F.hardsigmoid: "HardSigmoid",
    F.hardswish: "HardSwish", F.silu: "Swish",
    **{f: "Reshape" for f in RESHAPE_FUNCTIONS | SQUEEZE_FUNCTIONS},
    **{f: "Flatten" for f in FLATTEN_FUNCTIONS},
    **{f: "Dropout" for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                              F.feature_alpha_dropout)},
    **{f: "Identity" for f in (torch.Tensor.contiguous, torch.Tensor.clone, torch.Tensor.detach,
                               torch.Tensor.float, torch.Tensor.to, torch.Tensor.type_as)},
    **{f: "Slice" for f in GETITEM_FUNCTIONS},
    **{f: "Concat" for f in CAT_FUNCTIONS},
    **{f: "Split" for f in SPLIT_FUNCTIONS},
}  # fmt: skip
#: ops the exporter leaves no node for (a view or copy in eval mode): their output is their input's value
NO_KERNEL_OPS = frozenset({"Identity", "Dropout"})
#: calls the exporter writes as one Slice per piece (each reading the whole input), priced so; a split
#: with sizes is one Split node
SLICED_ON_EXPORT: set[Any] = CHUNK_FUNCTIONS
