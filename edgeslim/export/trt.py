"""TensorRT engine builder on the name-based API (8.5-10.x), with the 11.x strongly typed path.

Never run here: no GPU and no ``tensorrt`` on the machines this was written on. The module
imports without TensorRT; every TensorRT call is inside a function, and the version decisions
are the pure functions of :mod:`edgeslim.export.trt_version`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError, first_line
from edgeslim.export.trt_version import (
    Version,
    calibrator_deprecated,
    needs_explicit_batch_flag,
    parse_trt_version,
    precision_flags_deprecated,
    precision_path,
    strongly_typed_flag_available,
    version_str,
)
from edgeslim.utils.io import atomic_write_bytes, atomic_write_text, check_output_path

log = logging.getLogger(__name__)


class TensorRTUnavailable(EdgeslimError):
    """``import tensorrt`` failed (no GPU stack here, or a venv without the system packages)."""


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line :class:`TensorRTUnavailable`."""
    try:
        import tensorrt
    except ImportError as exc:  # also OSError-like failures surface as ImportError from the bindings
        raise TensorRTUnavailable(
            f"tensorrt cannot be imported here ({exc}); on a Jetson create the venv with "
            "--system-site-packages (JetPack's python3-libnvinfer), elsewhere pip install 'tensorrt>=10,<11'"
        ) from exc
    return tensorrt


def installed_trt_version() -> Version | None:
    """The importable TensorRT's version, or None."""
    try:
        return parse_trt_version(import_tensorrt().__version__)
    except EdgeslimError:
        return None


@dataclass
class EngineBuildConfig:
    precision: str = "fp16"
    workspace: int = 1 << 30
    batch: int = 1
    max_batch: int = 32
    timing_cache: Path | None = None
    calib_data: np.ndarray | None = None  # normalized float32 NCHW images (INT8 calibrator, TRT <= 10)
    calib_cache: Path | None = None
    detailed: bool = True  # ProfilingVerbosity.DETAILED + engine inspector JSON
    opt_level: int = 3


@dataclass
class EngineBuildResult:
    path: Path
    trt_version: str
    precision: str
    precision_path: str
    build_s: float
    engine_bytes: int
    device_memory_bytes: int | None
    inspector_json: Path | None
    timing_cache: Path | None
    calib_cache: Path | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def onnx_has_qdq(onnx_path: str | os.PathLike) -> bool:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)


def onnx_has_fp16(onnx_path: str | os.PathLike) -> bool:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)


class _DeviceBuffer:
    """A CUDA allocation for calibration batches: cuda-python if installed (Jetson), else torch."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self._torch = None
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart
            self._rt = cudart
            err, self.ptr = cudart.cudaMalloc(nbytes)
            if int(err) != 0:
                raise EdgeslimError(f"cudaMalloc({nbytes}) failed with CUDA error {int(err)}")
        except ImportError:
            import torch

            self._rt = None
            self._torch = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            self.ptr = self._torch.data_ptr()

    def upload(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if self._rt is not None:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            (err,) = self._rt.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes, kind)
            if int(err) != 0:
                raise EdgeslimError(f"cudaMemcpy failed with CUDA error {int(err)}")
        else:
            import torch

            self._torch[: host.nbytes].copy_(torch.from_numpy(host.view(np.uint8).ravel()))

    def free(self) -> None:
        if self._rt is not None and self.ptr:
            self._rt.cudaFree(self.ptr)
            self.ptr = 0


def layers_json_path(engine: str | os.PathLike) -> Path:
    """Where :func:`build_engine` writes the engine inspector's per-layer report of ``engine``."""
    return Path(engine).with_suffix(".layers.json")


