"""Device profiles (schema, lookup, errors) and the roofline predictor's arithmetic."""

from __future__ import annotations

import pytest
import yaml

from edgeslim.bench.predict import LayerCost, Observation, calibrate, predict_latency, scale_bytes
from edgeslim.bench.profiles import list_profiles, load_profile, profile_paths
from edgeslim.errors import EdgeslimError

EXPECTED = {
    "jetson-nano",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano-8gb",
    "jetson-orin-nano-super",
    "jetson-orin-nx-16gb",
    "jetson-agx-orin-64gb",
    "rpi4",
    "rpi5",
    "snapdragon-8-gen3",
    "host-cpu",
}


def test_all_shipped_profiles_validate_and_cite_sources():
    profs = {p.name: p for p in list_profiles()}
    assert EXPECTED <= set(profs)
    for name, p in profs.items():
        assert profile_paths()[name].stem == name  # file name == profile name
        assert p.preferred.precision in p.peak_gflops
        for key in ("peak_gflops", "memory_bandwidth_gbs", "ram_gb", "efficiency"):
            assert p.sources[key].strip()
    # ridge points from the notes §4.5: AGX Orin 64 fp16 ~208 FLOP/B, Orin Nano Super ~164
    assert profs["jetson-agx-orin-64gb"].ridge_point("fp16") == pytest.approx(208, rel=0.01)
    assert profs["jetson-orin-nano-super"].ridge_point("fp16") == pytest.approx(164, rel=0.01)
    assert "int8" not in profs["jetson-nano"].peak_gflops  # sm_53: no INT8 in TensorRT


def test_unknown_profile_suggests_close_names():
    with pytest.raises(EdgeslimError, match="did you mean jetson-orin-nano"):
        load_profile("jetson-orin-nan")


def test_invalid_profile_is_one_line(tmp_path):
    good = yaml.safe_load(profile_paths()["rpi5"].read_text())
    bad = dict(good, memory_bandwidth_gbs=-1)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(EdgeslimError) as exc:
        load_profile(path)
    assert "memory_bandwidth_gbs" in str(exc.value) and "\n" not in str(exc.value)
    nosrc = dict(good, sources={"peak_gflops": "x"})
    path.write_text(yaml.safe_dump(nosrc))
    with pytest.raises(EdgeslimError, match="sources must say"):
        load_profile(path)
    path.write_text(yaml.safe_dump(dict(good, typo_field=1)))
    with pytest.raises(EdgeslimError, match="typo_field"):
        load_profile(path)
    with pytest.raises(EdgeslimError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


def test_user_profile_dir_env(tmp_path, monkeypatch):
    good = yaml.safe_load(profile_paths()["rpi5"].read_text())
    (tmp_path / "my-board.yaml").write_text(yaml.safe_dump(dict(good, name="my-board")))
    monkeypatch.setenv("EDGESLIM_PROFILES", str(tmp_path))
    assert load_profile("my-board").name == "my-board"


def test_user_profiles_are_found_by_the_name_they_declare(tmp_path, monkeypatch, capsys):
    """A profile is listed, looked up and replaced by its ``name:`` (a trial's mypi.yaml declaring
    pi5-oc was listed as pi5-oc and refused as pi5-oc; a user's my-rpi5.yaml declaring rpi5 gave two rpi5
    rows and --profile rpi5 took the shipped one)."""
    from edgeslim.cli import main

    good = yaml.safe_load(profile_paths()["rpi5"].read_text())
    (tmp_path / "mypi.yaml").write_text(yaml.safe_dump(dict(good, name="pi5-oc")))
    (tmp_path / "my-rpi5.yaml").write_text(yaml.safe_dump(dict(good, ram_gb=16.0)))  # name: rpi5
    monkeypatch.setenv("EDGESLIM_PROFILES", str(tmp_path))
    assert load_profile("pi5-oc").name == "pi5-oc" and load_profile("mypi").name == "pi5-oc"  # (its stem too)
    assert load_profile("rpi5").ram_gb == 16.0  # the user's, searched before the shipped one
    names = [p.name for p in list_profiles()]
    assert names.count("rpi5") == 1 and "pi5-oc" in names and "mypi" not in names
    assert main(["profiles", "show", "pi5-oc"]) == 0
    capsys.readouterr()
    assert main(["profiles"]) == 0
    err = capsys.readouterr().err
    assert "from EDGESLIM_PROFILES" in err and "my-rpi5.yaml, replaces the shipped one" in err
    # (a review) two files of one folder declaring one name: one line naming both, not one dropped
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(dict(good, name="pi5-oc")))
    with pytest.raises(EdgeslimError, match="mypi.yaml and .*other.yaml both declare the name pi5-oc"):
        load_profile("pi5-oc")


