"""`edgekit debug`: which module of the user's model an artifact stops agreeing with, and by how much.

The PyTorch model and the artifact run on the same inputs (verification's seeded images, or the calibration
data's validation images for a quantized artifact); PyTorch's module outputs (`capture.module_outputs`) and the
artifact's values by module (`Target.capture`) are compared module by module, in the order PyTorch finishes them:
max abs error, cosine and SNR, against the artifact's own tolerance (the bound verification applies to the
logits, applied to each module's output). The first module in that order that breaks it is where the artifact
went wrong. For a quantized artifact every leaf module is also ranked by the error it adds: its output's relative
error less that of the compared leaf that finished last before it started (its input, for a chain of modules), and
the `--float-layer` arguments that would keep the worst ones float are printed. A value the artifact has under a
module whose BatchNorm it folded in (PT2E's int8 convolutions) is compared with the BatchNorm's output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EdgekitError
from .base import EXPORT_WRAPPER_PREFIX, Tolerance
from .capture import hooked_forward, module_outputs, module_path
from .export import prepare_for_export
from .inputs import data_inputs, fixed_inputs, reference_model
from .manifest import read_manifest
from .registry import Target, get_target

WHOLE = EXPORT_WRAPPER_PREFIX.rstrip(".")  # the user's model itself, as `module_path` names it


class DebugError(EdgekitError):
    """The artifact's runtime cannot give its intermediate values here."""


@dataclass
class ModuleRow:
    module: str
    shape: list[int]
    max_abs: float
    cosine: float
    snr_db: float
    rel_error: float  # ||ref - got|| / ||ref||
    breach: bool
    added: float = 0.0  # rel_error less that of the module before it


def inputs_for(manifest: dict, samples: int) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """The tensors PyTorch gets and the arrays the artifact gets (verification's choice of inputs)."""
    images, tensors = fixed_inputs(manifest, samples)
    data = ((manifest.get("quantization") or {}).get("calibration") or {}).get("data")
    if data and not manifest["preprocessing"].get("baked_in"):
        tensors = data_inputs(manifest, data, samples)
    feeds = images if manifest["preprocessing"].get("baked_in") else [t.numpy() for t in tensors]
    return tensors, feeds


def compare_modules(
    path: str | Path,
    manifest: dict,
    model: nn.Module,
    samples: int = 2,
    target: Target | None = None,
) -> dict:
    """Module-by-module comparison of the artifact at `path` with `model` (prepared for export)."""
    target = target or get_target(manifest["target"])
    _check_runnable(target, manifest, path)
    tensors, feeds = inputs_for(manifest, samples)
    order, before = _order(model, tensors[0])
    refs = [{module_path(k): v for k, v in module_outputs(model, t).items()} for t in tensors]
    gots = []
    for f in feeds:
        got = target.capture(Path(path), manifest, f, model=model)
        if got is None:
            raise DebugError(
                f"{target.title or target.name} gives no intermediate values of '{path}' here; `edgekit debug` covers "
                "onnx, tflite and executorch artifacts (coreml on macOS) compiled by this edgekit (older ones carry no "
                "module scopes: compile again)"
            )
        gots.append(got)
    tol = target.tolerance_for(manifest)
    folded = _folded_batchnorms(model, before, gots)
    rows: list[ModuleRow] = []
    for name in order:
        if not all(name in g and name in r for g, r in zip(gots, refs)):
            continue
        ref = folded.get(name, name)
        pairs = [(r[ref], _as_reference_layout(g[name], r[ref].shape)) for r, g in zip(refs, gots)]
        if any(b is None for _, b in pairs):
            continue
        rows.append(_row(name, [(a, b) for a, b in pairs if b is not None], tol))
    # leaves: the modules the artifact has no value inside of (not the whole model, where a runtime names its output)
    leaves = [r for r in rows if r.module != WHOLE and not any(o.module.startswith(r.module + ".") for o in rows)]
    leaf_rows = {r.module: r for r in leaves}
    for r in rows:
        prev = _input_row(r.module, order, before, leaf_rows)
        r.added = r.rel_error - (prev.rel_error if prev else 0.0)
    if not any(r.module != WHOLE for r in rows):
        raise DebugError(f"no module of the model has a value in '{path}' to compare: {target.capture_hint(manifest)}")
    first = next((r for r in rows if r.breach), None)
    worst = sorted(leaves, key=lambda r: r.added, reverse=True)[:5]
    quantized = bool((manifest.get("quantization") or {}).get("scheme"))
    return {
        "artifact": str(path),
        "target": manifest["target"],
        "quantized": quantized,
        "samples": len(tensors),
        "tolerance": tol.to_dict(),
        "modules_compared": len(rows),
        "modules_in_model": len(order),
        "first_breach": asdict(first) if first else None,
        "worst_added": [asdict(r) for r in worst],
        "float_layer_args": [f"--float-layer {r.module}" for r in worst if r.added > 0] if quantized else [],
        "rows": [asdict(r) for r in rows],
    }


