"""Dependency-graph rules on small hand-built models whose right answer is known."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeslim.errors import EdgeslimError
from edgeslim.models import create_model
from edgeslim.surgery import build_graph, prune_with_report, verify


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())  # fmt: skip


def zero_bn(bn: nn.BatchNorm2d, idx: list[int], bias: float = 0.0) -> None:
    with torch.no_grad():
        bn.weight[idx] = 0
        bn.bias[idx] = bias


class FlattenNet(nn.Module):
    """conv-bn-relu, flatten of C x 4 x 4, Linear: each channel owns 16 Linear inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = cbr(3, 8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))


class ChunkCatNet(nn.Module):
    """ShuffleNet-like: chunk in two halves, one branch, concat, 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8, 1)
        self.b = cbr(4, 6, 1)
        self.head = nn.Conv2d(10, 4, 1)

    def forward(self, x):
        x1, x2 = self.a(x).chunk(2, dim=1)
        return self.head(torch.cat([x1, self.b(x2)], 1))


class SplitNet(nn.Module):
    """``torch.split`` at fixed sizes (sizes are literals in forward): a barrier."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8, 1)
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        p, _ = torch.split(self.a(x), [3, 5], dim=1)
        return self.head(p)


class UnknownOpNet(nn.Module):
    """An op the graph does not know (cumsum over channels) between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.b(torch.cumsum(self.a(x), 1)))


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8, 1)
        self.g = cbr(8, 8, 3, groups=2)
        self.dw = cbr(8, 8, 3, groups=8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.dw(self.g(self.a(x))))


def _groups_of(g, module: str, kind: str):
    """Groups with a member ``(module, kind)`` (a module may be a member more than once)."""
    return [grp for grp in g.groups if any(name == module and k == kind for name, k, _ in grp.members)]


def test_flatten_linear_owns_hw_inputs_per_channel_and_fold_is_exact():
    m = FlattenNet().eval()
    x = torch.randn(4, 3, 8, 8)
    g = build_graph(m, x)
    (grp,) = _groups_of(g, "body.1", "bn")
    lin = [i for name, k, i in grp.members if name == "fc" and k == "linear_in"]
    assert len(lin) == 16 and all(i.numel() == 8 for i in lin)  # 16 inputs per channel
    assert sorted(torch.cat(lin).tolist()) == list(range(128))
    zero_bn(m.body[1], [1, 5], bias=0.7)  # constant relu(0.7) per removed channel: folded exactly
    res = prune_with_report(m, x)
    assert res.model.fc.in_features == 6 * 16
    assert res.report["folded_biases"] == [{"layer": "fc", "channels": 32, "exact": True}]
    assert verify(m, res.model, torch.randn(4, 3, 8, 8))["max_abs_diff"] < 1e-5


def test_chunk_couples_halves_and_cat_offsets():
    m = ChunkCatNet().eval()
    x = torch.randn(2, 3, 6, 6)
    g = build_graph(m, x)
    (grp,) = _groups_of(g, "a.1", "bn")
    assert grp.size == 4  # channel j of each half is one unit (chunk halves stay equal)
    assert [i.tolist() for name, k, i in grp.members if name == "a.1"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    heads = {tuple(i.tolist()) for name, k, i in grp.members if name == "head"}
    assert heads == {(0, 1, 2, 3)}  # first half goes to cat offset 0..3
    (gb,) = _groups_of(g, "b.1", "bn")
    assert [i.tolist() for name, k, i in gb.members if name == "head"] == [[4, 5, 6, 7, 8, 9]]
    zero_bn(m.a[1], [1, 5])  # same index in both halves
    zero_bn(m.b[1], [0])
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == 6 and res.model.head.in_channels == 8
    assert verify(m, res.model, torch.randn(2, 3, 6, 6))["max_abs_diff"] < 1e-5


def test_unequal_chunk_zeros_are_kept():
    m = ChunkCatNet().eval()
    zero_bn(m.a[1], [1])  # only in the first half: removing it would unbalance chunk()
    res = prune_with_report(m, torch.randn(2, 3, 6, 6))
    assert res.report["removed_channels"] == 0 and res.model.a[0].out_channels == 8


def test_split_with_literal_sizes_is_a_barrier():
    m = SplitNet().eval()
    zero_bn(m.a[1], [0, 6])
    res = prune_with_report(m, torch.randn(2, 3, 6, 6))
    assert res.report["removed_channels"] == 0
    assert any("split" in b for b in res.report["barriers"])
    assert verify(m, res.model, torch.randn(2, 3, 6, 6))["max_abs_diff"] == 0


def test_unknown_op_keeps_crossing_channels_and_names_it():
    m = UnknownOpNet().eval()
    zero_bn(m.a[1], [2, 3])  # feeds cumsum: kept
    zero_bn(m.b[1], [4])  # after it, before a 1x1 conv: removable
    x = torch.randn(2, 3, 6, 6)
    g = build_graph(m, x)
    assert any("cumsum" in str(b) for b in g.barriers)
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == 8 and res.model.b[0].out_channels == 7
    assert verify(m, res.model, x)["max_abs_diff"] < 1e-5
    assert "cumsum" in str(g)


def test_grouped_conv_removes_index_j_of_every_group_and_depthwise_ties_in_out():
    m = GroupedNet().eval()
    x = torch.randn(2, 3, 6, 6)
    g = build_graph(m, x)
    (grp,) = _groups_of(g, "g.1", "bn")
    assert grp.size == 4  # 8 channels in 2 groups: index j of both groups is one unit
    bns = {name for name, k, _ in grp.members if k == "bn"}
    assert bns == {"g.1", "dw.1"}  # depthwise conv ties its input and output channels
    zero_bn(m.g[1], [1, 5])
    zero_bn(m.dw[1], [1, 5])
    zero_bn(m.a[1], [0, 4])
    res = prune_with_report(m, x)
    s = res.model
    assert (s.g[0].in_channels, s.g[0].out_channels, s.g[0].groups) == (6, 6, 2)
    assert (s.dw[0].in_channels, s.dw[0].out_channels, s.dw[0].groups) == (6, 6, 6)
    assert verify(m, s, torch.randn(2, 3, 6, 6))["max_abs_diff"] < 1e-5


def test_group_needs_every_bn_zero():
    m = GroupedNet().eval()
    zero_bn(m.g[1], [1, 5])  # dw.1 (same group) still nonzero
    res = prune_with_report(m, torch.randn(2, 3, 6, 6))
    assert res.report["removed_channels"] == 0


def test_round_to_and_never_empty():
    m = create_model("vgg-small").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for i, bn in enumerate(m.features):
            if isinstance(bn, nn.BatchNorm2d) and i < 5:
                bn.weight[:11] = 0
                bn.bias[:11] = torch.linspace(-0.5, -0.1, 11)  # relu(b) = 0: exact
    m.features[15].weight.data.zero_()  # a whole group zero
    m.features[15].bias.data.zero_()
    res = prune_with_report(m, x, round_to=8)
    widths = [c.out_channels for c in res.model.features if isinstance(c, nn.Conv2d)]
    assert widths[:2] == [24, 24]  # 32 - 11 = 21 -> 24 (strongest zero channels come back)
    assert widths[4] == 8  # never empty: 8 kept (rounded)
    assert all(w % 8 == 0 for w in widths)
    assert res.report["kept_by_rounding"] == 3 + 3 + 8
    assert verify(m, res.model, x)["max_abs_diff"] < 1e-4
    with pytest.raises(EdgeslimError):
        prune_with_report(m, x, round_to=0)


def test_macs_and_params_model_match_the_pruned_network():
    m = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    g = build_graph(m, x)
    gen = torch.Generator().manual_seed(3)
    alive = {}
    mods = dict(m.named_modules())
    for bg in g.bn_groups():
        keep = torch.rand(bg.size, generator=gen) > 0.4
        keep[0] = True
        alive[bg.group_index] = keep
        for name, idx in bg.members:
            zero_bn(mods[name], idx[~keep].tolist())
    predicted_macs, predicted_params = g.macs(alive), g.params(alive)
    slim = prune_with_report(m, x).model
    g2 = build_graph(slim, x)
    assert g2.macs() == predicted_macs < g.macs()
    assert predicted_params == sum(p.numel() for p in slim.parameters())
    # fvcore's independent count of the dense model agrees (conv + linear only)
    from fvcore.nn import FlopCountAnalysis

    fl = FlopCountAnalysis(m, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = fl.by_operator()
    assert g.macs() == by_op["conv"] + by_op["linear"]


def test_bn_groups_are_coupled_and_equal_length():
    m = create_model("resnet20").eval()
    g = build_graph(m, torch.randn(1, 3, 32, 32))
    bgs = g.bn_groups()
    for bg in bgs:
        assert len({idx.numel() for _, idx in bg.members}) == 1 and bg.size == bg.members[0][1].numel()
    sizes = sorted(len(bg.members) for bg in bgs)
    # pre-activation residual stage: the stream couples the bn1 of every block it feeds
    assert sizes[-1] >= 3
    assert "Group" in str(g.groups[1]) and "bn" in str(g)


def test_input_model_untouched_and_modes_restored():
    m = create_model("vgg-small").train()
    zero_bn(m.features[1], [0, 1])
    before = copy.deepcopy(m.state_dict())
    res = prune_with_report(m, torch.randn(2, 3, 32, 32))
    assert m.training and res.model.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_copy_owns_its_tensors_and_folding_leaves_the_input_alone():
    """Surgery on a copy shares no memory with the input, kept and folded layers included."""
    m = nn.Sequential(cbr(3, 8), cbr(8, 8), nn.Conv2d(8, 4, 1))
    zero_bn(m[0][1], [0, 2], bias=0.5)  # constant channels: folded into m[1][0] (zero-padded 3x3)
    m[1][0].bias = nn.Parameter(torch.randn(8))
    m.eval()
    before = copy.deepcopy(m.state_dict())
    res = prune_with_report(m, torch.randn(2, 3, 8, 8))
    assert res.report["folded_biases"] and res.report["removed_channels"] == 2
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    mine = {t.untyped_storage().data_ptr() for t in m.state_dict().values()}
    assert not mine & {t.untyped_storage().data_ptr() for t in res.model.state_dict().values()}
    assert [type(a) for a in m.modules()] == [type(b) for b in res.model.modules()]


def test_untraceable_model_is_one_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = cbr(3, 4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.c(x)
            return F.relu(x)

    with pytest.raises(EdgeslimError, match="cannot trace"):
        build_graph(Branchy(), torch.randn(1, 3, 8, 8))


class ShuffleNet(nn.Module):
    """Channel shuffle (view with a literal group count, transpose, view back) between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8, 1)
        self.b = cbr(8, 4, 1)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return self.b(x)


