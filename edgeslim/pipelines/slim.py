"""``slim``: one-round proximal slimming of a model a user names or brings, as a request and ``run``."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice, Step, naming
from edgeslim.pipelines import request_from_options
from edgeslim.pipelines.rundir import (
    TABLE_DIGEST,
    check_resumed_data,
    check_resumed_images,
    data_images,
    recorded_dir,
    recorded_input_size,
    resumed_latency_table,
    run_directory,
    saved_data_args,
    saved_run_state,
)
from edgeslim.pipelines.source import checked_normalization
from edgeslim.utils.fields import CheckedFields
from edgeslim.utils.modes import kept_random_state, torch_threads
from edgeslim.utils.rundir import (
    MODEL_FILE,
    REPORT_FILE,
    SLIM_STALE,
    TABLE_FILE,
    TRAINED_FILE,
    ULTRALYTICS_MARK,
    left_aside_line,
)

log = logging.getLogger(__name__)

#: request fields a resumed run takes from the command (the rest come from the run's checkpoint;
#: a ``latency_table`` given is where the run's own table is now, checked by its digest)
RESUME_KEEPS = frozenset(
    "out_dir resume force trust_pickle device threads data_name data_dir cache_dir subset test_subset image_size "
    "latency_table".split()
)
#: a measured latency this far over its target is a miss said at the end of the run (issue #15: within 5%)
LATENCY_MISS_TOLERANCE = 0.05
#: training options a request may override (``None``: TrainConfig's default)
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs", "seed", "device")


@dataclass
class SlimRequest(CheckedFields):
    """Everything ``edgeslim slim`` needs; ``None`` means the library default.

    ``model``: a zoo name, ``tv:``/``timm:`` name, ``package.module:Factory`` or a model file;
    ``init`` a model file to start from (``model`` then, if given, must name its architecture).
    """

    out_dir: Path
    model: str | None = None
    data_name: str | None = None
    data_dir: Path | None = None
    subset: int | None = None
    test_subset: int | None = None
    #: (H, W) an image folder is trained at (None: its first images' most common size; a resume: the run's)
    image_size: tuple[int, int] | None = None
    #: per-channel mean / std (pixels / 255) the images are normalized with (None: what the model
    #: records, else the data set's own statistics)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    cache_dir: Path | None = None
    weights: Path | None = None
    init: Path | None = None
    num_classes: int | None = None
    threads: int | None = None
    # training
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    seed: int | None = None
    device: str | None = None
    # slimming
    lam: float | None = None
    shrink: float | None = None
    beta: float | None = None
    penalty: str | None = None
    p: float | None = None
    a: float | None = None
    g: float | None = None
    l: float | None = None  # noqa: E741 - SCAD's parameter name
    round_to: int | None = None
    zero_invariant: bool | None = None
    prox_warmup: float | str | None = None
    recovery: float | str | None = None
    prox_step: str | None = None
    beta_end: float | str | None = None
    recovery_lr: float | str | None = None
    importance: str | None = None
    # budget
    target_macs: str | None = None
    target_params: str | None = None
    target_latency: str | None = None
    profile: str | None = None
    latency_table: Path | None = None
    #: the batch a latency budget is predicted (or measured) at (None: 1)
    latency_batch: int | None = None
    precision: str | None = None
    taper_end: float | None = None
    #: rank and weight channels by |xi| / cost**cost_exponent (0: magnitude only)
    cost_exponent: float | None = None
    #: the metric channels are ranked and weighted in (None: the budget's own; "latency" under a MAC budget)
    price: str | None = None
    #: measure the slim network at the end and fail if it exceeds the latency target by more than this
    verify_latency: float | None = None
    #: training image size of a YOLO on an ultralytics data yaml (ultralytics' ``imgsz``; None: 640)
    imgsz: int | None = None
    # run
    force: bool = False
    resume: bool = False
    trust_pickle: bool = False

    @classmethod
    def from_options(cls, out_dir: Path, options: dict[str, Any]) -> SlimRequest:
        """A request from option names (unknown keys are refused)."""
        return request_from_options(cls, {**options, "out_dir": Path(out_dir)}, "slim")

    def options(self) -> dict[str, Any]:
        return asdict(self)

    def __post_init__(self) -> None:
        """Also what needs no PyTorch: the budget targets' form and (unless resuming) the profile."""
        super().__post_init__()
        from edgeslim.sparsity.targets import METRICS, parse_target

        for metric in METRICS:
            if getattr(self, f"target_{metric}") is not None:
                parse_target(str(getattr(self, f"target_{metric}")), metric)
        if self.profile is not None and not self.resume:
            from edgeslim.channels.devices import load_profile

            with naming("profile"):
                load_profile(self.profile)


