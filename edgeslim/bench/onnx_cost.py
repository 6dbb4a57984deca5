"""Torch-free cost counter for ONNX graphs: MACs, parameters and bytes per layer.

Uses ``onnx.shape_inference`` for activation shapes. Conv, ConvTranspose, Gemm and MatMul carry
MACs, priced by :func:`edgeslim.channels.cost.layer_macs`; element-wise ops that runtimes fuse into the preceding Conv/Gemm (BatchNormalization, Relu,
Clip, ...) are folded into it, the way TensorRT and ONNX Runtime run them. A dynamic batch
dimension counts as 1, so every :class:`LayerCost` is per sample.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from edgeslim.channels.cost import LayerCost, OpNode, fuse_kernels, layer_macs
from edgeslim.errors import EdgeslimError, require
from edgeslim.utils.onnx_graph import attr, unreadable_onnx, value_dims

#: the quantize/dequantize pair of a Q/DQ (INT8) graph: an INT8 runtime folds them into the layers
#: around them, so they are views here, and the graph is costed as its FP32 form (``quantized``)
_QDQ = {"QuantizeLinear", "DequantizeLinear"}


@dataclass
class ModelCost:
    """Per-layer costs and totals of one ONNX model (per sample)."""

    layers: list[LayerCost] = field(default_factory=list)
    params: int = 0
    weight_bytes: int = 0
    input_shapes: dict[str, list] = field(default_factory=dict)
    #: a Q/DQ graph (INT8): its layers are costed as the FP32 graph's (predict them at int8)
    quantized: bool = False

    @property
    def macs(self) -> float:
        return float(sum(layer.macs for layer in self.layers))

    @property
    def bytes(self) -> float:
        return float(sum(layer.bytes for layer in self.layers))

    def to_dict(self) -> dict:
        return {
            "macs": self.macs,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "bytes": self.bytes,
            "input_shapes": self.input_shapes,
            "quantized": self.quantized,
            "layers": [vars(layer) for layer in self.layers],
        }


def _numel(dims: list | None) -> int:
    if dims is None:
        return 0
    # symbolic dims (the batch) count as 1: costs are per sample
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in dims)


def _fixed_batch(inputs: dict[str, list | None]) -> int | None:
    """The batch a file was exported at (the first input's fixed dim 0; None: a dynamic batch)."""
    first = next(iter(inputs.values()), None)
    return first[0] if first and isinstance(first[0], int) and first[0] > 1 else None


def _padded(c: object, multiple: int) -> object:
    return -(-c // multiple) * multiple if multiple > 1 and isinstance(c, int) and c > 0 else c


def onnx_cost(model_or_path, fuse: bool = True, multiple: int = 1) -> ModelCost:
    """Count MACs, parameters and bytes per layer of an ONNX model (a path or ModelProto).

    ``multiple`` > 1: each layer's MACs, bytes and weight bytes at channel counts padded to that
    multiple (dim 1 of every activation of rank >= 2, both sides of a Conv/Gemm weight), as a device
    whose kernels compute whole blocks of channels runs them (a profile's alignment; the budget
    prices the same way); the model's ``params`` and ``weight_bytes`` totals stay the file's own."""
    onnx = require("onnx", "to count MACs of an ONNX model")
    from onnx import numpy_helper  # noqa: F401  (import check)

    if isinstance(model_or_path, (str, os.PathLike)):
        if not os.path.isfile(model_or_path):
            raise EdgeslimError(f"model file {model_or_path} does not exist")
        try:
            model = onnx.load(str(model_or_path))
        except Exception as exc:
            raise unreadable_onnx(model_or_path, exc) from exc
    else:
        model = model_or_path
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # shape inference is best effort
        raise EdgeslimError(
            f"ONNX shape inference failed ({exc}); run `onnxslim` on the model first"
        ) from exc
    g = model.graph
    itemsize = {}
    shapes: dict[str, list | None] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        shapes[vi.name] = value_dims(vi)
        elem = vi.type.tensor_type.elem_type
        itemsize[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize if elem else 4
    inits = {t.name: t for t in g.initializer}
    alias: dict[str, str] = {}  # a Q/DQ node's output -> the float value it stands for

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in g.node:
        if node.op_type in _QDQ and node.input and node.output:
            alias[node.output[0]] = node.input[0]
            itemsize[node.input[0]] = 4 if node.input[0] not in inits else itemsize.get(node.input[0], 4)
    # INT8 when activations go through a QuantizeLinear (not only weights through a DequantizeLinear)
    quantized = any(n.op_type == "QuantizeLinear" and n.input and n.input[0] not in inits for n in g.node)
    qdq = bool(alias)
    # the layers' parameters: initializers a layer reads (a Q/DQ node's scales and zero points are not)
    used = {resolve(i) for n in g.node if n.op_type not in _QDQ for i in n.input} & set(inits)
    init_bytes = {  # (a Q/DQ graph's int8 weights counted as the FP32 graph's)
        n: math.prod(inits[n].dims)
        * (4 if qdq else onnx.helper.tensor_dtype_to_np_dtype(inits[n].data_type).itemsize)
        for n in used
    }
    cost = ModelCost(
        params=int(sum(math.prod(inits[n].dims) for n in used)),
        weight_bytes=int(sum(init_bytes.values())),
        input_shapes={i.name: value_dims(i) for i in g.input if i.name not in inits},
        quantized=quantized,
    )

    batch = _fixed_batch(cost.input_shapes)

    def per_sample(dims: list | None) -> list | None:
        """An activation's dims with a fixed batch counted as 1 (costs are per sample, as a dynamic
        batch's are)."""
        return [1, *dims[1:]] if batch and dims and dims[0] == batch else dims

    for name in shapes:
        if name not in inits:  # (an initializer listed as a graph input keeps its own dims)
            shapes[name] = per_sample(shapes[name])

    def act_bytes(name: str) -> int:
        dims = shapes.get(name)
        if multiple > 1 and dims and len(dims) >= 2:  # (N, C, ...): C padded
            dims = [dims[0], _padded(dims[1], multiple), *dims[2:]]
        return _numel(dims) * itemsize.get(name, 4)

    onnx_nodes = [n for n in g.node if n.op_type not in _QDQ]
    nodes = [
        OpNode(
            n.op_type,
            tuple(r for i in n.input if (r := resolve(i)) and r not in inits),
            tuple(o for o in n.output if o),
            n.name,
        )
        for n in onnx_nodes
    ]
    for kernel in fuse_kernels(nodes, fuse):
        node = onnx_nodes[kernel.nodes[0]]
        op = node.op_type
        inputs = [resolve(i) for i in node.input]
        out = node.output[0] if node.output else ""
        macs, pad_w = 0, 1.0  # pad_w: the layer's own weights at padded counts over the file's
        if op in ("Conv", "ConvTranspose"):
            wdims = list(inits[inputs[1]].dims) if inputs[1] in inits else (shapes.get(inputs[1]) or [])
            if len(wdims) >= 3:
                group = int(attr(node, "group", 1)) or 1
                k = math.prod(wdims[2:])
                # Conv weight (Cout, Cin/groups, k...) priced at the output's positions; ConvTranspose
                # weight (Cin, Cout/groups, k...) is a conv run backwards, priced at the input's
                dims = shapes.get(out if op == "Conv" else nodes[kernel.nodes[0]].inputs[0])
                a, b = wdims[0], wdims[1] * group  # (Conv: out, in; ConvTranspose: in, out)
                pa, pb, pg = _padded(a, multiple), _padded(b, multiple), group
                if (
                    group > 1 and wdims[1] == 1 and multiple > 1
                ):  # depthwise: the groups pad with the channels
                    pg = pb
                pad_w = (pa * pb / pg) / (a * b / group) if a and b else 1.0
                if dims:  # the batch (dynamic: 1) and spatial dims
                    pos = _numel(dims[:1] + dims[2:])
                    macs = layer_macs("conv", pb, pa, k, pg, pos)
        elif op in ("Gemm", "MatMul"):
            a = shapes.get(inputs[0]) or []
            trans_a = bool(attr(node, "transA", 0))
            kdim = (a[-2] if trans_a else a[-1]) if a else 0
            out_dims = shapes.get(out) or []
            if isinstance(kdim, int) and out_dims and isinstance(out_dims[-1], int):
                pk, po = _padded(kdim, multiple), _padded(out_dims[-1], multiple)
                pad_w = pk * po / (kdim * out_dims[-1]) if kdim and out_dims[-1] else 1.0
                macs = layer_macs("linear", pk, po, spatial=_numel(out_dims[:-1]))
        own = sum(init_bytes.get(resolve(i), 0) for i in node.input)
        w = own * pad_w + sum(
            init_bytes.get(resolve(i), 0) for j in kernel.nodes[1:] for i in onnx_nodes[j].input
        )
        total = w + sum(act_bytes(v) for v in kernel.reads) + sum(act_bytes(v) for v in kernel.writes)
        cost.layers.append(LayerCost(kernel.name, float(int(round(macs))), float(total), float(w), op))
    return cost
