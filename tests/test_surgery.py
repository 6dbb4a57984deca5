"""Channel surgery on the zoo and torchvision BN models: remove zeroed groups, prove nothing changed."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

from edgeslim.errors import EdgeslimError
from edgeslim.models import create_model
from edgeslim.surgery import build_graph, prune_with_report, verify


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters of a trained-looking network (not 1/0), any BN dimension."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def zero_groups(model: nn.Module, x: torch.Tensor, frac: float = 0.3, seed: int = 0) -> dict:
    """Zero scale and bias of a random subset of every coupled BN group; returns what was zeroed."""
    g = build_graph(model, x)
    gen = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    zeroed: dict[str, set[int]] = {}
    for bg in g.bn_groups():
        sel = torch.rand(bg.size, generator=gen) < frac
        sel[0] = False  # never ask for an empty group
        for name, idx in bg.members:
            with torch.no_grad():
                mods[name].weight[idx[sel]] = 0
                mods[name].bias[idx[sel]] = 0
            zeroed.setdefault(name, set()).update(idx[sel].tolist())
    return zeroed


def bias_zeroed(model: nn.Module, zeroed: dict, seed: int = 1) -> None:
    """Give the zero-scale channels a nonzero BN bias (their constant output is then folded)."""
    gen = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, idx in zeroed.items():
            idx = sorted(idx)
            mods[name].bias[idx] = torch.randn(len(idx), generator=gen) * 0.3


def tv(name: str, **kw):
    return lambda: torchvision.models.get_model(name, weights=None, num_classes=10, **kw)


# Smallest variant of every torchvision family with BatchNorm (ResNeXt/Wide-ResNet: the
# torchvision ResNet class with one block per stage, the 50-layer ones cost minutes on 2 cores).
FAMILIES = {
    "resnet18": (tv("resnet18"), 64),
    "resnext": (
        lambda: tv_resnet.ResNet(
            tv_resnet.Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10
        ),
        64,
    ),  # fmt: skip
    "wide_resnet": (
        lambda: tv_resnet.ResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10),
        64,
    ),  # fmt: skip
    "mobilenet_v2": (tv("mobilenet_v2", width_mult=0.5), 64),
    "mobilenet_v3_small": (tv("mobilenet_v3_small"), 64),
    "efficientnet_b0": (tv("efficientnet_b0"), 64),
    "efficientnet_v2_s": (tv("efficientnet_v2_s"), 64),
    "regnet_x_400mf": (tv("regnet_x_400mf"), 64),
    "regnet_y_400mf": (tv("regnet_y_400mf"), 64),
    "densenet121": (tv("densenet121"), 64),
    "vgg11_bn": (tv("vgg11_bn"), 32),
    "shufflenet_v2_x0_5": (tv("shufflenet_v2_x0_5"), 64),
    "mnasnet0_5": (tv("mnasnet0_5"), 64),
    "googlenet": (tv("googlenet", aux_logits=False, init_weights=False), 64),
    "inception_v3": (tv("inception_v3", aux_logits=False, init_weights=False), 80),
}
ZOO = ["vgg-small", "resnet20", "densenet40", "mobilenetv2"]


#: Squeeze-excitation models: a zero-scale channel with a nonzero bias is a constant k, but the
#: gate multiplies it by an input-dependent s(x), so k * s(x) is not a constant: kept (correctly).
SE_GATED = {"mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf"}


def _check_surgery(model: nn.Module, size: int, in_ch: int = 3, se_gated: bool = False) -> None:
    model = randomize_bn(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, in_ch, size, size, generator=gen)
    zeroed = zero_groups(model, x)
    assert sum(len(v) for v in zeroed.values()) > 0
    ref = {k: v.clone() for k, v in model.state_dict().items()}

    res = prune_with_report(model, x)
    slim, rep = res.model, res.report
    # input model untouched
    assert all(torch.equal(ref[k], v) for k, v in model.state_dict().items())
    # exact removal (scale and bias zero): same outputs on new inputs, in float64 so that the
    # 1e-4 bound is about the math, not float32 rounding of outputs of random-weight nets
    fresh = torch.randn(2, in_ch, size, size, generator=gen, dtype=torch.float64)
    try:  # float32 -> float64 -> float32 is exact: convert in place instead of copying
        d64 = verify(model.double(), slim.double(), fresh)
    finally:
        model.float()
        slim.float()
    assert d64["max_abs_diff"] < 1e-4 and d64["top1_agreement"] == 1.0
    # channel counts dropped as expected, at every BN
    mods = dict(slim.named_modules())
    for name, idx in zeroed.items():
        dense = model.get_submodule(name).num_features
        assert mods[name].num_features == dense - len(idx), name
    assert rep["removed_channels"] > 0 and rep["params_after"] < rep["params_before"]
    assert rep["macs_after"] < rep["macs_before"]

    # nonzero biases on the zero-scale channels: constants are folded, the deviation is measured
    bias_zeroed(model, zeroed)
    calib = [torch.randn(4, in_ch, size, size, generator=gen)]
    res2 = prune_with_report(model, x, calib_inputs=calib)
    rep2 = res2.report
    if se_gated:
        assert 0 < rep2["removed_channels"] < rep["removed_channels"]
    else:
        assert rep2["removed_channels"] == rep["removed_channels"]
    assert rep2["folded_biases"], "nonzero constants must be folded somewhere"
    stated = rep2["max_abs_diff"]
    assert stated == pytest.approx(verify(model, res2.model, calib)["max_abs_diff"], rel=1e-5, abs=1e-7)
    if all(f["exact"] for f in rep2["folded_biases"]):
        assert stated < 1e-4
    # folding helps: dropping the constants instead would deviate more (or equally)
    dropped = copy.deepcopy(res2.model)
    for f in rep2["folded_biases"]:
        layer = dropped.get_submodule(f["layer"])
        base = res.model.get_submodule(f["layer"]).bias
        with torch.no_grad():
            layer.bias.copy_(base if base is not None else torch.zeros_like(layer.bias))
    assert verify(model, dropped, calib)["max_abs_diff"] >= stated - 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_torchvision_family(family: str) -> None:
    make, size = FAMILIES[family]
    torch.manual_seed(0)
    _check_surgery(make(), size, se_gated=family in SE_GATED)


@pytest.mark.parametrize("arch", ZOO)
def test_zoo(arch: str) -> None:
    torch.manual_seed(0)
    _check_surgery(create_model(arch), 32)


def test_inputs_of_the_wrong_type_are_one_type_error_naming_the_parameter() -> None:
    """A list as ``example_input`` or dict batches as ``calib_inputs`` raised "'list' object has no
    attribute 'device'" from deep inside the capture (from the segmentation trial)."""
    m = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(
        EdgeslimError, match="^example_input must be a tensor: .* got list; for a model of several"
    ):
        prune_with_report(m, [x])
    with pytest.raises(
        TypeError, match=r"^each batch of calib_inputs must be a tensor or an \(x, y\) pair.* got dict$"
    ):
        prune_with_report(m, x, calib_inputs=[{"x": x}])
    with pytest.raises(
        TypeError, match="^calib_inputs must be a tensor or an iterable of batches, got dict$"
    ):
        prune_with_report(m, x, calib_inputs={"x": x})
    with pytest.raises(TypeError, match="^each batch of inputs .* got tuple of str$"):
        verify(m, m, [("a", 1)])
    assert prune_with_report(m, x, calib_inputs=[(x, torch.zeros(1))]).report["exact"]


