"""The benchmark as a user runs it: real sweeps through the command line, with tiny settings."""

import csv
from pathlib import Path

from bsbench.core.fields import FIELD_NAMES
from conftest import SMOKE, terminal, write_cifar10_format

REQUIRED_KEYS = {
    "status", "batch_size", "precision", "devices", "world_size", "strategy", "accelerator", "epochs",
    "model", "data", "train_time_s", "inference_time_s", "train_samples_per_s", "val_acc", "test_acc",
    "torch_version", "lightning_version", "cuda_version", "cudnn_version", "device_name", "sm_count", "host",
    "epoch_times_s", "peak_memory_mib",
}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_size_sweep_writes_one_result_per_job_and_a_summary(cli):
    proc = cli("-m", "batch_size=range(30,33)", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cli.sweep_dir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    results = cli.results()
    assert sorted(r["batch_size"] for r in results) == [30, 31, 32]
    # a job's folder is named after what it is: batch size, repeat and its identity
    assert jobs == sorted(f"bs{r['batch_size']}_r0_{r['job_id'][:8]}" for r in results)
    for r in results:
        overrides = (Path(r["run_dir"]) / ".hydra" / "overrides.yaml").read_text()
        assert f"batch_size={r['batch_size']}" in overrides  # the folder's .hydra and its result agree
        assert REQUIRED_KEYS <= r.keys() <= set(FIELD_NAMES)  # every field it writes is declared
        assert r["status"] == "ok"
        assert r["train_time_s"] > 0 and r["inference_time_s"] > 0 and r["train_samples_per_s"] > 0
        assert r["world_size"] == 1 and r["epochs"] == 1 and r["model"] == "mobilenet_v3_small"
        assert len(r["epoch_times_s"]) == 1 and 0 < r["epoch_times_s"][0] <= r["train_time_s"]
        # 256 training images in steps of 30-32, the last partial batch dropped, 2 of them warm-up
        assert r["timed_steps"] == 256 // r["batch_size"] - 2
        assert 0.0 <= r["test_acc"] <= 1.0 and r["test_samples"] == 64

    runs = read_csv(sweep / "runs.csv")
    assert [int(row["batch_size"]) for row in runs] == [30, 31, 32]
    assert all(row["status"] == "ok" for row in runs)
    rows = read_csv(sweep / "summary.csv")
    assert [(int(row["batch_size"]), row["runs"]) for row in rows] == [(30, "1"), (31, "1"), (32, "1")]
    table = (sweep / "summary.md").read_text()
    header = ("| batch size | runs | train time | inf. time | epochs | device | precision | samples/s (95% CI) "
              "| TFLOP/s (MFU) | test acc |")  # one setting: no setting column
    assert header in table
    # the terminal: one line per job with the sweep's progress, then the summary and the verdict, nothing else
    assert proc.stderr == ""
    lines = terminal(proc.stdout)
    summary = lines.index(next(line for line in lines if line.startswith("# bsbench summary")))
    jobs = [line for line in lines[:summary] if line.strip()]
    assert [line.split(":")[0] for line in jobs] == ["job 1 of 3", "job 2 of 3", "job 3 of 3"], proc.stdout
    assert "batch_size=30 precision=32-true: " in jobs[0] and "samples/s" in jobs[0]
    assert " elapsed, about " in jobs[0] and jobs[0].endswith(" left)") and jobs[2].endswith(" elapsed)")
    assert header in lines and "# Are powers of two (or multiples of 8) faster here?" in lines
    assert [line for line in lines if line.strip()][-1].startswith("bsbench: wrote runs.csv")
    # what the terminal does not show is in the logs: Lightning's banners in each job's, Hydra's in the sweep's
    assert "GPU available" in (Path(results[0]["run_dir"]) / "bsbench.log").read_text()
    assert "Launching 3 jobs locally" in (sweep / "sweep.log").read_text()
    # the threads it ran with
    assert all(r["torch_num_threads"] >= 1 and r["torch_num_interop_threads"] >= 1 for r in results)


def test_precision_sweep_gives_rows_that_differ_in_precision(cli):
    # three steps of 8: bf16 autocast is slow on a CPU without bf16 units (10 s for smoke's 8 steps of 32)
    proc = cli("-m", "precision=32-true,bf16-mixed", *SMOKE, "batch_size=8", "trainer.max_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(cli.sweep_dir() / "summary.csv")
    assert sorted(row["precision_used"] for row in rows) == ["32-true", "bf16-mixed"]
    assert sorted(row["setting"] for row in rows) == ["precision=32-true", "precision=bf16-mixed"]
    assert all(float(row["train_time_s_mean"]) > 0 for row in rows)


def test_repeated_sweep_runs_interleaved_and_leaves_the_report(cli):
    proc = cli("-m", "batch_size=range(31,34)", "repeats=2", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(cli.results(), key=lambda r: r["sweep_position"])
    assert [(r["batch_size"], r["repeat"]) for r in results] == [(b, i) for i in range(2) for b in range(31, 34)]
    assert all(r["started_at"] < r["finished_at"] <= s["started_at"] for r, s in zip(results, results[1:]))
    assert all(r["gpu_temp_c_mean"] is None for r in results)  # no NVML on a CPU: null, and the runs go on
    sweep = cli.sweep_dir()
    for name in ("runs.csv", "summary.csv", "summary.md", "verdict.md", "samples_per_s.png", "epoch_time.png"):
        assert (sweep / name).is_file(), name
    assert [row["runs"] for row in read_csv(sweep / "summary.csv")] == ["2"] * 3
    verdict = (sweep / "verdict.md").read_text()
    assert "| 32 | 2^5, 8×4 | 31 | 2 vs 2 |" in verdict and "| 32 | 2^5, 8×4 | 33 | 2 vs 2 |" in verdict


def test_single_run_lands_in_its_dated_directory(cli):
    proc = cli(*SMOKE, "model.train_acc_eval_forward=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = list(cli.outputs.glob("*/*/results.json"))
    assert result_file.parent.parent.parent == cli.outputs  # outputs/<date>/<time>/
    assert (result_file.parent / ".hydra" / "config.yaml").is_file()
    assert (result_file.parent / "metrics.csv").is_file() is False  # smoke turns the logger off
    metrics = cli.results()[0]
    assert metrics["status"] == "ok"


def test_csv_logger_writes_metrics_into_the_run_directory(cli):
    proc = cli(*SMOKE, "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = list(cli.outputs.rglob("metrics.csv"))
    assert "val_acc" in metrics.read_text().splitlines()[0]


def test_cifar10_format_directory_is_read_end_to_end(cli, tmp_path):
    root = write_cifar10_format(tmp_path / "cifar", train_per_batch=20, test_images=30)
    proc = cli(
        *SMOKE, "data=cifar10", f"data.root={root}", "data.verify=false", "data.download=false",
        "data.val_size=20", "data.image_size=32", "data.resize_size=36", "data.num_workers=0",
        "batch_size=16",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["data"] == "cifar10" and r["status"] == "ok"
    assert r["timed_steps"] == 80 // 16 - 2  # 100 training images, 20 of them for validation
    assert r["test_samples"] == 30


def test_missing_cifar10_offline_stops_with_one_sentence_naming_the_root(cli, tmp_path):
    root = tmp_path / "no-cifar-here"
    proc = cli(*SMOKE, "data=cifar10", f"data.root={root}", "data.image_size=32", "data.num_workers=0")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bsbench: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert str(root) in errors[0] and "data=synthetic" in errors[0]
    assert "Traceback" not in proc.stderr
    assert cli.results() == []


def test_missing_cifar10_without_download_names_the_setting(cli, tmp_path):
    proc = cli("-m", *SMOKE, "data=cifar10", f"data.root={tmp_path}", "data.download=false", "batch_size=30,31")
    assert proc.returncode == 2
    assert "data.download=false" in proc.stderr and "Traceback" not in proc.stderr
    assert not cli.outputs.exists()  # found while the sweep was planned: no folder waits for a result
