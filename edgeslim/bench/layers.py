"""Per-layer latency tables: ``edgeslim bench MODEL --layer-table T.json``.

The table is what ``edgeslim slim --target-latency X --latency-table T.json`` consumes
(:func:`edgeslim.sparsity.resource.load_latency_table`, format in docs/budget.md): one time
per conv/linear module of the dense model, keyed by its PyTorch module name, plus ``fixed``,
the time of everything else (BN, activations, pooling, adds, framework overhead).

Producers:

* ``torch``: forward pre/post hooks on every conv/linear module time each call with
  ``time.perf_counter`` (``torch.cuda.synchronize`` on both sides on CUDA); per-layer median
  over the hooked runs. ``fixed`` = median whole-forward time *without* hooks (runs
  interleaved with the hooked ones) minus the sum of the per-layer medians, clamped at 0.
* ``onnxruntime`` (no PyTorch needed): ORT's profiler gives per-node kernel times of the
  graph as ORT runs it (Conv+BN+ReLU fused, NCHWc on x86). Each profiled node is traced back
  to an ONNX node of the file (its name, or the longest node or value name it starts with,
  as ORT names fused/NCHWc nodes after the output they produce), then through at most
  :data:`MAX_WALK` producers to a conv/linear node; every conv/linear node takes the closest
  profiled conv-type kernel. Module names come from the TorchScript exporter's scoped node
  names (``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``). ``fixed`` = median run time
  of an unprofiled session minus the sum of the attributed kernel medians, clamped at 0.
* ``trtexec`` / ``tensorrt`` (never run here: no GPU): TensorRT's per-layer profile
  (``trtexec --exportProfile --separateProfileRun``, or ``trt.IProfiler``). Layer names join
  the fused ONNX node names with ``" + "``; each part is traced like an ORT node, and
  :func:`attribute_rows` (shared with ORT) gives each conv/linear module its layer's median.
  ``fixed`` = the other layers + max(0, unprofiled median GPU compute - all layer medians).
"""

from __future__ import annotations

import logging
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

from edgeslim.bench.backends import model_format
from edgeslim.bench.timing import TimingConfig, host_loop, warmup
from edgeslim.errors import EdgeslimError, Step, require
from edgeslim.utils.onnx_graph import WEIGHT_OPS, node_module, value_dims, weight_channels

log = logging.getLogger(__name__)

TABLE_FORMAT = "edgeslim-latency-table"
TABLE_BACKENDS = ("torch", "onnxruntime", "trtexec", "tensorrt")
#: ORT kernel op types that run a conv or linear layer (possibly with fused epilogues)
ORT_WEIGHT_KERNELS = frozenset(
    {
        "Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "QLinearConv", "ConvInteger", "ConvTranspose",
        "Gemm", "FusedGemm", "QGemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul",
    }
)  # fmt: skip
#: producers followed from a profiled node's origin back to its conv/linear node
MAX_WALK = 4


# ---------------------------------------------------------------------------- common
def _median_ms(values: list[float]) -> float:
    return float(statistics.median(values)) * 1e3


def _finish(layers_ms: dict[str, float], total_ms: float, **extra: Any) -> dict[str, Any]:
    if not layers_ms:
        raise EdgeslimError("the model has no conv or linear layers; a latency table times those")
    summed = sum(layers_ms.values())
    return {
        "format": TABLE_FORMAT,
        "version": 1,
        "unit": "ms",
        "fixed": max(total_ms - summed, 0.0),
        "layers": layers_ms,
        "total_ms": total_ms,
        "sum_layers_ms": summed,
        **extra,
    }


