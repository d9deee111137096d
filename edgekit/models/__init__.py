"""The zoo and model references: a zoo name, `file.py:Class` / `package.module:factory`, or an edgekit checkpoint."""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import EdgekitError, UnknownModelError, WeightsError
from ..io import atomic_path, check_writable
from ..specs import MAX_CLASSES, MAX_INPUT, MIN_INPUT
from . import zoo as _zoo  # noqa: F401  (registers the zoo)
from .deploy import reparameterized
from .probe import InputSizeError, check_input_size, output_classes
from .registry import (
    ModelCard,
    build_user_model,
    build_zoo_model,
    check_trusted,
    is_user_reference,
    list_models,
    model_card,
    reset_trusted_code,
    trust_all_code,
    trusted_code,
)
from .stats import count_macs, count_params
from .surgery import apply_plan
from .weights import extract_state_dict, load_state_dict_strict, load_weights, read_checkpoint

CHECKPOINT_FORMAT = "edgekit-checkpoint/1"


__all__ = [
    "InputSizeError",
    "LoadedModel",
    "ModelCard",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_model",
    "model_card",
    "reset_trusted_code",
    "save_checkpoint",
    "trust_all_code",
    "trusted_code",
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
    probe: bool = False,
) -> LoadedModel:
    """Build the model a reference names, load `weights` if given, and put it in evaluation mode.

    With `probe`, one forward at the input size first: a network that cannot run at it is a one-line
    `InputSizeError` naming the size it runs at, and a user's module gets its class count from its output.
    """
    if not isinstance(ref, str) or not ref:
        raise UnknownModelError("no model given; name a zoo model (see `edgekit zoo list`) or path/to/file.py:Class")
    check_size(num_classes, input_size)
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
    from_code = is_user_reference(ref) and loaded.reference == ref  # a module named by its code: no card size
    built_for = None if from_code else loaded.card.input_size
    if input_size is not None:
        loaded.card = replace(loaded.card, input_size=int(input_size))
    loaded.model.eval()
    if probe:
        check_input_size(loaded.model, loaded.card.input_size, name=ref, built_for=built_for)
        if loaded.card.family == "user" and num_classes is None:  # a user's module: the classes it outputs
            loaded.card = replace(loaded.card, num_classes=output_classes(loaded.model, loaded.card.input_size))
    return loaded


def check_size(num_classes: int | None = None, input_size: int | None = None) -> None:
    """A one-line error for a class count or input size no model can have (before anything is built)."""
    for name, value, low, high in (
        ("--num-classes", num_classes, 1, MAX_CLASSES),
        ("--input-size", input_size, MIN_INPUT, MAX_INPUT),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise EdgekitError(f"{name} {value} is out of range; give a whole number from {low} to {high}")


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
    return check_writable(path)


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
    state_dict = loaded.model.state_dict()
    blob = {
        "format": CHECKPOINT_FORMAT,
        "base": loaded.card.name,  # the zoo name or file.py:Class, also for a checkpoint of a checkpoint
        "num_classes": loaded.card.num_classes,
        "input_size": loaded.card.input_size,
        "plans": list(getattr(loaded, "plans", [])) + ([plan] if plan else []),
        "state_dict": state_dict,
        # each module's version (`_version`) by prefix: some loaders read it (BatchNorm's num_batches_tracked,
        # torchvision's MNASNet refuses a state dict without it); plain data, as the state dict's own `_metadata`
        # attribute is lost wherever the state dict is copied into a new dict
        "state_dict_metadata": _plain_metadata(getattr(state_dict, "_metadata", None)),
        "provenance": provenance or {},
        **(extra or {}),  # e.g. `train_state` to resume training from
    }
    # Serialised in memory: given a path, torch.save names the zip's inner folder after the (random) temporary
    # file name, so the same checkpoint would never have the same bytes twice; and a full disk is then an OSError
    # of a plain write, not a RuntimeError from torch's zip writer.
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def _load_edgekit_checkpoint(path: Path) -> LoadedModel:
    blob = read_checkpoint(path)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"'{path}' is not an edgekit checkpoint; to load plain weights give a model name and --weights {path}"
        )
    base_ref, num_classes, input_size, plans = _checkpoint_fields(blob, path)
    if not is_user_reference(base_ref) and base_ref not in list_models():  # never a path: no checkpoint chains
        raise WeightsError(f"checkpoint '{path}' is damaged: its base '{base_ref[:200]}' is not a zoo model")
    check_trusted(base_ref, f"checkpoint '{path}'")
    base = load_model(base_ref, num_classes=num_classes)
    for plan in plans:
        apply_plan(base.model, plan)
    state_dict = OrderedDict(extract_state_dict(blob, path))
    # the modules' versions as saved (checkpoints written before `state_dict_metadata` carry them pickled on
    # the state dict); a module that reads its version at load time gets it, as from torch.save / torch.load
    saved = blob.get("state_dict_metadata", getattr(blob.get("state_dict"), "_metadata", None))
    state_dict._metadata = OrderedDict(_plain_metadata(saved))  # type: ignore[attr-defined]
    load_state_dict_strict(base.model, state_dict, path)
    card = replace(base.card, input_size=input_size or base.card.input_size)
    return LoadedModel(base.model, card, str(path), plans=plans)


def _plain_metadata(metadata) -> dict[str, dict[str, int | str]]:
    """A state dict's `_metadata` ({module prefix: {"version": 2}, ...}) as plain data: string keys, and of each
    entry only the int and string values (what loads with `weights_only=True`); anything else is dropped."""
    if not isinstance(metadata, dict):
        return {}
    return {
        prefix: {k: v for k, v in entry.items() if isinstance(k, str) and isinstance(v, (int, str))}
        for prefix, entry in metadata.items()
        if isinstance(prefix, str) and isinstance(entry, dict)
    }


def _checkpoint_fields(blob: dict, path: Path) -> tuple[str, int, int | None, list]:
    """The base reference, class count, input size and plans of an edgekit checkpoint, type-checked."""
    base, num_classes, input_size, plans = (blob.get(k) for k in ("base", "num_classes", "input_size", "plans"))

    def bad(field: str, what: str):
        return WeightsError(f"checkpoint '{path}' is damaged: '{field}' should be {what}; write it again")

    if not isinstance(base, str) or not base or len(base) > 4096:
        raise bad("base", "a model reference")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise bad("num_classes", f"a whole number from 1 to {MAX_CLASSES}")
    if input_size is not None and (not isinstance(input_size, int) or not MIN_INPUT <= input_size <= MAX_INPUT):
        raise bad("input_size", f"a whole number from {MIN_INPUT} to {MAX_INPUT}")
    if not isinstance(plans or [], list) or not all(isinstance(p, dict) for p in plans or []):
        raise bad("plans", "a list of pruning plans")
    return base, num_classes, input_size, list(plans or [])


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
