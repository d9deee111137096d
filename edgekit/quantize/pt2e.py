"""The PT2E flow (torch.export, observers, calibration, convert) and the module-path filter for float layers."""

from __future__ import annotations

import torch
from torch import nn


def module_prefixes(float_layers) -> list[str]:
    # the exporters see the model wrapped once (ExportWrapper.model), twice with Core ML's Normalize
    return [p for name in float_layers for p in (name, f"model.{name}", f"model.model.{name}")]


def node_in(node, float_layers) -> bool:
    """Whether an exported graph node belongs to one of the modules in `float_layers`."""
    prefixes = module_prefixes(float_layers)
    fqns = [v[0] for v in node.meta.get("nn_module_stack", {}).values()]
    return any(f == p or f.startswith(p + ".") for f in fqns for p in prefixes)


def int8_quantizer(dynamic: bool, float_layers=()):
    """XNNPACK's symmetric per-channel int8 PT2E quantizer (executorch's), with `float_layers` left out.

    ExecuTorch lowers what it produces; Core ML's w8a8 converts it; and it is the reference simulation of an
    int8 program in PyTorch (accuracy off the device, sensitivity ranking), whatever the target.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    if float_layers:
        q.set_filter_function(lambda n: not node_in(n, float_layers))
    return q


@torch.no_grad()
def pt2e(model: nn.Module, example: torch.Tensor, quantizer, calib: torch.Tensor | None, fold: bool = True):
    """Export, insert observers, calibrate sample by sample, convert: a GraphModule with (de)quantize ops."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = torch.export.export(model, (example,)).module()
    gm = prepare_pt2e(gm, quantizer)
    for x in calib if calib is not None else example:
        gm(x.unsqueeze(0))
    gm = convert_pt2e(gm, fold_quantize=fold)
    gm.training = False  # exported modules refuse .eval()
    return gm
