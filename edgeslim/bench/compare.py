"""Interleaved trials in fresh processes, aggregation, speedup and the run record (JSON).

Trial ``t`` runs every model once, each in its own subprocess, in alternating order
(A B, B A, A B, ...), so drift in clocks, temperature or machine load hits both alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from edgeslim.bench.backends import model_format
from edgeslim.bench.memory import MIB_KEYS, mib
from edgeslim.bench.stats import CV_WARN, speedup, summarize
from edgeslim.bench.timing import TimingConfig
from edgeslim.errors import EdgeslimError, RemoteTraceback, Step, WorkerError
from edgeslim.utils.onnx_graph import unreadable_onnx
from edgeslim.utils.tmpfiles import temporary_folder

FORMAT = "edgeslim-bench"
#: 2: ``summary[label][batch]["p50_ms"]`` is the median of the trials' p50s (the pooled median, version
#: 1's until ``pooled_p50_ms`` came beside it, is ``pooled_p50_ms``); a version 1 record is migrated
#: on read (:func:`edgeslim.bench.report.check_record`)
VERSION = 2


#: the folder that holds this edgeslim package: the worker imports the same one. (``python -m``
#: would put the working directory first, where a folder named ``edgeslim`` -- a clone of the
#: repository, say -- shadows the package.)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: ``-c`` puts "" (the working directory) first, which the package root replaces; under ``-P`` or
#: PYTHONSAFEPATH nothing is there to replace, and the root goes before the rest
_WORKER = (
    "import sys; p = sys.path; p[:1] = [{root!r}] if p and p[0] == '' else [{root!r}, *p[:1]]; "
    "from edgeslim.bench.worker import main; sys.exit(main(sys.argv[1:]))"
)


def run_worker(spec: dict, timeout: float | None = None, nice: int = 0) -> dict:
    """Run one measurement in a fresh Python process; raise its failure (:func:`_raise_failure`)."""
    from edgeslim.bench.backends import ALIASES, BACKENDS

    key = ALIASES.get(spec["backend"], spec["backend"])
    if key in BACKENDS:  # (a backend registered in this process: the fresh one imports it by this name)
        spec = {**spec, "backend_target": BACKENDS[key]}
    from edgeslim.bench.children import cleaned_up_on_sigterm, run_child

    with cleaned_up_on_sigterm(), temporary_folder("edgeslim-bench-") as tmp:
        sp, op = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        Path(sp).write_text(json.dumps({**spec, "parent_pid": os.getpid()}))
        cmd = [sys.executable, "-c", _WORKER.format(root=_PACKAGE_ROOT), sp, op]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        try:
            # stopped (Ctrl-C, SIGTERM), the worker gets SIGTERM and time to stop a trtexec it started
            r = run_child(cmd, timeout=timeout, grace_s=10.0)
        except subprocess.TimeoutExpired as exc:
            raise EdgeslimError(
                f"the benchmark process ran past its limit of {timeout:.0f} s (4 x the time cap per batch size, and "
                "a minute); raise max_time, or lower min_iters (trtexec runs them all, whatever the cap)",
                param=("max_time", "min_iters"),
            ) from exc
        if not os.path.exists(op):
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EdgeslimError(f"benchmark process died (exit {r.returncode}): {tail[0]}")
        res = json.loads(Path(op).read_text())
    if not res["ok"]:
        _raise_failure(res)
    return res


def _raise_failure(res: dict) -> NoReturn:
    """The measuring process's failure (:func:`edgeslim.bench.worker.failure`) raised here: an
    :class:`EdgeslimError` as it was, an operating system's error or running out of memory as such,
    anything else, a bug, as a :class:`WorkerError`; all but the first with the process's traceback as
    their cause."""
    if res.get("user_error", True):
        steps = tuple(Step(stage, **args) for stage, args in res.get("steps") or ())
        raise EdgeslimError(res["error"], param=tuple(res.get("params") or ()), steps=steps)
    cause = RemoteTraceback(res.get("traceback") or "")
    if res.get("memory"):
        raise MemoryError(res["error"]) from cause
    if os_error := res.get("os_error"):
        if os_error["errno"] is None:  # (raised with a message, not by the system)
            raise OSError(res["error"]) from cause
        raise OSError(os_error["errno"], os_error["strerror"], os_error["filename"]) from cause
    raise WorkerError(
        res["error"], kind=res.get("kind") or "Exception", origin=res.get("origin") or "unknown place"
    ) from cause


def check_batches(path: str, batches: list[int]) -> None:
    """Refuse a batch that an ONNX/ORT file's fixed batch axis cannot run, from the file's
    signature, before any worker starts (a worker would say the same after loading a runtime)."""
    from edgeslim.bench.backends import concrete_shape

    sig = io_signature(path)
    for name, dims in (sig or {}).get("inputs", []):
        for b in batches if dims is not None else ():
            concrete_shape(name, dims[:1], b)


def model_facts(path: str) -> dict:
    """File size (:func:`model_bytes`), and for ONNX files parameters/MACs/bytes per layer (torch-free)."""
    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"model file {path} does not exist")
    # (absolute: a prediction calibrated from the record re-reads the file from any folder)
    # (format: what it holds, by its bytes where they tell; the report reads it, the file not at hand)
    facts: dict = {"path": os.path.abspath(p), "file_bytes": model_bytes(p), "format": model_format(p)}
    if facts["format"] == "onnx":
        from edgeslim.bench.onnx_cost import onnx_cost
        from edgeslim.errors import MissingDependencyError

        try:
            facts["cost"] = onnx_cost(p).to_dict()
        except MissingDependencyError:  # onnx not installed on the device: sizes only
            facts["cost"] = None
    return facts


def model_bytes(path: str | os.PathLike) -> int:
    """Bytes of a model file: an ONNX file's with those of the external-data files its tensors name
    (from the graph, the data not read; each file once, however its location is spelled; none outside
    the model's folder, which no runtime loads from); the file alone where onnx is not installed or
    cannot read it (the cost read says why)."""
    p = Path(path)
    size = p.stat().st_size
    if model_format(p) != "onnx":
        return size
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data
    except ImportError:
        return size
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises many types
        return size
    folder = os.path.abspath(p.parent)
    named = {
        os.path.normpath(os.path.join(folder, ExternalDataInfo(t).location))
        for t in _get_all_tensors(model)
        if uses_external_data(t)
    }  # (an absolute location stays itself)
    inside = {os.path.realpath(f) for f in named if os.path.commonpath([folder, f]) == folder}
    real = os.path.realpath(folder)  # (a link inside that leads out is out too)
    files = {f for f in inside if os.path.commonpath([real, f]) == real and os.path.isfile(f)}
    return size + sum(os.stat(f).st_size for f in files)


Dims = list[int | None]  # None: a dynamic (symbolic) dimension


def io_signature(path: str | os.PathLike) -> dict[str, list[tuple[str, Dims | None]]] | None:
    """``{"inputs": [(name, dims)], "outputs": [...]}`` of an ONNX file, read without running it
    (``onnx``, else ``onnxruntime``), or of an ONNX Runtime ``.ort`` file (``onnxruntime``); None
    for other files or when neither is installed. ``dims`` is None where the file declares no shape
    (unknown, not rank 0)."""
    fmt = model_format(path)
    if fmt not in ("onnx", "ort") or not Path(path).is_file():
        return None

    def dims(shape) -> Dims:
        return [d if isinstance(d, int) and d > 0 else None for d in shape]

    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None and fmt == "onnx":
        try:
            g = onnx.load(str(path), load_external_data=False).graph
        except Exception as exc:  # noqa: BLE001 - protobuf raises many types
            raise unreadable_onnx(path, exc) from exc
        inits = {t.name for t in g.initializer}

        def vi_dims(vi) -> Dims | None:
            if not vi.type.tensor_type.HasField("shape"):  # (no shape declared: unknown)
                return None
            return dims(
                [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            )

        return {
            "inputs": [(vi.name, vi_dims(vi)) for vi in g.input if vi.name not in inits],
            "outputs": [(vi.name, vi_dims(vi)) for vi in g.output],
        }
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from edgeslim.bench.backends.ort import load_format

    so = ort.SessionOptions()
    load_format(so, path)
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - (an ORT-format file is no ONNX file: named by its reader)
        raise unreadable_onnx(path, exc, reader="onnxruntime" if fmt == "ort" else "") from exc
    return {
        "inputs": [(i.name, dims(i.shape)) for i in sess.get_inputs()],
        "outputs": [(o.name, dims(o.shape)) for o in sess.get_outputs()],
    }


def _fmt(d: Dims) -> str:
    return "(" + ",".join("N" if x is None else str(x) for x in d) + ")"


def _same_shape(a: Dims, b: Dims) -> bool:
    """Same rank and sizes; a dynamic dimension matches any size (the batch may differ only if
    one side is dynamic; a dynamic channel or spatial size is refused when the model is run)."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _compare_io(b_io: dict, m_io: dict, baseline: str | os.PathLike, model: str | os.PathLike) -> None:
    """Raise if ``{"inputs": [(name, dims)], "outputs": [...]}`` of baseline and model differ (dims
    None, unknown, matches any)."""
    hint = "compare two exports of the same network"
    for kind in ("inputs", "outputs"):
        b, m = b_io.get(kind), m_io.get(kind)  # (a shape None, unknown: not compared)
        if b is None or m is None:
            continue
        if len(b) != len(m):
            raise EdgeslimError(
                f"baseline {baseline} has {len(b)} {kind} but the model {model} has {len(m)}; {hint}"
            )
        for (nb, db), (_, dm) in zip(b, m, strict=True):
            if db is not None and dm is not None and not _same_shape(db, dm):
                what = kind[:-1] if len(b) == 1 else f"{kind[:-1]} {nb!r}"
                raise EdgeslimError(
                    f"baseline {what} shape {_fmt(db)} differs from the model's {_fmt(dm)}; {hint}"
                )


def check_comparable(baseline: str | os.PathLike, model: str | os.PathLike) -> None:
    """Refuse a baseline whose inputs or outputs (count, rank, channels, spatial size; the batch
    only where neither is dynamic) differ from the model's: their latencies would not compare.
    Reads ONNX files; other pairs are checked by :func:`check_measured_io` once they have run."""
    sb, sm = io_signature(baseline), io_signature(model)
    if sb is not None and sm is not None:
        _compare_io(sb, sm, baseline, model)


def check_measured_io(baseline_res: dict, model_res: dict, baseline: str, model: str) -> None:
    """The same check on the shapes the measuring processes fed and got back (any backend that
    reports them: onnxruntime, torch), at the same batch."""
    ib, im = baseline_res.get("io"), model_res.get("io")
    if not ib or not im or ib.get("batch") != im.get("batch"):
        return

    def named(io: dict) -> dict:
        return {
            k: None if io.get(k) is None else [(f"#{i}", d) for i, d in enumerate(io[k])]
            for k in ("inputs", "outputs")
        }

    _compare_io(named(ib), named(im), baseline, model)


def _primary(samples: dict) -> tuple[str, list[float]]:
    """Device (GPU) time where the backend has it, else host wall time."""
    if samples.get("device"):
        return "device", samples["device"]
    return "host", samples["host"]


def trial_p50_ms(samples: dict) -> float:
    """One trial's median latency in ms (of :func:`_primary`'s samples), as the summary takes it."""
    return float(np.median(_primary(samples)[1]) * 1e3)


def run_comparison(
    models: dict[str, str],
    backend: str,
    batches: list[int],
    trials: int = 3,
    timing: TimingConfig | None = None,
    options: dict | None = None,
    tegrastats: bool = True,
    interval_ms: int = 100,
    nice: int = 0,
    layer_times: bool = False,
    on_trial: Callable[[int, str, dict], None] | None = None,
) -> dict:
    """Benchmark ``models`` ({label: path}; labels ``baseline`` and ``slim`` get a speedup)."""
    from edgeslim.bench.backends import check_options
    from edgeslim.bench.env import environment

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise EdgeslimError(f"trials must be an integer >= 1, got {trials!r}", param="trials")
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise EdgeslimError(
            f"batches must be a non-empty list of integers >= 1, got {batches!r}", param="batches"
        )
    if not -20 <= nice <= 19:
        raise EdgeslimError(f"nice must be in -20..19 (a nice(1) level), got {nice}", param="nice")
    if interval_ms < 1:
        raise EdgeslimError(
            f"interval_ms (the tegrastats interval) must be >= 1, got {interval_ms}", param="interval_ms"
        )
    timing = timing or TimingConfig()
    options = check_options(options or {})
    labels = list(models)
    for path in models.values():
        check_batches(path, batches)
    if {"baseline", "slim"} <= set(labels):
        check_comparable(models["baseline"], models["slim"])
    facts = {label: model_facts(path) for label, path in models.items()}
    record: dict = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kind": "compare" if {"baseline", "slim"} <= set(labels) else "single",
        "backend": backend,
        "options": options,
        "batches": batches,
        "trials_requested": trials,
        "timing": timing.to_dict(),
        "models": facts,
        "env": environment(options.get("threads")),
        "trials": [],
    }
    with contextlib.ExitStack() as stack:
        if backend == "trtexec":  # each ONNX file built once per shape, before the trials; its engine loaded
            cache = stack.enter_context(temporary_folder("edgeslim-engines-"))
            options = {**options, "engine_cache": cache}
            # (in a worker of its own, stopped with the bench; no measuring process's limit: each build has its own)
            for path in dict.fromkeys(models.values()):
                if model_format(path) == "onnx":
                    spec = {"model": path, "backend": backend, "options": options, "batches": batches}
                    run_worker({**spec, "build_only": True}, nice=nice)
        _trials(record, models, backend, batches, trials, timing, options, tegrastats, interval_ms, nice,
                layer_times, on_trial)  # fmt: skip
    aggregate(record)
    return record


