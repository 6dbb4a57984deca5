"""``edgeslim bench``, ``edgeslim profiles``, ``edgeslim report``.

Runs on a device without PyTorch: top-level imports are click and edgeslim.errors/utils only.
"""

from __future__ import annotations

import contextlib
import json

import click

from edgeslim.cli.common import trust_pickle_option
from edgeslim.cli.params import COUNT, DEVICE, NONNEG, POSITIVE, SHAPE, IntList, Number
from edgeslim.errors import EdgeslimError

_BACKENDS = ["onnxruntime", "ort", "tensorrt", "trt", "trtexec", "torch"]


def _print_record(record: dict, as_json: bool) -> None:
    from edgeslim.bench import report
    from edgeslim.utils.console import err, out, table
    from edgeslim.utils.io import to_jsonable

    if as_json:
        slim = {k: v for k, v in record.items() if k != "trials"}  # raw samples live in run.json
        out.print_json(json.dumps(to_jsonable(slim)))
        return
    out.print(table("latency (measured)", report.LATENCY_COLS, report.latency_rows(record)))
    if record.get("speedup"):
        out.print(
            table("speedup = baseline p50 / slim p50", report.SPEEDUP_COLS, report.speedup_rows(record))
        )
    out.print(
        table("size and memory (isolated process per model)", report.MEMORY_COLS, report.memory_rows(record))
    )
    if record.get("prediction"):
        pr = record["prediction"]
        out.print(
            table(f"{pr['label']} ({pr['profile']})", report.PREDICTION_COLS, report.prediction_rows(record))
        )
    for w in report.warnings(record):
        err.print(f"[yellow]warning:[/] {w}", soft_wrap=True)


def _predict_only(
    model: str, baseline: str | None, profile, batches, calibrate: str | None, as_json: bool
) -> None:
    from edgeslim.bench.onnx_cost import onnx_cost
    from edgeslim.bench.predict import Observation, predict_latency, scale_bytes
    from edgeslim.bench.predict import calibrate as fit
    from edgeslim.bench.report import check_record, layer_costs
    from edgeslim.utils.console import out, table
    from edgeslim.utils.io import read_json, to_jsonable

    eff = None
    fitted = None
    if calibrate:
        run = check_record(read_json(calibrate))
        obs = []
        for label in run["models"]:
            layers = layer_costs(run, label)
            if layers is None:
                continue
            layers = scale_bytes(layers, profile.preferred.precision)
            for b in run["batches"]:
                obs.append(Observation(layers, b, run["summary"][label][str(b)]["p50_ms"] * 1e-3))
        if not obs:
            raise EdgeslimError(f"{calibrate} has no ONNX layer costs to calibrate from; bench ONNX models")
        eff = fitted = fit(obs, profile)
    models = {"model": model} if baseline is None else {"baseline": baseline, "slim": model}
    result: dict = {
        "profile": profile.name,
        "label": "PREDICTION (roofline from MACs and bytes; not a measurement)",
    }
    if fitted is not None:
        result["calibration"] = {"from": calibrate, **fitted.model_dump()}
    result["models"] = {}
    for label, path in models.items():
        if not str(path).lower().endswith(".onnx"):
            raise EdgeslimError(f"--predict needs an .onnx file (MACs come from the ONNX graph); got {path}")
        layers = scale_bytes(onnx_cost(path).layers, profile.preferred.precision)  # the ONNX is fp32
        result["models"][label] = {
            str(b): predict_latency(layers, profile, batch=b, efficiency=eff).to_dict() for b in batches
        }
    if as_json:
        out.print_json(json.dumps(to_jsonable(result)))
        return
    if fitted is not None:
        out.print(
            f"calibrated from {calibrate}: compute/memory efficiency {fitted.compute:.3g}, "
            f"launch overhead {fitted.launch_us:.3g} us per layer"
        )
    for label, per_batch in result["models"].items():
        first = per_batch[str(batches[0])]
        rows = [[lp["name"], lp["bound"], lp["intensity"], lp["seconds"] * 1e6] for lp in first["layers"]]
        out.print(
            table(
                f"PREDICTION {label} on {profile.name}, batch {batches[0]} (not a measurement)",
                ["layer", "bound", "FLOP/B", "us"],
                rows,
            )
        )
        out.print(
            table(
                f"PREDICTION {label} totals",
                ["batch", "predicted ms", "samples/s"],
                [[int(b), p["total_s"] * 1e3, int(b) / p["total_s"]] for b, p in per_batch.items()],
            )
        )


