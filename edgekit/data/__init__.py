"""Datasets behind one small interface, all local (edgekit downloads nothing).

A dataset spec names where the images come from:

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes);
- `fashion-mnist[:DIR]`: the four IDX files of Fashion-MNIST (plain or .gz); DIR defaults to the
  Debian package's `/usr/share/datasets/fashion-mnist` (`apt-get install dataset-fashion-mnist`);
- `imagefolder:DIR`: one sub-directory of images per class (DIR/train and DIR/val are used as the
  splits when both exist).

Images stay in their stored form (uint8 arrays or file paths) and are preprocessed per batch the way
the model card says: resized to the model's input, 3 channels, x/255, then (x - mean) / std. So a
60 000-image set costs its raw 47 MB, not 36 GB of 224x224 floats.

Splits are deterministic (seeded): `train`, `val` (Fashion-MNIST's own test set, `DIR/val`, or a
seeded fifth), and `calib`, a seeded subset of `train` for quantization.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import EdgekitError

DATASETS = ("digits", "fashion-mnist[:DIR]", "imagefolder:DIR")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


class DatasetError(EdgekitError):
    """A dataset spec or its files are wrong."""


@dataclass(frozen=True)
class Preprocess:
    """The model card's preprocessing: square resize to `size`, RGB, x/255, (x - mean) / std."""

    size: int
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std), "scale": 1 / 255,
                "layout": "NCHW", "color": "RGB", "resize": "bilinear"}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 255] float) N x C x H x W, C in {1, 3} -> normalised float N x 3 x size x size."""
        x = images.float() / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


@dataclass
class Split:
    """Raw images (a uint8 tensor, or image file paths) with labels; `batch` preprocesses on demand."""

    images: torch.Tensor | list  # N x C x H x W uint8, or N paths
    y: torch.Tensor  # N, int64
    preprocess: Preprocess

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        if isinstance(self.images, torch.Tensor):
            raw = self.images[idx]
        else:
            raw = torch.stack([_read_image(self.images[i], self.preprocess.size) for i in idx.tolist()])
        return self.preprocess(raw), self.y[idx]

    @property
    def x(self) -> torch.Tensor:
        """Every image preprocessed (small splits only)."""
        return self.batch(torch.arange(len(self)))[0]

    def subset(self, idx) -> "Split":
        idx = torch.as_tensor(idx, dtype=torch.long)
        images = self.images[idx] if isinstance(self.images, torch.Tensor) else [self.images[i] for i in idx.tolist()]
        return Split(images, self.y[idx], self.preprocess)


@dataclass
class Dataset:
    name: str  # the spec it was loaded from
    classes: tuple
    train: Split
    val: Split
    calib: Split
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """What a manifest or checkpoint records about the data."""
        return {"spec": self.name, "classes": list(self.classes), "train": len(self.train), "val": len(self.val),
                "calib": len(self.calib), "preprocess": self.train.preprocess.to_dict(), **self.info}


def _read_image(path: str, size: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            # shorter side to size / 0.875, centre crop (the usual ImageNet evaluation transform)
            short = max(size, round(size / 0.875))
            w, h = im.size
            s = short / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image '{path}' ({e}); remove it or replace it with a valid image") from None
    return data.view(size, size, 3).permute(2, 0, 1)


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (the MNIST format), plain or gzip-compressed, as a uint8 tensor."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"cannot read IDX file '{path}' ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"'{path}' is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(raw) - header != count:
        raise DatasetError(f"'{path}' is truncated: header says {dims}, holds {len(raw) - header} of {count} bytes")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"Fashion-MNIST file '{stem}[.gz]' not found in {root}; install the Debian package "
        "(apt-get install dataset-fashion-mnist) or give fashion-mnist:DIR with the four IDX files"
    )


def _fashion_mnist(root: Path):
    if not root.is_dir():
        raise DatasetError(
            f"Fashion-MNIST directory {root} does not exist; install it with `apt-get install "
            "dataset-fashion-mnist` or give fashion-mnist:DIR with the four IDX files"
        )
    parts = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        x = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DatasetError(f"Fashion-MNIST {split} files in {root} disagree: images {tuple(x.shape)}, "
                               f"labels {tuple(y.shape)}")
        parts[split] = (x.unsqueeze(1), y.long())
    return parts, FASHION_MNIST_CLASSES


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32) * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.long), tuple(str(i) for i in range(10))


def _list_images(root: Path) -> tuple[list, list, tuple]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DatasetError(f"'{root}' has no class sub-directories; an image folder is DIR/<class>/<image>")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += [str(p) for p in files]
        labels += [i] * len(files)
    if not paths:
        raise DatasetError(f"'{root}' holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                           "in its class sub-directories)")
    return paths, labels, classes


def _seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def load_dataset(
    spec: str,
    input_size: int,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    *,
    val_fraction: float = 0.2,
    calib_size: int = 512,
    limit: int | None = None,
    val_limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load the dataset `spec` names (see the module doc), preprocessed for a model of `input_size`.

    `limit` / `val_limit` keep a seeded subset of the training / validation split (quick runs).
    """
    pre = Preprocess(int(input_size), tuple(float(m) for m in mean), tuple(float(s) for s in std))
    kind, _, arg = str(spec).partition(":")
    info: dict = {}
    if kind == "digits" and not arg:
        x, y, classes = _digits()
        tr, va = _seeded_split(len(y), val_fraction, seed)
        train, val = Split(x[tr], y[tr], pre), Split(x[va], y[va], pre)
    elif kind == "fashion-mnist":
        root = Path(arg) if arg else FASHION_MNIST_DIR
        parts, classes = _fashion_mnist(root)
        train, val = Split(*parts["train"], pre), Split(*parts["val"], pre)
        info["root"] = str(root)
    elif kind == "imagefolder" and arg:
        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(f"image folder '{root}' does not exist; give imagefolder:DIR with DIR/<class>/<image>")
        if (root / "train").is_dir() and (root / "val").is_dir():
            tp, tl, classes = _list_images(root / "train")
            vp, vl, vclasses = _list_images(root / "val")
            if vclasses != classes:
                raise DatasetError(f"'{root}/train' and '{root}/val' have different class sub-directories")
            train, val = Split(tp, torch.tensor(tl), pre), Split(vp, torch.tensor(vl), pre)
        else:
            paths, labels, classes = _list_images(root)
            if len(paths) < 2:
                raise DatasetError(f"'{root}' holds {len(paths)} image; a train / validation split needs at least 2")
            full = Split(paths, torch.tensor(labels), pre)
            tr, va = _seeded_split(len(paths), val_fraction, seed)
            train, val = full.subset(tr), full.subset(va)
        info["root"] = str(root)
    else:
        raise DatasetError(f"unknown dataset '{spec}'; use one of: {', '.join(DATASETS)}")
    gen = torch.Generator().manual_seed(seed + 1)
    if limit is not None and limit < len(train):
        train = train.subset(torch.randperm(len(train), generator=gen)[: max(1, int(limit))])
    if val_limit is not None and val_limit < len(val):
        val = val.subset(torch.randperm(len(val), generator=gen)[: max(1, int(val_limit))])
    calib = train.subset(torch.randperm(len(train), generator=gen)[: min(calib_size, len(train))])
    return Dataset(str(spec), tuple(classes), train, val, calib, info)


def batches(split: Split, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches (an epoch is len(split) // batch_size of them)."""
    batch_size = min(batch_size, len(split))
    while True:
        perm = torch.randperm(len(split), generator=generator)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield split.batch(perm[i : i + batch_size])


def ordered_batches(split: Split, batch_size: int = 256):
    for i in range(0, len(split), batch_size):
        yield split.batch(torch.arange(i, min(i + batch_size, len(split))))


def logits_of(out) -> torch.Tensor:
    """A model's class scores: the first output of a model that returns several."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions for every sample of `split`, in order (evaluation mode)."""
    was = model.training
    model.eval()
    preds = [logits_of(model(x)).argmax(1) for x, _ in ordered_batches(split, batch_size)]
    model.train(was)
    return torch.cat(preds)


def accuracy(model: torch.nn.Module, split: Split, batch_size: int = 256) -> float:
    return int((predict(model, split, batch_size) == split.y).sum()) / len(split)
