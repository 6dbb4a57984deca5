"""The roofline cost model lives in :mod:`edgeslim.channels.cost` (below sparsity and bench); re-exported."""

from edgeslim.channels.cost import (
    ELEM_BYTES,
    LayerCost,
    LayerPrediction,
    Observation,
    Prediction,
    calibrate,
    predict_latency,
    scale_bytes,
)

__all__ = [
    "LayerCost",
    "ELEM_BYTES",
    "scale_bytes",
    "LayerPrediction",
    "Prediction",
    "predict_latency",
    "Observation",
    "calibrate",
]
