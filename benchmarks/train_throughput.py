"""Training throughput (images/s) of the zoo models on this CPU, baseline vs subgradient slimming.

One training iteration = forward, cross-entropy, backward, the method hook, SGD step, exactly as
``edgeslim.train.fit`` does it (same optimizer, schedule and hook code). Input: a batch of real
CIFAR-10 images (3x32x32) from ``../shared/data/cifar10-jpeg.zip`` when present, else Fashion-MNIST
padded to 32x32 (throughput does not depend on pixel values, only on shapes).

    .venv/bin/python benchmarks/train_throughput.py                    # all zoo models, batch 64
    .venv/bin/python benchmarks/train_throughput.py --models vgg-small,resnet20 --iters 5

Writes benchmarks/results/train_throughput.json and .md. The development host is a shared 2-vCPU
VM: numbers are only comparable within one run (the models run one after the other).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CIFAR_ZIP = ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"
DEFAULT_MODELS = "vgg-small,vgg11,vgg19,resnet20,resnet56,resnet164,densenet40,mobilenetv2,tv:resnet18"


def real_batch(batch: int):
    """(x, y) of ``batch`` real images, normalized, 3x32x32."""
    import torch

    from edgeslim.data import load_dataset

    if CIFAR_ZIP.is_file():
        b = load_dataset("cifar10", data_dir=CIFAR_ZIP, subset=batch, test_subset=10)
        src = "cifar10-jpeg.zip"
    else:
        b = load_dataset("fashion-mnist", subset=batch, test_subset=10)
        src = "fashion-mnist (padded, 3 channels)"
    x, y = next(iter(b.loader("train", batch, shuffle=False, augment=False)))
    if x.shape[1] != 3:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    return x, y, src


def measure(arch: str, method: str, x, y, warmup: int, iters: int) -> dict:
    import torch

    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec
    from edgeslim.train.config import TrainConfig
    from edgeslim.train.methods import create_method
    from edgeslim.train.trainer import count_params, make_optimizer

    torch.manual_seed(0)
    model = create_model(ModelSpec(arch, 10, 3, (32, 32)))
    cfg = TrainConfig(method=method, method_args={"lam": 1e-4} if method == "subgradient" else {})
    hook = create_method(method, model, **cfg.method_args)
    opt = make_optimizer(model, cfg)
    model.train()
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if hook is not None:
            hook.after_backward(model, opt)
        opt.step()
        if hook is not None:
            hook.after_step(model, opt)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    return {
        "arch": arch,
        "method": method,
        "params": count_params(model),
        "step_ms_median": med * 1e3,
        "step_ms_min": times[0] * 1e3,
        "images_per_s": len(x) / med,
        "iters": iters,
    }


def to_markdown(rec: dict) -> str:
    lines = [
        "# Training throughput on CPU",
        "",
        f"Host: {rec['host']}, torch {rec['torch']}, {rec['threads']} threads, batch {rec['batch']} "
        f"(3x32x32, {rec['data']}), median of {rec['iters']} iterations after {rec['warmup']} warm-up.",
        f"Command: `{rec['command']}`",
        "",
        "| model | params | method | ms/iter | images/s |",
        "|---|---:|---|---:|---:|",
    ]
    for r in rec["rows"]:
        lines.append(
            f"| {r['arch']} | {r['params']:,} | {r['method']} | {r['step_ms_median']:.1f} | {r['images_per_s']:.1f} |"
        )
    lines += ["", "Shared 2-vCPU VM: compare rows of this run only; other processes were running."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo names")
    ap.add_argument("--methods", default="baseline,subgradient")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_throughput")
    args = ap.parse_args()

    import torch

    from edgeslim.utils.console import out, table
    from edgeslim.utils.io import atomic_write_text, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, src = real_batch(args.batch)
    rows = []
    for arch in [m for m in args.models.split(",") if m]:
        for method in [m for m in args.methods.split(",") if m]:
            r = measure(arch, method, x, y, args.warmup, args.iters)
            rows.append(r)
            print(f"{arch:12s} {method:12s} {r['images_per_s']:8.1f} img/s", flush=True)
    rec = {
        "host": f"{platform.machine()} {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "data": src,
        "warmup": args.warmup,
        "iters": args.iters,
        "command": "python benchmarks/train_throughput.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), rec)
    atomic_write_text(args.out.with_suffix(".md"), to_markdown(rec))
    cols = ["model", "params", "method", "ms/iter", "images/s"]
    out.print(table("training throughput (CPU)", cols, [[r["arch"], r["params"], r["method"], r["step_ms_median"],
                                                         r["images_per_s"]] for r in rows]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