def debug(
    artifact: str | Path,
    model: str | nn.Module | None = None,
    *,
    weights: str | Path | None = None,
    samples: int = 2,
) -> dict:
    """`edgekit debug`: the module-by-module comparison of `artifact` with its model (see the module doc)."""
    if not 1 <= int(samples) <= 64:
        raise EdgekitError(f"--samples {samples} is out of range; give 1 to 64")
    manifest = read_manifest(artifact)
    _check_runnable(get_target(manifest["target"]), manifest, artifact)  # before the model is rebuilt
    net = prepare_for_export(reference_model(artifact, manifest, model, weights))
    return compare_modules(artifact, manifest, net, samples=samples)


def _check_runnable(target: Target, manifest: dict, path: str | Path) -> None:
    reason = target.runnable(manifest)
    if reason:
        raise DebugError(f"cannot run '{path}' here: {reason}")


def first_diverging(path: str | Path, manifest: dict, model: nn.Module, target: Target) -> str | None:
    """For a verification breach's message: `first diverging module M (cosine C)`, or None where the runtime
    cannot say (no intermediate values) or every module agrees within tolerance."""
    try:
        result = compare_modules(path, manifest, model, samples=1, target=target)
    except EdgekitError:
        return None
    first = result["first_breach"]
    if first is None:
        return None
    return (
        f"first diverging module {first['module']} (cosine {first['cosine']:.4f}, max abs error {first['max_abs']:.3g})"
    )


def _order(model: nn.Module, x: torch.Tensor) -> tuple[list[str], dict[str, str]]:
    """Module paths in the order they finish, and for each the module that finished last before it started."""
    finished: list[str] = []
    before: dict[str, str] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name:
            continue
        path = module_path(name)

        def pre(_m, _i, path=path):
            if path not in before:
                before[path] = finished[-1] if finished else ""

        def post(_m, _i, _o, path=path):
            if path not in finished:
                finished.append(path)

        hooks.append((m, pre, post))
    hooked_forward(model, x, hooks)
    return finished, before


def _folded_batchnorms(model: nn.Module, before: dict[str, str], gots: list[dict]) -> dict[str, str]:
    """{convolution: the BatchNorm folded into it}: a BatchNorm the artifact has no value of, run right after a
    convolution (its input), was folded into that convolution's op (PT2E quantization folds them before lowering),
    so the value the artifact has under the convolution's name is the BatchNorm's output."""
    modules = {module_path(name): m for name, m in model.named_modules()}
    folded = {}
    for path, m in modules.items():
        conv = before.get(path, "")
        if (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and isinstance(modules.get(conv), nn.modules.conv._ConvNd)
            and not any(path in g for g in gots)
        ):
            folded[conv] = path
    return folded


def _input_row(name: str, order: list[str], before: dict[str, str], leaves: dict[str, ModuleRow]) -> ModuleRow | None:
    """The compared leaf module nearest before `name` started, whose error `name`'s output carries in: the module
    that finished just before it, or the last compared leaf that finished before that (where the artifact has no
    value of it: a convolution folded into its BatchNorm, a Dropout, a container). Leaves only, so that the errors
    added along a chain of leaves sum to the last one's; a container's value can be one its runtime fused across
    its end (ONNX Runtime's quantizer drops a Clip into the quantization range). None for the first module."""
    prev = before.get(name, "")
    if not prev:
        return None
    for m in reversed(order[: order.index(prev) + 1]):
        if m in leaves:
            return leaves[m]
    return None


def _as_reference_layout(got: np.ndarray, shape: tuple) -> np.ndarray | None:
    """`got` in PyTorch's shape: as it is, or reshaped where only size-1 dims differ; else None."""
    got = np.asarray(got, dtype=np.float32)
    if got.shape == tuple(shape):
        return got
    if got.size == int(np.prod(shape)) and [d for d in got.shape if d != 1] == [d for d in shape if d != 1]:
        return got.reshape(shape)
    return None


def _row(name: str, pairs: list[tuple[np.ndarray, np.ndarray]], tol: Tolerance) -> ModuleRow:
    max_abs, cosine, snr, rel, breach = 0.0, 1.0, float("inf"), 0.0, False
    for a, b in pairs:
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        err = a64 - b64
        m = float(np.abs(err).max()) if err.size else 0.0
        na, nb, ne = float(np.linalg.norm(a64)), float(np.linalg.norm(b64)), float(np.linalg.norm(err))
        cos = float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else (1.0 if ne == 0 else 0.0)
        r = ne / na if na > 0 else (0.0 if ne == 0 else float("inf"))
        s = 20 * np.log10(na / ne) if ne > 0 and na > 0 else float("inf")
        bound = tol.atol + tol.rtol * float(np.abs(a64).max() if a64.size else 0.0)
        breach |= m > bound or cos < tol.min_cosine
        max_abs, cosine, snr, rel = max(max_abs, m), min(cosine, cos), min(snr, float(s)), max(rel, r)
    return ModuleRow(name, list(pairs[0][0].shape), max_abs, cosine, snr, rel, breach)
