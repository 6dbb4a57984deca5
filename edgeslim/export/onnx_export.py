"""PyTorch -> ONNX: export, check, simplify, validate in ONNX Runtime, stamp metadata, write atomically.

Exporter choice (torch 2.15): the TorchScript exporter (``dynamo=False``) is used first. It
honours the requested opset exactly (17 by default, the highest TensorRT 8.5 / JetPack 5 parses)
and exports the zoo, torchvision and slim CNNs in well under a second. The dynamo exporter has
no translations below opset 18 and its down-conversion fails for common CNN graphs (Reduce*,
Resize), leaving opset 18. It is the fallback when the TorchScript exporter fails, or is chosen
with ``exporter="dynamo"``; a different resulting opset is reported as a warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim import __version__
from edgeslim.errors import EdgeslimError, Notice, first_line, require
from edgeslim.export._quiet import native_stdout, quiet
from edgeslim.export.validate import (
    AMPLIFYING_NORM,
    CHECK_CHUNK,
    DETECTION_EXPORT_CHECK,
    FIXED_BATCH_HINT,
    FP32_ATOL,
    InputBatch,
    ValidationReport,
    amplifying_norm,
    random_inputs,
    validate_onnx,
)
from edgeslim.utils.io import atomic_write_bytes, check_output_path
from edgeslim.utils.parsing import parse_input_shape
from edgeslim.utils.scores import POSTPROCESSED, postprocessed_detections, score_tensors
from edgeslim.utils.tmpfiles import temporary_folder

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from edgeslim.checkpoint import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 9
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclass
class OnnxExportResult:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    opset: int
    exporter: str
    input_name: str
    output_names: list[str]
    input_shape: list[int | str]  # [N, C, H, W]; N is "batch" when dynamic
    dynamic_batch: bool
    simplifier: str | None
    nodes: int
    params: int
    size_bytes: int
    validation: ValidationReport | None
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: why the unsimplified graph was written: the simplifier (named, with its version) broke the graph,
    #: which the check found and the unsimplified graph passed (None: it did not)
    simplifier_broke: str | None = None
    #: PyTorch's result is post-processed detections, a list of dicts (:func:`~edgeslim.utils.scores.postprocessed_detections`)
    postprocessed: bool = False
    #: per output, whether it may hold class scores (:func:`~edgeslim.utils.scores.score_tensors`)
    score_outputs: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["validation"] = self.validation.to_dict() if self.validation else None
        return d


def recipe_hash(recipe: dict[str, Any] | None) -> str:
    """A short stable hash of a surgery recipe (``"dense"`` when there is none)."""
    if not recipe:
        return "dense"
    blob = json.dumps(recipe, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_opset(opset: int) -> int:
    """Refuse opsets the installed exporters/checker cannot produce, in one line."""
    import onnx

    top = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= top:
        raise EdgeslimError(
            f"opset {opset} is out of range; use {MIN_OPSET}..{top} (17 is what TensorRT 8.5+ and "
            "ONNX Runtime both take)",
            param="opset",
        )
    return int(opset)


def _torchscript_max_opset() -> int:
    """The highest opset the TorchScript exporter translates to (20 in torch 2.15)."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", DEFAULT_OPSET))


def _unsupported_op(exc: Exception) -> tuple[str, int | None] | None:
    """The operator of an exporter's 'operator not supported at opset N' error and the opset that
    added its translation (None: the exporter has none at any opset); None for another error."""
    text = str(exc)
    m = re.search(r"operator '([^']+)' to ONNX opset version (\d+) is not supported", text)
    if not m:
        return None
    added = re.search(r"added in version (\d+)", text)
    return m.group(1), int(added.group(1)) if added else None


def _unsupported_op_error(exc: Exception, opset: int, top: int) -> EdgeslimError | None:
    """An operator that a higher opset (``<= top``, the exporter's highest) expresses, as one
    actionable line; None for another error, or an operator the exporter lacks at every opset."""
    found = _unsupported_op(exc)
    if found is None or found[1] is None or found[1] > top:
        return None
    return EdgeslimError(
        f"use opset {found[1]} or higher: opset {opset} cannot express operator {found[0]} used by the model",
        param="opset",
    )


