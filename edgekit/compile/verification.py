"""Numeric parity of a compiled artifact with its PyTorch source, on fixed inputs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, EdgekitError, VerificationError, first_line
from .base import Tolerance
from .debugging import first_diverging
from .export import prepare_for_export
from .inputs import data_inputs, fixed_inputs, reference_model
from .manifest import loading, read_manifest
from .registry import Target, get_target


def compare(reference: list[np.ndarray], got: list[np.ndarray], tol: Tolerance) -> dict:
    ref = np.concatenate([r.reshape(1, -1) for r in reference]).astype(np.float64)
    out = np.concatenate([g.reshape(1, -1) for g in got]).astype(np.float64)
    if ref.shape != out.shape:
        return {"status": "failed", "summary": f"output shape {out.shape} differs from PyTorch's {ref.shape}"}
    err = np.abs(ref - out)
    max_abs = float(err.max())
    bound = tol.atol + tol.rtol * float(np.abs(ref).max())
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-30)
    top_ref, top_out = ref.argmax(1), out.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    decided = margin > 2 * bound  # samples whose top-1 no error within bounds could flip
    agree_all = float((top_ref == top_out).mean())
    agree_decided = float((top_ref == top_out)[decided].mean()) if decided.any() else 1.0
    # Cosine similarity means nothing for outputs that are all (near) zero: there the error bound decides.
    cosine_checked = float(np.abs(ref).max()) > 10 * bound
    checks = {
        "max_abs_err": max_abs <= bound,
        "cosine": float(cos.min()) >= tol.min_cosine or not cosine_checked,
        "top1_agreement": agree_decided >= tol.min_top1,
    }
    failed = [k for k, ok in checks.items() if not ok]
    summary = (
        f"max abs err {max_abs:.3g} (bound {bound:.3g}), min cosine {float(cos.min()):.6f} "
        f"(min {tol.min_cosine}), top-1 agreement {agree_all:.0%}"
    )
    return {
        "status": "failed" if failed else "passed",
        "failed_checks": failed,
        "summary": summary,
        "samples": int(len(ref)),
        "max_abs_err": max_abs,
        "mean_abs_err": float(err.mean()),
        "max_abs_bound": bound,
        "reference_max_abs": float(np.abs(ref).max()),
        "cosine_min": float(cos.min()),
        "cosine_checked": cosine_checked,
        "top1_agreement": agree_all,
        "top1_agreement_decided": agree_decided,
        "tolerance": tol.to_dict(),
    }


@torch.no_grad()
def verify_artifact(
    path: str | Path,
    manifest: dict,
    model: nn.Module,
    samples: int = 4,
    target: Target | None = None,
    threads: int | None = None,
) -> dict:
    """Run the artifact in its own runtime and compare with `model` (already prepared for export)."""
    target = target or get_target(manifest["target"])
    reason = target.runnable(manifest)
    if reason:
        return {"status": "skipped", "reason": reason}
    images, tensors = fixed_inputs(manifest, samples)
    inputs = "seeded smooth random images"
    data = ((manifest.get("quantization") or {}).get("calibration") or {}).get("data")
    if data and not manifest["preprocessing"].get("baked_in"):
        # A quantized program is calibrated for its data: random images would clip its activations.
        tensors = data_inputs(manifest, data, samples)
        inputs = f"the first {len(tensors)} validation images of {data}"
    reference = [model(t).numpy() for t in tensors]
    t0 = time.perf_counter()
    with loading(path, target.title or target.name, target.name):  # a plug-in target's loader too
        runner = target.load(Path(path), manifest, threads=threads)
    feeds = images if manifest["preprocessing"].get("baked_in") else [t.numpy() for t in tensors]
    with running(path, target):
        got = [runner.run(f) for f in feeds]
    result = compare(reference, got, target.tolerance_for(manifest))
    result["inputs"] = inputs
    result["runtime_seconds"] = round(time.perf_counter() - t0, 3)
    return result


@contextlib.contextmanager
def running(path: str | Path, target: Target) -> Iterator[None]:
    """Around runs of a loaded artifact: a runtime's failure (a file that loads but does not run as its manifest
    says) is one ArtifactError; an EdgekitError passes as it is."""
    try:
        yield
    except EdgekitError:
        raise
    except Exception as e:
        raise ArtifactError(
            f"'{path}' loaded but did not run in {target.title or target.name} ({first_line(e) or type(e).__name__}); "
            "the file or its manifest is damaged; compile it again"
        ) from None


def verify(
    artifact: str | Path,
    model: str | nn.Module | None = None,
    *,
    weights: str | Path | None = None,
    samples: int = 4,
    threads: int | None = None,
    strict: bool = True,
) -> dict:
    """`edgekit verify`: compare an artifact with the model it came from; raise on a breach when `strict`."""
    manifest = read_manifest(artifact)  # checks the artifact against the sha256 in its manifest
    model = reference_model(artifact, manifest, model, weights)
    prepared = prepare_for_export(model)
    result = verify_artifact(artifact, manifest, prepared, samples=samples, threads=threads)
    if result["status"] == "failed":
        where = first_diverging(artifact, manifest, prepared, get_target(manifest["target"]))
        if where:
            result["first_diverging"] = f"{where}; run edgekit debug {artifact} for the whole table"
    if strict and result["status"] == "failed":
        more = f"; {result['first_diverging']}" if result.get("first_diverging") else ""
        raise VerificationError(
            f"{manifest['target']} artifact '{artifact}' differs from PyTorch: {result['summary']}{more}"
        )
    return result
