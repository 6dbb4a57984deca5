"""Budget-targeted proximal slimming vs original NS vs uniform width, Fashion-MNIST, CPU.

For each architecture and MAC target (fraction of the dense MACs):

* ``budget``: one round of budget-targeted proximal l1 slimming (``E`` epochs, zero-invariant:
  BN scale and shift pruned together so surgery is exact), no fine-tune;
* ``ns``: original network slimming (subgradient l1 on BN scales, lambda 1e-4) trained ``E``
  epochs once per architecture, then for each target the global |gamma| threshold that hits
  the budget (exact resource model), surgery, accuracy without and with a fine-tune of ``E``
  epochs (NS gets twice the epochs of ``budget``);
* ``uniform``: every channel group kept at the same fraction (largest fraction within the
  budget), the narrow network re-initialised and trained from scratch for ``E`` epochs.

Each run is cached in ``--work``. Writes ``benchmarks/results/budget_fmnist.{json,md,png}``.

    nice -n 10 python benchmarks/budget_fmnist.py --subset 3000 --epochs 3
"""

# ruff: noqa: B023  (the per-run closures are called inside their loop iteration)
from __future__ import annotations

import argparse
import copy
import json
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from runcache import cached, seed_cache

RESULTS = Path(__file__).resolve().parent / "results"


def threshold_for_budget(resource, gammas: torch.Tensor, target: float) -> torch.Tensor:
    """Smallest global |gamma| threshold whose removal meets ``target``: the dead mask."""
    g = gammas.abs()
    values = torch.sort(g[resource.pos_removable]).values
    lo, hi = 0, int(values.numel())
    while lo < hi:
        mid = (lo + hi) // 2
        dead = g <= values[mid]
        if resource.of_xi(torch.where(dead, 0.0, g)) <= target:
            hi = mid
        else:
            lo = mid + 1
    return (g <= values[min(lo, values.numel() - 1)]) & resource.pos_removable


def uniform_cut(resource) -> Callable[[float], torch.Tensor]:
    """``dead(f)``: the flat BN positions removed when every group keeps its first ceil(f * size)
    channels (the ranks inside the groups computed once)."""
    group = resource.group_of_class[resource.pos_class]
    # rank of every flat position's class inside its group
    rank = torch.zeros(resource.graph.num_classes, dtype=torch.long)
    for grp in resource.graph.groups:
        rank[grp.classes] = torch.arange(grp.size)
    pos_rank = rank[resource.pos_class]
    size = resource.group_size[group]

    def dead(f: float) -> torch.Tensor:
        keep = torch.ceil(f * size).clamp(min=1)
        return (pos_rank >= keep) & resource.pos_removable

    return dead


def uniform_mask(resource, target: float) -> tuple[torch.Tensor, float]:
    """Keep the first ceil(f * size) channels of every group, largest f within the budget."""
    dead = uniform_cut(resource)
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if resource.of_xi(torch.where(dead(mid), 0.0, torch.ones(resource.total))) <= target:
            lo = mid
        else:
            hi = mid
    return dead(lo), lo


