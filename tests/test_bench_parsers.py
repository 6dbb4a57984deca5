"""Parsers for real captured tool output: tegrastats (JetPack 4-7), trtexec, TensorRT errors."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from edgeslim.bench.backends.trt import buffer_bytes, explain_deserialize_error
from edgeslim.bench.backends.trtexec import (
    build_command,
    error_lines,
    explain_failure,
    parse_summary,
    parse_times,
    parse_version,
)
from edgeslim.bench.tegrastats import TegrastatsSampler, parse_line, summarize_samples
from edgeslim.bench.timing import TimingConfig
from edgeslim.errors import EdgeslimError

FIX = Path(__file__).parent / "fixtures"


def line(name: str) -> str:
    return (FIX / "tegrastats" / name).read_text().strip()


def test_tegrastats_jetpack4_nano_and_xavier():
    nano = parse_line(line("nano_jp4.txt"))
    assert (nano.ram_used_mb, nano.ram_total_mb, nano.swap_used_mb) == (1180, 3965, 149)
    assert nano.cpu_load == [30, 33, 28, 26] and nano.cpu_mhz == [1036] * 4
    assert (nano.gpu_load, nano.gpu_mhz, nano.emc_mhz) == (0, [76], 1600)
    assert nano.input_power_mw == (4520, "POM_5V_IN")
    assert nano.temps_c["GPU"] == 59 and nano.rails_mw["POM_5V_CPU"] == 1078
    nx = parse_line(line("xavier_nx_jp4.txt"))
    assert nx.gpu_load == 45 and nx.gpu_mhz == [1300] and nx.emc_load == 2
    assert nx.input_power_mw == (14025, "VDD_IN") and nx.rails_mw["VDD_GPU"] == 6854
    assert "RAM" not in nx.rails_mw and "SWAP" not in nx.rails_mw


def test_tegrastats_tx2_without_clocks():
    tx2 = parse_line(line("tx2_jp4.txt"))
    assert tx2.gpu_load == 0 and tx2.gpu_mhz == [] and tx2.emc_mhz is None
    assert tx2.input_power_mw == (3140, "VDD_IN") and len(tx2.cpu_load) == 6


def test_tegrastats_orin_jetpack5_and_7():
    jp5 = parse_line(line("agx_orin_jp5.txt"))
    assert jp5.timestamp == "04-11-2025 10:36:27"
    assert jp5.gpu_mhz == [0, 0] and jp5.rails_mw["VDD_GPU_SOC"] == 2340
    assert "CV0" not in jp5.temps_c and jp5.temps_c["tj"] == pytest.approx(44.343)  # -256C = sensor off
    # AGX Orin has no VDD_IN: total = sum of rails (like jtop's total_power)
    assert jp5.input_power_mw == (2340 + 390 + 4025 + 0 + 301, "sum of rails")
    jp7 = parse_line(line("agx_orin_jp7.txt"))
    assert jp7.gpu_load == 12 and jp7.gpu_mhz == [1300, 1300] and jp7.emc_mhz == 3199
    assert jp7.rails_mw == {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500}
    assert jp7.temps_c["gpu"] == pytest.approx(47.625) and len(jp7.cpu_load) == 12
    thor = parse_line(line("thor_short.txt"))
    assert thor.gpu_load is None and thor.gpu_mhz == [1000, 1000, 1000]
    assert parse_line(line("orin_jp6_short.txt")).gpu_mhz == [1300]


def test_energy_per_inference_from_input_rail():
    samples = [parse_line(line("xavier_nx_jp4.txt"))] * 4
    s = summarize_samples(samples, iterations=1000, window_s=2.0)
    assert s["power_rail"] == "VDD_IN" and s["power_mean_mw"] == 14025
    assert s["energy_per_inference_mj"] == pytest.approx(14025 * 2.0 / 1000)
    assert s["temp_max_c"] == 47.5  # PMIC@100C placeholder ignored


def test_sampler_reads_a_tegrastats_process(tmp_path):
    """The sampler's subprocess path, fed by a stand-in executable that prints a real captured line."""
    exe = tmp_path / "tegrastats"
    exe.write_text(
        f"#!/bin/sh\nwhile true; do cat {FIX / 'tegrastats' / 'agx_orin_jp7.txt'}; sleep 0.02; done\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(20, exe=str(exe)) as s:
        t0 = time.monotonic()
        time.sleep(0.3)
        t1 = time.monotonic()
    got = s.window(t0, t1)
    assert len(got) >= 3 and all(x.gpu_mhz == [1300, 1300] for x in got)
    assert not TegrastatsSampler(exe=None).available or os.path.exists("/usr/bin/tegrastats")


def test_sampler_stamps_samples_when_they_are_taken(tmp_path):
    """A tegrastats whose output goes through C stdio (here sed, as tegrastats' own printf would) is
    block-buffered into a pipe: samples came in bursts of eight lines, up to 0.4 s late here, stamped outside the window
    they measured. The sampler runs it line-buffered (coreutils' stdbuf), and stops all it started (the
    stand-in's loop outlived a plain terminate())."""
    exe = tmp_path / "tegrastats"
    exe.write_text(
        f"#!/bin/sh\nwhile true; do cat {FIX / 'tegrastats' / 'agx_orin_jp7.txt'}; sleep 0.05; done | sed -n p\n"
    )
    before = _processes_running(exe)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(50, exe=str(exe)) as s:
        t0 = time.monotonic()
        time.sleep(1.0)
        t1 = time.monotonic()
    stamps = [x.t - t0 for x in s.window(t0, t1)]
    assert len(stamps) >= 5 and stamps[0] < 0.25, stamps
    assert max(b - a for a, b in zip(stamps, stamps[1:])) < 0.25, stamps
    time.sleep(0.2)
    assert _processes_running(exe) == before == 0


def _processes_running(exe) -> int:
    """Live processes whose command line names ``exe`` (zombies left out)."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        n += str(exe) in cmd and state != "Z"
    return n


def test_trtexec_summary_trt10_and_trt8():
    s = parse_summary((FIX / "trtexec" / "trt10_summary.txt").read_text())
    assert s["throughput_qps"] == pytest.approx(130.298)
    g = s["gpu_compute"]
    assert g["median_ms"] == pytest.approx(7.14139) and g["p90_ms"] == pytest.approx(10.2881)
    assert g["p99_ms"] == pytest.approx(12.9485) and s["h2d"]["mean_ms"] == pytest.approx(0.0122212)
    assert s["gpu_compute_total_s"] == pytest.approx(2.96536) and "cov_warning_pct" not in s
    old = parse_summary((FIX / "trtexec" / "trt8_summary_cov.txt").read_text())
    assert old["cov_warning_pct"] == pytest.approx(2.10486) and old["d2h"]["max_ms"] == 0
    assert "p90_ms" not in old["latency"] and old["latency"]["p99_ms"] == pytest.approx(1.55853)
    with pytest.raises(EdgeslimError, match="no trtexec performance summary"):
        parse_summary("&&&& FAILED TensorRT.trtexec")
    verbose = (FIX / "trtexec" / "trt10_summary.txt").read_text() + (
        FIX / "trtexec" / "verbose_explanations.txt"
    ).read_text()
    assert parse_summary(verbose) == s  # --verbose's metric explanations are no statistics


def test_a_failed_trtexec_build_says_why_in_one_line():
    """A trtexec that could not parse the ONNX was reported as "could not deserialize m.onnx" with its
    last line; the parser's own error comes first now, with its continuation line."""
    text = (FIX / "trtexec" / "onnx_parse_failure.txt").read_text()
    assert error_lines(text)[:2] == [
        "ModelImporter.cpp:732: ERROR: builtin_op_importers.cpp:5428 In function importFallbackPluginImporter: "
        '[8] Assertion failed: creator && "Plugin not found, are the plugin name, version, and namespace correct?"',
        "Failed to parse onnx file",
    ]
    msg = explain_failure(text, "m.onnx", 1)
    assert msg.startswith("trtexec failed on m.onnx (exit 1): ModelImporter.cpp:732")
    assert "Plugin not found" in msg and "Failed to parse onnx file" in msg and "\n" not in msg
    assert "deserialize" not in msg and "End node" not in msg
    tag = (FIX / "trt_errors" / "serialization_tag.txt").read_text()  # an engine: the runtime's words
    assert "serialization version/tag mismatch" in explain_failure(tag, "m.engine", 1)


def test_trtexec_times_and_versions():
    t = parse_times(FIX / "trtexec" / "exportTimes.json")
    assert t["device"] == pytest.approx([1.38e-3, 1.40e-3, 1.36e-3]) and len(t["enqueue"]) == 3
    assert parse_times(FIX / "trtexec" / "exportTimes.json", warmup_ms=200) == t  # (10.x: no warm-up in it)
    # TensorRT <= 8.3 writes the warm-up too: trtexec's summary counts from the first compute at >= --warmUp
    old = parse_times(FIX / "trtexec" / "exportTimes_trt82.json", warmup_ms=200)
    assert old["device"] == pytest.approx([1.38e-3, 1.40e-3, 1.36e-3])
    assert len(parse_times(FIX / "trtexec" / "exportTimes_trt82.json")["device"]) == 8
    assert parse_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100200] # trtexec") == (10, 2, 0)
    assert parse_version("[TensorRT v8601]") == (8, 6, 1)
    assert parse_version("no banner") is None


