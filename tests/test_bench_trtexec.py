"""``edgeslim bench --backend trtexec`` as a Jetson user runs it, against stand-in ``trtexec`` and
``tegrastats`` scripts (no GPU and no Jetson here): a review that simulated a device install.

The stand-in trtexec follows a TensorRT 10.3 run's log (its lines flushed one by one, as trtexec's
logger flushes each): it "builds" an ONNX file, "loads" the engine, warms up and times, and writes the
phase it is in to a file the stand-in tegrastats reads, which prints a JetPack 6 line whose input power
and GPU load follow the phase. The code under test is edgeslim's side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_helpers import DENSE_CFG, PY, THIN_CFG, export_vgg, quantize_qdq

from edgeslim.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"
#: input power (mW) and GPU load (%) of each phase of the stand-in trtexec
PHASES = {"build": (4000, 5), "load": (3000, 2), "time": (9000, 99), "idle": (3000, 0)}

FAKE_TRTEXEC = """#!{py}
import json, os, shutil, sys, time
args = sys.argv[1:]
open({log!r}, "a").write(json.dumps(args) + "\\n")
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b26] # trtexec " + " ".join(args), flush=True)
if args == ["--help"]:
    sys.exit(0)
opts = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in args)
def say(line):
    print("[12/07/2026-14:20:01] [I] " + line, flush=True)
def enter(phase):
    open({phase!r}, "w").write(phase)
if "onnx" in opts:
    enter("build"); time.sleep({build_s})
    if "saveEngine" in opts:
        open(opts["saveEngine"], "wb").write(b"engine of " + opts["onnx"].encode())
    if "skipInference" in opts:
        enter("idle"); say("Skipped inference phase since --skipInference is added."); sys.exit(0)
enter("load"); time.sleep({load_s})
say("Starting inference")
enter("time"); time.sleep({warm_s} + {timed_s})
say("Warmup completed 140 queries over 200 ms")
say("Timing trace has 300 queries over {timed_s} s")
shutil.copy({times!r}, opts["exportTimes"])
print(open({summary!r}).read(), flush=True)
time.sleep(0.3); enter("idle")
"""

FAKE_TEGRASTATS = """#!/bin/sh
while true; do
  case "$(cat {phase} 2>/dev/null)" in {cases} *) mw=3000 load=0;; esac
  echo "RAM 4722/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,off,off] EMC_FREQ 0%@2133 \\
GR3D_FREQ $load%@[1020] cpu@47.5C gpu@48.2C tj@48.2C VDD_IN ${{mw}}mW/${{mw}}mW VDD_SOC 1200mW/1200mW"
  sleep 0.05
done
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A dense and a thinner vgg-small ONNX (fixed batch 1), as export writes them."""
    d = tmp_path_factory.mktemp("trtexec")
    return export_vgg(DENSE_CFG, d / "dense.onnx", fixed_batch=True), export_vgg(
        THIN_CFG, d / "slim.onnx", fixed_batch=True
    )


def standin_tools(tmp_path: Path, build_s: float = 0.5, tegrastats: bool = True) -> tuple[Path, Path]:
    """The stand-in trtexec (and tegrastats, first on PATH) in ``tmp_path/bin``: (trtexec, its argv log)."""
    bin_dir, log, phase = tmp_path / "bin", tmp_path / "argv.jsonl", tmp_path / "phase"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(py=PY, log=str(log), phase=str(phase), build_s=build_s, load_s=0.3,
                                       warm_s=0.2, timed_s=0.5, times=str(FIXTURES / "exportTimes.json"),
                                       summary=str(FIXTURES / "trt10_summary.txt")))  # fmt: skip
    if tegrastats:
        cases = " ".join(f"{p}) mw={mw} load={load};;" for p, (mw, load) in PHASES.items())
        (bin_dir / "tegrastats").write_text(FAKE_TEGRASTATS.format(phase=phase, cases=cases))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return exe, log


def test_telemetry_leaves_the_engine_build_and_load_out(pair, tmp_path, monkeypatch) -> None:
    """A review (stand-in trtexec and tegrastats): the tegrastats window wrapped the whole trtexec call
    (build, engine load, warm-up, timing): the trial that built read 5.24 W and 28.5% GPU load, the one
    that loaded the cached engine 8.71 W and 94.5%. The engines are now built in trtexec runs of their
    own (--skipInference) before any window, and the window is the timed iterations, read from
    trtexec's log; report.md says what it covered."""
    dense, slim = pair
    exe, log = standin_tools(tmp_path)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "run"
    assert main(["bench", str(slim), "--baseline", str(dense), "--backend", "trtexec", "--trtexec", str(exe),
                 "--batch", "1", "--trials", "1", "--interval-ms", "50", "--warmup", "0.2", "--out", str(out)]) == 0  # fmt: skip
    runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip() != '["--help"]']
    builds = [a for a in runs if any(x.startswith("--onnx=") for x in a)]
    assert len(builds) == 2 and all("--skipInference" in a for a in builds)
    assert all(not any(x.startswith(("--warmUp", "--exportTimes")) for x in a) for a in builds)
    timed = [a for a in runs if a not in builds]
    assert len(timed) == 2 and all(any(x.startswith("--loadEngine=") for x in a) for a in timed)
    record = json.loads((out / "run.json").read_text())
    for trial in record["trials"]:
        tegra = trial["tegrastats"]["1"]
        assert tegra["window"] == "timed" and tegra["samples"] >= 3, tegra
        assert tegra["power_mean_mw"] == 9000 and tegra["gpu_load_mean"] == 99, tegra
    assert record["summary"]["slim"]["1"]["tegrastats"]["window"] == ["timed"]
    assert "tegrastats sampled during trtexec's timed iterations" in (out / "report.md").read_text()


