"""Run directories: one run at a time (a lock), kill -9 leaves no stale lock and nothing half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

from edgeslim.cli import main
from edgeslim.errors import EdgeslimError
from edgeslim.utils.io import LOCK_NAME, run_dir_lock

SMALL = ["--data", "digits", "--batch-size", "32", "--threads", "1"]


def _env(tmp: Path | None = None) -> dict[str, str]:
    """The child's environment; ``tmp``: its temporary directory (a killed child cannot remove the
    ones it made, so they go under the test's own directory, not the machine's /tmp)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGESLIM_NO_PROGRESS": "1"}
    if tmp is not None:
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return env


def _start(*args: str, tmp: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeslim", *args],
        env=_env(tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, proc: subprocess.Popen, lines: int = 0, timeout: float = 180) -> None:
    """Until ``path`` exists (with at least ``lines`` lines) while ``proc`` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and (lines == 0 or path.read_text().count("\n") >= lines):
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear (exit {proc.poll()}): {proc.stderr.read().decode()[-800:]}")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--arch", "vgg-small", *SMALL, "--epochs", "3"],
        ["slim", "vgg-small", *SMALL, "--epochs", "3", "--test-subset", "64"],
    ],
    ids=["train", "slim"],
)
def test_second_run_into_the_same_directory_is_refused(command, tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(*command, "--out", str(out))
    try:
        _wait_for(out / ".edgeslim.lock", first)
        time.sleep(0.5)  # the lock is taken right after the file is created
        assert main([*command, "--out", str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert f"another edgeslim run (pid {first.pid}) is writing to {out}" in err, err
        assert len(err.strip().splitlines()) == 1
    finally:
        rc = first.wait(timeout=300)
    assert rc == 0, first.stderr.read().decode()[-1500:]
    # the first run's results are whole: its checkpoint loads and its log has one line per epoch
    model = out / ("model.pt" if command[0] == "train" else "train/model.pt")
    assert torch.load(model, weights_only=True)["train_state"]["epoch"] == 3
    assert not (out / LOCK_NAME).exists()  # a finished run takes its lock file with it


def test_the_lock_file_goes_with_the_run_and_a_removed_one_is_not_trusted(tmp_path, monkeypatch):
    d = tmp_path / "run"
    with run_dir_lock(d):
        (d / "result.txt").write_text("x")
        with pytest.raises(EdgeslimError, match=rf"another edgeslim run \(pid {os.getpid()}\) is writing"):
            with run_dir_lock(d):
                pass
    assert not (d / LOCK_NAME).exists() and (d / "result.txt").read_text() == "x"

    # the race: a run opens the lock file, the holder ends (and removes it), the run locks the
    # removed file. It must open the path again, or a third run would lock a new file beside it.
    real_open, opened = os.open, []

    def open_then_lose_it(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if not opened:
            os.unlink(path)  # what the ending holder does between our open and our flock
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", open_then_lose_it)
    with run_dir_lock(d):
        monkeypatch.setattr(os, "open", real_open)
        assert len(opened) == 2 and (d / LOCK_NAME).exists()
        with pytest.raises(EdgeslimError, match="another edgeslim run"):
            with run_dir_lock(d):
                pass


def test_a_lock_path_that_is_a_link_or_a_fifo_is_refused(tmp_path):
    """The lock was opened following links (the pid written truncated the link's target, a user's
    file, with no --force) and a FIFO there blocked the run forever (a security re-read)."""
    from edgeslim.utils.io import check_unlocked

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    d = tmp_path / "run"
    d.mkdir()
    (d / LOCK_NAME).symlink_to(victim)
    for check in (lambda: check_unlocked(d), lambda: run_dir_lock(d).__enter__()):
        with pytest.raises(
            EdgeslimError, match=r"\.edgeslim\.lock is a symbolic link, not the lock file.*remove it"
        ):
            check()
    assert victim.read_text() == "precious"
    (d / LOCK_NAME).unlink()
    os.mkfifo(d / LOCK_NAME)
    for check in (lambda: check_unlocked(d), lambda: run_dir_lock(d).__enter__()):
        with pytest.raises(EdgeslimError, match="is not a regular file"):
            check()


def test_killed_slim_leaves_no_stale_lock_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["slim", "vgg-small", *SMALL, "--epochs", "3", "--test-subset", "64", "--out", str(out)]
    proc = _start(*args, tmp=tmp_path / "tmp")
    _wait_for(out / "train" / "log.jsonl", proc, lines=1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # an interrupted run is neither overwritten nor mixed with a new one by accident
    assert main(args) == 2
    assert "holds an interrupted run" in capsys.readouterr().err
    # (a review: a resume given other data trained its last epochs on them, exit 0)
    other = [a if a != "digits" else "fashion-mnist" for a in args]
    assert main([*other, "--resume"]) == 2
    assert "drop --data fashion-mnist: a resume continues on the data the run trained on (digits)" in (
        capsys.readouterr().err
    )
    assert main([*args, "--resume"]) == 0  # the dead run's lock went with its process
    assert (out / "model.pt").is_file() and not list(out.rglob(".*.tmp"))


def test_a_run_stopped_before_its_first_checkpoint_says_force(tmp_path, capsys):
    """Ctrl-C during the first epoch leaves train/ without a checkpoint: every rerun says the same
    thing, that there is nothing to resume and --force starts over (the three reruns said three
    different things, one of them to use --resume)."""
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    (out / "train" / "log.jsonl").write_text("")  # what the trainer leaves before its first epoch ends
    args = ["slim", "vgg-small", *SMALL, "--epochs", "1", "--out", str(out)]
    for argv, needles in (
        (args, ("stopped before its first checkpoint", "--force")),
        ([*args, "--resume"], ("holds no run to continue", "drop --resume")),
        (["slim", "--resume", "--out", str(out)], ("holds no run to continue", "--force")),
    ):
        assert main(argv) == 2, argv
        err = " ".join(capsys.readouterr().err.split())
        assert all(n in err for n in needles) and "--resume, or" not in err, (argv, err)


def test_export_killed_mid_write_keeps_the_previous_file(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "resnet20", "--onnx", str(onnx_path), "--no-validate"]) == 0
    before = onnx_path.read_bytes()
    for delay in (0.5, 1.5, 3.0):
        proc = _start(
            "export",
            "resnet20",
            "--onnx",
            str(onnx_path),
            "--force",
            "--no-validate",
            "--opset",
            "18",
            tmp=tmp_path / "tmp",
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        data = onnx_path.read_bytes()
        if data != before:  # the new export completed before the kill: whole, never partial
            onnx.checker.check_model(onnx.load_from_string(data))
            before = data
    onnx.checker.check_model(onnx.load(str(onnx_path)))


def test_a_killed_writers_temp_file_is_swept_by_the_next_write(tmp_path):
    """A writer killed between temp file and rename leaves ``.NAME.*.tmp``; the next write removes it."""
    target = tmp_path / "model.pt"
    code = (
        "import os, sys, time\n"
        "from edgeslim.utils.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=_env(tmp_path / "tmp"))
    left = Path(proc.stdout.readline().decode().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert left.exists() and not target.exists()
    time.sleep(1.0)  # a rerun comes later than the kill; files younger than the rerun's start are kept
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from edgeslim.utils.io import atomic_write_text; atomic_write_text({str(target)!r}, 'x')",
        ],
        check=True,
        env=_env(),
    )
    assert target.read_text() == "x" and not left.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_two_exports_into_one_file_leave_a_whole_onnx(tmp_path):
    """Each export claims its files: one that starts while the other writes is refused in one line (an
    interrupt probe: both said "wrote" and one replaced the other unasked); one that starts after it
    replaces it (--force) whole."""
    onnx_path = tmp_path / "m.onnx"
    procs = [
        _start("export", arch, "--onnx", str(onnx_path), "--force", "--no-validate", "--opset", "17")
        for arch in ("resnet20", "vgg-small")
    ]
    codes = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read().decode() for p in procs]
    assert 0 in codes and set(codes) <= {0, 2}, errs
    for code, err in zip(codes, errs):
        if code == 2:
            assert f"is writing to {onnx_path}; wait for it to finish" in err and "Traceback" not in err, err
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.lock"))


@pytest.mark.parametrize("lr", ["1e30", "40"])
def test_a_diverging_run_saves_nothing_as_success(lr, tmp_path, capsys):
    """A learning rate that blows the weights up ends in one line and exit 2, with no NaN model on disk."""
    out = tmp_path / "run"
    assert main(["train", "--arch", "vgg-small", *SMALL, "--epochs", "2", "--lr", lr, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # epoch lines (stderr is not a terminal), then the one error
    assert "diverged" in lines[-1] and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(x.startswith("error: ") for x in lines) == 1
    if (out / "model.pt").exists():  # an earlier epoch's checkpoint may stand; it must be finite
        sd = torch.load(out / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path, capsys):
    """A bad --data-dir is found after the run directory is locked: the directory made for the run
    goes again; one that was there before stays."""
    out = tmp_path / "new" / "run"
    argv = [
        "slim",
        "vgg-small",
        "--data",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "missing"),
        "--epochs",
        "1",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main([*argv, "--out", str(kept)]) == 2
    assert kept.is_dir()


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    """The atomic writer's temporary file is 0600; the result gets what ``open()`` would give."""
    from edgeslim.utils.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "a.json").chmod(0o640)  # a file replaced keeps its mode
        atomic_write_text(tmp_path / "a.json", "[]")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_set_written_over_earlier_files_keeps_their_modes(tmp_path):
    """The new-code review (finding 4): a forced export or prune made a replaced private file (0600)
    0644, and a 0664 one 0644: the staged file got the mode of a new file and the rename kept it.
    Each file of a set keeps the mode of the file it replaces; a new one gets what ``open()`` gives."""
    from edgeslim.utils.io import atomic_write_text, writing

    files = {name: tmp_path / name for name in ("private.onnx", "shared.pt", "new.json")}
    files["private.onnx"].write_text("old")
    files["private.onnx"].chmod(0o600)
    files["shared.pt"].write_text("old")
    files["shared.pt"].chmod(0o664)
    old = os.umask(0o022)
    try:
        with writing(files.values(), replace=True) as stage:
            atomic_write_text(stage(files["private.onnx"]), "new")  # (the atomic writer)
            stage(files["shared.pt"]).write_text("new")  # (a library writing the file itself)
            atomic_write_text(stage(files["new.json"]), "{}")
    finally:
        os.umask(old)
    modes = {name: p.stat().st_mode & 0o777 for name, p in files.items()}
    assert modes == {"private.onnx": 0o600, "shared.pt": 0o664, "new.json": 0o644}
    assert all(p.read_text() != "old" for p in files.values())


