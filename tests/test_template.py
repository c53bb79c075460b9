"""Your training as you run it: a module and datamodule written the way the lightning-hydra-template writes
them (tests/helpers/toy/template.py: `net` and a partial optimizer and scheduler built by Hydra from nested
`_target_` configs, torchmetrics in the steps, a global batch divided by the world size), passed as
overrides or as options of the user's own config directory; every result labelled with the batch size that
ran, its FLOPs counted, its wait for data recorded, and a step that trains nothing refused."""

import json

import pytest

from conftest import HELPERS, SMOKE, job_config

TEMPLATE = ["model=custom", "model._target_=toy.template.LitModule",
            "+model.net={_target_: toy.template.SimpleDenseNet, input_size: 3072}",
            "+model.optimizer={_target_: torch.optim.Adam, _partial_: true, lr: 0.001}",
            "+model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 1}",
            "data=custom", "data._target_=toy.template.DataModule"]
STEPS = ["mode=throughput", "trainer.max_steps=8", "timing.warmup_steps=2"]
# SimpleDenseNet on 3x32x32 inputs, 3072 -> 32 -> 5: the forward's 2 x (3072 x 32 + 32 x 5) multiply-adds, the
# backward's gradients of both weights and of the second layer's input (not of the network's input)
TRAIN_FLOPS = 2 * (3072 * 32 + 32 * 5) + 2 * (3072 * 32) + 2 * (2 * 32 * 5)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))


def test_the_module_is_built_as_hydra_builds_it(toy, tmp_path):
    import torch

    from bsbench.training.parts import make_datamodule, make_module
    from toy.template import SimpleDenseNet

    cfg = job_config(tmp_path, *TEMPLATE, *STEPS)
    module, datamodule = make_module(cfg), make_datamodule(cfg)
    assert isinstance(module.net, SimpleDenseNet) and module.net.model[1].in_features == 3072
    optimizer = module.hparams.optimizer(params=module.parameters())  # a partial, as the template calls it
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.001
    assert isinstance(module.hparams.scheduler(optimizer=optimizer), torch.optim.lr_scheduler.StepLR)
    assert datamodule.hparams.batch_size == 32


@pytest.mark.parametrize("override, words", [
    ("+model.net={_target_: toy.template.Missing}", "model.net._target_=toy.template.Missing cannot be imported"),
    ("+model.net={_target_: toy.template.SimpleDenseNet, width: 3}",
     "model.net could not be built (TypeError: SimpleDenseNet.__init__() got an unexpected keyword argument 'width')"),
])
def test_a_nested_target_that_cannot_be_built_is_named_in_one_line_before_any_job(toy, tmp_path, override, words):
    from bsbench.core.errors import UserError
    from bsbench.job.validate import validate

    cfg = job_config(tmp_path, *[o for o in TEMPLATE if not o.startswith("+model.net")], override, *STEPS)
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_template_run_is_labelled_with_what_ran_its_flops_counted_on_a_real_step(toy, tmp_path):
    from bsbench.job.run import attempt
    from bsbench.training.timing import INPUT_BOUND

    r = attempt(job_config(tmp_path, *TEMPLATE, *STEPS))
    assert r["status"] == "ok", r.get("error")
    assert r["batch_size_observed"] == 32 and r["optimizer_steps"] == r["timed_steps"] == 6
    # torchmetrics' update reads a value, which the meta device cannot: the count is of a real warm-up step
    assert r["train_flops_per_sample"] == TRAIN_FLOPS and r["flops_error"] is None
    assert r["flops_counted"].startswith("on a real warm-up training step (the meta device could not run it: ")
    # how much a step waited depends on how busy the machine is: the label must follow the measured share
    assert 0 <= r["data_wait_fraction"] < 1 and r["data_wait_s"] >= 0
    assert r["input_bound"] is (r["data_wait_fraction"] >= INPUT_BOUND)
    # bsbench's own model: counted on the meta device, as before
    own = attempt(job_config(tmp_path / "own", *STEPS))
    assert own["flops_counted"] == "on the meta device" and own["train_flops_per_sample"] > 0


@pytest.mark.parametrize("module, data, words", [
    ("toy.template.NoStep", "toy.template.DataModule", "the 6 timed steps made no optimizer step with a gradient"),
    ("toy.template.LitModule", "toy.template.FixedLoader", "the training loader made batches of 8 per device, not "
                                                          "batch_size=32"),
])
def test_a_run_whose_steps_are_not_the_training_asked_for_fails_in_one_line(toy, tmp_path, module, data, words):
    from bsbench.job.run import attempt

    overrides = [o for o in TEMPLATE if not o.startswith(("model._target_", "data._target_"))]
    r = attempt(job_config(tmp_path, *overrides, f"model._target_={module}", f"data._target_={data}", *STEPS))
    assert r["status"] == "failed" and r["error_type"] == "NotATrainingRate" and words in r["error"]
    assert r.get("train_samples_per_s") is None