def test_the_timed_window_is_read_from_trtexecs_log() -> None:
    """The window of the timed iterations: back from the report's first line by the span it gives, never
    before ``Starting inference``; without the span the warm-up and timed iterations; without the lines
    (another trtexec's log) none, and the caller's window around the whole run is used."""
    from edgeslim.bench.backends.trtexec import timed_window

    log = [(0.0, "[I] Engine deserialized in 0.4 sec"), (1.0, "[I] Starting inference"),
           (2.5, "[W] a warning while it runs"), (4.0, "[I] Warmup completed 12 queries over 1000 ms"),
           (4.0, "[I] Timing trace has 300 queries over 2.5 s"), (4.1, "[I] === Performance summary ===")]  # fmt: skip
    assert timed_window(log) == (1.5, 4.0, "timed")
    assert timed_window([*log[:4], (4.0, "[I] Timing trace has 300 queries over 9 s")]) == (1.0, 4.0, "timed")
    assert timed_window(log[:4]) == (1.0, 4.0, "inference")
    assert timed_window(log[:3]) is None and timed_window([log[0], *log[3:]]) is None


def test_trtexec_memory_is_not_measured_and_says_so(pair, tmp_path) -> None:
    """A review: the memory table of a trtexec bench gave the measuring process's own memory (its onnx
    import read as a 62 MiB "RSS delta" of the model), all marks taken before trtexec ran; its load time
    was that of ``trtexec --help``. They are left out, and the table and report say why."""
    dense, _ = pair
    exe, _ = standin_tools(tmp_path, build_s=0, tegrastats=False)
    out = tmp_path / "run"
    assert main(["bench", str(dense), "--backend", "trtexec", "--trtexec", str(exe), "--batch", "1", "--trials", "1",
                 "--warmup", "0.2", "--no-tegrastats", "--no-plots", "--out", str(out)]) == 0  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    assert set(record["trials"][0]["memory"]) == {"not_measured"} and record["trials"][0]["load_s"] is None
    assert set(record["summary"]["model"]["memory"]) == {"not_measured"}
    assert record["summary"]["model"]["load_s"] is None
    md = (out / "report.md").read_text()
    section = md.split("## Memory and size")[1].split("\n## ")[0]
    row = [ln for ln in section.splitlines() if ln.startswith("| model")][-1]  # (the header, then the row)
    assert [c.strip() for c in row.strip("|").split("|")][4:] == ["-", "-", "-", "-"], row
    assert "Memory and load time not measured (-): trtexec runs each model in a process of its own" in section


