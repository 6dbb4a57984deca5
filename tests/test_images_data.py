"""The ``images`` data set: a user's folder of photos of any size and layout (no class folders)
validates and calibrates an export at the model's input size, letterboxed for ultralytics models as
ultralytics' predictor letterboxes them, stretched for the others; training on it is refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeslim.cli import main
from edgeslim.data.imagefolder import LETTERBOX_FILL, read_images
from edgeslim.export.validate import real_inputs

#: (width, height) of the photos: landscape, portrait, square, wide
SIZES = [(200, 100), (100, 200), (160, 160), (300, 150)]


@pytest.fixture(scope="module")
def photos(cifar_zip: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 40 real photos (CIFAR-10 test JPEGs scaled up to four sizes), one nested
    in a subfolder as camera dumps are; no class structure."""
    root = tmp_path_factory.mktemp("photos")
    (root / "day2").mkdir()
    with zipfile.ZipFile(cifar_zip) as z:
        names = [n for n in z.namelist() if n.endswith(".jpg") and n.startswith("test/")][:40]
        for i, n in enumerate(names):
            im = Image.open(io.BytesIO(z.read(n))).convert("RGB").resize(SIZES[i % len(SIZES)])
            im.save(root / ("day2" if i == 39 else "") / f"IMG_{i:04d}.jpg")
    return root


def test_letterbox_keeps_the_aspect_and_pads_with_grey(photos: Path) -> None:
    x, total = read_images(photos, 3, (64, 64), 4, fit="letterbox")
    assert total == 40 and x.shape == (4, 3, 64, 64) and x.dtype == np.uint8
    # the even spread over 40 files picks 0, 13, 26, 39: sizes 200x100, 100x200, 300x150 and the nested 300x150
    land, port = x[0], x[1]
    assert (land[:, :16] == LETTERBOX_FILL).all() and (land[:, 48:] == LETTERBOX_FILL).all()  # 64x32 content
    assert (port[:, :, :16] == LETTERBOX_FILL).all() and (port[:, :, 48:] == LETTERBOX_FILL).all()
    assert not (land[:, 16:48] == LETTERBOX_FILL).all() and not (port[:, :, 16:48] == LETTERBOX_FILL).all()
    s, _ = read_images(photos, 3, (64, 64), 4, fit="stretch")
    assert not (s[0, :, :16] == LETTERBOX_FILL).all()  # stretched: no border
    g, _ = read_images(photos, 1, (32, 48), 2)
    assert g.shape == (2, 1, 32, 48)


def test_16_bit_grey_images_keep_their_contrast(tmp_path: Path) -> None:
    """A trial's 16-bit grey PNGs came out white (mean 254.5): PIL's convert clips them at 255. They are
    read by their top 8 bits, as an 8-bit export of the same image would be."""
    ramp = (np.arange(64, dtype=np.uint32)[None, :] * 1024 + 512).repeat(8, axis=0).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "wide.png")  # a 16-bit grey PNG
    with Image.open(tmp_path / "wide.png") as im:
        assert im.mode.startswith("I")
    for channels in (1, 3):
        x, total = read_images(tmp_path, channels, (8, 64), 1)
        assert total == 1 and x.shape == (1, channels, 8, 64)
        assert (x[0] == (ramp >> 8).astype(np.uint8)).all()  # 2, 6, ..., 254: the whole range
    # 12-bit sensor data and 8-bit values kept in 16-bit files are not made dark (from the review)
    for values, expected in ((ramp >> 4, ramp >> 8), (ramp >> 8, ramp >> 8)):
        Image.fromarray(values.astype(np.uint16)).save(tmp_path / "wide.png")
        x, _ = read_images(tmp_path, 1, (8, 64), 1)
        assert (x[0, 0] == expected.astype(np.uint8)).all()


def test_float_grey_images_are_not_black(tmp_path: Path) -> None:
    """A trial's 32-bit float TIFFs (mode F, 0..1) trained as all-black images (PIL's convert reads
    0..1 as levels of 255); fractions are scaled to 0..255, levels kept, NaN read as 0."""
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None, :].repeat(8, axis=0)
    for values, expected in ((ramp, np.rint(ramp * 255)), (ramp * 200, np.rint(ramp * 200))):
        Image.fromarray(values, "F").save(tmp_path / "f.tif")
        with Image.open(tmp_path / "f.tif") as im:
            assert im.mode == "F"
        for channels in (1, 3):
            x, _ = read_images(tmp_path, channels, (8, 64), 1)
            assert (x[0] == expected.astype(np.uint8)).all()
    values = ramp.copy()
    values[0, 0] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    x, _ = read_images(tmp_path, 1, (8, 64), 1)
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 0, -1] == 255


