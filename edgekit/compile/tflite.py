"""TFLite (LiteRT): converted by litert-torch, run by ai-edge-litert's `Interpreter` (XNNPACK on CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedOperatorError

from .base import Backend, CompileOptions, ExportInfo, Runner, lowering_error, quiet


def _spec(detail: dict, name: str) -> dict:
    return {"name": name, "tensor_name": detail["name"], "shape": [int(s) for s in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name}


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
        self.it = interpreter(path, threads)
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]

    def run(self, x: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp, np.ascontiguousarray(x, dtype=np.float32))
        self.it.invoke()
        return self.it.get_tensor(self.out).copy()


class TFLiteBackend(Backend):
    name = "tflite"
    suffix = ".tflite"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        error = None
        with quiet() as log:
            import litert_torch

            try:
                litert_torch.convert(model, (example,)).export(str(path))
            except Exception as e:
                error = e
        if error is not None:
            raise lowering_error(self.name, error, log.text, model, example) from None
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

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"litert-torch": version("litert-torch"), "ai-edge-litert": version("ai-edge-litert")}
