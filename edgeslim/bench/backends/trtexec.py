"""trtexec backend: build a version-aware command line, run it, parse its summary and times.

trtexec does its own warm-up and timing; edgeslim records its ``GPU Compute Time`` (kernels only,
the number to compare slim vs baseline) and the per-iteration ``--exportTimes`` JSON as raw samples;
``--exportProfile`` (with ``--separateProfileRun``) gives per-layer times for ``--layer-table``.
Flag differences (notes §1.8): TRT 11 turns CUDA graphs, spin-wait and no-transfers on by default
and drops ``--fp16/--int8``. NEVER RUN HERE; the parsers are tested on real captured output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgeslim.bench.backends import Backend, Session, check_engine_trusted, concrete_shape, model_format
from edgeslim.bench.timing import TimingConfig
from edgeslim.errors import EdgeslimError

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
_VER = re.compile(r"TensorRT v(\d+)")
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+)%\)) = ([0-9.eE+-]+) ms")
_LINE = re.compile(r"\] (Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): (.*min = .*)$")
_ERROR = re.compile(r"\[E\](?: \[TRT\])? (?:\d+: )?(.*)$")
_STAMPED = re.compile(r"^(?:\[\d\d/\d\d/\d{4}-|&&&&)")
_KEYS = {
    "Latency": "latency",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}


def find_trtexec(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if os.path.exists(explicit) else None
    return shutil.which("trtexec") or (JETSON_TRTEXEC if os.path.exists(JETSON_TRTEXEC) else None)


def locate_trtexec(explicit: str | None = None) -> str:
    """:func:`find_trtexec`'s path, or a one-line refusal saying where it was looked for."""
    exe = find_trtexec(explicit)
    if exe is not None and explicit and (os.path.isdir(exe) or not os.access(exe, os.X_OK)):
        what = "a folder" if os.path.isdir(exe) else "not executable"
        raise EdgeslimError(
            f"trtexec {explicit} is {what}; give the path of TensorRT's trtexec program (on JetPack {JETSON_TRTEXEC})",
            param="trtexec",
        )
    if exe is None:
        raise EdgeslimError(
            f"TensorRT's command-line tool is not on PATH or at {JETSON_TRTEXEC}; install TensorRT, or give its "
            "path as trtexec"
            if not explicit
            else f"trtexec {explicit} does not exist; give the path of TensorRT's trtexec (on JetPack {JETSON_TRTEXEC})",
            param="trtexec",
        )
    return exe


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``[TensorRT v100200]`` -> (10, 2, 0); ``v8601`` -> (8, 6, 1)."""
    m = _VER.search(text)
    if not m:
        return None
    n = int(m.group(1))
    if n >= 10000:
        return n // 10000, (n // 100) % 100, n % 100
    return n // 1000, (n // 100) % 10, n % 100


def error_lines(text: str) -> list[str]:
    """trtexec's (and TensorRT's) ``[E]`` messages, each with its untagged continuation lines, in order,
    repeats and the parser's ``--- End node ---`` markers left out."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        if not (m := _ERROR.search(line)):
            continue
        msg = m.group(1).strip()
        for more in lines[i + 1 :]:
            if not more.strip() or _STAMPED.match(more):
                break
            msg += " " + more.strip()
        if msg and "--- End node ---" not in msg and msg not in out:
            out.append(msg)
    return out


def explain_failure(text: str, model: str, returncode: int) -> str:
    """One line for a failed trtexec run: an engine it could not read as the tensorrt backend says it,
    else trtexec's most specific error messages (the parser's or builder's first, its summary after)."""
    if model_format(model) != "onnx" and re.search(r"deserializ", text, re.IGNORECASE):
        from edgeslim.bench.backends.trt import explain_deserialize_error

        return f"trtexec failed ({returncode}): {explain_deserialize_error(text, model)}"
    errors = error_lines(text)
    specific = [e for e in errors if re.search(r"ERROR|Assertion|Error Code|not supported", e)]
    why = "; ".join(list(dict.fromkeys([*specific, *errors]))[:3]) or "no error message in its output"
    if len(why) > 400:
        why = why[:397] + "..."
    return f"trtexec failed on {model} (exit {returncode}): {why}"


