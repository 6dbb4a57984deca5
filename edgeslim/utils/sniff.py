"""Identify a file by its bytes before any loader touches it (nothing is unpickled or run).

:func:`sniff` reads magic numbers, a zip's central directory (member names only), the top level
of a protobuf message (tags and lengths; the payloads are skipped) or text. It never unpickles,
imports, deserializes a model or decompresses a zip member, so it is safe on untrusted files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import BinaryIO

#: bytes read from the head of a file to classify it
HEAD_BYTES = 4096
#: every value :func:`sniff` returns
KINDS = ("empty", "torchscript", "torch-export", "torch", "zip", "legacy", "safetensors", "onnx", "ort",
         "tensorrt-engine", "png", "jpeg", "text", "unknown")  # fmt: skip
#: a serialized TensorRT engine (plan) starts with this tag
TRT_MAGIC = b"ftrt"
#: an ONNX Runtime ``.ort`` model (a FlatBuffer) has this file identifier at bytes 4..8
ORT_MAGIC = b"ORTM"
#: ModelProto fields (onnx.proto): number -> protobuf wire type (0 varint, 2 length-delimited)
_ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_ONNX_GRAPH_FIELD = 7


def zip_member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name as its writer meant it. A name stored without the UTF-8 flag (bit 0x800) is
    read by Python's zipfile as cp437; where its bytes are valid UTF-8 it is read as UTF-8, as unzip
    and 7-Zip read it: Info-ZIP's zip 3.0 (Debian's ``zip -r``) stores UTF-8 names without the flag, and
    ``Vögel/`` came out as ``V├╢gel/``."""
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except UnicodeError:  # (a real cp437 name, or one of another code page: kept as zipfile reads it)
        return name


def zip_names(path: Path) -> list[str] | None:
    """Member names of a zip archive (:func:`zip_member_name`), or None when ``path`` is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [zip_member_name(i) for i in zf.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _zip_kind(names: list[str]) -> str:
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
        return "torch-export"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch"
    return "zip"


def _is_trt_engine(head: bytes) -> bool:
    """A TensorRT plan: the ``ftrt`` tag then binary header fields (NUL bytes among the next 60, so a
    text file starting with "ftrt" stays text), first or after an Ultralytics header (uint32 LE
    length, that many bytes of JSON metadata)."""
    if head.startswith(TRT_MAGIC):
        return b"\x00" in head[4:64]
    if len(head) >= 8 and head[4:5] == b"{":
        n = int.from_bytes(head[:4], "little")
        return 4 + n + 4 <= len(head) and head[4 + n : 8 + n] == TRT_MAGIC
    return False


def _is_ort(head: bytes, size: int) -> bool:
    """An ONNX Runtime ``.ort`` model: a FlatBuffer whose root-table offset (uint32 LE, bytes 0..4) lies in
    the file, then the file identifier ``ORTM``; a NUL byte among the first 64 (a text file saying "ORTM"
    at bytes 4..8 stays text)."""
    if len(head) < 12 or head[4:8] != ORT_MAGIC:
        return False
    return 8 <= int.from_bytes(head[:4], "little") < size and b"\x00" in head[:64]


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: 8 bytes little-endian header length, then a JSON object that fits the file."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8


def _varint(f: BinaryIO) -> int | None:
    shift = value = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def _is_onnx(f: BinaryIO, size: int) -> bool:
    """Walk the top-level protobuf fields of a ModelProto without reading their payloads:
    ``ir_version`` first (tag 0x08, a small varint), ModelProto's fields with their wire types
    (unknown field numbers are allowed: a newer ONNX), a graph, and the last field ending exactly
    at the end of the file (a truncated or padded file is not ONNX)."""
    f.seek(0)
    seen: list[int] = []
    while f.tell() < size:
        tag = _varint(f)
        if tag is None or (not seen and tag != 0x08):
            return False
        field, wire = tag >> 3, tag & 7
        if field == 0 or wire not in (0, 1, 2, 5) or _ONNX_MODEL_FIELDS.get(field, wire) != wire:
            return False
        if wire in (1, 5):  # fixed 64 / 32 bits
            f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            seen.append(field)
            continue
        value = _varint(f)
        if value is None or (not seen and not 1 <= value <= 100):  # ir_version: 3 (2017) .. 11 (2024)
            return False
        if wire == 2:
            if f.tell() + value > size:
                return False
            f.seek(value, os.SEEK_CUR)
        seen.append(field)
    return f.tell() == size and _ONNX_GRAPH_FIELD in seen


def sniff(path: str | Path) -> str:
    """The kind of file at ``path``, from its bytes alone; one of :data:`KINDS`.

    ``empty``; ``torchscript``, ``torch-export``, ``torch`` (a ``torch.save`` zip), ``zip`` (another
    zip), from the member names; ``legacy`` (a pickle stream, protocol 2-5: pre-1.6 ``torch.save``
    or ``pickle``); ``onnx`` (a protobuf ModelProto, checked field by field to the end of the
    file); ``ort`` (an ONNX Runtime ``.ort`` model, by its FlatBuffer identifier); ``tensorrt-engine``; ``png``; ``jpeg``; ``text`` (UTF-8 without NUL bytes, JSON and YAML
    included); ``unknown``.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(HEAD_BYTES)
        if not head:
            return "empty"
        if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
            names = zip_names(p)
            return "zip" if names is None else _zip_kind(names)
        if _is_trt_engine(head):  # (first: an Ultralytics header's length can begin like a pickle)
            return "tensorrt-engine"
        if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
            return "legacy"
        if _is_ort(head, os.fstat(f.fileno()).st_size):
            return "ort"
        if _is_safetensors(head, os.fstat(f.fileno()).st_size):
            return "safetensors"
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return "png"
        if head[:3] == b"\xff\xd8\xff":
            return "jpeg"
        if head[0] == 0x08 and _is_onnx(f, os.fstat(f.fileno()).st_size):
            return "onnx"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a multi-byte character cut at the read boundary
                return "text"
    return "unknown"