def check(req: SlimRequest) -> dict[str, Any]:
    """Validate ``req`` before any data is loaded; returns the budget settings (dict or None). The
    values it resolves are set on ``req`` (:func:`run` passes it a copy of the caller's)."""
    from edgeslim.penalties import check_params
    from edgeslim.slim import TRAIN_DIR
    from edgeslim.sparsity.prox import check_strength
    from edgeslim.utils.io import check_unlocked

    if req.init is not None:
        req.model, expected = str(req.init), req.model
    else:
        expected = None
    if not req.model and not req.resume:
        raise EdgeslimError("give the model to slim (an architecture name or a model file), or resume")
    done = Path(req.out_dir)
    check_unlocked(done)  # a run still starting has no checkpoint yet: not "nothing to resume"
    saved_run = done / TRAIN_DIR / MODEL_FILE  # a slim run's training checkpoint
    if req.resume and not saved_run.is_file() and _has_train_state(done / MODEL_FILE):
        step = Step("train", resume=True, out_dir=req.out_dir)
        raise EdgeslimError(
            f"{req.out_dir} holds a train run (its {MODEL_FILE} has a training state); continue it with {step}",
            steps=(step,),
        )
    if req.resume and (done / TRAIN_DIR / ULTRALYTICS_MARK).is_file() and not saved_run.is_file():
        raise EdgeslimError(  # (a user's trial was told no run was started: ultralytics' run is there)
            f"{req.out_dir} holds a YOLO run (ultralytics trained it), which cannot be resumed; drop resume and "
            "rerun it with force=True",
            param=("resume", "force"),
        )
    if req.resume and not req.force and (done / REPORT_FILE).is_file() and (done / MODEL_FILE).is_file():
        raise EdgeslimError(
            f"{req.out_dir} holds a finished run ({MODEL_FILE}, {REPORT_FILE}), so there is nothing to resume; "
            "to redo its finalize and surgery from its training, pass force=True as well",
            param=("resume", "force"),
        )
    if req.resume and not saved_run.is_file() and (aside := left_aside_line(done)):
        raise EdgeslimError(  # (a review: after a kill -9 of a forced run, the finished run sat there unsaid)
            f"{req.out_dir} holds no run to continue ({TRAIN_DIR}/{MODEL_FILE} is missing); {aside}"
        )
    if req.resume and not saved_run.is_file():
        raise EdgeslimError(
            f"{req.out_dir} holds no run to continue ({TRAIN_DIR}/{MODEL_FILE} is missing: none was started, or it "
            "stopped before its first checkpoint); drop resume, with force=True if the folder is not empty",
            param=("resume", "force"),
        )
    if req.resume:
        _refuse_foreign_results(done)
    resumed: dict[str, Any] = {}
    if req.resume:
        from edgeslim.checkpoint import load_checkpoint_dict
        from edgeslim.data.datasets import recorded_data_dir

        ckpt = load_checkpoint_dict(saved_run)  # (read once: its data, its seed and threads)
        # the run's data, key by key: a data folder given now (moved) wins, the images are the run's
        saved = saved_data_args(ckpt)
        check_resumed_data(req.data_name, saved)
        for k, v in saved.items():
            if k == "image_size":  # (the size the run trains at, whatever is given)
                req.image_size = v
            elif k in ("subset", "test_subset"):
                if getattr(req, k) not in (None, v):  # (a review: given data options made it the full set)
                    raise EdgeslimError(
                        f"drop {k}: a resume continues on the {v} images the run trained on",
                        param=k,
                    )
                setattr(req, k, v)
            elif getattr(req, k) is None and (k == "data_name" or req.data_name == saved.get("data_name")):
                setattr(req, k, v)
                if k == "data_dir":
                    recorded_data_dir(str(saved.get("data_name")), v, "the run's")
        # the seed that chose its subset and the threads it trained with (a trial's resume drew other
        # images with the default seed and summed in another order: 0.764 where the run gave 0.77)
        resumed = saved_run_state(ckpt)
        # the latency table it prices with: where it is now, the one it started on (its digest)
        resumed["run_table"] = resumed_latency_table(ckpt.get("meta") or {}, done, req.latency_table)
    if not req.data_name:
        raise EdgeslimError(
            "a data set is required (data_name, e.g. fashion-mnist), on the command line or in the config file",
            param="data_name",
        )
    from edgeslim.channels.devices import resolve_alignment

    if not req.resume:  # a resumed run keeps its saved settings
        align = resolve_alignment(req.round_to, req.profile, req.precision)
        req.round_to = int(align["round_to"])  # type: ignore[call-overload]
        if req.profile:  # its predictions come at the end: a precision it has no figures for fails now
            from edgeslim.channels.cost import model_precision
            from edgeslim.channels.devices import load_profile

            model_precision(load_profile(req.profile), asked=req.precision)
    else:
        align = None
    opts = req.options()
    if req.resume:  # (the run's own table, found above: not a budget option)
        opts["latency_table"] = None
    budget = budget_settings(opts)  # malformed budgets fail here, before any data is loaded
    if req.verify_latency is not None:
        if budget is None or budget.metric != "latency":
            raise EdgeslimError("verify_latency checks a latency budget, and this run has none: add a latency target",
                                param="verify_latency")  # fmt: skip
        if not req.verify_latency >= 0:
            raise EdgeslimError(f"verify_latency must be a fraction >= 0, got {req.verify_latency}",
                                param="verify_latency")  # fmt: skip
        target = _latency_target(budget.to_dict())
        if target is not None and not target["here"]:  # refuse now, not after training
            raise EdgeslimError(
                f"verify_latency measures on this host, but the latency target is {target['profile'].name} "
                "(or a table measured elsewhere): drop it and measure the slim network on the device",
                param="verify_latency",
            )
    from edgeslim.pipelines.slim_yolo import is_yolo_data

    if req.imgsz is not None and not is_yolo_data(req.data_name):
        raise EdgeslimError(
            "imgsz is the training size of a YOLO on an ultralytics data yaml; an image classifier trains at "
            "its data set's size: drop it",
            param="imgsz",
        )
    if (req.mean is not None or req.std is not None) and is_yolo_data(req.data_name):
        raise EdgeslimError(
            "an ultralytics YOLO takes pixels / 255 as they are (no mean or std): drop mean and std",
            param=("mean", "std"),
        )
    checked_normalization(req.mean, req.std, None)
    check_strength(req.lam, req.shrink)
    check_params(req.penalty or "l1", **{k: opts.get(k) for k in ("p", "a", "g", "l")})
    _check_phases(req)
    from edgeslim.train.config import TrainConfig

    if not req.resume:  # (a resume keeps the run's settings: its note names what it ignores)
        TrainConfig.check_warmup(req.warmup_epochs, req.epochs)
    return {
        "budget": None if budget is None else budget.to_dict(),
        "expected_arch": expected,
        "alignment": align,
        "data_seed": resumed.get("seed", req.seed),
        "threads": req.threads if req.threads is not None else resumed.get("threads"),
        "run_table": resumed.get("run_table"),
    }