class LiteralViewNet(nn.Module):
    """``view(-1, 8 * 4 * 4)``: the channel count is a literal in forward, so channels are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.fc = nn.Linear(128, 3)

    def forward(self, x):
        return self.fc(self.a(x).view(-1, 8 * 4 * 4))


def test_channel_shuffle_couples_blocks_and_permutes():
    m = ShuffleNet().eval()
    x = torch.randn(2, 3, 4, 4)
    g = build_graph(m, x)
    (grp,) = _groups_of(g, "a.1", "bn")
    assert grp.size == 4
    b_in = [i.tolist() for name, k, i in grp.members if name == "b.0"]
    assert b_in == [[0, 2, 4, 6], [1, 3, 5, 7]]  # channel j -> 2j, channel 4+j -> 2j+1
    zero_bn(m.a[1], [1, 5])
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == 6 and res.model.b[0].in_channels == 6
    assert verify(m, res.model, torch.randn(2, 3, 4, 4))["max_abs_diff"] < 1e-5


def test_literal_view_is_a_barrier():
    m = LiteralViewNet().eval()
    zero_bn(m.a[1], [0, 3])
    x = torch.randn(2, 3, 4, 4)
    res = prune_with_report(m, x)
    assert res.report["removed_channels"] == 0
    assert any("literal" in b for b in res.report["barriers"])
    assert verify(m, res.model, x)["max_abs_diff"] == 0


def test_mlp_with_batchnorm1d_and_conv1d():
    mlp = nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 3)).eval()
    zero_bn(mlp[1], [2, 7], bias=0.4)  # constant relu(0.4) folded exactly into the last Linear
    x = torch.randn(5, 6)
    res = prune_with_report(mlp, x)
    assert (res.model[0].out_features, res.model[1].num_features, res.model[3].in_features) == (8, 8, 8)
    assert res.report["exact"] and verify(mlp, res.model, torch.randn(5, 6))["max_abs_diff"] < 1e-5

    seq = nn.Sequential(
        nn.Conv1d(2, 6, 3, padding=1), nn.BatchNorm1d(6), nn.ReLU(), nn.Conv1d(6, 2, 1)
    ).eval()
    zero_bn(seq[1], [0, 5])
    res = prune_with_report(seq, torch.randn(3, 2, 9))
    assert res.model[0].out_channels == 4 and res.model[3].in_channels == 4
    assert verify(seq, res.model, torch.randn(3, 2, 9))["max_abs_diff"] < 1e-5


def test_upsample_keeps_channels():
    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = cbr(3, 6), cbr(6, 4, 1)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, x):
            y = self.a(x)
            return self.b(self.up(y) + F.interpolate(y, scale_factor=2.0, mode="bilinear"))

    m = Up().eval()
    zero_bn(m.a[1], [1, 4], bias=0.3)  # constant after upsampling: folded exactly into a 1x1 conv
    x = torch.randn(2, 3, 5, 5)
    res = prune_with_report(m, x)
    assert res.model.a[0].out_channels == 4 and res.report["exact"]
    assert verify(m, res.model, torch.randn(2, 3, 5, 5))["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("bound", [300, 1 << 16, 70_000])
def test_group_helpers_match_numpy_reference(bound):
    """The grouping's fast paths (radix sort below 2**16 classes, torch's sort above; unique rows
    through packed keys) agree with the plain numpy reference on random data."""
    import numpy as np

    from edgeslim.channels.graph import _stable_order, _unique_rows

    gen = np.random.default_rng(bound)
    values = torch.from_numpy(gen.integers(0, bound, 5000))
    assert np.array_equal(_stable_order(values, bound), np.argsort(values.numpy(), kind="stable"))
    for base, k in ((7, 3), (bound, 5), (bound, 40)):  # 40 columns of a large base: several key passes
        rows = gen.integers(0, min(base, 4), (600, k))
        got, inv = _unique_rows(rows, base)
        want, want_inv = np.unique(rows, axis=0, return_inverse=True)
        assert np.array_equal(got, want) and np.array_equal(inv, want_inv.reshape(-1))


class Video3d(nn.Module):
    """3-d pooling, resampling and a transposed conv between BatchNorm3d layers (a video encoder-decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(2))
        self.up = nn.Sequential(
            nn.ConvTranspose3d(8, 6, 2, stride=2), nn.BatchNorm3d(6), nn.ReLU(), nn.Dropout3d()
        )
        self.b = nn.Sequential(nn.Conv3d(6, 6, 1), nn.BatchNorm3d(6), nn.ReLU(), nn.AvgPool3d(2))
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        y = self.b(F.interpolate(self.up(self.a(x)), scale_factor=(1, 2, 2), mode="trilinear"))
        return self.head(F.adaptive_max_pool3d(y, 1).flatten(1) + nn.AdaptiveAvgPool3d(1)(y).flatten(1))


