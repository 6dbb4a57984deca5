"""Issue #13, library side: bounded image/zip reads, one-class folders, bench/export request checks,
trtexec script quoting, stale temporary files, file sniffing."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest

from edgeslim.errors import EdgeslimError


# ---------------------------------------------------------------------------- images and zips
def _png(width: int, height: int, rows: bool = True) -> bytes:
    """A greyscale PNG of ``width`` x ``height`` zeros, compressed as it streams (never held whole);
    with ``rows=False`` only the header (IHDR) is real and the pixel data is empty."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = b""
    if rows:
        z = zlib.compressobj(1)
        block = bytes(width + 1) * max(1, (1 << 20) // (width + 1))  # filter byte 0 + zero pixels
        per = len(block) // (width + 1)
        parts = [z.compress(block) for _ in range(height // per)]
        parts.append(z.compress(bytes(width + 1) * (height % per)))
        idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _small_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    return buf.getvalue()


def _tree(root: Path, first: bytes | None = None) -> Path:
    """train/a, train/b, test/a with small real PNGs; ``first`` replaces train/a/0.png."""
    for rel in ("train/a/0.png", "train/a/1.png", "train/b/0.png", "test/a/0.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_small_png())
    if first is not None:
        (root / "train/a/0.png").write_bytes(first)
    return root


_LOAD = textwrap.dedent(
    """
    import resource, sys
    from edgeslim.data import load_dataset
    from edgeslim.errors import EdgeslimError
    import PIL.Image, PIL.PngImagePlugin  # imported before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_dataset("imagefolder", data_dir=sys.argv[1], cache_dir=sys.argv[2])
        msg = "loaded"
    except EdgeslimError as exc:
        msg = "EdgeslimError: " + str(exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"{grown // 1024}\\n{msg}")
    """
)


def _load_in_subprocess(data: Path, tmp: Path) -> tuple[int, str]:
    """(peak RSS growth in MB, outcome) of loading ``data`` in a fresh process."""
    r = subprocess.run([sys.executable, "-c", _LOAD, str(data), str(tmp / "cache")], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    grown, msg = r.stdout.strip().split("\n", 1)
    return int(grown), msg


def test_zip_member_declaring_a_huge_size_is_refused_before_reading(tmp_path: Path) -> None:
    """128 MiB of zeros deflate to ~130 KB: the member is refused by its declared size, unread."""
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in ("train/a/0.png", "train/b/0.png", "test/a/0.png"):
            zf.writestr(rel, _small_png())
        with zf.open("train/a/1.png", "w", force_zip64=True) as f:
            for _ in range(128):
                f.write(bytes(1 << 20))
    assert z.stat().st_size < 2 << 20
    grown, msg = _load_in_subprocess(z, tmp_path)
    assert msg.startswith("EdgeslimError: image train/a/1.png declares 128 MiB, over the 64 MiB limit"), msg
    assert "\n" not in msg and grown < 48, (grown, msg)


def test_oversized_image_file_is_refused_before_reading(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    with open(root / "train/b/1.png", "wb") as f:  # sparse: 65 MiB of zeros costing no disk
        f.truncate(65 << 20)
    grown, msg = _load_in_subprocess(root, tmp_path)
    assert msg.startswith("EdgeslimError: image train/b/1.png is 65 MiB, over the 64 MiB limit"), msg
    assert grown < 48, (grown, msg)


def test_image_with_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    """A real 10000x10000 PNG (100 Mpixel, ~100 KB): refused from its header, nothing decoded."""
    root = _tree(tmp_path / "tree", first=_png(10000, 10000))
    grown, msg = _load_in_subprocess(root, tmp_path)
    assert msg.startswith("EdgeslimError: image train/a/0.png is too large to decode (10000x10000"), msg
    assert "MAX_IMAGE_PIXELS" in msg and grown < 48, (grown, msg)


def test_decompression_bomb_over_pils_own_limit_is_one_error(tmp_path: Path) -> None:
    """Over 2x PIL's limit PIL raises DecompressionBombError in open(): one EdgeslimError instead,
    also when it is not the first image (decode, not probe)."""
    from edgeslim.data import load_dataset

    root = _tree(tmp_path / "tree")
    (root / "train/b/0.png").write_bytes(_png(20000, 20000, rows=False))
    with pytest.raises(
        EdgeslimError, match=r"image train/b/0.png is too large to decode .*limit is 50 Mpixel"
    ):
        load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "c")


def test_one_class_image_folder_is_refused(tmp_path: Path) -> None:
    from edgeslim.data import load_dataset

    root = _tree(tmp_path / "tree")
    for f in (root / "train/b").iterdir():
        f.unlink()
    (root / "train/b").rmdir()
    with pytest.raises(
        EdgeslimError, match=r"1 class folder\(s\) in train/ \(only 'a'\); a classifier needs at least 2"
    ):
        load_dataset("imagefolder", data_dir=root, cache_dir=tmp_path / "c")
    z = tmp_path / "one.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f.relative_to(root).as_posix())
    with pytest.raises(EdgeslimError, match="a classifier needs at least 2"):
        load_dataset("imagefolder", data_dir=z, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------------------- trtexec script
@pytest.mark.parametrize("version", ["10", "11"])
def test_trtexec_script_passes_hostile_file_names_verbatim(tmp_path: Path, version: str) -> None:
    """A file name with a space, ``$``, both quotes, a backslash and a newline (whose second line is a
    command) reaches trtexec as exactly the intended argument, and nothing else runs."""
    from edgeslim.export.trtexec import trtexec_plan

    d = tmp_path / "out $HOME 'dir\""
    d.mkdir()
    name = "m $(touch pwned) `x` 'q\" \\\ntouch pwned #"
    plan = trtexec_plan(d / f"{name}.onnx", d / f"{name}.fp32.engine", input_name="in put", input_shape=(3, 8, 8),
                        precision="fp32", trt_version=version, dynamic_batch=True, batch=2, max_batch=4,
                        timing_cache=d / f"{name}.cache", script_dir=d)  # fmt: skip
    assert plan.onnx == f"{name}.onnx" and f"--onnx={name}.onnx" in plan.build
    script = d / "build.sh"
    script.write_text(plan.render())
    log = tmp_path / "argv.jsonl"
    fake = tmp_path / "trtexec"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['ARGV_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")  # fmt: skip
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake), "ARGV_LOG": str(log), "HOME": "/nonexistent"}
    r = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [plan.build[1:], plan.run[1:]]
    assert not list(tmp_path.rglob("pwned")) and not list(tmp_path.rglob("x"))


# ---------------------------------------------------------------------------- bench timing / options
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"warmup_s": float("nan")}, "warmup_s must be a finite number"),
        ({"min_time_s": float("inf")}, "min_time_s must be a finite number"),
        ({"warmup_s": -1.0}, "warmup_s and warmup_iters must be >= 0"),
        ({"min_time_s": -1.0}, "min_time_s >= 0"),
        ({"max_time_s": 0.0}, r"max_time_s \(0 s\) must be > 0"),
        (
            {"min_time_s": 5.0, "max_time_s": 2.0},
            r"max_time_s \(2 s\) must be > 0 and at least min_time_s \(5 s\)",
        ),
        ({"min_iters": 0}, "min_iters >= 1"),
        ({"min_iters": 50, "max_iters": 10}, r"min_iters \(50\) must be <= max_iters \(10, the cap"),
        ({"warmup_iters": 2.5}, "warmup_iters must be an integer"),
        ({"max_time_s": "60"}, "max_time_s must be a finite number"),
    ],
)
def test_timing_config_refuses_nonsense(kw: dict, match: str) -> None:
    from edgeslim.bench.timing import TimingConfig

    with pytest.raises(EdgeslimError, match=match):
        TimingConfig(**kw)


def test_timing_config_accepts_edges() -> None:
    from edgeslim.bench.timing import TimingConfig

    cfg = TimingConfig(warmup_s=0, warmup_iters=0, min_iters=1, min_time_s=0.0, max_time_s=0.001)
    assert TimingConfig(**cfg.to_dict()) == cfg  # the worker rebuilds it from the spec


def test_bench_options_refused_before_measuring(tmp_path: Path) -> None:
    """run_comparison and layer_table refuse bad options before opening or timing anything."""
    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.layers import layer_table
    from edgeslim.bench.timing import TimingConfig

    missing = str(tmp_path / "nothing.onnx")  # would fail later with "does not exist"
    for kw, match in (({"options": {"threads": 0}}, r"options\['threads'\] must be an integer >= 1"),
                      ({"options": {"threads": -2}}, r"got -2"), ({"trials": 0}, "trials must be an integer >= 1"),
                      ({"batches": [1, 0]}, "batches must be a non-empty list"), ({"nice": 40}, "nice must be in"),
                      ({"interval_ms": 0}, "interval_ms")):  # fmt: skip
        args = {"models": {"model": missing}, "backend": "onnxruntime", "batches": [1], **kw}
        with pytest.raises(EdgeslimError, match=match):
            run_comparison(**args)
    with pytest.raises(EdgeslimError, match=r"options\['threads'\]"):
        layer_table(missing, "onnxruntime", 1, TimingConfig(), {"threads": 0})
    with pytest.raises(EdgeslimError, match="batch must be an integer >= 1"):
        layer_table(missing, "onnxruntime", 0, TimingConfig(), {})


def test_bench_cli_nonsense_timing_is_one_line(tmp_path: Path, capsys) -> None:
    """Whichever layer refuses (the CLI's option types or TimingConfig), one line and exit 2; values
    valid one by one but inconsistent together reach TimingConfig."""
    from edgeslim.cli import main

    m = str(tmp_path / "m.onnx")
    for args in (["--warmup", "nan"], ["--min-time", "-1"], ["--max-time", "0"], ["--threads", "-1"],
                 ["--min-time", "5", "--max-time", "2"]):  # fmt: skip
        assert main(["bench", m, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
    assert (
        err
        == "error: --max-time (2 s) must be > 0 and at least --min-time (5 s): raise the first or lower the second"
    )


# ---------------------------------------------------------------------------- export request
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dynamic_batch": True, "batch": 8, "max_batch": 2}, r"max_batch \(2\) is below batch \(8\)"),
        ({"batch": 0}, "batch must be an integer >= 1, got 0"),
        ({"max_batch": -1}, "max_batch must be an integer >= 1"),
        ({"n_validate": 0}, "n_validate must be"),
        ({"calib_images": 0}, "calib_images must be"),
        ({"opset": 5}, "opset 5 is out of range; use 9.."),
        ({"opset": 99}, "opset 99 is out of range"),
        ({"opset": 17.0}, "opset must be an integer"),
        ({"precision": "int4"}, "precision must be one of fp32, fp16, int8"),
        ({"exporter": "magic"}, "exporter must be one of"),
        ({"compare_device": "tpu"}, "compare_device must be one of cpu, cuda"),
        ({"workspace": "lots"}, "invalid size"),
        ({"trt_version": "7"}, "older than 8.5"),
        ({"onnx_path": Path("m.pt")}, "onnx_path m.pt should end in .onnx"),
    ],
)
def test_export_request_refuses_inconsistent_values(kw: dict, match: str) -> None:
    from edgeslim.export.pipeline import ExportRequest

    with pytest.raises(EdgeslimError, match=match):
        ExportRequest(**kw)


def test_export_request_valid_and_cli(tmp_path: Path, capsys) -> None:
    from edgeslim.cli import main
    from edgeslim.export.pipeline import ExportRequest

    ExportRequest(dynamic_batch=True, batch=8, max_batch=8)
    ExportRequest(batch=64)  # max_batch only bounds a dynamic profile
    out = tmp_path / "v.onnx"
    assert (
        main(
            ["export", "vgg-small", "--onnx", str(out), "--dynamic-batch", "--batch", "8", "--max-batch", "2"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--max-batch (2) is below --batch (8)" in err and len(err.splitlines()) == 1 and not out.exists()


# ---------------------------------------------------------------------------- bench baseline
def _onnx(path: Path, in_ch: int = 3, size: int = 16, classes: int = 10, width: int = 4,
          dynamic: bool = False, two_outputs: bool = False) -> Path:  # fmt: skip
    """A real ONNX export of a tiny CNN."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_ch, width, 3, padding=1)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            y = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
            return (y, y.softmax(1)) if two_outputs else y

    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    outs = ["output", "prob"] if two_outputs else ["output"]
    torch.onnx.export(Net().eval(), (torch.zeros(1, in_ch, size, size),), str(path), dynamo=False,
                      input_names=["input"], output_names=outs, dynamic_axes=axes, opset_version=17)  # fmt: skip
    return path


def test_bench_refuses_a_baseline_of_another_shape(tmp_path: Path, capsys, monkeypatch) -> None:
    from edgeslim.bench.compare import check_comparable, io_signature, run_comparison
    from edgeslim.cli import main

    a = _onnx(tmp_path / "a.onnx")
    assert io_signature(a) == {"inputs": [("input", [1, 3, 16, 16])], "outputs": [("output", [1, 10])]}
    check_comparable(_onnx(tmp_path / "wide.onnx", width=16), a)  # pruned channels inside: comparable
    check_comparable(_onnx(tmp_path / "dyn.onnx", dynamic=True), a)  # a dynamic batch matches 1
    assert io_signature(tmp_path / "dyn.onnx")["inputs"] == [("input", [None, 3, 16, 16])]
    cases = [
        (_onnx(tmp_path / "grey.onnx", in_ch=1, size=28), r"baseline input shape \(1,1,28,28\) differs from the model's \(1,3,16,16\); compare two exports of the same network"),
        (_onnx(tmp_path / "big.onnx", size=32), r"baseline input shape \(1,3,32,32\) differs"),
        (_onnx(tmp_path / "c5.onnx", classes=5), r"baseline output shape \(1,5\) differs from the model's \(1,10\)"),
        (_onnx(tmp_path / "two.onnx", two_outputs=True), r"has 2 outputs but the model .* has 1"),
    ]  # fmt: skip
    for baseline, match in cases:
        with pytest.raises(EdgeslimError, match=match):
            check_comparable(baseline, a)
        with pytest.raises(EdgeslimError, match=match):  # before any measuring process starts
            run_comparison({"baseline": str(baseline), "slim": str(a)}, "onnxruntime", [1], trials=1)
    assert main(["bench", str(a), "--baseline", str(tmp_path / "grey.onnx"), "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "baseline input shape (1,1,28,28) differs" in err and len(err.splitlines()) == 1
    monkeypatch.setitem(sys.modules, "onnx", None)  # a device without onnx: onnxruntime reads the shapes
    assert io_signature(tmp_path / "dyn.onnx") == {"inputs": [("input", [None, 3, 16, 16])],
                                                   "outputs": [("output", [None, 10])]}  # fmt: skip
    with pytest.raises(EdgeslimError, match=r"baseline input shape \(1,1,28,28\) differs"):
        check_comparable(tmp_path / "grey.onnx", a)


# ---------------------------------------------------------------------------- stale temporary files
_KILLED_WRITER = """
import os, signal, sys
from edgeslim.utils.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: no cleanup, no rename
"""
_SWEEP = """
import json, sys
from edgeslim.utils.tmpfiles import sweep_stale_tmp
print(json.dumps([p.name for p in sweep_stale_tmp(sys.argv[1], sys.argv[2])]))
"""


def test_sweep_stale_tmp_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    import os
    import time

    from edgeslim.utils.tmpfiles import sweep_stale_tmp

    target = tmp_path / "model.pt"
    r = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], capture_output=True, timeout=60)
    assert r.returncode == -9 and not target.exists()
    (left,) = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(".model.pt.edgeslim-") and left.endswith(".tmp")
    # decoys: other targets, look-alike names, a link and a directory matching the pattern
    other = tmp_path / "elsewhere.txt"
    other.write_text("keep")
    decoys = [
        ".model.pt.tmp",
        ".model.pt.abc.tmp.bak",
        ".other.pt.abc123.tmp",
        ".modelXpt.abc123.tmp",
        ".model.pt.abcdefgh.tmp",  # a user's own file named like mkstemp's (the session-25 leftover)
        ".model.pt.edgeslim-abc.tmp",
        "model.pt",
    ]
    for n in decoys:
        (tmp_path / n).write_text("keep")
    (tmp_path / ".model.pt.edgeslim-link0001.tmp").symlink_to(other)
    (tmp_path / ".model.pt.edgeslim-dir00001.tmp").mkdir()
    old = time.time() - 60
    for p in tmp_path.iterdir():
        os.utime(p, (old, old), follow_symlinks=False)
    # a new run (a fresh process) removes exactly the stale leftover
    r = subprocess.run([sys.executable, "-c", _SWEEP, str(tmp_path), "model.pt"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [left]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(
        [*decoys, "elsewhere.txt", ".model.pt.edgeslim-link0001.tmp", ".model.pt.edgeslim-dir00001.tmp"]
    )
    assert other.read_text() == "keep"
    assert sweep_stale_tmp(tmp_path / "missing", "model.pt") == []


def test_sweep_stale_tmp_spares_recent_and_locked_files(tmp_path: Path) -> None:
    import fcntl
    import os
    import time

    from edgeslim.utils.tmpfiles import process_start_time, sweep_stale_tmp

    t0 = time.time()
    code = "from edgeslim.utils.tmpfiles import process_start_time as t; print(t())"
    started = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert t0 - 1.0 <= started <= time.time() and process_start_time() < t0
    recent = tmp_path / ".run.json.edgeslim-recent01.tmp"
    recent.write_text("{}")  # written by this process, after it started
    assert sweep_stale_tmp(tmp_path, "run.json") == [] and recent.exists()
    locked = tmp_path / ".run.json.edgeslim-locked01.tmp"
    locked.write_text("{}")
    with open(locked) as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # a live writer protecting its file
        removed = sweep_stale_tmp(tmp_path, "run.json", older_than=time.time() + 5)
        assert removed == [recent] and locked.exists()
    assert sweep_stale_tmp(tmp_path, "run.json", older_than=time.time() + 5) == [locked]
    # a dead writer's file from after this process started (a run restarted at once after a kill): swept
    # once it is STALE_AFTER_S old and unlocked (a review: it stayed for ever, a 25 MB checkpoint)
    dead = tmp_path / ".run.json.edgeslim-deadwrt1.tmp"
    dead.write_text("{}")
    time.sleep(max(0.0, process_start_time() + 6.5 - time.time()))  # (a test worker that started just now)
    then = time.time() - 6
    os.utime(dead, (then, then))
    assert then > process_start_time() and sweep_stale_tmp(tmp_path, "run.json") == [dead]


# ---------------------------------------------------------------------------- sniffing model files
def test_sniff_real_files(tmp_path: Path) -> None:
    """Every kind from a real file; nothing is unpickled (a pickle that would run code on load is
    sniffed as legacy without running)."""
    import os
    import pickle
    import random

    import torch
    from torch import nn

    from edgeslim.export.ort_mobile import convert_to_ort
    from edgeslim.utils.sniff import KINDS, sniff

    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    noise = random.Random(0).randbytes(4096)  # fixed: starts with no magic number, holds NUL bytes
    files = {
        "state.pt": ("torch", lambda p: torch.save({"state_dict": m.state_dict(), "epoch": 3}, p)),
        "whole.pt": ("torch", lambda p: torch.save(m, p)),
        "script.pt": ("torchscript", lambda p: torch.jit.save(torch.jit.script(m), p)),
        "prog.pt2": ("torch-export", lambda p: torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 8, 8),)), p)),
        "legacy.pt": ("legacy", lambda p: torch.save({"a": 1}, p, _use_new_zipfile_serialization=False)),
        "model.onnx": ("onnx", lambda p: _onnx(Path(p))),
        "empty.pt": ("empty", lambda p: Path(p).write_bytes(b"")),
        "notes.txt": ("text", lambda p: Path(p).write_text("arch: vgg-small\nnote: ünïcode ✓\n")),
        "report.json": ("text", lambda p: Path(p).write_text(json.dumps({"metric": "latency", "x": [1, 2]}))),
                "img.png": ("png", lambda p: Path(p).write_bytes(_small_png())),
        "img.jpg": ("jpeg", lambda p: __import__("PIL.Image").Image.new("RGB", (8, 8)).save(p)),
        "ftrt.txt": ("text", lambda p: Path(p).write_text("ftrt is not an engine when it is text\n")),
        "random.bin": ("unknown", lambda p: Path(p).write_bytes(noise)),
        "plain.zip": ("zip", lambda p: zipfile.ZipFile(p, "w").writestr("a/readme.txt", "hi")),
        "fake.onnx": ("unknown", lambda p: Path(p).write_bytes(b"\x08\x07\x12\x05hello" + noise[:64])),
        "engine.plan": ("tensorrt-engine", lambda p: Path(p).write_bytes(b"ftrt\xe8\x00\x00\x00" + noise[:60])),
        # (phone/ARM review: an .ort file had no kind; the ORT flatbuffer's identifier is at bytes 4..8)
        "model.ort": ("ort", lambda p: convert_to_ort(tmp_path / "model.onnx", p, target_platform="amd64")),
        "ortm.txt": ("text", lambda p: Path(p).write_text("abcdORTM is text, not an ORT model\n")),
    }  # fmt: skip
    for name, (kind, make) in files.items():
        make(str(tmp_path / name))
        assert kind in KINDS and sniff(tmp_path / name) == kind, name

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil(), protocol=4))
    assert sniff(tmp_path / "evil.pkl") == "legacy" and not (tmp_path / "pwned").exists()
    evil_zip = tmp_path / "evil.pt"  # torch.save layout around that pickle
    with zipfile.ZipFile(evil_zip, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil()))
        z.writestr("evil/version", "3\n")
    assert sniff(evil_zip) == "torch" and not (tmp_path / "pwned").exists()
    onnx_bytes = (tmp_path / "model.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(onnx_bytes[:-7])  # truncated: the last field overruns the file
    assert sniff(tmp_path / "cut.onnx") == "unknown"
    (tmp_path / "padded.onnx").write_bytes(onnx_bytes + noise[:16])  # trailing bytes: not one ModelProto
    assert sniff(tmp_path / "padded.onnx") == "unknown"


def test_bench_refuses_torch_models_of_different_shapes_after_the_first_trial(tmp_path: Path) -> None:
    """Model files that carry no readable signature are checked on what their measuring processes
    fed and got back: same batch, different shapes -> refused after the first trial."""
    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.timing import TimingConfig
    from edgeslim.checkpoint import save_model
    from edgeslim.models.registry import ModelSpec, create_model

    paths = {}
    for name, ch, hw in (("grey", 1, 28), ("rgb", 3, 32)):
        spec = ModelSpec(arch="vgg-small", num_classes=10, in_channels=ch, input_size=[hw, hw])
        paths[name] = str(save_model(tmp_path / f"{name}.pt", create_model(spec), spec))
    fast = TimingConfig(warmup_s=0, warmup_iters=1, min_iters=3, min_time_s=0, max_time_s=5)
    common = {"backend": "torch", "batches": [2], "trials": 2, "timing": fast, "options": {"threads": 1},
              "tegrastats": False}  # fmt: skip
    seen: list[str] = []
    with pytest.raises(
        EdgeslimError, match=r"baseline input shape \(2,1,28,28\) differs from the model's \(2,3,32,32\)"
    ):
        run_comparison({"baseline": paths["grey"], "slim": paths["rgb"]}, on_trial=lambda t, lab, r: seen.append(lab),
                       **common)  # fmt: skip
    assert seen == ["baseline"]  # refused as soon as both had run once, not after every trial
    rec = run_comparison({"baseline": paths["rgb"], "slim": paths["rgb"]}, **{**common, "trials": 1})
    assert rec["trials"][0]["io"] == {"batch": 2, "inputs": [[2, 3, 32, 32]], "outputs": [[2, 10]]}


def test_an_input_shape_whose_forward_cannot_fit_is_one_line(monkeypatch, capsys) -> None:
    """``info vgg-small --input-shape 64,8192,8192`` (inside the shape limits) took ~24 GB and was
    killed by the system without a word (from the docs audit). An input of 256 MiB or more is first
    run on meta tensors: the largest input + output of one layer is compared with the free memory
    (here made 1 GB, so the test does not depend on the machine)."""
    import torch

    from edgeslim.bench import memory
    from edgeslim.cli import main
    from edgeslim.pipelines.source import check_forward_fits

    monkeypatch.setattr(memory, "available_mib", lambda: 1024.0)
    assert main(["info", "vgg-small", "--input-shape", "3,6000,6000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the model at input shape 3,6000,6000 needs at least 8.6 GB at once (layer ")
    assert err.endswith("more than the 1.0 GB free on this machine; give a smaller --input-shape"), err
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    # the input alone too big: refused whether or not the model runs on meta tensors (the review)
    with pytest.raises(EdgeslimError, match=r"an input of shape 8,10000,10000 takes 3.0 GB by itself"):
        check_forward_fits(model, (8, 10000, 10000))
    check_forward_fits(model, (3, 64, 64))  # a small input: not even run
    monkeypatch.setattr(memory, "available_mib", lambda: 64 * 1024.0)
    check_forward_fits(model, (3, 6000, 6000))  # 1.5 GB at once fits in 64 GB
    assert all(p.device.type == "cpu" for p in model.parameters())  # the user's model is untouched


FULL_DISK = """
import resource, signal, sys
from edgeslim.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.exit(main(["prune", "vgg-small", "-o", sys.argv[1]]))
"""


def test_a_checkpoint_write_that_fails_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """An automation trial on a full tmpfs: torch's zip writer raised RuntimeError ('unexpected pos'),
    which came out as an internal error, exit 1. Now one line naming the file, exit 2, no temp file."""
    out = tmp_path / "m.pt"
    env = {"PATH": "/usr/bin:/bin", "EDGESLIM_NO_PROGRESS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(out)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "writing the checkpoint failed" in lines[0] and f"({out})" in lines[0], lines
    assert "internal error" not in lines[0] and list(tmp_path.iterdir()) == []


def test_the_same_checkpoint_gives_the_same_bytes(tmp_path: Path) -> None:
    """An automation trial: two identical seeded runs wrote different model.pt bytes (the zip held the
    temporary file's name), so content-hash caches (DVC) saw a change every run."""
    import torch

    from edgeslim.checkpoint import save_checkpoint

    ckpt = {"state_dict": {"w": torch.arange(6.0)}, "note": "x"}
    a, b = save_checkpoint(tmp_path / "a.pt", ckpt), save_checkpoint(tmp_path / "sub" / "b.pt", ckpt)
    assert a.read_bytes() == b.read_bytes()
    assert torch.load(a, weights_only=True)["note"] == "x"


def test_a_checkpoints_model_arguments_load_no_weights_and_unknown_ones_are_one_line(tmp_path: Path) -> None:
    """A security re-read: a checkpoint's spec kwargs went to timm and torchvision as they were
    (`checkpoint_path` made timm open a file the checkpoint named; `weights_backbone` a download),
    and an argument the architecture does not take was a TypeError traceback."""
    from edgeslim.checkpoint import load_model, save_model
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec

    model = create_model(ModelSpec("vgg-small", 10, 1, (28, 28)))
    for arch, kwargs, needle in (
        (
            "timm:resnet18",
            {"checkpoint_path": str(tmp_path / "other.pt")},
            "name weights to load or download",
        ),
        ("tv:resnet18", {"weights": "DEFAULT"}, "(weights)"),
        ("vgg-small", {"bogus": 1}, "does not take the model arguments ['bogus']"),
    ):
        spec = ModelSpec(arch, 10, 1, (28, 28), kwargs=kwargs)
        path = tmp_path / "m.pt"
        save_model(path, model, spec)
        with pytest.raises(EdgeslimError, match=re.escape(needle)):
            load_model(path)


def test_a_gzip_idx_file_is_inflated_only_as_far_as_its_header_says(tmp_path: Path) -> None:
    """A security re-read: gzip.decompress of a whole .gz IDX file had no size limit (a small file can
    inflate to any size). The header's size is checked first and the body read to it."""
    import gzip

    from edgeslim.data.idx import read_idx

    ok = tmp_path / "ok-idx1-ubyte.gz"
    ok.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([1, 2, 3])))
    assert read_idx(ok).tolist() == [1, 2, 3]
    huge = tmp_path / "huge-idx3-ubyte.gz"
    huge.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 100_000, 1000, 1000) + bytes(1000)))
    with pytest.raises(EdgeslimError, match=r"declares 100.0 GB of data .*re-download it"):
        read_idx(huge)
    wrap = tmp_path / "wrap-idx3-ubyte.gz"  # (numpy's int64 product of these wrapped to -2: a review)
    wrap.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 218934409, 11777599, 7154) + bytes(1000)))
    with pytest.raises(EdgeslimError, match="declares .* GB of data"):
        read_idx(wrap)
    long = tmp_path / "long-idx1-ubyte.gz"
    long.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 8, 1, 3) + bytes(10_000_000)))
    with pytest.raises(EdgeslimError, match=r"longer than its header says \(3 bytes\)"):
        read_idx(long)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"threads": -2}, "threads must be >= 1, got -2"),
        ({"seed": "a"}, "seed must be an integer, got 'a'"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"epochs": True}, "epochs must be an integer, got True"),
        ({"force": "yes"}, "force must be True or False"),
        ({"lr": float("inf")}, "lr must be a finite number"),
    ],
)
def test_a_python_request_is_checked_as_the_cli_checks_its_options(kw: dict, needle: str) -> None:
    """An automation trial: SlimRequest(epochs="3") was a TypeError from deep inside, threads=-2 a
    RuntimeError from torch, epochs=0 loaded 60,000 images and then failed on the phases."""
    from edgeslim.pipelines.slim import SlimRequest

    with pytest.raises(EdgeslimError, match=re.escape(needle)) as info:
        SlimRequest(out_dir=Path("run"), model="vgg-small", **kw)
    assert info.value.params == (next(iter(kw)),)
    ok = SlimRequest(
        out_dir="run", model="vgg-small", lr=1, image_size=[32, 32], prox_warmup="10%", shrink=0.5
    )
    assert ok.lr == 1

    # what a Python caller passes and the code after takes (a review): path objects for names, numpy numbers,
    # resume=True for the run in out_dir
    import numpy as np

    from edgeslim.pipelines.train import TrainRequest

    ok = SlimRequest(
        out_dir="run", model=Path("m.pt"), data_name=Path("c.yaml"), epochs=np.int64(3), lr=np.float32(1)
    )
    assert (ok.model, ok.data_name, type(ok.epochs), type(ok.lr)) == ("m.pt", "c.yaml", int, float)
    assert TrainRequest(out_dir="run", resume=True).resume is True


