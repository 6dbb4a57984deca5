"""``edgeslim slim``: one-round proximal network slimming, channel surgery and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli import flag_names, notice
from edgeslim.cli.common import (
    data_options,
    norm_options,
    quote,
    rebuilds_line,
    train_options,
    trust_pickle_option,
    weights_option,
)
from edgeslim.cli.params import (
    BETA_END,
    COUNT,
    DEVICE,
    FRACTION_OPEN,
    NONNEG,
    PHASE,
    POSITIVE,
    PRECISION,
    RECOVERY_LR,
    Number,
    config_keys,
    load_config,
)

PENALTY_CHOICES = ["l1", "lp", "tl1", "mcp", "scad", "group-l1", "group-l2", "group-lp", "group-tl1",
                   "group-mcp", "group-scad"]  # fmt: skip
#: options a config file cannot give: where the run goes and how the command runs (and trust_pickle, which
#: lets a model file run code: the person at the command line says so)
COMMAND_LINE_ONLY = ("config_path", "out_dir", "force", "resume", "trust_pickle", "as_json")
#: options of which one source is taken: one given on the command line drops the config's others
CONFIG_EXCLUSIVE = (("lam", "shrink"), ("shrink", "target_macs", "target_params", "target_latency"))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_or_arch", required=False)
@data_options
@train_options
@click.option(
    "--lambda",
    "lam",
    type=NONNEG,
    help="Penalty strength lambda [derived from --shrink; see docs/slimming.md].",
)
@click.option(
    "--shrink",
    type=POSITIVE,
    help="Instead of --lambda: total prox shrink over the planned lr schedule [0.7 with a warm-up or "
    "recovery phase (the default), 1.0 without].",
)
@click.option("--beta", type=POSITIVE, help="Coupling beta between gamma and xi [100].")
@click.option("--penalty", type=click.Choice(PENALTY_CHOICES), help="Penalty [l1].")
@click.option("--p", "p", type=FRACTION_OPEN, help="lp: exponent p in (0, 1) [0.5].")
@click.option("--a", "a", type=POSITIVE, help="tl1: a > 0 [1]; scad: a > 1 + tau/l [3.7].")
@click.option("--g", "g", type=POSITIVE, help="mcp: g > tau [3].")
@click.option("--l", "l", type=POSITIVE, help="scad: l > 0 [1].")
@click.option(
    "--zero-invariant/--no-zero-invariant",
    default=None,
    help="Penalise each channel's BN scale and shift together, so removal leaves no constant [off].",
)
@click.option(
    "--prox-warmup",
    type=PHASE,
    help="Train this long before the prox acts: epochs (1, 0.5) or a share of training (25%) [10%].",
)
@click.option(
    "--recovery",
    type=PHASE,
    help="Final phase with the zero pattern frozen and lambda 0: epochs or a share of training [50%].",
)
@click.option(
    "--prox-step",
    type=click.Choice(["lr", "effective"]),
    help="alpha of the prox: 1/lr, or the optimizer's effective step ((1-m)/lr under momentum) [lr].",
)
@click.option(
    "--importance",
    type=click.Choice(["absolute", "layer"]),  # edgeslim.sparsity.prox.IMPORTANCE (torch-free here)
    help="How channels are judged: by their BN scale (absolute), or by it relative to their layer's mean "
    "(layer: scale-invariant) [absolute].",
)
@click.option(
    "--recovery-lr",
    type=RECOVERY_LR,
    help="Restart the learning rate at this value when the recovery phase starts (cosine to 0 over it): "
    "a rate, base (the run's --lr) or off (the schedule runs on) [base].",
)
@click.option(
    "--beta-end",
    type=BETA_END,
    help="Grow beta geometrically to this value (or auto) over the last quarter of sparsification [off].",
)
@click.option(
    "--round-to",
    type=COUNT,
    help="Keep channel counts multiples of N, with trained channels (1: off) [the --profile's alignment, "
    "halved until a budget is reachable].",
)
@click.option(
    "--target-macs", help="Budget: fraction of the dense MACs (0.5, 50%) or a count (120M); sets lambda."
)
@click.option("--target-params", help="Budget: fraction of the dense parameters or a count (1.5M).")
@click.option(
    "--target-latency",
    help="Budget: latency (8ms) or a fraction of the dense model's; on this host measured (lookup before, "
    "slim and dense after training), else predicted for --profile or from --latency-table.",
)
@click.option(
    "--profile",
    help="Device profile: its channel alignment, and the roofline for --target-latency [host-cpu: ORT here].",
)
@click.option(
    "--latency-table",
    type=click.Path(path_type=Path),
    help="Measured per-layer latency JSON (docs/budget.md); with --resume: where the run's table is now.",
)
@click.option(
    "--latency-batch",
    type=Number(int, min=1),
    help="With --target-latency: the batch the latency is predicted or measured at [1].",
)
@click.option(
    "--precision",
    type=PRECISION,
    help="Precision of the alignment and latency prediction [the profile's preferred one].",
)
@click.option(
    "--verify-latency",
    type=Number(float, min=0),
    metavar="TOL",
    help="With --target-latency: measure the slim network at the end and fail if it exceeds the target by "
    "more than TOL (0.05: 5%).",
)
@click.option(
    "--taper-end",
    type=Number(float, gt=0, max=1),
    help="Fraction of training by which the budget reaches the target [0.6].",
)
@click.option(
    "--cost-exponent",
    type=Number(float, min=0, max=4),
    help="Budget: rank and weight channels by |scale| / cost**E (0: by magnitude, keeps fewer cheap "
    "low-resolution channels; see docs/speed.md) [1].",
)
@click.option(
    "--price",
    type=click.Choice(["macs", "params", "latency"]),
    help="Budget: rank and weight channels by their marginal cost in this metric instead of the budget's "
    "own (latency: the per-layer lookup measured here, or --profile's prediction; see docs/speed.md).",
)
@click.option(
    "--num-classes",
    type=COUNT,
    help="Replace the classifier head with one of N outputs (N: the data set's classes); reported.",
)
@weights_option
@norm_options
@click.option(
    "--init",
    "init_path",
    type=click.Path(path_type=Path),
    help="Start from this model file (as train --init); MODEL_OR_ARCH, if given, must name its architecture.",
)
@click.option(
    "--imgsz",
    type=COUNT,
    help="A YOLO on an ultralytics data yaml: training image size (ultralytics' imgsz) "
    "[the size a training checkpoint was trained at, else 640].",
)
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="YAML file of these options.")
@click.option("--device", type=DEVICE, help="auto, cpu, cuda or cuda:N [auto].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--force", is_flag=True, help="Overwrite the outputs of an earlier run in --out.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last epoch.")
@trust_pickle_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_context
def slim(ctx: click.Context, model_or_arch: str, config_path: Path | None, out_dir: Path, force: bool, resume: bool,
         trust_pickle: bool, as_json: bool, **opts: Any) -> None:  # fmt: skip
    """Train MODEL_OR_ARCH with proximal network slimming, set the BN scales to their exactly
    sparse copy, cut the zero channels out and report accuracy, channels, parameters and MACs.

    MODEL_OR_ARCH: a zoo name (vgg-small, resnet56), tv:NAME, timm:NAME, package.module:Factory
    (your code), each with --weights for a state_dict; or a model file (edgeslim checkpoint; a
    whole pickled module with --trust-pickle). An ultralytics YOLO (yolo:NAME, its best.pt) with
    --data DATA.yaml (an ultralytics data set) is trained by ultralytics with slimming attached.

    \b
    Examples:
      edgeslim slim vgg-small --data fashion-mnist --epochs 10 --target-macs 0.5 --out runs/vgg
      edgeslim slim tv:resnet18 --weights r18.pt --num-classes 3 --data imagefolder \\
          --data-dir my_images --lr 0.01 --batch-size 32 --out runs/r18
      edgeslim slim yolo:best.pt --trust-pickle --data my_data.yaml --epochs 50 --out runs/yolo
      edgeslim slim --resume --out runs/vgg        # continue an interrupted run
    """
    from edgeslim.pipelines.slim import SlimRequest, run
    from edgeslim.utils.console import err, log_lines_when_piped, progress

    cfg = load_config(ctx, config_path, {**config_keys(ctx.command, COMMAND_LINE_ONLY), "lam": "lam"})
    given = {k: v for k, v in opts.items() if v is not None}
    for group in CONFIG_EXCLUSIVE:  # (command-line flags win: --shrink over a config's lambda)
        if given.keys() & set(group):
            cfg = {k: v for k, v in cfg.items() if k not in group}
    options = {**cfg, **given}
    options["init"] = options.pop("init_path", None)
    req = SlimRequest.from_options(
        out_dir,
        {**options, "model": model_or_arch, "force": force, "resume": resume, "trust_pickle": trust_pickle},
    )
    from edgeslim.utils.rundir import REPORT_FILE

    def collapsed(out: Any) -> None:
        err.print(f"[yellow]outputs written to {out} for diagnosis[/]")
        written = Path(out) / REPORT_FILE
        if as_json and written.is_file():  # a script still gets the numbers (the run exits 2)
            click.echo(written.read_text())

    with progress() as bar, log_lines_when_piped():
        report = run(
            req,
            progress=bar,
            on_collapse=collapsed,
            say=lambda m: err.print(f"[yellow]note: {notice(m, slim)}[/]", soft_wrap=True),
            names=flag_names(slim),  # (report.md's advice names the flags, as the terminal does)
        )
    _print(report, as_json)


def _print(report: dict[str, Any], as_json: bool) -> None:
    from edgeslim.data.bundle import normalization_text
    from edgeslim.slim import (
        accuracy_change,
        accuracy_note,
        candidates_note,
        final_steps_note,
        latency_check_rows,
        percent,
        prox_text,
    )
    from edgeslim.utils.console import err, human, out, print_json, table

    if as_json:
        print_json(report)
        if report.get("kind") == "ultralytics":
            _print_yolo_files(report)
            return
    elif report.get("kind") == "ultralytics":
        _print_yolo(report)
        return
    else:
        acc = report["accuracy"]
        rows = [
            [
                "test accuracy",
                percent(acc["trained"]),
                percent(acc.get("slim")),
                accuracy_change(report),
            ],
        ]
        for key, label in (("channels", "BN channels"), ("params", "parameters"), ("macs", "MACs")):
            if key in report:
                d = report[key]
                removed = f"{d.get('removed_frac', 0):.1%}"  # (none removed: 0.0%, not -0.0%)
                rows.append(
                    [
                        label,
                        human(d["dense"]),
                        human(d["slim"]),
                        removed if removed == "0.0%" else f"-{removed}",
                    ]
                )
        s = report["slimming"]
        last = (report.get("history") or [{}])[-1]
        lam = _lambda_text(s["lam"], last.get("budget_lambda") if "budget" in report else None)
        # (the settings on a line of their own: as the table's title they wrapped mid-phrase at its width)
        pen, beta = prox_text(s, report.get("history"))
        out.print(f"{report['arch']} on {report['data']}: proximal {pen}, {lam}, {beta}", soft_wrap=True)
        out.print(table(None, ["", "trained (full width, zeros in place)", "slim", "change"], rows))

        out.print(accuracy_note(report))
        if steps := final_steps_note(report):
            out.print(steps)
        layer_rows = [
            [r["name"], r["channels"], r["kept"], r.get("after_surgery", r["kept"])] for r in report["layers"]
        ]
        out.print(table("BN layers", ["layer", "channels", "nonzero", "after surgery"], layer_rows))
        if cand := candidates_note(report):
            out.print(notice(cand, slim), soft_wrap=True)
        if "verify" in report:
            v = report["verify"]
            out.print(
                f"surgery check: max |logit diff| {v['max_abs_diff']:.3g}, top-1 agreement {v['top1_agreement']:.2%}"
            )
        if "budget" in report:
            b = report["budget"]
            out.print(
                f"budget ({b['metric']}): target {b['target_fraction']:.1%} of dense, controller reached "
                f"{b['before_projection_fraction']:.1%}, final {b['achieved_fraction']:.1%} "
                f"({b['projection_removed_channels']} channel(s) removed by the final projection)"
            )
        al = report.get("alignment")
        if al and (al["round_to"] > 1 or al.get("reduced_from")):
            src = f"profile {al['profile']} {al['precision']}" if al["from"] == "profile" else "--round-to"
            if al.get("default_profile"):  # (a reader could not tell the CPU's multiple was a default)
                src += ", the default: for a device give its --profile, e.g. jetson-orin-nano-8gb"
            cut = f"; {al['reduced_from']} cannot reach the budget" if al.get("reduced_from") else ""
            if al.get("zero_invariant_keeps"):  # (squeeze-excitation-gated channels kept for their shifts)
                cut += " without --zero-invariant"
            out.print(
                f"channel counts kept in multiples of {al['round_to']} ({src}{cut}), with trained channels"
            )
        if norm := report.get("normalization"):  # (the device's preprocessing)
            out.print(f"input normalization: {normalization_text(norm['mean'], norm['std'])}", soft_wrap=True)
        lat = report.get("latency")
        if lat and lat.get("measured"):
            out.print(
                f"latency at batch {lat['batch']}, in ms ({lat['backend']}, {lat['threads']} thread(s)):"
            )
            out.print(table(None, ["", "target", "predicted", "measured"], latency_check_rows(lat)))
            out.print(f"measured / target {lat['measured_over_target']:.3f}, speedup {lat['speedup']:.2f}x")
        elif lat:
            target = (
                f"target {lat['target_ms']:.4g} ms"
                if lat.get("target_ms") is not None
                else f"target {100 * lat['target_fraction_of_dense']:.3g}% of dense"
            )
            table_given = (report.get("budget") or {}).get("settings", {}).get("latency_table")
            line = _budget_latency_line(lat["batch"], lat["predicted_ms"], lat["predicted_dense_ms"], target,
                                        None if table_given else "")  # fmt: skip
            # (soft wrap: a command to copy)
            out.print(f"{line}; measure it on the device: {lat['command']}", soft_wrap=True)
    if not as_json and report.get("predicted_latency") and report.get("macs", {}).get("dense"):
        _print_predicted(report["predicted_latency"], report["macs"]["slim"] / report["macs"]["dense"])
    if report.get("head"):
        h = report["head"]
        err.print(
            f"classifier head {h['head']} replaced: {h['from']} -> {h['to']} classes (trained from scratch)"
        )
    from edgeslim.slim import REPORT_FILE, RUN_REPORT_MD, SLIM_FILE, TRAINED_FILE

    d = Path(report.get("out_dir", "."))
    if report.get("latency"):  # the latency check exported both networks already
        lat = report["latency"]
        nxt = (
            lat.get("command")
            or f"edgeslim bench {quote(d / 'slim.onnx')} --baseline {quote(d / 'dense.onnx')} --batch 1,32"
        )
        err.print(
            f"wrote {d / SLIM_FILE} (slim), {d / TRAINED_FILE} (dense, sparse), {d / 'slim.onnx'}, "
            f"{d / 'dense.onnx'}, {d / REPORT_FILE}, {d / RUN_REPORT_MD} and plots; next: {nxt}",
            soft_wrap=True,
        )
    else:
        err.print(
            f"wrote {d / SLIM_FILE} (slim), {d / TRAINED_FILE} (dense, sparse), {d / REPORT_FILE}, "
            f"{d / RUN_REPORT_MD} and plots; "
            f"next: edgeslim export {quote(d / SLIM_FILE)}{' --trust-pickle' if report.get('loads_code') else ''} "
            f"--onnx {quote(d / 'slim.onnx')}",
            soft_wrap=True,
        )
    if report.get("rebuilds_from"):
        err.print(rebuilds_line(d / SLIM_FILE, report["rebuilds_from"]), soft_wrap=True)
    for key in ("verify", "budget", "latency"):
        if warning := (report.get(key) or {}).get("warning"):
            err.print(f"[yellow]warning:[/] {notice(warning, slim)}", soft_wrap=True)
    msg = report.get("collapse", {}).get("message")
    if msg:
        err.print(f"[yellow]warning:[/] {notice(msg, slim)}", soft_wrap=True)


def _roofline(profile: str = "") -> str:
    """How a latency that was not measured was priced (every such line says it the same way)."""
    return f"a roofline of every kernel{f' for {profile}' if profile else ''}, as bench --predict prices the ONNX; uncalibrated"


def _budget_latency_line(
    batch: int, slim_ms: float, dense_ms: float, target: str, profile: str | None
) -> str:
    """A latency budget's predicted result; ``profile`` None: priced from a measured latency table."""
    how = "from the latency table" if profile is None else _roofline(profile)
    return f"latency predicted per batch of {batch}: {slim_ms:.4g} ms slim, {dense_ms:.4g} ms dense ({target}; {how})"


