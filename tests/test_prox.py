"""ProximalSlimming: the update formulas, per-channel weights, resume, finalize, wrapper."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeslim.errors import EdgeslimError
from edgeslim.penalties import prox
from edgeslim.sparsity import ProximalSlimming, wrap
from edgeslim.sparsity.prox import lambda_for_shrink, planned_shrink_per_lambda
from edgeslim.train.methods import create_method


def toy() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def sgd_step(model: nn.Module, opt) -> None:
    x, y = batch()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def bn_gammas(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


@pytest.mark.parametrize(
    "penalty,params", [("l1", {}), ("lp", {"p": 0.5}), ("scad", {"a": 3.7}), ("tl1", {"a": 1})]
)
def test_update_follows_the_formulas(penalty: str, params: dict) -> None:
    model = toy()
    s = ProximalSlimming(model, lam=2.0, beta=5.0, penalty=penalty, **params)
    weights = torch.linspace(0.5, 1.5, 10)
    s.set_weights(weights)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        sgd_step(model, opt)
        g_sgd, xi = bn_gammas(model).clone(), s.xi.clone()
        s.step(opt)
        alpha, beta = 1 / 0.05, 5.0
        g_new = (alpha * g_sgd + beta * xi) / (alpha + beta)
        xi_new = prox(
            penalty, (alpha * xi + beta * g_new) / (alpha + beta), 2.0 * weights / (alpha + beta), **params
        )
        torch.testing.assert_close(bn_gammas(model), g_new)
        torch.testing.assert_close(s.xi, xi_new)
    assert s.steps == 3 and s.xi.shape == (10,)


def test_lr_per_param_group_and_zero_lr() -> None:
    model = toy()
    bn1, bn2 = model[1], model[4]
    rest = [p for n, p in model.named_parameters() if not n.startswith(("1.", "4."))]
    opt = torch.optim.SGD([{"params": rest}, {"params": list(bn1.parameters()), "lr": 0.1},
                           {"params": list(bn2.parameters()), "lr": 0.01}], lr=0.05)  # fmt: skip
    s = ProximalSlimming(model, lam=1.0, beta=10.0)
    before = s.xi.clone()
    s.step(opt)  # gamma == xi initially: xi shrinks by tau = lam/(1/lr + beta) per layer
    torch.testing.assert_close(before[:6] - s.xi[:6], torch.full((6,), 1 / 20))
    torch.testing.assert_close(before[6:] - s.xi[6:], torch.full((4,), 1 / 110))
    xi = s.xi.clone()
    s.step(lr=0.0)
    assert torch.equal(xi, s.xi) and s.steps == 1


def test_a_param_group_added_later_gives_its_bn_its_own_lr() -> None:
    """API review (lrmap.py): which param group holds each BN was cached per optimizer object, so a BN
    unfrozen later with add_param_group (gradual unfreezing) was stepped at group 0's lr."""
    model = toy()
    bn2 = model[4]
    bn2.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    s = ProximalSlimming(model, lam=1.0, beta=10.0)
    s.step(opt)  # bn2 is frozen: untouched
    assert torch.equal(s.xi[6:], torch.ones(4))
    bn2.requires_grad_(True)
    opt.add_param_group({"params": list(bn2.parameters()), "lr": 0.01})
    s.step(opt)  # gamma == xi there: xi shrinks by lam / (1/0.01 + beta), not at group 0's lr 0.1
    torch.testing.assert_close(1 - s.xi[6:], torch.full((4,), 1 / 110))


def test_lambda_and_layer_weights_settable_during_training() -> None:
    model = toy()
    s = ProximalSlimming(model, lam=0.0, beta=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd_step(model, opt)
    s.step(opt)
    assert int((s.xi == 0).sum()) == 0
    s.lam = 50.0
    s.set_layer_weights({"1": 0.0})  # the first BN is exempt
    sgd_step(model, opt)
    s.step(opt)
    assert bool((s.xi[:6] != 0).all()) and bool((s.xi[6:] == 0).all())
    with pytest.raises(EdgeslimError, match="lambda"):
        s.lam = -1
    with pytest.raises(EdgeslimError, match="10 entries"):
        s.set_weights(torch.ones(3))
    with pytest.raises(EdgeslimError, match="no BatchNorm layer named"):
        s.set_layer_weights({"nope": 1.0})


def test_state_dict_resume_is_exact() -> None:
    torch.manual_seed(0)
    model = toy()
    s = ProximalSlimming(model, lam=0.5, beta=20.0, penalty="mcp", g=3.0)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), s)
    for _ in range(4):
        sgd_step(model, opt)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    assert "xi" in saved_opt["slimming"]
    for _ in range(4):
        sgd_step(model, opt)
    # resume into fresh objects (xi differs from gamma: a fresh slimmer alone would be wrong)
    model2 = toy()
    model2.load_state_dict(saved_model)
    s2 = ProximalSlimming(model2, lam=0.0, beta=1.0, penalty="mcp", g=3.0)
    opt2 = wrap(torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9), s2)
    opt2.load_state_dict(saved_opt)
    assert s2.lam == 0.5 and s2.beta == 20.0
    for _ in range(4):
        sgd_step(model2, opt2)
    assert torch.equal(s.xi, s2.xi)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_typo_d_keyword_reads_like_pythons_own_error() -> None:
    """API review (kwargs.py): ProximalSlimming(model, warmup=10) said "penalty 'l1' takes no parameter
    'warmup'"; a keyword no penalty has now reads as Python's TypeError does, with the closest name."""
    with pytest.raises(EdgeslimError) as info:
        ProximalSlimming(toy(), warmup=10)
    assert str(info.value) == (
        "ProximalSlimming() got an unexpected keyword argument 'warmup'; did you mean 'warmup_steps'?"
    )
    with pytest.raises(EdgeslimError, match="penalty 'l1' takes no parameter 'g'"):  # another penalty's
        ProximalSlimming(toy(), g=2.0)