def test_a_folder_named_like_a_staging_folder_that_edgeslim_did_not_make_is_kept(tmp_path):
    """The new-code review (finding 5): the sweep of dead runs' staging folders removed any folder
    named like one (a user's `.edgeslim-stage-mydata12/notes.txt`, an hour old, gone silently). Only a
    folder edgeslim marked as its staging folder is removed now."""
    from edgeslim.utils.io import atomic_write_text, writing

    mine = tmp_path / ".edgeslim-stage-mydata12"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    os.utime(mine, (time.time() - 3600, time.time() - 3600))
    with writing([tmp_path / "m.json"]) as stage:
        atomic_write_text(stage(tmp_path / "m.json"), "{}")
    assert (mine / "notes.txt").read_text() == "precious" and (tmp_path / "m.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "m.json"]


_KILLED_WRITER = """
import sys, time
from edgeslim.utils.io import writing
with writing(sys.argv[1:], replace=True) as stage:
    stage(sys.argv[1]).write_bytes(bytes(100_000))
    print(stage(sys.argv[1]).parent, flush=True)
    time.sleep(60)
"""


def test_a_run_restarted_at_once_after_a_kill_removes_what_the_killed_one_left(tmp_path):
    """The new-code review (finding 6): `kill -9` and an immediate rerun left the killed run's staging
    folder (a full-size model copy: only folders 5 s old were swept, though its flock already proves it
    unused) and the lock files of outputs the rerun removed without writing. A marked folder no one
    locks goes whatever its age, and the rerun removes the unheld locks of the files it drops."""
    from edgeslim.utils.io import atomic_write_text, writing

    onnx_path, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    int8.write_text("an earlier export's")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(onnx_path), str(int8)], stdout=subprocess.PIPE, env=_env()
    )
    left = Path(proc.stdout.readline().decode().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert left.is_dir() and (tmp_path / ".m.int8.onnx.edgeslim.lock").exists()
    with writing([onnx_path], replace=True) as stage:  # (at once: the folder is under 5 s old)
        assert not left.exists()
        atomic_write_text(stage(onnx_path), "onnx")
        stage.drop(int8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--arch", "vgg-small", *SMALL, "--epochs", "1"],
        ["slim", "vgg-small", *SMALL, "--epochs", "2", "--shrink", "0.05"],
    ],
    ids=["train", "slim"],
)
def test_a_run_leaves_torch_threads_as_it_found_them(command, tmp_path):
    # the Python API runs the stage in the caller's process: --threads 1 must not stay behind
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main([*command, "--subset", "128", "--test-subset", "64", "--out", str(tmp_path / "r")]) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_an_unfinished_run_that_cannot_resume_is_not_offered_resume(tmp_path) -> None:
    """A YOLO slimming run (ultralytics writes train/weights/last.pt, never train/model.pt) that was
    stopped: a user trial was told it 'stopped before its first checkpoint' at epoch 16; such a run
    cannot be resumed, and the line says that and only offers force."""
    from edgeslim.pipelines.rundir import run_directory

    (tmp_path / "train" / "weights").mkdir(parents=True)
    (tmp_path / "train" / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(EdgeslimError, match="did not finish") as err:
        with run_directory(tmp_path, force=False, interrupted="train", resumable=False):
            pass
    assert "cannot be resumed" in str(err.value) and err.value.params == ("force",)
    with run_directory(tmp_path, force=True, interrupted="train", resumable=False):
        pass


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path) -> None:
    """A user trial's slim run failed after writing train/log.jsonl and before any checkpoint; the
    folder then refused the next command ('holds a run stopped before its first checkpoint'),
    hiding that command's own problem. Such a run leaves nothing; one with a checkpoint is kept."""
    from edgeslim.pipelines.rundir import run_directory

    out = tmp_path / "run"
    with pytest.raises(EdgeslimError, match="diverged"):
        with run_directory(out, force=False, interrupted="train"):
            (out / "train").mkdir()
            (out / "train" / "log.jsonl").write_text("{}\n")
            raise EdgeslimError("training diverged")
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt):
        with run_directory(out, force=False, interrupted="train"):
            (out / "train").mkdir()
            (out / "train" / "model.pt").write_bytes(b"x")  # an epoch was saved: resumable
            raise KeyboardInterrupt
    assert (out / "train" / "model.pt").is_file()