def _refuse_foreign_results(out_dir: Path) -> None:
    """Refuse to resume a slim run in ``out_dir`` where results it did not write lie there under the names
    its report and plots take (a bench's ``run.json`` and plots, a report.md that is no slim run's): a
    resume replaces them without ``force`` (a review: a bench run into the interrupted run's folder lost its
    report.md)."""
    from edgeslim.utils.rundir import LAYER_TIMES_PNG, MEMORY_PNG, RUN_FILE, RUN_REPORT_MD

    found = [n for n in (RUN_FILE, MEMORY_PNG, LAYER_TIMES_PNG) if (out_dir / n).is_file()]
    if (out_dir / RUN_REPORT_MD).is_file() and not _slim_report_md(out_dir / RUN_REPORT_MD):
        found.append(RUN_REPORT_MD)
    if found:
        raise EdgeslimError(
            f"{out_dir} holds results this run did not write ({', '.join(found)}: a bench's), whose report.md and "
            f"plots the resumed run would replace; move them into a folder of their own (e.g. {out_dir / 'bench'}) "
            "and resume"
        )


def _slim_report_md(path: Path) -> bool:
    """``path`` is a slim run's report.md (its first line: ``# edgeslim slim: ...``; a run stopped between its
    report.md and its report.json left one of its own)."""
    try:
        with path.open("rb") as f:
            return f.readline().startswith(b"# edgeslim slim:")
    except OSError:
        return False


def _has_train_state(path: Path) -> bool:
    """``path`` is an edgeslim checkpoint with a training state (read without running anything)."""
    if not path.is_file():
        return False
    from edgeslim.checkpoint import load_checkpoint_dict

    try:
        return bool(load_checkpoint_dict(path).get("train_state"))
    except EdgeslimError:
        return False


def _check_phases(req: SlimRequest) -> None:
    """Phase and prox-step settings, checked before any data is loaded."""
    from edgeslim.slim import SlimSettings

    keys = (
        "beta",
        "prox_warmup",
        "recovery",
        "prox_step",
        "beta_end",
        "recovery_lr",
        "importance",
        "penalty",
    )
    SlimSettings(**{k: getattr(req, k) for k in keys if getattr(req, k) is not None}).validate()


