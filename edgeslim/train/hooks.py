"""Training hooks: the protocol lives in :mod:`edgeslim.channels.hooks` (re-exported here)."""

from edgeslim.channels.hooks import HookList, TrainHook

__all__ = ["HookList", "TrainHook"]
