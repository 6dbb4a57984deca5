"""edgeslim: proximal network slimming, channel surgery, export and on-device benchmarks.

Heavy dependencies (torch, onnx, tensorrt) are imported lazily by the submodules that need
them, so ``import edgeslim`` and ``edgeslim bench`` work on a device without PyTorch.
"""

__version__ = "0.1.0"

from edgeslim.errors import EdgeslimError

__all__ = ["EdgeslimError", "__version__"]
