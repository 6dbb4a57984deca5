"""Where the model of a request comes from: a model file, or an architecture name (+ weights).

Top-level imports stay light (no torch): the bench CLI imports this layer on devices without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import EdgeslimError, Step, naming
from edgeslim.utils.parsing import parse_input_shape
from edgeslim.utils.sniff import not_a_pytorch_model

if TYPE_CHECKING:
    from edgeslim.checkpoint import LoadedModel

log = logging.getLogger(__name__)


def refuse_not_pytorch(target: str) -> None:
    """Refuse a ``target`` file no PyTorch model loads from (an ONNX model, an engine, an empty file) in
    one line, before torch is imported: a device install without torch is told what to do with it."""
    if Path(target).is_file() and (not_torch := not_a_pytorch_model(target)) is not None:
        raise not_torch


def load_model_or_arch(
    target: str,
    *,
    trust_pickle: bool,
    input_shape: str | Sequence[int] | None = None,
    data: str | None = None,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    any_size: bool = False,
    shape_from_data: bool = False,
    quiet: bool = False,
) -> LoadedModel:
    """A :class:`LoadedModel` from a model file, or an architecture name (with ``weights``, else random).
    ``any_size``: for a caller that tries the model at several shapes (a YOLO's size rule not applied).
    ``shape_from_data``: ``input_shape`` is the data set's (a caller that loaded it), so an error
    about the model's input names ``data``. ``quiet``: a probe's load, whose dtype warning the run's
    own load of the model gives.

    For a name, the input shape is ``input_shape``, else the data set's, else the architecture's
    default (:func:`~edgeslim.models.registry.model_defaults`: 3,640,640 for ``yolo:``, else
    3,32,32); the classes are ``num_classes``, else the data set's, else the architecture's own
    (a ``yolo:`` yaml's ``nc``; the user's code's or pickle's, see
    :func:`~edgeslim.models.user.code_defaults`), else 10 (with ``weights``: the weights' own count). Files keep
    their own spec (a bare ultralytics checkpoint takes ``input_shape``, as ``yolo:best.pt`` does). A name that unpickles a file (``pickle:PATH``, ``yolo:best.pt``) is recorded
    in the spec with the file's absolute path. An ultralytics model, from any source (a whole pickle,
    a checkpoint pruned before its meta said so), is fed as ultralytics feeds it
    (:func:`~edgeslim.models.yolo.input_preprocessing`); what a file records wins.
    """
    refuse_not_pytorch(target)
    from edgeslim.models.yolo import (
        check_input_size,
        input_preprocessing,
        names_meta,
    )  # import no ultralytics

    loaded = _load_model_or_arch(
        target, trust_pickle, input_shape, data, num_classes, weights, shape_from_data
    )
    shape = None
    if not any_size:
        shape = parse_input_shape(input_shape) if input_shape is not None else loaded.input_shape
        check_input_size(loaded.model, shape)
        if shape is not None:
            check_forward_fits(loaded.model, tuple(shape), "data" if shape_from_data else "input_shape")
    if loaded.kind not in ("torchscript", "exported"):  # (compiled code may fix the type: as it is)
        from edgeslim.models.user import in_float32

        in_float32(loaded.model, str(loaded.path or target), shape, quiet=quiet)
    if input_shape is None and data is None and records_no_size(target):
        raise EdgeslimError(
            f"{target} is your own model, which records no input size; give input_shape C,H,W (the size "
            "it runs at: its MACs, the slim checkpoint and the export use it)",
            param="input_shape",
        )
    channels = loaded.spec.in_channels if loaded.spec else 3
    loaded.meta = {
        **input_preprocessing(loaded.model, channels),
        **names_meta(loaded.model),
        **(loaded.meta or {}),
    }
    return loaded


#: a float32 input of at least this many bytes (batch 1) is checked against the free memory first
BIG_INPUT_BYTES = 256 * 2**20


def check_forward_fits(model: Any, shape: tuple[int, ...], param: str = "input_shape") -> None:
    """Refuse an input shape whose forward cannot fit in the memory this machine has free (a run
    would be killed by the system without a word): the largest input plus output of any one layer,
    measured on "meta" tensors (shapes only, no arithmetic; a lower bound of the real peak). Only
    for inputs of :data:`BIG_INPUT_BYTES` or more; skipped where free memory is unknown or the
    model cannot run on meta tensors. ``param`` names what set the shape."""
    import copy
    import itertools
    import math

    from edgeslim.bench.memory import available_mib

    size = 4 * math.prod(shape)  # (float32, batch 1)
    if size < BIG_INPUT_BYTES or not hasattr(model, "modules"):
        return
    free = available_mib()
    if free is None:
        return
    limit, c_h_w = 0.9 * free * 2**20, ",".join(map(str, shape))
    if size > limit:  # the input alone (a model that cannot run on meta tensors too)
        raise EdgeslimError(
            f"an input of shape {c_h_w} takes {size / 2**30:.1f} GB by itself, more than the "
            f"{free / 1024:.1f} GB free on this machine; give a smaller {param}",
            param=param,
        )
    import torch

    memo: dict[int, Any] = {}  # parameters and buffers as meta tensors: the copy allocates nothing
    for t in itertools.chain(model.parameters(), model.buffers()):
        m = torch.empty_like(t, device="meta")
        memo[id(t)] = (
            torch.nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else m
        )
    worst: list[tuple[int, str]] = [(0, "")]

    def nbytes(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            return x.numel() * x.element_size()
        if isinstance(x, (tuple, list)):
            return sum(nbytes(v) for v in x)
        return sum(nbytes(v) for v in x.values()) if isinstance(x, dict) else 0

    try:
        shadow = copy.deepcopy(model, memo).eval()
        for name, mod in shadow.named_modules():
            if not any(True for _ in mod.children()):  # a leaf: what it holds at once
                mod.register_forward_hook(lambda _m, i, o, n=name: worst.append((nbytes(i) + nbytes(o), n)))
        with torch.no_grad():
            shadow(torch.empty((1, *shape), device="meta"))
    except Exception:  # noqa: BLE001 - a model meta tensors cannot run: no estimate, no refusal
        return
    need, layer = max(worst)
    if need > limit:
        raise EdgeslimError(
            f"the model at input shape {c_h_w} needs at least {need / 2**30:.1f} GB at once (layer {layer}: its "
            f"input and output), more than the {free / 1024:.1f} GB free on this machine; give a smaller {param}",
            param=param,
        )


def data_input(data: str | None, data_dir: Any = None) -> tuple[tuple[int, int, int], int] | None:
    """The input shape (C,H,W) and number of classes data set ``data`` gives a model: its fixed ones,
    else (an image folder in ``data_dir``) its files' (one image per split is read); None without
    data, or for a data set of no fixed size without its folder. ``info`` and ``prune`` take a
    shape from it (a whole pickle records none)."""
    if data is None:
        return None
    from edgeslim.data import dataset_shape, load_dataset

    fixed = dataset_shape(data)
    if fixed is not None:
        return (fixed[0], fixed[1], fixed[2]), fixed[3]
    if data_dir is None:
        return None
    bundle = load_dataset(data, data_dir=data_dir, subset=1, test_subset=1)
    c, h, w = bundle.input_shape
    return (c, h, w), bundle.num_classes


def records_no_size(target: str) -> bool:
    """Whether ``target`` names the user's own code or pickle (``package.module:Factory``,
    ``pickle:PATH``), whose input size nothing records (3,32,32 was assumed silently)."""
    from edgeslim.checkpoint import looks_like_file
    from edgeslim.models.registry import is_code_reference
    from edgeslim.models.user import PICKLE_PREFIX

    if looks_like_file(target):
        return False
    return is_code_reference(target) or target.startswith(f"{PICKLE_PREFIX}:")


def _load_model_or_arch(
    target: str,
    trust_pickle: bool,
    input_shape: str | Sequence[int] | None,
    data: str | None,
    num_classes: int | None,
    weights: str | Path | None,
    shape_from_data: bool = False,
) -> LoadedModel:
    from edgeslim.checkpoint import LoadedModel, load_model, looks_like_file

    dshape = None
    if data is not None:  # checks the name early, also for files
        from edgeslim.data import dataset_shape

        dshape = dataset_shape(data)
    if looks_like_file(target):
        if weights is not None:
            raise EdgeslimError(
                f"weights goes with an architecture name (e.g. tv:resnet18); {target} is a model file "
                "that holds its own parameters",
                param="weights",
            )
        loaded = load_model(target, trust_pickle=trust_pickle)
        if loaded.kind == "ultralytics" and input_shape is not None:  # the size given, as for yolo:best.pt
            import dataclasses

            c, h, w = parse_input_shape(input_shape)
            loaded.spec = dataclasses.replace(loaded.spec, in_channels=c, input_size=(h, w))
        own = loaded.spec.num_classes if loaded.spec is not None else None
        if num_classes is not None and num_classes != own:
            trained = f"a trained head for {own} classes" if own else "its own trained head"
            raise EdgeslimError(
                f"num_classes goes with an architecture name (e.g. tv:resnet18); {target} is a model file "
                f"with {trained}: drop it (slim replaces a head and trains it)",
                param="num_classes",
            )
        return loaded
    from edgeslim.models.registry import ModelSpec, build_model, canonical_arch, check_trusted, model_defaults

    check_trusted(target, trust_pickle)
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if data is not None and dshape is None and shape is None:
        raise EdgeslimError(
            f"data {data} has no fixed image size; pass input_shape C,H,W", param=("data", "input_shape")
        )
    own = model_defaults(target)
    c, h, w = shape or (
        dshape[:3] if dshape else (own.get("in_channels", 3), *own.get("input_size", (32, 32)))
    )
    classes = num_classes or (dshape[3] if dshape else own.get("num_classes", 10))
    spec = ModelSpec(canonical_arch(target), classes, c, (h, w))
    if weights is None:
        model, spec = build_model(spec, trust_pickle=trust_pickle)
        if shape is None and dshape is None:  # an ultralytics checkpoint: the size it was trained at
            from edgeslim.models.yolo import at_trained_size

            spec = at_trained_size(spec, model)
        return LoadedModel(model=model, kind="architecture", spec=spec, path=None)
    from edgeslim.checkpoint import read_state_dict
    from edgeslim.models.user import build_with_weights

    with naming("weights"):
        state_dict = read_state_dict(weights, strip_wrappers=False)
    model, spec = build_with_weights(
        spec, state_dict, f"weights {weights}", trust_pickle=trust_pickle,
        channels_from="data" if shape_from_data or (shape is None and dshape) else "input_shape",
    )  # fmt: skip
    if num_classes is not None and num_classes != spec.num_classes:
        raise EdgeslimError(
            f"weights {weights} were trained for {spec.num_classes} classes; num_classes {num_classes} would "
            "replace their trained head by an untrained one, which only training can use (slim replaces a "
            "head and trains it): leave the class count out",
            param="num_classes",
        )
    meta: dict = {"weights": str(weights)}
    return LoadedModel(model=model, kind="architecture+weights", spec=spec, path=Path(weights), meta=meta)


def spec_for_pickle(loaded: LoadedModel, input_shape: Sequence[int], default_classes: int | None = None):
    """A spec that rebuilds a trusted whole-module pickle: ``pickle:ABSPATH`` (docs/data-and-models.md).

    Its classes are those of its ``[N, k]`` output at ``input_shape``, ``default_classes`` where it
    has none (None: unknown, a detector's or a segmenter's; :func:`~edgeslim.models.user.output_classes`)."""
    from edgeslim.models.registry import ModelSpec
    from edgeslim.models.user import output_classes

    c, h, w = parse_input_shape(input_shape)
    classes = output_classes(loaded.model, (c, h, w))
    classes = default_classes if classes is None else classes
    return ModelSpec(f"pickle:{Path(loaded.path).resolve()}", classes, c, (h, w))


def set_normalization(loaded: LoadedModel, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """Record the per-channel ``mean``/``std`` the model's input is normalized with (pixels / 255) in
    ``loaded.meta``, for a model that records none (or to correct it): the ORT check, INT8 and
    prune's calibration feed images with it, and the ONNX metadata and slim checkpoint keep it."""
    norm = checked_normalization(mean, std, loaded.spec.in_channels if loaded.spec else None)
    if norm is not None:
        loaded.meta = {**(loaded.meta or {}), "mean": norm[0], "std": norm[1]}


