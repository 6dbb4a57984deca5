"""Every torchvision classification and semantic-segmentation model by name: ``tv:resnet18``,
``tv:mobilenet_v3_small``, ``tv:lraspp_mobilenet_v3_large``, ``tv:deeplabv3_resnet50``, ...

Built with random weights (``weights=None``; a segmenter's backbone too, ``weights_backbone=None``;
it returns a dict, ``{"out": masks}``), ``num_classes`` passed to the builder, and the stem
conv (the first ``nn.Conv2d`` reached from the input) replaced when ``in_channels != 3``.
These are ImageNet architectures: most need inputs of at least 32x32 (Inception-v3 needs 75x75,
the ViTs need ``image_size`` given as a keyword and a multiple of their patch size).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgeslim.errors import EdgeslimError, require
from edgeslim.models.registry import LIST_MODELS, register_prefix

#: a segmenter's input (H, W) when none is given: the ImageNet size of its backbone (deepest features
#: 28x28 in FCN / DeepLabV3, 14x14 in LR-ASPP), where 32x32 (the classifiers') left LR-ASPP 2x2. Not
#: torchvision's 520 (its transforms for these weights): on one CPU thread LR-ASPP's prune took 32 s
#: there (6 s at 224), and a DeepLabV3-ResNet101 forward 5.8 s
SEGMENTER_INPUT_SIZE = (224, 224)

#: builder keywords that make a model return plain logits in training mode too
_PLAIN_LOGITS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def list_tv_models() -> list[str]:
    """Names of torchvision's classification and semantic-segmentation models (no detection/video)."""
    return sorted(list_tv_classifiers() + _segmentation_models())


def list_tv_classifiers() -> list[str]:
    """Names of torchvision's classification models."""
    tvm = require("torchvision.models", "for tv: models")
    import torchvision

    return list(tvm.list_models(module=torchvision.models))


def _detection_models() -> list[str]:
    """Names of torchvision's detection models (Faster/Mask/Keypoint R-CNN, RetinaNet, SSD, FCOS)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models.detection))


def _segmentation_models() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models.segmentation))


def first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute, conv) of the first Conv2d in registration order: the stem of every
    torchvision classifier (their modules are registered in data-flow order)."""
    for path, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_path, _, attr = path.rpartition(".")
            return model.get_submodule(parent_path), attr, m
    raise EdgeslimError(f"{type(model).__name__} has no Conv2d stem to adapt to other input channels")


def adapt_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the stem conv by one with ``in_channels`` inputs (random init, same geometry)."""
    parent, attr, conv = first_conv(model)
    if conv.in_channels == in_channels:
        return model
    if conv.groups != 1:
        raise EdgeslimError(
            f"the stem conv of {type(model).__name__} is grouped; cannot change its input channels"
        )
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    1, conv.bias is not None, conv.padding_mode)  # fmt: skip
    new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    setattr(parent, attr, new)
    return model


def build_tv_model(name: str, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """torchvision model ``name`` with random weights, ``num_classes`` outputs and ``in_channels`` inputs."""
    tvm = require("torchvision.models", "for tv: models")
    names = list_tv_models()
    if name not in names and name in _detection_models():
        raise EdgeslimError(
            f"tv:{name} is a torchvision detector, and tv: names are its classifiers and segmenters only: bring your detector as a whole pickled module "
            "(torch.save(model, path), loaded with trust_pickle=True) or as your own code, a package.module:Factory "
            f"whose function builds it (e.g. torchvision.models.detection.{name}(weights=None, num_classes=...))",
            param="trust_pickle",
        )
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join('tv:' + c for c in close)}? " if close else ""
        raise EdgeslimError(
            f"unknown torchvision model 'tv:{name}'; {hint}see {LIST_MODELS}", steps=(LIST_MODELS,)
        )
    kw = {**_PLAIN_LOGITS.get(name, {}), **kwargs}
    if name in _segmentation_models():
        kw.setdefault("weights_backbone", None)  # (the default downloads ImageNet weights)
    try:
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kw)
    except TypeError as exc:
        raise EdgeslimError(f"tv:{name} does not accept {sorted(kw)}: {exc}") from exc
    return adapt_in_channels(model, in_channels)


def tv_defaults(name: str) -> dict[str, Any]:
    """What a ``tv:`` name is built with when the user gives no input shape: a segmenter at
    :data:`SEGMENTER_INPUT_SIZE`, a classifier at the ModelSpec default (32x32)."""
    return {"input_size": SEGMENTER_INPUT_SIZE} if name in _segmentation_models() else {}


register_prefix("tv", build_tv_model, list_tv_models, defaults=tv_defaults)