def test_a_channels_last_model_stays_channels_last() -> None:
    """A trial pruned a channels_last timm ResNet-18: 6 of 20 resized conv weights came back in the
    default layout (slower on GPUs, silently)."""
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.num_features >= 128:
                m.weight[: m.num_features // 4] = 0
                m.bias[: m.num_features // 4] = 0
    res = prune_with_report(model, torch.randn(1, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    convs = [m for m in res.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert res.report["removed_channels"] > 0
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def _macs_measured(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates per sample by torch's own counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x)
    return fc.get_total_flops() / 2 / x.shape[0]


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_a_video_network_of_conv3d_and_batchnorm3d_is_pruned_exactly(name: str) -> None:
    """Review of channel surgery outside the zoo (2026-12-06): torchvision's r3d_18, mc3_18 and
    r2plus1d_18 were 0% removable: conv3d and adaptive_avg_pool3d were barriers ("unsupported
    function"), while slimming trains their BatchNorm3d scales to zero. Torch-Pruning removes 30%
    of r3d_18 exactly. Now ~30% of every group (scale and bias zero) goes, exactly in float64, and
    the report's MACs are torch's FlopCounterMode count of the dense and the slim network."""
    model = randomize_bn(torchvision.models.get_model(name, weights=None, num_classes=10)).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 32, 32, generator=gen, dtype=torch.float64)
    zeroed = zero_groups(model, x)
    res = prune_with_report(model, x)
    rep = res.report
    dense, slim = (
        sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm3d)) for m in (model, res.model)
    )
    assert dense - slim == sum(map(len, zeroed.values())) > 0.2 * dense
    assert rep["exact"] and rep["barriers"] == [
        "<model> (input): model input",
        "<model> (output): model output",
    ]
    fresh = torch.randn(2, 3, 4, 32, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = model(fresh)
        assert float((ref - res.model(fresh)).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max()))
    assert rep["macs_before"] == _macs_measured(model, x)
    assert rep["macs_after"] == _macs_measured(res.model, x) < rep["macs_before"]
    assert rep["params_after"] == sum(p.numel() for p in res.model.parameters()) < rep["params_before"]


class Conv3dNet(nn.Module):
    """Conv3d -> BN3d -> ReLU -> a 3-d consumer ``tail`` (a conv or a transposed conv)."""

    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.tail = nn.Conv3d(3, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8), tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize(
    ("tail", "exact"),
    [
        (lambda: nn.Conv3d(8, 4, 3), True),  # no padding: every output sees the whole constant
        (lambda: nn.Conv3d(8, 4, (1, 1, 1)), True),
        (lambda: nn.ConvTranspose3d(8, 4, 1), True),
        (lambda: nn.Conv3d(8, 4, 3, padding=1), False),  # zero-padded: the border outputs see less of it
        (lambda: nn.ConvTranspose3d(8, 4, 2, stride=2), False),  # a pattern with the stride's period
    ],
    ids=["conv3d_k3", "conv3d_k1", "convtranspose3d_k1", "conv3d_k3_padded", "convtranspose3d_k2s2"],
)
def test_the_constant_of_a_removed_conv3d_channel_is_folded_as_in_2d(tail, exact: bool) -> None:
    """Same review: with only the BN3d scale zeroed, relu(shift) is a constant the next 3-d layer
    reads; it is folded into that layer's bias, exactly where its input is not zero-padded (1x1x1,
    unpadded, a 1x1x1 transposed conv), approximately (the mean over output positions) otherwise,
    and reported so, as for Conv2d."""
    torch.manual_seed(0)
    model = randomize_bn(Conv3dNet(tail())).double()
    with torch.no_grad():
        model.bn.weight[[1, 5, 6]] = 0
        model.bn.bias[[1, 5, 6]] = torch.tensor([0.4, 0.7, -0.2], dtype=torch.float64)  # relu(-0.2): 0
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 8, 8, generator=gen, dtype=torch.float64)
    res = prune_with_report(model, x)
    assert res.model.conv.out_channels == res.model.bn.num_features == res.model.tail.in_channels == 5
    assert res.report["folded_biases"] == [{"layer": "tail", "channels": 2, "exact": exact}]
    assert res.report["exact"] is exact
    fresh = torch.randn(2, 3, 4, 8, 8, generator=gen, dtype=torch.float64)
    diff = verify(model, res.model, fresh)["max_abs_diff"]
    if exact:
        assert diff < 1e-12
    else:  # off at the borders, and closer (least squares) than dropping the constant would be
        dropped = copy.deepcopy(res.model)
        with torch.no_grad():
            dropped.tail.bias.copy_(model.tail.bias)
            ref = model(fresh)
            err, err_dropped = ((m(fresh) - ref).square().mean() for m in (res.model, dropped))
        assert diff > 1e-6 and err < err_dropped


def test_bad_arguments_of_a_prune_are_one_line_naming_them(tmp_path) -> None:
    """API review, finding 9: prune_with_report(round_to=8.0) was a TypeError (slice indices), round_to="8"
    a TypeError ('<'), uint8 calib_inputs a raw RuntimeError from the conv; PruneRequest(output="x.onnx")
    wrote a torch checkpoint under an .onnx name. Each is one EdgeslimError naming the argument; an
    integer round_to of numpy's runs."""
    import numpy as np

    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.prune import PruneRequest
    from edgeslim.pipelines.prune import run as prune

    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 2)
    ).eval()
    with torch.no_grad():
        model[1].weight[:3] = 0
    x = torch.zeros(1, 1, 8, 8)
    for bad in (8.0, "8", True, 0):
        with pytest.raises(EdgeslimError, match="round_to must be an integer >= 1") as info:
            prune_with_report(model, x, round_to=bad)
        assert info.value.params == ("round_to",)
    assert prune_with_report(model, x, round_to=np.int64(2)).report["removed_channels"] > 0
    with pytest.raises(EdgeslimError, match="calib_inputs are uint8 and example_input float32") as info:
        prune_with_report(model, x, calib_inputs=torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    assert info.value.params == ("calib_inputs",)
    with pytest.raises(EdgeslimError, match=r"ends in \.onnx, but prune writes a PyTorch checkpoint") as info:
        prune(PruneRequest(model="vgg-small", output=tmp_path / "x.onnx", input_shape="1,28,28"))
    assert info.value.params == ("output",) and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("name", ["p.engine", "p.ORT", "p.plan", "p.trt", "p.tflite", "p.safetensors"])
def test_prune_refuses_every_deployment_format_name(name: str, tmp_path) -> None:
    """Review of today's code (nc report, finding 9): prune refused only a .onnx output; -o p.engine, p.ort or
    p.safetensors wrote a PyTorch pickle under a deployment format's name (edgeslim reads .safetensors as
    weights only, and writes none). Each is refused as .onnx is, before any work, naming output."""
    from edgeslim.pipelines.prune import PruneRequest
    from edgeslim.pipelines.prune import run as prune

    with pytest.raises(
        EdgeslimError, match=r"ends in \.\w+, but prune writes a PyTorch checkpoint, not an? "
    ) as info:
        prune(PruneRequest(model="vgg-small", output=tmp_path / name, input_shape="1,28,28"))
    assert info.value.params == ("output",) and not (tmp_path / name).exists()


class _Thresholded(nn.Module):
    """A tiny detector's tail: the scores above a threshold, none of which passes (an empty output)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1)
        )
        with torch.no_grad():
            self.body[1].weight[:4] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.body(x).flatten(1)
        return s[s > 1e6]


def test_a_check_of_empty_outputs_compared_nothing_and_says_so(caplog) -> None:
    """Review of a user's own torchvision detectors (tvdet #3): a detector that found no object returns
    empty tensors, and verify() / surgery's check skipped them and reported max_abs_diff 0.0 (two different
    Faster R-CNNs "agreed"). Nothing compared is reported as such: max_abs_diff None, compared_values 0,
    and a warning."""
    model, other = _Thresholded().eval(), _Thresholded().eval()
    x = torch.randn(2, 3, 8, 8)
    with caplog.at_level("WARNING", logger="edgeslim"):
        res = verify(model, other, x)
    assert res["max_abs_diff"] is None and res["compared_values"] == 0
    assert "verify compared nothing" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgeslim"):
        rep = prune_with_report(model, x[:1], calib_inputs=[x]).report
    assert rep["removed_channels"] == 4 and rep["max_abs_diff"] is None and rep["compared_values"] == 0
    assert "surgery's check compared nothing" in caplog.text
    full = prune_with_report(nn.Sequential(*_Thresholded().body).eval(), x[:1], calib_inputs=[x]).report
    assert full["compared_values"] == 2 * 5 * 8 * 8 and full["max_abs_diff"] < 1e-5


class _Boxes(nn.Module):
    """A tiny detector's box regression: four values per location of every image, ``[K, 4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
        )
        with torch.no_grad():
            self.body[1].weight[:4] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).permute(0, 2, 3, 1).reshape(-1, 4)


