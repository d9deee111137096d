"""Network surgery: remove channels named by a pruning plan (plain data) from a built model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set as AbstractSet
from typing import Any

import torch
from torch import nn


def tensor_at(model: nn.Module, fqn: str) -> tuple[nn.Module, str, torch.Tensor]:
    mod_name, _, attr = fqn.rpartition(".")
    module = model.get_submodule(mod_name) if mod_name else model
    return module, attr, getattr(module, attr)


@torch.no_grad()
def apply_plan(model: nn.Module, plan: dict) -> nn.Module:
    """Remove the channels a plan drops: slice every tensor it names, then fix the layers' sizes (in place)."""
    removed: dict[tuple[str, int], set[int]] = defaultdict(set)
    for g in plan.get("groups", []):
        drop = sorted(set(range(int(g["size"]))) - {int(i) for i in g["keep"]})
        for fqn, dim, offset, _role in g["entries"]:
            removed[(fqn, int(dim))].update(int(offset) + j for j in drop)
    depthwise = {m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels}
    by_fqn: dict[str, list[tuple[int, set[int]]]] = defaultdict(list)
    for (fqn, dim), idx in removed.items():
        by_fqn[fqn].append((dim, idx))
    for fqn, cuts in by_fqn.items():
        module, attr, t = tensor_at(model, fqn)
        for dim, idx in cuts:
            keep = torch.tensor([i for i in range(t.shape[dim]) if i not in idx], dtype=torch.long)
            t = t.index_select(dim, keep)
        if isinstance(getattr(module, attr), nn.Parameter):
            setattr(module, attr, nn.Parameter(t.contiguous(), requires_grad=getattr(module, attr).requires_grad))
        else:
            module._buffers[attr] = t.contiguous()
    _fix_sizes(model, depthwise)
    return model


def _fix_sizes(model: nn.Module, depthwise: AbstractSet[nn.Module]) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.out_channels = m.weight.shape[0]
            if m in depthwise:
                m.groups = m.in_channels = m.out_channels
            else:
                m.in_channels = m.weight.shape[1] * m.groups
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = m.weight.shape[0] if m.weight is not None else m.running_mean.shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
    # blocks that keep their own copy of the sizes (MobileOne's reparameterization reads them)
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) and hasattr(m, "in_channels") and hasattr(m, "out_channels"):
            conv = next((c for c in m.modules() if isinstance(c, nn.Conv2d)), None)
            if conv is not None:
                block: Any = m  # its own attributes, not nn.Module's (typed for tensors and modules only)
                block.in_channels, block.out_channels = conv.in_channels, conv.out_channels
                if hasattr(block, "groups"):
                    block.groups = conv.groups
