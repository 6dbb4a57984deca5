"""The Python examples of README.md and docs/*.md stay true to the code.

Every block compiles, every edgeslim name it imports exists, and every call of an imported name
binds to that name's signature. The blocks that run in seconds run as written, on small real models
and data: a namespace gives them the names the docs leave to the reader (``model``, ``loader``, ...),
and only sizes shrink (bench timing). The README's own block runs in test_readme.py; the YOLO
training and the 10-epoch ``fit`` of docs/training.md are checked only statically.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path) -> list[str]:
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.S | re.M)
    return [body for lang, body in fenced if lang == "python"]


def _block(doc: str, marker: str) -> str:
    """The one Python block of ``doc`` (a path under the checkout) that contains ``marker``."""
    found = [b for b in _blocks(ROOT / doc) if marker in b]
    assert len(found) == 1, f"{doc}: {len(found)} Python blocks contain {marker!r}"
    return found[0]


def _imported(tree: ast.AST, where: str) -> tuple[dict[str, Any], list[str]]:
    """The edgeslim names a block imports (name -> object) and the imports that do not resolve."""
    names: dict[str, Any] = {}
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgeslim"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
                else:
                    missing.append(f"{where}: {node.module} has no {alias.name}")
    return names, missing


def _unbound_calls(tree: ast.AST, names: dict[str, Any], where: str) -> list[str]:
    """Calls of an imported name (or of its attribute) whose arguments its signature refuses."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, target = node.func, None
        if isinstance(f, ast.Name):
            target = names.get(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in names:
            target = getattr(names[f.value.id], f.attr, None)
            if target is None:
                bad.append(f"{where}:{node.lineno}: {f.value.id} has no attribute {f.attr}")
        if target is None or not callable(target):
            continue
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):  # (a builtin without a signature)
            continue
        starred = any(isinstance(a, ast.Starred) for a in node.args)
        keywords = {k.arg: None for k in node.keywords if k.arg is not None}
        try:
            sig.bind_partial(*([] if starred else [None] * len(node.args)), **keywords)
        except TypeError as exc:
            bad.append(f"{where}:{node.lineno}: {ast.unparse(node)[:90]}: {exc}")
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_blocks_import_and_call_what_exists(doc: Path) -> None:
    problems = []
    for i, block in enumerate(_blocks(doc)):
        where = f"{doc.name} block {i + 1}"
        tree = ast.parse(block)  # (a SyntaxError names the block's line)
        names, missing = _imported(tree, where)
        problems += missing + _unbound_calls(tree, names, where)
    assert not problems, "\n".join(problems)


def test_the_static_check_finds_a_renamed_keyword() -> None:
    """The check above fails on a call the code no longer accepts (it is not vacuous)."""
    block = "from edgeslim.surgery import prune_with_report\nprune_with_report(m, x, round_by=8)\n"
    tree = ast.parse(block)
    names, missing = _imported(tree, "t")
    assert not missing and _unbound_calls(tree, names, "t")
    names, missing = _imported(ast.parse("from edgeslim.surgery import prune_with_reprot\n"), "t")
    assert missing


def _cli_options() -> dict[str, set[str]]:
    """Each ``edgeslim`` command's option names (``--help`` included)."""
    from edgeslim.cli import COMMANDS

    options = {}
    for name, (module, attr, _) in COMMANDS.items():
        cmd = getattr(importlib.import_module(module), attr)
        options[name] = {"--help"}.union(*(set(p.opts) | set(p.secondary_opts) for p in cmd.params))
    return options


def _doc_commands(text: str, commands: set[str]) -> list[tuple[str, bool]]:
    """The ``edgeslim ...`` command lines of a document's shell blocks (``True``) and its inline
    spans: ``edgeslim CMD ...`` or ``CMD --option`` (``False``)."""
    found = []
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)  # (every block, paired in order)
    for block in (body for lang, body in fenced if lang in ("", "bash", "sh", "console")):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in re.split(r"&&|;|\|", line.split("  #")[0]):
                if part.strip().startswith("edgeslim "):
                    found.append((" ".join(part.split()), True))
    found += [(span, False) for span in re.findall(r"`(edgeslim [^`]+)`", text)]
    found += [("edgeslim " + s, False) for s in re.findall(rf"`((?:{'|'.join(commands)}) --[^`]*)`", text)]
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_use_options_that_exist(doc: Path) -> None:
    """Each ``edgeslim CMD ... --option`` of the docs names a command and options that command has
    (an option renamed in the code and not in the docs fails here)."""
    options = _cli_options()
    problems = []
    for line, in_block in _doc_commands(doc.read_text(), set(options)):
        words = line.split()
        if len(words) < 2 or words[1].startswith("-"):
            continue  # (edgeslim --help, --version)
        if words[1] not in options:
            if in_block:
                problems.append(f"no command {words[1]!r}: {line}")
            continue
        for word in words[2:]:
            for opt in word.split("/"):  # (`--mean/--std`)
                opt = opt.split("=")[0].rstrip(",.;:)")
                if opt.startswith("--") and opt not in options[words[1]]:
                    problems.append(f"{words[1]} has no {opt}: {line[:120]}")
    assert not problems, "\n".join(problems)


