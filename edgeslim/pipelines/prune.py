"""``prune``: channel surgery on a model file or an architecture with weights, as a request and ``run``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice, Step, naming
from edgeslim.utils.fields import CheckedFields
from edgeslim.utils.io import ENGINE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass
class PruneRequest(CheckedFields):
    """What ``edgeslim prune`` needs: the model, where to write, and how to measure the deviation."""

    model: str
    output: Path
    #: channel multiple to keep; ``None``: the device profile's alignment
    round_to: int | None = None
    profile: str | None = None
    precision: str | None = None
    data: str | None = None
    data_dir: Path | None = None
    #: images for folding and the check; None: :func:`calib_count` (256, fewer for inputs larger than 64x64)
    calib: int | None = None
    input_shape: str | tuple[int, ...] | None = None  # "C,H,W" or (C, H, W)
    plot: Path | None = None
    trust_pickle: bool = False
    weights: Path | None = None
    force: bool = False
    #: classes of an architecture built by name (None: the data set's or the architecture's own)
    num_classes: int | None = None
    #: the input normalization (pixels / 255) of a model that records none: calibration and the checkpoint use it
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: one-shot pruning first: zero this fraction of the BN channels with the smallest |gamma|, whole
    #: coupled groups at a time (:func:`~edgeslim.sparsity.subgradient.threshold_prune`), then cut them
    ratio: float | None = None


#: output names of deployment formats, which a PyTorch checkpoint must not be written under -> the format
NOT_CHECKPOINT_SUFFIXES = {
    ".onnx": "an ONNX model", ".ort": "an ONNX Runtime model", **dict.fromkeys(ENGINE_SUFFIXES, "a TensorRT engine"),
    ".tflite": "a TensorFlow Lite model", ".safetensors": "a safetensors file (edgeslim reads those as weights only)",
}  # fmt: skip


def run(req: PruneRequest) -> dict[str, Any]:
    """Remove the zero-scale channels, fold their constants, verify, write the slim checkpoint.

    Outputs are checked before any work; returns the surgery report (with ``output``, ``plot``).
    """
    import torch

    from edgeslim.channels.devices import resolve_alignment
    from edgeslim.channels.graph import input_shape_named
    from edgeslim.checkpoint import check_not_rebuilt_from, rebuild_facts, save_model
    from edgeslim.models.yolo import deployed_output, is_ultralytics_model
    from edgeslim.pipelines.source import check_finite_weights, model_input_shape, set_normalization
    from edgeslim.surgery import CheckFailedError, compose_recipes, prune_with_report
    from edgeslim.surgery.prune import approximate_fold_line
    from edgeslim.utils.io import check_distinct, check_output_path, writing

    suffix = Path(req.output).suffix.lower()
    if (
        suffix in NOT_CHECKPOINT_SUFFIXES
    ):  # (a review: a torch checkpoint was written under .onnx, .engine, ...)
        what = NOT_CHECKPOINT_SUFFIXES[suffix]
        step = Step("export")
        exported = suffix not in (".tflite", ".safetensors")  # (what export makes from the .pt)
        raise EdgeslimError(
            f"output {req.output} ends in {suffix}, but prune writes a PyTorch checkpoint, not {what}: give it a .pt "
            "name" + (f", and make {what} from it with {step}" if exported else ""),
            param="output",
            steps=(step,) if exported else (),
        )
    # (its output may replace the model it reads, asked with force: prune X -o X; a plot never)
    check_distinct({"output": req.output, "plot": req.plot})
    check_distinct({"plot": req.plot}, {"model": req.model, "weights": req.weights})
    align = resolve_alignment(req.round_to, req.profile, req.precision)
    # written staged and published together: stopped, refused or failing, the earlier files stay as they
    # were and the folders it made go again (never one of each)
    with writing([p for p in (req.output, req.plot) if p], replace=req.force) as stage:
        output = check_output_path(req.output, req.force, "output")
        plot = check_output_path(req.plot, req.force, "plot") if req.plot else None
        loaded = load_traceable(req.model, req.trust_pickle, req.input_shape, req.weights, req.num_classes,
                                data=req.data, data_dir=req.data_dir)  # fmt: skip
        check_finite_weights(loaded)
        set_normalization(loaded, req.mean, req.std)
        if loaded.spec is None and loaded.kind == "pickle":
            raise EdgeslimError(
                f"{req.model} is a whole pickled module, which records no input shape, and the slim "
                "checkpoint needs one to rebuild the model; pass input_shape C,H,W (e.g. 3,32,32) or data (an "
                "image folder's with its data_dir)",
                param=("input_shape", "data", "data_dir"),
            )
        if loaded.spec is None:
            raise EdgeslimError(
                f"{req.model} has no architecture spec, so the slim model cannot be saved as a checkpoint; "
                "for a whole pickled module give its input shape, else give the architecture with weights"
            )
        # (output over the model read is fine for a self-contained checkpoint, not over what it rebuilds from)
        check_not_rebuilt_from({"output": req.output}, loaded.spec)
        shape = model_input_shape(loaded, req.input_shape)
        with naming("data"):  # (an unknown data set names the field it came from)
            calib, calib_desc = _calib(req.data, req.data_dir, req.calib, shape, loaded.meta)
        example = torch.zeros((1, *shape))
        with input_shape_named():  # (the example is the input_shape's: its fix names that)
            zeroed = (
                _ratio_prune(loaded.model, req.ratio, example, int(align["round_to"]))
                if req.ratio is not None
                else None
            )
            # a detector's deployed outputs count, not the maps it also returns; on a copy (sharing the layers'
            # tensors): a check that fails in float32 is re-run in float64 from the dense model
            try:  # (strict: a check measured wrong is one line, not a warning before it)
                res = prune_with_report(
                    loaded.model, example, round_to=int(align["round_to"]), calib_inputs=calib,
                    outputs=deployed_output(loaded.model), strict=True,
                )  # fmt: skip
            except CheckFailedError as exc:
                raise EdgeslimError(f"{exc}; nothing was written") from exc
        rep = res.report
        if line := approximate_fold_line(rep):  # (a review's UNet: 15% of its outputs' scale, told nothing)
            log.warning("%s", line)
        if zeroed is not None:
            rep["ratio_prune"] = zeroed
        rep["alignment"] = align
        rep["calibration"] = calib_desc
        recipe = compose_recipes(loaded.recipe, res.recipe)
        meta = {**loaded.meta, "surgery": {k: rep[k] for k in ("removed_channels", "params_before", "params_after",
                                                                "macs_before", "macs_after", "max_abs_diff")}}  # fmt: skip
        if (
            req.data
        ):  # the images surgery was checked on (it refuses data it cannot load): export validates on them too
            meta.update(
                data=req.data, data_dir=None if req.data_dir is None else str(Path(req.data_dir).resolve())
            )
        save_model(stage(output), res.model, loaded.spec, recipe=recipe, meta=meta)
        rep["output"] = str(output)
        rep.update(
            rebuild_facts(loaded.spec)
        )  # the slim checkpoint's trust_pickle and the file it rebuilds from
        rep["random_weights"] = loaded.kind == "architecture"  # a name without weights: nothing trained
        rep["ultralytics"] = is_ultralytics_model(
            res.model
        )  # (YOLO() takes no edgeslim checkpoint: the hint)
        if rep["bn_channels"] == 0:  # what normalizes it instead (LayerNorm: a ConvNeXt), for the hint
            from edgeslim.channels.norm import other_norms

            rep["other_norms"] = other_norms(loaded.model)
        if plot is not None:
            from edgeslim.surgery.plot import plot_channels

            plot_channels(rep, stage(plot))
            rep["plot"] = str(plot)
        return rep


def _ratio_prune(model: Any, ratio: float, example: Any, round_to: int) -> dict[str, Any]:
    """Zero ``ratio`` of ``model``'s BN channels by coupled group (smallest mean |gamma| first), each
    group's kept count a multiple of ``round_to`` (so surgery removes every zero); what it did, for the
    report (the check after compares the slim model with this zeroed one)."""
    from edgeslim.sparsity.subgradient import threshold_prune

    if not 0.0 < ratio < 1.0:
        raise EdgeslimError(f"ratio must be between 0 and 1 (a fraction of the BN channels), got {ratio}",
                            param="ratio")  # fmt: skip
    before = _zero_scales(model)  # (a pruned or slimmed model's zeros are in the ratio's count already)
    pr = threshold_prune(model, float(ratio), example_input=example, round_to=round_to)
    return {"ratio": float(ratio), "zeroed": _zero_scales(model) - before, "already_zero": before,
            "removable": pr["removable"], "total": pr["total"],
            "threshold": pr["threshold"]}  # fmt: skip


def _zero_scales(model: Any) -> int:
    """How many of ``model``'s BN channels have a zero scale (surgery removes them)."""
    from edgeslim.channels.norm import bn_layers

    return sum(int((m.weight == 0).sum()) for _, m in bn_layers(model))