def test_roofline_arithmetic_and_bounds():
    prof = load_profile("jetson-orin-nano-super")
    eff = prof.efficiency_for("fp16")
    peak, bw = prof.peak_gflops["fp16"] * 1e9, prof.memory_bandwidth_gbs * 1e9
    big = LayerCost("conv_big", macs=2e9, bytes=4e6, weight_bytes=2e6)  # 1000 FLOP/B at batch 1
    thin = LayerCost("conv_thin", macs=1e6, bytes=2e6, weight_bytes=1e5)  # ~1 FLOP/B
    pred = predict_latency([big, thin], prof, "fp16", batch=4)
    b, t = pred.layers
    assert b.bound == "compute" and t.bound == "memory"
    assert b.seconds == pytest.approx(2 * 2e9 * 4 / (eff.compute * peak) + eff.launch_us * 1e-6)
    assert t.memory_s == pytest.approx((1e5 + 1.9e6 * 4) / (eff.memory * bw))
    half = predict_latency(scale_bytes([thin], "fp16"), prof, "fp16", batch=4).layers[0]
    assert half.memory_s == pytest.approx(t.memory_s / 2)  # fp32-counted bytes re-expressed at fp16
    assert pred.total_s == pytest.approx(b.seconds + t.seconds)
    assert "PREDICTION" in pred.label
    # weight bytes do not scale with the batch; activations do
    assert predict_latency([thin], prof, "fp16", batch=8).layers[0].memory_s < 8 * t.memory_s / 4 * 1.0001
    with pytest.raises(EdgeslimError, match="no peak compute for precision int8"):
        predict_latency([big], "jetson-nano", "int8")


def test_calibration_recovers_known_efficiency():
    prof = load_profile("host-cpu")
    layers = [LayerCost(f"l{i}", macs=(i + 1) * 3e6, bytes=(i + 1) * 2e5, weight_bytes=1e5) for i in range(6)]
    true = prof.efficiency.model_copy(update={"compute": 0.3, "memory": 0.3, "launch_us": 7.0})
    obs = [
        Observation(layers, b, predict_latency(layers, prof, batch=b, efficiency=true).total_s)
        for b in (1, 32)
    ]
    fit = calibrate(obs, prof)
    assert fit.compute == pytest.approx(0.3, rel=1e-6) and fit.launch_us == pytest.approx(7.0, rel=1e-6)
    one = calibrate(obs[1:], prof)  # one point: launch overhead kept from the profile, k fitted
    again = predict_latency(layers, prof, batch=32, efficiency=one).total_s
    assert again == pytest.approx(obs[1].seconds, rel=1e-6)


