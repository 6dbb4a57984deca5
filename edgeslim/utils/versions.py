"""The versions that explain a number: recorded in slim's report.json and bench's run.json (torch-free)."""

from __future__ import annotations

import importlib.metadata as md
import platform

#: distributions whose versions are recorded when installed
RUNTIMES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "tensorrt",
    "cuda-python",
    "cuda-bindings",
    "torch",
    "numpy",
)


def versions() -> dict[str, str]:
    """Python's, edgeslim's and each installed runtime's version (:data:`RUNTIMES`)."""
    from edgeslim import __version__

    out = {"python": platform.python_version(), "edgeslim": __version__}
    for dist in RUNTIMES:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
