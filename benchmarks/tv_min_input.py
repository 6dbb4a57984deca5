"""Smallest square input each torchvision classifier (``tv:NAME``) accepts, probed by forward passes.

Writes benchmarks/results/tv_min_input.{json,md}. Usage:
    nice -n 10 .venv/bin/python benchmarks/tv_min_input.py [--max-params 150e6]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

SIZES = [16, 28, 32, 48, 64, 75, 96, 128, 160, 224]


def probe(name: str, max_params: float) -> dict:
    from edgeslim.models import create_model

    t0 = time.perf_counter()
    model = create_model(f"tv:{name}", num_classes=10, in_channels=3).eval()
    params = sum(p.numel() for p in model.parameters())
    row = {"model": f"tv:{name}", "params": params, "min_input": None, "works_28": False, "works_32": False}
    if params > max_params:
        row["note"] = "skipped (too large for this CPU probe)"
        return row
    ok = []
    with torch.no_grad():
        for s in SIZES:
            try:
                y = model(torch.randn(1, 3, s, s))
                ok.append(s if tuple(y.shape) == (1, 10) else None)
            except Exception:  # noqa: BLE001 - any failure means "this size does not work"
                ok.append(None)
    works = [s for s in ok if s is not None]
    row.update(min_input=min(works) if works else None, works_28=28 in works, works_32=32 in works,
               sizes_ok=works, seconds=round(time.perf_counter() - t0, 2))  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-params", type=float, default=150e6)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from edgeslim.models.tv import list_tv_classifiers

    rows = []
    for name in list_tv_classifiers():
        rows.append(probe(name, args.max_params))
        r = rows[-1]
        print(
            f"{r['model']:32s} {r['params'] / 1e6:8.1f}M  min {r['min_input']}  {r.get('note', '')}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tv_min_input.json").write_text(json.dumps({"sizes_tried": SIZES, "torch": torch.__version__,
                                                       "rows": rows}, indent=2) + "\n")  # fmt: skip
    lines = [
        "| model | params (M) | smallest input tried that works | 28x28 | 32x32 |",
        "|---|---:|---:|:-:|:-:|",
    ]
    for r in rows:
        mi = r["min_input"] if r["min_input"] is not None else r.get("note", "none of the sizes")
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.1f} | {mi} | {'yes' if r['works_28'] else 'no'} | "
                     f"{'yes' if r['works_32'] else 'no'} |")  # fmt: skip
    (out / "tv_min_input.md").write_text(
        f"Square input sizes tried: {SIZES} (batch 1, eval mode, random weights).\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
