"""The full training run behind ``edgeslim train``: train, and for original network slimming
also threshold-prune and fine-tune (three stages), resumable from any epoch checkpoint."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgeslim.errors import EdgeslimError, Notice
from edgeslim.train.config import TrainConfig
from edgeslim.train.distributed import dist_info, resolve_device
from edgeslim.train.evaluation import evaluate
from edgeslim.train.trainer import TrainResult, fit, write_train_report
from edgeslim.utils.rundir import MODEL_FILE, REPORT_FILE, TRAINED_FILE

if TYPE_CHECKING:
    from rich.progress import Progress

    from edgeslim.data import DataBundle
    from edgeslim.models.registry import ModelSpec

log = logging.getLogger(__name__)
#: how far the share a threshold prune zeroed may be from prune_ratio before it is warned of
_RATIO_SLACK = 0.05


def run_training(
    model: nn.Module,
    spec: ModelSpec,
    bundle: DataBundle,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    prune_ratio: float | None = None,
    round_to: int = 1,
    finetune_epochs: int = 0,
    finetune_lr: float | None = None,
    resume: dict[str, Any] | None = None,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``model``; with ``prune_ratio`` then :func:`threshold_prune` and fine-tune with the
    pruned channels held at zero. Returns the report (also written to ``DIR/report.json``).
    ``round_to``: the prune keeps each coupled group's count a multiple of it (the channel
    multiple surgery will keep, so it removes every zero).

    ``resume`` is the ``train_state`` of a checkpoint written by this function (weights already
    loaded into ``model``); the run continues in the stage where it stopped, with the
    settings stored in the checkpoint.

    ``say`` gets the notes that arise during the run (a :class:`~edgeslim.errors.Notice` naming its
    parameters: a prune well off ``prune_ratio``); without it they are logged as warnings.
    """
    from edgeslim.sparsity.subgradient import MaskHook, threshold_prune

    out = Path(out_dir)
    info = dist_info()
    plan: dict[str, Any] = {
        "prune_ratio": prune_ratio,
        "round_to": round_to,
        "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr,
    }
    results: dict[str, Any] = {}
    stage = "train"
    if resume is not None:
        extra = dict(resume.get("extra") or {})
        plan = dict(extra.get("plan", plan))
        results = dict(extra.get("results", {}))
        stage = str(resume.get("stage", "train"))
        if stage not in ("train", "finetune"):  # (a slim run's checkpoint: its hooks are proximal's)
            raise EdgeslimError(
                f"the checkpoint is of a {stage!r} stage, and run_training continues only its own runs (stages "
                f"'train' and 'finetune'); continue a slim run with the slim stage (resume=True, its out_dir)",
                param="resume",
            )
        config = TrainConfig.from_dict({**resume["config"], "device": config.device})
    prune_ratio, finetune_epochs = plan["prune_ratio"], int(plan["finetune_epochs"] or 0)
    if prune_ratio is None and finetune_epochs:
        raise EdgeslimError(
            "finetune_epochs needs prune_ratio (fine-tuning follows the threshold prune)",
            param=("finetune_epochs", "prune_ratio"),
        )
    extra_state = {"plan": plan, "results": results}
    # what every checkpoint records of the data (name, normalization), as fit's own do: the pruned and
    # trained models this function saves itself too (prune and export check on those images)
    # (the fine-tune stage trains as "baseline": its checkpoints name the run's method)
    method = config.method if stage == "train" else (results.get("trained_config") or {}).get("method")
    meta = {**bundle.record(), **({"method": method} if method else {}), **(meta or {})}
    common = dict(spec=spec, progress=progress, meta=meta, recipe=recipe)

    history: list[dict[str, Any]] = []
    if stage == "train":
        res = fit(
            model, bundle, config, out, resume=resume, extra_state=extra_state, write_report=False, **common
        )
        history = res.history
        stage1_config = config
        results["trained"] = res.summary()
        if prune_ratio is None:
            return _report(out, res, config, spec, results, data_args=meta.get("data_args"))
        resume = None
    else:
        history = list(resume.get("history", [])) if resume else []
        stage1_config = TrainConfig.from_dict(results.get("trained_config", config.to_dict()))

    device = resolve_device(config.device)
    if stage == "train":
        # stage 2: global threshold prune (deterministic, so every DDP rank prunes alike)
        if info.is_main:
            from edgeslim.checkpoint import save_model

            save_model(out / TRAINED_FILE, model, spec, recipe=recipe, meta={**meta, "stage": "trained"})
        # ranked by coupled group, as surgery removes channels (alone, a residual net's zeros mostly stay)
        example = torch.zeros(1, *spec.input_shape, device=next(model.parameters()).device)
        # (a checkpoint of an older run records no round_to: 1)
        multiple = int(plan.get("round_to") or 1)
        pr = threshold_prune(model, float(prune_ratio), example_input=example, round_to=multiple)
        ev = evaluate(
            model, bundle, "test", config.eval_batch_size, device, rank=info.rank, world_size=info.world_size
        )
        # the ratio counts the channels surgery can remove; round_to moves each group's count off it
        removable = int(pr.get("removable", pr["total"]))
        achieved = pr["pruned"] / removable if removable else 0.0
        if abs(achieved - float(prune_ratio)) > _RATIO_SLACK and multiple > 1:
            note = Notice(  # (each parameter named once: the CLI shows that naming as its flag)
                f"prune_ratio {float(prune_ratio):g} zeroed {pr['pruned']} of the {removable} removable BN "
                f"channels ({100 * achieved:.1f}%): round_to {multiple} keeps each coupled group's count a "
                "multiple of it; a multiple of 1 zeroes nearer the ratio (prune with 1 too, so surgery removes "
                "every zero)",
                ("prune_ratio", "round_to"),
            )
            if say is not None:
                say(note)
            else:
                log.warning("%s", note)
        results["pruned"] = {
            "test_accuracy": ev["accuracy"],
            "test_loss": ev["loss"],
            "ratio": float(prune_ratio),
            "achieved_ratio": achieved,
            "round_to": multiple,
            "threshold": pr["threshold"],
            "pruned_channels": pr["pruned"],
            "removable_channels": removable,
            "total_channels": pr["total"],
            "per_layer": {k: list(v) for k, v in pr["per_layer"].items()},
        }
        results["trained_config"] = stage1_config.to_dict()
        log.info("pruned %d/%d BN channels: test acc %.4f", pr["pruned"], pr["total"], ev["accuracy"])
    # stage 3: fine-tune with the pruned channels held at zero
    ft_config = stage1_config.replace(
        stage="finetune",
        epochs=finetune_epochs,
        method="baseline",
        method_args={},
        lr=float(plan["finetune_lr"] or stage1_config.lr),
        warmup_epochs=0.0,
        device=config.device,
    )
    if resume is not None:
        ft_config = config  # resumed inside the fine-tune stage: its stored settings
    mask = MaskHook(model)
    res = fit(
        model, bundle, ft_config, out, hooks=[mask], resume=resume, history=history,
        extra_state={"plan": plan, "results": results}, write_report=False, **common,
    )  # fmt: skip
    if finetune_epochs == 0 and info.is_main:  # no fine-tune: the final model is the pruned one
        from edgeslim.checkpoint import save_model

        save_model(out / MODEL_FILE, model, spec, recipe=recipe, meta={**meta, "stage": "pruned"})
    if finetune_epochs:  # (none: the model is the pruned one, its accuracy the after-prune figure)
        results["finetuned"] = res.summary()
    return _report(
        out,
        res,
        ft_config,
        spec,
        results,
        method=stage1_config.method,
        data_args=meta.get("data_args"),
    )


