"""Check an ONNX model in ONNX Runtime against the PyTorch model it came from.

Inputs are real images from the model's data set when one is known (``meta["data"]`` in a
checkpoint, or ``--data``), else seeded random normal tensors (the report says which).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeslim.errors import EdgeslimError, first_line, require
from edgeslim.utils.io import nonfinite_as_words
from edgeslim.utils.scores import (
    POSTPROCESSED,
    abs_differences,
    classifier_logits,
    finite_abs_max,
    postprocessed_detections,
    score_tensors,
    top1_accuracy,
    top1_agreement,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: the tensors to export of a detector whose outputs are post-processed detections
BEFORE_POSTPROCESSING = (
    "the tensors before the postprocessing (a module that returns the backbone's or the head's tensors)"
)
#: how to check the export of a detector whose outputs are post-processed detections
DETECTION_EXPORT_CHECK = f"check the export of {BEFORE_POSTPROCESSING}, or skip this check (validate=False)"
#: ... and its INT8 export (the INT8 check is not skipped)
DETECTION_INT8_CHECK = f"quantize {BEFORE_POSTPROCESSING} instead"

#: FP32 tolerance of the ONNX Runtime check: max abs difference <= FP32_ATOL + FP32_RTOL * max |output|
#: (numpy.allclose's form: float32 rounding grows with the size of the outputs, e.g. logits of 50)
FP32_ATOL = 1e-4
FP32_RTOL = 1e-5
#: relative tolerance for classifier logits when every top-1 on real images agrees: float32 rounding
#: of very large logits (a network run at another resolution than it was trained at reached 7e5 with
#: a correct export off by 3e-5 of that) is not an export error when every prediction is the same
AGREEING_LOGITS_RTOL = 1e-4
#: training images whose statistics normalize a data set computed from its images (an image folder) for
#: a model that records no mean/std: export's default calib_images up to 112x112, so INT8 calibration reads the same ones
STATS_IMAGES = 512
#: images a check runs at once (PyTorch and a dynamic-batch ONNX alike: a 0-d output is one value a chunk)
CHECK_CHUNK = 64


#: the seed that chooses a check's class-balanced images (``load_dataset``'s, as ``test_subset`` chooses them)
CHECK_SEED = 0


def counted(origin: str, n: int, chosen: str, of: int | None = None) -> str:
    """A batch's source: where its images come from, how many and how they were chosen
    (``fashion-mnist test, 64 class-balanced (seed 0)``; ``of``: the first ``n`` of that many)."""
    return f"{origin}, {n}{f' of {of}' if of is not None and of != n else ''} {chosen}"


@dataclass
class InputBatch:
    """Validation inputs: normalized float32 ``[N,C,H,W]`` plus where they came from."""

    x: torch.Tensor
    labels: torch.Tensor | None
    source: str  # e.g. "fashion-mnist test, 64 class-balanced (seed 0)" or "random normal (seed 0)"
    real: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: mean/std estimated from these images (the model records none): not the model's own
    estimated: bool = False
    #: the classes of the labelled data set the images come from (None: unlabelled or random)
    classes: int | None = None
    #: warnings about reading the images (some could not be decoded), for the report of what used them
    notes: tuple[str, ...] = ()
    #: where the images come from, without their count (``cifar10 test``); empty: ``source`` says it all
    origin: str = ""
    #: how they were chosen, said after their count (``class-balanced (seed 0)``)
    chosen: str = ""

    @property
    def base_source(self) -> str:
        """The source without its count (``cifar10 test``)."""
        return self.origin or self.source

    def first(self, n: int) -> InputBatch:
        """The first ``n`` inputs (and labels), the source saying how many
        (``cifar10 test, 20 of 84 class-balanced (seed 0)``)."""
        k = min(n, len(self.x))
        if k == len(self.x):
            return self
        labels = self.labels[:k] if self.labels is not None else None
        source = counted(self.origin, k, self.chosen, of=len(self.x)) if self.origin else self.source
        return replace(self, x=self.x[:k], labels=labels, source=source)


@dataclass
class ValidationReport:
    """Numbers of one ONNX Runtime vs PyTorch comparison."""

    source: str
    real_data: bool
    n: int
    provider: str
    reference_device: str
    max_abs_diff: float | None  # (None: nothing compared, every output empty)
    mean_abs_diff: float | None
    top1_agreement: float | None  # fraction of images whose argmax agrees (None for non-logit outputs)
    accuracy_torch: float | None
    accuracy_onnx: float | None
    atol: float
    passed: bool
    rtol: float = 0.0
    #: the bound max_abs_diff was held to: atol + rtol * max |reference output|
    tolerance: float = 0.0
    #: set when the float32 comparison failed and was judged against float64: the distances of
    #: PyTorch's float32 output and of ONNX Runtime's from the model run in float64
    float64_torch_error: float | None = None
    float64_onnx_error: float | None = None
    #: ... and the bound ONNX Runtime's distance was held to
    float64_bound: float | None = None
    #: what the differences are of: the ``outputs``, or a softmax's ``log-probabilities``
    compared: str = "outputs"
    #: PyTorch gave another result for the same inputs on a second run: the forward draws random
    #: numbers (a dropout left on), which no export reproduces (set when a comparison failed)
    random_forward: bool = False
    #: the outputs (ONNX names) that held no value on these inputs (a detector that found nothing)
    empty_outputs: list[str] = field(default_factory=list)
    #: every output was empty: nothing was compared, which is no pass (``passed`` False; no failure)
    nothing_compared: bool = False
    #: the outputs are a torchvision detector's post-processed detections, compared in order
    postprocessed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields; an infinite or NaN difference as the word ``inf`` / ``nan`` (JSON has no number
        for it: the table's word, not the null ``--json`` would write)."""
        return nonfinite_as_words(asdict(self))

    def summary(self) -> str:
        if self.nothing_compared:
            return f"nothing compared: {all_empty(self.empty_outputs, f'the {self.n} inputs from {self.source}')}"
        agree = "-" if self.top1_agreement is None else f"{100 * self.top1_agreement:.2f}%"
        if self.float64_bound is not None:  # (set with both float64 errors)
            diff = (
                f"max|diff| {self.max_abs_diff:.3g} (> {self.tolerance or self.atol:.3g}); against the model in "
                f"float64: ONNX Runtime {self.float64_onnx_error:.3g}, PyTorch float32 {self.float64_torch_error:.3g} "
                f"(<= {self.float64_bound:.3g}: {'ok, the model amplifies float32 rounding' if self.passed else 'FAIL'})"
            )
        else:
            diff = f"max|diff| {self.max_abs_diff:.3g} (<= {self.tolerance or self.atol:.3g}: {'ok' if self.passed else 'FAIL'})"
        if self.compared != "outputs":
            diff += f" of the {self.compared}"
        return f"{diff}, top-1 agreement {agree} on {self.n} inputs from {self.source}"


