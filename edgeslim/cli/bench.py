"""``edgeslim bench``, ``edgeslim profiles``, ``edgeslim report``.

Runs on a device without PyTorch: top-level imports are click and edgeslim.errors/utils only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import click

from edgeslim.cli import notice
from edgeslim.cli.common import trust_pickle_option
from edgeslim.cli.params import COUNT, DEVICE, NONNEG, POSITIVE, PRECISION, SHAPE, Number, NumberList

_BACKENDS = ["onnxruntime", "ort", "tensorrt", "trt", "trtexec", "torch"]


def _print_record(record: dict, as_json: bool, said: Collection[str] = ()) -> None:
    """The record's tables (or JSON) on stdout, its warnings on stderr, but those ``said`` already (a
    baseline of another network: said as the run started, with its flag)."""
    from edgeslim.bench import report
    from edgeslim.utils.console import err, print_json

    warnings = report.warnings(record)  # (on stderr with --json too, and in its document: a trial lost both)
    if as_json:
        slim = {k: v for k, v in record.items() if k != "trials"}  # raw samples live in run.json
        print_json({**slim, "warnings": warnings})
    else:
        _print_tables(record)
    for w in warnings:
        if w not in said:
            err.print(f"[yellow]warning:[/] {w}", soft_wrap=True)


def _print_tables(record: dict) -> None:
    """The measured record's tables (and a prediction's) as ``edgeslim bench`` prints them."""
    from edgeslim.bench import report
    from edgeslim.utils.console import err, out, table

    out.print(table(report.latency_title(record), report.LATENCY_COLS, report.latency_rows(record)))
    if record.get("speedup"):
        out.print(
            table("speedup = baseline p50 / slim p50", report.SPEEDUP_COLS, report.speedup_rows(record))
        )
        out.print(report.SPEEDUP_LEGEND)  # (what trial spread and the ratios are, as report.md says)
        if note := report.precision_note(record):  # (INT8 against FP32: which is which)
            err.print(f"note: {note}", soft_wrap=True)
        for note in report.interval_notes(record):  # (few trials: an interval past all of them)
            err.print(f"note: {note}", soft_wrap=True)
    out.print(
        table("size and memory (isolated process per model)", report.MEMORY_COLS, report.memory_rows(record))
    )
    if unmeasured := report.memory_not_measured(record):
        out.print(f"memory and load time not measured (-): {unmeasured}", soft_wrap=True)
    if (tegra := report.telemetry_rows(record)) is not None:
        out.print(table("Jetson telemetry (tegrastats, measured)", report.TELEMETRY_COLS, tegra))
    if (times := report.layer_time_rows(record)) is not None:
        out.print(table(*times))
        out.print(report.layer_times_legend(record))  # (the profiler cost in each time, as report.md says)
    if record.get("prediction") and (none := report.nothing_predicted(record["prediction"])):
        pr = record["prediction"]
        err.print(f"note: {pr['label']} ({pr['profile']}): {none}", soft_wrap=True)
    elif record.get("prediction"):
        pr = record["prediction"]
        out.print(
            table(f"{pr['label']} ({pr['profile']})", report.PREDICTION_COLS, report.prediction_rows(record))
        )
        if predicted := report.predicted_speedups(pr):
            out.print(f"predicted speedup (baseline / slim) on {pr['profile']}: {predicted}")
        if pr.get("not_compared"):
            err.print(f"note: {pr['not_compared']}", soft_wrap=True)
        if assumed := report.assumed_efficiency(pr):
            err.print(f"note: {assumed}", soft_wrap=True)
        _print_padding(pr.get("channel_multiple") or {})
        for label, why in (pr.get("skipped") or {}).items():
            err.print(f"note: {label} not predicted: {why}", soft_wrap=True)


def _print_padding(multiples: dict[str, int]) -> None:
    """Say at which channel multiple a prediction priced each model (1: at its exported widths, its ONNX
    file not at hand)."""
    from edgeslim.utils.console import err

    pads = {m for m in multiples.values() if m > 1}
    if pads:
        err.print(
            f"note: channel counts priced padded to multiples of {', '.join(map(str, sorted(pads)))} (the profile's "
            "alignment at this precision: its kernels compute whole blocks of channels, as the budget prices them)",
            soft_wrap=True,
        )
    unpadded = sorted(label for label, m in multiples.items() if m == 1)
    if unpadded:
        from edgeslim.bench.report import UNPADDED_WHY

        err.print(f"note: {' and '.join(unpadded)} priced at the exported widths, unpadded ({UNPADDED_WHY})",
                  soft_wrap=True)  # fmt: skip


def _print_prediction(result: dict, batches: list[int], as_json: bool) -> None:
    from edgeslim.utils.console import err, out, print_json, table

    if as_json:
        print_json(result)
        return
    fitted = result.get("calibration")
    if fitted is not None:
        fit = ", ".join(f"{r['model']} b{r['batch']} {r['predicted_ms'] / r['measured_ms'] - 1:+.0%}"
                        for r in fitted.get("fit") or ())  # fmt: skip
        out.print(
            f"calibrated from {fitted['from']}: compute/memory efficiency {fitted['compute']:.3g}, "
            f"launch overhead {fitted['launch_us']:.3g} us per layer"
            + (f"; fit on its run: {fit}" if fit else ""),
            soft_wrap=True,
        )
    for label, per_batch in result["models"].items():
        first = per_batch[str(batches[0])]
        rows = [[lp["name"], lp["bound"], lp["intensity"], lp["seconds"] * 1e6] for lp in first["layers"]]
        out.print(
            table(
                f"PREDICTION {label} on {result['profile']} at {result['precision'][label]}, batch {batches[0]} "
                "(not a measurement)",
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
    out.print(
        "bound: what limits each layer's predicted time (compute: peak FLOP/s, memory: bandwidth, launch: the "
        "fixed per-layer launch cost)",
        soft_wrap=True,
    )
    from edgeslim.bench.report import assumed_efficiency

    if fitted is None and (assumed := assumed_efficiency(result)):
        err.print(f"note: {assumed}", soft_wrap=True)
    _print_padding(result.get("channel_multiple") or {})
    if result.get("speedup"):
        out.print(
            "PREDICTION speedup baseline / slim: "
            + ", ".join(f"{v:.2f}x at batch {b}" for b, v in result["speedup"].items())
            + " (roofline, not a measurement)"
        )
    for w in result.get("warnings") or ():
        err.print(f"[yellow]warning:[/] {w}", soft_wrap=True)


def _print_layer_table(tab: dict, backend: str, batch: int, written: Any, as_json: bool) -> None:
    from edgeslim.utils.console import err, out, print_json, table

    if as_json:
        print_json(tab)
    else:
        # shares of the table's own whole (layers + fixed): ONNX Runtime's profiled kernels can add up to
        # more than an unprofiled run (a trial's shares summed to 126% of the run)
        whole = sum(tab["layers"].values()) + tab["fixed"] or 1.0
        rows = [[name, ms, ms / whole * 100] for name, ms in tab["layers"].items()]
        rows += [["(fixed)", tab["fixed"], tab["fixed"] / whole * 100]]
        out.print(table(f"per-layer latency, {backend}, batch {batch}", ["layer", "ms", "% of all"], rows))
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
    "--batch",
    "batches",
    type=NumberList(distinct=True),
    default="1",
    show_default=True,
    help="Batch sizes, e.g. 1,32.",
)
@click.option(
    "--trials",
    type=COUNT,
    default=3,
    show_default=True,
    help="Fresh processes per model (alternating order).",
)
@click.option(
    "--warmup",
    type=NONNEG,
    default=1.0,
    show_default=True,
    help="Warm-up seconds (and >= 20 iterations); the warm-up stops at --max-time whatever these ask.",
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
    "--precision",
    type=PRECISION,
    help="trtexec build precision (TRT < 11); with --predict, the precision predicted [the profile's].",
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
    "--sweep/--no-sweep",
    default=True,
    show_default=True,
    help="With --layer-table on onnxruntime or torch: also time each layer over channel counts (the latency lookup).",
)
@click.option(
    "--width-models",
    multiple=True,
    metavar="FILES",
    help="With --layer-table: the model's exports at uniform widths (export --width-models), timed beside "
    "it: they calibrate the table (comma-separated, or the option repeated).",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False),
    help="The ONNX a TensorRT engine was built from: names its layers (--layer-table); gives trtexec its input "
    "at batches other than 1 (with --baseline: both engines' input, so compare engines of one network and input "
    "size).",
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (without raw samples; with its warnings, also on stderr).",
)
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots with --out.")
def bench(model, baseline, backend, profile_name, batches, trials, warmup, min_iters, min_time, max_time, threads,
          providers, graph_opt, precision, cuda_graph, device, input_shape, trust_pickle, trtexec_path, tegrastats, interval_ms, layer_times,
          layer_table_path, sweep, width_models, onnx_path, nice, predict, calibrate, out_dir, force, as_json, plots) -> None:  # fmt: skip
    """Measure latency and memory of MODEL (.onnx, TensorRT engine, or edgeslim model file),
    against --baseline when given. With --predict, print a roofline PREDICTION instead.

    \b
    Examples:
      edgeslim bench slim.onnx --baseline dense.onnx --batch 1,32 --out runs/bench
      edgeslim bench slim.engine --baseline dense.engine --trust-pickle --profile jetson-orin-nano-8gb
      edgeslim bench slim.onnx --predict --profile jetson-nano
      edgeslim bench dense.onnx --layer-table layers.json --threads 1  # the dense export: for slim --latency-table
    """
    from edgeslim.bench.compare import trial_p50_ms
    from edgeslim.pipelines.bench import BenchRequest, layer_table, measure
    from edgeslim.pipelines.bench import predict as predict_latency
    from edgeslim.utils.console import err, progress, progress_enabled, task_steps

    req = BenchRequest(
        model=model, baseline=baseline, backend=backend, profile=profile_name, batches=tuple(batches),
        trials=trials, warmup=warmup, min_iters=min_iters, min_time=min_time, max_time=max_time, threads=threads,
        providers=providers, graph_opt=graph_opt, precision=precision, cuda_graph=cuda_graph, device=device,
        input_shape=input_shape, trust_pickle=trust_pickle, trtexec=trtexec_path, tegrastats=tegrastats,
        interval_ms=interval_ms, layer_times=layer_times, layer_table=layer_table_path, sweep=sweep,
        width_models=tuple(p.strip() for v in width_models for p in v.split(",") if p.strip()) or None,
        onnx=onnx_path,
        nice=nice,
        predict=predict, calibrate=calibrate, out_dir=out_dir, force=force, plots=plots,
    )  # fmt: skip
    req.check()
    if predict:
        _print_prediction(predict_latency(req), list(req.batches), as_json)
        return
    if layer_table_path:
        with progress() as bar:
            step = task_steps(bar, "layer table", f"batch {req.batches[0]}")
            tab, written = layer_table(req, lambda done, total, name: step(done, total, f"sweep {name}"))
            step(1, 1, "")
        _print_layer_table(tab, tab.get("backend", backend or ""), req.batches[0], written, as_json)
        return
    n_models = 2 if baseline else 1
    with progress() as bar:
        task = bar.add_task("bench", total=trials * n_models, info="")

        def step(t: int, label: str, res: dict) -> None:
            p50 = {b: trial_p50_ms(s) for b, s in res["samples"].items()}  # as the summary takes it
            line = f"trial {t + 1} {label}: p50 " + ", ".join(f"b{b} {v:.3g} ms" for b, v in p50.items())
            bar.update(task, advance=1, info=line)
            if not progress_enabled():  # piped: a line per trial instead of the bar
                err.print(line)

        said: set[str] = set()

        def say(m: str) -> None:
            said.add(str(m))
            err.print(f"[dim]{notice(m, bench)}[/]")

        def show(rec: dict) -> None:
            bar.stop()  # (the tables go to stdout: a live bar on stderr redrew itself into their first line)
            _print_record(rec, as_json, said)

        record, written = measure(req, on_trial=step, say=say, on_record=show)
    if written:
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
    from edgeslim.bench.profiles import list_profiles, user_profiles
    from edgeslim.utils.console import err, out, print_json, table

    profs = list_profiles()
    if as_json:
        print_json([p.model_dump() for p in profs])
        return
    yours = [
        f"{n} ({p}{', replaces the shipped one' if replaces else ''})" for n, p, replaces in user_profiles()
    ]
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
    if yours:
        err.print(f"from EDGESLIM_PROFILES: {'; '.join(yours)}", soft_wrap=True)


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
    from edgeslim.utils.console import out, print_json

    p = load_profile(name)
    if as_json:
        print_json(p.model_dump())
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
    from edgeslim.pipelines.bench import rerender
    from edgeslim.utils.console import err

    written = rerender(
        run_json, out_dir=out_dir, force=force, profile=profile_name, plots=plots,
        on_record=lambda rec: _print_record(rec, as_json),
    )  # fmt: skip
    if written:
        err.print(f"wrote {', '.join(str(p) for p in written)}")
