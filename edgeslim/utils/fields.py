"""Request dataclasses checked field by field, as the CLI's option types check the same values."""

from __future__ import annotations

import math
import numbers
import os
import typing
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Any

from edgeslim.errors import EdgeslimError

#: request fields that count something (>= 1), that are >= 0, and that are > 0, as the CLI's option
#: types have them
COUNT_FIELDS = frozenset({"epochs", "batch_size", "subset", "test_subset", "threads", "round_to", "latency_batch",
                          "imgsz", "num_classes", "trials", "calib_images", "calib"})  # fmt: skip
NONNEG_FIELDS = frozenset({"seed"})
POSITIVE_FIELDS = frozenset({"lr"})
#: request fields that name a torch device (:func:`~edgeslim.utils.parsing.parse_device`)
DEVICE_FIELDS = frozenset({"device"})

#: what a value of an annotated type may be: any integer for an int (numpy's too), any real number for a
#: float, any path object for a str or a Path (an ``os.PathLike``), a list for a tuple
_ACCEPTS: dict[type, tuple[type, ...]] = {
    int: (numbers.Integral,), float: (numbers.Real,), str: (str, os.PathLike), Path: (str, os.PathLike),
    tuple: (tuple, list),
}  # fmt: skip
_WORDS: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "True or False",
                           Path: "a path", tuple: "a tuple", list: "a list", dict: "a dict"}  # fmt: skip


def _kinds(hint: Any) -> list[type] | None:
    """The classes a value of ``hint`` may be an instance of (None: not checked here, e.g. Any)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
    out: list[type] = []
    for member in members:
        base = typing.get_origin(member) or member
        if not isinstance(base, type) or base is Any:
            return None
        out.append(base)
    return out


def _item_kind(hint: Any) -> type | None:
    """The class each item of a tuple field must be (``tuple[float, ...]``: float), or None (not a tuple
    of one item type)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
    for member in members:
        if typing.get_origin(member) is tuple:
            args = {a for a in typing.get_args(member) if a is not Ellipsis}
            return args.pop() if len(args) == 1 and isinstance(next(iter(args)), type) else None
    return None


def _arity(hint: Any) -> int | None:
    """How many items a fixed-length tuple field holds (``tuple[int, int]``: 2), or None (any number)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, UnionType) else (hint,)
    for member in members:
        if typing.get_origin(member) is tuple:
            args = typing.get_args(member)
            return None if not args or Ellipsis in args else len(args)
    return None


#: what the items of a fixed-length tuple field are, for its refusal (default: how many there are)
_ITEMS = {"image_size": "(H, W), or one side S for S x S"}


def _plain(value: Any, kinds: list[type]) -> Any:
    """``value`` as the plain type its field names: a path object for a str field as its string, a
    string for a Path field as a Path, numpy's integers and floats as Python's (the code after
    compares, formats and joins them as such)."""
    if isinstance(value, os.PathLike) and str in kinds and Path not in kinds:
        return os.fspath(value)
    if isinstance(value, str) and Path in kinds and str not in kinds:
        return Path(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, (int, bool)) and int in kinds:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)) and float in kinds:
        return float(value)
    return value


def check_fields(req: Any) -> None:
    """Refuse in one line a request field (or a tuple field's item) of another type than its annotation
    says (a bool is no number), a device the CLI's option does not take, a number that is not finite,
    a count below 1, a seed below 0, a learning rate not above 0: what the CLI's option types refuse,
    for a Python caller (who got a TypeError from deep inside, or a run that failed late for another
    reason)."""
    hints = typing.get_type_hints(type(req))
    for f in fields(req):
        value = getattr(req, f.name)
        kinds = _kinds(hints.get(f.name, Any))
        if value is None or kinds is None:
            continue
        n = _arity(hints[f.name])
        if n is not None and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = (value,) * n  # (one side for both, as the CLI takes --image-size 224)
        accepted = tuple(t for k in kinds for t in _ACCEPTS.get(k, (k,)))
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            names = " or ".join(sorted({_WORDS.get(k, k.__name__) for k in kinds if k is not type(None)}))
            raise EdgeslimError(f"{f.name} must be {names}, got {value!r}", param=f.name)
        item = _item_kind(hints.get(f.name, Any)) if isinstance(value, (tuple, list)) else None
        if item is not None:
            value = _check_items(f.name, value, item)
        if n is not None and len(value) != n:  # ((32,) was an IndexError in the reader, (16, 16, 16) trained)
            raise EdgeslimError(
                f"{f.name} is {_ITEMS.get(f.name, f'{n} values')}; got {value!r}", param=f.name
            )
        if f.name in DEVICE_FIELDS and isinstance(value, str):
            value = check_device(f.name, value)
        plain = _plain(value, kinds)
        if plain is not getattr(req, f.name):
            setattr(req, f.name, plain)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if not math.isfinite(value):
            raise EdgeslimError(f"{f.name} must be a finite number, got {value!r}", param=f.name)
        if f.name in COUNT_FIELDS and value < 1:
            raise EdgeslimError(f"{f.name} must be >= 1, got {value!r}", param=f.name)
        if f.name in NONNEG_FIELDS and value < 0:
            raise EdgeslimError(f"{f.name} must be >= 0, got {value!r}", param=f.name)
        if f.name in POSITIVE_FIELDS and not value > 0:
            raise EdgeslimError(f"{f.name} must be > 0, got {value!r}", param=f.name)


def _check_items(name: str, value: tuple | list, kind: type) -> tuple:
    """``value`` as a tuple of plain items (:func:`_plain`: numpy's integers as Python's, which the code
    after checks as such); refused in one line where an item is of another type than the annotation says
    (a bool is no number), or a number that is not finite (``mean=("a",)`` was a TypeError from deep inside)."""
    accepted = _ACCEPTS.get(kind, (kind,))
    for v in value:
        if not isinstance(v, accepted) or isinstance(v, bool):
            words = {int: "integers", float: "numbers", str: "strings"}.get(kind, kind.__name__)
            raise EdgeslimError(f"{name} must be a tuple of {words}, got {tuple(value)!r}", param=name)
        if isinstance(v, numbers.Real) and not math.isfinite(v):
            raise EdgeslimError(f"{name} must hold finite numbers, got {tuple(value)!r}", param=name)
    return tuple(_plain(v, [kind]) for v in value)


def check_device(name: str, value: str) -> str:
    """A device field's value as the CLI takes it (lower case), refused in one line if it is none."""
    from edgeslim.utils.parsing import not_a_device, parse_device

    device = parse_device(value)
    if device is None:
        raise EdgeslimError(f"{name} {not_a_device(value)}", param=name)
    return device


class CheckedFields:
    """Base of the request dataclasses: a request checks its values as it is built (:func:`check_fields`)."""

    def __post_init__(self) -> None:
        check_fields(self)
