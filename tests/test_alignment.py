"""Channel alignment: device profiles state it, slimming keeps it with trained channels, prune rounds to it."""

from __future__ import annotations

import json

import pytest
import torch

from edgeslim.channels.devices import DEFAULT_PROFILE, load_profile, resolve_alignment
from edgeslim.channels.norm import bn_layers
from edgeslim.cli import main
from edgeslim.errors import EdgeslimError
from edgeslim.models import ModelSpec, create_model
from edgeslim.sparsity.align import ChannelAligner
from edgeslim.sparsity.prox import ProximalSlimming, coupled_bn_groups
from edgeslim.sparsity.resource import build_resource, flat_gammas


def _model(arch: str) -> tuple[torch.nn.Module, torch.Tensor]:
    spec = ModelSpec(arch=arch, num_classes=10, in_channels=3, input_size=[32, 32])
    torch.manual_seed(0)
    return create_model(spec), torch.zeros(1, 3, 32, 32)


def test_profiles_state_alignment() -> None:
    assert load_profile(DEFAULT_PROFILE).channel_multiple() == 16  # measured here: ORT NCHWc on AVX-512
    orin = load_profile("jetson-orin-nano-8gb")
    assert (orin.channel_multiple(), orin.channel_multiple("int8")) == (8, 32)
    assert resolve_alignment(None, "jetson-orin-nano-8gb", "int8")["round_to"] == 32
    assert resolve_alignment(4, None)["round_to"] == 4 and resolve_alignment(4, None)["from"] == "round_to"
    with pytest.raises(EdgeslimError, match="no device profile"):
        resolve_alignment(None, "no-such-board")
    with pytest.raises(EdgeslimError, match="states no channel alignment for int8"):
        resolve_alignment(None, "host-cpu", "int8")  # a precision the profile says nothing about
    assert resolve_alignment(4, "host-cpu", "int8")["round_to"] == 4  # unless the multiple is given


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_aligner_revives_the_strongest_dead_channels(arch: str) -> None:
    """After the aligner every group's alive count is a multiple of 8 (or the group size), the
    channels it keeps are the strongest of the dead ones, and a second call changes nothing."""
    model, ex = _model(arch)
    res = build_resource(model, ex, "macs", round_to=8)
    g = torch.Generator().manual_seed(1)
    before = torch.rand(res.total, generator=g) + 0.01
    xi = torch.where(torch.rand(res.total, generator=g) < 0.45, torch.zeros(res.total), before)
    xi[~res.pos_removable] = before[~res.pos_removable]  # channels surgery cannot remove stay alive
    out = ChannelAligner(res)(xi, before)
    raw = res.raw_counts(res.alive_from_scales(out))
    size = res.group_size
    assert bool(((raw % 8 == 0) | (raw == size)).all())
    assert bool((raw >= res.raw_counts(res.alive_from_scales(xi))).all())
    revived = (xi == 0) & (out != 0)
    assert bool(revived.any()) and torch.equal(out[revived], before[revived])
    # within each group no revived class is weaker than a class left dead
    strength = torch.zeros(res.graph.num_classes).index_add_(0, res.pos_class, before**2)
    dead_cls = ~res.alive_from_scales(out)
    rev_cls = torch.zeros(res.graph.num_classes, dtype=torch.bool)
    rev_cls[res.pos_class[revived]] = True
    for grp in res.graph.groups:
        c = grp.classes
        if bool(rev_cls[c].any()) and bool(dead_cls[c].any()):
            assert float(strength[c][rev_cls[c]].min()) >= float(strength[c][dead_cls[c]].max())
    assert torch.equal(ChannelAligner(res)(out, before), out)


