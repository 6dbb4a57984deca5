"""The names of the files in a run directory, spelled once.

``edgeslim train`` writes ``model.pt``, ``log.jsonl``, ``report.json`` (and ``trained.pt``
for three-stage runs); ``edgeslim slim`` writes ``model.pt`` (the slim model),
``trained.pt``, ``report.json`` and ``report.md``, PNGs and the trainer's files under ``train/``;
``edgeslim bench`` writes ``run.json``, ``report.md`` and PNGs.
"""

from pathlib import Path

MODEL_FILE = "model.pt"  #: the run's model; in a training folder also the state for resuming
TRAINED_FILE = "trained.pt"  #: the dense model after training, before pruning
REPORT_FILE = "report.json"
LOG_FILE = "log.jsonl"  #: one JSON record per epoch
TRAIN_DIR = "train"  #: the trainer's folder inside a slim run
#: what edgeslim's trainer writes into a slim run's ``TRAIN_DIR`` (removed when a run starts over)
TRAIN_FILES = (MODEL_FILE, LOG_FILE, REPORT_FILE)
#: what ultralytics' trainer writes there for a YOLO (plots off): counted only where
#: ``YOLO_RUN_MARK`` shows an edgeslim run trained there, so a user's own ``results.csv`` or
#: ``weights/`` (another tool's run copied there: its own ``args.yaml`` too) stays
ULTRALYTICS_TRAIN_FILES = ("args.yaml", "results.csv", "results.png", "events.out.tfevents.*", "weights/last.pt",
                           "weights/best.pt", "weights/epoch*.pt")  # fmt: skip
ULTRALYTICS_MARK = "args.yaml"  #: ultralytics trained in the folder (an edgeslim run, or another tool's)
#: written by a YOLO slim run into its ``TRAIN_DIR`` before ultralytics trains there: the run is edgeslim's
YOLO_RUN_MARK = "edgeslim_run.json"

#: a slim run's ONNX exports (a latency target measures them), and its measured latency lookup
DENSE_ONNX = "dense.onnx"
SLIM_ONNX = "slim.onnx"
TABLE_FILE = "latency_table.json"
#: the ultralytics checkpoint a YOLO slim run writes when it starts from a yaml and a state_dict
START_FILE = "start.pt"

RUN_FILE = "run.json"  #: a bench run's record
RUN_REPORT_MD = "report.md"  #: a bench run's or a slim run's report for a person

CHANNELS_PNG = "channels.png"
GAMMA_HIST_PNG = "gamma_hist.png"
BUDGET_PNG = "budget.png"
LATENCY_PNG = "latency.png"
LAYERS_PNG = "layers.png"
LAYER_TIMES_PNG = "layer_times.png"
MEMORY_PNG = "memory.png"

#: an earlier run's results, removed as a forced run starts (``run_directory``; a file the new run
#: reads, such as a model or latency table given from that folder, is kept)
SLIM_STALE = (REPORT_FILE, RUN_REPORT_MD, MODEL_FILE, TRAINED_FILE, DENSE_ONNX, SLIM_ONNX, TABLE_FILE, START_FILE, CHANNELS_PNG,
              GAMMA_HIST_PNG, BUDGET_PNG, LATENCY_PNG, LAYERS_PNG)  # fmt: skip
BENCH_STALE = (RUN_FILE, RUN_REPORT_MD, LATENCY_PNG, MEMORY_PNG, LAYER_TIMES_PNG, LAYERS_PNG)
TRAIN_STALE = (*TRAIN_FILES, TRAINED_FILE)  # (trained.pt: a three-stage run's dense model)

#: the hidden folder of a run directory an earlier run's results wait in while a forced run starts
HIDDEN_PREFIX = ".edgeslim-replaced-"


def left_aside(out_dir: Path) -> list[tuple[Path, list[str]]]:
    """The hidden folders (:data:`HIDDEN_PREFIX`) of ``out_dir`` that hold files, each with their names
    (relative, sorted): an earlier run's results a forced run moved aside and, killed outright, neither
    deleted nor put back."""
    found = []
    for folder in sorted(Path(out_dir).glob(HIDDEN_PREFIX + "*")):
        if folder.is_dir() and not folder.is_symlink():
            found.append(
                (folder, sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))
            )
    return found


def left_aside_line(out_dir: Path) -> str:
    """What :func:`left_aside` finds in ``out_dir``, said in one clause ("" where nothing is there)."""
    held = [(folder, names) for folder, names in left_aside(out_dir) if names]
    if not held:
        return ""
    said = "; ".join(
        f"{folder} holds {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}" for folder, names in held
    )
    return (f"{said} of an earlier run, moved aside by a forced run that was killed: move them back into {out_dir} "
            "to keep them, or delete the folder")  # fmt: skip


def moved_aside(path: Path) -> Path | None:
    """The copy of the missing file ``path`` that a killed forced run left in a hidden folder beside it
    (:func:`left_aside`), else None."""
    p = Path(path)
    for folder, _ in left_aside(p.parent):
        if (folder / p.name).is_file():
            return folder / p.name
    return None
