"""A quantization request checked and its calibration data loaded, whatever the target."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import Dataset, data_help, load_dataset
from ..errors import EdgekitError
from ..specs import QuantizeSpec

MIN_CALIBRATION = 32


class QuantizationError(EdgekitError):
    """A scheme, calibration set or layer list a user gave is wrong."""


@dataclass
class QuantSpec:
    """What a target's quantizer needs: the scheme, calibration inputs (N x C x H x W) and the layers left float."""

    scheme: str
    calib: torch.Tensor | None = None
    float_layers: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)  # for the manifest: calibration set, sizes

    @property
    def dynamic(self) -> bool:
        return self.scheme.endswith("-dynamic")


def check_float_layers(model: nn.Module, float_layers) -> None:
    names = {n for n, _ in model.named_modules()}
    for name in float_layers:
        if name not in names:
            near = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; list them with model.named_modules()"
            raise QuantizationError(f"--float-layer '{name}' is not a module of the model{hint}")


def plan_quantization(
    scheme: str,
    *,
    calibrated: bool,
    weight_only: bool,
    model: nn.Module,
    card,
    calib: str | None,
    calib_size: int,
    float_layers: tuple[str, ...],
    max_drop: float | None,
    val_samples: int | None,
) -> tuple[QuantSpec, Dataset | None]:
    """Check a request for `scheme` (after its target accepted it) and load its data: (QuantSpec, dataset or None).

    `calibrated`: the scheme calibrates activations; `weight_only`: it quantizes weights only.
    """
    if weight_only and float_layers:
        raise QuantizationError(f"--float-layer applies to the int8 / w8a8 schemes, not '{scheme}'")
    if weight_only and max_drop is not None:
        raise QuantizationError(f"--max-drop applies to the int8 / w8a8 schemes, not '{scheme}'")
    if max_drop is not None and max_drop < 0:
        raise QuantizationError(f"--max-drop {max_drop} must be at least 0 (accuracy points)")
    check_float_layers(model, float_layers)
    if calib_size < MIN_CALIBRATION:
        raise QuantizationError(
            f"--calib-size {calib_size} is too small; calibrate on at least {MIN_CALIBRATION} "
            f"images (default {QuantizeSpec.default('calib_size')})"
        )
    dataset = None
    if calib:
        dataset = load_dataset(
            calib, card.input_size, card.mean, card.std, calib_size=calib_size, val_limit=val_samples
        )
        if len(dataset.calib) < MIN_CALIBRATION:
            raise QuantizationError(
                f"the calibration set '{calib}' has {len(dataset.calib)} images; calibrate on at "
                f"least {MIN_CALIBRATION}"
            )
        if dataset.num_classes != card.num_classes and max_drop is not None:
            raise QuantizationError(
                f"--max-drop measures accuracy, but the model has {card.num_classes} classes and "
                f"'{calib}' has {dataset.num_classes}; give data the model was trained on"
            )
    elif calibrated or max_drop is not None:
        what = f"--quantize {scheme} calibrates activations" if calibrated else "--max-drop measures accuracy"
        raise QuantizationError(f"{what}: give data with --calib ({data_help()})")
    calib_x = dataset.calib.x if dataset is not None and calibrated else None
    info: dict = {"scheme": scheme}
    if dataset is not None:
        info["calibration"] = {
            "data": dataset.name,
            "samples": len(dataset.calib) if calib_x is not None else 0,
            "split": "train (seeded subset)",
        }
    return QuantSpec(scheme, calib_x, tuple(float_layers), info), dataset
