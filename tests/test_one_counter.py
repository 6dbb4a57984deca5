"""One MAC/parameter counter: ``edgeslim.channels.cost.layer_macs`` / ``layer_params``.

The model statistics (``count_model``), surgery's dependency graph, the budget resource model and
the ONNX cost counter all price layers with it, so they agree exactly on real models. The one
documented difference is in parameters: the ONNX graph counts its initializers after the exporter
folded every BatchNorm that follows a conv into it, so that BN's ``2C`` scale/shift become the
conv's ``C`` biases (a BN before a conv, as in the pre-activation resnet20, stays unfolded and is
counted with its running statistics, so its parameters are not compared).
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from edgeslim.channels.cost import layer_macs, layer_params
from edgeslim.channels.graph import build_graph
from edgeslim.counting import count_model
from edgeslim.models import create_model
from edgeslim.sparsity.resource import build_resource

onnx = pytest.importorskip("onnx")
from edgeslim.bench.onnx_cost import onnx_cost  # noqa: E402


def _onnx(model: nn.Module, x: torch.Tensor):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), buf, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def test_primitive_by_hand() -> None:
    assert layer_macs("conv", 16, 32, kernel=9, spatial=64) == 9 * 64 * 16 * 32
    assert layer_macs("conv", 16, 32, kernel=9, groups=4, spatial=64) == 9 * 64 * 4 * 32
    assert layer_macs("dw", 32, 32, kernel=9, groups=32, spatial=64) == 9 * 64 * 32
    assert layer_macs("linear", 128, 10) == 1280 and layer_macs("linear", 128, 10, spatial=7) == 7 * 1280
    assert layer_macs("bn", 32, 32) == 0
    assert layer_params("conv", 16, 32, kernel=9, groups=4, bias=True) == 9 * 4 * 32 + 32
    assert layer_params("dw", 32, 64, kernel=9, groups=32) == 9 * 64
    assert layer_params("linear", 128, 10, bias=True) == 1290
    assert layer_params("bn", 32, 32, bias=True) == 64 and layer_params("bn", 32, 32) == 0
    # tensors in, differentiable tensors out (the vectorised resource model relies on it)
    n = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer_macs("conv", n, n, kernel=9, spatial=4), n)
    assert float(grad) == 2 * 9 * 4 * 8
    with pytest.raises(ValueError, match="unknown layer kind"):
        layer_macs("pool", 1, 1)


@pytest.mark.parametrize(
    "arch,bn_after_conv",
    [("vgg-small", True), ("resnet20", False), ("mobilenetv2", True), ("tv:resnet18", True)],
)
def test_the_four_counters_agree_on_real_models(arch: str, bn_after_conv: bool) -> None:
    torch.manual_seed(0)
    model = create_model(arch).eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():  # distinct folded biases (the exporter shares equal initializers)
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-1, 1)
    x = torch.zeros(1, 3, 32, 32)
    stats = count_model(model, (3, 32, 32))
    graph = build_graph(model, x)
    onnx_c = onnx_cost(_onnx(model, x))
    macs = {
        "count_model": stats.macs,
        "graph": graph.macs(),
        "resource": build_resource(model, x, "macs").dense,
        "onnx_cost": onnx_c.macs,
    }
    assert len(set(macs.values())) == 1, macs
    assert stats.macs == sum(r.macs for r in stats.layers)
    params = {
        "count_model": stats.params,
        "graph": graph.params(),
        "resource": build_resource(model, x, "params").dense,
    }
    assert len(set(params.values())) == 1, params
    assert stats.params == sum(p.numel() for p in model.parameters())
    if bn_after_conv:  # ONNX: every BN folded into its bias-free conv: 2C scale/shift -> C conv biases
        assert onnx_c.params == stats.params - sum(m.num_features for m in bns)


def test_grouped_and_transposed_convs_agree_with_onnx(caplog) -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, 3, stride=2, groups=8, bias=False),
        nn.ConvTranspose2d(8, 6, 4, stride=2, groups=2),
        nn.Flatten(),
        nn.Linear(6 * 16 * 16, 5),
    )
    x = torch.zeros(1, 4, 16, 16)
    with caplog.at_level("WARNING"):
        stats = count_model(model, (4, 16, 16))
    assert not caplog.records  # fvcore agrees with the one counter on every row
    assert stats.macs == onnx_cost(_onnx(model, x)).macs > 0
    assert stats.layers[2].macs == layer_macs("conv", 6, 8, kernel=16, groups=2, spatial=7 * 7)


def test_the_roofline_fuses_by_the_graph_not_the_node_order() -> None:
    """torchvision's ResNet-18 exports a block's downsample conv between conv1 and its Relu: the Relu
    was priced as a kernel of its own (three launches, a user's Orin Nano prediction 62% of dense
    where the budget that made the model said 60%). Every activation and residual add joins its
    conv; the budget's roofline and bench's price the same kernels."""
    from torchvision.models import resnet18

    from edgeslim.channels.cost import predict_latency, scale_bytes

    model, x = resnet18(num_classes=5).eval(), torch.zeros(1, 3, 64, 64)
    cost = onnx_cost(_onnx(model, x))
    assert [layer.op for layer in cost.layers].count("Conv") == 20
    assert {layer.op for layer in cost.layers} == {"Conv", "MaxPool", "GlobalAveragePool", "Gemm"}
    assert sum(layer.name.endswith("+Add+Relu") for layer in cost.layers) == 8
    res = build_resource(model, x, "latency", profile="jetson-orin-nano-8gb")
    onnx_s = predict_latency(
        scale_bytes(cost.layers, res.precision), res.profile, res.precision, 1, res.efficiency
    ).total_s
    assert onnx_s == pytest.approx(
        res.dense, rel=0.01
    )  # (0.7% apart: the stem's 3 input channels padded to 8)


class _ShortcutFirst(nn.Module):
    """``ds(x) + c2(c1(x))``: the shortcut conv runs first and is the Add's first operand."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.ds = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Conv2d(3, 8, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.ds(x) + self.c2(torch.relu(self.c1(x))))


