"""FLOPs per image, achieved TFLOP/s and MFU (issue 16): counts checked against a count by hand, the
peak table's lookups, and a run's MFU from its own rate and count."""

import pytest
import torch
from torch import nn

from bsbench.core.utilization import arithmetic, peak, utilization
from bsbench.job.run import attempt
from bsbench.training.flops import count, count_model
from conftest import job_config


def tiny_net() -> nn.Module:
    """A dense convolution, a depthwise one and a linear layer, on 3 x 8 x 8 images."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def test_flops_match_a_count_by_hand_grouped_backward_included():
    with torch.device("meta"):
        net = tiny_net()
    # 2 FLOPs per multiply-add. Forward, per image: the dense 3x3 conv makes 8 channels x 64 pixels, each
    # from 3 x 9 inputs; the depthwise one 8 x 64, each from 1 x 9; the linear layer 10 from 8.
    dense, depthwise, linear = 2 * 8 * 64 * 3 * 9, 2 * 8 * 64 * 1 * 9, 2 * 8 * 10
    forward = dense + depthwise + linear
    # Backward: the weight gradient of each layer costs its forward, the input gradient too, except for
    # the first layer, whose input needs none. (torch's own formula counts the depthwise backward as
    # if the convolution were dense: 8 x its forward for each gradient here.)
    backward = dense + 2 * depthwise + 2 * linear
    assert count_model(net, 8) == {"train_flops_per_sample": forward + backward, "inference_flops_per_sample": forward}
    # the reference's extra eval-mode forward is part of its training step
    assert count_model(net, 8, eval_forward=True)["train_flops_per_sample"] == 2 * forward + backward


def test_mobilenet_training_costs_about_three_forwards():
    # forward + backward (two gradients per layer, each a forward's cost) is about 3x the forward; with
    # torch's uncorrected formula for grouped convolutions MobileNetV3 came out at about 29x
    counted = count("mobilenet_v3_small", 10, 64, False)
    assert counted["flops_error"] is None
    assert 2.5 < counted["train_flops_per_sample"] / counted["inference_flops_per_sample"] < 3.0
    # the published 56 M multiply-adds of MobileNetV3-small at 224 px, 1000 classes
    at_224 = count("mobilenet_v3_small", 1000, 224, False)["inference_flops_per_sample"]
    assert at_224 / 2 == pytest.approx(56e6, rel=0.05)


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16-mixed", (989.5, "bf16")),
    ("NVIDIA H100 PCIe", "16-mixed", (756.5, "fp16")),
    ("NVIDIA H100 NVL", "bf16-true", (835.5, "bf16")),  # dense: half the datasheet's with-sparsity 1671
    ("NVIDIA H200", "bf16-mixed", (989.5, "bf16")),
    ("NVIDIA H200 NVL", "bf16-mixed", (835.5, "bf16")),
    ("NVIDIA GH200 480GB", "bf16-mixed", (989.5, "bf16")),
    ("NVIDIA A100-SXM4-80GB", "32-true", (156, "tf32")),  # cuDNN's allow_tf32 is on
    ("NVIDIA A10", "16-mixed", (125, "fp16")),  # not an A100
    ("NVIDIA L4", "bf16-mixed", (121, "bf16")),  # not an L40
    ("NVIDIA L40S", "bf16-mixed", (362.05, "bf16")),
    ("Tesla V100-SXM2-16GB", "32-true", (15.7, "fp32")),  # no TF32 before Ampere
    ("Tesla V100-SXM2-16GB", "bf16-mixed", None),  # no bf16 tensor cores
    ("NVIDIA GeForce RTX 4090", "bf16-mixed", None),
])
def test_the_peak_is_the_dense_figure_for_the_arithmetic_that_ran(name, precision, expected):
    kind = arithmetic({"precision_used": precision, "device_type": "cuda", "float32_matmul_precision": "highest",
                       "cudnn_allow_tf32": True})
    found = peak(name, kind)
    assert (found[:2] if found else None) == expected


def test_32_true_is_fp32_without_tf32_and_on_a_cpu():
    gpu = {"precision_used": "32-true", "device_type": "cuda", "float32_matmul_precision": "highest"}
    assert arithmetic({**gpu, "cudnn_allow_tf32": False}) == "fp32"
    assert arithmetic({**gpu, "cudnn_allow_tf32": False, "float32_matmul_precision": "high"}) == "tf32"
    assert arithmetic({**gpu, "device_type": "cpu", "cudnn_allow_tf32": True}) == "fp32"


def test_mfu_is_over_every_device_and_null_with_a_reason_where_no_peak_is_known():
    ddp = {"device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "precision_used": "bf16-mixed",
           "world_size": 2, "train_flops_per_sample": 1e9, "train_samples_per_s": 98950.0}
    got = utilization(ddp)
    assert got["train_tflops"] == pytest.approx(98.95)
    assert got["mfu"] == pytest.approx(0.05)  # 98.95 TFLOP/s of 2 x 989.5
    assert got["mfu_reason"] is None and "H100" in got["peak_source"]
    desktop = utilization({**ddp, "device_name": "NVIDIA GeForce RTX 4090"})
    assert desktop["mfu"] is None and desktop["train_tflops"] == pytest.approx(98.95)
    assert "mfu.peak_tflops" in desktop["mfu_reason"]
    assert utilization({**ddp, "device_name": "NVIDIA GeForce RTX 4090"}, 165.2)["mfu"] == pytest.approx(98.95 / 330.4)


def test_a_run_with_a_peak_given_on_the_cpu_gets_the_mfu_its_rate_and_flops_imply(tmp_path):
    cfg = job_config(tmp_path, "mode=throughput", "timing.warmup_steps=2", "trainer.max_steps=6",
                     "mfu.peak_tflops=0.25")
    result = attempt(cfg)
    assert result["status"] == "ok"
    expected = count(cfg.model.arch, cfg.model.num_classes, cfg.data.image_size, False)["train_flops_per_sample"]
    assert result["train_flops_per_sample"] == expected > 0
    tflops = expected * result["train_samples_per_s"] / 1e12
    assert result["train_tflops"] == pytest.approx(tflops)
    assert result["mfu"] == pytest.approx(tflops / 0.25)
    assert result["peak_source"] == "mfu.peak_tflops (set by the user)" and result["mfu_arithmetic"] == "fp32"

    without_peak = attempt(job_config(tmp_path, "mode=throughput", "timing.warmup_steps=2", "trainer.max_steps=6"))
    assert without_peak["mfu"] is None and "cpu device" in without_peak["mfu_reason"]
    assert without_peak["train_tflops"] is not None  # achieved FLOP/s needs no peak
