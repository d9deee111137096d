"""The training data pipeline: sharded, prefetched batches of raw images, and batched augmentation on the device.

`TrainLoader` gives each rank (of `world` data-parallel processes) its slice of every global batch, as uint8
images at their stored size with their labels; with `workers` > 0 a `torch.utils.data.DataLoader`'s worker
processes decode and resize image files while the accelerator trains, and the batches are the same, bit for bit.
The caller moves a batch to its device and finishes it there: `Preprocess.unit` (x/255, resize, RGB), an
`Augment` (optional), `Preprocess.normalize`. Without augmentation that is `Preprocess.__call__`, so a run
computes what `batches()` computed before.

Augmentation uses kornia rather than torchvision: kornia's transforms run batched on whatever device the images
are on (a whole batch on the GPU, no per-image PIL work in the workers), and torchvision's PyPI wheel is built
against the CUDA torch and does not import next to the CPU torch that this project pins. The random parameters
are drawn from torch's global CPU generator (kornia's default; the images themselves are transformed on their
own device), which `torch.manual_seed` seeds: a seed gives the same augmentation on any device, and no draw waits
for the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment, TrivialAugment
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from .splits import DatasetError, Split

# Train-time augmentations by name: what `make_augment` accepts (the CLI's choices).
AUGMENTS = ("none", "basic", "trivial", "deit")


def global_batch(n: int, batch_size: int, world: int = 1) -> int:
    """The global batch `batch_size` gives on a split of `n` images over `world` processes: at most `n` (a smaller
    split makes one batch of all of it, less what does not divide over the processes).

    A DatasetError where `batch_size` does not divide over the processes, or a process would get one image
    (BatchNorm cannot train on it)."""
    if world < 1:
        raise ValueError(f"world must be 1 or more, not {world}")
    if batch_size % world:
        raise DatasetError(
            f"--batch-size {batch_size} does not split evenly over {world} processes; give a multiple of {world}"
        )
    b = min(batch_size, n)
    b -= b % world
    if b // world < 2:
        if world == 1:  # the messages of every run before data-parallel training
            if n < 2:
                raise DatasetError(f"the training split holds {n} image; training needs at least 2: add images")
            raise DatasetError(
                "--batch-size 1 cannot train (BatchNorm normalises over the batch); give --batch-size 2 or more"
            )
        if n < 2 * world:
            raise DatasetError(
                f"the training split holds {n} images; {world} processes need at least {2 * world} (2 each): add "
                "images or train on fewer processes"
            )
        raise DatasetError(
            f"--batch-size {batch_size} gives each of {world} processes {b // world} image (BatchNorm normalises over "
            f"each process's batch); give --batch-size {2 * world} or more"
        )
    return b


class _EpochBatches(Sampler[torch.Tensor]):
    """The index lists of one rank for one epoch (set `epoch` before each pass): the permutation `batches()`
    draws, cut into global batches, and this rank's consecutive slice of each."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.epoch = 0

    def __len__(self) -> int:
        return self.n // self.batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        local = self.batch // self.world
        for i in range(len(self)):
            start = i * self.batch + self.rank * local
            yield perm[start : start + local]


