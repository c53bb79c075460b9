"""The config a user composes: every Trainer flag reachable and typed, modes and presets as config,
and mistakes stopped with one sentence before anything is loaded or any directory is made."""

import dataclasses
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf

from bsbench.core.config import Config, Trainer, typed
from bsbench.core.errors import UserError
from bsbench.job.app import check_group_choices
from bsbench.job.hooks import check
from bsbench.modes import MODES
from conftest import SMOKE, composed

ROOT = Path(__file__).resolve().parent.parent
# Trainer arguments that bsbench sets from its own top-level keys or owns.
OWNED = {"accelerator", "strategy", "devices", "precision", "logger", "callbacks", "benchmark"}


def test_every_other_trainer_argument_is_a_trainer_key_with_a_type():
    trainer_args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    assert set(composed().trainer) == trainer_args - OWNED
    assert {f.name for f in dataclasses.fields(Trainer)} == trainer_args - OWNED


def test_every_key_of_every_mode_and_preset_has_a_type():
    declared = set(OmegaConf.to_container(OmegaConf.structured(Config)))
    presets = ("smoke", "b3_small", "b3_large", "b3_ddp", "b3_models")
    for choice in [f"mode={m}" for m in MODES] + [f"experiment={e}" for e in presets]:
        cfg = composed(choice)
        assert set(cfg) - {"hydra"} <= declared, choice
        typed(cfg)  # no value of a wrong type, no undeclared nested key


def test_the_modes_are_the_config_groups_options():
    assert sorted(p.stem for p in (ROOT / "conf" / "mode").glob("*.yaml")) == sorted(MODES)


def test_a_mode_sets_the_trainer_it_needs_visibly_and_a_preset_does_not_cap_it():
    cfg = composed("experiment=smoke", "mode=throughput")
    assert cfg.mode == "throughput" and not cfg.logger
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.trainer.limit_val_batches) == (-1, 60, 0)
    train = composed("experiment=smoke")
    assert (train.mode, train.trainer.max_epochs, train.trainer.max_steps) == ("train", 1, -1)


def test_boolean_spellings_mean_what_they_say():
    cfg = typed(composed("channels_last=off", "compile=no", "cudnn_benchmark=yes", "model.fused_adam=on"))
    assert (cfg.channels_last, cfg.compile, cfg.cudnn_benchmark, cfg.model.fused_adam) == (False, False, True, True)


@pytest.mark.parametrize("override, message", [
    ("compile=maybe", "compile=maybe is not true or false; use compile=true or compile=false."),
    ("seed=abc", "seed=abc is not an integer; use e.g. seed=123."),
    ("epochs=1.5", "epochs=1.5 is not an integer; use e.g. epochs=10."),
    ("model.lr=fast", "model.lr=fast is not a number; use e.g. model.lr=0.0005."),
    ("data.resize_size=big", "data.resize_size=big is not an integer; use an integer or data.resize_size=null."),
    ("+trainer.max_stepz=3", "trainer.max_stepz is not a bsbench setting;"),
    ("compare.batch_sizes=511", "compare.batch_sizes=511 is not a list; use e.g. compare.batch_sizes=[511,512,513]."),
    ("compare.batch_sizes=[511,a]", "compare.batch_sizes holds a, which is not an integer; use e.g. "
                                    "compare.batch_sizes=[511,512,513]."),
])
def test_a_value_of_the_wrong_type_is_named_with_what_would_work(override, message):
    with pytest.raises(UserError) as err:
        typed(composed(override))
    assert str(err.value).startswith(message)


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
    assert (cfg.mode, cfg.model.train_acc_eval_forward, cfg.model.fused_adam) == ("train", True, False)


