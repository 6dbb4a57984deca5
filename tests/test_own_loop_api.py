"""edgeslim as a library in a user's own PyTorch loop, used the ways users do: a compiled or
DataParallel model saved, an optimizer state loaded into a slim model, training on after surgery, a
recipe applied to a model it was not made for. Each works, or ends in one line naming the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeslim.checkpoint import load_model, make_checkpoint, save_checkpoint, save_model
from edgeslim.errors import EdgeslimError
from edgeslim.models import ModelSpec, create_model

SPEC = ModelSpec("tv:resnet18", 10, 3, (32, 32))


VGG_SPEC = ModelSpec("vgg-small", 10, 1, (28, 28))


def _half_zeroed_vgg() -> nn.Module:
    """vgg-small in eval mode with the first half of every BN's scales zero (surgery removes them)."""
    torch.manual_seed(0)
    model = create_model(VGG_SPEC).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[: m.num_features // 2] = 0
    return model


@pytest.mark.parametrize("wrapper", ["compile", "dataparallel", "both"])
def test_a_wrapped_model_saves_the_weights_its_architecture_loads(wrapper, tmp_path) -> None:
    """save_model of a torch.compile'd model wrote `_orig_mod.conv1.weight`..., which load_model then
    refused as "written by another model or version"; the module inside the wrapper is saved now."""
    torch.manual_seed(0)
    model = create_model(SPEC)
    wrapped = {
        "compile": lambda m: torch.compile(m),
        "dataparallel": nn.DataParallel,
        "both": lambda m: nn.DataParallel(torch.compile(m)),
    }[wrapper](model)
    loaded = load_model(save_model(tmp_path / "m.pt", wrapped, SPEC)).model
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in loaded.state_dict().items())


@pytest.mark.parametrize("wrapper", ["dataparallel", "compile+dataparallel"])
def test_a_wrapped_model_pruned_then_saved_loads(wrapper, tmp_path) -> None:
    """prune_with_report(DataParallel(m)) names the layers 'module.features.0'; save_model stored them so
    beside the unwrapped weights, and load_model refused the file ('recipe names layer
    'module.features.0', which the model does not have'). The recipe is saved unwrapped too."""
    from edgeslim.surgery import prune_with_report

    spec, model = VGG_SPEC, _half_zeroed_vgg()
    wrapped = nn.DataParallel(model)
    x = torch.randn(2, 1, 28, 28)
    res = prune_with_report(torch.compile(wrapped) if "compile" in wrapper else wrapped, x[:1])
    assert next(iter(res.recipe["layers"])).startswith("module.")  # (as the wrapper names them)
    loaded = load_model(save_model(tmp_path / "slim.pt", res.model, spec, recipe=res.recipe)).model.eval()
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in res.model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), res.model.eval()(x))


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_a_file_saved_with_wrapper_prefixes_loads_without_them(prefix, tmp_path) -> None:
    """An older save_model of a wrapped model wrote 'module.conv1.weight'...; load_model refused it ("save
    the model again ... or remove the prefix"), though the user of an old file may no longer have the
    model. The prefix is stripped where the names are then exactly the architecture's, as other loaders do."""
    torch.manual_seed(0)
    model = create_model(SPEC).eval()
    ckpt = make_checkpoint(model, SPEC)
    ckpt["state_dict"] = {f"{prefix}{k}": t for k, t in ckpt["state_dict"].items()}
    loaded = load_model(save_checkpoint(tmp_path / "m.pt", ckpt)).model
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in loaded.state_dict().items())
    ckpt["state_dict"] = {
        f"{prefix}{k}": t for k, t in list(model.state_dict().items())[1:]
    }  # (one left out)
    with pytest.raises(EdgeslimError, match=r"missing 1, .*'conv1\.weight'") as e:
        load_model(save_checkpoint(tmp_path / "part.pt", ckpt))
    assert "\n" not in str(e.value)