def test_force_starts_the_interrupted_part_over(tmp_path) -> None:
    """With force (not resume) an old run's train/ is moved aside as the new run starts (its log and
    weights would mix with the new run's) and deleted once the new run has written; a new run stopped
    before it wrote anything of its own puts it back as it was, and the stop says so (a trial: a forced
    rerun stopped after 8 s deleted the finished run). With resume it is the run continued."""
    from edgeslim.pipelines.rundir import run_directory

    old = tmp_path / "train"
    old.mkdir()
    (old / "model.pt").write_bytes(b"old")
    (old / "log.jsonl").write_text("{}\n")
    with run_directory(tmp_path, force=True, resume=True, interrupted="train"):
        assert (old / "model.pt").read_bytes() == b"old"
    with pytest.raises(KeyboardInterrupt) as stop:
        with run_directory(tmp_path, force=True, interrupted="train", run_files=("model.pt", "log.jsonl")):
            assert not old.exists()
            old.mkdir()
            (old / "log.jsonl").write_text("{}\n")  # the new run, stopped before its first checkpoint
            raise KeyboardInterrupt
    assert (old / "model.pt").read_bytes() == b"old" and (old / "log.jsonl").read_text() == "{}\n"
    assert stop.value.earlier_run_restored == str(tmp_path)
    with pytest.raises(KeyboardInterrupt) as stop:
        with run_directory(tmp_path, force=True, interrupted="train", run_files=("model.pt", "log.jsonl")):
            old.mkdir()
            (old / "model.pt").write_bytes(b"new")  # the new run's first checkpoint: the old run is gone
            raise KeyboardInterrupt
    assert (old / "model.pt").read_bytes() == b"new" and not (old / "log.jsonl").exists()
    assert not hasattr(stop.value, "earlier_run_restored")


