"""Render a run record: terminal rows, Markdown, PNG plots; predictions beside measurements."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import statistics
import textwrap
from pathlib import Path

from edgeslim.bench.memory import mib
from edgeslim.bench.stats import CV_WARN, MIN_TRIALS_BOOTSTRAP
from edgeslim.channels.cost import LayerCost
from edgeslim.channels.devices import TENSORRT_BACKENDS
from edgeslim.errors import EdgeslimError, Step, install_hint
from edgeslim.utils.markdown import markdown_table
from edgeslim.utils.onnx_graph import module_name
from edgeslim.utils.plotting import new_figure, plain_log_axis, save_figure
from edgeslim.utils.rundir import (
    LATENCY_PNG,
    LAYER_TIMES_PNG,
    LAYERS_PNG,
    MEMORY_PNG,
    RUN_FILE,
    RUN_REPORT_MD,
)

LATENCY_COLS = [
    "model",
    "batch",
    "timer",
    "n",
    "p50 ms",
    "trial p50s ms",
    "p90 ms",
    "p99 ms",
    "mean ms",
    "std ms",
    "CV %",
    "samples/s",
]


log = logging.getLogger(__name__)


def check_record(record: dict, source: str = "the record") -> dict:
    """``record`` (a bench run.json read from ``source``) if it holds what the report reads: its models,
    batches and, per model and batch, a median latency (computed from its trials if not stored);
    else a one-line refusal naming the damaged part."""
    from edgeslim.bench.compare import VERSION, aggregate

    bench = Step("bench")
    if not isinstance(record, dict) or record.get("format") != "edgeslim-bench":
        raise EdgeslimError(
            f"not an edgeslim benchmark result (format != edgeslim-bench); give a run.json from {bench}",
            steps=(bench,),
        )

    def damaged(part: str) -> EdgeslimError:
        return EdgeslimError(f"{source} is a damaged benchmark result ({part}); measure again with {bench}",
                             steps=(bench,))  # fmt: skip

    # (every version writes one: a record without it is taken as the oldest)
    version = record.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise EdgeslimError(
            f"{source} is a benchmark result of format version {version!r}; this edgeslim reads versions up to "
            f"{VERSION}: upgrade edgeslim"
        )
    models, batches = record.get("models"), record.get("batches")
    if not isinstance(models, dict) or not models or not all(isinstance(m, dict) for m in models.values()):
        raise damaged("'models' is not a table of the models measured")
    if not isinstance(batches, list) or not batches or not all(type(b) is int and b > 0 for b in batches):
        raise damaged("'batches' is not a list of batch sizes")
    if "summary" not in record:
        try:
            aggregate(record)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise damaged(f"its trials cannot be summarized: {type(exc).__name__} {exc}") from exc
    elif version < VERSION:
        _migrate_p50(record, source)
    record["version"] = VERSION  # (as read now: written back so by edgeslim report)
    summary = record["summary"]
    for label in models:
        per_batch = summary.get(label) if isinstance(summary, dict) else None
        for b in batches:
            entry = per_batch.get(str(b)) if isinstance(per_batch, dict) else None
            p50 = entry.get("p50_ms") if isinstance(entry, dict) else None
            if not isinstance(p50, (int, float)) or isinstance(p50, bool) or not 0 <= p50 < math.inf:
                raise damaged(f"no median latency of {label} at batch {b}")
    # the parts the tables and plots read (a probe's run.json with env "x", cost.layers "x", file_bytes null)
    if not isinstance(record.get("env", {}), dict):
        raise damaged("'env' is not a table of the machine's facts")
    if not isinstance(record.get("warnings") or [], list):  # (a record before them has none; null: none)
        raise damaged("'warnings' is not a list of lines")
    for label, m in models.items():
        cost = m.get("cost")
        if cost is not None and not (
            isinstance(cost, dict)
            and isinstance(cost.get("layers", []), (list, type(None)))
            and all(isinstance(layer, dict) for layer in cost.get("layers") or [])
        ):
            raise damaged(f"the cost of {label} is not a table of its layers")
        if not isinstance(m.get("file_bytes", 0), (int, float)):
            raise damaged(f"the file size of {label} is not a number")
    name_layer_times(record)
    return record


def _migrate_p50(record: dict, source: str) -> None:
    """A format version 1 record's p50s as version 2 reads them: a summary entry without
    ``pooled_p50_ms`` was written when ``p50_ms`` was the pooled median; it becomes ``pooled_p50_ms`` and
    ``p50_ms`` the median of the entry's ``trial_p50_ms`` (the statistic its speedup divided), with the
    samples/s and a stored prediction's comparison that follow from it. Refused where the trials' p50s
    are not there."""
    summary = record.get("summary")
    for label, per_batch in (summary or {}).items() if isinstance(summary, dict) else ():
        for b, s in (per_batch or {}).items() if isinstance(per_batch, dict) else ():
            if not isinstance(s, dict) or "p50_ms" not in s or "pooled_p50_ms" in s:
                continue
            trials = s.get("trial_p50_ms")
            if not (
                isinstance(trials, list)
                and trials
                and all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < math.inf
                    for t in trials
                )
            ):
                bench = Step("bench")
                raise EdgeslimError(
                    f"{source} is a benchmark result of format version 1 whose p50 of {label} at batch {b} "
                    f"may be the pooled median and has no per-trial p50s to tell; measure again with {bench}",
                    steps=(bench,),
                )
            s["pooled_p50_ms"], s["p50_ms"] = s["p50_ms"], float(statistics.median(trials))
            if isinstance(b, str) and b.isdigit():
                s["throughput_per_s"] = int(b) * 1e3 / s["p50_ms"] if s["p50_ms"] > 0 else 0.0
            predicted = (((record.get("prediction") or {}).get("models") or {}).get(label) or {}).get(b)
            if isinstance(predicted, dict) and "measured_p50_ms" in predicted and s["p50_ms"] > 0:
                predicted["measured_p50_ms"] = s["p50_ms"]
                predicted["error"] = predicted["total_ms"] / s["p50_ms"] - 1


def layer_costs(record: dict, label: str) -> list[LayerCost] | None:
    cost = record["models"][label].get("cost")
    if not cost or cost.get("layers") is None:  # (a PyTorch file's counts have no layers)
        return None
    return [LayerCost(**layer) for layer in cost["layers"]]


def model_file_format(facts: dict) -> str:
    """What a record's model file holds (:func:`...compare.model_facts`' ``format``; an older record's: the
    format its name says)."""
    from edgeslim.bench.backends import named_format

    return str(facts.get("format") or named_format(str(facts.get("path") or "")))


def is_arm(machine: str) -> bool:
    """Whether ``platform.machine()``'s answer names an ARM CPU (aarch64, arm64, armv7l)."""
    return machine.lower().startswith(("aarch", "arm"))


