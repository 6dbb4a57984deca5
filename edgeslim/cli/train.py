"""``edgeslim train``: train a zoo model on a data set (baseline or original network slimming)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli import notice
from edgeslim.cli.common import data_options, quote, train_options, trust_pickle_option, weights_option
from edgeslim.cli.params import (
    COUNT,
    DEVICE,
    FRACTION_OPEN,
    NONNEG,
    NONNEG_INT,
    POSITIVE,
    FractionList,
    Number,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--arch",
    help="Model name, e.g. vgg-small, vgg19, resnet20, tv:resnet18, timm:NAME (see `edgeslim info "
    "--list-models`), package.module:Attr, or pickle:PATH (with --trust-pickle) [with --init: its model's].",
)
@data_options
@train_options
@click.option("--momentum", type=Number(float, min=0, lt=1), help="SGD momentum [0.9].")
@click.option("--nesterov/--no-nesterov", default=None, help="Nesterov momentum [on].")
@click.option("--decay-bn/--no-decay-bn", default=None, help="Weight decay also on BN and biases [on].")
@click.option("--milestones", type=FractionList(), help="Step schedule: fractions of the run [0.5,0.75].")
@click.option("--lr-gamma", type=POSITIVE, help="Step schedule: factor at each milestone [0.1].")
@click.option("--label-smoothing", type=Number(float, min=0, lt=1), help="Label smoothing [0].")
@click.option("--augment/--no-augment", default=None, help="Random pad-crop (and flips where valid) [on].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision (CUDA only) [off].")
@click.option(
    "--channels-last/--no-channels-last", default=None, help="channels_last memory format for training [on]."
)
@click.option(
    "--method", help="Training method: baseline or subgradient (original network slimming) [baseline]."
)
@click.option("--lambda", "lam", type=NONNEG, help="Sparsity strength for --method subgradient [1e-4].")
@click.option(
    "--prune-ratio",
    type=FRACTION_OPEN,
    help="After training, zero this fraction of BN channels (global |gamma| threshold, by coupled group).",
)
@click.option(
    "--round-to",
    type=COUNT,
    help="With --prune-ratio: keep channel counts multiples of N, as prune will (1: off) [16: host-cpu's].",
)
@click.option(
    "--finetune-epochs",
    type=NONNEG_INT,
    help="Fine-tune epochs after --prune-ratio [0].",
)
@click.option("--finetune-lr", type=POSITIVE, help="Fine-tune peak learning rate [same as --lr].")
@click.option(
    "--init", "init_path", type=click.Path(path_type=Path), help="Start from the weights of this model file."
)
@weights_option
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Output directory (model.pt, log.jsonl, report.json).",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="",
    default=None,
    help="Continue an interrupted run: alone, the one in --out (like slim --resume); or the run saved in "
    "this model.pt (or in this run folder's model.pt).",
)
@trust_pickle_option
@click.option(
    "--force", is_flag=True, help="Overwrite an earlier run in DIR (its model.pt, report.json, log.jsonl)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def train(**kw: Any) -> None:
    """Train a model; with --method subgradient --prune-ratio R --finetune-epochs N, run the
    three stages of original network slimming (sparse training, threshold prune, fine-tune).

    \b
    Example (Fashion-MNIST, small VGG, >= 92.5% in 10 epochs on a CPU):
      edgeslim train --arch vgg-small --data fashion-mnist --out runs/fmnist
    Multi-process (DDP; gloo on CPU, NCCL on GPUs):
      torchrun --nproc_per_node 2 -m edgeslim train --arch vgg-small --data fashion-mnist --out runs/ddp
    """
    from edgeslim.pipelines.train import TrainRequest, run
    from edgeslim.utils.console import err, log_lines_when_piped, progress

    as_json = kw.pop("as_json")

    def say(note: str) -> None:  # as it arises: before the training it concerns
        err.print(f"note: {notice(note, train)}", soft_wrap=True)

    with progress() as bar, log_lines_when_piped():
        outcome = run(TrainRequest.from_options(kw), progress=bar, say=say)
    if outcome.is_main:
        _print(as_json, outcome.report, outcome.spec, outcome.data_name, outcome.out_dir, outcome.slimmed)


def _print(
    as_json: bool, report: dict[str, Any], spec: Any, data_name: str, out_dir: Path, slimmed: bool = False
) -> None:
    from edgeslim.utils.console import out, print_json, table
    from edgeslim.utils.rundir import LOG_FILE, MODEL_FILE, REPORT_FILE

    if as_json:
        print_json(report)
        return
    rows: list[list[Any]] = [
        ["architecture", spec.arch],
        ["data", data_name],
        ["method", report.get("method")],
    ]
    if "accuracy_before_prune" in report:
        st = report["stages"]
        rows += [
            ["test accuracy before prune", report["accuracy_before_prune"]],
            ["test accuracy after prune", report["accuracy_after_prune"]],
        ]
        if "accuracy_after_finetune" in report:  # (no fine-tune: the model is the pruned one)
            rows.append(["test accuracy after fine-tune", report["accuracy_after_finetune"]])
        rows.append(["BN channels zeroed", _zeroed(st["pruned"])])
    staged = "accuracy_before_prune" in report  # the last fit is the fine-tune: its epochs, its best
    tuned = staged and bool((report.get("stage_configs") or {}).get("finetune", {}).get("epochs"))
    rows += [
        ["final test accuracy", report["test_accuracy"]],
        [
            "best test accuracy"
            + (" of the fine-tune" if tuned else " after prune (no fine-tune)" if staged else ""),
            f"{report['best_accuracy']:.4f} (epoch {report['best_epoch']})",
        ],
        [
            "parameters" + (" (zeroed channels still in: edgeslim prune removes them)" if staged else ""),
            report["params"],
        ],
        ["wall time (s)", report.get("wall_time_total_s", report["wall_time_s"])],
        ["model", str(out_dir / MODEL_FILE)],
    ]
    out.print(table("edgeslim train", ["", "value"], rows))
    from edgeslim.utils.console import err

    da = report.get("data_args") or {}
    data = f"--data {data_name}" + "".join(
        f" --{flag} {quote(da[key])}"
        for key, flag in (("data_dir", "data-dir"), ("subset", "subset"), ("test_subset", "test-subset"))
        if da.get(key) is not None
    )
    from edgeslim.checkpoint import loads_code

    # (a trial's own model: the hint left out the trust its checkpoint needs to rebuild)
    trust = " --trust-pickle" if loads_code(spec) else ""
    model = quote(out_dir / MODEL_FILE) + trust
    if "accuracy_before_prune" in report:  # three-stage slimming: its zeros are ready for surgery
        nxt = f"edgeslim prune {model} -o {quote(out_dir / 'slim.pt')}  (or edgeslim export)"
    elif slimmed:  # a fine-tuned slim model (its recipe): slim refuses it, export takes it
        nxt = f"edgeslim export {model} --onnx {quote(out_dir / 'model.onnx')}"
    else:
        slim = f"{data}{_slim_settings(report)} --out {quote(str(out_dir) + '-slim')}"
        nxt = f"edgeslim slim {model} {slim}  (or edgeslim export)"
    err.print(
        f"wrote {out_dir / MODEL_FILE}, {out_dir / LOG_FILE}, {out_dir / REPORT_FILE}; next: {nxt}",
        soft_wrap=True,
    )


#: optimizer steps a MAC budget wants to land near its target (a README trial on 122 images: 9 steps kept
#: 17.5% of the MACs for 0.5, 21 steps 42.9%, 30 to 35 steps 44-49%, 70 and 84 steps 48.8%)
BUDGET_STEPS = 50
#: the MAC budget the next step proposes (the README's)
NEXT_BUDGET = "0.5"


def _slim_settings(report: dict[str, Any]) -> str:
    """The flags a slim run of this model wants beyond its data: the run's learning rate and batch size
    where they are not slim's defaults (a fine-tune from weights, a small folder: the defaults took one
    step an epoch and removed nothing), a MAC budget, and the epochs that give the budget
    :data:`BUDGET_STEPS` steps on this training set (as the trainer batches it, dropping a short last
    batch)."""
    from edgeslim.train.config import TrainConfig

    cfg, default = report.get("config") or {}, TrainConfig()
    lr, batch = cfg.get("lr", default.lr), int(cfg.get("batch_size") or default.batch_size)
    flags = f" --lr {lr:g}" if lr != default.lr else ""
    flags += f" --batch-size {batch}" if batch != default.batch_size else ""
    da = report.get("data_args") or {}
    images = (da.get("images") or {}).get("train") or da.get("subset")  # (a built-in set's: its subset)
    if images:
        steps = max(int(images) // batch, 1)
        if steps * default.epochs < BUDGET_STEPS:
            flags += f" --epochs {-(-BUDGET_STEPS // steps)}"
    return f"{flags} --target-macs {NEXT_BUDGET}"


def _zeroed(pruned: dict[str, Any]) -> str:
    """The "BN channels zeroed" cell: the count, and the share of the removable ones against the ratio
    asked (rounding to the channel multiple moves it off)."""
    cell = f"{pruned['pruned_channels']} / {pruned['total_channels']}"
    if "achieved_ratio" not in pruned:  # (a report of an older run)
        return cell
    return f"{cell} ({pruned['achieved_ratio']:.1%} of the removable; asked {pruned['ratio']:g})"
