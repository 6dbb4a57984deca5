"""Roofline latency prediction from per-layer MACs and bytes (a *prediction*, not a measurement).

Per layer: ``t = max(2*MACs / (eta_c * P_peak), bytes / (eta_m * BW)) + t_launch``
(notes §4.5). ``P_peak`` and ``BW`` come from a device profile; the efficiency factors
``eta_c``, ``eta_m`` and the launch overhead start from the profile's assumed values and can be
fitted from one measured run with :func:`calibrate`.

Torch-free: the budget-targeted slimming code builds :class:`LayerCost` from a torch graph,
``edgeslim.bench.onnx_cost`` builds them from an ONNX file.

:func:`layer_macs` and :func:`layer_params` are edgeslim's one MAC/parameter counter: the model
statistics (``edgeslim.counting``), surgery's dependency graph, the budget resource model and the
ONNX cost counter all call them. They only use ``+ * /`` on their arguments, so they take ints,
floats or (for the vectorised resource model) tensors alike.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeslim.channels.devices import DeviceProfile, Efficiency, load_profile
from edgeslim.errors import EdgeslimError
from edgeslim.utils.onnx_graph import WEIGHT_OPS

#: layer kinds :func:`layer_macs` and :func:`layer_params` know
LAYER_KINDS = ("conv", "dw", "linear", "bn")


def forward_batch(shape: Sequence[int]) -> int:
    """The samples of a forward whose input has ``shape``: its leading dimension (1 for a scalar)."""
    return max(1, int(shape[0])) if len(shape) > 0 else 1


def positions_per_sample(shape: Sequence[int], batch: int) -> float:
    """The positions a layer's MACs are counted over, per sample of a forward at ``batch`` samples, of
    its (N, C, ...) activation of ``shape``: its positions times its N over the batch (a model that
    folds patches into N, timm's MobileViT, runs a layer on several rows a sample)."""
    return math.prod(shape[2:]) * int(shape[0]) / batch


def whole_positions(shape: Sequence[int], batch: int) -> int:
    """:func:`positions_per_sample` as a layer's cost entry holds it: a whole number, at least 1."""
    return max(1, round(positions_per_sample(shape, batch)))


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """MACs of an einsum of operands of ``shapes`` contracted left to right: each pairwise step
    multiplies over every index of its two operands (a step that sums nothing, an outer product,
    counts its multiplies). Torch-free: the counter of PyTorch models and of ONNX graphs share it."""
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    terms, sizes = lhs.split(","), {}
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        if "..." in term:  # (the ellipsis' dims, named right-aligned by characters no equation uses)
            n = len(shape) - len(term) + 3
            term = term.replace("...", "".join(chr(0x1000 + n - 1 - j) for j in range(n)))
            terms[i] = term
        for c, d in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), int(d))
    if not arrow:  # (implicit output: the indices used once)
        out = "".join(c for c in sizes if "".join(terms).count(c) == 1)
    keep = set(out) | {c for c in sizes if ord(c) >= 0x1000}
    left, total = terms[0], 0
    for i, right in enumerate(terms[1:], 1):
        total += math.prod(sizes[c] for c in set(left) | set(right))
        later = keep | set("".join(terms[i + 1 :]))
        left = "".join(c for c in dict.fromkeys(left + right) if c in later)
    return total


def layer_macs(kind: str, c_in: Any, c_out: Any, kernel: Any = 1, groups: Any = 1, spatial: Any = 1) -> Any:
    """Multiply-accumulates of one layer for one sample.

    ``kind``: ``conv`` (any ``groups``), ``dw`` (depthwise: one input channel per group, so only
    ``c_out`` counts), ``linear`` or ``bn``; ``kernel``: kernel elements (``k_h * k_w``);
    ``spatial``: output positions (``H_out * W_out``; rows for a linear layer). BatchNorm counts
    0 MACs: inference runtimes fold it into the preceding conv (``fvcore`` and
    ``torch.utils.flop_counter`` do not count it as a MAC either).
    """
    if kind == "conv":
        return kernel * spatial * (c_in / groups) * c_out
    if kind == "dw":
        return kernel * spatial * c_out
    if kind == "linear":
        return spatial * c_in * c_out
    if kind == "bn":
        return 0 * c_out
    raise ValueError(f"unknown layer kind {kind!r}; one of {', '.join(LAYER_KINDS)}")


