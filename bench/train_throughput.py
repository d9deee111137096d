"""Training throughput: edgekit's loop against a plain PyTorch loop, and JPEG loading against in-memory images.

MobileViG-Ti (seeded init, nothing is downloaded) at 224x224, batch 16 by default, fp32 and bf16 autocast, in one
process, every measurement interleaved with the one it is compared with (rounds alternate which side goes first;
the medians over the rounds are compared), the first steps of every run left out as warm-up:

1. loop: images/s of `edgekit.distill.loop.fit` (`--augment none`, images decoded once into memory as uint8
   3 x 224 x 224: `TrainLoader` batches, `Preprocess` x/255 and normalisation each step, edgekit's AdamW param
   groups, cosine schedule, `float(loss)` and its progress callback) against a hand-written loop over the same
   batches made beforehand (normalised float tensors already on the device): AdamW, cross-entropy on the model's
   heads (MobileViG trains its class and distillation heads on the labels, as `fit` does), zero_grad, forward,
   backward, step, nothing else.
2. loading: the same `fit` with `--augment basic` (kornia crop and flip, on the device) fed by real JPEG decoding
   (an image folder of 256x256 JPEGs that this bench writes into a temporary directory: Fashion-MNIST images
   upscaled with PIL, or random noise; decoded and centre-cropped to 224 by `--workers` DataLoader workers)
   against the same `fit` on those images decoded once into memory (no workers). Beside them, the loader alone
   (`TrainLoader.epoch`, no model) with `--workers` workers and with none (decoding in this process): on a machine
   with few cores the workers compete with the training threads for them, and the loader's own rate is the honest
   measure of whether loading keeps up.

Goals: edgekit / plain >= 0.9; JPEG-fed / in-memory >= 0.9.

`--device auto` measures the CPU and, where there is one, the CUDA GPU (each in its own section, same script).
`fit` also evaluates a (two-image) validation split after its epoch; its time is outside the measured steps,
which are timed between `fit`'s progress callbacks (each comes after the step's `float(loss)`, so GPU work is
finished; the plain loop synchronises before and after its measured steps).

    python bench/train_throughput.py | tee bench/train_throughput.txt
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn

import edgekit
from edgekit.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    Dataset,
    DatasetError,
    Split,
    TrainLoader,
    load_dataset,
    read_idx,
)
from edgekit.devices import Runtime, runtime
from edgekit.distill.loop import TrainConfig, fit
from edgekit.profile import host_name

MODEL = "mobilevig_ti"
GOAL = 0.9
HEADER = f"{'images/s':44s} {'median':>8s}   (each round)"


def cpu_line() -> str:
    """The CPU (`edgekit.profile.host_name`) and the flags that change the numbers (AVX-512, bf16, AMX)."""
    flags: set[str] = set()
    try:
        flags = next(
            set(line.split(":", 1)[1].split())
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        pass
    shown = [
        f
        for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
        if f in flags
    ]
    return f"# CPU: {host_name()}, {os.cpu_count()} cores; flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def devices(spec: str) -> list[str]:
    """`auto`: the CPU, and the CUDA GPU where there is one; otherwise a comma-separated list of devices."""
    if spec == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d.strip() for d in spec.split(",") if d.strip()]


def write_jpegs(root: Path, source: str, classes: int, per_class: int, val_per_class: int, px: int) -> tuple:
    """An image folder root/{train,val}/<class>/<n>.jpg of px x px RGB JPEGs; returns the class names."""
    gen = torch.Generator().manual_seed(0)
    names: tuple = tuple(f"class{c}" for c in range(classes))
    pool = labels = None
    if source == "fashion-mnist":
        try:
            pool = read_idx(Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz")
            labels = read_idx(Path(FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz").long()
            names = tuple(FASHION_MNIST_CLASSES[:classes])
        except DatasetError as e:
            print(f"# Fashion-MNIST not readable ({e}); random-noise images instead")
    for c in range(classes):
        of_class = torch.nonzero(labels == c).flatten() if labels is not None else None
        for split, n in (("train", per_class), ("val", val_per_class)):
            d = root / split / names[c].replace("/", "-")
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if of_class is not None and pool is not None:
                    im = Image.fromarray(pool[int(of_class[i + (per_class if split == "val" else 0)])].numpy())
                    im = im.resize((px, px), Image.Resampling.BICUBIC).convert("RGB")
                else:
                    im = Image.fromarray(torch.randint(0, 256, (px, px, 3), dtype=torch.uint8, generator=gen).numpy())
                im.save(d / f"{i:04d}.jpg", quality=90)
    return names


def heads_loss(out, y: torch.Tensor, ce: nn.Module) -> torch.Tensor:
    """Cross-entropy on the class logits; a model with a distillation head trains both heads on the labels."""
    if isinstance(out, (tuple, list)):
        return sum(ce(o, y) for o in out) / len(out)
    return ce(out, y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def edgekit_run(model: nn.Module, data: Dataset, cfg: TrainConfig, rt: Runtime, workers: int, warmup: int) -> float:
    """Images/s of one `fit` epoch, its first `warmup` steps left out (timed between progress callbacks)."""
    stamps: list[float] = []

    def progress(step: int, total: int, loss: float, rate: float) -> None:
        stamps.append(time.perf_counter())

    fit(model, data, cfg, rt=rt, workers=workers, progress=progress)
    return (len(stamps) - warmup) * cfg.batch_size / (stamps[-1] - stamps[warmup - 1])


def plain_run(
    model: nn.Module, batches: list, cfg: TrainConfig, device: torch.device, bf16: bool, warmup: int
) -> float:
    """Images/s of a hand-written loop over pre-made batches on the device, its first `warmup` steps left out."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ce = nn.CrossEntropyLoss()
    model.train()
    t0 = 0.0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = heads_loss(model(x), y, ce)
        loss.backward()
        opt.step()
    sync(device)
    return (len(batches) - warmup) * len(batches[0][0]) / (time.perf_counter() - t0)


