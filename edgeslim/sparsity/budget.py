"""Budget-targeted proximal slimming: reach a MAC, parameter or latency budget without a lambda.

A :class:`BudgetController` is a training hook that runs after the proximal update
(:class:`~edgeslim.sparsity.prox.ProximalSlimming`) and every ``every`` steps:

1. measures the exact resource ``R`` of the channels alive in ``xi``
   (:class:`~edgeslim.sparsity.resource.ResourceModel`, no tracing);
2. advances the taper clock ``c`` in [0, 1] (paused while the probe loss is degraded, but
   never behind the deadline ``taper_max``) and sets the budget
   ``B = R0 - (R0 - target) * c``;
3. ranks the alive channels by ``|xi| / cost`` and marks as *doomed* the weakest ones
   that must go for ``R`` to meet the budget one horizon ahead, ``B(c + dc_H)`` with
   ``H = HORIZON * total_steps`` steps (the exact projection of the resource model);
4. per-step shrink of channel i: ``tau_i = (max(s_ff, s_hold) * [i doomed] + s_unit * mu) * w_i``
   (0 for the strongest MIN_KEEP of every group). The feed-forward ``s_ff`` brings the
   median doomed channel to zero within ``H`` steps; ``s_hold`` = HOLD x its largest value
   keeps zeroed doomed channels from reviving; the
   multiplier ``mu`` (a cost-weighted l1 pressure on every removable channel, the
   Lagrangian term of the constraint) is updated by dual ascent on the normalised
   violation ``v = (R - B) / R0``: ``mu <- clip(mu + ETA * v * every / total_steps, 0, MU_MAX)``;
   the pressure applies only while ``R > B`` (under the budget it pauses, ``mu`` is kept),
   with ``s_unit`` = median initial ``|xi|`` / (``UNIT_FRACTION`` * total_steps): at
   ``mu = 1`` a median channel is shrunk to zero in ``UNIT_FRACTION`` of training. The slimmer
   gets ``lambda = base + s * (1/lr + beta)`` (``s = max_i tau_i``) and weights
   ``tau_i / s``, so the shrink does not depend on the lr schedule;
5. ``w_i`` = the channel's marginal cost ``dR/dk`` normalised to mean 1 over removable
   channels, clipped to [W_MIN, W_MAX] (channels surgery cannot remove: 0).

``BudgetSettings(controller="lagrangian")`` skips step 3 (no doomed set: the multiplier alone,
zero channels held); measured side by side in docs/budget.md, where the default won.

At the end of training, if ``R`` is still above the target, :meth:`finish` removes the alive
channels with the smallest ``|xi| / cost`` until ``R <= target`` and reports how many; BN
statistics are then re-estimated if channels changed late (:func:`recalibrate_bn`). All
constants are listed (and justified) in docs/budget.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from edgeslim.channels.hooks import TrainHook
from edgeslim.channels.norm import is_batchnorm, recalibrate_bn
from edgeslim.errors import EdgeslimError, Notice, Step
from edgeslim.sparsity.align import align_channels
from edgeslim.sparsity.prox import ProximalSlimming
from edgeslim.sparsity.resource import METRICS, ResourceModel
from edgeslim.sparsity.targets import parse_target
from edgeslim.utils.modes import training_mode

log = logging.getLogger(__name__)

#: dual-ascent gain per unit of training: a 5% violation held over 20% of training moves mu by 0.4
ETA = 40.0
#: mu = 1 shrinks a median channel to zero in this fraction of training
UNIT_FRACTION = 0.25
#: multiplier ceiling (anti wind-up: channels react with a delay)
MU_MAX = 20.0
#: look-ahead horizon (fraction of training): doomed channels reach zero within it
HORIZON = 0.05
#: doomed channels keep at least HOLD x the largest feed-forward shrink so far (no revival when R < B)
HOLD = 0.5
#: the strongest MIN_KEEP of every group are neither doomed nor shrunk (a layer keeps 30% of its channels)
MIN_KEEP = 0.3
#: clip of the normalised cost weights
W_MIN, W_MAX = 0.05, 10.0
#: EMA factor of the probe loss (per probe) and the relative degradation that pauses the taper
LOSS_EMA = 0.3
#: probes per training run (at most), never more often than every PROBE_MIN_STEPS steps
PROBES = 25
PROBE_MIN_STEPS = 5
#: BN statistics are re-estimated at the end on this many batches of 128 training images, if
#: channels were removed within the last max(RECAL_STEPS, RECAL_FRACTION * total) steps
#: (the running averages, momentum 0.1, have not caught up) or by the final projection, unless a
#: recovery phase of at least RECAL_STEPS steps trained on after the zero pattern froze
RECAL_STEPS = 50
RECAL_FRACTION = 0.05
#: MCP/SCAD need tau below g (resp. (a - 1) * l); the controller keeps tau under this fraction
TAU_CAP_FRACTION = 0.5
#: the share of the controller's updates that cap cut, from which its warnings name it as the cause
CAPPED_SHARE = 0.25
#: a budget run kept more than (1 + this) x its target: missed
BUDGET_MISS_TOLERANCE = 0.03
#: a budget run kept less than this x its target: overshot (the controller could not steer; a user trial
#: of 5 optimizer steps kept 40% of the MACs for a 50% target). Rounding to an alignment stays above it
#: (vgg-small at 50%: 46.9%)
BUDGET_OVERSHOOT_FACTOR = 0.9
#: budget controllers (BudgetSettings.controller)
CONTROLLERS = ("projection", "lagrangian")


@dataclass
class BudgetSettings:
    """What to reach (``metric``, ``target``) and how the taper runs (fractions of training)."""

    metric: str = "macs"
    target: str = "0.5"
    profile: str | None = None
    precision: str | None = None
    batch: int = 1
    latency_table: str | None = None
    taper_start: float = 0.1
    taper_end: float = 0.6
    taper_max: float = 0.85
    loss_tolerance: float = 0.1
    #: rank and weight channels by |xi| / cost**cost_exponent (1: proportional to the marginal cost)
    cost_exponent: float = 1.0
    #: what a channel's cost is measured in when channels are ranked and weighted: None (the budget's
    #: own metric) or another metric, e.g. "latency" (the lookup or profile) under a MAC budget
    price: str | None = None
    #: control interval in steps; 0: total_steps // 200, between 1 and 10
    every: int = 0
    #: "projection": the multiplier plus the doomed set (the weakest channels that must go one
    #: horizon ahead shrink to zero within it); "lagrangian": the multiplier alone (a cost-weighted
    #: pressure from dual ascent on R - B(t)); both end with the exact projection
    controller: str = "projection"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise EdgeslimError(
                f"unknown budget metric {self.metric!r}; choose one of: {', '.join(METRICS)}", param="metric"
            )
        parse_target(self.target, self.metric, field="target")
        if self.price is not None and self.price not in METRICS:
            raise EdgeslimError(
                f"price must be one of {', '.join(METRICS)}, got {self.price!r}", param="price"
            )
        if self.price == self.metric:  # the budget's own metric: no second model
            self.price = None
        if self.price is not None and self.cost_exponent == 0:
            raise EdgeslimError(
                "price has no effect with cost_exponent 0 (channels are then ranked by magnitude alone); "
                "drop one of them",
                param=("price", "cost_exponent"),
            )
        if "latency" in (self.metric, self.price) and not (self.profile or self.latency_table):
            what = "a latency budget" if self.metric == "latency" else "pricing channels in latency"
            raise EdgeslimError(
                f"{what} needs profile (roofline prediction, e.g. jetson-orin-nano-8gb) "
                "or latency_table (measured per-layer times)",
                param=("profile", "latency_table"),
            )
        if self.controller not in CONTROLLERS:
            raise EdgeslimError(
                f"controller must be one of {', '.join(CONTROLLERS)}, got {self.controller!r}",
                param="controller",
            )
        if not 0.0 <= self.taper_start < self.taper_end <= 1.0:
            raise EdgeslimError(
                f"taper_end must be in ({self.taper_start:g}, 1] (fraction of training), got {self.taper_end:g}",
                param="taper_end",
            )
        if not 0.0 <= self.cost_exponent <= 4.0:
            raise EdgeslimError(
                f"cost_exponent must be in [0, 4] (0: rank by magnitude only), got {self.cost_exponent:g}",
                param="cost_exponent",
            )
        self.taper_max = max(self.taper_max, self.taper_end)
        if self.taper_max > 1.0:
            raise EdgeslimError(f"taper_max must be <= 1, got {self.taper_max:g}", param="taper_max")
        if not self.loss_tolerance > 0:
            raise EdgeslimError(
                f"loss_tolerance must be > 0, got {self.loss_tolerance:g}", param="loss_tolerance"
            )
        if self.every < 0 or self.batch < 1:
            raise EdgeslimError("budget control interval and batch must be >= 1")


def absolute_target(settings: BudgetSettings, resource: ResourceModel) -> float:
    """The target in the resource's unit (a fraction of dense times the dense cost)."""
    kind, value = parse_target(settings.target, settings.metric)
    return value * resource.dense if kind == "fraction" else value


