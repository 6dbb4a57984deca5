"""Property test: random small CNNs (residual, concat, SE, depthwise, grouped, pooling blocks) with
random zero BN channels; surgery never changes the output beyond what its report states."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgeslim.surgery import build_graph, prune_with_report, verify


def cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())  # fmt: skip


class Residual(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            cbr(c, c, k), nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c)
        )

    def forward(self, x):
        return torch.relu(x + self.body(x))


class Concat(nn.Module):
    def __init__(self, c: int, grow: int, k: int) -> None:
        super().__init__()
        self.branch = cbr(c, grow, k)

    def forward(self, x):
        return torch.cat([x, self.branch(x)], 1)


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return x * s


class RandomNet(nn.Module):
    def __init__(self, plan: list[tuple[str, int]], k: int) -> None:
        super().__init__()
        layers, c = [cbr(3, 8, k)], 8
        for kind, arg in plan:
            if kind == "cbr":
                layers.append(cbr(c, arg, k))
                c = arg
            elif kind == "grouped" and c % 2 == 0 and arg % 2 == 0:
                layers.append(cbr(c, arg, k, groups=2))
                c = arg
            elif kind == "dw":
                layers.append(cbr(c, c, k, groups=c))
            elif kind == "res":
                layers.append(Residual(c, k))
            elif kind == "cat":
                layers.append(Concat(c, arg, k))
                c += arg
            elif kind == "se":
                layers.append(SE(c))
            elif kind == "pool":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


block = st.tuples(
    st.sampled_from(["cbr", "grouped", "dw", "res", "cat", "se", "pool"]), st.sampled_from([4, 6, 8])
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(block, min_size=1, max_size=6), k=st.sampled_from([1, 3]), per_group=st.booleans(),
       biased=st.booleans(), seed=st.integers(0, 10_000))  # fmt: skip
def test_random_networks(plan, k, per_group, biased, seed):
    torch.manual_seed(seed)
    m = RandomNet(plan, k).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 8, 8, generator=gen)
    bns = {n: b for n, b in m.named_modules() if isinstance(b, nn.BatchNorm2d)}
    with torch.no_grad():
        for b in bns.values():
            b.running_mean.normal_(0, 0.3, generator=gen)
            b.bias.normal_(0, 0.3, generator=gen)
        if per_group:  # zero whole coupled groups: removable
            for bg in build_graph(m, x).bn_groups():
                sel = torch.rand(bg.size, generator=gen) < 0.5
                for name, idx in bg.members:
                    bns[name].weight[idx[sel]] = 0
                    if not biased:
                        bns[name].bias[idx[sel]] = 0
        else:  # zero channels of single BNs: mostly not removable (coupled BNs still nonzero)
            for b in bns.values():
                sel = torch.rand(b.num_features, generator=gen) < 0.5
                b.weight[sel] = 0
                if not biased:
                    b.bias[sel] = 0
    res = prune_with_report(m, x)
    d = verify(m, res.model, torch.randn(3, 3, 8, 8, generator=gen))
    with torch.no_grad():
        scale = max(1.0, float(m(x).abs().max()))
    if res.report["exact"]:
        assert d["max_abs_diff"] <= 1e-4 * scale, res.report["folded_biases"]
    else:  # approximate folds only into zero-padded k x k convs
        assert k == 3 and any(not f["exact"] for f in res.report["folded_biases"])
    assert res.report["max_abs_diff"] == verify(m, res.model, x)["max_abs_diff"]
    # the slim model's own graph agrees with the predicted cost
    alive_params = sum(p.numel() for p in res.model.parameters())
    assert alive_params == res.report["params_after"] <= res.report["params_before"]
    assert build_graph(res.model, x).macs() == res.report["macs_after"]
