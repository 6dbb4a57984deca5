"""Resource of a network as an exact, vectorised function of which BN channels are alive.

One trace of the model (surgery's dependency graph) gives *channel groups*: every class
(one removable channel index, with everything coupled to it) of a group touches the same
layer dimensions the same number of times, so the resource depends only on the number
``k_g`` of alive classes per group. With ``M[t, g]`` = how many channels of touch ``t``
(a conv/linear input or output, a BN) one class of group ``g`` is, every layer's channel
counts are ``n = M @ k`` and

* MACs   = sum over layers of :func:`edgeslim.channels.cost.layer_macs` at ``(n_in, n_out)``;
* params = the untracked parameters + :func:`edgeslim.channels.cost.layer_params` of every layer,
  plus the bias that channel surgery adds to a bias-free consumer when it folds the
  constant of a removed channel into it (only where the trace reads a removed channel as a constant,
  not an exact zero: none with ``shifts_zeroed``; after surgery, the layers it folded into, see
  :meth:`ResourceModel.value`);
* latency = :func:`edgeslim.channels.cost.predict_latency` (roofline of a device profile,
  channel counts padded to the profile's alignment) of per-kernel MACs and bytes (the conv/linear
  layers with what a runtime fuses into them, and every other kernel: pools, gates, concats, by
  :func:`edgeslim.channels.cost.fuse_kernels`, as ``bench --predict`` prices the ONNX), or a
  measured per-layer latency table: each layer's full-width time plus what its measured
  channel sweep (:func:`edgeslim.channels.cost.sweep_latency`) gains at the slim counts, or
  scaled by its MACs without a sweep.

A class is *removable* (surgery will cut it when all its BN scales are zero) if it has a
BN, no barrier touches it, and every consumer reads it through a BN; this is found once,
by tracing a copy of the model whose BN scales are all zero (surgery's own
:func:`~edgeslim.channels.graph.removable_classes` on it). A class is alive when it is not
removable or one of its BN entries in ``xi`` is nonzero; a group never drops below one
channel (surgery and :meth:`ProximalSlimming.finalize` keep one), and ``round_to`` rounds
kept counts up as surgery does. Evaluating ``R`` costs two ``index_add`` and a small
matrix product: no tracing per evaluation.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from edgeslim.channels.cost import (
    ELEM_BYTES,
    LayerCost,
    SweepGrid,
    forward_batch,
    fuse_kernels,
    interp_linear,
    layer_macs,
    layer_params,
    parse_sweep,
    predict_latency,
    sweep_latency,
    whole_positions,
)
from edgeslim.channels.devices import DeviceProfile, load_profile
from edgeslim.channels.graph import CONST, class_states, deployed_graph, removable_classes
from edgeslim.channels.norm import bn_layers, zero_flat
from edgeslim.channels.rounding import kept_counts
from edgeslim.counting import layer_channels
from edgeslim.errors import EdgeslimError
from edgeslim.sparsity.targets import METRICS
from edgeslim.utils.console import human
from edgeslim.utils.io import read_json
from edgeslim.utils.modes import eval_mode, refuse_lazy, uncompiled

log = logging.getLogger(__name__)

#: a swept layer never drops below this fraction of its time scaled by the sweep's ratio
SWEEP_FLOOR = 0.2
#: the latency tables without recorded widths already warned about (once each)
_UNCHECKED_TABLES: set[tuple[str, str, int]] = set()


@dataclass
class _Layer:
    name: str
    kind: str  # conv | dw | linear | bn
    in_touch: int  # -1: none
    out_touch: int
    kernel: int
    groups: int
    bias: bool
    in_spatial: int
    out_spatial: int  # positions of the output activation
    mac_spatial: int  # positions the MACs are counted over (a transposed conv: its input's)


class ResourceModel:
    """``R(alive channels)`` for one model and one metric (see the module docstring).

    Build with :func:`build_resource`. ``xi`` arguments are flat over all affine BN channels
    in module order (the layout of :class:`~edgeslim.sparsity.prox.ProximalSlimming`).
    ``shifts_zeroed``: the slimmer zeroes a dead channel's BN shift with its scale (its
    ``zero_invariant``); else the shift stays nonzero, and a channel that an input-dependent gate
    multiplies (squeeze-excitation) is not removable. What the model is built from depends on
    that alone, never on the model's current weights, so a resumed run builds the same one.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Tensor,
        metric: str = "macs",
        *,
        profile: Any = None,
        precision: str | None = None,
        batch: int = 1,
        latency_table: dict[str, Any] | None = None,
        round_to: int = 1,
        shifts_zeroed: bool = False,
    ) -> None:
        if metric not in METRICS:
            raise EdgeslimError(f"unknown resource {metric!r}; choose one of: {', '.join(METRICS)}")
        if round_to < 1:
            raise EdgeslimError(f"round_to must be >= 1, got {round_to}", param="round_to")
        self.metric, self.round_to, self.batch = metric, int(round_to), int(batch)
        self.shifts_zeroed = bool(shifts_zeroed)
        refuse_lazy(model)
        layers = bn_layers(model)
        if not layers:
            raise EdgeslimError("the model has no affine BatchNorm layers; budgets act on BN channels")
        self.bn_names = [n for n, _ in layers]
        sizes = [int(m.weight.numel()) for _, m in layers]
        offsets = dict(zip(self.bn_names, [sum(sizes[:i]) for i in range(len(sizes))]))
        self.total = sum(sizes)

        # Trace a copy whose BN scales are all zero: its removable classes are those that
        # surgery cuts once their scales reach zero (and its shifts as the slimmer leaves a dead
        # channel's: zero, or not; not the values they have now, which differ on a resume).
        example = example_input.detach().cpu().float()[:1]
        self.example_shape = list(example.shape)  # [1, C, H, W]: the size the layers are priced at
        g, removable = _removable_trace(model, example, shifts_zeroed, kernels=metric == "latency")
        self.graph = g
        k_classes = g.num_classes
        self.num_groups = len(g.groups)
        group_of_class = torch.full((k_classes,), -1, dtype=torch.long)
        for grp in g.groups:
            group_of_class[grp.classes] = grp.index
        self.group_of_class = group_of_class
        self.group_size = torch.tensor([grp.size for grp in g.groups], dtype=torch.float64)
        self.removable = removable
        # the layers that read a removed channel as a constant (not an exact zero): surgery folds it into
        # their bias, a new one where they have none (an upper bound: a constant measured 0 adds none)
        self.folding = {
            t.module
            for t, cls in zip(g.touches, g.touch_classes)
            if t.read_state is not None and bool(((t.read_state == CONST) & removable[cls]).any())
        }
        # flat BN position -> class
        pos_class = torch.full((self.total,), -1, dtype=torch.long)
        for t, cls in zip(g.touches, g.touch_classes):
            if t.kind == "bn" and t.module in offsets:
                o = offsets[t.module]
                pos_class[o : o + cls.numel()] = cls
        if bool((pos_class < 0).any()):
            raise EdgeslimError("some BatchNorm channels are not in the dependency graph; cannot budget them")
        self.pos_class = pos_class
        self.pos_removable = removable[pos_class]
        # M[t, g]: channels of touch t per alive class of group g
        n_touch = len(g.touches)
        m = torch.zeros(n_touch, self.num_groups, dtype=torch.float64)
        for ti, cls in enumerate(g.touch_classes):
            gi = group_of_class[cls]
            m[ti].index_add_(0, gi, torch.ones(gi.numel(), dtype=torch.float64))
        self.touch_matrix = m / self.group_size.clamp(min=1)
        self.layers = self._layers(model, example)
        # a module called more than once (a head shared by pyramid levels) has one row per call: its
        # MACs and the weights it reads count per call, its parameters once
        first = {}
        for i, layer in enumerate(self.layers):
            first.setdefault(layer.name, i)
        self._params_once = torch.tensor(
            [first[layer.name] == i for i, layer in enumerate(self.layers)], dtype=torch.float64
        )
        # (and a weight or bias several layers share, tied weights, once: at the first layer holding it)
        self._weight_once, self._bias_once = (
            torch.tensor(g.counted_once(), dtype=torch.float64).reshape(-1, 2).T
        )
        self.in_idx = torch.tensor([max(layer.in_touch, 0) for layer in self.layers], dtype=torch.long)
        self.has_in = torch.tensor([layer.in_touch >= 0 for layer in self.layers])
        self.out_idx = torch.tensor([layer.out_touch for layer in self.layers], dtype=torch.long)
        self.dense_k = self.group_size.clone()
        self.const_params = float(g.params()) - self._params_from(self.dense_k, dense=True)
        # per layer, for the roofline (evaluated many times by the projection): activation positions, and
        # a depthwise layer's input read at one channel per ``multiplier`` outputs (its n_in is 1: no touch)
        self._in_spatial = torch.tensor([layer.in_spatial for layer in self.layers], dtype=torch.float64)
        self._out_spatial = torch.tensor([layer.out_spatial for layer in self.layers], dtype=torch.float64)
        self._dw = torch.tensor([layer.kind == "dw" for layer in self.layers])
        # (a layer reading the model input, an image's channels as they are: not padded to the device's
        # multiple; not where a layer writes into those channels too, x + f(x), as bench --predict)
        image = g.input_classes.clone()
        for layer in self.layers:
            image[g.touch_classes[layer.out_touch]] = False
        self._image_classes = image
        self._reads_input = torch.tensor(
            [
                layer.in_touch >= 0 and bool(image[g.touch_classes[layer.in_touch]].all())
                for layer in self.layers
            ],
            dtype=torch.bool,
        )
        d_out = self.touch_matrix[self.out_idx] @ self.dense_k
        groups = torch.tensor([layer.groups for layer in self.layers], dtype=torch.float64)
        self._dw_in_per_out = groups / d_out.clamp(min=1)
        self._setup_kernels()
        # latency settings
        self.profile = self.precision = None
        self.efficiency = None
        self.table: dict[str, float] | None = None
        self.table_fixed = 0.0
        self.table_unit = 1e-3  # seconds per unit of a table's times (ms unless it says)
        self._table_base: tuple[list[float], list[float]] | None = None
        self.sweeps: dict[int, tuple[SweepGrid, float]] = {}
        #: (lookup sum of the dense network, predicted fractions, measured fractions, measured dense seconds)
        self.calibration: tuple[float, list[float], list[float], float] | None = None
        self.table_total: float | None = None  # a table's measured whole run (seconds), where it records one
        self.width_points = False  # the table has whole networks measured at uniform widths
        if metric == "latency":
            self._setup_latency(profile, precision, latency_table, model)
            if self.width_points:
                self._check_width_cut(model, example, latency_table["calibration"], shifts_zeroed)
        self.dense = self.value(self.dense_k)
        self.minimum = self.narrowest()
        #: the same resource with zero-invariant removability, where channels an input-dependent gate
        #: multiplies (squeeze-excitation) are kept only because their shifts are (MACs and parameters):
        #: what a budget refused, or an alignment reduced, could reach with ``zero_invariant``
        self.zero_invariant: ResourceModel | None = None
        if not self.shifts_zeroed and metric in ("macs", "params"):
            if removal_candidates(model, example, from_graph=g)["gated"]:
                self.zero_invariant = ResourceModel(
                    model, example, metric, round_to=round_to, shifts_zeroed=True
                )

    # ------------------------------------------------------------------ construction
    def _layers(self, model: nn.Module, example: Tensor) -> list[_Layer]:
        """Layer shapes from the graph; a conv's input and output spatial sizes from one forward
        pass (hooks)."""
        g = self.graph
        names = {c.module for c in g.costs}
        in_spatial: dict[str, int] = {}
        out_spatial: dict[str, int] = {}
        mods = dict(uncompiled(model).named_modules())  # (as the graph names them)
        handles = []

        batch = forward_batch(example.shape)

        def positions(t: Any) -> int:
            if not isinstance(t, Tensor) or t.dim() < 2:
                return 1
            return whole_positions(t.shape, batch)

        for name in names:

            def pre(_m: nn.Module, args: tuple, name: str = name) -> None:
                in_spatial.setdefault(name, positions(args[0]))

            def post(_m: nn.Module, _args: tuple, out: Any, name: str = name) -> None:
                out_spatial.setdefault(name, positions(out))

            handles.append(mods[name].register_forward_pre_hook(pre))
            handles.append(mods[name].register_forward_hook(post))
        try:
            p = next(model.parameters())
            with eval_mode(model), torch.no_grad():
                model(example.to(p.device, p.dtype))
        finally:
            for h in handles:
                h.remove()
        out = []
        for c in g.costs:
            out.append(
                _Layer(
                    c.module,
                    c.kind,
                    -1 if c.in_touch is None else c.in_touch,
                    c.out_touch,
                    c.kernel,
                    c.groups,
                    c.bias,
                    in_spatial.get(c.module, 1),
                    out_spatial.get(c.module, c.spatial) if c.kind in ("conv", "dw") else c.spatial,
                    c.spatial,
                )  # fmt: skip
            )
        return out

    def _setup_kernels(self) -> None:
        """The kernels a runtime runs besides the conv/linear layers' own work (the cost model's
        fusion rule, :func:`edgeslim.channels.cost.fuse_kernels`, as ``bench --predict`` applies it
        to the exported ONNX): what a fused element-wise op reads besides its layer's input (a
        residual add's second operand) goes to that layer; every other kernel (pools,
        squeeze-excitation means and gates, a BN or activation no conv precedes, concatenations)
        is priced by the activations it reads and writes. Each value's channels follow the groups
        as a layer's do (``n = V @ k``, plus the channels of classes in no group)."""
        g = self.graph
        self.extra_reads: list[list[int]] = [[] for _ in self.layers]  # value rows per layer
        self.kernel_rows: list[tuple[str, str, list[int]]] = []  # (name, op, value rows) of the others
        rows: dict[int, int] = {}  # value key -> row
        mats, fixed, size, pads = [], [], [], []

        def row(key: int) -> int:
            if key not in rows:
                labels, per_sample, dim1 = g.values[key]
                m = torch.zeros(self.num_groups, dtype=torch.float64)
                if labels is not None and labels.numel():
                    gi = self.group_of_class[g.slot_class[labels]]
                    m.index_add_(0, gi[gi >= 0], torch.ones(int((gi >= 0).sum()), dtype=torch.float64))
                    fixed.append(float((gi < 0).sum()))
                    size.append(per_sample / labels.numel())  # elements per channel
                elif dim1:  # a mixed channel layout (a shuffle's (N, g, C/g, H, W)): its traced size
                    fixed.append(float(dim1))
                    size.append(per_sample / dim1)
                else:  # rank < 2: no channel dimension to pad
                    fixed.append(float(per_sample))
                    size.append(1.0)
                image = (
                    labels is not None
                    and labels.numel()
                    and bool(self._image_classes[g.slot_class[labels]].all())
                )
                # (dim 1 padded, as bench --predict pads it; the model input's channels not)
                pads.append(bool(labels is not None or dim1) and not image)
                mats.append(m / self.group_size.clamp(min=1))
                rows[key] = len(mats) - 1
            return rows[key]

        for kernel in fuse_kernels(g.cost_nodes):
            host = kernel.nodes[0]
            layer = g.node_layer.get(host)
            if layer is not None:
                own = len(g.cost_nodes[host].inputs)
                self.extra_reads[layer] = [row(v) for v in kernel.reads[own:]]
            else:
                values = [row(v) for v in [*kernel.reads, *kernel.writes]]
                self.kernel_rows.append((kernel.name, g.cost_nodes[host].op, values))
        self.value_matrix = (
            torch.stack(mats) if mats else torch.zeros(0, self.num_groups, dtype=torch.float64)
        )
        self.value_fixed = torch.tensor(fixed, dtype=torch.float64)
        self.value_size = torch.tensor(size, dtype=torch.float64)
        self.value_pads = torch.tensor(pads, dtype=torch.bool)

    def _kernel_terms(self, k: Tensor, elem_bytes: int) -> tuple[Tensor, Tensor]:
        """(bytes per layer that its fused ops read besides its input, bytes of each other kernel)."""
        n = self.value_matrix @ k + self.value_fixed
        m = self.profile.channel_multiple(self.precision) if self.profile is not None else 1
        if m > 1:  # activations are laid out in blocks of m channels (dim 1), as the layers compute them
            n = n + torch.where(self.value_pads, torch.ceil(n / m) * m - n, torch.zeros_like(n)).detach()
        vb = n * self.value_size * elem_bytes
        zero = k.sum() * 0  # (a tensor on k's graph, for the marginal's autograd)
        extra = torch.stack([sum((vb[r] for r in rs), zero) for rs in self.extra_reads])
        others = [sum((vb[r] for r in rs), zero) for _, _, rs in self.kernel_rows]
        return extra, torch.stack(others) if others else vb[:0]

    def _setup_table(self, table: dict[str, Any], model: nn.Module) -> None:
        """The budget priced by a measured per-layer table (its rows, fixed part, sweeps, calibration)."""
        self._check_table_input(table)
        rows = table.get("layers")
        if not isinstance(rows, dict) or not rows:
            raise EdgeslimError('a latency table needs "layers": {"<layer name>": <ms at full width>, ...}')
        unit = {"ms": 1e-3, "us": 1e-6, "s": 1.0}.get(str(table.get("unit", "ms")))
        if unit is None:
            raise EdgeslimError(f"latency table unit must be ms, us or s, got {table.get('unit')!r}")
        mac_layers = {layer.name for layer in self.layers if layer.kind != "bn"}
        missing = sorted(mac_layers - set(rows))
        if missing:
            raise EdgeslimError(
                f"the latency table has no entry for layer(s) {', '.join(missing[:4])}; "
                "measure every conv/linear layer of this model"
            )
        # (a trial's ResNet-34 table priced a ResNet-18, whose names it holds too: 0.556 of the target)
        extra = sorted(set(rows) - mac_layers)
        if extra:
            raise EdgeslimError(
                f"the latency table times {len(extra)} layer(s) this model does not have ({', '.join(extra[:3])}): "
                "it is a table of another network; measure the table of this model's export",
                param="latency_table",
            )
        self._check_table_widths(table, model)
        self.table = {k: float(v) * unit for k, v in rows.items() if k in mac_layers}
        self.table_unit = unit  # (its sweeps' times are in it too)
        self.table_fixed = float(table.get("fixed", 0.0)) * unit
        times = [*self.table.values(), self.table_fixed]
        if not all(math.isfinite(v) and 0 <= v < 3600 for v in times):
            raise ValueError("its times must be numbers from 0 to an hour")
        if isinstance(table.get("total_ms"), (int, float)):
            self.table_total = float(table["total_ms"]) * 1e-3
        self._setup_sweeps(table.get("sweeps") or {})
        self._setup_calibration(table.get("calibration"))

    def _setup_latency(
        self, profile: Any, precision: str | None, table: dict[str, Any] | None, model: nn.Module
    ) -> None:
        if table is not None:
            try:
                self._setup_table(table, model)
            except (TypeError, ValueError, KeyError, IndexError, StopIteration, OverflowError,
                    ZeroDivisionError, AttributeError) as exc:  # fmt: skip
                raise EdgeslimError(  # (a probe's hand-edited tables: strings, [1] for a number, 1e308)
                    f"the latency table is malformed ({type(exc).__name__}: {str(exc)[:100]}); measure it again "
                    "(edgeslim.bench.layers; docs/budget.md gives its format)",
                    param="latency_table",
                ) from exc
            return
        if profile is None:
            raise EdgeslimError(
                "a latency target needs profile (a device profile name or YAML path) or latency_table",
                param=("profile", "latency_table"),
            )
        self.profile = profile if isinstance(profile, DeviceProfile) else load_profile(str(profile))
        self.precision = precision or self.profile.preferred.precision
        if self.precision not in ELEM_BYTES:
            raise EdgeslimError(
                f"precision must be one of {', '.join(ELEM_BYTES)}, got {self.precision!r}", param="precision"
            )
        self.efficiency = self.profile.efficiency_for(self.precision)

    def _check_table_widths(self, table: dict[str, Any], model: nn.Module) -> None:
        """A table of the same layers at other widths (benched from a slim export) prices every layer from
        other times (a review: 0.187 ms dense where it ran in 0.25 ms, without a word when it had no
        sweeps): refused by the widths it records; one that records none is warned about once."""
        recorded = table.get("widths")
        if not isinstance(recorded, dict):
            key = (str(table.get("model")), str(table.get("total_ms")), len(table.get("layers") or ()))
            if key not in _UNCHECKED_TABLES:
                _UNCHECKED_TABLES.add(key)
                log.warning(
                    "the latency table records no layer widths (measured before tables recorded them, or "
                    "written by hand): it is taken to time this model's dense network; bench the dense model's "
                    "export again to have that checked"
                )
            return
        mods = dict(uncompiled(model).named_modules())
        for layer in self.layers:
            m = mods.get(layer.name)
            if layer.kind == "bn" or layer.name not in recorded or m is None:
                continue
            here = list(layer_channels(m))
            timed = [int(v) for v in recorded[layer.name]]
            if None not in here and timed != here:
                raise EdgeslimError(
                    f"the latency table timed this network at other widths: layer {layer.name} has {timed[0]}->"
                    f"{timed[1]} channels in it, {here[0]}->{here[1]} in this model (a table of a slimmed export?); "
                    "measure the table on the export of the dense model the run slims",
                    param="latency_table",
                )

    def _check_table_input(self, table: dict[str, Any]) -> None:
        """A table timed at another input size or batch prices every layer wrongly (a trial: a table
        timed at 224 px predicted 33.9 ms for a 32 px model that ran in 0.78 ms): refused."""
        shape = table.get("input_shape")
        if not isinstance(shape, list) or len(shape) != len(self.example_shape):
            return  # (a hand-written table, or one from before the tables recorded it)
        if not all(isinstance(d, int) for d in shape):
            return  # (a symbolic dim: the table does not say)
        timed, here = list(shape[1:]), list(self.example_shape[1:])
        if len(timed) == len(here) and timed != here:
            raise EdgeslimError(
                f"the latency_table was timed at input {'x'.join(map(str, timed))} but the model trains at "
                f"{'x'.join(map(str, here))}: time the table at the training size (export the dense model "
                "at that input shape and bench it again), or train at the table's size",
                param="latency_table",
            )
        if int(shape[0] or 0) and int(shape[0]) != self.batch:
            raise EdgeslimError(
                f"the latency_table was timed at batch {shape[0]} but the budget prices batch {self.batch}: "
                f"time the table at batch {self.batch}, or budget at batch {shape[0]} (latency_batch)",
                param=("latency_table", "latency_batch"),
            )

    def _setup_sweeps(self, sweeps: dict[str, Any]) -> None:
        """Keep the measured channel sweeps whose full width matches this model's layer."""
        d_in, d_out = self.channels(self.dense_k)
        skipped = []
        coarse = sorted(
            {
                int(sw.get("multiple", 1))
                for sw in sweeps.values()
                if self.round_to % int(sw.get("multiple", 1))
            }
        )
        if coarse:  # (its steps fall between the counts this run keeps)
            log.warning(
                "the latency table's sweeps step at multiples of %d, but this run keeps multiples of %d: counts "
                "between its steps are priced by a straight line (measure the table at multiples of %d to price "
                "them as measured)",
                coarse[0], self.round_to, self.round_to,
            )  # fmt: skip
        for i, layer in enumerate(self.layers):
            sw = sweeps.get(layer.name)
            if sw is None or layer.kind == "bn":
                continue
            full_in = float(d_out[i] if layer.kind == "dw" else d_in[i])
            if (int(sw["in"]), int(sw["out"])) != (int(full_in), int(d_out[i])):
                skipped.append(layer.name)
                continue
            grid = parse_sweep(sw)
            self.sweeps[i] = (grid, float(sweep_latency(grid, full_in, float(d_out[i]))))
        if skipped:
            log.warning(
                "latency table sweeps of %d layer(s) (%s) do not match this model's channels; those scale by MACs",
                len(skipped), ", ".join(skipped[:3]),
            )  # fmt: skip

    def _setup_calibration(self, calib: dict[str, Any] | None) -> None:
        """Whole networks measured at uniform widths map the lookup's predicted fraction of the dense
        time to the measured one (piecewise linear through (0, 0), the points and (1, 1))."""
        raw_dense = self.table_fixed + float(self._table_sum(self.dense_k))
        if not calib or not calib.get("points"):
            # the table's own whole run, where its layers add up to another time (ONNX Runtime's profiler
            # puts its cost inside each kernel: 1.62 ms of kernels in a run of 1.19 ms, a trial's table)
            total = float(self.table_total or 0.0)
            if total > 0 and raw_dense > 0:
                self.calibration = (raw_dense, [0.0, 1.0], [0.0, 1.0], total)
            return
        pts = {0.0: 0.0, 1.0: 1.0}
        cut = calib.get("round_to")  # the multiple the measured networks were cut to (else this run's)
        for p in calib["points"]:
            k = self.uniform_counts(float(p["fraction"]), int(cut) if cut else None)
            pred = self.table_fixed + float(self._table_sum(k))
            pts[pred / raw_dense] = float(p["measured_ms"]) / float(calib["dense_ms"])
        xs = sorted(pts)
        self.calibration = (raw_dense, xs, [pts[x] for x in xs], float(calib["dense_ms"]) * 1e-3)
        self.width_points = True

    def _check_width_cut(
        self, model: nn.Module, example: Tensor, calib: dict[str, Any], shifts_zeroed: bool
    ) -> None:
        """Refuse calibration points whose networks were cut with another removability than this model's
        (``zero_invariant``) where that changes the cut: they are placed at the lookup's fraction of
        networks other than those measured (a review: a mobilenet_v3 quarter width measured with every
        gated channel kept, placed at 0.75 of the lookup where it is 0.861)."""
        cut = bool(calib.get("zero_invariant", False))  # (tables before it was recorded: cut without)
        if cut == shifts_zeroed:
            return
        _, other = _removable_trace(model, example, cut, kernels=True)
        if other.shape == self.removable.shape and torch.equal(
            self._group_fixed_alive(other), self._group_fixed_alive()
        ):
            return  # (no channel that one removes and the other keeps: the same networks)
        raise EdgeslimError(
            f"the latency table's width models were cut {'with' if cut else 'without'} zero_invariant, but this run "
            f"slims {'with' if shifts_zeroed else 'without'} it, which removes other channels of this model (those "
            "a squeeze-excitation gate multiplies): its calibration points are networks this run's lookup does not "
            f"price; cut the width models as the run does (export them {'with' if shifts_zeroed else 'without'} "
            f"that setting) and bench the table again, or slim {'with' if cut else 'without'} it",
            param=("latency_table", "zero_invariant"),
        )

    def _calibrated(self, raw: Any) -> Any:
        """Seconds from the lookup's sum ``raw``: as a fraction of the dense sum, mapped through the
        whole networks the table measured (its calibration points, else only its dense run), times
        the measured dense time; ``raw`` itself for a table that records no whole run."""
        if self.calibration is None:
            return raw
        dense, xs, ys, measured = self.calibration
        return interp_linear(xs, ys, raw / dense) * measured

    def uniform_counts(self, fraction: float, round_to: int | None = None) -> Tensor:
        """Alive counts with every group at ``fraction`` of its channels (rounded like surgery, to
        multiples of ``round_to``: default the model's)."""
        k = torch.round(self.group_size * float(fraction))  # (at least one: round_counts' rule)
        return self.round_counts(torch.maximum(k, self._group_fixed_alive()), round_to)

    def uniform_mask(self, fraction: float) -> Tensor:
        """Flat BN mask (1 alive, 0 removed) realising :meth:`uniform_counts`: the non-removable
        classes of every group and its first removable ones by index."""
        k = self.uniform_counts(fraction)
        alive = ~self.removable.clone()
        for grp in self.graph.groups:
            cls = grp.classes
            need = int(k[grp.index]) - int(alive[cls].sum())
            free = cls[self.removable[cls]]
            alive[free[: max(need, 0)]] = True
        return alive[self.pos_class].to(torch.float32)

    # ------------------------------------------------------------------ counts
    def _group_fixed_alive(self, removable: Tensor | None = None) -> Tensor:
        """Classes per group that can never be removed (by ``removable``: default this model's)."""
        valid = self.group_of_class >= 0
        fixed = (~(self.removable if removable is None else removable) & valid).to(torch.float64)
        return torch.zeros(self.num_groups, dtype=torch.float64).index_add_(
            0, self.group_of_class[valid], fixed[valid]
        )

    def round_counts(self, k: Tensor, round_to: int | None = None) -> Tensor:
        """Counts as surgery keeps them: at least one, and up to a multiple of ``round_to`` (default:
        the model's; capped at the group)."""
        return kept_counts(k, self.group_size, self.round_to if round_to is None else int(round_to))

    def narrowest(self, round_to: int | None = None) -> float:
        """R of the narrowest network surgery can keep (every group at its fixed channels, else one),
        counts rounded to multiples of ``round_to`` (default: the model's; :attr:`minimum`)."""
        fixed = self._group_fixed_alive()
        kmin = torch.where(fixed > 0, fixed, torch.ones_like(self.dense_k))
        return self.value(self.round_counts(kmin, round_to))

    def class_strength(self, values: Tensor) -> Tensor:
        """Squared norm per class of flat BN ``values`` (``total`` entries, or rows of them)."""
        sq = values.detach().cpu().double().reshape(-1, self.total).pow(2).sum(dim=0)
        return torch.zeros(self.graph.num_classes, dtype=torch.float64).index_add_(0, self.pos_class, sq)

    def alive_from_scales(self, xi: Tensor) -> Tensor:
        """Bool per class: alive unless removable with every BN entry zero."""
        nz = torch.zeros(self.graph.num_classes, dtype=torch.float64).index_add_(
            0, self.pos_class, (xi.detach().cpu().reshape(-1) != 0).to(torch.float64)
        )
        return ~self.removable | (nz > 0)

    def counts(self, xi: Tensor) -> Tensor:
        """Alive channels per group (never below one, rounded like surgery)."""
        return self.round_counts(self.raw_counts(self.alive_from_scales(xi)))

    def channels(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(n_in, n_out) per layer for group counts ``k``."""
        n = self.touch_matrix @ k
        n_in = torch.where(self.has_in, n[self.in_idx], torch.ones_like(n[self.in_idx]))
        return n_in, n[self.out_idx]

    # ------------------------------------------------------------------ metrics
    def _layer_macs(self, i: int, n_in: Any, n_out: Any) -> Any:
        """MACs of layer ``i`` at ``n_in[i]``/``n_out[i]`` channels (floats or tensors alike)."""
        layer = self.layers[i]
        return layer_macs(layer.kind, n_in[i], n_out[i], layer.kernel, layer.groups, layer.mac_spatial)

    def _macs_per_layer(self, n_in: Tensor, n_out: Tensor) -> Tensor:
        return torch.stack([self._layer_macs(i, n_in, n_out) for i in range(len(self.layers))])

    def _weights_per_layer(self, n_in: Tensor, n_out: Tensor, bias: bool = True) -> Tensor:
        return torch.stack(
            [
                layer_params(layer.kind, n_in[i], n_out[i], layer.kernel, layer.groups, layer.bias and bias)
                for i, layer in enumerate(self.layers)
            ]
        )

    def _layer_params(self, n_in: Tensor, n_out: Tensor) -> Tensor:
        """The layers' parameters at these counts, each held once (a module called twice, tied weights)."""
        weights = self._weights_per_layer(n_in, n_out, bias=False)  # (a BN's scale and shift: its "bias")
        biases = self._weights_per_layer(n_in, n_out) - weights
        return (weights * self._weight_once + biases * self._bias_once).sum()

    def _params_from(self, k: Tensor, dense: bool = False, folded: Collection[str] | None = None) -> float:
        n_in, n_out = self.channels(k)
        total = self._layer_params(n_in, n_out)
        if not dense:  # surgery gives a bias-free consumer a bias when it folds a removed channel's constant
            folds = self.folding if folded is None else set(folded)
            d_in, _ = self.channels(self.dense_k)
            for i, layer in enumerate(self.layers):
                if not self._params_once[i] or layer.name not in folds:
                    continue
                if layer.kind in ("conv", "linear") and not layer.bias and bool(n_in[i] < d_in[i]):
                    total = total + n_out[i]
        return float(total)

    def layer_costs(self, k: Tensor) -> list[Any]:
        """Per-kernel :class:`edgeslim.channels.cost.LayerCost`: the conv/linear layers (BN and the
        element-wise ops a runtime fuses into them included), then every other kernel."""
        macs, nbytes, wbytes = self._roofline_terms(k)
        extra, others = self._kernel_terms(k, ELEM_BYTES[self.precision or "fp32"])
        layers = [
            LayerCost(layer.name, float(macs[i]), float(nbytes[i] + extra[i]), float(wbytes[i]), layer.kind)
            for i, layer in enumerate(self.layers)
            if layer.kind != "bn"
        ]
        return layers + [
            LayerCost(name, 0.0, float(others[j]), 0.0, op)
            for j, (name, op, _) in enumerate(self.kernel_rows)
        ]

    def _roofline_terms(self, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        eb = ELEM_BYTES[self.precision or "fp32"]
        n_in, n_out = self.channels(k)
        m = self.profile.channel_multiple(self.precision) if self.profile is not None else 1
        if m > 1:  # the kernels compute whole blocks of m channels (value padded, gradient of the counts)
            pad_in = (torch.ceil(n_in / m) * m - n_in).detach()
            n_in = n_in + torch.where(
                self._reads_input, torch.zeros_like(pad_in), pad_in
            )  # (an image: as it is)
            n_out = n_out + (torch.ceil(n_out / m) * m - n_out).detach()
        macs = self._macs_per_layer(n_in, n_out)
        weights = self._weights_per_layer(n_in, n_out) * eb
        read = torch.where(self._dw, n_out * self._dw_in_per_out, n_in)  # (a depthwise layer: see __init__)
        act_in = self._in_spatial * read * eb
        act_out = self._out_spatial * n_out * eb
        return macs, weights + act_in + act_out, weights

    def value(self, k: Tensor, folded: Collection[str] | None = None) -> float:
        """``R`` for alive counts ``k`` per group (MACs, parameters or seconds per batch). ``folded``
        (parameters): the layers surgery folded a constant into (its report's ``folded_biases``), where
        it measured them; None: every layer that reads a removed channel as a constant (:attr:`folding`)."""
        if self.metric == "macs":  # plain floats: the projection evaluates this hundreds of times
            n_in, n_out = (n.tolist() for n in self.channels(k))
            return self.graph.fixed_macs + float(
                sum(self._layer_macs(i, n_in, n_out) for i in range(len(self.layers)))
            )
        if self.metric == "params":
            return self.const_params + self._params_from(k, folded=folded)
        if self.table is not None:
            return float(self._calibrated(self.table_fixed + self._table_sum(k)))
        return predict_latency(
            self.layer_costs(k), self.profile, self.precision, self.batch, self.efficiency
        ).total_s

    def _table_sum(self, k: Tensor) -> Any:
        """Sum of per-layer seconds: each layer's measured full-width time times its measured sweep
        at the counts over its value at full width, or (no sweep) times its MAC ratio. A tensor
        (differentiable) when ``k`` requires grad, else a float (plain Python arithmetic: the
        projection evaluates it hundreds of times)."""
        n_in, n_out = self.channels(k)
        if not k.requires_grad:
            n_in, n_out = n_in.tolist(), n_out.tolist()
        assert self.table is not None
        if self._table_base is None:
            d_in, d_out = self.channels(self.dense_k)
            calls = Counter(layer.name for layer in self.layers)  # (a table times a module's calls together)
            self._table_base = (
                [self.table.get(layer.name, 0.0) / calls[layer.name] for layer in self.layers],
                [max(float(m), 1e-12) for m in self._macs_per_layer(d_in, d_out)],
            )
        t, dense = self._table_base
        total: Any = 0.0
        for i, layer in enumerate(self.layers):
            sw = self.sweeps.get(i)
            if sw is None:
                total = total + t[i] * self._layer_macs(i, n_in, n_out) / dense[i]
                continue
            grid, full = sw
            at = sweep_latency(grid, n_out[i] if layer.kind == "dw" else n_in[i], n_out[i])
            # the in-model time changes by what the layer alone gains (a single-layer session also
            # pays input/output reorders the model shares between layers: a ratio would keep them)
            diff = t[i] + (at - full) * self.table_unit
            floor = t[i] * at / full * SWEEP_FLOOR
            total = total + (diff if _scalar(diff) > _scalar(floor) else floor)
        return total

    def marginal(self, k: Tensor) -> Tensor:
        """``dR/dk_g``: what one more alive channel of each group costs (at counts ``k``); works
        inside ``torch.no_grad()`` too (the prox step's freeze calls the final projection there)."""
        with torch.enable_grad():
            return self._marginal(k)

    def _marginal(self, k: Tensor) -> Tensor:
        kk = k.detach().clone().to(torch.float64).requires_grad_(True)
        if self.metric == "macs":
            n_in, n_out = self.channels(kk)
            r = self._macs_per_layer(n_in, n_out).sum()
        elif self.metric == "params":
            n_in, n_out = self.channels(kk)
            r = self._layer_params(n_in, n_out)
        elif self.table is not None:
            r = self._calibrated(self.table_fixed + self._table_sum(kk))
        else:  # roofline: the layer's bound decides whether MACs or bytes cost time
            pred = predict_latency(
                self.layer_costs(k), self.profile, self.precision, self.batch, self.efficiency
            )
            peak = self.profile.peak_gflops[self.precision] * 1e9
            bw = self.profile.memory_bandwidth_gbs * 1e9
            wc, wm = [], []
            for p in pred.layers:
                compute = p.compute_s >= p.memory_s  # seconds = max(compute, memory) + launch
                wc.append(2.0 * self.batch / (self.efficiency.compute * peak) if compute else 0.0)
                wm.append(0.0 if compute else 1.0 / (self.efficiency.memory * bw))
            macs, nbytes, wbytes = self._roofline_terms(kk)
            extra, others = self._kernel_terms(kk, ELEM_BYTES[self.precision or "fp32"])
            keep = torch.tensor([layer.kind != "bn" for layer in self.layers])
            at_batch = torch.cat(
                [(wbytes + (nbytes + extra - wbytes) * self.batch)[keep], others * self.batch]
            )
            macs = torch.cat([macs[keep], torch.zeros_like(others)])
            r = (torch.tensor(wc, dtype=torch.float64) * macs).sum() + (
                torch.tensor(wm, dtype=torch.float64) * at_batch
            ).sum()
        (grad,) = torch.autograd.grad(r, kk, allow_unused=True)
        return torch.zeros_like(kk) if grad is None else grad.detach()

    # ------------------------------------------------------------------ per channel
    def of_xi(self, xi: Tensor) -> float:
        return self.value(self.counts(xi))

    def of_model(self, model: nn.Module) -> float:
        """``R`` of a dense model whose zero BN scales mark removed channels."""
        return self.of_xi(flat_gammas(model))

    def channel_costs(self, xi: Tensor) -> Tensor:
        """Marginal cost of every flat BN entry (0 for channels surgery cannot remove)."""
        marg = self.marginal(self.counts(xi)).clamp(min=0)
        cost = marg[self.group_of_class[self.pos_class].clamp(min=0)]
        return torch.where(self.pos_removable, cost, torch.zeros_like(cost))

    def same_groups(self, other: ResourceModel) -> bool:
        """Whether ``other`` sees the same BN channels in the same groups (a price for this model)."""
        return (
            self.total == other.total
            and self.num_groups == other.num_groups
            and bool(torch.equal(self.group_of_class, other.group_of_class))
            and bool(torch.equal(self.pos_class, other.pos_class))
        )

    def project(
        self,
        xi: Tensor,
        target: float,
        keep_frac: float = 0.0,
        cost_exponent: float = 1.0,
        *,
        price: ResourceModel | None = None,
    ) -> tuple[Tensor, int]:
        """Zero the alive removable classes with the smallest ``|xi| / cost**cost_exponent``
        until ``R <= target``, then put back what fits (:meth:`_refill`). ``cost`` is the marginal
        cost in ``price`` (a model of the same groups in another metric; default: this one).

        Every group keeps its strongest ``max(1, ceil(keep_frac * size))`` classes. Returns the new ``xi`` and the number of
        classes removed. Exact: a binary search over the sorted prefix evaluates ``R``.
        """
        if price is not None and price is not self and not self.same_groups(price):
            raise EdgeslimError("the price model groups the BN channels differently from this resource model")
        xi = xi.detach().clone()
        k = self.counts(xi)
        if self.value(k) <= target:
            return xi, 0
        alive = self.alive_from_scales(xi)
        strength = self.class_strength(xi).sqrt()
        marg = (price or self).marginal(k).clamp(min=1e-30) ** cost_exponent
        cand = torch.nonzero(alive & self.removable & (self.group_of_class >= 0)).flatten()
        grp = self.group_of_class[cand]
        score = strength[cand] / marg[grp]
        # keep the strongest max(1, ceil(keep_frac * size)) classes of every group
        keep_one = torch.zeros_like(cand, dtype=torch.bool)
        for gi in torch.unique(grp).tolist():
            where = torch.nonzero(grp == gi).flatten()
            n_keep = max(1, math.ceil(keep_frac * float(self.group_size[gi])))
            n_keep -= int(alive[self.graph.groups[gi].classes].sum()) - int(where.numel())  # non-removable
            if n_keep > 0:
                top = torch.argsort(strength[cand[where]], descending=True, stable=True)[:n_keep]
                keep_one[where[top]] = True
        cand, grp, score = cand[~keep_one], grp[~keep_one], score[~keep_one]
        order = torch.argsort(score, stable=True)
        cand, grp, score = cand[order], grp[order], score[order]
        raw = self.raw_counts(alive)

        def r_after(n: int) -> float:
            removed = torch.zeros(self.num_groups, dtype=torch.float64).index_add_(
                0, grp[:n], torch.ones(n, dtype=torch.float64)
            )
            return self.value(self.round_counts(raw - removed))

        lo, hi = 0, int(cand.numel())
        if r_after(hi) > target:
            if keep_frac > 0:
                return self.project(xi, target, 0.0, cost_exponent, price=price)
            raise EdgeslimError(
                f"cannot reach the budget {target:.4g}: even one channel per group costs {r_after(hi):.4g}"
            )
        while lo < hi:
            mid = (lo + hi) // 2
            if r_after(mid) <= target:
                hi = mid
            else:
                lo = mid + 1
        chosen = self._refill(cand[:lo], grp[:lo], score[:lo], raw, target)
        dead = torch.zeros(self.graph.num_classes, dtype=torch.bool)
        dead[chosen] = True
        xi[dead[self.pos_class].to(xi.device)] = 0
        return xi, int(chosen.numel())

    def _refill(self, cand: Tensor, grp: Tensor, score: Tensor, raw: Tensor, target: float) -> Tensor:
        """Put back what the shortest prefix ``cand`` (ascending score, groups ``grp``) removed
        without need: channels rounding keeps anyway, then, while ``R <= target`` allows, the next
        rounding step of a group (its highest-scored removed channels first).

        The prefix stops at the first channel that brings ``R`` under the target; with rounding
        that channel can take a whole block of an expensive layer, leaving ``R`` far under the
        target, and channels removed from groups that never crossed a block boundary are dead
        for nothing. Returns the classes that stay removed."""
        per: dict[int, list[int]] = {}
        value_of = dict(zip(cand.tolist(), score.tolist()))
        for c, g in zip(cand.tolist(), grp.tolist()):
            per.setdefault(g, []).append(c)  # ascending score: the last entries are put back first
        removed = torch.zeros(self.num_groups, dtype=torch.float64)
        for g, cs in per.items():
            removed[g] = len(cs)

        def give_back(g: int, n: int) -> None:
            del per[g][len(per[g]) - n :]
            removed[g] -= n

        kept = self.round_counts(raw - removed)
        for g in list(per):  # free: the rounded count keeps these channels anyway
            free = int(min(removed[g], kept[g] - (raw[g] - removed[g])))
            if free > 0:
                give_back(g, free)
        # one rounding step of one group at a time, the most valuable next channel first; R grows
        # with every step taken, so a group whose step does not fit never fits later
        open_groups = {g for g in per if per[g]}
        while open_groups:
            g = max(open_groups, key=lambda g: value_of[per[g][-1]])
            trial = removed.clone()
            trial[g] -= 1
            n = int(min(removed[g], self.round_counts(raw - trial)[g] - (raw[g] - removed[g])))
            trial[g] = removed[g] - n
            if self.value(self.round_counts(raw - trial)) <= target:
                give_back(g, n)
                if per[g]:
                    continue
            open_groups.discard(g)
        return torch.tensor([c for cs in per.values() for c in cs], dtype=torch.long)

    def protected(self, xi: Tensor, keep_frac: float) -> Tensor:
        """Flat mask of the strongest ``max(1, ceil(keep_frac * size))`` classes of every group
        (by the norm of their ``xi`` entries): the floor no budget pressure should touch."""
        strength = self.class_strength(xi)
        keep = torch.zeros(self.graph.num_classes, dtype=torch.bool)
        for grp in self.graph.groups:
            n_keep = max(1, math.ceil(keep_frac * grp.size))
            top = torch.argsort(strength[grp.classes], descending=True, stable=True)[:n_keep]
            keep[grp.classes[top]] = True
        return keep[self.pos_class]

    def raw_counts(self, alive: Tensor) -> Tensor:
        """Alive classes per group (from :meth:`alive_from_scales`), before rounding."""
        valid = self.group_of_class >= 0
        return torch.zeros(self.num_groups, dtype=torch.float64).index_add_(
            0, self.group_of_class[valid], alive[valid].to(torch.float64)
        )

    def describe(self, v: float) -> str:
        """Human text for a resource value."""
        if self.metric == "latency":
            return f"{v * 1e3:.3g} ms"
        return f"{human(v)} {'MACs' if self.metric == 'macs' else 'params'}"


def flat_gammas(model: nn.Module) -> Tensor:
    """All affine BN scales, flat in module order (the ``xi`` layout)."""
    return torch.cat([m.weight.detach().reshape(-1).cpu() for _, m in bn_layers(model)])


def zero_channels(model: nn.Module, dead: Tensor) -> None:
    """Set BN scale and shift to 0 at the flat positions ``dead`` (bool, the :func:`flat_gammas` layout)."""
    zero_flat(((m.weight, m.bias) for _, m in bn_layers(model)), dead)


def load_latency_table(path: str | os.PathLike) -> dict[str, Any]:
    """Read a per-layer latency table JSON (see docs/budget.md for the format)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise EdgeslimError(f'latency table {path} must be a JSON object with "layers"')
    return data


def _removable_trace(
    model: nn.Module, example: Tensor, shifts_zeroed: bool, kernels: bool
) -> tuple[Any, Tensor]:
    """Surgery's graph of a copy of ``model`` whose BN scales are all zero (its shifts zero with
    ``shifts_zeroed``, else nonzero), and its removable classes."""
    work = copy.deepcopy(model).cpu().float()
    with torch.no_grad():
        for _, m in bn_layers(work):
            m.weight.zero_()
            m.bias.fill_(0.0 if shifts_zeroed else 1.0)
    g = deployed_graph(work, example, kernels=kernels)  # what surgery keeps, as prune counts it
    return g, removable_classes(g)[0]


def removal_candidates(
    model: nn.Module, example_input: Tensor, shifts_zeroed: bool = False, *, from_graph: Any = None
) -> dict[str, int]:
    """How many BN channels surgery removes once their scales are zero (``candidates`` of
    ``bn_channels``), and why it keeps the others: ``gated``, an input-dependent gate
    (squeeze-excitation) multiplies the shift the slimmer leaves (a candidate with ``shifts_zeroed``,
    the slimmer's ``zero_invariant``); ``barred``, a barrier (a model input or output, an op surgery
    cannot resize); ``other`` (a BN without affine scales). ``from_graph``: the graph of
    :func:`_removable_trace` already made for these settings (no second trace)."""
    g = from_graph
    if g is None:
        example = example_input.detach().cpu().float()[:1]
        g, _ = _removable_trace(model, example, shifts_zeroed, kernels=False)
    st = class_states(g)
    names = {n for n, _ in bn_layers(model)}
    per_bn: dict[str, Tensor] = {}
    for t, cls in zip(g.touches, g.touch_classes):
        if t.kind == "bn" and t.module in names:
            per_bn.setdefault(t.module, cls)
    cls = torch.cat(list(per_bn.values())) if per_bn else torch.zeros(0, dtype=torch.long)
    kept = ~st.removable[cls]
    barred = kept & st.barred[cls]
    gated = kept & ~barred & st.reads_var[cls] & st.has_bn[cls]
    return {
        "bn_channels": int(cls.numel()),
        "candidates": int((~kept).sum()),
        "gated": int(gated.sum()),
        "barred": int(barred.sum()),
        "other": int((kept & ~barred & ~gated).sum()),
    }


def _scalar(v: Any) -> float:
    return float(v.detach()) if isinstance(v, Tensor) else float(v)


def build_resource(
    model: nn.Module, example_input: Tensor, metric: str = "macs", **kwargs: Any
) -> ResourceModel:
    """A :class:`ResourceModel` for ``model`` (one trace; see the module docstring)."""
    return ResourceModel(model, example_input, metric, **kwargs)
