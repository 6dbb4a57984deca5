"""Keep third-party chatter (print() progress, tracebacks of expected fallbacks) off the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[io.StringIO]:
    """Capture stdout and raise the named loggers ("" = root) to CRITICAL for the block; root handlers the
    block adds are removed.

    Yields the captured text, which callers may pass to ``log.debug``.
    """
    lgs = [logging.getLogger(n or None) for n in loggers]
    levels = [lg.level for lg in lgs]
    # (a library's logging.info() on the root adds basicConfig's stderr handler where the root has none:
    # ONNX Runtime's quantizer did, and every later INFO line of edgeslim's loggers came out twice)
    root_handlers = list(logging.root.handlers)
    sink = io.StringIO()
    for lg in lgs:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        for lg, lv in zip(lgs, levels):
            lg.setLevel(lv)
        for h in [h for h in logging.root.handlers if h not in root_handlers]:
            logging.root.removeHandler(h)


@contextlib.contextmanager
def native_stdout(into: list[str]) -> Iterator[None]:
    """Send what native code writes to the process's stdout (file descriptor 1) during the block to a
    temporary file, appended to ``into`` after it: torch's C++ ONNX log prints a failed TorchScript
    export's whole IR graph there (a review: 20 lines before the dynamo fallback, inside ``--json``
    output), which ``contextlib.redirect_stdout`` cannot catch. Without a descriptor 1, a no-op."""
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            into.append(sink.read().decode(errors="replace"))