def test_weights_loaded_after_the_slimmer_is_built_are_what_xi_starts_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """API review (stale_xi.py): xi was copied from the scales at construction only, so the common order
    "build the slimmer, then load pretrained weights" pulled every scale back towards the initial ones
    (pretrained [0.1..3.0] -> [0.918..1.182] after one step at lam 0). xi now starts from the scales
    the first backward sees, and the first-step check still compares with them."""
    pretrained = toy()
    with torch.no_grad():
        pretrained[1].weight.copy_(torch.linspace(0.1, 3.0, 6))
    model = toy()
    s = ProximalSlimming(model, lam=0.0, beta=100.0)
    model.load_state_dict(pretrained.state_dict())
    loaded = bn_gammas(model).clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd_step(model, opt)
    after_sgd = bn_gammas(model).clone()
    s.step(opt)  # lam 0: gamma is pulled towards xi = the loaded scales only
    torch.testing.assert_close(bn_gammas(model), (10.0 * after_sgd + 100.0 * loaded) / 110.0)
    torch.testing.assert_close(s.xi, (10.0 * loaded + 100.0 * bn_gammas(model)) / 110.0)
    # the first-step check compares with the loaded scales: a step before the optimizer's is still caught
    model = toy()
    s = ProximalSlimming(model, lam=0.0, beta=100.0)
    model.load_state_dict(pretrained.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(batch()[0]), batch()[1]).backward()
    with caplog.at_level("WARNING", logger="edgeslim.sparsity.prox"):
        s.step(opt)
    assert "before the optimizer changed any BN scale" in caplog.text
    # no backward before the first step (lr= given): xi is read at that step
    model = toy()
    s = ProximalSlimming(model, lam=0.0, beta=100.0)
    model.load_state_dict(pretrained.state_dict())
    s.step(lr=0.1)
    torch.testing.assert_close(bn_gammas(model), loaded)


def test_state_from_another_model_is_refused() -> None:
    s = ProximalSlimming(toy())
    other = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    with pytest.raises(EdgeslimError, match="another model"):
        ProximalSlimming(other).load_state_dict(s.state_dict())


def test_finalize_exact_zeros_and_never_empties_a_layer() -> None:
    model = toy()
    s = ProximalSlimming(model, lam=1000.0, beta=1.0)  # everything goes to zero
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor([0.3, 0.9, 0.1, 0.2]))
        s.xi[6:] = model[4].weight
        model[1].bias.fill_(0.25)
    s.step(opt)
    assert int((s.xi == 0).sum()) == 10
    rep = s.finalize()
    assert rep.restored == [["1"], ["4"]]
    kept = [int((m.weight != 0).sum()) for m in (model[1], model[4])]
    assert kept == [1, 1]
    assert model[4].weight[1] != 0  # the strongest channel of the second layer survives
    assert rep.zeroed == 8 and rep.kept == 2
    assert rep.layers[0]["bias_left_max_abs"] == pytest.approx(0.25)
    assert torch.equal(bn_gammas(model) == 0, s.xi == 0)


@pytest.mark.parametrize("assign", ["zeros", "xi"])
def test_finalize_assign_modes(assign: str) -> None:
    model = toy()
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.05, 1.0, 6))
        model[4].weight.copy_(torch.linspace(0.05, 1.0, 4))
    s = ProximalSlimming(model, lam=3.0, beta=10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        sgd_step(model, opt)
        s.step(opt)
    trained = bn_gammas(model).clone()
    assert 0 < int((s.xi == 0).sum()) < 10 and not torch.equal(trained, s.xi)
    s.finalize(assign=assign)
    expect = s.xi if assign == "xi" else torch.where(s.xi == 0, torch.zeros_like(trained), trained)
    assert torch.equal(bn_gammas(model), expect)


def test_group_mode_zeroes_coupled_channels_together() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, 0.1, 2.0, 0.05]))
        model[3].weight.copy_(torch.tensor([0.1, 0.1, 0.2, 3.0]))
    s = ProximalSlimming(model, lam=0.6, beta=1.0, penalty="group-l1", groups=[["1", "3"]])
    s.step(lr=1.0)  # xi == gamma at start: one block soft threshold of the coupled pairs, tau = 0.3
    zero_a, zero_b = s.xi[:4] == 0, s.xi[4:] == 0
    assert torch.equal(zero_a, zero_b)  # coupled: zero together
    assert zero_a.tolist() == [False, True, False, False]
    with pytest.raises(EdgeslimError, match="different channel counts"):
        ProximalSlimming(toy(), groups=[["1", "4"]])


