"""CIFAR-10/100 (torchvision's ``cifar-*-python`` pickles, or an ImageFolder tree/zip) and SVHN (.mat)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.data.bundle import DataBundle
from edgeslim.data.datasets import (
    CIFAR10_CLASSES,
    NORMS,
    LoadRequest,
    bundle_from_arrays,
    register_dataset,
    whole_numbers,
)
from edgeslim.errors import EdgeslimError
from edgeslim.utils.numpy_pickle import load_numpy_pickle

CIFAR = {
    "cifar10": {"dir": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "meta": "batches.meta", "names": "label_names", "labels": "labels",
                "classes": 10, "tv": "CIFAR10"},
    "cifar100": {"dir": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
                 "names": "fine_label_names", "labels": "fine_labels", "classes": 100, "tv": "CIFAR100"},
}  # fmt: skip


def safe_unpickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR batch file without executing code; keys come back as str."""
    try:
        with open(path, "rb") as f:
            obj = load_numpy_pickle(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise EdgeslimError(
            f"{path} is not a valid CIFAR batch file ({exc}); re-download the python version of the data set"
        ) from exc
    if not isinstance(obj, dict):
        raise EdgeslimError(f"{path} does not hold a CIFAR batch (a dict); re-download the data set")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_dir(d: Path, name: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays ([N,3,32,32] uint8 images, labels) of both splits, and the class names."""
    info = CIFAR[name]
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for fn in info["train" if split == "train" else "test"]:
            batch = safe_unpickle(d / fn)
            try:
                data, labels = batch["data"], batch[info["labels"]]
            except KeyError as exc:
                raise EdgeslimError(f"{d / fn} lacks the key {exc}; is this {name}? re-download it") from exc
            data = whole_numbers(data, "images", str(d / fn), 0, 255, np.uint8)
            labels = whole_numbers(labels, "labels", str(d / fn), 0, info["classes"] - 1)
            if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(data) != len(labels):
                raise EdgeslimError(
                    f"{d / fn}: images {data.shape} and labels {labels.shape} are not CIFAR's (N, 3072) and (N,); "
                    "re-download it"
                )
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        out[f"{split}_x"], out[f"{split}_y"] = np.concatenate(xs), np.concatenate(ys)
    classes = CIFAR10_CLASSES if name == "cifar10" else [f"class{i}" for i in range(info["classes"])]
    if (d / info["meta"]).is_file():
        names = safe_unpickle(d / info["meta"]).get(info["names"])
        if names is not None and len(names) == info["classes"]:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return out, classes


def _find_cifar_dir(req: LoadRequest) -> Path | None:
    info = CIFAR[req.name]
    roots = [req.data_dir] if req.data_dir is not None else [req.cache_dir]
    for r in roots:
        for d in (r, r / info["dir"]):
            if all((d / f).is_file() for f in info["train"] + info["test"]):
                return d
    return None


def _cifar(req: LoadRequest) -> DataBundle:
    info = CIFAR[req.name]
    d = req.data_dir
    if d is not None and (d.is_file() or (d / "train").is_dir() or _has_nested_train(d)):
        # an ImageFolder tree or zip holding this data set (e.g. cifar10-jpeg.zip)
        from edgeslim.data.imagefolder import load_image_folder

        b = load_image_folder(req, d, norm=NORMS[req.name], num_classes=info["classes"], pad=4, hflip=True)
        if b.input_shape != (3, 32, 32):
            raise EdgeslimError(
                f"{d} holds {b.input_shape} images, not 3x32x32 {req.name}; load it as the imagefolder data set",
                param="data",
            )
        return b
    found = _find_cifar_dir(req)
    if found is None and req.download:
        from edgeslim.errors import require

        tvd = require("torchvision.datasets", f"to download {req.name}")
        try:
            getattr(tvd, info["tv"])(str(req.cache_dir), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise EdgeslimError(
                f"downloading {req.name} failed ({exc}); pass data_dir", param="data_dir"
            ) from exc
        found = _find_cifar_dir(req)
    if found is None and req.data_dir is None:
        raise EdgeslimError(
            f"where is {req.name}? give data_dir: the folder of torchvision's python format ({info['dir']}/), "
            f"or an image folder or zip with train/ and test/ (it is not in the cache {req.cache_dir})",
            param="data_dir",
        )
    if found is None:
        raise EdgeslimError(
            f"no {req.name} data in {req.data_dir}: expected {info['dir']}/ with {', '.join(info['train'][:1])}... "
            f"(torchvision's python format) or an image folder/zip with train/ and test/; check data_dir",
            param="data_dir",
        )
    arrays, classes = read_cifar_dir(found, req.name)
    return bundle_from_arrays(req, arrays, info["classes"], classes, NORMS[req.name], pad=4, hflip=True,
                              source=str(found))  # fmt: skip


def _has_nested_train(d: Path) -> bool:
    return d.is_dir() and any((c / "train").is_dir() for c in d.iterdir() if c.is_dir())


register_dataset("cifar10", "CIFAR-10, 32x32 RGB: cifar-10-batches-py pickles, or an image folder/zip")(
    _cifar
)
register_dataset("cifar100", "CIFAR-100, 32x32 RGB: cifar-100-python pickles, or an image folder/zip")(_cifar)


# --------------------------------------------------------------------------- SVHN


@register_dataset("svhn", "SVHN cropped digits, 32x32 RGB (torchvision's train/test_32x32.mat, needs scipy)")
def _svhn(req: LoadRequest) -> DataBundle:
    root = req.data_dir if req.data_dir is not None else req.cache_dir
    files = {s: root / f"{s}_32x32.mat" for s in ("train", "test")}
    if not all(p.is_file() for p in files.values()) and req.download:
        from edgeslim.errors import require

        tvd = require("torchvision.datasets", "to download SVHN")
        try:
            for s in ("train", "test"):
                tvd.SVHN(str(root), split=s, download=True)
        except (OSError, RuntimeError) as exc:
            raise EdgeslimError(f"downloading SVHN failed ({exc}); pass data_dir", param="data_dir") from exc
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise EdgeslimError(
            f"no SVHN files {', '.join(missing)} in {root}; point data_dir at the folder holding them",
            param="data_dir",
        )
    from edgeslim.errors import require

    sio = require("scipy.io", "to read SVHN .mat files")
    arrays: dict[str, np.ndarray] = {}
    for s, p in files.items():
        try:
            m = sio.loadmat(str(p), variable_names=["X", "y"])
            x, y = m["X"], m["y"]
        except (OSError, ValueError, KeyError, NotImplementedError, sio.matlab.MatReadError) as exc:
            raise EdgeslimError(f"{p} is not a valid SVHN .mat file ({exc}); re-download it") from exc
        x = whole_numbers(x, "images", str(p), 0, 255, np.uint8)
        y = whole_numbers(y, "labels", str(p), 0, 10)  # SVHN's digits are 1..10 (10: the digit 0)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.shape not in ((x.shape[3],), (x.shape[3], 1)):
            raise EdgeslimError(
                f"{p}: X {x.shape} and y {y.shape} are not SVHN's (32, 32, 3, N) and (N, 1); re-download it"
            )
        arrays[f"{s}_x"] = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
        arrays[f"{s}_y"] = np.where(y == 10, 0, y).reshape(-1)  # SVHN stores the digit 0 as label 10
    return bundle_from_arrays(req, arrays, 10, [str(i) for i in range(10)], NORMS["svhn"], pad=4, hflip=False,
                              source=str(root))  # fmt: skip