def test_a_residual_add_joins_the_conv_that_runs_last() -> None:
    """The add can run only when both operands are ready: fused into c2, not the earlier shortcut conv."""
    names = [layer.name for layer in onnx_cost(_onnx(_ShortcutFirst(), torch.zeros(1, 3, 16, 16))).layers]
    assert len(names) == 3 and any(n.startswith("/c2/") and n.endswith("Conv+Add+Relu") for n in names), names
    assert any(n.startswith("/ds/") and n.endswith("/Conv") for n in names), names


class _Mixed(nn.Module):
    """Kernels besides the conv/linear layers: a max pool, a BN and ReLU no conv precedes (a
    pre-activation block), a residual add, a squeeze-excitation mean and gate, a concat, a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.pre = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.se1, self.se2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.b = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.d = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(40 + 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        y = self.a(self.pre(x)) + x
        y = y * torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        a, b = y.chunk(2, 1)  # (exported as two Slices)
        z = torch.cat([self.b(a), self.c(b)], 1).contiguous()[:, :40]  # (no node: a copy, a whole slice)
        z = z * z.new_full((1, 40, 1, 1), 2.0)  # (a constant the exporter folds: read by the Mul alone)
        p, q = torch.split(y, [8, 24], 1)  # (one Split node, both outputs written)
        return self.head(torch.cat([z.mean((2, 3)), self.d(p).mean((2, 3)), q[:, :8].mean((2, 3))], 1))


@pytest.mark.parametrize("arch", ["mixed", "resnet20", "mobilenetv2"])
def test_the_budget_prices_every_kernel_bench_predict_prices(arch: str, tmp_path) -> None:
    """A latency budget prices the network ``bench --predict`` prices from the exported ONNX --
    pools, squeeze-excitation gates, a pre-activation BN-ReLU, concats, residual reads, by the one
    fusion rule -- dense and slim, at batch 1 and 32 (a trial's resnet20 at batch 32 was 0.99 ms
    by the budget and 1.70 ms by bench before) -- at the exported widths and padded to the
    profile's INT8 multiple (32), as both price them on the device."""
    from edgeslim.channels.cost import predict_latency, scale_bytes
    from edgeslim.channels.devices import load_profile
    from edgeslim.export import export_onnx
    from edgeslim.sparsity.resource import zero_channels
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    model = _Mixed() if arch == "mixed" else create_model(arch)
    x = torch.randn(1, 8, 16, 16) if arch == "mixed" else torch.randn(1, 3, 32, 32)
    shipped = load_profile("jetson-orin-nano-8gb")
    flat = shipped.model_copy(update={"alignment": {}})
    for batch, prof in ((1, flat), (32, flat), (32, shipped)):
        r = build_resource(model, x, "latency", profile=prof, precision="int8", batch=batch)
        mask = r.uniform_mask(0.5)
        work = copy.deepcopy(model)
        zero_channels(work, mask == 0)
        slim = prune_with_report(work.eval(), x).model
        for i, (net, k) in enumerate(((model, r.dense_k), (slim, r.counts(mask)))):
            path = export_onnx(net, tmp_path / f"{batch}{i}{len(prof.alignment)}.onnx", tuple(x.shape[1:]),
                               validate=False).path  # (as edgeslim export writes it: simplified)  # fmt: skip
            cost = onnx_cost(path, multiple=prof.channel_multiple("int8"))
            onnx_layers = scale_bytes(cost.layers, "int8")
            want = predict_latency(onnx_layers, prof, "int8", batch=batch).total_s
            assert r.value(k) == pytest.approx(want, rel=0.01), (batch, prof.alignment, net is slim)
            assert len(r.layer_costs(k)) == len(onnx_layers)
        if prof.alignment:  # (padded, one channel less often costs the same: the marginal is the slope)
            continue
        k = r.dense_k
        marg = r.marginal(k)  # the controller's price of a channel: the kernels' bytes included
        for gi in torch.nonzero(k > 1).flatten()[:6].tolist():
            step = k.clone()
            step[gi] -= 1
            assert float(marg[gi]) == pytest.approx(r.value(k) - r.value(step), rel=0.05, abs=1e-12)