def parse_summary(text: str) -> dict:
    """The ``=== Performance summary ===`` block: ms statistics per line, throughput, CoV warning."""
    out: dict = {}
    for line in text.splitlines():
        if m := re.search(r"Throughput: ([0-9.eE+-]+) qps", line):
            out["throughput_qps"] = float(m.group(1))
        elif m := _LINE.search(line):
            stats = {}
            for name, pct, val in _STAT.findall(m.group(2)):
                key = f"p{pct}" if pct else name
                stats[f"{key}_ms"] = float(val)
            out[_KEYS[m.group(1)]] = stats
        elif m := re.search(r"Total Host Walltime: ([0-9.eE+-]+) s", line):
            out["host_walltime_s"] = float(m.group(1))
        elif m := re.search(r"Total GPU Compute Time: ([0-9.eE+-]+) s", line):
            out["gpu_compute_total_s"] = float(m.group(1))
        elif m := re.search(r"coefficient of variance = ([0-9.eE+-]+)%", line):
            out["cov_warning_pct"] = float(m.group(1))
    if "gpu_compute" not in out:
        raise EdgeslimError("no trtexec performance summary found (did the run fail? see the log above it)")
    return out


def _warmup_ms(cfg: TimingConfig) -> int:
    """The ``--warmUp`` (ms) of a timing config."""
    return int(cfg.warmup_s * 1000)


def parse_times(path: str | os.PathLike, warmup_ms: float = 0.0) -> dict[str, list[float]]:
    """``--exportTimes`` JSON -> per-iteration seconds for compute, latency (H2D+compute+D2H), enqueue.

    The timed iterations are those from the first whose compute starts at or after ``warmup_ms`` (the
    ``--warmUp`` given), trtexec's own rule for its summary: TensorRT <= 8.3 writes the warm-up
    iterations into the file too (later versions leave them out, so the rule drops nothing there).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeslimError(f"cannot read trtexec times {path}: {exc}") from exc
    rec = [r for r in data if isinstance(r, dict) and "computeMs" in r]
    first = next((i for i, r in enumerate(rec) if r.get("startComputeMs", warmup_ms) >= warmup_ms), len(rec))
    rec = rec[first:]
    out = {
        "device": [r["computeMs"] * 1e-3 for r in rec],
        "latency": [r["latencyMs"] * 1e-3 for r in rec if "latencyMs" in r],
    }
    enq = [(r["endEnqMs"] - r["startEnqMs"]) * 1e-3 for r in rec if "startEnqMs" in r and "endEnqMs" in r]
    if enq:
        out["enqueue"] = enq
    return out


_TRACE = re.compile(r"Timing trace has \d+ queries over ([0-9.eE+-]+) s")
_REPORT = re.compile(r"Warmup completed|Timing trace has")

#: what a trtexec run's telemetry window covered (:func:`timed_window`; "run": the whole trtexec process)
WINDOWS = ("timed", "inference", "run")


def timed_window(lines: list[tuple[float, str]]) -> tuple[float, float, str] | None:
    """The seconds (on the clock that stamped ``lines``, trtexec's stdout lines as they came) of a run's
    timed iterations: from its report's first line (``Warmup completed``, ``Timing trace has N queries
    over T s``, printed as inference ends, each line flushed) back T s, not before ``Starting
    inference``: ``(t0, t1, "timed")``; without T, ``(start, end, "inference")`` (the warm-up in it);
    None where the lines are not there (the engine load and all then in the caller's window)."""
    start = next((i for i, (_, line) in enumerate(lines) if "Starting inference" in line), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if _REPORT.search(lines[i][1])), None)
    if end is None:
        return None
    t_start, t_end = lines[start][0], lines[end][0]
    span = next((float(m.group(1)) for _, line in lines[end:] if (m := _TRACE.search(line))), None)
    if span is None or span <= 0:
        return t_start, t_end, "inference"
    return max(t_start, t_end - span), t_end, "timed"