def test_real_inputs_from_a_folder_of_photos(photos: Path) -> None:
    """An ultralytics model's checkpoint meta (pixels / 255, letterbox) is honoured; a model without
    recorded statistics is normalized with the photos' own."""
    yolo_meta = {"mean": [0.0] * 3, "std": [1.0] * 3, "fit": "letterbox"}
    b = real_inputs((3, 64, 64), data="images", data_dir=str(photos), meta=yolo_meta, n=12)
    assert b is not None and b.real and b.labels is None and b.x.shape == (12, 3, 64, 64)
    assert b.source == f"images {photos} (40 files, letterboxed), 12 spread evenly over them"
    assert float(b.x.min()) >= 0 and float(b.x.max()) <= 1 and (b.x == LETTERBOX_FILL / 255).any()
    c = real_inputs((3, 48, 48), data="images", data_dir=str(photos), meta={}, n=40)
    assert c is not None and c.x.shape == (40, 3, 48, 48)
    assert np.allclose(c.x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)  # its own statistics
    assert c.source.endswith("(40 files, stretched), 40 spread evenly over them")


def test_export_a_detector_calibrated_on_photos(photos: Path, tmp_path: Path, capsys) -> None:
    """``export yolo:... --data images --data-dir PHOTOS``: checked in ONNX Runtime on the
    letterboxed photos, and INT8 calibration data written from them (no TensorRT here: the Q/DQ
    model and a trtexec script)."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "y8.onnx"
    args = ["export", "yolo:yolov8n", "--input-shape", "3,64,64", "--onnx", str(onnx_path), "--data", "images",
            "--data-dir", str(photos), "--trt", "--precision", "int8", "--calib-images", "20",
            "--n-validate", "8", "--json"]  # fmt: skip
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    val = res["onnx"]["validation"]
    assert val["real_data"] and val["passed"] and val["n"] == 8 and val["source"].startswith("images ")
    calib = np.load(tmp_path / "y8.calib.npy")
    assert calib.shape == (20, 3, 64, 64)
    # 28 photos read (8 to check, 20 to calibrate), letterboxed, pixels / 255 as ultralytics feeds them
    want = read_images(photos, 3, (64, 64), 28, fit="letterbox")[0][8:] / 255.0
    np.testing.assert_allclose(calib, want, atol=1e-6)
    assert (calib == np.float32(LETTERBOX_FILL / 255)).any()
    assert (
        res["qdq"]["calib_images"] == 20 and res["qdq"]["top1_agreement"] is None
    )  # no top-1 for a detector
    assert not any("INT8 calibrated on" in w for w in res["warnings"])
    # the default 512 calibration images of a 64x64 input, of a 40-photo folder: what was used is said
    args = [*args[: args.index("--calib-images")], "--n-validate", "8", "--json", "--force"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["qdq"]["calib_images"] == 32
    assert any("INT8 calibrated on 32 images, not the default 512 for 64x64" in w for w in res["warnings"])


def test_images_cannot_train_and_a_flat_folder_is_pointed_to_it(photos: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--arch", "vgg-small", "--data", "images", "--data-dir", str(photos), "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no labels" in err and "imagefolder" in err
    assert not (tmp_path / "run").exists()
    assert main(["export", "tv:resnet18", "--input-shape", "3,64,64", "--onnx", str(tmp_path / "r.onnx"), "--data",
                 "imagefolder", "--data-dir", str(photos)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "images data set" in err


def test_int8_without_enough_images_says_how_many(photos: Path, tmp_path: Path, capsys) -> None:
    base = ["export", "tv:resnet18", "--input-shape", "3,32,32", "--trt", "--precision", "int8"]
    assert main([*base, "--onnx", str(tmp_path / "a.onnx"), "--data", "images", "--data-dir", str(photos),
                 "--n-validate", "64"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has 40" in err and "--n-validate 64" in err
    assert main([*base, "--onnx", str(tmp_path / "b.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data" in err and "images takes any folder" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_camera_dump_with_junk_and_rotated_photos(photos: Path, tmp_path: Path, caplog) -> None:
    """What a real folder holds besides photos: macOS zip metadata and hidden files (not images),
    a corrupt JPEG (skipped with a warning, the rest used), and a phone photo stored sideways with
    an EXIF orientation (turned upright, as OpenCV reads it)."""
    import logging
    import shutil

    root = tmp_path / "dump"
    shutil.copytree(photos, root)
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._IMG_0000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / ".thumb.jpg").write_bytes(b"junk")
    (root / "IMG_9998.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    side = Image.new("RGB", (100, 200), (255, 0, 0))  # stored 100 wide x 200 high ...
    exif = side.getexif()
    exif[0x0112] = 6  # ... to be shown turned 90 degrees: 200 wide x 100 high
    side.save(root / "IMG_9999.jpg", exif=exif)
    with caplog.at_level(logging.WARNING):
        x, total = read_images(root, 3, (64, 64), 100, fit="letterbox")
    assert total == 42 and len(x) == 41  # 40 photos + the corrupt one + the sideways one; the corrupt skipped
    assert "1 of 42 images" in caplog.text and "IMG_9998" in caplog.text
    (root / "side").mkdir()
    (root / "IMG_9999.jpg").rename(root / "side" / "IMG_9999.jpg")
    (upright,), _ = read_images(root / "side", 3, (64, 64), 1, fit="letterbox")
    # upright it is 200 wide x 100 high: 64 x 32 inside the square, grey above and below, red inside
    assert (upright[:, :16] == LETTERBOX_FILL).all() and (upright[:, 48:] == LETTERBOX_FILL).all()
    assert upright[0, 32, 32] > 200 and upright[1, 32, 32] < 60


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_an_image_folder_trains_on_photos_turned_upright(tmp_path: Path, ext: str) -> None:
    """A trial's phone photos with an EXIF orientation trained sideways while export checked them
    upright (the images data set, OpenCV on the device): an image folder turns them upright too, and
    its size is the upright one (stored 100 wide x 200 high, shown 200 x 100). TIFFs: PIL's reader
    already reports their upright size, and the probe turned it a second time (the review of the data
    loading, finding 2: every image was stretched to 200 high x 100 wide)."""
    from edgeslim.data import load_dataset

    for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(3):
            im = Image.new("RGB", (100, 200), colour)
            im.paste((0, 255, 0), (0, 0, 100, 20))  # a green band along the stored top edge
            exif = im.getexif()
            exif[0x0112] = 6  # shown turned 90 degrees clockwise: the band on the right
            im.save(tmp_path / "f" / c / f"IMG_{i}.{ext}", exif=exif)
    b = load_dataset("imagefolder", data_dir=tmp_path / "f", cache_dir=tmp_path / "c")
    assert b.input_shape == (3, 100, 200)
    x = b.train_x[0].numpy()
    assert x[1, 50, 190] > 200 and x[1, 50, 10] < 60  # green on the right, not along the top


def test_photo_statistics_are_not_written_as_the_models_normalization(photos: Path, tmp_path: Path, capsys):
    """A model that records no mean/std is checked on the photos normalized with their own
    statistics, but the ONNX metadata does not claim those as the model's normalization."""
    from edgeslim.export import read_metadata

    out = tmp_path / "r.onnx"
    assert main(["export", "tv:resnet18", "--input-shape", "3,32,32", "--onnx", str(out), "--data", "images",
                 "--data-dir", str(photos), "--n-validate", "8"]) == 0  # fmt: skip
    capsys.readouterr()
    assert json.loads(read_metadata(out)["normalization"]) == {"mean": None, "std": None}


