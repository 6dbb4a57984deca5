"""Per-layer latency tables: ``edgeslim bench MODEL --layer-table T.json``.

The table is what ``edgeslim slim --target-latency X --latency-table T.json`` consumes
(:func:`edgeslim.sparsity.resource.load_latency_table`, format in docs/budget.md): one time
per conv/linear module of the dense model, keyed by its PyTorch module name, plus ``fixed``,
the time of everything else (BN, activations, pooling, adds, framework overhead).

Two producers:

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
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from edgeslim.bench.timing import TimingConfig, host_loop, warmup
from edgeslim.errors import EdgeslimError, require

log = logging.getLogger(__name__)

TABLE_FORMAT = "edgeslim-latency-table"
TABLE_BACKENDS = ("torch", "onnxruntime")
#: ONNX op types of conv/linear modules (with a weight initializer)
ONNX_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
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


def _loop_done(n: int, elapsed: float, cfg: TimingConfig) -> bool:
    return (
        (n >= cfg.min_iters and elapsed >= cfg.min_time_s) or n >= cfg.max_iters or elapsed >= cfg.max_time_s
    )


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
            while not _loop_done(len(plain_totals), time.perf_counter() - t_start, cfg):
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
    total = _median_ms(plain_totals)
    hooked = _median_ms(hooked_totals)
    return _finish(
        layers_ms,
        total,
        runs=len(plain_totals),
        batch=int(example.shape[0]),
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

    sess = TorchBackend().open(path, options)
    sess.set_batch(batch)
    torch = sess.torch
    sync = (lambda: torch.cuda.synchronize(sess.device)) if sess.cuda else None
    table = torch_layer_table(sess.model, sess.x, cfg, synchronize=sync)
    return {
        **table,
        "backend": "torch",
        "model": str(path),
        "input_shape": [batch, *sess.spec.input_shape],
        "env": {"torch": torch.__version__, "device": str(sess.device), "threads": torch.get_num_threads()},
    }


# ---------------------------------------------------------------------------- onnxruntime
def module_name(node_name: str) -> str | None:
    """PyTorch module name from a TorchScript-exporter node name, or None.

    ``/features/features.0/Conv`` -> ``features.0``; ``/layer1/layer1.0/conv1/Conv`` ->
    ``layer1.0.conv1``; ``/classifier/Gemm`` -> ``classifier``. Each scope is either the
    qualified name of the submodule (children of containers) or its attribute name.
    """
    parts = node_name.split("/")
    if len(parts) < 3 or parts[0] != "" or not all(parts[1:]):
        return None
    name = ""
    for scope in parts[1:-1]:
        name = scope if (name and scope.startswith(name + ".")) else (f"{name}.{scope}" if name else scope)
    return name


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
            if n.op_type in ONNX_WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits
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


def onnx_conv_modules(graph) -> tuple[OnnxGraphIndex, dict[str, str]]:
    """The graph index and ``{conv/linear node: module name}``; one-line errors when there is
    no conv/linear node or a module name cannot be recovered."""
    idx = OnnxGraphIndex(graph)
    if not idx.weighted:
        raise EdgeslimError("the ONNX model has no conv or linear layers; a latency table times those")
    names: dict[str, str] = {}
    for n in idx.weighted:
        mod = module_name(n)
        if mod is None:
            raise EdgeslimError(
                f"cannot recover the PyTorch module name of ONNX node {n!r}; export with edgeslim export "
                "(TorchScript exporter, scoped node names like /layer1/layer1.0/conv1/Conv)"
            )
        names[n] = mod
    return idx, names


def attribute_nodes(graph, node_times: list[dict]) -> tuple[dict[str, float], dict[str, str]]:
    """Per-module time (us) from per-node profiler times (:func:`...ort.parse_profile` rows).

    Returns ``({module: us}, {module: profiled node})``. Raises :class:`EdgeslimError` when a
    conv/linear node has no module name, no profiled kernel, or two equally close ones.
    """
    idx, names = onnx_conv_modules(graph)
    best: dict[str, list[tuple[int, dict]]] = {}
    for row in node_times:
        if row.get("op") not in ORT_WEIGHT_KERNELS:
            continue
        origin = idx.origin(row["name"])
        hit = idx.weighted_node(origin) if origin is not None else None
        if hit is not None:
            best.setdefault(hit[0].name, []).append((hit[1], row))
    layers: dict[str, float] = {}
    source: dict[str, str] = {}
    for node_name, mod in names.items():
        cands = sorted(best.get(node_name, []), key=lambda c: c[0])
        if not cands:
            raise EdgeslimError(
                f"no profiled ONNX Runtime kernel maps to {node_name!r} (module {mod}); "
                "try --graph-opt basic or extended"
            )
        if len(cands) > 1 and cands[0][0] == cands[1][0]:
            raise EdgeslimError(
                f"two profiled kernels ({cands[0][1]['name']!r}, {cands[1][1]['name']!r}) map equally "
                f"well to {node_name!r}; cannot attribute their time (try --graph-opt basic)"
            )
        row = cands[0][1]
        layers[mod] = layers.get(mod, 0.0) + row["median_us"]  # a module run twice adds up
        source[mod] = row["name"]
    return layers, source


def ort_file_table(path: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Per-layer table of an ONNX file from ONNX Runtime's profiler (no PyTorch needed)."""
    onnx = require("onnx", "ort", "to map profiled ONNX nodes to layers")
    from edgeslim.bench.backends.ort import OrtBackend, parse_profile

    sess = OrtBackend().open(path, options)
    sess.set_batch(batch)
    graph = onnx.load(str(path), load_external_data=False).graph
    onnx_conv_modules(graph)  # refuse before measuring
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
            method=(
                "onnxruntime profiler (SessionOptions.enable_profiling) kernel_time per node, median over "
                "runs; each conv/linear module takes its fused kernel (Conv+BN+activation, NCHWc); fixed = "
                "the other kernels plus the time between kernels (median run of an unprofiled session "
                "minus all kernels, clamped at 0). "
                + (
                    f"Profiling made a run {profiled_ms - total:.4g} ms slower (median model_run {profiled_ms:.4g}"
                    f" ms vs {total:.4g} ms)."
                    if profiled_ms is not None
                    else ""
                )
            ),
            overhead={"profiled_run_ms": profiled_ms, "all_kernels_ms": kernels_ms},
        ),
        "total_ms": total,
        "backend": "onnxruntime",
        "model": str(path),
        "nodes": source,
        "env": {
            "onnxruntime": sess.ort.__version__,
            "providers": sess.sess.get_providers(),
            "graph_opt": options.get("graph_opt", "all"),
            "threads": options.get("threads"),
        },
    }


# ---------------------------------------------------------------------------- entry points
def layer_table(path: str, backend: str, batch: int, cfg: TimingConfig, options: dict) -> dict[str, Any]:
    """Measure a per-layer latency table of the model file with ``backend`` at ``batch``."""
    if backend == "torch":
        return torch_file_table(path, batch, cfg, options)
    if backend == "onnxruntime":
        if not str(path).lower().endswith(".onnx"):
            raise EdgeslimError(f"the onnxruntime backend needs an .onnx file; got {path}")
        return ort_file_table(path, batch, cfg, options)
    raise EdgeslimError(
        f"the {backend} backend cannot write a layer table; use --backend torch or onnxruntime "
        "(TensorRT per-layer profiles are not parsed; see docs/bench.md)"
    )


def write_layer_table(table: dict[str, Any], path: str | Path, force: bool = False) -> Path:
    """Write ``table`` as JSON atomically; refuses to overwrite without ``force``."""
    from edgeslim.utils.io import check_output_path, write_json

    out = check_output_path(path, force)
    write_json(out, table)
    return out
