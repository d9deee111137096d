"""The zoo and model references: a zoo name, `file.py:Class` / `package.module:factory`, or an edgekit checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import EdgekitError, UnknownModelError, WeightsError
from ..io import atomic_path
from . import zoo as _zoo  # noqa: F401  (registers the zoo)
from .deploy import reparameterized
from .registry import ModelCard, build_user_model, build_zoo_model, is_user_reference, list_models, model_card
from .stats import count_macs, count_params
from .surgery import apply_plan
from .weights import extract_state_dict, load_state_dict_strict, load_weights, read_checkpoint

CHECKPOINT_FORMAT = "edgekit-checkpoint/1"

__all__ = [
    "LoadedModel",
    "ModelCard",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_model",
    "model_card",
    "save_checkpoint",
]


@dataclass
class LoadedModel:
    """A built model with what later stages need to know about it."""

    model: nn.Module
    card: ModelCard
    reference: str | None  # None for a module handed over in Python: nothing to rebuild it from
    weights: str | None = None
    plans: list = field(default_factory=list)  # pruning plans applied to the base, in order


def _user_card(ref: str) -> ModelCard:
    return ModelCard(name=ref, family="user")


def load_model(
    ref: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> LoadedModel:
    """Build the model a reference names, load `weights` if given, and put it in evaluation mode."""
    if not isinstance(ref, str) or not ref:
        raise UnknownModelError("no model given; name a zoo model (see `edgekit zoo list`) or path/to/file.py:Class")
    path = Path(ref)
    if path.suffix in (".pt", ".pth", ".ckpt") or (path.is_file() and not is_user_reference(ref)):
        loaded = _load_edgekit_checkpoint(path)
    elif is_user_reference(ref):
        card = _user_card(ref) if num_classes is None else replace(_user_card(ref), num_classes=int(num_classes))
        loaded = LoadedModel(build_user_model(ref), card, ref)
    else:
        card = model_card(ref)
        if num_classes is not None:
            card = replace(card, num_classes=num_classes)
        loaded = LoadedModel(build_zoo_model(ref, num_classes=card.num_classes), card, ref)
    if weights is not None:
        load_weights(loaded.model, weights)
        loaded.weights = str(weights)
    if input_size is not None:
        loaded.card = replace(loaded.card, input_size=int(input_size))
    loaded.model.eval()
    return loaded


def create_model(
    name: str, weights: str | Path | None = None, num_classes: int | None = None, pretrained: bool = False
) -> nn.Module:
    """`edgekit.create_model("mobilevig_ti", weights="mobilevig_ti.pth")` -> nn.Module in evaluation mode."""
    if pretrained:
        raise WeightsError("edgekit downloads nothing; pass weights=PATH to a checkpoint file you have")
    return load_model(name, weights=weights, num_classes=num_classes).model


def checkpoint_out(path: str | Path) -> Path:
    """`path` as a Path, checked to name a checkpoint file (what every checkpoint-writing command takes as --out)."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth", ".ckpt"):
        raise EdgekitError(f"--out '{path}' should name a checkpoint file ending in .pt")
    return path


def save_checkpoint(
    loaded: LoadedModel,
    path: str | Path,
    plan: dict | None = None,
    provenance: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write an edgekit checkpoint (plain tensors and containers only; loads with `weights_only=True`).

    `loaded.model` is the (possibly pruned) network; `plan` says how to rebuild its architecture from
    the base reference. A checkpoint of a checkpoint keeps the original base and composes the plans.
    """
    path = Path(path)
    blob = {
        "format": CHECKPOINT_FORMAT,
        "base": loaded.card.name,  # the zoo name or file.py:Class, also for a checkpoint of a checkpoint
        "num_classes": loaded.card.num_classes,
        "input_size": loaded.card.input_size,
        "plans": list(getattr(loaded, "plans", [])) + ([plan] if plan else []),
        "state_dict": loaded.model.state_dict(),
        "provenance": provenance or {},
        **(extra or {}),  # e.g. `train_state` to resume training from
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def _load_edgekit_checkpoint(path: Path) -> LoadedModel:
    blob = read_checkpoint(path)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"'{path}' is not an edgekit checkpoint; to load plain weights give a model name and --weights {path}"
        )
    base = load_model(str(blob["base"]), num_classes=int(blob["num_classes"]))
    plans = list(blob.get("plans") or [])
    for plan in plans:
        apply_plan(base.model, plan)
    load_state_dict_strict(base.model, extract_state_dict(blob, path), path)
    card = replace(base.card, input_size=int(blob.get("input_size") or base.card.input_size))
    return LoadedModel(base.model, card, str(path), plans=plans)


def model_info(name: str, input_size: int | None = None) -> dict:
    """The model card with params and MACs counted by edgekit (deploy form, at the card's input size)."""
    loaded = load_model(name, input_size=input_size)
    model = reparameterized(loaded.model)
    card = loaded.card
    return {
        **card.to_dict(),
        "params_m": count_params(model) / 1e6,
        "gmacs": count_macs(model, card.input_size) / 1e9,
    }


def zoo_rows(count: bool = False) -> list[dict]:
    rows = []
    for name in list_models():
        row = model_info(name) if count else model_card(name).to_dict()
        rows.append(row)
    return rows