def test_no_batchnorm_and_bad_hyperparameters() -> None:
    with pytest.raises(EdgeslimError, match="no affine BatchNorm"):
        ProximalSlimming(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(EdgeslimError, match="beta"):
        ProximalSlimming(toy(), beta=0)
    with pytest.raises(EdgeslimError, match="0 < p < 1"):
        ProximalSlimming(toy(), penalty="lp", p=2)
    with pytest.raises(EdgeslimError, match="unknown penalty"):
        ProximalSlimming(toy(), penalty="l0")
    s = ProximalSlimming(toy(), lam=1e6, beta=1.0, penalty="mcp", g=3.0)
    with pytest.raises(EdgeslimError, match="g > tau"):
        s.step(lr=1.0)


def test_trainer_method_and_lambda_for_shrink() -> None:
    hook = create_method("proximal", toy(), lam=0.1, beta=50.0, penalty="tl1", a=2.0)
    assert isinstance(hook, ProximalSlimming) and hook.params == {"a": 2.0}
    with pytest.raises(EdgeslimError, match="got an unexpected keyword argument 'q'"):
        create_method("proximal", toy(), lam=0.1, q=3)
    lrs = [0.1] * 100
    assert planned_shrink_per_lambda(lrs, beta=100) == pytest.approx(100 * 0.1 / 11)
    lam = lambda_for_shrink(2.0, lrs, beta=100)
    model = toy()
    s = ProximalSlimming(model, lam=lam, beta=100)
    start = s.xi.clone()
    for lr in lrs:  # gamma fixed at xi (no gradient step): xi shrinks by exactly the planned total
        s.step(lr=lr)
    torch.testing.assert_close(s.xi, torch.clamp(start - 2.0, min=0))


class Residual(nn.Module):
    """b0 and b1 are summed by a residual add: their channels are coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b0(self.c0(x)))
        h = torch.relu(h + self.b1(self.c1(h)))
        h = torch.relu(self.b2(self.c2(h)))
        return self.fc(h.mean((2, 3)))


def test_coupled_groups_from_the_surgery_graph() -> None:
    model = Residual()
    s = ProximalSlimming(model, lam=1e3, beta=1.0, penalty="group-l1", example_input=torch.zeros(1, 1, 8, 8))
    assert [[n for n, _ in u] for u in s.units] == [["b0", "b1"], ["b2"]]
    assert s.group_index[:4].tolist() == s.group_index[4:8].tolist()  # b0[c] and b1[c] share a group
    assert s.num_groups == 10
    s.step(lr=1.0)  # everything to zero; finalize keeps one coupled channel (in b0 AND b1) and one of b2
    rep = s.finalize()
    assert rep.restored == [["b0", "b1"], ["b2"]]
    nz0, nz1 = model.b0.weight != 0, model.b1.weight != 0
    assert int(nz0.sum()) == 1 and torch.equal(nz0, nz1) and int((model.b2.weight != 0).sum()) == 1


class LateFirst(nn.Module):
    """Two BN layers defined in the other order than they run."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_late, self.bn_early = nn.BatchNorm2d(4), nn.BatchNorm2d(8)
        self.c1, self.c2 = (
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.Conv2d(8, 4, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn_late(self.c2(torch.relu(self.bn_early(self.c1(x))))))


def test_group_penalty_layer_weights_act_on_their_own_channels() -> None:
    """API review (group_order.py): with a group penalty and no coupled layers every channel is its own
    group; example_input numbers the groups in execution order, and the per-channel weights (in
    module order) were applied by group id: bn_late's weight 0 fell on bn_early's channels."""
    s = ProximalSlimming(
        LateFirst(), lam=1.0, beta=1.0, penalty="group-l1", example_input=torch.zeros(1, 3, 8, 8)
    )
    s.set_layer_weights({"bn_late": 0.0, "bn_early": 1.0})
    s.step(lr=1.0)  # tau = lam * w / (alpha + beta) = 0.5 w
    where = s.layer_slices()
    assert s.xi[where["bn_late"]].tolist() == [1.0] * 4 and s.xi[where["bn_early"]].tolist() == [0.5] * 8


def test_zero_invariant_drives_scale_and_shift_to_zero_together() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, 0.5, 0.05, 1.0]))
        model[1].bias.copy_(torch.tensor([0.1, 0.2, 0.3, -1.0]))
    s = ProximalSlimming(model, lam=0.4, beta=1.0, zero_invariant=True)
    assert s.xi.numel() == 8 and s.grouped
    s.step(lr=1.0)  # one block soft threshold of (gamma_c, beta_c) with tau = 0.2
    norms = torch.tensor([0.1, 0.5, 0.05, 1.0]).hypot(torch.tensor([0.1, 0.2, 0.3, -1.0]))
    dead = norms <= 0.2
    assert torch.equal(s.xi[:4] == 0, dead) and torch.equal(s.xi[4:] == 0, dead)
    rep = s.finalize()
    assert rep.zeroed == 1 and rep.bias_left == {"1": torch.tensor([0.0])}
    assert model[1].weight[0] == 0 and model[1].bias[0] == 0 and model[1].bias[2] == 0.3


