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

from edgeslim.channels.cost import LayerCost, layer_macs
from edgeslim.errors import EdgeslimError, require
from edgeslim.utils.onnx_graph import WEIGHT_OPS, attr, value_dims

#: element-wise ops fused into a preceding MAC op by ORT / TensorRT (and ``x * sigmoid(x)``, SiLU
#: written as two ops, see :func:`onnx_cost`)
_FUSABLE = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Add"}
#: ops that only change the view of a tensor
_FREE = {"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Shape", "Constant", "Dropout"}
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


def onnx_cost(model_or_path, fuse: bool = True) -> ModelCost:
    """Count MACs, parameters and bytes per layer of an ONNX model (a path or ModelProto)."""
    onnx = require("onnx", "ort", "to count MACs of an ONNX model")
    from onnx import numpy_helper  # noqa: F401  (import check)

    if isinstance(model_or_path, (str, os.PathLike)):
        if not os.path.isfile(model_or_path):
            raise EdgeslimError(f"model file {model_or_path} does not exist")
        try:
            model = onnx.load(str(model_or_path))
        except Exception as exc:
            raise EdgeslimError(f"{model_or_path} is not a readable ONNX file: {exc}") from exc
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
    readers: dict[str, list] = {}  # value -> the nodes that read it (once per input slot)
    for node in g.node:
        if node.op_type in _QDQ:
            continue
        for i in node.input:
            readers.setdefault(resolve(i), []).append(node)

    def consumers(name: str) -> int:
        return len(readers.get(name, ()))

    def act_bytes(name: str) -> int:
        return _numel(shapes.get(name)) * itemsize.get(name, 4)

    def swish_mul(sig: object, x: str) -> object | None:
        """The Mul of ``x * sigmoid(x)`` (SiLU / swish written as two ops), when ``sig`` is that
        Sigmoid and the Mul and it are ``x``'s only readers."""
        s_out = sig.output[0] if sig.output else ""
        muls = [
            n
            for n in readers.get(s_out, [])
            if n.op_type == "Mul" and {resolve(i) for i in n.input} == {x, s_out}
        ]
        if len(muls) == 1 and consumers(s_out) == 1 and consumers(x) == 2:
            return muls[0]
        return None

    absorbed: set[int] = set()  # Mul nodes of a swish folded into the layer before
    layers: list[dict] = []  # in graph order
    open_at: dict[str, dict] = {}  # a MAC layer by the value it ends in: what reads only it may join it

    def host_of(ins: list[str]) -> dict | None:
        """The open MAC layer an element-wise op joins: the one ending in its first input, or (an
        Add: the residual's order is the exporter's) the latest of those ending in one of its
        inputs, read by this op alone (a runtime fuses the add into the conv that runs last, when
        the other operand is ready). The graph decides, not the node order: a downsample conv between
        a conv and its Relu keeps them one."""
        hosts = [open_at[i] for i in ins if i in open_at and consumers(i) == 1]
        return max(hosts, key=lambda layer: layer["index"]) if hosts else None

    for node in g.node:
        op = node.op_type
        if op in _QDQ:
            continue
        inputs = [resolve(i) for i in node.input]
        w = sum(init_bytes.get(i, 0) for i in inputs)
        ins = [i for i in inputs if i and i not in inits]
        out = node.output[0] if node.output else ""
        if op in _FREE or id(node) in absorbed:
            continue
        if fuse and op == "Sigmoid" and ins and ins[0] in open_at:
            host = open_at[ins[0]]
            mul = swish_mul(node, host["out"])
            if mul is not None:  # x * sigmoid(x): one activation, fused like HardSwish
                absorbed.add(id(mul))
                del open_at[host["out"]]
                host.update(out=mul.output[0], out_bytes=act_bytes(mul.output[0]))
                host["name"] += "+Swish"
                open_at[host["out"]] = host
                continue
        host = host_of(ins if op == "Add" else ins[:1]) if fuse and op in _FUSABLE else None
        if host is not None:
            other = [i for i in ins if i != host["out"]]
            extra_in = sum(act_bytes(i) for i in other)  # e.g. a residual Add reads a second tensor
            del open_at[host["out"]]
            host.update(out=out, out_bytes=act_bytes(out), w=host["w"] + w, extra=host["extra"] + extra_in)
            host["name"] += f"+{op}"
            open_at[out] = host
            continue
        macs = 0
        if op in ("Conv", "ConvTranspose"):
            wdims = list(inits[inputs[1]].dims) if inputs[1] in inits else (shapes.get(inputs[1]) or [])
            if len(wdims) >= 3:
                group = int(attr(node, "group", 1)) or 1
                k = math.prod(wdims[2:])
                # Conv weight (Cout, Cin/groups, k...) priced at the output's positions; ConvTranspose
                # weight (Cin, Cout/groups, k...) is a conv run backwards, priced at the input's
                dims = shapes.get(out if op == "Conv" else ins[0])
                if dims:  # the batch (dynamic: 1) and spatial dims
                    pos = _numel(dims[:1] + dims[2:])
                    macs = layer_macs("conv", wdims[1] * group, wdims[0], k, group, pos)
        elif op in ("Gemm", "MatMul"):
            a = shapes.get(inputs[0]) or []
            trans_a = bool(attr(node, "transA", 0))
            kdim = (a[-2] if trans_a else a[-1]) if a else 0
            out_dims = shapes.get(out) or []
            if isinstance(kdim, int) and out_dims and isinstance(out_dims[-1], int):
                macs = layer_macs("linear", kdim, out_dims[-1], spatial=_numel(out_dims[:-1]))
        layer = {
            "index": len(layers),
            "name": node.name or f"{op}_{len(layers)}",
            "op": op,
            "macs": int(round(macs)),
            "w": w,
            "in_bytes": sum(act_bytes(i) for i in ins),
            "extra": 0,
            "out": out,
            "out_bytes": act_bytes(out),
        }
        layers.append(layer)
        if op in WEIGHT_OPS:
            open_at[out] = layer
    for layer in layers:
        _flush(cost, layer)
    return cost


def _flush(cost: ModelCost, layer: dict | None) -> None:
    if layer is None or layer.get("_done"):
        return
    layer["_done"] = True
    total = layer["w"] + layer["in_bytes"] + layer["extra"] + layer["out_bytes"]
    cost.layers.append(
        LayerCost(layer["name"], float(layer["macs"]), float(total), float(layer["w"]), layer["op"])
    )