def measured_on(profile, record: dict) -> str | None:
    """Why ``record``'s measurements were not made on ``profile``'s device with its runtime (None when
    they may have been): a Jetson profile needs a Jetson (its L4T release recorded) and, preferring
    TensorRT, a TensorRT backend; a board or phone profile an ARM CPU; a profile described for a
    thread count, a CPU run at that count."""
    env, backend = record.get("env") or {}, str(record.get("backend") or "")
    machine = str(env.get("machine") or "").lower()
    if profile.kind == "jetson" and not (env.get("l4t_release") or env.get("jetpack")):
        return f"measured on {machine or 'another machine'}, not on a Jetson"
    if profile.kind in ("arm-board", "phone") and machine and not is_arm(machine):
        return f"measured on {machine}, not on an ARM CPU"
    if profile.preferred.backend == "tensorrt" and backend not in TENSORRT_BACKENDS:
        return f"measured with {backend or 'another runtime'}, not TensorRT"
    threads = profile.preferred.threads  # (a CPU's latency scales with them; TensorRT's host thread does not)
    if threads and backend not in TENSORRT_BACKENDS and env.get("threads") != threads:
        ran = f"{env['threads']} thread(s)" if env.get("threads") else "a thread count it does not record"
        return f"measured with {ran}, not the {threads} {profile.name} is described for"
    return None


#: a model file's format -> what a roofline prediction of it would need (it prices an ONNX file's layers)
_UNPRICED = {"ort": "an .ort file, whose layers the roofline does not read: predict from the .onnx it was converted from",
             "engine": "a TensorRT engine, whose layers the roofline does not read: predict from the .onnx it was built from",
             "torch": "a PyTorch file, whose layers the roofline does not read: predict from its ONNX export"}  # fmt: skip


def _unpriced(facts: dict) -> str:
    """Why a model of the record has no roofline prediction (no per-layer costs)."""
    fmt = model_file_format(facts)
    return _UNPRICED.get(fmt, "its layers were not read (onnx is not installed here)")


def nothing_predicted(pr: dict) -> str | None:
    """One line saying why a prediction has no model (each model's reason, one when they share it); None
    when it has some."""
    if pr.get("models"):
        return None
    why = pr.get("skipped") or {}
    if not why:
        return "nothing predicted: the run has no model"
    if len(set(why.values())) == 1:
        return f"nothing predicted: {' and '.join(why)} {'is' if len(why) == 1 else 'are each'} {next(iter(why.values()))}"
    return "nothing predicted: " + "; ".join(f"{label} is {w}" for label, w in why.items())


def add_predictions(record: dict, profile, efficiency=None) -> None:
    """Roofline predictions for every ONNX model and batch, stored under ``prediction``; compared
    with the measured p50s only where they were measured on the profile's device and runtime."""
    from edgeslim.channels.cost import model_precision, predict_latency, scale_bytes

    elsewhere = measured_on(profile, record)
    out: dict = {"profile": profile.name, "label": "PREDICTION (roofline; not a measurement)", "models": {}}
    if elsewhere:
        out["not_compared"] = f"{elsewhere}: the prediction for {profile.name} is not compared with it"
    built = (record.get("options") or {}).get("precision")  # (a TensorRT run's, as its engines were built)
    for label in record["models"]:
        layers = layer_costs(record, label)
        if layers is None:
            out.setdefault("skipped", {})[label] = _unpriced(record["models"][label])
            continue
        try:  # (an INT8 Q/DQ model at int8, where the profile has INT8 figures; a run built at one, at that)
            # (a quantized file is built INT8 whatever was asked)
            quantized = bool(record["models"][label]["cost"].get("quantized"))
            precision = model_precision(profile, quantized, None if quantized else built)
        except EdgeslimError as exc:
            out.setdefault("skipped", {})[label] = str(exc)
            continue
        multiple = profile.channel_multiple(precision)
        padded = padded_layers(record, label, multiple)  # as bench --predict and the budget price them
        if multiple > 1:
            out.setdefault("channel_multiple", {})[label] = multiple if padded is not None else 1
        layers = scale_bytes(padded if padded is not None else layers, precision)  # (counted at fp32)
        out["models"][label] = {}
        for b in record["batches"]:
            p = predict_latency(layers, profile, precision, batch=b, efficiency=efficiency)
            out["models"][label][str(b)] = {"total_ms": p.total_s * 1e3, "efficiency": p.efficiency}
            meas = record.get("summary", {}).get(label, {}).get(str(b))
            if meas and not elsewhere:
                out["models"][label][str(b)]["measured_p50_ms"] = meas["p50_ms"]
                out["models"][label][str(b)]["error"] = p.total_s * 1e3 / meas["p50_ms"] - 1
    record["prediction"] = out


#: why a bench record's prediction priced a model at its exported widths (:func:`padded_layers` had none)
UNPADDED_WHY = "the measured ONNX file is not at its recorded path, or onnx is not installed"


def measured_file(record: dict, label: str) -> str | None:
    """The path of the file ``label`` was measured from where it is still there (the same size; not
    another file at that path now); None where it is not."""
    from edgeslim.bench.compare import model_bytes

    facts = record["models"][label]
    path = facts.get("path")
    if not path or not Path(path).is_file():
        return None
    if facts.get("file_bytes") is not None and model_bytes(path) != facts["file_bytes"]:
        return None
    return str(path)


def name_layer_times(record: dict) -> None:
    """Give the profiled nodes of a record's layer times their ``layer``
    (:func:`edgeslim.bench.layers.node_layers`) where bench could not (measured without onnx, or before it
    recorded them), from each model's ONNX file where it is still at its recorded path and onnx is installed."""
    from edgeslim.bench.layers import name_nodes

    for label in record["models"]:
        lt = (record["summary"].get(label) or {}).get("layer_times")
        nodes = lt.get("layers") if isinstance(lt, dict) else None
        if not isinstance(nodes, list) or all(not isinstance(n, dict) or "layer" in n for n in nodes):
            continue
        path = measured_file(record, label)
        if path is not None:
            name_nodes(path, nodes)


def padded_layers(record: dict, label: str, multiple: int) -> list[LayerCost] | None:
    """The model's costs at channel counts padded to ``multiple``, from its ONNX file where it still
    is and onnx is installed (None: the run's stored costs, at the exported widths, are what is left)."""
    path = measured_file(record, label)
    if multiple <= 1 or path is None:
        return None
    try:
        from edgeslim.bench.onnx_cost import onnx_cost

        cost = onnx_cost(path, multiple=multiple)
        return None if cost.unknown else cost.layers
    except EdgeslimError:  # (MissingDependencyError included: a device install without onnx)
        return None


def trial_range(entry: dict) -> str | None:
    """The lowest and highest of a summary entry's per-trial p50s (``1.19-1.20``; one trial: its p50), how far
    apart the trials its p50 is the median of were; None where the entry has none."""
    trials = entry.get("trial_p50_ms")
    if not isinstance(trials, list) or not trials:
        return None
    lo, hi = min(trials), max(trials)
    return f"{lo:.4g}" if len(trials) == 1 else f"{lo:.4g}-{hi:.4g}"


