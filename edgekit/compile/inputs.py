"""The inputs verification and `edgekit debug` run an artifact and its model on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import load_dataset
from ..errors import ArtifactError
from ..models import check_trusted, load_model

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


def reference_model(artifact: str | Path, manifest: dict, model: str | nn.Module | None, weights) -> nn.Module:
    """The model an artifact is compared with: `model` (a module, or a reference the user typed), else the one its
    manifest names (trusted only if it is no code, or the user opted in)."""
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
    return model
