"""No finished result is ever lost or mislabelled: job folders by what a job is, one sweep per
directory, resume by content, disk errors, corrupt files, ranks that die with their sweep."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import bsbench.training.parts
from bsbench.core.errors import UserError
from bsbench.job.identity import job_id
from bsbench.core.results import finished_runs, read_results, write_json_atomic
from bsbench.job.hooks import check
from bsbench.job.run import attempt
from bsbench.core.stats import describe
from bsbench.report.summary import status_notes
from bsbench.report.write import write_report
from bsbench.training.model import ImageClassifier
from conftest import SMOKE, composed, job_config, wait_for

FAST = [*SMOKE, "mode=throughput", "timing.warmup_steps=1", "trainer.max_steps=3"]


def folders_agree(sweep: Path) -> list[dict]:
    """Every job folder's results.json, .hydra/overrides.yaml and folder name tell the same job."""
    results = read_results(sweep)
    for r in results:
        folder = Path(r["run_dir"])
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert f"batch_size={r['batch_size']}" in overrides and f"repeat={r['repeat']}" in overrides, folder
        assert folder.name == f"bs{r['batch_size']}_r{r['repeat']}_{r['job_id'][:8]}"
    return results


def test_a_job_is_what_its_config_says_not_how_the_command_said_it():
    def identity_of(*overrides):
        return job_id(check(composed(*FAST, *overrides), sweep=False))

    base = identity_of("batch_size=30")
    assert identity_of("batch_size=30", "cooldown_s=30", "order=shuffled", "order_seed=3", "repeats=4") == base
    assert identity_of("batch_size=30", "mfu.peak_tflops=100") == base  # what MFU is measured against, not the job
    assert identity_of("batch_size=30", "trainer.max_epochs=-1") == base  # a default written out
    assert identity_of("batch_size=30", "trainer.max_steps=4") != base  # another configuration
    assert identity_of("batch_size=30", "repeat=1") != base  # another repeat
    assert identity_of("batch_size=31") != base


