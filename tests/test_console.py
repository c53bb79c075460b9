"""A newcomer's terminal (issue 15): quiet jobs with progress, bsbench's own --help, optional parts
named before a sweep starts, the loggers ML teams use (offline), and plots that say what they show."""

import logging
import time
from pathlib import Path

import pytest

import bsbench.job.validate
from bsbench.core.errors import UserError
from bsbench.job.console import ConsoleFilter, progress
from bsbench.job.hooks import check
from bsbench.report.plots import figure
from conftest import SMOKE, composed


def test_progress_estimates_the_time_left_from_the_jobs_done():
    assert progress(1, 4, started=100.0, now=130.0) == ("job 1 of 4", "0:30 elapsed, about 1:30 left")
    assert progress(4, 4, started=0.0, now=3725.0) == ("job 4 of 4", "1:02:05 elapsed")


def record(name, level, message, **extra):
    r = logging.LogRecord(name, level, __file__, 1, message, None, None)
    r.__dict__.update(extra)
    return r


def test_a_sweeps_elapsed_clock_starts_with_its_process(tmp_path, monkeypatch):
    from bsbench.core import process
    from bsbench.job.console import PROGRESS_ENV, follow_sweep, sweep_progress

    monkeypatch.setattr(process, "STARTED_AT", time.time() - 20)  # the imports and the planning took 20 s
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    follow_sweep(tmp_path, 4)
    for name in ("hydra", "bsbench"):  # the sweep.log it opened is this test's only
        logging.getLogger(name).removeHandler(bsbench.job.console._sweep_log)
    _, clock = sweep_progress(0)
    assert clock.startswith("0:2")  # 0:20 (or 0:21), not 0:00: the user waited from the command's start


def test_the_terminal_gets_bsbench_lines_and_actionable_warnings_once():
    quiet, verbose = ConsoleFilter(), ConsoleFilter(verbose=True)
    banner = record("lightning.pytorch.utilities.rank_zero", logging.INFO, "GPU available: False, used: False")
    assert not quiet.filter(banner) and verbose.filter(banner)
    assert quiet.filter(record("bsbench", logging.INFO, "job 1 of 3: ..."))
    assert not quiet.filter(record("bsbench", logging.ERROR, "Traceback ...", bsbench_log_only=True))
    deprecated = record("py.warnings", logging.WARNING, "x.py:1: FutureWarning: `f` is deprecated", category=FutureWarning)
    assert not quiet.filter(deprecated)
    actionable = record("py.warnings", logging.WARNING, "x.py:1: UserWarning: check your data", category=UserWarning)
    assert quiet.filter(actionable) and not quiet.filter(actionable)  # once
    assert not ConsoleFilter().filter(actionable)  # once per process: the next job's filter knows it too
    # DDP tests on every rank by design (inference_world_size): Lightning's advice against it is the log's
    sampler = ("data_connector.py:217: PossibleUserWarning: Using `DistributedSampler` with the dataloaders. During "
               "`trainer.test()`, it is recommended to use `Trainer(devices=1, num_nodes=1)` to ensure each sample/batch "
               "gets evaluated exactly once.")
    assert not quiet.filter(record("py.warnings", logging.WARNING, sampler, category=UserWarning))


def test_verbose_shows_what_lightning_says(cli):
    proc = cli(*SMOKE, "mode=throughput", "timing.warmup_steps=1", "trainer.max_steps=3", "verbose=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GPU available" in proc.stdout and "`Trainer.fit` stopped" in proc.stdout
    (r,) = cli.results()
    assert proc.stdout.rstrip().endswith(f"result in {r['run_dir']}")


def test_help_is_bsbench_s_own(cli):
    proc = cli("--help")
    assert proc.returncode == 0 and "powered by Hydra" not in proc.stdout
    text = proc.stdout
    for words in ("do batch sizes have to be powers of two", "Modes (mode=...)", "throughput", "compare", "find_max",
                  "inference", "profile", "tune", "bsbench-report", "outputs/multirun/<date>/<time>/", "resume=",
                  "verbose=true"):
        assert words in text, words
    examples = text.split("Examples:")[1].split("Config groups")[0]
    assert sum(line.strip().startswith("python -m bsbench") for line in examples.splitlines()) == 12
    assert "mode: compare, find_max, inference, profile, throughput, train, tune" in text  # Hydra fills in the config groups


@pytest.mark.parametrize("overrides, missing, named", [
    (["logger=tensorboard"], ("tensorboard", "tensorboardX"), 'logger=tensorboard needs the tensorboard package, which '
                                                              'is not installed; pip install "bsbench[tensorboard]"'),
    (["logger=mlflow"], ("mlflow",), 'logger=mlflow needs the mlflow package, which is not installed; pip install '
                                     '"bsbench[mlflow]"'),
    (["logger=wandb"], ("wandb",), 'logger=wandb needs the wandb package, which is not installed; pip install '
                                   '"bsbench[wandb]"'),
    (["telemetry.required=true"], ("pynvml",), 'telemetry.required=true needs NVML, which is not installed; pip install '
                                               '"bsbench[nvml]"'),
])
def test_a_missing_optional_package_is_named_with_its_install_before_anything_runs(monkeypatch, overrides, missing,
                                                                                   named):
    real = bsbench.job.validate.importlib.util.find_spec
    monkeypatch.setattr(bsbench.job.validate.importlib.util, "find_spec",
                        lambda name, *a: None if name in missing else real(name, *a))
    with pytest.raises(UserError) as err:
        check(composed(*SMOKE, *overrides), sweep=False)
    assert str(err.value).startswith(named) and "\n" not in str(err.value)


def test_without_nvml_telemetry_is_null_unless_required(tmp_path):
    from bsbench.job.run import attempt
    from conftest import job_config

    fast = ["mode=throughput", "timing.warmup_steps=1", "trainer.max_steps=2"]
    ok = attempt(job_config(tmp_path, *fast))
    assert ok["status"] == "ok" and ok["telemetry_samples"] == 0 and ok["gpu_temp_c_mean"] is None
    required = attempt(job_config(tmp_path, *fast, "telemetry.required=true"))
    assert required["status"] == "failed" and required["error"].startswith("telemetry.required=true but NVML")


@pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) for m in ("tensorboard", "tensorboardX")),
                    reason="tensorboard is installed here: the command cannot show its absence")
