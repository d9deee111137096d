"""TFLite (LiteRT): converted by litert-torch, run by ai-edge-litert's `Interpreter` (XNNPACK on CPU); quantized
with litert-torch's PT2E quantizer (int8 static and dynamic) or its fp16 recipe."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedOperatorError
from ..models import check_trusted, load_model
from ..quantize import node_in, pt2e
from . import litert_profile
from .attribution import nearest_placed, op_rows
from .base import EXPORT_WRAPPER_PREFIX, FP16, INT8, CompileOptions, ExportInfo, Runner, lowering_error, quiet
from .capture import hooked_forward, module_path
from .export import ExportWrapper, prepare_for_export
from .manifest import loading, read_manifest
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


def interpreter(path: Path, threads: int | None, preserve_all: bool = False):
    """An `Interpreter` with its tensors allocated; an op the runtime lacks is an `UnsupportedOperatorError`.

    `preserve_all` keeps every intermediate tensor readable after `invoke` (for `TFLite.capture`): XNNPACK still
    runs the ops, one delegate node per op, so that each op's output is written where `get_tensor` reads it."""
    error = None
    with quiet():
        from ai_edge_litert.interpreter import Interpreter

        try:
            it = Interpreter(
                model_path=str(path), num_threads=threads or None, experimental_preserve_all_tensors=preserve_all
            )
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
    def __init__(self, path: Path, threads: int | None, preserve_all: bool = False):
        with loading(path, "LiteRT", "tflite"):
            self.it = interpreter(path, threads, preserve_all)
            self.inp = self.it.get_input_details()[0]["index"]
            self.out = self.it.get_output_details()[0]["index"]
            # a statically quantized model takes and gives int8: (de)quantize with the tensors' own parameters
            self.in_q = _int_io(self.it.get_input_details()[0])
            self.out_q = _int_io(self.it.get_output_details()[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp, _as_input(x, self.in_q))
        self.it.invoke()
        y = self.it.get_tensor(self.out).copy()
        if self.out_q:
            scale, zero, _ = self.out_q
            y = (y.astype(np.float32) - zero) * scale
        return y


def _as_input(x: np.ndarray, in_q) -> np.ndarray:
    """`x` as the model takes it: float32, or quantized with the input's own scale (`_int_io`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if in_q:
        scale, zero, dtype = in_q
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x


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


# -- capture: the artifact's values by module (`edgekit debug`) -------------------------------------------------

# operators whose activations TFLite lays out NHWC, whatever the layout of the model they were converted from
_NHWC_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "TRANSPOSE_CONV",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "L2_POOL_2D",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "SPACE_TO_DEPTH",
        "DEPTH_TO_SPACE",
    }
)
# operators after which a 4D result's axes need not mean what its input's did
_RELAYOUT_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "BATCH_MATMUL", "GATHER", "GATHER_ND", "TRANSPOSE"})


@dataclass
class _Value:
    """One operator result of the artifact: its value, the first scope of its name, its layout where known."""

    array: np.ndarray
    scope: str | None  # `pkg.Class/pkg.Class_attr/...`: the module stack of the node it was lowered from
    layout: str | None  # "nhwc", "nchw" or None (not 4D, or not known)
    output: bool = False  # a graph output


def _scopes(name: str) -> list[str]:
    """The module scopes in a tensor's name, fused-in result first (`A/B_c;;A/B_d;` -> [A/B_c, A/B_d]); a trailing
    `;1` is the converter's count of same-named tensors; a name without `/` (`serving_default_...`) has none."""
    return [p for p in name.split(";") if "/" in p]


# a TFLite operator -> the class name of the module it was made from, among the scopes fused into it
_ANCHOR_CLASS = {"CONV_2D": "Conv", "DEPTHWISE_CONV_2D": "Conv", "TRANSPOSE_CONV": "Conv", "FULLY_CONNECTED": "Linear"}


def _anchor_scope(scopes: list[str], op: str) -> str:
    """The scope of the module `op` was made from: for a convolution or fully connected operator the first scope
    whose module's class names it (`.../torch.nn.modules.conv.Conv2d_proj`), else the first (the fused-in result's)."""
    want = _ANCHOR_CLASS.get(op)
    if want:
        for scope in scopes:
            if want in scope.rsplit("/", 1)[-1].rsplit(".", 1)[-1].split("_", 1)[0]:
                return scope
    return scopes[0]


def _dequantized(it, detail: dict) -> np.ndarray | None:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.array(it.get_tensor(detail["index"]), dtype=np.float32)
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and dtype.itemsize <= 2 and scale:
        return (np.asarray(it.get_tensor(detail["index"]), dtype=np.float32) - zero) * np.float32(scale)
    return None  # indices, shapes, masks


def _graph_values(it) -> list[_Value]:
    """The input-dependent results of the artifact's operators, in execution order, after an `invoke` (the
    operator list is the interpreter's private `_get_ops_details`, as `export` counts the op types with)."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    inputs = [d["index"] for d in it.get_input_details()]
    outputs = {d["index"] for d in it.get_output_details()}
    # the model's operators in execution order (with every tensor kept, XNNPACK adds one node per op after them)
    ops = [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
    live = set(inputs)
    layout: dict[int, str | None] = {i: "nchw" for i in inputs}  # edgekit keeps the input NCHW
    values: list[_Value] = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if i >= 0]
        data = [i for i in ins if i in live]
        if not data:
            continue  # constant folding the converter left in (fp16 weights' DEQUANTIZE)
        for t in (int(o) for o in op["outputs"]):
            live.add(t)
            layout[t] = _layout(it, op["op_name"], ins, data, t, details, layout)
            array = _dequantized(it, details[t])
            if array is None:
                continue
            scopes = _scopes(details[t]["name"])
            if not scopes and t in outputs:  # named by the signature: the scope of the op's weights
                scopes = [s for i in ins if i not in live for s in _scopes(details[i]["name"])[:1]]
            values.append(_Value(array, scopes[0] if scopes else None, layout[t], t in outputs))
    return values


def _layout(it, op: str, ins: list[int], data: list[int], out: int, details: dict, layout: dict) -> str | None:
    """NHWC or NCHW for a 4D result, where the graph says which: convolutions and pools give NHWC, a transpose
    moves its input's, other operators keep their 4D inputs' (elementwise, pad, concatenation, slices)."""
    if len(details[out]["shape"]) != 4:
        return None
    if op in _NHWC_OPS:
        return "nhwc"
    if op == "TRANSPOSE" and len(ins) == 2:
        perm = [int(p) for p in np.asarray(it.get_tensor(ins[1])).ravel()]
        moved: dict[tuple[str, tuple[int, ...]], str] = {("nchw", (0, 2, 3, 1)): "nhwc", ("nhwc", (0, 3, 1, 2)): "nchw"}
        return moved.get((layout.get(ins[0]) or "", tuple(perm)))
    if op in _RELAYOUT_OPS:
        return None
    known = {layout.get(i) for i in data if len(details[i]["shape"]) == 4}
    return known.pop() if len(known) == 1 else None


def _class_name(cls: type) -> str:
    """A module class as litert-torch names it in a scope."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class _Calls:
    """What a forward of the exported model calls: per module path (as the export wrapper names it, `model.x`), the
    modules it calls directly, how often it is called and its first call's output shape."""

    callees: dict[str, dict[str, type]] = field(default_factory=dict)  # caller path -> {callee path: class}
    count: dict[str, int] = field(default_factory=dict)
    shape: dict[str, tuple[int, ...]] = field(default_factory=dict)
    root: type = ExportWrapper

    def resolve(self, scope: str) -> str | None:
        """The module path of a scope: each `<class>_<last name>` step is one of the modules the one before calls
        (a class's module name may differ where the model was rebuilt from a file: its qualified name is enough)."""
        steps = scope.split("/")
        if not _names_class(steps[0], self.root, None):
            return None
        path = ""
        for step in steps[1:]:
            found = [p for p, cls in self.callees.get(path, {}).items() if _names_class(step, cls, p.split(".")[-1])]
            if len(found) != 1:
                return None
            path = found[0]
        return path


def _names_class(step: str, cls: type, attr: str | None) -> bool:
    suffix = "" if attr is None else f"_{attr}"
    return step == _class_name(cls) + suffix or step.endswith(f".{cls.__qualname__}{suffix}")


def _joined(scope: str) -> str | None:
    """Without the model: a scope's last names joined (`Class_attr`, split after the class name)."""
    parts = []
    for step in scope.split("/")[1:]:
        m = re.fullmatch(r"_*[^_]+_(.+)", step.rsplit(".", 1)[-1])
        if m is None:
            return None
        parts.append(m.group(1))
    return ".".join(parts)


@torch.no_grad()
def _module_calls(model: nn.Module, x: torch.Tensor) -> _Calls:
    """`_Calls` of one forward of `model` (in export form) on `x`, from forward hooks on every module."""
    paths = {m: name for name, m in model.named_modules()}
    calls = _Calls(root=type(model))
    stack: list[str] = []

    def enter(m, _args):
        path = paths[m]
        if stack:
            calls.callees.setdefault(stack[-1], {})[path] = type(m)
        stack.append(path)

    def leave(m, _args, out):
        path = stack.pop()
        calls.count[path] = calls.count.get(path, 0) + 1
        while isinstance(out, (tuple, list)) and out:
            out = out[0]
        if isinstance(out, torch.Tensor):
            calls.shape.setdefault(path, tuple(out.shape))

    hooked_forward(model, x, [(m, enter, leave) for m in paths])
    return calls


def _calls_for(manifest: dict, model: nn.Module | None, x: np.ndarray) -> _Calls | None:
    """The calls of the model in export form: `model` (the user's, or as `prepare_for_export` gives it), else the
    one the manifest names where it can be rebuilt without running untrusted code; None where there is none."""
    if model is not None:
        net = model if isinstance(model, ExportWrapper) else prepare_for_export(model)
        return _module_calls(net, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    info = manifest.get("model") or {}
    reference = info.get("reference")
    if not reference:
        return None
    try:
        check_trusted(reference, "the artifact's manifest")
        size = (manifest.get("preprocessing") or {}).get("size")
        return _rebuilt_calls(reference, info.get("num_classes"), size, tuple(int(d) for d in x.shape))
    except Exception:  # the names alone still give most paths: a model that cannot be rebuilt is not an error
        return None


@functools.lru_cache(maxsize=4)
def _rebuilt_calls(reference: str, num_classes: int | None, size: int | None, shape: tuple[int, ...]) -> _Calls:
    """The calls of the model a reference builds (weights change none of them), once for the samples of a debug."""
    net = prepare_for_export(load_model(reference, num_classes=num_classes, input_size=size).model)
    return _module_calls(net, torch.randn(shape, generator=torch.Generator().manual_seed(0)))


def _by_module(values: list[_Value], calls: _Calls | None) -> dict[str, np.ndarray]:
    """`{user's module path: value}` from the artifact's values in execution order (see `TFLite.capture`)."""
    root = EXPORT_WRAPPER_PREFIX.rstrip(".")
    runs: dict[str, list[list[int]]] = {}  # module path -> [first value, last value, last's rank] per run of its ops
    scoped = 0
    for i, v in enumerate(values):
        path = (calls.resolve(v.scope) if calls else _joined(v.scope)) if v.scope else None
        if not path:
            continue
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            prefix = ".".join(parts[:n])
            if prefix == root:
                continue  # the whole network: its output is the graph's, below
            mine = runs.setdefault(prefix, [])
            if mine and mine[-1][2] == scoped - 1:
                mine[-1][1:] = [i, scoped]
            else:
                mine.append([i, i, scoped])
        scoped += 1
    chosen: dict[str, int | None] = {p: _chosen(r, calls.count.get(p, 0) if calls else None) for p, r in runs.items()}
    graph_outputs = [i for i, v in enumerate(values) if v.output]
    if graph_outputs:
        chosen[root] = graph_outputs[0]
    out: dict[str, np.ndarray] = {}
    for p, at in chosen.items():
        if at is None:
            continue
        expected = calls.shape.get(p) if calls else None
        array = _pytorch_layout(values[at].array, values[at].layout, expected, calls is not None)
        if array is not None:
            out[module_path(p)] = array
    return out


def _chosen(runs: list[list[int]], count: int | None) -> int | None:
    """Which value is a module's output: the last of its ops for a module called once; for one called more often
    (PyTorch's side keeps the first call) the last of the first run, where the runs are its calls; else none."""
    if count == 1 or (count is None and len(runs) == 1):
        return runs[-1][1]
    if count and count > 1 and len(runs) == count:
        return runs[0][1]
    return None


def _pytorch_layout(array: np.ndarray, layout: str | None, expected: tuple | None, known: bool) -> np.ndarray | None:
    """`array` in PyTorch's layout: with the expected shape, as it is or moved from NHWC, whichever fits it (the
    graph's layout decides between two that fit), reshaped to it; None where neither fits. Without, a 4D NHWC
    tensor is moved to NCHW."""
    nchw = np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if array.ndim == 4 else None
    if not known:
        return nchw if nchw is not None and layout == "nhwc" else array
    if expected is None:
        return None
    order = [nchw, array] if layout == "nhwc" else [array, nchw]
    for a in order:
        if a is not None and _fits(a.shape, expected):
            return a.reshape(expected)
    return None


def _fits(shape: tuple, expected: tuple) -> bool:
    """The same values in the same order: equal shapes but for axes of size 1."""
    return int(np.prod(shape)) == int(np.prod(expected)) and [d for d in shape if d != 1] == [
        d for d in expected if d != 1
    ]


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

    def op_profile(self, path: Path, x: np.ndarray, threads: int | None) -> list[dict] | None:
        """Per-op rows from LiteRT's own profiler (`litert_profile`): XNNPACK's operators one by one, each with the
        user's module its TFLite node's output tensor names; None with an ai-edge-litert whose profiler events
        edgekit does not read."""
        if not litert_profile.supported():
            return None
        with quiet():
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            plain = Interpreter(  # the model's own nodes, in order (no delegate replaces them)
                model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        try:
            events = litert_profile.op_events(path, _as_input(x, _int_io(plain.get_input_details()[0])), threads)
        except RuntimeError:  # a call of LiteRT's C API that failed (it says which): no rows, the report stands
            return None
        nodes = sorted(plain._get_ops_details(), key=lambda op: op["index"])
        names = {d["index"]: d["name"] for d in plain.get_tensor_details()}
        # a node by its output's name; one named by the signature (the classifier) by its weights', as `capture` does
        made = {int(t) for n in nodes for t in n["outputs"]} | {d["index"] for d in plain.get_input_details()}
        weights = [[int(t) for t in n["inputs"] if t >= 0 and int(t) not in made] for n in nodes]
        named = [[names[int(t)] for t in n["outputs"][:1]] + [names[t] for t in w] for n, w in zip(nodes, weights)]
        outputs = [next((x for x in tensors if _scopes(x)), "") for tensors in named]
        placed = litert_profile.place(events, [n["op_name"] for n in nodes])
        named_ops = [(o, n["op_name"]) for o, n in zip(outputs, nodes) if o]
        by_name = self.op_modules(
            path, read_manifest(path, check_sha256=False), [o for o, _ in named_ops], [op for _, op in named_ops]
        )
        modules = nearest_placed([by_name.get(outputs[j]) if j is not None else None for j in placed])
        return op_rows((e["op"], m, e["ms"]) for e, m in zip(events, modules))

    def op_modules(
        self, path: Path, manifest: dict, names: list[str], ops: list[str] | None = None
    ) -> dict[str, str | None]:
        """The module of each operator `benchmark_model` (or `op_profile`) timed, from the name of its output tensor
        (see `capture`: litert-torch names each result by its module stack, the fused-in result's scope first).
        With each name's operator (`ops`, TFLite builtin names), a convolution or fully connected operator is placed
        on its convolution's or linear's module among the scopes fused into it, not its ReLU6's: the layer a user
        looks for, and the module the kernel model's kernels carry. Operators run inside a delegate (XNNPACK,
        `benchmark_model`'s default on the CPU) are named by the delegate's kernel alone and have none: profile with
        `--use_xnnpack=false` to see the builtin kernels by tensor."""
        shape = tuple(int(d) for d in manifest["inputs"][0]["shape"])
        calls = _calls_for(manifest, None, np.zeros(shape, dtype=np.float32))
        root = EXPORT_WRAPPER_PREFIX.rstrip(".")
        out: dict[str, str | None] = {}
        for name, op in zip(names, ops or [""] * len(names)):
            scopes = _scopes(name)
            scope = _anchor_scope(scopes, op) if scopes else None
            path_ = (calls.resolve(scope) if calls else _joined(scope)) if scope else None
            out[name] = None if path_ is None else ("" if path_ in ("", root) else module_path(path_))
        return out

    def capture(
        self, path: Path, manifest: dict, x: np.ndarray, model: nn.Module | None = None
    ) -> dict[str, np.ndarray] | None:
        """Every module's output in the artifact on `x`, by the user's module path (see `edgekit.compile.capture`).

        The interpreter keeps every tensor (`experimental_preserve_all_tensors`); the values are the outputs of the
        artifact's operators that depend on the input (weights and constant folding left out), float, or int8/int16
        dequantized with the tensor's scale. Integer tensors without a scale (indices, shapes) are left out.

        Which module computed a tensor is read from its name: litert-torch names each operator's result by the
        `nn_module_stack` of the node it was lowered from (`<class>_<last name>` for every module on the call
        stack, joined by `/`; `;` joins the scopes of operators fused into one, the fused-in result's first, as in
        `conv+BN+ReLU6 -> ReLU6;BN;conv`). That is exact where it is kept, and nothing else in the flatbuffer carries
        the scope (no debug metadata); matching operators to the exported program by position and shape would guess
        where the converter fused, split and reordered. A name keeps only the last part of each module's path, so a
        container the forward never calls (a ModuleList, `self.blocks[3](x)`) leaves no trace: the full path comes
        from the model's own calls (forward hooks: which module each module calls, how often, with what output
        shape), on `model` (the user's or as `prepare_for_export` gives it; an argument of this target's, not of
        `Target.capture`) or else the one the manifest names (a zoo name, a checkpoint, trusted code), rebuilt once
        per reference. Where neither can be had, the names' last parts are joined: exact wherever every container is
        called (MobileOne, MobileNetV2), not for ViG's `backbone` (a ModuleList).

        A module's value is the last tensor computed in its scope; for a module called more than once (an
        activation module reused), the last of the first run of its operators, since PyTorch's side keeps the first
        call. With the model's shapes, a value is kept only where its shape is the module's output shape, as it is
        or moved back from NHWC to NCHW (litert-torch's layout pass keeps activations NHWC between convolutions);
        a conv whose activation was fused into it has no value of its own and is left out. Without them, 4D
        tensors that a layout walk over the graph finds NHWC are moved back. The graph's output is also `model`,
        the whole network's output.
        """
        runner = TFLiteRunner(path, None, preserve_all=True)
        runner.run(x)
        try:
            values = _graph_values(runner.it)
        except AttributeError:  # a LiteRT without the (private) operator list
            return None
        return _by_module(values, _calls_for(manifest, model, x))
