"""DIMAP: data-free, module-aware pruning (score = w² / sum of squares of the weights at least as large).

Per layer, weights are sorted by magnitude, largest first; a weight's score is its square over the
cumulative sum of squares up to and including it, so the largest weight scores 1 and the score falls
as a weight's share of the layer's energy shrinks. Scores are ranked within a *module* and one threshold
per module prunes the asked fraction of that module. The modules, after the paper's (QKV-M, PRJ-M, MLP-M,
AUX-M): in an attention block, the query/key/value layers are one module and the output projection another;
any other block (an inverted residual, a graph block, an FFN such as fc1 + fc2, an SE) is one module; the
layers that stand alone (stem convs after the first, downsampling, head convs) together form the auxiliary
module. Every prunable weight (`magnitude.prunable_weights`: each Conv2d and Linear wherever it sits, but the
first conv and the classifier) is in exactly one module, so `ratio` of them is zeroed.
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


# child names of an attention block's query/key/value projections and of its output projection (timm, torchvision,
# Hugging Face, LeViT, MobileViT, EfficientViT and MobileNetV4 spellings)
_QKV_NAMES = frozenset(
    {"qkv", "qk", "kv", "q", "k", "v", "query", "key", "value", "to_qkv", "to_q", "to_k", "to_v", "to_kv"}
    | {"in_proj", "q_proj", "k_proj", "v_proj", "qkv_proj"}
)
_PROJ_NAMES = frozenset({"proj", "out_proj", "o_proj", "output", "dense", "to_out", "c_proj"})

AUXILIARY = "<auxiliary>"
"""The module of the layers that stand alone (stem convs after the first, downsampling, head convs)."""


def _n_prunable(m: nn.Module) -> int:
    return sum(isinstance(x, (nn.Conv2d, nn.Linear)) for x in m.modules())


def _is_container(m: nn.Module) -> bool:
    """A list of blocks (a stage), as opposed to a block made of layers (conv-BN-act units count as layers).

    A Sequential or ModuleList is a stage when at least as many of its children are blocks (two layers or more)
    as are single layers: a stage may open with a downsampling layer, and a block may hold one sub-block (the SE
    of an inverted residual or a RegNet bottleneck) among its layers.
    """
    if not isinstance(m, (nn.Sequential, nn.ModuleList)):
        return False
    sizes = [_n_prunable(c) for c in m.children()]
    blocks = sum(n >= 2 for c, n in zip(m.children(), sizes) if not isinstance(c, _LEAVES))
    return blocks >= 1 and blocks >= sum(n == 1 for n in sizes)


def _attention_modules(model: nn.Module) -> dict[str, tuple[list[str], list[str]]]:
    """Attention blocks: name -> (its query/key/value children, its output projection children), both non-empty."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        held = [(n, c) for n, c in m.named_children() if _n_prunable(c)]
        qkv = [n for n, _ in held if n in _QKV_NAMES]
        proj = [n for n, _ in held if n in _PROJ_NAMES]
        if qkv and proj:
            out[name] = (qkv, proj)
    return out


def _attention_module(attention: dict[str, tuple[list[str], list[str]]], layer: str) -> str | None:
    """The QKV or PRJ module of the innermost attention block `layer` sits in (as one of those children)."""
    parts = layer.split(".")
    for i in range(len(parts) - 1, -1, -1):
        anc = ".".join(parts[:i])
        if anc in attention:
            qkv, proj = attention[anc]
            prefix = f"{anc}." if anc else ""
            if parts[i] in qkv:
                return prefix + "+".join(qkv)
            if parts[i] in proj:
                return prefix + "+".join(proj)
    return None


def modules_of(model: nn.Module, auxiliary: bool = False) -> dict[str, list[str]]:
    """Prunable weights grouped by module (module name -> weight names, in the model's order).

    In an attention block, the layers under its query/key/value children are one module (named after them:
    `attn.qkv`, `attn.kv+q`) and those under its output projection another (`attn.proj`). Any other layer's
    module is the nearest ancestor block holding at least two layers. A layer whose nearest such ancestor is a
    stage list or the model itself stands alone (stem, downsampling, head): with `auxiliary`, those layers are
    one more module, `AUXILIARY`; without, they are left out.
    """
    weights = prunable_weights(model)
    layer_names = [n.rsplit(".", 1)[0] for n in weights]
    counts: dict[str, int] = defaultdict(int)
    for ln in layer_names:
        parts = ln.split(".")
        for i in range(len(parts)):
            counts[".".join(parts[:i])] += 1
    attention = _attention_modules(model)
    groups: dict[str, list[str]] = defaultdict(list)
    alone = []
    for wname, ln in zip(weights, layer_names):
        attn = _attention_module(attention, ln)
        if attn is not None:
            groups[attn].append(wname)
            continue
        parts = ln.split(".")
        for i in range(len(parts) - 1, -1, -1):
            anc = ".".join(parts[:i])
            if counts[anc] >= 2:
                mod = model.get_submodule(anc) if anc else model
                if isinstance(mod, nn.ModuleList) and not _is_container(mod):
                    continue  # parallel branches (MobileOne): the block around them is the module
                if anc and not _is_container(mod):
                    groups[anc].append(wname)
                else:
                    alone.append(wname)
                break
        else:
            alone.append(wname)
    if auxiliary and alone:
        groups[AUXILIARY] = alone
    return dict(groups)


@torch.no_grad()
def dimap_unstructured(model: nn.Module, ratio: float) -> dict[str, float]:
    """Zero `ratio` of each module's weights (the auxiliary module's too), lowest DIMAP score first. Returns the
    sparsity per module."""
    report = {}
    for mod, names in modules_of(model, auxiliary=True).items():
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
            total += e.rows(layer_scores(t), g.size).mean(1)
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
