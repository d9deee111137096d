"""Accuracy of a quantized artifact on validation data, and the `--max-drop` loop that keeps layers float.

The measurements are the quantize room's (`edgekit.quantize`); this loop rebuilds the artifact, so it lives
with the compile flow that builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import Dataset, Split, predict
from ..quantize import (
    QuantizationError,
    QuantSpec,
    accuracy_summary,
    layer_units,
    rank_sensitivity,
    top1,
)
from ..quantize.accuracy import simulated_top1
from .registry import Scheme, Target


def _measure(
    target: Target,
    scheme: Scheme,
    path: Path,
    manifest: dict,
    export_model: nn.Module,
    example: torch.Tensor,
    spec: QuantSpec,
    val: Split,
    float_preds: torch.Tensor,
) -> dict:
    """Accuracy of the artifact run in its runtime; else (Core ML off macOS) of its PT2E simulation in PyTorch
    where the scheme has one; else 'not measured' and why."""
    reason = target.runnable(manifest)
    if reason is None:
        runner = target.load(path, manifest)
        preds, how = top1(lambda x: runner.run(x.numpy()), val), f"{manifest['target']} runtime"
    elif scheme.simulated:
        preds = simulated_top1(export_model, example, spec, val)
        how = f"PyTorch simulation of the int8 program ({reason.split(';')[0]})"
    else:
        return {"status": "not measured", "reason": reason, "float": int((float_preds == val.y).sum()) / len(val)}
    return accuracy_summary(preds, float_preds, val.y, how)


def control_accuracy(
    target: Target,
    scheme: Scheme,
    export_model: nn.Module,
    example: torch.Tensor,
    spec: QuantSpec,
    dataset: Dataset | None,
    max_drop: float | None,
    build: Callable[[], dict],
    path: Path,
    manifest: dict,
    progress=None,
) -> dict:
    """Accuracy before / after on the validation split, top-1 agreement with the float model, and the
    `max_drop` loop: keep the most harmful layer units float, one at a time, until the drop is within it."""
    q = dict(spec.info)
    manifest["quantization"] = q
    if dataset is None or dataset.num_classes != int(manifest["model"]["num_classes"]):
        q["float_layers"] = list(spec.float_layers)
        q["accuracy"] = {"status": "not measured", "reason": "give --calib with data of the model's classes"}
        return manifest
    val = dataset.val
    float_preds = predict(export_model, val)

    def measure(m: dict) -> dict:
        return _measure(target, scheme, path, m, export_model, example, spec, val, float_preds)

    acc = measure(manifest)
    steps = [{"float_layers": list(spec.float_layers), "drop_points": acc.get("drop_points")}]
    if max_drop is not None and acc["status"] == "measured" and acc["drop_points"] > max_drop:
        units = layer_units(export_model.model)  # type: ignore[arg-type]
        # a dynamic scheme calibrates nothing: its divergence is measured on the calibration split all the same
        inputs = dataset.calib.x if spec.calib is None else None
        ranked = rank_sensitivity(export_model, example, spec, units, progress=progress, inputs=inputs)
        for unit, divergence in ranked:
            spec.float_layers = (*spec.float_layers, unit)
            manifest = build()
            acc = measure(manifest)
            steps.append(
                {
                    "float_layers": list(spec.float_layers),
                    "added": unit,
                    "simulated_divergence": divergence,
                    "drop_points": acc["drop_points"],
                }
            )
            if acc["drop_points"] <= max_drop:
                break
        else:
            raise QuantizationError(
                f"--max-drop {max_drop}: the drop is still {acc['drop_points']:.2f} points with every layer unit float "
                f"({', '.join(units)}); raise --max-drop or choose another scheme"
            )
        manifest["quantization"] = q
    q["float_layers"] = list(spec.float_layers)
    q["accuracy"] = acc
    if max_drop is not None:
        q["max_drop"] = {"points": max_drop, "steps": steps}
    return manifest
