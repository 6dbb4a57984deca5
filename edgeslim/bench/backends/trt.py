"""TensorRT backend: a serialized engine run through the name-based API (TRT >= 8.5).

Buffers and timing use cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``):
device-resident inputs (like trtexec ``--noDataTransfers``), CUDA events around
``execute_async_v3`` recorded for all iterations and synchronised once, optional CUDA graph.
Per-layer times for ``--layer-table`` come from ``trt.IProfiler`` (:meth:`TrtSession.profile_layers`).
NEVER RUN HERE (no GPU, no TensorRT on the development host); the error mapping is tested on
real TensorRT messages in tests/fixtures/trt_errors.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from edgeslim.bench.backends import Backend, Session, check_engine_trusted, concrete_shape, model_format
from edgeslim.bench.timing import TimingConfig, warmup
from edgeslim.errors import EdgeslimError, MissingDependencyError, Step, first_line, install_hint
from edgeslim.utils.tensorrt_log import ERROR, lines_since, tensorrt_logger

_VERSION = re.compile(r"expecting library version ([\w.]+) got ([\w.]+)")
_DEVICE = re.compile(r"incompatible device, expecting compute ([\d.]+) got compute ([\d.]+)")
_TAG = re.compile(r"(?:Version tag does not match|magic tag does not match|Serialization assertion)")
_PLUGIN = re.compile(
    r"IPluginCreator not found|getPluginCreator could not find plugin:? ?(\S+)?(?: version:? ?(\S+))?"
)


def explain_deserialize_error(log: str, path: str = "the engine") -> str:
    """Turn TensorRT's deserialization log into one line that says what to do."""
    if _PLUGIN.search(log):  # (its "Serialization assertion" is no version mismatch)
        named = next((p for p in _PLUGIN.finditer(log) if p.group(1)), None)
        what = (
            f"plugin {named.group(1)} (version {named.group(2)})"
            if named and named.group(2)
            else (f"plugin {named.group(1)}" if named else "plugin")
        )
        return (
            f"{path} uses a TensorRT {what}, which is not registered in this process: TensorRT's own "
            "plugins are loaded; a plugin of another library must be loaded first (LD_PRELOAD=/path/to/lib.so, "
            "or trtexec --staticPlugins=/path/to/lib.so)"
        )
    if m := _VERSION.search(log):
        return (
            f"{path} was built with TensorRT {m.group(2)} but this runtime is TensorRT {m.group(1)}; "
            "engines are tied to the TensorRT version: rebuild it on this device (edgeslim's TensorRT export, "
            "or trtexec --onnx=MODEL.onnx --saveEngine=...)"
        )
    if m := _DEVICE.search(log):
        return (
            f"{path} was built for a GPU of compute capability {m.group(2)} but this GPU is {m.group(1)}; "
            "engines are tied to the GPU: rebuild it on this device from the ONNX file"
        )
    if _TAG.search(log):
        return (
            f"{path} is not an engine this TensorRT can read (serialization version/tag mismatch: built by "
            "another TensorRT version, or not an engine file); rebuild it on this device from the ONNX file"
        )
    last = next((line for line in reversed(log.strip().splitlines()) if line.strip()), "no log output")
    return f"TensorRT could not deserialize {path}: {last.strip()}"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise MissingDependencyError(
                "cuda-python is not installed (for TensorRT buffers); install the one of this CUDA's version, "
                "e.g. pip install 'cuda-python>=12.6,<12.7' for CUDA 12.6 (on a Jetson "
                "deploy/jetson/setup_venv.sh does it)"
            ) from exc
    return cudart


