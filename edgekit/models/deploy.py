"""The form a model is exported in: same outputs in evaluation mode, fewer ops and bytes."""

from __future__ import annotations

import copy
from typing import Protocol, runtime_checkable

from torch import nn

from .layers import DistilledHeadMixin
from .mobileone import reparameterize_model


@runtime_checkable
class _FusesForDeploy(Protocol):
    """A block with its own deploy-time fusion (a layer scale folded into a BatchNorm)."""

    def fuse_for_deploy(self) -> None: ...


def reparameterized(model: nn.Module) -> nn.Module:
    """MobileOne-style multi-branch blocks fused into single convolutions (in place)."""
    return reparameterize_model(model.eval())


def export_form(model: nn.Module) -> nn.Module:
    """A copy of `model` for export; the caller's model is left as it was.

    - MobileOne branches reparameterized to one conv per block;
    - layer scales folded into the BatchNorm before them (MobileViG, GreedyViG);
    - the classifier and distillation heads merged into one conv (evaluation returns their mean).
    """
    model = copy.deepcopy(model).eval()
    reparameterize_model(model)
    for m in model.modules():
        if isinstance(m, _FusesForDeploy):
            m.fuse_for_deploy()
        if isinstance(m, DistilledHeadMixin) and not m.heads_fused:
            m.fuse_heads()
    return model