def test_an_old_file_of_a_pruned_dataparallel_model_loads(tmp_path) -> None:
    """What save_model wrote from a pruned DataParallel model before it unwrapped anything: 'module.'
    before every weight and recipe layer; it loads as the slim model it was."""
    from edgeslim.surgery import prune_with_report

    spec, model = VGG_SPEC, _half_zeroed_vgg()
    res = prune_with_report(nn.DataParallel(model), torch.zeros(1, 1, 28, 28))
    slim = res.model.eval()
    ckpt = make_checkpoint(slim, spec, recipe=res.recipe)
    ckpt["state_dict"] = {k: t.detach() for k, t in slim.state_dict().items()}  # (as it was written)
    ckpt["recipe"] = res.recipe
    assert all(k.startswith("module.") for k in [*ckpt["state_dict"], *ckpt["recipe"]["layers"]])
    loaded = load_model(save_checkpoint(tmp_path / "old.pt", ckpt)).model.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), slim(x))


def _net() -> nn.Module:
    def cbr(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(cbr(1, 16), cbr(16, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _trained_then_pruned(steps: int = 3, inplace: bool = False) -> tuple:
    """A small net trained a few steps on the digits through ``wrap`` (SGD with momentum), half of its
    first BN's channels zeroed, then pruned: (dense model, slimmer, wrapped optimizer, its saved state,
    surgery result, a batch); ``inplace``: surgery resizes the dense model itself."""
    from edgeslim.data import load_dataset
    from edgeslim.sparsity import ProximalSlimming, wrap
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    x, y = next(iter(load_dataset("digits", subset=64, test_subset=16).loader("train", 32, shuffle=False)))
    model = _net()
    slimmer = ProximalSlimming(model, lam=0.1, beta=100, total_steps=steps, example_input=x[:1])
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), slimmer)
    for _ in range(steps):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    state = opt.state_dict()
    with torch.no_grad():
        model[0][1].weight[:8] = 0
        model[0][1].bias[:8] = 0
    return (
        model,
        slimmer,
        opt,
        state,
        prune_with_report(model.eval(), x[:1], round_to=1, inplace=inplace),
        (x, y),
    )


def test_a_refused_optimizer_state_leaves_the_optimizer_as_it_was() -> None:
    """A dense model's wrapped-optimizer state loaded into the slim model's optimizer: the slimmer's
    refusal came after the optimizer had taken the old state (lr 0.05 for 0.01, dense momentum
    buffers), so the next step failed in torch. A plain optimizer state was taken with no check."""
    from edgeslim.sparsity import ProximalSlimming, wrap

    _, _, _, state, res, (x, y) = _trained_then_pruned()
    slim = res.model.train()
    opt = wrap(torch.optim.SGD(slim.parameters(), lr=0.01, momentum=0.9), ProximalSlimming(slim, lam=0.1))
    for saved, match in ((state, "proximal-slimming state belongs to another model"),
                         (state["optimizer"], r"optimizer state belongs to another model .*momentum_buffer")):  # fmt: skip
        with pytest.raises(EdgeslimError, match=match):
            opt.load_state_dict(saved)
        assert len(opt.optimizer.state) == 0 and opt.param_groups[0]["lr"] == 0.01
    nn.functional.cross_entropy(slim(x), y).backward()
    opt.step()  # (trains: the refused states left nothing behind)


def test_the_slimmer_of_a_model_resized_in_place_says_to_build_a_new_one() -> None:
    """slimmer.step() after prune_with_report(..., inplace=True) stopped in torch ('The size of tensor a
    (5786) must match the size of tensor b (9600)'); one line now, naming the layer and the fix."""
    model, slimmer, opt, _, _, (x, y) = _trained_then_pruned(inplace=True)
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    for call in (opt.step, slimmer.finalize):
        with pytest.raises(
            EdgeslimError, match=r"BN layers changed size .*0\.1: 8 channels, 16 then.*new slimmer"
        ) as e:
            call()
        assert "\n" not in str(e.value)


def test_fine_tuning_the_slim_copy_with_the_old_optimizer_is_warned(caplog) -> None:
    """After surgery (a copy) the old optimizer holds none of the slim model's parameters, so a
    'fine-tune' through it trained nothing, silently; the wrapped optimizer says so once."""
    _, _, opt, _, res, (x, y) = _trained_then_pruned()
    slim = res.model.train()
    before = [p.detach().clone() for p in slim.parameters()]
    with caplog.at_level("WARNING", logger="edgeslim"):
        for _ in range(2):
            nn.functional.cross_entropy(slim(x), y).backward()
            opt.step()
            opt.zero_grad()
    said = [
        r.getMessage() for r in caplog.records if "no gradient on any of its parameters" in r.getMessage()
    ]
    assert len(said) == 1 and "build a new optimizer" in said[0]
    assert all(
        torch.equal(a, b) for a, b in zip(before, slim.parameters(), strict=True)
    )  # (what it warns of)


@pytest.mark.parametrize("case", ["no backward", "all frozen"])
def test_a_step_with_no_gradient_names_every_cause(case, caplog) -> None:
    """The no-gradient warning said 'the loss came from another model's' also when no backward ran or
    every parameter was frozen; it names those causes too."""
    from edgeslim.sparsity import ProximalSlimming, wrap

    model = _net()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    if case == "all frozen":
        model.requires_grad_(False)
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.1), ProximalSlimming(model, lam=1e-4))
    with caplog.at_level("WARNING", logger="edgeslim"):
        if case == "all frozen":
            loss = nn.functional.cross_entropy(model(x), y)
            assert not loss.requires_grad  # (nothing to backward through)
        opt.step()
    said = [r.getMessage() for r in caplog.records if "no gradient on any" in r.getMessage()]
    assert len(said) == 1
    assert "no backward reached them" in said[0] and "every parameter is frozen" in said[0]


