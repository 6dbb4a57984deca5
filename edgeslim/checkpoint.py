"""Model files: edgeslim checkpoints, TorchScript, torch.export programs, trusted pickles.

An edgeslim checkpoint is a plain dict that loads with ``torch.load(weights_only=True)``::

    {"format": "edgeslim.checkpoint", "version": 1,
     "spec": ModelSpec.to_dict(),        # architecture to rebuild
     "recipe": None | dict,              # surgery recipe: kept channel indices per layer
     "state_dict": {...},                # weights of the (possibly slim) model
     "train_state": None | dict,         # optimizer/scheduler/slimming/RNG state for --resume
     "meta": {...}}                      # edgeslim version, data set, normalization, metrics
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim import __version__
from edgeslim.errors import EdgeslimError
from edgeslim.models.registry import ModelSpec, create_model
from edgeslim.utils.io import atomic_path

if TYPE_CHECKING:
    from torch import nn

FORMAT = "edgeslim.checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    """A model read from disk, with what is known about it."""

    model: nn.Module
    kind: str  # "checkpoint" | "torchscript" | "exported" | "pickle"
    spec: ModelSpec | None = None
    recipe: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None
    path: Path | None = None


def make_checkpoint(
    model: nn.Module,
    spec: ModelSpec,
    *,
    recipe: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict (weights are taken from ``model.state_dict()``)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_dict(),
        "recipe": recipe,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_state": train_state,
        "meta": {"edgeslim_version": __version__, **(meta or {})},
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically (temp file, fsync, rename)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def save_model(path: str | os.PathLike, model: nn.Module, spec: ModelSpec, **kw: Any) -> Path:
    """Shortcut: :func:`make_checkpoint` then :func:`save_checkpoint`."""
    return save_checkpoint(path, make_checkpoint(model, spec, **kw))


def build_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the architecture (dense spec + surgery recipe) and load the weights."""
    spec = ModelSpec.from_dict(ckpt["spec"])
    model = create_model(spec)
    if ckpt.get("recipe"):
        from edgeslim.surgery.recipe import apply_recipe

        model = apply_recipe(model, ckpt["recipe"])
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise EdgeslimError(
            f"checkpoint weights do not fit architecture {spec.arch!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} keys, e.g. "
            f"{(missing or unexpected)[0]!r}); the file was written by another model or version"
        )
    return model


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def load_model(
    path: str | os.PathLike, *, trust_pickle: bool = False, map_location: str = "cpu"
) -> LoadedModel:
    """Read any model file the toolchain accepts.

    Whole pickled ``nn.Module`` files can run arbitrary code when loaded, so they are
    refused unless ``trust_pickle`` (CLI: ``--trust-pickle``).
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise EdgeslimError(f"model file {p} does not exist; check the path")
    if p.is_dir():
        raise EdgeslimError(f"{p} is a directory; give the model file (e.g. {p / 'model.pt'})")
    names = _zip_names(p)
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        try:
            m = torch.jit.load(str(p), map_location=map_location)
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            raise EdgeslimError(f"{p} looks like TorchScript but failed to load: {exc}") from exc
        return LoadedModel(model=m, kind="torchscript", path=p)
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
        try:
            ep = torch.export.load(str(p))
        except Exception as exc:  # noqa: BLE001
            raise EdgeslimError(f"{p} looks like a torch.export program but failed to load: {exc}") from exc
        return LoadedModel(model=ep.module(), kind="exported", path=p, meta={"exported_program": ep})
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise EdgeslimError(
                f"{p} is a pickled Python object (a whole nn.Module?); loading it can run arbitrary "
                "code, so it is refused. If you trust the file, pass --trust-pickle; better, save an "
                "edgeslim checkpoint, TorchScript or torch.export program"
            ) from exc
        obj = torch.load(p, map_location=map_location, weights_only=False)
        if not isinstance(obj, torch.nn.Module):
            raise EdgeslimError(f"{p} holds a {type(obj).__name__}, not an nn.Module") from exc
        return LoadedModel(model=obj, kind="pickle", path=p)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EdgeslimError(
            f"{p} is not a readable model file ({str(exc).splitlines()[0]}); "
            "is it truncated or of another format?"
        ) from exc
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model = build_from_checkpoint(obj)
        return LoadedModel(
            model=model,
            kind="checkpoint",
            spec=ModelSpec.from_dict(obj["spec"]),
            recipe=obj.get("recipe"),
            meta=dict(obj.get("meta") or {}),
            train_state=obj.get("train_state"),
            path=p,
        )
    if isinstance(obj, dict):
        raise EdgeslimError(
            f"{p} holds a bare state_dict without an architecture; save it with "
            "edgeslim.checkpoint.save_model(path, model, ModelSpec(arch=...)) or pass an arch name"
        )
    raise EdgeslimError(f"{p} holds a {type(obj).__name__}; expected an edgeslim checkpoint")


def load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (for ``--resume``), with a clear error for other files."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"checkpoint {p} does not exist; check the path")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EdgeslimError(
            f"{p} is not a readable edgeslim checkpoint ({type(exc).__name__}); is it truncated?"
        ) from exc
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise EdgeslimError(f"{p} is not an edgeslim checkpoint")
    return obj