def all_empty(empty: list[str], on: str) -> str:
    """Why a check compared nothing: every output (``empty``, their names) is empty ``on`` its inputs
    (``the 8 inputs from ...``)."""
    return f"every output ({', '.join(empty)}) is empty on {on}"


def _meta_norm(meta: dict[str, Any] | None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    meta = meta or {}
    try:
        mean = tuple(float(v) for v in meta["mean"]) if meta.get("mean") is not None else None
        std = tuple(float(v) for v in meta["std"]) if meta.get("std") is not None else None
    except (TypeError, ValueError):
        log.warning("checkpoint meta has unreadable mean/std; using the data set's normalization")
        return None, None
    return mean, std


def dataset_name(meta: dict[str, Any] | None) -> str | None:
    """The data set a checkpoint was trained on, read defensively from its meta."""
    d = (meta or {}).get("data")
    if isinstance(d, dict):
        d = d.get("name")
    return str(d) if isinstance(d, str) and d else None


#: pixels (per channel) of the default ORT check's images: 64 up to 64x64 (at least 16)
CHECK_PIXELS = 64 * 64 * 64


def check_images(shape: tuple[int, ...]) -> int:
    """The default count of the ORT check's images for an input of ``shape`` (:func:`scaled_count`)."""
    return scaled_count(shape, 64, CHECK_PIXELS, 16)


def scaled_count(shape: tuple[int, ...], n: int, pixels: int, floor: int) -> int:
    """``n`` images of an input of ``shape`` (C, H, W) or (C, L) up to ``pixels`` pixels all told, fewer of a
    larger one, at least ``floor``: the default image counts of surgery's check, export's check and INT8
    calibration (checks of a 512x512 segmenter held 64 images at once: 8.3 GB)."""
    return max(floor, min(n, pixels // max(1, math.prod(int(d) for d in shape[1:]))))


def real_inputs(
    input_shape: tuple[int, int, int],
    *,
    data: str | None = None,
    data_dir: str | None = None,
    meta: dict[str, Any] | None = None,
    n: int = 64,
    split: str = "test",
    data_param: str = "data",
    skip: str | None = None,
) -> InputBatch | None:
    """``n`` images of the model's data set (its ``split``: ``test``, or ``train`` for INT8
    calibration), normalized as in training; None if none is known, or (``train``) for the
    unlabelled ``images`` set, which has no training split.

    ``data`` (CLI ``--data``) wins over the checkpoint's ``meta["data"]``. The checkpoint's
    ``meta["mean"]``/``meta["std"]`` win over the data set's own statistics (an image folder's: of
    :data:`STATS_IMAGES` of its training images, whatever ``n`` and ``split``, the batch marked
    ``estimated``); its
    ``meta["class_names"]`` order the labels (:meth:`~edgeslim.data.DataBundle.in_class_order`: other
    classes are refused). The ``images`` data set is any folder of images in ``data_dir`` (no
    labels), brought to the model's input size as ``meta["fit"]`` says (``letterbox`` for ultralytics models, else ``stretch``).
    An unknown data set names the caller's parameters: ``data_param`` (where ``data`` came from) and ``skip``
    (what skips the images, e.g. ``no_validate``; None: nothing does).
    """
    from pathlib import Path

    from edgeslim.data.datasets import NORMS, canonical_name, recorded_data_dir
    from edgeslim.data.imagefolder import IMAGES

    name = data or dataset_name(meta)
    if not name:
        return None
    try:
        key = canonical_name(name)
    except EdgeslimError as exc:
        if data:
            exc.params = exc.params or (data_param,)
            raise
        or_skip = f", or skip the check ({skip})" if skip else ""
        raise EdgeslimError(  # (a review: "unknown data set 'my-shapes'" did not say where the name came from)
            f"the model's checkpoint names {name!r}, the images it was trained on, as what to check it on, and "
            "this process does not know it (a set registered with register_dataset is known only in a Python process "
            f"that registered it before this call): give {data_param} (images, with data_dir: any folder of "
            f"images){or_skip}",
            param=(data_param, "data_dir", *([skip.removesuffix("=False")] if skip else [])),
        ) from exc
    recorded = (meta or {}).get("data_dir") if data_dir is None and not data else None
    if isinstance(recorded, str):  # where the checkpoint's data set lay when it was made
        # photos a prune was checked on, the checkpoint copied to a machine without them: none known here
        if key == IMAGES and not Path(recorded).exists():
            return None
        data_dir = recorded_data_dir(name, recorded, "the model's", " when it was made")
    from edgeslim.data import load_dataset

    if key == IMAGES:
        return _folder_inputs(input_shape, data_dir, meta, n) if split != "train" else None
    # an image folder is read at the model's size (it may not be its first image's)
    size = tuple(input_shape[1:]) if key == "imagefolder" else None
    train = split == "train"
    bundle = load_dataset(name, data_dir=data_dir, subset=n if train else 1, test_subset=1 if train else n,
                          seed=CHECK_SEED, image_size=size, upto=True)  # fmt: skip
    if tuple(bundle.input_shape) != tuple(input_shape):
        if not data:  # the recorded set: the shape was changed
            raise EdgeslimError(
                f"the model was trained on {bundle.name} images of {'x'.join(map(str, bundle.input_shape))}, not "
                f"the {'x'.join(map(str, input_shape))} of input_shape: leave it out (the size it was trained at), "
                f"or check on a folder of images resized to it (data {IMAGES}, data_dir FOLDER)",
                param=("input_shape", "data", "data_dir"),
            )
        raise EdgeslimError(
            f"{bundle.name} images are {'x'.join(map(str, bundle.input_shape))} but the model takes "
            f"{'x'.join(map(str, input_shape))}; pass as data the data set the model was trained on "
            f"(or {IMAGES}, which resizes any folder of images to the model's input)",
            param="data",
        )
    # labels in the order of the model's outputs (a folder's classes are its folders' names, sorted)
    bundle = bundle.in_class_order((meta or {}).get("class_names"))
    mean, std = _meta_norm(meta)
    c = bundle.in_channels
    # a model that records none, on a data set whose statistics come from the images read (an image folder's):
    # not those of the few images read here (a check read 1 training image), but of a fixed sample of the
    # training split, the same for the check and the INT8 calibration
    estimated = key not in NORMS and not (mean and len(mean) == c and std and len(std) == c)
    if estimated:
        sample = load_dataset(
            name, data_dir=data_dir, subset=STATS_IMAGES, test_subset=1, image_size=size, upto=True
        )
        mean, std = sample.mean, sample.std
        if not train:  # (said once: an INT8 export's calibration reads the training split first, then checks)
            log.warning(
                "the model records no mean/std for %d channels: normalizing %s images with the statistics of %d "
                "of its training images (not written into the ONNX as the model's)", c, bundle.name,
                len(sample.train_y),
            )  # fmt: skip
    batch = bundle_inputs(bundle, n, mean, std, split=split, chosen=f"class-balanced (seed {CHECK_SEED})")
    return replace(batch, estimated=True) if estimated else batch


def bundle_inputs(
    bundle: Any,
    n: int = 64,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    split: str = "test",
    chosen: str = "class-balanced",
) -> InputBatch:
    """``n`` images of a loaded data set's ``split`` (a :class:`~edgeslim.data.DataBundle`) with their
    labels, normalized with ``mean``/``std`` (default: the data set's own statistics). The classes
    take turns (each class's first image, then each class's second, ...), so every leading part,
    such as the images that check an export ahead of those that calibrate INT8, holds every class
    (a class-sorted folder once gave a 64-image check of one class). ``chosen``: how the split's
    images were chosen, for the source (``fashion-mnist test, 64 class-balanced (seed 0)``)."""
    import torch

    mean = mean if mean and len(mean) == bundle.in_channels else tuple(bundle.mean)
    std = std if std and len(std) == bundle.in_channels else tuple(bundle.std)
    xu8, y = bundle.tensors(split)
    rank = torch.zeros_like(y)  # the place of each image within its class
    for c in y.unique():
        at = y == c
        rank[at] = torch.arange(int(at.sum()))
    order = torch.argsort(rank * (int(y.max()) + 1 if len(y) else 1) + y, stable=True)[:n]
    xu8, y = xu8[order], y[order]
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (xu8.to(torch.float32) / 255.0 - m) / s
    origin = f"{bundle.name} {split}"
    return InputBatch(x, y, counted(origin, len(x), chosen), True, mean, std, classes=bundle.num_classes,
                      origin=origin, chosen=chosen)  # fmt: skip


def _folder_inputs(
    input_shape: tuple[int, int, int], data_dir: str | None, meta: dict[str, Any] | None, n: int
) -> InputBatch:
    """``n`` images of the folder ``data_dir`` at the model's input size, normalized with the
    checkpoint's mean/std, else the images' own per-channel statistics; no labels."""

    import torch

    from edgeslim.data.datasets import existing_data_dir
    from edgeslim.data.imagefolder import FIT_WORDS, IMAGES, read_images

    if not data_dir:
        raise EdgeslimError(
            f"the {IMAGES} data set needs data_dir, a folder or .zip of images", param="data_dir"
        )
    root = existing_data_dir(data_dir)
    c, h, w = input_shape
    fit = str((meta or {}).get("fit") or "stretch")
    notes: list[str] = []
    xu8, total = read_images(root, c, (h, w), n, fit=fit, notes=notes)
    x = torch.from_numpy(xu8).to(torch.float32).div_(255.0)  # (in place: 576 images at 640x640 are 2.8 GB)
    mean, std = _meta_norm(meta)
    estimated = not (mean and len(mean) == c and std and len(std) == c)
    if estimated:
        mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-3) for v in x.std(dim=(0, 2, 3)))
        log.warning(
            "the model records no mean/std for %d channels: normalizing the photos (%s) with their own statistics",
            c, IMAGES,
        )  # fmt: skip
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    x.div_(torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    origin, chosen = f"{IMAGES} {root} ({total} files, {FIT_WORDS.get(fit, fit)})", "spread evenly over them"
    return InputBatch(x, None, counted(origin, len(x), chosen), True, mean, std, estimated, notes=tuple(notes),
                      origin=origin, chosen=chosen)  # fmt: skip


def random_inputs(
    input_shape: tuple[int, int, int], n: int = 8, seed: int = 0, pixels: bool = False
) -> InputBatch:
    """Seeded standard-normal inputs (used when no data set is known); ``pixels``: uniform in [0, 1],
    for a model fed pixels / 255 as they are (an ultralytics YOLO)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if pixels:
        x = torch.rand((n, *input_shape), generator=g)
        return InputBatch(x, None, f"random pixels in [0, 1] (seed {seed}; no data set known)", False)
    x = torch.randn((n, *input_shape), generator=g)
    return InputBatch(x, None, f"random normal (seed {seed}; no data set known)", False)


def ort_session(model_bytes: bytes, providers: list[str] | None = None, threads: int = 1):
    """An ONNX Runtime session on the CPU provider (1 intra-op thread unless told)."""
    ort = require("onnxruntime", "to check the exported model")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 4  # (its errors come back as exceptions, said in one line)
    try:
        return ort.InferenceSession(model_bytes, so, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise EdgeslimError(f"ONNX Runtime cannot load the exported model: {first_line(exc)}") from exc


def join_chunks(parts: list[np.ndarray]) -> np.ndarray:
    """One output of runs over consecutive chunks of the inputs: the chunks' rows one after the other;
    a 0-d output (``logits.sum()``) one value a chunk, stacked; one chunk's as it is."""
    if len(parts) == 1:
        return parts[0]
    return np.stack(parts) if parts[0].ndim == 0 else np.concatenate(parts)


def run_ort_all(
    sess, x: np.ndarray, batch: int | None = None, *, chunk: int | None = None
) -> list[np.ndarray]:
    """Every output of ``sess`` for ``x``, in the graph's order (:func:`join_chunks`); in whole chunks
    of ``batch`` if the input batch is static, else in chunks of ``chunk`` (all at once without)."""
    name = sess.get_inputs()[0].name
    step = max(1, batch or chunk or len(x))
    stop = len(x) - step + 1 if batch else len(x)
    runs = [sess.run(None, {name: x[i : i + step]}) for i in range(0, max(stop, 1), step)]
    return [join_chunks(list(parts)) for parts in zip(*runs)]


def torch_outputs(
    model: nn.Module,
    x: torch.Tensor,
    device: str = "cpu",
    chunk: int = CHECK_CHUNK,
    *,
    double: bool = False,
    results: list[Any] | None = None,
) -> list[np.ndarray]:
    """Every output tensor of ``model`` on ``device`` (every tensor of a nested tuple, list or dict, in order) as float32 numpy, IEEE
    fp32 on CUDA too (model is left where it was); ``double``: as float64. The model runs on a copy of
    each chunk: a forward that changes its input in place (``x /= 255``) leaves ``x`` as it was.
    ``results`` gets each chunk's result as the forward returned it (its structure)."""
    import torch

    from edgeslim.channels.graph import flat_tensors
    from edgeslim.utils.modes import ieee_fp32

    runs = []
    with torch.inference_mode(), ieee_fp32():
        for i in range(0, len(x), chunk):
            result = model(x[i : i + chunk].to(device, copy=True))
            if results is not None:
                results.append(result)
            ys = flat_tensors(result)
            runs.append([(y.detach().double() if double else y.detach().float()).cpu().numpy() for y in ys])
    return [join_chunks(list(parts)) for parts in zip(*runs)]


def compare(
    ref: np.ndarray,
    got: np.ndarray,
    batch: InputBatch,
    *,
    provider: str = "CPUExecutionProvider",
    reference_device: str = "cpu",
    atol: float = FP32_ATOL,
    rtol: float = FP32_RTOL,
    postprocessed: bool = False,
    scores: bool = True,
) -> ValidationReport:
    """Max/mean abs difference and top-1 agreement (per pixel for masks) of two output arrays of the
    same inputs; passes when the difference is within ``atol + rtol * max |ref|`` and (a classifier's,
    on real images) every top-1 agrees.
    Classifier logits whose every top-1 agrees on real images are held to
    :data:`AGREEING_LOGITS_RTOL` instead of ``rtol`` when that is larger. ``postprocessed``: the
    outputs are a torchvision detector's detections (:data:`~edgeslim.utils.scores.POSTPROCESSED`);
    ``scores``: the output may hold class scores (:func:`~edgeslim.utils.scores.score_tensors`)."""
    inputs = len(batch.x)  # (a detector's boxes [K, 4] are no class scores: one row per input is)
    found = output_difference(ref, got, inputs, postprocessed=postprocessed, scores=scores)
    if found is None:  # (no detection on these inputs: no value to compare, none to fail)
        return ValidationReport(
            source=batch.source, real_data=batch.real, n=len(batch.x), provider=provider,
            reference_device=reference_device, max_abs_diff=None, mean_abs_diff=None, top1_agreement=None,
            accuracy_torch=None, accuracy_onnx=None, atol=atol, passed=True, rtol=rtol, postprocessed=postprocessed,
        )  # fmt: skip
    diff, ref_c, space = found
    logits = scores and classifier_logits(ref.shape, inputs)  # every top-1 must agree
    acc_t = acc_o = None
    # per sample, or per pixel (reported; a mask's near-ties may flip)
    agree = top1_agreement(ref, got, inputs) if scores else None
    if logits and batch.labels is not None:
        lab = batch.labels.numpy()[: len(ref)]
        acc_t, acc_o = top1_accuracy(ref, lab), top1_accuracy(got, lab)
    max_diff = float(diff.max())
    if logits and batch.real and agree == 1.0:
        rtol = max(rtol, AGREEING_LOGITS_RTOL)
    tolerance = atol + rtol * finite_abs_max(ref_c)
    passed = bool(max_diff <= tolerance and (not logits or agree == 1.0 or not batch.real))
    return ValidationReport(
        source=batch.source, real_data=batch.real, n=inputs, provider=provider,
        reference_device=reference_device, max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()), top1_agreement=agree,
        accuracy_torch=acc_t, accuracy_onnx=acc_o, atol=atol, passed=passed, rtol=rtol, tolerance=tolerance,
        compared=space, postprocessed=postprocessed,
    )  # fmt: skip


def output_difference(
    ref: np.ndarray,
    got: np.ndarray,
    inputs: int,
    *,
    postprocessed: bool = False,
    scores: bool = True,
    int8: bool = False,
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``|ref - got|`` of one output as the FP32 and INT8 checks compare it (float64, of
    :func:`compared_values`; ``scores`` False: the values as they are), with ``ref`` as compared and what
    that is; None when ``ref`` holds no value (a detector that found nothing). Outputs of other shapes are
    refused in one line: of post-processed detections (``postprocessed``) whose count differs, as what
    this check cannot hold. ``int8``: INT8 against FP32 (ONNX Runtime both), else ONNX Runtime against
    PyTorch."""
    if ref.shape != got.shape:
        side, other = ("INT8", "FP32") if int8 else ("ONNX Runtime", "PyTorch")
        differs = f"{side} output shape {got.shape} differs from {other} {ref.shape}"
        if postprocessed:
            raise EdgeslimError(
                f"{differs}: the outputs are {POSTPROCESSED}, so this check cannot hold them; "
                f"{DETECTION_INT8_CHECK if int8 else DETECTION_EXPORT_CHECK}",
                param=None if int8 else "validate",
            )
        raise EdgeslimError(f"{differs}; the {'quantization' if int8 else 'export'} is broken")
    if not ref.size:
        return None
    ref_c, got_c, space = compared_values(ref, got, inputs) if scores else (ref, got, "outputs")
    # (-inf in both is no difference)
    return abs_differences(ref_c.astype(np.float64), got_c.astype(np.float64)), ref_c, space


def compared_values(
    ref: np.ndarray, got: np.ndarray, inputs: int | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """``ref`` and ``got`` as a check compares them, and what they are: the ``outputs`` as they are,
    or a classifier's softmax (one row per input, given their number ``inputs``) as
    ``log-probabilities`` (1,000 probabilities near 1e-3 would let a 10% error through an absolute
    bound: a YOLO user's trial of a -cls model)."""
    if classifier_logits(ref.shape, inputs) and _probabilities(ref):
        return _log_probabilities(ref), _log_probabilities(got), "log-probabilities"
    return ref, got, "outputs"


def _log_probabilities(p: np.ndarray) -> np.ndarray:
    """``log p``, probabilities below 1e-30 counted as 1e-30 (float32's denormals carry no precision)."""
    return np.log(np.maximum(p, 1e-30))


def _probabilities(x: np.ndarray) -> bool:
    """Whether the rows of ``x`` [N, C] are probability distributions (a softmax's output)."""
    if not x.size or not np.isfinite(x).all():
        return False
    return bool(x.min() >= 0 and x.max() <= 1 + 1e-6 and np.abs(x.sum(1) - 1).max() < 1e-3)


def validate_onnx(
    model: nn.Module,
    model_bytes: bytes,
    batch: InputBatch,
    *,
    static_batch: int | None = None,
    atol: float = FP32_ATOL,
    reference_device: str = "cpu",
    traced_batch: int | None = None,
) -> ValidationReport:
    """Run ``batch`` through ONNX Runtime (CPU) and through ``model`` on ``reference_device``
    (``traced_batch``: the batch a dynamic-batch graph was traced at, named where it is at fault)."""
    import torch

    if static_batch is not None:  # a static-batch graph takes exactly `static_batch` images per run
        if len(batch.x) < static_batch:
            x = torch.cat([batch.x] * -(-static_batch // len(batch.x)))[:static_batch]
            source = f"{batch.source}, repeated to the fixed batch of {static_batch}"
            batch = replace(batch, x=x, labels=None, source=source)
        else:  # whole batches (the source says how many of the images)
            batch = batch.first(len(batch.x) // static_batch * static_batch)
    x = batch.x
    sess = ort_session(model_bytes)
    got = _run_checked(sess, x.numpy().astype(np.float32), static_batch)
    results: list[Any] = []
    ref = torch_outputs(model, x, device=reference_device, chunk=static_batch or CHECK_CHUNK, results=results)
    # what PyTorch returned decides what the outputs are (not their names): detections, class scores
    dets = postprocessed_detections(results[0])
    scores = score_tensors(results[0])
    # a classifier's class scores (one row per input)
    width = (
        ref[0].shape[1] if len(ref) == 1 and scores[0] and classifier_logits(ref[0].shape, len(x)) else None
    )
    if batch.classes is not None and width is not None and width != batch.classes:
        raise EdgeslimError(  # its accuracy, and an INT8 check on these labels, would mean nothing
            f"the model scores {width} classes but {batch.base_source} has {batch.classes}: to check and "
            "calibrate it, pass the data set it was trained on as data_name (and data_dir), or images for any "
            "folder of its images",
            param=("data_name", "data_dir"),
        )
    if len(got) != len(ref):
        raise EdgeslimError(
            f"the ONNX graph has {len(got)} outputs where the PyTorch model returns {len(ref)}; the export is broken"
        )
    from edgeslim.models.yolo import output_parts

    # (a YOLO's output0 as its parts, boxes in pixels, scores in [0, 1], ...: each held to its own bound)
    parts = output_parts(model)
    ref_p, names, flags = _split_outputs(parts, ref, scores)
    got_p = _split_outputs(parts, got, scores)[0]
    reports = [
        compare(r, g, batch, reference_device=reference_device, atol=atol, postprocessed=dets, scores=s)
        for r, g, s in zip(ref_p, got_p, flags)
    ]
    reports = [r if n is None else replace(r, compared=f"{n} of output0") for r, n in zip(reports, names)]
    # (a forward that draws first; float64 puts no detections in order)
    if not all(r.passed for r in reports):
        reports = _against_float64(
            model, x, ref, got, reports, batch, reference_device, static_batch or CHECK_CHUNK, dets, parts
        )
    empty = [o.name for o, r in zip(sess.get_outputs(), ref) if not r.size]
    first = reports[0]
    if len(empty) == len(ref):  # nothing compared: no pass, and nothing that failed either
        return replace(first, passed=False, nothing_compared=True, empty_outputs=empty)
    if static_batch is None and len(x) > 1 and all(r.passed for r in reports):  # a dynamic batch: another too
        _same_at_one_image(sess, model, x, got, ref, reference_device, traced_batch)
    # every output held to its own bound; the report: the first output's agreement, the worst margin
    held = [r for r in reports if r.max_abs_diff is not None]
    worst = max(held, key=lambda r: r.max_abs_diff / (r.tolerance or r.atol or 1.0))  # type: ignore[operator]
    return ValidationReport(
        source=first.source, real_data=first.real_data, n=first.n, provider=first.provider,
        reference_device=first.reference_device, max_abs_diff=worst.max_abs_diff,
        mean_abs_diff=max(r.mean_abs_diff for r in held), top1_agreement=first.top1_agreement,  # type: ignore[type-var]
        accuracy_torch=first.accuracy_torch, accuracy_onnx=first.accuracy_onnx, atol=atol,
        passed=all(r.passed for r in reports), rtol=worst.rtol, tolerance=worst.tolerance,
        float64_torch_error=worst.float64_torch_error, float64_onnx_error=worst.float64_onnx_error,
        float64_bound=worst.float64_bound, compared=worst.compared,
        random_forward=any(r.random_forward for r in reports), empty_outputs=empty, postprocessed=dets,
    )  # fmt: skip


def _split_outputs(
    parts: Any, outputs: list[np.ndarray], scores: list[bool]
) -> tuple[list[np.ndarray], list[str | None], list[bool]]:
    """``outputs`` as the check compares them, with each one's part name (None: a whole output) and whether
    it may hold class scores (``scores``: of the whole outputs). ``parts``
    (:func:`~edgeslim.models.yolo.output_parts`, None: outputs whole) splits a YOLO's output0 into boxes,
    scores and its head's extra rows, each held to its own bound: with one bound, the boxes' pixels let a
    score error hundreds of times their rounding through."""
    if parts is None:
        return list(outputs), [None] * len(outputs), list(scores)
    named = parts(list(outputs))
    whole = [re.fullmatch(r"output(\d+)", n) for n, _ in named]
    return (
        [a for _, a in named],
        [None if w else n for w, (n, _) in zip(whole, named)],
        [scores[int(w[1])] if w else False for w in whole],
    )


#: why a dynamic-batch graph fails, or differs, at another batch than the traced one, and the fix
FIXED_BATCH_HINT = (
    "a dynamic batch fails this way when the model turns its input's batch into a number (e.g. "
    "int(x.shape[0]), or x.size(0) passed to view); write x.flatten(1) or x.view(x.shape[0], -1), or export "
    "with a fixed batch"
)


def _run_checked(sess: Any, x: np.ndarray, batch: int | None, chunk: int = CHECK_CHUNK) -> list[np.ndarray]:
    """:func:`run_ort_all` (a dynamic batch in chunks of ``chunk``, as :func:`torch_outputs` runs
    them), a dynamic-batch graph that fails at this batch said in one line."""
    try:
        return run_ort_all(sess, x, batch, chunk=chunk)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors
        if batch is not None:
            raise
        raise EdgeslimError(
            f"the ONNX graph fails on a batch of {min(len(x), chunk)} ({first_line(exc)[:160]}); "
            + FIXED_BATCH_HINT
        ) from exc


def _same_at_one_image(
    sess: Any,
    model: nn.Module,
    x: torch.Tensor,
    got: list[np.ndarray],
    ref: list[np.ndarray],
    device: str,
    traced: int | None = None,
) -> None:
    """A dynamic-batch graph run on its first image alone must change from its run on all of ``x`` (in
    chunks of :data:`CHECK_CHUNK`) as PyTorch's result does: not at all for most models; a size taken
    from the traced batch stays the traced one in the graph, which at the traced batch matches PyTorch
    and is caught only by PyTorch's own result for the image alone. Where PyTorch gives another result
    for the image alone (``ref``: its rows within the batch), the output depends on the batch (BatchNorm
    on batch statistics; confirmed in float64, where a model that amplifies float32 rounding gives
    the same result, and the graph may then move ten times as much as PyTorch's float32 result did):
    the graph alone is then held to PyTorch's result alone. ``traced``: the batch the graph was traced at."""
    images = len(x)
    rows = _run_checked(sess, x.numpy()[:1].astype(np.float32), None)
    alone = torch_outputs(model, x[:1], device=device)

    def change(a: np.ndarray, b: np.ndarray) -> float:
        return float(abs_differences(a.astype(np.float64), b.astype(np.float64)).max()) if a.size else 0.0

    slack: dict[int, float] = {}  # output -> what rounding alone moves it by (batch-independent in float64)

    def differ(a: np.ndarray, b: np.ndarray, i: int | None = None) -> bool:
        bound = max(1e-4 * (1 + finite_abs_max(b.astype(np.float64))), slack.get(i, 0.0))
        return a.shape != b.shape or change(a, b) > bound

    per_row = [
        i
        for i, (a, b) in enumerate(zip(rows, got))
        if b.ndim and b.shape[0] == images and a.shape[:1] == (1,) and alone[i].shape[:1] == (1,)
    ]  # (outputs of one row per image)
    moved = [i for i in per_row if differ(alone[i], ref[i][:1])]
    exact = _float64_alone_and_in_batch(model, x) if moved else None
    for i in moved if exact is not None else ():
        if not differ(exact[0][i], exact[1][i][:1]):  # the same in float64: rounding, not the batch
            slack[i] = FLOAT64_FACTOR * change(alone[i], ref[i][:1])
    torch_moves = any(i not in slack for i in moved)
    graph_moves = any(differ(rows[i], got[i][:1], i) for i in per_row)
    batch = min(images, CHECK_CHUNK)
    if not (graph_moves or torch_moves) or not any(differ(rows[i], alone[i], i) for i in per_row):
        if graph_moves and torch_moves:
            log.warning(
                "the model's output depends on the other images of the batch (PyTorch gives another result for "
                "an image alone than within a batch of %d); the ONNX graph follows it at both batches",
                batch,
            )
        return
    if not torch_moves:
        raise EdgeslimError(
            f"the ONNX graph gives another result for an image alone than within a batch of {batch}; "
            + FIXED_BATCH_HINT
        )
    if not graph_moves:  # (checked at the traced batch, where a size frozen there matches PyTorch)
        raise EdgeslimError(
            f"PyTorch gives another result for an image alone than within a batch of {batch}, the ONNX graph "
            f"the same (it keeps a size of the traced batch{f', {traced},' if traced else ''} at every batch); "
            + FIXED_BATCH_HINT
        )
    raise EdgeslimError(
        f"the model's output depends on the other images of the batch (PyTorch itself gives another result "
        f"for an image alone than within a batch of {batch}: batch statistics, e.g. a BatchNorm without "
        "running statistics, or torch.unique over the batch), and the ONNX graph does not follow it at "
        "another batch than the traced one (a size of the batch taken as a number, int(x.shape[0]), stays "
        "the traced one); export with a fixed batch"
    )


def _float64_alone_and_in_batch(model: nn.Module, x: torch.Tensor) -> tuple[list[np.ndarray], ...] | None:
    """``model``'s float64 outputs (on the CPU, a copy) for the first image of ``x`` alone and for the
    first chunk of ``x`` (None: an op without a float64 kernel)."""
    import copy

    try:
        exact = copy.deepcopy(model).cpu().double()
        return tuple(torch_outputs(exact, v.double(), double=True) for v in (x[:1], x[:CHECK_CHUNK]))
    except Exception:  # noqa: BLE001 - the float32 verdict stands
        return None


#: a BatchNorm that multiplies its input by this much makes float32 rounding visible in its outputs
AMPLIFYING_NORM = 1000.0


def amplifying_norm(model: nn.Module) -> tuple[str, float] | None:
    """The BatchNorm (with running statistics) that multiplies its input the most, and by how much:
    ``max |gamma| / sqrt(running_var + eps)``; None without one."""
    import torch

    from edgeslim.channels.norm import is_batchnorm

    best: tuple[str, float] | None = None
    for name, m in model.named_modules():
        var = getattr(m, "running_var", None)
        if not is_batchnorm(m) or not isinstance(var, torch.Tensor) or not var.numel():
            continue
        weight = getattr(m, "weight", None)
        w = weight.detach().abs() if isinstance(weight, torch.Tensor) else torch.ones_like(var)
        if w.shape != var.shape:
            continue
        eps = getattr(m, "eps", 1e-5)  # (a TorchScript BatchNorm keeps no eps attribute)
        factor = float((w.float() / (var.detach().float() + float(eps)).sqrt()).max())
        if best is None or factor > best[1]:
            best = (name, factor)
    return best


#: ONNX Runtime may be this many times further from the float64 result than PyTorch's own float32 is
FLOAT64_FACTOR = 10.0
#: ... when PyTorch's float32 output is within this share of the largest output from the float64 one
FLOAT64_MAX_SHARE = 0.01


def _against_float64(
    model: nn.Module,
    x: torch.Tensor,
    ref: list[np.ndarray],
    got: list[np.ndarray],
    reports: list[ValidationReport],
    batch: InputBatch,
    reference_device: str,
    chunk: int,
    postprocessed: bool = False,
    parts: Any = None,
) -> list[ValidationReport]:
    """The failed comparisons judged again against the model run in float64: a network that
    amplifies float32 rounding (a BatchNorm whose running variance is near zero multiplies its input
    by thousands) puts PyTorch's own float32 output far from the exact one too; ONNX Runtime
    passes when it is no more than :data:`FLOAT64_FACTOR` times further (top-1 still has to agree on
    real images). Only for a model whose float32 forward repeats exactly (one that draws random
    numbers has no exact result, said in ``random_forward``: asked first, of ``postprocessed`` detections
    too, which float64 puts in no order). Each such report records both errors. ``parts``: how the
    reports split the outputs (:func:`_split_outputs`)."""
    import copy
    import dataclasses

    try:
        again = torch_outputs(model, x, device=reference_device, chunk=chunk)
    except Exception:  # noqa: BLE001 - (it ran once: the float32 verdict stands)
        return reports
    # a forward that draws: no exact result
    if any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(ref, again)):
        return [r if r.passed else dataclasses.replace(r, random_forward=True) for r in reports]
    if postprocessed:
        return reports
    try:
        exact = torch_outputs(copy.deepcopy(model).cpu().double(), x.double(), chunk=chunk, double=True)
    except Exception:  # noqa: BLE001 - an op without a float64 kernel: the float32 verdict stands
        return reports
    out = []
    # (as the reports compared them: a YOLO's output0 as its parts)
    ref, got, exact = (_split_outputs(parts, v, [True] * len(v))[0] for v in (ref, got, exact))
    for r, a, b, e in zip(reports, ref, got, exact):
        if r.passed or a.shape != e.shape or not a.size:
            out.append(r)
            continue
        if r.compared == "log-probabilities":  # (a softmax: judged as log-probabilities, as compare did)
            a, b, e = (_log_probabilities(v) for v in (a, b, e))
        torch_err = float(np.abs(a.astype(np.float64) - e).max())
        onnx_err = float(np.abs(b.astype(np.float64) - e).max())
        agree = (
            r.top1_agreement in (None, 1.0) or not classifier_logits(a.shape, len(x)) or not batch.real
        )  # (as compare)
        rounding = torch_err <= FLOAT64_MAX_SHARE * float(np.abs(e).max())  # not another computation
        bound = max(r.tolerance or r.atol, FLOAT64_FACTOR * torch_err)
        out.append(dataclasses.replace(
            r, passed=bool(agree and rounding and onnx_err <= bound),
            float64_torch_error=torch_err, float64_onnx_error=onnx_err, float64_bound=bound,
        ))  # fmt: skip
    return out


def cuda_reference(
    model: nn.Module, model_bytes: bytes, batch: InputBatch, **kw: Any
) -> ValidationReport | str:
    """ONNX Runtime (CPU) against PyTorch on CUDA; a one-line reason string when no GPU is present."""
    import copy

    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available here (torch.cuda.is_available() is False); the CUDA check was not run"
    gpu_model = copy.deepcopy(model).to("cuda").eval()
    # torch_outputs runs the reference in IEEE fp32 (TF32 would differ by ~1e-3)
    return validate_onnx(gpu_model, model_bytes, batch, reference_device="cuda", **kw)
