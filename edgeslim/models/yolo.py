"""Ultralytics YOLO models: ``yolo:yolov8n``, ``yolo:yolo11n-seg``, ``yolo:path/to/model.yaml``,
``yolo:best.pt`` (extra ``yolo``).

A name without a path is the ultralytics model yaml of that name (``yolov8n`` -> ``yolov8n.yaml``,
shipped with ultralytics; random weights, nothing is downloaded). A ``.yaml`` path is built the same
way. The model keeps the yaml's own ``nc`` unless ``num_classes`` is given; ``in_channels`` is
passed to the yaml builder. The task (detect / segment / pose / obb / classify) follows the
name's suffix. Without an input shape, yolo models are measured at 3x640x640, ultralytics'
default ``imgsz`` (:func:`yolo_defaults`); a training checkpoint at the size it was trained at
(:func:`at_trained_size`).

``yolo:PATH.pt`` is an ultralytics checkpoint (the ``best.pt`` training writes, or
``YOLO.save``): a pickle, so loading it runs code, and the registry builds it only with
``trust_pickle=True`` (``--trust-pickle``); it keeps its own classes. :func:`load_yolo_checkpoint`
does the same in Python, and :func:`save_ultralytics_checkpoint` writes one (of a slim YOLO too). A bare model file that turns out to be an ultralytics checkpoint is
recognised by :func:`is_ultralytics_checkpoint` (read from its pickle's opcodes, nothing is
unpickled) and loaded the same way.

ONNX: :func:`prepare_for_export` sets the model up as ultralytics' own exporter does, so the
export has ultralytics' outputs (``output0`` [N, 4+nc, anchors] for a detector) instead of the
raw head maps (:func:`edgeslim.export.onnx_export.export_onnx` calls it for ultralytics models).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from edgeslim.errors import EdgeslimError, first_line, require
from edgeslim.models.registry import register_prefix
from edgeslim.utils.onnx_graph import MODEL_YAML_KEY

_TASKS = {
    "-seg": "SegmentationModel",
    "-pose": "PoseModel",
    "-obb": "OBBModel",
    "-cls": "ClassificationModel",
}
_NAMES = [f"{v}{s}{t}" for v in ("yolov8", "yolo11") for s in "nsmlx" for t in ("", *_TASKS)]
#: the family's prefix: ``yolo:NAME``
PREFIX = "yolo"
#: ultralytics' default image size: the input (H, W) of a yolo model when none is given
DEFAULT_IMGSZ = (640, 640)
#: suffixes of an ultralytics checkpoint (a pickle) in a ``yolo:`` name
CHECKPOINT_SUFFIXES = (".pt",)  # ultralytics' loader asserts .pt
#: largest ``data.pkl`` read when checking whether a file is an ultralytics checkpoint
_MAX_PICKLE_BYTES = 64 << 20


def list_yolo_models() -> list[str]:
    """Common ultralytics yaml names (any name ultralytics resolves works; [] without ultralytics)."""
    return list(_NAMES) if importlib.util.find_spec("ultralytics") is not None else []


def _import_quietly(module: str, why: str) -> Any:
    """``module`` of ultralytics, imported without its side effects on this process: ultralytics
    replaces ``PIL.Image.open`` by a wrapper that, on an unreadable image, pip-installs ``pi-heif``
    (and fails where it cannot). PIL's own function is put back, and auto-install stays off unless
    the user set ``YOLO_AUTOINSTALL`` (ultralytics reads it once, at import; the environment is
    restored after); edgeslim reads images itself and never uses that wrapper. The three lines
    ultralytics logs when it creates its settings file (the first import on a machine) are left out:
    they would stand before any edgeslim output, a refusal's one line included."""
    from PIL import Image

    pil_open = Image.open
    unset = "YOLO_AUTOINSTALL" not in os.environ
    if unset:
        os.environ["YOLO_AUTOINSTALL"] = "false"
    ultra_log = logging.getLogger("ultralytics")  # (the logger ultralytics configures as it is imported)
    ultra_log.addFilter(_no_settings_notice)
    try:
        return require(module, why)
    finally:
        Image.open = pil_open
        ultra_log.removeFilter(_no_settings_notice)
        if unset:
            os.environ.pop("YOLO_AUTOINSTALL", None)


def _no_settings_notice(record: logging.LogRecord) -> bool:
    """False for ultralytics' "Creating new Ultralytics Settings ..." record (a logging filter)."""
    return not str(record.msg).startswith("Creating new Ultralytics Settings")


class _RefusedCache(FileNotFoundError):
    """A label cache not loaded (ultralytics treats it as missing and rebuilds it)."""


