"""The names of the files in a run directory, spelled once.

``edgeslim train`` writes ``model.pt``, ``log.jsonl``, ``report.json`` (and ``trained.pt``
for three-stage runs); ``edgeslim slim`` writes ``model.pt`` (the slim model),
``trained.pt``, ``report.json`` and ``report.md``, PNGs and the trainer's files under ``train/``;
``edgeslim bench`` writes ``run.json``, ``report.md`` and PNGs.
"""

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
