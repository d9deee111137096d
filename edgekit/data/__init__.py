"""Datasets behind one small interface. Here: scikit-learn's bundled `digits` (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EdgekitError

DATASETS = ("digits",)


@dataclass
class Split:
    x: torch.Tensor  # N x 3 x S x S, preprocessed
    y: torch.Tensor  # N, int64


@dataclass
class Dataset:
    name: str
    num_classes: int
    train: Split
    val: Split


def load_dataset(name: str, input_size: int, mean, std, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load `name` resized to `input_size`, 3 channels, normalised with the model card's mean / std;
    a deterministic train / validation split."""
    if name != "digits":
        raise EdgekitError(f"unknown dataset '{name}'; this version has: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 8x8, [0, 1]
    x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    x = x.repeat(1, 3, 1, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return Dataset(name, 10, Split(x[train], y[train]), Split(x[val], y[val]))


def batches(split: Split, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches."""
    while True:
        perm = torch.randperm(len(split.y), generator=generator)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield split.x[idx], split.y[idx]


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: Split, batch_size: int = 256) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split.y), batch_size):
        out = model(split.x[i : i + batch_size])
        out = out[0] if isinstance(out, (tuple, list)) else out
        correct += int((out.argmax(1) == split.y[i : i + batch_size]).sum())
    model.train(was)
    return correct / len(split.y)
