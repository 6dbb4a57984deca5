"""ONNX cost counter, statistics, and the roofline predictor checked against this host's CPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
from bench_helpers import DENSE_CFG, THIN_CFG, export_vgg

from edgeslim.bench.onnx_cost import onnx_cost
from edgeslim.bench.predict import Observation, calibrate, predict_latency
from edgeslim.bench.profiles import load_profile
from edgeslim.bench.stats import speedup, summarize
from edgeslim.bench.timing import TimingConfig, host_loop


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return export_vgg(DENSE_CFG, d / "dense.onnx"), export_vgg(THIN_CFG, d / "thin.onnx")


def analytic_macs(cfg, hw=28, cin=1, classes=10):
    macs, c = 0, cin
    for v in cfg:
        if v == "M":
            hw //= 2
        else:
            macs += hw * hw * v * c * 9
            c = v
    return macs + c * classes


def test_onnx_cost_matches_analytic_macs_and_params(pair):
    dense, thin = pair
    for path, cfg in ((dense, DENSE_CFG), (thin, THIN_CFG)):
        cost = onnx_cost(path)
        assert cost.macs == analytic_macs(cfg)
        convs = [layer for layer in cost.layers if layer.op == "Conv"]
        assert len(convs) == 6 and all("Relu" in layer.name for layer in convs)  # Conv+BN(+folded)+Relu fused
        assert cost.input_shapes == {"input": ["batch", 1, 28, 28]}
        first = convs[0]  # 1->c1 3x3 conv on 28x28: weights + input + output activations, fp32
        c1 = cfg[0]
        assert first.weight_bytes == 4 * (c1 * 9 + c1)  # weight + folded BN bias
        assert first.bytes == first.weight_bytes + 4 * 28 * 28 + 4 * c1 * 28 * 28
    assert onnx_cost(dense).params > 3.5 * onnx_cost(thin).params


def test_summary_statistics_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.lognormal(-7, 0.2, size=1001)
    s = summarize(x, batch=8)
    assert s["p50_ms"] == pytest.approx(np.median(x) * 1e3)
    assert s["p99_ms"] == pytest.approx(np.percentile(x, 99) * 1e3)
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert s["throughput_per_s"] == pytest.approx(8 / np.median(x))


def test_speedup_interval_covers_the_true_ratio():
    """Over repeated simulated experiments (trial-to-trial drift + per-sample noise), the paired
    bootstrap interval over 5 trials contains the true speedup 3.0 most of the time."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(40):
        drift = rng.normal(0, 0.02, 5)  # shared by both models of a trial (interleaving)
        base = [rng.lognormal(np.log(3e-3) + d + rng.normal(0, 0.01), 0.05, 300) for d in drift]
        slim = [rng.lognormal(np.log(1e-3) + d + rng.normal(0, 0.01), 0.05, 300) for d in drift]
        sp = speedup(base, slim, n_boot=500)
        hits += sp["ci_low"] <= 3.0 <= sp["ci_high"]
    assert hits >= 28, hits  # nominal 95%; 5 trials make percentile intervals narrow
    assert len(sp["per_trial"]) == 5 and "paired bootstrap" in sp["method"]
    one = speedup(base[:1], slim[:1])
    assert "samples of 1 trial" in one["method"] and one["ci_low"] <= one["value"] <= one["ci_high"]
    # two trials: resampling whole trials gives 3 values (the interval was [min, max] of the two
    # ratios); trials and then the samples within them are resampled
    two = speedup(base[:2], slim[:2], n_boot=500)
    assert (
        "two-level bootstrap over 2 trials" in two["method"]
        and two["ci_low"] <= two["value"] <= two["ci_high"]
    )
    assert two["ci_high"] > two["ci_low"]


@pytest.mark.slow
def test_roofline_prediction_against_this_cpu(pair):
    """Measure both models at batch 1 with ONNX Runtime (1 thread), calibrate the host-cpu profile
    on the dense one, predict the thin one. Batch 1 only: on this shared 2-core machine, runs of
    tens of ms are stretched by other processes' time slices, short ones mostly are not."""
    ort = pytest.importorskip("onnxruntime")
    prof = load_profile("host-cpu")
    cfg = TimingConfig(warmup_s=0.2, min_iters=200, min_time_s=0.5)
    measured, costs = {}, {}
    for path in pair:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {"input": np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)}
        measured[path.stem] = float(np.median(host_loop(lambda s=sess, f=feed: s.run(None, f), cfg)))
        costs[path.stem] = onnx_cost(path).layers
    raw = {k: predict_latency(costs[k], prof, batch=1).total_s / measured[k] - 1 for k in measured}
    eff = calibrate([Observation(costs["dense"], 1, measured["dense"])], prof)
    err = predict_latency(costs["thin"], prof, batch=1, efficiency=eff).total_s / measured["thin"] - 1
    print(
        f"host-cpu roofline error at batch 1: profile as shipped {raw}, calibrated on dense -> thin {err:+.1%}"
    )
    assert all(abs(e) < 1.5 for e in raw.values())  # within 2.5x uncalibrated
    assert abs(err) < 0.5  # calibrated on one model, the other is predicted within 50%


