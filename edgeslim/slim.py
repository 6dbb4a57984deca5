"""One-round proximal network slimming as a Python API: train, finalize, surgery, report.

>>> bundle = load_dataset("fashion-mnist", subset=8000)
>>> res = slim_model(create_model(bundle.spec_for("vgg-small")), bundle.spec_for("vgg-small"),
...                  bundle, TrainConfig(epochs=5), SlimSettings(lam=0.1), out_dir="runs/slim")
>>> res.report["accuracy"], res.report["channels"]

Outputs in ``out_dir``: ``model.pt`` (slim checkpoint with its surgery recipe), ``trained.pt``
(the dense network with exact zero scales), ``report.json``, ``report.md`` (the same for a
person), ``channels.png``, ``gamma_hist.png``, ``budget.png`` (a budget run), and the trainer's
``train/`` folder (epoch checkpoints for ``--resume``, ``log.jsonl``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgeslim.channels.norm import bn_layers
from edgeslim.data.bundle import normalization_text, steps_per_epoch
from edgeslim.errors import EdgeslimError, Notice, shown
from edgeslim.sparsity.budget import (  # noqa: F401 - (re-exported: the CLI's and YOLO's)
    BUDGET_MISS_TOLERANCE,
    BUDGET_OVERSHOOT_FACTOR,
    budget_reached,
    budget_warning,
)
from edgeslim.sparsity.prox import (
    DEFAULT_BETA,
    PROX_STEPS,
    ProximalSlimming,
    check_importance,
    check_phases,
    check_strength,
    lambda_for_shrink,
    parse_phase,
)
from edgeslim.train.config import TrainConfig
from edgeslim.train.schedule import LRSchedule
from edgeslim.utils.plotting import new_figure, plain_log_axis, save_figure
from edgeslim.utils.rundir import (
    BUDGET_PNG,
    CHANNELS_PNG,
    GAMMA_HIST_PNG,
    LOG_FILE,
    MODEL_FILE,
    REPORT_FILE,
    RUN_REPORT_MD,
    TRAIN_DIR,
    TRAINED_FILE,
)
from edgeslim.utils.versions import versions

if TYPE_CHECKING:
    from rich.progress import Progress

    from edgeslim.data import DataBundle
    from edgeslim.models.registry import ModelSpec

log = logging.getLogger(__name__)

SLIM_FILE = MODEL_FILE
#: accuracy below ``chance + max(KAPPA_MIN * (1 - chance), 3 standard errors of a chance-level
#: score on the test set)`` counts as near chance: Cohen's kappa under KAPPA_MIN (10 classes: 14.5%;
#: 3: 36.7%; 2: 52.5%, whatever the test set's size), or, on a small test set, within its noise
#: (3 classes on 120 test images: 46%)
KAPPA_MIN = 0.05

#: total prox shrink when neither lambda nor shrink is given (docs/slimming.md "Choosing lambda")
DEFAULT_SHRINK = 1.0
#: warm-up and recovery of a fixed-strength run when not given, and the rate the recovery restarts
#: at ("base": the run's base learning rate) (benchmarks/results/phases_fmnist_60k.md, docs/slimming.md)
DEFAULT_WARMUP = "10%"
DEFAULT_RECOVERY = "50%"
DEFAULT_RECOVERY_LR = "base"
#: the words ``recovery_lr`` takes beside a number
RECOVERY_LR_WORDS = ("base", "off")
#: the default total shrink of a run with phases: the same S spent in fewer steps zeroes more
#: channels (measured: 0.7 with phases ~ the channel count of 1.0 without; docs/slimming.md)
DEFAULT_SHRINK_PHASES = 0.7


class CollapseError(EdgeslimError):
    """Slimming collapsed the network (accuracy at chance); outputs were written for diagnosis."""

    #: under ``--json`` the CLI prints the run's report (which holds the collapse), not an error document
    stdout_report = True


@dataclass
class SlimSettings:
    """Proximal-slimming hyper-parameters (``lam`` or ``shrink``; see docs/slimming.md)."""

    lam: float | None = None
    shrink: float | None = None
    beta: float = DEFAULT_BETA
    penalty: str = "l1"
    params: dict[str, float] = field(default_factory=dict)
    round_to: int = 1
    #: penalise (gamma_c, beta_c) together so removed channels leave no constant behind (exact surgery)
    zero_invariant: bool = False
    #: find coupled BN groups with surgery's graph (group penalties, never-empty units)
    coupled: bool = True
    calib_batches: int = 4
    #: budget-targeted slimming (edgeslim.sparsity.budget.BudgetSettings as a dict); None: fixed lambda
    budget: dict[str, Any] | None = None
    #: training phases: epochs (a number, may be fractional) or a share of training ("25%"):
    #: a warm-up without the prox, and a final recovery with the zero pattern frozen (lambda 0);
    #: None: :data:`DEFAULT_WARMUP` / :data:`DEFAULT_RECOVERY` (fixed strength and budget alike)
    prox_warmup: float | str | None = None
    recovery: float | str | None = None
    #: alpha of the prox: "lr" (1/lr, the paper's) or "effective" (the optimizer's effective step)
    prox_step: str = "lr"
    #: beta grows geometrically to this (a number or "auto") over the end of the sparsification phase
    beta_end: float | str | None = None
    #: the learning rate the recovery phase restarts at (cosine to 0 over it): a number, "base" (the
    #: run's base rate) or "off" (the schedule runs on); None: "base" when there is a recovery phase
    recovery_lr: float | str | None = None
    #: how channels are judged: "absolute" (|xi|) or "layer" (|xi| relative to its layer's scale)
    importance: str = "absolute"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """One-line errors (``param`` names the setting) for settings that cannot work."""
        if self.round_to < 1:
            raise EdgeslimError(f"round_to must be >= 1, got {self.round_to}", param="round_to")
        if not self.beta > 0 or not math.isfinite(self.beta):
            raise EdgeslimError(f"beta must be > 0, got {self.beta}", param="beta")
        for name in ("prox_warmup", "recovery"):
            if getattr(self, name) is not None:
                parse_phase(getattr(self, name), name)
        if self.prox_step not in PROX_STEPS:
            raise EdgeslimError(
                f"prox_step must be one of {', '.join(PROX_STEPS)}, got {self.prox_step!r}", param="prox_step"
            )
        check_importance(self.importance, self.penalty)
        lr = parse_recovery_lr(self.recovery_lr)
        check_phases(
            self.prox_step, 0, 0, None, self.beta_end, lr if isinstance(lr, float) else None, self.beta
        )

    def phases(self) -> tuple[float | str, float | str]:
        """``(prox_warmup, recovery)`` with the defaults filled in (see the fields)."""
        defaults = (DEFAULT_WARMUP, DEFAULT_RECOVERY)
        return tuple(d if v is None else v for d, v in zip(defaults, (self.prox_warmup, self.recovery)))  # type: ignore[return-value]

    def resolved_recovery_lr(self, base_lr: float, recovery_steps: int) -> float | None:
        """The rate the recovery restarts at (None: no restart), the default filled in (see the field)."""
        value = parse_recovery_lr(self.recovery_lr)
        if value is None:
            value = DEFAULT_RECOVERY_LR if recovery_steps else "off"
        if value == "off":
            return None
        return base_lr if value == "base" else float(value)


def parse_recovery_lr(value: float | str | None) -> float | str | None:
    """``recovery_lr`` as a float, ``"base"``, ``"off"`` or None (one-line error otherwise)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    if text in RECOVERY_LR_WORDS:
        return text
    try:
        return float(text)
    except ValueError:
        raise EdgeslimError(
            f"recovery_lr must be a learning rate > 0, base or off, got {value!r}", param="recovery_lr"
        ) from None


