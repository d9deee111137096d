"""`edgekit train` and `edgekit distill`: one training loop, with or without a teacher.

Both take a model reference, train it on a dataset spec and write an edgekit checkpoint (with the
pruning plans of a pruned student kept) after every epoch; `resume=True` continues from that file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import AUGMENTS, Dataset, evaluate, load_dataset
from ..devices import Runtime, runtime
from ..errors import EdgekitError
from ..models import LoadedModel, checkpoint_out, load_model, save_checkpoint
from ..models.weights import read_checkpoint
from ..specs import DEFAULT_DATA, DEFAULT_SEED, DistillSpec, TrainSpec
from .loop import TrainConfig, TrainState, cosine_lr, fit, sparsity_masks
from .losses import Distiller, check_options, soft_kd

__all__ = [
    "Distiller",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "cosine_lr",
    "default_workers",
    "distill",
    "evaluate",
    "fit",
    "soft_kd",
    "parse_features",
    "sparsity_masks",
    "train",
]


@dataclass
class TrainResult:
    checkpoint: Path
    report: dict


def _load_for_data(ref: str, data: str, *, weights, num_classes, input_size, limit, val_limit, seed, who="model"):
    """The model and the dataset, with the classifier sized to the data where that is unambiguous."""
    # one forward first: a network that cannot run at the size is one line, and a user's module has the classes
    # it outputs
    loaded = load_model(ref, weights=weights, num_classes=num_classes, input_size=input_size, probe=True)
    card = loaded.card
    dataset = load_dataset(data, card.input_size, card.mean, card.std, limit=limit, val_limit=val_limit, seed=seed)
    if card.num_classes != dataset.num_classes:
        fresh_zoo_model = (
            weights is None
            and num_classes is None
            and loaded.plans == []
            and loaded.reference == card.name
            and card.family != "user"
        )
        if not fresh_zoo_model:
            raise EdgekitError(
                f"the {who} '{ref}' has {card.num_classes} classes and '{data}' has {dataset.num_classes}; "
                f"give a {who} with {dataset.num_classes} outputs "
                f"(or --num-classes {dataset.num_classes} for a zoo model)"
            )
        loaded = load_model(ref, num_classes=dataset.num_classes, input_size=input_size)
    return loaded, dataset


def _without_timings(history: list[dict]) -> list[dict]:
    """The epoch log as a checkpoint keeps it: timings belong to the run's report, not to the model's bytes (the same
    command with the same seed writes the same file, so a recipe's later steps keep their cache keys)."""
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history]


def _check_scale_options(cfg: TrainConfig, workers: int | None) -> None:
    if cfg.augment not in AUGMENTS:
        raise EdgekitError(f"--augment {cfg.augment!r} is not one of {', '.join(AUGMENTS)}")
    if not 1 <= cfg.accumulate <= 1024:
        raise EdgekitError(f"--accumulate {cfg.accumulate} is out of range; give 1 to 1024 batches per step")
    if cfg.clip_grad is not None and not 0 < cfg.clip_grad < float("inf"):
        raise EdgekitError(f"--clip-grad {cfg.clip_grad} must be a positive norm, e.g. 1.0")
    if cfg.ema is not None and not 0 < cfg.ema < 1:
        raise EdgekitError(f"--ema {cfg.ema} must be a decay between 0 and 1, e.g. 0.9998")
    if workers is not None and not 0 <= workers <= 64:
        raise EdgekitError(f"--workers {workers} is out of range; give 0 (load in the training process) to 64")