def test_trtexec_flags_follow_the_version():
    cfg = TimingConfig(warmup_s=0.5, min_iters=300, min_time_s=3)
    shapes = {"input": [32, 1, 28, 28]}
    v10 = build_command("trtexec", "m.onnx", (10, 3, 0), shapes, cfg, "fp16", True, "t.json")
    assert "--fp16" in v10 and "--useCudaGraph" in v10 and "--noDataTransfers" in v10
    i8 = build_command("trtexec", "m.onnx", (10, 3, 0), shapes, cfg, "int8")  # as the export builds it
    assert "--int8" in i8 and "--fp16" in i8
    assert "--shapes=input:32x1x28x28" in v10 and "--warmUp=500" in v10 and "--iterations=300" in v10
    assert "--exportTimes=t.json" in v10 and "--onnx=m.onnx" in v10
    v11 = build_command("trtexec", "m.engine", (11, 1, 0), None, cfg, "fp32", False)
    assert "--noCudaGraph" in v11 and "--noDataTransfers" not in v11 and "--loadEngine=m.engine" in v11
    with pytest.raises(EdgeslimError, match="weak typing removed"):
        build_command("trtexec", "m.onnx", (11, 1, 0), None, cfg, "int8")


@pytest.mark.parametrize(
    "name, expect",
    [
        ("version_mismatch.txt", "built with TensorRT 8.0.1 but this runtime is TensorRT 8.0.0"),
        ("device_mismatch.txt", "compute capability 8.6 but this GPU is 8.9"),
        ("serialization_tag.txt", "serialization version/tag mismatch"),
        ("plugin_missing.txt", "uses a TensorRT plugin, which is not registered"),
        ("plugin_missing_named.txt", "plugin Gemmtensorrt_llm (version 1), which is not registered"),
    ],
)
def test_trt_deserialize_errors_become_one_line(name, expect):
    """A missing plugin's log says "Serialization assertion" too: it was called a version mismatch."""
    msg = explain_deserialize_error((FIX / "trt_errors" / name).read_text(), "model.engine")
    fix = "LD_PRELOAD" if "plugin" in name else "rebuild"
    assert expect in msg and fix in msg and "\n" not in msg
    assert "plugin" not in name or "mismatch" not in msg