def test_loader_workers_default_to_where_the_images_are_resized():
    # the device path's loader only indexes memory: no workers (measured faster); the PIL path: the reference's 3
    assert typed(composed("data=synthetic")).data.num_workers == 0
    assert typed(composed("data.resize_on=cpu")).data.num_workers == 3
    assert typed(composed("data.resize_on=cpu", "data.num_workers=5")).data.num_workers == 5


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
    proc = subprocess.run([sys.executable, "-c", "from bsbench.job.groups import config_dir; print(config_dir())"],
                          cwd=ROOT, capture_output=True, text=True)
    assert Path(proc.stdout.strip()) == ROOT / "conf"


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["batch_size=0"], "batch_size=0"),
        (["batch_size=300"], "batch_size=300"),  # more than smoke's 256 training images
        (["epochs=-1"], "epochs=-1"),
        (["model.lr=-1"], "model.lr=-1"),
        (["data.num_workers=-1"], "data.num_workers=-1"),
        (["model.num_classes=5"], "model.num_classes=5"),
        (["+callbacks.x._target_=no.such.Class"], "callbacks.x._target_=no.such.Class"),
        (["+callbacks.x=3"], "callbacks.x=3"),
        (["precision=17"], "precision=17"),
        (["devices=0"], "devices=0"),
        (["accelerator=gpu"], "accelerator=gpu"),
        (["model.arch=notanet"], "model.arch=notanet"),
        (["data.name=imagenet"], "data=imagenet"),
        (["data.val_size=320"], "data.val_size=320"),
        (["trainer.max_steps=0"], "trainer.max_steps=0"),
        (["strategy=dpp"], "strategy=dpp"),
        (["mode=throughput", "trainer.max_steps=5", "timing.warmup_steps=5"], "trainer.max_steps=5"),
        (["mode=find_max", "devices=2"], "mode=find_max"),
        (["mode=find_max", "trainer.max_steps=-1"], "trainer.max_steps=-1"),
        (["mode=inference", "devices=2"], "mode=inference times forward passes on one device"),
        (["mode=inference", "inference.batches=0"], "inference.batches=0"),
        (["mode=profile", "devices=2"], "mode=profile profiles training steps on one device"),
        (["mode=profile", "trainer.max_steps=10"], "trainer.max_steps=10 ends training before the last profile"),
        (["mode=profile", "profile.active=0"], "profile.active=0"),
        (["mode=profile", "trainer.default_root_dir=null"], "trainer.default_root_dir, which is null"),
        (["model.arch=vit_b_16", "data.image_size=40"], "data.image_size=40"),  # not a multiple of its 16 px patches
        (["data.resize_on=gpu"], "data.resize_on=gpu"),
        (["matmul_precision=low"], "matmul_precision=low"),
        (["mfu.peak_tflops=0"], "mfu.peak_tflops=0"),
        (["data.resize_size=20"], "data.resize_size=20"),
        (["model.arch=alexnet"], "data.image_size=32"),  # alexnet needs at least 63 px
        (["output_root=/dev/null/outputs"], "output_root=/dev/null/outputs"),
    ],
)
def test_settings_that_cannot_work_are_named_in_one_sentence(overrides, named):
    with pytest.raises(UserError) as err:
        check(composed(*SMOKE, *overrides), sweep=False)
    message = str(err.value)
    assert named in message and "use" in message and message.endswith(".") and "\n" not in message


