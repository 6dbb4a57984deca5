"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class EdgeslimError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints ``str(err)`` as one line and exits non-zero, without a traceback.
    The message should say what is wrong and how to fix it, phrased for the Python API.
    ``param`` names the Python parameter(s) the error is about, spelled as in the message
    (``"profile"``, ``("profile", "latency_table")``); the CLI puts the matching flag
    (``--profile``) in their place. ``steps``: the :class:`Step` s the message names, which the CLI
    shows as command lines.
    """

    exit_code: int = 2

    def __init__(
        self, *args: object, param: str | tuple[str, ...] | None = None, steps: tuple[Step, ...] = ()
    ) -> None:
        super().__init__(*args)
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())
        self.steps = steps  # the other stages the message names (as ``str(step)``)


@contextlib.contextmanager
def naming(*params: str) -> Iterator[None]:
    """An :class:`EdgeslimError` raised inside that names no parameter names ``params``: the fields
    of the caller's request the refused value came from (a library function knows only its own)."""
    try:
        yield
    except EdgeslimError as exc:
        if not exc.params:
            exc.params = params
        raise


class Step:
    """Another stage the user should run: ``stage`` (``train``, ``slim``, ``prune``, ``export``,
    ``bench``, ``info``) with the Python parameters ``args`` of its request (a positional one, such as
    the model, by its name). ``str()`` is the Python form (``text``, where the Python API does it
    another way); the CLI shows it as a command line."""

    def __init__(self, stage: str, *, text: str | None = None, **args: Any) -> None:
        self.stage, self.args, self.text = stage, args, text

    def __str__(self) -> str:
        if self.text:
            return self.text
        given = ", ".join(
            f"{k}={str(v)!r}" if not isinstance(v, bool) else f"{k}={v}" for k, v in self.args.items()
        )
        return f"the {self.stage} stage" + (f" ({given})" if given else "")


class Notice(str):
    """A status line for the user that names Python parameters (``params``, spelled as in the
    text), which the CLI shows with its flags in their place, as it does for :class:`EdgeslimError`."""

    params: tuple[str, ...]

    def __new__(cls, text: str, param: str | tuple[str, ...] | None = None) -> Notice:
        obj = super().__new__(cls, text)
        obj.params = (param,) if isinstance(param, str) else tuple(param or ())
        return obj


def renamed(text: str, params: Iterable[str], names: Mapping[str, str] | None) -> str:
    """``text`` with each Python parameter of ``params`` it names given its name in ``names`` (the
    CLI's flags: ``{"force": "--force", "no_simplify": "--no-simplify"}``): the first whole-word
    occurrence (``force=True`` becomes ``--force``, ``simplify=False`` ``--no-simplify``), or ``(see
    NAME)`` appended when the parameter is absent. A parameter without a name stays as it is."""
    if not names:
        return text
    for name in params:
        new, value = names.get(name), "(?:=True)?"
        if new is None and f"no_{name}" in names:  # simplify=False is the flag --no-simplify
            new, value = names[f"no_{name}"], "=False"
        if new is None:
            continue
        # a whole word, not part of a path or file name (runs/weights/best.pt keeps its "weights"), nor
        # the phrase "data set" ("unknown data set 'x'" is no "--data set")
        word = rf"(?<![\w\-/\\.]){re.escape(name)}{value}(?![\w\-/\\]|\.\w| set\b)"
        text, n = re.subn(word, lambda _m, new=new: new, text, count=1)
        if not n:
            text += f" (see {new})"
    return text


def shown(text: str, names: Mapping[str, str] | None) -> str:
    """A status line as its reader calls the parameters: a :class:`Notice` with :func:`renamed`
    applied (``names`` from the CLI; None: a Python caller's, the parameters as they are), anything
    else as it is."""
    return renamed(str(text), text.params, names) if isinstance(text, Notice) else str(text)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name (for a message-less one)."""
    lines = [s for s in str(exc).splitlines() if s.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def cause_line(exc: BaseException) -> str:
    """:func:`first_line`, except for an error raised through TorchScript's interpreter, whose first
    line says only that: its last line, the error the model's code raised."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1]
    return first_line(exc)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory: a :class:`MemoryError`, or one of PyTorch's allocators,
    which are not MemoryErrors (CUDA's ``torch.OutOfMemoryError``, the CPU allocator's RuntimeError
    ``DefaultCPUAllocator: can't allocate memory``)."""
    return (
        isinstance(exc, MemoryError)
        or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__)
        or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
    )


