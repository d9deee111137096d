"""ONNX: `torch.onnx.export(dynamo=True)`, simplified with onnxslim, run and profiled with ONNX Runtime;
quantized with onnxruntime.quantization (int8 static QDQ, int8 dynamic)."""

from __future__ import annotations

import ast
import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..quantize import QuantSpec, module_prefixes
from .base import INT8, CompileOptions, ExportInfo, Runner, lowering_error, op_rows, quiet
from .manifest import loading
from .registry import Scheme, Target, register

# ONNX Runtime (>= 1.2x on Linux) writes a device id and an event database under ~/.cache/Microsoft when it is
# imported, unless this is set first; disable_telemetry_events() after the import comes too late for that file.
# Set here, before anything of edgekit's (or onnxslim's, the quantizer's) imports it; a user's own value stands.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def ort():
    """onnxruntime, imported with its telemetry off."""
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


def _value_info(vi) -> dict:
    import onnx

    t = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    return {"name": vi.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}


def session_options(threads: int | None):
    so = ort().SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    # Idle worker threads otherwise spin for a while after each run and steal the cores from whatever
    # runs next (another runtime in a side-by-side comparison, the app's own threads).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        with loading(path, "ONNX Runtime", "onnx"):
            self.session = ort().InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
            self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def _nodes_of(model, float_layers) -> list[str]:
    """ONNX node names of the modules in `float_layers` (the dynamo exporter records each node's module path).

    The exporter folds a BatchNorm into the convolution before it and names the result after the BatchNorm.
    """
    prefixes = module_prefixes(float_layers)
    names = []
    for n in model.graph.node:
        meta = {p.key: p.value for p in n.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            continue
        path = scopes[-2] if len(scopes) >= 2 else ""  # the full module path; the last scope is the op
        if any(path == p or path.startswith(p + ".") for p in prefixes):
            names.append(n.name)
    return names


def _quantize(path: Path, q: QuantSpec, exclude: list[str]):
    """onnxruntime's quantizer in place: static QDQ (calibrated) or dynamic, int8 weights per channel.

    reduce_range (7-bit weights) because x86 CPUs without VNNI saturate in ORT's u8s8 kernels otherwise.
    """
    import onnx

    ort()  # telemetry off before the quantizer's own import
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(path))
    src = path.with_name(path.stem + ".float" + path.suffix)
    path.rename(src)
    try:
        with quiet():
            if q.dynamic:
                quantize_dynamic(
                    str(src),
                    str(path),
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    reduce_range=True,
                    nodes_to_exclude=exclude,
                )
            else:
                name = model.graph.input[0].name

                assert q.calib is not None  # a calibrated scheme's QuantSpec carries its inputs
                calib: torch.Tensor = q.calib

                class Reader(CalibrationDataReader):
                    def __init__(self):
                        self.it = iter(calib)

                    def get_next(self):
                        x = next(self.it, None)
                        return None if x is None else {name: x.unsqueeze(0).numpy()}

                quantize_static(
                    str(src),
                    str(path),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    reduce_range=True,
                    nodes_to_exclude=exclude,
                )
    finally:
        src.unlink(missing_ok=True)
    return onnx.load(str(path))


@register
class Onnx(Target):
    name = "onnx"
    title = "ONNX"
    suffix = ".onnx"
    schemes = (Scheme("int8", INT8, calibrated=True), Scheme("int8-dynamic", INT8))
    packages = ("onnx", "onnxslim", "onnxruntime")
    runtime_package = "onnxruntime"
    runtime_module = "onnxruntime"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        with quiet():
            import onnx
            import onnxslim

        for name in ("torch.onnx", "onnxscript", "onnx_ir"):
            logging.getLogger(name).setLevel(logging.ERROR)
        error = None
        with quiet() as log:
            try:
                program = torch.onnx.export(
                    model, (example,), dynamo=True, input_names=["input"], output_names=["logits"], verbose=False
                )
            except Exception as e:
                error = e
        if error is not None:
            raise lowering_error(self.name, error, log.text, model, example, opts) from None
        assert program is not None  # the dynamo exporter returns its program
        proto = program.model_proto
        # module paths live in the exporter's node metadata, which simplification drops: match them first
        exclude = _nodes_of(proto, opts.quant.float_layers) if opts.quant is not None else []
        with quiet():
            slim = onnxslim.slim(proto)
        onnx.checker.check_model(slim)
        onnx.save(slim, str(path))
        if opts.quant is not None:
            slim = _quantize(path, opts.quant, exclude)
        graph = slim.graph
        op_types: dict[str, int] = {}
        for node in graph.node:
            op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
        return ExportInfo(
            inputs=[_value_info(v) for v in graph.input],
            outputs=[_value_info(v) for v in graph.output],
            extra={
                "opset": max(o.version for o in slim.opset_import if o.domain in ("", "ai.onnx")),
                "nodes_before_simplification": len(proto.graph.node),
                "nodes": len(graph.node),
                "op_types": dict(sorted(op_types.items())),
            },
        )

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        return OnnxRunner(path, threads)

    def op_profile(self, path: Path, x: np.ndarray, threads: int | None) -> list[dict] | None:
        return onnx_op_profile(path, x, threads)


def onnx_op_profile(path: str | Path, x: np.ndarray, threads: int | None, runs: int = 20) -> list[dict]:
    """Mean time per ONNX op type from ONNX Runtime's own profiler (kernel time of every node)."""
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort().InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        totals[op] += e["dur"] / 1e3 / runs
        counts[op] += 1
    return op_rows(totals, {k: max(1, v // runs) for k, v in counts.items()})
