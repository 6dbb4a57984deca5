"""One measurement in a fresh process: ``python -m edgeslim.bench.worker SPEC.json OUT.json``.

Imports only the runtime it needs, so RSS deltas are attributable: start -> runtime imported ->
model loaded -> first inference, plus the peak (VmHWM). Tegrastats (where present) is sampled
during each timed window (trtexec: its timed iterations, read from its log; its engines built
before). Always writes OUT.json (``ok: false`` with the failure: :func:`failure`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

from edgeslim.bench.memory import MemoryTrace

#: why a trtexec run has no memory figures (run.json's ``memory.not_measured``; report.md says it)
TRTEXEC_MEMORY = (
    "trtexec runs each model in a process of its own, which this measuring process cannot see into: no RSS, "
    "NvMap or load time (the TensorRT backend, an engine in this process, measures them)"
)
#: backend -> module whose import is "the runtime" for the memory baseline
RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "torch": "torch"}


def measure(spec: dict) -> dict:
    from edgeslim.bench.backends import ALIASES, get_backend, output_shapes, register_backend
    from edgeslim.bench.tegrastats import TegrastatsSampler, summarize_samples
    from edgeslim.bench.timing import TimingConfig

    mem = MemoryTrace()
    mem.mark("start")
    name = ALIASES.get(spec["backend"], spec["backend"])
    if spec.get("backend_target"):  # (what the measuring process registered: its own backends too)
        register_backend(name, spec["backend_target"])
    if spec.get("build_only"):  # trtexec's engines, before any trial (each build with a limit of its own)
        from edgeslim.bench.backends.trtexec import BUILD_TIMEOUT_S, build_engines

        session = get_backend(name).open(spec["model"], spec.get("options", {}))
        build_engines(session, spec["batches"], BUILD_TIMEOUT_S)
        return {"ok": True, "pid": os.getpid()}
    mod = RUNTIME_MODULE.get(name)
    if mod:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass  # the backend's open() raises the one-line error
    mem.mark("runtime_imported")
    t0 = time.perf_counter()
    session = get_backend(name).open(spec["model"], spec.get("options", {}))
    load_s = time.perf_counter() - t0
    mem.mark("model_loaded")
    batches = spec["batches"]
    session.set_batch(batches[0])
    first_s = None
    io = None  # what went in and came out, for run_comparison to check baseline and model agree
    if name != "trtexec":
        t0 = time.perf_counter()
        out = session.run()
        first_s = time.perf_counter() - t0
        io = {"batch": batches[0], "inputs": session.input_shapes(), "outputs": output_shapes(out)}
        del out
    mem.mark("first_inference")
    cfg = TimingConfig(**spec.get("timing", {}))
    if hasattr(session, "build"):  # (trtexec: each engine built before any timing and telemetry window)
        from edgeslim.bench.backends.trtexec import build_engines

        build_engines(session, batches)
    samples, tegra = {}, {}
    sampler = TegrastatsSampler(spec.get("interval_ms", 100)) if spec.get("tegrastats", True) else None
    for b in batches:
        session.set_batch(b)
        if sampler is not None and sampler.available:
            with sampler:
                w0 = time.monotonic()
                samples[str(b)] = session.measure(cfg)
                w1 = time.monotonic()
            timed = samples[str(b)].get("device") or samples[str(b)]["host"]  # (seconds per inference)
            whole = (w0, w1, "run" if name == "trtexec" else "measure")
            picked, covers = telemetry_window(sampler, getattr(session, "window", None), whole)
            # the window's mean power over the seconds of the timed inferences only
            tegra[str(b)] = {**summarize_samples(picked, len(timed), float(sum(timed))), "window": covers}
            sampler.samples.clear()
        else:
            samples[str(b)] = session.measure(cfg)
    # (before the session's counts and profiles: what the timed run held); trtexec runs the model in a
    # process of its own, after these marks: this process's memory is its own (a review: 62 MiB of onnx read
    # as the model's RSS delta)
    memory = {"not_measured": TRTEXEC_MEMORY} if name == "trtexec" else mem.to_dict()
    info = session.info()
    if spec.get("layer_times") and hasattr(session, "layer_times"):
        session.set_batch(batches[0])
        rows = session.layer_times()
        if name == "onnxruntime":  # (each ORT node's layer, traced in the ONNX file where onnx reads it)
            from edgeslim.bench.layers import name_nodes

            name_nodes(spec["model"], rows)
        info["layer_times"] = {"batch": batches[0], "layers": rows}
    session.close()
    return {
        "ok": True,
        "pid": os.getpid(),
        "load_s": None if name == "trtexec" else load_s,  # (trtexec's open runs trtexec --help)
        "first_inference_s": first_s,
        "io": io,
        "samples": samples,
        "memory": memory,
        "info": info,
        "tegrastats": tegra or None,
    }


def telemetry_window(
    sampler, narrow: tuple[float, float, str] | None, whole: tuple[float, float, str]
) -> tuple:
    """(the tegrastats samples, what their window covered): those of the session's own ``narrow``
    window (trtexec's timed iterations, from its log) where it holds any, else those of ``whole``
    (around the session's measure call: "measure", its warm-up and timed calls; "run", a trtexec run
    with its engine load)."""
    for t0, t1, what in (narrow, whole) if narrow is not None else (whole,):
        if picked := sampler.window(t0, t1):
            return picked, what
    return [], whole[2]


def _die_with(parent: int | None) -> None:
    """End this process (SIGTERM) when the bench that started it (pid ``parent``) dies, on Linux: a
    bench killed outright (kill -9, the OOM killer) left its measuring process timing on, a core
    busy, for up to max_time (a review)."""
    from edgeslim.bench.children import die_with_parent

    if parent is not None:
        die_with_parent(parent)


def failure(exc: Exception) -> dict:
    """A failed measurement as data, which :func:`edgeslim.bench.compare.run_worker` raises again: an
    :class:`~edgeslim.errors.EdgeslimError` with its parameters and steps; anything else by its type,
    the first line of its message, its origin and the traceback, marked when it is an operating system's
    error or running out of memory (the user's to fix, as the CLI takes them), else a bug."""
    from edgeslim.errors import EdgeslimError, first_line, origin, out_of_memory

    if isinstance(exc, EdgeslimError):
        return {"ok": False, "user_error": True, "error": str(exc), "params": list(exc.params),
                "steps": [[s.stage, s.args] for s in exc.steps]}  # fmt: skip
    said = first_line(exc) if str(exc).strip() else ""  # (a message-less one: its kind alone)
    out = {"ok": False, "user_error": False, "kind": type(exc).__name__, "error": said,
           "origin": origin(exc), "traceback": traceback.format_exc()}  # fmt: skip
    if out_of_memory(exc):
        out["memory"] = True  # (torch's allocators: not MemoryErrors)
    elif isinstance(exc, OSError):
        out["os_error"] = {"errno": exc.errno, "strerror": exc.strerror,
                           "filename": None if exc.filename is None else str(exc.filename)}  # fmt: skip
    return out


def exited(exc: SystemExit) -> dict:
    """A measurement the model's own code ended by calling exit (``sys.exit``, argparse in its forward or
    at its module's import), as data: a refusal naming the exit status."""
    code = 0 if exc.code is None else exc.code
    status = f"status {code}" if isinstance(code, int) else repr(str(code)[:120])
    return {
        "ok": False,
        "user_error": True,
        "error": f"the model's code called exit ({status}) in the measuring process (sys.exit(), or argparse "
        "parsing a command line, in its forward or at the import of its module); take that call out of the "
        "model's code",
        "params": [],
        "steps": [],
    }


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    _die_with(spec.get("parent_pid"))
    try:
        result = measure(spec)
    except Exception as exc:  # report every failure as data; the parent raises it
        result = failure(exc)
    except SystemExit as exc:  # (edgeslim's library code never exits: the model's own code did)
        result = exited(exc)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