def _print_predicted(pl: dict[str, Any] | None, macs_fraction: float) -> None:
    """The device's predicted speed of a run that was not a latency budget (its MACs alone say little)."""
    from edgeslim.utils.console import out

    if pl:
        speed = f"{pl['speedup']:.2f}x" if pl.get("speedup") else "-"
        out.print(
            f"on {pl['profile']} ({pl['precision']}), predicted per batch of {pl['batch']}: {pl['dense_ms']:.4g} -> "
            f"{pl['slim_ms']:.4g} ms ({speed}) for {macs_fraction:.1%} of the MACs; {_roofline()}"
        )


def _lambda_text(lam: float, budget_lambda: float | None) -> str:
    """The run's lambda for a table title: under a budget, the controller's last one."""
    if budget_lambda is not None:
        return f"lambda set by the budget controller (at the end: {budget_lambda:.3g})"
    return f"lambda {lam:.3g}"


def _print_yolo(report: dict[str, Any]) -> None:
    """The report of a YOLO slimmed in ultralytics' trainer: sparsity per epoch, mAP, surgery."""
    from edgeslim.slim import budget_reached, budget_warning, prox_text
    from edgeslim.utils.console import human, out, table

    s, sg = report["slimming"], report["surgery"]
    budget = s.get("budget")
    rows = [
        [e["epoch"], e["phase"], f"{e['zero']:,} of {e['total']:,}"]
        + ([f"{e['budget_fraction']:.1%}"] if "budget_fraction" in e else [])
        for e in s["epochs"]
    ]
    cols = ["epoch", "phase", "BN channels exactly zero"] + (
        [f"{budget['metric']} of dense"] if budget else []
    )
    last = s["epochs"][-1] if s["epochs"] else {}
    lam = _lambda_text(s["lam"], last.get("lambda") if budget else None)
    pen, beta = prox_text(s)
    title = f"{report['arch']} on {report['data']} at {report['imgsz']} px (ultralytics): proximal {pen}, {lam}, {beta}"
    out.print(table(title, cols, rows))
    if budget:
        out.print(
            f"budget ({budget['metric']}): target {budget['target_fraction']:.1%} of dense, reached "
            f"{budget['achieved_fraction']:.1%} in last.pt, the checkpoint cut"
            + (
                " (within the budget's tolerance)"
                if not budget_warning(budget)
                else " (not the target: see the warning)"
                if not budget_reached(budget)
                else " (reached, by the final projection: see the warning)"
            )
        )
        if budget["metric"] == "latency" and "achieved" in budget:
            out.print(
                _budget_latency_line(
                    budget["batch"],
                    1e3 * budget["achieved"],
                    1e3 * budget["dense"],
                    f"target {1e3 * budget['target']:.4g} ms",
                    budget["profile"] if budget.get("predicted") else None,
                )  # fmt: skip
            )
    before, after = report["metrics"].get("before") or {}, report["metrics"].get("slim") or {}
    keys = [k for k in after if k.startswith("metrics/")]
    mrows = [
        [k.removeprefix("metrics/"), f"{before[k]:.4f}" if k in before else "-", f"{after[k]:.4f}"]
        for k in keys
    ]
    if report["metrics"].get("not_measured"):  # (ultralytics' 0.0000 would read as a measurement)
        mrows.append(
            ["precision, recall, mAP", "not measured", f"not measured: {report['metrics']['not_measured']}"]
        )
    for key, label in (("params", "parameters"), ("macs", "MACs")):
        mrows.append([label, human(sg[f"{key}_before"]), human(sg[f"{key}_after"])])
    out.print(table("validation (ultralytics) and size", ["", "model given", "slim"], mrows))
    _print_predicted(report.get("predicted_latency"), sg["macs_after"] / sg["macs_before"])
    al = sg.get("alignment") or {}
    out.print(
        f"surgery: {sg['removed_channels']:,} channels removed, each counted once where an add or a concat ties "
        f"several BN channels ({sg.get('kept_by_rounding', 0):,} zero channels kept for multiples of "
        f"{al.get('round_to', 1)}), max |output diff| {sg['max_abs_diff']:.3g}"
    )
    _print_yolo_files(report)


def _print_yolo_files(report: dict[str, Any]) -> None:
    from edgeslim.slim import REPORT_FILE, SLIM_FILE
    from edgeslim.utils.console import err

    d = Path(report["out_dir"])
    for w in report.get("warnings") or []:
        err.print(f"[yellow]warning:[/] {notice(w, slim)}", soft_wrap=True)
    if report.get("rebuilds_from"):
        err.print(rebuilds_line(d / SLIM_FILE, report["rebuilds_from"]), soft_wrap=True)
    err.print(
        f"wrote {d / SLIM_FILE} (slim), {report['checkpoint']} (the checkpoint it was cut from, exact zeros), "
        f"{d / REPORT_FILE}; "
        f"next: edgeslim export {quote(d / SLIM_FILE)} --trust-pickle --onnx {quote(d / 'slim.onnx')} (--ultralytics "
        f"{quote(d / 'slim.ul.pt')} also writes a file ultralytics' YOLO() loads; {SLIM_FILE} is edgeslim's)",
        soft_wrap=True,
    )
