"""Data set registry and ``load_dataset``: real data from disk (or sklearn) into a :class:`DataBundle`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeslim.data.bundle import DataBundle
from edgeslim.errors import EdgeslimError

log = logging.getLogger(__name__)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: per-channel mean/std of the training images in [0,1] units (computed over the full training sets)
NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


#: (channels, height, width, classes) of the fixed-format data sets, known without loading them
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "fashion-mnist": (1, 28, 28, 10),
    "cifar10": (3, 32, 32, 10),
    "cifar100": (3, 32, 32, 100),
    "svhn": (3, 32, 32, 10),
    "digits": (1, 8, 8, 10),
}


def dataset_shape(name: str) -> tuple[int, int, int, int] | None:
    """(C, H, W, classes) of data set ``name`` without loading it; None for ``imagefolder``."""
    key = canonical_name(name)
    return SHAPES.get(key)


def recorded_data_dir(name: str, path: str, whose: str, when: str = "") -> str:
    """``path``, where ``whose`` (``the run's``, ``the model's``) ``name`` images were read from (``when``),
    if it is still there; else one line asking for data_dir (a trial moved a run: "data_dir ... does
    not exist")."""
    if not Path(path).expanduser().exists():
        raise EdgeslimError(
            f"{whose} {name} images were read from {path}{when}, which is not there now; give data_dir where "
            "they are now",
            param="data_dir",
        )
    return path


def _key(name: str) -> str:
    """The key a data set ``name`` is registered and looked up under (lower case, ``-`` for ``_``, an
    alias as the name it stands for)."""
    key = name.lower().replace("_", "-")
    return {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100"}.get(key, key)  # fmt: skip


def canonical_name(name: str) -> str:
    """Normalise a data set name (``FashionMNIST`` -> ``fashion-mnist``); raise for unknown names."""
    key = _key(name)
    if key not in _READERS:
        import difflib

        close = difflib.get_close_matches(key, list(_READERS), n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        given = Path(name).expanduser()
        if given.is_dir() or (name.lower().endswith(".zip") and given.is_file()):
            hint = (  # a folder given as the data set: say how a folder is given
                f"{name} is a {'folder' if given.is_dir() else 'zip file'}: give it as data_dir, "
                "with the data set imagefolder (a sub-folder of images per class: to train on it) or images (any "
                "images: to check and calibrate with them); "
            )
        elif key.endswith((".yaml", ".yml")):  # an ultralytics data yaml: only slim trains on one
            hint = (
                "an ultralytics data yaml is for training a YOLO (slim); to check or calibrate with its photos, "
                "use the data set 'images' and their folder as data_dir; "
            )
        raise EdgeslimError(
            f"unknown data set {name!r}; {hint}known: {', '.join(_READERS)}",
            param="data_dir" if "data_dir" in hint else None,
        )
    return key


#: largest image side an image folder is brought to (image_size)
MAX_IMAGE_SIDE = 4096


@dataclass(frozen=True)
class LoadRequest:
    """Arguments shared by every data set reader."""

    name: str
    data_dir: Path | None
    subset: int | None
    test_subset: int | None
    cache_dir: Path
    download: bool
    seed: int
    #: (H, W) an image folder's images are brought to; None: the most common size of its training images
    image_size: tuple[int, int] | None = None
    #: subset and test_subset are upper bounds (a check's "up to n images"): no note when a split holds fewer
    upto: bool = False


Reader = Callable[[LoadRequest], DataBundle]
_READERS: dict[str, tuple[Reader, str]] = {}


def register_dataset(name: str, help: str) -> Callable[[Reader], Reader]:
    """Register a reader of the data set ``name`` (with a one-line ``help``) as a decorator; it is
    registered under its :func:`canonical_name` (``"MyShapes"`` as ``myshapes``), so any case loads it.
    A name whose key is taken by another reader (a built-in's spelling, ``CIFAR_10``) is refused; the same
    function defined again (a module reloaded, a notebook cell run twice) replaces its own entry."""

    def deco(fn: Reader) -> Reader:
        key = _key(name)
        old = _READERS.get(key)
        if (
            old is not None
            and old[0] is not fn
            and (_qualified(old[0]) != _qualified(fn) or "<lambda>" in str(fn))
        ):
            raise EdgeslimError(
                f"data set {name!r} is registered already, as {key!r} ({old[1]}); register yours under "
                "another name",
                param="name",
            )
        _READERS[key] = (fn, help)
        return fn

    return deco


def _qualified(fn: Callable) -> tuple[str, str]:
    """The module and qualified name of ``fn``: the same reader defined again has the same."""
    return (getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn)))


def list_datasets() -> dict[str, str]:
    """Data set names and a one-line description of each."""
    return {k: v[1] for k, v in _READERS.items()}


def default_cache_dir() -> Path:
    """``$EDGESLIM_CACHE`` or ``~/.cache/edgeslim``."""
    env = os.environ.get("EDGESLIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeslim"


def existing_data_dir(data_dir: str | os.PathLike) -> Path:
    """``data_dir`` (``~`` expanded), refused in one line when it does not exist."""
    ddir = Path(data_dir).expanduser()
    if not ddir.exists():
        raise EdgeslimError(f"data_dir {ddir} does not exist; check it", param="data_dir")
    return ddir


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    *,
    upto: bool = False,
) -> DataBundle:
    """Load data set ``name`` (see :func:`list_datasets`) as uint8 tensors.

    ``subset``/``test_subset`` keep that many images, class-balanced and chosen by ``seed``
    (deterministic). ``data_dir`` may be a directory or, for image folders, a ``.zip``.
    ``image_size``: (H, W) an image folder's images are stretched to (default: the most common size
    of its training images); the built-in data sets have their own. ``upto``: the subsets are
    upper bounds (no warning that a split holds fewer images than asked).
    """
    key = canonical_name(name)
    for label, n in (("subset", subset), ("test_subset", test_subset)):
        if n is not None and n < 1:
            raise EdgeslimError(f"{label} must be a positive number of images, got {n}", param=label)
    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
        if not all(1 <= v <= MAX_IMAGE_SIDE for v in image_size):
            raise EdgeslimError(
                f"image_size {image_size[0]}x{image_size[1]} is not a size from 1 to {MAX_IMAGE_SIDE} pixels",
                param="image_size",
            )
        if SHAPES.get(key) is not None:
            c, h, w = SHAPES[key][:3]
            if (h, w) != image_size:
                raise EdgeslimError(
                    f"{key} images are {h}x{w}; image_size applies to image folders", param="image_size"
                )
            image_size = None
    ddir = existing_data_dir(data_dir) if data_dir is not None else None
    req = LoadRequest(key, ddir, subset, test_subset, Path(cache_dir) if cache_dir else default_cache_dir(),
                      download, seed, image_size, upto)  # fmt: skip
    bundle = _READERS[key][0](req)
    log.info("loaded %r from %s", bundle, bundle.source)
    return bundle


# --------------------------------------------------------------------------- subsets


def balanced_subset(
    labels: np.ndarray, n: int | None, seed: int, num_classes: int | None = None
) -> np.ndarray:
    """Indices of ``n`` samples, as equal per class as possible, chosen by ``seed``; sorted.

    Returns all indices when ``n`` is None or not smaller than the data set.
    """
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes = np.arange(num_classes) if num_classes else np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    rng = np.random.default_rng(seed)
    per_class = [ix[rng.permutation(len(ix))] for ix in per_class]
    quota = _quota([len(ix) for ix in per_class], n)
    return np.sort(np.concatenate([ix[:q] for ix, q in zip(per_class, quota)]))


def _quota(sizes: list[int], n: int) -> list[int]:
    """Split ``n`` over classes of the given sizes as evenly as possible (capped by each size)."""
    quota = [0] * len(sizes)
    left = n
    while left > 0:
        open_ = [i for i, s in enumerate(sizes) if quota[i] < s]
        if not open_:
            break
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            add = min(share + (1 if j < extra else 0), sizes[i] - quota[i])
            quota[i] += add
            left -= add
    return quota


def whole_numbers(
    value: object, what: str, where: str, low: int, high: int, dtype: type = np.int64
) -> np.ndarray:
    """``value`` as a ``dtype`` array, refused in one line unless every entry is a whole number in
    ``low..high`` (a data file's images or labels: ragged lists, text, NaN and wrapped values are
    corruption, not data). An array of ``dtype`` comes back without a copy."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise EdgeslimError(
            f"{where}: its {what} are not an array (rows of unequal length); re-download it"
        ) from exc
    if a.dtype.kind not in "biuf" or (
        a.dtype.kind == "f" and a.size and not (np.isfinite(a).all() and (a == np.rint(a)).all())
    ):
        raise EdgeslimError(f"{where}: its {what} ({a.dtype}) are not whole numbers; re-download it")
    if a.size and (a.min() < low or a.max() > high):
        raise EdgeslimError(
            f"{where}: its {what} span {a.min():g}..{a.max():g}, outside {low}..{high}; re-download it"
        )
    return a.astype(dtype, copy=False)


def say_capped(source: str, split: str, asked: int | None, held: int) -> None:
    """Say when a subset asks for more images than a split holds (all of them are used): a trial's
    test_subset of 30 on a folder holding back 7 was capped without a word."""
    if asked is not None and asked > held:
        what = "subset" if split == "train" else "test_subset"
        log.warning("%s: %s %d asks for more than the %d %s images it holds; all %d are used", source, what,
                    asked, held, split, held)  # fmt: skip


def bundle_from_arrays(
    req: LoadRequest,
    arrays: dict[str, np.ndarray],
    num_classes: int,
    class_names: list[str],
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None,
    pad: int,
    hflip: bool,
    source: str,
) -> DataBundle:
    """Apply subsets, check labels, and wrap numpy arrays (images [N,C,H,W] uint8) in a bundle."""
    parts = {}
    for split, n in (("train", req.subset), ("test", req.test_subset)):
        x, y = arrays[f"{split}_x"], np.asarray(arrays[f"{split}_y"]).astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise EdgeslimError(
                f"{source}: {split} labels span {y.min()}..{y.max()}, outside 0..{num_classes - 1}; "
                "the files are corrupt or belong to another data set"
            )
        say_capped(source, split, None if req.upto else n, len(y))
        ix = balanced_subset(y, n, req.seed, num_classes)
        if len(ix) < len(y):
            x, y = x[ix], y[ix]
        elif not x.flags.writeable:  # e.g. np.frombuffer: torch wants memory it may write
            x = x.copy()
        parts[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        parts[f"{split}_y"] = torch.from_numpy(np.ascontiguousarray(y))
    if norm is None:
        norm = channel_stats(parts["train_x"])
    return DataBundle(
        name=req.name, num_classes=num_classes, mean=norm[0], std=norm[1], class_names=class_names,
        pad=pad, hflip=hflip, source=source, **parts,
    )  # fmt: skip


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0,1] units) of uint8 images ``[N,C,H,W]``, from exact
    256-bin histograms (no float copy of the data; a channel's pixels copied 4 MiB at a time)."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    step = max(1, (4 << 20) // max(1, x[0, 0].numel())) if len(x) else 1
    for ch in range(x.shape[1]):
        counts = sum(
            (torch.bincount(x[i : i + step, ch].reshape(-1), minlength=256) for i in range(0, len(x), step)),
            torch.zeros(256, dtype=torch.int64),
        ).to(torch.float64)
        n = counts.sum()
        mean = (counts * v).sum() / n
        var = (counts * (v - mean) ** 2).sum() / max(float(n) - 1, 1.0)
        means.append(round(float(mean), 4))
        stds.append(round(max(float(var.sqrt()), 1e-3), 4))
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- Fashion-MNIST


@register_dataset("fashion-mnist", "Fashion-MNIST, 28x28 grey, 10 classes (Debian dataset-fashion-mnist)")
def _fashion_mnist(req: LoadRequest) -> DataBundle:
    from edgeslim.data.idx import find_idx_dir, read_idx_dir

    if req.data_dir is not None:
        d = req.data_dir
        cands = [d, d / "FashionMNIST" / "raw", d / "fashion-mnist", d / "raw"]
    else:
        d = None
        cands = [DEBIAN_FMNIST, req.cache_dir / "FashionMNIST" / "raw"]
    found = find_idx_dir(cands)
    if found is None and req.download:
        found = _download_fmnist(req.cache_dir)
    if found is None:
        if d is not None:
            raise EdgeslimError(
                f"no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in {d}; "
                "point data_dir at the folder holding the four files",
                param="data_dir",
            )
        raise EdgeslimError(
            "Fashion-MNIST not found: install it with `sudo apt-get install dataset-fashion-mnist`, "
            "or pass data_dir=DIR with the four IDX files (or download=True where a network exists)",
            param="data_dir",
        )
    arrays = read_idx_dir(found)
    if arrays["train_x"].shape[2:] != (28, 28):
        raise EdgeslimError(
            f"{found}: images are {arrays['train_x'].shape[2:]}, not 28x28; not Fashion-MNIST"
        )
    return bundle_from_arrays(req, arrays, 10, FMNIST_CLASSES, NORMS["fashion-mnist"], pad=2, hflip=True,
                              source=str(found))  # fmt: skip


def _download_fmnist(root: Path) -> Path | None:
    from edgeslim.errors import require

    tvd = require("torchvision.datasets", "to download Fashion-MNIST")
    try:
        tvd.FashionMNIST(str(root), train=True, download=True)
        tvd.FashionMNIST(str(root), train=False, download=True)
    except (OSError, RuntimeError) as exc:
        raise EdgeslimError(
            f"downloading Fashion-MNIST failed ({exc}); install `dataset-fashion-mnist` with apt-get "
            "or pass data_dir",
            param="data_dir",
        ) from exc
    return root / "FashionMNIST" / "raw"


# --------------------------------------------------------------------------- sklearn digits


@register_dataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images) for instant smoke runs")
def _digits(req: LoadRequest) -> DataBundle:
    from edgeslim.errors import require

    sk = require("sklearn.datasets", "for the digits data set")
    d = sk.load_digits()
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    # Fixed stratified split (every 5th image of each class is test), independent of ``seed``.
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(y == c)[::5]] = True
    arrays = {"train_x": x[~test], "train_y": y[~test], "test_x": x[test], "test_y": y[test]}
    return bundle_from_arrays(req, arrays, 10, [str(i) for i in range(10)], None, pad=1, hflip=False,
                              source="sklearn.datasets.load_digits")  # fmt: skip