def test_the_image_channels_a_first_conv_reads_are_not_padded(tmp_path) -> None:
    """A measurement review: bench --predict priced a ResNet-18 stem's 3 image channels as 16 (host-cpu's
    multiple), 5x its measured time (7,407 us predicted, 1,406 us profiled; predicted speedup 3.08x for a
    measured 3.62x, 3.63x unpadded). No device pads an image to a channel block: the first conv's input
    channels are priced as they are, by bench --predict and by the latency budget alike."""
    from edgeslim.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU()).eval()  # fmt: skip
    x = torch.randn(1, 3, 16, 16)
    path = export_onnx(model, tmp_path / "m.onnx", (3, 16, 16), validate=False).path
    first, second = [layer for layer in onnx_cost(path, multiple=16).layers if layer.macs][:2]
    assert first.macs == layer_macs("conv", 3, 32, 9, 1, 256)  # (in: the image's 3; out: 24 padded to 32)
    assert second.macs == layer_macs("conv", 32, 32, 9, 1, 256)
    from edgeslim.channels.devices import load_profile

    prof = load_profile("jetson-orin-nano-8gb")
    r = build_resource(model, x, "latency", profile=prof, precision="int8", batch=1)
    costs = [c for c in r.layer_costs(r.dense_k) if c.macs]
    assert costs[0].macs == layer_macs("conv", 3, 32, 9, 1, 256)  # (INT8 multiple 32: 24 -> 32, the 3 as is)