def make_entropy_calibrator(trt: Any, data: np.ndarray, batch: int, cache: Path | None, reuse: bool = False):
    """An ``IInt8EntropyCalibrator2`` over ``data`` (TensorRT <= 10), writing ``cache``; it reads it
    back only with ``reuse`` (no images given: a cache of another model's scales would be taken as
    this one's)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = np.ascontiguousarray(data, dtype=np.float32)
            self.batch, self.i = batch, 0
            self.buf = _DeviceBuffer(self.data[:batch].nbytes)

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i + self.batch > len(self.data):
                return None
            self.buf.upload(self.data[self.i : self.i + self.batch])
            self.i += self.batch
            return [int(self.buf.ptr)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if reuse and cache is not None and cache.is_file() else None

        def write_calibration_cache(self, blob: Any) -> None:
            if cache is not None:
                atomic_write_bytes(cache, bytes(blob))

    return EntropyCalibrator()


def _parser_errors(parser: Any) -> str:
    """The parser's errors as one line: description, node index and operator where the bindings have them."""
    msgs = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        try:
            msg = str(e.desc())
            if hasattr(e, "node") and e.node() >= 0:
                msg += f" at node {e.node()}"
            if hasattr(e, "node_operator") and e.node_operator():
                msg += f" ({e.node_operator()})"
        except Exception:  # noqa: BLE001 - older bindings: the error's own text
            msg = str(e)
        msgs.append(" ".join(msg.split()))
    return "; ".join(msgs) or "no details"


