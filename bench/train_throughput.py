"""Training throughput: edgekit's loop against a plain PyTorch loop, and JPEG loading against in-memory images.

MobileViG-Ti (seeded init, nothing is downloaded) at 224x224, batch 16 by default, fp32 and bf16 autocast, in one
process. The two sides of each comparison run in lockstep, one training step each in turn (each loop in a thread of
its own, only one running at a time; a step is timed from the start of its loop's turn to the end of the step,
without the other loop's steps), so a load that comes and goes on a shared machine falls on both sides alike. Each
comparison runs twice, each side starting first once (on a loaded machine the loop started first ran slower); the
first `--warmup` steps of each run are left out, and the median steps of both runs are compared:

1. loop: `edgekit.distill.loop.fit` (`--augment none`) on images decoded once into memory as uint8 3 x 224 x 224
   (each step: a `TrainLoader` batch, `Preprocess` x/255 and normalisation, the cosine learning rate, edgekit's
   AdamW with its two param groups, autocast and the (disabled) gradient scaler, `float(loss)`, the progress
   callback) against a hand-written loop over the same batches, made beforehand (normalised float tensors on the
   device): AdamW, cross-entropy on the model's heads (MobileViG trains its class and distillation heads on the
   labels, as `fit` does), zero_grad, forward, backward, step, nothing else. Same model (copies of one seeded
   init), batch, precision, images and order.
2. loading: the same `fit` with `--augment basic` (kornia crop and flip, on the device) fed by real JPEG decoding
   (an image folder of 256x256 JPEGs that this bench writes into a temporary directory: Fashion-MNIST images
   upscaled with PIL, or random noise; decoded and centre-cropped to 224 by `--workers` DataLoader workers)
   against the same `fit` on those images decoded once into memory (no workers). Each epoch runs 2 x `--workers`
   steps past the measured ones (the batches the workers decode ahead), so the measured JPEG-fed steps decode as
   many batches as they train on, as in a long epoch. Beside them, the loader alone (`TrainLoader.epoch`, no model)
   with `--workers` workers and with one (a core's decoding rate), interleaved epoch by epoch: on a machine with
   few cores the workers compete with the training threads for them, and the loader's own rate is the honest
   measure of whether loading keeps up.

Goals: edgekit / plain >= 0.9; JPEG-fed / in-memory >= 0.9.

`--device auto` measures the CPU and, where there is one, the CUDA GPU (each in its own section, same script).
`fit` also evaluates a (two-image) validation split after its epoch, outside the timed steps. A step ends after
`fit`'s `float(loss)` (so its GPU work is done); the plain loop synchronises the device after each step (needed to
time steps one by one; a plain loop would not, so on a GPU `fit`'s own per-step synchronisation is not measured).

    python bench/train_throughput.py | tee bench/train_throughput.txt
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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
from edgekit.profile import cpu_flags, host_name

MODEL = "mobilevig_ti"
GOAL = 0.9
Loop = Callable[[Callable[[], None]], None]  # a training loop, given what to call after each step


def cpu_line() -> str:
    """The CPU (`edgekit.profile.host_name`) and the flags that change the numbers (AVX-512, bf16, AMX)."""
    return f"# CPU: {host_name()}, {os.cpu_count()} cores; flags: {' '.join(cpu_flags()) or 'none of avx2/avx512/amx'}"


def devices(spec: str) -> list[str]:
    """`auto`: the CPU, and the CUDA GPU where there is one; otherwise a comma-separated list of devices."""
    if spec == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d.strip() for d in spec.split(",") if d.strip()]


def run_length(device: str, args: argparse.Namespace) -> tuple[int, int]:
    """(warm-up steps, measured steps) of a loop on `device`: a GPU step takes milliseconds, a CPU step a second."""
    gpu = device != "cpu"
    return args.warmup or (10 if gpu else 2), args.steps or (30 if gpu else 6)


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


def of(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def heads_loss(out, y: torch.Tensor, ce: nn.Module) -> torch.Tensor:
    """Cross-entropy on the class logits; a model with a distillation head trains both heads on the labels."""
    if isinstance(out, (tuple, list)):
        return sum(ce(o, y) for o in out) / len(out)
    return ce(out, y)


def edgekit_loop(model: nn.Module, data: Dataset, cfg: TrainConfig, rt: Runtime, workers: int) -> Loop:
    """One `fit` epoch; a step ends at `fit`'s progress callback (after the step's `float(loss)`)."""

    def loop(step_done: Callable[[], None]) -> None:
        fit(model, data, cfg, rt=rt, workers=workers, progress=lambda *_: step_done())

    return loop


def plain_loop(model: nn.Module, batches: list, cfg: TrainConfig, device: torch.device, bf16: bool) -> Loop:
    """A hand-written loop over batches already on the device."""

    def loop(step_done: Callable[[], None]) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ce = nn.CrossEntropyLoss()
        model.train()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = heads_loss(model(x), y, ce)
            loss.backward()
            opt.step()
            sync(device)  # to time this step alone
            step_done()

    return loop


class Lockstep:
    """Loops run in turn, one step each (each in a thread of its own, only one running at a time); `run` returns
    the seconds of every step of every loop, each from the start of its loop's turn to the end of the step."""

    def __init__(self, loops: dict[str, Loop]):
        self.loops, self.order = loops, list(loops)
        self.turn, self.done = self.order[0], set()
        self.cond = threading.Condition()
        self.seconds: dict[str, list[float]] = {k: [] for k in loops}
        self.errors: list[BaseException] = []
        self.threads = torch.get_num_threads()

    def _pass(self, name: str) -> None:
        """The turn to the next loop (in the ring) that has steps left; called holding the lock."""
        i = self.order.index(name)
        self.turn = next((k for k in self.order[i + 1 :] + self.order[: i + 1] if k not in self.done), name)
        self.cond.notify_all()

    def _wait(self, name: str) -> float:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        return time.perf_counter()

    def _thread(self, name: str) -> None:
        torch.set_num_threads(self.threads)  # as in the main thread
        start = self._wait(name)

        def step_done() -> None:
            nonlocal start
            self.seconds[name].append(time.perf_counter() - start)
            with self.cond:
                self._pass(name)
            start = self._wait(name)

        try:
            self.loops[name](step_done)
        except BaseException as e:  # re-raised in the main thread
            self.errors.append(e)
        finally:
            with self.cond:
                self.done.add(name)
                self._pass(name)

    def run(self) -> dict[str, list[float]]:
        threads = [threading.Thread(target=self._thread, args=(k,), name=k) for k in self.order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return self.seconds


def compare(
    title: str, loops: dict[str, Loop], batch: int, warmup: int, steps: int, goal_label: str
) -> dict[str, float]:
    """Run two loops in lockstep, twice: each order once (the loop that starts first, in the thread started first,
    was seen to run slower on a loaded machine); print their images/s (the median step) and the ratio of the first
    to the second."""
    t = time.perf_counter()
    (a, la), (b, lb) = loops.items()
    first = Lockstep({a: la, b: lb}).run()
    second = Lockstep({b: lb, a: la}).run()
    runs = {k: (first[k][warmup : warmup + steps], second[k][warmup : warmup + steps]) for k in (a, b)}
    seconds = {k: r[0] + r[1] for k, r in runs.items()}
    print(f"{title} ({time.perf_counter() - t:.0f} s)")
    for name, (s1, s2) in runs.items():
        listed = " ".join(f"{v:.2f}" for v in s1) + "  |  " + " ".join(f"{v:.2f}" for v in s2)
        print(f"  {name:46s} {batch / statistics.median(s1 + s2):8.1f} images/s   steps s: {listed}")
    sa, sb = seconds[a], seconds[b]
    ratio = statistics.median(sb) / statistics.median(sa)
    paired = statistics.median([y / x for x, y in zip(sa, sb)])  # step i of each ran one after the other
    met = "met" if ratio >= GOAL else "NOT met"
    print(f"  {goal_label}: {ratio:.3f}  (goal >= {GOAL}: {met}; median of the step pairs' ratios {paired:.3f})")
    return {k: batch / statistics.median(s) for k, s in seconds.items()}


def loader_epochs(loaders: dict[str, TrainLoader], rounds: int) -> dict[str, list[float]]:
    """Images/s of whole epochs of each loader alone (no model), epoch by epoch in turn."""
    rates: dict[str, list[float]] = {k: [] for k in loaders}
    for e in range(rounds + 1):  # epoch 0 starts the persistent workers and warms the page cache: not counted
        for name, loader in loaders.items():
            t0 = time.perf_counter()
            n = sum(len(x) for x, _ in loader.epoch(e))
            if e:
                rates[name].append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (the CPU, and CUDA where there is one), or cpu,cuda,...")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=None, help="measured steps a run (default 6 on the CPU, 30 on GPU)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps a run (default 2 on the CPU, 10 on GPU)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (JPEG)")
    ap.add_argument("--loader-rounds", type=int, default=3, help="epochs of the loader alone, each way")
    ap.add_argument("--images", choices=("fashion-mnist", "noise"), default="fashion-mnist")
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=96, help="training JPEGs a class (more if a loop needs them)")
    ap.add_argument("--px", type=int, default=256, help="side of the JPEGs written")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    devs = devices(args.device)
    gpu = f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA GPU available"
    print(cpu_line())
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} torch threads; {gpu}; devices measured: {devs}")
    b, tail = args.batch_size, 2 * args.workers
    workers = of(args.workers, "DataLoader worker")
    print(
        f"# {MODEL} at {args.size}x{args.size}, batch {b}; the two loops of a comparison in lockstep, a step each "
        "in turn; images/s of the median measured step"
    )
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="edgekit-train-throughput-"))
    most = max(sum(run_length(d, args)) + tail for d in devs) * b
    per_class = max(args.per_class, math.ceil(most / args.classes))
    classes = write_jpegs(work, args.images, args.classes, per_class, 2, args.px)
    jpeg = load_dataset(f"imagefolder:{work}", args.size, val_limit=2)
    print(
        f"# image folder: {sum(1 for _ in work.rglob('*.jpg'))} {args.px}x{args.px} RGB JPEGs ({args.images}, "
        f"{len(classes)} classes, {per_class} training images each), decoded to {args.size}x{args.size} (shorter "
        f"side to {round(args.size / 0.875)}, centre crop) by edgekit's imagefolder source"
    )

    torch.manual_seed(0)
    base = edgekit.create_model(MODEL, num_classes=len(classes))
    for dev in devs:
        warmup, steps = run_length(dev, args)
        n = b * (warmup + steps + tail)  # one epoch: warm-up, measured and tail steps
        perm = torch.randperm(len(jpeg.train), generator=torch.Generator().manual_seed(1))
        files = jpeg.train.subset(perm[:n])
        decoded = Split(files.raw(torch.arange(n)), files.y, files.preprocess)  # uint8 3 x size x size, in memory
        in_jpeg = Dataset("jpeg", jpeg.classes, files, jpeg.val, files)
        in_memory = Dataset("memory", jpeg.classes, decoded, jpeg.val, decoded)
        rts = {p: runtime(dev, p) for p in precisions}
        device = rts[precisions[0]].device
        print(
            f"\n## {device}: each comparison runs twice, in each order; a run measures {steps} steps of each loop "
            f"after {warmup} warm-up steps, then runs {tail} more (an epoch of {n} images)"
        )

        print("\n### 1. training loop: edgekit fit against a plain PyTorch loop, in-memory images, no augmentation")
        cfg = TrainConfig(epochs=1, batch_size=b, augment="none")
        batches = [  # the batches of fit's epoch 0, as fit preprocesses them
            (decoded.preprocess(x).to(device), y.to(device)) for x, y in TrainLoader(decoded, b, seed=cfg.seed).epoch(0)
        ]
        for p in precisions:
            loops = {
                f"edgekit fit {p}": edgekit_loop(copy.deepcopy(base), in_memory, cfg, rts[p], 0),
                f"plain PyTorch loop {p}": plain_loop(
                    copy.deepcopy(base).to(device), batches, cfg, device, p == "bf16"
                ),
            }
            compare(f"{p}:", loops, b, warmup, steps, f"edgekit / plain, {p}")
        del batches

        print(
            f"\n### 2. data loading: edgekit fit, --augment basic, fed by {workers} decoding JPEGs against in-memory "
            "uint8 images"
        )
        pin = device.type == "cuda"
        loaders = {
            f"loader alone, {of(w, 'worker')}": TrainLoader(jpeg.train, b, seed=cfg.seed, workers=w, pin_memory=pin)
            for w in dict.fromkeys((args.workers, 1))
        }
        t = time.perf_counter()
        decode = loader_epochs(loaders, args.loader_rounds)
        for loader in loaders.values():
            loader.close()
        print(f"loader alone, epochs of {len(jpeg.train)} JPEGs in turn ({time.perf_counter() - t:.0f} s)")
        for name, rates in decode.items():
            print(
                f"  {name:46s} {statistics.median(rates):8.1f} images/s   epochs: {' '.join(f'{v:.0f}' for v in rates)}"
            )
        cfg = TrainConfig(epochs=1, batch_size=b, augment="basic")
        for p in precisions:
            loops = {
                f"fit {p}, JPEG files, {workers}": edgekit_loop(
                    copy.deepcopy(base), in_jpeg, cfg, rts[p], args.workers
                ),
                f"fit {p}, in-memory images, 0 workers": edgekit_loop(copy.deepcopy(base), in_memory, cfg, rts[p], 0),
            }
            rate = compare(f"{p}:", loops, b, warmup, steps, f"JPEG-fed / in-memory, {p}")
            fed = rate[f"fit {p}, JPEG files, {workers}"]
            alone = statistics.median(decode[f"loader alone, {of(args.workers, 'worker')}"])
            print(
                f"  loading keeps up, {p}: the loader alone ({workers}) gives {alone:.0f} images/s, "
                f"{alone / fed:.0f} x the {fed:.1f} images/s of the JPEG-fed step"
            )
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
