"""The artifact manifest: the JSON beside every compiled file (target, sha256, I/O, preprocessing, versions)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy
import torch

from ..errors import ArtifactError
from ..io import sha256_of, size_of
from ..models import LoadedModel
from ..version import __version__
from .base import CompileOptions, ExportInfo
from .registry import Target

MANIFEST_SUFFIX = ".json"


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read_manifest(artifact: str | Path) -> dict:
    artifact = Path(artifact)
    if not artifact.exists():
        raise ArtifactError(f"artifact '{artifact}' does not exist; compile one with `edgekit compile`")
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        raise ArtifactError(f"no manifest '{mpath.name}' beside '{artifact}'; recompile it with `edgekit compile`")
    try:
        return json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"manifest '{mpath}' is not valid JSON ({e}); recompile the artifact") from None


def build_manifest(
    target: Target,
    loaded: LoadedModel,
    opts: CompileOptions,
    info: ExportInfo,
    artifact: Path,
    written: Path,
    seconds: float,
) -> dict:
    """The manifest of `written` (the artifact under its temporary name), to be saved beside `artifact`."""
    card = loaded.card
    return {
        "edgekit_version": __version__,
        "target": target.name,
        "artifact": artifact.name,
        "sha256": sha256_of(written),
        "bytes": size_of(written),
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
            "baked_in": bool(opts.image_input and target.image_input),
        },
        "options": {k: v for k, v in vars(opts).items() if k not in ("mean", "std", "in_chans", "quant")},
        **info.extra,
        "compile_seconds": round(seconds, 2),
        "tool_versions": tool_versions(target),
    }


def tool_versions(target: Target) -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **target.versions(),
    }
