"""DDP on 2 CPU processes (gloo under torchrun): parameters stay identical across ranks, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from edgeslim.data import load_dataset
    from edgeslim.models import create_model
    from edgeslim.train import TrainConfig, fit
    out = sys.argv[1]
    bundle = load_dataset("digits", subset=512, test_subset=100)
    spec = bundle.spec_for("vgg-small")
    torch.manual_seed(dist_rank := int(__import__("os").environ["RANK"]))  # different init per rank:
    model = create_model(spec)                                            # DDP must broadcast rank 0's
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, method="subgradient", method_args={"lam": 1e-3},
                      device="cpu", seed=0)
    res = fit(model, bundle, cfg, out, spec=spec)
    assert dist.get_world_size() == 2 and dist.get_backend() == "gloo"
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_ranks_stay_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGESLIM_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = torch.load(out / "rank0.pt", weights_only=True)
    s1 = torch.load(out / "rank1.pt", weights_only=True)
    init = __import__("edgeslim.models", fromlist=["create_model"])
    assert s0.keys() == s1.keys()
    for k in s0:  # parameters and BN buffers (DDP broadcasts rank 0's buffers)
        assert torch.equal(s0[k], s1[k]), k
    # training moved the weights away from rank 0's initialisation
    torch.manual_seed(0)
    fresh = init.create_model(__import__("edgeslim.models.registry", fromlist=["ModelSpec"]).ModelSpec(
        "vgg-small", 10, 1, (8, 8))).state_dict()  # fmt: skip
    assert not torch.equal(fresh["features.0.weight"], s0["features.0.weight"])
    # rank 0 alone wrote the checkpoint and the log; it holds the same weights
    ckpt = torch.load(out / "model.pt", weights_only=True)
    for k in s0:
        assert torch.equal(ckpt["state_dict"][k], s0[k]), k
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # the test set was sharded and the counts all-reduced: accuracy is over all 100 images
    assert all(abs(r["test_acc"] * 100 - round(r["test_acc"] * 100)) < 1e-9 for r in log)
    assert sorted(p.name for p in out.iterdir()) == [
        "log.jsonl",
        "model.pt",
        "rank0.pt",
        "rank1.pt",
        "report.json",
    ]


@pytest.mark.slow
def test_ddp_train_command_warns_of_no_grad_strides_and_says_each_epoch_once(tmp_path):
    """The docs review: training.md's DDP command printed torch's "Grad strides do not match bucket
    view strides" once per rank (a 1x1 conv's weight made channels_last kept its old strides, and its
    gradient came with the canonical ones), and both ranks printed every epoch line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGESLIM_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edgeslim",
           "train", "--arch", "resnet20", "--data", "digits", "--epochs", "1", "--subset", "128", "--test-subset",
           "64", "--out", str(tmp_path / "ddp")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    said = r.stdout + r.stderr
    assert r.returncode == 0, said[-3000:]
    assert "Grad strides" not in said, said[-3000:]
    assert said.count("train epoch 1/1:") == 1 and said.count("running statistics not settled") == 1, said