def test_a_recipe_refuses_a_model_it_was_not_made_for_unchanged() -> None:
    """apply_recipe checked only the layer types: the recipe given to the model load_model returns
    (already pruned) stopped in an IndexError, and one given a model of other widths resized it silently
    until its forward failed. The recipe holds the dense widths now; a model of others is refused, unchanged."""
    from edgeslim.surgery import apply_recipe

    _, _, _, _, res, (x, _) = _trained_then_pruned()
    assert res.recipe["layers"]["0.1"]["widths"] == {"keep": 16}
    with pytest.raises(
        EdgeslimError,
        match=r"layer '0\.0' has widths \{'in': 1, 'out': 8\}, where .* \{'in': 1, 'out': 16\}; .*already pruned",
    ) as e:
        apply_recipe(res.model, res.recipe)
    assert "\n" not in str(e.value)
    wide = _net()
    wide[0][0], wide[0][1], wide[1][0] = (
        nn.Conv2d(1, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.Conv2d(24, 16, 3),
    )
    shapes = {k: t.shape for k, t in wide.state_dict().items()}
    with pytest.raises(EdgeslimError, match="another architecture"):
        apply_recipe(wide, res.recipe)
    assert shapes == {k: t.shape for k, t in wide.state_dict().items()}  # (refused before any layer changed)
    # a recipe written before the widths were (an older file): an index the layer lacks is refused
    old = {**res.recipe, "layers": {k: {f: v for f, v in e.items() if f != "widths"} for k, e in res.recipe["layers"].items()}}  # fmt: skip
    with pytest.raises(EdgeslimError, match=r"'out' index 15; the model is already pruned"):
        apply_recipe(res.model, old)
    assert apply_recipe(_net(), old)(x).shape == (len(x), 10)  # (and still applies to a dense model)


def test_a_checkpoint_recipe_round_trips_and_refuses_the_loaded_model(tmp_path) -> None:
    from edgeslim.surgery import apply_recipe, prune_with_report

    torch.manual_seed(0)
    dense = create_model(SPEC).eval()
    with torch.no_grad():
        dense.layer1[0].bn1.weight[:40] = 0
    x = torch.randn(2, 3, 32, 32)
    res = prune_with_report(dense, x, round_to=1)
    lm = load_model(save_model(tmp_path / "s.pt", res.model, SPEC, recipe=res.recipe))
    assert lm.recipe["layers"]["layer1.0.bn1"]["widths"] == {"keep": 64}
    fresh = apply_recipe(create_model(SPEC), lm.recipe)
    fresh.load_state_dict(res.model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), lm.model.eval()(x)) and lm.model.layer1[0].bn1.num_features == 24
    with pytest.raises(
        EdgeslimError, match=r"layer 'layer1\.0\.conv1' has widths \{'in': 64, 'out': 24\}.*already pruned"
    ):
        apply_recipe(lm.model, lm.recipe)