def _trials(record: dict, models: dict[str, str], backend: str, batches: list[int], trials: int, timing: TimingConfig,
            options: dict, tegrastats: bool, interval_ms: int, nice: int, layer_times: bool,
            on_trial: Callable[[int, str, dict], None] | None) -> None:  # fmt: skip
    """The interleaved trials of :func:`run_comparison`, appended to ``record["trials"]``."""
    labels = list(models)
    for t in range(trials):
        order = labels if t % 2 == 0 else labels[::-1]
        for label in order:
            spec = {
                "model": models[label],
                "backend": backend,
                "options": options,
                "batches": batches,
                "timing": timing.to_dict(),
                "tegrastats": tegrastats,
                "interval_ms": interval_ms,
                "layer_times": layer_times and t == 0,  # profiled once, in the first trial
            }
            res = run_worker(spec, timeout=worker_timeout(timing, len(batches)), nice=nice)
            res.update(label=label, trial=t, position=order.index(label))
            record["trials"].append(res)
            if t == 0 and label in ("baseline", "slim"):
                first = {r["label"]: r for r in record["trials"] if r["label"] in ("baseline", "slim")}
                if len(first) == 2:
                    check_measured_io(first["baseline"], first["slim"], models["baseline"], models["slim"])
            if on_trial:
                on_trial(t, label, res)


