"""The training loop shared by fine-tuning and distillation.

AdamW with a linear warm-up into a cosine schedule, fixed seeds (the batches and dropout of epoch e are
seeded by (seed, e), so a resumed run retraces an uninterrupted one exactly), evaluation on the
validation split after every epoch, and a checkpoint written atomically at every epoch's end that
`resume` continues from.

Unstructured sparsity survives fine-tuning: a weight tensor that arrives with exact zeros (the mark of
magnitude or DIMAP pruning; trained float weights are never exactly zero) keeps them, because its mask
is applied after every optimizer step.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..data import Dataset, TrainLoader, evaluate, make_augment
from ..devices import Runtime, synchronized
from ..errors import EdgekitError
from ..specs import DEFAULT_SEED, TrainSpec
from .losses import Distiller


@dataclass
class TrainConfig:
    epochs: int = TrainSpec.default("epochs")
    lr: float = TrainSpec.default("lr")
    weight_decay: float = TrainSpec.default("weight_decay")
    batch_size: int = TrainSpec.default("batch_size")  # the global batch, over every rank
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    seed: int = DEFAULT_SEED
    augment: str = TrainSpec.default("augment")
    accumulate: int = TrainSpec.default("accumulate")
    clip_grad: float | None = TrainSpec.default("clip_grad")
    ema: float | None = TrainSpec.default("ema")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """Everything `fit` needs to continue: finished epochs, optimizer and the per-epoch log."""

    epoch: int = 0
    optimizer: dict | None = None
    extra_params: dict | None = None  # e.g. feature-distillation adapters
    history: list = field(default_factory=list)
    ema: dict | None = None  # the weights' exponential moving average (AveragedModel's state)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(
            epoch=d.get("epoch", 0),
            optimizer=d.get("optimizer"),
            extra_params=d.get("extra_params"),
            history=list(d.get("history") or []),
            ema=d.get("ema"),
        )


def sparsity_masks(model: nn.Module, min_zero_fraction: float = 0.01) -> dict[str, torch.Tensor]:
    """Masks of the weight tensors (2-D and up) that carry pruning zeros.

    A tensor entirely zero (a zero-initialised layer) is not a pruned one and stays free.
    """
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            nz = p.detach() != 0
            frac = 1.0 - float(nz.float().mean())
            if min_zero_fraction <= frac < 1.0:
                masks[name] = nz
    return masks


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


Progress = Callable[..., None]  # (step, total steps, loss[, images per second])


def fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    rt: Runtime | None = None,
    workers: int = 0,
    distiller: Distiller | None = None,
    state: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    progress: Progress | None = None,
) -> TrainState:
    """Train `model` in place for `cfg.epochs` (from `state.epoch` when resuming); returns the final state.

    On `rt`'s device and precision, data-parallel over its ranks (each takes its slice of every global batch);
    `on_epoch` and `progress` are called on every rank (the caller lets rank 0 write and print)."""
    rt = rt or Runtime()
    state = state or TrainState()
    with_rate = progress is not None and _takes(progress, 4)  # (step, total, loss) callbacks predate the rate
    loader = TrainLoader(
        data.train, cfg.batch_size, seed=cfg.seed, rank=rt.rank, world=rt.world, workers=workers,
        pin_memory=rt.device.type == "cuda",
    )  # fmt: skip
    steps_per_epoch = loader.steps_per_epoch // cfg.accumulate
    if steps_per_epoch < 1:
        raise EdgekitError(
            f"--accumulate {cfg.accumulate} needs {cfg.accumulate} batches of {cfg.batch_size} per step and an "
            f"epoch has {loader.steps_per_epoch}; lower --accumulate or --batch-size"
        )
    total = steps_per_epoch * cfg.epochs
    warmup = min(total, max(1, int(total * cfg.warmup_fraction)))
    rt.place(model)
    if distiller:
        distiller.to(rt.device)
        rt.place(distiller.teacher[0])
    extra = list(distiller.parameters()) if distiller else []
    if distiller and state.extra_params:
        distiller.load_state_dict(state.extra_params)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2] + [p for p in extra if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2] + [p for p in extra if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    if state.optimizer:
        opt.load_state_dict(state.optimizer)
    scaler = rt.scaler()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    if ema is not None and state.ema:
        ema.load_state_dict(state.ema)
    masks = sparsity_masks(model)
    named = dict(model.named_parameters())
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    pre = data.train.preprocess
    augment = make_augment(cfg.augment, pre.size, data.num_classes)

    def prepare(raw: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw, y = rt.to(raw), y.to(rt.device, non_blocking=True)
        if augment is None:
            return pre(raw), y  # the pipeline of every run before augmentation existed, bit for bit
        x, target = augment(pre.unit(raw), y)
        return pre.normalize(x), target

    with synchronized(model, rt):
        net: nn.Module = model
        if rt.distributed:
            net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        for epoch in range(state.epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * rt.rank)  # rank 0 of any run: the one-process seed
            batches_of_epoch = iter(loader.epoch(epoch))
            model.train()
            t0, losses, seen = time.perf_counter(), [], 0
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(step, total, cfg.lr, warmup)
                opt.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for micro in range(cfg.accumulate):
                    x, target = prepare(*next(batches_of_epoch))
                    sync = micro == cfg.accumulate - 1 or not rt.distributed
                    with contextlib.nullcontext() if sync else net.no_sync():  # type: ignore[operator]
                        with rt.autocast():
                            out = net(x)
                            loss = distiller.loss(out, x, target) if distiller else label_loss(out, target, ce)
                        scaler.scale(loss / cfg.accumulate).backward()
                    loss_sum += float(loss.detach()) / cfg.accumulate
                    seen += len(x) * rt.world
                if rt.distributed and extra:  # the adapters are outside DDP: average their gradients here
                    for p in extra:
                        if p.grad is not None:
                            p.grad.copy_(rt.sum(p.grad) / rt.world)
                if cfg.clip_grad:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params + extra, cfg.clip_grad)
                scaler.step(opt)
                scaler.update()
                if masks:
                    with torch.no_grad():
                        for name, m in masks.items():
                            named[name].mul_(m)
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(loss_sum)
                if progress:
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    progress(step + 1, total, losses[-1], *([rate] if with_rate else []))
            model.eval()
            state.epoch = epoch + 1
            evaluated = ema.module if ema is not None else model
            state.history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": rt.mean(sum(losses) / len(losses)),
                    "val_accuracy": evaluate(evaluated, data.val, rt),
                    "lr_end": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                    "images_per_s": seen / max(1e-9, time.perf_counter() - t0),
                }
            )
            state.optimizer = opt.state_dict()
            state.extra_params = distiller.state_dict() if distiller and extra else None
            state.ema = ema.state_dict() if ema is not None else None
            if ema is not None and state.epoch == cfg.epochs:  # the finished model is the average
                model.load_state_dict(ema.module.state_dict())
            if on_epoch:
                on_epoch(state)
            rt.barrier()  # rank 0 has written the epoch's checkpoint before any rank goes on
    model.eval()
    return state


def _takes(fn: Callable, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): assume the current form
        return True
    return True


def label_loss(out, y: torch.Tensor, ce: nn.Module) -> torch.Tensor:
    """Cross-entropy on the class logits; a model with a distillation head trains both heads on the labels."""
    if isinstance(out, (tuple, list)):
        return sum(ce(o, y) for o in out) / len(out)
    return ce(out, y)
