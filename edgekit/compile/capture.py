"""Intermediate values by module: what `edgekit debug` lines up between PyTorch and a compiled artifact.

Both sides give `{module path: value}` for the same input, a path being the user's `nn.Module` path (`stages.3.0.
grapher.fc2`; the export wrapper's `model.` prefix removed) and the value that module's output:

- PyTorch: `module_outputs`, forward hooks on every module (the first tensor a module returns), in the order the
  modules finish, which is the order `debug` reads them in ("the first module whose output breaks").
- An artifact: each target's `Target.capture`, from what its runtime can keep (ONNX Runtime: every node's output
  as an extra graph output; LiteRT: every tensor; ExecuTorch: ETDump's debug buffer). A runtime value belongs to
  the module its node was exported from (`nn_module_stack`, carried into the artifact's metadata where the converter
  keeps it); `last_value_per_module` picks, for every module and each of its parents, the last value computed
  inside it: its output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .base import EXPORT_WRAPPER_PREFIX


def module_path(path: str) -> str:
    """A module path of the exported (wrapped) model as the user's model names it."""
    return path[len(EXPORT_WRAPPER_PREFIX) :] if path.startswith(EXPORT_WRAPPER_PREFIX) else path


@torch.no_grad()
def hooked_forward(
    model: nn.Module, x: torch.Tensor, hooks: Iterable[tuple[nn.Module, Callable | None, Callable | None]]
):
    """One forward of `model` on `x` in evaluation mode with (module, pre-hook, hook) triples registered for it;
    the hooks are removed and the model's mode restored afterwards."""
    handles = []
    for m, pre, post in hooks:
        if pre is not None:
            handles.append(m.register_forward_pre_hook(pre))
        if post is not None:
            handles.append(m.register_forward_hook(post))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()


def module_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every named module's output (its first tensor) on `x`, in the order the modules finish (evaluation mode)."""
    out: dict[str, np.ndarray] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            t = _first_tensor(output)
            if t is not None and name not in out:  # a module called twice: its first call
                out[name] = t.detach().float().cpu().numpy().copy()

        return hook

    hooked_forward(model, x, [(m, None, keep(name)) for name, m in model.named_modules() if name])
    return out


def last_value_per_module(values: Iterable[tuple[str, str]]) -> dict[str, str]:
    """`(module path, value name)` pairs in execution order -> for each module and every parent of it, the name of
    the last value computed inside it (the module's output, where the module returns one tensor)."""
    last: dict[str, str] = {}
    for path, name in values:
        path = module_path(path)
        parts = path.split(".") if path else []
        for i in range(1, len(parts) + 1):
            last[".".join(parts[:i])] = name
    return last


def first_calls(values: Iterable[tuple[str, str]]) -> dict[str, str]:
    """For each module called more than once (a shared activation: `self.act(...)` twice in one forward), the last
    value of its first call, which is the one `module_outputs` keeps; `last_value_per_module` would give its last.
    Update `last_value_per_module`'s answer with this one.

    A call is a run of consecutive `(module path, value name)` pairs inside the module (pairs in execution order);
    modules with one run are left out.
    """
    first: dict[str, str] = {}
    runs: dict[str, int] = {}
    inside: set[str] = set()
    for path, name in values:
        parts = module_path(path).split(".")
        now = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        for m in now - inside:
            runs[m] = runs.get(m, 0) + 1
        for m in now:
            if runs[m] == 1:
                first[m] = name
        inside = now
    return {m: name for m, name in first.items() if runs[m] > 1}


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for o in output:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None
