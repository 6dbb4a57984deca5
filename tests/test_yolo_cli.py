"""Ultralytics YOLO models from the command line: ``yolo:best.pt`` (an ultralytics checkpoint, a
pickle: only with ``--trust-pickle``), the yaml's own classes, the 640x640 default input, ``slim``
refusing a detector, and the single ``output0`` of the ONNX export, checked in ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ultralytics")
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::torch.jit.TracerWarning"
)

from edgeslim.checkpoint import load_model, save_model  # noqa: E402
from edgeslim.cli import main  # noqa: E402
from edgeslim.errors import EdgeslimError  # noqa: E402
from edgeslim.models.registry import ModelSpec  # noqa: E402
from edgeslim.pipelines.source import load_model_or_arch  # noqa: E402
from edgeslim.surgery.prune import FOLD_WARN_SCALED  # noqa: E402

SMALL = "3,64,64"
#: anchors of a 64x64 input at strides 8, 16, 32
ANCHORS_64 = 8 * 8 + 4 * 4 + 2 * 2

#: what an ultralytics user has: YOLO(...).save() (as training writes best.pt: a pickled dict whose
#: 'model' is a half-precision DetectionModel); 8 of the stem's 16 BN scales are zero, and 16 of the
#: 64 of the P3 map the neck hands to the Detect head, to prune
SAVE = """
import sys, torch
from ultralytics import YOLO
y = YOLO("yolov8n.yaml")
with torch.no_grad():
    y.model.model[0].bn.weight[:8] = 0
    y.model.model[15].cv2.bn.weight[:16] = 0  # the neck's P3 map, which eval mode also returns
y.model.names = {i: f"part{i}" for i in range(80)}  # a user's own classes
y.model.names[0] = "helmet"
y.save(sys.argv[1])
"""

#: ultralytics' own predictor on the dense best.pt (PyTorch) and on the slim ONNX edgeslim wrote,
#: the latter without imgsz: it must come from the ONNX metadata, as for ultralytics' own exports
PREDICT = """
import json, sys
import numpy as np
from PIL import Image
from ultralytics import YOLO
best, onnx_path, img = sys.argv[1:4]
rng = np.random.default_rng(0)
Image.fromarray((rng.random((48, 80, 3)) * 255).astype("uint8")).save(img)
ref = YOLO(best).predict(img, imgsz=64, conf=0.0, max_det=20, verbose=False)[0]
m = YOLO(onnx_path)
got = m.predict(img, conf=0.0, max_det=20, verbose=False)[0]
print(json.dumps({"task": m.task, "names": got.names, "imgsz": list(m.predictor.imgsz),
                  "ref": ref.boxes.data.tolist(), "got": got.boxes.data.tolist()}))
