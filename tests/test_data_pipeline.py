"""The training data pipeline: raw batches per rank (the batches of `batches()`, bit for bit), decoded in worker
processes or not, and the kornia augmentations (shapes, ranges, seeds, the soft targets of MixUp / CutMix)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from edgekit.data import (
    AUGMENTS,
    Augment,
    DatasetError,
    TrainLoader,
    batches,
    load_dataset,
    make_augment,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 32, MEAN, STD, limit=300, val_limit=20, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny image folder of JPEGs (random pixels, sizes that need the resize and the centre crop)."""
    root = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    for c, cls in enumerate(("a", "b", "c")):
        (root / cls).mkdir()
        for i in range(8):
            h, w = 30 + 3 * i, 40 - c
            pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / cls / f"{i}.jpg", quality=90)
    return load_dataset(f"imagefolder:{root}", 24, MEAN, STD, val_fraction=0.25, seed=0)


def epoch_of_batches(split, batch_size: int, seed: int, epoch: int) -> list:
    """What the training loop took from `batches()` for one epoch before TrainLoader."""
    it = batches(split, batch_size, torch.Generator().manual_seed(seed * 1000 + epoch))
    return [next(it) for _ in range(len(split) // min(batch_size, len(split)))]


@pytest.mark.parametrize("data", ["digits", "folder"])
def test_one_process_preprocessed_is_batches_bit_for_bit(data, request):
    split = request.getfixturevalue(data).train
    bs = 64 if data == "digits" else 4
    loader = TrainLoader(split, bs, seed=3)
    assert loader.steps_per_epoch == len(split) // bs == len(loader)
    for epoch in (0, 1):
        old = epoch_of_batches(split, bs, 3, epoch)
        new = list(loader.epoch(epoch))
        assert len(new) == len(old) == loader.steps_per_epoch
        for (x, y), (raw, y_raw) in zip(old, new):
            assert raw.dtype == torch.uint8 and y_raw.dtype == torch.int64
            assert torch.equal(split.preprocess(raw), x) and torch.equal(y_raw, y)
    assert not torch.equal(new[0][0], list(loader.epoch(0))[0][0])  # epochs are shuffled differently


def test_raw_is_the_stored_images_and_batch_is_preprocess_of_raw(digits, folder):
    idx = torch.tensor([5, 0, 17])
    raw = digits.train.raw(idx)
    assert torch.equal(raw, digits.train.images[idx]) and raw.shape == (3, 1, 8, 8)
    assert torch.equal(digits.train.preprocess(raw), digits.train.batch(idx)[0])
    files = folder.train.raw([1, 2])
    assert files.dtype == torch.uint8 and files.shape == (2, 3, 24, 24)
    assert torch.equal(folder.train.preprocess(files), folder.train.batch([1, 2])[0])


def test_preprocess_is_unit_then_normalize_on_the_images_device(digits):
    pre = digits.train.preprocess
    raw = digits.train.raw(torch.arange(6))
    x = pre.unit(raw)
    assert x.shape == (6, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(pre.normalize(x), pre(raw))
    on_meta = pre(raw.to("meta"))  # mean / std follow the images (a CPU mean beside a GPU batch cannot subtract)
    assert on_meta.device.type == "meta" and on_meta.shape == (6, 3, 32, 32)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_take_consecutive_slices_of_the_global_batch(digits, world):
    split = digits.train
    one = list(TrainLoader(split, 32, seed=1).epoch(2))
    ranks = [list(TrainLoader(split, 32, seed=1, rank=r, world=world).epoch(2)) for r in range(world)]
    assert all(len(r) == len(one) == len(split) // 32 for r in ranks)
    for step, (x, y) in enumerate(one):
        parts = [r[step] for r in ranks]
        assert all(p[0].shape[0] == 32 // world for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_workers_decode_the_same_batches_and_leave_the_global_rng_alone(folder):
    split = folder.train
    plain = TrainLoader(split, 4, seed=5, rank=1, world=2)
    loader = TrainLoader(split, 4, seed=5, rank=1, world=2, workers=2, pin_memory=True)
    try:
        torch.manual_seed(0)
        expected = torch.rand(4)
        torch.manual_seed(0)
        first = next(iter(loader.epoch(0)))  # an epoch left early: the next one starts afresh
        assert torch.equal(torch.rand(4), expected)  # the loader drew nothing from the global RNG (augmentation's)
        assert torch.equal(first[0], next(iter(plain.epoch(0)))[0])
        for epoch in (1, 2):
            got, want = list(loader.epoch(epoch)), list(plain.epoch(epoch))
            assert len(got) == len(want) == len(split) // 4
            for (x, y), (x0, y0) in zip(got, want):
                assert x.shape == (2, 3, 24, 24) and torch.equal(x, x0) and torch.equal(y, y0)
    finally:
        loader.close()


def test_batch_sizes_that_cannot_train_are_one_line_errors(digits):
    split = digits.train
    with pytest.raises(DatasetError, match=r"--batch-size 6 does not split evenly over 4 processes; give a multiple"):
        TrainLoader(split, 6, seed=0, world=4)
    for make in (lambda: TrainLoader(split, 1, seed=0), lambda: batches(split, 1, torch.Generator())):
        with pytest.raises(DatasetError) as e:
            make()
        assert str(e.value) == (  # the message of every run before TrainLoader
            "--batch-size 1 cannot train (BatchNorm normalises over the batch); give --batch-size 2 or more"
        )
    with pytest.raises(DatasetError, match=r"gives each of 2 processes 1 image .*give --batch-size 4 or more"):
        TrainLoader(split, 2, seed=0, world=2)
    tiny = split.subset([0, 1, 2])
    with pytest.raises(DatasetError, match=r"holds 3 images; 2 processes need at least 4 \(2 each\)"):
        TrainLoader(tiny, 4, seed=0, world=2)
    one = split.subset([0])
    with pytest.raises(DatasetError, match=r"^the training split holds 1 image; training needs at least 2"):
        TrainLoader(one, 8, seed=0)
    # a split smaller than the batch: one batch of all of it (less what does not divide over the ranks)
    assert TrainLoader(tiny, 64, seed=0).batch_size == 3
    assert TrainLoader(split.subset(range(9)), 64, seed=0, world=2).local_batch == 4


def test_augmentation_names(digits):
    assert AUGMENTS == ("none", "basic", "trivial", "deit")
    assert make_augment("none", 32, 10) is None
    with pytest.raises(
        DatasetError, match=r"^unknown augmentation 'autoaug'; choose one of: none, basic, trivial, deit$"
    ):
        make_augment("autoaug", 32, 10)


@pytest.mark.parametrize("name", ["basic", "trivial", "deit"])
def test_augmentations_keep_shape_range_and_follow_the_seed(digits, name):
    pre = digits.train.preprocess
    x = pre.unit(digits.train.raw(torch.arange(16)))
    y = digits.train.y[:16]
    aug = make_augment(name, 32, 10)
    assert isinstance(aug, Augment)
    before = x.clone()
    torch.manual_seed(7)
    a, ta = aug(x, y)
    torch.manual_seed(7)
    b, tb = aug(x, y)
    torch.manual_seed(8)
    c, _ = aug(x, y)
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32 and a.device == x.device
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c) and not torch.equal(a, x)
    assert torch.equal(x, before)  # the caller's batch is left as it was
    if name == "deit":
        assert ta.shape == (16, 10) and ta.dtype == torch.float32
        torch.testing.assert_close(ta.sum(1), torch.ones(16))
        assert float(ta.min()) >= 0.1 / 10 - 1e-6  # smoothed: every class keeps a little
    else:
        assert torch.equal(ta, y)  # labels untouched
    logits = torch.randn(16, 10)
    assert torch.isfinite(F.cross_entropy(logits, ta))
    assert make_augment(name, 24, 10)(x, y)[0].shape == (16, 3, 24, 24)  # the crop resizes to the model's size


def plain_images(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i / 10: where a pixel came from is its value."""
    x = (torch.arange(n, dtype=torch.float32) / 10).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return x, torch.arange(n)


def test_mixup_mixes_images_and_targets_by_the_same_lambda():
    x, y = plain_images()
    aug = Augment("mixup", nn.Identity(), 8, smoothing=0.1, mixup_alpha=0.8)
    for seed in range(5):
        torch.manual_seed(seed)
        out, target = aug(x, y)
        # out[i] = lam x[i] + (1 - lam) x[n-1-i]: one lam for the batch, read from images 0 and n-1
        lam = float((out[0, 0, 0, 0] - x[-1, 0, 0, 0]) / (x[0, 0, 0, 0] - x[-1, 0, 0, 0]))
        torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
        off, on = 0.1 / 8, 0.9 + 0.1 / 8
        smooth = F.one_hot(y, 8).float() * (on - off) + off
        torch.testing.assert_close(target, lam * smooth + (1 - lam) * smooth.flip(0))


def test_cutmix_pastes_a_box_and_weighs_targets_by_its_area():
    x, y = plain_images()
    aug = Augment("cutmix", nn.Identity(), 8, cutmix_alpha=1.0)
    pasted_any = False
    for seed in range(6):
        torch.manual_seed(seed)
        out, target = aug(x, y)
        for i in range(8):
            from_other = (out[i] == x[7 - i]).all(0).float().mean()  # the share of pixels from the paired image
            own = (out[i] == x[i]).all(0).float().mean()
            assert float(own + from_other) == 1.0
            torch.testing.assert_close(target[i, 7 - i], from_other)
            torch.testing.assert_close(target[i, i], own)
            pasted_any |= 0 < float(from_other) < 1
        torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert pasted_any


def test_deit_switches_between_mixup_and_cutmix():
    x, y = plain_images(size=32)
    aug = make_augment("deit", 32, 8)
    assert isinstance(aug, Augment)
    aug.transforms = nn.Identity()  # the mixing alone: a mixed-up image is not two of the constants
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, _ = aug(x, y)
        values = torch.unique(out[0])
        kinds.add("cutmix" if len(values) <= 2 and all(bool((x == v).any()) for v in values) else "mixup")
    assert kinds == {"cutmix", "mixup"}
