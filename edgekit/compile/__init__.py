"""Compile a model for a target: export, write atomically, verify, and describe it in a manifest.

The targets are plug-ins (`registry.py`); the built-in ones are the modules imported at the end of this file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from ..errors import EdgekitError, VerificationError
from ..io import atomic_path, check_writable, write_json
from ..models import LoadedModel, ModelCard, load_model
from ..quantize import plan_quantization
from ..specs import CompileSpec, QuantizeSpec, VerifySpec

# The built-in targets register themselves on import (each imports its runtime only when used).
from . import coreml, executorch, onnx, tflite  # noqa: F401
from .accuracy import control_accuracy
from .base import (
    FP16,
    FP32,
    INT8,
    W4,
    W8,
    CompileOptions,
    ExportInfo,
    Lowering,
    Runner,
    Tolerance,
    lowering_error,
    quiet,
    side_file,
)
from .debugging import DebugError, compare_modules, debug, first_diverging
from .export import ExportWrapper, example_input, prepare_for_export
from .inputs import fixed_inputs
from .manifest import build_manifest, manifest_path, read_manifest
from .registry import (
    Scheme,
    Target,
    delegate_names,
    get_target,
    register,
    scheme_help,
    target_names,
    targets,
    unregister,
)
from .verification import compare, verify, verify_artifact

_Q = QuantizeSpec()
MIN_INPUT_SIZE = 16
PRECISIONS = ("fp16", "fp32")

__all__ = [
    "FP16",
    "FP32",
    "INT8",
    "W4",
    "W8",
    "CompileOptions",
    "CompileResult",
    "ExportInfo",
    "ExportWrapper",
    "Lowering",
    "Runner",
    "Scheme",
    "Target",
    "Tolerance",
    "compare",
    "compile",
    "delegate_names",
    "example_input",
    "fixed_inputs",
    "compare_modules",
    "debug",
    "DebugError",
    "get_target",
    "lowering_error",
    "manifest_path",
    "prepare_for_export",
    "quiet",
    "read_manifest",
    "register",
    "scheme_help",
    "target_names",
    "targets",
    "unregister",
    "verify",
    "verify_artifact",
]


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
    return load_model(model, weights=weights, num_classes=num_classes, input_size=input_size, probe=True)


@dataclass
class CompileResult:
    artifact: Path
    manifest_path: Path
    manifest: dict

    @property
    def verification(self) -> dict:
        return self.manifest.get("verification", {})


def _check_options(target: Target, opts: CompileOptions) -> None:
    if opts.input_size < MIN_INPUT_SIZE:
        raise EdgekitError(
            f"--input-size {opts.input_size} is too small; use at least {MIN_INPUT_SIZE} (the zoo downsamples by 32)"
        )
    target.check_options(opts)
    if opts.precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{opts.precision}'; choose {' or '.join(PRECISIONS)}")


@contextlib.contextmanager
def _side_files_removed_on_failure(target: Target, written: Path) -> Iterator[None]:
    """Remove the side files the export wrote beside `written` (the artifact's temporary name) where compiling
    fails before they are committed."""
    try:
        yield
    except BaseException:
        for suffix in target.side_suffixes:
            side_file(written, suffix).unlink(missing_ok=True)
        raise


def _commit_side_files(target: Target, written: Path, artifact: Path, manifest: dict) -> None:
    """Rename the side files the export wrote beside `written` to their names beside `artifact`; remove an earlier
    compile's of a suffix this one wrote none of (it would describe another program)."""
    ours = manifest.get("side_files") or {}
    for suffix in target.side_suffixes:
        if suffix in ours:
            os.replace(side_file(written, suffix), side_file(artifact, suffix))
        else:
            side_file(artifact, suffix).unlink(missing_ok=True)


def compile(  # noqa: A001 - mirrors the CLI verb
    model: str | nn.Module,
    target: str,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    out: str | Path = "out",
    name: str | None = None,
    delegate: str | None = CompileSpec.default("delegate"),
    precision: str = CompileSpec.default("precision"),
    min_deployment_target: str = CompileSpec.default("min_target"),
    image_input: bool = CompileSpec.default("image_input"),
    quantize: str | None = None,
    calib: str | None = None,
    calib_size: int = _Q.calib_size,
    float_layers: tuple[str, ...] | list[str] = (),
    max_drop: float | None = _Q.max_drop,
    val_samples: int | None = _Q.val_samples,
    verify: bool = VerifySpec.default("enabled"),
    verify_samples: int = VerifySpec.default("samples"),
    progress=None,
) -> CompileResult:
    """Compile `model` (a reference or an nn.Module) for `target`; write the artifact and its manifest in `out`.

    With `quantize`, the target's own quantizer runs first (calibrated on `calib_size` images of the dataset
    `calib` for static schemes); with a dataset, accuracy on its validation split is measured before and
    after, and `max_drop` (points) keeps the most harmful layers float until the drop is within it.
    """
    tgt = get_target(target)
    check_writable(Path(out) / "artifact")  # before the slow work
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
    _check_options(tgt, opts)
    export_model = prepare_for_export(loaded.model)
    dataset, scheme = None, None
    if quantize is not None:
        scheme = tgt.scheme(quantize)
        tgt.check_quantization(scheme, opts)
        opts.quant, dataset = plan_quantization(
            scheme.name,
            calibrated=scheme.calibrated,
            weight_only=scheme.weight_only,
            model=loaded.model,
            card=card,
            calib=calib,
            calib_size=calib_size,
            float_layers=tuple(float_layers),
            max_drop=max_drop,
            val_samples=val_samples,
        )
    elif calib or float_layers or max_drop is not None:
        raise EdgekitError("--calib, --float-layer and --max-drop go with --quantize SCHEME")
    stem = name or _artifact_stem(loaded)
    out = Path(out)
    artifact = out / f"{stem}{tgt.artifact_suffix(opts)}"
    created_out = not out.exists()
    example = example_input(opts)
    try:
        with (
            atomic_path(artifact) as tmp_artifact,
            atomic_path(manifest_path(artifact)) as tmp_manifest,
            _side_files_removed_on_failure(tgt, tmp_artifact),
        ):

            def build() -> dict:
                t0 = time.perf_counter()
                info = tgt.export(export_model, example, tmp_artifact, opts)
                return build_manifest(tgt, loaded, opts, info, artifact, tmp_artifact, time.perf_counter() - t0)

            manifest = build()
            if opts.quant is not None and scheme is not None:
                manifest = control_accuracy(
                    tgt,
                    scheme,
                    export_model,
                    example,
                    opts.quant,
                    dataset,
                    max_drop,
                    build,
                    tmp_artifact,
                    manifest,
                    progress=progress,
                )
            if verify:
                result = verify_artifact(tmp_artifact, manifest, export_model, samples=verify_samples, target=tgt)
                manifest["verification"] = result
                if result["status"] == "failed":
                    where = first_diverging(tmp_artifact, manifest, export_model, tgt)
                    more = f"; {where} (compile with --no-verify and run edgekit debug on it for the table)"
                    raise VerificationError(
                        f"{tgt.name} artifact differs from PyTorch beyond tolerance ({result['summary']})"
                        f"{more if where else ''}; nothing was written"
                    )
            else:
                manifest["verification"] = {"status": "not run", "reason": "verification was turned off"}
            write_json(tmp_manifest, manifest)
            _commit_side_files(tgt, tmp_artifact, artifact, manifest)
    except BaseException:
        if created_out and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise
    return CompileResult(artifact, manifest_path(artifact), manifest)