def _autocast_fp16(onnx_path: Path, out_dir: Path) -> Path:
    """FP16 ONNX via ModelOpt AutoCast (TensorRT 11 has no FP16 builder flag)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise EdgeslimError(
            "FP16 on TensorRT 11 needs an FP16 ONNX from ModelOpt AutoCast: pip install nvidia-modelopt, "
            "or run the trtexec script's AutoCast step"
        ) from exc
    import onnx

    m = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True)
    out = out_dir / (onnx_path.stem + ".fp16.onnx")
    onnx.save(m, str(out))
    return out


def _keep_tail_float(trt: Any, network: Any, onnx_path: Path) -> int:
    """Ask TensorRT to keep in FP32 the layers that compute :func:`edgeslim.utils.onnx_graph.output_tail`
    (implicit INT8 would give a detector's concat of box coordinates and scores one scale, which
    rounds the scores to 0); returns how many layers were marked. Never run here (no TensorRT)."""
    import onnx

    from edgeslim.utils.onnx_graph import output_tail_values

    values = output_tail_values(onnx.load(str(onnx_path), load_external_data=False))
    floats = (trt.float32, trt.float16)
    kept = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE) or not any(
            o.name in values for o in outs
        ):
            continue
        if any(o.dtype not in floats for o in outs):  # (index and shape math: no float precision to keep)
            continue
        try:
            layer.precision = trt.float32
            for j in range(len(outs)):
                layer.set_output_type(j, trt.float32)
        except (RuntimeError, TypeError, ValueError):  # a layer whose precision cannot be set
            continue
        kept += 1
    return kept


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    cfg: EngineBuildConfig | None = None,
    *,
    force: bool = False,
) -> EngineBuildResult:
    """Build and save a serialized engine; returns sizes, build time and where the artifacts are."""
    from edgeslim.utils.tmpfiles import temporary_folder

    trt = import_tensorrt()
    cfg = cfg or EngineBuildConfig()
    v = parse_trt_version(trt.__version__)
    out = check_output_path(engine_path, force, "engine_path")
    src = Path(onnx_path)
    notes: list[str] = []
    how = precision_path(v, cfg.precision)
    qdq = onnx_has_qdq(src)
    if cfg.precision == "int8" and qdq:
        how = "qdq"
    if how == "calibrator" and cfg.calib_data is None and not (cfg.calib_cache and cfg.calib_cache.is_file()):
        raise EdgeslimError(
            "INT8 calibration needs real images (calib_data) or an existing calibration cache (calib_cache)",
            param="data",
        )
    if how == "qdq" and not qdq:
        raise EdgeslimError(
            f"TensorRT {version_str(v)} builds INT8 only from a Q/DQ ONNX; write one (model.int8.qdq.onnx) "
            "by exporting at precision int8",
            param="precision",
        )
    if how in ("builder-flag",) and precision_flags_deprecated(v):
        notes.append(f"BuilderFlag.FP16 is deprecated since TensorRT 10.12 (building with {version_str(v)})")
    if how == "calibrator" and calibrator_deprecated(v):
        notes.append("IInt8EntropyCalibrator2 is deprecated since TensorRT 10.1; the Q/DQ ONNX path lasts")
    from edgeslim.utils.tensorrt_log import ERROR, lines_since, tensorrt_logger

    # the process's one logger, TensorRT's plugins registered (EfficientNMS_TRT)
    logger = tensorrt_logger(trt)
    log_start = len(logger.lines)
    builder = trt.Builder(logger)
    with temporary_folder("edgeslim-trt-") as tmp:
        if how == "autocast" and not onnx_has_fp16(src):
            src = _autocast_fp16(src, Path(tmp))
        flags = 0
        if needs_explicit_batch_flag(v):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        # 11.x: every network is strongly typed (the flag is accepted and implied). 10.x keeps weak
        # typing here, because the FP16/INT8 builder flags are illegal on a strongly typed network.
        if v >= (11, 0, 0) and strongly_typed_flag_available(v):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(src)):
            raise EdgeslimError(f"TensorRT's ONNX parser rejected {src.name}: {_parser_errors(parser)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = cfg.opt_level
    if cfg.detailed:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if how == "builder-flag":
        if getattr(builder, "platform_has_fast_fp16", True) is False:
            notes.append("this GPU has no fast FP16; TensorRT will mostly pick FP32 kernels")
        config.set_flag(trt.BuilderFlag.FP16)
    elif how in ("calibrator", "qdq") and v < (11, 0, 0):
        if getattr(builder, "platform_has_fast_int8", True) is False:
            raise EdgeslimError("this GPU has no fast INT8 (e.g. Jetson Nano / TX2); build FP16 instead")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantized may run in FP16
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    others = [tuple(network.get_input(i).shape) for i in range(1, network.num_inputs)]
    if (
        any(int(d) < 0 for d in shape[1:])
        or any(int(d) < 0 for o in others for d in o)
        or (others and how == "calibrator")
    ):
        raise EdgeslimError(
            f"{src.name} has {network.num_inputs} input(s), the first of shape {list(shape)}: the TensorRT build "
            "here makes a profile for the first input's batch only and calibrates one input; build this one "
            "with trtexec --minShapes/--optShapes/--maxShapes"
        )
    profile = None
    if shape and shape[0] == -1:
        c_hw = tuple(shape[1:])
        profile = builder.create_optimization_profile()
        hi = max(cfg.max_batch, cfg.batch)
        profile.set_shape(inp.name, (1, *c_hw), (cfg.batch, *c_hw), (hi, *c_hw))
        config.add_optimization_profile(profile)
    calib = None
    if how == "calibrator":
        kept = _keep_tail_float(trt, network, src)
        if kept:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            notes.append(f"{kept} layers between the last weighted layers and the outputs asked to stay FP32")
        data = cfg.calib_data if cfg.calib_data is not None else np.zeros((cfg.batch, *shape[1:]), np.float32)
        calib = make_entropy_calibrator(
            trt,
            data,
            cfg.batch if shape[0] == -1 else int(shape[0]),
            cfg.calib_cache,
            reuse=cfg.calib_data is None,
        )
        config.int8_calibrator = calib
        if profile is not None:
            config.set_calibration_profile(profile)
    tc_bytes = cfg.timing_cache.read_bytes() if cfg.timing_cache and cfg.timing_cache.is_file() else b""
    cache = config.create_timing_cache(tc_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if calib is not None:
        calib.buf.free()
    if plan is None:
        errors = lines_since(logger, log_start, ERROR)
        why = f" ({first_line(errors[-1])[:300]})" if errors else ""
        raise EdgeslimError(
            f"TensorRT failed to build the engine{why}; try a larger workspace or precision fp32",
            param=("workspace", "precision"),
        )
    blob = bytes(memoryview(plan))
    atomic_write_bytes(out, blob)
    if cfg.timing_cache is not None:
        atomic_write_bytes(cfg.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(blob)
    mem = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", None)
    insp_path = None
    if cfg.detailed:
        inspector = engine.create_engine_inspector()
        insp_path = layers_json_path(out)
        atomic_write_text(insp_path, inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    for n in notes:
        log.warning(n)
    return EngineBuildResult(
        path=out, trt_version=version_str(v), precision=cfg.precision, precision_path=how, build_s=build_s,
        engine_bytes=len(blob), device_memory_bytes=int(mem) if mem is not None else None,
        inspector_json=insp_path, timing_cache=cfg.timing_cache,
        calib_cache=cfg.calib_cache if how == "calibrator" else None, warnings=notes,
    )  # fmt: skip