def _report(
    out: Path,
    res: TrainResult,
    config: TrainConfig,
    spec: ModelSpec,
    results: dict[str, Any],
    method: str | None = None,
    data_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble (and on rank 0 write) ``report.json`` for the whole run (``data_args``: how its data
    was loaded, for the next command)."""
    stages = {k: v for k, v in results.items() if k != "trained_config"}
    summary: dict[str, Any] = {"method": method or config.method, "stages": stages}
    if data_args is not None:
        summary["data_args"] = data_args
    if "pruned" in results:
        summary["accuracy_before_prune"] = results["trained"]["test_accuracy"]
        summary["accuracy_after_prune"] = results["pruned"]["test_accuracy"]
        if "finetuned" in results:
            summary["accuracy_after_finetune"] = results["finetuned"]["test_accuracy"]
        summary["wall_time_total_s"] = results["trained"]["wall_time_s"] + results.get("finetuned", {}).get(
            "wall_time_s", 0.0
        )
        summary["bn_channels_zero"] = int(_zero_channels(res.model))
        # how each stage ran (the top-level config is the last stage's: the fine-tune); the sparse
        # training's holds the method and its lambda
        summary["stage_configs"] = {"train": results.get("trained_config"), "finetune": config.to_dict()}
    if dist_info().is_main:
        write_train_report(out, res, config, spec, **summary)
    from edgeslim.utils.io import read_json

    return read_json(out / REPORT_FILE) if dist_info().is_main else {**res.summary(), **summary}


@torch.no_grad()
def _zero_channels(model: nn.Module) -> int:
    from edgeslim.channels.norm import bn_layers

    return sum(int(((m.weight == 0) & (m.bias == 0)).sum()) for _, m in bn_layers(model))