@pytest.mark.parametrize("device", ["cuda:\u00b2", "cuda:\u0663", "cuda:1\u00b9"])
def test_a_device_index_is_ascii_digits(device: str, tmp_path: Path) -> None:
    """Review of today's code (nc report, finding 3): parse_device took "cuda:" + str.isdigit(), true for
    '\u00b2' and '\u0663': TrainRequest(device="cuda:\u0663") and `slim --device cuda:\u00b2` were accepted,
    then torch's raw RuntimeError "Invalid device string". Only ASCII digits are an index now."""
    from edgeslim.pipelines.train import TrainRequest
    from edgeslim.utils.parsing import parse_device

    assert parse_device(device) is None and parse_device(" CUDA:12 ") == "cuda:12"
    with pytest.raises(EdgeslimError, match=re.escape(f"device {device!r} is not a device")) as info:
        TrainRequest(out_dir=tmp_path / "run", device=device)
    assert info.value.params == ("device",)


def test_an_image_size_is_two_sides_or_one(tmp_path: Path) -> None:
    """Review of today's code (nc report, finding 8): tuple fields' lengths were not checked:
    TrainRequest(data_name="imagefolder", image_size=(32,)) was a raw IndexError in the reader, and
    image_size=(16, 16, 16) was taken and trained at 16x16. A fixed-length field is refused at another
    length in one line; one side S is S x S, as the CLI takes --image-size 224."""
    from edgeslim.pipelines.slim import SlimRequest
    from edgeslim.pipelines.train import TrainRequest

    for bad in ((32,), (16, 16, 16), []):
        with pytest.raises(
            EdgeslimError,
            match=re.escape(f"image_size is (H, W), or one side S for S x S; got {tuple(bad)!r}"),
        ) as info:
            TrainRequest(out_dir=tmp_path / "run", data_name="imagefolder", image_size=bad)
        assert info.value.params == ("image_size",)
    assert TrainRequest(out_dir=tmp_path / "run", image_size=24).image_size == (24, 24)
    slim = SlimRequest(out_dir=tmp_path / "run", model="vgg-small", image_size=[24, 16])
    assert slim.image_size == (24, 16)


