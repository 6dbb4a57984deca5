"""The GPU benchmark script runs end to end (on the CPU, smoke settings) so it is known to work when a GPU is lent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_speed_script_smoke(tmp_path) -> None:
    gpu = _load("gpu_speed")
    out = tmp_path / "gs"
    assert gpu.main(["--device", "cpu", "--quick", "--models", "resnet20", "--modes", "eager-fp32,eager-fp16-cl",
                     "--out", str(out)]) == 0  # fmt: skip
    rec = json.loads(out.with_suffix(".json").read_text())
    assert [(r["mode"], r["batch"]) for r in rec["rows"]] == [
        ("eager-fp32", 1), ("eager-fp32", 2), ("eager-fp16-cl", 1), ("eager-fp16-cl", 2)
    ]  # fmt: skip
    for r in rec["rows"]:
        assert r["dense_ms"] > 0
        # both slim networks sit at or just under half the dense MACs (the projection is exact)
        for k in ("unaligned", "aligned8"):
            assert 2.0 <= r[k]["macs_ratio"] < 2.4 and r[k]["speedup"] > 0
    assert "| resnet20 | eager-fp16-cl | 2 |" in out.with_suffix(".md").read_text()


def test_gpu_phases_sweep_smoke(tmp_path, fmnist_dir: str) -> None:
    """The side-by-side launcher of the #16 protocol: each (variant, seed) a process, a cached JSON each,
    one report over all of them (names with '@' returned as '_at_')."""
    import subprocess
    import sys

    out, work = tmp_path / "out", tmp_path / "work"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_phases_fmnist.py"), "--device", "cpu", "--data-dir", fmnist_dir,
         "--subset", "300", "--test-subset", "100", "--epochs", "1", "--jobs", "dense-s0,uniform@0.5-s0",
         "--workers", "1", "--out", str(out), "--work", str(work), "--budget-s", "240"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["dense-s0.json", "uniform_at_0.5-s0.json"]
    rec = json.loads((out / "phases_fmnist_60k_gpu.json").read_text())
    assert set(rec["runs"]) == {"dense-s0", "uniform@0.5-s0"}
    assert rec["runs"]["uniform@0.5-s0"]["channels_removed"] == 0.5
    assert "| uniform | " in (out / "phases_fmnist_60k_gpu.md").read_text()


def test_speed_by_default_names_its_reference_as_the_width_factor_it_is(tmp_path) -> None:
    """Review of what edgeslim writes: part (c) of speed_by_default.md (and the README) called its reference
    "one common width", but width 0.516 of vgg-small keeps 16/32, 48/64, 80/128 channels (50%, 75%, 62.5%:
    each group's count is rounded up to the multiple, 16), and 0.508 keeps 0.295 of the MACs where 0.516
    keeps 0.407. The writer now says so and lists each cell's kept channels (recomputed from the
    architecture for the committed rows, which predate the field); the committed .md is what it writes."""
    sbd = _load("speed_by_default")
    committed = ROOT / "benchmarks" / "results" / "speed_by_default"
    record = json.loads(committed.with_suffix(".json").read_text())
    sbd.write(record, tmp_path / "s")
    md = (tmp_path / "s.md").read_text()
    assert "common width" not in md and "one width factor" in md
    assert "| 16 | 0.516 | 0.407 |" in md and "| 50%-75% | 16 16 48 48 80 80 | 32 32 64 64 128 128 |" in md
    assert "| 50%-62.5% | 16 16 32 32 80 80 |" in md  # width 0.508: 0.295 of the MACs
    assert md == committed.with_suffix(".md").read_text()
