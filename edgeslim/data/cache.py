"""A uint8 array cache keyed by content, so images are decoded once.

The key of an entry is the sha256 of a JSON description of what was decoded: the source's
fingerprint (see :func:`fingerprint`), the split, the exact list of files, channels and size.
Entries are ``.npz`` files of named arrays (no pickle) written atomically into
``<cache_dir>/arrays/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.data.listing import regular_files
from edgeslim.utils.io import atomic_path

log = logging.getLogger(__name__)

#: 2: image folders skip hidden files and macOS zip metadata (__MACOSX/, ._name); 3: a folder is
#: greyscale only when the first images of its classes all are; 4: photos decoded upright (EXIF); 5: turned
#: TIFFs sized upright (their size was turned twice); 6: images in sub-folders of a class folder read; 7: a
#: tree of class folders split by a hash of each file's name; 8: grey images with alpha (LA) count as grey;
#: 9: an image folder's entry holds the digest of its files' names (``files``); 10: its channels and size
#: probed from a spread of up to 256 training images, not the first of each class; 11: a NAS's @eaDir
#: thumbnail folders skipped (in a zip too); 12: a zip's UTF-8 names stored without the UTF-8 flag read as UTF-8
CACHE_VERSION = 12
_EDGE = 1 << 20  # bytes hashed at each end of a file


def _stamp(st: os.stat_result) -> bytes:
    """What a file's stat says of its content: size, modification and change times, inode."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}".encode()


def fingerprint(path: Path) -> str:
    """Content fingerprint of a file or directory, cheap enough for a 50 MB zip.

    File: size, mtime_ns, ctime_ns and inode + sha256 of the first and last MiB. Directory: sha256 of
    the sorted listing of (relative path, size, mtime_ns, ctime_ns, inode) of every file
    :func:`~edgeslim.data.listing.regular_files` finds under it, and of the name of every folder
    (linked folders included, hidden files not). The change time and inode catch an image replaced
    by one of the same size whose modification time was put back (``touch -r``, ``exiftool -P``: a
    review's stale cache); a copy of the folder (new inodes) is decoded again.
    """
    h = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        h.update(_stamp(st))
        with open(path, "rb") as f:
            h.update(f.read(_EDGE))
            if st.st_size > _EDGE:
                f.seek(max(_EDGE, st.st_size - _EDGE))
                h.update(f.read(_EDGE))
    else:  # the files an image folder reads, through linked folders as it reads them
        for rel in sorted(regular_files(path, folders=True)):
            if rel.endswith("/"):  # a folder by its name (an empty class folder is refused)
                h.update(os.fsencode(rel) + b"\n")
                continue
            with contextlib.suppress(OSError):  # (gone since the listing)
                st = os.stat(path / rel)
                h.update(os.fsencode(rel) + b":" + _stamp(st) + b"\n")  # (any bytes)
    return h.hexdigest()


def cache_key(desc: dict[str, Any]) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **desc}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def cached_arrays(
    cache_dir: Path,
    desc: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    keys: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Return the named arrays described by ``desc`` from the cache, or ``build()`` and store them.

    A corrupt entry, or one without every name of ``keys``, is rebuilt; an unwritable cache dir only
    costs the caching.
    """
    path = Path(cache_dir) / "arrays" / f"{cache_key(desc)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if missing := sorted(set(keys) - set(arrays)):
                raise ValueError(f"no {', '.join(missing)}")
            log.debug("cache hit %s", path)
            return arrays
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("ignoring corrupt cache entry %s (%s); rebuilding it", path, exc)
    arrays = build()
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as exc:
        log.warning("cannot write cache %s (%s); continuing without it", path, exc)
    return arrays