def phase_steps(settings: SlimSettings, config: TrainConfig, steps: int) -> dict[str, int]:
    """Steps of the warm-up and recovery phases and of the whole run (``steps`` per epoch)."""
    total = config.epochs * steps
    out = {"total_steps": total}
    for name, key, value in zip(
        ("prox_warmup", "recovery"), ("warmup_steps", "recovery_steps"), settings.phases()
    ):
        kind, v = parse_phase(value, name)
        out[key] = int(round(v * (total if kind == "fraction" else steps)))
    check_phases(
        settings.prox_step,
        out["warmup_steps"],
        out["recovery_steps"],
        total,
        settings.beta_end,
        settings.resolved_recovery_lr(config.lr, out["recovery_steps"]),
        settings.beta,
    )
    return out


def step_gain(settings: SlimSettings, config: TrainConfig) -> float:
    """The optimizer's step gain the prox accounts for: ``1/(1-m)`` with ``prox_step="effective"``."""
    return 1.0 / (1.0 - config.momentum) if settings.prox_step == "effective" else 1.0


@dataclass
class SlimResult:
    """What :func:`slim_model` returns."""

    trained: nn.Module
    slim: nn.Module
    recipe: dict[str, Any]
    report: dict[str, Any]


def planned_lrs(config: TrainConfig, steps: int) -> list[float]:
    """The lr of every iteration of a run with ``config`` and ``steps`` iterations per epoch."""
    sched = LRSchedule(
        None,  # type: ignore[arg-type]  # only lr_at() is used
        config.lr, config.epochs * steps, config.schedule,
        warmup_steps=int(round(config.warmup_epochs * steps)),
        milestones=config.milestones, gamma=config.lr_gamma,
    )  # fmt: skip
    return [sched.lr_at(t) for t in range(config.epochs * steps)]


def resolve_lambda(
    settings: SlimSettings, config: TrainConfig, bundle: DataBundle, phases: dict[str, int] | None = None
) -> float:
    """``settings.lam``, or the lambda whose planned total shrink is ``settings.shrink``
    (default :data:`DEFAULT_SHRINK`, :data:`DEFAULT_SHRINK_PHASES` with phases: neither given means a
    schedule-independent default), summed over the sparsification phase with the prox step's alpha."""
    check_strength(settings.lam, settings.shrink, budget=settings.budget is not None)
    if settings.lam is not None:
        return float(settings.lam)
    steps = steps_per_epoch(bundle, config.batch_size)
    ph = phases if phases is not None else phase_steps(settings, config, steps)
    shrink = default_shrink(ph) if settings.shrink is None else settings.shrink
    lrs = planned_lrs(config, steps)[ph["warmup_steps"] : ph["total_steps"] - ph["recovery_steps"]]
    return lambda_for_shrink(shrink, lrs, settings.beta, step_gain(settings, config))


def default_shrink(phases: dict[str, int]) -> float:
    """The total shrink a run uses when given neither lambda nor shrink (less without phases), for
    its :func:`phase_steps`."""
    return DEFAULT_SHRINK_PHASES if phases["warmup_steps"] or phases["recovery_steps"] else DEFAULT_SHRINK


def _bn_channels(model: nn.Module) -> int:
    return sum(int(m.weight.numel()) for _, m in bn_layers(model))