def test_box_coordinates_get_no_top1_agreement() -> None:
    """Review of a user's own torchvision detectors (tvdet #5): a detector's boxes ``[K, 4]`` were read as
    the logits of K samples over 4 classes: prune reported "top-1 agreement 90.33%" over box coordinates.
    Only class scores with one row per input (``[N, C]``, a mask's ``[N, C, H, W]``) get one."""
    x = torch.randn(2, 3, 8, 8)
    assert verify(_Boxes().eval(), _Boxes().eval(), x)["top1_agreement"] is None
    assert prune_with_report(_Boxes().eval(), x[:1], calib_inputs=[x]).report["top1_agreement"] is None
    classifier = nn.Sequential(*_Boxes().body, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()  # [N, 4] scores
    assert prune_with_report(classifier, x[:1], calib_inputs=[x]).report["top1_agreement"] == 1.0


class _Detector(nn.Module):
    """A tiny torchvision-style detector: per image, the boxes whose score passes a threshold."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1)
        )
        with torch.no_grad():
            self.body[1].weight[:4] = 0.0

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for f in self.body(x).flatten(2).transpose(1, 2):  # [H*W, 5] per image
            keep = f[:, 4] > 0
            out.append(
                {"boxes": f[keep, :4], "scores": f[keep, 4], "labels": torch.ones_like(f[keep, 4]).long()}
            )
        return out


def test_detections_that_differ_are_said_to_be_compared_in_order() -> None:
    """Review of a user's own torchvision detectors (tvdet #4): post-NMS detections were compared position by
    position; where near-tied scores reordered them (or changed their number) the line blamed a channel the
    graph does not see ("mark the module a leaf"). It says they are post-processed detections compared in
    order, and how to check the tensors before the postprocessing."""
    x = torch.randn(2, 3, 8, 8)
    other = _Detector(0).eval()
    with torch.no_grad():
        other.body[3].bias[4] -= 100.0  # no score passes: another number of detections
    with pytest.raises(EdgeslimError) as ei:
        verify(_Detector(0).eval(), other, x)
    msg = str(ei.value)
    assert "the outputs are post-processed detections" in msg and "register_leaf" not in msg
    assert "verify(model.backbone, slim.backbone, x)" in msg
    from edgeslim.surgery.prune import check_failed_message

    rep = prune_with_report(_Detector(0).eval(), x[:1], calib_inputs=[x]).report
    assert rep["postprocessed_detections"] and rep["removed_channels"] == 4
    msg = check_failed_message("Detector", {**rep, "max_abs_diff": 115.0})
    assert (
        "post-processed detections (boxes, scores and labels after a score threshold, top-k and NMS)" in msg
    )
    assert "register_leaf" not in msg


class _OneDetection(nn.Module):
    """A post-processed detector that finds one object per image: ``[{"boxes": [1, 4], ...}]``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        f = self.body(x).mean((2, 3))  # [N, 5]
        return [{"boxes": d[None, :4], "scores": d[4:].sigmoid(), "labels": d[4:].long()} for d in f]


def test_one_detection_of_one_image_gets_no_top1_agreement() -> None:
    """Review of the merge of fix-tv (nc2 #8): one image with one detection, boxes [1, 4] for one input, was
    counted as the class scores of that input ("top-1 agreement 1.0" over box coordinates). The outputs of
    post-processed detections (a list of dicts) never count."""
    x = torch.randn(1, 3, 8, 8)
    assert verify(_OneDetection().eval(), _OneDetection().eval(), x)["top1_agreement"] is None
