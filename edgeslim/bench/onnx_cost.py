"""Torch-free cost counter for ONNX graphs: MACs, parameters and bytes per layer.

Activation shapes come from ``onnx.shape_inference`` (with data propagation) at batch 1 (a dynamic
batch dimension set to 1), and where it leaves sizes unknown (a Reshape or Split of sizes computed
in the graph), from one ONNX Runtime run of the graph at those input sizes. Conv, ConvTranspose,
Gemm and MatMul carry MACs, priced by :func:`edgeslim.channels.cost.layer_macs`, and Einsum, priced by
:func:`~edgeslim.channels.cost.einsum_macs` (as the PyTorch counter prices ``torch.einsum``); element-wise ops
that runtimes fuse into the preceding Conv/Gemm (BatchNormalization, Relu, Clip, ...) are folded
into it, the way TensorRT and ONNX Runtime run them. Every :class:`LayerCost` is per sample: a
file with a fixed batch is counted at that batch and divided by it. A layer whose sizes neither
tells is not priced, nor is a control-flow node (If, Loop, Scan) whose subgraphs run a MAC op (a
branch or a trip count is decided at run time): the model's MACs and bytes are then unknown (None),
with one warning.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from edgeslim.channels.cost import LayerCost, OpNode, einsum_macs, fuse_kernels, layer_macs
from edgeslim.errors import EdgeslimError, require
from edgeslim.utils.onnx_graph import attr, unreadable_onnx, value_dims

log = logging.getLogger(__name__)

#: the quantize/dequantize pair of a Q/DQ (INT8) graph: an INT8 runtime folds them into the layers
#: around them, so they are views here, and the graph is costed as its FP32 form (``quantized``)
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
#: ops that keep an input image's channels as they are (its preprocessing inside a graph; a Q/DQ pair is
#: seen through as a view by ``resolve``)
_CHANNELWISE = {"Cast", "Sub", "Div", "Mul", "Add", "Identity"}
#: the operators that carry MACs here
_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"}


@dataclass
class ModelCost:
    """Per-layer costs and totals of one ONNX model (per sample)."""

    layers: list[LayerCost] = field(default_factory=list)
    params: int = 0
    weight_bytes: int = 0
    input_shapes: dict[str, list] = field(default_factory=dict)
    #: a Q/DQ graph (INT8): its layers are costed as the FP32 graph's (predict them at int8)
    quantized: bool = False
    #: the layers whose sizes stayed unknown, or that run MAC ops in subgraphs: the model's MACs and
    #: bytes are unknown then
    unknown: list[str] = field(default_factory=list)
    #: why they are unknown and what to do, one phrase ("" when none is)
    why: str = ""

    @property
    def macs(self) -> float | None:
        """Total MACs per sample; None when a layer's sizes are unknown."""
        return None if self.unknown else float(sum(layer.macs for layer in self.layers))

    @property
    def bytes(self) -> float | None:
        """Total bytes moved per sample; None when a layer's sizes are unknown."""
        return None if self.unknown else float(sum(layer.bytes for layer in self.layers))

    def to_dict(self) -> dict:
        return {
            "macs": self.macs,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "bytes": self.bytes,
            "input_shapes": self.input_shapes,
            "quantized": self.quantized,
            "unknown": self.unknown,
            # (no layers when some are unpriced: predictions from the rest would be too fast)
            "layers": None if self.unknown else [vars(layer) for layer in self.layers],
        }


def _known(dims: list | None) -> bool:
    """Whether every size of a value's ``dims`` is known (not symbolic, a shape at all)."""
    return dims is not None and all(isinstance(d, int) and d >= 0 for d in dims)


def _fed(graph) -> list:
    """The graph inputs a run is fed (not initializers listed as inputs)."""
    inits = {t.name for t in graph.initializer}
    return [vi for vi in graph.input if vi.name not in inits]


