"""Pruning plans: which channels of each group stay, and zeroing a group in place.

A plan is plain data (lists of names, dims and indices), so it lives in an edgekit checkpoint that
loads with `weights_only=True`; `edgekit.models.surgery.apply_plan` rebuilds the pruned network from
the base model and the plan, never from pickled modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.surgery import tensor_at
from .graph import Group


@torch.no_grad()
def zero_channels(model: nn.Module, group: Group, channels: list[int]) -> None:
    """Zero a group's producer and pass-through slices at `channels` (in place): OTO's zero group."""
    for e in group.entries:
        if e.role == "in" or e.fqn.endswith("running_var"):
            continue
        _, _, t = tensor_at(model, e.fqn)
        t.index_fill_(e.dim, torch.as_tensor(e.positions(channels), dtype=torch.long), 0.0)


def make_plan(groups: list[Group], keep: dict[int, list[int]]) -> dict:
    """A plan keeping `keep[group.id]` (sorted channel indices) of each group; groups not named keep all."""
    out = []
    shrink: dict[tuple[str, int], int] = {}
    for g in groups:
        kept = sorted({int(i) for i in keep.get(g.id, range(g.size))})
        if not kept:
            raise ValueError(f"group {g.id} would lose every channel")
        if len(kept) < g.size:
            out.append({**g.to_dict(), "keep": kept})
            for module, size, per_unit in g.sizes:
                shrink[(module, size)] = shrink.get((module, size), 0) + per_unit * (g.size - len(kept))
    # the numbers the modules hold that change with the channels (a head count, a split's part): old -> new
    sizes = [[module, size, size - n] for (module, size), n in sorted(shrink.items()) if n]
    return {"format": "edgekit-plan/2", "groups": out, "sizes": sizes}
