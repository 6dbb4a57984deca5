"""Real data sets as uint8 tensors with deterministic, tensor-augmented batch loaders.

>>> b = load_dataset("fashion-mnist", subset=2000)
>>> for x, y in b.loader("train", batch_size=128, epoch=0): ...
"""

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
