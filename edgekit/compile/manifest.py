"""The artifact manifest: the JSON beside every compiled file (target, sha256, I/O, preprocessing, versions)."""

from __future__ import annotations

import contextlib
import json
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ArtifactError, EdgekitError, first_line
from ..io import read_json, sha256_of, size_of
from ..models import LoadedModel
from ..specs import MAX_CLASSES, MAX_INPUT, MIN_INPUT
from ..version import __version__
from .base import CompileOptions, ExportInfo, side_file
from .registry import Target

MANIFEST_SUFFIX = ".json"
BUILT_IN = ("onnx", "tflite", "executorch", "coreml")  # the targets that are extras of edgekit's package
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest is a few KB; this bounds what a damaged one makes us read


# -- what a manifest must hold: the fields edgekit reads back (verify, profile, demo bundle) ------------------
# Unknown keys are kept (a later edgekit, or a plug-in target, adds its own); `strict`: 32 is not "32" nor 32.0.

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Name = Annotated[str, Field(max_length=1000)]
_Shape = Annotated[list[Annotated[int, Field(ge=0)] | _Name], Field(min_length=1, max_length=8)]  # a name: dynamic


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    reference: _Name | None = None
    name: _Name | None = None
    weights: _Name | None = None
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)] | None = None


class _Tensor(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    name: _Name | None = None
    shape: _Shape | None = None  # None: a Core ML feature that is no array (its `type` says what)
    dtype: _Name | None = None


class _Input(_Tensor):
    shape: _Shape


class _Preprocessing(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    size: Annotated[int, Field(ge=MIN_INPUT, le=MAX_INPUT)]
    mean: Annotated[list[_Finite], Field(min_length=1, max_length=4)] | None = None
    std: (
        Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1, max_length=4)] | None
    ) = None
    baked_in: bool = False

    @model_validator(mode="after")
    def _channels(self) -> _Preprocessing:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, 3):
                raise ValueError(f"{name} should give 1 or 3 values (one per RGB channel), not {len(values)}")
        return self


class _Quantization(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    scheme: _Name | None = None
    calibration: dict[str, Any] | None = None


class _SideFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    file: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^/\\]+$")]  # a name beside the artifact
    bytes: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Manifest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    target: Annotated[str, Field(min_length=1, max_length=100)]
    artifact: _Name
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]
    model: _Model
    inputs: Annotated[list[_Input], Field(min_length=1)]
    outputs: list[_Tensor] | None = None
    preprocessing: _Preprocessing
    options: dict[str, Any] = {}
    quantization: _Quantization | None = None
    delegate: _Name | None = None
    side_files: Annotated[dict[Annotated[str, Field(max_length=100)], _SideFile], Field(max_length=20)] | None = None


def check_manifest(manifest: object, source: str) -> dict:
    """The manifest, if it holds what edgekit reads back with the right types and ranges; else an ArtifactError
    naming the first field that does not."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{source} is not a JSON object but a {type(manifest).__name__}; recompile the artifact")
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "Input should be an object" if err["type"] in ("model_type", "dict_type") else err["msg"]
        msg = msg.removeprefix("Value error, ")
        value = err.get("input")
        got = (
            f", got {_short(value)}" if isinstance(value, (str, int, float, bool)) and err["type"] != "missing" else ""
        )
        raise ArtifactError(f"{source} is not a valid manifest: {where}: {msg}{got}; recompile the artifact") from None
    return manifest


def _short(value: object, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def read_manifest(artifact: str | Path, *, check_sha256: bool = True) -> dict:
    """The manifest beside `artifact`, checked (`check_manifest`); with `check_sha256`, also that the artifact is
    the file the manifest describes (byte for byte) before anything runs it."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise ArtifactError(f"artifact '{artifact}' does not exist; compile one with `edgekit compile`")
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        raise ArtifactError(f"no manifest '{mpath.name}' beside '{artifact}'; recompile it with `edgekit compile`")
    manifest = read_json(
        mpath,
        what="manifest",
        limit=MAX_MANIFEST_BYTES,
        too_big="which no manifest is",
        fix="recompile the artifact",
        error=ArtifactError,
    )
    check_manifest(manifest, f"manifest '{mpath}'")
    if check_sha256:
        try:
            digest = sha256_of(artifact)
        except OSError as e:
            raise ArtifactError(f"cannot read '{artifact}' ({e.strerror or e}); check its permissions") from None
        if digest != manifest["sha256"]:
            raise ArtifactError(f"'{artifact}' does not match the sha256 in its manifest; it changed after compiling")
    return manifest


@contextlib.contextmanager
def loading(path: str | Path, runtime: str, target: str) -> Iterator[None]:
    """Around a runtime's load of an artifact: what the loader raises (a damaged file, another format) becomes
    one ArtifactError; a missing runtime says so; an EdgekitError (an operator the runtime lacks) passes as it is."""
    try:
        yield
    except EdgekitError:
        raise
    except ImportError as e:  # the runtime itself is missing: the file is not to blame
        extra = f"pip install 'edgekit[{target}]'" if target in BUILT_IN else f"install {runtime}"
        raise EdgekitError(f"could not load '{path}': {runtime} is not installed ({first_line(e)}); {extra}") from None
    except Exception as e:
        article = "an" if target[:1].lower() in "aeiou" else "a"
        raise ArtifactError(
            f"could not load '{path}' with {runtime} ({first_line(e) or type(e).__name__}); the file is damaged "
            f"or not {article} {target} artifact; compile it again"
        ) from None


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
        **_side_files(info, artifact, written),
        "compile_seconds": round(seconds, 2),
        "tool_versions": tool_versions(target),
    }


def _side_files(info: ExportInfo, artifact: Path, written: Path) -> dict:
    """The manifest's `side_files`: {suffix: {file (its name beside the artifact), bytes, sha256}}."""
    if not info.side_files:
        return {}
    entries = {}
    for suffix in info.side_files:
        tmp = side_file(written, suffix)
        entries[suffix] = {"file": side_file(artifact, suffix).name, "bytes": size_of(tmp), "sha256": sha256_of(tmp)}
    return {"side_files": entries}


def tool_versions(target: Target) -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **target.versions(),
    }
