"""``slim`` for an ultralytics YOLO: ultralytics trains it on its own data yaml (its loss, its
augmentation, its validation) with :class:`edgeslim.train.ultralytics.UltralyticsSlimming`
attached; then surgery on the ``last.pt`` it saved writes the slim checkpoint.

Run directory: ``train/`` (ultralytics' own run: ``weights/best.pt``, ``last.pt``,
``results.csv``), ``model.pt`` (slim), ``report.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from edgeslim.errors import EdgeslimError, Notice, first_line
from edgeslim.utils.rundir import MODEL_FILE as SLIM_FILE
from edgeslim.utils.rundir import REPORT_FILE, SLIM_STALE, START_FILE, TRAIN_DIR, YOLO_RUN_MARK

#: SlimRequest fields that apply to a YOLO run (the others are refused when given)
APPLIES = frozenset(
    "out_dir model data_name epochs batch_size seed device threads lam shrink beta penalty p a g l round_to "
    "zero_invariant prox_warmup recovery prox_step profile precision imgsz force trust_pickle target_macs "
    "target_params target_latency latency_table latency_batch taper_end cost_exponent weights num_classes".split()
)
#: training size when neither imgsz nor the checkpoint gives one (ultralytics' default)
DEFAULT_IMGSZ = 640
#: epochs when not given (edgeslim's default, as --help states; ultralytics' own is 100)
DEFAULT_EPOCHS = 10
#: the slim network's mAP50-95 below this share of the given model's counts as collapsed
COLLAPSE_FRACTION = 0.25
#: ... when the given model's is above this (below it, a small validation set's mAP is mostly noise: a
#: fall is warned about, not refused)
COLLAPSE_FLOOR = 0.05


def is_yolo_data(data_name: str | None) -> bool:
    """An ultralytics data set: a ``.yaml`` file naming its images and classes (``coco8.yaml``)."""
    return bool(data_name) and str(data_name).lower().endswith((".yaml", ".yml"))


def yolo_source(model: str | None) -> str | None:
    """What ultralytics' ``YOLO()`` loads for ``model`` (a ``yolo:`` name, a yaml or an ultralytics
    checkpoint), or None when ``model`` is not an ultralytics model."""
    from edgeslim.models.yolo import PREFIX, is_ultralytics_checkpoint

    if not model:
        return None
    if model.startswith(f"{PREFIX}:"):
        name = model[len(PREFIX) + 1 :]
        return name if name.lower().endswith((".yaml", ".yml", ".pt", ".pth")) else f"{name}.yaml"
    if Path(model).is_file() and is_ultralytics_checkpoint(model):
        return model
    return None


def check(req: Any) -> str:
    """Refuse what a YOLO run cannot do, before anything is written; returns the model source."""
    source = yolo_source(req.model)
    if source is None:
        raise EdgeslimError(
            f"{req.data_name} is an ultralytics data yaml, which trains an ultralytics YOLO; {req.model} is not "
            "one (give yolo:NAME, yolo:my.yaml or an ultralytics best.pt), or give an image data set",
            param="data_name",
        )
    if not Path(str(req.data_name)).is_file():
        raise EdgeslimError(f"data yaml {req.data_name} does not exist; check the path", param="data_name")
    _check_data_yaml(Path(str(req.data_name)))
    given = [k for k, v in req.options().items() if k not in APPLIES and v not in (None, False)]
    if given:
        raise EdgeslimError(
            f"a YOLO is trained by ultralytics here, where {', '.join(given)} "
            f"{'does' if len(given) == 1 else 'do'} not apply; drop {'it' if len(given) == 1 else 'them'} "
            "(a budget: target_macs, target_params or target_latency)",
            param=(*given, "target_macs", "target_params", "target_latency"),
        )
    if req.target_latency is not None and not (req.profile or req.latency_table):
        raise EdgeslimError(
            "a YOLO's latency target needs profile (a device's, e.g. jetson-orin-nano-8gb, which the latency is "
            "predicted for) or latency_table (measured per-layer times); this host's lookup is measured for "
            "image classifiers only",
            param=("profile", "latency_table"),
        )
    checkpoint = _is_checkpoint(source)
    if checkpoint and not Path(source).is_file():  # (ultralytics would try to download a file of that name)
        raise EdgeslimError(f"ultralytics checkpoint {source} does not exist; check the path", param="model")
    if (req.weights is not None or req.num_classes is not None) and checkpoint:
        raise EdgeslimError(
            f"{source} is an ultralytics checkpoint, which holds the model's parameters and classes; drop weights "
            "and num_classes (they go with a yaml: yolo:yolov8n)",
            param=("weights", "num_classes"),
        )
    if req.num_classes is not None and req.weights is None:
        raise EdgeslimError(
            "num_classes goes with weights (a state_dict of another class count); ultralytics takes the "
            "classes of a model built from its yaml from the data yaml",
            param=("num_classes", "weights"),
        )
    if req.weights is not None and not Path(str(req.weights)).is_file():
        raise EdgeslimError(f"weights file {req.weights} does not exist; check the path", param="weights")
    if not checkpoint:  # a yaml can name code that ultralytics evaluates as it builds the model
        from edgeslim.models.registry import check_trusted

        check_trusted(f"yolo:{source}", bool(req.trust_pickle))
    if checkpoint and not req.trust_pickle:
        raise EdgeslimError(
            f"{source} is an ultralytics checkpoint, a pickle that can run code when loaded; pass "
            "trust_pickle=True if you trust it",
            param="trust_pickle",
        )
    from edgeslim.sparsity.prox import check_strength

    check_strength(
        req.lam, req.shrink, budget=bool(req.target_macs or req.target_params or req.target_latency)
    )
    if req.imgsz is not None and not (isinstance(req.imgsz, int) and req.imgsz >= 32 and req.imgsz % 32 == 0):
        raise EdgeslimError(
            f"imgsz must be a multiple of 32 (the largest stride), got {req.imgsz}", param="imgsz"
        )
    return source


def _is_checkpoint(source: str) -> bool:
    """Whether ``source`` (what ``YOLO()`` loads) is a trained checkpoint, not a yaml."""
    return source.lower().endswith((".pt", ".pth"))


def _start_checkpoint(req: Any, source: str, out_dir: Path) -> str:
    """Write ``out_dir/start.pt``: the yaml's model with the state_dict ``req.weights`` (and its
    ``req.num_classes``), saved as ultralytics saves one (``YOLO.save``), for its trainer to start
    from (a model built from a yaml is re-initialised by it), with the yaml's task (ultralytics
    reads a checkpoint without one as a detector's). Returns its path."""
    from edgeslim.models.yolo import ultralytics_yolo
    from edgeslim.pipelines.source import load_model_or_arch
    from edgeslim.utils.io import atomic_path

    loaded = load_model_or_arch(
        f"yolo:{source}", trust_pickle=req.trust_pickle, weights=req.weights, num_classes=req.num_classes
    )
    yolo = ultralytics_yolo(source)
    loaded.model.task = yolo.task  # (what ultralytics' loader takes first, then train_args' task)
    yolo.ckpt = {**(yolo.ckpt or {}), "train_args": {"task": yolo.task}}
    yolo.model = loaded.model
    start = out_dir / START_FILE
    with atomic_path(start) as tmp:  # (ultralytics writes in place: through a link a user put there)
        yolo.save(str(tmp))
    return str(start)