def test_numpy_items_of_a_tuple_field_are_plain_numbers(tmp_path: Path) -> None:
    """Review of today's code (nc report, finding 5): BenchRequest(batches=(np.int64(1), np.int64(8))) was
    accepted, then measure() refused it: "batches must be a non-empty list of integers >= 1, got
    [np.int64(1), np.int64(8)]" (items were checked, not converted as a scalar field's numpy number is).
    A tuple field's items are Python's own numbers once the request is built."""
    import numpy as np

    from edgeslim.bench.compare import run_comparison
    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.models import create_model
    from edgeslim.pipelines.bench import BenchRequest, timing
    from edgeslim.pipelines.slim import SlimRequest

    onnx = export_onnx(
        create_model("vgg-small", in_channels=1),
        tmp_path / "v.onnx",
        (1, 28, 28),
        validate=False,
        dynamic_batch=True,
    )
    req = BenchRequest(str(onnx.path), batches=(np.int64(1), np.int64(2)), trials=1, threads=1, min_iters=2,
                       min_time=0.0, warmup=0.0, plots=False)  # fmt: skip
    assert req.batches == (1, 2) and {type(b) for b in req.batches} == {int}
    record = run_comparison(
        {"model": req.model}, "onnxruntime", list(req.batches), 1, timing(req), {"threads": 1}
    )
    assert record["batches"] == [1, 2]
    mean = SlimRequest(
        out_dir=tmp_path / "r", model="vgg-small", mean=[np.float32(0.5)], std=[np.float32(0.25)]
    )
    assert (type(mean.mean[0]), type(mean.std[0])) == (float, float)


