"""Per-iteration learning-rate schedule with linear warm-up (cosine, step, constant)."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer


class LRSchedule:
    """Sets ``lr`` of every param group before each iteration; its state is the step counter.

    ``lr(t)`` for ``t`` in ``[0, total_steps)``: linear warm-up from ``base_lr / warmup_steps``
    to ``base_lr`` over ``warmup_steps``, then cosine to 0, or step decay by ``gamma`` at each
    milestone (a fraction of ``total_steps``), or constant.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float,
        total_steps: int,
        kind: str = "cosine",
        warmup_steps: int = 0,
        milestones: tuple[float, ...] = (0.5, 0.75),
        gamma: float = 0.1,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total_steps = max(int(total_steps), 1)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.milestone_steps = [int(round(m * self.total_steps)) for m in milestones]
        self.gamma = float(gamma)
        self.step_count = 0

    def lr_at(self, t: int) -> float:
        if self.warmup_steps and t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            frac = min(max(t - self.warmup_steps, 0) / span, 1.0)
            return 0.5 * self.base_lr * (1.0 + math.cos(math.pi * frac))
        if self.kind == "step":
            return self.base_lr * self.gamma ** sum(t >= m for m in self.milestone_steps)
        return self.base_lr

    @property
    def lr(self) -> float:
        """The lr of the current (next) iteration."""
        return self.lr_at(self.step_count)

    def apply(self) -> float:
        """Write the current lr into the optimizer (call before ``optimizer.step()``)."""
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "total_steps": self.total_steps, "kind": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
