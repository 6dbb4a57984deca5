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

import json
import math
import os
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim import __version__
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.models.registry import ModelSpec, create_model
from edgeslim.utils.io import atomic_path
from edgeslim.utils.rundir import MODEL_FILE
from edgeslim.utils.sniff import not_a_pytorch_model, sniff, zip_names
from edgeslim.utils.state_dicts import EMA_KEYS as MODULE_EMA_KEYS

if TYPE_CHECKING:
    from torch import nn

#: file suffixes that make a name a model file rather than an architecture
MODEL_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".ckpt", ".bin", ".tar", ".safetensors")

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

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) the model records: its spec's, or the fixed shape a torch.export program was
        exported for; None when it records none."""
        if self.spec is not None:
            c, h, w = self.spec.input_shape
            return (c, h, w)
        ep = self.meta.get("exported_program") if self.kind == "exported" else None
        shapes = exported_input_shapes(ep) if ep is not None else []
        if len(shapes) == 1 and len(shapes[0]) == 4 and all(d is not None for d in shapes[0][1:]):
            _, c, h, w = shapes[0]
            return (int(c), int(h), int(w))  # type: ignore[arg-type]
        return None

    @property
    def described(self) -> str:
        """The kind in words, with its article, for messages (``an exported program``)."""
        return KIND_WORDS.get(self.kind, f"a {self.kind} model")


#: LoadedModel.kind -> what it is, in a sentence ("X is <this>")
KIND_WORDS = {
    "checkpoint": "an edgeslim checkpoint",
    "torchscript": "a TorchScript program",
    "exported": "an exported program (torch.export)",
    "pickle": "a whole pickled module",
    "architecture": "an architecture",
    "architecture+weights": "an architecture with weights",
    "ultralytics": "an ultralytics checkpoint",
}


def looks_like_file(target: str) -> bool:
    """True when ``target`` names a model file (existing, a model suffix, or a path) not an architecture.

    ``family:name`` and ``package.module:Attr`` are architectures (``pickle:PATH`` too).
    """
    if Path(target).exists():
        return True
    if ":" in target:
        return False
    return target.endswith(MODEL_SUFFIXES) or "/" in target


def make_checkpoint(
    model: nn.Module,
    spec: ModelSpec,
    *,
    recipe: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict (weights are taken from the state_dict of ``model`` without its
    ``torch.compile``/DataParallel/DDP wrappers, :func:`unwrapped_model`: the names the architecture has;
    the ``recipe``'s layers are named so too)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_dict(),
        "recipe": _unwrapped_recipe(model, recipe),
        "state_dict": {k: v.detach().cpu() for k, v in unwrapped_model(model).state_dict().items()},
        "train_state": train_state,
        "meta": {"edgeslim_version": __version__, **(meta or {})},
    }


def unwrapped_model(model: nn.Module) -> nn.Module:
    """The module inside ``model``'s ``torch.compile``, DataParallel and DistributedDataParallel wrappers,
    nested in any order (``model`` itself when it has none): their state_dicts put ``_orig_mod.`` or
    ``module.`` before every name, which the rebuilt architecture does not have."""
    from torch import nn

    from edgeslim.utils.modes import uncompiled

    while True:
        inner = uncompiled(model)
        if isinstance(inner, nn.DataParallel | nn.parallel.DistributedDataParallel):
            inner = inner.module
        if inner is model:
            return model
        model = inner


def _unwrapped_recipe(model: nn.Module, recipe: dict[str, Any] | None) -> dict[str, Any] | None:
    """``recipe`` with its layers named as in :func:`unwrapped_model` of ``model``: surgery of a
    DataParallel/DDP model names them as the wrapper does (``module.features.0``)."""
    from edgeslim.utils.modes import uncompiled

    root, inner = uncompiled(model), unwrapped_model(model)  # (surgery names the layers of the first)
    layers = (recipe or {}).get("layers") or {}
    prefix = next((f"{name}." for name, m in root.named_modules() if m is inner and name), None)
    if recipe is None or prefix is None or not layers or not all(k.startswith(prefix) for k in layers):
        return recipe
    return {**recipe, "layers": {k[len(prefix) :]: v for k, v in layers.items()}}


def first_nonfinite(state_dict: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor in ``state_dict`` holding NaN or inf, else None."""
    import torch

    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically (temp file, fsync, rename).

    Refuses weights that hold NaN or inf: a diverged model is never saved as a result, and the
    file already at ``path`` (the last good checkpoint) is left as it was.
    """
    import torch

    bad = first_nonfinite(checkpoint.get("state_dict") or {})
    if bad is not None:
        raise EdgeslimError(
            f"weights {bad!r} hold NaN or inf (training diverged: lower the learning rate or weight "
            f"decay, or add warm-up); {path} was not written"
        )
    with atomic_path(path) as tmp:
        try:
            # a file object: the archive's folder is "archive", not the temporary name, so the same
            # checkpoint gives the same bytes (content-hashing tools see no change)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except RuntimeError as exc:  # torch's zip writer says a failed write (a full disk) so
            if "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
                raise
            raise _write_failed(Path(path), exc) from exc
    return Path(path)


def _write_failed(path: Path, exc: Exception) -> OSError:
    """The OSError of a checkpoint write to ``path`` that torch reported as a RuntimeError: "no space"
    where the disk has (almost) none left, else an I/O error."""
    import errno
    import shutil

    full = shutil.disk_usage(path.parent).free < (16 << 20)
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"writing the checkpoint failed ({first_line(exc)})", str(path))


def save_model(path: str | os.PathLike, model: nn.Module, spec: ModelSpec, **kw: Any) -> Path:
    """Shortcut: :func:`make_checkpoint` then :func:`save_checkpoint`. A slim model is saved with the
    recipe surgery returned (``save_model(path, result.model, spec, recipe=result.recipe)``): without
    it the weights would not fit the architecture ``spec`` builds, which is refused here rather than
    when the file is loaded."""
    if kw.get("recipe") is None:
        _check_fits(model, spec)
    return save_checkpoint(path, make_checkpoint(model, spec, **kw))


def _check_fits(model: nn.Module, spec: ModelSpec) -> None:
    """Refuse ``model`` when its weights' shapes differ from those of ``spec``'s architecture (built on
    the meta device: no memory, no arithmetic); a family that cannot be built so is not checked."""
    import torch
    from torch.nn.parameter import is_lazy

    if ":" in spec.arch and spec.arch.split(":", 1)[0] not in ("tv", "timm"):
        return  # (a YOLO, the user's own code: built only where loading builds it)
    try:
        with torch.device("meta"):
            built = create_model(spec).state_dict()
        mismatch = next(
            (
                (name, tuple(t.shape), tuple(built[name].shape))
                for name, t in unwrapped_model(model).state_dict().items()
                if name in built and not is_lazy(built[name]) and tuple(built[name].shape) != tuple(t.shape)
            ),
            None,
        )
    except Exception:  # noqa: BLE001 - (a family without meta support, a lazy module: loading checks)
        return
    if mismatch is not None:
        name, have, want = mismatch
        raise EdgeslimError(
            f"the weights do not fit architecture {spec.arch!r} as it is built ({name}: {have} where it has "
            f"{want}): a slim model is saved with its surgery recipe (recipe=, e.g. the result of "
            "prune_with_report: recipe=result.recipe), and the spec must name the model's own classes and "
            "input channels",
            param="recipe",
        )


def loads_code(spec: ModelSpec) -> bool:
    """Whether a checkpoint of ``spec`` runs code from outside edgeslim when it is loaded (its
    architecture is ``package.module:Attr``, a pickle or an ultralytics checkpoint), so loading it
    needs ``trust_pickle``."""
    from edgeslim.models.registry import is_code_reference, runs_code

    return runs_code(spec.arch) or is_code_reference(spec.arch)


def rebuild_facts(spec: ModelSpec) -> dict[str, Any]:
    """What loading a checkpoint of ``spec`` takes: ``loads_code`` (:func:`loads_code`) and
    ``rebuilds_from``, the user's file (or pickle) its architecture is rebuilt from, where it is."""
    from edgeslim.models.registry import source_file

    source = source_file(spec.arch)
    return {"loads_code": loads_code(spec), "rebuilds_from": str(source) if source else None}


