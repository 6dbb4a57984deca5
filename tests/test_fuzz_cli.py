"""Fuzz every command: bad option values and bad files get one line, exit 2, and touch nothing.

Bad option values are generated from each option's declared type (cli/params), so a new option
is fuzzed without editing this file; bad files cover every kind of file a command reads. Each case
asserts: exit code 2, exactly one line on stderr, no traceback, no existing file changed and no new
file written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import click
import pytest
import torch
from bench_helpers import DENSE_CFG, export_vgg

from edgeslim.cli import COMMANDS, cli, main
from edgeslim.cli.params import BetaEnd, Device, FractionList, Number, NumberList, RecoveryLr, Shape

# ---------------------------------------------------------------------------------------------
# the commands, a valid invocation of each, and their options


def _commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    out: dict[str, click.Command] = {}
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        out[name] = cmd
        if isinstance(cmd, click.Group):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
    return out


#: a valid invocation of each command ({ckpt}, {onnx}, {run}, {out} are filled in per case)
BASE = {
    "train": ["train", "--arch", "vgg-small", "--data", "digits", "--out", "{out}/train"],
    "info": ["info", "{ckpt}"],
    "slim": ["slim", "vgg-small", "--data", "digits", "--out", "{out}/slim"],
    "prune": ["prune", "{ckpt}", "-o", "{out}/p.pt"],
    "graph": ["graph", "{ckpt}"],
    "export": ["export", "{ckpt}", "--onnx", "{out}/e.onnx"],
    "bench": ["bench", "{onnx}", "--trials", "1"],
    "profiles": ["profiles"],
    "profiles show": ["profiles", "show", "jetson-nano"],
    "report": ["report", "{run}"],
}


def _bad_values(param: click.Parameter) -> list[str]:
    """Values that the option's declared type must refuse."""
    t = param.type
    if isinstance(t, Number):
        vals = ["abc", "nan", "inf", "-inf", "", "1e999"]
        if t.kind is int:
            vals.append("1.5")
        for lo in (t.min, t.gt):
            if lo is not None:
                vals.append(str(lo - 1 if lo == t.min else lo))
        for hi in (t.max, t.lt):
            if hi is not None:
                vals.append(str(hi + 1 if hi == t.max else hi))
        return vals
    if isinstance(t, (RecoveryLr, BetaEnd)):  # a word, or a number > 0
        return ["abc", "nan", "inf", "-inf", "", "1e999", "0", "-1"]
    if isinstance(t, click.Choice):
        return ["no-such-choice", ""]
    if isinstance(t, Shape):
        return ["3,32", "0,32,32", "a,b,c", "3,32,32,32", "-3,32,32", "100,32,32"]
    if isinstance(t, Device):
        return ["tpu", "cuda:x", ""]
    if isinstance(t, NumberList):
        return ["1,x", "0", "-1", ","]
    if isinstance(t, FractionList):
        return ["0.75,0.5", "1.5", "x", "0"]
    return []


def _typed_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, cmd in _commands().items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag:
                cases += [
                    (name, p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0], v)
                    for v in _bad_values(p)
                ]
    return cases