def test_a_logger_without_its_package_stops_the_sweep_in_one_line(cli):
    proc = cli("-m", "batch_size=30,31", *SMOKE, "logger=tensorboard")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("bsbench: error: logger=tensorboard needs")
    assert len(proc.stderr.strip().splitlines()) == 1 and not cli.outputs.exists()


def test_mlflow_logs_into_a_local_store_offline(cli, monkeypatch):
    pytest.importorskip("mlflow")
    proc = cli(*SMOKE, "logger=mlflow", "batch_size=30")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as for `mlflow ui` on this store (README)
    client = MlflowClient(tracking_uri=f"file:{cli.outputs / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("bsbench").experiment_id])
    assert "val_acc" in run.data.metrics
    assert run.info.run_name == "accelerator=cpu,batch_size=30,experiment=smoke,logger=mlflow"  # by its overrides


def test_wandb_logs_offline_into_the_run_directory(cli):
    pytest.importorskip("wandb")
    proc = cli(*SMOKE, "logger=wandb")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = cli.results()
    (run,) = (Path(r["run_dir"]) / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))  # the run's data, for `wandb sync`


def test_plots_say_what_they_show_and_start_at_zero():
    def row(batch_size, values, **extra):
        return {"batch_size": batch_size, "setting": "", "samples_per_s_values": values, "model": "m",
                "image_size": 64, "device_name": "NVIDIA H100 80GB HBM3", "precision_used": "bf16-mixed",
                "mode": "throughput", **extra}

    single = figure([row(31, [30.0]), row(32, [35.0])], "samples_per_s_values", "training throughput (samples/s)")
    ax = single.axes[0]
    assert ax.get_ylim()[0] == 0
    assert ax.get_title().replace("\n", " ") == ("training throughput: m, 64 px, NVIDIA H100 80GB HBM3, bf16-mixed, "
                                                  "mode=throughput")
    notes = " ".join(t.get_text() for t in single.texts)  # the caption, under the axes
    assert "no interval" in notes and "error bars" not in notes
    repeated = figure([row(31, [30.0, 31.0, 29.0]), row(32, [35.0, 34.0])], "samples_per_s_values", "samples/s")
    ax = repeated.axes[0]
    assert "error bars: 95% interval" in " ".join(t.get_text() for t in repeated.texts)
    points = [line for line in ax.lines if line.get_linestyle() == "None" and len(line.get_xdata()) == 5]
    assert points, "every run is drawn beside the means"


def test_a_log_file_on_a_full_disk_says_so_once_without_a_traceback(capsys):
    # /dev/full: every write fails with ENOSPC, as on a full disk
    from bsbench.job.console import LogFile

    handler = LogFile("/dev/full")
    logger = logging.getLogger("bsbench.test.full")
    logger.addHandler(handler)
    try:
        for k in range(3):
            logger.warning("line %d", k)
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err == "bsbench: warning: could not write /dev/full (No space left on device); nothing more goes into " \
                  "that log.\n"
    # every log file of bsbench's is one: a job's (Hydra's config), a rank's, the sweep's
    handlers = composed("hydra/job_logging=bsbench").hydra.job_logging.handlers
    assert handlers.file["class"] == "bsbench.job.console.LogFile"
