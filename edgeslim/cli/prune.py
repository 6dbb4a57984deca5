"""``edgeslim prune`` (channel surgery) and ``edgeslim graph`` (print channel groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeslim.cli.common import trust_pickle_option, weights_option
from edgeslim.cli.params import COUNT, SHAPE
from edgeslim.errors import EdgeslimError

_CTX = {"help_option_names": ["-h", "--help"]}


def _load_traceable(model: str, trust_pickle: bool, input_shape: Any, weights: Path | None = None) -> Any:
    from edgeslim.cli.common import load_model_or_arch, spec_for_pickle

    loaded = load_model_or_arch(model, trust_pickle=trust_pickle, input_shape=input_shape, weights=weights)
    if loaded.kind in ("torchscript", "exported"):
        raise EdgeslimError(
            f"{model} is a {loaded.kind} program; surgery needs the Python model: give the edgeslim "
            "checkpoint it was made from, or the architecture with --weights"
        )
    if loaded.kind == "pickle" and input_shape is not None:
        loaded.spec = spec_for_pickle(loaded, input_shape)
    return loaded


def _calib(data: str | None, data_dir: Path | None, n: int, shape: tuple[int, ...]) -> tuple[Any, str]:
    import torch

    if data is None:
        gen = torch.Generator().manual_seed(0)
        return [
            torch.randn((min(n, 32), *shape), generator=gen)
        ], "random normal inputs (pass --data for real images)"
    from edgeslim.data.datasets import load_dataset

    bundle = load_dataset(data, data_dir=data_dir, subset=1, test_subset=n)
    if tuple(bundle.input_shape) != tuple(shape):
        raise EdgeslimError(f"data set {data} has images {bundle.input_shape}, the model expects {shape}")
    x = bundle.normalize(bundle.test_x)
    return list(x.split(64)), f"{len(x)} test images of {bundle.name}"


@click.command(context_settings=_CTX)
@click.argument("model")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Slim checkpoint to write."
)
@click.option("--round-to", type=COUNT, default=1, show_default=True,
              help="Keep channel counts multiples of N (8: FP16 tensor cores; 4 or 8 on ARM).")  # fmt: skip
@click.option("--data", help="Data set whose test images measure the deviation (e.g. fashion-mnist).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the data set lies.")
@click.option("--calib", type=COUNT, default=256, show_default=True, help="Images for folding and the check.")
@click.option("--input-shape", type=SHAPE, help="C,H,W of one input [from the checkpoint's spec].")
@click.option("--plot", type=click.Path(path_type=Path), help="Also write a PNG of channels per layer.")
@trust_pickle_option
@weights_option
@click.option("--force", is_flag=True, help="Overwrite the output file(s).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def prune(**kw: Any) -> None:
    """Remove the channels whose BN scales are exactly zero from MODEL (an edgeslim checkpoint,
    or an architecture with --weights), fold their constant outputs into the next layers, verify,
    and write the slim checkpoint.

    \b
    Examples:
      edgeslim prune runs/vgg/trained.pt -o runs/vgg/slim16.pt --round-to 16 --data fashion-mnist
      edgeslim prune tv:resnet18 --weights r18.pt --input-shape 3,224,224 -o r18_slim.pt
    """
    import json

    import torch

    from edgeslim.checkpoint import save_model
    from edgeslim.cli.common import check_finite_weights, model_input_shape
    from edgeslim.surgery import compose_recipes, prune_with_report
    from edgeslim.utils.console import err, out, table
    from edgeslim.utils.io import check_output_path, to_jsonable

    output = check_output_path(kw["output"], kw["force"])
    plot = check_output_path(kw["plot"], kw["force"]) if kw["plot"] else None
    loaded = _load_traceable(kw["model"], kw["trust_pickle"], kw["input_shape"], kw["weights"])
    check_finite_weights(loaded)
    if loaded.spec is None:
        raise EdgeslimError(
            f"{kw['model']} has no architecture spec, so the slim model cannot be saved as a checkpoint; "
            "for a whole pickled module pass --input-shape C,H,W, else give the architecture with --weights"
        )
    shape = model_input_shape(loaded, kw["input_shape"])
    calib, calib_desc = _calib(kw["data"], kw["data_dir"], kw["calib"], shape)
    example = torch.zeros((1, *shape))
    res = prune_with_report(loaded.model, example, round_to=kw["round_to"], calib_inputs=calib)
    rep = res.report
    rep["calibration"] = calib_desc
    recipe = compose_recipes(loaded.recipe, res.recipe)
    meta = {**loaded.meta, "surgery": {k: rep[k] for k in ("removed_channels", "params_before", "params_after",
                                                            "macs_before", "macs_after", "max_abs_diff")}}  # fmt: skip
    save_model(output, res.model, loaded.spec, recipe=recipe, meta=meta)
    rep["output"] = str(output)
    if plot is not None:
        from edgeslim.surgery.plot import plot_channels

        rep["plot"] = str(plot_channels(rep, plot))
    if kw["as_json"]:
        out.print_json(json.dumps(to_jsonable(rep)))
        return
    changed = [r for r in rep["layers"] if r["before"] != r["after"]]
    rows = [(r["name"], r["type"], " -> ".join(map(str, r["before"])), " -> ".join(map(str, r["after"])))
            for r in changed]  # fmt: skip
    if rows:
        out.print(table("Layers changed (in -> out channels)", ["layer", "type", "before", "after"], rows))
    summary = [
        ("channels removed", rep["removed_channels"]),
        ("kept by --round-to", rep["kept_by_rounding"]),
        ("params", f"{rep['params_before']:,} -> {rep['params_after']:,}"),
        ("MACs", f"{rep['macs_before']:,} -> {rep['macs_after']:,}"),
        (
            "biases folded",
            f"{len(rep['folded_biases'])} layers "
            f"({sum(not f['exact'] for f in rep['folded_biases'])} approximate)",
        ),  # fmt: skip
        ("exact by construction", "yes" if rep["exact"] else "no (see folded biases)"),
        ("max |output diff|", rep["max_abs_diff"]),
        ("top-1 agreement", rep["top1_agreement"]),
        ("measured on", calib_desc),
        ("barriers", len(rep["barriers"])),
    ]
    out.print(table(f"Surgery: {kw['model']} -> {output}", ["", "value"], summary))
    if rep["removed_channels"] == 0:
        err.print("no BN scale is exactly zero: nothing was removed (train with proximal slimming first)")
    err.print(f"wrote {output}; next: edgeslim export {output} --onnx {Path(output).with_suffix('.onnx')}")


@click.command(context_settings=_CTX)
@click.argument("model")
@click.option("--input-shape", type=SHAPE, help="C,H,W of one input [from the checkpoint's spec].")
@trust_pickle_option
@weights_option
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON on stdout.")
def graph(model: str, input_shape: Any, trust_pickle: bool, weights: Path | None, as_json: bool) -> None:
    """Print the channel dependency groups of MODEL (a model file or an architecture name):
    what is coupled with what, and which channels are kept by barriers.

    \b
    Examples:
      edgeslim graph tv:resnet18 --input-shape 3,224,224
      edgeslim graph runs/vgg/trained.pt --json
    """
    import json

    import torch

    from edgeslim.cli.common import model_input_shape
    from edgeslim.surgery import build_graph
    from edgeslim.utils.console import out

    loaded = _load_traceable(model, trust_pickle, input_shape, weights)
    shape = model_input_shape(loaded, input_shape)
    g = build_graph(loaded.model, torch.zeros((1, *shape)))
    if as_json:
        d = g.to_dict()
        d["bn_groups"] = [{"group": b.group_index, "size": b.size} for b in g.bn_groups()]
        d["macs"], d["params"] = g.macs(), g.params()
        out.print_json(json.dumps(d))
        return
    out.print(str(g), markup=False, highlight=False)
    out.print(f"MACs {g.macs():,}  params {g.params():,}  BN groups {len(g.bn_groups())}", markup=False)
