"""Keep third-party chatter (print() progress, tracebacks of expected fallbacks) off the terminal."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[io.StringIO]:
    """Capture stdout and raise the named loggers ("" = root) to CRITICAL for the block.

    Yields the captured text, which callers may pass to ``log.debug``.
    """
    lgs = [logging.getLogger(n or None) for n in loggers]
    levels = [lg.level for lg in lgs]
    sink = io.StringIO()
    for lg in lgs:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        for lg, lv in zip(lgs, levels):
            lg.setLevel(lv)
