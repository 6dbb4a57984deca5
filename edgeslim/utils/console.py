"""Terminal output through rich: progress bars, result tables, one-line errors.

Library code reports progress through :func:`progress` (a no-op when disabled) and logs
through :mod:`logging`; it never prints. The CLI owns the consoles.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

#: terminal control sequences (CSI ``ESC [ ... final``, OSC ``ESC ] ... BEL or ESC \\``) and any other
#: control character but newline and tab
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` without terminal control sequences: a name from a file (a zip member, a run.json
    label) could retitle the terminal or recolour it (a security probe); colour codes another
    library put in its message go too."""
    return _CONTROL.sub("", text)


class _Console(Console):
    """A rich console that prints strings without terminal control sequences (:func:`printable`)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


#: results go to stdout, progress and messages to stderr (so ``--json`` stdout stays clean)
#: piped output is not cut to 80 columns: names people copy (profiles, layers) stay whole
PIPED_WIDTH = 200
out = _Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = _Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else PIPED_WIDTH)


def progress_enabled() -> bool:
    """Live progress bars: only on a real terminal (not where FORCE_COLOR makes rich call a pipe one;
    a pipe gets a line per epoch), and not with ``EDGESLIM_NO_PROGRESS`` set."""
    return os.environ.get("EDGESLIM_NO_PROGRESS", "") == "" and err.is_terminal and _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # (no isatty, or closed)
        return False


def print_json(obj: Any) -> None:
    """``obj`` as one JSON document on stdout (:func:`~edgeslim.utils.io.to_jsonable`), without colour
    codes whatever FORCE_COLOR or TTY_COMPATIBLE say (rich's ``print_json`` colours it then, and the
    output no longer parses)."""
    import json

    from edgeslim.utils.io import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress(enabled: bool | None = None) -> Iterator[Progress]:
    """A rich Progress on stderr; disabled (but usable) when stderr is not a terminal."""
    show = progress_enabled() if enabled is None else enabled
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=False,
    )
    with bar:
        yield bar


#: the logger of the steps of long library work without a live bar (:func:`task_steps`), shown on stderr
#: as a line each where :func:`log_lines_when_piped` shows them
STEPS_LOGGER = "edgeslim.steps"


def task_steps(bar: Progress | None, label: str, info: str = "") -> Callable[[int, int, str], None] | None:
    """A ``(done, total, what)`` callback for long library work (a sweep, a latency lookup) that
    updates a new task of ``bar`` (None: None); a total of 0 marks a stage of unknown length. Where the
    bar is off (stderr piped), each step is an INFO line of :data:`STEPS_LOGGER` instead (a review's
    latency lookup measured for 3 minutes under a pipe without a word)."""
    if bar is None:
        return None
    task = bar.add_task(label, total=None, info=info)
    lines = logging.getLogger(STEPS_LOGGER) if bar.disable else None

    def step(done: int, total: int, what: str) -> None:
        bar.update(task, completed=done, total=total or None, info=what)
        if lines is not None and what:
            lines.info("%s: %s%s", label, f"{done}/{total} " if total else "", what)

    return step


@contextlib.contextmanager
def log_lines_when_piped() -> Iterator[None]:
    """While a long command runs with no progress bar (stderr is not a terminal), the trainer's INFO
    log lines go to stderr: one line per epoch, and one per step of long work (:func:`task_steps`: a
    latency lookup's stages and layers). For the CLI only (a library never configures logging); the
    handlers are removed afterwards."""
    if progress_enabled():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    # the epoch lines (not data loading or other notes), and the steps
    loggers = [logging.getLogger(name) for name in ("edgeslim.train", STEPS_LOGGER)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """Build a rich table; numbers are right-aligned."""
    t = Table(title=printable(title) if title else title, title_justify="left")
    numeric = [all(isinstance(r[i], (int, float)) for r in rows if i < len(r)) for i in range(len(columns))]
    for i, (col, num) in enumerate(zip(columns, numeric)):
        # the first column names the row (a profile, a layer): never cut, never wrapped
        t.add_column(col, justify="right" if num and rows else "left", no_wrap=i == 0, overflow="fold")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 1e5 or (abs(v) < 1e-3 and v != 0):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else printable(str(v))


def error_line(message: str) -> None:
    """Print ``message`` as one red line on stderr (markup escaped, line breaks folded)."""

    from rich.markup import escape

    # (terminal colour codes another library put in its message, e.g. ultralytics', are dropped)
    plain = printable(str(message).replace("\r", "\n"))
    text = " ".join(part.strip() for part in plain.splitlines() if part.strip())
    err.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suf}{unit}"
    return f"{n:.4g}{unit}"