def _at_batch_one(model):
    """A copy of ``model`` whose graph inputs' dynamic dim 0 (the batch) is 1."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in _fed(out.graph):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    return out


def _infer_shapes(model):
    """``model`` with value shapes from ONNX shape inference, sizes computed in the graph (a Reshape's
    ``Shape -> Gather -> Concat``) propagated where it can."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - best effort: without data propagation
        pass
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise EdgeslimError(
            f"ONNX shape inference failed ({exc}); run `onnxslim` on the model first"
        ) from exc


def _run_shapes(model, names: list[str]) -> dict[str, tuple[list[int], int]]:
    """(shape, element size) of the values ``names`` from one ONNX Runtime run of ``model`` on zeros
    at its inputs' sizes; {} where onnxruntime is not installed, an input's size is unknown or the
    graph does not run on the CPU. ``names`` are added to ``model``'s outputs (the caller's own copy:
    no second copy of its weights is made)."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
    except ImportError:
        return {}
    inputs = _fed(model.graph)
    if not all(_known(value_dims(vi)) for vi in inputs):
        return {}
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        feeds = {
            vi.name: np.zeros(
                value_dims(vi), onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            )
            for vi in inputs
        }
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        want = [o.name for o in sess.get_outputs()]
        values = sess.run(want, feeds)
    except Exception as exc:  # noqa: BLE001 - ORT raises many types (a custom op, a file over 2 GB)
        log.debug("ONNX Runtime could not run the graph to read its sizes: %s", exc)
        return {}
    return {
        n: (list(v.shape), v.dtype.itemsize)
        for n, v in zip(want, values)
        if n in names and isinstance(v, np.ndarray)
    }


def _runs_macs_inside(node) -> bool:
    """Whether a control-flow node (If, Loop, Scan: graph attributes) runs a MAC op in a subgraph."""
    for a in node.attribute:
        for sub in [a.g] if a.HasField("g") else a.graphs:
            if any(n.op_type in _MAC_OPS or _runs_macs_inside(n) for n in sub.node):
                return True
    return False


def _fixed_batch(inputs: dict[str, list | None]) -> tuple[int | None, str]:
    """The batch a file was exported at: the fixed dim 0 (> 1) its image-like inputs (rank >= 3; every
    input where none is) agree on, None for a dynamic batch (or 1); and, where they disagree, why (the
    batch is unknown then)."""
    ranked = {n: d for n, d in inputs.items() if d and len(d) >= 3} or {n: d for n, d in inputs.items() if d}
    fixed = {n: d[0] for n, d in ranked.items() if isinstance(d[0], int) and d[0] > 1}
    if len(set(fixed.values())) > 1:
        named = ", ".join(f"'{n}' {b}" for n, b in fixed.items())
        return None, f"the inputs disagree on the batch ({named}); export every input at one batch"
    return next(iter(fixed.values()), None), ""


def _padded(c: object, multiple: int) -> object:
    return -(-c // multiple) * multiple if multiple > 1 and isinstance(c, int) and c > 0 else c


def onnx_cost(model_or_path, fuse: bool = True, multiple: int = 1) -> ModelCost:
    """Count MACs, parameters and bytes per layer of an ONNX model (a path or ModelProto).

    ``multiple`` > 1: each layer's MACs, bytes and weight bytes at channel counts padded to that
    multiple (dim 1 of every activation of rank >= 2, both sides of a Conv/Gemm weight; not the graph
    input's channels, an image's 3, which a first layer reads as they are), as a device
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
    source = str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else "the ONNX model"
    declared = {i.name: value_dims(i) for i in _fed(model.graph)}
    model = _at_batch_one(model)  # (this function's own copy from here on)
    g = _infer_shapes(model).graph
    itemsize = {}
    shapes: dict[str, list | None] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        shapes[vi.name] = value_dims(vi)
        elem = vi.type.tensor_type.elem_type
        itemsize[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize if elem else 4
    inits = {t.name: t for t in g.initializer}
    unresolved = [o for n in g.node for o in n.output if o and o not in inits and not _known(shapes.get(o))]
    if unresolved:  # (a Reshape or Split of sizes the graph computes: read them from a run)
        for name, (dims, size) in _run_shapes(model, unresolved).items():
            shapes[name], itemsize[name] = dims, size
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
        input_shapes=declared,
        quantized=quantized,
    )
    # counted at the batch the graph runs at (a fixed batch, else 1), over it: per sample (a graph that
    # folds tokens or patches into dim 0, MobileViT's, has no dim 0 that is the batch)
    batch, clash = _fixed_batch(cost.input_shapes)
    batch = batch or 1
    per_input = set(cost.input_shapes)  # the values computed from the inputs (not from weights alone)
    # the input's channels as they are, through elementwise preprocessing by constants ((x - mean) / std);
    # not a sum with a layer's output (x + f(x)), which a layer writes in blocks, as the budget sees it too
    image = set(cost.input_shapes)
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    for n in g.node:
        if per_input.intersection(n.input):
            per_input.update(n.output)
    for n in g.node:
        ins = [resolve(i) for i in n.input if i]
        if n.op_type in _CHANNELWISE and image.intersection(ins):
            if not all(i in image or i in consts for i in ins):  # (a layer's output joins them, x + f(x):
                image = set()  # a layer writes the image's channels, in blocks, as the budget sees it)
                break
            image.update(n.output)

    def act_bytes(name: str) -> float:
        dims = shapes.get(name)
        if not _known(dims):  # (its layer is unknown)
            return 0.0
        if (
            multiple > 1 and len(dims) >= 2 and resolve(name) not in image
        ):  # (N, C, ...): C padded (not an image's)
            dims = [dims[0], _padded(dims[1], multiple), *dims[2:]]
        return math.prod(dims) * itemsize.get(name, 4) / (batch if name in per_input else 1)

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
    unsized: list[str] = []  # the layers whose sizes are unknown
    in_flow: list[str] = []  # the control-flow nodes running MAC ops in subgraphs
    for kernel in fuse_kernels(nodes, fuse):
        node = onnx_nodes[kernel.nodes[0]]
        op = node.op_type
        inputs = [resolve(i) for i in node.input]
        out = node.output[0] if node.output else ""
        macs, pad_w = 0.0, 1.0  # pad_w: the layer's own weights at padded counts over the file's
        # the sizes the layer is priced from (its activations'; a MAC layer's weight and output)
        sizes = [shapes.get(v) for v in (*kernel.reads, *kernel.writes)]
        if op in ("Conv", "ConvTranspose"):
            wdims = list(inits[inputs[1]].dims) if inputs[1] in inits else shapes.get(inputs[1])
            dims = shapes.get(out if op == "Conv" else nodes[kernel.nodes[0]].inputs[0])
            sizes += [wdims, dims]
            if _known(wdims) and _known(dims) and len(wdims) >= 3:
                group = int(attr(node, "group", 1)) or 1
                k = math.prod(wdims[2:])
                # Conv weight (Cout, Cin/groups, k...) priced at the output's positions; ConvTranspose
                # weight (Cin, Cout/groups, k...) is a conv run backwards, priced at the input's
                a, b = wdims[0], wdims[1] * group  # (Conv: out, in; ConvTranspose: in, out)
                # (a first layer reads the image's channels as they are: no device pads its 3 to a block)
                reads_image = op == "Conv" and resolve(node.input[0]) in image
                pa, pb, pg = _padded(a, multiple), b if reads_image else _padded(b, multiple), group
                if (
                    group > 1 and wdims[1] == 1 and multiple > 1
                ):  # depthwise: the groups pad with the channels
                    pg = pb
                pad_w = (pa * pb / pg) / (a * b / group) if a and b else 1.0
                pos = math.prod(dims[:1] + dims[2:]) / batch  # (the positions of all rows of dim 0)
                macs = layer_macs("conv", pb, pa, k, pg, pos)
        elif op in ("Gemm", "MatMul"):
            a, out_dims = shapes.get(inputs[0]), shapes.get(out)
            sizes += [a, out_dims]
            if _known(a) and _known(out_dims) and a and out_dims:
                kdim = a[-2] if bool(attr(node, "transA", 0)) else a[-1]
                pk, po = _padded(kdim, multiple), _padded(out_dims[-1], multiple)
                pad_w = pk * po / (kdim * out_dims[-1]) if kdim and out_dims[-1] else 1.0
                macs = layer_macs("linear", pk, po, spatial=math.prod(out_dims[:-1]) / batch)
        elif op == "Einsum":
            operands = [shapes.get(i) for i in inputs]
            sizes += operands
            if all(_known(d) for d in operands):
                macs = einsum_macs(str(attr(node, "equation", b"").decode()), operands) / batch
        if _runs_macs_inside(node):
            in_flow.append(kernel.name)
        elif not all(_known(d) for d in sizes):
            unsized.append(kernel.name)
        own = sum(init_bytes.get(resolve(i), 0) for i in node.input)
        w = own * pad_w + sum(
            init_bytes.get(resolve(i), 0) for j in kernel.nodes[1:] for i in onnx_nodes[j].input
        )
        total = w + sum(act_bytes(v) for v in kernel.reads) + sum(act_bytes(v) for v in kernel.writes)
        cost.layers.append(LayerCost(kernel.name, float(int(round(macs))), float(total), float(w), op))
    cost.unknown = [layer.name for layer in cost.layers] if clash else unsized + in_flow
    causes = [clash] if clash else []
    if unsized:
        causes.append(f"the sizes of {len(unsized)} layer(s) ({_some(unsized)}) {_unsized_cause(model)}")
    if in_flow:
        causes.append(
            f"{len(in_flow)} If/Loop/Scan node(s) ({_some(in_flow)}) run MAC operators in subgraphs, whose "
            "branch or trip count is decided at run time; export the model without control flow"
        )
    cost.why = "; ".join(causes)
    if cost.unknown:
        log.warning("%s: %s; its MACs and bytes are reported as unknown", source, cost.why)
    return cost


