"""No model file runs code unless the user trusts it (``--trust-pickle``), whatever its format.

Each crafted file below carries a payload that writes a marker file when unpickled. Every test
first proves the payload is live (the format's own loader, in a subprocess, runs it), then that
no edgeslim command that loads a model runs it without ``--trust-pickle``.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeslim.cli import main
from edgeslim.errors import EdgeslimError


class _Payload:
    """Unpickling this object runs ``exec``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return (exec, (self.code,))


def _payload_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker), protocol=2)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + torch.tensor(1.0)


def _export_archive(path: Path) -> None:
    ep = torch.export.export(_Tiny().eval(), (torch.randn(1, 3, 32, 32),))
    torch.export.save(ep, path)


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy the zip ``src`` to ``dst``, passing each (name, bytes) through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def _pickled_entry(config_suffix: str, payload_dir: str):
    """Mark the first payload of a weights/constants config as pickled and replace its bytes."""
    state: dict[str, str] = {}

    def edit(marker: Path):
        def fn(name: str, data: bytes) -> bytes:
            if name.endswith(config_suffix):
                cfg = json.loads(data)
                first = next(iter(cfg["config"].values()))
                first["use_pickle"] = True
                state["target"] = first["path_name"]
                return json.dumps(cfg).encode()
            return data

        return fn

    def payload(marker: Path):
        def fn(name: str, data: bytes) -> bytes:
            if name.endswith(f"{payload_dir}/{state['target']}"):
                return _payload_bytes(marker)
            return data

        return fn

    return edit, payload


def _craft(kind: str, tmp: Path, marker: Path) -> Path:
    """A model file of ``kind`` whose loading by its own loader runs the payload."""
    if kind == "whole-pickle":
        path = tmp / "whole.pt"
        path.write_bytes(_payload_bytes(marker))
        return path
    if kind == "torch-save-zip":  # a torch.save zip whose data.pkl holds the payload
        path = tmp / "evil.pt"
        buf = io.BytesIO()
        torch.save({"a": torch.zeros(1)}, buf)
        src = tmp / "plain.pt"
        src.write_bytes(buf.getvalue())
        _rewrite(src, path, lambda n, d: _payload_bytes(marker) if n.endswith("/data.pkl") else d)
        return path
    base = tmp / "base.pt2"
    _export_archive(base)
    path = tmp / f"{kind}.pt2"
    if kind == "export-sample-inputs":  # loaded with a weights_only=False fallback
        _rewrite(base, path, lambda n, d: _payload_bytes(marker) if "/sample_inputs/" in n else d)
    elif kind in ("export-weight", "export-constant"):
        sub = "weights" if kind == "export-weight" else "constants"
        edit, payload = _pickled_entry(f"_{sub}_config.json", f"data/{sub}")
        mid = tmp / "mid.pt2"
        _rewrite(base, mid, edit(marker))
        _rewrite(mid, path, payload(marker))
    else:
        raise ValueError(kind)
    return path


#: (kind, the loader that runs the payload when the file is trusted)
LIVE = {
    "whole-pickle": "torch.load(p, weights_only=False)",
    "torch-save-zip": "torch.load(p, weights_only=False)",
    "export-sample-inputs": "torch.export.load(p)",
    "export-weight": "torch.export.load(p)",
    "export-constant": "torch.export.load(p)",
}

#: every command that loads a model file, with the arguments that make it load ``{m}``
COMMANDS = [
    ["info", "{m}", "--input-shape", "3,32,32"],
    ["graph", "{m}", "--input-shape", "3,32,32"],
    ["prune", "{m}", "-o", "{tmp}/o.pt", "--input-shape", "3,32,32"],
    ["export", "{m}", "--onnx", "{tmp}/o.onnx", "--input-shape", "3,32,32"],
    ["bench", "{m}", "--backend", "torch", "--input-shape", "3,32,32", "--trials", "1", "--min-time", "0.01"],
    ["slim", "{m}", "--data", "digits", "--epochs", "1", "--out", "{tmp}/slim"],
    [
        "train",
        "--init",
        "{m}",
        "--arch",
        "vgg-small",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        "{tmp}/t",
    ],
]