class BudgetUnreachable(EdgeslimError):
    """The target is below the narrowest network surgery can keep (at the resource's channel multiple)."""


#: a latency target this far below the narrowest network's measured time is refused before the lookup
#: (:func:`refuse_below_measured`); one nearer is left to the lookup (timing noise)
MEASURED_SLACK = 0.05


def _narrowest_words(round_to: int) -> str:
    """What a refusal of a target below the narrowest network names as that network."""
    if round_to > 1:
        return (
            f"the narrowest network with channel counts in multiples of {round_to} (the target's alignment) "
            "already costs"
        )
    return "one channel per group already costs"


def _measured_target_ms(settings: BudgetSettings, dense_ms: float) -> float:
    kind, value = parse_target(settings.target, "latency")
    return value * dense_ms if kind == "fraction" else value * 1e3


def below_measured(settings: BudgetSettings, dense_ms: float, narrowest_ms: float) -> bool:
    """Whether a latency target is below the narrowest network's time by more than :data:`MEASURED_SLACK`
    (:func:`refuse_below_measured` refuses it)."""
    return _measured_target_ms(settings, dense_ms) < narrowest_ms * (1 - MEASURED_SLACK)


def refuse_below_measured(
    settings: BudgetSettings,
    dense_ms: float,
    narrowest_ms: float,
    round_to: int,
    one_per_group_ms: float | None = None,
    zero_invariant_ms: float | None = None,
) -> None:
    """Refuse a latency target below the narrowest network's time (by more than :data:`MEASURED_SLACK`),
    both networks timed whole before a lookup is measured for the target
    (:func:`~edgeslim.pipelines.latency.measure_narrowest`): a review's run measured a lookup for 3
    minutes, then refused the target, keeping nothing. ``one_per_group_ms``: the network at one channel per
    group, timed where ``round_to`` > 1 (a smaller round_to is suggested only where it reaches the target).
    ``zero_invariant_ms``: the narrowest network at ``round_to`` with zero-invariant removability, timed
    where squeeze-excitation gates channels the run keeps (zero_invariant is suggested where it reaches
    the target)."""
    target_ms = _measured_target_ms(settings, dense_ms)
    fraction = parse_target(settings.target, "latency")[0] == "fraction"
    budget = f"the budget {target_ms:.3g} ms" + (
        f" ({target_ms / dense_ms:.0%} of dense)" if fraction else ""
    )
    if target_ms >= dense_ms:  # (an absolute target)
        raise EdgeslimError(
            f"{budget} is not below the dense model ({dense_ms:.3g} ms, timed here as a whole "
            "network); nothing to remove: give a smaller target",
            param="target_latency",
        )
    if not below_measured(settings, dense_ms, narrowest_ms):
        return
    finer_helps = (
        round_to > 1
        and one_per_group_ms is not None
        and not below_measured(settings, dense_ms, one_per_group_ms)
    )
    gated_help = zero_invariant_ms is not None and not below_measured(settings, dense_ms, zero_invariant_ms)
    if gated_help:
        fix = zero_invariant_fix(
            f"the narrowest network then times {zero_invariant_ms:.3g} ms, {zero_invariant_ms / dense_ms:.2%} of dense"
        )
    elif finer_helps:
        fix = (
            f"give a larger target, or a smaller round_to (one channel per group: {one_per_group_ms:.3g} ms)"
        )
    else:
        fix = "give a target at least that large" + (
            f"; one channel per group would cost {one_per_group_ms:.3g} ms ({one_per_group_ms / dense_ms:.2%}), "
            "still above the target"
            if round_to > 1 and one_per_group_ms is not None
            else ""
        )
    raise BudgetUnreachable(
        f"{budget} is unreachable: {_narrowest_words(round_to)} {narrowest_ms:.3g} ms "
        f"({narrowest_ms / dense_ms:.2%} of dense, {dense_ms:.3g} ms; both timed here as whole networks, before "
        f"a latency lookup was measured); {fix}",
        param=("target_latency", "zero_invariant")
        if gated_help
        else ("target_latency", "round_to")
        if finer_helps
        else "target_latency",
    )


