"""Capture of what real model code does: *args forwards, shape branches, chunk lists, nested and
dict outputs, functional layers, BN subclasses, channel slices and splits, user channel rules."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeslim.channels.graph import flat_tensors
from edgeslim.channels.rules import unregister
from edgeslim.errors import EdgeslimError
from edgeslim.surgery import (
    ChannelRule,
    apply_recipe,
    build_graph,
    prune_with_report,
    register_channel_rule,
    register_leaf,
    verify,
)
from edgeslim.surgery.prune import _compare


def cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


def zero(bn: nn.Module, idx: list[int], bias: float = 0.0) -> None:
    with torch.no_grad():
        bn.weight[idx] = 0
        bn.bias[idx] = bias


def exact(m: nn.Module, slim: nn.Module, x: torch.Tensor) -> float:
    return verify(copy.deepcopy(m).double(), copy.deepcopy(slim).double(), x.double())["max_abs_diff"]


class C2fLike(nn.Module):
    """YOLO idioms: ``forward(x, *args, **kwargs)``, ``list(chunk)``, a branch on a shape."""

    def __init__(self) -> None:
        super().__init__()
        self.cv1 = cbr(3, 8)
        self.m = cbr(4, 4, 3)
        self.cv2 = cbr(12, 6)
        self.shape = None

    def forward(self, x, *args, **kwargs):
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.m(y[-1]))
        out = self.cv2(torch.cat(y, 1))
        if self.shape != out.shape:  # a Python branch on a static shape (YOLO's Detect)
            self.shape = out.shape
        return out, [out.mean((2, 3))]


def test_star_args_chunk_list_and_shape_branch():
    m = C2fLike().eval()
    x = torch.randn(2, 3, 8, 8)
    zero(m.cv1[1], [1, 5])  # index 1 of both halves of the chunk
    zero(m.m[1], [2])
    res = prune_with_report(m, x)
    assert res.model.cv1[0].out_channels == 6 and res.model.m[0].out_channels == 3
    assert res.model.cv2[0].in_channels == 9
    assert exact(m, res.model, x) < 1e-12
    assert m.shape is None  # attribute changes made by the capture run are undone


class DictOut(nn.Module):
    """Feature maps returned in a dict (detection backbones) and a nested tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(8, 8), cbr(8, 4)

    def forward(self, x):
        a = self.a(x)
        b = self.b(a)
        return {"feat": a, "deep": (self.c(b), [b])}


def test_every_dict_and_nested_output_is_an_output():
    m = DictOut().eval()
    x = torch.randn(1, 3, 6, 6)
    g = build_graph(m, x)
    assert not g.bn_groups()  # every BN feeds a returned tensor: nothing may be removed
    for bn in (m.a[1], m.b[1], m.c[1]):
        zero(bn, [0, 3])
    res = prune_with_report(m, x)
    assert res.report["removed_channels"] == 0
    out = res.model(x)
    assert out["feat"].shape[1] == 8 and out["deep"][1][0].shape[1] == 8


def test_detection_backbone_dict_outputs_keep_their_channels():
    """torchvision's IntermediateLayerGetter (detection backbones) returns a dict of feature maps."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter

    m = IntermediateLayerGetter(resnet18(), {"layer2": "p3", "layer4": "p5"}).eval()
    _randomize_bn(m)
    x = torch.randn(1, 3, 64, 64)
    g = build_graph(m, x)
    returned = {"layer2.1.bn2", "layer4.1.bn2"}  # they write the returned residual streams
    assert not any(name in returned for bg in g.bn_groups() for name, _ in bg.members)
    zeroed = _zero_groups(m, x)
    res = prune_with_report(m, x)
    out = res.model(x)
    assert zeroed > 0 and res.report["removed_channels"] == zeroed
    assert out["p3"].shape[1] == 128 and out["p5"].shape[1] == 512
    assert exact(m, res.model, x) < 1e-10


def test_verifier_compares_every_output_and_rejects_a_shape_change():
    a, b = torch.zeros(1, 4), torch.zeros(1, 4)
    assert _compare([[a, b]], [[a, b + 1]])["max_abs_diff"] == 1.0  # the second tensor counts
    with pytest.raises(EdgeslimError, match="shape"):
        _compare([[a, b]], [[a, torch.zeros(1, 3)]])


class BNAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d pattern: a BatchNorm2d subclass calling F.batch_norm, then an act."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return torch.sigmoid(x)  # sigmoid(0) = 0.5: a zero channel becomes a constant


class SameConv(nn.Conv2d):
    """timm's Conv2dSame pattern: pad, then the functional conv with the module's own weight."""

    def forward(self, x):
        return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.weight, self.bias, self.stride, 0)


class FuncNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = SameConv(3, 6, 3, bias=False)
        self.bn = BNAct(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


def test_bn_subclass_with_functional_batch_norm_and_functional_conv():
    m = FuncNet().eval()
    x = torch.randn(2, 3, 5, 5)
    (bg,) = build_graph(m, x).bn_groups()
    assert bg.members[0][0] == "bn" and bg.size == 6
    zero(m.bn, [1, 4])
    res = prune_with_report(m, x)
    assert res.model.conv.out_channels == 4 and res.model.bn.num_features == 4
    assert res.report["folded_biases"] == [{"layer": "head", "channels": 2, "exact": True}]  # sigmoid(0)
    assert exact(m, res.model, torch.randn(2, 3, 5, 5)) < 1e-6  # the bias was folded in float32


class SliceNet(nn.Module):
    """ReXNet's partial residual ``cat([x[:, :C] + sc, x[:, C:]])`` and GhostNet's truncation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 4)
        self.exp = cbr(4, 10)
        self.out = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        sc = self.stem(x)
        y = self.exp(sc)
        y = torch.cat([y[:, :4] + sc, y[:, 4:]], dim=1)
        return self.out(y[:, :7])  # the last 3 channels are dropped


