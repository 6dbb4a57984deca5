"""On-device benchmarking: latency, memory, device profiles and roofline predictions.

Importable without PyTorch: top-level imports are numpy, pyyaml and pydantic only; runtimes
(onnxruntime, tensorrt, cuda-python, torch) and matplotlib are imported where they are used.
"""

from edgeslim.channels.cost import LayerCost, Prediction, calibrate, predict_latency
from edgeslim.channels.devices import DeviceProfile, list_profiles, load_profile

__all__ = [
    "DeviceProfile",
    "LayerCost",
    "Prediction",
    "calibrate",
    "list_profiles",
    "load_profile",
    "predict_latency",
]
