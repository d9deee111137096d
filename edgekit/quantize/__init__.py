"""Quantization helpers that do not depend on a target: the request, calibration data, the PT2E flow, and the
measurements behind accuracy control.

Each target owns its schemes, quantizer and tolerances (`edgekit/compile/<target>.py`); this room gives
them what they share:

- `plan_quantization`: check a request (layers, calibration size, data) and load the calibration set;
- `pt2e` and `int8_quantizer`: the PT2E flow (export, observe, calibrate, convert) with XNNPACK's symmetric
  int8 quantizer, which ExecuTorch lowers and which simulates any int8 program in PyTorch;
- `layer_units`, `rank_sensitivity`, `top1`, `accuracy_summary`: what `--max-drop` measures.

Layers named in `float_layers` (module paths of the model, e.g. `backbone.3`) stay in float.
"""

from __future__ import annotations

from .accuracy import accuracy_summary, layer_units, output_divergence, rank_sensitivity, top1
from .plan import MIN_CALIBRATION, QuantizationError, QuantSpec, check_float_layers, plan_quantization
from .pt2e import int8_quantizer, module_prefixes, node_in, pt2e

__all__ = [
    "MIN_CALIBRATION",
    "QuantSpec",
    "QuantizationError",
    "accuracy_summary",
    "check_float_layers",
    "int8_quantizer",
    "layer_units",
    "module_prefixes",
    "node_in",
    "output_divergence",
    "plan_quantization",
    "pt2e",
    "rank_sensitivity",
    "top1",
]