@contextlib.contextmanager
def safe_label_caches() -> Any:
    """ultralytics' label caches read without running code for the block.

    A data set's ``labels.cache`` (beside its labels; ``np.save`` of a pickled dict) is unpickled by
    ultralytics' data sets as they are built (``np.load(allow_pickle=True)``): a file that comes with
    a data set (a downloaded zip's) can run code that way. Here it is read by
    :func:`~edgeslim.utils.numpy_pickle.load_npy`; a cache naming any other global is not loaded,
    with a warning, and ultralytics rebuilds it as it rebuilds a stale one. Trusting a model's pickle
    (``trust_pickle``) is no trust in a data set: this holds whatever it is (ultralytics loads a model
    through its own ``torch.load``, not through this reader)."""
    import pickle

    from edgeslim.utils.numpy_pickle import load_npy

    modules = [
        _import_quietly(m, "to train a YOLO") for m in ("ultralytics.data.utils", "ultralytics.data.dataset")
    ]
    name = "load_dataset_cache_file"

    def load(path: Any) -> dict:
        try:
            return load_npy(path).item()
        except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError) as exc:
            logging.getLogger(__name__).warning(
                "%s was not loaded (%s: it can run code when unpickled); ultralytics rebuilds it from the labels",
                path,
                first_line(exc),
            )
            raise _RefusedCache(str(path)) from exc

    saved = [(m, getattr(m, name)) for m in modules if hasattr(m, name)]
    for m, _ in saved:
        setattr(m, name, load)
    try:
        yield
    finally:
        for m, fn in saved:
            setattr(m, name, fn)


def _tasks(why: str) -> Any:
    """``ultralytics.nn.tasks`` (see :func:`_import_quietly`)."""
    return _import_quietly("ultralytics.nn.tasks", why)


@contextlib.contextmanager
def logs_on_stderr(quiet: bool = False) -> Any:
    """ultralytics' log lines on stderr for the block (its handlers write to stdout, which may
    carry ``--json``); ``quiet``: its INFO lines (``Overriding model.yaml nc=80 with nc=3``) off,
    its warnings still shown."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    if quiet:
        logger.setLevel(max(level, logging.WARNING))
    streams = [
        (h, _set_stream(h, sys.stderr)) for h in logger.handlers if isinstance(h, logging.StreamHandler)
    ]
    try:
        yield
    finally:
        logger.setLevel(level)
        for h, stream in streams:
            if stream is not None:
                _set_stream(h, sys.stdout if getattr(stream, "closed", False) else stream)


def _no_info() -> Any:
    """ultralytics' INFO lines off (and its warnings on stderr) for the block."""
    return logs_on_stderr(quiet=True)


def _set_stream(handler: logging.StreamHandler, stream: Any) -> Any:
    """``handler.setStream(stream)``, also when its current stream was closed (a finished capture:
    ``setStream`` flushes it and raises); returns the previous stream."""
    try:
        return handler.setStream(stream)
    except ValueError:
        old, handler.stream = handler.stream, stream
        return old


def ultralytics_yolo(source: str) -> Any:
    """``ultralytics.YOLO(source)`` (a yaml name or path, or a checkpoint: a pickle, only for files
    the caller trusts), imported without its side effects on this process (see :func:`_tasks`)."""
    yolo_cls = _import_quietly("ultralytics", "to train a YOLO").YOLO
    try:
        with _no_info():
            return yolo_cls(source)
    except (FileNotFoundError, AttributeError, KeyError) as exc:
        raise EdgeslimError(
            f"cannot build a YOLO from {source} ({type(exc).__name__}: {str(exc)[:120]}); use an ultralytics "
            "yaml name such as yolov8n, or a path to a .yaml or .pt file"
        ) from exc


def is_checkpoint_name(name: str) -> bool:
    """True when ``yolo:NAME`` names an ultralytics checkpoint (``best.pt``), which unpickles."""
    return Path(name).suffix.lower() in CHECKPOINT_SUFFIXES


