"""Core ML: ML Program `.mlpackage` via coremltools. Converts on Linux; runs (and verifies) on macOS only.
Quantized with coremltools.optimize (w8, w4, palette4 weights) or from a PT2E int8 export (w8a8).

Which module of the user's model each operation of the program comes from (`edgekit debug`, `coreml_op_modules`)
is recorded at export, in the manifest's `op_modules` (`{MIL op output name: module path}`, the path as the
exported program's `nn_module_stack` names it, export wrapper's `model.` included; weights (`const`) left out).
The artifact cannot say it itself: a MIL op's output name is only derived from a torch node's name
(`_native_batch_norm_legit_no_training_3_cast_fp16` for a convolution with its BatchNorm fused in, named after the
BatchNorm; graph passes name the ops they make), that node's module scope is not in it, and coremltools writes no
scopes into the protobuf (its `executorch_debug_handle_mapping.json` maps integer handles that mean something only
with the exported program). So every node of the exported program gets a `debug_handle` (its number) before
conversion; coremltools carries a node's handle onto every MIL op converted from it and through its graph passes
(fusions and fp16 casts included: `ScopeSource.EXIR_DEBUG_HANDLE`), and after conversion each op's handle gives its
node's module. Every non-const op of the four zoo models is mapped that way (fp16, w8 and w8a8 alike); with
`--image-input` the normalization in front of the model is no module's.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import EdgekitError, first_line
from ..quantize import QuantizationError, int8_quantizer, pt2e
from .base import (
    EXPORT_WRAPPER_PREFIX,
    FP16,
    INT8,
    W4,
    W8,
    CompileOptions,
    ExportInfo,
    Runner,
    Tolerance,
    lowering_error,
    on_macos,
    quiet,
)
from .capture import first_calls, last_value_per_module, module_path
from .export import drop_aliases
from .manifest import loading, read_manifest
from .registry import Scheme, Target, register

DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
IOS18_OR_LATER = ("iOS18", "macOS15", "watchOS11", "tvOS18", "visionOS2")
IOS17_OR_LATER = IOS18_OR_LATER + ("iOS17", "macOS14", "watchOS10", "tvOS17", "visionOS1")


def import_coremltools():
    """coremltools prints warnings about untested torch / scikit-learn versions on import; keep them quiet."""
    with quiet():
        import coremltools

    return coremltools


class Normalize(nn.Module):
    """Per-channel (x - mean) / std in front of the model, for an image input that delivers x in [0, 1]."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _feature(f) -> dict:
    kind = f.type.WhichOneof("Type")
    if kind == "multiArrayType":
        import coremltools as ct

        dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType)
        return {"name": f.name, "shape": list(f.type.multiArrayType.shape), "dtype": dtype.lower()}
    if kind == "imageType":
        t = f.type.imageType
        return {"name": f.name, "shape": [1, 3, t.height, t.width], "dtype": "image_rgb_uint8"}
    return {"name": f.name, "type": kind}


class CoreMLRunner(Runner):
    def __init__(self, path: Path, image_input: bool):
        ct = import_coremltools()

        with loading(path, "Core ML", "coreml"):
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
            spec = self.model.get_spec()
            self.input_name = spec.description.input[0].name
            self.output_name = spec.description.output[0].name
        self.image_input = image_input

    def run(self, x: np.ndarray) -> np.ndarray:
        feed = Image.fromarray(x) if self.image_input else x
        return np.asarray(self.model.predict({self.input_name: feed})[self.output_name])


WEIGHT_SCHEMES = ("w8", "w4", "palette4")


def compress_weights(mlmodel, scheme: str):
    """coremltools' weight compression on the ML Program: int8 or int4 per output channel, or a 4-bit k-means
    palette per tensor. Every weight is compressed (no size threshold). (int4 per block would skip every layer
    whose input width the block does not divide: most of MobileViG's.)"""
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    if scheme == "w8":
        cfg = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
        )
        return linear_quantize_weights(mlmodel, OptimizationConfig(global_config=cfg))
    if scheme == "w4":
        cfg = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_channel", weight_threshold=0
        )
        return linear_quantize_weights(mlmodel, OptimizationConfig(global_config=cfg))
    cfg = OpPalettizerConfig(nbits=4, mode="kmeans", weight_threshold=0)
    return palettize_weights(mlmodel, OptimizationConfig(global_config=cfg))


