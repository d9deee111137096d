"""The compile targets: one plug-in each, and the registry every other room derives its list from.

A target is a subclass of `Target` in one module, registered with `@register`. It owns everything about
its runtime: export, the runner, its quantization schemes (with their quantizers and tolerances), its
option checks, the tool versions a manifest and a recipe's cache key record, the per-op profile, the
benchmark tool over adb and which demo apps run it. The CLI's help, the recipe schema, the latency report
schema, `profile`, `report` and `demo bundle` read this registry; nothing else names a target.

Targets of other packages register through the `edgekit.targets` entry-point group (a module whose
import registers its targets), loaded the first time the registry is read.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from ..errors import EdgekitError, UnknownTargetError
from ..io import package_version
from ..quantize import QuantizationError
from .base import FP32, CompileOptions, ExportInfo, Lowering, Runner, Tolerance

ENTRY_POINTS = "edgekit.targets"


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme of one target.

    `calibrated`: it calibrates activation ranges on data (int8, w8a8). `weight_only`: only weights are
    quantized, so `--float-layer` and `--max-drop` do not apply. `simulated`: its accuracy can be measured
    off the device by the PT2E simulation of the int8 program (when the artifact cannot run here).
    """

    name: str
    tolerance: Tolerance
    calibrated: bool = False
    weight_only: bool = False
    simulated: bool = False


class Target:
    """One compile target. Subclasses set the class attributes and implement `export` and `load`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # how users call it: "TFLite (LiteRT)"
    suffix: ClassVar[str] = ""
    tolerance: ClassVar[Tolerance] = FP32
    schemes: ClassVar[tuple[Scheme, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions the manifest and cache keys record
    runtime_package: ClassVar[str | None] = None  # the distribution that runs the artifact (latency reports)
    runtime_module: ClassVar[str | None] = None  # imported before a load is timed (a first import costs seconds)
    apps: ClassVar[tuple[str, ...]] = ()  # demo apps that run its artifacts: android, ios
    adb_tool: ClassVar[str | None] = None  # the benchmark binary `profile --device adb` runs
    # Suffixes of files `export` may write beside the artifact (`ExportInfo.side_files`): compile commits them with
    # the artifact, and removes an earlier compile's where this one wrote none.
    side_suffixes: ClassVar[tuple[str, ...]] = ()
    image_input: ClassVar[bool] = False  # `--image-input` bakes the preprocessing into the artifact
    delegates: ClassVar[tuple[str, ...]] = ()  # the values its `--delegate` takes

    # -- compile ---------------------------------------------------------------------------------------------

    def artifact_suffix(self, opts: CompileOptions) -> str:
        return self.suffix

    def check_options(self, opts: CompileOptions) -> None:
        """Raise an EdgekitError for an option that does not apply to this target or has a bad value."""
        if opts.delegate is not None:
            raise EdgekitError(f"--delegate applies to --target executorch only, not '{self.name}'")

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, opts: CompileOptions) -> ExportInfo:
        raise NotImplementedError

    # -- quantization ----------------------------------------------------------------------------------------

    def scheme(self, name: str) -> Scheme:
        """The scheme called `name`; else a QuantizationError listing this target's (and who has `name`)."""
        for s in self.schemes:
            if s.name == name:
                return s
        others = [t.name for t in targets() if any(s.name == name for s in t.schemes)]
        where = f"; it is a scheme of {', '.join(others)}" if others else ""
        allowed = ", ".join(s.name for s in self.schemes) or "none"
        raise QuantizationError(f"target '{self.name}' has no quantization scheme '{name}' (choose {allowed}){where}")

    def scheme_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.schemes)

    def check_quantization(self, scheme: Scheme, opts: CompileOptions) -> None:
        """Raise a QuantizationError where `scheme` does not go with these options (e.g. an old OS target)."""

    # -- running ---------------------------------------------------------------------------------------------

    def runnable(self, manifest: dict) -> str | None:
        """None when the artifact can run here, else the reason it cannot."""
        return None

    def load(self, path: Path, manifest: dict, threads: int | None = None) -> Runner:
        raise NotImplementedError

    def tolerance_for(self, manifest: dict) -> Tolerance:
        scheme = (manifest.get("quantization") or {}).get("scheme")
        return self.scheme(scheme).tolerance if scheme else self.tolerance

    def op_profile(self, path: Path, x: np.ndarray, threads: int | None) -> list[dict] | None:
        """Per-op rows ({op, module, count, ms, share}, per inference) on this host; None where the runtime has none."""
        return None

    def lowering(self, program: torch.export.ExportedProgram) -> Lowering | None:
        """What the runtime runs of `program` (fp32, the default delegate) beyond its ops: the ops left outside the
        delegate and the layout copies it inserts (`Lowering`); None where the target does not say."""
        return None

    def capture_hint(self, manifest: dict) -> str:
        """What to do where `capture` gave no module's value of an artifact (a runtime that hides the network)."""
        return "the runtime gave no intermediate value that a module computed last"

    def op_modules(
        self, path: Path, manifest: dict, names: list[str], ops: list[str] | None = None
    ) -> dict[str, str | None]:
        """The user's module of each op a device tool named (its output tensor's name, as `benchmark_model` prints
        it; `ops`, where given, each one's operator type); None where the name says none. For per-op rows measured
        on a phone."""
        return dict.fromkeys(names)

    def capture(
        self, path: Path, manifest: dict, x: np.ndarray, model: nn.Module | None = None
    ) -> dict[str, np.ndarray] | None:
        """The artifact's intermediate values on input `x`, by the user's module path that computes each (see
        `edgekit.compile.capture`), as float arrays in PyTorch's layout; None where the runtime cannot give them.
        `model`: the model it was compiled from (prepared for export), for targets that need its structure."""
        return None

    # -- describing ------------------------------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        """Versions of the target's tools, for the manifest."""
        return {p: v for p in self.packages if (v := package_version(p)) is not None}

    def runtime_version(self) -> str | None:
        return package_version(self.runtime_package) if self.runtime_package else None

    def delegate_of(self, manifest: dict) -> str | None:
        """The delegate (backend inside the runtime) the artifact runs on, for reports and the demo apps."""
        return manifest.get("options", {}).get("delegate")

    def check_app(self, app: str, manifest: dict) -> None:
        """Raise an EdgekitError where this artifact cannot run in the demo app `app` although the target can."""

    def bundle_info(self, manifest: dict) -> dict:
        """Extra fields for a demo app's edgekit_bundle.json."""
        return {}