def load_traceable(
    model: str,
    trust_pickle: bool,
    input_shape: Any,
    weights: Path | None = None,
    num_classes: int | None = None,
    use: str = "surgery",
    *,
    data: str | None = None,
    data_dir: Path | None = None,
) -> Any:
    """``model`` loaded for surgery (refused where it is compiled code). A model that records no input
    shape (a whole pickle, the user's own code) takes ``input_shape``, else the shape of ``data`` (an
    image folder's from its files in ``data_dir``, :func:`~edgeslim.pipelines.source.data_input`, as
    ``info`` does); one that records its own keeps it."""
    from edgeslim.checkpoint import looks_like_file
    from edgeslim.pipelines.source import (
        data_input,
        load_model_or_arch,
        records_no_size,
        refuse_compiled,
        spec_for_pickle,
    )

    refuse_compiled(str(model), use)  # whatever the trust: surgery and the channel graph cannot use it
    if input_shape is None and records_no_size(model) and (got := data_input(data, data_dir)):
        input_shape = got[0]
    loaded = load_model_or_arch(
        model, trust_pickle=trust_pickle, input_shape=input_shape, weights=weights, num_classes=num_classes
    )
    if loaded.kind == "pickle" and input_shape is None and looks_like_file(model):  # (a whole-module file)
        input_shape = (data_input(data, data_dir) or (None,))[0]
    if loaded.kind == "pickle" and input_shape is not None:
        loaded.spec = spec_for_pickle(loaded, input_shape)
    return loaded