# ---------------------------------------------------------------------------- torch
def torch_layer_table(model, example, cfg: TimingConfig | None = None, *, synchronize=None) -> dict[str, Any]:
    """Per-layer table of an ``nn.Module`` on ``example`` (its batch is the table's batch).

    Hooked and plain forwards alternate (warm-up by ``cfg``, then until ``cfg`` is satisfied).
    ``synchronize`` (e.g. ``torch.cuda.synchronize``) is called around every timed region.
    """
    import torch
    from torch import nn

    from edgeslim.counting import layer_channels

    cfg = cfg or TimingConfig()
    sync = synchronize or (lambda: None)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if not convs:
        raise EdgeslimError("the model has no conv or linear layers; a latency table times those")
    model.eval()
    current: dict[str, float] = {}
    starts: dict[str, float] = {}

    def pre(name: str):
        def hook(_m, _args) -> None:
            sync()
            starts[name] = time.perf_counter()

        return hook

    def post(name: str):
        def hook(_m, _args, _out) -> None:
            sync()
            current[name] = current.get(name, 0.0) + time.perf_counter() - starts[name]

        return hook

    def forward() -> float:
        sync()
        t0 = time.perf_counter()
        model(example)
        sync()
        return time.perf_counter() - t0

    per_layer: dict[str, list[float]] = {n: [] for n, _ in convs}
    hooked_totals: list[float] = []
    plain_totals: list[float] = []
    handles: list = []
    with torch.inference_mode():
        warmup(forward, cfg)
        t_start = time.perf_counter()
        try:
            while not cfg.done(len(plain_totals), time.perf_counter() - t_start):
                for n, m in convs:
                    handles.append(m.register_forward_pre_hook(pre(n)))
                    handles.append(m.register_forward_hook(post(n)))
                current.clear()
                hooked_totals.append(forward())
                for n, _ in convs:
                    per_layer[n].append(current.get(n, 0.0))
                for h in handles:
                    h.remove()
                handles.clear()
                plain_totals.append(forward())
        finally:
            for h in handles:
                h.remove()
    never = [n for n, v in per_layer.items() if not any(v)]
    if never:
        raise EdgeslimError(f"layer(s) {', '.join(never[:4])} never ran in a forward pass; cannot time them")
    layers_ms = {n: _median_ms(v) for n, v in per_layer.items()}
    widths = {n: [int(c or 0) for c in layer_channels(m)] for n, m in convs}
    total = _median_ms(plain_totals)
    hooked = _median_ms(hooked_totals)
    return _finish(
        layers_ms,
        total,
        runs=len(plain_totals),
        batch=int(example.shape[0]),
        widths=widths,
        method=(
            "torch forward pre/post hooks on every conv/linear module, time.perf_counter"
            + (" with torch.cuda.synchronize around each" if synchronize else "")
            + "; per-layer median over hooked runs; fixed = median unhooked forward minus the sum "
            "of the per-layer medians (clamped at 0); hooked and unhooked runs interleaved. "
            f"The hooks added {hooked - total:.4g} ms per forward ({len(convs) * 2} hook calls)."
        ),
        overhead={
            "hooked_total_ms": hooked,
            "hook_overhead_ms": hooked - total,
            "hook_overhead_us_per_layer": (hooked - total) * 1e3 / len(convs),
        },
    )