_TARGETS: dict[str, Target] = {}
_entry_points_loaded = False

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: register an instance of a Target subclass under its `name` (a later one replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Target)) or not cls.name or not cls.suffix:
        raise TypeError(f"{cls!r} is not a Target subclass with a name and a suffix")
    _TARGETS[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    _TARGETS.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except Exception as e:  # a broken third-party plug-in must not take the built-in targets down
            warnings.warn(f"edgekit target plug-in '{ep.name}' ({ep.value}) failed to load: {e}", stacklevel=2)


def targets() -> list[Target]:
    _load_entry_points()
    return list(_TARGETS.values())


def target_names() -> tuple[str, ...]:
    return tuple(t.name for t in targets())


def get_target(name: str) -> Target:
    _load_entry_points()
    target = _TARGETS.get(str(name))
    if target is None:
        names = target_names()
        near = difflib.get_close_matches(str(name), names, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise UnknownTargetError(f"unknown target '{name}'{hint} (choose one of: {', '.join(names)})")
    return target


def delegate_names() -> tuple[str, ...]:
    """Every `--delegate` value a registered target takes (a recipe checks its entries against these)."""
    return tuple(dict.fromkeys(d for t in targets() for d in t.delegates))


def scheme_help() -> str:
    """`executorch: int8, int8-dynamic; tflite: ...` for the CLI's --quantize help."""
    return "; ".join(f"{t.name}: {', '.join(t.scheme_names())}" for t in targets() if t.schemes) + "."