def _export_torchscript(
    model: nn.Module,
    x: torch.Tensor,
    f: Path,
    opset: int,
    dynamic: bool,
    outputs: list[str] | None = None,
    batch_axes: list[tuple[int, ...]] | None = None,
    input_name: str = INPUT_NAME,
) -> list[str]:
    """Export with the TorchScript tracer; returns notes on what the trace froze (:func:`trace_notes`).
    ``batch_axes``: each output's axes that follow the batch (:func:`_batch_axes`; default axis 0)."""
    import torch

    outputs = outputs or [OUTPUT_NAME]
    follow = batch_axes or [(0,)] * len(outputs)
    axes = (
        {input_name: {0: "batch"}, **{o: {i: "batch" for i in a} for o, a in zip(outputs, follow)}}
        if dynamic
        else None
    )
    with warnings.catch_warnings(record=True) as seen:
        # The TorchScript exporter warns that it is deprecated on every call; we chose it on purpose.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="no signature found for")
        # above its highest opset it prints a multi-line OnnxExporterWarning; the note below says it in one
        warnings.filterwarnings("ignore", message="Exporting to ONNX opset version .* is not supported")
        # the tracer's warnings about the model's code are recorded whatever the caller's filters are
        warnings.simplefilter("always", category=torch.jit.TracerWarning)
        torch.jit.TracerWarning.ignore_lib_warnings()  # (torch's own code: as the tracer does)
        native: list[str] = []
        try:
            with native_stdout(native):  # (a failure's IR graph, printed by torch's C++ log)
                torch.onnx.export(
                    model, (x,), str(f), dynamo=False, opset_version=opset,
                    input_names=[input_name], output_names=outputs, dynamic_axes=axes,
                )  # fmt: skip
        finally:
            if native and native[0].strip():
                log.debug("the TorchScript exporter printed: %s", native[0])
    for w in seen:  # the tracer's own warnings become notes; any other is shown as it was
        if not issubclass(w.category, torch.jit.TracerWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    top = _torchscript_max_opset()
    above = [Notice(f"TorchScript's ONNX export translates up to opset {top}: the file says opset {opset}, its "
                    f"operators are translated as of opset {top} (exporter dynamo translates at {opset})",
                    "exporter")] if opset > top else []  # fmt: skip
    return above + trace_notes(model, x, [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)])


#: how :func:`trace_notes` begins its notes (a failed check names them as a possible cause)
TRACE_BRANCH = "the model's code branches on the input's values"
TRACE_VALUES = "the tracer froze values computed from tensors"


def trace_notes(
    model: nn.Module, x: torch.Tensor, found: list[warnings.WarningMessage], most: int = 2
) -> list[str]:
    """What the tracer froze, when it warned: a branch on the input's values (``if x.mean() > 0:``),
    found by the channel graph's capture, which follows shapes and stops at such a branch -- the
    ONNX file takes the example's path for every input; values computed from the input's shape
    (YOLO's ``self.shape != shape``, MobileViT's ``math.ceil(H / p)``) are right at the exported
    size and get no note. Where the capture cannot run the model, the tracer's places are listed."""
    import linecache

    from edgeslim.channels.graph import DataDependentError, build_graph

    if not found:
        return []
    try:
        build_graph(model, x)
    except DataDependentError as exc:
        file, _, line = exc.at.rpartition(":")
        at = f" at {Path(file).name}:{line}" if exc.at else ""
        code = linecache.getline(file, int(line)).strip() if line.isdigit() else ""
        return [
            f"{TRACE_BRANCH} ({exc.construct}{at}{f' `{code[:60]}`' if code else ''}): the ONNX file takes the "
            "path the example input took for every input; write the branch as a tensor op (e.g. torch.where)"
        ]
    except Exception:  # noqa: BLE001 - the capture cannot run it: say where the tracer froze values
        places = {(w.filename, w.lineno): linecache.getline(w.filename, w.lineno).strip() for w in found}
        listed = ", ".join(f"{Path(f).name}:{n} `{c[:60]}`" for (f, n), c in list(places.items())[:most])
        more = f" and {len(places) - most} more" if len(places) > most else ""
        return [
            f"{TRACE_VALUES} at {len(places)} place(s) of the model's code as constants ({listed}{more}): right "
            "for this input size where they come from its shape, not where they come from its values"
        ]
    return []


def _export_dynamo(
    model: nn.Module,
    x: torch.Tensor,
    f: Path,
    opset: int,
    dynamic: bool,
    outputs: list[str] | None = None,
    input_name: str = INPUT_NAME,
) -> None:
    import torch

    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    # The dynamo exporter reports progress with print(); keep library output off the terminal.
    with quiet("onnxscript", "torch.onnx") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=opset, input_names=[input_name],
            output_names=outputs or [OUTPUT_NAME], dynamic_shapes=shapes, external_data=False, verbose=False,
        )  # fmt: skip
        prog.save(str(f), external_data=False)
    log.debug("dynamo exporter output: %s", sink.getvalue())


