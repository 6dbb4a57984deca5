"""Training configuration: a plain dataclass, stored in every checkpoint for ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgeslim.errors import EdgeslimError


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage.

    Defaults train ``vgg-small`` on Fashion-MNIST past 92.5% test accuracy in 10 epochs.
    ``milestones`` are fractions of the whole run (step schedule). ``decay_bn``: apply weight
    decay also to BN scales/shifts and biases (as the network-slimming papers' code does);
    when False they are excluded.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bn: bool = True
    schedule: str = "cosine"  # "cosine" | "step" | "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    amp: bool = False  # only takes effect on CUDA
    # conv weights and batches channels_last (faster here on CPU too: docs/training.md)
    channels_last: bool = True
    seed: int = 0
    method: str = "baseline"
    method_args: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 256
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    #: a name for this stage in logs ("train", "finetune")
    stage: str = "train"

    def __post_init__(self) -> None:
        from edgeslim.utils.fields import check_device

        self.milestones = tuple(float(m) for m in self.milestones)
        self.device = check_device("device", self.device)  # (as a request's: "CPU" is cpu, "tpu" refused)
        self.validate()

    def validate(self) -> None:
        def bad(msg: str, field: str | None = None) -> EdgeslimError:
            return EdgeslimError(msg, param=field)

        if self.epochs < 0:
            raise bad(f"epochs must be >= 0, got {self.epochs}", "epochs")
        if self.batch_size < 1:
            raise bad(f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        if not self.lr > 0:
            raise bad(f"lr must be > 0, got {self.lr}", "lr")
        if not 0 <= self.momentum < 1:
            raise bad(f"momentum must be in [0, 1), got {self.momentum}", "momentum")
        if self.nesterov and self.momentum == 0:
            raise bad("nesterov=True needs momentum > 0", "momentum")
        if self.weight_decay < 0:
            raise bad(f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        if self.schedule not in ("cosine", "step", "constant"):
            raise bad(f"unknown lr schedule {self.schedule!r}; use cosine, step or constant", "schedule")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise bad(
                f"milestones must be increasing fractions in (0, 1), got {list(self.milestones)}",
                "milestones",
            )
        if self.warmup_epochs < 0:
            raise bad(f"warmup_epochs must be >= 0, got {self.warmup_epochs}", "warmup_epochs")
        if not 0 <= self.label_smoothing < 1:
            raise bad(f"label_smoothing must be in [0, 1), got {self.label_smoothing}", "label_smoothing")

    @staticmethod
    def check_warmup(warmup_epochs: float | None, epochs: int | None) -> None:
        """Refuse a learning-rate warm-up as long as the run (its rate would only rise); ``None``: the
        default (no warm-up; :class:`TrainConfig`'s epochs)."""
        epochs = TrainConfig.epochs if epochs is None else epochs
        if warmup_epochs and warmup_epochs >= epochs:
            raise EdgeslimError(
                f"warmup_epochs ({warmup_epochs:g}) is not below epochs ({epochs}): the whole run would "
                "be warm-up, its learning rate only rising; give fewer warm-up epochs or train longer",
                param=("warmup_epochs", "epochs"),
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise EdgeslimError(
                f"unknown training config keys {sorted(unknown)}; written by a newer edgeslim?"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})
