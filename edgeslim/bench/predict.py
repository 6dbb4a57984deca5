"""The roofline cost model lives in :mod:`edgeslim.channels.cost` (below sparsity and bench); re-exported."""

from edgeslim.channels.cost import (
    ELEM_BYTES,
    LayerCost,
    LayerPrediction,
    Observation,
    Prediction,
    calibrate,
    model_precision,
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
    "model_precision",
    "Observation",
    "calibrate",
]
