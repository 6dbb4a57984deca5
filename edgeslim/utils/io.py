"""Atomic file writes and output-path checks: nothing the user owns is half-written or lost."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice

#: the file name endings of a TensorRT engine (serialized plan)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def check_output_path(path: str | os.PathLike, force: bool = False, param: str | None = None) -> Path:
    """Return ``path`` as a Path if it may be written, else raise a one-line error.

    Refuses to overwrite an existing file unless ``force``; checks the parent directory
    can be created and written. ``param`` is the caller's parameter that gave ``path``
    (``"onnx_path"``): the refusal names it, and the CLI shows that parameter's flag.
    """
    p = Path(path)
    if p.is_dir():  # (a file in it with the ending the caller asked for: model.pt was refused as no .onnx)
        raise EdgeslimError(
            f"{p} is a directory; give a file path (e.g. {p / ('model' + (p.suffix or '.pt'))})"
        )
    if p.exists() and not force:
        raise EdgeslimError(
            f"{p} already exists; pass force=True to overwrite it or choose another {param or 'path'}",
            param=("force", param) if param else "force",
        )
    parent = p.parent if str(p.parent) else Path(".")
    if any(a.exists() and not a.is_dir() for a in (parent, *parent.parents)):
        raise EdgeslimError(f"cannot write {p}: a part of its directory is a file; choose another path")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeslimError(
            f"cannot create directory {parent}: {exc.strerror}; choose a writable path"
        ) from exc
    if not os.access(parent, os.W_OK):
        raise EdgeslimError(f"directory {parent} is not writable; choose a writable output path")
    return p


def check_output_dir(
    path: str | os.PathLike, force: bool = False, marker: str | None = None, param: str = "out_dir"
) -> Path:
    """Prepare an output directory. If ``marker`` (a file name) exists in it, refuse without force.

    ``param`` is the caller's parameter that gave ``path``; the errors name it (the CLI: its flag).
    """
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise EdgeslimError(f"{d} exists and is not a directory; choose another {param}", param=param)
    if marker and (d / marker).exists() and not force:
        raise EdgeslimError(
            f"{d / marker} already exists; pass force=True to overwrite it or choose another {param}",
            param=("force", param),
        )
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeslimError(
            f"cannot create directory {d}: {exc.strerror}; choose a writable {param}", param=param
        ) from exc
    if not os.access(d, os.W_OK):
        raise EdgeslimError(f"directory {d} is not writable; choose a writable {param}", param=param)
    return d


def check_distinct(outputs: dict[str, Any], inputs: dict[str, Any] | None = None) -> None:
    """Refuse, whatever ``force`` says, two ``outputs`` (parameter name -> path, None: not written)
    that are one file, or one that is a file of ``inputs``: the later write would replace the
    earlier, or the file read (a review: prune's plot written over its checkpoint, and with force a
    prune's output over its own input model)."""
    seen: dict[str, str] = {}
    for name, path in (inputs or {}).items():
        if path is not None and os.path.isfile(str(path)):
            seen[os.path.realpath(path)] = name
    for name, path in outputs.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise EdgeslimError(f"{name} {path} is also the {seen[key]}; give each its own path", param=name)
        seen[key] = name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. Temporary files of
    ``path`` left by killed writers (older than this process, not in use) are removed first.
    """
    import fcntl

    from edgeslim.utils.tmpfiles import sweep_stale_tmp, tmp_prefix

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(final.parent, final.name)  # what killed writers of this file left behind
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(final.name), suffix=".tmp", dir=final.parent)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a sweep in another process leaves a file in use alone
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, _file_mode(final))  # mkstemp's 0600 would hide the result from other users
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    finally:
        os.close(fd)


class Staging:
    """Where a :func:`writing` block writes each file of its set: ``stage(path)`` is ``path``'s name in a
    hidden folder beside it (files named after one another, ``m.onnx`` -> ``m.ort``, stay so), where the
    block's later steps read it back; :meth:`final` turns what names staged paths (a result, a message)
    into the paths they are published as. :meth:`drop` names a file beside the set that goes with the
    earlier set when the block succeeds."""

    def __init__(self) -> None:
        self.dirs: dict[Path, Path] = {}  # a target's folder -> its staging folder
        self.dropped: list[Path] = []

    def __call__(self, path: str | os.PathLike) -> Path:
        """Where the block writes ``path`` (``path`` itself in a folder it could not claim)."""
        p = Path(path)
        return self.dirs[p.parent] / p.name if p.parent in self.dirs else p

    def drop(self, path: str | os.PathLike) -> None:
        self.dropped.append(Path(path))

    def final(self, obj: Any) -> Any:
        """``obj`` (a string, path, or dict, list or tuple of them) with its staged paths as published."""
        names = "|".join(re.escape(d.name) for d in self.dirs.values()) or "(?!)"
        # a staging folder's name as a component of a path (after "/", or where a path starts)
        sub = re.compile(rf"(?:(?<=/)|(?<![\w./-]))(?:{names})/").sub
        if isinstance(obj, Notice):
            return Notice(sub("", obj), obj.params)
        if isinstance(obj, str):
            return sub("", obj)
        if isinstance(obj, Path):
            return Path(sub("", str(obj)))
        if isinstance(obj, dict):
            return {k: self.final(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.final(v) for v in obj)
        return obj


@contextlib.contextmanager
def writing(paths: Iterable[str | os.PathLike], *, replace: bool = False) -> Iterator[Staging]:
    """The block writes the set of files ``paths``, each to ``stage(path)`` (the :class:`Staging` it
    yields: a hidden folder beside the file); when the block ends without an error they are renamed to
    ``paths`` together (each with the mode of the file it replaces), and with ``replace`` (an overwrite that was asked for) the earlier files of the
    set it did not write, and those it :meth:`~Staging.drop` s, are removed: the set is never part this
    run's, part an earlier one's. A block that raises (a refusal, an error, a stop) publishes nothing:
    the earlier files stay as they were (a forced export failing at its INT8 step had replaced the ONNX
    and removed the earlier INT8 file), and the folders it made for the files go again where they hold
    no file. (A run killed outright leaves its staging folder, which the next writer of that folder
    removes; a kill during the renames, a moment, can leave a mix.) Each file is claimed for the block
    (an ``flock`` on a hidden ``.NAME.edgeslim.lock`` beside it, removed after; the kernel releases it
    if the process dies): a second run writing one of them meanwhile is refused in one line, as a run
    directory's lock refuses it."""
    import fcntl
    import shutil

    from edgeslim.utils.tmpfiles import STAGE_PREFIX, mark_stage, sweep_stale_stages

    targets = [Path(p) for p in dict.fromkeys(paths)]
    made: list[Path] = []  # the top-most missing folder above each target
    for t in targets:
        missing = [d for d in t.absolute().parents if not d.exists()]
        if missing and missing[-1] not in made:
            made.append(missing[-1])
    claims: list[tuple[Path, int]] = []
    held: list[int] = []  # each staging folder's: its flock tells a sweep that it is in use
    stage = Staging()

    def release() -> None:
        for d in stage.dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        for fd in held:
            os.close(fd)
        held.clear()
        for lock, fd in claims:
            with contextlib.suppress(OSError):
                lock.unlink()  # (still locked: a run that opened it meanwhile re-checks the path)
            os.close(fd)
        claims.clear()

    try:
        for t in targets:
            if t.parent.is_dir() or not t.parent.exists():
                with contextlib.suppress(OSError):  # (a parent that cannot be made: the path check says so)
                    t.parent.mkdir(parents=True, exist_ok=True)
            if t.parent.is_dir() and os.access(t.parent, os.W_OK):
                lock = t.with_name(f".{t.name}.edgeslim.lock")
                try:
                    fd = _locked_file(lock, t, "output path")
                except OSError:  # (a folder that takes no new files, /proc: the write itself names the file)
                    continue
                claims.append((lock, fd))
                if t.parent not in stage.dirs:
                    sweep_stale_stages(t.parent)  # (what killed runs left)
                    d = stage.dirs[t.parent] = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=t.parent))
                    held.append(os.open(d, os.O_RDONLY))
                    fcntl.flock(held[-1], fcntl.LOCK_SH)
                    mark_stage(d)  # (after the lock: a marked folder nobody locks is a dead run's)
        yield stage
        for t in targets:  # (a folder the block could not claim: its files were written in place)
            if t.parent in stage.dirs and stage(t).is_file():
                if t.exists():  # (the mode of the file it replaces: a private file stays private)
                    os.chmod(stage(t), _file_mode(t))
                os.replace(stage(t), t)
            elif replace and t.parent in stage.dirs:
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()  # an earlier file of the set this run did not write
        for p in stage.dropped:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            _remove_unheld_lock(p.with_name(f".{p.name}.edgeslim.lock"))  # (a killed writer's)
    except BaseException as exc:
        release()
        # the files named as they are published (a message, an OS error's file names)
        if isinstance(exc, EdgeslimError) and exc.args and isinstance(exc.args[0], str):
            exc.args = (stage.final(exc.args[0]), *exc.args[1:])
        if isinstance(exc, OSError):
            exc.filename, exc.filename2 = stage.final(exc.filename), stage.final(exc.filename2)
        for d in made:
            if d.is_dir():
                _remove_if_unwritten(d)
        raise
    release()