#: pixels (per channel) of the default check's images: 256 images up to 64x64, fewer of larger ones
SURGERY_PIXELS = 256 * 64 * 64
#: pixels of one forward of the check (memory): 64 images up to 64x64, fewer of larger ones
BATCH_PIXELS = 64 * 64 * 64


def calib_count(shape: tuple[int, ...], n: int | None = None) -> int:
    """Images for surgery's folding and check: ``n`` where given, else 256 up to 64x64 and as many of a
    larger input as hold the same pixels, at least 8 (a 520x520 segmenter or a 640x640 detector: 8; each
    image gives every channel H x W values; 32 random ones in one forward took 24 s and 2.8 GB at 520x520)."""
    from edgeslim.export.validate import scaled_count

    return n if n is not None else scaled_count(shape, 256, SURGERY_PIXELS, 8)


def _calib(
    data: str | None, data_dir: Path | None, n: int | None, shape: tuple[int, ...], meta: dict[str, Any]
) -> tuple[Any, str]:
    """Calibration inputs: test images of ``data``, else of the data set the checkpoint records
    (normalized as in training, as export validates), else seeded random normal inputs (at most 32);
    :func:`calib_count` of them, in forwards of at most :data:`BATCH_PIXELS` pixels."""
    import torch

    from edgeslim.export.validate import real_inputs, scaled_count

    n = calib_count(shape, n)
    per_forward = scaled_count(shape, 64, BATCH_PIXELS, 1)
    batch = real_inputs(shape, data=data, data_dir=str(data_dir) if data_dir else None, meta=meta, n=n)  # type: ignore[arg-type]
    if batch is None:
        gen = torch.Generator().manual_seed(0)
        return list(torch.randn((min(n, 32), *shape), generator=gen).split(per_forward)), Notice(
            "random normal inputs (for real images, pass data)", "data"
        )
    for note in batch.notes:  # (a prune's report has no warnings of its own)
        log.warning("%s", note)
    return list(batch.x.split(per_forward)), batch.source  # (it says how many and how they were chosen)


def graph(
    model: str,
    input_shape: Any = None,
    trust_pickle: bool = False,
    weights: Path | None = None,
    num_classes: int | None = None,
) -> Any:
    """The channel dependency graph (:class:`edgeslim.channels.graph.DependencyGraph`) of a model
    file or an architecture, traced on one zero input of its input shape."""
    import torch

    from edgeslim.channels.graph import deployed_graph, input_shape_named
    from edgeslim.pipelines.source import model_input_shape

    loaded = load_traceable(model, trust_pickle, input_shape, weights, num_classes, use="the channel graph")
    shape = model_input_shape(loaded, input_shape)
    with input_shape_named():
        return deployed_graph(loaded.model, torch.zeros((1, *shape)))


def graph_summary(g: Any) -> dict[str, Any]:
    """JSON-able groups, barriers, BN groups and dense MACs/params of a dependency graph."""
    d = g.to_dict()
    d["bn_groups"] = [{"group": b.group_index, "size": b.size} for b in g.bn_groups()]
    d["macs"], d["params"] = g.macs(), g.params()
    return d
