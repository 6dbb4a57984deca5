"""``edgeslim bench --layer-table``: per-layer latency tables (torch hooks, ORT profiler) and
their round trip into ``edgeslim slim --target-latency --latency-table``."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from bench_helpers import PY, no_torch_env

from edgeslim.bench.layers import attribute_nodes, module_name, ort_file_table, torch_layer_table
from edgeslim.bench.timing import TimingConfig
from edgeslim.checkpoint import save_model
from edgeslim.cli import main
from edgeslim.errors import EdgeslimError
from edgeslim.export.onnx_export import export_onnx
from edgeslim.models.registry import ModelSpec, create_model
from edgeslim.sparsity.resource import build_resource, load_latency_table

FAST = ["--min-iters", "20", "--min-time", "0.02", "--warmup", "0.02", "--threads", "1"]
CFG = TimingConfig(warmup_s=0.02, warmup_iters=3, min_iters=20, min_time_s=0.02)


def _spec(arch: str) -> ModelSpec:
    return ModelSpec(arch=arch, num_classes=10, in_channels=1, input_size=[28, 28])


def _conv_linear_names(model: torch.nn.Module) -> set[str]:
    """The layers a latency table must cover: the resource model's conv/linear layers."""
    res = build_resource(model, torch.zeros(1, 1, 28, 28), "macs")
    return {c.module for c in res.graph.costs if c.kind != "bn"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """vgg-small and resnet20 (random weights): edgeslim checkpoints and edgeslim ONNX exports."""
    d = tmp_path_factory.mktemp("layers")
    out = {}
    for arch in ("vgg-small", "resnet20"):
        torch.manual_seed(0)
        model = create_model(_spec(arch))
        save_model(d / f"{arch}.pt", model, _spec(arch))
        export_onnx(model, d / f"{arch}.onnx", (1, 28, 28), validate=False)
        out[arch] = (model, d / f"{arch}.pt", d / f"{arch}.onnx")
    return out


@pytest.mark.parametrize(
    "node, module",
    [
        ("/features/features.0/Conv", "features.0"),
        ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
        ("/layer2/layer2.0/shortcut/Conv", "layer2.0.shortcut"),
        ("/classifier/Gemm", "classifier"),
        ("/conv1/Conv", "conv1"),
        ("/features/features.0/features.0.1/Conv", "features.0.1"),
        ("node_Conv_292", None),  # dynamo exporter: no scopes in the name
        ("/Conv", None),
        ("", None),
    ],
)
def test_module_name_from_torchscript_node_names(node: str, module: str | None) -> None:
    assert module_name(node) == module


@pytest.mark.parametrize("graph_opt", ["all", "basic", "disable"])
def test_ort_table_maps_every_conv_through_fusions(files, graph_opt: str) -> None:
    """resnet20 (pre-activation, nested names): with 'all' ORT fuses Conv+ReLU, Conv+Add and
    turns standalone BNs into NCHWc Convs named after the BN; each conv still gets its own kernel."""
    model, _, onnx_path = files["resnet20"]
    table = ort_file_table(str(onnx_path), 1, CFG, {"threads": 1, "graph_opt": graph_opt})
    assert set(table["layers"]) == _conv_linear_names(model)
    assert all(v > 0 for v in table["layers"].values())
    sources = list(table["nodes"].values())
    assert len(set(sources)) == len(sources)  # one kernel per conv
    if graph_opt == "all":
        # layer1.0.conv1 is fused with the ReLU after it (named after its output), not the BN-as-Conv
        assert table["nodes"]["layer1.0.conv1"].startswith("/layer1/layer1.0/relu_1/Relu_output_0")
        assert not any("bn1" in s for s in sources)
    else:
        assert table["nodes"]["layer1.0.conv1"] == "/layer1/layer1.0/conv1/Conv"
    assert table["fixed"] > 0  # standalone BNs, adds, pooling
    assert table["fixed"] + table["sum_layers_ms"] == pytest.approx(
        max(table["total_ms"], table["overhead"]["all_kernels_ms"])
    )


def test_attribution_refuses_unnamed_and_unprofiled_convs(files) -> None:
    import onnx

    _, _, onnx_path = files["vgg-small"]
    graph = onnx.load(str(onnx_path)).graph
    rows = [{"name": n.name, "op": n.op_type, "median_us": 1.0} for n in graph.node]
    layers, _ = attribute_nodes(graph, rows)
    assert set(layers) == {"features.0", "features.3", "features.7", "features.10", "features.14",
                           "features.17", "classifier"}  # fmt: skip
    with pytest.raises(
        EdgeslimError, match="no profiled ONNX Runtime kernel maps to '/features/features.3/Conv'"
    ):
        attribute_nodes(graph, [r for r in rows if r["name"] != "/features/features.3/Conv"])
    graph.node[0].name = "node_Conv_0"  # as the dynamo exporter names it
    with pytest.raises(
        EdgeslimError, match="cannot recover the PyTorch module name of ONNX node 'node_Conv_0'"
    ):
        attribute_nodes(graph, rows)


def test_torch_table_and_hook_overhead(files) -> None:
    model, _, _ = files["resnet20"]
    table = torch_layer_table(model, torch.randn(2, 1, 28, 28), CFG)
    assert set(table["layers"]) == _conv_linear_names(model)
    assert all(v > 0 for v in table["layers"].values()) and table["batch"] == 2
    assert table["fixed"] == pytest.approx(max(table["total_ms"] - table["sum_layers_ms"], 0.0))
    assert "hook_overhead_ms" in table["overhead"] and "hooks added" in table["method"]
    with pytest.raises(EdgeslimError, match="no conv or linear layers"):
        torch_layer_table(torch.nn.Sequential(torch.nn.ReLU()), torch.randn(1, 3), CFG)


def test_cli_layer_table_bad_input(files, tmp_path, capsys) -> None:
    _, pt, onnx_path = files["vgg-small"]
    out = tmp_path / "t.json"
    cases = [
        (["--batch", "1,32"], "one batch size"),
        (["--backend", "trtexec"], "cannot write a layer table"),
        (["--baseline", str(onnx_path)], "drop --baseline"),
    ]
    for extra, message in cases:
        assert main(["bench", str(onnx_path), "--layer-table", str(out), *extra, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    out.write_text("mine")
    assert main(["bench", str(pt), "--layer-table", str(out), *FAST]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "mine"  # not overwritten
    import onnx
    from onnx import TensorProto, helper

    relu = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"], name="/act/Relu")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        ), opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
    )  # fmt: skip
    onnx.save(relu, tmp_path / "relu.onnx")
    assert main(["bench", str(tmp_path / "relu.onnx"), "--layer-table", str(tmp_path / "r.json"), *FAST]) == 2
    assert "no conv or linear layers" in capsys.readouterr().err


@pytest.mark.slow
def test_round_trip_tables_drive_a_latency_budget(files, tmp_path, fmnist_dir: str) -> None:
    """torch table (in process) and ORT table (in a process without torch) for vgg-small; both
    cover every conv/linear layer, build a latency resource, and slim reaches the target."""
    model, pt, onnx_path = files["vgg-small"]
    t_torch, t_ort = tmp_path / "torch.json", tmp_path / "ort.json"
    assert main(["bench", str(pt), "--layer-table", str(t_torch), *FAST]) == 0
    r = subprocess.run(
        [PY, "-m", "edgeslim", "bench", str(onnx_path), "--layer-table", str(t_ort), *FAST],
        capture_output=True, text=True, env=no_torch_env(tmp_path), timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    names = _conv_linear_names(model)
    for path, backend in ((t_torch, "torch"), (t_ort, "onnxruntime")):
        table = load_latency_table(path)
        assert table["backend"] == backend and table["unit"] == "ms" and table["batch"] == 1
        assert set(table["layers"]) == names and all(v > 0 for v in table["layers"].values())
        res = build_resource(model, torch.zeros(1, 1, 28, 28), "latency", latency_table=table)
        assert res.dense == pytest.approx((table["fixed"] + sum(table["layers"].values())) * 1e-3)
        assert res.minimum < 0.7 * res.dense
    out = tmp_path / "slim"
    rc = main(["slim", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, "--subset", "600",
               "--test-subset", "200", "--epochs", "1", "--batch-size", "32", "--target-latency", "0.7",
               "--latency-table", str(t_ort), "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0
    b = json.loads((out / "report.json").read_text())["budget"]
    assert b["metric"] == "latency" and b["settings"]["latency_table"] == str(t_ort)
    assert b["achieved_fraction"] <= 0.7 + 1e-9 and b["achieved"] <= b["target"] * (1 + 1e-9)
