"""Load checkpoints safely: `weights_only=True` always, so a pickled object is refused, never executed."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError, first_line

STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "model_ema")


def _first_line(e: BaseException) -> str:
    return first_line(str(e), 160) or type(e).__name__


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file with `weights_only=True`; every failure is a one-line `WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:  # not a pickle edgekit can read at all
            raise WeightsError(
                f"could not read weights file '{path}' ({_first_line(e)}); is it a PyTorch checkpoint?"
            ) from None
        what = found.group(1).rstrip(".,")
        raise WeightsError(
            f"refused '{path}': it carries a pickled object ({what}), which a safe load does not execute; "
            "save a plain state dict (torch.save(model.state_dict(), PATH)) instead"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise WeightsError(
            f"could not read weights file '{path}' ({_first_line(e)}); is it a PyTorch checkpoint?"
        ) from None
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file '{path}' holds a {type(obj).__name__}, not a state dict")
    return obj


def extract_state_dict(obj: dict, path: str | Path = "") -> dict[str, torch.Tensor]:
    """The state dict bare, or under `model` / `state_dict`; a `module.` prefix (DataParallel) is dropped."""
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"weights file '{path}' holds no tensors; expected a state dict")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path = "") -> None:
    """Load every tensor or fail naming the first missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    # `num_batches_tracked` is bookkeeping; older checkpoints may lack it.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (first: {shapes[0]})")
        raise WeightsError(
            f"weights file '{path}' does not fit this model: {'; '.join(parts)}; "
            "check the model name, --num-classes and the file"
        )
    kept = OrderedDict((k, v) for k, v in sd.items() if k in own)
    metadata = getattr(sd, "_metadata", None)  # the modules' versions, which some loaders read: kept with the tensors
    if metadata is not None:
        kept._metadata = metadata  # type: ignore[attr-defined]
    model.load_state_dict(kept, strict=False)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    load_state_dict_strict(model, extract_state_dict(read_checkpoint(path), path), path)
    return model