def latency_title(record: dict) -> str:
    """The latency table's title: its times are per call, which at a batch over 1 is the whole batch's."""
    per = "ms per batch (one call)" if any(int(b) > 1 for b in record["batches"]) else "ms per call"
    return f"latency (measured), {per}"


def latency_rows(record: dict) -> list[list]:
    rows = []
    for label in record["models"]:
        for b in record["batches"]:
            s = record["summary"][label][str(b)]
            rows.append(
                [
                    label,
                    b,
                    s["timer"],
                    s["n"],
                    s["p50_ms"],
                    trial_range(s),
                    s["p90_ms"],
                    s["p99_ms"],
                    s["mean_ms"],
                    s["std_ms"],
                    100 * s["cv"],
                    s["throughput_per_s"],
                ]
            )
    return rows


def aligned_layer_times(record: dict) -> tuple[list[str], list[dict[str, dict]], bool] | None:
    """Every model's profiled nodes (``bench --layer-times``) matched by the layer they run: a name
    and ``{label: node}`` per row, in execution order; a node that runs no layer (a reorder ONNX Runtime
    added) shares a row with the other models' node of its name (less ORT's ``_token_N``) after the same layer,
    else has a row of its own. The bool: whether the nodes carry their layer
    (:func:`edgeslim.bench.layers.node_layers`; else, in a record measured without onnx or before
    bench recorded it, only nodes of the same ONNX Runtime name are matched). None: no layer times."""
    import difflib

    lt = {label: record["summary"][label].get("layer_times") for label in record["models"]}
    if not all(lt.values()):
        return None
    named = _nodes_named(lt)
    rows: list[tuple[tuple, str, dict[str, dict]]] = []  # (what matches, the row's name, label -> node)
    for label, v in lt.items():
        nodes = v["layers"]
        keys, shown = [], []
        after, seen = "", 0  # (the last layer run before a node; layerless nodes since)
        for n in nodes:
            if not named:
                keys.append(("node", n["name"]))
                shown.append(n["name"])
            elif n["layer"]:
                after, seen = n["layer"], 0
                keys.append(("layer", n["layer"]))
                shown.append(n["layer"])
            else:  # (ORT's own node: its name, less the per-session _token_N, after the same layer)
                base = re.sub(r"_token_\d+$", "", n["name"])
                seen += 1
                keys.append(("after", base, after, seen))
                shown.append(f"{base} after {after or 'the input'}")
        merged: list[tuple[tuple, str, dict[str, dict]]] = []
        opcodes = difflib.SequenceMatcher(None, [k for k, _, _ in rows], keys, autojunk=False).get_opcodes()
        for tag, i1, i2, j1, j2 in opcodes:
            if tag == "equal":
                merged += [(rows[i][0], rows[i][1], {**rows[i][2], label: nodes[j]})
                           for i, j in zip(range(i1, i2), range(j1, j2))]  # fmt: skip
            else:
                merged += rows[i1:i2]
                merged += [(keys[j], shown[j], {label: nodes[j]}) for j in range(j1, j2)]
        rows = merged
    return [name for _, name, _ in rows], [by for _, _, by in rows], named


#: what the per-layer time table's rows are, under it in report.md
LAYER_TIMES_LEGEND = (
    "One row per layer, the models side by side: a conv/linear kernel is named by its module, any other "
    "node by the ONNX node it runs; a node ONNX Runtime added (a layout reorder) shares a row with the other "
    "model's node of its name (less ORT's _token_ number) after the same layer, else has a row of its own, - "
    "for the other model. Each node time carries the profiler's own cost of timing it (about 1-3 us a node on a "
    "CPU): the nodes sum to more than the unprofiled p50, and a small node's time is mostly that cost; the last "
    "rows give each model's sum, its p50 and (sum - p50) / nodes, the estimated profiler cost per node."
)
LAYER_TIMES_UNNAMED = (
    "This record's nodes carry no layer names (measured before bench recorded them, or without onnx "
    "installed): only nodes of the same ONNX Runtime name share a row; bench again to match them by layer."
)


def _nodes_named(lt: dict[str, dict]) -> bool:
    """Whether every profiled node of ``lt`` (label -> a model's ``layer_times``) carries its layer."""
    return all("layer" in node for v in lt.values() for node in v["layers"])


def layer_times_legend(record: dict) -> str:
    """The legend under the per-layer time table: :data:`LAYER_TIMES_LEGEND`, and where the record's nodes
    carry no layer names, :data:`LAYER_TIMES_UNNAMED` (terminal and report.md alike; read from the nodes,
    without aligning them again)."""
    lt = {label: record["summary"][label].get("layer_times") or {"layers": []} for label in record["models"]}
    return LAYER_TIMES_LEGEND + ("" if _nodes_named(lt) else " " + LAYER_TIMES_UNNAMED)


def layer_time_rows(record: dict) -> tuple[str, list[str], list[list]] | None:
    """The per-node kernel times of every model (``bench --layer-times``): a title, the columns and one
    row per layer (:func:`aligned_layer_times`), microseconds to one decimal; None when the record has none."""
    aligned = aligned_layer_times(record)
    if aligned is None:
        return None
    names, rows, _ = aligned
    labels = list(record["models"])
    out = [
        [name, *(x for label in labels for x in (
            [by[label]["op"], f"{by[label]['median_us']:.1f}"] if label in by else [None, None]))]
        for name, by in zip(names, rows)
    ]  # fmt: skip
    cols = ["layer", *(f"{label} {c}" for label in labels for c in ("op", "us"))]
    batch = record["summary"][labels[0]]["layer_times"]["batch"]
    out += layer_time_totals(record, labels, batch)
    return f"Per-layer kernel time (ONNX Runtime profiler, batch {batch}, median of runs)", cols, out


def layer_time_totals(record: dict, labels: list[str], batch: int) -> list[list]:
    """The per-layer table's last rows: each model's sum of node times, its measured p50 at that batch (unprofiled)
    and the profiler's estimated cost per node, (sum - p50) / nodes (a review: 2.4 us a node, the slim nodes summing
    to 131% of the p50), in microseconds to one decimal; - where the run has no p50 at that batch."""
    sums, p50s, per_node = [], [], []
    for label in labels:
        nodes = record["summary"][label]["layer_times"]["layers"]
        total = sum(n["median_us"] for n in nodes)
        p50 = (record["summary"][label].get(str(batch)) or {}).get("p50_ms")
        sums += [None, f"{total:.1f}"]
        p50s += [None, None if p50 is None else f"{1e3 * p50:.1f}"]
        per_node += [None, None if p50 is None or not nodes else f"{(total - 1e3 * p50) / len(nodes):.1f}"]
    return [
        ["sum of the nodes", *sums],
        [f"measured p50 (unprofiled, batch {batch})", *p50s],
        ["profiler cost / node (sum - p50) / nodes", *per_node],
    ]


