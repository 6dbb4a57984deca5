"""Data loading speed: decode-once cache (cold vs warm) and batch throughput with augmentation.

Writes benchmarks/results/data_loading.{json,md}. Usage (about 2 minutes on 2 busy cores):
    nice -n 10 .venv/bin/python benchmarks/data_loading.py [--cifar-zip ../shared/data/cifar10-jpeg.zip]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def throughput(bundle, augment: bool, epochs: int = 1) -> float:
    """Images per second through ``bundle.loader('train')`` (normalize + optional pad-crop/flip)."""
    n, t0 = 0, time.perf_counter()
    for ep in range(epochs):
        for x, _ in bundle.loader("train", batch_size=128, augment=augment, epoch=ep):
            n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parent
    ap.add_argument("--cifar-zip", default=str(here.parent.parent / "shared" / "data" / "cifar10-jpeg.zip"))
    ap.add_argument("--out", default=str(here / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from edgeslim.data import load_dataset

    rows = []
    fm, t = timed(lambda: load_dataset("fashion-mnist"))
    rows.append({"what": "Fashion-MNIST load (70k IDX, gunzip)", "seconds": t, "images": 70000})
    rows.append({"what": "Fashion-MNIST loader, no augmentation", "images_per_s": throughput(fm, False)})
    rows.append({"what": "Fashion-MNIST loader, pad-crop + flip", "images_per_s": throughput(fm, True)})
    if os.path.isfile(args.cifar_zip):
        with tempfile.TemporaryDirectory() as cache:
            cz, t = timed(lambda: load_dataset("cifar10", data_dir=args.cifar_zip, cache_dir=cache))
            rows.append(
                {"what": "CIFAR-10 JPEG zip, cold (decode 60k, pool of 2)", "seconds": t, "images": 60000}
            )
            _, t = timed(lambda: load_dataset("cifar10", data_dir=args.cifar_zip, cache_dir=cache))
            rows.append({"what": "CIFAR-10 JPEG zip, warm (uint8 cache hit)", "seconds": t, "images": 60000})
            _, t = timed(lambda: load_dataset("cifar10", data_dir=args.cifar_zip, subset=1000, test_subset=500,
                                              cache_dir=cache))  # fmt: skip
            rows.append({"what": "CIFAR-10 zip, subset 1000/500, cold", "seconds": t, "images": 1500})
        rows.append({"what": "CIFAR-10 loader, pad-crop + flip", "images_per_s": throughput(cz, True)})
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_avg": os.getloadavg()}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_loading.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    lines = ["| measurement | seconds | images/s |", "|---|---:|---:|"]
    for r in rows:
        s = f"{r['seconds']:.2f}" if "seconds" in r else ""
        ips = r.get("images_per_s") or (r["images"] / r["seconds"] if "seconds" in r else 0)
        lines.append(f"| {r['what']} | {s} | {ips:,.0f} |")
        print(f"{r['what']:50s} {s:>8s} {ips:>12,.0f} img/s")
    (out / "data_loading.md").write_text(
        f"CPU: {env['cpu']}, {env['cores']} cores, torch threads {env['threads']}, "
        f"load average at the end {tuple(round(v, 1) for v in env['load_avg'])} (shared machine).\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
