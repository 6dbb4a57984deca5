"""The package skeleton: CLI entry, model files, atomic writes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from edgeslim.checkpoint import load_model, save_model
from edgeslim.cli import main
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.models import ModelSpec, create_model
from edgeslim.utils.io import atomic_write_text, check_output_path


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "edgeslim, version" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "slim", "prune", "export", "bench"):
        assert cmd in out


def test_cli_help_does_not_import_torch():
    code = "import sys; from edgeslim.cli import main; main(['--help']); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().endswith("False")


def test_checkpoint_roundtrip(tmp_path):
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=1, input_size=(28, 28))
    m = create_model(spec).eval()
    path = save_model(tmp_path / "m.pt", m, spec, meta={"data": "fashion-mnist"})
    # loadable with weights_only=True, as promised
    raw = torch.load(path, weights_only=True)
    assert raw["spec"]["arch"] == "vgg-small"
    loaded = load_model(path)
    x = torch.randn(2, 1, 28, 28)
    assert loaded.kind == "checkpoint" and loaded.meta["data"] == "fashion-mnist"
    assert torch.equal(m(x), loaded.model.eval()(x))


def test_pickle_refused_unless_trusted(tmp_path):
    m = create_model("vgg-small", in_channels=1)
    torch.save(m, tmp_path / "whole.pt")
    with pytest.raises(EdgeslimError, match="trust_pickle=True"):
        load_model(tmp_path / "whole.pt")
    assert load_model(tmp_path / "whole.pt", trust_pickle=True).kind == "pickle"


def test_torchscript_and_export_load(tmp_path):
    m = create_model("vgg-small", in_channels=1).eval()
    x = torch.randn(1, 1, 28, 28)
    torch.jit.save(torch.jit.trace(m, x), tmp_path / "ts.pt")
    with pytest.raises(EdgeslimError, match="TorchScript archive .* trust_pickle=True"):
        load_model(tmp_path / "ts.pt")
    assert load_model(tmp_path / "ts.pt", trust_pickle=True).kind == "torchscript"
    torch.export.save(torch.export.export(m, (x,)), tmp_path / "ep.pt2")
    with pytest.raises(EdgeslimError, match="torch.export program .* trust_pickle=True"):
        load_model(tmp_path / "ep.pt2")
    ep = load_model(tmp_path / "ep.pt2", trust_pickle=True)
    assert ep.kind == "exported"
    assert torch.allclose(ep.model(x), m(x), atol=1e-5)


def test_bad_model_files(tmp_path):
    with pytest.raises(EdgeslimError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    with pytest.raises(EdgeslimError):
        load_model(tmp_path / "junk.pt")
    torch.save(create_model("vgg-small").state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EdgeslimError, match="bare state_dict"):
        load_model(tmp_path / "sd.pt")


def test_unknown_arch_suggests():
    with pytest.raises(EdgeslimError, match="vgg19"):
        create_model("vgg91")


def test_atomic_write_and_force(tmp_path):
    p = tmp_path / "out.json"
    atomic_write_text(p, "one")
    with pytest.raises(EdgeslimError, match="force=True"):
        check_output_path(p)
    assert check_output_path(p, force=True) == p
    assert p.read_text() == "one"
    assert [f.name for f in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_first_line_of_any_exception_message():
    # the inline copies this replaced raised IndexError on an empty message or gave "" for a
    # message that starts with a newline (what C++ exceptions from ONNX Runtime often do)
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert (
        first_line(RuntimeError("\n  \n  [ONNXRuntimeError] : 1 : FAIL : bad\nmore"))
        == "[ONNXRuntimeError] : 1 : FAIL : bad"
    )
    assert first_line(ValueError("one line")) == "one line"


def test_library_errors_name_other_stages_in_python_and_as_command_lines_on_the_cli(tmp_path, capsys):
    """A library message that sends the user to another stage says it in the Python API's words;
    the CLI shows that stage as the command line that runs it."""
    from edgeslim.cli import cli_message, command_line
    from edgeslim.errors import Step
    from edgeslim.models import create_model

    with pytest.raises(EdgeslimError) as info:
        create_model(ModelSpec(arch="resnet2O", num_classes=10))
    assert "see edgeslim.models.list_models() for all names" in str(info.value)
    assert "see edgeslim info --list-models for all names" in cli_message(info.value, None)
    assert main(["info", "tv:resnet1B"]) == 2
    assert "see edgeslim info --list-models" in capsys.readouterr().err
    step = Step("export", model="my model.onnx", trt=True, dynamic_batch=False, precision="int8")
    assert (
        str(step)
        == "the export stage (model='my model.onnx', trt=True, dynamic_batch=False, precision='int8')"
    )
    assert command_line(step) == "edgeslim export 'my model.onnx' --trt --precision int8"
    assert command_line(Step("bench")) == "edgeslim bench"


def test_library_errors_name_the_cli_flag(capsys):
    """An EdgeslimError about a Python parameter shows the command's flag on the CLI."""
    from edgeslim.cli import cli_message
    from edgeslim.cli.bench import bench
    from edgeslim.cli.slim import slim
    from edgeslim.cli.train import train
    from edgeslim.sparsity.budget import BudgetSettings
    from edgeslim.train.config import TrainConfig

    with pytest.raises(EdgeslimError) as info:
        BudgetSettings(metric="latency", target="8ms").validate()
    assert "needs profile (" in str(info.value)  # the Python API's words
    assert "needs --profile (" in cli_message(info.value, slim) and "or --latency-table" in cli_message(
        info.value, slim
    )
    # bench stores --profile as profile_name: found by its flag; a name without a flag stays
    err = EdgeslimError("a latency target needs profile", param=("profile", "nothing_like_it"))
    assert cli_message(err, bench) == "a latency target needs --profile"
    # a parameter the message does not spell is pointed to
    assert cli_message(EdgeslimError("bad taper", param="taper_end"), slim) == "bad taper (see --taper-end)"
    # "data set" is a phrase, not the parameter data (session 34: prune said "unknown --data set 'cifar11'")
    err = EdgeslimError("unknown data set 'cifar11'; known: cifar10", param="data")
    assert cli_message(err, slim) == "unknown data set 'cifar11'; known: cifar10 (see --data)"
    with pytest.raises(EdgeslimError) as info:
        TrainConfig(momentum=0.0, nesterov=True)
    assert cli_message(info.value, train) == "nesterov=True needs --momentum > 0"
    assert cli_message(info.value, None) == str(info.value)
    # a user's path that spells the name is left alone; the word after it is the parameter
    err = EdgeslimError(
        "runs/weights/best.ts is TorchScript; give the architecture with weights", param="weights"
    )
    assert (
        cli_message(err, slim) == "runs/weights/best.ts is TorchScript; give the architecture with --weights"
    )
    err = EdgeslimError("weights.pt holds no model; pass weights.", param="weights")
    assert cli_message(err, slim) == "weights.pt holds no model; pass --weights."
    # end to end: the data layer's `subset` becomes --subset (the CLI's own range check is bypassed)
    with pytest.raises(EdgeslimError) as info:
        from edgeslim.data import load_dataset

        load_dataset("digits", subset=0)
    assert cli_message(info.value, slim).startswith("--subset must be a positive number")


