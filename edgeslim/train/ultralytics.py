"""Proximal slimming inside ultralytics' own trainer (YOLO detection, segmentation, classification).

``edgeslim slim`` trains image classifiers with its own loop; a YOLO is trained by ultralytics.
:class:`UltralyticsSlimming` puts :class:`~edgeslim.sparsity.prox.ProximalSlimming` into that
trainer through its callbacks, so ``yolo.train(...)`` runs as usual and the checkpoints it writes
(``last.pt``, ``best.pt``: its EMA weights) carry exact zero BN scales, ready for
``edgeslim prune``::

    from ultralytics import YOLO
    from edgeslim.train.ultralytics import UltralyticsSlimming

    yolo = YOLO("runs/detect/train/weights/best.pt")  # trained weights (a yaml model is re-initialised)
    slimming = UltralyticsSlimming(budget={"metric": "macs", "target": "0.5"}).attach(yolo)  # or shrink=
    yolo.train(data="my_data.yaml", epochs=50)
    print(slimming.summary())  # BN channels exactly zero per epoch, where the budget ended

then ``edgeslim prune yolo:runs/detect/train2/weights/last.pt --trust-pickle -o slim.pt``.

Where it hooks in: the proximal step runs after every optimizer step (a step post-hook on the
trainer's optimizer, so gradient accumulation and skipped AMP steps are respected). Ultralytics
saves and validates an exponential moving average of the weights, which never reaches an exact
zero by itself: at every epoch end, before validation and saving, the channels the prox has
zeroed (``xi == 0``, emptied units keeping their strongest channel, as ``finalize`` does) are
set to exactly 0 in the EMA too (scale and, with ``zero_invariant``, shift), so the metrics
ultralytics reports are those of the network surgery will keep. At the end the live model is
finalized the same way.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeslim.channels.norm import CALIB_BATCHES, zero_flat
from edgeslim.errors import EdgeslimError
from edgeslim.sparsity.budget import BudgetSettings
from edgeslim.sparsity.prox import (
    DEFAULT_BETA,
    ProximalSlimming,
    coupled_bn_groups,
    lambda_for_shrink,
    parse_phase,
)

log = logging.getLogger(__name__)

#: the trainer events this class handles, in the order ultralytics runs them
EVENTS = ("on_train_start", "on_train_epoch_end", "on_train_end")


class UltralyticsSlimming:
    """Proximal slimming of a YOLO's BN scales while ultralytics trains it.

    ``shrink``: the total shrink the prox applies over the planned learning rates of the
    sparsification phase (0.7-1.0 for a first try; :func:`~edgeslim.sparsity.prox.lambda_for_shrink`),
    or ``lam`` directly. ``warmup`` / ``recovery``: the phases without the prox at the start and
    with the zero pattern frozen at the end (see :class:`ProximalSlimming`), as in ``edgeslim slim``:
    a number of epochs (``1``, ``0.5``) or a share of training (``"10%"``); the learning rate is
    ultralytics' own throughout (no restart). ``zero_invariant`` (default True): each channel's
    scale and shift go to zero together, so a removed channel outputs exactly 0 (SiLU(0) = 0) and
    surgery folds nothing. Coupled channels (residual adds, C2f's split) are penalised together,
    as surgery removes them. Other keyword arguments go to :class:`ProximalSlimming` (``penalty``,
    ``prox_step``, penalty parameters).
    ``budget``: a MAC or parameter budget (:class:`~edgeslim.sparsity.budget.BudgetSettings`)
    that a controller meets by the last epoch, whose end projects onto it exactly (ultralytics'
    early stopping is switched off so that the last epoch comes); the BN statistics of the saved
    network are then re-estimated on a few training batches. ``round_to``: keep channel counts in
    multiples of this, with trained channels. ``threads``: CPU threads for training (ultralytics
    sets its own when it builds the trainer). ``warn``: log a warning at the end of training when the
    budget was missed or overshot (:func:`~edgeslim.sparsity.budget.budget_warning`, what
    ``edgeslim slim`` warns).

    The network to cut is ``last.pt`` (the end of the run; ``best.pt`` is the epoch of the best
    mAP, which slimming lowers: often an early, less sparse one). One device only; ultralytics'
    ``resume=True`` is refused (the slimming state is not in its checkpoint).
    """

    def __init__(
        self,
        shrink: float | None = 1.0,
        *,
        lam: float | None = None,
        beta: float = DEFAULT_BETA,
        warmup: float | str = "10%",
        recovery: float | str = 0,
        zero_invariant: bool = True,
        budget: BudgetSettings | dict[str, Any] | None = None,
        round_to: int = 1,
        threads: int | None = None,
        warn: bool = True,
        **slimmer_kwargs: Any,
    ) -> None:
        if (lam is None) == (shrink is None):
            raise EdgeslimError(
                "give either shrink (a planned total shrink) or lam, not both", param=("shrink", "lam")
            )
        if lam is not None and not lam >= 0:
            raise EdgeslimError(f"lam must be >= 0, got {lam}", param="lam")
        if shrink is not None and not shrink > 0:
            raise EdgeslimError(f"shrink must be > 0, got {shrink}", param="shrink")
        self.phases = {"warmup": parse_phase(warmup, "warmup"), "recovery": parse_phase(recovery, "recovery")}
        fractions = [v for kind, v in self.phases.values() if kind == "fraction"]
        if sum(fractions) >= 1.0:
            raise EdgeslimError(
                f"warmup + recovery must leave steps to sparsify, got {warmup} + {recovery}",
                param=("warmup", "recovery"),
            )
        if round_to < 1:
            raise EdgeslimError(f"round_to must be >= 1, got {round_to}", param="round_to")
        if isinstance(budget, dict):
            budget = BudgetSettings.from_dict(budget)
        if budget is not None:
            budget.validate()
        self.budget, self.round_to, self.threads, self.warn = budget, int(round_to), threads, warn
        self.controller: Any = None
        self.shrink, self.lam, self.beta, self.zero_invariant = shrink, lam, beta, zero_invariant
        self.slimmer_kwargs = slimmer_kwargs
        self.slimmer: ProximalSlimming | None = None
        self._threads_before = 0  # torch's thread count before on_train_start set ``threads``
        self.history: list[dict[str, Any]] = []
        self.final: Any = None  # the FinalizeReport of the live model
        self._handle: Any = None

    # ------------------------------------------------------------------ wiring
    def attach(self, yolo: Any) -> UltralyticsSlimming:
        """Register the callbacks on an ultralytics ``YOLO`` (or ``Model``); returns ``self``."""
        if not hasattr(yolo, "add_callback"):
            raise EdgeslimError(
                f"attach() takes an ultralytics YOLO model (ultralytics.YOLO), got {type(yolo).__name__}"
            )
        for event in EVENTS:
            yolo.add_callback(event, getattr(self, event))
        return self

    # ------------------------------------------------------------------ callbacks
    def on_train_start(self, trainer: Any) -> None:
        """Build the slimmer on the model ultralytics trains and hook the optimizer's steps."""
        if getattr(trainer, "world_size", 1) > 1:
            raise EdgeslimError(
                "slimming inside ultralytics runs on one device (world_size 1); give one device"
            )
        if int(trainer.start_epoch) > 0:
            raise EdgeslimError(
                "ultralytics resumed this run, but the slimming state is not in its checkpoint; start the "
                "slimming run again from the model it started from"
            )
        if self.threads:  # (ultralytics set its own building the trainer; restored at the end)
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        stopper = getattr(trainer, "stopper", None)
        if stopper is not None and math.isfinite(float(getattr(stopper, "patience", math.inf))):
            stopper.patience = math.inf  # the phases and the budget's taper need the last epoch
            log.info("slimming: ultralytics' early stopping is off (the run ends at its last epoch)")
        model = _unwrap(trainer.model)
        lrs, positions = self.planned_steps(trainer)
        steps = len(lrs)
        epochs = int(trainer.epochs) - int(trainer.start_epoch)
        warm, rec = (self._phase_steps(name, positions, epochs) for name in ("warmup", "recovery"))
        if warm + rec >= steps:
            raise EdgeslimError(
                f"the warm-up and recovery phases ({warm} + {rec} optimizer steps) leave none of the run's "
                f"{steps} to sparsify; shorten them or train longer",
                param=("warmup", "recovery"),
            )
        sparsify = lrs[warm : steps - rec]
        if self.lam is None and not any(lr > 0 for lr in sparsify):
            nb = len(trainer.train_loader)
            nw = _warmup_batches(trainer, nb)
            raise EdgeslimError(
                f"this run takes {steps} optimizer step{'' if steps == 1 else 's'} ({nb} batches per pass over the "
                "images, gradients accumulated to ultralytics' nominal batch), none at a learning rate above 0 "
                f"between the warm-up and recovery phases (ultralytics' own warm-up raises it from 0 over {nw} "
                "batches): train more epochs, or on more images",
                param="epochs",
            )
        lam = self.lam if self.lam is not None else lambda_for_shrink(float(self.shrink), sparsify, self.beta)
        imgsz = trainer.args.imgsz if isinstance(trainer.args.imgsz, int) else max(trainer.args.imgsz)
        example = torch.zeros(1, 3, int(imgsz), int(imgsz), device=next(model.parameters()).device)
        self.slimmer = slimmer = ProximalSlimming(
            model,
            lam=lam,
            beta=self.beta,
            zero_invariant=self.zero_invariant,
            groups=coupled_bn_groups(model, example),
            warmup_steps=warm,
            recovery_steps=rec,
            total_steps=steps,
            **self.slimmer_kwargs,
        )
        if self.budget is None:
            slimmer.check_threshold(sparsify)  # mcp / scad conditions on tau, before the first epoch
        self.history.clear()
        self.controller = controller = None
        if self.budget is not None:  # a controller sets lambda and the weights (docs/budget.md)
            from edgeslim.sparsity.budget import build_controller

            # its clock: the sparsification phase; its projection: before the freeze
            self.controller = controller = build_controller(
                model, slimmer, self.budget, example, steps, base_lambda=float(self.lam or 0.0),
                round_to=self.round_to, warn=False,  # (on_train_end warns, where self.warn)
            )  # fmt: skip
            controller.on_train_start(model, trainer.optimizer)
        if controller is None:  # aligned channel counts, kept with trained channels (a controller does)
            from edgeslim.sparsity.align import align_channels

            align_channels(slimmer, model, example, self.round_to)

        def after_step(opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            found_inf = getattr(opt, "found_inf", None)  # a fused optimizer under AMP steps on inf gradients
            if found_inf is not None and float(found_inf) != 0:
                return
            slimmer.step(opt)
            if controller is not None:
                controller.after_step(model, opt)

        self._handle = trainer.optimizer.register_step_post_hook(after_step)
        log.info(
            "proximal slimming: %d BN channels, lambda %.4g, %d planned optimizer steps (%d warm-up, %d recovery)",
            slimmer.total, lam, steps, warm, rec,
        )  # fmt: skip

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Zero the prox's zero channels in the EMA (what ultralytics validates and saves); at the
        last epoch with a budget, project onto it first and re-estimate the EMA's BN statistics."""
        slimmer = self._require()
        last_epoch = int(trainer.epoch) + 1 >= int(trainer.epochs)
        if self.controller is not None and last_epoch:
            self.controller.on_train_end(_unwrap(trainer.model))  # the exact projection onto the budget
        dead = slimmer.zero_mask()
        ema = getattr(getattr(trainer, "ema", None), "ema", None)
        if ema is not None:
            zero_channels(ema, slimmer.names, slimmer.offsets, dead, self.zero_invariant)
            if self.controller is not None and last_epoch:
                from edgeslim.channels.norm import recalibrate_bn

                recalibrate_bn(ema, _calibration_images(trainer, CALIB_BATCHES))
        row = {
            "epoch": int(trainer.epoch) + 1,
            "optimizer_steps": slimmer.t,  # (cumulative: the run's steps up to the end of this epoch)
            "phase": slimmer.phase_at(max(slimmer.t - 1, 0)),
            "zero": int(dead.sum()),  # in xi, and from now in the EMA that ultralytics validates and saves
            "total": slimmer.total,
            "lambda": slimmer.lam,
        }
        if self.controller is not None:  # the resource the kept channels cost, of the dense network's
            c = self.controller
            row["budget_fraction"] = c.resource.of_xi(c.magnitude()) / c.resource.dense
        self.history.append(row)
        log.info(
            "epoch %d: %d of %d BN channels exactly zero (%s phase)",
            row["epoch"], row["zero"], row["total"], row["phase"],
        )  # fmt: skip

    def on_train_end(self, trainer: Any) -> None:
        """Finalize the live model (exact zeros where ``xi`` is zero) and unhook the optimizer."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._threads_before:
            torch.set_num_threads(self._threads_before)
            self._threads_before = 0
        self.final = self._require().finalize(warn=False)  # (the slim report says when nothing reached zero)
        if self.warn and self.controller is not None:  # a budget missed or overshot (as edgeslim slim says)
            from edgeslim.sparsity.budget import budget_warning

            if line := budget_warning(self.summary()["budget"]):
                log.warning("%s", line)

    # ------------------------------------------------------------------ helpers
    def planned_steps(self, trainer: Any) -> tuple[list[float], list[float]]:
        """The BN scales' learning rate at each optimizer step the run will take, and where in the
        run each falls (in epochs from its start), as ultralytics (8.x) schedules them: per-epoch
        factor ``lf``; in the warm-up iterations a rate rising from 0 and a gradient accumulation
        rising to its nominal value."""
        group = _group_of(trainer.optimizer, self._first_bn_weight(trainer))
        base = float(group.get("initial_lr", group["lr"]))
        nb = len(trainer.train_loader)
        acc0 = max(int(getattr(trainer, "accumulate", 1)), 1)
        nw = _warmup_batches(trainer, nb)
        lf = getattr(trainer, "lf", None)
        lrs: list[float] = []
        positions: list[float] = []
        last = -1
        start = int(trainer.start_epoch)
        for epoch in range(start, int(trainer.epochs)):
            target = base * (float(lf(epoch)) if callable(lf) else 1.0)
            for i in range(nb):
                ni = i + nb * epoch
                acc, lr = acc0, target
                if nw > 0 and ni <= nw:  # (as ultralytics computes them)
                    acc = max(1, int(np.interp(ni, [0, nw], [1, acc0]).round()))
                    lr = float(np.interp(ni, [0, nw], [0.0, target]))
                if ni - last >= acc:
                    lrs.append(lr)
                    positions.append(epoch - start + i / nb)
                    last = ni
        return (lrs, positions) if lrs else ([base], [0.0])

    def _phase_steps(self, name: str, positions: list[float], epochs: int) -> int:
        """Optimizer steps of phase ``name`` in a run of ``epochs`` epochs whose steps fall at
        ``positions``: a share of them, or those within its epochs (from the start for the warm-up,
        from the end for the recovery)."""
        kind, value = self.phases[name]
        if kind == "fraction":
            return int(value * len(positions))
        if name == "warmup":
            return sum(1 for x in positions if x < value)
        return sum(1 for x in positions if x >= max(epochs - value, 0.0))

    @staticmethod
    def _first_bn_weight(trainer: Any) -> nn.Parameter:
        for m in _unwrap(trainer.model).modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                return m.weight
        raise EdgeslimError("the model has no affine BatchNorm layers; proximal slimming acts on BN scales")

    def _require(self) -> ProximalSlimming:
        if self.slimmer is None:
            raise EdgeslimError(
                "the slimming callbacks ran before on_train_start; attach() them before train()"
            )
        return self.slimmer

    def summary(self) -> dict[str, Any]:
        """Per-epoch zero counts, the final report of the live model and, with a budget, where it ended."""
        out = {"epochs": list(self.history), "final": None if self.final is None else self.final.to_dict()}
        if self.controller is not None:
            c, dense = self.controller, self.controller.resource.dense
            achieved = c.resource.of_xi(c.magnitude())
            ended = c.resource_before_projection if c.resource_before_projection is not None else achieved
            out["budget"] = {"metric": c.settings.metric, "target_fraction": c.target / dense,
                             "achieved_fraction": achieved / dense, "dense": dense, "target": c.target,
                             "before_projection_fraction": ended / dense,
                             "achieved": achieved, "projection_removed_channels": c.projection_removed,
                             **c.cap_facts()}  # fmt: skip
            if (
                c.settings.metric == "latency"
            ):  # seconds per batch: a roofline prediction, or a measured table's
                out["budget"].update(batch=c.settings.batch, profile=c.settings.profile,
                                     predicted=c.settings.latency_table is None)  # fmt: skip
        return out


def zero_channels(
    model: nn.Module, names: list[str], offsets: list[int], dead: torch.Tensor, with_shift: bool
) -> int:
    """Set the BN scales flagged in ``dead`` (flat over ``names`` in order) to exactly 0 in ``model``
    (and their shifts, ``with_shift``); returns how many. ``model``'s BN layers are found by name."""
    mods = dict(model.named_modules())
    missing = [name for name in names if name not in mods]
    if missing:
        raise EdgeslimError(f"the EMA model has no layer {missing[0]}; it is not a copy of the trained model")
    bns = [mods[name] for name in names]
    if [b.weight.numel() for b in bns] != [b - a for a, b in zip(offsets, offsets[1:])]:
        raise EdgeslimError("the EMA model's BN layers differ in size from the trained model's")
    return zero_flat(((bn.weight, bn.bias) for bn in bns), dead, with_shift)


def _warmup_batches(trainer: Any, nb: int) -> int:
    """The batches of ultralytics' warm-up in a run of ``nb`` batches per epoch (-1: none)."""
    warmup = getattr(trainer, "_get_warmup_iterations", None)
    if callable(warmup):
        return int(warmup(nb))
    w = float(getattr(trainer.args, "warmup_epochs", 0) or 0)  # ultralytics before 8.4 computed it inline
    return max(round(w * nb), 100) if w > 0 else -1


def _calibration_images(trainer: Any, n: int) -> list[torch.Tensor]:
    """The images of the first ``n`` training batches, preprocessed as the trainer feeds them."""
    out = []
    for i, batch in enumerate(trainer.train_loader):
        if i >= n:
            break
        out.append(trainer.preprocess_batch(batch)["img"].float())
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP/DataParallel and ``torch.compile`` wrappers (as the EMA copy is)."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _group_of(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> dict[str, Any]:
    for group in optimizer.param_groups:
        if any(q is p for q in group["params"]):
            return group
    raise EdgeslimError("the optimizer does not train the BN scales; proximal slimming needs them")