def test_an_int8_qdq_model_is_predicted_at_int8_as_its_fp32_graph(tmp_path):
    """A user trial predicted an INT8 (Q/DQ) ONNX on a phone profile 3.8x slower than its FP32 file:
    every QuantizeLinear / DequantizeLinear was priced as a kernel launch and the graph at fp32. An
    INT8 runtime folds them into the layers: the Q/DQ graph costs as its FP32 graph, predicted at
    int8; a profile without INT8 figures refuses it in one line."""
    import numpy as np
    from bench_helpers import DENSE_CFG, export_vgg

    from edgeslim.bench.onnx_cost import onnx_cost
    from edgeslim.export.qdq import quantize_qdq
    from edgeslim.pipelines.bench import BenchRequest, predict

    fp32 = export_vgg(DENSE_CFG, tmp_path / "m.onnx")
    calib = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    int8 = quantize_qdq(fp32, tmp_path / "m.int8.onnx", calib, style="onnxruntime").path
    a, b = onnx_cost(fp32), onnx_cost(int8)
    assert b.quantized and not a.quantized
    assert (len(b.layers), b.macs, b.bytes, b.params) == (len(a.layers), a.macs, a.bytes, a.params)
    trt_style = onnx_cost(quantize_qdq(fp32, tmp_path / "m.qdq.onnx", calib, style="tensorrt").path)
    assert trt_style.quantized and (trt_style.macs, trt_style.bytes, trt_style.params) == (
        a.macs,
        a.bytes,
        a.params,
    )
    res = predict(
        BenchRequest(model=str(int8), baseline=str(fp32), predict=True, profile="jetson-orin-nano-8gb")
    )
    assert res["precision"] == {"baseline": "fp16", "slim": "int8"}
    assert res["speedup"]["1"] > 1.0  # the INT8 model is the faster one
    with pytest.raises(EdgeslimError, match="is INT8 \\(Q/DQ\\) and profile 'snapdragon-8-gen3' has no INT8"):
        predict(BenchRequest(model=str(int8), predict=True, profile="snapdragon-8-gen3"))
    with pytest.raises(
        EdgeslimError, match="'rpi4' has no peak compute for precision fp16"
    ):  # (what was asked)
        predict(BenchRequest(model=str(int8), predict=True, profile="rpi4", precision="fp16"))
    # a bench record's prediction (report, rerender) uses the same rule: int8, or the model is skipped
    from edgeslim.bench.report import add_predictions

    record = {"models": {"baseline": {"cost": a.to_dict()}, "slim": {"cost": b.to_dict()}}, "batches": [1],
              "env": {}, "backend": "onnxruntime"}  # fmt: skip
    add_predictions(record, load_profile("jetson-orin-nano-8gb"))
    orin = record["prediction"]["models"]
    assert orin["slim"]["1"]["total_ms"] < orin["baseline"]["1"]["total_ms"]
    add_predictions(record, load_profile("snapdragon-8-gen3"))
    assert set(record["prediction"]["models"]) == {"baseline"} and "slim" in record["prediction"]["skipped"]


def test_predictions_price_channels_padded_to_the_profile_multiple(tmp_path):
    """A 12-channel layer runs as 16 on a device whose kernels compute blocks of 8: bench --predict
    and a bench record's prediction price it so, as the budget does (they priced 12 before, and
    disagreed with the budget that slimmed the model); a record whose ONNX file is gone keeps the
    exported widths, and says so."""
    from bench_helpers import export_vgg

    from edgeslim.bench.compare import model_facts
    from edgeslim.bench.onnx_cost import onnx_cost
    from edgeslim.bench.report import add_predictions
    from edgeslim.pipelines.bench import BenchRequest, predict

    odd = export_vgg([12, "M", 20], tmp_path / "odd.onnx")
    flat, padded = onnx_cost(odd), onnx_cost(odd, multiple=8)
    assert padded.macs > flat.macs and padded.bytes > flat.bytes and padded.params == flat.params
    assert onnx_cost(odd, multiple=1).macs == flat.macs
    prof = load_profile("jetson-orin-nano-8gb")
    want = predict_latency(scale_bytes(padded.layers, "fp16"), prof, "fp16").total_s * 1e3
    res = predict(BenchRequest(model=str(odd), predict=True, profile=prof.name))
    assert res["channel_multiple"] == {"model": 8}
    assert res["models"]["model"]["1"]["total_s"] * 1e3 == pytest.approx(want)
    record = {"models": {"slim": model_facts(str(odd))}, "batches": [1], "env": {}, "backend": "onnxruntime"}
    add_predictions(record, prof)
    assert record["prediction"]["models"]["slim"]["1"]["total_ms"] == pytest.approx(want)
    assert record["prediction"]["channel_multiple"] == {"slim": 8}
    # a run measured at int8 (bench --backend trtexec --precision int8) is predicted at int8, in multiples of
    # 32 (a device trial's run was predicted at FP16, in multiples of 8)
    int8 = {**record, "backend": "trtexec", "options": {"precision": "int8"}}
    add_predictions(int8, prof)
    assert int8["prediction"]["channel_multiple"] == {"slim": 32}
    export_vgg([12, "M", 20, 20], odd)  # another model at that path now: not the one measured
    add_predictions(record, prof)
    assert record["prediction"]["channel_multiple"] == {"slim": 1}
    odd.unlink()
    add_predictions(record, prof)
    unpadded = predict_latency(scale_bytes(flat.layers, "fp16"), prof, "fp16").total_s * 1e3
    assert (
        record["prediction"]["models"]["slim"]["1"]["total_ms"] == pytest.approx(unpadded) and unpadded < want
    )
    assert record["prediction"]["channel_multiple"] == {"slim": 1}


