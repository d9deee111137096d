"""Bad input is one line and exit code 2, and leaves nothing behind: image folders, IDX files, demo labels,
recipes, models that cannot run at the input size asked for.

Each case goes through the CLI in this process (`run_cli`) and checks: exit code 2, at most 3 lines on stderr
with no traceback, the message's gist, and nothing written where the command writes (no files, no partial
`.*.partial-*` files).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

# a small network that runs at any size (global pooling before the classifier)
SMALL_NET = """
from torch import nn


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        )
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))
"""

# a network that runs at input size 32 only (flatten into a Linear of fixed width, as position embeddings or
# attention biases fix a transformer's resolution)
FIXED_NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(self.stem(x)), 1))
"""

# one convolution and a classifier: the two layers unstructured pruning keeps, nothing else
STEM_NET = """
from torch import nn


class StemNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.stem(x).mean((2, 3)))
"""


# -- writing the bad inputs ------------------------------------------------------------------------------------------


def image_folder(root: Path, per_class: dict[str, int], size: int = 16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def write_idx(path: Path, data: np.ndarray) -> None:
    data = np.asarray(data, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()
    path.write_bytes(gzip.compress(raw))


def idx_folder(root: Path, *, train_labels: list[int], n_train_images: int | None = None) -> Path:
    """The four Fashion-MNIST files, 8x8 images; the training labels as given."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_images = len(train_labels) if n_train_images is None else n_train_images
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_images, 8, 8)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array(train_labels))
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 8, 8)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(4) % 10)
    return root


def fake_tflite(root: Path, num_classes: int = 10) -> Path:
    """An artifact with a manifest as `edgekit compile` writes it (not a runnable model: bundling only copies it)."""
    root.mkdir(parents=True, exist_ok=True)
    artifact = root / "net.tflite"
    artifact.write_bytes(b"TFL3" + bytes(60))
    manifest = {
        "target": "tflite",
        "artifact": artifact.name,
        "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "bytes": artifact.stat().st_size,
        "model": {"reference": "net.py:Net", "name": "net", "family": "user", "num_classes": num_classes},
        "inputs": [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [1, num_classes], "dtype": "float32"}],
        "preprocessing": {"size": 16, "layout": "NCHW", "mean": [0.5] * 3, "std": [0.25] * 3, "scale": 1 / 255},
        "options": {"input_size": 16},
    }
    (root / "net.tflite.json").write_text(json.dumps(manifest))
    return artifact


def recipe(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "recipe.yaml"
    path.write_text(text)
    return path


def fixed_net_checkpoint(src: Path, dest: Path) -> Path:
    """FIXED_NET as an edgekit checkpoint whose card says it was built for 32."""
    from edgekit.models import load_model, save_checkpoint

    save_checkpoint(load_model(f"{src}:Net", input_size=32), dest)
    return dest


# -- the matrix ------------------------------------------------------------------------------------------------------

# (case id, a function (tmp, out) -> CLI arguments, what the one line must say)
Case = tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]


def _train(data: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def args(tmp: Path, out: Path) -> list[str]:
        spec = data.format(tmp=tmp)
        return ["train", f"{tmp / 'small.py'}:SmallNet", "--data", spec, "--out", str(out / "m.pt"),
                "--input-size", "16", "--epochs", "1", *extra]  # fmt: skip

    return args


def _bundle(labels: Callable[[Path], str]) -> Callable[[Path, Path], list[str]]:
    def args(tmp: Path, out: Path) -> list[str]:
        artifact = fake_tflite(tmp / "artifact")
        return ["demo", "bundle", str(artifact), "--app", "android", "--labels", labels(tmp), "--out", str(out / "app")]

    return args


def _run(text: str, *, own_out: bool = True) -> Callable[[Path, Path], list[str]]:
    def args(tmp: Path, out: Path) -> list[str]:
        path = recipe(tmp / "recipes", text)
        return ["run", str(path), *(["--out", str(out / "run")] if own_out else [])]

    return args


def _prune(method: str, *extra: str, model: str = "fixed") -> Callable[[Path, Path], list[str]]:
    def args(tmp: Path, out: Path) -> list[str]:
        ref = {
            "fixed": f"{tmp / 'fixed.py'}:Net",
            "stem": f"{tmp / 'stem.py'}:StemNet",
            "checkpoint": str(tmp / "fixed32.pt"),
        }[model]
        return ["prune", ref, "--method", method, "--ratio", "0.5", "--out", str(out / "p.pt"), "--steps", "2", *extra]

    return args


def _write(path: str, content: bytes) -> Callable[[Path], str]:
    def labels(tmp: Path) -> str:
        (tmp / path).write_bytes(content)
        return str(tmp / path)

    return labels


def _pt_file(tmp: Path) -> str:
    import torch

    torch.save({"w": torch.zeros(4)}, tmp / "labels.pt")
    return str(tmp / "labels.pt")


GOOD_RECIPE_TAIL = "model:\n  ref: mobileone_s0\n  input_size: 32\ncompile: onnx\n"

CASES: list[Case] = [
    # 1. data
    ("imagefolder-one-image-per-class", _train("imagefolder:{tmp}/one"), ("holds 2 images", "at least 3")),
    ("imagefolder-single-class", _train("imagefolder:{tmp}/single"), ("1 class ('only')", "at least 2 classes")),
    ("imagefolder-split-single-class", _train("imagefolder:{tmp}/split"), ("only one class ('a')",)),
    ("limit-1", _train("digits", "--limit", "1"), ("leaves 1 training image", "--limit of 2")),
    ("batch-size-1", _train("digits", "--limit", "16", "--batch-size", "1"), ("--batch-size 2 or more",)),
    ("idx-label-out-of-range", _train("fashion-mnist:{tmp}/idx_range"), ("hold 200", "must be 0 to 9")),
    ("idx-count-mismatch", _train("fashion-mnist:{tmp}/idx_count"), ("disagree",)),
    # 2. demo labels
    ("labels-random-bytes", _bundle(_write("labels.bin", bytes(range(128, 256)) * 4)), ("is not a text file",)),
    ("labels-torch-file", _bundle(_pt_file), ("is not a text file",)),
    ("labels-nul-bytes", _bundle(_write("labels.txt", b"cat\x00dog\n")), ("NUL bytes",)),
    ("labels-empty", _bundle(_write("labels.txt", b"")), ("is empty", "10 for this model")),
    ("labels-blank-lines", _bundle(_write("labels.txt", b"\n  \n\n")), ("is empty",)),
    ("labels-count", _bundle(_write("labels.txt", b"a\nb\nc\n")), ("gives 3 labels but the model has 10",)),
    ("labels-folder", _bundle(lambda tmp: str(tmp)), ("is a folder",)),
    ("labels-missing", _bundle(lambda tmp: str(tmp / "nope.txt")), ("neither a file nor a dataset",)),
    # 3. recipes
    ("recipe-duplicate-top", _run("name: dup\ncompile: tflite\n" + GOOD_RECIPE_TAIL), (":6:", "'compile'", "line 2")),
    (
        "recipe-duplicate-nested",
        _run("name: dup\nmodel:\n  ref: mobileone_s0\n  input_size: 32\n  input_size: 64\ncompile: onnx\n"),
        (":5:", "'input_size'", "line 4"),
    ),
    ("recipe-duplicate-flow", _run("name: dup\nmodel: {ref: mobileone_s0, ref: x}\n"), (":2:", "'ref'")),
    ("recipe-name-dotdot", _run("name: '..'\n" + GOOD_RECIPE_TAIL, own_out=False), ("name: must be a plain name",)),
    ("recipe-name-dot", _run("name: .\n" + GOOD_RECIPE_TAIL, own_out=False), ("name: must be a plain name",)),
    ("recipe-name-slash", _run("name: a/b\n" + GOOD_RECIPE_TAIL, own_out=False), ("name: must be a plain name",)),
    (
        "recipe-compile-id-dotdot",
        _run("name: ok\nmodel: mobileone_s0\ncompile: [{target: onnx, id: '..'}]\n"),
        ("compile.0.id: must be a plain name",),
    ),
    # 4. a model that does not run at the input size asked for: one line, whatever the method
    *[
        (
            f"prune-size-{method}{'-structured' if extra else ''}",
            _prune(method, "--input-size", "64", *extra),
            ("does not run at input size 64", "mat1 and mat2", "it runs at 32: give --input-size 32"),
        )
        for method, extra in (
            ("oto", ()),
            ("magnitude", ("--structured",)),
            ("dimap", ("--structured",)),
            ("magnitude", ()),
            ("dimap", ()),
        )
    ],
    (
        "prune-size-checkpoint",
        _prune("magnitude", "--input-size", "64", "--trust-code", model="checkpoint"),
        ("does not run at input size 64", "it was built for 32: give --input-size 32"),
    ),
    ("prune-unstructured-nothing", _prune("magnitude", "--input-size", "16", model="stem"), ("no weights",)),
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The bad (and the needed good) inputs every case reads, all tiny."""
    (tmp_path / "small.py").write_text(SMALL_NET)
    (tmp_path / "fixed.py").write_text(FIXED_NET)
    (tmp_path / "stem.py").write_text(STEM_NET)
    return tmp_path


def _prepare(case: str, tmp: Path) -> None:
    if case == "imagefolder-one-image-per-class":
        image_folder(tmp / "one", {"a": 1, "b": 1})
    elif case == "imagefolder-single-class":
        image_folder(tmp / "single", {"only": 3})
    elif case == "imagefolder-split-single-class":  # DIR/train and DIR/val, one class with no images
        image_folder(tmp / "split" / "train", {"a": 3})
        (tmp / "split" / "train" / "b").mkdir()
        image_folder(tmp / "split" / "val", {"a": 1, "b": 1})
    elif case == "idx-label-out-of-range":
        idx_folder(tmp / "idx_range", train_labels=[200, 1, 2, 3, 4, 5])
    elif case == "idx-count-mismatch":
        idx_folder(tmp / "idx_count", train_labels=[0, 1, 2, 3, 4, 5], n_train_images=5)
    elif case == "prune-size-checkpoint":
        fixed_net_checkpoint(tmp / "fixed.py", tmp / "fixed32.pt")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case, make_args, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(inputs, case, make_args, needles):
    _prepare(case, inputs)
    out = inputs / "out"  # every command writes under here, and only here
    out.mkdir()
    work = inputs / "work"  # the working directory: a recipe's default run folder would be out/<name> here
    work.mkdir()
    proc = run_cli(*make_args(inputs, out), cwd=work)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    left = sorted(str(p.relative_to(inputs)) for d in (out, work) for p in d.rglob("*"))
    assert left == [], left
    partial = [p for p in inputs.rglob(".*") if ".partial-" in p.name]
    assert partial == [], partial
