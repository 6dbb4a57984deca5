"""Which torchvision classification models with BatchNorm channel surgery handles, and how well.

For every torchvision classification model that has BatchNorm layers (random weights, BN
statistics randomized, eval mode): zero a random 30% of every coupled BN group (scale and
bias), prune, and compare outputs in float64 on fresh inputs. A model counts as handled when
it traces, some channels are removed, and the outputs match within 1e-4. Rows say how many
of the zeroed channels were removed, the barriers met, or the error.
Writes ``benchmarks/results/surgery_coverage.json`` and ``.md``.

    python benchmarks/surgery_coverage.py [--max-params 100e6] [--only resnet18,googlenet]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from edgeslim.surgery import build_graph, prune_with_report, verify
from edgeslim.utils.console import out, table
from edgeslim.utils.io import atomic_write_text, write_json
from edgeslim.utils.markdown import cell, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = {"inception_v3": 96, "maxvit_t": 224}


def has_bn(m: nn.Module) -> bool:
    return any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())


def check(name: str, frac: float) -> dict:
    torch.manual_seed(0)
    m = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    if not has_bn(m):
        return {}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.weight.copy_(torch.rand(b.num_features, generator=gen) + 0.5)
                b.bias.copy_(torch.randn(b.num_features, generator=gen) * 0.2)
                b.running_var.copy_(torch.rand(b.num_features, generator=gen) + 0.5)
    size = SIZE.get(name, 64)
    x = torch.randn(2, 3, size, size, generator=gen)
    row = {"model": name, "input": size}
    t = time.perf_counter()
    try:
        g = build_graph(m, x)
        zeroed = 0
        mods = dict(m.named_modules())
        for bg in g.bn_groups():
            sel = torch.rand(bg.size, generator=gen) < frac
            sel[0] = False
            zeroed += int(sel.sum())
            for bn, idx in bg.members:
                with torch.no_grad():
                    mods[bn].weight[idx[sel]] = 0
                    mods[bn].bias[idx[sel]] = 0
        res = prune_with_report(m, x)
        d = verify(copy.deepcopy(m).double(), copy.deepcopy(res.model).double(), x.double())
        row.update({
            "zeroed": zeroed, "removed": res.report["removed_channels"],
            "bn_channels": sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d)),
            "coupled_bn_channels": sum(bg.size for bg in g.bn_groups()),
            "max_abs_diff_f64": d["max_abs_diff"],
            "params_kept": sum(p.numel() for p in res.model.parameters()) / sum(p.numel() for p in m.parameters()),
            "barriers": sorted({b.split(": ", 1)[-1] for b in res.report["barriers"]} - {"model input", "model output"}),
            "ok": res.report["removed_channels"] > 0 and d["max_abs_diff"] < 1e-4,
        })  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a finding, recorded per model
        row.update({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
    row["seconds"] = time.perf_counter() - t
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-params", type=float, default=100e6)
    ap.add_argument("--frac", type=float, default=0.3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", type=Path, default=RESULTS / "surgery_coverage")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    rows, skipped = [], []
    for name in names:
        n_params = torchvision.models.get_model_weights(name).DEFAULT.meta.get("num_params", 0)
        if n_params > args.max_params:
            skipped.append(name)
            continue
        row = check(name, args.frac)
        if row:
            rows.append(row)
            out.print(f"{name}: {'ok' if row['ok'] else 'NOT OK'} {row.get('error', '')}")
    cols = ["model", "ok", "zeroed", "removed", "max_abs_diff_f64", "params_kept", "barriers", "error"]
    out.print(table("Channel surgery coverage (torchvision, BN models)", cols[:6],
                    [[r.get(c) for c in cols[:6]] for r in rows]))  # fmt: skip
    write_json(args.out.with_suffix(".json"), {"rows": rows, "skipped_over_max_params": skipped})
    md = ["# Channel surgery coverage: torchvision classification models with BatchNorm", "",
          f"30% of every coupled BN group zeroed (scale and bias), pruned, compared in float64. "
          f"Skipped (> {args.max_params / 1e6:.0f}M parameters): {', '.join(skipped) or 'none'}.", "",
          markdown_table(cols, [[r.get(c, "") for c in cols] for r in rows], fmt=_fmt)]  # fmt: skip
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else cell(v)


if __name__ == "__main__":
    main()