def not_a_pytorch_model(path: str | Path, kind: str | None = None) -> Exception | None:
    """The one-line error for a file a PyTorch model cannot be loaded from whatever is installed
    (an empty file, an ONNX model, a TensorRT engine: a model to benchmark), else None; ``kind`` is
    :func:`sniff`'s, read when not given. Needs no torch, so a device install says it too."""
    from edgeslim.errors import EdgeslimError, Step

    kind = sniff(path) if kind is None else kind
    if kind == "empty":
        return empty_file_error(path)
    if kind in ("onnx", "ort", "tensorrt-engine"):
        bench = Step("bench")
        what = {
            "onnx": "an ONNX model",
            "ort": "an ONNX Runtime model",
            "tensorrt-engine": "a TensorRT engine",
        }
        return EdgeslimError(
            f"{path} is {what[kind]}, not a PyTorch one; give it "
            f"to {bench}, or give the PyTorch model it was exported from",
            steps=(bench,),
        )
    return None


def trtexec_route(onnx: str | Path) -> str:
    """How a device without PyTorch builds a TensorRT engine of the ONNX file ``onnx``: trtexec's command
    line, as the ``NAME.fp16.trtexec.sh`` script a TensorRT export writes beside its ONNX runs it."""
    engine = Path(onnx).with_suffix(".engine")
    return (f"build it on the device with trtexec (trtexec --onnx={onnx} --saveEngine={engine} --fp16; --int8 --fp16 "
            "for an INT8 Q/DQ file), as the NAME.fp16.trtexec.sh a TensorRT export writes beside its ONNX does")  # fmt: skip


def empty_file_error(path: str | Path) -> Exception:
    """The one-line error for a model file of 0 bytes (a copy or a write cut off)."""
    from edgeslim.errors import EdgeslimError

    return EdgeslimError(
        f"{path} is empty (0 bytes); was it cut off while being written or copied? re-create it"
    )