class _Residual(nn.Module):
    """A stem and one residual block: the stem's BN and the block's second BN share their channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.b(self.a(x))).mean((2, 3)))


@pytest.mark.parametrize(("frozen", "said"), [(("stem", "b"), None), (("stem",), 8)])
def test_the_pinned_channel_warning_counts_trainable_scales_and_says_nothing_of_none(
    frozen, said, caplog
) -> None:
    """A frozen stem and block (requires_grad=False) under the group penalty: the warning said '0 BN
    scales share their coupled channel with a held nonzero scale'. It says nothing when every scale of
    such a group is held, and counts the trainable ones (the block's BN scales) when not."""
    from edgeslim.data import load_dataset
    from edgeslim.sparsity import ProximalSlimming

    torch.manual_seed(0)
    x, y = next(iter(load_dataset("digits", subset=64, test_subset=16).loader("train", 32, shuffle=False)))
    model = _Residual()
    for name in frozen:
        getattr(model, name).requires_grad_(False)
    slimmer = ProximalSlimming(model, lam=0.5, zero_invariant=True, example_input=x[:1])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    with caplog.at_level("WARNING", logger="edgeslim"):
        for _ in range(2):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            slimmer.step(opt)
    lines = [r.getMessage() for r in caplog.records if "share their coupled channel" in r.getMessage()]
    assert [line.split(" BN scales share")[0] for line in lines] == ([] if said is None else [str(said)])


def test_count_model_given_an_example_tensor_says_to_give_its_shape() -> None:
    """count_model(model, torch.zeros(1, 3, 32, 32)) stopped in torch's 'only one element tensors can be
    converted to Python scalars'; one line now, naming input_shape and x.shape[1:]."""
    from edgeslim.counting import count_model

    model = create_model(SPEC).eval()
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(
        EdgeslimError, match=r"input_shape is \(C, H, W\).*\(1, 3, 32, 32\).*x\.shape\[1:\]"
    ) as e:
        count_model(model, x)
    assert e.value.params == ("input_shape",) and "\n" not in str(e.value)
    with pytest.raises(EdgeslimError, match="a tuple of ints"):
        count_model(model, "3x32x32")
    assert count_model(model, x.shape[1:]).macs == count_model(model, (3, 32, 32)).macs > 0


def test_a_budget_counted_in_micro_batches_names_the_short_clock(caplog) -> None:
    """With gradient accumulation of 2 a user gave build_controller the micro-batches as total_steps:
    the controller ran half its clock and the warning said only 'ended at 61.6% of dense (target 50.0%)'.
    It names the cause now: after_step ran N times for total_steps M, count optimizer steps."""
    from edgeslim.data import load_dataset
    from edgeslim.sparsity import ProximalSlimming
    from edgeslim.sparsity.budget import BudgetSettings, build_controller

    torch.manual_seed(0)
    data = load_dataset("digits", subset=256, test_subset=16)
    model, accum, example = _net(), 2, torch.zeros(1, 1, 8, 8)
    micro = [
        batch for e in range(3) for batch in data.loader("train", 16, shuffle=True, augment=False, epoch=e)
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    slimmer = ProximalSlimming(model, lam=0.0, beta=100, zero_invariant=True, total_steps=len(micro), example_input=example)  # fmt: skip
    ctrl = build_controller(model, slimmer, BudgetSettings(metric="macs", target="0.5"), example, len(micro))
    ctrl.on_train_start(model, optimizer)
    with caplog.at_level("WARNING", logger="edgeslim"):
        for k, (x, y) in enumerate(micro, 1):
            (nn.functional.cross_entropy(model(x), y) / accum).backward()
            if k % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
                slimmer.step(optimizer)
                ctrl.after_step(model, optimizer)
        ctrl.on_train_end(model)
    said = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    short = f"after_step ran {len(micro) // 2} times for total_steps {len(micro)}"
    assert said and all(short in line and "optimizer steps" in line for line in said), said


def test_count_model_refuses_a_size_that_is_no_whole_number() -> None:
    """count_model(model, (3, 32.5, 32)) counted a 3x32x32 input without a word (int() cut the
    fraction); a size that is no whole number is refused in one line, naming input_shape."""
    from edgeslim.counting import count_model

    model = create_model(SPEC).eval()
    with pytest.raises(
        EdgeslimError, match=r"input_shape is \(C, H, W\), a tuple of ints, got \(3, 32\.5, 32\)"
    ) as e:
        count_model(model, (3, 32.5, 32))
    assert e.value.params == ("input_shape",) and "\n" not in str(e.value)
    assert count_model(model, (3.0, 32, 32)).macs == count_model(model, torch.tensor([3, 32, 32])).macs > 0


def test_layers_a_user_keeps_in_eval_stay_in_eval_through_graph_and_surgery() -> None:
    """Fine-tuning with frozen BatchNorm statistics (the stem's BN kept in eval in a training
    model): the graph capture, surgery's check and the slim copy give each module its own mode back
    (model.train(True) put the frozen BN back in training, so its statistics moved silently)."""
    from edgeslim.channels.graph import build_graph
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    model = create_model(ModelSpec("tv:resnet18", num_classes=10))
    model.train()
    model.bn1.eval()
    with torch.no_grad():
        model.layer1[0].bn1.weight[:8] = 0
        model.layer1[0].bn1.bias[:8] = 0
    x = torch.randn(2, 3, 32, 32)
    want = {n: m.training for n, m in model.named_modules()}
    build_graph(model, x)
    assert {n: m.training for n, m in model.named_modules()} == want
    res = prune_with_report(model, x)
    assert res.report["removed_channels"] == 8
    assert {n: m.training for n, m in model.named_modules()} == want
    assert {n: m.training for n, m in res.model.named_modules()} == want
    mean = res.model.bn1.running_mean.clone()
    res.model(torch.randn(2, 3, 32, 32))  # (a training step's forward: the frozen BN's statistics stay)
    assert torch.equal(res.model.bn1.running_mean, mean)


def test_a_slim_checkpoint_whose_pickle_source_gained_a_layer_names_that_file(tmp_path, monkeypatch) -> None:
    """Diff review: a slim checkpoint rebuilt from a whole pickle (pickle:src.pkl) whose file was replaced
    by the same network plus a layer was refused as "written by another model or version", blaming the
    checkpoint; the weights' refusal names the replaced file, as the recipe's does."""
    from edgeslim.surgery import prune_with_report

    monkeypatch.chdir(tmp_path)

    def net(extra: bool = False) -> nn.Sequential:
        m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
        return m.append(nn.Linear(10, 10)) if extra else m

    m = net().eval()
    torch.save(m, "src.pkl")
    with torch.no_grad():
        m[1].weight[:8] = 0
        m[1].bias[:8] = 0
    res = prune_with_report(m, torch.randn(1, 3, 32, 32))
    save_model("slim.pt", res.model, ModelSpec("pickle:src.pkl", 10, 3, (32, 32)), recipe=res.recipe)
    assert load_model("slim.pt", trust_pickle=True).model[0].out_channels == 8
    torch.save(net(extra=True), "src.pkl")
    with pytest.raises(EdgeslimError) as err:
        load_model("slim.pt", trust_pickle=True)
    msg = str(err.value)
    assert "checkpoint weights do not fit" in msg and "written by another model" not in msg, msg
    assert "src.pkl, the file it rebuilds its architecture from, now holds another model" in msg, msg


def test_ratio_pruning_a_layernorm_model_names_its_norm(tmp_path, capsys) -> None:
    """Torch-Pruning user's review: `prune tv:convnext_tiny --ratio 0.3` said "no BatchNorm layers; nothing to
    prune" with no word of the LayerNorm that normalizes it (prune without --ratio names it)."""
    from edgeslim.cli import main
    from edgeslim.sparsity.subgradient import threshold_prune

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Flatten())
    with pytest.raises(EdgeslimError, match=r"no BatchNorm layers \(it is normalized by GroupNorm,"):
        threshold_prune(net, 0.3)
    args = [
        "prune",
        "tv:convnext_tiny",
        "--ratio",
        "0.3",
        "--input-shape",
        "3,32,32",
        "-o",
        str(tmp_path / "c.pt"),
    ]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "normalized by LayerNorm" in lines[0], lines
