"""Export: ONNX checked in ONNX Runtime, channel-alignment audit, TensorRT engines and trtexec scripts.

Heavy packages (torch, onnx, onnxruntime, tensorrt) are imported inside the functions.
"""

from edgeslim.export.onnx_export import (
    DEFAULT_OPSET,
    OnnxExportResult,
    export_loaded,
    export_onnx,
    recipe_hash,
)
from edgeslim.utils.onnx_graph import read_metadata
from edgeslim.utils.parsing import parse_input_shape, parse_size

__all__ = [
    "DEFAULT_OPSET",
    "OnnxExportResult",
    "export_loaded",
    "export_onnx",
    "parse_input_shape",
    "parse_size",
    "read_metadata",
    "recipe_hash",
]