def _literal_nn_call(spec: Any) -> bool:
    """True when ``spec`` is ``nn.Name(...)`` or ``torch.nn.Name(...)`` with literal arguments, the
    only form of a yaml's ``activation`` that names no code (ultralytics ``eval``s it otherwise)."""
    import ast

    from torch import nn as tnn

    try:
        call = ast.parse(str(spec).strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            return False
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or [*parts[1:], node.id] not in (["nn"], ["nn", "torch"]):
            return False
        cls = getattr(tnn, parts[0], None) if parts else None
        for arg in (*call.args, *(k.value for k in call.keywords)):
            ast.literal_eval(arg)
        return isinstance(cls, type) and issubclass(cls, tnn.Module)
    except (SyntaxError, ValueError, TypeError):
        return False


def yaml_code(name: str) -> str:
    """What in the model yaml of ``yolo:NAME`` would run code when ultralytics builds it (an
    ``activation`` it ``eval``s that is not a literal ``nn.Name(...)`` call, a layer that is not an
    ``nn.Module`` class); "" for a yaml of plain layers, a checkpoint name, or a yaml that cannot be
    read (the build reports that)."""
    if is_checkpoint_name(name):
        return ""
    tasks = _tasks("for yolo: models")
    try:
        with _no_info():
            d = tasks.yaml_model_load(name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    except Exception:  # noqa: BLE001 - a missing or malformed yaml: build_yolo_model says so
        return ""
    act = d.get("activation")
    if act and not _literal_nn_call(act):
        return f"activation {str(act)[:60]!r}"
    from torch import nn as tnn

    for layer in [*(d.get("backbone") or []), *(d.get("head") or [])]:
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4):
            continue  # (a malformed row is no code: the build reports it)
        m = str(layer[2])
        if m.startswith("nn."):
            cls = getattr(tnn, m[3:], None)
        elif m.startswith("torchvision.ops."):
            cls = getattr(importlib.import_module("torchvision.ops"), m[16:], None)
        else:
            cls = getattr(tasks, m, None)
        if not _plain_layer(cls, tasks):
            return f"layer {m[:60]!r}"
    return ""


def _plain_layer(cls: Any, tasks: Any) -> bool:
    """Whether a yaml's layer class builds a layer from its arguments and nothing else: an
    ``nn.Module`` of torch, torchvision.ops or ``ultralytics.nn.modules``, but not a whole model (one
    built from a dict of its own yaml, whose ``activation`` ultralytics ``eval``s) nor ``TorchVision``
    (which downloads and unpickles weights)."""
    from torch import nn as tnn

    if not (isinstance(cls, type) and issubclass(cls, tnn.Module)):
        return False
    if cls.__module__.split(".")[0] == "torch" or cls.__module__.startswith("torchvision.ops"):
        return True
    base = getattr(tasks, "BaseModel", None)
    return (
        cls.__module__.startswith("ultralytics.nn.modules")
        and not (isinstance(base, type) and issubclass(cls, base))
        and cls.__name__ != "TorchVision"
    )


def names_code(name: str) -> bool | str:
    """Whether building ``yolo:NAME`` runs code from a file: a checkpoint unpickles (True); a yaml
    that names code gets the reason (see :func:`yaml_code`)."""
    if is_checkpoint_name(name):
        return True
    code = yaml_code(name)
    return f"evaluates code its yaml names ({code})" if code else False


def yolo_defaults(name: str) -> dict[str, Any]:
    """What a ``yolo:`` name is built with when the user gives nothing: its own classes (the
    yaml's ``nc``, or the checkpoint's) and ultralytics' default 640x640 input."""
    return {"num_classes": None, "input_size": DEFAULT_IMGSZ}


def trained_imgsz(model: Any) -> tuple[int, int] | None:
    """The image size an ultralytics model loaded from a training checkpoint was trained at (its
    ``args["imgsz"]``), as (H, W); None for other models or without a record."""
    if not is_ultralytics_model(model):
        return None
    args = getattr(model, "args", None)
    size = args.get("imgsz") if isinstance(args, dict) else None
    if isinstance(size, int) and size > 0:
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return (int(size[0]), int(size[1]))
    return None


def at_trained_size(spec: Any, model: Any) -> Any:
    """``spec`` at the image size ``model`` was trained at, when it records one (an ultralytics
    training checkpoint) and ``spec`` has another; else ``spec`` itself."""
    size = trained_imgsz(model)
    if size is None or tuple(spec.input_shape[1:]) == size:
        return spec
    import dataclasses

    return dataclasses.replace(spec, input_size=size)


def max_stride(model: nn.Module) -> int:
    """An ultralytics model's largest stride (32 for the P3-P5 detectors)."""
    return int(max(float(s) for s in getattr(model, "stride", [32.0])))


def check_input_size(model: nn.Module, shape: Any) -> None:
    """Refuse a ``(C, H, W)`` whose sides are not multiples of an ultralytics model's largest stride
    (its neck concatenates maps of neighbouring strides, which then differ by one pixel), or whose
    channels are not those its first conv takes (refused first: nothing reads images for it)."""
    if not is_ultralytics_model(model) or shape is None or len(shape) != 3:
        return
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and int(shape[0]) != first.in_channels:
        raise EdgeslimError(
            f"the YOLO takes {first.in_channels}-channel images (its first conv's input), not {shape[0]}; give "
            f"input_shape {first.in_channels},{shape[1]},{shape[2]}",
            param="input_shape",
        )
    stride = max_stride(model)
    h, w = int(shape[1]), int(shape[2])
    if h % stride or w % stride:
        fit = ",".join(str(max(stride, round(v / stride) * stride)) for v in (h, w))
        raise EdgeslimError(
            f"a YOLO takes images whose sides are multiples of {stride} (its largest stride), not {h}x{w}; "
            f"give input_shape {shape[0]},{fit}",
            param="input_shape",
        )


def yolo_classes(model: nn.Module, input_shape: tuple[int, int, int] | None = None) -> int:
    """The number of classes of an ultralytics model (its yaml's ``nc``, kept up to date by the
    builder; the head's ``nc`` for a model without a yaml); ``input_shape`` is not needed."""
    nc = (getattr(model, "yaml", None) or {}).get("nc")
    if nc is None:
        head = getattr(model, "model", [None])[-1]
        nc = getattr(head, "nc", None)
    if nc is None:
        raise EdgeslimError(f"cannot tell the number of classes of {type(model).__name__}; give num_classes")
    return int(nc)


def build_yolo_model(
    name: str, num_classes: int | None = None, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """An ultralytics model from a yaml name/path (random weights; ``num_classes`` None: the
    yaml's ``nc``) or, from a ``.pt`` checkpoint, the checkpoint's model with its own classes.

    Only :func:`~edgeslim.models.registry.create_model` should call this for a checkpoint: it
    refuses one without ``trust_pickle`` (the family registers ``runs_code`` for ``.pt`` names)."""
    if is_checkpoint_name(name):
        model = load_yolo_checkpoint(name, trust_pickle=True)
        nc = yolo_classes(model)
        if num_classes is not None and num_classes != nc:
            raise EdgeslimError(
                f"yolo:{name} has {nc} classes, not {num_classes}: an ultralytics checkpoint keeps its "
                "classes (drop num_classes, or give its yaml with weights=FILE and num_classes)",
                param="num_classes",
            )
        return model
    tasks = _tasks("for yolo: models")
    stem = Path(name).stem
    cls_name = next((c for s, c in _TASKS.items() if stem.endswith(s)), "DetectionModel")
    cfg = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    try:
        with _no_info():
            return getattr(tasks, cls_name)(cfg, ch=in_channels, nc=num_classes, verbose=False, **kwargs)
    except (FileNotFoundError, AttributeError, KeyError) as exc:
        raise EdgeslimError(
            f"cannot build yolo:{name} ({type(exc).__name__}: {str(exc)[:120]}); use an ultralytics yaml name "
            "such as yolov8n or yolo11n-seg, or a path to a .yaml or .pt file"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a yaml of the user's that ultralytics cannot build is bad input
        if not Path(cfg).is_file():
            raise
        raise EdgeslimError(
            f"ultralytics cannot build a model from {cfg} ({type(exc).__name__}: {str(exc)[:120]}); fix the "
            "yaml (its backbone and head rows are [from, repeats, module, args])"
        ) from exc


def load_yolo_checkpoint(path: str, trust_pickle: bool = False) -> nn.Module:
    """The model of an ultralytics ``.pt`` checkpoint (float32, eval mode); it is a pickle, so only
    with ``trust_pickle=True`` (only for files you trust)."""
    if not trust_pickle:
        raise EdgeslimError(
            f"{path} unpickles a file, which can run arbitrary code; pass trust_pickle=True if you trust it",
            param="trust_pickle",
        )
    if not Path(path).is_file():
        raise EdgeslimError(f"ultralytics checkpoint {path} does not exist; check the path")
    with open(path, "rb") as f:  # (an OS error, a permission say, comes through as itself)
        is_zip = zipfile.is_zipfile(f)
    if not is_zip:  # what torch.save writes (a file cut off loses its zip directory)
        raise EdgeslimError(
            f"{path} is not an archive torch.save wrote, as ultralytics checkpoints are: truncated or corrupt "
            "(copy it again), or another kind of file (give the best.pt or last.pt an ultralytics training wrote)"
        )
    tasks = _tasks("for ultralytics checkpoints")
    try:
        with _no_info():
            model, _ = tasks.load_checkpoint(path)
    except ImportError as exc:  # the pickle names a module that is not installed (no auto-install here)
        raise EdgeslimError(
            f"{path} needs the module {getattr(exc, 'name', None) or str(exc)[:80]!r}, which is not installed; "
            "install it (the ultralytics version that wrote the checkpoint) and retry"
        ) from exc
    except (TypeError, KeyError, AttributeError, EOFError, RuntimeError, AssertionError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the OS's (disk, permission): said as such
            raise
        text = first_line(exc)
        raise EdgeslimError(
            f"{path} is not an ultralytics checkpoint ({type(exc).__name__}: {text[:160]}); give the best.pt "
            "or last.pt an ultralytics training wrote, or a file saved with YOLO.save"
        ) from exc
    return model.float().eval()


def save_ultralytics_checkpoint(model: nn.Module, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write the ultralytics ``model`` (a slim one surgery cut included; a ``YOLO`` object is taken as
    its ``.model``) as a checkpoint ultralytics itself loads, ``YOLO(path)``, for validation, prediction
    and export (``yolo val/predict/export model=PATH``, the ``format=engine`` route on a Jetson). Not
    for training as it is: ``yolo train`` and ``YOLO(path).train()`` rebuild the network from its yaml,
    dense, and re-initialise what does not fit; fine-tune before the cut (slimming's recovery phase),
    or give ``train`` a trainer whose ``get_model`` returns the loaded network (docs/export.md).

    The file is the dict ``YOLO.save`` writes: the model in half precision as ultralytics' trainer and
    ``YOLO.save`` store it (an edgeslim checkpoint keeps float32: twice the size), with its class names,
    yaml, stride, task and training arguments (``train_args``, where it records them). Needs no other
    file (an edgeslim slim checkpoint rebuilds from the file it was cut from). Written to a temporary
    file and renamed; an existing ``path`` only with ``force``. Like ultralytics' own, the file is a
    pickle: loading it runs code."""
    import datetime

    import torch

    from edgeslim.utils.io import atomic_path, check_output_path

    engine = sys.modules.get("ultralytics.engine.model")  # (imported where a YOLO exists)
    if isinstance(model, getattr(engine, "Model", ())) and is_ultralytics_model(
        getattr(model, "model", None)
    ):
        model = model.model  # a YOLO object: the network it holds, yolo.model
    if not is_ultralytics_model(model):
        raise EdgeslimError(
            f"an ultralytics checkpoint holds an ultralytics network (a YOLO object or its .model, e.g. a "
            f"DetectionModel), not a {type(model).__name__}; give one, or save this model as an edgeslim "
            "checkpoint",
            param="model",
        )
    if (
        Path(path).suffix.lower() not in CHECKPOINT_SUFFIXES
    ):  # (ultralytics loads .pt files as checkpoints only)
        raise EdgeslimError(
            f"{path} should end in .pt (ultralytics loads checkpoints by that name)", param="path"
        )
    out = check_output_path(path, force, "path")
    if overflow := fp16_overflow(model):
        raise EdgeslimError(f"{overflow}; deploy the model's ONNX export (float32) instead", param="model")
    half = copy.deepcopy(model).half().to(memory_format=torch.contiguous_format).eval()
    if "pt_path" in vars(half):  # (the file it was loaded from, the dense one: ultralytics sets it on load)
        del half.pt_path
    info = task_and_names(model)
    half.task, half.names = info["task"], info["names"]
    args = getattr(model, "args", None)
    ultralytics = sys.modules["ultralytics"]  # (imported: the model is one)
    ckpt = {
        "ema": None,
        "model": half,
        "train_args": dict(args) if isinstance(args, dict) else {},
        "date": datetime.datetime.now().astimezone().isoformat(),
        "version": getattr(ultralytics, "__version__", ""),
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return out


def fp16_overflow(model: nn.Module) -> str | None:
    """What of ``model`` half precision, in which ultralytics stores checkpoints, cannot hold (finite
    values beyond 65504, which would be stored as infinity), in words; None when it holds all."""
    import torch

    bad = [
        k for k, v in model.state_dict().items()
        if v.is_floating_point() and bool(torch.isfinite(v).all()) and not bool(torch.isfinite(v.half()).all())
    ]  # fmt: skip
    if not bad:
        return None
    return (
        f"{len(bad)} tensors of the model ({bad[0]} first) hold values beyond FP16's range (65504), in which "
        "ultralytics stores checkpoints"
    )


def is_ultralytics_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a ``torch.save`` zip whose pickle is a dict that holds objects of
    ultralytics classes (an ultralytics checkpoint; a whole pickled model is not one). Read from the pickle's opcodes with :mod:`pickletools` (the module
    of each ``GLOBAL``, or of a ``STACK_GLOBAL`` from the two strings before it): nothing is
    unpickled or imported, so this is safe on untrusted files."""
    import pickletools

    try:
        with zipfile.ZipFile(path) as zf:
            info = next((i for i in zf.infolist() if i.filename.endswith("data.pkl")), None)
            if info is None or info.file_size > _MAX_PICKLE_BYTES:
                return False
            data = zf.read(info)
        recent: list[str] = []  # the last strings pushed: a STACK_GLOBAL's module and name
        ops = pickletools.genops(data)
        first = next((op.name for op, _, _ in ops if op.name not in ("PROTO", "FRAME")), "")
        if first != "EMPTY_DICT":  # a checkpoint is a dict; a whole pickled module is not one
            return False
        for op, arg, _ in ops:
            if op.name in ("GLOBAL", "INST"):
                module = str(arg).split(" ", 1)[0]
            elif op.name == "STACK_GLOBAL":
                module = recent[-2] if len(recent) >= 2 else ""
            else:
                if "UNICODE" in op.name and isinstance(arg, str):
                    recent = [*recent[-1:], arg]
                continue
            if module.split(".", 1)[0] == "ultralytics":
                return True
    except Exception:  # noqa: BLE001 - malformed zips and pickles raise many types: not one
        return False
    return False


def checkpoint_arch(path: str | os.PathLike) -> str:
    """The architecture name that loads the ultralytics checkpoint at ``path``: ``yolo:ABSPATH``."""
    p = Path(path)
    if not is_checkpoint_name(p.name):
        raise EdgeslimError(
            f"{p} is an ultralytics checkpoint but not named *.pt; rename it to {p.stem}.pt (as ultralytics names them)"
        )
    return f"{PREFIX}:{p.expanduser().resolve()}"


def is_ultralytics_model(model: Any) -> bool:
    """True for an ultralytics model (an instance of ``ultralytics.nn.tasks.BaseModel``). Imports
    nothing: without ``ultralytics.nn.tasks`` imported, no object is one."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    base = getattr(tasks, "BaseModel", None)
    return base is not None and isinstance(model, base)


def input_preprocessing(model: Any, channels: int = 3) -> dict[str, Any]:
    """How an ultralytics model's inputs are prepared, as checkpoint meta: no mean/std, pixels / 255
    in [0, 1], and images letterboxed to the input size (``fit``), as ultralytics' predictor does, or
    for a classifier scaled and centre-cropped (its ``classify_transforms``); ``{}`` for other models
    (their data set's statistics, images stretched)."""
    if not is_ultralytics_model(model):
        return {}
    classify = getattr(importlib.import_module("ultralytics.nn.modules.head"), "Classify", None)
    fit = "crop" if classify is not None and isinstance(_head(model), classify) else "letterbox"
    return {"mean": [0.0] * channels, "std": [1.0] * channels, "fit": fit}


def deployed_output(model: Any) -> Callable[[Any], Any] | None:
    """For an ultralytics model whose head is a detection head (``Detect`` and its subclasses:
    segment, pose, OBB) or a classifier: the function that picks, from its eval-mode output,
    what it returns deployed (export mode: the decoded predictions, and a segmenter's
    prototypes), leaving out the raw maps and neck features it also returns. Given to surgery
    (``prune_with_report(..., outputs=...)``), it lets the neck's P3-P5 channels shrink: YOLOv8n
    has 100% of its BN channels in prunable groups with it, 91.5% without. Ultralytics uses those
    neck features in eval and training mode for their spatial size only. ``None`` for other models."""
    if not is_ultralytics_model(model):
        return None
    heads = importlib.import_module("ultralytics.nn.modules.head")
    kinds = tuple(getattr(heads, n) for n in ("Detect", "Classify") if hasattr(heads, n))
    head = _head(model)
    if head is None or not isinstance(head, kinds):
        return None
    segment = getattr(heads, "Segment", None)
    pick = _segment_deployed if segment is not None and isinstance(head, segment) else _first_of_pair
    parts = output_parts(model)
    return DeployedOutput(pick, parts) if parts is not None else pick


class DeployedOutput:
    """An ``outputs=`` selector (:func:`deployed_output`: ``selector(result)`` picks the deployed tensors)
    that also says how a check compares them: ``parts`` (:func:`output_parts`) splits them into named
    parts, each compared on its own scale (surgery's check reads it; the graph capture calls the
    selector alone)."""

    def __init__(
        self, pick: Callable[[Any], Any], parts: Callable[[list[Any]], list[tuple[str, Any]]]
    ) -> None:
        self.pick, self.parts = pick, parts

    def __call__(self, out: Any) -> Any:
        return self.pick(out)


def output_parts(model: Any) -> Callable[[list[Any]], list[tuple[str, Any]]] | None:
    """For an ultralytics model with a detection head (``Detect`` and its subclasses, not end-to-end): a
    function that splits its deployed tensors (flat, the decoded ``[N, 4+nc+extra, anchors]`` first: torch
    tensors or numpy arrays) into named parts a check compares each on its own scale: ``boxes`` (pixels,
    hundreds), ``scores`` (sigmoids in [0, 1]), and the head's extra rows, ``mask coefficients``
    (segment), ``keypoints`` and ``keypoint visibility`` (pose: pixels and sigmoids), ``angles`` (OBB);
    the tensors after the first (a segmenter's prototypes) as they are. Compared as one tensor, the boxes
    set the scale and a score error looks hundreds of times smaller (a review: 0.022 of the scores was
    "0.2% of the output's scale"). A first tensor of another shape is returned whole. None for other
    models."""
    if not is_ultralytics_model(model):
        return None
    heads = importlib.import_module("ultralytics.nn.modules.head")
    head = _head(model)
    detect = getattr(heads, "Detect", None)
    if detect is None or not isinstance(head, detect) or bool(getattr(head, "end2end", False)):
        return None
    nc = int(head.nc)
    extra: list[tuple[str, list[int]]] = []
    kpt = getattr(head, "kpt_shape", None)
    if kpt is not None:
        nk, ndim = int(kpt[0]), int(kpt[1])
        rows = list(range(nk * ndim))
        extra = [("keypoints", [r for r in rows if ndim != 3 or r % 3 != 2])]
        extra += [("keypoint visibility", [r for r in rows if r % 3 == 2])] if ndim == 3 else []
    elif isinstance(getattr(head, "nm", None), int):
        extra = [("mask coefficients", list(range(head.nm)))]
    elif isinstance(getattr(head, "ne", None), int):
        extra = [("angles", list(range(head.ne)))]
    width = 4 + nc + sum(len(r) for _, r in extra)

    def split(tensors: list[Any]) -> list[tuple[str, Any]]:
        rest = [(f"output{i}", t) for i, t in enumerate(tensors)]
        first = tensors[0] if tensors else None
        if first is None or first.ndim != 3 or int(first.shape[1]) != width:
            return rest
        start = 4 + nc
        parts = [("boxes", first[:, :4]), ("scores", first[:, 4:start])]
        parts += [(name, first[:, [start + r for r in rows]]) for name, rows in extra]
        return parts + rest[1:]

    return split


def _head(model: nn.Module) -> nn.Module | None:
    """The last layer of an ultralytics model (its head), or None."""
    return model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None


def _first_of_pair(out: Any) -> Any:
    """``(deployed, raw)`` -> ``deployed``: an ultralytics head's eval-mode result."""
    return out[0] if isinstance(out, tuple) and len(out) == 2 else out


def _segment_deployed(out: Any) -> Any:
    """A segmenter's predictions and mask prototypes: ``((preds, proto), raw)`` from ultralytics
    8.4 on, ``(preds, (raw, coefficients, proto))`` before (the prototypes in the second part)."""
    first = _first_of_pair(out)
    if isinstance(first, Tensor) and isinstance(out, tuple) and isinstance(out[1], (tuple, list)) and out[1]:
        proto = out[1][-1]
        if isinstance(proto, Tensor) and proto.dim() == 4:
            return first, proto
    return first


def prepare_for_export(
    model: nn.Module, input_shape: tuple[int, int, int], *, dynamic: bool = False
) -> nn.Module:
    """A copy of the ultralytics ``model`` set up as ultralytics' ``Exporter`` sets it up for ONNX:
    every head in export mode with ``format="onnx"`` (``Detect`` and its subclasses return only the
    decoded ``[N, 4+nc(+extra), anchors]`` tensor, ``Segment`` also its mask prototypes,
    ``Classify`` the softmax), ``dynamic`` as asked, ``max_det`` at most the anchors of the input
    (end-to-end heads) and cached anchors dropped. ``model`` itself is left as it was."""
    heads = importlib.import_module("ultralytics.nn.modules.head")  # imported already: the model is one
    out = copy.deepcopy(model).float().eval()
    _, h, w = input_shape
    strides = [float(s) for s in getattr(out, "stride", [32.0])]
    anchors = sum(int(h / s) * int(w / s) for s in strides)
    plain = tuple(getattr(heads, n) for n in ("Classify", "SemanticSegment", "Depth") if hasattr(heads, n))
    rtdetr = getattr(heads, "RTDETRDecoder", None)
    decoders = tuple(c for c in (getattr(heads, "Detect", None), rtdetr) if c is not None)
    for m in out.modules():
        if plain and isinstance(m, plain):
            m.export, m.format = True, "onnx"
        if decoders and isinstance(m, decoders):
            m.dynamic, m.export, m.format = dynamic, True, "onnx"
            if hasattr(m, "max_det"):
                available = m.num_queries if rtdetr is not None and isinstance(m, rtdetr) else anchors
                m.max_det = min(int(m.max_det), available)
            m.shape = None  # anchors cached for another input size
    return out


def task_and_names(model: nn.Module) -> dict[str, Any]:
    """``{"task": ..., "names": {index: class name}}`` of an ultralytics model (names by index where
    it records none)."""
    tasks = importlib.import_module("ultralytics.nn.tasks")  # imported already: the model is one
    names = getattr(model, "names", None) or {i: str(i) for i in range(yolo_classes(model))}
    return {
        "task": getattr(model, "task", None) or tasks.guess_model_task(model),
        "names": dict(names) if isinstance(names, dict) else dict(enumerate(names)),
    }


def names_meta(model: Any) -> dict[str, Any]:
    """``{"names": [class name of each output]}`` of an ultralytics model, the checkpoint meta that
    keeps them in a slim checkpoint (whose architecture, names included, is rebuilt from another
    file: :func:`use_recorded_names`); ``{}`` for other models."""
    if not is_ultralytics_model(model):
        return {}
    names = task_and_names(model)["names"]
    return {"names": [str(names[i]) for i in sorted(names)]}


def use_recorded_names(model: Any, meta: dict[str, Any], where: str) -> None:
    """Give the ultralytics ``model`` rebuilt for the checkpoint ``where`` the class names its ``meta``
    records (:func:`names_meta`), warning in one line where the file it was rebuilt from now holds
    others (that file was replaced: the names would have been taken from it silently)."""
    recorded = meta.get("names")
    if not isinstance(recorded, list) or not is_ultralytics_model(model):
        return
    now = names_meta(model)["names"]
    if now != recorded:
        # (the first class they differ at; None where one list is shorter, a prefix of the other)
        differ, (was, kept) = next(
            (i, p) for i, p in enumerate(itertools.zip_longest(now, recorded)) if p[0] != p[1]
        )
        logging.getLogger(__name__).warning(
            "%s: the file it rebuilds its architecture from now holds a model with other class names (class %d: "
            "%r, recorded %r): it was replaced; the names recorded in %s are used",
            where, differ, was, kept, where,
        )  # fmt: skip
    model.names = dict(enumerate(recorded))


def export_metadata(model: nn.Module, input_shape: tuple[int, int, int], batch: int) -> dict[str, str]:
    """The ONNX ``metadata_props`` ultralytics' own export writes and its ``AutoBackend`` reads, so
    ``YOLO("model.onnx").predict(...)`` keeps the model's class names, task, stride and input size:
    ``task``, ``stride``, ``names``, ``imgsz``, ``batch``, ``channels``, ``head``, ``end2end``,
    ``args`` (``dynamic`` False: the export fixes the image size) and ``kpt_shape`` for pose,
    written as ultralytics writes them (``str`` of the Python value)."""
    c, h, w = input_shape
    head = _head(model)
    md: dict[str, Any] = {
        "description": f"{type(model).__name__} exported by edgeslim",
        **task_and_names(model),
        "stride": max_stride(model),
        "imgsz": [h, w],
        "batch": batch,
        "channels": c,
        "head": type(head).__name__ if head is not None else "",
        "end2end": bool(getattr(model, "end2end", False)),
        "args": {
            "batch": batch,
            "dynamic": False,
            "imgsz": [h, w],
            "half": False,
            "int8": False,
            "nms": False,
        },
    }
    if getattr(head, "kpt_shape", None) is not None:
        md["kpt_shape"] = list(head.kpt_shape)
    yaml_file = (getattr(model, "yaml", None) or {}).get("yaml_file")
    if yaml_file:  # (edgeslim's: the network, where its architecture is a file path; ultralytics ignores it)
        md[MODEL_YAML_KEY] = Path(str(yaml_file)).name
    return {k: str(v) for k, v in md.items()}


#: the ONNX input's name, as ultralytics' own export names it (deployment code written for its files feeds it)
EXPORT_INPUT_NAME = "images"


def export_output_names(outputs: Any) -> list[str]:
    """ONNX output names as ultralytics' own export gives them: ``output0`` (``output1``: a
    segmenter's mask prototypes)."""
    n = 1 if not isinstance(outputs, (tuple, list)) else len(outputs)
    return [f"output{i}" for i in range(n)]


def _half_of_cv1(m: nn.Module) -> None:
    """``c``: half the outputs of ``cv1`` (chunked or split in two equal parts)."""
    m.c = m.cv1.conv.out_channels // 2


def _all_of_cv1(m: nn.Module) -> None:
    """``c``: the outputs of ``cv1``."""
    m.c = m.cv1.conv.out_channels


def _hidden_of_cv1(m: nn.Module) -> None:
    """``c_``: the outputs of ``cv1`` (C3x's bottleneck width)."""
    m.c_ = m.cv1.conv.out_channels


#: ultralytics blocks (in ``ultralytics.nn.modules.block``) that keep a channel count of their own
#: beside their layers, and how it follows them after surgery (``c`` of C2f and its subclasses C3k2,
#: C2fCIB, C2fPSA, of C2fAttn, RepNCSPELAN4 and ELAN1: the split of the ``forward_split`` ultralytics'
#: exporter switches to; of PSA and C2PSA: their forward's split)
_BLOCK_WIDTHS = {
    "C2": _half_of_cv1, "C2f": _half_of_cv1, "C2fAttn": _half_of_cv1, "RepNCSPELAN4": _half_of_cv1,
    "PSA": _half_of_cv1, "C2PSA": _half_of_cv1, "SPPELAN": _all_of_cv1, "ADown": _all_of_cv1,
    "C3x": _hidden_of_cv1,
}  # fmt: skip


def block_widths() -> dict[type, Callable[[nn.Module], None]]:
    """The ultralytics block types of :data:`_BLOCK_WIDTHS` (those its imported version has), each with
    how its own channel count follows its layers; empty while ultralytics is not imported. A passive
    table: :func:`edgeslim.channels.rules.update_widths` reads it."""
    block = sys.modules.get("ultralytics.nn.modules.block")
    if block is None:
        return {}
    found = {attr: getattr(block, attr, None) for attr in _BLOCK_WIDTHS}
    return {
        cls: _BLOCK_WIDTHS[a]
        for a, cls in found.items()
        if isinstance(cls, type) and issubclass(cls, nn.Module)
    }


register_prefix(
    PREFIX, build_yolo_model, list_yolo_models,
    runs_code=names_code, defaults=yolo_defaults, classes_of=yolo_classes,
)  # fmt: skip
