"""Imports every zoo module so their models register. Add new zoo modules here."""

from edgeslim.models import vgg  # noqa: F401
