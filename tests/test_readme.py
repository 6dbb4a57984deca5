"""The README's commands run as written: its shell blocks in order in a fresh directory, and its
Python example. Only sizes shrink (``--subset``, ``--test-subset``, bench timing)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
#: smaller sizes for the test run: option -> value
SHRINK = {"--subset": "600", "--test-subset": "200"}
BENCH_FAST = ["--trials", "1", "--min-iters", "5", "--min-time", "0.02", "--warmup", "0.02", "--no-plots"]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    """The shell commands of the README after the set-up block, one argv each."""
    cmds = []
    for block in _blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", block)  # join continued lines
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith(("make ", ". ", "source ")):
                continue  # set-up: what CI itself runs
            cmds.append(shlex.split(line))
    return cmds


def _shrink(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in SHRINK:
            out[i + 1] = SHRINK[a]
    if out[:2] == ["edgeslim", "bench"]:
        out += BENCH_FAST
    return out


def test_readme_has_the_promised_blocks():
    cmds = _commands()
    verbs = [c[1] for c in cmds if c[0] == "edgeslim"]
    assert verbs.count("slim") >= 2 and "export" in verbs and "bench" in verbs
    setup = _blocks("bash")[0]
    assert "make setup" in setup and ". .venv/bin/activate" in setup and "make test" in setup


def test_readme_commands_run_in_order(tmp_path, cifar_zip):
    # the user's own images of the README: three classes of the CIFAR-10 JPEG zip
    with zipfile.ZipFile(cifar_zip) as zf:
        for split, n in (("train", 60), ("test", 20)):
            for cls in ("airplane", "cat", "ship"):
                names = sorted(
                    x for x in zf.namelist() if x.startswith(f"{split}/{cls}/") and x.endswith(".jpg")
                )
                d = tmp_path / "my_images" / split / cls
                d.mkdir(parents=True)
                for name in names[:n]:
                    (d / Path(name).name).write_bytes(zf.read(name))
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1",
           "EDGESLIM_NO_PROGRESS": "1"}  # fmt: skip
    for argv in _commands():
        argv = _shrink(argv)
        if argv[0] == "python":
            argv[0] = sys.executable
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (argv, r.stderr[-3000:])
    assert (tmp_path / "runs" / "quickstart" / "bench" / "run.json").is_file()
    assert (tmp_path / "runs" / "mine" / "slim.onnx").is_file()
    mine = json.loads((tmp_path / "runs" / "mine" / "report.json").read_text())
    assert mine["macs"]["slim"] <= 0.5 * mine["macs"]["dense"] * 1.02  # the user's model did get slimmer


def test_readme_python_example_runs(tmp_path, fmnist_dir):
    (code,) = [b for b in _blocks("python") if "ProximalSlimming" in b]
    code = code.replace("subset=2000, test_subset=500", "subset=500, test_subset=200")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    zeros, ratio_and_diff = r.stdout.strip().splitlines()[-2:]
    ratio, diff = map(float, ratio_and_diff.split())
    assert int(zeros.split()[0]) > 0 and 0.3 < ratio < 0.7 and diff < 1e-4, r.stdout


def test_the_own_model_block_gives_its_budget_the_steps_it_says_a_budget_wants():
    """README review, finding 4: the block's `--epochs 3 --batch-size 32` gave its MAC budget 9 optimizer
    steps on a 122-image folder (17.5% of the MACs for 0.5). As written it gives the 50 steps the text says
    a budget wants (and train's next: line proposes), on such a folder."""
    (argv,) = [c for c in _commands() if c[:3] == ["edgeslim", "slim", "tv:resnet18"]]
    epochs, batch = int(argv[argv.index("--epochs") + 1]), int(argv[argv.index("--batch-size") + 1])
    assert epochs * (122 // batch) >= 50, argv  # (the trainer drops a short last batch)
    from edgeslim.cli.train import BUDGET_STEPS

    assert f"A budget wants some {BUDGET_STEPS}\noptimizer steps" in README.read_text()