def _digits3(x: float) -> str:
    """``x`` to 3 significant digits with their trailing zeros (2.00, 1.85, 123)."""
    return f"{x:#.3g}".rstrip(".")


def _like(x: float, shown: str) -> str:
    """``x`` to as many decimals as ``shown`` has."""
    return f"{x:.{len(shown.partition('.')[2])}f}"


def speedup_rows(record: dict) -> list[list]:
    rows = []
    for b, sp in record.get("speedup", {}).items():
        eff = record.get("speedup_over_macs_ratio", {}).get(b)
        rows.append(
            [
                int(b),
                sp["value"],
                f"[{_digits3(sp['ci_low'])}, {_digits3(sp['ci_high'])}]",  # (2.00, not 2, beside 1.997)
                _like(sp["spread"], _digits3(sp["value"])),  # (0.03 beside [1.72, 1.79], not 0.02983)
                record.get("macs_ratio"),
                eff,
            ]
        )
    return rows


SPEEDUP_COLS = ["batch", "speedup (p50)", "95% CI", "trial spread", "MACs ratio", "speedup / MACs ratio"]
#: what the latency and speedup tables' columns mean, under them in report.md (a reader asked)
LATENCY_LEGEND = (
    "p50: the median over trials of each trial's median (of an even number of trials, the mean of the two "
    "middle ones), the number the speedup divides and samples/s is computed from; trial p50s: the lowest and "
    "highest trial median, how far apart the trials were; p90, p99, mean, std and CV over all timed calls of "
    "all trials; n: timed calls; timer: host = the wall clock around each call, device = the GPU's own events. "
    "Times are per call: at a batch over 1, the whole batch's (ms per batch); samples/s = batch / p50."
)
SPEEDUP_LEGEND = (
    "Trial spread: the largest minus the smallest per-trial speedup. MACs ratio: baseline MACs / slim MACs. "
    "Speedup / MACs ratio: how much of the MAC reduction shows as speed (1.0: as much faster as the MACs "
    "promise)."
)
MEMORY_COLS = [
    "model",
    "file MiB",
    "params",
    "MMACs / sample",
    "peak RSS MiB",
    "RSS delta MiB",
    "NvMap delta MiB",
    "load s",
]


PREDICTION_COLS = ["model", "batch", "predicted ms", "measured p50 ms", "error %"]
TELEMETRY_COLS = ["model", "batch", "samples", "power W", "mJ / batch", "mJ / image", "GPU load %", "GPU MHz",
                  "max temp C", "max RAM MiB"]  # fmt: skip
#: what a telemetry window covered (the ``window`` of a run's tegrastats summaries)
TELEMETRY_WINDOWS = {
    "timed": "trtexec's timed iterations (read from its log; the engines built before, outside it)",
    "inference": "trtexec's warm-up and timed iterations (its log gave no timed span)",
    "run": "the whole trtexec run: engine load, warm-up and timed iterations (its log did not show when "
    "inference ran)",
    "measure": "each timed window, the warm-up included",
}
TELEMETRY_LEGEND = (
    "tegrastats sampled during {windows}. Power: the mean input power ({rails}); energy per batch: "
    "that power times the seconds the timed calls took, over the calls (the warm-up left out); medians over "
    "the trials; GPU MHz: the lowest and highest clock seen (a range: the clock moved while timing); max "
    "temperature of the sensors (PMIC left out), max RAM in use on the board."
)


def telemetry_rows(record: dict) -> list[list] | None:
    """One row per model and batch of the Jetson telemetry the trials sampled (tegrastats); None when
    no trial sampled any (no tegrastats on the machine, or ``--no-tegrastats``)."""
    rows = []
    for label in record["models"]:
        for b in record["batches"]:
            t = (record["summary"][label].get(str(b)) or {}).get("tegrastats")
            if not t:
                continue
            lo, hi = t.get("gpu_mhz_min"), t.get("gpu_mhz_max")
            mhz = None if lo is None else (f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}")
            energy = t.get("energy_per_inference_mj")
            power = t.get("power_mean_mw")
            rows.append([label, b, t["samples"], None if power is None else power / 1e3, energy,
                         None if energy is None else energy / b, t.get("gpu_load_mean"), mhz,
                         t.get("temp_max_c"), None if t.get("ram_used_mb_max") is None
                         else round(t["ram_used_mb_max"])])  # fmt: skip
    return rows or None


def telemetry_legend(record: dict) -> str:
    """:data:`TELEMETRY_LEGEND` with the power rails the trials read."""
    rails = sorted({
        t["power_rail"]
        for label in record["models"] for b in record["batches"]
        if (t := (record["summary"][label].get(str(b)) or {}).get("tegrastats"))
        and t.get("power_rail") not in (None, "none")
    })  # fmt: skip
    windows = sorted({
        w
        for label in record["models"] for b in record["batches"]
        if (t := (record["summary"][label].get(str(b)) or {}).get("tegrastats"))
        for w in t.get("window") or ["measure"]
    })  # fmt: skip
    words = "; ".join(TELEMETRY_WINDOWS.get(w, w) for w in windows) or TELEMETRY_WINDOWS["measure"]
    return TELEMETRY_LEGEND.format(rails=", ".join(rails) or "no power rail in the lines", windows=words)


def prediction_rows(record: dict) -> list[list]:
    """One row per model and batch of ``record["prediction"]`` (predicted vs measured)."""
    return [
        [
            label,
            int(b),
            v["total_ms"],
            v.get("measured_p50_ms"),
            None if v.get("error") is None else 100 * v["error"],
        ]
        for label, bs in record["prediction"]["models"].items()
        for b, v in bs.items()
    ]


def device_name(record: dict) -> str:
    """The machine ``record`` was timed on: the GPU (nvidia-smi's name) for a TensorRT or GPU-timed run
    off a Jetson, else the board (a Jetson's device-tree model) or the CPU."""
    env = record.get("env") or {}
    gpu_timed = str(record.get("backend")) in TENSORRT_BACKENDS or any(
        s.get("timer") == "device" for per in (record.get("summary") or {}).values() for s in per.values()
        if isinstance(s, dict)
    )  # fmt: skip
    smi = str(env.get("nvidia_smi") or "").strip()
    if gpu_timed and smi and not env.get("device_model"):
        return smi.splitlines()[0].split(",")[0].strip()
    return str(
        env.get("device_model") or env.get("cpu_model") or env.get("machine") or "an unrecorded machine"
    )


def measured_device(record: dict) -> str:
    """Where ``record`` was measured, in words: the device, its architecture, the backend and threads."""
    env = record.get("env") or {}
    device = device_name(record)
    threads = env.get("threads")
    pools = env.get("thread_pools") or {}
    where = (
        f" in XNNPACK's pool, ONNX Runtime's intra-op pool {pools['onnxruntime_intra_op']}" if pools else ""
    )
    return f"{device} ({env.get('machine') or 'unknown architecture'}), {record.get('backend')}" + (
        f", {threads} thread(s){where}" if threads else ""
    )


