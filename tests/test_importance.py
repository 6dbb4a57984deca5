"""Scale-invariant channel importance (``importance="layer"``): the prox threshold of a BN layer
follows that layer's own scale, so a layer-wide rescaling (free in BN -> ReLU -> conv chains)
changes neither which channels the prox zeroes nor the budget's ranking."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeslim.cli import main
from edgeslim.data import load_dataset
from edgeslim.errors import EdgeslimError
from edgeslim.models.registry import create_model
from edgeslim.slim import SlimSettings, slim_model
from edgeslim.sparsity import ProximalSlimming
from edgeslim.sparsity.budget import BudgetSettings, build_controller
from edgeslim.train import TrainConfig


def toy(scale2: float = 1.0) -> nn.Module:
    """Two BN layers with spread scales; the second layer's scales (and shifts) times ``scale2``."""
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.1, 1.5, 6))
        model[4].weight.copy_(torch.linspace(0.05, 0.8, 8) * scale2)
        model[1].bias.fill_(0.1)
        model[4].bias.fill_(0.1 * scale2)
    return model


def zero_pattern(model: nn.Module, importance: str, scale_ref: float | None = None) -> torch.Tensor:
    s = ProximalSlimming(model, lam=4.0, beta=10.0, importance=importance)
    s.scale_ref = scale_ref
    s.step(lr=0.1)
    return s.xi == 0


def test_layer_factor_is_each_layers_mean_scale_over_the_reference() -> None:
    model = toy(scale2=0.25)
    s = ProximalSlimming(model, lam=1.0, importance="layer")
    f = s.layer_factor()
    mean1, mean2 = (
        float(torch.linspace(0.1, 1.5, 6).mean()),
        float((torch.linspace(0.05, 0.8, 8) * 0.25).mean()),
    )
    ref = float(torch.cat([torch.linspace(0.1, 1.5, 6), torch.linspace(0.05, 0.8, 8) * 0.25]).mean())
    assert s.scale_ref == pytest.approx(ref)
    assert torch.allclose(f[:6], torch.full((6,), mean1 / ref)) and torch.allclose(
        f[6:], torch.full((8,), mean2 / ref)
    )
    s.xi[6:] = 0  # a layer without a non-zero channel: factor 1 (its zeros stay zeros under any tau)
    assert torch.equal(s.layer_factor()[6:], torch.ones(8))


def test_rescaling_a_layer_leaves_the_layer_importance_zero_pattern_unchanged() -> None:
    """The defining property: ``prox(c v, c t) = c prox(v, t)`` for l1, so with the threshold
    following the layer's scale the zero pattern does not depend on the layer's overall scale,
    while the absolute importance zeroes more of a layer the smaller its scale is."""
    ref = 0.5
    base = zero_pattern(toy(1.0), "layer", ref)
    small = zero_pattern(toy(0.2), "layer", ref)
    assert torch.equal(base, small) and 0 < int(base.sum()) < base.numel()
    abs_base, abs_small = zero_pattern(toy(1.0), "absolute"), zero_pattern(toy(0.2), "absolute")
    assert int(abs_small[6:].sum()) > int(abs_base[6:].sum())  # absolute: shrinking the layer costs channels


def test_importance_is_checked_and_survives_a_resume() -> None:
    with pytest.raises(EdgeslimError, match="importance must be one of absolute, layer"):
        ProximalSlimming(toy(), importance="relative")
    with pytest.raises(EdgeslimError, match="importance"):
        SlimSettings(importance="bogus").validate()
    for penalty in ("mcp", "group-scad"):  # their threshold bound cannot follow a per-layer factor
        with pytest.raises(EdgeslimError, match=f"does not work with the {penalty} penalty"):
            SlimSettings(importance="layer", penalty=penalty).validate()
    model = toy()
    s = ProximalSlimming(model, lam=1.0, importance="layer")
    s.step(lr=0.1)
    state = s.state_dict()
    s2 = ProximalSlimming(copy.deepcopy(model), lam=1.0, importance="layer")
    s2.xi = s2.xi * 3  # a budget controller computes the factor before the state is loaded
    s2.layer_factor()
    assert s2.scale_ref != s.scale_ref
    s2.load_state_dict(state)
    assert s2.scale_ref == s.scale_ref is not None and torch.equal(s2.layer_factor(), s.layer_factor())
    s.step(lr=0.1)
    s2.step(lr=0.1)
    assert torch.equal(s.xi, s2.xi)
    with pytest.raises(EdgeslimError, match="trained with importance 'layer'"):
        ProximalSlimming(copy.deepcopy(model), lam=1.0).load_state_dict(state)


def test_budget_sees_scales_relative_to_their_layer() -> None:
    """With ``importance="layer"`` the budget controller's magnitudes (what it ranks and projects by)
    are relative to each layer: a layer scaled down by 10 leaves them proportional to before, so
    the ranking is unchanged (absolute: that layer's channels become the weakest)."""
    digits = load_dataset("digits", subset=200, test_subset=100)
    spec = digits.spec_for("vgg-small")
    example = torch.zeros(1, *spec.input_shape)
    mags = {}
    for importance in ("absolute", "layer"):
        for c in (1.0, 0.1):
            torch.manual_seed(0)
            model = create_model(spec)
            bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
            gen = torch.Generator().manual_seed(1)  # distinct scales everywhere (no ties to order)
            with torch.no_grad():
                for m in bns:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.1)
                bns[2].weight.mul_(c)
            s = ProximalSlimming(model, importance=importance)
            ctl = build_controller(
                model, s, BudgetSettings(metric="macs", target="0.5"), example, total_steps=10
            )
            mags[importance, c] = ctl.magnitude()
    assert torch.allclose(
        mags["layer", 1.0], mags["layer", 0.1] * (mags["layer", 1.0][0] / mags["layer", 0.1][0])
    )
    assert torch.equal(torch.argsort(mags["layer", 1.0]), torch.argsort(mags["layer", 0.1]))
    assert not torch.equal(torch.argsort(mags["absolute", 1.0]), torch.argsort(mags["absolute", 0.1]))


def test_slim_and_cli_take_the_importance(tmp_path: Path, capsys, monkeypatch) -> None:
    """The setting reaches the slimmer that ``slim_model`` builds, and the report; the CLI takes it
    and refuses a bad value or a penalty it cannot work with in one line."""
    digits = load_dataset("digits", subset=300, test_subset=100)
    spec = digits.spec_for("vgg-small")
    config = TrainConfig(epochs=2, batch_size=64, device="cpu")
    built = []
    init = ProximalSlimming.__init__

    def recording_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(ProximalSlimming, "__init__", recording_init)
    res = slim_model(
        create_model(spec), spec, digits, config, SlimSettings(shrink=0.5, importance="layer"), tmp_path / "a"
    )
    assert [s.importance for s in built] == ["layer"] and built[0].scale_ref is not None  # it ran
    assert res.report["slimming"]["importance"] == "layer"
    monkeypatch.undo()
    argv = ["slim", "vgg-small", "--data", "digits", "--subset", "300", "--test-subset", "100", "--epochs", "2",
            "--importance", "layer", "--out", str(tmp_path / "b"), "--device", "cpu", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["slimming"]["importance"] == "layer"
    for bad, flag in (
        (["--importance", "relative"], "--importance"),
        (["--importance", "layer", "--penalty", "mcp"], "--penalty"),
    ):
        code = main(["slim", "vgg-small", "--data", "digits", *bad, "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert code == 2 and flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
