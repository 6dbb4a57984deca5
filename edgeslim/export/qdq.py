"""INT8 calibration data and explicit quantization (Q/DQ ONNX), both from real images.

Two forms, both written by ONNX Runtime's static quantizer (:data:`STYLES`):

- ``tensorrt``: TensorRT 11 has no calibrators: INT8 must come from QuantizeLinear/
  DequantizeLinear nodes in the ONNX, in the form TensorRT takes: symmetric INT8 activations and
  weights (zero point 0), per-channel weight scales, FP32 weights followed by a Q/DQ pair, biases
  left in FP32. The same Q/DQ ONNX also builds on TensorRT 8.5-10.x (``--int8``), so one
  calibration serves every version. The export also saves the calibration images as ``.npy``
  (:func:`save_calibration_data`), which nothing of the export reads: for calibrating again
  elsewhere (:func:`load_calibration_data`, TensorRT <= 10's entropy calibrator in
  :func:`~edgeslim.export.trt.build_engine`). In ONNX Runtime this form runs slower than FP32: it
  is for TensorRT only.
- ``onnxruntime``: the form ORT's CPU kernels (and mobile execution providers) run as integer
  arithmetic: UInt8 activations with a zero point, INT8 weights stored as INT8 with per-channel
  scales, quantized biases, MinMax ranges (``benchmarks/ort_int8.py``: 2.1-3.4x faster than FP32
  for ResNet-18 and MobileNetV2 here, 0.85x for MobileNetV3-Small; Int8 activations were slower).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError, require
from edgeslim.export._quiet import quiet
from edgeslim.utils.io import atomic_path, check_output_path, nonfinite_as_words
from edgeslim.utils.scores import top1_accuracy, top1_agreement

log = logging.getLogger(__name__)

METHODS = ("entropy", "minmax", "percentile")
#: the Q/DQ forms :func:`quantize_qdq` writes: for TensorRT, or for ONNX Runtime's integer kernels
STYLES = ("tensorrt", "onnxruntime")
#: lowest opset of a Q/DQ model: per-channel QuantizeLinear/DequantizeLinear (their ``axis``) came in 13
INT8_MIN_OPSET = 13


def save_calibration_data(path: str | os.PathLike, x: np.ndarray, force: bool = False) -> Path:
    """Save normalized float32 NCHW calibration images as ``.npy`` (atomically)."""
    out = check_output_path(path, force)
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 4:
        raise EdgeslimError(f"calibration data must be NCHW images, got shape {arr.shape}")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return out


def load_calibration_data(path: str | os.PathLike) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(
            f"calibration data {p} does not exist; write it by exporting at precision int8", param="precision"
        )
    arr = np.load(p, allow_pickle=False)
    if arr.ndim != 4 or arr.dtype != np.float32:
        raise EdgeslimError(f"{p} is not float32 NCHW calibration data (shape {arr.shape}, {arr.dtype})")
    return arr


@dataclass
class QdqResult:
    path: Path
    method: str
    calib_images: int
    quantized_nodes: int
    #: INT8 (ORT) vs FP32 (ORT) on the calibration-free check images, per image for [N, classes]
    #: logits, per pixel for [N, classes, H, W] masks; None otherwise (a detector's has no top-1)
    top1_agreement: float | None
    max_abs_diff: float | None  #: over every output (None: nothing compared, every output empty)
    check_images: int
    accuracy_fp32: float | None = None  # on ``labels`` of the check images, when given
    accuracy_int8: float | None = None
    style: str = "tensorrt"  # one of STYLES
    #: output channels (axis 1, of every output) that vary in FP32 but not in INT8: values of another range
    #: share their scale (a detector's scores concatenated with its box coordinates round to one value)
    flat_channels: int | None = None
    #: what max_abs_diff is of, as in the FP32 check: the ``outputs``, or a softmax's ``log-probabilities``
    compared: str = "outputs"
    #: the outputs (ONNX names) that held no value on the check images (a detector that found nothing)
    empty_outputs: list[str] = field(default_factory=list)
    #: every output was empty: nothing was compared (max_abs_diff None), as in the FP32 check
    nothing_compared: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields; an infinite or NaN difference as the word ``inf`` / ``nan`` (as the table says it)."""
        d = nonfinite_as_words(asdict(self))
        d["path"] = str(self.path)
        return d