def test_engine_buffers_hold_padded_formats_and_data_dependent_outputs():
    """Buffers were the shape's bytes: too small for a CHW32 INT8 input, and 1 byte for an output whose
    shape TensorRT knows only after the run (-1 dims: NonZero, NMS)."""
    assert buffer_bytes([1, 3, 224, 224], 4) == 3 * 224 * 224 * 4
    assert buffer_bytes([1, 3, 224, 224], 1, vector_dim=1, components=32) == 32 * 224 * 224
    assert buffer_bytes([2, 64, 7, 7], 2, vector_dim=1, components=8) == 2 * 64 * 49 * 2  # already a multiple
    assert buffer_bytes([0, 10], 4) == 1  # an empty tensor still gets an address
    assert buffer_bytes([-1, 4], 4, upper_bound=4096) == 4096
    with pytest.raises(EdgeslimError, match="depends on the data.*backend trtexec"):
        buffer_bytes([-1, 4], 4, upper_bound=None)


def test_tensorrt_backend_errors_without_tensorrt(tmp_path):
    from edgeslim.bench.backends import get_backend

    for name in ("tensorrt", "trtexec"):  # engines can carry plugin code: refused before anything runs
        with pytest.raises(EdgeslimError, match="TensorRT engine, which can carry plugin code"):
            get_backend(name).open(str(tmp_path / "x.engine"), {})
    trusted = {"trust_pickle": True}
    with pytest.raises(EdgeslimError, match="does not exist"):  # (said before TensorRT is asked for)
        get_backend("tensorrt").open(str(tmp_path / "x.engine"), trusted)
    (tmp_path / "x.engine").write_bytes(b"ftrt" + bytes(60))  # (not an engine TensorRT would read)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EdgeslimError, match="tensorrt is not importable"):
            get_backend("tensorrt").open(str(tmp_path / "x.engine"), trusted)
    with pytest.raises(EdgeslimError, match="no-trtexec does not exist"):
        get_backend("trtexec").open(str(tmp_path / "x.onnx"), {"trtexec": str(tmp_path / "no-trtexec")})
    with pytest.raises(EdgeslimError, match="unknown backend"):
        get_backend("tflite")