def test_the_normalization_of_a_model_that_records_none_is_given_once(photos: Path, tmp_path: Path, capsys):
    """--mean/--std on prune: the photos it calibrates on, the slim checkpoint, and then export (its
    ORT check and ONNX metadata) all use them, with no "records no mean/std" guess (a trial's UNet
    saw that warning on every prune and export, with no way to say its normalization)."""
    import torch
    from torchvision.models import resnet18

    from edgeslim.export import read_metadata

    weights = tmp_path / "w.pt"
    torch.save(resnet18(num_classes=10).state_dict(), weights)
    norm = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    slim = tmp_path / "s.pt"
    args = ["prune", "tv:resnet18", "--weights", str(weights), "--input-shape", "3,32,32", "-o", str(slim),
            "--data", "images", "--data-dir", str(photos), "--calib", "8"]  # fmt: skip
    assert main([*args, *norm]) == 0
    assert "records no mean/std" not in capsys.readouterr().err
    out = tmp_path / "s.onnx"
    assert main(["export", str(slim), "--onnx", str(out), "--data", "images", "--data-dir", str(photos),
                 "--n-validate", "8"]) == 0  # fmt: skip
    assert "records no mean/std" not in capsys.readouterr().err
    meta = json.loads(read_metadata(out)["normalization"])
    assert meta == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    for bad, needle in (
        (["--mean", "0.5,0.5,0.5"], "--mean and --std together"),
        (["--mean", "0.5", "--std", "0.2"], "one per channel"),
        (["--mean", "124,116,104", "--std", "58,57,57"], "divide values on the 0-255 scale by 255"),
    ):  # the 0-255 slip: a trial's export "passed" its check at chance accuracy
        assert main([*args, "--force", *bad]) == 2
        assert needle in capsys.readouterr().err