def _threads_words(record: dict) -> str:
    """The threads the run used, and whether they were given or the runtime's default."""
    threads = (record.get("env") or {}).get("threads")
    if threads is None:
        return "not recorded"
    return f"{threads}" + ("" if (record.get("options") or {}).get("threads") else " (the runtime's default)")


def predicted_speedup(models: dict, key: str = "total_ms") -> dict[str, float]:
    """Baseline over slim predicted time per batch (``models``: label -> batch -> a prediction with
    ``key``), where both were predicted and the slim time is above zero."""
    base, slim = models.get("baseline"), models.get("slim")
    if not base or not slim:
        return {}
    return {b: base[b][key] / slim[b][key] for b in base if b in slim and (slim[b].get(key) or 0) > 0}


def predicted_speedups(prediction: dict) -> str | None:
    """``batch 1 1.07x, batch 8 1.33x`` (:func:`predicted_speedup` of a bench record's prediction)."""
    speed = predicted_speedup(prediction.get("models") or {})
    return ", ".join(f"batch {b} {v:.2f}x" for b, v in speed.items()) or None


def assumed_efficiency(prediction: dict) -> str | None:
    """A note (a sentence from its first word on) when the prediction's efficiency factors are, in part,
    the profile's assumed ones (not fitted to timings on the device), quoting what the profile says."""
    effs = [
        v.get("efficiency") or {} for bs in (prediction.get("models") or {}).values() for v in bs.values()
    ]
    assumed = [
        e
        for e in effs
        if "assumed" in str(e.get("source", "")) and {"compute", "memory", "launch_us"} <= set(e)
    ]
    if not assumed:
        return None
    e = assumed[0]
    source = str(e["source"]).split(":")[0] if str(e["source"]).startswith("assumed") else e["source"]
    return (
        f"efficiency factors not fitted to timings on the device: {e['compute']:g} of peak compute, "
        f"{e['memory']:g} of peak bandwidth, {e['launch_us']:g} us per layer launch (the profile says: {source}); a "
        "layer whose time is mostly that launch cost is 'launch'-bound, so small networks are predicted close "
        "to dense. Fitted factors come from timings on the device (docs/bench.md, calibration)."
    )


def memory_not_measured(record: dict) -> str | None:
    """Why a run has no memory figures (trtexec's: the model ran in trtexec's own process), else None."""
    for label in record["models"]:
        if why := (record["summary"][label].get("memory") or {}).get("not_measured"):
            return why
    return None


def memory_rows(record: dict) -> list[list]:
    rows = []
    for label, facts in record["models"].items():
        m = record["summary"][label]["memory"]
        cost = facts.get("cost") or {}
        rows.append(
            [
                label,
                facts["file_bytes"] / 2**20,
                cost.get("params"),
                cost["macs"] / 1e6 if cost.get("macs") is not None else None,
                mib(m, "peak_rss_mib"),
                mib(m, "rss_delta_mib"),
                mib(m, "nvmap_delta_mib"),
                record["summary"][label]["load_s"],
            ]
        )
    return rows


#: a run starts "busy" when the 1-minute load average plus its threads exceeds the cores by more than this
BUSY_MARGIN = 1.0


def busy_warning(record: dict) -> str | None:
    """The line a run measured on a busy machine warns with (load average and threads over the cores),
    else None."""
    env = record.get("env") or {}
    load = (env.get("load_avg") or [None])[0]
    cores = env.get("cpu_affinity") or env.get("cpu_count")
    # ONNX Runtime and torch default to every core; TensorRT's host side is one thread driving the GPU
    trt = record.get("backend") in ("trtexec", "tensorrt")
    threads = 1 if trt else env.get("threads") or cores
    if load is None or not cores or load + threads <= cores + BUSY_MARGIN:
        return None
    # (an older run records no thread count: the runtime's default, every core, is a guess)
    uses = f"uses {threads} thread(s)" if trt or env.get("threads") else (
        f"records no thread count (guessed from its {cores} cores: the runtime's default uses them all)")  # fmt: skip
    return (
        f"the machine was busy when the run started (load average {load:.1f} on {cores} cores) and the run "
        f"{uses}: other processes took cores from it, so its latencies, and a speed-up "
        "between models timed under different contention, are unreliable; run on an idle machine"
        + (" or with fewer threads" if threads > 1 else "")
    )


def interval_notes(record: dict) -> list[str]:
    """A line per batch whose speedup interval, from fewer than :data:`MIN_TRIALS_BOOTSTRAP` trials (2 or
    more: with one it is that trial's calls alone, as its method says), reaches past the trials' own
    speedups on one side, by more than twice the other side, their spread and 5% of the speedup: the two-level bootstrap resamples each
    trial's timed calls too, and on a spread timing their median jumps (a review: trials 1.93 to 2.09,
    interval [1.92, 2.69] at a baseline CV of 37%)."""
    out = []
    for b, sp in (record.get("speedup") or {}).items():
        per = sp.get("per_trial") or []
        if not 2 <= len(per) < MIN_TRIALS_BOOTSTRAP:
            continue
        # (far past the trials on one side only: an honest interval over few agreeing trials reaches past them
        # on both sides about alike, and is not said)
        high, low = sp["ci_high"] - max(per), min(per) - sp["ci_low"]
        far, near = max(high, low), max(min(high, low), 0.0)
        if far <= max(2 * near, sp.get("spread", 0.0), 0.05 * sp["value"]):
            continue
        cvs = [
            ((record.get("summary") or {}).get(label) or {}).get(str(b), {}).get("cv")
            for label in record["models"]
        ]
        cv = max((c for c in cvs if c is not None), default=None)
        spread = f" (CV {100 * cv:.0f}%)" if cv is not None else ""
        out.append(
            f"batch {b}: the {sp.get('level', 0.95):.0%} interval [{_digits3(sp['ci_low'])}, {_digits3(sp['ci_high'])}] "
            f"reaches well past every trial's speedup ({_digits3(min(per))} to {_digits3(max(per))}): with "
            f"{len(per)} trials it resamples each trial's timed calls too, whose median jumps on a spread "
            f"timing{spread}; read the trials' speedups, or time {MIN_TRIALS_BOOTSTRAP} or more trials for an "
            "interval over trials alone"
        )
    return out


