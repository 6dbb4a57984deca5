"""Which model outputs hold class scores (torch- and numpy-free: it reads a shape)."""

from __future__ import annotations

from collections.abc import Sequence


def class_scores(shape: Sequence[int]) -> bool:
    """Whether an output of ``shape`` holds class scores on dim 1, whose argmax is a prediction: per
    sample ``[N, C]`` or per pixel ``[N, C, H, W]`` (a segmenter's masks), with ``C > 1``."""
    return len(shape) in (2, 4) and int(shape[1]) > 1


def classifier_logits(shape: Sequence[int]) -> bool:
    """Whether an output of ``shape`` is a classifier's logits ``[N, C]`` (``C > 1``): the scores whose
    every top-1 must agree in an export check (a mask's may flip at a near-tie)."""
    return len(shape) == 2 and class_scores(shape)
