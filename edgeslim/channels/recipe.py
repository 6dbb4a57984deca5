"""Surgery recipes: the kept channel indices of every shrunk layer, as plain JSON.

A recipe is what a checkpoint stores to rebuild a slim model from the dense spec::

    {"format": "edgeslim.recipe", "version": 1,
     "layers": {"layer1.0.conv1": {"type": "Conv2d", "in": [...], "out": [...], "bias": false},
                "layer1.0.bn1":   {"type": "BatchNorm2d", "keep": [...]},
                "fc":             {"type": "Linear", "in": [...], "out": null, "bias": false}}}

``in``/``out``/``keep`` index the *dense* layer (``null``: dimension unchanged); ``bias``
says a bias was added by folding (the dense layer had none); ``widths`` (written since it was added,
absent in older recipes, which still load) holds the dense layer's size along each dimension they
index (``{"in": 64, "out": 128}``), by which :func:`apply_recipe` refuses a model it does not fit. :func:`shrink_layer` is the only
code that resizes layers; surgery uses it with real weights, :func:`apply_recipe` with the
freshly initialised weights of a dense model (the checkpoint's state_dict is loaded after).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import torch
from torch import nn

from edgeslim.channels import ops, rules
from edgeslim.errors import EdgeslimError
from edgeslim.utils.modes import uncompiled

FORMAT = "edgeslim.recipe"
VERSION = 1
#: recipe entry type of a per-channel parameter used in ``forward`` (layer scale), named
#: ``module.attribute``: ``{"type": "Parameter", "dim": channel axis, "keep": [...]}``
PARAMETER = "Parameter"
#: the recipe entry key a layer touch of the channel graph (``Touch.kind``) sets: ``in``/``out``
#: index a layer's input/output channels, ``keep`` a per-channel layer's (BN, a custom rule's)
ENTRY_KEY = {
    "conv_in": "in",
    "linear_in": "in",
    "conv_out": "out",
    "linear_out": "out",
    "dw": "out",
    "bn": "keep",
    "custom_in": "in",
    "custom_out": "out",
    "custom": "keep",
}


#: kept indices: a JSON list, or a tensor (surgery passes its own)
Index: TypeAlias = "list[int] | torch.Tensor | None"
#: the channels-last memory format of a 4-D (2-d conv) and a 5-D (3-d conv) weight
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _take(t: torch.Tensor | None, idx: Index, dim: int = 0) -> torch.Tensor | None:
    if t is None or idx is None:
        return t
    out = t.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device))
    fmt = _CHANNELS_LAST.get(t.dim())
    if fmt is not None and not t.is_contiguous() and t.is_contiguous(memory_format=fmt):
        out = out.contiguous(memory_format=fmt)  # a channels_last model stays one
    return out


def _as_list(idx: Index) -> list[int] | None:
    return idx.tolist() if isinstance(idx, torch.Tensor) else idx


def _param(t: torch.Tensor | None, like: nn.Parameter | None) -> nn.Parameter | None:
    if t is None:
        return None
    return nn.Parameter(t, requires_grad=like.requires_grad if like is not None else True)


def shrink_layer(m: nn.Module, entry: dict[str, Any]) -> None:
    """Resize one layer in place to the kept indices of ``entry`` (see module docstring; the
    indices may also be tensors)."""
    if isinstance(m, ops.CONV_MODULES):
        out_idx, in_idx = entry.get("out"), entry.get("in")
        ipg, opg = m.in_channels // m.groups, m.out_channels // m.groups
        w = _take(m.weight, out_idx, 0)
        b = _take(m.bias, out_idx, 0)
        if entry.get("bias") and b is None:
            b = torch.zeros(w.shape[0], dtype=w.dtype)
        if m.groups > 1 and ipg == 1:  # depthwise: in channels follow the kept groups
            n_out = w.shape[0]
            m.groups = n_out // opg
            m.in_channels = m.groups
        elif in_idx is not None:
            local = torch.as_tensor(in_idx, dtype=torch.long)  # sorted (the kept indices of one group)
            if m.groups > 1:
                local = torch.unique(local % ipg)
            if local.numel() * m.groups != len(in_idx):
                raise EdgeslimError(f"recipe for {entry.get('name', 'a grouped conv')} keeps unequal groups")
            w = _take(w, local, 1)
            m.in_channels = len(in_idx)
        m.out_channels = w.shape[0]
        m.weight = _param(w, m.weight)
        m.bias = _param(b, m.bias)
    elif isinstance(m, ops.CONV_TRANSPOSE_MODULES):  # weight (in, out, k...); groups 1 (the graph's rule)
        w = _take(_take(m.weight, entry.get("in"), 0), entry.get("out"), 1)
        b = _take(m.bias, entry.get("out"), 0)
        if entry.get("bias") and b is None:
            b = torch.zeros(w.shape[1], dtype=w.dtype)
        m.in_channels, m.out_channels = w.shape[0], w.shape[1]
        m.weight = _param(w, m.weight)
        m.bias = _param(b, m.bias)
    elif isinstance(m, ops.LINEAR_MODULES):
        w = _take(_take(m.weight, entry.get("out"), 0), entry.get("in"), 1)
        b = _take(m.bias, entry.get("out"), 0)
        if entry.get("bias") and b is None:
            b = torch.zeros(w.shape[0], dtype=w.dtype)
        m.out_features, m.in_features = w.shape
        m.weight = _param(w, m.weight)
        m.bias = _param(b, m.bias)
    elif isinstance(m, ops.BN_MODULES):
        keep = entry.get("keep")
        if keep is None:
            return
        m.num_features = len(keep)
        if m.affine:
            m.weight = _param(_take(m.weight, keep), m.weight)
            m.bias = _param(_take(m.bias, keep), m.bias)
        if m.track_running_stats and m.running_mean is not None:
            m.running_mean = _take(m.running_mean, keep)
            m.running_var = _take(m.running_var, keep)
    elif (rule := rules.rule_for(m)) is not None and not rule.is_leaf:
        keep_in = _as_list(entry.get("in", entry.get("keep")))
        keep_out = _as_list(entry.get("out", entry.get("keep")))
        if rule.shrink is not None:  # (a pass-through module without one has nothing to resize)
            rule.shrink(m, keep_in, keep_out)
    else:
        raise EdgeslimError(
            f"the recipe resizes a {type(m).__name__}, a layer type with no channel rule in this process: register "
            "its rule (edgeslim.channels.rules.register_channel_rule) where the module is defined, so that loading imports "
            "it, and load again (without the rule the recipe cannot be applied)"
        )


def shrink_parameter(parent: nn.Module, attr: str, entry: dict[str, Any]) -> None:
    """Slice the per-channel parameter/buffer ``attr`` of ``parent`` to ``entry["keep"]``."""
    keep = entry.get("keep")
    t = getattr(parent, attr, None)
    if keep is None:
        return
    if not isinstance(t, torch.Tensor):
        raise EdgeslimError(f"recipe names parameter {attr!r}, which {type(parent).__name__} does not have")
    new = _take(t, keep, int(entry.get("dim", 0)))
    if attr in parent._parameters:
        setattr(parent, attr, _param(new, t))
    elif attr in parent._buffers:
        parent._buffers[attr] = new
    else:
        setattr(parent, attr, new)


def entry_widths(target: nn.Module | torch.Tensor, entry: dict[str, Any]) -> dict[str, int] | None:
    """The sizes of ``target`` (a layer, or a per-channel parameter) along the dimensions a recipe
    entry's ``in``/``out``/``keep`` index; None for a module of a user's channel rule (not checked)."""
    if isinstance(target, torch.Tensor):
        return {"keep": int(target.shape[int(entry.get("dim", 0))])}
    if isinstance(target, (*ops.CONV_MODULES, *ops.CONV_TRANSPOSE_MODULES)):
        return {"in": int(target.in_channels), "out": int(target.out_channels)}
    if isinstance(target, ops.LINEAR_MODULES):
        return {"in": int(target.in_features), "out": int(target.out_features)}
    if isinstance(target, ops.BN_MODULES):
        return {"keep": int(target.num_features)}
    return None


class RecipeMismatch(EdgeslimError):
    """A recipe that does not fit the model it is applied to; ``fact``: what differs, in words, without a
    cause (a loader that knows the cause, a changed file, says its own)."""

    def __init__(self, message: str, *, fact: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.fact = fact


def _check_fits(name: str, target: nn.Module | torch.Tensor, entry: dict[str, Any]) -> None:
    """Refuse a layer whose widths are not those of the dense layer the recipe entry was made from
    (its ``widths``; an older recipe without them: an index it keeps that the layer does not have)."""
    have = entry_widths(target, entry)
    if have is None:
        return
    want = entry.get("widths")
    if want is not None:
        bad = any(have.get(k, v) != v for k, v in want.items())
        pruned = all(have.get(k, v) <= v for k, v in want.items())
        detail = f"where the recipe's dense layer has {dict(want)}"
    else:  # (the largest index the recipe keeps must be in the layer)
        tops = {k: max(entry[k]) for k in ("in", "out", "keep") if entry.get(k) and k in have}
        over = next(((k, top) for k, top in tops.items() if top >= have[k]), None)
        bad, pruned = over is not None, True
        detail = f"and the recipe keeps its {over[0]!r} index {over[1]}" if over else ""
    if bad:
        cause = (
            "the model is already pruned (a model load_model returns has its recipe applied)"
            if pruned
            else "the model is another architecture (or has other classes or input channels) than the recipe's"
        )
        fact = f"layer {name!r} has widths {have}, {detail}"
        raise RecipeMismatch(
            f"the recipe does not fit the model: {fact}; {cause}: apply the recipe to a dense model of the "
            "architecture it was made for",
            fact=fact,
            param="model",
        )


def apply_recipe(model: nn.Module, recipe: dict[str, Any]) -> nn.Module:
    """Shrink ``model`` (a dense model of the recipe's spec) in place to the recipe; returns it.

    Every layer is checked first (it exists, has the recipe's type and its dense widths): a model the
    recipe does not fit (an already pruned one, another architecture) is refused unchanged."""
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise EdgeslimError(
            "checkpoint recipe is not an edgeslim surgery recipe; prune the dense model again"
        )
    if int(recipe.get("version", 0)) > VERSION:
        raise EdgeslimError(
            f"recipe version {recipe.get('version')} is newer than this edgeslim ({VERSION}); upgrade edgeslim"
        )
    mods = dict(uncompiled(model).named_modules())  # (a compiled wrapper: its module, as surgery names it)
    layers = recipe.get("layers", {})
    for name, entry in layers.items():  # (all checked before any layer is resized)
        if entry.get("type") == PARAMETER:
            parent, _, attr = name.rpartition(".")
            if parent not in mods:
                fact = f"recipe names parameter {name!r}, which the model does not have"
                raise RecipeMismatch(f"{fact}; wrong spec?", fact=fact)
            if isinstance(t := getattr(mods[parent], attr, None), torch.Tensor):
                _check_fits(name, t, entry)
            continue
        if name not in mods:
            fact = f"recipe names layer {name!r}, which the model does not have"
            raise RecipeMismatch(f"{fact}; wrong spec?", fact=fact)
        m = mods[name]
        if type(m).__name__ != entry.get("type"):
            fact = f"recipe expects {name!r} to be {entry.get('type')}, found {type(m).__name__}"
            raise RecipeMismatch(fact, fact=fact)
        _check_fits(name, m, entry)
    for name, entry in layers.items():
        if entry.get("type") == PARAMETER:
            parent, _, attr = name.rpartition(".")
            shrink_parameter(mods[parent], attr, entry)
        else:
            shrink_layer(mods[name], entry)
    rules.update_widths(uncompiled(model))
    return model


def compose_recipes(first: dict[str, Any] | None, second: dict[str, Any]) -> dict[str, Any]:
    """The recipe of applying ``second`` to a model already shrunk by ``first``."""
    if not first:
        return second
    layers = {k: dict(v) for k, v in first.get("layers", {}).items()}
    for name, e in second.get("layers", {}).items():
        # (a layer the first left whole: its widths then were the dense ones)
        old = layers.get(name, {k: v for k, v in e.items() if k in ("type", "dim", "widths")})
        new = dict(old)
        for key in ("in", "out", "keep"):
            if e.get(key) is not None:
                new[key] = [old[key][i] for i in e[key]] if old.get(key) is not None else list(e[key])
        new["bias"] = bool(old.get("bias") or e.get("bias"))
        layers[name] = new
    return {"format": FORMAT, "version": VERSION, "layers": layers}