def test_a_run_that_fails_in_a_folder_of_user_files_leaves_none_of_its_own(tmp_path) -> None:
    """train/ holding only a user's files: a forced run that fails before its first checkpoint leaves
    its log behind no more (the next run was refused as "stopped before its first checkpoint"), and
    the user's files alone, a .pt or a results.csv among them, are no stopped run. Another trainer's
    files go too when a run starts over (a YOLO run over a classifier's kept its model.pt, offered
    for resume); ultralytics' names count only where edgeslim's mark shows its YOLO run ran (second review: a
    user's weights/imagenet.pth was removed)."""
    from edgeslim.pipelines.rundir import run_directory, slim_train_files

    train = tmp_path / "train"
    (train / "weights").mkdir(parents=True)
    mine = ["notes.txt", "pretrained.pt", "results.csv", "weights/imagenet.pth"]
    for name in mine:
        (train / name).write_text("mine")
    with run_directory(tmp_path, force=False, interrupted="train", run_files=slim_train_files):
        pass  # the user's files alone are not a stopped run
    with pytest.raises(KeyboardInterrupt):
        with run_directory(tmp_path, force=True, interrupted="train", run_files=slim_train_files):
            (train / "log.jsonl").write_text("{}\n")
            raise KeyboardInterrupt

    def left() -> list[str]:
        return sorted(str(p.relative_to(train)) for p in train.rglob("*") if p.is_file())

    assert left() == sorted(mine)
    (train / "model.pt").write_bytes(b"a classifier's")
    with run_directory(tmp_path, force=True, interrupted="train", run_files=slim_train_files):
        assert left() == sorted(mine)
    # ultralytics' files without edgeslim's mark are another tool's run (a user's, copied there: a review
    # of the YOLO user's path): kept, whatever args.yaml says
    for name in ("args.yaml", "weights/last.pt", "weights/best.pt"):
        (train / name).write_text("yolo")
    theirs = sorted([*mine, "args.yaml", "weights/last.pt", "weights/best.pt"])
    with run_directory(tmp_path, force=True, interrupted="train", run_files=slim_train_files):
        assert left() == theirs
    # an edgeslim YOLO run's files (its mark shows it ran) go, results.csv among them (ultralytics writes
    # over it anyway), the user's others stay
    (train / "edgeslim_run.json").write_text("{}")
    with run_directory(tmp_path, force=True, interrupted="train", run_files=slim_train_files):
        assert left() == sorted(m for m in mine if m != "results.csv")


def test_force_keeps_the_users_own_files_in_train(tmp_path, capsys) -> None:
    """``slim --force`` removed the earlier run's train/ folder whole, with the notes a user had put
    there (from the adversarial trial); it removes what a run writes and keeps the rest."""
    out = tmp_path / "run"
    args = ["slim", "vgg-small", *SMALL, "--subset", "256", "--test-subset", "64", "--epochs", "1"]
    args += ["--shrink", "0.1", "--out", str(out)]
    assert main(args) == 0
    train = out / "train"
    assert (train / "model.pt").is_file()
    (train / "notes.txt").write_text("mine")
    (train / ".log.jsonl.edgeslim-abcd1234.tmp").write_text("")  # an atomic write's leftover
    (train / ".my-draft.tmp").write_text("mine too")  # a user's hidden file that looks like one (the review)
    (train / ".log.jsonl.abcd1234.tmp").write_text("mine")  # ... and one named like mkstemp's
    (train / ".log.jsonl.edgeslim-backup-of-monday.tmp").write_text("mine")  # tag, not mkstemp's 8 letters
    assert main([*args, "--force"]) == 0
    assert (train / ".log.jsonl.edgeslim-backup-of-monday.tmp").is_file()  # (one rule: the sweep's)
    assert (train / "notes.txt").read_text() == "mine" and (train / ".my-draft.tmp").is_file()
    assert (train / ".log.jsonl.abcd1234.tmp").is_file()
    assert not (train / ".log.jsonl.edgeslim-abcd1234.tmp").exists()
    assert (train / "model.pt").is_file() and (train / "log.jsonl").is_file()
    capsys.readouterr()
    # (the run's trained.pt records its test accuracy as a number, which info shows; it was a dict)
    from edgeslim.checkpoint import load_model

    assert isinstance(load_model(out / "trained.pt").meta["accuracy"], float)
    assert main(["info", str(out / "trained.pt")]) == 0
    assert "test accuracy (recorded)" in capsys.readouterr().out


def test_resume_into_a_held_directory_names_the_run_holding_it(tmp_path, capsys):
    """A trial's --resume while another slim was starting (no checkpoint yet) was told the folder
    'holds no run to continue ... drop --resume'; it is told another run holds it, as --force is."""
    out = tmp_path / "run"
    with run_dir_lock(out):  # another run, still before its first checkpoint
        assert main(["slim", "vgg-small", *SMALL, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: another edgeslim run (pid {os.getpid()}) is writing to {out}; wait for it to finish "
        "or choose another output directory"
    ), err


def test_the_clean_up_after_a_failed_run_never_hides_its_error(tmp_path) -> None:
    """train/ a symlink to an empty folder: the clean-up after a failing run raised NotADirectoryError
    in place of the run's own error (from the second review); since a security probe a run refuses a
    linked train/ before it starts (it wrote and deleted through it), and the link stays; a run's own
    error still comes out of its clean-up."""
    from edgeslim.pipelines.rundir import run_directory, slim_train_files

    target = tmp_path / "elsewhere"
    target.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / "train").symlink_to(target, target_is_directory=True)
    with pytest.raises(EdgeslimError, match="train is a symbolic link"):
        with run_directory(out, force=True, interrupted="train", run_files=slim_train_files):
            raise AssertionError("the run must not start")
    assert (out / "train").is_symlink() and target.is_dir()
    (out / "train").unlink()
    with pytest.raises(RuntimeError, match="the run's own"):
        with run_directory(out, force=True, interrupted="train", run_files=slim_train_files):
            raise RuntimeError("the run's own")


