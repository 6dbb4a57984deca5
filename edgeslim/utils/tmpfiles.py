"""Removing the temporary files that killed writers leave behind.

:func:`edgeslim.utils.io.atomic_path` writes ``.NAME.edgeslim-XXXXXXXX.tmp`` beside ``NAME`` and renames it
over ``NAME`` on success; a process killed in between (SIGKILL, power loss) leaves the temporary
file. :func:`sweep_stale_tmp` removes such files for one target: only those that no process holds an
``flock`` on (``atomic_path`` holds ``fcntl.flock(fd, LOCK_SH)`` on its temporary file while it
writes) and that were last written before the current process started or :data:`STALE_AFTER_S`
seconds ago, whichever is later (a file is created a moment before its writer locks it: a fresh
one is left alone; a run restarted at once after a kill, within the start-time margin, left the
dead writer's file for ever when only files older than the process counted).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """Wall-clock time (epoch seconds) the current process started; on systems without ``/proc``,
    the time this module was imported (later than the start, so fewer files count as stale)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5), clock ticks after boot; fields[0] is field 3
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age - 0.5  # /proc/uptime has 10 ms steps: err towards keeping files
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


#: seconds after its last write an unlocked temporary file counts as a dead writer's
STALE_AFTER_S = 5.0

#: what follows ``.NAME.`` in a temporary file's name, before ``tempfile``'s eight random letters:
#: names a user may give their own files (``.model.pt.backup.tmp``) are not taken for ours
TMP_TAG = "edgeslim-"
#: the rest of the name: ``tempfile``'s eight random letters and the suffix
_TMP_END = r"[a-z0-9_]{8}\.tmp"


def tmp_prefix(name: str) -> str:
    """The prefix of :func:`~edgeslim.utils.io.atomic_path`'s temporary files for target ``name``
    (``tempfile.mkstemp(prefix=tmp_prefix(name), suffix=".tmp")``)."""
    return f".{name}.{TMP_TAG}"


def tmp_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`~edgeslim.utils.io.atomic_path` gives temporary files of target ``name``."""
    return re.compile(re.escape(tmp_prefix(name)) + _TMP_END)


def tmp_target(path: str) -> str:
    """``path`` with a temporary file's name replaced by its target's (``/a/.m.pt.edgeslim-x1y2z3w4.tmp``
    -> ``/a/m.pt``); other paths unchanged."""
    return re.sub(rf"(^|/)\.([^/]+)\.{TMP_TAG}{_TMP_END}$", r"\1\2", path)


def _locked(path: Path) -> bool:
    """Whether another open file description holds an ``flock`` on ``path``."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return True  # cannot open it: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # closing releases the lock we took
    return False


def sweep_stale_tmp(
    directory: str | os.PathLike, name: str, *, older_than: float | None = None
) -> list[Path]:
    """Remove the stale temporary files of target ``name`` in ``directory`` (:func:`tmp_pattern`); return
    the paths removed.

    Stale: a regular file (not a link) last modified before ``older_than`` (epoch seconds; default
    the current process's start time, :func:`process_start_time`, or :data:`STALE_AFTER_S` ago,
    whichever is later) and not ``flock``-ed by anyone. A missing ``directory`` is not an error;
    files that vanish or cannot be removed are skipped.
    """
    cutoff = max(process_start_time(), time.time() - STALE_AFTER_S) if older_than is None else older_than
    pat = tmp_pattern(name)
    d = Path(directory)
    try:
        entries = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed: list[Path] = []
    for entry in entries:
        if not pat.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
            continue
        path = d / entry.name
        if _locked(path):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


#: the start of the hidden folder :func:`edgeslim.utils.io.writing` stages a set of files in, beside them
STAGE_PREFIX = ".edgeslim-stage-"
#: the file :func:`mark_stage` writes into each staging folder once its writer holds the folder's
#: ``flock``: a folder of that name without it (a user's own) is never removed
STAGE_MARK = ".edgeslim-staging"


def mark_stage(folder: str | os.PathLike) -> None:
    """Mark ``folder`` as a staging folder of :func:`edgeslim.utils.io.writing` (call it while holding
    the folder's ``flock``: a marked folder nobody locks is a dead writer's)."""
    with open(Path(folder) / STAGE_MARK, "x", encoding="ascii") as f:
        f.write("edgeslim stages files here while it writes them; a dead writer's folder is removed\n")


def _marked(path: Path) -> bool:
    """Whether ``path`` holds :data:`STAGE_MARK` as a regular file (not a link)."""
    try:
        return stat.S_ISREG(os.lstat(path / STAGE_MARK).st_mode)
    except OSError:
        return False


def sweep_stale_stages(directory: str | os.PathLike) -> list[Path]:
    """Remove the staging folders (:data:`STAGE_PREFIX`) in ``directory`` that dead writers left: those
    that edgeslim marked (:func:`mark_stage`) and that no process holds an ``flock`` on (``writing``
    holds one on its folder from before the mark until it removes the folder), whatever their age (a
    run restarted at once after a kill); return the paths removed. A folder without the mark, a user's
    own of a matching name, is left alone."""
    import shutil

    pat = re.compile(re.escape(STAGE_PREFIX) + r"[a-z0-9_]{8}")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        path = Path(directory) / entry.name
        with contextlib.suppress(OSError):
            if pat.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False) and _marked(path):
                if not _locked(path):
                    shutil.rmtree(path)
                    removed.append(path)
    return removed


#: the start of the name of every :func:`temporary_folder` (in the system's temporary directory)
TEMP_PREFIX = "edgeslim-"
#: the file :func:`temporary_folder` writes into its folder once it holds the folder's ``flock``: a folder
#: of a matching name without it (a user's, an earlier edgeslim's still in use) is never removed
TEMP_MARK = ".edgeslim-temporary"


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[str]:
    """``tempfile.TemporaryDirectory(prefix=prefix)`` (a ``prefix`` of :data:`TEMP_PREFIX`) whose folder a
    process killed outright leaves is removed by the next one made: the folder is ``flock``-ed while in
    use and marked (:data:`TEMP_MARK`), and :func:`sweep_stale_temporary` runs first (a review: each
    kill -9 of an export or bench left its folder in $TMPDIR for good)."""
    import shutil
    import tempfile

    if not prefix.startswith(TEMP_PREFIX):
        raise ValueError(f"a temporary folder's prefix starts {TEMP_PREFIX!r}, got {prefix!r}")
    sweep_stale_temporary()
    path = tempfile.mkdtemp(prefix=prefix)
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with open(Path(path) / TEMP_MARK, "x", encoding="ascii") as f:  # (after the lock: see STAGE_MARK)
                f.write("edgeslim works here; a dead process's folder is removed by the next run\n")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # (before the lock goes: no sweep sees it unheld)
        os.close(fd)


def sweep_stale_temporary(directory: str | os.PathLike | None = None) -> list[Path]:
    """Remove the :func:`temporary_folder` s in ``directory`` (default: the system's temporary directory)
    whose process died: marked (:data:`TEMP_MARK`) and ``flock``-ed by nobody; return the paths removed.
    A live process's folder (locked), and an unmarked one, stay."""
    import shutil
    import tempfile

    d = Path(directory if directory is not None else tempfile.gettempdir())
    pat = re.compile(re.escape(TEMP_PREFIX) + r"[a-z]+-[a-z0-9_]{8}")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    for entry in entries:
        path = d / entry.name
        with contextlib.suppress(OSError):
            if not pat.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            if stat.S_ISREG(os.lstat(path / TEMP_MARK).st_mode) and not _locked(path):
                shutil.rmtree(path)
                removed.append(path)
    return removed