def test_partial_residual_and_truncation_keep_positions():
    m = SliceNet().eval()
    x = torch.randn(2, 3, 4, 4)
    zero(m.exp[1], [1, 5, 8])  # 1: residual prefix, 5: inside the [:, :7] window, 8: dropped tail
    zero(m.stem[1], [1])
    res = prune_with_report(m, x)
    assert res.model.exp[0].out_channels == 9  # only 8 goes: removing 1 or 5 would shift the window
    assert exact(m, res.model, x) < 1e-12
    assert any("slice" in b for b in res.report["barriers"])


class SplitNet(nn.Module):
    def __init__(self, literal: bool) -> None:
        super().__init__()
        self.literal = literal
        self.a = cbr(3, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        size = 4 if self.literal else y.shape[1] // 2  # from an attribute vs from the shape
        p, q = y.split(size, dim=1)
        return self.head(torch.cat([q, p], 1))


@pytest.mark.parametrize("literal", [True, False])
def test_split_sizes_from_the_shape_follow_surgery_literal_ones_do_not(literal: bool):
    m = SplitNet(literal).eval()
    x = torch.randn(2, 3, 4, 4)
    zero(m.a[1], [1, 5])
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == (8 if literal else 6)  # channel j of both halves: one unit
    assert exact(m, res.model, x) < 1e-12


def test_data_dependent_branch_is_one_line_naming_module_and_line():
    class Gate(nn.Module):
        def forward(self, x):
            if x.mean() > 0:  # on values computed from the input
                return x
            return -x

    m = nn.Sequential(cbr(3, 4), Gate()).eval()
    with pytest.raises(EdgeslimError) as ei:
        build_graph(m, torch.randn(1, 3, 4, 4))
    msg = str(ei.value)
    assert "\n" not in msg and "cannot trace" in msg and "1 (Gate)" in msg
    assert "test_surgery_capture.py:" in msg and "register_leaf" in msg
    register_leaf(Gate)  # the fix the message names: a leaf is not traced into, its channels are kept
    try:
        g = build_graph(m, torch.randn(1, 3, 4, 4))
        assert not g.bn_groups() and any("leaf module Gate" in str(b) for b in g.barriers)
    finally:
        unregister(Gate)

    class Branchy(nn.Module):  # the branch in the model's own forward: a rule or leaf for it helps nothing
        def __init__(self) -> None:
            super().__init__()
            self.a = cbr(3, 4)

        def forward(self, x):
            x = self.a(x)
            return x if x.mean() > 0 else -x

    with pytest.raises(EdgeslimError) as ei:
        build_graph(Branchy().eval(), torch.randn(1, 3, 4, 4))
    msg = str(ei.value)
    assert "<model> (Branchy)" in msg and "into a submodule" in msg and "register_leaf" not in msg

    class Picky(nn.Module):  # an error of the model's own forward, not of an input misfit: no leaf advice
        def __init__(self) -> None:
            super().__init__()
            self.a = cbr(3, 4)

        def forward(self, x):
            raise ValueError("this forward needs a calibrated threshold first")

    with pytest.raises(EdgeslimError) as ei:
        build_graph(Picky().eval(), torch.randn(1, 3, 4, 4))
    assert "<model> (Picky)" in str(ei.value) and "register_leaf" not in str(ei.value)


class Gain(nn.Module):
    """A per-channel learned gain written with an op the graph does not know (einsum)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return torch.einsum("nchw,c->nchw", x, self.g)


def shrink_gain(m: Gain, keep_in, keep_out) -> None:
    if keep_in is not None:
        m.g = nn.Parameter(m.g.detach()[keep_in].clone())


class GainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.gain, self.head = cbr(3, 6), Gain(6), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(self.gain(self.a(x)))


def test_user_channel_rule_makes_a_custom_module_prunable_and_recipes_replay():
    x = torch.randn(2, 3, 4, 4)
    m = GainNet().eval()
    zero(m.a[1], [0, 4])
    assert prune_with_report(m, x).report["removed_channels"] == 0  # without a rule: kept
    register_channel_rule(Gain, ChannelRule(shrink=shrink_gain, pass_through=True))
    try:
        res = prune_with_report(m, x)
        assert res.report["removed_channels"] == 2 and res.model.gain.g.numel() == 4
        assert exact(m, res.model, x) < 1e-12
        fresh = apply_recipe(GainNet().eval(), res.recipe)  # checkpoints rebuild through the rule
        fresh.load_state_dict(res.model.state_dict())
        assert exact(m, fresh, x) < 1e-12
    finally:
        unregister(Gain)


class GainBias(Gain):
    """A gain that adds a constant: a zero channel comes out nonzero (keeps_zero would be a false claim)."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.b = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return super().forward(x) + self.b.view(1, -1, 1, 1)


def test_a_false_rule_is_caught_by_the_verification_and_a_missing_rule_named_on_reload(caplog):
    """A Torch-Pruning user's trial: a rule claiming keeps_zero for y = x*g + b gave report exact=True at a
    0.197 deviation (a log line only); a recipe whose rule was not registered in the reloading process was
    called corrupt."""
    x = torch.randn(2, 3, 4, 4)
    m = GainNet().eval()
    m.gain = GainBias(6)
    zero(m.a[1], [0, 4])

    def shrink_both(mod: GainBias, keep_in, keep_out) -> None:
        shrink_gain(mod, keep_in, keep_out)
        if keep_in is not None:
            mod.b = nn.Parameter(mod.b.detach()[keep_in].clone())

    register_channel_rule(GainBias, ChannelRule(shrink=shrink_both, pass_through=True))
    try:
        res = prune_with_report(m, x)
    finally:
        unregister(GainBias)
    assert res.report["removed_channels"] == 2 and res.report["max_abs_diff"] > 1e-3
    assert res.report["exact"] is False and "does not compute what the zeroed one did" in caplog.text
    register_channel_rule(Gain, ChannelRule(shrink=shrink_gain, pass_through=True))
    try:
        plain = GainNet().eval()
        zero(plain.a[1], [0, 4])
        recipe = prune_with_report(plain, x).recipe
    finally:
        unregister(Gain)
    with pytest.raises(
        EdgeslimError,
        match="resizes a Gain, a layer type with no channel rule in this process: register its rule .edgeslim.channels.rules.register_channel_rule.",
    ):
        apply_recipe(GainNet().eval(), recipe)


class Clip(nn.Module):
    """A parameterless per-channel op surgery cannot trace (a custom autograd function, here einsum)."""

    def forward(self, x):
        return torch.einsum("nchw->nchw", x).clamp(-1.0, 1.0)


def test_a_pass_through_rule_without_shrink_resizes_nothing_and_a_bad_shrink_is_named():
    """An extender's trial: ChannelRule(pass_through=True) with no shrink (nothing to resize) made the
    module a leaf, silently (removed nothing, 'behind a barrier'); a shrink that does not resize its
    module was told to mark the module a leaf, not to check the rule."""
    x = torch.randn(2, 3, 4, 4)
    m = nn.Sequential(cbr(3, 6), Clip(), nn.Conv2d(6, 2, 1)).eval()
    zero(m[0][1], [0, 4])
    register_channel_rule(Clip, ChannelRule(pass_through=True, keeps_constant=True))
    try:
        res = prune_with_report(m, x)
        assert res.report["removed_channels"] == 2 and exact(m, res.model, x) < 1e-12
        fresh = apply_recipe(nn.Sequential(cbr(3, 6), Clip(), nn.Conv2d(6, 2, 1)).eval(), res.recipe)
        assert fresh[2].in_channels == 4
    finally:
        unregister(Clip)
    g = GainNet().eval()
    zero(g.a[1], [0, 4])
    register_channel_rule(Gain, ChannelRule(shrink=lambda mod, i, o: None, pass_through=True))
    try:
        with pytest.raises(EdgeslimError, match="the channel rule registered for Gain did not resize it"):
            prune_with_report(g, x)
    finally:
        unregister(Gain)


class LayerScaleNet(nn.Module):
    """Layer scale: a module's own per-channel parameters used in forward, raw and reshaped."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(3, 6), cbr(6, 6), nn.Conv2d(6, 2, 1)
        self.gamma = nn.Parameter(torch.rand(6, 1, 1) + 0.5)
        self.beta = nn.Parameter(torch.rand(6))

    def forward(self, x):
        y = self.a(x)
        y = y + self.gamma * self.b(y)
        return self.head(y * self.beta.view(1, -1, 1, 1))


def test_layer_scale_parameters_are_sliced_with_their_channels():
    m = LayerScaleNet().eval()
    x = torch.randn(2, 3, 5, 5)
    zero(m.a[1], [1, 4])
    zero(m.b[1], [1, 4])
    res = prune_with_report(m, x)
    s = res.model
    assert s.gamma.shape == (4, 1, 1) and s.beta.shape == (4,) and s.head.in_channels == 4
    assert res.recipe["layers"]["gamma"] == {
        "type": "Parameter",
        "dim": 0,
        "keep": [0, 2, 3, 5],
        "widths": {"keep": 6},
    }
    assert exact(m, s, x) < 1e-12
    fresh = apply_recipe(LayerScaleNet().eval(), res.recipe)
    fresh.load_state_dict(s.state_dict())
    assert exact(m, fresh, x) < 1e-12


class MixedInNet(nn.Module):
    """MobileViT's fold: channels and positions mixed by a reshape, then a conv with a BN."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.proj, self.head = cbr(3, 4), cbr(4, 6), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.reshape(n, c, h * w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.proj(y))


def test_conv_after_a_mixed_layout_keeps_its_input_but_frees_its_output():
    m = MixedInNet().eval()
    x = torch.randn(2, 3, 4, 4)
    zero(m.a[1], [1])  # crosses the mixing reshape: kept
    zero(m.proj[1], [0, 5])  # the conv's own output channels: removed
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == 4 and res.model.proj[0].out_channels == 4
    assert res.model.proj[0].in_channels == 4 and res.model.head.in_channels == 4
    assert exact(m, res.model, x) < 1e-12


def test_registry_does_not_import_optional_model_sources():
    code = (
        "import sys; import edgeslim.models.zoo; from edgeslim.models import registry; "
        "assert 'timm' in registry._PREFIXES and 'yolo' in registry._PREFIXES; "
        "assert 'timm' not in sys.modules and 'ultralytics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_yolo_checkpoint_is_a_pickle_and_needs_trust(tmp_path):
    from edgeslim.models import create_model
    from edgeslim.models.yolo import load_yolo_checkpoint

    with pytest.raises(EdgeslimError, match="pickle"):
        create_model(f"yolo:{tmp_path / 'best.pt'}")
    with pytest.raises(EdgeslimError, match="trust_pickle"):
        load_yolo_checkpoint(str(tmp_path / "best.pt"))


def _zero_groups(m: nn.Module, x: torch.Tensor, frac: float = 0.3, outputs=None) -> int:
    gen = torch.Generator().manual_seed(0)
    mods, n = dict(m.named_modules()), 0
    for bg in build_graph(m, x, outputs=outputs).bn_groups():
        sel = torch.randperm(bg.size, generator=gen)[: int(frac * bg.size)]
        n += sel.numel()
        for name, idx in bg.members:
            zero(mods[name], idx[sel].tolist())
    return n


def _randomize_bn(m: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.modules.batchnorm._BatchNorm):
                b.weight.copy_(torch.rand(b.num_features, generator=gen) + 0.5)
                b.bias.copy_(torch.randn(b.num_features, generator=gen) * 0.2)


def _prunes_exactly(m: nn.Module) -> None:
    """Random BN, zeroed groups: surgery removes every zero channel, and the output is unchanged."""
    _randomize_bn(m)
    x = torch.randn(1, 3, 32, 32)
    zeroed = _zero_groups(m, x)
    res = prune_with_report(m, x)
    assert zeroed > 100 and res.report["removed_channels"] == zeroed
    assert exact(m, res.model, x) < 1e-10


@pytest.mark.parametrize("name", ["efficientnet_b0", "ghostnet_100", "rexnet_100"])
def test_timm_models_prune_exactly(name: str):
    timm = pytest.importorskip("timm")
    from edgeslim.models import create_model

    m = create_model(f"timm:{name}", num_classes=10).eval()
    assert type(m) is type(timm.create_model(name, pretrained=False))
    _prunes_exactly(m)


def test_torchvision_stochastic_depth_passes_channels_without_importing_torchvision_for_it():
    """torchvision's stochastic depth (EfficientNet's blocks) is per-sample scaling, and the capture
    sees the ops inside it: channels pass it. The channel model imported torchvision to name it for
    the fx tracer it no longer uses (0.8 s of every surgery and slim run); it does not any more."""
    tvm = pytest.importorskip("torchvision.models")
    code = "import sys, edgeslim.surgery, edgeslim.slim; print('torchvision' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
    torch.manual_seed(0)
    m = tvm.efficientnet_b0(weights=None, num_classes=10).eval()
    _prunes_exactly(m)


@pytest.mark.parametrize("name", ["yolov8n", pytest.param("yolo11n", marks=pytest.mark.slow)])
def test_yolo_from_yaml_prunes_exactly_without_patches(name: str):
    pytest.importorskip("ultralytics")
    from edgeslim.models import create_model

    m = create_model(f"yolo:{name}", num_classes=80).eval()
    _randomize_bn(m)
    x = torch.randn(1, 3, 64, 64)
    zeroed = _zero_groups(m, x)
    res = prune_with_report(m, x)
    assert zeroed > 500 and res.report["removed_channels"] == zeroed
    ref, got = flat_tensors(m(x)), flat_tensors(res.model(x))
    assert len(ref) > 1 and [t.shape for t in ref] == [t.shape for t in got]
    assert exact(m, res.model, x) < 1e-10


@pytest.mark.parametrize("name", ["yolov8n", pytest.param("yolov8n-seg", marks=pytest.mark.slow)])
def test_yolo_deployed_outputs_free_the_neck_channels(name: str):
    """With the outputs an ultralytics model returns deployed (``deployed_output``), the neck's
    P3-P5 feature maps, which eval mode also returns, are no longer outputs: every BN channel of
    YOLOv8n lies in a prunable group (91.5% otherwise: the anchors' ``new_full``/``type_as`` on those
    maps read only their dtype), surgery is exact on the deployed outputs, and the slim model still
    runs in eval and training mode (ultralytics reads the neck maps' spatial size only)."""
    pytest.importorskip("ultralytics")
    from edgeslim.models import create_model
    from edgeslim.models.yolo import deployed_output

    m = create_model(f"yolo:{name}", num_classes=80).eval()
    _randomize_bn(m)
    x = torch.randn(1, 3, 64, 64)
    select = deployed_output(m)
    assert select is not None and deployed_output(nn.Conv2d(3, 3, 1)) is None
    total = sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    share = {s: sum(g.size * len(g.members) for g in build_graph(m, x, outputs=s).bn_groups()) / total
             for s in (None, select)}  # fmt: skip
    assert share[select] > share[None] + 0.05 and share[select] > 0.98, share
    neck = m.model[15].cv2.bn.num_features  # P3, which eval mode also returns
    zeroed = _zero_groups(m, x, outputs=select)
    res = prune_with_report(m, x, outputs=select)
    assert res.report["removed_channels"] == zeroed and res.model.model[15].cv2.bn.num_features < neck
    ref, got = flat_tensors(select(m(x))), flat_tensors(select(res.model(x)))
    assert [t.shape for t in ref] == [t.shape for t in got]
    assert verify(m, res.model, x, outputs=select)["max_abs_diff"] < 1e-4
    assert isinstance(res.model.eval()(x), tuple) and isinstance(res.model.train()(x), (dict, tuple))
    if name == "yolov8n":  # ultralytics' own loss on the slim model (it reads the neck maps' size only)
        from types import SimpleNamespace

        from ultralytics.utils.loss import v8DetectionLoss

        res.model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
        batch = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[1.0]]),
                 "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}  # fmt: skip
        loss, _ = v8DetectionLoss(res.model)(res.model.train()(x), batch)
        assert torch.isfinite(loss).all()
    with pytest.raises(TypeError, match="a function"):
        build_graph(m.eval(), x, outputs=torch.zeros(1))


