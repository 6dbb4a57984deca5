"""Which channel counts ONNX Runtime's CPU kernels reward on this host (the host-cpu profile's alignment).

Times single Conv+Relu layers (1 thread, batch 1, 16x16 input) over channel counts: a 3x3 conv
with c -> c channels, with 64 -> c (output count varies), c -> 64 (input count varies), and a
depthwise 3x3 conv of c channels. Each point is its own ORT session (median of 200 runs after
20 warm-up runs); the points are measured in a shuffled order, twice, and the median kept.
Writes ``benchmarks/results/alignment_host.{json,md,png}``.

    nice -n 5 .venv/bin/python benchmarks/alignment_host.py
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COUNTS = list(range(8, 65, 1))
KINDS = {
    "3x3 c->c": lambda c: (c, c, 3, 1),
    "3x3 64->c": lambda c: (64, c, 3, 1),
    "3x3 c->64": lambda c: (c, 64, 3, 1),
    "depthwise 3x3 c": lambda c: (c, c, 3, c),
}


def time_us(cin: int, cout: int, k: int, groups: int, hw: int = 16) -> float:
    import onnxruntime as ort

    from edgeslim.bench.sweep import layer_model, ort_layer_ms
    from edgeslim.bench.timing import TimingConfig

    spec = {"op": "Conv", "kind": "dw" if groups > 1 else "conv", "group": groups, "kernel": [k, k],
            "hw": [hw, hw], "strides": [1, 1], "pads": [k // 2] * 4, "dilations": [1, 1]}  # fmt: skip
    cfg = TimingConfig(warmup_s=0.0, warmup_iters=20, min_iters=200, min_time_s=0.0)  # 200 runs after 20
    return ort_layer_ms(ort, layer_model(spec, cin, cout, 1), [1, cin, hw, hw], {"threads": 1}, cfg) * 1e3


def main() -> int:
    import onnxruntime

    from edgeslim.utils.io import write_json
    from edgeslim.utils.plotting import new_figure, save_figure

    jobs = [(kind, c) for kind in KINDS for c in COUNTS] * 2
    random.Random(0).shuffle(jobs)
    raw: dict[tuple[str, int], list[float]] = {}
    for i, (kind, c) in enumerate(jobs):
        raw.setdefault((kind, c), []).append(time_us(*KINDS[kind](c)))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(jobs)} points", file=sys.stderr, flush=True)
    res = {kind: {c: statistics.median(raw[(kind, c)]) for c in COUNTS} for kind in KINDS}
    # how much slower each count is than the next multiple of 16 at or above it
    penalty = {
        kind: {c: res[kind][c] / res[kind][min(-(-c // 16) * 16, 64)] for c in COUNTS} for kind in KINDS
    }
    record = {
        "command": "python benchmarks/alignment_host.py",
        "onnxruntime": onnxruntime.__version__,
        "counts": COUNTS,
        "us": {k: {str(c): v for c, v in d.items()} for k, d in res.items()},
        "relative_to_next_multiple_of_16": {k: {str(c): v for c, v in d.items()} for k, d in penalty.items()},
    }
    write_json(RESULTS / "alignment_host.json", record)
    lines = [
        "# Channel alignment of ONNX Runtime's CPU kernels on this host",
        "",
        f"ONNX Runtime {onnxruntime.__version__}, 1 thread, batch 1, 16x16 input, Conv+Relu, median of 200 runs, "
        "each point measured twice in shuffled order (median). Produced by `python benchmarks/alignment_host.py`.",
        "",
        "| kind | " + " | ".join(str(c) for c in (15, 16, 17, 24, 30, 31, 32, 33, 40, 48, 60, 63, 64)) + " |",
        "|---|" + "---|" * 13,
    ]
    for kind in KINDS:
        lines.append(
            f"| {kind} (us) | "
            + " | ".join(f"{res[kind][c]:.1f}" for c in (15, 16, 17, 24, 30, 31, 32, 33, 40, 48, 60, 63, 64))
            + " |"
        )
    lines += [
        "",
        "Worst time relative to the next multiple of 16 (how much a count off the blocks costs):",
        "",
    ]
    for kind in KINDS:
        worst = max(penalty[kind].items(), key=lambda kv: kv[1])
        lines.append(f"- {kind}: {worst[1]:.2f}x at c = {worst[0]}")
    (RESULTS / "alignment_host.md").write_text("\n".join(lines) + "\n")
    fig, ax = new_figure(figsize=(9, 4))
    for kind, color in zip(KINDS, ("#2a7ab0", "#27ae60", "#c0392b", "#8e44ad")):
        ax.plot(COUNTS, [res[kind][c] for c in COUNTS], ".-", color=color, label=kind, lw=1)
    for c in range(16, 65, 16):
        ax.axvline(c, color="#bbbbbb", lw=0.6, ls="--")
    ax.set_xlabel("channels c (dashed: multiples of 16)")
    ax.set_ylabel("latency (us), median")
    ax.set_title(
        f"ONNX Runtime {onnxruntime.__version__} CPU, 1 thread: conv latency steps with the channel count",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, RESULTS / "alignment_host.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