def test_3d_pooling_resampling_and_transposed_conv_keep_channels_and_their_macs_are_measured():
    """Review of channel surgery outside the zoo (2026-12-06): conv3d, conv_transpose3d and the 3-d
    poolings were barriers ("unsupported function"). Every BN3d channel is now removable, exactly,
    and the graph's MACs and parameters before and after are what torch's FlopCounterMode counts."""
    from torch.utils.flop_counter import FlopCounterMode

    def measured(m: nn.Module, x: torch.Tensor) -> int:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        return fc.get_total_flops() // 2 // x.shape[0]

    torch.manual_seed(0)
    m = Video3d().double().eval()
    x = torch.randn(2, 3, 4, 16, 16, dtype=torch.float64)
    g = build_graph(m, x)
    assert [str(b) for b in g.barriers] == ["<model> (input): model input", "<model> (output): model output"]
    assert g.macs() == measured(m, x) and g.params() == sum(p.numel() for p in m.parameters())
    m = m.to(memory_format=torch.channels_last_3d)  # (a 5-D weight stays channels-last when sliced)
    zero_bn(m.a[1], [0, 3, 7])
    zero_bn(m.up[1], [2])
    zero_bn(m.b[1], [1, 4])
    res = prune_with_report(m, x)
    assert [res.model.a[1].num_features, res.model.up[1].num_features, res.model.b[1].num_features] == [
        5,
        5,
        4,
    ]
    assert res.model.up[0].weight.shape == (5, 5, 2, 2, 2) and res.model.head.in_features == 4
    assert res.report["exact"] and verify(m, res.model, torch.randn_like(x))["max_abs_diff"] < 1e-12
    assert res.report["macs_after"] == measured(res.model, x) < res.report["macs_before"]
    assert res.report["params_after"] == sum(p.numel() for p in res.model.parameters())
    assert res.model.a[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
