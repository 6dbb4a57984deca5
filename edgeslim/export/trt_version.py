"""TensorRT version gates: pure functions of a version tuple, testable without TensorRT.

Facts (read from the TensorRT bindings and migration guides; see docs/export.md):
name-based I/O API and ``execute_async_v3`` from 8.5; ``EXPLICIT_BATCH`` ignored from 10.0;
``IInt8EntropyCalibrator2`` deprecated from 10.1; ``BuilderFlag.FP16/INT8`` deprecated from
10.12; all weak typing (precision flags, calibrators, trtexec ``--fp16/--int8/--best``)
removed in 11.0, where every network is strongly typed and trtexec runs with CUDA graphs,
spin-wait and without host/device transfers by default.
"""

from __future__ import annotations

import re

from edgeslim.errors import EdgeslimError

Version = tuple[int, int, int]

#: the form used when no TensorRT is importable: JetPack 6.1/6.2 ships TensorRT 10.3
DEFAULT_TARGET: Version = (10, 3, 0)
PRECISIONS = ("fp32", "fp16", "int8")


def parse_trt_version(text: str | int | tuple[int, ...]) -> Version:
    """``"10.3.0.26"``, ``"11"``, ``10``, ``(8, 5)`` -> ``(major, minor, patch)``."""
    if isinstance(text, tuple):
        parts = [int(p) for p in text[:3]]
    else:
        m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)*\s*", str(text))
        if not m:
            raise EdgeslimError(f"invalid TensorRT version {text!r}; use e.g. 10, 10.3 or 11")
        parts = [int(g) for g in m.groups() if g is not None]
    parts += [0] * (3 - len(parts))
    v = (parts[0], parts[1], parts[2])
    if v < (8, 5, 0):
        raise EdgeslimError(
            f"TensorRT {'.'.join(map(str, v))} is older than 8.5, which edgeslim needs "
            "(name-based I/O API); use JetPack 5.1 or newer"
        )
    return v


def weak_typing_available(v: Version) -> bool:
    """Precision builder flags (FP16/INT8) and calibrators exist (removed in 11)."""
    return v < (11, 0, 0)


def precision_flags_deprecated(v: Version) -> bool:
    return (10, 12, 0) <= v < (11, 0, 0)


def calibrator_available(v: Version) -> bool:
    return v < (11, 0, 0)


def calibrator_deprecated(v: Version) -> bool:
    return (10, 1, 0) <= v < (11, 0, 0)


def strongly_typed_flag_available(v: Version) -> bool:
    """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (accepted but implied on 11)."""
    return v >= (10, 0, 0)


def needs_explicit_batch_flag(v: Version) -> bool:
    """Networks must be created with ``EXPLICIT_BATCH`` before 10.0 (ignored from 10.0)."""
    return v < (10, 0, 0)


def trtexec_defaults_v11(v: Version) -> bool:
    """trtexec runs CUDA graphs, spin-wait and no data transfers by default (11.x)."""
    return v >= (11, 0, 0)


def trtexec_skip_inference_flag(v: Version) -> str:
    """Build-only flag: ``--buildOnly`` up to 8.5, ``--skipInference`` from 8.6."""
    return "--skipInference" if v >= (8, 6, 0) else "--buildOnly"


def precision_path(v: Version, precision: str) -> str:
    """How ``precision`` is realized on TensorRT ``v``.

    ``"fp32"``: plain network; ``"builder-flag"``: FP16 builder flag (TRT < 11);
    ``"calibrator"``: INT8 flag + IInt8EntropyCalibrator2 (TRT < 11); ``"autocast"``: FP16 ONNX
    from ModelOpt AutoCast, built strongly typed (TRT 11); ``"qdq"``: Q/DQ ONNX built strongly
    typed (TRT 11; also usable on 10.x).
    """
    if precision not in PRECISIONS:
        raise EdgeslimError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    if precision == "fp16":
        return "builder-flag" if weak_typing_available(v) else "autocast"
    return "calibrator" if calibrator_available(v) else "qdq"


def version_str(v: Version) -> str:
    return ".".join(str(p) for p in v)
