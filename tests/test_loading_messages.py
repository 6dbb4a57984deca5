"""Model loading from the user's side: their own code from the current directory, whole pickles,
TorchScript, torch.export programs and broken files each work or end in ONE line (exit code 2)
that names the problem and the fix, with CLI flags (not Python parameter names) on the CLI."""

from __future__ import annotations

import json
import os
import sys
import uuid
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from edgeslim.checkpoint import load_model, make_checkpoint, save_checkpoint
from edgeslim.cli import main
from edgeslim.errors import EdgeslimError
from edgeslim.models import ModelSpec, create_model

NET = """
import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
"""
BENCH_FAST = ["--trials", "1", "--min-iters", "3", "--min-time", "0.01", "--warmup", "0.01", "--threads", "1"]


def one_line_error(capsys, argv: list, *needles: str) -> str:
    """Run the CLI, expect exit code 2 and one line on stderr holding every needle."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, err)
    assert len(err.splitlines()) == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module name with MyNet in ``tmp_path/code/<name>.py`` (removed from sys.modules after)."""
    name = f"mynet_{uuid.uuid4().hex[:8]}"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{name}.py").write_text(NET)
    yield name, code
    sys.modules.pop(name, None)


def run(*argv) -> int:
    return main([str(a) for a in argv])


def _import_from(directory: Path, name: str):
    sys.path.insert(0, str(directory))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(directory))


# ------------------------------------------------------------------ 1. the current directory


def test_module_factory_imports_from_the_current_directory(user_module, monkeypatch, capsys):
    name, code = user_module
    assert str(code) not in sys.path
    monkeypatch.chdir(code)  # what `cd code && edgeslim info mynet:MyNet` does (no PYTHONPATH)
    assert main(["info", f"{name}:MyNet", "--input-shape", "3,16,16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["params"] == sum(p.numel() for p in sys.modules[name].MyNet().parameters())
    assert str(code) not in sys.path  # only while importing


def test_a_factory_that_downloads_weights_is_told_how_not_to(tmp_path, monkeypatch, capsys):
    """A user's factory calling torchvision's segmentation builder with its default
    ``weights_backbone`` downloads ImageNet weights; offline that is one line saying so and how to
    build without them (it said "free space or memory, or fix the permissions")."""
    name = f"dl_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import urllib.error\n"
        "def net(num_classes=10):\n"
        "    raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')\n"
    )
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["info", f"{name}:net", "--input-shape", "3,16,16"], "a download failed",
                   "weights_backbone=None", "pretrained=False")  # fmt: skip


