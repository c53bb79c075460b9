"""Throughput mode, the speed knobs, and the overhead benchmark's command."""

import json
import subprocess
import sys

import torch

from bsbench.core.fields import FIELD_NAMES
from bsbench.job.build import build
from conftest import CLI, SMOKE, ZYGOTE, job_config


def test_throughput_mode_times_fixed_steps_and_nothing_else(cli):
    proc = cli(*SMOKE, "mode=throughput", "timing.warmup_steps=2", "trainer.max_steps=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["mode"] == "throughput" and r["status"] == "ok" and r.keys() <= set(FIELD_NAMES)
    assert r["timed_steps"] == 5 and r["train_samples_per_s"] > 0
    assert 0 < r["step_time_median_ms"] and r["step_time_sd_ms"] is not None
    assert r["step_time_mean_ms"] > 0  # per-step timing itself: test_timing.py, on a clock of its own
    assert r["val_acc"] is None and r["inference_time_s"] is None and r["test_samples"] is None  # no validation, no inference
    assert not list(cli.outputs.rglob("metrics.csv")) and not list(cli.outputs.rglob("*.ckpt"))
    # the result says what ran: 7 steps, no epoch count, and the Trainer settings the mode chose
    assert r["max_steps"] == 7 and r["epochs"] is None
    trainer = r["config"]["trainer"]
    assert (trainer["max_steps"], trainer["max_epochs"], trainer["limit_val_batches"]) == (7, -1, 0)


def test_a_modes_trainer_settings_give_way_to_the_command_line(cli):
    proc = cli(*SMOKE, "mode=throughput", "timing.warmup_steps=1", "trainer.max_steps=4", "logger=csv",
               "trainer.limit_val_batches=1", "trainer.val_check_interval=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["timed_steps"] == 3 and r["config"]["trainer"]["limit_val_batches"] == 1
    assert r["val_acc"] is not None  # the validation asked for ran, and did not count as a training step
    assert list(cli.outputs.rglob("metrics.csv"))  # the logger asked for was kept


def test_a_throughput_sweep_costs_a_few_steps_per_point(cli):
    proc = cli("-m", "batch_size=range(30,34)", *SMOKE, "mode=throughput", "timing.warmup_steps=2", "trainer.max_steps=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    # 6 steps of each batch size and nothing else (no epoch, no validation, no inference): what it costs in
    # seconds is the machine's business (BENCHMARKS.md), what it runs is this
    assert sorted((r["batch_size"], r["train_samples"]) for r in results) == [(b, 6 * b) for b in range(30, 34)]
    assert all(r["val_acc"] is None and r["test_samples"] is None for r in results)


def test_speed_knobs_are_applied(tmp_path):
    before = torch.get_float32_matmul_precision()
    try:
        cfg = job_config(tmp_path, "channels_last=true", "cudnn_benchmark=true", "matmul_precision=medium")
        model = build(cfg).model
        assert model.net.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.backends.cudnn.benchmark is True
        assert torch.get_float32_matmul_precision() == "medium"
        compiled = build(job_config(tmp_path, "compile=true")).model
        assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    finally:
        torch.set_float32_matmul_precision(before)
        torch.backends.cudnn.benchmark = False


def test_speed_knobs_are_recorded(cli):
    proc = cli(*SMOKE, "mode=throughput", "trainer.max_steps=13", "channels_last=yes", "cudnn_benchmark=off",
               "matmul_precision=high", "model.fused_adam=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert (r["channels_last"], r["cudnn_benchmark"], r["compile"], r["matmul_precision"], r["resize_on"]) == \
        (True, False, False, "high", "device")
    assert r["fused_adam"] is True and r["float32_matmul_precision"] == "high"
    assert isinstance(r["cudnn_allow_tf32"], bool)


def test_overhead_benchmark_prints_its_table_and_writes_figures(tmp_path):
    # 16-mixed with 2 DDP ranks (gloo): the per-step costs that only these show
    # forked from the session's preloaded interpreter (tests/helpers/zygote.py); its ranks are torchrun's own
    proc = ZYGOTE.start(["--image-size", "32", "--batch-size", "8", "--warmup", "1", "--steps", "2", "--rounds", "2",
                         "--images", "64", "--precision", "16-mixed", "--devices", "2", "--out", str(tmp_path)],
                        cwd=tmp_path, env=CLI.env(), module="bsbench.bench").run(300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert len(figures["ratios"]) == 2 and figures["world_size"] == 2
    assert figures["precision_used"] == "bf16-mixed"  # what Lightning runs 16-mixed as on a CPU; the plain loop too
    assert figures["ratio_ci_low"] < figures["ratio"] < figures["ratio_ci_high"]
    assert proc.stdout.rstrip().splitlines()[-2].startswith(f"bsbench / plain: {figures['ratio']:.3f} (95% interval")
    # the floor: the plain loop with no input work at all, one rate per round
    assert len(figures["floor_samples_per_s"]) == 2 and all(rate > 0 for rate in figures["floor_samples_per_s"])
    assert figures["floor_ratio_ci_low"] < figures["floor_ratio"] < figures["floor_ratio_ci_high"]
    assert proc.stdout.rstrip().splitlines()[-1].startswith(f"bsbench / floor: {figures['floor_ratio']:.3f}")
    assert figures["config"]["num_workers"] == 0  # bsbench with the data loading a user gets (the device path)
    assert figures["cpu_pil_images_per_s_per_worker"] > 0 and figures["device_images_per_s"] > 0
    assert figures["ddp_flag_broadcast_ms"] > 0 and "per-step DDP flag broadcast alone" in proc.stdout


def test_overhead_benchmark_wants_two_rounds_at_least():
    proc = subprocess.run([sys.executable, "-m", "bsbench.bench", "--rounds", "1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--rounds=1: use at least 2" in proc.stderr.splitlines()[-1]


def test_a_jobs_process_wide_settings_do_not_leak_into_the_next_job(tmp_path):
    from bsbench.job.run import attempt

    before = torch.get_float32_matmul_precision()
    result = attempt(job_config(tmp_path, "mode=throughput", "trainer.max_steps=3", "timing.warmup_steps=1",
                                "matmul_precision=medium"))
    assert result["status"] == "ok" and result["matmul_precision"] == "medium"
    assert torch.get_float32_matmul_precision() == before
    assert result["compile_time_s"] is None  # nothing compiled


def test_every_precision_trains_through_the_default_input_path(cli):
    precisions = ["32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"]
    proc = cli("-m", f"precision={','.join(precisions)}", *SMOKE, "mode=throughput", "batch_size=8",
               "timing.warmup_steps=1", "trainer.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["precision"]: r for r in cli.results()}
    assert sorted(runs) == sorted(precisions)
    assert all(r["status"] == "ok" and r["train_samples_per_s"] > 0 for r in runs.values()), \
        {p: r.get("error") for p, r in runs.items()}
    assert runs["16-mixed"]["precision_used"] == "bf16-mixed"  # Lightning's choice on a CPU, recorded
    assert runs["bf16-true"]["precision_used"] == "bf16-true"


def test_compile_gives_every_job_its_own_static_graph(tmp_path, monkeypatch):
    from bsbench.job.run import attempt

    graphs = []  # (job, batch sizes in the graph's inputs, whether any input size is symbolic)

    def backend(gm, example_inputs):
        values = [n.meta.get("example_value") for n in gm.graph.nodes if n.op == "placeholder"]
        sizes = {v.shape[0] for v in values if isinstance(v, torch.Tensor) and tuple(v.shape[1:]) == (3, 32, 32)}
        symbolic = any(isinstance(v, torch.SymInt) or (isinstance(v, torch.Tensor) and
                       any(isinstance(d, torch.SymInt) for d in v.shape)) for v in values)
        graphs.append((job, sizes, symbolic))
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, backend=backend, **kwargs))
    for job, batch_size in enumerate((30, 31, 31)):
        result = attempt(job_config(tmp_path, "compile=true", "mode=throughput", f"batch_size={batch_size}",
                                    "timing.warmup_steps=1", "trainer.max_steps=3"))
        assert result["status"] == "ok" and result["compile"] is True and result["first_step_time_s"] > 0
        # what compiling took: the first step beyond a steady one
        assert result["compile_time_s"] == max(0.0, result["first_step_time_s"] - result["step_time_median_ms"] / 1000)
    by_job = {j: [g for g in graphs if g[0] == j] for j in range(3)}
    assert all(by_job[j] for j in range(3))  # every job compiled, even a repeat of the one before
    assert not any(symbolic for _, _, symbolic in graphs)  # static shapes
    assert {s for _, sizes, _ in by_job[0] for s in sizes} == {30}  # the images, in the job's own batch size
    assert {s for _, sizes, _ in by_job[1] for s in sizes} == {31}