def check_not_rebuilt_from(
    outputs: dict[str, Any], spec: ModelSpec | None, whose: str = "the result"
) -> None:
    """Refuse, whatever ``force`` says, one of ``outputs`` (parameter name -> path) that is the file a
    checkpoint of ``spec`` (``whose``, in words) rebuilds its architecture from (``yolo:best.pt``,
    ``pickle:PATH``): written over, no checkpoint of that file could be loaded again."""
    from edgeslim.utils.io import check_distinct

    source = rebuild_facts(spec)["rebuilds_from"] if spec is not None else None
    if source is not None:
        what = f"file {whose} rebuilds its architecture from ({spec.arch}; loading it needs that file)"
        check_distinct(outputs, {what: source})


def build_from_checkpoint(ckpt: dict[str, Any], *, trust_pickle: bool = False) -> nn.Module:
    """Rebuild the architecture (dense spec + surgery recipe) and load the weights.

    An architecture built by code from outside edgeslim (``package.module:Attr`` or
    ``pickle:PATH``) runs that code, so it is refused unless ``trust_pickle``.
    """
    spec = ModelSpec.from_dict(ckpt["spec"])
    source = rebuild_facts(spec)["rebuilds_from"]
    if loads_code(spec) and not trust_pickle:
        raise EdgeslimError(
            f"the checkpoint builds its architecture with code from outside edgeslim ({spec.arch}), which "
            "runs when it is loaded; if you trust it, pass trust_pickle=True",
            param="trust_pickle",
        )
    from edgeslim.models.user import IgnoredClasses, refit_ignored_head

    try:
        model = create_model(spec, trust_pickle=trust_pickle)
    except IgnoredClasses as exc:  # (written by an edgeslim that replaced such a factory's head)
        model = refit_ignored_head(exc, spec.num_classes, "the checkpoint")  # type: ignore[arg-type]
    if ckpt.get("recipe"):
        from edgeslim.channels.recipe import RecipeMismatch, apply_recipe

        try:
            model = apply_recipe(model, _recipe_as_named(model, ckpt["recipe"]))
        except (RecipeMismatch, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # (no pruned model given by the user here: the architecture rebuilt is not the one cut)
            fix = (
                _replaced_source(source, "it was cut from") + ", or prune again"
                if source
                else "re-create the file"
            )
            fact = exc.fact if isinstance(exc, RecipeMismatch) else f"{type(exc).__name__}: {first_line(exc)}"
            raise EdgeslimError(
                f"the checkpoint's surgery recipe does not fit architecture {spec.arch!r} ({fact}); {fix}"
            ) from exc
    from edgeslim.models.user import cast_tensors, saved_dtypes
    from edgeslim.utils.state_dicts import unwrapped_forms

    own = set(model.state_dict())
    # (a file an older save_model wrote from a wrapped model: 'module.' before every name, stripped: the
    # form whose names are the model's, else the nearest, whose differences the refusal then names)
    saved = min(unwrapped_forms(ckpt["state_dict"]), key=lambda sd: len(set(sd) ^ own))
    # (a tensor saved wider than the rebuilt model's, pickle:PATH's own, loads exactly)
    cast_tensors(model, saved_dtypes(saved), widen_only=True)
    try:
        missing, unexpected = model.load_state_dict(saved, strict=False)
    except RuntimeError as exc:  # shapes that do not fit the architecture
        detail = next((s.strip() for s in str(exc).splitlines() if "size mismatch" in s), first_line(exc))
        fix = _replaced_source(source, "its weights were saved from") if source else (
            "the file was written by another model or edited")  # fmt: skip
        raise EdgeslimError(
            f"checkpoint weights do not fit architecture {spec.arch!r} ({detail.rstrip('.')}); {fix}"
        ) from exc
    if missing or unexpected:
        fix = _replaced_source(source, "its weights were saved from") if source else (
            "the file was written by another model or version")  # fmt: skip
        raise EdgeslimError(
            f"checkpoint weights do not fit architecture {spec.arch!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} keys, e.g. "
            f"{(missing or unexpected)[0]!r}); {fix}"
        )
    return model


def _replaced_source(source: str, what: str) -> str:
    """The fix where a checkpoint's architecture, rebuilt from the user's file ``source`` (``pickle:PATH``,
    ``yolo:best.pt``: :func:`rebuild_facts`), does not fit it: that file was replaced since."""
    return (
        f"{source}, the file it rebuilds its architecture from, now holds another model than the one {what} "
        "(replaced since?): put that model back there"
    )


def _recipe_as_named(model: nn.Module, recipe: Any) -> Any:
    """``recipe`` with its layers named as ``model`` names them: a file an older save_model wrote from a
    wrapped model names them as the wrapper does (``module.features.0``), which is stripped where every
    name then is one of the model's (:func:`edgeslim.utils.state_dicts.unwrapped_forms`)."""
    from edgeslim.channels.recipe import PARAMETER
    from edgeslim.utils.state_dicts import unwrapped_forms

    layers = recipe.get("layers") if isinstance(recipe, dict) else None
    if not isinstance(layers, dict) or not layers:
        return recipe
    mods = set(dict(model.named_modules()))

    def fits(form: dict[str, Any]) -> bool:
        return all(
            (k.rpartition(".")[0] if isinstance(e, dict) and e.get("type") == PARAMETER else k) in mods
            for k, e in form.items()
        )

    return {**recipe, "layers": next((f for f in unwrapped_forms(layers) if fits(f)), layers)}


#: what each format that runs code is, for the refusal message
_RUNS_CODE = {
    "torchscript": "a TorchScript archive (its code runs when it is loaded and called)",
    "torch-export": (
        "a torch.export program (loading it unpickles archive entries and evaluates shape "
        "expressions, so it can run code)"
    ),
    "pickle": "a pickled Python object (a whole nn.Module?); unpickling it can run arbitrary code",
}


def _refuse_untrusted(p: Path, kind: str) -> EdgeslimError:
    return EdgeslimError(
        f"{p} is {_RUNS_CODE[kind]}, so it is refused; if you made this file or trust its source, "
        "pass trust_pickle=True; an edgeslim checkpoint or a state_dict loads without it",
        param="trust_pickle",
    )


def load_model(
    path: str | os.PathLike, *, trust_pickle: bool = False, map_location: str = "cpu"
) -> LoadedModel:
    """Read any model file the toolchain accepts.

    The format is identified from the file's bytes before any loader runs. Files that can run
    code when loaded (whole pickled modules, TorchScript, torch.export programs) are refused
    unless ``trust_pickle``; edgeslim checkpoints and state_dicts load with torch's
    weights-only unpickler. See docs/security.md.
    """
    p = Path(path)
    _existing_file(p, "model file", f"model file (e.g. {p / 'model.pt'})")
    kind = sniff(p)
    if kind in ("torchscript", "torch-export") and not trust_pickle:
        raise _refuse_untrusted(p, kind)
    if (not_torch := not_a_pytorch_model(p, kind)) is not None:
        raise not_torch
    if kind == "zip" and zip_names(p) is None:
        raise _cut_off_zip(p)
    if kind == "safetensors":
        raise _names_no_architecture(p, "holds only tensors (a safetensors file)", {})
    if kind not in ("torchscript", "torch-export", "torch", "legacy"):
        what = {"text": "a text file", "zip": "a zip archive that torch did not write", "png": "a PNG image",
                "jpeg": "a JPEG image"}.get(
            kind, "not a model file"
        )  # fmt: skip
        raise EdgeslimError(
            f"{p} is {what}; give an edgeslim checkpoint, a state_dict saved with torch.save, "
            "a TorchScript or torch.export file, or (to bench) an ONNX model (.onnx)"
        )
    import torch

    if kind == "torchscript":
        _register_torchvision_ops()
        try:
            with warnings.catch_warnings():  # torch >= 2.9: "`torch.jit.load` is deprecated" on every load
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
                m = torch.jit.load(str(p), map_location=map_location)
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            raise EdgeslimError(f"{p} looks like TorchScript but failed to load: {first_line(exc)}") from exc
        _refuse_list_input(p, m)
        return LoadedModel(model=m, kind="torchscript", path=p)
    if kind == "torch-export":
        _register_torchvision_ops()
        try:
            ep = torch.export.load(str(p))
        except Exception as exc:  # noqa: BLE001
            raise EdgeslimError(
                f"{p} looks like a torch.export program but failed to load: {first_line(exc)}"
            ) from exc
        return LoadedModel(
            model=_exported_module(p, ep), kind="exported", path=p, meta={"exported_program": ep}
        )
    try:
        obj = _torch_load_data(p, map_location)
    except pickle.UnpicklingError as exc:
        from edgeslim.models.yolo import is_ultralytics_checkpoint

        if kind == "torch" and is_ultralytics_checkpoint(p):  # best.pt: loaded as yolo:PATH loads it
            return _load_ultralytics(p, trust_pickle)
        weights = _load_with_placeholders(p, map_location)  # a training checkpoint with other objects?
        if isinstance(weights, dict):
            raise _names_no_architecture(p, "holds the state_dict of a training checkpoint", weights) from exc
        if not trust_pickle:
            raise _refuse_untrusted(p, "pickle") from exc
        from edgeslim.models.user import not_a_module, pickled_module, unpickle_trusted

        try:
            obj = unpickle_trusted(p, what=str(p), map_location=map_location)
        except EdgeslimError:  # a class that cannot be found, explained
            raise
        except Exception as exc2:  # noqa: BLE001 - arbitrary code ran: anything can come out
            raise EdgeslimError(f"{p} could not be unpickled: {first_line(exc2)}") from exc2
        # the object, or the model a training script's dict holds ({"model": model, "epoch": 3})
        model = pickled_module(obj, what=str(p))
        if model is None:
            raise not_a_module(obj, str(p)) from exc
        return LoadedModel(model=model, kind="pickle", path=p)
    except Exception as exc:  # noqa: BLE001 - truncated zips and streams raise many types
        raise EdgeslimError(
            f"{p} is not a readable model file ({first_line(exc)}); is it truncated or of another format?"
        ) from exc
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_checkpoint(p, obj, trust_pickle)
    if isinstance(obj, dict):
        if _is_tensor_dict(obj):
            raise _names_no_architecture(p, "holds a bare state_dict", obj)
        if _state_dict_in(obj) is not None:
            raise _names_no_architecture(p, "holds the state_dict of a training checkpoint", obj)
        raise EdgeslimError(
            f"{p} holds a dict without a model or weights (keys {sorted(map(str, obj))[:5]}); "
            "expected an edgeslim checkpoint or a model file"
        )
    raise EdgeslimError(f"{p} holds a {type(obj).__name__}; expected an edgeslim checkpoint")


def _register_torchvision_ops() -> None:
    """Import torchvision where it is installed: its import registers the ops (``torchvision::nms``,
    ``torchvision::roi_align``) that a scripted or exported detector calls, which loading it needs."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or a build that fails to import: loaded without it
        pass


def _refuse_list_input(p: Path, m: Any) -> None:
    """Refuse a TorchScript module whose forward takes a list of images (``images: List[Tensor]``: a
    scripted torchvision detector), which no input shape makes run: the commands feed one batch tensor."""
    try:
        args = m.forward.schema.arguments[1:]  # (after self)
    except (AttributeError, RuntimeError):  # no forward, or a schema torch does not give
        return
    if args and str(args[0].type).startswith("List["):
        raise EdgeslimError(
            f"{p} is TorchScript whose forward takes a list of images ({args[0].name}: {args[0].type}, as a "
            "torchvision detector's does), and edgeslim feeds a model one image tensor [N, C, H, W]: script or "
            "trace a wrapper module whose forward(x: Tensor) passes list(x) to the model and returns its tensors "
            "(boxes, scores, labels), and give that file"
        )


class NoArchitecture(EdgeslimError):
    """A weights file given where a model is expected (it names no architecture to build):
    ``arch`` what its contents say of its architecture (``timm:resnet18`` recorded, ``yolo:YAML`` an
    ultralytics model of unknown scale; None: nothing), ``num_classes`` the class count its head shows."""

    def __init__(
        self, *args: Any, arch: str | None = None, num_classes: int | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.arch, self.num_classes = arch, num_classes


def _names_no_architecture(p: Path, what: str, obj: dict[str, Any]) -> EdgeslimError:
    """A weights file given where a model is expected: ask for its architecture."""
    arch = obj.get("arch")
    recorded = (
        f" (it records arch {arch!r}: timm:{arch}?)" if isinstance(arch, str) and arch.isidentifier() else ""
    )
    yolo_classes = _ultralytics_head_classes(obj)
    if yolo_classes is not None:
        return NoArchitecture(
            f"{p} {what} of an ultralytics YOLO with {yolo_classes} classes, which names no architecture; give "
            f"the yaml it was built from (yolo:yolov8n, yolo:my.yaml) with weights={p} and num_classes={yolo_classes}",
            param=("weights", "num_classes"),
            arch="yolo:YAML",
            num_classes=yolo_classes,
        )
    return NoArchitecture(
        f"{p} {what}, which names no architecture{recorded}; give the architecture it was saved from "
        f"(e.g. tv:resnet18, timm:efficientnet_b0, package.module:Factory) with weights={p}",
        param="weights",
        arch=f"timm:{arch}" if recorded else None,
    )


def _ultralytics_head_classes(obj: dict[str, Any]) -> int | None:
    """The class count of an ultralytics detection state_dict (its head's class branch ``cv3``
    ends in a conv with one output per class: ``model.<i>.cv3.0.2.weight``), else None."""
    for key, value in obj.items():
        if (
            isinstance(key, str)
            and re.fullmatch(r"model\.\d+\.cv3\.0\.2\.weight", key)
            and len(getattr(value, "shape", ())) == 4
        ):
            return int(value.shape[0])
    return None


def _load_ultralytics(p: Path, trust_pickle: bool) -> LoadedModel:
    """An ultralytics checkpoint (``best.pt``) given as a model file, loaded as ``yolo:PATH`` loads it
    (only when trusted: it is a pickle), with a spec that rebuilds it from its absolute path."""
    from edgeslim.models.registry import build_model, model_defaults
    from edgeslim.models.yolo import checkpoint_arch

    if not trust_pickle:
        raise EdgeslimError(
            f"{p} is an ultralytics checkpoint, a pickle that runs code when it is loaded, so it is refused; "
            f"if you trust the file, pass trust_pickle=True (it loads as yolo:{p})",
            param="trust_pickle",
        )
    from edgeslim.models.yolo import at_trained_size, input_preprocessing

    arch = checkpoint_arch(p)
    model, spec = build_model(ModelSpec(arch, **model_defaults(arch)), trust_pickle=True)
    spec = at_trained_size(spec, model)  # the image size it was trained at, when it records one
    meta = input_preprocessing(model, spec.in_channels)  # pixels / 255: what calibration and validation use
    return LoadedModel(model=model, kind="ultralytics", spec=spec, path=p, meta=meta)


def exported_input_shapes(ep: Any) -> list[tuple[int | None, ...]]:
    """The shape of each tensor input a torch.export program was exported for (its user-input
    placeholders); ``None`` for a dimension exported as dynamic."""
    user = set(ep.graph_signature.user_inputs)
    shapes = []
    for node in ep.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in user else None
        if val is not None and hasattr(val, "shape"):
            shapes.append(tuple(d if isinstance(d, int) else None for d in val.shape))
    return shapes


def exported_batch_range(ep: Any) -> tuple[int, int | None] | None:
    """The batches a torch.export program's first tensor input takes where it was exported with a
    dynamic batch: (lowest, highest; None: no bound), from its range constraints; None where the batch
    is fixed or is not one plain symbol."""
    user = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in user else None
        if val is None or not hasattr(val, "shape"):
            continue
        dim = val.shape[0] if len(val.shape) else 0
        found = ep.range_constraints.get(dim.node.expr) if hasattr(dim, "node") else None
        if found is None:
            return None
        return int(found.lower), None if found.upper > 2**62 else int(
            found.upper
        )  # (torch's int_oo: no bound)
    return None


def _exported_module(p: Path, ep: Any) -> nn.Module:
    """The runnable module of a torch.export program, made usable for inference like any model.

    * torch's module raises NotImplementedError on ``train()``/``eval()``, since switching would
      not change the captured graph (BN and dropout run as they were exported; an inference export
      is made in eval mode). edgeslim only runs these programs (info, export, bench; slim and prune
      refuse them), so ``nn.Module``'s own ``train``/``eval`` are put back: they set the flags and
      nothing else, and callers need no special case for this one kind of model.
    * An input of another shape than the program was exported for fails inside torch
      (``AssertionError: Guard failed: x.size()[2] == 32`` from its guards, or a RuntimeError from
      its input check); a pre-hook checks the fixed dimensions first and names the exported shape
      and the fix in a one-line :class:`EdgeslimError`.
    """
    import torch

    try:  # guards as torch's input pre-hook, not as a traced _guards_fn (TracerWarnings in ONNX export)
        module = ep.module(check_guards=False)
    except TypeError:  # older torch: no check_guards, its checks are a pre-hook already
        module = ep.module()
    for name in ("train", "eval"):  # the instance attributes torch set; the class methods remain
        module.__dict__.pop(name, None)
    expected = exported_input_shapes(ep)

    def check_shapes(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # an ONNX exporter tracing it
            return
        got = [tuple(a.shape) for a in args if hasattr(a, "shape")]
        for want, have in zip(expected, got):
            if len(want) == len(have) and all(w is None or w == h for w, h in zip(want, have)):
                continue
            fixed = "x".join("?" if d is None else str(d) for d in want)
            fixes: list[str] = []  # the options that run it as it is, by their parameter names
            if len(want) == 4 and len(have) == 4:
                if all(d is not None for d in want[1:]) and have[1:] != want[1:]:
                    fixes.append(f"input_shape {','.join(map(str, want[1:]))}")
                if want[0] is not None and have[0] != want[0]:
                    fixes.append(f"batch {want[0]}")
            use = f"pass {' and '.join(fixes)}, or " if fixes else ""
            raise EdgeslimError(
                f"{p} was exported for input shape {fixed}, not {'x'.join(map(str, have))}; "
                f"{use}re-export it with dynamic shapes (torch.export's dynamic_shapes)",
                param=tuple(f.split()[0] for f in fixes),
            )

    if expected:
        module.register_forward_pre_hook(check_shapes, prepend=True)  # before torch's own checks
    return module


def _from_checkpoint(p: Path, obj: dict[str, Any], trust_pickle: bool = False) -> LoadedModel:
    """A :class:`LoadedModel` from a checkpoint dict, with one-line errors for malformed ones."""
    if not isinstance(obj.get("spec"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise EdgeslimError(
            f"{p} is marked as an edgeslim checkpoint but lacks its spec or state_dict; re-create it"
        )

    for key in ("recipe", "meta", "train_state"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise EdgeslimError(f"{p}: checkpoint field {key!r} is not a mapping; re-create the file")
    try:
        model = build_from_checkpoint(obj, trust_pickle=trust_pickle)
    except EdgeslimError as exc:
        moved = _moved_source(p, str(obj["spec"].get("arch", "")))
        if moved is not None:  # (a run folder moved or copied: its model.pt names the file where it was)
            source, copy = moved
            raise EdgeslimError(
                f"{p} rebuilds its architecture from {source}, which does not exist; {copy}, beside {p.name}, has "
                "that file's name (a moved run folder?): put it back at that path if it is that file, or prune it "
                "again (the result names it where it is)",
                steps=exc.steps,
            ) from exc
        raise EdgeslimError(f"{p}: {exc}", param=exc.params, steps=exc.steps) from exc
    from edgeslim.models.yolo import use_recorded_names

    use_recorded_names(model, dict(obj.get("meta") or {}), str(p))  # (not the rebuilt file's, if replaced)
    return LoadedModel(
        model=model,
        kind="checkpoint",
        spec=ModelSpec.from_dict(obj["spec"]),
        recipe=obj.get("recipe"),
        meta=dict(obj.get("meta") or {}),
        train_state=obj.get("train_state"),
        path=p,
    )


def _moved_source(p: Path, arch: str) -> tuple[Path, Path] | None:
    """(the file ``arch`` rebuilds from, a file of its name beside the checkpoint ``p``) where the first is
    missing and the second exists: the same path below ``p``'s folder as below the folder it names
    (``train/weights/last.pt`` of a YOLO run folder moved elsewhere); else None."""
    from edgeslim.models.registry import runs_code

    if not runs_code(arch):
        return None
    source = Path(arch.split(":", 1)[1]).expanduser()
    if source.exists():
        return None
    for depth in range(len(source.parts) - 1, 0, -1):  # (the longest path that matches first)
        copy = p.parent / Path(*source.parts[-depth:])
        if copy.is_file():
            return source, copy
    return None


#: keys under which training scripts commonly store the weights inside a checkpoint dict
#: (an exponential moving average's copy last: read only from a checkpoint that keeps no other weights)
MODEL_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
EMA_KEYS = ("state_dict_ema", *MODULE_EMA_KEYS)  # (timm's, and the keys a pickled module's EMA is read under)
STATE_DICT_KEYS = MODEL_KEYS + EMA_KEYS


def _cut_off_zip(p: Path) -> EdgeslimError:
    """The refusal of a file that starts like a zip archive but whose directory is unreadable."""
    return EdgeslimError(
        f"{p} looks truncated or corrupt (a zip archive torch cannot read: cut off while being "
        "written or copied?); save it again with torch.save, or copy it again"
    )


def read_state_dict(path: str | os.PathLike, *, strip_wrappers: bool = True) -> dict[str, Any]:
    """The weights in ``path``: a ``state_dict``, a training checkpoint dict holding one (under
    :data:`STATE_DICT_KEYS`), an edgeslim checkpoint or a ``.safetensors`` file; read without running
    anything in the file (:func:`load_weights_only`). ``strip_wrappers``: with the prefixes a wrapper
    put before every name removed (:func:`edgeslim.utils.state_dicts.without_wrappers`); off, the names as saved (for a loader
    that knows the architecture: a model whose own submodule is named ``module``)."""
    p = Path(path)
    _existing_file(p, "weights file", "weights file in it")
    kind = sniff(p)
    if kind == "safetensors":
        obj: Any = read_safetensors(p)
    elif kind in ("torch", "legacy"):
        try:
            obj = load_weights_only(p)
        except Exception as exc:  # noqa: BLE001 - truncated zips and streams raise many types
            raise EdgeslimError(
                f"{p} is not a readable weights file ({first_line(exc)}); is it truncated?"
            ) from exc
        if obj is None:
            raise EdgeslimError(
                f"{p} holds a pickled object that is neither weights nor plain data (a whole model, or an object "
                "that runs code when loaded), not a state_dict, and nothing of it was run; give the file itself as "
                "the model (it runs code when loaded: only if you trust it) or save model.state_dict() instead"
            )
    elif kind == "zip" and zip_names(p) is None:
        raise _cut_off_zip(p)
    else:
        raise EdgeslimError(
            f"{p} is not a state_dict file ({kind}); save the weights with torch.save(model.state_dict(), path)"
        )
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = _state_dict_in(obj)
        if inner is None:
            raise _no_weights_found(p, obj)
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise EdgeslimError(f"{p} holds {_a(type(obj).__name__)}, not a state_dict")
    from edgeslim.utils.state_dicts import without_wrappers

    return without_wrappers(obj) if strip_wrappers else obj


#: the last part of the names a module's parameters and buffers have in its state_dict
_PARAMETER_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _no_weights_found(p: Path, obj: dict[str, Any]) -> EdgeslimError:
    """The refusal of a dict holding no state_dict under :data:`STATE_DICT_KEYS`: it names where one lies
    deeper (``['checkpoint']['model']``), else the keys that hold tensors or dicts. An optimizer's state
    (``state``/``param_groups``, its tensors under int keys) is not weights: the dicts whose names are a
    module's (``conv.weight``, ``bn.running_mean``) come first, the most tensors first."""
    import torch

    found: list[tuple[int, int, str]] = []  # (module-like names, tensors, path)

    def walk(d: dict[Any, Any], path: str, depth: int) -> None:
        for k, v in d.items():
            if not isinstance(v, dict) or not v or {"state", "param_groups"} <= set(v):
                continue  # (an optimizer's state_dict: its momentum buffers are no weights)
            if _is_tensor_dict(v):
                named = sum(1 for n in v if "." in n or n.rsplit(".", 1)[-1] in _PARAMETER_LEAVES)
                found.append((named, len(v), f"{path}[{k!r}]"))
            elif depth > 1 and all(isinstance(n, str) for n in v):
                walk(v, f"{path}[{k!r}]", depth - 1)

    walk(obj, "", 4)
    if any(named for named, _, _ in found):  # (a dict of other tensors beside a module's: not named)
        found = [f for f in found if f[0]]
    nested = [where for _, _, where in sorted(found, key=lambda f: (-f[0], -f[1]))[:3]]
    under = f"a checkpoint with one under {', '.join(STATE_DICT_KEYS)}"
    if nested:
        return EdgeslimError(
            f"{p} holds its weights deeper than edgeslim reads, under {' and '.join(nested)}; save that state_dict "
            f"alone (torch.save(ckpt{nested[0]}, path)) or as {under}"
        )
    holding = [str(k) for k, v in obj.items() if isinstance(v, (dict, torch.Tensor))]
    held = f"; of its keys {sorted(holding)[:5]} hold tensors or dicts" if holding else ""
    return EdgeslimError(
        f"{p} holds a dict without weights (keys {sorted(map(str, obj))[:5]}{held}); expected a state_dict "
        f"or {under}"
    )


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (an int, a list)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _existing_file(p: Path, what: str, in_dir: str) -> None:
    """Refuse ``p`` (the ``what`` given) in one line unless it is a regular file (a link to one is
    fine): missing; a directory (``in_dir`` says what to give instead); a FIFO (whose read blocks
    until a writer comes), a device or a socket."""
    import stat

    if not p.exists():
        from edgeslim.utils.rundir import moved_aside

        aside = moved_aside(p)  # (a review: the finished run's model, hidden after a kill -9)
        if aside is not None:
            raise EdgeslimError(f"{what} {p} does not exist: a forced run that was killed moved it aside to {aside}; "
                                "move it back to keep it")  # fmt: skip
        raise EdgeslimError(f"{what} {p} does not exist; check the path")
    if p.is_dir():
        raise EdgeslimError(f"{p} is a directory; give the {in_dir}")
    if not stat.S_ISREG(p.stat().st_mode):
        raise EdgeslimError(
            f"{what} {p} is not a regular file (a FIFO, a device or a socket); save the file to disk and give that"
        )


def _state_dict_in(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The tensor dict a training checkpoint holds under one of :data:`STATE_DICT_KEYS`, if any."""
    return next(
        (obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict) and _is_tensor_dict(obj[k])), None
    )


class _Placeholder:
    """Stands for a global (``module.Name``) the file names and torch does not allow (see
    :func:`load_weights_only`). Called, it returns itself (so what a call returned can be called
    again, as ``getattr(cls, "method")(...)`` is pickled); instantiated through ``cls.__new__`` (how
    pickle rebuilds objects and dict subclasses), it makes an empty ``OrderedDict``, the one type
    torch's weights-only unpickler both fills with items and gives attributes. State set on it is
    dropped. Nothing of the file runs."""

    def __init__(self, made: list[Any]) -> None:
        self.made = made
        self.__new__ = self._new  # read as ``cls.__new__(cls, *args)``

    def _new(self, _cls: Any, *_args: Any) -> OrderedDict:
        self.made.append(OrderedDict())
        return self.made[-1]

    def __call__(self, *_args: Any, **_kwargs: Any) -> _Placeholder:
        return self

    def __setstate__(self, state: Any) -> None:
        pass


def load_weights_only(p: Path, map_location: str = "cpu") -> Any:
    """``torch.load(p, weights_only=True)``, also for the training checkpoints that keep objects of
    other classes beside their tensors (``argparse.Namespace`` in timm's, hyper-parameter dicts in
    Lightning's, numpy scalars): those are read as inert placeholders (:class:`_Placeholder`),
    never constructed, so nothing in the file runs. None when the file's top-level object is itself
    such an object (a pickled module) or holds one where weights are expected."""

    try:
        return _torch_load_data(p, map_location)
    except pickle.UnpicklingError:
        return _load_with_placeholders(p, map_location)


def _torch_load_data(p: Path, map_location: str) -> Any:
    """``torch.load(p, weights_only=True)`` without torch's warning about a pickle protocol above 2 (a
    plain pickle's: it comes before the one-line refusal of the file, or before nothing at all). The
    file is given open, not by name: torch hands a name ending in ``.safetensors`` to the safetensors
    reader whatever the file holds (a state_dict saved under that name was "not readable")."""
    import warnings

    import torch

    with warnings.catch_warnings(), open(p, "rb") as f:
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(f, map_location=map_location, weights_only=True)


def _load_with_placeholders(p: Path, map_location: str) -> Any:
    """:func:`load_weights_only` after torch's plain weights-only load refused ``p``."""
    import torch.serialization as ser

    unsafe = getattr(ser, "get_unsafe_globals_in_checkpoint", None)
    if unsafe is None or not hasattr(ser, "safe_globals"):
        return None
    try:
        names = unsafe(str(p))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: nothing more to try
        return None
    made: list[Any] = []
    allowed: list[Any] = [(_Placeholder, f"{__name__}._Placeholder")]  # (its instances' state is set)
    allowed += [(_Placeholder(made), name) for name in names]
    try:
        with ser.safe_globals(allowed):
            obj = _torch_load_data(p, map_location)
    except Exception:  # noqa: BLE001 - still not readable as data
        return None
    placeholders = {id(o) for o in made}
    if id(obj) in placeholders or not isinstance(obj, dict):  # (a _Placeholder is no dict)
        return None
    if _is_tensor_dict(obj):
        return obj
    # a pickled object where the model's weights are kept: its EMA copy beside it is not the model
    if any(k in obj and id(obj[k]) in placeholders for k in MODEL_KEYS):
        return None
    inner = _state_dict_in(obj)
    return obj if inner is not None and id(inner) not in placeholders else None


#: safetensors dtype names (its format spec) -> torch dtype attribute names
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}  # fmt: skip


def read_safetensors(p: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file (a JSON header of names, dtypes, shapes and byte
    ranges, then the raw little-endian data): parsed here, nothing in it runs."""
    import torch

    bad = f"{p} is not a valid safetensors file"
    total = p.stat().st_size
    with open(p, "rb") as f:  # the header, then each tensor's own bytes: never more than the header names
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n <= min(total - 8, MAX_SAFETENSORS_HEADER):
            raise EdgeslimError(f"{bad} (its header length {n} does not fit the file); is it truncated?")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as exc:
            raise EdgeslimError(f"{bad} (its header is not JSON); is it truncated?") from exc
        if not isinstance(header, dict):
            raise EdgeslimError(f"{bad} (its header is not a JSON object)")
        base, out, spans = 8 + n, {}, []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = getattr(torch, _SAFETENSORS_DTYPES[info["dtype"]])
                shape, offsets = list(info["shape"]), list(info["data_offsets"])
                if not all(type(d) is int for d in shape + offsets) or len(offsets) != 2:  # (2.9 is no size)
                    raise ValueError("shape and data_offsets must be whole numbers")
                start, end = offsets
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise EdgeslimError(f"{bad} (entry {name!r}: {info!r:.80})") from exc
            # (each size below 2**48 and their product within torch's: [2**40, 2**40, 0] holds no byte)
            if any(not 0 <= d < 2**48 for d in shape) or math.prod(max(d, 1) for d in shape) >= 2**62:
                raise EdgeslimError(f"{bad} (entry {name!r} has the shape {shape}: negative or absurd)")
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if end - start != size or start < 0 or base + end > total:
                raise EdgeslimError(f"{bad} (entry {name!r} lies outside the file); is it truncated?")
            spans.append((start, end, name))
            buf = bytearray(size)
            if size:
                f.seek(base + start)
                if f.readinto(buf) != size:
                    raise EdgeslimError(f"{bad} (entry {name!r} lies outside the file); is it truncated?")
            out[name] = torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape) if size else (
                torch.empty(shape, dtype=dtype))  # fmt: skip
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:  # (the format's byte ranges do not overlap: two names reading one tensor's bytes)
            raise EdgeslimError(f"{bad} (entries {a!r} and {b!r} share bytes)")
    return out


#: the largest safetensors header read (a header names tensors: megabytes at most)
MAX_SAFETENSORS_HEADER = 100 << 20


def _is_tensor_dict(d: dict[str, Any]) -> bool:
    """Whether ``d`` is a state_dict: names to tensors (a module's ``_extra_state`` may be any value)."""
    import torch

    return (
        bool(d)
        and all(isinstance(k, str) for k in d)
        and any(isinstance(v, torch.Tensor) for v in d.values())
        and all(isinstance(v, torch.Tensor) or k.rsplit(".", 1)[-1] == "_extra_state" for k, v in d.items())
    )


def load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (for ``--resume``), with a clear error for other files."""

    p = Path(path)
    if p.is_dir():  # (a run's folder: its checkpoint)
        if not (p / MODEL_FILE).is_file():
            raise EdgeslimError(
                f"{p} is a folder without a {MODEL_FILE}: no run saved a checkpoint there; check the path"
            )
        p = p / MODEL_FILE
    if not p.is_file():
        raise EdgeslimError(f"checkpoint {p} does not exist; check the path")
    try:
        obj = _torch_load_data(p, "cpu")
    except Exception as exc:  # noqa: BLE001
        msg = str(exc)
        if "weights only" in msg.lower() or "weights_only" in msg:  # (a probe's pickle: "truncated?")
            raise EdgeslimError(
                f"{p} holds Python objects beyond an edgeslim checkpoint's tensors and settings, which would run "
                "code when loaded, so it is refused; resume from the model.pt of an edgeslim run"
            ) from exc
        raise EdgeslimError(
            f"{p} is not a readable edgeslim checkpoint ({type(exc).__name__}); is it truncated?"
        ) from exc
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise EdgeslimError(f"{p} is not an edgeslim checkpoint")
    return obj