def test_resume_with_a_changed_command_skips_exactly_what_ran_and_overwrites_nothing(cli):
    proc = cli("-m", "batch_size=30,31", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cli.sweep_dir()
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file() and p.parent != sweep}
    # reordered, extended, more repeats, another order, extra sweep control
    resumed = cli("-m", "batch_size=32,31,30", *FAST, "repeats=2", "order=shuffled", "cooldown_s=0",
                  f"resume={sweep}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {sweep}: 2 of 6 jobs already done there, 4 to run" in resumed.stdout
    assert (sweep / "sweep.log").read_text().count("already done in") == 2  # each skipped job, in the log
    for path, mtime in before.items():  # results and .hydra of the jobs that ran before: untouched
        assert path.stat().st_mtime_ns == mtime, path
    results = folders_agree(sweep)
    assert sorted((r["batch_size"], r["repeat"]) for r in results) == [(b, r) for b in (30, 31, 32) for r in (0, 1)]
    assert "6 runs (6 ok)" in (sweep / "summary.md").read_text()


def test_two_sweeps_started_together_get_a_directory_each(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes at once on 2 cores: one thread each (2.5x faster)
    shared = tmp_path / "outputs" / "same-second"
    procs = [cli.start("-m", f"batch_size={b}", *FAST, f"hydra.sweep.dir={shared}") for b in (30, 40)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    sweeps = sorted(shared.parent.iterdir())
    assert [p.name for p in sweeps] == ["same-second", "same-second-2"]
    batch_sizes = sorted(sorted(r["batch_size"] for r in folders_agree(sweep)) for sweep in sweeps)
    assert batch_sizes == [[30], [40]]  # no sweep's job in the other's directory


def test_two_runs_started_together_get_a_directory_each(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes at once on 2 cores: one thread each
    # the same second's outputs/<date>/<time>, or the same hydra.run.dir: neither run writes into the other's
    shared = tmp_path / "outputs" / "same-second"
    procs = [cli.start(f"batch_size={b}", *FAST, f"hydra.run.dir={shared}") for b in (30, 40)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
    runs = sorted(shared.parent.iterdir())
    assert [p.name for p in runs] == ["same-second", "same-second-2"]
    assert sorted(json.loads((run / "results.json").read_text())["batch_size"] for run in runs) == [30, 40]
    again = cli("batch_size=50", *FAST, f"hydra.run.dir={shared}")  # later, into a directory that holds a run
    assert again.returncode == 0 and f"result in {shared}-3" in again.stdout + again.stderr


def test_a_sweep_in_use_cannot_be_resumed_and_a_killed_one_can(cli):
    proc = cli.start("-m", "epochs=1,100", *SMOKE)
    wait_for(lambda: len(list(cli.outputs.rglob("results.json"))) == 1)
    sweep = cli.sweep_dir()
    second = cli("-m", "epochs=1,100", *SMOKE, f"resume={sweep}")
    assert second.returncode == 2
    assert second.stderr.strip() == (f"bsbench: error: resume={sweep} is in use by another bsbench process "
                                     f"(pid {proc.pid}); wait for it to end or stop it, then resume.")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    again = cli("-m", "epochs=1", *SMOKE, f"resume={sweep}")  # the lock died with its process
    assert again.returncode == 0 and "already done" in again.stdout + again.stderr, again.stderr[-3000:]


def test_resume_refuses_a_directory_that_holds_no_sweep(tmp_path):
    with pytest.raises(UserError, match=r"^resume=.* holds no bsbench sweep \(no multirun.yaml\); use the directory"):
        check(composed(*FAST, f"resume={tmp_path / 'nowhere'}"), sweep=True)
    with pytest.raises(UserError, match=r"finishes a sweep; run the sweep's own command, with -m\.$"):
        check(composed(*FAST, f"resume={tmp_path}"), sweep=False)


def test_the_same_job_twice_in_a_sweep_is_refused(cli):
    proc = cli("-m", "batch_size=30,30", *FAST)
    assert proc.returncode == 2 and not cli.outputs.exists()
    assert "is the same job as" in proc.stderr and "use repeats=N" in proc.stderr


def test_a_failed_write_stops_the_sweep_and_loses_nothing_finished(cli):
    proc = cli("-m", "batch_size=30,31,32", *FAST, "+callbacks.fault._target_=faults.DiskFullAtRecord",
               "+callbacks.fault.batch_size=31")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bsbench: error:")]
    assert len(errors) == 1 and "results.json (No space left on device); the sweep stops here" in errors[0], proc.stderr
    lost = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(lost) == 1 and lost[0]["batch_size"] == 31 and lost[0]["train_samples_per_s"] > 0  # its only copy
    assert "the result that could not be written" not in proc.stdout  # once on the terminal; the log has it too
    sweep = cli.sweep_dir()
    assert "the result that could not be written: {" in next(sweep.glob("bs31_*/bsbench.log")).read_text()
    assert sorted(r["batch_size"] for r in read_results(sweep)) == [30]  # 32 never ran
    assert "1 run (1 ok)" in (sweep / "summary.md").read_text()  # the report of what is on disk
    assert not [p for p in sweep.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.name != ".bsbench.lock"]


def _disk_fills_at(monkeypatch, file_number: int) -> None:
    """The disk fills while the report writes its `file_number`-th file (1: runs.csv), halfway through it."""
    import errno

    import bsbench.core.results

    written = []

    def fill(f, data):
        written.append(len(data))
        if len(written) == file_number:
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(data)

    monkeypatch.setattr(bsbench.core.results, "_fill", fill)


@pytest.mark.parametrize("file_number, name", [(1, "runs.csv"), (5, "samples_per_s.png")])
def test_a_report_that_does_not_fit_names_its_file_and_leaves_no_partial_one(tmp_path, monkeypatch, capsys,
                                                                             file_number, name):
    from bsbench.report.cli import main
    from test_report import write_runs

    write_runs(tmp_path, {31: [100.0, 101.0], 32: [110.0, 111.0]})
    _disk_fills_at(monkeypatch, file_number)
    assert main([str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "| 32 | 2^5, 8×4 | 31 |" in out  # the verdict still reaches the terminal
    assert err.strip() == (f"bsbench: could not write {tmp_path / name} (No space left on device); every results.json "
                           f"is kept in {tmp_path}; free space there and run `bsbench-report {tmp_path}`, or write the "
                           f"report elsewhere with `bsbench-report {tmp_path} --out DIR`.")
    assert not (tmp_path / name).exists() and not list(tmp_path.glob(".*.tmp"))  # no empty or half-written file
    assert len(read_results(tmp_path)) == 4  # and every result as it was


def test_a_sweep_whose_report_does_not_fit_prints_it_and_exits_1(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from bsbench.job.hooks import SweepReport
    from test_report import write_runs

    write_runs(tmp_path, {31: [100.0], 32: [110.0]})
    _disk_fills_at(monkeypatch, 3)  # summary.md
    with pytest.raises(SystemExit) as stop:
        SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out, err = capsys.readouterr()
    assert stop.value.code == 1 and "| 31 |" in out and "| 32 |" in out  # not exit 0 with a warning, as before
    assert f"could not write {tmp_path / 'summary.md'} (No space left on device)" in err
    assert not (tmp_path / "summary.md").exists()


def test_corrupt_results_are_named_and_skipped_by_the_report_and_not_done_for_resume(tmp_path):
    good = {"status": "ok", "mode": "train", "batch_size": 32, "train_samples_per_s": 100.0, "job_id": "a" * 16,
            "config": {"precision": "32-true"}}
    files = {"good": json.dumps(good), "truncated": json.dumps(good)[:40], "empty": "",
             "mistyped": json.dumps({**good, "batch_size": "abc"}), "status": json.dumps({**good, "status": "fine"})}
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    text, results = write_report([tmp_path])
    assert [r["batch_size"] for r in results] == [32]
    summary = (tmp_path / "summary.md").read_text()
    for name in ("truncated", "empty", "mistyped", "status"):
        assert f"- not read: {tmp_path / name / 'results.json'} (" in summary, name
    assert "batch_size 'abc' is not a positive integer" in summary and "JSONDecodeError" in summary
    assert list(finished_runs(tmp_path)) == ["a" * 16]


TIMED = {"train_samples_per_s": 400.0, "timed_samples": 1200, "timed_seconds": 3.0, "train_time_s": 4.0,
         "train_samples": 1600, "step_time_mean_ms": 80.0}


@pytest.mark.parametrize("change, why", [
    ({"train_samples_per_s": 1e300}, "train_samples_per_s 1e+300 is not timed_samples / timed_seconds (1200 / 3)"),
    ({"step_time_mean_ms": -1}, "step_time_mean_ms -1 is not a number from 0"),
    ({"train_time_s": 2.0}, "timed_seconds 3 is longer than train_time_s 2"),
    ({"train_samples": 1000}, "timed_samples 1200 is more than train_samples 1000"),
    ({"timed_steps": -3}, "timed_steps -3 is not a count, an integer from 0"),
    ({"round_samples_per_s": [300.0, 350.0]}, "train_samples_per_s 400 lies outside its rounds' rates (300 to 350)"),
    ({"inference_samples_per_s": 50.0, "test_samples": 64, "inference_time_s": 0.5},
     "inference_samples_per_s 50 is not test_samples / inference_time_s (64 / 0.5)"),
    ({"epoch_times_s": [1.0, -2.0]}, "epoch_times_s holds a negative time"),
])
def test_a_result_whose_fields_cannot_all_be_true_is_named_and_not_done_for_resume(tmp_path, change, why):
    good = {"status": "ok", "mode": "train", "batch_size": 32, "job_id": "a" * 16, "config": {}, **TIMED}
    for name, result in (("good", good), ("bad", {**good, "job_id": "b" * 16, **change})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    text, results = write_report([tmp_path])
    assert [r["job_id"] for r in results] == ["a" * 16]
    assert f"- not read: {tmp_path / 'bad' / 'results.json'} ({why})" in (tmp_path / "summary.md").read_text()
    assert list(finished_runs(tmp_path)) == ["a" * 16]  # the other one runs again on resume


def test_a_sweeps_results_that_are_gone_or_cannot_be_true_are_named_and_run_again_on_resume(cli):
    proc = cli("-m", "batch_size=29,30,31", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cli.sweep_dir()
    by_size = {r["batch_size"]: Path(r["run_dir"]) for r in cli.results()}
    (by_size[29] / "results.json").unlink()  # deleted
    tampered = json.loads((by_size[30] / "results.json").read_text())
    (by_size[30] / "results.json").write_text(json.dumps({**tampered, "train_samples_per_s": 1e300}))
    report = subprocess.run([sys.executable, "-m", "bsbench.report", str(sweep)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    summary = (sweep / "summary.md").read_text()
    assert "| 30 |" not in summary and "| 29 |" not in summary and "| 31 |" in summary  # a 300-digit rate nowhere
    assert f"- not read: {by_size[30] / 'results.json'} (train_samples_per_s 1e+300 is not timed_samples / " \
           "timed_seconds" in summary
    assert (f"- planned and missing: 1 job with a folder but no results.json (deleted, or the job was killed before "
            f"it wrote one): {by_size[29].name} (batch_size=29); resume={sweep} with the sweep's command runs "
            "them.") in summary
    again = cli("-m", "batch_size=29,30,31", *FAST, f"resume={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {sweep}: 1 of 3 jobs already done there, 2 to run" in (sweep / "sweep.log").read_text()
    assert sorted(r["batch_size"] for r in cli.results()) == [29, 30, 31]
    assert "planned and missing" not in (sweep / "summary.md").read_text()


def test_results_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"status": "ok"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644  # readable by colleagues


def test_intervals_of_rates_are_never_negative():
    arithmetic, logarithmic = describe([20.0, 100.0]), describe([20.0, 100.0], log=True)
    assert arithmetic["ci_low"] < 0  # what the summary printed: "60 (-448-568)"
    assert 0 < logarithmic["ci_low"] < logarithmic["mean"] < logarithmic["ci_high"]
    assert logarithmic["mean"] == pytest.approx((20.0 * 100.0) ** 0.5)  # the geometric mean, as the verdict's


class Diverges(ImageClassifier):
    """A loss that goes to NaN from the third step on."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx >= 2 else loss


def test_a_loss_that_is_not_finite_is_counted_and_noted(tmp_path, monkeypatch):
    monkeypatch.setattr(bsbench.training.parts, "ImageClassifier", Diverges)
    result = attempt(job_config(tmp_path, "mode=throughput", "timing.warmup_steps=1", "trainer.max_steps=5"))
    assert result["status"] == "ok" and result["nonfinite_loss_steps"] == 3 and result["train_samples_per_s"] > 0
    note = status_notes([{**result, "run_dir": "d"}])
    assert "the training loss was NaN or infinite in 3 steps; its timings stand, its accuracy does not." in note


def ranks_alive(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (a job's ranks directory)."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                alive.append(int(proc.name))
        except OSError:
            pass
    return alive


def ddp_sweep_training(cli):
    """A sweep of one long DDP job, once torchrun and its two ranks train: (the sweep, its ranks' folder)."""
    proc = cli.start("-m", "devices=2", "strategy=ddp", "epochs=100", *SMOKE)
    wait_for(lambda: list(cli.outputs.rglob("ranks/config.yaml")))
    (config,) = cli.outputs.rglob("ranks/config.yaml")
    wait_for(lambda: len(ranks_alive(str(config.parent))) >= 3)  # torchrun and its two ranks
    time.sleep(3.0)  # training
    return proc, config.parent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_killing_the_sweep_leaves_no_rank_running(cli):
    proc, ranks = ddp_sweep_training(cli)
    os.kill(proc.pid, signal.SIGKILL)  # the main process alone: nothing can forward a SIGKILL
    killed = time.monotonic()
    proc.wait(timeout=30)
    while ranks_alive(str(ranks)) and time.monotonic() < killed + 60:
        time.sleep(0.2)
    print(f"ranks gone {time.monotonic() - killed:.1f} s after the sweep was killed")
    # within seconds: not whenever a rank next writes to the pipe its dead parent read from
    assert ranks_alive(str(ranks)) == [] and time.monotonic() - killed < 20


def test_sigterm_to_a_ddp_sweep_ends_in_bsbenchs_line_without_torchruns_traceback(cli):
    proc, _ = ddp_sweep_training(cli)
    os.killpg(proc.pid, signal.SIGTERM)  # as `timeout` or a scheduler sends it: to the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "SignalException" not in err, err
    (r,) = cli.results()
    assert r["status"] == "interrupted" and "SIGTERM" in r["error"]
    (log,) = cli.outputs.rglob("bsbench.log")
    assert "SignalException" in log.read_text()  # what torchrun said is kept, in the job's log


def test_a_rank_killed_by_a_signal_is_named_with_its_signal(cli):
    proc = cli("devices=2", "strategy=ddp", *SMOKE, "+callbacks.fault._target_=faults.KillRank",
               "+callbacks.fault.rank=1", timeout=180)
    assert proc.returncode == 1
    (r,) = cli.results()
    assert r["status"] == "failed" and r["error_type"] == "RankKilled" and r["failed_rank"] == 1
    assert r["error"].startswith("rank 1 was killed by signal 9 (SIGKILL)")


def test_nonfinite_losses_cost_no_sync_per_step():
    # counted with device tensors: the host reads the count once, at the end
    from bsbench.training.health import LossWatch

    watch = LossWatch()
    for loss in (torch.tensor(1.0), torch.tensor(float("inf")), torch.tensor(float("nan"))):
        watch.on_train_batch_end(None, None, {"loss": loss}, None, 0)
    assert isinstance(watch._count, torch.Tensor) and watch.nonfinite_steps == 0  # nothing read yet


def test_a_killed_rank_is_the_cause_even_where_an_echo_was_observed_first():
    from bsbench.job.ranks import _killed_rank

    def failure(rank, code):
        return (f"  time      : 2026-11-27_19:20:0{rank}\n  host      : vm\n  rank      : {rank} (local_rank: {rank})\n"
                f"  exitcode  : {code} (pid: 10{rank})\n  error_file: <N/A>\n")

    # rank 0 failed in a broken collective and torchrun observed it first; rank 1 was SIGKILLed
    echo_first = f"Failures:\n[1]:\n{failure(1, -9)}---\nRoot Cause (first observed failure):\n[0]:\n{failure(0, 1)}"
    assert _killed_rank(echo_first) == (1, 9)
    assert _killed_rank(f"Root Cause (first observed failure):\n[0]:\n{failure(1, -11)}") == (1, 11)
    # a rank that failed by itself, the other stopped by torchrun (SIGTERM): no rank was killed
    stopped = f"Failures:\n[1]:\n{failure(1, -15)}---\nRoot Cause (first observed failure):\n[0]:\n{failure(0, 1)}"
    assert _killed_rank(stopped) is None
