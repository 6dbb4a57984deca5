"""Which channels a MAC budget keeps, and how fast they run: ``slim --target-macs T --cost-exponent E``.

The budget ranks and weights channels by ``|scale| / cost**E`` (cost: a channel's marginal MACs).
With E = 1 (the default) channels of cheap low-resolution layers are nearly free to keep; with E = 0
they compete on magnitude alone. For each exponent and each of vgg-small (Fashion-MNIST) and
resnet20 / mobilenetv2 (CIFAR-10 JPEG) at T = 0.5 and 0.3, one run as in
``benchmarks/speed_by_default.py`` part (a) (2,000 images, 2 epochs, seed 0, channels aligned for
host-cpu) and the dense and slim networks timed interleaved with ONNX Runtime (1 thread, 3 trials)
at batch 1 and 32: realized speedup / MAC ratio. Runs are cached in ``--work``/e{E}.

    python benchmarks/speed_cost_exponent.py --exponents 0,0.5    # E = 1: speed_by_default (a)

Writes ``benchmarks/results/speed_cost_exponent.{json,md}``.
"""

from __future__ import annotations

import json
import sys

import speed_by_default as sbd


def main() -> int:
    ap = sbd.comparison_parser(__doc__, "speed_cost_exponent")
    ap.add_argument("--exponents", default="0,0.5")
    args = ap.parse_args()
    run_args = sbd.short_runs(args.trials)
    rows = []
    for e in (float(v) for v in args.exponents.split(",")):
        work = args.work / f"e{e:g}"
        work.mkdir(parents=True, exist_ok=True)
        for arch in args.models.split(","):
            for t in sbd.TARGETS:
                name = f"{arch}-macs{t}"
                print(f"E {e:g} {name} ...", file=sys.stderr, flush=True)
                rep = sbd.slim_run(work, name, arch, run_args, False, target_macs=str(t), cost_exponent=e)
                if rep["budget"]["settings"]["cost_exponent"] != e:
                    raise SystemExit(f"{work / name} was run with another exponent: remove it")
                timing = sbd.time_pair(work / name, args.trials, [1, 32])
                kept = rep["macs"]["slim"] / rep["macs"]["dense"]
                rows.append({
                    "cost_exponent": e, "model": arch, "target_macs": t, "round_to": rep["slimming"]["round_to"],
                    "macs_kept": kept, "accuracy_slim": rep["accuracy"]["slim"],
                    "channels_kept": [r["after_surgery"] for r in rep["layers"]],
                    **sbd.per_batch(timing, kept),
                })  # fmt: skip
    default = {(r["model"], r["target_macs"]): r for r in json.loads(sbd.RESULTS.joinpath(
        "speed_by_default.json").read_text())["macs"] if r.get("mode") == "aligned (default)"}  # fmt: skip
    record = {"command": "python benchmarks/speed_cost_exponent.py " + " ".join(sys.argv[1:]),
              "env": sbd._env(), "rows": rows}  # fmt: skip
    from edgeslim.utils.io import write_json

    write_json(args.out.with_suffix(".json"), record)
    lines = [
        "# `slim --target-macs T --cost-exponent E`: realized speedup / MAC ratio (ORT, 1 thread)",
        "",
        f"Produced by `{record['command']}`; {record['env']}. Seed 0, 2,000 images, 2 epochs (the pattern "
        "of kept channels matters here; resnet20 and mobilenetv2 are barely trained at this size). "
        "E = 1 (the default) from `speed_by_default.md` (a). Identical networks measured twice differ "
        "by up to 0.05 in these ratios.",
        "",
        "| model | T | E | MACs kept | /MAC ratio b1 | /MAC ratio b32 | E = 1: b1 / b32 | kept channels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = default.get((r["model"], r["target_macs"]))
        ref = (
            f"{d['b1']['speedup_over_macs_ratio']:.2f} / {d['b32']['speedup_over_macs_ratio']:.2f}"
            if d
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['target_macs']} | {r['cost_exponent']:g} | {r['macs_kept']:.3f} | "
            f"**{r['b1']['speedup_over_macs_ratio']:.2f}** | **{r['b32']['speedup_over_macs_ratio']:.2f}** | {ref} | "
            f"{' '.join(map(str, r['channels_kept']))} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
