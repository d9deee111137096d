"""Global magnitude pruning: unstructured (every prunable weight ranked across layers) and structured
(group norms ranked across layers), with a minimum kept per layer / group against layer collapse."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..models.surgery import tensor_at
from .graph import Group
from .methods import PruningMethod, register_method


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Conv and linear weights, minus the first conv (the RGB stem) and the classifier layers."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            names.append((name, m))
    if not names:
        return {}
    first = (
        next(n for n, m in names if isinstance(m, nn.Conv2d))
        if any(isinstance(m, nn.Conv2d) for _, m in names)
        else None
    )
    final = _final_layers(names)
    out = {}
    for name, m in names:
        if name == first or name in final or _is_classifier(name):
            continue
        out[f"{name}.weight"] = m.weight
    return out


def _final_layers(names: Sequence[tuple[str, nn.Conv2d | nn.Linear]]) -> set[str]:
    """The classifier heads by structure: the last layers (in the order the network defines them) that give as
    many outputs as the last one does (a class head and a distillation head side by side)."""
    width = lambda m: m.out_features if isinstance(m, nn.Linear) else m.out_channels  # noqa: E731
    last = width(names[-1][1])
    final = set()
    for name, m in reversed(names):
        if width(m) != last:
            break
        final.add(name)
    return final


def _is_classifier(name: str) -> bool:
    """The classifier heads by name (`head`, `fc`, ... or under `classifier`); `linear` is timm's name for every
    layer inside its norm wrappers, so it is a head only where the structure says so (`_final_layers`)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("head", "dist_head", "fc", "classifier") or name.startswith("classifier")


@torch.no_grad()
def magnitude_unstructured(model: nn.Module, ratio: float, min_keep: float = 0.05) -> dict[str, float]:
    """Zero the `ratio` smallest-magnitude prunable weights, ranked globally; each layer keeps at least
    `min_keep` of its weights. Returns the sparsity reached per layer."""
    weights = prunable_weights(model)
    scores = torch.cat([w.abs().flatten() for w in weights.values()])
    k = int(ratio * scores.numel())
    if k == 0:
        return {n: 0.0 for n in weights}
    threshold = torch.kthvalue(scores, k).values
    sparsity = {}
    for name, w in weights.items():
        mask = w.abs() > threshold
        floor = max(1, math.ceil(min_keep * w.numel()))
        if int(mask.sum()) < floor:  # layer collapse guard: keep this layer's largest weights
            keep = w.abs().flatten().topk(floor).indices
            mask = torch.zeros(w.numel(), dtype=torch.bool)
            mask[keep] = True
            mask = mask.view_as(w)
        w.mul_(mask)
        sparsity[name] = 1.0 - float(mask.float().mean())
    return sparsity


def group_scores(model: nn.Module, group: Group) -> torch.Tensor:
    """L2 norm per channel over every producer and pass-through slice of the group."""
    total = torch.zeros(group.size)
    for e in group.entries:
        if e.role == "in" or "running" in e.fqn:
            continue
        _, _, t = tensor_at(model, e.fqn)
        total += e.rows(t.detach(), group.size).pow(2).sum(1)
    return total.sqrt()


def magnitude_structured(
    model: nn.Module,
    groups: list[Group],
    ratio: float,
    min_keep: float = 0.1,
    scores: dict[int, torch.Tensor] | None = None,
) -> dict[int, list[int]]:
    """Keep-lists per group: channels ranked across groups by their (size-normalised) norm, the lowest
    `ratio` of all channels dropped; each group keeps at least `min_keep` of its channels."""
    scores = scores or {g.id: group_scores(model, g) for g in groups}
    normed = {gid: s / (s.mean() + 1e-12) for gid, s in scores.items()}  # groups of different scales compare
    everything = torch.cat([normed[g.id] for g in groups])
    n_drop = int(ratio * everything.numel())
    keep: dict[int, list[int]] = {}
    threshold = torch.kthvalue(everything, n_drop).values if n_drop > 0 else None
    for g in groups:
        s = normed[g.id]
        kept = torch.arange(g.size) if threshold is None else torch.nonzero(s > threshold).flatten()
        floor = max(1, int(round(min_keep * g.size)))
        if kept.numel() < floor:
            kept = s.topk(floor).indices.sort().values
        keep[g.id] = kept.tolist()
    return keep


class Magnitude(PruningMethod):
    """Global magnitude: unstructured by |w| ranked across layers, structured by the channels' L2 norms."""

    name = "magnitude"
    sparsity_unit = "layer"

    def group_scores(self, net: nn.Module, groups: list[Group]) -> dict[int, torch.Tensor]:
        return {g.id: group_scores(net, g) for g in groups}

    def unstructured(self, net: nn.Module, ratio: float) -> dict[str, float]:
        return magnitude_unstructured(net, ratio)


register_method(Magnitude())
