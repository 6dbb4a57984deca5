"""The #16 protocol on one GPU: many ``phases_fmnist.py`` runs at once, within a time budget.

The one-round goal is measured on full Fashion-MNIST (60k / 10k), vgg-small, 5 epochs, batch 64:
~8.5 min a run on one CPU core here, so a sweep of phase splits and prox options over 3 seeds is
days of CPU. vgg-small on 28x28 images leaves an H200 nearly idle, so this runs ``--workers``
processes of ``phases_fmnist.py --device cuda`` side by side, one (variant, seed) each, seed 0 of
every variant first. Each run is cached as one JSON in ``--work`` (default: a folder named by the
protocol, so a smoke test's runs are never reused for the real one); a run is not started with
less than ``--min-left`` seconds to go, one not finished at the deadline (``--budget-s``) is killed
and left out. Exit status 1 when any run or the report failed. At the end the runs are copied to ``<out>/runs``
(``@`` in a name written ``_at_``: the device tool returns plain names only) and reported with ``phases_fmnist.py --cached-only`` as ``<out>/<name>.{json,md}``.

    python benchmarks/gpu_phases_fmnist.py --data-dir .gpu/fashion-mnist --out $OUT --budget-s 420
    python benchmarks/gpu_phases_fmnist.py --device cpu --subset 600 --test-subset 200 --epochs 1 \\
        --jobs dense-s0,restart@1.0-s0 --workers 2 --out /tmp/gpf   # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the references, today's default at the CPU run's three strengths, then the candidates
SWEEP = [
    "dense", "uniform@0.5", "restart@0.8", "restart@1.0", "restart@1.2",
    *(f"{v}@{s}" for v in ("w5r70", "w20r50", "w10r30", "restart_lr05", "restart_ramp", "restart_eff")
      for s in ("0.8", "1.0", "1.2")),
]  # fmt: skip


def safe(name: str) -> str:
    """``name`` with ``@`` written ``_at_`` (``restart@1.0-s0`` -> ``restart_at_1.0-s0``)."""
    return name.replace("@", "_at_")


def parse_jobs(text: str) -> list[tuple[str, str]]:
    """``"dense-s0,restart@1.0-s1"`` -> ``[("dense", "0"), ("restart@1.0", "1")]``; one clear line otherwise."""
    jobs = []
    for j in (j for j in text.split(",") if j):
        name, sep, seed = j.rpartition("-s")
        if not sep or not name or not seed.isdigit():
            raise SystemExit(f"--jobs entry {j!r} is not NAME-sSEED (e.g. restart@1.0-s0)")
        jobs.append((name, seed))
    return jobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--work", type=Path, default=None, help="run cache [/tmp/gpu_phases-SUBSET-EPOCHS-DEVICE]"
    )
    ap.add_argument("--name", default="phases_fmnist_60k_gpu")
    ap.add_argument("--only", default=",".join(SWEEP))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", default="", help="runs as NAME-sSEED,... (instead of --only x --seeds)")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--min-left", type=float, default=60.0, help="start no run with fewer seconds left")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--subset", type=int, default=60000)
    ap.add_argument("--test-subset", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    args.work = args.work or Path(f"/tmp/gpu_phases-{args.subset}-{args.epochs}-{args.device}")
    deadline = time.monotonic() + args.budget_s
    only = [v for v in args.only.split(",") if v]
    jobs = [(v, s) for s in args.seeds.split(",") if s for v in only]
    if args.jobs:
        jobs = parse_jobs(args.jobs)
        only = list(dict.fromkeys(v for v, _ in jobs))
        args.seeds = ",".join(sorted({s for _, s in jobs}))
    #: phases_fmnist.py with this protocol and cache: each run and the final report add their own parts
    phases = [
        sys.executable, str(HERE / "phases_fmnist.py"), "--subset", str(args.subset),
        "--test-subset", str(args.test_subset), "--epochs", str(args.epochs), "--device", args.device,
        "--work", str(args.work),
    ] + (["--data-dir", str(args.data_dir)] if args.data_dir else [])  # fmt: skip
    log = args.out / "log"
    log.mkdir(parents=True, exist_ok=True)

    def run(job: tuple[str, str]) -> tuple[str, bool]:
        variant, seed = job
        left = deadline - time.monotonic()
        if left < args.min_left:
            return f"{variant}-s{seed}: skipped (budget)", True
        cmd = [*phases, "--results-dir", str(args.work / "scratch"), "--only", variant, "--seeds", seed,
               "--name", f"{variant}-s{seed}"]  # fmt: skip
        with open(log / f"{safe(variant)}-s{seed}.txt", "w") as fh:
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                return f"{variant}-s{seed}: killed at the deadline", True
        return f"{variant}-s{seed}: rc {rc}", rc == 0

    t0 = time.monotonic()
    failed = 0
    with ThreadPoolExecutor(args.workers) as pool:
        for fut in as_completed([pool.submit(run, j) for j in jobs]):
            line, ok = fut.result()
            failed += not ok
            print(f"[{time.monotonic() - t0:6.0f} s] {line}", flush=True)
    runs = args.out / "runs"
    runs.mkdir(exist_ok=True)
    for f in args.work.glob("*.json"):
        shutil.copy(f, runs / safe(f.name))
    report = subprocess.run([*phases, "--cached-only", "--only", ",".join(only), "--seeds", args.seeds,
                             "--results-dir", str(args.out), "--name", args.name], check=False)  # fmt: skip
    if failed:
        print(f"{failed} run(s) failed: see {log}", file=sys.stderr)
    return 1 if failed or report.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
