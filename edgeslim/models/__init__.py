"""The CNN zoo: paper architectures for slimming and torchvision CNNs by name (``tv:NAME``).
The registry (:mod:`edgeslim.models.registry`) never imports its members: the zoo modules
register themselves with ``@register_model`` when this package imports :mod:`edgeslim.models.zoo`.
"""

from edgeslim.models import zoo  # noqa: F401  (the members register their models)
from edgeslim.models.registry import ModelSpec, create_model, list_models, register_model

__all__ = ["ModelSpec", "create_model", "list_models", "register_model"]