@contextlib.contextmanager
def _left_as_given(model: nn.Module) -> Iterator[None]:
    """Every module's train/eval flag and the parameters' device as they were, after an export that
    ran the model in eval mode on the CPU (a GPU user's training loop found its model moved)."""
    modes = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), None)
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was
        if device is not None and next((p.device for p in model.parameters()), device) != device:
            model.to(device)


def _inference_mode(model: nn.Module) -> nn.Module:
    """``model`` in eval mode on the CPU; torch.export modules (which refuse ``eval()``) as they are."""
    import torch

    try:
        model = model.eval()
    except NotImplementedError:  # torch.export's unlifted module: already in inference form
        return model
    return model if isinstance(model, torch.jit.ScriptModule) else model.cpu()


def _run_exporter(
    model: nn.Module,
    x: torch.Tensor,
    f: Path,
    opset: int,
    dynamic: bool,
    exporter: str,
    notes: list[str],
    outputs: list[str] | None = None,
    batch_axes: list[tuple[int, ...]] | None = None,
    input_name: str = INPUT_NAME,
) -> str:
    """Export with the chosen exporter; ``auto`` falls back to dynamo. Returns the one used."""
    import torch

    if exporter not in EXPORTERS:
        raise EdgeslimError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    scripted = isinstance(model, torch.jit.ScriptModule)
    first_error: Exception | None = None
    if exporter in ("auto", "torchscript"):
        try:
            notes += _export_torchscript(model, x.clone(), f, opset, dynamic, outputs, batch_axes, input_name)
            return "torchscript"
        except Exception as exc:  # noqa: BLE001 - exporters raise many types
            err = _unsupported_op_error(exc, opset, _torchscript_max_opset())
            if err is not None:
                raise err from exc
            lacked = _unsupported_op(exc)
            if lacked is not None and (exporter == "torchscript" or scripted):  # (at every opset it has)
                how = (
                    "a TorchScript module exports with it only: export the model's nn.Module with exporter dynamo"
                    if scripted
                    else "use exporter dynamo"
                )
                raise EdgeslimError(
                    f"TorchScript's ONNX export cannot express operator {lacked[0]} at any opset up to "
                    f"{_torchscript_max_opset()}; {how}, which translates more operators",
                    param="exporter",
                ) from exc
            if exporter == "torchscript" or scripted:
                raise EdgeslimError(
                    f"TorchScript ONNX export failed: {first_line(exc)}; "
                    "try exporter dynamo or a different opset",
                    param=("exporter", "opset"),
                ) from exc
            first_error = exc
            notes.append(
                f"TorchScript exporter failed ({type(exc).__name__}); fell back to the dynamo exporter"
            )
            log.info(notes[-1])
    try:
        _export_dynamo(model, x.clone(), f, opset, dynamic, outputs, input_name)
    except Exception as exc:  # noqa: BLE001
        import onnx

        err = _unsupported_op_error(exc, opset, onnx.defs.onnx_opset_version())
        if err is not None:
            raise err from exc
        why = _root_cause(exc)
        before = f" (TorchScript: {first_line(first_error)[:200]})" if first_error else ""
        raise EdgeslimError(f"ONNX export failed with the dynamo exporter: {why[:300]}{before}") from exc
    return "dynamo"


def _root_cause(exc: BaseException) -> str:
    """The first line of the error at the bottom of ``exc``'s chain of causes (the dynamo exporter's
    own says only "Failed to convert the exported program ... Next steps:"), without terminal colours."""
    from edgeslim.utils.console import printable

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    return printable(first_line(root))


def simplify_onnx(model: onnx.ModelProto, notes: list[str]) -> tuple[onnx.ModelProto, str | None]:
    """Simplify with onnxslim, else onnxsim, else leave as is (with a warning in ``notes``)."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        try:
            return onnxslim.slim(model), "onnxslim"
        except Exception as exc:  # noqa: BLE001
            notes.append(f"onnxslim failed ({type(exc).__name__}: {exc}); trying onnxsim")
    try:
        import onnxsim
    except ImportError:
        notes.append(
            "neither onnxslim nor onnxsim is installed; the ONNX was not simplified (pip install onnxslim)"
        )
        log.info(notes[-1])
        return model, None
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        notes.append("onnxsim could not verify its simplification; kept the unsimplified graph")
        return model, None
    return simplified, "onnxsim"


def _version(dist: str) -> str:
    """An installed distribution's version (``version unknown`` where its metadata is missing)."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def _count_params(model: onnx.ModelProto) -> int:
    import numpy as np

    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def _flat_dict(obj: Any) -> bool:
    """Whether ``obj`` is a dict of tensors (no nested dict, list or tuple)."""
    return isinstance(obj, dict) and all(not isinstance(v, (dict, list, tuple)) for v in obj.values())