def _check_layer_table_args(batches: list[int], baseline, out_dir, predict: bool, onnx_path) -> None:
    if len(batches) != 1:
        raise EdgeslimError(
            f"--layer-table measures at one batch size; got --batch {','.join(map(str, batches))}"
        )
    if baseline or out_dir or predict:
        raise EdgeslimError("--layer-table times one model; drop --baseline, --out and --predict")
    if onnx_path and not str(onnx_path).lower().endswith(".onnx"):
        raise EdgeslimError(f"--onnx takes the .onnx file the engine was built from; got {onnx_path}")


def _write_layer_table(model, backend, batch, timing, options, path, force, as_json) -> None:
    from edgeslim.bench.layers import layer_table, write_layer_table
    from edgeslim.utils.console import err, out, progress, table
    from edgeslim.utils.io import check_output_path, to_jsonable

    check_output_path(path, force)  # refuse early, before measuring
    with progress() as bar:
        task = bar.add_task("layer table", total=1, info=f"{backend}, batch {batch}")
        tab = layer_table(model, backend, batch, timing, options)
        bar.update(task, advance=1)
    written = write_layer_table(tab, path, force=True)
    if as_json:
        out.print_json(json.dumps(to_jsonable(tab)))
    else:
        rows = [[name, ms, ms / tab["total_ms"] * 100] for name, ms in tab["layers"].items()]
        rows += [["(fixed)", tab["fixed"], tab["fixed"] / tab["total_ms"] * 100]]
        out.print(table(f"per-layer latency, {backend}, batch {batch}", ["layer", "ms", "% of run"], rows))
        out.print(f"run {tab['total_ms']:.4g} ms (median of {tab['runs']}); {tab['method']}", soft_wrap=True)
    err.print(f"wrote {written}")


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--baseline", type=click.Path(dir_okay=False), help="Unpruned model to compare against (interleaved)."
)
@click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    help="Runtime (default: the profile's, else from the file type).",
)
@click.option("--profile", "profile_name", help="Device profile name or YAML path (edgeslim profiles).")
@click.option(
    "--batch", "batch_text", type=IntList(), default="1", show_default=True, help="Batch sizes, e.g. 1,32."
)
@click.option(
    "--trials",
    type=COUNT,
    default=3,
    show_default=True,
    help="Fresh processes per model (alternating order).",
)
@click.option(
    "--warmup", type=NONNEG, default=1.0, show_default=True, help="Warm-up seconds (and >= 20 iterations)."
)
@click.option("--min-iters", type=COUNT, default=200, show_default=True, help="Iterations measured at least.")
@click.option(
    "--min-time",
    type=NONNEG,
    default=2.0,
    show_default=True,
    help="Seconds measured at least, per batch and trial.",
)
@click.option("--max-time", type=POSITIVE, default=60.0, show_default=True, help="Seconds measured at most.")
@click.option("--threads", type=COUNT, help="Intra-op threads (default: the profile's).")
@click.option("--providers", help="ORT providers, comma-separated: cpu,cuda,tensorrt,xnnpack or full names.")
@click.option(
    "--graph-opt",
    default="all",
    show_default=True,
    type=click.Choice(["disable", "basic", "extended", "all"]),
    help="onnxruntime graph optimization level.",
)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="trtexec build precision (TRT < 11)."
)
@click.option("--cuda-graph", is_flag=True, help="Replay with a CUDA graph (tensorrt, trtexec).")
@click.option("--device", type=DEVICE, help="torch device (cpu, cuda, cuda:N).")
@click.option(
    "--input-shape",
    type=SHAPE,
    help="torch backend: C,H,W for a model file that records none (TorchScript, pickle).",
)
@trust_pickle_option
@click.option("--trtexec", "trtexec_path", help="Path to trtexec (default: PATH or /usr/src/tensorrt/bin).")
@click.option(
    "--tegrastats/--no-tegrastats", default=True, show_default=True, help="Sample tegrastats where present."
)
@click.option("--interval-ms", type=COUNT, default=100, show_default=True, help="tegrastats interval.")
@click.option("--layer-times", is_flag=True, help="onnxruntime: per-layer kernel times from ORT's profiler.")
@click.option(
    "--layer-table",
    "layer_table_path",
    type=click.Path(dir_okay=False),
    help="Write a per-layer latency table (JSON for slim --latency-table) at one --batch; any backend.",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    help="With --layer-table on an engine: the ONNX it was built from (names its layers).",
)
@click.option(
    "--nice",
    type=Number(int, min=0, max=19),
    default=0,
    show_default=True,
    help="Run the measurement processes under nice -n N.",
)
@click.option(
    "--predict", is_flag=True, help="Only PREDICT latency from MACs/bytes with --profile (no measurement)."
)
@click.option(
    "--calibrate", type=click.Path(dir_okay=False), help="With --predict: fit efficiencies from a run.json."
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Write run.json, report.md and PNGs here."
)
@click.option("--force", is_flag=True, help="Overwrite an existing run in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (without raw samples).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots with --out.")
def bench(model, baseline, backend, profile_name, batch_text, trials, warmup, min_iters, min_time, max_time, threads,
          providers, graph_opt, precision, cuda_graph, device, input_shape, trust_pickle, trtexec_path, tegrastats, interval_ms, layer_times,
          layer_table_path, onnx_path, nice, predict, calibrate, out_dir, force, as_json, plots) -> None:  # fmt: skip
    """Measure latency and memory of MODEL (.onnx, TensorRT engine, or edgeslim model file),
    against --baseline when given. With --predict, print a roofline PREDICTION instead.

    \b
    Examples:
      edgeslim bench slim.onnx --baseline dense.onnx --batch 1,32 --out runs/bench
      edgeslim bench slim.engine --baseline dense.engine --trust-pickle --profile jetson-orin-nano-8gb
      edgeslim bench slim.onnx --predict --profile jetson-nano
      edgeslim bench slim.onnx --layer-table layers.json      # for slim --latency-table
    """
    batches = list(batch_text)
    profile = None
    if profile_name:
        from edgeslim.bench.profiles import load_profile

        profile = load_profile(profile_name)
    if calibrate and not predict:
        raise EdgeslimError("--calibrate goes with --predict (it fits the prediction to a measured run.json)")
    if predict:
        if profile is None:
            raise EdgeslimError("--predict needs --profile NAME (list them with: edgeslim profiles)")
        _predict_only(model, baseline, profile, batches, calibrate, as_json)
        return
    from edgeslim.utils.io import check_output_dir, run_dir_lock

    if layer_table_path:
        _check_layer_table_args(batches, baseline, out_dir, predict, onnx_path)
    elif onnx_path:
        raise EdgeslimError("--onnx goes with --layer-table (it names an engine's layers)")
    with contextlib.ExitStack() as lock:
        if out_dir:  # refuse early, before minutes of measuring; hold the directory until written
            check_output_dir(out_dir, force=True)
            lock.enter_context(run_dir_lock(out_dir))
            check_output_dir(out_dir, force=force, marker="run.json")
        _measure_and_write(
            model, baseline, backend, profile, batches, trials, warmup, min_iters, min_time, max_time, threads,
            providers, graph_opt, precision, cuda_graph, device, input_shape, trust_pickle, trtexec_path,
            tegrastats, interval_ms, layer_times, layer_table_path, onnx_path, nice, out_dir, force, as_json,
            plots,
        )  # fmt: skip