def test_prox_steps_keep_aligned_counts() -> None:
    """A strong prox with the aligner attached: every step leaves aligned counts, and surgery keeps
    exactly the alive channels (nothing padded back)."""
    from edgeslim.surgery import prune_with_report

    model, ex = _model("resnet20")
    sl = ProximalSlimming(model, lam=0.0, groups=coupled_bn_groups(model, ex))
    res = build_resource(model, ex, "macs", round_to=8)
    sl.aligner = ChannelAligner(res)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, bn in bn_layers(model):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g))
    sl.xi = flat_gammas(model).clone()
    sl.lam = 20.0
    for _ in range(5):
        sl.step(lr=0.1)
        raw = res.raw_counts(res.alive_from_scales(sl.xi))
        assert bool(((raw % 8 == 0) | (raw == res.group_size)).all())
    assert int((sl.xi == 0).sum()) > 0
    sl.finalize()
    rep = prune_with_report(model, ex, round_to=8).report
    assert rep["kept_by_rounding"] == 0 and rep["removed_channels"] > 0


def test_prune_rounds_to_the_profile_by_default(tmp_path) -> None:
    """edgeslim prune keeps multiples of the host profile's 16 unless told otherwise."""
    from edgeslim.checkpoint import save_model

    spec = ModelSpec(arch="vgg-small", num_classes=10, in_channels=1, input_size=[28, 28])
    torch.manual_seed(0)
    model = create_model(spec)
    with torch.no_grad():
        for _, bn in bn_layers(model):
            bn.weight[: bn.weight.numel() // 2 + 3] = 0  # unaligned kept counts
    save_model(tmp_path / "m.pt", model, spec)
    counts = {}
    for extra in ([], ["--round-to", "1"], ["--profile", "jetson-orin-nano-8gb", "--precision", "int8"]):
        out = tmp_path / f"s{len(extra)}.pt"
        assert main(["prune", str(tmp_path / "m.pt"), "-o", str(out), "--json", *extra]) == 0
        from edgeslim.checkpoint import load_model

        slim = load_model(out).model
        counts[len(extra)] = [int(bn.weight.numel()) for _, bn in bn_layers(slim)]
    assert counts[0] == [16, 16, 32, 32, 64, 64]  # 32 -> 13 alive -> 16, 64 -> 29 -> 32, 128 -> 61 -> 64
    assert counts[2] == [13, 13, 29, 29, 61, 61]
    assert counts[4] == [32, 32, 32, 32, 64, 64]  # INT8 on Orin: multiples of 32
    rep = main(["prune", str(tmp_path / "m.pt"), "-o", str(tmp_path / "x.pt"), "--json", "--profile", "nope"])
    assert rep == 2


def test_slim_report_names_the_alignment(tmp_path, fmnist_dir: str) -> None:
    out = tmp_path / "run"
    rc = main(["slim", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, "--subset", "128",
               "--test-subset", "64", "--epochs", "1", "--lambda", "0.01", "--profile", "rpi5", "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["alignment"]["round_to"] == 8 and rep["slimming"]["round_to"] == 8


def test_the_export_audit_leaves_widths_surgery_cannot_change_alone(tmp_path, capsys) -> None:
    """A squeeze-excitation's reduced width (4 here) has no BatchNorm: surgery cannot change it, so
    the audit does not count it nor ask to re-run surgery for it (a trial re-ran prune --round-to 8
    and still read "22/82 layers not a multiple of 8")."""
    from torch import nn

    from edgeslim.channels.graph import build_graph, resizable_layers
    from edgeslim.export import export_onnx
    from edgeslim.export.audit import audit_onnx

    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))

    net = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), SE(), nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()  # fmt: skip
    export_onnx(net, tmp_path / "se.onnx", (3, 16, 16))
    plain = audit_onnx(tmp_path / "se.onnx")
    assert sorted(lay.name for lay in plain.misaligned("fp16")) == ["/3/expand/Conv", "/3/reduce/Conv"]
    resizable = resizable_layers(build_graph(net, torch.zeros(1, 3, 16, 16)))
    assert resizable["3.reduce"] == (True, False) and resizable["3.expand"] == (False, True)
    audit = audit_onnx(tmp_path / "se.onnx", resizable)
    assert audit.misaligned("fp16") == [] and "FP16 is aligned" in audit.suggestion()
    # the export command audits with what surgery can change: timm's EfficientNet-B0 (SE widths 4, 6, 10...)
    pytest.importorskip("timm")
    out = tmp_path / "eff.onnx"
    assert (
        main(["export", "timm:efficientnet_b0", "--input-shape", "3,32,32", "--onnx", str(out), "--json"])
        == 0
    )
    fp16 = json.loads(capsys.readouterr().out)["audit"]["misaligned"]["fp16"]
    assert not any("/se/" in name for name in fp16), fp16