def precision_note(record: dict) -> str | None:
    """What bench's names mean for a quantized (INT8) file against a float one (export's suggested
    INT8-against-FP32 bench): they are "baseline" and "slim" whatever they hold (a review read INT8 as
    the slim network); None for another pair."""
    models = record.get("models") or {}
    if set(models) != {"baseline", "slim"}:
        return None
    quantized = {label: bool((m.get("cost") or {}).get("quantized")) for label, m in models.items()}
    if quantized["baseline"] == quantized["slim"]:
        return None
    int8, fp = ("slim", "baseline") if quantized["slim"] else ("baseline", "slim")
    name = {label: Path(str(m.get("path") or "")).name for label, m in models.items()}
    macs = [(m.get("cost") or {}).get("macs") for m in models.values()]
    if macs[0] is None or macs[0] != macs[1]:  # (a slim INT8 file against the dense float one)
        known = "of other MACs" if macs[0] is not None and macs[1] is not None else "perhaps of other MACs"
        return (
            f"{int8} ({name[int8]}) is an INT8 model and {fp} ({name[fp]}) a float one {known}: the speedup is "
            "INT8 and the networks' difference together; what INT8 alone buys is the INT8 file against the float "
            "export of the same network, and its kernels are not the device's, so time both there"
        )
    return (
        f"{int8} ({name[int8]}) is the INT8 model and {fp} ({name[fp]}) the float one of one network (the same "
        "MACs): the speedup is what INT8 buys on this machine, below 1 where it ran slower here; its kernels are "
        "not the device's, so time both there"
    )


def spread_warnings(record: dict) -> list[str]:
    """The lines of the models and batches whose timed calls spread more than :data:`CV_WARN`."""
    out = []
    for label in record["models"]:
        for b in record["batches"]:
            s = record["summary"][label][str(b)]
            if s["cv"] > CV_WARN:
                out.append(
                    f"{label} batch {b}: CV {100 * s['cv']:.1f}% > {100 * CV_WARN:.1f}% (unstable: shared machine, "
                    "clocks or thermals; p50 and the trial p50s are the numbers to read)"
                )
    return out


def warnings(record: dict) -> list[str]:
    """The lines a run's report warns with: those its record holds (``warnings``: what the measuring
    said, e.g. a baseline of another network), then what its numbers and machine show."""
    out = [w for w in record.get("warnings") or [] if isinstance(w, str)]
    if busy := busy_warning(record):
        out.append(busy)
    env = record.get("env") or {}
    machine = str(env.get("machine") or "").lower()
    if machine and not is_arm(machine):
        ort = {label: (m.get("ort_conversion") or {}).get("target_platform")
               for label, m in record["models"].items() if model_file_format(m) == "ort"}  # fmt: skip
        for arm, labels in (
            (True, [label for label, target in ort.items() if target == "arm"]),
            (False, [label for label, target in ort.items() if not target]),  # (a file that records none)
        ):  # (one converted for another platform, amd64, is not flagged)
            if not labels:
                continue
            files = f"{' and '.join(labels)} {'is an .ort file' if len(labels) == 1 else 'are .ort files'}"
            out.append(
                (f"{files} converted for ARM (as {'it records' if len(labels) == 1 else 'they record'}), whose "
                 f"optimizations are fixed for it, timed here on {machine}"
                 if arm else
                 f"{files}, whose optimizations are fixed for the platform it was converted for (not recorded in "
                 f"the file; if ARM, as edgeslim's export converts, it runs slower here), timed here on {machine}")
                + ": a user trial measured one 5x slower than its .onnx; bench the .onnx here and the .ort on the phone"
            )  # fmt: skip
    paths = [str(m.get("path") or "") for m in record["models"].values()]
    same = (
        len(paths) == 2 and paths[0] and os.path.realpath(paths[0]) == os.path.realpath(paths[1])
    )  # (a link too)
    if same:
        out.append(
            f"the model and the baseline are the same file ({paths[0]}): the speedup between them is the "
            "run's noise, not a comparison; give the unpruned export as the baseline"
        )
    dtypes = {r.get("label"): (r.get("info") or {}).get("dtype") for r in record.get("trials") or []
              if isinstance(r, dict) and isinstance(r.get("info"), dict)}  # fmt: skip
    if len(dtypes) == 2 and all(dtypes.values()) and len(set(dtypes.values())) == 2:
        which = " and ".join(f"{label} in {d}" for label, d in dtypes.items())
        out.append(
            f"the models ran in different dtypes ({which}): the speedup includes the dtype's; save both in "
            "one dtype (edgeslim checkpoints are timed in float32)"
        )
    out += spread_warnings(record)
    for label in record["models"]:
        for b in record["batches"]:
            if (cov := _trtexec_cov(record, label, b)) is not None:
                out.append(
                    f"{label} batch {b}: trtexec warned that its GPU compute time is unstable (coefficient of "
                    f"variance {cov:.2f}% > its 1%; the largest of the trials): lock the clocks (jetson_clocks, "
                    "nvidia-smi -lgc) and keep the GPU for the run"
                )
    return out


def _trtexec_cov(record: dict, label: str, batch: int) -> float | None:
    """The largest coefficient of variance trtexec warned of in ``label``'s trials at ``batch``."""
    covs = []
    for r in record.get("trials") or []:
        if isinstance(r, dict) and r.get("label") == label:
            summary = ((r.get("info") or {}).get("summaries") or {}).get(str(batch)) or {}
            if isinstance(summary.get("cov_warning_pct"), (int, float)):
                covs.append(float(summary["cov_warning_pct"]))
    return max(covs) if covs else None