@pytest.mark.parametrize(
    ("cls", "kw", "needle"),
    [
        ("slim", {"device": "tpu"}, "device 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
        ("slim", {"device": "cuda:abc"}, "device 'cuda:abc' is not a device"),
        ("slim", {"device": "mps"}, "device 'mps' is not a device"),
        ("train", {"device": "tpu"}, "device 'tpu' is not a device"),
        ("bench", {"device": "tpu"}, "device 'tpu' is not a device"),
        ("slim", {"mean": ("a",), "std": (1.0,)}, "mean must be a tuple of numbers, got ('a',)"),
        ("slim", {"std": (float("nan"),)}, "std must hold finite numbers"),
        ("train", {"milestones": (0.5, "x")}, "milestones must be a tuple of numbers"),
        ("slim", {"image_size": (32, True)}, "image_size must be a tuple of integers"),
    ],
)
def test_a_requests_devices_and_tuple_items_are_checked_as_it_is_built(
    cls: str, kw: dict, needle: str, tmp_path: Path
) -> None:
    """API review, finding 3: device "CPU", "tpu", "cuda:abc" (raw RuntimeErrors from torch.device) and
    "mps" (a failure in module.py), mean=("a",) (a TypeError in source.py) were not checked in Python as
    the CLI checks them; an ExportRequest's engine_path given as a string was an AttributeError
    ('str' object has no attribute 'with_name') even without trt. Each is one line naming the field; a
    device is taken in any case, as the CLI takes it; a string for a Path field is a Path."""
    from edgeslim.export.pipeline import ExportRequest
    from edgeslim.pipelines import export
    from edgeslim.pipelines.bench import BenchRequest
    from edgeslim.pipelines.slim import SlimRequest
    from edgeslim.pipelines.train import TrainRequest

    make = {
        "slim": lambda **k: SlimRequest(out_dir=tmp_path / "run", model="vgg-small", **k),
        "train": lambda **k: TrainRequest(out_dir=tmp_path / "run", **k),
        "bench": lambda **k: BenchRequest("m.onnx", **k),
    }[cls]
    with pytest.raises(EdgeslimError, match=re.escape(needle)) as info:
        make(**kw)
    assert info.value.params == (next(iter(kw)),)
    assert make(device="CUDA:1").device == "cuda:1"
    if cls == "slim" and "mean" in kw:  # (once: an export with engine_path a string runs)
        engine = str(tmp_path / "m.engine")
        req = ExportRequest(
            onnx_path=tmp_path / "m.onnx", engine_path=engine, input_shape="1,28,28", n_validate=4
        )
        assert req.engine_path == Path(engine)
        assert Path(export.run("vgg-small", req, num_classes=10)["onnx"]["path"]).is_file()


@pytest.mark.parametrize(
    ("kw", "built"),
    [
        ({"target_macs": "abc"}, False),
        ({"target_macs": "1.5"}, False),
        ({"profile": "nope"}, False),
        ({"penalty": "nope"}, True),
        ({"data_name": "nope"}, True),
        ({"model": "nope"}, True),
        ({"prox_warmup": 2.0}, True),
        ({"target_macs": "1"}, False),
        ({"target_macs": "150%"}, False),
        ({"target_params": "1.0"}, False),
        ({"target_macs": "1e400"}, False),
        ({"profile": "BAD_YAML"}, False),
        ({"target_macs": "1k"}, True),
        ({"target_latency": "0.5", "latency_table": "nofile.json"}, True),
        ({"weights": "NESTED"}, True),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_a_slim_request_refusal_names_the_request_field(kw: dict, built: bool, tmp_path: Path) -> None:
    """The docs review: README says a request checks its values as it is built and its refusals name
    the fields; target_macs 'abc' / '1.5' and profile 'nope' were built and refused by run() with
    params (), as were penalty, data_name and model 'nope'. The torch-free checks now run as the
    request is built; the rest (registries that need PyTorch, phases against the steps) at run(),
    before any file is written, all naming the field. A review of the day's new code (finding 4): a
    profile YAML that does not parse, target_macs '1'/'150%' (the dense model: built, refused by run),
    '1k' (unreachable), a latency_table that is not there and weights nesting their state_dict deeper
    were refused with params (); '1e400' was "must be > 0" (it is infinite)."""
    from edgeslim.pipelines.slim import SlimRequest, run

    out = tmp_path / "run"
    if kw.get("profile") == "BAD_YAML":
        (tmp_path / "bad.yaml").write_text("name: x\nkind: [\n")
        kw = {"profile": str(tmp_path / "bad.yaml")}
    if kw.get("weights") == "NESTED":
        import torch

        torch.save({"checkpoint": {"model": {"conv.weight": torch.zeros(2)}}}, tmp_path / "nested.pt")
        kw = {"weights": str(tmp_path / "nested.pt")}
    if "latency_table" in kw:
        kw = {**kw, "latency_table": str(tmp_path / "nofile.json")}
    base = {"out_dir": out, "model": "vgg-small", "data_name": "digits", "subset": 64, "test_subset": 32}
    with pytest.raises(EdgeslimError) as info:
        run(SlimRequest(**{**base, "epochs": 1, **kw}))
    assert info.value.params[:1] == (list(kw)[-1],), (str(info.value), info.value.params)
    assert kw.get("target_macs") != "1e400" or "infinite" in str(info.value)
    if built:
        SlimRequest(**{**base, **kw})
    else:
        with pytest.raises(EdgeslimError):
            SlimRequest(**{**base, **kw})
    assert not out.exists()


def test_json_outputs_hold_no_nan_or_infinity() -> None:
    """An automation trial: to_jsonable turned NaN into null but left +-inf (and a numpy NaN), which
    json.dumps writes as Infinity / NaN, which strict JSON readers refuse."""
    import numpy as np

    from edgeslim.utils.io import to_jsonable

    got = to_jsonable(
        {"a": float("inf"), "b": -float("inf"), "c": np.float64("nan"), "d": np.array([1.0, np.inf])}
    )
    assert got == {"a": None, "b": None, "c": None, "d": [1.0, None]}
    json.loads(json.dumps(got), parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))


def test_a_failure_under_json_prints_an_error_document(tmp_path: Path, capsys) -> None:
    """An automation trial: under --json a failure printed nothing on stdout, so a script could not
    tell a refusal from a crash without parsing stderr. Now one error document, beside the one line."""
    from edgeslim.cli import main

    for args, code, kind in (
        (["info", "no-such-arch", "--json"], 2, "EdgeslimError"),
        (
            ["prune", "vgg-small", "-o", str(tmp_path / "m.pt"), "--round-to", "0", "--json"],
            2,
            "BadParameter",
        ),
    ):
        assert main(args) == code
        got = capsys.readouterr()
        doc = json.loads(got.out)["error"]
        assert doc["exit_code"] == code and doc["kind"] == kind, doc
        assert len(got.err.strip().splitlines()) == 1 and doc["message"] in got.err.replace("error: ", "")
    assert (
        main(["info", "no-such-arch"]) == 2 and capsys.readouterr().out == ""
    )  # (no --json: stdout stays empty)


def test_writing_never_leaves_a_set_of_outputs_part_old_part_new(tmp_path: Path) -> None:
    """An interrupt probe: an export --force stopped half-way left slim.onnx new and slim.int8.ort an
    earlier model's, which bench then compared; the INT8 review (finding 1): a forced export failing at
    its INT8 step replaced the ONNX and removed the earlier INT8 file. The set is staged and published
    whole when the block ends, or not at all: refused, failing or stopped, every earlier file stays."""
    from edgeslim.utils.io import atomic_write_text, writing
    from edgeslim.utils.tmpfiles import STAGE_PREFIX, mark_stage

    a, b, mine, extra = (
        tmp_path / "m.onnx",
        tmp_path / "m.int8.ort",
        tmp_path / "notes.txt",
        tmp_path / "m.w50.onnx",
    )
    for p in (a, b, mine, extra):
        p.write_text("old")

    def names() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir())

    for stop in (EdgeslimError("data_dir does not exist"), RuntimeError("INT8 failed"), KeyboardInterrupt()):
        with pytest.raises(type(stop)):
            with writing([a, b], replace=True) as stage:
                atomic_write_text(stage(a), "new")
                assert a.read_text() == "old" and stage(a).read_text() == "new"  # (read back staged)
                raise stop
        assert a.read_text() == b.read_text() == "old" and len(names()) == 4, names()
    with pytest.raises(EdgeslimError, match=r"^cannot read m.onnx at .*/m.onnx$"):  # (named as published)
        with writing([a], replace=True) as stage:
            raise EdgeslimError(f"cannot read {stage(a).name} at {stage(a)}")
    with writing([a, b], replace=True) as stage:  # finished: its own files, the earlier set's others go
        atomic_write_text(stage(a), "newer")
        stage.drop(extra)
        assert stage.final({"path": str(stage(a))}) == {"path": str(a)}
    assert names() == ["m.onnx", "notes.txt"] and a.read_text() == "newer" and mine.read_text() == "old"
    (tmp_path / f"{STAGE_PREFIX}k1ll3d00").mkdir()  # a killed run's, unlocked and older than this process
    (tmp_path / f"{STAGE_PREFIX}k1ll3d00" / "m.onnx").write_text("half")
    mark_stage(tmp_path / f"{STAGE_PREFIX}k1ll3d00")  # (edgeslim's: marked; an unmarked one is a user's)
    os.utime(tmp_path / f"{STAGE_PREFIX}k1ll3d00", (0, 0))
    with writing([a], replace=True) as stage:
        atomic_write_text(stage(a), "newest")
    assert names() == ["m.onnx", "notes.txt"] and a.read_text() == "newest"


def test_writing_removes_the_folders_it_made_when_stopped(tmp_path: Path) -> None:
    """An interrupt probe: export and prune stopped early left the empty output folder they made."""
    from edgeslim.utils.io import check_output_path, writing

    target = tmp_path / "new" / "deeper" / "m.onnx"
    with pytest.raises(KeyboardInterrupt):
        with writing([target]):
            check_output_path(target)  # (makes the folders)
            assert target.parent.is_dir()
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):  # a folder that was there, or that got a file, stays
        with writing([tmp_path / "kept" / "m.onnx", tmp_path / "new" / "m.onnx"]):
            check_output_path(tmp_path / "new" / "m.onnx")
            (tmp_path / "new" / "notes.txt").write_text("mine")
            raise KeyboardInterrupt
    assert (tmp_path / "kept").is_dir() and (tmp_path / "new" / "notes.txt").is_file()


