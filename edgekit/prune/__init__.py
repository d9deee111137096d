"""Pruning: channel groups from the exported graph, pruning plans, and the methods built on them."""

from .graph import ChannelGraph, Group, PruneGraphError, channel_groups
from ..models.surgery import apply_plan
from .api import METHODS, PruneResult, prune
from .plan import make_plan, zero_channels

__all__ = [
    "METHODS",
    "PruneResult",
    "prune",
    "ChannelGraph", "Group", "PruneGraphError", "apply_plan", "channel_groups", "make_plan", "zero_channels"]
