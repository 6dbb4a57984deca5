"""The files of a data folder: one listing for reading an image folder and for fingerprinting it."""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from edgeslim.errors import EdgeslimError
from edgeslim.utils.sniff import zip_member_name

#: folders a file system, a removable drive or a NAS keeps for itself: never data (a Synology NAS puts
#: its thumbnails of every image in an ``@eaDir`` folder beside it)
SYSTEM_FOLDERS = frozenset({"lost+found", "System Volume Information", "$RECYCLE.BIN", "@eaDir"})


def hidden(name: str) -> bool:
    """Hidden files and folders, macOS zip metadata (``__MACOSX/``, ``._IMG.jpg``) and what lies in
    :data:`SYSTEM_FOLDERS`: not data. A ``.`` part (``./train/a.jpg``, as ``tar -a -cf data.zip .`` names
    zip members) is the folder itself."""
    parts = name.split("/")
    return "__MACOSX" in parts or any((p.startswith(".") and p != ".") or p in SYSTEM_FOLDERS for p in parts)


def zip_name(member: zipfile.ZipInfo) -> str:
    """A zip member's name as a path: read as UTF-8 where its bytes are (:func:`zip_member_name`), ``\\``
    separators as ``/`` (PowerShell 5's Compress-Archive writes them), without leading ``./`` (bsdtar's
    ``tar -a -cf data.zip .``)."""
    name = zip_member_name(member).replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def regular_files(root: Path, folders: bool = False) -> Iterator[str]:
    """Relative names (``a/b.png``) of the regular files, or links to them, under ``root`` (with
    ``folders``, also of each folder entered, as ``a/``: an empty class folder is seen) (a FIFO named
    .png blocked a run reading it), without hidden entries and system folders. Linked folders are
    entered (a class folder linked from elsewhere was dropped without a word), except a link to a
    folder on the way down to it or above ``root`` (a loop); an unreadable folder is refused (its
    class was dropped without a word). The file type comes from the directory listing, without a
    ``stat`` per file."""
    top = os.path.realpath(root)
    stack: list[tuple[str, frozenset[str]]] = [("", frozenset({top}))]
    while stack:
        rel, above = stack.pop()
        try:
            with os.scandir(root / rel) as it:
                entries = list(it)
        except OSError as exc:
            fix = "fix its permissions" if isinstance(exc, PermissionError) else "check it"
            raise EdgeslimError(
                f"cannot read the folder {root / rel} ({exc.strerror or exc}); {fix}, or move it out of {root}"
            ) from exc
        for e in entries:
            if hidden(e.name):
                continue
            with contextlib.suppress(OSError):
                if e.is_dir():
                    real = os.path.realpath(e.path)
                    if real not in above and os.path.commonpath([real, top]) != real:
                        stack.append((f"{rel}{e.name}/", above | {real}))
                        if folders:
                            yield f"{rel}{e.name}/"
                elif e.is_file():
                    yield f"{rel}{e.name}"
