"""Identify a file by its bytes before any loader touches it (nothing is unpickled or run)."""

from __future__ import annotations

import zipfile
from pathlib import Path

#: bytes read from the head of a file to classify it
HEAD_BYTES = 4096


def zip_names(path: Path) -> list[str] | None:
    """Member names of a zip archive, or None when ``path`` is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
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


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08) followed by a small version
    # number, then another ModelProto field (producer_name 0x12, ..., graph 0x3a, opset 0x42).
    return (
        len(head) >= 3
        and head[0] == 0x08
        and 1 <= head[1] <= 64
        and head[2] in b"\x12\x1a\x22\x2a\x32\x3a\x42\x52"
    )


def sniff(path: str | Path) -> str:
    """The kind of file at ``path``, from its bytes alone.

    One of ``empty``, ``torchscript``, ``torch-export``, ``torch`` (a ``torch.save`` zip),
    ``zip`` (another zip), ``legacy`` (a pickle stream: pre-1.6 ``torch.save`` or ``pickle``),
    ``onnx``, ``png``, ``jpeg``, ``text``, ``unknown``.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        names = zip_names(p)
        return "zip" if names is None else _zip_kind(names)
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "legacy"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if _looks_like_onnx(head):
        return "onnx"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a multi-byte character cut at the read boundary
                return "text"
    return "unknown"
