"""ONNX -> ONNX Runtime ``.ort`` format for phone-class ARM (ORT mobile / minimal builds).

Runs ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` (flags checked with ``--help``
on onnxruntime 1.31): ``--optimization_style Fixed`` bakes in the optimizations for the CPU EP
(use ``Runtime`` for NNAPI/CoreML), ``--target_platform arm`` picks ARM-specific layouts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import EdgeslimError, require
from edgeslim.utils.io import atomic_path, check_output_path
from edgeslim.utils.processes import dies_with_us
from edgeslim.utils.tmpfiles import temporary_folder

STYLES = ("Fixed", "Runtime")
#: the model metadata key of the ``.ort`` file that records its conversion (:meth:`OrtConversion.recorded`)
CONVERSION_KEY = "ort_conversion"


@dataclass
class OrtConversion:
    path: Path
    config: Path | None  # required-operators config for a reduced (minimal) ORT build
    style: str
    target_platform: str
    size_bytes: int
    #: the onnxruntime version whose converter wrote the file
    onnxruntime: str = ""

    def recorded(self) -> dict[str, str]:
        """What the ``.ort`` file records of its conversion (its metadata :data:`CONVERSION_KEY`, JSON)."""
        return {"optimization_style": self.style, "target_platform": self.target_platform,
                "onnxruntime": self.onnxruntime}  # fmt: skip

    def to_dict(self) -> dict:
        return {"path": str(self.path), "config": str(self.config) if self.config else None,
                "size_bytes": self.size_bytes, **self.recorded()}  # fmt: skip


def operator_config_path(ort_path: str | os.PathLike) -> Path:
    """Where :func:`convert_to_ort` writes the operators a reduced ONNX Runtime build of ``ort_path`` needs."""
    return Path(ort_path).with_suffix(".required_operators.config")


def convert_to_ort(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    style: str = "Fixed",
    target_platform: str = "arm",
    force: bool = False,
    timeout: float = 300.0,
) -> OrtConversion:
    """Convert one ONNX file to ``.ort`` (next to it unless ``out_path``), atomically; the ``.ort`` records
    its conversion (style, target platform, onnxruntime version) in its metadata (:data:`CONVERSION_KEY`)."""
    src = Path(onnx_path)
    if style not in STYLES:
        raise EdgeslimError(f"unknown ORT optimization style {style!r}; use Fixed or Runtime")
    if target_platform not in ("arm", "amd64"):
        raise EdgeslimError(f"unknown ORT target platform {target_platform!r}; use arm or amd64")
    out = check_output_path(out_path or src.with_suffix(".ort"), force)
    version = require(
        "onnxruntime", "to convert to the ORT format"
    ).__version__  # (the converter's, run below)
    conversion = OrtConversion(out, None, style, target_platform, 0, version)
    with temporary_folder("edgeslim-ort-") as tmp:
        work = Path(tmp) / "model.onnx"
        _with_conversion(src, work, conversion.recorded())
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(work),
               "--output_dir", str(Path(tmp) / "out"), "--optimization_style", style,
               "--target_platform", target_platform]  # fmt: skip
        try:
            # (in the fresh folder: `python -m` puts its working directory first on the import path; it ends
            # with this process, a review's kill -9 of an export left it converting)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp,
                                  preexec_fn=dies_with_us())  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise EdgeslimError(f"ORT format conversion took longer than {timeout:.0f} s; giving up") from exc
        produced = sorted((Path(tmp) / "out").rglob("*.ort"))
        if proc.returncode != 0 or not produced:
            last = (proc.stderr or proc.stdout).strip().splitlines()
            raise EdgeslimError(f"ORT format conversion failed: {last[-1] if last else 'no output'}")
        with atomic_path(out) as t:
            shutil.copyfile(produced[0], t)
        configs = sorted((Path(tmp) / "out").rglob("*.config"))
        if configs:
            conversion.config = operator_config_path(out)
            # (its header names the model it was made from: the .ort beside it, not the deleted temporary copy)
            text = configs[0].read_text().replace(str(produced[0]), out.name)
            with atomic_path(conversion.config) as t:
                Path(t).write_text(text)
    conversion.size_bytes = out.stat().st_size
    return conversion


def _with_conversion(src: Path, dst: Path, recorded: dict[str, str]) -> None:
    """Copy the ONNX ``src`` to ``dst`` with ``recorded`` in its metadata (:data:`CONVERSION_KEY`), which
    the ``.ort`` converted from it keeps."""
    onnx = require("onnx", "to convert to the ORT format")
    model = onnx.load(str(src))
    for prop in [p for p in model.metadata_props if p.key == CONVERSION_KEY]:
        model.metadata_props.remove(prop)
    model.metadata_props.add(key=CONVERSION_KEY, value=json.dumps(recorded))
    onnx.save(model, str(dst))
