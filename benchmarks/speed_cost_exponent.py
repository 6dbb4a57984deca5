"""Which channels a MAC budget keeps, and how fast they run: ``slim --target-macs T --cost-exponent E
--importance I``.

The budget ranks and weights channels by ``|scale| / cost**E`` (cost: a channel's marginal MACs).
With E = 1 (the default) channels of cheap low-resolution layers are nearly free to keep; with E = 0
they compete on magnitude alone. ``--importance layer`` ranks each channel's scale relative to its
layer's mean non-zero scale (the default, ``absolute``, by the scale itself). For each exponent and importance and each of vgg-small (Fashion-MNIST) and
resnet20 / mobilenetv2 (CIFAR-10 JPEG) at T = 0.5 and 0.3, one run as in
``benchmarks/speed_by_default.py`` part (a) (2,000 images, 2 epochs, seed 0, channels aligned for
host-cpu) and the dense and slim networks timed interleaved with ONNX Runtime (1 thread, 3 trials)
at batch 1 and 32: realized speedup / MAC ratio. Runs are cached in ``--work``/e{E} (``e{E}-layer``).

    python benchmarks/speed_cost_exponent.py --exponents 0,0.5    # E = 1: speed_by_default (a)
    python benchmarks/speed_cost_exponent.py --exponents 1,0 --importance absolute,layer \
        --out benchmarks/results/speed_importance    # the default timed in the same run

Writes ``benchmarks/results/speed_cost_exponent.{json,md}``.
"""

from __future__ import annotations

import json
import sys

import speed_by_default as sbd


def main() -> int:
    ap = sbd.comparison_parser(__doc__, "speed_cost_exponent")
    ap.add_argument("--exponents", default="0,0.5")
    ap.add_argument("--importance", default="absolute", help="comma-separated: absolute, layer")
    args = ap.parse_args()
    run_args = sbd.short_runs(args.trials)
    rows = []
    variants = [(float(e), i) for i in args.importance.split(",") for e in args.exponents.split(",")]
    for e, imp in variants:
        work = args.work / (f"e{e:g}" if imp == "absolute" else f"e{e:g}-{imp}")
        work.mkdir(parents=True, exist_ok=True)
        for arch in args.models.split(","):
            for t in sbd.TARGETS:
                name = f"{arch}-macs{t}"
                print(f"E {e:g} importance {imp} {name} ...", file=sys.stderr, flush=True)
                opts = {"cost_exponent": e, "importance": None if imp == "absolute" else imp}
                rep = sbd.slim_run(work, name, arch, run_args, False, target_macs=str(t), **opts)
                ran_imp = rep["slimming"].get("importance") or "absolute"
                if rep["budget"]["settings"]["cost_exponent"] != e or ran_imp != imp:
                    raise SystemExit(f"{work / name} was run with another exponent or importance: remove it")
                timing = sbd.time_pair(work / name, args.trials, [1, 32])
                kept = rep["macs"]["slim"] / rep["macs"]["dense"]
                rows.append({
                    "cost_exponent": e, "importance": imp, "model": arch, "target_macs": t, "round_to": rep["slimming"]["round_to"],
                    "macs_kept": kept, "accuracy_slim": rep["accuracy"]["slim"],
                    "channels_kept": [r["after_surgery"] for r in rep["layers"]],
                    **sbd.per_batch(timing, kept),
                })  # fmt: skip
    default = {(r["model"], r["target_macs"]): r for r in json.loads(sbd.RESULTS.joinpath(
        "speed_by_default.json").read_text())["macs"] if r.get("mode") == "aligned (default)"}  # fmt: skip
    here = {
        (r["model"], r["target_macs"]): r
        for r in rows
        if r["cost_exponent"] == 1 and r["importance"] == "absolute"
    }
    default.update(here)  # the default timed in this run, side by side, where it was run
    record = {"command": "python benchmarks/speed_cost_exponent.py " + " ".join(sys.argv[1:]),
              "env": sbd._env(), "rows": rows}  # fmt: skip
    from edgeslim.utils.io import write_json

    write_json(args.out.with_suffix(".json"), record)
    source = "this run" if here else "`speed_by_default.md` (a)"
    lines = [
        "# `slim --target-macs T --cost-exponent E --importance I`: realized speedup / MAC ratio (ORT, 1 thread)",
        "",
        f"Produced by `{record['command']}`; {record['env']}. Seed 0, 2,000 images, 2 epochs (the pattern "
        "of kept channels matters here; resnet20 and mobilenetv2 are barely trained at this size, so "
        f"their accuracies say little). The default (E = 1, I = absolute) from {source}. Identical networks "
        "measured twice differ by up to 0.05 in these ratios.",
        "",
        "| model | T | E | I | MACs kept | /MAC ratio b1 | /MAC ratio b32 | default: b1 / b32 | slim acc | kept channels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = default.get((r["model"], r["target_macs"]))
        ref = (
            f"{d['b1']['speedup_over_macs_ratio']:.2f} / {d['b32']['speedup_over_macs_ratio']:.2f}"
            if d
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['target_macs']} | {r['cost_exponent']:g} | {r.get('importance', 'absolute')} | "
            f"{r['macs_kept']:.3f} | **{r['b1']['speedup_over_macs_ratio']:.2f}** | "
            f"**{r['b32']['speedup_over_macs_ratio']:.2f}** | {ref} | {r['accuracy_slim']:.3f} | "
            f"{' '.join(map(str, r['channels_kept']))} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