def _file_mode(final: Path) -> int:
    """The mode ``open(final, "w")`` would give: the replaced file's, else 0666 minus the umask."""
    try:
        return final.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere reading it means setting it; restored at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch scalars and paths into plain JSON types; NaN and +-inf (which JSON
    has no words for: Python would write NaN and Infinity, which other readers refuse) become null."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def nonfinite_as_words(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its infinite and NaN floats as the words ``inf``, ``-inf``, ``nan``: a report's number
    said as the table says it (:func:`to_jsonable` would make it null, and ``json.dumps`` Infinity)."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of the bytes of the file ``path`` (hex): what a run records of a file it reads again
    when resumed (a latency table), so another one put in its place is noticed."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"{p} does not exist; give the path of a JSON file written by edgeslim")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EdgeslimError(
            f"{p} is not text (not UTF-8 JSON); give a JSON file written by edgeslim"
        ) from None
    except json.JSONDecodeError as exc:
        raise EdgeslimError(f"{p} is not valid JSON ({exc.msg} at line {exc.lineno}); re-create it") from exc
    except RecursionError:  # (a probe's JSON nested thousands deep)
        raise EdgeslimError(f"{p} nests its JSON too deep for a file edgeslim writes; re-create it") from None


#: the lock file of a run directory (held with flock while a run writes there)
LOCK_NAME = ".edgeslim.lock"


