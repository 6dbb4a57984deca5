"""Run directories: one run at a time (a lock), no overwrite without ``force``, interrupted runs kept."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError
from edgeslim.utils.io import LOCK_NAME, check_output_dir, file_digest, run_dir_lock
from edgeslim.utils.rundir import (
    HIDDEN_PREFIX,
    MODEL_FILE,
    TABLE_FILE,
    TRAIN_FILES,
    ULTRALYTICS_TRAIN_FILES,
    YOLO_RUN_MARK,
    left_aside,
    left_aside_line,
)
from edgeslim.utils.tmpfiles import tmp_pattern

log = logging.getLogger(__name__)

#: the key of a run's checkpoint meta holding the digest of the latency table it prices with
TABLE_DIGEST = "latency_table_sha256"


@contextlib.contextmanager
def run_directory(
    out_dir: Path,
    *,
    force: bool,
    resume: bool = False,
    markers: tuple[str, ...] = (),
    interrupted: str | None = None,
    resumable: bool = True,
    run_files: tuple[str, ...] | Callable[[Path], tuple[str, ...]] = (),
    stale: tuple[str, ...] = (),
    inputs: tuple[Any, ...] = (),
) -> Iterator[Path]:
    """Hold ``out_dir`` for one run.

    Without ``force`` or ``resume`` a directory that holds any of ``markers`` or ``stale`` (the outputs
    of an earlier run: any file the run may write, a user's own included) is refused, and so is one
    whose ``interrupted`` sub-directory holds files (a run
    that was stopped: continue it with ``resume``, where ``resumable``); with ``force`` (not
    ``resume``) what a run writes there (``run_files``: names or glob patterns, with the temporary files
    of atomic writes of those names; or a function of the folder giving them, :func:`slim_train_files`)
    is moved aside as the run starts over, anything else is kept, and only
    those files count as a run that was stopped. A run that fails or is stopped before it writes a
    checkpoint (a ``.pt`` file) into ``interrupted`` leaves none of its files there. ``stale``: the
    earlier run's results (its report, models, plots), moved aside as a forced run starts, so a forced
    run that is stopped leaves no finished-looking results beside its own; one of the paths in
    ``inputs`` (what the new run reads) is kept. What was moved aside is deleted when the block ends,
    and put back when it raises (a refusal of its input, a stop, a failure) before anything in
    ``out_dir`` changed; the exception then carries ``earlier_run_restored`` (``out_dir``). The lock
    is held until the block ends.
    """
    created = not Path(out_dir).exists()  # removed again if the run fails before writing a file
    parents = [p for p in Path(out_dir).parents if not p.exists()]  # (made for it: removed with it)
    aside: _ReplacedFiles | None = None
    part = out_dir / interrupted if interrupted else None
    check_output_dir(out_dir, force=True)  # a writable directory; its contents are checked under the lock
    with run_dir_lock(out_dir, created=created, parents=parents):
        _say_left_aside(out_dir)
        if part is not None and part.is_symlink():  # (a probe: a run wrote and deleted through the link)
            raise EdgeslimError(
                f"{part} is a symbolic link (to {os.readlink(part)}); a run writes and removes its own files "
                "there, so it would change files outside the output directory: remove the link, or choose "
                "another output directory",
                param="out_dir",
            )
        if force and not resume:  # starting over: the old run's files would mix with this one's
            given = {p: _resolved(p) for p in inputs if p}
            started = part is not None and part.is_dir()
            inside = [p for p, path in given.items() if started and path.startswith(_resolved(part) + os.sep)]
            if inside:  # (a review: slim runs/a/train/weights/last.pt --out runs/a --force deleted it first)
                raise EdgeslimError(
                    f"{inside[0]} lies in {part}, which a run started over removes and writes again; copy it out "
                    "of there, or choose another output directory",
                    param="out_dir",
                )
            old = [out_dir / name for name in stale if _resolved(out_dir / name) not in given.values()]
            old = [p for p in old if p.is_file() or p.is_symlink()]
            if started:
                old += _run_entries(part, _patterns(run_files, part))
            # moved aside, not deleted: put back if this run fails before it writes anything of its own
            # (a trial's --force with a misspelt data folder deleted the finished run it was to replace)
            aside = _ReplacedFiles(out_dir, old, part)
        fresh = part is not None and not part.exists()  # made by this run: removed if it saves nothing
        if not (force or resume):  # (a review: a user's trained.pt, channels.png there were replaced unasked)
            for marker in dict.fromkeys((*markers, *stale)):
                check_output_dir(out_dir, False, marker=marker)
            if (
                part is not None
                and part.is_dir()
                and _run_entries(part, _patterns(run_files, part) or ("*",))
            ):
                if not resumable:
                    raise EdgeslimError(
                        f"{out_dir} holds a run that did not finish ({interrupted}/), and such a run cannot be "
                        "resumed; pass force=True to start over",
                        param="force",
                    )
                if not (part / MODEL_FILE).is_file():  # stopped before its first checkpoint
                    raise EdgeslimError(
                        f"{out_dir} holds a run stopped before its first checkpoint ({interrupted}/ has no "
                        f"{MODEL_FILE}), so there is nothing to resume; pass force=True to start over",
                        param="force",
                    )
                raise EdgeslimError(
                    f"{out_dir} holds an interrupted run ({interrupted}/); continue it with resume=True, "
                    "or pass force=True to start over",
                    param=("resume", "force"),
                )
        try:
            yield out_dir
        except BaseException:
            if part is not None and part.is_dir() and not part.is_symlink():  # a run that saved no checkpoint
                # leaves none of its files (a log left behind would block the next run)
                with contextlib.suppress(OSError):  # (the run's own error is the one to see)
                    if fresh and not any(part.rglob("*.pt")):
                        shutil.rmtree(part)
                    elif not fresh:  # a folder that held a user's files: this run's own go
                        own = _run_entries(part, _patterns(run_files, part))
                        if not any(e.suffix == ".pt" for e in own):
                            _remove_entries(part, own)
            if aside is not None and aside.finish(restore=aside.unchanged()):
                # a refusal (bad input), a stop or a failure before this run wrote anything put the earlier
                # run back as it was (a trial: a forced slim stopped after 8 s deleted the finished run)
                with contextlib.suppress(AttributeError):
                    sys.exc_info()[1].earlier_run_restored = str(out_dir)  # type: ignore[union-attr]
            raise
        if aside is not None:
            aside.finish(restore=False)


def _say_left_aside(out_dir: Path) -> None:
    """Warn of the hidden folders in ``out_dir`` that hold an earlier run's results a forced run moved
    aside and could not delete or put back (it was killed outright): under the lock no run owns them
    (a review: each kill -9 of a forced run left another copy of the checkpoints, never mentioned)."""
    for folder, names in left_aside(out_dir):
        if not names:  # (killed before it moved a file: nothing to keep)
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
    if line := left_aside_line(out_dir):
        log.warning("%s", line)


class _ReplacedFiles:
    """An earlier run's files moved into a hidden folder of ``out_dir`` as a forced run starts;
    :meth:`finish` deletes them, or puts them back (``restore``) where this run changed nothing in
    ``out_dir`` (a file on another file system, under a linked ``train/``, is deleted as before: a
    copy of large checkpoints would be slow and could fill the disk)."""

    def __init__(self, out_dir: Path, files: list[Path], part: Path | None) -> None:
        self.out_dir, self.part, self.moved, self.deleted = out_dir, part, [], 0
        self.folder = Path(tempfile.mkdtemp(prefix=HIDDEN_PREFIX, dir=out_dir))  # (unique: not a pid)
        device = out_dir.stat().st_dev
        try:
            for f in files:
                if f.lstat().st_dev != device:
                    self.deleted += 1  # (then it cannot be put back: a restore would be partial)
                    _remove_entries(f.parent, [f])
                    continue
                dest = self.folder / f.relative_to(out_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                f.rename(dest)
                self.moved.append((f, dest))
                parent = f.parent  # (a train/ folder the move emptied goes, as removing its files did)
                if parent != out_dir and not parent.is_symlink() and not any(parent.iterdir()):
                    with contextlib.suppress(OSError):  # (a mount point: busy, and kept)
                        parent.rmdir()
        except BaseException:  # (stopped, or a file that would not move: all back as it was)
            self.finish(restore=True)
            raise
        self.before = self._snapshot()

    def _snapshot(self) -> set[tuple[str, int, int]]:
        """The entries of ``out_dir`` and of its run's checkpoint folder (the hidden folders and the
        lock aside) with their sizes and times (not a whole tree a user keeps there)."""
        out = set()
        top = list(self.out_dir.iterdir()) if self.out_dir.is_dir() else []
        inner = list(self.part.rglob("*")) if self.part is not None and self.part.is_dir() else []
        for e in top + inner:
            rel = e.relative_to(self.out_dir)
            if rel.parts[0].startswith(HIDDEN_PREFIX) or rel.name == LOCK_NAME:
                continue
            with contextlib.suppress(OSError):
                st = e.lstat()
                out.add((str(rel), st.st_size, st.st_mtime_ns))
        return out

    def unchanged(self) -> bool:
        """Whether this run wrote, changed or removed nothing in ``out_dir`` since the move."""
        return self._snapshot() == self.before

    def finish(self, restore: bool) -> bool:
        """Delete the moved files, or put them back (``restore``, where none of their names was
        written again); returns whether the earlier run is back whole (files were put back, none had
        been deleted)."""
        restored = False
        with contextlib.suppress(OSError):  # (a run's own error, if any, is the one to see)
            if restore and self.moved and not any(f.exists() or f.is_symlink() for f, _ in self.moved):
                for f, dest in self.moved:
                    f.parent.mkdir(parents=True, exist_ok=True)
                    dest.rename(f)
                restored = not self.deleted  # (files on another file system were deleted: not "as it was")
            shutil.rmtree(self.folder)
        return restored


def slim_train_files(folder: Path) -> tuple[str, ...]:
    """What a slim run's trainer writes into ``folder`` (its ``train/``): edgeslim's files, and
    ultralytics' where edgeslim's mark shows a YOLO slim run trained there."""
    yolo = (folder / YOLO_RUN_MARK).is_file()
    return TRAIN_FILES + ((YOLO_RUN_MARK, *ULTRALYTICS_TRAIN_FILES) if yolo else ())


def other_tools_run(folder: Path) -> list[str]:
    """The files of ultralytics' training run in ``folder`` (a slim run's ``train/``) where no
    edgeslim run marked it as its own (another tool's run, copied there: a YOLO slim run would write
    over them); [] otherwise."""
    if not folder.is_dir() or folder.is_symlink() or (folder / YOLO_RUN_MARK).is_file():
        return []
    return sorted(str(p.relative_to(folder)) for p in _run_entries(folder, ULTRALYTICS_TRAIN_FILES))


def _patterns(
    run_files: tuple[str, ...] | Callable[[Path], tuple[str, ...]], folder: Path
) -> tuple[str, ...]:
    return run_files(folder) if callable(run_files) else run_files


def _run_entries(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of ``folder`` a run writes: those matching ``patterns`` (names or glob patterns),
    and the temporary files atomic writes of those names leave (:func:`~edgeslim.utils.tmpfiles.tmp_pattern`)."""
    names = [tmp_pattern(p) for p in patterns if not any(c in p for c in "*?[")]
    temps = (
        [e for e in folder.iterdir() if any(n.fullmatch(e.name) for n in names)]
        if names and folder.is_dir()
        else []
    )
    return sorted({*(e for pattern in patterns for e in folder.glob(pattern)), *temps})


