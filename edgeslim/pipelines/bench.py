"""``bench``: measure (or predict) a model on this device, slim against its baseline; request and runs.

Imports nothing heavy at module level: ``edgeslim bench`` runs on a device without PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice, Step, first_line, require
from edgeslim.pipelines.rundir import run_directory
from edgeslim.utils.fields import CheckedFields
from edgeslim.utils.rundir import BENCH_STALE

log = logging.getLogger(__name__)


@dataclass
class BenchRequest(CheckedFields):
    """Everything ``edgeslim bench`` needs (``None``: the profile's or the backend's default)."""

    model: str
    baseline: str | None = None
    backend: str | None = None
    profile: str | None = None
    batches: tuple[int, ...] = (1,)
    trials: int = 3
    warmup: float = 1.0
    min_iters: int = 200
    min_time: float = 2.0
    max_time: float = 60.0
    threads: int | None = None
    providers: str | None = None
    graph_opt: str = "all"
    precision: str | None = None
    cuda_graph: bool = False
    device: str | None = None
    input_shape: str | tuple[int, ...] | None = None  # "C,H,W" or (C, H, W)
    trust_pickle: bool = False
    trtexec: str | None = None
    tegrastats: bool = True
    interval_ms: int = 100
    layer_times: bool = False
    layer_table: Path | None = None
    #: with a layer table on onnxruntime: also time each layer over channel counts (bench.sweep)
    sweep: bool = True
    #: with a layer table: ONNX files of the model cut to uniform widths (export width_models), timed
    #: beside it: the table's calibration
    width_models: tuple[str, ...] | None = None
    onnx: str | None = None
    nice: int = 0
    predict: bool = False
    calibrate: str | None = None
    out_dir: Path | None = None
    force: bool = False
    plots: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.input_shape, str):  # "C,H,W", as the CLI takes it
            from edgeslim.utils.parsing import parse_input_shape

            self.input_shape = tuple(parse_input_shape(self.input_shape))

    def device_profile(self) -> Any:
        """The named device profile, or None."""
        if not self.profile:
            return None
        from edgeslim.bench.profiles import load_profile

        return load_profile(self.profile)

    def check(self) -> None:
        """Combinations that cannot work, refused before anything is measured."""
        from edgeslim.utils.sniff import empty_file_error

        timing(self)  # its limits, consistent together
        if self.calibrate and not self.predict:
            raise EdgeslimError(
                "calibrate goes with predict=True (it fits the prediction to a measured run.json)",
                param=("calibrate", "predict"),
            )
        if self.predict and self.out_dir:  # (a trial's --out was ignored without a word)
            raise EdgeslimError(
                "predict writes no files (nothing is measured, the prediction is returned); drop out_dir",
                param=("predict", "out_dir"),
            )
        if self.predict and not self.profile:
            raise EdgeslimError(
                "predict=True needs profile NAME (list them with: edgeslim profiles)",
                param=("predict", "profile"),
            )
        if self.layer_table:
            if len(self.batches) != 1:
                raise EdgeslimError(
                    f"layer_table measures at one batch size; got batches {','.join(map(str, self.batches))}",
                    param=("layer_table", "batches"),
                )
            if self.baseline or self.out_dir or self.predict:
                raise EdgeslimError(
                    "layer_table times one model; drop baseline, out_dir and predict",
                    param=("layer_table", "baseline", "out_dir", "predict"),
                )
            from edgeslim.bench.backends import model_format

            if self.onnx and model_format(self.onnx) != "onnx":
                raise EdgeslimError(
                    f"onnx takes the .onnx file the engine was built from; got {self.onnx}", param="onnx"
                )
        elif self.onnx:
            from edgeslim.bench.backends import model_format

            if model_format(self.model) != "engine":
                raise EdgeslimError(
                    "onnx goes with a TensorRT engine file: the ONNX it was built from (it names the engine's "
                    "layers for layer_table, and its input for trtexec at batches other than 1)",
                    param=("onnx", "layer_table"),
                )
        if self.width_models and not self.layer_table:
            raise EdgeslimError(
                "width_models calibrate a latency table; add layer_table",
                param=("width_models", "layer_table"),
            )
        # the files, after the options (those refusals hold whatever the files): before a file's kind is read
        # from its name (a mistyped baseline was "a file of another kind") and before any runtime reads it
        for what, f in (("model file", self.model), ("baseline", self.baseline), ("onnx", self.onnx)):
            if f is not None and not Path(f).exists():
                raise EdgeslimError(f"{what} {f} does not exist; check the path",
                                    param=what if what in ("baseline", "onnx") else None)  # fmt: skip
        for f in (self.model, self.baseline, self.onnx):  # (a failed copy to the device)
            if f is not None and Path(f).is_file() and Path(f).stat().st_size == 0:
                raise empty_file_error(f)


def backend_and_options(req: BenchRequest, profile: Any, say: Callable[[str], None]) -> tuple[str, dict]:
    """The backend to use and its options, from the request and the device profile."""
    from edgeslim.bench.backends import ALIASES, default_backend_for, model_format
    from edgeslim.bench.onnx_cost import qdq_style
    from edgeslim.channels.devices import TENSORRT_BACKENDS

    notes: list[Notice] = []  # said after every refusal below (a refusal comes alone)

    files = [m for m in (req.model, req.baseline) if m is not None]
    runs = {m: default_backend_for(m) for m in files}  # the backend each file's format needs (read once)
    own = model_format(req.model)  # (by what the file holds, else its name)
    name = ALIASES.get(req.backend, req.backend) if req.backend else runs[req.model]
    if req.backend is None and profile is not None:
        name = profile.preferred.backend
        if name == "tensorrt" and own == "onnx":
            # an ONNX file on a TensorRT device: trtexec builds and times it; else ORT
            from edgeslim.bench.backends.trtexec import find_trtexec

            # (a trtexec given is the one used: one that is not there is refused below, not replaced by ORT)
            name = "trtexec" if req.trtexec or find_trtexec() else "onnxruntime"
            notes.append(
                Notice(
                    f"{req.model} is ONNX: trtexec builds and times it (choose another with backend)"
                    if name == "trtexec"
                    else f"{req.model} is ONNX and trtexec is not found here: timing it in ONNX Runtime on this "
                    f"host instead, not with {profile.name}'s TensorRT (its precision does not apply; choose "
                    "another with backend)",
                    "backend",
                )
            )
        elif name == "tensorrt" and own == "ort":  # ORT's own format: ORT runs it
            name = "onnxruntime"
    if req.backend is None and len(set(runs.values())) > 1:  # (the model's kind picked the backend)
        export = Step("export")
        raise EdgeslimError(
            f"{req.model} and baseline {req.baseline} are files of different kinds, timed by different runtimes: "
            f"give both as ONNX ({export} each) or both as PyTorch models",
            steps=(export,),
        )
    other = next((m for m in files if runs[m] != "torch"), None)
    if name == "torch" and other is not None:
        raise EdgeslimError(
            f"{other} is not a PyTorch model (torch times only those): leave backend out ({runs[other]} "
            "times it), or give the PyTorch model it was exported from",
            param="backend",
        )
    options: dict = {"graph_opt": req.graph_opt}
    if req.threads or (profile and profile.preferred.threads):
        options["threads"] = req.threads or profile.preferred.threads
    prov = req.providers.split(",") if req.providers else (profile.preferred.providers if profile else None)
    if prov and not req.providers and name == "onnxruntime":  # the profile's preference: what this build has
        from edgeslim.bench.backends.ort import split_available

        has, missing = split_available(prov)
        if missing and has:
            notes.append(
                Notice(
                    f"profile {profile.name} runs ONNX Runtime with {', '.join(prov)}; this build lacks "
                    f"{', '.join(missing)}: timing with {', '.join(has)} (not the device's numbers; choose with "
                    "providers)",
                    "providers",
                )
            )
            prov = has
    if prov:
        options["providers"] = prov
    for m in files if name == "onnxruntime" else ():
        # (a review: timed in ONNX Runtime with no word that it is TensorRT's form)
        if qdq_style(m) == "tensorrt":
            notes.append(Notice(f"{m} is export's INT8 Q/DQ ONNX for TensorRT, which ONNX Runtime runs slower than "
                                "FP32 (not INT8 timings): time it with backend trtexec on the device, or time the "
                                "ONNX Runtime INT8 model an INT8 export without TensorRT writes (NAME.int8.onnx)",
                                "backend"))  # fmt: skip
    if req.precision and name not in TENSORRT_BACKENDS:  # ORT and torch run the file as it is
        how = ("in the precision it was exported in: export an INT8 model to time INT8" if name == "onnxruntime"
               else "in float32 if it is a checkpoint (loaded in float32 whatever it was saved in), else (a whole "
               "pickle, TorchScript) in its weights' dtype: leave precision out, or export it and time the TensorRT "
               "engine in that precision")  # fmt: skip
        raise EdgeslimError(
            f"precision is the precision TensorRT builds in (backends tensorrt, trtexec); {name} runs "
            f"{Path(req.model).name} {how}",
            param="precision",
        )
    if req.precision or (profile and name in TENSORRT_BACKENDS):
        options["precision"] = req.precision or profile.preferred.precision
    elif name == "trtexec" and own == "onnx":  # (a trial's engines were FP32, export's script builds FP16)
        notes.append(Notice("trtexec builds the float ONNX files in FP16 (FP32 where a layer has no FP16 kernel; "
                            "TensorRT 11: as their types say) and a Q/DQ one in INT8, as export's trtexec scripts do; "
                            "give precision to build the float ones in another", "precision"))  # fmt: skip
    # each file's precision (a review: a Q/DQ file was built FP16 alone, a float one INT8 uncalibrated unsaid)
    if name == "trtexec" and (asked := options.get("precision")):
        # (worded by where the precision came from: given, or the profile's preferred one; each param
        # named once, the CLI showing its first naming as a flag: a review)
        given = req.precision is not None
        source = f"precision {asked}" if given else f"the profile {profile.name}'s {asked}"
        for m in files:
            if model_format(m) != "onnx":
                continue
            qdq = qdq_style(m) is not None
            if qdq and asked != "int8":
                notes.append(Notice(f"{m} is an INT8 Q/DQ ONNX: trtexec builds it in INT8 (--int8 --fp16, as export's "
                                    f"script does); {source} is for the float files"
                                    + ("" if given else " (give precision for another)"),
                                    "precision"))  # fmt: skip
            elif not qdq and asked == "int8":
                fix = "leave int8 out" if given else "give precision fp16"
                notes.append(Notice(f"{m} is a float ONNX: {source} builds it in INT8 with TensorRT's placeholder "
                                    "ranges, uncalibrated (a speed, not the accuracy of any model); export's INT8 Q/DQ "
                                    "ONNX (NAME.int8.qdq.onnx) is built in INT8 anyway: "
                                    f"{fix} to build the float files in FP16", "precision"))  # fmt: skip
    if req.onnx and req.baseline and name == "trtexec":  # (one ONNX for two engines: a review)
        notes.append(Notice(f"onnx {req.onnx} gives trtexec the input name and shape of both engines, the baseline's "
                            "too: compare engines of one network at one input size", "onnx"))  # fmt: skip
    if req.onnx and not req.layer_table and name != "trtexec":  # (refused, not ignored)
        raise EdgeslimError(
            f"onnx gives a TensorRT engine's input to trtexec at other batches; the {name} backend does not use "
            "it without layer_table: drop it",
            param=("onnx", "backend"),
        )
    if req.device and name != "torch":  # a file's backend picks its device itself: refused, not ignored
        where = "pick the GPU with providers (CUDAExecutionProvider)" if name == "onnxruntime" else (
            "TensorRT runs on the GPU")  # fmt: skip
        raise EdgeslimError(
            f"device is the torch device of a PyTorch model (backend torch); the {name} backend does not "
            f"use it: {where}",
            param=("device", "providers") if name == "onnxruntime" else "device",
        )
    if req.cuda_graph and name not in TENSORRT_BACKENDS:
        raise EdgeslimError(
            f"cuda_graph replays a TensorRT engine's launches (backends tensorrt, trtexec); the {name} backend "
            "does not use it: drop it",
            param="cuda_graph",
        )
    for key, value in (("cuda_graph", req.cuda_graph), ("device", req.device), ("trust_pickle", req.trust_pickle),
                       ("trtexec", req.trtexec), ("onnx", req.onnx)):  # fmt: skip
        if value:
            options[key] = value
    if req.input_shape:
        if name != "torch":  # an ONNX model or an engine is timed at the input size it was exported with
            raise EdgeslimError(
                f"input_shape is for a PyTorch model file that records none; the {name} backend times "
                f"{Path(req.model).name} at its own input size: export the model at the size you want",
                param="input_shape",
            )
        options["input_shape"] = list(req.input_shape)
    # a missing trtexec is refused alone, not after notes on how it would build
    if name == "trtexec" and notes:
        from edgeslim.bench.backends.trtexec import locate_trtexec

        locate_trtexec(req.trtexec)
    for note in notes:
        say(note)
    return name, options


def misnamed(*paths: str | None) -> list[Notice]:
    """A line for each file whose name says another format than its bytes (it is timed as what it
    holds); said once the file has run, so that a refusal of it comes alone."""
    from edgeslim.bench.backends import FORMAT_WORDS, model_format, named_format

    formats = {p: (model_format(p), named_format(p)) for p in paths if p is not None}
    return [
        Notice(
            f"{p} holds {FORMAT_WORDS[held]}, not {FORMAT_WORDS[named]} as its name says: timed as what it holds"
        )
        for p, (held, named) in formats.items()
        if held != named
    ]


#: the request's fields for TimingConfig's
TIMING_FIELDS = {
    "warmup_s": "warmup",
    "min_iters": "min_iters",
    "min_time_s": "min_time",
    "max_time_s": "max_time",
}


def timing(req: BenchRequest) -> Any:
    """The request's :class:`~edgeslim.bench.timing.TimingConfig`; its refusal names the request's fields."""
    from edgeslim.bench.timing import TimingConfig

    cap = TimingConfig.max_iters  # (not a request's field: the cap is fixed)
    if isinstance(req.min_iters, int) and not isinstance(req.min_iters, bool) and req.min_iters > cap:
        raise EdgeslimError(
            f"min_iters ({req.min_iters:,}) must be at most {cap:,}, the fixed cap of iterations a measuring loop "
            "runs: lower it",
            param="min_iters",
        )
    try:
        return TimingConfig(**{field: getattr(req, name) for field, name in TIMING_FIELDS.items()})
    except EdgeslimError as exc:
        text = str(exc).removeprefix("TimingConfig ")
        for field, name in TIMING_FIELDS.items():
            text = re.sub(rf"\b{field}\b", name, text)
        raise EdgeslimError(text, param=tuple(TIMING_FIELDS.get(p, p) for p in exc.params)) from exc


#: what an export records as its "architecture" where it knows none: a whole pickle, TorchScript or
#: torch.export file is exported under its load kind (a trial's slim pickle "compared two networks")
NO_ARCHITECTURE = ("unknown", "pickle", "torchscript", "exported")


def other_network(model: str, baseline: str) -> str:
    """What to say when edgeslim's ONNX metadata names another architecture for ``baseline`` than for
    ``model`` (a speedup between different networks); "" when they match or either is unknown (not
    exported by edgeslim, or named by a file path, which a slim and a dense export of one network may
    not share; a YOLO's, named by its checkpoint's path, by its model yaml's name where both record it)."""
    from edgeslim.bench.backends import model_format
    from edgeslim.utils.onnx_graph import MODEL_YAML_KEY, onnx_metadata

    mds = [onnx_metadata(p) if model_format(p) == "onnx" else {} for p in (model, baseline)]
    archs = [md.get("architecture", "") for md in mds]
    yamls = [md.get(MODEL_YAML_KEY, "") for md in mds]  # (a YOLO's, whose architecture is a file path)
    if all(yamls) and yamls[0] != yamls[1]:  # (only YOLO exports record it)
        return (f"{model} is an export of a {yamls[0]} network and baseline {baseline} of a {yamls[1]} one: the "
                "speedup compares two different networks (give the export of the network it was slimmed from)")  # fmt: skip
    if (
        not all(archs)
        or any(a.split(":")[0] in NO_ARCHITECTURE for a in archs)
        or any("/" in a or "\\" in a for a in archs)
        or archs[0] == archs[1]
    ):
        return ""
    return (f"{model} is an export of {archs[0]} and baseline {baseline} of {archs[1]}: the speedup compares "
            "two different networks (give the export of the network it was slimmed from)")  # fmt: skip


def _has_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def measure(
    req: BenchRequest,
    on_trial: Callable[[int, str, dict], None] | None = None,
    say: Callable[[str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> tuple[dict, list[Path]]:
    """Measure ``req.model`` (against ``req.baseline``) in interleaved fresh processes.

    With ``req.out_dir`` the directory is held (locked, no overwrite without ``force``) from
    before the first measurement until run.json, report.md and the PNGs are written; returns
    ``(record, written files)``. ``on_record`` sees the record before the files are written.
    ``say`` shows a status line (a :class:`~edgeslim.errors.Notice`; default: a log warning); a
    baseline of another network is also in the record's ``warnings`` (run.json, report.md).
    """
    from edgeslim.bench.backends import model_format
    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.report import add_predictions, write_outputs

    say = say or log.warning
    req.check()
    profile = req.device_profile()
    name, options = backend_and_options(req, profile, say)
    models = {"baseline": req.baseline, "slim": req.model} if req.baseline else {"model": req.model}
    other = other_network(req.model, req.baseline) if req.baseline else ""
    if other:
        say(Notice(other, "baseline"))

    def go() -> tuple[dict, list[Path]]:
        record = run_comparison(
            models, name, list(req.batches), req.trials, timing(req), options, req.tegrastats, req.interval_ms,
            req.nice, req.layer_times, on_trial=on_trial,
        )  # fmt: skip
        if other:  # (a speedup of two networks: in the record, as its other warnings are in its report)
            record["warnings"] = [other]
        for note in misnamed(req.model, req.baseline):
            say(note)
        if req.baseline and not _has_onnx() and "onnx" in {model_format(m) for m in models.values()}:
            say(  # (a device trial compared an EfficientNet with a MobileNetV3 without a word)
                "the onnx package is not installed here: the MAC ratio and the check that both files are "
                "exports of one network were skipped (pip install onnx)"
            )
        if profile is not None:
            add_predictions(record, profile)
        if on_record is not None:
            on_record(record)
        written = write_outputs(record, req.out_dir, force=True, with_plots=req.plots) if req.out_dir else []
        return record, written

    if not req.out_dir:
        return go()
    with _bench_directory(Path(req.out_dir), req.force, (req.model, req.baseline)):
        return go()


@contextlib.contextmanager
def _bench_directory(out_dir: Path, force: bool, inputs: tuple[Any, ...]) -> Iterator[Path]:
    """The run directory of a bench's results (a lock; no earlier results replaced without ``force``);
    never a slim or train run's folder, finished or interrupted, whose report.md and PNGs have a bench's
    names (a review: the refusal said to force it, which replaced the slim run's report.md; an
    interrupted slim's folder was taken, and its resume then replaced the bench's report.md)."""
    from edgeslim.utils.rundir import LOG_FILE, MODEL_FILE, REPORT_FILE, TRAIN_DIR, TRAIN_FILES, YOLO_RUN_MARK

    found = [f"{TRAIN_DIR}/{n}" for n in (*TRAIN_FILES, YOLO_RUN_MARK) if (out_dir / TRAIN_DIR / n).is_file()]
    top = [n for n in (MODEL_FILE, REPORT_FILE, LOG_FILE) if (out_dir / n).is_file()]
    if MODEL_FILE in top and len(top) > 1:  # (a train run: its model beside its report or its log)
        found = top + found
    if found:
        raise EdgeslimError(
            f"{out_dir} holds a slim or train run ({', '.join(found)}), whose report.md and plots a bench's "
            f"results would replace; give the bench a folder of its own, e.g. {out_dir / 'bench'}",
            param="out_dir",
        )
    with run_directory(out_dir, force=force, stale=BENCH_STALE, inputs=inputs) as d:
        yield d


def layer_table(
    req: BenchRequest, progress: Callable[[int, int, str], None] | None = None
) -> tuple[dict, Path]:
    """A per-layer latency table of ``req.model`` at one batch, written to ``req.layer_table``;
    on onnxruntime with ``req.sweep`` each layer is also timed over channel counts (version 2). The
    path is claimed while it is measured (:func:`~edgeslim.utils.io.writing`): a second run writing it
    meanwhile is refused, and an earlier table is replaced only with ``req.force``."""
    from edgeslim.bench.layers import write_layer_table
    from edgeslim.utils.io import check_distinct, check_output_path, writing

    req.check()
    width_files = {f"width model {w}": w for w in req.width_models or ()}
    check_distinct({"layer_table": req.layer_table}, {"model": req.model, "onnx": req.onnx, **width_files})
    # claimed before it is checked, and held until written: two benches of one path had both written
    # it, the later table (without force) replacing the earlier's sweeps (a review of concurrency)
    with writing([req.layer_table], replace=req.force) as stage:
        path = check_output_path(req.layer_table, req.force, "layer_table")  # refuse early, before measuring
        tab = _measure_layer_table(req, progress)
        write_layer_table(tab, stage(path), force=True)
    return tab, path


def _measure_layer_table(req: BenchRequest, progress: Callable[[int, int, str], None] | None) -> dict:
    """The table :func:`layer_table` writes: measured, with its sweeps and calibration."""
    from edgeslim.bench.layers import layer_table as measure_layers

    profile = req.device_profile()
    name, options = backend_and_options(req, profile, lambda _: None)
    # the width models are checked before anything is measured
    widths = _width_models(req.model, req.width_models, name) if req.width_models else None
    tab = measure_layers(req.model, name, req.batches[0], timing(req), options)
    if req.sweep and name in ("onnxruntime", "torch"):
        from edgeslim.bench.sweep import sweep_layers, torch_file_sweeps
        from edgeslim.channels.devices import DEFAULT_PROFILE, load_profile

        multiple = (profile or load_profile(DEFAULT_PROFILE)).channel_multiple(req.precision)
        sweep = sweep_layers if name == "onnxruntime" else torch_file_sweeps
        tab["sweeps"] = sweep(req.model, req.batches[0], options, multiple, progress)
        tab["version"] = 2
    if widths is not None:
        from edgeslim.bench.layers import measure_calibration

        tab["calibration"] = measure_calibration(
            req.model, widths[0], name, req.batches[0], options, widths[1], zero_invariant=widths[2]
        )
        tab["version"] = 2
    return tab


def _width_models(model: str, files: tuple[str, ...], backend: str) -> tuple[dict[float, str], int, bool]:
    """``({fraction: file}, channel multiple, zero_invariant)`` of the width models of ``model`` (their
    metadata; files cut before it was recorded: without zero_invariant), refused where they are not ONNX
    exports of its network at distinct widths, one multiple and one removability."""
    import json

    from edgeslim.bench.backends import model_format
    from edgeslim.utils.onnx_graph import read_metadata

    if backend not in ("onnxruntime", "trtexec") or model_format(model) != "onnx":
        raise EdgeslimError(
            f"width_models calibrate a table of an ONNX file timed with onnxruntime or trtexec; {model} is timed "
            f"with {backend}: give the table's model as its .onnx export",
            param=("width_models", "backend"),
        )
    require("onnx", "to read the width models' metadata")
    own = read_metadata(model)
    widths: dict[float, str] = {}
    multiples, removability = set(), set()
    for f in files:
        if model_format(f) != "onnx":
            raise EdgeslimError(f"width model {f} is not an ONNX file (export width_models writes them)",
                                param="width_models")  # fmt: skip
        if not Path(f).is_file():
            raise EdgeslimError(f"width model {f} does not exist; check the path", param="width_models")
        try:
            md = read_metadata(f)
        except Exception as exc:  # noqa: BLE001 - protobuf's many error types
            raise EdgeslimError(f"width model {f} is not a readable ONNX file ({first_line(exc)[:120]})",
                                param="width_models") from exc  # fmt: skip
        width = json.loads(md.get("uniform_width") or "null")
        if not isinstance(width, dict) or not isinstance(width.get("fraction"), (int, float)):
            raise EdgeslimError(
                f"{f} is not a width model (its metadata names no uniform width): export the dense model again "
                "with width_models, and give the NAME.wNN.onnx files it writes",
                param="width_models",
            )
        for key in ("architecture", "input_shape"):
            if md.get(key) != own.get(key):
                raise EdgeslimError(
                    f"width model {f} has {key} {md.get(key)}, {model} {own.get(key)}: give the width models "
                    "exported with this model",
                    param="width_models",
                )
        if float(width["fraction"]) in widths:
            raise EdgeslimError(f"{widths[float(width['fraction'])]} and {f} are the same width; give each once",
                                param="width_models")  # fmt: skip
        widths[float(width["fraction"])] = str(f)
        multiples.add(int(width.get("round_to") or 1))
        removability.add(bool(width.get("zero_invariant")))
    if len(multiples) > 1 or len(removability) > 1:
        what = (f"to different channel multiples ({', '.join(map(str, sorted(multiples)))})" if len(multiples) > 1
                else "with and without zero_invariant")  # fmt: skip
        raise EdgeslimError(
            f"the width models were cut {what}; give those of one export",
            param="width_models",
        )
    return dict(sorted(widths.items(), reverse=True)), multiples.pop(), removability.pop()


#: a calibrated roofline that misses a run it was fitted on by more than this is warned about
CALIBRATION_MISS = 0.2


def predict(req: BenchRequest) -> dict:
    """A roofline PREDICTION for ``req.model`` (and baseline) on ``req.profile``, optionally
    calibrated from a measured run.json (``req.calibrate``); nothing is measured."""
    from edgeslim.bench.backends import concrete_shape, model_format
    from edgeslim.bench.onnx_cost import onnx_cost
    from edgeslim.bench.predict import Observation, model_precision, predict_latency, scale_bytes
    from edgeslim.bench.predict import calibrate as fit
    from edgeslim.bench.report import UNPADDED_WHY, check_record, layer_costs, measured_on, padded_layers
    from edgeslim.utils.io import read_json

    req.check()
    profile = req.device_profile()
    eff = fitted = None
    if req.calibrate:
        run = check_record(read_json(req.calibrate), str(req.calibrate))
        elsewhere = measured_on(profile, run)
        if elsewhere:  # a host's efficiency would be read as the device's (a trial: 0.74 ms became 13 ms)
            threads = profile.preferred.threads
            raise EdgeslimError(
                f"calibrate needs a run measured on {profile.name}'s device and runtime"
                f"{f' with {threads} thread(s)' if threads else ''}; {req.calibrate} was {elsewhere}: bench on "
                f"that device{f' with threads={threads}' if threads else ''} and calibrate from its run.json, "
                "or predict uncalibrated",
                param=("calibrate", "threads") if threads else "calibrate",
            )
        obs, names, unpadded = [], [], []
        multiple = profile.channel_multiple(profile.preferred.precision)
        for label in run["models"]:
            layers = layer_costs(run, label)
            if layers is None or (run["models"][label].get("cost") or {}).get("quantized"):
                continue  # (an INT8 model's times would fit the FP32 roof: calibrated on FP32 models only)
            # fitted on the costs the predictions use: padded to the profile's multiple where the file is here
            padded = padded_layers(run, label, multiple)
            if padded is None and multiple > 1:
                unpadded.append(label)
            layers = scale_bytes(padded if padded is not None else layers, profile.preferred.precision)
            for b in run["batches"]:
                obs.append(Observation(layers, b, run["summary"][label][str(b)]["p50_ms"] * 1e-3))
                names.append(label)
        if not obs:
            raise EdgeslimError(
                f"{req.calibrate} has no ONNX layer costs to calibrate from; bench ONNX models"
            )
        eff = fitted = fit(obs, profile)
    models = {"model": req.model} if req.baseline is None else {"baseline": req.baseline, "slim": req.model}
    result: dict = {
        "profile": profile.name,
        "precision": {},  # per model: the one asked, int8 for a Q/DQ model, else the profile's
        "label": "PREDICTION (roofline from MACs and bytes; not a measurement)",
    }
    if fitted is not None:
        # how well the fit predicts the run it was fitted on (a trial: +68% at batch 1, not said)
        rows = [{"model": n, "batch": o.batch, "measured_ms": o.seconds * 1e3,
                 "predicted_ms": predict_latency(o.layers, profile, profile.preferred.precision, batch=o.batch,
                                                 efficiency=fitted).total_s * 1e3}
                for n, o in zip(names, obs)]  # fmt: skip
        worst = max(rows, key=lambda r: abs(r["predicted_ms"] / r["measured_ms"] - 1))
        result["calibration"] = {"from": req.calibrate, **fitted.model_dump(), "fit": rows}
        miss = worst["predicted_ms"] / worst["measured_ms"] - 1
        warns = [
            f"the calibration fitted {' and '.join(unpadded)} of {req.calibrate} at the exported widths, not padded "
            f"to multiples of {multiple} as predictions are priced ({UNPADDED_WHY}): the fit differs from one with "
            "the files at hand"
        ] if unpadded else []  # fmt: skip
        if abs(miss) > CALIBRATION_MISS:
            warns.append(
                f"the calibration misses the run it was fitted on by {miss:+.0%} ({worst['model']} at batch "
                f"{worst['batch']}: {worst['predicted_ms']:.3g} ms predicted, {worst['measured_ms']:.3g} measured): "
                "one efficiency and one launch overhead do not describe this runtime at these sizes; read the "
                "measured run, or a latency table measured on the device"
            )
        if warns:
            result["warnings"] = warns
    result["models"] = {}
    for label, path in models.items():
        if model_format(path) != "onnx":
            raise EdgeslimError(
                f"predict needs an .onnx file (MACs come from the ONNX graph); got {path}", param="predict"
            )
        cost = onnx_cost(path)
        for name, dims in cost.input_shapes.items():  # a symbolic size would leave the costs unknown
            first = dims[0] if dims else None
            try:
                concrete_shape(name, dims or [], first if isinstance(first, int) and first > 0 else 1)
            except EdgeslimError as exc:
                raise EdgeslimError(f"{path}: {exc}", param=exc.params) from exc
        if cost.unknown:  # (the rest's MACs and bytes would predict it too fast)
            raise EdgeslimError(f"{path}: its MACs and bytes cannot be priced: {cost.why}")
        try:
            precision = model_precision(profile, cost.quantized, req.precision)
        except EdgeslimError as exc:
            raise EdgeslimError(f"{path}: {exc}", param=exc.params) from exc
        result["precision"][label] = precision
        multiple = profile.channel_multiple(precision)  # the device's kernels run whole blocks of channels
        if multiple > 1:
            result.setdefault("channel_multiple", {})[label] = multiple
            cost = onnx_cost(path, multiple=multiple)
        layers = scale_bytes(cost.layers, precision)  # costed as the FP32 graph
        result["models"][label] = {
            str(b): predict_latency(layers, profile, precision, batch=b, efficiency=eff).to_dict()
            for b in req.batches
        }
    if "baseline" in result["models"]:  # predicted baseline / slim, per batch
        from edgeslim.bench.report import predicted_speedup

        result["speedup"] = predicted_speedup(result["models"], "total_s")
    return result


def rerender(
    run_json: str | Path,
    *,
    out_dir: Path | None = None,
    force: bool = False,
    profile: str | None = None,
    plots: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> list[Path]:
    """Read a bench record, add a roofline prediction for ``profile``, and write report.md, run.json
    and PNGs into ``out_dir`` (refused before anything is read when it holds a run, unless ``force``)."""
    from edgeslim.bench.report import add_predictions, check_record, write_outputs
    from edgeslim.utils.io import read_json

    def go() -> list[Path]:
        record = check_record(read_json(run_json), str(run_json))
        if profile:
            from edgeslim.bench.profiles import load_profile

            add_predictions(record, load_profile(profile))
        if on_record is not None:
            on_record(record)
        return write_outputs(record, out_dir, force=True, with_plots=plots) if out_dir else []

    if not out_dir:
        return go()
    with _bench_directory(Path(out_dir), force, (run_json,)):  # (a report beside its run.json: force)
        return go()


#: the stage's ``run()`` (every stage of :mod:`edgeslim.pipelines` has one)
run = measure