def test_a_find_max_trial_on_batches_of_another_size_fails_in_one_line(toy, tmp_path):
    from bsbench.job.run import attempt

    overrides = [o for o in TEMPLATE if not o.startswith("data._target_")]
    r = attempt(job_config(tmp_path, *overrides, "data._target_=toy.template.FixedLoader", "mode=find_max",
                           "find_max.max_val=64", "trainer.max_steps=2"))
    assert r["status"] == "failed" and r["error_type"] == "NotATrainingRate"
    assert r["error"].startswith("the training loader made batches of 8 per device, not batch_size=32, the batch size "
                                 "the search tried")


def test_a_train_run_whose_warm_up_covers_the_datamodules_every_step_fails_in_one_line(toy, tmp_path):
    # the user's datamodule decides how many steps an epoch has: counted only once it ran
    from bsbench.job.run import attempt

    r = attempt(job_config(tmp_path, *TEMPLATE, "mode=train", "epochs=1", "timing.warmup_steps=100000"))
    assert r["status"] == "failed" and r["error_type"] == "NotATrainingRate"
    assert r["error"].startswith("timing.warmup_steps=100000 left out every training step of this run")
    assert r.get("train_samples_per_s") is None


def test_a_loader_that_keeps_a_short_last_batch_is_labelled_with_its_full_one(toy, tmp_path):
    # 154 training samples in batches of 80: every other batch is the epoch's last, 74
    from bsbench.job.run import attempt

    r = attempt(job_config(tmp_path, *TEMPLATE, "batch_size=80", "mode=throughput", "trainer.max_steps=8",
                           "timing.warmup_steps=2"))
    assert r["status"] == "ok" and r["batch_size_observed"] == 80, r.get("error")