def slim_model(
    model: nn.Module,
    spec: ModelSpec,
    bundle: DataBundle,
    config: TrainConfig,
    settings: SlimSettings | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    progress: Progress | None = None,
    resume: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    report_files: bool = True,
    names: Mapping[str, str] | None = None,
) -> SlimResult:
    """Train ``model`` with proximal slimming, set gamma <- xi, cut the zero channels out, report.

    ``config`` is the training configuration (its ``method`` is ignored: the proximal hook
    is added here). With ``out_dir`` the files listed in the module doc are written. A
    collapse to chance accuracy raises :class:`CollapseError` after the files are written; a slim model
    surgery's check measured wrong (report ``surgery.check_failed``) raises :class:`EdgeslimError` after
    them, the slim checkpoint left out. ``report_files=False``: a run that ends with more to do (the
    latency check) writes report.json and report.md itself (:func:`write_report`) once that is done,
    so that a run stopped before then is not a finished one (an earlier run's report is removed);
    one that raises here still writes them. ``names``: what report.md calls the parameters its advice
    names (:func:`markdown_report`; the CLI gives its flags).
    """
    from edgeslim.train.distributed import resolve_device
    from edgeslim.train.evaluation import evaluate
    from edgeslim.train.trainer import check_input_fits, fit

    settings = settings or SlimSettings()
    if not bn_layers(model):
        raise EdgeslimError(
            f"model {spec.arch!r} has no BatchNorm layers; network slimming prunes channels by their BN "
            "scales (use a model with BN after each conv)"
        )
    settings.validate()
    phases = phase_steps(settings, config, steps_per_epoch(bundle, config.batch_size))
    recovery_lr = settings.resolved_recovery_lr(config.lr, phases["recovery_steps"])
    lam = resolve_lambda(settings, config, bundle, phases)
    device = resolve_device(config.device)
    model.to(device)
    example = torch.zeros(1, *spec.input_shape, device=device)
    check_input_fits(model, example, spec.arch)
    groups: list[Any] = []  # (coupled off: every BN layer its own unit, as asked)
    if settings.coupled:
        from edgeslim.sparsity.prox import coupled_bn_groups

        groups = coupled_bn_groups(model, example)
    slimmer = ProximalSlimming(
        model, lam=lam, beta=settings.beta, penalty=settings.penalty, groups=groups,
        zero_invariant=settings.zero_invariant, prox_step=settings.prox_step, beta_end=settings.beta_end,
        recovery_lr=recovery_lr, importance=settings.importance, **phases, **settings.params,
    )  # fmt: skip
    if not settings.budget and resume is None:  # (a budget's controller steers lambda: no fixed tau to check)
        slimmer.check_threshold(planned_lrs(config, steps_per_epoch(bundle, config.batch_size)),
                                step_gain(settings, config))  # fmt: skip
    controller = None
    if settings.budget:  # budget-targeted: a controller sets lambda and weights (docs/budget.md)
        # on --resume the controller's state_dict restores its own base lambda; it takes the
        # sparsification phase and the freeze from the slimmer
        controller = controller_for_slim(
            model, slimmer, settings.budget, bundle, config, example, base_lambda=settings.lam,
            round_to=settings.round_to, total_steps=phases["total_steps"],
        )  # fmt: skip
    if (
        controller is None
    ):  # keep aligned channel counts with trained channels (a controller does: docs/speed.md)
        from edgeslim.sparsity.align import align_channels

        align_channels(slimmer, model, example, settings.round_to)
    out = Path(out_dir) if out_dir is not None else None
    warmup, recovery = settings.phases()
    slimming = {
        **settings.to_dict(),
        "params": dict(slimmer.params),  # the penalty's parameters, defaults included
        "lam": lam,
        **(
            {"default_shrink": default_shrink(phases)}
            if settings.lam is None and settings.shrink is None and settings.budget is None
            else {}
        ),
        **(meta or {}).get("planned_shrink", {}),  # (a resumed run: the shrink its lambda came from)
        "prox_warmup": warmup,
        "recovery": recovery,
        "recovery_lr": recovery_lr,
        "phase_steps": phases,
    }
    run_meta = {**bundle.record(), **(meta or {}), "method": "proximal", "slimming": slimming}
    train_cfg = config.replace(method="baseline", method_args={}, stage="slim")
    res = fit(
        model, bundle, train_cfg, out / TRAIN_DIR if out else None, spec=spec, hooks=[slimmer, controller],
        progress=progress, resume=resume, meta=run_meta, write_report=False,
    )  # fmt: skip
    with slimmer.xi_assigned():  # what gamma := xi would cost (the fixed-point gap lam/beta)
        ev_xi = evaluate(model, bundle, "test", config.eval_batch_size, device)
    fin = slimmer.finalize(warn=False)  # (the report says when nothing reached zero)
    model.eval()
    ev_trained = evaluate(model, bundle, "test", config.eval_batch_size, device)
    report: dict[str, Any] = {
        "arch": spec.arch,
        "data": bundle.name,
        "input_shape": list(spec.input_shape),  # (channels, height, width) it trained at
        # (what a device's preprocessing must do: a review found it in the ONNX metadata only)
        "normalization": {"mean": list(bundle.mean), "std": list(bundle.std)},
        "data_args": (meta or {}).get("data_args"),  # how the data was loaded (None: by a Python caller)
        "slimming": slimming,
        # (the prox is a hook added to plain training: the run's method is the proximal one)
        "train": {**res.summary(), "config": {**train_cfg.to_dict(), "method": "proximal"}},
        "accuracy": {
            "before_finalize": res.test_accuracy,
            "gamma_eq_xi": ev_xi["accuracy"],
            "trained": ev_trained["accuracy"],
            "test_images": ev_trained["n"],
        },
        "finalize": fin.to_dict(),
        "history": res.history,
        # what else explains the numbers (a trial: 2 threads against 1 moved accuracy by 1.4 pt, and the
        # report named neither the threads nor a version)
        "environment": {"versions": versions(), "threads": torch.get_num_threads(), "device": str(device)},
    }
    report.update({k: meta[k] for k in ("source", "weights", "head", "alignment") if meta and meta.get(k)})
    from edgeslim.sparsity.resource import removal_candidates

    # which BN channels surgery can remove at all (a trial: 85% of an EfficientNet's were not, unsaid)
    report["candidates"] = removal_candidates(model, example, bool(settings.zero_invariant))
    from edgeslim.checkpoint import rebuild_facts

    report.update(rebuild_facts(spec))  # its checkpoints' trust_pickle and the file they rebuild from
    from edgeslim.surgery import CheckFailedError, prune_with_report
    from edgeslim.surgery.prune import check_failed_message

    dense_channels = _bn_channels(model)
    per_layer = {row["name"]: row for row in fin.layers}
    calib = bundle.calibration_batches(settings.calib_batches, seed=1, device=device)
    try:  # (strict: no warning beside the run's own line, raised below once the report is written)
        pr = prune_with_report(model, example, round_to=settings.round_to, calib_inputs=calib, strict=True)
    except CheckFailedError as exc:
        pr = exc.result
    slim, recipe = pr.model, pr.recipe
    if controller is not None:  # (after surgery: a parameter budget counts the biases it folded)
        controller.after_surgery([f["layer"] for f in pr.report["folded_biases"]])
        report["slimming"]["lam_final"] = slimmer.lam  # the controller's ("lam": resolved from the settings)
        report["budget"] = controller.report(res.history)
        report["budget"]["warning"] = budget_warning(report["budget"])
    ev_slim = evaluate(slim, bundle, "test", config.eval_batch_size, device)
    report["accuracy"]["slim"] = ev_slim["accuracy"]
    report["params"] = {"dense": pr.report["params_before"], "slim": pr.report["params_after"]}
    report["macs"] = {"dense": pr.report["macs_before"], "slim": pr.report["macs_after"]}
    slim_bn = {n: int(m.weight.numel()) for n, m in bn_layers(slim)}
    for name, row in per_layer.items():
        row["after_surgery"] = slim_bn.get(name, 0)
    report["channels"] = {"dense": dense_channels, "slim": sum(slim_bn.values()), "zero": fin.zeroed}
    report["surgery"] = {k: v for k, v in pr.report.items() if k != "layers"}
    report["surgery_layers"] = pr.report["layers"]
    report["verify"] = {
        "max_abs_diff": pr.report["max_abs_diff"],
        "top1_agreement": pr.report["top1_agreement"],
    }
    if fold := approximate_fold_warning(pr.report):
        report["verify"]["warning"] = fold
    report["layers"] = list(per_layer.values())
    for key in ("params", "macs", "channels"):
        if report[key]["dense"]:
            report[key]["removed_frac"] = 1.0 - report[key]["slim"] / report[key]["dense"]
    report["collapse"] = collapse_check(
        report, fin.restored, bundle.num_classes, budget=bool(settings.budget), test_labels=bundle.test_y
    )

    if out is not None:
        from edgeslim.checkpoint import save_model

        if not report_files:  # (a resumed run's earlier report describes models about to be replaced)
            for name in (REPORT_FILE, RUN_REPORT_MD):
                (out / name).unlink(missing_ok=True)
        save_model(
            out / TRAINED_FILE,
            model,
            spec,
            meta={**run_meta, "stage": "trained", "accuracy": ev_trained["accuracy"]},
        )
        if pr.report["check_failed"]:  # a slim model surgery's check measured wrong is not saved
            (out / SLIM_FILE).unlink(missing_ok=True)  # (nor an earlier run's left: a --force rerun)
        else:
            save_model(
                out / SLIM_FILE, slim, spec, recipe=recipe,
                meta={**run_meta, "stage": "slim", "accuracy": report["accuracy"]["slim"]},
            )  # fmt: skip
        report["out_dir"] = str(out)  # (a collapsed run's report too)
        report["plots"] = plot_report(report, _gammas(model), out)
        if controller is not None:
            report["plots"]["budget"] = plot_trajectory(
                report["budget"], out / BUDGET_PNG, final_accuracy=report["accuracy"].get("slim")
            ).name
        else:  # an earlier budget run's plot (a --force rerun into its folder) does not describe this one
            (out / BUDGET_PNG).unlink(missing_ok=True)
        if report_files or pr.report["check_failed"] or report["collapse"]["collapsed"]:
            write_report(out, report, names)
    if pr.report["check_failed"]:
        kept = f"; {out / TRAINED_FILE} holds the trained model, prune it once that is done" if out else ""
        raise EdgeslimError(check_failed_message(spec.arch, pr.report) + f" ({SLIM_FILE} not written){kept}")
    if report["collapse"]["collapsed"]:
        msg = report["collapse"]["message"]
        raise CollapseError(msg, param=next((p for p in ("shrink", "taper_end") if p in msg), "lam"))
    return SlimResult(model, slim, recipe, report)