def test_yolo_segmenter_keeps_its_prototypes_in_every_ultralytics_layout():
    """A segmenter's deployed outputs include its mask prototypes, wherever its eval-mode result
    puts them: ``((preds, proto), raw)`` from ultralytics 8.4, ``(preds, (raw, coefficients,
    proto))`` in 8.1-8.3 (picking only ``preds`` there let surgery cut the prototype conv)."""
    pytest.importorskip("ultralytics")
    from edgeslim.models import create_model
    from edgeslim.models.yolo import deployed_output

    select = deployed_output(create_model("yolo:yolov8n-seg", num_classes=80))
    preds, proto, raw, coef = (
        torch.zeros(1, 116, 84),
        torch.zeros(1, 32, 16, 16),
        [torch.zeros(1, 144, 8, 8)],
        torch.zeros(1, 32, 84),
    )
    new = select(((preds, proto), {"feats": raw}))
    old = select((preds, (raw, coef, proto)))
    assert new[0] is preds and new[1] is proto and old[0] is preds and old[1] is proto
    detect = deployed_output(create_model("yolo:yolov8n", num_classes=80))
    assert detect((preds, {"feats": raw})) is preds


def test_new_tensor_copies_its_data_and_keeps_its_channels():
    """``x.new_tensor(a)`` copies ``a`` (unlike ``new_zeros`` and kin, which take only a dtype):
    ``a``'s channels meet another tensor's, so they are kept (removing them broke the model)."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.b, self.c2 = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(3, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_tensor(self.b(self.c(x))) * self.c2(x)

    m = M().eval()
    zero(m.b, [0, 1, 2])
    with pytest.warns(UserWarning):  # torch's advice to use clone() instead
        res = prune_with_report(m, torch.randn(1, 3, 4, 4))
    assert res.report["removed_channels"] == 0 and res.report["max_abs_diff"] == 0


def test_an_outputs_selector_must_pick_the_forward_outputs():
    from edgeslim.channels.graph import BadOutputSelection

    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)).eval()
    for bad in (lambda o: None, lambda o: [o * 1]):  # nothing, or a new tensor: would protect nothing
        with pytest.raises(BadOutputSelection, match="one or more of the tensors the forward returns"):
            build_graph(m, torch.randn(1, 3, 4, 4), outputs=bad)


def test_a_failed_meta_run_leaves_no_cache_for_the_real_run():
    """A module that caches a tensor in its forward (as YOLO heads cache anchors) and then reads a
    tensor's value (which the shapes-only run cannot) is run again on real tensors: the cache the
    failed run left on the "meta" device must not reach that run."""

    class Anchored(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
            self.register_buffer("stride", torch.tensor([2.0]))
            self.cache: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            if self.cache is None or self.cache.shape != y.shape[2:]:
                self.cache = torch.ones(y.shape[2:], device=y.device)
            s = torch.full((1,), self.stride[0])  # a constant's value: not on "meta"
            return y * self.cache * s

    m = Anchored().eval()
    x = torch.randn(1, 3, 8, 8)
    g = build_graph(m, x)  # failed before: the real run met the "meta" cache
    assert g.num_classes > 0 and m.cache is None  # attributes the runs set are undone


def test_building_a_yolo_model_leaves_pil_and_pip_alone() -> None:
    """Importing ultralytics replaces ``PIL.Image.open`` by a wrapper that pip-installs a plugin on
    an unreadable image; ``yolo:`` models are built without that side effect (a fresh process, so
    no earlier test has imported ultralytics), and a corrupt image is one line even when a caller
    imported ultralytics itself."""
    pytest.importorskip("ultralytics")
    code = (
        "import os; from PIL import Image; before = Image.open\n"
        "from edgeslim.models import create_model\n"
        "create_model('yolo:yolov8n', num_classes=3)\n"
        "assert Image.open is before, 'PIL.Image.open was replaced'\n"
        "from ultralytics.utils import AUTOINSTALL; assert AUTOINSTALL is False, 'auto-install on'\n"
        "assert 'YOLO_AUTOINSTALL' not in os.environ, 'the environment was changed'\n"
        "from ultralytics.utils import patches; Image.open = patches.image_open  # a caller's own import\n"
        "from edgeslim.data.imagefolder import open_image\n"
        "from edgeslim.errors import EdgeslimError\n"
        "try:\n"
        "    with open_image(b'not an image', 'bad.jpg'): pass\n"
        "except EdgeslimError as e: print('ONE LINE:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "YOLO_AUTOINSTALL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ONE LINE: cannot decode image bad.jpg" in out.stdout


@pytest.mark.parametrize(
    "shape",
    [(3, 32, 32), (1, 1, 32, 32), (1, 3, 16, 16)],
    ids=["no-batch-dim", "grey-for-rgb", "size-a-linear-fixes"],
)
def test_an_input_the_model_does_not_take_is_named_without_leaf_advice(shape) -> None:
    """A trial's (3, 32, 32) and 1-channel inputs were told to "mark Conv2d a leaf": at capture the
    model is the user's own and unchanged, so only the input can be at fault."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 32 * 32, 10)
    )
    with pytest.raises(EdgeslimError) as info:
        build_graph(net, torch.zeros(shape))
    msg = str(info.value)
    assert f"input of shape {shape}" in msg and "batch first" in msg and "leaf" not in msg


