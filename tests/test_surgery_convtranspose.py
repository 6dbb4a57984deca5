"""Transposed convolutions (UNet decoders, YOLO-seg's mask prototypes) are resized like convs:
weight (in, out, k...), MACs over the input positions; constants folded through one are
approximate (its output of a constant repeats with the stride's period) and reported so."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeslim.surgery import build_graph, prune_with_report


def _cbr(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class UNet(nn.Module):
    """Two levels: max-pool down, ConvTranspose2d(k=2, s=2) up, skips concatenated."""

    def __init__(self, up_groups: int = 1) -> None:
        super().__init__()
        self.e1, self.e2, self.b = _cbr(3, 16), _cbr(16, 32), _cbr(32, 64)
        self.up2, self.bn_up2 = nn.ConvTranspose2d(64, 32, 2, 2, groups=up_groups), nn.BatchNorm2d(32)
        self.d2 = _cbr(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.d1 = _cbr(32, 16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(nn.functional.max_pool2d(e1, 2))
        b = self.b(nn.functional.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([torch.relu(self.bn_up2(self.up2(b))), e2], 1))
        return self.head(self.d1(torch.cat([self.up1(d2), e1], 1)))


def _randomized(m: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in m.parameters():
        nn.init.normal_(p, std=0.3)
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    return m.eval()


def test_unet_decoder_channels_are_removed_exactly() -> None:
    m = _randomized(UNet())
    x = torch.randn(2, 3, 32, 32)
    g = build_graph(m, x)
    assert [str(b) for b in g.barriers] == ["<model> (input): model input", "<model> (output): model output"]
    mods = dict(m.named_modules())
    gen = torch.Generator().manual_seed(0)
    for bg in g.bn_groups():
        sel = torch.randperm(bg.size, generator=gen)[: round(0.3 * bg.size)]
        with torch.no_grad():
            for name, idx in bg.members:
                mods[name].weight[idx[sel]] = 0
                mods[name].bias[idx[sel]] = 0
    macs = g.macs()
    ref = copy.deepcopy(m).double()(x.double())
    res = prune_with_report(m, x)
    up2 = res.model.up2
    # the bottleneck's 64 outputs feed up2 (19 removed); up2's own 32 outputs go through bn_up2 (10 removed)
    assert (up2.in_channels, up2.out_channels) == (45, 22) and tuple(up2.weight.shape) == (45, 22, 2, 2)
    assert res.report["exact"] and res.report["removed_channels"] == 59
    assert res.report["top1_agreement"] == 1.0  # per pixel: a segmenter's masks (was None)
    assert (res.model.double()(x.double()) - ref).abs().max() < 1e-12
    # a transposed conv's MACs: kernel x input positions x in x out
    assert macs - res.report["macs_after"] >= 4 * 8 * 8 * (64 * 32 - 45 * 22)


def test_a_constant_through_a_transposed_conv_is_folded_approximately() -> None:
    m = _randomized(UNet())
    with torch.no_grad():  # 20 bottleneck channels output relu(0.5): a constant up2 reads
        m.b[1].weight[:20] = 0
        m.b[1].bias[:20] = 0.5
    res = prune_with_report(m, torch.randn(2, 3, 32, 32))
    assert res.report["folded_biases"] == [{"layer": "up2", "channels": 20, "exact": False}]
    assert not res.report["exact"] and 0 < res.report["max_abs_diff"]


def test_a_grouped_transposed_conv_keeps_its_channels() -> None:
    m = _randomized(UNet(up_groups=2))
    g = build_graph(m, torch.randn(1, 3, 32, 32))
    assert any("grouped transposed convolution" in str(b) for b in g.barriers)
    res = prune_with_report(m, torch.randn(1, 3, 32, 32))
    assert res.model.up2.in_channels == 64


@pytest.mark.slow
def test_yolov8_seg_prototype_upsampling_is_resized() -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import SegmentationModel

    from edgeslim.models.yolo import deployed_output

    m = SegmentationModel("yolov8n-seg.yaml", verbose=False).eval()
    up = m.model[-1].proto.upsample
    assert isinstance(up, nn.ConvTranspose2d)
    x = torch.randn(1, 3, 64, 64)
    g = build_graph(m, x, outputs=deployed_output(m))
    assert not any("conv_transpose" in str(b) for b in g.barriers)
    bn = m.model[-1].proto.cv1.bn  # the BN whose channels feed the upsampling
    with torch.no_grad():
        bn.weight[:8] = 0
        bn.bias[:8] = 0
    res = prune_with_report(m, x, outputs=deployed_output(m))
    assert res.model.model[-1].proto.upsample.in_channels == up.in_channels - 8
    assert res.report["max_abs_diff"] < 1e-3


def test_the_roofline_moves_a_transposed_convs_whole_output() -> None:
    """Its MACs are counted over the input's positions, its output bytes over the output's (4x
    as many for stride 2): both at their own size, not one standing in for the other."""
    from edgeslim.sparsity.resource import build_resource

    m = _randomized(UNet())
    rm = build_resource(m, torch.randn(1, 3, 32, 32), "latency", profile="host-cpu", precision="fp32")
    cost = {c.name: c for c in rm.layer_costs(rm.dense_k)}["up2"]
    assert cost.macs == 4 * 8 * 8 * 64 * 32  # kernel x input positions (8x8) x in x out
    weights = 64 * 32 * 4 + 32  # with the bias
    assert cost.weight_bytes == 4 * weights
    assert cost.bytes == 4 * (weights + 64 * 8 * 8 + 32 * 16 * 16)  # input 64x8x8, output 32x16x16


def test_verify_reports_the_first_outputs_top1_for_a_model_with_two_outputs() -> None:
    """A segmenter with an auxiliary head returns {"out", "aux"}: verify gave no top-1 for it (one
    output only); it gives the first output's per-pixel agreement, as the export check does, and a
    changed second output still counts in the difference."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    from edgeslim.surgery import verify

    torch.manual_seed(0)
    m = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3, aux_loss=True).eval()
    other = copy.deepcopy(m)
    with torch.no_grad():
        other.aux_classifier[-1].bias += 1.0  # the aux head's scores only
    rep = verify(m, other, torch.randn(2, 3, 64, 64))
    assert rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] == pytest.approx(1.0, rel=1e-5)
