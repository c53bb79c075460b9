"""Sweeps that never lose a result: out of memory, failures, interruption, SIGKILL and resume."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bsbench.job.run
import bsbench.training.parts
from bsbench.core.fields import FIELD_NAMES
from bsbench.training.model import ImageClassifier
from conftest import HELPERS, SMOKE, ZYGOTE, job_config, wait_for

FAULT = "+callbacks.fault._target_=faults.FailAt"


def by_batch_size(results):
    return {r["batch_size"]: r for r in results}


def test_out_of_memory_is_a_result_and_the_sweep_goes_on(cli):
    proc = cli("-m", "batch_size=30,31,32", *SMOKE, FAULT, "+callbacks.fault.batch_size=31")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = by_batch_size(cli.results())
    assert [runs[b]["status"] for b in (30, 31, 32)] == ["ok", "oom", "ok"]
    assert runs[31]["error_type"] == "OutOfMemoryError" and "out of memory" in runs[31]["error"]
    assert runs[32]["train_samples_per_s"] > 0  # the job after the OOM ran clean
    summary = (cli.sweep_dir() / "summary.md").read_text()
    assert "| 31 |" not in summary  # listed, not averaged
    assert "Out of memory at batch size 31; the largest batch size that fit: 32." in summary


def test_a_failed_run_is_recorded_the_sweep_finishes_and_exits_non_zero(cli):
    proc = cli("-m", "batch_size=30,31,32", *SMOKE, FAULT, "+callbacks.fault.batch_size=30",
               "+callbacks.fault.error=value")
    assert proc.returncode == 1
    runs = by_batch_size(cli.results())
    assert [runs[b]["status"] for b in (30, 31, 32)] == ["failed", "ok", "ok"]
    assert runs[30]["error_type"] == "ValueError" and runs[30]["error"] == "simulated failure at batch size 30"
    assert runs[30].keys() <= set(FIELD_NAMES)
    # its FLOPs are counted like any run's; no rate, so no TFLOP/s or MFU, and the result says why
    assert runs[30]["train_flops_per_sample"] == runs[31]["train_flops_per_sample"] > 0
    assert runs[30]["train_tflops"] is None and runs[30]["mfu"] is None and runs[30]["mfu_reason"]
    job_log = (Path(runs[30]["run_dir"]) / "bsbench.log").read_text()
    assert "Traceback (most recent call last)" in job_log and "ValueError" in job_log
    with open(cli.sweep_dir() / "runs.csv", newline="") as f:
        assert sorted(row["status"] for row in csv.DictReader(f)) == ["failed", "ok", "ok"]
    assert "failed: batch_size=30" in (cli.sweep_dir() / "summary.md").read_text()


def test_a_failed_single_run_writes_its_result_and_exits_non_zero(cli):
    proc = cli(*SMOKE, FAULT, "+callbacks.fault.batch_size=32", "+callbacks.fault.error=value")
    assert proc.returncode == 1
    (result,) = cli.results()
    assert result["status"] == "failed" and result["batch_size"] == 32


class MemoryEdge(ImageClassifier):
    """Out of memory for every batch larger than LIMIT images, like a device with a memory edge, in the
    words of `ERROR` (CUDA's allocator by default; cuDNN and cuBLAS say it otherwise near the edge)."""

    LIMIT = 50
    ERROR = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    def training_step(self, batch, batch_idx):
        if len(batch[0]) > self.LIMIT:
            raise self.ERROR
        return super().training_step(batch, batch_idx)


def test_find_max_reports_the_largest_batch_size_that_ran(tmp_path, monkeypatch):
    job_cfg = job_config(tmp_path, "mode=find_max", "batch_size=8", "trainer.max_steps=1")
    monkeypatch.setattr(bsbench.training.parts, "ImageClassifier", MemoryEdge)
    result = bsbench.job.run.run(job_cfg)
    assert result["status"] == "ok" and result["mode"] == "find_max"
    assert result["max_batch_size"] == 50 and result["find_max_stop"] == "memory"
    tried = {t["batch_size"]: t["status"] for t in result["find_max_trials"]}
    assert tried[50] == "ok" and tried[51] == "oom"  # both sides of the edge ran


@pytest.mark.parametrize("message", [
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
    "FIND was unable to find an engine to execute this computation",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
])
def test_find_max_takes_cuda_libraries_words_for_out_of_memory(tmp_path, monkeypatch, message):
    edge = type("Edge", (MemoryEdge,), {"LIMIT": 100, "ERROR": RuntimeError(message)})
    job_cfg = job_config(tmp_path, "mode=find_max", "batch_size=32", "trainer.max_steps=1", "find_max.max_val=128")
    monkeypatch.setattr(bsbench.training.parts, "ImageClassifier", edge)
    result = bsbench.job.run.run(job_cfg)
    assert result["max_batch_size"] == 100 and result["find_max_stop"] == "memory"  # not the untried 128


def test_find_max_from_the_command_line_stops_at_the_training_set(cli):
    proc = cli(*SMOKE, "mode=find_max", "batch_size=64", "trainer.max_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = cli.results()
    assert result["mode"] == "find_max" and result["max_batch_size"] == 256  # smoke's training images
    assert result.keys() <= set(FIELD_NAMES)
    assert result["find_max_stop"] == "dataset"
    assert [t["batch_size"] for t in result["find_max_trials"]] == [64, 128, 256]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_sweep_keeps_what_finished_and_marks_the_running_job(cli, sig):
    # job 0 takes a second; job 1 runs 100 epochs, long enough to be stopped in the middle
    proc = cli.start("-m", "epochs=1,100,2", *SMOKE)
    wait_for(lambda: len(list(cli.outputs.rglob("results.json"))) == 1 and
             len(list(cli.outputs.glob("multirun/*/*/*/bsbench.log"))) == 2)
    time.sleep(2.0)
    os.killpg(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    runs = {r["epochs"]: r for r in cli.results()}
    assert runs[1]["status"] == "ok" and runs[100]["status"] == "interrupted"
    assert len([p for p in cli.sweep_dir().iterdir() if p.is_dir()]) == 2  # the sweep stopped: job 2 never began
    assert "resume=" in stderr
    rows = list(csv.DictReader(open(cli.sweep_dir() / "runs.csv", newline="")))
    assert sorted(row["status"] for row in rows) == ["interrupted", "ok"]


def test_a_killed_sweep_resumes_without_rerunning_what_finished(cli):
    sweep_args = ["-m", "batch_size=30,31,32", *SMOKE, "epochs=2"]  # seconds per job: the kill lands in job 2
    proc = cli.start(*sweep_args)
    wait_for(lambda: list(cli.outputs.rglob("results.json")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    sweep = cli.sweep_dir()
    first = sorted(sweep.rglob("results.json"))
    kept = {p: (p.stat().st_mtime_ns, json.loads(p.read_text())) for p in first}  # every file whole
    assert all(r["status"] == "ok" for _, r in kept.values()) and len(kept) < 3

    resumed = cli(*sweep_args, f"resume={sweep}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done" in resumed.stdout + resumed.stderr
    for path, (mtime, _) in kept.items():
        assert path.stat().st_mtime_ns == mtime  # not rerun
    assert sorted(r["batch_size"] for r in cli.results()) == [30, 31, 32]
    assert [p.name for p in (cli.outputs / "multirun").glob("*/*")] == [sweep.name]  # no second sweep dir
    rows = list(csv.DictReader(open(sweep / "runs.csv", newline="")))
    assert sorted(int(row["batch_size"]) for row in rows) == [30, 31, 32]


def test_a_stop_swallowed_by_a_finalizer_is_acted_on_at_the_next_check():
    # Python drops an exception raised in __del__ (garbage collection runs them at any moment): a
    # SIGTERM delivered there must still stop the sweep
    code = """
import os, signal, sys
from bsbench.core import interrupt
interrupt.install()
class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler runs here, inside the finalizer
            pass
Finalized()
print("went on")
try:
    interrupt.check()
except KeyboardInterrupt as exc:
    print("stopped:", exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["went on", "stopped: signal 15"], proc.stdout + proc.stderr


def test_a_command_forked_by_the_zygote_starts_as_its_own_process(tmp_path):
    # the zygote imported bsbench long before: what bsbench reads of a process's start (bsbench.core.process)
    # must be the command's, or the tests would run commands no user runs (Ctrl-C ignored or not, the clock)
    for ignored in (True, False):
        before = time.time()
        forked = ZYGOTE.start([], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(HELPERS)}, module="start_probe",
                              sigint_ignored=ignored)
        proc = forked.run(60)
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen["sigint_ignored"] is ignored and seen["still_ignored"] is ignored
        assert seen["started_at"] >= before


def test_ctrl_c_that_the_shell_made_bsbench_ignore_stays_ignored():
    # a script's background job (`python -m bsbench ... &`) starts with SIGINT ignored, so that Ctrl-C
    # reaches the script's foreground alone: bsbench keeps it so for the whole sweep (it used to take
    # Ctrl-C from its first job on, and not before), and SIGTERM still stops it
    code = ("import signal; from bsbench.core import interrupt; interrupt.install(); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is interrupt._on_signal)")

    def ignoring_ctrl_c():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    for start, expected in ((ignoring_ctrl_c, "True True"), (None, "False True")):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=start)
        assert proc.stdout.strip() == expected, proc.stdout + proc.stderr


@pytest.mark.parametrize("stop, after", [(signal.SIGINT, 2.0), (signal.SIGTERM, 2.0), (signal.SIGTERM, 0.3)])
def test_a_stop_while_the_sweep_is_planned_ends_in_one_line_without_a_traceback(cli, stop, after):
    # 3000 jobs: their planning (each typed and checked, a few ms) takes longer than the 2 s before the stop;
    # a scheduler's cancel or `timeout` sends SIGTERM, at any moment, the command's first instants too
    proc = cli.start("-m", "batch_size=range(30,3030)", *SMOKE, "data.num_train_images=4000", "mode=throughput")
    time.sleep(after)
    os.killpg(proc.pid, stop)
    time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # pressed twice, as people do (unless it has ended already)
        os.killpg(proc.pid, stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "bsbench: interrupted before any job finished" in stderr and "Traceback" not in stderr, stderr
    assert not list(cli.outputs.rglob("results.json"))
    assert not list(cli.outputs.glob("multirun/*/*")), "a sweep folder that holds no result"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_while_a_tune_stops_changes_nothing(cli, stop):
    # stopped in its batch stage (once its knobs are done), then stopped again 0.3 s later, as people do
    proc = cli.start(*SMOKE, "mode=tune", "budget_min=0.5", "tune.max_batch_size=32", "tune.grid_points=2",
                     "compare.steps=1", "compare.warmup_steps=1", "timing.warmup_steps=1")
    wait_for(lambda: next(cli.outputs.rglob("knobs/done.json"), None) is not None or proc.poll() is not None)
    os.killpg(proc.pid, stop)
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "resume with resume=" in stderr and "Traceback" not in stderr
    (done,) = cli.outputs.rglob("knobs/done.json")
    assert json.loads(done.read_text())["stage"] == "knobs"


def test_a_stop_between_two_jobs_reports_what_finished_and_how_to_resume(tmp_path, monkeypatch, capsys):
    from test_report import write_runs

    import bsbench.job.hooks as hooks

    from bsbench.core.plan import write_plan

    monkeypatch.setattr(hooks, "_ignore_stops", lambda: None)  # this test process keeps its own handlers
    write_runs(tmp_path, {31: [100.0], 32: [110.0]})
    write_plan(tmp_path, [{"folder": str(i), "job_id": str(i), "overrides": [f"batch_size={b}", "epochs=2"]}
                          for i, b in enumerate((31, 32, 33))])  # the third job never started
    with pytest.raises(SystemExit) as stop:
        hooks.stopped_outside_a_job(str(tmp_path))
    assert stop.value.code == 130
    out, err = capsys.readouterr()
    assert "| 31 |" in out and "| 32 |" in out  # the summary of what finished
    assert (f"- planned and not run: 1 job (the sweep stopped before them): 2 (batch_size=33); resume={tmp_path} with "
            "the sweep's command runs them.") in out
    assert f"interrupted between jobs; finished results are kept in {tmp_path}; resume with resume={tmp_path}" in err
    assert (tmp_path / "summary.md").is_file()


def test_a_stop_before_a_job_starts_leaves_no_folder_without_its_result(tmp_path, monkeypatch):
    # Ctrl-C after Hydra made the next job's folder, before the job began: that folder goes; what this
    # launch did not make (an earlier, killed launch's job) and what finished stay
    import time

    from bsbench.core import process
    from bsbench.job.hooks import stopped_outside_a_job

    monkeypatch.setattr(process, "STARTED_AT", time.time() - 60)
    earlier, finished, unstarted = (tmp_path / name for name in ("bs30_r0_a", "bs31_r0_b", "bs32_r0_c"))
    for folder in (earlier, finished, unstarted):
        (folder / ".hydra").mkdir(parents=True)
    os.utime(earlier, (time.time() - 3600, time.time() - 3600))
    (finished / "results.json").write_text("{}")
    monkeypatch.setattr("bsbench.report.write.write_report", lambda directories: ("the report", []))
    with pytest.raises(SystemExit) as stop:
        stopped_outside_a_job(str(tmp_path))
    assert stop.value.code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bs30_r0_a", "bs31_r0_b"]


def test_the_terminal_shows_bsbenchs_lines_alone(cli):
    # an import typo: bsbench's one line, none of Hydra's three before it
    proc = cli(*SMOKE, "model=custom", "model._target_=my_pkg.Nope", "mode=throughput")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "model._target_=my_pkg.Nope cannot be imported" in proc.stderr
    # mode=train without experiment=smoke (which turns it off): no progress bar of Lightning's, even where a
    # run fails mid-epoch
    proc = cli("accelerator=cpu", "data=synthetic", "data.image_size=32", "model.arch=mobilenet_v3_small",
               "data.num_train_images=96", "data.val_size=32", "data.num_test_images=32", "epochs=1", "batch_size=16",
               "timing.warmup_steps=1",
               "+callbacks.fault._target_=faults.FailAt", "+callbacks.fault.batch_size=16", "+callbacks.fault.error=value")
    assert proc.returncode == 1 and "simulated failure at batch size 16" in proc.stdout + proc.stderr
    assert "it/s" not in proc.stdout + proc.stderr and "Epoch 0" not in proc.stdout + proc.stderr
