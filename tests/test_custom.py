"""Your own model and data: a LightningModule and LightningDataModule of a user's package (tests/helpers/toy,
reached through PYTHONPATH as a user's package would be) in every mode, under DDP, on data=synthetic;
timm classifiers by name; and the mistakes a user can make with them, each one line before any job runs."""

import json

import pytest
import torch

from conftest import HELPERS, SMOKE, job_config

TOY = ["model=custom", "model._target_=toy.TinyNet", "data=custom", "data._target_=toy.TinyData"]


@pytest.fixture
def toy(monkeypatch):
    """The user's package importable in this process too (in-process checks)."""
    monkeypatch.syspath_prepend(str(HELPERS))


def ok_results(cli) -> list[dict]:
    results = cli.results()
    assert results and all(r["status"] == "ok" for r in results), [(r["status"], r.get("error")) for r in results]
    return results


def test_every_mode_runs_a_users_module_and_datamodule_from_the_command_line(cli):
    # one sweep over the modes, in one process: the user's classes are imported and built while it is planned
    proc = cli("-m", *SMOKE, *TOY, "mode=train,throughput,compare,find_max,inference,profile",
               "+data.samples=300", "trainer.max_steps=12", "compare.batch_sizes=[31,32]", "compare.rounds=2",
               "target_ci=null", "find_max.max_val=64", "inference.batches=3", "profile.active=2", "profile.warmup=1")
    assert proc.returncode == 0, proc.stderr
    by_mode = {}
    for r in ok_results(cli):
        by_mode.setdefault(r["mode"], []).append(r)
    assert sorted(by_mode) == ["compare", "find_max", "inference", "profile", "throughput", "train"]
    for r in (r for rs in by_mode.values() for r in rs):
        assert r["model"] == "toy.TinyNet" and r["data"] == "toy.TinyData"
        assert r["config"]["model"]["_target_"] == "toy.TinyNet" and r["image_size"] is None  # not bsbench's images
    train = by_mode["train"][0]
    # 300 samples, 120 held out: 180 train in batches of 32, the last one short (20): counted as they ran
    assert train["train_samples"] == 180 and train["test_samples"] == 60
    assert train["train_samples_per_s"] > 0 and train["inference_samples_per_s"] > 0
    # FLOPs from the user's own training_step, on the shapes of the first batch its datamodule handed over
    assert train["train_flops_per_sample"] > 0 and train["flops_error"] is None
    assert sorted(r["batch_size"] for r in by_mode["compare"]) == [31, 32]
    assert all(len(r["round_samples_per_s"]) == 2 for r in by_mode["compare"])
    assert by_mode["find_max"][0]["max_batch_size"] == 64
    assert by_mode["inference"][0]["inference_batches"] == 3
    assert by_mode["profile"][0]["profile_top"]


def test_ddp_on_two_cpu_ranks_imports_the_users_package_on_every_rank(cli):
    proc = cli(*SMOKE, *TOY, "mode=throughput", "devices=2", "strategy=ddp", "+data.samples=400",
               "trainer.max_steps=5", "timing.warmup_steps=1", "batch_size=16")
    assert proc.returncode == 0, proc.stderr
    (r,) = ok_results(cli)
    assert r["world_size"] == 2 and r["global_batch_size"] == 32
    # 5 steps of 16 on each of the two ranks
    assert r["train_samples"] == 5 * 16 * 2 and r["timed_steps"] == 4


def test_tune_on_synthetic_inputs_shaped_like_example_input_array_says_fused_adam_is_not_its_knob(cli):
    proc = cli(*SMOKE, "model=custom", "model._target_=toy.TinyNet", "data=synthetic", "mode=tune",
               "budget_min=0.25", "tune.max_batch_size=32")
    assert proc.returncode == 0, proc.stderr
    results = ok_results(cli)
    knobs = [r for r in results if r.get("tune_stage") == "knobs"]
    assert knobs and not any("fused" in json.dumps(r["compare_setting"]) for r in knobs)
    assert not any("model.fused_adam" in json.dumps(r.get("tune_best", {})) for r in results)
    assert not any(r.get("fused_adam") for r in results)
    assert all(r["image_size"] is None for r in knobs)  # inputs shaped like TinyNet's example, not 32 px images
    (tune_md,) = cli.outputs.rglob("tune.md")
    text = tune_md.read_text()
    assert "Fused Adam: not tried" in text and "model.fused_adam=" not in text


