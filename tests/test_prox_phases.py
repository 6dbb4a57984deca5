"""Training phases (warm-up, recovery with a frozen zero pattern), the effective prox step and the
beta ramp of ProximalSlimming, through the hook and through ``slim``."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeslim.cli import main
from edgeslim.data import load_dataset
from edgeslim.errors import EdgeslimError
from edgeslim.models.registry import create_model
from edgeslim.slim import CollapseError, SlimSettings, parse_phase, phase_steps, resolve_lambda, slim_model
from edgeslim.sparsity import ProximalSlimming, wrap
from edgeslim.sparsity.prox import planned_shrink_per_lambda
from edgeslim.train import TrainConfig


def toy() -> nn.Module:
    """A small conv net whose BN scales spread over [0.1, 1.5] (so a few steps zero some, not all)."""
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.linspace(0.1, 1.5, m.num_features))
                m.bias.fill_(0.1)
    return model


def data_step(model: nn.Module, opt, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def scales(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return torch.cat([m.weight.detach().flatten() for m in bns]), torch.cat(
        [m.bias.detach().flatten() for m in bns]
    )


def test_warmup_leaves_scales_alone_then_recovery_holds_zeros_exactly() -> None:
    torch.manual_seed(0)
    model = toy()
    s = ProximalSlimming(model, lam=3.0, beta=10.0, warmup_steps=3, recovery_steps=4, total_steps=12)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), s)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for i in range(3):  # warm-up: exactly plain SGD, xi follows gamma
        assert s.phase == "warmup"
        data_step(model, opt, i)
        data_step(ref, ref_opt, i)
    assert torch.equal(scales(model)[0], scales(ref)[0]) and torch.equal(s.xi, scales(model)[0])
    assert s.steps == 0 and s.phase == "sparsify"
    for i in range(5):
        data_step(model, opt, 10 + i)
    zeros = s.xi == 0
    assert s.steps == 5 and 0 < int(zeros.sum()) < 10 and s.frozen is None
    data_step(model, opt, 20)  # the first recovery step freezes the pattern
    assert s.phase == "recovery" and s.frozen is not None and torch.equal(s.frozen, zeros)
    for i in range(3):
        data_step(model, opt, 30 + i)
        gamma, bias = scales(model)
        assert bool((gamma[zeros] == 0).all()) and bool((bias[zeros] == 0).all())
        assert torch.equal(s.xi, gamma)  # lambda no longer acts: xi is the trained scale
    assert s.steps == 5 and s.t == 12
    fin = s.finalize()
    assert fin.zeroed == int(zeros.sum()) and not fin.bias_left.get("1", torch.zeros(1)).any()


def test_recovery_never_empties_a_layer_and_resume_keeps_the_phase() -> None:
    torch.manual_seed(0)
    model = toy()
    s = ProximalSlimming(model, lam=50.0, beta=1.0, recovery_steps=3, total_steps=6)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.1), s)
    for i in range(4):
        data_step(model, opt, i)
    assert s.frozen is not None
    assert int((~s.frozen[:6]).sum()) == 1 and int((~s.frozen[6:]).sum()) == 1  # one channel kept per layer
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for i in range(2):
        data_step(model, opt, 10 + i)
    model2 = toy()
    model2.load_state_dict(saved_model)
    s2 = ProximalSlimming(model2, lam=50.0, beta=1.0, recovery_steps=3, total_steps=6)
    opt2 = wrap(torch.optim.SGD(model2.parameters(), lr=0.1), s2)
    opt2.load_state_dict(saved_opt)
    assert s2.t == 4 and torch.equal(s2.frozen, s.frozen)
    for i in range(2):
        data_step(model2, opt2, 10 + i)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_effective_step_uses_momentum_and_adam_state() -> None:
    model = toy()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    s = ProximalSlimming(model, lam=1.0, beta=10.0, prox_step="effective")
    before = s.xi.clone()
    s.step(sgd)  # gamma == xi: xi shrinks by tau = lam / ((1 - m)/lr + beta) = 1/11
    torch.testing.assert_close(before - s.xi, torch.full((10,), 1 / 11))
    assert s.mean_alpha(sgd) == pytest.approx(1.0)
    plain = ProximalSlimming(model, lam=1.0, beta=10.0)
    assert plain.mean_alpha(sgd) == pytest.approx(10.0)  # today's 1/lr
    model = toy()
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    s = ProximalSlimming(model, lam=1.0, beta=10.0, prox_step="effective")
    data_step(model, adam)
    v = torch.cat(
        [adam.state[m.weight]["exp_avg_sq"].flatten() for m in model if isinstance(m, nn.BatchNorm2d)]
    )
    alpha = (torch.sqrt(v / (1 - 0.999)) + 1e-8) / 0.01
    xi = s.xi.clone()
    gamma = scales(model)[0]
    s.step(adam)
    g_new = (alpha * gamma + 10.0 * xi) / (alpha + 10.0)
    expect = torch.clamp((alpha * xi + 10.0 * g_new) / (alpha + 10.0) - 1.0 / (alpha + 10.0), min=0)
    torch.testing.assert_close(s.xi, expect)
    with pytest.raises(EdgeslimError, match="prox_step"):
        ProximalSlimming(toy(), prox_step="nope")


@pytest.mark.parametrize("make", [lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9),
                                  lambda p: torch.optim.Adamax(p, lr=0.01)], ids=["RMSprop", "Adamax"])  # fmt: skip
def test_effective_step_of_an_optimizer_it_does_not_know_is_1_over_lr_with_a_warning(make, caplog) -> None:
    """Review of the own loop: prox_step='effective' gave RMSprop(momentum=0.9) SGD's momentum gain,
    alpha = (1 - m)/lr = 10 instead of the documented 1/lr = 100, and Adamax (betas, no exp_avg_sq)
    silently stayed at 1/lr. Both get 1/lr now, with a warning naming the optimizer."""
    model = toy()
    opt = make(model.parameters())
    s = ProximalSlimming(model, lam=1.0, beta=10.0, prox_step="effective")
    with caplog.at_level(logging.WARNING, logger="edgeslim"):
        for i in range(2):
            data_step(model, opt, i)
            assert s.mean_alpha(opt) == pytest.approx(100.0)
            s.step(opt)
    said = [r.getMessage() for r in caplog.records if "prox_step='effective'" in r.getMessage()]
    assert len(said) == 1 and type(opt).__name__ in said[0]


def test_beta_ramp_grows_beta_and_closes_the_gap() -> None:
    torch.manual_seed(0)
    model = toy()
    s = ProximalSlimming(model, lam=0.5, beta=10.0, total_steps=20, beta_end=1e4)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05), s)
    for i in range(15):
        data_step(model, opt, i)
    assert s.beta == 10.0
    for i in range(5):
        data_step(model, opt, 20 + i)
    assert s.beta == pytest.approx(1e4)
    kept = s.xi != 0
    gap = (scales(model)[0] - s.xi)[kept].abs().max()
    assert float(gap) <= 0.5 / 1e4 * 1.01  # the fixed-point gap lam/beta, at the final beta
    with pytest.raises(EdgeslimError, match="beta_end"):
        ProximalSlimming(toy(), beta_end=-1.0, total_steps=5)


def test_a_beta_end_below_beta_is_refused(tmp_path: Path, capsys) -> None:
    """Options review, finding 2: beta_end below beta was accepted and lowered beta (raising the shrink
    per step), collapsing a run whose advice then blamed --shrink."""
    with pytest.raises(EdgeslimError, match=r"beta_end \(1\) is below beta \(100\)") as info:
        ProximalSlimming(toy(), beta=100.0, beta_end=1.0, total_steps=5)
    assert info.value.params == ("beta_end", "beta")
    with pytest.raises(EdgeslimError, match="below beta"):
        SlimSettings(beta_end=50.0).validate()
    out = str(tmp_path / "r")
    rc = main(["slim", "vgg-small", "--data", "digits", "--beta", "10", "--beta-end", "5", "--out", out])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--beta-end (5) is below --beta (10)" in err, err
    SlimSettings(beta_end=100.0).validate()  # (equal: a ramp that holds beta)


def test_phase_settings_resolve_to_steps_and_match_the_shrink() -> None:
    digits = load_dataset("digits")
    config = TrainConfig(epochs=4, batch_size=100, device="cpu")  # 14 steps per epoch
    st = SlimSettings(shrink=0.5, prox_warmup=1, recovery="25%", prox_step="effective")
    ph = phase_steps(st, config, 14)
    assert ph == {"total_steps": 56, "warmup_steps": 14, "recovery_steps": 14}
    lam = resolve_lambda(st, config, digits)
    from edgeslim.slim import planned_lrs

    lrs = planned_lrs(config, 14)[14:42]
    assert lam * planned_shrink_per_lambda(lrs, 100.0, gain=10.0) == pytest.approx(0.5)
    assert parse_phase("0.5") == ("epochs", 0.5) and parse_phase("10%") == ("fraction", 0.1)
    for bad in ("-1", "100%", "x"):
        with pytest.raises(EdgeslimError, match="prox_warmup") as info:
            SlimSettings(prox_warmup=bad).validate()
        assert info.value.params == ("prox_warmup",)
    with pytest.raises(EdgeslimError, match="no step"):
        phase_steps(SlimSettings(prox_warmup=2, recovery=2), config, 14)


def test_slim_with_phases_reports_them_and_surgery_is_exact(tmp_path: Path) -> None:
    """A strong prox empties every layer before the recovery; the frozen pattern keeps one channel per
    layer, the zero channels' shifts are zero too, so surgery is exact (no constant to fold)."""
    digits = load_dataset("digits", subset=600, test_subset=200)
    spec = digits.spec_for("vgg-small")
    config = TrainConfig(epochs=3, batch_size=64, device="cpu")
    st = SlimSettings(shrink=0.6, prox_warmup=1, recovery=1, prox_step="effective")
    with pytest.raises(CollapseError):  # outputs are written before the collapse is raised
        slim_model(create_model(spec), spec, digits, config, st, tmp_path)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["slimming"]["phase_steps"] == {"total_steps": 27, "warmup_steps": 9, "recovery_steps": 9}
    assert rep["slimming"]["recovery"] == 1 and rep["slimming"]["prox_step"] == "effective"
    assert rep["channels"]["slim"] == 6 and len(rep["collapse"]["emptied"]) == 6  # reported at the freeze
    assert rep["accuracy"]["slim"] == rep["accuracy"]["trained"] == rep["accuracy"]["gamma_eq_xi"]
    assert rep["verify"]["max_abs_diff"] < 1e-4
    assert all("bias_left_max_abs" not in r or r["bias_left_max_abs"] == 0 for r in rep["layers"])
    assert [h["prox_phase"] for h in rep["history"]] == [0.0, 1.0, 2.0]


