"""Numeric parity of a compiled artifact with its PyTorch source, on fixed inputs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import load_dataset
from ..errors import ArtifactError, EdgekitError, VerificationError, first_line
from ..models import check_trusted, load_model
from .base import Tolerance
from .export import prepare_for_export
from .manifest import loading, read_manifest
from .registry import Target, get_target

VERIFY_SEED = 1234


def fixed_inputs(manifest: dict, samples: int, seed: int = VERIFY_SEED) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Seeded random RGB images (uint8, NHWC) and the same images preprocessed as the model card says (NCHW)."""
    pre = manifest["preprocessing"]
    if pre.get("mean") is None or pre.get("std") is None:
        raise ArtifactError(
            "the manifest gives no preprocessing mean and std, which running the artifact needs; recompile it"
        )
    size = int(pre["size"])
    rng = np.random.default_rng(seed)
    mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
    images, tensors = [], []
    for _ in range(samples):
        # Low-frequency noise up-sampled to full size: closer to a photo than white noise.
        low = rng.integers(0, 256, size=(1, 3, max(2, size // 8), max(2, size // 8))).astype(np.float32)
        img = torch.nn.functional.interpolate(torch.from_numpy(low), size=(size, size), mode="bilinear")
        img = (img + torch.from_numpy(rng.normal(0, 12, size=img.shape).astype(np.float32))).clamp(0, 255).round()
        images.append(img[0].permute(1, 2, 0).numpy().astype(np.uint8))
        tensors.append(((img / 255.0 - mean) / std).float())
    return images, tensors


def data_inputs(manifest: dict, data: str, samples: int) -> list[torch.Tensor]:
    """The first `samples` validation images of `data`, preprocessed as the manifest says."""
    pre = manifest["preprocessing"]
    val = load_dataset(data, int(pre["size"]), pre["mean"], pre["std"]).val
    return [val.batch([i])[0] for i in range(min(samples, len(val)))]


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
    if model is None:
        reference = manifest["model"]["reference"]
        weights = weights or manifest["model"].get("weights")
        if reference is None:
            raise ArtifactError(
                f"'{artifact}' was compiled from a Python module, which its manifest cannot rebuild; "
                "pass the model (--model MODEL, or edgekit.verify(artifact, module))"
            )
        check_trusted(reference, f"the manifest of '{artifact}'")  # --model, typed by the user, needs no opt-in
        model = reference
    if isinstance(model, str):
        model = load_model(
            model,
            weights=weights,
            num_classes=manifest["model"].get("num_classes"),
            input_size=manifest["preprocessing"]["size"],
        ).model
    result = verify_artifact(artifact, manifest, prepare_for_export(model), samples=samples, threads=threads)
    if strict and result["status"] == "failed":
        raise VerificationError(f"{manifest['target']} artifact '{artifact}' differs from PyTorch: {result['summary']}")
    return result