def _measure_and_write(model, baseline, backend, profile, batches, trials, warmup, min_iters, min_time, max_time,
                       threads, providers, graph_opt, precision, cuda_graph, device, input_shape, trust_pickle,
                       trtexec_path, tegrastats, interval_ms, layer_times, layer_table_path, onnx_path, nice,
                       out_dir, force, as_json, plots) -> None:  # fmt: skip
    """Pick the backend, measure (or write a layer table), print and write the results."""
    from edgeslim.bench.backends import ALIASES, default_backend_for
    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.report import add_predictions, write_outputs
    from edgeslim.bench.timing import TimingConfig
    from edgeslim.utils.console import err, progress, progress_enabled

    name = ALIASES.get(backend, backend) if backend else default_backend_for(model)
    if backend is None and profile is not None:
        name = profile.preferred.backend
        if name == "tensorrt" and str(model).lower().endswith(".onnx"):
            # an ONNX file on a TensorRT device: trtexec builds and times it; else ORT
            from edgeslim.bench.backends.trtexec import find_trtexec

            name = "trtexec" if find_trtexec(trtexec_path) else "onnxruntime"
            err.print(f"[dim]{model} is ONNX: using the {name} backend (pass --backend to choose)[/]")
    options: dict = {"graph_opt": graph_opt}
    if threads or (profile and profile.preferred.threads):
        options["threads"] = threads or profile.preferred.threads
    prov = providers.split(",") if providers else (profile.preferred.providers if profile else None)
    if prov:
        options["providers"] = prov
    if precision or profile:
        options["precision"] = precision or profile.preferred.precision
    if cuda_graph:
        options["cuda_graph"] = True
    if device:
        options["device"] = device
    if input_shape:
        options["input_shape"] = list(input_shape)
    if trust_pickle:
        options["trust_pickle"] = True
    if trtexec_path:
        options["trtexec"] = trtexec_path
    if onnx_path:
        options["onnx"] = onnx_path
    timing = TimingConfig(warmup_s=warmup, min_iters=min_iters, min_time_s=min_time, max_time_s=max_time)
    if layer_table_path:
        _write_layer_table(model, name, batches[0], timing, options, layer_table_path, force, as_json)
        return
    models = {"baseline": baseline, "slim": model} if baseline else {"model": model}
    with progress() as bar:
        task = bar.add_task("bench", total=trials * len(models), info="")

        def step(t: int, label: str, res: dict) -> None:
            p50 = {b: sorted(s["host"])[len(s["host"]) // 2] * 1e3 for b, s in res["samples"].items()}
            line = f"trial {t + 1} {label}: p50 " + ", ".join(f"b{b} {v:.3g} ms" for b, v in p50.items())
            bar.update(task, advance=1, info=line)
            if not progress_enabled():  # piped: a line per trial instead of the bar
                err.print(line)

        record = run_comparison(
            models,
            name,
            batches,
            trials,
            timing,
            options,
            tegrastats,
            interval_ms,
            nice,
            layer_times,
            on_trial=step,
        )
    if profile is not None:
        add_predictions(record, profile)
    _print_record(record, as_json)
    if out_dir:
        written = write_outputs(record, out_dir, force=force, with_plots=plots)
        err.print(f"wrote {', '.join(str(p) for p in written)}")


@click.group("profiles", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List device profiles (edgeslim profiles show NAME for one).

    \b
    Examples:
      edgeslim profiles
      edgeslim profiles show jetson-orin-nano-8gb
    """
    if ctx.invoked_subcommand is not None:
        return
    from edgeslim.bench.profiles import list_profiles
    from edgeslim.utils.console import out, table

    profs = list_profiles()
    if as_json:
        out.print_json(json.dumps([p.model_dump() for p in profs]))
        return
    rows = [
        [
            p.name,
            p.kind,
            ", ".join(f"{k} {v:g}" for k, v in p.peak_gflops.items()),
            p.memory_bandwidth_gbs,
            p.ram_gb,
            f"{p.preferred.backend}/{p.preferred.precision}",
            p.title,
        ]
        for p in profs
    ]
    out.print(
        table(
            "device profiles (peak GFLOP/s; bandwidth GB/s)",
            ["name", "kind", "peak", "GB/s", "RAM GB", "preferred", "title"],
            rows,
        )
    )


@profiles.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def show(name: str, as_json: bool) -> None:
    """Show one profile with the source of every number.

    \b
    Example:
      edgeslim profiles show jetson-orin-nano-8gb --json
    """
    import yaml

    from edgeslim.bench.profiles import load_profile
    from edgeslim.utils.console import out

    p = load_profile(name)
    if as_json:
        out.print_json(json.dumps(p.model_dump()))
    else:
        out.print(yaml.safe_dump(p.model_dump(), sort_keys=False, allow_unicode=True, width=110).rstrip())
        out.print(f"ridge point ({p.preferred.precision}): {p.ridge_point():.3g} FLOP/byte")


@click.command("report")
@click.argument("run_json", type=click.Path(dir_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Write report.md, run.json and PNGs here."
)
@click.option("--force", is_flag=True, help="Overwrite an existing report in --out.")
@click.option("--profile", "profile_name", help="Add a roofline prediction for this device profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots with --out.")
def report(run_json, out_dir, force, profile_name, as_json, plots) -> None:
    """Re-render a benchmark result (terminal table, Markdown, PNG plots).

    \b
    Example:
      edgeslim report runs/bench/run.json --profile jetson-nano --out runs/bench-nano
    """
    from edgeslim.bench.report import add_predictions, check_record, write_outputs
    from edgeslim.utils.console import err
    from edgeslim.utils.io import check_output_dir, read_json

    if out_dir:  # refuse before printing anything
        check_output_dir(out_dir, force=force, marker="run.json")
    record = check_record(read_json(run_json))
    if profile_name:
        from edgeslim.bench.profiles import load_profile

        add_predictions(record, load_profile(profile_name))
    _print_record(record, as_json)
    if out_dir:
        written = write_outputs(record, out_dir, force=force, with_plots=plots)
        err.print(f"wrote {', '.join(str(p) for p in written)}")
