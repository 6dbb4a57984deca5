"""Shared helpers for the bench tests: small ONNX models exported from zoo VGGs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DENSE_CFG = [32, 32, "M", 64, 64, "M", 128, 128, "M"]  # vgg-small
THIN_CFG = [16, 16, "M", 32, 32, "M", 64, 64, "M"]  # a hand-thinned copy (half the channels)

#: makes `import torch` (and the modules named in its format) fail in a child process (proves the
#: device-side path needs no torch)
NO_TORCH_SHIM = """
import sys
for name in ("torch", {more}):
    sys.modules[name] = None  # import torch -> ImportError
"""


def export_vgg(cfg, path: Path, fixed_batch: bool = False) -> Path:
    import torch

    from edgeslim.models.vgg import VGG

    model = VGG(cfg, num_classes=10, in_channels=1).eval()
    dyn = None if fixed_batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(
        model,
        (torch.randn(1, 1, 28, 28),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes=dyn,
        opset_version=17,
        dynamo=False,
    )
    return path


def no_torch_env(tmp: Path, *also: str) -> dict:
    """The environment of a device install: ``import torch`` fails, and so does every module of ``also``."""
    shim = tmp / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(NO_TORCH_SHIM.format(more="".join(f"{m!r}, " for m in also)))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), root])
    env["EDGESLIM_NO_PROGRESS"] = "1"
    env["COLUMNS"] = "200"
    return env


PY = sys.executable


def quantize_qdq(fp32: Path, out: Path, **kw) -> Path:
    """An INT8 Q/DQ ONNX of ``fp32`` (a 1x28x28 ``input``: ONNX Runtime's static quantizer on 4 random
    calibration images); ``kw`` go to ``quantize_static`` (e.g. ``op_types_to_quantize``)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):  # noqa: ANN201 - onnxruntime's interface
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, **kw)
    return out
