"""Throughput mode, the speed knobs, and the overhead benchmark's command."""

import json
import subprocess
import sys

import torch

from bsbench.run import build
from conftest import SMOKE, job_config


def test_throughput_mode_times_fixed_steps_and_nothing_else(cli):
    proc = cli(*SMOKE, "mode=throughput", "throughput.warmup_steps=2", "throughput.steps=5", "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["mode"] == "throughput" and r["status"] == "ok"
    assert r["timed_steps"] == 5 and r["train_samples_per_s"] > 0
    assert 0 < r["step_time_median_ms"] and r["step_time_sd_ms"] is not None
    assert abs(r["step_time_mean_ms"] * 5 / 1000 - 5 * 32 / r["train_samples_per_s"]) < 0.05  # the same 5 steps
    assert r["val_acc"] is None and r["inference_time_s"] is None  # no validation, no inference
    assert not list(cli.outputs.rglob("metrics.csv")) and not list(cli.outputs.rglob("*.ckpt"))


def test_a_throughput_sweep_costs_seconds_per_point(cli):
    proc = cli("-m", "batch_size=range(30,34)", *SMOKE, "mode=throughput", "throughput.steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    assert len(results) == 4 and all(r["train_time_s"] < 30 for r in results)


def test_speed_knobs_are_applied(tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        cfg = job_config(tmp_path, "channels_last=true", "cudnn_benchmark=true", "matmul_precision=medium")
        _, model, trainer, _, _ = build(cfg)
        assert model.net.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.backends.cudnn.benchmark is True
        assert torch.get_float32_matmul_precision() == "medium"
        _, compiled, _, _, _ = build(job_config(tmp_path, "compile=true"))
        assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cudnn.benchmark = False


def test_speed_knobs_are_recorded(cli):
    proc = cli(*SMOKE, "mode=throughput", "throughput.steps=3", "channels_last=true", "matmul_precision=high")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert (r["channels_last"], r["cudnn_benchmark"], r["compile"], r["matmul_precision"], r["resize_on"]) == \
        (True, False, False, "high", "device")


def test_overhead_benchmark_prints_its_table_and_writes_figures(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bsbench.bench", "--image-size", "32", "--batch-size", "8", "--warmup", "1",
         "--steps", "2", "--rounds", "2", "--images", "64", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert len(figures["ratios"]) == 2
    assert figures["ratio_ci_low"] < figures["ratio"] < figures["ratio_ci_high"]
    assert proc.stdout.rstrip().splitlines()[-1].startswith(f"bsbench / plain: {figures['ratio']:.3f} (95% interval")
    assert figures["cpu_pil_images_per_s_per_worker"] > 0 and figures["device_images_per_s"] > 0


def test_overhead_benchmark_wants_an_even_number_of_rounds():
    proc = subprocess.run([sys.executable, "-m", "bsbench.bench", "--rounds", "3"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--rounds=3: use an even number" in proc.stderr.splitlines()[-1]


def test_a_jobs_process_wide_settings_do_not_leak_into_the_next_job(tmp_path):
    from bsbench.run import attempt

    before = torch.get_float32_matmul_precision()
    result = attempt(job_config(tmp_path, "mode=throughput", "throughput.steps=2", "throughput.warmup_steps=1",
                                "matmul_precision=medium"))
    assert result["status"] == "ok" and result["matmul_precision"] == "medium"
    assert torch.get_float32_matmul_precision() == before
