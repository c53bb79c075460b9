from bsbench.report.summary import configurations, format_duration, markdown_table, status_notes


def test_durations_read_like_the_published_table():
    assert format_duration(524.4) == "8.74 min"
    assert format_duration(9.0) == "9.00 s"
    assert format_duration(None) == ""


def run(batch_size, rate, status="ok", world_size=1, **extra):
    return {"status": status, "batch_size": batch_size, "train_samples_per_s": rate, "world_size": world_size,
            "train_time_s": 172.2 if rate else None, "inference_time_s": 9.0 if rate else None, "epochs": 10,
            "device_name": "Tesla V100", "precision_used": "16-mixed", "test_acc": 0.75 if rate else None,
            "config": {"devices": world_size}, "run_dir": f"d/{batch_size}/{rate}", **extra}


def test_table_rows_in_the_published_shape_per_configuration():
    results = [run(256, 2800.0, world_size=4, train_time_s=170.0), run(256, 2900.0, world_size=4, train_time_s=176.0),
               run(513, 900.0, train_tflops=1.15, mfu=0.0092)]
    table = markdown_table(configurations(results)).splitlines()
    assert table[2] == ("| 513 | 1 | 2.87 min | 9.00 s | 10 | Tesla V100 | 16-mixed | 900 | 1.15 (0.920%) | 0.7500 | "
                        "devices=1 |")
    # sd of 170 s and 176 s: 4.24 s = 0.07 min. samples/s: geometric mean sqrt(2800 * 2900) = 2849.6; on the log
    # scale sd = ln(2900 / 2800) / sqrt(2) = 0.02481, t(0.975, 1) = 12.706: 2849.6 * exp(-+12.706 * 0.02481 / sqrt(2))
    assert table[3] == ("| 256 | 2 | 2.88 ± 0.07 min | 9.00 ± 0.00 s | 10 | 4x Tesla V100 | 16-mixed | 2850 (2280–3561) "
                        "|  | 0.7500 | devices=4 |")


def test_runs_that_did_not_finish_are_listed_with_why():
    results = [run(512, 900.0), run(600, None, status="oom"),
               run(30, None, status="failed", error_type="ValueError", error="boom", overrides=["batch_size=30"])]
    assert [row["batch_size"] for row in configurations(results)] == [512]
    notes = status_notes(results)
    assert "- Out of memory at batch size 600; the largest batch size that fit: 512.\n" in notes
    assert "- failed: batch_size=30 (d/30/None): ValueError: boom\n" in notes


def test_runs_that_failed_alike_are_told_once():
    results = [run(b, None, status="failed", error_type="RuntimeError", error="same", run_dir=f"sweep/{b}")
               for b in range(30, 40)]
    notes = status_notes(results)
    assert notes == "- failed, 10 runs (job directories 30, 31, 32, 33, 34, 35, 36, 37, ...): RuntimeError: same\n"


def test_a_column_empty_in_every_row_is_left_out():
    # mode=throughput times training steps: no inference, no whole epochs, no test accuracy, and here no TFLOP/s
    steps = [run(b, 500.0, mode="throughput", epochs=None, inference_time_s=None, test_acc=None) for b in (31, 32)]
    table = markdown_table(configurations(steps)).splitlines()
    assert table[0] == "| batch size | runs | train time | device | precision | samples/s (95% CI) |"
    assert table[2] == "| 31 | 1 | 2.87 min | Tesla V100 | 16-mixed | 500 |"
    # one row that has them keeps the columns for all
    mixed = markdown_table(configurations([*steps, run(33, 500.0)])).splitlines()
    assert mixed[0] == "| batch size | runs | train time | inf. time | epochs | device | precision | samples/s (95% CI) | test acc |"
    assert mixed[2] == "| 31 | 1 | 2.87 min |  |  | Tesla V100 | 16-mixed | 500 |  |"


def test_epochs_are_shown_only_where_runs_train_whole_epochs():
    table = markdown_table(configurations([run(32, 500.0, mode="throughput", epochs=None), run(33, 500.0)])).splitlines()
    epochs = {line.split(" | ")[0]: line.split(" | ")[4] for line in table[2:]}
    assert epochs == {"| 32": "", "| 33": "10"}


def test_a_merged_report_labels_each_differing_setting_once():
    small = run(32, 500.0, model="mobilenet_v3_small", image_size=64,
                config={"model": {"arch": "mobilenet_v3_small"}, "data": {"image_size": 64}})
    large = run(32, 400.0, model="mobilenet_v3_large", image_size=224,
                config={"model": {"arch": "mobilenet_v3_large"}, "data": {"image_size": 224}})
    other_card = {**large, "device_name": "NVIDIA H100", "train_samples_per_s": 900.0}
    labels = sorted(row["setting"] for row in configurations([small, large, other_card]))
    assert labels == ["data.image_size=224 model.arch=mobilenet_v3_large device=NVIDIA H100",
                      "data.image_size=224 model.arch=mobilenet_v3_large device=Tesla V100",
                      "data.image_size=64 model.arch=mobilenet_v3_small device=Tesla V100"]


def test_bookkeeping_does_not_split_a_configuration():
    first = run(32, 500.0, config={"seed": 1, "repeat": 0, "output_root": "a", "trainer": {"default_root_dir": "a/0"}})
    second = run(32, 510.0, config={"seed": 2, "repeat": 1, "output_root": "b", "trainer": {"default_root_dir": "b/3"}})
    (row,) = configurations([first, second])
    assert row["runs"] == 2 and row["setting"] == ""