def test_the_p50_shown_is_the_one_the_speedup_divides():
    """Three trials of a captured noisy run (a YOLOv8n pair on a loaded 2-core machine, per-trial p50s
    54 / 183 / 165 ms and 29 / 48 / 29 ms): pooled over samples the dense p50 was 60 ms, because the
    fast trial had the most samples, while the speedup divides medians over trials. The summary's
    p50 is that median, so the table and the headline agree; the pooled value stays beside it."""
    from edgeslim.bench.compare import aggregate

    rng = np.random.default_rng(0)

    def trial(label: str, t: int, p50_ms: float, n: int) -> dict:
        host = (p50_ms * 1e-3 * (1 + 0.01 * rng.standard_normal(n))).tolist()
        return {"label": label, "trial": t, "samples": {"1": {"host": host}}, "memory": {}, "load_s": 0.1}

    record = {
        "kind": "compare",
        "batches": [1],
        "models": {"baseline": {}, "slim": {}},
        "trials": [trial("baseline", 0, 54.4, 30), trial("slim", 0, 28.9, 40), trial("slim", 1, 47.7, 20),
                   trial("baseline", 1, 182.6, 5), trial("baseline", 2, 165.4, 4), trial("slim", 2, 29.5, 25)],
    }  # fmt: skip
    aggregate(record)
    b, s = record["summary"]["baseline"]["1"], record["summary"]["slim"]["1"]
    assert b["pooled_p50_ms"] == pytest.approx(54.4, rel=0.05)  # what the table showed before
    assert b["p50_ms"] == pytest.approx(165.4, rel=0.02) and s["p50_ms"] == pytest.approx(29.5, rel=0.02)
    assert record["speedup"]["1"]["value"] == pytest.approx(b["p50_ms"] / s["p50_ms"])
    assert b["throughput_per_s"] == pytest.approx(1e3 / b["p50_ms"])


def test_a_version_1_record_shows_the_p50s_its_speedup_divides():
    """A review of what bench writes: run.json files of format version 1 written before p50 meant the
    median of the trials' p50s (the committed ort_slim_vs_dense_align16 one) hold the pooled median in
    ``p50_ms``; edgeslim report showed it (27.82 / 9.174 ms at batch 32) beside a speedup of 2.16x, which
    only the trial p50s (27.43 / 12.68) divide to. Such a record is migrated on read; one without the
    trials' p50s to recompute from is refused in one line."""
    import copy

    from edgeslim.bench.compare import VERSION, aggregate
    from edgeslim.bench.report import check_record, latency_rows, markdown
    from edgeslim.errors import EdgeslimError

    rng = np.random.default_rng(1)

    def trial(label: str, t: int, p50_ms: float, n: int) -> dict:
        host = (p50_ms * 1e-3 * (1 + 0.01 * rng.standard_normal(n))).tolist()
        return {"label": label, "trial": t, "samples": {"32": {"host": host}}, "memory": {}, "load_s": 0.1}

    record = {
        "format": "edgeslim-bench", "kind": "compare", "batches": [32], "backend": "onnxruntime",
        "models": {"baseline": {"path": "dense.onnx", "file_bytes": 1}, "slim": {"path": "slim.onnx", "file_bytes": 1}},
        "trials": [trial("baseline", 0, 27.4, 300), trial("slim", 0, 8.8, 600), trial("slim", 1, 12.7, 100),
                   trial("baseline", 1, 28.0, 300), trial("baseline", 2, 26.9, 300), trial("slim", 2, 12.9, 100)],
        "options": {}, "trials_requested": 3, "created": "x", "env": {},
    }  # fmt: skip
    aggregate(record)
    old = copy.deepcopy(record)
    old["version"] = 1
    for label in old["models"]:  # as version 1 wrote it before pooled_p50_ms: p50_ms the pooled median
        s = old["summary"][label]["32"]
        s["p50_ms"] = s.pop("pooled_p50_ms")
        s["throughput_per_s"] = 32e3 / s["p50_ms"]
    assert old["summary"]["slim"]["32"]["p50_ms"] == pytest.approx(
        8.8, rel=0.02
    )  # the fast trial's many samples
    got = check_record(copy.deepcopy(old), "run.json")
    b, s = got["summary"]["baseline"]["32"], got["summary"]["slim"]["32"]
    assert s["p50_ms"] == pytest.approx(12.7, rel=0.02) and s["pooled_p50_ms"] == pytest.approx(8.8, rel=0.02)
    assert b["p50_ms"] / s["p50_ms"] == pytest.approx(got["speedup"]["32"]["value"])
    assert s["throughput_per_s"] == pytest.approx(32e3 / s["p50_ms"]) and got["version"] == VERSION == 2
    assert [r[4] for r in latency_rows(got)] == [b["p50_ms"], s["p50_ms"]]
    assert f"{s['p50_ms']:.4g}" in markdown(got)
    # (a review of the day's code: hand-edited records) no version key is the oldest, not the newest
    unversioned = copy.deepcopy(old)
    del unversioned["version"]
    assert check_record(unversioned, "run.json")["summary"]["slim"]["32"]["p50_ms"] == pytest.approx(
        s["p50_ms"]
    )
    for bad_version in (True, "1", 3):
        with pytest.raises(EdgeslimError, match="format version"):
            check_record({**copy.deepcopy(old), "version": bad_version}, "run.json")
    for bad in ([True, False], [0.0], [float("nan")], ["12"]):  # trial p50s that are no latencies
        edited = copy.deepcopy(old)
        edited["summary"]["slim"]["32"]["trial_p50_ms"] = bad
        with pytest.raises(EdgeslimError, match="no per-trial p50s"):
            check_record(edited, "run.json")
    for label in old["models"]:
        del old["summary"][label]["32"]["trial_p50_ms"]
    with pytest.raises(
        EdgeslimError, match="format version 1 whose p50 of baseline at batch 32 may be the pooled"
    ):
        check_record(old, "run.json")