def test_a_module_and_datamodule_that_keep_no_batch_size_end_in_one_line_before_any_job(cli):
    proc = cli("-m", *SMOKE, "model=custom", "model._target_=toy.TinyNet", "data=custom",
               "data._target_=toy.NoBatchSize", "batch_size=8,16")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "keep no batch size" in lines[0] and "toy.NoBatchSize" in lines[0], proc.stderr
    assert not cli.outputs.exists() or not list(cli.outputs.rglob("results.json"))


@pytest.mark.parametrize("overrides, words", [
    (["model._target_=toy.Missing"], "model._target_=toy.Missing cannot be imported"),
    (["model._target_=no_such_package.Net"], "No module named 'no_such_package'"),
    (["model._target_=toy.TinyData"], "not a LightningModule"),
    (["model._target_=toy.TinyNet", "data=custom", "data._target_=toy.NotADataModule"], "not a LightningDataModule"),
    (["model._target_=toy.TinyNet", "data=custom", "data._target_=toy.BadBatch"],
     "data._target_=toy.BadBatch could not be built (RuntimeError: cannot reach the data server)"),
    (["model._target_=toy.TinyNet", "+model.depth=3"], "unexpected keyword argument 'depth'"),
    (["model._target_=toy.TinyNet", "data=custom", "data._target_=toy.TinyData", "+data.batch_size=4"],
     "use batch_size=4 instead of data.batch_size"),
    (["model._target_=toy.TinyNetNoExample"], "outputs 7 classes"),
    ([], "model._target_ is not set"),
])
def test_mistakes_with_a_users_classes_are_one_sentence_naming_the_key(toy, tmp_path, overrides, words):
    from bsbench.core.errors import UserError
    from bsbench.job.validate import validate

    cfg = job_config(tmp_path, "model=custom", *overrides)
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_constructor_arguments_are_the_users_keys_and_bsbenchs_only_where_named(toy, tmp_path):
    from bsbench.training.parts import make_datamodule, make_module

    # experiment=smoke's data keys reach TinyData only where its constructor names them (image_size);
    # mode=throughput's model.log_train_loss never reaches TinyNet
    cfg = job_config(tmp_path, *TOY, "mode=throughput", "+model.width=4", "+data.samples=60", "batch_size=12")
    module, datamodule = make_module(cfg), make_datamodule(cfg)
    assert module.hparams.width == 4 and "log_train_loss" not in module.hparams
    assert (datamodule.batch_size, datamodule.samples, datamodule.image_size) == (12, 60, 32)


def test_the_batch_size_is_set_where_lightnings_finder_sets_it(toy, tmp_path):
    from bsbench.job.build import build

    # TokenData keeps it as a hyperparameter (save_hyperparameters), TinyData as an attribute
    built = build(job_config(tmp_path, "model=custom", "model._target_=toy.TokenNet", "data=custom",
                             "data._target_=toy.TokenData", "batch_size=6"))
    assert built.datamodule.hparams.batch_size == 6
    built.datamodule.setup("fit")
    assert len(next(iter(built.datamodule.train_dataloader()))["label"]) == 6


def test_samples_are_counted_from_each_batch_or_the_modules_hook():
    from bsbench.training.parts import samples_in

    plain = torch.nn.Module()
    assert samples_in(plain, (torch.zeros(5, 3), torch.zeros(5))) == 5
    assert samples_in(plain, {"ids": [torch.zeros(7, 2)], "y": torch.zeros(7)}) == 7

    class Hooked(torch.nn.Module):
        def bsbench_batch_size(self, batch):
            return len(batch["label"])

    assert samples_in(Hooked(), {"tokens": torch.zeros(2, 9), "label": torch.zeros(9)}) == 9


