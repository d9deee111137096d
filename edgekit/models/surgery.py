"""Network surgery: remove channels named by a pruning plan (plain data) from a built model."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Set as AbstractSet

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
        for item in g["entries"]:
            if len(item) == 4:  # edgekit-plan/1: unit j is channel offset + j
                fqn, dim, offset, _role = item
                removed[(fqn, int(dim))].update(int(offset) + j for j in drop)
            else:  # edgekit-plan/2: unit j is index[j * per:(j + 1) * per]
                fqn, dim, index, per, _role = item
                removed[(fqn, int(dim))].update(int(index[j * int(per) + k]) for j in drop for k in range(int(per)))
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
    _fix_held_sizes(model, plan.get("sizes", []))
    return model


def _fix_held_sizes(model: nn.Module, sizes: list) -> None:
    """Numbers a module holds and its forward uses to lay channels out (`self.num_heads` in a reshape, a split's
    parts): each whole-number attribute of the module equal to an old size that changed takes the new one."""
    changes: dict[str, dict[int, int]] = defaultdict(dict)
    for module, old, new in sizes:
        changes[str(module)][int(old)] = int(new)
    for path, table in changes.items():
        module = model.get_submodule(path) if path else model
        for attr, value in list(vars(module).items()):
            if type(value) is int and value in table and _plain_int_attribute(module, attr):
                setattr(module, attr, table[value])


def _fix_sizes(model: nn.Module, depthwise: AbstractSet[nn.Module]) -> None:
    # the convs' sizes before the cut, which blocks keeping a copy of them still hold
    before = {c: (c.in_channels, c.out_channels) for c in model.modules() if isinstance(c, nn.Conv2d)}
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            old_out = m.out_channels
            m.out_channels = m.weight.shape[0]
            if m.groups > 1:  # whole groups went (a depthwise conv's group is one channel)
                m.groups = max(1, m.out_channels * m.groups // old_out)
            m.in_channels = m.weight.shape[1] * m.groups
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = m.weight.shape[0] if m.weight is not None else m.running_mean.shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
    # blocks that keep their own copy of the sizes (MobileOne's reparameterization reads them): plain instance
    # attributes only; a size a block computes (a property reading its conv, as MobileNetV4's ConvNormAct) follows
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        copies = [a for a in ("in_channels", "out_channels", "groups") if _plain_int_attribute(m, a)]
        if "in_channels" not in copies or "out_channels" not in copies:
            continue
        own = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
        # the conv whose sizes the block copied (not, say, an SE's conv registered before it), else its first
        old = (vars(m)["in_channels"], vars(m)["out_channels"])
        conv = next((c for c in own if before[c] == old), own[0] if own else None)
        if conv is not None:
            sizes = {"in_channels": conv.in_channels, "out_channels": conv.out_channels, "groups": conv.groups}
            for attr in copies:
                setattr(m, attr, sizes[attr])
    # a module that overrides train() may cache tensors made from its parameters there (LeViT's attention caches
    # `ab`, its biases indexed, in eval mode): put it in its mode again to rebuild them from the sliced tensors,
    # then give every module back the mode it had (an override sets its children's too)
    modes = {m: m.training for m in model.modules()}
    for m in model.modules():
        if type(m).train is not nn.Module.train:
            m.train(modes[m])
    for m, mode in modes.items():
        m.training = mode


def _plain_int_attribute(m: nn.Module, name: str) -> bool:
    """`m.<name>` is an int held in the instance (settable), not computed by a property or other descriptor."""
    if name not in vars(m) or not isinstance(vars(m)[name], int):
        return False
    return not hasattr(type(inspect.getattr_static(type(m), name, None)), "__get__")
