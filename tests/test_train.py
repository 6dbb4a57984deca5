"""Trainer building blocks: schedule, config, method registry, subgradient slimming, threshold prune,
mask hook, evaluate, fit on real data (sklearn digits / Fashion-MNIST subsets)."""

from __future__ import annotations

import copy
import logging
import math
import sys

import pytest
import torch
from torch import nn

from edgeslim.data import load_dataset
from edgeslim.errors import EdgeslimError
from edgeslim.models import create_model
from edgeslim.sparsity.subgradient import MaskHook, SubgradientHook, bn_layers, threshold_prune
from edgeslim.train import methods
from edgeslim.train.config import TrainConfig
from edgeslim.train.evaluation import evaluate, predict
from edgeslim.train.hooks import HookList, TrainHook
from edgeslim.train.schedule import LRSchedule
from edgeslim.train.trainer import NonFiniteLossError, fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=512, test_subset=200)


def _opt(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_schedule_warmup_cosine_and_step():
    s = LRSchedule(_opt(), 0.1, 100, "cosine", warmup_steps=10)
    assert s.lr_at(0) == pytest.approx(0.01) and s.lr_at(9) == pytest.approx(0.1)
    assert s.lr_at(10) == pytest.approx(0.1)
    assert s.lr_at(55) == pytest.approx(0.05)
    assert s.lr_at(99) < 0.001
    st = LRSchedule(_opt(), 0.1, 100, "step", milestones=(0.5, 0.75), gamma=0.1)
    assert [st.lr_at(t) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    st.step_count = 60
    assert st.apply() == pytest.approx(0.01) and st.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    s2 = LRSchedule(_opt(), 0.1, 100)
    s2.load_state_dict(st.state_dict())
    assert s2.step_count == 60


def test_config_validation_and_roundtrip():
    c = TrainConfig(epochs=3, milestones=[0.3, 0.6], method="subgradient", method_args={"lam": 1e-4})
    assert TrainConfig.from_dict(c.to_dict()) == c
    for bad in ({"lr": 0}, {"schedule": "poly"}, {"milestones": (0.8, 0.2)}, {"batch_size": 0},
                {"momentum": 0.0, "nesterov": True}, {"label_smoothing": 1.0}):  # fmt: skip
        with pytest.raises(EdgeslimError):
            TrainConfig(**bad)
    with pytest.raises(EdgeslimError, match="unknown training config"):
        TrainConfig.from_dict({"epochs": 1, "bogus": 2})


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_a_train_configs_device_is_checked_as_a_requests(device: str) -> None:
    """Review of today's code (nc report, finding 4): requests checked their device, TrainConfig did not:
    TrainConfig(device="CPU"/"tpu"/" cpu") was accepted and training then failed with torch's raw
    RuntimeError in resolve_device. It is refused in one line naming device; "CPU" and " cpu" are cpu."""
    from edgeslim.train.distributed import resolve_device

    with pytest.raises(EdgeslimError, match=f"device '{device}' is not a device; use auto") as info:
        TrainConfig(device=device)
    assert info.value.params == ("device",)
    for given in ("CPU", " cpu"):
        assert resolve_device(TrainConfig(device=given).device) == torch.device("cpu")


def test_method_registry():
    model = create_model("vgg-small")
    assert {"baseline", "subgradient"} <= set(methods.list_methods())
    assert methods.create_method("baseline", model) is None
    assert isinstance(methods.create_method("subgradient", model, lam=1e-3), SubgradientHook)
    with pytest.raises(EdgeslimError, match="unknown training method 'nope'"):
        methods.create_method("nope", model)
    with pytest.raises(EdgeslimError, match="bad arguments"):
        methods.create_method("subgradient", model, lamda=1)


def test_method_modules_absent_vs_broken(tmp_path, monkeypatch):
    """A method module that does not exist is skipped; one whose own import fails is reported."""
    (tmp_path / "es_broken_methods.py").write_text("import es_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, "_loaded", False)
    monkeypatch.setattr(methods, "METHOD_MODULES", ("es_absent_methods_module",))
    assert "baseline" in methods.list_methods()
    monkeypatch.setattr(methods, "_loaded", False)
    monkeypatch.setattr(methods, "METHOD_MODULES", ("es_broken_methods",))
    with pytest.raises(ModuleNotFoundError, match="es_no_such_dependency_xyz"):
        methods.list_methods()
    sys.modules.pop("es_broken_methods", None)


def test_subgradient_adds_lambda_sign_gamma():
    torch.manual_seed(0)
    model = create_model("vgg-small", in_channels=1, input_size=(8, 8))
    with torch.no_grad():
        for _, bn in bn_layers(model):
            bn.weight.uniform_(-1, 1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    base = [bn.weight.grad.clone() for _, bn in bn_layers(model)]
    SubgradientHook(model, lam=0.01).after_backward(model, _opt())
    for (_, bn), g in zip(bn_layers(model), base):
        assert torch.equal(bn.weight.grad, g + 0.01 * torch.sign(bn.weight.detach()))


def test_subgradient_training_shrinks_gammas(digits):
    spec = digits.spec_for("vgg-small")
    means = {}
    for method, args in (("baseline", {}), ("subgradient", {"lam": 5e-3})):
        torch.manual_seed(0)
        model = create_model(spec)
        cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, method=method, method_args=args, device="cpu")
        res = fit(model, digits, cfg)
        means[method] = torch.cat([bn.weight.detach().abs() for _, bn in bn_layers(model)]).mean().item()
        if method == "subgradient":
            assert "gamma_mean" in res.history[-1]
    # 8 steps of lr 0.05 * lam 5e-3 move every gamma by up to 2e-3 towards zero
    assert means["subgradient"] < means["baseline"] - 5e-4


def test_threshold_prune_zeroes_smallest_fraction_never_a_whole_layer():
    torch.manual_seed(0)
    model = create_model("vgg-small")
    layers = bn_layers(model)
    with torch.no_grad():
        for i, (_, bn) in enumerate(layers):
            bn.weight.copy_(torch.rand(bn.num_features) * (-1) ** i)
            bn.bias.uniform_(0.1, 1.0)
        layers[0][1].weight.mul_(1e-3)  # the whole first layer is under the threshold
    allg = torch.cat([bn.weight.detach().abs() for _, bn in layers])
    ratio = 0.3
    res = threshold_prune(model, ratio)
    zero = torch.cat([(bn.weight == 0) & (bn.bias == 0) for _, bn in layers])
    assert res["total"] == allg.numel() == 448
    assert int(zero.sum()) == res["pruned"]
    first_kept = int(res["masks"][layers[0][0]].sum())
    assert first_kept == 1  # the layer kept its single largest channel
    # all but that one of the round(0.3 * 448) smallest channels went
    assert res["pruned"] == round(ratio * 448) - 1
    kept_min = allg[~zero].sort().values[1]  # [0] is layer 0's rescued channel
    assert allg[zero].max() <= kept_min
    assert layers[0][1].weight[res["masks"][layers[0][0]]].abs().item() == allg[:32].max().item()
    with pytest.raises(EdgeslimError, match="ratio must be in"):
        threshold_prune(model, 1.0)


def test_mask_hook_keeps_pruned_channels_zero_through_training(digits):
    torch.manual_seed(0)
    model = create_model(digits.spec_for("vgg-small"))
    res = threshold_prune(model, 0.5)
    hook = MaskHook(model)
    assert all(torch.equal(hook.masks[k], res["masks"][k]) for k in res["masks"])
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4, device="cpu")
    fit(model, digits, cfg, hooks=[hook])
    for name, bn in bn_layers(model):
        gone = ~res["masks"][name]
        assert torch.all(bn.weight[gone] == 0) and torch.all(bn.bias[gone] == 0)
        assert torch.all(bn.weight[~gone] != 0)
    state = HookList([hook]).state_dict()
    fresh = MaskHook(model, masks={k: torch.ones_like(v) for k, v in res["masks"].items()})
    HookList([fresh]).load_state_dict(state)
    assert all(torch.equal(fresh.masks[k], res["masks"][k]) for k in res["masks"])


def test_evaluate_matches_predict_and_training_learns(digits):
    torch.manual_seed(0)
    model = create_model(digits.spec_for("vgg-small"))
    res = fit(model, digits, TrainConfig(epochs=2, batch_size=32, lr=0.05, device="cpu"))
    ev = evaluate(model, digits, "test", batch_size=64)
    pred, label = predict(model, digits, "test", batch_size=50)
    assert ev["n"] == len(label) == 200
    assert ev["accuracy"] == pytest.approx((pred == label).float().mean().item())
    assert ev["accuracy"] == pytest.approx(res.test_accuracy)
    assert ev["accuracy"] > 0.5  # chance is 0.1
    assert math.isfinite(ev["loss"]) and len(res.history) == 2


def test_channels_last_leaves_a_layer_scale_in_the_strides_of_its_gradient() -> None:
    """A review of the day's new code (finding 5): to_channels_last's 1x1-kernel rule restrided every 4-D
    tensor ending in (1, 1), a layer-scale (1, C, 1, 1) parameter too, whose gradient comes in canonical
    strides: DDP warned "Grad strides do not match bucket view strides" again. The rule is for conv and
    transposed-conv kernels only: every 4-D parameter's gradient has its parameter's strides."""
    from edgeslim.train.trainer import to_channels_last

    class LayerScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.point = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
            self.up = nn.ConvTranspose2d(8, 8, 1)
            self.gamma = nn.Parameter(torch.ones(1, 8, 1, 1))
            self.fc = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((self.up(self.point(self.conv(x))) * self.gamma).mean((2, 3)))

    torch.manual_seed(0)
    model, x = LayerScale(), torch.randn(4, 3, 8, 8)
    assert to_channels_last(model, x[:1])
    model(x.contiguous(memory_format=torch.channels_last)).sum().backward()
    strides = {n: (p.stride(), p.grad.stride()) for n, p in model.named_parameters() if p.dim() == 4}
    assert all(param == grad for param, grad in strides.values()), strides


def test_training_runs_channels_last_by_default(digits, caplog):
    """A trial timed edgeslim's epochs 1.2-1.45x slower than a plain loop: its crop handed the model
    channels-first batches. Conv weights and batches are channels_last by default (CPU too), the
    option turns it off, and a model with a 5-D weight (Conv3d, which Module.to(memory_format=)
    refuses) trains with its 4-D weights converted."""
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    model = create_model(digits.spec_for("vgg-small"))
    # (a 1-channel batch is channels_last and channels-first at once: the first conv decides nothing)
    second = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1]
    second.register_forward_hook(lambda _m, _args, out: seen.append(out) if torch.is_grad_enabled() else None)
    fit(model, digits, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu"))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
    assert convs and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs
    )
    # a training step's activations are channels_last (the checks before training run without grad)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    model = create_model(digits.spec_for("vgg-small"))
    fit(model, digits, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu", channels_last=False))
    assert all(
        m.weight.is_contiguous() for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
    )

    class With3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.mix = nn.Conv3d(1, 1, 1)
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.mix(self.bn(self.conv(x)).unsqueeze(1)).squeeze(1)
            return self.fc(y.mean((2, 3)))

    m3 = With3d()
    fit(m3, digits, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu"))
    assert m3.mix.weight.dim() == 5 and m3.mix.weight.is_contiguous()

    class LeNetView(nn.Module):  # the classic x.view(n, -1) of a conv output: channels_last refuses it
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
            self.bn, self.fc = nn.BatchNorm2d(6), nn.Linear(6 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.conv(self.stem(x))))
            if self.training:  # (the review: a view in train mode only passed an eval-mode probe)
                return self.fc(y.view(y.size(0), -1))
            return self.fc(y.reshape(y.size(0), -1))

    lenet = LeNetView()
    with caplog.at_level(logging.WARNING, logger="edgeslim.train.trainer"):
        res = fit(lenet, digits, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu"))
    assert math.isfinite(res.history[-1]["train_loss"]) and lenet.conv.weight.is_contiguous()
    assert (
        "LeNetView trains channels-first: its forward fails on channels_last tensors (view size is not"
        in caplog.text
    )


class _Poison(TrainHook):
    """Puts a NaN into the first conv at the first step of epoch 2, after noting model.pt's bytes."""

    name = "poison"

    def __init__(self, ckpt, steps_per_epoch):
        self.ckpt, self.spe, self.steps, self.saved = ckpt, steps_per_epoch, 0, None

    def after_step(self, model, optimizer):
        self.steps += 1
        if self.steps == self.spe + 1:
            self.saved = self.ckpt.read_bytes()
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    spec = digits.spec_for("vgg-small")
    model = create_model(spec)
    poison = _Poison(tmp_path / "model.pt", steps_per_epoch=512 // 64)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, device="cpu")
    with pytest.raises(NonFiniteLossError) as ei:
        fit(model, digits, cfg, tmp_path, spec=spec, hooks=[poison])
    msg = str(ei.value)
    assert "\n" not in msg and "epoch 2" in msg and "last good checkpoint" in msg
    assert poison.saved is not None and (tmp_path / "model.pt").read_bytes() == poison.saved
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_a_run_stopped_in_its_first_epoch_writes_no_log(digits, tmp_path):
    """An interrupt probe: a run stopped (or diverged) in its first epoch left an empty log.jsonl,
    which refused the rerun ("log.jsonl already exists") while nothing could be resumed."""
    spec = digits.spec_for("vgg-small")
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        fit(create_model(spec), digits, cfg, tmp_path, spec=spec, hooks=[_Crash(at_step=2)])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class _Crash(TrainHook):
    """Raises at the first step of the fine-tune stage's 2nd epoch (a crash after a checkpoint)."""

    name = "crash"

    def __init__(self, at_step):
        self.at, self.steps = at_step, 0

    def after_step(self, model, optimizer):
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt


def test_three_stage_resume_inside_finetune_is_exact(digits, tmp_path, monkeypatch):
    from edgeslim.checkpoint import build_from_checkpoint, load_checkpoint_dict
    from edgeslim.train import pipeline

    spec = digits.spec_for("vgg-small")
    cfg = TrainConfig(
        epochs=1, batch_size=64, lr=0.05, method="subgradient", method_args={"lam": 1e-3}, device="cpu"
    )
    kw = dict(prune_ratio=0.4, finetune_epochs=2)

    def run(out, crash=None):
        torch.manual_seed(0)
        model = create_model(spec)
        if crash is not None:  # inject the crashing hook into the fine-tune stage only
            real_fit = pipeline.fit

            def fit_with_crash(*a, hooks=(), **k):
                extra = [crash] if a[2].stage == "finetune" else []
                return real_fit(*a, hooks=[*hooks, *extra], **k)

            monkeypatch.setattr(pipeline, "fit", fit_with_crash)
        try:
            return pipeline.run_training(model, spec, digits, cfg, out, **kw)
        finally:
            monkeypatch.undo()

    full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash=_Crash(at_step=512 // 64 + 1))
    ckpt = load_checkpoint_dict(tmp_path / "cut" / "model.pt")
    assert (ckpt["train_state"]["stage"], ckpt["train_state"]["epoch"]) == ("finetune", 1)
    model = build_from_checkpoint(ckpt)
    resumed = pipeline.run_training(model, spec, digits, cfg, tmp_path / "cut", resume=ckpt["train_state"])
    a = load_checkpoint_dict(tmp_path / "full" / "model.pt")["state_dict"]
    b = load_checkpoint_dict(tmp_path / "cut" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in (
        "accuracy_before_prune",
        "accuracy_after_prune",
        "accuracy_after_finetune",
        "bn_channels_zero",
    ):
        assert resumed[key] == full[key]
    assert full["stages"]["pruned"]["pruned_channels"] == round(0.4 * 448)


def test_sharded_evaluation_counts_every_image_once() -> None:
    """Per-rank shards of the test split add up to the split exactly (no padded duplicates)."""
    b = load_dataset("digits", test_subset=301)  # odd size: equal shards would need padding
    model = create_model(b.spec_for("vgg-small"))
    whole = evaluate(model, b, "test")
    parts = [evaluate(model, b, "test", rank=r, world_size=2) for r in range(2)]
    assert sum(p["n"] for p in parts) == whole["n"] == len(b.test_y)
    correct = sum(p["accuracy"] * p["n"] for p in parts)
    assert correct == pytest.approx(whole["accuracy"] * whole["n"])


def test_the_package_names_are_the_functions_after_their_modules_are_imported() -> None:
    """docs/training.md's ``from edgeslim.train import evaluate`` gave the submodule
    ``edgeslim.train.evaluate`` once it had been imported (the function and its module shared a name;
    from the second docs audit): every public name is what ``_EXPORTS`` says, a class or function."""
    import importlib

    import edgeslim.train as train

    for name, module in train._EXPORTS.items():
        importlib.import_module(module)
        assert getattr(train, name) is getattr(importlib.import_module(module), name), name
        assert callable(getattr(train, name)) and not isinstance(getattr(train, name), type(train)), name


def _timm_resnet18_spread() -> tuple[nn.Module, torch.Tensor]:
    """A timm ResNet-18 whose BN scales spread as in a trained one (uniform in [0.05, 1.5]), and an input."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.05, 1.5)
    return model, torch.randn(1, 3, 64, 64)


def test_threshold_prune_by_coupled_group_zeroes_only_what_surgery_removes():
    """A Torch-Pruning user's trial: ranked channel by channel, a 40% prune of a timm ResNet-18 left 682
    zeros that share their channel with a nonzero one (surgery keeps them; the model is only damaged)
    and 58% of the MACs. Ranked by coupled group every zero is removed, exactly."""
    from edgeslim.surgery import prune_with_report

    model, x = _timm_resnet18_spread()
    alone, grouped = copy.deepcopy(model), copy.deepcopy(model)
    threshold_prune(alone, 0.4)
    res = threshold_prune(grouped, 0.4, example_input=x)
    assert 1920 <= res["pruned"] <= 1930 and res["total"] == 4800  # (whole group channels: a few more)
    a, g = prune_with_report(alone, x).report, prune_with_report(grouped, x).report
    assert a["zero_kept"]["coupled_with_nonzero"] > 600 and g["zero_kept"]["coupled_with_nonzero"] == 0
    assert g["macs_after"] / g["macs_before"] < 0.4 < a["macs_after"] / a["macs_before"]
    assert g["max_abs_diff"] < 1e-5
    assert all(kept >= 1 for kept, _ in res["per_layer"].values())


def test_threshold_prune_keeps_the_channel_multiple_surgery_keeps():
    """`prune --ratio` zeroed counts off the default multiple of 16: surgery then kept zeroed channels to
    align (dead weight) and removed less than the ratio said. With round_to every group keeps a multiple
    and surgery at that multiple removes every zero."""
    from edgeslim.surgery import prune_with_report

    model, x = _timm_resnet18_spread()
    plain, aligned = copy.deepcopy(model), copy.deepcopy(model)
    threshold_prune(plain, 0.4, example_input=x)
    res = threshold_prune(aligned, 0.4, example_input=x, round_to=16)
    assert all(kept % 16 == 0 or kept == n for kept, n in res["per_layer"].values())
    assert 0.35 < res["pruned"] / res["removable"] < 0.45
    p, a = prune_with_report(plain, x, round_to=16).report, prune_with_report(aligned, x, round_to=16).report
    assert p["kept_by_rounding"] > 0 and a["kept_by_rounding"] == 0
    zero = sum(int((m.weight == 0).sum()) for m in aligned.modules() if isinstance(m, nn.BatchNorm2d))
    assert zero == res["pruned"] and a["exact"] and a["max_abs_diff"] < 1e-5
    with pytest.raises(EdgeslimError, match="example_input"):
        threshold_prune(copy.deepcopy(model), 0.4, round_to=16)


def test_threshold_prune_rounds_to_what_surgery_keeps_barred_channels_and_whole_groups_included():
    """A review: the rounding counted only a group's removable channels (surgery rounds the whole group,
    channels behind a barrier included: 12 zeros kept for alignment) and never kept a whole group whose
    size is no multiple (a group of 40 asked to lose 1 lost 8)."""
    from edgeslim.surgery import prune_with_report

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn_a = nn.Conv2d(3, 40, 3), nn.BatchNorm2d(40)
            self.b, self.bn_b = nn.Conv2d(40, 40, 3), nn.BatchNorm2d(40)
            self.head = nn.Linear(40, 2)

        def forward(self, x):
            y = torch.relu(self.bn_a(self.a(x)))
            z = torch.relu(self.bn_b(self.b(y)))
            return self.head(z.mean((2, 3))), y[:, :4]  # 4 channels of bn_a are returned: kept

    torch.manual_seed(0)
    x = torch.randn(1, 3, 12, 12)
    for ratio in (0.5, 0.02):
        net = Net().eval()
        with torch.no_grad():
            for bn in (net.bn_a, net.bn_b):
                bn.weight.uniform_(0.05, 1.5)
        res = threshold_prune(net, ratio, example_input=x, round_to=16)
        rep = prune_with_report(net, x, round_to=16).report
        assert rep["kept_by_rounding"] == 0, (ratio, res["per_layer"])
        kept = {n: k for n, (k, _) in res["per_layer"].items()}
        assert all(k in (16, 32, 40) for k in kept.values()), kept  # (bn_a: 4 barred + 12 or 28 removable)
        if ratio == 0.02:  # one channel asked of 76 removable: no group gives 8 for it
            assert res["pruned"] == 0


def test_a_ratio_on_equal_scales_says_its_choice_is_arbitrary(caplog) -> None:
    """A YOLO user's trial: --ratio on a model whose BN scales are all 1 (built, not trained) cut two
    layers to 16 channels and left the head whole, ranked by nothing but the layers' order."""
    from edgeslim.sparsity.subgradient import threshold_prune

    model = create_model("vgg-small")
    with caplog.at_level("WARNING"):
        threshold_prune(model, 0.3)
    assert "every BN scale is 0.5 (an untrained model?)" in caplog.text  # (vgg-small starts at 0.5)


def test_a_train_run_records_its_data_folder_absolute(tmp_path, monkeypatch, fmnist_dir: str) -> None:
    """API review, finding 7: TrainRequest(data_dir="fm") recorded "fm" as typed (slim records it
    absolute), so resuming from another working directory, TrainRequest(out_dir="../projA/run",
    resume=True), was refused with "data_dir fm does not exist; check it", a field the caller never gave.
    The run records the folder absolute, and the resume finds it."""
    from edgeslim.checkpoint import load_checkpoint_dict
    from edgeslim.pipelines.train import TrainRequest, run

    (tmp_path / "projA").mkdir(), (tmp_path / "projB").mkdir()
    (tmp_path / "projA" / "fm").symlink_to(fmnist_dir)
    monkeypatch.chdir(tmp_path / "projA")
    run(TrainRequest(out_dir="run", arch="vgg-small", data_name="fashion-mnist", data_dir="fm", subset=64,
                     test_subset=32, epochs=1, threads=1))  # fmt: skip
    recorded = load_checkpoint_dict("run/model.pt")["meta"]["data_args"]["data_dir"]
    assert recorded == str(tmp_path / "projA" / "fm")
    monkeypatch.chdir(tmp_path / "projB")
    (
        tmp_path / "projA" / "run" / "report.json"
    ).unlink()  # (one stopped before its report: a finished run is refused)
    assert run(TrainRequest(out_dir="../projA/run", resume=True)).report["test_accuracy"] is not None
