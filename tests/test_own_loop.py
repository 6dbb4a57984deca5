"""The own-training-loop recipe of docs/slimming.md, as written there: a planned shrink for lambda,
an optional MAC budget driven by hand, exact-zero monitoring, zero-invariant pairs, then surgery
without alignment rounding (a trial's segmentation user had to read budget.py to find the calls)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from torch import nn

from edgeslim.data import load_dataset
from edgeslim.sparsity import ProximalSlimming, wrap
from edgeslim.sparsity.budget import BudgetSettings, build_controller
from edgeslim.sparsity.prox import lambda_for_shrink
from edgeslim.surgery import prune_with_report


def _net() -> nn.Module:
    def cbr(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(cbr(1, 32), cbr(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _setup() -> tuple:
    """A small net on the digits, SGD: (model, lr, epochs, loader(epoch), steps, example, optimizer)."""
    torch.manual_seed(0)
    data = load_dataset("digits", subset=512, test_subset=64)
    model, lr, epochs = _net(), 0.05, 6
    loader = lambda e: data.loader("train", 32, shuffle=True, augment=False, epoch=e)  # noqa: E731
    example = torch.zeros(1, 1, 8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return model, lr, epochs, loader, epochs * len(loader(0)), example, optimizer


def test_the_documented_own_loop_with_a_budget() -> None:
    model, lr, epochs, loader, steps, example, optimizer = _setup()
    # --- as in docs/slimming.md, "Your own training loop"
    lam = lambda_for_shrink(1.0, [lr] * steps, beta=100)  # a total shrink of 1.0 over the planned steps
    slimmer = ProximalSlimming(model, lam=lam, beta=100, zero_invariant=True, total_steps=steps,
                               example_input=example)  # fmt: skip
    ctrl = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, steps)
    ctrl.on_train_start(model, optimizer)
    zeros = []
    for epoch in range(epochs):
        for x, y in loader(epoch):
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            slimmer.step(optimizer)
            ctrl.after_step(model, optimizer)
        zeros.append(slimmer.zero_count())
    ctrl.on_train_end(model)
    report = slimmer.finalize()
    res = prune_with_report(model, example, round_to=1)
    # ---
    assert repr(report).startswith(f"FinalizeReport(zeroed {zeros[-1]} of ") and len(repr(report)) < 200
    assert zeros[-1] > 0 and zeros[-1] == res.report["removed_channels"]
    assert res.report["exact"] and res.report["max_abs_diff"] < 1e-5  # zero-invariant: nothing to fold
    assert res.report["macs_after"] <= 0.55 * res.report["macs_before"]


def test_an_own_loop_with_phases_meets_the_budget_at_the_freeze() -> None:
    """A budget with a warm-up and a recovery phase, in the user's loop: the controller counted the
    whole run as its clock and no projection ran before the freeze, so a trial's zero pattern froze at
    82% of the MACs and finalize's late projection cost 12 points. build_controller now takes the
    phases from the slimmer, as `edgeslim slim` did by hand."""
    model, lr, epochs, loader, steps, example, optimizer = _setup()
    slimmer = ProximalSlimming(model, lam=0.0, beta=100, zero_invariant=True, total_steps=steps,
                               warmup_steps=steps // 10, recovery_steps=steps // 2, example_input=example)  # fmt: skip
    ctrl = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, steps)
    assert ctrl.total_steps == steps - steps // 10 - steps // 2
    ctrl.on_train_start(model, optimizer)
    frozen_at, opt = None, wrap(optimizer, slimmer)  # (the wrapped form: opt.step() runs the prox)
    for epoch in range(epochs):
        for x, y in loader(epoch):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            ctrl.after_step(model, opt)
            if frozen_at is None and slimmer.frozen is not None:
                frozen_at = prune_with_report(model, example, check=False).report
    ctrl.on_train_end(model)
    slimmer.finalize()
    res = prune_with_report(model, example)
    assert frozen_at is not None and frozen_at["macs_after"] <= 0.55 * frozen_at["macs_before"]
    assert res.report["macs_after"] == frozen_at["macs_after"]  # the pattern held through recovery


def test_an_own_loop_that_overshoots_its_budget_is_warned_once(caplog) -> None:
    """A review's DeepLabV3 own loop, 6 steps for a MAC target of 0.5, ended at 0.276 of the MACs and
    nothing said so (edgeslim slim and UltralyticsSlimming warned): the controller now logs the
    warning itself at the end of training; ``warn=False`` (slim's pipeline, which reports it) does not."""
    for warn in (True, False):
        model, lr, epochs, loader, steps, example, optimizer = _setup()
        steps = 4  # far too short for the controller to steer
        slimmer = ProximalSlimming(model, lam=0.0, beta=100, zero_invariant=True, total_steps=steps,
                                   example_input=example)  # fmt: skip
        settings = BudgetSettings(metric="macs", target="0.5")
        kw = {} if warn else {"warn": False}  # (the default warns)
        ctrl = build_controller(model, slimmer, settings, example, steps, round_to=16, **kw)
        ctrl.on_train_start(model, optimizer)
        _budget_steps(model, loader, optimizer, slimmer, ctrl, steps)
        caplog.clear()
        with caplog.at_level("WARNING"):
            ctrl.on_train_end(model)
        assert ctrl.R / ctrl.resource.dense < 0.4
        lines = [r.getMessage() for r in caplog.records if "budget overshot" in r.getMessage()]
        assert len(lines) == (1 if warn else 0), caplog.text
        assert all("--" not in line and "taper_end" in line for line in lines)


def test_a_rebuilt_controller_replaces_the_first_at_the_freeze() -> None:
    """A notebook cell run again builds a second controller on the same slimmer: both projected at the
    freeze, the stale one too. And a warm-up without total_steps leaves the warm-up off the clock."""
    model, example = _net(), torch.zeros(1, 1, 8, 8)
    slimmer = ProximalSlimming(model, lam=0.0, total_steps=40, warmup_steps=4, recovery_steps=20,
                               example_input=example)  # fmt: skip
    first = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, 40)
    second = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, 40)
    assert slimmer.before_freeze == [second.finish] and first.total_steps == second.total_steps == 16
    net = _net()
    warm_only = ProximalSlimming(net, lam=0.0, warmup_steps=5, example_input=example)
    ctrl = build_controller(net, warm_only, BudgetSettings(metric="macs", target="0.5"), example, 30)
    assert ctrl.total_steps == 25


