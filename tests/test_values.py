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
    (["mode=find_max", "trainer.max_steps=-1"], "trainer.max_steps=-1 would make every find_max trial train forever"),
    (["mode=find_max", "trainer.max_steps=-5"], "trainer.max_steps=-5 is not -1 or a positive integer"),
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


GOOD = {"status": "ok", "mode": "train", "batch_size": 32, "repeat": 0, "train_samples_per_s": 100.0,
        "train_time_s": 1.0, "epoch_times_s": [1.0], "job_id": "a" * 16, "device_name": "cpu",
        "config": {"precision": "32-true"}}


@pytest.mark.parametrize("field, value, words", [
    ("job_id", [1, 2], "job_id [1, 2] is not a string"),  # resume's key: once a TypeError in resume
    ("device_name", ["cpu"], 'device_name ["cpu"] is not a string'),  # once a TypeError in the report
    ("mode", ["train"], 'mode ["train"] is not a string'),
    ("epoch_times_s", ["a", "b"], 'epoch_times_s ["a", "b"] is not a list of finite numbers'),
    ("train_samples_per_s", -5.0, "train_samples_per_s -5.0 is not a positive number"),  # once a -153.8% verdict
    ("train_samples_per_s", 0, "train_samples_per_s 0 is not a positive number"),
    ("config", [], "config [] is not a JSON object"),  # once a row labelled with every key =None
    ("channels_last", "yes", 'channels_last "yes" is not true or false'),
    ("train_samples_per_s", "NaN", "NaN is not a JSON number"),  # written as the bare NaN Python's json allows
])
def test_a_results_file_whose_fields_are_not_of_their_types_is_named_and_used_by_nothing(tmp_path, capsys, field,
                                                                                         value, words):
    from bsbench.core.results import finished_runs
    from bsbench.report.cli import main
    from bsbench.report.write import write_report

    for name, result in {"good": GOOD, "bad": {**GOOD, "batch_size": 33, "job_id": "b" * 16, field: value}}.items():
        (tmp_path / name).mkdir()
        text = json.dumps(result)
        if value == "NaN":
            text = text.replace('"NaN"', "NaN")
        (tmp_path / name / "results.json").write_text(text)
    _, results = write_report([tmp_path])
    assert [r["batch_size"] for r in results] == [32]  # left out of the tables and the verdict, no traceback
    summary = (tmp_path / "summary.md").read_text()
    (note,) = [line for line in summary.splitlines() if line.startswith("- not read: ")]
    assert str(tmp_path / "bad" / "results.json") in note and words in note
    assert list(finished_runs(tmp_path)) == ["a" * 16]  # and not done for resume: it runs again
    # every file unreadable: the command names them, not only that none was readable
    (tmp_path / "good" / "results.json").unlink()
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and str(tmp_path / "bad" / "results.json") in err and words in err


def test_every_result_field_has_a_type():
    from bsbench.core.fields import FIELD_KINDS, FIELD_NAMES, KINDS

    assert set(FIELD_KINDS) == set(FIELD_NAMES) and set(FIELD_KINDS.values()) <= set(KINDS)