class _Reader:
    """ORT CalibrationDataReader over a float32 array, in chunks of ``batch``; with ``whole`` (a static
    batch) only whole chunks, else the last one partial (every image is read)."""

    def __init__(self, name: str, x: np.ndarray, batch: int, whole: bool = False):
        self.name, self.x, self.batch, self.whole, self.i = name, x, batch, whole, 0

    @property
    def images(self) -> int:
        """How many images the calibration reads."""
        return len(self.x) // self.batch * self.batch if self.whole else len(self.x)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.images:
            return None
        chunk = self.x[self.i : self.i + self.batch]
        self.i += self.batch
        return {self.name: chunk}

    def rewind(self) -> None:
        self.i = 0


def _static_batch(model_path: Path) -> int | None:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    d0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    return int(d0.dim_value) if d0.HasField("dim_value") and d0.dim_value > 0 else None


def _float_outputs(model: Any) -> int:
    """Drop the Quantize/Dequantize pair in front of each graph output (the quantizer rounds a last
    Gemm's or Conv's output, the logits themselves, to one INT8 scale), and the scales and zero points
    only the pair read (ONNX Runtime warned of them on every load); returns how many pairs."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    dropped = 0
    params: set[str] = set()  # the pairs' scales and zero points
    for out in [o.name for o in g.output]:
        dq = producer.get(out)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or sum(q.output[0] in n.input for n in g.node) != 1:
            continue
        value = q.input[0]  # the float value the pair stood for, now the output under its name
        params.update([*q.input[1:], *dq.input[1:]])
        g.node.remove(q)
        g.node.remove(dq)
        for vi in [v for v in g.value_info if v.name == value]:
            g.value_info.remove(vi)
        for n in g.node:
            n.input[:] = [out if i == value else i for i in n.input]
            n.output[:] = [out if o == value else o for o in n.output]
        dropped += 1
    unused = params - {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name in unused]:
        g.initializer.remove(init)
    return dropped


def quantize_qdq(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib: np.ndarray,
    *,
    check: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    method: str | None = None,
    style: str = "tensorrt",
    force: bool = False,
    postprocessed: bool = False,
    score_outputs: list[bool] | None = None,
) -> QdqResult:
    """Write a Q/DQ INT8 ONNX of ``style`` (:data:`STYLES`) calibrated on ``calib`` (ranges by
    ``method``: entropy for TensorRT, MinMax for ONNX Runtime by default) and compare it with
    FP32 on ``check`` (held-out images; defaults to ``calib``) in ONNX Runtime, each output as the FP32
    check compares it (:func:`~edgeslim.export.validate.output_difference`). What PyTorch returned
    (:class:`~edgeslim.export.onnx_export.OnnxExportResult`): ``postprocessed`` detections, and per output
    whether it may hold class scores (``score_outputs``; None: every output may, by its shape)."""
    q = require("onnxruntime.quantization", "for INT8 Q/DQ quantization")
    import onnx

    from edgeslim.export.validate import ort_session, output_difference, run_ort_all
    from edgeslim.utils.onnx_graph import output_tail

    if style not in STYLES:
        raise EdgeslimError(f"unknown INT8 style {style!r}; use one of {', '.join(STYLES)}")
    method = method or ("entropy" if style == "tensorrt" else "minmax")
    if method not in METHODS:
        raise EdgeslimError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    src = Path(onnx_path)
    out = check_output_path(out_path, force)
    batch = _static_batch(src)
    # a dynamic batch: equal chunks of at most 16 that cover every image (ONNX Runtime's entropy calibrator
    # stacks the chunks' outputs and failed on a partial last one, "inhomogeneous shape": 98 images)
    step = batch or max((d for d in range(1, min(16, len(calib)) + 1) if len(calib) % d == 0), default=1)
    if len(calib) < step or not len(calib):
        raise EdgeslimError(
            f"calib holds {len(calib)} images, fewer than the ONNX's fixed batch {step} (calibration runs whole "
            "batches): give more images, or a dynamic-batch ONNX",
            param="calib",
        )
    x = (check if check is not None else calib).astype(np.float32)
    check_step = batch or 1  # (a fixed-batch graph runs whole batches only; a dynamic one every image)
    if len(x) < check_step or not len(x):
        raise EdgeslimError(
            f"check holds {len(x)} images, fewer than the ONNX's fixed batch {check_step} (the INT8 check runs "
            "whole batches): give more images, or a dynamic-batch ONNX",
            param="check",
        )
    src_model = onnx.load(str(src), load_external_data=False)
    opset = max((o.version for o in src_model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < INT8_MIN_OPSET:  # (ONNX Runtime's quantizer writes it anyway: a raw INVALID_GRAPH on load)
        raise EdgeslimError(
            f"{src.name} is at opset {opset}; INT8 Q/DQ needs opset {INT8_MIN_OPSET} or later (per-channel "
            "axis): export it at opset 13 or later",
            param="opset",
        )
    name = src_model.graph.input[0].name
    tail = output_tail(src_model)  # kept in float: one INT8 scale cannot hold boxes and scores together
    reader = _Reader(name, calib.astype(np.float32), step, whole=batch is not None)
    cm = {"entropy": q.CalibrationMethod.Entropy, "minmax": q.CalibrationMethod.MinMax,
          "percentile": q.CalibrationMethod.Percentile}[method]  # fmt: skip
    with atomic_path(out) as tmp:
        with quiet("", "onnxruntime") as sink:
            if style == "tensorrt":
                act, extra = q.QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True,
                                                 "AddQDQPairToWeight": True, "QuantizeBias": False}  # fmt: skip
            else:
                act, extra = q.QuantType.QUInt8, {"WeightSymmetric": True}
            q.quantize_static(
                str(src), str(tmp), reader,
                quant_format=q.QuantFormat.QDQ, per_channel=True, activation_type=act,
                weight_type=q.QuantType.QInt8, calibrate_method=cm, extra_options=extra,
                nodes_to_exclude=tail,
            )  # fmt: skip
        log.debug("quantizer output: %s", sink.getvalue())
        qm = onnx.load(str(tmp))
        _float_outputs(qm)  # the graph's outputs themselves stay float (logits on 256 levels tie)
        n_q = sum(1 for n in qm.graph.node if n.op_type == "QuantizeLinear")
        if n_q == 0:
            raise EdgeslimError(
                f"ONNX Runtime inserted no Q/DQ nodes into {src.name}: the model has nothing to quantize; "
                "export it without precision int8",
                param="precision",
            )
        k = len(x) // check_step * check_step
        refs = run_ort_all(ort_session(src.read_bytes()), x[:k], batch, chunk=16)
        gots = run_ort_all(ort_session(qm.SerializeToString()), x[:k], batch, chunk=16)
        ref, got = refs[0], gots[0]  # the first output: the one whose top-1 is the prediction
        scores = score_outputs if score_outputs and len(score_outputs) == len(refs) else [True] * len(refs)
        diffs = []  # (each output compared as the FP32 check compares it: a softmax as log-probabilities)
        for r, g, sc in zip(refs, gots, scores, strict=True):
            found = output_difference(r, g, int(k), postprocessed=postprocessed, scores=sc, int8=True)
            if found is not None:
                diffs.append((float(found[0].max()), found[2]))
        flats = [flat_channels(r, g) for r, g in zip(refs, gots, strict=True)]  # every output: a mask's
        acc = [None, None]
        if labels is not None and scores[0] and ref.ndim == 2 and len(ref) == k:  # (one row per image)
            lab = np.asarray(labels)[:k]
            acc = [top1_accuracy(ref, lab), top1_accuracy(got, lab)]
        worst = max(diffs, key=lambda d: d[0], default=(None, "outputs"))
        result = QdqResult(
            out,
            method,
            reader.images,
            n_q,
            top1_agreement(ref, got, int(k)) if scores[0] else None,
            worst[0],
            int(k),
            *acc,
            style=style,
            flat_channels=None if all(f is None for f in flats) else sum(f or 0 for f in flats),
            compared=worst[1],
            empty_outputs=[o.name for o, r in zip(qm.graph.output, refs) if not r.size],
            nothing_compared=not diffs,
        )
        _stamp_validation(qm, result)
        onnx.save(qm, str(tmp))
    return result


def _stamp_validation(model: Any, result: QdqResult) -> None:
    """Replace the ``validation`` metadata the quantizer copied from the FP32 file (its check against
    PyTorch) with this INT8 check against the FP32 ONNX."""
    import json

    props = {p.key: p.value for p in model.metadata_props}
    check = {k: v for k, v in result.to_dict().items() if k != "path"}
    props["validation"] = json.dumps({"compared_with": "the FP32 ONNX in ONNX Runtime", **check})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def flat_channels(ref: np.ndarray, got: np.ndarray) -> int | None:
    """How many channels (axis 1) of ``ref`` vary (by more than 1e-3 of their own largest value)
    while ``got``'s take one value; None for an output without channels or not of floats."""
    if ref.ndim < 2 or ref.shape != got.shape or not ref.size or not np.issubdtype(ref.dtype, np.floating):
        return None
    r = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1).astype(np.float64)
    g = np.moveaxis(got, 1, 0).reshape(got.shape[1], -1)
    varies = (r.max(1) - r.min(1)) > 1e-3 * np.abs(r).max(1)  # (by more than float noise)
    return int((varies & (g.max(1) == g.min(1))).sum())