def markdown(record: dict, plots: list[str] | None = None) -> str:
    env = record["env"]
    vers = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    paths = [Path(v["path"]) for v in record["models"].values()]
    # file names alone, unless two models share one (a trial compared two runs' slim.onnx)
    shown = [p.name for p in paths] if len({p.name for p in paths}) == len(paths) else [str(p) for p in paths]
    names = ", ".join(f"{k} = `{n}`" for k, n in zip(record["models"], shown))
    parts = [
        f"# edgeslim bench: {names}",
        "",
        f"Backend **{record['backend']}**, options `{record['options']}`, batches {record['batches']}, "
        f"{record['trials_requested']} trial(s) per model, each in a fresh process, order alternating. "
        f"Created {record['created']}.",
        "",
        f"Measured on **{measured_device(record)}**"
        + (
            f": not the target ({record['prediction']['profile']}); its prediction is the section below, not "
            "a measurement."
            if (record.get("prediction") or {}).get("not_compared")
            else "."
        ),
        "",
        *([record["description"], ""] if record.get("description") else []),
        f"## {latency_title(record).capitalize()}",
        "",
        markdown_table(LATENCY_COLS, latency_rows(record)),
        "",
        LATENCY_LEGEND,
    ]
    if record.get("speedup"):
        method = next(iter(record["speedup"].values()))["method"]
        parts += [
            "",
            "## Speedup (baseline / slim)",
            "",
            markdown_table(SPEEDUP_COLS, speedup_rows(record)),
            "",
            f"Method: {method}. {SPEEDUP_LEGEND}",
            *(["", f"Note: {note}."] if (note := precision_note(record)) else []),
            *(
                ["", *(f"Note: {n[0].upper()}{n[1:]}." for n in notes)]
                if (notes := interval_notes(record))
                else []
            ),
        ]
    torch_counted = any((m.get("cost") or {}).get("counted_by") == "torch" for m in record["models"].values())
    params = (
        "as the PyTorch model holds them (BatchNorm separate)"
        if torch_counted
        else "as the ONNX file holds them (BatchNorm folded into the convolutions)"
    )
    unmeasured = memory_not_measured(record)
    parts += ["", "## Memory and size", "", markdown_table(MEMORY_COLS, memory_rows(record)), "",
              (f"Memory and load time not measured (-): {unmeasured}. " if unmeasured else "") +
              "Each model in its own process: peak RSS, the RSS the model added after its runtime was imported (loading "
              "and first inference), NvMap (a Jetson's "
              f"GPU memory; - elsewhere), and the seconds to load it; MiB: 2^20 bytes, sizes and memory alike. params: {params}."]  # fmt: skip
    if record.get("prediction") and (none := nothing_predicted(record["prediction"])):
        pr = record["prediction"]
        parts += ["", f"## {pr['label']}, profile `{pr['profile']}`", "", none[0].upper() + none[1:] + "."]
    elif record.get("prediction"):
        pr = record["prediction"]
        parts += [
            "",
            f"## {pr['label']}, profile `{pr['profile']}`",
            "",
            markdown_table(PREDICTION_COLS, prediction_rows(record)),
            *(
                ["", f"Predicted speedup (baseline / slim): {predicted}."]
                if (predicted := predicted_speedups(pr))
                else []
            ),
            *(
                ["", uncalibrated[0].upper() + uncalibrated[1:]]
                if (uncalibrated := assumed_efficiency(pr))
                else []
            ),
            *(["", f"Not compared: {pr['not_compared']}."] if pr.get("not_compared") else []),
            *(
                [
                    "",
                    "Channel counts: "
                    + "; ".join(
                        f"{label} padded to multiples of {m}"
                        if m > 1
                        else f"{label} at its exported widths ({UNPADDED_WHY})"
                        for label, m in pr["channel_multiple"].items()
                    )
                    + ".",
                ]
                if pr.get("channel_multiple")
                else []
            ),  # fmt: skip
            *(
                x
                for label, why in (pr.get("skipped") or {}).items()
                for x in ("", f"Not predicted: {label}: {why}")
            ),
        ]
    if (tegra := telemetry_rows(record)) is not None:
        parts += ["", "## Jetson telemetry (tegrastats, measured)", "", markdown_table(TELEMETRY_COLS, tegra), "",
                  telemetry_legend(record)]  # fmt: skip
    if (times := layer_time_rows(record)) is not None:
        title, cols, rows = times
        parts += ["", f"## {title}", "", markdown_table(cols, rows), "", layer_times_legend(record)]
    w = warnings(record)
    if w:
        parts += ["", "## Warnings", ""] + [f"- {x}" for x in w]
    parts += [
        "",
        "## Environment",
        "",
        f"- device: {device_name(record)} ({env.get('machine')}, {env.get('cpu_count')} CPUs, "
        f"load average {_load_average(env.get('load_avg'))})",
        f"- OS: {env.get('os')}; governor: {env.get('cpu_governor') or 'not readable'}; threads: "
        f"{_threads_words(record)}",
        f"- runtimes: {vers}",
    ]
    for k in ("l4t_release", "jetpack", "nvpmodel", "nvidia_smi"):
        if env.get(k):
            parts.append(f"- {k}: {str(env[k]).splitlines()[0]}")
    if plots:
        parts += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(parts) + "\n"


def _has_samples(record: dict) -> bool:
    """Whether ``record`` holds every model's raw latency samples at every batch (its trials)."""
    trials = record.get("trials")
    if not isinstance(trials, list):
        return False
    for label in record["models"]:
        runs = [r for r in trials if isinstance(r, dict) and r.get("label") == label]
        if not runs or not all(isinstance(r.get("samples"), dict) and str(b) in r["samples"]
                               for r in runs for b in record["batches"]):  # fmt: skip
            return False
    return True


#: latency.png's panels (one per batch) per row; more batches wrap onto further rows
LATENCY_PANELS_PER_ROW = 3


