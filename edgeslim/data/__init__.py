"""Real data sets as uint8 tensors with deterministic, tensor-augmented batch loaders.

>>> b = load_dataset("fashion-mnist", subset=2000)
>>> for x, y in b.loader("train", batch_size=128, epoch=0): ...

The registry (:mod:`edgeslim.data.datasets`) never imports its members: readers register
themselves with ``@register_dataset`` when this package imports their modules.
"""

from edgeslim.data import cifar, imagefolder  # noqa: F401  (the members register their readers)
from edgeslim.data.bundle import BatchLoader, DataBundle
from edgeslim.data.datasets import (
    balanced_subset,
    canonical_name,
    dataset_shape,
    default_cache_dir,
    list_datasets,
    load_dataset,
)

__all__ = [
    "BatchLoader",
    "DataBundle",
    "balanced_subset",
    "canonical_name",
    "dataset_shape",
    "default_cache_dir",
    "list_datasets",
    "load_dataset",
]