def test_each_file_is_built_in_its_own_precision(pair, tmp_path, capsys) -> None:
    """A review: a trtexec bench of an INT8 Q/DQ ONNX built it with --fp16 alone (export's script builds it
    --int8 --fp16), and precision int8 built the FP32 baseline --int8 too, uncalibrated, without a word. A
    Q/DQ file is now built in INT8 whatever precision says, a float file in the precision asked (FP16 by
    default), and precision int8 on a float file says what it times."""
    dense, _ = pair
    qdq = quantize_qdq(dense, tmp_path / "slim.int8.qdq.onnx")
    exe, log = standin_tools(tmp_path, build_s=0, tegrastats=False)
    args = ["bench", str(qdq), "--baseline", str(dense), "--backend", "trtexec", "--trtexec", str(exe), "--batch",
            "1", "--trials", "1", "--warmup", "0.2", "--no-tegrastats"]  # fmt: skip

    def builds() -> dict[str, list[str]]:
        runs = [json.loads(line) for line in log.read_text().splitlines()]
        out = {Path(x.split("=", 1)[1]).name: a for a in runs for x in a if x.startswith("--onnx=")}
        log.write_text("")
        return out

    assert main(args) == 0
    built = builds()
    assert {"--int8", "--fp16"} <= set(built[qdq.name]) and "--int8" not in built[dense.name]
    assert "--fp16" in built[dense.name]
    capsys.readouterr()
    assert main([*args, "--precision", "int8"]) == 0
    built = builds()
    assert {"--int8", "--fp16"} <= set(built[qdq.name]) and "--int8" in built[dense.name]
    err = capsys.readouterr().err
    assert (
        f"{dense} is a float ONNX: --precision int8 builds it in INT8 with TensorRT's placeholder ranges"
        in err
    )
    assert f"{qdq} is" not in err


