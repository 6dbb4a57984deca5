"""One TensorRT logger per process, shared by the engine builder and the runtime.

TensorRT keeps the first logger it is given for every later builder and runtime of the process
(a second one is warned about and may not receive the messages), so both take this one. Its lines
are kept (VERBOSE left out) for the messages edgeslim makes of them: a caller notes
``len(logger.lines)`` before a call and reads what came after. TensorRT's own plugins are
registered with it (an engine or ONNX that uses one cannot be read without them).
"""

from __future__ import annotations

import functools
from typing import Any

#: TensorRT's severities, as ``int(severity)``: INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
ERROR, INFO = 1, 3


@functools.cache
def tensorrt_logger(trt: Any) -> Any:
    """The process's TensorRT logger (``trt``: the imported ``tensorrt`` module)."""

    class _Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[tuple[int, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= INFO:
                self.lines.append((level, f"[{getattr(severity, 'name', severity)}] {msg}"))

    logger = _Log()
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def lines_since(logger: Any, start: int, worst: int = INFO) -> list[str]:
    """The logger's lines from index ``start`` on, of severity ``worst`` or worse."""
    return [text for level, text in logger.lines[start:] if level <= worst]
