"""ImageFolder trees (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), on disk or inside a zip.

Images are decoded once with PIL into uint8 arrays and cached (see :mod:`edgeslim.data.cache`);
with a subset, only the chosen files are decoded.

Untrusted archives are read within fixed bounds, so a small file cannot claim gigabytes of memory:
a file or zip member larger than :data:`MAX_IMAGE_BYTES` is refused before it is read (a zip's
declared size first, then a bounded read in case the declaration lies), and an image whose header
declares more than :data:`MAX_IMAGE_PIXELS` pixels is refused before it is decoded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import logging
import os
import re
import stat
import sys
import warnings
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.data.cache import cached_arrays, fingerprint
from edgeslim.data.datasets import (
    LoadRequest,
    balanced_subset,
    bundle_from_arrays,
    register_dataset,
    say_capped,
)
from edgeslim.data.listing import hidden, regular_files, zip_name
from edgeslim.errors import EdgeslimError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
#: the PIL formats those files are read as, whatever their bytes say (JPEG includes a camera's
#: multi-picture MPO). No other: PIL opens an EPS file by its bytes with Ghostscript, which runs it.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
#: formats read too where the installed Pillow decodes them (:func:`read_formats`), with their file types
OPTIONAL_FORMATS = {"AVIF": (".avif",)}
#: image types of cameras and phones that are not read (a folder's files of these types are counted in a
#: warning, not dropped without a word)
IMAGE_LIKE_EXTS = {".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".dng", ".cr2", ".cr3", ".nef", ".arw",
                   ".orf", ".rw2", ".raf", ".raw", ".psd", ".svg", ".ico", ".tga", ".exr", ".hdr"}  # fmt: skip
#: the names of the split folders, matched in any case (``Train/``, ``Testing/``: Kaggle's layouts), in the
#: order a split is looked for
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing", "val", "valid", "validation")
#: a tree of class folders without train/test: 1 image in this many of each class is the test split
FLAT_TEST_EVERY = 10
#: decode in a pool of this many processes above this many images (the machines here have 2 cores)
POOL_WORKERS, POOL_MIN = 2, 20000
#: the most bytes of images a worker of the pool sends back at once (its chunk)
POOL_CHUNK_BYTES = 256 << 20
#: largest image file (or zip member, uncompressed) read, in bytes: 64 MiB
MAX_IMAGE_BYTES = 64 << 20
#: largest image decoded, in pixels (width x height): 50 Mpixel, 150 MB as RGB uint8
MAX_IMAGE_PIXELS = 50_000_000
#: at least this many classes in the training split (one class cannot train a classifier)
MIN_CLASSES = 2
#: how an image is brought to a model's input size (and the word a report uses): stretched, letterboxed
#: (aspect kept, padded) or cropped (aspect kept, its short side scaled to the size and the centre cut:
#: a classifier's)
FIT_WORDS = {"stretch": "stretched", "letterbox": "letterboxed", "crop": "centre-cropped"}
FITS = tuple(FIT_WORDS)
#: the grey a letterboxed image is padded with (ultralytics' value)
LETTERBOX_FILL = 114
#: PIL modes of grey images wider than 8 bits (16-bit PNG/TIFF), brought to 8 bits by ``_to_8_bits``
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: the data set of images without labels (any layout): validation and calibration, not training
IMAGES = "images"


@functools.cache
def read_formats() -> dict[str, tuple[str, ...]]:
    """``{PIL format: file types}`` of :data:`OPTIONAL_FORMATS` that the installed Pillow decodes (its
    ``features.check``: AVIF from Pillow 11.2 where built with libavif)."""
    from PIL import features

    with warnings.catch_warnings():  # (an older Pillow warns of a feature it does not know)
        warnings.simplefilter("ignore")
        return {fmt: exts for fmt, exts in OPTIONAL_FORMATS.items() if features.check(fmt.lower())}


def image_exts() -> set[str]:
    """The file types read as images: :data:`IMAGE_EXTS` and those of :func:`read_formats`."""
    return IMAGE_EXTS.union(*read_formats().values())


def split_word(name: str) -> str | None:
    """The split a folder's name names as a word of it (``seg_train``, ``Test-Set``, ``test1``:
    :data:`TRAIN_NAMES`, :data:`TEST_NAMES`, any case), or None (``valve``, ``protest``: not a split's)."""
    words = re.split(r"[^a-z]+", name.lower())
    return next((w for w in words if w in (*TRAIN_NAMES, *TEST_NAMES)), None)


class Tree:
    """A listing of image files by split and class; reads bytes from a directory or a zip."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        exts = image_exts()
        if self.is_zip and root.suffix.lower() in exts:
            raise EdgeslimError(
                f"{root} is one image; give the folder (or .zip) that holds the images", param="data_dir"
            )
        if self.is_zip:
            try:
                with zipfile.ZipFile(root) as z:
                    infos = z.infolist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise EdgeslimError(
                    f"{root} is not a readable zip file ({exc}); check data_dir", param="data_dir"
                ) from exc
            # a symbolic link (zip -y, macOS ditto) is stored as the path it points to, not the image
            is_link = {zip_name(i): stat.S_ISLNK(i.external_attr >> 16) for i in infos}
            names = [n for n, link in is_link.items() if n and not link]
            links = [n for n, link in is_link.items() if n and link and not hidden(n)]
            if links:
                log.warning(
                    "%s: %d symbolic link(s) skipped (%s%s): a zip holds a link as the path it points to, not "
                    "the image; zip the folder without -y (or --symlinks) to store the images", root, len(links),
                    ", ".join(links[:3]), ", ..." if len(links) > 3 else "",
                )  # fmt: skip
        else:
            names = list(regular_files(root, folders=True))
        names = [n for n in names if not hidden(n)]
        files = [n for n in names if not n.endswith("/")]
        self.files = sorted(n for n in files if os.path.splitext(n)[1].lower() in exts)
        #: the other files (not read), by the folder they lie in
        self.others = [n for n in files if os.path.splitext(n)[1].lower() not in exts]
        unread = Counter(
            e for e in (os.path.splitext(n)[1].lower() for n in self.others) if e in IMAGE_LIKE_EXTS
        )
        if unread and self.files:  # (without images: refused, naming the types found)
            log.warning(
                "%s: %d image file(s) of types not read are left out (%s); convert them to .jpg or .png to "
                "use them", root, sum(unread.values()), ", ".join(f"{n} {e}" for e, n in sorted(unread.items())),
            )  # fmt: skip
        #: every folder, ``a/b/`` (a zip may list only the files: their folders too)
        self.folders = {n for n in names if n.endswith("/")}
        self.folders |= {
            f"{'/'.join(p[:i])}/" for p in (n.split("/") for n in files) for i in range(1, len(p))
        }
        self.prefix = self._find_prefix()
        #: the folder the class folders of a tree without splits lie in (``''`` or ``top/``)
        self.flat_base = ""

    def _find_prefix(self) -> str:
        """'' or 'top/' when the tree sits in one top-level folder (common in zips)."""
        if any(s in TRAIN_NAMES for s in self._splits("").values()):
            return ""
        tops = sorted({n.split("/", 1)[0] for n in self.files if "/" in n})
        return next(
            (f"{t}/" for t in tops if any(s in TRAIN_NAMES for s in self._splits(f"{t}/").values())), ""
        )

    def _splits(self, base: str) -> dict[str, str]:
        """``{folder: split name}`` of the folders in ``base`` named as a split (:data:`TRAIN_NAMES`,
        :data:`TEST_NAMES`, in any case: ``Train/``, ``Testing/``) that hold images; none where the one
        such folder is a class (:meth:`_is_class`)."""
        named = {
            f[len(base) :].split("/", 1)[0]
            for f in self.files
            if f.startswith(base) and "/" in f[len(base) :]
        }
        found = {d: d.lower() for d in sorted(named) if d.lower() in (*TRAIN_NAMES, *TEST_NAMES)}
        return {} if len(found) == 1 and self._is_class(base, next(iter(found)), named) else found

    def _is_class(self, base: str, folder: str, named: set[str]) -> bool:
        """Whether the split-named ``folder`` in ``base`` is a class (COCO's ``train`` beside ``bus/`` and
        ``car/``): its images lie in it directly, none in sub-folders, and the other folders of images
        beside it are not named like splits either (Kaggle's ``train/*.jpg`` beside ``test1/*.jpg`` is
        a split of unlabelled images, not a class)."""
        inside = [f[len(base) + len(folder) + 1 :] for f in self.files if f.startswith(f"{base}{folder}/")]
        others = named - {folder}
        return bool(others) and all("/" not in r for r in inside) and not any(split_word(d) for d in others)

    @functools.cached_property
    def flat(self) -> dict[str, list[str]] | None:
        """``{class: [file, ...]}`` of a tree without splits, ``<class>/<image>`` (in one top folder
        or none; images in sub-folders of a class folder too), when it has no split folder
        (:data:`TRAIN_NAMES`, :data:`TEST_NAMES`, any case) and at least two classes; else None. A class with one image is refused (it
        cannot both train and test), as is a class folder without images."""
        if self._splits(self.prefix):
            return None  # (a tree of splits, or one with a test/ or val/ split only: not class folders)
        tops = {f.split("/", 1)[0] for f in self.files}
        one = len(tops) == 1 and all(f.count("/") >= 2 for f in self.files)  # flowers/daisy/1.jpg
        self.flat_base = f"{tops.pop()}/" if one else ""
        by_class = self._classes(self.flat_base)
        if len(by_class) < MIN_CLASSES:
            return None
        self._refuse_hidden_splits(by_class)
        few = sorted(c for c, fs in by_class.items() if len(fs) < 2)
        if few:
            raise EdgeslimError(
                f"{self.root} is split into train and test images per class folder, and {len(few)} class(es) "
                f"have one image ({', '.join(few[:4])}{', ...' if len(few) > 4 else ''}): give each class at least "
                "two, or lay the images out as train/<class>/ and test/<class>/"
            )
        return by_class

    def _refuse_hidden_splits(self, by_class: dict[str, list[str]]) -> None:
        """Refuse class folders named like splits (each with a split's name as a word of its own, a
        training one and a test one among them: ``seg_train``, ``seg_test``) that each hold the same
        folders of images (two or more; none of their images directly): splits under other names
        (``seg_train/seg_train/<class>/``, Kaggle's Intel Image Classification), which read as classes
        would train a classifier of the split an image is in. Classes with the same sub-folders but other
        names (``cat/{day,night}/``; ``bad_valve``, ``freight_train`` and ``passenger_train``) are classes,
        as torchvision reads them."""
        words = [split_word(c) for c in by_class]
        if not (all(words) and {*words} & {*TRAIN_NAMES} and {*words} & {*TEST_NAMES}):
            return
        inner: dict[str, set[str]] = {}
        for c, fs in by_class.items():
            rest = [f[len(self.flat_base) + len(c) + 1 :] for f in fs]
            if any("/" not in r for r in rest):
                return  # (images of the class folder itself: a class)
            inner[c] = {r.rsplit("/", 2)[-2] for r in rest}
        leaves = next(iter(inner.values()))
        if len(leaves) < 2 or any(v != leaves for v in inner.values()):
            return
        c = sorted(by_class)[0]
        example = by_class[c][0].rsplit("/", 1)[0]
        split = "test" if split_word(c) in TEST_NAMES else "train"
        raise EdgeslimError(
            f"{self.root}: its folders {', '.join(f'{self.flat_base}{d}/' for d in sorted(inner)[:4])}"
            f"{', ...' if len(inner) > 4 else ''} all hold the same folders of images ({', '.join(sorted(leaves)[:4])}"
            f"{', ...' if len(leaves) > 4 else ''}), as splits do, so they are not read as classes; lay the images "
            f"out as train/<class>/ and test/<class>/ (e.g. move {example}/ to {split}/{example.rsplit('/', 1)[-1]}/ "
            f"if {self.flat_base}{c}/ is the {split} split), or as one <class>/ folder per class",
            param="data_dir",
        )

    def _classes(self, base: str) -> dict[str, list[str]]:
        """``{class: [file, ...]}`` of the class folders in the folder ``base`` (``''``: the top, else
        ``train/``), the images in their sub-folders too (torchvision's ``ImageFolder`` reads them); a
        class folder without an image is refused in one line (its classes after it would shift)."""
        by_class: dict[str, list[str]] = {}
        for f in self.files:
            if f.startswith(base):
                rest = f[len(base) :].split("/")
                if len(rest) >= 2:
                    by_class.setdefault(rest[0], []).append(f)
        if not by_class:
            return by_class
        folders = {d[len(base) :].split("/", 1)[0] for d in self.folders if d.startswith(base) and d != base}
        empty = sorted(folders - set(by_class))  # (system folders are not listed: listing.hidden)
        if empty:
            inside = sorted({os.path.splitext(n)[1].lower() or os.path.basename(n) for n in self.others
                             if n.startswith(f"{base}{empty[0]}/")})  # fmt: skip
            what = f"only {', '.join(inside[:6])} files, which are not read" if inside else "it is empty"
            more = f" (and {len(empty) - 1} more: {', '.join(empty[1:4])}{', ...' if len(empty) > 4 else ''})"
            raise EdgeslimError(
                f"{self.root}: the class folder {base}{empty[0]}/ holds no image ({what}){more if len(empty) > 1 else ''}; "
                f"add its images ({', '.join(sorted(image_exts()))}) or remove the folder",
                param="data_dir",
            )
        return by_class

    def split(self, split: str) -> dict[str, list[str]]:
        """``{class: [file, ...]}`` for ``split`` ('train' or 'test'), files sorted. A tree of class
        folders only (no ``train/``) is split here, about 1 image in :data:`FLAT_TEST_EVERY` of each
        class testing (:func:`held_out`)."""
        flat = self.flat
        if flat is not None:
            test = split != "train"
            out = {}
            for c, fs in flat.items():
                held = held_out(fs, len(self.flat_base) + len(c) + 1)
                out[c] = [f for f in fs if (f in held) == test]
            return out
        names = TRAIN_NAMES if split == "train" else TEST_NAMES
        found = self._splits(self.prefix)
        same = sorted(d for d, s in found.items() if s in names)
        if (
            len(same) > 1
        ):  # (Train/ beside train/, train/ beside training/: which one is meant cannot be told)
            raise EdgeslimError(
                f"{self.root}: the folders {', '.join(f'{self.prefix}{d}/' for d in same)} all name the {split} "
                "split; merge them into one (or remove the others)",
                param="data_dir",
            )
        for nm in names:
            for folder in (d for d, s in found.items() if s == nm):
                by_class = self._classes(f"{self.prefix}{folder}/")
                if by_class:
                    return by_class
        # split folders that all hold their images directly, beside other folders of images: a class named as
        # a split where Tree._is_class cannot tell (Kaggle's train/*.jpg beside test1/*.jpg)
        depth = self.prefix.count("/") + 1
        below = [f for f in self.files if f.startswith(self.prefix) and f.count("/") >= depth]
        loose = [
            d
            for d in found
            if all(f.count("/") == depth for f in below if f.startswith(f"{self.prefix}{d}/"))
        ]
        if loose and len(loose) == len(found) < len({f.split("/")[depth - 1] for f in below}):
            d = f"{self.prefix}{loose[0]}"
            raise EdgeslimError(
                f"{self.root}: {' and '.join(f'{self.prefix}{x}/' for x in loose)} "
                f"{'holds' if len(loose) == 1 else 'hold'} images directly, not in class folders; lay the images "
                f"out as train/<class>/ and test/<class>/, or, if {loose[0]} is a class, rename its folder (e.g. "
                f"{d}/ to {d}_class/) and keep one <class>/ folder per class",
                param="data_dir",
            )
        tops = {f.split("/")[0] for f in self.files if "/" in f}
        if split == "train" and len(tops) == 1 and not self._splits(""):
            check_classes(self.root, sorted(tops), flat=True)  # <class>/*.jpg of one class
        raise EdgeslimError(
            f"{self.root} has no {names[0]}/<class>/<image> files (nor {'/'.join(names[1:])}/, in any case); "
            "an image folder needs "
            f"train/<class>/*.jpg and test/<class>/*.jpg, or <class>/*.jpg for two or more classes (1 image in "
            f"{FLAT_TEST_EVERY} held out to test); images only to validate or calibrate an export: the "
            f"{IMAGES} data set"
        )

    def reader(self, head: int | None = None) -> Callable[[str], bytes]:
        return open_reader(self.root, self.is_zip, head)


def held_out(names: Sequence[str], cut: int) -> set[str]:
    """The test images of one class of a tree of class folders: those whose name within the class
    folder (``name[cut:]``) hashes (sha256) into the first 1/:data:`FLAT_TEST_EVERY` of its range,
    so adding or removing a file moves no other between train and test (by position, one file more
    shifted every later one); the lowest hash where none does, and never all of them."""
    top = 1 << 64
    keyed = sorted(
        (int.from_bytes(hashlib.sha256(n[cut:].encode("utf-8", "surrogateescape")).digest()[:8], "big"), n)
        for n in names
    )
    test = {n for h, n in keyed if h < top // FLAT_TEST_EVERY} or {keyed[0][1]}
    if len(test) == len(keyed) > 1:
        test.discard(keyed[-1][1])
    return test


def _too_big(name: str, size: int, what: str) -> EdgeslimError:
    return EdgeslimError(
        f"image {name} {what} {size / 2**20:.0f} MiB, over the {MAX_IMAGE_BYTES >> 20} MiB limit per "
        "image (edgeslim.data.imagefolder.MAX_IMAGE_BYTES); remove the file or shrink it"
    )


def _read_member(z: zipfile.ZipFile, name: str, head: int | None = None) -> bytes:
    """One zip member, refusing a declared size over the limit before reading, and reading at most
    one byte past the limit in case the declared size lies; ``head``: its first ``head`` bytes only."""
    try:
        info = z.getinfo(name)
        if head is None and info.file_size > MAX_IMAGE_BYTES:
            raise _too_big(name, info.file_size, "declares")
        if info.flag_bits & 0x1:  # (zipfile raises a bare RuntimeError for it)
            raise EdgeslimError(f"{name} in the zip is encrypted; re-create the zip without a password")
        with z.open(info) as f:
            data = f.read(head or MAX_IMAGE_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError) as exc:
        raise EdgeslimError(f"cannot read {name} from the zip ({exc}); repair or re-create the zip") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_big(name, len(data), "holds more than")
    return data


def _read_file(path: Path, name: str, head: int | None = None) -> bytes:
    """One image file, refusing one over the limit (stat first, then a bounded read); ``head``: its
    first ``head`` bytes only."""
    with open(path, "rb") as f:
        if head is not None:
            return f.read(head)
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            raise _too_big(name, size, "is")
        data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_big(name, len(data), "holds more than")
    return data


def open_reader(root: Path, is_zip: bool, head: int | None = None) -> Callable[[str], bytes]:
    """A function reading one member (zip) or relative file (directory) as bytes, within
    :data:`MAX_IMAGE_BYTES`; ``head``: the first ``head`` bytes of each (an image's header)."""
    if is_zip:
        z = zipfile.ZipFile(root)
        member = {zip_name(i): i.filename for i in z.infolist()}  # (the names a Tree lists: zip_name's)
        return lambda name: _read_member(z, member.get(name, name), head)
    return lambda name: _read_file(root / name, name, head)


def _pil_open() -> Callable[..., object]:
    """PIL's own ``Image.open``: ultralytics, once imported elsewhere (a user's script, a test),
    replaces it by a wrapper that on an unreadable image logs and tries to pip-install ``pi-heif``
    (edgeslim's own import of ultralytics undoes that: ``models.yolo``); the original is kept in
    the wrapper's module as ``_image_open``."""
    from PIL import Image

    opener = Image.open
    module = getattr(opener, "__module__", "") or ""
    if module.startswith("ultralytics"):
        opener = getattr(sys.modules.get(module), "_image_open", opener)
    return opener


@contextlib.contextmanager
def open_image(data: bytes, name: str, warned: list[str] | None = None) -> Iterator[Any]:
    """``PIL.Image.open`` on ``data`` that refuses images over :data:`MAX_IMAGE_PIXELS` (from the
    header, before decoding) and turns every decode failure into one :class:`EdgeslimError`. PIL's
    warnings while it is open (:func:`_quiet_pil`) go to ``warned``."""
    from PIL import Image, UnidentifiedImageError

    with _quiet_pil(warned):
        try:
            im = _pil_open()(io.BytesIO(data), formats=(*IMAGE_FORMATS, *read_formats()))
        except Image.DecompressionBombError as exc:  # PIL's own limit (2x its MAX_IMAGE_PIXELS)
            n = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_many_pixels(
                name, f"{int(n.group(1)) / 1e6:.0f} Mpixel" if n else "over PIL's limit"
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, ImportError) as exc:
            # (ImportError: a library that wraps PIL.Image.open, such as ultralytics, wanting a plugin)
            raise _undecodable(name, data, exc) from exc
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise _too_many_pixels(name, f"{w}x{h} = {w * h / 1e6:.0f} Mpixel")
            try:
                yield im
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                raise _undecodable(name, data, exc) from exc


@contextlib.contextmanager
def _quiet_pil(into: list[str] | None) -> Iterator[None]:
    """PIL's user warnings inside (palette transparency, corrupt EXIF: one per image; a warnings filter
    set per image had them printed for every image) kept as messages in ``into`` for one summary
    (:func:`_say_pil_warnings`), dropped where it is None; its DecompressionBombWarning dropped
    (:data:`MAX_IMAGE_PIXELS` applies); other warnings passed on."""
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            continue
        if not issubclass(w.category, UserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif into is not None:
            into.append(str(w.message))


def _say_pil_warnings(where: object, warned: Sequence[tuple[str, str]], total: int) -> None:
    """One warning for the images PIL warned about while they were decoded: how many, and the first."""
    if warned:
        log.warning("%s: PIL warned about %d of %d images decoded (said once for all); the first, %s: %s",
                    where, len(warned), total, warned[0][0], warned[0][1])  # fmt: skip


def _undecodable(name: str, data: bytes, exc: Exception) -> EdgeslimError:
    """One line for an image file PIL cannot read: an empty file, or PIL's reason (without the repr
    of the in-memory buffer it was read from)."""
    why = "an empty file" if not data else re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
    return EdgeslimError(f"cannot decode image {name} ({why}); remove or replace the corrupt file")


def _too_many_pixels(name: str, what: str) -> EdgeslimError:
    return EdgeslimError(
        f"image {name} is too large to decode ({what}; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} Mpixel, "
        "edgeslim.data.imagefolder.MAX_IMAGE_PIXELS); remove it or resize it"
    )


def decode(
    data: bytes,
    name: str,
    channels: int,
    size: tuple[int, int] | None,
    fit: str = "stretch",
    warned: list[str] | None = None,
) -> np.ndarray:
    """Decode one image to uint8 [C,H,W] with 1 (L) or 3 (RGB) channels, resized to ``size`` (H, W)
    if given: stretched to it, with ``fit="letterbox"`` scaled to fit inside it with its aspect
    kept and centred on grey :data:`LETTERBOX_FILL` (ultralytics' ``LetterBox``), or with ``fit="crop"``
    scaled to cover it and its centre cut out (ultralytics' ``classify_transforms``: resize, centre
    crop); turned upright as its EXIF orientation says (a phone photo), as OpenCV's reader does.
    PIL's warnings about it are put in ``warned`` (see :func:`_quiet_pil`)."""
    from PIL import Image, ImageOps

    if fit not in FITS:
        raise EdgeslimError(f"fit must be one of {', '.join(FITS)}, got {fit!r}", param="fit")
    with open_image(data, name, warned) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in WIDE_GREY_MODES:  # wider than 8 bits (PIL's convert would clip it at 255)
            im = Image.fromarray(_to_8_bits(np.asarray(im, dtype=np.int64)), "L")
        elif im.mode == "F":  # 32-bit float (TIFF): PIL's convert would read 0..1 as black
            im = Image.fromarray(_float_to_8_bits(np.asarray(im, dtype=np.float64)), "L")
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None and im.size != (size[1], size[0]):
            if fit == "letterbox":
                r = min(size[0] / im.size[1], size[1] / im.size[0])
                w, h = max(1, round(im.size[0] * r)), max(1, round(im.size[1] * r))
                canvas = Image.new(im.mode, (size[1], size[0]), (LETTERBOX_FILL,) * len(im.getbands()))
                canvas.paste(im.resize((w, h), Image.BILINEAR), ((size[1] - w) // 2, (size[0] - h) // 2))
                im = canvas
            elif fit == "crop":
                r = max(size[0] / im.size[1], size[1] / im.size[0])
                w, h = max(size[1], round(im.size[0] * r)), max(size[0], round(im.size[1] * r))
                left, top = (w - size[1]) // 2, (h - size[0]) // 2
                im = im.resize((w, h), Image.BILINEAR).crop((left, top, left + size[1], top + size[0]))
            else:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_8_bits(wide: np.ndarray) -> np.ndarray:
    """A grey image of more than 8 bits as 8 bits: its top 8 bits at the depth its largest value
    needs (10, 12 or 16 bits: a sensor's 10- or 12-bit data kept in a 16-bit file is not made
    dark); values that fit in 8 bits are kept as they are. The depth is read per image."""
    wide = np.clip(wide, 0, 65535)
    top = int(wide.max()) if wide.size else 0
    bits = next(b for b in (8, 10, 12, 16) if top < 1 << b)
    return (wide >> (bits - 8)).astype(np.uint8)


def _float_to_8_bits(values: np.ndarray) -> np.ndarray:
    """A float grey image as 8 bits: values within 0..1 are fractions of white (scaled by 255), larger
    ones 0..255 levels or, above 255, wide integers (:func:`_to_8_bits`); NaN and infinities are 0."""
    v = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(v.max()) if v.size else 0.0
    if top > 255:
        return _to_8_bits(np.rint(v).astype(np.int64))
    return np.clip(np.rint(v * 255 if top <= 1.0 else v), 0, 255).astype(np.uint8)


def spread(total: int, n: int) -> list[int]:
    """The indices of up to ``n`` of ``total`` items evenly spread over them, the first and last
    included (deterministic)."""
    return sorted({int(i) for i in np.linspace(0, total - 1, min(n, total)).round()}) if total else []


def read_images(
    root: Path,
    channels: int,
    size: tuple[int, int],
    n: int,
    fit: str = "stretch",
    notes: list[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Up to ``n`` images of any folder or zip, whatever its layout (every image file, labels
    ignored; hidden files and macOS zip metadata skipped), decoded upright to uint8 [N,C,H,W] at
    ``size`` (see :func:`decode`), and how many files it holds. With more than ``n``, an even spread over
    the sorted file list (deterministic); an image that cannot be decoded is skipped and others, spread
    evenly over the files not yet tried, are read in its place. The warning that counts the skipped
    ones goes into ``notes`` where given, else to the log."""
    tree = Tree(root)
    if not tree.files:
        raise EdgeslimError(
            f"{root} holds no image files ({', '.join(sorted(image_exts()))}); check data_dir",
            param="data_dir",
        )
    total = len(tree.files)
    get = tree.reader()
    images, bad, warned, tried = [], [], [], set()
    pick = spread(total, n)
    while pick:
        for i in pick:
            f, said = tree.files[i], []
            try:
                images.append(decode(get(f), f, channels, size, fit, said))
            except EdgeslimError as exc:  # a corrupt photo among many: skipped, another read in its place
                bad.append(str(exc))
            warned += [(f, said[0])] if said else []
        tried.update(pick)
        rest = [i for i in range(total) if i not in tried]
        pick = [rest[j] for j in spread(len(rest), n - len(images))] if len(images) < n else []
    _say_pil_warnings(root, warned, len(tried))
    if not images:
        raise EdgeslimError(f"no image in {root} could be read ({bad[0]})")
    if bad:
        instead = (
            "as many others read in their place"
            if len(images) == n
            else "no other image file to read instead"
        )
        note = (f"{len(bad)} of {len(tried)} images tried in {root} could not be read and were skipped "
                f"({instead}); the first: {bad[0]}")  # fmt: skip
        if notes is None:
            log.warning("%s", note)
        else:
            notes.append(note)
    return np.stack(images), total


def _decode_into(
    out: np.ndarray, get: Callable[[str], bytes], names: Sequence[str], channels: int, size: tuple[int, int]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Decode ``names`` into the rows of ``out`` (a row that cannot be decoded is left as it is): (name,
    reason) of each that cannot be decoded, and (name, first message) of each PIL warned about."""
    bad, warned = [], []
    for i, n in enumerate(names):
        said: list[str] = []
        try:
            out[i] = decode(get(n), n, channels, size, warned=said)
        except EdgeslimError as exc:  # (every unreadable file is named at once, not one per run)
            bad.append((n, str(exc)))
        warned += [(n, said[0])] if said else []
    return bad, warned


def _decode_chunk(
    args: tuple[str, bool, Sequence[str], int, tuple[int, int]],
) -> tuple[np.ndarray, list[tuple[str, str]], list[tuple[str, str]]]:
    """The images of one chunk (in a worker process), and :func:`_decode_into`'s lists."""
    root, is_zip, names, channels, size = args
    out = np.zeros((len(names), channels, *size), dtype=np.uint8)
    return out, *_decode_into(out, open_reader(Path(root), is_zip), names, channels, size)


def _chunk(count: int, image_bytes: int) -> int:
    """Images per chunk of :func:`decode_all`'s pool (8 chunks a worker, of at most
    :data:`POOL_CHUNK_BYTES`); 0: no pool."""
    if count < POOL_MIN:
        return 0
    return max(1, min(-(-count // (POOL_WORKERS * 8)), POOL_CHUNK_BYTES // max(1, image_bytes)))


def decode_peak(count: int, channels: int, size: tuple[int, int]) -> int:
    """The most bytes :func:`decode_all` holds while it decodes ``count`` images: their array (filled
    in place; the one image being decoded besides it is left out), and with a pool the chunks that may
    wait for their turn to be copied in (one per worker) and the one being copied, each twice (as
    received from the worker, and as an array)."""
    one = channels * size[0] * size[1]
    return (count + 2 * (POOL_WORKERS + 1) * _chunk(count, one)) * one


def decode_all(tree: Tree, names: Sequence[str], channels: int, size: tuple[int, int]) -> np.ndarray:
    """Decode ``names`` into uint8 [N,C,H,W], one array filled in place (its peak: :func:`decode_peak`);
    a pool of processes for large lists. Files that cannot be decoded are refused together, in one line."""
    out = np.zeros((len(names), channels, *size), dtype=np.uint8)
    step = _chunk(len(names), channels * size[0] * size[1])
    if not step:
        bad, warned = _decode_into(out, tree.reader(), names, channels, size)
    else:
        bad, warned = [], []
        chunks = [
            (str(tree.root), tree.is_zip, names[i : i + step], channels, size)
            for i in range(0, len(names), step)
        ]
        with ProcessPoolExecutor(POOL_WORKERS) as ex:  # (each chunk copied in as it comes: no second copy)
            todo = iter(enumerate(chunks))
            # (at most one chunk a worker and one more in flight, taken in order: chunks decoded ahead of a
            # slow one cannot pile up beyond what decode_peak counts)
            waiting = deque(
                (i, ex.submit(_decode_chunk, c)) for i, c in itertools.islice(todo, POOL_WORKERS + 1)
            )
            while waiting:
                i, future = waiting.popleft()
                part, chunk_bad, chunk_warned = future.result()
                waiting.extend((j, ex.submit(_decode_chunk, c)) for j, c in itertools.islice(todo, 1))
                out[i * step : i * step + len(part)] = part
                bad += chunk_bad
                warned += chunk_warned
                del part, future
    _say_pil_warnings(tree.root, warned, len(names))
    if len(bad) == 1:
        raise EdgeslimError(bad[0][1])
    if bad:
        first = bad[0][1].rsplit("; ", 1)[0]
        more = ", ".join(n for n, _ in bad[1:4]) + (", ..." if len(bad) > 4 else "")
        raise EdgeslimError(f"{first}, and {len(bad) - 1} more ({more}); remove or replace the corrupt files")
    return out


#: the EXIF tag of a photo's orientation, and its values that turn the image by a quarter
EXIF_ORIENTATION = 0x0112
TURNED = (5, 6, 7, 8)

#: training images whose headers decide an image folder's channels and size: an even spread over the
#: class-sorted training files, up to this many (a header read each: :data:`PROBE_HEAD_BYTES`)
PROBE_IMAGES = 256
#: the bytes of an image read for its header (size, mode, EXIF orientation); the whole file where PIL
#: needs more (a JPEG with a large ICC profile or EXIF thumbnail ahead of its frame header)
PROBE_HEAD_BYTES = 64 << 10
#: an image folder is greyscale when at least this share of the images probed is (its few colour photos
#: converted), else colour: a colour folder with some grey photos keeps its colour
GREY_SHARE = 0.9
_GREY_MODES = ("L", "LA", "1", "F", *WIDE_GREY_MODES)  # (LA: grey with alpha, the alpha dropped)


def _upright_on_open(im: object) -> bool:
    """Whether PIL already reports ``im``'s upright size: its TIFF reader turns a TIFF as its
    orientation says when it loads it, and reports the turned size from the header on, keeping the
    stored one as ``_tile_size`` (a Pillow without it: not turned on open)."""
    size = getattr(im, "size", None)
    return getattr(im, "format", None) == "TIFF" and getattr(im, "_tile_size", size) != size


def probe(tree: Tree, names: Sequence[str]) -> tuple[int, tuple[int, int]]:
    """Channels and (H, W) of an image folder from the headers of the training images ``names``
    (:func:`probe_sample`, read without decoding): 1 when at least :data:`GREY_SHARE` of them are
    greyscale, else 3 (a photo of the other kind is converted, as any other mode is); the size is their
    most common one (the earliest of equally common sizes), so neither a few odd photos first in name
    order nor their mode sets it."""
    head, whole = tree.reader(PROBE_HEAD_BYTES), tree.reader()
    grey, sizes, failed = 0, Counter(), None
    for name in names:
        try:
            try:
                h, w, is_grey = _header(head(name), name)
            except EdgeslimError:  # (a header longer than the bytes read, or an unreadable image)
                h, w, is_grey = _header(whole(name), name)
        except EdgeslimError as exc:
            failed = failed or exc  # (decoding names every unreadable file at once)
            continue
        sizes[(h, w)] += 1
        grey += is_grey
    if failed and not sizes:
        raise failed
    probed = sum(sizes.values())
    channels = 1 if probed and grey >= GREY_SHARE * probed else 3
    return channels, sizes.most_common(1)[0][0] if sizes else (0, 0)


def probe_sample(train: dict[str, list[str]]) -> list[str]:
    """The training images :func:`probe` reads: up to :data:`PROBE_IMAGES` spread evenly over the files
    of every class in turn (class by class, each sorted), not the first of each by name (a folder whose
    first photos by name were grey or another size was read 1-channel, or at their size)."""
    names = [f for c in sorted(train) for f in train[c]]
    return [names[i] for i in spread(len(names), PROBE_IMAGES)]


def _header(data: bytes, name: str) -> tuple[int, int, bool]:
    """(H, W) of an image as decoded (upright), and whether it is greyscale, from its header."""
    with open_image(data, name, None) as im:  # (the header only; decoding says PIL's warnings)
        w, h = im.size
        if im.getexif().get(EXIF_ORIENTATION) in TURNED and not _upright_on_open(im):
            w, h = h, w  # (decoded upright: turned a quarter)
        return h, w, im.mode in _GREY_MODES


#: the longest side an image folder is decoded at, from its images' own size, without a warning
LARGE_SIDE = 1024


def check_memory(root: Path, count: int, channels: int, size: tuple[int, int], given: bool) -> None:
    """Refuse decoding ``count`` images at ``size`` when decoding them would take more than half of this
    machine's memory (the whole data set lives in memory as uint8; the peak: :func:`decode_peak`)."""
    need = decode_peak(count, channels, size)
    total = physical_memory()
    what = "the size asked for" if given else "the most common size of the training images"
    if total and need > total / 2:
        raise EdgeslimError(
            f"{root}: {count} images at {size[0]}x{size[1]} pixels ({what}) would take {need / 2**30:.3g} GiB "
            f"as uint8, more than half of the {total / 2**30:.3g} GiB this machine (or container) has; give a smaller image_size "
            "(e.g. 224,224) or a subset",
            param="image_size",
        )


#: a container's memory limit at the root of the cgroup tree: cgroup v2, then v1 ("max", or v1's huge
#: number: no limit); :func:`cgroup_memory_limits` adds those of this process's own cgroup
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def cgroup_memory_limits(root: str | os.PathLike = "/") -> list[Path]:
    """The memory-limit files of this process's cgroup and of each cgroup above it, as ``root``
    ``/proc/self/cgroup`` names it (v2: ``0::<path>``, under ``sys/fs/cgroup/<path>/memory.max``; v1: the
    ``memory`` line, under ``sys/fs/cgroup/memory/<path>/memory.limit_in_bytes``), then the root's
    (:data:`CGROUP_MEMORY_LIMITS`, under ``root``); files that do not exist are left to the reader."""
    base = Path(root)
    found: list[Path] = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (base / "proc/self/cgroup").read_text().splitlines():
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if controllers == "":
                where, name = base / "sys/fs/cgroup", "memory.max"
            elif "memory" in controllers.split(","):
                where, name = base / "sys/fs/cgroup/memory", "memory.limit_in_bytes"
            else:
                continue
            parts = [x for x in path.strip().split("/") if x and x not in (".", "..")]
            found += [where.joinpath(*parts[:i], name) for i in range(len(parts), 0, -1)]
    return found + [base / str(limit).lstrip("/") for limit in CGROUP_MEMORY_LIMITS]


def physical_memory(limits: Sequence[str | os.PathLike] | None = None) -> int:
    """Bytes of memory this process may use: the machine's, or the lowest limit of its cgroups where
    lower (the numbers in the files ``limits``, default :func:`cgroup_memory_limits`); 0 where the
    system does not say."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    for limit in cgroup_memory_limits() if limits is None else limits:
        with contextlib.suppress(OSError, ValueError):
            cap = int(Path(limit).read_text().split()[0])  # ("max": no limit, a ValueError)
            if 0 < cap < (total or cap + 1):
                total = cap
    return total


def check_classes(root: Path, classes: Sequence[str], flat: bool = False) -> None:
    """Refuse a training split (``flat``: a tree of class folders only) with fewer than
    :data:`MIN_CLASSES` class folders."""
    if len(classes) < MIN_CLASSES:
        found = f"only {classes[0]!r}" if classes else "none"
        where, add = ("", "<class>/") if flat else (" in train/", "train/<class>/")
        raise EdgeslimError(
            f"{root} has {len(classes)} class folder(s){where} ({found}); a classifier needs at least "
            f"{MIN_CLASSES}: add one {add} folder per class (images only to validate or calibrate "
            f"an export: the {IMAGES} data set)"
        )


#: the arrays :func:`read_tree` returns (and a cache entry of an image folder must hold)
TREE_ARRAYS = ("classes", "train_x", "train_y", "test_x", "test_y", "files")


def files_digest(picked: dict[str, list[str]]) -> str:
    """The sha256 of the names of the files each split reads (names within the folder or zip: the
    same for the folder moved or copied to another machine)."""
    h = hashlib.sha256()
    for split in sorted(picked):
        h.update(f"{split}\n".encode())
        for name in picked[split]:
            h.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def read_tree(tree: Tree, req: LoadRequest) -> dict[str, np.ndarray]:
    """List, check and decode the (subset of the) tree: images, labels and class names."""
    train, test = tree.split("train"), tree.split("test")
    classes = sorted(train)
    check_classes(tree.root, classes)
    if set(test) - set(classes):
        raise EdgeslimError(
            f"{tree.root}: test classes {sorted(set(test) - set(classes))} have no training folder; "
            "train/ and test/ must hold the same class folders"
        )
    untested = [c for c in classes if not test.get(c)]
    if untested:  # (a probe's test/ of one class of two: 100% test accuracy, without a word)
        log.warning("%s: the test split has no images of %d of the %d classes (%s%s): test accuracy "
                    "leaves them out", tree.root, len(untested), len(classes), ", ".join(untested[:4]),
                    ", ..." if len(untested) > 4 else "")  # fmt: skip
    channels, common = probe(tree, probe_sample(train))
    size = req.image_size or common
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes)}
    picked: dict[str, list[str]] = {}
    for split, listing, n in (("train", train, req.subset), ("test", test, req.test_subset)):
        names = [f for c in classes for f in listing.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in listing.get(c, [])], dtype=np.int64)
        ix = balanced_subset(labels, n, req.seed, len(classes))
        picked[split] = [names[i] for i in ix]
        arrays[f"{split}_y"] = labels[ix]
    arrays["files"] = np.array(files_digest(picked))
    check_memory(tree.root, len(picked["train"]) + len(picked["test"]), channels, size, bool(req.image_size))
    # both splits in one decode: every corrupt file of either is named in the one refusal
    images = decode_all(tree, picked["train"] + picked["test"], channels, size)
    arrays["train_x"], arrays["test_x"] = images[: len(picked["train"])], images[len(picked["train"]) :]
    why = (
        "the size asked for"
        if req.image_size
        else "the training images' most common size; image_size sets another"
    )
    log.info("%s: %d classes, %d train / %d test images decoded at %dx%d pixels, HxW (%s; images of other sizes "
             "are stretched to it)", tree.root, len(classes), len(arrays["train_y"]), len(arrays["test_y"]),
             size[0], size[1], why)  # fmt: skip
    if tree.flat is not None:
        log.warning("%s has class folders but no train/ and test/: about 1 image in %d of each class (%d of its "
                    "images, at least one a class, chosen by a hash of each file's name) is held out as the test split",
                    tree.root, FLAT_TEST_EVERY, sum(len(v) for v in test.values()))  # fmt: skip
    return arrays


def load_image_folder(req: LoadRequest, root: Path, norm=None, num_classes: int | None = None,
                      pad: int | None = None, hflip: bool = True):  # fmt: skip
    """Read an ImageFolder tree (directory or zip) into a DataBundle, through the uint8 cache.

    The cache key is the tree's content fingerprint plus the subset request, so a cache hit
    needs neither listing the tree nor decoding anything.
    """
    key = {"kind": "imagefolder", "source": fingerprint(root), "subset": req.subset,
           "test_subset": req.test_subset, "seed": req.seed}  # fmt: skip
    if req.image_size is not None:  # (absent otherwise: the caches written before it still hit)
        key["image_size"] = list(req.image_size)
    if read_formats():  # (the files read: AVIF where Pillow decodes it; absent otherwise, as above)
        key["formats"] = sorted(read_formats())
    arrays = cached_arrays(req.cache_dir, key, lambda: read_tree(Tree(root), req), keys=TREE_ARRAYS)
    classes = [str(c) for c in arrays["classes"]]
    check_classes(root, classes)
    numbered = [str(i) for i in range(num_classes or 0)]
    if classes != numbered and sorted(classes) == sorted(numbered):
        # a built-in data set's class folders named by its label numbers: folder "10" is label 10, as in its
        # own files (sorted as text, "10" came before "2")
        to_number = np.array([int(c) for c in classes], dtype=np.int64)
        arrays = {**arrays, "train_y": to_number[arrays["train_y"]], "test_y": to_number[arrays["test_y"]]}
        classes = numbered
    if num_classes is not None and len(classes) != num_classes:
        raise EdgeslimError(
            f"{root} has {len(classes)} class folders but {req.name} has {num_classes}; "
            "load other data as the imagefolder data set",
            param="data",
        )
    for split, asked in (("train", req.subset), ("test", req.test_subset)):  # (said on every run)
        say_capped(str(root), split, None if req.upto else asked, len(arrays[f"{split}_y"]))
    size = arrays["train_x"].shape[2:]
    if req.image_size is None and max(size) > LARGE_SIDE:  # (said on every run, from the cache too)
        log.warning("%s: training at %dx%d pixels (height x width), the most common size of the training "
                    "images (others are stretched to it): slow, and memory-hungry at the default batch size; "
                    "image_size sets the resolution the model will run at (e.g. 224,224)", root, *size)  # fmt: skip
    # The subset was already applied while choosing files.
    full = LoadRequest(req.name, req.data_dir, None, None, req.cache_dir, req.download, req.seed)
    bundle = bundle_from_arrays(
        full, arrays, len(classes), classes, norm,
        pad=pad if pad is not None else max(1, round(size[0] / 8)), hflip=hflip, source=str(root),
    )  # fmt: skip
    bundle.meta["files"] = str(arrays["files"])  # (a resumed run compares it: pipelines.rundir)
    return bundle


@register_dataset("imagefolder", "any ImageFolder tree train/<class>/*, test/<class>/* (a folder or a .zip)")
def _imagefolder(req: LoadRequest):
    if req.data_dir is None:
        raise EdgeslimError(
            "the imagefolder data set needs data_dir (a folder or .zip with train/ and test/)",
            param="data_dir",
        )
    return load_image_folder(req, req.data_dir)


@register_dataset(
    IMAGES, "any folder or .zip of images, no labels: validation and INT8 calibration of export/prune"
)
def _images(req: LoadRequest):
    raise EdgeslimError(
        f"data={IMAGES} has no labels: it feeds validation and calibration (export, prune), "
        "not training; train on imagefolder (train/<class>/ and test/<class>/ folders)",
        param="data",
    )
