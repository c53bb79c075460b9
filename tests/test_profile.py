"""mode=profile: traces of training steps, read back into the result, and the report's "What
differs" section between neighbouring batch sizes."""

import json
import re
from pathlib import Path

import pytest

from bsbench.core.fields import setting
from bsbench.report.differences import Profiles, differences
from bsbench.training.profiling import STEP_PREFIX
from conftest import SMOKE, job_config

PROFILE = [*SMOKE, "mode=profile", "profile.warmup=0", "profile.active=2", "timing.warmup_steps=1"]


def test_profiles_of_neighbours_name_a_planted_operator_first(cli):
    # an operator training never runs (aten::sort), planted into every step of batch size 32 only
    proc = cli("-m", "batch_size=31,32,33", "repeats=3", *PROFILE, "profile.top=5",
               "+callbacks.extra._target_=faults.ExtraOp", "+callbacks.extra.batch_size=32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    assert sorted(r["batch_size"] for r in results) == [31] * 3 + [32] * 3 + [33] * 3
    for r in results:
        b = r["batch_size"]
        assert r["status"] == "ok" and r["mode"] == "profile" and r["profile_kind"] == "operator"
        assert len(r["profile_traces"]) == r["profile_count"] == 1 and r["profile_steps"] == 2
        assert len(r["profile_top"]) == 5 and all(op["name"].startswith("aten::") for op in r["profile_top"])
        assert [op["us_per_sample"] for op in r["profile_top"]] == sorted(
            (op["us_per_sample"] for op in r["profile_top"]), reverse=True)
        assert 0 < sum(op["share"] for op in r["profile_top"]) < 1 and 0 < r["profile_matmul_share"] < 1
        # the figures come from the trace file: the traced steps' wall-clock, and an operator that calls
        # no other (aten::empty), whose self time is its time
        trace = json.loads((Path(r["run_dir"]) / r["profile_traces"][0]).read_text())["traceEvents"]
        steps = [e["dur"] for e in trace if e.get("name", "").startswith(STEP_PREFIX)]
        assert len(steps) == 2 and r["profile_step_us_per_sample"][0] == sum(steps) / (2 * b)
        empty = sum(e["dur"] for e in trace if e.get("name") == "aten::empty" and e.get("cat") == "cpu_op")
        (op,) = [op for op in r["profile_ops"] if op["name"] == "aten::empty"]
        assert abs(op["us_per_sample"][0] - empty / (2 * b)) < 1e-6
        assert ("aten::sort" in [op["name"] for op in r["profile_ops"]]) == (b == 32)
    verdict = (cli.sweep_dir() / "verdict.md").read_text()
    section = verdict.split("## What differs in the profiles")[1]
    for other in (31, 33):
        paragraph = re.search(rf"\*\*32 against {other}\*\* \(3 and 3 runs\): (.*)", section).group(1)
        assert paragraph.startswith("32 ran `aten::sort` (") and f"which {other} did not" in paragraph
        first_row = next(line for line in section.split(f"**32 against {other}**")[1].splitlines()
                         if line.startswith("| `"))
        assert first_row.startswith("| `aten::sort` | 0 µs |") and "| only at 32 |" in first_row
    assert "What differs" in proc.stdout  # printed with the verdict


def test_profiled_runs_of_one_configuration_differ_in_nothing(tmp_path):
    from bsbench.job.run import attempt

    runs = []
    for repeat in range(8):
        runs.append(attempt(job_config(tmp_path / str(repeat), *PROFILE[len(SMOKE):], "batch_size=33",
                                       f"repeat={repeat}")))
    assert all(r["status"] == "ok" and r["profile_count"] == 1 for r in runs)
    assert len({json.dumps(setting(r)) for r in runs}) == 1
    # runs 0, 2, 4, 6 against 1, 3, 5, 7: what differs between separate runs of one configuration is noise
    assert differences(Profiles(runs[0::2]), Profiles(runs[1::2])) == []


def profiled(batch_size: int, ops: dict[str, float]) -> dict:
    """A mode=profile result: one profile, these times per sample (µs), a step of 100 µs per sample."""
    return {"status": "ok", "batch_size": batch_size, "profile_kind": "kernel", "profile_step_us_per_sample": [100.0],
            "profile_ops": [{"name": n, "us_per_sample": [v], "matmul": "gemm" in n} for n, v in ops.items() if v]}


def runs(batch_size: int, ops: dict[str, list[float]]) -> Profiles:
    """Profiled runs of one batch size, run i with the i-th of each operator's times."""
    return Profiles([profiled(batch_size, {n: v[i] for n, v in ops.items()}) for i in range(3)])


def test_a_difference_is_listed_only_beyond_the_spread_of_repeated_runs():
    mine = runs(32, {"gemm_a": [50, 51, 52], "noisy": [10, 14, 12], "rare": [1, 0, 0], "tiny": [0.1, 0.1, 0.1],
                     "gemm_b": [20, 20, 20], "small": [5.0, 5.0, 5.0]})
    theirs = runs(31, {"gemm_a": [80, 81, 82], "noisy": [12, 16, 11], "rare": [0, 0, 0], "gemm_c": [19, 20, 21],
                       "small": [5.3, 5.3, 5.3]})
    found = differences(mine, theirs)
    # gemm_a: 30 apart, ranges 2 wide each; noisy: within its spread; rare: in one run only; tiny: 0.1% of the
    # step; small: apart beyond its (zero) spread, by 0.3% of the step only
    assert {d["name"]: d["change"] for d in found} == {"gemm_a": "changed", "gemm_b": "only here",
                                                       "gemm_c": "only there"}
    assert found[0]["name"] == "gemm_a"  # the largest difference first
    assert round(mine.matmul_share(), 2) == 0.71


def test_a_result_with_a_corrupt_profile_is_named_and_left_out(tmp_path):
    from bsbench.report.write import write_report

    good = {**profiled(32, {"gemm": 50.0}), "mode": "profile", "config": {"mode": "profile"}}
    for name, result in (("ok", good), ("bad", {**good, "profile_ops": [{"name": "gemm", "us_per_sample": "fast"}]})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    text, results = write_report([tmp_path])
    assert [Path(r["run_dir"]).name for r in results] == ["ok"]
    assert "not read:" in text and "profile_ops is not a list of operators" in text


def test_a_trace_lost_to_a_full_disk_is_said_so_and_leaves_no_file(tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    import bsbench.training.profiling as profiling

    class Profiler:  # Kineto on a full disk: its temporary file written in part, the rename failing
        def export_chrome_trace(self, path):
            Path(path + ".tmp").write_text('{"traceEvents": [')
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    callback = profiling.ProfileCallback(tmp_path, 16, 0, 1, 1, 1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 10 << 20, 0))
    with pytest.raises(OSError) as full:
        callback._save(Profiler())
    assert full.value.errno == errno.ENOSPC and full.value.filename.endswith("bs16_p0.pt.trace.json")
    assert list(tmp_path.iterdir()) == [] and callback.traces == []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 0, 10 << 30))
    with pytest.raises(FileNotFoundError):  # not a full disk: the error as it was
        callback._save(Profiler())
    assert list(tmp_path.iterdir()) == []