def test_pipeline_errors_name_request_fields_and_cli_flags(tmp_path):
    """Pipeline errors name the request field a Python caller passes; the CLI shows its flag."""
    from pathlib import Path

    from edgeslim.cli import cli_message
    from edgeslim.cli.bench import bench
    from edgeslim.cli.info import info
    from edgeslim.cli.slim import slim
    from edgeslim.cli.train import train
    from edgeslim.pipelines import slim as slim_pipeline
    from edgeslim.pipelines import train as train_pipeline
    from edgeslim.pipelines.bench import BenchRequest
    from edgeslim.pipelines.rundir import run_directory
    from edgeslim.pipelines.source import load_model_or_arch

    def raised(call) -> EdgeslimError:
        with pytest.raises(EdgeslimError) as info_:
            call()
        assert "--" not in str(info_.value), str(info_.value)
        return info_.value

    exc = raised(BenchRequest("m.onnx", predict=True).check)
    assert str(exc).startswith("predict=True needs profile NAME")
    assert cli_message(exc, bench).startswith("--predict needs --profile NAME")  # --profile is profile_name
    exc = raised(BenchRequest("m.onnx", layer_table=Path("t.json"), out_dir=Path("o")).check)
    assert "drop baseline, out_dir and predict" in str(exc)
    assert cli_message(exc, bench) == "--layer-table times one model; drop --baseline, --out and --predict"
    exc = raised(BenchRequest("m.onnx", onnx="m.onnx").check)
    assert cli_message(exc, bench).startswith(
        "--onnx goes with a TensorRT engine file: the ONNX it was built from"
    )

    exc = raised(
        lambda: slim_pipeline.check(slim_pipeline.SlimRequest(out_dir=tmp_path / "s", model="vgg-small"))
    )
    assert "(data_name, e.g. fashion-mnist)" in str(exc)  # SlimRequest's field; --data stores it as data_name
    assert "(--data, e.g. fashion-mnist)" in cli_message(exc, slim)

    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "log.jsonl").write_text("{}\n")

    def hold() -> None:
        with run_directory(run, force=False, interrupted="train"):
            pass

    exc = raised(hold)  # stopped before its first checkpoint: nothing to resume
    assert "nothing to resume; pass force=True" in str(exc)
    assert "nothing to resume; pass --force to start over" in cli_message(exc, slim)
    (run / "train" / "model.pt").write_bytes(b"a checkpoint")
    exc = raised(hold)
    assert "continue it with resume=True, or pass force=True" in str(exc)
    assert "continue it with --resume, or pass --force to start over" in cli_message(exc, slim)

    exc = raised(lambda: load_model_or_arch("resnet20", trust_pickle=False, data="imagefolder"))
    assert str(exc) == "data imagefolder has no fixed image size; pass input_shape C,H,W"
    assert cli_message(exc, info) == "--data imagefolder has no fixed image size; pass --input-shape C,H,W"

    req = train_pipeline.TrainRequest(out_dir=tmp_path / "t", arch="vgg-small", data_name="digits", lam=1e-4)
    exc = raised(lambda: train_pipeline.run(req))
    assert str(exc).startswith("lam is the sparsity strength") and "add method subgradient" in str(exc)
    assert cli_message(exc, train).startswith("--lambda is the sparsity strength")  # click stores it as lam
    assert "add --method subgradient" in cli_message(exc, train)


