"""Every value bsbench keeps is valid (issue 26): settings that are not finite numbers or that no run can
take are refused in one sentence naming the key the user wrote, and no results file holds NaN or Infinity."""

import json

import pytest

from bsbench.core.errors import UserError
from bsbench.core.results import write_json_atomic
from bsbench.job.validate import validate
from conftest import job_config


@pytest.mark.parametrize("key", ["cooldown_s", "mfu.peak_tflops", "budget_min", "target_ci", "model.lr",
                                 "telemetry.interval_s", "trainer.gradient_clip_val"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_setting_that_is_not_a_finite_number_is_refused_by_name(tmp_path, key, value):
    with pytest.raises(UserError) as err:
        validate(job_config(tmp_path, f"{key}={value}"))
    assert str(err.value).startswith(f"{key}=") and "is not a finite number" in str(err.value)


@pytest.mark.parametrize("overrides, words", [
    (["seed=-1"], "seed=-1 is not between 0 and 4294967295"),
    (["seed=4294967296"], "seed=4294967296 is not between 0 and 4294967295"),
    (["mode=find_max", "find_max.max_val=1"], "find_max.max_val=1 is below batch_size=32"),
    (["mode=find_max", "trainer.max_steps=-5"], "trainer.max_steps=-5 would make every find_max trial train forever"),
    # the key the user wrote, not the trainer.max_steps=-2 that mode=profile derives from it
    (["mode=profile", "profile.repeat=-1"], "profile.repeat=-1 is not a positive integer"),
])
def test_impossible_integers_are_refused_naming_the_key_the_user_wrote(tmp_path, overrides, words):
    with pytest.raises(UserError) as err:
        validate(job_config(tmp_path, *overrides))
    assert str(err.value).startswith(words)


def test_a_results_file_never_holds_nan_or_infinity(tmp_path):
    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a results file"))

    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "ok", "mfu": float("nan"), "train_samples_per_s": 12.5,
                             "round_samples_per_s": [1.0, float("inf")], "compare_stop": {"widest": float("-inf")}})
    written = strict(path.read_text())
    assert written["mfu"] is None and written["round_samples_per_s"] == [1.0, None]
    assert written["compare_stop"] == {"widest": None} and written["train_samples_per_s"] == 12.5
    assert written["nonfinite_values"] == {"mfu": "nan", "round_samples_per_s[1]": "inf",
                                           "compare_stop.widest": "-inf"}


@pytest.mark.parametrize("args, words", [
    (["batchsize=30"], "batchsize is not a bsbench setting; did you mean batch_size?"),
    (["-m", "batchsize=30,31"], "did you mean batch_size?"),
    (["trainer.max_step=3"], "did you mean trainer.max_steps?"),
    (["model.archh=resnet18"], "did you mean model.arch?"),
    (["zzz=1"], "zzz is not a bsbench setting; `python -m bsbench --cfg job` lists them all."),
])
def test_a_key_that_is_not_a_setting_gets_the_closest_settings_name(args, words):
    from bsbench.job.app import check_setting_names

    with pytest.raises(UserError) as err:
        check_setting_names(args)
    assert str(err.value).endswith(words)


def test_keys_of_a_users_classes_and_of_open_sections_are_left_to_them():
    from bsbench.job.app import check_setting_names

    check_setting_names(["model=custom", "model._target_=my_pkg.Net", "model.width=3", "callbacks.lr._target_=x.Y",
                         "logger.save_dir=here", "hydra.job.chdir=false", "batch_size=3", "trainer.max_steps=5"])


def test_an_added_key_that_is_not_a_setting_gets_the_closest_name_too(tmp_path):
    with pytest.raises(UserError, match=r"^batchsize is not a bsbench setting; did you mean batch_size\?$"):
        job_config(tmp_path, "+batchsize=30")
