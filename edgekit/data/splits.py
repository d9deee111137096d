"""Raw images (uint8 arrays or file paths) with labels, preprocessed per batch as the model card says."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import EdgekitError


class DatasetError(EdgekitError):
    """A dataset spec or its files are wrong."""


@dataclass(frozen=True)
class Preprocess:
    """The model card's preprocessing: square resize to `size`, RGB, x/255, (x - mean) / std."""

    size: int
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": 1 / 255,
            "layout": "NCHW",
            "color": "RGB",
            "resize": "bilinear",
        }

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 255] float) N x C x H x W, C in {1, 3} -> normalised float N x 3 x size x size, on the
        images' device: `normalize(unit(images))` (train-time augmentation goes between the two)."""
        return self.normalize(self.unit(images))

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 255] float) N x C x H x W, C in {1, 3} -> float N x 3 x size x size in [0, 1]: x/255,
        resized (bilinear, antialiased), grey repeated to RGB. On the images' device."""
        x = images.float() / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel, for float N x 3 x H x W in [0, 1] on any device."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


@dataclass
class Split:
    """Raw images (a uint8 tensor, or image file paths) with labels; `batch` preprocesses on demand."""

    images: torch.Tensor | list  # N x C x H x W uint8, or N paths
    y: torch.Tensor  # N, int64
    preprocess: Preprocess

    def __len__(self) -> int:
        return len(self.y)

    def raw(self, idx) -> torch.Tensor:
        """The images at `idx` as uint8 N x C x H x W, not normalised: in-memory images as stored (C and H x W
        the dataset's own), image files decoded to 3 x size x size (the shorter side to size / 0.875, centre crop).
        `preprocess(raw(idx))` is `batch(idx)[0]`."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if isinstance(self.images, torch.Tensor):
            return self.images[idx]
        return torch.stack([_read_image(self.images[i], self.preprocess.size) for i in idx.tolist()])

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at `idx` preprocessed (float N x 3 x size x size, normalised) and their labels."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self.preprocess(self.raw(idx)), self.y[idx]

    @property
    def x(self) -> torch.Tensor:
        """Every image preprocessed (small splits only)."""
        return self.batch(torch.arange(len(self)))[0]

    def subset(self, idx) -> Split:
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
        return {
            "spec": self.name,
            "classes": list(self.classes),
            "train": len(self.train),
            "val": len(self.val),
            "calib": len(self.calib),
            "preprocess": self.train.preprocess.to_dict(),
            **self.info,
        }


def _read_image(path, size: int) -> torch.Tensor:
    """An image file (a path, or an object whose `open()` gives its bytes: a member of a tar shard) as uint8
    3 x size x size: the shorter side resized to size / 0.875, then the centre crop."""
    try:
        with path.open("rb") if hasattr(path, "open") else open(path, "rb") as f, Image.open(f) as im:
            im = im.convert("RGB")
            # shorter side to size / 0.875, centre crop (the usual ImageNet evaluation transform)
            short = max(size, round(size / 0.875))
            w, h = im.size
            s = short / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image '{path}' ({e}); remove it or replace it with a valid image") from None
    return data.view(size, size, 3).permute(2, 0, 1)