def _latency_plot(record: dict, path: Path) -> Path:
    """The latency distributions of every model per batch (boxes of the raw samples) into ``path``."""
    import numpy as np

    labels = list(record["models"])
    n = len(record["batches"])
    cols = min(n, LATENCY_PANELS_PER_ROW)  # (7 batches in one row: 4004 x 418 px, unreadable at page width)
    rows = math.ceil(n / cols)
    fig, axes = new_figure(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, b in zip(axes.flat, record["batches"]):
        data, names = [], []
        for label in labels:
            runs = [r for r in record["trials"] if r["label"] == label]
            s = runs[0]["samples"][str(b)]
            key = "device" if s.get("device") else "host"
            data.append(np.concatenate([r["samples"][str(b)][key] for r in runs]) * 1e3)
            names.append(label)
        ax.boxplot(
            data, whis=(1, 99), showfliers=False, tick_labels=names, medianprops={"color": "tab:orange"}
        )
        for i, label in enumerate(
            labels, start=1
        ):  # each trial's p50 (dots) and their median, the p50 (dash)
            s = record["summary"][label][str(b)]
            trials = s.get("trial_p50_ms") or []
            ax.plot([i] * len(trials), trials, "o", ms=3.5, mfc="none", mec="black", zorder=3)
            # (dashed: a solid bar hid the orange median line it sits on, and the title says "red dash")
            ax.plot([i - 0.3, i + 0.3], [s["p50_ms"]] * 2, color="tab:red", lw=1.8, ls=(0, (3, 2)), zorder=4)
        ax.set_yscale("log")
        # (each model's whiskers: pooled samples of very different counts could leave a box unlabelled)
        plain_log_axis(ax.yaxis, min(float(np.percentile(d, 1)) for d in data),
                       max(float(np.percentile(d, 99)) for d in data))  # fmt: skip
        ax.set_ylabel("latency per batch (ms, log scale)")
        p50 = [float(record["summary"][label][str(b)]["p50_ms"]) for label in labels]  # the table's p50s
        head = f"batch {b}"
        if len(p50) == 2 and p50[1] > 0:
            word = f"{p50[0] / p50[1]:.2f}x faster" if p50[0] >= p50[1] else f"{p50[1] / p50[0]:.2f}x slower"
            head += f": {names[1]} {word} than {names[0]}"
        p50s = " vs ".join(f"{v:.3g}" for v in p50)
        legend = (
            f"p50 {p50s} ms ({key} time): red dash, the median of the trials' p50s (circles); boxes: all "
            "samples pooled, p25-p75, their median the orange line, whiskers p1-p99"
        )
        # (wrapped to the panel: one line of it ran past the figure's edge, cut off mid-word)
        ax.set_title("\n".join([head, *textwrap.wrap(legend, 62)]), fontsize=8)
    fig.suptitle(f"measured latency, {record['backend']} on {device_name(record)[:60]}")  # (not a profile's)
    fig.tight_layout()
    return save_figure(fig, path)


def _load_average(load: object) -> str:
    """The 1, 5 and 15 minute load averages as ``2.75 / 1.34 / 0.55`` (as they were recorded otherwise)."""
    if isinstance(load, list) and load and all(isinstance(v, (int, float)) for v in load):
        return " / ".join(f"{v:.2f}" for v in load) + " (1, 5, 15 min)"
    return str(load)


def plots(record: dict, out_dir: str | Path) -> list[Path]:
    """latency.png (distributions; where the record holds its raw samples), layers.png (per-layer
    MMACs by layer name), layer_times.png (measured per-node times), memory.png (the Memory and size
    table's figures); written atomically."""
    import numpy as np

    out = Path(out_dir)
    written: list[Path] = []
    labels = list(record["models"])
    if _has_samples(record):
        written.append(_latency_plot(record, out / LATENCY_PNG))
    else:
        log.warning(
            "%s not drawn: the record holds no raw samples (the summary printed as JSON leaves them out; "
            "the run.json a benchmark writes to its output folder has them)", LATENCY_PNG,
        )  # fmt: skip
    costs = {label: record["models"][label].get("cost") for label in labels}
    if all(layer_costs(record, label) is not None for label in labels):
        macs = {label: [layer["macs"] / 1e6 for layer in costs[label]["layers"]] for label in labels}
        names = [str(layer.get("name", i)) for i, layer in enumerate(costs[labels[0]]["layers"])]
        if len({len(v) for v in macs.values()}) == 1:  # the layers that carry MACs (not a gate's Mul)
            keep = [i for i in range(len(names)) if any(v[i] > 0 for v in macs.values())]
            macs = {label: [v[i] for i in keep] for label, v in macs.items()}
            names = [names[i] for i in keep]
        totals = ", ".join(f"{label} {costs[label]['macs'] / 1e6:.3g}" for label in labels)
        ratio = ""
        if len(labels) == 2 and costs[labels[0]]["macs"]:
            kept = costs[labels[1]]["macs"] / costs[labels[0]]["macs"]  # (not "0.47x": read as a slowdown)
            ratio = f" ({labels[1]} {kept:.0%} of {labels[0]}" + (
                f", {1 / kept:.2f}x fewer)" if 0 < kept < 1 else ")"
            )
        fig = _layer_bars(macs, "ONNX layer (fused, graph order)", "MMACs per sample",
                          f"per-layer MACs; total MMACs: {totals}{ratio}", names)  # fmt: skip
        written.append(save_figure(fig, out / LAYERS_PNG))
    if (aligned := aligned_layer_times(record)) is not None:
        names, rows, named = aligned  # (a node one model alone runs: no bar for the other)
        us = {label: [by[label]["median_us"] if label in by else math.nan for by in rows] for label in labels}
        title = f"measured per-layer time, batch {record['summary'][labels[0]]['layer_times']['batch']} (ORT profiler)"
        xlabel = "layer (ORT nodes matched by " + ("layer; " if named else "node name; ") + "execution order)"
        fig = _layer_bars(us, xlabel, "kernel time (us)", title, names)
        written.append(save_figure(fig, out / LAYER_TIMES_PNG))
    fig, ax = new_figure(figsize=(6, 3.6))
    # the same three figures as the Memory and size table of report.md
    keys = [("file MiB", lambda lab: record["models"][lab]["file_bytes"] / 2**20)]
    if not memory_not_measured(record):  # (trtexec's: no bars of 0)
        keys.append(
            ("peak RSS MiB", lambda lab: mib(record["summary"][lab]["memory"], "peak_rss_mib") or 0.0)
        )
        keys.append(
            ("RSS delta MiB", lambda lab: mib(record["summary"][lab]["memory"], "rss_delta_mib") or 0.0)
        )
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        vals = [fn(label) for _, fn in keys]
        bars = ax.bar(np.arange(len(keys)) + i * width, vals, width, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [k for k, _ in keys])
    ax.set_ylabel("MiB (2^20 bytes)")
    ax.legend()
    ax.set_title("model file and process memory (as in report.md's Memory and size table)", fontsize=10)
    fig.tight_layout()
    written.append(save_figure(fig, out / MEMORY_PNG))
    return written


def _layer_bars(
    values: dict[str, list[float]], xlabel: str, ylabel: str, title: str, names: list[str] | None = None
):
    """A figure of one bar per layer, side by side for each model (label -> per-layer values);
    ``names`` label the layers on the x axis when every model has that many."""
    import numpy as np

    n = max(len(v) for v in values.values())
    many = n > 60  # a whole EfficientNet: narrower bars and labels, at most 24 inches wide
    fig, ax = new_figure(figsize=(min(24.0, max(8.0, (0.2 if many else 0.3) * n + 2)), 4.6 if names else 3.6))
    width = 0.8 / len(values)
    for i, (label, vals) in enumerate(values.items()):
        ax.bar(np.arange(len(vals)) + i * width, vals, width, label=label)
    if names and all(len(v) == len(names) for v in values.values()):
        # ONNX node names are module paths ("/blocks/blocks.1/blocks.1.0/conv_pw/Conv+Relu"): the module
        # ("blocks.1.0.conv_pw"), else the last two parts
        short = [
            (module_name(nm.split("+")[0]) or "/".join(nm.strip("/").split("/")[-2:]))[-32:] for nm in names
        ]
        ax.set_xticks(
            np.arange(len(names)) + 0.4 - width / 2, short, rotation=60 if many else 55, ha="right",
            fontsize=5 if many else 7,
        )  # fmt: skip
        ax.set_xlim(-0.6, len(names))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def write_outputs(
    record: dict, out_dir: str | Path, force: bool = False, with_plots: bool = True
) -> list[Path]:
    """run.json + report.md (+ PNGs) into ``out_dir``; refuses to overwrite without ``force``. The set is
    published whole or not at all (:func:`~edgeslim.utils.io.writing`): a stop while it is written leaves
    the earlier set as it was (an interrupt review: a forced bench stopped at its run.json left new PNGs
    and report.md without a run.json, and the earlier run deleted)."""
    from edgeslim.utils.io import atomic_write_text, check_output_dir, write_json, writing
    from edgeslim.utils.rundir import BENCH_STALE

    d = check_output_dir(out_dir, force=force, marker=RUN_FILE)
    if with_plots and importlib.util.find_spec("matplotlib") is None:  # a device install: no plots
        log.warning(
            "matplotlib is not installed: %s and %s written without PNG plots (%s adds them)",
            RUN_FILE,
            RUN_REPORT_MD,
            install_hint("plots"),
        )
        with_plots = False
    with writing([d / name for name in BENCH_STALE], replace=force) as stage:
        staged = stage(d / RUN_FILE).parent
        pngs = plots(record, staged) if with_plots else []
        md = atomic_write_text(staged / RUN_REPORT_MD, markdown(record, [str(p) for p in pngs]))
        written = [write_json(staged / RUN_FILE, record), md, *pngs]
    return [d / p.name for p in written]