def torch_file_table(path: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """:func:`torch_layer_table` of an edgeslim model file (loaded as the torch backend loads it)."""
    from edgeslim.bench.backends.torch_eager import TorchBackend
    from edgeslim.utils.modes import torch_threads

    with torch_threads(options.get("threads")):  # (the backend sets them for its worker process)
        sess = TorchBackend().open(path, options)
        sess.set_batch(batch)
        torch = sess.torch
        sync = (lambda: torch.cuda.synchronize(sess.device)) if sess.cuda else None
        table = torch_layer_table(sess.model, sess.x, cfg, synchronize=sync)
        threads = torch.get_num_threads()
    return {
        **table,
        "backend": "torch",
        "model": str(path),
        "input_shape": [batch, *sess.input_shape],
        "env": {"torch": torch.__version__, "device": str(sess.device), "threads": threads},
    }


# ---------------------------------------------------------------------------- onnxruntime
class OnnxGraphIndex:
    """Names, producers and conv/linear nodes of an ONNX graph, for tracing profiled nodes back."""

    def __init__(self, graph) -> None:
        inits = {t.name for t in graph.initializer}
        self.nodes = {n.name: n for n in graph.node if n.name}
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.inits = inits
        self.weighted = {
            n.name: n
            for n in graph.node
            if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits
        }

    def origin(self, ort_name: str):
        """The ONNX node a profiled node comes from: same name, else the longest node or value
        name it starts with (followed by ``_``, as ORT names fused and NCHWc nodes)."""
        if ort_name in self.nodes:
            return self.nodes[ort_name]
        for i in range(len(ort_name) - 1, 0, -1):
            if ort_name[i] != "_":
                continue
            head = ort_name[:i]
            if head in self.nodes:
                return self.nodes[head]
            if head in self.producer:
                return self.producer[head]
        return None

    def weighted_node(self, node) -> tuple[Any, int] | None:
        """The conv/linear node reached from ``node`` through first activation inputs, and the steps."""
        for steps in range(MAX_WALK + 1):
            if node.name in self.weighted:
                return node, steps
            nxt = next(
                (self.producer[i] for i in node.input if i and i not in self.inits and i in self.producer),
                None,
            )
            if nxt is None:
                return None
            node = nxt
        return None


#: ops of a quantized graph whose conv/linear weights are INT8 (ONNX Runtime's QOperator form)
_QUANTIZED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _quantized(graph) -> bool:
    """Whether ``graph``'s conv/linear weights come quantized: through a DequantizeLinear (Q/DQ) or into a
    QLinear/Integer op."""
    dq = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return any(
        n.op_type in _QUANTIZED_OPS or (n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in dq)
        for n in graph.node
    )


def _quantized_refusal(path: str | Path | None) -> EdgeslimError:
    """The one-line refusal of a latency table of an INT8 ONNX, naming the FP32 ONNX beside it if there is one
    (export writes ``NAME.int8.onnx`` and ``NAME.int8.qdq.onnx`` beside ``NAME.onnx``)."""
    p = Path(path) if path is not None else None
    fp32 = None
    if p is not None and (m := re.fullmatch(r"(.+)\.int8(?:\.qdq)?\.onnx", p.name)):
        fp32 = p.with_name(f"{m.group(1)}.onnx")
    give = (
        f"give {fp32}" if fp32 is not None and fp32.is_file() else "give the FP32 ONNX it was quantized from"
    )
    return EdgeslimError(
        f"{p or 'the ONNX model'} is quantized (INT8: its conv/linear weights go through DequantizeLinear or "
        f"QLinear ops): latency tables are measured on the FP32 ONNX; {give}"
    )


def onnx_conv_modules(graph, path: str | Path | None = None) -> tuple[OnnxGraphIndex, dict[str, str]]:
    """The graph index and ``{conv/linear node: module name}``; one-line errors when there is
    no conv/linear node (a quantized graph: :func:`_quantized_refusal`, ``path`` the file) or a module name
    cannot be recovered."""
    idx = OnnxGraphIndex(graph)
    if _quantized(graph):  # (also one whose classifier stayed FP32: its quantized convs were timed as fixed)
        raise _quantized_refusal(path)
    if not idx.weighted:
        raise EdgeslimError("the ONNX model has no conv or linear layers; a latency table times those")
    names: dict[str, str] = {}
    for n, node in idx.weighted.items():
        mod = node_module(node)
        if mod is None:
            export = Step("export")
            raise EdgeslimError(
                f"cannot recover the PyTorch module name of ONNX node {n!r}; export with {export} "
                "(scoped node names like /layer1/layer1.0/conv1/Conv, or weights named after their module)",
                steps=(export,),
            )
        names[n] = mod
    return idx, names


def onnx_layer_widths(graph) -> dict[str, list[int]]:
    """``{module: [in channels, out channels]}`` of the graph's conv/linear layers (their weights' shapes):
    what a table records of the network it timed, so that one of other widths is refused."""
    idx, names = onnx_conv_modules(graph)
    dims = {t.name: list(t.dims) for t in graph.initializer}
    return {
        names[n]: list(weight_channels(node, dims[node.input[1]])[:2]) for n, node in idx.weighted.items()
    }


def attribute_rows(
    idx: OnnxGraphIndex,
    names: dict[str, str],
    rows: list[tuple[str, float, list]],
    what: str,
    hint: str,
    param: str | None = None,
) -> tuple[dict[str, float], dict[str, str], set[str]]:
    """Attribute profiled rows ``(name, time, [origin ONNX nodes])`` to conv/linear modules.

    Shared by ONNX Runtime kernels (one origin each) and TensorRT layers (one origin per fused
    ONNX node). A row reaches a conv/linear node from any origin through at most
    :data:`MAX_WALK` producers; its distance is the shortest. Each conv/linear node takes its
    closest row(s): rows that contain the node itself (distance 0) add up (the conv ran as
    several kernels); a tie further away is refused. A row taken by several convs (TensorRT
    fused them into one layer) is split equally between them. Returns ``({module: time},
    {module: row name(s)}, {rows taken})``; rows not taken are the caller's ``fixed``.
    ``idx, names`` come from :func:`onnx_conv_modules`.
    """
    best: dict[str, list[tuple[int, int]]] = {}
    for i, (_, _, origins) in enumerate(rows):
        dist: dict[str, int] = {}
        for origin in origins:
            hit = idx.weighted_node(origin) if origin is not None else None
            if hit is not None and hit[1] < dist.get(hit[0].name, MAX_WALK + 1):
                dist[hit[0].name] = hit[1]
        for node_name, steps in dist.items():
            best.setdefault(node_name, []).append((steps, i))
    chosen: dict[str, list[int]] = {}
    for node_name, mod in names.items():
        cands = sorted(best.get(node_name, []))
        if not cands:
            raise EdgeslimError(
                f"no profiled {what} maps to {node_name!r} (module {mod}); {hint}", param=param
            )
        near = [i for steps, i in cands if steps == cands[0][0]]
        if len(near) > 1 and cands[0][0] > 0:
            raise EdgeslimError(
                f"two profiled {what}s ({rows[near[0]][0]!r}, {rows[near[1]][0]!r}) map equally "
                f"well to {node_name!r}; cannot attribute their time ({hint})",
                param=param,
            )
        chosen[node_name] = near
    sharers: dict[int, int] = {}
    for near in chosen.values():
        for i in near:
            sharers[i] = sharers.get(i, 0) + 1
    layers: dict[str, float] = {}
    source: dict[str, str] = {}
    for node_name, near in chosen.items():
        mod = names[node_name]
        # a module run twice adds up
        layers[mod] = layers.get(mod, 0.0) + sum(rows[i][1] / sharers[i] for i in near)
        source[mod] = " | ".join(rows[i][0] for i in near)
    return layers, source, {rows[i][0] for i in sharers}


def attribute_nodes(graph, node_times: list[dict]) -> tuple[dict[str, float], dict[str, str]]:
    """Per-module time (us) from per-node ONNX Runtime profiler times (:func:`...ort.parse_profile`
    rows); only conv/linear kernel op types count. Returns ``({module: us}, {module: profiled node})``.
    Raises :class:`EdgeslimError` when a conv/linear node has no module name, no profiled kernel,
    or two equally close ones (see :func:`attribute_rows`).
    """
    idx, names = onnx_conv_modules(graph)
    rows = [
        (r["name"], r["median_us"], [idx.origin(r["name"])])
        for r in node_times
        if r.get("op") in ORT_WEIGHT_KERNELS
    ]
    layers, source, _ = attribute_rows(
        idx, names, rows, "ONNX Runtime kernel", "try graph_opt basic or extended", param="graph_opt"
    )
    return layers, source


def node_layers(graph, node_times: list[dict]) -> list[str | None]:
    """The layer each ONNX Runtime profiler row (:func:`...ort.parse_profile`) runs, traced as
    :func:`attribute_nodes` traces them: a conv/linear kernel its module (as a latency table names it),
    another node the ONNX node it comes from; None for a node ONNX Runtime added (a layout reorder)."""
    idx = OnnxGraphIndex(graph)
    out: list[str | None] = []
    for r in node_times:
        origin = idx.origin(r["name"])
        hit = idx.weighted_node(origin) if origin is not None and r.get("op") in ORT_WEIGHT_KERNELS else None
        if hit is not None:
            out.append(node_module(hit[0]) or hit[0].name)
        else:
            out.append(None if origin is None else origin.name or None)
    return out


def name_nodes(path: str, nodes: list[dict]) -> bool:
    """Give ONNX Runtime profiler rows ``nodes`` of the model file ``path`` their ``layer``
    (:func:`node_layers`); False, the rows left as they are, where that cannot be traced (not an ONNX
    file: an ``.ort`` one; onnx not installed, as on a device; the file unreadable)."""
    if model_format(path) != "onnx":
        return False
    try:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - onnx missing, or protobuf's many types: the nodes stay unnamed
        return False
    for node, layer in zip(nodes, node_layers(graph, nodes), strict=True):
        node["layer"] = layer
    return True


def trt_layer_parts(name: str) -> list[str]:
    """ONNX node/tensor names fused into one TensorRT layer name: ``"A + B + C"`` -> [A, B, C];
    ``PWN(...)`` wrappers and their ``, `` lists are opened. Reformat layers (``Reformatting
    CopyNode for ... to LAYER``) name the layer they feed, not their own nodes: no parts."""
    if name.startswith("Reformatting CopyNode"):
        return []
    parts: list[str] = []
    for part in name.split(" + "):
        for piece in re.split(r"PWN\(|, |\)", part):
            if piece.strip():
                parts.append(piece.strip())
    return parts


def attribute_trt_layers(graph, layers: list[dict]) -> tuple[dict[str, float], dict[str, str], set[str]]:
    """Per-module time (ms) from TensorRT per-layer rows ``{"name", "median_ms"}``.

    Each ``" + "`` part of a layer name is resolved to an ONNX node of the file (node name,
    else the longest node or tensor name it starts with followed by ``_``, e.g. TensorRT's
    ``_clone_1``). Only layers with a Conv/Gemm/MatMul part compete (a pooling or BN+ReLU layer
    that walks back to a conv never takes its time), then :func:`attribute_rows`. Returns ``({module: ms},
    {module: TensorRT layer}, {layers taken})``.
    """
    idx, names = onnx_conv_modules(graph)
    rows = []
    for r in layers:
        origins = [o for o in (idx.origin(p) for p in trt_layer_parts(r["name"])) if o is not None]
        # like ORT's conv-type kernels: only layers with a conv/linear node of their own count
        if any(o.op_type in WEIGHT_OPS for o in origins):
            rows.append((r["name"], r["median_ms"], origins))
    foreign = next((r["name"] for r in layers if "ForeignNode[" in r["name"]), None)
    hint = (
        f"TensorRT ran it inside the Myelin region {foreign!r}, which has no per-layer times"
        if foreign
        else "export the ONNX with edgeslim's ONNX export and build the engine from that file"
    )
    return attribute_rows(idx, names, rows, "TensorRT layer", hint)


def ort_file_table(path: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Per-layer table of an ONNX file from ONNX Runtime's profiler (no PyTorch needed)."""
    if (fmt := model_format(path)) == "ort":  # (whatever its name: the bytes tell)
        raise EdgeslimError(
            f"{path} holds an ONNX Runtime (ORT format) model, whose layers cannot be traced; a latency table "
            "is measured on the ONNX file it was converted from: give that"
        )
    if fmt != "onnx":
        raise EdgeslimError(f"the onnxruntime backend needs an .onnx file; got {path}")
    onnx = require("onnx", "to map profiled ONNX nodes to layers")
    from edgeslim.bench.backends.ort import OrtBackend, parse_profile

    graph = onnx.load(str(path), load_external_data=False).graph
    onnx_conv_modules(graph, path)  # refuse before measuring
    sess = OrtBackend().open(path, options)
    sess.set_batch(batch)
    plain = host_loop(sess.run, cfg)
    runs = max(cfg.min_iters, 20)
    events = sess.profile_events(runs)
    rows = parse_profile(events)
    layers_us, source = attribute_nodes(graph, rows)
    profiled_runs = [
        float(e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    ]
    total = _median_ms(plain)
    kernels_ms = sum(r["median_us"] for r in rows) * 1e-3
    profiled_ms = statistics.median(profiled_runs[1:] or profiled_runs) * 1e-3 if profiled_runs else None
    # fixed = the other kernels + the time between kernels (unprofiled run minus all kernels, >= 0),
    # i.e. max(run, all kernels) - conv kernels: no non-conv kernel time is lost to noise
    fixed_total = max(total, kernels_ms)
    return {
        **_finish(
            {k: v * 1e-3 for k, v in layers_us.items()},
            fixed_total,
            runs=runs,
            batch=batch,
            widths=onnx_layer_widths(graph),
            method=(
                "onnxruntime profiler (SessionOptions.enable_profiling) kernel_time per node, median over "
                "runs; each conv/linear module takes its fused kernel (Conv+BN+activation, NCHWc); fixed = "
                "the other kernels plus the time between kernels (median run of an unprofiled session "
                "minus all kernels, clamped at 0). "
                + (
                    f"A profiled run took {profiled_ms:.4g} ms (median model_run), an unprofiled one {total:.4g} ms."
                    if profiled_ms is not None
                    else ""
                )
            ),
            overhead={"profiled_run_ms": profiled_ms, "all_kernels_ms": kernels_ms},
        ),
        "total_ms": total,
        "backend": "onnxruntime",
        "model": str(path),
        "input_shape": sess.input_shapes()[0],
        "nodes": source,
        "env": {
            "onnxruntime": sess.ort.__version__,
            "providers": sess.sess.get_providers(),
            "graph_opt": options.get("graph_opt", "all"),
            "threads": sess.threads,  # (those given, else ORT's default as the session counted them)
            **({"thread_pools": sess.thread_pools} if sess.thread_pools else {}),  # (XNNPACK's pool has them)
            "host": platform.node(),  # slim --target-latency measures its result here only on this host
        },
    }


# ---------------------------------------------------------------------------- tensorrt
def trt_table(graph, profile: dict, total_ms: float, **extra: Any) -> dict[str, Any]:
    """Latency table from a TensorRT per-layer profile (:func:`...trtexec.parse_layer_profile`
    dict) of an engine built from ``graph``, and the median GPU time of an unprofiled run.

    Each conv/linear module takes its fused layer's median (:func:`attribute_trt_layers`);
    ``fixed`` = the other layers plus max(0, ``total_ms`` - all layer medians).
    """
    layers_ms, source, taken = attribute_trt_layers(graph, profile["layers"])
    all_ms = sum(r["median_ms"] for r in profile["layers"])
    other_ms = sum(r["median_ms"] for r in profile["layers"] if r["name"] not in taken)
    return {
        **_finish(layers_ms, max(total_ms, all_ms), widths=onnx_layer_widths(graph), **extra),
        "total_ms": total_ms,
        "nodes": source,
        "overhead": {
            "all_layers_ms": all_ms,
            "other_layers_ms": other_ms,
            "between_layers_ms": max(total_ms - all_ms, 0.0),
            "profiled_layers": len(profile["layers"]),
        },
    }


_TRT_METHOD = (
    "{src}; each conv/linear module takes the median of the TensorRT layer its ONNX node was fused "
    "into (conv + BN + activation/add); fixed = the other layers (pooling, reformats, pointwise) plus "
    "max(0, median GPU compute time of an unprofiled run - all layer medians)."
)


def _names_graph(path: str, options: dict):
    """The ONNX graph that names the engine's layers: the model itself, or ``options['onnx']``."""
    onnx = require("onnx", "to map TensorRT layers to PyTorch modules")
    src = options.get("onnx") or (path if model_format(path) == "onnx" else None)
    if src is None:
        raise EdgeslimError(
            f"{path} is an engine: a TensorRT layer table needs the ONNX file it was built from for the "
            "layer names; pass its path as onnx (or bench the .onnx with backend trtexec)",
            param=("onnx", "backend"),
        )
    graph = onnx.load(str(src), load_external_data=False).graph
    onnx_conv_modules(graph, src)  # refuse before measuring
    return graph, str(src)


def _model_input_dims(graph) -> list[int | str]:
    """The dims of the graph's model input (its first input that is not a weight)."""
    inits = {i.name for i in graph.initializer}
    return value_dims(next(v for v in graph.input if v.name not in inits)) or []


def trtexec_file_table(path: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Per-layer table from one trtexec run: timed run, then ``--separateProfileRun`` profile."""
    from edgeslim.bench.backends.trtexec import TrtexecBackend

    graph, names = _names_graph(path, options)
    sess = TrtexecBackend().open(path, options)
    sess.set_batch(batch)
    prof = sess.profile_layers(cfg)
    total = sess.summary["gpu_compute"]["median_ms"]
    src = "trtexec --exportProfile --separateProfileRun, per-layer medianMs over the profiled runs"
    return _trt_file_table(graph, prof, total, batch, src, "trtexec", path, names, sess.version,
                           {**options, "precision": sess.precision})  # fmt: skip


def _trt_file_table(graph, prof: dict, total: float, batch: int, src: str, backend: str, path: str, names: Any,
                    version: str, options: dict) -> dict[str, Any]:  # fmt: skip
    """The table of a TensorRT profile (trtexec or trt.IProfiler) with what produced it."""
    return {
        **trt_table(graph, prof, total, runs=prof["runs"], batch=batch, method=_TRT_METHOD.format(src=src)),
        "backend": backend,
        "model": str(path),
        "onnx": names,
        "input_shape": [batch, *_model_input_dims(graph)[1:]],
        "env": {"tensorrt_version": version, "precision": options.get("precision", "fp32")},
    }


def tensorrt_file_table(path: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Per-layer table of an engine through the TensorRT Python API (``trt.IProfiler``)."""
    from edgeslim.bench.backends.trt import TensorRTBackend

    graph, names = _names_graph(path, options)
    sess = TensorRTBackend().open(path, options)
    try:
        sess.set_batch(batch)
        total = _median_ms(sess.measure(cfg)["device"])
        prof = sess.profile_layers(cfg)
        version = sess.trt.__version__
    finally:
        sess.close()
    src = "trt.IProfiler report_layer_time, median per layer over runs"
    return _trt_file_table(graph, prof, total, batch, src, "tensorrt", path, names, version, options)


# ---------------------------------------------------------------------------- entry points
def layer_table(path: str, backend: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Measure a per-layer latency table of the model file with ``backend`` at ``batch``."""
    from edgeslim.bench.backends import check_options

    check_options(options)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EdgeslimError(f"batch must be an integer >= 1, got {batch!r}")
    from edgeslim.bench.backends import get_backend

    producer = get_backend(backend)
    if producer.layer_table_producer is None:
        raise EdgeslimError(
            f"the {backend} backend cannot write a layer table; use one of {', '.join(TABLE_BACKENDS)}"
        )
    return producer.layer_table(path, batch, cfg, options)


#: the timing of a calibration: whole networks, 3 interleaved trials
CALIBRATION_TIMING = TimingConfig(warmup_s=0.3, warmup_iters=20, min_iters=100, min_time_s=0.5)


def measure_calibration(
    dense: str,
    widths: dict[float, str],
    backend: str,
    batch: int,
    options: dict,
    round_to: int,
    cfg: TimingConfig = CALIBRATION_TIMING,
    trials: int = 3,
    zero_invariant: bool = False,
) -> dict[str, Any]:
    """A latency table's ``calibration``: the dense model file and the files of it cut to uniform
    widths (``{fraction: path}``, counts multiples of ``round_to``, cut with ``zero_invariant`` or not;
    :func:`edgeslim.surgery.widths.uniform_widths`) timed interleaved with ``backend``: ``{"dense_ms",
    "points", "round_to", "zero_invariant", "method"}``."""
    from edgeslim.bench.compare import run_comparison

    models = {"baseline": dense, **{f"uniform{f}": p for f, p in widths.items()}}
    rec = run_comparison(models, backend, [batch], trials, cfg, options, tegrastats=False)
    p50 = {k: statistics.median(v[str(batch)]["trial_p50_ms"]) for k, v in rec["summary"].items()}
    return {
        "dense_ms": p50["baseline"],
        "points": [{"fraction": f, "measured_ms": p50[f"uniform{f}"]} for f in widths],
        "round_to": int(round_to),
        # (the channels cut: a zero_invariant run's removability cuts those a squeeze-excitation gate multiplies)
        "zero_invariant": bool(zero_invariant),
        "method": f"every channel group cut to the fraction (counts multiples of {round_to}, as surgery keeps "
        f"them{', zero_invariant' if zero_invariant else ''}), surgery, {backend}, {trials} interleaved trials "
        "(median of per-trial p50)",
    }


def write_layer_table(table: dict[str, Any], path: str | Path, force: bool = False) -> Path:
    """Write ``table`` as JSON atomically; refuses to overwrite without ``force``."""
    from edgeslim.utils.io import check_output_path, write_json

    out = check_output_path(path, force)
    write_json(out, table)
    return out