def test_predict_refuses_an_input_of_dynamic_height(tmp_path):
    """A trial's ONNX with dynamic H and W was predicted at a conv time of 2.7e-8 s (the symbolic sizes
    priced as 1); measuring the same file refuses it, and so does the prediction."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.pipelines.bench import BenchRequest, predict

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, "H", "W"])],
        [w],
    )
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(
        EdgeslimError,
        match="dyn.onnx: input 'x' has a dynamic dimension 2 \\(H\\); export with a fixed input size",
    ):
        predict(BenchRequest(model=str(path), predict=True, profile="host-cpu"))


def _save(tmp_path, name: str, nodes: list, inputs: list, inits: list) -> str:
    """A one-output ONNX graph (output ``y``, shape left to inference) saved as ``name``."""
    import onnx
    from onnx import TensorProto, helper

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, name, inputs, [y], inits)
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_einsum_is_priced_and_control_flow_running_macs_is_unknown(tmp_path, caplog):
    """The new-code review (finding 2): onnx_cost left out Einsum's MACs (two attention einsums: 401,408
    of 708,736, the rest from the projections) and everything inside If/Loop/Scan subgraphs (an If with
    a Conv per branch, a Loop running a Conv 4 times: 0 MACs), reporting them as known. Einsum is
    priced as the PyTorch counter prices torch.einsum; a control-flow node running MAC ops leaves the
    model's MACs unknown, with one warning, and a prediction refuses it naming the cause."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.bench.onnx_cost import onnx_cost
    from edgeslim.pipelines.bench import BenchRequest, predict

    seq = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 49, 64]) for n in ("q", "k")]
    attn = [helper.make_node("Einsum", ["q", "k"], ["a"], equation="bnd,bmd->bnm"),
            helper.make_node("Einsum", ["a", "k"], ["y"], equation="bnm,bmd->bnd")]  # fmt: skip
    assert onnx_cost(_save(tmp_path, "einsum", attn, seq, [])).macs == 2 * 49 * 49 * 64
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")

    def branch(name: str) -> object:
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("Conv", ["x", "w"], [name])], name, [], [out])

    cond = numpy_helper.from_array(np.array(True), "c")
    path = _save(tmp_path, "branches", [helper.make_node("If", ["c"], ["y"], then_branch=branch("t"),
                 else_branch=branch("e"))], [x], [w, cond])  # fmt: skip
    with caplog.at_level("WARNING", logger="edgeslim.bench.onnx_cost"):
        cost = onnx_cost(path)
    assert cost.macs is None and cost.bytes is None and len(cost.unknown) == 1
    assert len(caplog.records) == 1 and "run MAC operators in subgraphs" in caplog.records[0].getMessage()
    with pytest.raises(EdgeslimError, match="branches.onnx: its MACs and bytes cannot be priced: 1 If/Loop"):
        predict(BenchRequest(model=path, predict=True, profile="host-cpu"))
    body = helper.make_graph(
        [helper.make_node("Identity", ["ci"], ["co"]), helper.make_node("Conv", ["x", "w"], ["v"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("ci", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("co", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
    )  # fmt: skip
    trips = numpy_helper.from_array(np.array(4, np.int64), "n")
    path = _save(
        tmp_path, "loop", [helper.make_node("Loop", ["n", "c"], ["y"], body=body)], [x], [w, trips, cond]
    )
    assert onnx_cost(path).macs is None
    # control flow without MAC ops inside (a shape chosen at run time) leaves the MACs known
    light = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "light", [],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["z"]),
             helper.make_node("If", ["c"], ["y"], then_branch=light, else_branch=light)]  # fmt: skip
    assert onnx_cost(_save(tmp_path, "light", nodes, [x], [w, cond])).macs == 4 * 27 * 36


def test_the_warning_on_a_dynamic_height_names_it_and_the_fix(tmp_path, caplog):
    """The new-code review (finding 8): for an ONNX of dynamic H and W the warning said the sizes "could
    not be read from an ONNX Runtime run", though no run is tried at an unknown input size, and the
    prediction's refusal of unknown sizes said to install onnxruntime or simplify the file. Both name
    the dynamic input and the fix, a fixed input size, now."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.bench.onnx_cost import onnx_cost

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    with caplog.at_level("WARNING", logger="edgeslim.bench.onnx_cost"):
        cost = onnx_cost(_save(tmp_path, "dyn", [helper.make_node("Conv", ["x", "w"], ["y"])], [x], [w]))
    want = "input 'x' has a dynamic size (H, W); export with a fixed input size"
    assert cost.macs is None and cost.why.endswith(want)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'dyn.onnx'}: the sizes of 1 layer(s) (Conv_0) are unknown: {want}; its MACs and bytes "
        "are reported as unknown"
    ]


def test_the_batch_of_a_file_is_its_image_inputs_not_its_first_input(tmp_path):
    """The new-code review (finding 7): onnx_cost took dim 0 of the first graph input as the batch, also
    when that input is no batch (inputs `scale[3]` then `img[4,3,64,64]`: per-sample MACs divided by 3,
    197,401,260 against 148,050,944). The batch is the one the image-like inputs (rank >= 3) agree on;
    where they disagree the MACs are unknown, saying so."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.bench.onnx_cost import onnx_cost

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [6])
    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [4, 3, 8, 8])
    nodes = [helper.make_node("Conv", ["img", "w"], ["c"]), helper.make_node("Add", ["c", "scale"], ["y"])]
    cost = onnx_cost(_save(tmp_path, "scaled", nodes, [scale, img], [w]))
    assert cost.macs == 8 * 27 * 36  # (per sample: 6x6 positions)
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 8, 1, 1])
    nodes = [helper.make_node("Conv", ["img", "w"], ["c"]), helper.make_node("Mul", ["c", "mask"], ["y"])]
    cost = onnx_cost(_save(tmp_path, "clash", nodes, [img, mask], [w]))
    assert cost.macs is None and cost.why.startswith("the inputs disagree on the batch ('img' 4, 'mask' 2)")


def test_an_onnx_whose_external_weights_are_missing_is_named_so(tmp_path, capsys):
    """A trial's ONNX kept its weights in a .data file that was not copied along: onnx's own text
    came through with no fix."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.cli import main

    w = numpy_helper.from_array(np.ones((64, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 8, 8])],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, location="m.data", size_threshold=0)  # fmt: skip
    (tmp_path / "m.data").unlink()
    for args in (["bench", str(path), "--predict", "--profile", "host-cpu"], ["bench", str(path)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path} keeps its weights in a separate file, " in err[0], err
        assert "m.data, which is not there; copy that file beside it" in err[0]
    # ONNX Runtime's own wording (the reader on a device without onnx), in a folder with a space
    from edgeslim.bench.backends import get_backend

    spaced = tmp_path / "my models"
    spaced.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), spaced / "m.onnx",
              save_as_external_data=True, location="m.data", size_threshold=0)  # fmt: skip
    (spaced / "m.data").unlink()
    with pytest.raises(
        EdgeslimError, match=f"keeps its weights in a separate file, {spaced / 'm.data'}, which"
    ):
        get_backend("onnxruntime").open(str(spaced / "m.onnx"), {})
