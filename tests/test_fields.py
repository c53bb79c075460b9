"""One schema for results: every field declared once, with its meaning (docs/outputs.md shows the table,
tests/test_docs.py keeps it equal)."""

from bsbench.core.fields import FIELD_NAMES, RESULT_FIELDS, Status, setting_of


def test_every_field_is_declared_once_with_a_meaning():
    assert len(FIELD_NAMES) == len(set(FIELD_NAMES)) and all(group.meaning for group in RESULT_FIELDS)


def test_statuses_are_their_json_strings():
    assert [str(s) for s in Status] == ["ok", "oom", "failed", "interrupted"] and Status.OK == "ok"


def test_a_setting_is_the_config_less_the_axes_and_bookkeeping():
    config = {"batch_size": 32, "repeat": 2, "seed": 7, "output_root": "x", "logger": {"_target_": "L"},
              "precision": "16-mixed", "model": {"arch": "m"}, "trainer": {"default_root_dir": "x/3", "max_steps": 60}}
    assert setting_of(config) == {"model.arch": "m", "precision": "16-mixed", "trainer.max_steps": 60}