def test_an_input_smaller_than_a_kernel_is_an_input_misfit() -> None:
    """A 7x7 stem on a 4x4 input was told to "mark Conv2d a leaf"."""
    net = nn.Sequential(nn.Conv2d(3, 8, 7), nn.BatchNorm2d(8), nn.ReLU())
    with pytest.raises(EdgeslimError) as info:
        build_graph(net, torch.zeros(1, 3, 4, 4))
    assert "batch first" in str(info.value) and "leaf" not in str(info.value)


def test_a_compiled_model_is_pruned_as_its_module_without_dynamo():
    """A Torch-Pruning user's trial: surgery on a torch.compile'd model took 20 s, dynamo tracing
    edgeslim's own capture (pages of graph breaks, recompile-limit hits). Its module is used, eagerly."""
    import torch._dynamo

    x = torch.randn(2, 3, 4, 4)
    m = GainNet().eval()
    m.gain = nn.Identity()
    zero(m.a[1], [0, 4])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    res = prune_with_report(torch.compile(m), x)
    assert res.report["removed_channels"] == 2 and exact(m, res.model, x) < 1e-12
    assert type(res.model) is GainNet and not torch._dynamo.utils.counters["frames"]


def test_a_slim_model_saved_without_its_recipe_is_refused_at_save(tmp_path):
    """A Torch-Pruning user's trial: save_model of a slim model without recipe= succeeded, and loading
    it failed later ("written by another model or edited")."""
    from edgeslim.checkpoint import load_model, save_model
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec

    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    m = create_model(spec).eval()
    bn = next(b for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    zero(bn, [0, 1, 2])
    res = prune_with_report(m, torch.randn(1, 1, 28, 28))
    with pytest.raises(EdgeslimError, match="saved with its surgery recipe"):
        save_model(tmp_path / "bad.pt", res.model, spec)
    assert not (tmp_path / "bad.pt").exists()
    save_model(tmp_path / "ok.pt", res.model, spec, recipe=res.recipe)
    assert exact(res.model, load_model(tmp_path / "ok.pt").model, torch.randn(2, 1, 28, 28)) < 1e-12


def test_names_taken_from_a_compiled_wrapper_name_the_same_layers():
    """A compiled model's layers are named without the wrapper's ``_orig_mod.`` prefix (surgery runs its
    module); names a user took from the wrapper's own ``named_modules`` were refused as unknown layers."""
    from edgeslim.channels.recipe import apply_recipe
    from edgeslim.sparsity.prox import ProximalSlimming
    from edgeslim.sparsity.subgradient import MaskHook

    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    cm = torch.compile(m)
    names = [n for n, mod in cm.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    assert names == ["_orig_mod.1", "_orig_mod.4"]
    slim = ProximalSlimming(cm, groups=[[names[0]], [names[1]]])
    assert [n for u in slim.units for n, _ in u] == ["1", "4"]
    slim.set_layer_weights({names[1]: 2.0})
    assert float(slim.weights[8:].min()) == 2.0 and float(slim.weights[:8].max()) == 1.0
    hook = MaskHook(cm, masks={names[0]: torch.arange(8) < 5})
    assert set(hook.masks) == {"1"}
    zero(m[1], [5, 6, 7])
    res = prune_with_report(m.eval(), torch.randn(1, 3, 8, 8))
    dense = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
    )
    apply_recipe(
        torch.compile(dense), res.recipe
    )  # (was: "recipe names layer '0', which the model does not have")
    assert dense[1].num_features == 5 and dense[3].in_channels == 5


class IndexSE(nn.Module):
    """A squeeze-excitation whose gate gets its spatial axes by indexing with ``None``."""

    def __init__(self, c: int, hidden: int, index) -> None:
        super().__init__()
        self.l1, self.bnh, self.l2, self.index = (
            nn.Linear(c, hidden),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, c),
            index,
        )

    def forward(self, x):
        g = torch.sigmoid(self.l2(F.relu(self.bnh(self.l1(x.mean((2, 3)))))))
        return x * self.index(g)


