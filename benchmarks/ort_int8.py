"""ONNX Runtime INT8 on this CPU: the form `edgeslim export --precision int8` (without --trt) writes.

Per model: exported to ONNX (edgeslim's exporter, static batch), then quantized with ONNX
Runtime's static quantizer in the form ORT's CPU kernels take (QDQ, per-channel INT8 weights,
activations UInt8 (what export ships) or Int8, MinMax ranges from 64 CIFAR-10 JPEG images, bilinearly resized).
Every variant is timed in one process, 1 ORT thread, alternating, at batch 1: median over rounds
of the mean of ``--iters`` runs. Random weights (BN statistics randomized): the timing and size
are the point; top-1 agreement with FP32 on the 64 images is reported but means little here.

Writes ``benchmarks/results/ort_int8.{json,md}``.

    python benchmarks/ort_int8.py [--models tv:mobilenet_v3_small,tv:resnet18] [--sizes 32,224]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeslim.utils.console import out
from edgeslim.utils.io import atomic_write_text, write_json
from edgeslim.utils.markdown import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def build(name: str) -> torch.nn.Module:
    from edgeslim.models.registry import ModelSpec, create_model

    torch.manual_seed(0)
    m = create_model(ModelSpec(name, 10, 3, (224, 224))).eval()
    with torch.no_grad():
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m


def images(size: int, n: int = 64) -> np.ndarray:
    from edgeslim.export.validate import real_inputs

    batch = real_inputs((3, 32, 32), data="cifar10", data_dir=str(SHARED / "cifar10-jpeg.zip"), n=n)
    x = (
        torch.nn.functional.interpolate(batch.x, size=(size, size), mode="bilinear")
        if size != 32
        else batch.x
    )
    return x.numpy().astype(np.float32)


def quantize(src: Path, dst: Path, calib: np.ndarray, activations: str) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader:
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(calib):
                return None
            self.i += 1
            return {name: calib[self.i - 1 : self.i]}

    act = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[activations]
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)  # fmt: skip


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tv:mobilenet_v3_small,tv:mobilenet_v2,tv:resnet18")
    ap.add_argument("--sizes", default="32,224")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "ort_int8")
    args = ap.parse_args()
    from edgeslim.bench.env import cpu_model
    from edgeslim.export.onnx_export import export_onnx

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = build(name)
            for size in (int(s) for s in args.sizes.split(",")):
                x = images(size)
                fp32 = Path(tmp) / f"{name.replace(':', '_')}_{size}.onnx"
                export_onnx(model, fp32, (3, size, size), validate=False, force=True)
                paths = {"fp32": fp32}
                for act in ("u8", "s8"):
                    paths[f"int8 ({act} act.)"] = fp32.with_suffix(f".{act}.onnx")
                    quantize(fp32, paths[f"int8 ({act} act.)"], x, act)
                sessions = {k: session(p) for k, p in paths.items()}
                feed = sessions["fp32"].get_inputs()[0].name
                ref = np.concatenate(
                    [sessions["fp32"].run(None, {feed: x[i : i + 1]})[0] for i in range(len(x))]
                )
                times: dict[str, list[float]] = {k: [] for k in sessions}
                for r in range(args.rounds):
                    order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
                    for k in order:
                        s = sessions[k]
                        s.run(None, {feed: x[:1]})
                        t = time.perf_counter()
                        for i in range(args.iters):
                            s.run(None, {feed: x[i % len(x) : i % len(x) + 1]})
                        times[k].append((time.perf_counter() - t) / args.iters)
                base = statistics.median(times["fp32"])
                for k, s in sessions.items():
                    got = np.concatenate([s.run(None, {feed: x[i : i + 1]})[0] for i in range(len(x))])
                    ms = statistics.median(times[k])
                    rows.append({
                        "model": name, "input": size, "variant": k, "size_mb": os.path.getsize(paths[k]) / 1e6,
                        "ms_b1": 1000 * ms, "ms_b1_spread": [1000 * min(times[k]), 1000 * max(times[k])],
                        "speedup_vs_fp32": base / ms, "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                    })  # fmt: skip
                    out.print(f"{name} {size}px {k}: {1000 * ms:.3f} ms, {base / ms:.2f}x of fp32, "
                        f"{rows[-1]['size_mb']:.2f} MB")  # fmt: skip
    import onnxruntime

    env = {"cpu": cpu_model() or platform.machine(), "onnxruntime": onnxruntime.__version__,
           "torch": torch.__version__, "rounds": args.rounds, "iters": args.iters, "threads": 1}  # fmt: skip
    write_json(args.out.with_suffix(".json"), {"meta": env, "rows": rows})
    table = markdown_table(
        [
            "model",
            "input",
            "variant",
            "MB",
            "ms (batch 1)",
            "min-max ms",
            "speed-up vs FP32",
            "top-1 agreement",
        ],
        [
            [
                r["model"],
                r["input"],
                r["variant"],
                f"{r['size_mb']:.2f}",
                f"{r['ms_b1']:.3f}",
                f"{r['ms_b1_spread'][0]:.3f}-{r['ms_b1_spread'][1]:.3f}",
                f"{r['speedup_vs_fp32']:.2f}x",
                f"{r['top1_agreement']:.0%}",
            ]
            for r in rows
        ],  # fmt: skip
    )
    atomic_write_text(
        args.out.with_suffix(".md"),
        "# ONNX Runtime INT8 vs FP32 on this CPU (1 thread, batch 1)\n\n"
        f"Produced by `python benchmarks/ort_int8.py`; {env}. Static QDQ quantization, per-channel INT8 "
        "weights, MinMax ranges from 64 CIFAR-10 images; random weights (agreement means little); "
        "median of the rounds, alternating.\n\n" + table + "\n",
    )


if __name__ == "__main__":
    main()
