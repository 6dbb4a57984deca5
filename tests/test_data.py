"""edgeslim.data on real data: Fashion-MNIST, sklearn digits, the CIFAR-10 JPEG zip."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from edgeslim.data import balanced_subset, list_datasets, load_dataset
from edgeslim.data.bundle import pad_crop, random_hflip
from edgeslim.errors import EdgeslimError


@pytest.fixture(scope="module")
def fm(fmnist_dir):
    return load_dataset("fashion-mnist", data_dir=fmnist_dir, subset=600, test_subset=200)


def test_list_datasets_names():
    assert {"fashion-mnist", "digits"} <= set(list_datasets())


def test_fashion_mnist_full_shapes_and_norm():
    b = load_dataset("fashion-mnist")  # found in the Debian location without --data-dir
    assert (len(b.train_x), len(b.test_x)) == (60000, 10000)
    assert b.train_x.dtype == torch.uint8 and b.train_x.shape[1:] == (1, 28, 28)
    assert b.in_channels == 1 and b.image_size == (28, 28) and b.num_classes == 10
    assert b.class_names[0] == "T-shirt/top" and len(b.class_names) == 10
    # the published constants match the data
    xf = b.train_x.float() / 255
    assert abs(xf.mean().item() - b.mean[0]) < 1e-3 and abs(xf.std().item() - b.std[0]) < 1e-3
    assert torch.equal(b.train_y.bincount(), torch.full((10,), 6000))


def test_subset_is_balanced_and_deterministic(fm, fmnist_dir):
    assert len(fm.train_x) == 600 and len(fm.test_x) == 200
    assert torch.equal(fm.train_y.bincount(), torch.full((10,), 60))
    again = load_dataset("fashion-mnist", data_dir=fmnist_dir, subset=600, test_subset=200)
    assert torch.equal(again.train_x, fm.train_x) and torch.equal(again.test_y, fm.test_y)
    other = load_dataset("fashion-mnist", data_dir=fmnist_dir, subset=600, seed=1)
    assert not torch.equal(other.train_x, fm.train_x)


def test_balanced_subset_uneven_classes():
    labels = np.array([0] * 3 + [1] * 100 + [2] * 100)
    ix = balanced_subset(labels, 30, seed=0)
    assert np.bincount(labels[ix]).tolist() == [3, 14, 13]
    assert len(balanced_subset(labels, 1000, seed=0)) == len(labels)


def test_loader_batches_normalized(fm):
    ld = fm.loader("test", batch_size=64)
    assert len(ld) == 4  # 200 / 64 rounded up
    batches = list(ld)
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (200, 1, 28, 28)
    assert torch.allclose(x, fm.normalize(fm.test_x))  # test split: no shuffle, no augmentation
    assert len(fm.loader("train", batch_size=64, drop_last=True)) == 600 // 64


def test_loader_deterministic_per_seed_epoch(fm):
    a = list(fm.loader("train", batch_size=100, seed=3, epoch=2))
    b = list(fm.loader("train", batch_size=100, seed=3, epoch=2))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = list(fm.loader("train", batch_size=100, seed=3, epoch=3))
    assert not torch.equal(a[0][1], c[0][1])
    # a loader is re-iterable with the same result
    ld = fm.loader("train", batch_size=100, seed=3, epoch=2)
    assert torch.equal(next(iter(ld))[0], next(iter(ld))[0])


def test_loader_shards_disjoint_equal(fm):
    shards = [
        fm.loader("train", batch_size=50, world_size=3, rank=r, augment=False).indices() for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 200
    assert set(torch.cat(shards).tolist()) == set(range(600))
    # 7 ranks: padded to 602 by wrapping, equal length, every sample visited
    shards = [fm.loader("train", world_size=7, rank=r).indices() for r in range(7)]
    assert {len(s) for s in shards} == {86} and set(torch.cat(shards).tolist()) == set(range(600))


def test_augmentation_is_batchwise_crop_and_flip(fm):
    x = fm.train_x[:256]
    y = pad_crop(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert sum(not torch.equal(a, b) for a, b in zip(x, y)) > 200  # most samples shifted
    f = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(b, a.flip(2)) for a, b in zip(x, f)]
    same = [torch.equal(a, b) for a, b in zip(x, f)]
    assert all(p or q for p, q in zip(flipped, same)) and 90 < sum(flipped) < 166
    # the same generator state gives the same augmentation
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(fm.augment(x, g1), fm.augment(x, g2))


def test_pad_crop_offsets_cover_all_shifts():
    x = torch.zeros(2000, 1, 5, 5, dtype=torch.uint8)
    x[:, :, 2, 2] = 255  # a single bright centre pixel
    y = pad_crop(x, 2, torch.Generator().manual_seed(0))
    pos = y.view(2000, -1).argmax(1)
    seen = {(int(p) // 5, int(p) % 5) for p in pos}
    assert seen == {(r, c) for r in range(5) for c in range(5)}  # every shift in [-2, 2]^2 occurs


def test_digits_no_flip(fmnist_dir):
    d = load_dataset("digits")
    assert (len(d.train_x), len(d.test_x)) == (1433, 364) and d.image_size == (8, 8)
    assert not d.hflip and d.pad == 1
    assert d.train_x.max() == 255
    xf = d.train_x.float() / 255
    assert abs(xf.mean().item() - d.mean[0]) < 1e-3
    spec = d.spec_for("vgg-small")
    assert spec.input_shape == (1, 8, 8) and spec.num_classes == 10


def test_unknown_dataset():
    with pytest.raises(EdgeslimError, match="unknown data set 'fashion'.*did you mean fashion-mnist"):
        load_dataset("fashion")


def test_bad_subset():
    with pytest.raises(EdgeslimError, match="--subset must be a positive"):
        load_dataset("digits", subset=0)


def test_fmnist_missing_dir(tmp_path):
    with pytest.raises(EdgeslimError, match="no Fashion-MNIST IDX files"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(EdgeslimError, match="does not exist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nope")


def test_fmnist_corrupt_files(tmp_path, fmnist_dir):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(f"{fmnist_dir}/{name}", tmp_path / name)
    # truncated test images: a valid gzip of a cut IDX body
    raw = gzip.decompress(open(f"{fmnist_dir}/t10k-images-idx3-ubyte.gz", "rb").read())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))
    with pytest.raises(EdgeslimError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(EdgeslimError, match="corrupt"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_channel_mismatch(fm):
    from edgeslim.models import ModelSpec

    with pytest.raises(EdgeslimError, match="3-channel input but fashion-mnist images have 1"):
        fm.check_spec(ModelSpec("vgg-small", 10, 3, (32, 32)))
    fm.check_spec(fm.spec_for("vgg-small"))
