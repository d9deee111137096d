"""Pruning: channel groups from the exported graph, pruning plans, and the methods built on them.

Methods are plug-ins (`PruningMethod`, `register_method`): the built-in ones register themselves when
their modules are imported below, in the order their names are listed (oto, magnitude, dimap).
"""

from ..models.surgery import apply_plan

# The built-in methods register themselves on import, in this order (the order `method_names()` lists them).
from . import oto, magnitude, dimap  # isort: skip  # noqa: F401
from .api import PruneResult, prune
from .graph import ChannelGraph, Group, LeftOut, PruneGraphError, analyse_channels, channel_groups
from .methods import PruningMethod, get_method, method_names, register_method, unregister_method
from .plan import make_plan, zero_channels

__all__ = [
    "METHODS",
    "PruneResult",
    "PruningMethod",
    "get_method",
    "method_names",
    "prune",
    "register_method",
    "unregister_method",
    "ChannelGraph",
    "Group",
    "LeftOut",
    "PruneGraphError",
    "analyse_channels",
    "apply_plan",
    "channel_groups",
    "make_plan",
    "zero_channels",
]


def __getattr__(name: str):
    if name == "METHODS":  # the registered methods' names (was a fixed tuple before methods were plug-ins)
        return method_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
