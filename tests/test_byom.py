"""A user's first hour: their own torchvision/timm network, their weights, their image folder.

Each saved form a PyTorch user has (an edgeslim checkpoint, a state_dict with the architecture
named on the command line, a whole pickled module with --trust-pickle, their own code as
``module:Factory``) is slimmed with ``--num-classes 3`` on a 3-class ImageFolder made from the
CIFAR-10 JPEG zip, then exported (checked in ONNX Runtime on the folder's images) and benched.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from edgeslim.cli import main

CLASSES = ("airplane", "cat", "ship")
SLIM = ["--epochs", "2", "--batch-size", "32", "--threads", "1", "--shrink", "0.5"]


@pytest.fixture(scope="module")
def folder(cifar_zip, tmp_path_factory) -> Path:
    """train/<class>/*.jpg (48 each) and test/<class>/*.jpg (16 each) for three CIFAR-10 classes."""
    root = tmp_path_factory.mktemp("three") / "data"
    with zipfile.ZipFile(cifar_zip) as zf:
        for split, n in (("train", 48), ("test", 16)):
            for cls in CLASSES:
                names = sorted(
                    x for x in zf.namelist() if x.startswith(f"{split}/{cls}/") and x.endswith(".jpg")
                )
                d = root / split / cls
                d.mkdir(parents=True)
                for name in names[:n]:
                    (d / Path(name).name).write_bytes(zf.read(name))
    return root


def _run(args: list[str], capsys) -> str:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert rc == 0, (args, cap.err[-3000:])
    return cap.out + cap.err


def _slim_export_bench(source: list[str], out: Path, folder: Path, capsys, trust: bool = False) -> dict:
    extra = ["--trust-pickle"] if trust else []
    text = _run(["slim", *source, "--data", "imagefolder", "--data-dir", folder, "--num-classes", "3", *SLIM,
                 "--out", out, *extra], capsys)  # fmt: skip
    assert "next: edgeslim export" in text
    assert ("model.pt --trust-pickle --onnx" in text) == trust  # the slim checkpoint rebuilds the pickle
    pickled = trust and str(source[0]).endswith(".pt")  # (your own code rebuilds from its import name)
    assert ("rebuilds its architecture from" in text) == pickled  # ... from where it lies now
    report = json.loads((out / "report.json").read_text())
    assert report["verify"]["max_abs_diff"] < 1e-3
    assert report["loads_code"] == trust  # report.json says what loading takes, as `slim --json` does
    assert (report["rebuilds_from"] is not None) == pickled
    # export validates on the folder's own test images by default (the checkpoint records the data)
    res = _json_out(["export", out / "model.pt", "--onnx", out / "slim.onnx", "--json", *extra], capsys)
    assert res["onnx"]["validation"]["real_data"], res["onnx"]["validation"]
    bench = _json_out(["bench", out / "slim.onnx", "--trials", "1", "--min-iters", "5", "--min-time", "0.01",
                       "--warmup", "0.01", "--json"], capsys)  # fmt: skip
    assert bench["models"]
    return report


def _json_out(args: list[str], capsys) -> dict:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    assert rc == 0, (args, cap.err[-3000:])
    return json.loads(cap.out)


@pytest.mark.slow
def test_torchvision_state_dict_and_checkpoint_and_pickle(folder, tmp_path, capsys):
    from torchvision.models import resnet18

    net = resnet18(num_classes=10).eval()
    sd = tmp_path / "r18_sd.pt"
    torch.save(net.state_dict(), sd)
    rep = _slim_export_bench(["tv:resnet18", "--weights", sd], tmp_path / "sd", folder, capsys)
    assert rep["head"] == {"head": "fc", "from": 10, "to": 3}
    # a training script's checkpoint dict (weights under "model_state_dict", DDP prefixes)
    ck = tmp_path / "r18_ck.pt"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ck)
    assert _json_out(["info", "tv:resnet18", "--weights", ck, "--json"], capsys)["num_classes"] == 10
    # a whole pickled module: refused without --trust-pickle, slimmed as it is with it
    whole = tmp_path / "r18_whole.pt"
    torch.save(net, whole)
    assert main(["slim", str(whole), "--data", "imagefolder", "--data-dir", str(folder), "--out",
                 str(tmp_path / "w0")]) == 2  # fmt: skip
    assert "--trust-pickle" in capsys.readouterr().err
    rep = _slim_export_bench([whole], tmp_path / "whole", folder, capsys, trust=True)
    assert rep["head"]["to"] == 3 and rep["arch"].startswith("pickle:")
    # the slim checkpoint of the edgeslim run is itself a source: slim it again? no, dense only
    assert main(["slim", str(tmp_path / "sd" / "model.pt"), "--data", "imagefolder", "--data-dir",
                 str(folder), "--out", str(tmp_path / "again")]) == 2  # fmt: skip
    assert "already slimmed" in capsys.readouterr().err
    # an edgeslim checkpoint of the 10-class network, given as a file and as --init with its name
    from edgeslim.checkpoint import save_model
    from edgeslim.models.registry import ModelSpec

    ck10 = save_model(tmp_path / "r18_es.pt", net, ModelSpec("tv:resnet18", 10, 3, (32, 32)))
    rep = _slim_export_bench([ck10], tmp_path / "ckpt", folder, capsys)
    assert rep["head"] == {"head": "fc", "from": 10, "to": 3}
    rep = _slim_export_bench(["tv:resnet18", "--init", ck10], tmp_path / "init", folder, capsys)
    assert rep["head"]["to"] == 3
    assert main(["slim", "tv:resnet34", "--init", str(ck10), "--data", "imagefolder", "--data-dir", str(folder),
                 "--num-classes", "3", "--out", str(tmp_path / "bad-init")]) == 2  # fmt: skip
    assert "differs from the architecture of --init" in capsys.readouterr().err


@pytest.mark.slow
def test_timm_model_by_state_dict(folder, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet18", pretrained=False, num_classes=5)
    sd = tmp_path / "timm_sd.pt"
    torch.save(net.state_dict(), sd)
    rep = _slim_export_bench(["timm:resnet18", "--weights", sd], tmp_path / "t", folder, capsys)
    assert rep["head"]["from"] == 5 and rep["head"]["to"] == 3
    whole = tmp_path / "timm_whole.pt"
    torch.save(net, whole)
    rep = _slim_export_bench([whole], tmp_path / "tw", folder, capsys, trust=True)
    assert rep["head"]["from"] == 5 and rep["head"]["to"] == 3
    from edgeslim.checkpoint import save_model
    from edgeslim.models.registry import ModelSpec

    ck = save_model(tmp_path / "timm_es.pt", net, ModelSpec("timm:resnet18", 5, 3, (32, 32)))
    rep = _slim_export_bench([ck], tmp_path / "tc", folder, capsys)
    assert rep["head"]["to"] == 3


def test_own_code_module_factory(folder, tmp_path, capsys, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def small(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mynets", None)
    rep = _slim_export_bench(["mynets:small"], tmp_path / "own", folder, capsys, trust=True)
    assert rep["arch"] == "mynets:small"
    # the checkpoint names user code: loading it later needs --trust-pickle
    assert main(["info", str(tmp_path / "own" / "model.pt")]) == 2
    assert "code from outside edgeslim" in capsys.readouterr().err
    # ... and train's next step says so (a trial: the hint left it out, and the slim it gave was refused)
    args = ["train", "--arch", "mynets:small", "--trust-pickle", "--data", "imagefolder", "--data-dir", str(folder),
            "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "t")]  # fmt: skip
    assert main(args) == 0
    assert f"next: edgeslim slim {tmp_path / 't' / 'model.pt'} --trust-pickle --data imagefolder" in (
        capsys.readouterr().err.replace("\n", "")
    )


def test_bad_byom_inputs_are_one_line(folder, tmp_path, capsys):
    from torchvision.models import resnet18

    sd = tmp_path / "sd.pt"
    torch.save(resnet18(num_classes=10).state_dict(), sd)
    base = ["--data", "imagefolder", "--data-dir", str(folder), "--out", str(tmp_path / "o")]
    cases = [
        (["slim", "tv:resnet18", "--weights", str(sd), *base], "pass --num-classes 3"),
        (
            ["slim", "tv:resnet18", "--weights", str(sd), "--num-classes", "4", *base],
            "differs from the 3 classes of imagefolder in",
        ),
        (
            ["slim", "tv:resnet34", "--weights", str(sd), "--num-classes", "3", *base],
            "does not fit the architecture",
        ),
        (["info", str(sd), "--weights", str(sd)], "--weights goes with an architecture name"),
        (["info", "tv:resnet18", "--weights", str(tmp_path / "none.pt")], "does not exist"),
        (["info", "pickle:" + str(sd)], "--trust-pickle"),
        (["info", "no_such_module_xyz:Net", "--trust-pickle"], "cannot import 'no_such_module_xyz'"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (argv, err)


DETECTOR_CODE = (
    "import torch\n"
    "from torch import nn\n"
    "class Det(nn.Module):\n"
    "    def __init__(self, num_classes=5):\n"
    "        super().__init__()\n"
    "        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())\n"
    "        self.cls = nn.Conv2d(8, num_classes, 1)\n"
    "        self.box = nn.Conv2d(8, 4, 1)\n"
    "    def forward(self, x):\n"
    "        f = self.body(x)\n"
    "        return {'cls': self.cls(f), 'box': self.box(f)}\n"
    "def build(num_classes=5):\n"
    "    torch.manual_seed(0)\n"
    "    return Det(num_classes)\n"
)


def test_a_factory_that_takes_num_classes_builds_its_own_head(tmp_path, capsys, monkeypatch):
    """Review of a user's own torchvision detectors (tvdet #1): a ``module:Factory`` taking ``num_classes``
    was built with it and then had its last 1x1 conv (the box regression, 4 outputs) replaced by a random
    one with num_classes outputs (a detector's ONNX gave boxes of 5 values; its own weights no longer fit,
    and a torchvision Faster R-CNN failed to run). The factory's model is kept as it built it."""
    (tmp_path / "byom_dets.py").write_text(DETECTOR_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_dets", None)
    from edgeslim.models.registry import ModelSpec, create_model

    model = create_model(ModelSpec("byom_dets:build", 5, 3, (32, 32)), trust_pickle=True)
    import byom_dets

    own = byom_dets.build()
    assert model.box.out_channels == 4 and model.cls.out_channels == 5
    assert torch.equal(model.box.weight, own.box.weight)
    sd = tmp_path / "det.pt"
    torch.save(own.state_dict(), sd)  # the factory's own weights load back
    args = [
        "info",
        "byom_dets:build",
        "--weights",
        sd,
        "--input-shape",
        "3,32,32",
        "--trust-pickle",
        "--json",
    ]
    assert _json_out(args, capsys)["params"] == sum(p.numel() for p in own.parameters())


def test_a_class_count_replaces_only_the_layer_that_makes_the_models_class_scores(
    tmp_path, capsys, monkeypatch
):
    """Review of a user's own torchvision detectors (tvdet #2): ``pickle:PATH`` with a class count replaced
    the last 1x1 conv of any model (a DeepLabV3's auxiliary head, a detector's box conv) by a random one,
    and the class count reported and recorded was that layer's (20 for a 5-class Faster R-CNN: 4 x 5
    box values). A layer is replaced only where the model's forward returns one [N, k] tensor made by it;
    another model is refused in one line, and its class count is unknown (None), not guessed."""
    (tmp_path / "byom_dets2.py").write_text(DETECTOR_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_dets2", None)
    import byom_dets2

    from edgeslim.checkpoint import load_model
    from edgeslim.models.registry import ModelSpec, build_model

    det = tmp_path / "det.pt"
    torch.save(byom_dets2.build(), det)
    assert (
        main(["info", f"pickle:{det}", "--trust-pickle", "--input-shape", "3,32,32", "--num-classes", "3"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "is not a classifier whose head edgeslim can find (its forward returns a dict (cls, box)" in err
    assert len(err.splitlines()) == 1
    _, spec = build_model(ModelSpec(f"pickle:{det}", None, 3, (32, 32)), trust_pickle=True)
    assert spec.num_classes is None  # (it was 4: the box conv's outputs)
    # a prune checkpoint records the unknown count, and rebuilds from it
    _run(["prune", det, "--trust-pickle", "--input-shape", "3,32,32", "-o", tmp_path / "p.pt"], capsys)
    assert load_model(tmp_path / "p.pt", trust_pickle=True).spec.num_classes is None
    # a classifier's head is still replaced (a 1x1 conv before pooling, SqueezeNet-style, and a linear)
    from torch import nn

    for net in (
        nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        ),
        nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10), nn.Softmax(1)
        ),
    ):
        torch.save(net, tmp_path / "cls.pt")
        model, spec = build_model(
            ModelSpec(f"pickle:{tmp_path / 'cls.pt'}", 3, 3, (32, 32)), trust_pickle=True
        )
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3) and spec.num_classes == 3
        assert (
            build_model(ModelSpec(f"pickle:{tmp_path / 'cls.pt'}", None, 3, (32, 32)), trust_pickle=True)[
                1
            ].num_classes
            == 10
        )


IGNORING_CODE = (
    "import torch\n"
    "from torch import nn\n\n"
    "class Small(nn.Module):\n"
    "    def __init__(self, classes=10):\n"
    "        super().__init__()\n"
    "        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
    "                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
    "        self.fc = nn.Linear(8, classes)\n\n"
    "    def forward(self, x):\n"
    "        return self.fc(self.features(x))\n\n"
    "def ignores_kw(**kw):\n"
    "    return Small(1000)\n\n"
    "def default_ignored(num_classes=1000, pretrained=False):\n"
    "    return Small(1000)\n\n"
    "def uses(num_classes=1000, **kw):\n"
    "    return Small(num_classes)\n"
)


def test_a_factory_that_ignores_num_classes_is_refused(tmp_path, capsys, monkeypatch):
    """Review of the class-count probes (nc2 #1): since a factory given num_classes builds its own head,
    one taking **kwargs (or a num_classes it never uses) that builds a 1000-class model was trained and
    recorded as a 10-class one (slim: loss 7.18, acc 0.0%; info reported 10 classes for a 1000-output fc).
    Its [N, k] output's count is checked against the one given: another is refused in one line naming both."""
    (tmp_path / "byom_ign.py").write_text(IGNORING_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_ign", None)
    from edgeslim.errors import EdgeslimError
    from edgeslim.models.registry import ModelSpec, create_model

    for name in ("byom_ign:ignores_kw", "byom_ign:default_ignored"):
        with pytest.raises(EdgeslimError) as exc:
            create_model(ModelSpec(name, 10, 1, (28, 28)), trust_pickle=True)
        msg = str(exc.value)
        assert "was given num_classes 10 but the model it builds outputs 1000 classes" in msg, msg
        assert exc.value.params == ("num_classes",) and len(msg.splitlines()) == 1
    # a factory that uses it, and one given its own count, are built as before
    assert create_model(ModelSpec("byom_ign:uses", 7, 1, (28, 28)), trust_pickle=True).fc.out_features == 7
    assert create_model(ModelSpec("byom_ign:ignores_kw", 1000, 1, (28, 28)), trust_pickle=True)
    args = [
        "info",
        "byom_ign:ignores_kw",
        "--trust-pickle",
        "--input-shape",
        "1,28,28",
        "--num-classes",
        "10",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "given --num-classes 10 but the model it builds outputs 1000 classes" in err
        and len(err.splitlines()) == 1
    )


WEIGHT_NORM_CODE = (
    "from torch import nn\n\n"
    "class WN(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
    "                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
    "        self.fc = nn.utils.weight_norm(nn.Linear(8, 1000))\n\n"
    "    def forward(self, x):\n"
    "        return self.fc(self.features(x))\n\n"
    "def wn():\n"
    "    return WN()\n"
)


def test_the_class_count_probe_runs_the_model_itself_and_leaves_it_as_it_was(tmp_path, monkeypatch):
    """Review of the class-count probes (nc2 #3, #9b/c): the probe ran a deep copy of the model, which a
    model with torch.nn.utils.weight_norm cannot make ('Only Tensors created explicitly by the user ...
    support the deepcopy protocol'): its count was null (1000 before), and num_classes 10 was refused as
    'not a classifier ... its forward fails'. The probe runs the model itself, without gradients, and
    leaves every module's mode and every buffer as they were (training mode too: slim's refusal)."""
    import warnings

    (tmp_path / "byom_wn.py").write_text(WEIGHT_NORM_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_wn", None)
    from edgeslim.models.registry import ModelSpec, build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (weight_norm's deprecation)
        _, spec = build_model(ModelSpec("byom_wn:wn", None, 1, (28, 28)), trust_pickle=True)
        assert spec.num_classes == 1000
        model, spec = build_model(ModelSpec("byom_wn:wn", 10, 1, (28, 28)), trust_pickle=True)
    assert spec.num_classes == 10 and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    from edgeslim.models.user import probe_forward

    model.train()
    model.features[1].eval()  # (one module in another mode than the rest)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y = probe_forward(model, torch.rand(4, 1, 28, 28), training=True)  # BatchNorm in training mode
    assert y.shape == (4, 10) and not y.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and model.fc.training and not model.features[1].training


def test_a_model_that_fails_at_the_probe_size_is_told_to_give_input_shape(tmp_path, monkeypatch, capsys):
    """Review of the class-count probes (nc2 #4): create_model('m:fixed28', num_classes=10) of a factory
    whose model runs only at 28x28 was refused as 'not a classifier whose head edgeslim can find (its
    forward fails on inputs of shape 1,32,32 ...)', the default size, never naming input_size, which fixes
    it. The refusal says the forward fails at that size and names input_size. A review (session 35): on the
    command line it named `input_size`, which no command has (nor `--input-shape`, which fixes it): it
    names input_shape now, --input-shape there."""
    (tmp_path / "byom_f28.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Fixed28(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 4, 3, padding=1)\n"
        "        self.fc = nn.Linear(4 * 28 * 28, 1000)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.conv(x)).flatten(1))\n\n"
        "def fixed28():\n"
        "    return Fixed28()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_f28", None)
    from edgeslim.errors import EdgeslimError
    from edgeslim.models import create_model

    with pytest.raises(EdgeslimError) as exc:
        create_model("byom_f28:fixed28", trust_pickle=True, num_classes=10, in_channels=1)
    msg = str(exc.value)
    assert (
        "fails on inputs of shape 1,32,32" in msg and "as input_shape (C,H,W" in msg and "input_size" in msg
    ), msg
    assert "not a classifier" not in msg and exc.value.params == ("input_shape",)
    model = create_model("byom_f28:fixed28", trust_pickle=True, num_classes=10, in_channels=1, input_size=28)
    assert model.fc.out_features == 10
    capsys.readouterr()
    assert main(["info", "byom_f28:fixed28", "--num-classes", "3", "--trust-pickle"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "it takes as --input-shape (C,H,W" in line and "shape 3,32,32" in line, line
    assert (
        main(["info", "byom_f28:fixed28", "--num-classes", "3", "--trust-pickle", "--input-shape", "1,28,28"])
        == 0
    )


def test_a_binary_classifier_of_one_logit_gets_its_head_replaced(tmp_path, monkeypatch):
    """A review (session 35): a classifier whose head is Linear(8, 1) (one logit, as BCE trains it) given 10
    classes was refused as "not a classifier whose head edgeslim can find (its [N, 1] output does not come
    from fc)": the probe shifted the layer's outputs by 0, 1, ..., which left a single output as it was."""
    from torch import nn

    from edgeslim.models.user import _fit_classes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 1))  # fmt: skip
    fitted = _fit_classes(model, 10, (3, 16, 16), "the model")
    assert fitted[5].out_features == 10 and fitted(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_checkpoint_of_a_factory_that_ignores_num_classes_still_loads(tmp_path, monkeypatch, caplog):
    """Review of the class-count probes (nc2 #2): edgeslim replaced the head of a factory that ignores
    num_classes until its factories built their own heads, so a checkpoint it wrote for one (10 classes,
    fc [10, 8]) no longer loaded: 'checkpoint weights do not fit architecture ... (size mismatch for
    fc.weight ...)'. Such a checkpoint gets the head replaced as then, with one warning saying why."""
    (tmp_path / "byom_ign2.py").write_text(IGNORING_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("byom_ign2", None)
    import byom_ign2

    from edgeslim.checkpoint import load_model, make_checkpoint, save_checkpoint
    from edgeslim.models.registry import ModelSpec
    from edgeslim.models.user import replace_head

    old = byom_ign2.ignores_kw()
    replace_head(old, 10)  # what edgeslim built for it with 10 classes
    path = save_checkpoint(
        tmp_path / "old.pt", make_checkpoint(old, ModelSpec("byom_ign2:ignores_kw", 10, 1, (28, 28)))
    )
    loaded = load_model(path, trust_pickle=True)
    old.eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.model.eval()(x), old(x)) and loaded.spec.num_classes == 10
    assert "whose model outputs 1000 classes whatever num_classes it is given" in caplog.text


def test_prune_takes_a_whole_pickles_input_shape_from_its_image_folder_as_info_does(folder, tmp_path, capsys):
    """Fresh-eyes README trial, finding 8: `info` on a whole pickled module said "pass --input-shape C,H,W or
    --data" and took the shape from --data imagefolder --data-dir DIR, but `prune` ignored them and asked for
    --input-shape. Both take it from the folder's files (one function, pipelines.source.data_input)."""
    from edgeslim.checkpoint import load_model
    from edgeslim.models.registry import ModelSpec, create_model

    whole = tmp_path / "whole.pt"
    torch.save(create_model(ModelSpec("vgg-small", 3, 3, (32, 32))), whole)
    data = ["--data", "imagefolder", "--data-dir", folder]
    assert main(["prune", str(whole), "--trust-pickle", "-o", str(tmp_path / "x.pt")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "pass --input-shape C,H,W (e.g. 3,32,32) or --data (an image folder's with its --data-dir)" in err
    ), err
    for source, out in ((whole, "a.pt"), (f"pickle:{whole}", "b.pt")):
        _run(["prune", source, "--trust-pickle", *data, "-o", tmp_path / out], capsys)
        spec = load_model(tmp_path / out, trust_pickle=True).spec
        assert (spec.in_channels, *spec.input_size) == (3, 32, 32)
    assert "3,32,32" in _run(["info", whole, "--trust-pickle", *data], capsys)


def test_report_md_says_the_head_replaced_and_the_train_folder(cifar_zip, tmp_path, capsys):
    """README review, finding 6: report.md never said the classifier head was replaced (the docs promise
    `head: fc, 10 -> 3`; the terminal's stderr said it only), and its Files left out train/."""
    from edgeslim.checkpoint import save_model
    from edgeslim.models.registry import ModelSpec, create_model

    root = tmp_path / "data"
    with zipfile.ZipFile(cifar_zip) as zf:
        for split, n in (("train", 16), ("test", 8)):
            for cls in CLASSES:
                names = sorted(
                    x for x in zf.namelist() if x.startswith(f"{split}/{cls}/") and x.endswith(".jpg")
                )
                (root / split / cls).mkdir(parents=True)
                for name in names[:n]:
                    (root / split / cls / Path(name).name).write_bytes(zf.read(name))
    spec = ModelSpec("vgg-small", 10, 3, (32, 32))
    ck = save_model(tmp_path / "ten.pt", create_model(spec), spec)
    out = tmp_path / "run"
    _run(["slim", ck, "--data", "imagefolder", "--data-dir", root, "--num-classes", "3", "--epochs", "1",
          "--batch-size", "16", "--shrink", "0.2", "--threads", "1", "--out", out], capsys)  # fmt: skip
    md = (out / "report.md").read_text()
    head = json.loads((out / "report.json").read_text())["head"]
    assert f"- head: {head['head']}, 10 -> 3 (the classifier head replaced for the data's classes" in md, md
    assert "- `train/`: the trainer's checkpoint (with xi, for resume) and `log.jsonl`" in md, md
    assert (out / "train" / "log.jsonl").is_file()
