"""DDP under ``torchrun``: rank/world size from the environment, gloo on CPU, NCCL on GPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process's place in a ``torchrun`` job (rank 0 of 1 when not launched by it)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group if ``torchrun`` set ``WORLD_SIZE > 1`` (idempotent)."""
    info = dist_info()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return dist_info()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA exists, else ``cpu``."""
    from edgeslim.errors import EdgeslimError

    local = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EdgeslimError(
                f"device {name} asked for CUDA, but no CUDA GPU is available; use cpu", param="device"
            )
        if dev.index is None:
            dev = torch.device(f"cuda:{local}")
    return dev


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def average_buffers(model: torch.nn.Module) -> None:
    """Average floating buffers (BN running statistics) over ranks; others come from rank 0.

    DDP broadcasts rank 0's buffers before each forward, so after the last forward of an
    epoch every rank has its own running statistics; this makes them one (and uses all shards).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world)
        else:
            dist.broadcast(buf, src=0)
