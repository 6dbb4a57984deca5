"""``edgeslim info`` on architecture names and model files, including the bad-input cases."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgeslim.checkpoint import save_model
from edgeslim.cli import main
from edgeslim.counting import count_model
from edgeslim.models import ModelSpec, create_model

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")


def run_json(capsys, *args):
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_arch_with_data(capsys):
    res = run_json(capsys, "resnet20", "--data", "fashion-mnist")
    assert res["input_shape"] == [1, 28, 28] and res["num_classes"] == 10
    ref = count_model(create_model(ModelSpec("resnet20", 10, 1, (28, 28))), (1, 28, 28))
    assert res["macs"] == ref.macs and res["params"] == ref.params
    assert res["bn"]["channels"] == 688 and res["bn"]["zeros"] == 0
    res = run_json(capsys, "vgg-small", "--input-shape", "3,32,32", "--num-classes", "100")
    assert res["layers"][-1]["out_channels"] == 100 and res["input_shape"] == [3, 32, 32]


def test_checkpoint_with_zero_scales(tmp_path, capsys):
    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    model = create_model(spec)
    with torch.no_grad():
        model.features[1].weight[:7] = 0.0
    path = save_model(tmp_path / "model.pt", model, spec, meta={"test_acc": 0.91})
    res = run_json(capsys, str(path))
    assert res["kind"] == "checkpoint" and res["arch"] == "vgg-small" and res["test_acc"] == 0.91
    assert res["input_shape"] == [1, 28, 28]  # from the checkpoint's spec
    assert res["bn"]["zeros"] == 7 and res["bn"]["layers"][0]["zeros"] == 7
    assert main(["info", str(path), "--layers"]) == 0
    text = capsys.readouterr().out
    assert "BN scales exactly zero" in text and "features.0" in text and "7 (1.6%)" in text
    # what the checkpoint records of its run, in the text too (docs/data-and-models.md; only --json had it)
    run = save_model(
        tmp_path / "run.pt", model, spec, meta={"data": "fashion-mnist", "metrics": {"test_acc": 0.9}}
    )
    assert main(["info", str(run)]) == 0
    text = capsys.readouterr().out
    assert "trained on" in text and "fashion-mnist" in text and "90.00%" in text
    assert run_json(capsys, str(run))["metrics"] == {"test_acc": 0.9}


def test_a_photo_folder_is_what_a_checkpoint_was_checked_on_not_trained_on(tmp_path, capsys):
    """Review: a model pruned with --data images (or a YOLO slim run, checked on its validation photos) was
    shown as "trained on images", though images only ever checks and calibrates."""
    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    path = save_model(
        tmp_path / "m.pt", create_model(spec), spec, meta={"data": "images", "data_dir": "/x/photos"}
    )
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "checked on" in text and "images (/x/photos)" in text and "trained on" not in text


def test_torchscript_and_pickle(tmp_path, capsys):
    model = create_model("resnet20").eval()
    ts = tmp_path / "m.ts"
    torch.jit.script(model).save(str(ts))
    assert main(["info", str(ts), "--input-shape", "3,32,32"]) == 2
    assert "TorchScript archive" in capsys.readouterr().err
    assert main(["info", str(ts), "--trust-pickle"]) == 2
    assert "without an input shape; pass --input-shape" in capsys.readouterr().err
    res = run_json(capsys, str(ts), "--input-shape", "3,32,32", "--trust-pickle")
    assert res["kind"] == "torchscript" and res["macs"] == count_model(model, (3, 32, 32)).macs

    pk = tmp_path / "whole.pt"
    torch.save(model, pk)
    assert main(["info", str(pk), "--input-shape", "3,32,32"]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    res = run_json(capsys, str(pk), "--input-shape", "3,32,32", "--trust-pickle")
    assert res["kind"] == "pickle" and res["params"] == sum(p.numel() for p in model.parameters())
    # a training script's checkpoint dict holding the whole model (a trial was sent in circles)
    ck = tmp_path / "ck.pt"
    torch.save({"model": model, "epoch": 3, "optimizer": {"lr": 0.1}}, ck)
    assert main(["info", str(ck), "--input-shape", "3,32,32"]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    res = run_json(capsys, str(ck), "--input-shape", "3,32,32", "--trust-pickle")
    assert res["kind"] == "pickle" and res["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "args,message",
    [
        (["resnet21"], "unknown architecture 'resnet21'; did you mean resnet20"),
        (["resnet20", "--data", "imagenet"], "unknown data set 'imagenet'"),
        (["resnet20", "--input-shape", "3,32"], "--input-shape must be C,H,W"),
        (["resnet20", "--data", "imagefolder"], "has no fixed image size; pass --input-shape"),
        (["missing/model.pt"], "does not exist"),
        ([], "give a model file or an architecture name"),
    ],
)
def test_bad_input(args, message, capsys):
    assert main(["info", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_corrupt_file_and_channel_mismatch(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint")
    assert main(["info", str(bad)]) == 2
    assert "model.pt" in capsys.readouterr().err
    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    path = save_model(tmp_path / "grey.pt", create_model(spec), spec)
    assert main(["info", str(path), "--data", "cifar10"]) == 2
    assert "does not run on input 3,32,32" in capsys.readouterr().err


def test_list_models(capsys):
    names = json.loads(_out(capsys, ["info", "--list-models", "--json"]))
    assert {"resnet164", "densenet40", "mobilenetv2", "tv:resnet18"} <= set(names)
    text = _out(capsys, ["info", "--list-models"])
    assert "densenet40" in text
    # the text names every family, timm's and ultralytics' too (docs audit: only the zoo and tv: were)
    families = {n.split(":")[0] for n in names if ":" in n}
    for prefix, title in (("timm", "timm ("), ("yolo", "ultralytics YOLO (")):
        if prefix in families:
            assert title in text and f"{prefix}:" in text, prefix
    if "timm" in families:
        assert "timm:efficientnet_b0" in text and "with --json)" in text


def _out(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_counts_a_model_without_bn(capsys, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    path = tmp_path / "plain.ts"
    torch.jit.script(model).save(str(path))
    res = run_json(capsys, str(path), "--data", "fashion-mnist", "--trust-pickle")
    assert res["macs"] == 26 * 26 * 4 * 9 + 4 * 26 * 26 * 10 and res["bn"]["channels"] == 0


def test_info_and_graph_are_python_calls_below_the_cli(capsys):
    """``edgeslim info`` and ``edgeslim graph`` render what ``pipelines`` computes."""
    from edgeslim.pipelines.info import info
    from edgeslim.pipelines.prune import graph, graph_summary
    from edgeslim.utils.io import to_jsonable

    res = to_jsonable(info("vgg-small", input_shape=(3, 32, 32)))
    assert json.loads(json.dumps(res)) == run_json(capsys, "vgg-small", "--input-shape", "3,32,32")
    d = graph_summary(graph("vgg-small", input_shape=(3, 32, 32)))
    assert (d["macs"], d["params"]) == (res["macs"], res["params"])
    assert main(["graph", "vgg-small", "--input-shape", "3,32,32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == d


def test_info_reads_an_image_folders_size_and_classes(cifar_zip, tmp_path, capsys):
    """--data imagefolder --data-dir DIR: the input size and the class count come from the folder,
    so the weights of a 10-class model fit (a trial found no --data-dir on info)."""
    torch.save(create_model(ModelSpec("vgg-small", 10, 3, (32, 32))).state_dict(), tmp_path / "w.pt")
    args = ["info", "vgg-small", "--weights", str(tmp_path / "w.pt"), "--json"]
    res = json.loads(_out(capsys, [*args, "--data", "imagefolder", "--data-dir", cifar_zip]))
    assert res["input_shape"] == [3, 32, 32]
    res = json.loads(
        _out(capsys, ["info", "vgg-small", "--data", "imagefolder", "--data-dir", cifar_zip, "--json"])
    )
    assert res["input_shape"] == [3, 32, 32] and res["num_classes"] == 10  # the folder's classes
    # a model file keeps its own head: the folder's class count is not a --num-classes it never gave
    from edgeslim.checkpoint import save_model

    save_model(
        tmp_path / "m5.pt", create_model(ModelSpec("vgg-small", 5, 3, (32, 32))), ModelSpec("vgg-small", 5)
    )
    assert main(["info", str(tmp_path / "m5.pt"), "--data", "imagefolder", "--data-dir", cifar_zip]) == 0
    assert main(["info", "vgg-small", "--data-dir", cifar_zip]) == 2
    assert (
        "--data-dir without --data: name the data set of that folder (imagefolder)" in capsys.readouterr().err
    )


def test_info_of_a_one_class_yolo_says_how_many_classes(capsys) -> None:
    """A YOLO user's trial: a pose model's one class, named "0", read as "classes 0" (zero classes)."""
    pytest.importorskip("ultralytics")
    assert main(["info", "yolo:yolov8n-pose"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "classes" in line)
    assert "1: 0" in row