def test_the_command_check_finds_an_unknown_option() -> None:
    options = _cli_options()
    found = _doc_commands(
        "```bash\nedgeslim slim vgg-small --target-mac 0.5 \\\n  --out r\n```\n", set(options)
    )
    assert found == [("edgeslim slim vgg-small --target-mac 0.5 --out r", True)]
    assert "--target-mac" not in options["slim"] and "--target-macs" in options["slim"]


def _run(block: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(block, "<docs example>", "exec"), namespace)  # noqa: S102 - the docs' own example
    return namespace


def _conv_net(in_ch: int = 1, classes: int = 10) -> nn.Module:
    def cbr(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(
        cbr(in_ch, 16), cbr(16, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes)
    )


def _zero_half(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[::2] = 0
                m.bias[::2] = 0


def test_surgery_examples_run() -> None:
    model = _conv_net().eval()
    _zero_half(model)
    x = torch.randn(2, 1, 16, 16)
    ns = _run(
        _block("docs/surgery.md", "prune_with_report(model"),
        {"model": model, "example_input": x[:1], "batches": [x], "inputs": [x]},
    )
    assert ns["res"].report["removed_channels"] == 16 and ns["res"].report["exact"]
    assert ns["verify"](model, ns["res"].model, [x])["max_abs_diff"] < 1e-5

    ns = _run(_block("docs/surgery.md", "register_channel_rule(Gain"), {})
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), ns["Gain"](8), nn.Conv2d(8, 4, 1)
    ).eval()
    _zero_half(net)
    from edgeslim.surgery import prune_with_report

    res = prune_with_report(net, torch.randn(1, 1, 8, 8))
    assert res.model[2].g.shape == (4,) and res.report["max_abs_diff"] < 1e-5  # the rule resized the gain


def test_counting_and_data_examples_run(fmnist_dir: str) -> None:
    ns = _run(_block("docs/data-and-models.md", 'load_dataset("fashion-mnist"'), {})
    assert tuple(ns["b"].train_x.shape) == (8000, 1, 28, 28) and ns["x"].dtype == torch.float32
    import torchvision

    ns = _run(
        _block("docs/data-and-models.md", "count_model(model"), {"model": torchvision.models.resnet18()}
    )
    assert ns["s"].params == sum(p.numel() for p in ns["model"].parameters()) and ns["s"].macs > 0
    assert ns["z"] is not None


def test_own_loop_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/slimming.md's two loops as written (a few digits batches; test_own_loop.py checks numbers)."""
    from edgeslim.data import load_dataset

    monkeypatch.chdir(tmp_path)  # (the first saves the optimizer's state)

    data = load_dataset("digits", subset=256, test_subset=64)
    batches = list(data.loader("train", 32, shuffle=True, augment=False, epoch=0))
    model = _conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    common = {
        "model": model,
        "loader": batches,
        "loss_fn": nn.functional.cross_entropy,
        "optimizer": optimizer,
    }
    ns = _run(_block("docs/slimming.md", "CosineAnnealingLR(opt"), {**common, "T_max": 10})
    assert set(torch.load("opt.pt", weights_only=True)) == {"optimizer", "slimming"}  # "AND xi"
    assert ns["sched"].optimizer is ns["opt"] and ns["report"].zeroed == ns["slimmer"].zero_count()

    model = _conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ns = _run(
        _block("docs/slimming.md", "build_controller(model"),
        {**common, "model": model, "optimizer": optimizer, "epochs": 2, "lr": 0.05,
         "example": torch.zeros(1, 1, 8, 8)},
    )  # fmt: skip
    assert ns["res"].report["exact"]


