"""``edgeslim export``: ONNX checked in ONNX Runtime, alignment audit, TensorRT engine or trtexec script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli import command_line, notice
from edgeslim.cli.common import (
    INPUT_SHAPE_DEFAULT,
    norm_options,
    num_classes_option,
    quote,
    trust_pickle_option,
    weights_option,
)
from edgeslim.cli.params import COUNT, PRECISION, SHAPE, Number
from edgeslim.errors import Step


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="ONNX output [MODEL.onnx].")
@click.option(
    "--opset",
    type=Number(int, min=11, max=23),
    default=17,
    show_default=True,
    help="ONNX opset (17: TensorRT 8.5+ and ORT).",
)
@click.option(
    "--dynamic-batch",
    is_flag=True,
    help="Dynamic batch dimension: to bench or run the ONNX at batches other than 1 (and TensorRT's optimization profile).",
)
@click.option("--input-shape", type=SHAPE, help=f"C,H,W of one input [{INPUT_SHAPE_DEFAULT}].")
@click.option(
    "--batch", type=COUNT, default=1, show_default=True, help="Static batch, or the opt batch if dynamic."
)
@click.option(
    "--max-batch", type=COUNT, default=32, show_default=True, help="Max batch of the dynamic profile."
)
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim/onnxsim simplification.")
@click.option("--exporter", type=click.Choice(["auto", "torchscript", "dynamo"]), default="auto",
              show_default=True, help="torch.onnx exporter (auto: TorchScript, dynamo as fallback).")  # fmt: skip
@click.option("--no-validate", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check (not advised).")
@click.option(
    "--n-validate",
    type=COUNT,
    default=None,
    help="Images for the ORT check [default: 64 up to 64x64, as many larger ones as hold the same pixels, at least 16].",
)
@click.option(
    "--data",
    "data_name",
    help="Data set for validation/calibration [checkpoint's meta]; "
    "images: any folder of photos in --data-dir (letterboxed for YOLO, centre-cropped for its -cls models).",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the data set lies.")
@click.option("--compare-device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Also check ORT (CPU) against PyTorch on this device.")  # fmt: skip
@click.option(
    "--trt", is_flag=True, help="Build a TensorRT engine, or write a trtexec script if no tensorrt."
)
@click.option("--precision", type=PRECISION, default="fp16", show_default=True,
              help="TensorRT precision; int8 without --trt: an ONNX Runtime INT8 model (ONNX.int8.onnx, CPUs "
                   "and phones). INT8 calibrates on real images of the data set.")  # fmt: skip
@click.option("--workspace", default="1G", show_default=True, help="TensorRT workspace limit.")
@click.option(
    "--engine", "engine_path", type=click.Path(path_type=Path), help="Engine [ONNX.<precision>.engine]."
)
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="Timing cache shared by dense and slim builds [timing.cache beside the ONNX].")  # fmt: skip
@click.option(
    "--trt-version", default=None, help="TensorRT version for the trtexec script [installed, else 10]."
)
@click.option(
    "--calib-images",
    type=COUNT,
    default=None,
    help="INT8 calibration images [default: 512 up to 112x112, as many larger ones as hold the same pixels, at least 64].",
)
@click.option(
    "--ort", "to_ort", is_flag=True, help="Also write an ONNX Runtime mobile .ort file (ARM phones)."
)
@click.option(
    "--width-models",
    type=COUNT,
    metavar="MULTIPLE",
    help="Also write NAME.w50.onnx and NAME.w25.onnx: this network cut to uniform 50%/25% widths, channel "
    "counts multiples of MULTIPLE (the slim run's: 16 host-cpu, 8 FP16 TensorRT, 32 INT8); timed with "
    "bench --layer-table --width-models on the device, they calibrate its latency table.",
)
@click.option(
    "--zero-invariant",
    is_flag=True,
    help="With --width-models: cut them as a slim --zero-invariant run removes channels (also those a "
    "squeeze-excitation gate multiplies); give it for a table that such a run uses.",
)
@click.option(
    "--ultralytics",
    "ultralytics_path",
    type=click.Path(path_type=Path),
    help="Also write the YOLO as a checkpoint ultralytics loads (FP16, as its own): YOLO(PATH), "
    "yolo val/predict/export model=PATH (format=engine on a Jetson); yolo train would rebuild it dense.",
)
@trust_pickle_option
@weights_option
@num_classes_option
@norm_options
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def export(**kw: Any) -> None:
    """Export MODEL (a model file, or an architecture name for random weights) to ONNX, check it in
    ONNX Runtime on real images, audit channel alignment, and build a TensorRT engine (--trt).

    \b
    Examples:
      edgeslim export runs/vgg/model.pt --onnx runs/vgg/slim.onnx --dynamic-batch
      edgeslim export runs/vgg/model.pt --onnx slim.onnx --trt --precision fp16
      edgeslim export tv:resnet18 --weights r18.pt --input-shape 3,224,224 --onnx r18.onnx
      edgeslim export yolo:best.pt --trust-pickle --onnx best.onnx --dynamic-batch
      edgeslim export best_slim.pt --trust-pickle --ultralytics best_slim.ul.pt   # for yolo export
      edgeslim export slim.pt --trust-pickle --data images --data-dir photos --trt --precision int8
      edgeslim export runs/mnv2/model.pt --onnx slim.onnx --precision int8 --ort   # CPUs and phones
    """

    from edgeslim.export.validate import all_empty
    from edgeslim.pipelines.export import ExportRequest, run
    from edgeslim.utils.console import err, log_lines_when_piped, out, print_json, progress, table, task_steps

    req = ExportRequest(
        **{
            k: v
            for k, v in kw.items()
            if k not in ("as_json", "model", "trust_pickle", "weights", "num_classes", "mean", "std")
        }
    )
    source = click.get_current_context().get_parameter_source("precision")
    if req.precision != "int8" and not req.trt and source is not click.core.ParameterSource.DEFAULT:
        err.print(f"[yellow]note: --precision {req.precision} is the TensorRT engine's precision (with --trt); "
                  "without --trt only the ONNX is written, in FP32[/]", soft_wrap=True)  # fmt: skip
    # (a review at real resolutions: an INT8 YOLO at 640 ran 64 s without a word; a stage each, on a bar or a line)
    with progress() as bar, log_lines_when_piped():
        res = run(
            kw["model"], req, trust_pickle=kw["trust_pickle"], weights=kw["weights"], num_classes=kw["num_classes"],
            mean=kw["mean"], std=kw["std"], step=task_steps(bar, "export"),
            say=lambda m: err.print(f"[yellow]{notice(m, export)}[/]", soft_wrap=True),
        )  # fmt: skip
    if kw["as_json"]:  # (a Notice's parameters as the flags, as on the terminal and in an error's document)
        print_json({**res, "warnings": [notice(w, export) for w in res["warnings"]]})
        return
    o, v = res["onnx"], res["onnx"]["validation"]
    rows: list[list[Any]] = [["ONNX", o["path"]], ["opset / exporter", f"{o['opset']} / {o['exporter']}"],
                             ["input", "x".join(map(str, o["input_shape"]))], ["nodes / params", f"{o['nodes']:,} / {o['params']:,}"],
                             ["simplified by", o["simplifier"] or "-"]]  # fmt: skip
    for name, rep in (("ORT vs torch (cpu)", v), ("ORT vs torch (cuda)", res.get("cuda_check"))):
        if isinstance(rep, dict) and rep.get("nothing_compared"):
            rows.append([name, f"nothing compared: every output ({', '.join(rep['empty_outputs'])}) is empty, "
                               f"n={rep['n']}, {rep['source']}"])  # fmt: skip
        elif isinstance(rep, dict):
            agree = "-" if rep["top1_agreement"] is None else f"{100 * rep['top1_agreement']:.2f}%"
            rows.append(
                [
                    name,
                    f"max|diff| {_num(rep['max_abs_diff'])}"
                    + (f" of the {rep['compared']}" if rep.get("compared", "outputs") != "outputs" else "")
                    + f" (bound {rep.get('tolerance') or rep['atol']:.3g}"
                    + (
                        f" = {rep['atol']:g} + {rep['rtol']:g} x the largest "
                        + ("output" if rep.get("compared", "outputs") == "outputs" else "of them")
                        if rep.get("rtol")
                        else ""
                    )
                    + f"), top-1 agreement {agree}, n={rep['n']}, {rep['source']}",
                ]
            )
        elif isinstance(rep, str):
            rows.append([name, rep])
    for key, name in (("qdq", "INT8 Q/DQ vs FP32 (ORT)"), ("ort_int8", "INT8 (ONNX Runtime) vs FP32")):
        q = res.get(key)
        if q:
            top1 = (
                "" if q["top1_agreement"] is None else f"top-1 agreement {100 * q['top1_agreement']:.2f}%, "
            )
            of = f" of the {q['compared']}" if q.get("compared", "outputs") != "outputs" else ""
            diff = (
                f"nothing compared: {all_empty(q['empty_outputs'], str(q['check_images']) + ' held-out images')}"
                if q.get("nothing_compared")
                else f"{top1}max|diff| {_num(q['max_abs_diff'])}{of} on {q['check_images']} held-out images"
            )
            rows.append([name, f"calibrated on {q['calib_images']} images; {diff}"
                         + (f", accuracy {q['accuracy_fp32']:.4f} -> {q['accuracy_int8']:.4f}"
                            if q.get("accuracy_int8") is not None else "")])  # fmt: skip
    for key, label in (("qdq", "INT8 Q/DQ ONNX (TensorRT)"), ("calib_data", "calibration images"),
                       ("engine", "TensorRT engine"), ("trtexec_script", "trtexec script"),
                       ("ort_int8", "INT8 ONNX (ONNX Runtime)"), ("ort", "ORT mobile"),
                       ("ort_int8_mobile", "INT8 ORT mobile"), ("ultralytics", "ultralytics checkpoint")):  # fmt: skip
        val = res.get(key)
        if isinstance(val, dict) and val.get("target_platform"):  # an .ort file: what it was converted for
            val = (f"{val['path']} ({val['optimization_style']} optimizations for {val['target_platform']}, "
                   f"onnxruntime {val['onnxruntime']})")  # fmt: skip
        elif isinstance(val, dict) and key == "ultralytics":  # (its size: FP16, as ultralytics stores it)
            val = f"{val['path']} (FP16, {val['params']:,} params, {val['bytes'] / 2**20:.1f} MiB; YOLO(PATH) loads it)"
        elif isinstance(val, dict):
            val = val.get("path")
        if val:
            rows.append([label, str(val)])
    widths = res.get("width_models") or ()
    for w in widths:  # (the share of the parameters it kept: a trial read "50% width" as half the network)
        rows.append([f"uniform {w['fraction']:.0%} width",
                     f"{w['path']} ({w['params']:,} params, {w['params_kept']:.0%} of the model's)"])  # fmt: skip
    out.print(table("edgeslim export", ["", "value"], rows))
    if widths and widths[0].get("gated_kept"):  # (an SE network cut without --zero-invariant)
        shares = " / ".join(f"{w['params_kept']:.0%}" for w in widths)
        at = " / ".join(f"{w['fraction']:.0%}" for w in widths)
        out.print(
            f"the width models keep the {widths[0]['gated_kept']:,} BN channels a squeeze-excitation gate "
            f"multiplies at every width ({shares} of the parameters at {at} width), as a slim run without "
            "--zero-invariant keeps them; --zero-invariant cuts them too, for a table such a run uses",
            soft_wrap=True,
        )
    audit = res["audit"]
    bad = [r for r in audit["rows"] if r[5] != "ok" or r[6] != "ok"]
    # the command that re-runs surgery (on the model before surgery), for TensorRT only: an export for ONNX
    # Runtime (its INT8 model, an .ort) leaves it out, a CPU or phone has its own multiple (more MACs for nothing)
    for_ort = not req.trt and (req.precision == "int8" or req.to_ort)
    if bad and for_ort:  # (a phone review: "re-run surgery rounding to 32" for a model slimmed to rpi5's 8)
        out.print(
            f"for TensorRT GPUs only: {audit['counts']} (this export is for ONNX Runtime, whose CPU or phone "
            "multiple slim/prune --profile keep; the layers: in --json)",
            soft_wrap=True,
        )
    elif (
        bad and not req.trt
    ):  # (an ONNX Runtime target on a CPU or phone has its own multiple: slim --profile)
        out.print(f"for TensorRT GPUs: {audit['suggestion']} (the layers: with --trt, or in --json)")
    else:
        if bad:
            out.print(
                table(
                    "channel alignment (not a multiple of 8 / 32)",
                    ["layer", "op", "in", "out", "groups", "fp16", "int8"],
                    bad[:30],
                )
            )
            if len(bad) > 30:
                out.print(f"... and {len(bad) - 30} more (all of them in --json)")
        out.print(audit["suggestion"])
    if audit.get("round_to") and not for_ort:
        step = command_line(
            Step(
                "prune",
                model="SPARSE.pt",
                output="SLIM.pt",
                round_to=audit["round_to"],
                trust_pickle=kw["trust_pickle"],
            )
        )  # (a model of your code needs it there too)
        cut = "if surgery cut it, " if res.get("slim") is None else ""  # (a whole pickle says neither way)
        out.print(
            f"({cut}that is: {step}; SPARSE.pt: the model before surgery, a slim run's trained.pt, a YOLO slim "
            "run's train/weights/last.pt; rounding up keeps more channels: more MACs than the run's budget"
            + (
                ""
                if req.trt
                else "; for TensorRT only: a CPU or phone has its own multiple, slim's --profile"
            )
            + ")",
            soft_wrap=True,
        )
    for w in res["warnings"]:  # (a Notice names its parameters: shown as the flags)
        err.print(f"[yellow]warning:[/] {notice(w, export)}", soft_wrap=True)
    onnx_file = res["onnx"]["path"]
    # a fixed-batch file runs at its batch only; a dynamic one at 1, 32 (or its largest batch, where lower)
    # and the batch asked for (deployment's)
    top = min(32, req.max_batch)
    batches = ",".join(map(str, sorted({1, top, req.batch}))) if req.dynamic_batch else str(req.batch)
    if res.get("ort_int8"):
        step = f"edgeslim bench {quote(res['ort_int8']['path'])} --baseline {quote(onnx_file)} --batch {batches} (INT8 against FP32: bench calls the INT8 file slim)"
    elif res.get("slim") is None:  # a file that carries no recipe: slim or dense, unknown here
        step = (f"edgeslim bench SLIM.onnx --baseline DENSE.onnx --batch {batches} ({quote(onnx_file)} is one of "
                "them)")  # fmt: skip
    elif res.get("slim"):
        step = (f"edgeslim bench {quote(onnx_file)} --baseline DENSE.onnx --batch {batches} (DENSE: the export of the "
                "network it was slimmed from)")  # fmt: skip
    else:
        step = (f"edgeslim bench SLIM.onnx --baseline {quote(onnx_file)} --batch {batches} (SLIM: the export of a slimmed "
                "copy of this network)")  # fmt: skip
    written = [str(onnx_file)]  # (a phone review: the .ort files and their operator configs went unnamed)
    for key in ("qdq", "calib_data", "engine", "trtexec_script", "ort_int8", "ort", "ort_int8_mobile",
                "ultralytics"):  # fmt: skip
        val = res.get(key)
        paths = [val.get("path"), val.get("config")] if isinstance(val, dict) else [val]
        written += [str(p) for p in paths if p and str(p) not in written]
    err.print(f"wrote {', '.join(written)}; next: {step}", soft_wrap=True)  # a command to copy: not wrapped
    if res.get("ultralytics"):
        ul, (_, _, h, w) = quote(res["ultralytics"]["path"]), res["onnx"]["input_shape"]
        size = f" imgsz={h}" if h == w else ""  # (ultralytics' CLI takes one side)
        # (a classifier's val reads an image folder, no data yaml)
        cls = res["ultralytics"].get("task") == "classify"
        data = (
            f"IMAGE_DIR{size} (IMAGE_DIR: train/ and val/ folders of class folders)"
            if cls
            else f"DATA.yaml{size}"
        )
        err.print(f"{ul} is for ultralytics' val, predict and export: yolo val model={ul} data={data}; on the "
                  f"Jetson: yolo export model={ul} format=engine half=True{size}; not for yolo train, which "
                  "rebuilds the dense network from its yaml (to fine-tune: docs/export.md)",
                  soft_wrap=True)  # fmt: skip
    if res.get("width_models"):
        files = ",".join(quote(w["path"]) for w in res["width_models"])
        err.print(f"on the device, its latency table with the width models: edgeslim bench {quote(onnx_file)} "
                  f"--layer-table T.json --batch {req.batch} --threads 1 --width-models {files} (--threads: the "
                  "threads the model will run on there; the latency check times with the table's)",
                  soft_wrap=True)  # fmt: skip


def _num(v: float | str) -> str:
    """A report's number as the table shows it (an infinite one is the word ``inf`` already)."""
    return v if isinstance(v, str) else f"{v:.3g}"
