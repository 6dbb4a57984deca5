"""Proximal network slimming: an auxiliary copy ``xi`` of the BN scales, driven to exact zeros.

After every ``optimizer.step()`` (``alpha = 1/lr`` of the BN scales' param group)::

    gamma <- (alpha*gamma + beta*xi) / (alpha + beta)
    xi    <- prox_{tau r}((alpha*xi + beta*gamma) / (alpha + beta)),  tau = lam*w / (alpha + beta)

(``gamma`` in the second line is the one just updated: the xi-subproblem is solved with the
new gamma.) ``xi`` is one flat tensor over all BN channels on the model's device; each update
is a handful of vectorised ops. ``w`` are optional per-channel penalty weights. At the end,
:meth:`ProximalSlimming.finalize` sets ``gamma <- xi``, so zero channels are exactly zero.

Use it inside any loop::

    slimmer = ProximalSlimming(model, lam=0.05, beta=100, penalty="l1")
    for x, y in data:
        loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
        slimmer.step(optimizer)
    report = slimmer.finalize()

or wrap the optimizer (``opt = wrap(optimizer, slimmer)``; ``opt.step()`` does both; with AMP's
``GradScaler`` use it: ``scaler.step(opt)`` skips the prox with a skipped step), or use
the trainer's method ``proximal`` (``TrainConfig(method="proximal", method_args={...})``).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from edgeslim import penalties
from edgeslim.channels.graph import coupled_bn_groups  # (also of this module's API)
from edgeslim.channels.hooks import TrainHook, register_method
from edgeslim.channels.norm import zero_flat
from edgeslim.errors import EdgeslimError
from edgeslim.sparsity.subgradient import bn_layers, gamma_stats
from edgeslim.utils.modes import refuse_lazy, uncompiled_name

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_LAMBDA",
    "IMPORTANCE",
    "PROX_STEPS",
    "FinalizeReport",
    "ProxOptimizer",
    "ProximalSlimming",
    "check_strength",
    "coupled_bn_groups",
    "lambda_for_shrink",
    "planned_shrink_per_lambda",
    "wrap",
]

#: defaults (see docs/slimming.md "Choosing lambda"); beta as in the authors' VGG setting
DEFAULT_BETA = 100.0
DEFAULT_LAMBDA = 0.05
#: how alpha (the inverse data step of the BN scales) is read from the optimizer:
#: ``lr``: ``1/lr`` (the paper's plain-gradient step); ``effective``: the optimizer's effective
#: step (``(1 - m)/((1 - dampening) lr)`` for SGD with momentum m, ``(sqrt(v_hat) + eps)/lr`` per
#: entry for Adam/AdamW; docs/slimming.md "The prox step and the optimizer")
PROX_STEPS = ("lr", "effective")
#: ``beta_end="auto"``: the final beta keeps the fixed-point gap ``lam/beta`` at this fraction
#: of the median kept ``|xi|`` (measured when the ramp starts)
BETA_AUTO_GAP = 0.01
#: the beta ramp covers this last fraction of the sparsification phase
BETA_RAMP_FRACTION = 0.25
#: training phases, in order (``phase`` of :class:`ProximalSlimming`)
PHASES = ("warmup", "sparsify", "recovery")
#: how a channel's scale is judged: ``absolute`` (``|xi|``, the paper's) or ``layer`` (``|xi|``
#: relative to the mean non-zero ``|xi|`` of its BN layer, docs/slimming.md "Scale-invariant
#: importance"): the prox threshold of a layer follows the layer's own scale
IMPORTANCE = ("absolute", "layer")


@dataclass
class FinalizeReport:
    """What :meth:`ProximalSlimming.finalize` did, per BN layer and in total."""

    total: int
    zeroed: int
    layers: list[dict[str, Any]] = field(default_factory=list)
    #: units (a BN layer, or coupled BN layers) that the prox emptied; their strongest channel was kept
    restored: list[list[str]] = field(default_factory=list)
    #: BN name -> biases of its zeroed channels (the constant they still output; surgery folds it)
    bias_left: dict[str, Tensor] = field(default_factory=dict)
    #: zeros of ``xi`` given back their trained scale: each shared its channel with a nonzero scale
    #: of a coupled layer (a residual sum), so surgery could not remove it and zeroing it would only
    #: have cut that branch
    coupled_kept: int = 0

    @property
    def kept(self) -> int:
        return self.total - self.zeroed

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "zeroed": self.zeroed,
            "kept": self.kept,
            "restored": self.restored,
            "coupled_kept": self.coupled_kept,
            "layers": self.layers,
        }

    def __repr__(self) -> str:  # (the default printed every layer and every bias tensor)
        return (
            f"FinalizeReport(zeroed {self.zeroed} of {self.total} BN channels in {len(self.layers)} layers, "
            f"{len(self.restored)} emptied unit(s) given their strongest channel back)"
        )


#: one removable unit: ``[(bn_name, channel_indices), ...]``; slot i is channel ``idx[i]`` of every member
Unit = list[tuple[str, Tensor]]


def _coupled_units(groups: Any, sizes: dict[str, int]) -> list[Unit]:
    """Normalise coupled BN groups to units of ``(bn_name, idx)`` members; uncovered layers are units.

    Accepts surgery's ``BNGroup`` objects (``.members = [(name, idx), ...]``), lists of
    ``(name, idx)`` pairs, or lists of BN names (channel c of every named layer is coupled).
    """
    units: list[Unit] = []
    for g in groups:
        members = g.members if hasattr(g, "members") else ([g] if isinstance(g, str) else g)
        unit: Unit = []
        for m in members:
            name, idx = (m, None) if isinstance(m, str) else (m[0], m[1])
            name = uncompiled_name(str(name))  # (names taken from a compiled wrapper)
            if name not in sizes:
                raise EdgeslimError(
                    f"coupled group names {name!r}, which is not an affine BatchNorm of the model"
                )
            idx = torch.arange(sizes[name]) if idx is None else torch.as_tensor(idx, dtype=torch.long).cpu()
            unit.append((str(name), idx))
        if unit:
            if len({int(i.numel()) for _, i in unit}) != 1:
                names = [n for n, _ in unit]
                raise EdgeslimError(f"coupled BN layers {names} have different channel counts; not one group")
            units.append(unit)
    seen = {n for u in units for n, _ in u}
    units += [[(n, torch.arange(k))] for n, k in sizes.items() if n not in seen]
    return units


class ProximalSlimming(TrainHook):
    """Proximal slimming of all affine BatchNorm scales of ``model`` (a trainer hook and a plain helper).

    ``lam`` (settable any time: ``slimmer.lam = ...``), ``beta``, ``penalty`` (``l1, lp, tl1,
    mcp, scad`` or ``group-<name>``) and its parameters (``p=``, ``a=``, ``g=``, ``l=``).
    ``weights``: optional per-channel penalty weights (one flat tensor over all BN channels in
    module order, or set later with :meth:`set_weights` / :meth:`set_layer_weights`).
    ``groups``: coupled BN layers (lists of BN names) or ``example_input`` to find them with
    surgery's dependency graph; group penalties act on the vector of coupled scales of one
    channel index, and :meth:`finalize` never empties a coupled unit.

    Training phases (counted in calls of :meth:`step`): the first ``warmup_steps`` leave the
    scales alone (``xi`` follows gamma); then the sparsification phase; from
    ``total_steps - recovery_steps`` on, the recovery phase: the zero pattern of ``xi`` is
    frozen (an emptied unit keeps its strongest channel), the zero channels' scale and shift are
    held at exactly 0, lambda no longer acts and the kept scales train freely (``xi`` = gamma).
    ``prox_step``: ``"lr"`` (``alpha = 1/lr``) or ``"effective"`` (alpha from the optimizer's
    effective step, see :data:`PROX_STEPS`). ``beta_end``: beta grows geometrically to this value
    (``"auto"``: :data:`BETA_AUTO_GAP`) over the last :data:`BETA_RAMP_FRACTION` of the
    sparsification phase (needs ``total_steps``). ``recovery_lr``: the learning rate restarts at
    this value when the recovery phase starts and falls to 0 over it (cosine), instead of the
    trainer's schedule running on (the hook writes it into the optimizer after each backward);
    param groups at other rates keep their ratio to the largest (:meth:`restart_lr`).
    ``importance``: ``"absolute"`` or ``"layer"`` (see :data:`IMPORTANCE`; :meth:`layer_factor`).
    ``xi`` starts from the scales at the first backward through them (or the first :meth:`step`):
    weights loaded into the model after the slimmer was built are what it starts from.
    """

    name = "proximal"

    def __init__(
        self,
        model: nn.Module,
        lam: float = DEFAULT_LAMBDA,
        beta: float = DEFAULT_BETA,
        penalty: str = "l1",
        *,
        weights: Tensor | None = None,
        groups: Sequence[Sequence[str]] | None = None,
        example_input: Tensor | None = None,
        zero_invariant: bool = False,
        prox_step: str = "lr",
        warmup_steps: int = 0,
        recovery_steps: int = 0,
        total_steps: int | None = None,
        beta_end: float | str | None = None,
        recovery_lr: float | None = None,
        importance: str = "absolute",
        **penalty_params: Any,
    ) -> None:
        refuse_lazy(model)
        layers = bn_layers(model)
        if not layers:
            raise EdgeslimError(
                "the model has no affine BatchNorm layers; proximal slimming acts on BN scales "
                "(add BatchNorm after each conv, or use another pruning method)"
            )
        _refuse_unknown_keywords(type(self), penalty_params)
        self.penalty, self.grouped = penalties.parse_penalty(penalty)
        if zero_invariant:  # (gamma_c, beta_c) pairs go to zero together: a group penalty
            self.grouped = True
        self.params = penalties.check_params(self.penalty, **penalty_params)
        if not beta > 0 or not math.isfinite(beta):
            raise EdgeslimError(f"beta must be > 0, got {beta}", param="beta")
        self.beta = float(beta)
        self._lam = 0.0
        self.lam = lam
        self.names = [n for n, _ in layers]
        #: the BN layers; their parameters are read from them each time (see :attr:`gammas`)
        self.bn_modules: list[nn.Module] = [m for _, m in layers]
        self.zero_invariant = bool(zero_invariant)
        if any(t.is_meta for t in self.targets):
            raise EdgeslimError(
                "the model's BN parameters are on the meta device (no values yet): build the slimmer after "
                "materialising the model (model.to_empty(device=...)) and loading its weights"
            )
        self.sizes = [int(g.numel()) for g in self.gammas]
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.total = self.offsets[-1]
        if self.zero_invariant and any(b is None for b in self.biases):
            raise EdgeslimError("zero-invariant slimming needs BN layers with a bias (affine=True)")
        self.target_sizes = [int(t.numel()) for t in self.targets]
        self.device = self.gammas[0].device
        #: half-precision scales (a model converted with .half() / .bfloat16()): shrunk is measured on the scales
        self._low_precision = any(t.dtype in (torch.float16, torch.bfloat16) for t in self.targets)
        if self._low_precision:
            log.warning(
                "the BN scales are %s: the prox's per-step shrink (lam / (1/lr + beta), typically 1e-5..1e-3) "
                "is below that format's resolution (%.2g near 1) and is lost, so scales barely shrink and reach "
                "no zero; keep the parameters float32 and train with AMP (torch.autocast computes in half "
                "precision but keeps the parameters float32)",
                self.targets[0].dtype, torch.finfo(self.targets[0].dtype).eps,
            )  # fmt: skip
        with torch.no_grad():
            self.xi = torch.cat([t.detach().reshape(-1) for t in self.targets]).clone()
        #: xi as built (until set, or re-read from the scales by _sync_xi)
        self._xi_built: tuple[Tensor, int] | None = (self.xi, self.xi._version)
        self._sync_hooks = self._hook_first_backward()
        self.weights: Tensor | None = None
        if weights is not None:
            self.set_weights(weights)
        if groups is None and example_input is not None:
            groups = coupled_bn_groups(model, example_input)
        self.set_groups(groups or [])
        #: whether the coupled groups were given (``groups``, even empty: none) or found (``example_input``);
        #: :func:`~edgeslim.sparsity.budget.build_controller` finds them for a slimmer without
        self.coupling_given = groups is not None
        self.steps = 0
        #: optional ``(xi, prox input) -> xi`` run after every prox step (a ChannelAligner)
        self.aligner: Callable[[Tensor, Tensor], Tensor] | None = None
        #: (the optimizer and its layout when read, param group of each BN): see _lr_groups
        self._lr_map: tuple[tuple[Any, int, int], list[int]] | None = None
        self.prox_step, self.beta_end = check_phases(
            prox_step, warmup_steps, recovery_steps, total_steps, beta_end, recovery_lr, self.beta
        )
        self.recovery_lr = None if recovery_lr is None else float(recovery_lr)
        self.importance = check_importance(importance, penalty)
        #: the mean non-zero channel magnitude when :meth:`layer_factor` first ran (its unit)
        self.scale_ref: float | None = None
        self._scale_ref_stale = False  # scale_ref read while xi was stale (see _xi_now): read again
        self._layer_of = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.tensor(self.sizes)).to(
            self.device
        )
        self._saved_lr: list[float] | None = None  # the rates restart_lr replaced for this step
        self._restarted_at: int | None = None  # the step whose rate restart_lr last set (recovery_lr)
        self._lr_ratios: list[float] | None = None  # each param group's rate over the largest (restart_lr)
        self.warmup_steps, self.recovery_steps = int(warmup_steps), int(recovery_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        #: calls of :meth:`step` so far (all phases); ``steps`` counts the proximal updates
        self.t = 0
        self.beta_start = self.beta
        #: the beta reached at the end of the ramp (``beta_end`` resolved when the ramp starts)
        self.beta_target: float | None = None if self.beta_end in (None, "auto") else float(self.beta_end)
        #: flat BN channels frozen at zero in the recovery phase (``None`` before it)
        self.frozen: Tensor | None = None
        #: units emptied by the prox when the pattern was frozen (their strongest channel was kept)
        self.restored_at_freeze: list[list[str]] = []
        #: called (no arguments) right before the zero pattern is frozen (a budget's projection)
        self.before_freeze: list[Callable[[], Any]] = []
        #: zeros given back their trained scale when the pattern was frozen (see _keep_coupled)
        self.coupled_kept_at_freeze = 0
        #: the total nominal shrink the prox steps applied (sum of lambda / (alpha + beta), mean over entries);
        #: with half-precision scales the shrink the scales got (measured: what the pull towards xi
        #: moved them by after rounding; the nominal one is lost below the format's resolution)
        self.shrunk: float | Tensor = 0.0
        #: inside a ProxOptimizer (wrap), and whether its step is running: a step of the user's own as
        #: well would run the prox twice per optimizer step
        self._wrapped = self._wrapped_step = False
        self._pinned_said = self._plain_alpha_said = False  # (warnings given once: _pinned, _say_plain_alpha)

    @property
    def gammas(self) -> list[nn.Parameter]:
        """The BN scales, read from the layers each time: a ``load_state_dict(assign=True)`` or
        ``to_empty()`` after the slimmer was built gives the layers new parameter objects."""
        return [m.weight for m in self.bn_modules]

    @property
    def biases(self) -> list[Tensor | None]:
        """The BN shifts (read as :attr:`gammas`)."""
        return [m.bias for m in self.bn_modules]

    @property
    def targets(self) -> list[Tensor]:
        """The parameters xi copies: the BN scales, and with ``zero_invariant`` also the BN shifts."""
        return self.gammas + ([b for b in self.biases if b is not None] if self.zero_invariant else [])

    def __getstate__(self) -> dict[str, Any]:
        """A copy or pickle taken while a wrapper's step runs (a before_freeze callback) is not inside it;
        the first-backward hooks stay with the original (a copy re-reads xi at its first step)."""
        return {**self.__dict__, "_wrapped_step": False, "_sync_hooks": [], "_lr_map": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A slimmer pickled by an older edgeslim: one from before it read its BN layers each time
        (2026-12-06 and before) holds the layers' parameters, not the layers, and goes on with those
        parameters, as it did; flags it did not have yet start unset."""
        state = {**_OLDER_STATE, **state}
        if "bn_modules" not in state and "gammas" in state:
            gammas, biases = state.pop("gammas"), state.pop("biases")
            state.pop("targets", None)
            state["bn_modules"] = [SimpleNamespace(weight=g, bias=b) for g, b in zip(gammas, biases)]
        self.__dict__.update(state)

    # ------------------------------------------------------------------ xi before training
    def _hook_first_backward(self) -> list[Any]:
        """Hooks that re-read ``xi`` from the scales at the first backward through them: the scales
        then hold what the model was given after this slimmer was built (``load_state_dict`` of
        pretrained weights, a custom init), and no optimizer step has moved them yet."""
        ref = weakref.ref(self)

        @torch.utils.hooks.unserializable_hook
        def first_backward(grad: Tensor) -> None:
            slimmer = ref()
            if slimmer is not None:
                slimmer._sync_xi()

        return [t.register_hook(first_backward) for t in self.targets if t.requires_grad]

    def _xi_stale(self) -> bool:
        """Whether ``xi`` is still the copy taken at construction (never set, stepped or loaded since)."""
        built = self._xi_built
        return built is not None and self.xi is built[0] and self.xi._version == built[1]

    def _xi_now(self) -> Tensor:
        """``xi`` as :meth:`_sync_xi` leaves it, without syncing: the scales now while ``xi`` is stale
        (what a budget controller built before the weights were loaded reads)."""
        return self._gather() if self._xi_stale() else self.xi

    def _sync_xi(self) -> None:
        """``xi <- `` the scales now, if ``xi`` is still the copy taken at construction: built before
        the weights were loaded, it would pull every scale back to the values they had then."""
        if self._xi_stale():
            with torch.no_grad():
                self.xi = self._gather().clone()
        self._xi_built = None

    def _drop_sync_hooks(self) -> None:
        for handle in self._sync_hooks:
            handle.remove()
        self._sync_hooks = []

    # ------------------------------------------------------------------ settings
    @property
    def lam(self) -> float:
        """Penalty strength lambda; may change between steps (budget-targeted slimming)."""
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if isinstance(value, (bool, str, bytes)) or not isinstance(value, (numbers.Real, Tensor)):
            raise EdgeslimError(
                f"lam (the penalty strength lambda) must be a number, got {value!r}", param="lam"
            )
        value = float(value)
        if not value >= 0 or not math.isfinite(value):
            raise EdgeslimError(
                f"lam (the penalty strength lambda) must be a finite number >= 0, got {value}", param="lam"
            )
        self._lam = value

    def set_groups(self, groups: Sequence[Any]) -> None:
        """The coupled BN layers (what ``groups`` or ``example_input`` give at construction): the
        channels a surgery can only remove together are one unit of the prox (a group penalty) and
        of the zeros kept at finalize. For a slimmer built without either."""
        self.units = _coupled_units(list(groups), dict(zip(self.names, self.sizes)))
        self.group_index, self.num_groups = self._group_index()
        self.coupling_given = True

    def set_weights(self, weights: Tensor | Sequence[float] | None) -> None:
        """Per-channel penalty weights (flat, all BN channels in module order); ``None``: all 1."""
        if weights is None:
            self.weights = None
            return
        w = torch.as_tensor(weights, dtype=self.xi.dtype).detach().to(self.device).reshape(-1)
        if w.numel() != self.total:
            raise EdgeslimError(f"penalty weights need {self.total} entries (BN channels), got {w.numel()}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise EdgeslimError("penalty weights must be finite and >= 0")
        self.weights = w.clone()

    def set_layer_weights(self, per_layer: dict[str, float | Tensor]) -> None:
        """Set the weights of some BN layers (a scalar or one value per channel); others keep theirs."""
        w = self.weights.clone() if self.weights is not None else torch.ones(self.total, device=self.device)
        index = {n: i for i, n in enumerate(self.names)}
        for name, value in per_layer.items():
            name = uncompiled_name(name)
            if name not in index:
                raise EdgeslimError(
                    f"no BatchNorm layer named {name!r}; layers: {', '.join(self.names[:5])}..."
                )
            i = index[name]
            w[self.offsets[i] : self.offsets[i + 1]] = torch.as_tensor(value, dtype=w.dtype, device=w.device)
        self.set_weights(w)

    def magnitude(self) -> Tensor:
        """Per BN channel ``|xi|`` (the norm of (scale, shift) with ``zero_invariant``); before the first
        backward or step, of the scales now (:meth:`_xi_now`)."""
        return self._xi_now().detach().view(-1, self.total).norm(dim=0)

    def layer_factor(self, magnitude: Tensor | None = None) -> Tensor:
        """Per BN channel: the mean non-zero magnitude of its layer over :attr:`scale_ref` (1 in a
        layer without a non-zero channel). ``tau * factor`` shrinks every layer by the same share
        of its own scale, so shrinking a whole layer (free in BN -> ReLU -> conv chains) is no
        longer how the penalty gets paid; ``magnitude / factor`` ranks channels within their layer.
        Group penalties (``group-*``, ``zero_invariant``) average the thresholds of a coupled unit,
        so there a unit spanning several layers is judged against their mean scale.
        """
        mag = self.magnitude() if magnitude is None else magnitude.to(self.device)
        layer = self._layer_of
        n = len(self.sizes)
        sums = torch.zeros(n, dtype=mag.dtype, device=mag.device).index_add_(0, layer, mag)
        alive = torch.zeros(n, dtype=mag.dtype, device=mag.device).index_add_(
            0, layer, (mag > 0).to(mag.dtype)
        )
        # (read again until xi holds the scales training starts from)
        if self.scale_ref is None or self._scale_ref_stale:
            nz = mag[mag > 0]
            self.scale_ref = float(nz.mean()) if nz.numel() else 1.0
            self._scale_ref_stale = self._xi_stale()
        ref = max(self.scale_ref, 1e-12)
        mean = torch.where(alive > 0, sums / alive.clamp(min=1), torch.full_like(sums, ref))
        return (mean / ref)[layer]

    def layer_slices(self) -> dict[str, slice]:
        """BN name -> its slice of the flat ``xi`` / weights."""
        return {n: slice(self.offsets[i], self.offsets[i + 1]) for i, n in enumerate(self.names)}

    def _unit_positions(self, unit: Unit) -> Tensor:
        """Flat positions of a unit: shape (members, slots)."""
        pos = {n: i for i, n in enumerate(self.names)}
        return torch.stack([idx + self.offsets[pos[name]] for name, idx in unit])

    def _group_index(self) -> tuple[Tensor, int]:
        """Group id of every flat entry: slot i of every member of a unit shares one id.

        Entries no unit covers (channels surgery cannot remove) are groups of their own.
        """
        index = torch.full((self.total,), -1, dtype=torch.long)
        start = 0
        for unit in self.units:
            where = self._unit_positions(unit)
            index[where] = torch.arange(start, start + where.shape[1]).expand_as(where)
            start += where.shape[1]
        free = index < 0
        index[free] = torch.arange(start, start + int(free.sum()))
        if self.zero_invariant:
            index = index.repeat(2)
        return index.to(self.device), start + int(free.sum())

    # ------------------------------------------------------------------ phases
    @property
    def freeze_at(self) -> int | None:
        """The step index where the recovery phase starts (``None``: no recovery)."""
        if not self.recovery_steps or self.total_steps is None:
            return None
        return self.total_steps - self.recovery_steps

    def phase_at(self, t: int) -> str:
        """The phase of step ``t`` (0-based): ``warmup``, ``sparsify`` or ``recovery``."""
        if t < self.warmup_steps:
            return "warmup"
        if self.freeze_at is not None and t >= self.freeze_at:
            return "recovery"
        return "sparsify"

    @property
    def phase(self) -> str:
        """The phase of the next step."""
        return self.phase_at(self.t)

    def _ramp(self) -> tuple[int, int] | None:
        """``(start, end)`` steps of the beta ramp (the end of the sparsification phase)."""
        if self.beta_end is None or self.total_steps is None:
            return None
        end = self.freeze_at if self.freeze_at is not None else self.total_steps
        start = max(self.warmup_steps, end - int(round(BETA_RAMP_FRACTION * (end - self.warmup_steps))))
        return (start, end) if end > start else None

    def _beta_at(self, t: int) -> float:
        ramp = self._ramp()
        if ramp is None or t < ramp[0]:
            return self.beta
        if self.beta_target is None:  # "auto": the gap lam/beta at BETA_AUTO_GAP of the median kept |xi|
            kept = self.xi[: self.total].abs()
            kept = kept[kept > 0]
            med = float(kept.median()) if kept.numel() else 1.0
            self.beta_target = max(self.beta_start, self._lam / max(BETA_AUTO_GAP * med, 1e-12))
            log.info("beta ramp: %g -> %g over steps %d..%d", self.beta_start, self.beta_target, *ramp)
        frac = min((t - ramp[0] + 1) / (ramp[1] - ramp[0]), 1.0)
        return self.beta_start * (self.beta_target / self.beta_start) ** frac

    def _gather(self) -> Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.targets])

    def _write(self, flat: Tensor) -> None:
        torch._foreach_copy_(
            [t.data for t in self.targets],
            [c.view_as(t) for c, t in zip(flat.split(self.target_sizes), self.targets)],
        )

    @torch.no_grad()
    def freeze(self) -> Tensor:
        """Freeze the zero pattern of ``xi`` (the recovery phase); returns the frozen mask.

        Runs :attr:`before_freeze` first; an emptied unit keeps its strongest channel. The zero
        channels' scale and shift become exactly 0 and stay there (:meth:`step` re-zeroes them).
        """
        for fn in self.before_freeze:
            fn()
        xi, restored, self.coupled_kept_at_freeze = self._restore_empty(self.xi.clone(), 1)
        self.restored_at_freeze = restored
        self.frozen = xi[: self.total] == 0
        self._hold()
        self.xi = self._gather()
        log.info(
            "recovery phase: %d of %d BN channels frozen at zero%s%s",
            int(self.frozen.sum()), self.total, f", {len(restored)} emptied unit(s) kept one channel" if restored else "",
            f", {self.coupled_kept_at_freeze} zeros a coupled channel cannot lose kept" if self.coupled_kept_at_freeze
            else "",
        )  # fmt: skip
        return self.frozen

    def _hold(self) -> None:
        """Zero the frozen channels' scales and shifts."""
        if self.frozen is not None:
            zero_flat(zip(self.gammas, self.biases), self.frozen)

    # ------------------------------------------------------------------ the update
    def _alpha(self, optimizer: Optimizer | None, lr: float | None) -> float | Tensor | None:
        """The inverse data step of the scales: one number, or one per flat entry; ``None``: lr = 0."""
        if lr is not None:
            if lr <= 0:
                return None
            if all(t.requires_grad for t in self.targets):
                return 1.0 / float(lr)
            per = torch.tensor(
                [1.0 / float(lr) if t.requires_grad else math.inf for t in self.targets], dtype=self.xi.dtype
            )  # fmt: skip (a frozen BN: no step)
            return torch.repeat_interleave(per, torch.tensor(self.target_sizes)).to(self.device)
        if optimizer is None:
            raise EdgeslimError("ProximalSlimming.step needs the optimizer (for its lr) or lr=")
        groups = [optimizer.param_groups[gi] for gi in self._lr_groups(optimizer)]
        # a frozen tensor (requires_grad=False) takes no gradient step, so no prox step either
        lrs = [float(g["lr"]) if t.requires_grad else 0.0 for g, t in zip(groups, self.targets)]
        if self.prox_step == "effective":
            if all("betas" in g for g in groups):  # Adam family: per entry (sqrt(v_hat) + eps) / lr
                return self._adam_alpha(optimizer, groups, lrs)
            if not all(_sgd_shaped(g) for g in groups):
                self._say_plain_alpha(optimizer)
            lrs = [v * _momentum_gain(g) for v, g in zip(lrs, groups)]
        if all(v == lrs[0] for v in lrs):
            return None if lrs[0] <= 0 else 1.0 / lrs[0]
        per = torch.tensor([1.0 / v if v > 0 else math.inf for v in lrs], dtype=self.xi.dtype)
        return torch.repeat_interleave(per, torch.tensor(self.target_sizes)).to(self.device)

    def _lr_groups(self, optimizer: Optimizer) -> list[int]:
        """The param group of each target tensor; read again when the optimizer is another one or its
        groups or parameters changed in number (``add_param_group``: gradual unfreezing)."""
        key = (
            weakref.ref(optimizer),
            len(optimizer.param_groups),
            sum(len(g["params"]) for g in optimizer.param_groups),
        )
        cached = self._lr_map
        if cached is not None and cached[0][0]() is optimizer and cached[0][1:] == key[1:]:
            return cached[1]
        where = {id(p): gi for gi, grp in enumerate(optimizer.param_groups) for p in grp["params"]}
        missing = [n for n, g in zip(self.names, self.gammas) if id(g) not in where and g.requires_grad]
        if missing:
            raise EdgeslimError(
                f"the optimizer does not train the BN scales (e.g. {missing[0]}.weight); proximal slimming needs "
                "them in one of its param groups (an optimizer built before load_state_dict(assign=True) or "
                "to_empty() holds the replaced parameters: build it after)"
            )
        self._lr_map = (key, [where.get(id(t), where.get(id(self.gammas[0]), 0)) for t in self.targets])
        return self._lr_map[1]

    def _adam_alpha(
        self, optimizer: Optimizer, groups: list[dict[str, Any]], lrs: list[float]
    ) -> Tensor | None:
        """Adam/AdamW: ``(sqrt(v_hat) + eps) / lr`` per entry (``1/lr`` before its first step, and for an
        optimizer with ``betas`` but no second moment ``exp_avg_sq`` in its state: Adamax)."""
        if all(v <= 0 for v in lrs):
            return None
        parts = []
        for t, g, lr in zip(self.targets, groups, lrs):
            st = optimizer.state.get(t, {})  # type: ignore[call-overload]
            v = st.get("max_exp_avg_sq", st.get("exp_avg_sq"))
            if v is None and st:  # (stepped, without Adam's second moment)
                self._say_plain_alpha(optimizer)
            if lr <= 0:
                parts.append(torch.full((t.numel(),), math.inf, device=self.device))
            elif v is None:
                parts.append(torch.full((t.numel(),), 1.0 / lr, device=self.device))
            else:
                step = float(st.get("step", 1))
                v_hat = v.detach().reshape(-1) / (1.0 - g["betas"][1] ** max(step, 1.0))
                parts.append((v_hat.sqrt() + float(g["eps"])) / lr)
        return torch.cat(parts).to(self.device, self.xi.dtype)

    def _say_plain_alpha(self, optimizer: Optimizer) -> None:
        """Warn once that ``prox_step="effective"`` does not know ``optimizer``'s step: it gets ``1/lr``."""
        if not self._plain_alpha_said:
            self._plain_alpha_said = True
            log.warning(
                "prox_step='effective' reads the step of SGD (momentum) and of Adam-type optimizers (their "
                "second moment exp_avg_sq); %s gets alpha = 1/lr, as with prox_step='lr'",
                type(optimizer).__name__,
            )

    def mean_alpha(self, optimizer: Optimizer | None) -> float:
        """The mean of alpha over the entries (for controllers that set lambda from a shrink)."""
        a = self._alpha(optimizer, None) if optimizer is not None else None
        if a is None:
            return 0.0
        return float(a[torch.isfinite(a)].mean()) if isinstance(a, Tensor) else float(a)

    def prox(self, v: Tensor, tau: float | Tensor) -> Tensor:
        """The penalty's prox on the flat vector ``v`` (grouped over coupled channels if group mode)."""
        if self.grouped:
            return penalties.group_prox(
                self.penalty,
                v,
                self.group_index,
                tau,
                num_groups=self.num_groups,
                validate=False,
                **self.params,
            )
        return penalties.prox(self.penalty, v, tau, validate=False, **self.params)

    @torch.no_grad()
    def step(self, optimizer: Optimizer | None = None, *, lr: float | None = None) -> None:
        """One proximal update; call right after ``optimizer.step()`` (or pass ``lr=``)."""
        if self._wrapped and not self._wrapped_step:
            raise EdgeslimError(
                "this slimmer is wrapped into an optimizer (edgeslim.sparsity.wrap) whose step() runs the "
                "proximal update; calling slimmer.step() as well runs it twice per step: call one of them"
            )
        self._check_widths()
        if self.xi.device != self.gammas[0].device:  # the model moved (model.to(...))
            self._to(self.gammas[0].device)
        t, phase = self.t, self.phase
        if (
            t == 0
            and (optimizer is not None or lr is not None)
            and torch.equal(self._gather(), self.xi)
            and self._alpha(optimizer, lr) is not None
        ):
            log.warning(
                "slimmer.step() ran before the optimizer changed any BN scale: call it right after "
                "optimizer.step() (the proximal step follows each gradient step; called before, every "
                "gradient step moves its exact zeros off zero), and not after a step the optimizer skipped "
                "(AMP's GradScaler on inf gradients)"
            )
        if self._sync_hooks:
            self._drop_sync_hooks()
        self._sync_xi()  # (no backward reached the scales before this first step)
        self.t += 1
        if phase == "warmup":  # no prox: xi follows the scales, ready for the first update
            self.xi = self._gather()
            return
        if phase == "recovery":
            if self.frozen is None:
                self.freeze()
                if self.lr_at(t) is not None and self._restarted_at != t:
                    log.warning(
                        "recovery_lr %.3g was not applied: the optimizer stepped at its own rate; a plain "
                        "optimizer.step() cannot be given it, step through wrap(optimizer, slimmer) instead",
                        self.lr_at(t),
                    )
            self._hold()
            self.xi = self._gather()
            return
        alpha = self._alpha(optimizer, lr)
        if alpha is None:  # lr == 0: the gradient step did nothing, neither does the prox
            return
        self.beta = self._beta_at(t)
        gamma = self._gather()
        held = None  # entries whose lr is 0 (or frozen): neither step moves them
        if isinstance(alpha, Tensor) and not bool(torch.isfinite(alpha).all()):
            held = ~torch.isfinite(alpha)
            alpha = torch.where(held, 1.0, alpha)
            old_gamma, old_xi = gamma, self.xi
        denom = alpha + self.beta
        before = gamma
        gamma = (alpha * gamma + self.beta * self.xi) / denom
        tau: float | Tensor = self._lam / denom
        if self.weights is not None:
            tau = self.weights * tau if not self.zero_invariant else self.weights.repeat(2) * tau
        if self.importance == "layer":
            f = self.layer_factor()
            tau = f * tau if not self.zero_invariant else f.repeat(2) * tau
        pinned = None  # entries of a coupled channel with a held nonzero scale: no shrink (_pinned)
        if held is not None and self.grouped:
            pinned = self._pinned(held)
            if bool(pinned.any()):
                tau = torch.where(pinned, 0.0, tau)
                # (said of trainable scales only: a group whose scales are all held has none to leave alone)
                if not self._pinned_said and (count := int((pinned & ~held)[: self.total].sum())):
                    self._pinned_said = True
                    log.warning(
                        "%d BN scales share their coupled channel with a held nonzero scale (requires_grad=False, "
                        "or lr 0): surgery cannot remove such a channel, so the group penalty leaves it alone",
                        count,
                    )  # fmt: skip
        if self.penalty in ("mcp", "scad"):
            penalties.check_params(self.penalty, tau, **self.params)
        v = (alpha * self.xi + self.beta * gamma) / denom
        self.xi = self.prox(v, tau)
        # half precision: what the pull towards xi moved the scales by, after rounding (the shrink they got)
        applied = before.abs().float() - gamma.abs().float() if self._low_precision else None
        if self.aligner is not None:  # hold aligned channel counts with trained channels
            self.xi = self.aligner(self.xi, v)
        if pinned is not None:  # (shrunk counts no shrink for them)
            denom = torch.where(pinned, math.inf, denom)
        if held is not None:
            gamma, self.xi = torch.where(held, old_gamma, gamma), torch.where(held, old_xi, self.xi)
            if bool((~held).any()):
                denom = denom[~held]
                applied = applied[~held] if applied is not None else None
        self._write(gamma)
        self.steps += 1
        if applied is not None:
            self.shrunk = self.shrunk + applied.mean()
        else:
            self.shrunk = self.shrunk + (
                self._lam / denom if isinstance(denom, float) else (self._lam / denom).mean()
            )

    def _check_widths(self) -> None:
        """Refuse in one line a model whose BN layers changed width since the slimmer was built (surgery
        with ``inplace=True``): its xi, groups and weights are the dense model's."""
        for name, m, size in zip(self.names, self.bn_modules, self.sizes, strict=True):
            if m.weight.numel() != size:
                raise EdgeslimError(
                    f"the BN layers changed size since the slimmer was built ({name}: {m.weight.numel()} "
                    f"channels, {size} then; surgery?): build a new slimmer and optimizer for the slim model"
                )

    def _pinned(self, held: Tensor) -> Tensor:
        """Per entry: whether its group holds a held entry (frozen, or lr 0) that is nonzero. Surgery
        removes a coupled channel only when all its scales are zero, and a held scale never moves, so the
        group prox would only zero the others for nothing (zeros surgery cannot remove): such groups
        get no shrink, as per-channel penalties give such zeros back at :meth:`finalize`."""
        hit = (held & (self.xi != 0)).to(self.xi.dtype)
        per_group = torch.zeros(self.num_groups, dtype=hit.dtype, device=hit.device).index_add_(
            0, self.group_index, hit
        )
        return (per_group > 0)[self.group_index]

    def _to(self, device: torch.device) -> None:
        self.device = device
        built = self._xi_built is not None and self.xi is self._xi_built[0]
        self.xi = self.xi.to(device)
        if built:  # (still the copy taken at construction)
            self._xi_built = (self.xi, self.xi._version)
        self.group_index = self.group_index.to(device)
        self._layer_of = self._layer_of.to(device)
        if self.weights is not None:
            self.weights = self.weights.to(device)
        if isinstance(self.shrunk, Tensor):
            self.shrunk = self.shrunk.to(device)

    def lr_at(self, t: int) -> float | None:
        """The learning rate of step ``t`` set by ``recovery_lr`` (``None``: the trainer's schedule)."""
        if self.recovery_lr is None or self.phase_at(t) != "recovery":
            return None
        frac = (t - self.freeze_at) / self.recovery_steps  # type: ignore[operator]
        return 0.5 * self.recovery_lr * (1.0 + math.cos(math.pi * frac))

    def restart_lr(self, optimizer: Optimizer) -> list[float] | None:
        """Write the ``recovery_lr`` rate of the step about to be taken into ``optimizer``; returns the
        rates it replaced (``None``: nothing changed), for :meth:`restore_lr` after the step, so an
        LR scheduler that reads the group's rate never sees the restart.

        The param groups at the largest rate get it; every other group keeps its ratio to them (a
        backbone held at lr 0 stays at 0, a discriminative rate stays that share). The ratios are
        the groups' own rates at the step (the last ones with a rate > 0, if a schedule reached 0)."""
        lr = self.lr_at(self.t)
        if lr is None:
            return None
        saved = [float(group["lr"]) for group in optimizer.param_groups]
        top = max(saved, default=0.0)
        if top > 0:
            self._lr_ratios = [v / top for v in saved]
        ratios = (
            self._lr_ratios if self._lr_ratios is not None and len(self._lr_ratios) == len(saved) else None
        )
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr * (ratios[i] if ratios is not None else 1.0)
        self._restarted_at = self.t
        return saved

    @staticmethod
    def restore_lr(optimizer: Optimizer, saved: list[float] | None) -> None:
        if saved is not None:
            for group, lr in zip(optimizer.param_groups, saved):
                group["lr"] = lr

    def check_threshold(self, lrs: Sequence[float], gain: float = 1.0) -> None:
        """The penalty conditions that involve the prox threshold (mcp: ``g > tau``; scad), checked at
        the largest ``tau = lam / (1/(lr * gain) + beta)`` the planned learning rates ``lrs`` reach,
        before training starts (else they fail at the first step, inside the trainer). The per-channel
        weights and the layer factor (``importance="layer"``) scale it as in :meth:`step`."""
        if self.penalty not in ("mcp", "scad") or not lrs or max(lrs) <= 0:
            return
        tau = self._lam / (1.0 / (max(lrs) * gain) + float(self.beta_start))  # (beta only grows)
        if self.weights is not None:
            tau *= float(self.weights.max())
        if self.importance == "layer":
            tau *= float(self.layer_factor().max())
        penalties.check_params(self.penalty, tau, **self.params)

    def zero_count(self) -> int:
        """BN channels whose scale is exactly zero in ``xi`` now (the model's gamma reaches zero only at
        :meth:`finalize`: read this, not the model, to follow the sparsity during training)."""
        return int((self._xi_now()[: self.total] == 0).sum())

    def zero_mask(self) -> Tensor:
        """The BN channels :meth:`finalize` would zero now (flat, module order): ``xi == 0``, except
        that an emptied unit keeps its strongest channel. For copies of the model that must carry
        the same zeros during training (an EMA of the weights)."""
        xi, _, _ = self._restore_empty(self._xi_now().clone(), 1, quiet=True)
        return xi[: self.total] == 0

    # ------------------------------------------------------------------ TrainHook
    def after_backward(self, model: nn.Module, optimizer: Optimizer) -> None:
        self._saved_lr = self.restart_lr(optimizer)

    def after_step(self, model: nn.Module, optimizer: Optimizer) -> None:
        self.step(optimizer)
        self.restore_lr(optimizer, self._saved_lr)
        self._saved_lr = None

    def on_epoch_end(self, epoch: int, model: nn.Module) -> dict[str, float]:
        zero = self.xi[: self.total] == 0
        empty = sum(bool(zero[self.offsets[i] : self.offsets[i + 1]].all()) for i in range(len(self.names)))
        return {
            **gamma_stats(model),
            "xi_zero": float(zero.sum()),
            "xi_zero_frac": float(zero.float().mean()),
            "xi_empty_layers": float(empty),
            "lambda": self._lam,
            "beta": self.beta,
            "prox_phase": float(PHASES.index(self.phase_at(max(self.t - 1, 0)))),
            **({"recovery_lr": lr} if (lr := self.lr_at(max(self.t - 1, 0))) is not None else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "xi": self.xi.detach().cpu().clone(),
            "weights": None if self.weights is None else self.weights.detach().cpu().clone(),
            "lam": self._lam,
            "beta": self.beta,
            "penalty": ("group-" if self.grouped else "") + self.penalty,
            "params": dict(self.params),
            "names": list(self.names),
            "steps": self.steps,
            "t": self.t,
            "shrunk": float(self.shrunk),
            "restored_at_freeze": [list(u) for u in self.restored_at_freeze],
            "coupled_kept_at_freeze": self.coupled_kept_at_freeze,
            "beta_start": self.beta_start,
            "beta_target": self.beta_target,
            "importance": self.importance,
            "zero_invariant": self.zero_invariant,
            "scale_ref": self.scale_ref,
            "frozen": None if self.frozen is None else self.frozen.detach().cpu().clone(),
            "phases": {
                "warmup_steps": self.warmup_steps,
                "recovery_steps": self.recovery_steps,
                "total_steps": self.total_steps,
                "prox_step": self.prox_step,
            },  # fmt: skip
        }

    def _settings(self) -> dict[str, Any]:
        """The settings a saved state must have been trained with (:meth:`load_state_dict` compares them)."""
        phases = ("warmup_steps", "recovery_steps", "total_steps", "prox_step")
        return {
            "zero_invariant": self.zero_invariant,
            "penalty": ("group-" if self.grouped else "") + self.penalty,
            "params": dict(self.params),
            **{k: getattr(self, k) for k in phases},
            "importance": self.importance,
        }

    def _check_settings(self, state: dict[str, Any]) -> None:
        """Refuse a state trained with other settings, naming the first that differs (a state saved
        before a setting was saved is taken to have this run's; zero_invariant: from xi's length)."""
        saved = {**state, **state.get("phases", {})}
        if "zero_invariant" not in saved and state["xi"].numel() in (self.total, 2 * self.total):
            saved["zero_invariant"] = state["xi"].numel() == 2 * self.total
        for key, mine in self._settings().items():
            theirs = saved.get(key, mine)
            if theirs != mine:
                what = "penalty parameters" if key == "params" else key
                raise EdgeslimError(
                    f"the saved proximal-slimming state was trained with {what} {theirs!r}, this run uses "
                    f"{mine!r}; resume with the same setting",
                    param=None if key == "params" else key,
                )

    def check_state(self, state: dict[str, Any]) -> None:
        """Refuse, changing nothing, a saved state that :meth:`load_state_dict` cannot take: another
        model's (other BN layers or widths) or one trained with other settings."""
        xi, zi = state["xi"], state.get("zero_invariant")
        widths = (self.total, 2 * self.total) if zi is None else (self.total * (2 if zi else 1),)
        fits = list(state.get("names", self.names)) == self.names and xi.numel() in widths
        if fits:  # (the same layers at their widths: then a setting that differs is named)
            self._check_settings(state)
        weights = state.get("weights")
        if (
            not fits
            or xi.numel() != self.xi.numel()
            or (weights is not None and weights.numel() != self.total)
        ):
            raise EdgeslimError(
                "the saved proximal-slimming state belongs to another model "
                f"({xi.numel()} BN channels saved, this model has {self.total}); resume with the same model"
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        xi = state["xi"]
        self.xi = xi.to(self.device, self.xi.dtype).clone()
        self._xi_built = None
        self._drop_sync_hooks()
        self.set_weights(state.get("weights"))
        self.lam = state.get("lam", self._lam)
        self.beta = float(state.get("beta", self.beta))
        self.steps = int(state.get("steps", 0))
        self.t = int(state.get("t", self.steps))
        self.shrunk = float(state.get("shrunk", 0.0))
        self.restored_at_freeze = [list(u) for u in state.get("restored_at_freeze", [])]
        self.coupled_kept_at_freeze = int(state.get("coupled_kept_at_freeze", 0))
        self.beta_start = float(state.get("beta_start", self.beta))
        self.beta_target = state.get("beta_target", self.beta_target)
        if state.get("scale_ref") is not None:
            self.scale_ref, self._scale_ref_stale = float(state["scale_ref"]), False
        frozen = state.get("frozen")
        self.frozen = None if frozen is None else frozen.to(self.device, torch.bool).clone()

    # ------------------------------------------------------------------ the end
    @contextmanager
    def xi_assigned(self) -> Iterator[None]:
        """Within the block the scales are ``gamma := xi`` (emptied units keep their strongest
        channel, as :meth:`finalize` does); afterwards the trained values are back. Measures what
        the assignment costs (the fixed-point gap ``lam/beta``)."""
        with torch.no_grad():
            saved = self._gather().clone()
            xi, _, _ = self._restore_empty(self.xi.clone(), 1)
            self._write(xi)
        try:
            yield
        finally:
            with torch.no_grad():
                self._write(saved)

    def _restore_empty(
        self, xi: Tensor, keep_min: int, quiet: bool = False
    ) -> tuple[Tensor, list[list[str]], int]:
        """``xi`` with the ``keep_min`` strongest channels of every emptied unit put back (trained
        values), and the zeros a coupled channel cannot lose given back (:meth:`_keep_coupled`, their
        count last); ``quiet``: without a log line per unit (a look, not the final assignment)."""
        n = self.total
        trained = self._gather()
        gamma = trained[:n]
        restored: list[list[str]] = []
        for unit in self.units:
            where = self._unit_positions(unit).to(xi.device)
            slots = where.shape[1]
            alive = int((xi[where] != 0).any(0).sum())
            if slots == 0 or alive >= min(keep_min, slots):
                continue
            top = torch.topk(gamma[where].norm(dim=0), min(keep_min, slots)).indices
            for off in (0, n) if self.zero_invariant else (0,):
                xi[where[:, top] + off] = trained[where[:, top] + off]
            names = [name for name, _ in unit]
            restored.append(names)
            if not quiet:
                log.info("proximal slimming emptied %s; kept its %d strongest channel(s)", names, len(top))
        return xi, restored, self._keep_coupled(xi, trained)

    def _keep_coupled(self, xi: Tensor, trained: Tensor) -> int:
        """Give back their trained values (in place) to the zeros of ``xi`` that share their coupled
        channel with a nonzero scale: surgery removes a coupled channel only when every scale of it is
        zero, so such a zero would cut a branch (a residual block's last BN) and remove nothing. A
        per-channel penalty leaves them (a trial: 960 in a timm ResNet-18, 11 points of accuracy lost
        at finalize); a group penalty zeroes a coupled channel whole. Returns how many."""
        if self.grouped:
            return 0
        kept = 0
        for unit in self.units:
            if len(unit) < 2:
                continue
            where = self._unit_positions(unit).to(xi.device)
            zero = xi[where] == 0
            stranded = zero & ~zero.all(0, keepdim=True)
            if bool(stranded.any()):
                at = where[stranded]
                xi[at] = trained[at]
                kept += int(stranded.sum())
        return kept

    @torch.no_grad()
    def finalize(self, keep_min: int = 1, assign: str = "zeros", *, warn: bool = True) -> FinalizeReport:
        """Make the BN scales exactly sparse from ``xi``, never emptying a BN layer or coupled unit.

        ``assign="zeros"`` (default): ``gamma <- 0`` where ``xi == 0``, the trained gamma elsewhere;
        ``assign="xi"``: ``gamma <- xi`` everywhere (also shrinks the kept scales by the last
        prox gap, about ``lam/beta``; in a BN network that shifts every layer's scale against its
        bias, which cost accuracy in our runs). Either way the zero pattern is xi's: no threshold.

        An emptied unit keeps its ``keep_min`` strongest channels (largest ``|gamma|``, the
        norm over the coupled layers), with gamma left at its trained value. The biases of the
        zeroed channels stay in place (the channel outputs that constant; surgery folds it).
        The scales are the ones given at construction. ``warn``: log a warning when no scale reached
        zero (a caller that reports it itself passes False).
        """
        if assign not in ("zeros", "xi"):
            raise EdgeslimError(f"finalize assign must be 'zeros' or 'xi', got {assign!r}")
        self._check_widths()
        if self.xi.device != self.gammas[0].device:
            self._to(self.gammas[0].device)
        self._sync_xi()
        n = self.total
        trained = self._gather()
        xi, restored, coupled = self._restore_empty(self.xi.clone(), keep_min)
        coupled += self.coupled_kept_at_freeze  # (a recovery phase never froze those)
        restored = [*self.restored_at_freeze, *(u for u in restored if u not in self.restored_at_freeze)]
        self.xi = xi
        dead = (xi[:n] == 0).repeat(2 if self.zero_invariant else 1)
        self._write(xi if assign == "xi" else torch.where(dead, torch.zeros_like(trained), trained))
        layers: list[dict[str, Any]] = []
        bias_left: dict[str, Tensor] = {}
        for name, g, b in zip(self.names, self.gammas, self.biases):
            zero = g.detach().reshape(-1) == 0
            row: dict[str, Any] = {"name": name, "channels": int(zero.numel()), "kept": int((~zero).sum())}
            if b is not None and bool(zero.any()):
                left = b.detach().reshape(-1)[zero].clone()
                bias_left[name] = left.cpu()
                row["bias_left_max_abs"] = float(left.abs().max())
                row["bias_left_positive"] = int((left > 0).sum())
            layers.append(row)
        zeroed = int((xi[:n] == 0).sum())
        if warn and zeroed == 0 and self.steps and self._lam > 0 and not coupled:
            log.warning(
                "no BN scale reached zero in %d proximal steps: they shrank a scale by %.3g in all on average (lambda "
                "%.3g), less than the scales hold or than the gradients gave back (they average |gamma| %.3g); a stronger "
                "shrink (lambda_for_shrink) reaches zeros, a budget finds the strength itself (docs/budget.md)",
                self.steps, float(self.shrunk), self._lam, float(trained[:n].abs().mean()),
            )  # fmt: skip
        elif warn and restored:
            log.warning(
                "the prox emptied %d of %d BN layer groups (each kept its strongest channel; %d of %d channels "
                "zero): lambda %.3g is too strong for this schedule; lower the shrink, or slim to a budget",
                len(restored), len(self.units), zeroed, n, self._lam,
            )  # fmt: skip
        if warn and coupled:
            log.warning(
                "%d BN scales the prox zeroed share their channel with a nonzero scale of a coupled layer (a "
                "residual sum): surgery cannot remove them, so they keep their trained values; a group penalty "
                "(penalty='group-l1', or zero_invariant=True) drives coupled scales to zero together",
                coupled,
            )  # fmt: skip
        return FinalizeReport(self.total, zeroed, layers, restored, bias_left, coupled)


def _refuse_unknown_keywords(cls: type, given: dict[str, Any]) -> None:
    """A keyword that is no parameter of ``cls`` nor of any penalty: Python's own one-line complaint
    (with the closest parameter name), not "penalty 'l1' takes no parameter ..." (a typo'd setting)."""
    known = {k for params in penalties.PENALTIES.values() for k in params}
    stray = [k for k in given if k not in known]
    if stray:
        own = inspect.signature(cls.__init__).parameters.values()
        names = [p.name for p in own if p.name not in ("self", "model") and p.kind is not p.VAR_KEYWORD]
        close = difflib.get_close_matches(stray[0], names + sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise EdgeslimError(f"{cls.__name__}() got an unexpected keyword argument {stray[0]!r}{hint}")


#: attributes a slimmer pickled by an older edgeslim may lack, with the values they start from
_OLDER_STATE = {
    "_wrapped": False,
    "_scale_ref_stale": False,
    "_pinned_said": False,
    "_plain_alpha_said": False,
}


def _sgd_shaped(group: dict[str, Any]) -> bool:
    """Whether a param group is SGD's (``momentum`` with ``dampening``; RMSprop's has no ``dampening``)."""
    return "momentum" in group and "dampening" in group


def _momentum_gain(group: dict[str, Any]) -> float:
    """How much longer the effective step of an SGD param group is than ``lr``: ``(1 - d)/(1 - m)``.

    With momentum m and dampening d a steady gradient g moves a weight by ``lr (1 - d)/(1 - m) g``
    per step (Nesterov too); groups without momentum, and other optimizers' (RMSprop): 1.
    """
    if not _sgd_shaped(group):
        return 1.0
    m = float(group.get("momentum", 0.0) or 0.0)
    d = float(group.get("dampening", 0.0) or 0.0)
    return (1.0 - d) / (1.0 - m) if 0.0 < m < 1.0 else 1.0


def parse_phase(value: float | str, name: str = "phase") -> tuple[str, float]:
    """``("epochs", n)`` for a number (0 = no phase) or ``("fraction", f)`` for ``"25%"``."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            frac = float(text[:-1]) / 100.0
            if not 0.0 <= frac < 1.0:
                raise ValueError
            return "fraction", frac
        epochs = float(text)
        if not epochs >= 0 or not math.isfinite(epochs):
            raise ValueError
        return "epochs", epochs
    except ValueError:
        raise EdgeslimError(
            f"{name} must be a number of epochs >= 0 (e.g. 1 or 0.5) or a share of training below 100% "
            f"(e.g. 25%), got {value!r}",
            param=name,
        ) from None


def check_phases(
    prox_step: str,
    warmup_steps: int,
    recovery_steps: int,
    total_steps: int | None,
    beta_end: float | str | None,
    recovery_lr: float | None = None,
    beta: float | None = None,
) -> tuple[str, float | str | None]:
    """Validate the phase and step settings; returns ``(prox_step, beta_end)`` normalised.
    ``total_steps=None``: the phases' lengths are not known yet (only the values are checked);
    ``beta``: the starting beta, which a numeric ``beta_end`` must not be below (the ramp grows it)."""
    if prox_step not in PROX_STEPS:
        raise EdgeslimError(
            f"prox_step must be one of {', '.join(PROX_STEPS)}, got {prox_step!r}", param="prox_step"
        )
    if warmup_steps < 0 or recovery_steps < 0:
        raise EdgeslimError("warm-up and recovery steps must be >= 0", param=("prox_warmup", "recovery"))
    if recovery_steps and total_steps is None:
        raise EdgeslimError(
            "a recovery phase needs total_steps (the length of training in steps)", param="recovery"
        )
    if total_steps is not None and warmup_steps + recovery_steps >= total_steps:
        raise EdgeslimError(
            f"prox_warmup ({warmup_steps} steps) and recovery ({recovery_steps} steps) leave no step of the "
            f"{total_steps} for sparsification; shorten them or train longer",
            param=("prox_warmup", "recovery"),
        )
    if beta_end is not None and beta_end != "auto":
        try:
            beta_end = float(beta_end)
        except (TypeError, ValueError):
            raise EdgeslimError(
                f"beta_end must be a number or 'auto', got {beta_end!r}", param="beta_end"
            ) from None
        if not beta_end > 0 or not math.isfinite(beta_end):
            raise EdgeslimError(f"beta_end must be > 0, got {beta_end}", param="beta_end")
        if beta is not None and beta_end < beta:
            raise EdgeslimError(
                f"beta_end ({beta_end:g}) is below beta ({beta:g}), and the ramp only grows the weight: raise it to at "
                f"least {beta:g}, or leave it out",
                param=("beta_end", "beta"),
            )
    if recovery_lr is not None:
        if not isinstance(recovery_lr, (int, float)) or not recovery_lr > 0 or not math.isfinite(recovery_lr):
            raise EdgeslimError(
                f"recovery_lr must be a learning rate > 0, got {recovery_lr!r}", param="recovery_lr"
            )
        if total_steps is not None and not recovery_steps:
            raise EdgeslimError(
                "recovery_lr restarts the learning rate when the recovery phase starts; give it a recovery "
                "phase (e.g. 50%)",
                param=("recovery_lr", "recovery"),
            )
    return prox_step, beta_end


def check_importance(importance: str, penalty: str = "l1") -> str:
    """``importance`` if it is one of :data:`IMPORTANCE` and works with ``penalty``, else a one-line
    error (MCP and SCAD need every threshold below their ``g`` / ``a*l`` bound, which the per-layer
    factor of ``"layer"`` can lift a layer's threshold over)."""
    if importance not in IMPORTANCE:
        raise EdgeslimError(
            f"importance must be one of {', '.join(IMPORTANCE)}, got {importance!r}", param="importance"
        )
    if importance == "layer" and penalty.removeprefix("group-") in ("mcp", "scad"):
        raise EdgeslimError(
            f"importance 'layer' does not work with the {penalty} penalty (a layer's scaled threshold can "
            "exceed its bound); use l1, lp or tl1, or importance 'absolute'",
            param=("importance", "penalty"),
        )
    return importance


# ----------------------------------------------------------------------------- optimizer wrapper
def _shared(name: str) -> property:
    """``ProxOptimizer.<name>``: the wrapped optimizer's attribute (set aside while the base class's
    ``__init__`` runs, before there is one)."""

    def get(self: ProxOptimizer) -> Any:
        inner = self.__dict__.get("optimizer")
        return getattr(inner, name) if inner is not None else self.__dict__[f"_own_{name}"]

    def put(self: ProxOptimizer, value: Any) -> None:
        inner = self.__dict__.get("optimizer")
        if inner is not None:
            setattr(inner, name, value)
        else:
            self.__dict__[f"_own_{name}"] = value

    return property(get, put)


class ProxOptimizer(Optimizer):
    """An optimizer whose ``step()`` is ``optimizer.step()`` followed by the proximal update.

    A :class:`torch.optim.Optimizer` whose ``param_groups``, ``state`` and ``defaults`` are the
    wrapped optimizer's own (read through it, so a ``load_state_dict`` on either keeps them one), so
    LR schedulers, ``GradScaler`` (which unscales the gradients itself: a fused optimizer inside
    never sees its scale) and step hooks take it as they take the wrapped one; ``zero_grad`` and
    ``add_param_group`` go to the wrapped optimizer, and so does any attribute this class does not
    have. ``state_dict()`` holds both states. The wrapped optimizer stays reachable as ``opt.optimizer``.
    """

    #: GradScaler unscales and checks for inf itself (it would hand a fused optimizer's scale to this
    #: wrapper, which the optimizer inside never reads)
    _step_supports_amp_scaling = False
    param_groups = _shared("param_groups")
    state = _shared("state")
    defaults = _shared("defaults")

    def __init__(self, optimizer: Optimizer, slimmer: ProximalSlimming) -> None:
        if not isinstance(optimizer, Optimizer):
            raise EdgeslimError(f"wrap needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # the base class sets up its hook tables and step profiling on copies of the groups (kept
        # aside, see _shared), so the wrapped optimizer is not touched
        super().__init__([dict(group) for group in optimizer.param_groups], optimizer.defaults)
        self.optimizer = optimizer
        self.slimmer = slimmer
        slimmer._wrapped = True

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        self.slimmer._check_widths()  # (before the optimizer steps: a refusal changes nothing)
        if closure is None and not self.__dict__.get("_no_grad_said") and not self._any_grad():
            self._no_grad_said = True
            log.warning(
                "the optimizer stepped with no gradient on any of its parameters: no backward reached them (none "
                "ran before the step, every parameter is frozen, or the loss came from another model's: surgery "
                "gives the slim model parameters of its own); call backward on the loss of the model the "
                "optimizer holds, with parameters that require grad, and after surgery build a new optimizer, "
                "and slimmer, for the model you train"
            )
        saved = self.slimmer.restart_lr(self.optimizer)  # recovery_lr, if set
        try:
            loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
            self.slimmer._wrapped_step = True
            self.slimmer.step(self.optimizer)
        finally:
            self.slimmer._wrapped_step = False
            self.slimmer.restore_lr(self.optimizer, saved)
        return loss

    def _any_grad(self) -> bool:
        """Whether a parameter of the optimizer has a gradient (the first one, in a step that trains)."""
        return any(p.grad is not None for group in self.optimizer.param_groups for p in group["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "optimizer" not in self.__dict__:  # the base class's __init__, before the wrapped one is set
            super().add_param_group(param_group)
        else:
            self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizer": self.optimizer.state_dict(), "slimming": self.slimmer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Both states; a plain optimizer's ``state_dict`` (a checkpoint from before slimming) goes to the
        wrapped optimizer, and the slimmer keeps its own state."""
        if isinstance(state, dict) and "optimizer" not in state and "param_groups" in state:
            check_optimizer_state(self.optimizer, state)
            self.optimizer.load_state_dict(state)
            log.info("loaded a plain optimizer state into the wrapped optimizer; the slimmer keeps its state")
            return
        if not isinstance(state, dict) or "optimizer" not in state or "slimming" not in state:
            raise EdgeslimError(
                "not a state_dict of an optimizer: give what opt.state_dict() returned (the optimizer's and "
                "the slimmer's states) or a plain optimizer's state_dict"
            )
        # both checked before either is loaded: a refusal leaves the optimizer and the slimmer as they were
        self.slimmer.check_state(state["slimming"])
        check_optimizer_state(self.optimizer, state["optimizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.slimmer.load_state_dict(state["slimming"])

    def __getstate__(self) -> dict[str, Any]:
        """Copy and pickle keep the wrapped optimizer and the slimmer; the hook tables and step patches
        (an LR scheduler's, which points back at this object) are made afresh by ``__setstate__``."""
        return {"optimizer": self.optimizer, "slimmer": self.slimmer}

    def __getattr__(self, name: str) -> Any:
        if name == "optimizer":  # not set yet (during __init__ or unpickling)
            raise AttributeError(name)
        return getattr(self.optimizer, name)


#: per-parameter optimizer states shaped as their parameter (SGD's momentum, Adam's moments, RMSprop's,
#: Adagrad's, Adadelta's, ASGD's and Rprop's); others (Adafactor's factored rows) may differ
_PARAM_SHAPED = (
    "momentum_buffer",
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
    "square_avg",
    "acc_delta",
    "sum",
    "ax",
    "prev",
)


def check_optimizer_state(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """Refuse, before ``optimizer.load_state_dict(state)`` changes anything, a saved state whose
    parameter-shaped buffers (:data:`_PARAM_SHAPED`) do not have their parameter's shape: a dense
    model's state given to its slim model, which torch takes and fails on at the next step."""
    groups = state.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        return  # (torch's own load_state_dict refuses it, changing nothing)
    params = {}
    for saved, group in zip(groups, optimizer.param_groups, strict=True):
        params.update(zip(saved.get("params", []), group["params"], strict=False))
    for index, entry in (state.get("state") or {}).items():
        p = params.get(index)
        for key, t in entry.items() if p is not None and isinstance(entry, dict) else ():
            if key in _PARAM_SHAPED and isinstance(t, torch.Tensor) and t.shape != p.shape:
                raise EdgeslimError(
                    f"the saved optimizer state belongs to another model (its {key} of parameter {index} has "
                    f"shape {tuple(t.shape)}, the parameter {tuple(p.shape)}): after surgery, start a new "
                    "optimizer for the slim model"
                )


def wrap(optimizer: Optimizer, slimmer: ProximalSlimming) -> ProxOptimizer:
    """``opt = wrap(optimizer, slimmer)``: ``opt.step()`` runs the optimizer, then the prox."""
    return ProxOptimizer(optimizer, slimmer)


# ----------------------------------------------------------------------------- choosing lambda
def planned_shrink_per_lambda(lrs: Iterable[float], beta: float = DEFAULT_BETA, gain: float = 1.0) -> float:
    """``sum_t 1/(alpha_t + beta)``: the total prox shrink of a run per unit of lambda.

    ``alpha_t = 1/(gain lr_t)``; ``gain`` is the optimizer's step gain (``1/(1 - m)`` for SGD
    with momentum m and ``prox_step="effective"``, else 1). Pass only the steps the prox acts on.
    """
    return float(sum(gain * lr / (1.0 + beta * gain * lr) for lr in lrs if lr > 0))


def check_strength(lam: float | None, shrink: float | None, budget: bool = False) -> None:
    """The penalty strength has one source: ``lam``, ``shrink`` (lambda from the planned lr
    schedule, :func:`lambda_for_shrink`) or a budget (which sets lambda; ``lam`` is its start)."""
    if lam is not None and shrink is not None:
        raise EdgeslimError("give lam or shrink, not both", param=("lam", "shrink"))
    if budget and shrink is not None:
        raise EdgeslimError(
            "shrink and a budget target exclude each other (the budget sets lambda)", param="shrink"
        )


def lambda_for_shrink(
    shrink: float, lrs: Iterable[float], beta: float = DEFAULT_BETA, gain: float = 1.0
) -> float:
    """The lambda whose summed per-step shrink ``tau_t`` over the planned lr schedule is ``shrink``."""
    if not shrink > 0:
        raise EdgeslimError(f"shrink must be > 0, got {shrink}", param="shrink")
    per = planned_shrink_per_lambda(lrs, beta, gain)
    if per <= 0:
        raise EdgeslimError("the planned lr schedule has no step with lr > 0; cannot derive lambda")
    return shrink / per


# ----------------------------------------------------------------------------- trainer method
@register_method("proximal")
def _proximal(
    model: nn.Module,
    lam: float = DEFAULT_LAMBDA,
    beta: float = DEFAULT_BETA,
    penalty: str = "l1",
    input_shape: Sequence[int] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    zero_invariant: bool = False,
    prox_step: str = "lr",
    warmup_steps: int = 0,
    recovery_steps: int = 0,
    total_steps: int | None = None,
    beta_end: float | str | None = None,
    recovery_lr: float | None = None,
    importance: str = "absolute",
    **penalty_params: Any,
) -> ProximalSlimming:
    """Proximal network slimming (``input_shape`` = (C, H, W) finds coupled BN groups; phases,
    ``prox_step`` and ``importance`` as in :class:`ProximalSlimming`)."""
    example = None
    if input_shape is not None and groups is None:
        p = next(model.parameters())
        example = torch.zeros(1, *[int(v) for v in input_shape], device=p.device, dtype=p.dtype)
    return ProximalSlimming(
        model,
        lam=lam,
        beta=beta,
        penalty=penalty,
        groups=groups,
        example_input=example,
        zero_invariant=zero_invariant,
        prox_step=prox_step,
        warmup_steps=warmup_steps,
        recovery_steps=recovery_steps,
        total_steps=total_steps,
        beta_end=beta_end,
        recovery_lr=recovery_lr,
        importance=importance,
        **penalty_params,
    )