def test_a_forced_run_that_stops_leaves_no_earlier_report(tmp_path):
    """An automation trial: a forced rerun stopped after an epoch left the earlier run's report.json
    and plots beside its own train/ (a "report.json exists" check passed on stale numbers)."""
    from edgeslim.pipelines.rundir import run_directory
    from edgeslim.utils.rundir import SLIM_STALE

    d = tmp_path / "run"
    d.mkdir()
    for name in ("report.json", "budget.png", "model.pt", "notes.txt"):
        (d / name).write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with run_directory(d, force=True, interrupted="train", stale=SLIM_STALE):
            (d / "train").mkdir()
            (d / "train" / "model.pt").write_text("epoch 1 of the new run")
            raise KeyboardInterrupt
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "train"]  # (the old model too: a review)
    # refused its input before writing anything: the earlier run is put back as it was (a trial's --force
    # with a misspelt data folder deleted the finished run it was to replace)
    (d / "train" / "model.pt").unlink()
    (d / "train").rmdir()
    for name in ("report.json", "budget.png", "model.pt"):
        (d / name).write_text("old")
    (d / "train").mkdir()
    (d / "train" / "log.jsonl").write_text("old log")
    (d / "train" / "model.pt").write_text("old checkpoint")
    with pytest.raises(EdgeslimError):
        with run_directory(
            d, force=True, interrupted="train", stale=SLIM_STALE, run_files=("*.pt", "log.jsonl")
        ):
            raise EdgeslimError("data_dir /nonexistent does not exist")
    assert (d / "report.json").read_text() == "old"
    assert (d / "train" / "model.pt").read_text() == "old checkpoint"
    assert not [p for p in d.iterdir() if p.name.startswith(".edgeslim-replaced")]
    # ... but not where the run wrote anything, at the top too (a review: a train run's new model.pt, a
    # slim run's latency table, beside the old report), and a killed run's hidden folder is left alone
    (d / ".edgeslim-replaced-7").mkdir()
    (d / ".edgeslim-replaced-7" / "report.json").write_text("a killed run's")
    with pytest.raises(EdgeslimError):
        with run_directory(d, force=True, stale=("report.json",)):
            (d / "model.pt").write_text("NEW epoch 1")
            raise EdgeslimError("the loss is not finite")
    assert not (d / "report.json").exists() and (d / "model.pt").read_text() == "NEW epoch 1"
    assert (d / ".edgeslim-replaced-7" / "report.json").read_text() == "a killed run's"
    (d / "model.pt").write_text("old checkpoint")
    (d / "report.json").write_text("old")
    shutil.rmtree(d / ".edgeslim-replaced-7")
    for name in ("budget.png", "model.pt"):
        (d / name).unlink()
    (d / "train" / "log.jsonl").unlink()
    (d / "train" / "model.pt").unlink()
    (d / "train").rmdir()
    # a file the new run reads from that folder stays (slim runs/a/model.pt --out runs/a --force)
    for name in ("report.json", "model.pt", "trained.pt"):
        (d / name).write_text("old")
    with run_directory(
        d, force=True, interrupted="train", stale=SLIM_STALE, inputs=(str(d / "model.pt"), None)
    ):
        pass
    assert sorted(p.name for p in d.iterdir()) == ["model.pt", "notes.txt"]
    # an input inside train/, which a forced run removes first, is refused (a review: it was deleted),
    # before anything is removed (a final read: the earlier results went first)
    (d / "report.json").write_text("old")
    (d / "train" / "weights").mkdir(parents=True)
    (d / "train" / "weights" / "last.pt").write_text("mine")
    given = f"yolo:{d / 'train' / 'weights' / 'last.pt'}"
    with pytest.raises(EdgeslimError, match="lies in .*train, which a run started over removes"):
        with run_directory(d, force=True, interrupted="train", stale=SLIM_STALE, inputs=(given,)):
            pass
    assert (d / "train" / "weights" / "last.pt").read_text() == "mine" and (d / "report.json").is_file()
    # a resumed run keeps what it may still need
    (d / "report.json").write_text("old")
    with run_directory(d, force=True, resume=True, interrupted="train", stale=SLIM_STALE):
        pass
    assert (d / "report.json").is_file()