def test_a_single_model_bench_shows_how_far_apart_its_trials_were(tmp_path):
    """A review of what bench writes: a single-model bench of 2 trials (p50s 8.85 and 4.76 ms) reported
    p50 6.80 ms, a latency no trial measured, in the table, samples/s and latency.png's title, beside a box
    whose median line (pooled) sat at 4.98, and its CV warnings sent the reader to a trial spread that no
    table of a single model had. The trials' p50 range is now in the summary, the table and report.md,
    the legend says what the median of an even number of trials is, and the warning names that column."""
    from edgeslim.bench.compare import aggregate
    from edgeslim.bench.report import LATENCY_COLS, latency_rows, markdown, plots, warnings

    rng = np.random.default_rng(2)

    def trial(t: int, p50_ms: float, n: int) -> dict:
        host = (p50_ms * 1e-3 * (1 + 0.05 * rng.standard_normal(n))).tolist()
        return {"label": "model", "trial": t, "samples": {"16": {"host": host}}, "memory": {}, "load_s": 0.1}

    record = {
        "format": "edgeslim-bench", "kind": "single", "batches": [16], "backend": "onnxruntime",
        "models": {"model": {"path": "slim.onnx", "file_bytes": 1}}, "trials": [trial(0, 8.85, 30), trial(1, 4.76, 64)],
        "options": {}, "trials_requested": 2, "created": "x", "env": {},
    }  # fmt: skip
    aggregate(record)
    s = record["summary"]["model"]["16"]
    lo, hi = s["trial_p50_range_ms"]
    assert lo == pytest.approx(4.76, rel=0.02) and hi == pytest.approx(8.85, rel=0.02)
    assert s["p50_ms"] == pytest.approx((lo + hi) / 2)  # the mean of the two middle ones, as the legend says
    row = dict(zip(LATENCY_COLS, latency_rows(record)[0], strict=True))
    assert row["trial p50s ms"] == f"{lo:.4g}-{hi:.4g}"
    md = markdown(record)
    assert (
        "| trial p50s ms |" in md and f"{lo:.4g}-{hi:.4g}" in md and "the mean of the two middle ones" in md
    )
    (cv,) = [w for w in warnings(record) if "CV" in w]
    assert "trial p50s are the numbers to read" in cv and "trial spread" not in cv
    assert "latency.png" in [p.name for p in plots(record, tmp_path)]


def test_file_sizes_and_memory_are_both_in_mib(tmp_path):
    """A review of what bench writes: 'file MB' was bytes / 1e6 while 'peak RSS MB' and 'RSS delta MB' were
    /proc's KiB / 1024 (MiB), under one table header and one 'MB' axis of memory.png. Both are MiB now,
    labelled so in the table, the JSON keys and the plot; a record with the older '_mb' keys (the same
    MiB) still renders."""
    import copy
    import json
    import subprocess
    import sys

    from edgeslim.bench.compare import aggregate
    from edgeslim.bench.report import MEMORY_COLS, memory_rows, plots

    # in a process of its own, as bench measures: a test worker's other threads (left by earlier tests) may
    # free pages between the two marks (CI once read a delta of 20.6 MiB for the 40 MiB touched here).
    # 40 MiB, touched: above glibc's largest mmap threshold (32 MiB), so fresh pages whatever was freed before
    script = (
        "import json, numpy as np\n"
        "from edgeslim.bench.memory import MemoryTrace\n"
        "trace = MemoryTrace()\n"
        "trace.mark('runtime_imported')\n"
        "block = np.ones(40 * 2**20 // 8)\n"
        "trace.mark('first_inference')\n"
        "mem = trace.to_dict()\n"
        "kib = int(next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')).split()[1])\n"
        "print(json.dumps({'mem': mem, 'hwm_mib': kib / 1024}))\n"
    )
    got = json.loads(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    mem = got["mem"]
    assert mem["peak_rss_mib"] == pytest.approx(got["hwm_mib"], abs=1) and 39 < mem["rss_delta_mib"] < 48
    assert not [k for k in mem if k.endswith("_mb")]

    def trial(t: int, memory: dict) -> dict:
        return {
            "label": "model",
            "trial": t,
            "samples": {"1": {"host": [1e-3] * 5}},
            "memory": memory,
            "load_s": 0.1,
        }

    record = {
        "format": "edgeslim-bench", "kind": "single", "batches": [1], "backend": "onnxruntime",
        "models": {"model": {"path": "m.onnx", "file_bytes": 3 * 2**20}}, "trials": [trial(0, mem), trial(1, mem)],
        "options": {}, "trials_requested": 2, "created": "x", "env": {},
    }  # fmt: skip
    aggregate(record)
    row = dict(zip(MEMORY_COLS, memory_rows(record)[0], strict=True))
    assert row["file MiB"] == 3.0 and row["peak RSS MiB"] == pytest.approx(mem["peak_rss_mib"])
    assert not [c for c in MEMORY_COLS if c.endswith(" MB")]
    old = copy.deepcopy(record)  # as records before MiB keys hold them (values already MiB)
    old["summary"]["model"]["memory"] = {
        k[:-3] + "mb": v for k, v in record["summary"]["model"]["memory"].items()
    }
    assert memory_rows(old) == memory_rows(record)
    old.pop("summary")
    old["trials"] = [
        trial(t, {k[:-3] + "mb": v for k, v in mem.items() if k.endswith("_mib")}) for t in (0, 1)
    ]
    assert memory_rows(aggregate(old)) == memory_rows(record)  # (re-summarized from old trials too)
    assert "memory.png" in [p.name for p in plots(record, tmp_path)]


def test_latency_png_of_many_batches_wraps_into_rows(tmp_path):
    """A review of what bench writes: ``--batch 1,2,4,8,16,32,64`` drew latency.png's seven panels in one
    row, 5.2 inches each (4004 x 418 px, unreadable at page width). They wrap, three per row."""
    from matplotlib.image import imread

    from edgeslim.bench.compare import aggregate
    from edgeslim.bench.report import plots

    batches = [1, 2, 4, 8, 16, 32, 64]
    rng = np.random.default_rng(3)

    def trial(label: str, t: int, ms: float) -> dict:
        samples = {str(b): {"host": (b * ms * 1e-3 * (1 + 0.02 * rng.random(20))).tolist()} for b in batches}
        return {"label": label, "trial": t, "samples": samples, "memory": {}, "load_s": 0.1}

    record = {
        "format": "edgeslim-bench", "kind": "compare", "batches": batches, "backend": "onnxruntime",
        "models": {"baseline": {"path": "a.onnx", "file_bytes": 1}, "slim": {"path": "b.onnx", "file_bytes": 1}},
        "trials": [trial("baseline", 0, 0.6), trial("slim", 0, 0.3), trial("slim", 1, 0.3), trial("baseline", 1, 0.6)],
        "options": {}, "trials_requested": 2, "created": "x", "env": {},
    }  # fmt: skip
    aggregate(record)
    (png,) = [p for p in plots(record, tmp_path) if p.name == "latency.png"]
    height, width = imread(png).shape[:2]
    assert width < 1800 and height > 1000, (width, height)  # 3 panels wide, 3 rows


def test_latency_png_draws_the_p50_as_the_red_dash_its_title_names(tmp_path, monkeypatch):
    """Fresh-eyes README trial, finding 5: latency.png's titles said "red dash" for the trials' median p50,
    but it was drawn as a solid red bar over the boxes' orange median line (hiding it where they met). It
    is a dashed red line now, the orange line showing through its gaps."""
    from matplotlib.colors import to_rgba

    import edgeslim.bench.report as report
    from edgeslim.bench.compare import aggregate

    rng = np.random.default_rng(4)

    def trial(label: str, t: int, ms: float) -> dict:
        return {"label": label, "trial": t, "samples": {"1": {"host": (ms * 1e-3 * (1 + 0.02 * rng.random(30))).tolist()}},
                "memory": {}, "load_s": 0.1}  # fmt: skip

    record = {
        "format": "edgeslim-bench", "kind": "compare", "batches": [1], "backend": "onnxruntime",
        "models": {"baseline": {"path": "a.onnx", "file_bytes": 1}, "slim": {"path": "b.onnx", "file_bytes": 1}},
        "trials": [trial("baseline", 0, 0.6), trial("slim", 0, 0.3), trial("slim", 1, 0.3), trial("baseline", 1, 0.6)],
        "options": {}, "trials_requested": 2, "created": "x", "env": {},
    }  # fmt: skip
    aggregate(record)
    drawn: list = []
    save = report.save_figure
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path))
    assert "latency.png" in [p.name for p in report.plots(record, tmp_path)]
    ax = drawn[0].axes[0]
    assert "red dash, the median of the trials' p50s" in ax.get_title().replace("\n", " ")
    assert max(map(len, ax.get_title().splitlines())) <= 62  # (wrapped: a line ran past the figure's edge)
    red = [ln for ln in ax.get_lines() if to_rgba(ln.get_color()) == to_rgba("tab:red")]
    assert len(red) == 2 and all(ln.get_linestyle() == "--" for ln in red), [ln.get_linestyle() for ln in red]


