"""The export form every target converts: the model with its training-time branches folded, one tensor out."""

from __future__ import annotations

import torch
from torch import nn

from ..models.deploy import export_form
from .base import CompileOptions


class ExportWrapper(nn.Module):
    """Gives exporters one tensor out: the first element where a model returns a tuple or list."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy in export form (`edgekit.models.deploy.export_form`) with a single tensor output."""
    return ExportWrapper(export_form(model)).eval()


def example_input(opts: CompileOptions, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, opts.in_chans, opts.input_size, opts.input_size, generator=g)


def drop_aliases(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Remove `aten.alias` nodes, which a full-range slice (`torch.cat(...)[:, :n]` with all n channels, as
    GhostNet's module writes) becomes: in a functional graph an alias is its input, and coremltools has no
    lowering for it."""
    graph = ep.graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            changed = True
    if changed:
        graph.lint()
        ep.graph_module.recompile()
    return ep
