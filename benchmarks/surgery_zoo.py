"""Channel surgery on the models edge users deploy, side by side with Torch-Pruning.

Models: timm CNN families with BatchNorm, ultralytics YOLOv8n / YOLO11n / YOLOv8n-seg (from their yaml),
torchvision segmentation models and detection backbones (dict outputs), and the smallest
torchvision classifier of each BN family. Random weights, BN statistics randomized.

Per model and per tool, in one process (the tools alternate): the tool's own coupled BN groups
are found, ``round(frac * n)`` random channels of every group are zeroed (scale and bias, so
removal is exact; a group with a grouped conv: the same positions of every conv group, as
Torch-Pruning's pruners and edgeslim's coupling take them), the tool removes them, and the result
is compared with the zeroed dense model in float64 on every output tensor (ultralytics models,
for both tools: on the outputs they return deployed, ``edgeslim.models.yolo.deployed_output``, as
``edgeslim prune`` uses them). Columns:

- ``removable``: share of all BN channels (each BN counted) in groups the tool can prune;
- ``removed``: share of BN channels actually removed; ``diff``: max |output difference|;
- ``ok``: the slim model has the dense output shapes and ``diff <= 1e-10 * max(1, |out|)``;
- ``s``: seconds of the removal, best of ``--repeats`` (edgeslim: ``prune_with_report``, which
  deep-copies, captures, prunes and verifies; Torch-Pruning: ``build_dependency`` + one
  ``get_pruning_group(...).prune()`` per group on a fresh copy, no verification); ``es_fast_s``: edgeslim doing what Torch-Pruning does
  (``prune_with_report(inplace=True, check=False)``: no copy, no verification forwards).

Writes ``benchmarks/results/surgery_zoo.json`` and ``.md``.

    python benchmarks/surgery_zoo.py [--frac 0.3] [--repeats 5]
    python benchmarks/surgery_zoo.py --only timm:resnet18,yolo:yolov8n --update   (or --out PATH)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeslim.channels.graph import flat_tensors
from edgeslim.models.yolo import deployed_output
from edgeslim.surgery import build_graph, prune_with_report
from edgeslim.utils.console import out
from edgeslim.utils.io import atomic_write_text, write_json
from edgeslim.utils.markdown import cell, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
BN = nn.modules.batchnorm._BatchNorm

TIMM = (
    "resnet18 resnet50d seresnext26d_32x4d resnest14d res2net50_14w_8s dpn68 densenet121 "
    "efficientnet_b0 efficientnet_lite0 tf_efficientnet_b0 tinynet_a mixnet_s mobilenetv2_100 "
    "mobilenetv3_large_100 mobilenetv3_small_100 mobilenetv4_conv_small mnasnet_100 fbnetc_100 "
    "hardcorenas_a lcnet_050 regnetx_002 regnety_008 ghostnet_100 ghostnetv2_100 repghostnet_050 "
    "rexnet_100 cspdarknet53 cspresnet50 darknet53 dla34 hrnet_w18_small repvgg_a0 mobileone_s0 "
    "gernet_s selecsls42b ese_vovnet19b_dw xception41 inception_v3 mobilevit_xs fastvit_t8 "
    "efficientvit_b0 levit_128s"
).split()
YOLO = ["yolov8n", "yolo11n", "yolov8n-seg"]
TV_DENSE = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"]
TV_DET = ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn"]
TV_CLS = (
    "resnet18 resnext50_32x4d wide_resnet50_2 mobilenet_v2 mobilenet_v3_small efficientnet_b0 "
    "efficientnet_v2_s regnet_x_400mf regnet_y_400mf densenet121 shufflenet_v2_x0_5 mnasnet0_5 "
    "googlenet inception_v3 vgg11_bn"
).split()
SIZE = {
    "timm:inception_v3": 96,
    "tv:inception_v3": 96,
    "timm:levit_128s": 224,
    "timm:xception41": 96,
    "timm:efficientvit_b0": 96,
    "tvdet:ssdlite320_mobilenet_v3_large": 128,
    "timm:mobilevit_xs": 64,
}


def all_names() -> list[str]:
    return (
        [f"timm:{n}" for n in TIMM]
        + [f"yolo:{n}" for n in YOLO]
        + [f"tvseg:{n}" for n in TV_DENSE]
        + [f"tvdet:{n}" for n in TV_DET]
        + [f"tv:{n}" for n in TV_CLS]
    )


def build(name: str) -> nn.Module:
    src, sub = name.split(":", 1)
    if src == "timm":
        import timm

        return timm.create_model(sub, pretrained=False, num_classes=10)
    if src == "yolo":
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel(f"{sub}.yaml", verbose=False)
    import torchvision

    if src == "tvseg":
        return torchvision.models.get_model(sub, weights=None, weights_backbone=None, num_classes=5)
    if src == "tvdet":
        det = torchvision.models.get_model(sub, weights=None, weights_backbone=None, num_classes=5)
        return det.backbone  # a dict of feature maps
    return torchvision.models.get_model(sub, weights=None, num_classes=10)


def randomize(m: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, BN) and b.affine and b.track_running_stats:
                n = b.num_features
                b.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                b.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                b.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                b.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def bn_channels(m: nn.Module) -> int:
    return sum(b.num_features for b in m.modules() if isinstance(b, BN))


def pick(n: int, frac: float, gen: torch.Generator) -> torch.Tensor:
    """``round(frac * n)`` random indices of ``n`` (never all of them)."""
    k = min(int(round(frac * n)), n - 1)
    return torch.randperm(n, generator=gen)[:k].sort().values


def channel_groups(grp: Any) -> int:
    """The conv groups a Torch-Pruning group's channels are cut into: a grouped (not depthwise) conv among
    its layers takes the same positions out of every group (its pruner's own rule, as ``MetaPruner`` picks
    them; edgeslim's coupling removes index j of every group together), else 1."""
    for item in grp:
        mod = item.dep.target.module
        if isinstance(mod, nn.modules.conv._ConvNd) and 1 < mod.groups < mod.out_channels:
            return mod.groups
    return 1


def aligned_pick(n: int, groups: int, frac: float, gen: torch.Generator) -> torch.Tensor:
    """:func:`pick` of ``n`` channels in ``groups`` equal blocks: the same positions in every block."""
    if groups <= 1 or n % groups:
        return pick(n, frac, gen)
    per = n // groups
    j = pick(per, frac, gen)
    return torch.cat([j + k * per for k in range(groups)]).sort().values


def outputs(m: nn.Module, x: torch.Tensor, select: Callable[[Any], Any] | None = None) -> list[torch.Tensor]:
    with torch.no_grad():
        out = m.eval()(x)
        return flat_tensors(select(out) if select is not None else out)


def compare(ref: list[torch.Tensor], got: list[torch.Tensor]) -> tuple[float, bool, str]:
    """(max |diff|, ok, why not ok)."""
    if len(ref) != len(got):
        return float("nan"), False, f"{len(got)} output tensors instead of {len(ref)}"
    worst, scale = 0.0, 1.0
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            return float("nan"), False, f"output shape {tuple(b.shape)} instead of {tuple(a.shape)}"
        if a.numel():
            worst = max(worst, float((a - b).abs().max()))
            scale = max(scale, float(a.abs().max()))
    ok = worst <= 1e-10 * scale
    return worst, ok, "" if ok else f"output differs by {worst:.3g}"


def run_edgeslim(base: nn.Module, x: torch.Tensor, frac: float, seed: int, repeats: int) -> dict[str, Any]:
    m = copy.deepcopy(base)
    total = bn_channels(m)
    deployed = deployed_output(m)  # a YOLO's deployed predictions, as edgeslim prune uses it
    g = build_graph(m, x, outputs=deployed)
    gen = torch.Generator().manual_seed(seed)
    mods = dict(m.named_modules())
    removable = 0
    for bg in g.bn_groups():
        removable += bg.size * len(bg.members)
        sel = pick(bg.size, frac, gen)
        with torch.no_grad():
            for name, idx in bg.members:
                mods[name].weight[idx[sel]] = 0
                mods[name].bias[idx[sel]] = 0
    secs, fast_secs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        res = prune_with_report(m, x, outputs=deployed)  # deep copy, capture, prune, verify
        secs.append(time.perf_counter() - t)
        work = copy.deepcopy(m)
        t = time.perf_counter()
        fast = prune_with_report(
            work, x, inplace=True, check=False, outputs=deployed
        )  # what Torch-Pruning does
        fast_secs.append(time.perf_counter() - t)
    same = sum(p.numel() for p in fast.model.parameters()) == sum(p.numel() for p in res.model.parameters())
    x64 = x.double()
    diff, ok, why = compare(
        outputs(copy.deepcopy(m).double(), x64, deployed), outputs(res.model.double(), x64, deployed)
    )
    return {
        "removable": removable / total,
        "removed": (total - bn_channels(res.model)) / total,
        "diff": diff,
        "ok": ok and same,
        "why": why if same else "in-place run differs",
        "s": min(secs),
        "fast_s": min(fast_secs),
    }


def run_torch_pruning(
    base: nn.Module, x: torch.Tensor, frac: float, seed: int, repeats: int
) -> dict[str, Any]:
    import torch_pruning as tp

    m = copy.deepcopy(base)
    total = bn_channels(m)
    deployed = deployed_output(m)  # (compared on the outputs edgeslim is compared on)
    names = {id(mod): name for name, mod in m.named_modules()}
    dg = tp.DependencyGraph().build_dependency(m, example_inputs=x)
    gen = torch.Generator().manual_seed(seed)
    plan, removable = [], 0
    for grp in dg.get_all_groups(root_module_types=[BN]):
        root = grp[0].dep.target.module
        if not isinstance(root, BN):
            continue
        sel = aligned_pick(root.num_features, channel_groups(grp), frac, gen)
        chosen = set(sel.tolist())
        with torch.no_grad():
            for item in grp:
                layer = item.dep.target.module
                if isinstance(layer, BN) and item.dep.handler == tp.prune_batchnorm_out_channels:
                    removable += len(item.idxs)
                    hit = [int(i) for i, r in zip(item.idxs, item.root_idxs) if int(r) in chosen]
                    layer.weight[hit] = 0
                    layer.bias[hit] = 0
        if sel.numel():
            plan.append((names[id(root)], sel.tolist()))
    secs = []
    for _ in range(repeats):  # each repeat: a fresh copy of the zeroed model, graph + pruning timed
        work = copy.deepcopy(m)
        mods = dict(work.named_modules())
        t = time.perf_counter()
        wdg = tp.DependencyGraph().build_dependency(work, example_inputs=x)
        for name, idxs in plan:
            wdg.get_pruning_group(mods[name], tp.prune_batchnorm_out_channels, idxs=idxs).prune()
        secs.append(time.perf_counter() - t)
    x64 = x.double()
    try:
        diff, ok, why = compare(
            outputs(copy.deepcopy(m).double(), x64, deployed), outputs(work.double(), x64, deployed)
        )
    except Exception as exc:  # noqa: BLE001 - a broken slim model is a finding
        diff, ok, why = float("nan"), False, f"slim forward fails: {type(exc).__name__}: {str(exc)[:100]}"
    return {
        "removable": removable / total,
        "removed": (total - bn_channels(work)) / total,
        "diff": diff,
        "ok": ok,
        "why": why,
        "s": min(secs),
    }


class _Timeout(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise _Timeout


def guarded(fn: Callable[..., dict[str, Any]], *args: Any, limit: int = 90) -> dict[str, Any]:
    """Run one tool on one model; an exception or more than ``limit`` seconds is recorded."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        return fn(*args)
    except _Timeout:
        return {"ok": False, "error": f"no result within {limit} s"}
    except Exception as exc:  # noqa: BLE001 - recorded per model
        msg = str(exc).splitlines()[0][:300] if str(exc) else ""
        return {"ok": False, "error": f"{type(exc).__name__}: {msg}"}
    finally:
        signal.alarm(0)


def check(name: str, frac: float, seed: int, order: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    base = build(name).eval()
    randomize(base, seed)
    size = SIZE.get(name, 64)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    row: dict[str, Any] = {"model": name, "input": size, "bn_channels": bn_channels(base)}
    runs = [("es", run_edgeslim), ("tp", run_torch_pruning)]
    for key, fn in runs if order % 2 == 0 else runs[::-1]:  # alternate which tool runs first
        for k, v in guarded(fn, base, x, frac, seed, repeats).items():
            row[f"{key}_{k}"] = v
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    es_ok = [r for r in rows if r.get("es_ok")]
    es_clean = [r for r in rows if r.get("es_ok") or ("es_error" in r and "\n" not in r["es_error"])]
    tp_correct = {r["model"]: (r.get("tp_removed", 0.0) if r.get("tp_ok") else 0.0) for r in rows}
    at_least = [
        r
        for r in rows
        if (r.get("es_removed", 0.0) if r.get("es_ok") else 0.0) >= tp_correct[r["model"]] - 0.005
    ]
    both = [r for r in rows if r.get("es_ok") and r.get("es_removed", 0) > 0 and r.get("tp_removed", 0) > 0]
    ratios = [r["es_s"] / r["tp_s"] for r in both if r.get("tp_s")]
    fast = [r["es_fast_s"] / r["tp_s"] for r in both if r.get("tp_s")]
    wrong_shape = [r["model"] for r in rows if "shape" in str(r.get("es_why", ""))]
    return {
        "models": n,
        "edgeslim_exact": len(es_ok),
        "edgeslim_exact_or_one_line_error": len(es_clean),
        "edgeslim_wrong_output_shape": wrong_shape,
        "torch_pruning_correct": sum(1 for r in rows if r.get("tp_ok")),
        "edgeslim_removes_at_least_tp_correct_share": len(at_least),
        "share_at_least": len(at_least) / n if n else float("nan"),
        "time_ratio_median": statistics.median(ratios) if ratios else float("nan"),
        "time_ratio_min": min(ratios) if ratios else float("nan"),
        "time_ratio_max": max(ratios) if ratios else float("nan"),
        "time_ratio_models": len(ratios),
        "fast_time_ratio_median": statistics.median(fast) if fast else float("nan"),
        "fast_time_ratio_min": min(fast) if fast else float("nan"),
        "fast_time_ratio_max": max(fast) if fast else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="")
    ap.add_argument("--frac", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--out", type=Path, default=RESULTS / "surgery_zoo")
    ap.add_argument("--update", action="store_true",
                    help="replace the --only models' rows in the existing results and re-summarize")  # fmt: skip
    args = ap.parse_args()
    if args.only and not args.update and args.out == RESULTS / "surgery_zoo":
        ap.error(
            "--only writes only its rows: add --update (replace them in the shipped results) or --out PATH"
        )
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else all_names()
    rows = []
    for i, name in enumerate(names):
        try:
            row = check(name, args.frac, args.seed, i, args.repeats)
        except Exception as exc:  # noqa: BLE001 - the model itself does not build
            row = {"model": name, "build_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        rows.append(row)
        out.print(
            f"{name}: es ok={row.get('es_ok')} removed={row.get('es_removed', 0):.3f} s={row.get('es_s', 0):.2f} "
            f"| tp ok={row.get('tp_ok')} removed={row.get('tp_removed', 0):.3f} s={row.get('tp_s', 0):.2f} "
            f"{row.get('es_error', '')} {row.get('es_why', '')}"
        )
    import torch_pruning

    meta = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_pruning": torch_pruning.__version__,
        "threads": 1,
        "frac": args.frac,
        "seed": args.seed,
        "repeats": args.repeats,
    }
    if args.update:  # the other models' rows as they were measured
        old = json.loads(args.out.with_suffix(".json").read_text())
        new = {r["model"]: r for r in rows}
        rows = [new.pop(r["model"], r) for r in old["rows"]] + list(new.values())
        updates = [*old["meta"].get("updated_rows", []), {"models": names, **meta}]  # (each update kept)
        meta = {**old["meta"], "updated_rows": updates}
    summary = summarize(rows)
    write_json(args.out.with_suffix(".json"), {"meta": meta, "summary": summary, "rows": rows})
    cols = ["model", "input", "bn_channels"]
    for k in ("es", "tp"):
        cols += [f"{k}_removable", f"{k}_removed", f"{k}_diff", f"{k}_ok", f"{k}_s"]
        cols += ["es_fast_s"] if k == "es" else []
    cols += ["es_error", "es_why", "tp_error", "tp_why"]
    md = [
        "# Channel surgery on timm, YOLO and torchvision dense-prediction models vs Torch-Pruning",
        "",
        f"torch {meta['torch']}, Torch-Pruning {meta['torch_pruning']}, 1 thread, {meta['cpu']}, random "
        f"weights, {args.frac:.0%} of every coupled BN group zeroed (scale and bias) by each tool in its own "
        "groups, compared in float64 on every output tensor (`ok`: same shapes, diff <= 1e-10 x output "
        "scale). `es` = edgeslim, `tp` = Torch-Pruning. Times: best of "
        f"{meta['repeats']}. Produced by `python benchmarks/surgery_zoo.py --repeats {meta['repeats']}`"
        + "".join(
            f"; rows of {', '.join(u['models'])} re-measured with `--only ... --update`"
            for u in meta.get("updated_rows", [])
        )
        + ".",
        "",
        "## Summary",
        "",
        *[f"- {k}: {_fmt(v)}" for k, v in summary.items()],
        "",
        markdown_table(cols, [[r.get(c, "") for c in cols] for r in rows], fmt=_fmt),
    ]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")
    out.print(summary)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else cell(v)


if __name__ == "__main__":
    main()