def test_synthetic_inputs_take_the_example_input_arrays_shape_and_dtype(toy, tmp_path):
    from bsbench.job.build import build

    built = build(job_config(tmp_path, "model=custom", "model._target_=toy.TokenNet", "data=synthetic",
                             "batch_size=10", "data.num_train_images=100", "data.val_size=20"))
    datamodule = built.datamodule
    tokens, targets = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert tokens.shape == (10, 12) and tokens.dtype == torch.long
    assert int(tokens.max()) < 50  # below TokenNet's vocab_size hyperparameter
    assert targets.dtype == torch.long and int(targets.max()) < 3  # below its num_classes
    assert len(datamodule.train_dataloader()) == 8  # 80 training samples, full batches only

    shaped = build(job_config(tmp_path, "model=custom", "model._target_=toy.TinyNetNoExample", "data=synthetic",
                              "data.shape=[3,20,20]", "batch_size=4")).datamodule
    images, labels = shaped.on_after_batch_transfer(torch.arange(4), 0)
    assert images.shape == (4, 3, 20, 20) and images.dtype == torch.float32
    assert int(labels.max()) < 7  # no num_classes hyperparameter: the output's width on the example


def test_flops_of_a_users_module_are_its_training_steps(toy, tmp_path):
    from bsbench.job.fit import job_flops

    cfg = job_config(tmp_path, "model=custom", "model._target_=toy.TinyNet", "data=synthetic", "+model.width=8",
                     "+model.image_size=16")
    flops = job_flops(cfg)
    conv = 2 * 3 * 8 * 9 * 16 * 16  # per sample: 3->8 channels, 3x3, 16x16 outputs
    linear = 2 * 8 * 5
    assert flops["inference_flops_per_sample"] == conv + linear
    # backward: the convolution's weight gradient (its input needs none), the linear layer's two
    assert flops["train_flops_per_sample"] == 2 * conv + 3 * linear


def test_timm_classifiers_run_through_throughput_and_profile(tmp_path):
    pytest.importorskip("timm")
    from bsbench.job.run import attempt

    for mode in ("throughput", "profile"):
        r = attempt(job_config(tmp_path / mode, f"mode={mode}", "model.arch=timm:resnet18", "trainer.max_steps=4",
                               "timing.warmup_steps=1", "profile.warmup=1", "profile.active=2"))
        assert r["status"] == "ok" and r["model"] == "timm:resnet18", r.get("error")
        assert r["train_flops_per_sample"] > 0
    assert r["profile_top"]


def test_timm_names_are_checked_and_its_absence_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from bsbench.core.errors import UserError
    from bsbench.job.validate import validate

    if importlib.util.find_spec("timm") is not None:
        with pytest.raises(UserError, match="is not a timm model"):
            validate(job_config(tmp_path, "model.arch=timm:no_such_net"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(UserError, match=r'pip install "bsbench\[timm\]"'):
        validate(job_config(tmp_path, "model.arch=timm:resnet18"))


def test_the_docs_example_runs_as_a_user_would_copy_it(cli):
    import re
    from pathlib import Path

    section = (Path(__file__).resolve().parents[1] / "docs" / "custom.md").read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    package = cli.cwd / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(code)
    command = re.search(r"python -m bsbench -m (mode=throughput .*?)\n\s*# ", section, re.S).group(1)
    args = [a.strip("'") for a in command.replace("\\\n", " ").split()]
    assert "model._target_=my_pkg.MyModule" in args and "data._target_=my_pkg.MyData" in args
    # the README's command, CPU-sized: two of its batch sizes, a narrow network, a few steps
    args = ["batch_size=60,61" if a.startswith("batch_size=") else "+model.width=8" if a.startswith("+model.width")
            else a for a in args]
    proc = cli("-m", *args, "accelerator=cpu", "precision=32-true", "trainer.max_steps=4", "timing.warmup_steps=1")
    assert proc.returncode == 0, proc.stderr
    results = ok_results(cli)
    assert sorted(r["batch_size"] for r in results) == [60, 61]
    assert all(r["model"] == "my_pkg.MyModule" and r["train_flops_per_sample"] > 0 for r in results)


def test_a_mistake_found_only_while_a_job_runs_still_leaves_its_result_and_log(cli):
    # nothing in these batches counts their samples: found at the first step, not while planning
    proc = cli(*SMOKE, "model=custom", "model._target_=toy.Scalar", "data=custom", "data._target_=toy.NoTensorData",
               "mode=throughput", "trainer.max_steps=3", "timing.warmup_steps=1")
    assert proc.returncode == 2 and "bsbench_batch_size" in proc.stderr and "Traceback" not in proc.stderr
    (r,) = cli.results()
    assert r["status"] == "failed" and r["error_type"] == "UserError" and "bsbench_batch_size" in r["error"]
    (log,) = cli.outputs.rglob("bsbench.log")
    assert "bsbench_batch_size" in log.read_text()