def test_wrapped_optimizer_is_a_torch_optimizer_for_schedulers_and_hooks() -> None:
    """A user passes ``wrap(...)`` to an LR scheduler as to any optimizer (a trial had to find
    ``opt.optimizer``): the run is bit for bit the plain optimizer + ``slimmer.step`` + scheduler one,
    without the scheduler's "called before optimizer.step()" warning; step hooks run once per step."""
    import warnings

    def run(wrapped: bool) -> tuple[torch.Tensor, dict, int]:
        torch.manual_seed(0)
        model = toy()
        s = ProximalSlimming(model, lam=2.0, beta=20.0)
        inner = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        opt = wrap(inner, s) if wrapped else inner
        assert isinstance(opt, torch.optim.Optimizer)
        calls = []
        opt.register_step_post_hook(lambda *_: calls.append(1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        for _ in range(5):
            sgd_step(model, opt)
            if not wrapped:
                s.step(inner)
            sched.step()
        return s.xi.clone(), copy.deepcopy(model.state_dict()), len(calls)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xi_w, state_w, hooks_w = run(wrapped=True)
    xi_p, state_p, hooks_p = run(wrapped=False)
    assert torch.equal(xi_w, xi_p) and hooks_w == hooks_p == 5
    for k, v in state_p.items():
        assert torch.equal(state_w[k], v), k
    assert float(xi_w.max()) < 0.9  # the prox shrank every scale (the gradient alone moves them ~3%)


def test_wrapped_optimizer_shares_the_wrapped_state() -> None:
    model = toy()
    inner = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = wrap(inner, ProximalSlimming(model))
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    opt.param_groups[0]["lr"] = 0.01
    assert inner.param_groups[0]["lr"] == 0.01
    extra = nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra]})
    assert len(inner.param_groups) == 2
    sgd_step(model, opt)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(EdgeslimError, match="torch.optim.Optimizer"):
        wrap(object(), ProximalSlimming(model))  # type: ignore[arg-type]


