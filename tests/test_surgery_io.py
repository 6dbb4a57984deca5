"""Slim models survive checkpoints (recipe + weights_only), ONNX Runtime, TorchScript; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.checkpoint import load_model, save_model
from edgeslim.cli import main
from edgeslim.models import create_model
from edgeslim.models.registry import ModelSpec
from edgeslim.surgery import apply_recipe, compose_recipes, prune_with_report, verify


def _zeroed(arch: str, spec: ModelSpec, frac: float = 0.4, bias: float = 0.0) -> nn.Module:
    m = create_model(spec).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                sel = torch.rand(mod.num_features, generator=gen) < frac
                sel[0] = False
                mod.weight[sel] = 0
                mod.bias[sel] = bias
                mod.running_mean.normal_(0, 0.1, generator=gen)
    return m


@pytest.fixture(scope="module")
def mnv2():
    spec = ModelSpec("mobilenetv2", num_classes=10, in_channels=3, input_size=(32, 32))
    m = _zeroed("mobilenetv2", spec, bias=0.2)
    x = torch.randn(4, 3, 32, 32)
    return spec, m, x, prune_with_report(m, x)


def test_checkpoint_roundtrip_weights_only(tmp_path, mnv2):
    spec, m, x, res = mnv2
    p = save_model(tmp_path / "slim.pt", res.model, spec, recipe=res.recipe)
    json.dumps(res.recipe)  # recipe is plain JSON
    loaded = load_model(p)  # torch.load(weights_only=True) + apply_recipe
    assert loaded.recipe == res.recipe
    y = loaded.model.eval()(x)
    assert torch.equal(y, res.model.eval()(x))
    assert sum(p.numel() for p in loaded.model.parameters()) == res.report["params_after"]


def test_apply_recipe_rejects_wrong_architecture(mnv2):
    _, _, _, res = mnv2
    from edgeslim.errors import EdgeslimError

    with pytest.raises(EdgeslimError):
        apply_recipe(create_model("vgg-small"), res.recipe)
    with pytest.raises(EdgeslimError):
        apply_recipe(create_model("mobilenetv2"), {"layers": {}})


def test_onnx_runtime_and_torchscript(tmp_path, mnv2):
    import onnxruntime as ort

    _, _, x, res = mnv2
    slim = res.model.eval()
    onnx_path = tmp_path / "slim.onnx"
    torch.onnx.export(slim, (x,), str(onnx_path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False)  # fmt: skip
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, slim(x).detach().numpy(), atol=1e-4, rtol=1e-4)
    traced = torch.jit.trace(slim, x)
    assert torch.allclose(traced(x), slim(x), atol=1e-5)
    scripted = torch.jit.script(slim)
    assert torch.allclose(scripted(x), slim(x), atol=1e-5)


def test_prune_twice_composes_recipes():
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=3, input_size=(32, 32))
    m = _zeroed("vgg-small", spec, frac=0.2)
    x = torch.randn(2, 3, 32, 32)
    first = prune_with_report(m, x)
    with torch.no_grad():  # more zeros appear in the slim model (e.g. after more training)
        first.model.features[4].weight[:3] = 0
        first.model.features[4].bias[:3] = 0
    second = prune_with_report(first.model, x)
    recipe = compose_recipes(first.recipe, second.recipe)
    rebuilt = apply_recipe(create_model(spec), recipe)
    rebuilt.load_state_dict(second.model.state_dict())
    assert verify(second.model, rebuilt, x)["max_abs_diff"] == 0


@pytest.fixture()
def ckpt(tmp_path):
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=1, input_size=(28, 28))
    m = _zeroed("vgg-small", spec, frac=0.3, bias=-0.1)
    return save_model(tmp_path / "dense.pt", m, spec), m


def test_cli_prune_writes_reloadable_checkpoint(tmp_path, ckpt, fmnist_dir, capsys):
    path, dense = ckpt
    out = tmp_path / "slim.pt"
    rc = main(["prune", str(path), "-o", str(out), "--data", "fashion-mnist", "--data-dir", fmnist_dir,
               "--calib", "32", "--round-to", "4", "--plot", str(tmp_path / "ch.png"), "--json"])  # fmt: skip
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["removed_channels"] > 0 and rep["max_abs_diff"] < 1e-4  # relu(-0.1) = 0: exact
    assert rep["exact"] and rep["folded_biases"] == []
    assert (tmp_path / "ch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r["after"][-1] % 4 == 0 for r in rep["layers"] if r["type"] == "Conv2d")
    loaded = load_model(out)
    assert loaded.recipe and loaded.meta["surgery"]["removed_channels"] == rep["removed_channels"]
    x = torch.randn(3, 1, 28, 28)
    assert verify(dense, loaded.model, x)["max_abs_diff"] < 1e-4
    # refuses to overwrite; the existing file is untouched
    before = out.read_bytes()
    assert main(["prune", str(path), "-o", str(out)]) == 2
    assert out.read_bytes() == before
    assert "--force" in capsys.readouterr().err


def test_cli_prune_checks_fewer_images_of_a_large_input_by_default(tmp_path, cifar_zip, capsys):
    """A segmentation review: prune checked 32 random 520x520 inputs in one forward (24 s, 2.8 GB for a
    model of 0.1 s per image) and 256 images of a data set whatever their size; by default it now takes
    256 up to 64x64 and as many larger ones as hold the same pixels (at least 8), a few per forward."""
    import zipfile

    from edgeslim.pipelines.prune import calib_count

    assert [calib_count((3, s, s)) for s in (28, 64, 224, 520, 640)] == [256, 256, 20, 8, 8]
    assert calib_count((3, 520, 520), 100) == 100
    photos = tmp_path / "photos"
    photos.mkdir()
    with zipfile.ZipFile(cifar_zip) as z:
        for name in [n for n in z.namelist() if n.endswith(".jpg")][:30]:
            (photos / name.replace("/", "_")).write_bytes(z.read(name))
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=3, input_size=(224, 224))
    path = save_model(tmp_path / "t.pt", _zeroed("vgg-small", spec, frac=0.3, bias=-0.1), spec)
    data = ["--data", "images", "--data-dir", str(photos), "--json"]
    assert main(["prune", str(path), "-o", str(tmp_path / "s.pt"), *data]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["calibration"].endswith(", 20 spread evenly over them") and rep["max_abs_diff"] < 1e-4
    assert main(["prune", str(path), "-o", str(tmp_path / "s2.pt"), "--calib", "12", *data]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"].endswith(", 12 spread evenly over them")


def test_cli_prune_calibrates_on_the_data_set_the_checkpoint_records(tmp_path, fmnist_dir, capsys):
    """As export validates: without --data, the images of the checkpoint's own data set (meta)."""
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=1, input_size=(28, 28))
    m = _zeroed("vgg-small", spec, frac=0.3, bias=-0.1)
    path = save_model(tmp_path / "t.pt", m, spec, meta={"data": "fashion-mnist", "data_dir": fmnist_dir})
    assert main(["prune", str(path), "-o", str(tmp_path / "s.pt"), "--calib", "16", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["calibration"] == "fashion-mnist test, 16 class-balanced (seed 0)"
    bare = save_model(tmp_path / "b.pt", m, spec)  # no data recorded: random inputs, and it says so
    assert main(["prune", str(bare), "-o", str(tmp_path / "s2.pt"), "--json"]) == 0
    assert "random" in json.loads(capsys.readouterr().out)["calibration"]


def test_cli_graph_and_errors(tmp_path, ckpt, capsys):
    path, _ = ckpt
    assert main(["graph", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Group 1" in text and "features.1" in text and "MACs" in text
    assert main(["graph", "vgg-small", "--input-shape", "3,32,32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["groups"] and d["macs"] > 0 and d["bn_groups"]
    assert main(["graph", str(path), "--input-shape", "3,28,28"]) == 2  # the model takes 1 channel
    assert "input of shape" in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o.pt")]) == 2
    assert main(["prune", str(path), "-o", str(tmp_path / "o.pt"), "--round-to", "0"]) == 2
    ts = tmp_path / "m.ts"
    torch.jit.script(create_model("vgg-small")).save(str(ts))
    assert main(["prune", str(ts), "-o", str(tmp_path / "o.pt"), "--trust-pickle"]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_cli_prune_of_a_model_without_batchnorm_says_why_nothing_goes(tmp_path, capsys):
    """A model whose BN layers were fused into its convs (ultralytics' fuse(), say) has no channel
    surgery can remove: the message says that, not "train with proximal slimming first"."""
    fused = tmp_path / "fused.pt"
    torch.save(
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)), fused
    )
    args = ["prune", str(fused), "--trust-pickle", "--input-shape", "3,16,16", "-o", str(tmp_path / "s.pt")]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no BatchNorm channel to remove" in err and "before fusing" in err
    assert "sparsify it first" not in err


def test_cli_prune_of_a_model_normalized_without_batchnorm_names_its_norms(tmp_path, capsys):
    """The review of a user's own model files: ``prune timm:convnext_atto`` (LayerNorm, no BN) gave the hint
    "a model whose BN layers were fused into its convs has none". It names the norms the model has; prune
    still writes the unchanged copy (exit 0, as the fused case), where slim refuses such a model."""
    gn = tmp_path / "gn.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, 4, 3)), gn)  # fmt: skip
    args = ["prune", str(gn), "--trust-pickle", "--input-shape", "3,16,16", "-o", str(tmp_path / "s.pt")]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no BatchNorm channel to remove: it is normalized by GroupNorm" in err and "fused" not in err
    assert main([*args, "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["other_norms"] == ["GroupNorm"]


def test_prune_of_a_frozen_batchnorm_model_names_it(tmp_path, capsys):
    """A review of the day's new code (finding 9): prune of a model normalized by torchvision's
    FrozenBatchNorm2d (frozen BN: fixed scales, none trained) got the hint "a model whose BN layers were
    fused into its convs has none". It names FrozenBatchNorm2d and how to slim such a model."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = tmp_path / "frozen.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), FrozenBatchNorm2d(8), torch.nn.ReLU(),
                                   torch.nn.Conv2d(8, 4, 3)), frozen)  # fmt: skip
    args = ["prune", str(frozen), "--trust-pickle", "--input-shape", "3,16,16", "-o", str(tmp_path / "s.pt")]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "it is normalized by FrozenBatchNorm2d, which has no trainable per-channel BN scale" in err, err
    assert "build the model with nn.BatchNorm2d" in err and "fused" not in err


class ResidualNet(nn.Module):
    """conv-BN, a residual block (its two BNs share channels), and a conv-BN whose channels are the output."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(y + self.b2(self.c2(y)))
        return self.b3(self.c3(y))


def test_cli_prune_says_why_zero_scale_channels_stay(tmp_path, capsys):
    """A model with BN but no zero scale is told to sparsify first (not that it has no BN: a user
    trial's timm MobileNetV3 was); zero scales that stay are counted by cause; the next step keeps
    --trust-pickle."""

    net = ResidualNet().eval()
    path = tmp_path / "net.pt"
    torch.save(net, path)
    args = ["prune", str(path), "--trust-pickle", "--input-shape", "3,8,8", "--round-to", "1"]
    assert main([*args, "-o", str(tmp_path / "a.pt")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no BN scale is exactly zero" in err and "sparsify it first" in err and "no BatchNorm" not in err
    assert f"next: edgeslim export {tmp_path / 'a.pt'} --trust-pickle" in err
    # an architecture name without --weights: random weights, nothing trained (a trial forgot them)
    assert main(["prune", "tv:resnet18", "--input-shape", "3,32,32", "-o", str(tmp_path / "r.pt")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "random weights: give the sparsified weights with --weights" in err
    with torch.no_grad():
        net.b1.weight[:2] = 0  # b2's same channels are nonzero: coupled
        net.b1.weight[4] = net.b2.weight[4] = net.b1.bias[4] = net.b2.bias[4] = 0  # removable
        net.b3.weight[:3] = 0  # model outputs: behind a barrier
    torch.save(net, path)
    assert main([*args, "-o", str(tmp_path / "b.pt"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["removed_channels"] == 1 and rep["zero_scale_channels"] == 6
    assert rep["zero_kept"] == {
        "coupled_with_nonzero": 2,
        "behind_barrier": 3,
        "read_as_input_dependent": 0,
        "read_as_different_constants": 0,
    }


def test_report_rows_say_what_each_layer_is_and_the_plot_draws_conv_and_linear_only(tmp_path, monkeypatch):
    timm_layers = pytest.importorskip("timm.layers")
    from matplotlib.axes import Axes

    from edgeslim.surgery.plot import plot_channels

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), timm_layers.BatchNormAct2d(8), nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2),
    )  # fmt: skip
    with torch.no_grad():
        model[1].weight[:3] = 0
        model[3].weight[:2] = 0
    rep = prune_with_report(model.eval(), torch.randn(1, 3, 12, 12)).report
    kinds = {r["name"]: r["kind"] for r in rep["layers"]}
    assert kinds == {"0": "conv", "1": "norm", "2": "conv", "3": "norm", "7": "linear"}, kinds
    bars: list[int] = []
    real_bar = Axes.bar
    monkeypatch.setattr(
        Axes, "bar", lambda self, xs, *a, **k: bars.append(len(xs)) or real_bar(self, xs, *a, **k)
    )
    plot_channels(rep, tmp_path / "channels.png")
    assert bars == [3, 3]  # dense and slim bars of the two convs and the linear (timm's norm+act is a norm)


def test_the_next_command_is_quoted_for_the_shell(tmp_path, capsys):
    """A trial's folder with a space broke the 'next:' command it copied."""
    out = tmp_path / "my runs" / "p.pt"
    assert main(["prune", "vgg-small", "-o", str(out)]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"next: edgeslim export '{out}' --onnx '{out.with_suffix('.onnx')}'"), last


class ChannelCountNet(nn.Module):
    """A forward that scales by its channel count (attention-like): a value no channel graph sees."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return self.fc((y * y.shape[1] ** -0.5).mean((2, 3)))


def test_cli_prune_refuses_a_slim_model_its_check_measured_wrong(tmp_path, capsys, caplog):
    """Review of surgery's reach (advnets.ChannelScale, ViewAlias, ChannelBranch): prune wrote a slim
    checkpoint its own check measured 0.0256 off (0.37 for ViewAlias) where the construction is exact, exit
    0 and the usual next step. It now refuses in one line and writes nothing (strict: not after the
    library's warning of the same)."""
    path = tmp_path / "net.pt"
    torch.save(ChannelCountNet().eval(), path)
    out = tmp_path / "slim.pt"
    args = [
        "prune",
        str(path),
        "--trust-pickle",
        "--input-shape",
        "3,8,8",
        "--ratio",
        "0.5",
        "--round-to",
        "1",
    ]
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "check measured the slim" in line[0] and "register_leaf" in line[0]
    assert "nothing was written" in line[0] and "next:" not in err
    assert "surgery was exact by construction" not in caplog.text  # (the library's warning: the refusal here)
    assert not out.exists()


def test_cli_prune_warns_of_an_approximate_fold_that_moved_the_outputs(tmp_path, capsys, caplog):
    """A review: prune of a UNet whose zero-scale channels kept a BN shift said "exact: no", max |diff|
    0.170 and "top-1 agreement 100.00%" and nothing else, while the outputs' largest |value| was 1.17
    (15% of it, at the borders). A fold that moved the outputs by more than 1e-3 of their scale is a
    warning saying what the difference is relative to; an exact one (zero shifts) is not."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1),
    ).eval()  # fmt: skip
    for shift, warned in ((0.5, True), (0.0, False)):
        with torch.no_grad():
            net[1].weight[:4], net[1].bias[:4] = 0.0, shift  # zero scales; the shift folds into a padded conv
        path = tmp_path / f"net{shift}.pt"
        torch.save(net, path)
        args = ["prune", path, "--trust-pickle", "--input-shape", "3,16,16", "--round-to", "1", "--json"]
        assert main([str(a) for a in [*args, "-o", tmp_path / f"s{shift}.pt"]]) == 0
        rep = json.loads(capsys.readouterr().out)
        said = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        caplog.clear()
        assert rep["removed_channels"] == 4 and rep["exact"] is not warned
        assert ("folded approximately into 3" in said) is warned, said
        if warned:
            assert rep["max_scaled_diff"] > 1e-3
            assert f"{rep['max_scaled_diff']:.1%} of the output's scale" in said
            assert "its largest |value|, at least 1" in said