#: a ``download:`` ultralytics' data check fetches and unpacks: an http(s) URL of an archive, of
#: characters that cannot make Python (ultralytics < 8.3 tests only ``startswith("http")`` and
#: ``.zip`` and ``exec``s anything else; ``http=__import__(...)#.zip`` passed a looser test)
_ARCHIVE_URL = re.compile(r"https?://[A-Za-z0-9._~/%:+-]+\.(zip|tar|gz|tgz|xz|bz2|txz|tbz2)")


def _data_yaml_code(data: dict[str, Any]) -> str:
    """What in an ultralytics data yaml runs code: a ``download`` that is not a plain archive URL
    (ultralytics ``exec``s it as Python, or runs it when it starts with ``bash``); "" for none."""
    s = data.get("download")
    if not s or not isinstance(s, str):  # (ultralytics fails on a download that is not a string)
        return ""
    if _ARCHIVE_URL.fullmatch(s):
        return ""  # (every ultralytics version downloads it or, older ones, execs it: it is no Python)
    return "bash command" if s.startswith("bash ") else "Python script"


def _ultralytics_yaml(path: Path) -> dict[str, Any]:
    """The data yaml as ultralytics' data check reads it (its own reader, which drops bytes that are
    not UTF-8: a key edgeslim's reader sees garbled can be ``download`` there); {} where it fails
    (then ultralytics' check fails before it runs anything)."""
    from edgeslim.models.yolo import _import_quietly

    uu = _import_quietly("ultralytics.utils", "to train a YOLO")
    load = uu.YAML.load if hasattr(uu, "YAML") else uu.yaml_load  # (ultralytics < 8.3.7: yaml_load)
    try:
        data = load(str(path))
    except Exception:  # noqa: BLE001 - ultralytics' own reader refuses it
        return {}
    return data if isinstance(data, dict) else {}


def _check_data_yaml(path: Path) -> dict[str, Any]:
    """Refuse a data yaml ultralytics cannot read, or one that names no train and val images; returns
    it."""
    try:
        import yaml
    except ImportError:  # (ultralytics needs PyYAML: its own check will say so)
        return {}
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise EdgeslimError(
            f"data yaml {path} is not valid YAML ({problem}{where}); fix it", param="data_name"
        ) from exc
    if not isinstance(data, dict) or not data.get("train") or not data.get("val"):
        raise EdgeslimError(
            f"data yaml {path} names no train and val images (an ultralytics data yaml has path:, train:, val: "
            "and names:); fix it",
            param="data_name",
        )
    _check_data_keys(path, data)
    return data


def _check_data_keys(path: Path, data: dict[str, Any]) -> None:
    """Refuse a data yaml whose ``path:``, ``names:``, ``nc:`` or ``channels:`` ultralytics' data check
    fails on (it raises SyntaxError or TypeError from inside the run)."""

    def refuse(problem: str, fix: str) -> EdgeslimError:
        return EdgeslimError(f"data yaml {path} {problem}; {fix}", param="data_name")

    if data.get("path") is not None and not isinstance(data["path"], str):
        raise refuse(
            f"has path: {data['path']!r}, not a folder", "give the data set's folder (path: datasets/mine)"
        )
    names, nc = data.get("names"), data.get("nc")
    if names is None and nc is None:
        raise refuse("names no classes", "add names: (a list [cat, dog], or {0: cat, 1: dog})")
    if names is not None and not isinstance(names, list | dict):
        raise refuse(
            f"has names: {str(names)[:40]!r}, a {type(names).__name__}",
            "give a list ([cat, dog]) or a dict ({0: cat, 1: dog})",
        )
    if nc is not None:
        try:  # (ultralytics takes a whole number in any form: 3, 3.0, '3')
            whole = not isinstance(nc, bool) and float(nc) == int(float(nc)) >= 1
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole:
            raise refuse(
                f"has nc: {str(nc)[:40]!r}", "give the number of classes (nc: 3), or drop nc: for names:"
            )
        nc = int(float(nc))
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = []
        if keys != list(range(len(names))):
            raise refuse(
                f"numbers its names {', '.join(map(str, list(names)[:5]))}",
                f"number them 0 to {len(names) - 1} ({{0: cat, 1: dog}})",
            )
    if names is not None and not names:
        raise refuse("has no class in names:", "list the classes (names: [cat, dog])")
    if names is not None and nc is not None and len(names) != nc:
        raise refuse(
            f"has {len(names)} names and nc: {nc}", f"make them agree (nc: {len(names)}), or drop nc:"
        )
    channels = data.get("channels")
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        raise refuse(
            f"has channels: {str(channels)[:40]!r}",
            "give the images' channel count (channels: 3), or drop it",
        )


