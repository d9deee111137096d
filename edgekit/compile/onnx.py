"""ONNX: `torch.onnx.export(dynamo=True)`, simplified with onnxslim, run and profiled with ONNX Runtime;
quantized with onnxruntime.quantization (int8 static QDQ, int8 dynamic)."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..quantize import QuantSpec, module_prefixes
from .attribution import op_rows
from .base import EXPORT_WRAPPER_PREFIX, INT8, CompileOptions, ExportInfo, Runner, lowering_error, quiet
from .capture import first_calls, last_value_per_module, module_path
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


# The dynamo exporter's node metadata: the scopes a node was exported in, `['', 'model', 'model.features', ...,
# 'model.features.0.1', '<fx node>']` (the export wrapper, then each module down to the node's, then the op).
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def node_module(node) -> str | None:
    """The module path (of the exported model: `model.` + the user's path) an ONNX node was exported from; "" for a
    node of the export wrapper's own forward; None where the node carries no scope (it did not come from the exporter,
    or the artifact predates edgekit keeping the scopes).

    The exporter folds a BatchNorm into the convolution before it and names the result after the BatchNorm.
    """
    for p in node.metadata_props:
        if p.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return str(scopes[-2]) if len(scopes) >= 2 else ""  # the full module path; the last scope is the op
    return None


def _nodes_of(model, float_layers) -> list[str]:
    """ONNX node names of the modules in `float_layers` (the dynamo exporter records each node's module path)."""
    prefixes = module_prefixes(float_layers)
    names = []
    for n in model.graph.node:
        path = node_module(n)
        if path is None:
            continue
        if any(path == p or path.startswith(p + ".") for p in prefixes):
            names.append(n.name)
    return names


def _scopes_by_value(model) -> dict[str, str]:
    """Value name -> the exporter's name scopes (as recorded) of the node that computes it."""
    scopes: dict[str, str] = {}
    for n in model.graph.node:
        for p in n.metadata_props:
            if p.key == NAME_SCOPES:
                scopes.update((o, p.value) for o in n.output if o)
    return scopes


def _restore_scopes(model, scopes: dict[str, str]) -> None:
    """Give each node of the simplified `model` the name scopes of the exported node that computed its output.

    onnxslim rebuilds the graph without node metadata but keeps value names; only the name scopes come back (the
    exporter's stack traces and FX node text would add kilobytes per node). A node whose outputs are all new (a
    fusion's) stays without a scope.
    """
    for n in model.graph.node:
        if any(p.key == NAME_SCOPES for p in n.metadata_props):
            continue
        found = [scopes[o] for o in n.output if o in scopes]
        if found:
            entry = n.metadata_props.add()
            entry.key, entry.value = NAME_SCOPES, found[-1]


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
        # module paths live in the exporter's node metadata, which simplification drops: match them first (only the
        # name scopes come back after it, by value name)
        exclude = _nodes_of(proto, opts.quant.float_layers) if opts.quant is not None else []
        scopes = _scopes_by_value(proto)
        with quiet():
            slim = onnxslim.slim(proto)
        _restore_scopes(slim, scopes)  # kept in the artifact: `capture` and per-module reports read them
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

    def capture(
        self, path: Path, manifest: dict, x: np.ndarray, model: nn.Module | None = None
    ) -> dict[str, np.ndarray] | None:
        return onnx_capture(path, x)


def onnx_capture(path: str | Path, x: np.ndarray) -> dict[str, np.ndarray] | None:
    """Every module's output on `x` as the artifact computes it: `{user's module path: float32 array}`.

    A copy of the model in memory makes each float value computed by a node with a module scope a graph output; ONNX
    Runtime runs it (CPU) and each module gets the last such value computed inside it (`last_value_per_module`).
    ONNX keeps PyTorch's NCHW layout, so values come back as the runtime gives them, shape included. Modules that
    leave no node (Dropout, Identity, a convolution whose BatchNorm the exporter folded into it) have no value. None
    where the artifact carries no module scopes (compiled before edgekit kept them).
    """
    import onnx

    model = onnx.load(str(path))
    scoped: list[tuple[str, str]] = []  # (module path, value name) in node order
    for node in model.graph.node:
        module = node_module(node)
        if module and module.startswith(EXPORT_WRAPPER_PREFIX):  # not the wrapper's or the user model's own ops
            scoped.extend((module, o) for o in node.output if o)
    if not scoped:
        return None
    try:
        types = {vi.name: vi.type for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    except Exception:  # shape inference is a help (float values only), not a need
        types = {}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    present = {o.name for o in model.graph.output}
    wanted = []
    for _, name in scoped:
        t = types.get(name)
        if t is not None and t.HasField("tensor_type") and t.tensor_type.elem_type not in floats:
            continue  # shapes, indices, masks
        wanted.append(name)
        if name not in present:
            vi = model.graph.output.add()
            vi.name = name
            if t is not None:
                vi.type.CopyFrom(t)
            present.add(name)
    session = ort().InferenceSession(
        model.SerializeToString(), session_options(None), providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    values = dict(zip(wanted, session.run(wanted, feed)))
    kept = [(m, n) for m, n in scoped if n in values and np.issubdtype(np.asarray(values[n]).dtype, np.floating)]
    chosen = last_value_per_module(kept)
    chosen.update(first_calls(kept))
    return {m: np.asarray(values[n], dtype=np.float32) for m, n in chosen.items()}


def onnx_op_profile(
    path: str | Path, x: np.ndarray, threads: int | None, runs: int = 20, warmup: int = 3
) -> list[dict]:
    """Mean time per ONNX op and module from ONNX Runtime's own profiler (kernel time of every node), over the runs
    after the first `warmup` (the profiler records from the session's start: the first runs allocate and are slow).

    The session is the timed runs' (`session_options`: threads, graph optimizations), so the nodes timed are the
    graph ORT optimized, which it also writes out here: each timed node is traced back to the artifact's node it came
    from and that node's module scope (`_ort_node_modules`).
    """
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        optimized = Path(tmp) / "optimized.onnx"
        so.optimized_model_filepath = str(optimized)
        session = ort().InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        since = starts[warmup] if len(starts) > warmup else 0  # the first timed run's start
        times: dict[tuple[str, str], float] = defaultdict(float)
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith(_KERNEL_TIME) or e.get("ts", 0) < since:
                continue
            times[(e["name"][: -len(_KERNEL_TIME)], e.get("args", {}).get("op_name", "?"))] += e["dur"] / 1e3 / runs
        modules = _ort_node_modules(path, optimized, {name for name, _ in times})
    return op_rows((op, modules[name], ms) for (name, op), ms in times.items())


_KERNEL_TIME = "_kernel_time"  # ORT's profiler: a node's event is `<node name>_kernel_time`
# What ORT's optimizers put around the name of a node they rewrote: `getitem_9_nchwc` (NCHWc layout, named after the
# node's output), `fused node_Gemm_3` (activation fusions), `_token_N` (GenerateNodeName's counter for a taken name).
_ORT_RENAMED = re.compile(r"^(?:fused )+|(?:_nchwc|_fused|_token_\d+)+$")
# conversions in front of the node that needs them: NCHWc layout (ORT's), dequantization (the QDQ quantizer's)
_INPUT_SIDE = ("ReorderInput", "DequantizeLinear")


def _user_module(path: str | None) -> str | None:
    """An exported node's module path as the user's model names it: "" for the model's own forward (and the export
    wrapper's: the baked-in preprocessing), None without a scope."""
    if path is None:
        return None
    return "" if path in ("", EXPORT_WRAPPER_PREFIX.rstrip(".")) else module_path(path)


def _ort_node_modules(path: str | Path, optimized: Path, names: set[str]) -> dict[str, str | None]:
    """The user's module path of each of `names`, nodes of ONNX Runtime's optimized graph (what its profiler names).

    A node ORT kept or rewrote is found by its name (the artifact's node name, or the name of the value it computes
    for the NCHWc rewrites), with ORT's affixes stripped, else by a value it computes; the artifact's node gives the
    scope. Where ORT fused nodes, the one found may be the last of them (a Conv fused with the Relu after it computes,
    and is named after, the Relu's output): the nearest node before it of the kind ORT runs (Conv) is taken.

    A node ORT inserted (the NCHWc layout's ReorderInput/ReorderOutput, layout Transposes) or one the artifact has no
    scope for (the QDQ quantizer's QuantizeLinear/DequantizeLinear) is credited to the node it converts for: a
    ReorderInput or DequantizeLinear to the nodes that consume its output, others to the nodes that produce their
    inputs (then the other side); the modules of several such nodes to the innermost module holding them all. None
    where no node around it has a module (an artifact without scopes). Without the optimized graph (ORT did not write
    it) only names are looked up.
    """
    import onnx

    by_name: dict[str, onnx.NodeProto] = {}
    by_value: dict[str, onnx.NodeProto] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        by_name[n.name] = n
        by_value.update((o, n) for o in n.output if o)

    def lookup(name: str, outputs: list[str], op: str | None = None) -> str | None:
        keys = [(k, t) for k in dict.fromkeys((name, _ORT_RENAMED.sub("", name))) for t in (by_name, by_value)]
        keys += [(o, by_value) for o in outputs]
        node = next((table[key] for key, table in keys if key in table), None)
        if node is None:
            return None
        return _user_module(node_module(_fused_from(node, op, by_value) if op else node))

    try:
        nodes = list(onnx.load(str(optimized), load_external_data=False).graph.node)
    except Exception:  # no optimized graph (an ORT that does not write it, a write that failed): names alone
        nodes = []
    found: dict[str, str] = {}  # module of each node of the optimized graph known to have one
    inserted = []
    for n in nodes:
        module = lookup(n.name, [o for o in n.output if o], n.op_type)
        if module is not None:
            found[n.name] = module
        else:
            inserted.append(n)
    producer = {o: n.name for n in nodes for o in n.output if o}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for i in dict.fromkeys(i for i in n.input if i):
            consumers[i].append(n.name)
    while inserted:  # to a fixed point: a node next to another one without a module waits for it
        left = []
        for n in inserted:
            before = [producer[i] for i in n.input if i in producer]
            after = [c for o in n.output for c in consumers.get(o, [])]
            sides = (after, before) if n.op_type in _INPUT_SIDE else (before, after)
            module = None
            for side in sides:
                module = _common_module([found[m] for m in side if m in found])
                if module is not None:
                    break
            if module is None:
                left.append(n)
            else:
                found[n.name] = module
        if len(left) == len(inserted):
            break
        inserted = left
    return {name: found[name] if name in found else lookup(name, []) for name in names}


def _fused_from(node, op: str, by_value: dict, steps: int = 3):
    """The artifact's node an ORT node of kind `op` computes: `node` where it is of that kind (or ORT's fused or
    quantized form of it: FusedConv, QLinearConv), else the nearest such node among the `steps` before it; `node`
    where there is none."""
    level = [node]
    for _ in range(steps + 1):
        for n in level:
            if op == n.op_type or op.endswith(n.op_type):
                return n
        level = [by_value[i] for n in level for i in n.input if i in by_value]
    return node


def _common_module(paths: list[str]) -> str | None:
    """The innermost module path holding every one of `paths` ("" the model), None for no paths."""
    if not paths:
        return None
    common = paths[0].split(".") if paths[0] else []
    for p in paths[1:]:
        parts = p.split(".") if p else []
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    return ".".join(common)
