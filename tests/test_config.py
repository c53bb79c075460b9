"""The config a user composes: every Trainer flag reachable, presets that reproduce the published
tables, and mistakes stopped with one sentence before anything is loaded."""

import inspect
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import SMOKE, composed

ROOT = Path(__file__).resolve().parent.parent
# Trainer arguments that bsbench sets from its own top-level keys or owns.
OWNED = {"accelerator", "strategy", "devices", "precision", "max_epochs", "logger", "callbacks", "benchmark"}


def test_every_other_trainer_argument_is_a_trainer_key():
    trainer_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    assert set(composed().trainer) == trainer_args - OWNED


@pytest.mark.parametrize(
    "preset, batch_sizes, devices, strategy",
    [
        ("b3_small", "100,127,128,129,156", 1, "auto"),
        ("b3_large", "511,512,513", 1, "auto"),
        ("b3_ddp", "255,256,257", 4, "ddp"),
    ],
)
def test_published_tables_are_presets_with_the_reference_settings(preset, batch_sizes, devices, strategy):
    cfg = composed(f"experiment={preset}")
    assert cfg.hydra.sweeper.params.batch_size == batch_sizes
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert (cfg.devices, cfg.strategy, cfg.precision, cfg.epochs) == (devices, strategy, "16-mixed", 10)
    assert (cfg.model.arch, cfg.data.name, cfg.data.image_size) == ("mobilenet_v3_large", "cifar10", 224)
    assert (cfg.model.lr, cfg.data.val_size, cfg.data.num_workers, cfg.data.resize_on) == (5e-4, 5000, 3, "cpu")


def test_command_line_choices_win_over_a_preset():
    cfg = composed("experiment=smoke", "logger=csv", "model=mobilenet_v3_large")
    assert cfg.logger._target_.endswith("CSVLogger") and cfg.model.arch == "mobilenet_v3_large"


def test_configs_are_found_from_any_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bsbench", "--cfg", "job", "experiment=smoke"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v3_small" in proc.stdout


def test_console_script_runs_the_same_app(tmp_path):
    script = Path(sys.executable).with_name("bsbench")
    proc = subprocess.run([str(script), "--cfg", "job", "experiment=smoke"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "mobilenet_v3_small" in proc.stdout


def test_running_from_the_project_root_uses_its_conf_directory():
    proc = subprocess.run([sys.executable, "-c", "from bsbench.app import config_dir; print(config_dir())"],
                          cwd=ROOT, capture_output=True, text=True)
    assert Path(proc.stdout.strip()) == ROOT / "conf"


@pytest.mark.parametrize(
    "override, named",
    [
        ("batch_size=0", "batch_size=0"),
        ("batch_size=abc", "batch_size=abc"),
        ("batch_size=300", "batch_size=300"),  # more than smoke's 256 training images
        ("epochs=-1", "epochs=-1"),
        ("precision=17", "precision=17"),
        ("devices=0", "devices=0"),
        ("accelerator=gpu", "accelerator=gpu"),
        ("model.arch=notanet", "model.arch=notanet"),
        ("data.name=imagenet", "data=imagenet"),
        ("data.val_size=320", "data.val_size=320"),
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("strategy=dpp", "strategy=dpp"),
        ("mode=fastest", "mode=fastest"),
        ("data.resize_on=gpu", "data.resize_on=gpu"),
        ("matmul_precision=low", "matmul_precision=low"),
        ("throughput.steps=0", "throughput.steps=0"),
        ("data.resize_size=20", "data.resize_size=20"),
        ("model.arch=alexnet", "data.image_size=32"),  # alexnet needs at least 63 px
        ("output_root=/dev/null/outputs", "output_root=/dev/null/outputs"),
    ],
)
def test_bad_overrides_stop_with_one_sentence_and_no_result(cli, override, named):
    proc = cli(*SMOKE[:1], override)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bsbench: error:") and named in lines[0], proc.stderr
    assert lines[0].endswith(".") and "use" in lines[0]
    assert cli.results() == []


def test_a_sweep_with_one_bad_value_runs_no_job_at_all(cli):
    proc = cli("-m", "batch_size=32,0", *SMOKE)
    assert proc.returncode == 2
    assert "batch_size=0 is not a positive integer" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(cli.outputs.rglob("results.json"))
    assert not list(cli.outputs.glob("multirun/*/*/0"))


def test_unknown_keys_keep_hydras_own_error(cli):
    proc = cli(*SMOKE, "batchsize=32")
    assert proc.returncode == 1
    assert "Could not override 'batchsize'" in proc.stderr
