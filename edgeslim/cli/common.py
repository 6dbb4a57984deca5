"""Helpers shared by the CLI commands: shared options (model loading lives in pipelines.source).

Top-level imports stay light (click, edgeslim.errors/utils); torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgeslim.cli.params import COUNT, IMAGE_SIZE, NONNEG, POSITIVE, SEED, NumberList
from edgeslim.pipelines.source import (  # noqa: F401 - the commands take them from here
    check_finite_weights,
    load_model_or_arch,
    model_input_shape,
    spec_for_pickle,
)
from edgeslim.utils.parsing import quote  # noqa: F401 - the commands take it from here

F = TypeVar("F", bound=Callable[..., Any])


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator (listed in ``--help`` in the order given)."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


#: --data, --data-dir, --subset, --test-subset, --cache-dir (``None`` when not given)
data_options = options(
    click.option(
        "--data", "data_name", help="Data set: fashion-mnist, cifar10, cifar100, svhn, digits, imagefolder."
    ),
    click.option(
        "--data-dir", type=click.Path(path_type=Path), help="Where the data set lies (a directory or a .zip)."
    ),
    click.option("--subset", type=COUNT, help="Train on N images only (class-balanced, deterministic)."),
    click.option("--test-subset", type=COUNT, help="Evaluate on N test images only."),
    click.option(
        "--image-size",
        type=IMAGE_SIZE,
        help="imagefolder: train at H,W (or S: S x S) [the most common size of the training images].",
    ),  # fmt: skip
    click.option(
        "--cache-dir", type=click.Path(path_type=Path), help="Decoded-data cache (default ~/.cache/edgeslim)."
    ),
)

#: training hyper-parameters shared by ``train`` and ``slim`` (``None`` = TrainConfig's default)
train_options = options(
    click.option("--epochs", type=COUNT, help="Training epochs [10]."),
    click.option("--batch-size", type=COUNT, help="Batch size per process [128]."),
    click.option("--lr", type=POSITIVE, help="Peak learning rate [0.1]."),
    click.option("--weight-decay", type=NONNEG, help="Weight decay [5e-4]."),
    click.option(
        "--schedule", type=click.Choice(["cosine", "step", "constant"]), help="LR schedule [cosine]."
    ),
    click.option("--warmup-epochs", type=NONNEG, help="Linear warm-up length in epochs [0]."),
    click.option("--seed", type=SEED, help="Random seed [0]."),
    click.option(
        "--threads",
        type=COUNT,
        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine).",
    ),
)


#: --trust-pickle, the one switch for files that can run code when loaded (docs/security.md)
trust_pickle_option = click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow model files that can run code when loaded: whole pickles, ultralytics checkpoints "
    "(yolo:best.pt), TorchScript, torch.export programs, TensorRT engines (docs/security.md).",
)


#: --num-classes N: the classes of an architecture built by name (info, graph, prune, export)
num_classes_option = click.option(
    "--num-classes",
    type=COUNT,
    help="Classes of an architecture built by name [the architecture's own: a yolo: yaml's nc, else 10; "
    "for info, the --data set's]; with --weights, the count they were trained for.",
)

#: --input-shape default, said once for the commands that build architectures by name
INPUT_SHAPE_DEFAULT = (
    "from the checkpoint's spec; for a name the architecture's default: 3,640,640 for yolo:, 3,224,224 for "
    "a tv: segmenter, else 3,32,32; "
    "required for your own code (module:Factory) and pickle: names"
)

#: --weights FILE: a state_dict (or a training checkpoint holding one) for an architecture name
weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="Weights for an architecture name: a state_dict, or a checkpoint dict holding one "
    "(state_dict/model/...; 'module.' prefixes are removed).",
)


def norm_options(f: Any) -> Any:
    """--mean / --std: the per-channel normalization a model's input takes (for one that records
    none: your own code, a pickle; or to correct it): what images are fed with for the ORT check,
    INT8, prune's calibration and slim's training, and what the ONNX metadata says."""
    f = click.option(
        "--std",
        type=NumberList(POSITIVE),
        help="Per-channel std of the model's input, e.g. 0.229,0.224,0.225.",
    )(f)
    return click.option(
        "--mean",
        type=NumberList(NONNEG),
        help="Per-channel mean of the model's input (pixels / 255), e.g. "
        "0.485,0.456,0.406 [what the model records, else the data's own statistics (prune/export: with a "
        "warning)].",
    )(f)


def rebuilds_line(checkpoint: Any, source: str) -> str:
    """The note for a checkpoint that rebuilds its architecture from a file outside the package."""
    return (
        f"{checkpoint} rebuilds its architecture from {source}: keep that file at that path, on the device too "
        "(or export the ONNX here and copy that)"
    )