def test_an_engine_whose_header_begins_like_a_pickle_is_still_an_engine(tmp_path):
    """An Ultralytics engine begins with its metadata's length: 640 bytes is 80 02 00 00, which the
    pickle test matched first, so the file was sent to PyTorch as "a PyTorch model" (from the
    review of the content-based formats). The engine test comes first, and a file named like an
    engine is refused untrusted unless its bytes prove it ONNX."""
    from edgeslim.bench.backends import check_engine_trusted, model_format
    from edgeslim.utils.sniff import sniff

    meta = b'{"imgsz": [640, 640]' + b" " * (640 - 21) + b"}"
    engine = tmp_path / "yolo.engine"
    engine.write_bytes(len(meta).to_bytes(4, "little") + meta + b"ftrt" + bytes(range(64)))
    assert engine.read_bytes()[:2] == b"\x80\x02" and sniff(engine) == "tensorrt-engine"
    assert model_format(engine) == "engine"
    pickled = tmp_path / "old.engine"
    pickled.write_bytes(
        b"\x80\x02}q\x00."
    )  # a pickle named .engine: not provably ONNX, so an engine's refusal
    with pytest.raises(
        EdgeslimError, match=r"is named like a TensorRT engine \(its bytes do not show it ONNX\), which"
    ):
        check_engine_trusted(str(pickled), {})


def test_cuda_graph_capture_with_cuda_python_11() -> None:
    """A review: JetPack 5's cuda-python 11 declares ``cudaGraphInstantiate(graph, pLogBuffer,
    bufferSize)`` (12 and 13: ``(graph, flags)``), so ``--cuda-graph`` escaped as a TypeError. The
    stand-in has cuda-python 11.8's signatures of the calls a capture makes (no GPU here)."""
    import types

    from edgeslim.bench.backends.trt import TrtSession

    class Cudart11:
        cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal=0)

        def cudaStreamCreate(self):
            return (0, 7)

        def cudaStreamSynchronize(self, stream, /):
            return (0,)

        def cudaStreamBeginCapture(self, stream, mode, /):
            return (0,)

        def cudaStreamEndCapture(self, stream, /):
            return (0, "graph")

        def cudaGraphInstantiate(self, graph, pLogBuffer, bufferSize, /):  # noqa: N803 - cuda-python's names
            return (0, "exec", None)

        def cudaGraphInstantiateWithFlags(self, graph, flags, /):
            return (0, "exec")

    class Engine:
        num_io_tensors = 0

        def create_execution_context(self):
            return types.SimpleNamespace(execute_async_v3=lambda stream: True)

    session = TrtSession(types.SimpleNamespace(), Engine(), Cudart11(), True, 0, "")
    session._capture()
    assert session.graph_exec == "exec"