#: the smallest per-channel std taken (of pixels / 255): 1e-300 passed, and training "diverged"
MIN_STD = 1e-3


def checked_normalization(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    channels: int | None,
    whose: str = "the model takes",
) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` as float lists after checking them (given together, one per channel of the
    ``channels`` the input has, ``whose`` says whose: "the model takes", "the images have"; of
    pixels / 255); None when neither is given."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise EdgeslimError("give the input's mean and std together", param=("mean", "std"))
    if channels is None and len(mean) != len(std):  # (the count is unknown: not len(mean)'s)
        raise EdgeslimError(
            f"mean has {len(mean)} value{'s' * (len(mean) != 1)} and std {len(std)}: give as many of each, "
            "one per channel of the input",
            param=("mean", "std"),
        )
    channels = len(mean) if channels is None else channels
    if not len(mean) == len(std) == channels:
        raise EdgeslimError(
            f"mean has {len(mean)} value{'s' * (len(mean) != 1)} and std {len(std)}; {whose} {channels} "
            f"channel{'s' * (channels != 1)}: give one per channel",
            param=("mean", "std"),
        )
    if any(not v >= MIN_STD for v in std):  # (NaN too)
        raise EdgeslimError(
            f"std {list(std)}: each must be at least {MIN_STD:g} of the pixel range (pixels / 255; ImageNet's: "
            "0.229,0.224,0.225), a smaller one multiplies the images by thousands and training diverges",
            param="std",
        )
    if any(not 0 <= v <= 1 for v in mean) or any(v > 1 for v in std):
        raise EdgeslimError(
            f"mean {list(mean)} and std {list(std)}: they are of pixels / 255, in [0, 1] (ImageNet's: "
            "0.485,0.456,0.406 and 0.229,0.224,0.225); divide values on the 0-255 scale by 255",
            param=("mean", "std"),
        )
    return [float(v) for v in mean], [float(v) for v in std]


def check_finite_weights(loaded: LoadedModel) -> None:
    """Refuse a model whose weights hold NaN or inf (its outputs, and any check of them, are meaningless)."""
    from edgeslim.checkpoint import first_nonfinite

    bad = first_nonfinite(loaded.model.state_dict())
    if bad is not None:
        from edgeslim.models.yolo import is_checkpoint_name, is_ultralytics_model

        arch = loaded.spec.arch if loaded.spec else ""
        saved = loaded.kind == "ultralytics" or is_checkpoint_name(arch.split(":", 1)[-1])
        half = (
            " (ultralytics saves float16, which holds nothing above 65504: a value that large became inf there)"
            if saved and is_ultralytics_model(loaded.model)
            else ""
        )
        raise EdgeslimError(
            f"{loaded.path or arch or 'the model'} has NaN or inf weights ({bad}){half}; it diverged in training: "
            "retrain it with a lower learning rate or use an earlier checkpoint"
        )


def model_input_shape(
    loaded: LoadedModel,
    input_shape: str | Sequence[int] | None = None,
    data: str | None = None,
    *,
    data_option: bool = False,
) -> tuple[int, int, int]:
    """C,H,W for ``loaded``: ``input_shape``, else the data set's, else the one the model records.

    ``data_option``: the command has a ``--data`` that sets the shape (named in the error).
    """
    if input_shape is not None:
        return parse_input_shape(input_shape)
    if data is not None:
        from edgeslim.data import dataset_shape

        dshape = dataset_shape(data)
        if dshape is not None:
            return (dshape[0], dshape[1], dshape[2])
    if loaded.input_shape is not None:  # the spec's, or the shape a torch.export program fixes
        return loaded.input_shape
    raise EdgeslimError(
        f"{loaded.path} is {loaded.described} without an input shape; pass input_shape C,H,W"
        + (" or data" if data_option else ""),
        param=("input_shape", "data") if data_option else "input_shape",
    )


#: where the docs show slimming a model inside its own training loop
OWN_LOOP_DOCS = "docs/slimming.md, section Python API"


def refuse_compiled(target: str, use: str) -> None:
    """Refuse ``target`` when it is a file of compiled code (TorchScript, a torch.export program),
    read from its bytes without loading it, before trust is even asked for: ``use`` (``"surgery"``,
    ``"the channel graph"`` or ``"training"``) needs the Python model."""
    from edgeslim.checkpoint import KIND_WORDS, looks_like_file
    from edgeslim.utils.sniff import sniff

    if not looks_like_file(target) or not Path(target).is_file():
        return
    kind = {"torchscript": "torchscript", "torch-export": "exported"}.get(sniff(target))
    if kind is None:
        return
    if use != "training":
        raise EdgeslimError(
            f"{target} is {KIND_WORDS[kind]}; {use} needs the Python model: give the edgeslim checkpoint it was "
            "made from, or the architecture with weights",
            param="weights",
        )
    raise EdgeslimError(
        f"{target} is {KIND_WORDS[kind]}, which cannot be trained (its code is compiled); give the Python model: "
        "the architecture with weights, or a whole pickled module with trust_pickle=True",
        param=("weights", "trust_pickle"),
    )


def refuse_non_classifier(
    target: str, data_name: str | None = None, *, trust_pickle: bool = False, target_param: str = "model"
) -> None:
    """Refuse ``target`` unless it is an image classifier, before any data is loaded or directory made.

    ``slim`` trains on labelled images with a cross-entropy loss, so the model's forward must give
    one ``[N, classes]`` tensor, in training and in eval mode. That is checked structurally: the
    architecture (random weights; ``--weights`` are not read) or the model file is run on two
    zero images of the data set's shape, and of the model's own input shape when it cannot take that. A detector (an
    ultralytics YOLO returns a dict in training and a tuple in eval mode) is refused with one
    line saying how to slim it in its own training loop. A model that cannot run the probe is left
    to the run's own checks. An unknown data set or model is refused naming ``data_name`` or
    ``target_param`` (the request's field for ``target``).
    """
    import torch

    from edgeslim.data import dataset_shape
    from edgeslim.models.user import class_count, describe_output, probe_forward

    with naming("data_name"):
        dshape = dataset_shape(data_name) if data_name else None
    probe = dshape[:3] if dshape else ((3, 32, 32) if records_no_size(target) else None)  # data sized later
    with naming(target_param):
        loaded = load_model_or_arch(
            target, trust_pickle=trust_pickle, input_shape=probe, any_size=True, quiet=True
        )
    if loaded.kind in ("torchscript", "exported"):
        return  # refused later, with its own reason
    from edgeslim.models.registry import model_defaults

    own = model_defaults(target)  # a name built at the data set's shape: its family's own size too
    channels = dshape[0] if dshape else own.get("in_channels", 3)  # the model is built for the data's
    native = (channels, *own["input_size"]) if "input_size" in own else None
    shapes = list(dict.fromkeys(s for s in (dshape[:3] if dshape else None, loaded.input_shape, native) if s))
    model = loaded.model
    for shape in shapes:  # the data set's shape, else (a detector may not take 8x8 digits) the model's own
        try:
            for mode in ("eval", "training"):
                y = probe_forward(model, torch.zeros((2, *shape)), training=mode == "training")
                if class_count(y, 2) is None:
                    break
            else:
                return
        except Exception:  # noqa: BLE001 - a shape the model cannot take: the next, else the run reports it
            continue
        break
    else:
        return
    prune = Step("prune")
    raise EdgeslimError(
        f"edgeslim trains image classifiers on labelled images, and {target} is not one: in {mode} mode "
        f"its forward returns {describe_output(y)}, not one [N, classes] tensor (a detector or a segmenter?); an ultralytics "
        "YOLO is slimmed on its ultralytics data yaml (data_name my_data.yaml: ultralytics trains it), another "
        "detector in its own training loop with edgeslim.sparsity.ProximalSlimming (slimmer.step(optimizer) "
        f"after each optimizer.step(), slimmer.finalize() at the end; {OWN_LOOP_DOCS}), then cut the zero "
        f"channels out with {prune}",
        param="data_name",
        steps=(prune,),
    )