def _remove_entries(folder: Path, entries: list[Path]) -> None:
    """Remove ``entries`` of ``folder`` (a folder whole), a sub-folder they empty, and ``folder`` itself
    if they empty it."""
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        parent = entry.parent  # (weights/ emptied of a YOLO run's checkpoints)
        if parent != folder and not parent.is_symlink() and not any(parent.iterdir()):
            with contextlib.suppress(OSError):  # (a mount point: busy, and kept)
                parent.rmdir()
    if not folder.is_symlink() and not any(folder.iterdir()):
        with contextlib.suppress(OSError):
            folder.rmdir()


def saved_data_args(ckpt: dict[str, Any]) -> dict[str, Any]:
    """How a run's checkpoint says its data was loaded, as request fields (``data_name``,
    ``data_dir``, ``subset``, ``test_subset``; None-valued ones left out) plus ``image_size``, the
    size the model trains at (an image folder's may not be its first image's). A train run records
    the data set's name as ``name``, a slim run as ``data_name``."""
    args = dict((ckpt.get("meta") or {}).get("data_args") or {})
    if "data_name" not in args and "name" in args:
        args["data_name"] = args["name"]
    out = {k: args[k] for k in ("data_name", "data_dir", "subset", "test_subset") if args.get(k) is not None}
    size = (ckpt.get("spec") or {}).get("input_size")
    if size:
        out["image_size"] = (int(size[0]), int(size[1]))
    return out