def test_a_run_started_on_a_busy_machine_is_flagged():
    """A trial's 2-thread bench on a 2-core machine another job was using (load 2.3-2.8) showed a
    3.98x speed-up with a tight interval (3.57x on a rerun; the dense model ran 6.8 ms at 2 threads,
    2.6 ms at 1): the report now says the run started busy. The rule is load + threads > cores + 1."""
    from edgeslim.bench.report import warnings

    def flagged(load: float, cores: int, threads: int | None) -> bool:
        record = {"models": {}, "batches": [], "env": {"load_avg": [load, load, load], "cpu_count": cores,
                                                       "cpu_affinity": cores, "threads": threads}}  # fmt: skip
        return any("busy" in w for w in warnings(record))

    assert flagged(2.3, 2, 2) and flagged(2.1, 2, 1)
    assert not flagged(0.4, 2, 1) and not flagged(0.9, 2, 2) and not flagged(0.8, 8, None)
    assert flagged(1.5, 2, None)  # no thread count: every core is used
    assert not any("busy" in w for w in warnings({"models": {}, "batches": [], "env": {"load_avg": None}}))


def test_the_busy_warning_of_a_run_without_a_thread_count_says_it_guessed():
    """A review of the day's new code (finding 9): ``report`` of an older run showed "threads: not
    recorded" while its busy warning said "uses 2 thread(s)", guessed from the core count. It says the
    count is not recorded and what it guessed from."""
    from edgeslim.bench.report import warnings

    env = {"load_avg": [1.7, 1.7, 1.7], "cpu_count": 2, "cpu_affinity": 2}
    said = " ".join(warnings({"models": {}, "batches": [], "env": env}))
    assert "records no thread count (guessed from its 2 cores" in said and "uses 2 thread(s)" not in said
    said = " ".join(warnings({"models": {}, "batches": [], "env": {**env, "threads": 2}}))
    assert "the run uses 2 thread(s)" in said


def test_an_ort_file_timed_off_arm_is_flagged():
    """edgeslim's .ort files are converted for ARM (fixed optimizations); a user trial timed one on
    x86_64 5x slower than its .onnx and read an INT8 .ort as 8.5x faster than the FP32 .ort."""
    from edgeslim.bench.report import warnings

    def record(machine: str, *paths: str) -> dict:
        models = {label: {"path": p} for label, p in zip(("baseline", "slim"), paths)}
        return {"models": models, "batches": [], "env": {"machine": machine}}

    flagged = warnings(record("x86_64", "slim.onnx", "slim.int8.ort"))
    assert len(flagged) == 1 and flagged[0].startswith("slim is an .ort file") and "x86_64" in flagged[0]
    assert "baseline and slim are .ort files" in warnings(record("x86_64", "a.ort", "b.ort"))[0]
    assert warnings(record("aarch64", "a.ort", "b.ort")) == [] and warnings(record("x86_64", "a.onnx")) == []


