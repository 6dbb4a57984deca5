"""A latency budget's price of a network against ``edgeslim bench --predict`` of its exported ONNX.

The budget (``edgeslim.sparsity.resource.ResourceModel``, roofline of a device profile) prices the
network from the torch graph while training; ``bench --predict`` prices the exported ONNX file.
Both use the one cost model (``edgeslim.channels.cost``: per-kernel MACs and bytes, the one fusion
rule ``fuse_kernels``, ``predict_latency``). Per model, dense and with half of every group's
channels removed (surgery, then export), at batch 1 and 32, FP16 and INT8 on the Orin Nano
profile:

- ``budget_ms``: the budget's price as it runs (channel counts padded to the profile's multiple);
- ``predict_ms``: ``bench --predict`` of the exported ONNX as it runs (``onnx_cost`` at the same
  padding + ``predict_latency``);
- ``unpadded_ms`` / ``unpadded_predict_ms``: both without the padding (the widths as exported);
- ``conv_only_ms``: the unpadded budget's conv/linear kernels alone (about what it priced before it priced
  pools, squeeze-excitation gates, standalone BN/activations and concats; residual reads included).

Nothing here is timed: both sides are predictions (a roofline, not a measurement; never checked
on a Jetson). Writes ``benchmarks/results/budget_vs_predict.{json,md}``.

    python benchmarks/budget_vs_predict.py
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from edgeslim.bench.onnx_cost import onnx_cost
from edgeslim.channels.cost import predict_latency, scale_bytes
from edgeslim.channels.devices import load_profile
from edgeslim.export.onnx_export import export_onnx
from edgeslim.models import create_model
from edgeslim.models.yolo import deployed_output
from edgeslim.sparsity.resource import build_resource, zero_channels
from edgeslim.surgery import prune_with_report
from edgeslim.utils.console import out
from edgeslim.utils.io import atomic_write_text, write_json
from edgeslim.utils.markdown import markdown_table

PROFILE = "jetson-orin-nano-8gb"
MODELS = [  # (name, input C,H,W)
    ("resnet20", (3, 32, 32)),
    ("vgg-small", (3, 32, 32)),
    ("mobilenetv2", (3, 32, 32)),
    ("tv:resnet18", (3, 64, 64)),
    ("tv:mobilenet_v3_small", (3, 64, 64)),
    ("timm:mobilenetv3_large_100", (3, 64, 64)),
    ("timm:efficientnet_b0", (3, 64, 64)),
    ("timm:densenet121", (3, 64, 64)),
    ("timm:ghostnet_100", (3, 64, 64)),
    ("tv:shufflenet_v2_x1_0", (3, 64, 64)),
    ("yolo:yolov8n", (3, 64, 64)),
]


def price(model: torch.nn.Module, shape: tuple[int, ...], work: Path) -> list[dict[str, Any]]:
    prof = load_profile(PROFILE)
    flat = prof.model_copy(update={"alignment": {}})
    x = torch.randn(1, *shape)
    rows = []
    probe = build_resource(model, x, "macs")
    half = copy.deepcopy(model)
    zero_channels(half, probe.uniform_mask(0.5) == 0)
    # (a YOLO's deployed outputs count, as edgeslim prune and the budget take them)
    nets = {"dense": model, "half": prune_with_report(half.eval(), x, outputs=deployed_output(half)).model}
    paths = {}
    for state, net in nets.items():
        paths[state] = work / f"{state}.onnx"
        export_onnx(net, paths[state], shape, force=True, validate=False)
    for batch in (1, 32):
        for prec in ("fp16", "int8"):
            r = build_resource(model, x, "latency", profile=prof, precision=prec, batch=batch)
            r0 = build_resource(model, x, "latency", profile=flat, precision=prec, batch=batch)
            for state, k in (("dense", r.dense_k), ("half", r.counts(probe.uniform_mask(0.5)))):
                layers = r.layer_costs(k)
                conv_only = r0.layer_costs(k)[: sum(layer.kind != "bn" for layer in r.layers)]
                onnx_layers = scale_bytes(
                    onnx_cost(paths[state], multiple=prof.channel_multiple(prec)).layers, prec
                )
                flat_layers = scale_bytes(onnx_cost(paths[state]).layers, prec)
                rows.append(
                    {
                        "batch": batch,
                        "precision": prec,
                        "state": state,
                        "budget_ms": 1e3 * r.value(k),
                        "unpadded_ms": 1e3 * r0.value(k),
                        "predict_ms": 1e3 * predict_latency(onnx_layers, prof, prec, batch=batch).total_s,
                        "unpadded_predict_ms": 1e3
                        * predict_latency(flat_layers, prof, prec, batch=batch).total_s,
                        "conv_only_ms": 1e3 * predict_latency(conv_only, prof, prec, batch=batch).total_s,
                        "kernels": len(layers),
                        "onnx_kernels": len(onnx_layers),
                    }
                )
    for row in rows:
        row["budget_over_predict"] = row["budget_ms"] / row["predict_ms"]
        row["unpadded_over_predict"] = row["unpadded_ms"] / row["unpadded_predict_ms"]
        row["conv_only_over_predict"] = row["conv_only_ms"] / row["unpadded_predict_ms"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/budget_vs_predict"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    rows = []
    for name, shape in MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            for row in price(create_model(name).eval(), shape, Path(tmp)):
                rows.append({"model": name, "input": "x".join(map(str, shape)), **row})
        last = rows[-8:]
        out.print(f"{name}: budget/predict {min(r['budget_over_predict'] for r in last):.3f}-"
                  f"{max(r['budget_over_predict'] for r in last):.3f}, unpadded {min(r['unpadded_over_predict'] for r in last):.3f}-"
                  f"{max(r['unpadded_over_predict'] for r in last):.3f}, conv-only/predict "
                  f"{min(r['conv_only_over_predict'] for r in last):.3f}-{max(r['conv_only_over_predict'] for r in last):.3f}")  # fmt: skip
    summary = {}
    for key in ("budget_over_predict", "unpadded_over_predict", "conv_only_over_predict"):
        vals = [r[key] for r in rows]
        summary[key] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
    summary["kernel_counts_equal"] = sum(r["kernels"] == r["onnx_kernels"] for r in rows)
    summary["rows"] = len(rows)
    meta = {
        "profile": PROFILE,
        "torch": torch.__version__,
        "seed": 0,
        "slim": "half of every group (uniform)",
    }
    write_json(args.out.with_suffix(".json"), {"meta": meta, "summary": summary, "rows": rows})
    cols = ["model", "input", "state", "batch", "precision", "budget_ms", "predict_ms", "budget_over_predict",
            "unpadded_ms", "unpadded_predict_ms", "conv_only_ms", "conv_only_over_predict", "kernels",
            "onnx_kernels"]  # fmt: skip
    md = [
        "# A latency budget's price vs `edgeslim bench --predict` of the exported ONNX",
        "",
        f"Profile {PROFILE} (roofline predictions, not measurements; never checked on a Jetson), torch "
        f"{meta['torch']}, random weights; `half`: half of every channel group removed by surgery, then "
        "exported. Both price channel counts padded to the profile's multiple (8 for FP16, 32 for INT8); "
        "`unpadded`: both at the exported widths; `conv_only`: the unpadded budget's conv/linear kernels alone "
        "(about its scope before it priced every kernel; residual reads included), over the unpadded prediction. Produced by `python benchmarks/budget_vs_predict.py`.",
        "",
        "## Summary (ratios to bench --predict)",
        "",
        *[
            f"- {k}: "
            + (", ".join(f"{s} {v:.3f}" for s, v in val.items()) if isinstance(val, dict) else str(val))
            for k, val in summary.items()
        ],
        "",
        markdown_table(cols, [[_fmt(r[c]) for c in cols] for r in rows]),
    ]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