def _budget_steps(model: nn.Module, loader: Any, optimizer: Any, slimmer: Any, ctrl: Any, steps: int) -> None:
    """``steps`` steps of an own loop on the digits: SGD, then the prox, then the budget controller."""
    batches = iter(loader(0))
    for _ in range(steps):
        x, y = next(batches)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        slimmer.step(optimizer)
        ctrl.after_step(model, optimizer)


def _budget_run(pretrained: dict, load_after: bool, steps: int = 12) -> tuple[torch.Tensor, float]:
    """A budgeted own loop on the digits whose weights are loaded before, or after, the slimmer and
    the controller were built: (the BN scales at the end, the controller's s_unit)."""
    model, lr, _, loader, _, example, _ = _setup()
    if not load_after:
        model.load_state_dict(pretrained)
    slimmer = ProximalSlimming(model, lam=0.0, beta=100, zero_invariant=True, total_steps=steps,
                               example_input=example)  # fmt: skip
    ctrl = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, steps)
    if load_after:
        model.load_state_dict(pretrained)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    ctrl.on_train_start(model, optimizer)
    _budget_steps(model, loader, optimizer, slimmer, ctrl, steps)
    ctrl.on_train_end(model)
    slimmer.finalize()
    return torch.cat(
        [m.weight.detach().reshape(-1) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    ), ctrl.s_unit


def test_weights_loaded_after_build_controller_give_the_same_run() -> None:
    """Review of the own loop: the slimmer re-reads xi from the scales at the first backward, but the budget
    controller took its unit shrink s_unit (and its first lambda) from the xi the slimmer had when it was built:
    weights loaded after build_controller gave s_unit 0.277 against 0.069 and another run (under DDP with
    per-rank seeds, ranks drifted apart). The controller now reads the scales the slimmer will start from."""
    pretrained = _net().state_dict()
    gen = torch.Generator().manual_seed(5)
    for k, v in pretrained.items():
        if k.endswith("1.weight") and v.dim() == 1:  # the BN scales: other values than the init's
            v.copy_(torch.rand(v.shape, generator=gen) + 0.5)
    first, s_first = _budget_run(pretrained, load_after=False)
    after, s_after = _budget_run(pretrained, load_after=True)
    assert s_after == s_first
    assert torch.equal(after, first) and int((first == 0).sum()) > 0


DDP_WORKER = textwrap.dedent(
    """
    import socket, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
    from torch import nn

    def work(rank, port, out):
        import os
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=2)
        from edgeslim.data import load_dataset
        from edgeslim.sparsity import ProximalSlimming
        from edgeslim.sparsity.budget import BudgetSettings, build_controller
        cbr = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        torch.manual_seed(100 + rank)  # each rank its own init: DDP broadcasts rank 0's at the wrap
        model = nn.Sequential(cbr(1, 8), cbr(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        with torch.no_grad():
            for m in (model[0][1], model[1][1]):
                m.weight.uniform_(0.05, 0.6)
        ex, steps = torch.zeros(1, 1, 8, 8), 12
        slimmer = ProximalSlimming(model, lam=0.0, beta=100, example_input=ex, zero_invariant=True, total_steps=steps)
        ddp = nn.parallel.DistributedDataParallel(model)
        ctrl = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), ex, steps)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        ctrl.on_train_start(model, opt)
        x, y = next(iter(load_dataset("digits", subset=128, test_subset=16).loader("train", 32, shuffle=False)))
        for _ in range(steps):
            nn.functional.cross_entropy(ddp(x[rank::2]), y[rank::2]).backward()
            opt.step(); opt.zero_grad(); slimmer.step(opt); ctrl.after_step(model, opt)
        ctrl.on_train_end(model)
        slimmer.finalize()
        torch.save(torch.cat([m.weight.detach().reshape(-1) for m in model.modules()
                              if isinstance(m, nn.BatchNorm2d)]), f"{out}/rank{rank}.pt")
        dist.destroy_process_group()

    if __name__ == "__main__":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        mp.spawn(work, args=(port, sys.argv[1]), nprocs=2)
    """
)


@pytest.mark.slow
def test_ddp_ranks_with_their_own_init_and_a_budget_stay_identical(tmp_path) -> None:
    """Review of the own loop: a slimmer built on each rank's own init, the controller after the DDP wrap
    (which broadcasts rank 0's weights): each rank's controller read its own init's xi, so the ranks' scales
    drifted apart (max difference 0.11 after 30 steps). They now stay identical."""
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGESLIM_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    g0, g1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert int((g0 == 0).sum()) > 0 and torch.equal(g0, g1)
