"""Backend registry: ``onnxruntime``, ``tensorrt``, ``trtexec``, ``torch``.

A backend opens a model file and returns a :class:`Session` that can run one synchronous
inference and time itself. Backend modules import their runtime inside ``open`` only, so the
registry imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeslim.bench.timing import TimingConfig, host_loop
from edgeslim.errors import EdgeslimError, Step
from edgeslim.utils.io import ENGINE_SUFFIXES

#: name -> "module:Class"; modules are imported when the backend is used
BACKENDS: dict[str, str] = {
    "onnxruntime": "edgeslim.bench.backends.ort:OrtBackend",
    "tensorrt": "edgeslim.bench.backends.trt:TensorRTBackend",
    "trtexec": "edgeslim.bench.backends.trtexec:TrtexecBackend",
    "torch": "edgeslim.bench.backends.torch_eager:TorchBackend",
}
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt"}


def check_options(options: dict) -> dict:
    """Refuse backend options out of range (``threads`` must be an integer >= 1, or absent/None)."""
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise EdgeslimError(
            f"options['threads'] must be an integer >= 1 (or None for the runtime's default), got {threads!r}"
        )
    return options


def output_shapes(out: Any) -> list[list[int]] | None:
    """Shapes of what :meth:`Session.run` returned (arrays/tensors, possibly in lists, tuples or
    dicts); None when it returned something else."""
    if hasattr(out, "shape"):
        return [[int(d) for d in out.shape]]
    items = list(out.values()) if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else None
    if not items:
        return None
    shapes: list[list[int]] = []
    for item in items:
        sub = output_shapes(item)
        if sub is None:
            return None
        shapes += sub
    return shapes


def check_engine_trusted(path: str, options: dict) -> None:
    """Refuse a serialized TensorRT engine unless ``options['trust_pickle']``.

    An engine can embed plugin libraries and other host code that runs when it is deserialized,
    so like a pickle it is only loaded from a trusted source (e.g. one ``edgeslim export`` built).
    """
    own = model_format(path)  # an engine by its bytes, or by its name unless the bytes prove ONNX
    if (own == "engine" or (named_format(path) == "engine" and own != "onnx")) and not options.get(
        "trust_pickle"
    ):
        what = (
            "is a TensorRT engine"
            if own == "engine"
            else "is named like a TensorRT engine (its bytes do not show it ONNX)"
        )
        raise EdgeslimError(
            f"{path} {what}, which can carry plugin code that runs when it is loaded, so it is refused; for an "
            "engine you built (edgeslim's TensorRT export) or trust, pass trust_pickle=True",
            param="trust_pickle",
        )


def register_backend(name: str, target: str) -> None:
    """Add a backend (``"package.module:Class"``)."""
    BACKENDS[name] = target


def get_backend(name: str):
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        raise EdgeslimError(
            f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}", param="backend"
        )
    mod, cls = BACKENDS[key].split(":")
    return getattr(importlib.import_module(mod), cls)()


#: file kinds (:func:`edgeslim.utils.sniff.sniff`) -> the model format they are
_KIND_FORMATS = {"onnx": "onnx", "ort": "ort", "tensorrt-engine": "engine", "torch": "torch", "torchscript": "torch",
                 "torch-export": "torch", "legacy": "torch"}  # fmt: skip
#: model format -> the backend that runs it
_FORMAT_BACKENDS = {"onnx": "onnxruntime", "ort": "onnxruntime", "engine": "tensorrt", "torch": "torch"}


def model_format(model_path: str | os.PathLike) -> str:
    """What a model file holds: ``"onnx"``, ``"ort"`` (ONNX Runtime's own format), ``"engine"`` (a
    TensorRT plan) or ``"torch"``; by its bytes where they tell (an ONNX model named ``.engine`` is
    ONNX), else by its name (.onnx, .ort, .engine/.plan/.trt; anything else torch)."""
    from edgeslim.utils.sniff import sniff

    path = str(model_path)
    own = _KIND_FORMATS.get(sniff(path)) if os.path.isfile(path) else None
    return own if own is not None else named_format(path)


def named_format(model_path: str | os.PathLike) -> str:
    """The format a file's name says (:func:`model_format`'s fallback): .onnx, .ort, an engine
    suffix, anything else torch."""
    low = str(model_path).lower()
    if low.endswith(".onnx"):
        return "onnx"
    if low.endswith(".ort"):
        return "ort"
    return "engine" if low.endswith(ENGINE_SUFFIXES) else "torch"


#: model format -> what it is, in words
FORMAT_WORDS = {"onnx": "an ONNX model", "ort": "an ONNX Runtime model", "engine": "a TensorRT engine",
                "torch": "a PyTorch model"}  # fmt: skip


def default_backend_for(model_path: str | os.PathLike) -> str:
    """The backend that runs the file (:func:`model_format`): ONNX and ORT -> onnxruntime, a
    TensorRT engine -> tensorrt, anything else torch."""
    return _FORMAT_BACKENDS[model_format(model_path)]


class Session:
    """One loaded model on one runtime."""

    backend = "?"

    def set_batch(self, batch: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self) -> Any:  # pragma: no cover - interface
        """One synchronous inference on the prepared inputs."""
        raise NotImplementedError

    def measure(self, cfg: TimingConfig) -> dict[str, list[float]]:
        """Samples in seconds: ``host`` (wall clock around each call) and, where the runtime has GPU
        events, ``device``; at least one of the two."""
        return {"host": host_loop(self.run, cfg)}

    def input_shapes(self) -> list[list[int]] | None:
        """Shapes of the inputs prepared by :meth:`set_batch`; None where the backend cannot tell."""
        return None

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class Backend:
    name = "?"
    #: ``"module:function"`` that measures a per-layer latency table with this backend
    #: (``fn(path, batch, cfg, options) -> dict``, see :mod:`edgeslim.bench.layers`); None: it cannot
    layer_table_producer: str | None = None

    def open(self, path: str, options: dict) -> Session:  # pragma: no cover - interface
        raise NotImplementedError

    def layer_table(self, path: str, batch: int, cfg: TimingConfig, options: dict) -> dict:
        """A per-layer latency table of the model file at ``batch`` (format in docs/budget.md)."""
        if self.layer_table_producer is None:
            raise EdgeslimError(f"the {self.name} backend cannot write a layer table")
        module, attr = self.layer_table_producer.split(":")
        return getattr(importlib.import_module(module), attr)(path, batch, cfg, options)


def concrete_shape(name: str, shape: Sequence, batch: int) -> list[int]:
    """Replace a dynamic first dimension by ``batch``; refuse other dynamic or mismatched dims."""
    out = []
    for i, d in enumerate(shape):
        dynamic = d is None or isinstance(d, str) or (isinstance(d, int) and d < 0)
        if i == 0:
            if dynamic:
                out.append(batch)
            elif d != batch:
                export = Step("export", dynamic_batch=True)
                raise EdgeslimError(
                    f"use batch {d}, or export with a dynamic batch axis ({export}): "
                    f"input '{name}' has a fixed batch of {d}, cannot run batch {batch}",
                    param="batch",
                    steps=(export,),
                )
            else:
                out.append(int(d))
        elif dynamic:
            raise EdgeslimError(
                f"input '{name}' has a dynamic dimension {i} ({d}); export with a fixed input size"
            )
        else:
            out.append(int(d))
    return out


def run_failed(
    path: str, runtime: str, shapes: list[list[int]] | None, dtype: str, exc: Exception, fix: str, **kw: Any
) -> EdgeslimError:
    """A model that fails in its runtime on the random inputs a session feeds it (``shapes`` of
    ``dtype``), as one line: the model's own error (:func:`~edgeslim.errors.cause_line`) and ``fix``;
    ``kw``: the error's ``param``."""
    from edgeslim.errors import cause_line

    cause = cause_line(exc)
    if (
        not cause.startswith(f"{type(exc).__name__}:") and cause != type(exc).__name__
    ):  # (message-less: its type)
        cause = f"{type(exc).__name__}: {cause}"
    given = " and ".join("x".join(map(str, s)) for s in shapes or [])
    return EdgeslimError(
        f"{os.path.basename(path)} fails in {runtime} on a random {dtype} input {given} ({cause[:240]}); {fix}",
        **kw,
    )


def random_input(shape: Sequence[int], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.integers(0, 10, size=shape).astype(dtype)