def test_prune_of_a_module_factory_says_its_checkpoint_needs_trust(
    user_module, tmp_path, monkeypatch, capsys
):
    """A slim checkpoint of ``package.module:Factory`` rebuilds with that code, so loading it needs
    --trust-pickle: prune's next step says so (its hint left the flag out, and the command failed)."""
    name, code = user_module
    monkeypatch.chdir(code)
    slim = tmp_path / "s.pt"
    assert main(["prune", f"{name}:MyNet", "--input-shape", "3,16,16", "-o", str(slim)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"next: edgeslim export {slim} --trust-pickle" in err
    assert main(["info", str(slim), "--trust-pickle", "--json"]) == 0  # the hint works


def test_own_code_and_pickles_named_without_an_input_size_are_asked_for_one(
    user_module, tmp_path, monkeypatch, capsys
):
    """`prune mynet:build` without --input-shape assumed 3,32,32 silently: the MACs, the slim
    checkpoint and its export were for 32x32 where a trial's UNet ran at 64x64."""
    name, code = user_module
    monkeypatch.chdir(code)
    out = tmp_path / "s.pt"
    one_line_error(
        capsys, ["prune", f"{name}:MyNet", "-o", out], "records no input size", "--input-shape C,H,W"
    )
    assert not out.exists()
    whole = tmp_path / "whole.pt"
    torch.save(_import_from(code, name).MyNet(), whole)
    one_line_error(capsys, ["info", f"pickle:{whole}", "--trust-pickle"], "records no input size")
    assert main(["info", f"pickle:{whole}", "--trust-pickle", "--input-shape", "3,16,16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [3, 16, 16]


def test_module_factory_errors_say_what_is_missing(user_module, tmp_path, monkeypatch, capsys):
    name, code = user_module
    monkeypatch.chdir(tmp_path)  # not the directory that holds it
    one_line_error(capsys, ["info", f"{name}:MyNet"], f"cannot import '{name}'", str(tmp_path),
                   f"run from the directory that holds {name}.py", "PYTHONPATH")  # fmt: skip
    dep = f"needs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{dep}.py").write_text("import no_such_dependency_xyz\n")
    one_line_error(
        capsys, ["info", f"{dep}:Net"], "it imports 'no_such_dependency_xyz', which is not installed"
    )
    bad = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{bad}.py").write_text("def oops(:\n")
    one_line_error(capsys, ["info", f"{bad}:Net"], f"importing '{bad}'", "SyntaxError", "fix that module")
    for mod in (dep, bad):
        sys.modules.pop(mod, None)


def test_whole_pickle_of_a_user_class(user_module, tmp_path, monkeypatch, capsys):
    name, code = user_module
    whole = tmp_path / "whole.pt"
    torch.save(_import_from(code, name).MyNet().eval(), whole)
    sys.modules.pop(name, None)
    monkeypatch.chdir(code)
    assert run("info", whole, "--trust-pickle", "--input-shape", "3,16,16", "--json") == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "pickle"
    sys.modules.pop(name, None)
    monkeypatch.chdir(tmp_path)  # mynet.py is not here
    err = one_line_error(capsys, ["info", whole, "--trust-pickle"], f"module '{name}'",
                         f"run from the directory that holds {name}.py", "PYTHONPATH",
                         "model.state_dict()", "--weights")  # fmt: skip
    assert "weights=FILE" not in err.replace("--weights=FILE", "")
    # the Python API names the parameter, not the flag
    with pytest.raises(EdgeslimError, match=r"weights=FILE") as info:
        load_model(whole, trust_pickle=True)
    assert info.value.params == ("weights",)


def test_pickle_of_a_class_from_main(tmp_path, monkeypatch, capsys):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    Local.__module__, Local.__qualname__ = "__main__", "Local"
    monkeypatch.setattr(sys.modules["__main__"], "Local", Local, raising=False)
    path = tmp_path / "local.pt"
    torch.save(Local(), path)
    monkeypatch.delattr(sys.modules["__main__"], "Local")  # a later run of another script
    one_line_error(capsys, ["info", path, "--trust-pickle"], "class 'Local'", "script's __main__",
                   "model.state_dict()", "mynet:Local", "--weights")  # fmt: skip


def test_pickle_from_a_script_read_by_python_m_edgeslim(tmp_path):
    """``python -m edgeslim`` runs as the module ``edgeslim.__main__``: a class pickled from the
    user's script is still named as one from a script's ``__main__`` (it was reported as a class
    that ``edgeslim.__main__`` no longer defines)."""
    import subprocess

    script = tmp_path / "train.py"
    script.write_text(NET + "\ntorch.save(MyNet(), 'whole.pt')\n")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "edgeslim", "info", "whole.pt", "--trust-pickle"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    err = out.stderr.strip()
    assert out.returncode == 2 and len(err.splitlines()) == 1, err
    assert "class 'MyNet'" in err and "script's __main__" in err and "edgeslim.__main__" not in err, err


# ------------------------------------------------------------------ 2. trust_pickle on the CLI


def test_checkpoint_naming_outside_code_names_the_flag(tmp_path, capsys):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, make_checkpoint(create_model("vgg-small"), ModelSpec("somepkg.mod:Net")))
    err = one_line_error(capsys, ["info", path], "code from outside edgeslim", "pass --trust-pickle")
    assert "trust_pickle" not in err
    with pytest.raises(EdgeslimError, match=r"trust_pickle=True") as info:
        load_model(path)
    assert info.value.params == ("trust_pickle",)


# ------------------------------------------------------------------ 3. wording of the other refusals


def test_truncated_zip_and_foreign_zip(tmp_path, capsys):
    full = tmp_path / "full.pt"
    torch.save(create_model("vgg-small").state_dict(), full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    err = one_line_error(capsys, ["info", cut], "looks truncated or corrupt", "save it again")
    assert "did not write" not in err
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hello")
    one_line_error(capsys, ["info", other], "a zip archive that torch did not write")


def test_bare_state_dict_gives_the_cli_form(tmp_path, capsys):
    sd = tmp_path / "sd.pt"
    torch.save(create_model("vgg-small").state_dict(), sd)
    err = one_line_error(capsys, ["info", sd], "bare state_dict", "tv:resnet18", f"--weights={sd}")
    assert "save_model" not in err
    with pytest.raises(EdgeslimError, match=rf"with weights={sd}$") as info:
        load_model(sd)
    assert info.value.params == ("weights",)


def test_prune_whole_pickle_asks_for_the_input_shape(tmp_path, capsys):
    whole = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), whole)
    err = one_line_error(capsys, ["prune", whole, "--trust-pickle", "-o", tmp_path / "slim.pt"],
                         "whole pickled module", "records no input shape", "--input-shape")  # fmt: skip
    assert "architecture spec" not in err


def test_unsupported_file_lists_onnx_for_bench(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    one_line_error(capsys, ["bench", notes, *BENCH_FAST], "is a text file", "an ONNX model (.onnx)")


# ------------------------------------------------------------------ 4. TorchScript


def test_torchscript_loads_without_warnings_and_is_refused_in_one_line(tmp_path, capsys):
    ts = tmp_path / "m.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(create_model("vgg-small").eval()).save(str(ts))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_model(ts, trust_pickle=True).kind == "torchscript"
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [str(w.message) for w in seen]
    one_line_error(capsys, ["prune", ts, "--trust-pickle", "-o", tmp_path / "s.pt"],
                   "is a TorchScript program; surgery needs the Python model")  # fmt: skip
    # without --trust-pickle too: it was first told to pass it, then refused for what it is (docs audit)
    one_line_error(
        capsys,
        ["prune", ts, "-o", tmp_path / "s.pt"],
        "is a TorchScript program; surgery needs the Python model",
    )
    one_line_error(capsys, ["slim", ts, "--data", "digits", "--out", tmp_path / "run"],
                   "is a TorchScript program, which cannot be trained (its code is compiled)")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_info_counts_the_batchnorms_of_torchscript(tmp_path, capsys):
    """A scripted or traced model keeps its BN layers as compiled modules: ``info`` counts them
    (recognised by the one aten::batch_norm each runs) and their exact zeros, as for the Python model
    (it counted 0 BN layers)."""
    model = create_model("vgg-small").eval()
    with torch.no_grad():
        model.features[1].weight[:5] = 0  # the first BN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(tmp_path / "s.ts"))
        torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(tmp_path / "t.ts"))
    assert main(["info", "vgg-small", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["bn"]
    assert want["layers"] and want["channels"] > 0
    for f in ("s.ts", "t.ts"):
        assert main(["info", str(tmp_path / f), "--trust-pickle", "--input-shape", "3,32,32", "--json"]) == 0
        bn = json.loads(capsys.readouterr().out)["bn"]
        assert (len(bn["layers"]), bn["channels"], bn["zeros"]) == (
            len(want["layers"]),
            want["channels"],
            5,
        ), f


# ------------------------------------------------------------------ 5. torch.export programs


@pytest.fixture
def pt2(tmp_path) -> Path:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()  # fmt: skip
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), path)
    return path


def test_exported_program_runs_at_its_shape(pt2, tmp_path, capsys):
    loaded = load_model(pt2, trust_pickle=True)
    assert loaded.described == "an exported program (torch.export)"
    loaded.model.eval()  # torch's module raises NotImplementedError here; ours sets the flag
    assert not loaded.model.training
    assert loaded.model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)

    assert run("info", pt2, "--trust-pickle", "--input-shape", "3,16,16", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "exported" and res["input_shape"] == [3, 16, 16]
    assert load_model(pt2, trust_pickle=True).input_shape == (3, 16, 16)  # what the program fixes
    rc = run("bench", pt2, "--trust-pickle", "--json", *BENCH_FAST)  # no --input-shape: the program's
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["models"]
    assert run("info", pt2, "--trust-pickle", "--json") == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [3, 16, 16]
    # export too (docs/export.md; it asked for --input-shape, with "a exported file")
    rc = run("export", pt2, "--trust-pickle", "--onnx", tmp_path / "m.onnx", "--json")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["onnx"]["validation"]["passed"]


def test_exported_program_at_another_shape_is_one_line(pt2, tmp_path, capsys):
    one_line_error(capsys, ["info", pt2, "--trust-pickle", "--input-shape", "3,32,32"],
                   "exported for input shape 1x3x16x16, not 1x3x32x32", "pass --input-shape 3,16,16",
                   "re-export it with dynamic shapes")  # fmt: skip
    err = one_line_error(capsys, ["bench", pt2, "--trust-pickle", "--input-shape", "3,16,16", "--batch", "2",
                                  *BENCH_FAST], "not 2x3x16x16", "pass --batch 1")  # fmt: skip
    assert "--input-shape" not in err  # the shape given was right
    one_line_error(capsys, ["prune", pt2, "--trust-pickle", "-o", tmp_path / "s.pt"],
                   "is an exported program")  # fmt: skip
    assert (
        run("export", pt2, "--trust-pickle", "--input-shape", "3,32,32", "--onnx", tmp_path / "m.onnx") == 2
    )
    (err,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert "pass --input-shape 3,16,16" in err  # the program's own reason, not wrapped in a second one
    assert "does not accept" not in err and not (tmp_path / "m.onnx").exists()
    with pytest.raises(EdgeslimError, match=r"pass input_shape 3,16,16") as info:
        load_model(pt2, trust_pickle=True).model(torch.zeros(1, 3, 8, 8))
    assert info.value.params == ("input_shape",)


def test_an_os_error_a_library_raised_with_a_message_keeps_its_message(tmp_path) -> None:
    """ultralytics raises FileNotFoundError("Dataset 'd.yaml' images not found, missing path ...") with
    no errno: a user trial got 'FileNotFoundError; free space or memory, or fix the permissions'.
    The line is the library's first line and the fix for a missing path; an error of the OS itself
    still names its file and the fix for its kind."""
    import errno

    from edgeslim.cli import _os_error_line

    lib = FileNotFoundError("Dataset 'd.yaml' images not found, missing path '/data/images/val'\nNote: ...")
    assert _os_error_line(lib) == (
        "Dataset 'd.yaml' images not found, missing path '/data/images/val'; check the path, and rerun"
    )
    import torch

    from edgeslim.cli import _failure

    # PyTorch's CPU allocator fails with a RuntimeError, not a MemoryError (a probe's --image-size 4096)
    with pytest.raises(RuntimeError, match="can't allocate memory") as info:
        torch.empty(2**62, dtype=torch.uint8)
    import edgeslim.cli.train  # noqa: F401 - (the command that raised is loaded: its batch option is named)

    line, code, _ = _failure(info.value, ["train"], False)
    assert code == 2 and line.startswith("out of memory ([enforce fail") and "can't allocate memory" in line
    assert line.endswith(
        "; free memory (a smaller --batch-size or input), and rerun"
    )  # (the allocator's line kept)
    os_err = OSError(errno.ENOSPC, "No space left on device", "/runs/x/.model.pt.edgeslim-u7_k2x9q.tmp")
    assert _os_error_line(os_err) == "No space left on device (/runs/x/model.pt); free disk space, and rerun"
    # a training run whose folder holds its checkpoint continues, a plain rerun would be refused (an
    # interrupt probe's full disk mid-run said "and rerun")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"an epoch's checkpoint")
    line, code, _ = _failure(os_err, ["train", "--arch", "vgg-small", "--out", str(run)], False)
    assert code == 2 and line == (
        f"No space left on device (/runs/x/model.pt); free disk space, and continue with edgeslim train --resume "
        f"--out {run}"
    )
    assert _failure(os_err, ["train", "--out", str(tmp_path / "none")], False)[0].endswith(
        "free disk space, and rerun"
    )
    # ... not an earlier run's checkpoint (the run failed before it took its folder: the review), unless the
    # run resumes it; and not for memory (a resume keeps the run's batch size)
    os.utime(run / "model.pt", (946684800, 946684800))
    assert _failure(os_err, ["train", "--out", str(run)], False)[0].endswith("free disk space, and rerun")
    assert _failure(os_err, ["train", "--resume", "--out", str(run)], False)[0].endswith(
        f"--resume --out {run}"
    )
    assert _failure(MemoryError(), ["train", "--resume", "--out", str(run)], False)[0].endswith("and rerun")


@pytest.mark.parametrize("command", ["info", "graph", "prune", "export"])
def test_num_classes_with_a_checkpoint_is_refused_unless_it_is_its_own(command, tmp_path, capsys):
    """A trial's --num-classes 3 with a 10-class checkpoint was ignored by info, graph, prune and export
    (exit 0), while --weights with a checkpoint is refused; the checkpoint's own count is accepted."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, make_checkpoint(create_model("vgg-small"), ModelSpec("vgg-small", 10, 3, (32, 32))))
    out = {"prune": ["-o", str(tmp_path / "p.pt")], "export": ["--onnx", str(tmp_path / "m.onnx")]}.get(
        command, []
    )
    assert main([command, str(path), "--num-classes", "3", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --num-classes goes with an architecture name (e.g. tv:resnet18); {path} is a model file with "
        "a trained head for 10 classes: drop it (slim replaces a head and trains it)"
    ]
    assert not any(p.exists() for p in (tmp_path / "p.pt", tmp_path / "m.onnx"))
    if command == "info":
        assert main([command, str(path), "--num-classes", "10"]) == 0


def test_a_plain_pickle_is_refused_without_torchs_protocol_warning(tmp_path, capsys):
    """A raw protocol-4 pickle got torch's two-line 'Detected pickle protocol 4' warning before the refusal."""
    import pickle

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(nn.Linear(2, 2), protocol=4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["info", str(path)]) == 2
    assert not [w for w in seen if "pickle protocol" in str(w.message)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unpickling it can run arbitrary code" in err[0] and "--trust-pickle" in err[0]


def test_own_code_and_pickles_keep_their_own_head(user_module, tmp_path, monkeypatch, capsys):
    """A trial's 3-class segmenter named pickle:PATH (and a factory defaulting to 3 classes) came out with
    a fresh random 10-class head, silently (the export's check passed on the new head): with no class
    count given, the user's model keeps its own; one that is given still replaces it."""
    name, code = user_module
    monkeypatch.chdir(code)
    whole = tmp_path / "whole.pt"
    torch.save(_import_from(code, name).MyNet(num_classes=3).eval(), whole)

    def described(*argv: str) -> dict:
        assert run("info", *argv, "--input-shape", "3,16,16", "--json") == 0
        return json.loads(capsys.readouterr().out)

    direct = described(str(whole), "--trust-pickle")
    named = described(f"pickle:{whole}", "--trust-pickle")
    assert named["num_classes"] == 3 and named["params"] == direct["params"]
    assert described(f"pickle:{whole}", "--trust-pickle", "--num-classes", "5")["num_classes"] == 5
    (code / f"{name}_f.py").write_text(
        f"from torch import nn\nfrom {name} import MyNet\n\n\ndef three(num_classes=3):\n    return MyNet(num_classes)\n"
        "\n\ndef needs(num_classes):\n    return MyNet(num_classes)\n"
        "\n\ndef masks(num_classes=3):  # a 3x3 output conv: no head edgeslim recognises\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.Conv2d(8, num_classes, 3, padding=1))\n"
    )  # fmt: skip
    try:
        assert described(f"{name}_f:three")["num_classes"] == 3  # the factory's own default
        assert described(f"{name}_f:three", "--num-classes", "4")["num_classes"] == 4
        assert described(f"{name}_f:needs")["num_classes"] == 10  # required: given 10, as before
        # the default is recorded, so the slim checkpoint rebuilds what was cut (from the second review)
        slim = tmp_path / "masks_slim.pt"
        assert run("prune", f"{name}_f:masks", "--input-shape", "3,16,16", "-o", slim) == 0
        capsys.readouterr()
        rebuilt = load_model(slim, trust_pickle=True)
        assert rebuilt.spec.num_classes == 3 and rebuilt.model[3].out_channels == 3
    finally:
        sys.modules.pop(f"{name}_f", None)


def test_a_whole_pickle_is_not_called_dense_by_export(user_module, tmp_path, monkeypatch, capsys):
    """A trial's whole-pickled slim segmenter was told its cut layers 'keep the architecture's dense
    width' and was named the baseline in the next command: a pickle carries no recipe, so export
    does not know whether surgery cut it, and says neither."""
    name, code = user_module
    monkeypatch.chdir(code)
    whole = tmp_path / "whole.pt"
    torch.save(_import_from(code, name).MyNet().eval(), whole)
    out = tmp_path / "w.onnx"
    assert run("export", whole, "--trust-pickle", "--input-shape", "3,16,16", "--onnx", out, "--json") == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["slim"] is None and res["audit"]["narrowed"] is None
    assert "dense width" not in res["audit"]["suggestion"]
    assert run("export", whole, "--trust-pickle", "--input-shape", "3,16,16", "--onnx", out, "--force") == 0
    err = capsys.readouterr().err
    assert f"next: edgeslim bench SLIM.onnx --baseline DENSE.onnx --batch 1 ({out} is one of them)" in err
    # named pickle:PATH it is the same file (the second review: it was called dense by that name)
    argv = [
        "export",
        f"pickle:{whole}",
        "--trust-pickle",
        "--input-shape",
        "3,16,16",
        "--onnx",
        out,
        "--force",
    ]
    assert run(*argv, "--json") == 0
    assert json.loads(capsys.readouterr().out)["slim"] is None


def test_a_stop_seen_as_another_error_is_an_interrupted_json_error(capsys) -> None:
    """The review: a stop that surfaced as an ImportError printed ``"kind": "ImportError"`` beside the
    interrupted line and exit code 143."""
    import signal

    from edgeslim.cli import _failure, _json_error

    exc = ImportError("cannot import name '_path'")
    line, code, _ = _failure(exc, ["report", "run.json", "--json"], False, [signal.SIGTERM])
    assert code == 143 and line.startswith("interrupted")
    _json_error(["report", "run.json", "--json"], exc, line, code)
    assert json.loads(capsys.readouterr().out)["error"] == {
        "message": line,
        "exit_code": 143,
        "kind": "Interrupted",
    }


def test_a_stop_in_the_first_moments_or_while_the_error_prints_is_one_line(tmp_path) -> None:
    """A review of interruption and concurrency: SIGINT or SIGTERM in the CLI's first ~0.1 s (its
    handlers installed, rich still loading outside the command's try), or a second Ctrl-C while the
    error line printed, gave a Python traceback and exit 1 (SIGTERM: edgeslim.cli.Terminated). Signals
    are sent from the moment the handlers are in place (SigCgt in /proc: before that the interpreter's
    own defaults stand) at several delays, and as two Ctrl-C in a row."""
    import signal
    import subprocess
    import time

    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "EDGESLIM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}

    def handled(pid: int) -> bool:  # SIGTERM caught: edgeslim's handlers are installed
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        return bool(caught & (1 << (signal.SIGTERM - 1)))

    cases = [
        (s, d, None) for s in (signal.SIGINT, signal.SIGTERM) for d in (0.0, 0.005, 0.015, 0.03, 0.06, 0.1)
    ]
    cases += [(signal.SIGINT, d, gap) for d in (0.0, 0.03, 0.1) for gap in (0.005, 0.02)]  # a second Ctrl-C
    seen = []
    for sig, delay, second in cases:
        proc = subprocess.Popen([sys.executable, "-m", "edgeslim", "info", "vgg-small"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.time() + 20
            while not handled(proc.pid) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.0005)
            time.sleep(delay)
            proc.send_signal(sig)
            if second is not None:
                time.sleep(second)
                proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # (a signal in the last moments of the interpreter's exit, after Python put the default handlers
        # back, ends it by that signal: the shell's 130 or 143, the line printed before)
        rc = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        seen.append((signal.Signals(sig).name, delay, second, proc.returncode, err.strip().splitlines()[-1:]))
        expected = {0, 143 if sig == signal.SIGTERM else 130}  # (0: it finished first)
        assert "Traceback" not in err and rc in expected, (seen[-1], err)
        lines = [x for x in err.splitlines() if x.strip()]
        assert rc == 0 or (len(lines) == 1 and "interrupted" in lines[0]), seen[-1]


def test_timeouts_sigterm_to_the_process_group_is_not_a_second_stop(tmp_path) -> None:
    """The review of a timm user's chain (finding 3): GNU timeout sends SIGTERM to the command and then to
    its whole process group; where the second came 50 ms after the first, in the clean-up, it was read as
    "the clean-up is taking too long" and ended the process by SIGTERM (exit -15, no line, the run's lock
    and temporary folders left). A SIGTERM within SIGTERM_REPEAT_S of the first is the same request: the
    clean-up finishes, exit 143 with the line. One after that window still ends the process at once, and
    a second Ctrl-C still interrupts the clean-up, as before. Real signals to a real ``edgeslim`` process
    (its command a stand-in whose clean-up takes a set time)."""
    import signal
    import subprocess
    import time

    from edgeslim.cli import SIGTERM_REPEAT_S

    script = tmp_path / "napper.py"
    script.write_text(
        "import sys, time, click\n"
        "from edgeslim import cli\n"
        "@click.command()\n"
        "@click.argument('clean', type=float)\n"
        "def nap(clean):\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        time.sleep(clean)  # a clean-up that takes its time (stopping a measuring process)\n"
        "        print('cleaned', flush=True)\n"
        "cli.COMMANDS['nap'] = ('__main__', 'nap', 'sleeps')\n"
        "sys.exit(cli.console())\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "EDGESLIM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}

    def stop(sig: int, gap: float, clean: float) -> tuple[int, str, str]:
        proc = subprocess.Popen([sys.executable, str(script), "nap", str(clean)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        try:
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(sig)  # timeout's first signal, to the command
            time.sleep(gap)
            os.killpg(proc.pid, sig)  # its second, to the process group
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, out, err

    rc, out, err = stop(signal.SIGTERM, 0.05, 1.0)
    assert (rc, out) == (143, "cleaned\n") and err.strip().startswith("error: interrupted"), (rc, out, err)
    rc, out, _ = stop(signal.SIGTERM, SIGTERM_REPEAT_S + 0.5, 10.0)  # a second request: ends it at once
    assert (rc, out) == (-signal.SIGTERM, ""), (rc, out)
    rc, out, err = stop(signal.SIGINT, 0.05, 1.0)  # a second Ctrl-C interrupts the clean-up, as before
    assert (rc, out) == (130, "") and "interrupted" in err, (rc, out, err)


# ------------------------------------------------------------------ 6. half-precision model files


def _tiny_gray() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_pickle_is_widened_to_float32(dtype, tmp_path, capsys, caplog):
    """The review of a user's own model files: a whole module pickled after ``model.half()`` (or
    ``.bfloat16()``) crashed prune and slim ("internal error: RuntimeError: Input type
    (torch.FloatTensor) and weight type (torch.HalfTensor)", exit 1) and export blamed the input shape.
    It is widened to float32 (exact) with one warning; the prune result rebuilds in float32."""
    whole = tmp_path / "half.pt"
    model = _tiny_gray()
    torch.save(model.to(dtype), whole)
    name = str(dtype).removeprefix("torch.")
    caplog.set_level("WARNING")
    assert run("prune", whole, "--trust-pickle", "--input-shape", "1,8,8", "-o", tmp_path / "p.pt") == 0
    assert f"holds {name} weights: they are widened to float32" in caplog.text
    assert len([r for r in caplog.records if "widened to float32" in r.getMessage()]) == 1
    pruned = load_model(tmp_path / "p.pt", trust_pickle=True).model  # rebuilt from the pickle: float32 too
    assert {t.dtype for t in pruned.state_dict().values() if t.is_floating_point()} == {torch.float32}
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(pruned(x), model.float()(x))  # the widening is exact
    rc = run("export", whole, "--trust-pickle", "--input-shape", "1,8,8", "--onnx", tmp_path / "m.onnx")
    assert rc == 0, capsys.readouterr().err
    assert "an ONNX export of it is float32" in caplog.text
    assert run("info", whole, "--trust-pickle", "--input-shape", "1,8,8") == 0
    capsys.readouterr()
    if dtype is torch.float16:  # slim trains it (digits: 1x8x8, 10 classes)
        rc = run("slim", whole, "--trust-pickle", "--data", "digits", "--epochs", "1", "--threads", "1",
                 "--out", tmp_path / "run")  # fmt: skip
        assert rc == 0, capsys.readouterr().err


def test_a_float64_checkpoint_is_narrowed_to_float32(tmp_path, capsys, caplog):
    """API review, finding 4: a checkpoint saved from ``model.double()`` loads as float64, and prune failed
    with a raw "Input type (torch.FloatTensor) and weight type (torch.DoubleTensor)" (the CLI: "internal
    error", exit 1), export blamed the input shape, train from it (init_path) failed in conv2d. It is
    narrowed to float32, as half precision is widened, with one warning; prune, export and train run."""
    from edgeslim.checkpoint import save_model
    from edgeslim.pipelines import export
    from edgeslim.pipelines.prune import PruneRequest
    from edgeslim.pipelines.prune import run as prune
    from edgeslim.pipelines.train import TrainRequest
    from edgeslim.pipelines.train import run as train

    spec = ModelSpec("vgg-small", 10, 1, (8, 8))
    f64 = tmp_path / "f64.pt"
    save_model(f64, create_model(spec).double().eval(), spec)
    assert next(load_model(f64).model.parameters()).dtype == torch.float64
    caplog.set_level("WARNING")
    rep = prune(PruneRequest(model=str(f64), output=tmp_path / "p.pt", calib=8))
    assert rep["max_abs_diff"] < 1e-4
    assert next(load_model(tmp_path / "p.pt").model.parameters()).dtype == torch.float32
    assert (
        len(
            [
                r
                for r in caplog.records
                if "holds float64 weights: they are narrowed to float32" in r.getMessage()
            ]
        )
        == 1
    )
    req = export.ExportRequest(onnx_path=tmp_path / "m.onnx", n_validate=4)
    assert export.run(str(f64), req)["onnx"]["validation"]["passed"]
    assert run("prune", f64, "-o", tmp_path / "q.pt") == 0, capsys.readouterr().err
    train(TrainRequest(out_dir=tmp_path / "t", arch="vgg-small", data_name="digits", subset=64, test_subset=32,
                       epochs=1, init_path=f64, threads=1))  # fmt: skip
    assert (tmp_path / "t" / "model.pt").is_file()


def test_a_half_precision_torchscript_is_refused_by_export_in_one_line(tmp_path, capsys):
    """The same review: a traced TorchScript in float16 (whose compiled code cannot be widened safely)
    failed export with "does not accept input 1x1x8x8 ...; check --input-shape"; export refuses it
    naming its dtype and the fix. info and bench still count and run it in its own dtype."""
    ts = tmp_path / "half.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(_tiny_gray().half(), torch.zeros(1, 1, 8, 8, dtype=torch.float16)).save(str(ts))
    err = one_line_error(capsys, ["export", ts, "--trust-pickle", "--input-shape", "1,8,8", "--onnx",
                                  tmp_path / "m.onnx"], "weights are float16", "model.float()")  # fmt: skip
    assert "input-shape" not in err and not (tmp_path / "m.onnx").exists()
    assert run("info", ts, "--trust-pickle", "--input-shape", "1,8,8") == 0
    assert run("bench", ts, "--trust-pickle", "--input-shape", "1,8,8", *BENCH_FAST) == 0


def test_an_exported_program_whose_batch_range_excludes_the_probe_names_the_range(tmp_path, capsys):
    """A review of the day's new code (finding 6): ``export m.pt2 --dynamic-batch`` of a program exported
    with a dynamic batch of 4..64 said "does not accept input 2x3x16x16 (Expected ... >= 4, but got 2);
    check --input-shape": 2 is export's own probe batch (and 1 its check of one image). It names the
    program's range and the batch; a fixed batch in the range exports."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()  # fmt: skip
    pt2 = tmp_path / "min4.pt2"
    batch = torch.export.Dim("batch", min=4, max=64)
    torch.export.save(
        torch.export.export(model, (torch.randn(4, 3, 16, 16),), dynamic_shapes=({0: batch},)), pt2
    )
    args = ["export", pt2, "--trust-pickle", "--onnx", tmp_path / "m.onnx"]
    err = one_line_error(capsys, [*args, "--dynamic-batch"], "takes batches of 4 to 64 only",
                         "2 and 3 images (its probe)", "a fixed --batch N in that range")  # fmt: skip
    assert "input-shape" not in err and not (tmp_path / "m.onnx").exists()
    one_line_error(capsys, args, "takes batches of 4 to 64 only", "give --batch N in that range")
    assert run(*args, "--batch", "4") == 0, capsys.readouterr().err


def test_slim_of_an_rgb_pickle_on_greyscale_data_is_one_line(tmp_path, capsys):
    """The review of a user's own model files: ``slim whole.pt --trust-pickle --data digits`` (an RGB
    model, 1-channel images) ended in "internal error: RuntimeError: Given groups=1, weight of size
    [8, 3, 3, 3], expected input[1, 1, 8, 8] to have 3 channels", exit 1, where an architecture with
    weights got one line; every model source now gets it, before the run folder is made."""
    whole = tmp_path / "rgb.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10)).eval(), whole)  # fmt: skip
    one_line_error(capsys, ["slim", whole, "--trust-pickle", "--data", "digits", "--epochs", "1", "--out",
                            tmp_path / "run"], "takes 3-channel images, not 1-channel ones",
                   "give --data of 3-channel images")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_an_exported_program_of_a_fixed_batch_refuses_a_dynamic_batch(pt2, tmp_path, capsys):
    """The review of a user's own model files: ``export m.pt2 --dynamic-batch --batch 1`` said "not
    2x3x16x16; pass --batch 1" (the batch given: 2 is the batch export probes a dynamic batch at); it
    names what fails, the dynamic batch of a program exported for a fixed one."""
    err = one_line_error(capsys, ["export", pt2, "--trust-pickle", "--onnx", tmp_path / "m.onnx", "--dynamic-batch",
                                  "--batch", "1"], "exported for a fixed batch of 1",
                         "cannot be exported with --dynamic-batch: drop it", "dynamic_shapes")  # fmt: skip
    assert "--batch 1" not in err and not (tmp_path / "m.onnx").exists()
    from edgeslim.export import export_loaded

    with pytest.raises(EdgeslimError, match="cannot be exported with dynamic_batch") as info:
        export_loaded(load_model(pt2, trust_pickle=True), tmp_path / "m.onnx", dynamic_batch=True)
    assert info.value.params == ("dynamic_batch",)


class _CastsHalf(nn.Module):
    """A float16 model whose forward casts its input to float16 itself (a half-inference idiom)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_gray()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half())


class _CountsCalls(nn.Module):
    """A model whose forward counts its calls in a buffer, in any mode (a user's feature monitor)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _tiny_gray()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_loading_a_half_pickle_leaves_what_its_forward_writes_as_it_was(tmp_path):
    """A review of the day's third batch (finding 3): the float32 probe of a half pickle ran the model
    itself once at load, so a buffer its forward updates in any mode (a call counter: 3 -> 4; an input
    statistic mixed with the probe's zeros) changed by loading, and went into the checkpoints. The probe
    runs a copy."""
    from edgeslim.pipelines.source import load_model_or_arch

    model = _CountsCalls()
    model.calls.fill_(3)
    torch.save(model.half(), tmp_path / "counts.pt")
    loaded = load_model_or_arch(f"pickle:{tmp_path / 'counts.pt'}", trust_pickle=True, input_shape="1,8,8")
    assert loaded.model.calls.dtype == torch.float32 and float(loaded.model.calls) == 3.0


def test_a_half_pickle_whose_forward_casts_its_input_is_kept_in_its_dtype(tmp_path, capsys, caplog):
    """A review of the day's new code (finding 2): a float16 pickle whose forward casts its input
    (``x = x.half()``) was widened to float32 on load and then failed: prune and slim ended in "internal
    error: Input type (c10::Half) and bias type (float)", exit 1, info and export blamed the input shape
    (before the widening, info, prune and export took it). A model that fails on float32 once widened
    while it ran as it was is kept in its dtype, with one warning (slim: once, not once per load); a
    checkpoint of it rebuilds in the dtypes it saved; train builds pickle:PATH alike."""
    whole = tmp_path / "casts.pt"
    torch.save(_CastsHalf().half(), whole)
    shape = ("--trust-pickle", "--input-shape", "1,8,8")
    caplog.set_level("WARNING")
    assert run("info", whole, *shape) == 0, capsys.readouterr().err
    assert "casts its input to them" in caplog.text and "kept in float16" in caplog.text
    assert run("prune", whole, *shape, "-o", tmp_path / "p.pt") == 0, capsys.readouterr().err
    assert (
        run("export", tmp_path / "p.pt", "--trust-pickle", "--onnx", tmp_path / "p.onnx", "--no-validate")
        == 0
    )
    assert run("export", whole, *shape, "--onnx", tmp_path / "m.onnx", "--no-validate") == 0
    caplog.clear()
    rc = run("slim", whole, "--trust-pickle", "--data", "digits", "--epochs", "1", "--threads", "1", "--out",
             tmp_path / "run")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert len([r for r in caplog.records if "kept in float16" in r.getMessage()]) == 1, caplog.text
    rc = run("train", "--arch", f"pickle:{whole}", "--trust-pickle", "--data", "digits", "--epochs", "1",
             "--threads", "1", "--out", tmp_path / "train")  # fmt: skip
    assert rc == 0, capsys.readouterr().err


def test_a_script_that_calls_main_keeps_its_own_ctrl_c_after_it_returns(tmp_path) -> None:
    """Review of the day's code: ``main()`` on the process's own arguments left edgeslim's stop handlers
    in place for good, so a script or notebook that called it and went on was ended by a later Ctrl-C or
    SIGTERM with exit 0, its ``finally`` never run. Its handlers are back when main returns (only the
    ``edgeslim`` command itself, :func:`edgeslim.cli.console`, keeps them until it exits)."""
    import signal
    import subprocess
    import time

    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "EDGESLIM_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    script = tmp_path / "caller.py"
    script.write_text(
        "import sys, time\n"
        "from edgeslim.cli import main\n"
        "sys.argv = ['edgeslim', 'profiles']\n"
        "print('returned', main(), flush=True)\n"
        "try:\n"
        "    time.sleep(30)\n"
        "finally:\n"
        "    open(__file__ + '.done', 'w').close()\n"
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        done = tmp_path / "caller.py.done"
        done.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
        try:
            while not (line := proc.stdout.readline()).startswith("returned") and line:
                pass  # (the profiles table first)
            assert line.startswith("returned 0"), line
            time.sleep(0.2)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the caller's own handling: an uncaught KeyboardInterrupt ends Python by SIGINT, SIGTERM's default
        # action by SIGTERM; never exit 0
        assert proc.returncode == -sig, (sig, proc.returncode, err[-500:])
        assert done.exists() == (sig == signal.SIGINT), sig  # (SIGTERM's default action runs no finally)


class _NmsOnTensor(nn.Module):
    """One image tensor in, the boxes torchvision's NMS keeps out (a detector's postprocessing)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)[0].flatten(1).t()  # [H*W, 5]: a box (x1, y1, w, h) and a score per location
        boxes = torch.cat([f[:, :2], f[:, :2] + f[:, 2:4].abs() + 1], 1)
        return boxes[torchvision.ops.nms(boxes, f[:, 4], 0.5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect(x)


class _NmsOnList(_NmsOnTensor):
    """A list of images in, as a torchvision detector's forward takes them."""

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        return [self.detect(im[None]) for im in images]


def test_a_scripted_detector_loads_and_one_taking_a_list_of_images_says_so(tmp_path, capsys):
    """Review of a user's own torchvision detectors (tvdet #6): a torch.jit.script'ed Faster R-CNN failed
    to load ("Unknown builtin op: torchvision::nms": torchvision was never imported, which registers its
    ops), and with torchvision imported it ended in "the model does not run on input 3,128,128 ... give
    the input shape", which no shape fixes: its forward takes a list of images. torchvision is imported
    before loading, and such a forward is named in one line with the fix (a wrapper taking one tensor)."""
    import subprocess

    torch.jit.script(_NmsOnTensor()).save(str(tmp_path / "nms.pt"))
    torch.jit.script(_NmsOnList()).save(str(tmp_path / "list.pt"))
    # a fresh interpreter, where nothing imported torchvision before edgeslim loads the file
    out = subprocess.run([sys.executable, "-m", "edgeslim", "info", "nms.pt", "--trust-pickle", "--input-shape",
                          "3,8,8", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    one_line_error(capsys, ["info", tmp_path / "list.pt", "--trust-pickle", "--input-shape", "3,8,8"],
                   "forward takes a list of images (images: List[Tensor]", "a wrapper module whose forward(x: Tensor)")  # fmt: skip


HALVING_NET = """
import torch
from torch import nn


class Halving(nn.Module):  # a U-Net's skip: the input must halve and double back to its own size
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        a = self.a(x)
        b = nn.functional.interpolate(self.b(nn.functional.max_pool2d(a, 2)), scale_factor=2.0)
        return self.head(torch.cat([a, b], 1))
"""


def test_an_input_size_the_model_cannot_run_is_told_as_the_input_shape_it_takes(
    tmp_path, monkeypatch, capsys
):
    """A review: graph and prune on a U-Net at 3,250,502 said "give an example input (--input-shape) ...
    batch first, e.g. (1, 3, 224, 224)", and --input-shape 1,3,256,512 was refused ("must be C,H,W").
    The CLI now asks for --input-shape C,H,W; the Python error for an example tensor, batch first."""
    from edgeslim.surgery import build_graph

    name = f"halving_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(HALVING_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for argv in (["graph"], ["prune", "-o", tmp_path / "s.pt"]):
            err = one_line_error(capsys, [*argv, f"{name}:Halving", "--input-shape", "3,25,51"],
                                 "does not run on an input of shape (1, 3, 25, 51)", "--input-shape C,H,W",
                                 "e.g. 3,224,224")  # fmt: skip
            assert "batch first" not in err and "(1, 3, 224, 224)" not in err, err
        with pytest.raises(EdgeslimError) as info:
            build_graph(_import_from(tmp_path, name).Halving(), torch.zeros(1, 3, 25, 51))
        assert "example_input" in str(info.value) and "batch first" in str(info.value)
        assert info.value.params == ("example_input",) and "--" not in str(info.value)
        assert run("graph", f"{name}:Halving", "--input-shape", "3,24,50") == 0  # the size it takes
    finally:
        sys.modules.pop(name, None)


def test_an_unknown_family_that_is_no_module_names_the_families_and_the_one_meant(capsys):
    """A review: info tvseg:lraspp_mobilenet_v3_large said only "cannot import 'tvseg' ... run from the
    directory that holds tvseg.py"; segmenters are tv:. The line names the registered families, and the
    one whose models include NAME."""
    prefix = f"tvseg{uuid.uuid4().hex[:6]}"
    err = one_line_error(capsys, ["info", f"{prefix}:lraspp_mobilenet_v3_large"],
                         f"{prefix}: is no model family (those are ", "tv:, ",
                         "did you mean tv:lraspp_mobilenet_v3_large?", f"holds {prefix}.py")  # fmt: skip
    assert "yolo:" in err
    err = one_line_error(capsys, ["info", f"{prefix}:no_such_net"], f"{prefix}: is no model family")
    assert "did you mean" not in err


def test_a_pickled_dict_whose_model_is_under_another_key_names_the_keys(tmp_path, capsys):
    """A review: torch.save({"m": model}, "x.pt") was "x.pt holds a dict, not an nn.Module", naming neither
    the keys looked under nor that "m" holds the module. Both are named, with how to re-save it; so
    re-saved, it loads."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = tmp_path / "x.pt"
    torch.save({"m": net, "epoch": 3}, path)
    one_line_error(capsys, ["info", path, "--trust-pickle", "--input-shape", "3,16,16"],
                   "x.pt holds a dict, not an nn.Module", "(model, ema, model_ema, module, net)",
                   "'m' (Sequential) does", "torch.save(ckpt['m'], PATH)")  # fmt: skip
    with pytest.raises(EdgeslimError, match=r"but 'm' \(Sequential\) does"):
        create_model(f"pickle:{path}", trust_pickle=True)
    torch.save({"model": net, "epoch": 3}, path)  # as the line says
    assert run("info", path, "--trust-pickle", "--input-shape", "3,16,16") == 0
