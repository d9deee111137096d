"""DIMAP: data-free, module-aware pruning (score = w² / sum of squares of the weights at least as large).

Per layer, weights are sorted by magnitude, largest first; a weight's score is its square over the
cumulative sum of squares up to and including it, so the largest weight scores 1 and the score falls
as a weight's share of the layer's energy shrinks. Scores are ranked within a *module* (an inverted
residual block, a graph block, an FFN, an attention block) and one threshold per module prunes the
asked fraction of that module. The stem, downsampling layers, norms and heads are auxiliary and kept.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..models.surgery import tensor_at
from .graph import Group
from .magnitude import prunable_weights
from .methods import PruningMethod, register_method

_LEAVES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm)


def layer_scores(w: torch.Tensor) -> torch.Tensor:
    """DIMAP's metric for every weight of one layer (same shape as `w`)."""
    flat = w.detach().flatten().pow(2)
    order = flat.argsort(descending=True)
    cum = flat[order].cumsum(0)
    scores = torch.empty_like(flat)
    scores[order] = flat[order] / cum.clamp_min(1e-30)
    return scores.view_as(w)


def _n_prunable(m: nn.Module) -> int:
    return sum(isinstance(x, (nn.Conv2d, nn.Linear)) for x in m.modules())


def _is_container(m: nn.Module) -> bool:
    """A list of blocks (a stage), as opposed to a block made of layers (conv-BN-act units count as layers)."""
    if not isinstance(m, (nn.Sequential, nn.ModuleList)):
        return False
    return any(not isinstance(c, _LEAVES) and _n_prunable(c) >= 2 for c in m.children())


def modules_of(model: nn.Module) -> dict[str, list[str]]:
    """Prunable weights grouped by module: the nearest ancestor block holding at least two layers.

    A layer whose nearest such ancestor is a stage list or the model itself stands alone (stem,
    downsampling, head): it is auxiliary and left out.
    """
    weights = prunable_weights(model)
    layer_names = [n.rsplit(".", 1)[0] for n in weights]
    counts: dict[str, int] = defaultdict(int)
    for ln in layer_names:
        parts = ln.split(".")
        for i in range(len(parts)):
            counts[".".join(parts[:i])] += 1
    groups: dict[str, list[str]] = defaultdict(list)
    for wname, ln in zip(weights, layer_names):
        parts = ln.split(".")
        for i in range(len(parts) - 1, -1, -1):
            anc = ".".join(parts[:i])
            if counts[anc] >= 2:
                mod = model.get_submodule(anc) if anc else model
                if isinstance(mod, nn.ModuleList) and not _is_container(mod):
                    continue  # parallel branches (MobileOne): the block around them is the module
                if anc and not _is_container(mod):
                    groups[anc].append(wname)
                break
    return dict(groups)


@torch.no_grad()
def dimap_unstructured(model: nn.Module, ratio: float) -> dict[str, float]:
    """Zero `ratio` of each module's weights, lowest DIMAP score first. Returns the sparsity per module."""
    report = {}
    for mod, names in modules_of(model).items():
        ws = [tensor_at(model, n)[2] for n in names]
        scores = torch.cat([layer_scores(w).flatten() for w in ws])
        k = int(ratio * scores.numel())
        if k == 0:
            report[mod] = 0.0
            continue
        threshold = torch.kthvalue(scores, k).values
        zeroed = 0
        for w in ws:
            mask = layer_scores(w) > threshold
            w.mul_(mask)
            zeroed += int((~mask).sum())
        report[mod] = zeroed / scores.numel()
    return report


def dimap_group_scores(model: nn.Module, groups: list[Group]) -> dict[int, torch.Tensor]:
    """Per channel of each group: the mean DIMAP score of its producer and pass-through weights."""
    out = {}
    for g in groups:
        total, count = torch.zeros(g.size), 0
        for e in g.entries:
            if e.role == "in" or "running" in e.fqn or not e.fqn.endswith("weight"):
                continue
            _, _, t = tensor_at(model, e.fqn)
            s = layer_scores(t).movedim(e.dim, 0)[e.offset : e.offset + g.size]
            total += s.reshape(g.size, -1).mean(1)
            count += 1
        out[g.id] = total / max(count, 1)
    return out


class DIMAP(PruningMethod):
    """DIMAP: unstructured per module by its score, structured by the channels' mean score."""

    name = "dimap"
    sparsity_unit = "module"

    def group_scores(self, net: nn.Module, groups: list[Group]) -> dict[int, torch.Tensor]:
        return dimap_group_scores(net, groups)

    def unstructured(self, net: nn.Module, ratio: float) -> dict[str, float]:
        return dimap_unstructured(net, ratio)


register_method(DIMAP())
