"""Training speed on this CPU with batches and conv weights channels_last (the default) or not.

Each row trains one model for one epoch with ``edgeslim.train.fit`` itself (the code ``edgeslim train``
and ``slim`` run) on real images: vgg-small on Fashion-MNIST (1x28x28), resnet20 and mobilenetv2 on the
CIFAR-10 JPEG data (3x32x32, ``../shared/data/cifar10-jpeg.zip``). The two layouts alternate, repeat
after repeat, in one process with one thread, so both see the same machine load; the ratio is
channels-first time / channels_last time of the same repeat (> 1: channels_last is faster).

    .venv/bin/python benchmarks/train_layout.py                      # 3 repeats, 2,048 images
    .venv/bin/python benchmarks/train_layout.py --repeats 2 --models vgg-small

Writes benchmarks/results/train_layout.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CIFAR_ZIP = ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"
DATA = {
    "vgg-small": ("fashion-mnist", None),
    "resnet20": ("cifar10", CIFAR_ZIP),
    "mobilenetv2": ("cifar10", CIFAR_ZIP),
}


def one_epoch(arch: str, bundle, channels_last: bool, batch: int, seed: int) -> tuple[float, float]:
    """(seconds, test accuracy) of one ``fit`` epoch, its test evaluation included."""
    import torch

    from edgeslim.models import create_model
    from edgeslim.train.config import TrainConfig
    from edgeslim.train.trainer import fit

    torch.manual_seed(seed)
    spec = bundle.spec_for(arch)
    model = create_model(spec)
    cfg = TrainConfig(
        epochs=1, batch_size=batch, lr=0.05, seed=seed, channels_last=channels_last, device="cpu"
    )
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = fit(model, bundle, cfg, d, spec=spec)
        total = time.perf_counter() - t
    return total, res.history[-1]["test_acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg-small,resnet20,mobilenetv2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subset", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "train_layout"))
    a = ap.parse_args()

    import torch

    from edgeslim.bench.env import cpu_model
    from edgeslim.data import load_dataset

    torch.set_num_threads(1)
    rows = []
    for arch in a.models.split(","):
        name, data_dir = DATA[arch]
        bundle = load_dataset(name, data_dir=data_dir, subset=a.subset, test_subset=512)
        for cl in (False, True):  # warm-up, not recorded: the first epoch of a process pays one-off costs
            one_epoch(
                arch,
                load_dataset(name, data_dir=data_dir, subset=a.batch, test_subset=64),
                cl,
                a.batch,
                a.seed,
            )
        times: dict[bool, list[float]] = {False: [], True: []}
        acc: dict[bool, float] = {}
        for r in range(a.repeats):
            for cl in (False, True):
                t, acc[cl] = one_epoch(arch, bundle, cl, a.batch, a.seed)
                times[cl].append(t)
                print(f"{arch} repeat {r + 1}/{a.repeats} channels_last={cl}: {t:.2f} s", flush=True)
        ratios = [f / c for f, c in zip(times[False], times[True])]
        rows.append({
            "model": arch, "data": name, "input": list(bundle.input_shape),
            "channels_first_s": times[False], "channels_last_s": times[True], "ratios": ratios,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "test_acc": {"channels_first": acc[False], "channels_last": acc[True]},
        })  # fmt: skip
    record = {
        "what": "one fit epoch (training, BN settling and its test evaluation), channels-first vs channels_last",
        "host": platform.processor() or platform.machine(), "cpu": cpu_model() or platform.machine(), "torch": torch.__version__,
        "threads": 1, "subset": a.subset, "test_subset": 512, "batch": a.batch, "seed": a.seed,
        "repeats": a.repeats, "rows": rows,
    }  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# Training layout on this CPU: channels-first vs channels_last (`benchmarks/train_layout.py`)",
        "",
        f"{record['cpu']}, torch {record['torch']}, 1 thread; one `fit` epoch of {a.subset} images (batch "
        f"{a.batch}, with its 512-image test evaluation), seed {a.seed}, the two layouts alternating, "
        f"{a.repeats} repeats. Ratio: channels-first seconds / channels_last seconds of the same repeat.",
        "",
        "| model | data (C, H, W) | channels-first s (median) | channels_last s (median) | ratio median [min-max] |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} {tuple(r['input'])} | {statistics.median(r['channels_first_s']):.2f} | "
            f"{statistics.median(r['channels_last_s']):.2f} | {r['ratio_median']:.2f} "
            f"[{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