class _ImagePlus(nn.Module):
    """A layer's output added to the image (``x + f(x)`` or ``f(x) + x``), then two convs."""

    def __init__(self, first: bool) -> None:
        super().__init__()
        self.first = first
        self.c0, self.b0 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.c1, self.b1 = nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24)
        self.c2 = nn.Conv2d(24, 24, 3, padding=1)

    def forward(self, x):
        y = self.b0(self.c0(x))
        y = x + y if self.first else y + x
        return self.c2(torch.relu(self.b1(self.c1(y))))


@pytest.mark.parametrize("first", [True, False])
def test_a_layer_added_to_the_image_is_priced_alike_by_the_budget_and_predict(first: bool, tmp_path) -> None:
    """Diff review of the unpadded image channels: a conv's output added to the image (x + f(x)) made
    bench --predict's price depend on the order of the add (c1's MACs 10.7x apart) and left the budget
    0.86-1.14x of it; where a layer writes into the image's channels both pad them, either order."""
    from edgeslim.channels.cost import predict_latency, scale_bytes
    from edgeslim.channels.devices import load_profile
    from edgeslim.export import export_onnx

    torch.manual_seed(0)
    model, x = _ImagePlus(first).eval(), torch.randn(1, 3, 16, 16)
    prof = load_profile("jetson-orin-nano-8gb")
    path = export_onnx(model, tmp_path / "m.onnx", (3, 16, 16), validate=False).path
    cost = onnx_cost(path, multiple=prof.channel_multiple("int8"))
    c1 = next(layer for layer in cost.layers if layer.name.startswith("/c1/"))
    assert c1.macs == layer_macs("conv", 32, 32, 9, 1, 256)  # (the image's 3 joined a layer's: padded)
    for batch in (1, 32):
        r = build_resource(model, x, "latency", profile=prof, precision="int8", batch=batch)
        want = predict_latency(scale_bytes(cost.layers, "int8"), prof, "int8", batch=batch).total_s
        assert r.value(r.dense_k) == pytest.approx(want, rel=0.01), batch


def test_count_model_counts_a_video_model_of_3d_convs() -> None:
    """Review of channel surgery outside the zoo (2026-12-06): count_model refused the (C, T, H, W)
    of a video model ("input shape must be C,H,W"), so a Conv3d network's MACs and parameters could
    not be counted. Its rows, its total and torch's FlopCounterMode agree on torchvision's r3d_18."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    model = torchvision.models.video.r3d_18(num_classes=10).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, 4, 32, 32))
    for counter in ("fvcore", "flop_counter"):
        stats = count_model(model, (3, 4, 32, 32), counter=counter)
        assert stats.macs == sum(r.macs for r in stats.layers) == fc.get_total_flops() // 2
        assert (
            stats.params == sum(r.params for r in stats.layers) == sum(p.numel() for p in model.parameters())
        )
    x = torch.zeros(1, 3, 4, 32, 32)
    assert build_graph(model, x).macs() == build_resource(model, x, "macs").dense == stats.macs


class _Tied(nn.Module):
    """Two linear layers sharing one weight (tied weights), each with its own bias."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)
        self.fc2.weight = self.fc.weight

    def forward(self, x):
        return self.fc2(torch.relu(self.fc(self.bn(self.stem(x)).mean((2, 3)))))


def test_tied_weights_are_counted_once() -> None:
    """The count review (finding 6): a weight two modules share counted at each of them: in info's
    rows (a trial's model: 1,024 against 960), in the channel graph's params() and so in a
    parameter budget. Counted once now, at the first layer that holds it."""
    model, x = _Tied(), torch.zeros(1, 3, 16, 16)
    true = sum(p.numel() for p in model.parameters())  # 216 + 16 + 64 + 8 + 8
    stats = count_model(model, (3, 16, 16))
    rows = {r.name: r.params for r in stats.layers}
    assert stats.params == sum(rows.values()) == true == 312 and rows["fc2"] == 8
    assert build_graph(model, x).params() == true
    assert build_resource(model, x, "params").dense == true