def test_onnx_cost_fuses_silu_written_as_sigmoid_times_x(tmp_path):
    """SiLU exports as Sigmoid + Mul reading the conv's output twice; TensorRT and ORT run it as the
    conv's activation, so the cost counter folds both into the conv (a trial's EfficientNet-B0 was
    predicted 2.3x slower on a Jetson profile than the budget's model, every Sigmoid and Mul a launch)."""
    pytest.importorskip("torch")
    from torch import nn

    from edgeslim.export import export_onnx

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 8, 1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    export_onnx(net, tmp_path / "silu.onnx", (3, 16, 16))
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "silu.onnx")).graph.node]
    assert ops.count("Sigmoid") == 2 and ops.count("Mul") == 2  # SiLU as two ops in the file
    layers = onnx_cost(tmp_path / "silu.onnx").layers
    convs = [layer for layer in layers if layer.op == "Conv"]
    assert len(convs) == 2 and all(layer.name.endswith("+Swish") for layer in convs)
    assert not any(layer.op in ("Sigmoid", "Mul") for layer in layers)


@pytest.mark.parametrize(
    "lo,hi", [(8.9, 15.2), (0.28, 0.51), (1.2, 4.3), (2.1, 2.3), (0.003, 2.0), (1e-4, 3.0)]
)
def test_log_axes_are_labelled_with_plain_numbers_inside_the_data(lo, hi):
    """A trial's latency.png labelled its log axis '5x10^-1' and put no label near the batch-32 data
    (9 and 10 ms only, for boxes at 9 and 14.7)."""
    from edgeslim.utils.plotting import new_figure, plain_log_axis

    fig, ax = new_figure()
    ax.plot([0, 1], [lo, hi])
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis, lo, hi)
    fig.canvas.draw()
    inside = [t for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi and t.get_text()]
    assert len(inside) >= 2, [t.get_text() for t in ax.get_yticklabels()]
    assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in ax.get_yticklabels())
    if hi / lo < 10:  # within a decade: a label in each half of the data (a reader found none near a
        # slim box at 1.3 ms under labels 2, 3, 4)
        assert any(t.get_position()[1] >= (lo * hi) ** 0.5 for t in inside)
        assert any(t.get_position()[1] <= lo * (hi / lo) ** 0.35 for t in inside), [
            t.get_text() for t in inside
        ]