def test_the_qdq_note_says_where_the_float_files_precision_came_from(pair, tmp_path, capsys) -> None:
    """Review of the day's code: with the precision chosen by the profile (no precision given) the Q/DQ
    file's note said "whatever --precision says; precision fp16 is for the float files". It names the
    profile whose precision it is, and names precision once (the CLI shows it as the flag)."""
    dense, _ = pair
    qdq = quantize_qdq(dense, tmp_path / "slim.int8.qdq.onnx")
    exe, _ = standin_tools(tmp_path, build_s=0, tegrastats=False)
    args = ["bench", str(qdq), "--baseline", str(dense), "--backend", "trtexec", "--trtexec", str(exe), "--batch",
            "1", "--trials", "1", "--warmup", "0.2", "--no-tegrastats", "--no-plots"]  # fmt: skip
    assert main([*args, "--profile", "jetson-orin-nano-8gb", "--out", str(tmp_path / "p")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"{qdq} is an INT8 Q/DQ ONNX: trtexec builds it in INT8 (--int8 --fp16, as export's script does); the "
        "profile jetson-orin-nano-8gb's fp16 is for the float files (give --precision for another)" in err
    ), err
    assert main([*args, "--precision", "fp32", "--out", str(tmp_path / "f")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "as export's script does); --precision fp32 is for the float files" in err, err
    assert err.count("precision") == 1, err


def test_the_ort_note_and_the_trtexec_build_agree_on_which_file_is_qdq(pair, tmp_path) -> None:
    """Review of the day's code: two Q/DQ detectors with different rules (bench's ONNX Runtime note:
    metadata, then a ``.int8.qdq.onnx`` name; trtexec's build: the graph, then a ``.qdq.onnx`` name) told
    a float file named ``.int8.qdq.onnx`` TensorRT's Q/DQ form while trtexec built it FP16, and a Q/DQ
    file named ``.qdq.onnx`` float while trtexec built it INT8. One rule (``qdq_style``) serves both."""
    import shutil

    from edgeslim.bench.backends.trtexec import TrtexecSession
    from edgeslim.pipelines.bench import BenchRequest, backend_and_options

    dense, _ = pair
    qdq = quantize_qdq(dense, tmp_path / "q.qdq.onnx")
    float_named_qdq = tmp_path / "f.int8.qdq.onnx"
    shutil.copyfile(dense, float_named_qdq)
    exe, _ = standin_tools(tmp_path, build_s=0, tegrastats=False)
    for path, int8 in ((qdq, True), (float_named_qdq, False), (dense, False)):
        said: list[str] = []
        backend_and_options(BenchRequest(model=str(path), backend="onnxruntime"), None, said.append)
        noted = any("INT8 Q/DQ ONNX for TensorRT" in s for s in said)
        built = TrtexecSession(str(exe), str(path), {}).precision
        assert (noted, built == "int8") == (int8, int8), (path.name, said, built)


def test_a_long_engine_build_is_no_part_of_the_measuring_process_limit(pair, tmp_path, monkeypatch) -> None:
    """A review: a long trtexec engine build was killed as "benchmark process timed out after 300 s; lower
    --min-time": the measuring process's limit (4 x max_time per batch size, and a minute) held the build
    too. The engines are built before the trials, each with a limit of its own; a measuring process past its
    limit says to raise max_time or lower min_iters. (The limit is lowered here to keep the test short.)"""
    from edgeslim.bench import compare
    from edgeslim.bench.timing import TimingConfig
    from edgeslim.errors import EdgeslimError

    dense, _ = pair
    exe, log = standin_tools(tmp_path, build_s=4, tegrastats=False)
    timing = TimingConfig(warmup_s=0.2, min_iters=3, min_time_s=0.1)
    monkeypatch.setattr(compare, "worker_timeout", lambda timing, batches: 6.0)
    options = {"trtexec": str(exe)}
    record = compare.run_comparison(
        {"model": str(dense)}, "trtexec", [1], 1, timing, options, tegrastats=False
    )
    assert record["trials"][0]["samples"]["1"]["device"]
    spec = {"model": str(dense), "backend": "trtexec", "options": options, "batches": [1],
            "timing": timing.to_dict(), "tegrastats": False}  # fmt: skip
    with pytest.raises(
        EdgeslimError, match=r"ran past its limit of 1 s .*; raise max_time, or lower min_iters"
    ) as e:
        compare.run_worker(spec, timeout=1.0)
    assert e.value.params == ("max_time", "min_iters")


def test_a_missing_onnx_is_said_missing_as_onnx(tmp_path, capsys) -> None:
    """Review of the day's code: ``bench slim.engine --onnx missing.onnx`` said "model file missing.onnx
    does not exist": the missing-file check names the onnx option too."""
    engine = tmp_path / "slim.engine"
    engine.write_bytes(b"not an engine, never read")
    exe, _ = standin_tools(tmp_path, build_s=0, tegrastats=False)
    missing = tmp_path / "missing.onnx"
    assert main(["bench", str(engine), "--onnx", str(missing), "--backend", "trtexec", "--trtexec", str(exe),
                 "--batch", "1", "--trials", "1", "--no-tegrastats"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == f"error: --onnx {missing} does not exist; check the path"


def test_a_mistyped_baseline_is_said_missing(pair, tmp_path, capsys) -> None:
    """A review: ``bench slim.onnx --baseline dense.onx`` (a typo) said the two "are files of different kinds,
    timed by different runtimes"; a missing file is now said missing, before its kind is read from its name."""
    dense, slim = pair
    typo = tmp_path / "dense.onx"
    assert main(["bench", str(slim), "--baseline", str(typo), "--no-tegrastats"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --baseline {typo} does not exist; check the path"
    assert main(["bench", str(tmp_path / "slim.onx"), "--baseline", str(dense), "--no-tegrastats"]) == 2
    assert f"model file {tmp_path / 'slim.onx'} does not exist; check the path" in capsys.readouterr().err


def test_a_folder_given_as_trtexec_is_refused_in_one_line(pair, tmp_path, capsys) -> None:
    """A review: ``--trtexec fakebin`` (the folder) said "No such file or directory (fakebin); check the path:
    its folder is missing ..."; a folder, or a file that is not executable, is refused as not a program."""
    dense, _ = pair
    plain = tmp_path / "trtexec.txt"
    plain.write_text("not a program")
    for given, what in ((tmp_path, "a folder"), (plain, "not executable")):
        assert (
            main(["bench", str(dense), "--backend", "trtexec", "--trtexec", str(given), "--no-tegrastats"])
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert err == f"error: --trtexec {given} is {what}; give the path of TensorRT's trtexec program (on JetPack " \
                      "/usr/src/tensorrt/bin/trtexec)", err  # fmt: skip


def test_one_onnx_for_two_engines_is_said(pair, tmp_path, capsys) -> None:
    """A review: one ``onnx`` gave trtexec the input of both engines of a comparison (the baseline's shapes
    taken from the slim ONNX) without a word; a note now says so."""
    dense, slim = pair
    exe, log = standin_tools(tmp_path, build_s=0, tegrastats=False)
    engines = [tmp_path / "slim.engine", tmp_path / "dense.engine"]
    for e in engines:
        e.write_bytes(b"engine")
    assert main(["bench", str(engines[0]), "--baseline", str(engines[1]), "--onnx", str(slim), "--backend",
                 "trtexec", "--trtexec", str(exe), "--trust-pickle", "--batch", "1", "--trials", "1", "--warmup",
                 "0.2", "--no-tegrastats"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert (
        f"--onnx {slim} gives trtexec the input name and shape of both engines, the baseline's too" in err
    ), err