#: options whose values are free text: values each must refuse (checked before any work)
TEXT_CASES = [
    ("train", ["--arch", "resnet21"]),
    ("train", ["--data", "imagenet"]),
    ("train", ["--method", "prx"]),
    ("train", ["--resume", "{ckpt}", "--arch", "resnet20"]),
    ("info", ["--data", "imagenet"]),
    ("slim", ["--data", "imagenet"]),
    ("slim", ["--target-macs", "abc"]),
    ("slim", ["--target-macs", "150%"]),
    ("slim", ["--target-macs", "-1"]),
    ("slim", ["--target-params", "0"]),
    ("slim", ["--target-latency", "8ms"]),  # without a profile or table
    ("slim", ["--target-latency", "8ms", "--profile", "no-such-board"]),
    ("slim", ["--target-macs", "0.5", "--target-params", "0.5"]),
    ("slim", ["--lambda", "0.1", "--shrink", "1"]),
    ("slim", ["--penalty", "l1", "--g", "2"]),
    ("prune", ["--data", "imagenet"]),
    ("export", ["--workspace", "abc"]),
    ("export", ["--workspace", "1k"]),
    ("export", ["--data", "imagenet"]),
    ("bench", ["--profile", "no-such-board"]),
    ("bench", ["--providers", "bogus"]),
    ("bench", ["--predict"]),
    ("bench", ["--calibrate", "{run}"]),
    ("bench", ["--onnx", "{onnx}"]),
    ("profiles show", ["no-such-board"]),
    ("report", ["--profile", "no-such-board"]),
]