def test_writing_claims_each_file_against_a_second_run(tmp_path: Path) -> None:
    """An interrupt probe: two exports to the same file at once both said "wrote", and one silently
    replaced the other (no lock on single output files). A claim refuses the second in one line; a
    killed run's claim (an unlocked lock file) does not block the next one."""
    from edgeslim.utils.io import writing

    out = tmp_path / "out" / "m.onnx"
    with writing([out, tmp_path / "m.png"]):
        assert (tmp_path / "out" / ".m.onnx.edgeslim.lock").is_file()
        with pytest.raises(EdgeslimError, match=rf"another edgeslim run \(pid {os.getpid()}\) is writing to {out}; "
                           "wait for it to finish or choose another output path"):  # fmt: skip
            with writing([out]):
                raise AssertionError("a second writer must not start")
        with writing([tmp_path / "other.onnx"]):  # another file of the folder: no conflict
            pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]  # (claims gone; the folder made: no error)
    (tmp_path / "out" / ".m.onnx.edgeslim.lock").write_text("4242")  # a killed run's, unlocked
    with writing([out]):
        pass
    assert not (tmp_path / "out" / ".m.onnx.edgeslim.lock").exists()


def test_the_install_hint_trusts_only_edgeslims_own_pyproject(tmp_path: Path) -> None:
    """A review of the day's new code (finding 8): install_hint took any pyproject.toml one folder above
    the package for edgeslim's source tree: edgeslim's package copied into another project's root got
    "pip install 'ROOT[plots]'", which installs that other project. Only a pyproject.toml naming the
    edgeslim project counts."""
    from edgeslim.errors import install_hint

    other, ours, broken = tmp_path / "robot", tmp_path / "clone", tmp_path / "broken"
    for root, text in ((other, '[project]\nname = "my-robot-app"\n[tool.x]\nname = "edgeslim"\n'),
                       (ours, '[build-system]\nrequires = []\n\n[project]\nname = "edgeslim"\nversion = "0.1"\n'),
                       (broken, "[project\nname = 'edgeslim'\n")):  # fmt: skip
        root.mkdir()
        (root / "pyproject.toml").write_text(text)
    assert install_hint("plots", ours) == f"pip install '{ours}[plots]'"
    for root in (other, broken, tmp_path / "none"):
        assert install_hint("plots", root).startswith(
            "pip install 'PATH[plots]' with PATH a clone of edgeslim's"
        )
    assert (
        install_hint("plots") == f"pip install '{Path(__file__).resolve().parents[1]}[plots]'"
    )  # (this tree)