def run(
    req: SlimRequest,
    progress: Any = None,
    on_collapse: Any = None,
    say: Callable[[str], None] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Slim ``req.model`` into ``req.out_dir``; returns the report (also written as report.json and report.md).
    ``say`` shows a status line (a :class:`~edgeslim.errors.Notice`; default: a log warning). ``names``:
    what report.md calls the parameters its advice names (the CLI's flags; default: their Python names,
    :func:`~edgeslim.errors.renamed`). The
    caller's global random generators are as they were after it returns (the run seeds its own), and
    ``req`` as it was given: the values the run resolves (its channel multiple, a resume's data) are
    set on a copy and reported."""
    with kept_random_state():
        return _checked_run(copy.copy(req), progress, on_collapse, say, names)


def _checked_run(
    req: SlimRequest,
    progress: Any,
    on_collapse: Any,
    say: Callable[[str], None] | None,
    names: Mapping[str, str] | None = None,
) -> dict:
    from edgeslim.pipelines.rundir import slim_train_files
    from edgeslim.slim import REPORT_FILE, SLIM_FILE, TRAIN_DIR

    extra = check(req)
    from edgeslim.pipelines import slim_yolo

    if slim_yolo.is_yolo_data(req.data_name):  # a YOLO on its data yaml: ultralytics trains it
        from edgeslim.slim import CollapseError

        try:
            return slim_yolo.run(req, slim_yolo.check(req), extra["budget"])
        except CollapseError:  # (its outputs are written, as a classifier's)
            if on_collapse is not None:
                on_collapse(req.out_dir)
            raise
    if not req.resume:
        from edgeslim.pipelines.source import refuse_compiled, refuse_non_classifier

        refuse_compiled(str(req.model), "training")  # whatever the trust: training cannot use it
        refuse_non_classifier(str(req.model), req.data_name, trust_pickle=req.trust_pickle,
                              target_param="model" if req.init is None else "init")  # fmt: skip
    out_dir = Path(req.out_dir)
    stale = SLIM_STALE
    if not (req.force or req.resume) and _left_lookup(out_dir, extra["budget"]):  # (reused: _reused_lookup)
        stale = tuple(name for name in SLIM_STALE if name != TABLE_FILE)
    with run_directory(out_dir, force=req.force, resume=req.resume, markers=(REPORT_FILE, SLIM_FILE),
                       interrupted=TRAIN_DIR, run_files=slim_train_files, stale=stale,
                       inputs=(req.model, req.init, req.weights, req.latency_table)), \
            torch_threads(extra["threads"]):  # fmt: skip
        return _run(req, extra, progress, on_collapse, say or log.warning, names)


def _run(
    req: SlimRequest,
    extra: dict[str, Any],
    progress: Any,
    on_collapse: Any,
    say: Callable[[str], None],
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    import torch

    from edgeslim.checkpoint import check_not_rebuilt_from, load_model
    from edgeslim.data import load_dataset
    from edgeslim.data.datasets import canonical_name
    from edgeslim.slim import TRAIN_DIR, CollapseError, SlimSettings, slim_model
    from edgeslim.train.config import TrainConfig

    opts = {k: v for k, v in req.options().items() if v is not None}
    opts.update({k: v for k, v in extra.items() if v is not None})
    out_dir = Path(req.out_dir)
    image_size = req.image_size
    if image_size is None and not req.resume and canonical_name(req.data_name) == "imagefolder":
        image_size = recorded_input_size(req.model)  # (a checkpoint's own size, as export checks it)
    bundle = load_dataset(
        req.data_name, req.data_dir, subset=req.subset, test_subset=req.test_subset,
        seed=int(extra.get("data_seed") or 0), cache_dir=req.cache_dir, image_size=image_size,
    )  # fmt: skip
    train_state = None
    params = {k: float(opts[k]) for k in ("p", "a", "g", "l") if opts.get(k) is not None}
    given = ("lam", "shrink", "beta", "penalty", "round_to", "budget", "zero_invariant", "prox_warmup",
             "recovery", "prox_step", "beta_end", "recovery_lr", "importance")  # fmt: skip
    settings = SlimSettings(params=params, **{k: opts[k] for k in given if opts.get(k) is not None})
    train_over = {k: opts[k] for k in TRAIN_KEYS if opts.get(k) is not None}
    if req.resume:
        loaded = load_model(out_dir / TRAIN_DIR / MODEL_FILE, trust_pickle=req.trust_pickle)
        if loaded.spec is None or not loaded.train_state:
            raise EdgeslimError(
                f"{out_dir / TRAIN_DIR / 'model.pt'} holds no training state; start over with force"
            )
        model, spec, train_state = loaded.model, loaded.spec, loaded.train_state
        check_resumed_images(loaded.meta.get("data_args"), bundle)  # (its folder's files, as they were)
        recorded = loaded.meta  # (the run's own normalization)
        meta = {
            k: loaded.meta[k]
            for k in ("source", "weights", "head", "data_args", "alignment", "device", TABLE_DIGEST)
            if k in loaded.meta
        }
        # every option given (a 0 or False too: --lambda 0, --no-zero-invariant, --seed 0 went unnamed)
        ignored = [k for k, v in req.options().items() if k not in RESUME_KEEPS and v is not None]
        if ignored:
            named = ["the model given" if k == "model" else k for k in ignored]
            say(Notice(f"resume continues with the run's saved settings; ignoring {', '.join(named)}",
                       tuple(ignored)))  # fmt: skip
        saved = dict(loaded.meta.get("slimming") or {})
        # "lam" holds the lambda the run resolved; the shrink it was planned from stays in its report (a
        # trial's resumed run advised "lower lambda" where the run was given a shrink)
        meta["planned_shrink"] = {
            k: saved[k] for k in ("shrink", "default_shrink") if saved.get(k) is not None
        }
        saved["shrink"] = None
        if "recovery_lr" in saved and saved["recovery_lr"] is None:  # (resolved: no restart)
            saved["recovery_lr"] = "off"
        if extra.get("run_table"):
            saved["budget"] = {**saved["budget"], "latency_table": extra["run_table"]}
        settings = SlimSettings(**{k: v for k, v in saved.items() if k in SlimSettings.__dataclass_fields__})
        config = TrainConfig.from_dict({**train_state["config"], "device": train_over.get("device", "auto")})
    else:
        torch.manual_seed(int(req.seed or 0))
        model, spec, meta, recorded = _source_model(str(req.model), opts, bundle, req.trust_pickle)
        for name in (MODEL_FILE, TRAINED_FILE, f"{TRAIN_DIR}/{MODEL_FILE}"):  # (the run's checkpoints)
            check_not_rebuilt_from({"out_dir": out_dir / name}, spec)
        config = TrainConfig(**train_over)
        meta["data_args"] = {k: recorded_dir(opts.get(k)) if k == "data_dir" else opts.get(k)
                             for k in ("data_name", "data_dir", "subset", "test_subset")}  # fmt: skip
        meta["data_args"]["seed"] = int(req.seed or 0)  # (it chose the subset's images)
        meta["data_args"]["images"] = data_images(bundle)  # (a resume is refused on other files)
        meta = {"source": req.model, **meta}
        if req.profile:  # the device the run is for (a resume predicts for it, not for what is given then)
            meta["device"] = {"profile": req.profile, "precision": req.precision}
        if extra.get("alignment"):
            meta["alignment"] = dict(extra["alignment"])
            if meta["alignment"]["from"] == "profile":  # the user did not ask for this multiple
                _reachable_alignment(model, spec, settings, meta["alignment"], say)
    if req.resume or "head" not in meta:  # the model's own head: the labels in the order of its outputs
        bundle = bundle.in_class_order((recorded or {}).get("class_names"))
    # (a resume keeps the run's own normalization, as its other settings, without a notice)
    if req.resume:
        bundle = _normalized(bundle, (None, None), recorded, lambda _m: None)
    else:
        bundle = _normalized(bundle, (req.mean, req.std), recorded, say)
    latency = _latency_target(settings.budget)  # a latency budget, or a budget priced in latency
    host_default = (
        latency is not None
        and not req.resume
        and req.profile is None
        and not settings.budget.get("latency_table")
    )
    reused = None
    if (
        latency is not None
        and not req.resume
        and latency["here"]
        and not settings.budget.get("latency_table")
    ):
        if (out_dir / TABLE_FILE).is_file():  # a stopped run's own lookup, kept: _left_lookup
            table = reused = _reused_lookup(out_dir / TABLE_FILE, model, spec, settings, latency["profile"],
                                            meta.get("alignment"), say)  # fmt: skip
        else:
            table = _latency_lookup(model, spec, settings, out_dir, latency["profile"], meta.get("alignment"),
                                    progress, say)  # fmt: skip
        settings.budget["latency_table"] = str(Path(table).absolute())
    if not req.resume and settings.budget and settings.budget.get("latency_table"):
        from edgeslim.utils.io import file_digest

        meta[TABLE_DIGEST] = file_digest(settings.budget["latency_table"])  # (a resume is refused on another)
    checked = latency is not None and latency["is_budget"]  # (the run is finished once its check is)
    try:
        res = slim_model(model, spec, bundle, config, settings, out_dir, progress=progress, resume=train_state,
                         meta=meta, report_files=not checked, names=names)  # fmt: skip
    except CollapseError:
        if on_collapse is not None:
            on_collapse(out_dir)
        raise
    if reused is not None:
        say(Notice(f"the latency lookup {reused} was reused: an earlier run measured it for this network and "
                   "settings, and ended before its first checkpoint; pass force to measure it again",
                   "force"))  # fmt: skip
    if host_default:  # (said once the run stands: bad input gets its one line alone)
        say(Notice(f"no profile given: the latency was measured on this host ({latency['profile'].name}, ONNX "
                   "Runtime) and channel counts follow its kernels; for a device, give its profile (e.g. "
                   "jetson-orin-nano-8gb)", "profile"))  # fmt: skip
    device = meta.get("device")
    if device and not (latency is not None and latency["is_budget"]):  # speed on the device, not MACs only
        from edgeslim.pipelines.latency import predicted_speed
        from edgeslim.slim import write_report

        res.report["predicted_latency"] = predicted_speed(
            res.trained,
            spec.input_shape,
            device["profile"],
            device["precision"],
            round_to=settings.round_to,
            zero_invariant=bool(settings.zero_invariant),
        )
        write_report(out_dir, res.report, names)
    if checked:  # report.json is written after it: a run stopped in it resumes to do it (a review)
        from edgeslim.export.validate import bundle_inputs
        from edgeslim.pipelines.latency import latency_check, verify
        from edgeslim.slim import write_report

        try:
            check = latency_check(res.trained, res.slim, spec.input_shape, out_dir, res.report["budget"],
                                  here=latency["here"], profile=latency["profile"], table=latency["table"],
                                  inputs=bundle_inputs(bundle), arch=spec.arch, recipe=res.recipe)  # fmt: skip
        except EdgeslimError:  # (an export it cannot check: the run is complete without it, as it says)
            write_report(out_dir, res.report, names)
            raise
        res.report["latency"] = check
        if check.get("measured") and (res.report.get("plots") or {}).get(
            "budget"
        ):  # (its title: measured too)
            from edgeslim.slim import plot_trajectory

            plot_trajectory(res.report["budget"], out_dir / res.report["plots"]["budget"],
                            final_accuracy=res.report["accuracy"].get("slim"),
                            measured_fraction=check["measured_fraction"])  # fmt: skip
        for broke in check.get("warnings", ()):  # (a simplifier that broke dense.onnx or slim.onnx)
            say(broke)
        over = check["measured_over_target"] - 1 if check.get("measured") else 0.0
        # (with verify_latency the miss is refused instead)
        if over > LATENCY_MISS_TOLERANCE and req.verify_latency is None:  # (shown with the run's warnings)
            loaded = ";"
            if check.get("unsteady"):  # (bench's busy-machine and spread checks)
                cv = ", ".join(f"{label} {v:.0%}" for label, v in check["cv"].items())
                load = f"load average {check['load_avg']:.1f}, " if check.get("load_avg") is not None else ""
                loaded = (
                    f"; the timing was unsteady ({load}CV {cv}: {len(check['unsteady'])} warning(s) as bench gives "
                    "them, in report.json latency.unsteady), so the miss may be the machine's load: time the pair "
                    "again on an idle machine before you"
                )
            check["warning"] = Notice(
                f"latency target missed as measured: {check['measured_ms']:.4g} ms for a target of "
                f"{check['target_ms']:.4g} ms ({over:+.1%}, the lookup predicted {check['predicted_ms']:.4g} ms)"
                f"{loaded} slim again with a smaller target, or give verify_latency to fail such a run",
                "verify_latency",
            )
        write_report(out_dir, res.report, names)
        if req.verify_latency is not None:
            verify(check, float(req.verify_latency))
    return res.report


def _reachable_alignment(
    model: Any, spec: Any, settings: Any, align: dict[str, Any], say: Callable[[str], None] = log.warning
) -> None:
    """A MAC or parameter budget that the profile's channel multiple cannot reach gets the largest
    halved multiple that can (16 -> 8 -> ... -> 1) instead of a refusal; ``settings.round_to`` and
    ``align`` are updated (``align["reduced_from"]``) and ``say`` says so (naming zero_invariant where
    it would reach the budget at the profile's multiple). A target no multiple reaches is left to the
    controller's one-line error."""
    import torch

    from edgeslim.sparsity.budget import BudgetSettings, absolute_target
    from edgeslim.sparsity.resource import build_resource

    budget = BudgetSettings.from_dict(settings.budget) if settings.budget else None
    if budget is None or budget.metric not in ("macs", "params") or settings.round_to <= 1:
        return
    res = build_resource(
        model, torch.zeros(1, *spec.input_shape), budget.metric, shifts_zeroed=settings.zero_invariant
    )  # one trace for every multiple
    target = absolute_target(budget, res)
    r = settings.round_to
    while r >= 1 and target < res.narrowest(r):
        r //= 2
    if r in (0, settings.round_to):
        return
    zi = res.zero_invariant  # (squeeze-excitation-gated channels, kept only for their BN shifts)
    gated = zi is not None and target >= zi.narrowest(settings.round_to)
    _reduce_alignment(settings, align, r, "the budget", say, zero_invariant=gated)


def _reduce_alignment(
    settings: Any,
    align: dict[str, Any],
    r: int,
    what: str,
    say: Callable[[str], None] = log.warning,
    zero_invariant: bool = False,
) -> None:
    """Keep channel counts in multiples of ``r`` instead of the profile's ``settings.round_to``,
    which cannot reach ``what``: ``say`` warns, ``align["reduced_from"]`` and the new multiple.
    ``zero_invariant``: zero-invariant slimming would reach it at the profile's multiple (say so, and
    ``align["zero_invariant_keeps"]``)."""
    keep = (
        f"give zero_invariant=True (the channels squeeze-excitation gates multiply are then removable) or a "
        f"larger target to keep {settings.round_to}"
        if zero_invariant
        else f"give a larger target to keep {settings.round_to}"
    )
    say(Notice(
        f"{what} is below the narrowest network with channel counts in multiples of {settings.round_to} "
        f"({align.get('profile')} {align.get('precision')}); keeping multiples of {r} instead (less of the "
        f"alignment's speed-up; {keep})",
        "zero_invariant" if zero_invariant else None,
    ))  # fmt: skip
    align["reduced_from"], align["round_to"] = settings.round_to, r
    if zero_invariant:  # (the run's summary says so beside the multiple)
        align["zero_invariant_keeps"] = True
    settings.round_to = r


def _latency_lookup(
    model: Any,
    spec: Any,
    settings: Any,
    out_dir: Path,
    profile: Any,
    align: dict[str, Any] | None,
    progress: Any = None,
    say: Callable[[str], None] = log.warning,
) -> Path:
    """Measure the latency lookup at the run's channel multiple (a target it shows out of reach writes
    nothing). When the multiple came from the profile and the narrowest network in it is slower than
    the target, the multiple is halved (16 -> 8 -> ... -> 1) and the lookup's sweeps and calibration
    measured again (its per-layer times are kept), until one reaches it (a lookup cannot predict
    below its own multiple: its sweeps step at it);
    ``settings.round_to`` and ``align`` are updated and ``say`` says so (:func:`_reduce_alignment`, naming
    zero_invariant where the narrowest zero-invariant network at the profile's multiple, timed whole,
    reaches the target). A latency target below the narrowest network's measured time (at the finest
    multiple the run may take) is refused first, in seconds
    (:func:`~edgeslim.sparsity.budget.refuse_below_measured`, naming zero_invariant where it reaches it).
    ``progress``: the run's rich Progress (a task shows each stage and layer swept; a review: minutes of
    measuring without a word on a terminal), or None."""
    from edgeslim.pipelines.latency import measure_narrowest, measure_table
    from edgeslim.sparsity.budget import (
        BudgetSettings,
        BudgetUnreachable,
        below_measured,
        refuse_below_measured,
        resolve_target,
    )
    from edgeslim.utils.console import task_steps

    batch = int(settings.budget.get("batch", 1))
    budget = BudgetSettings.from_dict(settings.budget)
    adjustable = bool(align) and align.get("from") == "profile"
    r = settings.round_to
    cache: dict[str, Any] = {}  # the per-layer times, measured once for every multiple
    step = task_steps(progress, "latency lookup")
    if budget.metric == "latency":  # (a price has no target to reach) refused in seconds, not after minutes
        finest = 1 if adjustable else r  # (the multiple the halvings below end at)
        dense_ms, narrowest_ms = measure_narrowest(model, spec.input_shape, batch, profile, finest,
                                                   bool(settings.zero_invariant))  # fmt: skip
        # (where a multiple the user gave is out of reach: would one channel per group reach it?)
        one_ms = None
        if finest > 1 and below_measured(budget, dense_ms, narrowest_ms):
            d1, n1 = measure_narrowest(
                model, spec.input_shape, batch, profile, 1, bool(settings.zero_invariant)
            )
            one_ms = n1 / d1 * dense_ms  # (its share of its own interleaved dense time)
        zi_ms = (
            None  # (squeeze-excitation-gated channels kept for their shifts: would zero_invariant reach it?)
        )
        if below_measured(budget, dense_ms, narrowest_ms) and _gated(model, spec, settings):
            dz, nz = measure_narrowest(model, spec.input_shape, batch, profile, finest, zero_invariant=True)
            zi_ms = nz / dz * dense_ms
        refuse_below_measured(budget, dense_ms, narrowest_ms, finest, one_ms, zi_ms)
        if step is not None:  # (after the refusal: a refused target is one line, even when piped)
            step(0, 0, f"dense {dense_ms:.3g} ms, narrowest {narrowest_ms:.3g} ms (timed whole)")
    while True:

        def budget_ok(tab: dict[str, Any], r: int = r) -> None:
            res = _priced(model, spec, settings, tab, r)
            try:
                resolve_target(budget, res)
            except BudgetUnreachable as exc:
                if not adjustable or r <= 1:
                    raise
                raise _Halve from exc

        try:
            table = measure_table(
                model, spec.input_shape, out_dir, batch, profile, r, cache=cache,
                check=budget_ok if budget.metric == "latency" else None,  # a price has no target to reach
                progress=step, zero_invariant=bool(settings.zero_invariant),
            )  # fmt: skip
            break
        except _Halve:
            log.info(
                "the latency target is out of reach in multiples of %d: measuring multiples of %d", r, r // 2
            )
            r //= 2
    if step is not None:
        step(1, 1, f"written: {table.name}")
    if r != settings.round_to:
        gated = _zero_invariant_reaches(model, spec, settings, profile)
        _reduce_alignment(settings, align, r, "the latency target", say, zero_invariant=gated)
    return table


def _zero_invariant_reaches(model: Any, spec: Any, settings: Any, profile: Any) -> bool:
    """Whether a latency target out of the lookup's reach at the profile's multiple (``settings.round_to``)
    is within that of the narrowest zero-invariant network there, timed whole (seconds), where the run
    keeps squeeze-excitation-gated channels: what a halved multiple's note names."""
    from edgeslim.pipelines.latency import measure_narrowest
    from edgeslim.sparsity.budget import BudgetSettings, below_measured

    budget = BudgetSettings.from_dict(settings.budget)
    if budget.metric != "latency" or not _gated(model, spec, settings):
        return False
    batch = int(settings.budget.get("batch", 1))
    dense_ms, narrowest_ms = measure_narrowest(
        model, spec.input_shape, batch, profile, settings.round_to, True
    )
    return not below_measured(budget, dense_ms, narrowest_ms)


def _gated(model: Any, spec: Any, settings: Any) -> bool:
    """Whether the run keeps channels a squeeze-excitation gate multiplies (no removal candidates
    without ``settings.zero_invariant``, :func:`~edgeslim.sparsity.resource.removal_candidates`)."""
    if settings.zero_invariant:
        return False
    import torch

    from edgeslim.sparsity.resource import removal_candidates

    return removal_candidates(model, torch.zeros(1, *spec.input_shape))["gated"] > 0


def _left_lookup(out_dir: Path, budget: dict[str, Any] | None) -> bool:
    """Whether ``out_dir`` holds the latency lookup a run measured there (stopped before its first
    checkpoint: a later one is a run to resume) that a run of ``budget`` would measure too: it is not an
    earlier run's result to refuse, but kept for :func:`_reused_lookup`."""
    if (
        not budget
        or budget.get("latency_table")
        or "latency" not in (budget.get("metric"), budget.get("price"))
    ):
        return False
    from edgeslim.pipelines.latency import own_lookup

    latency = _latency_target(budget)
    return bool(latency and latency["here"]) and own_lookup(out_dir / TABLE_FILE) is not None


def _reused_lookup(
    path: Path,
    model: Any,
    spec: Any,
    settings: Any,
    profile: Any,
    align: dict[str, Any] | None,
    say: Callable[[str], None] = log.warning,
) -> Path:
    """The lookup a run stopped before its first checkpoint measured into ``path`` (:func:`_left_lookup`),
    priced with instead of measured again (minutes on a device; a review: rerunning was refused for it, as
    was resuming, and force measured it again): refused in one line unless :func:`_latency_lookup` would
    measure it so now (network, batch, input, ONNX Runtime settings, zero_invariant, channel multiple: a
    profile's, or a halving of it that ``settings`` and ``align`` then take)."""
    from edgeslim.pipelines.latency import lookup_differs, own_lookup
    from edgeslim.sparsity.budget import BudgetSettings, BudgetUnreachable, resolve_target

    table = own_lookup(path)
    batch = int(settings.budget.get("batch", 1))
    if table is None:  # (replaced since the run's folder was checked)
        raise EdgeslimError(f"{path} is not a latency lookup a run measured; pass force=True to measure one",
                            param="force")  # fmt: skip
    why = lookup_differs(table, spec.input_shape, batch, profile, bool(settings.zero_invariant))
    r, wanted = int((table.get("calibration") or {}).get("round_to") or 0), settings.round_to
    halved = bool(align) and align.get("from") == "profile" and 0 < r < wanted and wanted % r == 0
    if why is None and r != wanted and not halved:
        why = f"channel multiples of {r}, not {wanted}"
    if why is None:
        try:
            res = _priced(model, spec, settings, table, r)
            if settings.budget.get("metric") == "latency":
                resolve_target(BudgetSettings.from_dict(settings.budget), res)
        except BudgetUnreachable:
            why = f"another target (this one is out of its reach in multiples of {r})"
        except EdgeslimError:
            why = "another network (its layers or widths differ)"
    if why is not None:
        raise EdgeslimError(
            f"{path} holds the latency lookup an earlier run measured for {why}; pass force=True to measure it "
            "again (or move it away)",
            param="force",
        )
    if r != wanted:
        gated = _zero_invariant_reaches(model, spec, settings, profile)
        _reduce_alignment(settings, align, r, "the latency target", say, zero_invariant=gated)
    return path


def _priced(model: Any, spec: Any, settings: Any, table: dict[str, Any], round_to: int) -> Any:
    """The resource model pricing ``model`` by the latency lookup ``table`` at channel multiples of
    ``round_to``, at the run's batch and removability (``settings``): what a lookup's target is resolved
    on, measured (:func:`_latency_lookup`) or reused (:func:`_reused_lookup`)."""
    import torch

    from edgeslim.sparsity.resource import build_resource

    return build_resource(model, torch.zeros(1, *spec.input_shape), "latency", latency_table=table,
                          round_to=round_to, batch=int(settings.budget.get("batch", 1)),
                          shifts_zeroed=settings.zero_invariant)  # fmt: skip


class _Halve(Exception):
    """The lookup at one channel multiple cannot reach the target: measure again at half of it."""


def _latency_target(budget: dict[str, Any] | None) -> dict[str, Any] | None:
    """For a latency budget or a budget priced in latency: the device profile, whether this host is
    the target (measurable now), and whether the budget itself is a latency (``is_budget``)."""
    if not budget or "latency" not in (budget.get("metric"), budget.get("price")):
        return None
    from edgeslim.channels.devices import DEFAULT_PROFILE, load_profile
    from edgeslim.pipelines.latency import measured_here
    from edgeslim.sparsity.resource import load_latency_table

    with naming("latency_table"):
        table = load_latency_table(budget["latency_table"]) if budget.get("latency_table") else None
    if table is not None and table.get("backend") in ("trtexec", "tensorrt") and not budget.get("profile"):
        raise EdgeslimError(  # (a trial's counts followed host-cpu, and its device command timed the CPU)
            f"the latency table was measured with TensorRT ({table['backend']}) on a device; give that device's "
            "profile (e.g. jetson-orin-nano-8gb) and precision: the table holds times, not the device's channel "
            "alignment, and without them counts follow host-cpu's",
            param=("profile", "precision"),
        )
    profile = load_profile(budget.get("profile") or DEFAULT_PROFILE)
    return {"profile": profile, "here": measured_here(profile, table), "table": table,
            "is_budget": budget.get("metric") == "latency"}  # fmt: skip


def _norm_text(mean: list[float], std: list[float]) -> str:
    """``(x - mean) / std`` as a line shows it (a list where there are several channels)."""
    one = [f"{v:.4g}" for v in mean], [f"{v:.4g}" for v in std]
    m, s = (v[0] if len(v) == 1 else f"[{','.join(v)}]" for v in one)
    return f"(x - {m}) / {s}"


def _normalized(
    bundle: Any, given: tuple[Any, Any], recorded: dict[str, Any] | None, say: Callable[[Any], None]
) -> Any:
    """``bundle`` normalizing its images as the model is trained with: the ``given`` (mean, std), else
    what the model records (a checkpoint's, a resumed run's), else the data set's own statistics."""
    import dataclasses

    norm = checked_normalization(given[0], given[1], bundle.in_channels, f"{bundle.name}'s images have")
    if norm is None:
        rec = recorded or {}
        mean, std = rec.get("mean"), rec.get("std")
        if mean is None or std is None or not len(mean) == len(std) == bundle.in_channels:
            return bundle
        norm = ([float(v) for v in mean], [float(v) for v in std])
        own = (list(bundle.mean), list(bundle.std))
        if all(abs(a - b) <= 1e-4 for a, b in zip(norm[0] + norm[1], own[0] + own[1])):
            return bundle

        say(Notice(f"images are normalized as the model records, {_norm_text(*norm)}, not with {bundle.name}'s "
                   f"own statistics, {_norm_text(*own)}; give mean and std to choose", ("mean", "std")))  # fmt: skip
    return dataclasses.replace(bundle, mean=tuple(norm[0]), std=tuple(norm[1]))


def _source_model(
    target: str, opts: dict[str, Any], bundle: Any, trust_pickle: bool
) -> tuple[Any, Any, dict, dict]:
    """(model, spec, meta, what the file records) to slim: a checkpoint, a trusted pickle, or an
    architecture (+ --weights), with the classifier head replaced when ``--num-classes`` asks for
    the data set's class count."""
    from edgeslim.checkpoint import looks_like_file
    from edgeslim.models.user import with_classes
    from edgeslim.pipelines.source import load_model_or_arch, spec_for_pickle

    weights = opts.get("weights")
    # an architecture starts with the data set's classes; with weights or from a file, its own count
    own_head = weights is not None or looks_like_file(target)
    loaded = load_model_or_arch(
        target, trust_pickle=trust_pickle, input_shape=bundle.input_shape, shape_from_data=True,
        num_classes=None if own_head else bundle.num_classes, weights=weights,
    )  # fmt: skip
    meta: dict[str, Any] = {} if weights is None else {"weights": str(weights)}
    if loaded.recipe:
        raise EdgeslimError(
            f"{target} is already slimmed (it has a surgery recipe); start from a dense model"
        )
    model, spec = loaded.model, loaded.spec
    expected = opts.get("expected_arch")
    if expected and spec is not None and spec.arch != expected:
        raise EdgeslimError(
            f"{expected} differs from the architecture of init {target} ({spec.arch}); drop the name",
            param="init",
        )
    if loaded.kind == "pickle":  # rebuilt from the same file: pickle:PATH (needs --trust-pickle)
        spec = spec_for_pickle(loaded, bundle.input_shape, default_classes=bundle.num_classes)
    wanted = opts.get("num_classes")
    if spec.num_classes != bundle.num_classes:
        if wanted is None:
            raise EdgeslimError(
                f"the model has {spec.num_classes} classes but {bundle.name} has {bundle.num_classes}; pass "
                f"num_classes {bundle.num_classes} to replace the classifier head (it is trained from scratch)",
                param="num_classes",
            )
    if wanted is not None and wanted != bundle.num_classes:
        where = f" in {opts['data_dir']}" if opts.get("data_dir") else ""
        raise EdgeslimError(
            f"num_classes {wanted} differs from the {bundle.num_classes} classes of {bundle.name}{where} "
            f"({', '.join(map(str, bundle.class_names[:6]))}{', ...' if bundle.num_classes > 6 else ''}); give "
            f"{bundle.num_classes}, or drop it if the model has {bundle.num_classes} already",
            param="num_classes",
        )
    if wanted is not None:
        model, spec, change = with_classes(model, spec, wanted, trust_pickle=trust_pickle)
        if change is not None:
            meta["head"] = change
    return model, spec, meta, dict(loaded.meta or {})


def budget_settings(opts: dict[str, Any]) -> Any:
    """Budget settings from CLI/config options (``target_macs``, ``target_params``, ``target_latency``,
    ``profile``, ``latency_table``, ``precision``, ``latency_batch``, ``taper_end``, ``cost_exponent``, ``price``); ``None`` without a
    target. Validated. ``latency_batch`` is the batch a latency budget is predicted at (default 1)."""
    from edgeslim.sparsity.budget import METRICS, BudgetSettings
    from edgeslim.sparsity.prox import check_strength

    targets = tuple(f"target_{k}" for k in METRICS)
    given = [(k, opts[f"target_{k}"]) for k in METRICS if opts.get(f"target_{k}") is not None]
    if not given:
        for k in ("latency_table", "latency_batch", "taper_end", "cost_exponent", "price"):
            if opts.get(k) is not None:
                raise EdgeslimError(
                    f"{k} only applies with a budget (target_macs, target_params or target_latency)",
                    param=(k, *targets),
                )
        return None
    if len(given) > 1:
        raise EdgeslimError("give one budget: target_macs, target_params or target_latency", param=targets)
    check_strength(None, opts.get("shrink"), budget=True)
    metric, target = given[0]
    profile = opts.get("profile")
    price = opts.get("price")
    if "latency" in (metric, price) and profile is None and opts.get("latency_table") is None:
        from edgeslim.channels.devices import DEFAULT_PROFILE

        profile = DEFAULT_PROFILE
    st = BudgetSettings(metric=metric, target=str(target), profile=profile,
                        latency_table=None if opts.get("latency_table") is None
                        else str(Path(opts["latency_table"]).expanduser().absolute()),
                        precision=opts.get("precision"), price=price)  # fmt: skip
    if opts.get("latency_table") is not None and "latency" not in (metric, price):  # (was ignored)
        raise EdgeslimError(
            "latency_table prices channels by measured latency: it goes with target_latency (or price latency)",
            param=("latency_table", "target_latency", "price"),
        )
    if opts.get("latency_batch") is not None:
        if "latency" not in (metric, price):
            raise EdgeslimError(
                "latency_batch is the batch a latency is priced at: it goes with target_latency (or price "
                "latency)",
                param=("latency_batch", "target_latency", "price"),
            )
        st.batch = int(opts["latency_batch"])
    if opts.get("taper_end") is not None:
        st.taper_end = float(opts["taper_end"])
    if opts.get("cost_exponent") is not None:
        st.cost_exponent = float(opts["cost_exponent"])
    st.validate()
    return st
