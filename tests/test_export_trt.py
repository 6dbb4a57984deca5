"""TensorRT side of export: version gates, trtexec scripts, INT8 Q/DQ, .ort, and engine builds
(the builds run only where ``tensorrt`` imports; everywhere else they are skipped with the reason)."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeslim.cli import main
from edgeslim.errors import EdgeslimError
from edgeslim.export import export_onnx
from edgeslim.export import trt_version as tv
from edgeslim.export.qdq import load_calibration_data, quantize_qdq, save_calibration_data
from edgeslim.export.trtexec import trtexec_plan
from edgeslim.export.validate import real_inputs
from edgeslim.models import create_model
from edgeslim.utils.parsing import parse_size

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not importable here (no GPU / TensorRT)")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10.3.0.26", (10, 3, 0)),
        ("11", (11, 0, 0)),
        (10, (10, 0, 0)),
        ("8.5.2.2", (8, 5, 2)),
        ((10, 16), (10, 16, 0)),
    ],
)
def test_parse_trt_version(text, expected):
    assert tv.parse_trt_version(text) == expected


@pytest.mark.parametrize("bad", ["ten", "8.2", "7", ""])
def test_parse_trt_version_rejects(bad):
    with pytest.raises(EdgeslimError):
        tv.parse_trt_version(bad)


def test_version_gates():
    v85, v86, v103, v1012, v11 = (8, 5, 2), (8, 6, 1), (10, 3, 0), (10, 12, 0), (11, 4, 0)
    assert [tv.needs_explicit_batch_flag(v) for v in (v85, v103, v11)] == [True, False, False]
    assert [tv.weak_typing_available(v) for v in (v85, v1012, v11)] == [True, True, False]
    assert [tv.calibrator_available(v) for v in (v103, v11)] == [True, False]
    assert [tv.calibrator_deprecated(v) for v in (v85, (10, 0, 1), (10, 1, 0), v11)] == [
        False,
        False,
        True,
        False,
    ]
    assert [tv.precision_flags_deprecated(v) for v in (v103, v1012, v11)] == [False, True, False]
    assert [tv.strongly_typed_flag_available(v) for v in (v86, v103)] == [False, True]
    assert [tv.trtexec_defaults_v11(v) for v in (v103, v11)] == [False, True]
    assert [tv.trtexec_skip_inference_flag(v) for v in (v85, v86)] == ["--buildOnly", "--skipInference"]
    assert [tv.precision_path(v103, p) for p in tv.PRECISIONS] == ["fp32", "builder-flag", "calibrator"]
    assert [tv.precision_path(v11, p) for p in tv.PRECISIONS] == ["fp32", "autocast", "qdq"]
    with pytest.raises(EdgeslimError):
        tv.precision_path(v103, "bf16")


def _plan(tmp_path, precision, version, **kw):
    return trtexec_plan(tmp_path / "m.onnx", tmp_path / f"m.{precision}.engine", input_name="input",
                        input_shape=(3, 32, 32), precision=precision, trt_version=version,
                        timing_cache=tmp_path / "timing.cache", **kw)  # fmt: skip


@pytest.mark.parametrize("version", ["8.5", "10", "11"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trtexec_plan_flags(tmp_path, version, precision):
    plan = _plan(tmp_path, precision, version, qdq_onnx=tmp_path / "m.int8.qdq.onnx", workspace=512 << 20)
    build, run = plan.build, plan.run
    assert "--memPoolSize=workspace:512" in build and "--timingCacheFile=timing.cache" in build
    assert f"--saveEngine=m.{precision}.engine" in build and "--profilingVerbosity=detailed" in build
    v11 = version == "11"
    assert ("--fp16" in build) == (precision in ("fp16", "int8") and not v11)
    assert ("--int8" in build) == (precision == "int8" and not v11)
    assert not any(f in build for f in ("--best", "--workspace=1024"))
    if precision == "int8":
        assert "--onnx=m.int8.qdq.onnx" in build
    elif precision == "fp16" and v11:
        assert plan.prepare and "modelopt.onnx.autocast" in plan.prepare[0]
        assert "--onnx=m.fp16.onnx" in build
    else:
        assert "--onnx=m.onnx" in build and not plan.prepare
    # the timing run measures the same thing on both versions: 10 asks, 11 has it by default
    assert all((f in run) != v11 for f in ("--useCudaGraph", "--noDataTransfers", "--useSpinWait"))
    assert ("--buildOnly" if version == "8.5" else "--skipInference") in build


def test_trtexec_plan_dynamic_shapes_and_script_syntax(tmp_path):
    plan = _plan(tmp_path, "fp16", "10", dynamic_batch=True, batch=8, max_batch=64)
    assert "--minShapes=input:1x3x32x32" in plan.build
    assert "--optShapes=input:8x3x32x32" in plan.build and "--maxShapes=input:64x3x32x32" in plan.build
    assert "--shapes=input:8x3x32x32" in plan.run
    script = tmp_path / "m.trtexec.sh"
    script.write_text(plan.render())
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_trtexec_int8_needs_calibration(tmp_path):
    with pytest.raises(EdgeslimError, match="INT8 needs calibration"):
        _plan(tmp_path, "int8", "11")
    plan = _plan(tmp_path, "int8", "10", calib_cache=tmp_path / "m.calib.cache")
    assert "--calib=m.calib.cache" in plan.build


def test_parse_size():
    assert parse_size("1G") == 1 << 30 and parse_size("512M") == 512 << 20 and parse_size("2GiB") == 2 << 30
    for bad in ("lots", "12", "1.5X"):
        with pytest.raises(EdgeslimError):
            parse_size(bad)


def test_cli_trt_without_tensorrt_writes_script(tmp_path, capsys):
    if HAS_TRT:
        pytest.skip("tensorrt imports here: the engine is built instead (see test_build_engine_*)")
    out = tmp_path / "v.onnx"
    rc = main(["export", "vgg-small", "--onnx", str(out), "--trt", "--precision", "fp16", "--dynamic-batch",
               "--batch", "4", "--workspace", "256M", "--trt-version", "11", "--json"])  # fmt: skip
    assert rc == 0
    cap = capsys.readouterr()
    assert "tensorrt is not importable here" in cap.err
    res = json.loads(cap.out)
    script = tmp_path / "v.fp16.trtexec.sh"
    assert res["trtexec_script"] == str(script) and script.stat().st_mode & 0o111
    text = script.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "--fp16" not in code and "modelopt.onnx.autocast" in text and "--memPoolSize=workspace:256" in text
    assert "--optShapes=input:4x3x32x32" in text and "--timingCacheFile=timing.cache" in text
    onnx.checker.check_model(onnx.load(str(out)))  # the ONNX is still written
    # a second run refuses to overwrite the script as well as the ONNX
    assert main(["export", "vgg-small", "--onnx", str(out), "--trt"]) == 2


def test_cli_engine_path_never_overwrites_without_force(tmp_path, capsys):
    """The engine a script's trtexec (or the builder) writes is an output like the ONNX: an existing
    file, a directory or a name that is not an engine is refused in one line before anything is written."""
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's own model")
    engine = tmp_path / "old.engine"
    engine.write_bytes(b"the user's engine")
    base = ["export", "vgg-small", "--onnx", str(tmp_path / "v.onnx"), "--trt", "--engine"]
    for target, why in (
        (mine, "should end in .engine"),
        (engine, "exists"),
        (tmp_path, "should end in .engine"),
    ):
        capsys.readouterr()
        assert main([*base, str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0] and "--engine" in err[0], err
    assert mine.read_bytes() == b"the user's own model" and engine.read_bytes() == b"the user's engine"
    assert not (tmp_path / "v.onnx").exists()
    if not HAS_TRT:  # an engine name in capitals is one (as bench reads it)
        assert main([*base, str(tmp_path / "m.ENGINE")]) == 0
        capsys.readouterr()
    if not HAS_TRT:  # with --force the script names the engine it will replace
        assert main([*base, str(engine), "--force"]) == 0
        assert "--saveEngine=old.engine" in (tmp_path / "old.trtexec.sh").read_text()


@pytest.fixture(scope="module")
def fm_calib(fmnist_dir):
    return real_inputs((1, 28, 28), data="fashion-mnist", data_dir=fmnist_dir, n=160)


def test_int8_qdq_symmetric_and_close(tmp_path, fm_calib):
    model = create_model("vgg-small", in_channels=1, input_size=(28, 28)).eval()
    res = export_onnx(model, tmp_path / "f.onnx", (1, 28, 28), dynamic_batch=True, validate=False)
    x = fm_calib.x.numpy()
    calib = save_calibration_data(tmp_path / "f.calib.npy", x[:128])
    assert load_calibration_data(calib).shape == (128, 1, 28, 28)
    q = quantize_qdq(res.path, tmp_path / "f.int8.qdq.onnx", x[:128], check=x[128:])
    m = onnx.load(str(q.path))
    zps = [i for i in m.graph.initializer if "zero_point" in i.name]
    assert q.quantized_nodes > 0 and zps
    assert all(not onnx.numpy_helper.to_array(z).any() for z in zps)  # symmetric: zero point 0 (TensorRT)
    assert all(onnx.numpy_helper.to_array(z).dtype == np.int8 for z in zps)
    assert q.check_images == 32 and q.top1_agreement >= 0.9
    # the logits stay float (a review: a last Q/DQ pair put them on 256 levels, 2 of 256 top-1s tied)
    producer = {o: n for n in m.graph.node for o in n.output}
    assert producer["logits"].op_type not in ("DequantizeLinear", "QuantizeLinear")
    s = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": x[128:136]})[0]
    with torch.no_grad():
        assert np.abs(y - model(torch.from_numpy(x[128:136])).numpy()).max() < 0.1 * np.abs(y).max() + 1e-3


def test_the_int8_check_looks_at_every_output(tmp_path, fm_calib):
    """The INT8 check compared the first output only: a second output whose small channel INT8
    rounds to one constant (it shares a scale with a channel 10^6 times larger) went unnoticed. Its
    flat channel is counted and its difference is in the largest one; the top-1 stays the first's."""
    from torch import nn

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.head = nn.Linear(8, 10)
            self.side = nn.Conv2d(8, 2, 1)  # a second map: one channel 10^6 times the other
            self.out = nn.Conv2d(2, 2, 1)  # (an identity after it: the outputs themselves stay float)
            with torch.no_grad():
                self.side.weight[0] *= 1000.0
                self.side.weight[1] *= 1e-3
                self.out.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
                self.out.bias.zero_()

        def forward(self, x):
            f = self.stem(x)
            return self.head(f.mean((2, 3))), self.out(self.side(f))

    torch.manual_seed(0)
    res = export_onnx(Two().eval(), tmp_path / "two.onnx", (1, 28, 28), dynamic_batch=True, validate=False)
    x = fm_calib.x.numpy()
    q = quantize_qdq(res.path, tmp_path / "two.int8.onnx", x[:128], check=x[128:])
    assert q.flat_channels == 1 and q.top1_agreement is not None
    assert q.max_abs_diff > 1.0  # the large channel's rounding, not the logits' (about 0.01)