def test_every_refusal_of_a_request_field_names_it(tmp_path: Path) -> None:
    """API review, finding 8: README says every refusal's params name the request fields, but slim's lam=-1,
    shrink=0, a penalty parameter (scad a=1) and schedule "foo", bench's batches (0,), nice=50,
    interval_ms=0 and backend "foo", export's workspace "lots" and prune's data "cifar11" were refused
    with params (); PruneRequest(calib=0) was "test_subset must be a positive number of images";
    BudgetSettings(target="2") named target_macs; ProximalSlimming(lam="0.1") was accepted."""
    import torch
    from torch import nn

    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.export.pipeline import ExportRequest
    from edgeslim.pipelines.bench import BenchRequest, measure
    from edgeslim.pipelines.prune import PruneRequest
    from edgeslim.pipelines.prune import run as prune
    from edgeslim.pipelines.slim import SlimRequest
    from edgeslim.pipelines.slim import run as slim
    from edgeslim.sparsity import ProximalSlimming
    from edgeslim.sparsity.budget import BudgetSettings

    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)
    ).eval()
    onnx = export_onnx(net, tmp_path / "m.onnx", (1, 8, 8), validate=False).path
    base = {"out_dir": tmp_path / "run", "model": "vgg-small", "data_name": "digits", "subset": 64,
            "test_subset": 32, "epochs": 1}  # fmt: skip
    fast = {"trials": 1, "min_iters": 3, "min_time": 0.01, "warmup": 0.01, "plots": False}
    cases = {
        "lam": lambda: slim(SlimRequest(**base, lam=-1.0)),
        "shrink": lambda: slim(SlimRequest(**base, shrink=0.0)),
        "a": lambda: slim(SlimRequest(**base, penalty="scad", a=1.0)),
        "schedule": lambda: slim(SlimRequest(**base, schedule="foo")),
        "calib": lambda: PruneRequest(model="vgg-small", output=tmp_path / "p.pt", calib=0),
        "data": lambda: prune(
            PruneRequest(
                model="vgg-small",
                output=tmp_path / "p.pt",
                data="cifar11",
                input_shape="3,32,32",
                num_classes=10,
            )
        ),  # fmt: skip
        "batches": lambda: measure(BenchRequest(str(onnx), batches=(0,), **fast)),
        "nice": lambda: measure(BenchRequest(str(onnx), nice=50, **fast)),
        "interval_ms": lambda: measure(BenchRequest(str(onnx), interval_ms=0, **fast)),
        "backend": lambda: measure(BenchRequest(str(onnx), backend="foo", **fast)),
        "workspace": lambda: ExportRequest(workspace="lots"),
        "target": lambda: BudgetSettings(metric="macs", target="2").validate(),
    }
    for field, refused in cases.items():
        with pytest.raises(EdgeslimError) as info:
            refused()
        assert info.value.params[:1] == (field,), (field, str(info.value), info.value.params)
    with pytest.raises(EdgeslimError, match="lam .* must be a number, got '0.1'") as info:
        ProximalSlimming(net, lam="0.1")
    assert info.value.params == ("lam",)
    assert ProximalSlimming(net, lam=torch.tensor(0.1)).lam == pytest.approx(0.1)
    assert not (tmp_path / "run").exists() and not (tmp_path / "p.pt").exists()