@register
class CoreML(Target):
    name = "coreml"
    title = "Core ML"
    suffix = ".mlpackage"
    tolerance = FP16
    schemes = (
        Scheme("w8", W8, weight_only=True),
        Scheme("w4", W4, weight_only=True),
        Scheme("palette4", W4, weight_only=True),
        Scheme("w8a8", INT8, calibrated=True, simulated=True),
    )
    packages = ("coremltools",)
    runtime_package = "coremltools"
    runtime_module = "coremltools"
    apps = ("ios",)
    image_input = True

    def check_options(self, opts: CompileOptions) -> None:
        super().check_options(opts)
        if opts.min_deployment_target not in DEPLOYMENT_TARGETS:
            raise EdgekitError(
                f"unknown minimum deployment target '{opts.min_deployment_target}'; "
                f"choose one of {', '.join(DEPLOYMENT_TARGETS)}"
            )

    def check_quantization(self, scheme: Scheme, opts: CompileOptions) -> None:
        if scheme.name == "w4" and opts.min_deployment_target not in IOS18_OR_LATER:
            raise QuantizationError("--quantize w4 (int4 weights) needs Core ML 8: add --min-target iOS18 (or macOS15)")
        if scheme.name == "w8a8" and opts.min_deployment_target not in IOS17_OR_LATER:
            raise QuantizationError(
                "--quantize w8a8 (int8 activations) needs Core ML 7: add --min-target iOS17 or later"
            )

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        ct = import_coremltools()
        if opts.image_input:
            model = Normalize(model, opts.mean, opts.std).eval()
            example = torch.rand_like(example)
            inputs = [
                ct.ImageType(name="image", shape=tuple(example.shape), scale=1 / 255.0, color_layout=ct.colorlayout.RGB)
            ]
        else:
            inputs = [ct.TensorType(name="input", shape=tuple(example.shape), dtype=np.float32)]
        precision = ct.precision.FLOAT16 if opts.precision == "fp16" else ct.precision.FLOAT32
        q = opts.quant
        error: Exception | None = None
        with quiet() as log, torch.no_grad():
            try:
                if q is not None and q.scheme == "w8a8":  # activations too: convert a PT2E-quantized export
                    model = pt2e(model, example, int8_quantizer(False, q.float_layers), q.calib)
                ep = drop_aliases(torch.export.export(model, (example,)).run_decompositions({}))
                # the Normalize wrapper's `model.` comes off: paths as the export wrapper names them, as without it
                handles = tag_nodes(ep, "model." if opts.image_input else "")
                mlmodel = ct.convert(
                    ep,
                    inputs=inputs,
                    outputs=[ct.TensorType(name="logits")],
                    convert_to="mlprogram",
                    compute_precision=precision,
                    minimum_deployment_target=getattr(ct.target, opts.min_deployment_target),
                    skip_model_load=True,
                )
            except Exception as e:
                error = e
        if error is not None:
            raise lowering_error(self.name, error, log.text, model, example, opts) from None
        op_modules = modules_of_ops(mlmodel, handles)  # before compression: its new model has no scopes
        if q is not None and q.scheme in WEIGHT_SCHEMES:
            with quiet():
                mlmodel = compress_weights(mlmodel, q.scheme)
        with quiet():
            mlmodel.short_description = "compiled by edgekit"
            mlmodel.save(str(path))
        # coremltools writes the node numbers' op map for ExecuTorch's Core ML delegate (unlisted in the package's
        # Manifest.json, read by nothing for a standalone model); edgekit keeps its own map in the manifest
        (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
        spec = mlmodel.get_spec()
        ops: dict[str, int] = {}
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    ops[op.type] = ops.get(op.type, 0) + 1
        kept = {name for name, _, _ in program_ops(spec)}  # compression leaves the other ops' names as they were
        return ExportInfo(
            inputs=[_feature(f) for f in spec.description.input],
            outputs=[_feature(f) for f in spec.description.output],
            extra={
                "spec_version": spec.specificationVersion,
                "compute_precision": opts.precision,
                "compute_units": "ALL",
                "op_types": dict(sorted(ops.items())),
                OP_MODULES: {name: path for name, path in op_modules.items() if name in kept},
            },
        )

    def runnable(self, manifest: dict) -> str | None:
        if not on_macos():
            return "Core ML models run on macOS only; conversion and structure were checked, numerics were not"
        return None

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        return CoreMLRunner(path, manifest["preprocessing"].get("baked_in", False))

    def capture(
        self, path: Path, manifest: dict, x: np.ndarray, model: nn.Module | None = None
    ) -> dict[str, np.ndarray] | None:
        """Every module's output on `x` as Core ML computes it (`coreml_capture`); None off macOS, where Core ML
        cannot run (`coreml_op_modules` still maps the program's ops to modules there), or where the manifest has
        no `op_modules` (compiled before edgekit recorded them)."""
        if not on_macos():
            return None
        return coreml_capture(path, manifest, x)

    def tolerance_for(self, manifest: dict) -> Tolerance:
        if manifest.get("quantization"):
            return super().tolerance_for(manifest)
        return (
            FP16 if manifest.get("options", {}).get("precision", "fp16") == "fp16" else super().tolerance_for(manifest)
        )

    def versions(self) -> dict[str, str]:
        return {"coremltools": import_coremltools().__version__}

    def bundle_info(self, manifest: dict) -> dict:
        return {"compute_units": COMPUTE_UNITS.get(str(manifest.get("compute_units", "ALL")), "all")}


# the `compute_units` a manifest records, as the iOS app's MLComputeUnits names them
COMPUTE_UNITS = {"ALL": "all", "CPU_ONLY": "cpuOnly", "CPU_AND_GPU": "cpuAndGPU", "CPU_AND_NE": "cpuAndNeuralEngine"}


# -- operations by module (`edgekit debug`) ----------------------------------------------------------------------

OP_MODULES = "op_modules"  # the manifest's {MIL op output name: module path of the exported program}
FLOAT_DTYPES = ("FLOAT16", "FLOAT32", "FLOAT64")


def tag_nodes(ep: torch.export.ExportedProgram, prefix: str = "") -> dict[int, str]:
    """Number every node of `ep` in its `debug_handle` (which coremltools carries onto the MIL ops converted from
    it); `{handle: module path}` for the nodes run inside a module (`nn_module_stack`'s innermost entry, with
    `prefix` taken off: a wrapper around the export wrapper)."""
    paths: dict[int, str] = {}
    for handle, node in enumerate(ep.graph_module.graph.nodes, 1):
        node.meta["debug_handle"] = handle
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path = str(list(stack.values())[-1][0])
            if prefix and path.startswith(prefix):
                path = path[len(prefix) :]
            elif prefix:
                continue  # the wrapper's own module
            paths[handle] = path
    return paths


def modules_of_ops(mlmodel, handles: dict[int, str]) -> dict[str, str]:
    """`{output name: module path}` for every non-const op of a converted model's program (in program order) whose
    debug handle (`tag_nodes`) has a module; empty where the model carries no MIL program."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return {}
    out: dict[str, str] = {}
    for fn in program.functions.values():
        for op in fn.operations:
            if _is_const(op.op_type) or not op.outputs:
                continue
            handle = (op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE) or [None])[-1]
            path = handles.get(handle) if handle is not None else None
            if path is not None:
                for v in op.outputs:
                    out[v.name] = path
    return out


def program_ops(spec_or_path) -> list[tuple[str, str, bool]]:
    """The program's non-const ops in order, as `(output name, op type, float output)`, one per output."""
    if not hasattr(spec_or_path, "mlProgram"):
        ct = import_coremltools()
        with loading(spec_or_path, "Core ML", "coreml"):
            spec_or_path = ct.utils.load_spec(str(spec_or_path))
    from coremltools.proto import MIL_pb2

    ops = []
    for fn in spec_or_path.mlProgram.functions.values():
        block = fn.block_specializations.get(fn.opset) or next(iter(fn.block_specializations.values()), None)
        for op in block.operations if block is not None else ():
            if _is_const(op.type):
                continue
            for o in op.outputs:
                t = o.type
                dtype = MIL_pb2.DataType.Name(t.tensorType.dataType) if t.WhichOneof("type") == "tensorType" else ""
                ops.append((o.name, op.type, dtype in FLOAT_DTYPES))
    return ops


def coreml_op_modules(path: str | Path, manifest: dict | None = None) -> dict[str, str]:
    """`{MIL op output name: the user's module path}` for the Core ML artifact at `path`, in program order; weights
    (`const`) left out, and ops no module computes (the input's conversion of an image input's normalization).
    Works off macOS. `"model"` is the user's model's own forward (a flatten between its modules). Empty for an
    artifact whose manifest has no `op_modules` (compiled before edgekit recorded them)."""
    manifest = manifest if manifest is not None else read_manifest(path, check_sha256=False)
    recorded = manifest.get(OP_MODULES) or {}
    return {name: module_path(recorded[name]) for name, _, _ in program_ops(path) if name in recorded}


def capture_plan(path: str | Path, manifest: dict) -> dict[str, str]:
    """`{user's module path: the op output that is its value}`: the last float value computed inside each module
    (for a module called twice, inside its first call, as `module_outputs` keeps it), and `model`, the whole
    network, the program's output. Empty where the manifest has no `op_modules`."""
    recorded = manifest.get(OP_MODULES) or {}
    ops = program_ops(path)
    scoped = [
        (recorded[name], name)
        for name, _, floating in ops
        if floating and name in recorded and recorded[name].startswith(EXPORT_WRAPPER_PREFIX)
    ]  # the user's modules' ops, not those of its own forward (a flatten between modules)
    if not scoped:
        return {}
    chosen = last_value_per_module(scoped)
    chosen.update(first_calls(scoped))
    outputs = manifest.get("outputs") or []
    if outputs and outputs[0].get("name"):
        chosen["model"] = outputs[0]["name"]
    return chosen


def coreml_capture(path: str | Path, manifest: dict, x: np.ndarray) -> dict[str, np.ndarray] | None:
    """Every module's output on `x` as Core ML computes it (macOS): `{user's module path: float32 array}`, NCHW as
    PyTorch's (Core ML keeps PyTorch's layout).

    The op each module's value is (`capture_plan`) is made an output of a copy of the program, which Core ML runs
    on the manifest's compute units: coremltools' `MLModelInspector` (`ml_program.experimental.debugging_utils`),
    which adds the outputs, compiles the copy and predicts, splitting the list where an output cannot be added. An
    op that is an output cannot be fused with the next on the device, so the values are those of a program compiled
    a little differently from the artifact; what they differ by is the device's own rounding, not the conversion.
    None where the manifest has no `op_modules`; an EdgekitError where Core ML cannot run the copy.
    """
    plan = capture_plan(path, manifest)
    if not plan:
        return None
    ct = import_coremltools()
    from coremltools.models.ml_program.experimental.debugging_utils import MLModelInspector

    units = getattr(ct.ComputeUnit, str(manifest.get("compute_units", "ALL")), ct.ComputeUnit.ALL)
    with loading(path, "Core ML", "coreml"):
        model = ct.models.MLModel(str(path), compute_units=units)
    name = model.get_spec().description.input[0].name
    feed = Image.fromarray(x) if manifest["preprocessing"].get("baked_in") else x
    inspector = MLModelInspector(model, compute_units=units)
    wanted = list(dict.fromkeys(plan.values()))
    try:
        with quiet():
            values = _run(inspector.retrieve_outputs(inputs={name: feed}, output_names=wanted))
    except EdgekitError:
        raise
    except Exception as e:
        raise EdgekitError(f"Core ML could not give the intermediate values of '{path}': {first_line(e)}") from None
    finally:
        inspector.clear_cached_models()
    return {m: np.asarray(values[n], dtype=np.float32) for m, n in plan.items() if values.get(n) is not None}


def _run(coroutine):
    """`asyncio.run`, also where an event loop is already running in this thread (a notebook): in another one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _is_const(op_type: str) -> bool:
    """Ops whose output is data, not computed from the input: weights, and compressed weights' decompression."""
    return op_type == "const" or "constexpr" in op_type
