"""Slim vs dense on a GPU with PyTorch: realized speedup / MAC ratio, aligned and unaligned channel counts.

One prepared command for a lent GPU (CI never has one; nothing here needs TensorRT):

    python benchmarks/gpu_speed.py --out $OUT/gpu_speed          # <= 8 minutes on one H200

For vgg19, resnet56 and mobilenetv2 at CIFAR shapes (3x32x32, random weights: latency does
not depend on them), a slim network at about 50% of the dense MACs is cut by surgery from one
seeded random pattern of zero BN scales (the budget's exact projection by |scale| / cost, every
group keeping >= 30%): once with the counts as they fall (``unaligned``) and once rounded up to
multiples of 8 (``aligned8``, FP16 tensor cores). Each network runs in torch eager FP32, eager
FP16 + channels_last, and ``torch.compile`` FP16 + channels_last, at batch 1, 32 and 256; dense
and slim alternate over ``--rounds`` rounds (CUDA events, median per-iteration time of each
round, median over rounds). Compilation stops when ``--budget-s`` is spent (cells then say
``skipped``). Writes ``OUT.json`` and ``OUT.md``.

Tested on the CPU with ``--device cpu --quick`` (tests/test_benchmarks_gpu.py); never run on a
GPU in this repository's CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("vgg19", "resnet56", "mobilenetv2")
MODES = ("eager-fp32", "eager-fp16-cl", "compile-fp16-cl")
TARGET = 0.5


def slim_pair(arch: str, seed: int = 0) -> dict[str, Any]:
    """``{"dense", "unaligned", "aligned8"}`` networks and their MACs (surgery from one random pattern)."""
    import copy

    import torch

    from edgeslim.counting import count_model
    from edgeslim.models import ModelSpec, create_model
    from edgeslim.sparsity.resource import build_resource, zero_channels
    from edgeslim.surgery import prune_with_report

    torch.manual_seed(seed)
    spec = ModelSpec(arch=arch, num_classes=10, in_channels=3, input_size=[32, 32])
    dense = create_model(spec).eval()
    ex = torch.zeros(1, 3, 32, 32)
    out: dict[str, Any] = {"dense": dense}
    g = torch.Generator().manual_seed(seed)
    scales = None
    for name, round_to in (("unaligned", 1), ("aligned8", 8)):
        res = build_resource(dense, ex, "macs", round_to=round_to)
        scales = (
            torch.rand(res.total, generator=g) + 0.05 if scales is None else scales
        )  # one pattern for both
        xi, _ = res.project(scales, TARGET * res.dense, keep_frac=0.3)
        cut = copy.deepcopy(dense)
        zero_channels(cut, xi == 0)
        out[name] = prune_with_report(cut, ex, round_to=round_to).model.eval()
    out["macs"] = {
        k: float(count_model(out[k], (3, 32, 32)).macs) for k in ("dense", "unaligned", "aligned8")
    }
    return out


def _prepare(model: Any, mode: str, device: Any) -> Any:
    import copy

    import torch

    m = copy.deepcopy(model).to(device).eval()
    if "fp16" in mode:
        m = m.half()
    if "-cl" in mode:
        m = m.to(memory_format=torch.channels_last)
    if mode.startswith("compile"):
        m = torch.compile(m)
    return m


def _time_ms(model: Any, x: Any, device: Any, min_s: float, warmup: int) -> float:
    import torch

    cuda = device.type == "cuda"
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize()
        times = []
        start = time.perf_counter()
        while len(times) < 10 or time.perf_counter() - start < min_s:
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                model(x)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def write(
    args: argparse.Namespace, argv: list[str] | None, rows: list[dict[str, Any]], seconds: float
) -> str:
    """Write ``OUT.json`` and ``OUT.md`` with the rows so far (a killed run keeps them); the table."""
    import torch

    device = torch.device(args.device)
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           "seconds": seconds}  # fmt: skip
    record = {"command": "python benchmarks/gpu_speed.py " + " ".join(argv or sys.argv[1:]), "env": env,
              "target_macs": TARGET, "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Slim vs dense with PyTorch on a GPU: realized speedup / MAC ratio",
        "",
        f"`{record['command']}`; {env}. Slim networks at ~{TARGET:.0%} of the dense MACs from one random "
        "pattern; `aligned8`: counts rounded up to multiples of 8.",
        "",
        "| model | mode | batch | dense ms | unaligned ms | speedup / MAC ratio | aligned8 ms | speedup / MAC ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['skipped']} |  |  |  |  |")
            continue
        u, a = r["unaligned"], r["aligned8"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['batch']} | {r['dense_ms']:.3f} | {u['ms']:.3f} | "
            f"{u['speedup_over_macs_ratio']:.2f} | {a['ms']:.3f} | {a['speedup_over_macs_ratio']:.2f} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-s", type=float, default=0.25, help="seconds timed per network, round and cell")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop compiling new cells after this")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: batch 1 and 2, one round, 0.02 s")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu_speed")
    args = ap.parse_args(argv)
    import torch

    if args.quick:
        args.batches, args.rounds, args.min_s = "1,2", 1, 0.02
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU, or pass --device cpu --quick for a smoke test")
    batches = [int(b) for b in args.batches.split(",")]
    t_start = time.perf_counter()
    rows = []
    for arch in args.models.split(","):
        nets = slim_pair(arch)
        for mode in args.modes.split(","):
            over = mode.startswith("compile") and time.perf_counter() - t_start > args.budget_s
            prepared = (
                None
                if over
                else {k: _prepare(nets[k], mode, device) for k in ("dense", "unaligned", "aligned8")}
            )
            for b in batches:
                row: dict[str, Any] = {"model": arch, "mode": mode, "batch": b}
                if prepared is None:
                    row["skipped"] = f"time budget ({args.budget_s:.0f} s) spent"
                    rows.append(row)
                    continue
                dtype = torch.float16 if "fp16" in mode else torch.float32
                x = torch.randn(b, 3, 32, 32, device=device, dtype=dtype)
                if "-cl" in mode:
                    x = x.contiguous(memory_format=torch.channels_last)
                per: dict[str, list[float]] = {k: [] for k in prepared}
                for r in range(args.rounds):
                    order = list(prepared) if r % 2 == 0 else list(prepared)[::-1]
                    for k in order:
                        per[k].append(_time_ms(prepared[k], x, device, args.min_s, 3 if args.quick else 20))
                ms = {k: statistics.median(v) for k, v in per.items()}
                for k in ("unaligned", "aligned8"):
                    ratio = nets["macs"]["dense"] / nets["macs"][k]
                    row[k] = {"ms": ms[k], "speedup": ms["dense"] / ms[k], "macs_ratio": ratio,
                              "speedup_over_macs_ratio": ms["dense"] / ms[k] / ratio, "rounds_ms": per[k]}  # fmt: skip
                row["dense_ms"], row["dense_rounds_ms"] = ms["dense"], per["dense"]
                rows.append(row)
                write(args, argv, rows, time.perf_counter() - t_start)
                print(
                    json.dumps({k: v for k, v in row.items() if "rounds" not in k}),
                    file=sys.stderr,
                    flush=True,
                )
    print(write(args, argv, rows, time.perf_counter() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