def test_the_audit_leaves_the_insides_of_a_module_under_a_channel_rule(tmp_path) -> None:
    """A trial: an SE under a user's channel rule had its inner Gemm and conv counted, with the advice to
    re-run surgery at 32, which never resizes them (the graph sees the module, not its layers)."""
    from torch import nn

    from edgeslim.channels.graph import build_graph, resizable_layers
    from edgeslim.channels.rules import ChannelRule, register_channel_rule, unregister
    from edgeslim.export import export_onnx
    from edgeslim.export.audit import audit_onnx

    class RuleSE(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.w1, self.fc2 = nn.Parameter(torch.randn(4, c)), nn.Conv2d(4, c, 1)

        def forward(self, x):
            s = torch.relu(torch.nn.functional.linear(x.mean((2, 3)), self.w1))
            return x * torch.sigmoid(self.fc2(s[:, :, None, None]))

    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), RuleSE(16), nn.Conv2d(16, 8, 1),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)).eval()  # fmt: skip
    net(torch.zeros(1, 3, 8, 8))
    export_onnx(net, tmp_path / "se.onnx", (3, 8, 8))
    register_channel_rule(RuleSE, ChannelRule(shrink=lambda m, i, o: None, pass_through=True))
    try:
        resizable = resizable_layers(build_graph(net, torch.zeros(1, 3, 8, 8)))
    finally:
        unregister(RuleSE)
    audit = audit_onnx(tmp_path / "se.onnx", resizable)
    inside = [lay for lay in audit.layers if (lay.module or "").startswith("3")]
    assert len(inside) == 2 and not any(lay.in_free or lay.out_free for lay in inside)
    assert audit.misaligned("fp16") == [] and not [lay for lay in audit.misaligned("int8") if lay in inside]


def test_the_export_audit_of_a_dynamo_export_knows_the_layers_surgery_narrowed(tmp_path, capsys) -> None:
    """The dynamo exporter names its nodes node_Conv_95: the audit matched none of them to the slim
    model's recipe and said the layers "keep the architecture's dense width" (from the docs audit).
    A node's module is read from its weight's name too, so both exporters give the same advice."""
    from edgeslim.checkpoint import save_model
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec
    from edgeslim.utils.onnx_graph import node_module

    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    model = create_model(spec).eval()
    with torch.no_grad():  # three channels of each BN to zero: widths surgery narrows to odd counts
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight[:3] = 0
            bn.bias[:3] = 0
    sparse, slim = tmp_path / "sparse.pt", tmp_path / "slim.pt"
    save_model(sparse, model, spec)
    assert main(["prune", str(sparse), "-o", str(slim), "--round-to", "1"]) == 0
    capsys.readouterr()
    advice = {}
    for exporter in ("torchscript", "dynamo"):
        out = tmp_path / f"{exporter}.onnx"
        assert main(["export", str(slim), "--onnx", str(out), "--exporter", exporter, "--json"]) == 0
        advice[exporter] = json.loads(capsys.readouterr().out)["audit"]["suggestion"]
    assert "re-run channel surgery rounding" in advice["torchscript"]
    # and the command that does it is named (second docs audit: the line named no option)
    assert main(["export", str(slim), "--onnx", str(tmp_path / "t.onnx")]) == 0
    assert (
        "(that is: edgeslim prune SPARSE.pt --output SLIM.pt --round-to 8; SPARSE.pt: the model before surgery"
        in (capsys.readouterr().out)
    )
    assert advice["dynamo"] == advice["torchscript"] and "dense width" not in advice["dynamo"], advice
    onnx = pytest.importorskip("onnx")
    convs = [n for n in onnx.load(str(tmp_path / "dynamo.onnx")).graph.node if n.op_type == "Conv"]
    assert convs[0].name.startswith("node_") and [node_module(n) for n in convs][:2] == [
        "features.0",
        "features.3",
    ]