def test_no_run_writes_through_links_or_over_results_it_did_not_make(tmp_path, capsys) -> None:
    """A security probe: slim --force wrote and deleted through a train/ that linked to another folder;
    train --out replaced a folder's own report.json and log.jsonl without --force; bench and report
    --out replaced a slim run's report.md, and report --out ignored the run-directory lock."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.pt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text("{}")
    (run / "train").symlink_to(victim, target_is_directory=True)
    args = ["slim", "vgg-small", *SMALL, "--epochs", "1", "--subset", "64", "--test-subset", "32"]
    assert main([*args, "--out", str(run), "--force"]) == 2
    err = capsys.readouterr().err
    assert "train is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert (victim / "model.pt").read_text() == "mine" and sorted(p.name for p in victim.iterdir()) == [
        "model.pt"
    ]

    own = tmp_path / "own"
    own.mkdir()
    (own / "report.json").write_text("my notes")
    (own / "log.jsonl").write_text("my log")
    assert (
        main(["train", "--arch", "vgg-small", *SMALL, "--epochs", "1", "--subset", "64", "--out", str(own)])
        == 2
    )
    assert "--force" in capsys.readouterr().err and (own / "report.json").read_text() == "my notes"

    slim_run = tmp_path / "slimrun"
    slim_run.mkdir()
    (slim_run / "report.md").write_text("the slim run's report")
    record = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ort_slim_vs_dense" / "run.json"
    assert main(["report", str(record), "--out", str(slim_run), "--no-plots"]) == 2
    assert (
        "--force" in capsys.readouterr().err
        and (slim_run / "report.md").read_text() == "the slim run's report"
    )
    held = tmp_path / "held"
    with run_dir_lock(held, created=True):
        assert main(["report", str(record), "--out", str(held), "--no-plots"]) == 2
        assert not (held / "report.md").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_forced_prune_stopped_after_its_model_leaves_no_earlier_plot(tmp_path, monkeypatch, capsys) -> None:
    """An interrupt probe: prune -o p.pt --plot p.png --force stopped between its two files left the new
    model beside the earlier run's plot (now, the INT8 review: staged, neither is published, the earlier
    pair stays); and prune --force of a file over itself must still read it."""
    import edgeslim.surgery.plot as surgery_plot
    from edgeslim.cli import main

    out, png = tmp_path / "p.pt", tmp_path / "p.png"
    assert main(["prune", "vgg-small", "-o", str(out), "--plot", str(png)]) == 0
    earlier = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def stopped(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(surgery_plot, "plot_channels", stopped)
    assert main(["prune", "vgg-small", "-o", str(out), "--plot", str(png), "--force"]) == 130
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == earlier
    monkeypatch.undo()
    assert main(["prune", str(out), "-o", str(out), "--force"]) == 0  # (its input: read, then replaced)
    assert out.is_file()
    capsys.readouterr()


def _tiny_onnx(path: Path) -> Path:
    """A one-conv ONNX model (no export: written with onnx's helpers)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 1, 3, 3], np.ones(36, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("Conv", ["input", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_files_a_command_writes_are_never_replaced_unasked(tmp_path, capsys) -> None:
    """A review of run directories: only report.json/model.pt (slim), run.json/report.md (bench) were
    looked for, so a user's own trained.pt or channels.png in the folder were replaced without force;
    prune -o X --plot X wrote its plot over its checkpoint and, forced, a prune's plot or a bench's
    layer table over the model it read (prune X -o X --force, asked, replaces its input); export took a timing cache that was one of its outputs; bench
    --out into a slim run's folder was told to force it, which replaced the slim run's report.md."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("trained.pt", "channels.png"):
        (mine / name).write_bytes(b"the user's own")
        assert main(["slim", "vgg-small", *SMALL, "--epochs", "1", "--out", str(mine)]) == 2
        assert f"{mine / name} already exists" in capsys.readouterr().err
        (mine / name).unlink()
    (mine / "trained.pt").write_bytes(b"the user's own")
    assert main(["train", "--arch", "vgg-small", *SMALL, "--epochs", "1", "--out", str(mine)]) == 2
    assert "trained.pt already exists" in capsys.readouterr().err
    assert (mine / "trained.pt").read_bytes() == b"the user's own"
    model = tmp_path / "m.pt"
    model.write_bytes(b"a model")
    for args, said in (
        (["prune", "vgg-small", "-o", str(tmp_path / "x.pt"), "--plot", str(tmp_path / "x.pt")], "is also the output"),
        (["prune", str(model), "-o", str(tmp_path / "y.pt"), "--plot", str(model), "--force"], "is also the model"),
        (["export", "vgg-small", "--input-shape", "1,28,28", "--onnx", str(tmp_path / "b.onnx"), "--trt",
          "--timing-cache", str(tmp_path / "b.onnx")], "is also the output b.onnx"),
    ):  # fmt: skip
        assert main(args) == 2, args
        assert said in capsys.readouterr().err, args
    assert model.read_bytes() == b"a model" and not (tmp_path / "b.onnx").exists()
    onnx_file = _tiny_onnx(tmp_path / "tiny.onnx")
    assert main(["bench", str(onnx_file), "--layer-table", str(onnx_file), "--force"]) == 2
    assert "is also the model" in capsys.readouterr().err
    run = tmp_path / "slimrun"
    run.mkdir()
    for name in ("model.pt", "report.json", "report.md"):
        (run / name).write_text(name)
    for extra in ([], ["--force"]):
        assert main(["bench", str(onnx_file), "--out", str(run), *extra]) == 2
        assert f"give the bench a folder of its own, e.g. {run / 'bench'}" in capsys.readouterr().err
    assert (run / "report.md").read_text() == "report.md"


def test_results_a_killed_forced_run_moved_aside_are_named(tmp_path, caplog) -> None:
    """A review: a forced run killed outright (kill -9, the OOM killer) leaves the earlier run's results
    in a hidden folder; the next run into the folder went on without a word, and each kill left another."""
    import logging

    from edgeslim.pipelines.rundir import HIDDEN_PREFIX, run_directory

    aside = tmp_path / f"{HIDDEN_PREFIX}abc123"
    aside.mkdir()
    (aside / "model.pt").write_bytes(b"the finished run")
    with caplog.at_level(logging.WARNING), run_directory(tmp_path, force=False):
        pass
    assert f"{aside} holds model.pt of an earlier run" in caplog.text and "move them back" in caplog.text


def test_a_stopped_forced_export_says_what_it_kept() -> None:
    """A review: a forced export's stop line said only that files were left complete; the INT8 review
    (finding 1): a stopped export publishes none of its files, and says so."""
    from edgeslim.cli import _interrupted_line

    line = _interrupted_line(["export", "m.pt", "--onnx", "m.onnx", "--ort", "--force"])
    assert line.endswith("nothing was written; the earlier files are as they were")
    assert _interrupted_line(["export", "m.pt", "--onnx", "m.onnx"]).endswith("nothing was written")


def test_a_stopped_yolo_run_says_whether_it_needs_force(tmp_path: Path) -> None:
    """A review: a YOLO run stopped before its first checkpoint said "rerun it with --force", though the
    run had removed its folder (no --force needed); one stopped later keeps train/ and does need it."""
    from edgeslim.cli import _interrupted_line

    out = tmp_path / "run"
    args = ["slim", "yolo:best.pt", "--data", "my.yaml", "--out", str(out)]
    line = _interrupted_line(args)
    assert line == "interrupted before the first checkpoint: nothing was kept; run the command again", line
    (out / "train" / "weights").mkdir(parents=True)
    assert (
        _interrupted_line(args) == f"interrupted; a YOLO run starts over: rerun it with --force (--out {out})"
    )


def test_a_refused_run_leaves_no_parent_folder_it_made(tmp_path, monkeypatch, capsys):
    """A README trial (session 35): `slim ... --data-dir my_images --out runs/mine` without that folder was
    refused in one line but left an empty `runs/`: only `runs/mine` was removed again. The parent folders
    a refused run made go with it; a folder that was there before stays."""
    monkeypatch.chdir(tmp_path)
    args = ["slim", "vgg-small", "--data", "imagefolder", "--data-dir", "my_images"]
    assert main([*args, "--out", "runs/mine"]) == 2
    assert "my_images does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "keep").mkdir()
    assert main([*args, "--out", "keep/a/b"]) == 2
    assert (tmp_path / "keep").is_dir() and not (tmp_path / "keep" / "a").exists()


#: a bench of a few milliseconds (the tiny model: its results, not its numbers, are what is checked)
QUICK_BENCH = ["--trials", "1", "--warmup", "0.05", "--min-iters", "5", "--min-time", "0.05", "--max-time", "0.1",
               "--threads", "1"]  # fmt: skip


def test_a_forced_bench_stopped_while_writing_keeps_the_earlier_run(tmp_path, monkeypatch, capsys) -> None:
    """An interrupt review (finding 1): Ctrl-C of a forced bench as it wrote run.json left the new PNGs and
    report.md without a run.json, deleted the earlier run, and said files were left complete. Now the
    set is published whole or not at all, and the earlier run stays as it was."""
    import edgeslim.utils.io as io

    model, out = _tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "r1"
    assert main(["bench", str(model), *QUICK_BENCH, "--out", str(out)]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "run.json" in earlier and "latency.png" in earlier

    def stopped(*_a, **_k):  # (Ctrl-C as run.json is written: the reviewer's signal at its temp file)
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "write_json", stopped)
    capsys.readouterr()
    assert main(["bench", str(model), *QUICK_BENCH, "--out", str(out), "--force"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    err = capsys.readouterr().err
    assert f"the earlier run in {out} is as it was" in err, err


def test_a_bench_never_shares_a_folder_with_an_interrupted_slim_or_train_run(tmp_path, capsys) -> None:
    """An interrupt review (finding 2): bench --out into a slim run's folder stopped after its first
    epoch (only train/) was accepted, and slim --resume then replaced the bench's report.md unasked; an
    interrupted train run's folder (model.pt, log.jsonl) was taken too."""
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    slim_run, train_run = tmp_path / "sb", tmp_path / "tr"
    (slim_run / "train").mkdir(parents=True)
    train_run.mkdir()
    for folder in (slim_run / "train", train_run):  # (what a stopped run leaves: its checkpoint and log)
        for name in ("model.pt", "log.jsonl"):
            (folder / name).write_bytes(b"epoch 1")
    for run in (slim_run, train_run):
        for extra in ([], ["--force"]):
            assert main(["bench", str(model), *QUICK_BENCH, "--out", str(run), *extra]) == 2
            assert f"give the bench a folder of its own, e.g. {run / 'bench'}" in capsys.readouterr().err
        assert not (run / "report.md").exists() and not (run / "run.json").exists()
    # a bench's results there all the same (copied, or an earlier edgeslim's): the resume refuses them
    assert main(["bench", str(model), *QUICK_BENCH, "--out", str(tmp_path / "b")]) == 0
    for name in ("run.json", "report.md"):
        shutil.copy(tmp_path / "b" / name, slim_run / name)
    capsys.readouterr()
    assert main(["slim", "--resume", "--out", str(slim_run)]) == 2
    err = capsys.readouterr().err
    assert "holds results this run did not write (run.json, report.md: a bench's)" in err, err
    assert (slim_run / "report.md").read_bytes() == (tmp_path / "b" / "report.md").read_bytes()


def _children(pid: int) -> list[int]:
    """The pids of the live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _live(pid: int) -> list[int]:
    """``[pid]`` while that process runs (not a zombie), else []."""
    try:
        return (
            [pid] if (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" else []
        )
    except OSError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_an_ort_conversion_killed_outright_takes_its_converter_along_and_its_folder_is_swept(
    tmp_path, monkeypatch
) -> None:
    """An interrupt review (finding 6): export --ort killed outright (kill -9) left its converter child
    converting and $TMPDIR/edgeslim-ort-XXXX behind, and a bench killed mid-trial its edgeslim-bench-XXXX;
    later runs never removed them. Now the converter dies with its parent, and the next temporary folder
    made removes a dead process's folder (never a live one's, nor a folder edgeslim did not mark)."""
    import tempfile

    tmpd = tmp_path / "tmp"
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    code = ("import sys; from edgeslim.export.ort_mobile import convert_to_ort; "
            "convert_to_ort(sys.argv[1], sys.argv[2], target_platform='amd64')")  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code, str(model), str(tmp_path / "tiny.ort")], env=_env(tmpd),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 60
    while not (converter := _children(parent.pid)) and parent.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # (until the converter has started)
    assert converter, f"no converter started (exit {parent.poll()}): {parent.stderr.read().decode()[-500:]}"
    parent.kill()
    parent.wait()
    # the kernel kills it as its parent dies (ms; a converter left running took seconds more to finish)
    gone = time.time() + 1.0
    while _live(converter[0]) and time.time() < gone:
        time.sleep(0.005)
    assert not _live(converter[0]), "the converter outlived its parent"
    left = sorted(tmpd.glob("edgeslim-ort-*"))
    assert len(left) == 1
    from edgeslim.utils.tmpfiles import sweep_stale_temporary, temporary_folder

    user = tmpd / "edgeslim-mine-abcdefgh"  # (a folder of a matching name edgeslim did not mark: kept)
    user.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpd))
    with temporary_folder("edgeslim-test-") as live:
        assert not left[0].exists() and user.is_dir()
        assert sweep_stale_temporary(tmpd) == [] and Path(live).is_dir()  # (a live one's: kept)
    assert sorted(p.name for p in tmpd.glob("edgeslim-*")) == [user.name]


def test_a_run_a_killed_forced_run_hid_is_named_where_it_is_looked_for(tmp_path, capsys) -> None:
    """An interrupt review (finding 3): after kill -9 of a forced slim the finished run sat in a hidden
    .edgeslim-replaced-XXXX/; slim --resume said the folder held no run to continue and export of its
    model.pt that the file did not exist, neither naming where the run was."""
    from edgeslim.pipelines.rundir import HIDDEN_PREFIX

    out = tmp_path / "hk"
    aside = out / f"{HIDDEN_PREFIX}k9x2ab"
    (aside / "train").mkdir(parents=True)
    for name in ("model.pt", "report.json", "train/model.pt"):
        (aside / name).write_bytes(b"the finished run's")
    assert main(["slim", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{aside} holds model.pt, report.json, train/model.pt of an earlier run" in err, err
    assert f"move them back into {out}" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(out / "model.pt"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"a forced run that was killed moved it aside to {aside / 'model.pt'}" in err, err


def test_a_stop_after_a_run_finished_names_no_refused_resume(tmp_path: Path) -> None:
    """An interrupt review (finding 4): Ctrl-C of slim --resume --force on a finished run said "continue
    with edgeslim slim --resume --out ...", which is refused (a finished run: --force as well); a train
    run stopped just after its report.json was offered train --resume, refused as finished."""
    from edgeslim.cli import _interrupted_line

    out = tmp_path / "h5"
    (out / "train").mkdir(parents=True)
    for name in ("model.pt", "report.json", "train/model.pt"):
        (out / name).write_bytes(b"a finished run's")
    line = _interrupted_line(["slim", "--resume", "--force", "--out", str(out)])
    assert line == (
        f"interrupted; {out} still holds the finished run (model.pt, report.json); to redo its finalize and "
        f"surgery: edgeslim slim --resume --force --out {out}"
    ), line
    line = _interrupted_line(["train", "--arch", "vgg-small", "--out", str(out)])
    assert (
        line
        == f"interrupted; the run had finished: {out} holds its model.pt and report.json, nothing to continue"
    )


def test_a_rerun_into_an_interrupted_train_run_offers_its_resume(tmp_path, capsys) -> None:
    """An interrupt review (finding 5): train into the folder of an interrupted train run said only
    "model.pt already exists; pass --force", which throws the saved epochs away (slim offers --resume)."""
    out = tmp_path / "h6"
    args = ["train", "--arch", "vgg-small", *SMALL, "--epochs", "1", "--subset", "64", "--out", str(out)]
    assert main(args) == 0
    (out / "report.json").unlink()  # (what a run stopped after its first epoch leaves: no report yet)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"{out} holds an interrupted run (model.pt, log.jsonl, no report.json); continue it with edgeslim train "
        f"--resume --out {out}, or pass --force to start over"
    ) in err, err


@pytest.mark.parametrize("stop", ["sigint", "sigterm"])
def test_a_stopped_bench_says_in_one_line_that_it_wrote_nothing(stop, tmp_path, monkeypatch, capsys) -> None:
    """An interrupt review (finding 7): every stop line came after an empty line (click's, which closes a
    terminal's ^C echo: there is none for SIGTERM, nor in a pipe), and a bench stopped before writing
    anything said "files already written were left complete"."""
    import edgeslim.utils.io as io
    from edgeslim.cli import Terminated

    def stopped(*_a, **_k):  # (the stop as the results are written: the review's signal at run.json)
        raise KeyboardInterrupt if stop == "sigint" else Terminated

    model, out = _tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "b"
    monkeypatch.setattr(io, "write_json", stopped)
    capsys.readouterr()
    assert main(["bench", str(model), *QUICK_BENCH, "--out", str(out)]) == (130 if stop == "sigint" else 143)
    err = capsys.readouterr().err
    assert err.endswith("\nerror: interrupted before the outputs were published: nothing was written\n"), err
    assert not err.startswith("\n") and "\n\n" not in err, err
    assert not out.exists()
