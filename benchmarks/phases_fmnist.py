"""Training phases and a momentum-consistent prox step: Fashion-MNIST, vgg-small, CPU, several seeds.

Variants (each one round of proximal l1 slimming, no fine-tune; same schedule, data and seed):

* ``dense``: plain training (the baseline);
* ``l1``: today's default (prox from the first step, ``alpha = 1/lr``, constant beta);
* ``phases``: a warm-up without the prox and a recovery with the zero pattern frozen (1 epoch each);
* ``default``: what ``slim`` shipped until 2026-12-04, 25% warm-up and 25% recovery;
* ``restart``: what it ships since, 10% warm-up and 50% recovery restarted at the base rate;
* ``restart_layer``: ``restart`` with the scale-invariant importance (``importance="layer"``);
* ``restart60``: the same with a 60% recovery;
* ``effective``: the prox step consistent with the optimizer (``alpha = (1-m)/lr`` under momentum);
* ``both``: phases and the effective step;
* ``ramp``: ``l1`` with beta grown geometrically over the end of training (``beta_end="auto"``);
* ``effective_sameS``: the effective step with the ``l1`` lambda itself;
* ``budget``, ``budget_phases``: ``--target-macs 0.5`` without and with phases (the controller sets
  lambda; the table's lambda is only its starting value);
* ``budget_uniform_macs``: ``--target-macs 0.252`` with the default phases (the MACs ``uniform@0.5`` keeps);
* ``w5r80``: the zero pattern chosen early, 80% recovery (after ``scratch@S`` showed the kept channels
  matter less than how long they train);
* ``w5r70``, ``w20r50``, ``w10r30``, ``restart_lr05``, ``restart_ramp``, ``restart_eff``: ``restart``
  with another split (warm-up / recovery in %), a recovery restarted at 0.05, ``beta_end="auto"``,
  the effective prox step (the GPU sweep, ``benchmarks/gpu_phases_fmnist.py``);
* ``uniform@F``: not slimming: every coupled channel group keeps its first ``ceil(F x size)``
  channels, the narrow network is re-initialised (the zoo's initialisation) and trained from
  scratch on the same schedule (the network of that width a user could train directly; on
  vgg-small ``uniform@0.5`` removes exactly 50% of the BN channels);
* ``widths@W1-W2-...``: ``uniform@F``'s protocol for a network of chosen widths: the prunable
  groups in order keep their first ``W1, W2, ...`` channels (vgg-small: six groups of 32 32 64 64
  128 128; widths summing to 224 remove 50% of the BN channels), whether any way of spending half
  the channels trains closer to dense than the uniform half;
* ``scratch@S``: not slimming: the network ``restart@S`` (the default phases) leaves at the same
  seed, re-initialised and trained from scratch on the same schedule (Liu et al. 2019, "Rethinking
  the value of network pruning", scratch-E): whether the channels slimming keeps, or the way it
  trains them, is what costs accuracy against ``uniform@F``.

Strength: ``lr`` variants get the lambda whose total shrink over the steps the prox acts on is ``S``
(``--shrink``). With ``alpha = 1/lr`` and momentum m the run solves ``L + (1-m) lam |xi|``
(docs/slimming.md), so the ``effective`` variants get ``lam = (1-m) lam_lr``: the same objective,
only the dynamics differ. (At the same ``S`` they solve a 10x stronger problem: measured, it
collapsed the network, 94% of channels zero.) Every run records the test accuracy before the final
assignment, with ``gamma := 0`` where ``xi = 0`` (the default finalize), with ``gamma := xi``
everywhere, and after surgery. Runs are cached in ``--work`` (one JSON each), so a killed sweep
continues. Writes ``benchmarks/results/<name>.{json,md}``.

    python benchmarks/phases_fmnist.py --subset 6000 --test-subset 2000 --epochs 4 --seeds 0,1
"""

# ruff: noqa: B023  (the per-run closures are called inside their loop iteration)
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from budget_fmnist import uniform_cut
from runcache import cached, seed_cache

