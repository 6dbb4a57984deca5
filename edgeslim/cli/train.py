"""``edgeslim train``: train a zoo model on a data set (baseline or original network slimming)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from edgeslim.cli.common import data_options, train_options
from edgeslim.cli.params import DEVICE, NONNEG, NONNEG_INT, POSITIVE, FractionList, Number
from edgeslim.errors import EdgeslimError

# Hyper-parameter options whose defaults come from TrainConfig (None = "not given").
_HPARAMS = (
    "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "decay_bn", "schedule",
    "milestones", "lr_gamma", "warmup_epochs", "label_smoothing", "augment", "amp", "channels_last",
    "seed", "method",
)  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--arch",
    help="Model name, e.g. vgg-small, vgg19, resnet20, tv:resnet18 (see `edgeslim info --list-models`).",
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
    "--channels-last/--no-channels-last", default=None, help="channels_last memory format (CUDA only) [off]."
)
@click.option(
    "--method", help="Training method: baseline or subgradient (original network slimming) [baseline]."
)
@click.option("--lambda", "lam", type=NONNEG, help="Sparsity strength for --method subgradient [1e-4].")
@click.option(
    "--prune-ratio",
    type=Number(float, min=0, lt=1),
    help="After training, zero this fraction of BN channels (global |gamma| threshold).",
)
@click.option(
    "--finetune-epochs",
    type=NONNEG_INT,
    default=0,
    show_default=True,
    help="Fine-tune epochs after --prune-ratio.",
)
@click.option("--finetune-lr", type=POSITIVE, help="Fine-tune peak learning rate [same as --lr].")
@click.option(
    "--init", "init_path", type=click.Path(path_type=Path), help="Start from the weights of this model file."
)
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
    "this model.pt.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing DIR/model.pt.")
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
    import torch

    from edgeslim.checkpoint import load_checkpoint_dict
    from edgeslim.train.distributed import dist_info
    from edgeslim.utils.io import check_output_dir, run_dir_lock

    if kw["threads"] is not None:
        torch.set_num_threads(kw["threads"])
    info = dist_info()
    out_dir: Path = kw["out_dir"]
    if kw["resume"] == "":  # the flag alone: the run in --out
        kw["resume"] = out_dir / "model.pt"
    resume_ckpt = load_checkpoint_dict(kw["resume"]) if kw["resume"] else None
    resume_state = (resume_ckpt or {}).get("train_state")
    if resume_ckpt is not None and not resume_state:
        raise EdgeslimError(
            f"{kw['resume']} has no training state (a final or pruned model); use --init to start from it"
        )
    same_dir = bool(kw["resume"]) and Path(kw["resume"]).resolve() == (out_dir / "model.pt").resolve()
    with contextlib.ExitStack() as stack:
        if info.is_main:
            check_output_dir(out_dir, force=True)  # a writable directory; contents checked under the lock
            stack.enter_context(run_dir_lock(out_dir))
            check_output_dir(out_dir, force=kw["force"] or same_dir, marker="model.pt")
        report, spec, bundle = _train(kw, info, out_dir, resume_ckpt, resume_state)
    if info.enabled:
        torch.distributed.destroy_process_group()
    if not info.is_main:
        return
    _print(kw, report, spec, bundle, out_dir)


def _train(kw: dict[str, Any], info: Any, out_dir: Path, resume_ckpt: dict | None, resume_state: dict | None):
    """Build the model, data and config from the options and train; returns (report, spec, bundle)."""
    import torch

    from edgeslim.checkpoint import build_from_checkpoint, load_model
    from edgeslim.data import load_dataset
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec
    from edgeslim.train.config import TrainConfig
    from edgeslim.train.pipeline import run_training
    from edgeslim.utils.console import err, log_lines_when_piped, progress

    recipe = None
    if resume_ckpt is not None:
        meta = dict(resume_ckpt.get("meta") or {})
        data_args = dict(meta.get("data_args") or {})
        given = [k for k in _HPARAMS if kw.get(k) is not None] + [
            k for k in ("lam", "prune_ratio", "finetune_lr", "init_path") if kw.get(k) is not None
        ]
        if given and info.is_main:
            err.print(f"note: --resume continues with the checkpoint's settings; ignoring {', '.join(given)}")
        spec = ModelSpec.from_dict(resume_ckpt["spec"])
        if kw["arch"] and kw["arch"] != spec.arch:
            raise EdgeslimError(
                f"--arch {kw['arch']} differs from the checkpoint's {spec.arch}; drop --arch to resume"
            )
        data_name = kw["data_name"] or data_args.get("name")
        data_dir = kw["data_dir"] or data_args.get("data_dir")
        subset, test_subset = data_args.get("subset"), data_args.get("test_subset")
        model = build_from_checkpoint(resume_ckpt)
        recipe = resume_ckpt.get("recipe")
        config = TrainConfig.from_dict({**resume_state["config"], "device": kw["device"]})
    else:
        if not kw["arch"] or not kw["data_name"]:
            raise EdgeslimError("give --arch NAME and --data NAME (or --resume DIR/model.pt)")
        data_name, data_dir = kw["data_name"], kw["data_dir"]
        subset, test_subset = kw["subset"], kw["test_subset"]
        hp = {k: kw[k] for k in _HPARAMS if kw.get(k) is not None}
        hp["device"] = kw["device"]
        method = hp.get("method", "baseline")
        if kw["lam"] is not None:
            if method != "subgradient":
                raise EdgeslimError(
                    "--lambda is the sparsity strength of --method subgradient; add --method subgradient"
                )
            hp["method_args"] = {"lam": kw["lam"]}
        config = TrainConfig(**hp)
        if kw["prune_ratio"] is None and kw["finetune_epochs"]:
            raise EdgeslimError(
                "--finetune-epochs needs --prune-ratio (fine-tuning follows the threshold prune)"
            )

    bundle = load_dataset(
        data_name, data_dir=data_dir, subset=subset, test_subset=test_subset, cache_dir=kw["cache_dir"]
    )
    if resume_ckpt is None:
        if kw["init_path"]:
            loaded = load_model(kw["init_path"])
            if loaded.spec is None:
                raise EdgeslimError(
                    f"--init {kw['init_path']} is a {loaded.kind} file; give an edgeslim checkpoint"
                )
            if kw["arch"] and kw["arch"] != loaded.spec.arch:
                raise EdgeslimError(
                    f"--arch {kw['arch']} differs from the architecture of --init {kw['init_path']} "
                    f"({loaded.spec.arch}); drop --arch or give a model of that architecture"
                )
            spec, model, recipe = loaded.spec, loaded.model, loaded.recipe
        else:
            spec = bundle.spec_for(kw["arch"])
            torch.manual_seed(config.seed)
            model = create_model(spec)
    bundle.check_spec(spec)
    meta = {
        "data_args": {"name": data_name, "data_dir": str(data_dir) if data_dir else None, "subset": subset,
                      "test_subset": test_subset},
    }  # fmt: skip

    with progress(enabled=None if info.is_main else False) as bar, log_lines_when_piped():
        report = run_training(
            model, spec, bundle, config, out_dir,
            prune_ratio=kw["prune_ratio"], finetune_epochs=kw["finetune_epochs"], finetune_lr=kw["finetune_lr"],
            resume=resume_state, progress=bar, meta=meta, recipe=recipe,
        )  # fmt: skip
    return report, spec, bundle


def _print(kw: dict[str, Any], report: dict[str, Any], spec: Any, bundle: Any, out_dir: Path) -> None:
    from edgeslim.utils.console import out, table

    if kw["as_json"]:
        import json

        from edgeslim.utils.io import to_jsonable

        out.print_json(json.dumps(to_jsonable(report)))
        return
    rows: list[list[Any]] = [
        ["architecture", spec.arch],
        ["data", bundle.name],
        ["method", report.get("method")],
    ]
    if "accuracy_before_prune" in report:
        st = report["stages"]
        rows += [
            ["test accuracy before prune", report["accuracy_before_prune"]],
            ["test accuracy after prune", report["accuracy_after_prune"]],
            ["test accuracy after fine-tune", report["accuracy_after_finetune"]],
            ["BN channels zeroed", f"{st['pruned']['pruned_channels']} / {st['pruned']['total_channels']}"],
        ]
    rows += [
        ["final test accuracy", report["test_accuracy"]],
        ["best test accuracy", f"{report['best_accuracy']:.4f} (epoch {report['best_epoch']})"],
        ["parameters", report["params"]],
        ["wall time (s)", report.get("wall_time_total_s", report["wall_time_s"])],
        ["model", str(out_dir / "model.pt")],
    ]
    out.print(table("edgeslim train", ["", "value"], rows))
    from edgeslim.utils.console import err

    err.print(
        f"wrote {out_dir / 'model.pt'}, {out_dir / 'log.jsonl'}, {out_dir / 'report.json'}; next: "
        f"edgeslim slim {out_dir / 'model.pt'} --data {bundle.name} --out {out_dir}-slim  (or edgeslim export)"
    )
