"""A loaded data set as uint8 tensors, plus a deterministic batch loader with tensor augmentation."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from edgeslim.errors import EdgeslimError

if TYPE_CHECKING:
    from edgeslim.models.registry import ModelSpec

log = logging.getLogger(__name__)


def mix_seed(*parts: int | str) -> int:
    """A 63-bit generator seed from several integers (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def pad_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded batch ``x`` [B,C,H,W] back to H x W, one offset per sample.

    One ``gather`` over the flattened padded images (no loop over samples)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    wp = w + 2 * pad
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    idx = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, idx).view(b, c, h, w)


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each sample of ``x`` [B,C,H,W] left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def shard_indices(
    n: int, world_size: int, rank: int, order: torch.Tensor | None, even: bool = True
) -> torch.Tensor:
    """DistributedSampler-like shard: pad to a multiple of ``world_size`` by wrapping, take every
    ``world_size``-th index from ``rank``. All ranks get disjoint shards of equal length.

    With ``even=False`` there is no padding: shard lengths differ by at most one, and every
    sample is visited exactly once over all ranks (for exact evaluation)."""
    idx = torch.arange(n) if order is None else order
    if world_size == 1:
        return idx
    if not even:
        return idx[rank::world_size]
    total = -(-n // world_size) * world_size
    if total > n:
        reps = -(-total // n)
        idx = idx.repeat(reps)[:total]
    return idx[rank:total:world_size]


@dataclass(eq=False)
class DataBundle:
    """Train and test images of one data set as uint8 ``[N,C,H,W]`` and int64 labels ``[N]``."""

    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    #: random pad-crop padding used by ``augment`` (4 for 32x32, 2 for 28x28)
    pad: int = 4
    #: whether left-right flips preserve the label (not for digits)
    hflip: bool = True
    #: where the data came from (a path or "sklearn"), for reports
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for nm, t, dt, nd in (("train_x", self.train_x, torch.uint8, 4), ("test_x", self.test_x, torch.uint8, 4),
                              ("train_y", self.train_y, torch.int64, 1), ("test_y", self.test_y, torch.int64, 1)):  # fmt: skip
            if t.dtype != dt or t.ndim != nd:
                raise ValueError(f"{nm} must be {dt} with {nd} dims, got {t.dtype} {tuple(t.shape)}")
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError("image and label counts differ")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError("mean/std must have one value per channel")
        self._device_cache: dict[str, tuple[torch.Tensor, ...]] = {}

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train_x.shape[2]), int(self.train_x.shape[3]))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.image_size)

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.name!r}, train={len(self.train_x)}, test={len(self.test_x)}, "
            f"shape={self.input_shape}, classes={self.num_classes})"
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B,C,H,W]`` (0..255) -> float32, standardized per channel."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x.to(torch.float32) / 255.0 - mean) / std

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Batch augmentation with tensor ops: random pad-crop, then flips where they make sense."""
        x = pad_crop(x, self.pad, gen)
        return random_hflip(x, gen) if self.hflip else x

    def record(self) -> dict[str, Any]:
        """What a checkpoint records about its data (export and bench validate on it by default)."""
        import os

        return {
            "data": self.name,
            "data_dir": os.path.abspath(self.source) if self.source and os.path.exists(self.source) else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
        }

    def in_class_order(self, names: Any, whose: str = "the model") -> DataBundle:
        """This data set with its labels in the class order ``names`` (the ``class_names`` a model's
        checkpoint records, the order of its outputs): itself where they agree or ``names`` is unknown;
        the same classes in another order (folders renamed, numbers sorted as text) relabelled to it
        (said in an info line); other classes refused in one line naming the difference. Names are
        compared in Unicode's NFC form (a macOS zip's folder names are NFD); the result keeps ``names``."""
        if not isinstance(names, (list, tuple)) or not names or not self.class_names:
            return self
        want, own = [str(n) for n in names], [str(n) for n in self.class_names]
        if want == own:
            return self
        where = f"{self.name} ({self.source})" if self.source and self.source != self.name else self.name
        want_n, own_n = _nfc(want), _nfc(own)
        if sorted(want_n) == sorted(own_n) and len(set(want_n)) == len(want_n):
            if want_n != own_n:
                log.info("%s holds the classes of %s in another order (%s); its labels are mapped to the "
                         "model's order (%s)", where, whose, _few(own), _few(want))  # fmt: skip
            to_model = torch.tensor([want_n.index(c) for c in own_n], dtype=torch.int64)
            return dataclasses.replace(
                self, train_y=to_model[self.train_y], test_y=to_model[self.test_y], class_names=want
            )
        lacking = [c for c, k in zip(want, want_n, strict=True) if k not in own_n]
        extra = [c for c, k in zip(own, own_n, strict=True) if k not in want_n]
        raise EdgeslimError(
            f"{where} has other classes than {whose} was trained on ({len(want)}: {_few(want)}): the data lacks "
            f"{_few(lacking) or 'none'}, and has {_few(extra) or 'no others'}; give the data it was trained on, "
            "one class folder named as each of its classes (data_dir)",
            param="data_dir",
        )

    def spec_for(self, arch: str, **kwargs: Any) -> ModelSpec:
        """A :class:`ModelSpec` for ``arch`` with this data set's classes, channels and size."""
        from edgeslim.models.registry import ModelSpec

        return ModelSpec(arch, self.num_classes, self.in_channels, self.image_size, dict(kwargs))

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise a one-line error if a model built from ``spec`` cannot consume this data."""
        if spec.in_channels != self.in_channels:
            raise EdgeslimError(
                f"model {spec.arch!r} takes {spec.in_channels}-channel input but {self.name} images have "
                f"{self.in_channels} channel(s); use a model built for this data set (or data matching it)",
                param="data",
            )
        if spec.num_classes != self.num_classes:
            raise EdgeslimError(
                f"model {spec.arch!r} has {spec.num_classes} classes but {self.name} has {self.num_classes}; "
                "use a model built for this data set"
            )

    def tensors(self, split: str, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8, labels) of ``split`` on ``device`` (copied there once and kept)."""
        if split not in ("train", "test"):
            raise EdgeslimError(f"unknown split {split!r}; use 'train' or 'test'")
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        dev = torch.device(device)
        if dev.type == "cpu":
            return x, y
        key = f"{split}:{dev}"
        if key not in self._device_cache:
            self._device_cache[key] = (x.to(dev), y.to(dev))
        return self._device_cache[key]  # type: ignore[return-value]

    def loader(
        self,
        split: str = "train",
        batch_size: int = 128,
        shuffle: bool | None = None,
        augment: bool | None = None,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        even_shards: bool = True,
    ) -> BatchLoader:
        """Batches of ``(x float32 normalized [B,C,H,W], y int64 [B])``.

        ``shuffle`` and ``augment`` default to True for ``train`` and False for ``test``.
        The same ``(seed, epoch, rank, world_size)`` gives the same batches and augmentation.
        ``even_shards=False`` (for evaluation) skips the padding that makes shards equal, so no
        image is counted twice; shard lengths then differ by at most one.
        """
        is_train = split == "train"
        return BatchLoader(
            self, split, batch_size,
            shuffle=is_train if shuffle is None else shuffle,
            augment=is_train if augment is None else augment,
            seed=seed, epoch=epoch, rank=rank, world_size=world_size, device=device, drop_last=drop_last,
            even_shards=even_shards,
        )  # fmt: skip

    def calibration_batches(
        self, count: int, batch_size: int = 128, *, seed: int, **kw: Any
    ) -> list[torch.Tensor]:
        """The inputs of the first ``count`` shuffled training batches, without augmentation (for
        re-estimating BatchNorm statistics); ``kw``: further :meth:`loader` arguments."""
        batches = self.loader("train", batch_size, shuffle=True, augment=False, seed=seed, **kw)
        return [x for _, (x, _) in zip(range(count), batches)]


