"""`edgeslim train` end to end: command shape, three-stage slimming, bad inputs, kill + resume bit-for-bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgeslim.checkpoint import load_model, save_model
from edgeslim.cli import main
from edgeslim.models import create_model
from edgeslim.models.registry import ModelSpec
from edgeslim.sparsity.subgradient import bn_layers

SMALL = ["--subset", "256", "--test-subset", "128", "--batch-size", "64"]


def _env() -> dict[str, str]:
    # the same thread count in every process: float sums must be reproducible across runs
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "EDGESLIM_NO_PROGRESS": "1"}


#: one epoch of the small VGG on scikit-learn's digits (seconds)
DIGITS = ["--arch", "vgg-small", "--data", "digits", "--epochs", "1"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeslim", "train", *args]


def test_three_stage_subgradient_cli(tmp_path, capsys, fmnist_dir):
    out = tmp_path / "ns"
    rc = main(["train", "--arch", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, *SMALL,
               "--epochs", "1", "--method", "subgradient", "--lambda", "1e-4", "--prune-ratio", "0.5",
               "--finetune-epochs", "1", "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "report.json").read_text())
    assert report == saved
    assert report["method"] == "subgradient"
    for key in ("accuracy_before_prune", "accuracy_after_prune", "accuracy_after_finetune"):
        assert 0.0 <= report[key] <= 1.0
    assert report["stages"]["pruned"]["pruned_channels"] == 224 == report["bn_channels_zero"]
    # the kept counts are multiples of the default profile's 16 (prune then removes every zero; a
    # count off the multiple kept zeroed channels for alignment)
    pruned = report["stages"]["pruned"]
    assert pruned["round_to"] == 16 and all(kept % 16 == 0 for kept, _ in pruned["per_layer"].values())
    # each stage's settings, the sparse training's lambda among them (only the fine-tune's were recorded)
    stage_configs = report["stage_configs"]
    assert (
        stage_configs["train"]["method"] == "subgradient"
        and stage_configs["train"]["method_args"]["lam"] == 1e-4
    )
    assert stage_configs["finetune"]["stage"] == "finetune" and report["data_args"]["name"] == "fashion-mnist"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in log] == [("train", 1), ("finetune", 1)]
    again = tmp_path / "ns-table"  # the table: its "best" is the fine-tune's (a trial read it as the run's)
    rc = main(["train", "--arch", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, *SMALL,
               "--epochs", "1", "--method", "subgradient", "--lambda", "1e-4", "--prune-ratio", "0.5",
               "--finetune-epochs", "1", "--out", str(again)])  # fmt: skip
    shown = " ".join(capsys.readouterr().out.split())
    assert (
        rc == 0 and "best test accuracy of the fine-tune" in shown and "edgeslim prune removes them" in shown
    )
    rc = main(["train", "--arch", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, *SMALL,
               "--epochs", "1", "--method", "subgradient", "--lambda", "1e-4", "--prune-ratio", "0.5",
               "--out", str(tmp_path / "ns-no-ft")])  # fmt: skip
    shown = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "best test accuracy after prune (no fine-tune)" in shown
    assert {"lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s", "gamma_mean"} <= set(log[0])
    loaded = load_model(out / "model.pt")
    assert loaded.kind == "checkpoint" and loaded.spec.in_channels == 1
    zero = sum(int(((m.weight == 0) & (m.bias == 0)).sum()) for _, m in bn_layers(loaded.model))
    assert zero == 224  # fine-tuning kept the pruned channels at zero
    assert loaded.train_state["stage"] == "finetune"
    assert (out / "trained.pt").is_file()
    # both record their data and its normalization (prune and export check on its images)
    for name in ("model.pt", "trained.pt"):
        meta = load_model(out / name).meta
        assert meta["data"] == "fashion-mnist" and len(meta["mean"]) == len(meta["std"]) == 1, name
    # a second run into the same directory is refused without --force, files untouched
    before = (out / "model.pt").read_bytes()
    rc = main(["train", "--arch", "vgg-small", "--data", "fashion-mnist", "--out", str(out)])
    assert rc == 2 and "--force" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == before


def test_info_shows_the_method_and_stage_a_train_checkpoint_records(tmp_path, capsys):
    """The docs review: docs/data-and-models.md says info shows the method and stage a checkpoint
    records, and for a train --method subgradient checkpoint it showed neither (the stage was only in
    train_state, no method in meta). Train's checkpoints now record both: the run's method in every
    stage (the fine-tune trains as baseline) and the stage."""
    out = tmp_path / "ns"
    rc = main(["train", *DIGITS, "--subset", "128", "--test-subset", "64", "--batch-size", "64", "--method",
               "subgradient", "--lambda", "1e-4", "--prune-ratio", "0.5", "--finetune-epochs", "1", "--out",
               str(out)])  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    for name, stage in (("model.pt", "finetune"), ("trained.pt", "trained")):
        assert main(["info", str(out / name)]) == 0
        rows = {
            tuple(c.strip() for c in line.strip("│ ").split("│"))
            for line in capsys.readouterr().out.splitlines()
        }
        assert ("method", "subgradient") in rows and ("stage", stage) in rows, (name, rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--arch", "vgg-smol", "--data", "digits"], "unknown architecture 'vgg-smol'"),
        (["--arch", "vgg-small", "--data", "fashion-mnits"], "unknown data set"),
        (["--arch", "vgg-small", "--data", "digits", "--lambda", "1e-4"], "--method subgradient"),
        (["--arch", "vgg-small", "--data", "digits", "--finetune-epochs", "2"], "--prune-ratio"),
        (
            ["--arch", "vgg-small", "--data", "digits", "--method", "prx"],
            "--method 'prx' is unknown to train",
        ),
        (
            ["--arch", "vgg-small", "--data", "digits", "--lr", "-1"],
            "'--lr': '-1' is out of range: it must be > 0",
        ),
        (["--data", "digits"], "--arch"),
        # (train review, finding 13: --prune-ratio 0 pruned nothing where prune --ratio 0 is refused)
        (
            ["--arch", "vgg-small", "--data", "digits", "--prune-ratio", "0"],
            "Invalid value for '--prune-ratio': '0' is out of range: it must be > 0 and < 1",
        ),
    ],
)
def test_bad_input_one_line(tmp_path, capsys, args, needle):
    rc = main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "model.pt").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--finetune-lr", "0.01"], "--finetune-lr is the learning rate of the fine-tune"),
        (["--finetune-lr", "0.01"], "add --prune-ratio and --finetune-epochs"),
        # (train review, finding 12: --prune-ratio given, it was asked for again)
        (["--prune-ratio", "0.5", "--finetune-lr", "0.01"], "the threshold prune; add --finetune-epochs"),
        (["--milestones", "0.3", "--lr-gamma", "0.5"], "--milestones and --lr-gamma shape the step decay"),
        (["--lr-gamma", "0.5", "--schedule", "constant"], "only with --schedule step (this run's: constant)"),
    ],
)
def test_options_train_would_ignore_are_refused(tmp_path, capsys, args, needle) -> None:
    """Options review, finding 3: --finetune-lr without a fine-tune, and --milestones / --lr-gamma under
    the cosine (or constant) schedule, were accepted and silently ignored."""
    out = tmp_path / "o"
    rc = main(["train", "--arch", "vgg-small", "--data", "digits", "--epochs", "1", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "foo"], "--method 'foo' is unknown to train, which takes baseline or subgradient"),
        (
            ["--warmup-epochs", "5"],
            "--warmup-epochs (5) is not below --epochs (1): the whole run would be warm-up",
        ),
    ],
)
def test_train_lists_its_own_methods_and_refuses_a_run_of_warm_up(tmp_path, capsys, args, needle) -> None:
    """Options review, finding 8: --method foo listed "baseline, mask, proximal, subgradient" (train
    refuses mask and proximal), and --warmup-epochs 5 with --epochs 1 ran without a word."""
    out = tmp_path / "o"
    rc = main(["train", "--arch", "vgg-small", "--data", "digits", "--epochs", "1", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert "mask" not in err and not out.exists()


def test_unwritable_out_and_channel_mismatch(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    rc = main(["train", "--arch", "vgg-small", "--data", "digits", "--out", str(blocker / "sub")])
    assert rc == 2 and "cannot create directory" in capsys.readouterr().err
    assert blocker.read_text() == "mine"
    # a 3-channel model as --init for 1-channel digits
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=3, input_size=(32, 32))
    save_model(tmp_path / "rgb.pt", create_model(spec), spec)
    rc = main(["train", "--arch", "vgg-small", "--data", "digits", "--init", str(tmp_path / "rgb.pt"),
               "--out", str(tmp_path / "o")])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "3-channel input" in err and "1 channel" in err
    rc = main(["train", "--resume", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_help_lists_the_options():
    r = subprocess.run(_cli("--help"), capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0
    for opt in ("--arch", "--data", "--epochs", "--out", "--resume", "--force", "--json", "--prune-ratio"):
        assert opt in r.stdout


@pytest.mark.slow
def test_kill_and_resume_is_bit_for_bit(tmp_path, fmnist_dir):
    args = ["--arch", "vgg-small", "--data", "fashion-mnist", "--data-dir", fmnist_dir, "--subset", "384",
            "--test-subset", "64", "--batch-size", "64", "--epochs", "3", "--method", "subgradient",
            "--lambda", "1e-3", "--warmup-epochs", "0.5"]  # fmt: skip
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = subprocess.run(
        _cli(*args, "--out", str(full)), capture_output=True, text=True, env=_env(), timeout=300
    )
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(_cli(*args, "--out", str(cut)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    log = cut / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    state = torch.load(cut / "model.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 1 and len(log.read_text().splitlines()) == 1
    r = subprocess.run(_cli("--resume", str(cut / "model.pt"), "--out", str(cut)), capture_output=True,
                       text=True, env=_env(), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(cut / "model.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for sa, sb in zip(
        a["train_state"]["optimizer"]["state"].values(), b["train_state"]["optimizer"]["state"].values()
    ):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    la = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r.pop("time_s") > 0 for r in la + lb] and la == lb


def test_resuming_a_finished_checkpoint_into_a_new_folder_writes_its_model(tmp_path, capsys) -> None:
    """Nothing is left to train, but the new folder gets the model the run says it wrote (it got only
    log.jsonl and report.json)."""
    from edgeslim.cli import main

    assert main(["train", *DIGITS, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--resume", str(tmp_path / "a" / "model.pt"), "--out", str(tmp_path / "b")]) == 0
    assert f"wrote {tmp_path / 'b' / 'model.pt'}" in " ".join(capsys.readouterr().err.split())
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert b["train_state"]["epoch"] == 1 and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_resumed_run_keeps_the_weights_it_started_from(tmp_path) -> None:
    """A review of the day's new code (finding 7): ``train --weights W`` records W in model.pt's meta,
    and a resume of the run dropped it (set only when the run started). It is carried over from the
    checkpoint's meta."""
    from edgeslim.cli import main

    assert main(["train", *DIGITS, "--out", str(tmp_path / "a")]) == 0
    weights = tmp_path / "w.pt"
    torch.save(torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"], weights)
    assert main(["train", *DIGITS, "--weights", str(weights), "--out", str(tmp_path / "b")]) == 0
    assert torch.load(tmp_path / "b" / "model.pt", weights_only=True)["meta"]["weights"] == str(weights)
    assert main(["train", "--resume", str(tmp_path / "b" / "model.pt"), "--out", str(tmp_path / "c")]) == 0
    assert torch.load(tmp_path / "c" / "model.pt", weights_only=True)["meta"].get("weights") == str(weights)


def test_the_next_command_of_a_built_in_subset_gives_its_budget_the_steps(
    tmp_path, capsys, fmnist_dir
) -> None:
    """Diff review: a fashion-mnist run on --subset 100 at batch 32 (3 steps an epoch) was proposed slim's
    10 epochs, 30 optimizer steps for its budget: a built-in set's subset counts as its training images."""
    import shlex

    from edgeslim.cli import main

    out = tmp_path / "fm"
    data = ["--data", "fashion-mnist", "--data-dir", fmnist_dir, "--subset", "100", "--test-subset", "200"]
    assert main(["train", "--arch", "vgg-small", *data, "--epochs", "1", "--batch-size", "32", "--lr", "0.01",
                 "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    nxt = " ".join(capsys.readouterr().err.split()).split("next: ", 1)[1].split(" (or")[0]
    assert shlex.split(nxt) == ["edgeslim", "slim", str(out / "model.pt"), *data, "--lr", "0.01", "--batch-size",
                                "32", "--epochs", "17", "--target-macs", "0.5", "--out", f"{out}-slim"]  # fmt: skip


def test_the_next_command_names_the_data_the_run_used(tmp_path, capsys) -> None:
    """The printed next step runs as pasted: it carries --data-dir, --subset and --test-subset (it had
    only --data, which failed for any data set on disk); a three-stage run points to prune."""
    import shlex

    from edgeslim.cli import main

    zip_path = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
    if not zip_path.is_file():
        pytest.skip("../shared/data/cifar10-jpeg.zip is not there")
    out = tmp_path / "dense"
    data = ["--data", "cifar10", "--data-dir", str(zip_path), "--subset", "100", "--test-subset", "50"]
    assert main(["train", "--arch", "vgg-small", *data, "--epochs", "1", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out)]) == 0  # fmt: skip
    nxt = " ".join(capsys.readouterr().err.split()).split("next: ", 1)[1].split(" (or")[0]
    # (with a MAC budget, and the epochs that give it 50 steps: 100 images at the default batch are one a epoch)
    budget = ["--epochs", "50", "--target-macs", "0.5"]
    assert shlex.split(nxt) == [
        "edgeslim",
        "slim",
        str(out / "model.pt"),
        *data,
        *budget,
        "--out",
        f"{out}-slim",
    ]
    # README review, finding 3: a fine-tune at --lr 0.01 --batch-size 16 was proposed slim's defaults (lr 0.1,
    # batch 128: one step an epoch on 122 images, nothing removed); the run's own are carried
    tuned = tmp_path / "tuned"
    assert main(["train", "--arch", "vgg-small", *data, "--epochs", "1", "--lr", "0.01", "--batch-size", "16",
                 "--cache-dir", str(tmp_path / "c"), "--out", str(tuned)]) == 0  # fmt: skip
    nxt = " ".join(capsys.readouterr().err.split()).split("next: ", 1)[1].split(" (or")[0]
    assert shlex.split(nxt) == ["edgeslim", "slim", str(tuned / "model.pt"), *data, "--lr", "0.01", "--batch-size",
                                "16", "--target-macs", "0.5", "--out", f"{tuned}-slim"]  # fmt: skip
    ns = tmp_path / "ns"
    assert main(["train", *DIGITS, "--method", "subgradient",
                 "--prune-ratio", "0.3", "--finetune-epochs", "1", "--out", str(ns)]) == 0  # fmt: skip
    assert f"next: edgeslim prune {ns / 'model.pt'} -o {ns / 'slim.pt'}" in " ".join(
        capsys.readouterr().err.split()
    )


def test_ctrl_c_says_how_to_continue(tmp_path, monkeypatch, capsys) -> None:
    """Ctrl-C during a training run names the command that continues it (it printed 'aborted')."""
    from edgeslim.cli import main
    from edgeslim.train import pipeline

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(
        pipeline, "run_training", interrupted
    )  # (imported by the train pipeline when it runs)
    out = tmp_path / "my run"
    assert main(["train", *DIGITS, "--out", str(out)]) == 130
    err = " ".join(capsys.readouterr().err.split())  # nothing saved yet: says so, and only that
    assert err.endswith(
        "interrupted before the first epoch ended: nothing was saved to continue; run the command again"
    )
    assert not out.exists()  # (nothing left: an empty log.jsonl refused the rerun, a trial found)

    def after_an_epoch(*_a, **_k):
        (out / "model.pt").write_bytes(b"an epoch's checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_training", after_an_epoch)
    assert main(["train", *DIGITS, "--out", str(out)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith(f"continue with edgeslim train --resume --out '{out}'"), err
    assert main(["train", *DIGITS, "--out", str(out), "--force", "--threads", "1"]) == 130
    err = " ".join(capsys.readouterr().err.split())  # (a resume reuses the threads it ran with)
    assert err.endswith(f"continue with edgeslim train --resume --out '{out}'"), err
    # a forced rerun stopped before it wrote anything: the earlier run is put back whole (a trial: its
    # report went, its checkpoint stayed, and --resume quietly finished the earlier run's settings)
    (out / "report.json").write_text("the earlier run's")
    (out / "log.jsonl").write_text("{}\n")
    monkeypatch.setattr(pipeline, "run_training", interrupted)
    assert main(["train", *DIGITS, "--out", str(out), "--force"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith(f"the earlier run in {out} is as it was; rerun the command to replace it"), err
    assert (out / "report.json").read_text() == "the earlier run's" and (
        out / "log.jsonl"
    ).read_text() == "{}\n"
    assert (out / "model.pt").read_bytes() == b"an epoch's checkpoint"


def test_resuming_with_another_thread_count_warns(tmp_path, caplog) -> None:
    """The checkpoint records its thread count; continuing with another says the result will differ
    from an uninterrupted run (a trial found a 2.8e-3 weight difference and no word about it)."""
    from edgeslim.cli import main

    threads = torch.get_num_threads()
    try:
        args = ["train", *DIGITS]
        assert main([*args, "--threads", "1", "--out", str(tmp_path / "a")]) == 0
        assert torch.load(tmp_path / "a" / "model.pt", weights_only=True)["train_state"]["threads"] == 1
        assert main(["train", "--resume", str(tmp_path / "a" / "model.pt"), "--threads", "2",
                     "--out", str(tmp_path / "b")]) == 0  # fmt: skip
        assert any(
            "trained with 1 CPU thread(s) and continues with 2" in r.getMessage() for r in caplog.records
        )
        caplog.clear()  # without --threads a resume continues with the run's own (a trial's hint dropped them)
        assert (
            main(["train", "--resume", str(tmp_path / "a" / "model.pt"), "--out", str(tmp_path / "c")]) == 0
        )
        assert torch.load(tmp_path / "c" / "model.pt", weights_only=True)["train_state"]["threads"] == 1
        assert not any("continues with" in r.getMessage() for r in caplog.records)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("method,needle", [("proximal", "edgeslim slim"), ("mask", "fine-tune stage")])
def test_train_takes_the_methods_its_help_lists(method, needle, tmp_path, capsys) -> None:
    """--help lists baseline and subgradient; proximal (a hidden lambda, nothing finalized) and mask
    (the fine-tune's hook) were accepted too."""
    from edgeslim.cli import main

    out = tmp_path / "run"
    args = ["train", "--arch", "vgg-small", "--data", "digits", "--method", method, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "--method baseline or subgradient" in err, err
    assert not out.exists()


def test_resuming_the_other_kind_of_run_names_the_right_command(tmp_path, capsys) -> None:
    """train --resume on a slim run and slim --resume on a train run say which command continues it
    (they said 'use --init' and 'drop --resume')."""
    from edgeslim.cli import main

    data = ["--data", "digits", "--epochs", "1"]
    assert main(["train", "--arch", "vgg-small", *data, "--out", str(tmp_path / "t")]) == 0
    assert main(["slim", "vgg-small", *data, "--out", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(tmp_path / "s")]) == 2
    assert f"continue it with edgeslim slim --resume --out {tmp_path / 's'}" in capsys.readouterr().err
    assert main(["slim", "--resume", "--out", str(tmp_path / "t")]) == 2
    assert f"continue it with edgeslim train --resume --out {tmp_path / 't'}" in capsys.readouterr().err


def _stopped_after_first_epoch(tmp_path, capsys) -> Path:
    """A digits train run of 2 epochs stopped after its first (its checkpoint says so), stdout/err read."""
    out = tmp_path / "r"
    assert main(["train", *DIGITS, "--out", str(out), "--threads", "1"]) == 0
    ckpt = torch.load(out / "model.pt", weights_only=False)
    ckpt["train_state"]["config"]["epochs"] = 2
    torch.save(ckpt, out / "model.pt")
    (out / "report.json").unlink()
    capsys.readouterr()
    return out


def test_resume_says_which_options_it_ignores_before_it_trains(tmp_path, capsys) -> None:
    """``train --resume --epochs 5 --lr 0.01`` said it ignored them only after the training had run
    (from the second docs audit); the note comes before the first epoch's line."""
    out = _stopped_after_first_epoch(tmp_path, capsys)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--lr", "0.01"]) == 0
    err = capsys.readouterr().err
    note = err.find("note: resume continues with the checkpoint's settings; ignoring --epochs, --lr")
    assert note >= 0, err
    assert "epoch" not in err[:note], err
    # a refusal after the ignored options comes alone (the second review: the note came first); the run
    # finished: without its report.json it is one stopped before writing it
    (out / "report.json").unlink()
    assert main(["train", "--resume", "--out", str(out), "--arch", "resnet20", "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: --arch resnet20 differs from the checkpoint's vgg-small") and "\n" not in err
    ), err


def test_a_train_resume_names_an_ignored_finetune_epochs(tmp_path, capsys) -> None:
    """Options review, finding 4: train --resume --finetune-epochs 3 ignored it without the note (its
    default 0 was taken for given)."""
    out = _stopped_after_first_epoch(tmp_path, capsys)
    assert (
        main(["train", "--resume", "--out", str(out), "--finetune-epochs", "3", "--weight-decay", "0"]) == 0
    )
    err = " ".join(capsys.readouterr().err.split())
    assert "ignoring --weight-decay, --finetune-epochs" in err, err
    assert load_model(out / "model.pt").train_state["stage"] == "train"  # (no fine-tune was added)


def test_json_parses_and_a_pipe_gets_no_progress_bars_under_force_color(tmp_path) -> None:
    """An automation trial: with FORCE_COLOR=1 (common in CI) rich coloured --json, which no longer
    parsed, and drew live progress bars into a pipe. stdout is plain JSON; a pipe gets epoch lines."""
    env = {**_env(), "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    env.pop("EDGESLIM_NO_PROGRESS")
    for args in (["profiles", "--json"], ["prune", "vgg-small", "-o", str(tmp_path / "m.pt"), "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "edgeslim", *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "\x1b[" not in proc.stdout and json.loads(proc.stdout), args
    code = "from edgeslim.utils.console import progress_enabled; print(progress_enabled())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_train_picks_its_subset_with_its_seed_as_slim_does(tmp_path) -> None:
    """A second-day trial: train always drew its --subset with seed 0, slim with --seed, so a dense baseline
    and a slim run of the same flags trained on other images. The seed is recorded for a resume."""
    from edgeslim.checkpoint import load_checkpoint_dict
    from edgeslim.cli import main
    from edgeslim.data import load_dataset

    args = ["train", "--arch", "vgg-small", "--data", "digits", "--subset", "300", "--test-subset", "100",
            "--epochs", "1", "--seed", "5"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    meta = load_checkpoint_dict(tmp_path / "a" / "model.pt")["meta"]
    assert meta["data_args"]["seed"] == 5
    five, zero = (load_dataset("digits", subset=300, test_subset=100, seed=s) for s in (5, 0))
    assert not torch.equal(five.train_x, zero.train_x)  # (so the seed decides which images)


def test_train_starts_from_a_state_dict_given_as_weights(tmp_path, capsys) -> None:
    """The review of a user's own model files: ``train --arch tv:resnet18 --init r18_sd.pt`` (a state_dict)
    told the user to give the architecture "with weights=r18_sd.pt", an option train did not have. train
    takes ``--weights`` as slim does; a state_dict given as ``--init`` is one line naming it."""
    spec = ModelSpec("vgg-small", num_classes=10, in_channels=1, input_size=(8, 8))
    torch.manual_seed(1)
    given = create_model(spec).state_dict()
    torch.save(given, tmp_path / "sd.pt")
    out = tmp_path / "run"
    rc = main(["train", *DIGITS, "--weights", str(tmp_path / "sd.pt"), "--lr", "1e-9", "--subset", "64",
               "--test-subset", "32", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    trained = load_model(out / "model.pt")
    assert trained.meta["weights"] == str(tmp_path / "sd.pt")
    conv = next(k for k, v in given.items() if v.ndim == 4)
    assert torch.allclose(trained.model.state_dict()[conv], given[conv], atol=1e-6)  # (lr 1e-9: as given)
    capsys.readouterr()
    torch.save(create_model(ModelSpec("vgg-small", 3, 1, (8, 8))).state_dict(), tmp_path / "three.pt")
    for args, needles in (
        (
            ["--weights", str(tmp_path / "three.pt")],
            ("trained for 3 classes", "edgeslim slim --num-classes 10"),
        ),
        (
            ["--init", str(tmp_path / "sd.pt")],
            ("is a state_dict, which names no architecture", "give it as --weights"),
        ),
        (["--init", str(tmp_path / "sd.pt"), "--weights", str(tmp_path / "sd.pt")], ("not both",)),
    ):
        rc = main(["train", *DIGITS, *args, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and all(n in err for n in needles), err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def pruned_digits(tmp_path_factory) -> Path:
    """A digits VGG of train's three stages (no fine-tune) pruned by surgery: a slim model (a recipe)."""
    base = tmp_path_factory.mktemp("pruned")
    assert main(["train", *DIGITS, "--subset", "128", "--test-subset", "64", "--method", "subgradient",
                 "--prune-ratio", "0.5", "--out", str(base / "ns")]) == 0  # fmt: skip
    assert main(["prune", str(base / "ns" / "model.pt"), "-o", str(base / "p.pt")]) == 0
    return base / "p.pt"


def test_fine_tuning_a_slim_model_points_to_export(tmp_path, capsys, pruned_digits) -> None:
    """Train review, finding 1: ``train --init p30.pt`` (a pruned model: a recipe) said next ``edgeslim
    slim``, which refuses a model that has a surgery recipe. It names export."""
    capsys.readouterr()
    out = tmp_path / "ft"
    assert main(["train", "--init", str(pruned_digits), *DIGITS, "--subset", "128", "--test-subset", "64",
                 "--out", str(out)]) == 0  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert f"next: edgeslim export {out / 'model.pt'} --onnx {out / 'model.onnx'}" in err, err
    assert "edgeslim slim" not in err


def test_init_gives_the_architecture_when_arch_is_left_out(tmp_path, capsys, pruned_digits) -> None:
    """Train review, finding 2: ``train --init p30.pt --arch resnet20`` said to drop the name, and without
    it train asked for --arch. The architecture comes from the --init checkpoint."""
    data = ["--data", "digits", "--epochs", "1", "--subset", "128", "--test-subset", "64"]
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["train", "--init", str(pruned_digits), "--arch", "resnet20", *data, "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "drop the name" in err and not out.exists(), err
    assert main(["train", "--init", str(pruned_digits), *data, "--out", str(out)]) == 0
    assert load_model(out / "model.pt").spec.arch == "vgg-small"


def test_train_resume_of_a_slim_runs_checkpoint_names_slim_resume(tmp_path, capsys) -> None:
    """Train review, finding 3: ``train --resume --out RUN/train`` (a slim run's trainer folder) failed on
    "no state for training hook '0:mask'" with "resume with the same training method". It says the
    checkpoint is a slim run's and to continue it with slim --resume on the run folder."""
    from edgeslim.checkpoint import load_checkpoint_dict
    from edgeslim.data import load_dataset
    from edgeslim.errors import EdgeslimError
    from edgeslim.train.config import TrainConfig
    from edgeslim.train.pipeline import run_training

    run = tmp_path / "s"
    assert main(["slim", "vgg-small", "--data", "digits", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    before = (run / "train" / "model.pt").read_bytes()
    assert main(["train", "--resume", "--out", str(run / "train")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training checkpoint of a slim run" in err, err
    assert f"continue it with edgeslim slim --resume --out {run}" in err, err
    assert (run / "train" / "model.pt").read_bytes() == before
    ckpt = load_checkpoint_dict(run / "train" / "model.pt")  # the library: names the stage and params
    loaded = load_model(run / "train" / "model.pt")
    bundle = load_dataset("digits")
    with pytest.raises(EdgeslimError, match="the slim stage \\(resume=True") as exc:
        run_training(
            loaded.model, loaded.spec, bundle, TrainConfig(), tmp_path / "x", resume=ckpt["train_state"]
        )
    assert "--" not in str(exc.value)


def test_a_prune_ratio_rounding_moved_off_is_recorded_and_warned(tmp_path, capsys, caplog) -> None:
    """Train review, finding 4: ``--prune-ratio 0.4`` with the default round_to 16 zeroed 30.2% of the
    channels without a word, and report.json kept only "ratio": 0.4. The share reached is recorded, and
    one well off the ratio is warned of, naming round_to 1. Review of the day's code: that warning was
    logged with the Python names (prune_ratio, round_to); on the CLI it is a note with the flags."""
    out = tmp_path / "ns"
    assert (
        main(["train", *DIGITS, "--method", "subgradient", "--prune-ratio", "0.55", "--out", str(out)]) == 0
    )
    pruned = json.loads((out / "report.json").read_text())["stages"]["pruned"]
    assert pruned["achieved_ratio"] == pruned["pruned_channels"] / pruned["removable_channels"]
    assert pruned["ratio"] == 0.55 and pruned["achieved_ratio"] <= 0.5, pruned  # (multiples of 16)
    assert not [r for r in caplog.records if "removable BN channels" in r.getMessage()]  # (a note instead)
    said = capsys.readouterr()
    err = " ".join(said.err.split())
    assert err.count("removable BN channels") == 1 and "note: --prune-ratio 0.55 zeroed " in err, err
    assert "--round-to 16 keeps each coupled group's count a multiple of it; a multiple of 1 zeroes" in err, (
        err
    )
    (line,) = [ln for ln in said.err.splitlines() if "removable BN channels" in ln]
    assert "prune_ratio" not in line and "round_to" not in line, line
    shown = " ".join(said.out.split())
    assert f"{pruned['achieved_ratio']:.1%} of the removable; asked 0.55" in shown, shown
    caplog.clear()
    assert main(["train", *DIGITS, "--method", "subgradient", "--prune-ratio", "0.55", "--round-to", "1",
                 "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    assert not [r for r in caplog.records if "removable BN channels" in r.getMessage()]
    assert "removable BN channels" not in capsys.readouterr().err


def test_train_refuses_a_slim_runs_folder_even_forced(tmp_path, capsys) -> None:
    """Train review, finding 5: ``train --force`` into a slim run's folder deleted its model.pt and trained.pt
    and left report.md, the plots and train/ describing the slim model. A slim run's folder is refused."""
    run = tmp_path / "s"
    (run / "train").mkdir(parents=True)
    for name in ("model.pt", "trained.pt", "report.json", "report.md", "channels.png", "train/log.jsonl"):
        (run / name).write_text(name)
    for extra in (["--force"], []):
        assert main(["train", *DIGITS, "--out", str(run), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "holds a slim run (train/log.jsonl, report.md)" in err, err
        assert f"e.g. {run}-train" in err and "--force" not in err, err
    assert sorted(p.name for p in run.rglob("*")) == sorted(
        ["model.pt", "trained.pt", "report.json", "report.md", "channels.png", "train", "log.jsonl"]
    )
    assert (run / "model.pt").read_text() == "model.pt"


def test_resuming_a_finished_run_in_its_folder_is_refused(tmp_path, capsys) -> None:
    """Train review, finding 8: ``train --resume --out ns1`` on a finished three-stage run exited 0,
    re-printed "wrote ..." and rewrote report.json's wall time, where a finished prune-only run was
    refused as "no training state" and slim --resume of a finished run as finished. One line says so.
    Review of the day's code: ``--resume RUN --out RUN`` (the run-folder spelling) was not refused, and
    with --force reran and rewrote the finished run; a folder is its model.pt for the check."""
    for name, extra in (("ft", ["--finetune-epochs", "1"]), ("noft", [])):
        out = tmp_path / name
        assert main(["train", *DIGITS, "--subset", "128", "--test-subset", "64", "--method", "subgradient",
                     "--prune-ratio", "0.5", *extra, "--out", str(out)]) == 0  # fmt: skip
        capsys.readouterr()
        report = (out / "report.json").read_bytes()
        for resume in (["--resume"], ["--resume", str(out / "model.pt")], ["--resume", str(out)],
                       ["--resume", str(out), "--force"]):  # fmt: skip
            assert main(["train", *resume, "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"{out} holds a finished run" in err, err
            assert "with --init" in err, err
        assert (out / "report.json").read_bytes() == report


def test_a_prune_without_fine_tune_reports_no_fine_tune_figure(tmp_path, capsys) -> None:
    """Train review, finding 9: a prune with no fine-tune showed "test accuracy after fine-tune" (the
    after-prune value) and recorded accuracy_after_finetune. Only a fine-tuned run has that figure."""
    out = tmp_path / "noft"
    args = ["train", *DIGITS, "--subset", "128", "--test-subset", "64", "--method", "subgradient"]
    assert main([*args, "--prune-ratio", "0.5", "--out", str(out)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    report = json.loads((out / "report.json").read_text())
    assert "accuracy_after_finetune" not in report and "finetuned" not in report["stages"], report.keys()
    assert "after fine-tune" not in shown and "test accuracy after prune" in shown, shown
    assert report["test_accuracy"] == report["accuracy_after_prune"]
    tuned = tmp_path / "ft"
    assert main([*args, "--prune-ratio", "0.5", "--finetune-epochs", "1", "--out", str(tuned)]) == 0
    assert "test accuracy after fine-tune" in " ".join(capsys.readouterr().out.split())
    report = json.loads((tuned / "report.json").read_text())
    assert report["accuracy_after_finetune"] == report["stages"]["finetuned"]["test_accuracy"]


def test_a_ratio_prune_of_a_zeroed_model_says_what_it_zeroed_itself(tmp_path, capsys, pruned_digits) -> None:
    """Train review, finding 11: ``prune ns1/model.pt --ratio 0.3`` on a model train had zeroed reported
    "zeroed first (--ratio) 128 of the 448 ... (up to 0)" though nothing new was zeroed, then removed more
    than the ratio without a word. It counts what the ratio zeroed itself and the zeros already there."""
    zeroed = pruned_digits.parent / "ns" / "model.pt"  # train's threshold prune at 0.5, no fine-tune
    capsys.readouterr()
    args = ["prune", str(zeroed), "--ratio", "0.3"]
    assert main([*args, "-o", str(tmp_path / "a.pt"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    z = rep["ratio_prune"]
    assert (
        z["zeroed"] == 0 and z["already_zero"] == rep["zero_scale_channels"] == rep["removed_channels"] > 0
    ), z
    assert main([*args, "-o", str(tmp_path / "b.pt")]) == 0
    shown = " ".join(capsys.readouterr().out.split()).replace("│ ", "")
    assert f"nothing: {z['already_zero']} of the" in shown and "were zero already" in shown, shown
    assert main(["prune", str(zeroed), "--ratio", "0.7", "-o", str(tmp_path / "c.pt"), "--json"]) == 0
    z = json.loads(capsys.readouterr().out)["ratio_prune"]
    assert z["zeroed"] > 0 and z["already_zero"] == rep["ratio_prune"]["already_zero"], z


def test_the_library_refuses_a_prune_ratio_of_zero_as_prune_does(tmp_path) -> None:
    """Train review, finding 13: the request refuses prune_ratio 0 in prune's words for its ratio."""
    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.train import TrainRequest, run

    req = TrainRequest(
        out_dir=tmp_path / "o", arch="vgg-small", data_name="digits", epochs=1, prune_ratio=0.0
    )
    with pytest.raises(
        EdgeslimError,
        match=r"^prune_ratio must be between 0 and 1 \(a fraction of the BN channels\), got 0.0$",
    ):
        run(req)
    assert not (tmp_path / "o").exists()
