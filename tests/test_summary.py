import csv

from bsbench.result import write_json_atomic
from bsbench.summary import format_duration, summarize


def test_durations_read_like_the_published_table():
    assert format_duration(524.4) == "8.74 min"
    assert format_duration(9.0) == "9.00 s"
    assert format_duration(None) == ""


def test_summary_rows_follow_batch_size_and_show_failures(tmp_path):
    runs = [
        {"status": "ok", "batch_size": 513, "train_time_s": 523.2, "inference_time_s": 10.2, "epochs": 10,
         "device_name": "Tesla V100", "world_size": 1, "precision_used": "16-mixed", "train_samples_per_s": 901.5,
         "test_acc": 0.7512, "epoch_times_s": [52.0, 51.5], "overrides": ["batch_size=513", "epochs=10"]},
        {"status": "ok", "batch_size": 256, "train_time_s": 172.2, "inference_time_s": None, "epochs": 10,
         "device_name": "Tesla V100", "world_size": 4, "precision_used": "16-mixed", "train_samples_per_s": 2800.0,
         "test_acc": 0.75},
        {"status": "oom", "batch_size": 600, "epochs": 10, "device_name": "Tesla V100", "world_size": 1,
         "precision_used": "16-mixed"},
    ]
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        write_json_atomic(tmp_path / str(i) / "results.json", r)
    table, results = summarize(tmp_path)
    assert len(results) == 3
    lines = table.splitlines()
    assert lines[2] == "| 513 | 8.72 min | 10.20 s | 10 | Tesla V100 | 16-mixed | 902 | 0.7512 | batch_size=513 epochs=10 |"
    assert lines[3] == "| 600 (oom) |  |  | 10 | Tesla V100 | 16-mixed |  |  |  |"
    assert lines[4].startswith("| 256 | 2.87 min |  | 10 | 4x Tesla V100 |")
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["batch_size"] for r in rows] == ["513", "600", "256"]
    assert rows[0]["epoch_times_s"] == "52.0000;51.5000"
    assert (tmp_path / "summary.md").read_text().endswith(table)