def test_a_whole_pickled_yolo_is_fed_as_ultralytics_feeds_it(photos: Path, tmp_path: Path) -> None:
    """An ultralytics model from a file that records no preprocessing (a whole pickled module) is
    still letterboxed and fed pixels / 255."""
    pytest.importorskip("ultralytics")
    import torch

    from edgeslim.models import ModelSpec, create_model
    from edgeslim.pipelines.source import load_model_or_arch

    whole = tmp_path / "whole.pt"
    torch.save(create_model(ModelSpec("yolo:yolov8n", 80, 3, (64, 64))), whole)
    loaded = load_model_or_arch(str(whole), trust_pickle=True)
    assert loaded.meta["fit"] == "letterbox" and loaded.meta["std"] == [1.0] * 3
    b = real_inputs((3, 64, 64), data="images", data_dir=str(photos), meta=loaded.meta, n=4)
    assert b is not None and not b.estimated and "letterboxed" in b.source and float(b.x.min()) >= 0


def test_a_checkpoint_whose_recorded_photos_are_gone_validates_without_them(photos: Path) -> None:
    """A slim checkpoint records the photos its surgery was checked on; copied to a machine without
    them, its export validates on random inputs with the usual note instead of failing on the path."""
    from edgeslim.export.validate import real_inputs

    here = real_inputs((3, 32, 32), meta={"data": "images", "data_dir": str(photos)}, n=4)
    assert here is not None and here.real and len(here.x) == 4
    assert real_inputs((3, 32, 32), meta={"data": "images", "data_dir": str(photos / "gone")}, n=4) is None


def test_an_ultralytics_classifier_takes_centre_cropped_images() -> None:
    """A YOLO user's trial: a -cls model's export check and INT8 calibration read letterboxed photos
    (grey bars its deployment never sees); ultralytics' classify_transforms scale the short side to
    the size and cut the centre."""
    import io

    from PIL import Image

    from edgeslim.data.imagefolder import decode
    from edgeslim.models.yolo import input_preprocessing

    ultralytics = pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel

    assert input_preprocessing(ClassificationModel("yolov8n-cls.yaml", verbose=False))["fit"] == "crop"
    assert input_preprocessing(DetectionModel("yolov8n.yaml", verbose=False))["fit"] == "letterbox"
    assert ultralytics  # (imported for the models above)
    wide = np.zeros((20, 60, 3), np.uint8)  # H 20, W 60: red left, green centre, blue right
    wide[:, :20, 0], wide[:, 20:40, 1], wide[:, 40:, 2] = 255, 255, 255
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, "PNG")
    crop = decode(buf.getvalue(), "w.png", 3, (10, 10), fit="crop")
    assert (
        crop.shape == (3, 10, 10)
        and crop[1, :, 2:8].min() == 255
        and crop[0].max() < 64
        and crop[2].max() < 64
    )
    boxed = decode(buf.getvalue(), "w.png", 3, (10, 10), fit="letterbox")
    assert boxed[:, 0].max() == 114  # (grey bars above and below)


