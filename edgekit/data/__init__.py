"""Datasets behind one small interface, all local (edgekit downloads nothing).

A dataset spec names where the images come from:

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes);
- `fashion-mnist[:DIR]`: the four IDX files of Fashion-MNIST (plain or .gz); DIR defaults to the
  Debian package's `/usr/share/datasets/fashion-mnist` (`apt-get install dataset-fashion-mnist`);
- `imagefolder:DIR`: one sub-directory of images per class (DIR/train and DIR/val are used as the
  splits when both exist);
- `wds:DIR|PATTERN`: webdataset tar shards (`DIR/train-*.tar`, `DIR/val-*.tar`, or a brace pattern), indexed
  member by member so batches are drawn by index like every other source.

Images stay in their stored form (uint8 arrays or file paths) and are preprocessed per batch the way
the model card says: resized to the model's input, 3 channels, x/255, then (x - mean) / std. So a
60 000-image set costs its raw 47 MB, not 36 GB of 224x224 floats.

Splits are deterministic (seeded): `train`, `val` (Fashion-MNIST's own test set, `DIR/val`, or a
seeded fifth), and `calib`, a seeded subset of `train` for quantization.

Training reads `TrainLoader` (each data-parallel rank's slice of every batch, raw, decoded in worker processes if
asked) and augments on the device with `make_augment` (kornia): see `edgekit.data.pipeline`.
"""

from __future__ import annotations

import torch

from ..devices import Runtime
from .pipeline import AUGMENTS, Augment, TrainLoader, global_batch, make_augment
from .sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    IMAGE_SUFFIXES,
    Source,
    TarMember,
    data_help,
    find_source,
    read_idx,
    register_source,
    source_usages,
    unregister_source,
)
from .splits import Dataset, DatasetError, Preprocess, Split

__all__ = [
    "AUGMENTS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_SUFFIXES",
    "Augment",
    "Dataset",
    "DatasetError",
    "Preprocess",
    "Source",
    "Split",
    "TarMember",
    "TrainLoader",
    "accuracy",
    "batches",
    "data_help",
    "evaluate",
    "find_source",
    "load_dataset",
    "logits_of",
    "make_augment",
    "ordered_batches",
    "predict",
    "read_idx",
    "register_source",
    "source_usages",
    "unregister_source",
]


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
    """Load the dataset `spec` names (a registered source, see the module doc), preprocessed for a model of
    `input_size`.

    `limit` / `val_limit` keep a seeded subset of the training / validation split (quick runs).
    """
    pre = Preprocess(int(input_size), tuple(float(m) for m in mean), tuple(float(s) for s in std))
    source, arg = find_source(spec)
    train, val, classes, info = source.load(arg, pre, val_fraction, seed)
    _check_classes(spec, train, tuple(classes))
    gen = torch.Generator().manual_seed(seed + 1)
    if limit is not None and limit < len(train):
        train = train.subset(torch.randperm(len(train), generator=gen)[: max(1, int(limit))])
    if len(train) < 2:  # a batch of one image: BatchNorm cannot train on it
        more = "a --limit of 2 or more" if limit is not None and limit < 2 else "more images"
        raise DatasetError(
            f"'{spec}' leaves {len(train)} training image{'s' if len(train) != 1 else ''}; training needs at "
            f"least 2 per batch: give {more}"
        )
    if val_limit is not None and val_limit < len(val):
        val = val.subset(torch.randperm(len(val), generator=gen)[: max(1, int(val_limit))])
    calib = train.subset(torch.randperm(len(train), generator=gen)[: min(calib_size, len(train))])
    return Dataset(str(spec), tuple(classes), train, val, calib, info)


def _check_classes(spec: str, train: Split, classes: tuple) -> None:
    """A classifier needs two classes, and its training labels must be class indices."""
    if len(classes) < 2:
        named = f" ('{classes[0]}')" if classes else ""
        raise DatasetError(
            f"'{spec}' has {len(classes)} class{named}; a classifier needs at least 2 classes: "
            "add images of another class (an image folder: one sub-directory per class)"
        )
    if len(train) == 0:
        raise DatasetError(f"'{spec}' has no training images; add images for each class")
    y = train.y
    if int(y.min()) < 0 or int(y.max()) >= len(classes):
        raise DatasetError(
            f"'{spec}' has training labels from {int(y.min())} to {int(y.max())} but {len(classes)} classes; "
            f"labels must be 0 to {len(classes) - 1}"
        )
    present = torch.unique(y)
    if len(present) < 2:
        raise DatasetError(
            f"'{spec}' has training images of only one class ('{classes[int(present[0])]}'); a classifier needs "
            "at least 2 classes: add images of the others"
        )


def batches(split: Split, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches (an epoch is len(split) // batch_size of them; the rest is left out, so no
    batch is smaller than the others).

    Refused up front (a DatasetError) where a batch would hold one image: BatchNorm cannot train on it.
    `TrainLoader` gives the same batches (one epoch's), raw, to each data-parallel rank its slice.
    """
    return _endless(split, global_batch(len(split), batch_size), generator)


def _endless(split: Split, batch_size: int, generator: torch.Generator):
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
    """Top-1 accuracy on `split`, in this process on the CPU (`evaluate` with a one-process runtime)."""
    return evaluate(model, split, Runtime(), batch_size)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, rt: Runtime, batch_size: int = 256) -> float:
    """Top-1 accuracy on `split` (evaluation mode, the card's preprocessing), each rank on its share, summed."""
    was = model.training
    model.eval()
    idx = torch.arange(rt.rank, len(split), rt.world)
    correct = torch.zeros(1, dtype=torch.float64)
    for i in range(0, len(idx), batch_size):
        x, y = split.batch(idx[i : i + batch_size])
        with rt.autocast():
            pred = logits_of(model(rt.to(x))).argmax(1).cpu()
        correct += int((pred == y).sum())
    model.train(was)
    return float(rt.sum(correct)) / len(split)
