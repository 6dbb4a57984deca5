"""Reader for the IDX files of (Fashion-)MNIST, gzip-compressed or not."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgeslim.errors import EdgeslimError

FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


#: the most bytes an IDX file may declare: MNIST-format sets are far smaller (Fashion-MNIST's largest
#: file holds 47 MB), and a small ``.gz`` can inflate to any size (read only up to what the header says)
MAX_IDX_BYTES = 1 << 31


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one unsigned-byte IDX file (``.gz`` or raw) into a numpy array."""
    p = Path(path)
    try:
        with gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise EdgeslimError(f"{p} is truncated (no IDX header); re-install or re-download it")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
                raise EdgeslimError(f"{p} is not an unsigned-byte IDX file (bad magic); re-download it")
            shape = f.read(4 * ndim)
            if len(shape) < 4 * ndim:
                raise EdgeslimError(f"{p} is truncated (no IDX header); re-install or re-download it")
            dims = struct.unpack(f">{ndim}I", shape)
            n = math.prod(dims)  # (Python ints: numpy's int64 product wraps around)
            if n > MAX_IDX_BYTES:
                raise EdgeslimError(
                    f"{p} declares {n / 1e9:.1f} GB of data (dimensions {list(dims)}), more than an MNIST-format "
                    f"file holds (limit {MAX_IDX_BYTES / 1e9:.1f} GB, edgeslim.data.idx.MAX_IDX_BYTES); re-download it"
                )
            raw = f.read(n + 1)  # (one more: a file longer than its header says is damaged too)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise EdgeslimError(f"{p} is unreadable or corrupt ({exc}); re-install or re-download it") from exc
    if len(raw) != n:
        what = (
            f"truncated ({len(raw)} of {n} bytes)"
            if len(raw) < n
            else f"longer than its header says ({n} bytes)"
        )
        raise EdgeslimError(f"{p} is {what}; re-download it")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def find_idx_dir(candidates: list[Path]) -> Path | None:
    """The first directory holding all four IDX files (``.gz`` or raw), or None."""
    for d in candidates:
        if all(_locate(d, stem) is not None for stem in FMNIST_FILES.values()):
            return d
    return None


def _locate(d: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (d / name).is_file():
            return d / name
    return None


def read_idx_dir(d: Path) -> dict[str, np.ndarray]:
    """All four arrays of an MNIST-format directory; images come back as [N,1,H,W]."""
    out: dict[str, np.ndarray] = {}
    for key, stem in FMNIST_FILES.items():
        p = _locate(d, stem)
        if p is None:
            raise EdgeslimError(
                f"{d} lacks {stem}(.gz); give a directory with the four Fashion-MNIST IDX files"
            )
        out[key] = read_idx(p)
    for split in ("train", "test"):
        x, y = out[f"{split}_x"], out[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise EdgeslimError(
                f"{d}: {split} images {x.shape} and labels {y.shape} do not match; re-download the data set"
            )
        out[f"{split}_x"] = x[:, None]
    return out
