"""Draw docs/architecture.png: the layers of edgeslim/ as docs/architecture.md lists them.

python tools/architecture_figure.py
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

OUT = Path(__file__).resolve().parent.parent / "docs" / "architecture.png"

#: top to bottom: (layer, colour, [(box title, what it holds), ...])
ROWS = [
    ("cli", "#f4d6d9", [("cli/", "parse options into requests, render results, map library errors to flags")]),
    ("pipelines", "#f3e2cc", [("pipelines/", "a request dataclass + run() per stage; run dirs, lock, resume"),
                              ("slim.py", "train -> slim -> surgery -> report, one call")]),
    ("bench", "#dde9f6", [("bench/", "backends (registry), timing, memory, layers, sweeps, compare, report")]),
    ("export", "#dde9f6", [("export/", "ONNX, audit, QDQ / INT8, TensorRT, trtexec")]),
    ("surgery", "#dfefdc", [("surgery/", "remove zero channels, fold constants, verify, PruneResult")]),
    ("train", "#dfefdc", [("train/", "fit, schedules, AMP/DDP, resume; calls the hooks; ultralytics trainer")]),
    ("checkpoint", "#ececec", [("checkpoint.py", "model files: spec + weights + recipe")]),
    ("sparsity", "#dfefdc", [("sparsity/", "subgradient, prox, budgets, alignment: implement TrainHook")]),
    ("channels", "#fdf0b3", [("channels/", "graph (dependency graph, groups, removable), ops, rules,\n"
                                           "recipe (per-layer shrink), norm, hooks, cost, devices"),
                             ("counting.py", "MACs, params"), ("penalties.py", "r(z), prox operators")]),
    ("data", "#ebe2f3", [("data/", "data sets (passive registry), loaders")]),
    ("models", "#ebe2f3", [("models/", "zoo (passive registry), ModelSpec, timm, torchvision, YOLO")]),
    ("base", "#dcdcdc", [("errors.py", "EdgeslimError, first_line"), ("utils/", "io, console, parsing, plotting")]),
]  # fmt: skip
WIDTHS = {"channels/": 0.56, "counting.py": 0.2, "penalties.py": 0.24, "pipelines/": 0.55, "slim.py": 0.45}


def main() -> None:
    fig = Figure(figsize=(12.1, 11.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 12.1)
    ax.set_ylim(0, 11.6)
    ax.axis("off")
    ax.text(0.25, 11.25, "edgeslim: layers (an import may only point down or sideways, never up; no cycles)",
            fontsize=14, weight="bold", va="center")  # fmt: skip
    x0, x1, h, top = 1.75, 11.45, 0.68, 10.55
    for i, (layer, colour, boxes) in enumerate(ROWS):
        y = top - i * 0.885
        ax.text(0.25, y, layer, fontsize=12, family="monospace", weight="bold", va="center")
        shares = [WIDTHS.get(t, 1 / len(boxes)) for t, _ in boxes]
        x = x0
        for (title, what), share in zip(boxes, shares):
            w = (x1 - x0 - 0.06 * (len(boxes) - 1)) * share / sum(shares)
            ax.add_patch(Rectangle((x, y - h / 2), w, h, facecolor=colour, edgecolor="#555555", lw=0.9))
            ax.text(x + 0.13, y + 0.16, title, fontsize=10.5, family="monospace", weight="bold", va="center")
            ax.text(x + 0.13, y - 0.13, what, fontsize=8.2, va="center", linespacing=1.1)
            x += w + 0.06
    bottom = top - (len(ROWS) - 1) * 0.885
    ax.add_patch(FancyArrowPatch((11.75, top + 0.3), (11.75, bottom - 0.3), arrowstyle="-|>", mutation_scale=18,
                                 color="#333333", lw=1.2))  # fmt: skip
    ax.text(11.9, (top + bottom) / 2, "imports", rotation=270, va="center", fontsize=11)
    fig.savefig(OUT)


if __name__ == "__main__":
    main()
