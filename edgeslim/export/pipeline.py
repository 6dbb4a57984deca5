"""The whole ``edgeslim export`` run as one library call: ONNX, checks, audit, TensorRT/trtexec, .ort."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import EdgeslimError, Notice, naming
from edgeslim.utils.io import (
    ENGINE_SUFFIXES,
    Staging,
    atomic_write_text,
    check_distinct,
    check_output_path,
    writing,
)

if TYPE_CHECKING:
    from edgeslim.checkpoint import LoadedModel

log = logging.getLogger(__name__)


#: ONNX exporters ``export_onnx`` takes, and devices the PyTorch reference may run on
EXPORTERS, COMPARE_DEVICES = ("auto", "torchscript", "dynamo"), ("cpu", "cuda")
#: lowest opset the exporter writes (the highest is the installed onnx package's)
MIN_OPSET = 9
#: what a model loaded from these carries a surgery recipe in when surgery cut it (else: dense)
RECIPE_KINDS = ("checkpoint", "architecture", "architecture+weights")


def _carries_recipe(loaded: Any) -> bool:
    """Whether ``loaded`` would carry a surgery recipe had surgery cut it: an edgeslim checkpoint or an
    architecture built from code; not a whole pickle (also named ``pickle:PATH`` or ``yolo:best.pt``),
    TorchScript or torch.export file."""
    from edgeslim.models.registry import source_file

    arch = loaded.spec.arch if loaded.spec is not None else ""
    return loaded.kind in RECIPE_KINDS and not (loaded.kind != "checkpoint" and source_file(arch))


def _positive_int(name: str, val: object) -> int:
    if isinstance(val, bool) or not isinstance(val, int) or val < 1:
        raise EdgeslimError(f"{name} must be an integer >= 1, got {val!r}", param=name)
    return val


@dataclass
class ExportRequest:
    """Everything one export does; :meth:`validate` (run on construction) refuses inconsistent values."""

    onnx_path: Path | None = None
    opset: int = 17
    dynamic_batch: bool = False
    input_shape: str | tuple[int, ...] | None = None  # "C,H,W" or (C, H, W)
    batch: int = 1
    max_batch: int = 32
    no_simplify: bool = False
    exporter: str = "auto"
    no_validate: bool = False
    #: images of the ORT check; None: 64 up to 64x64, as many larger ones as hold the same pixels, at least 16
    n_validate: int | None = None
    data_name: str | None = None
    data_dir: Path | None = None
    compare_device: str = "cpu"
    trt: bool = False
    precision: str = "fp16"
    workspace: str = "1G"
    engine_path: Path | None = None
    timing_cache: Path | None = None
    trt_version: str | None = None
    #: INT8 calibration images; None: 512 up to 112x112, as many larger ones as hold the same pixels, at least 64
    calib_images: int | None = None
    to_ort: bool = False
    #: also write the network cut to uniform widths (NAME.w50.onnx, NAME.w25.onnx), channel counts
    #: multiples of this: what calibrates a latency table measured on the device
    width_models: int | None = None
    #: cut the width models as a ``zero_invariant`` slim run removes channels (those a squeeze-excitation
    #: gate multiplies too): the removability of the run the table is for
    zero_invariant: bool = False
    #: also write the model (a YOLO) as a checkpoint ultralytics loads, ``YOLO(path)``, in half precision as
    #: ultralytics stores it (:func:`edgeslim.models.yolo.save_ultralytics_checkpoint`)
    ultralytics_path: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line :class:`EdgeslimError` for values out of range or inconsistent."""
        from edgeslim.export.qdq import INT8_MIN_OPSET
        from edgeslim.export.trt_version import PRECISIONS, parse_trt_version
        from edgeslim.utils.fields import check_fields
        from edgeslim.utils.parsing import parse_input_shape, parse_size

        check_fields(self)

        for name in ("batch", "max_batch", "n_validate", "calib_images"):
            if getattr(self, name) is not None or name in ("batch", "max_batch"):
                _positive_int(name, getattr(self, name))
        if self.width_models is not None:
            _positive_int("width_models", self.width_models)
        elif self.zero_invariant:
            raise EdgeslimError(
                "zero_invariant says how the width models are cut; add width_models (or drop it)",
                param=("zero_invariant", "width_models"),
            )
        if self.dynamic_batch and self.max_batch < self.batch:
            raise EdgeslimError(
                f"max_batch ({self.max_batch}) is below batch ({self.batch}), the optimal batch of "
                "the dynamic profile; raise the first or lower the second",
                param=("max_batch", "batch"),
            )
        if isinstance(self.opset, bool) or not isinstance(self.opset, int):
            raise EdgeslimError(f"opset must be an integer, got {self.opset!r}", param="opset")
        try:
            import onnx

            top = int(onnx.defs.onnx_opset_version())
        except ImportError:  # the export itself will say onnx is missing
            top = self.opset
        if not MIN_OPSET <= self.opset <= top:
            raise EdgeslimError(
                f"opset {self.opset} is out of range; use {MIN_OPSET}..{top} (17 is what "
                "TensorRT 8.5+ and ONNX Runtime both take)",
                param="opset",
            )
        for name, val, allowed in (("precision", self.precision, PRECISIONS), ("exporter", self.exporter, EXPORTERS),
                                   ("compare_device", self.compare_device, COMPARE_DEVICES)):  # fmt: skip
            if val not in allowed:
                raise EdgeslimError(f"{name} must be one of {', '.join(allowed)}, got {val!r}", param=name)
        for name, what in (("calib_images", "calibration"), ("n_validate", "check")):
            n = getattr(self, name)
            if (
                n is not None and self.precision == "int8" and not self.dynamic_batch and n < self.batch
            ):  # (one name each: the CLI's; a default is made a multiple of the batch)
                raise EdgeslimError(
                    f"{name} {n} is below the fixed batch {self.batch}: the INT8 {what} runs whole batches; raise "
                    "it, or export with dynamic_batch",
                    param=(name, "batch", "dynamic_batch"),
                )
        if self.precision == "int8" and self.opset < INT8_MIN_OPSET:  # (ONNX Runtime: a raw INVALID_GRAPH)
            raise EdgeslimError(
                f"precision int8 needs opset {INT8_MIN_OPSET} or later (the per-channel Q/DQ nodes' axis came in "
                f"opset 13), got {self.opset}; raise it (17 is what TensorRT 8.5+ and ONNX Runtime both take)",
                param=("precision", "opset"),
            )
        with naming("workspace"):
            parse_size(self.workspace)
        if self.input_shape is not None:
            parse_input_shape(self.input_shape)
        if self.trt_version is not None:
            parse_trt_version(self.trt_version)
        if self.onnx_path is not None and Path(self.onnx_path).suffix != ".onnx":
            raise EdgeslimError(f"onnx_path {self.onnx_path} should end in .onnx", param="onnx_path")
        if self.ultralytics_path is not None and not _ultralytics_suffix(self.ultralytics_path):
            raise EdgeslimError(
                f"ultralytics_path {self.ultralytics_path} should end in .pt (ultralytics loads checkpoints by "
                "that name)",
                param="ultralytics_path",
            )


