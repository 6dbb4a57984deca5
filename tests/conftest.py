"""Shared test set-up. Tests run under pytest-xdist (-n 2) on a 2-core CPU: one thread each."""

from __future__ import annotations

import os

os.environ.setdefault("EDGESLIM_NO_PROGRESS", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # ultralytics must never pip-install during tests

import pytest  # noqa: E402

try:  # torch is optional (the device-side install has none)
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _seed():
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(scope="session")
def fmnist_dir() -> str:
    if not os.path.isfile(os.path.join(FMNIST_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.fail("Fashion-MNIST is missing: run `make setup` (installs dataset-fashion-mnist)")
    return FMNIST_DIR


@pytest.fixture(scope="session")
def cifar_zip() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "shared", "data", "cifar10-jpeg.zip"))
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: the shared data folder must sit beside the checkout")
    return path