@contextlib.contextmanager
def run_dir_lock(
    path: str | os.PathLike, *, created: bool = False, parents: Sequence[Path] = ()
) -> Iterator[Path]:
    """Hold an exclusive lock on the run directory ``path`` (created if missing) while writing.

    A second run into the same directory fails at once with a one-line error. The lock is an
    ``flock`` on ``path/.edgeslim.lock``: the kernel releases it when the process ends, also on
    ``kill -9``, so an interrupted run never leaves a stale lock behind. The lock file is removed
    when the run ends (a killed run leaves it, unlocked: harmless). A run that fails before
    writing any file into a directory made for it (missing before, or ``created``: made by the
    caller) removes that directory again, and the empty parent folders made for it (here, or ``parents``:
    by the caller, nearest first; a review: a refused ``runs/mine`` left an empty ``runs/``).
    """
    d = Path(path)
    parents = [*parents, *(p for p in d.parents if not p.exists())]  # (nearest first)
    created = created or not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_NAME
    fd = _locked_file(lock, d)
    try:
        try:
            yield d
        except BaseException:
            if created:
                _remove_if_unwritten(d, lock)
                for p in parents if not d.exists() else ():
                    try:
                        p.rmdir()  # (only while empty)
                    except OSError:
                        break
            raise
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()  # still locked: a run that opened it meanwhile re-checks the path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def check_unlocked(path: str | os.PathLike) -> None:
    """Refuse in one line (as :func:`run_dir_lock` would) when another run holds ``path``'s lock: for
    checks that read the directory before taking it (an unfinished run's state is not yet written)."""
    import fcntl

    lock = Path(path) / LOCK_NAME
    try:
        fd = _open_lock(lock, os.O_RDONLY)
    except OSError:  # no lock file (no run) or not readable: run_dir_lock decides later
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _held(fd, path) from None
    finally:
        os.close(fd)


def _held(fd: int, d: str | os.PathLike, what: str = "output directory") -> EdgeslimError:
    """The refusal of a run directory (or output file, ``what``) ``d`` whose lock (open as ``fd``)
    another run holds: its pid."""
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    return EdgeslimError(
        f"another edgeslim run (pid {holder}) is writing to {d}; wait for it to finish or choose another {what}"
    )


def _open_lock(lock: Path, flags: int) -> int:
    """``os.open`` of a lock file that is a plain file: a symbolic link there (which the open would
    follow, and the pid written would truncate its target) or a FIFO (whose open blocks) is refused."""
    try:
        fd = os.open(lock, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if os.path.islink(lock):
            raise _not_a_lock(lock, "a symbolic link") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock(lock, "not a regular file")
    return fd


def _not_a_lock(lock: Path, what: str) -> EdgeslimError:
    return EdgeslimError(
        f"{lock} is {what}, not the lock file edgeslim writes; remove it, or choose another output directory",
        param="out_dir",
    )


def _locked_file(lock: Path, d: Path, what: str = "output directory") -> int:
    """A descriptor of ``lock`` holding its exclusive ``flock``, our pid written in it (a refused run
    names the holder); the file is the one at the path (a run that ended between our open and our
    lock removed it: open again)."""
    import fcntl

    while True:
        fd = _open_lock(lock, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = _held(fd, d, what)
            os.close(fd)
            raise err from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            return fd
        os.close(fd)


def _remove_unheld_lock(lock: Path) -> None:
    """Remove the lock file ``lock`` of an output file if no run holds it (one a killed run left);
    removed under our own ``flock``, so a run that opened it meanwhile re-checks the path
    (:func:`_locked_file`) and locks a new one."""
    import fcntl

    try:
        fd = _open_lock(lock, os.O_RDONLY)
    except (OSError, EdgeslimError):  # (none there, or not a lock file: left alone)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            lock.unlink()
    except OSError:  # (held by a running writer, or gone meanwhile)
        pass
    finally:
        os.close(fd)


def _remove_if_unwritten(d: Path, lock: Path | None = None) -> None:
    """Remove ``d`` if it holds nothing but ``lock`` and empty directories."""
    files = [p for p in d.rglob("*") if not p.is_dir() and p != lock]
    if files:
        return
    with contextlib.suppress(OSError):
        if lock is not None:
            lock.unlink()
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            sub.rmdir()
        d.rmdir()