# ---------------------------------------------------------------------------------------------
# files


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Real inputs: a checkpoint, an ONNX export, a bench record; and bad files of every kind."""
    from edgeslim.checkpoint import make_checkpoint, save_model
    from edgeslim.models.registry import ModelSpec, create_model

    d = tmp_path_factory.mktemp("world")
    spec = ModelSpec("vgg-small", 10, 1, (28, 28))
    model = create_model(spec)
    ckpt = save_model(d / "model.pt", model, spec)
    onnx = export_vgg(DENSE_CFG, d / "model.onnx")
    assert main(["bench", str(onnx), "--trials", "1", "--min-iters", "5", "--min-time", "0.01",
                 "--warmup", "0.01", "--out", str(d / "bench"), "--no-plots"]) == 0  # fmt: skip
    files = {"ckpt": ckpt, "onnx": onnx, "run": d / "bench" / "run.json"}

    def put(name: str, data: bytes) -> Path:
        p = d / "bad" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        return p

    raw = ckpt.read_bytes()
    full = make_checkpoint(model, spec)
    nan_ck = make_checkpoint(model, spec)
    nan_ck["state_dict"] = {k: v.clone() for k, v in nan_ck["state_dict"].items()}
    next(v for v in nan_ck["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
    wrong_shape = dict(full, spec={**full["spec"], "num_classes": 7})

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    bad = {
        "empty.pt": b"",
        "text.pt": b"this is a text file, not a model\n",
        "random.pt": os.urandom(4096),
        "truncated.pt": raw[: len(raw) // 2],
        "onnx-as-model.pt": onnx.read_bytes(),
        "bare-dict.pt": saved({"a": 1}),
        "state-dict.pt": saved(model.state_dict()),
        "no-spec.pt": saved({"format": "edgeslim.checkpoint", "version": 1, "state_dict": {}}),
        "bad-spec.pt": saved(dict(full, spec={"arch": 5, "input_size": "x"})),
        "unknown-arch.pt": saved(dict(full, spec={**full["spec"], "arch": "resnet21"})),
        "wrong-shapes.pt": saved(wrong_shape),
        "bad-recipe.pt": saved(dict(full, recipe={"features.1": "nonsense"})),
        "list.pt": saved([1, 2, 3]),
        "gzip.pt": gzip.compress(raw),
        "zip-of-text.pt": _zip({"a.txt": b"hello"}),
        "png.pt": _png(),
    }
    files.update({f"bad:{k}": put(k, v) for k, v in bad.items()})
    files["nan:model.pt"] = put("nan.pt", saved(nan_ck))
    # data sets a user points --data-dir at
    data = d / "data"
    (data / "empty").mkdir(parents=True)
    (data / "no-train" / "test" / "a").mkdir(parents=True)
    for cls in ("a", "b"):
        (data / "corrupt" / "train" / cls).mkdir(parents=True)
        (data / "corrupt" / "test" / cls).mkdir(parents=True)
        (data / "corrupt" / "train" / cls / "x.jpg").write_bytes(b"not a jpeg")
        (data / "corrupt" / "test" / cls / "x.jpg").write_bytes(b"not a jpeg")
    (data / "one-class" / "train" / "a").mkdir(parents=True)
    (data / "one-class" / "test" / "a").mkdir(parents=True)
    (data / "one-class" / "train" / "a" / "x.png").write_bytes(_png())
    (data / "one-class" / "test" / "a" / "x.png").write_bytes(_png())
    (data / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    (data / "text.zip").write_bytes(b"hello")
    for name in ("empty", "no-train", "corrupt", "one-class", "broken.zip", "text.zip", "missing"):
        files[f"data:{name}"] = data / name
    files["bad:dir.pt"] = d / "bad" / "a-directory.pt"
    files["bad:dir.pt"].mkdir()
    files["bad:missing.pt"] = d / "bad" / "missing.pt"
    onnx_bytes = onnx.read_bytes()
    for k, v in {
        "empty.onnx": b"",
        "text.onnx": b"not onnx\n",
        "truncated.onnx": onnx_bytes[: len(onnx_bytes) // 3],
        "random.onnx": os.urandom(2048),
        "checkpoint.onnx": raw,
    }.items():
        files[f"badonnx:{k}"] = put(k, v)
    for k, v in {
        "binary.json": os.urandom(512),
        "text.json": b"not json",
        "list.json": b"[1, 2, 3]",
        "empty-object.json": b"{}",
        "wrong-types.json": json.dumps({"samples": "x", "models": 5}).encode(),
        "empty.json": b"",
    }.items():
        files[f"badjson:{k}"] = put(k, v)
    return files


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _model_file_cases() -> list[tuple[str, list[str]]]:
    """Every command that reads a model file, given every kind of bad model file."""
    cases = []
    kinds = [
        "empty.pt", "text.pt", "random.pt", "truncated.pt", "onnx-as-model.pt", "bare-dict.pt",
        "state-dict.pt", "no-spec.pt", "bad-spec.pt", "unknown-arch.pt", "wrong-shapes.pt", "bad-recipe.pt",
        "list.pt", "gzip.pt", "zip-of-text.pt", "png.pt", "dir.pt", "missing.pt",
    ]  # fmt: skip
    readers = {
        "info": ["info", "{f}"],
        "graph": ["graph", "{f}"],
        "prune": ["prune", "{f}", "-o", "{out}/p.pt"],
        "export": ["export", "{f}", "--onnx", "{out}/e.onnx"],
        "bench-torch": ["bench", "{f}", "--backend", "torch", "--trials", "1"],
        "slim": ["slim", "{f}", "--data", "digits", "--out", "{out}/slim"],
        "train-init": ["train", "--init", "{f}", "--data", "digits", "--out", "{out}/t"],
        "train-resume": ["train", "--resume", "{f}", "--out", "{out}/t"],
    }
    for k in kinds:
        for name, argv in readers.items():
            cases.append((f"{name}<{k}", [a.replace("{f}", "{bad:" + k + "}") for a in argv]))
    for name, argv in {"prune": readers["prune"], "export": readers["export"]}.items():
        cases.append((f"{name}<nan", [a.replace("{f}", "{nan:model.pt}") for a in argv]))
    for k in ("empty.onnx", "text.onnx", "truncated.onnx", "random.onnx", "checkpoint.onnx"):
        if k != "checkpoint.onnx":  # (alone, a checkpoint so named is timed as what it holds, and says so)
            cases.append((f"bench<{k}", ["bench", "{badonnx:" + k + "}", "--trials", "1"]))
        cases.append((f"bench-baseline<{k}", ["bench", "{onnx}", "--baseline", "{badonnx:" + k + "}"]))
    for k in ("binary.json", "text.json", "list.json", "empty-object.json", "wrong-types.json", "empty.json"):
        cases.append((f"report<{k}", ["report", "{badjson:" + k + "}"]))
        cases.append((f"slim-latency-table<{k}", ["slim", "vgg-small", "--data", "digits", "--out", "{out}/s",
                                                  "--target-latency", "0.5", "--latency-table",
                                                  "{badjson:" + k + "}"]))  # fmt: skip
        cases.append((f"bench-calibrate<{k}", ["bench", "{onnx}", "--predict", "--profile", "jetson-nano",
                                               "--calibrate", "{badjson:" + k + "}"]))  # fmt: skip
    for name in ("empty", "no-train", "corrupt", "one-class", "broken.zip", "text.zip", "missing"):
        for cmd in ("train", "slim"):
            argv = [x if x != "digits" else "imagefolder" for x in BASE[cmd]] + [
                "--data-dir",
                "{data:" + name + "}",
            ]
            cases.append((f"{cmd}-data<{name}", argv))
        cases.append((f"export-data<{name}", ["export", "{ckpt}", "--onnx", "{out}/e.onnx", "--data", "imagefolder",
                                              "--data-dir", "{data:" + name + "}"]))  # fmt: skip
    return cases


#: output paths that must be refused before any work
def _output_cases() -> list[tuple[str, list[str]]]:
    return [
        ("prune -o dir", ["prune", "{ckpt}", "-o", "{out}"]),
        ("prune -o under a file", ["prune", "{ckpt}", "-o", "{ckpt}/x.pt"]),
        ("prune -o existing", ["prune", "{ckpt}", "-o", "{onnx}"]),
        ("prune --plot under a file", ["prune", "{ckpt}", "-o", "{out}/p.pt", "--plot", "{ckpt}/x.png"]),
        ("export --onnx dir", ["export", "{ckpt}", "--onnx", "{out}"]),
        ("export --onnx under a file", ["export", "{ckpt}", "--onnx", "{ckpt}/x.onnx"]),
        ("export --onnx existing", ["export", "{ckpt}", "--onnx", "{onnx}"]),
        ("train --out a file", ["train", "--arch", "vgg-small", "--data", "digits", "--out", "{ckpt}"]),
        (
            "train --out under a file",
            ["train", "--arch", "vgg-small", "--data", "digits", "--out", "{ckpt}/d"],
        ),
        ("slim --out a file", ["slim", "vgg-small", "--data", "digits", "--out", "{ckpt}"]),
        ("slim --out under a file", ["slim", "vgg-small", "--data", "digits", "--out", "{ckpt}/d"]),
        ("bench --out a file", ["bench", "{onnx}", "--out", "{ckpt}"]),
        ("bench --out existing run", ["bench", "{onnx}", "--out", "{run_dir}"]),
        ("bench --layer-table under a file", ["bench", "{onnx}", "--layer-table", "{ckpt}/t.json"]),
        ("report --out existing run", ["report", "{run}", "--out", "{run_dir}"]),
        ("report --out a file", ["report", "{run}", "--out", "{ckpt}"]),
    ]


# ---------------------------------------------------------------------------------------------
# the check


def _snapshot(root: Path) -> dict[str, str]:
    snap = {}
    for p in root.rglob("*"):
        if p.is_file() and p.name != ".edgeslim.lock":
            snap[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return snap


def _fill(argv: list[str], world: dict[str, Path], out: Path) -> list[str]:
    subs = {"{out}": str(out), "{run_dir}": str(world["run"].parent)}
    subs.update({"{" + k + "}": str(v) for k, v in world.items()})
    res = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        res.append(a)
    return res


def _check(argv: list[str], world: dict[str, Path], tmp_path: Path, capsys) -> None:
    root = world["ckpt"].parent
    before, before_tmp = _snapshot(root), _snapshot(tmp_path)
    args = _fill(argv, world, tmp_path)
    rc = main(args)
    cap = capsys.readouterr()
    lines = [s for s in cap.err.strip().splitlines() if s.strip()]
    assert rc == 2, (args, rc, cap.err[-2000:])
    assert "Traceback" not in cap.err and "internal error" not in cap.err, (args, cap.err[-2000:])
    assert len(lines) == 1, (args, cap.err)
    assert lines[0].startswith("error: "), (args, cap.err)
    assert _snapshot(root) == before, f"{args}: a file of the user changed"
    assert _snapshot(tmp_path) == before_tmp, f"{args}: wrote {set(_snapshot(tmp_path)) - set(before_tmp)}"


TYPED = _typed_cases()


@pytest.mark.parametrize("command,option,value", TYPED, ids=[f"{c}{o}={v!r}" for c, o, v in TYPED])
def test_bad_option_value(command, option, value, world, tmp_path, capsys):
    _check([*BASE[command], option, value], world, tmp_path, capsys)


@pytest.mark.parametrize("command,extra", TEXT_CASES, ids=[f"{c}:{' '.join(e)}" for c, e in TEXT_CASES])
def test_bad_text_value(command, extra, world, tmp_path, capsys):
    _check([*BASE[command], *extra], world, tmp_path, capsys)


FILE_CASES = _model_file_cases() + _output_cases()


@pytest.mark.parametrize("argv", [a for _, a in FILE_CASES], ids=[n for n, _ in FILE_CASES])
def test_bad_file(argv, world, tmp_path, capsys):
    _check(argv, world, tmp_path, capsys)


#: slim --config: each value of the wrong type or range, and config files that are not configs
CONFIG_CASES = [
    "epochs: abc", "epochs: 1.5", "epochs: 0", "epochs: [1, 2]", "lambda: [1, 2]", "lambda: nan",
    "lambda: -1", "subset: 1.5", "subset: -3", "data_dir: [5]", "beta: 0", "round_to: 0", "lr: .inf",
    "weight_decay: .nan", "penalty: l7", "schedule: linear", "device: tpu", "seed: -1", "p: 2",
    "taper_end: 0", "batch_size: true", "bogus_key: 1", "epochs: {a: 1}", "- a\n- b", "just text",
    "{unclosed", "target_macs: abc", "zero_invariant: maybe",
]  # fmt: skip


@pytest.mark.parametrize("text", CONFIG_CASES)
def test_bad_config(text, world, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text + "\n")
    _check(
        ["slim", "vgg-small", "--data", "digits", "--out", "{out}/s", "--config", str(cfg)],
        world,
        tmp_path,
        capsys,
    )


@pytest.mark.parametrize("data", [b"\x00\x01\xff\xfe" * 64, b""], ids=["binary", "empty-file"])
def test_config_not_yaml(data, world, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(data)
    if not data:  # an empty config is an empty mapping: fine; make it a directory instead
        cfg.unlink()
        cfg.mkdir()
    _check(
        ["slim", "vgg-small", "--data", "digits", "--out", "{out}/s", "--config", str(cfg)],
        world,
        tmp_path,
        capsys,
    )


def test_every_numeric_option_declares_its_range():
    """Numbers arrive through cli.params.Number only (finite, ranged), never bare int/float."""
    for name, cmd in _commands().items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag:
                assert not isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)), (
                    name,
                    p.opts,
                )


def test_the_suite_is_large():
    n = len(TYPED) + len(TEXT_CASES) + len(FILE_CASES) + len(CONFIG_CASES) + 2
    assert n >= 300, n


def test_every_option_has_help_and_every_command_an_example():
    for name, cmd in _commands().items():
        assert "Example" in (cmd.help or ""), f"edgeslim {name} --help shows no example"
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"edgeslim {name} {p.opts[0]} has no help text"


def test_cli_precision_choices_are_the_profiles_precisions() -> None:
    from typing import get_args

    from edgeslim.channels.devices import Precision
    from edgeslim.cli.params import PRECISION

    assert list(PRECISION.choices) == list(get_args(Precision))
