"""The CLI's one validation layer: typed, ranged option values, also for config files.

Every numeric option uses :class:`Number` (finite, with its range); every shape, device and
list option a type below. Config files (``slim --config``) go through the same types: each value
is turned into the text a user would type and parsed by the option it names
(:func:`load_config`), so a value means the same whichever way it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import click

from edgeslim.errors import EdgeslimError, first_line
from edgeslim.utils.parsing import not_a_device, parse_device, safe_yaml

#: largest config file read (bytes): a config is a handful of lines
MAX_CONFIG_BYTES = 1 << 20


class Number(click.ParamType):
    """A finite int or float inside ``[min, max]`` (``gt``/``lt``: open bounds)."""

    def __init__(
        self,
        kind: type = float,
        *,
        min: float | None = None,  # noqa: A002 - click's own spelling
        max: float | None = None,  # noqa: A002
        gt: float | None = None,
        lt: float | None = None,
    ) -> None:
        self.kind = kind
        self.min, self.max, self.gt, self.lt = min, max, gt, lt
        self.name = "integer" if kind is int else "float"

    def describe(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "INTEGER" if self.kind is int else "FLOAT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a number", param, ctx)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            num = value
        else:
            text = str(value).strip()
            try:
                num = int(text) if self.kind is int else float(text)
            except ValueError:
                self.fail(f"{value!r} is not a valid {self.name}", param, ctx)
        if self.kind is int and (isinstance(num, float) and not num.is_integer()):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not math.isfinite(num):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        num = self.kind(num)
        bad = (
            (self.min is not None and num < self.min)
            or (self.max is not None and num > self.max)
            or (self.gt is not None and num <= self.gt)
            or (self.lt is not None and num >= self.lt)
        )
        if bad:
            self.fail(f"{value!r} is out of range: it must be {self.describe()}", param, ctx)
        return num


#: common ranges
COUNT = Number(int, min=1)  # epochs of work, images, batch sizes
NONNEG_INT = Number(int, min=0)
SEED = Number(int, min=0, max=2**63 - 1)
POSITIVE = Number(float, gt=0)
NONNEG = Number(float, min=0)
FRACTION_OPEN = Number(float, gt=0, lt=1)
UNIT = Number(float, min=0, max=1)


class Shape(click.ParamType):
    """``C,H,W`` of one input image: three positive integers."""

    name = "C,H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from edgeslim.cli import cli_message
        from edgeslim.utils.parsing import parse_input_shape

        try:
            return parse_input_shape(str(value))
        except EdgeslimError as exc:
            self.fail(cli_message(exc, ctx.command if ctx is not None else None), param, ctx)


class ImageSize(click.ParamType):
    """``H,W`` (or one side ``S`` for S x S) of the images of an image folder."""

    name = "H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).replace("x", ",").split(",")]
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            size = ()
        if len(size) == 1:
            size = (size[0], size[0])
        if len(size) != 2 or min(size) < 1:
            self.fail(f"{value!r} is not an image size: give H,W (224,224) or one side (224)", param, ctx)
        return size


class Device(click.ParamType):
    """A torch device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        device = parse_device(value)
        if device is None:
            self.fail(not_a_device(value), param, ctx)
        return device


class NumberList(click.ParamType):
    """Comma-separated numbers in a range, e.g. batch sizes ``1,32`` (integers by default)."""

    name = "N[,N...]"

    def __init__(self, item: Number = COUNT, *, distinct: bool = False) -> None:
        self.item, self.distinct = item, distinct  # distinct: each number once (batch sizes)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        if not any(p.strip() for p in parts):
            self.fail("give at least one number, e.g. 1,32", param, ctx)
        if not all(p.strip() for p in parts):  # "1,,2": a number left out?
            self.fail(
                f"{value!r} has an empty item; give numbers separated by single commas, e.g. 1,32", param, ctx
            )
        vals = tuple(self.item.convert(p, param, ctx) for p in parts)
        if self.distinct and len(set(vals)) < len(vals):
            self.fail(f"{value!r} repeats a number; give each once, e.g. 1,32", param, ctx)
        return vals


class FractionList(click.ParamType):
    """Comma-separated increasing fractions in (0, 1), e.g. ``0.5,0.75``."""

    name = "F[,F...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        vals = tuple(FRACTION_OPEN.convert(p, param, ctx) for p in str(value).split(",") if p.strip())
        if not vals or list(vals) != sorted(set(vals)):
            self.fail(f"{value!r}: give increasing fractions in (0, 1), e.g. 0.5,0.75", param, ctx)
        return vals


