"""edgeslim as a library in a user's own PyTorch loop, used the ways users do: a compiled or
DataParallel model saved, an optimizer state loaded into a slim model, training on after surgery, a
recipe applied to a model it was not made for. Each works, or ends in one line naming the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeslim.checkpoint import load_model, make_checkpoint, save_checkpoint, save_model
from edgeslim.errors import EdgeslimError
from edgeslim.models import ModelSpec, create_model

SPEC = ModelSpec("tv:resnet18", 10, 3, (32, 32))


@pytest.mark.parametrize("wrapper", ["compile", "dataparallel", "both"])
def test_a_wrapped_model_saves_the_weights_its_architecture_loads(wrapper, tmp_path) -> None:
    """save_model of a torch.compile'd model wrote `_orig_mod.conv1.weight`..., which load_model then
    refused as "written by another model or version"; the module inside the wrapper is saved now."""
    torch.manual_seed(0)
    model = create_model(SPEC)
    wrapped = {
        "compile": lambda m: torch.compile(m),
        "dataparallel": nn.DataParallel,
        "both": lambda m: nn.DataParallel(torch.compile(m)),
    }[wrapper](model)
    loaded = load_model(save_model(tmp_path / "m.pt", wrapped, SPEC)).model
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in loaded.state_dict().items())


def test_a_file_saved_with_wrapper_prefixes_names_the_prefix(tmp_path) -> None:
    model = create_model(SPEC)
    ckpt = make_checkpoint(model, SPEC)
    ckpt["state_dict"] = {f"_orig_mod.{k}": t for k, t in ckpt["state_dict"].items()}
    path = save_checkpoint(tmp_path / "m.pt", ckpt)
    with pytest.raises(
        EdgeslimError, match=r"every saved name starts with '_orig_mod\.'.*torch\.compile"
    ) as e:
        load_model(path)
    assert "\n" not in str(e.value)