def test_a_backend_registered_in_python_reaches_the_measuring_processes(pair, tmp_path, monkeypatch):
    """An extender's trial: register_backend("mybk", ...) then measure(backend="mybk") failed in the
    fresh worker processes with "unknown backend 'mybk'" (they never saw the registration)."""
    from edgeslim.bench.backends import BACKENDS, register_backend
    from edgeslim.pipelines.bench import BenchRequest, measure

    (tmp_path / "mybk.py").write_text(
        "from pathlib import Path\n"
        "from edgeslim.bench.backends.ort import OrtBackend\n\n"
        "class MyBackend(OrtBackend):\n"
        "    def open(self, path, options):\n"
        "        Path(__file__).with_name('opened').write_text('yes')\n"
        "        return super().open(path, options)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    register_backend("mybk", "mybk:MyBackend")
    try:
        fast = {"trials": 1, "warmup": 0.01, "min_iters": 3, "min_time": 0.01, "plots": False}
        record, _ = measure(
            BenchRequest(str(pair[1]), baseline=str(pair[0]), backend="mybk", batches=(1,), **fast)
        )
    finally:
        BACKENDS.pop("mybk", None)
    assert record["backend"] == "mybk" and (tmp_path / "opened").read_text() == "yes"
    assert record["summary"]["slim"]["1"]["p50_ms"] > 0


def test_onnx_cost_of_a_fixed_batch_file_is_per_sample(pair, tmp_path):
    """A review: a file exported at a fixed batch of 4 counted 4x the MACs and bytes (only a symbolic
    batch counted as 1), so bench --predict multiplied the batch in twice and a dynamic dense file
    against a fixed-batch slim one gave a MAC ratio 4x too small."""
    import torch

    from edgeslim.models.vgg import VGG

    path = tmp_path / "b4.onnx"
    model = VGG(THIN_CFG, num_classes=10, in_channels=1).eval()
    torch.onnx.export(model, (torch.randn(4, 1, 28, 28),), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)  # fmt: skip
    fixed, dynamic = onnx_cost(path), onnx_cost(pair[1])
    assert fixed.input_shapes == {"input": [4, 1, 28, 28]}
    assert fixed.macs == dynamic.macs == analytic_macs(THIN_CFG)
    assert [(a.macs, a.bytes) for a in fixed.layers] == [(b.macs, b.bytes) for b in dynamic.layers]


def test_a_bug_in_the_measuring_process_is_an_internal_error_with_its_traceback(
    pair, tmp_path, monkeypatch, capsys
):
    """The bench review (finding 4): an error in the measuring process came back as its whole
    multi-line message in an EdgeslimError (exit 2, "refused"), its traceback never shown, even with
    --debug; a bug there is an internal error now (exit 1, one line with its origin), --debug prints
    the process's traceback."""
    from edgeslim.bench.backends import BACKENDS, register_backend
    from edgeslim.cli import _failure
    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.bench import BenchRequest, measure

    (tmp_path / "buggy.py").write_text(
        "from edgeslim.bench.backends.ort import OrtBackend\n\n"
        "class Buggy(OrtBackend):\n"
        "    def open(self, path, options):\n"
        "        session = super().open(path, options)\n"
        "        session.set_batch = self.set_batch\n"
        "        return session\n\n"
        "    def set_batch(self, batch):\n"
        "        raise ValueError('a bug\\nits second line')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    register_backend("buggy", "buggy:Buggy")
    try:
        fast = {"trials": 1, "warmup": 0.0, "min_iters": 3, "min_time": 0.0, "plots": False}
        with pytest.raises(Exception) as e:
            measure(BenchRequest(str(pair[1]), backend="buggy", **fast))
    finally:
        BACKENDS.pop("buggy", None)
    assert not isinstance(e.value, EdgeslimError), str(e.value)
    assert type(e.value).__name__ == "WorkerError" and str(e.value) == "a bug"
    line, code, _ = _failure(e.value, ["bench", str(pair[1])], debug=False)
    assert code == 1 and "\n" not in line
    assert line.startswith(
        "internal error: ValueError: a bug at buggy.py:10 in set_batch (the measuring process)"
    )
    _failure(e.value, ["bench", str(pair[1])], debug=True)
    err = capsys.readouterr().err
    assert 'buggy.py", line 10, in set_batch' in err and "its second line" in err


def test_a_model_that_fails_on_its_input_is_one_line_naming_the_cause(tmp_path, capsys):
    """The bench review (finding 4): a TorchScript model given another input shape than it takes failed
    with the interpreter's 2,600-character traceback as the "one line"; the model's own error now."""
    import torch

    from edgeslim.cli import main
    from edgeslim.models.vgg import VGG

    ts = tmp_path / "ts.pt"
    torch.jit.trace(VGG(THIN_CFG, num_classes=10, in_channels=1).eval(), torch.randn(1, 1, 28, 28)).save(
        str(ts)
    )
    fast = ["--trials", "1", "--warmup", "0", "--min-iters", "3", "--min-time", "0", "--threads", "1"]
    assert main(["bench", str(ts), "--trust-pickle", "--input-shape", "3,28,28", *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and len(err) < 500, err
    assert re.search(
        r"ts.pt fails in torch on a random float32 input 1x3x28x28 \(RuntimeError: .*3 channels", err
    )
    assert "--input-shape" in err


class _Quirky(__import__("torch").nn.Module):
    """A conv whose forward (or eval) fails as ``mode`` says."""

    def __init__(self, mode: str) -> None:
        import torch

        super().__init__()
        self.mode, self.conv = mode, torch.nn.Conv2d(3, 4, 3)

    def train(self, mode: bool = True):
        if self.mode == "bad_eval":
            raise AttributeError("'NoneType' object has no attribute 'training'")
        return super().train(mode)

    def forward(self, x):
        import torch

        if self.mode == "batch1_only" and x.shape[0] != 1:
            raise RuntimeError("shape '[1, -1]' is invalid for input of size 72")
        if self.mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return None if self.mode == "none" else self.conv(x)


def _torch_session(tmp_path, mode: str):
    import torch

    from edgeslim.bench.backends.torch_eager import TorchBackend

    torch.save(_Quirky(mode), tmp_path / f"{mode}.pt")
    options = {"trust_pickle": True, "input_shape": (3, 8, 8), "device": "cpu"}
    return TorchBackend().open(str(tmp_path / f"{mode}.pt"), options)


def test_the_torch_backend_tells_a_models_own_failures_apart(tmp_path) -> None:
    """Review of today's code (runbench.sh models/batch2.pt, oom.pt, badeval.pt, returns_none.pt): every
    error of the forward became "give the --input-shape", also one at a later batch of a model that ran at
    batch 1 and running out of memory (which the measuring process says as such); the model's own eval()
    raising was an internal error (exit 1); a forward returning None was benched. Now: "does not run at
    batch 2", the memory error as it is, one line for eval(), and a refusal of a forward with no tensor."""
    import torch

    from edgeslim.bench.worker import failure
    from edgeslim.errors import EdgeslimError

    s = _torch_session(tmp_path, "batch1_only")
    s.set_batch(1)
    s.run()
    s.set_batch(2)
    with pytest.raises(
        EdgeslimError, match=r"does not run at batch 2 \(it ran at 1\): time it at a batch"
    ) as e:
        s.run()
    assert "input_shape" not in str(e.value) and not e.value.params
    s = _torch_session(tmp_path, "oom")
    s.set_batch(1)
    with pytest.raises(torch.OutOfMemoryError) as oom:
        s.run()
    assert failure(oom.value)["memory"]
    with pytest.raises(
        EdgeslimError, match=r"bad_eval.pt: the model's eval\(\) fails \(AttributeError: 'None"
    ):
        _torch_session(tmp_path, "bad_eval")
    s = _torch_session(tmp_path, "none")
    s.set_batch(1)
    with pytest.raises(EdgeslimError, match="forward returns NoneType, no tensor"):
        s.run()


class _Folded(__import__("torch").nn.Module):
    """A channel shuffle (a reshape of sizes the graph computes) and patches folded into dim 0, as
    MobileViT does: 8*3*9*64 + 8*8*64 + 64*8*16 + 16*10 = 26272 MACs a sample."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1)
        self.tok, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.c1(x)
        b, c, h, w = x.shape
        x = self.c2(x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w))
        t = x.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 2, 4, 1).reshape(b * 16, -1, c)
        return self.head(self.tok(t).reshape(b, -1, 16).mean(1))


def test_onnx_cost_prices_sizes_the_graph_computes_at_any_export_batch(tmp_path):
    """The count review (finding 1): sizes ONNX shape inference left unknown (after a Reshape of
    computed sizes) were priced as 1, a MatMul's unknown inner size as 0 MACs (edgeslim's
    --dynamic-batch levit_128s counted 0.32x, a shufflenet against itself gave a MACs ratio of
    1.708), and a fixed batch of 4 divided only a dim 0 equal to 4 (MobileViT's folded patches: 2.26x).
    Shapes now come from shape inference at batch 1 with data propagation, else from one ONNX
    Runtime run, and a fixed-batch file's costs are divided by its batch."""
    import torch

    model = _Folded().eval()
    counts = {}
    for tag, batch, axes in [("b1", 1, None), ("b4", 4, None), ("dyn", 1, {"x": {0: "n"}})]:
        path = tmp_path / f"{tag}.onnx"
        torch.onnx.export(model, (torch.zeros(batch, 3, 8, 8),), str(path), input_names=["x"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip
        counts[tag] = onnx_cost(path)
    assert {tag: cost.macs for tag, cost in counts.items()} == {"b1": 26272, "b4": 26272, "dyn": 26272}
    assert counts["b1"].bytes == counts["b4"].bytes  # (the dynamic graph computes its sizes: more bytes)
    assert all(cost.unknown == [] for cost in counts.values())


def test_onnx_cost_of_unknown_sizes_is_unknown_with_one_warning(tmp_path, caplog):
    """The count review (finding 1): a layer whose sizes neither shape inference nor a run tells
    (here after an op ONNX Runtime does not know) was priced with each unknown size as 1, a wrong
    number with no word; its MACs and bytes are None now, with one warning, and bench's prediction
    refuses the file."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.errors import EdgeslimError
    from edgeslim.pipelines.bench import BenchRequest, predict

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Warp", ["x"], ["t"], domain="my.ops"),
            helper.make_node("Conv", ["t", "w"], ["y"]),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "custom.onnx"
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    with caplog.at_level("WARNING", logger="edgeslim.bench.onnx_cost"):
        cost = onnx_cost(path)
    assert cost.macs is None and cost.bytes is None
    assert cost.to_dict()["macs"] is None and cost.to_dict()["layers"] is None
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeslim.bench.onnx_cost"]
    assert len(lines) == 1 and "MACs and bytes are reported as unknown" in lines[0] and "\n" not in lines[0]
    with pytest.raises(EdgeslimError, match="sizes of .* are unknown"):
        predict(BenchRequest(model=str(path), profile="host-cpu", batches=(1,)))


def test_xnnpack_gets_the_threads_and_onnxruntimes_pool_one():
    """Phone/ARM review: with ``providers=["xnnpack"]`` and 4 threads the session's intra-op pool had 4
    threads and XNNPACK's pool 4 more (two pools of 4 on 4 cores); ORT's XNNPACK EP docs recommend ORT's
    pool at 1 and spinning off. The options are built here without an XNNPACK build (nothing loaded)."""
    import onnxruntime as ort

    from edgeslim.bench.backends.ort import session_options, thread_pools

    available = ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    so, providers = session_options(ort, {"threads": 4, "providers": ["xnnpack"]}, available)
    assert (
        so.intra_op_num_threads == 1 and so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    )
    assert providers == [("XnnpackExecutionProvider", {"intra_op_num_threads": "4"}), "CPUExecutionProvider"]
    assert thread_pools(providers) == {"onnxruntime_intra_op": 1, "xnnpack": 4}
    so, providers = session_options(ort, {"threads": 4}, available)  # the CPU provider: ORT's pool has them
    assert (
        so.intra_op_num_threads == 4
        and providers == ["CPUExecutionProvider"]
        and thread_pools(providers) is None
    )
    from edgeslim.bench.report import measured_device

    env = {"machine": "aarch64", "threads": 4, "thread_pools": {"onnxruntime_intra_op": 1, "xnnpack": 4}}
    said = measured_device({"env": env, "backend": "onnxruntime"})
    assert "4 thread(s) in XNNPACK's pool, ONNX Runtime's intra-op pool 1" in said


def test_measure_warns_of_a_baseline_of_another_network_and_records_it(tmp_path, caplog):
    """API review, finding 2: measure(BenchRequest(...)) of a vgg-small export against a resnet20 baseline
    returned a speedup (1.86) without a sign: its say defaulted to dropping every notice, and the "two
    different networks" line went nowhere else. It is a log warning by default, as slim's notices are,
    and in the record's warnings (run.json, report.md)."""
    import json

    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.models import create_model
    from edgeslim.pipelines.bench import BenchRequest, measure

    vgg = export_onnx(
        create_model("vgg-small"), tmp_path / "v.onnx", (3, 32, 32), validate=False, arch="vgg-small"
    )
    res = export_onnx(
        create_model("resnet20"), tmp_path / "r.onnx", (3, 32, 32), validate=False, arch="resnet20"
    )
    caplog.set_level("WARNING")
    fast = {"trials": 1, "warmup": 0.0, "min_iters": 3, "min_time": 0.0, "threads": 1, "plots": False}
    record, _ = measure(BenchRequest(str(res.path), baseline=str(vgg.path), out_dir=tmp_path / "b", **fast))
    needle = "the speedup compares two different networks"
    assert needle in caplog.text
    assert any(needle in w for w in record["warnings"])
    assert any(needle in w for w in json.loads((tmp_path / "b" / "run.json").read_text())["warnings"])
    assert needle in " ".join((tmp_path / "b" / "report.md").read_text().split())


def test_a_float64_checkpoint_is_timed_in_float32_and_mixed_dtypes_are_flagged(tmp_path) -> None:
    """Review of today's code (nc report, finding 1): prune narrows a float64 checkpoint to float32, and the
    torch backend timed the float64 baseline as saved: a 3.08x "speedup" at MACs ratio 1, no warning, no dtype
    in run.json. An edgeslim checkpoint is now timed in float32 (as the docs say), each trial's info records
    its dtype, and a record whose two models ran in different dtypes (a float64 pickle) is warned of."""
    import torch

    from edgeslim.bench.backends.torch_eager import TorchBackend
    from edgeslim.bench.report import warnings
    from edgeslim.checkpoint import save_model
    from edgeslim.models import create_model
    from edgeslim.models.registry import ModelSpec

    spec = ModelSpec("vgg-small", in_channels=1, input_size=(28, 28))
    save_model(tmp_path / "d64.pt", create_model(spec).double(), spec)
    s = TorchBackend().open(str(tmp_path / "d64.pt"), {"device": "cpu", "threads": 1})
    s.set_batch(2)
    s.run()
    assert s.x.dtype == torch.float32 and s.info()["dtype"] == "float32"
    assert {p.dtype for p in s.model.parameters()} == {torch.float32}

    def record(slim: str, baseline: str) -> dict:
        trials = [
            {"label": "baseline", "info": {"dtype": baseline}},
            {"label": "slim", "info": {"dtype": slim}},
        ]
        return {"models": {}, "batches": [], "env": {}, "trials": trials}

    assert any(
        "baseline in float64" in w and "slim in float32" in w for w in warnings(record("float32", "float64"))
    )
    assert not any("dtype" in w for w in warnings(record("float32", "float32")))


def test_bench_says_a_baseline_of_another_network_once_and_a_null_warnings_reads(tmp_path, capsys) -> None:
    """Review of today's code (nc report, finding 10): the bench CLI printed the "two different networks"
    line twice (a note with --baseline as the run started, a warning with the bare word "baseline" at the
    end, from the record's warnings), and check_record refused a run.json whose "warnings" is null, which
    warnings() reads as none. It is printed once; null reads as no warnings."""
    import json

    from edgeslim.bench.report import check_record, warnings
    from edgeslim.cli import main
    from edgeslim.export.onnx_export import export_onnx
    from edgeslim.models import create_model

    vgg = export_onnx(
        create_model("vgg-small"), tmp_path / "v.onnx", (3, 32, 32), validate=False, arch="vgg-small"
    )
    res = export_onnx(
        create_model("resnet20"), tmp_path / "r.onnx", (3, 32, 32), validate=False, arch="resnet20"
    )
    fast = ["--trials", "1", "--warmup", "0", "--min-iters", "3", "--min-time", "0", "--threads", "1"]
    out = tmp_path / "b"
    assert (
        main(["bench", str(res.path), "--baseline", str(vgg.path), "--out", str(out), "--no-plots", *fast])
        == 0
    )
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("the speedup compares two different networks") == 1 and "and --baseline" in err
    record = json.loads((out / "run.json").read_text())
    record["warnings"] = None
    assert not any("different networks" in w for w in warnings(check_record(record)))


def test_an_interval_past_every_trial_of_a_few_is_said():
    """README review, finding 9: 3 trials at batch 32 had speedups 1.93 to 2.09 and an interval [1.92, 2.69]
    (a baseline of CV 37%, its calls in two modes: the two-level bootstrap's resampled medians jump
    between them). Such an interval is said under the table; a steady one, and 5 trials, are not."""
    from edgeslim.bench.compare import aggregate
    from edgeslim.bench.report import interval_notes

    rng = np.random.default_rng(0)

    def trial(label: str, t: int, host: list[float]) -> dict:
        return {"label": label, "trial": t, "samples": {"32": {"host": host}}, "memory": {}, "load_s": 0.1}

    def record(n: int, modes: bool) -> dict:
        trials = []
        for t in range(n):  # the baseline's calls: 21 at 10 ms and 20 at 20 ms (its median on the edge)
            fast = 10e-3 * (1 + 0.01 * rng.standard_normal(41))
            base = np.where(np.arange(41) < 21, fast, 2 * fast) if modes else fast
            trials += [trial("baseline", t, base.tolist()), trial("slim", t, (fast / 2).tolist())]
        rec = {"kind": "compare", "batches": [32], "models": {"baseline": {}, "slim": {}}, "trials": trials}
        aggregate(rec)
        return rec

    wide = record(3, modes=True)
    sp = wide["speedup"]["32"]
    assert sp["ci_high"] > max(sp["per_trial"]) + 0.5  # (about 4: a resampled median in the upper mode)
    (note,) = interval_notes(wide)
    assert (
        note.startswith("batch 32: the 95% interval [") and "reaches well past every trial's speedup" in note
    )
    assert "with 3 trials it resamples each trial's timed calls too" in note and "5 or more trials" in note
    assert interval_notes(record(3, modes=False)) == []
    assert interval_notes(record(5, modes=True)) == []  # (an interval over trials alone)
    # (diff review: an honest interval over 3 agreeing trials, past them on both sides alike, is not said)
    sp.update(per_trial=[1.48, 1.485, 1.49], value=1.485, ci_low=1.45, ci_high=1.52, spread=0.005)
    assert interval_notes(wide) == []


def test_readme_says_the_aligned_variant_is_zero_padded_and_its_share_of_the_real_mac_cut():
    """Measurement review, finding 4: README's "Measured here" row said "0.93 / 0.84 with channels rounded to 16
    ... met only with rounding", where docs/bench.md's table is the same slim network zero-padded to 16 (``--align
    16``), its ratio taken against the padded network's MACs; against the slimmed MAC cut it is 0.51 / 0.46."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    row = next(
        line
        for line in (root / "README.md").read_text().splitlines()
        if line.startswith("| ORT speedup / MACs")
    )
    assert "rounded to 16" not in row and "rounding" not in row
    assert "zero-padded" in row and "`--align 16`" in row and "0.51 / 0.46" in row and "0.93 / 0.84" in row
    docs = (root / "docs" / "bench.md").read_text()
    assert "channels zero-padded to 16 (`--align 16`)" in docs and "it is 0.51 / 0.46" in docs
