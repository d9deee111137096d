"""What accuracy control measures: top-1 of a program, the drop against float, and which layers hurt most."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data import Split, ordered_batches
from .plan import QuantizationError, QuantSpec
from .pt2e import int8_quantizer, pt2e


def top1(run: Callable[[torch.Tensor], Any], split: Split) -> torch.Tensor:
    """Top-1 of `run` (a batch-1 program) on every sample of `split`, in order."""
    return torch.tensor([int(run(x[i : i + 1]).argmax()) for x, _ in ordered_batches(split) for i in range(len(x))])


def accuracy_summary(preds: torch.Tensor, float_preds: torch.Tensor, labels: torch.Tensor, how: str) -> dict:
    """Accuracy of `preds` against the float model's on the same validation split."""
    n = len(labels)
    acc_float = int((float_preds == labels).sum()) / n
    acc = int((preds == labels).sum()) / n
    return {
        "status": "measured",
        "split": "val",
        "samples": n,
        "measured_with": how,
        "float": acc_float,
        "quantized": acc,
        "drop_points": round(100 * (acc_float - acc), 3),
        "agreement": int((preds == float_preds).sum()) / n,
    }


def simulated_top1(model: nn.Module, example: torch.Tensor, spec: QuantSpec, split: Split) -> torch.Tensor:
    """Top-1 of the int8 program simulated in PyTorch (where the artifact cannot run here)."""
    gm = pt2e(model, example, int8_quantizer(spec.dynamic, spec.float_layers), spec.calib)
    with torch.no_grad():
        return top1(gm, split)


def layer_units(model: nn.Module, max_units: int = 16) -> list[str]:
    """Module paths to keep float as a whole when accuracy asks for it: the ancestors, at the deepest level
    that still gives at most `max_units` of them, of every convolution and linear layer."""
    leaves = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n]
    best: list[str] = []
    for depth in range(1, 8):
        units = list(dict.fromkeys(".".join(n.split(".")[:depth]) for n in leaves))
        if len(units) > max_units:
            break
        best = units
    return best or leaves[:max_units]


@torch.no_grad()
def output_divergence(reference: nn.Module, quantized, samples: torch.Tensor) -> float:
    """Mean KL(softmax(reference) || softmax(quantized)) over the samples, run one by one."""
    total = 0.0
    for x in samples:
        p = torch.log_softmax(reference(x.unsqueeze(0)).float(), 1)
        q = torch.log_softmax(quantized(x.unsqueeze(0)).float(), 1)
        total += float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean"))
    return total / max(1, len(samples))


def rank_sensitivity(
    model: nn.Module,
    example: torch.Tensor,
    spec: QuantSpec,
    units: list[str],
    samples: int = 64,
    progress=None,
    inputs: torch.Tensor | None = None,
) -> list[tuple[str, float]]:
    """Units ordered by how much keeping each in float (beside `spec.float_layers`) lowers the output divergence
    of the int8 model simulated in PyTorch (XNNPACK's quantizer), most harmful first. The divergence is measured
    on `inputs` (default: the calibration inputs, which a dynamic scheme does not have)."""
    inputs = spec.calib if inputs is None else inputs
    if inputs is None:
        raise QuantizationError(f"ranking layers for {spec.scheme} needs inputs: give data with --calib")
    calib, probe = spec.calib, inputs[:samples]
    scores = []
    for i, u in enumerate(units):
        if u in spec.float_layers:
            continue
        gm = pt2e(model, example, int8_quantizer(spec.dynamic, (*spec.float_layers, u)), calib)
        scores.append((u, output_divergence(model, gm, probe)))
        if progress:
            progress(i + 1, len(units))
    return sorted(scores, key=lambda s: s[1])