def default_workers(dataset: Dataset, rt: Runtime, workers: int | None) -> int:
    """`workers`, or by default: none for images held in memory (nothing to decode), else up to 8 processes per
    rank, leaving a core for the training process."""
    if workers is not None:
        return int(workers)
    if isinstance(dataset.train.images, torch.Tensor):
        return 0
    return min(8, max(0, (os.cpu_count() or 1) // rt.world - 1))


def _resume_state(out: Path, resume: bool, config: dict) -> TrainState | None:
    if not resume:
        return None
    if not out.is_file():
        raise EdgekitError(f"--resume: '{out}' does not exist yet; run without --resume to start training")
    blob = read_checkpoint(out)
    ts = blob.get("train_state")
    if not isinstance(ts, dict):
        raise EdgekitError(f"--resume: '{out}' holds no training state; it was not written by edgekit train/distill")
    saved = ts.get("config") or {}
    changed = [k for k in ("data", "batch_size", "lr", "seed", "teacher") if saved.get(k) != config.get(k)]
    if changed:
        k = changed[0]
        raise EdgekitError(
            f"--resume: '{out}' was trained with {k}={saved.get(k)!r}, not {config.get(k)!r}; "
            f"give the same {k} or start a new --out"
        )
    return TrainState.from_dict(ts)


def _run(
    model: str,
    data: str,
    out: str | Path,
    cfg: TrainConfig,
    *,
    weights=None,
    num_classes=None,
    input_size=None,
    limit=None,
    val_limit=None,
    resume=False,
    progress=None,
    teacher_spec: dict | None = None,
    device: str = "auto",
    precision: str = "fp32",
    workers: int | None = None,
) -> TrainResult:
    out = checkpoint_out(out)
    if cfg.epochs < 1:
        raise EdgekitError(f"--epochs {cfg.epochs} must be at least 1")
    if cfg.lr <= 0 or cfg.batch_size < 1:
        raise EdgekitError("--lr must be positive and --batch-size at least 1")
    _check_scale_options(cfg, workers)
    rt = runtime(device, precision)  # an unavailable device is one line before anything loads
    config = {"data": data, **cfg.to_dict(), "limit": limit, "teacher": (teacher_spec or {}).get("teacher")}
    state = _resume_state(out, resume, config)
    # every model and weights file is read and checked before the data loads and the model is evaluated
    teacher = load_model(teacher_spec["teacher"], weights=teacher_spec.get("teacher_weights")) if teacher_spec else None
    source = str(out) if state else model
    loaded, dataset = _load_for_data(
        source,
        data,
        weights=None if state else weights,
        num_classes=None if state else num_classes,
        input_size=input_size,
        limit=limit,
        val_limit=val_limit,
        seed=cfg.seed,
    )
    net = rt.place(loaded.model)
    acc_before = (
        evaluate(net, dataset.val, rt)
        if not state
        else (state.history[0].get("val_accuracy_before") if state.history else None)
    )
    distiller = None
    if teacher_spec and teacher is not None:
        distiller = _make_distiller(net, teacher, teacher_spec, dataset, rt)

    def save(s: TrainState) -> None:
        if s.history and "val_accuracy_before" not in s.history[0]:
            s.history[0]["val_accuracy_before"] = acc_before
        if not rt.main:
            return  # rank 0 writes; the others wait at the epoch's barrier
        provenance = {
            "command": "distill" if teacher_spec else "train",
            "model": model,
            "data": dataset.describe(),
            "config": config,
            "history": _without_timings(s.history),
        }
        train_state = {**s.to_dict(), "history": _without_timings(s.history), "config": config}
        save_checkpoint(loaded, out, provenance=provenance, extra={"train_state": train_state})

    try:
        state = fit(
            net, dataset, cfg, rt=rt, workers=default_workers(dataset, rt, workers), distiller=distiller,
            state=state, on_epoch=save, progress=progress if rt.main else None,
        )  # fmt: skip
    finally:
        if distiller:
            distiller.close()
    report = {
        "checkpoint": str(out),
        "model": model,
        "data": dataset.describe(),
        "epochs": cfg.epochs,
        "val_accuracy_before": acc_before,
        "val_accuracy": state.history[-1]["val_accuracy"] if state.history else None,
        "history": state.history,
        "device": str(rt.device),
        "precision": rt.precision,
        "world_size": rt.world,
    }
    if teacher_spec and distiller is not None:  # the distiller is made when there is a teacher
        report["teacher"] = teacher_spec["teacher"]
        report["teacher_val_accuracy"] = evaluate(distiller.teacher[0], dataset.val, rt)
    return TrainResult(out, report)


def _make_distiller(
    student: torch.nn.Module, teacher: LoadedModel, spec: dict, dataset: Dataset, rt: Runtime
) -> Distiller:
    pre = dataset.train.preprocess
    if teacher.card.num_classes != dataset.num_classes:
        raise EdgekitError(
            f"the teacher '{spec['teacher']}' has {teacher.card.num_classes} classes and "
            f"'{dataset.name}' has {dataset.num_classes}; give a teacher trained on this data"
        )
    if (tuple(teacher.card.mean), tuple(teacher.card.std)) != (pre.mean, pre.std):
        raise EdgekitError(
            f"the teacher '{spec['teacher']}' expects different input normalisation than the student; "
            "distil between models with the same preprocessing"
        )
    example = rt.to(dataset.train.batch(torch.arange(min(2, len(dataset.train))))[0])
    return Distiller(
        student,
        rt.place(teacher.model),
        temperature=spec.get("temperature", DistillSpec.default("temperature")),
        alpha=spec.get("alpha", DistillSpec.default("alpha")),
        hard=spec.get("hard", DistillSpec.default("hard")),
        features=spec.get("features"),
        example=example,
    )


def train(
    model: str,
    data: str = DEFAULT_DATA,
    *,
    out: str | Path,
    epochs: int = TrainSpec.default("epochs"),
    lr: float = TrainSpec.default("lr"),
    batch_size: int = TrainSpec.default("batch_size"),
    weight_decay: float = TrainSpec.default("weight_decay"),
    seed: int = DEFAULT_SEED,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    limit: int | None = TrainSpec.default("limit"),
    val_limit: int | None = None,
    resume: bool = False,
    progress=None,
    device: str = TrainSpec.default("device"),
    precision: str = TrainSpec.default("precision"),
    workers: int | None = TrainSpec.default("workers"),
    augment: str = TrainSpec.default("augment"),
    accumulate: int = TrainSpec.default("accumulate"),
    clip_grad: float | None = TrainSpec.default("clip_grad"),
    ema: float | None = TrainSpec.default("ema"),
) -> TrainResult:
    """Train (or fine-tune) `model` on `data` and write an edgekit checkpoint to `out` after every epoch.

    On `device` at `precision`; under torchrun, data-parallel over the ranks (`batch_size` is the global batch)."""
    cfg = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed, augment=augment,
        accumulate=accumulate, clip_grad=clip_grad, ema=ema,
    )  # fmt: skip
    return _run(
        model,
        data,
        out,
        cfg,
        weights=weights,
        num_classes=num_classes,
        input_size=input_size,
        limit=limit,
        val_limit=val_limit,
        resume=resume,
        progress=progress,
        device=device,
        precision=precision,
        workers=workers,
    )


def distill(
    student: str,
    teacher: str,
    data: str = DEFAULT_DATA,
    *,
    out: str | Path,
    epochs: int = DistillSpec.default("epochs"),
    lr: float = DistillSpec.default("lr"),
    batch_size: int = DistillSpec.default("batch_size"),
    weight_decay: float = DistillSpec.default("weight_decay"),
    seed: int = DEFAULT_SEED,
    temperature: float = DistillSpec.default("temperature"),
    alpha: float = DistillSpec.default("alpha"),
    hard: bool = DistillSpec.default("hard"),
    features: list[tuple[str, str]] | None = None,
    teacher_weights: str | Path | None = DistillSpec.default("teacher_weights"),
    weights: str | Path | None = None,
    input_size: int | None = None,
    limit: int | None = DistillSpec.default("limit"),
    val_limit: int | None = None,
    resume: bool = False,
    progress=None,
    device: str = DistillSpec.default("device"),
    precision: str = DistillSpec.default("precision"),
    workers: int | None = DistillSpec.default("workers"),
    augment: str = DistillSpec.default("augment"),
    accumulate: int = DistillSpec.default("accumulate"),
    clip_grad: float | None = DistillSpec.default("clip_grad"),
    ema: float | None = DistillSpec.default("ema"),
) -> TrainResult:
    """Train `student` on `data` with `teacher`'s outputs (soft KD, or DeiT hard labels) and optional features.

    The teacher runs on the student's device, in evaluation mode without gradients, on the same (augmented) batch."""
    check_options(temperature, alpha)  # before the data and models are loaded
    cfg = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed, augment=augment,
        accumulate=accumulate, clip_grad=clip_grad, ema=ema,
    )  # fmt: skip
    spec = {
        "teacher": str(teacher),
        "teacher_weights": teacher_weights,
        "temperature": temperature,
        "alpha": alpha,
        "hard": hard,
        "features": features,
    }
    return _run(
        student,
        data,
        out,
        cfg,
        weights=weights,
        input_size=input_size,
        limit=limit,
        val_limit=val_limit,
        resume=resume,
        progress=progress,
        teacher_spec=spec,
        device=device,
        precision=precision,
        workers=workers,
    )


def parse_features(pairs: list[str] | None) -> list[tuple[str, str]]:
    """`student.layer:teacher.layer` (or one name for both) -> pairs."""
    result = []
    for p in pairs or []:
        s, sep, t = p.partition(":")
        if not s or (sep and not t):
            raise EdgekitError(f"--feature '{p}' should be STUDENT_LAYER:TEACHER_LAYER, e.g. backbone.3:backbone.3")
        result.append((s, t or s))
    return result
