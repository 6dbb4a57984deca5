"""``fit``: SGD training with schedules, warm-up, channels_last, AMP on CUDA, DDP, method hooks,
a checkpoint every epoch and bit-for-bit ``--resume``."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgeslim.channels.norm import CALIB_BATCHES, SETTLED_WEIGHT, recalibrate_bn, unsettled_momentum
from edgeslim.errors import EdgeslimError, first_line
from edgeslim.train.config import TrainConfig
from edgeslim.train.distributed import (
    all_reduce_sum,
    average_buffers,
    barrier,
    init_distributed,
    resolve_device,
)
from edgeslim.train.evaluation import evaluate
from edgeslim.train.hooks import HookList, TrainHook
from edgeslim.train.methods import create_method
from edgeslim.train.schedule import LRSchedule
from edgeslim.utils.modes import eval_mode, kept_random_state, training_mode
from edgeslim.utils.rundir import LOG_FILE, MODEL_FILE, REPORT_FILE

if TYPE_CHECKING:
    from rich.progress import Progress

    from edgeslim.data import DataBundle
    from edgeslim.models.registry import ModelSpec

log = logging.getLogger(__name__)


class NonFiniteLossError(EdgeslimError):
    """The loss became NaN or infinite; the last good checkpoint was left as it was."""


@dataclass
class TrainResult:
    """What :func:`fit` returns (``model`` is the bare module, on the training device)."""

    model: nn.Module
    history: list[dict[str, Any]]
    test_accuracy: float
    test_loss: float
    best_accuracy: float
    best_epoch: int
    epochs: int
    wall_time_s: float
    params: int
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "wall_time_s": self.wall_time_s,
            "params": self.params,
        }


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- helpers
def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD (momentum, Nesterov); without ``decay_bn`` BN parameters and biases get no weight decay."""
    if config.decay_bn:
        groups: Any = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    else:
        decay, no_decay = [], []
        for mod in model.modules():
            for pname, p in mod.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_norm = isinstance(mod, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
                (no_decay if is_norm or pname == "bias" else decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    from edgeslim.utils.io import to_jsonable

    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(to_jsonable(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from edgeslim.utils.io import atomic_write_text, to_jsonable

    atomic_write_text(path, "".join(json.dumps(to_jsonable(r)) + "\n" for r in records))


# ----------------------------------------------------------------------------- fit
def to_channels_last(model: nn.Module, example: torch.Tensor) -> bool:
    """Store ``model``'s 4-D parameters and buffers (conv weights) channels_last, in place, when its
    forward runs so on ``example`` (one input, made channels_last); else leave it channels-first, say
    why, and return False. Tensors of other dimensions are left as they are (``Module.to(memory_format=)``
    refuses a model with a Conv3d in it)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    for t in tensors:
        if t.shape[-2:] == (1, 1) and id(t) in kernels:  # a 1x1 kernel: .contiguous() keeps its strides,
            # which already pass as channels_last, while its gradient comes with channels_last's own, and DDP
            # warned "Grad strides do not match bucket view strides" (the same memory: only the strides
            # change); another (1, C, 1, 1) tensor (a layer scale) gets its gradient in canonical strides
            t.data = torch.empty_like(t.data, memory_format=torch.channels_last).copy_(t.data)
        else:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    x = torch.cat([example, example])  # (two: a train-mode BatchNorm wants more than one value)
    x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # (train mode moves BN's statistics)
    try:
        with torch.no_grad(), kept_random_state():  # (dropout draws no training numbers)
            for train in (False, True):  # (a view taken in train mode only: an auxiliary head)
                with training_mode(model, train):
                    model(x)
        return True
    except RuntimeError as exc:  # e.g. x.view(n, -1) of a conv output: a view of channels_last memory
        for t in tensors:  # (a 1x1 kernel's canonical strides too, which .contiguous() would keep)
            t.data = torch.empty_like(t.data, memory_format=torch.contiguous_format).copy_(t.data)
        log.warning("%s trains channels-first: its forward fails on channels_last tensors (%s); reshape or "
                    "torch.flatten in place of view would let it train channels_last, 1.2-1.5x faster on the "
                    "CPU measured (docs/training.md)", type(model).__name__, first_line(exc))  # fmt: skip
        return False
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])


#: PyTorch's words for an image too small for a layer (a pooling or a kernel bigger than what is left)
_TOO_SMALL = re.compile(
    r"Output size is too small|Kernel size can't be greater than actual input size|"
    r"Padding size should be less than|output size .* too small|input image .* is smaller than kernel",
    re.IGNORECASE,
)


#: PyTorch's words for a conv given another number of channels than it takes
_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels")


def check_input_fits(model: nn.Module, example: torch.Tensor, arch: str) -> None:
    """Refuse in one line a model whose layers cannot take the data's images (too small for its
    downsampling, or of another number of channels than its first conv takes), before a run starts;
    ``example`` is one input of the data's shape."""
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    except RuntimeError as exc:
        c, h, w = (tuple(example.shape[1:]) + (1, 1, 1))[:3]
        channels = _CHANNELS.search(str(exc))
        if channels is not None and int(channels[2]) == c:  # (the images' own count: the stem conv's)
            from edgeslim.models.user import channels_fix

            raise EdgeslimError(
                f"{arch} takes {channels[1]}-channel images, not {c}-channel ones: give "
                f"{channels_fix(int(channels[1]), 'data')}, or a model built for {c}-channel images",
                param="data",
            ) from exc
        if not _TOO_SMALL.search(str(exc)):
            raise
        raise EdgeslimError(
            f"{arch} cannot run on {h}x{w} images ({first_line(exc)}): they are too small for its layers; "
            "give a larger image_size (an image folder) or a model for images of this size",
            param="image_size",
        ) from exc


def fit(
    model: nn.Module,
    bundle: DataBundle,
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    spec: ModelSpec | None = None,
    hooks: Iterable[TrainHook | None] = (),
    progress: Progress | None = None,
    resume: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    recipe: dict[str, Any] | None = None,
    write_report: bool = True,
) -> TrainResult:
    """Train ``model`` on ``bundle`` and return a :class:`TrainResult`.

    With ``out_dir`` (needs ``spec``), rank 0 writes ``model.pt`` (atomic, every epoch, with the
    full training state), ``log.jsonl`` (one record per epoch) and ``report.json``. ``resume``
    is the ``train_state`` of such a checkpoint, whose weights must already be in ``model``;
    training then continues bit-for-bit. ``history`` holds records of earlier stages (kept in
    the log and checkpoints); ``extra_state`` is stored as ``train_state["extra"]``; ``recipe``
    (a surgery recipe, for an already slimmed model) is stored in the checkpoints.
    Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DDP and data is sharded.
    """
    device = resolve_device(config.device)
    info = init_distributed(device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and spec is None:
        raise ValueError("fit(out_dir=...) needs spec= to write checkpoints")
    if spec is not None:
        bundle.check_spec(spec)
    if resume is None:
        seed_everything(config.seed)
    use_cuda = device.type == "cuda"
    use_amp = config.amp and use_cuda
    channels_last = config.channels_last

    model.to(device)
    example = torch.zeros(1, *bundle.input_shape, device=device)
    if resume is None:
        check_input_fits(model, example, spec.arch if spec is not None else type(model).__name__)
    if channels_last:
        channels_last = to_channels_last(model, example)
    method_hook = create_method(config.method, model, **config.method_args)
    hook = HookList([method_hook, *hooks])
    optimizer = make_optimizer(model, config)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def loader(epoch: int):
        n = len(bundle.train_y) // info.world_size
        return bundle.loader(
            "train", config.batch_size, shuffle=True, augment=config.augment, seed=config.seed,
            epoch=epoch, rank=info.rank, world_size=info.world_size, device=device,
            drop_last=n >= config.batch_size,
        )  # fmt: skip

    steps_per_epoch = len(loader(0))
    schedule = LRSchedule(
        optimizer, config.lr, config.epochs * steps_per_epoch, config.schedule,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        milestones=config.milestones, gamma=config.lr_gamma,
    )  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, global_step = 0, 0
    history = list(history or [])
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        hook.load_state_dict(resume.get("hooks", {}))
        start_epoch, global_step = int(resume["epoch"]), int(resume["global_step"])
        saved_threads = resume.get("threads")
        if (
            saved_threads is not None
            and int(saved_threads) != torch.get_num_threads()
            and device.type == "cpu"
        ):
            log.warning(
                "this run trained with %d CPU thread(s) and continues with %d: it will differ slightly from an "
                "uninterrupted run (continue with %d thread(s) to match it)",
                int(saved_threads), torch.get_num_threads(), int(saved_threads),
            )  # fmt: skip
        history = list(resume.get("history", []))
        extra_state = {**dict(resume.get("extra") or {}), **dict(extra_state or {})}

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if use_cuda else None)

    ckpt_path = out / MODEL_FILE if out is not None else None
    log_path = out / LOG_FILE if out is not None else None
    if info.is_main and log_path is not None and (history or log_path.exists()):
        _rewrite_jsonl(log_path, history)  # drops records of a killed run past its last checkpoint
        # (a fresh run writes none before its first epoch: a stop would leave an empty log that refused the rerun)
    # (the stage and method info shows; a caller's meta names the run's own method)
    base_meta = {**bundle.record(), "method": config.method, "stage": config.stage, **(meta or {})}
    t_start = time.perf_counter()
    prior_time = float(sum(r.get("time_s", 0.0) for r in history if r.get("stage") == config.stage))

    def train_state(epoch: int) -> dict[str, Any]:
        return {
            "stage": config.stage,
            "epoch": epoch,
            "global_step": global_step,
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None,
            "hooks": hook.state_dict(),
            "rng": rng_state(),
            "threads": torch.get_num_threads(),  # float sums differ with the thread count: a resume warns
            "config": config.to_dict(),
            "history": history,
            "extra": dict(extra_state or {}),
        }

    hook.on_train_start(model, optimizer)
    if resume is not None:  # after on_train_start: what a hook draws there was drawn before the saved state
        set_rng_state(resume["rng"])
    bn_said = False  # (the settling line once; each epoch's log record counts the images)
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        train_model.train()
        batches = loader(epoch)
        task = None
        if progress is not None and info.is_main:
            task = progress.add_task(
                f"{config.stage} {epoch + 1}/{config.epochs}", total=len(batches), info=""
            )
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for i, (x, y) in enumerate(batches):
            lr = schedule.apply()
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = train_model(x)
                loss = criterion(logits.float(), y)
            finite = torch.isfinite(loss.detach())
            if info.enabled:  # every rank must stop together, or the others hang in all-reduce
                flag = finite.to(torch.float32).reshape(1)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                finite = flag[0] > 0
            if not bool(finite):
                last = (
                    f"the last good checkpoint {ckpt_path} (epoch {epoch}) was kept"
                    if ckpt_path is not None and epoch > 0 and ckpt_path.exists()
                    else "no checkpoint of this run was written"
                )
                raise NonFiniteLossError(
                    f"training diverged: the loss is {float(loss.detach()):g} at epoch {epoch + 1}, step {i + 1} "
                    f"(lr {lr:g}); lower the learning rate or add warm-up epochs; {last}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if use_amp:
                scaler.unscale_(optimizer)
            hook.after_backward(model, optimizer)
            scale_before = scaler.get_scale() if use_amp else 1.0
            scaler.step(optimizer)
            scaler.update()
            if not (use_amp and scaler.get_scale() < scale_before):  # AMP skipped an inf/NaN step
                hook.after_step(model, optimizer)
            schedule.step()
            global_step += 1
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if task is not None:
                progress.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}  lr {lr:.3g}")  # type: ignore[union-attr]
        bn_images = _settle_bn(
            model, bundle, config, epoch, global_step, info, device, say=info.is_main and not bn_said
        )
        bn_said = bn_said or bn_images > 0
        average_buffers(model)
        tr_loss, tr_correct, tr_seen = all_reduce_sum([float(loss_sum), float(correct), float(seen)], device)
        ev = evaluate(
            model, bundle, "test", config.eval_batch_size, device, rank=info.rank,
            world_size=info.world_size, amp=use_amp, channels_last=channels_last,
        )  # fmt: skip
        if not (math.isfinite(ev["loss"]) and math.isfinite(tr_loss)):
            raise NonFiniteLossError(
                f"training diverged: the {'test' if math.isfinite(tr_loss) else 'training'} loss is not "
                f"finite after epoch {epoch + 1} (lr {schedule.lr_at(max(schedule.step_count - 1, 0)):g}); "
                "lower the learning rate or weight decay, or add warm-up; "
                + (f"the last good checkpoint {ckpt_path} was kept" if ckpt_path is not None and ckpt_path.exists()
                   else "no checkpoint of this run was written")
            )  # fmt: skip
        record: dict[str, Any] = {
            "stage": config.stage,
            "epoch": epoch + 1,
            "lr": schedule.lr_at(max(schedule.step_count - 1, 0)),
            "train_loss": tr_loss / max(tr_seen, 1),
            "train_acc": tr_correct / max(tr_seen, 1),
            "test_loss": ev["loss"],
            "test_acc": ev["accuracy"],
            "time_s": time.perf_counter() - t0,
        }
        if bn_images:
            record["bn_recalibrated_on_images"] = bn_images
        record.update(hook.on_epoch_end(epoch, model))
        # a restarted recovery sets the rate: "lr" is the one the optimizer ran at (a trial: the terminal
        # said lr 0.005, log.jsonl 0.000955, the base schedule's, which did not run)
        if "recovery_lr" in record:
            record["schedule_lr"], record["lr"] = record["lr"], record["recovery_lr"]
        history.append(record)
        if task is not None:
            progress.update(task, info=f"loss {record['train_loss']:.3f}  test acc {ev['accuracy']:.2%}")  # type: ignore[union-attr]
        (log.info if info.is_main else log.debug)(  # (every rank's record is the same: rank 0 says it)
            "%s epoch %d/%d: train loss %.4f acc %.2f%%, test loss %.4f acc %.2f%%, lr %.3g at its last step, %.1f s",
            config.stage,
            epoch + 1,
            config.epochs,
            record["train_loss"],
            100 * record["train_acc"],
            record["test_loss"],
            100 * record["test_acc"],
            record["lr"],
            record["time_s"],
        )  # fmt: skip (the rate the optimizer ran at: a restarted recovery's where it sets it)
        if info.is_main and out is not None and ckpt_path is not None and log_path is not None:
            from edgeslim.checkpoint import save_model

            save_model(
                ckpt_path, model, spec, recipe=recipe, train_state=train_state(epoch + 1),  # type: ignore[arg-type]
                meta={**base_meta, "metrics": {k: record[k] for k in ("test_acc", "test_loss", "epoch")}},
            )  # fmt: skip
            _append_jsonl(log_path, record)
        barrier()
    if start_epoch >= config.epochs and info.is_main and ckpt_path is not None and not ckpt_path.is_file():
        from edgeslim.checkpoint import save_model  # a finished run resumed into a new folder: its model too

        save_model(ckpt_path, model, spec, recipe=recipe, train_state=train_state(start_epoch),  # type: ignore[arg-type]
                   meta=base_meta)  # fmt: skip
    hook.on_train_end(model)

    stage_hist = [r for r in history if r.get("stage") == config.stage]
    if stage_hist:
        final = stage_hist[-1]
        best = max(stage_hist, key=lambda r: r["test_acc"])
        acc, loss_v, best_acc, best_ep = (
            final["test_acc"],
            final["test_loss"],
            best["test_acc"],
            best["epoch"],
        )
    else:  # zero epochs: just evaluate
        ev = evaluate(
            model, bundle, "test", config.eval_batch_size, device, rank=info.rank, world_size=info.world_size
        )
        acc, loss_v, best_acc, best_ep = ev["accuracy"], ev["loss"], ev["accuracy"], 0
    if not all(math.isfinite(float(r.get("train_loss", 0.0))) for r in stage_hist):
        log.warning("non-finite training loss recorded")
    result = TrainResult(
        model=model, history=history, test_accuracy=acc, test_loss=loss_v, best_accuracy=best_acc,
        best_epoch=best_ep, epochs=config.epochs, wall_time_s=prior_time + time.perf_counter() - t_start,
        params=count_params(model), checkpoint=ckpt_path, extra=dict(extra_state or {}),
    )  # fmt: skip
    if write_report and info.is_main and out is not None:
        write_train_report(out, result, config, spec)
    return result


def _settle_bn(
    model: nn.Module,
    bundle: DataBundle,
    config: TrainConfig,
    epoch: int,
    steps: int,
    info: Any,
    device: Any,
    *,
    say: bool = True,
) -> int:
    """Before an evaluation: when a BatchNorm's running statistics have not settled after ``steps``
    (a low momentum such as MobileNetV3's 0.01 and a short run: they still hold their starting
    zeros and ones), re-estimate them on a few training batches, without augmentation, so the
    test accuracy is the network's. Returns the images used (0: the statistics had settled); ``say``:
    log it at info level (else at debug level: a later epoch's re-estimate)."""
    momentum = unsettled_momentum(model, steps)
    if momentum is None:
        return 0
    batches = bundle.calibration_batches(
        CALIB_BATCHES,
        seed=config.seed + 3,
        epoch=epoch,
        rank=info.rank,
        world_size=info.world_size,
        device=device,
    )
    recalibrate_bn(model, batches)
    images = sum(int(x.shape[0]) for x in batches)
    log.log(
        logging.INFO if say else logging.DEBUG,
        "BatchNorm momentum %g: running statistics not settled after %d steps (about %d needed); "
        "re-estimated on %d training images before each evaluation until they are",
        momentum, steps, math.ceil(math.log(SETTLED_WEIGHT) / math.log(1 - momentum)), images,
    )  # fmt: skip
    return images


def write_train_report(
    out_dir: str | os.PathLike,
    result: TrainResult,
    config: TrainConfig,
    spec: ModelSpec | None,
    **extra: Any,
) -> Path:
    """``DIR/report.json``: final/best test accuracy, epochs, wall time, params, config (+ ``extra``)."""
    from edgeslim.utils.io import write_json

    report = {
        **result.summary(),
        "arch": spec.arch if spec is not None else None,
        "spec": spec.to_dict() if spec is not None else None,
        "config": {k: v for k, v in config.to_dict().items() if k != "method_args"}
        | {
            "method_args": {
                k: v for k, v in config.method_args.items() if not isinstance(v, dict | torch.Tensor)
            }
        },
        **extra,
    }
    return write_json(Path(out_dir) / REPORT_FILE, report)
