"""Imports every zoo module so their models register. Add new zoo modules here."""

from edgeslim.models import densenet, mobilenetv2, resnet, timm_models, tv, user, vgg, yolo  # noqa: F401
