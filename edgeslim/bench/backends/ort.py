"""ONNX Runtime backend: CPU, CUDA, TensorRT and XNNPACK execution providers where present."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeslim.bench.backends import Backend, Session, concrete_shape, model_format, random_input, run_failed
from edgeslim.errors import EdgeslimError, first_line, require
from edgeslim.utils.onnx_graph import unreadable_onnx

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_SHORT = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


XNNPACK = "XnnpackExecutionProvider"


def _full_name(provider: str, available: Sequence[str] = ()) -> str:
    """``cpu`` -> ``CPUExecutionProvider`` (:data:`_SHORT`); another short name, in any case, the
    ``available`` provider it names (``azure`` -> ``AzureExecutionProvider``, ``nnapi``, ``coreml``, ``qnn``);
    a full name stays."""
    if provider.lower() in _SHORT:
        return _SHORT[provider.lower()]
    by_short = {a.lower().removesuffix("executionprovider"): a for a in available}
    return by_short.get(provider.lower().removesuffix("executionprovider"), provider)


def _os_threads() -> int | None:
    """How many threads this process runs (Linux's /proc; None where it cannot be read)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def resolve_providers(requested: list[str] | None, available: list[str], threads: int | None) -> list:
    """Map short names (cpu, cuda, tensorrt, xnnpack; any available one's, in any case) to provider entries;
    refuse missing ones."""
    names = [_full_name(p, available) for p in (requested or ["CPUExecutionProvider"])]
    missing = [n for n in names if n not in available]
    if missing:
        raise EdgeslimError(
            f"execution provider {', '.join(missing)} is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install the matching onnxruntime package or change providers",
            param="providers",
        )
    out: list = []
    for n in names:
        if n == XNNPACK:  # XNNPACK has its own thread pool (ORT docs): the threads go there
            out.append((n, {"intra_op_num_threads": str(threads or os.cpu_count() or 1)}))
        else:
            out.append(n)
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")  # fallback for unsupported nodes, as ORT recommends
    return out


def thread_pools(providers: list) -> dict[str, int] | None:
    """Where the threads run with XNNPACK among ``providers`` (:func:`resolve_providers`'s): ORT's intra-op
    pool 1 thread, XNNPACK's pool the threads asked for; None without XNNPACK (ORT's pool has them)."""
    for p in providers:
        if isinstance(p, tuple) and p[0] == XNNPACK:
            return {"onnxruntime_intra_op": 1, "xnnpack": int(p[1]["intra_op_num_threads"])}
    return None


def load_format(so, path: str | os.PathLike) -> None:
    """Tell ONNX Runtime what the file at ``path`` holds (:func:`model_format`: ``.ort`` or ONNX): it goes
    by the name's suffix, so an ``.ort`` named ``.onnx`` failed as a corrupt protobuf."""
    so.add_session_config_entry("session.load_model_format", "ORT" if model_format(path) == "ort" else "ONNX")


def session_options(ort, options: dict, available: list[str], path: str | None = None) -> tuple[Any, list]:
    """The ``ort.SessionOptions`` and the provider list a session of ``options`` (threads, graph_opt,
    providers) opens with, given the ``available`` providers (and, with ``path``, the file's format:
    :func:`load_format`); nothing is loaded.

    With XNNPACK, ORT's XNNPACK EP docs ("Recommended configuration",
    onnxruntime.ai/docs/execution-providers/Xnnpack-ExecutionProvider.html): intra-op spinning off, the
    XNNPACK pool the threads and ORT's intra-op pool 1 thread (two pools of N threads on N cores contend).
    """
    threads = options.get("threads")
    level = options.get("graph_opt", "all")
    if level not in _LEVELS:
        raise EdgeslimError(f"graph_opt must be one of {', '.join(_LEVELS)}, got {level}", param="graph_opt")
    providers = resolve_providers(options.get("providers"), available, threads)
    so = ort.SessionOptions()
    if thread_pools(providers) is not None:
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    if path is not None:
        load_format(so, path)
    return so, providers


def split_available(requested: list[str]) -> tuple[list[str], list[str]]:
    """``requested`` providers (short or full names) split into those this onnxruntime build has
    and those it lacks; all kept when onnxruntime does not import (the backend says so itself)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return list(requested), []
    available = ort.get_available_providers()
    has = [p for p in requested if _full_name(p, available) in available]
    return has, [p for p in requested if p not in has]


def parse_profile(events: list[dict]) -> list[dict]:
    """ORT profiler trace -> per-node kernel time (median us over runs) in execution order."""
    times: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            times.setdefault(node, []).append(float(e["dur"]))
            ops[node] = e.get("args", {}).get("op_name", "")
    return [
        {"name": n, "op": ops[n], "median_us": float(np.median(v)), "runs": len(v)} for n, v in times.items()
    ]


class OrtSession(Session):
    backend = "onnxruntime"

    def __init__(self, sess, ort, path: str = "", make_options=None) -> None:
        self.sess = sess
        self.ort = ort
        self.path = path
        self.make_options = make_options
        self.feeds: dict[str, np.ndarray] = {}
        self.batch = 0
        #: the threads the session computes on (None: not known): ORT's intra-op pool's, or XNNPACK's
        self.threads: int | None = None
        #: with XNNPACK, each pool's threads (:func:`thread_pools`)
        self.thread_pools: dict[str, int] | None = None

    def set_batch(self, batch: int) -> None:
        self.feeds = {}
        for i, inp in enumerate(self.sess.get_inputs()):
            dtype = _DTYPES.get(inp.type)
            if dtype is None:
                raise EdgeslimError(
                    f"input '{inp.name}' has type {inp.type}, which the benchmark cannot feed"
                )
            self.feeds[inp.name] = random_input(
                concrete_shape(inp.name, inp.shape, batch), np.dtype(dtype), seed=i
            )
        self.batch = batch

    def run(self):
        try:
            return self.sess.run(None, self.feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own types: the file fails on these inputs
            dtypes = ", ".join(sorted({str(v.dtype) for v in self.feeds.values()}))
            raise run_failed(self.path, "onnxruntime", self.input_shapes(), dtypes, exc,
                             f"the file does not run at batch {self.batch} here: time it at a batch it runs at, or "
                             "export it again") from exc  # fmt: skip

    def input_shapes(self) -> list[list[int]] | None:
        return [list(v.shape) for v in self.feeds.values()]

    def layer_times(self, runs: int = 50) -> list[dict]:
        """Per-node kernel times from ORT's profiler (a second session; fused nodes as ORT runs them); the
        measuring process gives each the ``layer`` it runs (:func:`edgeslim.bench.layers.name_nodes`)."""
        return parse_profile(self.profile_events(runs))

    def profile_events(self, runs: int = 50) -> list[dict]:
        """ORT's profiler trace (chrome-trace events) of ``runs`` inferences in a second session."""
        import json

        from edgeslim.utils.tmpfiles import temporary_folder

        so, providers = self.make_options()
        with temporary_folder("edgeslim-ortprof-") as tmp:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "ort")
            sess = self.ort.InferenceSession(self.path, so, providers=providers)
            for _ in range(runs):
                sess.run(None, self.feeds)
            with open(sess.end_profiling()) as f:
                return json.load(f)

    def info(self) -> dict:
        return {
            "providers": self.sess.get_providers(),
            "inputs": {i.name: list(i.shape) for i in self.sess.get_inputs()},
            "onnxruntime": self.ort.__version__,
            "threads": self.threads,
            **({"thread_pools": self.thread_pools} if self.thread_pools else {}),
            **({"ort_conversion": conv} if (conv := self.ort_conversion()) else {}),
        }

    def ort_conversion(self) -> dict | None:
        """What an ``.ort`` file records of its conversion (edgeslim's export writes it: style, target
        platform, onnxruntime version); None where it records nothing."""
        import json

        from edgeslim.export.ort_mobile import CONVERSION_KEY

        text = self.sess.get_modelmeta().custom_metadata_map.get(CONVERSION_KEY)
        try:
            conv = json.loads(text) if text else None
        except ValueError:  # (not edgeslim's: not JSON)
            return None
        return conv if isinstance(conv, dict) else None


class OrtBackend(Backend):
    layer_table_producer = "edgeslim.bench.layers:ort_file_table"
    name = "onnxruntime"

    def open(self, path: str, options: dict) -> OrtSession:
        ort = require("onnxruntime", "for the onnxruntime backend")
        if not os.path.isfile(path):
            raise EdgeslimError(f"model file {path} does not exist")

        def make_options():
            return session_options(ort, options, ort.get_available_providers(), path)

        so, providers = make_options()
        before = _os_threads()
        try:
            sess = ort.InferenceSession(path, so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise unreadable_onnx(path, Exception(first_line(exc)), reader="onnxruntime") from exc
        session = OrtSession(sess, ort, path, make_options)
        session.thread_pools = thread_pools(providers)
        if session.thread_pools:
            session.threads = session.thread_pools["xnnpack"]
        elif options.get("threads"):
            session.threads = int(options["threads"])
        elif before is not None and sess.get_providers() == ["CPUExecutionProvider"]:
            # ORT's own default (its physical cores, not this process's share): the caller's thread and the
            # pool's, which the session started (the only threads it starts on the CPU provider)
            after = _os_threads()
            session.threads = after - before + 1 if after is not None and after >= before else None
        return session
