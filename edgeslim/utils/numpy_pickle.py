"""Pickles of plain data and numpy arrays, read without running code.

A pickle names the callables it is rebuilt with; :class:`NumpyOnlyUnpickler` allows only numpy's
array reconstruction, so dicts, lists, tuples, strings, numbers and arrays load and any other
global (``os.system``, a class with a ``__reduce__``) is refused before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import IO, Any

#: the only globals such a pickle may reference: numpy's array reconstruction
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 pickles (protocol 2) store numpy's raw bytes
}


def _bytes(*args: Any) -> bytes:
    """``bytes()`` as protocol 2 rebuilds an empty ``bytes`` (``__builtin__.bytes`` with no arguments:
    an empty numpy array's raw data; other bytes come through ``_codecs.encode``). Any argument is
    refused: ``bytes(n)`` (an int or a numpy integer) asks for n zero bytes."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_numpy_pickle(f: IO[bytes], **kwargs: Any) -> Any:
    """The object of the pickle stream ``f`` (``kwargs``: :class:`pickle.Unpickler`'s, e.g. ``encoding``)."""
    return NumpyOnlyUnpickler(f, **kwargs).load()


def load_npy(path: str | Path) -> Any:
    """The array of an ``.npy`` file (``np.save``), an object array's pickle read by
    :class:`NumpyOnlyUnpickler` (what ``np.load(allow_pickle=True)`` returns, without running code).
    Raises :class:`pickle.UnpicklingError` for a global it refuses, ValueError for a file that is
    not ``.npy``."""
    import numpy as np

    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy format version {version} is not read here")
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        arr = load_numpy_pickle(f)
    if not isinstance(arr, np.ndarray):
        raise pickle.UnpicklingError(f"an object array's pickle holds {type(arr).__name__}")
    return arr
