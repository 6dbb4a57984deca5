"""Channel surgery time on this CPU (target: ResNet-50 under 3 s) beside Torch-Pruning.

For each model (torchvision, random weights, BN statistics randomized like a trained net) a
random 30% of every coupled BN group is zeroed, then the same channels are removed by
``edgeslim.surgery.prune_with_report`` and by Torch-Pruning (``DependencyGraph`` +
``get_pruning_group(bn, prune_batchnorm_out_channels, idxs)``, one group per coupled set).
Two cases: BN scale *and* bias zero (removal is exact) and scale zero with a nonzero bias
(edgeslim folds the constant into the consumers; Torch-Pruning drops it).

Times are the best of ``--repeats`` runs, single-threaded by default. edgeslim's time includes
its copy of the input model, tracing, bias folding and its own verification forwards;
Torch-Pruning's includes building its graph and pruning (its deepcopy is made beforehand).
Torch-Pruning is optional (``pip install torch-pruning``); without it that column is skipped.
Writes ``benchmarks/results/surgery_time.json`` and ``.md``.

    python benchmarks/surgery_time.py [--models resnet50,mobilenet_v2] [--size 224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from edgeslim.surgery import build_graph, prune_with_report, verify
from edgeslim.utils.console import out, table
from edgeslim.utils.io import atomic_write_text, write_json
from edgeslim.utils.markdown import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def make_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = torchvision.models.get_model(name, weights=None).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.weight.copy_(torch.rand(b.num_features, generator=gen) + 0.5)
                b.bias.copy_(torch.randn(b.num_features, generator=gen) * 0.2)
                b.running_mean.copy_(torch.randn(b.num_features, generator=gen) * 0.2)
                b.running_var.copy_(torch.rand(b.num_features, generator=gen) + 0.5)
    return m


def zero_channels(m: nn.Module, x: torch.Tensor, frac: float, with_bias: bool) -> list[tuple[str, list[int]]]:
    """Zero ``frac`` of every coupled BN group; returns one (bn name, indices) per group."""
    gen = torch.Generator().manual_seed(1)
    mods = dict(m.named_modules())
    picks = []
    for bg in build_graph(m, x).bn_groups():
        sel = torch.rand(bg.size, generator=gen) < frac
        sel[0] = False
        if not bool(sel.any()):
            continue
        for name, idx in bg.members:
            with torch.no_grad():
                mods[name].weight[idx[sel]] = 0
                mods[name].bias[idx[sel]] = (
                    torch.randn(int(sel.sum()), generator=gen) * 0.3 if with_bias else 0
                )
        picks.append((bg.members[0][0], bg.members[0][1][sel].tolist()))
    return picks


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def run_edgeslim(m: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, nn.Module, dict]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        res = prune_with_report(m, x)
        best = min(best, time.perf_counter() - t)
    return best, res.model, res.report


def run_torch_pruning(m: nn.Module, x: torch.Tensor, picks, repeats: int):
    import torch_pruning as tp

    best, slim = float("inf"), None
    for _ in range(repeats):
        work = copy.deepcopy(m)
        mods = dict(work.named_modules())
        t = time.perf_counter()
        dg = tp.DependencyGraph().build_dependency(work, example_inputs=x)
        for name, idx in picks:
            group = dg.get_pruning_group(mods[name], tp.prune_batchnorm_out_channels, idxs=idx)
            group.prune()
        best = min(best, time.perf_counter() - t)
        slim = work
    return best, slim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frac", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "surgery_time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torch_pruning  # noqa: F401

        have_tp = True
    except ImportError:
        have_tp = False
        out.print("torch-pruning is not installed: its column is skipped (pip install torch-pruning)")

    x = torch.randn(1, 3, args.size, args.size)
    check = torch.randn(4, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))
    rows = []
    for name in args.models.split(","):
        for with_bias in (False, True):
            m = make_model(name)
            picks = zero_channels(m, x, args.frac, with_bias)
            t_es, slim, rep = run_edgeslim(m, x, args.repeats)
            row = {
                "model": name,
                "bn_bias": "nonzero" if with_bias else "zero",
                "channels_removed": rep["removed_channels"],
                "params_dense": count(m),
                "edgeslim_s": t_es,
                "edgeslim_params": count(slim),
                "edgeslim_max_abs_diff": verify(m, slim, check)["max_abs_diff"],
            }
            if have_tp:
                t_tp, tp_slim = run_torch_pruning(m, x, picks, args.repeats)
                row.update({"torch_pruning_s": t_tp, "torch_pruning_params": count(tp_slim),
                            "torch_pruning_max_abs_diff": verify(m, tp_slim, check)["max_abs_diff"]})  # fmt: skip
            rows.append(row)
            out.print(f"{name} bias={row['bn_bias']}: edgeslim {t_es:.2f} s")

    cols = list(rows[0])
    meta = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": args.threads, "input": [1, 3, args.size, args.size], "frac": args.frac,
            "repeats": args.repeats, "target": "ResNet-50 surgery < 3 s"}  # fmt: skip
    heads = [f"{r['model']} b={r['bn_bias']}" for r in rows]  # transposed: fits a terminal
    out.print(table("Channel surgery: edgeslim vs Torch-Pruning (same zeroed channels)", ["", *heads],
                    [[c, *[r.get(c) for r in rows]] for c in cols[2:]]))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), {"meta": meta, "rows": rows})
    md = ["# Channel surgery time (edgeslim vs Torch-Pruning)", "",
          f"Input {meta['input']}, {meta['threads']} thread(s), best of {meta['repeats']}, torch {meta['torch']}, "
          f"{meta['cpu']}. Target: {meta['target']}.", "",
          markdown_table(cols, [[r.get(c) for c in cols] for r in rows], fmt=_fmt)]  # fmt: skip
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


if __name__ == "__main__":
    main()