#: the longest a measuring process is waited for, whatever max_time_s (the operating system's wait
#: takes at most 24.8 days: a max_time of 6e5 s was an OverflowError, 1e308 an infinity)
WORKER_TIMEOUT_MAX_S = 14 * 86400.0


def worker_timeout(timing: TimingConfig, batches: int) -> float:
    """Seconds a measuring process of ``batches`` batch sizes is given: 4x ``max_time_s`` per batch and
    a minute (120 s at least), at most :data:`WORKER_TIMEOUT_MAX_S`."""
    return min(max(120.0, 4 * timing.max_time_s * batches + 60), WORKER_TIMEOUT_MAX_S)


def telemetry(trials: list[dict | None]) -> dict | None:
    """The tegrastats summaries of one model's trials at one batch as one: the median over the trials
    that sampled anything of the means (power, energy, GPU load), the extremes of the extremes (clock,
    temperature, RAM), the windows they covered (:func:`edgeslim.bench.worker.telemetry_window`); None
    where no trial sampled (no tegrastats on the machine)."""
    got = [t for t in trials if isinstance(t, dict) and t.get("samples")]
    if not got:
        return None

    def values(k: str) -> list[float]:
        return [float(t[k]) for t in got if isinstance(t.get(k), (int, float))]

    out: dict = {"trials": len(got), "samples": sum(int(t["samples"]) for t in got),
                 "power_rail": next((t["power_rail"] for t in got if t.get("power_rail")), None),
           "window": sorted({t["window"] for t in got if t.get("window")})}  # fmt: skip
    for k in ("power_mean_mw", "energy_per_inference_mj", "gpu_load_mean"):
        out[k] = float(np.median(v)) if (v := values(k)) else None
    for k, pick in (
        ("gpu_mhz_min", min),
        ("gpu_mhz_max", max),
        ("temp_max_c", max),
        ("ram_used_mb_max", max),
    ):
        out[k] = pick(v) if (v := values(k)) else None
    return out