def _ultralytics_suffix(path: Path) -> bool:
    """Whether ``path`` ends as ultralytics' loader asks (:data:`edgeslim.models.yolo.CHECKPOINT_SUFFIXES`)."""
    from edgeslim.models.yolo import CHECKPOINT_SUFFIXES

    return Path(path).suffix.lower() in CHECKPOINT_SUFFIXES


#: INT8 whose top-1 class agrees with FP32 on fewer held-out images than this is warned about
INT8_AGREEMENT_WARN = 0.9


def _default_onnx(loaded: LoadedModel, model_name: str) -> Path:
    if loaded.path is not None:
        return Path(loaded.path).with_suffix(".onnx")
    return Path(model_name.replace(":", "_") + ".onnx")


def _sibling(onnx: Path, suffix: str) -> Path:
    return onnx.with_name(onnx.stem + suffix)


def width_path(onnx: Path, fraction: float) -> Path:
    """Where the export of ``onnx``'s network at a uniform ``fraction`` of its widths goes (``.w50.onnx``)."""
    return _sibling(onnx, f".w{round(fraction * 100)}.onnx")


def _width_cuts(
    loaded: LoadedModel,
    shape: tuple[int, int, int],
    fractions: tuple[float, ...],
    round_to: int,
    zero_invariant: bool = False,
) -> dict[float, Any]:
    """The model cut to each uniform width (:func:`edgeslim.surgery.widths.uniform_widths`)."""
    import torch

    from edgeslim.surgery.widths import uniform_widths

    try:
        cut = uniform_widths(loaded.model, torch.zeros(1, *shape), fractions, round_to=round_to,
                             zero_invariant=zero_invariant)  # fmt: skip
    except EdgeslimError as exc:
        raise EdgeslimError(
            f"width_models cuts the model's channel groups with surgery, which cannot cut {loaded.described} "
            f"({exc}); give the model as a checkpoint or an architecture with weights",
            param="width_models",
        ) from exc
    dense = sum(p.numel() for p in loaded.model.parameters())
    whole = [f for f, m in cut.items() if sum(p.numel() for p in m.parameters()) >= dense]
    if whole:  # (a trial's multiple of 1000 wrote two copies of the dense network named 50% and 25%)
        raise EdgeslimError(
            f"width_models {round_to} cuts nothing at {whole[0]:.0%} of the widths (every group rounds back up to "
            "its whole size): give the slim run's channel multiple (16 host-cpu, 8 FP16 TensorRT, 32 INT8)",
            param="width_models",
        )
    return cut