def parse_layer_profile(path: str | os.PathLike) -> dict:
    """``--exportProfile`` JSON -> ``{"runs", "layers": [{"name", "median_ms", "average_ms",
    "time_ms", "percentage"}]}``, layers in engine order.

    The file is a list whose first item is ``{"count": N}`` (profiled iterations; ``timeMs`` is
    the sum over them) followed by one object per TensorRT layer. Layer names join the fused
    ONNX node (and constant) names with ``" + "``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeslimError(f"cannot read trtexec profile {path}: {exc}") from exc
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise EdgeslimError(
            f'{path} is not a trtexec --exportProfile file (a list starting with {{"count": N}})'
        )
    layers = []
    for r in data[1:]:
        if not isinstance(r, dict) or "name" not in r or "averageMs" not in r:
            raise EdgeslimError(f"{path}: unexpected profile entry {str(r)[:80]!r} (need name, averageMs)")
        layers.append(
            {
                "name": str(r["name"]),
                # medianMs since TRT 8.x; older profiles only have the average
                "median_ms": float(r.get("medianMs", r["averageMs"])),
                "average_ms": float(r["averageMs"]),
                "time_ms": float(r.get("timeMs", 0.0)),
                "percentage": float(r.get("percentage", 0.0)),
            }
        )
    if not layers:
        raise EdgeslimError(f"{path} has no layers (was the profile run skipped?)")
    return {"runs": int(data[0]["count"]), "layers": layers}


def profile_flags(version: tuple[int, int, int] | None, export_profile: str) -> list[str]:
    """Flags for a per-layer profile in a separate run, so the timed run stays unprofiled.
    Layer names: ``--profilingVerbosity=detailed`` (TRT >= 8.2), ``--nvtxMode=verbose`` before."""
    major, minor = (version or (10, 0, 0))[:2]
    names = "--profilingVerbosity=detailed" if (major, minor) >= (8, 2) else "--nvtxMode=verbose"
    return [f"--exportProfile={export_profile}", "--separateProfileRun", names]


def build_command(
    exe: str,
    model: str,
    version: tuple[int, int, int] | None,
    shapes: dict[str, list[int]] | None,
    cfg: TimingConfig,
    precision: str = "fp32",
    cuda_graph: bool = False,
    export_times: str | None = None,
    export_profile: str | None = None,
    save_engine: str | None = None,
    timing_cache: str | None = None,
    build_only: bool = False,
) -> list[str]:
    """A trtexec command line with the flags spelled for the installed version. ``save_engine``
    (an ONNX model): also write the engine it builds there, ``timing_cache``: with that tactic cache
    (read and updated), so later runs load it instead of building again. ``build_only``: build the
    engine and exit (``--skipInference``, ``--buildOnly`` before 8.6), no timing flags."""
    major = version[0] if version else 10
    cmd = [exe]
    is_onnx = model_format(model) == "onnx"
    cmd.append(f"--onnx={model}" if is_onnx else f"--loadEngine={model}")
    if is_onnx and save_engine:
        cmd.append(f"--saveEngine={save_engine}")
    if is_onnx and timing_cache and major >= 8:  # (TensorRT 8.0 added it)
        cmd.append(f"--timingCacheFile={timing_cache}")
    if shapes:
        spec = ",".join(f"{n}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items())
        cmd.append(f"--shapes={spec}")
    if is_onnx and precision != "fp32":
        if major >= 11:
            raise EdgeslimError(
                f"TensorRT {major} has no --{precision} flag (weak typing removed): put the precision into the "
                "ONNX file (ModelOpt AutoCast / Q-DQ) and bench it with precision fp32",
                param="precision",
            )
        # --int8 alone means INT8 "in addition to fp32": the layers left in float (the output tail) would
        # run in FP32, not as the export's engine (--int8 --fp16) runs them
        cmd += ["--int8", "--fp16"] if precision == "int8" else [f"--{precision}"]
    if build_only:
        from edgeslim.export.trt_version import trtexec_skip_inference_flag

        if export_profile:  # (the layer names a later profile run reports are built into the engine)
            cmd.append(profile_flags(version, export_profile)[-1])
        return [*cmd, trtexec_skip_inference_flag(version or (10, 0, 0))]
    cmd += [
        f"--warmUp={_warmup_ms(cfg)}",
        f"--duration={max(int(round(cfg.min_time_s)), 0)}",
        f"--iterations={cfg.min_iters}",
    ]
    if major >= 11:  # CUDA graph, spin-wait, no transfers are the defaults
        if not cuda_graph:
            cmd.append("--noCudaGraph")
    else:
        cmd += ["--noDataTransfers", "--useSpinWait"]
        if cuda_graph:
            cmd.append("--useCudaGraph")
    if major >= 10 or (major == 8 and version and version[1] >= 6):
        cmd.append("--percentile=90,95,99")
    if export_times:
        cmd.append(f"--exportTimes={export_times}")
    if export_profile:
        cmd += profile_flags(version, export_profile)
    return cmd


class TrtexecSession(Session):
    backend = "trtexec"

    def __init__(self, exe: str, model: str, options: dict) -> None:
        self.exe, self.model, self.options = exe, model, options
        head = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
        self.version = parse_version(head.stdout + head.stderr)
        self.shapes: dict[str, list[int]] | None = None
        self.batch = 1
        self.summary: dict = {}
        self.summaries: dict[str, dict] = {}  # per batch: the last timed run's performance summary
        self.log_tail = ""
        self.precision = self._precision()
        #: the last timed run's telemetry window (:func:`timed_window`), None where its log did not show it
        self.window: tuple[float, float, str] | None = None

    def _precision(self) -> str:
        """The precision an ONNX file is built in, as export's trtexec scripts build it: a Q/DQ file's INT8
        (``--int8 --fp16``) whatever was asked (a review: it was built ``--fp16`` alone), a float file's the
        one asked, else FP16 (FP32 where a layer has no FP16 kernel); TensorRT 11 takes it from the file."""
        asked = self.options.get("precision")
        if model_format(self.model) != "onnx":
            return str(asked or "fp32")
        from edgeslim.bench.onnx_cost import qdq_style

        v11 = (self.version or (10, 0, 0))[0] >= 11
        if qdq_style(self.model) is not None:
            return "fp32" if v11 else "int8"
        return str(asked) if asked else "fp32" if v11 else "fp16"

    def set_batch(self, batch: int) -> None:
        self.shapes, self.batch = None, batch
        source = self.model if model_format(self.model) == "onnx" else self.options.get("onnx")
        if source:  # (an engine's input from the ONNX it was built from: a dynamic one runs at any batch)
            from edgeslim.bench.onnx_cost import onnx_cost

            ins = onnx_cost(source).input_shapes
            shapes = {n: concrete_shape(n, s or [], batch) for n, s in ins.items()}
            # --shapes for a dynamic input only: trtexec refuses them for a static model ("Static model does
            # not take explicit shapes"), an export without a dynamic batch
            if any(shapes[n] != list(s or []) for n, s in ins.items()):
                self.shapes = shapes
        elif batch != 1:
            raise EdgeslimError(
                f"with an engine file the trtexec backend needs the ONNX it was built from to run batch {batch} "
                "(its input's name and shape); give it as onnx, or use batch 1",
                param=("onnx", "batch"),
            )

    def _engine(self, profile: bool) -> tuple[str, str | None, str | None]:
        """(what trtexec loads, where it saves the engine it builds, its timing cache): with an
        ``engine_cache`` folder, an ONNX file is built once per shape, precision and profiling and then
        loaded (a trial's bench of two models at two batches, 3 trials, built 12 engines)."""
        cache = self.options.get("engine_cache")
        if not cache or model_format(self.model) != "onnx":
            return self.model, None, None
        import hashlib

        st = os.stat(self.model)
        key = json.dumps([os.path.abspath(self.model), st.st_mtime_ns, st.st_size, self.shapes, self.precision,
                          profile, bool(self.options.get("cuda_graph"))])  # fmt: skip
        engine = os.path.join(cache, hashlib.sha256(key.encode()).hexdigest()[:24] + ".engine")
        if os.path.isfile(engine):
            return engine, None, None
        return self.model, engine, os.path.join(cache, "timing.cache")

    def build(self, profile: bool = False, timeout: float | None = None) -> None:
        """Build the engine of the batch set (an ONNX file, with an ``engine_cache``) in a trtexec run of
        its own that times nothing, so that the timed runs load it: a build is neither timed nor inside a
        telemetry window (a review: the window around a run that built read 5.2 W and 28% GPU load, one
        that loaded 8.7 W and 94%). Nothing to do where it is built, or for an engine file. ``timeout``: the
        seconds the build may take."""
        source, save, timing_cache = self._engine(profile)
        if save is None:
            return
        from edgeslim.bench.children import cleaned_up_on_sigterm, run_child

        cmd = build_command(
            self.exe, source, self.version, self.shapes, TimingConfig(), self.precision, False,
            export_profile="profile.json" if profile else None, save_engine=save, timing_cache=timing_cache,
            build_only=True,
        )  # fmt: skip
        try:
            with cleaned_up_on_sigterm():
                r = run_child(cmd, timeout=timeout, own_group=True, grace_s=3.0)
        except subprocess.TimeoutExpired as exc:
            raise EdgeslimError(
                f"trtexec's engine build of {self.model} at batch {self.batch} ran past {timeout:.0f} s; build the "
                f"engine on this device with trtexec ({' '.join(cmd[1:2])} --saveEngine=...) and bench the engine "
                "file (trust_pickle=True)",
                param="trust_pickle",
            ) from exc
        text = r.stdout + r.stderr
        self.log_tail = "\n".join(text.splitlines()[-40:])
        if r.returncode != 0:
            raise EdgeslimError(explain_failure(text, self.model, r.returncode))
        if not os.path.isfile(save):
            last = " | ".join(error_lines(text)[-2:] or text.strip().splitlines()[-2:])
            raise EdgeslimError(f"trtexec exited 0 but wrote no engine (--saveEngine) for {self.model}; its last "
                                f"lines: {last[:300]}")  # fmt: skip

    def run(self) -> None:
        raise EdgeslimError("the trtexec backend times whole runs; single inferences are not available")

    def measure(self, cfg: TimingConfig) -> dict[str, list[float]]:
        samples, _ = self._run(cfg, profile=False)
        return samples

    def profile_layers(self, cfg: TimingConfig) -> dict:
        """One trtexec run: the timed (unprofiled) run, then a separate per-layer profile run.
        Returns :func:`parse_layer_profile`'s dict; the timed run's summary is in ``self.summary``."""
        _, prof = self._run(cfg, profile=True)
        return prof

    def _run(self, cfg: TimingConfig, profile: bool) -> tuple[dict[str, list[float]], dict | None]:
        from edgeslim.bench.children import cleaned_up_on_sigterm, run_child

        # trtexec in a group of its own, stopped with whatever stops this process (Ctrl-C, SIGTERM; killed
        # outright: the kernel kills it), its folder removed: a stopped bench left it building and timing
        with cleaned_up_on_sigterm(), tempfile.TemporaryDirectory() as tmp:
            times = os.path.join(tmp, "times.json")
            prof_path = os.path.join(tmp, "profile.json") if profile else None
            source, save, timing_cache = self._engine(profile)
            cmd = build_command(
                self.exe, source, self.version, self.shapes, cfg, self.precision, bool(self.options.get("cuda_graph")),
                times, prof_path, save_engine=save, timing_cache=timing_cache,
            )  # fmt: skip
            lines: list[tuple[float, str]] = []  # (stdout's lines as they came: when inference ran)
            r = run_child(cmd, own_group=True, grace_s=3.0, stamped=lines)
            text = r.stdout + r.stderr
            self.log_tail = "\n".join(text.splitlines()[-40:])
            if r.returncode != 0:
                raise EdgeslimError(explain_failure(text, self.model, r.returncode))
            self.window = timed_window(lines)
            self.summary = self.summaries[str(self.batch)] = parse_summary(text)
            for path, what, flag in (
                (times, "times", "--exportTimes"),
                (prof_path, "per-layer profile", "--exportProfile"),
            ):
                if path and not os.path.isfile(path):  # (its temporary path is gone once this returns)
                    last = " | ".join(error_lines(text)[-2:] or text.strip().splitlines()[-2:])
                    raise EdgeslimError(
                        f"trtexec exited 0 but wrote no {what} ({flag}) for {self.model}; its last lines: {last[:300]}"
                    )
            samples = parse_times(times, warmup_ms=_warmup_ms(cfg))
            prof = parse_layer_profile(prof_path) if prof_path else None
        return samples, prof  # (no host time: trtexec's latency is timed on the GPU, transfers left out)

    def info(self) -> dict:
        return {"trtexec": self.exe, "tensorrt_version": self.version, "precision": self.precision,
                "summary": self.summary, "summaries": self.summaries}  # fmt: skip


#: the longest one engine build is waited for (a large model in INT8 on a Jetson Nano: many minutes)
BUILD_TIMEOUT_S = 4 * 3600.0


def build_engines(session: Session, batches: list[int], timeout: float | None = None) -> None:
    """Build ``session``'s engine at each of ``batches`` (:meth:`TrtexecSession.build`; nothing where it is
    built): before any trial, in a worker of its own that :func:`~edgeslim.bench.compare.run_comparison`
    waits for without a limit, each build with ``timeout`` seconds (:data:`BUILD_TIMEOUT_S`), no part of a
    measuring process's limit (a review: a long build was killed as a benchmark process past its limit,
    "lower min_time"); a measuring process's own call finds them built."""
    for b in batches:
        session.set_batch(b)
        session.build(timeout=timeout)


class TrtexecBackend(Backend):
    layer_table_producer = "edgeslim.bench.layers:trtexec_file_table"
    name = "trtexec"

    def open(self, path: str, options: dict) -> TrtexecSession:
        check_engine_trusted(path, options)  # before anything is imported or run
        exe = locate_trtexec(options.get("trtexec"))
        if not os.path.isfile(path):
            raise EdgeslimError(f"model file {path} does not exist")
        return TrtexecSession(exe, path, options)
