"""Latency budgets in milliseconds that are measured, not assumed (``slim --target-latency``).

Before training, on this host (a ``host`` profile run with ONNX Runtime) and without a table
given, :func:`measure_table` exports the dense model and measures its per-layer latency lookup
(``bench.layers`` + ``bench.sweep``) for the budget controller. After training,
:func:`latency_check` exports the dense and the slim network and measures both, interleaved,
with ONNX Runtime, and reports target, predicted and measured latency side by side; on another
target it names the command that measures them there.
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.errors import EdgeslimError, Step
from edgeslim.utils.parsing import quote
from edgeslim.utils.rundir import DENSE_ONNX, SLIM_ONNX, TABLE_FILE

if TYPE_CHECKING:
    from torch import nn

    from edgeslim.export.onnx_export import OnnxExportResult

log = logging.getLogger(__name__)


def measured_here(profile: Any, table: dict[str, Any] | None) -> bool:
    """Is the latency target this host with ONNX Runtime (so it can be measured now)? A given table
    counts only if ONNX Runtime measured it on this machine (its ``env.host``) with providers this
    ONNX Runtime has (a table of CUDAExecutionProvider on a host of the same name, a container's, is
    timed on its device)."""
    import platform

    if table is not None:
        env = table.get("env") or {}
        here = table.get("backend") == "onnxruntime" and env.get("host") == platform.node()
        try:
            import onnxruntime
        except ImportError:
            return here
        return here and set(env.get("providers") or ()) <= set(onnxruntime.get_available_providers())
    return profile is not None and profile.kind == "host" and profile.preferred.backend == "onnxruntime"


#: the ONNX Runtime settings a lookup is timed under, from its table's ``env``
TIMING_KEYS = ("threads", "graph_opt", "providers")
#: what the lookup a run measures records as its ``model`` (:func:`own_lookup`)
LOOKUP_MODEL = "the dense model before training (a temporary ONNX export)"


def _timing_options(profile: Any, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """ONNX Runtime options of a lookup measured here and of its check: the table's threads, graph
    optimisation level and providers (its ``env``); without a table (the run measures its own), or for
    what a table does not record (one of an older bench, without threads: warned), the profile's threads
    (host-cpu: 1), graph_opt all and the CPU provider."""
    assumed = {
        "threads": int(getattr(getattr(profile, "preferred", None), "threads", None) or 1),
        "graph_opt": "all",
        "providers": ["CPUExecutionProvider"],
    }
    if table is None:
        return {k: assumed[k] for k in ("threads", "graph_opt")}
    env = table.get("env") or {}
    options = {k: env[k] for k in TIMING_KEYS if env.get(k)}
    missing = [k for k in TIMING_KEYS if k not in options]
    if missing:
        log.warning(
            "the latency table does not record the %s it was timed with: the latency check times with %s "
            "(bench the table again to record them)",
            ", ".join(missing), ", ".join(f"{k} {assumed[k]}" for k in missing),
        )  # fmt: skip
    return {**assumed, **options}


def _export(
    model: Any, path: Path, input_shape: tuple[int, int, int], inputs: Any = None, **metadata: Any
) -> OnnxExportResult:
    from edgeslim.export import export_onnx

    return export_onnx(copy.deepcopy(model).cpu(), path, input_shape, dynamic_batch=True, force=True,
                       inputs=inputs, **metadata)  # fmt: skip


def export_pair(
    dense: Any,
    slim: Any,
    input_shape: tuple[int, int, int],
    out_dir: Path,
    inputs: Any = None,
    arch: str | None = None,
    recipe: dict[str, Any] | None = None,
) -> list[str]:
    """``out_dir/dense.onnx`` and ``out_dir/slim.onnx`` (dynamic batch, checked in ORT on ``inputs``,
    an :class:`~edgeslim.export.validate.InputBatch`; None: random inputs), exported as ``edgeslim
    export`` exports them (an unsimplified graph where the simplifier broke the graph); their metadata
    names ``arch`` and the slim one's ``recipe``. Returns what to warn of: a simplifier that broke a graph."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [
        _export(dense, out_dir / DENSE_ONNX, input_shape, inputs, arch=arch),
        _export(slim, out_dir / SLIM_ONNX, input_shape, inputs, arch=arch, recipe=recipe),
    ]
    return [f"{r.path.name}: {r.simplifier_broke}" for r in done if r.simplifier_broke]