class Phase(click.ParamType):
    """A training phase: epochs (``1``, ``0.5``) or a share of training (``25%``)."""

    name = "EPOCHS|N%"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from edgeslim.sparsity.prox import parse_phase

        try:
            kind, v = parse_phase(value, param.name if param is not None and param.name else "phase")
        except EdgeslimError as exc:
            self.fail(str(exc), param, ctx)
        return f"{100 * v:g}%" if kind == "fraction" else v


class BetaEnd(click.ParamType):
    """A positive number or ``auto``."""

    name = "FLOAT|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if str(value).strip().lower() == "auto":
            return "auto"
        return POSITIVE.convert(value, param, ctx)


class RecoveryLr(click.ParamType):
    """A learning rate > 0, ``base`` (the run's base rate) or ``off``."""

    name = "LR|base|off"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from edgeslim.slim import RECOVERY_LR_WORDS

        word = str(value).strip().lower()
        if word in RECOVERY_LR_WORDS:
            return word
        if word in ("false", "no"):  # (YAML reads a config file's `off` as false)
            return "off"
        return POSITIVE.convert(value, param, ctx)


SHAPE = Shape()
IMAGE_SIZE = ImageSize()
PHASE = Phase()
BETA_END = BetaEnd()
RECOVERY_LR = RecoveryLr()
DEVICE = Device()
#: numeric precisions (``edgeslim.channels.devices.Precision``; not imported here: that module loads pydantic)
PRECISION = click.Choice(["fp32", "fp16", "int8"])


#: option types written comma-separated on the command line (``1,32``, ``H,W``, ``C,H,W``): a config file
#: may give them as a YAML list
COMMA_SEPARATED = (NumberList, FractionList, ImageSize, Shape)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_keys(command: click.Command, exclude: Collection[str] = ()) -> dict[str, str]:
    """Config-file keys -> parameter names: every option of ``command`` but ``exclude`` (parameter names),
    by its flags without the dashes (``--data-dir``: ``data_dir``; ``--lambda``: ``lambda``)."""
    return {
        flag.lstrip("-").replace("-", "_"): p.name
        for p in command.params
        if isinstance(p, click.Option) and p.name and p.name not in exclude
        for flag in p.opts
    }


def load_config(ctx: click.Context, path: Path | None, keys: dict[str, str]) -> dict[str, Any]:
    """Options from a flat YAML mapping, parsed by the same click options as the command line.

    ``keys`` maps config keys (dashes or underscores) to parameter names of ``ctx.command``.
    """
    if path is None:
        return {}
    import yaml

    if path.is_dir():
        raise EdgeslimError(
            f"config file {path} is a directory; give the YAML file (e.g. {path / 'slim.yaml'})"
        )
    if not path.is_file():
        raise EdgeslimError(f"config file {path} does not exist; check the path")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise EdgeslimError(f"config file {path} is over {MAX_CONFIG_BYTES >> 20} MiB; give a YAML mapping")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise EdgeslimError(f"config file {path} is not text (not UTF-8); give a YAML file") from None
    except yaml.YAMLError as exc:
        raise EdgeslimError(f"config file {path} is not valid YAML ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise EdgeslimError(f"config file {path} must be a mapping of option: value")
    params = {p.name: p for p in ctx.command.params}
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in keys:
            raise EdgeslimError(f"unknown key {k!r} in {path}; known: {', '.join(sorted(keys))}")
        if v is None:
            continue
        param = params[keys[key]]
        # a list for an option written comma-separated on the command line: mean: [0.485, 0.456, 0.406],
        # image_size: [48, 40] (it was refused as "must be a single value")
        if isinstance(v, list) and isinstance(param.type, COMMA_SEPARATED) and v:
            v = ",".join(_as_text(e) for e in v)
        if isinstance(v, (list, dict, set, tuple)):
            raise EdgeslimError(f"{path}: {k} must be a single value, got {v!r}")
        try:
            out[param.name] = param.type_cast_value(ctx, _as_text(v))
        except click.BadParameter as exc:
            raise EdgeslimError(f"{path}: invalid value for {k}: {exc.format_message()}") from None
    return out
