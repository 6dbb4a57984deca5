"""``edgeslim prune`` (channel surgery) and ``edgeslim graph`` (print channel groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli import notice
from edgeslim.cli.common import (
    INPUT_SHAPE_DEFAULT,
    norm_options,
    num_classes_option,
    quote,
    rebuilds_line,
    trust_pickle_option,
    weights_option,
)
from edgeslim.cli.params import COUNT, FRACTION_OPEN, PRECISION, SHAPE

_CTX = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=_CTX)
@click.argument("model")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Slim checkpoint to write."
)
@click.option(
    "--round-to",
    type=COUNT,
    help="Keep channel counts multiples of N (1: off) [the --profile's alignment: 16 on host-cpu].",
)
@click.option(
    "--profile", help="Device profile whose channel alignment to keep [host-cpu: ONNX Runtime here]."
)
@click.option("--precision", type=PRECISION,
              help="Precision the alignment is for [the profile's preferred one].")  # fmt: skip
@click.option(
    "--data",
    help="Data set whose test images measure the deviation (e.g. fashion-mnist; images: any folder of "
    "photos in --data-dir) [the checkpoint's own].",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the data set lies.")
@click.option(
    "--calib",
    type=COUNT,
    default=None,
    help="Images for folding and the check [default: 256 up to 64x64, as many larger ones as hold the same pixels, at least 8].",
)
@click.option(
    "--ratio",
    type=FRACTION_OPEN,
    help="One-shot pruning first, no training: zero this fraction of the BN channels with the smallest "
    "|gamma| (whole coupled groups), then remove them; accuracy drops until fine-tuned.",
)
@click.option("--input-shape", type=SHAPE, help=f"C,H,W of one input [{INPUT_SHAPE_DEFAULT}].")
@click.option("--plot", type=click.Path(path_type=Path), help="Also write a PNG of channels per layer.")
@trust_pickle_option
@weights_option
@num_classes_option
@norm_options
@click.option("--force", is_flag=True, help="Overwrite the output file(s).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def prune(**kw: Any) -> None:
    """Remove the channels whose BN scales are exactly zero from MODEL (an edgeslim checkpoint,
    or an architecture with --weights), fold their constant outputs into the next layers, verify,
    and write the slim checkpoint.

    \b
    Examples:
      edgeslim prune runs/vgg/trained.pt -o runs/vgg/slim.pt --data fashion-mnist
      edgeslim prune tv:resnet18 --weights r18.pt --input-shape 3,224,224 -o r18_slim.pt
      edgeslim prune yolo:best.pt --trust-pickle -o best_slim.pt
      edgeslim prune timm:resnet18 --weights r18.pt --ratio 0.3 -o r18_30.pt   (one-shot, then fine-tune)
    """

    from edgeslim.pipelines.prune import PruneRequest, run
    from edgeslim.utils.console import err, out, print_json, table

    as_json = kw.pop("as_json")
    rep = run(PruneRequest(**kw))
    output, calib_desc = rep["output"], notice(rep["calibration"], prune)
    if as_json:
        print_json(rep)
        return
    changed = [r for r in rep["layers"] if r["before"] != r["after"]]
    rows = [(r["name"], r["type"], " -> ".join(map(str, r["before"])), " -> ".join(map(str, r["after"])))
            for r in changed]  # fmt: skip
    if rows:
        out.print(table("Layers changed (in -> out channels)", ["layer", "type", "before", "after"], rows))
    kept = rep["zero_kept"]
    why = [f"{n} {label}" for label, n in (("coupled with a nonzero channel", kept["coupled_with_nonzero"]),
           ("behind a barrier", kept["behind_barrier"]), ("read as input-dependent", kept["read_as_input_dependent"]),
           ("read as different constants by a layer called more than once", kept["read_as_different_constants"]))
           if n]  # fmt: skip
    zeroed = rep.get("ratio_prune")
    summary = [
        *(
            [("zeroed first (--ratio)", _ratio_line(zeroed, rep["alignment"]["round_to"]))] if zeroed else []
        ),  # fmt: skip
        (
            "channels removed (channels coupled across layers, by a residual add or a concat, count once)",
            rep["removed_channels"],
        ),
        *(
            [
                (
                    "zero-scale channels kept",
                    f"{sum(kept.values())}: {', '.join(why)} (edgeslim graph shows the couplings and barriers)",
                )
            ]
            if why
            else []
        ),  # fmt: skip
        (f"kept for alignment (multiples of {rep['alignment']['round_to']})", rep["kept_by_rounding"]),
        ("params", f"{rep['params_before']:,} -> {rep['params_after']:,}"),
        ("MACs", f"{rep['macs_before']:,} -> {rep['macs_after']:,}"),
        (
            "biases folded",
            f"{len(rep['folded_biases'])} layers "
            f"({sum(not f['exact'] for f in rep['folded_biases'])} approximate)",
        ),  # fmt: skip
        ("exact", "yes" if rep["exact"] else "no (see folded biases and the deviation)"),
        (
            "max |output diff|",
            "nothing compared (every output empty)"
            if rep.get("compared_values") == 0
            else rep["max_abs_diff"],
        ),
        (
            "top-1 agreement",
            "-"
            if rep["top1_agreement"] is None  # (no logits, or no check)
            else f"{100 * rep['top1_agreement']:.2f}%",
        ),  # fmt: skip
        ("measured on", calib_desc),
        ("barriers", len(rep["barriers"])),
    ]
    out.print(table(f"Surgery: {kw['model']} -> {output}", ["", "value"], summary))
    if rep["bn_channels"] == 0 and rep.get("other_norms"):
        frozen = "FrozenBatchNorm2d" in rep["other_norms"]  # (torchvision's frozen BN: fixed scales)
        err.print(f"the model has no BatchNorm channel to remove: it is normalized by {'/'.join(rep['other_norms'])}, "
                  f"which has no {'trainable ' if frozen else ''}per-channel BN scale to slim by (slim refuses it"
                  + ("; FrozenBatchNorm2d is a frozen BN: build the model with nn.BatchNorm2d, torchvision's "
                     "norm_layer, to slim it" if frozen else "") + "), so nothing was removed")  # fmt: skip
    elif rep["bn_channels"] == 0:
        err.print("the model has no BatchNorm channel to remove (a model whose BN layers were fused into its "
                  "convs has none: give it before fusing)")  # fmt: skip
    elif rep["zero_scale_channels"] == 0 and rep.get("random_weights"):
        err.print("no BN scale is exactly zero: nothing was removed; the model is an architecture name with "
                  "random weights: give the sparsified weights with --weights")  # fmt: skip
    elif rep["zero_scale_channels"] == 0:
        err.print("no BN scale is exactly zero: nothing was removed (sparsify it first: edgeslim slim, or "
                  "ProximalSlimming in your own training loop)")  # fmt: skip
    elif rep["removed_channels"] == 0:
        err.print("every zero-scale channel is kept (see above): nothing was removed")
    if rep.get("rebuilds_from"):
        err.print(rebuilds_line(output, rep["rebuilds_from"]), soft_wrap=True)
    trust = " --trust-pickle" if rep["loads_code"] else ""  # it rebuilds with the same outside code
    onnx_out = quote(Path(output).with_suffix(".onnx"))
    ul = (
        f" (a YOLO: add --ultralytics {quote(Path(output).with_suffix('.ul.pt'))} for a file ultralytics' YOLO() "
        "loads; this one is edgeslim's)"
        if rep.get("ultralytics")
        else ""
    )
    err.print(
        f"wrote {output}; next: edgeslim export {quote(output)}{trust} --onnx {onnx_out}{ul}", soft_wrap=True
    )


@click.command(context_settings=_CTX)
@click.argument("model")
@click.option("--input-shape", type=SHAPE, help=f"C,H,W of one input [{INPUT_SHAPE_DEFAULT}].")
@trust_pickle_option
@weights_option
@num_classes_option
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON on stdout.")
def graph(
    model: str,
    input_shape: Any,
    trust_pickle: bool,
    weights: Path | None,
    num_classes: int | None,
    as_json: bool,
) -> None:
    """Print the channel dependency groups of MODEL (a model file or an architecture name):
    what is coupled with what, and which channels are kept by barriers.

    \b
    Examples:
      edgeslim graph tv:resnet18 --input-shape 3,224,224
      edgeslim graph runs/vgg/trained.pt --json
    """

    from edgeslim.pipelines import prune as stage
    from edgeslim.utils.console import out, print_json

    g = stage.graph(model, input_shape, trust_pickle, weights, num_classes)
    d = stage.graph_summary(g)
    if as_json:
        print_json(d)
        return
    out.print(str(g), markup=False, highlight=False)
    out.print(f"MACs {d['macs']:,}  params {d['params']:,}  BN groups {len(d['bn_groups'])}", markup=False)


def _ratio_line(zeroed: dict[str, Any], round_to: int) -> str:
    """What the ``--ratio`` zeroing did: the channels it zeroed itself, apart from those already zero
    (a pruned or slimmed model's, which surgery removes too)."""
    already = zeroed.get("already_zero", 0)
    if already and not zeroed["zeroed"]:
        return (
            f"nothing: {already:,} of the {zeroed['removable']:,} removable BN channels ({zeroed['total']:,} in all) "
            f"were zero already, at or past --ratio {zeroed['ratio']:g} at multiples of {round_to} (the model was "
            "pruned before); surgery removes those zeros"
        )
    text = (
        f"{zeroed['zeroed']:,} of the {zeroed['removable']:,} removable BN channels ({zeroed['total']:,} in all), "
        f"the groups' least mean |gamma| (up to {zeroed['threshold']:.3g}), counts kept in multiples of {round_to} "
        "(--round-to)"
    )
    if already:
        text += f", beside {already:,} zero already (the model was pruned before; surgery removes those too)"
    return text + "; the deviation below is against the zeroed model"
