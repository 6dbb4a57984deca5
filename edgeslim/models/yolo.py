"""Ultralytics YOLO models: ``yolo:yolov8n``, ``yolo:yolo11n-seg``, ``yolo:path/to/model.yaml`` (extra ``yolo``).

A name without a path is the ultralytics model yaml of that name (``yolov8n`` -> ``yolov8n.yaml``,
shipped with ultralytics; random weights, nothing is downloaded). A ``.yaml`` path is built the same
way. ``num_classes`` and ``in_channels`` are passed to the yaml builder. The task (detect /
segment / pose / obb / classify) follows the name's suffix.

An ultralytics ``.pt`` checkpoint is a pickle (loading it runs code), so no architecture name
loads one: :func:`load_yolo_checkpoint` does, in Python, with ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from torch import nn

from edgeslim.errors import EdgeslimError, require
from edgeslim.models.registry import register_prefix

_TASKS = {
    "-seg": "SegmentationModel",
    "-pose": "PoseModel",
    "-obb": "OBBModel",
    "-cls": "ClassificationModel",
}
_NAMES = [f"{v}{s}{t}" for v in ("yolov8", "yolo11") for s in "nsmlx" for t in ("", *_TASKS)]


def list_yolo_models() -> list[str]:
    """Common ultralytics yaml names (any name ultralytics resolves works; [] without ultralytics)."""
    return list(_NAMES) if importlib.util.find_spec("ultralytics") is not None else []


def _tasks(why: str) -> Any:
    """``ultralytics.nn.tasks``, imported without its side effects on this process: ultralytics
    replaces ``PIL.Image.open`` by a wrapper that, on an unreadable image, pip-installs ``pi-heif``
    (and fails where it cannot). PIL's own function is put back, and auto-install stays off unless
    the user set ``YOLO_AUTOINSTALL``; edgeslim reads images itself and never uses that wrapper."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from PIL import Image

    pil_open = Image.open
    try:
        return require("ultralytics.nn.tasks", "yolo", why)
    finally:
        Image.open = pil_open


def build_yolo_model(name: str, num_classes: int = 80, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """An ultralytics model from a yaml name/path (random weights) or a ``.pt`` checkpoint."""
    if name.endswith(".pt"):
        raise EdgeslimError(
            f"yolo:{name} is an ultralytics checkpoint, a pickle that runs code when loaded; load it in Python "
            "with edgeslim.models.yolo.load_yolo_checkpoint(path, trust_pickle=True), or use the model's yaml"
        )
    tasks = _tasks("for yolo: models")
    stem = Path(name).stem
    cls_name = next((c for s, c in _TASKS.items() if stem.endswith(s)), "DetectionModel")
    cfg = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    try:
        return getattr(tasks, cls_name)(cfg, ch=in_channels, nc=num_classes, verbose=False, **kwargs)
    except (FileNotFoundError, AttributeError, KeyError) as exc:
        raise EdgeslimError(
            f"cannot build yolo:{name} ({type(exc).__name__}: {str(exc)[:120]}); use an ultralytics yaml name "
            "such as yolov8n or yolo11n-seg, or a path to a .yaml or .pt file"
        ) from exc


def load_yolo_checkpoint(path: str, trust_pickle: bool = False) -> nn.Module:
    """The model of an ultralytics ``.pt`` checkpoint (float32, eval mode); it is a pickle, so only
    with ``trust_pickle=True`` (only for files you trust)."""
    if not trust_pickle:
        raise EdgeslimError(
            f"{path} unpickles a file, which can run arbitrary code; pass trust_pickle=True if you trust it"
        )
    if not Path(path).is_file():
        raise EdgeslimError(f"{path}: no such file")
    tasks = _tasks("for ultralytics checkpoints")
    model, _ = tasks.load_checkpoint(path)
    return model.float().eval()


register_prefix("yolo", build_yolo_model, list_yolo_models)
