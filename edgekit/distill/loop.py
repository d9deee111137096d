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

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..data import Dataset, accuracy, batches
from ..specs import DEFAULT_SEED, TrainSpec
from .losses import Distiller


@dataclass
class TrainConfig:
    epochs: int = TrainSpec.default("epochs")
    lr: float = TrainSpec.default("lr")
    weight_decay: float = TrainSpec.default("weight_decay")
    batch_size: int = TrainSpec.default("batch_size")
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    seed: int = DEFAULT_SEED

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainState:
    """Everything `fit` needs to continue: finished epochs, optimizer and the per-epoch log."""

    epoch: int = 0
    optimizer: dict | None = None
    extra_params: dict | None = None  # e.g. feature-distillation adapters
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(
            epoch=d.get("epoch", 0),
            optimizer=d.get("optimizer"),
            extra_params=d.get("extra_params"),
            history=list(d.get("history") or []),
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


Progress = Callable[[int, int, float], None]  # (step, total steps, loss)


def fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    distiller: Distiller | None = None,
    state: TrainState | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    progress: Progress | None = None,
) -> TrainState:
    """Train `model` in place for `cfg.epochs` (from `state.epoch` when resuming); returns the final state."""
    state = state or TrainState()
    steps_per_epoch = max(1, len(data.train) // min(cfg.batch_size, len(data.train)))
    total = steps_per_epoch * cfg.epochs
    warmup = min(total, max(1, int(total * cfg.warmup_fraction)))
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
    masks = sparsity_masks(model)
    named = dict(model.named_parameters())
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(state.epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        it = batches(data.train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        model.train()
        t0, losses = time.perf_counter(), []
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, cfg.lr, warmup)
            x, y = next(it)
            out = model(x)
            loss = distiller.loss(out, x, y) if distiller else label_loss(out, y, ce)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for name, m in masks.items():
                        named[name].mul_(m)
            losses.append(float(loss.detach()))
            if progress:
                progress(step + 1, total, losses[-1])
        model.eval()
        state.epoch = epoch + 1
        state.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": sum(losses) / len(losses),
                "val_accuracy": accuracy(model, data.val),
                "lr_end": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
        )
        state.optimizer = opt.state_dict()
        state.extra_params = distiller.state_dict() if distiller and extra else None
        if on_epoch:
            on_epoch(state)
    model.eval()
    return state


def label_loss(out, y: torch.Tensor, ce: nn.Module) -> torch.Tensor:
    """Cross-entropy on the class logits; a model with a distillation head trains both heads on the labels."""
    if isinstance(out, (tuple, list)):
        return sum(ce(o, y) for o in out) / len(out)
    return ce(out, y)
