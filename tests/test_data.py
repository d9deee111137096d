"""Datasets: IDX files, image folders, digits; deterministic splits; the model card's preprocessing; bad input."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

import edgekit
from edgekit.data import FASHION_MNIST_DIR, DatasetError, Preprocess, load_dataset, read_idx
from tests.conftest import assert_user_error, run_cli

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_idx(path: Path, data: torch.Tensor, compress: bool) -> None:
    raw = bytes([0, 0, 0x08, data.dim()]) + struct.pack(f">{data.dim()}I", *data.shape) + data.numpy().tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_fashion(root: Path, n_train: int = 30, n_val: int = 10, compress: bool = True) -> tuple:
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        x = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        y = torch.arange(n, dtype=torch.uint8) % 10
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress)
        sets[prefix] = (x, y)
    return sets


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_load_with_their_own_test_split_as_validation(tmp_path, compress):
    sets = fake_fashion(tmp_path / "fm", compress=compress)
    d = load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", 32, MEAN, STD, calib_size=8)
    assert (len(d.train), len(d.val), len(d.calib)) == (30, 10, 8)
    assert d.num_classes == 10 and d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert torch.equal(d.val.y, sets["t10k"][1].long())
    x, y = d.val.batch([3])
    assert x.shape == (1, 3, 32, 32) and int(y) == 3
    # grey to RGB: the three channels are the same image, each normalised with its own mean / std
    raw = sets["t10k"][0][3].float().div(255)[None, None]
    up = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    for c in range(3):
        torch.testing.assert_close(x[0, c], (up[0, 0] - MEAN[c]) / STD[c])


def test_preprocessing_is_x_over_255_then_mean_std():
    pre = Preprocess(4, MEAN, STD)
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    img[:, 1] = 0
    x = pre(img)
    torch.testing.assert_close(
        x[0, :, 0, 0], torch.tensor([(1 - MEAN[0]) / STD[0], -MEAN[1] / STD[1], (1 - MEAN[2]) / STD[2]])
    )


def test_splits_are_deterministic_and_calibration_comes_from_train():
    a = load_dataset("digits", 16, MEAN, STD, calib_size=64)
    b = load_dataset("digits", 16, MEAN, STD, calib_size=64)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.calib.y, b.calib.y)
    assert len(a.train) + len(a.val) == 1797 and len(a.calib) == 64
    train_rows = {bytes(r.numpy()) for r in a.train.images}
    assert all(bytes(r.numpy()) in train_rows for r in a.calib.images)
    c = load_dataset("digits", 16, MEAN, STD, seed=1)
    assert not torch.equal(a.val.y, c.val.y)
    small = load_dataset("digits", 16, MEAN, STD, limit=100, val_limit=30)
    assert (len(small.train), len(small.val)) == (100, 30)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40 + i, 30), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    d = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", 24, MEAN, STD)
    assert d.classes == ("cat", "dog") and len(d.train) + len(d.val) == 10 and len(d.val) == 2
    x, y = d.train.batch(range(len(d.train)))
    assert x.shape == (8, 3, 24, 24)
    red = x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))
    assert torch.equal(red, y == 0)  # each image kept its label


def test_image_folder_with_train_and_val_directories(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("L", (16, 16), 100).save(tmp_path / split / cls / f"{i}.jpg")
    d = load_dataset(f"imagefolder:{tmp_path}", 16, MEAN, STD)
    assert (len(d.train), len(d.val)) == (6, 4)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist (CI installs it)")
def test_the_debian_fashion_mnist_package():
    d = load_dataset("fashion-mnist", 28, MEAN, STD)
    assert (len(d.train), len(d.val)) == (60000, 10000)
    assert torch.bincount(d.val.y).tolist() == [1000] * 10
    assert d.train.images.shape == (60000, 1, 28, 28) and d.train.images.dtype == torch.uint8


def test_bad_idx_files(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"\x00\x00\x0d\x01abcd")
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(tmp_path / "x.idx")
    (tmp_path / "y.idx").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "y.idx")


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("fashion-mnist:{tmp}/nowhere", "does not exist"),
        ("imagefolder:{tmp}/nowhere", "does not exist"),
        ("imagefolder:{tmp}/empty", "holds no images"),
        ("cifar10", "unknown dataset 'cifar10'"),
    ],
)
def test_bad_dataset_specs_are_one_line_errors(tmp_path, spec, needle):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    out = tmp_path / "m.pt"
    proc = run_cli(
        "train", "mobilenetv2_100", "--data", spec.format(tmp=tmp_path), "--out", str(out), "--input-size", "32"
    )
    assert_user_error(proc, needle)
    assert not out.exists()


@pytest.fixture
def stripes_source():
    from edgekit.data import Source, Split, register_source, unregister_source

    class Stripes(Source):
        """Seeded images of horizontal or vertical stripes (`stripes[:N]`: N images)."""

        name = "stripes"
        usage = "stripes[:N]"
        arg = "optional"

        def load(self, arg, pre, val_fraction, seed):
            n = int(arg or 60)
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, 2, (n,), generator=g)
            x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
            x[y == 0, :, ::2, :] = 255
            x[y == 1, :, :, ::2] = 255
            cut = int(n * (1 - val_fraction))
            return Split(x[:cut], y[:cut], pre), Split(x[cut:], y[cut:], pre), ("horizontal", "vertical"), {"n": n}

        def fingerprint(self, arg, file_hash):
            return {"stripes": int(arg or 60)}

    register_source(Stripes)
    yield Stripes
    unregister_source("stripes")


def test_a_registered_source_is_a_dataset_everywhere(stripes_source, user_model_file, tmp_path):
    """One class adds a dataset: load_dataset, training, a recipe's cache key and the CLI's help all take it."""
    from edgekit.data import data_help
    from edgekit.recipe.plan import Fingerprints

    assert "stripes[:N]" in data_help()
    d = load_dataset("stripes:50", 16)
    assert d.classes == ("horizontal", "vertical") and len(d.train) == 40 and len(d.val) == 10
    assert d.train.x.shape == (40, 3, 16, 16)
    assert Fingerprints().data("stripes:50") == {"stripes": 50}
    with pytest.raises(DatasetError, match=r"unknown dataset 'stripe'; use one of: digits, .*stripes\[:N\]"):
        load_dataset("stripe", 16)
    net = tmp_path / "two.py"
    net.write_text(user_model_file.read_text().replace("nn.Linear(32, 5)", "nn.Linear(32, 2)"))
    r = edgekit.train(
        f"{net}:TinyNet", "stripes:80", out=tmp_path / "s.pt", epochs=3, input_size=16, lr=1e-2, batch_size=16
    )
    assert r.report["data"]["spec"] == "stripes:80" and r.report["val_accuracy"] >= 0.75, r.report