"""


def _yolo_env(folder: Path) -> dict[str, str]:
    """Environment of an ultralytics subprocess: nothing installed or fetched, and its settings file
    in ``folder`` (two test workers writing ~/.config/Ultralytics/settings.json at once collide)."""
    return {**os.environ, "YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "true", "YOLO_CONFIG_DIR": str(folder)}


@pytest.fixture(scope="module")
def best_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ultralytics checkpoint written by ultralytics itself (in a fresh process: importing
    ``ultralytics.YOLO`` here would replace ``PIL.Image.open`` for the other tests)."""
    path = tmp_path_factory.mktemp("yolo") / "best.pt"
    env = _yolo_env(path.parent)
    out = subprocess.run([sys.executable, "-c", SAVE, str(path)], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = torch.load(path, weights_only=False)
    assert type(ckpt["model"]).__name__ == "DetectionModel" and ckpt["model"].yaml["nc"] == 80
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_ultralytics_checkpoint_is_refused_without_trust(best_pt: Path, tmp_path: Path, capsys) -> None:
    """No command unpickles best.pt without --trust-pickle: one line, exit 2, nothing written."""
    for args in (
        ["info", f"yolo:{best_pt}"],
        ["graph", f"yolo:{best_pt}"],
        ["prune", f"yolo:{best_pt}", "-o", str(tmp_path / "slim.pt")],
        ["export", f"yolo:{best_pt}", "--onnx", str(tmp_path / "m.onnx")],
        ["info", str(best_pt)],
        ["export", str(best_pt), "--onnx", str(tmp_path / "m.onnx")],
    ):
        assert main(args) == 2, args
        err = _one_line(capsys)
        assert "--trust-pickle" in err and "pickle" in err and "code" in err, (args, err)
    assert "ultralytics checkpoint" in err and f"yolo:{best_pt}" in err  # the bare file: what to use
    assert list(tmp_path.iterdir()) == []


def test_info_reads_best_pt_with_its_classes(best_pt: Path, capsys) -> None:
    from edgeslim.counting import count_model
    from edgeslim.models.yolo import load_yolo_checkpoint

    assert main(["info", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    ref = count_model(load_yolo_checkpoint(str(best_pt), trust_pickle=True), (3, 64, 64))
    assert res["num_classes"] == 80 and res["macs"] == ref.macs and res["params"] == ref.params
    assert res["bn"]["zeros"] == 8 + 16
    # a bare best.pt is recognised as what it is and loads the same way
    assert main(["info", str(best_pt), "--trust-pickle", "--input-shape", SMALL, "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["kind"] == "ultralytics" and bare["arch"] == f"yolo:{best_pt.resolve()}"
    # ... but pickle:best.pt would take its fp16 DetectionModel and may swap its class conv: refused
    assert main(["info", f"pickle:{best_pt}", "--trust-pickle", "--input-shape", SMALL]) == 2
    err = _one_line(capsys)
    assert "is an ultralytics checkpoint: load it as yolo:" in err and "--trust-pickle" in err
    assert bare["task"] == res["task"] == "detect" and bare["names"]["0"] == "helmet"  # its own classes
    assert main(["info", str(best_pt), "--trust-pickle", "--input-shape", SMALL]) == 0
    shown = capsys.readouterr().out
    assert "helmet, part1, part2" in shown and "80: " in shown and ", ..." in shown
    assert (bare["macs"], bare["params"]) == (res["macs"], res["params"])
    loaded = load_model(best_pt, trust_pickle=True)
    assert loaded.spec.num_classes == 80 and loaded.spec.input_shape == (3, 640, 640)
    with pytest.raises(EdgeslimError, match="keeps its classes"):
        load_model_or_arch(f"yolo:{best_pt}", trust_pickle=True, num_classes=3)


def test_prune_then_export_best_pt_to_one_output0(best_pt: Path, tmp_path: Path, capsys) -> None:
    """prune yolo:best.pt removes the zero channels; its export has ultralytics' input ``images`` and
    one output ``output0`` [N, 4+80, anchors] with a dynamic batch, equal in ONNX Runtime and PyTorch
    (session 34: the input was named ``input``, which deployment code written for ultralytics' ONNX
    files, feeding ``images``, does not find)."""
    import onnx
    import onnxruntime as ort

    slim = tmp_path / "slim.pt"
    args = ["prune", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL, "--round-to", "1"]
    assert main([*args, "-o", str(slim), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (
        rep["removed_channels"] == 8 + 16 and rep["max_abs_diff"] < 1e-3
    )  # the P3 map's too: deployed outputs
    loaded = load_model(slim, trust_pickle=True)  # its spec names best.pt by its absolute path
    assert loaded.spec.arch == f"yolo:{best_pt.resolve()}" and loaded.spec.num_classes == 80
    assert loaded.model.model[0].conv.out_channels == 8 and loaded.model.model[15].cv2.conv.out_channels == 48

    onnx_path = tmp_path / "slim.onnx"
    assert main(["export", str(slim), "--trust-pickle", "--onnx", str(onnx_path), "--dynamic-batch",
                 "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["onnx"]["output_names"] == ["output0"] and res["onnx"]["validation"]["passed"]
    assert any(
        "imgsz=64 and rect=False" in w for w in res["warnings"]
    )  # ultralytics' YOLO() and a dynamic batch
    proto = onnx.load(str(onnx_path))
    assert [o.name for o in proto.graph.output] == ["output0"] and res["onnx"]["input_name"] == "images"
    assert [i.name for i in proto.graph.input] == ["images"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 84, ANCHORS_64]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = loaded.model.eval()(x)[0].numpy()  # the model's own decoded predictions
    assert got.shape == ref.shape == (3, 84, ANCHORS_64)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)
    assert isinstance(loaded.model(x), tuple)  # the export left the model as it was


def test_ultralytics_predicts_with_the_slim_onnx_as_with_its_own_best_pt(
    best_pt: Path, tmp_path: Path, capsys
) -> None:
    """The slim ONNX carries the metadata ultralytics' ``AutoBackend`` reads: ``YOLO("slim.onnx")``
    keeps the checkpoint's class names, task and input size (without it: 999 names ``class0``...
    and imgsz 640), and predicts the boxes ``YOLO("best.pt")`` predicts."""
    slim, onnx_path = tmp_path / "slim.pt", tmp_path / "slim.onnx"
    args = ["prune", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL, "--round-to", "1"]
    assert main([*args, "-o", str(slim)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the slim checkpoint needs best.pt where it is: said
    assert f"rebuilds its architecture from {best_pt.resolve()}: keep that file at that path" in err
    assert main(["export", str(slim), "--trust-pickle", "--onnx", str(onnx_path)]) == 0
    capsys.readouterr()
    env = _yolo_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", PREDICT, str(best_pt), str(onnx_path), str(tmp_path / "i.jpg")],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["task"] == "detect" and res["imgsz"] == [64, 64]
    assert len(res["names"]) == 80 and res["names"]["0"] == "helmet" and res["names"]["79"] == "part79"
    ref, got = np.array(res["ref"]), np.array(res["got"])
    # random weights give many detections of equal score in different classes: how many survive
    # NMS, and in which order, is left to float rounding; the strongest ones are not
    assert len(ref) >= 10 and len(got) >= 10, (ref.shape, got.shape)
    np.testing.assert_allclose(got[0, :4], ref[0, :4], atol=1e-3)  # the top box, in the image's pixels
    assert got[0, 5] == ref[0, 5]  # and its class
    top = min(5, len(ref), len(got))
    np.testing.assert_allclose(np.sort(got[:, 4])[::-1][:top], np.sort(ref[:, 4])[::-1][:top], rtol=1e-2)


def test_export_audit_counts_no_channel_the_outputs_fix(tmp_path: Path, capsys) -> None:
    """YOLOv8n's class convs (80 = the classes) and its DFL conv (16 bins -> 1) feed the output
    through the head's decoding (reshape, concat, sigmoid): their counts are fixed, so the FP16
    advice is not to re-run surgery (it counted the DFL conv's single output channel)."""
    out = tmp_path / "y.onnx"
    assert (
        main(
            ["export", "yolo:yolov8n", "--input-shape", SMALL, "--onnx", str(out), "--no-validate", "--json"]
        )
        == 0
    )
    audit = json.loads(capsys.readouterr().out)["audit"]
    fixed = {lay["name"] for lay in audit["layers"] if not lay["out_free"]}
    assert "/model.22/dfl/conv/Conv" in fixed and sum("cv3" in n for n in fixed) == 3, fixed
    assert (
        audit["misaligned"]["fp16"] == []
        and audit["suggestion"].startswith(
            "14/64 layers not a multiple of 32"  # (15 before the DFL conv's 16 input bins, no BN, were the architecture's)
        )
    )


def test_a_best_pt_whose_statistics_overflowed_float16_says_so(tmp_path: Path, capsys) -> None:
    """ultralytics saves float16: a BN variance above 65504 (a diverged training) becomes inf in
    best.pt; prune refuses it in one line that says where the inf came from."""
    path = tmp_path / "best.pt"
    code = SAVE.replace("y.save(", "y.model.model[2].cv1.bn.running_var[0] = 1.0e6\ny.save(")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env=_yolo_env(tmp_path), timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rc = main(
        ["prune", f"yolo:{path}", "--trust-pickle", "--input-shape", SMALL, "-o", str(tmp_path / "s.pt")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "inf" in err and "float16" in err and "diverged" in err
    assert not (tmp_path / "s.pt").exists()


def test_graph_and_export_take_the_ultralytics_checkpoint_by_name(
    best_pt: Path, tmp_path: Path, capsys
) -> None:
    assert main(["graph", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bn_groups"]
    onnx_path = tmp_path / "best.onnx"
    assert main(["export", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL,
                 "--onnx", str(onnx_path), "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["onnx"]["output_names"] == ["output0"] and res["onnx"]["input_shape"] == [1, 3, 64, 64]
    assert res["onnx"]["input_name"] == "images"  # as ultralytics names it


def test_yolo_yaml_keeps_its_classes_and_measures_at_640(tmp_path: Path, capsys) -> None:
    loaded = load_model_or_arch("yolo:yolov8n", trust_pickle=False)
    assert loaded.spec.num_classes == 80 and loaded.spec.input_shape == (3, 640, 640)
    assert loaded.model.model[-1].nc == 80
    assert load_model_or_arch("yolo:yolov8n", trust_pickle=False, num_classes=3).model.model[-1].nc == 3
    assert load_model_or_arch("yolo:yolov8n-cls", trust_pickle=False).spec.num_classes == 1000
    assert load_model_or_arch("vgg-small", trust_pickle=False).spec.input_shape == (3, 32, 32)  # unchanged
    # --num-classes on info and export; ultralytics' "Overriding model.yaml nc" stays off stdout
    assert main(["info", "yolo:yolov8n", "--num-classes", "3", "--input-shape", SMALL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 3
    onnx_path = tmp_path / "y3.onnx"
    assert main(["export", "yolo:yolov8n", "--num-classes", "3", "--input-shape", SMALL, "--onnx",
                 str(onnx_path), "--json"]) == 0  # fmt: skip
    json.loads(capsys.readouterr().out)
    import onnx

    out = onnx.load(str(onnx_path)).graph.output
    assert [o.name for o in out] == ["output0"]
    assert [d.dim_value for d in out[0].type.tensor_type.shape.dim] == [1, 4 + 3, ANCHORS_64]


def test_weights_of_another_class_count_need_num_classes(tmp_path: Path, capsys) -> None:
    """A custom-class YOLO state_dict fits the yaml with --num-classes (graph, prune); without it
    the one line names --num-classes."""
    model = load_model_or_arch("yolo:yolov8n", trust_pickle=False, num_classes=3).model
    sd = tmp_path / "y3_state_dict.pt"
    torch.save(model.state_dict(), sd)
    base = ["graph", "yolo:yolov8n", "--weights", str(sd), "--input-shape", SMALL, "--json"]
    assert main(base) == 2
    assert "number of classes they were trained for as --num-classes" in _one_line(capsys)
    assert main([*base, "--num-classes", "3"]) == 0
    capsys.readouterr()
    out = tmp_path / "y3_slim.pt"
    assert main(["prune", "yolo:yolov8n", "--weights", str(sd), "--num-classes", "3", "--input-shape", SMALL,
                 "-o", str(out), "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    assert load_model(out).spec == ModelSpec("yolo:yolov8n", 3, 3, (64, 64))
    # bench takes model files: it names the export that makes one, with the head's class count and no
    # guessed scale (the second review)
    assert main(["bench", str(sd), "--batch", "1", "--trials", "1", "--min-time", "0.01"]) == 2
    line = _one_line(capsys)
    assert f"(edgeslim export yolo:YAML --weights {sd} --num-classes 3 --onnx " in line
    assert "YAML: the ultralytics yaml it was built from, e.g. yolov8n" in line


def test_slim_refuses_a_detector_before_making_its_directory(tmp_path: Path, capsys) -> None:
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    out = tmp_path / "runs" / "yslim"
    args = ["slim", "yolo:yolov8n", "--data", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
            "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    err = _one_line(capsys)
    assert "trains image classifiers" in err and "ProximalSlimming" in err and "edgeslim prune" in err
    assert "docs/slimming.md" in err and "--data my_data.yaml" in err  # a YOLO: its ultralytics data yaml
    assert not (tmp_path / "runs").exists()
    train = ["train", "--arch", "yolo:yolov8n", "--data", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
             "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert main(train) == 2  # train builds the same way: refused the same way
    assert "trains image classifiers" in _one_line(capsys)
    assert not (tmp_path / "runs").exists()
    # 8x8 digits, which YOLO cannot take: probed at its own 640x640 instead, refused the same way
    assert main(["slim", "yolo:yolov8n", "--data", "digits", "--epochs", "1", "--out", str(out)]) == 2
    assert "trains image classifiers" in _one_line(capsys)


def test_bench_torch_backend_opens_best_pt(best_pt: Path) -> None:
    from edgeslim.bench.backends.torch_eager import TorchBackend

    with pytest.raises(EdgeslimError, match="trust_pickle"):
        TorchBackend().open(str(best_pt), {"device": "cpu"})
    sess = TorchBackend().open(
        str(best_pt), {"device": "cpu", "trust_pickle": True, "input_shape": [3, 64, 64]}
    )
    sess.set_batch(2)
    assert sess.run().shape == (2, 84, ANCHORS_64)  # what it returns deployed: the decoded predictions


def test_bench_compares_a_pruned_best_pt_with_its_dense_one(best_pt: Path, tmp_path: Path, capsys) -> None:
    """bench SLIM.pt --baseline best.pt checks that both give the same outputs' shapes; a YOLO's
    eval-mode forward also returns the head's raw maps of the neck's channels, which surgery resizes
    (a user trial: 'output #3 shape (1,64,16,16) differs ...; compare two exports of the same
    network'): the check reads the deployed predictions."""
    from edgeslim.bench.backends import output_shapes
    from edgeslim.bench.backends.torch_eager import TorchBackend
    from edgeslim.bench.compare import check_measured_io

    slim = tmp_path / "slim.pt"
    args = ["prune", f"yolo:{best_pt}", "--trust-pickle", "--input-shape", SMALL, "--round-to", "1"]
    assert main([*args, "-o", str(slim)]) == 0
    capsys.readouterr()
    res = {}
    for label, path in (("baseline", best_pt), ("slim", slim)):
        sess = TorchBackend().open(
            str(path), {"device": "cpu", "trust_pickle": True, "input_shape": [3, 64, 64]}
        )
        sess.set_batch(1)
        res[label] = {"io": {"batch": 1, "inputs": sess.input_shapes(), "outputs": output_shapes(sess.run())}}
    assert res["slim"]["io"]["outputs"] == [[1, 84, ANCHORS_64]]
    check_measured_io(res["baseline"], res["slim"], str(best_pt), str(slim))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_recognising_an_ultralytics_checkpoint_runs_nothing(best_pt: Path, tmp_path: Path) -> None:
    from edgeslim.models.yolo import is_ultralytics_checkpoint

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "note": "ultralytics"}, evil)
    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    from edgeslim.models import create_model

    ours = save_model(tmp_path / "ours.pt", create_model(spec), spec)
    assert is_ultralytics_checkpoint(best_pt)
    assert not is_ultralytics_checkpoint(evil) and not is_ultralytics_checkpoint(ours)
    assert not is_ultralytics_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(EdgeslimError, match="trust_pickle"):
        load_model(evil)
    assert not marker.exists()


def test_a_yaml_that_names_code_is_built_only_when_trusted(tmp_path: Path, capsys) -> None:
    """ultralytics ``eval``s a yaml's ``activation`` and calls any name of its module as a layer: a
    yaml that uses either runs code when built, so it is refused like a pickle without
    --trust-pickle. A yaml of plain layers (a literal ``nn.ReLU()`` activation) builds as before."""
    import yaml

    tasks = pytest.importorskip("ultralytics.nn.tasks")
    base = tasks.yaml_model_load("yolov8n.yaml")
    base = {k: v for k, v in base.items() if k not in ("yaml_file",)}
    marker = tmp_path / "ran"
    evil = {**base, "activation": f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()"}
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(evil))
    layer = {**base, "backbone": [[-1, 1, "attempt_download_asset", ["x.pt"]], *base["backbone"][1:]]}
    (tmp_path / "layer.yaml").write_text(yaml.safe_dump(layer))
    # a whole model as a layer is built from a dict of its own yaml, activation included (a security
    # re-read ran code through it); TorchVision downloads weights and loads them through torch.hub
    nested = {**base, "backbone": [[-1, 1, "DetectionModel", [evil]], *base["backbone"][1:]]}
    (tmp_path / "nested.yaml").write_text(yaml.safe_dump(nested))
    hub = {**base, "backbone": [[-1, 1, "TorchVision", [64, "resnet18", "DEFAULT"]], *base["backbone"][1:]]}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(hub))
    for name, why in (
        ("evil.yaml", "activation"),
        ("layer.yaml", "attempt_download_asset"),
        ("nested.yaml", "DetectionModel"),
        ("hub.yaml", "TorchVision"),
    ):
        assert main(["info", f"yolo:{tmp_path / name}", "--input-shape", SMALL]) == 2
        err = _one_line(capsys)
        assert "evaluates code its yaml names" in err and why in err and "--trust-pickle" in err
    # slim with a data yaml builds the model in ultralytics' trainer: the same refusal (it was not asked)
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames:\n  0: a\n")
    for name in ("evil.yaml", "nested.yaml"):
        assert (
            main(["slim", f"yolo:{tmp_path / name}", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
        )
        err = _one_line(capsys)
        assert "evaluates code its yaml names" in err and "--trust-pickle" in err
        assert not (tmp_path / "r").exists()
    assert not marker.exists()
    relu = {**base, "activation": "nn.ReLU()"}
    (tmp_path / "relu.yaml").write_text(yaml.safe_dump(relu))
    assert main(["info", f"yolo:{tmp_path / 'relu.yaml'}", "--input-shape", SMALL, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] > 1e6
    assert main(["info", f"yolo:{tmp_path / 'evil.yaml'}", "--input-shape", SMALL, "--trust-pickle"]) == 0
    assert marker.exists()  # trusted: built as ultralytics builds it


def test_a_whole_pickled_yolo_module_loads_as_a_pickle_not_a_checkpoint(tmp_path: Path) -> None:
    """``torch.save(model)`` of an ultralytics model names ultralytics classes too, but it is a module,
    not a checkpoint dict: trusted, it loads as the module it is."""
    from edgeslim.models.registry import create_model
    from edgeslim.models.yolo import is_ultralytics_checkpoint

    whole = tmp_path / "whole.pt"
    torch.save(create_model(ModelSpec("yolo:yolov8n", 80, 3, (64, 64))), whole)
    assert not is_ultralytics_checkpoint(whole)
    loaded = load_model(whole, trust_pickle=True)
    assert loaded.kind == "pickle" and type(loaded.model).__name__ == "DetectionModel"
    with pytest.raises(EdgeslimError, match="trust"):
        load_model(whole)


def test_a_yolo_model_is_fed_pixels_over_255(cifar_zip: Path, tmp_path: Path) -> None:
    """Ultralytics preprocesses images as pixels / 255 (no mean/std): the model records that, so
    export's ORT check and INT8 calibration feed [0, 1] images, not the data set's normalization;
    a pruned checkpoint keeps it."""
    from edgeslim.export.validate import real_inputs
    from edgeslim.pipelines.prune import PruneRequest, run

    loaded = load_model_or_arch("yolo:yolov8n", trust_pickle=False, input_shape="3,32,32")
    assert loaded.meta["mean"] == [0.0] * 3 and loaded.meta["std"] == [1.0] * 3
    batch = real_inputs((3, 32, 32), data="imagefolder", data_dir=str(cifar_zip), meta=loaded.meta, n=8)
    assert batch is not None and float(batch.x.min()) >= 0.0 and float(batch.x.max()) <= 1.0
    assert float(batch.x.max()) > 0.5  # real images, scaled, not standardized
    assert (
        load_model_or_arch("vgg-small", trust_pickle=False, input_shape="3,32,32").meta == {}
    )  # others: their data set's
    run(PruneRequest(model="yolo:yolov8n", input_shape="3,64,64", output=tmp_path / "s.pt"))
    assert load_model(tmp_path / "s.pt").meta["std"] == [1.0] * 3


def test_int8_export_keeps_the_detectors_scores(cifar_zip: Path, tmp_path: Path, capsys) -> None:
    """A YOLO's output0 concatenates box coordinates (pixels) and class scores (0..1, here < 0.01:
    ultralytics' initial class bias): quantized after that concat, one INT8 scale rounded every score
    to 0 and ultralytics found no box in the INT8 ONNX. The head's decoding stays in float: the INT8
    scores follow FP32's, and no output channel is flattened."""
    import onnx
    import onnxruntime as ort

    from edgeslim.utils.onnx_graph import output_tail, output_tail_values

    onnx_path = tmp_path / "y.onnx"
    assert main(["export", "yolo:yolov8n", "--input-shape", SMALL, "--onnx", str(onnx_path), "--precision", "int8",
                 "--data", "imagefolder", "--data-dir", str(cifar_zip), "--calib-images", "16",
                 "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["ort_int8"]["flat_channels"] == 0 and not any("constant" in w for w in res["warnings"])
    int8 = Path(res["ort_int8"]["path"])
    proto = onnx.load(str(int8))
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert producer["output0"].op_type == "Concat"  # not a DequantizeLinear: the decoding is float
    tail = set(output_tail(onnx.load(str(onnx_path))))
    values = output_tail_values(onnx.load(str(onnx_path)))  # what TensorRT's calibrator path keeps FP32
    assert "output0" in values and not any("cv3.0.2" in v or "cv2.0.2" in v for v in values)
    assert {"Sigmoid", "Concat"} <= {
        n.op_type for n in onnx.load(str(onnx_path)).graph.node if n.name in tail
    }
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    ref, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
                for p in (onnx_path, int8))  # fmt: skip
    scores_ref, scores_got = ref[:, 4:], got[:, 4:]
    assert 0 < scores_ref.max() < 0.05 and scores_got.max() > 0.5 * scores_ref.max()
    assert np.abs(scores_got - scores_ref).max() < 0.2 * scores_ref.max()


def test_a_cut_off_best_pt_given_as_yolo_name_says_so(best_pt: Path, tmp_path: Path, capsys) -> None:
    """The first 5 kB of a best.pt as yolo:trunc.pt (a user trial: 'Invalid argument; free space or
    memory, or fix the permissions')."""
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(best_pt.read_bytes()[:5000])
    assert main(["info", f"yolo:{trunc}", "--trust-pickle"]) == 2
    err = _one_line(capsys)
    assert "truncated or corrupt" in err and "copy it again" in err


def test_an_input_size_off_the_stride_is_one_line(best_pt: Path, tmp_path: Path, capsys) -> None:
    """A YOLO's sides must be multiples of its largest stride (a user trial's export at 3,100,100 got
    'Sizes of tensors must match ... Expected size 8 but got size 7', and info at 3,16,16 was told
    to give 'the shape the model was built for'): the line names the rule and the nearest size."""
    assert main(["info", "yolo:yolov8n", "--input-shape", "3,16,16"]) == 2
    assert _one_line(capsys).endswith(
        "multiples of 32 (its largest stride), not 16x16; give --input-shape 3,32,32"
    )
    args = [
        "export",
        str(best_pt),
        "--trust-pickle",
        "--onnx",
        str(tmp_path / "x.onnx"),
        "--input-shape",
        "3,100,100",
    ]
    assert main(args) == 2
    assert "give --input-shape 3,96,96" in _one_line(capsys) and not (tmp_path / "x.onnx").exists()


def test_a_first_yolo_command_on_a_machine_prints_only_edgeslims_lines(tmp_path):
    """The first ``yolo:`` command on a fresh machine (no ultralytics settings file yet) began with
    ultralytics' three-line "Creating new Ultralytics Settings ..." notice, before a refusal's one
    line too; the settings file is still written, the notice is left out."""
    env = _yolo_env(tmp_path)
    # (there is no yolov8q)
    cmd = [sys.executable, "-m", "edgeslim", "info", "yolo:yolov8q.yaml", "--input-shape", SMALL]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error:") and "yolov8q.yaml" in out.stderr
    assert (tmp_path / "Ultralytics" / "settings.json").is_file()


def test_the_start_checkpoint_is_written_beside_a_link_never_through_it(tmp_path: Path) -> None:
    """A security probe: a start.pt link in the output folder made ultralytics' own save overwrite the
    file it pointed at; start.pt is now written to a temporary file and renamed over the name."""
    from types import SimpleNamespace

    import torch

    from edgeslim.models.yolo import ultralytics_yolo
    from edgeslim.pipelines.slim_yolo import _start_checkpoint

    sd = tmp_path / "sd.pt"
    torch.save(ultralytics_yolo("yolov8n.yaml").model.state_dict(), sd)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = tmp_path / "run"
    out.mkdir()
    (out / "start.pt").symlink_to(victim)
    req = SimpleNamespace(trust_pickle=False, weights=str(sd), num_classes=None)
    start = Path(_start_checkpoint(req, "yolov8n.yaml", out))
    assert victim.read_text() == "mine" and not start.is_symlink() and start.stat().st_size > 1_000_000


def test_a_model_yaml_ultralytics_cannot_build_is_one_error(tmp_path: Path, capsys) -> None:
    """A security probe: a malformed model yaml (a two-item layer row, a syntax error) ended as an
    internal error (exit 1), the short row even reported as code the yaml names."""
    from edgeslim.cli import main

    short = tmp_path / "short.yaml"
    short.write_text(
        "nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1]\nhead:\n  - [-1, 1, Detect, [nc]]\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("nc: [\n")
    for path in (short, broken):
        assert main(["info", f"yolo:{path}"]) == 2
        err = capsys.readouterr().err
        assert f"ultralytics cannot build a model from {path}" in err and "evaluates code" not in err


def test_prune_never_writes_over_the_file_its_result_rebuilds_from(
    best_pt: Path, tmp_path: Path, capsys
) -> None:
    """Review of a YOLO user's whole chain: ``prune best.pt -o best.pt --force`` (and ``prune slim.pt -o
    base.pt --force``, slim.pt cut from base.pt) wrote a slim checkpoint that rebuilds its architecture from
    the file it had just replaced: exit 0, and both files unloadable. Refused in one line, nothing written;
    a slim checkpoint over itself (the result does not depend on it) is still fine."""
    import shutil

    own, slim = tmp_path / "best.pt", tmp_path / "slim.pt"
    shutil.copy(best_pt, own)
    args = ["--trust-pickle", "--input-shape", SMALL, "--force"]
    assert main(["prune", str(own), *args, "-o", str(own)]) == 2
    err = _one_line(capsys)
    assert f"--output {own} is also the file the result rebuilds its architecture from" in err, err
    assert own.read_bytes() == best_pt.read_bytes()
    assert main(["prune", str(own), *args, "-o", str(slim)]) == 0
    capsys.readouterr()
    assert main(["prune", str(slim), *args, "-o", str(own)]) == 2
    assert "rebuilds its architecture from" in _one_line(capsys)
    assert own.read_bytes() == best_pt.read_bytes()
    assert main(["prune", str(slim), *args, "-o", str(slim)]) == 0
    assert load_model(slim, trust_pickle=True).spec.arch == f"yolo:{own.resolve()}"


#: ultralytics' own exporter on a slim model edgeslim saved (loaded through its recipe): the ONNX it writes
#: (its C2f/C3k2 blocks switched to forward_split) against the slim model's own predictions
UL_EXPORT = """
import json, sys
import numpy as np, onnxruntime as ort, torch
from ultralytics import YOLO
from edgeslim.checkpoint import load_model
out = {}
for arch, path in zip(sys.argv[1::2], sys.argv[2::2]):
    slim = load_model(path, trust_pickle=True).model.float().eval()
    y = YOLO(f"{arch}.yaml")
    y.model = slim
    y.save(path + ".ul.pt")
    onnx_path = YOLO(path + ".ul.pt").export(format="onnx", imgsz=64, simplify=False, verbose=False)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = slim(x)[0].numpy()
    out[arch] = float(np.abs(got - ref).max()) if got.shape == ref.shape else str(got.shape)
print(json.dumps(out))
"""


def test_slim_c2f_blocks_keep_their_new_width_for_ultralytics_export(tmp_path: Path) -> None:
    """Review of a YOLO user's whole chain: a pruned C2f / C3k2 kept its dense hidden width ``c``, which
    ultralytics' ``forward_split`` splits at, so ultralytics' own exporter (``YOLO(slim).export()``, the
    ``yolo export format=engine`` route to a Jetson) failed on every slim YOLO. Surgery and a recipe applied
    on load now set it from the resized layers: forward_split and ultralytics' ONNX give the slim outputs."""
    import copy

    from edgeslim.models.yolo import deployed_output
    from edgeslim.sparsity.subgradient import threshold_prune
    from edgeslim.surgery import prune_with_report

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    saved = []
    for arch in ("yolov8n", "yolo11n"):
        loaded = load_model_or_arch(f"yolo:{arch}", trust_pickle=False, input_shape=SMALL)
        model = loaded.model.eval()
        with torch.no_grad():  # scales spread as in a trained network, then 40% of them zeroed
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.05, 1.5, generator=torch.Generator().manual_seed(m.num_features))
        threshold_prune(model, 0.4, example_input=torch.zeros(1, 3, 64, 64), round_to=8)
        res = prune_with_report(model, torch.zeros(1, 3, 64, 64), outputs=deployed_output(model))
        slim = res.model.eval()
        widths = {
            n: (m.c, m.cv1.conv.out_channels) for n, m in slim.named_modules() if hasattr(m, "forward_split")
        }
        assert all(c * 2 == out for c, out in widths.values()), (arch, widths)
        assert any(
            c != dense.c for (c, _), dense in zip(widths.values(), [model.get_submodule(n) for n in widths])
        )
        split = copy.deepcopy(slim)
        for m in split.modules():
            if hasattr(m, "forward_split"):
                m.forward = m.forward_split  # (as ultralytics' exporter does)
        with torch.no_grad():
            torch.testing.assert_close(split(x)[0], slim(x)[0])
        path = tmp_path / f"{arch}_slim.pt"
        save_model(path, slim, loaded.spec, recipe=res.recipe)
        again = load_model(path).model
        assert {n: (m.c, m.cv1.conv.out_channels) for n, m in again.named_modules() if n in widths} == widths
        saved += [arch, str(path)]
    r = subprocess.run([sys.executable, "-c", UL_EXPORT, *saved], capture_output=True, text=True,
                       env=_yolo_env(tmp_path), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    diffs = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(isinstance(d, float) and d < 1e-3 for d in diffs.values()), diffs


def test_a_bare_best_pt_records_the_input_shape_surgery_used(best_pt: Path, tmp_path: Path) -> None:
    """Review of a YOLO user's whole chain: ``prune best.pt --input-shape 3,64,96`` recorded best.pt's own
    640x640 in the slim checkpoint (what export and bench then use), where ``prune yolo:best.pt`` recorded
    the shape surgery ran at. Both forms record it now."""
    specs = []
    for model in (str(best_pt), f"yolo:{best_pt}"):
        out = tmp_path / f"slim{len(specs)}.pt"
        assert main(["prune", model, "--trust-pickle", "--input-shape", "3,64,96", "-o", str(out)]) == 0
        specs.append(load_model(out, trust_pickle=True).spec)
    assert specs[0] == specs[1] and specs[0].input_shape == (3, 64, 96), specs


def test_a_slim_yolo_keeps_its_class_names_when_its_base_file_is_replaced(
    best_pt: Path, tmp_path: Path, caplog
) -> None:
    """Review of a YOLO user's whole chain: a slim YOLO checkpoint took its class names from whatever file
    sat at the path it rebuilds from; a same-architecture best.pt with other names copied there went
    silently into the slim model and its exports. The names are recorded in the slim checkpoint and used;
    a replaced base file is warned about in one line."""
    import shutil

    base, slim = tmp_path / "base.pt", tmp_path / "slim.pt"
    shutil.copy(best_pt, base)
    assert main(["prune", str(base), "--trust-pickle", "--input-shape", SMALL, "-o", str(slim)]) == 0
    ckpt = torch.load(base, weights_only=False)
    ckpt["model"].names = {i: f"other{i}" for i in range(80)}  # another training of the same yaml
    torch.save(ckpt, base)
    with caplog.at_level("WARNING"):
        model = load_model(slim, trust_pickle=True).model
    assert model.names[0] == "helmet" and model.names[1] == "part1"
    lines = [r.getMessage() for r in caplog.records if "other class names" in r.getMessage()]
    assert len(lines) == 1 and "'other0', recorded 'helmet'" in lines[0], lines


def test_an_input_of_other_channels_is_refused_alone(best_pt: Path, tmp_path: Path, capsys, caplog) -> None:
    """Review of a YOLO user's whole chain: ``export slim.pt --input-shape 1,64,64`` of a YOLO whose
    checkpoint records its photos printed "the model records no mean/std for 1 channels" (reading the
    photos for it) before the real refusal. The channel count is refused first, in one line alone."""
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i}.png")
    slim = tmp_path / "slim.pt"
    assert main(["prune", str(best_pt), "--trust-pickle", "--input-shape", SMALL, "--data", "images",
                 "--data-dir", str(photos), "-o", str(slim)]) == 0  # fmt: skip
    capsys.readouterr()
    onnx_path = tmp_path / "x.onnx"
    assert (
        main(["export", str(slim), "--trust-pickle", "--input-shape", "1,64,64", "--onnx", str(onnx_path)])
        == 2
    )
    assert _one_line(capsys).endswith("takes 3-channel images (its first conv's input), not 1; give --input-shape "
                                      "3,64,64")  # fmt: skip
    assert not onnx_path.exists()
    assert not [r.getMessage() for r in caplog.records if "mean/std" in r.getMessage()]  # (no photo was read)


@pytest.mark.parametrize(
    "recorded,differ",
    [(["a", "b"], (2, "'c', recorded None")), (["a", "b", "c", "d"], (3, "None, recorded 'd'")),
     (["a", "x", "c"], (1, "'b', recorded 'x'"))],
)  # fmt: skip
def test_recorded_names_a_prefix_of_the_rebuilt_ones_are_used_with_one_warning(
    recorded, differ, caplog
) -> None:
    """The new-code review (also check): use_recorded_names raised StopIteration where the recorded
    class names are a prefix of those of the file the model is rebuilt from (the search for the first
    difference stopped at the shorter list). Any difference is now named in one warning, the recorded
    names used."""
    from ultralytics.nn.tasks import DetectionModel

    from edgeslim.models.yolo import use_recorded_names

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.names = {0: "a", 1: "b", 2: "c"}
    with caplog.at_level("WARNING", logger="edgeslim.models.yolo"):
        use_recorded_names(model, {"names": recorded}, "slim.pt")
    assert model.names == dict(enumerate(recorded))
    assert [
        r.getMessage().split(": it was")[0] for r in caplog.records if r.name == "edgeslim.models.yolo"
    ] == [
        "slim.pt: the file it rebuilds its architecture from now holds a model with other class names "
        f"(class {differ[0]}: {differ[1]})"
    ]


#: ultralytics itself on the file ``export --ultralytics`` wrote: what it loads (parameters, names, task, the
#: stored precision), its predictions, and its own ONNX export against the slim model's outputs
UL_LOAD = """
import json, sys
import numpy as np, onnxruntime as ort, torch
from PIL import Image
from ultralytics import YOLO
path, img = sys.argv[1:3]
stored = torch.load(path, weights_only=False)["model"]
y = YOLO(path)
Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype("uint8")).save(img)
boxes = y.predict(img, imgsz=64, conf=0.0, max_det=5, verbose=False)[0].boxes.data
x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ref = y.model.float().eval()(x)[0].numpy()
onnx_path = y.export(format="onnx", imgsz=64, simplify=False, verbose=False)
sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
print(json.dumps({"params": sum(p.numel() for p in y.model.parameters()), "names": y.names, "task": y.task,
                  "dtype": str(next(stored.parameters()).dtype), "boxes": len(boxes),
                  "onnx_diff": float(np.abs(got - ref).max()) if got.shape == ref.shape else str(got.shape)}))
"""


def test_export_writes_a_slim_yolo_ultralytics_loads(best_pt: Path, tmp_path: Path, capsys) -> None:
    """Review of a YOLO user's Jetson route: the slim .pt prune and slim write is an edgeslim checkpoint, which
    ``YOLO(path)`` refused, so ``yolo val/predict/export format=engine`` could not take a slim YOLO. ``export
    --ultralytics`` writes one ultralytics loads (without the dense file it was cut from), in half precision as
    ultralytics stores its own: the slim parameters, the class names, and ultralytics' own ONNX export runs."""
    import shutil

    from edgeslim.models.yolo import save_ultralytics_checkpoint

    own, slim, ul = tmp_path / "best.pt", tmp_path / "slim.pt", tmp_path / "slim.ul.pt"
    shutil.copy(best_pt, own)
    assert (
        main(
            ["prune", str(own), "--trust-pickle", "--input-shape", SMALL, "--round-to", "1", "-o", str(slim)]
        )
        == 0
    )
    assert (
        f"--ultralytics {tmp_path / 'slim.ul.pt'} for a file ultralytics' YOLO() loads"
        in capsys.readouterr().err
    )
    args = ["export", str(slim), "--trust-pickle", "--no-validate", "--ultralytics", str(ul)]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    params = sum(p.numel() for p in load_model(slim, trust_pickle=True).model.parameters())
    assert res["ultralytics"]["path"] == str(ul) and res["ultralytics"]["params"] == params
    assert ul.stat().st_size < 0.6 * slim.stat().st_size  # FP16 against the slim checkpoint's FP32
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # no overwrite without it
    own.unlink()  # it needs no other file
    r = subprocess.run([sys.executable, "-c", UL_LOAD, str(ul), str(tmp_path / "i.jpg")], capture_output=True,
                       text=True, env=_yolo_env(tmp_path), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["params"] == params and got["task"] == "detect" and got["names"]["0"] == "helmet"
    assert got["dtype"] == "torch.float16" and got["boxes"] == 5
    assert isinstance(got["onnx_diff"], float) and got["onnx_diff"] < 1e-3, got
    with pytest.raises(EdgeslimError, match="ultralytics network"):
        save_ultralytics_checkpoint(torch.nn.Conv2d(3, 8, 3), tmp_path / "conv.pt")
    assert (
        main(["export", "tv:resnet18", "--input-shape", "3,32,32", "--ultralytics", str(tmp_path / "r.pt")])
        == 2
    )
    assert "--ultralytics" in _one_line(capsys)


def test_the_ultralytics_hint_of_a_classifier_gives_an_image_folder(tmp_path: Path, capsys) -> None:
    """export --ultralytics of a -cls model printed 'yolo val model=cls.ul.pt data=DATA.yaml'; ultralytics'
    classify val reads an image folder (train/ and val/ folders of class folders), not a data yaml."""
    ul = tmp_path / "cls.ul.pt"
    args = ["export", "yolo:yolov8n-cls", "--input-shape", SMALL, "--onnx", str(tmp_path / "cls.onnx")]
    assert main([*args, "--no-validate", "--ultralytics", str(ul)]) == 0
    hint = next(line for line in capsys.readouterr().err.splitlines() if "yolo val" in line)
    assert f"yolo val model={ul} data=IMAGE_DIR imgsz=64 (IMAGE_DIR: train/ and val/ folders" in hint
    assert "DATA.yaml" not in hint


def test_an_fp16_overflow_is_refused_before_the_export_with_advice_that_holds(tmp_path: Path, capsys) -> None:
    """export --ultralytics of a model with a weight beyond FP16's range said 'deploy its ONNX export instead',
    but the ONNX had been discarded with it; the export is refused before anything is made, saying to export
    without --ultralytics."""
    from edgeslim.models.yolo import save_ultralytics_checkpoint

    loaded = load_model_or_arch("yolo:yolov8n", trust_pickle=False)
    with torch.no_grad():
        loaded.model.model[2].cv1.bn.running_var[0] = 1.0e6
    big = save_model(tmp_path / "big.pt", loaded.model, loaded.spec)
    onnx, ul = tmp_path / "big.onnx", tmp_path / "big.ul.pt"
    args = ["export", str(big), "--input-shape", SMALL, "--onnx", str(onnx), "--ultralytics", str(ul)]
    assert main([*args, "--no-validate"]) == 2
    err = _one_line(capsys)
    assert "beyond FP16's range" in err and "export without --ultralytics and deploy the ONNX" in err, err
    assert not onnx.exists() and not ul.exists()
    with pytest.raises(EdgeslimError, match=r"FP16's range.*deploy the model's ONNX export \(float32\)"):
        save_ultralytics_checkpoint(loaded.model, ul)
    assert not ul.exists()


#: save_ultralytics_checkpoint given the YOLO object, as a Python user holds it
UL_SAVE_YOLO = """
import sys
from ultralytics import YOLO
from edgeslim.models.yolo import save_ultralytics_checkpoint
y = YOLO("yolov8n.yaml")
save_ultralytics_checkpoint(y, sys.argv[1])
print(sum(p.numel() for p in YOLO(sys.argv[1]).model.parameters()) == sum(p.numel() for p in y.model.parameters()))
"""


def test_save_ultralytics_checkpoint_takes_the_yolo_object(tmp_path: Path) -> None:
    """Given YOLO('best.pt') it refused with 'holds an ultralytics model (a YOLO), not a YOLO; give a YOLO';
    a YOLO object is saved as the network it holds (its .model)."""
    path = tmp_path / "wrap.ul.pt"
    r = subprocess.run([sys.executable, "-c", UL_SAVE_YOLO, str(path)], capture_output=True, text=True,
                       env=_yolo_env(tmp_path), timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "True"


def test_export_refuses_to_write_over_the_file_the_checkpoint_rebuilds_from(
    best_pt: Path, tmp_path: Path, capsys
) -> None:
    """export s2.pt --ultralytics b2.pt --force wrote over b2.pt, the file s2.pt rebuilds from: s2.pt no
    longer loaded. Refused whatever --force says, as prune -o b2.pt --force is."""
    import shutil

    own, slim = tmp_path / "b2.pt", tmp_path / "s2.pt"
    shutil.copy(best_pt, own)
    prune = ["prune", str(own), "--trust-pickle", "--input-shape", SMALL, "--round-to", "1", "-o", str(slim)]
    assert main(prune) == 0
    capsys.readouterr()
    before = own.read_bytes()
    args = ["export", str(slim), "--trust-pickle", "--onnx", str(tmp_path / "s2.onnx"), "--no-validate"]
    assert main([*args, "--ultralytics", str(own), "--force"]) == 2
    err = _one_line(capsys)
    assert f"--ultralytics {own} is also the file the model rebuilds its architecture from" in err, err
    assert own.read_bytes() == before and not (tmp_path / "s2.onnx").exists()
    assert load_model(slim, trust_pickle=True).model is not None


def test_a_slim_checkpoint_whose_source_file_changed_names_that_file(best_pt: Path, tmp_path: Path) -> None:
    """With the file s2.pt rebuilds from replaced by another model (its own ultralytics export), loading s2.pt
    said 'the model is already pruned ... apply the recipe to a dense model', though the user applied no
    recipe; it names the file it rebuilds from as the cause again."""
    import shutil

    own, slim, ul = tmp_path / "b2.pt", tmp_path / "s2.pt", tmp_path / "s2.ul.pt"
    shutil.copy(best_pt, own)
    prune = ["prune", str(own), "--trust-pickle", "--input-shape", SMALL, "--round-to", "1", "-o", str(slim)]
    assert main(prune) == 0
    args = ["export", str(slim), "--trust-pickle", "--onnx", str(tmp_path / "s2.onnx"), "--no-validate"]
    assert main([*args, "--ultralytics", str(ul)]) == 0
    shutil.copy(ul, own)  # (the slim network where the dense one was)
    with pytest.raises(EdgeslimError) as e:
        load_model(slim, trust_pickle=True)
    msg = str(e.value)
    assert f"{own.resolve()}, the file it rebuilds its architecture from, now holds another model" in msg, msg
    assert "layer 'model.0.conv' has widths" in msg and "already pruned" not in msg and "\n" not in msg


#: docs/export.md's trainer that keeps the loaded network, run for one epoch on 4 random 64x64 images
UL_TRAIN_KEPT = """
import json, sys
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from ultralytics import YOLO
path, root, block = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
for split in ("train", "val"):
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(4):
        img = (rng.random((64, 64, 3)) * 255).astype("uint8")
        img[16:48, 16:48] = 255
        Image.fromarray(img).save(root / "images" / split / f"{i}.jpg")
        (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\\n")
names = "".join(f"\\n  {i}: part{i}" for i in range(80))
(root / "data.yaml").write_text(f"path: {root}\\ntrain: images/train\\nval: images/val\\nnames:{names}\\n")
exec(block.split('YOLO("slim.ul.pt").train(')[0])  # (the doc's imports and trainer class)
y = YOLO(path)
before = {k: v.clone() for k, v in y.model.state_dict().items() if v.is_floating_point()}
y.train(data=str(root / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", project=str(root),
        name="t", plots=False, amp=False, val=False, trainer=KeepModel)
last = YOLO(root / "t" / "weights" / "last.pt").model
sd = last.state_dict()
print(json.dumps({"params": sum(p.numel() for p in last.parameters()),
                  "trained": sum(not torch.equal(v.float(), sd[k].float()) for k, v in before.items())}))
"""


def test_the_ultralytics_file_is_said_to_be_for_val_predict_export_and_the_doc_trainer_keeps_it_slim(
    best_pt: Path, tmp_path: Path, capsys
) -> None:
    """The file export --ultralytics wrote trained in ultralytics as the dense network (its trainer rebuilds
    from the yaml: 'Transferred 77/355 items'), while the closing line said 'ultralytics takes it as its own'.
    The line says it is for val/predict/export, not yolo train; docs/export.md's trainer whose get_model
    returns the loaded network trains it slim (checked here for one epoch)."""
    import re
    import shutil

    own, slim, ul = tmp_path / "best.pt", tmp_path / "slim.pt", tmp_path / "slim.ul.pt"
    shutil.copy(best_pt, own)
    prune = ["prune", str(own), "--trust-pickle", "--input-shape", SMALL, "--round-to", "1", "-o", str(slim)]
    assert main(prune) == 0
    capsys.readouterr()
    args = ["export", str(slim), "--trust-pickle", "--onnx", str(tmp_path / "s.onnx"), "--no-validate"]
    assert main([*args, "--ultralytics", str(ul)]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "yolo val" in x)
    assert line.startswith(f"{ul} is for ultralytics' val, predict and export: yolo val model={ul}"), line
    assert (
        "not for yolo train, which rebuilds the dense network from its yaml (to fine-tune: docs/export.md)"
        in line
    )
    doc = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    block = next(b for b in re.findall(r"^```python\n(.*?)^```", doc, flags=re.S | re.M) if "KeepModel" in b)
    r = subprocess.run([sys.executable, "-c", UL_TRAIN_KEPT, str(ul), str(tmp_path / "ft"), block],
                       capture_output=True, text=True, env=_yolo_env(tmp_path), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    params = sum(p.numel() for p in load_model(slim, trust_pickle=True).model.parameters())
    assert got["params"] == params and got["trained"] > 100, got


def _scores_informative(model: torch.nn.Module, seed: int = 0) -> None:
    """A review's case: BN scales and shifts spread as in a trained network, the class convs' prior bias 0
    (scores that vary, not all near 0), then 30% of each BN's scales zeroed with its shift kept (constants
    surgery folds, approximately into zero-padded convs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.05, 1.5, generator=gen)
                m.bias.normal_(0, 0.3, generator=gen)
        for s in model.model[-1].cv3:
            s[-1].bias.zero_()
            s[-1].weight.mul_(10)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight[m.weight.abs().argsort()[: int(0.3 * m.num_features)]] = 0


def test_surgery_judges_a_yolos_scores_on_their_own_scale() -> None:
    """Review: surgery scaled a YOLO's output0 [N, 4+nc, anchors] as one tensor, boxes in pixels beside
    sigmoid scores, so a score error of 0.022 read as "0.2% of the output's scale" and the exactness bound
    was hundreds of times looser on the scores. The check now compares boxes and scores (and a head's
    extra rows) each on its own scale, and says which part moved most."""
    from edgeslim.models.yolo import deployed_output
    from edgeslim.surgery import prune_with_report
    from edgeslim.surgery.prune import approximate_fold_line

    model = load_model_or_arch("yolo:yolov8n", trust_pickle=False, input_shape="3,128,128").model.eval()
    _scores_informative(model)
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    res = prune_with_report(
        model, torch.zeros(1, 3, 128, 128), calib_inputs=x, outputs=deployed_output(model)
    )
    with torch.no_grad():
        a, b = model(x)[0], res.model.eval()(x)[0]
    scores = float((a[:, 4:] - b[:, 4:]).abs().max()) / max(1.0, float(a[:, 4:].abs().max()))
    boxes = float((a[:, :4] - b[:, :4]).abs().max()) / max(1.0, float(a[:, :4].abs().max()))
    whole = float((a - b).abs().max()) / max(1.0, float(a.abs().max()))
    rep = res.report
    assert scores > 3 * whole and rep["max_scaled_diff"] > FOLD_WARN_SCALED, (scores, boxes, whole)
    part = "scores" if scores > boxes else "boxes"
    assert rep["max_scaled_part"] == part and rep["max_scaled_diff"] == pytest.approx(
        max(scores, boxes), rel=1e-4
    )
    assert f"the {part} by " in approximate_fold_line(rep)


def test_export_check_holds_a_yolos_scores_to_their_own_bound(tmp_path: Path) -> None:
    """Review: export's ONNX Runtime check bounded a YOLO's output0 by 1e-4 + 1e-5 x its largest value, a box
    coordinate in pixels, so the scores in [0, 1] passed errors of several times their own bound. An ONNX
    whose scores are off (its class bias moved) against a model whose boxes are the same now fails."""
    import copy

    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.export.validate import random_inputs, validate_onnx
    from edgeslim.models.yolo import prepare_for_export

    shape = (3, 128, 128)
    model = load_model_or_arch("yolo:yolov8n", trust_pickle=False, input_shape="3,128,128").model.eval()
    _scores_informative(model)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for s in moved.model[-1].cv3:
            s[-1].bias.add_(0.003)  # scores off by up to 0.25 x 0.003
    path = tmp_path / "moved.onnx"
    export_onnx(moved, path, shape, validate=False, simplify=False, dynamic_batch=True)
    batch = random_inputs(shape, n=4, pixels=True)
    ref = prepare_for_export(model, shape)
    with torch.no_grad():
        a, b = ref(batch.x), prepare_for_export(moved, shape)(batch.x)
    off, largest = float((a - b).abs().max()), float(a.abs().max())
    assert float((a[:, :4] - b[:, :4]).abs().max()) < 1e-4  # the boxes are the same
    assert 2e-4 < off < 1e-4 + 1e-5 * largest, (off, largest)  # within the old one-tensor bound
    rep = validate_onnx(ref, path.read_bytes(), batch)
    assert not rep.passed and rep.compared == "scores of output0", rep
    same = tmp_path / "same.onnx"
    export_onnx(model, same, shape, validate=False, simplify=False, dynamic_batch=True)
    assert validate_onnx(ref, same.read_bytes(), batch).passed


def test_bench_tells_two_yolo_networks_apart_by_their_yaml(tmp_path: Path) -> None:
    """Review: a YOLO export's architecture is the path of the checkpoint it was loaded from, which bench's
    different-network check skips, so a slim YOLO11n against a dense YOLOv8n baseline gave a speedup
    without a word. Its export records the model yaml's name, which the check compares."""
    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.pipelines.bench import other_network

    paths = {}
    for arch, name in (("yolov8n", "v8"), ("yolo11n", "y11"), ("yolov8n", "v8b")):
        model = load_model_or_arch(f"yolo:{arch}", trust_pickle=False, input_shape=SMALL).model
        paths[name] = tmp_path / f"{name}.onnx"
        export_onnx(
            model, paths[name], (3, 64, 64), validate=False, simplify=False, arch=f"yolo:{tmp_path / name}.pt"
        )
    said = other_network(str(paths["y11"]), str(paths["v8"]))
    assert "yolo11n.yaml network" in said and "yolov8n.yaml one" in said, said
    assert other_network(str(paths["v8b"]), str(paths["v8"])) == ""  # one network from two files
