"""The model zoo: every paper architecture on 28x28x1 and 32x32x3, fx-traceable; tv: models adapted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeslim.errors import EdgeslimError
from edgeslim.models import ModelSpec, create_model, list_models

ZOO = ["vgg-small", "vgg11", "vgg19", "resnet20", "resnet56", "resnet164", "densenet40", "mobilenetv2"]


def nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", ZOO)
def test_zoo_forward_and_fx(arch):
    for shape, classes in (((1, 28, 28), 10), ((3, 32, 32), 100)):
        m = create_model(ModelSpec(arch, classes, shape[0], shape[1:])).eval()
        x = torch.randn(2, *shape)
        with torch.no_grad():
            y = m(x)
        assert y.shape == (2, classes) and torch.isfinite(y).all()
    gm = torch.fx.symbolic_trace(m)  # surgery traces the zoo with torch.fx
    with torch.no_grad():
        assert torch.allclose(gm(x), y, atol=1e-5)


def test_zoo_sizes_match_the_papers():
    # parameter counts of the CIFAR-10 models (He et al. 2016; Liu et al. 2017)
    expect = {"resnet20": 0.27e6, "resnet56": 0.86e6, "resnet164": 1.70e6, "densenet40": 1.06e6}
    for arch, n in expect.items():
        assert abs(nparams(create_model(arch)) - n) / n < 0.02, arch
    d = create_model("densenet40")
    assert d.fc.in_features == 24 + 3 * 12 * 12  # no compression: 456 channels at the end
    bns = [m for m in create_model("resnet164").modules() if isinstance(m, nn.BatchNorm2d)]
    # network-slimming initialisation: every BN scale starts at 0.5
    assert len(bns) == 3 * 18 * 3 + 1 and all(float(b.weight[0].detach()) == 0.5 for b in bns)
    mb = create_model("mobilenetv2")
    strides = [m.stride[0] for m in mb.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert strides == [2, 2, 2]  # CIFAR stem: three downsamples only


def test_registry_lists_zoo_and_tv():
    names = list_models()
    assert set(ZOO) <= set(names)
    assert {"tv:resnet18", "tv:mobilenet_v3_small", "tv:inception_v3"} <= set(names)
    assert "tv:fasterrcnn_resnet50_fpn" not in names  # classification and segmentation models only
    assert "tv:lraspp_mobilenet_v3_large" in names


@pytest.mark.parametrize(
    "name,size",
    [("resnet18", 32), ("mobilenet_v3_small", 28), ("squeezenet1_1", 32), ("shufflenet_v2_x0_5", 32),
     ("efficientnet_b0", 28), ("googlenet", 32), ("inception_v3", 75)],
)  # fmt: skip
def test_tv_models_adapted(name, size):
    m = create_model(f"tv:{name}", num_classes=7, in_channels=1)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs[0].in_channels == 1 and all(c.in_channels != 1 or c is convs[0] for c in convs[:3])
    m.train()  # googlenet / inception return plain logits in training mode too (no aux heads)
    y = m(torch.randn(2, 1, size, size))
    assert isinstance(y, torch.Tensor) and y.shape == (2, 7)


def test_tv_rgb_keeps_stem():
    m = create_model("tv:resnet18", num_classes=10)
    assert m.conv1.in_channels == 3 and m.fc.out_features == 10


def test_unknown_names():
    with pytest.raises(EdgeslimError, match="unknown architecture 'resnet21'; did you mean resnet20"):
        create_model("resnet21")
    with pytest.raises(
        EdgeslimError, match="unknown torchvision model 'tv:resnet19'; did you mean tv:resnet18"
    ):
        create_model("tv:resnet19")
    with pytest.raises(EdgeslimError, match="unknown model family 'no-such'"):
        create_model("no-such:resnet18")
    # (tvdet #7: a detector's name was "unknown ... did you mean tv:lraspp_mobilenet_v3_large", never how
    # to bring one)
    with pytest.raises(
        EdgeslimError, match="is a torchvision detector, and tv: names are its classifiers"
    ) as ei:
        create_model("tv:fasterrcnn_mobilenet_v3_large_fpn")
    assert "whole pickled module" in str(ei.value) and "package.module:Factory" in str(ei.value)
    with pytest.raises(EdgeslimError, match="does not accept"):
        create_model(ModelSpec("tv:resnet18", kwargs={"bogus": 1}))


def test_a_torchvision_segmenter_without_an_input_shape_is_built_at_224(capsys):
    """A review: tv:lraspp_mobilenet_v3_large without --input-shape was pruned and exported at 3x32x32
    (its deepest features 2x2) without a word. A segmenter's default is its backbone's 224x224; a
    classifier keeps 32x32."""
    import json

    from edgeslim.cli import main
    from edgeslim.pipelines.source import load_model_or_arch

    seg = load_model_or_arch("tv:lraspp_mobilenet_v3_large", trust_pickle=False, num_classes=3)
    assert seg.spec.input_size == (224, 224)
    assert load_model_or_arch("tv:resnet18", trust_pickle=False).spec.input_size == (32, 32)
    assert main(["info", "tv:lraspp_mobilenet_v3_large", "--num-classes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [3, 224, 224]


def test_a_torchvision_segmenter_by_name_prunes_and_exports(tmp_path, capsys):
    """tv:lraspp_mobilenet_v3_large (a user trial's segmentation model was 'unknown ...; did you mean
    tv:mobilenet_v3_large', although surgery handles it): built without any download (its backbone
    too), its state_dict with --num-classes, pruned exactly, exported with its one 'out' map."""
    import json

    import onnx

    from edgeslim.cli import main
    from edgeslim.pipelines.source import load_model_or_arch

    loaded = load_model_or_arch("tv:lraspp_mobilenet_v3_large", trust_pickle=False, num_classes=3)
    model = loaded.model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[: m.num_features // 4] = 0
    sd = tmp_path / "seg_sd.pt"
    torch.save(model.state_dict(), sd)
    args = [
        "tv:lraspp_mobilenet_v3_large",
        "--weights",
        str(sd),
        "--num-classes",
        "3",
        "--input-shape",
        "3,64,64",
    ]
    assert main(["prune", *args, "-o", str(tmp_path / "slim.pt"), "--round-to", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["removed_channels"] > 0 and rep["max_abs_diff"] < 1e-4
    assert main(["export", str(tmp_path / "slim.pt"), "--onnx", str(tmp_path / "s.onnx"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["onnx"]["validation"]["passed"]
    (out,) = onnx.load(str(tmp_path / "s.onnx")).graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [3, 64, 64]


def test_model_spec_takes_one_number_for_a_square_image() -> None:
    """``ModelSpec("vgg-small", 10, 1, 28)`` (timm's img_size habit) is 28 x 28, not a spec whose
    checkpoint fails to save (``to_dict`` iterated the int) and whose input shape is (1, 28)."""
    from edgeslim.models import ModelSpec

    spec = ModelSpec("vgg-small", 10, 1, 28)
    assert spec.input_size == (28, 28) and spec.input_shape == (1, 28, 28)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec("vgg-small", input_size=[24, 32]).input_size == (24, 32)  # (a list, as JSON gives)


def test_a_checkpoint_spec_out_of_range_is_one_line() -> None:
    """A security probe: num_classes 2**40 in a checkpoint's spec failed to allocate the head (exit 1),
    -5 failed in torch."""
    import pytest

    from edgeslim.errors import EdgeslimError
    from edgeslim.models import ModelSpec

    for bad in ({"num_classes": 2**40}, {"num_classes": -5}, {"in_channels": 0}, {"input_size": [0, 32]}):
        with pytest.raises(EdgeslimError, match="out of range; re-create the checkpoint"):
            ModelSpec.from_dict({"arch": "vgg-small", **bad})