def _unsized_cause(model) -> str:
    """Why layer sizes of ``model`` (at batch 1) stayed unknown, and the fix: a dynamic input size
    (no ONNX Runtime run is tried), onnxruntime missing, or a run that failed."""
    import importlib.util

    for vi in _fed(model.graph):
        dims = value_dims(vi)
        if not _known(dims):
            which = ", ".join(str(d) for d in (dims or [])[1:] if not isinstance(d, int)) or "its shape"
            return (
                f"are unknown: input '{vi.name}' has a dynamic size ({which}); export with a fixed input size"
            )
    if importlib.util.find_spec("onnxruntime") is None:
        return "are unknown to ONNX shape inference; install onnxruntime to read them from a run"
    return (
        "are unknown to ONNX shape inference and ONNX Runtime could not run the file to read them; "
        "simplify the file with onnxslim"
    )


def _some(names: list[str]) -> str:
    """The first of ``names``, and ``...`` when there are more."""
    return names[0] + (", ..." if len(names) > 1 else "")


def qdq_style(path: str | os.PathLike) -> str | None:
    """The INT8 Q/DQ form of an ONNX file, None for a float one (or not ONNX): the style its edgeslim INT8
    check recorded (``tensorrt``: export's ``NAME.int8.qdq.onnx``; ``onnxruntime``: ``NAME.int8.onnx``),
    else, where its graph quantizes activations (:func:`onnx_cost`'s ``quantized``), ``tensorrt`` for a
    ``.qdq.onnx`` name and ``unknown`` for another; by the name alone where onnx is not installed or the
    file cannot be read (its own load says why). The one rule of bench's ONNX Runtime note and of the
    precision trtexec builds a file in (a review: two detectors with different rules)."""
    import json

    from edgeslim.bench.backends import model_format
    from edgeslim.utils.onnx_graph import onnx_metadata

    if model_format(path) != "onnx":
        return None
    try:
        style = json.loads(onnx_metadata(path).get("validation") or "{}").get("style")
    except (ValueError, AttributeError):  # (not edgeslim's check: not JSON, or not an object)
        style = None
    if style:
        return str(style)
    named = str(path).endswith(".qdq.onnx")
    try:
        quantized = onnx_cost(path).quantized
    except EdgeslimError:  # (MissingDependencyError too: no onnx, as on a device)
        return "tensorrt" if named else None
    return ("tensorrt" if named else "unknown") if quantized else None
