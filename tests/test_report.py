"""The report: files from results.json files, merged over directories, with real plots."""

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bsbench.core.results import write_json_atomic
from bsbench.report.cli import main
from bsbench.report.plots import figure
from bsbench.report.suggest import rule_of_thumb, suggest
from bsbench.report.summary import configurations
from bsbench.report.write import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_runs(directory: Path, rates: dict[int, list[float]], start: int = 0, status: str = "ok"):
    for b, values in rates.items():
        for i, rate in enumerate(values):
            run = directory / f"{start}"
            start += 1
            run.mkdir(parents=True)
            write_json_atomic(run / "results.json", {
                "status": status, "mode": "train", "batch_size": b, "repeat": i, "train_samples_per_s": rate,
                "train_time_s": 1000 / rate, "train_samples": 1000, "inference_time_s": 1.0,
                "epoch_times_s": [400 / rate, 600 / rate], "config": {"precision": "32-true"}, "world_size": 1,
                "device_name": "GPU X", "precision_used": "32-true", "epochs": 2, "test_acc": 0.5,
            })


def test_report_files_and_their_statistics(tmp_path):
    write_runs(tmp_path, {31: [100.0, 110.0, 105.0], 32: [120.0, 121.0, 119.0]})
    text, results = write_report([tmp_path])
    assert len(results) == 6
    for name in ("runs.csv", "summary.csv", "summary.md", "verdict.md", "samples_per_s.png", "epoch_time.png"):
        assert (tmp_path / name).is_file(), name
    rows = {int(r["batch_size"]): r for r in csv.DictReader(open(tmp_path / "summary.csv", newline=""))}
    assert rows[31]["runs"] == "3"
    assert sorted(float(v) for v in rows[31]["samples_per_s_values"].split(";")) == [100.0, 105.0, 110.0]
    # rates: the geometric mean, and the t interval on the log scale, t(0.975, 2) = 4.3027
    logs = [math.log(v) for v in (100, 105, 110)]
    assert float(rows[31]["samples_per_s_mean"]) == pytest.approx((100 * 105 * 110) ** (1 / 3))
    assert float(rows[31]["samples_per_s_sd"]) == pytest.approx(5.0)
    assert float(rows[31]["samples_per_s_ci_low"]) == pytest.approx(
        math.exp(statistics.fmean(logs) - 4.3027 * statistics.stdev(logs) / math.sqrt(3)), rel=1e-4)
    # per-sample train time in microseconds: (1000/rate) s / 1000 samples
    assert float(rows[32]["train_time_per_sample_us_mean"]) == pytest.approx(
        statistics.geometric_mean([1e6 / r for r in (120, 121, 119)]))
    assert len(list(csv.DictReader(open(tmp_path / "runs.csv", newline="")))) == 6
    assert "| 32 | 3 |" in (tmp_path / "summary.md").read_text() and "| 32 | 2^5, 8×4 | 31 |" in text


def test_plots_are_pngs_of_the_sweep(tmp_path):
    write_runs(tmp_path, {31: [100.0, 110.0], 32: [120.0, 122.0], 40: [90.0, 92.0]})
    write_report([tmp_path])
    for name in ("samples_per_s.png", "epoch_time.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        with Image.open(tmp_path / name) as image:
            assert image.size == (900, 500)
            assert len(set(image.convert("L").getdata())) > 10  # drawn, not blank
            assert image.info["Title"].startswith("bsbench:")
    ax = figure(configurations(json.loads(json.dumps(_results(tmp_path)))), "samples_per_s_values", "samples/s").axes[0]
    line = ax.lines[0]
    geometric = [(100 * 110) ** 0.5, (120 * 122) ** 0.5, (90 * 92) ** 0.5]
    assert list(line.get_xdata()) == [31, 32, 40] and list(line.get_ydata()) == pytest.approx(geometric)
    marked = {ln.get_gid(): ln.get_xdata()[0] for ln in ax.lines if ln.get_gid()}  # lines behind the points
    assert marked == {"power of two": 32, "multiple of 8": 40}


def _results(directory):
    from bsbench.core.results import read_results

    return read_results(directory)


def test_two_sweep_directories_merge_and_failures_are_listed_not_averaged(tmp_path, capsys):
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write_runs(first, {511: [100.0, 101.0], 512: [103.0, 104.0]})
    write_runs(second, {512: [102.0], 513: [99.0, 100.0]})
    write_runs(second, {600: [50.0]}, start=10, status="oom")
    assert main([str(first), str(second), "--out", str(out)]) == 0
    rows = {int(r["batch_size"]): r for r in csv.DictReader(open(out / "summary.csv", newline=""))}
    assert sorted(rows) == [511, 512, 513] and rows[512]["runs"] == "3"
    summary = (out / "summary.md").read_text()
    assert "Out of memory at batch size 600; the largest batch size that fit: 513." in summary
    assert "bsbench summary:" in capsys.readouterr().out


def test_report_command_is_installed_and_says_what_is_wrong(tmp_path):
    script = Path(sys.executable).with_name("bsbench-report")
    proc = subprocess.run([str(script), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no readable results.json under" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bsbench.report", "--suggest", "--sm", "80"], capture_output=True, text=True)
    assert proc.returncode == 0 and "rule of thumb" in proc.stdout
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    from bsbench.report.cli import DESCRIPTION
    assert proc.returncode == 0 and DESCRIPTION in proc.stdout and "examples:" in proc.stdout  # whole, as written


def test_suggestions_follow_the_quoted_rule_of_thumb():
    # V100: 2**14 * 80 / (224 * 224 * 3) = 8.707...: n = 1..: 8, 17, 26, ...
    assert rule_of_thumb(80, 224, 3, 60) == [8, 17, 26, 34, 43, 52]
    text = suggest(132, 224, 3, 1024, 512)
    assert "512" in text.split("powers of two:")[1].splitlines()[0]
    # the fastest command that answers the question: throughput only, the neighbours, no dataset
    assert "-m 'batch_size=511,512,513' repeats=5 mode=throughput data=synthetic" in text
    assert "range(504,521)" in text and "mode=train" not in text
    around = suggest(132, 224, 3, 1024, 100)  # --around centres the list and the commands
    assert "near 100:" in around and "'batch_size=99,100,101'" in around and "range(92,109)" in around


def test_suggest_reads_the_gpus_sms_from_the_cuda_driver_or_asks_for_them(monkeypatch):
    import ctypes

    from bsbench.report import suggest as module

    class Driver:  # libcuda's calls as the CUDA driver API answers them: 0 is success
        def cuInit(self, flags):
            return 0

        def cuDeviceGet(self, device, ordinal):
            device._obj.value = ordinal
            return 0

        def cuDeviceGetAttribute(self, value, attribute, device):
            value._obj.value = 132 if attribute == 16 else -1  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
            return 0

        def cuDeviceGetName(self, buffer, length, device):
            buffer.value = b"NVIDIA H100 80GB HBM3"
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver())
    text = module.suggest(None, 224, 3, 1024, 512)
    assert text.startswith("Candidate batch sizes for NVIDIA H100 80GB HBM3 (132 SMs)")

    def no_driver(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_driver)
    with pytest.raises(SystemExit, match=r"no CUDA GPU here to count its SMs; pass --sm N"):
        module.suggest(None, 224, 3, 1024, 512)