def test_cli_phase_options(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["slim", "vgg-small", "--data", "digits", "--subset", "300", "--test-subset", "100", "--epochs", "2",
            "--batch-size", "64", "--prox-warmup", "25%", "--recovery", "0.5", "--prox-step", "effective",
            "--beta-end", "auto", "--shrink", "0.5", "--out", str(out), "--device", "cpu", "--json"]  # fmt: skip
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    s = rep["slimming"]
    assert (s["prox_warmup"], s["recovery"], s["prox_step"], s["beta_end"]) == (
        "25%",
        0.5,
        "effective",
        "auto",
    )
    assert s["phase_steps"] == {"total_steps": 8, "warmup_steps": 2, "recovery_steps": 2}
    code = main(["slim", "vgg-small", "--data", "digits", "--recovery", "150%", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--recovery" in err and "Traceback" not in err


def test_budget_with_phases_freezes_a_pattern_that_meets_the_budget(tmp_path: Path) -> None:
    """The controller runs in the sparsification phase only; at the freeze its projection makes the
    pattern meet the budget, and the recovery keeps that pattern (lambda no longer acts)."""
    digits = load_dataset("digits", subset=600, test_subset=200)
    spec = digits.spec_for("vgg-small")
    config = TrainConfig(epochs=3, batch_size=64, device="cpu")
    st = SlimSettings(budget={"metric": "macs", "target": "0.5"}, prox_warmup=1, recovery=1)
    rep = slim_model(create_model(spec), spec, digits, config, st, tmp_path).report
    b = rep["budget"]
    assert b["total_steps"] == 9  # the sparsification phase only
    assert b["achieved_fraction"] <= 0.5 + 1e-9 and b["projection_removed_channels"] == 0  # met at the freeze
    assert rep["macs"]["slim"] <= 0.5 * rep["macs"]["dense"] + 1
    assert rep["accuracy"]["slim"] == rep["accuracy"]["trained"]


def test_recovery_lr_keeps_each_param_groups_ratio_to_the_largest_rate() -> None:
    """API review (recovery_lr_groups.py): the restart wrote one rate into every param group, so a
    backbone held at lr 0 and a head at 0.01 both trained at recovery_lr in the recovery phase."""
    model = toy()
    s = ProximalSlimming(model, lam=1.0, beta=10.0, recovery_steps=2, total_steps=4, recovery_lr=0.5)
    head = list(model[8].parameters())
    backbone = list(model[0].parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in head + backbone)]
    opt = wrap(torch.optim.SGD([{"params": backbone, "lr": 0.0}, {"params": rest, "lr": 0.02},
                                {"params": head, "lr": 0.01}]), s)  # fmt: skip
    seen = []
    opt.optimizer.register_step_pre_hook(lambda o, a, k: seen.append([g["lr"] for g in o.param_groups]))
    frozen = [p.detach().clone() for p in backbone]
    for i in range(4):
        data_step(model, opt, i)
    assert seen[:2] == [[0.0, 0.02, 0.01]] * 2
    assert seen[2] == pytest.approx([0.0, 0.5, 0.25])  # the restart, each group at its share of it
    assert seen[3] == pytest.approx([0.0, 0.25, 0.125])
    assert all(torch.equal(p, q) for p, q in zip(backbone, frozen))
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.02, 0.01]  # put back after each step


def test_recovery_lr_restarts_the_learning_rate_in_the_recovery_phase(tmp_path: Path, capsys, caplog) -> None:
    """With ``recovery_lr`` the optimizer takes that rate at the first recovery step, falling to 0 by a
    cosine over the recovery; before it the trainer's own rate is untouched."""
    torch.manual_seed(0)
    model = toy()
    s = ProximalSlimming(
        model, lam=1.0, beta=10.0, warmup_steps=2, recovery_steps=4, total_steps=10, recovery_lr=0.5
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = []
    for i in range(10):  # the trainer's order: schedule, backward, hooks, step, hooks
        for grp in opt.param_groups:
            grp["lr"] = 0.01  # what the trainer's schedule writes before each step
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        s.after_backward(model, opt)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        s.after_step(model, opt)
        assert opt.param_groups[0]["lr"] == 0.01  # put back: a scheduler reading it never sees the restart
    want = [0.01] * 6 + [0.5 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert seen == pytest.approx(want)
    # the optimizer wrapper restarts the rate for its step the same way, and puts it back
    torch.manual_seed(0)
    model2 = toy()
    s2 = ProximalSlimming(
        model2, lam=1.0, beta=10.0, warmup_steps=2, recovery_steps=4, total_steps=10, recovery_lr=0.5
    )
    opt2 = wrap(torch.optim.SGD(model2.parameters(), lr=0.01, momentum=0.9), s2)
    for i in range(10):
        data_step(model2, opt2, i)
        assert opt2.param_groups[0]["lr"] == 0.01
    for p, q in zip(model.parameters(), model2.parameters()):  # the same steps at the same rates
        assert torch.allclose(p, q, atol=1e-6)
    assert s.on_epoch_end(0, model)["recovery_lr"] == pytest.approx(want[-1])
    # a plain optimizer.step() cannot take the restart: said once, at the first recovery step (a trial's
    # own loop ran its recovery at the scheduler's rate without a word)
    model3 = toy()
    s3 = ProximalSlimming(
        model3, lam=1.0, beta=10.0, warmup_steps=2, recovery_steps=4, total_steps=10, recovery_lr=0.5
    )
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.01, momentum=0.9)
    with caplog.at_level(logging.WARNING, logger="edgeslim.sparsity.prox"):
        for i in range(10):
            opt3.zero_grad()
            g = torch.Generator().manual_seed(i)
            nn.functional.cross_entropy(
                model3(torch.randn(16, 1, 8, 8, generator=g)), torch.randint(0, 3, (16,), generator=g)
            ).backward()
            opt3.step()
            s3.step(opt3)
    said = [r.getMessage() for r in caplog.records if "was not applied" in r.getMessage()]
    assert len(said) == 1 and "wrap(optimizer, slimmer)" in said[0]  # (the trainer's and wrap's runs: none)
    with pytest.raises(EdgeslimError, match="recovery_lr must be"):
        SlimSettings(recovery_lr=-1.0).validate()
    with pytest.raises(EdgeslimError, match="give it a recovery"):
        ProximalSlimming(toy(), recovery_lr=0.1, total_steps=10)
    # the CLI: the option reaches the report; without a recovery phase one line, exit 2
    out = tmp_path / "run"
    argv = ["slim", "vgg-small", "--data", "digits", "--subset", "300", "--test-subset", "100", "--epochs", "2",
            "--batch-size", "64", "--recovery-lr", "0.05", "--shrink", "0.5", "--out", str(out), "--device", "cpu",
            "--json"]  # fmt: skip
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["slimming"]["recovery_lr"] == 0.05 and rep["history"][-1]["recovery_lr"] < 0.05
    code = main([*argv[:-5], "--recovery", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--recovery-lr" in err and len(err.strip().splitlines()) == 1


def test_default_phases_restart_the_recovery_at_the_base_rate(capsys) -> None:
    """No phase settings: 10% warm-up, 50% recovery restarted at the run's base rate (a budget run too);
    a run without recovery keeps the schedule; ``base``/``off``/a number from the Python API and CLI."""
    config = TrainConfig(epochs=4, lr=0.05, batch_size=100, device="cpu")
    ph = phase_steps(SlimSettings(), config, 10)
    assert ph == {"total_steps": 40, "warmup_steps": 4, "recovery_steps": 20}
    assert SlimSettings().resolved_recovery_lr(config.lr, 20) == 0.05
    assert SlimSettings(recovery_lr="off").resolved_recovery_lr(config.lr, 20) is None
    assert SlimSettings(recovery_lr=0.2).resolved_recovery_lr(config.lr, 20) == 0.2
    assert SlimSettings(recovery=0).resolved_recovery_lr(config.lr, 0) is None
    budget = SlimSettings(budget={"metric": "macs", "target": "0.5"})
    assert budget.phases() == ("10%", "50%") and budget.resolved_recovery_lr(config.lr, 20) == 0.05
    with pytest.raises(EdgeslimError, match="give it a recovery"):
        phase_steps(SlimSettings(recovery=0, recovery_lr="base"), config, 10)
    with pytest.raises(EdgeslimError, match="base or off") as info:
        SlimSettings(recovery_lr="fast").validate()
    assert info.value.params == ("recovery_lr",)
    code = main(["slim", "vgg-small", "--data", "digits", "--recovery-lr", "fast", "--out", "unused"])
    err = capsys.readouterr().err
    assert code == 2 and "--recovery-lr" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("lam", "said"), [(1e-4, "no BN scale reached zero"), (50.0, "the prox emptied 2 of 2")]
)
def test_finalize_tells_a_python_caller_when_nothing_or_too_much_reached_zero(
    caplog, lam: float, said: str
) -> None:
    """A user's own loop: a strength that zeroes nothing, or empties every layer, said in one line each
    (a trial's LR-ASPP lost all 12,328 channels without a word; the CLI's report says it there)."""
    model = toy()
    s = ProximalSlimming(model, lam=lam, beta=10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(5):
        data_step(model, opt, i)
        s.step(opt)
    with caplog.at_level(logging.WARNING, logger="edgeslim.sparsity.prox"):
        s.finalize()
    assert [r.getMessage() for r in caplog.records if said in r.getMessage()], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeslim.sparsity.prox"):
        s.finalize(warn=False)
    assert not caplog.records


def test_the_epoch_lr_is_the_same_on_the_terminal_and_in_log_jsonl(tmp_path, caplog) -> None:
    """A README trial: the terminal's epoch line said lr 0.005 (the restarted recovery's rate), log.jsonl
    0.000955 (the base schedule's, which the optimizer did not run at). Both now give the rate of the
    epoch's last step, the line says so, and the schedule's is kept as schedule_lr."""
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["slim", "vgg-small", "--data", "digits", "--subset", "300", "--test-subset", "100",
                     "--epochs", "2", "--threads", "1", "--shrink", "0.1", "--out", str(out)]) == 0  # fmt: skip
    records = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    last = records[-1]
    assert (
        last["recovery_lr"] == last["lr"] != last["schedule_lr"]
    )  # (the restart: another rate than the base's)
    said = [r.getMessage() for r in caplog.records if "slim epoch 2/2" in r.getMessage()]
    assert said and f"lr {last['lr']:.3g} at its last step" in said[0]
