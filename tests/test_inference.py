"""mode=inference: the batch sizes a deployment would serve, timed forward pass by forward pass."""

import csv

import pytest

from conftest import HELPERS, SMOKE, job_config


def test_an_inference_sweep_gives_results_summary_verdict_and_plots(cli):
    proc = cli("-m", "batch_size=31,32,100", *SMOKE, "mode=inference", "inference.batches=6", "timing.warmup_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["batch_size"]: r for r in cli.results()}
    for b, r in results.items():  # 100 is more than smoke's 64 test images: they are cycled into full batches
        assert r["status"] == "ok" and r["mode"] == "inference" and r["inference_batches"] == 6
        assert 0 < r["latency_median_ms"] <= r["latency_p95_ms"] and r["inference_samples_per_s"] > 0
        assert r.get("train_time_s") is None and not r.get("train_samples")  # nothing trained
        assert r["inference_flops_per_sample"] > 0 and r["inference_tflops"] > 0
    sweep = cli.sweep_dir()
    rows = {int(row["batch_size"]): row for row in csv.DictReader(open(sweep / "summary.csv"))}
    assert {row["measures"] for row in rows.values()} == {"inference"}
    assert float(rows[32]["samples_per_s_mean"]) == pytest.approx(results[32]["inference_samples_per_s"])
    summary = (sweep / "summary.md").read_text()
    assert "latency p50 / p95 (ms)" in summary
    verdict = (sweep / "verdict.md").read_text()
    assert "samples/s of forward passes, `mode=inference`" in verdict and "| 32 | 2^5, 8×4 | 31 |" in verdict
    assert (sweep / "samples_per_s.png").is_file() and (sweep / "latency.png").is_file()
    assert "ms per batch" in proc.stdout  # each job's line


def test_latency_is_per_forward_pass_and_leaves_the_warm_up_out(tmp_path, monkeypatch):
    from bsbench.job.run import attempt

    monkeypatch.syspath_prepend(str(HELPERS))
    result = attempt(job_config(tmp_path, "mode=inference", "inference.batches=5", "timing.warmup_steps=1",
                                "+callbacks.slow._target_=faults.SlowForward", "+callbacks.slow.first_s=0.5",
                                "+callbacks.slow.each_s=0.05"))
    assert result["status"] == "ok" and result["inference_batches"] == 5
    assert 50 <= result["latency_median_ms"] <= result["latency_p95_ms"] < 500  # the slow first pass is not in them
    # samples/s: the timed images over the timed forward passes alone
    assert result["inference_samples_per_s"] <= 32 / 0.05
    assert result["inference_time_s"] >= 0.5 + 5 * 0.05  # the whole predict call, warm-up included