def _export_widths(
    loaded: LoadedModel,
    req: ExportRequest,
    shape: tuple[int, int, int],
    paths: dict[float, Path],
    cut: dict[float, Any],
    inputs: Any,
) -> list[dict[str, Any]]:
    """Export the cut models, checked in ONNX Runtime as the model itself; their metadata names the
    fraction, multiple and removability (``zero_invariant``), and their recipe hash the model they were
    cut from and the cut (not ``dense``). Each entry says what the cut kept: ``params_kept``, its share
    of the model's parameters, and ``gated_kept``, the BN channels a squeeze-excitation gate multiplies
    that it keeps at every width (without ``zero_invariant``: 61% of an EfficientNet-B0's parameters
    at 50% width, a trial read "50% width" as half the network)."""
    import torch

    from edgeslim.export.onnx_export import export_onnx, recipe_hash
    from edgeslim.sparsity.resource import removal_candidates

    rounding = int(req.width_models or 1)
    dense = sum(p.numel() for p in loaded.model.parameters())
    gated = removal_candidates(loaded.model, torch.zeros(1, *shape), bool(req.zero_invariant))["gated"]
    out = []
    for f, model in cut.items():
        width = {"fraction": f, "round_to": rounding, "zero_invariant": bool(req.zero_invariant)}
        export_onnx(
            model, paths[f], shape, opset=req.opset, dynamic_batch=req.dynamic_batch, batch=req.batch,
            simplify=not req.no_simplify, validate=not req.no_validate, inputs=inputs, force=req.force,
            exporter=req.exporter, arch=loaded.spec.arch if loaded.spec else loaded.kind,
            recipe={"cut_from": recipe_hash(loaded.recipe), "uniform_width": width},
            meta={**loaded.meta, "uniform_width": width},
        )  # fmt: skip
        params = sum(p.numel() for p in model.parameters())
        out.append({**width, "path": str(paths[f]), "params": params,
                    "params_kept": params / dense if dense else 1.0, "gated_kept": gated})  # fmt: skip
    return out


#: pixels of the default INT8 calibration images: 512 up to 112x112
INT8_CALIB_PIXELS = 512 * 112 * 112