@pytest.mark.parametrize("kind", list(LIVE))
def test_no_command_runs_a_payload_without_trust(kind, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = _craft(kind, tmp_path, marker)
    # The payload is live: the format's own loader runs it.
    code = f"import torch, warnings; warnings.simplefilter('ignore'); p = {str(path)!r}\ntry:\n {LIVE[kind]}\nexcept Exception:\n pass"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert marker.exists(), f"{kind}: the crafted payload did not run under {LIVE[kind]}"
    marker.unlink()
    for argv in COMMANDS:
        args = [a.format(m=path, tmp=tmp_path) for a in argv]
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert not marker.exists(), f"edgeslim {args[0]} ran the payload of a {kind} file"
        # a command that cannot use compiled code refuses a .pt2 for that, before trust is asked for
        expected = (
            COMPILED_REFUSAL[args[0]] if kind.startswith("export-") and args[0] in COMPILED_REFUSAL else None
        )
        assert (expected or "--trust-pickle") in err, (args[0], err)
        assert len(err.strip().splitlines()) == 1, err


def test_torchscript_needs_trust_in_every_command(tmp_path, capsys):
    ts = tmp_path / "m.ts"
    torch.jit.script(_Tiny().eval()).save(str(ts))
    for argv in COMMANDS:
        args = [a.format(m=ts, tmp=tmp_path) for a in argv]
        assert main(args) == 2, args
        assert COMPILED_REFUSAL.get(args[0], "TorchScript archive") in capsys.readouterr().err


#: commands that refuse compiled code (TorchScript, torch.export) for what it is, trusted or not
COMPILED_REFUSAL = {
    "graph": "the channel graph needs the Python model",
    "prune": "surgery needs the Python model",
    "slim": "cannot be trained (its code is compiled)",
}


def test_trusted_export_archive_still_loads(tmp_path):
    from edgeslim.checkpoint import load_model

    path = tmp_path / "ok.pt2"
    _export_archive(path)
    x = torch.randn(1, 3, 32, 32)
    loaded = load_model(path, trust_pickle=True)
    assert loaded.kind == "exported"
    assert torch.allclose(loaded.model(x), torch.export.load(path).module()(x))


#: every command that builds an architecture *name* (bench takes model files only); ``pickle:{m}``
#: names a file to unpickle
BY_NAME = [
    ["info", "pickle:{m}", "--input-shape", "3,32,32"],
    ["graph", "pickle:{m}", "--input-shape", "3,32,32"],
    ["prune", "pickle:{m}", "-o", "{tmp}/o.pt", "--input-shape", "3,32,32"],
    ["export", "pickle:{m}", "--onnx", "{tmp}/o.onnx", "--input-shape", "3,32,32"],
    ["slim", "pickle:{m}", "--data", "digits", "--epochs", "1", "--out", "{tmp}/slim"],
    ["train", "--arch", "pickle:{m}", "--data", "digits", "--epochs", "1", "--out", "{tmp}/t"],
]


def test_no_command_unpickles_a_named_file_without_trust(tmp_path, capsys):
    """``pickle:PATH`` as an architecture name is a file we are handed: the same rule as a model file
    (``train --arch pickle:PATH`` once unpickled it; the refusal now lives in ``create_model``)."""
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec

    marker = tmp_path / "marker"
    path = tmp_path / "payload.pt"
    path.write_bytes(_payload_bytes(marker))
    for argv in BY_NAME:
        args = [a.format(m=path, tmp=tmp_path) for a in argv]
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert not marker.exists(), f"edgeslim {args[0]} unpickled pickle:PATH without --trust-pickle"
        assert "--trust-pickle" in err and "unpickles" in err, (args[0], err)
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(Exception, match="trust_pickle=True"):
        create_model(ModelSpec(f"pickle:{path}"))
    assert not marker.exists()


def test_train_builds_a_trusted_pickled_model(tmp_path, capsys):
    """With ``--trust-pickle``, ``train --arch pickle:PATH`` trains the pickled module, and a resume
    of that run needs the same trust."""
    path = tmp_path / "tiny.pt"
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))  # fmt: skip
    torch.save(model, path)
    out = tmp_path / "run"
    base = ["train", "--arch", f"pickle:{path}", "--data", "digits", "--subset", "200", "--epochs", "1"]
    assert main([*base, "--out", str(out), "--trust-pickle", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["test_accuracy"] >= 0.0 and rep["params"] == sum(p.numel() for p in model.parameters())
    assert main(["train", "--resume", str(out / "model.pt"), "--out", str(tmp_path / "r")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err


def test_inputs_that_hang_or_explode_are_refused_or_skipped(tmp_path, capsys, monkeypatch) -> None:
    """A security probe: a 437-byte config of nested YAML aliases expanded until memory ran out; a FIFO
    named .png in an image folder, or named .yaml in EDGESLIM_PROFILES, blocked the run reading it; a
    profile file that is not UTF-8 broke every command (exit 1) once profiles were found by name."""
    import os

    import numpy as np
    from PIL import Image

    from edgeslim.channels.devices import list_profiles, load_profile
    from edgeslim.data.imagefolder import Tree

    bomb = tmp_path / "bomb.yaml"
    levels = ["l0: &l0 [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.write_text("\n".join(levels) + "\nmean: *l9\n")
    args = ["slim", "vgg-small", "--data", "digits", "--config", str(bomb), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "aliases (*name) are not allowed" in err and len(err.strip().splitlines()) == 1

    folder = tmp_path / "imgs" / "train" / "cat"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "zz.png")
    assert Tree(tmp_path / "imgs").files == ["train/cat/a.png"]  # (listed without opening the FIFO)

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    os.mkfifo(profiles / "fifo.yaml")
    (profiles / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    monkeypatch.setenv("EDGESLIM_PROFILES", str(profiles))
    assert load_profile("host-cpu").name == "host-cpu"  # the others still load
    with pytest.raises(EdgeslimError, match="latin.yaml is not text"):
        list_profiles()


def test_deep_json_and_encrypted_zip_members_are_one_line(tmp_path) -> None:
    """A security probe: a run.json nested thousands deep (RecursionError) and an encrypted zip member
    (zipfile's bare RuntimeError) ended as internal errors (exit 1)."""
    from edgeslim.data.imagefolder import _read_member
    from edgeslim.utils.io import read_json

    deep = tmp_path / "run.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EdgeslimError, match="nests its JSON too deep"):
        read_json(deep)
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("train/a/x.png", b"123")
    raw = bytearray(zpath.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # mark the member encrypted in both headers
        i = raw.find(sig)
        flags_at = i + (6 if sig == b"PK\x03\x04" else 8)
        raw[flags_at] |= 0x1
    zpath.write_bytes(bytes(raw))
    with zipfile.ZipFile(zpath) as z, pytest.raises(EdgeslimError, match="is encrypted"):
        _read_member(z, "train/a/x.png")


def test_names_from_files_cannot_send_terminal_control_sequences(tmp_path, capsys) -> None:
    """A security probe: a zip member or run.json label holding ESC ] 0 ; ... (retitle the terminal) or
    ESC [ 31 m was printed with its escape bytes, in errors, warnings and tables."""
    from edgeslim.utils.console import _Console, table

    name = tmp_path / "x\x1b]0;pwned\x07\x1b[31m.pt"
    assert main(["info", str(name)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "x.pt does not exist" in err and len(err.strip().splitlines()) == 1
    buf = io.StringIO()
    console = _Console(file=buf, force_terminal=False, width=120)
    console.print("warning: \x1b]2;title\x1b\\\x1b[2Jcleared")
    console.print(table("t\x1b[31m", ["model"], [["slim\x1b]0;x\x07"]]))
    assert "\x1b" not in buf.getvalue() and "cleared" in buf.getvalue() and "slim" in buf.getvalue()


def test_train_resume_names_a_refused_pickle_and_takes_a_run_folder(tmp_path, capsys) -> None:
    """A security probe: train --resume evil.pt (a pickle whose loading would run code) said "is it
    truncated?", and train --resume DIR said the checkpoint DIR does not exist."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_payload_bytes(marker))
    base = ["train", "--arch", "vgg-small", "--data", "digits", "--out", str(tmp_path / "o")]
    assert main([*base, "--resume", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "would run code when loaded, so it is refused" in err and not marker.exists()
    empty = tmp_path / "run"
    empty.mkdir()
    assert main([*base, "--resume", str(empty)]) == 2
    assert "is a folder without a model.pt" in capsys.readouterr().err
