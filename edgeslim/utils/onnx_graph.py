"""Reading ONNX graphs (torch-free; ``onnx`` imported by the caller): the ops that carry weights,
node attributes, static value shapes, and the channel counts of a weighted node."""

from __future__ import annotations

import re
from typing import Any

from edgeslim.errors import EdgeslimError

#: ONNX ops whose second input is a layer's weight (the ops that carry a network's MACs)
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def attr(node: Any, name: str, default: Any) -> Any:
    """The value of ``node``'s attribute ``name`` (an int, a list, ...), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def value_dims(value_info: Any) -> list[int | str] | None:
    """The dims of a value: ints, the name of a symbolic one (``"?"`` unnamed); None without a shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def static_shapes(model: Any) -> dict[str, list[int | None]]:
    """Value name -> dims after ONNX shape inference, None where a dim is symbolic."""
    from onnx import shape_inference

    g = shape_inference.infer_shapes(model).graph
    return {
        vi.name: [d if isinstance(d, int) else None for d in value_dims(vi) or []]
        for vi in [*g.input, *g.value_info, *g.output]
    }


def weight_channels(node: Any, wdims: list[int]) -> tuple[int, int, int]:
    """``(in channels, out channels, groups)`` of a :data:`WEIGHT_OPS` node with weight dims ``wdims``:
    Conv (out, in/groups, k...), ConvTranspose (in, out/groups, k...), Gemm (transB: out, in),
    MatMul (in, out)."""
    groups = int(attr(node, "group", 1)) or 1
    if node.op_type == "Conv":
        return int(wdims[1]) * groups, int(wdims[0]), groups
    if node.op_type == "ConvTranspose":
        return int(wdims[0]), int(wdims[1]) * groups, groups
    if node.op_type == "Gemm" and int(attr(node, "transB", 0)):
        return int(wdims[1]), int(wdims[0]), 1
    return int(wdims[0]), int(wdims[1]), 1


def node_module(node: Any) -> str | None:
    """The PyTorch module an ONNX conv/linear node computes: from its scoped name (the TorchScript
    exporter's, :func:`module_name`), else from the name of its weight as the dynamo exporter keeps
    it (``features.0.weight`` -> ``features.0``; its nodes are ``node_Conv_96``); None when neither
    tells."""
    own = module_name(node.name or "")
    if own is not None:
        return own
    weight = node.input[1] if len(node.input) > 1 else ""
    head = weight[: -len(".weight")] if weight.endswith(".weight") else ""
    return head if head and all(part.isidentifier() or part.isdigit() for part in head.split(".")) else None


def module_name(node_name: str) -> str | None:
    """PyTorch module name from a TorchScript-exporter node name, or None.

    ``/features/features.0/Conv`` -> ``features.0``; ``/layer1/layer1.0/conv1/Conv`` ->
    ``layer1.0.conv1``; ``/classifier/Gemm`` -> ``classifier``;
    ``/features/features.1/block/block.0/block.0.0/Conv`` -> ``features.1.block.0.0``. Each scope
    is either an attribute name or a name qualified within the nearest container (which repeats
    that container's path).
    """
    parts = node_name.split("/")
    if len(parts) < 3 or parts[0] != "" or not all(parts[1:]):
        return None
    name = ""
    for scope in parts[1:-1]:
        # a scope qualified within a container repeats the container's path: replace that tail
        # (/features/features.1/block/block.0/block.0.0 -> features.1.block.0.0)
        dotted = name.split(".") if name else []
        for i in range(len(dotted)):
            tail = ".".join(dotted[i:])
            if scope.startswith(tail + "."):
                name = ".".join([*dotted[:i], scope])
                break
        else:
            name = f"{name}.{scope}" if name else scope
    return name


def _tail_nodes(model: Any) -> list[Any]:
    """The nodes of :func:`output_tail`."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consts = {t.name for t in g.initializer} | {
        o for n in g.node if n.op_type == "Constant" for o in n.output
    }
    # (in graph order) a node of constants only is one too: a weight behind Q/DQ, a transposed weight
    for n in g.node:
        if n.input and all(i in consts for i in n.input if i):
            consts.update(n.output)

    def weighted(n: Any) -> bool:
        return n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in consts

    feeds_layer = {i for n in g.node if weighted(n) for i in n.input[:1]}  # values a weighted layer reads
    tail: dict[int, Any] = {}
    stack = [producer[o.name] for o in g.output if o.name in producer]
    while stack:
        n = stack.pop()
        # stop at the weighted layers, and at the trunk: a value another weighted layer also reads (a
        # residual stream the output shares with the rest of the network is not its decoding)
        if id(n) in tail or weighted(n) or any(o in feeds_layer for o in n.output):
            continue
        tail[id(n)] = n
        stack += [producer[i] for i in n.input if i in producer]
    return [n for n in tail.values() if n.op_type != "Constant"]


def output_tail(model: Any) -> list[str]:
    """Names of the nodes between the last weighted layers and the graph outputs: every node from
    which an output is reached without passing through a :data:`WEIGHT_OPS` node with a constant
    weight (a detector's box decoding, sigmoid and the concat of boxes with scores; a segmenter's
    resize). Quantizing them puts values of very different ranges on one INT8 scale."""
    return [n.name for n in _tail_nodes(model) if n.name]


def output_tail_values(model: Any) -> set[str]:
    """The values those nodes compute (TensorRT's ONNX parser names its layers' outputs after them)."""
    return {o for n in _tail_nodes(model) for o in n.output if o}


def unreadable_onnx(path: Any, exc: BaseException, reader: str = "") -> EdgeslimError:
    """The one-line refusal of an ONNX file that onnx or ONNX Runtime (``reader``, named in the
    message) could not read (``exc``); a missing external-data file (weights stored beside the
    graph) is named, with the fix."""
    text = " ".join(str(exc).split())
    # onnx's wording, then ONNX Runtime's
    missing = re.search(r"should be stored in (.+?),? but it is not", text) or re.search(
        r'External data path does not exist: "(.+?)"', text
    )
    if missing:
        return EdgeslimError(
            f"{path} keeps its weights in a separate file, {missing.group(1)}, which is not there; copy that file "
            "beside it, or export the model with its weights inside (under 2 GB)"
        )
    if reader:
        return EdgeslimError(f"{reader} cannot load {path}: {text[:300]}")
    return EdgeslimError(f"{path} is not a readable ONNX file ({text[:300]}); re-export it")


def read_metadata(path: Any) -> dict[str, str]:
    """``metadata_props`` of the ONNX file at ``path`` as a dict (its weights are not read)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


#: the ONNX metadata key of a YOLO export's model yaml file name (``yolov8n.yaml``): what tells two YOLO
#: networks apart where their architecture is the path of the checkpoint they were loaded from
MODEL_YAML_KEY = "model_yaml"


def onnx_metadata(path: Any) -> dict[str, str]:
    """:func:`read_metadata`, or {} when ``onnx`` is not installed (as on a device) or the file cannot
    be read (the caller's own load says why)."""
    try:
        return read_metadata(path)
    except Exception:  # noqa: BLE001 - no onnx, or protobuf's many error types; reported where it is loaded
        return {}
