"""Every timm model by name: ``timm:efficientnet_b0``, ``timm:ghostnet_100``, ... (optional extra ``timm``).

Built with random weights (``pretrained=False``: nothing is downloaded), ``num_classes`` and
``in_chans`` passed to ``timm.create_model``. timm is imported only when such a name is used.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgeslim.errors import EdgeslimError, require
from edgeslim.models.registry import register_prefix


def list_timm_models() -> list[str]:
    """timm's model names ([] when timm is not installed)."""
    try:
        import timm
    except ImportError:
        return []
    return sorted(timm.list_models())


def build_timm_model(name: str, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """timm model ``name`` with random weights, ``num_classes`` outputs and ``in_channels`` inputs."""
    timm = require("timm", "for timm: models")
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join('timm:' + c for c in close)}? " if close else ""
        raise EdgeslimError(f"unknown timm model 'timm:{name}'; {hint}see timm.list_models()")
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    except TypeError as exc:
        raise EdgeslimError(f"timm:{name} does not accept {sorted(kwargs)}: {exc}") from exc


register_prefix("timm", build_timm_model, list_timm_models)
