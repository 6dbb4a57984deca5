"""Every penalty of the library under a budget: a table from ``budget_sweep.py`` runs.

The runs are single ``budget_sweep.py`` points (one per penalty and seed, same data, target and
schedule); this script collects the lines of one sweep name from the sweep log and writes
``benchmarks/results/<out>.{json,md}``::

    for s in 0 1; do for p in l1 lp tl1 mcp scad group-l1 group-lp group-tl1 group-mcp group-scad; do
        python benchmarks/budget_sweep.py penalties resnet20 0.5 8000 4 seed=$s penalty=$p; done; done
    python benchmarks/budget_penalties.py penalties --out budget_penalties_8k
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def collect(log: Path, name: str) -> list[dict[str, Any]]:
    """The sweep lines named ``name`` (the last one of each penalty, arch, target and seed)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if d.get("name") == name:
            rows[(d["penalty"], d["arch"], d["target"], d["seed"])] = d
    return list(rows.values())


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per penalty, arch and target: accuracy and MAC fraction per seed, mean and spread."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        key = (r["arch"], r["target"], r["penalty"])
        t = out.setdefault(key, {"arch": r["arch"], "target": r["target"], "penalty": r["penalty"],
                                 "seeds": [], "accuracy": [], "macs_fraction": [], "projected": []})  # fmt: skip
        t["seeds"].append(r["seed"])
        t["accuracy"].append(r["accuracy"])
        t["macs_fraction"].append(r["macs_fraction"])
        t["projected"].append(r["projection_removed"])
    for t in out.values():
        t["mean"] = statistics.fmean(t["accuracy"])
        t["sd"] = statistics.stdev(t["accuracy"]) if len(t["accuracy"]) > 1 else 0.0
    return sorted(out.values(), key=lambda t: (t["arch"], t["target"], -t["mean"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the sweep name the runs were logged under")
    ap.add_argument("--log", type=Path, default=RESULTS / "budget_sweep.jsonl")
    ap.add_argument("--out", default="budget_penalties")
    args = ap.parse_args()
    rows = collect(args.log, args.name)
    if not rows:
        raise SystemExit(f"no runs named {args.name!r} in {args.log}")
    tab = table(rows)
    first = rows[0]
    setup = {
        "data": f"fashion-mnist, {first['subset']} train images (class-balanced), 10000 test images",
        "schedule": f"{first['epochs']} epochs, batch 64, SGD lr 0.1 cosine, wd 5e-4, 1 thread",
        "slim": "budget-targeted proximal slimming, zero-invariant, slim's default phases and penalty parameters",
        "runs": f"benchmarks/budget_sweep.py {args.name} ARCH TARGET ... seed=S penalty=P (lines in {args.log.name})",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"setup": setup, "table": tab}, indent=2) + "\n")
    md = ["# Every penalty under a MAC budget (Fashion-MNIST, CPU)", ""]
    md += [f"- {k}: {v}" for k, v in setup.items()]
    md += ["", "Sorted by mean accuracy; per seed in brackets.", "",
           "| arch | target MACs | penalty | accuracy, mean ± SD | per seed | MACs kept | channels projected |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in tab:
        md.append(
            f"| {t['arch']} | {float(t['target']):.0%} | {t['penalty']} | {t['mean']:.2%} ± {t['sd']:.2%} | "
            f"{', '.join(f'{a:.2%}' for a in t['accuracy'])} | "
            f"{', '.join(f'{m:.1%}' for m in t['macs_fraction'])} | {', '.join(map(str, t['projected']))} |"
        )
    md.append("")
    (RESULTS / f"{args.out}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