def test_tune_names_what_a_slow_input_pipeline_costs_and_races_the_loaders_settings(toy, cli):
    # a per-sample transform of 1 ms: the loader, not the model, sets the pace (BENCHMARKS.md has this case)
    overrides = [o for o in TEMPLATE if not o.startswith(("data._target_", "+model.net"))]
    proc = cli("mode=tune", "accelerator=cpu", *overrides, "+model.net={_target_: toy.template.SimpleDenseNet}",
               "data._target_=toy.template.SlowData", "+data.transform_ms=1",
               "batch_size=32", "precision=32-true", "budget_min=0.75", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = [r for r in cli.results() if r.get("tune_decision")]
    assert summary["tune_pipeline"]["ci_low"] > 1  # replayed from the device, the steps were more than twice as fast
    assert summary["tune_start"]["data.num_workers"] == 0
    tune_md = next(cli.outputs.rglob("tune.md")).read_text()
    assert "- Input pipeline: your input pipeline costs about " in tune_md
    assert "| no wait for data: your loader's batches replayed from the device (at your batch size, 32) |" in tune_md
    assert "| data.num_workers=" in tune_md  # the loader's workers, ranked with the rest


def test_an_input_bound_run_says_so_on_its_line_and_in_the_summary(toy, tmp_path):
    from bsbench.job.run import attempt
    from bsbench.modes import mode_of
    from bsbench.report.summary import configurations, summary_markdown

    overrides = [o for o in TEMPLATE if not o.startswith("data._target_")]
    r = attempt(job_config(tmp_path, *overrides, "data._target_=toy.template.SlowData", "+data.transform_ms=3", *STEPS))
    assert r["status"] == "ok" and r["input_bound"] is True and r["data_wait_fraction"] > 0.5
    assert "of the steps' time waiting for data" in mode_of("throughput").line({**r, "run_dir": "x"}, None)
    results = [{**r, "run_dir": str(tmp_path / "bs32")}]
    assert "Input-bound (1 of 1 run" in summary_markdown([tmp_path], results, configurations(results))


def test_ddp_with_a_datamodule_that_divides_the_batch_trains_each_device_on_the_batch_size_asked(cli):
    proc = cli(*SMOKE, *TEMPLATE, *STEPS, "devices=2", "strategy=ddp", "batch_size=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["status"] == "ok" and r["batch_size"] == 16 and r["batch_size_observed"] == 16
    assert r["world_size"] == 2 and r["global_batch_size"] == 32
    said = proc.stdout + proc.stderr
    assert said.count("divides the batch size it is given by the world size (2): bsbench gives it 32") == 1


def test_a_datamodule_that_divides_the_batch_by_the_world_size_is_given_the_global_batch_odd_or_even(toy):
    # on two devices: 16 per device is 32 to the template; 15 it would refuse as not divisible by 2 (a tune's grid
    # holds odd sizes), and is given 30 too
    from types import SimpleNamespace

    from bsbench.job.build import per_rank
    from toy.template import DataModule

    for per_device in (16, 15):
        datamodule = DataModule(batch_size=per_device)
        per_rank(datamodule, SimpleNamespace(world_size=2, is_global_zero=True), per_device)
        assert datamodule.hparams.batch_size == 2 * per_device
        datamodule.setup("fit")
        assert datamodule.train_dataloader().batch_size == per_device
    # a datamodule that keeps what it is given is left as it was, whatever its setup does
    kept = DataModule(batch_size=15)
    kept.setup = lambda stage=None: (_ for _ in ()).throw(RuntimeError("needs more of fit"))
    per_rank(kept, SimpleNamespace(world_size=2, is_global_zero=True), 15)
    assert kept.hparams.batch_size == 15


def _configs(root):
    (root / "model").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "model" / "mnist.yaml").write_text(
        "_target_: toy.template.LitModule\nnet:\n  _target_: toy.template.SimpleDenseNet\n  input_size: 3072\n"
        "optimizer:\n  _target_: torch.optim.Adam\n  _partial_: true\n  lr: 0.001\n")
    (root / "data" / "mnist.yaml").write_text("_target_: toy.template.DataModule\ndata_dir: ${paths.data_dir}\n"
                                              "num_workers: 0\n")
    return root


def test_options_of_your_own_config_directory_are_accepted_like_bsbenchs(cli, tmp_path):
    configs = _configs(tmp_path / "configs")
    searched = f"hydra.searchpath=[file://{configs}]"
    proc = cli(*SMOKE, searched, "model=mnist", "data=mnist", *STEPS)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "bsbench: error: data.data_dir=${paths.data_dir} interpolates ${paths.data_dir}, which bsbench's "
        "configuration does not have; give data.data_dir its value on the command line (data.data_dir=<value>) or "
        "in your config.")
    proc = cli(*SMOKE, searched, "model=mnist", "data=mnist2", *STEPS)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "bsbench: error: data=mnist2 is not a bsbench data option nor one in your config directories; use one of: "
        "cifar10, custom, mnist, synthetic.")
    proc = cli("--config-dir", str(configs), *SMOKE, "model=mnist", "data=mnist", "data.data_dir=/tmp", *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["status"] == "ok" and r["model"] == "toy.template.LitModule" and r["batch_size_observed"] == 32


def test_a_search_path_plugins_directories_hold_options_too(monkeypatch, tmp_path):
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    from bsbench.job import app, groups

    configs = _configs(tmp_path / "configs")

    class Theirs(SearchPathPlugin):
        def manipulate_search_path(self, search_path):
            search_path.append(provider="theirs", path=f"file://{configs}")

    monkeypatch.setattr(Plugins.instance(), "discover", lambda kind: [Theirs] if kind is SearchPathPlugin else [])
    assert configs in groups.search_path([]) and "mnist" in groups.options("model", groups.search_path([]))
    app.check_group_choices(["model=mnist"])  # no error
    assert json.dumps(groups.options("model")) == json.dumps(sorted(groups.options("model")))  # bsbench's alone: sorted


def test_every_mode_runs_the_template_module_and_datamodule(cli):
    proc = cli("-m", *SMOKE, *TEMPLATE, "+data.samples=300", "mode=train,throughput,compare,find_max,inference,profile",
               "trainer.max_steps=12", "compare.batch_sizes=[31,32]", "compare.rounds=2", "target_ci=null",
               "find_max.max_val=64", "inference.batches=3", "profile.active=2", "profile.warmup=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    assert sorted({r["mode"] for r in results}) == ["compare", "find_max", "inference", "profile", "throughput", "train"]
    assert all(r["status"] == "ok" for r in results), [(r["mode"], r.get("error")) for r in results]
    for r in results:
        if r["mode"] in ("train", "throughput", "compare"):  # what trained is what the result says
            assert r["batch_size_observed"] == r["batch_size"] and r["optimizer_steps"] > 0
            # torchmetrics in the steps: counted on a real warm-up step, a compare arm's too
            assert r["train_flops_per_sample"] == TRAIN_FLOPS and r["train_tflops"] > 0, (r["mode"], r["flops_error"])
            assert r["flops_counted"].startswith("on a real warm-up training step")