def test_surgery_before_finalize_removes_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Forgetting ``finalize()`` leaves the prox's zeros as small nonzero scales: surgery removes
    nothing, and says why (it was silent) -- and is quiet on a dense model and after finalize."""
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    model = toy()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.02, 1.0, 0.03, 1.0, 1.0, 0.01]))
    x = batch(2)[0]
    with caplog.at_level("WARNING", logger="edgeslim.surgery.prune"):
        assert prune_with_report(model.eval(), x).report["removed_channels"] == 0
    assert not caplog.records  # dense scales: nothing near zero
    s = ProximalSlimming(model, lam=0.5, beta=20.0, example_input=x)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05), s)
    for _ in range(5):
        sgd_step(model, opt)
    assert int((s.xi == 0).sum()) >= 3 and not bool((bn_gammas(model) == 0).any())
    with caplog.at_level("WARNING", logger="edgeslim.surgery.prune"):
        assert prune_with_report(model.eval(), x).report["removed_channels"] == 0
    assert len(caplog.records) == 1 and "call its finalize() before surgery" in caplog.text
    caplog.clear()
    s.finalize()
    with caplog.at_level("WARNING", logger="edgeslim.surgery.prune"):
        assert prune_with_report(model.eval(), x).report["removed_channels"] >= 3
    assert "finalize()" not in caplog.text  # (the folds into the padded conv are approximate: said so)
    assert all("folded approximately into 3" in r.getMessage() for r in caplog.records)


def test_wrapped_optimizer_copies_scales_and_reloads_like_a_torch_optimizer() -> None:
    """(A review of the subclass:) a deepcopy with an LR scheduler attached steps the copy, not the
    original; GradScaler with a fused optimizer inside gives the plain run's weights (it handed the
    scale to the wrapper, which the fused kernel never read: weights off by up to 141); a
    load_state_dict on the optimizer inside keeps the wrapper's groups the same objects."""
    torch.manual_seed(0)
    model = toy()
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), ProximalSlimming(model, lam=0.5))
    torch.optim.lr_scheduler.StepLR(opt, 1)
    both = copy.deepcopy({"m": model, "opt": opt})
    before = [p.detach().clone() for p in model.parameters()]
    sgd_step(both["m"], both["opt"])
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the original did not move
    assert any(not torch.equal(a, p) for a, p in zip(before, both["m"].parameters()))
    assert both["opt"].param_groups is both["opt"].optimizer.param_groups

    def scaled_run(wrapped: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        m = toy()
        s = ProximalSlimming(m, lam=0.5)
        inner = torch.optim.SGD(m.parameters(), lr=0.05, fused=True)
        o = wrap(inner, s) if wrapped else inner
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        for _ in range(3):
            x, y = batch()
            o.zero_grad()
            scaler.scale(nn.functional.cross_entropy(m(x), y)).backward()
            scaler.step(o)
            scaler.update()
            if not wrapped:
                s.step(inner)
        return [p.detach().clone() for p in m.parameters()]

    for a, b in zip(scaled_run(True), scaled_run(False)):
        assert torch.equal(a, b)
    state = opt.optimizer.state_dict()
    opt.optimizer.load_state_dict(state)  # (torch replaces the groups list)
    assert opt.param_groups is opt.optimizer.param_groups and opt.state is opt.optimizer.state


@pytest.mark.parametrize("recovery", [0, 3], ids=["one-phase", "recovery-phase"])
def test_zeros_a_coupled_channel_cannot_lose_keep_their_trained_scale(recovery, cifar_zip, caplog) -> None:
    """timm's ResNets start every block's last BN at scale 0 (zero_init_last); a per-channel l1 kept
    them at zero in xi while their gammas trained, and finalize zeroed 960 scales that surgery could
    not remove (each shares its channel with the shortcut's nonzero scales): the residual branches
    were cut, 11 points of a trial's accuracy lost, nothing removed, no word. Such zeros keep their
    trained values now; a coupled channel whose every scale is zero is still removed."""
    import logging

    import timm

    from edgeslim.data import load_dataset
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    bundle = load_dataset("cifar10", data_dir=cifar_zip, subset=256, test_subset=16)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    example = torch.zeros(1, 3, 32, 32)
    start = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(bool((start[f"layer{i}.{j}.bn2"] == 0).all()) for i in range(1, 5) for j in range(2))
    slimmer = ProximalSlimming(
        model, lam=15.0, beta=100, example_input=example, recovery_steps=recovery, total_steps=8
    )  # (a recovery phase never freezes them: finalize reports what the freeze kept)
    inner = {n: m for n, m in model.named_modules() if n.endswith(".bn1")}  # each its own unit
    slimmer.set_layer_weights(
        {n: torch.tensor([2.0, 1.0]).repeat_interleave(m.num_features // 2) for n, m in inner.items()}
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in bundle.loader("train", batch_size=32):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        slimmer.step(opt)
    trained = {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    }
    bn2 = [f"layer{i}.{j}.bn2" for i in range(1, 5) for j in range(2)]
    stranded = 960 if recovery else sum(int((slimmer.xi[slimmer.layer_slices()[n]] == 0).sum()) for n in bn2)
    assert stranded > 100 and all(bool((trained[n] != 0).any()) for n in bn2)  # the trial's situation
    if recovery:
        assert slimmer.frozen is not None and slimmer.coupled_kept_at_freeze >= stranded
        again = ProximalSlimming(
            model, lam=15.0, beta=100, example_input=example, recovery_steps=3, total_steps=8
        )
        again.load_state_dict(slimmer.state_dict())  # a resume reports the same
        assert again.coupled_kept_at_freeze == slimmer.coupled_kept_at_freeze
    with caplog.at_level(logging.WARNING, logger="edgeslim"):
        report = slimmer.finalize()
    assert report.coupled_kept >= stranded and "group penalty" in caplog.text
    mods = dict(model.named_modules())
    for n in bn2:  # nothing of a residual branch is cut
        assert torch.equal(mods[n].weight.detach(), trained[n])
    res = prune_with_report(model.eval(), example)
    assert res.report["zero_kept"]["coupled_with_nonzero"] == 0
    assert res.report["zero_scale_channels"] == res.report["removed_channels"] > 0  # every zero removable


def test_surgery_that_removes_nothing_of_many_zeros_says_why(caplog) -> None:
    """Zeros only in a residual block's last BN (the shortcut's scales nonzero): surgery kept them all
    and said nothing (a trial)."""
    import logging

    import timm

    from edgeslim.surgery import prune_with_report

    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()  # bn2 start at 0
    with caplog.at_level(logging.WARNING, logger="edgeslim"):
        res = prune_with_report(model, torch.zeros(1, 3, 32, 32))
    assert res.report["removed_channels"] == 0 and res.report["zero_scale_channels"] > 0
    assert "surgery removed nothing though" in caplog.text and "residual sum" in caplog.text


def test_a_wrapped_slimmer_stepped_by_hand_too_is_one_line() -> None:
    """wrap() plus a slimmer.step() of the user's own ran the prox twice per step (a trial: t == 6 after
    3 optimizer steps, phases and taper at double speed), silently."""
    model = toy()
    s = ProximalSlimming(model, lam=2.0, beta=20.0)
    inner = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = wrap(inner, s)
    sgd_step(model, opt)
    assert s.t == 1
    with pytest.raises(EdgeslimError, match="wrapped into an optimizer.*twice per step"):
        s.step(inner)
    sgd_step(model, copy.deepcopy(opt))  # a copy of the wrapper steps its own copy of the slimmer
    assert s.t == 1


def test_a_plain_optimizer_state_loads_into_the_wrapper() -> None:
    """A checkpoint from before slimming holds the optimizer's own state_dict: loading it into the
    wrapper raised KeyError: 'optimizer'."""
    model = toy()
    plain = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sgd_step(model, plain)
    s = ProximalSlimming(model, lam=2.0, beta=20.0)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), s)
    opt.load_state_dict(plain.state_dict())
    assert opt.optimizer.state_dict()["state"].keys() == plain.state_dict()["state"].keys() and s.t == 0
    with pytest.raises(EdgeslimError, match="not a state_dict of an optimizer"):
        opt.load_state_dict({"weights": 1})


def test_half_precision_scales_are_warned_about_and_their_shrink_is_measured(caplog) -> None:
    """API review (bf16.py): on a model converted with .bfloat16() the prox's per-step shrink (4e-4) is
    below the format's resolution: 1000 steps moved no scale, while slimmer.shrunk reported 0.417.
    Construction now warns (AMP keeps the parameters float32), and shrunk is what the scales got."""
    import logging

    model = toy().to(torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="edgeslim.sparsity.prox"):
        s = ProximalSlimming(model, lam=0.05, beta=100.0)
    assert "bfloat16" in caplog.text and "autocast" in caplog.text
    start = bn_gammas(model).float()
    for _ in range(200):
        s.step(lr=0.05)  # nominal shrink 200 * 0.05 / 120 = 0.083
    moved = float((start.abs() - bn_gammas(model).float().abs()).mean())
    assert float(s.shrunk) == pytest.approx(moved, abs=1e-3) and float(s.shrunk) < 0.01
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeslim.sparsity.prox"):
        ProximalSlimming(toy(), lam=0.05)
    assert "resolution" not in caplog.text  # float32: no warning


def test_no_zeros_says_the_shrink_the_steps_applied(caplog) -> None:
    """The warning named the scales' mean |gamma| as what "a total shrink must exceed" to a researcher
    whose planned shrink already exceeded it (the gradients gave it back): it now says the shrink the
    prox applied, kept across a resume."""
    import logging

    model = toy()
    s = ProximalSlimming(model, lam=1e-3, beta=20.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(4):
        sgd_step(model, opt)
        s.step(opt)
    expected = 4 * 1e-3 / (1 / 0.05 + 20.0)
    assert s.shrunk == pytest.approx(expected)
    again = ProximalSlimming(toy(), lam=1e-3, beta=20.0)
    again.load_state_dict(s.state_dict())
    assert again.shrunk == pytest.approx(expected)
    with caplog.at_level(logging.WARNING, logger="edgeslim"):
        s.finalize()
    assert f"shrank a scale by {expected:.3g} in all on average" in caplog.text


def test_a_slimmer_stepped_before_the_optimizer_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """An API user's trial called slimmer.step() before optimizer.step(): each gradient step then moved
    the exact zeros off zero, without a word. The first call sees the scales unchanged and says so; the
    right order, and a first step at learning rate 0 (ultralytics' warm-up of BN scales), do not."""

    def run(order: str, lr: float) -> list[str]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)
        )
        model(torch.randn(2, 3, 6, 6))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        slimmer = ProximalSlimming(model, lam=1e-3)
        caplog.clear()
        with caplog.at_level("WARNING", logger="edgeslim.sparsity.prox"):
            for _ in range(2):
                opt.zero_grad()
                model(torch.randn(4, 3, 6, 6)).square().mean().backward()
                if order == "before":
                    slimmer.step(opt)
                opt.step()
                if order == "after":
                    slimmer.step(opt)
        return [r.getMessage() for r in caplog.records]

    before = run("before", 0.1)
    assert len(before) == 1 and "right after optimizer.step()" in before[0]
    assert run("after", 0.1) == [] and run("before", 0.0) == []


def _two_bn_net() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
                      nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))  # fmt: skip
    return m