@pytest.mark.parametrize("kind", ["timm-ModelEmaV2", "torch-AveragedModel"])
@pytest.mark.parametrize("zero_invariant", [True, False], ids=["zero-inv", "l1"])
def test_the_ema_example_prunes_the_ema_like_the_model(kind: str, zero_invariant: bool) -> None:
    """Review of the own loop: with timm's ModelEmaV2 or torch's AveragedModel beside the slimmer, the EMA's
    BN scales never reached zero and prune_with_report(ema.module) removed 0 channels (the model: 6), with no
    word in the docs. docs/training.md's EMA block, as written, removes from the EMA what it removes from
    the model."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from edgeslim.data import load_dataset
    from edgeslim.sparsity import ProximalSlimming
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(0)
    batches = list(load_dataset("digits", subset=128, test_subset=16).loader("train", 32, shuffle=False))
    model, example = _conv_net(), torch.zeros(1, 1, 8, 8)
    with torch.no_grad():  # (spread scales: some reach zero in a few steps)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.01, 0.5)
    if kind == "timm-ModelEmaV2":
        from timm.utils import ModelEmaV2

        ema = ModelEmaV2(model, decay=0.9)
    else:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    slimmer = ProximalSlimming(model, lam=3.0, beta=100, zero_invariant=zero_invariant, example_input=example)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches * 2:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        slimmer.step(optimizer)
        ema.update(model) if kind == "timm-ModelEmaV2" else ema.update_parameters(model)
    ns = _run(
        _block("docs/training.md", "zero_mask()"),
        {"slimmer": slimmer, "ema": ema, "example": example, "x": x},
    )
    own = prune_with_report(model.eval(), example, round_to=1, calib_inputs=x)
    assert ns["res"].report["removed_channels"] == own.report["removed_channels"] > 0
    assert ns["res"].report["exact"] == own.report["exact"]


def test_amp_example_skips_the_prox_with_a_skipped_step() -> None:
    """API review (amp.py): in the documented plain loop (scaler.step(opt); slimmer.step(opt)) the prox
    ran after steps GradScaler skipped; docs/slimming.md now shows AMP through wrap(), whose step
    GradScaler skips whole."""
    from edgeslim.data import load_dataset
    from edgeslim.sparsity import ProximalSlimming, wrap

    data = load_dataset("digits", subset=128, test_subset=32)
    batches = list(data.loader("train", 32, shuffle=True, augment=False, epoch=0))
    model = _conv_net()
    slimmer = ProximalSlimming(model, lam=0.5)
    calls = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the third batch overflows
        calls.append(1)
        return nn.functional.cross_entropy(out, y) * (math.inf if len(calls) == 3 else 1.0)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ns = _run(
        _block("docs/slimming.md", "scaler.step(opt)"),
        {"torch": torch, "model": model, "slimmer": slimmer, "optimizer": optimizer, "loader": batches,
         "loss_fn": loss_fn, "device": "cpu", "wrap": wrap},
    )  # fmt: skip
    assert ns["scaler"].get_scale() < 2.0**16 and slimmer.t == len(batches) - 1  # one step skipped, prox too


def test_export_example_runs(fmnist_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeslim.checkpoint import save_model
    from edgeslim.models import ModelSpec, create_model
    from edgeslim.surgery import prune_with_report

    monkeypatch.chdir(tmp_path)
    spec = ModelSpec("vgg-small", 10, 1, 28)
    dense = create_model(spec).eval()
    _zero_half(dense)
    pruned = prune_with_report(dense, torch.zeros(1, 1, 28, 28))
    save_model("slim.pt", pruned.model, spec, recipe=pruned.recipe)
    ns = _run(_block("docs/export.md", "export_onnx(model"), {"model": pruned.model, "pruned": pruned})
    assert (
        ns["res"].validation.max_abs_diff < 1e-3 and Path("m.onnx").is_file() and Path("slim.onnx").is_file()
    )


def test_bench_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = _run(_block("docs/bench.md", "predict_latency(["), {})
    assert ns["pred"].total_s > 0 and ns["pred"].layers[0].name == "conv1"

    from edgeslim.export import export_onnx

    monkeypatch.chdir(tmp_path)
    dense = _conv_net().eval()
    export_onnx(dense, "dense.onnx", (1, 16, 16), dynamic_batch=True, validate=False, simplify=False)
    slim = _conv_net().eval()
    slim[1][0] = nn.Conv2d(16, 16, 1, bias=False)  # (a cheaper network, the same interface)
    export_onnx(slim, "slim.onnx", (1, 16, 16), dynamic_batch=True, validate=False, simplify=False)
    block = _block("docs/bench.md", "measure(BenchRequest").replace(
        "trials=3", "trials=1, warmup=0.01, min_iters=5, min_time=0.02, plots=False"
    )  # only sizes shrink
    ns = _run(block, {})
    assert ns["record"]["speedup"]["8"]["value"] > 0 and ns["record"]["summary"]["slim"]["8"]["p50_ms"] > 0


def test_the_calibration_images_reader_runs_as_documented(
    fmnist_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The INT8 review (finding 6): docs/export.md said NAME.calib.npy is "for the calibrator on the
    device", but nothing in edgeslim's export or trtexec script reads it. The docs say so now and show
    its reader; the block runs as written on an export's file, up to TensorRT, which is not here."""
    import importlib.util

    import numpy as np

    from edgeslim.cli import main
    from edgeslim.export.trt import TensorRTUnavailable

    monkeypatch.chdir(tmp_path)
    assert main(["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", "out/slim.onnx", "--data",
                 "fashion-mnist", "--data-dir", fmnist_dir, "--trt", "--precision", "int8", "--calib-images", "16",
                 "--n-validate", "16"]) == 0  # fmt: skip
    block = _block("docs/export.md", "load_calibration_data(")
    text = (ROOT / "docs" / "export.md").read_text()
    assert (
        "for the calibrator on the device" not in text
        and "Neither the export nor the trtexec script reads it" in text
    )
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(TensorRTUnavailable):
            ns = _run(block, {})
        ns = _run(block.split("build_engine(")[0] + "\n", {})  # (up to the build)
    else:
        ns = _run(block, {})
    assert ns["x"].dtype == np.float32 and ns["x"].shape == (16, 1, 28, 28)


