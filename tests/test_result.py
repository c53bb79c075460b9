import json
import os

import pytest

from bsbench.core.results import read_results, write_json_atomic


def test_atomic_write_replaces_whole_files_only(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "ok", "batch_size": 1})
    assert json.loads(path.read_text())["batch_size"] == 1

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"status": "ok", "batch_size": 2})
    assert json.loads(path.read_text())["batch_size"] == 1  # the old result, intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_read_results_finds_every_run_and_where_it_lies(tmp_path):
    for job in ("0", "1"):
        (tmp_path / job).mkdir()
        write_json_atomic(tmp_path / job / "results.json", {"status": "ok", "batch_size": int(job) + 1})
    results = read_results(tmp_path)
    assert [r["batch_size"] for r in results] == [1, 2]
    assert results[1]["run_dir"] == str(tmp_path / "1")
