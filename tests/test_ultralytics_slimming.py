"""Proximal slimming inside ultralytics' own trainer: ``YOLO.train`` with
:class:`edgeslim.train.ultralytics.UltralyticsSlimming` attached writes checkpoints with exact zero BN
scales, which ``edgeslim prune`` removes exactly.

The detection data are real images: CIFAR-10 test photos pasted two per 64x64 canvas, each box
labelled with its photo's class (the YOLO txt format ultralytics reads). Training runs in a fresh
process (importing ``ultralytics.YOLO`` replaces ``PIL.Image.open`` for the other tests)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("ultralytics")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

from edgeslim.cli import main  # noqa: E402
from edgeslim.errors import EdgeslimError  # noqa: E402
from edgeslim.models.yolo import deployed_output, load_yolo_checkpoint  # noqa: E402
from edgeslim.train.ultralytics import UltralyticsSlimming  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()

#: YOLOv8n from its yaml with BN scales spread as in a trained network (freshly built ones are all
#: 1.0 and would cross zero together), slimmed for 4 epochs by ultralytics' own trainer
TRAIN = """
import json, os, sys, logging
import torch
from edgeslim.models.yolo import _tasks
_tasks("the test")
from ultralytics import YOLO
from edgeslim.train.ultralytics import UltralyticsSlimming
data, project = sys.argv[1:3]
torch.manual_seed(0)
yolo = YOLO("yolov8n.yaml")
with torch.no_grad():
    for m in yolo.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.05, 1.5)
yolo.save(os.path.join(project, "start.pt"))  # trained from a checkpoint, as users do (a yaml-built
yolo = YOLO(os.path.join(project, "start.pt"))  # model would be re-initialised by the trainer)
slimming = UltralyticsSlimming(shrink=1.0).attach(yolo)
yolo.train(data=data, epochs=4, imgsz=64, batch=16, nbs=16, device="cpu", workers=0, plots=False,
           amp=False, project=project, name="slim", exist_ok=True, verbose=False, seed=0, deterministic=True)
print("SUMMARY " + json.dumps(slimming.summary()))
"""


def _mosaics(root: Path, n_train: int = 64, n_val: int = 16, size: int = 64) -> Path:
    """Two CIFAR-10 photos (20-32 px) per grey canvas, one in each half; labels in YOLO format."""
    from PIL import Image

    rng = random.Random(0)
    with zipfile.ZipFile(CIFAR) as zf:
        names = [n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg")]
        for split, n in (("train", n_train), ("val", n_val)):
            (root / "images" / split).mkdir(parents=True)
            (root / "labels" / split).mkdir(parents=True)
            for i in range(n):
                canvas = Image.new("RGB", (size, size), (114, 114, 114))
                lines = []
                for half in range(2):
                    name = rng.choice(names)
                    s = rng.randint(20, 32)
                    photo = Image.open(io.BytesIO(zf.read(name))).convert("RGB").resize((s, s))
                    x0, y0 = half * size // 2 + rng.randint(0, size // 2 - s), rng.randint(0, size - s)
                    canvas.paste(photo, (x0, y0))
                    cls = CLASSES.index(name.split("/")[1])
                    lines.append(
                        f"{cls} {(x0 + s / 2) / size:.6f} {(y0 + s / 2) / size:.6f} {s / size:.6f} {s / size:.6f}"
                    )
                canvas.save(root / "images" / split / f"{i:04d}.jpg", quality=95)
                (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    yaml = root / "data.yaml"
    names_yaml = "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names_yaml}")
    return yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} is not there (../shared beside the checkout)")
    root = tmp_path_factory.mktemp("yolo_slim")
    data = _mosaics(root / "data")
    (root / "runs").mkdir()
    env = {**os.environ, "YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "true", "YOLO_CONFIG_DIR": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, str(data), str(root / "runs")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("SUMMARY "))
    return root / "runs" / "slim" / "weights", json.loads(line[len("SUMMARY ") :])


@pytest.fixture(scope="module")
def root(trained) -> Path:
    """The fixture's folder: ``data/data.yaml`` and ``runs/start.pt`` (YOLOv8n, trained-like BN scales)."""
    return trained[0].parents[2]