def resolve_target(settings: BudgetSettings, resource: ResourceModel) -> float:
    """The absolute target; errors if it is not below the dense model or not reachable."""
    target = absolute_target(settings, resource)
    d, field = resource.describe, f"target_{settings.metric}"
    if target >= resource.dense:
        raise EdgeslimError(
            f"the budget {d(target)} is not below the dense model ({d(resource.dense)}); "
            "nothing to remove: give a smaller target",
            param=field,
        )
    if target < resource.minimum:
        least = _narrowest_words(resource.round_to)
        finest = resource.narrowest(1) if resource.round_to > 1 else resource.minimum
        finer_helps = resource.round_to > 1 and finest <= target
        fix = (
            "give a larger target, or a smaller round_to"
            if finer_helps
            else "give a target at least that large"
            + (
                ""
                if resource.round_to <= 1
                else f"; without the channel multiple, one channel per group would cost {finest / resource.dense:.1%}, "
                "still above the target"
                if finest < resource.minimum
                else f"; one channel per group would cost {finest / resource.dense:.1%}, no less (thin layers run "
                "no faster here)"
            )
        )
        zi = resource.zero_invariant  # (squeeze-excitation-gated channels kept only for their shifts)
        gated_help = zi is not None and zi.narrowest(resource.round_to) <= target
        if gated_help:
            fix = zero_invariant_fix(
                f"the narrowest network costs {zi.narrowest(resource.round_to) / resource.dense:.1%}"
            )
        steps: tuple[Step, ...] = ()
        if resource.table is not None and not resource.width_points:  # (a trial: 88% for what ran at 68%)
            cut = {"zero_invariant": True} if resource.shifts_zeroed else {}  # (as this run removes channels)
            steps = (
                Step(
                    "export",
                    model="DENSE.pt",
                    onnx_path="dense.onnx",
                    width_models=max(resource.round_to, 1),
                    **cut,
                ),
                Step(
                    "bench",
                    model="dense.onnx",
                    layer_table="T.json",
                    width_models=("dense.w50.onnx", "dense.w25.onnx"),
                    force=True,  # (T.json: the table given, written again with them)
                ),
            )
            fix += (
                "; but the latency table has no whole-network points, and a lookup of layers timed one by one "
                f"prices narrow networks high: export the dense model with its width models ({steps[0]}) and "
                f"time them with the table on the device ({steps[1]}): they calibrate it"
            )
        raise BudgetUnreachable(
            f"the budget {d(target)} is unreachable: {least} {d(resource.minimum)} "
            f"({resource.minimum / resource.dense:.2%} of dense); {fix}",
            steps=steps,
            param=(field, "zero_invariant") if gated_help else (field, "round_to") if finer_helps else field,
        )
    return float(target)