def buffer_bytes(
    shape: list[int], itemsize: int, vector_dim: int = -1, components: int = 1, upper_bound: int | None = None
) -> int:
    """Bytes of one engine I/O buffer: ``shape`` with its vectorized dimension padded to the format's
    ``components`` (e.g. 32 for ``CHW32``), or TensorRT's ``upper_bound`` for an output whose shape
    depends on the data (a dimension of -1: NonZero, NMS)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        if upper_bound is None or upper_bound <= 0:
            raise EdgeslimError(
                f"an engine output has a shape that depends on the data ({dims}) and this TensorRT gives no "
                "upper bound for its size; bench it with backend trtexec"
            )
        return int(upper_bound)
    if 0 <= vector_dim < len(dims) and components > 1:
        dims[vector_dim] = -(-dims[vector_dim] // components) * components
    return max(math.prod(dims) * itemsize, 1)


def _check(ret):
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != 0:
        raise EdgeslimError(f"CUDA call failed with {err}; check the driver and that a GPU is visible")
    return rest[0] if len(rest) == 1 else rest


class TrtSession(Session):
    backend = "tensorrt"

    def __init__(
        self, trt, engine, cudart, use_cuda_graph: bool, plan_bytes: int, log: str, path: str = "the engine",
        logger: Any = None, log_start: int = 0,
    ) -> None:  # fmt: skip
        self.trt, self.engine, self.cudart = trt, engine, cudart
        self.ctx = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.use_cuda_graph = use_cuda_graph
        self.graph = self.graph_exec = None
        self.buffers: dict[str, int] = {}
        self.plan_bytes = plan_bytes
        self.log = log
        self.path, self.logger, self.log_start = path, logger, log_start
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def _failed(self, what: str) -> EdgeslimError:
        """TensorRT returned False (it raises nothing): its last error line says why."""
        errors = lines_since(self.logger, self.log_start, ERROR) if self.logger is not None else []
        why = first_line(errors[-1]) if errors else ""
        return EdgeslimError(f"TensorRT could not run {self.path} ({what} failed){': ' + why if why else ''}")

    def _execute(self) -> None:
        """One enqueue; a failed one is an error, never a (near-zero) time."""
        if not self.ctx.execute_async_v3(int(self.stream)):
            raise self._failed("execute_async_v3")

    def _free(self) -> None:
        self._drop_graph()
        for ptr in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers = {}

    def set_batch(self, batch: int) -> None:
        trt, eng, ctx = self.trt, self.engine, self.ctx
        self._free()
        for n in self.names:
            if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
                shape = concrete_shape(n, list(eng.get_tensor_shape(n)), batch)
                if ctx.set_input_shape(n, shape) is False:  # outside the optimization profile
                    lo, _, hi = eng.get_tensor_profile_shape(n, 0)
                    raise EdgeslimError(
                        f"input '{n}' shape {shape} is outside the engine's profile {list(lo)}..{list(hi)}; "
                        "rebuild the engine with trtexec --maxShapes covering the batch, or change batch",
                        param="batch",
                    )
        for n in self.names:
            shape = list(ctx.get_tensor_shape(n))
            dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(n)))
            vdim = getattr(eng, "get_tensor_vectorized_dim", lambda _n: -1)(n)
            comps = getattr(eng, "get_tensor_components_per_element", lambda _n: 1)(n)
            bound = (
                ctx.get_max_output_size(n)
                if min(shape, default=0) < 0 and hasattr(ctx, "get_max_output_size")
                else None
            )
            ptr = _check(self.cudart.cudaMalloc(buffer_bytes(shape, dtype.itemsize, vdim, comps, bound)))
            self.buffers[n] = ptr
            if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
                host = np.random.default_rng(0).standard_normal(shape).astype(dtype)
                _check(
                    self.cudart.cudaMemcpy(
                        ptr, host.ctypes.data, host.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                    )
                )  # (a vectorized format's padding stays as it is)
            if ctx.set_tensor_address(n, int(ptr)) is False:
                raise self._failed(f"set_tensor_address of '{n}'")
        if self.use_cuda_graph:
            self._capture()

    def _capture(self) -> None:
        """Capture one enqueue in a CUDA graph (after one plain enqueue, like trtexec)."""
        cu = self.cudart
        self._execute()
        _check(cu.cudaStreamSynchronize(self.stream))
        try:
            _check(
                cu.cudaStreamBeginCapture(self.stream, cu.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)
            )
            captured = self.ctx.execute_async_v3(int(self.stream))
            self.graph = _check(cu.cudaStreamEndCapture(self.stream))
            if not captured:  # (an empty graph would "run" in microseconds)
                raise self._failed("execute_async_v3 under CUDA graph capture")
            # (WithFlags: one signature in cuda-python 11 to 13; cudaGraphInstantiate takes a log buffer in 11)
            self.graph_exec = _check(cu.cudaGraphInstantiateWithFlags(self.graph, 0))
        except EdgeslimError:
            self._drop_graph()  # ops not permitted under capture: fall back, as trtexec does

    def _drop_graph(self) -> None:
        """Destroy the captured CUDA graph and its executable, where there are."""
        if self.graph_exec is not None:
            self.cudart.cudaGraphExecDestroy(self.graph_exec)
        if self.graph is not None:
            self.cudart.cudaGraphDestroy(self.graph)
        self.graph = self.graph_exec = None

    def _enqueue(self) -> None:
        if self.graph_exec is not None:
            _check(self.cudart.cudaGraphLaunch(self.graph_exec, self.stream))
        else:
            self._execute()

    def run(self) -> None:
        self._enqueue()
        _check(self.cudart.cudaStreamSynchronize(self.stream))

    def measure(self, cfg: TimingConfig) -> dict[str, list[float]]:
        """Host wall time per synchronous run, and GPU time from CUDA events (one sync per batch)."""
        from edgeslim.bench.timing import host_loop

        host = host_loop(self.run, cfg)
        cu = self.cudart
        n = len(host)
        events = [(_check(cu.cudaEventCreate()), _check(cu.cudaEventCreate())) for _ in range(n)]
        warmup(self.run, cfg)
        for a, b in events:
            _check(cu.cudaEventRecord(a, self.stream))
            self._enqueue()
            _check(cu.cudaEventRecord(b, self.stream))
        _check(cu.cudaStreamSynchronize(self.stream))
        device = [_check(cu.cudaEventElapsedTime(a, b)) * 1e-3 for a, b in events]
        for a, b in events:
            cu.cudaEventDestroy(a)
            cu.cudaEventDestroy(b)
        return {"host": host, "device": device}

    def profile_layers(self, cfg: TimingConfig) -> dict:
        """Per-layer times of ``max(cfg.min_iters, 20)`` executions through ``trt.IProfiler``
        (``report_layer_time`` per layer and run), CUDA graph bypassed. Same dict as trtexec's
        ``parse_layer_profile`` (and the same signature as ``TrtexecSession.profile_layers``).
        Call after :meth:`measure`: the profiler stays attached to the context."""
        import statistics

        runs = max(cfg.min_iters, 20)

        trt = self.trt
        times: dict[str, list[float]] = {}

        class _Profiler(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                times.setdefault(layer_name, []).append(float(ms))

        self._profiler = _Profiler()  # keep a reference while TensorRT holds it
        self.ctx.profiler = self._profiler
        for _ in range(runs):
            self._execute()  # never the CUDA graph: no per-layer times there
            _check(self.cudart.cudaStreamSynchronize(self.stream))
        if not times:
            raise EdgeslimError(
                "TensorRT reported no layer times; was the engine built with profiling verbosity none?"
            )
        layers = [
            {
                "name": name,
                "median_ms": statistics.median(v),
                "average_ms": statistics.fmean(v),
                "time_ms": sum(v),
            }
            for name, v in times.items()
        ]
        return {"runs": runs, "layers": layers}

    def info(self) -> dict:
        eng, trt = self.engine, self.trt
        out: dict = {
            "tensorrt": trt.__version__,
            "plan_bytes": self.plan_bytes,
            "cuda_graph": self.graph_exec is not None,
        }
        if hasattr(eng, "device_memory_size_v2"):
            out["activation_bytes"] = int(eng.device_memory_size_v2)
        elif hasattr(eng, "device_memory_size"):
            out["activation_bytes"] = int(eng.device_memory_size)
        stat = getattr(getattr(trt, "EngineStat", None), "TOTAL_WEIGHTS_SIZE", None)
        if stat is not None and hasattr(eng, "get_engine_stat"):  # TRT >= 10.14
            out["weight_bytes"] = int(eng.get_engine_stat(stat))
        mem = re.findall(r"\[MemUsageChange\][^\n]*", self.log)
        if mem:
            out["mem_usage_change"] = mem
        return out

    def close(self) -> None:
        self._free()
        self.cudart.cudaStreamDestroy(self.stream)


class TensorRTBackend(Backend):
    layer_table_producer = "edgeslim.bench.layers:tensorrt_file_table"
    name = "tensorrt"

    def open(self, path: str, options: dict) -> TrtSession:
        check_engine_trusted(path, options)  # before anything is imported or run
        if not os.path.isfile(path):
            raise EdgeslimError(f"engine file {path} does not exist")
        if model_format(path) == "onnx":  # (before the import: TensorRT installed would not help)
            from edgeslim.utils.sniff import trtexec_route

            step = Step("export", trt=True)  # (of the PyTorch model the ONNX came from)
            raise EdgeslimError(
                f"{path} is an ONNX file, and TensorRT's Python runtime runs a built engine: {trtexec_route(path)} "
                f"(or {step} from the PyTorch model, where TensorRT is importable), or time the ONNX file with "
                "backend trtexec (builds the engine) or onnxruntime",
                param="backend",
                steps=(step,),
            )
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingDependencyError(
                "tensorrt is not importable; on Jetson create the venv with --system-site-packages to see "
                f"JetPack's python3-libnvinfer (deploy/jetson/setup_venv.sh), on x86: {install_hint('trt')}"
            ) from exc
        cudart = _cudart()
        logger = tensorrt_logger(trt)
        start = len(logger.lines)  # this engine's lines come after
        with open(path, "rb") as f:
            plan = f.read()
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        log = "\n".join(lines_since(logger, start))
        if engine is None:
            raise EdgeslimError(explain_deserialize_error(log, path))
        return TrtSession(
            trt, engine, cudart, bool(options.get("cuda_graph")), len(plan), log, path, logger, start
        )