def layer_params(
    kind: str, c_in: Any, c_out: Any, kernel: Any = 1, groups: Any = 1, bias: bool = False
) -> Any:
    """Parameters of one layer: weights plus ``c_out`` biases (a BN's ``bias`` means affine: 2 per channel)."""
    if kind == "conv":
        weights = kernel * (c_in / groups) * c_out
    elif kind == "dw":
        weights = kernel * c_out
    elif kind == "linear":
        weights = c_in * c_out
    elif kind == "bn":
        return 2 * c_out if bias else 0 * c_out
    else:
        raise ValueError(f"unknown layer kind {kind!r}; one of {', '.join(LAYER_KINDS)}")
    return weights + c_out if bias else weights


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer for ONE sample.

    ``macs``: multiply-accumulates; ``bytes``: weights + input + output activations moved,
    in the element size of the precision being predicted (see :func:`scale_bytes` for costs
    counted on an fp32 graph);
    ``weight_bytes``: the part of ``bytes`` that does not grow with the batch (0 if unknown,
    which makes the whole of ``bytes`` scale with the batch).
    """

    name: str
    macs: float
    bytes: float
    weight_bytes: float = 0.0
    op: str = ""

    def at_batch(self, batch: int) -> tuple[float, float]:
        """(FLOPs, bytes) for a batch of ``batch`` samples."""
        act = max(self.bytes - self.weight_bytes, 0.0)
        return 2.0 * self.macs * batch, self.weight_bytes + act * batch


#: bytes per element of each precision
ELEM_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def scale_bytes(layers: Sequence[LayerCost], precision: str, counted_as: str = "fp32") -> list[LayerCost]:
    """Costs counted on a ``counted_as`` graph (e.g. an fp32 ONNX file) re-expressed at ``precision``."""
    f = ELEM_BYTES.get(precision, 4) / ELEM_BYTES.get(counted_as, 4)
    if f == 1:
        return list(layers)
    return [LayerCost(c.name, c.macs, c.bytes * f, c.weight_bytes * f, c.op) for c in layers]


#: element-wise ops a runtime (TensorRT, ONNX Runtime) fuses into the MAC layer before them; ``x *
#: sigmoid(x)`` written as two ops (SiLU) is fused too (:func:`fuse_kernels`)
FUSABLE_OPS = frozenset(
    {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Add"}
)
#: ops that only change the view of a tensor (no kernel)
FREE_OPS = frozenset(
    {"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Shape", "Constant", "Dropout"}
)


@dataclass(frozen=True)
class OpNode:
    """One op of a network for costing: its ONNX op type (the torch graph names its calls the way
    the exporter writes them), the activation values it reads (weights excluded) and the ones it
    writes (a split writes several), as any hashable keys."""

    op: str
    inputs: tuple[Hashable, ...]
    outputs: tuple[Hashable, ...]
    name: str = ""


@dataclass
class Kernel:
    """What one kernel of the runtime runs: ``nodes[0]`` (its host) and the element-wise ops fused
    into it; it reads ``reads`` (the host's inputs, then the fused ops' other operands) and writes
    ``writes`` (the last op's outputs; the first is what a fused op continues from)."""

    name: str
    nodes: list[int]
    reads: list[Hashable]
    writes: list[Hashable]


def fuse_kernels(nodes: Sequence[OpNode], fuse: bool = True) -> list[Kernel]:
    """The kernels a runtime runs for ``nodes`` (in graph order), the cost model's one fusion rule.

    A :data:`FUSABLE_OPS` op joins the MAC layer (:data:`WEIGHT_OPS`) whose output it reads when
    it is that output's only reader; an ``Add`` joins the latest of the MAC layers ending in one of
    its operands (a runtime fuses the add into the conv that runs last, the other operand being
    ready), whatever the exporter's operand order; ``x * sigmoid(x)`` joins as one activation.
    :data:`FREE_OPS` are no kernel; every other op is a kernel of its own.
    """
    readers: dict[Hashable, list[int]] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            readers.setdefault(v, []).append(i)

    def consumers(v: Hashable) -> int:
        return len(readers.get(v, ()))

    kernels: list[Kernel] = []
    open_at: dict[Hashable, Kernel] = {}  # a MAC layer by the value it ends in
    order: dict[int, int] = {}  # id(kernel) -> its index
    absorbed: set[int] = set()

    def host_of(ins: Sequence[Hashable]) -> Kernel | None:
        hosts = [open_at[v] for v in ins if v in open_at and consumers(v) == 1]
        return max(hosts, key=lambda k: order[id(k)]) if hosts else None

    def swish_mul(i: int, x: Hashable) -> int | None:
        """The Mul of ``x * sigmoid(x)`` when node ``i`` is that Sigmoid and they are ``x``'s only readers."""
        s_out = nodes[i].outputs[0]
        muls = [
            j for j in readers.get(s_out, []) if nodes[j].op == "Mul" and set(nodes[j].inputs) == {x, s_out}
        ]
        if len(muls) == 1 and consumers(s_out) == 1 and consumers(x) == 2:
            return muls[0]
        return None

    for i, node in enumerate(nodes):
        if node.op in FREE_OPS or i in absorbed:
            continue
        ins = list(node.inputs)
        if fuse and node.op == "Sigmoid" and ins and ins[0] in open_at:
            host = open_at[ins[0]]
            mul = swish_mul(i, host.writes[0])
            if mul is not None:  # x * sigmoid(x): one activation
                absorbed.add(mul)
                del open_at[host.writes[0]]
                host.nodes += [i, mul]
                host.writes = list(nodes[mul].outputs)
                host.name += "+Swish"
                open_at[host.writes[0]] = host
                continue
        host = host_of(ins if node.op == "Add" else ins[:1]) if fuse and node.op in FUSABLE_OPS else None
        if host is not None:
            host.reads += [v for v in ins if v != host.writes[0]]  # e.g. a residual Add's second operand
            del open_at[host.writes[0]]
            host.nodes.append(i)
            host.writes = list(node.outputs)
            host.name += f"+{node.op}"
            open_at[host.writes[0]] = host
            continue
        kernel = Kernel(node.name or f"{node.op}_{len(kernels)}", [i], ins, list(node.outputs))
        order[id(kernel)] = len(kernels)
        kernels.append(kernel)
        if node.op in WEIGHT_OPS and node.outputs:
            open_at[node.outputs[0]] = kernel
    return kernels


@dataclass
class LayerPrediction:
    name: str
    seconds: float
    compute_s: float
    memory_s: float
    launch_s: float
    bound: str  # "compute" | "memory" | "launch"
    intensity: float  # FLOP per byte


@dataclass
class Prediction:
    """Per-layer and total predicted seconds for one batch."""

    profile: str
    precision: str
    batch: int
    layers: list[LayerPrediction] = field(default_factory=list)
    efficiency: dict[str, float] = field(default_factory=dict)
    label: str = "PREDICTION (roofline from MACs and bytes; not a measurement)"

    @property
    def total_s(self) -> float:
        return sum(layer.seconds for layer in self.layers)

    @property
    def per_sample_s(self) -> float:
        return self.total_s / self.batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_s"] = self.total_s
        return d


def _roof(profile: DeviceProfile, precision: str) -> tuple[float, float]:
    peak = profile.peak_gflops.get(precision)
    if peak is None:
        have = ", ".join(sorted(profile.peak_gflops))
        raise EdgeslimError(
            f"profile '{profile.name}' has no peak compute for precision {precision}; use one of: {have}",
            param="precision",
        )
    return peak * 1e9, profile.memory_bandwidth_gbs * 1e9


def model_precision(profile: DeviceProfile, quantized: bool = False, asked: str | None = None) -> str:
    """The precision a model is predicted at on ``profile``: ``asked``, else int8 for a Q/DQ
    (quantized) graph, else the profile's preferred one; refused where the profile gives no figures
    for it."""
    prec = asked or ("int8" if quantized else profile.preferred.precision)
    if quantized and not asked and prec not in profile.peak_gflops:
        raise EdgeslimError(
            f"the model is INT8 (Q/DQ) and profile '{profile.name}' has no INT8 figures (it has "
            f"{', '.join(sorted(profile.peak_gflops))}); predict its FP32 ONNX, or measure it on the device"
        )
    _roof(profile, prec)  # (refuses a precision the profile has no figures for)
    return prec


def predict_latency(
    layers: Sequence[LayerCost],
    profile: DeviceProfile | str,
    precision: str | None = None,
    batch: int = 1,
    efficiency: Efficiency | None = None,
) -> Prediction:
    """Roofline prediction of per-layer and total seconds for one batch of ``batch`` samples.

    ``profile`` is a :class:`DeviceProfile` or a profile name; ``precision`` defaults to the
    profile's preferred one; ``efficiency`` overrides the profile's (e.g. from :func:`calibrate`).
    """
    prof = load_profile(profile) if isinstance(profile, str) else profile
    prec = precision or prof.preferred.precision
    if batch < 1:
        raise EdgeslimError(f"batch must be >= 1, got {batch}")
    eff = efficiency or prof.efficiency_for(prec)
    peak, bw = _roof(prof, prec)
    pred = Prediction(profile=prof.name, precision=prec, batch=batch, efficiency=eff.model_dump())
    launch = eff.launch_us * 1e-6
    for layer in layers:
        flops, nbytes = layer.at_batch(batch)
        tc = flops / (eff.compute * peak)
        tm = nbytes / (eff.memory * bw)
        core = max(tc, tm)
        bound = "launch" if launch > core else ("compute" if tc >= tm else "memory")
        pred.layers.append(
            LayerPrediction(
                name=layer.name,
                seconds=core + launch,
                compute_s=tc,
                memory_s=tm,
                launch_s=launch,
                bound=bound,
                intensity=flops / nbytes if nbytes else float("inf"),
            )
        )
    return pred


@dataclass
class Observation:
    """One measured point: a model's layers at a batch size and its measured seconds per batch."""

    layers: Sequence[LayerCost]
    batch: int
    seconds: float


def calibrate(observations: Sequence[Observation], profile: DeviceProfile, precision: str | None = None):
    """Fit the efficiency factors to measured runs; returns a new :class:`Efficiency`.

    The model is ``T = k * sum_l max(c_l, m_l) + n_layers * t_launch`` with ``c_l, m_l`` the
    layer times at 100% efficiency; ``k = 1/eta`` scales compute and memory efficiency together
    (one measured run cannot separate them). With two or more points (e.g. batch 1 and 32,
    or baseline and slim) ``k`` and ``t_launch`` are fitted by non-negative least squares;
    with one point only ``k`` is fitted and the profile's launch overhead is kept.
    """
    import numpy as np

    prec = precision or profile.preferred.precision
    peak, bw = _roof(profile, prec)
    base = profile.efficiency_for(prec)
    if not observations:
        raise EdgeslimError("calibration needs at least one measured run")
    rows, ys = [], []
    for obs in observations:
        roof = 0.0
        for layer in obs.layers:
            flops, nbytes = layer.at_batch(obs.batch)
            roof += max(flops / peak, nbytes / bw)
        rows.append((roof, float(len(obs.layers))))
        ys.append(obs.seconds)
    a, y = np.asarray(rows), np.asarray(ys)
    launch = base.launch_us * 1e-6
    k = None
    if len(rows) >= 2 and np.linalg.matrix_rank(a) == 2:
        sol, *_ = np.linalg.lstsq(a, y, rcond=None)
        if sol[0] > 0 and sol[1] >= 0:
            k, launch = float(sol[0]), float(sol[1])
    if k is None:  # one point, or the 2-parameter fit went negative: keep the launch overhead
        rest = y - a[:, 1] * launch
        if np.any(rest <= 0):
            launch = 0.0
            rest = y
        k = float(np.dot(a[:, 0], rest) / np.dot(a[:, 0], a[:, 0]))
    eta = min(1.0, 1.0 / k) if k > 0 else base.compute
    return Efficiency(compute=eta, memory=eta, launch_us=launch * 1e6, source="calibrated")


# ---------------------------------------------------------------------------- latency lookup
def interp_linear(xs: Sequence[float], ys: Sequence[Any], q: Any) -> Any:
    """Piecewise-linear ``ys(q)`` through ``(xs, ys)``, constant outside; ``q`` and ``ys`` may be tensors.

    At a knot the segment on its left is used (except at the first), so the gradient there is the
    saving of one channel less: channel counts sit on the measured (aligned) points, full width
    included, and a budget's marginal costs must not read 0 there."""
    v = float(q.detach()) if hasattr(q, "detach") else float(q)
    n = len(xs)
    if n == 1 or v < xs[0]:
        return ys[0] + q * 0
    if v > xs[-1]:
        return ys[-1] + q * 0
    j = next(i for i in range(1, n) if xs[i] >= v)
    return ys[j - 1] + (ys[j] - ys[j - 1]) * (q - xs[j - 1]) / (xs[j] - xs[j - 1])


@dataclass(frozen=True)
class SweepGrid:
    """A layer sweep's aligned points, parsed once (:func:`parse_sweep`): ``values[i][j]`` is the
    time at ``ins[i]`` inputs and ``outs[j]`` outputs; a depthwise sweep has one row (``ins == ()``)."""

    kind: str
    ins: tuple[float, ...]
    outs: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]


