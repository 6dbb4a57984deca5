"""``train``: train a model (baseline or original network slimming), as a request and ``run``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice, Step
from edgeslim.pipelines import request_from_options
from edgeslim.pipelines.rundir import (
    check_resumed_data,
    check_resumed_images,
    data_images,
    recorded_dir,
    recorded_input_size,
    saved_data_args,
    saved_run_state,
)
from edgeslim.utils.fields import CheckedFields
from edgeslim.utils.rundir import (
    LOG_FILE,
    MODEL_FILE,
    REPORT_FILE,
    RUN_REPORT_MD,
    TRAIN_DIR,
    TRAIN_FILES,
    TRAIN_STALE,
    ULTRALYTICS_MARK,
    YOLO_RUN_MARK,
)

#: what a slim run leaves in its ``train/`` (edgeslim's trainer's files, a YOLO run's marks)
SLIM_TRAIN_MARKS = (*TRAIN_FILES, YOLO_RUN_MARK, ULTRALYTICS_MARK)

#: hyper-parameters whose defaults come from TrainConfig (None = not given)
_HPARAMS = (
    "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "decay_bn", "schedule",
    "milestones", "lr_gamma", "warmup_epochs", "label_smoothing", "augment", "amp", "channels_last",
    "seed", "method",
)  # fmt: skip


@dataclass
class TrainRequest(CheckedFields):
    """Everything ``edgeslim train`` needs; ``None`` means the library default.

    ``resume``: a checkpoint of an interrupted run, or ``""`` (or True) for the run in ``out_dir``.
    """

    out_dir: Path
    arch: str | None = None
    data_name: str | None = None
    data_dir: Path | None = None
    subset: int | None = None
    test_subset: int | None = None
    #: (H, W) an image folder is trained at (None: its first images' most common size; a resume: the checkpoint's)
    image_size: tuple[int, int] | None = None
    cache_dir: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    decay_bn: bool | None = None
    schedule: str | None = None
    milestones: tuple[float, ...] | None = None
    lr_gamma: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    augment: bool | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    seed: int | None = None
    method: str | None = None
    lam: float | None = None
    prune_ratio: float | None = None
    #: the prune keeps each group's channel count a multiple of this [the default profile's alignment]
    round_to: int | None = None
    #: fine-tune epochs after the threshold prune (None: 0; given on a resume, it is noted as ignored)
    finetune_epochs: int | None = None
    finetune_lr: float | None = None
    init_path: Path | None = None
    #: a state_dict (or a training checkpoint holding one) for ``arch``, as slim's weights: what it starts from
    weights: Path | None = None
    device: str = "auto"
    threads: int | None = None
    resume: str | Path | bool | None = None
    #: build or load models whose files can run code (pickle:PATH, whole pickled modules)
    trust_pickle: bool = False
    force: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainRequest:
        """A request from option names (unknown keys are refused)."""
        return request_from_options(cls, options, "train")


@dataclass
class TrainOutcome:
    """What :func:`run` returns: the report, and what the CLI shows beside it."""

    report: dict[str, Any]
    spec: Any
    data_name: str
    out_dir: Path
    is_main: bool = True
    #: things the caller should tell the user (e.g. options a resumed run ignored)
    notes: list[str] | None = None
    #: the model carries a surgery recipe (it started from a slimmed model): the next step is export, not slim
    slimmed: bool = False


def run(req: TrainRequest, progress: Any = None, say: Callable[[str], None] | None = None) -> TrainOutcome:
    """Train as ``req`` says into ``req.out_dir`` (the run directory is locked while it runs). ``say``
    hears each note as it arises (before training starts); the outcome keeps them all."""
    from edgeslim.utils.modes import kept_random_state

    with kept_random_state():  # (the run seeds the global generators: the caller's are put back)
        return _run(req, progress, say)


def _run(req: TrainRequest, progress: Any, say: Callable[[str], None] | None) -> TrainOutcome:
    kw = asdict(req)
    kw["out_dir"] = Path(req.out_dir)
    import torch

    from edgeslim.checkpoint import load_checkpoint_dict
    from edgeslim.pipelines.rundir import run_directory
    from edgeslim.train.distributed import dist_info
    from edgeslim.utils.modes import torch_threads

    info = dist_info()
    out_dir: Path = kw["out_dir"]
    if kw["resume"] == "" or kw["resume"] is True:  # the flag alone (True from Python): the run in out_dir
        kw["resume"] = out_dir / MODEL_FILE
    elif kw["resume"] and Path(kw["resume"]).is_dir() and (Path(kw["resume"]) / MODEL_FILE).is_file():
        kw["resume"] = Path(kw["resume"]) / MODEL_FILE  # a run's folder: its checkpoint (the checks below)
    resume_ckpt = load_checkpoint_dict(kw["resume"]) if kw["resume"] else None
    resume_state = (resume_ckpt or {}).get("train_state")
    if resume_ckpt is not None and not resume_state:
        run_dir = Path(kw["resume"]).parent
        if (run_dir / TRAIN_DIR / MODEL_FILE).is_file():
            step = Step("slim", resume=True, out_dir=run_dir)
            raise EdgeslimError(
                f"{run_dir} is a slim run (its training state is in {TRAIN_DIR}/{MODEL_FILE}); continue it "
                f"with {step}",
                steps=(step,),
            )
    if resume_state and resume_state.get("stage") == "slim":  # a slim run's trainer checkpoint (its train/)
        ckpt_dir = Path(kw["resume"]).parent
        run_dir = ckpt_dir.parent if ckpt_dir.name == TRAIN_DIR else ckpt_dir
        step = Step("slim", resume=True, out_dir=run_dir)
        raise EdgeslimError(
            f"{kw['resume']} is the training checkpoint of a slim run ({run_dir}), which train does not "
            f"continue; continue it with {step}",
            steps=(step,),
        )
    same_dir = bool(kw["resume"]) and Path(kw["resume"]).resolve() == (out_dir / MODEL_FILE).resolve()
    if same_dir and (out_dir / REPORT_FILE).is_file():
        raise EdgeslimError(  # (its report is written last: a run stopped before it resumes)
            f"{out_dir} holds a finished run ({MODEL_FILE}, {REPORT_FILE}), so there is nothing to resume; to "
            f"train it further, start a new run from its {MODEL_FILE} with init_path (in another out_dir)",
            param=("resume", "init_path", "out_dir"),
        )
    if resume_ckpt is not None and not resume_state:
        raise EdgeslimError(
            f"{kw['resume']} has no training state (a final or pruned model); use init_path to start from it",
            param="init_path",
        )
    _refuse_slim_run_dir(out_dir)
    # an interrupted run's folder: resume is offered, not only force (which drops its epochs: a review)
    interrupted = [n for n in (MODEL_FILE, LOG_FILE) if (out_dir / n).is_file()]
    if not (kw["resume"] or kw["force"]) and len(interrupted) == 2 and not (out_dir / REPORT_FILE).is_file():
        from edgeslim.utils.io import check_unlocked

        check_unlocked(out_dir)  # (a run still writing there is not an interrupted one)
        step = Step("train", resume=True, out_dir=out_dir)
        raise EdgeslimError(
            f"{out_dir} holds an interrupted run ({MODEL_FILE}, {LOG_FILE}, no {REPORT_FILE}); continue it with "
            f"{step}, or pass force=True to start over",
            param="force",
            steps=(step,),
        )
    target = ("arch", kw["arch"]) if kw["arch"] else ("init_path", kw["init_path"])
    if target[1] and resume_ckpt is None:  # a detector is refused before its directory is made
        from edgeslim.pipelines.source import refuse_non_classifier

        refuse_non_classifier(
            str(target[1]), kw["data_name"], trust_pickle=kw["trust_pickle"], target_param=target[0]
        )
    threads = kw["threads"]
    if threads is None and resume_ckpt is not None:  # (a run continued with other threads differs slightly)
        threads = saved_run_state(resume_ckpt).get("threads")
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        if info.is_main:  # rank 0 holds the run directory (lock, no overwrite without force)
            # (--force moves the earlier run's checkpoint and log aside too: a stop before this run's first
            # checkpoint puts them back, where one left behind was offered to resume as this run's)
            stack.enter_context(run_directory(out_dir, force=kw["force"] or same_dir, resume=same_dir,
                                              markers=(MODEL_FILE, REPORT_FILE, LOG_FILE), stale=TRAIN_STALE,
                                              inputs=(kw["init_path"], kw["resume"], kw["weights"])))  # fmt: skip
        notes: list[str] = []
        report, spec, bundle, recipe = _train(
            kw, info, out_dir, resume_ckpt, resume_state, progress, notes, say
        )
    if info.enabled:
        torch.distributed.destroy_process_group()
    return TrainOutcome(report, spec, bundle.name, out_dir, info.is_main, notes, slimmed=recipe is not None)


def _refuse_slim_run_dir(out_dir: Path) -> None:
    """Refuse a slim run's folder as train's output, forced or not: a train run would replace its model
    and report.json and leave its report.md, plots and ``train/`` describing the slim model."""
    found = [name for name in (f"{TRAIN_DIR}/{n}" for n in SLIM_TRAIN_MARKS) if (out_dir / name).is_file()]
    if (out_dir / RUN_REPORT_MD).is_file() and (out_dir / REPORT_FILE).is_file():
        found.append(RUN_REPORT_MD)
    if found:
        raise EdgeslimError(
            f"{out_dir} holds a slim run ({', '.join(found)}), whose report and plots a train run would leave "
            f"beside its own model; give the train run a folder of its own, e.g. {out_dir}-train",
            param="out_dir",
        )


def _train(kw: dict[str, Any], info: Any, out_dir: Path, resume_ckpt: dict | None, resume_state: dict | None,
           progress: Any, notes: list[str], say: Callable[[str], None] | None = None):  # fmt: skip
    """Build the model, data and config from the options and train; returns (report, spec, bundle, the
    model's surgery recipe or None)."""
    import torch

    from edgeslim.channels.devices import resolve_alignment
    from edgeslim.checkpoint import NoArchitecture, build_from_checkpoint, load_model
    from edgeslim.data import load_dataset
    from edgeslim.data.datasets import canonical_name
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec
    from edgeslim.models.user import in_float32
    from edgeslim.train.config import TrainConfig
    from edgeslim.train.methods import list_methods
    from edgeslim.train.pipeline import run_training

    recipe = None
    recorded: dict[str, Any] = {}  # the meta of the checkpoint it starts from
    if resume_ckpt is not None:
        recorded = resume_ckpt.get("meta") or {}
        given = [k for k in _HPARAMS if kw.get(k) is not None] + [
            k
            for k in (
                "lam",
                "prune_ratio",
                "round_to",
                "finetune_epochs",
                "finetune_lr",
                "init_path",
                "weights",
            )
            if kw.get(k) is not None
        ]
        if given and info.is_main:
            notes.append(Notice(f"resume continues with the checkpoint's settings; ignoring {', '.join(given)}",
                                tuple(given)))  # fmt: skip
        spec = ModelSpec.from_dict(resume_ckpt["spec"])
        if kw["arch"] and kw["arch"] != spec.arch:
            raise EdgeslimError(
                f"arch {kw['arch']} differs from the checkpoint's {spec.arch}; drop it to resume",
                param="arch",
            )
        saved = saved_data_args(resume_ckpt)  # (image_size: the size it trains at; built-in sets check it)
        check_resumed_data(kw["data_name"], saved)
        data_name = kw["data_name"] or saved.get("data_name")
        data_dir = kw["data_dir"]
        if data_dir is None and saved.get("data_dir"):  # (one it cannot find: said as the run's)
            from edgeslim.data.datasets import recorded_data_dir

            data_dir = recorded_data_dir(str(data_name), saved["data_dir"], "the run's")
        subset, test_subset, image_size = (
            saved.get("subset"),
            saved.get("test_subset"),
            saved.get("image_size"),
        )
        # the seed that chose its subset: recorded since it was the run's; before, always 0 (a review)
        data_seed = int(((resume_ckpt.get("meta") or {}).get("data_args") or {}).get("seed") or 0)
        model = build_from_checkpoint(resume_ckpt, trust_pickle=kw["trust_pickle"])
        recipe = resume_ckpt.get("recipe")
        config = TrainConfig.from_dict({**resume_state["config"], "device": kw["device"]})
    else:
        if not (kw["arch"] or kw["init_path"]):
            raise EdgeslimError(
                "give arch NAME (or init_path, a model to start from) and data_name NAME (or resume DIR/model.pt)",
                param=("arch", "init_path", "data_name", "resume"),
            )
        if not kw["data_name"]:
            raise EdgeslimError("give data_name NAME, the data set to train on", param="data_name")
        if kw["init_path"] and kw["weights"]:
            raise EdgeslimError(
                "give init_path (an edgeslim checkpoint) or weights (a state_dict for the architecture), not both",
                param=("init_path", "weights"),
            )
        data_name, data_dir = kw["data_name"], kw["data_dir"]
        subset, test_subset, image_size = kw["subset"], kw["test_subset"], kw["image_size"]
        if image_size is None and kw["init_path"] and canonical_name(data_name) == "imagefolder":
            image_size = recorded_input_size(kw["init_path"])  # (the size the model was trained at)
        hp = {k: kw[k] for k in _HPARAMS if kw.get(k) is not None}
        hp["device"] = kw["device"]
        method = hp.get("method", "baseline")
        if method not in list_methods():  # (the registry's list names proximal and mask, refused below)
            raise EdgeslimError(
                f"method {method!r} is unknown to train, which takes baseline or subgradient",
                param="method",
            )
        if method == "proximal":  # (a trainer method for the Python API; the command is slim)
            slim = Step("slim")
            raise EdgeslimError(
                f"proximal slimming runs as {slim} (lambda from a planned shrink or a budget, its phases, "
                "finalize and surgery); train takes method baseline or subgradient",
                param="method",
                steps=(slim,),
            )
        if method == "mask":
            raise EdgeslimError(
                "mask is the fine-tune stage of subgradient slimming (prune_ratio with finetune_epochs); "
                "train takes method baseline or subgradient",
                param=("method", "prune_ratio", "finetune_epochs"),
            )
        if kw["lam"] is not None:
            if method != "subgradient":
                raise EdgeslimError(
                    "lam is the sparsity strength of subgradient training; add method subgradient",
                    param=("lam", "method"),
                )
            hp["method_args"] = {"lam": kw["lam"]}
        config = TrainConfig(**hp)
        data_seed = config.seed
        TrainConfig.check_warmup(config.warmup_epochs, config.epochs)
        if kw["prune_ratio"] is not None and not 0.0 < kw["prune_ratio"] < 1.0:  # (as prune's ratio)
            raise EdgeslimError(
                f"prune_ratio must be between 0 and 1 (a fraction of the BN channels), got {kw['prune_ratio']}",
                param="prune_ratio",
            )
        if kw["prune_ratio"] is None and kw["finetune_epochs"]:
            raise EdgeslimError(
                "finetune_epochs needs prune_ratio (fine-tuning follows the threshold prune)",
                param=("finetune_epochs", "prune_ratio"),
            )
        if kw["prune_ratio"] is None and kw["round_to"] is not None:
            raise EdgeslimError(
                "round_to sets the channel multiple of the threshold prune; add prune_ratio",
                param=("round_to", "prune_ratio"),
            )
        if kw.get("finetune_lr") is not None and not kw["finetune_epochs"]:
            missing = (
                ("finetune_epochs",) if kw["prune_ratio"] is not None else ("prune_ratio", "finetune_epochs")
            )
            raise EdgeslimError(
                "finetune_lr is the learning rate of the fine-tune after the threshold prune; add "
                + " and ".join(missing),
                param=("finetune_lr", *missing),
            )
        stepwise = [k for k in ("milestones", "lr_gamma") if kw.get(k) is not None]
        if stepwise and config.schedule != "step":
            one = len(stepwise) == 1
            raise EdgeslimError(
                f"{' and '.join(stepwise)} shape{'s' if one else ''} the step decay, which runs only with schedule "
                f"step (this run's: {config.schedule}); add it or leave {'it' if one else 'them'} out",
                param=(*stepwise, "schedule"),
            )

    bundle = load_dataset(
        data_name,
        data_dir=data_dir,
        subset=subset,
        test_subset=test_subset,
        seed=data_seed,  # (the subset as slim picks it with the same seed; a trial: always seed 0 here)
        cache_dir=kw["cache_dir"],
        image_size=image_size,
    )
    if resume_ckpt is None:
        if kw["init_path"]:
            try:
                loaded = load_model(kw["init_path"], trust_pickle=kw["trust_pickle"])
            except NoArchitecture as exc:  # a state_dict: it goes with the architecture, as weights
                raise EdgeslimError(
                    f"{kw['init_path']} is a state_dict, which names no architecture (init_path starts from an "
                    "edgeslim checkpoint): give it as weights, with arch the architecture it was saved from",
                    param=("init_path", "weights", "arch"),
                ) from exc
            if loaded.spec is None:
                raise EdgeslimError(
                    f"init_path {kw['init_path']} is a {loaded.kind} file; give an edgeslim checkpoint",
                    param="init_path",
                )
            if kw["arch"] and kw["arch"] != loaded.spec.arch:
                raise EdgeslimError(
                    f"arch {kw['arch']} differs from the architecture of init_path {kw['init_path']} "
                    f"({loaded.spec.arch}); drop the name or give a model of that architecture",
                    param=("arch", "init_path"),
                )
            spec, model, recipe = loaded.spec, loaded.model, loaded.recipe
            in_float32(model, str(kw["init_path"]), tuple(bundle.input_shape))  # (one saved in float64)
            recorded = loaded.meta or {}
        elif kw["weights"]:
            from edgeslim.pipelines.source import load_model_or_arch

            loaded = load_model_or_arch(kw["arch"], trust_pickle=kw["trust_pickle"], input_shape=bundle.input_shape,
                                        shape_from_data=True, weights=kw["weights"])  # fmt: skip
            spec, model = loaded.spec, loaded.model
            if spec.num_classes != bundle.num_classes:
                slim = Step("slim", num_classes=bundle.num_classes)
                raise EdgeslimError(
                    f"weights {kw['weights']} were trained for {spec.num_classes} classes and {bundle.name} has "
                    f"{bundle.num_classes}; train starts from weights for its data's classes: give those, or run "
                    f"{slim}, which replaces the head and trains it",
                    param="weights",
                    steps=(slim,),
                )
        else:
            spec = bundle.spec_for(kw["arch"])
            torch.manual_seed(config.seed)
            model = create_model(spec, trust_pickle=kw["trust_pickle"])
            in_float32(model, spec.arch, tuple(bundle.input_shape))  # (a pickle:PATH saved in half precision)
    bundle.check_spec(spec)
    if resume_ckpt is not None:  # (its folder's files, as they were)
        check_resumed_images((resume_ckpt.get("meta") or {}).get("data_args"), bundle)
    # the labels in the order of the outputs of the head it starts from (a checkpoint's class names)
    bundle = bundle.in_class_order(recorded.get("class_names"))
    meta = {
        "data_args": {"name": data_name, "data_dir": recorded_dir(data_dir), "subset": subset,
                      "test_subset": test_subset, "seed": data_seed, "images": data_images(bundle)},
    }  # fmt: skip
    # the weights it started from: given now, or (a resume) as the run recorded them
    weights = kw["weights"] if resume_ckpt is None else (resume_ckpt.get("meta") or {}).get("weights")
    if weights:
        meta["weights"] = str(weights)

    for note in notes if say is not None else ():  # before training, after every refusal (which comes alone)
        say(note)
    report = run_training(
        model, spec, bundle, config, out_dir,
        prune_ratio=kw["prune_ratio"], round_to=int(resolve_alignment(kw["round_to"], None)["round_to"]),
        finetune_epochs=kw["finetune_epochs"] or 0, finetune_lr=kw["finetune_lr"],
        resume=resume_state, progress=progress if info.is_main else None, meta=meta, recipe=recipe,
        say=say if info.is_main else None,
    )  # fmt: skip
    return report, spec, bundle, recipe