def test_an_absurdly_small_std_is_refused_when_given(tmp_path: Path, capsys) -> None:
    """The review of the data loading (finding 7): std 1e-300 passed the checks and failed later as
    "training diverged" (the images multiplied by 1e300). A std under 1e-3 of the pixel range is
    refused in one line, before any data is read."""
    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.source import checked_normalization

    for std in ([1e-300], [0.0], [float("nan")], [-0.2]):
        with pytest.raises(EdgeslimError, match=r"each must be at least 0.001 of the pixel range") as e:
            checked_normalization([0.5], std, 1)
        assert e.value.params == ("std",)
    assert checked_normalization([0.5], [0.001], 1) == ([0.5], [0.001])
    rc = main(["slim", "vgg-small", "--data", "digits", "--mean", "0.5", "--std", "1e-300", "--out",
               str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--std" in err and not (tmp_path / "s").exists()


def test_a_mean_and_std_of_other_counts_name_no_channel_count_the_model_lacks(tmp_path: Path, capsys) -> None:
    """Train review, finding 10: ``--mean 0.5,0.5 --std 0.2,0.2,0.2`` said "the model takes 2 channels" (the
    count was unknown: len(mean) stood in) and one channel read "1 channels"."""
    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.source import checked_normalization

    with pytest.raises(EdgeslimError) as e:
        checked_normalization([0.5, 0.5], [0.2, 0.2, 0.2], None)
    assert str(e.value) == "mean has 2 values and std 3: give as many of each, one per channel of the input"
    with pytest.raises(EdgeslimError) as e:
        checked_normalization([0.5, 0.5], [0.2, 0.2], 1)
    assert "the model takes 1 channel: give one per channel" in str(e.value)
    rc = main(["slim", "vgg-small", "--data", "digits", "--mean", "0.5,0.5", "--std", "0.2,0.2,0.2", "--out",
               str(tmp_path / "s")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "takes 2" not in err and "--mean has 2 values and --std 3" in err, err


def test_an_image_replaced_with_its_time_put_back_is_decoded_again(tmp_path: Path) -> None:
    """A review of the data cache: an image replaced by another of the same size whose modification
    time was put back (touch -r, exiftool -P) kept its cached pixels (the fingerprint read path, size
    and mtime only)."""
    import os

    from edgeslim.data import load_dataset

    for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), colour).save(
                tmp_path / "f" / c / f"{i}.bmp"
            )  # (bmp: one size per shape)
    first = load_dataset("imagefolder", data_dir=tmp_path / "f", cache_dir=tmp_path / "c")
    img = tmp_path / "f" / "red" / "0.bmp"
    st = img.stat()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(img)  # green now, the same size
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert img.stat().st_size == st.st_size and img.stat().st_mtime_ns == st.st_mtime_ns
    again = load_dataset("imagefolder", data_dir=tmp_path / "f", cache_dir=tmp_path / "c")
    pixels = {tuple(int(v) for v in x[:, 0, 0]) for x in again.train_x.numpy()} | {
        tuple(int(v) for v in x[:, 0, 0]) for x in again.test_x.numpy()
    }
    before = {tuple(int(v) for v in x[:, 0, 0]) for x in first.train_x.numpy()}
    assert (0, 255, 0) in pixels and (0, 255, 0) not in before


def test_a_check_on_a_small_test_split_names_no_option_not_given(tmp_path: Path, caplog) -> None:
    """A new user's trial: export's check asks for up to 64 test images; a folder holding 12 printed
    "test_subset 64 asks for more than the 12 test images it holds", an option the user never gave."""
    import logging

    for split, n in (("train", 4), ("test", 2)):
        for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), colour).save(tmp_path / "f" / split / c / f"{i}.png")
    with caplog.at_level(logging.WARNING):
        batch = real_inputs((3, 8, 8), data="imagefolder", data_dir=str(tmp_path / "f"), n=64)
    assert len(batch.x) == 4 and "asks for more than" not in caplog.text


