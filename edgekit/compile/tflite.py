"""TFLite (LiteRT): converted by litert-torch, run by ai-edge-litert's `Interpreter` (XNNPACK on CPU); quantized
with litert-torch's PT2E quantizer (int8 static and dynamic) or its fp16 recipe."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedOperatorError
from ..quantize import node_in, pt2e
from .base import FP16, INT8, CompileOptions, ExportInfo, Runner, lowering_error, quiet
from .manifest import loading
from .registry import Scheme, Target, register


def _spec(detail: dict, name: str) -> dict:
    spec = {
        "name": name,
        "tensor_name": detail["name"],
        "shape": [int(s) for s in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
    }
    if np.dtype(detail["dtype"]).kind in "iu":  # int8 I/O of a statically quantized model: x_q = x / scale + zero
        scale, zero = detail["quantization"]
        spec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return spec


def interpreter(path: Path, threads: int | None):
    """An `Interpreter` with its tensors allocated; an op the runtime lacks is an `UnsupportedOperatorError`."""
    error = None
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

        try:
            it = Interpreter(model_path=str(path), num_threads=threads or None)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            error = e
    if error is not None:
        m = re.search(r"find op for (?:builtin|custom) opcode '([^']+)'", str(error))
        if m:
            raise UnsupportedOperatorError(
                "tflite", m.group(1), "it converts, but the LiteRT runtime has no kernel for it"
            ) from None
        raise error
    return it


class TFLiteRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        with loading(path, "LiteRT", "tflite"):
            self.it = interpreter(path, threads)
            self.inp = self.it.get_input_details()[0]["index"]
            self.out = self.it.get_output_details()[0]["index"]
            # a statically quantized model takes and gives int8: (de)quantize with the tensors' own parameters
            self.in_q = _int_io(self.it.get_input_details()[0])
            self.out_q = _int_io(self.it.get_output_details()[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.in_q:
            scale, zero, dtype = self.in_q
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.it.set_tensor(self.inp, x)
        self.it.invoke()
        y = self.it.get_tensor(self.out).copy()
        if self.out_q:
            scale, zero, _ = self.out_q
            y = (y.astype(np.float32) - zero) * scale
        return y


def _int_io(detail: dict):
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    scale, zero = detail["quantization"]
    return float(scale), int(zero), detail["dtype"]


def _quantized(model: nn.Module, example: torch.Tensor, opts: CompileOptions) -> tuple[nn.Module, dict]:
    """The module and `convert` arguments for the scheme: PT2E-quantized, or float with the fp16 recipe."""
    q = opts.quant
    if q is None:
        return model, {}
    from litert_torch.quantize.quant_config import QuantConfig

    if q.scheme == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        return model, {"quant_config": quant_recipes.full_fp16_recipe()}
    quantizer = litert_quantizer(q.dynamic, q.float_layers)
    # litert's converter needs the quantize ops unfolded; without quant_config it keeps them as float ops
    gm = pt2e(model, example, quantizer, q.calib, fold=False)
    return gm, {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}


def litert_quantizer(dynamic: bool, float_layers=()):
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class _Quantizer(PT2EQuantizer):
        """litert-torch's name filters do not match torch 2.13's module stacks: pre-mark float nodes as done."""

        def annotate(self, model):
            for n in model.graph.nodes:
                if node_in(n, float_layers):
                    n.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            return super().annotate(model)

    return _Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))


@register
class TFLite(Target):
    name = "tflite"
    title = "TFLite (LiteRT)"
    suffix = ".tflite"
    schemes = (
        Scheme("int8", INT8, calibrated=True, simulated=True),
        Scheme("int8-dynamic", INT8, simulated=True),
        Scheme("fp16", FP16, weight_only=True),
    )
    packages = ("litert-torch", "ai-edge-litert")
    runtime_package = "ai-edge-litert"
    runtime_module = "ai_edge_litert.interpreter"
    apps = ("android",)
    adb_tool = "benchmark_model"  # LiteRT's Python Interpreter has no op profiler; benchmark_model over adb has one

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        error = None
        with quiet() as log:
            import litert_torch

            try:
                module, kwargs = _quantized(model, example, opts)
                litert_torch.convert(module, (example,), **kwargs).export(str(path))
            except Exception as e:
                error = e
        if error is not None:
            raise lowering_error(self.name, error, log.text, model, example, opts) from None
        it = interpreter(path, 1)
        ops: dict[str, int] = {}
        try:
            for op in it._get_ops_details():
                ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        except Exception:  # private API: counts are informative only
            ops = {}
        return ExportInfo(
            inputs=[_spec(d, "input") for d in it.get_input_details()],
            outputs=[_spec(d, "logits") for d in it.get_output_details()],
            extra={"op_types": dict(sorted(ops.items())), "layout_note": "input kept NCHW as in PyTorch"},
        )

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        return TFLiteRunner(path, threads)

    def delegate_of(self, manifest: dict) -> str | None:
        return "xnnpack"
