"""Dense-vs-slim checks run in IEEE fp32 on CUDA: cuDNN's default TF32 convs (~1e-3 relative) would
fake a surgery mismatch (seen on an H200: 0.0048 at output scale 15.6 on a VGG-19 slimmed on the GPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeslim.surgery import prune_with_report
from edgeslim.utils.modes import _precision_knobs, ieee_fp32


def _state() -> list[object]:
    return [get() for get, _, _ in _precision_knobs()]


def _ieee() -> list[object]:
    return [value for _, _, value in _precision_knobs()]


@pytest.fixture
def tf32_matmuls():
    """The caller asked for TF32 matmuls (a common line in training scripts); put back after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def test_ieee_fp32_sets_every_knob_inside_and_restores_them_after() -> None:
    before = _state()
    assert before != _ieee()  # torch's defaults use TF32 for cuDNN convs, so the test is not vacuous
    with ieee_fp32():
        assert _state() == _ieee()
    assert _state() == before
    with pytest.raises(RuntimeError), ieee_fp32():
        raise RuntimeError("restored on errors too")
    assert _state() == before


def test_ieee_fp32_keeps_legacy_and_new_settings_in_step(tf32_matmuls) -> None:
    """torch raises when the legacy flags and the per-backend fp32_precision disagree (every cuBLAS
    fp32 matmul checks): inside the block both say IEEE, after it the caller's TF32 is back."""
    with ieee_fp32():
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32 is True


def test_surgery_verification_runs_in_ieee_fp32() -> None:
    """The verification forwards see IEEE settings whatever the caller left on."""
    seen: list[list[object]] = []

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.bn = torch.nn.BatchNorm2d(8)
            self.head = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(_state())
            return self.head(torch.relu(self.bn(self.conv(x))))

    before = _state()
    model = Probe().eval()
    with torch.no_grad():
        model.bn.weight[:3] = 0
        model.bn.bias[:3] = 0
    pr = prune_with_report(model, torch.randn(2, 3, 8, 8))
    assert pr.report["removed_channels"] == 3 and pr.report["max_abs_diff"] < 1e-6
    # the dense and the slim verification forward (tracing calls forward too, outside the check)
    assert seen.count(_ieee()) >= 2
    assert _state() == before


def test_onnx_reference_outputs_run_in_ieee_fp32() -> None:
    from edgeslim.export.validate import torch_outputs

    seen: list[list[object]] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(_state())
            return x * 2

    (out,) = torch_outputs(Probe(), torch.ones(3, 2), chunk=2)  # every output: here one
    assert out.shape == (3, 2) and seen == [_ieee(), _ieee()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a lent one)")
def test_surgery_on_cuda_is_exact_with_the_callers_tf32_left_on(tf32_matmuls, monkeypatch) -> None:
    """On a GPU with TF32 convs and matmuls on (torch's conv default plus the caller's matmul
    setting), a random VGG-19 with half of each BN layer zeroed prunes with an fp32-exact check, and
    the caller's settings survive it (the H200 once warned at 0.0048 here)."""
    from edgeslim.models.registry import create_model

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    torch.manual_seed(0)
    model = create_model("vgg19", num_classes=10).cuda().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features // 2
                m.weight[:n] = 0
                m.bias[:n] = 0
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    before = _state()
    pr = prune_with_report(model, torch.randn(8, 3, 32, 32, device="cuda"))
    assert pr.report["removed_channels"] > 0
    assert pr.report["max_abs_diff"] < 1e-4
    assert _state() == before
    lin = torch.nn.Linear(64, 64).cuda()
    with ieee_fp32():
        lin(torch.randn(4, 64, device="cuda"))  # a cuBLAS fp32 matmul: torch raises if the knobs disagree


def _half_resnet18(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    """A torchvision ResNet-18 in ``dtype`` with every other BN channel zeroed (scale and shift), random
    statistics and logits of a few units (so one rounding step of them is > 1e-4), and its input."""
    import torchvision

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.3, generator=gen)
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.weight[::2] = 0
                m.bias[::2] = 0
        model.fc.weight.mul_(30)
    return model.to(dtype), torch.randn(4, 3, 64, 64, generator=gen).to(dtype)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_prunes_exact_despite_its_rounding(dtype, inplace) -> None:
    """Review of surgery's reach (special.py): a timm ResNet-18 pruned in bf16 was reported not exact,
    0.00195 off, in fp16 0.000244, with the warning that the slim model computes something else: the
    check's fixed 1e-4 is below one rounding step of these dtypes (here fp16 6.4e-4, bf16 4.1e-3). Now
    the comparison is re-run in float64, or, where the dense model is gone (inplace), the outputs'
    rounding passes (a few epsilons of their dtype). (torch 2.14's CPU kernels give this fp16 pair the same
    result to the bit, so only bf16 still shows the rounding here; both must pass as exact.)"""
    model, x = _half_resnet18(dtype)
    pr = prune_with_report(model, x, inplace=inplace)
    assert pr.report["removed_channels"] == 1440
    assert pr.report["max_abs_diff"] > 1e-4 or dtype == torch.float16  # (bf16: 0.0625, many rounding steps)
    assert pr.report["exact"]
    if not inplace and dtype == torch.bfloat16:  # (re-run in float64 where the outputs differ)
        assert pr.report["float64_scaled_diff"] < 1e-10


class _CountScaledWithBF16Side(nn.Module):
    """Float32 logits scaled by a power of the channel count (a value no channel graph sees: wrong after
    surgery) beside a bf16 side output; casts its input to float32 (so no float64 re-run can run)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.bn, self.fc = (
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.Linear(8, 5),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        y = torch.relu(self.bn(self.c(x)))
        logits = self.fc((y * (y.shape[1] / 8.0) ** 0.02).mean((2, 3)))
        return logits, x.amax((1, 2, 3)).bfloat16()


def test_each_output_is_held_to_its_own_dtypes_rounding() -> None:
    """Review of today's code (f64check.py CountScaledBF16): without a float64 re-run the check let pass
    the coarsest dtype's rounding (4 eps of bf16, 0.031) for every output, so float32 logits 5% off beside
    a small bf16 side output passed as exact. Each output is now held to its own dtype's tolerance."""
    torch.manual_seed(0)
    m = _CountScaledWithBF16Side().eval()
    with torch.no_grad():
        m.bn.running_var.uniform_(0.5, 1.5)
        m.bn.weight[[1, 5]] = 0
        m.bn.bias[[1, 5]] = 0
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    pr = prune_with_report(m, x)
    assert pr.report["removed_channels"] == 2 and pr.report["float64_scaled_diff"] is None
    assert 2e-4 < pr.report["max_abs_diff"] < 0.03  # (over 1e-4, within the bf16 bound)
    assert pr.report["check_failed"] and not pr.report["exact"]