def _check_channels(path: Path, data: dict[str, Any], model: Any) -> None:
    """Refuse a data yaml whose ``channels:`` differs from what the trained ``model`` takes (ultralytics
    feeds it such images and fails inside its first convolution)."""
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = data.get("channels", 3)
    if first is not None and isinstance(channels, int) and channels != first.in_channels:
        raise EdgeslimError(
            f"data yaml {path} has channels: {channels}, and the model takes {first.in_channels}-channel images; "
            f"give channels: {first.in_channels}{' (or drop it)' if first.in_channels == 3 else ''}, or a model "
            f"trained on {channels}-channel images",
            param="data_name",
        )


def _check_yaml_shapes(source: str, model: Any) -> None:
    """Refuse a checkpoint whose tensors have other shapes than its model yaml builds (a slim model):
    ultralytics' trainer rebuilds the network from the yaml and loads only the tensors that fit it
    ("Transferred 286/355 items"), so it would train, and edgeslim slim, a re-inflated, partly fresh
    network."""
    import copy
    import logging

    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict):
        return
    try:  # (as its trainer builds it, at the checkpoint's own classes)
        built = type(model)(copy.deepcopy(yaml), ch=yaml.get("channels", 3), nc=yaml.get("nc"), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the trainer's own build reports it
        logging.getLogger(__name__).debug(
            "%s: its yaml's model could not be built (%s)", source, first_line(exc)
        )
        return
    given = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fresh = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    differ = [k for k in given if fresh.get(k) != given[k]] + [k for k in fresh if k not in given]
    if not differ:
        return
    k = differ[0]
    count = sum(p.numel() for p in model.parameters())
    rebuilt = sum(p.numel() for p in built.parameters())
    raise EdgeslimError(
        f"{source} is not the network its model yaml builds ({len(differ)} tensors differ, e.g. {k} "
        f"{list(given.get(k, ()))} where the yaml builds {list(fresh.get(k, ()))}; {count:,} parameters against "
        f"{rebuilt:,}): a slim model? ultralytics' trainer rebuilds the network from the yaml and keeps only the "
        "tensors that fit, so it would train and slim a re-inflated, partly untrained one; slim the dense "
        "checkpoint it was made from (a slim model validates and exports, but does not train, in ultralytics)",
        param="model",
    )


def run(req: Any, source: str, budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``source`` with slimming in ultralytics (to ``budget``: the checked budget settings, or
    a fixed strength), prune the checkpoint it saved; returns the report."""
    from edgeslim.models.yolo import safe_label_caches
    from edgeslim.pipelines.rundir import other_tools_run, run_directory, slim_train_files
    from edgeslim.utils.modes import torch_threads

    out_dir = Path(req.out_dir)
    theirs = other_tools_run(out_dir / TRAIN_DIR)
    if theirs:  # (a review: --force wrote over a user's own ultralytics run copied there)
        shown = ", ".join(theirs[:4]) + (" ..." if len(theirs) > 4 else "")
        raise EdgeslimError(
            f"{out_dir / TRAIN_DIR} holds a training run that is not edgeslim's ({shown}; an edgeslim run marks "
            f"its own with {YOLO_RUN_MARK}), which this run would write over, with force=True too: choose another "
            "output directory, or move that run out (delete it if it is an earlier edgeslim run's)",
            param=("force", "out_dir"),
        )
    with (
        run_directory(
            out_dir,
            force=req.force,
            markers=(REPORT_FILE, SLIM_FILE, START_FILE),  # (start.pt: written here, never over one unasked)
            interrupted=TRAIN_DIR,
            resumable=False,
            run_files=slim_train_files,
            stale=SLIM_STALE,
            inputs=(req.model, req.weights, req.latency_table),
        ),
        torch_threads(req.threads),
        safe_label_caches(),  # (the data set's files are not the model's: trust_pickle is for the model)
        _data_without_code(Path(str(req.data_name))) as data,
    ):
        start = out_dir / START_FILE
        ours = req.weights is not None and not start.exists()  # (a forced run removed an earlier one's)
        try:
            return _run(req, source, out_dir, budget, data)
        except BaseException:  # a run that saved no checkpoint leaves none of its files (as run_directory)
            if ours and not any((out_dir / TRAIN_DIR).rglob("*.pt")):
                with contextlib.suppress(OSError):
                    start.unlink()
            raise


@contextlib.contextmanager
def _data_without_code(path: Path) -> Any:
    """The data yaml ultralytics is handed: ``path``, or (a ``download:`` that is code) a copy without
    it in a temporary folder for the block, ``path:`` pointing where ``path``'s did.

    ultralytics runs a data yaml's ``download:`` (Python it ``exec``s, or a ``bash`` command) when
    the val images are missing; ultralytics' own ``coco.yaml``, ``VOC.yaml`` and others carry such
    scripts. The copy is used whatever ``trust_pickle`` says (it trusts the model's pickle, not the
    data set), so the images, when there, train as usual, and when missing the run stops with one
    line saying the script was not run. ultralytics' own refusals of the data set in the block
    (:func:`_data_check_error`) become one line."""
    from edgeslim.utils.tmpfiles import temporary_folder

    data = _ultralytics_yaml(path)
    code = _data_yaml_code(_check_data_yaml(path)) or _data_yaml_code(data)
    with contextlib.ExitStack() as stack:
        handed = str(path)
        if code:
            import yaml

            clean = {k: v for k, v in data.items() if k != "download"}
            if not clean.get("path"):  # (ultralytics' default: the yaml's folder, not the copy's)
                clean["path"] = str(path.resolve().parent)
            tmp = stack.enter_context(temporary_folder("edgeslim-data-"))
            copy = Path(tmp) / path.name
            copy.write_text(yaml.safe_dump(clean, sort_keys=False))
            handed = str(copy)
        try:
            yield handed
        except Exception as exc:
            refusal = _data_check_error(exc)
            if refusal is None:
                raise
            from edgeslim.utils.console import printable

            said = printable(first_line(refusal)).replace(handed, str(path)).replace("\u274c", "").strip()
            said = said if len(said) <= 240 else said[:240] + "..."
            if code and "images not found" in said:  # (its words for missing val images)
                raise EdgeslimError(
                    f"{said}; the data yaml {path} has a download: {code} that would fetch them, not run (it is "
                    "code, which edgeslim never runs): fetch the images yourself (run that script if you trust it), "
                    "then rerun",
                    param="data_name",
                ) from exc
            raise EdgeslimError(
                f"ultralytics refused the data set of {path}: {said}; fix the data yaml or its files "
                "(ultralytics' log above may say more)",
                param="data_name",
            ) from exc


#: the functions of ultralytics' data package that check a data set as they read it (the data yaml's
#: keys, its folders, its label files)
_DATA_CHECKS = frozenset(
    {"check_det_dataset", "check_cls_dataset", "get_img_files", "get_labels", "cache_labels", "verify_labels",
     "load_image"}
)  # fmt: skip


def _data_check_error(exc: BaseException) -> BaseException | None:
    """The refusal of the data set by ultralytics' own data check in ``exc`` or what it was raised from:
    an error its code raises on purpose (a ``raise`` statement) in one of :data:`_DATA_CHECKS` of its
    ``ultralytics/data`` package; None for any other error (a bug stays a bug)."""
    import traceback

    package = f"{os.sep}ultralytics{os.sep}data{os.sep}"
    for e in _chain(exc):
        if not isinstance(e, Exception) or isinstance(e, NotImplementedError):
            continue
        frames = traceback.extract_tb(e.__traceback__)
        if not frames:
            continue
        f = frames[-1]
        if package in f.filename and f.name in _DATA_CHECKS and (f.line or "").lstrip().startswith("raise"):
            return e
    return None


def _mark_run(folder: Path, req: Any) -> None:
    """Mark ``folder`` (the run's ``train/``, where ultralytics trains next) as this edgeslim run's: a
    forced run replaces ultralytics' files only beside this mark (:func:`~edgeslim.pipelines.rundir.slim_train_files`)."""
    import json

    from edgeslim.utils.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    mark = {"tool": "edgeslim", "command": "slim", "model": str(req.model), "data": str(req.data_name)}
    atomic_write_text(folder / YOLO_RUN_MARK, json.dumps(mark, indent=1) + "\n")


def _name_data(args_yaml: Path, data: str) -> None:
    """Put the user's data yaml in ultralytics' ``args.yaml`` (written at the start, with the copy)."""
    import yaml

    from edgeslim.utils.io import atomic_write_text

    if args_yaml.is_file():
        args = yaml.safe_load(args_yaml.read_text()) or {}
        if isinstance(args, dict) and "data" in args:
            atomic_write_text(args_yaml, yaml.safe_dump({**args, "data": data}, sort_keys=False))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def _run(
    req: Any, source: str, out_dir: Path, budget: dict[str, Any] | None, data_yaml: str
) -> dict[str, Any]:
    import torch

    from edgeslim.models.yolo import logs_on_stderr, trained_imgsz, ultralytics_yolo, yolo_classes
    from edgeslim.pipelines.prune import PruneRequest
    from edgeslim.pipelines.prune import run as prune
    from edgeslim.train.ultralytics import UltralyticsSlimming
    from edgeslim.utils.io import write_json

    params = {k: float(getattr(req, k)) for k in ("p", "a", "g", "l") if getattr(req, k) is not None}
    slimmer_kwargs: dict[str, Any] = {"penalty": req.penalty or "l1", **params}
    if req.prox_step:
        slimmer_kwargs["prox_step"] = req.prox_step
    recovery = req.recovery if req.recovery not in (None, "auto") else 0
    slimming = UltralyticsSlimming(
        None if req.lam is not None else float(req.shrink or 1.0),
        lam=req.lam,
        beta=float(req.beta) if req.beta is not None else 100.0,
        warmup=req.prox_warmup if req.prox_warmup not in (None, "auto") else "10%",
        recovery=recovery,
        zero_invariant=True if req.zero_invariant is None else bool(req.zero_invariant),
        budget=budget,
        round_to=int(req.round_to or 1),
        threads=req.threads,
        warn=False,  # (the report's warnings say it, once)
        **slimmer_kwargs,
    )
    # ultralytics prints to stdout (its progress bars, a first run's settings notice), which may carry --json
    with contextlib.redirect_stdout(sys.stderr):
        if req.weights is not None:  # a yaml and a state_dict: ultralytics trains from a checkpoint of them
            source = _start_checkpoint(req, source, out_dir)
        yolo = ultralytics_yolo(source)  # (imports ultralytics: its log handlers exist from here)
        slimming.attach(yolo)
        # trained on a copy of the data yaml: the checkpoints and args.yaml name the user's yaml
        given = str(Path(str(req.data_name)).resolve()) if data_yaml != str(req.data_name) else None
        if given is not None:
            yolo.add_callback("on_train_start", lambda trainer: setattr(trainer.args, "data", given))
        if _is_checkpoint(source):  # (a model built from a yaml takes the data yaml's channels)
            _check_yaml_shapes(source, yolo.model)
            _check_channels(Path(str(req.data_name)), _check_data_yaml(Path(str(req.data_name))), yolo.model)
        trained = trained_imgsz(yolo.model)  # the size a training checkpoint was trained at
        classes_given = yolo_classes(yolo.model)
        names_given, rows_given = _class_names(yolo.model), _class_rows(yolo.model)
        rows_trained: list[torch.Tensor] = []  # the class rows ultralytics' trainer starts from
        yolo.add_callback(
            "on_pretrain_routine_end", lambda trainer: rows_trained.extend(_class_rows(trainer.model))
        )
        imgsz = int(req.imgsz or (max(trained) if trained else DEFAULT_IMGSZ))
        with logs_on_stderr():
            before = None
            if _is_checkpoint(source):  # a trained model: its mAP before slimming
                before = _validate(source, data_yaml, imgsz, req)
            train_args: dict[str, Any] = {
                "data": data_yaml, "imgsz": imgsz, "device": _device(req.device), "seed": int(req.seed or 0),
                "project": str(out_dir.resolve()), "name": TRAIN_DIR, "exist_ok": True, "plots": False,
            }  # fmt: skip
            train_args["epochs"] = int(req.epochs or DEFAULT_EPOCHS)
            if req.batch_size is not None:
                train_args["batch"] = int(req.batch_size)
            deterministic = (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            )
            _mark_run(out_dir / TRAIN_DIR, req)
            try:
                yolo.train(**train_args)  # (a refusal as it starts leaves no train/: run_directory)
            finally:  # ultralytics switches torch's deterministic mode on for the process
                torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            trainer = yolo.trainer
            if given is not None:
                _name_data(Path(trainer.save_dir) / "args.yaml", given)
            data = getattr(trainer, "data", None) or {}  # (ultralytics' resolved data yaml)
            val_dir = _val_images(data)
            classes = _class_facts(trainer, classes_given, names_given, rows_given, rows_trained)
            # the end of the run (best.pt is the epoch of the best mAP, which slimming lowers: often an
            # early, less sparse one; under a budget only the last epoch meets it)
            cut = Path(trainer.last)
            after = _validate(str(cut), data_yaml, imgsz, req)
            val_labels = _label_count(getattr(getattr(trainer, "test_loader", None), "dataset", None))
    metrics: dict[str, Any] = {"before": before, "slim": after}
    if val_labels == 0:  # (ultralytics reports 0 for every metric: no comparison, no collapse to tell)
        metrics = {"before": None, "slim": None, "not_measured": "no labels in the validation split"}
    rep = prune(
        PruneRequest(
            model=f"yolo:{cut.resolve()}",
            output=out_dir / SLIM_FILE,
            round_to=req.round_to,
            profile=req.profile,
            precision=req.precision,
            data="images" if val_dir else None,
            data_dir=val_dir,
            input_shape=(3, imgsz, imgsz),
            trust_pickle=True,
            force=True,
        )  # fmt: skip
    )  # our own run's checkpoint
    summary = slimming.summary()
    report = {
        "kind": "ultralytics",
        "arch": req.model,
        "data": str(req.data_name),
        "imgsz": imgsz,
        "out_dir": str(out_dir),
        "checkpoint": str(cut),  # the one surgery cut (last.pt)
        "start": "checkpoint" if _is_checkpoint(source) else "random weights",
        "classes": classes,
        "slimming": {
            "lam": slimming.slimmer.lam if slimming.slimmer else None,
            "shrink": slimming.shrink,
            "recovery": recovery,
            "beta": slimming.beta,
            "penalty": slimmer_kwargs["penalty"],
            "params": dict(slimming.slimmer.params) if slimming.slimmer else {},  # defaults included
            "zero_invariant": slimming.zero_invariant,
            "epochs": summary["epochs"],
            "zeroed": summary["epochs"][-1]["zero"] if summary["epochs"] else None,  # in last.pt
            "total": summary["epochs"][-1]["total"] if summary["epochs"] else None,
            "budget": summary.get("budget"),
        },
        "metrics": metrics,
        "surgery": {
            k: rep.get(k)
            for k in (
                "removed_channels",
                "removable_channels",
                "kept_by_rounding",
                "params_before",
                "params_after",
                "macs_before",
                "macs_after",
                "max_abs_diff",
                "exact",
                "alignment",
                "calibration",
            )
        },  # fmt: skip
        "loads_code": True,
        "rebuilds_from": rep.get("rebuilds_from"),
    }
    budget_metric = (summary.get("budget") or {}).get("metric")
    if req.profile and budget_metric != "latency":  # what its MACs buy on the device (a latency budget says)
        from edgeslim.models.yolo import load_yolo_checkpoint
        from edgeslim.pipelines.latency import predicted_speed

        trained = load_yolo_checkpoint(str(cut), trust_pickle=True).float().eval()
        report["predicted_latency"] = predicted_speed(
            trained,
            (3, imgsz, imgsz),
            req.profile,
            req.precision,
            round_to=int(req.round_to or 1),
            zero_invariant=bool(slimming.zero_invariant),
        )
    collapse = _collapse(report)
    report["warnings"] = _warnings(report, collapse)
    write_json(out_dir / REPORT_FILE, report)
    if collapse:  # (as a classifier's: the CLI says where the outputs are, and prints the report for --json)
        from edgeslim.slim import CollapseError

        raise CollapseError(f"slimming {collapse}", param=collapse.params)
    return report


def _class_names(model: Any) -> list[str] | None:
    """The class names of an ultralytics model (or of a data dict's ``names``) in class order; None
    where it has none, or only ultralytics' placeholders (``0``, ``1`` ...: a model built from a yaml)."""
    names = model.get("names") if isinstance(model, dict) else getattr(model, "names", None)
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            return None
    if not isinstance(names, list | tuple) or not names:
        return None
    out = [str(n) for n in names]
    return None if out == [str(i) for i in range(len(out))] else out


def _class_rows(model: Any) -> list[Any]:
    """Copies of the class-logit weights and biases of an ultralytics detection head (the last
    convolution of each ``cv3`` branch, and ``one2one_cv3``'s: one row per class), [] for another head."""
    from torch import nn

    layers = getattr(getattr(model, "module", model), "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential | nn.ModuleList) and len(layers) else None
    nc = getattr(head, "nc", None)
    out = []
    for attr in ("cv3", "one2one_cv3"):
        for branch in getattr(head, attr, None) or ():
            last = branch[-1] if isinstance(branch, nn.Sequential) else None
            if isinstance(last, nn.Conv2d) and last.out_channels == nc:
                out += [t.detach().float().clone() for t in (last.weight, last.bias) if t is not None]
    return out


def _norm(name: str) -> str:
    """A class name as ultralytics matches names (case and surrounding spaces aside)."""
    return name.strip().lower()


def _normed(names: list[str]) -> list[str]:
    """``names`` as ultralytics matches them (:func:`_norm`): names differing in case or surrounding
    spaces alone are the same classes, their rows trained."""
    return [_norm(n) for n in names]


def _rows_from(
    names_given: list[str], rows_given: list[Any], names_data: list[str], rows_trained: list[Any]
) -> dict[str, str | None] | None:
    """For each data class, the given model's class whose trained row (in every class layer) the
    trainer started it from (that of the same name, else that at its position), or None: untrained.
    None where the rows cannot be compared (another head, or the trainer's rows unknown)."""
    import torch

    if not rows_given or len(rows_given) != len(rows_trained):
        return None
    if any(a.shape[1:] != b.shape[1:] or len(b) != len(names_data) for a, b in zip(rows_given, rows_trained)):
        return None
    by_name = {_norm(n): i for i, n in enumerate(names_given)}
    out: dict[str, str | None] = {}
    for j, name in enumerate(names_data):
        out[name] = None
        for i in dict.fromkeys(
            x for x in (by_name.get(_norm(name)), j) if x is not None and x < len(names_given)
        ):
            if all(torch.equal(b[j], a[i]) for a, b in zip(rows_given, rows_trained)):
                out[name] = names_given[i]
                break
    return out


def _labels_beyond(dataset: Any, nc: int) -> dict[str, int] | None:
    """Of an ultralytics dataset's label files, how many name a class >= ``nc`` (``beyond``), and how
    many of those images ultralytics left out (``dropped``, of ``images`` listed); None where unknown."""
    try:
        from ultralytics.data.utils import img2label_paths

        files = [str(f) for f in dataset.label_files]
        kept = set(img2label_paths([str(f) for f in dataset.im_files]))
    except Exception:  # noqa: BLE001 - another ultralytics' dataset: not counted
        return None
    beyond = []
    for f in files:
        try:
            classes = [
                float(line.split()[0])
                for line in Path(f).read_text(errors="replace").splitlines()
                if line.split()
            ]
        except (OSError, ValueError):
            continue
        if classes and max(classes) >= nc:
            beyond.append(f)
    return {"images": len(files), "beyond": len(beyond), "dropped": sum(f not in kept for f in beyond)}


def _class_facts(
    trainer: Any, nc_given: int, names_given: list[str] | None, rows_given: list[Any], rows_trained: list[Any]
) -> dict[str, Any]:
    """The report's ``classes``: the model's and the data's counts and names and, where they differ,
    which trained rows ultralytics' trainer carried over (``rows_from``: :func:`_rows_from`) and, for
    fewer classes, the images whose labels name a class beyond the data's (``labels_beyond``)."""
    data = getattr(trainer, "data", None) or {}
    nc = data.get("nc")
    names_data = _class_names(data)
    out: dict[str, Any] = {
        "model": nc_given,
        "data": nc,
        "model_names": names_given,
        "data_names": names_data,
    }
    renamed = bool(names_given and names_data) and _normed(names_data) != _normed(names_given)
    if isinstance(nc, int) and (nc != nc_given or renamed):
        out["rows_from"] = _rows_from(  # (placeholder names: compared at their positions)
            names_given or [str(i) for i in range(nc_given)], rows_given,
            names_data or [str(i) for i in range(nc)], rows_trained,
        )  # fmt: skip
    if isinstance(nc, int) and nc < nc_given:
        loaders = {"train": "train_loader", "val": "test_loader"}
        out["labels_beyond"] = {
            split: _labels_beyond(getattr(getattr(trainer, attr, None), "dataset", None), nc)
            for split, attr in loaders.items()
        }
    return out


def _listed(names: list[str], most: int = 6) -> str:
    """``names`` joined, the first ``most`` of a longer list and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _classes_warning(classes: dict[str, Any]) -> str:
    """The warning for a data yaml whose classes differ from the model's (count, names or order):
    how they differ, what ultralytics' trainer did with the class rows (as compared, not as assumed
    of its version) and the images it left out for labels beyond the data's classes; "" when they
    agree."""
    nc_model, nc_data = classes.get("model"), classes.get("data")
    given, data = classes.get("model_names"), classes.get("data_names")
    named = given is not None and data is not None
    if nc_data is None or (nc_data == nc_model and (not named or _normed(given) == _normed(data))):
        return ""
    parts = []
    if named:
        new = [n for n in data if _norm(n) not in {_norm(g) for g in given}]
        gone = [g for g in given if _norm(g) not in {_norm(n) for n in data}]
        moved = [
            n for j, n in enumerate(data) if n not in new and (j >= len(given) or _norm(given[j]) != _norm(n))
        ]
        said = [f"the data yaml has {nc_data} classes, the model {nc_model}" if nc_data != nc_model else
                "the data yaml's classes differ from the model's"]  # fmt: skip
        if new:
            said.append(f"new to the model: {_listed(new)}")
        if gone:
            said.append(f"not in the data: the model's {_listed(gone)}")
        if moved:
            said.append(f"at another position: {_listed(moved)}")
        parts.append(f"{said[0]} ({'; '.join(said[1:])})" if len(said) > 1 else said[0])
    else:
        parts.append(f"the data yaml has {nc_data} classes, the model {nc_model}")
    rows = classes.get("rows_from")
    if rows is not None:  # (compared row for row: what this ultralytics did, whatever its version)
        untrained = [n for n, g in rows.items() if g is None]
        by_name = [n for n, g in rows.items() if g is not None and _norm(g) == _norm(n)]
        by_place = [f"{n} ({g}'s)" for n, g in rows.items() if g is not None and _norm(g) != _norm(n)]
        if by_name:
            parts.append(
                f"{'all ' if len(by_name) == len(rows) else ''}{len(by_name)} of the data's {len(rows)} classes "
                "start from the model's trained class rows "
                + ("of the same name" if named else "at their positions")
            )
        if by_place:
            parts.append(
                f"{_listed(by_place)} start from the trained row of the model's class at that position"
            )
        if untrained:
            parts.append(f"{'' if data else 'classes '}{_listed(untrained)} start from untrained class rows")
    else:  # (another head: not compared)
        parts.append(
            "ultralytics builds the class layers for the data's classes (its log says which rows it carried over)"
        )
    dropped = {k: v for k, v in (classes.get("labels_beyond") or {}).items() if v and v["beyond"]}
    if dropped:
        split = {"train": "training", "val": "validation"}
        counts = ", ".join(
            f"{v['dropped']} of {v['images']} {split.get(k, k)} images" for k, v in dropped.items()
        )
        kept = sum(v["beyond"] - v["dropped"] for v in dropped.values())
        parts.append(
            f"ultralytics left out {counts} whose labels name classes beyond the data yaml's {nc_data} (its log calls "
            "them corrupt)" + (f"; {kept} such images it kept" if kept else "")
        )
    return (
        "; ".join(parts)
        + "; give a data yaml with the model's classes, in its order, to slim the model as trained"
    )


def _map_fall(report: dict[str, Any]) -> tuple[float, float] | None:
    """(before, after) mAP50-95 when the slim network's fell under :data:`COLLAPSE_FRACTION` of the
    given model's, else None."""
    metrics = report.get("metrics") or {}
    before, after = metrics.get("before") or {}, metrics.get("slim") or {}
    key = "metrics/mAP50-95(B)"
    if key in before and key in after and before[key] > 0 and after[key] < COLLAPSE_FRACTION * before[key]:
        return before[key], after[key]
    return None


def _collapse(report: dict[str, Any]) -> Notice | str:
    """The line saying the slim network collapsed (mAP50-95 under :data:`COLLAPSE_FRACTION` of the
    given model's, where that was above :data:`COLLAPSE_FLOOR`), with the advice that fits the run's
    settings (a budget's, a shrink's or a lambda's), or ``""``."""
    fall = _map_fall(report)
    if fall is None or fall[0] <= COLLAPSE_FLOOR:
        return ""
    before, after = fall
    s = report.get("slimming") or {}
    budget = s.get("budget") or {}
    recovery = "lengthen" if s.get("recovery") else "add"
    recovery += " the phase without slimming at the end (recovery)"
    if budget:  # (the controller sets the strength: shrink and lambda do not apply)
        target = f"target_{budget.get('metric', 'macs')}"
        now = f", now {budget['target_fraction']:.0%}" if budget.get("target_fraction") is not None else ""
        advice = (
            f"give a larger budget ({target}{now}: fewer channels removed), train longer (epochs) so the "
            f"strength tapers more gently, or {recovery}"
        )
        params: tuple[str, ...] = (target, "epochs", "recovery")
    else:
        weaker = f"lower lam (now {s['lam']:.3g})" if s.get("shrink") is None and s.get("lam") is not None else (
            f"lower the shrink (now {s['shrink']:g})" if s.get("shrink") is not None else "lower the shrink")  # fmt: skip
        advice = f"{weaker}, {recovery}, or give a budget (target_macs), which steers the strength itself"
        params = ("lam" if weaker.startswith("lower lam") else "shrink", "recovery", "target_macs")
    return Notice(
        f"collapsed the network: mAP50-95 {after:.3f} against {before:.3f} before; {advice}", params
    )


def _warnings(report: dict[str, Any], collapse: str) -> list[str]:
    """What the user must know about the result: a collapse (first), no channel removed, a budget
    that overshot or missed its target (:func:`edgeslim.sparsity.budget.budget_warning`, as for classifiers)."""
    from edgeslim.sparsity.budget import BUDGET_MISS_TOLERANCE, budget_warning

    out = [collapse] if collapse else []
    fall = _map_fall(report)
    if fall is not None and fall[0] <= COLLAPSE_FLOOR:  # (a user's trial: 0.0276 -> 0.0000, exit 0, no word)
        out.append(
            f"mAP50-95 fell from {fall[0]:.4f} to {fall[1]:.4f}; the given model's own is too low "
            f"(<= {COLLAPSE_FLOOR}) to call it a collapse on this validation set, but the slim network lost most "
            "of what it had: train the model further first, or slim more gently (a budget, more epochs)"
        )
    if (report.get("metrics") or {}).get("not_measured"):
        out.append(
            f"precision, recall and mAP not measured ({report['metrics']['not_measured']}): nothing compares the "
            "slim network's accuracy with the given model's, and a collapse would go unnoticed; give a data yaml "
            "whose val images have labels"
        )
    classes = report.get("classes") or {}
    if report.get("start") == "random weights":
        out.append(
            f"{report['arch']} started from random weights (built from its yaml): slimming is meant for a trained "
            "model; give your best.pt"
        )
    elif line := _classes_warning(classes):
        out.append(line)
    if not report["surgery"].get("removed_channels"):
        out.append(
            Notice(
                "no channel reached zero, so nothing was removed: raise the shrink (or lambda), train longer, or "
                "give a budget (target_macs), which steers the strength itself",
                ("shrink", "target_macs"),
            )
        )
    b = report["slimming"].get("budget")
    if b and (line := budget_warning(b)):
        out.append(line)
    elif (
        b
        and b.get("projection_removed_channels")
        and b.get("before_projection_fraction", 0.0) > (1 + BUDGET_MISS_TOLERANCE) * b["target_fraction"]
    ):  # (said only by the controller's log line: a 1-epoch run, warnings [])
        out.append(
            Notice(
                f"the budget was met by the final projection, not in training: the controller ended at "
                f"{b['before_projection_fraction']:.1%} of the dense {b['metric']} (target {b['target_fraction']:.1%}) "
                f"and the projection then removed {b['projection_removed_channels']} channel(s) that no epoch "
                "trained without; train longer (epochs) so slimming reaches the target as it trains",
                "epochs",
            )
        )
    return out


def _device(device: str | None) -> str | None:
    """edgeslim's device name as ultralytics spells it (``cuda:1`` -> ``1``; ``auto``: its own choice)."""
    if device in (None, "auto"):
        return None
    if device == "cuda":
        return "0"
    return device.split(":", 1)[1] if device.startswith("cuda:") else device


def _validate(source: str, data_yaml: str, imgsz: int, req: Any) -> dict[str, float] | None:
    """ultralytics' validation of the checkpoint ``source`` on the data yaml's val split (its metrics:
    :func:`_metrics`), into a temporary folder removed afterwards (without a project, ultralytics makes
    a ``val-N`` folder in its settings' runs_dir, outside the run's)."""
    from edgeslim.models.yolo import ultralytics_yolo
    from edgeslim.utils.tmpfiles import temporary_folder

    with temporary_folder("edgeslim-val-") as tmp:
        results = ultralytics_yolo(source).val(
            data=data_yaml, imgsz=imgsz, batch=req.batch_size or 16, device=_device(req.device), plots=False,
            verbose=False, project=tmp, name="val", exist_ok=True,
        )  # fmt: skip
    return _metrics(results)


def _label_count(dataset: Any) -> int | None:
    """The boxes (labels) of an ultralytics dataset, None where it does not say."""
    try:
        return sum(len(lb["cls"]) for lb in dataset.labels)
    except Exception:  # noqa: BLE001 - another ultralytics' dataset: not counted
        return None


def _metrics(results: Any) -> dict[str, float] | None:
    """The validation metrics of a run (``metrics/mAP50-95(B)`` ...), as plain floats."""
    d = getattr(results, "results_dict", results)
    if not isinstance(d, dict):
        return None
    return {str(k): float(v) for k, v in d.items() if isinstance(v, int | float)}


def _val_images(data: dict[str, Any]) -> Path | None:
    """A folder of validation images from ultralytics' resolved data dict, for surgery's check and
    the export's validation: ``val``'s folder, the first of a list of folders, or for a ``.txt``
    list of image files the folder of its first listed image (as ultralytics reads such a list: a
    ``./`` path is relative to the list's folder); None where none exists."""
    val = data.get("val")
    for v in val if isinstance(val, list) else [val]:
        if not isinstance(v, str):
            continue
        p = Path(v)
        if p.is_dir():
            return p
        if p.suffix.lower() == ".txt" and p.is_file():
            with p.open(errors="replace") as f:
                head = f.read(1 << 16)  # the first listed files (a line the read cut is dropped)
            lines = head.splitlines()[: -1 if len(head) == 1 << 16 else None]
            for line in (x.strip() for x in lines):
                listed = p.parent / line[2:] if line.startswith("./") else Path(line)
                if line and listed.is_file():
                    return listed.parent
    return None