def recorded_dir(path: str | os.PathLike | None) -> str | None:
    """``path`` as a run records it (``data_args["data_dir"]``): absolute, so that a resume or an export
    from another working directory finds it (None stays None)."""
    return str(Path(path).expanduser().absolute()) if path else None


def recorded_input_size(target: str | os.PathLike | None) -> tuple[int, int] | None:
    """The (H, W) an edgeslim checkpoint ``target`` was trained at (:func:`saved_data_args`' image_size),
    or None (no such file, or not an edgeslim checkpoint): an image folder is read at it when no size
    is given (a trial's slim of a model trained at 64x64 decoded 900x1200 photos and was killed for
    memory)."""
    if target is None or not Path(target).is_file():
        return None
    from edgeslim.checkpoint import load_checkpoint_dict

    try:
        return saved_data_args(load_checkpoint_dict(target)).get("image_size")
    except (EdgeslimError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None


def check_resumed_data(given: str | None, saved: dict[str, Any]) -> None:
    """Refuse a data set ``given`` other than the one a resumed run trained on (``saved``:
    :func:`saved_data_args`): its epochs would continue on other images and labels (a review's
    resume of a Fashion-MNIST run on an image folder trained on, and reported, both)."""
    was = saved.get("data_name")
    if given is None or was is None:
        return
    from edgeslim.data.datasets import canonical_name

    def key(name: str) -> str:
        try:
            return canonical_name(name)
        except EdgeslimError:  # (a YOLO data yaml: its path)
            return str(name)

    if key(given) != key(str(was)):
        raise EdgeslimError(
            f"drop data_name {given}: a resume continues on the data the run trained on ({was}); for other "
            "data start a new run",
            param="data_name",
        )


def data_images(bundle: Any) -> dict[str, Any] | None:
    """What a run records of the images it trains on (``data_args["images"]``): the digest of the
    names of an image folder's files it reads and its train / test counts; None for a data set of fixed
    files (the built-in ones)."""
    files = bundle.meta.get("files")
    if files is None:
        return None
    return {"files": files, "train": len(bundle.train_y), "test": len(bundle.test_y)}


def check_resumed_images(saved: dict[str, Any] | None, bundle: Any) -> None:
    """Refuse resuming a run (``saved``: its ``data_args``) on an image folder whose files are not the
    ones it trained on (a review's resume trained its last epochs on 273 / 21 images where the first
    had 281 / 20, without a word); a run that recorded none (older) is not checked."""
    was, now = (saved or {}).get("images"), data_images(bundle)
    if not isinstance(was, dict) or now is None or was.get("files") == now["files"]:
        return
    raise EdgeslimError(
        f"{bundle.source} holds other images than the run trained on ({was.get('train')} train / {was.get('test')} "
        f"test images then, {now['train']} / {now['test']} now: files added, removed or renamed since); put the "
        "folder back as it was to continue the run, or drop resume and start a new one (force=True to replace it)",
        param=("resume", "force"),
    )


def resumed_latency_table(meta: dict[str, Any], out_dir: Path, given: str | os.PathLike | None) -> str | None:
    """The latency table a resumed run (``meta``: its checkpoint's) prices with, as
    :func:`check_resumed_images` checks its images: ``given`` (the table moved since), else the path it
    recorded, else, for the lookup it measured into its own folder, that folder's (the folder moved);
    None for a run without one. Refused when the file is not there, or is not the one the run started
    on (:data:`TABLE_DIGEST`; a review: a table measured again priced the last epochs with other times,
    304 channels kept where 352 were, without a word); a run that recorded no digest (older) is not checked."""
    recorded = ((meta.get("slimming") or {}).get("budget") or {}).get("latency_table")
    if not recorded:
        if given is not None:
            raise EdgeslimError("drop latency_table: the run being resumed prices nothing with a latency table",
                                param="latency_table")  # fmt: skip
        return None
    path = Path(given).expanduser().absolute() if given is not None else Path(recorded)
    if given is None and not path.is_file() and path.name == TABLE_FILE and (out_dir / TABLE_FILE).is_file():
        path = (out_dir / TABLE_FILE).absolute()  # (a review: a moved run refused its own lookup)
    if not path.is_file():
        what = (
            f"{given} is not a file"
            if given is not None
            else f"the run's latency table {path} is not there now"
        )
        raise EdgeslimError(
            f"{what}; put the table the run started on back, or give its new place as latency_table",
            param="latency_table",
        )
    digest = meta.get(TABLE_DIGEST)
    if digest is not None and file_digest(path) != digest:
        raise EdgeslimError(
            f"latency table {path} changed since the run started (measured again or edited), so its last epochs "
            "would be priced with other times; put the original back to continue, or drop resume and start "
            "again with force=True",
            param=("resume", "force"),
        )
    return str(path)


def saved_run_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must reuse to continue as it began, beside its data arguments: ``seed``
    (its training seed, which also chose its ``subset`` images) and ``threads`` (the CPU threads it
    trained with: float sums differ with them); each left out where the checkpoint lacks it."""
    state = ckpt.get("train_state") or {}
    out = {"seed": (state.get("config") or {}).get("seed"), "threads": state.get("threads")}
    return {k: int(v) for k, v in out.items() if v is not None}


def _resolved(path: Any) -> str:
    """``path`` made absolute with its links resolved (a name with a prefix, ``yolo:best.pt``, as its file)."""
    text = str(path)
    if ":" in text and not Path(text).exists():
        text = text.split(":", 1)[1]
    return str(Path(text).resolve())
