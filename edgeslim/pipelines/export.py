"""``export``: a model file or an architecture (+ weights) to ONNX/TensorRT, as a request and ``run``.

The export itself is :func:`edgeslim.export.pipeline.run_export` (its :class:`ExportRequest`
holds the export settings); this stage adds where the model comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeslim.export.pipeline import ExportRequest

__all__ = ["ExportRequest", "run"]


def run(
    model: str,
    req: ExportRequest,
    *,
    trust_pickle: bool = False,
    weights: Path | None = None,
    say: Callable[[str], None] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Load ``model`` (a model file, or an architecture name with ``weights`` and ``num_classes``),
    refuse non-finite weights, and export it as ``req`` says; returns the export result."""
    from edgeslim.export.pipeline import run_export
    from edgeslim.pipelines.source import check_finite_weights, load_model_or_arch

    loaded = load_model_or_arch(
        model,
        trust_pickle=trust_pickle,
        input_shape=req.input_shape,
        weights=weights,
        num_classes=num_classes,
    )
    check_finite_weights(loaded)
    kwargs = {"say": say} if say is not None else {}
    return run_export(loaded, req, model_name=model, **kwargs)