def _gammas(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().abs().flatten().cpu() for _, m in bn_layers(model)])


def chance_level(num_classes: int, test_labels: torch.Tensor | None = None) -> tuple[float, float]:
    """(chance, threshold): the accuracy of always answering the test set's most frequent class
    (``1 / num_classes`` without labels), and the accuracy below which a network counts as near
    chance (Cohen's kappa below :data:`KAPPA_MIN`, or within three standard errors of a
    chance-level score on a small test set)."""
    chance, n = 1.0 / max(num_classes, 1), 0
    if test_labels is not None and test_labels.numel():
        n = int(test_labels.numel())
        chance = float(torch.bincount(test_labels.reshape(-1).long()).max()) / n
    noise = 3.0 * math.sqrt(chance * (1.0 - chance) / n) if n else 0.0
    return chance, max(kappa_floor(chance), chance + noise)


def kappa_floor(chance: float) -> float:
    """The accuracy whose Cohen's kappa against ``chance`` is :data:`KAPPA_MIN`."""
    return chance + KAPPA_MIN * (1.0 - chance)


def at_alignment_floor(report: dict[str, Any]) -> int:
    """How many BN layers wider than the run's channel multiple (``round_to`` > 1) the slim network has
    at exactly that multiple, when every such layer (two or more) is: the prox left at most that many
    alive in each and the alignment rounded them up (a trial's default run of six layers; with
    ``round_to`` 1 the same run was a collapse). 0 otherwise, and for a budget run, whose controller
    chooses the widths."""
    slimming = report.get("slimming") or {}
    r = int(slimming.get("round_to") or 1)
    wide = [row for row in report.get("layers") or [] if int(row["channels"]) > r]
    floor = r > 1 and len(wide) >= 2 and not slimming.get("budget")
    return len(wide) if floor and all(int(row.get("after_surgery", -1)) == r for row in wide) else 0


def _round_to_covers(report: dict[str, Any]) -> int:
    """The width of the widest BN layer when the run's ``round_to`` (> 1) is not below it (no count can
    round to fewer than all its channels: nothing can go, whatever the strength); 0 otherwise."""
    r = int((report.get("slimming") or {}).get("round_to") or 1)
    widest = max((int(row["channels"]) for row in report.get("layers") or []), default=0)
    return widest if r > 1 and 0 < widest <= r else 0


#: an approximate fold that moved the slim outputs this far (or changed a prediction) is a warning
FOLD_WARN_DIFF = 1e-3


def approximate_fold_warning(surgery: dict[str, Any]) -> Notice | str:
    """One line naming the layers surgery folded removed channels' constants into approximately (a
    zero-padded conv), where its check on the run's images measured the slim outputs off the trained
    ones (by more than :data:`FOLD_WARN_DIFF`, or a changed prediction); "" otherwise."""
    layers = [f["layer"] for f in surgery.get("folded_biases") or [] if not f["exact"]]
    diff, agree = surgery.get("max_abs_diff"), surgery.get("top1_agreement")
    if not layers or diff is None or (diff <= FOLD_WARN_DIFF and (agree is None or agree >= 1.0)):
        return ""
    names = ", ".join(layers[:5]) + (f" and {len(layers) - 5} more" if len(layers) > 5 else "")
    agreement = "" if agree is None else f", top-1 agreement {agree:.2%}"
    return Notice(
        f"the constants of removed channels were folded approximately into {names} (zero-padded convs: exact "
        f"away from the border only), so the slim outputs differ from the trained ones by up to {diff:.3g}"
        f"{agreement}; zero_invariant slimming leaves nothing to fold (exact surgery)",
        ("zero_invariant",),
    )


def _chance_note(chance: float, threshold: float, test_labels: Any) -> str:
    """What chance is and where near it ends, and by which rule, for a person (a trial read "chance 42.9%,
    below 99.0% counts as near" as a contradiction; 14.5% of 10 classes was called "not told apart from"
    10% on 10,000 test images, 15 standard errors above it)."""
    head = f"chance {chance:.1%}, always answering the commonest class; below {threshold:.1%}"
    if threshold > kappa_floor(chance) and test_labels is not None:  # the small test set's noise decides
        return f"{head} is within 3 standard errors of it on {test_labels.numel()} test images, not told apart from it"
    return (
        f"{head} counts as near it: Cohen's kappa under {KAPPA_MIN:g}, at most {KAPPA_MIN:.0%} of the way from "
        "chance to 100%"
    )