def aggregate(record: dict) -> dict:
    """Fill ``summary``, ``speedup``, ``memory`` and ``macs_ratio`` from the raw trials (idempotent)."""
    labels = list(record["models"])
    summary: dict = {}
    per_trial: dict = {}
    for label in labels:
        runs = [r for r in record["trials"] if r["label"] == label]
        summary[label] = {}
        per_trial[label] = {}
        for b in record["batches"]:
            key = str(b)
            kind, _ = _primary(runs[0]["samples"][key])
            trial_samples = [_primary(r["samples"][key])[1] for r in runs]
            pooled = np.concatenate([np.asarray(s) for s in trial_samples])
            s = summarize(pooled, b)
            s["timer"] = kind
            s["trial_p50_ms"] = [trial_p50_ms(r["samples"][key]) for r in runs]
            # p50 is the median of the trials' p50s, the statistic the speedup divides: pooled, a trial
            # slowed by other load counts by its sample count (the pooled value stays beside it)
            # (an even number of trials: the mean of the two middle ones, as np.median and the speedup take it)
            s["pooled_p50_ms"], s["p50_ms"] = s["p50_ms"], float(np.median(s["trial_p50_ms"]))
            s["trial_p50_range_ms"] = [
                min(s["trial_p50_ms"]),
                max(s["trial_p50_ms"]),
            ]  # how far apart they were
            s["throughput_per_s"] = b * 1e3 / s["p50_ms"] if s["p50_ms"] > 0 else 0.0
            s["trial_cv"] = [summarize(x, b)["cv"] for x in trial_samples]
            s["unstable"] = s["cv"] > CV_WARN
            if kind == "device" and all("host" in r["samples"][key] for r in runs):  # (trtexec: none)
                s["host"] = summarize(np.concatenate([r["samples"][key]["host"] for r in runs]), b)
            if tegra := telemetry([(r.get("tegrastats") or {}).get(key) for r in runs]):
                s["tegrastats"] = tegra
            summary[label][key] = s
            per_trial[label][key] = trial_samples
        mem = [r["memory"] for r in runs]
        summary[label]["memory"] = {
            k: float(np.median([mib(m, k) for m in mem]))
            for k in MIB_KEYS
            if all(mib(m, k) is not None for m in mem)
        }
        if why := next((m["not_measured"] for m in mem if m.get("not_measured")), None):
            summary[label]["memory"]["not_measured"] = why  # (trtexec's process: none of the figures)
        info = runs[0].get("info", {})
        if not record["models"][label].get("cost") and isinstance(info.get("macs"), int):
            # a PyTorch file: its counts from the session (no per-layer costs: predictions need an ONNX)
            record["models"][label]["cost"] = {"macs": info["macs"], "params": info["params"], "quantized": False,
                                               "counted_by": "torch"}  # fmt: skip
        if info.get("ort_conversion"):  # (an .ort file edgeslim's export converted: for which platform)
            record["models"][label]["ort_conversion"] = info["ort_conversion"]
        for k in ("activation_bytes", "weight_bytes", "plan_bytes", "cuda_max_allocated_bytes"):
            if k in info:
                summary[label]["memory"][k] = info[k]
        loads = [r["load_s"] for r in runs if r.get("load_s") is not None]  # (None: trtexec's, not measured)
        summary[label]["load_s"] = float(np.median(loads)) if loads else None
        prof = next((r["info"]["layer_times"] for r in runs if r.get("info", {}).get("layer_times")), None)
        if prof:
            summary[label]["layer_times"] = prof
    record["summary"] = summary
    env = record.setdefault("env", {})
    used = {(r.get("info") or {}).get("threads") for r in record["trials"]} - {None}
    if env.get("threads") is None and len(used) == 1:  # none given: the runtime's default, as measured
        env["threads"] = used.pop()
    pools = next((r["info"]["thread_pools"] for r in record["trials"] if (r.get("info") or {}).get("thread_pools")),
                 None)  # fmt: skip
    if pools:  # (XNNPACK: its pool has the threads, ORT's intra-op pool 1)
        env["thread_pools"] = pools
    if record["kind"] == "compare":
        record["speedup"] = {
            str(b): speedup(per_trial["baseline"][str(b)], per_trial["slim"][str(b)])
            for b in record["batches"]
        }
        cb, cs = record["models"]["baseline"].get("cost"), record["models"]["slim"].get("cost")
        if cb and cs and cb.get("macs") is not None and (cs.get("macs") or 0) > 0:  # (None: unknown)
            record["macs_ratio"] = cb["macs"] / cs["macs"]
            record["params_ratio"] = cb["params"] / max(cs["params"], 1)
            # what share of the MAC reduction the speedup realizes: nothing to share without one, and an
            # INT8 model against an FP32 one gains by precision (a trial read 1.83 for INT8 vs FP32)
            if record["macs_ratio"] > 1.01 and bool(cb.get("quantized")) == bool(cs.get("quantized")):
                record["speedup_over_macs_ratio"] = {
                    k: v["value"] / record["macs_ratio"] for k, v in record["speedup"].items()
                }
            else:
                record.pop("speedup_over_macs_ratio", None)
    return record
