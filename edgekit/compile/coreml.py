"""Core ML: ML Program `.mlpackage` via coremltools. Converts on Linux; runs (and verifies) on macOS only.
Quantized with coremltools.optimize (w8, w4, palette4 weights) or from a PT2E int8 export (w8a8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import EdgekitError
from ..quantize import QuantizationError, int8_quantizer, pt2e
from .base import FP16, INT8, W4, W8, CompileOptions, ExportInfo, Runner, Tolerance, lowering_error, on_macos, quiet
from .export import drop_aliases
from .manifest import loading
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
        if q is not None and q.scheme in WEIGHT_SCHEMES:
            with quiet():
                mlmodel = compress_weights(mlmodel, q.scheme)
        with quiet():
            mlmodel.short_description = "compiled by edgekit"
            mlmodel.save(str(path))
        spec = mlmodel.get_spec()
        ops: dict[str, int] = {}
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    ops[op.type] = ops.get(op.type, 0) + 1
        return ExportInfo(
            inputs=[_feature(f) for f in spec.description.input],
            outputs=[_feature(f) for f in spec.description.output],
            extra={
                "spec_version": spec.specificationVersion,
                "compute_precision": opts.precision,
                "compute_units": "ALL",
                "op_types": dict(sorted(ops.items())),
            },
        )

    def runnable(self, manifest: dict) -> str | None:
        if not on_macos():
            return "Core ML models run on macOS only; conversion and structure were checked, numerics were not"
        return None

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        return CoreMLRunner(path, manifest["preprocessing"].get("baked_in", False))

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
