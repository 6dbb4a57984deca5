"""CIFAR-10 VGG-19 on one GPU in one command: dense vs one round of proximal l1, against the
network-slimming paper's VGG-19 figures.

Every run gets the same schedule (SGD lr 0.1 momentum 0.9 Nesterov, cosine, wd 1e-4, batch 64 as
in the paper, AMP and channels_last on CUDA); the number of epochs is what fits the time budget
(``--budget-s``, measured with a short timing probe) unless ``--epochs`` is given. Each slim run
is one round of proximal l1 (one per strength in ``--shrink``, and the phase/prox-step options of
``edgeslim slim``), gamma := exact zeros, surgery, no fine-tune. Writes
``<out>/gpu_vgg19_cifar.{json,md}`` after every run (a run killed at its time limit keeps the rest).

    python benchmarks/gpu_vgg19_cifar.py --data ../shared/data/cifar10-jpeg.zip            # GPU, <= 8 min
    python benchmarks/gpu_vgg19_cifar.py --epochs 1 --subset 512 --test-subset 256 --device cpu  # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from edgeslim.data import load_dataset
from edgeslim.data.bundle import steps_per_epoch
from edgeslim.models.registry import create_model
from edgeslim.slim import CollapseError, SlimSettings, slim_model
from edgeslim.surgery import prune_with_report
from edgeslim.train import TrainConfig, fit

HERE = Path(__file__).resolve().parent
#: the network-slimming paper, CIFAR-10 VGG-19 (original NS, 70% channels pruned, after fine-tune)
PAPER = {
    "dense_error": 6.34,
    "pruned_error": 6.20,
    "channels_pruned": 0.70,
    "params_pruned": 0.885,
    "flops_pruned": 0.51,
    "epochs": "160 + 160 fine-tune",
}


def probe_seconds_per_step(bundle: Any, spec: Any, config: TrainConfig, steps: int = 30) -> float:
    """Seconds per training step of a throw-away model (after a few warm-up steps)."""
    model = create_model(spec).to(config.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
    it = iter(
        bundle.loader("train", config.batch_size, shuffle=True, augment=True, seed=9, device=config.device)
    )
    sync = torch.cuda.synchronize if str(config.device).startswith("cuda") else (lambda: None)
    t0 = 0.0
    for i in range(steps + 5):
        if i == 5:
            sync()
            t0 = time.perf_counter()
        x, y = next(it)
        with torch.autocast("cuda", dtype=torch.float16, enabled=config.amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.zip"))
    ap.add_argument("--epochs", type=int, default=0, help="0: as many as fit --budget-s")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for all trainings (training only)")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument(
        "--shrink", default="default", help="total shrink S, or a comma list: one slim run each ['default']"
    )
    ap.add_argument("--lam", type=float, default=None, help="lambda instead of --shrink")
    ap.add_argument("--beta", type=float, default=100.0)
    ap.add_argument("--prox-warmup", default=None, help="epochs or N%% [slim's default]")
    ap.add_argument("--recovery", default=None, help="epochs or N%% [slim's default]")
    ap.add_argument("--prox-step", default="lr", choices=["lr", "effective"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=Path("runs/gpu_vgg19"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
    bundle = load_dataset("cifar10", data_dir=args.data, subset=args.subset, test_subset=args.test_subset)
    spec = bundle.spec_for("vgg19")
    t_data = time.perf_counter() - t_start
    base = {"batch_size": args.batch, "lr": args.lr, "weight_decay": args.weight_decay, "device": args.device,
            "amp": cuda, "channels_last": cuda, "seed": args.seed, "eval_batch_size": 1000}  # fmt: skip
    steps = steps_per_epoch(bundle, args.batch)
    shrinks = [None if v.strip() == "default" else float(v) for v in args.shrink.split(",")]
    epochs = args.epochs
    sps = None
    if epochs <= 0:
        sps = probe_seconds_per_step(bundle, spec, TrainConfig(epochs=1, **base))
        # every run, plus ~3% for the per-epoch test evaluation and the prox step
        epochs = max(1, int(args.budget_s / ((1 + len(shrinks)) * 1.03 * sps * steps)))
    config = TrainConfig(epochs=epochs, **base)
    print(f"{bundle}; {epochs} epochs x {steps} steps, batch {args.batch}, device {args.device}", flush=True)

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    dense = create_model(spec)
    res = fit(dense, bundle, config)
    t_dense = time.perf_counter() - t0
    ex = torch.zeros(1, *spec.input_shape, device=next(dense.parameters()).device)
    drep = prune_with_report(dense.float().to(memory_format=torch.contiguous_format), ex).report
    dense_row = {"accuracy": res.test_accuracy, "params": drep["params_before"], "macs": drep["macs_before"],
                 "channels": sum(int(m.num_features) for m in dense.modules()
                                 if isinstance(m, torch.nn.BatchNorm2d)), "train_s": t_dense}  # fmt: skip

    slim_rows: list[dict[str, Any]] = []
    write(args, bundle, config, epochs, steps, sps, dense_row, slim_rows, t_start, t_data)
    for shrink in shrinks:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        settings = SlimSettings(lam=args.lam, shrink=shrink, beta=args.beta,
                                prox_warmup=args.prox_warmup, recovery=args.recovery, prox_step=args.prox_step)  # fmt: skip
        out = args.work / f"slim_{shrink or 'default'}"
        try:
            rep = slim_model(create_model(spec), spec, bundle, config, settings, out).report
        except CollapseError as exc:
            rep = json.loads((out / "report.json").read_text())
            rep["collapse"]["message"] = str(exc)
        slim_rows.append({
            "shrink": shrink, "settings": settings.to_dict(),
            "accuracy": rep["accuracy"]["slim"], "accuracy_trained": rep["accuracy"]["trained"],
            "accuracy_gamma_eq_xi": rep["accuracy"].get("gamma_eq_xi"), "lambda": rep["slimming"]["lam"],
            "params": rep["params"]["slim"], "macs": rep["macs"]["slim"], "channels": rep["channels"]["slim"],
            "channels_removed": rep["channels"]["removed_frac"], "params_removed": rep["params"]["removed_frac"],
            "macs_removed": rep["macs"]["removed_frac"], "verify": rep["verify"],
            "collapse": rep["collapse"]["message"], "train_s": time.perf_counter() - t0,
        })  # fmt: skip
        write(args, bundle, config, epochs, steps, sps, dense_row, slim_rows, t_start, t_data)


def write(
    args: argparse.Namespace, bundle: Any, config: TrainConfig, epochs: int, steps: int, sps: float | None,
    dense_row: dict[str, Any], slim_rows: list[dict[str, Any]], t_start: float, t_data: float,
) -> None:  # fmt: skip
    """Write ``gpu_vgg19_cifar.{json,md}`` with the runs finished so far (a killed run keeps them)."""
    warmup, recovery = SlimSettings(prox_warmup=args.prox_warmup, recovery=args.recovery).phases()
    result = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "data": str(bundle),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "probe_s_per_step": sps,
        "train": config.to_dict(),
        "dense": dense_row,
        "slim": slim_rows,
        "paper": PAPER,
        "wall_s": {
            "data": t_data,
            "dense": dense_row["train_s"],
            "slim": [r["train_s"] for r in slim_rows],
            "total": time.perf_counter() - t_start,
        },  # fmt: skip
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_vgg19_cifar.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = [
        "# CIFAR-10 VGG-19: dense vs one round of proximal l1 (vs the network-slimming paper)",
        "",
        f"- command: `{result['command']}`",
        f"- device: {result['device']}; {epochs} epochs x {steps} steps per run (the paper: {PAPER['epochs']})",
        f"- slimming: beta {args.beta}, warm-up {warmup}, recovery {recovery}, prox step {args.prox_step}; "
        "no fine-tune",
        "",
        "| | test error | channels pruned | params pruned | MACs (FLOPs) pruned |",
        "|---|---|---|---|---|",
        f"| dense, ours | {100 * (1 - dense_row['accuracy']):.2f}% | - | - | - |",
    ]
    for r in slim_rows:
        md.append(
            f"| proximal l1, one round, S {r['shrink'] or 'default'} (lambda {r['lambda']:.3g}), ours | "
            f"{100 * (1 - r['accuracy']):.2f}% | {r['channels_removed']:.1%} | {r['params_removed']:.1%} | "
            f"{r['macs_removed']:.1%} |"
        )
    md += [
        f"| dense, paper | {PAPER['dense_error']:.2f}% | - | - | - |",
        f"| original NS + fine-tune, paper | {PAPER['pruned_error']:.2f}% | {PAPER['channels_pruned']:.0%} | "
        f"{PAPER['params_pruned']:.1%} | {PAPER['flops_pruned']:.0%} |",
        "",
        f"Wall time: data {t_data:.0f} s, dense {dense_row['train_s']:.0f} s, slim "
        + ", ".join(f"{r['train_s']:.0f} s" for r in slim_rows)
        + ".",
        "",
    ]
    (args.out / "gpu_vgg19_cifar.md").write_text("\n".join(md))
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    main()
