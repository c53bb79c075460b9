"""The noise sentinel (bsbench.job.noise): a run measured while other processes take the machine is
recorded busy, said on the terminal once per sweep, and marked in the summary and the verdict; the
job's own processes (its ranks, its loader workers, its family) never make it busy."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bsbench.job import noise
from bsbench.report.summary import configurations, markdown_table, status_notes
from bsbench.report.verdict import verdict_markdown
from conftest import SMOKE

BURN = "while True: pass"
SESSION = os.environ[noise.FAMILY_ENV]  # the test session's family (tests/conftest.py)


def burners(count: int) -> list[int]:
    """`count` processes spinning on a core each, none a descendant of this process (the shell that starts
    them ends at once). They carry the test session's family (tests/conftest.py), so the other tests' jobs,
    which may run beside them, do not count them: a test here measures from another family (`outsider`)."""
    start = " ".join(f'{sys.executable} -c "{BURN}" >/dev/null 2>&1 & echo $!;' for _ in range(count))
    env = {**os.environ, noise.FAMILY_ENV: SESSION}
    out = subprocess.run(["sh", "-c", start], env=env, capture_output=True, text=True, check=True).stdout
    return [int(pid) for pid in out.split()]


@pytest.fixture
def outsider(monkeypatch):
    """This test's jobs, and its Watch, in a family of their own: the session's processes are others to them."""
    monkeypatch.setenv(noise.FAMILY_ENV, f"test-noise-{os.getpid()}")


def stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def watched(seconds: float) -> dict:
    watch = noise.Watch().start()
    time.sleep(seconds)
    return watch.stop()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the CPU part of the sentinel reads Linux's /proc")
def test_other_processes_count_and_the_jobs_own_do_not(outsider):
    mine = subprocess.Popen([sys.executable, "-c", BURN])  # a child of this process: one of the job's own
    try:
        own = watched(1.5)
    finally:
        mine.kill()
        mine.wait()
    others = burners(1)
    try:
        busy = watched(1.5)
    finally:
        stop(others)
    # about one core (and what the session's other tests took), against what they took alone
    assert busy["other_cpu_load"] >= 0.5 and busy["other_cpu_load"] > own["other_cpu_load"] + 0.3, (own, busy)
    assert busy["machine_cpu_load"] >= busy["other_cpu_load"]


def test_the_load_average_recorded_is_the_kernels_at_the_stop(monkeypatch):
    # the kernel's 1-minute load average as os.getloadavg reads it at the stop (rounded as the results show it),
    # and null where the system has none
    monkeypatch.setattr(os, "getloadavg", lambda: (3.14159, 1.0, 0.5))
    assert noise.Watch().stop()["load_avg_1m"] == 3.14

    def none():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", none)
    assert noise.Watch().stop()["load_avg_1m"] is None


def test_a_machine_with_no_core_to_spare_and_others_on_it_is_busy():
    quiet = noise.judge({"cpu_count": 2, "machine_cpu_load": 2.0, "other_cpu_load": 0.1})
    assert quiet == {"busy": False, "busy_reason": None}  # bsbench alone, using every core
    spare = noise.judge({"cpu_count": 16, "machine_cpu_load": 6.0, "other_cpu_load": 4.0})
    assert spare["busy"] is False  # others ran, but cores were left for the job
    busy = noise.judge({"cpu_count": 2, "machine_cpu_load": 1.95, "other_cpu_load": 1.2})
    assert busy["busy"] is True and "1.2 of the machine's 2 CPU cores" in busy["busy_reason"]
    gpu = noise.judge({"cpu_count": 16, "machine_cpu_load": 1.0, "other_cpu_load": 0.0, "gpu_other_processes": 2})
    assert gpu == {"busy": True, "busy_reason": "2 other processes used its GPU"}
    assert noise.judge({"cpu_count": 2}) == {"busy": None, "busy_reason": None}  # not measured: not told


def test_the_warning_is_said_once_and_names_the_run_and_what_to_do(caplog, monkeypatch):
    monkeypatch.setattr(noise, "_warned", False)
    scattered = {"device_type": "cuda", "timed_steps": 40, "step_time_mean_ms": 100.0, "step_time_sd_ms": 70.0}
    noise.warn_once({**scattered, "step_time_sd_ms": 20.0}, "job 1 of 3")  # 20%: nothing to say
    assert not caplog.records
    noise.warn_once({**scattered, "timed_steps": 4}, "job 1 of 3")  # too few steps to read an SD that way
    assert not caplog.records
    noise.warn_once(scattered, "job 2 of 3")
    noise.warn_once({"device_type": "cpu", "busy": True, "busy_reason": "others"}, "job 3 of 3")
    (record,) = caplog.records
    assert record.getMessage().startswith("bsbench: warning: job 2 of 3: its step times scattered widely (their "
                                          "standard deviation was 70% of their mean)")
    assert "OMP_NUM_THREADS" not in record.getMessage()  # a GPU run: the hint is for a CPU's threads


def test_a_sweep_on_a_busy_machine_says_so_and_marks_its_run(cli, outsider):
    # one process of another family spinning on one of the cores (and this session's other tests, which may
    # run beside it): the cores are all in use, and others hold at least one
    others = burners(1)
    try:
        proc = cli("-m", "batch_size=31", *SMOKE, "mode=throughput", "trainer.max_steps=3", "timing.warmup_steps=1")
    finally:
        stop(others)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = cli.results()
    assert run["busy"] is True and run["other_cpu_load"] >= 0.5, (run["other_cpu_load"], run["machine_cpu_load"])
    assert "CPU cores busy while all of them were in use" in run["busy_reason"]
    (warning,) = [line for line in proc.stdout.splitlines() if line.startswith("bsbench: warning:")]
    assert warning.startswith("bsbench: warning: job 1 of 1: it was measured on a busy machine (other processes kept ")
    assert "OMP_NUM_THREADS=<free cores>" in warning
    summary = (cli.sweep_dir() / "summary.md").read_text()
    assert "| 31 | 1 (1 busy) |" in summary and "Measured on a busy machine (1 of 1 run;" in summary


def test_the_report_marks_only_what_was_busy():
    def run(batch_size, rate, busy):
        return {"status": "ok", "batch_size": batch_size, "train_samples_per_s": rate, "busy": busy, "run_dir": "d",
                "busy_reason": "others" if busy else None, "config": {"mode": "train"}, "mode": "train"}

    results = [run(b, r, b == 33 and i == 0) for i, r in enumerate((100.0, 101.0, 99.0)) for b in (31, 32, 33)]
    rows = configurations(results)
    assert [row["busy_runs"] for row in rows] == [0, 0, 1]
    table = markdown_table(rows)
    assert "| 33 | 3 (1 busy) |" in table and "| 32 | 3 |" in table
    verdict = verdict_markdown(rows, results=results)
    (against_31,) = [line for line in verdict.splitlines() if line.startswith("| 32 | 2^5, 8×4 | 31 |")]
    (against_33,) = [line for line in verdict.splitlines() if line.startswith("| 32 | 2^5, 8×4 | 33 |")]
    assert "busy machine" not in against_31 and against_33.endswith("(busy machine) |")
    assert "*busy machine*: 1 of these 2 comparisons uses runs" in verdict
    # each busy run with its own reason (a GPU shared with others is not a CPU that others kept busy)
    gpu = {**results[0], "busy": True, "busy_reason": "2 other processes used its GPU", "run_dir": "bs31"}
    notes = status_notes([gpu, *results[1:]])
    assert "Measured on a busy machine (2 of 9 runs;" in notes
    assert "batch size 31 (bs31: 2 other processes used its GPU); batch size 33 (d: others)." in notes


def test_other_processes_on_the_gpu_are_counted_from_nvml(monkeypatch):
    from types import SimpleNamespace

    from bsbench.training.telemetry import other_processes, summarize

    def nvml(compute, graphics=()):
        listed = lambda pids: lambda handle: [SimpleNamespace(pid=pid) for pid in pids]  # noqa: E731
        return SimpleNamespace(nvmlDeviceGetComputeRunningProcesses=listed(compute),
                               nvmlDeviceGetGraphicsRunningProcesses=listed(graphics))

    me = os.getpid()
    assert other_processes(nvml([me]), None) == 0  # this process alone
    assert other_processes(nvml([me, 4242], [4243]), None) == 2
    assert other_processes(nvml([90001, 90002]), None) == 1  # a container: host pids, one of them this process
    assert summarize(None)["gpu_other_processes"] is None  # no NVML: not known
    assert summarize({}, [0, 2, 1])["gpu_other_processes"] == 2  # the most seen while it trained