def _steps(m: nn.Module, opt: torch.optim.Optimizer, s: ProximalSlimming, n: int) -> None:
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 2, (8,))
    for _ in range(n):
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        opt.zero_grad()
        s.step(opt)


@pytest.mark.parametrize("prox_step", ["lr", "effective"])
def test_a_param_group_at_lr_0_skips_its_scales_and_only_those(prox_step) -> None:
    """A review: one BN in a group at lr 0 (a frozen stem) made alpha infinite for its entries and
    (inf * gamma + beta * xi) / (inf + beta) turned every scale into NaN."""
    m = _two_bn_net()
    stem = list(m[1].parameters())
    rest = [p for p in m.parameters() if all(p is not q for q in stem)]
    opt = torch.optim.SGD([{"params": rest, "lr": 0.1}, {"params": stem, "lr": 0.0}], momentum=0.9)
    s = ProximalSlimming(m, lam=0.5, beta=100, prox_step=prox_step)
    _steps(m, opt, s, 3)
    assert torch.equal(m[1].weight.detach(), torch.ones(4)) and torch.equal(s.xi[:4], torch.ones(4))
    assert bool(torch.isfinite(m[4].weight).all()) and bool((m[4].weight.detach() < 1).all())


def test_a_frozen_bn_is_left_to_itself() -> None:
    """A review: a BN frozen with requires_grad=False (the optimizer built over every parameter never
    moves it) was shrunk to exact zeros by the prox, and finalize emptied it."""
    m = _two_bn_net()
    for p in m[1].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    s = ProximalSlimming(m, lam=20.0, beta=100)
    _steps(m, opt, s, 30)
    assert torch.equal(m[1].weight.detach(), torch.ones(4)) and not bool((s.xi[:4] == 0).any())
    assert bool((s.xi[4:] == 0).any())  # (the trainable one is slimmed)
    s3 = ProximalSlimming(m, lam=20.0, beta=100)  # the step given its lr directly
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 2, (8,))
    for _ in range(30):
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        opt.zero_grad()
        s3.step(lr=0.1)
    assert torch.equal(m[1].weight.detach(), torch.ones(4))
    trainable = [p for p in m.parameters() if p.requires_grad]  # the frozen ones left out of the optimizer
    s2 = ProximalSlimming(m, lam=20.0, beta=100)
    _steps(
        m, torch.optim.SGD(trainable, lr=0.1), s2, 1
    )  # (was: "the optimizer does not train the BN scales")


