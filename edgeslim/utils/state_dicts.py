"""State dicts as wrappers save them: the marks DataParallel, ``torch.compile`` and
``AveragedModel`` put in parameter names, and the forms a loader tries to match a model's own."""

from __future__ import annotations

from typing import Any

#: keys under which a training script's checkpoint dict keeps the exponential moving average of its model,
#: a whole module or its state_dict (read as the weights only where the dict holds no other model)
EMA_KEYS = ("ema", "model_ema")

#: key prefixes added by wrappers (DistributedDataParallel, torch.compile)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def without_wrappers(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the marks wrappers put in every name: see :func:`unwrapped_forms`."""
    return unwrapped_forms(state_dict)[-1]


def unwrapped_forms(state_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """``state_dict`` as saved, then after each wrapper's mark is removed in turn: ``torch.compile``'s
    ``._orig_mod.`` inside the names of a submodule compiled in place; a ``torch.optim.swa_utils.
    AveragedModel``'s (EMA/SWA) ``n_averaged`` count; the prefix a wrapper puts before every name,
    DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.``, nested (``_orig_mod.module.``). A prefix
    only some names carry is a submodule's name, kept. A loader that knows the architecture takes the
    first form whose names are its own (a model whose own submodule is named ``module``)."""
    sd, forms = state_dict, [state_dict]
    if any("._orig_mod." in k for k in sd):
        sd = {k.replace("._orig_mod.", "."): v for k, v in sd.items()}
        forms.append(sd)
    if "n_averaged" in sd and len(sd) > 1 and all(k.startswith("module.") for k in sd if k != "n_averaged"):
        sd = {k: v for k, v in sd.items() if k != "n_averaged"}
    while sd and (cut := next((w for w in WRAPPER_PREFIXES if all(k.startswith(w) for k in sd)), None)):
        sd = {k[len(cut) :]: v for k, v in sd.items()}
        forms.append(sd)
    return forms
