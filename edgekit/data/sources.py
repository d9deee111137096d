"""Dataset sources: one plug-in per kind of dataset spec (`name[:ARG]`), and the registry that every command reads.

A source loads its images and labels (`load`) and says what a recipe's cache key records of its data
(`fingerprint`: the files' contents, or a listing where hashing every image would take minutes). `load_dataset`,
the CLI's help, the recipe schema and the recipe cache all derive from this registry.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from sklearn.datasets import load_digits

from ..io import package_version
from .splits import DatasetError, Preprocess, Split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}

FileHash = Callable[[Path], str]


class Source:
    """A kind of dataset. Subclasses set `name` and `usage` and implement `load` and `fingerprint`."""

    name: ClassVar[str] = ""
    usage: ClassVar[str] = ""  # how a spec names it, e.g. "fashion-mnist[:DIR]"
    arg: ClassVar[str] = "none"  # its argument after the colon: none, optional or required

    def accepts(self, arg: str) -> bool:
        return {"none": not arg, "optional": True, "required": bool(arg)}[self.arg]

    def load(self, arg: str, pre: Preprocess, val_fraction: float, seed: int) -> tuple[Split, Split, tuple, dict]:
        """(train, val, classes, info): the splits (val: the source's own, else a seeded fraction of train)."""
        raise NotImplementedError

    def fingerprint(self, arg: str, file_hash: FileHash) -> dict:
        """What identifies the data for a recipe's cache key; a DatasetError where the data is missing."""
        raise NotImplementedError


_SOURCES: dict[str, Source] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: register an instance of a Source subclass under its `name` (a later one replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Source)) or not cls.name or not cls.usage:
        raise TypeError(f"{cls!r} is not a Source subclass with a name and a usage")
    _SOURCES[cls.name] = cls()
    return cls


def unregister_source(name: str) -> None:
    _SOURCES.pop(name, None)


def source_usages() -> tuple[str, ...]:
    return tuple(s.usage for s in _SOURCES.values())


def data_help() -> str:
    """`digits, fashion-mnist[:DIR] or imagefolder:DIR`: the help text of every option that takes a dataset."""
    u = source_usages()
    return f"{', '.join(u[:-1])} or {u[-1]}" if len(u) > 1 else "".join(u)


def find_source(spec: str) -> tuple[Source, str]:
    """The source a spec names and its argument; else a DatasetError listing the registered ones."""
    kind, _, arg = str(spec).partition(":")
    source = _SOURCES.get(kind)
    if source is None or not source.accepts(arg):
        raise DatasetError(f"unknown dataset '{spec}'; use one of: {', '.join(source_usages())}")
    return source, arg


def _seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def listing_hash(root: Path) -> str:
    """sha256 of the names, sizes and modification times of the files under `root`."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# -- the built-in sources --------------------------------------------------------------------------------------------


def _digits():
    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32) * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.long), tuple(str(i) for i in range(10))


@register_source
class Digits(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""

    name = "digits"
    usage = "digits"

    def load(self, arg, pre, val_fraction, seed):
        x, y, classes = _digits()
        tr, va = _seeded_split(len(y), val_fraction, seed)
        return Split(x[tr], y[tr], pre), Split(x[va], y[va], pre), classes, {}

    def fingerprint(self, arg, file_hash):
        return {"digits": package_version("scikit-learn")}


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


def _fashion_mnist(root: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    if not root.is_dir():
        raise DatasetError(
            f"Fashion-MNIST directory {root} does not exist; install it with `apt-get install "
            "dataset-fashion-mnist` or give fashion-mnist:DIR with the four IDX files"
        )
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        x = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DatasetError(
                f"Fashion-MNIST {split} files in {root} disagree: images {tuple(x.shape)}, labels {tuple(y.shape)}"
            )
        if len(y) and int(y.max()) >= len(FASHION_MNIST_CLASSES):  # uint8: never below 0
            bad = int((y >= len(FASHION_MNIST_CLASSES)).nonzero()[0, 0])
            raise DatasetError(
                f"Fashion-MNIST {split} labels in {root} hold {int(y[bad])} (at index {bad}); labels must be "
                f"0 to {len(FASHION_MNIST_CLASSES) - 1}, one per class: replace the labels file"
            )
        parts[split] = (x.unsqueeze(1), y.long())
    return parts, FASHION_MNIST_CLASSES


@register_source
class FashionMNIST(Source):
    """The four IDX files of Fashion-MNIST (plain or .gz); DIR defaults to the Debian package's."""

    name = "fashion-mnist"
    usage = "fashion-mnist[:DIR]"
    arg = "optional"

    def load(self, arg, pre, val_fraction, seed):
        root = Path(arg) if arg else FASHION_MNIST_DIR
        parts, classes = _fashion_mnist(root)
        return Split(*parts["train"], pre), Split(*parts["val"], pre), classes, {"root": str(root)}

    def fingerprint(self, arg, file_hash):
        root = Path(arg) if arg else FASHION_MNIST_DIR
        if not root.is_dir():
            raise DatasetError(f"'{root}' does not exist; install dataset-fashion-mnist or give fashion-mnist:DIR")
        return {"files": {f.name: file_hash(f) for f in sorted(root.iterdir()) if f.is_file()}}


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
        raise DatasetError(
            f"'{root}' holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in its class sub-directories)"
        )
    return paths, labels, classes


@register_source
class ImageFolder(Source):
    """One sub-directory of images per class; DIR/train and DIR/val are the splits when both exist."""

    name = "imagefolder"
    usage = "imagefolder:DIR"
    arg = "required"

    def load(self, arg, pre, val_fraction, seed):
        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(f"image folder '{root}' does not exist; give imagefolder:DIR with DIR/<class>/<image>")
        if (root / "train").is_dir() and (root / "val").is_dir():
            tp, tl, classes = _list_images(root / "train")
            vp, vl, vclasses = _list_images(root / "val")
            if vclasses != classes:
                raise DatasetError(f"'{root}/train' and '{root}/val' have different class sub-directories")
            return Split(tp, torch.tensor(tl), pre), Split(vp, torch.tensor(vl), pre), classes, {"root": str(root)}
        paths, labels, classes = _list_images(root)
        if len(paths) < 3:
            raise DatasetError(
                f"'{root}' holds {len(paths)} image{'s' if len(paths) != 1 else ''}; a train / validation split "
                "needs at least 3 (2 to train on, 1 to validate): add images"
            )
        full = Split(paths, torch.tensor(labels), pre)
        tr, va = _seeded_split(len(paths), val_fraction, seed)
        return full.subset(tr), full.subset(va), classes, {"root": str(root)}

    def fingerprint(self, arg, file_hash):
        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(
                f"image folder '{root}' does not exist; give imagefolder:DIR with DIR/<class>/<image> "
                "(--set data=imagefolder:DIR)"
            )
        return {"listing": listing_hash(root)}  # hashing every image of ImageNet would take minutes