@pytest.mark.parametrize("held", ["requires_grad", "lr0"])
@pytest.mark.parametrize(
    "kw", [{"penalty": "group-l1"}, {"zero_invariant": True}], ids=["group-l1", "zero-inv"]
)
def test_a_held_scale_of_a_coupled_channel_leaves_no_zero_surgery_cannot_remove(held, kw, caplog) -> None:
    """Review of the own loop: with a group penalty and a frozen (or lr-0) BN coupled by a residual add,
    the group prox zeroed the trainable members of a coupled channel while the held scale stayed
    nonzero, and finalize (which gives such zeros back for per-channel penalties) left them: surgery
    removed nothing and reported 1 zero it could not remove (coupled_with_nonzero). Such a channel now
    gets no shrink; the uncoupled layer still slims."""
    import logging

    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    model, example = Residual(), torch.zeros(1, 1, 8, 8)
    with torch.no_grad():
        model.b0.weight.uniform_(0.001, 0.01)  # (held small: the group norm of a channel is b1's)
        for b in (model.b1, model.b2):
            b.weight.uniform_(0.05, 0.3)
    stem = list(model.c0.parameters()) + list(model.b0.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in stem)]
    if held == "requires_grad":
        for p in stem:
            p.requires_grad_(False)
        opt = torch.optim.SGD(rest, lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.SGD([{"params": stem, "lr": 0.0}, {"params": rest}], lr=0.1, momentum=0.9)
    slimmer = ProximalSlimming(model, lam=6.0, beta=100, example_input=example, **kw)
    with caplog.at_level(logging.WARNING, logger="edgeslim"):
        _steps(model, opt, slimmer, 10)
    slimmer.finalize()
    assert int((model.b1.weight == 0).sum()) == 0 and int((model.b2.weight == 0).sum()) > 0
    res = prune_with_report(model.eval(), example, calib_inputs=torch.randn(8, 1, 8, 8), round_to=1)
    assert res.report["zero_kept"]["coupled_with_nonzero"] == 0
    assert res.report["zero_scale_channels"] == res.report["removed_channels"] > 0
    assert "held nonzero scale" in caplog.text


@pytest.mark.parametrize("replace", ["assign", "to_empty"])
def test_parameters_replaced_after_the_slimmer_was_built_are_followed(replace) -> None:
    """Review of the own loop: after load_state_dict(sd, assign=True) or model.to_empty(device=...) the model
    has new parameter objects and the slimmer held the old ones: a false 'the optimizer does not train the BN
    scales' (or the prox acting on tensors the model no longer uses). It reads the layers' parameters each time
    now, so the run is one with the slimmer built after the load (xi re-read at the first step, not at the
    first backward, for replaced parameters: one gradient step apart)."""
    pretrained = _two_bn_net().state_dict()
    for k in ("1.weight", "4.weight"):
        pretrained[k] = pretrained[k] * 3 + 0.5

    def run(build_first: bool) -> torch.Tensor:
        m = _two_bn_net()
        s = ProximalSlimming(m, lam=2.0, beta=100) if build_first else None
        if replace == "to_empty":
            m.to_empty(device="cpu")
        m.load_state_dict({k: v.clone() for k, v in pretrained.items()}, assign=replace == "assign")
        s = s or ProximalSlimming(m, lam=2.0, beta=100)
        torch.manual_seed(1)
        _steps(m, torch.optim.SGD(m.parameters(), lr=0.1), s, 3)
        s.finalize()
        assert s.gammas[0] is m[1].weight
        return torch.cat([m[1].weight.detach(), m[4].weight.detach(), s.xi])

    torch.testing.assert_close(run(True), run(False), atol=0.01, rtol=0)


def test_a_model_on_the_meta_device_is_refused_in_one_line() -> None:
    """Review of the own loop: a slimmer built on a meta-device model (before to_empty) failed at its first
    step with torch's NotImplementedError (aten::equal on Meta tensors)."""
    with torch.device("meta"):
        model = _two_bn_net()
    with pytest.raises(EdgeslimError, match="meta device") as err:
        ProximalSlimming(model)
    assert "\n" not in str(err.value) and "to_empty" in str(err.value)


def test_uninitialized_lazy_modules_are_one_line_everywhere_parameters_are_read() -> None:
    """Review of the own loop: ProximalSlimming on a model with LazyConv2d / LazyBatchNorm2d before any forward
    raised torch's raw ValueError ('Attempted to use an uninitialized parameter ...'), and so did surgery and the
    budget's resource model; count_model said 'only one element tensors can be converted to Python scalars'.
    Each now refuses in the same one line, asking for a forward pass; after one, all work."""
    from edgeslim.counting import count_model
    from edgeslim.sparsity.resource import build_resource
    from edgeslim.surgery import prune_with_report

    def lazy() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.LazyConv2d(8, 3, padding=1, bias=False), nn.LazyBatchNorm2d(), nn.ReLU(),
                             nn.Flatten(), nn.LazyLinear(3))  # fmt: skip

    example = torch.zeros(1, 1, 8, 8)
    calls = {
        "slimmer": lambda m: ProximalSlimming(m),
        "surgery": lambda m: prune_with_report(m, example),
        "count": lambda m: count_model(m, (1, 8, 8)),
        "budget": lambda m: build_resource(m, example),
    }
    for name, call in calls.items():
        with pytest.raises(EdgeslimError, match="uninitialized lazy modules") as err:
            call(lazy())
        assert "\n" not in str(err.value) and "forward pass" in str(err.value), name
    model = lazy()
    model(example)
    for call in calls.values():
        call(model)