def test_the_audit_asks_for_int8_rounding_when_fp16_misses_only_layers_surgery_left() -> None:
    """FP16 misaligned only in a layer surgery left at its dense width (12), INT8 also in one it cut
    (16): the advice missed --round-to 32 (from the second review)."""
    from edgeslim.export.audit import AlignmentReport, LayerChannels

    layers = [LayerChannels("a", "Conv", 12, 12, module="a"), LayerChannels("b", "Conv", 16, 16, module="b")]
    report = AlignmentReport(layers, narrowed={"b"})
    assert report.round_to == 32 and "rounding the kept channels to multiples of 32" in report.suggestion()
    assert AlignmentReport(layers, narrowed=set()).round_to is None  # nothing surgery cut: no rounding helps
    assert AlignmentReport(layers).round_to == 8  # no recipe known: FP16 first


def test_a_whole_pickle_gets_the_surgery_command_only_if_surgery_cut_it(tmp_path, capsys) -> None:
    """A device trial exported a dense whole pickle and was told to re-run surgery with --round-to 32 as
    a fact; a pickle says nothing about surgery, so the command is given on that condition."""
    from edgeslim.cli import main

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3), torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
                              torch.nn.Conv2d(12, 12, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))  # fmt: skip
    net(torch.zeros(1, 3, 16, 16))
    whole = tmp_path / "whole.pt"
    torch.save(net.eval(), whole)
    args = [
        "export",
        str(whole),
        "--trust-pickle",
        "--input-shape",
        "3,16,16",
        "--onnx",
        str(tmp_path / "w.onnx"),
    ]
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(if surgery cut it, that is: edgeslim prune SPARSE.pt" in text
    assert (
        "--round-to 8 --trust-pickle;" in text
    )  # (an extender's trial: the command lacked it, so it failed)


def test_one_rounding_rule_for_surgery_the_budget_and_threshold_pruning() -> None:
    from edgeslim.channels.rounding import aligned_counts, kept_count, kept_counts
    from edgeslim.sparsity.subgradient import threshold_prune
    from edgeslim.surgery import prune_with_report

    k = torch.arange(0, 41)
    for r in (1, 3, 8, 16):
        for size in (1, 5, 16, 40):
            got = kept_counts(k[: size + 1], size, r)
            assert torch.equal(
                got, kept_counts(k[: size + 1].double(), size, r).long()
            )  # int and float agree
            assert set(got.tolist()) <= set(aligned_counts(size, r))  # what it keeps is aligned ...
            assert got.tolist() == [kept_count(int(k), size, r) for k in k[: size + 1]]  # (scalar = tensor)
            assert kept_counts(torch.tensor(aligned_counts(size, r)), size, r).tolist() == aligned_counts(
                size, r
            )
    assert kept_counts(torch.tensor([0, 1, 17, 33, 40]), 40, 16).tolist() == [16, 16, 32, 40, 40]
    assert kept_counts(torch.tensor([2.5]), 40, 1).tolist() == [2.5]  # (the budget's fractional counts)

    # on a real network: surgery keeps the budget's rounding of the nonzero counts, and a threshold
    # prune at the multiple leaves surgery nothing to round
    model, x = _model("resnet20")
    torch.manual_seed(1)
    for _, m in bn_layers(model):
        m.weight.data.uniform_(0.05, 1.5)
    res = build_resource(model, x, "macs", round_to=8)
    assert threshold_prune(model, 0.45, example_input=x, round_to=8)["pruned"] > 0
    raw = res.raw_counts(res.alive_from_scales(flat_gammas(model)))
    assert torch.equal(res.round_counts(raw), raw)  # aligned already
    for _, m in bn_layers(model):  # one more zero per BN: now surgery returns channels
        m.weight.data[int(torch.nonzero(m.weight).flatten()[0])] = 0
        m.bias.data.zero_()
    raw = res.raw_counts(res.alive_from_scales(flat_gammas(model)))
    kept = res.round_counts(raw)
    assert not torch.equal(kept, raw)
    report = prune_with_report(model, x, round_to=8).report
    assert report["removed_channels"] == int(res.group_size.sum() - kept.sum())
    assert report["kept_by_rounding"] == int((kept - raw).sum())