def test_converted_library_errors_name_python_parameters_and_cli_flags(tmp_path, capsys):
    """Library errors once written with CLI flags: the Python caller reads the parameter, the CLI its flag."""
    from edgeslim.cli import cli_message
    from edgeslim.cli.info import info
    from edgeslim.data import load_dataset
    from edgeslim.export.pipeline import ExportRequest
    from edgeslim.utils.parsing import parse_input_shape

    def cli_err(args: list[str]) -> str:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) <= 2, err  # one line (may wrap once)
        return " ".join(err.split())

    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(EdgeslimError) as ei:
        check_output_path(existing, param="onnx_path")
    assert "pass force=True to overwrite it or choose another onnx_path" in str(ei.value)
    assert "--" not in str(ei.value)
    err = cli_err(["export", "vgg-small", "--onnx", str(existing)])
    assert "pass --force to overwrite it or choose another --onnx" in err
    assert existing.read_bytes() == b"keep me"

    out = tmp_path / "p.pt"
    out.write_bytes(b"mine")
    assert "choose another --output" in cli_err(["prune", "vgg-small", "-o", str(out)])

    with pytest.raises(EdgeslimError, match=r"^onnx_path \S+ should end in \.onnx$"):
        ExportRequest(onnx_path=tmp_path / "m.pt")
    assert "--onnx" in cli_err(["export", "vgg-small", "--onnx", str(tmp_path / "m.pt")])
    # an OS error while writing names the file the user asked for, not the writer's temporary file
    err = cli_err(["export", "vgg-small", "--onnx", "/proc/m.onnx"])
    assert "(/proc/m.onnx)" in err and ".tmp" not in err and "check the path" in err

    missing = tmp_path / "nowhere"
    with pytest.raises(EdgeslimError, match=r"^data_dir \S+ does not exist"):
        load_dataset("digits", data_dir=missing)
    args = ["train", "--arch", "vgg-small", "--data", "digits", "--data-dir", str(missing), "--epochs", "1"]
    assert cli_err([*args, "--out", str(tmp_path / "run")]).startswith("error: --data-dir ")

    with pytest.raises(EdgeslimError) as ei:
        parse_input_shape("3,32")
    assert "input_shape must be C,H,W" in str(ei.value) and "; batch sets the batch size" in str(ei.value)
    err = cli_err(["export", "vgg-small", "--onnx", str(tmp_path / "x.onnx"), "--input-shape", "3,32"])
    assert "--input-shape must be C,H,W" in err and "--batch sets the batch size" in err

    # `name=True` of a flag becomes the bare flag
    refused = EdgeslimError("if you trust it, pass trust_pickle=True", param="trust_pickle")
    assert cli_message(refused, info) == "if you trust it, pass --trust-pickle"