@pytest.mark.parametrize(
    "index",
    [lambda g: g[:, :, None, None], lambda g: g[..., None, None], lambda g: g[:, :, None][..., None]],
    ids=["none", "ellipsis", "twice"],
)
def test_new_axes_after_the_channels_only_reshape(index):
    """A user's SE with ``s[:, :, None, None]`` (the timm/torchvision idiom is ``view`` or ``unsqueeze``)
    was a barrier, "indexing that selects channels or samples": the channels it gates were kept."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), IndexSE(16, 8, index), nn.Conv2d(16, 4, 1)
    )
    m.eval()
    x = torch.randn(2, 3, 8, 8)
    assert not [b for b in build_graph(m, x).barriers if "indexing" in str(b)]
    zero(m[1], [0, 1, 2, 3])
    zero(m[3].bnh, [0, 1, 2])
    res = prune_with_report(m, x)
    assert res.report["removed_channels"] == 7 and exact(m, res.model, x) < 1e-12


def test_a_new_axis_before_the_channels_stays_a_barrier():
    class Front(nn.Module):
        def forward(self, x):
            return x[:, None].sum(1)  # (the channel axis moves to 2, then back)

    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), Front(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 3, 6, 6)
    assert any("indexing" in str(b) for b in build_graph(m, x).barriers)
    zero(m[1], [0, 1])
    res = prune_with_report(m, x)
    assert res.report["removed_channels"] == 0 and exact(m, res.model, x) < 1e-12


class RuleSE(nn.Module):
    """An SE the tracer cannot see into (its first layer is F.linear on its own weights), given a rule."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(4, c)), nn.Parameter(torch.zeros(4))
        self.fc2 = nn.Conv2d(4, c, 1)

    def forward(self, x):
        s = F.relu(F.linear(x.mean((2, 3)), self.w1, self.b1))
        return x * torch.sigmoid(self.fc2(s[:, :, None, None]))