def test_the_ns_fine_tune_layer_counts_are_the_records() -> None:
    """Train review, finding 6: docs/slimming.md said NS's threshold "empties its last layer to 1 of 128
    channels", reading ns_ft_fmnist_60k.json's (kept, channels) pairs as pruned ones: the last layer kept
    127 of 128. The layers the doc names carry the recorded kept counts of both seeds."""
    runs = json.loads((ROOT / "benchmarks" / "results" / "ns_ft_fmnist_60k.json").read_text())["runs"]
    text = " ".join((ROOT / "docs" / "slimming.md").read_text().split())
    said = re.search(r"NS's global threshold cuts unevenly: (.*?) until its", text)
    assert said, "the NS layer sentence is gone"
    named = re.findall(r"`(features\.\d+)` (?:keeps )?([\d and]+) of (?:its )?(\d+)", said.group(1))
    assert len(named) == 2, named
    for layer, kept, of in named:
        recorded = [runs[seed]["per_layer_pruned"][layer] for seed in ("seed0", "seed1")]
        assert [int(k) for k in kept.split(" and ")] == [k for k, _ in recorded], (layer, recorded)
        assert all(n == int(of) for _, n in recorded), layer
    last = re.search(r"the last layer keeps (\d+) of (\d+)", said.group(1))
    assert last and all(
        runs[s]["per_layer_pruned"]["features.18"] == [int(last.group(1)), int(last.group(2))]
        for s in ("seed0", "seed1")
    )


def test_the_ns_fine_tune_command_reproduces_its_record() -> None:
    """Train review, finding 7: ns_ft_fmnist_60k.json's setup said batch 64 where its command gave no
    --batch-size (train's 128), and the docs quoted the command without --round-to 1, which a run today
    needs to prune as it did then (no channel multiple: its kept counts are off 16)."""
    from edgeslim.train.config import TrainConfig

    setup = json.loads((ROOT / "benchmarks" / "results" / "ns_ft_fmnist_60k.json").read_text())["setup"]
    given = re.search(r"--batch-size (\d+)", setup["command"])
    batch = int(given.group(1)) if given else TrainConfig().batch_size
    assert re.search(r"\bbatch (\d+)", setup["schedule"]).group(1) == str(batch), setup["schedule"]
    text = " ".join((ROOT / "docs" / "slimming.md").read_text().split())
    quoted = re.search(r"ns_ft_fmnist_60k\.json`, `(edgeslim train [^`]*)`", text)
    assert quoted and "--round-to 1" in quoted.group(1).split(" --finetune")[0], quoted
    assert f"batch {batch}" in text[quoted.end() : quoted.end() + 200]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_on_torchvision_data_say_where_it_is(doc: Path) -> None:
    """A README trial: docs/budget.md's `edgeslim slim resnet20 --data cifar10 ...` stopped with "where is
    cifar10? give --data-dir" (no download here): each command block line naming CIFAR or SVHN gives it."""
    lines = re.sub(r"\\\n\s*", " ", doc.read_text()).splitlines()  # (fenced and indented blocks alike)
    missing = [
        line
        for line in (ln.strip() for ln in lines)
        if line.startswith(("edgeslim ", "torchrun "))
        and re.search(r"--data (cifar10|cifar100|svhn)\b", line)
        and "--data-dir" not in line
    ]
    assert not missing, "\n".join(missing)