class BudgetController(TrainHook):
    """Drives a :class:`ProximalSlimming` hook to a resource budget (see the module docstring).

    Add it to the trainer's hooks *after* the slimmer. ``probe``: ``(x, y)`` training
    images whose loss (eval mode, every few steps) detects degradation; ``None`` disables
    the taper slow-down.
    """

    name = "budget"

    def __init__(
        self,
        slimmer: ProximalSlimming,
        resource: ResourceModel,
        settings: BudgetSettings,
        total_steps: int,
        *,
        probe: tuple[Tensor, Tensor] | None = None,
        base_lambda: float = 0.0,
        calib: list[Tensor] | None = None,
        price: ResourceModel | None = None,
        warn: bool = True,
    ) -> None:
        settings.validate()
        if resource.total != slimmer.total:
            raise EdgeslimError("the resource model and the slimmer cover different BN channels")
        if price is not None and not resource.same_groups(price):
            raise EdgeslimError("the price model and the resource model group the BN channels differently")
        self.slimmer, self.resource, self.settings = slimmer, resource, settings
        #: log :func:`budget_warning` at the end of training (False: a caller that reports it itself)
        self.warn = warn
        #: the marginal costs channels are ranked and weighted by (the budget's resource by default)
        self.price = price if price is not None else resource
        self.target = resolve_target(settings, resource)
        self.total_steps = max(int(total_steps), 1)
        self.every = settings.every or min(max(self.total_steps // 200, 1), 10)
        self.probe = probe
        self.calib = list(calib or [])
        self.recalibrated = 0
        self.base_lambda = float(base_lambda)
        self.horizon = max(HORIZON * self.total_steps, 2.0 * self.every)
        self.s_unit = self._unit_shrink()
        self.tau_cap = _tau_cap(slimmer)
        self.step_count = 0
        self.clock = 0.0
        self.mu = 0.0
        self.shrink = 0.0
        self.violation = 0.0
        self.R = resource.dense
        self.budget = resource.dense
        self.loss_ema: float | None = None
        self.loss_best: float | None = None
        self.paused_steps = 0
        self.controls = self.capped_controls = 0  # updates, and those whose shrink the penalty's cap cut
        self.projection_removed = 0
        self.resource_before_projection: float | None = None
        self.predicted = resource.dense
        self.shrink_ff = self.shrink_mu = self.s_hold = 0.0
        self._alive, self.last_change = resource.total, 0
        self.probe_every = max(self.every, self.total_steps // PROBES, PROBE_MIN_STEPS)
        self._optimizer: Optimizer | None = None
        self._model: nn.Module | None = None

    # ------------------------------------------------------------------ helpers
    def magnitude(self) -> Tensor:
        """Per BN channel ``|xi|`` (the norm of (scale, shift) for zero-invariant slimming), on CPU;
        with ``importance="layer"`` relative to its layer's scale (the units the slimmer's
        per-layer factor turns back into shrinks)."""
        mag = self.slimmer.magnitude()
        if self.slimmer.importance == "layer":
            mag = mag / self.slimmer.layer_factor(mag)
        return mag.cpu()

    def _unit_shrink(self) -> float:
        """``s_unit``: the per-step shrink that takes a median removable channel to zero in
        ``UNIT_FRACTION`` of training, from the scales now (the slimmer's ``xi`` synced to them)."""
        rem = self.magnitude()[self.resource.pos_removable]
        med = float(rem.median()) if rem.numel() else 1.0
        return max(med, 1e-3) / (UNIT_FRACTION * self.total_steps)

    def fraction(self) -> float:
        return self.step_count / self.total_steps

    def budget_at(self, clock: float) -> float:
        return self.resource.dense - (self.resource.dense - self.target) * clock

    def degraded(self) -> bool:
        if self.loss_ema is None or self.loss_best is None:
            return False
        return self.loss_ema > self.loss_best * (1.0 + self.settings.loss_tolerance)

    def _lr(self) -> float:
        if self._optimizer is None:
            return 0.1
        lrs = [float(g["lr"]) for g in self._optimizer.param_groups]
        return max(min(lrs), 1e-12)

    @torch.no_grad()
    def _probe_loss(self, model: nn.Module) -> None:
        if self.probe is None:
            return
        x, y = self.probe
        # train-mode BN (batch statistics; running statistics lag behind a fast shrink and
        # would make eval-mode loss useless), with the BN buffers put back afterwards
        bns = [m for m in model.modules() if is_batchnorm(m)]
        saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in bns]
        try:
            with training_mode(model, True):
                loss = float(nn.functional.cross_entropy(model(x), y))
        finally:
            for m, buf in zip(bns, saved):
                for k, v in buf.items():
                    getattr(m, k).copy_(v)
        if not math.isfinite(loss):
            return
        self.loss_ema = loss if self.loss_ema is None else (1 - LOSS_EMA) * self.loss_ema + LOSS_EMA * loss
        self.loss_best = self.loss_ema if self.loss_best is None else min(self.loss_best, self.loss_ema)

    # ------------------------------------------------------------------ control
    def control(self) -> None:
        """One control update (clock, budget, mu, lambda, weights); called every ``every`` steps."""
        st = self.settings
        p = self.fraction()
        every = self.every
        if p >= st.taper_start:
            rate = every / (self.total_steps * (st.taper_end - st.taper_start))
            if self.degraded():
                rate = 0.0
                self.paused_steps += every
            deadline = min((p - st.taper_start) / (st.taper_max - st.taper_start), 1.0)
            self.clock = min(max(self.clock + rate, deadline), 1.0)
        self.budget = self.budget_at(self.clock)
        xi = self.magnitude()
        n_alive = int((xi != 0).sum())
        if n_alive != self._alive:
            self._alive, self.last_change = n_alive, self.step_count
        self.R = self.resource.of_xi(xi)
        self.violation = (self.R - self.budget) / self.resource.dense
        self.mu = min(max(0.0, self.mu + ETA * self.violation * every / self.total_steps), MU_MAX)
        taper_steps = self.total_steps * (st.taper_end - st.taper_start)
        ahead = (
            self.budget_at(min(self.clock + self.horizon / taper_steps, 1.0)) if p >= st.taper_start else None
        )
        w = self.weights(xi)
        s_ff = 0.0
        doomed = torch.zeros_like(xi, dtype=torch.bool)
        if ahead is not None and ahead < self.resource.dense and st.controller == "projection":
            projected, _ = self.resource.project(
                xi, max(ahead, self.target), MIN_KEEP, self.settings.cost_exponent, price=self.price
            )
            doomed = (projected == 0) & self.resource.pos_removable
            self.predicted = self.resource.of_xi(projected)
            alive = doomed & (xi != 0)
            if bool(alive.any()):
                s_ff = float((xi[alive].abs() / w[alive].clamp(min=1e-12)).median()) / self.horizon
        s_mu = self.s_unit * self.mu if self.violation > 0 else 0.0  # under budget: no pressure, mu kept
        if st.controller == "lagrangian":  # zero channels keep HOLD x the largest pressure so far
            self.s_hold = max(self.s_hold, HOLD * s_mu)
            doomed = (xi == 0) & self.resource.pos_removable
        else:
            self.s_hold = max(self.s_hold, HOLD * s_ff)  # keeps dead doomed channels from reviving
        tau = (max(s_ff, self.s_hold) * doomed.to(w.dtype) + s_mu) * w
        tau[self.resource.protected(xi, MIN_KEEP)] = 0.0  # every group keeps its strongest MIN_KEEP
        self.controls += 1
        if self.tau_cap is not None and float(tau.max()) > self.tau_cap:
            tau = tau * (self.tau_cap / float(tau.max()))
            self.capped_controls += 1
        self.shrink_ff, self.shrink_mu = s_ff, s_mu
        self.shrink = float(tau.max())  # the largest per-step shrink; weights are tau / shrink
        w = tau / self.shrink if self.shrink > 0 else torch.zeros_like(tau)
        self.slimmer.set_weights(w.to(torch.float32))
        alpha = self.slimmer.mean_alpha(self._optimizer)
        denom = (alpha if alpha > 0 else 1.0 / self._lr()) + self.slimmer.beta
        self.slimmer.lam = self.base_lambda + self.shrink * denom

    def weights(self, xi: Tensor) -> Tensor:
        """Penalty weights: marginal cost normalised to mean 1 over removable channels, clipped."""
        costs = self.price.channel_costs(xi) ** self.settings.cost_exponent
        rem = self.resource.pos_removable
        mean = float(costs[rem].mean()) if bool(rem.any()) else 1.0
        return torch.where(rem, (costs / max(mean, 1e-30)).clamp(W_MIN, W_MAX), torch.zeros_like(costs))

    # ------------------------------------------------------------------ TrainHook
    def on_train_start(self, model: nn.Module, optimizer: Optimizer) -> None:
        self._optimizer, self._model = optimizer, model
        if self.step_count == 0:  # (weights loaded, or DDP's broadcast, after the controller was built)
            self.s_unit = self._unit_shrink()
            self.control()

    def after_step(self, model: nn.Module, optimizer: Optimizer) -> None:
        self._optimizer = optimizer
        if self.slimmer.phase_at(self.slimmer.t - 1) != "sparsify":
            return  # the controller's clock runs in the sparsification phase only
        self.step_count += 1
        if self.step_count % self.probe_every == 0:
            self._probe_loss(model)
        if self.step_count % self.every == 0:
            self.control()

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        self.R = self.resource.of_xi(self.magnitude())
        d = self.resource.dense
        return {
            "budget_target": self.target / d,
            "budget_B": self.budget / d,
            "budget_R": self.R / d,
            "budget_predicted": self.predicted / d,
            "budget_mu": self.mu,
            "budget_lambda": self.slimmer.lam,
            "budget_shrink": self.shrink,
            "budget_shrink_ff": self.shrink_ff,
            "budget_shrink_mu": self.shrink_mu,
            "budget_clock": self.clock,
            "budget_probe_loss": float("nan") if self.loss_ema is None else self.loss_ema,
            "budget_paused_steps": float(self.paused_steps),
        }

    def on_train_end(self, model: nn.Module) -> None:
        self.finish()
        recent = self.step_count - self.last_change <= max(RECAL_STEPS, RECAL_FRACTION * self.total_steps)
        s = self.slimmer
        # a recovery phase trained on after the pattern froze: the running statistics followed it
        settled = s.frozen is not None and s.freeze_at is not None and s.t - s.freeze_at >= RECAL_STEPS
        if self.calib and (self.projection_removed or recent) and not settled:
            recalibrate_bn(model, self.calib)
            self.recalibrated = sum(int(x.shape[0]) for x in self.calib)
        # a budget missed or overshot (a review's own loop ended at 0.276 for 0.5 and heard nothing)
        if self.warn and (line := budget_warning(self.report())):
            log.warning("%s%s", line, self._short_clock())

    def finish(self) -> int:
        """Exact projection onto the budget; returns how many channels it removed (0: none needed).
        Called again (at the freeze of a recovery phase, then at the end of training), the report keeps
        where the controller ended and counts the channels every projection removed."""
        mag = self.magnitude()
        ended_at = self.resource.of_xi(mag)
        if self.resource_before_projection is None:  # (a second call would report the first one's result)
            self.resource_before_projection = ended_at
        projected, removed = self.resource.project(
            mag, self.target, MIN_KEEP, self.settings.cost_exponent, price=self.price
        )
        dead = (projected == 0).to(self.slimmer.xi.device)
        before = self.slimmer.xi
        rows = before.view(-1, self.slimmer.total).clone()
        rows[:, dead] = 0
        self.slimmer.xi = rows.reshape(-1)
        if self.slimmer.aligner is not None:  # aligned counts keep trained channels
            self.slimmer.xi = self.slimmer.aligner(self.slimmer.xi, before)
        self.projection_removed += removed
        self.R = self.resource.of_xi(self.magnitude())
        if removed:
            log.warning(
                "the budget controller ended at %.1f%% of dense (target %.1f%%); the final projection removed %d channel(s)%s",
                100 * ended_at / self.resource.dense,
                100 * self.target / self.resource.dense,
                removed,
                self._short_clock(),
            )
        return removed

    def _short_clock(self) -> str:
        """What a warning adds where :meth:`after_step` ran fewer times than ``total_steps`` (its taper
        never reached its end): in a user's loop with gradient accumulation, ``total_steps`` counted
        micro-batches where one ``after_step`` follows each optimizer step; else ``""``."""
        if (
            self.step_count >= self.total_steps - 1
        ):  # (one short: a freeze's projection, before its after_step)
            return ""
        return (
            f"; after_step ran {self.step_count} times for total_steps {self.total_steps}, so the taper stopped "
            "short: count total_steps in optimizer steps (with gradient accumulation, not micro-batches)"
        )

    def after_surgery(self, folded: Collection[str]) -> None:
        """A parameter budget's result counted as surgery made it: a new bias only in the layers it folded
        a nonzero constant into (``folded``: its report's ``folded_biases``), not in every layer that
        reads a removed channel as a constant (the bound the controller steered with)."""
        if self.resource.metric == "params":
            self.R = self.resource.value(self.resource.counts(self.magnitude()), folded=folded)

    def cap_facts(self) -> dict[str, Any]:
        """``shrink_capped_share`` (of the updates the MCP / SCAD cap cut), ``shrink_cap``, ``penalty``:
        what :func:`budget_warning` reads to name the cap as the cause."""
        share = self.capped_controls / self.controls if self.controls else 0.0
        return {"shrink_capped_share": share, "shrink_cap": self.tau_cap, "penalty": self.slimmer.penalty}

    def state_dict(self) -> dict[str, Any]:
        # base_lambda too: a resumed run's settings carry the resolved lambda, not the user's --lambda
        keys = ("step_count", "clock", "mu", "shrink", "violation", "R", "predicted", "budget", "loss_ema", "loss_best",
                "paused_steps", "projection_removed", "resource_before_projection", "s_hold", "last_change",
                "_alive", "base_lambda", "s_unit", "controls", "capped_controls")  # fmt: skip  # s_unit: from the scales at the start, not at a resume
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            if hasattr(self, k):
                setattr(self, k, v)

    # ------------------------------------------------------------------ report
    def report(self, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Settings, final numbers and the per-epoch trajectory (from the trainer's history, where
        given: a loop of one's own has none)."""
        d = self.resource.dense
        traj = []
        for r in history or []:
            if "budget_R" not in r:
                continue
            traj.append(
                {
                    "epoch": r.get("epoch"),
                    "target": r["budget_target"],
                    "budget": r["budget_B"],
                    "resource": r["budget_R"],
                    "mu": r["budget_mu"],
                    "lambda": r["budget_lambda"],
                    "shrink_per_step": r["budget_shrink"],
                    "clock": r["budget_clock"],
                    "probe_loss": r["budget_probe_loss"],
                    "test_acc": r.get("test_acc"),
                    "train_loss": r.get("train_loss"),
                }
            )
        before = self.resource_before_projection if self.resource_before_projection is not None else self.R
        return {
            "settings": self.settings.to_dict(),
            "metric": self.resource.metric,
            "price": self.price.metric,  # what the ranking and the weights measured channels in
            "unit": "seconds per batch" if self.resource.metric == "latency" else self.resource.metric,
            "dense": d,
            "minimum": self.resource.minimum,
            "target": self.target,
            "target_fraction": self.target / d,
            "achieved": self.R,
            "achieved_fraction": self.R / d,
            "achieved_over_target": self.R / self.target,
            "controller_reached": before / self.target,
            "before_projection_fraction": before / d,
            "projection_removed_channels": self.projection_removed,
            "taper_paused_steps": self.paused_steps,
            # the share of updates whose shrink the MCP / SCAD cap cut (it keeps their prox single-valued)
            **self.cap_facts(),
            "bn_recalibrated_on_images": self.recalibrated,
            "total_steps": self.total_steps,
            "constants": {
                "ETA": ETA,
                "MU_MAX": MU_MAX,
                "HORIZON": HORIZON,
                "UNIT_FRACTION": UNIT_FRACTION,
                "HOLD": HOLD,
                "W_MIN": W_MIN,
                "W_MAX": W_MAX,
                "LOSS_EMA": LOSS_EMA,
                "PROBES": PROBES,
            },  # fmt: skip
            "trajectory": traj,
        }


def _tau_cap(slimmer: ProximalSlimming) -> float | None:
    """Largest per-step shrink tau that keeps MCP / SCAD single-valued (with a margin)."""
    if slimmer.penalty == "mcp":
        return TAU_CAP_FRACTION * float(slimmer.params["g"])
    if slimmer.penalty == "scad":
        return TAU_CAP_FRACTION * (float(slimmer.params["a"]) - 1.0) * float(slimmer.params["l"])
    return None


def _is_finish(fn: Any) -> bool:
    """Whether ``fn`` is a :class:`BudgetController`'s bound ``finish``."""
    return getattr(fn, "__func__", None) is BudgetController.finish


def build_controller(
    model: nn.Module,
    slimmer: ProximalSlimming,
    settings: BudgetSettings,
    example_input: Tensor,
    total_steps: int,
    *,
    probe: tuple[Tensor, Tensor] | None = None,
    base_lambda: float = 0.0,
    round_to: int = 1,
    calib: list[Tensor] | None = None,
    warn: bool = True,
) -> BudgetController:
    """Validate ``settings``, build the resource model (one trace; a second for a ``price`` in
    another metric) and the controller; with ``round_to`` > 1 the slimmer keeps aligned channel
    counts with trained channels (:func:`edgeslim.sparsity.align.align_channels`, replacing an
    aligner it had).

    ``total_steps``: the training's steps. A slimmer in phases (``warmup_steps``/``recovery_steps``
    with its ``total_steps``) gives the controller its sparsification phase only, and its frozen
    zero pattern meets the budget: the controller's final projection runs right before the freeze
    (:attr:`ProximalSlimming.before_freeze`).

    ``warn``: the controller logs a budget missed or overshot (:func:`budget_warning`) at the end of
    training; ``False`` for a caller that reports it itself."""
    from edgeslim.sparsity.resource import build_resource, load_latency_table

    settings.validate()
    if hasattr(slimmer, "set_groups") and not getattr(slimmer, "coupling_given", True):
        # built without example_input (README's own loop did): the coupled groups, found here, keep
        # the zeros surgery cannot remove from cutting branches (a trial: 393 such zeros, 6 points lost)
        from edgeslim.sparsity.prox import coupled_bn_groups

        slimmer.set_groups(coupled_bn_groups(model, example_input))
    warm, rec = getattr(slimmer, "warmup_steps", 0), getattr(slimmer, "recovery_steps", 0)
    planned = getattr(slimmer, "total_steps", None)
    if warm or rec:  # the controller's clock runs in the sparsification phase only
        if planned is not None and planned != total_steps:
            log.warning(
                "build_controller was given %d total steps and the slimmer %d; the slimmer's plan counts "
                "(its phases end where it says)", total_steps, planned,
            )  # fmt: skip
        total_steps = max((planned if planned is not None else total_steps) - warm - rec, 1)
    table = load_latency_table(settings.latency_table) if settings.latency_table else None

    def resource_in(metric: str) -> ResourceModel:
        return build_resource(
            model, example_input, metric, profile=settings.profile, precision=settings.precision,
            batch=settings.batch, latency_table=table, round_to=round_to,
            shifts_zeroed=bool(getattr(slimmer, "zero_invariant", False)),
        )  # fmt: skip

    resource = resource_in(settings.metric)
    price = (
        resource_in(settings.price) if settings.price is not None else None
    )  # validate(): never the metric
    controller = BudgetController(
        slimmer,
        resource,
        settings,
        total_steps,
        probe=probe,
        base_lambda=base_lambda,
        calib=calib,
        price=price,
        warn=warn,
    )
    # aligned counts are kept with trained channels (a trial's own loop kept zero channels back)
    align_channels(slimmer, model, example_input, round_to, resource)
    if hasattr(slimmer, "before_freeze"):  # (a trial's own loop froze at 82% of the MACs for 50%)
        # one controller per slimmer: a rebuilt one (a notebook cell run again) replaces the earlier one
        slimmer.before_freeze[:] = [f for f in slimmer.before_freeze if not _is_finish(f)]
        slimmer.before_freeze.append(controller.finish)
    return controller


def zero_invariant_fix(narrowest: str) -> str:
    """The fix of a target only zero-invariant removability reaches; ``narrowest``: what the narrowest
    network then costs, said in parentheses."""
    return (
        "give zero_invariant=True: the channels squeeze-excitation gates multiply are then removable too "
        f"({narrowest}), or a larger target"
    )


def budget_reached(budget: dict[str, Any]) -> bool:
    """Whether a budget run ended within its target's tolerance (neither missed nor overshot far)."""
    achieved, target = budget["achieved_fraction"], budget["target_fraction"]
    return BUDGET_OVERSHOOT_FACTOR * target <= achieved <= (1 + BUDGET_MISS_TOLERANCE) * target


def budget_warning(budget: dict[str, Any]) -> str:
    """One line when a budget run missed its target or overshot it far below, or when the penalty's
    shrink cap held the controller back and left the cutting to the final projection; else ``""``."""
    achieved, target, metric = budget["achieved_fraction"], budget["target_fraction"], budget["metric"]
    capped = budget.get("shrink_capped_share", 0.0)
    if capped >= CAPPED_SHARE and (
        budget.get("projection_removed_channels") or achieved > (1 + BUDGET_MISS_TOLERANCE) * target
    ):
        param = "g" if budget.get("penalty") == "mcp" else "a"  # (SCAD's cap is (a - 1) * l / 2)
        return Notice(  # (no standalone "a" before the parameter's: the CLI puts the flag at the first one)
            f"budget left to the final projection: {achieved:.1%} of the dense {metric} against the {target:.1%} "
            f"target; the {budget.get('penalty')} penalty caps each step's shrink at {budget['shrink_cap']:.3g} to "
            f"keep its proximal step single-valued, which held the controller back in {capped:.0%} of its "
            f"updates; raise {param} (larger values let it shrink faster)",
            param,
        )
    if achieved < BUDGET_OVERSHOOT_FACTOR * target:
        return Notice(
            f"budget overshot: {achieved:.1%} of the dense {metric} kept for a target of {target:.1%}; the "
            "schedule is too short for the controller to steer (train longer: more epochs or images), or end "
            "the taper later (taper_end)",
            "taper_end",
        )
    if achieved > (1 + BUDGET_MISS_TOLERANCE) * target:
        return Notice(
            f"budget missed: {achieved:.1%} of the dense {metric} for a target of {target:.1%}; train longer "
            "(epochs) or end the taper earlier (taper_end) so the controller has time to reach it",
            ("epochs", "taper_end"),
        )
    return ""