def loader_run(loader: TrainLoader, epochs: Iterator[int]) -> float:
    """Images/s of the next of `epochs` of `loader` alone (no model)."""
    t0 = time.perf_counter()
    n = sum(len(x) for x, _ in loader.epoch(next(epochs)))
    return n / (time.perf_counter() - t0)


def interleave(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each run once per round, the order reversed every other round (A B, B A, ...); the rate of each."""
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for k in list(runs)[:: -1 if r % 2 else 1]:
            rates[k].append(runs[k]())
    return rates


def show(label: str, rates: list[float]) -> str:
    return f"{label:44s} {statistics.median(rates):8.1f}   ({' '.join(f'{v:.1f}' for v in rates)})"


def verdict(ratio: float) -> str:
    return f"{ratio:.3f}  (goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (the CPU, and CUDA where there is one), or cpu,cuda,...")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the medians are compared)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per run (default 4 on the CPU, 30 on GPU)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per run (default 2 on the CPU, 5 on GPU)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (JPEG)")
    ap.add_argument("--images", choices=("fashion-mnist", "noise"), default="fashion-mnist")
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=96, help="training JPEGs per class (more if a run needs them)")
    ap.add_argument("--px", type=int, default=256, help="side of the JPEGs written")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.warmup is not None and args.warmup < 1:
        ap.error("--warmup must be 1 or more (a run is timed from the end of its last warm-up step)")
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    devs = devices(args.device)
    gpu = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA GPU available"
    print(cpu_line())
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} torch threads; {gpu}; devices measured: {devs}")
    print(
        f"# {MODEL} at {args.size}x{args.size}, batch {args.batch_size}, {args.rounds} interleaved rounds "
        f"(order alternating), medians; images/s of the measured steps of each run, warm-up steps left out"
    )
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="edgekit-train-throughput-"))
    b = args.batch_size
    most_steps = max(
        (args.warmup or (5 if d != "cpu" else 2)) + (args.steps or (30 if d != "cpu" else 4)) for d in devs
    )
    per_class = max(args.per_class, math.ceil(b * most_steps / args.classes))
    classes = write_jpegs(work, args.images, args.classes, per_class, 2, args.px)
    jpeg = load_dataset(f"imagefolder:{work}", args.size, val_limit=2)
    n_files = sum(1 for _ in work.rglob("*.jpg"))
    print(
        f"# image folder: {n_files} {args.px}x{args.px} RGB JPEGs ({args.images}, {len(classes)} classes, "
        f"{per_class} training images each), decoded to {args.size}x{args.size} (shorter side to "
        f"{round(args.size / 0.875)}, centre crop) by edgekit's imagefolder source"
    )

    torch.manual_seed(0)
    base = edgekit.create_model(MODEL, num_classes=len(classes))
    for dev in devs:
        warmup = args.warmup or (5 if dev != "cpu" else 2)
        steps = args.steps or (30 if dev != "cpu" else 4)
        n = b * (warmup + steps)  # one `fit` epoch: warm-up and measured steps
        files = jpeg.train.subset(torch.randperm(len(jpeg.train), generator=torch.Generator().manual_seed(1))[:n])
        decoded = Split(files.raw(torch.arange(n)), files.y, files.preprocess)  # uint8 3 x size x size, in memory
        in_jpeg = Dataset("jpeg", jpeg.classes, files, jpeg.val, files)
        in_memory = Dataset("memory", jpeg.classes, decoded, jpeg.val, decoded)
        rts = {p: runtime(dev, p) for p in precisions}
        device = rts[precisions[0]].device
        print(f"\n## {device}: {steps} measured steps after {warmup} warm-up steps per run, {n} images per epoch")

        # -- 1. edgekit's loop against a plain loop, on the same batches -------------------------------------------
        plain_cfg = TrainConfig(epochs=1, batch_size=b, augment="none")
        batches = [
            (decoded.preprocess(x).to(device), y.to(device))
            for x, y in TrainLoader(decoded, b, seed=plain_cfg.seed).epoch(0)  # the batches of fit's epoch 0
        ]
        runs: dict[str, Callable[[], float]] = {}
        for p in precisions:
            m_edge, m_plain = copy.deepcopy(base), copy.deepcopy(base).to(device)
            runs[f"edgekit {p}"] = partial(edgekit_run, m_edge, in_memory, plain_cfg, rts[p], 0, warmup)
            runs[f"plain {p}"] = partial(plain_run, m_plain, batches, plain_cfg, device, p == "bf16", warmup)
        t = time.perf_counter()
        rates = interleave(runs, args.rounds)
        print(f"\n### 1. training loop, in-memory data, no augmentation ({time.perf_counter() - t:.0f} s)\n{HEADER}")
        for p in precisions:
            print(show(f"edgekit fit {p}", rates[f"edgekit {p}"]))
            print(show(f"plain PyTorch loop {p}", rates[f"plain {p}"]))
        for p in precisions:
            ratio = statistics.median(rates[f"edgekit {p}"]) / statistics.median(rates[f"plain {p}"])
            print(f"edgekit / plain, {p}: {verdict(ratio)}")

        # -- 2. JPEG decoding in workers against in-memory images, the same fit ------------------------------------
        aug_cfg = TrainConfig(epochs=1, batch_size=b, augment="basic")
        pin = device.type == "cuda"
        loaders = {
            f"loader alone, {args.workers} workers": TrainLoader(
                jpeg.train, b, seed=aug_cfg.seed, workers=args.workers, pin_memory=pin
            ),
            "loader alone, in-process (0 workers)": TrainLoader(jpeg.train, b, seed=aug_cfg.seed, pin_memory=pin),
        }
        for loader in loaders.values():
            loader_run(loader, iter([0]))  # starts the persistent workers; warms the page cache
        runs = {}
        for p in precisions:
            m_jpeg, m_mem = copy.deepcopy(base), copy.deepcopy(base)
            runs[f"jpeg {p}"] = partial(edgekit_run, m_jpeg, in_jpeg, aug_cfg, rts[p], args.workers, warmup)
            runs[f"memory {p}"] = partial(edgekit_run, m_mem, in_memory, aug_cfg, rts[p], 0, warmup)
        for name, loader in loaders.items():
            runs[name] = partial(loader_run, loader, itertools.count(1))
        t = time.perf_counter()
        rates = interleave(runs, args.rounds)
        for loader in loaders.values():
            loader.close()
        print(
            f"\n### 2. data loading: edgekit fit, --augment basic, {args.workers} DataLoader workers decoding JPEGs "
            f"vs in-memory uint8 ({time.perf_counter() - t:.0f} s)\n{HEADER}"
        )
        for p in precisions:
            print(show(f"fit {p}, JPEG files, {args.workers} workers", rates[f"jpeg {p}"]))
            print(show(f"fit {p}, in-memory images, 0 workers", rates[f"memory {p}"]))
        for name in loaders:
            print(show(f"{name} ({len(jpeg.train)} JPEGs)", rates[name]))
        decode = statistics.median(rates[f"loader alone, {args.workers} workers"])
        for p in precisions:
            ratio = statistics.median(rates[f"jpeg {p}"]) / statistics.median(rates[f"memory {p}"])
            train = statistics.median(rates[f"memory {p}"])
            print(
                f"JPEG-fed / in-memory, {p}: {verdict(ratio)}; loader alone {decode:.0f} images/s = "
                f"{decode / train:.1f} x the {p} step's {train:.1f}"
            )
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