# Every setting of the schema (docs/configuration.md): a value outside its range with the start of the one line
# that refuses it, or, in ANY_VALUE, why every value of its type works. A key added to the schema without a row
# fails test_every_setting_has_a_row_of_its_range.
OUT_OF_RANGE = {
    "batch_size": (["batch_size=0"], "batch_size=0 is not a positive integer"),
    "precision": (["precision=17"], "precision=17 is not a Lightning precision"),
    "accelerator": (["accelerator=tpux"], "accelerator=tpux is not a Lightning accelerator"),
    "devices": (["devices=0"], "devices=0 is not a positive integer"),
    "strategy": (["strategy=dpp"], "strategy=dpp is not a Lightning strategy"),
    "epochs": (["epochs=0"], "epochs=0 is not a positive integer"),
    "seed": (["seed=-1"], "seed=-1 is not between 0 and 4294967295"),
    "mode": (["mode=fastest"], "mode=fastest is not a bsbench mode option"),
    "matmul_precision": (["matmul_precision=low"], "matmul_precision=low is not a float32 matmul precision"),
    "repeats": (["repeats=0"], "repeats=0 is not a positive integer"),
    "order": (["order=random"], "order=random is not one of: interleaved, shuffled, grid"),
    "order_seed": (["order_seed=-1"], "order_seed=-1 is not between 0 and 4294967295"),
    "cooldown_s": (["cooldown_s=-1"], "cooldown_s=-1 is not at least 0"),
    "repeat": (["repeat=-1"], "repeat=-1 is not at least 0"),
    "target_ci": (["target_ci=-0.1"], "target_ci=-0.1 is not a relative half-width between 0 and 1"),
    "budget_min": (["budget_min=0"], "budget_min=0 is not greater than 0"),
    "compare.batch_sizes": (["compare.batch_sizes=[511,0]"], "compare.batch_sizes holds 0, which is not a positive"),
    "compare.settings": (["compare.settings=[16,32]"], "compare.settings[0]=16 is not a setting"),
    "compare.rounds": (["compare.rounds=1"], "compare.rounds=1 is not at least 2"),
    "compare.warmup_steps": (["compare.warmup_steps=-1"], "compare.warmup_steps=-1 is not at least 0"),
    "compare.steps": (["compare.steps=0"], "compare.steps=0 is not a positive integer"),
    "timing.warmup_steps": (["timing.warmup_steps=-1"], "timing.warmup_steps=-1 is not at least 0"),
    "telemetry.interval_s": (["telemetry.interval_s=0"], "telemetry.interval_s=0 is not greater than 0"),
    "find_max.max_val": (["find_max.max_val=0"], "find_max.max_val=0 is not a positive integer"),
    "find_max.max_trials": (["find_max.max_trials=0"], "find_max.max_trials=0 is not a positive integer"),
    "inference.batches": (["inference.batches=0"], "inference.batches=0 is not a positive integer"),
    "tune.max_batch_size": (["tune.max_batch_size=0"], "tune.max_batch_size=0 is not a positive integer"),
    "tune.effective_batch": (["tune.effective_batch=1"], "tune.effective_batch=1 is not at least 2"),
    "ddp.bucket_cap_mb": (["ddp.bucket_cap_mb=0"], "ddp.bucket_cap_mb=0 is not a positive integer"),
    "tune.objective": (["tune.objective=speed"], "tune.objective=speed is not one of: time, energy"),
    "tune.grid_points": (["tune.grid_points=0"], "tune.grid_points=0 is not a positive integer"),
    "profile.warmup": (["profile.warmup=-1"], "profile.warmup=-1 is not at least 0"),
    "profile.active": (["profile.active=0"], "profile.active=0 is not a positive integer"),
    "profile.repeat": (["profile.repeat=0"], "profile.repeat=0 is not a positive integer"),
    "profile.top": (["profile.top=0"], "profile.top=0 is not a positive integer"),
    "mfu.peak_tflops": (["mfu.peak_tflops=0"], "mfu.peak_tflops=0 is not greater than 0"),
    "callbacks": (["+callbacks.x=3"], "callbacks.x=3 names no class"),
    "resume": (["resume=/no/such/folder"], "resume=/no/such/folder is not a folder"),
    "output_root": (["output_root=/dev/null/outputs"], "output_root=/dev/null/outputs is not a writable directory"),
    "data.name": (["data.name=imagenet"], "data=imagenet is not a dataset bsbench knows"),
    "data.root": (["data=cifar10", "data.root=/dev/null/x", "data.download=false"], "data.root=/dev/null/x holds no CIFAR-10"),
    "data.val_size": (["data.val_size=0"], "data.val_size=0 is not a positive integer"),
    "data.split_seed": (["data.split_seed=-1"], "data.split_seed=-1 is not between 0 and 4294967295"),
    "data.image_size": (["data.image_size=0"], "data.image_size=0 is not a positive integer"),
    "data.resize_size": (["data.resize_size=0"], "data.resize_size=0 is not a positive integer"),
    "data.resize_on": (["data.resize_on=gpu"], "data.resize_on=gpu is not a place to resize"),
    "data.num_workers": (["data.num_workers=-1"], "data.num_workers=-1 is not at least 0"),
    "data.num_train_images": (["data.num_train_images=0"], "data.num_train_images=0 is not a positive integer"),
    "data.num_test_images": (["data.num_test_images=0"], "data.num_test_images=0 is not a positive integer"),
    "data.shape": (["data.shape=[3,0,64]"], "data.shape holds 0, which is not a positive integer"),
    "model.arch": (["model.arch=notanet"], "model.arch=notanet is not a torchvision classification model"),
    "model.num_classes": (["model.num_classes=0"], "model.num_classes=0 is not a positive integer"),
    "model.lr": (["model.lr=0"], "model.lr=0 is not greater than 0"),
    "trainer.num_nodes": (["trainer.num_nodes=0"], "trainer.num_nodes=0 is not a positive integer"),
    "trainer.fast_dev_run": (["trainer.fast_dev_run=-1"], "trainer.fast_dev_run=-1 is not true, false or a number"),
    "trainer.max_epochs": (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not -1 or a positive integer"),
    "trainer.min_epochs": (["trainer.min_epochs=-1"], "trainer.min_epochs=-1 is not at least 0"),
    "trainer.max_steps": (["trainer.max_steps=0"], "trainer.max_steps=0 is not -1 or a positive integer"),
    "trainer.min_steps": (["trainer.min_steps=-1"], "trainer.min_steps=-1 is not at least 0"),
    "trainer.max_time": (["trainer.max_time=1h"], "trainer.max_time=1h is not a duration DD:HH:MM:SS"),
    "trainer.limit_train_batches": (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is not a "
                                                                          "fraction from 0.0 to 1.0"),
    "trainer.limit_val_batches": (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches=-1 is not a fraction"),
    "trainer.limit_test_batches": (["trainer.limit_test_batches=2.5"], "trainer.limit_test_batches=2.5 is not a"),
    "trainer.limit_predict_batches": (["trainer.limit_predict_batches=-0.5"], "trainer.limit_predict_batches=-0.5 is"),
    "trainer.overfit_batches": (["trainer.overfit_batches=-1"], "trainer.overfit_batches=-1 is not a fraction"),
    "trainer.val_check_interval": (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is not a fraction"),
    "trainer.check_val_every_n_epoch": (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 is "
                                                                               "not a positive integer"),
    "trainer.num_sanity_val_steps": (["trainer.num_sanity_val_steps=-2"], "trainer.num_sanity_val_steps=-2 is not -1 "
                                                                          "or at least 0"),
    "trainer.log_every_n_steps": (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1 is not at least 0"),
    "trainer.accumulate_grad_batches": (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is "
                                                                               "not a positive integer"),
    "trainer.gradient_clip_val": (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is not at least 0"),
    "trainer.gradient_clip_algorithm": (["trainer.gradient_clip_algorithm=l2"], "trainer.gradient_clip_algorithm=l2 "
                                                                                "is not one of: norm, value"),
    "trainer.deterministic": (["trainer.deterministic=maybe"], "trainer.deterministic=maybe is not true, false or warn"),
    "trainer.profiler": (["trainer.profiler=fancy"], "trainer.profiler=fancy is not one of: simple, advanced"),
    "trainer.reload_dataloaders_every_n_epochs": (["trainer.reload_dataloaders_every_n_epochs=-1"],
                                                  "trainer.reload_dataloaders_every_n_epochs=-1 is not at least 0"),
    "logger": (["+logger.x=1"], "logger={'x': 1} names no class"),
}
ANY_VALUE = {  # settings every value of whose type works: what they are
    **{key: "true or false" for key in (
        "channels_last", "cudnn_benchmark", "compile", "telemetry.required", "tune.compile", "verbose", "data.download",
        "data.verify", "data.pin_memory", "data.persistent_workers", "model.fused_adam", "model.train_acc_eval_forward",
        "model.log_train_loss", "trainer.enable_checkpointing", "trainer.enable_progress_bar",
        "trainer.enable_model_summary", "trainer.inference_mode", "trainer.use_distributed_sampler",
        "trainer.detect_anomaly", "trainer.barebones", "trainer.sync_batchnorm", "trainer.enable_autolog_hparams",
        "ddp.gradient_as_bucket_view", "ddp.static_graph")},
    "trainer.plugins": "Lightning's own objects or names, which no config can list",
    "trainer.default_root_dir": "any folder; null is refused by the modes that write under it (the row above)",
    "trainer.model_registry": "a name of the user's model registry",
}


def test_every_setting_has_a_row_of_its_range():
    from bsbench.docs import leaves

    keys = {key for key, _, _ in leaves(Config)}
    assert keys == set(OUT_OF_RANGE) | set(ANY_VALUE) and not set(OUT_OF_RANGE) & set(ANY_VALUE)


@pytest.mark.parametrize("key", sorted(OUT_OF_RANGE))
def test_a_value_outside_a_settings_range_is_refused_in_one_line_with_one_that_works(key):
    overrides, named = OUT_OF_RANGE[key]
    if key == "mode":  # a config group: the option is looked for before anything is composed
        with pytest.raises(UserError) as err:
            check_group_choices(overrides)
    else:
        with pytest.raises(UserError) as err:
            check(composed(*SMOKE, *overrides), sweep=False)
    message = str(err.value)
    assert message.startswith(named) and "use" in message and message.endswith(".") and "\n" not in message
    suggested = re.search(rf"use e\.g\. ({re.escape(key)}=\S+?)\.?$", message)
    if suggested:  # the value it suggests is in the setting's range (smoke's tiny data set may refuse it otherwise)
        typed(composed(*SMOKE, *overrides[:-1], suggested.group(1)))


@pytest.mark.parametrize("override", ["repeats=0", "cooldown_s=-1", "target_ci=-0.1", "order=random", "budget_min=-1",
                                      "trainer.accumulate_grad_batches=0"])
def test_a_sweeps_own_settings_are_refused_before_it_is_planned(override):
    with pytest.raises(UserError, match=f"^{re.escape(override.split('=')[0])}="):
        check(composed(*SMOKE, override), sweep=True)


def test_warmup_steps_that_leave_no_timed_step_are_refused_where_the_run_can_be_counted():
    # smoke: 256 images in batches of 32, one epoch: 8 steps
    with pytest.raises(UserError, match=r"^timing.warmup_steps=99999999999999999999 leaves no timed step of the 8 "
                                        r"training steps this run makes, .*use at most timing.warmup_steps=7"):
        check(composed(*SMOKE, "timing.warmup_steps=99999999999999999999"), sweep=False)
    check(composed(*SMOKE, "timing.warmup_steps=7"), sweep=False)
    with pytest.raises(UserError, match=r"no timed step of the 16 training steps"):  # two epochs
        check(composed(*SMOKE, "epochs=2", "timing.warmup_steps=16"), sweep=False)
    with pytest.raises(UserError, match=r"no timed step of the 3 training steps"):  # Lightning's caps, counted
        check(composed(*SMOKE, "trainer.limit_train_batches=3", "timing.warmup_steps=3"), sweep=False)


def test_a_group_option_that_does_not_exist_is_named_with_those_that_do():
    with pytest.raises(UserError, match=r"^mode=fastest is not a bsbench mode option; use one of: compare, find_max, "
                                        r"inference, profile, throughput, train, tune\.$"):
        check_group_choices(["-m", "mode=train,fastest"])
    check_group_choices(["mode=throughput", "data=synthetic", "+callbacks.a._target_=x", "hydra/launcher=slurm"])


@pytest.mark.parametrize("overrides, named", [
    (["seed=abc"], "seed=abc is not an integer"),  # the schema's refusal
    (["model.lr=-1"], "model.lr=-1 is not greater than 0"),  # a check's
    (["mode=fastest"], "mode=fastest is not a bsbench mode option"),  # a config group's
    (["+callbacks.x._target_=no.such.Class"], "callbacks.x._target_=no.such.Class cannot be imported"),
    (["output_root=/dev/null/outputs"], "output_root=/dev/null/outputs is not a writable directory"),
])
def test_bad_overrides_stop_with_one_line_exit_2_and_no_directory(cli, overrides, named):
    proc = cli(*SMOKE[:1], *overrides)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"bsbench: error: {named}"), proc.stderr
    assert not cli.outputs.exists()  # no results.json, no directory


def test_a_swept_value_of_the_wrong_type_stops_the_sweep_before_its_directory_exists(cli):
    proc = cli("-m", "compile=false,maybe", *SMOKE)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "bsbench: error: compile=maybe is not true or false; use compile=true or compile=false."
    assert not cli.outputs.exists()


def test_a_sweep_with_one_bad_value_runs_no_job_at_all(cli):
    proc = cli("-m", "batch_size=32,0", *SMOKE)
    assert proc.returncode == 2
    assert "batch_size=0 is not a positive integer" in proc.stderr and "Traceback" not in proc.stderr
    assert not cli.outputs.exists()


def test_an_unknown_key_is_one_line_with_the_closest_setting_not_hydras_advice(cli):
    proc = cli(*SMOKE, "batchsize=32")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "bsbench: error: batchsize is not a bsbench setting; did you mean batch_size?"
    assert not cli.outputs.exists()


def test_a_cpu_input_path_that_would_fill_shared_memory_is_refused(monkeypatch, tmp_path):
    import bsbench.job.validate

    docker_default = shutil._ntuple_diskusage(64 * 2**20, 0, 64 * 2**20)  # 64 MiB free
    monkeypatch.setattr(bsbench.job.validate, "SHM", str(tmp_path))
    monkeypatch.setattr(bsbench.job.validate.shutil, "disk_usage", lambda path: docker_default)
    reference = [*SMOKE, "data.image_size=224", "batch_size=256", "data.num_workers=3", "timing.warmup_steps=0"]
    with pytest.raises(UserError, match=r"^data.resize_on=cpu with data.num_workers=3 keeps about 882 MiB of batches "
                                        r"in .*, which has 64 MiB free .*use data.resize_on=device"):
        check(composed(*reference, "data.resize_on=cpu"), sweep=False)
    check(composed(*reference, "data.resize_on=device"), sweep=False)  # workers hand over 32 px uint8 images
    check(composed(*reference, "data.resize_on=cpu", "data.num_workers=0"), sweep=False)  # no workers, no /dev/shm


def test_the_default_precision_runs_as_named_on_each_accelerator():
    # 16-mixed (the published experiment's) where a GPU may run it; on a CPU, where Lightning would run 16-mixed
    # as bf16-mixed, 32-true; a precision the user sets is theirs
    from bsbench.job.rounds import precision_that_runs

    assert typed(composed()).precision == "16-mixed"
    cpu = typed(composed("accelerator=cpu"))
    assert cpu.precision == "32-true" and precision_that_runs(cpu) == "32-true"
    chosen = typed(composed("accelerator=cpu", "precision=16-mixed"))
    assert chosen.precision == "16-mixed" and precision_that_runs(chosen) == "bf16-mixed"  # what a tune starts from


def test_a_precision_typo_lists_each_precision_lightning_has_once():
    from bsbench.core.errors import UserError
    from bsbench.job.validate import validate

    with pytest.raises(UserError) as err:
        validate(typed(composed(*SMOKE, "precision=16-mixd")))
    named = str(err.value).split("use one of: ", 1)[1].rstrip(".").split(", ")
    assert "16-mixed" in named and "bf16-mixed" in named and len(named) == len(set(named))