from edgeslim.checkpoint import load_model
from edgeslim.data import load_dataset
from edgeslim.models.init import slimming_init
from edgeslim.models.registry import create_model
from edgeslim.slim import CollapseError, SlimSettings, resolve_lambda, slim_model
from edgeslim.sparsity.resource import build_resource, zero_channels
from edgeslim.surgery import prune_with_report
from edgeslim.train import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"

#: variant -> SlimSettings fields beyond the strength (phases in epochs)
NO_PHASES = {"prox_warmup": 0, "recovery": 0}
VARIANTS: dict[str, dict[str, Any]] = {
    "l1": {"prox_step": "lr", **NO_PHASES},
    "phases": {"prox_step": "lr", "prox_warmup": 1.0, "recovery": 1.0, "recovery_lr": "off"},
    #: what `slim` shipped until 2026-12-04: 25% warm-up, 25% recovery on the schedule's tail
    "default": {"prox_step": "lr", "prox_warmup": "25%", "recovery": "25%", "recovery_lr": "off"},
    #: what `slim` ships since (DEFAULT_WARMUP, DEFAULT_RECOVERY, DEFAULT_RECOVERY_LR): a short warm-up,
    #: a long recovery that restarts the learning rate at the base rate (0.1 here)
    "restart": {"prox_step": "lr", "prox_warmup": "10%", "recovery": "50%", "recovery_lr": 0.1},
    #: the default phases with the scale-invariant importance (prox threshold per layer scale)
    "restart_layer": {
        "prox_step": "lr",
        "prox_warmup": "10%",
        "recovery": "50%",
        "recovery_lr": 0.1,
        "importance": "layer",
    },
    #: the same with a longer recovery (30% of training left to sparsify)
    "restart60": {"prox_step": "lr", "prox_warmup": "10%", "recovery": "60%", "recovery_lr": 0.1},
    "effective": {"prox_step": "effective", **NO_PHASES},
    "both": {"prox_step": "effective", "prox_warmup": 1.0, "recovery": 1.0, "recovery_lr": "off"},
    "ramp": {"prox_step": "lr", "beta_end": "auto", **NO_PHASES},
    #: the effective step with the lr variants' lambda (same S): a 10x stronger objective
    "effective_sameS": {"prox_step": "effective", **NO_PHASES},
    #: budget-targeted (50% of the dense MACs; lambda from the controller), without and with phases
    "budget": {"budget": {"metric": "macs", "target": "0.5"}, **NO_PHASES},
    "budget_phases": {"budget": {"metric": "macs", "target": "0.5"}, "prox_warmup": 1.0, "recovery": 1.0},
    #: what `slim --target-macs 0.252` ships (default phases): the MACs of the uniform half-width network
    "budget_uniform_macs": {"budget": {"metric": "macs", "target": "0.252"}},
    #: the default phases re-split (GPU sweep, 2026-12-04): a short sparsification (25%), a longer
    #: warm-up (20%), a longer sparsification (60%)
    "w5r70": {"prox_step": "lr", "prox_warmup": "5%", "recovery": "70%", "recovery_lr": 0.1},
    "w20r50": {"prox_step": "lr", "prox_warmup": "20%", "recovery": "50%", "recovery_lr": 0.1},
    "w10r30": {"prox_step": "lr", "prox_warmup": "10%", "recovery": "30%", "recovery_lr": 0.1},
    #: the pattern chosen early (5% warm-up, 15% sparsification, 80% recovery): the kept channels
    #: retrained from scratch are no better than a uniform width, so spend the schedule on training them
    "w5r80": {"prox_step": "lr", "prox_warmup": "5%", "recovery": "80%", "recovery_lr": 0.1},
    #: the default with the recovery restarted at half the base rate
    "restart_lr05": {"prox_step": "lr", "prox_warmup": "10%", "recovery": "50%", "recovery_lr": 0.05},
    #: the default with beta grown over the end of sparsification (kept scales lose the 1/beta bias)
    "restart_ramp": {
        "prox_step": "lr",
        "prox_warmup": "10%",
        "recovery": "50%",
        "recovery_lr": 0.1,
        "beta_end": "auto",
    },
    #: the default with the optimizer-consistent prox step (the same objective: lam = (1-m) lam_lr)
    "restart_eff": {"prox_step": "effective", "prox_warmup": "10%", "recovery": "50%", "recovery_lr": 0.1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=6000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shrink", type=float, default=0.8)
    ap.add_argument("--beta", type=float, default=100.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated variants (dense,"
        + ",".join(VARIANTS)
        + ",uniform@F,scratch@S; NAME@S: shrink S)",
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_phases"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--device", default="cpu", help="cpu, cuda (the GPU sweep: benchmarks/gpu_phases_fmnist.py)"
    )
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="a folder with the four Fashion-MNIST IDX files"
    )
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    ap.add_argument("--cached-only", action="store_true",
                    help="run nothing: report the runs of --work (and --merge) only")  # fmt: skip
    ap.add_argument("--name", default="phases_fmnist")
    ap.add_argument("--merge", action="store_true",
                    help="keep the runs of results/<name>.json (also as cache entries; this call's runs replace equal keys)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    only = [s for s in args.only.split(",") if s] or ["dense", *VARIANTS]
    runs: dict[str, dict[str, Any]] = {}
    results = args.results_dir / f"{args.name}.json"
    old = json.loads(results.read_text()) if args.merge and results.exists() else None
    if old is not None:  # the committed runs serve as the cache (a fresh checkout has none)
        seed_cache(args.work, old["runs"])
    for seed in seeds:
        if args.cached_only:
            runs.update(cached_runs(args.work, only, seed))
            continue
        bundle = load_dataset(
            "fashion-mnist", args.data_dir, subset=args.subset, test_subset=args.test_subset, seed=seed
        )
        spec = bundle.spec_for("vgg-small")
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch, device=args.device, seed=seed)

        def dense() -> dict[str, Any]:
            torch.manual_seed(seed)
            model = create_model(spec)
            res = fit(model, bundle, config)
            ex = torch.zeros(1, *spec.input_shape)
            rep = prune_with_report(model.cpu(), ex).report  # nothing is zero: dense counts
            return {"accuracy": res.test_accuracy, "channels_removed": 0.0, "macs_removed": 0.0,
                    "macs": rep["macs_before"], "params": rep["params_before"]}  # fmt: skip

        def slim(variant: str) -> dict[str, Any]:
            torch.manual_seed(seed)
            model = create_model(spec)
            out = args.work / f"{variant}-s{seed}"
            if out.exists():
                shutil.rmtree(out)
            name, _, strength = variant.partition("@")  # "phases@0.5": another total shrink
            shrink = float(strength) if strength else args.shrink
            budget = "budget" in VARIANTS[name]
            settings = SlimSettings(shrink=None if budget else shrink, beta=args.beta, **VARIANTS[name])
            if (
                settings.prox_step == "effective" and name != "effective_sameS"
            ):  # the same objective L + (1-m) lam_lr |xi| (see the doc)
                plain = SlimSettings(shrink=shrink, beta=args.beta, **{**VARIANTS[name], "prox_step": "lr"})
                settings.shrink = None
                settings.lam = (1.0 - config.momentum) * resolve_lambda(plain, config, bundle)
            try:
                rep = slim_model(model, spec, bundle, config, settings, out).report
            except CollapseError as exc:
                rep = json.loads((out / "report.json").read_text())
                rep["collapse"]["message"] = str(exc)
            acc = rep["accuracy"]
            return {
                "lambda": rep["slimming"]["lam"],
                "accuracy": acc["slim"],
                "accuracy_before_finalize": acc["before_finalize"],
                "accuracy_trained": acc["trained"],
                "accuracy_gamma_eq_xi": acc.get("gamma_eq_xi"),
                "channels_removed": rep["channels"]["removed_frac"],
                "macs_removed": rep["macs"]["removed_frac"],
                "params_removed": rep["params"]["removed_frac"],
                "collapse": rep["collapse"]["message"],
                "phases": rep["slimming"].get("phase_steps"),
                "history": [(h["epoch"], h["test_acc"], h.get("xi_zero")) for h in rep.get("history", [])],
            }

        def retrain(narrow: torch.nn.Module) -> float:
            """Test accuracy of ``narrow`` re-initialised (the zoo's way) and trained from scratch."""
            torch.manual_seed(seed)
            for m in narrow.modules():
                if hasattr(m, "reset_parameters") and m is not narrow:
                    m.reset_parameters()
            slimming_init(narrow)  # the zoo's own initialisation (kaiming fan-out convs, BN scale 0.5)
            return fit(narrow, bundle, config).test_accuracy

        def narrow(cut: Any, **extra: Any) -> dict[str, Any]:
            """The network left when ``cut(resource)`` (flat BN positions) is removed, re-initialised and
            trained from scratch; ``extra`` is recorded beside its accuracy."""
            torch.manual_seed(seed)
            model = create_model(spec)
            ex = torch.zeros(1, *spec.input_shape)
            resource = build_resource(model, ex, "macs")
            dead = cut(resource)
            zero_channels(model, dead)
            pr = prune_with_report(model, ex)
            rep = pr.report
            return {"accuracy": retrain(pr.model), **extra,
                    "channels_removed": float(dead.sum()) / resource.total,
                    "macs_removed": 1.0 - rep["macs_after"] / rep["macs_before"],
                    "params_removed": 1.0 - rep["params_after"] / rep["params_before"]}  # fmt: skip

        def uniform(fraction: float) -> dict[str, Any]:
            return narrow(lambda resource: uniform_cut(resource)(fraction), width_fraction=fraction)

        def widths(chosen: str) -> dict[str, Any]:
            """``uniform``'s protocol for a network of chosen widths (``chosen`` = "W1-W2-...")."""
            want = [int(w) for w in chosen.split("-")]
            return narrow(lambda resource: width_cut(resource, want, chosen), widths=want)

        def scratch(strength: str) -> dict[str, Any]:
            source = f"restart@{strength}"
            key = f"{source}-s{seed}"
            slim_file = args.work / key / "model.pt"
            # a cached result without its network (e.g. from --merge) runs again
            fresh = not slim_file.exists()
            runs[key] = src = cached(args.work, key, fresh, lambda: slim(source))
            narrow = load_model(slim_file).model
            return {"accuracy": retrain(narrow), "source": source, "source_accuracy": src["accuracy"],
                    **{k: src[k] for k in ("channels_removed", "macs_removed", "params_removed")}}  # fmt: skip

        for variant in only:
            key = f"{variant}-s{seed}"
            name, _, strength = variant.partition("@")
            if variant == "dense":
                fn = dense
            elif name == "uniform":
                fn = lambda f=float(strength or 0.5): uniform(f)  # noqa: E731
            elif name == "widths":
                fn = lambda w=strength: widths(w)  # noqa: E731
            elif name == "scratch":
                fn = lambda s=strength or "1.0": scratch(s)  # noqa: E731
            else:
                fn = lambda v=variant: slim(v)  # noqa: E731
            runs[key] = cached(args.work, key, args.fresh, fn)
    command = "python " + " ".join(sys.argv)
    if old is not None:
        runs = {**old["runs"], **runs}
        seeds = sorted({*seeds, *(int(k.rsplit("-s", 1)[1]) for k in runs)})
        command = f"{old['setup']['command']}; {command}"
    write(runs, args, seeds, command)


def width_cut(resource: Any, want: list[int], name: str) -> torch.Tensor:
    """The flat BN positions removed when the prunable groups, in order, keep their first ``want``
    channels (``name``: the variant, for the refusal of a wrong count)."""
    group = resource.group_of_class[resource.pos_class]
    rank = torch.zeros(resource.graph.num_classes, dtype=torch.long)
    for grp in resource.graph.groups:
        rank[grp.classes] = torch.arange(grp.size)
    order = sorted({int(i) for i in group[resource.pos_removable]})
    if len(want) != len(order):
        raise SystemExit(f"widths@{name}: {len(order)} prunable groups, {len(want)} widths given")
    keep = torch.full((int(group.max()) + 1,), 1 << 30, dtype=torch.long)
    keep[order] = torch.tensor(want)
    return (rank[resource.pos_class] >= keep[group]) & resource.pos_removable


def cached_runs(work: Path, only: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """The runs of ``only`` at ``seed`` already in ``work`` (those not there are left out)."""
    paths = {f"{v}-s{seed}": work / f"{v}-s{seed}.json" for v in only}
    return {k: json.loads(p.read_text()) for k, p in paths.items() if p.exists()}


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _interp(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of (channels removed, accuracy) points at ``x`` (None outside their range)."""
    (x0, y0), (x1, y1) = sorted(points)
    if not x0 <= x <= x1 or x1 == x0:
        return None
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def matched_channels(runs: dict[str, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Phases vs l1 at equal channels removed: each run of one family against the other family's two
    strengths (default and ``@S``) interpolated, per seed."""
    out = []
    for seed in seeds:
        fam = {}
        for name in ("l1", "phases"):
            pts = [(r["channels_removed"], r["accuracy"]) for k, r in runs.items()
                   if k.endswith(f"-s{seed}") and k.split("@")[0].rsplit("-s", 1)[0] == name]  # fmt: skip
            if len(pts) == 2:
                fam[name] = pts
        if len(fam) < 2:
            continue
        for name, other in (("l1", "phases"), ("phases", "l1")):
            for ch, acc in fam[name]:
                y = _interp(fam[other], ch)
                if y is not None:
                    out.append({"seed": seed, "channels_removed": ch, name: acc, other: y, "measured": name})
    return out


def family(variant: str) -> str:
    """The family a variant's runs are interpolated in: its name without the strength (``restart@1.0``
    -> ``restart``); each ``widths@...`` network is its own."""
    return variant if variant.startswith("widths@") else variant.split("@")[0]


def _family_points(runs: dict[str, dict[str, Any]], fam: str, seed: int) -> list[tuple[float, float]]:
    """(channels removed, accuracy) of every strength of the family ``fam`` at ``seed``, sorted."""
    return sorted((r["channels_removed"], r["accuracy"]) for k, r in runs.items()
                  if k.endswith(f"-s{seed}") and family(k.rsplit("-s", 1)[0]) == fam)  # fmt: skip


def _bracketed(pts: list[tuple[float, float]], x: float) -> tuple[float, list[float]] | None:
    """The accuracy at ``x`` channels removed, interpolated between the two points that bracket it,
    and their channel shares; None when ``x`` is outside the points."""
    below = [p for p in pts if p[0] <= x]
    above = [p for p in pts if p[0] >= x]
    if not below or not above:
        return None
    lo, hi = below[-1], above[0]
    y = _interp([lo, hi], x) if lo[0] != hi[0] else lo[1]
    return (lo[1] if y is None else y), [lo[0], hi[0]]


def vs_family(runs: dict[str, dict[str, Any]], ref: str = "default") -> list[dict[str, Any]]:
    """Every run of another family against ``ref`` at the same seed and channel share (``ref``'s
    strengths interpolated), as a difference in pt."""
    out = []
    for key, r in runs.items():
        name, seed = key.rsplit("-s", 1)
        if family(name) in (ref, "dense"):
            continue
        hit = _bracketed(_family_points(runs, ref, int(seed)), r["channels_removed"])
        if hit is not None:
            out.append({"run": key, "channels_removed": r["channels_removed"], "accuracy": r["accuracy"],
                        "ref": hit[0], "diff_pt": 100 * (r["accuracy"] - hit[0])})  # fmt: skip
    return out


def at_channels(
    runs: dict[str, dict[str, Any]], seeds: list[int], share: float = 0.5
) -> list[dict[str, Any]]:
    """Per family (a variant and its ``@S`` strengths) with runs on both sides of ``share`` channels
    removed: per seed, the accuracy linearly interpolated at ``share`` between the two bracketing
    runs; where dense ran at that seed, the paired difference to it (pt), their mean and standard
    error (``mean_pt`` None without dense runs)."""
    out = []
    families = sorted({family(k.rsplit("-s", 1)[0]) for k in runs} - {"dense"})
    for fam in families:
        diffs, per_seed = [], []
        for seed in seeds:
            hit = _bracketed(_family_points(runs, fam, seed), share)
            if hit is None:
                continue
            dense = runs.get(f"dense-s{seed}")
            acc = hit[0]
            per_seed.append(
                {"seed": seed, "accuracy": acc, "dense": dense and dense["accuracy"], "bracket": hit[1]}
            )
            if dense is not None:
                diffs.append(100 * (acc - dense["accuracy"]))
        if per_seed:
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None  # JSON: null
            out.append({"family": fam, "share": share, "per_seed": per_seed, "diff_pt": diffs,
                        "mean_accuracy": statistics.fmean(p["accuracy"] for p in per_seed),
                        "mean_pt": statistics.fmean(diffs) if diffs else None, "se_pt": se})  # fmt: skip
    return out


def write(runs: dict[str, dict[str, Any]], args: argparse.Namespace, seeds: list[int], command: str) -> None:
    table = []
    extra = sorted({k.rsplit("-s", 1)[0] for k in runs if "@" in k})
    for variant in ["dense", *VARIANTS, *extra]:
        rs = [runs[f"{variant}-s{s}"] for s in seeds if f"{variant}-s{s}" in runs]
        if not rs:
            continue
        row: dict[str, Any] = {"variant": variant, "seeds": [s for s in seeds if f"{variant}-s{s}" in runs]}
        for k in ("lambda", "accuracy", "accuracy_trained", "accuracy_before_finalize", "accuracy_gamma_eq_xi",
                  "channels_removed", "macs_removed"):  # fmt: skip
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                row[k] = {"per_seed": vals, "mean": _stats(vals)[0], "sd": _stats(vals)[1]}
        dense = [runs.get(f"dense-s{s}") for s in row["seeds"]]
        if variant != "dense" and all(dense):
            diffs = [r["accuracy"] - d["accuracy"] for r, d in zip(rs, dense)]  # type: ignore[index]
            row["vs_dense_pt"] = {"per_seed": [100 * d for d in diffs], "mean": 100 * _stats(diffs)[0]}
        table.append(row)
    setup = {
        "data": f"fashion-mnist, {args.subset} train images (class-balanced, per seed), {args.test_subset} test images",
        "model": "vgg-small (448 BN channels)",
        "schedule": f"{args.epochs} epochs, batch {args.batch}, SGD lr 0.1 cosine, momentum 0.9 nesterov, wd 5e-4",
        "strength": f"lr variants: total shrink S = {args.shrink} over the prox steps; effective variants: "
        f"(1-m) x that lambda (the same objective); beta {args.beta}",
        "variants": VARIANTS,
        "device": f"CPU, {args.threads} thread(s), shared machine" if args.device == "cpu" else args.device,
        "command": command,
    }
    matched = matched_channels(runs, seeds)
    at50 = at_channels(runs, seeds)
    #: every run against the default until 2026-12-04 and the one since, at its seed and channel share
    vs_ref = {ref: vs_family(runs, ref) for ref in ("default", "restart")}
    result = {
        "setup": setup,
        "table": table,
        "matched_channels": matched,
        "at_50pct_channels": at50,
        **{f"vs_{ref}_same_channels": v for ref, v in vs_ref.items()},
        "runs": runs,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")

    def cell(row: dict[str, Any], k: str, pct: bool = True) -> str:
        if k not in row:
            return "-"
        m, sd = row[k]["mean"], row[k]["sd"]
        return f"{m:.2%} ± {sd:.2%}" if pct else f"{m:.3g} ± {sd:.2g}"

    where = {"cpu": "CPU", "cuda": "GPU"}.get(args.device.split(":")[0], args.device)
    md = [f"# Training phases and the prox step (Fashion-MNIST, vgg-small, {where})", ""]
    md += [f"- {k}: {v}" for k, v in setup.items() if k != "variants"]
    md += [f"- variant `{k}`: {v}" for k, v in VARIANTS.items()]
    md += [
        "",
        "Mean ± sample SD over seeds; `vs dense` is the mean paired difference (per seed in brackets).",
        "",
    ]
    md += ["| variant | seeds | lambda | slim acc | vs dense (pt) | acc, gamma := xi | channels removed | MACs removed |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in table:
        vs = row.get("vs_dense_pt")
        vs_s = "-" if vs is None else f"{vs['mean']:+.2f} ({', '.join(f'{d:+.2f}' for d in vs['per_seed'])})"
        md.append(
            f"| {row['variant']} | {','.join(map(str, row['seeds']))} | {cell(row, 'lambda', False)} | "
            f"{cell(row, 'accuracy')} | {vs_s} | "
            f"{cell(row, 'accuracy_gamma_eq_xi')} | {cell(row, 'channels_removed')} | {cell(row, 'macs_removed')} |"
        )
    if at50:
        md += ["", "At 50% of the BN channels removed (per seed: accuracy interpolated between the family's two runs "
               "that bracket 50%; vs dense: minus dense at that seed, mean ± standard error of the paired "
               "differences):", "",
               "| family | accuracy per seed | mean accuracy | vs dense per seed (pt) | mean (pt) | SE (pt) | "
               "brackets (channels removed) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for a in at50:
            brackets = "; ".join(f"{p['bracket'][0]:.1%}-{p['bracket'][1]:.1%}" for p in a["per_seed"])
            accs = ", ".join(f"{p['accuracy']:.2%} (s{p['seed']})" for p in a["per_seed"])
            vs = ", ".join(f"{d:+.2f}" for d in a["diff_pt"]) or "-"
            mean = "-" if a["mean_pt"] is None else f"{a['mean_pt']:+.2f}"
            se = "-" if a["se_pt"] is None else f"{a['se_pt']:.2f}"
            md.append(
                f"| {a['family']} | {accs} | {a['mean_accuracy']:.2%} | {vs} | {mean} | {se} | {brackets} |"
            )
    for ref, rows in vs_ref.items():
        if not rows:
            continue
        md += ["", f"Against `{ref}` at the same seed and share of channels removed (its two strengths that "
               "bracket it, interpolated):", "", f"| run | channels removed | accuracy | {ref} there | "
               "difference (pt) |", "|---|---|---|---|---|"]  # fmt: skip
        for v in rows:
            md.append(f"| {v['run']} | {v['channels_removed']:.1%} | {v['accuracy']:.2%} | {v['ref']:.2%} | "
                      f"{v['diff_pt']:+.2f} |")  # fmt: skip
    if matched:
        md += ["", "Matched channels (per seed, the other family's accuracy linearly interpolated between its two "
               "strengths at this run's channel share; difference = phases - l1, pt):", "",
               "| seed | at channels removed | l1 acc | phases acc | phases - l1 (pt) |", "|---|---|---|---|---|"]  # fmt: skip
        for m in matched:
            md.append(f"| {m['seed']} | {m['channels_removed']:.1%} | {m['l1']:.2%} | {m['phases']:.2%} | "
                      f"{100 * (m['phases'] - m['l1']):+.2f} |")  # fmt: skip
        diffs = [m["phases"] - m["l1"] for m in matched]
        md.append(f"\nMean difference {100 * statistics.fmean(diffs):+.2f} pt over {len(diffs)} points.")
    md.append("")
    (args.results_dir / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
