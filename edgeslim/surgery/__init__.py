"""Channel surgery: trace a CNN, group coupled channels, physically remove zero channels.

>>> g = build_graph(model, example_input); print(g)          # coupled channel groups
>>> res = prune_with_report(model, example_input, round_to=8)  # slim model, recipe, report
>>> verify(model, res.model, inputs)                           # max |diff|, top-1 agreement
"""

from __future__ import annotations

from edgeslim.channels.graph import BNGroup, ChannelGroup, DependencyGraph, build_graph
from edgeslim.channels.recipe import apply_recipe, compose_recipes
from edgeslim.channels.rules import ChannelRule, register_channel_rule, register_leaf
from edgeslim.surgery.prune import CheckFailedError, PruneResult, prune, prune_with_report, verify

__all__ = [
    "BNGroup",
    "CheckFailedError",
    "ChannelGroup",
    "ChannelRule",
    "DependencyGraph",
    "PruneResult",
    "apply_recipe",
    "build_graph",
    "compose_recipes",
    "prune",
    "prune_with_report",
    "register_channel_rule",
    "register_leaf",
    "verify",
]
