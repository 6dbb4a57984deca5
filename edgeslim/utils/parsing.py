"""Input shapes and sizes given on the command line: parsed once, checked, one-line errors; and
paths quoted for the command lines edgeslim prints.

Shared by the CLI, export and bench code; imports nothing heavy.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

from edgeslim.errors import EdgeslimError

#: what to do with a model of 1-D convolutions (an input C,L), which the commands do not take
ONE_D = (
    "a model of 1-D convolutions (Conv1d: audio, signals), of input C,L, is pruned from Python: "
    "prune_with_report(model, torch.randn(1, C, L)) (docs/surgery.md)"
)


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, int, int]:
    """``"3,32,32"`` / ``"3x32x32"`` / ``(3, 32, 32)`` -> ``(C, H, W)``.

    A leading batch dimension is not accepted here (``batch`` sets it).
    """
    if isinstance(text, str):
        parts = [p for p in re.split(r"[,xX\s]+", text.strip()) if p]
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            raise EdgeslimError(
                f"invalid input shape {text!r}: input_shape must be C,H,W with positive integers, e.g. 3,32,32",
                param="input_shape",
            ) from None
    else:
        dims = [int(d) for d in text]
    if len(dims) != 3 or any(d < 1 for d in dims):
        one_d = f"; {ONE_D}" if len(dims) == 2 and min(dims) >= 1 else ""  # (C,L: audio, signals)
        raise EdgeslimError(
            f"invalid input shape {text!r}: input_shape must be C,H,W, three positive integers "
            f"(e.g. 3,32,32; batch sets the batch size){one_d}",
            param=("input_shape", "batch"),
        )
    if dims[0] > 4 and dims[2] in (1, 3, 4):  # 224,224,3: a height of channels and 3-pixel-wide images
        raise EdgeslimError(
            f"input shape {text!r} looks like H,W,C; input_shape is channels first: "
            f"{dims[2]},{dims[0]},{dims[1]}",
            param="input_shape",
        )
    if dims[0] > 64 or dims[1] > 8192 or dims[2] > 8192:
        one_d = f"; {ONE_D}" if dims[1] == 1 and dims[0] <= 64 else ""  # (1,1,16000: a signal)
        raise EdgeslimError(
            f"invalid input shape {text!r}: input_shape must be C,H,W with C <= 64 and H,W <= 8192 "
            f"(channels first, e.g. 3,224,224){one_d}",
            param="input_shape",
        )
    return (dims[0], dims[1], dims[2])


def parse_size(text: str | int) -> int:
    """``"1G"``, ``"512M"``, ``"256MiB"``, ``1073741824`` -> bytes (binary units)."""
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
        if not m:
            raise EdgeslimError(f"invalid size {text!r}; use e.g. 512M, 1G or 2GiB")
        mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
        n = int(float(m.group(1)) * mult)
    if n < 1 << 20:
        raise EdgeslimError(f"size {text!r} is below 1 MiB; TensorRT needs a workspace of at least a few MiB")
    return n


#: the torch devices a run takes: ``auto`` (CUDA where there is one), ``cpu``, ``cuda``, ``cuda:N``
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def not_a_device(value: Any) -> str:
    """Why ``value`` is no device a run takes (after :func:`parse_device` gave None), without the field's name."""
    if "," in str(value):  # (ultralytics' "0,1": its several-GPU training runs in a process of its own)
        return (
            f"{value!r} names several devices; a run uses one (ultralytics' several-GPU training runs in a process "
            f"of its own, which the slimming does not reach): give one of {DEVICE_CHOICES}"
        )
    return f"{value!r} is not a device; use {DEVICE_CHOICES}"


def parse_device(value: Any) -> str | None:
    """``value`` as the torch device a run takes (:data:`DEVICE_CHOICES`), lower case; None for
    anything else (``"tpu"``, ``"cuda:abc"``, ``"mps"``: torch's own errors or a failure later)."""
    text = str(value).strip().lower()
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:[0-9]+", text):  # (ASCII: isdigit() takes '²')
        return text
    return None


def quote(path: Any) -> str:
    """``path`` as one shell word, for a command line the user copies (a folder may hold spaces)."""
    return shlex.quote(str(path))


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases (``*name``): a settings file needs none, and nested aliases
    expand exponentially when the result is walked (a 437-byte config took all memory). A file that
    uses one raises ``yaml.YAMLError`` (the callers' one-line error names the file)."""
    import yaml

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", mark)
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
