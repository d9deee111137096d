"""Compile a model for a target: export, write atomically, verify, and describe it in a manifest."""

from __future__ import annotations

import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import EdgekitError, UnknownTargetError, VerificationError
from ..io import atomic_path, sha256_of, size_of, write_json
from ..models import LoadedModel, ModelCard, load_model
from .base import Backend, CompileOptions

TARGETS = ("coreml", "tflite", "executorch", "onnx")
MANIFEST_SUFFIX = ".json"


def get_backend(target: str) -> Backend:
    if target == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend()
    if target == "tflite":
        from .tflite import TFLiteBackend

        return TFLiteBackend()
    if target == "executorch":
        from .executorch import ExecuTorchBackend

        return ExecuTorchBackend()
    if target == "coreml":
        from .coreml import CoreMLBackend

        return CoreMLBackend()
    import difflib

    near = difflib.get_close_matches(str(target), TARGETS, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise UnknownTargetError(f"unknown target '{target}'{hint} (choose one of: {', '.join(TARGETS)})")


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


class ExportWrapper(nn.Module):
    """Gives exporters one tensor out: the first element where a model returns a tuple or list."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy in export form (`edgekit.models.deploy.export_form`) with a single tensor output."""
    from ..models.deploy import export_form

    return ExportWrapper(export_form(model)).eval()


def example_input(opts: CompileOptions, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, opts.in_chans, opts.input_size, opts.input_size, generator=g)


def _artifact_stem(loaded: LoadedModel) -> str:
    """`mobilevig_ti`, `TinyNet` for `nets.py:TinyNet`, `pruned` for `pruned.pt`."""
    ref = loaded.reference or loaded.card.name
    if Path(ref).suffix in (".pt", ".pth", ".ckpt"):
        ref = Path(ref).stem
    elif loaded.card.family != "user":
        ref = loaded.card.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref.rsplit(":", 1)[-1]) or "model"


def _resolve(model, weights, num_classes, input_size, name) -> LoadedModel:
    if isinstance(model, nn.Module):
        # A module in hand: no reference to rebuild it from, so `verify` will need the module too.
        card = ModelCard(name=name or type(model).__name__, family="user")
        if input_size:
            card = replace(card, input_size=int(input_size))
        model.eval()
        return LoadedModel(model, card, reference=None)
    return load_model(model, weights=weights, num_classes=num_classes, input_size=input_size)


@dataclass
class CompileResult:
    artifact: Path
    manifest_path: Path
    manifest: dict

    @property
    def verification(self) -> dict:
        return self.manifest.get("verification", {})