@pytest.mark.parametrize(
    "saved, loaded, setting",
    [
        ({"zero_invariant": True}, {}, "zero_invariant True, this run uses False"),
        ({}, {"penalty": "scad", "l": 0.1}, "penalty 'l1', this run uses 'scad'"),
        ({}, {"penalty": "group-l1"}, "penalty 'l1', this run uses 'group-l1'"),
        ({"penalty": "lp", "p": 0.5}, {"penalty": "lp", "p": 0.6}, "penalty parameters {'p': 0.5}"),
        (
            {"total_steps": 100, "recovery_steps": 30},
            {"total_steps": 100, "recovery_steps": 60},
            "recovery_steps 30",
        ),
        ({"total_steps": 100}, {"total_steps": 200}, "total_steps 100, this run uses 200"),
        ({}, {"prox_step": "effective"}, "prox_step 'lr', this run uses 'effective'"),
        ({}, {"importance": "layer"}, "importance 'absolute', this run uses 'layer'"),
    ],
)
def test_a_state_saved_with_other_settings_is_refused_naming_the_setting(saved, loaded, setting) -> None:
    """Review of the own loop: a state saved with zero_invariant=True, loaded without it, was refused as
    'belongs to another model (32 BN channels saved, this model has 16)'; another penalty, phase lengths or
    prox_step loaded silently (only importance was checked). Each is refused now in one line naming the
    setting and both values; a state saved before a setting was saved (no key) still loads."""
    model = _two_bn_net()
    state = ProximalSlimming(model, lam=1.0, **saved).state_dict()
    target = ProximalSlimming(model, lam=1.0, **loaded)
    with pytest.raises(EdgeslimError, match="trained with ") as err:
        target.load_state_dict(state)
    assert setting in str(err.value) and "\n" not in str(err.value)
    old = ProximalSlimming(model, lam=1.0, **saved).state_dict()
    for key in ("zero_invariant", "phases", "importance", "params", "penalty"):  # (a state from before them)
        del old[key]
    again = ProximalSlimming(model, lam=1.0, **saved)
    again.load_state_dict(old)
    if "zero_invariant" in saved:  # (read from xi's length in a state without the key)
        with pytest.raises(EdgeslimError, match="zero_invariant True"):
            target.load_state_dict(old)


def test_a_slimmer_pickled_by_an_older_edgeslim_goes_on_with_its_parameters():
    """A review of the day's code: a ProximalSlimming pickled before it read its BN layers each time
    (its state: lists gammas/biases/targets, no bn_modules) raised AttributeError 'bn_modules' at its
    first step once unpickled; it goes on with the parameters it holds, as it did."""
    import copyreg
    import pickle

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
    )
    slimmer = ProximalSlimming(model, lam=0.5)
    old = {k: v for k, v in slimmer.__getstate__().items() if k != "bn_modules"}
    bns = [model[1], model[4]]
    old.update(gammas=[m.weight for m in bns], biases=[m.bias for m in bns], targets=[m.weight for m in bns])

    class OldPickle:  # (pickles as a ProximalSlimming whose state is the old one)
        def __reduce__(self):
            return copyreg._reconstructor, (ProximalSlimming, object, None), old

    # (the model and the old-style slimmer pickled together, as (model, slimmer) was: shared parameters kept)
    model2, revived = pickle.loads(pickle.dumps((model, OldPickle())))
    opt = torch.optim.SGD(model2.parameters(), lr=0.1)
    model2(torch.randn(2, 3, 6, 6)).sum().backward()
    opt.step()
    revived.step(opt)
    assert revived.gammas[0] is model2[1].weight and revived.zero_count() >= 0
    assert torch.equal(revived.xi[:8].abs() > 0, model2[1].weight.detach().abs() > 0)
