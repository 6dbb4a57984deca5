"""One budgeted slimming run with controller constants or settings overridden (a sweep point).

    python benchmarks/budget_sweep.py NAME ARCH TARGET SUBSET EPOCHS [KEY=VALUE ...]

``TARGET`` is a MAC fraction (``0.3``) or ``dense`` (plain training, the reference).
``KEY`` in upper case sets a constant of :mod:`edgeslim.sparsity.budget` (``UNIT_FRACTION=1.0``,
``MIN_KEEP=0.5``), ``seed=N`` the seed, ``penalty=NAME`` the penalty, ``prox_warmup=10%``,
``recovery=50%``, ``recovery_lr=base`` (and ``prox_step``, ``beta_end``, ``importance``) a slimming setting, anything else a
:class:`~edgeslim.sparsity.budget.BudgetSettings` field (``taper_end=0.4``, ``cost_exponent=0``).
Fashion-MNIST, class-balanced ``SUBSET`` training images, the 10,000 test images, batch 64,
1 thread. Appends one JSON line to ``--log`` (default
``benchmarks/results/budget_sweep.jsonl``); the table in docs/budget.md ("Controller constants
re-checked") comes from such lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
#: SlimSettings fields a sweep point may set (as given: "10%", "base", ...)
SLIM_KEYS = ("prox_warmup", "recovery", "recovery_lr", "prox_step", "beta_end", "importance")


def main() -> None:
    import edgeslim.sparsity.budget as budget_mod
    from edgeslim.data import load_dataset
    from edgeslim.models.registry import create_model
    from edgeslim.slim import SlimSettings, slim_model
    from edgeslim.sparsity.budget import BudgetSettings
    from edgeslim.train import TrainConfig, fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("arch")
    ap.add_argument("target")
    ap.add_argument("subset", type=int)
    ap.add_argument("epochs", type=int)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--log", type=Path, default=RESULTS / "budget_sweep.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seed, penalty, constants = 0, "l1", {}
    settings: dict[str, float | str] = {}
    slim: dict[str, str] = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        if key.isupper():
            if not hasattr(budget_mod, key):
                raise SystemExit(f"edgeslim.sparsity.budget has no constant {key}")
            constants[key] = float(value)
            setattr(budget_mod, key, float(value))
        elif key == "seed":
            seed = int(value)
        elif key == "penalty":
            penalty = value
        elif key in SLIM_KEYS:
            slim[key] = value
        else:
            try:
                settings[key] = float(value)
            except ValueError:  # a word (controller=lagrangian)
                settings[key] = value
    bundle = load_dataset("fashion-mnist", subset=args.subset, test_subset=10000)
    spec = bundle.spec_for(args.arch)
    config = TrainConfig(epochs=args.epochs, batch_size=64, device="cpu", seed=seed)
    torch.manual_seed(seed)
    model = create_model(spec)
    t0 = time.perf_counter()
    row: dict = {"name": args.name, "arch": args.arch, "target": args.target, "subset": args.subset,
                 "epochs": args.epochs, "seed": seed, "penalty": penalty, "settings": settings,
                 "constants": constants, **({"slim": slim} if slim else {})}  # fmt: skip
    if args.target == "dense":
        row["accuracy"] = fit(model, bundle, config).test_accuracy
    else:
        out = Path(tempfile.mkdtemp(prefix="budget_sweep_"))
        try:
            st = SlimSettings(penalty=penalty, zero_invariant=True, **slim,  # type: ignore[arg-type]
                              budget=BudgetSettings(target=args.target, **settings).to_dict())  # fmt: skip
            rep = slim_model(model, spec, bundle, config, st, out).report
        finally:
            shutil.rmtree(out, ignore_errors=True)
        b = rep["budget"]
        row.update(accuracy=rep["accuracy"]["slim"], macs_fraction=b["achieved_fraction"],
                   projection_removed=b["projection_removed_channels"],
                   trajectory=[(t["resource"], t["mu"], t["test_acc"]) for t in b["trajectory"]])  # fmt: skip
    row["wall_s"] = time.perf_counter() - t0
    print(json.dumps(row), flush=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