def _bn_zeros(model: torch.nn.Module) -> list[int]:
    return [int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_ultralytics_training_writes_exact_zeros_that_prune_removes(trained, tmp_path, capsys) -> None:
    weights, summary = trained
    epochs = summary["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    steps = [e["optimizer_steps"] for e in epochs]  # the run's steps to the end of each epoch
    assert 0 < steps[0] and all(b - a == steps[0] for a, b in zip(steps, steps[1:])), steps
    zeros = [e["zero"] for e in epochs]
    total = epochs[-1]["total"]
    assert zeros == sorted(zeros) and 0 < zeros[-1] < total, zeros  # sparser each epoch, never empty
    # the saved EMA (what ultralytics validated and last.pt holds) has the prox's zeros, layer for
    # layer those of the live model after finalize (emptied units keep one channel in both)
    last = load_yolo_checkpoint(str(weights / "last.pt"), trust_pickle=True)
    assert sum(_bn_zeros(last)) == zeros[-1] == summary["final"]["zeroed"]
    saved = {
        n: int((m.weight == 0).sum()) for n, m in last.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
    }
    live = {r["name"]: r["channels"] - r["kept"] for r in summary["final"]["layers"]}
    assert saved == live
    assert all(r["kept"] > 0 for r in summary["final"]["layers"])
    # scale and shift zero together: a removed channel outputs exactly 0, nothing is folded
    slim = tmp_path / "slim.pt"
    rc = main(["prune", f"yolo:{weights / 'last.pt'}", "--trust-pickle", "-o", str(slim), "--round-to", "1",
               "--input-shape", "3,64,64", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["exact"] and report["folded_biases"] == [] and report["max_abs_diff"] < 1e-4
    # coupled channels are penalised together, so the zeros come in removable groups: surgery cuts
    # every zero channel (no "zero-scale channels kept" for a nonzero partner)
    assert report["zero_kept"]["coupled_with_nonzero"] == 0 and report["removed_channels"] > 0


def test_bad_settings_are_one_line() -> None:
    for kwargs, needle in (
        ({"shrink": 1.0, "lam": 0.1}, "either shrink"),
        ({"shrink": None}, "either shrink"),
        ({"shrink": -1.0}, "shrink must be > 0"),
        ({"warmup": "150%"}, "share of training below 100%"),
        ({"warmup": "-1"}, "number of epochs >= 0"),
        ({"warmup": "60%", "recovery": "50%"}, "leave steps to sparsify"),
    ):
        with pytest.raises(EdgeslimError, match=needle):
            UltralyticsSlimming(**kwargs)
    with pytest.raises(EdgeslimError, match="ultralytics YOLO model"):
        UltralyticsSlimming().attach(torch.nn.Conv2d(1, 1, 1))


def test_slim_cli_trains_a_yolo_in_ultralytics_and_prunes_it(root: Path, tmp_path: Path) -> None:
    """``edgeslim slim yolo:best.pt --data DATA.yaml``: ultralytics trains, edgeslim slims and cuts;
    with --json, stdout is the report alone (ultralytics' progress goes to stderr)."""
    out = tmp_path / "run"
    env = {**os.environ, "YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "true", "YOLO_CONFIG_DIR": str(tmp_path),
           "EDGESLIM_NO_PROGRESS": "1"}  # fmt: skip
    args = ["slim", f"yolo:{root / 'runs' / 'start.pt'}", "--trust-pickle", "--data", str(root / "data" / "data.yaml"),
            "--epochs", "2", "--batch-size", "16", "--imgsz", "64", "--device", "cpu", "--profile", "jetson-orin-nano-8gb",
            "--out", str(out), "--json"]  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["kind"] == "ultralytics" and report["imgsz"] == 64
    # what the zeros buy on the device, predicted (a trial: 71% fewer MACs, 1.08x, nothing said)
    pl = report["predicted_latency"]
    assert pl["profile"] == "jetson-orin-nano-8gb" and 0 < pl["slim_ms"] <= pl["dense_ms"], pl
    # start.pt is YOLOv8n as its yaml builds it (80 classes), the data has 10: ultralytics swapped the class
    # layers, which the report says
    assert report["start"] == "checkpoint" and report["classes"]["model"] == 80
    assert report["classes"]["data"] == len(CLASSES) and report["classes"]["model_names"] is None
    assert [w for w in report["warnings"] if "classes" in w or "random" in w] == [
        f"the data yaml has {len(CLASSES)} classes, the model 80; {', '.join(CLASSES[:6])} and 4 more start from "
        "untrained class rows; give a data yaml with the model's classes, in its order, to slim the model as trained"
    ]
    zeros = [e["zero"] for e in report["slimming"]["epochs"]]
    assert len(zeros) == 2 and 0 < zeros[0] <= zeros[1] < report["slimming"]["total"], zeros
    assert "metrics/mAP50-95(B)" in report["metrics"]["slim"] and report["metrics"]["before"] is not None
    sg = report["surgery"]
    assert sg["exact"] and sg["removed_channels"] > 0 and sg["macs_after"] < sg["macs_before"]
    assert sg["max_abs_diff"] < 1e-4 and "images" in sg["calibration"]  # checked on the val photos
    assert (out / "model.pt").is_file() and report["checkpoint"] == str(out / "train" / "weights" / "last.pt")
    assert (out / "train" / "edgeslim_run.json").is_file()  # (its mark: --force below replaces this run)
    # the val photos surgery was checked on go with model.pt: its export validates on them, not on noise
    # (a trial's export said "no data set known")
    exp = subprocess.run([sys.executable, "-m", "edgeslim", "export", str(out / "model.pt"), "--trust-pickle",
                          "--onnx", str(tmp_path / "slim.onnx"), "--json"], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert exp.returncode == 0, exp.stderr[-2000:]
    val = json.loads(exp.stdout)["onnx"]["validation"]
    assert val["real_data"] and "images" in val["source"], val
    assert "next: edgeslim export" in r.stderr and "rebuilds its architecture from" in r.stderr
    # the run directory is held: a second run into it without --force is refused, nothing changed
    again = subprocess.run([sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env,
                           timeout=300)  # fmt: skip
    assert again.returncode == 2 and "force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    # with --force, on the terminal: the zeros per epoch, the validation before and after, the sizes; and
    # a latency target for a Jetson (a trial found it refused on the command line, the Python class took it)
    latency = ["--target-latency", "0.95", "--profile", "jetson-orin-nano-8gb", "--latency-batch", "4"]
    shown = subprocess.run([sys.executable, "-m", "edgeslim", *args[:-1], *latency, "--force"], capture_output=True,
                           text=True, env={**env, "COLUMNS": "160"}, timeout=600)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    for needle in (
        "BN channels exactly zero",
        "validation (ultralytics) and size",
        "mAP50-95(B)",
        "surgery:",
        "budget (latency): target 95.0% of dense",
        "latency predicted per batch of 4:",
        "a roofline of every kernel for jetson-orin-nano-8gb",
    ):
        assert needle in " ".join(shown.stdout.split()), (needle, shown.stdout)


def test_a_run_too_short_to_slim_says_so_and_leaves_nothing(root: Path, tmp_path: Path) -> None:
    """8 images at batch 4 for 2 epochs: gradients accumulate towards ultralytics' nominal batch of
    64, so the run takes one optimizer step, inside ultralytics' warm-up at learning rate 0 (a user
    trial: 'the planned lr schedule has no step with lr > 0; cannot derive lambda', and the half-made
    run then refused the same command as 'stopped before its first checkpoint'): one line that says
    so and names the fix, and no run directory left behind."""
    import shutil

    data = tmp_path / "data"
    for sub in ("images", "labels"):
        (data / sub / "train").mkdir(parents=True)
        for f in sorted((root / "data" / sub / "train").iterdir())[:8]:
            shutil.copy(f, data / sub / "train" / f.name)
    yaml = (root / "data" / "data.yaml").read_text().replace(f"path: {root / 'data'}", f"path: {data}")
    (data / "data.yaml").write_text(
        yaml.replace("val: images/val", f"val: {root / 'data' / 'images' / 'val'}")
    )
    out = tmp_path / "run"
    env = {
        **os.environ,
        "YOLO_AUTOINSTALL": "false",
        "YOLO_OFFLINE": "true",
        "YOLO_CONFIG_DIR": str(tmp_path),
    }
    args = ["slim", f"yolo:{root / 'runs' / 'start.pt'}", "--trust-pickle", "--data", str(data / "data.yaml"),
            "--epochs", "2", "--batch-size", "4", "--imgsz", "64", "--device", "cpu", "--out", str(out)]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and err.startswith("error: this run takes 1 optimizer step"), r.stderr[-2000:]
    assert "learning rate above 0" in err and "train more --epochs, or on more images" in err
    assert not out.exists()
    # the yaml with a state_dict: the run writes start.pt (its model with those weights) before it
    # trains; refused the same way, it leaves none (a YOLO user's trial: start.pt was left behind)
    from edgeslim.pipelines.source import load_model_or_arch

    sd = tmp_path / "sd.pt"
    torch.save(
        load_model_or_arch("yolo:yolov8n", trust_pickle=False, num_classes=len(CLASSES)).model.state_dict(),
        sd,
    )
    args = ["slim", "yolo:yolov8n", "--weights", str(sd), "--num-classes", str(len(CLASSES)), *args[3:]]
    r = subprocess.run([sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2 and "learning rate above 0" in r.stderr, r.stderr[-2000:]
    assert not out.exists(), sorted(out.rglob("*"))


def test_slim_takes_a_yaml_and_a_state_dict_of_its_model(root: Path, tmp_path: Path) -> None:
    """yolo:yolov8n --weights sd.pt --num-classes 10 (a state_dict, as a user trial had one): ultralytics
    re-initialises a model built from a yaml, so the run writes start.pt (the yaml's model with those
    weights, saved as YOLO.save does) and trains from it; the weights are in it, the classes agree."""
    from edgeslim.pipelines.source import load_model_or_arch

    torch.manual_seed(3)
    model = load_model_or_arch("yolo:yolov8n", trust_pickle=False, num_classes=len(CLASSES)).model
    with torch.no_grad():  # spread as in a trained network (as the fixture's start.pt)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.05, 1.5)
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    out = tmp_path / "run"
    env = {**os.environ, "YOLO_AUTOINSTALL": "false", "YOLO_OFFLINE": "true", "YOLO_CONFIG_DIR": str(tmp_path),
           "EDGESLIM_NO_PROGRESS": "1"}  # fmt: skip
    # a data yaml with a download: script, as ultralytics' coco.yaml has, and no path: (its folder); the
    # images are there: it trains on them (it was refused; the refusal test shows the script is not run)
    text = (root / "data" / "data.yaml").read_text().replace(f"path: {root / 'data'}\n", "")
    scripted = root / "data" / "scripted.yaml"
    scripted.write_text(text + "download: |\n  import os\n")
    args = ["slim", "yolo:yolov8n", "--weights", str(sd), "--num-classes", str(len(CLASSES)), "--data",
            str(scripted), "--epochs", "2", "--batch-size", "16", "--imgsz", "64", "--device",
            "cpu", "--out", str(out), "--json"]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["start"] == "checkpoint" and report["classes"]["model"] == report["classes"]["data"] == len(
        CLASSES
    )
    assert report["metrics"]["before"] is not None and report["surgery"]["removed_channels"] > 0
    assert report["data"] == str(scripted)
    # the checkpoints and args.yaml name the user's yaml, not the deleted copy (a user's trial: ultralytics
    # then validated a checkpoint on coco8 and tried to download it)
    last = torch.load(out / "train" / "weights" / "last.pt", weights_only=False)
    assert last["train_args"]["data"] == str(scripted.resolve())
    assert f"data: {scripted.resolve()}" in (out / "train" / "args.yaml").read_text()
    start = torch.load(out / "start.pt", weights_only=False)["model"].float().state_dict()
    for key in ("model.0.conv.weight", "model.22.cv3.0.2.weight"):
        torch.testing.assert_close(
            start[key], model.state_dict()[key], atol=1e-3, rtol=1e-3
        )  # (saved in fp16)


def test_a_random_start_or_other_classes_are_warned_about() -> None:
    """A user trial slimmed yolo:yolov8n (random weights) and a 2-class best.pt on a 3-class data yaml
    (ultralytics swapped in untrained class layers) without a word from edgeslim."""
    from edgeslim.pipelines.slim_yolo import _warnings

    base = {"arch": "yolo:yolov8n", "surgery": {"removed_channels": 5}, "slimming": {}}
    random = _warnings({**base, "start": "random weights", "classes": {"model": 80, "data": 2}}, "")
    assert len(random) == 1 and "random weights" in random[0] and "best.pt" in random[0]
    other = _warnings({**base, "start": "checkpoint", "classes": {"model": 2, "data": 3}}, "")
    assert len(other) == 1 and "has 3 classes, the model 2" in other[0]
    assert _warnings({**base, "start": "checkpoint", "classes": {"model": 2, "data": 2}}, "") == []
    # a weak model's mAP fell to nothing: under the collapse floor, still said (a user's trial: 0.0276 -> 0)
    key = "metrics/mAP50-95(B)"
    fell = {**base, "start": "checkpoint", "metrics": {"before": {key: 0.0276}, "slim": {key: 0.0}}}
    weak = _warnings(fell, "")
    assert len(weak) == 1 and "fell from 0.0276 to 0.0000" in weak[0] and "too low" in weak[0]
    kept = {**fell, "metrics": {"before": {key: 0.0276}, "slim": {key: 0.02}}}
    assert _warnings(kept, "") == []


def test_yolo_slim_refusals_are_one_line(root: Path, tmp_path: Path, capsys) -> None:
    """What a YOLO run cannot do is refused before anything is written or trained."""
    data = str(root / "data" / "data.yaml")
    start = f"yolo:{root / 'runs' / 'start.pt'}"
    out = tmp_path / "run"
    broken, no_val = tmp_path / "broken.yaml", tmp_path / "no_val.yaml"
    broken.write_text(
        "path: [oops\n"
    )  # (a user trial: 'internal error: ValueError: YAML syntax error', exit 1)
    no_val.write_text(f"path: {root / 'data'}\ntrain: images/train\nnames:\n  0: a\n")
    # ultralytics runs a data yaml's download: script when the val images are missing (a security audit
    # ran one through `edgeslim slim`: it wrote a file)
    script, bash = tmp_path / "script.yaml", tmp_path / "bash.yaml"
    pwned = tmp_path / "pwned"
    body = f"path: {tmp_path / 'none'}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n"
    script.write_text(body + f"download: |\n  open({str(pwned)!r}, 'w').write('x')\n")
    bash.write_text(body + f"download: bash touch {pwned}\n")
    garbled = tmp_path / "garbled.yaml"  # ultralytics drops the byte that is not UTF-8: its key is download
    garbled.write_bytes(body.encode() + f"down\xffload: open({str(pwned)!r}, 'w')\n".encode("latin-1"))
    for args, needles in (
        (["vgg-small", "--data", data], ("not one", "yolo:NAME")),
        ([start, "--data", data], ("pickle", "--trust-pickle")),
        ([start, "--trust-pickle", "--data", str(tmp_path / "missing.yaml")], ("does not exist",)),
        (
            [start, "--trust-pickle", "--data", data, "--target-latency", "5ms"],
            ("latency target needs --profile (a device's", "--latency-table"),
        ),
        ([start, "--trust-pickle", "--data", data, "--subset", "10"], ("--subset", "not apply")),
        ([start, "--trust-pickle", "--data", data, "--imgsz", "100"], ("multiple of 32",)),
        ([start, "--trust-pickle", "--data", str(broken)], ("not valid YAML", "line 2", "fix it")),
        (
            [start, "--trust-pickle", "--data", data, "--weights", str(broken)],
            ("holds the model's parameters", "drop --weights"),
        ),
        (["yolo:yolov8n", "--data", data, "--num-classes", "3"], ("goes with --weights",)),
        (["yolo:runs/nope/best.pt", "--trust-pickle", "--data", data], ("runs/nope/best.pt does not exist",)),
        (["yolo:yolov8n", "--data", data, "--weights", str(tmp_path / "none.pt")], ("does not exist",)),
        ([start, "--trust-pickle", "--data", str(no_val)], ("names no train and val images", "fix it")),
    ):
        assert main(["slim", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(n in err for n in needles), (args, err)
        assert not out.exists()
    # an interrupted YOLO run (ultralytics' train/ folder, no train/model.pt) asked to resume: it cannot be
    # (a user's trial was told no run was started)
    (out / "train").mkdir(parents=True)
    (out / "train" / "args.yaml").write_text("data: x\n")
    assert main(["slim", "--resume", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "holds a YOLO run (ultralytics trained it), which cannot be resumed; drop --resume and rerun it"
        in err
    )
    (out / "model.pt").write_text(
        "x"
    )  # a finished one: the same (a final read: --resume --force went in a circle)
    (out / "report.json").write_text("{}")
    assert main(["slim", "--resume", "--out", str(out)]) == 2
    assert "holds a YOLO run" in capsys.readouterr().err
    import shutil

    shutil.rmtree(out)
    # (the CLI refuses '0,1'; from Python it reached ultralytics' DDP, beyond the slimming: a review)
    from edgeslim.pipelines.slim import SlimRequest
    from edgeslim.pipelines.slim_yolo import check

    with pytest.raises(EdgeslimError, match="names several devices; a run uses one"):
        check(SlimRequest(out_dir=out, model=start, data_name=data, trust_pickle=True, device="0,1"))
    # the val images are missing: the script that would fetch them is not run, and the run says so (after
    # ultralytics' own start-up lines: the model is built before its trainer checks the data)
    for data, needles in (
        (script, ("images not found", "download: Python script", "not run", "fetch the images yourself")),
        (bash, ("has a download: bash command",)),
        (garbled, ("has a download: Python script",)),
    ):
        assert main(["slim", "yolo:yolov8n", "--data", str(data), "--imgsz", "64", "--out", str(out)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and all(n in last for n in needles), last
        assert not out.exists() and not pwned.exists()


def test_a_data_yaml_download_is_code_unless_an_archive_url() -> None:
    from edgeslim.pipelines.slim_yolo import _data_yaml_code

    assert _data_yaml_code({}) == "" and _data_yaml_code({"download": None}) == ""
    for url in (
        "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco8.zip",
        "http://x.org/sets/a_1.tar.gz",
    ):
        assert _data_yaml_code({"download": url}) == "", url
    # (ultralytics >= 8.3 unquotes it, misses the archive and execs it: a SyntaxError, nothing runs)
    assert _data_yaml_code({"download": "https://x/a%3F.zip"}) == ""
    # valid Python that ends like an archive: ultralytics < 8.3 execs whatever is not http...zip (a review)
    for code in ("http=__import__('os').system('x')#.tar", "HTTP=1#.zip", "http=1#.zip?x"):
        assert _data_yaml_code({"download": code}) == "Python script", code
    assert _data_yaml_code({"download": "import os\nos.system('x')"}) == "Python script"
    assert _data_yaml_code({"download": "bash data/get.sh"}) == "bash command"


CACHE = """
import logging, shutil, sys
from pathlib import Path
import numpy as np
from edgeslim.models.yolo import _import_quietly, safe_label_caches
data, work = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(data / "images" / "val", work / "images" / "val")
shutil.copytree(data / "labels" / "val", work / "labels" / "val")
marker = work / "ran"
class Payload:
    def __reduce__(self):
        return (open, (str(marker), "w"))
cache = work / "labels" / "val.cache"  # (where ultralytics keeps the labels' cache)
with open(cache, "wb") as f:
    np.save(f, np.array(Payload(), dtype=object), allow_pickle=True)
dataset = _import_quietly("ultralytics.data.dataset", "the test")
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
names = {i: str(i) for i in range(10)}
for _ in range(2):  # a refused cache is rebuilt by ultralytics; the rebuilt one loads
    with safe_label_caches():
        ds = dataset.YOLODataset(img_path=str(work / "images" / "val"), data={"names": names, "nc": 10, "channels": 3},
                                 imgsz=64, augment=False)
    print("LABELS", len(ds.labels), "RAN", marker.exists())
with open(cache, "wb") as f:
    np.save(f, np.array(Payload(), dtype=object), allow_pickle=True)
try:
    dataset.load_dataset_cache_file(cache)  # ultralytics' own loader
except Exception:
    pass
print("UNGUARDED RAN", marker.exists())
"""


def test_a_label_cache_is_read_without_running_code(root: Path, tmp_path: Path) -> None:
    """ultralytics unpickles a data set's labels.cache as it builds the data set (a security re-read ran
    code through `edgeslim slim --data`); under safe_label_caches a cache naming another global is not
    loaded, said, and rebuilt by ultralytics, whose rebuilt cache loads."""
    env = {
        **os.environ,
        "YOLO_AUTOINSTALL": "false",
        "YOLO_OFFLINE": "true",
        "YOLO_CONFIG_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", CACHE, str(root / "data"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    lines = [x for x in out.stdout.splitlines() if x.startswith(("LABELS", "LOG", "UNGUARDED"))]
    refused = [x for x in lines if x.startswith("LOG") and "was not loaded" in x]
    assert len(refused) == 1 and "refusing to load" in refused[0] and "rebuilds it" in refused[0], lines
    assert [x for x in lines if x.startswith("LABELS")] == ["LABELS 16 RAN False"] * 2, lines
    assert lines[-1] == "UNGUARDED RAN True", lines  # ultralytics' own loader runs the payload


def _budget_script(epochs: int, batch: int, name: str, summary: str, setup: str = "") -> str:
    """A script that trains ``start`` on ``data`` into ``project`` (its argv) in ultralytics' trainer with a
    MAC budget of 0.5 (multiples of 16) and prints ``SUMMARY`` and the JSON of ``summary`` (an expression of
    ``slimming``); ``setup`` runs first."""
    return f"""
import json, sys, logging
{setup}
from edgeslim.models.yolo import _tasks
_tasks("the test")
from ultralytics import YOLO
from edgeslim.train.ultralytics import UltralyticsSlimming
start, data, project = sys.argv[1:4]
yolo = YOLO(start)
slimming = UltralyticsSlimming(budget={{"metric": "macs", "target": "0.5"}}, round_to=16).attach(yolo)
yolo.train(data=data, epochs={epochs}, imgsz=64, batch={batch}, nbs={batch}, device="cpu", workers=0, plots=False,
           amp=False, project=project, name="{name}", exist_ok=True, verbose=False, seed=0, deterministic=True)
print("SUMMARY " + json.dumps({summary}))
"""


BUDGET = _budget_script(8, 16, "budget", "slimming.summary()")


def test_a_mac_budget_is_met_inside_ultralytics(root: Path, tmp_path: Path, capsys) -> None:
    """Half the MACs: the controller tapers over the epochs, the last epoch's end projects onto the
    budget exactly, and the last.pt it saved prunes to half the MACs in multiples of 16."""
    env = {
        **os.environ,
        "YOLO_AUTOINSTALL": "false",
        "YOLO_OFFLINE": "true",
        "YOLO_CONFIG_DIR": str(tmp_path),
    }
    args = [str(root / "runs" / "start.pt"), str(root / "data" / "data.yaml"), str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-c", BUDGET, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    summary = json.loads(
        next(x for x in out.stdout.splitlines() if x.startswith("SUMMARY "))[len("SUMMARY ") :]
    )
    fractions = [e["budget_fraction"] for e in summary["epochs"]]
    assert fractions[0] > 0.8 and fractions == sorted(fractions, reverse=True), (
        fractions
    )  # a taper, not a jump
    assert 0.45 <= summary["budget"]["achieved_fraction"] <= 0.5, summary["budget"]
    last = tmp_path / "budget" / "weights" / "last.pt"
    rc = main(["prune", f"yolo:{last}", "--trust-pickle", "-o", str(tmp_path / "slim.pt"), "--round-to", "16",
               "--input-shape", "3,64,64", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    model = load_yolo_checkpoint(str(last), trust_pickle=True)
    with torch.no_grad():  # decoded boxes are in pixels: the deviation is fp32 rounding at that scale
        scale = float(deployed_output(model)(model(torch.randn(1, 3, 64, 64))).abs().max())
    # (the verifier's own bound; measured 1.6e-5 relative: the re-estimated BN statistics of channels
    # behind the late projection are small and amplify the rounding of the shorter sums)
    assert rc == 0 and report["exact"] and report["max_abs_diff"] < 1e-4 * max(scale, 1.0), (report, scale)
    ratio = report["macs_after"] / report["macs_before"]
    assert 0.45 <= ratio <= 0.5 + 0.01, ratio
    assert report["kept_by_rounding"] == 0  # aligned during training, with trained channels


def test_a_training_checkpoint_is_measured_at_the_size_it_was_trained_at(trained, tmp_path, capsys) -> None:
    """A best.pt trained at 64 px is inspected and exported at 64 px (it was taken at ultralytics'
    default 640, where the ORT check on random normal inputs failed a trial's dense export), and its
    export is checked on random pixels in [0, 1], as YOLO is fed."""
    weights, _ = trained
    for target in (f"yolo:{weights / 'last.pt'}", str(weights / "last.pt")):
        assert main(["info", target, "--trust-pickle", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["input_shape"] == [3, 64, 64], target
    assert (
        main(["export", str(weights / "last.pt"), "--trust-pickle", "--onnx", str(tmp_path / "m.onnx")]) == 0
    )
    assert "random pixels in [0, 1]" in " ".join(capsys.readouterr().out.split())


def test_validation_images_of_a_list_or_a_txt_of_files(tmp_path: Path) -> None:
    """A data yaml whose val is a .txt list of images (coco's val2017.txt) or a list of folders: surgery and
    the export checked the slim YOLO on random inputs (a YOLO user's trial); now on the listed images."""
    from edgeslim.pipelines.slim_yolo import _val_images

    val = tmp_path / "images" / "val"
    val.mkdir(parents=True)
    (val / "a.jpg").write_bytes(b"")
    listed = tmp_path / "val.txt"
    listed.write_text("./images/val/a.jpg\n./images/val/b.jpg")
    assert _val_images({"val": str(listed)}) == val
    listed.write_text(f"\n{val / 'a.jpg'}")  # absolute paths, a blank line, no newline at the end
    assert _val_images({"val": str(listed)}) == val
    assert _val_images({"val": [str(tmp_path / "gone"), str(val)]}) == val
    listed.write_text("./images/val/missing.jpg\n")
    assert _val_images({"val": str(listed)}) is None and _val_images({"val": None}) is None


def test_the_start_checkpoint_of_a_yaml_and_weights_keeps_its_task(tmp_path: Path) -> None:
    """Review of a YOLO user's whole chain: ``slim yolo:yolo11n-seg --weights sd.pt --num-classes 3`` always
    failed inside ultralytics (AttributeError: 'tuple' object has no attribute 'shape'): the start.pt it
    trains from recorded no task, and ultralytics reloads such a checkpoint as a detector."""
    from types import SimpleNamespace

    from edgeslim.pipelines.slim_yolo import _start_checkpoint
    from edgeslim.pipelines.source import load_model_or_arch

    for arch, task in (("yolo11n-seg", "segment"), ("yolov8n-pose", "pose")):
        sd, out = tmp_path / f"{arch}_sd.pt", tmp_path / arch
        out.mkdir()
        torch.save(
            load_model_or_arch(f"yolo:{arch}", trust_pickle=False, num_classes=3).model.state_dict(), sd
        )
        req = SimpleNamespace(trust_pickle=False, weights=sd, num_classes=3)
        start = _start_checkpoint(req, f"{arch}.yaml", out)
        assert load_yolo_checkpoint(start, trust_pickle=True).task == task, arch  # (as YOLO(start) reads it)
        assert torch.load(start, weights_only=False)["train_args"]["task"] == task


def test_a_budget_met_only_by_the_final_projection_is_warned_about() -> None:
    """Review of a YOLO user's whole chain: a 1-epoch YOLO slim whose whole budget the final projection met
    (the controller ended at 100% of dense, target 50%) said so only in an unprefixed log line, with the
    report's warnings empty. It is one of the report's warnings now; a run that reached it in training
    is not warned about."""
    from edgeslim.pipelines.slim_yolo import _warnings

    budget = {"metric": "macs", "target_fraction": 0.5, "achieved_fraction": 0.5, "before_projection_fraction": 1.0,
              "projection_removed_channels": 688, "shrink_capped_share": 0.0}  # fmt: skip
    base = {
        "arch": "yolo:best.pt",
        "start": "checkpoint",
        "classes": {},
        "surgery": {"removed_channels": 688},
    }
    (line,) = _warnings({**base, "slimming": {"budget": budget}}, "")
    assert "met by the final projection" in line and "ended at 100.0%" in line and "688 channel(s)" in line
    reached = {**budget, "before_projection_fraction": 0.505, "projection_removed_channels": 3}
    assert _warnings({**base, "slimming": {"budget": reached}}, "") == []


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A YOLOv8n checkpoint of the data's 10 classes (as YOLO.save writes one) and 8 + 4 mosaics: a
    data yaml and a model in seconds, for runs refused before or as ultralytics starts."""
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} is not there (../shared beside the checkout)")
    from edgeslim.models.yolo import ultralytics_yolo

    root = tmp_path_factory.mktemp("yolo_small")
    data = _mosaics(root / "data", n_train=8, n_val=4)
    yolo = ultralytics_yolo("yolov8n.yaml")
    yolo.model = yolo.model.__class__(yolo.model.yaml, nc=len(CLASSES), verbose=False)
    yolo.save(str(root / "start.pt"))
    return root / "start.pt", data


@pytest.fixture(scope="module")
def named(small, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small``'s checkpoint with the data's class names (as a trained best.pt records them)."""
    from edgeslim.models.yolo import ultralytics_yolo

    yolo = ultralytics_yolo(str(small[0]))
    yolo.model.names = dict(enumerate(CLASSES))
    path = tmp_path_factory.mktemp("yolo_named") / "named.pt"
    yolo.save(str(path))
    return path


def test_other_classes_are_said_as_ultralytics_treated_them(small, named, tmp_path: Path, capsys) -> None:
    """A review (ultralytics 8.4): 8 of a 10-class model's classes were warned as "ultralytics replaced its
    class layers with untrained ones, and the 'before' validation skipped the labels of classes it cannot
    predict", where ultralytics remapped the 8 rows by class name and left out the images labelled 8 or 9
    as corrupt; two classes renamed (same count) were not warned about, though their rows start untrained.
    The warning names the classes that differ and says what the trainer's rows show, and what it left out."""
    _, data = small
    body = data.read_text()
    fewer, renamed = tmp_path / "fewer.yaml", tmp_path / "renamed.yaml"
    fewer.write_text(body.replace("  8: ship\n  9: truck\n", ""))
    renamed.write_text(body.replace("airplane", "plane").replace("automobile", "car"))
    said = {}
    for yaml in (fewer, renamed):
        rc = main(["slim", f"yolo:{named}", "--trust-pickle", "--data", str(yaml), "--epochs", "1", "--imgsz", "64",
                   "--device", "cpu", "--target-macs", "0.8", "--out", str(tmp_path / yaml.stem), "--json"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err[-2000:]
        report = json.loads(capsys.readouterr().out)
        said[yaml.stem] = [w for w in report["warnings"] if "class" in w]
        said[yaml.stem + "_classes"] = report["classes"]
    classes = said["fewer_classes"]
    assert classes["model"] == 10 and classes["data"] == 8 and classes["data_names"] == CLASSES[:8]
    assert classes["rows_from"] == {c: c for c in CLASSES[:8]}  # (the trainer's rows, compared)
    train, val = classes["labels_beyond"]["train"], classes["labels_beyond"]["val"]
    assert train["images"] == 8 and val["images"] == 4 and train["dropped"] == train["beyond"] > 0
    (line,) = said["fewer"]
    assert line.startswith("the data yaml has 8 classes, the model 10 (not in the data: the model's ship, truck); "
                           "all 8 of the data's 8 classes start from the model's trained class rows of the same "
                           f"name; ultralytics left out {train['dropped']} of 8 training images"), line  # fmt: skip
    assert "beyond the data yaml's 8" in line and "untrained" not in line and "skipped" not in line
    (line,) = said["renamed"]
    assert line.startswith("the data yaml's classes differ from the model's (new to the model: plane, car; not in "
                           "the data: the model's airplane, automobile); "), line  # fmt: skip
    rows = said["renamed_classes"]["rows_from"]
    untrained = [c for c, g in rows.items() if g is None]
    # (ultralytics >= 8.4 matches rows by name, leaving the renamed ones untrained; an older one copies by position)
    assert untrained == ["plane", "car"] or (rows["plane"], rows["car"]) == ("airplane", "automobile"), rows
    if untrained:
        assert "all" not in line and "plane, car start from untrained class rows" in line, line
    else:
        assert (
            "plane (airplane's), car (automobile's) start from the trained row of the model's class at"
            in line
        )


def test_validation_leaves_no_folder_outside_the_run(small, tmp_path: Path, monkeypatch, capsys) -> None:
    """A review: every YOLO slim run left empty detect/val, val-2 ... folders in ultralytics' runs_dir (its
    validations were given no project). Every folder a validator saves to lies in the run or is gone."""
    from edgeslim.models.yolo import _import_quietly

    callbacks = _import_quietly("ultralytics.utils.callbacks.base", "the test")
    saved: list[Path] = []
    events = {**callbacks.default_callbacks}
    events["on_val_start"] = [*events["on_val_start"], lambda v: saved.append(Path(v.save_dir))]
    monkeypatch.setattr(callbacks, "default_callbacks", events)
    start, data = small
    out = tmp_path / "run"
    rc = main(["slim", f"yolo:{start}", "--trust-pickle", "--data", str(data), "--epochs", "1", "--imgsz", "64",
               "--device", "cpu", "--target-macs", "0.8", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert len(saved) >= 2, saved  # (before and after; the trainer's own validations, in train/)
    assert all(p.is_relative_to(out) or not p.exists() for p in saved), saved


def test_a_validation_split_without_labels_is_not_measured(small, tmp_path: Path, capsys) -> None:
    """A review: val images without a label printed precision, recall and mAP 0.0000 for both models, exit
    0, no word (ultralytics: "no labels found ... cannot compute metrics"). They are not measured, and said."""
    import shutil

    start, data = small
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    for f in (copy / "labels" / "val").glob("*.txt"):
        f.unlink()
    yaml = copy / "data.yaml"
    yaml.write_text(data.read_text().replace(f"path: {data.parent}", f"path: {copy}"))
    out = tmp_path / "run"
    rc = main(["slim", f"yolo:{start}", "--trust-pickle", "--data", str(yaml), "--epochs", "1", "--imgsz", "64",
               "--device", "cpu", "--target-macs", "0.8", "--out", str(out)])  # fmt: skip
    shown = capsys.readouterr()
    assert rc == 0, shown.err[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == {
        "before": None,
        "slim": None,
        "not_measured": "no labels in the validation split",
    }
    assert any(w.startswith("precision, recall and mAP not measured (no labels") for w in report["warnings"])
    text = " ".join(shown.out.split())
    assert "not measured: no labels in the validation split" in text and "0.0000" not in text, shown.out


OVERSHOOT = _budget_script(
    2, 4, "ov", 'slimming.summary()["budget"]',
    setup='logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(message)s")',
)  # fmt: skip


def test_the_python_class_warns_of_a_budget_overshot(small, tmp_path: Path) -> None:
    """A review: UltralyticsSlimming in Python ended at 29.7% of the MACs for a 0.5 target without a word,
    where edgeslim slim warns "budget overshot". The class logs the same line (one function for both)."""
    from edgeslim.sparsity.budget import budget_warning

    start, data = small
    env = {
        **os.environ,
        "YOLO_AUTOINSTALL": "false",
        "YOLO_OFFLINE": "true",
        "YOLO_CONFIG_DIR": str(tmp_path),
    }
    out = subprocess.run([sys.executable, "-c", OVERSHOOT, str(start), str(data), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    budget = json.loads(
        next(x for x in out.stdout.splitlines() if x.startswith("SUMMARY "))[len("SUMMARY ") :]
    )
    line = budget_warning(budget)
    assert line.startswith("budget overshot: "), budget  # (2 epochs of 2 steps: too short to steer)
    logged = [x for x in out.stderr.splitlines() if x.startswith("LOG edgeslim")]
    assert logged == [f"LOG edgeslim.train.ultralytics {line}"], logged


def test_a_collapsed_run_prints_its_report_for_json(small, tmp_path: Path, monkeypatch, capsys) -> None:
    """A review: --json on a collapsed YOLO run printed only {"error": ...}, where a classifier's collapse
    prints its report on stdout too. The fall is set (an untrained model's mAP cannot fall); the run, its
    refusal and the printing are real."""
    from edgeslim.pipelines import slim_yolo

    monkeypatch.setattr(slim_yolo, "_map_fall", lambda report: (0.30, 0.01))
    start, data = small
    out = tmp_path / "run"
    rc = main(["slim", f"yolo:{start}", "--trust-pickle", "--data", str(data), "--epochs", "1", "--imgsz", "64",
               "--device", "cpu", "--target-macs", "0.8", "--out", str(out), "--json"])  # fmt: skip
    shown = capsys.readouterr()
    assert rc == 2 and "collapsed the network: mAP50-95 0.010 against 0.300" in shown.err, shown.err[-2000:]
    assert f"outputs written to {out} for diagnosis" in " ".join(shown.err.split())
    report = json.loads(shown.out)  # (the report alone: the error is on stderr)
    assert report["kind"] == "ultralytics" and report["warnings"][0].startswith("collapsed the network")


def test_a_moved_run_folder_names_the_copy_beside_its_model(small, tmp_path: Path, capsys) -> None:
    """A review: a YOLO run folder moved elsewhere failed "ultralytics checkpoint .../out/train/weights/last.pt
    does not exist", though the moved copy sat beside model.pt; the error names it."""
    import shutil

    from edgeslim.checkpoint import load_model

    start, _ = small
    run = tmp_path / "run"
    (run / "train" / "weights").mkdir(parents=True)
    shutil.copy(start, run / "train" / "weights" / "last.pt")
    assert main(["prune", f"yolo:{run / 'train' / 'weights' / 'last.pt'}", "--trust-pickle", "-o",
                 str(run / "model.pt"), "--round-to", "1", "--input-shape", "3,64,64"]) == 0  # fmt: skip
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    with pytest.raises(EdgeslimError) as refused:
        load_model(moved / "model.pt", trust_pickle=True)
    line = str(refused.value)
    assert line.startswith(f"{moved / 'model.pt'} rebuilds its architecture from {run / 'train' / 'weights' / 'last.pt'}, "
                           f"which does not exist; {moved / 'train' / 'weights' / 'last.pt'}, beside model.pt, "), line  # fmt: skip


def test_the_classes_warning_follows_the_facts() -> None:
    """Names in another order, placeholder names (a model built from a yaml), classes that agree."""
    from edgeslim.pipelines.slim_yolo import _classes_warning

    names = ["cat", "dog", "bird"]
    base = {"model": 3, "data": 3, "model_names": names}
    assert _classes_warning({**base, "data_names": names}) == ""
    assert _classes_warning({**base, "data_names": None}) == ""  # (placeholders: the count alone)
    swapped = {
        **base,
        "data_names": ["dog", "cat", "bird"],
        "rows_from": {"dog": "dog", "cat": "cat", "bird": "bird"},
    }
    line = _classes_warning(swapped)
    assert line.startswith("the data yaml's classes differ from the model's (at another position: dog, cat); "
                           "all 3 of the data's 3 classes start from the model's trained class rows of the same "
                           "name; give a data yaml"), line  # fmt: skip
    more = {
        "model": 2,
        "data": 3,
        "model_names": None,
        "data_names": None,
        "rows_from": {"0": None, "1": None, "2": None},
    }
    assert _classes_warning(more).startswith(
        "the data yaml has 3 classes, the model 2; classes 0, 1, 2 start from untrained class rows; "
    )


def test_class_names_differing_in_case_or_spaces_alone_are_the_same_classes() -> None:
    """Review of the day's code: a data yaml naming the model's classes in another case or with
    surrounding spaces ("Airplane", " automobile ") was warned about ("the data yaml's classes differ
    ... give a data yaml with the model's classes") though ultralytics matches names ignoring both and
    trains every row. The names are compared as ultralytics matches them: no rows_from, no warning."""
    from types import SimpleNamespace

    from edgeslim.pipelines.slim_yolo import _class_facts, _classes_warning

    names = ["airplane", "automobile", "bird"]
    trainer = SimpleNamespace(data={"nc": 3, "names": {0: "Airplane", 1: " automobile ", 2: "bird"}})
    facts = _class_facts(trainer, 3, names, [], [])
    assert "rows_from" not in facts and facts["data_names"] == ["Airplane", " automobile ", "bird"]
    assert _classes_warning(facts) == ""
    swapped = {**facts, "data_names": ["Automobile", "airplane", "bird"]}
    assert _classes_warning(swapped).startswith(
        "the data yaml's classes differ from the model's (at another position: Automobile, airplane)"
    )


def test_a_wrong_data_yaml_is_one_line_not_an_internal_error(small, tmp_path: Path, capsys) -> None:
    """Review of the YOLO user's path: a data yaml that is wrong (not missing) -- no names:, names of
    another count than nc:, names a string, path: 5, channels: 1 for a 3-channel model, every label
    malformed -- failed inside ultralytics (SyntaxError, TypeError, RuntimeError: "internal error ...
    report it", exit 1). The keys are checked before anything is written; ultralytics' own refusal of
    the data set (its label check) is one line, exit 2."""
    start, data = small
    body = data.read_text()
    names = "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
    keys = body.replace(f"names:\n{names}", "")
    out = tmp_path / "run"
    for text, needles in (
        (keys, ("names no classes", "add names:")),
        (body + "nc: 5\n", ("has 10 names and nc: 5", "make them agree (nc: 10)")),
        (keys + "names: a b c\n", ("has names: 'a b c', a str", "give a list")),
        (body.replace(f"path: {data.parent}", "path: 5"), ("has path: 5, not a folder",)),
        (keys + "names: {0: a, 2: b}\n", ("numbers its names 0, 2", "number them 0 to 1")),
        (
            body + "channels: 1\n",
            ("has channels: 1, and the model takes 3-channel images", "give channels: 3"),
        ),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        rc = main(["slim", f"yolo:{start}", "--trust-pickle", "--data", str(bad), "--epochs", "1", "--imgsz",
                   "64", "--device", "cpu", "--out", str(out)])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith(f"error: data yaml {bad} "), (text, err[-3:])
        assert all(n in err[-1] for n in needles) and "internal error" not in err[-1], (needles, err[-1])
        assert not out.exists()
    # every train label malformed: ultralytics' label check refuses the data set as its trainer starts
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data.parent / "images", broken / "images")
    shutil.copytree(data.parent / "labels", broken / "labels")
    for f in (broken / "labels" / "train").iterdir():
        f.write_text("0 0.5 0.5\n")
    bad.write_text(body.replace(f"path: {data.parent}", f"path: {broken}"))
    rc = main(["slim", f"yolo:{start}", "--trust-pickle", "--data", str(bad), "--epochs", "1", "--imgsz", "64",
               "--device", "cpu", "--out", str(out)])  # fmt: skip
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith(
        f"error: ultralytics refused the data set of {bad}: No valid images found"
    ), last
    assert len(last) < 500 and "internal error" not in last
    assert not out.exists()


def test_only_ultralytics_own_data_refusals_are_taken_for_bad_data(tmp_path: Path) -> None:
    """The one-line refusal is for an error ultralytics' data check raises on purpose (also wrapped, as its
    trainer wraps it); any other error, from its data package or not, stays a bug to report."""
    from edgeslim.models.yolo import _import_quietly
    from edgeslim.pipelines.slim_yolo import _data_check_error

    utils = _import_quietly("ultralytics.data.utils", "the test")
    base = _import_quietly("ultralytics.data.base", "the test")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: a\nval: b\nnames: a b c\n")
    with pytest.raises(TypeError) as refused:
        utils.check_det_dataset(str(bad))
    wrapped = RuntimeError("Dataset error")
    wrapped.__cause__ = refused.value
    assert _data_check_error(refused.value) is refused.value and _data_check_error(wrapped) is refused.value
    bad.write_text(f"path: {tmp_path}\ntrain: [1]\nval: b\nnames: [a]\n")
    with pytest.raises(TypeError) as bug:  # (raised by pathlib inside it, not by its check)
        utils.check_det_dataset(str(bad))
    with pytest.raises(NotImplementedError) as abstract:  # (raised on purpose, but no refusal of data)
        base.BaseDataset.get_labels(None)
    assert _data_check_error(bug.value) is None and _data_check_error(abstract.value) is None
    assert _data_check_error(RuntimeError("Dataset error")) is None


def test_a_slim_yolo_is_refused_not_re_inflated(small, tmp_path: Path, capsys) -> None:
    """Review of the YOLO user's path: a slim YOLO saved as ultralytics saves one (``YOLO.save``) and
    slimmed again was rebuilt by ultralytics' trainer from its yaml, dense ("Transferred 286/355 items"):
    edgeslim slimmed another, partly untrained network (params_before 3,011,433 where the given model has
    2.79M) and said nothing. It is refused in one line before anything is validated or trained."""
    from edgeslim.checkpoint import load_model
    from edgeslim.models.yolo import ultralytics_yolo

    start, data = small
    yolo = ultralytics_yolo(str(start))
    with torch.no_grad():  # a few channels of the backbone at zero: surgery removes them
        for m in list(yolo.model.modules())[:40]:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight[: m.num_features // 2] = 0
                m.bias[: m.num_features // 2] = 0
    zeroed = tmp_path / "zeroed.pt"
    yolo.save(str(zeroed))
    assert main(["prune", f"yolo:{zeroed}", "--trust-pickle", "-o", str(tmp_path / "slim.pt"), "--round-to", "1",
                 "--input-shape", "3,64,64"]) == 0  # fmt: skip
    slim = load_model(tmp_path / "slim.pt", trust_pickle=True).model
    yolo.model = slim
    saved = tmp_path / "slim_ul.pt"
    yolo.save(str(saved))  # (as a user's wrapper saved it: ultralytics reloads and validates it)
    capsys.readouterr()
    out = tmp_path / "run"
    rc = main(["slim", f"yolo:{saved}", "--trust-pickle", "--data", str(data), "--epochs", "1", "--imgsz", "64",
               "--device", "cpu", "--target-macs", "0.8", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    params = sum(p.numel() for p in slim.parameters())
    assert rc == 2 and err[-1].startswith(f"error: {saved} is not the network its model yaml builds"), err[
        -3:
    ]
    assert f"{params:,} parameters against" in err[-1] and "slim the dense checkpoint" in err[-1], err[-1]
    assert not any("Transferred" in line for line in err) and not out.exists()


PAYLOAD = """
import sys
import numpy as np
class Payload:
    def __reduce__(self):
        return (open, (sys.argv[2], "w"))
np.save(open(sys.argv[1], "wb"), np.array(Payload(), dtype=object), allow_pickle=True)
"""


def test_trusting_the_models_pickle_does_not_trust_the_data_set(small, tmp_path: Path, capsys) -> None:
    """Review of the YOLO user's path: on the README's own path, ``slim yolo:best.pt --trust-pickle``, the
    one flag also let the data set run code: a data yaml's download: script ran, and so did a pickled
    labels/train.cache (a data set's zip ships them). The script is never run and the caches are read by
    the numpy-only reader whatever trust_pickle says."""
    import shutil

    start, data = small
    pwned = tmp_path / "pwned"
    body = f"path: {tmp_path / 'none'}\ntrain: images/train\nval: images/val\nnames: {CLASSES}\n"
    script = tmp_path / "script.yaml"
    script.write_text(body + f"download: |\n  open({str(pwned)!r}, 'w').write('x')\n")
    out = tmp_path / "run"
    args = ["slim", f"yolo:{start}", "--trust-pickle", "--epochs", "1", "--imgsz", "64", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    assert main([*args, "--data", str(script)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "download: Python script" in last and "not run" in last and not pwned.exists(), last
    # pickled label caches beside the labels (the val set's is read first, then the train set's)
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    for split in ("train", "val"):
        subprocess.run([sys.executable, "-c", PAYLOAD, str(copy / "labels" / f"{split}.cache"), str(pwned)],
                       check=True, timeout=60)  # fmt: skip
    yaml = copy / "data.yaml"
    yaml.write_text(data.read_text().replace(f"path: {data.parent}", f"path: {copy}"))
    main([*args, "--data", str(yaml), "--target-macs", "0.8"])
    err = capsys.readouterr().err
    assert not pwned.exists(), err[-2000:]
    assert "train.cache was not loaded" in " ".join(err.split()), err[-2000:]


def test_another_tools_run_in_train_is_never_written_over(small, tmp_path: Path, capsys) -> None:
    """Review of the YOLO user's path: a user's own ultralytics run copied into --out as train/ was
    called "a run that did not finish (train/) ... pass --force to start over", and --force then wrote
    over their best.pt, last.pt, results.csv and args.yaml. A train/ without edgeslim's mark is refused,
    with --force too, naming its files; nothing of it changes."""
    start, data = small
    out = tmp_path / "run"
    theirs = {"args.yaml": b"task: detect\nmode: train\n", "results.csv": b"epoch,loss\n1,0.5\n",
              "weights/best.pt": start.read_bytes(), "weights/last.pt": start.read_bytes()}  # fmt: skip
    for name, data_bytes in theirs.items():
        (out / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "train" / name).write_bytes(data_bytes)
    args = ["slim", f"yolo:{start}", "--trust-pickle", "--data", str(data), "--epochs", "1", "--imgsz", "64",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    for force in ([], ["--force"]):
        assert main([*args, *force]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{out / 'train'} holds a training run that is not edgeslim's (args.yaml, results.csv, " in err
        assert "weights/best.pt, weights/last.pt;" in err and "would write over, with --force too" in err
        assert "choose another output directory" in err and "did not finish" not in err
        got = {
            str(p.relative_to(out / "train")): p.read_bytes()
            for p in (out / "train").rglob("*")
            if p.is_file()
        }
        assert got == theirs and sorted(p.name for p in out.iterdir()) == ["train"]


def test_the_collapse_advice_fits_the_runs_settings() -> None:
    """Review of the YOLO user's path: a collapse always said "lower the shrink (or lambda), add a recovery
    phase, or give a budget (target_macs)", also to a run given a budget (where the shrink does not apply)
    or a recovery phase already. The advice follows the run's settings, and the CLI names their flags."""
    import click

    from edgeslim.cli import cli, cli_message
    from edgeslim.pipelines.slim_yolo import _collapse

    key = "metrics/mAP50-95(B)"
    base = {"metrics": {"before": {key: 0.30}, "slim": {key: 0.01}}}
    slim_cmd = cli.get_command(click.Context(cli), "slim")

    def said(slimming: dict) -> str:
        line = _collapse({**base, "slimming": slimming})
        assert line.startswith("collapsed the network: mAP50-95 0.010 against 0.300 before; "), line
        return cli_message(EdgeslimError(line, param=getattr(line, "params", ())), slim_cmd)

    budget = said({"lam": 0.02, "shrink": 1.0, "recovery": 0,
                   "budget": {"metric": "macs", "target_fraction": 0.5}})  # fmt: skip
    assert "give a larger budget (--target-macs, now 50%" in budget and "shrink" not in budget, budget
    assert (
        "train longer (--epochs)" in budget
        and "add the phase without slimming at the end (--recovery)" in budget
    ), budget
    params = said({"lam": 0.02, "shrink": 1.0, "recovery": "25%", "budget": {"metric": "params"}})
    assert "(--target-params:" in params and "lengthen the phase without slimming" in params, params
    shrink = said({"lam": 0.02, "shrink": 4.0, "recovery": 0, "budget": None})
    assert "lower the --shrink (now 4)" in shrink and "give a budget (--target-macs)" in shrink, shrink
    lam = said({"lam": 0.5, "shrink": None, "recovery": 0, "budget": None})
    assert "lower --lambda (now 0.5)" in lam and "shrink" not in lam, lam
    assert _collapse({"metrics": {"before": {key: 0.04}, "slim": {key: 0.0}}, "slimming": {}}) == ""