def measure_table(
    model: Any,
    input_shape: tuple[int, int, int],
    out_dir: Path,
    batch: int,
    profile: Any,
    round_to: int = 1,
    check: Callable[[dict[str, Any]], None] | None = None,
    cache: dict[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    zero_invariant: bool = False,
) -> Path:
    """Measure the latency lookup of ``model`` and write ``out_dir/latency_table.json``: per-layer
    times, per-layer sweeps over channel counts (at multiples of ``round_to``), and whole networks
    at uniform widths (:data:`~edgeslim.surgery.widths.CALIBRATION_FRACTIONS`, cut by surgery with the run's
    ``zero_invariant`` removability) that calibrate the lookup's sum. ``check(table)`` runs before anything is written (it may refuse). ``cache``: a dict kept
    across calls for the same model and batch, so the per-layer times (which do not depend on
    ``round_to``) are measured once. ``progress(done, total, what)`` is told each stage and each layer
    swept (minutes on a large model)."""
    import tempfile

    from edgeslim.bench.layers import layer_table, write_layer_table
    from edgeslim.bench.sweep import sweep_layers
    from edgeslim.bench.timing import TimingConfig

    with tempfile.TemporaryDirectory(prefix="edgeslim-lookup-") as tmp:
        onnx_path = Path(tmp) / DENSE_ONNX
        _export(model, onnx_path, input_shape)
        options = _timing_options(profile)
        cfg = TimingConfig(warmup_s=0.5, warmup_iters=20, min_iters=200, min_time_s=1.0)
        step = progress or (lambda done, total, what: None)
        if cache is not None and "layers" in cache:
            tab = copy.deepcopy(cache["layers"])
        else:
            step(0, 0, "per-layer times")
            tab = layer_table(str(onnx_path), "onnxruntime", batch, cfg, options)
            if cache is not None:
                cache["layers"] = copy.deepcopy(tab)
        step(0, 0, f"sweeps in multiples of {max(int(round_to), 1)}")
        tab["sweeps"] = sweep_layers(str(onnx_path), batch, options, max(int(round_to), 1), progress)
        step(0, 0, "calibration at uniform widths")
        tab["calibration"] = _calibration(
            model, input_shape, onnx_path, batch, options, round_to, zero_invariant
        )
        tab["version"] = 2
        tab["model"] = LOOKUP_MODEL
        if check is not None:
            check(tab)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = write_layer_table(tab, out_dir / TABLE_FILE, force=True)
    log.info(
        "measured the latency lookup of the dense model: %s (%.3g ms at batch %d)",
        path,
        tab["total_ms"],
        batch,
    )
    return path


def own_lookup(path: Path) -> dict[str, Any] | None:
    """The lookup :func:`measure_table` wrote at ``path`` (a run's own, by its ``model``), else None."""
    from edgeslim.sparsity.resource import load_latency_table

    try:
        table = load_latency_table(path)
    except EdgeslimError:
        return None
    return table if table.get("model") == LOOKUP_MODEL else None


def lookup_differs(
    table: dict[str, Any], input_shape: Sequence[int], batch: int, profile: Any, zero_invariant: bool
) -> str | None:
    """Why the lookup ``table`` (:func:`own_lookup`) is not what :func:`measure_table` would measure
    now for ``input_shape``, ``batch``, ``profile`` and ``zero_invariant`` (say "measured for ..."),
    or None; its layers' widths and channel multiple are the run's to check (the resource model)."""

    env = table.get("env") or {}
    calibration = table.get("calibration") or {}
    try:
        import onnxruntime

        version = onnxruntime.__version__
    except ImportError:
        version = None
    if table.get("batch") != batch:
        return f"batch {table.get('batch')}, not {batch}"
    if list((table.get("input_shape") or [None])[1:]) != list(input_shape):
        return f"input {table.get('input_shape')}, not {[batch, *input_shape]}"
    if not measured_here(None, table) or env.get("onnxruntime") != version:
        return f"host {env.get('host')} with ONNX Runtime {env.get('onnxruntime')} {env.get('providers')}"
    timing = _timing_options(profile)  # (as measure_table times)
    if any(env.get(k) != v for k, v in timing.items()):
        return "other ONNX Runtime settings (" + ", ".join(f"{k} {env.get(k)}" for k in timing) + ")"
    if bool(calibration.get("zero_invariant")) != bool(zero_invariant):
        return f"zero_invariant {bool(calibration.get('zero_invariant'))}"
    return None


def measure_narrowest(
    model: Any,
    input_shape: tuple[int, int, int],
    batch: int,
    profile: Any,
    round_to: int = 1,
    zero_invariant: bool = False,
) -> tuple[float, float]:
    """The dense network's and the narrowest one's time in ms (every channel group at its fixed channels,
    else at one, in multiples of ``round_to``: what a lookup's target is refused below), whole networks
    timed interleaved as :func:`measure_table`'s calibration times them: seconds where the lookup takes
    minutes, so a target out of reach is refused before it."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeslim-lookup-") as tmp:
        onnx_path = Path(tmp) / DENSE_ONNX
        _export(model, onnx_path, input_shape)
        timed = _calibration(model, input_shape, onnx_path, batch, _timing_options(profile), round_to,
                             zero_invariant, fractions=(0.0,))  # fmt: skip
    return float(timed["dense_ms"]), float(timed["points"][0]["measured_ms"])


def _calibration(
    model: Any,
    input_shape: tuple[int, int, int],
    dense_onnx: Path,
    batch: int,
    options: dict,
    round_to: int,
    zero_invariant: bool = False,
    fractions: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Dense and uniformly slimmed copies of ``model`` (at ``fractions`` of every group's channels; default
    :data:`~edgeslim.surgery.widths.CALIBRATION_FRACTIONS`), timed interleaved: ``{"dense_ms", "points", ...}``."""
    import tempfile

    import torch

    from edgeslim.bench.layers import measure_calibration
    from edgeslim.surgery.widths import CALIBRATION_FRACTIONS, uniform_widths

    widths = uniform_widths(
        model, torch.zeros(1, *input_shape), fractions or CALIBRATION_FRACTIONS, round_to=round_to,
        zero_invariant=zero_invariant,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgeslim-calib-") as tmp:
        paths = {}
        for f, slim in widths.items():
            paths[f] = str(Path(tmp) / f"u{f}.onnx")
            _export(slim, Path(paths[f]), input_shape)
        return measure_calibration(str(dense_onnx), paths, "onnxruntime", batch, options, round_to,
                                   zero_invariant=zero_invariant)  # fmt: skip


def latency_check(
    dense: Any,
    slim: Any,
    input_shape: tuple[int, int, int],
    out_dir: Path,
    budget: dict[str, Any],
    *,
    here: bool,
    profile: Any,
    table: dict[str, Any] | None = None,
    trials: int = 3,
    inputs: Any = None,
    arch: str | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Target, predicted and measured latency of the slim network (and the dense one) at the budget's
    batch; both are exported to ONNX first, checked in ONNX Runtime on ``inputs`` (the run's test
    images; None: random inputs). An export that fails says that the run's own files are written; one whose
    simplifier broke the graph (the unsimplified one written) is named in ``warnings``."""
    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.timing import TimingConfig

    batch = int(budget["settings"].get("batch", 1))
    frac = float(budget["target_fraction"])
    from edgeslim.sparsity.budget import parse_target

    absolute = parse_target(str(budget["settings"]["target"]), "latency")[0] == "absolute"
    out: dict[str, Any] = {
        "batch": batch,
        "target_fraction_of_dense": None if absolute else frac,
        "target_ms": budget["target"] * 1e3 if absolute else None,
        "predicted_ms": budget["achieved"] * 1e3,
        "predicted_dense_ms": budget["dense"] * 1e3,
    }
    try:
        if broke := export_pair(dense, slim, input_shape, out_dir, inputs, arch=arch, recipe=recipe):
            out["warnings"] = broke
    except EdgeslimError as exc:
        from edgeslim.export.onnx_export import ExportCheckFailed

        why = (
            f"ONNX Runtime disagrees with PyTorch: {exc.reason}"
            if isinstance(exc, ExportCheckFailed)
            else str(exc)
        )
        step = Step("export")
        raise EdgeslimError(
            f"the latency check stopped: {why} -- the slim run itself is complete in {out_dir} (its model, "
            f"report and plots); measure it with {step} and a benchmark",
            steps=(step,),
        ) from exc
    if not here:
        name = getattr(profile, "name", "the device")
        precision = budget["settings"].get("precision") or getattr(
            getattr(profile, "preferred", None), "precision", None
        )
        out["measured"] = False
        backend = getattr(getattr(profile, "preferred", None), "backend", None)
        out["command"] = (
            f"edgeslim bench {quote(out_dir / SLIM_ONNX)} --baseline {quote(out_dir / DENSE_ONNX)} --batch {batch} "
            f"--profile {quote(name)}"
            + (" --backend trtexec" if backend == "tensorrt" else "")
            + (f" --precision {precision}" if precision else "")
            + f" --out {quote(out_dir / 'bench')}"
        )
        return out
    models = {"baseline": str(out_dir / DENSE_ONNX), "slim": str(out_dir / SLIM_ONNX)}
    cfg = TimingConfig(warmup_s=0.3, warmup_iters=20, min_iters=100, min_time_s=0.5)
    # (timed as the lookup was: a review's check ran 1 thread for 2)
    options = _timing_options(profile, table)
    rec = run_comparison(models, "onnxruntime", [batch], trials, cfg, options, tegrastats=False)
    from edgeslim.bench.report import busy_warning, spread_warnings

    key = str(batch)
    # what bench warns of a busy machine or timings spread wide (a trial's miss of 11% measured 2% under on
    # a rerun: the check said slim again with a smaller target, not that the machine was loaded)
    unsteady = [w for w in (busy_warning(rec), *spread_warnings(rec)) if w]
    dense_ms = statistics.median(rec["summary"]["baseline"][key]["trial_p50_ms"])
    slim_ms = statistics.median(rec["summary"]["slim"][key]["trial_p50_ms"])
    target_ms = out["target_ms"] if absolute else frac * dense_ms
    out.update(
        measured=True,
        measured_ms=slim_ms,
        measured_dense_ms=dense_ms,
        target_ms=target_ms,
        measured_over_target=slim_ms / target_ms,
        predicted_over_measured=out["predicted_ms"] / slim_ms,
        # side by side with the dense run of this measurement (the lookup was timed earlier, maybe
        # under another load): the lookup's fraction of dense over the measured fraction
        measured_fraction=slim_ms / dense_ms,
        predicted_fraction=float(budget["achieved_fraction"]),
        fraction_predicted_over_measured=float(budget["achieved_fraction"]) / (slim_ms / dense_ms),
        speedup=dense_ms / slim_ms,
        trials=trials,
        load_avg=(rec["env"].get("load_avg") or [None])[0],
        cv={label: rec["summary"][label][key]["cv"] for label in models},
        unsteady=unsteady,
        backend="onnxruntime",
        **{k: options.get(k) for k in TIMING_KEYS},
    )
    return out


def verify(check: dict[str, Any], tolerance: float) -> None:
    """Raise when the measured latency exceeds the target by more than ``tolerance``."""
    if not check.get("measured"):
        raise EdgeslimError(
            f"the latency cannot be measured on this host for this target; measure it on the device: {check['command']}"
        )
    over = check["measured_over_target"] - 1.0
    if over > tolerance:
        raise EdgeslimError(
            f"measured latency {check['measured_ms']:.4g} ms misses the target {check['target_ms']:.4g} ms by "
            f"{over:.1%} (tolerance {tolerance:.0%}); outputs are written: slim again with a smaller target",
            param="verify_latency",
        )


def predicted_speed(
    trained: nn.Module,
    input_shape: Sequence[int],
    profile: str,
    precision: str | None = None,
    batch: int = 1,
    round_to: int = 1,
    zero_invariant: bool = False,
) -> dict[str, Any]:
    """The roofline prediction, on ``profile``, of the dense network and of ``trained`` (full width,
    its zero BN scales marking the channels surgery removes): what a run that was not a latency
    budget tells a device user about speed, not only MACs (a trial's YOLOv8n at 64 px: 71% fewer MACs,
    1.08x predicted). Priced as the budget and ``bench --predict`` price it, channel counts rounded up
    to the run's ``round_to`` as surgery rounds them; ``zero_invariant``: the run zeroed dead channels'
    BN shifts too, so the squeeze-excitation-gated ones are removed (priced as surgery cuts them)."""
    import torch

    from edgeslim.sparsity.resource import build_resource

    p = next(trained.parameters(), None)
    example = torch.zeros(
        (1, *[int(v) for v in input_shape]),
        device=p.device if p is not None else "cpu",
        dtype=p.dtype if p is not None else torch.float32,
    )
    r = build_resource(
        trained,
        example,
        "latency",
        profile=profile,
        precision=precision,
        batch=batch,
        round_to=round_to,
        shifts_zeroed=zero_invariant,
    )
    slim = r.of_model(trained)
    return {
        "label": "PREDICTION (roofline of every kernel; not a measurement)",
        "profile": r.profile.name,
        "precision": r.precision,
        "batch": batch,
        "dense_ms": r.dense * 1e3,
        "slim_ms": slim * 1e3,
        "speedup": r.dense / slim if slim > 0 else None,
    }
