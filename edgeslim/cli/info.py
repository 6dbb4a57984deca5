"""``edgeslim info``: parameters, MACs (total and per layer) and BN scale statistics of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli.common import INPUT_SHAPE_DEFAULT, num_classes_option, trust_pickle_option, weights_option
from edgeslim.cli.params import SHAPE
from edgeslim.errors import EdgeslimError
from edgeslim.pipelines.info import info as gather
from edgeslim.pipelines.info import resolve

__all__ = ["gather", "info", "resolve"]  # gather/resolve: kept importable from here

#: --list-models prints a family's names in full up to this many (a sample of larger ones)
LISTED_IN_FULL = 120
FAMILY_TITLES = {"tv": "torchvision", "timm": "timm", "yolo": "ultralytics YOLO"}
#: checkpoint meta shown in the text summary: (key, label, format)
RECORDED_ROWS = (
    ("data", "trained on", str),  # ("images": checked on, :func:`_data_row`)
    ("method", "method", str),
    ("stage", "stage", str),
    ("accuracy", "test accuracy (recorded)", lambda v: f"{100 * float(v):.2f}%"),  # a slim run's
    ("test_acc", "test accuracy (last epoch)", lambda v: f"{100 * float(v):.2f}%"),  # a training checkpoint's
)
#: the names shown of a family too large to list (those it has), edge CNNs first
FAMILY_SAMPLES = {"timm": ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_large_100", "mobilenetv4_conv_small",
                           "regnety_008", "ghostnet_100", "rexnet_100", "cspdarknet53", "repvgg_a0", "mobilevit_xs",
                           "convnext_atto"]}  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target", metavar="MODEL_OR_ARCH", required=False)
@click.option(
    "--data", "data_name", help="Data set whose input shape and classes to use (e.g. fashion-mnist)."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder or .zip of --data imagefolder (its size and classes).",
)
@click.option("--input-shape", type=SHAPE, help=f"Input C,H,W [from --data; {INPUT_SHAPE_DEFAULT}].")
@num_classes_option
@click.option("--layers", is_flag=True, help="Also show every layer: params, MACs, channels, output shape.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON on stdout.")
@click.option("--list-models", is_flag=True, help="List every architecture name and exit.")
@trust_pickle_option
@weights_option
@click.option(
    "--counter", type=click.Choice(["auto", "fvcore", "flop_counter"]), default="auto", show_default=True,
    help="MAC counter: fvcore, or torch.utils.flop_counter.",
)  # fmt: skip
def info(
    target,
    data_name,
    data_dir,
    input_shape,
    num_classes,
    layers,
    as_json,
    list_models,
    trust_pickle,
    counter,
    weights,
) -> None:
    """Show parameters, MACs and BN scale statistics of MODEL_OR_ARCH.

    MODEL_OR_ARCH is a model file (edgeslim checkpoint; with --trust-pickle also a whole pickled
    module, TorchScript or torch.export .pt2, an ultralytics best.pt) or an architecture name such as
    vgg-small, resnet56, tv:resnet18, yolo:yolov8n, yolo:best.pt (with --trust-pickle) or
    package.module:Factory for your own code (with --weights for its weights).

    \b
    Examples:
      edgeslim info vgg-small --data fashion-mnist --layers
      edgeslim info tv:resnet18 --weights resnet18_state_dict.pt --input-shape 3,224,224
      edgeslim info runs/demo/model.pt --json
      edgeslim info yolo:runs/detect/train/weights/best.pt --trust-pickle
    """
    import json

    from edgeslim.utils.console import human, out, table
    from edgeslim.utils.io import to_jsonable

    if list_models:
        from edgeslim.models import list_models as names

        all_names = names()
        if as_json:
            click.echo(json.dumps(all_names))
        else:
            zoo = [n for n in all_names if ":" not in n]
            out.print(table("edgeslim zoo", ["architecture"], [[n] for n in zoo]))
            families: dict[str, list[str]] = {}
            for n in all_names:
                if ":" in n:
                    families.setdefault(n.split(":", 1)[0], []).append(n)
            for prefix, members in families.items():  # (timm's 1,000+ names: a sample; all in --json)
                sample = [f"{prefix}:{n}" for n in FAMILY_SAMPLES.get(prefix, [])]
                shown = (
                    members
                    if len(members) <= LISTED_IN_FULL
                    else [n for n in sample if n in members] or members[:12]
                )
                more = "" if shown is members else f", ... (all {len(members)} with --json)"
                out.print(f"{FAMILY_TITLES.get(prefix, prefix)} ({len(members)}): " + ", ".join(shown) + more)
        return
    if not target:
        raise EdgeslimError("give a model file or an architecture name (or --list-models)")
    res = gather(target, data_name, input_shape, num_classes, trust_pickle, counter, weights, data_dir)
    if as_json:
        click.echo(json.dumps(to_jsonable(res), indent=2))
        return
    bn = res["bn"]
    rows: list[list[Any]] = [["model", res["model"]], ["kind", res["kind"]]]
    rows += [[k, res[k]] for k in ("arch", "pruned") if k in res]
    # what a checkpoint records of its run (every scalar of its meta is in --json)
    recorded = {**{k: v for k, v in (res.get("metrics") or {}).items() if k == "test_acc"}, **res}
    rows += [_data_row(recorded) if k == "data" else [label, fmt(recorded[k])] for k, label, fmt in RECORDED_ROWS
             if isinstance(recorded.get(k), (int, float, str))]  # fmt: skip
    if "mean" in res and "std" in res:  # (the device's preprocessing)
        from edgeslim.data.bundle import normalization_text

        rows.append(["input normalization", normalization_text(res["mean"], res["std"])])
    if "names" in res:  # an ultralytics model
        names = list(res["names"].values())
        shown = ", ".join(map(str, names[:8])) + (", ..." if len(names) > 8 else "")
        # (a one-class model's class is often named "0": read as zero classes without the count)
        rows += [["task", res["task"]], ["classes", f"{len(names)}: {shown}"]]
    rows += [
        ["input (C,H,W)", ",".join(map(str, res["input_shape"]))],
        ["parameters", f"{res['params']:,} ({human(res['params'])})"],
        ["MACs", f"{res['macs']:,} ({human(res['macs'])})"],
        ["BN layers / channels", f"{len(bn['layers'])} / {bn['channels']:,}"],
        ["BN scales exactly zero", f"{bn['zeros']:,} ({100 * bn['zero_fraction']:.1f}%)"],
    ]
    if bn["channels"]:
        rows.append(
            [
                "|gamma| min / median / max",
                f"{bn['abs_min']:.3g} / {bn['abs_median']:.3g} / {bn['abs_max']:.3g}",
            ]
        )
    out.print(table(f"edgeslim info ({res['counter']})", ["", "value"], rows))
    if layers:
        lrows = [[r["name"], r["type"], r["params"], r["macs"], r["in_channels"], r["out_channels"],
                  "x".join(map(str, r["output_shape"] or []))] for r in res["layers"]]  # fmt: skip
        out.print(table("layers", ["layer", "type", "params", "MACs", "in", "out", "output"], lrows))
        brows = [[b["name"], b["channels"], b["zeros"], b["abs_min"], b["abs_median"], b["abs_max"]]
                 for b in bn["layers"]]  # fmt: skip
        out.print(table("BN scales |gamma|", ["layer", "channels", "zeros", "min", "median", "max"], brows))


def _data_row(recorded: dict[str, Any]) -> list[Any]:
    """The row of the data set a checkpoint records: ``images`` (a photo folder) is only ever checked and
    calibrated on, never trained on (prune's --data images, a YOLO slim run's validation photos)."""
    from edgeslim.data.imagefolder import IMAGES

    if recorded["data"] == IMAGES:
        where = recorded.get("data_dir")
        return ["checked on", f"images ({where})" if isinstance(where, str) else "images"]
    return ["trained on", str(recorded["data"])]