def compile(  # noqa: A001 - mirrors the CLI verb
    model: str | nn.Module,
    target: str,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    out: str | Path = "out",
    name: str | None = None,
    delegate: str | None = None,
    precision: str = "fp16",
    min_deployment_target: str = "iOS16",
    image_input: bool = False,
    quantize: str | None = None,
    calib: str | None = None,
    calib_size: int = 256,
    float_layers: tuple[str, ...] | list[str] = (),
    max_drop: float | None = None,
    val_samples: int | None = 1000,
    verify: bool = True,
    verify_samples: int = 4,
    progress=None,
) -> CompileResult:
    """Compile `model` (a reference or an nn.Module) for `target`; write the artifact and its manifest in `out`.

    With `quantize`, the target's own quantizer runs first (calibrated on `calib_size` images of the dataset
    `calib` for static schemes); with a dataset, accuracy on its validation split is measured before and
    after, and `max_drop` (points) keeps the most harmful layers float until the drop is within it.
    """
    backend = get_backend(target)
    loaded = _resolve(model, weights, num_classes, input_size, name)
    card = loaded.card
    opts = CompileOptions(
        input_size=card.input_size,
        mean=tuple(card.mean),
        std=tuple(card.std),
        delegate=delegate,
        precision=precision,
        min_deployment_target=min_deployment_target,
        image_input=image_input,
    )
    _check_options(target, opts)
    export_model = prepare_for_export(loaded.model)
    dataset = None
    if quantize is not None:
        from ..quantize import plan_quantization

        opts.quant, dataset = plan_quantization(target, quantize, loaded, opts, calib=calib, calib_size=calib_size,
                                                float_layers=tuple(float_layers), max_drop=max_drop,
                                                val_samples=val_samples)
    elif calib or float_layers or max_drop is not None:
        raise EdgekitError("--calib, --float-layer and --max-drop go with --quantize SCHEME")
    stem = name or _artifact_stem(loaded)
    out = Path(out)
    artifact = out / f"{stem}{backend.artifact_suffix(opts)}"
    created_out = not out.exists()
    example = example_input(opts)
    try:
        with atomic_path(artifact) as tmp_artifact, atomic_path(manifest_path(artifact)) as tmp_manifest:

            def build() -> dict:
                t0 = time.perf_counter()
                info = backend.export(export_model, example, tmp_artifact, opts)
                return _manifest(target, backend, loaded, opts, info, artifact, tmp_artifact, time.perf_counter() - t0)

            manifest = build()
            if opts.quant is not None:
                from ..quantize import control_accuracy

                manifest = control_accuracy(backend, export_model, example, opts, dataset, max_drop, build,
                                            tmp_artifact, manifest, progress=progress)
            if verify:
                from ..verify import verify_artifact

                result = verify_artifact(
                    tmp_artifact, manifest, export_model, samples=verify_samples, backend=backend
                )
                manifest["verification"] = result
                if result["status"] == "failed":
                    raise VerificationError(
                        f"{target} artifact differs from PyTorch beyond tolerance ({result['summary']}); "
                        "nothing was written"
                    )
            else:
                manifest["verification"] = {"status": "not run", "reason": "verification was turned off"}
            write_json(tmp_manifest, manifest)
    except BaseException:
        if created_out and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise
    return CompileResult(artifact, manifest_path(artifact), manifest)


def _manifest(target, backend, loaded, opts, info, artifact, tmp_artifact, seconds) -> dict:
    card = loaded.card
    return {
        "edgekit_version": __version__,
        "target": target,
        "artifact": artifact.name,
        "sha256": sha256_of(tmp_artifact),
        "bytes": size_of(tmp_artifact),
        "model": {
            "reference": loaded.reference,
            "name": card.name,
            "family": card.family,
            "weights": loaded.weights,
            "weights_sha256": sha256_of(loaded.weights) if loaded.weights else None,
            "num_classes": int(info.outputs[0]["shape"][-1]),
        },
        "inputs": info.inputs,
        "outputs": info.outputs,
        "preprocessing": {
            "size": card.input_size,
            "layout": "NCHW",
            "mean": list(card.mean),
            "std": list(card.std),
            "scale": 1 / 255.0,
            "color": "RGB",
            "baked_in": bool(opts.image_input and target == "coreml"),
        },
        "options": {k: v for k, v in vars(opts).items() if k not in ("mean", "std", "in_chans", "quant")},
        **info.extra,
        "compile_seconds": round(seconds, 2),
        "tool_versions": _versions(backend),
    }


def _check_options(target: str, opts: CompileOptions) -> None:
    if opts.input_size < 16:
        raise EdgekitError(f"--input-size {opts.input_size} is too small; use at least 16 (the zoo downsamples by 32)")
    if target == "executorch" and opts.delegate not in (None, "xnnpack", "coreml", "none"):
        raise EdgekitError(f"unknown ExecuTorch delegate '{opts.delegate}'; choose xnnpack, coreml or none")
    if target != "executorch" and opts.delegate not in (None,):
        raise EdgekitError(f"--delegate applies to --target executorch only, not '{target}'")
    if opts.precision not in ("fp16", "fp32"):
        raise EdgekitError(f"unknown precision '{opts.precision}'; choose fp16 or fp32")


def _versions(backend: Backend) -> dict:
    import numpy

    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **backend.versions(),
    }
