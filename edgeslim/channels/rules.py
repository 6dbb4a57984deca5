"""User channel rules: how surgery sees a module type it should not (or cannot) trace into.

A rule makes every instance of a module type one opaque step of the channel graph whose
channel coupling the user states, and says how to resize the module when channels go::

    from edgeslim.surgery import ChannelRule, register_channel_rule

    def shrink_gain(m: Gain, keep_in, keep_out):  # channel-wise: keep_in == keep_out
        m.g = nn.Parameter(m.g.detach()[keep_in].clone())

    register_channel_rule(Gain, ChannelRule(pass_through=True, keeps_constant=True, shrink=shrink_gain))

``pass_through=True``: output channel i is input channel i (a per-channel op, or a gate that
scales each channel: then ``keeps_constant`` stays False); the input and output channels are one
unit. Otherwise the module is a layer: its input channels are read (a
channel can be removed only when it is exactly zero there) and its output channels are new
ones that can be removed too. ``shrink(module, keep_in, keep_out)`` gets the kept indices of
the dense module (``None``: that side unchanged); a pass-through module with nothing to resize
(no per-channel parameters: a clamp, a custom activation) needs none. :func:`register_leaf` marks
a type as opaque without a rule: its channels are kept.

A module that keeps a channel count of its own beside its layers (ultralytics' ``C2f`` keeps
``self.c``, half its ``cv1``'s outputs, for the ``split`` of the ``forward_split`` its exporter
switches to; ultralytics' blocks come from :func:`edgeslim.models.yolo.block_widths`, a user's own
types from :func:`register_widths`) says how to read it back from them; surgery and
:func:`~edgeslim.channels.recipe.apply_recipe` call :func:`update_widths` after resizing layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from edgeslim.errors import EdgeslimError

ShrinkFn = Callable[[nn.Module, "list[int] | None", "list[int] | None"], None]
#: sets a module's own record of its channel counts from its (resized) layers
WidthsFn = Callable[[nn.Module], None]


@dataclass(frozen=True)
class ChannelRule:
    """Channel behaviour of a user module type (see the module docstring)."""

    shrink: ShrinkFn | None = None
    pass_through: bool = False
    #: pass_through only: a channel that is exactly zero at the input is zero at the output
    keeps_zero: bool = True
    #: pass_through only: a channel that is one input-independent constant at the input (a removed
    #: channel's BN shift) is one at the output, as a pointwise per-channel op (a gain, an activation)
    #: keeps it; False (the default): it may vary (a gate computed from all channels, as an SE's), so
    #: such a channel is kept unless it is exactly zero
    keeps_constant: bool = False

    @property
    def is_leaf(self) -> bool:
        """A layer rule with no way to resize the module: its channels are kept (:func:`register_leaf`)."""
        return self.shrink is None and not self.pass_through


_RULES: dict[type, ChannelRule] = {}


def register_channel_rule(cls: type[nn.Module], rule: ChannelRule) -> None:
    """Treat every ``cls`` instance (and subclass) as one step with the channel coupling of ``rule``."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise EdgeslimError(f"register_channel_rule needs an nn.Module subclass, got {cls!r}")
    _RULES[cls] = rule


def register_leaf(cls: type[nn.Module]) -> None:
    """Do not trace into ``cls``: its input and output channels are kept (a barrier)."""
    register_channel_rule(cls, ChannelRule(shrink=None))


def unregister(cls: type[nn.Module]) -> None:
    """Forget the rule of ``cls`` (no error when there is none)."""
    _RULES.pop(cls, None)


def rule_for(m: nn.Module) -> ChannelRule | None:
    """The rule of ``m``'s type (the most specific registered base class), or None."""
    for cls in type(m).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


_WIDTHS: dict[type, WidthsFn] = {}


def register_widths(cls: type[nn.Module], fn: WidthsFn) -> None:
    """After surgery resizes layers inside a ``cls`` instance (or a subclass's), ``fn(module)`` sets
    the channel counts the module keeps itself from its layers' new sizes."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise EdgeslimError(f"register_widths needs an nn.Module subclass, got {cls!r}")
    _WIDTHS[cls] = fn


def update_widths(model: nn.Module) -> None:
    """Set the channel counts each module of ``model`` keeps itself from its layers (see
    :func:`register_widths`), after surgery or a recipe resized them."""
    from edgeslim.models.yolo import block_widths

    widths = {**block_widths(), **_WIDTHS}  # (a user's registration wins)
    for m in model.modules():
        fn = next((widths[c] for c in type(m).__mro__ if c in widths), None)
        if fn is not None:
            fn(m)
