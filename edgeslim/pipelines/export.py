"""``export``: a model file or an architecture (+ weights) to ONNX/TensorRT, as a request and ``run``.

The export itself is :func:`edgeslim.export.pipeline.run_export` (its :class:`ExportRequest`
holds the export settings); this stage adds where the model comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    step: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Load ``model`` (a model file, or an architecture name with ``weights`` and ``num_classes``),
    refuse non-finite weights, and export it as ``req`` says; returns the export result.
    ``mean``/``std``: the input normalization, for a model that records none
    (:func:`~edgeslim.pipelines.source.set_normalization`). ``step``: each stage as it starts
    (:func:`~edgeslim.export.pipeline.run_export`)."""
    from edgeslim.export.pipeline import run_export
    from edgeslim.pipelines.source import check_finite_weights, load_model_or_arch, set_normalization
    from edgeslim.utils.sniff import sniff, trtexec_route

    if (
        req.trt and Path(model).is_file() and sniff(model) == "onnx"
    ):  # (a device without PyTorch: what it can do)
        from edgeslim.errors import EdgeslimError, Step

        bench = Step("bench", model=model, backend="trtexec")
        raise EdgeslimError(
            f"{model} is an ONNX model, and export builds TensorRT engines from the PyTorch model it came from: "
            f"{trtexec_route(model)}; or time it with {bench}",
            steps=(bench,),
        )
    loaded = load_model_or_arch(
        model,
        trust_pickle=trust_pickle,
        input_shape=req.input_shape,
        weights=weights,
        num_classes=num_classes,
    )
    check_finite_weights(loaded)
    set_normalization(loaded, mean, std)
    kwargs = {"say": say} if say is not None else {}
    return run_export(loaded, req, model_name=model, step=step, **kwargs)