def _key_name(key: Any, suffix: str = "") -> str:
    """An output name from a dict key (a key that is no identifier, or is the input's name ``input``,
    which would rename the graph's input to ``input.3``, gets ``output_`` before it)."""
    name = f"{key}{suffix}"
    return name if str(key).isidentifier() and name != INPUT_NAME else f"output_{name}"


def output_names(probe: Any) -> list[str]:
    """ONNX output names for a model's result: ``logits`` for one tensor; a dict's keys (torchvision's
    ``out``/``aux``; see :func:`_key_name`); a list of such dicts (a torchvision detector's, one per
    image) its keys, with ``_0``, ``_1``, ... after them for several images (``boxes``, ``labels``,
    ``scores``); ``logits``, ``output1``, ... for another tuple or list."""
    if _flat_dict(probe):
        return [_key_name(k) for k in probe]
    if isinstance(probe, (list, tuple)) and probe and all(_flat_dict(d) for d in probe):
        return [_key_name(k, f"_{i}" if len(probe) > 1 else "") for i, d in enumerate(probe) for k in d]
    from edgeslim.channels.graph import flat_tensors

    n = len(flat_tensors(probe))
    return [OUTPUT_NAME] + [f"output{i}" for i in range(1, n)]


def _batch_axes(model: nn.Module, x: torch.Tensor, probe: Any) -> list[tuple[int, ...]]:
    """Each output tensor's axes that follow the batch: those whose size differs between the probe and
    a run at one image more (a transposed [classes, N] output's axis 1); axis 0 of each where the model
    does not run at that batch or returns other outputs there."""
    import torch

    from edgeslim.channels.graph import flat_tensors

    shapes = [tuple(t.shape) for t in flat_tensors(probe)]
    first = [(0,) if s else () for s in shapes]
    try:
        with torch.no_grad():
            other = [tuple(t.shape) for t in flat_tensors(model(torch.zeros((len(x) + 1, *x.shape[1:]))))]
    except Exception:  # noqa: BLE001 - (the check at another batch says what fails)
        return first
    if [len(s) for s in other] != [len(s) for s in shapes]:
        return first
    return [tuple(i for i, (a, b) in enumerate(zip(s, o)) if a != b) for s, o in zip(shapes, other)]


def _static_output_dims(
    proto: Any, shapes: list[tuple[int, ...]], batch_axes: list[tuple[int, ...]] | None = None
) -> None:
    """Write each graph output's sizes as the probe measured them, the axes that follow the batch
    (``batch_axes``, default axis 0) symbolic (shape inference through a Resize left symbols such as
    ``Resizelogits_dim_2`` for all of them)."""
    follow = batch_axes or [(0,)] * len(shapes)
    for out, shape, axes in zip(proto.graph.output, shapes, follow):
        dims = out.type.tensor_type.shape.dim
        if len(dims) != len(shape) or not shape:
            continue
        for i, (d, n) in enumerate(zip(dims, shape)):
            if i in axes:
                d.dim_param = "batch"
            else:
                d.dim_value = int(n)


def build_metadata(
    *,
    arch: str | None,
    recipe: dict[str, Any] | None,
    input_shape: list[int | str],
    mean: Any,
    std: Any,
    data: str | None,
    exporter: str,
    opset: int,
    validation: ValidationReport | None,
    width: dict[str, Any] | None = None,
    class_names: Any = None,
) -> dict[str, str]:
    """The key/value pairs stored in the ONNX ``metadata_props``; ``class_names`` (the checkpoint's,
    in the order of the model's outputs) as a JSON list under ``class_names``."""
    norm = {"mean": list(mean) if mean is not None else None, "std": list(std) if std is not None else None}
    md = {
        "edgeslim_version": __version__,
        "architecture": arch or "unknown",
        "recipe_hash": recipe_hash(recipe),
        "input_shape": "x".join(str(d) for d in input_shape),
        "normalization": json.dumps(norm),
        "dataset": data or "unknown",
        "exporter": exporter,
        "opset": str(opset),
    }
    if validation is not None:
        md["validation"] = json.dumps(validation.to_dict())
    if width is not None:  # a network cut to a uniform width, for a latency table's calibration
        md["uniform_width"] = json.dumps(width)
    if isinstance(class_names, (list, tuple)) and class_names:  # output i is class_names[i]
        md["class_names"] = json.dumps([str(c) for c in class_names])
    return md