def collapse_check(
    report: dict[str, Any],
    restored: list[list[str]],
    num_classes: int,
    budget: bool = False,
    test_labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Did slimming empty layers (kept one channel) or destroy accuracy? One line says which.

    ``collapsed`` (an error) means the prox destroyed the network: accuracy at chance with half or
    more of the channels zero, or layer groups emptied. At chance with few zeros, or near chance in
    every epoch from a first one with few zeros, the network did not learn (a short run): that is a
    warning, not a collapse. ``budget``: advice for a budget run.
    """
    acc = float(report["accuracy"].get("slim", report["accuracy"]["trained"]))
    chance, threshold = chance_level(num_classes, test_labels)
    judged = threshold < 1.0  # a test set too small to tell even a perfect score from chance judges nothing
    at_chance = judged and acc < threshold
    # clear of chance by the kappa rule, near it only within a small test set's noise: the test set
    # cannot tell, which says nothing of training (a trial: 59.4% of 3 classes on 32 images "did not
    # learn"); emptied layer groups are the prox's doing whatever the score (the collapse branch below)
    unclear = at_chance and not restored and acc >= kappa_floor(chance)
    lam = report["slimming"]["lam"]
    # the total shrink the run was given, else the default it used (None: it was given a lambda)
    shrink = report["slimming"].get("shrink") or report["slimming"].get("default_shrink")
    weaker = f"lower the shrink (now {shrink:g}, try {shrink / 3:.2g})" if shrink else (
        f"lower lambda (now {lam:.3g}, try {lam / 3:.3g})")  # fmt: skip
    msg = ""
    zero_frac = float(report["finalize"]["zeroed"]) / max(float(report["finalize"]["total"]), 1.0)
    epochs = report.get("train", {}).get("epochs")
    collapsed = False
    hist = report.get("history") or [{}]
    # near chance in every epoch, from a first one with few zeros: the network never learned, whatever
    # the prox did later (a trial's run was blamed on its budget at 25% accuracy from epoch 1)
    never = (
        judged
        and "test_acc" in hist[0]
        and all(float(h.get("test_acc", 1.0)) < threshold for h in hist)
        and float(hist[0].get("xi_zero_frac", 1.0)) < 0.5
    )
    # nothing removed, said whatever else is (a review: a small test set's warning alone hid it)
    nothing = ""
    if int(report["finalize"]["zeroed"]) == 0 and not budget:
        nothing = "no BN scale reached zero, so nothing was removed: " + (
            f"raise the shrink (now {shrink:g}) or train longer"
            if shrink
            else f"raise lambda (now {lam:.3g})"
        )
    untold = ""  # a test set that cannot judge the slim network's accuracy
    n = 0 if test_labels is None else test_labels.numel()
    if unclear:
        untold = (
            f"the test set ({n} images) is too small to tell the slim network's accuracy ({acc:.1%}) from chance "
            f"({chance:.1%}, always answering the commonest class; below {threshold:.1%} is within its noise); give a "
            "larger test_subset, or a test split with more images, to judge it"
        )
    elif not judged and chance >= 1.0:
        untold = (
            f"the test set holds one class, so its accuracy ({acc:.1%}) cannot tell the slim network from one "
            "that always answers that class; test on images of every class"
        )
    elif not judged:
        untold = (
            f"the test set ({n} images) is too small to tell the slim network's accuracy ({acc:.1%}) from chance "
            f"({chance:.1%}, always answering the commonest class); give a larger test_subset, or a test split "
            "with more images, to judge it"
        )
    if unclear:
        msg = untold
    elif at_chance and not restored and (zero_frac < 0.5 or never):
        gmean = float(hist[-1].get("gamma_mean", float("nan")))
        zeros = (
            f"only {zero_frac:.0%} of channels zero (mean |gamma| {gmean:.3g})"
            if zero_frac < 0.5
            else f"every epoch near chance, from the first with {float(hist[0]['xi_zero_frac']):.0%} of channels "
            f"zero ({zero_frac:.0%} at the end)"
        )
        msg = (
            f"the slim network is near chance accuracy ({acc:.1%}; {_chance_note(chance, threshold, test_labels)}) "
            f"with {zeros}: training did not learn in {epochs} epoch(s); train longer or check "
            "the learning rate before reading its channel counts"
        )
    elif at_chance:
        collapsed = True
        b = report.get("budget") or {}
        if not budget:
            advice = weaker
        elif (
            b.get("achieved_fraction") is not None
            and b["achieved_fraction"] < BUDGET_OVERSHOOT_FACTOR * b["target_fraction"]
        ):  # (a review: a run that overshot a 50% budget to 19.5% was told the budget was too tight)
            advice = (
                f"the controller overshot the budget ({b['achieved_fraction']:.1%} of the dense {b['metric']} kept "
                f"for a target of {b['target_fraction']:.1%}): the schedule is too short for it to steer; train "
                "longer (more epochs or images) or end the taper later (taper_end)"
            )
        else:
            advice = (
                "the budget is too tight for this schedule: train longer (more epochs) or end the taper later "
                "(taper_end), or give a larger budget"
            )
        msg = (
            f"slimming collapsed the network: test accuracy {acc:.1%} is near chance "
            f"({_chance_note(chance, threshold, test_labels)}), "
            f"{zero_frac:.0%} of channels zero, {len(restored)} layer group(s) emptied by the prox; {advice}"
        )
    elif restored:
        msg = (
            f"the prox emptied {len(restored)} layer group(s) ({', '.join('+'.join(u) for u in restored[:3])}); "
            "their strongest channel was kept; a smaller lambda keeps more"
        )
    elif floor := at_alignment_floor(report):
        advice = weaker
        msg = (
            f"every one of the {floor} layers wider than {report['slimming']['round_to']} channels ended at "
            f"{report['slimming']['round_to']}, the fewest an aligned layer keeps (round_to): the prox left at most "
            f"that many alive in each, perhaps none, and the alignment rounded them up, so the counts say little; "
            f"{advice}"
        )
    elif widest := _round_to_covers(report):
        msg = (
            f"round_to ({report['slimming']['round_to']}) is not below the widest BN layer ({widest} channels): "
            "every layer's kept count rounds up to all its channels, so nothing can be removed; give a smaller "
            "one (the device's channel multiple, e.g. 16 or 8), not a stronger shrink"
        )
    elif nothing:
        msg = nothing
    elif untold:
        msg = untold
    if nothing and untold and msg in (nothing, untold):  # (both: neither hides the other)
        msg = f"{nothing}; and {untold}"
    named = tuple(
        p for p in ("shrink", "taper_end", "epochs", "test_subset", "round_to") if re.search(rf"\b{p}\b", msg)
    )
    return {"collapsed": collapsed, "emptied": restored, "message": Notice(msg, named) if msg else msg}


def write_report(out: Path, report: dict[str, Any], names: Mapping[str, str] | None = None) -> None:
    """``out/report.json`` and ``out/report.md``, the same run for a program and for a person;
    ``names``: what report.md calls the parameters its lines name (:func:`markdown_report`)."""
    from edgeslim.utils.io import atomic_write_text, write_json

    write_json(out / REPORT_FILE, report)
    atomic_write_text(out / RUN_REPORT_MD, markdown_report(report, names))


def prox_text(slimming: dict[str, Any], history: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    """``(penalty, beta)`` as a run's summary says them: a zero-invariant run's penalty acts on each
    channel's (scale, shift) pair, and a beta ramp says where beta ended (its last epoch's, else
    ``beta_end``)."""
    pen = str(slimming.get("penalty"))
    if slimming.get("zero_invariant"):
        pen += " on each channel's (scale, shift) pair (zero-invariant)"
    beta = f"beta {slimming['beta']:g}"
    if slimming.get("beta_end") is not None:
        ended = [h["beta"] for h in history or [] if h.get("beta") is not None]
        end = ended[-1] if ended else slimming["beta_end"]
        beta += f" grown to {end:g}" if not isinstance(end, str) else f" grown to {end}"
    return pen, beta


def percent(v: float | None) -> str:
    """An accuracy or share as ``84.0%`` (``-`` for None): the terminal's and report.md's."""
    return "-" if v is None else f"{v:.1%}"


def latency_check_rows(lat: dict[str, Any]) -> list[list[str]]:
    """A measured latency check's rows (dense, slim) under ``["", "target", "predicted", "measured"]``."""
    return [
        ["dense", "-", f"{lat['predicted_dense_ms']:.4g}", f"{lat['measured_dense_ms']:.4g}"],
        ["slim", f"{lat['target_ms']:.4g}", f"{lat['predicted_ms']:.4g}", f"{lat['measured_ms']:.4g}"],
    ]


def accuracy_change(report: dict[str, Any]) -> str:
    """The slim network's test accuracy minus the trained one's, in points (``+0.00 pt``)."""
    acc = report["accuracy"]
    return f"{100 * (acc.get('slim', 0) - acc['trained']):+.2f} pt"


def accuracy_note(report: dict[str, Any]) -> str:
    """What a slim run's accuracy change compares (the terminal's and report.md's one sentence)."""
    n_test = report["accuracy"].get("test_images")
    return (
        "the accuracy change is what surgery cost the trained network"
        + (f" ({n_test:,} test images)" if n_test else "")
        + "; no unpruned network was trained in this run (train one without slimming to compare with)"
    )


