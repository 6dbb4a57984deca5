"""Per-layer latency over channel counts (NetAdapt-style lookup), measured with ONNX Runtime or PyTorch.

``edgeslim bench MODEL.onnx --layer-table T.json`` (onnxruntime) adds a ``sweeps`` entry to the
table: for every conv/linear module, the latency of that one layer (Conv + Relu, the shape,
kernel, stride, padding and groups of the model's node, its input size from ONNX shape
inference) at several input/output channel counts, each timed in its own single-layer ONNX
Runtime session with the table's options. Counts are the profile's channel multiple times
whole numbers at about 1/4, 1/2, 3/4 and all of the layer's channels (a depthwise layer sweeps
its one count); one unaligned point (half the channels plus one) shows the step the kernels
take off their blocked path. No PyTorch needed.

:class:`~edgeslim.sparsity.resource.ResourceModel` uses a sweep as the *shape* of a layer's
latency: the layer's in-model time at full width (``layers``, from the profiler) times the
bilinear interpolation of the aligned points at the slim counts over the one at full width.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from typing import Any

from edgeslim.bench.timing import TimingConfig, host_loop
from edgeslim.channels.rounding import kept_count
from edgeslim.errors import EdgeslimError, require
from edgeslim.utils.onnx_graph import attr, static_shapes, weight_channels

log = logging.getLogger(__name__)

#: fractions of a layer's channels the sweep measures (rounded up to the channel multiple)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
#: timing of one point: at least 15 runs and 0.03 s, after 5 warm-up runs
POINT_TIMING = TimingConfig(warmup_s=0.0, warmup_iters=5, min_iters=15, min_time_s=0.03)


def counts(full: int, multiple: int, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """Aligned channel counts to measure for a dimension of ``full`` channels (always includes ``full``)."""
    m = max(int(multiple), 1)
    out = {kept_count(math.ceil(full * f), full, m) for f in fractions}  # (as surgery keeps them)
    out.add(full)
    return sorted(out)


def sweep_points(kind: str, cin: int, cout: int, multiple: int) -> list[tuple[tuple[int, int], bool]]:
    """``((c_in, c_out), aligned)`` to time for a layer: the aligned grid (a depthwise layer: one
    count), then the unaligned points that show the steps."""
    if kind == "dw":
        grid = [(c, c) for c in counts(cout, multiple)]
        extra = [(c, c) for c in _unaligned(cout, multiple)]
    else:
        grid = [(a, b) for a in counts(cin, multiple) for b in counts(cout, multiple)]
        extra = [(cin, c) for c in _unaligned(cout, multiple)] + [
            (c, cout) for c in _unaligned(cin, multiple)
        ]
    return [(q, True) for q in grid] + [(q, False) for q in extra]


def layer_specs(model: Any, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What a sweep needs of every conv/linear node named in ``names`` ({node: module})."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    shapes = static_shapes(model)
    specs: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if node.name not in names or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        x = shapes.get(node.input[0]) or []
        if node.op_type == "Conv" and w.ndim == 4 and len(x) == 4 and None not in x[1:]:
            cin, cout, g = weight_channels(node, list(w.shape))
            kind = "dw" if g > 1 and g == cin == cout else ("conv" if g == 1 else "grouped")
            specs[names[node.name]] = {
                "op": "Conv", "kind": kind, "in": cin, "out": cout, "hw": [int(x[2]), int(x[3])],
                "kernel": [int(w.shape[2]), int(w.shape[3])], "group": g,
                "strides": list(attr(node, "strides", [1, 1])), "pads": list(attr(node, "pads", [0, 0, 0, 0])),
                "dilations": list(attr(node, "dilations", [1, 1])),
            }  # fmt: skip
        elif node.op_type in ("Gemm", "MatMul") and w.ndim == 2:
            cin, cout, _ = weight_channels(node, list(w.shape))
            specs[names[node.name]] = {"op": "Gemm", "kind": "linear", "in": cin, "out": cout}
    return specs


def layer_model(spec: dict[str, Any], cin: int, cout: int, batch: int) -> bytes:
    """A serialized single-layer ONNX model (the layer of ``spec`` with ``cin``/``cout`` channels, + Relu)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if spec["op"] == "Conv":
        g = cin if spec["kind"] == "dw" else spec["group"]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, *spec["hw"]])
        w = numpy_helper.from_array(
            (rng.standard_normal((cout, cin // g, *spec["kernel"])) * 0.05).astype(np.float32), "w"
        )
        node = helper.make_node("Conv", ["x", "w", "b"], ["c"], group=g, kernel_shape=spec["kernel"],
                                strides=spec["strides"], pads=spec["pads"], dilations=spec["dilations"])  # fmt: skip
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin])
        w = numpy_helper.from_array((rng.standard_normal((cout, cin)) * 0.05).astype(np.float32), "w")
        node = helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=1)
    b = numpy_helper.from_array(np.zeros(cout, np.float32), "b")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node, helper.make_node("Relu", ["c"], ["y"])], "sweep", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def time_point_ms(fn: Callable[[], object], cfg: TimingConfig = POINT_TIMING) -> float:
    """Median milliseconds of one synchronous call of ``fn``."""
    return statistics.median(host_loop(fn, cfg)) * 1e3