#: a sweep's time grows at least this share of proportional scaling per channel: measured points
#: that noise put below a narrower one are lifted, so no channel ever costs nothing or less
SWEEP_MIN_SLOPE = 0.01


def _rising(xs: list[int], ys: list[float]) -> list[float]:
    """``ys`` over increasing channel counts ``xs``, lifted where a point is not above the one before
    by at least :data:`SWEEP_MIN_SLOPE` of proportional scaling."""
    out: list[float] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i:
            low = out[-1] * (1.0 + SWEEP_MIN_SLOPE * (x - xs[i - 1]) / xs[i - 1])
            y = max(y, low)
        out.append(y)
    return out


def parse_sweep(sweep: dict[str, Any]) -> SweepGrid:
    """The aligned points of a measured sweep (``edgeslim.bench.sweep``) as a :class:`SweepGrid`,
    non-decreasing in both channel counts (:func:`_rising`: a wider layer is never faster; timing
    noise made a few measured points so, and gave the budget a negative marginal cost)."""
    pts = [p for p in sweep["points"] if p[3]]
    if sweep["kind"] == "dw":
        by = {int(p[1]): float(p[2]) for p in pts}
        xs = sorted(by)
        return SweepGrid("dw", (), tuple(xs), (tuple(_rising(xs, [by[x] for x in xs])),))
    grid = {(int(p[0]), int(p[1])): float(p[2]) for p in pts}
    ins, outs = sorted({k[0] for k in grid}), sorted({k[1] for k in grid})
    if len(grid) != len(ins) * len(outs):
        raise EdgeslimError("a layer sweep must measure every pair of its input and output counts")
    rows = [_rising(outs, [grid[(a, b)] for b in outs]) for a in ins]
    cols = [_rising(ins, [row[j] for row in rows]) for j in range(len(outs))]
    values = tuple(tuple(cols[j][i] for j in range(len(outs))) for i in range(len(ins)))
    return SweepGrid(str(sweep["kind"]), tuple(ins), tuple(outs), values)


def sweep_latency(sweep: dict[str, Any] | SweepGrid, c_in: Any, c_out: Any) -> Any:
    """A layer's latency at ``(c_in, c_out)`` channels from its measured sweep (``edgeslim.bench.sweep``):
    bilinear interpolation of the aligned points (a depthwise layer: linear in ``c_out``)."""
    g = sweep if isinstance(sweep, SweepGrid) else parse_sweep(sweep)
    if g.kind == "dw":
        return interp_linear(g.outs, g.values[0], c_out)
    rows = [interp_linear(g.outs, row, c_out) for row in g.values]
    return interp_linear(g.ins, rows, c_in)