def image_counts(req: ExportRequest, shape: tuple[int, ...]) -> ExportRequest:
    """``req`` with its default image counts (None) set for ``shape``: the check 64 images up to 64x64, the
    INT8 calibration 512 up to 112x112, as many larger ones as hold the same pixels, at least 16 and 64 (a
    512x512 segmenter's check held 64 images at once, 8.3 GB; an INT8 YOLO at 640 would have read 576);
    a fixed-batch INT8 export's, whole batches."""
    from edgeslim.export.validate import check_images, scaled_count

    def whole(n: int) -> int:
        fixed = req.precision == "int8" and not req.dynamic_batch
        return -(-n // req.batch) * req.batch if fixed else n

    return replace(
        req,
        n_validate=req.n_validate if req.n_validate is not None else whole(check_images(shape)),
        calib_images=(
            req.calib_images
            if req.calib_images is not None
            else whole(scaled_count(shape, 512, INT8_CALIB_PIXELS, 64))
        ),
    )


def run_export(
    loaded: LoadedModel,
    req: ExportRequest,
    *,
    model_name: str = "model",
    say: Callable[[str], None] = log.warning,
    step: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Run the export described by ``req``; returns a JSON-able dict of everything written and measured.
    ``step(done, total, what)`` hears each stage as it starts (the width models, INT8 calibration, the
    TensorRT build, the ORT conversion) and the ONNX export with its check once it is done (a refusal of the
    input comes alone); a review's INT8 YOLO ran 64 s silent.

    All output paths are checked before any work, so a refused overwrite leaves nothing half-done.
    """
    from edgeslim.checkpoint import check_not_rebuilt_from
    from edgeslim.export.audit import audit_onnx
    from edgeslim.export.onnx_export import check_dynamic_batch, export_onnx
    from edgeslim.export.ort_mobile import operator_config_path
    from edgeslim.export.trt import installed_trt_version, layers_json_path
    from edgeslim.export.trt_version import DEFAULT_TARGET, parse_trt_version, precision_path
    from edgeslim.export.validate import all_empty, cuda_reference, real_inputs
    from edgeslim.models.yolo import fp16_overflow, is_ultralytics_model
    from edgeslim.utils.parsing import parse_input_shape, parse_size

    if req.input_shape is None and loaded.input_shape is None:
        raise EdgeslimError(
            f"{loaded.path} is {loaded.described} that records no input size; pass input_shape C,H,W",
            param="input_shape",
        )
    req.validate()  # again: the fields may have changed since construction
    if req.ultralytics_path is not None and not is_ultralytics_model(loaded.model):
        raise EdgeslimError(
            f"ultralytics_path writes a checkpoint of an ultralytics YOLO, and {loaded.path or model_name} is "
            f"{loaded.described} of a {type(loaded.model).__name__}; drop ultralytics_path",
            param="ultralytics_path",
        )
    if req.ultralytics_path is not None and (overflow := fp16_overflow(loaded.model)):
        raise EdgeslimError(  # (before the ONNX is made: the export without it keeps float32)
            f"{overflow}; export without ultralytics_path and deploy the ONNX (float32)",
            param="ultralytics_path",
        )
    check_dynamic_batch(loaded, req.dynamic_batch, req.batch)
    # (the spec's size, or the one a torch.export program was exported for)
    shape = parse_input_shape(req.input_shape if req.input_shape is not None else loaded.input_shape)
    asked_calib, asked_counts = (
        req.calib_images is not None,
        req.calib_images is not None or req.n_validate is not None,
    )
    req = image_counts(req, shape)
    trained = tuple(loaded.spec.input_shape) if loaded.spec is not None and loaded.meta.get("data") else None
    early: list[Notice] = []  # said once the model runs on the shape (a refusal of it comes alone)
    if trained is not None and tuple(shape) != trained:  # (a slim run's budget priced the trained size)
        early.append(Notice(f"{model_name} was trained at {'x'.join(map(str, trained))}; exported at input_shape "
                            f"{'x'.join(map(str, shape))}, its accuracy, MACs and latency differ from those of "
                            "the run", "input_shape"))  # fmt: skip
    workspace = parse_size(req.workspace)
    onnx_path = Path(req.onnx_path) if req.onnx_path else _default_onnx(loaded, model_name)
    if onnx_path.suffix != ".onnx":
        raise EdgeslimError(f"onnx_path {onnx_path} should end in .onnx", param="onnx_path")
    installed = installed_trt_version() if req.trt else None
    target = parse_trt_version(req.trt_version) if req.trt_version else (installed or DEFAULT_TARGET)
    int8 = req.precision == "int8"  # TensorRT's Q/DQ ONNX with trt, else an ONNX Runtime INT8 model
    ort_int8 = int8 and not req.trt
    outputs = [onnx_path]
    engine = req.engine_path or _sibling(onnx_path, f".{req.precision}.engine")
    script = engine.with_name(engine.stem + ".trtexec.sh")
    qdq_path, calib_path = _sibling(onnx_path, ".int8.qdq.onnx"), _sibling(onnx_path, ".calib.npy")
    if req.trt and engine.suffix.lower() not in ENGINE_SUFFIXES:
        raise EdgeslimError(
            f"engine_path {engine} should end in {' or '.join(ENGINE_SUFFIXES)} (a TensorRT engine)",
            param="engine_path",
        )
    if req.trt:  # the script's trtexec writes the engine where it is named: it must be free here too
        outputs += [engine, layers_json_path(engine)] if installed else [script, engine]
        outputs += [qdq_path, calib_path] if int8 else []
    ort_int8_path = _sibling(onnx_path, ".int8.onnx")
    outputs += [ort_int8_path] if ort_int8 else []
    ort_path = onnx_path.with_suffix(".ort")
    outputs += [ort_path, operator_config_path(ort_path)] if req.to_ort else []
    if req.to_ort and ort_int8:
        int8_ort = ort_int8_path.with_suffix(".ort")
        outputs += [int8_ort, operator_config_path(int8_ort)]
    from edgeslim.surgery.widths import CALIBRATION_FRACTIONS

    widths = {f: width_path(onnx_path, f) for f in CALIBRATION_FRACTIONS} if req.width_models else {}
    outputs += list(widths.values())
    outputs += [Path(req.ultralytics_path)] if req.ultralytics_path is not None else []
    # every file is written staged and published only when every step succeeded: stopped, refused or
    # failing, the earlier export stays whole (a forced export failing at its INT8 step had replaced the
    # ONNX and removed the earlier INT8 file), and the folders it made go again
    # (the tactic cache trtexec reads and rewrites: never one of the exports, nor the model read)
    check_distinct({**{f"output {p.name}": p for p in dict.fromkeys(outputs)}, "timing_cache": req.timing_cache},
                   {"model": loaded.path})  # fmt: skip
    # (nor, force or not, the file a checkpoint rebuilds from: it and every other checkpoint of it would be lost)
    check_not_rebuilt_from({"ultralytics_path": req.ultralytics_path}, loaded.spec, "the model")
    with writing(outputs, replace=req.force) as stage:
        for p in outputs:
            named_by_engine = req.engine_path and p in (
                engine,
                script,
            )  # (the script is named after the engine)
            param = (
                "ultralytics_path"
                if req.ultralytics_path is not None and p == Path(req.ultralytics_path)
                else None
            )
            check_output_path(p, req.force, param or ("engine_path" if named_by_engine else "onnx_path"))
        timing_cache = req.timing_cache or onnx_path.with_name("timing.cache")

        data_dir = str(req.data_dir) if req.data_dir else None
        # INT8 calibrates on a labelled data set's training images; an unlabelled folder (None here) holds
        # its calibration images apart from the check's
        train_batch = (
            real_inputs(shape, data=req.data_name, data_dir=data_dir, meta=loaded.meta, n=req.calib_images, split="train",
                        data_param="data_name")
            if int8
            else None
        )  # fmt: skip
        n_real = max(req.n_validate, req.calib_images + req.n_validate if int8 and train_batch is None else 0)
        batch = None  # images are read only for the check and for INT8 calibration
        if int8 or not req.no_validate:
            batch = real_inputs(
                shape,
                data=req.data_name,
                data_dir=data_dir,
                meta=loaded.meta,
                n=n_real,
                data_param="data_name",
                skip=None if int8 else "no_validate",
            )
        if int8 and batch is None:
            raise EdgeslimError(
                "INT8 calibration needs real images: pass data_name (and data_dir if needed); the data set "
                "images takes any folder of images",
                param=("data_name", "data_dir"),
            )
        fixed = None if req.dynamic_batch else req.batch  # (calibration runs whole batches of a fixed one)
        if int8 and train_batch is None and len(batch.x) - req.n_validate < (fixed or 1):
            raise EdgeslimError(
                f"INT8 calibration needs more images than the n_validate {req.n_validate} held out to check the "
                f"export and the INT8 model against it{f', at least a batch of {fixed} more' if fixed else ''}; "
                f"{batch.base_source} has {len(batch.x)}: add images or lower the count",
                param="n_validate",
            )  # (before the export: a review's 50 photos at batch 32 were refused after it, naming "calib")
        calib_words = (
            f"the {req.calib_images} asked"
            if asked_calib
            else f"the default {req.calib_images} for {'x'.join(map(str, shape[1:]))}"
        )
        check_batch = batch
        if batch is not None and len(batch.x) > req.n_validate:
            check_batch = batch.first(req.n_validate)
        if check_batch is None and not req.no_validate:
            early.append(Notice("no data set known for this model (give one with data_name): validating on random "
                                "inputs", "data_name"))  # fmt: skip
        # the width models cut before anything is written (a model surgery cannot cut is refused first)
        cut = _width_cuts(loaded, shape, tuple(widths), int(req.width_models or 1),
                         req.zero_invariant) if widths else {}  # fmt: skip
        # (the ONNX export, then the width models, INT8, the TensorRT build, the ORT conversion where they run)
        stages = 1 + bool(widths) + int8 + bool(req.trt and installed) + bool(req.to_ort)
        stage_step = _stage_steps(step, stages)
        checked = f" and its check on {len(check_batch.x)} images" if check_batch is not None else ""
        res = export_onnx(
            loaded.model, stage(onnx_path), shape, opset=req.opset, dynamic_batch=req.dynamic_batch, batch=req.batch,
            simplify=not req.no_simplify, validate=not req.no_validate, inputs=check_batch, force=req.force,
            exporter=req.exporter, arch=loaded.spec.arch if loaded.spec else loaded.kind, recipe=loaded.recipe,
            meta=loaded.meta, on_accepted=lambda: [say(n) for n in early],
        )  # fmt: skip
        # (said once done: a refused input comes alone, one line)
        stage_step(f"ONNX export{'' if req.no_validate else checked} done")
        result: dict[str, Any] = {
            "onnx": res.to_dict(),
            # slimmed by surgery (its recipe), dense (a file that would carry one), or None: a whole pickle,
            # TorchScript or torch.export program carries none, so whether surgery cut it is unknown
            "slim": True if loaded.recipe is not None else (False if _carries_recipe(loaded) else None),
            "warnings": list(res.warnings),
        }
        if req.compare_device == "cuda":
            from edgeslim.export.validate import random_inputs

            rep = cuda_reference(loaded.model, stage(onnx_path).read_bytes(), check_batch or random_inputs(shape),
                                 static_batch=None if req.dynamic_batch else req.batch)  # fmt: skip
            result["cuda_check"] = rep if isinstance(rep, str) else rep.to_dict()
            if isinstance(rep, str):
                say(rep)
        if widths:
            stage_step(f"width models {', '.join(f'{f:.0%}' for f in widths)}")
            staged = {f: stage(p) for f, p in widths.items()}
            result["width_models"] = _export_widths(loaded, req, shape, staged, cut, check_batch)
        if req.ultralytics_path is not None:
            from edgeslim.models.yolo import save_ultralytics_checkpoint, task_and_names

            ul = Path(req.ultralytics_path)
            save_ultralytics_checkpoint(loaded.model, stage(ul), force=req.force)
            result["ultralytics"] = {
                "path": str(ul),
                "task": task_and_names(loaded.model)["task"],  # (what its yolo val takes as data)
                "params": sum(p.numel() for p in loaded.model.parameters()),
                "bytes": stage(ul).stat().st_size,
            }
        audit = audit_onnx(stage(onnx_path), _resizable(loaded.model, shape))
        if result["slim"] is not None:  # (a dense model: none narrowed; unknown: None)
            audit.narrowed = set((loaded.recipe or {}).get("layers") or {})
        result["audit"] = {**audit.to_dict(), "rows": audit.rows()}

        calib = None
        if int8:
            from edgeslim.export.qdq import quantize_qdq

            calib = (train_batch.x if train_batch is not None else batch.x[req.n_validate :]).numpy()
            result["calibration_source"] = (
                train_batch.source if train_batch is not None else batch.base_source
            )
            if len(calib) < req.calib_images:
                result["warnings"].append(
                    f"INT8 calibrated on {len(calib)} images, not {calib_words}: "
                    + (f"{train_batch.base_source} has {len(calib)}" if train_batch is not None else
                       f"{batch.base_source} has {len(batch.x)} readable, {req.n_validate} of them check the export")
                    + "; add images for steadier INT8 ranges"
                )  # fmt: skip
            labels = check_batch.labels.numpy() if check_batch.labels is not None else None
            stage_step(f"INT8 calibration on {len(calib)} images, its check on {len(check_batch.x)}")
            q = quantize_qdq(
                stage(onnx_path), stage(qdq_path if req.trt else ort_int8_path), calib, check=check_batch.x.numpy(), labels=labels,
                style="tensorrt" if req.trt else "onnxruntime", force=req.force, postprocessed=res.postprocessed,
                score_outputs=res.score_outputs,
            )  # fmt: skip
            result["qdq" if req.trt else "ort_int8"] = q.to_dict()
            if q.calib_images < len(calib) or q.check_images < len(
                check_batch.x
            ):  # (a fixed batch: whole ones)
                fix = (
                    "make calib_images and n_validate multiples of it"
                    if asked_counts
                    else "the images read were no whole batches"
                )  # (defaults are whole batches: the folder's size)
                result["warnings"].append(
                    Notice(f"the ONNX's fixed batch {req.batch} runs whole batches only: INT8 calibrated on "
                           f"{q.calib_images} of {len(calib)} images and was checked on {q.check_images} of "
                           f"{len(check_batch.x)}; {fix}, or export with dynamic_batch",
                           ("batch", "calib_images", "n_validate", "dynamic_batch"))
                )  # fmt: skip
            if q.nothing_compared:  # (as the FP32 check: said, not refused)
                result["warnings"].append(Notice(
                    f"the INT8 check compared nothing: {all_empty(q.empty_outputs, f'the {q.check_images} held-out images')} "
                    "(a detector that found no object?), so INT8 is not checked against FP32; check it on images "
                    "the model finds objects in (data_name)", "data_name",
                ))  # fmt: skip
            if q.flat_channels:
                result["warnings"].append(
                    f"INT8 turns {q.flat_channels} output channels that vary in FP32 into one constant on "
                    f"{q.check_images} held-out images (values of another range share their INT8 scale); keep FP32 "
                    "for this model"
                )
            if q.top1_agreement is not None and q.top1_agreement < INT8_AGREEMENT_WARN:
                result["warnings"].append(
                    Notice(f"INT8 agrees with FP32 on the top-1 class of only {q.top1_agreement:.0%} of "
                           f"{q.check_images} held-out images; calibrate on more images (calib_images) or keep "
                           "FP32 for this model", "calib_images")
                )  # fmt: skip
        if req.trt:
            result["trt_target"] = ".".join(map(str, target))
            # INT8 is built from the Q/DQ ONNX on every version, by the builder here and the script alike:
            # the engine then has the scales whose agreement and accuracy the INT8 check measured (TensorRT
            # <= 10's entropy calibrator on the FP32 ONNX would choose its own)
            result["precision_path"] = "qdq" if int8 else precision_path(target, req.precision)
            if int8:
                from edgeslim.export.qdq import save_calibration_data

                save_calibration_data(stage(calib_path), calib, force=req.force)
                result["calib_data"] = str(calib_path)
            if installed:
                from edgeslim.export.trt import EngineBuildConfig, build_engine

                cfg = EngineBuildConfig(
                    precision=req.precision, workspace=workspace, batch=req.batch, max_batch=req.max_batch,
                    timing_cache=timing_cache,
                )  # fmt: skip
                src = qdq_path if int8 else onnx_path
                stage_step(f"TensorRT engine ({req.precision})")
                built = build_engine(stage(src), stage(engine), cfg, force=req.force)
                result["engine"] = built.to_dict()
                result["warnings"] += built.warnings
            else:
                from edgeslim.export.trtexec import trtexec_plan

                say(
                    "tensorrt is not importable here: wrote the ONNX and a trtexec script to build the engine on the device"
                )
                plan = trtexec_plan(
                    onnx_path, engine, input_name=res.input_name, input_shape=shape, precision=req.precision,
                    trt_version=target, batch=req.batch, dynamic_batch=req.dynamic_batch, max_batch=req.max_batch,
                    workspace=workspace, timing_cache=timing_cache, qdq_onnx=qdq_path if int8 else None,
                    script_dir=script.parent,
                )  # fmt: skip
                atomic_write_text(stage(script), plan.render())
                stage(script).chmod(0o755)
                result["trtexec_script"] = str(script)
                result["trtexec"] = plan.to_dict()
        if req.to_ort:
            from edgeslim.export.ort_mobile import convert_to_ort

            stage_step("ORT conversion")
            for key, src in (
                ("ort", onnx_path),
                ("ort_int8_mobile", ort_int8_path if ort_int8 else None),
            ):
                if src is None:
                    continue
                conv = convert_to_ort(stage(src), stage(src.with_suffix(".ort")), force=req.force)
                result[key] = conv.to_dict()
        _stale_companions(onnx_path, outputs, stage, req.force, result["warnings"])
        stage_step("")
        return stage.final(result)


def _stage_steps(step: Callable[[int, int, str], None] | None, total: int) -> Callable[..., None]:
    """A ``(what)`` callback that tells ``step`` each stage of ``total`` by its number, as it starts (the
    ONNX export once done: a refusal comes alone; ``""``: all done): 1/3 ONNX export done, 2/3 INT8, 3/3
    ORT (a review read the count of stages done, 1/3 INT8 then 2/3 ORT and no 3/3, as misnumbered steps)."""
    number = [0]

    def tell(what: str) -> None:
        number[0] += bool(what)
        if step is not None:
            step(number[0] if what else total, total, what)

    return tell


def _companions(onnx: Path) -> list[Path]:
    """The files an export to ``onnx`` writes beside it with other options: INT8, ``.ort``, width
    models, and the engines, their layer reports and trtexec scripts under their default names."""
    from edgeslim.export.ort_mobile import operator_config_path
    from edgeslim.export.trt import layers_json_path
    from edgeslim.export.trt_version import PRECISIONS
    from edgeslim.surgery.widths import CALIBRATION_FRACTIONS

    files = [_sibling(onnx, s) for s in (".int8.onnx", ".int8.qdq.onnx", ".calib.npy", ".calib.cache")]
    files += [
        f
        for ort in (onnx.with_suffix(".ort"), _sibling(onnx, ".int8.ort"))
        for f in (ort, operator_config_path(ort))
    ]
    files += [width_path(onnx, f) for f in CALIBRATION_FRACTIONS]
    for precision in PRECISIONS:
        engine = _sibling(onnx, f".{precision}.engine")
        files += [engine, layers_json_path(engine), engine.with_name(engine.stem + ".trtexec.sh")]
    return files


def _stale_companions(
    onnx: Path, outputs: list[Path], stage: Staging, force: bool, warnings: list[Any]
) -> None:
    """Files an earlier export to ``onnx`` wrote beside it that this run does not (:func:`_companions`)
    are of another network where the earlier ``onnx`` existed and holds another network than the one
    staged now, and ``NAME.int8.ort`` where its ``NAME.int8.onnx``, when this run writes one, existed and
    changed: forced, they go with the earlier set (a forced export without INT8 left an earlier model's
    ``.int8.onnx``, which the hint ``bench NAME.int8.onnx --baseline NAME.onnx`` then compared with this
    one; one with INT8 and without ort an ``.int8.ort`` of the replaced ``.int8.onnx``); else a warning
    names them. A file whose source did not exist, or whose own record (ONNX/.ort metadata, the script's
    header) says edgeslim did not write it, is never removed (a user's ``NAME.int8.ort`` was): a warning
    names it."""
    from edgeslim.export.ort_mobile import operator_config_path

    present = [p for p in _companions(onnx) if p not in outputs and p.is_file()]
    if not present:
        return
    int8_ort, source = _sibling(onnx, ".int8.ort"), _sibling(onnx, ".int8.onnx")
    network = _replaced(onnx, stage(onnx))  # None: no earlier NAME.onnx
    requantized = _replaced(source, stage(source)) if source in outputs else None
    configs = {operator_config_path(p): p for p in present if p.suffix == ".ort"}
    # stale (of the replaced file), kept (unknown origin), same (this network's)
    verdict: dict[Path, str] = {}
    earlier: dict[Path, dict[str, str] | None] = {}  # (the metadata of each replaced file, read once)
    for p in (p for p in present if p not in configs):  # (an operator config follows its .ort)
        of_int8 = (
            p in (int8_ort, operator_config_path(int8_ort)) and network is not True and source in outputs
        )
        origin = requantized if of_int8 else network
        ref = source if of_int8 else onnx
        if origin and ref not in earlier:
            earlier[ref] = _recorded_metadata(ref)
        if origin is None or (origin and _companion_of(p, earlier[ref]) is False):
            verdict[p] = "kept"
        else:
            verdict[p] = "stale" if origin else "same"
    verdict.update({cfg: verdict[ort] for cfg, ort in configs.items()})
    stale = [p for p in present if verdict[p] == "stale"]
    kept = [p for p in present if verdict[p] == "kept"]
    if kept:
        them = "it" if len(kept) == 1 else "them"
        warnings.append(
            f"kept {', '.join(p.name for p in kept)} beside {onnx.name}: not known to be an earlier export's (no earlier "
            f"file of their source's name, or {'its' if len(kept) == 1 else 'their'} metadata names another model); "
            f"delete {them} if not this network's"
        )
    if not stale:
        return
    names = ", ".join(p.name for p in stale)
    if not force:
        warnings.append(f"{names} beside {onnx.name} are not of this export (an earlier one's, of an unknown network); "
                        "delete them, or they will be taken for this network's")  # fmt: skip
        return
    for p in stale:
        stage.drop(p)
    if network:
        warnings.append(
            f"removed {names}: an earlier export's files of another network than this {onnx.name}"
        )
    else:
        warnings.append(f"removed {names}: converted from the earlier {source.name}, which this export replaced "
                        "with another")  # fmt: skip


def _replaced(old: Path, new: Path) -> bool | None:
    """Whether the earlier file ``old`` holds another network than ``new`` (:func:`_same_network`); None
    where there is no earlier file."""
    return not _same_network(old, new) if old.is_file() else None


def _companion_of(path: Path, ref: dict[str, str] | None) -> bool | None:
    """Whether edgeslim wrote ``path`` beside the earlier file it replaces (whose metadata is ``ref``,
    :func:`_recorded_metadata`), by what the file records: the header of a trtexec script; for an ONNX or
    ``.ort`` model its metadata, which must name the earlier file's architecture, input shape and, but
    for a width model (which records its ``uniform_width`` instead), its recipe (a model the user
    exported to a companion's name on its own, ``NAME.w50.onnx`` of another network, is not); None for
    a file that records nothing (an engine, its layer report, calibration data)."""
    if path.name.endswith(".trtexec.sh"):
        with open(path, "rb") as f:
            return b"# Generated by edgeslim" in f.read(512)
    if path.suffix not in (".onnx", ".ort"):
        return None
    md = _recorded_metadata(path)
    if md is None:
        return None
    if "edgeslim_version" not in md or not ref:
        return False
    width = path.suffix == ".onnx" and re.fullmatch(r".*\.w\d+\.onnx", path.name) is not None
    keys = ("architecture", "input_shape") if width else ("architecture", "input_shape", "recipe_hash")
    return all(md.get(k) == ref.get(k) for k in keys) and (not width or "uniform_width" in md)


def _recorded_metadata(path: Path) -> dict[str, str] | None:
    """The metadata an ONNX or ``.ort`` model file records ({} for one that does not load; None where
    ONNX Runtime, which reads ``.ort``, is not installed)."""
    if path.suffix == ".onnx":
        from edgeslim.utils.onnx_graph import onnx_metadata

        return onnx_metadata(path)
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception:  # noqa: BLE001 - not a model ONNX Runtime reads: not one edgeslim wrote
        return {}
    return dict(meta.custom_metadata_map)


def _same_network(old: Path, new: Path) -> bool:
    """Whether ONNX files ``old`` and ``new`` hold one network (graph, opsets, normalization); False
    where ``old`` is missing or not ONNX."""
    import onnx

    try:
        a, b = (onnx.load(str(p), load_external_data=False) for p in (old, new))
    except Exception:  # noqa: BLE001 - an earlier file that does not load is not this network
        return False
    norm = [{p.key: p.value for p in m.metadata_props}.get("normalization") for m in (a, b)]
    return a.graph == b.graph and list(a.opset_import) == list(b.opset_import) and norm[0] == norm[1]


def _resizable(model: Any, shape: tuple[int, int, int]) -> dict[str, tuple[bool, bool]] | None:
    """Which layers' channel counts surgery can change (:func:`~edgeslim.channels.graph.resizable_layers`),
    so the alignment audit does not ask to re-run surgery for widths it cannot change; None when the
    model cannot be captured (every count is then counted)."""
    import torch

    from edgeslim.channels.graph import deployed_graph, resizable_layers
    from edgeslim.errors import EdgeslimError

    try:
        g = deployed_graph(model, torch.zeros(1, *shape))
    except (EdgeslimError, RuntimeError, TypeError, ValueError):
        return None
    return resizable_layers(g)
