"""Slim vs dense Fashion-MNIST network on this CPU with ONNX Runtime: the issue-6 acceptance run.

Exports both checkpoints to ONNX (edgeslim.export, dynamic batch, checked against PyTorch), then
benches them with edgeslim's interleaved method (fresh process per trial, alternating order) at
batch 1 and 32, and reports the speedup with its bootstrap interval and the ratio of the measured
speedup to the MACs ratio (target >= 0.8). Writes JSON + Markdown + PNG to
benchmarks/results/ort_slim_vs_dense/.

    .venv/bin/python benchmarks/ort_slim_vs_dense.py            # the slimming benchmark's pair
    .venv/bin/python benchmarks/ort_slim_vs_dense.py --dev      # vgg-small vs a hand-thinned copy

The development host is a shared 2-vCPU VM: measurement processes run under nice, with one
ORT thread; read the CV and the trial spread before quoting a number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DENSE = RESULTS / "fmnist_dense" / "model.pt"
SLIM = RESULTS / "fmnist_slim" / "model.pt"
TARGET = 0.8


def pad_channels(model, multiple: int):
    """Zero-pad every conv's output channels (and the consumers' inputs) to a multiple of ``multiple``.

    For the conv-BN-ReLU(-pool) chains of edgeslim's VGG and a final Linear: a padded channel has
    zero weights, BN scale/shift 0, mean 0, var 1, so it outputs exactly 0 and the network computes
    the same function; only the channel counts change (what ``round_to`` in surgery would give).
    """
    import torch
    from torch import nn

    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    extra_in = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                cout = up(m.out_channels)
                w = torch.zeros(cout, m.in_channels + extra_in, *m.kernel_size)
                w[: m.out_channels, : m.in_channels] = m.weight
                m.weight = nn.Parameter(w)
                if m.bias is not None:
                    m.bias = nn.Parameter(torch.cat([m.bias, torch.zeros(cout - m.out_channels)]))
                extra_in = cout - m.out_channels
                m.in_channels, m.out_channels = m.in_channels + (w.shape[1] - m.in_channels), cout
            elif isinstance(m, nn.BatchNorm2d) and extra_in:
                pad = extra_in
                m.weight = nn.Parameter(torch.cat([m.weight, torch.zeros(pad)]))
                m.bias = nn.Parameter(torch.cat([m.bias, torch.zeros(pad)]))
                m.running_mean = torch.cat([m.running_mean, torch.zeros(pad)])
                m.running_var = torch.cat([m.running_var, torch.ones(pad)])
                m.num_features += pad
            elif isinstance(m, nn.Linear) and extra_in:
                w = torch.zeros(m.out_features, m.in_features + extra_in)
                w[:, : m.in_features] = m.weight
                m.weight = nn.Parameter(w)
                m.in_features += extra_in
                extra_in = 0
    return model


def export_pair(dev: bool, dense: Path, slim: Path, tmp: Path, align: int = 0) -> tuple[dict[str, str], str]:
    from edgeslim.export import export_loaded, export_onnx

    out = {"baseline": str(tmp / "dense.onnx"), "slim": str(tmp / "slim.onnx")}
    if dev:
        from edgeslim.models.vgg import CFGS, VGG

        thin = [v if v == "M" else int(v) // 2 for v in CFGS["vgg-small"]]
        for label, cfg in (("baseline", CFGS["vgg-small"]), ("slim", thin)):
            model = VGG(cfg, num_classes=10, in_channels=1)
            export_onnx(model, out[label], (1, 28, 28), dynamic_batch=True, force=True, arch="vgg")
        return out, "development pair: vgg-small (random weights) vs the same with half the channels"
    from edgeslim.checkpoint import load_model

    what = f"slimming benchmark pair: {dense.relative_to(ROOT)} vs {slim.relative_to(ROOT)}"
    for label, path in (("baseline", dense), ("slim", slim)):
        if not path.is_file():
            sys.exit(f"{path} is missing: run the slimming benchmark first, or pass --dev")
        loaded = load_model(path)
        if label == "slim" and align > 1:
            import copy

            import torch

            before = [m.out_channels for m in loaded.model.modules() if hasattr(m, "out_channels")]
            ref, x = copy.deepcopy(loaded.model).eval(), torch.randn(8, *loaded.spec.input_shape)
            pad_channels(loaded.model.eval(), align)
            with torch.no_grad():
                diff = float((ref(x) - loaded.model(x)).abs().max())
            if diff > 1e-4:
                sys.exit(f"channel padding changed the outputs (max diff {diff}); not benchmarking")
            after = [m.out_channels for m in loaded.model.modules() if hasattr(m, "out_channels")]
            what += f"; slim conv channels {before} zero-padded to multiples of {align}: {after} (max diff {diff:.1e})"
        export_loaded(loaded, out[label], dynamic_batch=True, force=True, validate=False)
    return out, what


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", action="store_true", help="bench two zoo models instead of the checkpoints")
    ap.add_argument("--dense", type=Path, default=DENSE)
    ap.add_argument("--slim", type=Path, default=SLIM)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument(
        "--align", type=int, default=0, help="zero-pad the slim model's channels to a multiple of N"
    )
    ap.add_argument("--out", type=Path, help="default: results/ort_slim_vs_dense (or ..._dev with --dev)")
    args = ap.parse_args()

    from edgeslim.bench.compare import run_comparison
    from edgeslim.bench.report import LATENCY_COLS, add_predictions, latency_rows, speedup_rows, write_outputs
    from edgeslim.bench.timing import TimingConfig
    from edgeslim.channels.devices import load_profile

    batches = [int(b) for b in args.batch.split(",")]
    name = (
        "ort_slim_vs_dense" + ("_dev" if args.dev else "") + (f"_align{args.align}" if args.align > 1 else "")
    )
    out_dir = args.out or RESULTS / name
    with tempfile.TemporaryDirectory(prefix="edgeslim-bench-") as tmp:
        models, what = export_pair(args.dev, args.dense, args.slim, Path(tmp), args.align)
        timing = TimingConfig(
            warmup_s=0.5, warmup_iters=20, min_iters=200, min_time_s=args.min_time, max_iters=3000
        )

        def step(t, label, res):
            print(f"trial {t + 1}/{args.trials} {label}: done (pid {res['pid']})", file=sys.stderr)

        record = run_comparison(
            models, "onnxruntime", batches, args.trials, timing, {"threads": 1, "graph_opt": "all"},
            tegrastats=False, nice=args.nice, layer_times=True, on_trial=step,
        )  # fmt: skip
    record["description"] = what
    for label in record["models"]:  # the ONNX files were temporary; keep their names only
        record["models"][label]["path"] = Path(record["models"][label]["path"]).name
    add_predictions(record, load_profile("host-cpu"))
    ratio = record.get("speedup_over_macs_ratio", {})
    record["target"] = {
        "speedup_over_macs_ratio_min": TARGET,
        "met": {b: r >= TARGET for b, r in ratio.items()},
    }
    written = write_outputs(record, out_dir, force=True)
    print(what)
    print("  ".join(LATENCY_COLS))
    for r in latency_rows(record):
        print("  ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
    print(f"MACs ratio (dense/slim): {record.get('macs_ratio', float('nan')):.3f}")
    for b, sp, ci, spread, _, eff in speedup_rows(record):
        ok = "meets" if eff is not None and eff >= TARGET else "MISSES"
        print(
            f"batch {b}: speedup {sp:.3f} {ci} (trial spread {spread}); speedup/MACs ratio {eff:.3f} {ok} >= {TARGET}"
        )
    print("wrote", ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
