"""Helpers shared by the CLI commands: loading a model file or an architecture name, shared options.

Top-level imports stay light (click, edgeslim.errors/utils); torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeslim.errors import EdgeslimError
from edgeslim.utils.parsing import parse_input_shape

if TYPE_CHECKING:
    from edgeslim.checkpoint import LoadedModel

F = TypeVar("F", bound=Callable[..., Any])

MODEL_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".ckpt", ".bin")


def looks_like_file(target: str) -> bool:
    """True when ``target`` names a model file (existing, a model suffix, or a path) not an architecture."""
    return Path(target).exists() or target.endswith(MODEL_SUFFIXES) or "/" in target


def load_model_or_arch(
    target: str,
    *,
    trust_pickle: bool,
    input_shape: str | Sequence[int] | None = None,
    data: str | None = None,
    num_classes: int | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` from a model file, or an architecture name built with random weights.

    For a name, the input shape is ``input_shape``, else the data set's, else 3,32,32; the classes
    are ``num_classes``, else the data set's, else 10. Files keep their own spec.
    """
    from edgeslim.checkpoint import LoadedModel, load_model

    dshape = None
    if data is not None:  # checks the name early, also for files
        from edgeslim.data import dataset_shape

        dshape = dataset_shape(data)
    if looks_like_file(target):
        return load_model(target, trust_pickle=trust_pickle)
    from edgeslim.models.registry import ModelSpec, create_model

    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if data is not None and dshape is None and shape is None:
        raise EdgeslimError(f"--data {data} has no fixed image size; pass --input-shape C,H,W")
    c, h, w = shape or (dshape[:3] if dshape else (3, 32, 32))
    classes = num_classes or (dshape[3] if dshape else 10)
    spec = ModelSpec(target, classes, c, (h, w))
    return LoadedModel(model=create_model(spec), kind="architecture", spec=spec, path=None)


def model_input_shape(
    loaded: LoadedModel,
    input_shape: str | Sequence[int] | None = None,
    data: str | None = None,
    *,
    data_option: bool = False,
) -> tuple[int, int, int]:
    """C,H,W for ``loaded``: ``input_shape``, else the data set's, else the model's spec.

    ``data_option``: the command has a ``--data`` that sets the shape (named in the error).
    """
    if input_shape is not None:
        return parse_input_shape(input_shape)
    if data is not None:
        from edgeslim.data import dataset_shape

        dshape = dataset_shape(data)
        if dshape is not None:
            return (dshape[0], dshape[1], dshape[2])
    if loaded.spec is not None:
        c, h, w = loaded.spec.input_shape
        return (c, h, w)
    raise EdgeslimError(
        f"{loaded.path} is a {loaded.kind} file without an input shape; pass --input-shape C,H,W"
        + (" or --data" if data_option else "")
    )