def _nfc(names: list[str]) -> list[str]:
    """``names`` in Unicode's NFC form (``e`` and a combining accent as one ``é``)."""
    return [unicodedata.normalize("NFC", n) for n in names]


def _few(names: list[str], n: int = 4) -> str:
    """The first ``n`` of ``names``, comma-separated, ``...`` where there are more."""
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


class BatchLoader:
    """Re-iterable batches over one split; ``len()`` is the number of batches.

    Order: a permutation from a generator seeded by ``(seed, epoch)`` (the same on every rank),
    padded and sharded like ``DistributedSampler``. Augmentation draws from a generator seeded by
    ``(seed, epoch, rank)``. Both are re-created on every iteration, so iterating twice gives the
    same batches, and a resumed run reproduces an epoch bit-for-bit.
    """

    def __init__(
        self,
        bundle: DataBundle,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        device: str | torch.device,
        drop_last: bool,
        even_shards: bool = True,
    ) -> None:
        if batch_size < 1:
            raise EdgeslimError(f"batch size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise EdgeslimError(f"rank {rank} is not in [0, world_size={world_size})")
        if split not in ("train", "test"):
            raise EdgeslimError(f"unknown split {split!r}; use 'train' or 'test'")
        self.bundle, self.split, self.batch_size = bundle, split, batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.device = torch.device(device)
        n = len(bundle.train_y if split == "train" else bundle.test_y)
        if n == 0:
            raise EdgeslimError(
                f"{bundle.name} has no {split} images; check subset and data_dir",
                param=("subset", "data_dir"),
            )
        self.even_shards = even_shards
        if world_size == 1:
            self.num_samples = n
        elif even_shards:
            self.num_samples = -(-n // world_size)
        else:
            self.num_samples = len(range(rank, n, world_size))
        self._n = n

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def indices(self) -> torch.Tensor:
        """The sample indices this rank visits this epoch, in order."""
        order = None
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed("order", self.seed, self.epoch))
            order = torch.randperm(self._n, generator=g)
        return shard_indices(self._n, self.world_size, self.rank, order, self.even_shards)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x_all, y_all = self.bundle.tensors(self.split, self.device)
        idx = self.indices().to(x_all.device)
        gen = torch.Generator().manual_seed(mix_seed("augment", self.seed, self.epoch, self.rank))
        nb = len(self)
        for i in range(nb):
            sel = idx[i * self.batch_size : (i + 1) * self.batch_size]
            x = x_all.index_select(0, sel)
            if self.augment:
                x = self.bundle.augment(x, gen)
            yield self.bundle.normalize(x), y_all.index_select(0, sel)


def normalization_text(mean: Any, std: Any) -> str:
    """The input normalization a model takes, for a person: ``(pixels / 255 - mean) / std, mean [0.4881,
    0.4785, 0.4686], std [...]`` (what a device's preprocessing must do; the reports and ``info`` say it)."""
    m, s = (", ".join(f"{float(v):.4g}" for v in vals) for vals in (mean, std))
    return f"(pixels / 255 - mean) / std, mean [{m}], std [{s}]"


def steps_per_epoch(bundle: DataBundle, batch_size: int) -> int:
    """Iterations per epoch of the trainer's loader (it drops the last partial batch)."""
    n = len(bundle.train_y)
    return max(n // batch_size, 1) if n >= batch_size else 1
