"""Which model outputs hold class scores, and their top-1 counts (torch- and numpy-free: numpy arrays and
torch tensors are read alike)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def class_scores(shape: Sequence[int], inputs: int | None = None) -> bool:
    """Whether an output of ``shape`` holds class scores on dim 1, whose argmax is a prediction: per
    sample ``[N, C]`` or per pixel ``[N, C, H, W]`` (a segmenter's masks), with ``C > 1``; given the
    number of ``inputs`` that made it, ``N`` must be that (a detector's boxes ``[K, 4]`` are none)."""
    return len(shape) in (2, 4) and int(shape[1]) > 1 and (inputs is None or int(shape[0]) == inputs)


def classifier_logits(shape: Sequence[int], inputs: int | None = None) -> bool:
    """Whether an output of ``shape`` is a classifier's logits ``[N, C]`` (``C > 1``; ``N`` the number of
    ``inputs`` where given): the scores whose every top-1 must agree in an export check (a mask's may
    flip at a near-tie)."""
    return len(shape) == 2 and class_scores(shape, inputs)


def top1_matches(ref: Any, got: Any, inputs: int | None = None) -> tuple[int, int] | None:
    """``(agreeing, total)`` top-1 predictions of two score arrays of one shape (numpy arrays or torch
    tensors), per sample or per pixel; None when ``ref`` holds no class scores (of one row per input,
    given the number of ``inputs``)."""
    if not class_scores(ref.shape, inputs):
        return None
    return int((ref.argmax(1) == got.argmax(1)).sum()), math.prod(ref.shape) // int(ref.shape[1])


def top1_agreement(ref: Any, got: Any, inputs: int | None = None) -> float | None:
    """The share of top-1 predictions two score arrays share (see :func:`top1_matches`); None when
    ``ref`` holds no class scores or no sample."""
    m = top1_matches(ref, got, inputs)
    return m[0] / m[1] if m and m[1] else None


def top1_correct(scores: Any, labels: Any) -> int:
    """How many samples' top-1 of ``scores`` ``[N, C]`` is their label (numpy or torch)."""
    return int((scores.argmax(1) == labels).sum())


def top1_accuracy(scores: Any, labels: Any) -> float:
    """The share of samples whose top-1 of ``scores`` ``[N, C]`` is their label (numpy or torch)."""
    return top1_correct(scores, labels) / max(1, len(labels))


def abs_differences(a: Any, b: Any) -> Any:
    """``|a - b|`` element by element for two float arrays of one shape (numpy arrays or torch
    tensors): 0 where both hold the same value (the same infinity, NaN in both), infinity where a
    NaN or an infinity stands on one side only (a masked logit of -inf is not a difference to hide,
    nor one to call infinite)."""
    d = abs(a - b)[...]  # (of 0-d numpy arrays: a 0-d array, where a - b is a numpy scalar)
    d[(a == b) | ((a != a) & (b != b))] = 0
    d[d != d] = math.inf
    return d


def finite_abs_max(a: Any) -> float:
    """The largest ``|a|`` over the finite entries of ``a`` (numpy or torch; 0 when there are none)."""
    f = abs(a[(a == a) & (abs(a) != math.inf)])
    return float(f.max()) if f.reshape(-1).shape[0] else 0.0


#: what a check of such detections compares, and why it cannot hold them position by position
POSTPROCESSED = (
    "post-processed detections (boxes, scores and labels after a score threshold, top-k and NMS), "
    "compared in order: near-tied scores reorder them or change how many pass"
)


def postprocessed_detections(result: Any) -> bool:
    """Whether a forward's ``result`` is post-processed detections as a torchvision detector returns them:
    a list of dicts, one per image (whatever their keys; a dict of dense maps named ``boxes``, ``scores``
    and ``labels`` is none)."""
    return isinstance(result, (list, tuple)) and bool(result) and all(isinstance(d, dict) for d in result)


def box_key(key: Any) -> bool:
    """Whether a dict key names box coordinates (``boxes``, ``bbox``, ``pred_boxes``, ``box_regression``)."""
    return "box" in str(key).lower()


def score_tensors(result: Any) -> list[bool]:
    """Per tensor of a forward's ``result`` (in the order of ``flat_tensors``), whether it may hold class
    scores (its shape decides the rest, :func:`class_scores`): none of post-processed detections
    (:func:`postprocessed_detections`), nor one under a dict key naming boxes (:func:`box_key`)."""
    return _score_tensors(result, postprocessed_detections(result))


def _score_tensors(obj: Any, boxes: bool) -> list[bool]:
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # (a tensor)
        return [not boxes]
    if isinstance(obj, dict):
        return [f for k, v in obj.items() for f in _score_tensors(v, boxes or box_key(k))]
    if isinstance(obj, (list, tuple)):
        return [f for v in obj for f in _score_tensors(v, boxes)]
    return []
