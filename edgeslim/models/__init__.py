"""The CNN zoo: paper architectures for slimming and torchvision CNNs by name (``tv:NAME``)."""

from edgeslim.models.registry import ModelSpec, create_model, list_models, register_model

__all__ = ["ModelSpec", "create_model", "list_models", "register_model"]