def test_a_model_that_records_no_normalization_is_checked_with_the_folders_statistics(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    """The review of a timm user's chain (finding 1): a model that records no mean/std, exported with an
    image folder, was checked (and its ONNX metadata written) with the statistics of ONE training image
    (the check loads the training split with a subset of 1), and INT8 calibration with those of the
    training images, without a word. The check and the calibration use the training split's statistics,
    said once, and the ONNX records none."""
    import logging

    import torch

    from edgeslim.data import load_dataset
    from edgeslim.export import export_onnx, read_metadata

    monkeypatch.setenv("EDGESLIM_CACHE", str(tmp_path / "c"))
    for split, n in (("train", 4), ("test", 1)):
        for c, colour in (("blue", (0, 0, 200)), ("red", (200, 0, 0))):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), tuple(v // (i + 1) for v in colour)).save(
                    tmp_path / "f" / split / c / f"{i}.png"
                )
    folder = str(tmp_path / "f")
    whole = load_dataset("imagefolder", data_dir=folder, cache_dir=tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        calib = real_inputs((3, 8, 8), data="imagefolder", data_dir=folder, n=8, split="train")
        check = real_inputs((3, 8, 8), data="imagefolder", data_dir=folder, n=64)
    assert check.mean == calib.mean == whole.mean and check.std == calib.std == whole.std
    assert check.estimated and calib.estimated
    said = [r.getMessage() for r in caplog.records if "records no mean/std" in r.getMessage()]
    assert len(said) == 1 and "the statistics of 8 of its training images" in said[0]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    res = export_onnx(net, tmp_path / "m.onnx", (3, 8, 8), inputs=check)
    assert json.loads(read_metadata(res.path)["normalization"]) == {"mean": None, "std": None}
    # a model that records its own: used, not estimated
    own = real_inputs(
        (3, 8, 8), data="imagefolder", data_dir=folder, meta={"mean": [0.5] * 3, "std": [0.25] * 3}
    )
    assert own.mean == (0.5,) * 3 and not own.estimated


def test_the_int8_agreement_warning_names_the_flag(photos: Path, tmp_path: Path, capsys) -> None:
    """The review of a timm user's chain (finding 6): export's warning of a poor INT8 agreement told a
    command-line user to "calibrate on more images (calib_images)", the Python parameter: the command
    printed its warnings as they were, without the flags put in."""
    import torch
    from torch import nn

    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    with torch.no_grad():  # ten logits a hair apart: INT8 rounds them to ties
        net[2].weight.copy_(1.0 + 1e-4 * torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
        net[2].bias.zero_()
    torch.save(net, tmp_path / "tie.pt")
    argv = ["export", f"pickle:{tmp_path / 'tie.pt'}", "--trust-pickle", "--input-shape", "3,8,8", "--onnx",
            str(tmp_path / "tie.onnx"), "--data", "images", "--data-dir", str(photos), "--precision", "int8",
            "--calib-images", "16", "--n-validate", "16"]  # fmt: skip
    assert main(argv) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "INT8 agrees with FP32 on the top-1 class of only" in err
    assert "calibrate on more images (--calib-images) or keep FP32" in err


def test_unreadable_photos_are_replaced_by_others_and_said_in_the_json(
    photos: Path, tmp_path: Path, capsys
) -> None:
    """The review of a user's own image folder (finding 6): the images data set read an even spread of
    exactly n files and dropped the undecodable ones without reading others, then warned "add images"
    though the folder had enough; and the "N of M images could not be read" warning was missing from
    export's --json warnings. Others are read in their place (spread over the files not tried, the same
    every run), and the warning is one of the export's warnings."""
    import shutil

    root = tmp_path / "dump"
    shutil.copytree(photos, root)
    for name in ("IMG_0000.jpg", "IMG_0013.jpg"):  # the first and one more of the even spread: corrupt
        (root / name).write_bytes(b"\xff\xd8\xff not really a jpeg")
    x, total = read_images(root, 3, (32, 32), 4)
    assert total == 40 and len(x) == 4
    notes: list[str] = []
    assert np.array_equal(read_images(root, 3, (32, 32), 4, notes=notes)[0], x)  # (the same every run)
    assert notes and notes[0].startswith(
        f"2 of 6 images tried in {root} could not be read and were skipped (as many"
    )
    assert main(["export", "vgg-small", "--input-shape", "3,32,32", "--onnx", str(tmp_path / "v.onnx"), "--data",
                 "images", "--data-dir", str(root), "--n-validate", "4", "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["onnx"]["validation"]["n"] == 4
    assert any(w.startswith("2 of 6 images tried in") for w in res["warnings"]), res["warnings"]