def shrink_rule_se(m: RuleSE, keep_in, keep_out) -> None:
    if keep_in is not None:
        m.w1 = nn.Parameter(m.w1.detach()[:, keep_in].clone())
        m.fc2.weight = nn.Parameter(m.fc2.weight.detach()[keep_in].clone())
        m.fc2.bias = nn.Parameter(m.fc2.bias.detach()[keep_in].clone())
        m.fc2.out_channels = len(keep_in)


def test_a_gate_rule_keeps_a_constant_channel_a_gain_rule_folds_it():
    """A trial: an SE given a pass_through rule (as the barrier message advised) carried a zero-scale
    channel's BN shift through its input-dependent gate as a constant; the fold was approximate (0.36).
    A pass-through rule now claims constants stay constant only with keeps_constant=True."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), RuleSE(8), nn.Conv2d(8, 2, 1)
    )
    m.eval()
    zero(m[1], [0, 1], bias=0.7)  # constant channels (the BN shift through ReLU)
    zero(m[1], [2])  # an exactly zero one
    register_channel_rule(RuleSE, ChannelRule(shrink=shrink_rule_se, pass_through=True))
    try:
        res = prune_with_report(m, x)
    finally:
        unregister(RuleSE)
    assert res.report["removed_channels"] == 1 and res.report["exact"] and exact(m, res.model, x) < 1e-12
    g = GainNet().eval()
    zero(g.a[1], [0, 4], bias=0.5)
    register_channel_rule(Gain, ChannelRule(shrink=shrink_gain, pass_through=True, keeps_constant=True))
    try:
        res = prune_with_report(g, x)
    finally:
        unregister(Gain)
    assert res.report["removed_channels"] == 2 and res.report["folded_biases"] and res.report["exact"]
    assert exact(g, res.model, x) < 1e-6  # (the constant is folded into the head's float32 bias)


def test_the_advice_to_register_a_leaf_covers_a_model_without_its_own_file():
    """Review of a user's own torchvision detectors (tvdet #7): the one line for a module the graph cannot
    trace (torchvision's MultiScaleRoIAlign in a pickled Faster R-CNN) said to register a rule or leaf "in
    the file that defines the model", which a whole pickle or a torchvision model does not have. It names
    the route that works: a factory file of the user's that registers it and builds the model."""

    class Gate(nn.Module):
        def forward(self, x):
            return x if x.mean() > 0 else -x

    with pytest.raises(EdgeslimError) as ei:
        build_graph(nn.Sequential(cbr(3, 4), Gate()).eval(), torch.randn(1, 3, 4, 4))
    msg = str(ei.value)
    assert "\n" not in msg and "for a whole pickle or a torchvision model" in msg
    assert "whose factory registers it and builds or loads the model, given as package.module:Factory" in msg