def candidates_note(report: dict[str, Any]) -> Notice | None:
    """How many BN channels are no removal candidates and why (None: every one is), naming
    ``zero_invariant`` where it would make them candidates (squeeze-excitation-gated channels)."""
    c = report.get("candidates")
    if not c or c["candidates"] >= c["bn_channels"]:
        return None
    kept = c["bn_channels"] - c["candidates"]
    why = []
    if c.get("gated"):
        why.append(f"{c['gated']:,} because a squeeze-excitation gate multiplies them and the slimmer keeps "
                   "their BN shift (zero_invariant=True makes them candidates)")  # fmt: skip
    if c.get("barred"):
        why.append(f"{c['barred']:,} behind a barrier (a model input or output, an op surgery cannot resize)")
    if c.get("other"):
        why.append(f"{c['other']:,} in BN layers without affine scales")
    return Notice(
        f"{kept:,} of {c['bn_channels']:,} BN channels ({kept / c['bn_channels']:.1%}) are not removal "
        f"candidates (surgery keeps them whatever their scales): " + "; ".join(why),
        "zero_invariant" if c.get("gated") else None,
    )


def final_steps_note(report: dict[str, Any]) -> str | None:
    """Why the trained network's test accuracy differs from the last epoch's (the steps after it that
    ran), or None when it moved by less than half a point (a trial asked why)."""
    acc = report["accuracy"]
    last = acc.get("before_finalize")
    if last is None or abs(acc["trained"] - last) < 0.005:
        return None
    budget = report.get("budget") or {}
    recal, projected = budget.get("bn_recalibrated_on_images"), budget.get("projection_removed_channels")
    steps = [f"the budget's final projection ({projected} channel(s))"] if projected else []
    steps += [f"BN statistics re-estimated on {recal:,} training images"] if recal else []
    if not ((report.get("slimming") or {}).get("phase_steps") or {}).get("recovery_steps"):  # (else held)
        steps += ["finalize (the prox's exact zeros written into the scales)"]
    if not steps:
        return None
    return f"test accuracy {percent(last)} at the last epoch, {percent(acc['trained'])} after " + ", ".join(
        steps
    )


def markdown_report(report: dict[str, Any], names: Mapping[str, str] | None = None) -> str:
    """A slim run's report for a person: the result, how it was trained, the layers, the files.
    ``names``: parameter -> what the person gave it as (the CLI's flags, :func:`~edgeslim.errors.renamed`)
    for the parameters its advice names; None: a Python caller's, the parameters as they are."""
    from edgeslim.utils.markdown import markdown_table

    acc, s, cfg = report["accuracy"], report["slimming"], report["train"]["config"]
    rows = [["test accuracy", percent(acc["trained"]), percent(acc.get("slim")), accuracy_change(report)]]
    for key, label in (("channels", "BN channels"), ("params", "parameters"), ("macs", "MACs")):
        if key in report:
            d = report[key]
            kept = d["slim"] / d["dense"] if d["dense"] else 1.0
            fewer = f", {1 / kept:.2f}x fewer" if 0 < kept < 1 else ""
            rows.append([label, f"{d['dense']:,}", f"{d['slim']:,}", f"{kept:.1%} of dense{fewer}"])
    note = accuracy_note(report)
    parts = [
        f"# edgeslim slim: {report['arch']} on {report['data']}",
        "",
        "One round of proximal network slimming: training drove BatchNorm scales to exact zeros, and "
        "surgery cut those channels out of the network.",
        "",
        "## Result",
        "",
        markdown_table(["", "trained (full width, zeros in place)", "slim", "change"], rows),
        "",
        f"{note[0].upper()}{note[1:]}. Parameters and MACs are counted on the PyTorch model, BatchNorm "
        "separate; an ONNX export folds BatchNorm into the convolutions before it (one parameter fewer per "
        "BN channel after a convolution without bias).",
    ]
    if steps := final_steps_note(report):
        parts += ["", f"{steps[0].upper()}{steps[1:]}."]
    if cand := candidates_note(report):
        cand = shown(cand, names)
        parts += ["", f"{cand[0].upper()}{cand[1:]}."]
    failed = bool((report.get("surgery") or {}).get("check_failed"))
    if report.get("verify"):
        v = report["verify"]
        agree = "-" if v.get("top1_agreement") is None else f"{v['top1_agreement']:.2%}"
        parts += ["", f"Surgery check (slim against the trained network on test images): largest output "
                  f"difference {v['max_abs_diff']:.3g}, top-1 agreement {agree}."]  # fmt: skip
    if failed:
        from edgeslim.surgery.prune import check_failed_message  # (the run's error line says the same)

        parts[-1] += (
            f" **The check failed**: {check_failed_message('network', report['surgery'])}. `{SLIM_FILE}` was not "
            f"written, and the slim column is what that network would have been. `{TRAINED_FILE}` can be pruned "
            "once that is fixed."
        )
    warnings = [report["collapse"].get("message") or ""] if report.get("collapse") else []
    # (an approximate fold the check measured, the budget's, and a latency target missed as measured)
    warnings += [(report.get(k) or {}).get("warning") or "" for k in ("verify", "budget", "latency")]
    warnings = [shown(w, names) for w in warnings if w]  # (the terminal's words: flags on the CLI)
    if warnings:
        parts += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    lam = s.get("lam_final", s.get("lam"))
    pen, beta = prox_text(s, report.get("history"))
    restart = s.get("recovery_lr")
    training = [
        f"- penalty {pen}, lambda {lam:.4g}" + (" (set by the budget controller)" if report.get("budget") else "")
        + f", {beta}",
        f"- prox_step `{s.get('prox_step')}`, importance `{s.get('importance')}`"
        + (f", recovery_lr {restart:g} (the recovery restarted at it)" if restart else "")
        + (", recovery_lr off (the recovery went on with the schedule)"
           if not restart and (s.get("phase_steps") or {}).get("recovery_steps") else ""),
        f"- {cfg['epochs']} epochs, batch {cfg['batch_size']}, learning rate {cfg['lr']:g} ({cfg['schedule']}), "
        f"seed {cfg['seed']}",
    ]  # fmt: skip
    if shape := report.get("input_shape"):  # (a trial could not tell the size the photos were trained at)
        training.append(f"- images of {shape[1]}x{shape[2]} pixels (height x width), {shape[0]} channel(s)")
    if norm := report.get("normalization"):
        training.append(f"- input normalization: {normalization_text(norm['mean'], norm['std'])}")
    ph = s.get("phase_steps") or {}
    phases = (
        [f"the first {ph['warmup_steps']} step(s) without the proximal step"]
        if ph.get("warmup_steps")
        else []
    )
    phases += (
        [f"the last {ph['recovery_steps']} recovering with the zeros held"]
        if ph.get("recovery_steps")
        else []
    )
    if phases:
        training.append(f"- phases ({ph['total_steps']} steps in all): {', '.join(phases)}")
    d = report.get("data_args") or {}
    if d:
        training.append(
            f"- data: {d.get('data_name')}" + (f" from {d['data_dir']}" if d.get("data_dir") else "")
            + (f", {d['subset']:,} training images" if d.get("subset") else "")
            + (f", {d['test_subset']:,} test images" if d.get("test_subset") else "")
        )  # fmt: skip
    if h := report.get("head"):  # (num_classes: the docs promise the line; the terminal said it only)
        training.append(
            f"- head: {h['head']}, {h['from']} -> {h['to']} (the classifier head replaced for the data's classes, "
            "trained from scratch)"
        )
    if report.get("budget"):
        b = report["budget"]
        training.append(
            f"- budget: {b['target_fraction']:.1%} of the dense {b['metric']}; the controller reached "
            f"{b['before_projection_fraction']:.1%} of dense, {b['achieved_fraction']:.1%} after its final projection "
            f"({b['projection_removed_channels']} channel(s) removed by it)"
        )
    if report.get("alignment"):
        a = report["alignment"]
        why = (
            f"the alignment of profile {a['profile']} at {a['precision']}"
            + (", the default; a device's profile gives its own" if a.get("default_profile") else "")
            if a["from"] == "profile"
            else "as given"
        )
        if a.get("reduced_from"):  # (the profile's multiple, halved until the budget was reachable)
            why += f"; {a['reduced_from']} cannot reach the budget"
            if a.get("zero_invariant_keeps"):
                why = shown(Notice(f"{why} without zero_invariant", "zero_invariant"), names)
        training.append(f"- channel counts kept in multiples of {a['round_to']} ({why})")
    parts += ["", "## Training", "", *training]
    lat, pl = report.get("latency"), report.get("predicted_latency")
    if lat and lat.get("measured"):
        parts += [
            "",
            f"## Latency at batch {lat['batch']} ({lat['backend']}, {lat['threads']} thread(s), milliseconds)",
            "",
            markdown_table(["", "target", "predicted", "measured"], latency_check_rows(lat)),
            "",
            f"Measured / target {lat['measured_over_target']:.3f}, speedup {lat['speedup']:.2f}x. The target is "
            "the budget's fraction of the measured dense latency; during training the budget tracked the same "
            "fraction of the lookup's (predicted) dense latency.",
        ]
    elif lat:
        parts += ["", "## Latency", "", f"Predicted at batch {lat['batch']}: {lat['predicted_dense_ms']:.4g} -> "
                  f"{lat['predicted_ms']:.4g} ms (not a measurement); measure it on the device: `{lat['command']}`"]  # fmt: skip
    if pl:
        speed = f"{pl['speedup']:.2f}x" if pl.get("speedup") else "-"
        parts += ["", f"Predicted on {pl['profile']} ({pl['precision']}), per batch of {pl['batch']}: "
                  f"{pl['dense_ms']:.4g} -> {pl['slim_ms']:.4g} ms ({speed}); a roofline estimate, not a measurement."]  # fmt: skip
    layers = [
        [r["name"], r["channels"], r["kept"], r.get("after_surgery", r["kept"])] for r in report["layers"]
    ]
    parts += [
        "",
        "## BatchNorm layers",
        "",
        markdown_table(
            ["layer", "channels", "nonzero", "after surgery (not written)" if failed else "after surgery"],
            layers,
        ),
    ]
    parts += [
        "",
        "## Files",
        "",
        f"- `{SLIM_FILE}`: not written (surgery's check failed, see above)"
        if failed
        else f"- `{SLIM_FILE}`: the slim network (load it, export it to ONNX)",
        "- `trained.pt`: the trained network at full width, its zero channels in place",
        "- `report.json`: everything here, for programs; `report.md`: this page",
        f"- `{TRAIN_DIR}/`: the trainer's checkpoint (with xi, for resume) and `{LOG_FILE}`, one record per epoch",
    ]
    if report.get("latency"):
        parts.append(
            "- `dense.onnx`, `slim.onnx`: both networks as the latency check exported and timed them"
        )
    table = ((report.get("budget") or {}).get("settings") or {}).get("latency_table")
    if table:
        parts.append(f"- `{Path(table).name}`: the latency lookup the budget priced channels with")
    plots = report.get("plots") or {}
    if plots:
        parts += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    env = report.get("environment") or {}
    if env:
        vers = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
        parts += ["", "## Environment", "", f"- {env.get('device')}, {env.get('threads')} thread(s); {vers}"]
    return "\n".join(parts) + "\n"