def main() -> None:
    from edgeslim.channels.norm import recalibrate_bn
    from edgeslim.data import load_dataset
    from edgeslim.models.registry import create_model
    from edgeslim.slim import CollapseError, SlimSettings, slim_model
    from edgeslim.sparsity.budget import BudgetSettings
    from edgeslim.sparsity.resource import build_resource, flat_gammas, zero_channels
    from edgeslim.surgery import prune_with_report
    from edgeslim.train import TrainConfig, fit
    from edgeslim.train.evaluation import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=3000)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--archs", default="vgg-small,resnet20")
    ap.add_argument("--targets", default="0.7,0.5,0.3")
    ap.add_argument("--ns-lambda", type=float, default=1e-4)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_budget"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ns-half", action="store_true", help="also NS at the budget run's cost (E/2 sparse + E/2 fine-tune)"
    )
    ap.add_argument("--name", default="budget_fmnist", help="stem of the result files in benchmarks/results")
    ap.add_argument("--no-uniform", action="store_true", help="skip the uniform-width runs")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--reuse", metavar="NAME",
                    help="take the runs of results/NAME.json as cache entries (dense, NS, uniform), except the "
                    "budget runs, which run again and are shown beside the reused ones")  # fmt: skip
    ap.add_argument(
        "--reuse-label", default="reused run", help="what the reused budget runs were (legend, column)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = load_dataset("fashion-mnist", subset=args.subset, test_subset=args.test_subset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, device="cpu", seed=args.seed)
    targets = [float(t) for t in args.targets.split(",")]
    runs: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    if args.reuse:  # a fresh checkout has no cache: the committed runs stand in for it
        reused = json.loads((RESULTS / f"{args.reuse}.json").read_text())["runs"]
        previous = {k: r for k, r in reused.items() if k.endswith("/budget")}
        seed_cache(args.work, {k.replace("/", "-"): r for k, r in reused.items()
                               if k not in previous and not k.endswith("/dense_macs")})  # fmt: skip
    # the run functions below are called at once inside the loop (late binding is harmless)
    for arch in args.archs.split(","):
        spec = bundle.spec_for(arch)
        example = torch.zeros(1, *spec.input_shape)
        torch.manual_seed(args.seed)
        resource = build_resource(create_model(spec), example, "macs")
        dense = resource.dense

        def ns_train(arch=arch, spec=spec, epochs=args.epochs, suffix="") -> dict[str, Any]:
            torch.manual_seed(args.seed)
            model = create_model(spec)
            cfg = config.replace(epochs=epochs, method="subgradient", method_args={"lam": args.ns_lambda})
            res = fit(model, bundle, cfg)
            path = args.work / f"{arch}-ns{suffix}-trained.pt"
            args.work.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            return {"accuracy": res.test_accuracy, "state": str(path)}

        def dense_train(spec=spec) -> dict[str, Any]:
            torch.manual_seed(args.seed)
            res = fit(create_model(spec), bundle, config)
            return {"accuracy": res.test_accuracy}

        runs[f"{arch}/dense"] = cached(args.work, f"{arch}-dense", args.fresh, dense_train)
        ns_base = cached(args.work, f"{arch}-ns-train", args.fresh, ns_train)
        runs[f"{arch}/ns-train"] = ns_base
        half = max(args.epochs // 2, 1)
        if args.ns_half:  # NS at the budget run's cost: half the epochs sparse, half fine-tune
            ns_half_base = cached(
                args.work, f"{arch}-ns-half-train", args.fresh, lambda: ns_train(epochs=half, suffix="-half")
            )
            runs[f"{arch}/ns-half-train"] = ns_half_base
        for t in targets:
            tag = f"{arch}-{int(round(100 * t))}"

            def budget(t=t, spec=spec, tag=tag) -> dict[str, Any]:
                torch.manual_seed(args.seed)
                model = create_model(spec)
                out = args.work / tag
                if out.exists():
                    shutil.rmtree(out)
                st = SlimSettings(
                    penalty="l1", zero_invariant=True, budget=BudgetSettings(target=str(t)).to_dict()
                )
                try:
                    rep = slim_model(model, spec, bundle, config, st, out).report
                except CollapseError:
                    rep = json.loads((out / "report.json").read_text())
                b = rep["budget"]
                shutil.copyfile(out / "budget.png", args.work / f"{tag}-budget.png")
                return {
                    "accuracy": rep["accuracy"]["slim"], "macs": rep["macs"]["slim"],
                    "controller_reached": b["before_projection_fraction"], "projection_removed": b["projection_removed_channels"],
                    "trajectory": b["trajectory"],
                }  # fmt: skip

            def ns(t=t, spec=spec, base=ns_base, ft_epochs=args.epochs) -> dict[str, Any]:
                model = create_model(spec)
                model.load_state_dict(torch.load(base["state"], weights_only=True))
                dead = threshold_for_budget(resource, flat_gammas(model), t * dense)
                zero_channels(model, dead)
                calib = [x for i, (x, _) in zip(range(4), bundle.loader("train", 128, augment=False, seed=1))]
                pr = prune_with_report(model, example, calib_inputs=calib)
                acc0 = evaluate(pr.model, bundle, "test")["accuracy"]
                recal = copy.deepcopy(pr.model)
                recalibrate_bn(recal, calib)  # the same BN re-estimation the budgeted run gets
                acc_recal = evaluate(recal, bundle, "test")["accuracy"]
                slim = pr.model
                res = fit(slim, bundle, config.replace(epochs=ft_epochs, stage="finetune"))
                return {
                    "accuracy_pruned": acc0,
                    "accuracy_pruned_bn_recal": acc_recal,
                    "accuracy_finetuned": res.test_accuracy,
                    "macs": pr.report["macs_after"],
                }

            def uniform(t=t, spec=spec) -> dict[str, Any]:
                torch.manual_seed(args.seed)
                model = create_model(spec)
                dead, frac = uniform_mask(resource, t * dense)
                zero_channels(model, dead)
                slim = prune_with_report(model, example).model
                torch.manual_seed(args.seed)
                for m in slim.modules():
                    if hasattr(m, "reset_parameters") and m is not slim:
                        m.reset_parameters()
                res = fit(slim, bundle, config)
                return {
                    "accuracy": res.test_accuracy,
                    "width_fraction": frac,
                    "macs": build_resource(copy.deepcopy(slim), example).dense,
                }

            runs[f"{tag}/budget"] = cached(args.work, f"{tag}-budget", args.fresh, budget)
            if f"{tag}/budget" in previous:
                runs[f"{tag}/budget-prev"] = previous[f"{tag}/budget"]
            runs[f"{tag}/ns"] = cached(args.work, f"{tag}-ns", args.fresh, ns)
            if args.ns_half:
                runs[f"{tag}/ns-half"] = cached(
                    args.work, f"{tag}-ns-half", args.fresh, lambda: ns(base=ns_half_base, ft_epochs=half)
                )
            if not args.no_uniform:
                runs[f"{tag}/uniform"] = cached(args.work, f"{tag}-uniform", args.fresh, uniform)
            runs[f"{tag}/dense_macs"] = dense
        write(runs, args, targets)


def write(runs: dict[str, Any], args: argparse.Namespace, targets: list[float]) -> None:
    rows = []
    for arch in args.archs.split(","):
        for t in targets:
            tag = f"{arch}-{int(round(100 * t))}"
            if f"{tag}/ns" not in runs:
                continue
            b, n, dense = runs[f"{tag}/budget"], runs[f"{tag}/ns"], runs[f"{tag}/dense_macs"]
            u = runs.get(f"{tag}/uniform", {"macs": float("nan"), "accuracy": None, "width_fraction": None})
            rows.append({
                "arch": arch, "target": t, "budget_macs": b["macs"] / dense, "budget_acc": b["accuracy"],
                "controller_reached": b["controller_reached"], "projection_removed": b["projection_removed"],
                "ns_macs": n["macs"] / dense, "ns_acc_pruned": n["accuracy_pruned"],
                "ns_acc_pruned_bn_recal": n["accuracy_pruned_bn_recal"], "ns_acc_finetuned": n["accuracy_finetuned"],
                "uniform_macs": u["macs"] / dense, "uniform_acc": u["accuracy"], "uniform_width": u["width_fraction"],
                "dense_acc": runs.get(f"{arch}/dense", {}).get("accuracy"),
                "ns_half_acc": runs.get(f"{tag}/ns-half", {}).get("accuracy_finetuned"),
                "budget_prev_acc": runs.get(f"{tag}/budget-prev", {}).get("accuracy"),
                "goal_met": b["accuracy"] >= n["accuracy_finetuned"],
                "equal_epochs_met": None if f"{tag}/ns-half" not in runs
                else b["accuracy"] >= runs[f"{tag}/ns-half"]["accuracy_finetuned"],
            })  # fmt: skip
    setup = {
        "data": f"fashion-mnist, {args.subset} train images (class-balanced), {args.test_subset} test images",
        "schedule": f"budget: {args.epochs} epochs; NS: {args.epochs} sparse + {args.epochs} fine-tune; "
        f"uniform: {args.epochs} from scratch; dense: {args.epochs}; batch {args.batch}, SGD lr 0.1 cosine, "
        f"wd 5e-4; seed {args.seed}",
        "ns": f"subgradient lambda {args.ns_lambda}, global |gamma| threshold chosen to hit the MAC budget",
        "budget": "proximal l1, zero-invariant, beta 100, default controller constants (docs/budget.md)",
        "bn": "budget runs re-estimate BN statistics on 512 training images after the last step (no weight "
        "trained) when channels changed in the last steps; NS without fine-tune is shown raw and (in brackets) with the same re-estimation",
        "device": "CPU, 1 thread per run, shared 2-core machine",
        "command": "python " + shlex.join(sys.argv),
        **(
            {
                "reused": f"dense, NS and uniform runs from results/{args.reuse}.json; its budget runs are the "
                f"`budget, {args.reuse_label}` column"
            }
            if args.reuse
            else {}
        ),  # fmt: skip
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"setup": setup, "rows": rows, "runs": runs}, indent=2) + "\n"
    )
    md = ["# Budget-targeted proximal slimming on Fashion-MNIST (CPU)", ""] + [
        f"- {k}: {v}" for k, v in setup.items()
    ]
    e, h = args.epochs, max(args.epochs // 2, 1)
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    uni_macs = lambda r: "" if r["uniform_acc"] is None else f" ({r['uniform_macs']:.1%})"  # noqa: E731
    md += [
        "",
        f"| arch | target MACs | budget: MACs (projected ch.) | budget acc ({e} ep) | NS + FT ({e}+{e} ep) | "
        f"NS + FT ({h}+{h} ep) | NS no FT (BN re-est.) | NS: MACs | uniform ({e} ep, scratch) | dense ({e} ep) | "
        f"goal: budget >= NS+FT ({e}+{e}) | budget >= NS+FT ({h}+{h}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    prev = any(r["budget_prev_acc"] is not None for r in rows)
    if prev:
        md[-2] = md[-2].replace(
            f" budget acc ({e} ep) |", f" budget acc ({e} ep) | budget, {args.reuse_label} ({e} ep) |"
        )
        md[-1] += "---|"
    for r in rows:
        prev_cell = f"{pct(r['budget_prev_acc'])} | " if prev else ""
        md.append(
            f"| {r['arch']} | {r['target']:.0%} | {r['budget_macs']:.1%} ({r['projection_removed']}) | "
            f"**{r['budget_acc']:.2%}** | {prev_cell}{r['ns_acc_finetuned']:.2%} | {pct(r['ns_half_acc'])} | "
            f"{r['ns_acc_pruned']:.2%} ({r['ns_acc_pruned_bn_recal']:.2%}) | {r['ns_macs']:.1%} | "
            f"{pct(r['uniform_acc'])}{uni_macs(r)} | "
            f"{pct(r['dense_acc'])} | "
            f"{'met' if r['goal_met'] else 'missed'} | "
            f"{'-' if r['equal_epochs_met'] is None else 'yes' if r['equal_epochs_met'] else 'no'} |"
        )
    md.append("")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len({r["arch"] for r in rows}), figsize=(10, 4.2), squeeze=False)
        for ax, arch in zip(axes[0], dict.fromkeys(r["arch"] for r in rows)):
            rs = [r for r in rows if r["arch"] == arch]
            x = [r["target"] for r in rs]
            ax.plot(x, [r["budget_acc"] for r in rs], "o-", label="budget prox (1 round)")
            if prev:
                ax.plot(
                    x,
                    [r["budget_prev_acc"] for r in rs],
                    "o--",
                    color="0.6",
                    label=f"budget prox, {args.reuse_label}",
                )
            ax.plot(x, [r["ns_acc_finetuned"] for r in rs], "s-", label="NS + fine-tune (2x epochs)")
            if rs[0]["ns_half_acc"] is not None:
                ax.plot(x, [r["ns_half_acc"] for r in rs], "d-", label="NS + fine-tune (same epochs)")
            if rs[0]["uniform_acc"] is not None:
                ax.plot(x, [r["uniform_acc"] for r in rs], "^-", label="uniform width, scratch")
            if rs[0]["dense_acc"] is not None:
                ax.axhline(rs[0]["dense_acc"], color="k", lw=0.8, ls=":", label="dense, same epochs")
            ax.set_xlabel("MAC budget (fraction of dense)")
            ax.set_ylabel("test accuracy")
            ax.set_title(arch, fontsize=10)
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
        fig.tight_layout(rect=(0, 0.16, 1, 1))
        fig.savefig(RESULTS / f"{args.name}.png", dpi=110)
        plt.close(fig)
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    main()