class _RawBatches(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """A split whose item is a whole batch: `[idx]` -> (uint8 images, labels), decoded where it is called."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.raw(idx), self.split.y[idx]


class TrainLoader:
    """Training batches of `split` for rank `rank` of `world` data-parallel processes.

    `batch_size` is the global batch, over every rank (a multiple of `world`; at most the split). Epoch `e` draws
    the permutation `batches()` draws (`torch.randperm(len(split))` from a generator seeded `seed * 1000 + e`),
    cuts it into `steps_per_epoch` global batches (the rest is left out) and gives this rank the `rank`-th of
    `world` equal consecutive slices of each: the ranks' slices, concatenated in rank order, are the one-process
    batch. `epoch(e)` yields `(images, labels)`: uint8 N x C x H x W images as `Split.raw` gives them, int64 labels.

    `workers` > 0 decodes in that many `DataLoader` worker processes (kept from epoch to epoch; `close()` ends
    them), a few batches ahead, into pinned memory if `pin_memory` (where an accelerator can use it); the batches
    are those of `workers=0`, which decodes in this process when a batch is asked for. One epoch at a time: an
    epoch's iterator is spent (or dropped) before the next one starts.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        pin_memory: bool = False,
    ):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} processes")
        self.split = split
        self.batch_size = global_batch(len(split), batch_size, world)
        self.local_batch = self.batch_size // world
        self.steps_per_epoch = len(split) // self.batch_size
        self.rank, self.world, self.workers = rank, world, max(0, workers)
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        self.pin_memory = pin_memory and accelerator is not None and accelerator.type != "mps"  # as DataLoader does
        self._sampler = _EpochBatches(len(split), self.batch_size, seed, rank, world)
        self._loader: DataLoader | None = None
        if self.workers:
            self._loader = DataLoader(
                _RawBatches(split),
                sampler=self._sampler,
                batch_size=None,  # an item is a whole batch: one worker decodes it
                num_workers=self.workers,
                persistent_workers=True,
                pin_memory=self.pin_memory,
                generator=torch.Generator().manual_seed(seed),  # the workers' base seed, not the global RNG's draw
            )

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The `steps_per_epoch` batches of epoch `e` for this rank (a caller may stop early)."""
        self._sampler.epoch = e
        if self._loader is not None:
            for x, y in self._loader:  # (a list, as the DataLoader converts a batch)
                yield x, y
            return
        for idx in self._sampler:
            x, y = self.split.raw(idx), self.split.y[idx]
            yield (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)

    def close(self) -> None:
        """End the worker processes (they end with the loader too)."""
        self._loader = None


class Augment(nn.Module):
    """A train-time augmentation (see `make_augment`): `(x, y) -> (x, target)`.

    `x`: float N x 3 x H x W in [0, 1] on any device (no `.to()` needed); the result is N x 3 x size x size in
    [0, 1] on the same device. `y`: int64 class indices. `target`: `y` itself, or, with label smoothing or mixing,
    N x num_classes float probabilities (rows sum to 1); `F.cross_entropy` takes either. Run it outside autocast.

    Mixing (MixUp or CutMix, one of them per batch) follows DeiT's timm recipe: one lambda per batch from
    Beta(alpha, alpha), each image mixed with the batch's reversal (image i with image N-1-i), CutMix's lambda
    corrected to the box's area. kornia 0.9's RandomMixUpV2 draws a lambda per image uniformly from a range (no
    Beta(0.8, 0.8)), so the mixing is written here; its draws come from the same global CPU generator.
    """

    def __init__(
        self,
        name: str,
        transforms: nn.Module,
        num_classes: int,
        *,
        smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        cutmix_prob: float = 0.5,
    ):
        super().__init__()
        self.name = name
        self.transforms = transforms
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.mixup_alpha, self.cutmix_alpha, self.cutmix_prob = mixup_alpha, cutmix_alpha, cutmix_prob

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, smoothing={self.smoothing}, "
            f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, cutmix_prob={self.cutmix_prob}"
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.transforms(x.float()).clamp(0.0, 1.0)  # (not in place: x may be the caller's)
        mixing = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if not mixing and not self.smoothing:
            return x, y
        off = self.smoothing / self.num_classes
        target = F.one_hot(y.to(x.device, torch.long), self.num_classes).to(x.dtype) * (1.0 - self.smoothing) + off
        if not mixing:
            return x, target
        return self._mix(x, target)

    def _mix(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < self.cutmix_prob)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())
        other = x.flip(0)
        if cutmix:
            h, w = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[:, :, top:bottom, left:right] = other[:, :, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        else:
            x = x * lam + other * (1.0 - lam)
        return x, target * lam + target.flip(0) * (1.0 - lam)


def make_augment(name: str, size: int, num_classes: int) -> Augment | None:
    """The augmentation `name` names (one of AUGMENTS) for images of `size` x `size`; None for `none`.

    - `basic`: RandomResizedCrop to size (scale 0.08 to 1, aspect 3/4 to 4/3) and a horizontal flip (p 0.5);
    - `trivial`: basic, then TrivialAugment (kornia's default policy: one operation per batch, its magnitude
      drawn per image);
    - `deit`: DeiT's recipe: basic, RandAugment (2 operations per batch, magnitude 27 on kornia's 0-30 scale:
      DeiT's m9 on timm's 0-10), random
      erasing (p 0.25, filled with 0), then MixUp (alpha 0.8) or CutMix (alpha 1.0), one of the two per batch
      (p 0.5 each), on labels smoothed by 0.1.
    """
    if name not in AUGMENTS:
        raise DatasetError(f"unknown augmentation '{name}'; choose one of: {', '.join(AUGMENTS)}")
    if name == "none":
        return None
    # "resample": every crop of the batch in one warp (kornia's default, "slice", interpolates image by image)
    crop = K.RandomResizedCrop(
        (size, size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), align_corners=False, cropping_mode="resample"
    )
    ops: list[nn.Module] = [crop, K.RandomHorizontalFlip(p=0.5)]
    if name == "trivial":
        ops.append(TrivialAugment())
    if name == "deit":
        ops += [RandAugment(n=2, m=27), K.RandomErasing(p=0.25)]  # DeiT's m9 of 10 on kornia's 0-30
        return Augment(
            name, nn.Sequential(*ops), num_classes, smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_prob=0.5
        )
    return Augment(name, nn.Sequential(*ops), num_classes)