#: the narrowest span of the |gamma| histogram, as the ratio of its ends: scales all near one value
#: (lambda 0: 0.49 to 0.51) fill several of its bars
GAMMA_HIST_MIN_RATIO = 1.1


def gamma_hist_range(lo: float, hi: float) -> tuple[float, float]:
    """The ends of the |gamma| histogram's log axis: the nonzero scales' ``lo`` to ``hi``, widened about
    their middle to :data:`GAMMA_HIST_MIN_RATIO` where narrower (it was padded to a decade above ``lo``,
    which put 448 scales near 0.5 in one bar of 0.45 to 5)."""
    lo = max(lo, 1e-6)
    hi = max(hi, lo)
    if hi / lo < GAMMA_HIST_MIN_RATIO:
        mid, half = math.sqrt(lo * hi), math.sqrt(GAMMA_HIST_MIN_RATIO)
        lo, hi = mid / half, mid * half
    return lo, hi


def plot_report(report: dict[str, Any], gammas: torch.Tensor, out: Path) -> dict[str, str]:
    """``channels.png`` (channels kept per BN layer) and ``gamma_hist.png`` (|gamma| histogram)."""
    files = {}
    rows = report["layers"]
    names = [r["name"] for r in rows]
    fig, ax = new_figure(figsize=(max(7.0, 0.35 * len(rows) + 2), 3.8))
    x = range(len(rows))
    ax.bar(x, [r["channels"] for r in rows], color="#d0d0d0", label="dense")
    kept = [r.get("after_surgery", r["kept"]) for r in rows]
    ax.bar(x, kept, color="#2a7ab0", label="kept")
    ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("BN channels")
    ch = report["channels"]
    headline = f"{report['arch']}: {ch['slim']}/{ch['dense']} BN channels kept ({ch['slim'] / max(ch['dense'], 1):.0%})"
    shares = [
        f"{label} {report[key]['slim'] / report[key]['dense']:.0%}"
        for key, label in (("macs", "MACs"), ("params", "params"))
        if (report.get(key) or {}).get("dense")
    ]
    if shares:
        headline += f"; {', '.join(shares)} of dense"
    acc = report.get("accuracy") or {}
    collapse = report.get("collapse") or {}
    if acc.get("slim") is not None:
        headline += f"\ntest accuracy {acc['slim']:.1%} slim, {acc['trained']:.1%} trained"
        if collapse.get("collapsed"):
            headline += ": COLLAPSED (near chance), see report.json"
    ax.set_title(headline, fontsize=9, color="#b03a2e" if collapse.get("collapsed") else "black")
    ax.set_xlabel("BN layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["channels"] = save_figure(fig, out / CHANNELS_PNG).name

    # |gamma| after finalize: the exact zeros as their own bar, the nonzero scales on a log axis
    nz = gammas[gammas > 0].numpy()
    zeros = int((gammas == 0).sum())
    fig, (az, ax) = new_figure(1, 2, figsize=(7, 3.4), gridspec_kw={"width_ratios": [1, 5]}, sharey=True)
    az.bar([0], [zeros], color="#c0392b", width=0.6)
    az.set_xticks([0], ["exactly 0"])
    az.set_xlim(-0.8, 0.8)
    az.set_ylabel("channels")
    az.annotate(str(zeros), (0, zeros), ha="center", va="bottom", fontsize=9)
    if nz.size:
        lo, hi = gamma_hist_range(float(nz.min()), float(nz.max()))
        bins = torch.logspace(math.log10(lo), math.log10(hi), 41).numpy()
        ax.hist(nz, bins=bins, color="#2a7ab0")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        plain_log_axis(ax.xaxis, lo, hi)
    ax.set_xlabel("|gamma| of the kept channels (log scale)")
    fig.suptitle(
        f"BN scales after finalize: {zeros} of {zeros + nz.size} exactly zero ({zeros / max(zeros + nz.size, 1):.0%})",
        fontsize=10,
    )
    fig.tight_layout()
    files["gamma_hist"] = save_figure(fig, out / GAMMA_HIST_PNG).name
    return files


# ----------------------------------------------------------------------------- budget glue
def controller_for_slim(
    model: nn.Module,
    slimmer: Any,
    budget: dict[str, Any] | Any,
    bundle: Any,
    config: Any,
    example_input: torch.Tensor,
    *,
    base_lambda: float | None = None,
    round_to: int = 1,
    probe_size: int = 128,
    total_steps: int | None = None,
) -> Any:
    """The controller for :func:`edgeslim.slim.slim_model`: total steps from the trainer's
    loader (or ``total_steps``; a slimmer in phases gives it the sparsification phase), a probe of ``probe_size`` training
    images (no augmentation) for the loss guard."""
    from edgeslim.channels.norm import CALIB_BATCHES
    from edgeslim.sparsity.budget import BudgetSettings, build_controller

    settings = budget if isinstance(budget, BudgetSettings) else BudgetSettings.from_dict(budget)
    total = (
        total_steps if total_steps is not None else config.epochs * steps_per_epoch(bundle, config.batch_size)
    )
    device = example_input.device
    x, y = next(iter(bundle.loader("train", probe_size, shuffle=True, augment=False, seed=2, device=device)))
    calib = bundle.calibration_batches(CALIB_BATCHES, seed=3, device=device)
    return build_controller(
        model, slimmer, settings, example_input, total, probe=(x, y),
        base_lambda=float(base_lambda or 0.0), round_to=round_to, calib=calib,
        warn=False,  # (the report's budget warning, counted after surgery, says it once)
    )  # fmt: skip


def plot_trajectory(
    report: dict[str, Any],
    path: str | Path,
    final_accuracy: float | None = None,
    measured_fraction: float | None = None,
) -> Path:
    """PNG: target, budget and achieved resource per epoch (left), mu and test accuracy per epoch
    (right), with ``final_accuracy`` (the slim network's, after the final projection, BN re-estimation
    and surgery) marked at the end: a reader took the last epoch's accuracy for the result. The last
    epoch's R is the controller's, before the final projection, which is drawn as a step to the result
    (a trial's plot showed 49.95% tracked where the controller had reached 66.6%); a latency budget's R is
    predicted, and ``measured_fraction`` (the latency check's slim / dense) is marked beside it."""
    traj = report["trajectory"]
    ep = [t["epoch"] for t in traj]
    fig, (a1, a2) = new_figure(1, 2, figsize=(10, 4.0))
    start = [0, *ep]  # epoch 0: the dense network the run starts from (R = B = 1)
    a1.plot(start, [traj[0]["target"], *(t["target"] for t in traj)], "k--", label="target")
    # (a wide pale band under the achieved line: where R follows B(t), a thin line was hidden behind it)
    a1.plot(start, [1.0, *(t["budget"] for t in traj)], color="#f0a030", lw=6, alpha=0.45, zorder=1,
            solid_capstyle="round", label="budget B(t)")  # fmt: skip
    achieved = [1.0, *(t["resource"] for t in traj)]
    before = report.get("before_projection_fraction")
    # (the last epoch's entry is logged after the final projection: the controller's own R is the one before)
    projected = bool(report.get("projection_removed_channels")) and before is not None and ep
    if projected:
        achieved[-1] = before
    latency = report.get("metric") == "latency"
    word = "predicted R" if latency else "achieved R"
    a1.plot(start, achieved, "o-", color="#2a7ab0", label=f"{word} (the controller's)")
    if projected:
        a1.plot([ep[-1], ep[-1]], [before, report["achieved_fraction"]], "-", color="#c0392b", lw=1.5)
        a1.plot([ep[-1]], [report["achieved_fraction"]], "v", color="#c0392b", ms=8,
                label=f"final projection: {report['achieved_fraction']:.1%}")  # fmt: skip
    else:
        a1.axhline(report["achieved_fraction"], color="#c0392b", lw=0.8, label="after final projection")
    if measured_fraction is not None and ep:
        a1.plot([ep[-1]], [measured_fraction], "D", color="#145a32", ms=7, ls="none",
                label=f"measured slim / dense: {measured_fraction:.1%}")  # fmt: skip
    a1.set_xlabel("epoch (0: the dense start)")
    a1.set_ylabel(f"{report['metric']} / dense" + (" (predicted)" if latency else ""))
    a1.legend(fontsize=8)
    reached = f"{'predicted' if latency else 'reached'} {report['achieved_fraction']:.1%}"
    if measured_fraction is not None:
        reached += f", measured {measured_fraction:.1%}"
    a1.set_title(
        f"budget {report['target_fraction']:.0%} of dense {report['metric']}: {reached}", fontsize=10
    )
    a2.plot(ep, [t["mu"] for t in traj], "o-", color="#8e44ad", label="mu (budget multiplier)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("mu: extra shrink while over budget")
    a2.set_ylim(bottom=min(0.0, *(t["mu"] for t in traj)))  # (a flat zero sat mid-axis, below it negative)
    a3 = a2.twinx()
    a3.plot(ep, [100 * (t["test_acc"] or float("nan")) for t in traj], "s-", color="#27ae60",
            label="test accuracy at each epoch's end")  # fmt: skip
    if final_accuracy is not None and ep:  # (beside the last epoch's square, which it hid when drawn on it)
        a3.plot([ep[-1] + 0.3], [100 * final_accuracy], "*", ms=14, color="#145a32", ls="none",
                label=f"slim network: {final_accuracy:.1%} (after the final steps)")  # fmt: skip
    a3.set_ylabel("test accuracy (%)")
    lines = a2.get_lines() + a3.get_lines()
    # below the axes: "best" sees only mu's line and put the box over the accuracy's points
    a2.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)  # fmt: skip
    a2.set_title("dual multiplier mu (docs/budget.md) and accuracy", fontsize=10)
    from matplotlib.ticker import MaxNLocator

    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs
    if ep:  # (one epoch: matplotlib spread the axis 0.945..1.050 around it)
        a2.set_xlim(ep[0] - 0.5, ep[-1] + 0.6)
    fig.tight_layout()
    return save_figure(fig, path)
