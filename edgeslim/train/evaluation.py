"""Evaluation helpers: accuracy/loss on a split, predictions, top-1."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from edgeslim.train.distributed import all_reduce_sum
from edgeslim.utils.modes import eval_mode
from edgeslim.utils.scores import top1_correct

if TYPE_CHECKING:
    from edgeslim.data import DataBundle


@torch.no_grad()
def predict(
    model: nn.Module,
    bundle: DataBundle,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted class [N], true label [N])`` of every image of ``split`` (model in eval mode)."""
    preds, labels = [], []
    with eval_mode(model):
        for x, y in bundle.loader(split, batch_size, shuffle=False, augment=False, device=device):
            preds.append(model(x).argmax(1).cpu())
            labels.append(y.cpu())
    return torch.cat(preds), torch.cat(labels)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    bundle: DataBundle,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """``{"accuracy", "loss", "n"}`` of ``model`` on ``split`` (eval mode, no augmentation).

    Under DDP pass ``rank``/``world_size``: each rank scores its own unpadded shard (no image
    counted twice; the forward has no collective, so shards may differ by one) and the sums
    are all-reduced.
    """
    dev = torch.device(device)
    loss_sum, correct, n = 0.0, 0, 0
    use_amp = amp and dev.type == "cuda"
    with eval_mode(model):
        loader = bundle.loader(
            split, batch_size, shuffle=False, augment=False, rank=rank, world_size=world_size,
            device=dev, even_shards=False,
        )  # fmt: skip
        for x, y in loader:
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += top1_correct(logits, y)
            n += len(y)
    loss_sum, correct, n = all_reduce_sum([loss_sum, float(correct), float(n)], dev)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "n": int(n)}