def test_status_lines_name_cli_flags_on_the_cli(tmp_path, capsys):
    """Status lines a pipeline prints (not errors) name Python parameters too (``Notice``); the CLI
    shows its flags there, the Python API and the JSON report keep the parameter names."""
    import json

    from edgeslim.cli import main, notice
    from edgeslim.cli.prune import prune
    from edgeslim.errors import Notice

    assert notice("plain text", prune) == "plain text"
    assert notice(Notice("calibrated on random inputs (pass data)", "data"), prune).endswith("(pass --data)")
    assert main(["prune", "vgg-small", "-o", str(tmp_path / "a.pt")]) == 0
    assert "random normal inputs (for real images, pass --data)" in " ".join(capsys.readouterr().out.split())
    assert main(["prune", "vgg-small", "-o", str(tmp_path / "b.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"].endswith("(for real images, pass data)")
    assert main(["export", "vgg-small", "--onnx", str(tmp_path / "c.onnx")]) == 0
    assert "no data set known for this model (give one with --data)" in capsys.readouterr().err


def test_top1_helpers_agree_on_numpy_and_torch():
    """One top-1 count for the surgery check (torch) and the export checks (numpy): per sample for
    logits, per pixel for masks, None where an output holds no class scores."""
    from edgeslim.utils.scores import top1_accuracy, top1_agreement, top1_matches

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(6, 5, 3, 4, generator=g)
    got = ref.clone()
    got[0, :, 0, 0] = -got[0, :, 0, 0]  # one pixel's top-1 flips
    assert top1_matches(ref, got) == (71, 72)
    assert top1_matches(ref.numpy(), got.numpy()) == (71, 72)
    assert top1_agreement(ref[:, :, 0, 0], got[:, :, 0, 0]) == pytest.approx(5 / 6)
    assert top1_agreement(ref.numpy()[:, :, 0, 0], got.numpy()[:, :, 0, 0]) == pytest.approx(5 / 6)
    assert top1_matches(ref[:, :1], got[:, :1]) is None  # one channel: no class scores
    assert top1_agreement(ref[:0, :, 0, 0], got[:0, :, 0, 0]) is None  # no sample
    labels = ref[:, :, 0, 0].argmax(1)
    labels[:2] = (labels[:2] + 1) % 5
    assert top1_accuracy(ref[:, :, 0, 0], labels) == top1_accuracy(ref.numpy()[:, :, 0, 0], labels.numpy())
    assert top1_accuracy(ref[:, :, 0, 0], labels) == pytest.approx(4 / 6)


def test_prune_ratio_is_one_shot_pruning_by_coupled_group(tmp_path, capsys) -> None:
    """A Torch-Pruning user's trial: no way to prune to a ratio without training ("it should ship").
    `prune --ratio R` zeroes R of the BN channels, whole coupled groups, smallest |gamma| first, and cuts
    every one of them (resnet20: residual stages are coupled)."""
    import json

    from edgeslim.cli import main

    out = tmp_path / "r20.pt"
    args = [
        "prune",
        "resnet20",
        "--input-shape",
        "3,32,32",
        "--ratio",
        "0.3",
        "--round-to",
        "1",
        "-o",
        str(out),
    ]
    assert main([*args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    z = rep["ratio_prune"]
    assert z["ratio"] == 0.3 and 0.29 <= z["zeroed"] / z["removable"] < 0.32 and z["removable"] <= z["total"]
    assert rep["zero_kept"] == {
        "coupled_with_nonzero": 0,
        "behind_barrier": 0,
        "read_as_input_dependent": 0,
        "read_as_different_constants": 0,
    }
    assert rep["exact"] and rep["max_abs_diff"] < 1e-4 and rep["macs_after"] < 0.75 * rep["macs_before"]
    assert main([*args[:-2], "--ratio", "1.0", "-o", str(tmp_path / "x.pt")]) == 2
    assert "--ratio" in capsys.readouterr().err
    # at the default channel multiple (16 on host-cpu) the zeroed counts keep it: every zero goes
    assert main([*args[:-4], "-o", str(tmp_path / "r20_16.pt"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["alignment"]["round_to"] == 16 and rep["kept_by_rounding"] == 0 and rep["removed_channels"] > 0
    assert rep["zero_kept"] == {
        "coupled_with_nonzero": 0,
        "behind_barrier": 0,
        "read_as_input_dependent": 0,
        "read_as_different_constants": 0,
    }


def test_messages_naming_a_parameter_once_render_it_as_one_flag(tmp_path, capsys) -> None:
    """Review of the day's code: cli_message turns the first naming of a parameter into its flag, so a
    message naming one twice read half as flags, half as Python names ("raise --max-time ... whatever
    max_time"). Those messages name each parameter once."""
    import re

    from edgeslim.bench import compare
    from edgeslim.cli import cli_message
    from edgeslim.cli.bench import bench

    def raw(text: str) -> list[str]:  # Python names left in a CLI line
        return re.findall(
            r"(?<![\w-])(?:max_time|min_iters|zero_invariant|width_models|beta_end|beta)\b", text
        )

    with pytest.raises(EdgeslimError) as info:  # the measuring process past its limit (a sleeping child)
        compare.run_worker({"model": "x", "backend": "none"}, timeout=0.01)
    shown = cli_message(info.value, bench)
    assert "raise --max-time, or lower --min-iters" in shown and not raw(shown), shown
    assert main(["slim", "vgg11", "--data", "fashion-mnist", "--beta", "1", "--beta-end", "0.5",
                 "--out", str(tmp_path / "s")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--beta-end (0.5) is below --beta (1)" in err and not raw(err), err
    model = tmp_path / "m.pt"
    spec = ModelSpec("vgg11", num_classes=10, in_channels=1, input_size=28)
    save_model(model, create_model(spec), spec)
    assert main(["export", str(model), "--zero-invariant"]) == 2
    err = capsys.readouterr().err
    assert "--zero-invariant says how" in err and "--width-models" in err and not raw(err), err
