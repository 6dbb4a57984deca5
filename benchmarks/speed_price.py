"""A MAC budget priced in time: ``slim --target-macs T`` against ``slim --target-macs T --price latency``.

The budget ranks and weights channels by ``|scale| / marginal cost``; by default the cost is the
channel's MACs, with ``--price latency`` its marginal time in the per-layer latency lookup that the
run measures here (ONNX Runtime, 1 thread, batch 1) while the budget itself stays in MACs. For
vgg-small (Fashion-MNIST) and resnet20 / mobilenetv2 (CIFAR-10 JPEG) at T = 0.5 and 0.3, one run
each as in ``benchmarks/speed_by_default.py`` part (a) (2,000 images, 2 epochs, seed 0, channels
aligned for host-cpu). Timing is side by side: per cell the (dense, default slim) and (dense, priced
slim) pairs are timed alternately, ``--rounds`` times each (each pair: ``--trials`` fresh processes
in alternating order, ORT 1 thread, batch 1 and 32); a cell's realized speedup / MAC ratio is the
median over its rounds, with the spread of the rounds beside it. Runs are cached in ``--work``.

    python benchmarks/speed_price.py

Writes ``benchmarks/results/speed_price.{json,md}``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import speed_by_default as sbd

VARIANTS = {"default": {}, "price-latency": {"price": "latency"}}


def main() -> int:
    ap = sbd.comparison_parser(__doc__, "speed_price")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    run_args = sbd.short_runs(args.trials)
    rows = []
    for arch in args.models.split(","):
        for t in sbd.TARGETS:
            name = f"{arch}-macs{t}"
            reps = {}
            for v, opts in VARIANTS.items():
                print(f"{v} {name} ...", file=sys.stderr, flush=True)
                reps[v] = sbd.slim_run(args.work / v, name, arch, run_args, False, target_macs=str(t), **opts)
                if reps[v]["budget"]["settings"].get("price") != opts.get("price"):
                    raise SystemExit(f"{args.work / v / name} was run with another price: remove it")
            rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for v in VARIANTS:
                    kept = reps[v]["macs"]["slim"] / reps[v]["macs"]["dense"]
                    rounds[v].append(
                        sbd.per_batch(sbd.time_pair(args.work / v / name, args.trials, [1, 32]), kept)
                    )
            for v, rep in reps.items():
                row = {"variant": v, "model": arch, "target_macs": t, "round_to": rep["slimming"]["round_to"],
                       "macs_kept": rep["macs"]["slim"] / rep["macs"]["dense"],
                       "channels_kept": [r["after_surgery"] for r in rep["layers"]], "rounds": rounds[v]}  # fmt: skip
                for b in ("b1", "b32"):
                    vals = [r[b]["speedup_over_macs_ratio"] for r in rounds[v]]
                    row[b] = {"ratio": statistics.median(vals), "rounds": vals}
                rows.append(row)
                print(
                    f"  {v} {name}: b1 {row['b1']['rounds']} b32 {row['b32']['rounds']}",
                    file=sys.stderr,
                    flush=True,
                )
    record = {"command": " ".join(["python benchmarks/speed_price.py", *sys.argv[1:]]), "env": sbd._env(),
              "trials": args.trials, "rounds": args.rounds, "rows": rows}  # fmt: skip
    from edgeslim.utils.io import write_json

    write_json(args.out.with_suffix(".json"), record)
    write_md(record, args.out.with_suffix(".md"))
    return 0


def write_md(record: dict[str, Any], path: Path) -> None:
    def cell(row: dict[str, Any], b: str) -> str:
        r = row[b]
        mark = "**" if r["ratio"] >= sbd.GOAL_RATIO else ""
        return f"{mark}{r['ratio']:.2f}{mark} ({', '.join(f'{x:.2f}' for x in r['rounds'])})"

    lines = [
        "# A MAC budget priced in time: realized speedup / MAC ratio (ORT, 1 thread)",
        "",
        f"Produced by `{record['command']}`; {record['env']}. Seed 0, 2,000 images, 2 epochs (the pattern "
        "of kept channels matters here, not the accuracy). Per cell the two slim networks were timed "
        f"alternately against the dense one, {record['rounds']} rounds of {record['trials']} trials each: "
        "median over the rounds (the rounds in brackets). Bold: >= 0.9 (the issue's goal).",
        "",
        "| model | T | price | MACs kept | /MAC ratio b1 | /MAC ratio b32 | kept channels |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        price = "MACs (default)" if r["variant"] == "default" else "latency"
        lines.append(
            f"| {r['model']} | {r['target_macs']} | {price} | {r['macs_kept']:.3f} | {cell(r, 'b1')} | "
            f"{cell(r, 'b32')} | {' '.join(map(str, r['channels_kept']))} |"
        )
    met = {v: sum(r["b1"]["ratio"] >= sbd.GOAL_RATIO and r["b32"]["ratio"] >= sbd.GOAL_RATIO
                  for r in record["rows"] if r["variant"] == v) for v in VARIANTS}  # fmt: skip
    cells = {v: sum(r["variant"] == v for r in record["rows"]) for v in VARIANTS}
    lines += ["", "Cells (model x target) with both batches >= 0.9: "
              + "; ".join(f"{v} {met[v]} of {cells[v]}" for v in VARIANTS) + "."]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