def test_int8_for_onnx_runtime_stores_int8_weights(tmp_path, fm_calib):
    """ORT's form: INT8 weights stored as INT8 (a quarter of the FP32 file), UInt8 activations with
    zero points, close to the FP32 model; TensorRT's form keeps FP32 weights (above)."""
    model = create_model("vgg-small", in_channels=1, input_size=(28, 28)).eval()
    res = export_onnx(model, tmp_path / "f.onnx", (1, 28, 28), dynamic_batch=True, validate=False)
    x = fm_calib.x.numpy()
    q = quantize_qdq(res.path, tmp_path / "f.int8.onnx", x[:128], check=x[128:], style="onnxruntime")
    assert q.style == "onnxruntime" and q.method == "minmax" and q.quantized_nodes > 0
    m = onnx.load(str(q.path))
    weights = [onnx.numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("_quantized")]
    assert weights and all(w.dtype == np.int8 for w in weights if w.ndim == 4)  # conv weights as INT8
    acts = [onnx.numpy_helper.to_array(i) for i in m.graph.initializer if "zero_point" in i.name]
    assert any(z.dtype == np.uint8 for z in acts)
    assert q.path.stat().st_size < 0.35 * res.path.stat().st_size
    assert q.check_images == 32 and q.top1_agreement >= 0.9
    # the logits stay float (a review: a last Q/DQ pair put them on 256 levels, 2 of 256 top-1s tied)
    producer = {o: n for n in m.graph.node for o in n.output}
    assert producer["logits"].op_type not in ("DequantizeLinear", "QuantizeLinear")
    s = ort.InferenceSession(str(q.path), providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": x[128:136]})[0]
    with torch.no_grad():
        assert np.abs(y - model(torch.from_numpy(x[128:136])).numpy()).max() < 0.1 * np.abs(y).max() + 1e-3
    with pytest.raises(EdgeslimError, match="unknown INT8 style"):
        quantize_qdq(res.path, tmp_path / "g.onnx", x[:128], style="tflite")


@pytest.mark.slow
def test_cli_int8_for_onnx_runtime_and_phones(tmp_path, fmnist_dir, capsys):
    out = tmp_path / "v.onnx"
    args = ["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(out), "--data", "fashion-mnist",
            "--data-dir", fmnist_dir, "--precision", "int8", "--calib-images", "64", "--ort"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ort_int8"]["style"] == "onnxruntime" and res["ort_int8"]["calib_images"] == 64
    assert "qdq" not in res and res["slim"] is False
    assert res["ort_int8_mobile"]["path"] == str(tmp_path / "v.int8.ort")
    assert not (tmp_path / "v.calib.npy").exists() and not list(
        tmp_path.glob("*.trtexec.sh")
    )  # TensorRT's only
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    ys = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
          for f in ("v.int8.onnx", "v.int8.ort")]  # fmt: skip
    assert np.abs(ys[0] - ys[1]).max() <= 1e-4
    assert main([*args, "--force"]) == 0
    assert "next: edgeslim bench" in (err := capsys.readouterr().err) and "v.int8.onnx --baseline" in err


@pytest.mark.slow
def test_cli_int8_and_ort_mobile(tmp_path, fmnist_dir, capsys):
    out = tmp_path / "v.onnx"
    rc = main(["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(out), "--data", "fashion-mnist",
               "--data-dir", fmnist_dir, "--trt", "--precision", "int8", "--calib-images", "64", "--ort",
               "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["onnx"]["validation"]["real_data"] and res["qdq"]["quantized_nodes"] > 0
    assert np.load(tmp_path / "v.calib.npy").shape == (64, 1, 28, 28)
    ort_file = tmp_path / "v.ort"
    assert res["ort"]["path"] == str(ort_file)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    ys = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
          for p in (out, ort_file)]  # fmt: skip
    assert np.abs(ys[0] - ys[1]).max() <= 1e-4
    if not HAS_TRT:
        text = (tmp_path / "v.int8.trtexec.sh").read_text()
        assert "--onnx=v.int8.qdq.onnx" in text and "--int8" in text  # default target: TensorRT 10


# ---------------------------------------------------------------- real TensorRT (skipped here)


@pytest.mark.trt
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_engine_float(tmp_path, precision):
    from edgeslim.export.trt import EngineBuildConfig, build_engine

    res = export_onnx(create_model("vgg-small"), tmp_path / "m.onnx", (3, 32, 32), dynamic_batch=True)
    cache = tmp_path / "timing.cache"
    cfg = EngineBuildConfig(
        precision=precision, workspace=256 << 20, batch=4, max_batch=8, timing_cache=cache
    )
    built = build_engine(res.path, tmp_path / f"m.{precision}.engine", cfg)
    assert built.engine_bytes > 0 and cache.stat().st_size > 0
    assert json.loads(built.inspector_json.read_text())
    again = build_engine(res.path, tmp_path / "m2.engine", cfg)  # reuses the timing cache
    assert again.engine_bytes > 0


@pytest.mark.trt
@needs_trt
def test_build_engine_int8(tmp_path, fm_calib):
    from edgeslim.export.trt import EngineBuildConfig, build_engine, installed_trt_version

    model = create_model("vgg-small", in_channels=1, input_size=(28, 28)).eval()
    res = export_onnx(model, tmp_path / "f.onnx", (1, 28, 28), batch=8)
    x = fm_calib.x.numpy()
    src = res.path
    if tv.precision_path(installed_trt_version(), "int8") == "qdq":
        src = quantize_qdq(res.path, tmp_path / "f.int8.qdq.onnx", x[:128]).path
    cfg = EngineBuildConfig(
        precision="int8", batch=8, calib_data=x[:128], calib_cache=tmp_path / "f.calib.cache"
    )
    built = build_engine(src, tmp_path / "f.int8.engine", cfg)
    assert built.engine_bytes > 0


def test_build_engine_without_tensorrt_is_one_line(tmp_path):
    if HAS_TRT:
        pytest.skip("tensorrt imports here")
    from edgeslim.export.trt import TensorRTUnavailable, build_engine

    with pytest.raises(TensorRTUnavailable) as ei:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    assert "tensorrt cannot be imported" in str(ei.value) and "\n" not in str(ei.value)


def test_the_next_command_of_a_dynamic_batch_export_stays_within_its_largest_batch(tmp_path, capsys):
    """After --dynamic-batch --max-batch 16 the next command timed batch 32, above the engine's
    largest (from the docs audit); it times 1 and 16."""
    out = tmp_path / "d.onnx"
    assert main(["export", "vgg-small", "--onnx", str(out), "--dynamic-batch", "--max-batch", "16"]) == 0
    err = capsys.readouterr().err
    assert "--baseline" in err and "--batch 1,16 " in err, err
    assert main(["export", "vgg-small", "--onnx", str(out), "--dynamic-batch", "--force"]) == 0
    assert "--batch 1,32 " in capsys.readouterr().err


def test_a_forced_export_stopped_half_way_leaves_the_earlier_export_whole(tmp_path, capsys, monkeypatch):
    """An interrupt probe: export --force of another model, stopped after its ONNX, left the earlier
    model's .ort beside it (bench then compared the two networks); the INT8 review (finding 1): its files
    are staged and published together once every step succeeded, so a stop leaves the earlier export
    whole."""
    import edgeslim.export.ort_mobile as ort_mobile

    out = tmp_path / "v.onnx"
    args = ["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(out), "--no-validate", "--ort"]
    assert main(args) == 0 and (tmp_path / "v.ort").is_file()
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def stopped(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ort_mobile, "convert_to_ort", stopped)
    assert main([*args, "--force"]) == 130
    assert "nothing was written; the earlier files are as they were" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier
    monkeypatch.undo()
    # refused before it wrote anything (a shape it cannot run): the earlier export stays whole
    assert main(["export", "vgg-small", "--input-shape", "1,2,2", "--onnx", str(out), "--no-validate", "--ort",
                 "--force"]) == 2  # fmt: skip
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier
    # ... and a folder made for it goes again (a probe found empty output folders left behind)
    fresh = tmp_path / "new" / "v.onnx"
    assert main(["export", "vgg-small", "--input-shape", "1,2,2", "--onnx", str(fresh), "--no-validate"]) == 2
    assert not (tmp_path / "new").exists()
    capsys.readouterr()


def test_ort_conversion_does_not_overwrite_an_operator_config_without_force(tmp_path, capsys):
    """A review: `--ort` replaced a hand-written NAME.required_operators.config (its reduced ORT
    build's) and exited 0; the file is an output like the others now."""
    out, cfg = tmp_path / "v.onnx", tmp_path / "v.required_operators.config"
    cfg.write_text("# my operator config\n")
    args = ["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(out), "--ort"]
    assert main(args) == 2
    assert "v.required_operators.config already exists" in capsys.readouterr().err
    assert cfg.read_text() == "# my operator config\n" and not out.exists()
    assert main([*args, "--force"]) == 0
    assert cfg.read_text() != "# my operator config\n"


def test_the_int8_calibrator_reads_a_cache_only_when_no_images_were_given(tmp_path, monkeypatch):
    """A review: a .calib.cache left beside the ONNX by an earlier export (another model's scales)
    was handed to TensorRT, which then skips calibrating. TensorRT's base class and the CUDA buffer
    are stand-ins (no GPU here); the calibrator's own cache logic is what runs."""
    import types

    import edgeslim.export.trt as trt_mod

    stale = tmp_path / "slim.calib.cache"
    stale.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    base = types.SimpleNamespace(IInt8EntropyCalibrator2=type("Base", (), {"__init__": lambda self: None}))
    monkeypatch.setattr(
        trt_mod, "_DeviceBuffer", lambda n: types.SimpleNamespace(ptr=1, upload=lambda h: None)
    )
    data = np.zeros((16, 1, 28, 28), np.float32)
    assert trt_mod.make_entropy_calibrator(base, data, 8, stale).read_calibration_cache() is None
    reused = trt_mod.make_entropy_calibrator(base, data, 8, stale, reuse=True)
    assert reused.read_calibration_cache() == stale.read_bytes()
    fresh = trt_mod.make_entropy_calibrator(base, data, 8, stale)
    fresh.write_calibration_cache(b"new scales")
    assert stale.read_bytes() == b"new scales"


def test_int8_calibration_reads_every_image_it_reports(tmp_path, fm_calib, monkeypatch):
    """A review: 31 calibration images were reported as calib_images 31 while only 16 were read
    (the reader stopped before a partial chunk, which a dynamic batch takes)."""
    model = create_model("vgg-small", in_channels=1, input_size=(28, 28)).eval()
    res = export_onnx(model, tmp_path / "f.onnx", (1, 28, 28), dynamic_batch=True, validate=False)
    x = fm_calib.x.numpy()
    import edgeslim.export.qdq as qdq

    read, real = [], qdq._Reader.get_next
    monkeypatch.setattr(qdq._Reader, "get_next", lambda self: (d := real(self)) and (read.append(d) or d))
    q = quantize_qdq(res.path, tmp_path / "f.int8.onnx", x[:31], check=x[128:144], style="onnxruntime")
    assert q.calib_images == 31 == sum(len(next(iter(d.values()))) for d in read)
    fixed = export_onnx(model, tmp_path / "b4.onnx", (1, 28, 28), batch=4, validate=False)
    q = quantize_qdq(fixed.path, tmp_path / "b4.int8.onnx", x[:31], check=x[128:144], style="onnxruntime")
    assert q.calib_images == 28  # (a fixed batch of 4 takes whole batches only)


@pytest.mark.parametrize("version", ["8.6", "10", "11"])
def test_the_int8_engine_is_built_from_the_checked_qdq_onnx_and_the_json_says_so(
    tmp_path, fmnist_dir, capsys, version
):
    """The INT8 review (finding 3): the JSON said precision_path "calibrator" for --trt --precision int8 on
    TensorRT <= 10 while the written trtexec script builds explicit quantization from the Q/DQ ONNX (and the
    Python builder calibrated the FP32 ONNX itself, not the file whose agreement was reported). Every
    version builds from the Q/DQ ONNX now, and the JSON says "qdq"; no calibration cache is written."""
    out = tmp_path / "v.onnx"
    assert main(["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(out), "--data", "fashion-mnist",
                 "--data-dir", fmnist_dir, "--trt", "--precision", "int8", "--trt-version", version,
                 "--calib-images", "16", "--n-validate", "16", "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["precision_path"] == "qdq" and res["qdq"]["path"] == str(tmp_path / "v.int8.qdq.onnx")
    if not HAS_TRT:
        assert "--onnx=v.int8.qdq.onnx" in res["trtexec"]["build"]
    assert not (tmp_path / "v.calib.cache").exists()