class ExportCheckFailed(EdgeslimError):
    """ONNX Runtime disagreed with PyTorch on the exported file (which was not written); ``reason``:
    the numbers and, where one is found, the layer that explains them."""

    def __init__(self, *args: object, reason: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reason = reason


def _export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int] | str,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    batch: int = 1,
    simplify: bool = True,
    validate: bool = True,
    inputs: InputBatch | torch.Tensor | None = None,
    force: bool = False,
    exporter: str = "auto",
    atol: float = FP32_ATOL,
    arch: str | None = None,
    recipe: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    on_accepted: Callable[[], None] | None = None,
) -> OnnxExportResult:
    """Export ``model`` to ONNX at ``path`` and check it in ONNX Runtime against PyTorch.

    ``input_shape`` is (C, H, W); ``batch`` is the static batch (or the example batch when
    ``dynamic_batch``). ``inputs`` are the validation images (see
    :func:`edgeslim.export.validate.real_inputs`), or a tensor of inputs (checked by the difference
    alone, as unlabelled); without them seeded random inputs are used and the report says so. A failed check (max abs diff > ``atol`` or a top-1 disagreement on
    real images) raises :class:`EdgeslimError` and nothing is written. ``path`` is written
    atomically and never overwritten without ``force``. The model runs in eval mode on the CPU;
    every module's train/eval flag and the model's device are left as they were. A simplified graph
    that fails the check is checked unsimplified: the unsimplified graph is written where it passes
    (:attr:`OnnxExportResult.simplifier_broke` and a warning name the simplifier), refused otherwise.

    The input is named ``input``, the output ``logits``. An ultralytics model is exported as
    ultralytics' own exporter exports it (:func:`edgeslim.models.yolo.prepare_for_export`: heads in
    export mode on a copy), with its input named ``images`` and its outputs ``output0`` (``output1``:
    a segmenter's mask prototypes), as deployment code written for ultralytics' ONNX expects; a detector
    then has the one output ``output0`` [N, 4+classes, anchors], and the metadata ultralytics'
    ``YOLO("model.onnx")`` reads (class names, task, stride, image size) is stored beside ours.
    ``on_accepted`` runs once the model has run on the input shape (a caller's notices about the
    export, which a refusal of the shape makes moot).

    Metadata: ``arch`` (the architecture's name), ``recipe`` (surgery's recipe of a slim model,
    :attr:`PruneResult.recipe`; without it ``recipe_hash`` says ``dense``) and ``meta`` (``mean``,
    ``std``: the normalization) are stored for bench and the device, and the data set's name: the
    first word of ``inputs.source`` when they are real images.
    """
    import onnx
    import torch

    require("onnx", "to export ONNX")
    if isinstance(inputs, torch.Tensor):
        inputs = InputBatch(inputs.detach().float().cpu(), None, f"{len(inputs)} inputs given", False)
    out = check_output_path(path, force, "path")
    c, h, w = parse_input_shape(input_shape)
    if batch < 1:
        raise EdgeslimError(f"batch must be >= 1, got {batch}", param="batch")
    opset = check_opset(opset)
    model = _inference_mode(model)
    from edgeslim.models import yolo

    ultralytics = yolo.is_ultralytics_model(model)
    if ultralytics:  # its heads return only what ultralytics' own export returns
        model = yolo.prepare_for_export(model, (c, h, w), dynamic=dynamic_batch)
    notes: list[str] = list(inputs.notes) if inputs is not None else []  # (what reading the images said)
    x = torch.zeros((max(batch, 2) if dynamic_batch else batch, c, h, w))
    with torch.no_grad():
        try:
            probe = model(x.clone())  # (a forward that changes its input in place leaves x as it was)
        except EdgeslimError:  # the model's own one-line reason (a torch.export program's shape check)
            raise
        except Exception as exc:  # noqa: BLE001 - a wrong shape surfaces as many exception types
            _check_float32(model, exc)
            given = "x".join(map(str, x.shape))  # (a dynamic batch is probed at 2 at least)
            if isinstance(exc, TypeError) and "required positional argument" in str(exc):
                raise EdgeslimError(
                    f"the model's forward takes more than one input ({first_line(exc)[:160]}) and export feeds "
                    f"it one image tensor ({given}); export a module whose forward(x) takes that one tensor "
                    "(a wrapper that makes the other inputs)"
                ) from exc
            raise EdgeslimError(
                f"the model does not accept input {given} ({first_line(exc)[:160]}); check input_shape",
                param="input_shape",
            ) from exc
    from edgeslim.channels.graph import flat_tensors

    if not flat_tensors(probe):  # (the exporters fail on it with unrelated words: "Target opset 17 ...")
        raise EdgeslimError(
            f"the model returned no tensor (its forward returned {'None' if probe is None else type(probe).__name__}); export needs a forward "
            "that returns its outputs: a tensor, or a tuple, list or dict of tensors"
        )
    if on_accepted is not None:
        on_accepted()
    batch_axes = _batch_axes(model, x, probe) if dynamic_batch else None
    with temporary_folder("edgeslim-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        with torch.no_grad():
            names = yolo.export_output_names(probe) if ultralytics else output_names(probe)
            used = _run_exporter(
                model, x, raw, opset, dynamic_batch, exporter, notes, names, batch_axes,
                yolo.EXPORT_INPUT_NAME if ultralytics else INPUT_NAME,
            )  # fmt: skip
        proto = onnx.load(str(raw))
    got_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if got_opset != opset:
        notes.append(
            f"the {used} exporter produced opset {got_opset}, not {opset}; "
            "TensorRT 8.5 (JetPack 5) parses opset <= 17"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise EdgeslimError(f"the exported ONNX fails onnx.checker: {first_line(exc)}") from exc
    simplifier = simplifier_broke = None
    unsimplified = proto.SerializeToString() if simplify and validate else b""  # (the check's fallback)

    def finished(graph: onnx.ModelProto) -> onnx.ModelProto:
        if dynamic_batch:  # only the batch axis varies: the other output sizes are the probe's
            _static_output_dims(graph, [tuple(t.shape) for t in flat_tensors(probe)], batch_axes)
        return graph

    if simplify:
        proto, simplifier = simplify_onnx(proto, notes)
        proto = onnx.shape_inference.infer_shapes(proto)
        onnx.checker.check_model(proto)
    proto = finished(proto)
    shape: list[int | str] = ["batch" if dynamic_batch else batch, c, h, w]
    report = None
    mean = std = None
    if inputs is not None and not inputs.estimated:  # (statistics of a few photos are not the model's)
        mean, std = inputs.mean, inputs.std
    if validate:
        inputs = (
            inputs if inputs is not None else random_inputs((c, h, w), n=max(8, batch), pixels=ultralytics)
        )
        checked = inputs

        def check(graph: onnx.ModelProto) -> ValidationReport:
            return validate_onnx(
                model,
                graph.SerializeToString(),
                checked,
                static_batch=None if dynamic_batch else batch,
                atol=atol,
                traced_batch=len(x) if dynamic_batch else None,
            )

        try:
            report, failure = check(proto), None
        except Exception as exc:  # noqa: BLE001 - (the simplified graph fails to run: the unsimplified one says why)
            if simplifier is None:
                raise
            report, failure = None, exc
        if simplifier is not None and (report is None or not (report.passed or report.nothing_compared)):
            # the simplifier, not the model, may have broken the graph: the unsimplified graph decides (its
            # failure is the export's, with the causes found below; a dynamic batch among them)
            plain = finished(onnx.load_from_string(unsimplified))
            plain_report = check(plain)
            if plain_report.passed:
                broke = (
                    f"max|diff| {report.max_abs_diff:.3g}"
                    if report is not None and report.max_abs_diff is not None
                    else report.summary()
                    if report is not None
                    else first_line(failure)[:200]
                )
                simplifier_broke = (
                    f"{simplifier} {_version(simplifier)} broke the graph (ONNX Runtime disagrees with PyTorch on "
                    f"the simplified graph: {broke}); the unsimplified graph, which passes the check, was written"
                )
                notes.append(simplifier_broke)
            proto, report, simplifier = plain, plain_report, None
        if report.nothing_compared:  # (real images may give no detection: said, not refused)
            notes.append(Notice(
                f"the ONNX Runtime check compared nothing: every output ({', '.join(report.empty_outputs)}) is "
                f"empty on the {report.n} inputs from {report.source} (a detector that found no object?), so "
                "the export is not checked; check it on images the model finds objects in (data_name)",
                "data_name",
            ))  # fmt: skip
        elif not report.passed:
            amp = amplifying_norm(model)
            why = (
                f"; {amp[0]} multiplies its input by up to {amp[1]:,.0f} (its running variance is near zero): "
                "ONNX Runtime folds it into the layer before, where float32 rounding grows as much, which "
                "likely explains the difference"
                if amp is not None and amp[1] >= AMPLIFYING_NORM
                else ""
            )
            frozen = [n for n in notes if n.startswith((TRACE_BRANCH, TRACE_VALUES))]
            if frozen and not why:  # inputs that took another path than the example's
                why = "; possible cause: " + "; ".join(frozen)
            # the check's batches (in chunks) against the traced one: a size the trace froze at its batch?
            runs = {min(report.n, CHECK_CHUNK), report.n % CHECK_CHUNK or CHECK_CHUNK}
            if dynamic_batch and runs != {len(x)} and not why:
                at = f"checked at batch {min(report.n, CHECK_CHUNK)}, traced at {len(x)}"
                why = f"; possible cause ({at}): {FIXED_BATCH_HINT}"
            if report.random_forward:  # (no exporter or opset matches a forward that draws)
                raise ExportCheckFailed(
                    f"ONNX Runtime disagrees with PyTorch: {report.summary()}; PyTorch itself gives another result "
                    "for the same inputs on each run: the forward draws random numbers (e.g. F.dropout(x, "
                    f"training=True), a dropout left on in eval mode); make it deterministic in eval mode; {path} "
                    "was not written",
                    reason=f"{report.summary()}; the model's forward draws random numbers",
                )
            if report.postprocessed:  # (no exporter or opset puts near-tied detections in PyTorch's order)
                raise ExportCheckFailed(
                    f"ONNX Runtime disagrees with PyTorch: {report.summary()}; the outputs are {POSTPROCESSED}, "
                    f"so this check cannot hold them; {DETECTION_EXPORT_CHECK}; {path} was not written",
                    param="validate",
                    reason=f"{report.summary()}; the outputs are {POSTPROCESSED}",
                )
            tries = {  # (never what the export already did)
                name: text
                for name, text, done in (("opset", "opset 18", got_opset == 18), ("exporter", "exporter dynamo",
                                         used == "dynamo"), ("simplify", "simplify=False", simplifier is None))
                if not done
            }  # fmt: skip
            tried = list(tries.values())
            tried_text = " or ".join(tried) if len(tried) < 3 else f"{', '.join(tried[:-1])}, or {tried[-1]}"
            raise ExportCheckFailed(
                f"ONNX Runtime disagrees with PyTorch: {report.summary()}{why}; {path} was not written "
                f"({f'try {tried_text}; ' if tried else ''}validate=False skips the check)",
                param=(*tries, "validate"),
                reason=f"{report.summary()}{why}",
            )
    meta = meta or {}
    md = build_metadata(
        arch=arch, recipe=recipe, input_shape=shape, mean=mean if mean is not None else meta.get("mean"),
        std=std if std is not None else meta.get("std"), data=None if inputs is None or not inputs.real
        else inputs.source.split(" ")[0], exporter=used, opset=got_opset, validation=report,
        width=meta.get("uniform_width"), class_names=meta.get("class_names"),
    )  # fmt: skip
    if ultralytics:  # what ultralytics' AutoBackend reads: YOLO("model.onnx") keeps names, task, size
        md.update(yolo.export_metadata(model, (c, h, w), batch))
        if dynamic_batch:
            notes.append(
                f"ultralytics' YOLO() takes an ONNX with a dynamic batch axis as dynamic in height and width "
                f"too and letterboxes to another size than this file's {h}x{w}: predict with imgsz={h if h == w else [h, w]} "
                "and rect=False there, or export with a fixed batch for YOLO(); TensorRT uses the batch axis as is"
            )
    onnx.helper.set_model_props(proto, md)
    data = proto.SerializeToString()
    atomic_write_bytes(out, data)
    outputs = [o.name for o in proto.graph.output]
    for n in notes:
        log.info(n)
    return OnnxExportResult(
        path=out, opset=got_opset, exporter=used, input_name=proto.graph.input[0].name, output_names=outputs,
        input_shape=shape, dynamic_batch=dynamic_batch, simplifier=simplifier, nodes=len(proto.graph.node),
        params=_count_params(proto), size_bytes=len(data), validation=report, metadata=md, warnings=notes,
        simplifier_broke=simplifier_broke, postprocessed=postprocessed_detections(probe),
        score_outputs=score_tensors(probe),
    )  # fmt: skip


def check_dynamic_batch(loaded: LoadedModel, dynamic_batch: bool, batch: int = 1) -> None:
    """Refuse ``dynamic_batch`` for a torch.export program exported for a fixed batch (its guards
    reject any other batch, the one export probes a dynamic batch at included), and an export that
    runs a program exported with a dynamic batch at a batch outside its range: a dynamic batch is
    checked at one image and probed at ``max(batch, 2)`` and one more; a fixed one runs at ``batch``."""
    if loaded.kind != "exported":
        return
    from edgeslim.checkpoint import exported_batch_range, exported_input_shapes

    ep = loaded.meta["exported_program"]
    shapes = exported_input_shapes(ep)
    if dynamic_batch and shapes and shapes[0] and shapes[0][0] is not None:
        raise EdgeslimError(
            f"{loaded.path} was exported for a fixed batch of {shapes[0][0]}, so it cannot be exported with "
            "dynamic_batch: drop it, or re-export the program with a dynamic batch (torch.export's dynamic_shapes)",
            param="dynamic_batch",
        )
    took = exported_batch_range(ep)
    if took is None:
        return
    low, high = took
    probe = max(batch, 2)
    runs = (1, probe, probe + 1) if dynamic_batch else (batch,)
    if all(low <= b and (high is None or b <= high) for b in runs):
        return
    span = f"{low} to {high}" if high is not None else f"{low} or more"
    if dynamic_batch:
        raise EdgeslimError(
            f"{loaded.path} takes batches of {span} only, and an export with dynamic_batch also runs it on 1 image "
            f"alone (its check) and on {probe} and {probe + 1} images (its probe): re-export the program with "
            "batches from 1 (torch.export's dynamic_shapes), or export a fixed batch N in that range",
            param=("dynamic_batch", "batch"),
        )
    raise EdgeslimError(
        f"{loaded.path} takes batches of {span} only, and export runs it on {batch} image(s) at a time: give "
        "batch N in that range",
        param="batch",
    )


def export_loaded(
    loaded: LoadedModel,
    path: str | Path,
    *,
    input_shape: tuple[int, int, int] | str | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    n_validate: int | None = None,
    **kw: Any,
) -> OnnxExportResult:
    """:func:`export_onnx` for a :class:`~edgeslim.checkpoint.LoadedModel`: shape, data set,
    normalization, architecture and recipe are taken from the checkpoint where it has them;
    ``n_validate`` None: :func:`~edgeslim.export.validate.check_images` (as ``edgeslim export``)."""
    from edgeslim.export.validate import check_images, real_inputs

    if input_shape is None:
        if loaded.input_shape is None:  # the spec's, or the shape a torch.export program fixes
            raise EdgeslimError(
                f"{loaded.path} is {loaded.described} that records no input shape; pass input_shape C,H,W",
                param="input_shape",
            )
        input_shape = loaded.input_shape
    shape = parse_input_shape(input_shape)
    check_dynamic_batch(loaded, bool(kw.get("dynamic_batch")), int(kw.get("batch", 1)))
    inputs = kw.pop("inputs", None)
    if inputs is None and kw.get("validate", True):
        inputs = real_inputs(
            shape,
            data=data,
            data_dir=data_dir,
            meta=loaded.meta,
            n=n_validate if n_validate is not None else check_images(shape),
            skip="validate=False",
        )
    return export_onnx(
        loaded.model, path, shape, inputs=inputs, arch=loaded.spec.arch if loaded.spec else loaded.kind,
        recipe=loaded.recipe, meta=loaded.meta, **kw,
    )  # fmt: skip


def _check_float32(model: nn.Module, failure: Exception) -> None:
    """Refuse a float16/bfloat16 model that ``failure`` stopped on export's float32 input (the pipelines
    widen a Python model on load; a compiled one, whose code may fix the type, cannot be widened; one
    whose forward casts its input to its own dtype runs and is exported as it is)."""
    from edgeslim.models.user import low_precision

    dtype = low_precision(model)
    if dtype is not None:
        raise EdgeslimError(
            f"the model's weights are {str(dtype).removeprefix('torch.')} and ONNX export runs it in float32; "
            "give it in float32: model.float(), or for TorchScript or a torch.export program, trace or export "
            "the model again after model.float() (fp16 comes from the TensorRT build: precision fp16)",
            param="precision",
        ) from failure


@functools.wraps(_export_onnx)
def export_onnx(model: nn.Module, *args: Any, **kwargs: Any) -> OnnxExportResult:
    # the model is run in eval mode on the CPU; its modes and device are left as they were
    with _left_as_given(model):
        return _export_onnx(model, *args, **kwargs)