def ort_layer_ms(
    ort: Any, data: bytes, shape: list[int], options: dict, cfg: TimingConfig = POINT_TIMING
) -> float:
    """Median milliseconds of the serialized single-layer model ``data`` on input ``shape`` in ONNX Runtime."""
    import numpy as np

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("threads") or 1)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    return time_point_ms(lambda: sess.run(None, feed), cfg)


def sweep_layers(
    path: str, batch: int, options: dict, multiple: int, progress: Any = None
) -> dict[str, dict[str, Any]]:
    """``{module: {"in", "out", "kind", "multiple", "points": [[c_in, c_out, ms, aligned], ...]}}``
    for every conv (plain or depthwise) and linear module of the ONNX file at ``path``."""
    onnx = require("onnx", "to build the single-layer models of a sweep")
    ort = require("onnxruntime", "to time a sweep")
    from edgeslim.bench.layers import onnx_conv_modules

    model = onnx.load(str(path), load_external_data=False)
    _, names = onnx_conv_modules(model.graph)
    specs = layer_specs(model, names)
    if not specs:
        raise EdgeslimError(f"{path} has no conv or linear layer with a static input size to sweep")
    out: dict[str, dict[str, Any]] = {}
    for i, (module, spec) in enumerate(specs.items()):
        if spec["kind"] == "grouped":  # channel counts tied to the groups: scaled by MACs instead
            continue
        points = []
        for (cin, cout), aligned in sweep_points(spec["kind"], spec["in"], spec["out"], multiple):
            shape = [batch, cin, *spec["hw"]] if spec["op"] == "Conv" else [batch, cin]
            ms = ort_layer_ms(ort, layer_model(spec, cin, cout, batch), shape, options)
            points.append([cin, cout, ms, aligned])
        out[module] = {k: spec[k] for k in ("in", "out", "kind")} | {"multiple": multiple, "points": points}
        if progress is not None:
            progress(i + 1, len(specs), module)
    return out


def _unaligned(full: int, multiple: int) -> list[int]:
    """One count off the channel multiple (half the channels plus one), if the layer has one."""
    if multiple <= 1 or full <= multiple:
        return []
    c = (full // 2 // multiple) * multiple + 1
    return [c] if 1 < c < full else []


# ---------------------------------------------------------------------------- PyTorch (CPU or CUDA)
def torch_sweep_layers(
    model: Any, example: Any, multiple: int, synchronize: Any = None, progress: Any = None
) -> dict[str, dict[str, Any]]:
    """The sweeps of :func:`sweep_layers` for an ``nn.Module``: each conv (plain or depthwise)
    and linear layer rebuilt alone (+ ReLU) at the counts, on the model's device and dtype, timed
    with ``time.perf_counter`` (``synchronize``, e.g. ``torch.cuda.synchronize``, after each run)."""
    import torch
    from torch import nn

    sync = synchronize or (lambda: None)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str) -> Any:
        def hook(_m: Any, args: tuple) -> None:  # a pre-hook returning a value would replace the input
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_pre_hook(record(name)))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    p = next(model.parameters())
    mods = dict(model.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for i, (name, shape) in enumerate(shapes.items()):
        m = mods[name]
        if isinstance(m, nn.Conv2d):
            dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            if m.groups > 1 and not dw:
                continue
            kind = "dw" if dw else "conv"
        else:
            kind = "linear"
        cin = m.in_channels if kind != "linear" else m.in_features
        cout = m.out_channels if kind != "linear" else m.out_features
        points = []
        for (a, b), aligned in sweep_points(kind, cin, cout, multiple):
            if kind == "linear":
                layer: nn.Module = nn.Linear(a, b)
                x = torch.randn(shape[0], a, device=p.device, dtype=p.dtype)
            else:
                layer = nn.Conv2d(
                    a, b, m.kernel_size, m.stride, m.padding, m.dilation, groups=a if kind == "dw" else 1
                )
                x = torch.randn(shape[0], a, *shape[2:], device=p.device, dtype=p.dtype)
            net = nn.Sequential(layer, nn.ReLU()).to(p.device, p.dtype).eval()
            points.append([a, b, _torch_time_ms(net, x, sync), aligned])
        out[name] = {"in": cin, "out": cout, "kind": kind, "multiple": multiple, "points": points}
        if progress is not None:
            progress(i + 1, len(shapes), name)
    return out


def _torch_time_ms(net: Any, x: Any, sync: Any) -> float:
    import torch

    def run() -> None:
        net(x)
        sync()

    with torch.inference_mode():
        return time_point_ms(run)


def torch_file_sweeps(
    path: str, batch: int, options: dict, multiple: int, progress: Any = None
) -> dict[str, Any]:
    """:func:`torch_sweep_layers` of an edgeslim model file, loaded as the torch backend loads it."""
    from edgeslim.bench.backends.torch_eager import TorchBackend

    sess = TorchBackend().open(path, options)
    sess.set_batch(batch)
    sync = (lambda: sess.torch.cuda.synchronize(sess.device)) if sess.cuda else None
    return torch_sweep_layers(sess.model, sess.x, multiple, sync, progress)