def origin(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``exc``'s traceback."""
    import os
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown place"
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


class WorkerError(Exception):
    """An unexpected error (a bug: not an :class:`EdgeslimError`) in a process edgeslim started, raised
    in the one that started it: ``str()`` the first line of its message, ``kind`` its type's name,
    ``origin`` its innermost frame (:func:`origin`), ``process`` which process; its ``__cause__`` (a
    :class:`RemoteTraceback`) holds the process's traceback. The CLI reports it as its own bugs."""

    def __init__(
        self, message: str, *, kind: str, origin: str, process: str = "the measuring process"
    ) -> None:
        super().__init__(message)
        self.kind, self.origin, self.process = kind, origin, process


class RemoteTraceback(Exception):
    """The traceback of another process, as the cause of the error raised for it (printed with it)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0] if self.args else "").rstrip()


class MissingDependencyError(EdgeslimError):
    """An optional dependency (torch, onnxruntime, tensorrt, ...) is not installed."""

    @classmethod
    def for_package(cls, package: str, extra: str | None = None, why: str = "") -> MissingDependencyError:
        hint = install_hint(extra) if extra else f"pip install {package}"
        what = f" ({why})" if why else ""
        return cls(f"{package} is not installed{what}; install it with: {hint}")


#: the extra of pyproject.toml that installs each optional package edgeslim imports
EXTRAS = {
    "torch": "train", "torchvision": "train", "fvcore": "train", "onnxscript": "train", "onnxslim": "train",
    "sklearn": "train", "PIL": "train", "scipy": "train", "onnx": "ort", "onnxruntime": "ort",
    "matplotlib": "plots", "timm": "timm", "ultralytics": "yolo", "tensorrt": "trt", "jtop": "jetson",
}  # fmt: skip


def install_hint(extra: str, root: Path | None = None) -> str:
    """The command that installs edgeslim's ``extra``. edgeslim is not on PyPI (``pip install
    'edgeslim[x]'`` would fetch another package): pip on the source tree edgeslim runs from (``root``,
    default the folder above the package, when its pyproject.toml is edgeslim's), or, where it was
    installed from elsewhere, the extra and the README section on installing."""
    root = root if root is not None else Path(__file__).resolve().parent.parent
    if _is_edgeslim_project(root / "pyproject.toml"):
        return f"pip install {shlex.quote(f'{root}[{extra}]')}"
    return (
        f"pip install 'PATH[{extra}]' with PATH a clone of edgeslim's repository (edgeslim is not on "
        "PyPI; README.md, 'On the device')"
    )


def _is_edgeslim_project(pyproject: Path) -> bool:
    """Whether ``pyproject`` is edgeslim's own (``[project]`` ``name = "edgeslim"``), not that of another
    project whose tree edgeslim's package was copied into."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        import tomllib
    except ImportError:  # Python 3.10: the name line of the [project] table
        import re

        table = None
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("["):
                table = line
            elif table == "[project]" and re.fullmatch(r"""name\s*=\s*["']edgeslim["']""", line):
                return True
        return False
    try:
        return tomllib.loads(text).get("project", {}).get("name") == "edgeslim"
    except tomllib.TOMLDecodeError:
        return False


def extra_of(module: str) -> str:
    """The extra that installs ``module``'s package (:data:`EXTRAS`; ``train`` for one not listed)."""
    return EXTRAS.get(module.split(".")[0], "train")


def require(module: str, why: str = ""):
    """Import ``module`` or raise a one-line :class:`MissingDependencyError` naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError.for_package(module.split(".")[0], extra_of(module), why) from exc
